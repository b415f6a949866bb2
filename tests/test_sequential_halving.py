"""Ranking the root candidates, on both paths: pairwise comparisons (A ≤ 128) and a sort (A > 128).

The reference is NumPy's stable `argsort(-score)`: best first, ties by index.
Scores are small integers so that ties are frequent.
"""

import functools

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx
from smctx._src import sequential_halving

# 7 actions take the pairwise path, 200 the argsort path.
NUM_ACTIONS = [7, 200]
assert NUM_ACTIONS[0] <= sequential_halving.PAIRWISE_MAX_ACTIONS < NUM_ACTIONS[1]


def _scores(num_actions, seed=0):
  rng = np.random.default_rng(seed)
  score = rng.integers(-4, 5, size=(6, num_actions)).astype(np.float32)
  considered = rng.random((6, num_actions)) < 0.6
  considered[0] = True
  considered[1] = False
  return score, considered


def _order(score):
  return np.argsort(-score, axis=-1, kind="stable")


def _rank(score):
  return np.argsort(_order(score), axis=-1)  # the inverse permutation


@pytest.mark.parametrize("num_actions", NUM_ACTIONS)
def test_descending_order_is_a_stable_argsort_of_minus_score(num_actions):
  score, _ = _scores(num_actions)
  got = sequential_halving.descending_order(jnp.asarray(score))
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, _order(score))


@pytest.mark.parametrize("num_actions", NUM_ACTIONS)
def test_descending_rank_is_each_actions_position_in_that_order(num_actions):
  score, _ = _scores(num_actions)
  got = sequential_halving.descending_rank(jnp.asarray(score))
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, _rank(score))


@pytest.mark.parametrize("num_actions", NUM_ACTIONS)
def test_rank_candidates_puts_considered_actions_first_best_first(num_actions):
  score, considered = _scores(num_actions)
  got = np.asarray(sequential_halving.rank_candidates(jnp.asarray(score),
                                                      jnp.asarray(considered)))
  for b in range(score.shape[0]):
    inside = np.flatnonzero(considered[b])
    outside = np.flatnonzero(~considered[b])
    want_inside = inside[_order(score[b, inside])]
    np.testing.assert_array_equal(got[b, :len(inside)], want_inside)
    np.testing.assert_array_equal(np.sort(got[b, len(inside):]), outside)


@pytest.mark.parametrize("num_actions", NUM_ACTIONS)
@pytest.mark.parametrize("num_keep", [1, 3, 150])
def test_top_considered_keeps_the_best_num_keep_considered_actions(num_actions, num_keep):
  score, considered = _scores(num_actions)
  got = np.asarray(sequential_halving.top_considered(jnp.asarray(score), jnp.asarray(considered),
                                                     num_keep))
  for b in range(score.shape[0]):
    inside = np.flatnonzero(considered[b])
    want = np.zeros(num_actions, bool)
    want[inside[_order(score[b, inside])][:num_keep]] = True
    np.testing.assert_array_equal(got[b], want)


# --------------------------------------------------------------------------
# A whole TSMCTS search over 200 actions.
# --------------------------------------------------------------------------

BATCH, WIDE = 4, 200


@functools.cache
def _wide_bandit():
  """Exact-Q bandit (discount 0), a third of the actions invalid, flat prior."""
  rng = np.random.default_rng(1)
  rewards = rng.normal(size=(BATCH, WIDE)).astype(np.float32)
  invalid = rng.random((BATCH, WIDE)) < 0.33

  def recurrent_fn(params, rng_key, action, row):
    del params, rng_key
    zeros = jnp.zeros(action.shape, jnp.float32)
    return mctx.RecurrentFnOutput(reward=jnp.asarray(rewards)[row, action], discount=zeros,
                                  prior_logits=jnp.zeros(action.shape + (WIDE,)),
                                  value=zeros), row

  root = mctx.RootFnOutput(prior_logits=jnp.zeros((BATCH, WIDE)), value=jnp.zeros(BATCH),
                           embedding=jnp.arange(BATCH))
  # N = 16, m1 = 16, K = 4 iterations of 2 steps (the second actions ranked over 200 too).
  out = jax.jit(lambda key: smctx.tsmcts_policy(
      None, key, root, recurrent_fn, 128, jnp.asarray(invalid), num_particles=16,
      gumbel_scale=0.0))(jax.random.PRNGKey(0))
  return out, rewards, invalid


def test_tsmcts_over_200_actions_returns_a_valid_action_and_a_distribution():
  out, _, invalid = _wide_bandit()
  action = np.asarray(out.action)
  assert np.all((0 <= action) & (action < WIDE))
  assert not np.any(invalid[np.arange(BATCH), action])
  weights = np.asarray(out.action_weights)
  np.testing.assert_allclose(weights.sum(-1), np.ones(BATCH), rtol=1e-5)
  assert np.all(weights[invalid] == 0.0) and np.all(weights >= 0.0)


def test_tsmcts_over_200_actions_chooses_the_best_of_its_candidates():
  # A flat prior and no noise: the candidates are the first 16 valid actions
  # (ties by index), and Sequential Halving on exact Q ends on their best.
  out, rewards, invalid = _wide_bandit()
  for b in range(BATCH):
    candidates = np.flatnonzero(~invalid[b])[:16]
    assert out.action[b] == candidates[np.argmax(rewards[b, candidates])]
