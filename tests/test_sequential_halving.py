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
@pytest.mark.parametrize("count", [None, 5, 40])
def test_descending_rank_is_each_actions_position_in_that_order(num_actions, count):
  # With `count`, positions below it are exact and the others at least `count`.
  score, _ = _scores(num_actions)
  got = np.asarray(sequential_halving.descending_rank(jnp.asarray(score), count))
  assert got.dtype == np.int32
  want = _rank(score)
  if count is None:
    np.testing.assert_array_equal(got, want)
  else:
    np.testing.assert_array_equal(np.minimum(got, count), np.minimum(want, count))


@pytest.mark.parametrize("count", [1, 5, sequential_halving.SELECT_MAX_COUNT,
                                   sequential_halving.SELECT_MAX_COUNT + 1, 200, 250])
def test_best_actions_are_the_head_of_the_stable_order_with_ties_and_minus_infinity(count):
  # Both paths: selection one at a time (count ≤ SELECT_MAX_COUNT) and the sort beyond. Ties
  # are frequent; -inf marks whole tails (more -inf entries than the count in the last rows),
  # where an entry already taken must not be taken again.
  score, considered = _scores(200)
  score = np.where(considered, score, -np.inf).astype(np.float32)
  score[2, 3:] = -np.inf
  score[3] = 0.0
  got = jax.jit(lambda s: sequential_halving.best_actions(s, count))(jnp.asarray(score))
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, _order(score)[:, :min(count, 200)])


@pytest.mark.parametrize("num_actions", NUM_ACTIONS)
@pytest.mark.parametrize("count", [None, 7])
def test_rank_candidates_puts_considered_actions_first_best_first(num_actions, count):
  # With `count`, beyond 128 actions only the first `count` positions (selected, not sorted).
  score, considered = _scores(num_actions)
  got = np.asarray(sequential_halving.rank_candidates(jnp.asarray(score),
                                                      jnp.asarray(considered), count))
  head = num_actions if count is None else count
  assert got.shape[-1] >= head
  for b in range(score.shape[0]):
    inside = np.flatnonzero(considered[b])
    outside = np.flatnonzero(~considered[b])
    want_inside = inside[_order(score[b, inside])]
    np.testing.assert_array_equal(got[b, :min(len(inside), head)], want_inside[:head])
    if count is None:
      np.testing.assert_array_equal(np.sort(got[b, len(inside):]), outside)


@pytest.mark.parametrize("num_actions", NUM_ACTIONS)
@pytest.mark.parametrize("num_keep, max_keep", [(1, None), (3, None), (150, None), (3, 3),
                                                (2, 8), (8, 8), (40, 40)])
def test_top_considered_keeps_the_best_num_keep_considered_actions(num_actions, num_keep,
                                                                   max_keep):
  # `max_keep` (a static bound on a traced `num_keep`) selects the best beyond 128 actions.
  score, considered = _scores(num_actions)
  got = np.asarray(jax.jit(lambda s, c, k: sequential_halving.top_considered(
      s, c, k, max_keep))(jnp.asarray(score), jnp.asarray(considered), num_keep))
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


@functools.lru_cache(maxsize=1)
def _flat_search():
  """TSMCTS on 16 roots of 5 equal actions where every action is worth the same (reward 0,
  value 0, uniform priors): the halving can only rank by the Gumbel noise. 64 simulations:
  candidates 5, 3, 2 in three iterations."""
  batch, num_actions = 16, 5
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, num_actions)),
                           value=jnp.zeros((batch,)), embedding=jnp.zeros((batch,)))

  def recurrent_fn(params, key, action, embedding):
    out = mctx.RecurrentFnOutput(reward=jnp.zeros_like(embedding),
                                 discount=jnp.ones_like(embedding),
                                 prior_logits=jnp.zeros((batch, num_actions)),
                                 value=jnp.zeros_like(embedding))
    return out, embedding

  return jax.jit(lambda key: smctx.tsmcts_policy(None, key, root, recurrent_fn, 64))(
      jax.random.key(3))


def test_an_odd_number_of_candidates_keeps_the_larger_half():
  """5 candidates keep ceil(5/2) = 3, then 2: the static survivors and the particles."""
  from smctx._src import tsmcts
  assert tsmcts.Schedule(depths=(2, 2, 2), num_considered=(5, 3, 2)).survivors == (3, 2, 1)
  diag = _flat_search().search_tree.extra_data
  np.testing.assert_array_equal(diag.num_considered, np.tile([5, 3, 2], (16, 1)))
  per_iteration = np.asarray(diag.particles_per_action) > 0  # [B, K, A]
  np.testing.assert_array_equal(per_iteration.sum(-1), np.tile([5, 3, 2], (16, 1)))


@pytest.mark.parametrize("reuse_successors", [False, True])
def test_schedule_marks_root_last_rerooting_and_boundary_steps(reuse_successors):
  """Iterations of depth 1, 2 and 3, worked out by hand: which of the six steps is a root
  step, ends an iteration, re-roots after it, and runs the iteration boundary."""
  from smctx._src import tsmcts
  schedule = tsmcts.Schedule(depths=(1, 2, 3), num_considered=(4, 2, 1),
                             reuse_successors=reuse_successors)
  T, F = True, False
  assert schedule.iteration_of_step == (0, 1, 1, 2, 2, 2)
  assert schedule.is_last_step == (T, F, T, F, F, T)
  assert schedule.is_one_step == (T, F, F)  # the first iteration is its root step alone
  if reuse_successors:
    # Later iterations start at their successors: no root step; the particles re-root
    # after the last step of every iteration but the search's last.
    assert schedule.is_root_step == (T, F, F, F, F, F)
    assert schedule.reroots_after_step == (T, F, T, F, F, F)
    assert schedule.at_boundary == (T, F, T, F, F, T)
  else:
    # Every iteration starts with a root step, re-rooted after unless it is the whole
    # iteration.
    assert schedule.is_root_step == (T, T, F, T, F, F)
    assert schedule.reroots_after_step == (F, T, F, T, F, F)
    assert schedule.at_boundary == (T, T, T, T, F, T)
  # One root step a search is selected; three in six steps are branched to.
  assert schedule.selects_root_step == reuse_successors


@pytest.mark.parametrize("depths, reuse_successors, selects", [
    ((4, 4, 4, 4), False, False),  # 4 root steps in 16: more than one in 8
    ((8, 8, 8, 8), False, True),  # 4 in 32: one in 8
    ((8, 8, 8, 9), False, True),
    ((7, 7, 7, 8), False, False),  # 4 in 29
    ((1, 1, 1, 1), True, True),  # one root step a search, even in 4 steps
])
def test_root_step_is_selected_where_root_steps_are_few(depths, reuse_successors, selects):
  from smctx._src import tsmcts
  schedule = tsmcts.Schedule(depths=depths, num_considered=(16, 8, 4, 2),
                             reuse_successors=reuse_successors)
  assert schedule.selects_root_step == selects


def test_halving_ranks_by_the_gumbel_noise_when_values_and_priors_tie():
  """Equal logits and equal values: `g + logits + σ(Q̃)` is `g` plus a constant, so each
  halving keeps the candidates with the largest root Gumbel (`extra_data.root_gumbel`), and
  the action is the largest Gumbel of all; without the noise the tie would go to index order."""
  out = _flat_search()
  diag = out.search_tree.extra_data
  gumbel = np.asarray(diag.root_gumbel)
  alive = np.asarray(diag.particles_per_action) > 0  # [B, K, A]
  rank = np.argsort(np.argsort(-gumbel, axis=-1), axis=-1)  # 0 = largest Gumbel
  np.testing.assert_array_equal(alive[:, 1], rank < 3)
  np.testing.assert_array_equal(alive[:, 2], rank < 2)
  np.testing.assert_array_equal(out.action, np.argmax(gumbel, axis=-1))
  assert len(set(np.asarray(out.action).tolist())) > 1  # the noise, not the index, decided


# --------------------------------------------------------------------------
# One iteration's estimates and their combination (`iteration_values`, `record_iteration`).
# --------------------------------------------------------------------------


def test_iteration_values_are_group_means_of_r_plus_discounted_improved_value():
  # `Q_i(a)` is the mean over a's particles of `r + discount·(v(s2) + improvement)`; a
  # discount other than 1 tells that from `r + discount·v(s2) + improvement`.
  reward = np.array([[1.0, 0.5, -1.0, 2.0, 0.0]])
  discount = np.array([[0.9, 0.5, 0.9, -1.0, 0.0]])
  value = np.array([[2.0, 1.0, 3.0, 0.5, 7.0]])
  improvement = np.array([[0.5, -0.25, 1.0, 0.5, 3.0]])
  root_action = np.array([[0, 0, 2, 2, 3]])
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  q, count = sequential_halving.iteration_values(
      f32(reward), f32(discount), f32(value), jnp.asarray(root_action, jnp.int32),
      f32(improvement), 4)
  per_particle = reward + discount * (value + improvement)
  want_q = [per_particle[0, :2].mean(), 0.0, per_particle[0, 2:4].mean(), per_particle[0, 4]]
  np.testing.assert_allclose(np.asarray(q)[0], want_q, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(count)[0], [2, 0, 2, 1])


def test_record_iteration_counts_visits_as_particles_times_depth_and_records_its_column():
  halving = sequential_halving.HalvingState.start(jnp.ones((1, 3), bool), 2)
  halving = halving.replace(qvalues=jnp.asarray([[1.0, 5.0, 0.0]]),
                            weights=jnp.asarray([[2.0, 4.0, 0.0]]),
                            visits=jnp.asarray([[6.0, 12.0, 0.0]]))
  out = sequential_halving.record_iteration(
      halving, q_iter=jnp.asarray([[4.0, 0.0, 7.0]]), count=jnp.asarray([[2.0, 0.0, 2.0]]),
      depth=jnp.asarray(3.0), iteration=jnp.asarray(1))
  # Each of an iteration's particles spends `depth` model calls under its root action.
  np.testing.assert_allclose(np.asarray(out.visits)[0], [6 + 2 * 3, 12, 2 * 3])
  np.testing.assert_allclose(np.asarray(out.qvalues)[0], [(2 * 1 + 2 * 4) / 4, 5.0, 7.0])
  np.testing.assert_allclose(np.asarray(out.particles_per_action)[0], [[0, 0, 0], [2, 0, 2]])
  np.testing.assert_array_equal(np.asarray(out.num_considered)[0], [0, 2])


def test_a_candidate_without_particles_keeps_its_estimate_even_with_a_fractional_weight():
  # `iteration_weights="variance"` shrinks the counts, so a candidate can carry a weight
  # below 1 into an iteration it gets no particle in: its `Q_SH` must stay as it was.
  q, n = sequential_halving.combine_iterations(
      jnp.asarray([[3.0]]), jnp.asarray([[0.5]]), jnp.asarray([[9.0]]), jnp.asarray([[0.0]]))
  np.testing.assert_allclose(np.asarray(q), [[3.0]])
  np.testing.assert_allclose(np.asarray(n), [[0.5]])


def test_combination_is_a_weighted_mean_whatever_the_scale_of_the_weights():
  # `Q_SH = Σ_j N_j·Q_j / Σ_j N_j` (the docstring) does not depend on the weights' scale.
  q_sh, n_sh, q_i, n_i = ([[1.0]], [[0.1]], [[4.0]], [[0.2]])
  q, _ = sequential_halving.combine_iterations(*(jnp.asarray(x) for x in (q_sh, n_sh, q_i, n_i)))
  np.testing.assert_allclose(np.asarray(q), [[(0.1 * 1.0 + 0.2 * 4.0) / 0.3]], rtol=1e-6)


def test_variance_weights_keep_particles_per_action_and_the_root_values():
  # The root action's reward is noisy, every later step is deterministic (TD errors ~0, so
  # the variance weights are ~1e-12·n): the particles given to the candidates still number N
  # in every iteration, and the root's Q values are still means of the rewards (1 to 1.3).
  batch, num_actions = 2, 4
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, num_actions)),
                           value=jnp.zeros(batch), embedding=jnp.zeros(batch, jnp.int32))

  def recurrent_fn(params, key, action, depth):
    del params
    noise = jax.random.normal(key, action.shape)
    reward = jnp.where(depth == 0, 1.0 + 0.1 * action + noise, 0.0)
    out = mctx.RecurrentFnOutput(reward=reward, discount=jnp.ones(action.shape),
                                 prior_logits=jnp.zeros((batch, num_actions)),
                                 value=jnp.zeros(action.shape))
    return out, depth + 1

  out = jax.jit(lambda key: smctx.tsmcts_policy(
      None, key, root, recurrent_fn, 64, num_particles=8, iteration_weights="variance"))(
          jax.random.key(0))
  per_iteration = np.asarray(out.search_tree.extra_data.particles_per_action).sum(-1)
  np.testing.assert_array_equal(per_iteration, np.full_like(per_iteration, 8))
  assert np.all(np.asarray(out.search_tree.node_values)[:, 0] > 0.5)


def test_selected_and_branched_root_steps_give_the_same_search(monkeypatch):
  """The paper's layout `(2, 3, 3)` has a root step in every iteration, so its root steps are
  branched to; selected instead (every step computing both), the search is the same."""
  from smctx._src import tsmcts
  mdp = smctx.tabular.random_mdp(5, num_states=60, num_actions=6, branching=2)
  root_fn, recurrent_fn = smctx.tabular.model(mdp)
  root = root_fn(jnp.arange(8))
  invalid = jnp.zeros((8, 6), bool).at[2, :3].set(True)
  layout = smctx.search_layout("tsmcts", 64, 6, num_particles=8, variant="paper")
  assert layout.depths == (2, 3, 3)

  def search():
    return jax.jit(lambda key: smctx.tsmcts_policy(
        None, key, root, recurrent_fn, 64, invalid_actions=invalid, num_particles=8,
        max_num_considered_actions=6, variant="paper"))(jax.random.key(11))

  schedule = tsmcts.Schedule(layout.depths, layout.considered_per_iteration)
  assert not schedule.selects_root_step
  branched = search()
  monkeypatch.setattr(tsmcts, "ROOT_STEP_SELECT_EVERY", 1)
  assert schedule.selects_root_step
  selected = search()
  for a, b in zip(jax.tree_util.tree_leaves(branched), jax.tree_util.tree_leaves(selected),
                  strict=True):
    if jax.default_backend() == "cpu":
      np.testing.assert_array_equal(a, b)
    else:  # XLA may fuse the two programs differently and round differently
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(branched.action, selected.action)
