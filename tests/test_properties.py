"""Property-based tests (hypothesis) of the invariants every search output must satisfy.

Shapes and static settings come from a small fixed set (each new one costs an
XLA compilation); the data — logits with huge and −inf entries, values, invalid
masks with all-invalid and single-valid rows, keys — is drawn freely.

Profiles: the default run uses `SMCTX_HYPOTHESIS_PROFILE=default` (15
examples per test); `SMCTX_HYPOTHESIS_PROFILE=large python -m pytest -m slow
tests/test_properties.py` runs the `slow`-marked copies with 300 examples.
The number of examples run is printed at the end of the module (`-s`).
"""

import collections
import os

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from tests.policies import NAMES_SLOW_BUT_TSMCTS, POLICIES

hypothesis.settings.register_profile("default", max_examples=6, deadline=None,
                                     derandomize=True, print_blob=True)
hypothesis.settings.register_profile("large", max_examples=300, deadline=None,
                                     derandomize=True, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("SMCTX_HYPOTHESIS_PROFILE", "default"))

# (batch, actions, num_particles, num_simulations, max_num_considered_actions)
CONFIGS = [(1, 1, None, 1, 16), (3, 2, 4, 7, 16), (8, 5, None, 32, 4), (3, 17, 16, 100, 16),
           (1, 64, None, 32, 16), (8, 5, 1, 7, 1)]
EMBED = 4
EXAMPLES = collections.Counter()


def _model(num_actions):
  rng = np.random.default_rng(num_actions)
  w_state = jnp.asarray(rng.normal(size=(EMBED, EMBED)), jnp.float32)
  w_action = jnp.asarray(rng.normal(size=(num_actions, EMBED)), jnp.float32)
  w_logits = jnp.asarray(rng.normal(size=(EMBED, num_actions)) * 3, jnp.float32)

  def recurrent_fn(params, rng_key, action, embedding):
    nxt = jnp.tanh(embedding @ w_state + w_action[action])
    noise = jax.random.normal(rng_key, nxt[:, 0].shape)  # a stochastic model
    reward = params * (nxt[:, 0] + 0.1 * noise)
    discount = jnp.where(nxt[:, 1] > 0.8, 0.0, jnp.where(nxt[:, 2] > 0.5, -1.0, 0.95))
    return mctx.RecurrentFnOutput(reward=reward, discount=discount,
                                  prior_logits=nxt @ w_logits, value=params * nxt[:, 3]), nxt

  return recurrent_fn


_SEARCHES = {}


def _search(name, config):
  """One jitted search per (policy, configuration), built once."""
  if (name, config) not in _SEARCHES:
    batch, actions, particles, simulations, considered = config
    model = _model(actions)

    def run(params, key, root, invalid):
      return POLICIES[name](params, key, root, model, simulations, invalid,
                            num_particles=particles, max_num_considered_actions=considered)

    _SEARCHES[(name, config)] = (jax.jit(run), run)
  return _SEARCHES[(name, config)]


@st.composite
def problems(draw, configs=tuple(CONFIGS)):
  config = draw(st.sampled_from(configs))
  batch, actions = config[0], config[1]
  special = st.sampled_from([-np.inf, -1e30, 1e30, 50.0, -50.0])
  logits = np.array(draw(st.lists(st.one_of(st.floats(-5, 5), special),
                                  min_size=batch * actions, max_size=batch * actions)),
                    np.float32).reshape(batch, actions)
  value = np.array(draw(st.lists(st.floats(-1e3, 1e3), min_size=batch, max_size=batch)),
                   np.float32)
  mask_kind = draw(st.sampled_from(["none", "random", "single_valid", "all_invalid_row"]))
  invalid = np.array(draw(st.lists(st.booleans(), min_size=batch * actions,
                                   max_size=batch * actions))).reshape(batch, actions)
  if mask_kind == "none":
    invalid[:] = False
  elif mask_kind == "single_valid":
    invalid[:] = True
    invalid[np.arange(batch), draw(st.integers(0, actions - 1))] = False
  elif mask_kind == "all_invalid_row":
    invalid[0] = True
  embedding = np.array(draw(st.lists(st.floats(-2, 2), min_size=batch * EMBED,
                                     max_size=batch * EMBED)), np.float32).reshape(batch, EMBED)
  root = mctx.RootFnOutput(prior_logits=jnp.asarray(logits), value=jnp.asarray(value),
                           embedding=jnp.asarray(embedding))
  params = jnp.float32(draw(st.sampled_from([1.0, 1e-8, 1e6])))
  key = jax.random.PRNGKey(draw(st.integers(0, 2**31 - 1)))
  return config, params, key, root, jnp.asarray(invalid)


def _check_invariants(out, invalid):
  weights = np.asarray(out.action_weights)
  action = np.asarray(out.action)
  invalid = np.asarray(invalid)
  no_valid = invalid.all(-1)
  assert out.action_weights.dtype == jnp.float32 and out.action.dtype == jnp.int32
  assert np.all(np.isfinite(weights)) and np.all(weights >= 0)
  np.testing.assert_allclose(weights.sum(-1)[~no_valid], 1.0, atol=1e-5)
  assert np.all(weights[no_valid] == 0) and np.all(action[no_valid] == 0)
  assert np.all(weights[invalid] == 0)
  assert not np.any(invalid[np.arange(len(action)), action] & ~no_valid)
  summary = out.search_tree.summary()
  for x in (out.search_tree.node_values, summary.qvalues, summary.visit_probs,
            out.search_tree.extra_data.ess, out.search_tree.extra_data.distinct_actions):
    assert np.all(np.isfinite(np.asarray(x)))
  np.testing.assert_array_equal(np.asarray(out.search_tree.extra_data.no_valid_action), no_valid)


def _property_outputs_are_well_formed_and_deterministic(name, problem):
  config, params, key, root, invalid = problem
  jitted, _ = _search(name, config)
  out = jitted(params, key, root, invalid)
  _check_invariants(out, invalid)
  again = jitted(params, key, root, invalid)
  for x, y in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(again), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  EXAMPLES[f"well_formed/{name}"] += 1


@pytest.mark.parametrize("name", NAMES_SLOW_BUT_TSMCTS)
@hypothesis.given(problem=problems())
def test_outputs_are_well_formed_and_deterministic(name, problem):
  _property_outputs_are_well_formed_and_deterministic(name, problem)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(POLICIES))
@hypothesis.settings(max_examples=300)
@hypothesis.given(problem=problems())
def test_outputs_are_well_formed_and_deterministic_large(name, problem):
  _property_outputs_are_well_formed_and_deterministic(name, problem)


# Slow: the un-jitted search runs op by op (about 60 s for TSMCTS); vmap and lax.scan against
# separate calls stay in the default run (test_semantics.py).
@pytest.mark.slow
@pytest.mark.parametrize("name", list(POLICIES))
@hypothesis.settings(max_examples=3)
@hypothesis.given(first=problems(configs=(CONFIGS[1],)), second=problems(configs=(CONFIGS[1],)))
def test_jit_equals_no_jit_and_vmap_equals_a_loop(name, first, second):
  jitted, plain = _search(name, CONFIGS[1])
  config, params, key, root, invalid = first
  out_jit = jitted(params, key, root, invalid)
  out_plain = plain(params, key, root, invalid)
  for x, y in zip(jax.tree_util.tree_leaves(out_jit), jax.tree_util.tree_leaves(out_plain),
                  strict=True):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                               rtol=1e-4, atol=1e-5)
  # vmap over an extra leading axis equals calling each slice with its own key.
  _, params2, key2, root2, invalid2 = second
  stack = lambda a, b: jax.tree_util.tree_map(lambda x, y: jnp.stack([x, y]), a, b)
  batched = jax.jit(jax.vmap(plain, in_axes=(None, 0, 0, 0)))(
      params, stack(key, key2), stack(root, root2), stack(invalid, invalid2))
  for i, (k, r, m) in enumerate(((key, root, invalid), (key2, root2, invalid2))):
    single = jitted(params, k, r, m)
    for x, y in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(batched),
                    strict=True):
      np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y[i], np.float64),
                                 rtol=1e-4, atol=1e-5)
  EXAMPLES[f"jit_vmap/{name}"] += 1


@pytest.fixture(scope="module", autouse=True)
def _report_examples():
  yield
  print(f"\nhypothesis examples run: {dict(EXAMPLES)} (total {sum(EXAMPLES.values())})")
