"""Sequential Halving at the root of TSMCTS (`algorithms.md` section 3).

Candidates are ranked by `g(a) + logits(a) + σ(Q̃_SH(a))` (Gumbel-top-m1 in
the first iteration, when no `Q_SH` exists yet). The `N` particles are split
into contiguous groups, one per live candidate, `N // m_i` each, the particles
left over going to the best-ranked candidates. Shapes stay static: the number
of live candidates may differ per row (rows with fewer valid actions), so the
split is computed per row, never as a ragged array.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp

from smctx._src import segments
from smctx._src.base import PytreeDataclass, pytree_dataclass


# Up to this many actions, ranks come from pairwise comparisons (`O(A²)` per
# row, vectorised): on CPU an XLA sort of `[4096, 32]` rows took 9.6 ms against
# 0.16 ms for the comparisons. Larger action spaces sort.
PAIRWISE_MAX_ACTIONS = 128


def descending_rank(score: chex.Array, count: int | None = None) -> chex.Array:
  """Position of every entry in a best-first order, ties broken by index. `[..., A]` int32.

  The same order as a stable `argsort(-score)`. With a static `count`, only positions below
  `count` are exact, the others at least `count`: beyond `PAIRWISE_MAX_ACTIONS` actions only
  the best `count` are then found (`best_actions`, no sort of the whole row).
  """
  num_actions = score.shape[-1]
  if num_actions > PAIRWISE_MAX_ACTIONS:
    # The inverse of the order (or of its head), by one scatter rather than a second sort.
    order = descending_order(score) if count is None else best_actions(score, count)
    position = jnp.broadcast_to(jnp.arange(order.shape[-1], dtype=jnp.int32), order.shape)
    unranked = jnp.full(score.shape, order.shape[-1], jnp.int32)
    return jnp.put_along_axis(unranked, order, position, axis=-1, inplace=False)
  index = jnp.arange(num_actions)
  other, this = score[..., None, :], score[..., :, None]
  ahead = (other > this) | ((other == this) & (index[None, :] < index[:, None]))
  return jnp.sum(ahead, axis=-1).astype(jnp.int32)


def descending_order(score: chex.Array) -> chex.Array:
  """Indices best first (stable `argsort(-score)`). `[..., A]` int32."""
  num_actions = score.shape[-1]
  if num_actions > PAIRWISE_MAX_ACTIONS:
    return jnp.argsort(-score, axis=-1, stable=True).astype(jnp.int32)
  rank = descending_rank(score)
  # The inverse permutation: position p holds the action whose rank is p.
  # (A sum of the one matching index: an argmax here was 6x slower on CPU.)
  index = jnp.arange(num_actions, dtype=jnp.int32)
  at_position = rank[..., None, :] == index[:, None]
  return jnp.sum(jnp.where(at_position, index, 0), axis=-1).astype(jnp.int32)


# Up to this many, `best_actions` selects the best entries one at a time (two reductions
# each); beyond, it sorts. On CPU a stable sort of `[64, 16, 362]` took 49 ms.
SELECT_MAX_COUNT = 32


def best_actions(score: chex.Array, count: int) -> chex.Array:
  """The first `min(count, A)` entries of `descending_order(score)`, `[..., k]` int32.

  For action spaces beyond `PAIRWISE_MAX_ACTIONS`, where a position in the order is wanted
  only up to `count`. `score` is finite or `-inf`. Up to `SELECT_MAX_COUNT`, by repeated
  selection: the best entry not yet taken, the first of equal ones (the order's tie-break).
  """
  num_actions = score.shape[-1]
  count = min(count, num_actions)
  if count > SELECT_MAX_COUNT:
    return descending_order(score)[..., :count]
  taken = jnp.zeros(score.shape, bool)
  best = []
  for _ in range(count):
    top = jnp.max(jnp.where(taken, -jnp.inf, score), axis=-1, keepdims=True)
    first = jnp.argmax(~taken & (score == top), axis=-1).astype(jnp.int32)
    taken = taken | (jnp.arange(num_actions) == first[..., None])
    best.append(first)
  return jnp.stack(best, axis=-1)


def action_at_position(score: chex.Array, position: chex.Array, count: int,
                       rows: chex.Array | None = None) -> chex.Array:
  """The action at `position` of each best-first order (ties by index).

  score `[..., A]`; the order of row `rows[i]` of `score` for entry `i` of `position` (every
  row in turn without `rows`). `position < count` (static); a position at or past `A` gives
  the last action of the order (callers replace it). Up to `PAIRWISE_MAX_ACTIONS` from the
  ranks (no sort); beyond, from the best `count` (`best_actions`).
  """
  num_actions = score.shape[-1]
  of_row = (lambda x: x) if rows is None else (lambda x: x[rows])
  if num_actions > PAIRWISE_MAX_ACTIONS:
    best = of_row(best_actions(score, count))
    at = jnp.minimum(position, best.shape[-1] - 1)[..., None]
    return segments.take_along(best, at, axis=-1)[..., 0]
  at_position = of_row(descending_rank(score)) == jnp.minimum(position, num_actions - 1)[..., None]
  return jnp.sum(jnp.where(at_position, jnp.arange(num_actions), 0), axis=-1)


def rank_candidates(score: chex.Array, considered: chex.Array,
                    count: int | None = None) -> chex.Array:
  """Actions ordered best first by `score`, non-considered ones last. `[B, A]` int32.

  With a static `count`, beyond `PAIRWISE_MAX_ACTIONS` actions, only the first `min(count, A)`
  positions `[B, count]` (`best_actions`, no sort of the whole row).
  """
  masked = jnp.where(considered, score, -jnp.inf)
  if count is None or score.shape[-1] <= PAIRWISE_MAX_ACTIONS:
    return descending_order(masked)
  return best_actions(masked, count)


def top_considered(score: chex.Array, considered: chex.Array, num_keep: chex.Numeric,
                   max_keep: int | None = None) -> chex.Array:
  """The best `num_keep` of the considered actions (fewer if fewer are considered).

  `max_keep`: a static bound on `num_keep`, so that only the best `max_keep` are ranked
  (`descending_rank`'s `count`).
  """
  rank = descending_rank(jnp.where(considered, score, -jnp.inf), max_keep)
  return considered & (rank < num_keep)


def split_particles(num_particles: int, num_live: chex.Array) -> chex.Array:
  """Group (rank position) of every particle when `num_live[b]` candidates share `N`.

  Group `k` gets `N // M + (k < N % M)` particles, contiguously; `[B, N]` int32.
  """
  n = jnp.arange(num_particles, dtype=jnp.int32)[None, :]
  m = jnp.maximum(num_live, 1).astype(jnp.int32)[:, None]
  q, r = segments.nonnegative_divmod(jnp.int32(num_particles), m)
  big = r * (q + 1)
  in_big_group, _ = segments.nonnegative_divmod(n, q + 1)
  in_small_group, _ = segments.nonnegative_divmod(jnp.maximum(n - big, 0), jnp.maximum(q, 1))
  group = jnp.where(n < big, in_big_group, r + in_small_group)
  return jnp.minimum(group, m - 1)


def assign_particles(score: chex.Array, considered: chex.Array, num_particles: int,
                     max_live: int | None = None) -> tuple[chex.Array, chex.Array, chex.Array]:
  """Splits the particles over the considered actions, best-ranked first.

  `max_live`: a static bound on the considered actions of a row (`rank_candidates`' count).
  Returns `(group [B, N], root_action [B, N], num_live [B])`.
  """
  order = rank_candidates(score, considered, max_live)
  num_live = jnp.sum(considered, axis=-1).astype(jnp.int32)
  group = split_particles(num_particles, num_live)
  root_action = segments.take_along(order, group)
  return group, root_action, num_live


def combine_iterations(q_sh: chex.Array, n_sh: chex.Array, q_i: chex.Array,
                       n_i: chex.Array) -> tuple[chex.Array, chex.Array]:
  """Inverse-variance combination with `Var ∝ 1/N_i`, kept in place (`O(A)` state).

  `Q_SH ← Σ_j N_j·Q_j / Σ_j N_j`; all arrays `[B, A]`. The weights need not be whole
  (warm starts, `iteration_weights="variance"`): only their ratios count.
  """
  chex.assert_equal_shape([q_sh, n_sh, q_i, n_i])
  total = n_sh + n_i
  q = jnp.where(n_i > 0, (n_sh * q_sh + n_i * q_i) / jnp.where(total > 0, total, 1.0), q_sh)
  return q, total


def inverse_variance_counts(count: chex.Array, returns: chex.Array, weight: chex.Array,
                            root_action: chex.Array, td_variance: chex.Array) -> chex.Array:
  """Particle counts `[B, A]` shrunk by the spread of each candidate's estimate.

  A candidate's `n` particles carry returns `[B, N]` with weights `[B, N]`; `s²` is their
  weighted variance. The count becomes `n·σ0² / (s² + σ0²)`, `σ0²` being the root's
  running TD-error variance `[B]`: equal spreads leave the counts' ratios as they are
  (the paper's `Var ∝ 1/N`), a wider spread weighs less (`iteration_weights="variance"`).
  """
  num_actions = count.shape[-1]
  stacked = jnp.stack([weight, weight * returns, weight * returns * returns], axis=-1)
  sum_w, sum_wr, sum_wr2 = jnp.moveaxis(
      segments.segment_sum(stacked, root_action, num_actions), -1, 0)
  mean = sum_wr / jnp.maximum(sum_w, 1e-30)
  spread = jnp.maximum(sum_wr2 / jnp.maximum(sum_w, 1e-30) - mean * mean, 0.0)
  floor = jnp.maximum(td_variance, 1e-12)[:, None]
  return count * floor / (spread + floor)


@pytree_dataclass(frozen=True)
class HalvingState(PytreeDataclass):
  """Root state of Sequential Halving, `O(A)` per root whatever the budget.

  qvalues, weights: `Q_SH` and `Σ_j N_j(a)` of the inverse-variance
  combination `[B, A]`; visits: model evaluations under each action `[B, A]`;
  considered: candidates still alive `[B, A]`; particles_per_action
  `[B, K, A]` and num_considered `[B, K]` are diagnostics.
  """
  qvalues: chex.Array
  weights: chex.Array
  visits: chex.Array
  considered: chex.Array
  particles_per_action: chex.Array
  num_considered: chex.Array

  @classmethod
  def start(cls, considered: chex.Array, num_iterations: int) -> "HalvingState":
    batch_size, num_actions = considered.shape
    zeros_a = jnp.zeros((batch_size, num_actions), jnp.float32)
    return cls(qvalues=zeros_a, weights=zeros_a, visits=zeros_a, considered=considered,
               particles_per_action=jnp.zeros((batch_size, num_iterations, num_actions),
                                              jnp.float32),
               num_considered=jnp.zeros((batch_size, num_iterations), jnp.int32))


def iteration_values(reward: chex.Array, discount: chex.Array, value: chex.Array,
                     root_action: chex.Array, improvement: chex.Array,
                     num_actions: int) -> tuple[chex.Array, chex.Array]:
  """`Q_i(a)` and the particles behind it, `[B, A]` each, from one iteration's particles.

  `Q_i(a)` is the group mean of `r + discount·(v(s2) + improvement)` over the
  particles that took `a` (`[B, N]` inputs), `improvement` being `V_SMCTS(s2)`
  minus the pooled `v̄(s2)` of the particle's group: with a deterministic model
  this is exactly `r + discount·V_SMCTS(s2)` (section 8.9).
  """
  chex.assert_equal_shape([reward, discount, value, root_action, improvement])
  q_particle = reward + discount * (value + improvement)
  count = segments.segment_sum(jnp.ones_like(q_particle), root_action, num_actions)
  q_iter = segments.segment_sum(q_particle, root_action, num_actions) / jnp.maximum(count, 1)
  return q_iter, count


def record_iteration(halving: HalvingState, q_iter: chex.Array, count: chex.Array,
                     depth: chex.Array, iteration: chex.Array,
                     weight: chex.Array | None = None) -> HalvingState:
  """Takes iteration `iteration`'s `Q_i` into `Q_SH`, its visits and its diagnostics.

  `count [B, A]`: the particles behind `Q_i`; `weight`: its weight in `Q_SH` (default the
  count, the paper's `Var ∝ 1/N`).
  """
  weight = count if weight is None else weight
  q_sh, weights = combine_iterations(halving.qvalues, halving.weights, q_iter, weight)
  return halving.replace(
      qvalues=q_sh, weights=weights, visits=halving.visits + count * depth,
      particles_per_action=halving.particles_per_action.at[:, iteration].set(count),
      num_considered=halving.num_considered.at[:, iteration].set(
          jnp.sum(count > 0, axis=-1).astype(jnp.int32)))
