"""Sampled-action (continuous) policies: `smctx.sampled_{tsmcts,smcts,smc}_policy`.

The main problem is a scalar linear-quadratic regulator with an analytic
answer, `x' = a·x + b·u`, reward `-(q·x² + ρ·u²)`, discount `γ`. Its optimal
value is `V*(x) = -p·x²` with `p` the fixed point of the scalar Riccati
equation (solved here by iteration, independently of the library); the
optimal action is `u*(x) = -k·x` and `Q*(x, u) = V*(x) - h·(u - u*(x))²` with
`h = ρ + γ·p·b²`. The model's value is `V*` itself (a perfect value network)
and the policy it returns at the next state is a Gaussian `(mean = gain·x,
std)` whose gain and spread come from `params`: with `gain = -k` and `std = 0`
every continuation is optimal, so every bootstrapped return of a candidate
`c` is exactly `Q*(x, c)` at any depth. With discount 0 the same model is a
one-step bandit whose `Q(c) = -(q·x² + ρ·c²)` is the reward alone.

Every expected number is computed here (NumPy, float64) from those formulas.
Visit counts and `action_weights` are read from the outputs only where a test
says so (as measurements that an identity is checked against). Few compiled
programs are shared by many tests: the model's knobs are `params` and the
problem sizes are fixed.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import smctx
from smctx._src import actions
from tests.policies import SAMPLED_POLICIES

# LQR constants and its Riccati solution.
A_DYN, B_DYN, Q_COST, R_COST, GAMMA = 1.0, 1.0, 1.0, 1.0, 0.9
# N = 8 particles, budget 48: TSMCTS runs K = 3 halving iterations of depth 2 each.
BATCH, NUM_CANDIDATES, NUM_PARTICLES, BUDGET = 32, 8, 8, 48


def riccati(a=A_DYN, b=B_DYN, q=Q_COST, r=R_COST, gamma=GAMMA, iterations=500):
  """Scalar discounted Riccati fixed point: `(p, k, h)` with `V* = -p x²`, `u* = -k x`."""
  p = 0.0
  for _ in range(iterations):
    p = q + gamma * a * a * p - (gamma * a * b * p)**2 / (r + gamma * b * b * p)
  k = gamma * a * b * p / (r + gamma * b * b * p)
  return p, k, r + gamma * b * b * p


P_STAR, K_STAR, H_STAR = riccati()


def v_star(x):
  return -P_STAR * np.asarray(x, np.float64)**2


def q_star(x, u):
  """`Q*(x, u) = -(q x² + ρ u²) + γ V*(a x + b u)`, broadcasting `x [B, 1]` over `u [B, M]`."""
  x, u = np.asarray(x, np.float64), np.asarray(u, np.float64)
  return -(Q_COST * x**2 + R_COST * u**2) + GAMMA * v_star(A_DYN * x + B_DYN * u)


def np_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  z = np.exp(x - np.max(x, axis=axis, keepdims=True))
  return z / np.sum(z, axis=axis, keepdims=True)


def np_completed_by_mix_value(q, visits, logits, raw_value, value_scale=0.1, maxvisit_init=50.0):
  """Hand-written `mctx.qtransform_completed_by_mix_value` for one node (float64)."""
  q, visits = np.asarray(q, np.float64), np.asarray(visits, np.float64)
  probs = np_softmax(logits)
  visited = visits > 0
  weighted_q = np.sum(probs[visited] * q[visited]) / np.sum(probs[visited])
  total = visits.sum()
  completed = np.where(visited, q, (raw_value + total * weighted_q) / (total + 1.0))
  rescaled = (completed - completed.min()) / max(completed.max() - completed.min(), 1e-8)
  return (maxvisit_init + visits.max()) * value_scale * rescaled


# ----------------------------------------------------------------------------
# The model and the compiled searches (one program per policy and model).
# ----------------------------------------------------------------------------

def lqr_params(gain=-K_STAR, std=0.0, discount=GAMMA, kappa=1.0):
  """Next-state policy `N(gain·x, std²)`; value network `-kappa·p·x²` (kappa = 1: exact)."""
  return {"gain": jnp.float32(gain), "std": jnp.float32(std), "discount": jnp.float32(discount),
          "kappa": jnp.float32(kappa)}


def lqr_recurrent_fn(params, rng_key, action, x):
  """`action [B', 1]`, `x [B']`; the value is `kappa·V*`, the policy a Gaussian."""
  del rng_key
  u = action[:, 0]
  reward = -(Q_COST * x**2 + R_COST * u**2)
  next_x = A_DYN * x + B_DYN * u
  policy = ((params["gain"] * next_x)[:, None],
            jnp.broadcast_to(params["std"], next_x.shape)[:, None])
  out = smctx.SampledRecurrentFnOutput(
      reward=reward, discount=jnp.full_like(x, 1.0) * params["discount"],
      value=params["kappa"] * jnp.float32(-P_STAR) * next_x**2, policy=policy)
  return out, next_x


def gaussian_sampler(rng_key, policy):
  mean, std = policy
  return mean + std * jax.random.normal(rng_key, mean.shape)


def lqr_root(x, candidates, prior_logits=None, kappa=1.0):
  """Root at states `x [B]` with candidate actions `candidates [B, M]` (stored `[B, M, 1]`)."""
  x = jnp.asarray(x, jnp.float32)
  if prior_logits is None:
    prior_logits = np.zeros(np.shape(candidates), np.float32)
  return smctx.SampledRootFnOutput(
      candidates=jnp.asarray(candidates, jnp.float32)[..., None],
      value=jnp.float32(-kappa * P_STAR) * x**2, embedding=x,
      prior_logits=jnp.asarray(prior_logits, jnp.float32))


@functools.cache
def lqr_search(name, num_simulations=BUDGET, **policy_kwargs):
  """`(params, key, root, invalid [B, M], gumbel_scale) -> SampledPolicyOutput`, jitted once."""
  def search(params, rng_key, root, invalid, gumbel_scale):
    return SAMPLED_POLICIES[name](params, rng_key, root, lqr_recurrent_fn, num_simulations,
                                  invalid, gumbel_scale=gumbel_scale,
                                  num_particles=NUM_PARTICLES, action_sampler=gaussian_sampler,
                                  **policy_kwargs)
  return jax.jit(search)


def run_lqr(name, x, candidates, *, seed=0, params=None, invalid=None, gumbel_scale=1.0,
            prior_logits=None, num_simulations=BUDGET, **policy_kwargs):
  if invalid is None:
    invalid = np.zeros(np.shape(candidates), bool)
  params = lqr_params() if params is None else params
  root = lqr_root(x, candidates, prior_logits, kappa=float(params["kappa"]))
  return lqr_search(name, num_simulations, **policy_kwargs)(params, jax.random.key(seed), root,
                                           jnp.asarray(invalid), jnp.float32(gumbel_scale))


def spread_problem(seed, batch=BATCH, num_candidates=NUM_CANDIDATES, spread=1.0):
  """Roots `x ~ U(-2, 2)` and candidates `u*(x) + 0.3 + spread·N(0, 1)` (a biased proposal)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(-2.0, 2.0, size=batch)
  candidates = -K_STAR * x[:, None] + 0.3 + spread * rng.normal(size=(batch, num_candidates))
  return x.astype(np.float32), candidates.astype(np.float32)


# ----------------------------------------------------------------------------
# The analytic answer.
# ----------------------------------------------------------------------------

def test_riccati_reference_is_a_bellman_fixed_point():
  # The test's own reference: V* satisfies V*(x) = max_u Q*(x, u) on a fine grid.
  x = np.linspace(-2.0, 2.0, 9)[:, None]
  u = np.linspace(-4.0, 4.0, 80001)[None, :]
  np.testing.assert_allclose(q_star(x, u).max(axis=1), v_star(x[:, 0]), rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(u[0, q_star(x, u).argmax(axis=1)], -K_STAR * x[:, 0], atol=2e-4)
  np.testing.assert_allclose(q_star(x, -K_STAR * x + 0.5), v_star(x) - H_STAR * 0.25, rtol=1e-9)


# ----------------------------------------------------------------------------
# One-step bandit (discount 0): Q is the reward alone.
# ----------------------------------------------------------------------------

BANDIT_X = np.array([1.0, -0.5, 0.0, 2.0], np.float32)
BANDIT_CANDIDATES = np.array([
    [-1.0, 0.6, 0.1, 2.0, -0.3, 1.5, -2.5, 0.9],
    [0.2, -0.7, 1.1, -0.05, 3.0, -1.2, 0.4, 2.2],
    [0.5, -0.5, 1.0, -1.0, 0.25, 1.75, -1.5, 0.8],
    [1.8, -1.3, 0.7, -0.9, 2.6, -0.2, 0.35, -2.1],
], np.float32)
BANDIT_LOGITS = np.array([
    [0.0] * 8,
    [0.5, -1.0, 0.0, 0.3, 2.0, -0.4, 0.0, 1.0],
    [-0.2, 0.4, 0.0, 1.0, -1.0, 0.0, 0.6, -0.3],
    [0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0],
], np.float32)


def _bandit_rows():
  """Pads the 4 hand-written rows to the shared batch size (repeating them)."""
  reps = BATCH // len(BANDIT_X)
  return (np.tile(BANDIT_X, reps), np.tile(BANDIT_CANDIDATES, (reps, 1)),
          np.tile(BANDIT_LOGITS, (reps, 1)))


@pytest.mark.parametrize("name", ["tsmcts", "smcts"])
def test_bandit_greedy_search_picks_the_best_candidate(name):
  # Uniform prior over the candidates: the greedy choice is argmax Q (with a
  # non-uniform prior it is argmax of logits + σ(Q), tested through the weights below).
  x, candidates, _ = _bandit_rows()
  out = run_lqr(name, x, candidates, params=lqr_params(discount=0.0), gumbel_scale=0.0)
  q = -(Q_COST * x[:, None]**2 + R_COST * candidates.astype(np.float64)**2)
  np.testing.assert_array_equal(np.asarray(out.action), q.argmax(axis=1))
  # The chosen candidate itself comes back too: the smallest |u| of each row.
  np.testing.assert_array_equal(np.asarray(out.chosen_action)[:, 0],
                                candidates[np.arange(BATCH), q.argmax(axis=1)])


@pytest.mark.parametrize("name", ["tsmcts", "smcts"])
def test_bandit_weights_are_the_completed_q_greedification(name):
  # action_weights = softmax(prior_logits + σ(Q)) with σ Gumbel MuZero's
  # completed-Q transform of the hand-computed Q (visit counts read from the tree);
  # TSMCTS's default is three times as sharp (value_scale 0.3, mctx's 0.1).
  value_scale = 0.3 if name == "tsmcts" else 0.1
  x, candidates, logits = _bandit_rows()
  out = run_lqr(name, x, candidates, seed=3, params=lqr_params(discount=0.0),
                prior_logits=logits)
  summary = out.search_tree.summary()
  visits = np.asarray(summary.visit_counts)
  q = -(Q_COST * x[:, None]**2 + R_COST * candidates.astype(np.float64)**2)
  assert np.all(visits > 0), "every candidate gets particles when N >= M"
  np.testing.assert_allclose(np.asarray(summary.qvalues), q, rtol=1e-5, atol=1e-5)
  expected = np.stack([
      np_softmax(logits[i] + np_completed_by_mix_value(q[i], visits[i], logits[i], v_star(x[i]),
                                                       value_scale=value_scale))
      for i in range(BATCH)])
  np.testing.assert_allclose(np.asarray(out.action_weights), expected, atol=2e-5)
  best, worst = q.argmax(axis=1), q.argmin(axis=1)
  rows = np.arange(BATCH)
  assert np.all(expected[rows, best] > expected[rows, worst])


# ----------------------------------------------------------------------------
# LQR: exact values at depth, and the action sampler is what continues the search.
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tsmcts", "smcts"])
def test_optimal_continuation_gives_exact_q_and_value(name):
  # With the optimal policy below the root and V* at the leaves, every return of
  # candidate c is Q*(x, c) whatever the depth, so the search's Q-values are Q*
  # and its value is Σ_c π_search(c)·Q*(x, c) <= V*(x).
  x, candidates = spread_problem(1)
  out = run_lqr(name, x, candidates, seed=1)
  depth = np.asarray(out.search_tree.extra_data.depth)
  assert np.all(depth >= 2), "the budget must give a search below the successor state"
  q = q_star(x[:, None], candidates)
  np.testing.assert_allclose(np.asarray(out.search_tree.summary().qvalues), q, rtol=2e-5,
                             atol=1e-4)
  weights = np.asarray(out.action_weights, np.float64)
  value = np.asarray(out.search_tree.node_values[:, 0], np.float64)
  np.testing.assert_allclose(value, np.sum(weights * q, axis=1), rtol=2e-5, atol=1e-4)
  assert np.all(value <= v_star(x) + 1e-4)


def test_the_action_sampler_drives_the_continuation():
  # Zero actions below the root are suboptimal wherever x2 != 0, so every
  # candidate's value drops below Q* by exactly the one-step loss at x2
  # (h·(0 - u*(x2))² discounted, the leaf is V* again) once the depth is >= 2.
  # The paper's variant: every iteration restarts at the root, so no particle goes
  # below x3 (smctx's default continues from x2 and adds the losses further down).
  x, candidates = spread_problem(2)
  optimal = run_lqr("tsmcts", x, candidates, seed=2)
  lazy = run_lqr("tsmcts", x, candidates, seed=2, params=lqr_params(gain=0.0), variant="paper")
  x2 = A_DYN * x[:, None] + B_DYN * candidates.astype(np.float64)
  loss = GAMMA * H_STAR * (K_STAR * x2)**2  # from taking u = 0 at x2 instead of u*(x2)
  q_lazy = np.asarray(lazy.search_tree.summary().qvalues)
  np.testing.assert_allclose(np.asarray(optimal.search_tree.summary().qvalues),
                             q_star(x[:, None], candidates), rtol=2e-5, atol=1e-4)
  np.testing.assert_allclose(q_lazy, q_star(x[:, None], candidates) - loss, rtol=2e-4, atol=2e-3)


# ----------------------------------------------------------------------------
# LQR: policy improvement, and the chosen action approaching u*(x).
# ----------------------------------------------------------------------------

def _errors(name, num_valid, seeds, **kwargs):
  """Mean |chosen - u*(x)| over roots and seeds when only `num_valid` candidates are valid."""
  errors, oracle = [], []
  for seed in seeds:
    x, candidates = spread_problem(100 + seed)
    invalid = np.arange(NUM_CANDIDATES)[None, :] >= num_valid
    invalid = np.broadcast_to(invalid, candidates.shape)
    out = run_lqr(name, x, candidates, seed=seed, invalid=invalid, **kwargs)
    errors.append(np.abs(np.asarray(out.chosen_action)[:, 0] + K_STAR * x))
    q = np.where(invalid, -np.inf, q_star(x[:, None], candidates))
    oracle.append(np.abs(candidates[np.arange(BATCH), q.argmax(1)] + K_STAR * x))
  return float(np.mean(errors)), float(np.mean(oracle))


def test_chosen_action_approaches_the_optimum_as_candidates_grow():
  # Noisy continuation (std 0.3 around u*), greedy choice: the error of the
  # chosen action falls as more candidates are offered (invalid ones are
  # padding), and it stays near the best offered candidate's error.
  noisy = lqr_params(std=0.3)
  seeds = range(4)
  err = {m: _errors("tsmcts", m, seeds, params=noisy, gumbel_scale=0.0) for m in (1, 2, 4, 8)}
  print({m: round(e[0], 4) for m, e in err.items()}, "oracle:",
        {m: round(e[1], 4) for m, e in err.items()})
  assert err[2][0] < 0.9 * err[1][0]
  assert err[4][0] < 0.9 * err[2][0]
  assert err[8][0] < 0.9 * err[4][0]
  assert err[8][0] < err[8][1] + 0.05  # measured gap 0.011-0.015 over four seed sets


def test_chosen_action_approaches_the_optimum_as_the_budget_grows():
  # A deliberately poor value network (0.3·V*): one-step lookahead (budget 24 =
  # 8 particles x 3 halving iterations x depth 1) prefers a too-small action,
  # -0.3·x instead of -0.59·x. Budget 48 gives depth 2 in every iteration, and
  # the real rewards of the extra step pull the choice towards u*(x).
  poor = lqr_params(std=0.3, kappa=0.3)
  seeds = range(4)
  # The paper's variant: every iteration restarts at the root (smctx's default reuses the
  # successors, so budget 24 already looks two steps deep after the first iteration).
  shallow, oracle = _errors("tsmcts", NUM_CANDIDATES, seeds, params=poor, gumbel_scale=0.0,
                            variant="paper",
                            num_simulations=24)
  deep, _ = _errors("tsmcts", NUM_CANDIDATES, seeds, params=poor, gumbel_scale=0.0,
                    variant="paper")
  print(f"mean |u - u*|: budget 24 {shallow:.4f}, budget 48 {deep:.4f}, "
        f"best candidate {oracle:.4f}")
  assert deep < 0.75 * shallow  # measured ratio 0.44-0.52 over four seed sets
  assert deep < oracle + 0.05  # measured gap 0.013-0.019


def test_weights_favour_better_candidates():
  x, candidates = spread_problem(7)
  out = run_lqr("tsmcts", x, candidates, seed=7, params=lqr_params(std=0.3))
  weights = np.asarray(out.action_weights)
  q = q_star(x[:, None], candidates)
  rows = np.arange(BATCH)
  assert np.mean(weights[rows, q.argmax(1)] > weights[rows, q.argmin(1)]) >= 0.95

  def ranks(v):
    return np.argsort(np.argsort(v, axis=1), axis=1)

  rank_corr = [np.corrcoef(ranks(weights)[i], ranks(q)[i])[0, 1] for i in rows]
  assert np.mean(rank_corr) > 0.8, np.mean(rank_corr)


def test_search_value_is_near_the_true_value():
  x, candidates = spread_problem(8)
  out = run_lqr("tsmcts", x, candidates, seed=8, params=lqr_params(std=0.3))
  value = np.asarray(out.search_tree.node_values[:, 0], np.float64)
  error = np.abs(value - v_star(x))
  prior_error = np.abs(np.mean(q_star(x[:, None], candidates), axis=1) - v_star(x))
  print("search value error", error.mean(), "prior (uniform candidates) error", prior_error.mean())
  assert error.mean() < 0.4 * prior_error.mean()  # measured ratio 0.26-0.28 over 9 seeds
  assert np.all(value <= v_star(x) + 1e-3)  # an average of achievable returns under V*


def test_smc_baseline_improves_on_the_candidates():
  # Recorded, not asserted: how SMC compares with TSMCTS at the same budget.
  noisy = lqr_params(std=0.3)
  seeds = range(4)
  smc_error, oracle = _errors("smc", NUM_CANDIDATES, seeds, params=noisy)
  tsmcts_error, _ = _errors("tsmcts", NUM_CANDIDATES, seeds, params=noisy)
  prior_error = np.mean([np.abs(spread_problem(100 + s)[1] + K_STAR * spread_problem(100 + s)[0][
      :, None]).mean() for s in seeds])
  print(f"mean |u - u*|: smc {smc_error:.4f}, tsmcts {tsmcts_error:.4f}, "
        f"best candidate {oracle:.4f}, random candidate {prior_error:.4f}")
  assert smc_error < 0.7 * prior_error  # measured ratio 0.41-0.55 over four seed sets
  x, candidates = spread_problem(9)
  out = run_lqr("smc", x, candidates, seed=9, params=noisy)
  weights = np.asarray(out.action_weights)
  assert np.all(weights >= 0)
  np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
  assert np.all(np.asarray(out.search_tree.node_values[:, 0]) <= v_star(x) + 1e-3)


# ----------------------------------------------------------------------------
# Pytree candidates, model-sampled actions, invalid candidates.
# ----------------------------------------------------------------------------

# A 2-D LQR with dict actions {"u": [.., 2], "flag": [..]}: a raised flag costs
# FLAG_COST. The model returns the next action itself (action_sampler=None),
# the optimal one: u = -k·x2, flag down. Q*(x, c) = -(|x|² + |u|² + cost·flag)
# + γ V*(x + u) with V* = -p|x|² (the 2-D problem is two copies of the scalar one).
FLAG_COST = 0.7
DICT_BATCH, DICT_CANDIDATES = 6, 5


def dict_recurrent_fn(params, rng_key, action, x):
  del params, rng_key
  u, flag = action["u"], action["flag"]
  reward = -(jnp.sum(x**2, -1) + jnp.sum(u**2, -1) + FLAG_COST * flag.astype(jnp.float32))
  next_x = x + u
  next_action = {"u": jnp.float32(-K_STAR) * next_x, "flag": jnp.zeros_like(flag)}
  out = smctx.SampledRecurrentFnOutput(
      reward=reward, discount=jnp.full(reward.shape, GAMMA),
      value=jnp.float32(-P_STAR) * jnp.sum(next_x**2, -1), policy=next_action)
  return out, next_x


def dict_q_star(x, u, flag):
  x, u = np.asarray(x, np.float64)[:, None], np.asarray(u, np.float64)
  return (-(np.sum(x**2, -1) + np.sum(u**2, -1) + FLAG_COST * flag)
          + GAMMA * -P_STAR * np.sum((x + u)**2, -1))


@functools.cache
def dict_search():
  def search(rng_key, root, invalid):
    return smctx.sampled_tsmcts_policy(None, rng_key, root, dict_recurrent_fn, 48, invalid,
                                       gumbel_scale=0.0, num_particles=8)
  return jax.jit(search)


def _dict_problem():
  rng = np.random.default_rng(11)
  x = rng.uniform(-1.5, 1.5, size=(DICT_BATCH, 2)).astype(np.float32)
  u = (-K_STAR * x[:, None] + 0.8 * rng.normal(size=(DICT_BATCH, DICT_CANDIDATES, 2)))
  flag = rng.integers(0, 2, size=(DICT_BATCH, DICT_CANDIDATES)).astype(np.int32)
  q = dict_q_star(x, u, flag)
  # Invalid: each row's best candidate (so a search ignoring the mask shows), and
  # in the last row all candidates but one (padding).
  invalid = np.zeros((DICT_BATCH, DICT_CANDIDATES), bool)
  invalid[np.arange(DICT_BATCH), q.argmax(1)] = True
  invalid[-1] = True
  invalid[-1, 2] = False
  root = smctx.SampledRootFnOutput(
      candidates={"u": jnp.asarray(u, jnp.float32), "flag": jnp.asarray(flag)},
      value=jnp.float32(-P_STAR) * jnp.sum(jnp.asarray(x)**2, -1), embedding=jnp.asarray(x))
  return root, q, invalid


def test_pytree_candidates_with_model_sampled_actions_and_invalid_mask():
  root, q, invalid = _dict_problem()
  out = dict_search()(jax.random.key(0), root, jnp.asarray(invalid))
  action = np.asarray(out.action)
  assert out.action.shape == (DICT_BATCH,) and out.action.dtype == jnp.int32
  assert out.action_weights.shape == (DICT_BATCH, DICT_CANDIDATES)
  assert jax.tree.structure(out.chosen_action) == jax.tree.structure(root.candidates)
  assert out.chosen_action["u"].shape == (DICT_BATCH, 2)
  assert out.chosen_action["flag"].shape == (DICT_BATCH,)
  assert out.chosen_action["flag"].dtype == root.candidates["flag"].dtype
  rows = np.arange(DICT_BATCH)
  for leaf, chosen in zip(jax.tree.leaves(root.candidates), jax.tree.leaves(out.chosen_action),
                          strict=True):
    np.testing.assert_array_equal(np.asarray(chosen), np.asarray(leaf)[rows, action])
  # Invalid candidates: never chosen, zero weight; greedy picks the best valid one.
  weights = np.asarray(out.action_weights)
  assert not np.any(invalid[rows, action])
  assert np.all(weights[invalid] == 0.0)
  np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(action, np.where(invalid, -np.inf, q).argmax(1))
  assert action[-1] == 2 and weights[-1, 2] == pytest.approx(1.0)
  # The model's own next actions (optimal) continue the search: Q is Q* exactly.
  summary = out.search_tree.summary()
  visited = np.asarray(summary.visit_counts) > 0
  assert np.all(np.asarray(out.search_tree.extra_data.depth) >= 2)
  np.testing.assert_allclose(np.asarray(summary.qvalues)[visited], q[visited], rtol=2e-5,
                             atol=1e-4)


# ----------------------------------------------------------------------------
# jit, vmap, determinism.
# ----------------------------------------------------------------------------

def test_same_key_is_bit_identical_and_different_keys_differ():
  x, candidates = spread_problem(5)
  noisy = lqr_params(std=0.5)
  first = run_lqr("tsmcts", x, candidates, seed=4, params=noisy)
  again = run_lqr("tsmcts", x, candidates, seed=4, params=noisy)
  other = run_lqr("tsmcts", x, candidates, seed=5, params=noisy)
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(first.action_weights), np.asarray(other.action_weights))
  assert not np.array_equal(np.asarray(first.action), np.asarray(other.action))


def test_vmap_over_problems_matches_separate_calls():
  noisy = lqr_params(std=0.5)
  problems = [spread_problem(20 + i) for i in range(2)]
  roots = jax.tree.map(lambda *r: jnp.stack(r), *[lqr_root(x, c) for x, c in problems])
  keys = jax.random.split(jax.random.key(6), 2)
  invalid = jnp.zeros((2, BATCH, NUM_CANDIDATES), bool)
  search = lqr_search("smc")
  batched = jax.jit(jax.vmap(search, in_axes=(None, 0, 0, 0, None)))(
      noisy, keys, roots, invalid, jnp.float32(1.0))
  for i in range(2):
    single = search(noisy, keys[i], jax.tree.map(lambda r, i=i: r[i], roots), invalid[i],
                    jnp.float32(1.0))
    np.testing.assert_array_equal(np.asarray(batched.action[i]), np.asarray(single.action))
    np.testing.assert_allclose(np.asarray(batched.action_weights[i]),
                               np.asarray(single.action_weights), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(batched.chosen_action[i]),
                               np.asarray(single.chosen_action), rtol=1e-6)


# ----------------------------------------------------------------------------
# Validation of static arguments.
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SAMPLED_POLICIES))
@pytest.mark.parametrize("kwargs, argument", [
    ({"num_simulations": 0}, "num_simulations"),
    ({"num_particles": 0}, "num_particles"),
    ({"max_num_considered_actions": 0}, "max_num_considered_actions"),
    ({"resample": "sometimes"}, "resample"),
    ({"action_sampler": "gaussian"}, "action_sampler"),
])
def test_bad_static_arguments_raise_value_error_naming_them(name, kwargs, argument):
  x, candidates = spread_problem(0, batch=2, num_candidates=3)
  call = {"num_simulations": 16, "action_sampler": gaussian_sampler, **kwargs}
  with pytest.raises(ValueError, match=argument):
    SAMPLED_POLICIES[name](lqr_params(), jax.random.key(0), lqr_root(x, candidates),
                           lqr_recurrent_fn, **call)


def test_recurrent_fn_not_callable_is_refused_naming_it():
  x, candidates = spread_problem(0, batch=2, num_candidates=3)
  with pytest.raises(ValueError, match="recurrent_fn must be callable; got str"):
    smctx.sampled_smc_policy(lqr_params(), jax.random.key(0), lqr_root(x, candidates),
                             "lqr", 16, action_sampler=gaussian_sampler)


def test_max_depth_reaches_the_sampled_search():
  # 16 simulations over 2 particles would take 8 steps; max_depth=3 caps them at 3.
  x, candidates = spread_problem(0, batch=2, num_candidates=3)
  out = jax.jit(lambda key: smctx.sampled_smc_policy(
      lqr_params(), key, lqr_root(x, candidates), lqr_recurrent_fn, 16, max_depth=3,
      num_particles=2, action_sampler=gaussian_sampler))(jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(out.search_tree.extra_data.depth), 3)


def test_invalid_mask_of_the_wrong_shape_is_refused():
  x, candidates = spread_problem(0, batch=2, num_candidates=3)
  with pytest.raises(ValueError, match="invalid_actions"):
    smctx.sampled_tsmcts_policy(lqr_params(), jax.random.key(0), lqr_root(x, candidates),
                                lqr_recurrent_fn, 16, jnp.zeros((2, 4), bool),
                                action_sampler=gaussian_sampler)


def _wrong_sampler(rng_key, policy):
  del rng_key
  return jnp.zeros((policy[0].shape[0], 2))  # two numbers per action; candidates have one


@pytest.mark.parametrize("change, message", [
    ({"action_sampler": _wrong_sampler}, "action_sampler"),
    ({"action_sampler": None}, "structure"),  # the model's policy (mean, std) is no action
    ({"prior_logits": jnp.zeros((2, 4))}, "prior_logits"),
    ({"candidates": jnp.zeros((3, 3, 1))}, "candidates"),
])
def test_malformed_model_or_root_is_refused_at_trace_time(change, message):
  x, candidates = spread_problem(0, batch=2, num_candidates=3)
  root = lqr_root(x, candidates)
  change = dict(change)
  sampler = change.pop("action_sampler", gaussian_sampler)
  root = root.replace(**change)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda key: smctx.sampled_tsmcts_policy(
        lqr_params(), key, root, lqr_recurrent_fn, 16, action_sampler=sampler),
        jax.random.key(0))


@pytest.mark.parametrize("name", ["smc", "smcts", "tsmcts"])
def test_sampled_policy_signature_lists_the_discrete_policys_keywords(name):
  sampled = inspect.signature(getattr(smctx, f"sampled_{name}_policy")).parameters
  discrete = inspect.signature(getattr(smctx, f"{name}_policy")).parameters
  assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sampled.values())
  keywords = [k for k, p in discrete.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
  assert keywords and all(sampled[k].default == discrete[k].default for k in keywords)
  assert sampled["action_sampler"].default is None


def test_models_and_tabular_are_reachable_from_the_package():
  assert smctx.models.pgx_model is not None and smctx.tabular is not None


# ----------------------------------------------------------------------------
# The sampled action model on its own (`_src/actions.py`), on small hand-made slices.
# ----------------------------------------------------------------------------

def test_sampled_model_zeroes_nonfinite_policy_entries_and_reports_their_rows():
  # Rows 0 and 2 have one non-finite entry among finite ones: each is reported, and only
  # that entry is zeroed; the integer leaf passes untouched.
  mean = jnp.asarray([[0.5, jnp.nan], [1.0, 2.0], [jnp.inf, 3.0]], jnp.float32)
  steps = jnp.asarray([1, 2, 3], jnp.int32)

  def recurrent_fn(params, rng_key, action, x):
    del params, rng_key, action
    return smctx.SampledRecurrentFnOutput(reward=x, discount=x, value=x,
                                          policy=(mean, steps)), x

  model = actions.SampledActions(recurrent_fn=recurrent_fn, candidates=jnp.zeros((3, 2, 1)),
                                 action_sampler=None)
  out = model.call(None, jax.random.key(0), jnp.zeros((3, 1)), jnp.zeros(3))
  np.testing.assert_array_equal(np.asarray(out.bad_policy), [True, False, True])
  np.testing.assert_array_equal(np.asarray(out.policy[0]), [[0.5, 0.0], [1.0, 2.0], [0.0, 3.0]])
  np.testing.assert_array_equal(np.asarray(out.policy[1]), [1, 2, 3])


def test_sampled_next_actions_take_the_candidates_dtypes():
  # The sampler answers in float32; the particles' actions keep the candidates' bfloat16 and
  # int32 (a search loop's carry cannot change type). 1.5·p is exact in bfloat16 here.
  candidates = {"u": jnp.zeros((2, 4, 1), jnp.bfloat16), "k": jnp.zeros((2, 4), jnp.int32)}

  def sampler(rng_key, policy):  # policy [B] (one particle slice) -> actions [B, 1] and [B]
    del rng_key
    return {"u": 1.5 * policy[:, None], "k": policy + 0.0}

  model = actions.SampledActions(recurrent_fn=None, candidates=candidates,
                                 action_sampler=sampler)
  policy = jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], jnp.float32)  # [B, N]
  action = model.sample(jax.random.split(jax.random.key(0), 3), policy)
  assert action["u"].dtype == jnp.bfloat16 and action["k"].dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(action["u"], np.float32)[..., 0],
                                [[1.5, 3.0, 4.5], [6.0, 7.5, 9.0]])
  np.testing.assert_array_equal(np.asarray(action["k"]), [[1, 2, 3], [4, 5, 6]])
