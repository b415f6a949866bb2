"""Splitting a budget of `num_simulations` model evaluations into width and depth.

All of this is static Python arithmetic done at trace time
(`algorithms.md` sections 3 and 8.1-8.3, 8.13):

* `num_particles=None` picks the width `N` so that the depth lands in a
  measured sweet spot; an explicit `num_particles` is honoured unless the
  budget cannot give every iteration one step, in which case the width shrinks
  (a drop-in call is never refused).
* The remainder of the budget is spent as extra depth in the last
  iterations, so evaluations reach `num_simulations − N` or more.
* `max_depth` caps every SMC run; the width then grows to use the budget when
  it was chosen automatically.
* A default width (`num_particles=None`) spends at least `MIN_SPEND_PERCENT`
  of the budget where the design allows it (`_fill_width`). SMC and SMCTS:
  always (the sequential steps fall short of the target depth instead).
  TSMCTS: whenever `num_simulations >= 32` (`>= 36` with `max_depth=1`).
  Below that, keeping root candidates comes first: e.g. 17 simulations with 5
  actions spend 15 (`N = m1 = 5`, `K = 3`), where dropping one candidate
  would spend 16; 11 simulations with 5 actions spend 8 (`N = m1 = 4`).
"""

from __future__ import annotations

import math

from smctx._src.base import Layout

# Measured defaults (docs/algorithms.md, "Width and depth").
SMC_TARGET_DEPTH = 8
TSMCTS_TARGET_DEPTH = 2  # smctx's default (docs/algorithms.md, "Search quality")
TSMCTS_PAPER_TARGET_DEPTH = 3  # `variant="paper"`: the layout the repro suite was measured on
# TSMCTS groups need several particles for resampling to select anything: a
# one-particle group is a plain prior rollout. Width at least this many
# particles per first-iteration candidate when the budget allows.
TSMCTS_MIN_PARTICLES_PER_CANDIDATE = 2
# A default width spends at least this share of the budget, in percent, when
# the design allows (module docstring).
MIN_SPEND_PERCENT = 90


def num_halving_iterations(num_considered: int) -> int:
  """`K = ceil(log2 m1)`, one iteration when `m1 = 1`."""
  return max(1, math.ceil(math.log2(num_considered))) if num_considered > 1 else 1


def halving_sequence(num_considered: int) -> tuple[int, ...]:
  """`m_1 = m1`, `m_{i+1} = ceil(m_i / 2)`, for `K` iterations."""
  seq, m = [], num_considered
  for _ in range(num_halving_iterations(num_considered)):
    seq.append(m)
    m = -(-m // 2)
  return tuple(seq)


def _spread_depths(budget: int, width: int, iterations: int, max_depth: int | None):
  """Depth of each iteration: equal, the remainder as +1 on the last iterations."""
  base = max(1, budget // (width * iterations))
  if max_depth is not None:
    base = min(base, max_depth)
  depths = [base] * iterations
  if max_depth is None or base < max_depth:
    extra = (budget - width * iterations * base) // width
    for i in range(min(max(extra, 0), iterations)):
      depths[iterations - 1 - i] += 1
  return tuple(depths)


def _fill_width(budget: int, min_width: int, target_steps: int, min_steps: int,
                max_steps: int | None) -> int:
  """Default width: the deepest layout up to `target_steps` that spends the budget.

  A width `N` spends `N·min(budget // N, max_steps)` evaluations, so the
  remainder `budget mod N` is lost; with `N` forced up to `min_width`
  (coverage of the actions or candidates) it can be half the budget. For `S`
  sequential steps, from `min(target_steps, budget // min_width)` (the target,
  or the deepest that `min_width` allows) down to `min_steps`, the candidate is
  the widest width with `S` steps, `budget // S` (at least `min_width`, and it
  wastes fewer than `S` evaluations). The first candidate that spends
  `MIN_SPEND_PERCENT` of the budget wins, so layouts stay as deep as they can;
  if none does, the one spending the most (the deepest of equals). Needs
  `min_width·min_steps <= budget`.
  """
  top = max(min_steps, min(target_steps, budget // min_width))
  best_width, best_evaluations = budget, -1
  for steps in range(top, min_steps - 1, -1):
    width = budget // steps
    evaluations = width * (budget // width if max_steps is None
                           else min(budget // width, max_steps))
    if 100 * evaluations >= MIN_SPEND_PERCENT * budget:
      return width
    if evaluations > best_evaluations:
      best_width, best_evaluations = width, evaluations
  return best_width


def smc_layout(num_simulations: int, num_actions: int, num_particles: int | None,
               max_depth: int | None, assign_without_replacement: bool) -> Layout:
  """Width and depth of SMC and SMCTS: `T = num_simulations // N` steps.

  Default width: depth `SMC_TARGET_DEPTH` (capped by `max_depth`), at least one
  particle per action when the budget allows (SMCTS coverage), and shallower
  (wider) where that spends the budget better (`_fill_width`): at least
  `MIN_SPEND_PERCENT` of `num_simulations`, for every budget.
  """
  if num_particles is None:
    depth = SMC_TARGET_DEPTH if max_depth is None else min(SMC_TARGET_DEPTH, max_depth)
    width = _fill_width(num_simulations, min(num_actions, num_simulations), depth, 1,
                        max_depth)
  else:
    width = min(num_particles, num_simulations)
  depths = _spread_depths(num_simulations, width, 1, max_depth)
  considered = min(width, num_actions) if assign_without_replacement else 0
  return Layout(num_particles=width, num_considered=considered,
                considered_per_iteration=(considered,), depths=depths)


def tsmcts_layout(num_simulations: int, num_actions: int, num_particles: int | None,
                  max_num_considered_actions: int, max_depth: int | None,
                  target_depth: int = TSMCTS_TARGET_DEPTH) -> Layout:
  """Width, candidates and per-iteration depth of TSMCTS.

  `m1 = min(max_num_considered_actions, A, N)`, `K = ceil(log2 m1)`,
  `T_SH = num_simulations // (N·K)`; if that is below one step, the width
  shrinks to the widest one that gives every iteration a step (and `m1`
  with it).

  Default width: `T_SH` about `target_depth` (capped by `max_depth`),
  at least `TSMCTS_MIN_PARTICLES_PER_CANDIDATE·m1` particles when the budget
  allows it for every iteration, else at least `m1`, and shallower (wider)
  where that spends the budget better (`_fill_width`). Keeping the `m1` root
  candidates comes first; it spends at least `MIN_SPEND_PERCENT` of
  `num_simulations` whenever `num_simulations >= 32` (module docstring).
  """
  m1 = min(max_num_considered_actions, num_actions)
  if num_particles is None:
    depth = target_depth if max_depth is None else min(target_depth, max_depth)
    iterations = num_halving_iterations(m1)
    if TSMCTS_MIN_PARTICLES_PER_CANDIDATE * m1 * iterations <= num_simulations:
      min_width = TSMCTS_MIN_PARTICLES_PER_CANDIDATE * m1
    else:
      min_width = m1
    if min_width * iterations <= num_simulations:
      width = _fill_width(num_simulations, min_width, iterations * depth, iterations,
                          None if max_depth is None else iterations * max_depth)
    else:
      width = m1  # Too small a budget for every candidate: shrinks below.
  else:
    width = num_particles
  # The widest width (at most the requested one) whose every iteration gets at
  # least one step: a small budget shrinks the width, never refuses the call.
  while width > 1 and width * num_halving_iterations(min(m1, width)) > num_simulations:
    width -= 1
  m1 = min(m1, width)
  iterations = num_halving_iterations(m1)
  depths = _spread_depths(num_simulations, width, iterations, max_depth)
  return Layout(num_particles=width, num_considered=m1,
                considered_per_iteration=halving_sequence(m1), depths=depths)
