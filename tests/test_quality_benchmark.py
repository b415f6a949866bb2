"""The search-quality benchmark (`benchmarks/quality.py`) and its problems (`smctx.problems`).

The exact values of the problem builders are checked against values computed
here independently: the corridor's `V*`/`Q*` in closed form, tic-tac-toe by a
separate brute-force negamax over boards, random MDPs by their Bellman
equation. The benchmark's tiny mode runs end to end under `-m slow`.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smctx import problems

# The benchmark draws its figures with matplotlib (the examples extra).
pytest.importorskip(
    "matplotlib",
    reason="the benchmark draws with matplotlib (examples extra): pip install -e '.[examples]'")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import quality  # noqa: E402

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]


def _won(board, player):
  return any(all(board[i] == player for i in line) for line in LINES)


@functools.lru_cache(maxsize=None)
def negamax(board: str) -> int:
  """Value for the player to move of a board string ('.', 'x', 'o'; x moves first)."""
  mover = "x" if board.count("x") == board.count("o") else "o"
  best = -2
  for cell in range(9):
    if board[cell] == ".":
      child = board[:cell] + mover + board[cell + 1:]
      if _won(child, mover):
        value = 1
      elif "." not in child:
        value = 0
      else:
        value = -negamax(child)
      best = max(best, value)
  return best


def _board_string(cells) -> str:
  return "".join(".xo"[int(c)] for c in cells)


def _state_of(board: str) -> int:
  game = problems.tic_tac_toe_game()
  target = np.array([".xo".index(c) for c in board])
  return int(np.flatnonzero(np.all(game["boards"] == target, axis=1))[0])


def test_tic_tac_toe_values_by_brute_force():
  game = problems.tic_tac_toe_game()
  assert len(game["v_star"]) == 5478  # all reachable positions, terminal ones included
  assert game["v_star"][0] == 0.0 and negamax("." * 9) == 0  # the empty board is a draw
  known = {
      "x...o....": 0,   # X corner, O centre: draw
      "xo.......": 1,   # X corner, O adjacent edge: X to move wins
      "....x..o.": 1,   # X centre, O edge: X wins
      "xx.oo....": 1,   # X to move completes the top row
      "xx..o....": 0,   # O to move must block at 2 (and then holds the draw)
  }
  for board, value in known.items():
    s = _state_of(board)
    assert negamax(board) == value
    assert game["v_star"][s] == value, board
  # O's moves other than the block lose.
  s = _state_of("xx..o....")
  for cell in (3, 5, 6, 7, 8):
    assert game["q_star"][s, cell] == -1.0
  assert game["q_star"][s, 2] == 0.0
  # Random non-terminal positions: every legal move's Q* against the separate negamax.
  rng = np.random.default_rng(0)
  live = np.flatnonzero(~game["terminal"])
  for s in rng.choice(live, 60, replace=False):
    board = _board_string(game["boards"][s])
    mover = "x" if board.count("x") == board.count("o") else "o"
    assert game["v_star"][s] == negamax(board)
    for cell in range(9):
      if board[cell] != ".":
        assert not game["legal"][s, cell]
        continue
      child = board[:cell] + mover + board[cell + 1:]
      expected = 1 if _won(child, mover) else 0 if "." not in child else -negamax(child)
      assert game["q_star"][s, cell] == expected


def test_tic_tac_toe_problem_roots_and_illegal_moves():
  p = problems.tic_tac_toe_problem(0, "good", 50)
  assert p.two_player and len(p.roots) == 50
  assert np.all(~p.terminal[p.roots]) and np.all(p.spread() > 0)
  for s in p.roots:
    legal = p.legal[s]
    assert np.all(p.prior_logits[s, ~legal] == problems.ILLEGAL_LOGIT)
    assert np.isclose(p.prior_logits[s, legal].max(), 0.0)
    # An illegal move behaves like the worst legal one: V* is unchanged.
    worst = np.min(p.q_star[s, legal])
    assert np.all(p.q_star[s, ~legal] == worst)
    assert p.v_star[s] == p.q_star[s, legal].max()


def test_chain_values_in_closed_form():
  length, gamma = problems.CHAIN_LENGTH, problems.CHAIN_DISCOUNT
  for seed in (0, 1):
    mdp, kinds = problems.chain_mdp(seed)
    p = problems.chain_problem(seed, "good", 100)
    v = gamma ** (length - 1 - np.arange(length))  # reward 1 after L - i forward moves
    np.testing.assert_allclose(p.v_star[:length], v, rtol=1e-9)
    assert p.v_star[length] == 0 and p.v_star[length + 1] == 0  # goal, bail: terminal
    for i in range(length):
      for a, kind in enumerate(kinds[i]):
        if kind == "forward":
          expected = v[i]
        elif kind == "bail":
          expected = problems.CHAIN_BAIL_REWARD
        elif kind == "reset":
          expected = gamma * v[0]
        else:
          expected = gamma * v[max(i - int(kind.split("_")[1]), 0)]
        np.testing.assert_allclose(p.q_star[i, a], expected, rtol=1e-9)
      assert sorted(kinds[i]) == sorted(problems.CHAIN_ACTIONS)
    # Roots need >= 10 correct moves to reach a position whose network value is informative;
    # the bail (immediate reward, ends the episode) is the worst action at every root.
    last = length - problems.CHAIN_VISIBLE - problems.CHAIN_MIN_STEPS
    np.testing.assert_array_equal(p.roots, np.arange(last + 1))
    assert (length - problems.CHAIN_VISIBLE) - p.roots.max() >= 10
    bail = np.array([list(kinds[i]).index("bail") for i in p.roots])
    np.testing.assert_allclose(p.spread(), v[p.roots] - problems.CHAIN_BAIL_REWARD)
    assert np.all(p.q_star[p.roots, bail] < v[p.roots])
  # Far from the goal the value network carries noise only (its target is 0).
  noise = problems.NETWORKS["good"].value_noise * np.std(p.v_star[:length])
  far = p.values[: length - problems.CHAIN_VISIBLE]
  assert np.all(np.abs(far) < 6 * noise)
  assert np.abs(np.mean(far)) < 3 * noise


@pytest.mark.parametrize("branching", [1, 3])
def test_random_problem_bellman_equation(branching):
  p = problems.random_problem(3, "poor", 10, branching=branching)
  assert p.next_states.shape == (100, 9, branching)
  expected_v = p.rewards + p.discount * np.sum(p.probs * p.v_star[p.next_states], -1)
  np.testing.assert_allclose(p.q_star, expected_v, atol=1e-7)
  np.testing.assert_allclose(p.v_star, p.q_star.max(-1), atol=1e-12)
  assert len(p.roots) == 10 and np.all(p.legal)


def test_wrong_prior_puts_its_mass_on_the_worst_action():
  for family, builder in problems.FAMILIES.items():
    p = builder(0, "wrong_prior", 8)
    good = builder(0, "good", 8)
    np.testing.assert_array_equal(p.roots, good.roots)  # networks share the roots
    logits = p.prior_logits[p.roots].astype(np.float64)
    prior = np.exp(logits - logits.max(-1, keepdims=True))
    prior /= prior.sum(-1, keepdims=True)
    q = np.where(p.legal[p.roots], p.q_star[p.roots], np.inf)
    worst_mass = np.sum(np.where(np.isclose(q, q.min(-1, keepdims=True)), prior, 0.0), -1)
    assert np.all(worst_mass >= 0.8 - 1e-6), family


def test_merged_model_steps():
  ttt = problems.tic_tac_toe_problem(0, "good", 4)
  chain = problems.chain_problem(0, "poor", 4)
  rnd = problems.random_problem(0, "good", 4, branching=3)
  params, roots, offsets = problems.merge([chain, ttt, rnd])
  assert params["next_states"].shape[-1] == 3
  np.testing.assert_array_equal(roots[:len(chain.roots)], chain.roots)
  _, recurrent_fn = problems.model()
  # X completes the top row: reward 1, the game ends (discount 0, value 0).
  s = offsets[1] + _state_of("xx.oo....")
  out, nxt = recurrent_fn(params, jax.random.PRNGKey(0), jnp.array([2, 5]), jnp.array([s, s]))
  np.testing.assert_allclose(out.reward, [1.0, 0.0])
  np.testing.assert_allclose(out.discount, [0.0, -1.0])  # two-player: -1 per ply
  assert int(nxt[1]) == offsets[1] + _state_of("xx.oox...")
  # Stochastic successors stay within the problem's own states.
  state = jnp.full((256,), offsets[2] + rnd.roots[0], jnp.int32)
  _, nxt = recurrent_fn(params, jax.random.PRNGKey(1), jnp.zeros((256,), jnp.int32), state)
  allowed = set((rnd.next_states[rnd.roots[0], 0] + offsets[2]).tolist())
  assert set(np.asarray(nxt).tolist()) <= allowed and len(set(np.asarray(nxt).tolist())) > 1


def test_chain_network_is_informative_within_visible_steps():
  length, visible = problems.CHAIN_LENGTH, problems.CHAIN_VISIBLE
  p = problems.chain_problem(0, "good", 4)
  noise = problems.NETWORKS["good"].value_noise * np.std(p.v_star[:length])
  near = np.arange(length - visible, length)  # goal within `visible` forward moves
  assert np.all(np.abs(p.values[near] - p.v_star[near]) < 6 * noise)
  np.testing.assert_array_equal(p.values[length:], 0.0)  # goal, bail: terminal


def test_networks_follow_their_definition_on_tic_tac_toe():
  """Over the ~4500 live positions: value residuals have std `value_noise·std(V*[live])`, the
  row-centred legal logits regress on `(Q* − V*)/std(Q*[live, legal])` with slope
  `prior_quality`, terminal values are 0, and different networks draw independent noise."""
  residuals = {}
  for name in ("good", "poor"):
    spec = problems.NETWORKS[name]
    p = problems.tic_tac_toe_problem(0, name, 8)
    live = ~p.terminal
    np.testing.assert_array_equal(p.values[p.terminal], 0.0)
    residuals[name] = (p.values - p.v_star)[live]
    ratio = np.std(residuals[name]) / np.std(p.v_star[live]) / spec.value_noise
    assert abs(ratio - 1.0) < 0.025, (name, ratio)
    legal = p.legal[live]
    count = legal.sum(-1, keepdims=True)
    adv = (p.q_star - p.v_star[:, None])[live] / np.std(p.q_star[live][legal])

    def centred(x, legal=legal, count=count):
      x = np.where(legal, x, 0.0)
      return np.where(legal, x - x.sum(-1, keepdims=True) / count, 0.0)

    x, y = centred(adv), centred(p.prior_logits[live].astype(np.float64))
    slope = np.sum(x * y) / np.sum(x * x)
    assert abs(slope - spec.prior_quality) < 0.05, (name, slope)
  assert abs(np.corrcoef(residuals["good"], residuals["poor"])[0, 1]) < 0.1


def test_wrong_prior_leaves_states_without_a_worst_action_alone():
  p = problems.tic_tac_toe_problem(0, "wrong_prior", 8)
  assert np.all(np.isfinite(p.prior_logits))
  q = np.where(p.legal, p.q_star, np.inf)
  ties = ~p.terminal & (p.v_star - q.min(-1) <= 1e-9) & (p.legal.sum(-1) >= 2)
  logits = p.prior_logits.astype(np.float64)
  prior = np.exp(logits - logits.max(-1, keepdims=True))
  prior /= prior.sum(-1, keepdims=True)
  at_mass = np.any(np.abs(prior[ties] - problems.NETWORKS["wrong_prior"].wrong_prior_mass)
                   < 1e-6, -1)
  assert ties.sum() > 50 and at_mass.mean() < 0.05, (ties.sum(), at_mass.mean())


def test_merge_maps_every_problems_roots_and_tables():
  probs = [problems.chain_problem(0, "good", 3), problems.tic_tac_toe_problem(0, "good", 4),
           problems.random_problem(0, "good", 5, branching=3)]
  params, roots, offsets = problems.merge(probs)
  np.testing.assert_array_equal(offsets, [0, 22, 22 + probs[1].num_states])
  start = 0
  for p, offset in zip(probs, offsets, strict=True):
    mine = roots[start:start + len(p.roots)]
    start += len(p.roots)
    np.testing.assert_array_equal(mine, p.roots + offset)
    np.testing.assert_allclose(params["values"][mine], p.values[p.roots], rtol=1e-6)
    np.testing.assert_allclose(params["rewards"][mine], p.rewards[p.roots], rtol=1e-6)
  assert start == len(roots)


def test_merged_model_samples_successors_with_their_probabilities():
  rnd = problems.random_problem(0, "good", 4, branching=3)
  params, _, offsets = problems.merge([problems.chain_problem(0, "good", 2), rnd])
  s, a, n = int(rnd.roots[0]), 0, 20000
  assert np.max(np.abs(rnd.probs[s, a] - 1 / 3)) > 0.05  # far enough from uniform
  _, recurrent_fn = problems.model()
  state = jnp.full((n,), offsets[1] + s, jnp.int32)
  _, nxt = recurrent_fn(params, jax.random.PRNGKey(3), jnp.full((n,), a, jnp.int32), state)
  freq = np.bincount(np.asarray(nxt) - offsets[1], minlength=rnd.num_states) / n
  expected = np.zeros(rnd.num_states)
  np.add.at(expected, rnd.next_states[s, a], rnd.probs[s, a])
  np.testing.assert_allclose(freq, expected, atol=0.015)


def test_match_budget_brackets_the_target():
  grid = quality.budget_grid((16, 64), 4096)
  assert grid[:6] == [8, 12, 16, 24, 32, 48]
  calls = []

  def time_at(b):
    calls.append(b)
    return b / 1000.0

  measured = {16: 0.016, 64: 0.064}
  match = quality.match_budget(time_at, measured, 0.1, grid, max_probes=4)
  assert match["budget"] == 96 and match["fits"] and match["bracketed"]
  assert 128 in measured and len(calls) <= 4
  # Even the smallest budget is too slow: the smallest tried is reported, not fitting.
  match = quality.match_budget(lambda b: 1.0, {16: 1.0}, 0.1, grid, max_probes=3)
  assert not match["fits"] and match["budget"] <= 16


def test_variant_parsing():
  name, base, kwargs = quality.parse_variant("t16=tsmcts:num_particles=16,resample='always'")
  assert (name, base, kwargs) == ("t16", "tsmcts", dict(num_particles=16, resample="always"))
  searches = quality.resolve_searches(["smc", "tsmcts_greedy"], ["t16=tsmcts:num_particles=16"])
  assert list(searches) == ["gumbel_muzero", "smc", "tsmcts_greedy", "t16"]
  assert searches["t16"][1] == dict(num_particles=16)
  assert searches["tsmcts_greedy"][1] == dict(gumbel_scale=0.0)


@pytest.mark.slow
def test_tiny_mode_end_to_end(tmp_path):
  doc = quality.run("tiny", out=str(tmp_path), verbose=False, command="pytest")
  assert doc["errors"] == []
  for name in ("quality.csv", "quality_instances.csv", "quality_timing.csv", "quality.json",
               "quality_table.md", "quality_equal_evaluations.png", "quality_equal_time.png"):
    assert (tmp_path / name).exists(), name
  for name in ("quality_equal_evaluations.png", "quality_equal_time.png"):
    assert (tmp_path / name).stat().st_size < 300_000
  rows = json.loads((tmp_path / "quality.json").read_text())["rows"]
  evaluated = {(r["comparison"], r["search"]) for r in rows}
  for search in quality.SEARCHES:
    assert ("equal_evaluations", search) in evaluated
  for search in ("smc", "smcts", "tsmcts"):
    assert ("equal_time", search) in evaluated
  for r in rows:
    assert r["instances"] == 2
    assert 0.0 <= r["norm_simple_regret"] <= 1.0 + 1e-6
    assert r["illegal_action"] == 0.0
  assert "| tic_tac_toe | tsmcts |" in doc["table_markdown"]
