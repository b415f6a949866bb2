"""Particles: mutation (one model call), TD weighting, ESS and resampling.

Shapes: `B` roots, `N` particles per root, `A` actions. Every function here
works on the whole `[B, N]` particle system at once; nothing loops over
particles or actions in Python.

Resampling is restricted to *groups*: a particle only ever copies a particle
of its own group. SMC and SMCTS use a single group; TSMCTS uses one group per
root candidate so that a particle never moves to another root action
(`algorithms.md` section 3). Groups are laid out contiguously along the
particle axis (group ids are non-decreasing in `n`), which lets one
`searchsorted` over a piecewise cumulative distribution resample every group
of every root at once.
"""

from __future__ import annotations

from typing import Callable, Optional

import chex
import jax
import jax.numpy as jnp

from smctx._src import draws
from smctx._src import segments
from smctx._src.base import ActionModel
from smctx._src.base import PytreeDataclass, pytree_dataclass


@pytree_dataclass(frozen=True)
class Particles(PytreeDataclass):
  """The particle system of a batch of searches.

  embedding: `[B, N, ...]` model state of each particle.
  action: the action the particle takes at the next step: `[B, N]` int32 for
    discrete actions, any pytree of `[B, N, ...]` arrays for sampled ones.
  policy: the policy at the particle's current state, from which its next
    action is drawn: prior logits `[B, N, A]` for discrete actions, the model's
    `policy` pytree `[B, N, ...]` for sampled ones.
  value: `[B, N]` network value of the particle's current state, from the
    point of view of the player to move there.
  returns: `[B, N]` discounted reward sum `G` since the search root, from the
    root player's point of view.
  discount_product: `[B, N]` product of discounts `Γ` since the root; 0 once
    the particle has terminated.
  log_weight: `[B, N]` log importance weight since the last resample.
  group: `[B, N]` int32 resampling group (contiguous along `N`).
  label: `[B, N]` int32 the statistic the particle's returns feed (its root
    action for SMC/SMCTS; for TSMCTS its slot, which stands for its group and
    second action).
  """
  embedding: chex.ArrayTree
  action: chex.ArrayTree
  policy: chex.ArrayTree
  value: chex.Array
  returns: chex.Array
  discount_product: chex.Array
  log_weight: chex.Array
  group: chex.Array
  label: chex.Array
  estimate: Optional[chex.Array] = None
  trace: Optional[chex.Array] = None

  @property
  def bootstrapped_return(self) -> chex.Array:
    """The particle's estimate of the value of its label: `Ĝ = G + Γ·v`, or with
    `td_lambda < 1` its λ-return along the path (`start_lambda_return`)."""
    if self.estimate is not None:
      return self.estimate
    return self.returns + self.discount_product * self.value


def start_lambda_return(particles: Particles, td_lambda: float) -> Particles:
  """Starts the λ-return of particles at the state they estimate from (the root, or `s2`).

  `G^λ = v_0 + Σ_j λ^(j−1)·Γ_(j−1)·δ_j` (`estimate`; `trace` is `λ^(j−1)·Γ_(j−1)`): the
  `k`-step returns weighted `(1−λ)·λ^(k−1)`, the deepest taking the rest. With
  `td_lambda = 1` the sum telescopes to `Ĝ = G + Γ·v`, which is kept instead (no state).
  """
  if td_lambda == 1.0:
    return particles.replace(estimate=None, trace=None)
  return particles.replace(estimate=particles.value, trace=jnp.ones_like(particles.value))


def broadcast_to_particles(tree: chex.ArrayTree, num_particles: int) -> chex.ArrayTree:
  """`[B, ...]` -> `[B, N, ...]` by repeating each root's entry."""
  return jax.tree_util.tree_map(
      lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], num_particles) + x.shape[1:]), tree)


def over_particle_slices(fn: Callable, slice_keys: chex.Array,
                         *trees: chex.ArrayTree) -> chex.ArrayTree:
  """`fn(key_n, *slice_n)` for every particle slice `n`, as one batched call.

  The user's functions see what mctx shows them: `[B, ...]` rows, one per
  root, in root order. `trees` are `[B, N, ...]`; slice `n` is `[B, ...]`,
  the `n`-th particle of every root, and gets its own key `key_n` of
  `slice_keys` (`[N]`, `particle_slice_keys`), so that a stochastic function
  draws independently for the particles of one root. `jax.vmap` over the
  particle axis batches the `N` slices into one evaluation of `B·N` rows
  (a deterministic function's keys are dead code and cost nothing). Outputs
  are stacked on axis 1: `[B, ...]` -> `[B, N, ...]`.
  """
  return jax.vmap(fn, in_axes=(0,) + (1,) * len(trees), out_axes=1)(slice_keys, *trees)


def particle_slice_keys(rng_key: chex.PRNGKey, num_particles: int) -> chex.Array:
  """The key of every particle slice, `[N]` keys: slice `n` draws with key `n`.

  The engines split every step's before the search loop (`engine.step_keys`),
  where on CPU each `split` is a threefry loop of its own.
  """
  return jax.random.split(rng_key, num_particles)


def uniform_per_slice(slice_keys: chex.Array, shape: tuple[int, ...]) -> chex.Array:
  """`[B, N, ...]` uniforms, slice `n` drawn as `jax.random.uniform(key_n, [B, ...])`.

  The keys are those of `over_particle_slices`, so that a function drawing
  `uniform(key, [B, ...])` per slice there draws these very numbers. Only the
  draw is vmapped: the arithmetic around it then runs on `[B, N, ...]` arrays
  without the particle axis being moved in and out of the vmap.
  """
  chex.assert_shape(slice_keys, (shape[1],) + slice_keys.shape[1:])
  return jax.vmap(lambda key: draws.uniform(key, (shape[0],) + tuple(shape[2:])),
                  out_axes=1)(slice_keys)


@pytree_dataclass(frozen=True)
class ModelStep(PytreeDataclass):
  """One `recurrent_fn` evaluation of every particle, sanitised.

  reward, discount, value: `[B, N]` float32; policy: the policy at the
  successor, `[B, N, ...]` (prior logits `[B, N, A]` for discrete actions);
  embedding: `[B, N, ...]`; nonfinite: `[B]` int32, the number of particles
  whose model output had a NaN or infinity (replaced by finite values).
  """
  reward: chex.Array
  discount: chex.Array
  value: chex.Array
  policy: chex.ArrayTree
  embedding: chex.ArrayTree
  nonfinite: chex.Array


@jax.named_scope("model")
def mutate(params: chex.ArrayTree, slice_keys: chex.Array, model: ActionModel,
           action: chex.ArrayTree, embedding: chex.ArrayTree) -> ModelStep:
  """Calls the model once on all `B·N` particles.

  `model` is an action model (`smctx._src.actions`): it calls the user's
  `recurrent_fn`, checks its outputs at trace time and sanitises the policy it
  returns. The call is lifted over the particle axis (`over_particle_slices`):
  `recurrent_fn` sees `[B]` rows in root order, as under mctx, with one key
  per particle slice (`slice_keys [N]`), and `jax.vmap` makes it one batched
  evaluation.

  Non-finite rewards, values and discounts are replaced by 0 and counted, so
  that a NaN from the model is reported in the diagnostics instead of
  spreading into the search targets.
  """
  output = over_particle_slices(
      lambda key, a, e: model.call(params, key, a, e), slice_keys, action, embedding)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  reward, discount, value = f32(output.reward), f32(output.discount), f32(output.value)
  bad = ~(jnp.isfinite(reward) & jnp.isfinite(discount) & jnp.isfinite(value)) | output.bad_policy
  return ModelStep(
      reward=jnp.where(jnp.isfinite(reward), reward, 0.0),
      discount=jnp.where(jnp.isfinite(discount), discount, 0.0),
      value=jnp.where(jnp.isfinite(value), value, 0.0),
      policy=output.policy,
      embedding=output.next_embedding,
      nonfinite=jnp.sum(bad, axis=-1).astype(jnp.int32))


def sanitize_logits(logits: chex.Array) -> chex.Array:
  """Max-subtracted logits with `-inf` replaced by a finite very low logit.

  A row whose logits are all `-inf` becomes uniform instead of NaN.
  """
  finite_max = jnp.max(jnp.where(jnp.isfinite(logits), logits, -jnp.inf), axis=-1, keepdims=True)
  finite_max = jnp.where(jnp.isfinite(finite_max), finite_max, 0.0)
  low = jnp.finfo(jnp.float32).min
  logits = jnp.clip(logits - finite_max, low, 0.0)
  return jnp.where(jnp.isnan(logits), low, logits)


def td_log_weight_increment(particles: Particles, step: ModelStep,
                            temperature: chex.Numeric) -> chex.Array:
  """`δ/temperature` with `δ = reward + discount·value' − value`; 0 once terminated.

  `δ` is the mover's advantage at that step, so two-player games
  (`discount = −1`) need no sign flip (`algorithms.md` section 8.10).
  """
  delta = step.reward + step.discount * step.value - particles.value
  alive = particles.discount_product != 0
  return jnp.where(alive, delta / temperature, 0.0)


def advance(particles: Particles, step: ModelStep, log_weight_increment: chex.Array,
            td_lambda: float = 1.0) -> Particles:
  """Moves every particle to its successor and backs its return up along it (and its
  λ-return, `start_lambda_return`)."""
  advanced = particles.replace(
      embedding=step.embedding,
      policy=step.policy,
      value=step.value,
      returns=particles.returns + particles.discount_product * step.reward,
      discount_product=particles.discount_product * step.discount,
      log_weight=particles.log_weight + log_weight_increment)
  if particles.estimate is None or particles.trace is None:
    return advanced
  delta = td_log_weight_increment(particles, step, 1.0)
  return advanced.replace(estimate=particles.estimate + particles.trace * delta,
                          trace=particles.trace * td_lambda * step.discount)


def group_ess(log_weight: chex.Array, group: chex.Array, num_groups: int):
  """Effective sample size `(Σw)²/Σw²` of each group.

  Returns `(ess [B, G], size [B, G])`, `size` being the number of particles in
  each group (0 for empty groups, whose ESS is 0).
  """
  w = jnp.exp(log_weight - segments.segment_max(log_weight, group, num_groups, gather=True))
  sum_w = segments.segment_sum(w, group, num_groups)
  sum_w2 = segments.segment_sum(w * w, group, num_groups)
  size = segments.segment_sum(jnp.ones_like(w), group, num_groups)
  ess = jnp.where(size > 0, sum_w * sum_w / jnp.maximum(sum_w2, 1e-30), 0.0)
  return ess, size


def resampling_ancestors(rng_key: chex.PRNGKey, log_weight: chex.Array, group: chex.Array,
                         num_groups: int, method: str) -> chex.Array:
  """Ancestor index of every particle, drawn within its own group.

  Systematic resampling: one uniform per group, `N_g` evenly spaced positions
  in the group's cumulative weights. Multinomial: one uniform per particle.
  Every group is resampled; the caller decides which groups keep the result.
  Ancestors are non-decreasing along the particle axis, so a run of particles
  with equal labels stays one contiguous run (TSMCTS's slots rely on it).
  Returns `[B, N]` int32 indices into the particle axis.
  """
  batch_size, num_particles = log_weight.shape
  # Normalised weights within each group.
  w = jnp.exp(log_weight - segments.segment_max(log_weight, group, num_groups, gather=True))
  w = w / segments.segment_sum(w, group, num_groups, gather=True)
  idx = jnp.arange(num_particles)
  is_start = jnp.concatenate(
      [jnp.ones((batch_size, 1), bool), group[:, 1:] != group[:, :-1]], axis=1)
  # Position of each particle's group among the groups present (0, 1, ...).
  rank = jnp.cumsum(is_start, axis=1) - 1
  start = jax.lax.cummax(jnp.where(is_start, idx, 0), axis=1)
  size = segments.segment_sum(jnp.ones_like(w), group, num_groups, gather=True)
  end = start + size.astype(jnp.int32) - 1
  # Piecewise CDF: group k occupies (k, k+1].
  cdf = jnp.cumsum(w, axis=1)
  cdf_before_group = segments.take_along(cdf - w, start)
  cdf = rank + (cdf - cdf_before_group)
  if method == "systematic":
    u = draws.uniform(rng_key, (batch_size, num_groups))
    u = segments.take_along(u, group)
    positions = rank + (idx - start + u) / size
  elif method == "multinomial":
    # Sorted, so that ancestors are non-decreasing as with systematic
    # resampling: a run of equal labels stays one run (TSMCTS's slots).
    positions = jnp.sort(rank + draws.uniform(rng_key, (batch_size, num_particles)), axis=1)
  else:  # validated earlier; kept for direct callers.
    raise ValueError(f"resampling_method={method!r}; expected 'systematic' or 'multinomial'.")
  # Up to 128 particles per root, compare all positions with all CDF entries
  # (`O(N²)`, vectorised); XLA's default is a while loop of `log2 N` steps,
  # each a few small kernels, which cost more than the comparisons on CPU.
  search_method = "compare_all" if num_particles <= 128 else "scan"
  ancestors = jax.vmap(lambda c, p: jnp.searchsorted(c, p, method=search_method))(cdf, positions)
  # Float round-off at group boundaries must never move a particle across groups.
  return jnp.clip(ancestors, start, end).astype(jnp.int32)


def gather_particles(tree: chex.ArrayTree, ancestors: chex.Array) -> chex.ArrayTree:
  """Gathers every `[B, N, ...]` leaf of `tree` (e.g. `Particles`) along `N` from `ancestors`."""
  def gather(x: chex.Array) -> chex.Array:
    index = ancestors.reshape(ancestors.shape + (1,) * (x.ndim - 2))
    return segments.take_along(x, index)
  return jax.tree_util.tree_map(gather, tree)


# Up to this many actions, sampling's cumulative sums are a matrix product with
# a triangular matrix of ones (`O(A²)` per particle, on the BLAS path); XLA's
# cumsum on CPU (a reduce-window) was slower: sampling took 0.27 instead of
# 0.44 ms at `B·N = 4096`, `A = 32`. Larger action spaces use `cumsum`.
MATMUL_CUMSUM_MAX_ACTIONS = 128


def sample_actions(rng_key: chex.PRNGKey, prior_logits: chex.Array,
                   uniform: chex.Array | None = None) -> chex.Array:
  """`a ~ Categorical(softmax(prior_logits))` for every particle, `[B, N]` int32.

  Inverse-CDF sampling with one uniform per particle. `jax.random.categorical`
  draws a Gumbel per *action* (`B·N·A` random numbers), which on CPU cost
  more than the rest of an SMC step (3.3 of ~10 ms at `B·N = 4096`, `A = 32`).
  The CDF is left unnormalised (the uniform is scaled by its total instead).
  The draw is the first action *with mass* whose CDF exceeds `u`, so actions
  with probability 0 are never drawn, whatever the rounding of the sums, and
  the clip stops at the last action with mass. `uniform` (`[..., 1]` in
  `[0, 1)`), when given, replaces the draw from `rng_key`.
  """
  num_actions = prior_logits.shape[-1]
  mass = jnp.exp(prior_logits - jnp.max(prior_logits, axis=-1, keepdims=True))
  if num_actions <= MATMUL_CUMSUM_MAX_ACTIONS:
    upper = jnp.triu(jnp.ones((num_actions, num_actions), mass.dtype))
    cdf = jnp.einsum("...a,ac->...c", mass, upper, precision=jax.lax.Precision.HIGHEST)
  else:
    cdf = jnp.cumsum(mass, axis=-1)
  if uniform is None:
    uniform = draws.uniform(rng_key, prior_logits.shape[:-1] + (1,))
  u = uniform * cdf[..., -1:]
  index = jnp.arange(num_actions)
  has_mass = mass > 0
  action = jnp.min(jnp.where((cdf > u) & has_mass, index, num_actions), axis=-1)
  last_with_mass = jnp.max(jnp.where(has_mass, index, 0), axis=-1)
  return jnp.minimum(action, last_with_mass).astype(jnp.int32)
