"""The particle engine shared by SMC, SMCTS and TSMCTS.

`smc_step` is one depth step of the particle system after its model call:
TD weighting, back-up along each particle, back-propagation of weighted
returns into the root statistics, ESS-triggered resampling within groups, and
the next action of every particle. `run_steps` drives any per-step body with
the user's `loop_fn` (mctx's `fori_loop` convention) and records per-step
diagnostics in one fixed `[B, num_steps, 5]` table (one write a step), so the
search never stores anything that grows with `num_simulations` beyond five
scalars per step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import chex
import jax
import jax.numpy as jnp

from smctx._src import backpropagation
from smctx._src import draws
from smctx._src import particles as particles_lib
from smctx._src import segments
from smctx._src import sequential_halving
from smctx._src.base import ActionModel
from smctx._src.base import LoopFn
from smctx._src.base import PytreeDataclass, pytree_dataclass
from smctx._src.particles import ModelStep, Particles

# SMC temperature of the TD log-weights, for TD errors in units of their running
# RMS (`td_scale="running"`); measured in docs/algorithms.md, "Temperature".
DEFAULT_TEMPERATURE = 0.3


@dataclasses.dataclass(frozen=True)
class EngineConfig:
  """Static settings of the particle engine.

  temperature: SMC temperature of the TD log-weights (`lw += δ/temperature`).
  td_scale: "running" divides `δ` by the running root-mean-square of the TD
    errors seen so far at that root (temperature is then unit-free);
    "none" uses `δ` in reward units.
  resample: "ess" (when `ESS < ess_threshold·N_group`), "always" or "never".
  ess_threshold: fraction of the group size below which a group resamples.
  resampling_method: "systematic" or "multinomial".
  num_groups: resampling groups per root (1, or `m1` for TSMCTS).
  num_labels: values a particle label can take: the number of actions (SMC,
    SMCTS) or of slots (TSMCTS); the size of the back-propagated table.
  labels_are_runs: every label is one contiguous run of particles (TSMCTS's
    slots; resampling keeps runs contiguous), so label sums are `O(B·N)`.
  backpropagate: whether to keep the running means of returns per label
    (SMCTS, TSMCTS); SMC's target reads only its final particles.
  distinct_copies: after resampling, the copies of one particle take its
    actions without replacement (Gumbel-top-k over its prior, `copy_actions`)
    instead of independent draws; discrete actions only.
  td_lambda: the λ of the returns the labels' means take in (1: the
    bootstrapped return `G + Γ·v`; `particles.start_lambda_return`).
  """
  temperature: float
  td_scale: str
  resample: str
  ess_threshold: float
  resampling_method: str
  num_groups: int
  num_labels: int
  labels_are_runs: bool = False
  backpropagate: bool = True
  distinct_copies: bool = False
  td_lambda: float = 1.0


@pytree_dataclass(frozen=True)
class TDScale(PytreeDataclass):
  """Running second moment of the TD errors of each root: `[B]` each."""
  sum_sq: chex.Array
  count: chex.Array

  @classmethod
  def zeros(cls, batch_size: int) -> "TDScale":
    z = jnp.zeros((batch_size,), jnp.float32)
    return cls(sum_sq=z, count=z)


@pytree_dataclass(frozen=True)
class StepDiagnostics(PytreeDataclass):
  """What one depth step reports, `[B]` each (see `SearchDiagnostics`)."""
  ess: chex.Array
  distinct_actions: chex.Array
  resampled: chex.Array
  num_resamples: chex.Array
  nonfinite: chex.Array

  @classmethod
  def zeros(cls, batch_size: int) -> "StepDiagnostics":
    return cls(ess=jnp.zeros((batch_size,), jnp.float32),
               distinct_actions=jnp.zeros((batch_size,), jnp.float32),
               resampled=jnp.zeros((batch_size,), bool),
               num_resamples=jnp.zeros((batch_size,), jnp.int32),
               nonfinite=jnp.zeros((batch_size,), jnp.int32))


def distinct_labels_per_group(particles: Particles, num_labels: int,
                              labels_are_runs: bool = False) -> chex.Array:
  """Mean over non-empty groups of the number of distinct labels carried. `[B]`.

  Labels never span groups (SMC and SMCTS have one group; a TSMCTS slot
  belongs to one group), so this is the number of labels carried over the
  number of groups, which are contiguous along the particle axis. `O(B·(N + L))`;
  `O(B·N)` where every label is one contiguous run (`labels_are_runs`), whose
  labels carried are its runs.
  """
  if labels_are_runs:
    carried = segments.run_starts(particles.label)  # [B, N]
  else:
    ones = jnp.ones(particles.label.shape, jnp.float32)
    carried = segments.segment_max(ones, particles.label, num_labels) > 0  # [B, L]
  groups = jnp.sum(segments.run_starts(particles.group), axis=-1)
  return (jnp.sum(carried, axis=-1) / groups).astype(jnp.float32)


@pytree_dataclass(frozen=True)
class StepKeys(PytreeDataclass):
  """The keys of one depth step; with a leading `[S]` axis, of every step (`step_keys`).

  model: `[N]` keys, one per particle slice, of the model call (`particles.mutate`);
  resample: resampling's key (and, in a TSMCTS re-rooting step, which does not
    resample, the second actions' Gumbel noise's);
  sample: `[N]` keys, one per particle slice, of the next actions (`ActionModel.sample`);
  copies: the Gumbel noise's key of `distinct_copies` (`copy_actions`).
  """
  model: chex.Array
  resample: chex.Array
  sample: chex.Array
  copies: chex.Array

  def at(self, i: chex.Array) -> "StepKeys":
    """The keys of step `i`."""
    return jax.tree_util.tree_map(lambda k: k[i], self)


def step_keys(rng_key: chex.PRNGKey, num_steps: int, num_particles: int,
              distinct_copies: bool = False) -> StepKeys:
  """The keys of every step, `StepKeys` of `[num_steps, ...]`, split once before the loop.

  Step `i` has three keys, `jax.random.split(rng_key, (num_steps, 3))[i]`: the
  model's, resampling's and the next actions' (with `distinct_copies`, split in
  two again: the draw's and the copies' Gumbel noise's); the model's and the
  draw's are split per particle slice here too. On CPU each `split` is a
  threefry loop of its own (about 20 kernels), so none runs inside the loop.
  `O(num_steps·N)` keys, less than the per-step diagnostics `[B, num_steps]`
  whenever `N ≤ 2·B`; a step's keys are those it would split for itself.
  """
  keys = draws.split(rng_key, (num_steps, 3))
  slices = jax.vmap(lambda key: particles_lib.particle_slice_keys(key, num_particles))
  sample, copies = keys[:, 2], keys[:, 2]
  if distinct_copies:
    pairs = jax.vmap(jax.random.split)(keys[:, 2])
    sample, copies = pairs[:, 0], pairs[:, 1]
  return StepKeys(model=slices(keys[:, 0]), resample=keys[:, 1], sample=slices(sample),
                  copies=copies)


def scaled_td(particles: Particles, step: ModelStep, td_scale: TDScale,
              config: EngineConfig) -> tuple[chex.Array, TDScale]:
  """TD advantages `δ [B, N]` (0 once terminated), in units of their running RMS if asked."""
  delta = particles_lib.td_log_weight_increment(particles, step, 1.0)
  if config.td_scale != "running":
    return delta, td_scale
  alive = (particles.discount_product != 0).astype(jnp.float32)
  td_scale = TDScale(sum_sq=td_scale.sum_sq + jnp.sum(alive * delta**2, axis=-1),
                     count=td_scale.count + jnp.sum(alive, axis=-1))
  rms = jnp.sqrt(td_scale.sum_sq / jnp.maximum(td_scale.count, 1.0))
  return delta / jnp.maximum(rms, 1e-6)[:, None], td_scale


def resample_within_groups(rng_key: chex.PRNGKey, particles: Particles, config: EngineConfig,
                           allow_resample: chex.Array
                           ) -> tuple[Particles, chex.Array, chex.Array, chex.Array]:
  """Resamples the groups whose ESS is low (or every group, or none: `config.resample`).

  Returns `(particles, group_resamples [B, G], ess [B, G], source [B, N])`,
  `source` being the particle each one is a copy of (itself where its group
  kept its particles; non-decreasing, so copies are contiguous runs); a
  resampled group's log-weights restart at 0.
  """
  ess, size = particles_lib.group_ess(particles.log_weight, particles.group, config.num_groups)
  if config.resample == "ess":
    group_resamples = ess < config.ess_threshold * size
  elif config.resample == "always":
    group_resamples = size > 0
  else:
    group_resamples = jnp.zeros_like(size, bool)
  group_resamples = group_resamples & (size > 0) & allow_resample
  ancestors = particles_lib.resampling_ancestors(
      rng_key, particles.log_weight, particles.group, config.num_groups,
      config.resampling_method)
  particle_resamples = segments.take_along(group_resamples, particles.group)
  n = jnp.arange(particles.value.shape[1])[None]
  source = jnp.where(particle_resamples, ancestors, n).astype(jnp.int32)
  resampled = particles_lib.gather_particles(particles, source)
  # Copies stay in their group, and a particle that is not resampled is its own source, so
  # the groups and the log-weights need no gather (XLA drops the unused ones).
  particles = resampled.replace(
      group=particles.group, log_weight=jnp.where(particle_resamples, 0.0, particles.log_weight))
  return particles, group_resamples, ess, source


def copy_actions(rng_key: chex.PRNGKey, logits: chex.Array, source: chex.Array,
                 sampled: chex.Array) -> chex.Array:
  """Next actions `[B, N]` where the copies of a particle take distinct actions.

  The copies of one particle (equal `source`, a contiguous run) share its
  state and prior, and one Gumbel draw per action: the `k`-th copy takes the
  `k`-th action of `g + logits` (Gumbel-top-k, sampling without replacement,
  as stochastic beam search does); the first copy's action is an exact draw
  from the prior. Copies beyond the number of actions with mass take `sampled`.
  """
  copy = segments.position_in_segment(source)
  gumbel = segments.take_along(draws.gumbel(rng_key, logits.shape), source[..., None])
  has_mass = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)) > 0
  ranked = sequential_halving.action_at_position(
      jnp.where(has_mass, gumbel + logits, -jnp.inf), copy, source.shape[-1])
  return jnp.where(copy < jnp.sum(has_mass, axis=-1), ranked, sampled).astype(jnp.int32)



def smc_step(particles: Particles, values: backpropagation.ActionValues, td_scale: TDScale,
             step: ModelStep, keys: StepKeys, config: EngineConfig,
             allow_resample: chex.Array, model: ActionModel
             ) -> tuple[Particles, backpropagation.ActionValues, TDScale, StepDiagnostics]:
  """One depth step after the model call `step`.

  Weighting by TD advantage, back-up along each particle, back-propagation of
  weighted returns into the root statistics, resampling within groups, and the
  next action of every particle. `keys`: the step's (`step_keys`); `model`
  (an action model, `actions.py`) draws the next actions. Resampling is
  skipped where `allow_resample` is False (the last step of an SMC run:
  resampling then only adds noise, `algorithms.md` section 8.4).
  """
  chex.assert_equal_shape([particles.value, step.value, step.reward, step.discount])
  with jax.named_scope("weighting"):
    delta, td_scale = scaled_td(particles, step, td_scale, config)
    particles = particles_lib.advance(particles, step, delta / config.temperature,
                                      config.td_lambda)
  if config.backpropagate:  # before resampling: every particle's return counts once
    with jax.named_scope("backup"):
      values = backpropagation.update(values, particles, config.labels_are_runs)
  with jax.named_scope("resampling"):
    particles, group_resamples, ess, source = resample_within_groups(
        keys.resample, particles, config, allow_resample)
  # Next action of every particle, drawn after resampling so that copies of a
  # particle explore independently (or, with `distinct_copies`, take distinct actions).
  with jax.named_scope("next_actions"):
    if config.distinct_copies and not model.samples_second_actions:
      action = copy_actions(keys.copies, particles.policy, source,
                            model.sample(keys.sample, particles.policy))
    else:
      action = model.sample(keys.sample, particles.policy)
    particles = particles.replace(action=action)
  with jax.named_scope("diagnostics"):
    diagnostics = StepDiagnostics(
        ess=jnp.sum(ess, axis=-1),
        distinct_actions=distinct_labels_per_group(particles, config.num_labels,
                                                  config.labels_are_runs),
        resampled=jnp.any(group_resamples, axis=-1),
        num_resamples=jnp.sum(group_resamples, axis=-1).astype(jnp.int32),
        nonfinite=step.nonfinite)
  return particles, values, td_scale, diagnostics


def _varying_axes(x: chex.Array) -> frozenset:
  """Mesh axes a value varies over inside `shard_map` (empty outside)."""
  aval = jax.typeof(x)
  manual = getattr(aval, "manual_axis_type", None)
  if manual is not None:
    return frozenset(manual.varying)
  return frozenset(getattr(aval, "vma", ()))


def match_varying(tree: chex.ArrayTree, *references: chex.ArrayTree) -> chex.ArrayTree:
  """Casts every leaf of `tree` to vary over the mesh axes any leaf (or reference) varies over.

  Inside `shard_map`, a loop carry or `lax.cond` branch built from constants
  (zeros, fixed diagnostics) does not vary over the mesh axis, while the
  values computed from the sharded roots do; JAX rejects the mismatch. Outside
  `shard_map` this is the identity.
  """
  leaves = jax.tree_util.tree_leaves((tree, references))
  axes = frozenset().union(*(_varying_axes(x) for x in leaves)) if leaves else frozenset()
  if not axes:
    return tree

  def cast(x: chex.Array) -> chex.Array:
    missing = axes - _varying_axes(x)
    return jax.lax.pcast(x, tuple(sorted(missing)), to="varying") if missing else x

  return jax.tree_util.tree_map(cast, tree)


@pytree_dataclass(frozen=True)
class DiagnosticsTable(PytreeDataclass):
  """Every step's `StepDiagnostics` as one float32 table `[B, num_steps, fields]`, written
  once a step: the counts and flags are small integers, exact in float32."""
  table: chex.Array

  @classmethod
  def zeros(cls, batch_size: int, num_steps: int) -> "DiagnosticsTable":
    num_fields = len(jax.tree_util.tree_leaves(StepDiagnostics.zeros(batch_size)))
    return cls(table=jnp.zeros((batch_size, num_steps, num_fields), jnp.float32))

  def write(self, i: chex.Array, diagnostics: StepDiagnostics) -> "DiagnosticsTable":
    """The table with step `i`'s row set to `diagnostics` (`[B]` each)."""
    with jax.named_scope("diagnostics"):
      row = jnp.stack([x.astype(jnp.float32) for x in jax.tree_util.tree_leaves(diagnostics)],
                      axis=-1)
      return self.replace(table=jax.lax.dynamic_update_index_in_dim(self.table, row, i, axis=1))

  def read(self, i: chex.Array) -> StepDiagnostics:
    """Step `i`'s row, `[B]` each, in the fields' own dtypes."""
    return self._unpack(jax.lax.dynamic_index_in_dim(self.table, i, axis=1, keepdims=False))

  def columns(self) -> StepDiagnostics:
    """Every step, `[B, num_steps]` each, in the fields' own dtypes."""
    return self._unpack(self.table)

  def _unpack(self, rows: chex.Array) -> StepDiagnostics:
    columns = iter(jnp.moveaxis(rows, -1, 0))
    return jax.tree_util.tree_map(lambda x: next(columns).astype(x.dtype),
                                  StepDiagnostics.zeros(self.table.shape[0]))


def run_steps(loop_fn: LoopFn, num_steps: int, body: Callable, carry: chex.ArrayTree,
              batch_size: int, reference: chex.ArrayTree = ()
              ) -> tuple[chex.ArrayTree, StepDiagnostics]:
  """Runs `carry, diag = body(i, carry)` for `i < num_steps` with `loop_fn`.

  Returns `(carry, diagnostics)` where each diagnostics field is stacked to
  `[B, num_steps]`. `reference`: inputs of the body (e.g. the rng key) whose
  mesh variance the carry must share inside `shard_map`.
  """
  def loop_body(i: chex.Array, state: tuple) -> tuple:
    carry, table = state
    carry, diagnostics = body(i, carry)
    return carry, table.write(i, diagnostics)

  table = DiagnosticsTable.zeros(batch_size, num_steps)
  carry, table = loop_fn(0, num_steps, loop_body, match_varying((carry, table), reference))
  return carry, table.columns()


def run_smc(params: chex.ArrayTree, rng_key: chex.PRNGKey, model: ActionModel,
            particles: Particles, num_steps: int, config: EngineConfig, loop_fn: LoopFn
            ) -> tuple[Particles, backpropagation.ActionValues, StepDiagnostics]:
  """`num_steps` SMC depth steps from `particles` sitting at the root (SMC, SMCTS).

  `model` is an action model (`actions.py`) wrapping the user's `recurrent_fn`.

  Each particle's label is its root action and there is one group.
  Returns `(particles, values, StepDiagnostics [B, num_steps])`, `values`
  being the back-propagated running means `[B, num_labels]`.
  """
  batch_size = particles.value.shape[0]
  values = backpropagation.ActionValues.zeros(batch_size, config.num_labels)
  keys = step_keys(rng_key, num_steps, particles.value.shape[1], config.distinct_copies)
  particles = particles_lib.start_lambda_return(particles, config.td_lambda)

  def body(i: chex.Array, carry: tuple) -> tuple:
    (particles, values, td_scale), keys_i = carry, keys.at(i)
    step = particles_lib.mutate(params, keys_i.model, model, particles.action,
                                particles.embedding)
    particles, values, td_scale, diag = smc_step(
        particles, values, td_scale, step, keys_i, config, allow_resample=i < num_steps - 1,
        model=model)
    return (particles, values, td_scale), diag

  (particles, values, _), diagnostics = run_steps(
      loop_fn, num_steps, body, (particles, values, TDScale.zeros(batch_size)), batch_size,
      reference=(params, rng_key))
  return particles, values, diagnostics
