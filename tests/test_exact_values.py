"""Exact values of SMC, SMCTS and TSMCTS on problems solvable by hand.

Every expected value here is computed independently of the library: in closed
form or with a small NumPy re-implementation of the formula the spec names
(`algorithms.md` sections 1-5 and 8). The library's outputs are only compared
against them, never reused as expectations (visit counts are the one
measurement an expectation may read, and only where noted).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx
from smctx import tabular

F32 = np.float32


# ----------------------------------------------------------------------------
# Independent references.
# ----------------------------------------------------------------------------

def np_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  z = np.exp(x - np.max(x, axis=axis, keepdims=True))
  return z / np.sum(z, axis=axis, keepdims=True)


def np_completed_by_mix_value(q, visits, logits, raw_value, *, value_scale=0.1,
                              maxvisit_init=50.0, epsilon=1e-8):
  """Hand-written `mctx.qtransform_completed_by_mix_value` for one node (float64).

  Gumbel MuZero (Danihelka et al. 2022, appendix D): unvisited actions take the
  mixed value `(v + N·Σ_visited p·q / Σ_visited p) / (N + 1)`, the completed
  Q-values are min-max rescaled to [0, 1] and scaled by
  `(maxvisit_init + max visits)·value_scale`.
  """
  q = np.asarray(q, np.float64)
  visits = np.asarray(visits, np.float64)
  probs = np_softmax(logits)
  visited = visits > 0
  total = visits.sum()
  if visited.any():
    weighted_q = np.sum(probs[visited] * q[visited]) / np.sum(probs[visited])
  else:
    weighted_q = 0.0
  mixed = (raw_value + total * weighted_q) / (total + 1.0)
  completed = np.where(visited, q, mixed)
  lo, hi = completed.min(), completed.max()
  rescaled = (completed - lo) / max(hi - lo, epsilon)
  return (maxvisit_init + visits.max()) * value_scale * rescaled, completed


def linear_qtransform(scale):
  """σ(q) = scale·q on the raw Q-values of the (unbatched) tree (0 if unvisited)."""
  def qtransform(tree, node_index):
    return scale * tree.qvalues(node_index)
  return qtransform


def summary_np(out):
  s = out.search_tree.summary()
  return np.asarray(s.qvalues), np.asarray(s.visit_counts)


def jit_policy(policy, recurrent_fn, **kwargs):
  """One jitted search per configuration: `(rng_key, root) -> PolicyOutput`."""
  return jax.jit(lambda key, root: policy(None, key, root, recurrent_fn, **kwargs))


# ----------------------------------------------------------------------------
# Models.
# ----------------------------------------------------------------------------

def bandit_model(rewards):
  """Row `b` of the batch is a one-step bandit with rewards `rewards[b]`.

  The embedding is the row index. Every transition ends the episode
  (discount 0); the returned value is deliberately large and action-dependent
  so that any use of it (instead of `discount·value`) shows.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  num_actions = rewards.shape[1]

  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    n = action.shape[0]
    out = mctx.RecurrentFnOutput(
        reward=rewards[embedding, action],
        discount=jnp.zeros((n,), jnp.float32),
        prior_logits=jnp.zeros((n, num_actions), jnp.float32),
        value=7.0 + 3.0 * action.astype(jnp.float32))
    return out, embedding

  return recurrent_fn


def bandit_root(logits, value):
  logits = jnp.asarray(logits, jnp.float32)
  return mctx.RootFnOutput(prior_logits=logits, value=jnp.asarray(value, jnp.float32),
                           embedding=jnp.arange(logits.shape[0], dtype=jnp.int32))


def two_step_model(r1, v2, logits2, r2, leaf_value=2.0):
  """A deterministic depth-2 tree.

  State 0 is the root; action `a` gives reward `r1[a]`, discount 1 and leads
  to state `1 + a`, whose network value is `v2[a]` and prior logits
  `logits2[a]`. There action `b` gives reward `r2[a, b]` and ends the episode
  (discount 0) in the absorbing state `A + 1` (reward 0, discount 0, value
  `leaf_value`, which must never count).
  """
  r1, v2 = jnp.asarray(r1, jnp.float32), jnp.asarray(v2, jnp.float32)
  logits2, r2 = jnp.asarray(logits2, jnp.float32), jnp.asarray(r2, jnp.float32)
  num_actions = r1.shape[0]
  terminal = num_actions + 1

  def recurrent_fn(params, rng_key, action, state):
    del params, rng_key
    at_root = state == 0
    at_mid = (state >= 1) & (state <= num_actions)
    mid = jnp.clip(state - 1, 0, num_actions - 1)
    reward = jnp.where(at_root, r1[action], jnp.where(at_mid, r2[mid, action], 0.0))
    discount = jnp.where(at_root, 1.0, 0.0).astype(jnp.float32)
    value = jnp.where(at_root, v2[action], leaf_value).astype(jnp.float32)
    logits = jnp.where(at_root[:, None], logits2[action], 0.0).astype(jnp.float32)
    next_state = jnp.where(at_root, 1 + action, terminal).astype(jnp.int32)
    out = mctx.RecurrentFnOutput(reward=reward, discount=discount, prior_logits=logits,
                                 value=value)
    return out, next_state

  return recurrent_fn


def tree_root(logits0, v0, batch_size):
  logits0 = jnp.broadcast_to(jnp.asarray(logits0, jnp.float32), (batch_size, len(logits0)))
  return mctx.RootFnOutput(prior_logits=logits0, value=jnp.full((batch_size,), v0, jnp.float32),
                           embedding=jnp.zeros((batch_size,), jnp.int32))


# Three bandits, one per batch row: prior sometimes disagrees with the rewards.
BANDIT_R = np.array([[0.3, -0.5, 1.2, 0.1, 0.8],
                     [-1.0, 0.4, 0.2, 0.9, -0.3],
                     [2.2, 1.5, -0.5, 0.0, 1.6]], F32)
BANDIT_LOGITS = np.array([[0.0, 0.0, 0.0, 0.0, 0.0],
                          [1.0, -0.5, 0.3, -1.0, 0.2],
                          [-0.8, 0.6, 0.1, 0.4, 0.0]], F32)
BANDIT_V0 = np.array([0.0, -2.0, 3.0], F32)
LINEAR_C = 3.0


# ----------------------------------------------------------------------------
# One-step bandits, discount 0.
# ----------------------------------------------------------------------------

def _check_linear_bandit(out, num_simulations):
  q, visits = summary_np(out)
  batch = BANDIT_R.shape[0]
  # Enough budget: every action was visited, and the visits add up to the budget.
  assert np.all(visits > 0), visits
  np.testing.assert_array_equal(visits.sum(-1), np.full(batch, num_simulations))
  # Q of a visited action is its reward (discount 0: the next value must not count).
  np.testing.assert_allclose(q, BANDIT_R, rtol=0, atol=1e-6)
  # action_weights = softmax(logits + c·Q) with Q the true rewards.
  expected_w = np_softmax(BANDIT_LOGITS + LINEAR_C * BANDIT_R)
  np.testing.assert_allclose(np.asarray(out.action_weights), expected_w, rtol=0, atol=1e-5)
  # The greedy action maximises logits + c·Q, which for this data is argmax r.
  expected_action = np.argmax(BANDIT_LOGITS + LINEAR_C * BANDIT_R, -1)
  np.testing.assert_array_equal(expected_action, np.argmax(BANDIT_R, -1))  # data sanity
  np.testing.assert_array_equal(np.asarray(out.action), expected_action)
  # Search value: Σ_a π(a)·Q(a).
  expected_v = np.sum(expected_w * BANDIT_R, -1)
  np.testing.assert_allclose(np.asarray(out.search_tree.node_values[:, 0]), expected_v,
                             rtol=0, atol=1e-5)


def test_smcts_bandit_exact_q_and_linear_greedification():
  recurrent_fn = bandit_model(BANDIT_R)
  search = jit_policy(smctx.smcts_policy, recurrent_fn, num_simulations=24, num_particles=8,
                      gumbel_scale=0.0, qtransform=linear_qtransform(LINEAR_C))
  out = search(jax.random.PRNGKey(0), bandit_root(BANDIT_LOGITS, BANDIT_V0))
  _check_linear_bandit(out, num_simulations=24)


def test_tsmcts_bandit_exact_q_and_linear_greedification():
  recurrent_fn = bandit_model(BANDIT_R)
  # A = 5, N = 10: m1 = 5, K = 3, T_SH = 60 // 30 = 2.
  search = jit_policy(smctx.tsmcts_policy, recurrent_fn, num_simulations=60, num_particles=10,
                      gumbel_scale=0.0, qtransform=linear_qtransform(LINEAR_C))
  out = search(jax.random.PRNGKey(1), bandit_root(BANDIT_LOGITS, BANDIT_V0))
  _check_linear_bandit(out, num_simulations=60)


def test_smcts_one_step_default_qtransform_with_unvisited_actions():
  """T = 1 and N = 3 < A = 5: the top-3 prior actions get one visit each.

  With gumbel_scale=0 the root assignment is the top-3 by logits, so the
  visited set, the visit counts, the mixed value of the two unvisited actions
  and the whole completed-Q transform are known in closed form.
  """
  recurrent_fn = bandit_model(BANDIT_R)
  search = jit_policy(smctx.smcts_policy, recurrent_fn, num_simulations=3, num_particles=3,
                      gumbel_scale=0.0)
  logits = BANDIT_LOGITS + np.array([0.0, 0.01, 0.02, 0.03, 0.04], F32)  # no ties in row 0
  out = search(jax.random.PRNGKey(2), bandit_root(logits, BANDIT_V0))
  q, visits = summary_np(out)
  for b in range(BANDIT_R.shape[0]):
    top3 = np.argsort(-logits[b])[:3]
    expected_visits = np.zeros(5)
    expected_visits[top3] = 1.0
    np.testing.assert_array_equal(visits[b], expected_visits)
    expected_q = np.where(expected_visits > 0, BANDIT_R[b], 0.0)
    np.testing.assert_allclose(q[b], expected_q, rtol=0, atol=1e-6)
    sigma, completed = np_completed_by_mix_value(
        np.where(expected_visits > 0, BANDIT_R[b], 0.0), expected_visits, logits[b],
        BANDIT_V0[b])
    expected_w = np_softmax(logits[b] + sigma)
    np.testing.assert_allclose(np.asarray(out.action_weights[b]), expected_w, rtol=0, atol=1e-5)
    assert int(out.action[b]) == int(np.argmax(logits[b] + sigma))
    np.testing.assert_allclose(float(out.search_tree.node_values[b, 0]),
                               np.sum(expected_w * completed), rtol=0, atol=1e-5)


def test_smcts_searches_the_gumbel_top_actions_and_picks_by_noise_prior_and_q():
  """N = 2 < A = 5: the particles take the two actions of largest g + logits, g the root
  noise the search reports, and no other; the action maximises g + logits + c·Q over them.

  Random logits and rewards over 16 rows, so that the noise, the prior and Q each decide
  some rows (with gumbel_scale=0, or data where argmax r decides, dropping a term passes).
  """
  rng = np.random.default_rng(5)
  batch = 16
  rewards = (0.3 * rng.normal(size=(batch, 5))).astype(F32)
  logits = rng.normal(size=(batch, 5)).astype(F32)
  search = jit_policy(smctx.smcts_policy, bandit_model(rewards), num_simulations=4,
                      num_particles=2, qtransform=linear_qtransform(LINEAR_C))
  out = search(jax.random.PRNGKey(4), bandit_root(logits, np.zeros(batch, F32)))
  g = np.asarray(out.search_tree.extra_data.root_gumbel, np.float64)
  top2 = np.argsort(-(g + logits), axis=-1)[:, :2]
  searched = np.zeros((batch, 5), bool)
  np.put_along_axis(searched, top2, True, axis=-1)
  np.testing.assert_array_equal(
      np.asarray(out.search_tree.extra_data.particles_per_action)[:, 0], searched.astype(int))
  _, visits = summary_np(out)
  np.testing.assert_array_equal(visits > 0, searched)
  score = np.where(searched, g + logits + LINEAR_C * rewards, -np.inf)
  np.testing.assert_array_equal(np.asarray(out.action), np.argmax(score, -1))


def test_tsmcts_bandit_default_qtransform_visits_by_hand():
  """A = 4, N = 8, 16 simulations: m1 = 4, K = 2, T_SH = 1; mctx's transform (`variant="paper"`).

  Iteration 1 gives 2 particles (2 evaluations) to every action; the best two
  by `logits + σ(Q)` get 4 more particles each in iteration 2. Every action is
  visited, so σ is the min-max rescaled rewards times (50 + max visits)·0.1.
  """
  rewards = np.array([[0.3, -0.5, 1.2, 0.1],
                      [-1.0, 0.4, 0.2, 0.9],
                      [1.0, 0.0, 0.02, -0.01]], F32)
  logits = np.array([[0.0, 0.3, -0.2, 0.5],
                     [1.0, -0.5, 0.3, -1.0],
                     [-5.4, 0.0, -0.05, -1.0]], F32)
  v0 = np.array([0.0, 5.0, -5.0], F32)
  search = jit_policy(smctx.tsmcts_policy, bandit_model(rewards), num_simulations=16,
                      num_particles=8, gumbel_scale=0.0, variant="paper")
  out = search(jax.random.PRNGKey(3), bandit_root(logits, v0))
  q, visits = summary_np(out)
  np.testing.assert_allclose(q, rewards, rtol=0, atol=1e-6)
  for b in range(rewards.shape[0]):
    sigma1, _ = np_completed_by_mix_value(rewards[b], np.full(4, 2.0), logits[b], v0[b])
    survivors = np.argsort(-(logits[b] + sigma1))[:2]
    expected_visits = np.full(4, 2.0)
    expected_visits[survivors] += 4.0
    np.testing.assert_array_equal(visits[b], expected_visits)
    sigma, _ = np_completed_by_mix_value(rewards[b], expected_visits, logits[b], v0[b])
    np.testing.assert_allclose(sigma, 5.6 * (rewards[b] - rewards[b].min()) /
                               (rewards[b].max() - rewards[b].min()), rtol=1e-6)
    expected_w = np_softmax(logits[b] + sigma)
    np.testing.assert_allclose(np.asarray(out.action_weights[b]), expected_w, rtol=0, atol=1e-5)
    expected_action = survivors[np.argmax((logits[b] + sigma)[survivors])]
    assert int(out.action[b]) == int(expected_action)
  # Row 2: the best action (logit -5.4) scores below both survivors
  # after iteration 1 (σ scale 5.2) but would score highest with the final
  # scale 5.6. The action is the Sequential Halving winner among the
  # survivors, not the argmax of the final scores over all actions.
  final_score = logits[2] + 5.6 * (rewards[2] - rewards[2].min()) / np.ptp(rewards[2])
  assert np.argmax(final_score) == 0 and visits[2, 0] == 2.0
  assert int(out.action[2]) == 2


# ----------------------------------------------------------------------------
# A deterministic two-step tree.
# ----------------------------------------------------------------------------

TREE_LOGITS0 = np.array([0.2, -0.1, 0.0], F32)
TREE_V0 = 0.5
TREE_R1 = np.array([0.5, -0.2, 0.1], F32)
TREE_V2 = np.array([0.3, 1.0, -0.4], F32)  # network values at the successors
TREE_LOGITS2 = np.array([[0.0, 0.5, -0.5],
                         [1.0, 0.0, 0.0],
                         [-0.3, 0.3, 0.0]], F32)
TREE_R2 = np.array([[1.0, -1.0, 0.0],
                    [0.2, 0.6, -0.8],
                    [-0.5, 1.5, 0.4]], F32)
TREE_C = 2.0


@pytest.mark.parametrize("depth,variant,reuse", [
    (1, "smctx", None), (1, "smctx", False), (1, "paper", None), (1, "paper", True),
    (3, "smctx", None), (3, "paper", None)])
def test_tsmcts_two_step_tree_second_greedification(depth, variant, reuse):
  """Q_SH(a) = r1(a) + Σ_b softmax(logits2 + c·R2)(b)·R2(b), or r1 + v2 at T_SH = 1.

  A = 3, N = 9: m1 = 3, K = 2, `num_simulations = N·K·depth` gives
  `T_SH = depth`. Iteration 1 has three groups of 3 particles, so the second
  actions of every group are assigned without replacement and cover all 3.
  With smctx's default (`variant="smctx"`, `reuse_successors`), iteration 2
  starts at the `s2` samples of iteration 1 instead of taking the root step again, so at
  `T_SH = 1` its one step evaluates the second actions: its `Q_2` is the
  two-step value, combined with iteration 1's `r1 + v2` by particle counts.
  """
  n, k = 9, 2
  recurrent_fn = two_step_model(TREE_R1, TREE_V2, TREE_LOGITS2, TREE_R2)
  search = jit_policy(smctx.tsmcts_policy, recurrent_fn, num_simulations=n * k * depth,
                      num_particles=n, gumbel_scale=0.0, qtransform=linear_qtransform(TREE_C),
                      variant=variant, reuse_successors=reuse)
  batch = 2
  out = search(jax.random.PRNGKey(4), tree_root(TREE_LOGITS0, TREE_V0, batch))
  q, visits = summary_np(out)

  pi2 = np_softmax(TREE_LOGITS2 + TREE_C * TREE_R2)
  two_step_q = TREE_R1 + np.sum(pi2 * TREE_R2, -1)
  q1 = TREE_R1 + TREE_V2 if depth == 1 else two_step_q
  # Iteration 2: the two best by logits + c·Q_1 share the 9 particles, 5 to the better.
  order = np.argsort(-(TREE_LOGITS0 + TREE_C * q1))
  n2 = np.zeros(3)
  n2[order[0]], n2[order[1]] = 5, 4
  reuses = variant == "smctx" if reuse is None else reuse
  q2 = TREE_R1 + TREE_V2 if depth == 1 and not reuses else two_step_q
  expected_q = (3 * q1 + n2 * q2) / (3 + n2)
  np.testing.assert_allclose(q, np.broadcast_to(expected_q, (batch, 3)), rtol=0, atol=1e-5)

  # Visits: 3 particles x depth each in iteration 1, then 5 and 4 x depth.
  expected_visits = (3.0 + n2) * depth
  np.testing.assert_array_equal(visits, np.broadcast_to(expected_visits, (batch, 3)))
  expected_ppa = np.stack([np.full(3, 3.0), n2])
  np.testing.assert_array_equal(np.asarray(out.search_tree.extra_data.particles_per_action),
                                np.broadcast_to(expected_ppa, (batch, 2, 3)))

  score = TREE_LOGITS0 + TREE_C * expected_q
  expected_w = np_softmax(score)
  np.testing.assert_allclose(np.asarray(out.action_weights),
                             np.broadcast_to(expected_w, (batch, 3)), rtol=0, atol=1e-5)
  survivors = order[:2]
  expected_action = survivors[np.argmax(score[survivors])]
  np.testing.assert_array_equal(np.asarray(out.action), np.full(batch, expected_action))
  np.testing.assert_allclose(np.asarray(out.search_tree.node_values[:, 0]),
                             np.full(batch, np.sum(expected_w * expected_q)), rtol=0, atol=1e-5)


def test_tsmcts_two_step_tree_mixed_layout_combines_one_step_and_deeper_iterations():
  """27 simulations, N = 9, K = 2 give `T_SH = (1, 2)`: both kinds of iteration in one search.

  Iteration 1 (one step, no inner search): `Q_1(a) = r1(a) + v2(a)` from 3
  particles each. Iteration 2 (two steps): the two best by `logits + c·Q_1`
  get 5 and 4 particles and `Q_2(a) = r1(a) + Σ_b softmax(logits2 + c·R2)·R2`.
  `Q_SH` is the particle-weighted mean of the two for the survivors, `Q_1`
  for the eliminated action; visits are `3·1 + n_2·2`.
  """
  n = 9
  recurrent_fn = two_step_model(TREE_R1, TREE_V2, TREE_LOGITS2, TREE_R2)
  search = jit_policy(smctx.tsmcts_policy, recurrent_fn, num_simulations=27, num_particles=n,
                      gumbel_scale=0.0, qtransform=linear_qtransform(TREE_C))
  batch = 2
  out = search(jax.random.PRNGKey(5), tree_root(TREE_LOGITS0, TREE_V0, batch))
  np.testing.assert_array_equal(np.asarray(out.search_tree.extra_data.depth),
                                np.broadcast_to([1, 2], (batch, 2)))
  q, visits = summary_np(out)

  q1 = TREE_R1 + TREE_V2
  q2 = TREE_R1 + np.sum(np_softmax(TREE_LOGITS2 + TREE_C * TREE_R2) * TREE_R2, -1)
  order = np.argsort(-(TREE_LOGITS0 + TREE_C * q1))
  n2 = np.zeros(3)
  n2[order[0]], n2[order[1]] = 5, 4
  expected_q = (3 * q1 + n2 * q2) / (3 + n2)
  np.testing.assert_allclose(q, np.broadcast_to(expected_q, (batch, 3)), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(visits, np.broadcast_to(3 + 2 * n2, (batch, 3)))
  score = TREE_LOGITS0 + TREE_C * expected_q
  np.testing.assert_allclose(np.asarray(out.action_weights),
                             np.broadcast_to(np_softmax(score), (batch, 3)), rtol=0, atol=1e-5)
  survivor = order[:2][np.argmax(score[order[:2]])]
  np.testing.assert_array_equal(np.asarray(out.action), np.full(batch, survivor))


@pytest.mark.parametrize("variant,value_scale", [("smctx", 0.3), ("paper", 0.1)])
def test_tsmcts_two_step_tree_default_qtransform_at_both_levels(variant, value_scale):
  """The variants' default qtransforms at the root and at s2, everything by hand.

  The paper's variant uses mctx's completed-Q transform (`value_scale` 0.1)
  everywhere, smctx's default the same transform with `value_scale` 0.3.

  `max_num_considered_actions=2`: m1 = 2 (the top-2 prior actions, gumbel 0),
  K = 1; N = 6 gives two groups of 3 particles and T_SH = 2, so inside each
  group every second action gets exactly one visit. Then
  `V(a) = Σ_b softmax(logits2 + σ2)(b)·r2(a, b)` with
  `σ2 = (50 + 1)·0.1·minmax(r2(a, ·))`, `Q_SH(a) = r1(a) + V(a)` with 6 visits
  for each candidate, and the third root action is completed by the mixed value.
  """
  recurrent_fn = two_step_model(TREE_R1, TREE_V2, TREE_LOGITS2, TREE_R2)
  search = jit_policy(smctx.tsmcts_policy, recurrent_fn, num_simulations=12, num_particles=6,
                      gumbel_scale=0.0, max_num_considered_actions=2, variant=variant)
  batch = 2
  out = search(jax.random.PRNGKey(8), tree_root(TREE_LOGITS0, TREE_V0, batch))
  q, visits = summary_np(out)
  candidates = np.argsort(-TREE_LOGITS0)[:2]
  expected_visits = np.zeros(3)
  expected_visits[candidates] = 6.0
  np.testing.assert_array_equal(visits, np.broadcast_to(expected_visits, (batch, 3)))
  decide = dict(value_scale=value_scale)
  v_s2 = np.zeros(3)
  for a in range(3):
    sigma2, _ = np_completed_by_mix_value(TREE_R2[a], np.ones(3), TREE_LOGITS2[a], TREE_V2[a],
                                          **decide)
    v_s2[a] = np.sum(np_softmax(TREE_LOGITS2[a] + sigma2) * TREE_R2[a])
  expected_q = np.where(expected_visits > 0, TREE_R1 + v_s2, 0.0)
  np.testing.assert_allclose(q, np.broadcast_to(expected_q, (batch, 3)), rtol=0, atol=1e-5)
  target_sigma, completed = np_completed_by_mix_value(expected_q, expected_visits, TREE_LOGITS0,
                                                     TREE_V0, value_scale=value_scale)
  expected_w = np_softmax(TREE_LOGITS0 + target_sigma)
  np.testing.assert_allclose(np.asarray(out.action_weights),
                             np.broadcast_to(expected_w, (batch, 3)), rtol=0, atol=1e-5)
  # The action comes from the search's own transform, the search value is the target's.
  sigma, _ = np_completed_by_mix_value(expected_q, expected_visits, TREE_LOGITS0, TREE_V0,
                                       **decide)
  expected_action = candidates[np.argmax((TREE_LOGITS0 + sigma)[candidates])]
  np.testing.assert_array_equal(np.asarray(out.action), np.full(batch, expected_action))
  expected_value = np.sum(expected_w * completed)
  np.testing.assert_allclose(np.asarray(out.search_tree.node_values[:, 0]),
                             np.full(batch, expected_value), rtol=0, atol=1e-5)


def test_smcts_two_step_tree_running_mean_deterministic():
  """SMCTS running mean on a tree whose second level has one possible action.

  Without resampling every root action keeps its particle count c(a) at each
  of the T = 3 steps, so `Q(a) = (q1 + 2·q2)/3` with `q1 = r1 + v2` (the
  bootstrapped return after step 1) and `q2 = r1 + r2(a, b*(a))` (steps 2 and
  3; the episode is over at step 3).
  """
  best_b = np.array([2, 0, 1])
  logits2 = np.full((3, 3), -1e9, F32)
  logits2[np.arange(3), best_b] = 0.0
  recurrent_fn = two_step_model(TREE_R1, TREE_V2, logits2, TREE_R2)
  search = jit_policy(smctx.smcts_policy, recurrent_fn, num_simulations=18, num_particles=6,
                      gumbel_scale=0.0, resample="never", qtransform=linear_qtransform(TREE_C))
  batch = 2
  out = search(jax.random.PRNGKey(5), tree_root(TREE_LOGITS0, TREE_V0, batch))
  q, visits = summary_np(out)
  q1 = TREE_R1 + TREE_V2
  q2 = TREE_R1 + TREE_R2[np.arange(3), best_b]
  expected_q = (q1 + 2 * q2) / 3
  np.testing.assert_allclose(q, np.broadcast_to(expected_q, (batch, 3)), rtol=0, atol=1e-5)
  ppa = np.asarray(out.search_tree.extra_data.particles_per_action)[:, 0]
  np.testing.assert_array_equal(visits, 3 * ppa)
  assert np.all(ppa >= 1)  # N = 6 >= A: every root action has a particle
  np.testing.assert_allclose(np.asarray(out.action_weights),
                             np.broadcast_to(np_softmax(TREE_LOGITS0 + TREE_C * expected_q),
                                             (batch, 3)), rtol=0, atol=1e-5)


def test_smcts_two_step_tree_weighted_second_step():
  """SMCTS's step-2 estimate is the TD-weighted (not plain) mean over second actions.

  T = 2, no resampling, td_scale="none", temperature τ: within root action a
  the step-2 weights are `exp(r2(a, b)/τ)` (the step-1 TD term is common to
  the segment), with b ~ softmax(logits2[a]). So
  `Q(a) = ((r1 + v2) + (r1 + E_π2[e^{r2/τ}·r2] / E_π2[e^{r2/τ}])) / 2`
  up to Monte Carlo error (measured <= 0.005 over 10 seeds); the unweighted
  mean would be >= 0.12 lower.
  """
  recurrent_fn = two_step_model(TREE_R1, TREE_V2, TREE_LOGITS2, TREE_R2)
  n, tau = 3000, 0.5
  search = jit_policy(smctx.smcts_policy, recurrent_fn, num_simulations=2 * n, num_particles=n,
                      gumbel_scale=0.0, resample="never", td_scale="none", temperature=tau)
  batch = 4
  out = search(jax.random.PRNGKey(6), tree_root(TREE_LOGITS0, TREE_V0, batch))
  q, _ = summary_np(out)
  pi2 = np_softmax(TREE_LOGITS2)
  tilted = pi2 * np.exp(TREE_R2 / tau)
  weighted = np.sum(tilted * TREE_R2, -1) / np.sum(tilted, -1)
  unweighted = np.sum(pi2 * TREE_R2, -1)
  expected_q = ((TREE_R1 + TREE_V2) + (TREE_R1 + weighted)) / 2
  wrong_q = ((TREE_R1 + TREE_V2) + (TREE_R1 + unweighted)) / 2
  assert np.min(np.abs(expected_q - wrong_q)) > 0.12  # the test can tell them apart
  np.testing.assert_allclose(q.mean(0), expected_q, rtol=0, atol=0.02)


# ----------------------------------------------------------------------------
# SMC's policy target converges to softmax(logits + Q/τ).
# ----------------------------------------------------------------------------

def test_smc_one_step_target_converges_to_tilted_prior():
  logits = np.array([0.5, 0.0, -0.5, 0.2, -1.0], F32)
  rewards = np.array([0.2, -0.3, 0.4, 0.0, 0.6], F32)
  next_value = np.array([0.1, 0.5, -0.2, 0.3, 0.4], F32)
  gamma, v_root, tau = 0.9, 0.25, 0.5
  num_actions = 5

  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    n = action.shape[0]
    out = mctx.RecurrentFnOutput(
        reward=jnp.asarray(rewards)[action], discount=jnp.full((n,), gamma, jnp.float32),
        prior_logits=jnp.zeros((n, num_actions), jnp.float32),
        value=jnp.asarray(next_value)[action])
    return out, embedding

  q_true = rewards + gamma * next_value
  target = np_softmax(logits + q_true / tau)
  # The tilt must matter, or convergence to the prior would pass too.
  assert 0.5 * np.abs(target - np_softmax(logits)).sum() > 0.1
  batch = 16
  root = mctx.RootFnOutput(prior_logits=jnp.broadcast_to(jnp.asarray(logits), (batch, 5)),
                           value=jnp.full((batch,), v_root, jnp.float32),
                           embedding=jnp.zeros((batch,), jnp.int32))
  tv = {}
  for n in (64, 4096):
    search = jit_policy(smctx.smc_policy, recurrent_fn, num_simulations=n, num_particles=n,
                        td_scale="none", temperature=tau)
    out = search(jax.random.PRNGKey(7), root)
    assert np.all(np.asarray(out.search_tree.extra_data.depth) == 1)
    w = np.asarray(out.action_weights, np.float64)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    tv[n] = float(np.mean(0.5 * np.abs(w - target[None]).sum(-1)))
    # SMC's per-action Q is the weighted mean return r + γ·v' (exact here).
    q, visits = summary_np(out)
    np.testing.assert_allclose(np.where(visits > 0, q, 0.0),
                               np.where(visits > 0, q_true[None], 0.0), rtol=0, atol=1e-5)
    if n == 4096:
      # Averaged over the batch the estimate is close to the target (no bias).
      np.testing.assert_allclose(w.mean(0), target, rtol=0, atol=0.008)
  # Measured over 20 seeds: TV 0.09-0.13 at N = 64 and 0.012-0.016 at
  # N = 4096 (the 1/sqrt(N) rate gives a ratio of about 8).
  assert tv[4096] < 0.025, tv
  assert tv[64] > 4.0 * tv[4096], tv


def test_smc_one_step_tree_value_visits_and_noisy_action():
  # One step deep, a final particle's return is q(a) = r(a) + γ·v'(a) exactly, so the tree's
  # root value is the weighted mean return Σ_a π(a)·q(a) and its visits count the N final
  # particles. Actions 3 and 4 have prior ≈ 0: never sampled, they keep weight 0, and the
  # action (π sampled with the reported Gumbel noise, scaled up so that it decides) must
  # avoid them.
  logits = np.array([0.3, 0.0, -0.4, -40.0, -40.0], F32)
  rewards = np.array([0.2, -0.3, 0.4, 1.0, 1.0], F32)
  next_value = np.array([0.1, 0.5, -0.2, 0.0, 0.0], F32)
  gamma, tau, batch, n = 0.9, 0.5, 8, 16

  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    m = action.shape[0]
    out = mctx.RecurrentFnOutput(
        reward=jnp.asarray(rewards)[action], discount=jnp.full((m,), gamma, jnp.float32),
        prior_logits=jnp.zeros((m, 5), jnp.float32), value=jnp.asarray(next_value)[action])
    return out, embedding

  v_root = np.linspace(-1.0, 1.0, batch).astype(F32)
  root = mctx.RootFnOutput(prior_logits=jnp.broadcast_to(jnp.asarray(logits), (batch, 5)),
                           value=jnp.asarray(v_root), embedding=jnp.zeros((batch,), jnp.int32))
  search = jit_policy(smctx.smc_policy, recurrent_fn, num_simulations=n, num_particles=n,
                      td_scale="none", temperature=tau, gumbel_scale=100.0)
  out = search(jax.random.PRNGKey(3), root)
  q_true = (rewards + gamma * next_value).astype(np.float64)
  w = np.asarray(out.action_weights, np.float64)
  assert np.all(w[:, 3:] == 0) and np.all(w.max(-1) < 0.99)  # weighted, not one action
  tree = out.search_tree
  np.testing.assert_allclose(np.asarray(tree.node_values[:, 0]), w @ q_true, rtol=0, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(tree.raw_values[:, 0]), v_root)  # the network's
  visits = np.asarray(tree.summary().visit_counts)
  np.testing.assert_array_equal(visits.sum(-1), np.full(batch, n))
  np.testing.assert_array_equal(visits > 0, w > 0)
  # action = argmax over π's support of log π + g, g the noise the search reports.
  g = np.asarray(tree.extra_data.root_gumbel, np.float64)
  expected = np.argmax(np.where(w > 0, np.log(np.maximum(w, 1e-300)) + g, -np.inf), -1)
  np.testing.assert_array_equal(np.asarray(out.action), expected)


# ----------------------------------------------------------------------------
# The tabular reference itself, against brute force.
# ----------------------------------------------------------------------------

def test_tabular_solve_matches_brute_force_over_deterministic_policies():
  """V* is the elementwise max over all A^S deterministic policies (4 states, 3 actions)."""
  import itertools
  mdp = tabular.random_mdp(11, num_states=4, num_actions=3, discount=0.8, branching=2)
  q_star, v_star = tabular.solve(mdp)
  p, r, g = mdp.transitions, mdp.rewards, mdp.discount
  best = np.full(4, -np.inf)
  for choice in itertools.product(range(3), repeat=4):
    idx = np.arange(4), np.array(choice)
    v = np.linalg.solve(np.eye(4) - g * p[idx], r[idx])  # V = r_π + γ·P_π·V
    best = np.maximum(best, v)
  np.testing.assert_allclose(v_star, best, rtol=0, atol=1e-8)
  np.testing.assert_allclose(q_star, r + g * p @ best, rtol=0, atol=1e-8)


def _hand_mdp(two_player, rewards, values=(0.0, 0.0, 0.0)):
  """States 0, 1 and terminal 2; actions 0, 1 (deterministic):
  0 -a0-> 1, 0 -a1-> 2, 1 -a0-> 0, 1 -a1-> 1 (self-loop); discount 0.5."""
  p = np.zeros((3, 2, 3))
  p[0, 0, 1] = p[0, 1, 2] = p[1, 0, 0] = p[1, 1, 1] = 1.0
  p[2, :, 2] = 1.0
  return tabular.TabularMDP(transitions=p, rewards=np.asarray(rewards, np.float64),
                            discount=0.5, terminal=np.array([False, False, True]),
                            prior_logits=np.zeros((3, 2)), values=np.asarray(values),
                            two_player=two_player)


def test_tabular_solve_two_player_negamax_and_model_by_hand():
  """Negamax by hand: V1 = max(1 − ½V0, −1 − ½V1), V0 = max(−½V1, ½) give V0 = ½, V1 = ¾."""
  mdp = _hand_mdp(True, [[0.0, 0.5], [1.0, -1.0], [0.0, 0.0]], values=[0.1, 0.2, 0.3])
  q, v = tabular.solve(mdp)
  np.testing.assert_allclose(v, [0.5, 0.75, 0.0], atol=1e-9)
  np.testing.assert_allclose(q, [[-0.375, 0.5], [0.75, -1.375], [0.0, 0.0]], atol=1e-9)
  # The model: −γ per ply; entering the terminal state ends the episode with value 0.
  _, recurrent_fn = tabular.model(mdp)
  out, nxt = recurrent_fn(None, jax.random.PRNGKey(0), jnp.array([0, 1]), jnp.array([1, 0]))
  np.testing.assert_array_equal(nxt, [0, 2])
  np.testing.assert_allclose(out.reward, [1.0, 0.5])
  np.testing.assert_allclose(out.discount, [-0.5, 0.0])
  np.testing.assert_allclose(out.value, [0.1, 0.0])


def test_tabular_solve_all_negative_rewards_by_hand():
  """Values that decrease from the initial 0 still converge: V1 = −1 + ½V1 = −2."""
  mdp = _hand_mdp(False, [[-1.0, -3.0], [-4.0, -1.0], [0.0, 0.0]])
  q, v = tabular.solve(mdp)
  # V0 = max(−1 + ½V1, −3) = −2, V1 = max(−4 + ½V0, −1 + ½V1) = −2.
  np.testing.assert_allclose(v, [-2.0, -2.0, 0.0], atol=1e-9)
  np.testing.assert_allclose(q, [[-2.0, -3.0], [-5.0, -2.0], [0.0, 0.0]], atol=1e-9)


@pytest.mark.parametrize("two_player", [False, True])
def test_tabular_evaluate_policy_against_iterated_bellman_expectation(two_player):
  """`evaluate_policy` against 2000 sweeps of V ← Σ_a π(R + sign·γ·P·(live·V)), terminal V = 0
  (the terminal row has a nonzero reward entry, which the model never pays)."""
  mdp = _hand_mdp(two_player, [[0.2, 0.7], [1.0, -0.4], [5.0, 5.0]])
  policy = np.array([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
  sign = -1.0 if two_player else 1.0
  live = np.array([1.0, 1.0, 0.0])
  v = np.zeros(3)
  for _ in range(2000):
    q_ref = mdp.rewards + sign * 0.5 * mdp.transitions @ (live * v)
    v = live * np.sum(policy * q_ref, -1)
  q_ref = (mdp.rewards + sign * 0.5 * mdp.transitions @ (live * v)) * live[:, None]
  q, v_pi = tabular.evaluate_policy(mdp, policy)
  np.testing.assert_allclose(v_pi, v, atol=1e-9)
  np.testing.assert_allclose(q, q_ref, atol=1e-9)


def _value_iteration(p, r, gamma, sweeps=2000):
  v = np.zeros(r.shape[0])
  for _ in range(sweeps):
    v = np.max(r + gamma * p @ v, -1)
  return r + gamma * p @ v, v


def test_tabular_random_mdp_network_is_as_documented():
  """values = V* + value_noise·std(V*)·ε; prior logits = prior_quality·(Q* − V*)/std(Q*)."""
  mdp = tabular.random_mdp(5, num_states=60, num_actions=4, discount=0.9, branching=2,
                           reward_scale=10.0, value_noise=1.0, prior_noise=0.0, prior_quality=2.0)
  q, v = _value_iteration(mdp.transitions, mdp.rewards, 0.9)
  np.testing.assert_allclose(mdp.prior_logits, 2.0 * (q - v[:, None]) / np.std(q), atol=1e-6)
  ratio = np.std(mdp.values - v) / np.std(v)
  assert 0.75 < ratio < 1.25, ratio


def test_tabular_grid_world_values_in_closed_form():
  """3x3 grid, food at cell 8: V*(cell) = γ^(d−1) with d its Manhattan distance to the food."""
  gamma = 0.9
  mdp = tabular.grid_world(3, discount=gamma, value_noise=0.0)
  q, v = tabular.solve(mdp)
  rows, cols = np.divmod(np.arange(9), 3)
  d = (2 - rows) + (2 - cols)
  expected = np.where(d > 0, gamma ** (d - 1.0), 0.0)
  np.testing.assert_allclose(v[:8], expected[:8], atol=1e-9)
  np.testing.assert_allclose(v[9:], 0.0)  # dead, fed
  # Cell 0: up and left leave the grid (−1); down and right step towards the food.
  np.testing.assert_allclose(q[0], [-1.0, gamma * v[3], -1.0, gamma * v[1]], atol=1e-9)
  np.testing.assert_allclose(q[5, 1], 1.0)  # down from (1, 2) reaches the food
  np.testing.assert_allclose(mdp.values, np.where(mdp.terminal, 0.0, v), atol=1e-9)
