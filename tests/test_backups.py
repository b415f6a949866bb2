"""What the root's value means take in: TD(λ) returns and variance-aware iteration weights.

The paper's open questions 1 (TD-λ in the back-propagation) and 2 (per-particle variances
instead of `Var ∝ 1/N`); `docs/algorithms.md` measures both. Expected values are computed
here from the textbook definitions, not from the library's forward sums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx
from smctx._src import sequential_halving

GAMMA = 0.9
ROOT_VALUE = 0.4


def lines_model(rewards, values):
  """Root action `a` starts line `a`; below the root every action walks on along it.

  Step `t` (1-based) of line `a` pays `rewards[a, t-1]` and reaches a state whose network
  value is `values[a, t-1]`; discount `GAMMA`. A particle's path depends only on its root
  action, so its returns are known in closed form.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  values = jnp.asarray(values, jnp.float32)
  num_actions, depth = rewards.shape
  root_state = num_actions * depth

  def recurrent_fn(params, rng_key, action, state):
    del params, rng_key
    at_root = state == root_state
    line = jnp.where(at_root, action, state // depth)
    t = jnp.where(at_root, 0, state % depth + 1)  # 0-based index of this step
    t = jnp.minimum(t, depth - 1)
    out = mctx.RecurrentFnOutput(
        reward=rewards[line, t], discount=jnp.full(action.shape, GAMMA, jnp.float32),
        prior_logits=jnp.zeros(action.shape + (num_actions,), jnp.float32),
        value=values[line, t])
    return out, line * depth + t

  root = mctx.RootFnOutput(prior_logits=jnp.zeros((1, num_actions), jnp.float32),
                           value=jnp.full((1,), ROOT_VALUE, jnp.float32),
                           embedding=jnp.full((1,), root_state, jnp.int32))
  return root, recurrent_fn


def truncated_lambda_return(rewards, values, t, lam):
  """`Σ_{n<t} (1−λ)·λ^(n−1)·G^(n) + λ^(t−1)·G^(t)`, `G^(n)` the n-step return (float64)."""
  def n_step(n):
    return sum(GAMMA**j * rewards[j] for j in range(n)) + GAMMA**n * values[n - 1]
  return (sum((1 - lam) * lam ** (n - 1) * n_step(n) for n in range(1, t))
          + lam ** (t - 1) * n_step(t))


@pytest.mark.parametrize("td_lambda", [1.0, 0.7, 0.3])
def test_smcts_q_is_the_running_mean_of_lambda_returns(td_lambda):
  rng = np.random.default_rng(0)
  num_actions, depth = 3, 5
  rewards = rng.normal(size=(num_actions, depth))
  values = rng.normal(size=(num_actions, depth))
  root, recurrent_fn = lines_model(rewards, values)
  # One particle per root action (Gumbel-top-3 of 3 actions), never resampled: each
  # action's estimate is its one path's return, averaged over the depths.
  out = jax.jit(lambda key: smctx.smcts_policy(
      None, key, root, recurrent_fn, num_simulations=num_actions * depth,
      num_particles=num_actions, resample="never", td_lambda=td_lambda))(jax.random.key(0))
  want = [np.mean([truncated_lambda_return(rewards[a], values[a], t, td_lambda)
                   for t in range(1, depth + 1)]) for a in range(num_actions)]
  got = np.asarray(out.search_tree.summary().qvalues)[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_td_lambda_one_is_the_default_search_bit_for_bit():
  root, recurrent_fn = lines_model(np.ones((4, 6)), np.linspace(0, 1, 24).reshape(4, 6))
  run = lambda **kw: jax.jit(lambda key: smctx.tsmcts_policy(
      None, key, root, recurrent_fn, num_simulations=96, num_steps=12, **kw))(jax.random.key(1))
  default, one, lam = run(), run(td_lambda=1.0), run(td_lambda=0.5)
  np.testing.assert_array_equal(default.action_weights, one.action_weights)
  np.testing.assert_array_equal(default.search_tree.node_values, one.search_tree.node_values)
  # ... and a λ below 1 reaches the tree's values (the rewards make every depth count).
  assert not np.allclose(default.search_tree.node_values, lam.search_tree.node_values)


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2, True, "0.5"])
def test_td_lambda_outside_0_1_is_refused(bad):
  root, recurrent_fn = lines_model(np.ones((2, 2)), np.ones((2, 2)))
  with pytest.raises(ValueError, match="td_lambda"):
    smctx.tsmcts_policy(None, jax.random.key(0), root, recurrent_fn, 8, td_lambda=bad)


@pytest.mark.parametrize("bad", [0.0, 1.5])
def test_smcts_td_lambda_outside_0_1_is_refused(bad):
  # SMCTS checks td_lambda itself (it does not go through TSMCTS's checks).
  root, recurrent_fn = lines_model(np.ones((2, 2)), np.ones((2, 2)))
  with pytest.raises(ValueError, match="td_lambda"):
    smctx.smcts_policy(None, jax.random.key(0), root, recurrent_fn, 8, td_lambda=bad)


def test_iteration_weights_unknown_is_refused():
  root, recurrent_fn = lines_model(np.ones((2, 2)), np.ones((2, 2)))
  with pytest.raises(ValueError, match="iteration_weights"):
    smctx.tsmcts_policy(None, jax.random.key(0), root, recurrent_fn, 8,
                        iteration_weights="inverse")


def test_inverse_variance_counts_against_numpy():
  rng = np.random.default_rng(3)
  batch, particles, actions = 2, 7, 4
  root_action = np.sort(rng.integers(0, actions, size=(batch, particles)), axis=-1)
  returns = rng.normal(size=(batch, particles))
  weight = rng.uniform(0.1, 2.0, size=(batch, particles))
  count = np.stack([np.bincount(r, minlength=actions) for r in root_action]).astype(float)
  td_variance = np.array([0.5, 2.0])
  got = sequential_halving.inverse_variance_counts(
      jnp.asarray(count, jnp.float32), jnp.asarray(returns, jnp.float32),
      jnp.asarray(weight, jnp.float32), jnp.asarray(root_action, jnp.int32),
      jnp.asarray(td_variance, jnp.float32))
  want = np.zeros((batch, actions))
  for b in range(batch):
    for a in range(actions):
      mine = root_action[b] == a
      if not mine.any():
        continue
      w, r = weight[b, mine], returns[b, mine]
      mean = np.sum(w * r) / np.sum(w)
      spread = np.sum(w * (r - mean) ** 2) / np.sum(w)
      want[b, a] = count[b, a] * td_variance[b] / (spread + td_variance[b])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
