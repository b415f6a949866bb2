"""Property-based tests (hypothesis) of the invariants every search output must satisfy.

Shapes and static settings come from a small fixed set of configurations (each
new one costs an XLA compilation, 1-3 s on CPU); the data is drawn freely:
root logits with huge, `-inf`, `+inf` and NaN entries, values (NaN/inf too),
invalid masks with all-invalid and single-valid rows, keys, the model's scale
(1e-8 to 1e30), a model that may emit NaN/inf outputs and `-inf` logits, and
the traced `gumbel_scale` and `temperature`.

Properties, for all three policies:
- `action_weights` finite, ≥ 0, summing to 1 (atol 1e-5) on rows with a valid
  action, zero on rows without one and on every invalid action;
- `action` valid (0 on rows with no valid action); no particle ever takes an
  invalid root action;
- node values, `summary()` Q-values/visit probabilities and every float
  diagnostic finite; `no_valid_action` and `nonfinite_root` flags exact;
  at most `num_simulations` model evaluations per root;
- the same key gives a bit-identical output;
- jitted equals un-jitted (small shapes);
- `vmap` over an extra leading axis equals a loop over it, each slice with its
  own key and data.

Runs:
- `python -m pytest tests/test_properties.py` (default profile): the `*_default`
  tests, 25 examples per policy for the invariants over `CONFIGS`, 8 per policy
  for jit/vmap.
- `python -m pytest -m slow tests/test_properties.py`: the `slow`-marked copies,
  300 examples per policy for the invariants over `LARGE_CONFIGS` (a superset
  adding other resampling, TD-scale, `max_depth` and width/budget combinations),
  40 per policy for jit/vmap.
- `SMCTX_HYPOTHESIS_PROFILE=large` additionally raises the default tests to 300
  examples (the profile's `max_examples`).
All profiles are `derandomize=True`: a run is reproducible. The number of
examples run (hypothesis calls of each test body, shrinking included) is
printed at the end of the module (run with `-s` to see it).
"""

import collections
import dataclasses
import os

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx

hypothesis.settings.register_profile("default", max_examples=25, deadline=None,
                                     derandomize=True, print_blob=True)
hypothesis.settings.register_profile("large", max_examples=300, deadline=None,
                                     derandomize=True, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("SMCTX_HYPOTHESIS_PROFILE", "default"))

POLICIES = {"smc": smctx.smc_policy, "smcts": smctx.smcts_policy, "tsmcts": smctx.tsmcts_policy}
EMBED = 4
LARGE_EXAMPLES = 300
JIT_EXAMPLES = 8
LARGE_JIT_EXAMPLES = 40


@dataclasses.dataclass(frozen=True)
class Config:
  """The static part of a search: one XLA compilation per (policy, Config)."""
  batch: int
  actions: int
  particles: int | None
  simulations: int
  considered: int
  options: tuple = ()  # extra static keyword arguments, as (name, value) pairs

  @property
  def max_depth(self):
    return dict(self.options).get("max_depth")


# Batch sizes {1, 3, 8}, actions {1, 2, 5, 17, 64}, widths {None, 1, 4, 16}, budgets
# {1, 7, 32, 100}, candidates {1, 4, 16}: every value at least once.
CONFIGS = (
    Config(1, 1, None, 1, 16),
    Config(3, 2, 4, 7, 16),
    Config(8, 5, None, 32, 4),
    Config(3, 17, 16, 100, 16),
    Config(1, 64, None, 32, 16),
    Config(8, 5, 1, 7, 1),
)
LARGE_CONFIGS = CONFIGS + (
    Config(8, 64, 16, 100, 4),
    Config(3, 5, 4, 32, 4, (("resample", "always"), ("resampling_method", "multinomial"))),
    Config(1, 17, None, 100, 1, (("td_scale", "none"),)),
    Config(8, 2, 16, 1, 16),  # a budget below the width: the width shrinks
    Config(3, 64, 1, 100, 16, (("resample", "never"),)),
    Config(1, 5, 16, 7, 4, (("max_depth", 1),)),
    Config(8, 17, None, 7, 16, (("ess_threshold", 1.0),)),
    Config(3, 1, 4, 32, 1, (("ess_threshold", 0.0),)),
    Config(3, 5, None, 100, 4, (("max_depth", 2),)),
)
# Small shapes for the un-jitted comparison (op-by-op execution is slow). The
# second has two Sequential Halving iterations for TSMCTS (m1 = 4, K = 2).
JIT_CONFIGS = (Config(3, 2, 4, 7, 16), Config(3, 5, 4, 16, 4))

EXAMPLES = collections.Counter()  # test name -> examples run
EXACT = collections.Counter()  # comparison -> examples where it held bit for bit


def _model(num_actions):
  """A stochastic toy model: any shape works, outputs are hash-like functions of (state, action).

  `params = {"scale", "poison"}` travel as data: `scale` multiplies rewards and
  values, `poison > 0` makes the model emit NaN rewards, `+inf` values and
  `-inf` logits on some transitions.
  """
  rng = np.random.default_rng(num_actions)
  w_state = jnp.asarray(rng.normal(size=(EMBED, EMBED)), jnp.float32)
  w_action = jnp.asarray(rng.normal(size=(num_actions, EMBED)), jnp.float32)
  w_logits = jnp.asarray(rng.normal(size=(EMBED, num_actions)) * 3, jnp.float32)

  def recurrent_fn(params, rng_key, action, embedding):
    nxt = jnp.tanh(embedding @ w_state + w_action[action])
    noise = jax.random.normal(rng_key, nxt[:, 0].shape)
    scale, poison = params["scale"], params["poison"] > 0
    reward = scale * (nxt[:, 0] + 0.1 * noise)
    value = scale * nxt[:, 3]
    logits = nxt @ w_logits
    discount = jnp.where(nxt[:, 1] > 0.8, 0.0, jnp.where(nxt[:, 2] > 0.5, -1.0, 0.95))
    reward = jnp.where(poison & (nxt[:, 1] < -0.6), jnp.nan, reward)
    value = jnp.where(poison & (nxt[:, 2] < -0.6), jnp.inf, value)
    logits = jnp.where(poison & (logits > 2.0), -jnp.inf, logits)
    return mctx.RecurrentFnOutput(reward=reward, discount=discount, prior_logits=logits,
                                  value=value), nxt

  return recurrent_fn


_SEARCHES = {}


def _search(name, config):
  """`(jitted, plain)` search of one (policy, configuration), built once."""
  if (name, config) not in _SEARCHES:
    model = _model(config.actions)

    def run(params, key, root, invalid, gumbel_scale, temperature):
      return POLICIES[name](params, key, root, model, config.simulations, invalid,
                            num_particles=config.particles,
                            max_num_considered_actions=config.considered,
                            gumbel_scale=gumbel_scale, temperature=temperature,
                            **dict(config.options))

    _SEARCHES[(name, config)] = (jax.jit(run), run)
  return _SEARCHES[(name, config)]


def _floats(draw, shape, elements):
  size = int(np.prod(shape))
  return np.array(draw(st.lists(elements, min_size=size, max_size=size)),
                  np.float32).reshape(shape)


@st.composite
def problems(draw, configs=CONFIGS):
  """`(config, args)` with `args = (params, key, root, invalid, gumbel_scale, temperature)`."""
  config = draw(st.sampled_from(configs))
  batch, actions = config.batch, config.actions
  special = st.sampled_from([-np.inf, -1e30, 1e30, 50.0, -50.0, np.inf, np.nan])
  logits = _floats(draw, (batch, actions),
                   st.one_of(st.floats(-5, 5, width=32), st.floats(-5, 5, width=32), special))
  value = _floats(draw, (batch,), st.one_of(st.floats(-1e3, 1e3, width=32),
                                            st.sampled_from([0.0, 1e6, -1e6, np.nan, -np.inf])))
  mask_kind = draw(st.sampled_from(["none", "random", "single_valid", "all_invalid_row"]))
  invalid = np.array(draw(st.lists(st.booleans(), min_size=batch * actions,
                                   max_size=batch * actions))).reshape(batch, actions)
  if mask_kind == "none":
    invalid[:] = False
  elif mask_kind == "single_valid":
    invalid[:] = True
    invalid[np.arange(batch), draw(st.lists(st.integers(0, actions - 1), min_size=batch,
                                            max_size=batch))] = False
  elif mask_kind == "all_invalid_row":
    invalid[draw(st.integers(0, batch - 1))] = True
  embedding = _floats(draw, (batch, EMBED), st.floats(-2, 2, width=32))
  root = mctx.RootFnOutput(prior_logits=jnp.asarray(logits), value=jnp.asarray(value),
                           embedding=jnp.asarray(embedding))
  params = {"scale": jnp.float32(draw(st.sampled_from([1.0, 1e-8, 1e6, 1e30]))),
            "poison": jnp.float32(draw(st.sampled_from([0.0, 0.0, 1.0])))}
  key = jax.random.PRNGKey(draw(st.integers(0, 2**31 - 1)))
  gumbel_scale = jnp.float32(draw(st.sampled_from([1.0, 1.0, 0.0, 0.3])))
  temperature = jnp.float32(draw(st.sampled_from([0.3, 0.3, 1e-3, 10.0])))
  return config, (params, key, root, jnp.asarray(invalid), gumbel_scale, temperature)


def _check_invariants(out, config, root, invalid):
  weights = np.asarray(out.action_weights)
  action = np.asarray(out.action)
  invalid = np.asarray(invalid)
  no_valid = invalid.all(-1)
  rows = np.arange(config.batch)
  assert out.action_weights.dtype == jnp.float32 and out.action.dtype == jnp.int32
  assert weights.shape == (config.batch, config.actions) and action.shape == (config.batch,)
  # Weights: a distribution over the valid actions, zero rows where there is none.
  assert np.all(np.isfinite(weights)) and np.all(weights >= 0)
  np.testing.assert_allclose(weights.sum(-1)[~no_valid], 1.0, atol=1e-5)
  assert np.all(weights[no_valid] == 0) and np.all(action[no_valid] == 0)
  assert np.all(weights[invalid] == 0)
  # The action is valid, and no particle ever took an invalid root action.
  assert np.all((action >= 0) & (action < config.actions))
  assert not np.any(invalid[rows, action] & ~no_valid)
  diagnostics = out.search_tree.extra_data
  per_action = np.asarray(diagnostics.particles_per_action)  # [B, K, A]
  assert np.all(per_action[~no_valid] * invalid[~no_valid][:, None, :] == 0)
  # Everything finite; the flags exact.
  summary = out.search_tree.summary()
  for x in (out.search_tree.node_values, out.search_tree.children_values,
            out.search_tree.children_prior_logits, summary.qvalues, summary.visit_probs,
            summary.value, *jax.tree_util.tree_leaves(diagnostics)):
    assert np.all(np.isfinite(np.asarray(x, np.float64)))
  np.testing.assert_array_equal(np.asarray(diagnostics.no_valid_action), no_valid)
  logits, value = np.asarray(root.prior_logits), np.asarray(root.value)
  nonfinite_root = ~np.isfinite(value) | np.any(np.isnan(logits) | (logits == np.inf), axis=-1)
  np.testing.assert_array_equal(np.asarray(diagnostics.nonfinite_root), nonfinite_root)
  # The drop-in budget: never more than num_simulations evaluations per root.
  evaluations = np.asarray(diagnostics.num_evaluations)
  assert np.all(evaluations <= config.simulations), (evaluations, config)
  if config.max_depth is None:
    assert np.all(evaluations > config.simulations - np.asarray(diagnostics.num_particles))


def _assert_trees(a, b, exact, counter_key=None):
  """Bit-identical if `exact`, else within 1e-5; counts bit-identical examples."""
  pairs = [(np.asarray(x), np.asarray(y)) for x, y in zip(
      jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)]
  identical = all(np.array_equal(x, y, equal_nan=True) for x, y in pairs)
  if counter_key is not None:
    EXACT[counter_key] += identical
  if exact:
    assert identical
  for x, y in pairs:
    np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), rtol=1e-5, atol=1e-5)


def _well_formed_and_deterministic(test, name, problem):
  config, args = problem
  jitted, _ = _search(name, config)
  out = jitted(*args)
  _check_invariants(out, config, args[2], args[3])
  _assert_trees(out, jitted(*args), exact=True)  # same key, same output, bit for bit
  EXAMPLES[f"{test}[{name}]"] += 1


@pytest.mark.parametrize("name", list(POLICIES))
@hypothesis.given(problem=problems())
def test_outputs_are_well_formed_and_deterministic(name, problem):
  _well_formed_and_deterministic("well_formed", name, problem)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(POLICIES))
@hypothesis.settings(max_examples=LARGE_EXAMPLES)
@hypothesis.given(problem=problems(configs=LARGE_CONFIGS))
def test_outputs_are_well_formed_and_deterministic_large(name, problem):
  _well_formed_and_deterministic("well_formed_large", name, problem)


def _stack(*trees):
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _jit_no_jit_and_vmap(test, name, config, first, second):
  jitted, plain = _search(name, config)
  _, args1 = first
  _, args2 = second
  # Jitted equals un-jitted (op-by-op execution of the same program).
  _assert_trees(jitted(*args1), plain(*args1), exact=False, counter_key=f"jit==no-jit[{name}]")
  # vmap over an extra leading axis equals calling each slice, with its own key and data.
  batched = jax.jit(jax.vmap(plain))(*_stack(args1, args2))
  for i, args in enumerate((args1, args2)):
    single = jitted(*args)
    _assert_trees(single, jax.tree_util.tree_map(lambda x: x[i], batched), exact=False,
                  counter_key=f"vmap==loop[{name}]")
  EXAMPLES[f"{test}[{name}]"] += 1


def _same_config_pairs(configs):
  return st.sampled_from(configs).flatmap(
      lambda c: st.tuples(st.just(c), problems(configs=(c,)), problems(configs=(c,))))


@pytest.mark.parametrize("name", list(POLICIES))
@hypothesis.settings(max_examples=max(JIT_EXAMPLES, hypothesis.settings().max_examples // 10))
@hypothesis.given(pair=_same_config_pairs(JIT_CONFIGS))
def test_jit_equals_no_jit_and_vmap_equals_a_loop(name, pair):
  _jit_no_jit_and_vmap("jit_vmap", name, *pair)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(POLICIES))
@hypothesis.settings(max_examples=LARGE_JIT_EXAMPLES)
@hypothesis.given(pair=_same_config_pairs(JIT_CONFIGS))
def test_jit_equals_no_jit_and_vmap_equals_a_loop_large(name, pair):
  _jit_no_jit_and_vmap("jit_vmap_large", name, *pair)


@pytest.fixture(scope="module", autouse=True)
def _report_examples():
  yield
  print(f"\nhypothesis examples run: {dict(EXAMPLES)} (total {sum(EXAMPLES.values())})")
  print(f"bit-identical comparisons: {dict(EXACT)}")
