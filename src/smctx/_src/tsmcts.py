"""TSMCTS: SMCTS inside Sequential Halving at the root (`algorithms.md` section 3).

One `loop_fn` loop runs every sequential step of every Sequential Halving
iteration, so the model is traced once and each step is exactly one
`recurrent_fn` evaluation of all `B·N` particles. A step is:

* `root_step`, the first step of an iteration: each group has taken its
  candidate root action, and its particles re-root at the successor `s2`
  (`rerooting.py`);
* or `inner_step`: an SMCTS step inside each group (`engine.smc_step`;
  resampling never crosses groups, so a particle never changes root action);
* then, after the last step of an iteration, `end_iteration`: the second
  greedification gives `V_SMCTS(s2)`, `Q_i(a)` enters the inverse-variance
  combination `Q_SH`, the candidates are halved by `g + logits + σ(Q̃_SH)`
  (`sequential_halving.py`), and the particles go back to the root split over
  the survivors. With `reuse_successors` (smctx's default, beyond the paper)
  they do not take the root step again: each survivor's group starts at the
  `s2` samples its candidate drew in the iteration before (`successors_of`)
  and re-roots there at once, so every step of a later iteration goes below
  `s2` and, under deterministic dynamics, none repeats an evaluation of the
  root transitions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp
import mctx

from smctx._src import budget
from smctx._src import draws
from smctx._src import engine
from smctx._src import greedification
from smctx._src import particles as particles_lib
from smctx._src import rerooting
from smctx._src import root as root_lib
from smctx._src import segments
from smctx._src import sequential_halving
from smctx._src import start as start_lib
from smctx._src import validation
from smctx._src import warm_start as warm_start_lib
from smctx._src.backpropagation import ActionValues
from smctx._src.base import ActionModel
from smctx._src.base import Layout
from smctx._src.base import PytreeDataclass, pytree_dataclass
from smctx._src.base import SearchDiagnostics
from smctx._src.base import WarmStart
from smctx._src.engine import DEFAULT_TEMPERATURE
from smctx._src.particles import ModelStep
from smctx._src.particles import Particles
from smctx._src.rerooting import RootStep
from smctx._src.sequential_halving import HalvingState


# smctx's default transform of the search's decisions and of the policy target: mctx's completed-Q
# transform, three times as sharp (`value_scale` 0.3 instead of 0.1); docs/algorithms.md,
# "Search quality".
SHARP_QTRANSFORM = functools.partial(mctx.qtransform_completed_by_mix_value, value_scale=0.3)


@pytree_dataclass(frozen=True)
class SearchState(PytreeDataclass):
  """The loop state of TSMCTS.

  particles: the particle system `[B, N]`; values: the inner search's running
  means per slot `[B, N]`; td_scale: running TD-error scale per root;
  root_step: what the current iteration's root step saw; halving: the
  Sequential Halving statistics `[B, A]`; successors: the `s2` samples of the
  last root step `[B, N]`, in the order of `root_step` (`reuse_successors`);
  next_root: the estimates at the successor of the best candidate after the
  latest iteration (no weight if it was one step deep; `warm_start.py`).
  """
  particles: Particles
  values: ActionValues
  td_scale: engine.TDScale
  root_step: RootStep
  halving: HalvingState
  successors: ModelStep
  next_root: WarmStart


# `Schedule.selects_root_step`: the root step is selected, not branched to, where the search
# has one root step or at most one in this many steps is a root step. Measured on CPU:
# selecting was as fast or faster with one root step a search (0-9 %, 4 to 64 steps) and with
# the paper's root step in 8 or 16 (3-5 %), 5 % slower with the paper's one in 4
# (docs/performance.md).
ROOT_STEP_SELECT_EVERY = 8


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The static schedule of a search: depth and candidates of every iteration."""
  depths: tuple[int, ...]
  num_considered: tuple[int, ...]
  # Iterations after the first start at their candidates' `s2` samples from the
  # previous iteration (`reuse_successors`): no root step, every step goes below `s2`.
  reuse_successors: bool = False

  @property
  def num_steps(self) -> int:
    return sum(self.depths)

  @property
  def iteration_of_step(self) -> tuple[int, ...]:
    return tuple(i for i, depth in enumerate(self.depths) for _ in range(depth))

  @property
  def is_root_step(self) -> tuple[bool, ...]:
    return tuple(t == 0 and (k == 0 or not self.reuse_successors)
                 for k, depth in enumerate(self.depths) for t in range(depth))

  @property
  def is_last_step(self) -> tuple[bool, ...]:
    return tuple(t == depth - 1 for depth in self.depths for t in range(depth))

  @property
  def is_one_step(self) -> tuple[bool, ...]:
    """Per iteration: its one step is the root step, so no second actions, no inner search."""
    return tuple(depth == 1 and (k == 0 or not self.reuse_successors)
                 for k, depth in enumerate(self.depths))

  @property
  def reroots_after_step(self) -> tuple[bool, ...]:
    """Per step: the particles re-root after it, at the root step of an iteration with an
    inner search, or at the end of an iteration followed by one starting at its successors."""
    last_iteration = len(self.depths) - 1
    return tuple(
        (root and not self.is_one_step[k]) or (last and self.reuse_successors
                                               and k < last_iteration)
        for k, root, last in zip(self.iteration_of_step, self.is_root_step, self.is_last_step,
                                 strict=True))

  @property
  def at_boundary(self) -> tuple[bool, ...]:
    """Per step: an iteration ends or the particles re-root after it."""
    return tuple(last or reroot for last, reroot in zip(self.is_last_step,
                                                        self.reroots_after_step, strict=True))

  @property
  def selects_root_step(self) -> bool:
    """Whether every step computes both the root step's branch and the inner step's and
    selects, instead of branching (`lax.cond`). A select wastes the inner step on root steps
    and the root branch (cheap: the `s2` record where a one-step iteration exists) on the
    others; a conditional costs every step its carry copies (CPU) and a round trip to the
    host (GPU). Selected where a search has one root step (the default's,
    `reuse_successors`) or at most one in `ROOT_STEP_SELECT_EVERY` steps (the paper's root
    step per iteration from depth 8 on; `docs/performance.md`)."""
    return sum(self.is_root_step) <= max(1, self.num_steps // ROOT_STEP_SELECT_EVERY)

  @property
  def survivors(self) -> tuple[int, ...]:
    """Candidates kept after each iteration, `ceil(m_i / 2)`."""
    return tuple(-(-m // 2) for m in self.num_considered)


@dataclasses.dataclass(frozen=True)
class Context:
  """What stays fixed during one search: its inputs and static settings."""
  params: mctx.Params
  search_key: chex.PRNGKey
  root: root_lib.PreparedRoot
  model: ActionModel
  config: engine.EngineConfig
  schedule: Schedule
  qtransform: mctx.QTransform
  num_particles: int
  num_second_labels: int
  gumbel_scale: chex.Numeric
  elimination: str
  target_qtransform: mctx.QTransform
  iteration_weights: str = "visits"

  @property
  def num_considered(self) -> int:
    return self.config.num_groups

  def greedify_root(self, halving: HalvingState,
                    qtransform: Optional[mctx.QTransform] = None) -> greedification.Greedified:
    """`I(π_θ, Q_SH)` at the root (with the search's transform unless another is given)."""
    return greedification.greedify(
        prior_logits=self.root.prior_logits, raw_value=self.root.value,
        qvalues=halving.qvalues, visits=halving.visits,
        qtransform=self.qtransform if qtransform is None else qtransform,
        invalid_actions=self.root.invalid_actions)

  def score(self, halving: HalvingState) -> chex.Array:
    """Sequential Halving's ranking score `g + logits + σ(Q̃_SH)`, `[B, A]`."""
    return self.root.gumbel + self.root.prior_logits + self.greedify_root(halving).transformed


def start_iteration(ctx: Context, score: chex.Array,
                    considered: chex.Array) -> tuple[Particles, ActionValues]:
  """Particles at the root split over the `considered` candidates, best-ranked first."""
  group, root_action, _ = sequential_halving.assign_particles(
      score, considered, ctx.num_particles, max_live=ctx.num_considered)
  particles = root_lib.particles_at_root(ctx.root, ctx.model, ctx.num_particles, root_action,
                                         group, label=root_action, params=ctx.params,
                                         rng_key=ctx.search_key)
  values = ActionValues.zeros(root_action.shape[0], ctx.num_particles)
  return particles_lib.start_lambda_return(particles, ctx.config.td_lambda), values


@jax.named_scope("root_step")
def root_step(ctx: Context, state: SearchState, step: ModelStep, keys: engine.StepKeys,
              i: chex.Array) -> tuple[SearchState, engine.StepDiagnostics]:
  """The first step of an iteration: the particles' `s2` samples, re-rooted at after the step
  (`reroot`), or only recorded in a one-step iteration."""
  del keys
  batch_size = step.value.shape[0]
  record_only = lambda: rerooting.record_root_step(state.particles, step, ctx.num_considered,
                                                   ctx.num_second_labels)[1]
  in_one_step_iteration = tuple(ctx.schedule.is_one_step[k]
                                for k in ctx.schedule.iteration_of_step)
  record = _static_or_cond(in_one_step_iteration, i, record_only, lambda: state.root_step,
                           state, step, select=ctx.schedule.selects_root_step)
  diagnostics = engine.StepDiagnostics.zeros(batch_size).replace(
      ess=jnp.full((batch_size,), float(ctx.num_particles)), nonfinite=step.nonfinite)
  return state.replace(root_step=record, successors=step), diagnostics


@jax.named_scope("rerooting")
def reroot(ctx: Context, state: SearchState,
           keys: engine.StepKeys) -> tuple[SearchState, chex.Array]:
  """The particles, at the root, move to their `s2` samples `state.successors` (aligned with
  them) and start an SMCTS there; the samples are kept in the record's order. Also returns
  the distinct second actions per group `[B]`."""
  particles, record = rerooting.reroot(state.particles, state.successors, keys,
                                       ctx.num_considered, ctx.model, ctx.gumbel_scale)
  particles = particles_lib.start_lambda_return(particles, ctx.config.td_lambda)
  successors = state.successors.replace(
      reward=record.reward, discount=record.discount, value=record.value,
      policy=particles.policy, embedding=particles.embedding)
  state = state.replace(particles=particles, root_step=record, successors=successors)
  return state, engine.distinct_labels_per_group(particles, ctx.config.num_labels,
                                                 ctx.config.labels_are_runs)


def successors_of(successors: ModelStep, successor_action: chex.Array, root_action: chex.Array,
                  group: chex.Array, num_actions: int) -> ModelStep:
  """The `s2` samples of each new particle's candidate: the `k`-th particle of a group
  takes sample `k mod n` of the `n` that its candidate's group drew last time.

  `successor_action [B, N]`: the candidate of each sample (one contiguous run per
  candidate); `root_action`, `group` `[B, N]`: the new particles'.
  """
  n = jnp.arange(successor_action.shape[1], dtype=jnp.int32)
  runs = segments.run_starts(successor_action)
  start = segments.segment_sum(jnp.where(runs, n, 0).astype(jnp.float32), successor_action,
                               num_actions)
  count = segments.segment_sum(jnp.ones(successor_action.shape, jnp.float32), successor_action,
                               num_actions)
  take = lambda table: segments.take_along(table, root_action).astype(jnp.int32)
  _, sample = segments.nonnegative_divmod(segments.position_in_segment(group),
                                          jnp.maximum(take(count), 1))
  source = take(start) + sample
  reward, discount, value, policy, embedding = particles_lib.gather_particles(
      (successors.reward, successors.discount, successors.value, successors.policy,
       successors.embedding), source)
  return successors.replace(reward=reward, discount=discount, value=value, policy=policy,
                            embedding=embedding)


def inner_step(ctx: Context, state: SearchState, step: ModelStep, keys: engine.StepKeys,
               i: chex.Array) -> tuple[SearchState, engine.StepDiagnostics]:
  """A later step of an iteration: SMCTS inside each group (no resampling at its last step)."""
  allow_resample = ~jnp.asarray(ctx.schedule.is_last_step)[i]
  particles, values, td_scale, diagnostics = engine.smc_step(
      state.particles, state.values, state.td_scale, step, keys, ctx.config,
      allow_resample=allow_resample, model=ctx.model)
  return state.replace(particles=particles, values=values, td_scale=td_scale), diagnostics


def second_greedification(ctx: Context,
                          state: SearchState) -> tuple[chex.Array, chex.Array, chex.Array]:
  """`V_SMCTS(s2) = Σ_b I(π(s2), Q2)(b)·Q̃2(b)` of every group, `[B, G]`, with the
  statistics it read, `Q2` and the visits per group and second label `[B, G, L]`."""
  record, values = state.root_step, state.values
  spread = functools.partial(rerooting.spread_to_second_labels, group=state.particles.group,
                             record=record)
  visits2 = spread(values.visits)
  qvalues2 = spread(jnp.where(values.visits > 0, values.qvalues, 0.0))
  batch_size, num_groups = record.pooled_value.shape
  flat = lambda x: x.reshape((batch_size * num_groups,) + x.shape[2:])
  inner = greedification.greedify(
      prior_logits=flat(record.pooled_logits), raw_value=flat(record.pooled_value),
      qvalues=flat(qvalues2), visits=flat(visits2), qtransform=ctx.qtransform)
  return inner.value.reshape(batch_size, num_groups), qvalues2, visits2


@jax.named_scope("end_iteration")
def end_iteration(ctx: Context, state: SearchState, iteration: chex.Array,
                  elimination_key: chex.PRNGKey) -> SearchState:
  """Values the iteration's candidates, halves them and restarts the particles at the root."""
  record, particles = state.root_step, state.particles
  # An iteration of one step has no inner search: V_SMCTS is the pooled value.
  no_statistics = jnp.zeros(record.pooled_logits.shape, jnp.float32)
  v_smcts, qvalues2, visits2 = _static_or_cond(
      ctx.schedule.is_one_step, iteration,
      lambda: (record.pooled_value, no_statistics, no_statistics),
      lambda: second_greedification(ctx, state), state)
  improvement = segments.take_along(v_smcts - record.pooled_value, particles.group)
  q_iter, count = sequential_halving.iteration_values(
      record.reward, record.discount, record.value, record.root_action, improvement,
      ctx.root.prior_logits.shape[-1])
  depth = jnp.asarray(ctx.schedule.depths, jnp.float32)[iteration]
  weight = count  # of `Q_i` in `Q_SH`; the visits and diagnostics count particles
  if ctx.iteration_weights == "variance":
    weight = _variance_weights(ctx, state, count)
  halving = sequential_halving.record_iteration(state.halving, q_iter, count, depth, iteration,
                                                weight)
  score = ctx.score(halving)
  if ctx.elimination == "random":
    keep_score = draws.uniform(jax.random.fold_in(elimination_key, iteration), score.shape)
  else:
    keep_score = score
  survivors = jnp.asarray(ctx.schedule.survivors, jnp.int32)[iteration]
  halving = halving.replace(considered=sequential_halving.top_considered(
      keep_score, halving.considered, survivors, max_keep=max(ctx.schedule.survivors)))
  next_root = state.next_root
  if not ctx.model.samples_second_actions:
    next_root = _next_root(state, qvalues2, visits2,
                           root_lib.masked_argmax(score, ~halving.considered))
  particles, values = start_iteration(ctx, score, halving.considered)
  successors = state.successors
  if ctx.schedule.reuse_successors:
    # The next iteration starts at its candidates' `s2` samples from this one (`reroot`).
    successors = successors_of(successors, record.root_action, particles.label,
                               particles.group, ctx.root.prior_logits.shape[-1])
  return engine.match_varying(
      state.replace(particles=particles, values=values, halving=halving, successors=successors,
                    next_root=next_root),
      state)


def _next_root(state: SearchState, qvalues2: chex.Array, visits2: chex.Array,
               winner: chex.Array) -> WarmStart:
  """`Q(s2, ·)` of the best surviving candidate's group this iteration (`warm_start.py`)."""
  of_winner = state.root_step.root_action == winner[:, None]
  group = jnp.max(jnp.where(of_winner, state.particles.group, 0), axis=1)
  return warm_start_lib.successor_estimates(qvalues2, visits2, group,
                                            jnp.sum(of_winner, axis=1), winner)


def _variance_weights(ctx: Context, state: SearchState, count: chex.Array) -> chex.Array:
  """The iteration's weights by inverse variance (`iteration_weights="variance"`): each
  candidate's particles' returns `r + γ·Ĝ(s2)` against the running TD-error variance."""
  record, particles = state.root_step, state.particles
  lw = particles.log_weight
  weight = jnp.exp(lw - segments.segment_max(lw, particles.group, ctx.num_considered,
                                             gather=True))
  returns = record.reward + record.discount * particles.bootstrapped_return
  td_variance = state.td_scale.sum_sq / jnp.maximum(state.td_scale.count, 1.0)
  return sequential_halving.inverse_variance_counts(count, returns, weight, record.root_action,
                                                    td_variance)


def iteration_boundary(ctx: Context, state: SearchState, keys: engine.StepKeys, i: chex.Array,
                       elimination_key: chex.PRNGKey,
                       distinct: chex.Array) -> tuple[SearchState, chex.Array]:
  """The end of an iteration (after its last step), then the re-rooting where the schedule
  asks for one; returns the state and the distinct second actions (`distinct` if none)."""
  # The iteration is read from the schedule inside the branch, at an iteration's end only.
  iteration = lambda: jnp.asarray(ctx.schedule.iteration_of_step, jnp.int32)[i]
  state = _static_or_cond(ctx.schedule.is_last_step, i,
                          lambda: end_iteration(ctx, state, iteration(), elimination_key),
                          lambda: state, state)
  # One call site of the re-rooting: after a root step, and (reusing successors) after an
  # iteration's last step. That step's next actions are discarded (the particles went back
  # to the root), so its keys are free for the re-rooting.
  return _static_or_cond(ctx.schedule.reroots_after_step, i, lambda: reroot(ctx, state, keys),
                         lambda: (state, distinct), state)


def search_step(ctx: Context, keys: engine.StepKeys, elimination_key: chex.PRNGKey, i: chex.Array,
                state: SearchState) -> tuple[SearchState, engine.StepDiagnostics]:
  """One sequential step: one model call, a root or inner step, and an iteration's end."""
  particles, keys = state.particles, keys.at(i)
  step = particles_lib.mutate(ctx.params, keys.model, ctx.model, particles.action,
                              particles.embedding)
  state, diagnostics = _static_or_cond(ctx.schedule.is_root_step, i,
                                       lambda: root_step(ctx, state, step, keys, i),
                                       lambda: inner_step(ctx, state, step, keys, i), state, step,
                                       select=ctx.schedule.selects_root_step)
  # One conditional around the iteration boundary: an ordinary step takes one empty branch,
  # not two (fewer kernels run; docs/performance.md).
  state, distinct = _static_or_cond(
      ctx.schedule.at_boundary, i,
      lambda: iteration_boundary(ctx, state, keys, i, elimination_key,
                                 diagnostics.distinct_actions),
      lambda: (state, diagnostics.distinct_actions), state)
  return state, diagnostics.replace(distinct_actions=distinct)


def _static_or_cond(flags: tuple[bool, ...], index: chex.Array, if_true: Callable,
                    if_false: Callable, *references, select: bool = False):
  """`if_true()` where `flags[index]`, else `if_false()`; only one of them when `flags` is
  constant, else a `lax.cond`, or with `select` both computed and selected leaf by leaf (no
  conditional: on a GPU every `conditional` waits for the device, XLA copying its predicate
  to the host)."""
  if all(flags):
    return if_true()
  if not any(flags):
    return if_false()
  pick = jnp.asarray(flags)[index]
  branch = lambda fn: lambda: engine.match_varying(fn(), *references)
  if select:
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pick, a, b), branch(if_true)(),
                                  branch(if_false)())
  return jax.lax.cond(pick, branch(if_true), branch(if_false))


def tsmcts_policy(
    params: mctx.Params,
    rng_key: chex.PRNGKey,
    root: mctx.RootFnOutput,
    recurrent_fn: mctx.RecurrentFn,
    num_simulations: int,
    invalid_actions: Optional[chex.Array] = None,
    max_depth: Optional[int] = None,
    loop_fn: mctx.LoopFn = jax.lax.fori_loop,
    *,
    qtransform: Optional[mctx.QTransform] = None,
    max_num_considered_actions: int = 16,
    gumbel_scale: chex.Numeric = 1.0,
    num_particles: Optional[int] = None,
    num_steps: Optional[int] = None,
    depth_per_iteration: Optional[int] = None,
    reuse_successors: Optional[bool] = None,
    distinct_copies: bool = False,
    td_lambda: float = 1.0,
    iteration_weights: str = "visits",
    temperature: float = DEFAULT_TEMPERATURE,
    td_scale: str = "running",
    resample: str = "ess",
    ess_threshold: float = 0.5,
    resampling_method: str = "systematic",
    elimination: str = "sequential_halving",
    variant: str = "smctx",
    target_qtransform: Optional[mctx.QTransform] = None,
    warm_start: Optional[WarmStart] = None,
) -> mctx.PolicyOutput[SearchDiagnostics]:
  """Runs Twice Sequential Monte Carlo Tree Search; a drop-in for `mctx.gumbel_muzero_policy`.

  The root's `m1` Gumbel-top candidates go through `K = ceil(log2 m1)`
  Sequential Halving iterations. In each, the `N` particles are split over the
  surviving candidates; each group takes its candidate from the root and runs
  SMCTS from the successor state for `T_SH − 1` more steps; the improved
  policy at the successor applied to its own value estimates (the second
  greedification) gives `Q_i(a)`, combined across iterations by inverse
  variance into `Q_SH(a)`. A search makes about `num_simulations // N`
  sequential `recurrent_fn` calls, each over all `B·N` particles, and keeps
  `O(B·N·A)` memory (the particles' prior logits) whatever the budget.

  In the shape descriptions `B` is the batch size and `A` the number of actions.

  Args:
    params: forwarded to `recurrent_fn`.
    rng_key: random key, consumed.
    root: `mctx.RootFnOutput` with `prior_logits [B, A]`, `value [B]` and
      `embedding [B, ...]`.
    recurrent_fn: mctx's `(params, rng_key, action [B], embedding [B, ...])
      -> (RecurrentFnOutput, next_embedding)`, called as mctx calls it: `[B]`
      rows in root order (one particle of each root), vmapped over the `N`
      particles with one key each (one batched evaluation per step);
      `value` and `prior_logits` are from the point of view of the player to
      move in the next state, `discount` is `gamma`, 0 at termination, `-1`
      for two-player games.
    num_simulations: model evaluations per root (mctx's unit), a Python int.
    invalid_actions: `[B, A]` bool/int mask, nonzero for invalid root actions.
    max_depth: caps the depth `T_SH` of every iteration; with it every
      iteration restarts at the root (no particle goes deeper than `max_depth`).
    loop_fn: `fori_loop`-like function driving the depth loop.
    qtransform: mctx qtransform giving `σ(Q̃)` for the search's decisions
      (Gumbel-top candidates are halved and the action chosen by
      `g + logits + σ(Q̃_SH)`) and for the second greedification at the
      successor states; also for `action_weights` unless `target_qtransform`
      is given. None: the variant's: `SHARP_QTRANSFORM` for "smctx", mctx's
      `qtransform_completed_by_mix_value` for "paper".
    target_qtransform: the qtransform of the policy target `action_weights`
      only. None: the same as `qtransform`.
    warm_start: None (default: the search as mctx's, from nothing) or a
      `smctx.WarmStart` from `smctx.warm_start(previous_output, action)`: the
      previous move's estimates at this root, `Q(s2, ·)` of the action the
      agent took, which seed the Sequential Halving combination `Q_SH` as an
      earlier iteration would (beyond the paper; `warm_start.py`). Exact when
      the model is the deterministic environment; a prior otherwise. Every
      search returns the estimates for the next one in
      `search_tree.extra_data.next_root`.
    max_num_considered_actions: most root candidates `m1` (also at most the
      number of actions and `N`).
    gumbel_scale: scale of the Gumbel noise of the root candidates, of the
      second actions' ranking and of the final action; 0 makes the root
      candidates, the eliminations, the final action and the second actions'
      ranking deterministic given the search's values. What stays random:
      the model (if stochastic), resampling, and the next actions particles
      draw from their priors (below `s2`, and for particles of a group beyond
      the ranked actions).
    num_particles: width `N`; None chooses it from the budget (depth per
      iteration near 2, near 3 for `variant="paper"`; for "smctx" at least
      `sqrt(num_simulations)/2` sequential calls, so that from about 1024
      simulations on a larger budget buys depth too; `docs/algorithms.md`).
      A budget below `N·K` shrinks the width instead of failing.
    num_steps: the number of sequential `recurrent_fn` calls (the search's
      latency on an accelerator); the width is then `num_simulations //
      num_steps`, so `num_simulations` stays the budget and the two set
      latency and width separately. None: both chosen from the budget. Not
      together with `num_particles`.
    depth_per_iteration: the depth `T_SH` per iteration that a default width
      (`num_particles=None`) aims at; None: the variant's (see `variant`).
      Ignored when `num_particles` is given.
    reuse_successors: whether each iteration after the first starts at the
      `s2` samples its candidates drew in the iteration before instead of
      taking the root step again. None: True for "smctx" without `max_depth`,
      False for "paper" or with `max_depth` (True with `max_depth` is
      refused: a reused sample puts particles one step below it). Under
      deterministic dynamics it turns repeated evaluations into depth; with a
      stochastic model a candidate keeps the few `s2` samples of its first
      iteration (`docs/algorithms.md`, "Search quality", measures both).
    distinct_copies: whether, after resampling in the inner search, the
      copies of one particle take distinct next actions (Gumbel-top-k over
      its prior: the first copy's action is a draw from the prior, the others
      the next-best of the same Gumbel perturbation) instead of independent
      draws, which under deterministic dynamics often repeat one evaluation.
      Beyond the paper, off by default: it helps deterministic models at 256
      simulations and costs stochastic ones about as much (`docs/algorithms.md`,
      "Distinct actions for resampled copies"). Discrete actions only (the
      sampled-action policies draw independently).
    td_lambda: λ of the returns the search's value means take in, per
      particle: `v_0 + Σ_j λ^(j−1)·Γ_(j−1)·δ_j`, the `k`-step returns weighted
      `(1−λ)·λ^(k−1)` (the paper's open question 1; `docs/algorithms.md`,
      "TD(λ) backups"). 1 (default) is the bootstrapped return `G + Γ·v`, as
      specified. Below 1 deep returns count less: measured to help deep
      layouts on problems with informative values and to cost Snake, so
      not the default.
    iteration_weights: how Sequential Halving combines a candidate's
      estimates across iterations: "visits" (default, as the paper: each
      weighted by its particle count, `Var ∝ 1/N_i`) or "variance" (by its
      inverse variance, the count shrunk by the weighted spread of its
      particles' returns against the running TD-error variance; the paper's
      open question 2, measured within noise of "visits" in
      `docs/algorithms.md`, "Variance-aware weights").
    temperature: SMC temperature of the TD log-weights.
    td_scale: "running" (TD errors divided by their running RMS) or "none".
    resample: "ess", "always" or "never" (within each candidate's group).
    ess_threshold: a group resamples when `ESS < ess_threshold·N_group`.
    resampling_method: "systematic" or "multinomial".
    elimination: "sequential_halving" keeps the best half of the candidates by
      `g + logits + σ(Q̃_SH)` after each iteration; "random" keeps a uniformly
      random half instead and picks the final action by the same score among
      all candidates ever evaluated (an ablation of Sequential Halving's budget
      allocation: same budget, same estimates, no selection).
    variant: "smctx" (default) or "paper"; measured in `docs/algorithms.md`
      ("Search quality"). "smctx" goes beyond the paper in three ways: a
      depth per iteration near 2, but deep enough that a candidate's
      particles can take distinct paths (`budget.distinct_path_depths`);
      later iterations start at the previous iteration's `s2` samples instead
      of taking the root step again (`reuse_successors`); and a sharper
      transform for the decisions and the target (`SHARP_QTRANSFORM`, mctx's
      with `value_scale=0.3`). "paper" is the paper's algorithm: mctx's
      transform, depth near 3, every iteration from the root; the repro suite
      checks the paper's claims on it. An
      explicit `num_particles`, `depth_per_iteration`, `reuse_successors`,
      `qtransform` or `target_qtransform` overrides either default.

  Returns:
    `mctx.PolicyOutput(action [B] int32, action_weights [B, A] float32,
    search_tree)`: `action` is the Sequential Halving winner,
    `action_weights = softmax(logits + σ(Q̃_SH))` with the `σ` of
    `target_qtransform` (zero on invalid actions),
    `search_tree` an `mctx.Tree` of the root and one child per action
    (visits = evaluations under the action, Q = `Q_SH`, `node_values[:, 0]` =
    search value `Σ_a action_weights(a)·Q̃_SH(a)`) whose `extra_data` is a
    `SearchDiagnostics`.
  """
  validation.check_choice("elimination", elimination, validation.ELIMINATIONS)
  validation.check_choice("variant", variant, validation.TSMCTS_VARIANTS)
  validation.check_positive_int("depth_per_iteration", depth_per_iteration, allow_none=True)
  validation.check_td_lambda(td_lambda)
  validation.check_choice("iteration_weights", iteration_weights, validation.ITERATION_WEIGHTS)
  if reuse_successors is None:
    reuse_successors = variant == "smctx" and max_depth is None
  elif not isinstance(reuse_successors, bool):
    raise ValueError(f"reuse_successors={reuse_successors!r} is not accepted; expected a bool "
                     "or None.")
  elif reuse_successors and max_depth is not None:
    raise ValueError("reuse_successors=True is not accepted with max_depth: a reused s2 sample "
                     "puts an iteration's particles one step deeper than its depth.")
  if not isinstance(distinct_copies, bool):
    raise ValueError(f"distinct_copies={distinct_copies!r} is not accepted; expected a bool.")
  target_depth, distinct_paths = budget.tsmcts_variant_depth(variant, depth_per_iteration)
  # The variant's transform unless one is given; the target follows it (as in mctx).
  if qtransform is None:
    qtransform = (SHARP_QTRANSFORM if variant == "smctx"
                  else mctx.qtransform_completed_by_mix_value)
  target_qtransform = target_qtransform or qtransform
  options = start_lib.SearchOptions(
      num_simulations, num_particles, max_depth, gumbel_scale, max_num_considered_actions,
      temperature, td_scale, resample, ess_threshold, resampling_method, target_depth,
      tsmcts_distinct_paths=distinct_paths, num_steps=num_steps)
  start = start_lib.start_search(rng_key, root, recurrent_fn, invalid_actions, options, "tsmcts")
  layout, batch_size = start.layout, start.batch_size
  # Inner-search labels are slots (`rerooting.py`): one table entry per particle.
  config = dataclasses.replace(start.config, num_groups=layout.num_considered,
                               num_labels=layout.num_particles, labels_are_runs=True,
                               distinct_copies=distinct_copies, td_lambda=td_lambda)
  ctx = Context(
      params=params, search_key=start.search_key, root=start.root, model=start.model,
      config=config,
      schedule=Schedule(layout.depths, layout.considered_per_iteration,
                        reuse_successors=reuse_successors),
      qtransform=qtransform, num_particles=layout.num_particles, gumbel_scale=gumbel_scale,
      elimination=elimination,
      target_qtransform=target_qtransform, iteration_weights=iteration_weights,
      num_second_labels=(layout.num_particles if start.model.samples_second_actions
                         else start.num_actions))

  # Gumbel-top-m1 candidates among valid actions.
  initial_score = start.root.gumbel + start.root.prior_logits
  considered = sequential_halving.top_considered(
      initial_score, ~start.root.invalid_actions, layout.num_considered,
      max_keep=layout.num_considered)
  particles, values = start_iteration(ctx, initial_score, considered)
  halving = HalvingState.start(considered, len(layout.depths))
  if warm_start is not None:
    validation.check_warm_start(warm_start, batch_size, start.num_actions)
    halving = warm_start_lib.seed_halving(halving, warm_start, start.root.invalid_actions)
  state = SearchState(
      particles=particles, values=values, td_scale=engine.TDScale.zeros(batch_size),
      root_step=RootStep.zeros(batch_size, layout.num_particles, layout.num_considered,
                               ctx.num_second_labels),
      halving=halving,
      successors=ModelStep(reward=jnp.zeros_like(values.visits),
                           discount=jnp.zeros_like(values.visits),
                           value=jnp.zeros_like(values.visits), policy=particles.policy,
                           embedding=particles.embedding,
                           nonfinite=jnp.zeros((batch_size,), jnp.int32)),
      next_root=WarmStart.zeros(batch_size, start.num_actions))
  keys = engine.step_keys(start.search_key, layout.num_steps, layout.num_particles,
                          ctx.config.distinct_copies)
  body = functools.partial(search_step, ctx, keys, start.init_key)
  state, diagnostics = engine.run_steps(loop_fn, layout.num_steps, body, state, batch_size,
                                        reference=(params, start.search_key))
  return _policy_output(ctx, state.halving, diagnostics, layout, num_simulations,
                        state.next_root)


def _policy_output(ctx: Context, halving: HalvingState, diagnostics: engine.StepDiagnostics,
                   layout: Layout, num_simulations: int,
                   next_root: WarmStart) -> mctx.PolicyOutput:
  """The Sequential Halving winner, `I(π_θ, Q_SH)` and the summary tree."""
  greedified = ctx.greedify_root(halving)
  score = ctx.root.gumbel + ctx.root.prior_logits + greedified.transformed
  # The winner is the best-scored survivor of the last halving; the random
  # ablation changes only where the budget went, so it chooses among every
  # candidate that was evaluated.
  eligible = (halving.visits > 0) if ctx.elimination == "random" else halving.considered
  action = root_lib.masked_argmax(score, ~eligible)
  target = (greedified if ctx.target_qtransform is ctx.qtransform
            else ctx.greedify_root(halving, ctx.target_qtransform))
  # The search value is the value of the returned policy target, `Σ_a w(a)·Q̃(a)`.
  return root_lib.policy_output(
      ctx.root, action=action, action_weights=target.policy, tree=target.tree,
      step_diagnostics=diagnostics, particles_per_action=halving.particles_per_action,
      num_considered=halving.num_considered, depths=layout.depths,
      num_particles=ctx.num_particles, num_simulations=num_simulations, next_root=next_root)
