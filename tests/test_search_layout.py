"""`smctx.search_layout`: the layout a search will use, from a public function.

Checked against layouts worked out by hand (the budget rules of `budget.py`)
and against what a search actually ran (its diagnostics).
"""

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx


@pytest.mark.parametrize("policy,kw,want", [
    # 16 simulations, 4 actions: 4 candidates, halved once, two steps each (distinct paths).
    ("tsmcts", {}, smctx.Layout(4, 4, (4, 2), (2, 2))),
    # Asking for depth 1: two particles per candidate, one step each (16 = 8·2), not the
    # deeper 4 × (2, 2) that two steps per particle would need.
    ("tsmcts", dict(depth_per_iteration=1), smctx.Layout(8, 4, (4, 2), (1, 1))),
    # The same budget for the paper's variant: width 8, one step per iteration (16 = 8·2).
    ("tsmcts", dict(variant="paper"), smctx.Layout(8, 4, (4, 2), (1, 1))),
    # An explicit width: 16 simulations over 4 particles in two iterations.
    (smctx.tsmcts_policy, dict(num_particles=4), smctx.Layout(4, 4, (4, 2), (2, 2))),
    # SMC with 2 particles: 8 sequential steps.
    ("smc", dict(num_particles=2), smctx.Layout(2, 0, (0,), (8,))),
    (smctx.sampled_smcts_policy, dict(num_particles=4), smctx.Layout(4, 4, (4,), (4,))),
    # The latency: 8 sequential calls, width 16 // 8 = 2, both candidates, one iteration.
    ("tsmcts", dict(num_steps=8), smctx.Layout(2, 2, (2,), (8,))),
    ("smcts", dict(num_steps=8), smctx.Layout(2, 2, (2,), (8,))),
    ("smc", dict(num_steps=3), smctx.Layout(5, 0, (0,), (3,))),
    # num_steps is the number of calls even where the width leaves budget for more: 6 calls of
    # 16 // 6 = 2 particles spend 12, not 16 // 2 = 8 calls.
    ("smc", dict(num_steps=6), smctx.Layout(2, 0, (0,), (6,))),
    # More calls than simulations: one particle, and the budget caps the calls at 16.
    ("tsmcts", dict(num_steps=20), smctx.Layout(1, 1, (1,), (16,))),
    # One call: 16 particles; one call can only hold one halving iteration, so m1 = 2.
    ("tsmcts", dict(num_steps=1), smctx.Layout(16, 2, (2,), (1,))),
])
def test_search_layout_by_hand(policy, kw, want):
  assert smctx.search_layout(policy, 16, 4, **kw) == want


@pytest.mark.parametrize("num_simulations,num_actions,num_steps,want", [
    # 64 calls of 16 particles over 9 candidates: K = 4 iterations of 16 steps.
    (1024, 9, 64, smctx.Layout(16, 9, (9, 5, 3, 2), (16, 16, 16, 16))),
    # 10 calls over 4 iterations, the remainder on the last ones: (2, 2, 3, 3); width 10.
    (100, 9, 10, smctx.Layout(10, 9, (9, 5, 3, 2), (2, 2, 3, 3))),
    # 3 calls hold at most 3 iterations: m1 = 8 of the 9 actions (K = 3).
    (96, 9, 3, smctx.Layout(32, 8, (8, 4, 2), (1, 1, 1))),
])
def test_tsmcts_layout_of_a_requested_latency(num_simulations, num_actions, num_steps, want):
  assert smctx.search_layout("tsmcts", num_simulations, num_actions, num_steps=num_steps) == want


@pytest.mark.parametrize("name", [pytest.param("smc", marks=pytest.mark.slow),
                                  pytest.param("smcts", marks=pytest.mark.slow), "tsmcts"])
def test_search_layout_is_what_the_search_runs(name):
  batch, num_actions, num_simulations = 2, 5, 40
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, num_actions)),
                           value=jnp.zeros((batch,)), embedding=jnp.zeros((batch,)))

  def recurrent_fn(params, key, action, embedding):
    out = mctx.RecurrentFnOutput(reward=jnp.zeros_like(embedding),
                                 discount=jnp.ones_like(embedding),
                                 prior_logits=jnp.zeros((batch, num_actions)),
                                 value=jnp.zeros_like(embedding))
    return out, embedding

  policy = getattr(smctx, f"{name}_policy")
  out = jax.jit(lambda key: policy(None, key, root, recurrent_fn, num_simulations))(
      jax.random.key(0))
  layout = smctx.search_layout(policy, num_simulations, num_actions)
  diag = out.search_tree.extra_data
  np.testing.assert_array_equal(diag.depth, np.broadcast_to(layout.depths, diag.depth.shape))
  np.testing.assert_array_equal(diag.num_particles, layout.num_particles)
  np.testing.assert_array_equal(diag.num_evaluations, layout.num_evaluations)


def test_smcts_runs_the_latency_it_is_given():
  # The by-hand layout above (num_steps=8: width 2, 8 steps) is what the search runs; the
  # comparison for every policy is slow-marked but for TSMCTS, whose options differ.
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((2, 4)), value=jnp.zeros((2,)),
                           embedding=jnp.zeros((2,)))

  def recurrent_fn(params, key, action, embedding):
    z = jnp.zeros_like(embedding)
    return mctx.RecurrentFnOutput(reward=z, discount=z + 1.0, prior_logits=jnp.zeros((2, 4)),
                                  value=z), embedding

  out = jax.jit(lambda key: smctx.smcts_policy(None, key, root, recurrent_fn, 16, num_steps=8))(
      jax.random.key(0))
  np.testing.assert_array_equal(out.search_tree.extra_data.depth, 8)
  np.testing.assert_array_equal(out.search_tree.extra_data.num_particles, 2)


@pytest.mark.parametrize("kw,name", [
    (dict(policy="mcts"), "policy"), (dict(num_simulations=0), "num_simulations"),
    (dict(num_actions=2.5), "num_actions"), (dict(variant="fast"), "variant"),
    (dict(depth_per_iteration=0), "depth_per_iteration"), (dict(num_steps=0), "num_steps"),
    (dict(num_steps=4, num_particles=4), "num_steps")])
def test_search_layout_refuses_bad_arguments_naming_them(kw, name):
  args = dict(policy="tsmcts", num_simulations=16, num_actions=4)
  args.update(kw)
  with pytest.raises(ValueError, match=name):
    smctx.search_layout(args.pop("policy"), args.pop("num_simulations"), args.pop("num_actions"),
                        **args)


def test_tsmcts_step_diagnostics_follow_the_iterations_of_the_layout():
  """The paper's variant, where every iteration starts with a model call at the root: root
  steps do not weight (ESS reported as the width); `resample="always"` resamples at every
  inner step but an iteration's last, whose particles go back to the root (its resampling would
  only add noise). The iterations' steps are read from the layout the search reports."""
  batch, num_actions = 2, 4

  def recurrent_fn(params, key, action, embedding):
    del params, key
    out = mctx.RecurrentFnOutput(reward=action.astype(jnp.float32) * 0.1,
                                 discount=jnp.full(action.shape, 0.9),
                                 prior_logits=jnp.zeros((batch, num_actions)),
                                 value=jnp.zeros(action.shape))
    return out, embedding

  root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, num_actions)),
                           value=jnp.zeros((batch,)), embedding=jnp.zeros((batch,)))
  out = smctx.tsmcts_policy(None, jax.random.key(0), root, recurrent_fn, 32, num_particles=4,
                            resample="always", variant="paper")
  diag = out.search_tree.extra_data
  depths = np.asarray(diag.depth)[0]
  assert np.all(depths >= 3), depths  # so that an iteration has inner steps before its last
  starts = np.concatenate([[0], np.cumsum(depths)[:-1]])
  root_steps, last_steps = starts, starts + depths - 1
  inner = np.setdiff1d(np.arange(depths.sum()), np.concatenate([root_steps, last_steps]))
  ess, resampled = np.asarray(diag.ess), np.asarray(diag.resampled)
  np.testing.assert_array_equal(ess[:, root_steps], 4.0)
  assert not resampled[:, root_steps].any() and not resampled[:, last_steps].any()
  assert resampled[:, inner].all()
