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
from typing import Callable

from smctx._src import validation
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
# smctx's default TSMCTS layout makes at least `sqrt(num_simulations) / 2` sequential calls
# (from about 1024 simulations on): a larger budget buys depth as well as width
# (docs/algorithms.md, "Compute scaling").
STEPS_GROWTH = 0.5


def default_steps(num_simulations: int) -> int:
  """The fewest sequential calls of smctx's default TSMCTS layout: `sqrt(budget)/2`."""
  return max(1, round(STEPS_GROWTH * math.sqrt(num_simulations)))


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


def _spread_depths(budget: int, width: int, iterations: int, max_depth: int | None,
                   minimum: tuple[int, ...] | None = None) -> tuple[int, ...]:
  """Depth of each iteration: from `minimum` (default one step each), one more step at a
  time to the shallowest iteration, the last first, while the budget allows.

  From one step each this is an equal depth with the remainder as +1 on the last
  iterations. `max_depth` caps every iteration.
  """
  cap = max_depth if max_depth is not None else budget
  depths = [min(d, cap) for d in (minimum or (1,) * iterations)]
  spare = budget // width - sum(depths)
  while spare > 0 and min(depths) < cap:
    shallowest = min(depths)
    i = max(j for j, d in enumerate(depths) if d == shallowest)
    depths[i] += 1
    spare -= 1
  return tuple(depths)


def distinct_path_depths(width: int, considered: tuple[int, ...], num_actions: int
                         ) -> tuple[int, ...]:
  """Per iteration, the least depth `T_i` at which a candidate's `n_i = ceil(N / m_i)`
  particles can all follow different paths: `n_i <= A^(T_i - 1)`.

  Every particle of a candidate's group takes the same first transition, so under
  deterministic dynamics (mctx's model: one evaluation per tree node) a group that
  outnumbers the paths below its candidate repeats evaluations. With 4 actions and a
  depth of 2, a group of 8 evaluates the 4 + 1 nodes of a group of 4 twice.
  """
  depths = []
  for m in considered:
    n, d = -(-width // m), 1
    while num_actions > 1 and num_actions ** (d - 1) < n:
      d += 1
    depths.append(d)
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


def width_of_steps(num_simulations: int, num_steps: int) -> int:
  """The width `N` of a search asked for `num_steps` sequential calls: `num_simulations //
  num_steps` (at least 1), the widest that fits the budget."""
  return max(1, num_simulations // num_steps)


def smc_layout(num_simulations: int, num_actions: int, num_particles: int | None,
               max_depth: int | None, assign_without_replacement: bool,
               num_steps: int | None = None) -> Layout:
  """Width and depth of SMC and SMCTS: `T = num_simulations // N` steps.

  Default width: depth `SMC_TARGET_DEPTH` (capped by `max_depth`), at least one
  particle per action when the budget allows (SMCTS coverage), and shallower
  (wider) where that spends the budget better (`_fill_width`): at least
  `MIN_SPEND_PERCENT` of `num_simulations`, for every budget. `num_steps`
  (the latency) sets `T` and the width `num_simulations // T` instead.
  """
  if num_steps is not None:
    width = width_of_steps(num_simulations, num_steps)
    depths = _spread_depths(width * min(num_steps, num_simulations), width, 1, max_depth)
    considered = min(width, num_actions) if assign_without_replacement else 0
    return Layout(num_particles=width, num_considered=considered,
                  considered_per_iteration=(considered,), depths=depths)
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
                  target_depth: int = TSMCTS_TARGET_DEPTH,
                  distinct_paths: bool = True, num_steps: int | None = None) -> Layout:
  """Width, candidates and per-iteration depth of TSMCTS.

  `num_steps` (the latency, sequential calls) gives `steps_layout`; otherwise:

  `m1 = min(max_num_considered_actions, A, N)`, `K = ceil(log2 m1)`,
  `T_SH = num_simulations // (N·K)`; if that is below one step, the width
  shrinks to the widest one that gives every iteration a step (and `m1`
  with it).

  Default width: `T_SH` about `target_depth` (capped by `max_depth`),
  at least `TSMCTS_MIN_PARTICLES_PER_CANDIDATE·m1` particles when the budget
  allows it for every iteration (with `distinct_paths`: for two steps each), else
  at least `m1`, and shallower (wider) where that spends the budget better
  (`_fill_width`). With `distinct_paths` (smctx's default, beyond the paper;
  False for `variant="paper"`), the width then narrows until each iteration is
  deep enough for its groups to take distinct paths (`distinct_path_depths`),
  where that still spends `MIN_SPEND_PERCENT`, and the extra depth goes to those
  iterations. Keeping the `m1` root candidates comes first; it spends at least
  `MIN_SPEND_PERCENT` of `num_simulations` whenever `num_simulations >= 32`
  (module docstring).
  """
  if num_steps is not None:
    return steps_layout(num_simulations, num_actions, num_steps, max_num_considered_actions,
                        max_depth)
  m1 = min(max_num_considered_actions, num_actions)
  if num_particles is None:
    depth = target_depth if max_depth is None else min(target_depth, max_depth)
    iterations = num_halving_iterations(m1)
    # Several particles per candidate where the budget gives each of them the steps to
    # go past the candidate (their first step is the same transition, which copies
    # repeat under deterministic dynamics): two steps each with `distinct_paths`, or
    # one where the depth asked for is 1. Asking for depth 1 keeps the wider layout,
    # e.g. 8 particles at depths (1, 1) for 16 simulations and 4 actions; two steps
    # there would give 4 particles at (2, 2), a deeper search than was asked for.
    two_steps = min(depth, 2) if distinct_paths else 1
    if TSMCTS_MIN_PARTICLES_PER_CANDIDATE * m1 * iterations * two_steps <= num_simulations:
      min_width = TSMCTS_MIN_PARTICLES_PER_CANDIDATE * m1
    else:
      min_width = m1
    if min_width * iterations <= num_simulations:
      width = _fill_width(num_simulations, min_width, iterations * depth, iterations,
                          None if max_depth is None else iterations * max_depth)
    else:
      width = m1  # Too small a budget for every candidate: shrinks below.
    if distinct_paths:  # smctx's default, beyond the paper
      width = _distinct_path_width(num_simulations, width, min_width, m1, num_actions, depth,
                                   max_depth)
  else:
    width = num_particles
  # The widest width (at most the requested one) whose every iteration gets at
  # least one step: a small budget shrinks the width, never refuses the call.
  while width > 1 and width * num_halving_iterations(min(m1, width)) > num_simulations:
    width -= 1
  m1 = min(m1, width)
  iterations = num_halving_iterations(m1)
  minimum = None
  if num_particles is None and distinct_paths:
    minimum = _least_depths(width, m1, num_actions, 1, max_depth)
    if width * sum(minimum) > num_simulations:
      minimum = None
  depths = _spread_depths(num_simulations, width, iterations, max_depth, minimum)
  layout = Layout(num_particles=width, num_considered=m1,
                  considered_per_iteration=halving_sequence(m1), depths=depths)
  if (num_particles is None and distinct_paths and max_depth is None
      and layout.num_steps < default_steps(num_simulations)):
    # Larger budgets: depth grows with the budget too (smctx's default, beyond the paper).
    return steps_layout(num_simulations, num_actions, default_steps(num_simulations),
                        max_num_considered_actions, max_depth)
  return layout


def steps_layout(num_simulations: int, num_actions: int, num_steps: int,
                 max_num_considered_actions: int, max_depth: int | None) -> Layout:
  """TSMCTS making `num_steps` sequential calls: width `N = num_simulations // num_steps`,
  the steps spread equally over the `K` iterations (the remainder on the last ones).

  Equal depths keep the candidates' estimates comparable: the policy target compares every
  candidate, eliminated ones included, and deeper returns are more pessimistic here (prior
  rollouts), so a shallow first iteration made the target worse; a split in proportion to
  `1/m_i` was measured and not kept (`docs/algorithms.md`, "Compute scaling").

  `m1 = min(max_num_considered_actions, A, N)`, and at most `2^num_steps` so that every
  iteration gets a step; `max_depth` caps every iteration (then fewer calls are made).
  """
  width = width_of_steps(num_simulations, num_steps)
  m1 = min(max_num_considered_actions, num_actions, width, 2 ** min(num_steps, 30))
  steps = min(num_steps, num_simulations)
  depths = _spread_depths(width * steps, width, num_halving_iterations(m1), max_depth)
  return Layout(num_particles=width, num_considered=m1,
                considered_per_iteration=halving_sequence(m1), depths=depths)


def _least_depths(width: int, max_considered: int, num_actions: int, target_depth: int,
                  max_depth: int | None = None) -> tuple[int, ...]:
  """The least depth of each iteration of a default TSMCTS layout of `width` particles:
  the target, and at least `distinct_path_depths` (both capped by `max_depth`)."""
  m1 = min(max_considered, width)
  paths = distinct_path_depths(width, halving_sequence(m1), num_actions)
  cap = max_depth if max_depth is not None else max(paths + (target_depth,))
  return tuple(min(max(target_depth, d), cap) for d in paths)


def _distinct_path_width(budget: int, width: int, min_width: int, max_considered: int,
                         num_actions: int, target_depth: int, max_depth: int | None) -> int:
  """The widest width up to `width` (down to `min_width`) whose iterations are deep enough
  for their groups to take distinct paths (`_least_depths`) and that spends
  `MIN_SPEND_PERCENT` of the budget; `width` itself if none does (spending the budget
  comes first). Width that would repeat evaluations goes to depth instead."""
  for w in range(width, min_width - 1, -1):
    least = _least_depths(w, max_considered, num_actions, target_depth, max_depth)
    iterations = num_halving_iterations(min(max_considered, w))
    evaluations = w * sum(_spread_depths(budget, w, iterations, max_depth, least))
    if w * sum(least) <= budget and 100 * evaluations >= MIN_SPEND_PERCENT * budget:
      return w
  return width


def tsmcts_variant_depth(variant: str, depth_per_iteration: int | None) -> tuple[int, bool]:
  """`(target depth, distinct paths)` of a TSMCTS variant; an explicit depth wins."""
  if depth_per_iteration is None:
    depth_per_iteration = TSMCTS_TARGET_DEPTH if variant == "smctx" else TSMCTS_PAPER_TARGET_DEPTH
  return depth_per_iteration, variant == "smctx"


_POLICY_NAMES = {"smc": "smc", "smcts": "smcts", "tsmcts": "tsmcts", "smc_policy": "smc",
                 "smcts_policy": "smcts", "tsmcts_policy": "tsmcts", "sampled_smc_policy": "smc",
                 "sampled_smcts_policy": "smcts", "sampled_tsmcts_policy": "tsmcts"}


def search_layout(policy: str | Callable, num_simulations: int, num_actions: int, *,
                  num_particles: int | None = None, max_depth: int | None = None,
                  max_num_considered_actions: int = 16, depth_per_iteration: int | None = None,
                  variant: str = "smctx", num_steps: int | None = None) -> Layout:
  """The width and depth a search will use, without running it.

  Args:
    policy: "smc", "smcts", "tsmcts" or one of smctx's policy functions
      (sampled ones included; `num_actions` is then the number of candidates).
    num_simulations: the budget, model evaluations per root.
    num_actions: the root's number of actions.
    num_particles: as passed to the policy (None: chosen from the budget).
    max_depth: as passed to the policy.
    max_num_considered_actions: as passed to the policy (TSMCTS only).
    depth_per_iteration: as passed to `tsmcts_policy` (TSMCTS only).
    variant: as passed to `tsmcts_policy` (TSMCTS only).
    num_steps: as passed to the policy (None: chosen from the budget).

  Returns:
    `smctx.Layout`: `num_particles` (width `N`), `num_considered` (`m1`),
    `considered_per_iteration` and `depths` (sequential steps per Sequential
    Halving iteration, or `(T,)`); `num_steps` is the number of sequential
    `recurrent_fn` calls, `num_evaluations` the evaluations per root.
  """
  name = _POLICY_NAMES.get(policy if isinstance(policy, str) else getattr(policy, "__name__", ""))
  if name is None:
    raise ValueError(f"policy={policy!r} is not accepted; expected 'smc', 'smcts', 'tsmcts' or "
                     "an smctx policy function.")
  validation.check_positive_int("num_simulations", num_simulations)
  validation.check_positive_int("num_actions", num_actions)
  validation.check_width_and_steps(num_particles, num_steps)
  validation.check_positive_int("max_depth", max_depth, allow_none=True)
  validation.check_positive_int("max_num_considered_actions", max_num_considered_actions)
  validation.check_positive_int("depth_per_iteration", depth_per_iteration, allow_none=True)
  validation.check_choice("variant", variant, validation.TSMCTS_VARIANTS)
  if name != "tsmcts":
    return smc_layout(num_simulations, num_actions, num_particles, max_depth,
                      assign_without_replacement=name == "smcts", num_steps=num_steps)
  target_depth, distinct_paths = tsmcts_variant_depth(variant, depth_per_iteration)
  return tsmcts_layout(num_simulations, num_actions, num_particles, max_num_considered_actions,
                       max_depth, target_depth, distinct_paths=distinct_paths,
                       num_steps=num_steps)
