"""Warm starts (`smctx.warm_start`, `tsmcts_policy(..., warm_start=...)`), beyond the paper.

Expected values come from the hand-built models of `test_exact_values.py`, whose action values
are known in closed form, and from the inverse-variance rule written out here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx
from smctx._src import sequential_halving
from smctx._src import warm_start as warm_start_lib
from tests.test_exact_values import bandit_model, bandit_root, two_step_model

R1 = np.array([0.0, 0.3, 0.1, 0.2], np.float32)
V2 = np.array([0.5, 0.4, 0.1, 0.0], np.float32)
R2 = np.array([[0.9, 0.1, 0.5, 0.3],
               [0.2, 0.8, 0.4, 0.6],
               [0.7, 0.3, 0.2, 0.1],
               [0.0, 0.5, 0.9, 0.4]], np.float32)


@pytest.fixture(scope="module")
def two_step_search():
  recurrent_fn = two_step_model(R1, V2, np.zeros((4, 4)), R2)
  return jax.jit(lambda key, root, warm: smctx.tsmcts_policy(
      None, key, root, recurrent_fn, num_simulations=64, num_steps=8, warm_start=warm))


def two_step_root(batch_size=3):
  return mctx.RootFnOutput(prior_logits=jnp.zeros((batch_size, 4)),
                           value=jnp.zeros((batch_size,)),
                           embedding=jnp.zeros((batch_size,), jnp.int32))


def outputs_equal(a, b) -> bool:
  pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  return all(bool(jnp.all(x == y)) for x, y in pairs)


def test_next_root_holds_the_chosen_actions_successor_values():
  """After choosing `a`, the search reports `Q(s2, b) = r2[a, b]` (the episode ends after `b`)
  for the second actions it tried, and the winner's particles behind them.

  Seven particles split 4 + 3 over the last two candidates, so the winner's count tells its
  group from the other; 16 roots, so that some winners were ranked second when the last
  iteration began (the winner's group is then not the first)."""
  recurrent_fn = two_step_model(R1, V2, np.zeros((4, 4)), R2)
  out = jax.jit(lambda key: smctx.tsmcts_policy(
      None, key, two_step_root(16), recurrent_fn, num_simulations=56, num_particles=7))(
          jax.random.PRNGKey(0))
  next_root = out.search_tree.extra_data.next_root
  action = np.asarray(out.action)
  np.testing.assert_array_equal(np.asarray(next_root.action), action)
  weights, qvalues = np.asarray(next_root.weights), np.asarray(next_root.qvalues)
  assert np.all(weights.sum(-1) > 0), weights
  tried = weights > 0
  np.testing.assert_allclose(qvalues[tried], R2[action][tried], atol=1e-6)
  # The winner's particles in the last iteration: 4 or 3 of the 7, as the search counted them.
  last = np.asarray(out.search_tree.extra_data.particles_per_action)[:, -1]
  winners = last[np.arange(16), action]
  np.testing.assert_allclose(weights.sum(-1), winners, atol=1e-5)
  assert set(winners.tolist()) == {3.0, 4.0}, winners


def test_warm_start_keeps_only_rows_whose_agent_took_the_searched_action(two_step_search):
  out = two_step_search(jax.random.PRNGKey(0), two_step_root(), None)
  taken = np.asarray(out.action).copy()
  taken[1] = (taken[1] + 1) % 4
  warm = smctx.warm_start(out, jnp.asarray(taken), weight=0.5)
  weights = np.asarray(out.search_tree.extra_data.next_root.weights)
  np.testing.assert_allclose(np.asarray(warm.weights)[[0, 2]], 0.5 * weights[[0, 2]])
  np.testing.assert_array_equal(np.asarray(warm.weights)[1], 0.0)
  ended = smctx.warm_start(out, out.action, done=jnp.array([False, False, True]))
  np.testing.assert_allclose(np.asarray(ended.weights)[:2], weights[:2])
  np.testing.assert_array_equal(np.asarray(ended.weights)[2], 0.0)


def test_a_warm_start_without_weight_is_the_search_from_nothing(two_step_search):
  """The drop-in call is unchanged: no estimate kept gives the same search, bit for bit."""
  key, root = jax.random.PRNGKey(3), two_step_root()
  cold = two_step_search(key, root, None)
  empty = smctx.warm_start(cold, (cold.action + 1) % 4)
  assert outputs_equal(two_step_search(key, root, empty), cold)
  # Compiled as `cold` is: run op by op, XLA rounds some sums differently (1 ulp).
  plain = jax.jit(lambda k, r: smctx.tsmcts_policy(
      None, k, r, two_step_model(R1, V2, np.zeros((4, 4)), R2), num_simulations=64,
      num_steps=8))(key, root)
  assert outputs_equal(plain, cold)


def test_warm_estimates_enter_q_sh_as_an_earlier_iteration():
  """One-step bandit: every iteration measures `Q(a) = r(a)` exactly, so `Q_SH(a)` must be
  `(W·q_warm + n·r) / (W + n)`, with `n` the particles the search gave `a`."""
  rewards = np.array([[0.1, 0.5, 0.3, 0.2]], np.float32)
  recurrent_fn = bandit_model(rewards)
  root = bandit_root(np.zeros((1, 4)), np.zeros(1))
  warm = smctx.WarmStart(action=jnp.zeros((1,), jnp.int32),
                         qvalues=jnp.array([[0.9, -0.5, 0.0, 0.3]]),
                         weights=jnp.array([[6.0, 2.0, 0.0, 1.0]]))
  out = smctx.tsmcts_policy(None, jax.random.PRNGKey(0), root, recurrent_fn,
                            num_simulations=32, num_particles=8, warm_start=warm,
                            gumbel_scale=0.0, qtransform=mctx.qtransform_completed_by_mix_value)
  n = np.asarray(out.search_tree.extra_data.particles_per_action).sum(1)[0]
  assert np.all(n > 0), n
  w, q = np.asarray(warm.weights)[0], np.asarray(warm.qvalues)[0]
  expected = (w * q + n * rewards[0]) / (w + n)
  qvalues = np.asarray(out.search_tree.summary().qvalues)[0]
  np.testing.assert_allclose(qvalues, expected, atol=1e-5)
  # Action 0's warm estimate (0.9 over 6 particles) outweighs action 1's measured 0.5.
  assert int(out.action[0]) == 0


def test_warm_start_through_an_episode_under_scan(two_step_search):
  """The state a search returns is the next search's input inside `lax.scan`."""
  def step(warm, key):
    out = two_step_search(key, two_step_root(), warm)
    return smctx.warm_start(out, out.action), out.action

  warm0 = smctx.WarmStart.zeros(3, 4)
  warm, actions = jax.lax.scan(step, warm0, jax.random.split(jax.random.PRNGKey(0), 3))
  assert actions.shape == (3, 3)
  assert np.all(np.isfinite(np.asarray(warm.qvalues)))


@pytest.mark.parametrize("policy", [smctx.smc_policy, smctx.smcts_policy])
def test_other_searches_report_no_estimates(policy):
  recurrent_fn = two_step_model(R1, V2, np.zeros((4, 4)), R2)
  out = policy(None, jax.random.PRNGKey(0), two_step_root(2), recurrent_fn, num_simulations=16,
               num_particles=4)
  np.testing.assert_array_equal(np.asarray(out.search_tree.extra_data.next_root.weights), 0.0)


def test_warm_start_of_the_wrong_shape_is_refused():
  recurrent_fn = two_step_model(R1, V2, np.zeros((4, 4)), R2)
  with pytest.raises(ValueError, match="warm_start.qvalues"):
    smctx.tsmcts_policy(None, jax.random.PRNGKey(0), two_step_root(2), recurrent_fn,
                        num_simulations=16, warm_start=smctx.WarmStart.zeros(2, 5))
  with pytest.raises(ValueError, match="warm_start"):
    smctx.tsmcts_policy(None, jax.random.PRNGKey(0), two_step_root(2), recurrent_fn,
                        num_simulations=16, warm_start=(1, 2))
  zeros = smctx.WarmStart.zeros(2, 4)
  for name, bad in [("action", zeros.replace(action=jnp.zeros((3,), jnp.int32))),
                    ("weights", zeros.replace(weights=jnp.ones((2, 1))))]:  # would broadcast
    with pytest.raises(ValueError, match=f"warm_start.{name}"):
      smctx.tsmcts_policy(None, jax.random.PRNGKey(0), two_step_root(2), recurrent_fn,
                          num_simulations=16, warm_start=bad)


def test_an_unusable_warm_estimate_is_ignored():
  """A NaN estimate, an estimate with no weight, or one of an invalid action leave the search
  as it is from nothing, bit for bit; `seed_halving` gives them no weight."""
  recurrent_fn = bandit_model(np.array([[0.1, 0.5, 0.3, 0.2]], np.float32))
  root = bandit_root(np.zeros((1, 4)), np.zeros(1))
  invalid = jnp.array([[False, False, False, True]])
  search = lambda warm: smctx.tsmcts_policy(None, jax.random.PRNGKey(0), root, recurrent_fn,
                                            num_simulations=32, num_particles=8,
                                            invalid_actions=invalid, warm_start=warm)
  warm = smctx.WarmStart(action=jnp.zeros((1,), jnp.int32),
                         qvalues=jnp.array([[jnp.nan, jnp.nan, 0.7, 0.9]]),
                         weights=jnp.array([[1.0, 0.0, 0.0, 5.0]]))
  cold = search(None)
  assert outputs_equal(search(warm), cold)
  halving = sequential_halving.HalvingState.start(~invalid, 2)
  seeded = warm_start_lib.seed_halving(halving, warm, invalid)
  np.testing.assert_array_equal(np.asarray(seeded.weights), 0.0)
  np.testing.assert_array_equal(np.asarray(seeded.qvalues), 0.0)


def test_successor_estimates_spread_the_winners_particles_over_its_second_actions():
  """Row 0's winner is group 1: its 6 particles split by the visits 1:2:0 of that group's
  second actions. Row 1's winner group was searched one step deep (no visits): no weight, and
  no NaN from dividing by its zero visits."""
  qvalues2 = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
  visits2 = np.array([[[5, 5, 5], [1, 2, 0]], [[0, 0, 0], [3, 1, 0]]], np.float32)
  got = warm_start_lib.successor_estimates(
      jnp.asarray(qvalues2), jnp.asarray(visits2), jnp.asarray([1, 0]), jnp.asarray([6, 4]),
      jnp.asarray([3, 2]))
  np.testing.assert_array_equal(np.asarray(got.action), [3, 2])
  np.testing.assert_array_equal(np.asarray(got.qvalues), [qvalues2[0, 1], qvalues2[1, 0]])
  np.testing.assert_allclose(np.asarray(got.weights), [[2.0, 4.0, 0.0], [0.0, 0.0, 0.0]])


def test_seed_halving_gives_a_negative_warm_weight_no_weight():
  # Only a positive number of particles counts as an earlier iteration (`smctx.warm_start`'s
  # `weight` is not checked, so a negative one can reach here).
  warm = smctx.WarmStart(action=jnp.zeros((1,), jnp.int32),
                         qvalues=jnp.array([[0.7, 0.9, 0.4]]),
                         weights=jnp.array([[-2.0, 3.0, 0.0]]))
  invalid = jnp.zeros((1, 3), bool)
  halving = sequential_halving.HalvingState.start(~invalid, 2)
  seeded = warm_start_lib.seed_halving(halving, warm, invalid)
  np.testing.assert_array_equal(np.asarray(seeded.weights), [[0.0, 3.0, 0.0]])
  np.testing.assert_allclose(np.asarray(seeded.qvalues), [[0.0, 0.9, 0.0]])
