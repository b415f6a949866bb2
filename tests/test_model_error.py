"""Corrupted tabular models (`smctx.model_error`) and the model-error study.

Every rate is measured against an independent count: the true successor, reward,
value and prior logits are read from the problem's own NumPy tables, the scales
are recomputed here from the problem's rewards and `V*`, and the measured
fractions, means and standard deviations are compared with the requested levels
within binomial or normal margins of 4-5 standard errors (fixed seeds). The
study's tiny mode runs end to end under `-m slow`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smctx import model_error
from smctx import problems

N = 60_000  # draws per measured rate


def _scales(p):
  """Reward and value scales, computed here from the problem's definition."""
  live = ~p.terminal
  return float(np.std(p.rewards[live][p.legal[live]])), float(np.std(p.v_star[live]))


@pytest.fixture(scope="module")
def setup():
  """A deterministic random MDP (100 states), the chain (22 states, 2 terminal) and a
  stochastic random MDP merged; one compiled `recurrent_fn` for batches of `N`."""
  probs = [problems.random_problem(0, "good", 4, branching=1), problems.chain_problem(0, "good", 4),
           problems.random_problem(1, "poor", 4, branching=3)]
  params, _, offsets = model_error.merge(probs)
  _, recurrent_fn = model_error.model()
  return probs, params, offsets, jax.jit(recurrent_fn)


def _draws(probs, offsets, seed, which_problems=(0, 1)):
  """`N` random (global state, action) pairs of live states of the deterministic problems."""
  rng = np.random.default_rng(seed)
  which = rng.choice(which_problems, N)
  states = np.empty(N, np.int64)
  for k in which_problems:
    mask = which == k
    states[mask] = offsets[k] + rng.choice(np.flatnonzero(~probs[k].terminal), mask.sum())
  return which, states, rng.integers(0, problems.NUM_ACTIONS, N)


def _true(probs, offsets, which, states, actions):
  """True successor (global), reward, value of the successor and its prior logits, read from
  each deterministic problem's own tables."""
  n = len(states)
  nxt, reward, value, logits = (np.empty(n, np.int64), np.empty(n), np.empty(n),
                                np.empty((n, problems.NUM_ACTIONS)))
  for k in np.unique(which):
    m, p = which == k, probs[k]
    local, a = states[m] - offsets[k], actions[m]
    t = p.next_states[local, a, 0]
    nxt[m] = offsets[k] + t
    reward[m] = p.rewards[local, a]
    value[m] = np.where(p.terminal[t], 0.0, p.values[t])
    logits[m] = p.prior_logits[t]
  return nxt, reward, value, logits


def _call(step, params, corruption, states, actions, depth=0, seed=0):
  emb = model_error.Embedding(jnp.asarray(states, jnp.int32),
                              jnp.full(len(states), depth, jnp.int32))
  out, nxt = step(model_error.with_corruption(params, corruption), jax.random.PRNGKey(seed),
                  jnp.asarray(actions, jnp.int32), emb)
  return jax.tree.map(np.asarray, out), jax.tree.map(np.asarray, nxt)


def test_zero_corruption_is_the_true_model_exactly(setup):
  probs, params, offsets, step = setup
  base_root, base_rec = problems.model()
  root_fn, _ = model_error.model()
  clean = model_error.with_corruption(params, model_error.Corruption())
  roots = np.arange(30)
  root = root_fn(clean, roots)
  np.testing.assert_array_equal(root.prior_logits, base_root(params, roots).prior_logits)
  np.testing.assert_array_equal(root.value, base_root(params, roots).value)
  np.testing.assert_array_equal(root.embedding.state, roots)
  np.testing.assert_array_equal(root.embedding.depth, 0)
  # All three problems, the stochastic one included: the same sampled successors.
  _, states, actions = _draws(probs, offsets, seed=0, which_problems=(0, 1, 2))
  key = jax.random.PRNGKey(7)
  want, want_next = jax.jit(base_rec)(params, key, jnp.asarray(actions, jnp.int32),
                                      jnp.asarray(states, jnp.int32))
  got, emb = _call(step, params, model_error.Corruption(), states, actions, seed=7)
  np.testing.assert_array_equal(emb.state, want_next)
  np.testing.assert_array_equal(emb.depth, 1)
  for field in ("reward", "discount", "value", "prior_logits"):
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


@pytest.mark.parametrize("p", [0.1, 0.35])
def test_transition_error_rate_and_uniform_other_states(setup, p):
  probs, params, offsets, step = setup
  which, states, actions = _draws(probs, offsets, seed=1)
  true_next, _, _, _ = _true(probs, offsets, which, states, actions)
  _, nxt = _call(step, params, model_error.Corruption(transition=p), states, actions)
  wrong = nxt.state != true_next
  # Binomial: the fraction of successors that differ from the true one is p (not p·(1 − 1/S),
  # which uniform draws over all states, the true one included, would give).
  assert abs(wrong.mean() - p) < 4.5 * np.sqrt(p * (1 - p) / N), wrong.mean()
  for k in (0, 1):  # per problem too (the chain has only 22 states)
    m = which == k
    assert abs(wrong[m].mean() - p) < 4.5 * np.sqrt(p * (1 - p) / m.sum())
  # Wrong successors stay inside their own problem's states.
  lo, hi = offsets[which], offsets[which] + np.array([q.num_states for q in probs])[which]
  assert np.all((nxt.state >= lo) & (nxt.state < hi))


@pytest.mark.parametrize("p", [1.0, 0.3])
def test_wrong_successors_are_uniform_over_the_other_states(setup, p):
  """At p < 1 too: whether a successor is wrong and which wrong one it is are independent."""
  probs, params, offsets, step = setup
  chain = probs[1]
  local, action = 5, 0
  true = offsets[1] + chain.next_states[local, action, 0]
  states = np.full(N, offsets[1] + local)
  _, nxt = _call(step, params, model_error.Corruption(transition=p), states,
                 np.full(N, action))
  wrong = nxt.state[nxt.state != true]
  if p == 1.0:
    assert len(wrong) == N
  counts = np.bincount(wrong - offsets[1], minlength=chain.num_states)
  assert counts[true - offsets[1]] == 0
  others = np.delete(counts, true - offsets[1])
  expected = len(wrong) / (chain.num_states - 1)
  chi2 = np.sum((others - expected) ** 2 / expected)
  assert chi2 < 45.3, chi2  # chi-square with 20 degrees of freedom: 0.999 quantile 45.3


def test_transition_error_recomputes_the_successors_outputs(setup):
  probs, params, offsets, step = setup
  which, states, actions = _draws(probs, offsets, seed=2)
  out, nxt = _call(step, params, model_error.Corruption(transition=1.0), states, actions)
  terminal = np.concatenate([q.terminal for q in probs])
  values = np.concatenate([q.values for q in probs])
  discount = np.array([q.discount for q in probs])[which]
  np.testing.assert_allclose(out.value, np.where(terminal[nxt.state], 0.0, values[nxt.state]),
                             rtol=1e-6)
  np.testing.assert_allclose(out.discount, np.where(terminal[nxt.state], 0.0, discount),
                             rtol=1e-6)


def test_terminal_states_stay_absorbing_and_exact(setup):
  probs, params, offsets, step = setup
  chain = probs[1]
  terminal = offsets[1] + np.flatnonzero(chain.terminal)
  states = np.resize(terminal, N)
  out, nxt = _call(step, params, model_error.Corruption(transition=0.9, reward_bias=1.0,
                                                        reward_noise=1.0), states,
                   np.arange(N) % 9)
  np.testing.assert_array_equal(nxt.state, states)
  np.testing.assert_array_equal(out.reward, 0.0)
  np.testing.assert_array_equal(out.discount, 0.0)


@pytest.mark.parametrize("bias,noise", [(0.5, 0.8), (-0.3, 0.0)])
def test_reward_bias_and_noise(setup, bias, noise):
  probs, params, offsets, step = setup
  which, states, actions = _draws(probs, offsets, seed=3)
  _, true_reward, _, _ = _true(probs, offsets, which, states, actions)
  out, _ = _call(step, params, model_error.Corruption(reward_bias=bias, reward_noise=noise),
                 states, actions)
  for k in (0, 1):  # in units of each problem's own reward scale
    m = which == k
    scale, _ = _scales(probs[k])
    err = (out.reward[m] - true_reward[m]) / scale
    assert abs(err.mean() - bias) < 4.5 * max(noise, 1e-3) / np.sqrt(m.sum()), err.mean()
    assert abs(err.std() - noise) < 4.5 * max(noise, 1e-3) / np.sqrt(2 * m.sum()), err.std()


def test_reward_kind_sets_bias_and_noise_to_the_level(setup):
  probs, params, offsets, step = setup
  which, states, actions = _draws(probs, offsets, seed=4)
  _, true_reward, _, _ = _true(probs, offsets, which, states, actions)
  out, _ = _call(step, params, model_error.corruption("reward", 0.6), states, actions)
  scale = np.array([_scales(q)[0] for q in probs])[which]
  err = (out.reward - true_reward) / scale
  assert abs(err.mean() - 0.6) < 4.5 * 0.6 / np.sqrt(N)
  assert abs(err.std() - 0.6) < 4.5 * 0.6 / np.sqrt(2 * N)


@pytest.mark.parametrize("depth", [0, 1, 3, 7])
def test_compounding_noise_grows_with_depth(setup, depth):
  """A child at depth d = parent depth + 1 gets value noise level·d·value_scale and prior
  noise level·d; illegal logits are untouched, terminal values stay 0."""
  probs, params, offsets, step = setup
  level_v, level_p = 0.2, 0.3
  which, states, actions = _draws(probs, offsets, seed=10 + depth)
  params = dict(params)
  illegal = np.zeros(params["prior_logits"].shape, bool)
  illegal[:, 4] = True  # one illegal action everywhere, to see that it stays illegal
  params["prior_logits"] = jnp.where(illegal, problems.ILLEGAL_LOGIT, params["prior_logits"])
  true_next, _, true_value, true_logits = _true(probs, offsets, which, states, actions)
  out, nxt = _call(step, params, model_error.Corruption(value_noise=level_v,
                                                        prior_noise=level_p),
                   states, actions, depth=depth)
  d = depth + 1
  np.testing.assert_array_equal(nxt.depth, d)
  np.testing.assert_array_equal(nxt.state, true_next)
  terminal = np.concatenate([q.terminal for q in probs])[true_next]
  np.testing.assert_array_equal(out.value[terminal], 0.0)
  value_scale = np.array([_scales(q)[1] for q in probs])[which]
  err = ((out.value - true_value) / value_scale)[~terminal]
  n = len(err)
  assert abs(err.mean()) < 4.5 * level_v * d / np.sqrt(n)
  assert abs(err.std() / (level_v * d) - 1) < 4.5 / np.sqrt(2 * n), err.std()
  np.testing.assert_array_equal(out.prior_logits[:, 4], problems.ILLEGAL_LOGIT)
  legal_err = np.delete(out.prior_logits - true_logits, 4, axis=1).ravel()
  assert abs(legal_err.std() / (level_p * d) - 1) < 4.5 / np.sqrt(2 * legal_err.size)


def test_fixed_noise_is_the_same_every_call_and_has_the_rate(setup):
  probs, params, offsets, _ = setup
  step = jax.jit(model_error.model(noise="fixed", seed=3)[1])
  # Every live (state, action) pair of the deterministic problems once, then repeats.
  pairs = [(offsets[k] + s, a) for k in (0, 1) for s in np.flatnonzero(~probs[k].terminal)
           for a in range(problems.NUM_ACTIONS)]
  n = len(pairs)
  states, actions = (np.resize(np.array(x), 2 * n) for x in zip(*pairs, strict=True))
  which = np.where(states >= offsets[1], 1, 0)
  p = 0.3
  c = model_error.Corruption(transition=p, reward_bias=0.2, reward_noise=0.5, value_noise=0.1,
                             prior_noise=0.1)
  a, na = _call(step, params, c, states, actions, depth=2, seed=0)
  b, nb = _call(step, params, c, states, actions, depth=2, seed=1)  # another rng_key
  np.testing.assert_array_equal(na.state, nb.state)
  for field in ("reward", "value", "prior_logits"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  # Repeats of one pair within a call agree too.
  np.testing.assert_array_equal(na.state[:n], na.state[n:2 * n])
  true_next, true_reward, _, _ = _true(probs, offsets, which, states, actions)
  rate = np.mean(na.state[:n] != true_next[:n])  # over the distinct pairs
  assert abs(rate - p) < 4.5 * np.sqrt(p * (1 - p) / n), rate
  assert np.std(a.reward[:n] - true_reward[:n]) > 0  # one error per pair, not one for all


def test_fixed_noise_depends_on_the_action_the_depth_and_the_node_not_its_parent(setup):
  """Fixed errors are a function of (state, action) for rewards and of the node reached
  (successor, depth) for its value and prior: every action of a state has its own reward
  error, one successor reached at two depths has two value errors, and one successor reached
  from two different parents at one depth has one value and one prior."""
  probs, params, offsets, _ = setup
  step = jax.jit(model_error.model(noise="fixed", seed=5)[1])
  c = model_error.Corruption(reward_noise=1.0, value_noise=0.5, prior_noise=0.5)
  p = probs[0]  # deterministic: next_states[s, a, 0] is the successor
  live = np.flatnonzero(~p.terminal)
  s = live[0]
  actions = np.arange(problems.NUM_ACTIONS)
  states = np.full(len(actions), offsets[0] + s)
  out, _ = _call(step, params, c, states, actions, depth=1)
  reward_err = out.reward - p.rewards[s]
  assert np.ptp(reward_err) > 1e-2, reward_err  # not one error for all, up to float32 rounding
  # One successor at depths 2 and 3: the errors per unit of depth differ.
  t = p.next_states[s, :, 0]
  value_err = [(_call(step, params, c, states, actions, depth=d - 1)[0].value - p.values[t]) / d
               for d in (2, 3)]
  live_t = ~p.terminal[t]
  assert np.max(np.abs(value_err[0] - value_err[1])[live_t]) > 1e-2, value_err
  # Two different parents with the same live successor, found in the problem's own table.
  succ = p.next_states[live, :, 0]
  pairs = {}
  for i, s1 in enumerate(live):
    for a1 in range(problems.NUM_ACTIONS):
      nxt = succ[i, a1]
      if p.terminal[nxt]:
        continue
      if nxt in pairs and pairs[nxt][0] != s1:
        (s0, a0) = pairs[nxt]
        break
      pairs.setdefault(nxt, (s1, a1))
    else:
      continue
    break
  out, emb = _call(step, params, c, offsets[0] + np.array([s0, s1]), np.array([a0, a1]),
                   depth=2)
  np.testing.assert_array_equal(emb.state, offsets[0] + nxt)
  assert out.value[0] != p.values[nxt]
  assert out.value[0] == out.value[1]
  np.testing.assert_array_equal(out.prior_logits[0], out.prior_logits[1])


@pytest.mark.parametrize("noise", ["fresh", "fixed"])
def test_value_and_prior_noise_are_independent(setup, noise):
  """`ε` (value) and `ε_a` (prior) are separate draws: uncorrelated for every action."""
  probs, params, offsets, _ = setup
  step = jax.jit(model_error.model(noise=noise, seed=2)[1])
  which, states, actions = _draws(probs, offsets, seed=21)
  true_next, _, true_value, true_logits = _true(probs, offsets, which, states, actions)
  out, _ = _call(step, params, model_error.Corruption(value_noise=0.2, prior_noise=0.3),
                 states, actions, depth=1)
  live = ~np.concatenate([q.terminal for q in probs])[true_next]
  keep = np.flatnonzero(live)
  if noise == "fixed":  # one draw per node (successor at depth 2): count each node once
    keep = keep[np.unique(true_next[keep], return_index=True)[1]]
  value_eps = (out.value - true_value)[keep]
  logit_eps = (out.prior_logits - true_logits)[keep]
  n = len(keep)
  for a in range(problems.NUM_ACTIONS):
    corr = np.corrcoef(value_eps, logit_eps[:, a])[0, 1]
    assert abs(corr) < 4.5 / np.sqrt(n), (a, corr)


def test_scales_use_only_the_legal_actions_of_live_states(setup):
  probs, _, _, _ = setup
  p = probs[1]
  live = ~p.terminal
  legal = p.legal.copy()
  legal[:, 0] = False  # action 0 illegal everywhere, with an outlying reward
  rewards = p.rewards.copy()
  rewards[:, 0] = 100.0
  q = dataclasses.replace(p, legal=legal, rewards=rewards)
  want_reward = np.std(p.rewards[live][:, 1:])  # the legal actions 1.. of the live states
  want_value = np.std(p.v_star[live])
  reward_scale, value_scale = model_error.scales(q)
  np.testing.assert_allclose(reward_scale, want_reward, rtol=1e-6)
  np.testing.assert_allclose(value_scale, want_value, rtol=1e-6)
  params, _, _ = model_error.merge([q])
  np.testing.assert_allclose(params["reward_scale"], want_reward, rtol=1e-6)


def test_corruption_kinds_and_validation():
  assert model_error.corruption("transition", 0.2) == model_error.Corruption(transition=0.2)
  assert model_error.corruption("reward", 0.5) == model_error.Corruption(reward_bias=0.5,
                                                                         reward_noise=0.5)
  assert model_error.corruption("compounding", 0.1) == model_error.Corruption(value_noise=0.1,
                                                                              prior_noise=0.1)
  assert model_error.corruption("reward_bias", 0.3) == model_error.Corruption(reward_bias=0.3)
  assert model_error.corruption("reward_noise", 0.3) == model_error.Corruption(reward_noise=0.3)
  with pytest.raises(ValueError):
    model_error.corruption("transition", 1.5)
  with pytest.raises(ValueError):
    model_error.corruption("latent", 0.1)
  with pytest.raises(ValueError):
    model_error.model(noise="sometimes")


@pytest.mark.slow
def test_study_tiny_mode_writes_its_files(tmp_path):
  pytest.importorskip(
      "matplotlib",
      reason="the study draws with matplotlib (examples extra): pip install -e '.[examples]'")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
  import model_error as study  # noqa: E402  (benchmarks/model_error.py)

  doc = study.main(["--mode", "tiny", "--out", str(tmp_path), "--families",
                    "random_deterministic,tic_tac_toe"])
  for name in ("model_error.csv", "model_error_slopes.csv", "model_error_instances.csv",
               "model_error.json", "model_error.png", "model_error_slopes.md"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert (tmp_path / "model_error.png").stat().st_size < 300_000
  with open(tmp_path / "model_error.csv") as f:
    assert f.readline().startswith("# device:")
  saved = json.loads((tmp_path / "model_error.json").read_text())
  assert saved["mode"] == "tiny" and len(saved["slopes"]) == len(doc["slopes"])
  pooled = [r for r in doc["slopes"] if r["family"] == "all"]
  assert len(pooled) == 3 * 4  # kinds × searches at the one tiny budget
  assert all(np.isfinite(r["norm_simple_regret_slope"]) for r in pooled)
  # The level-0 run is shared by the kinds: identical rows.
  zero = [r for r in doc["rows"] if r["level"] == 0.0 and r["family"] == "all"
          and r["search"] == "tsmcts"]
  assert len({r["norm_simple_regret"] for r in zero}) == 1
