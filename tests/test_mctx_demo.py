"""mctx's own example, with smctx's policies in place of `gumbel_muzero_policy`.

mctx's `examples/policy_improvement_demo.py` searches a deterministic bandit
whose `recurrent_fn` indexes per-root Q-values by the row's position in the
batch and returns `[B, A]` prior logits: it relies on mctx calling it with the
`B` roots of the batch in root order. It then reads
`search_tree.extra_data.root_gumbel` and checks that the selected action is
never worse than the prior's action under the same Gumbel noise. The demo's
logic is rewritten here as a test: every smctx policy must run it unchanged,
and the searches with a Gumbel root (mctx, SMCTS, TSMCTS) must keep its
guarantee. The other tests check that smctx's model calls look like mctx's:
`[B]` rows in root order, one key per particle slice.
"""

import functools

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx

BATCH = 256  # the demo's defaults
NUM_ACTIONS = 82
MAX_CONSIDERED = 16
BUDGETS = (4, 16, 64)
SEEDS = (0, 1, 2)
POLICIES = {
    "mctx": mctx.gumbel_muzero_policy,
    "smc": smctx.smc_policy,
    "smcts": smctx.smcts_policy,
    "tsmcts": smctx.tsmcts_policy,
}
SMCTX_POLICIES = ("smc", "smcts", "tsmcts")
# Searches whose action is an argmax of `gumbel + logits + σ(completed q)`
# over searched actions: on a deterministic bandit, never worse than the
# prior's action under the same noise. SMC samples its action from its own
# target, so it has no such guarantee.
IMPROVING_POLICIES = ("mctx", "smcts", "tsmcts")


def _bandit_recurrent_fn(qvalues):
  """The demo's bandit: the reward of row `b` is `qvalues[b, action]` at the root, 0 below."""

  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    rows = jnp.arange(action.shape[0])  # row b is root b, as mctx calls it
    reward = jnp.where(embedding == 0, qvalues[rows, action], 0.0)
    output = mctx.RecurrentFnOutput(reward=reward, discount=jnp.ones_like(reward),
                                    prior_logits=jnp.zeros_like(qvalues),
                                    value=jnp.zeros_like(reward))
    return output, embedding + 1

  return recurrent_fn


def _demo(policy, num_simulations, rng_key):
  """One run of the demo: random prior and Q-values, one search, the values compared."""
  logits_key, q_key, search_key = jax.random.split(rng_key, 3)
  prior_logits = jax.random.normal(logits_key, (BATCH, NUM_ACTIONS))
  qvalues = jax.random.uniform(q_key, prior_logits.shape)
  raw_value = jnp.sum(jax.nn.softmax(prior_logits) * qvalues, axis=-1)
  root = mctx.RootFnOutput(prior_logits=prior_logits, value=raw_value,
                           embedding=jnp.zeros((BATCH,)))
  out = policy(
      params=(), rng_key=search_key, root=root, recurrent_fn=_bandit_recurrent_fn(qvalues),
      num_simulations=num_simulations, max_num_considered_actions=MAX_CONSIDERED,
      qtransform=functools.partial(mctx.qtransform_completed_by_mix_value,
                                   use_mixed_value=False))
  rows = jnp.arange(BATCH)
  gumbel = out.search_tree.extra_data.root_gumbel
  prior_action = jnp.argmax(gumbel + prior_logits, axis=-1)
  return dict(
      out=out, prior_logits=prior_logits, gumbel=gumbel,
      selected_value=qvalues[rows, out.action],
      prior_action_value=qvalues[rows, prior_action],
      weights_value=jnp.sum(out.action_weights * qvalues, axis=-1),
      raw_value=raw_value)


@functools.lru_cache(maxsize=None)
def _jitted_demo(name, num_simulations):
  return jax.jit(functools.partial(_demo, POLICIES[name], num_simulations))


@pytest.mark.parametrize("num_simulations", [
    pytest.param(b, marks=pytest.mark.slow) if b == 16 else b for b in BUDGETS])
@pytest.mark.parametrize("name", list(POLICIES))
def test_policy_improvement_demo(name, num_simulations):
  demo = _jitted_demo(name, num_simulations)
  for seed in SEEDS:
    result = jax.device_get(demo(jax.random.PRNGKey(seed)))
    out = result["out"]
    assert out.action.shape == (BATCH,) and out.action.dtype == jnp.int32
    assert np.all((out.action >= 0) & (out.action < NUM_ACTIONS))
    weights = np.asarray(out.action_weights)
    assert weights.shape == (BATCH, NUM_ACTIONS) and np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    gumbel = np.asarray(result["gumbel"])
    assert gumbel.shape == (BATCH, NUM_ACTIONS) and np.all(np.isfinite(gumbel))
    assert np.all(np.isfinite(result["weights_value"]))
    if name in IMPROVING_POLICIES:
      improvement = result["selected_value"] - result["prior_action_value"]
      assert np.min(improvement) >= 0.0, (seed, np.min(improvement), np.mean(improvement))


@pytest.mark.parametrize("name", ["smcts", "tsmcts"])
def test_root_gumbel_is_the_noise_that_ranked_the_root_actions(name):
  """The actions searched first are the top ones by `root_gumbel + prior_logits`."""
  result = jax.device_get(_jitted_demo(name, 16)(jax.random.PRNGKey(5)))
  searched = np.asarray(result["out"].search_tree.extra_data.particles_per_action)[:, 0] > 0
  score = np.asarray(result["gumbel"]) + np.asarray(result["prior_logits"])
  for b in range(BATCH):
    k = int(searched[b].sum())
    assert k >= 1
    top = np.argsort(-score[b])[:k]
    np.testing.assert_array_equal(np.sort(top), np.flatnonzero(searched[b]))


@pytest.mark.parametrize("name", SMCTX_POLICIES)
def test_stochastic_recurrent_fn_gets_one_key_per_particle_slice(name):
  """Every call holds `[B]` rows; the particles of a root draw their successors independently."""
  batch, num_actions, num_particles = 3, 4, 8
  root_states = -1 - jnp.arange(batch, dtype=jnp.int32)  # successors are >= 0
  traced_shapes, calls = [], []

  def record(rng_key, embedding, successor):
    calls.append((np.asarray(rng_key).copy(), np.asarray(embedding).copy(),
                  np.asarray(successor).copy()))

  def recurrent_fn(params, rng_key, action, embedding):
    del params
    traced_shapes.append((action.shape, embedding.shape))
    successor = jax.random.randint(rng_key, (batch,), 0, 1 << 30)
    jax.debug.callback(record, rng_key, embedding, successor)
    zeros = jnp.zeros((batch,))
    output = mctx.RecurrentFnOutput(reward=zeros, discount=zeros + 0.9, value=zeros,
                                    prior_logits=jnp.zeros((batch, num_actions)))
    return output, successor

  root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, num_actions)), value=jnp.zeros(batch),
                           embedding=root_states)
  search = jax.jit(lambda key: POLICIES[name](None, key, root, recurrent_fn, 32,
                                               num_particles=num_particles))
  jax.block_until_ready(search(jax.random.PRNGKey(0)))
  jax.effects_barrier()
  assert traced_shapes and set(traced_shapes) == {((batch,), (batch,))}
  assert calls and all(e.shape == (batch,) and s.shape == (batch,) for _, e, s in calls)
  # Every call (particle slice and step) got its own key.
  keys = {k.tobytes() for k, _, _ in calls}
  assert len(keys) == len(calls)
  # Calls from the root state: the particles leaving the root of each row.
  from_root = [s for _, e, s in calls if np.array_equal(e, np.asarray(root_states))]
  assert len(from_root) >= 2
  for b in range(batch):
    assert len({int(s[b]) for s in from_root}) > 1, b


@pytest.mark.parametrize("name", SMCTX_POLICIES)
def test_recurrent_fn_closing_over_a_per_root_array(name):
  bonus = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0])
  batch, num_actions = bonus.shape[0], 4

  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    reward = bonus * (action + 1).astype(jnp.float32)  # needs row b to be root b
    output = mctx.RecurrentFnOutput(reward=reward, discount=jnp.zeros((batch,)),
                                    value=jnp.zeros((batch,)),
                                    prior_logits=jnp.zeros((batch, num_actions)))
    return output, embedding

  root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, num_actions)), value=jnp.zeros(batch),
                           embedding=jnp.zeros(batch))
  out = jax.jit(lambda key: POLICIES[name](None, key, root, recurrent_fn, 32, gumbel_scale=0.0))(
      jax.random.PRNGKey(1))
  # No noise: the reported root noise is zero.
  np.testing.assert_array_equal(out.search_tree.extra_data.root_gumbel,
                                np.zeros((batch, num_actions)))
  tree = out.search_tree
  visited = np.asarray(tree.children_visits[:, 0]) > 0
  assert np.all(visited.any(axis=-1))
  # Terminal after one step: the Q of action a at root b is bonus[b]·(a + 1).
  expected = np.asarray(bonus)[:, None] * np.arange(1, num_actions + 1)[None]
  np.testing.assert_allclose(np.asarray(tree.children_values[:, 0])[visited], expected[visited],
                             rtol=1e-6)


@pytest.mark.parametrize("policy", [smctx.sampled_smc_policy, smctx.sampled_smcts_policy,
                                    smctx.sampled_tsmcts_policy])
def test_sampled_model_and_sampler_see_root_rows(policy):
  """A sampled model and its `action_sampler` both get `[B]` rows in root order."""
  batch, num_candidates = 3, 4
  scale = jnp.asarray([1.0, 10.0, 100.0])
  shapes = []

  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    shapes.append(("model", action.shape))
    reward = scale * action[:, 0]  # needs row b to be root b
    zeros = jnp.zeros((batch,))
    output = smctx.SampledRecurrentFnOutput(reward=reward, discount=zeros, value=zeros,
                                            policy=jnp.zeros((batch, 1)))
    return output, embedding

  def action_sampler(rng_key, policy_params):
    shapes.append(("sampler", policy_params.shape))
    return policy_params + scale[:, None] * jax.random.uniform(rng_key, (batch, 1))

  candidates = jnp.broadcast_to(jnp.arange(num_candidates, dtype=jnp.float32)[None, :, None],
                                (batch, num_candidates, 1))
  root = smctx.SampledRootFnOutput(candidates=candidates, value=jnp.zeros(batch),
                                   embedding=jnp.zeros(batch))
  out = jax.jit(lambda key: policy(None, key, root, recurrent_fn, 32,
                                   action_sampler=action_sampler))(jax.random.PRNGKey(2))
  assert set(shapes) == {("model", (batch, 1)), ("sampler", (batch, 1))}
  tree = out.search_tree
  visited = np.asarray(tree.children_visits[:, 0]) > 0
  expected = np.asarray(scale)[:, None] * np.arange(num_candidates)[None]
  np.testing.assert_allclose(np.asarray(tree.children_values[:, 0])[visited], expected[visited],
                             rtol=1e-6)
