"""Per-root segment reductions over the particle axis.

Particles of one root are summed (or maxed) into segments: root actions,
resampling groups, or TSMCTS's slots (one per (group, second action) pair).

Sums are contractions with a one-hot membership matrix `[B, N, num_segments]`
(`einsum`), not scatter-adds. A scatter-add on GPU accumulates with atomics in
a run-dependent order, so the same key would not give bit-identical searches
there (measured: 5 determinism tests failed on an H100 with scatter-adds). A
contraction has a fixed order. It replaced a masked dense reduction
(`where(member, data, 0).sum(1)`), which is the same arithmetic but was 5× slower
on CPU for TSMCTS's `16 × 32` (group, action) segments: a matrix product runs on
the BLAS/tensor-core path. `HIGHEST` precision keeps float32 sums exact on GPUs
that would otherwise use TF32. Maxima are order-independent: a masked reduction up to
`DENSE_MAX_SEGMENTS` segments (one fused kernel), a scatter beyond.

`take_along` is the gather every module of the search uses to read per-segment
or per-particle tables at computed indices, and `nonnegative_divmod` the integer
division that lays particles out in groups.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def take_along(x: chex.Array, index: chex.Array, axis: int = 1) -> chex.Array:
  """`jnp.take_along_axis` for indices that are in range by construction (groups, slots,
  ancestors, ranks), an index out of range clamped to it.

  jnp's default mode masks every gathered element and fills out-of-range ones with NaN:
  about 22 HLO instructions per call against 8, 14 % of TSMCTS's program
  (`docs/performance.md`, "Fewer instructions per kernel"). Clamping keeps the result
  finite, as the search's outputs must be, where a fill would put NaN in them.
  """
  return jnp.take_along_axis(x, index, axis=axis, mode="clip")


def nonnegative_divmod(a: chex.Array, b: chex.Array) -> tuple[chex.Array, chex.Array]:
  """`(a // b, a % b)` of integer arrays (broadcast) for `a ≥ 0` and `b > 0`.

  Truncating division is floor division there, so this skips the sign corrections
  that jnp's `//` and `%` add for negative operands (about 10 instructions each).
  """
  a, b = jnp.broadcast_arrays(a, b)
  return jax.lax.div(a, b), jax.lax.rem(a, b)


def segment_sum(data: chex.Array, segment_ids: chex.Array, num_segments: int,
                gather: bool = False) -> chex.Array:
  """`[B, N, ...]` data summed per segment: `[B, num_segments, ...]`.

  With `gather` (for `[B, N]` data only), each particle's segment total `[B, N]`.
  """
  # Ids outside [0, num_segments) get an all-zero row: such particles count nowhere.
  member = jax.nn.one_hot(segment_ids, num_segments, dtype=data.dtype)  # [B, N, S]
  out = jnp.einsum("bn...,bns->bs...", data, member, precision=jax.lax.Precision.HIGHEST)
  return take_along(out, segment_ids) if gather else out


# Up to this many segments a maximum is one masked reduction over `[B, N, num_segments]`
# (one fused kernel, no scatter); beyond it, a scatter-max.
DENSE_MAX_SEGMENTS = 32


def segment_max(data: chex.Array, segment_ids: chex.Array, num_segments: int,
                gather: bool = False) -> chex.Array:
  """`[B, N]` data maxed per segment (`-inf` for empty segments)."""
  if num_segments <= DENSE_MAX_SEGMENTS:
    member = segment_ids[..., None] == jnp.arange(num_segments)  # [B, N, S]
    out = jnp.max(jnp.where(member, data[..., None], -jnp.inf), axis=1)
  else:
    out = jax.vmap(lambda d, s: jax.ops.segment_max(d, s, num_segments))(data, segment_ids)
  return take_along(out, segment_ids) if gather else out


def run_starts(segment_ids: chex.Array) -> chex.Array:
  """`[B, N]` bool: where a run of equal ids starts along the particle axis."""
  return jnp.concatenate(
      [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)


def run_start_index(segment_ids: chex.Array) -> chex.Array:
  """Index of the first particle of each particle's run of equal ids, `[B, N]` int32."""
  n = jnp.arange(segment_ids.shape[1], dtype=jnp.int32)[None]
  return jax.lax.cummax(jnp.where(run_starts(segment_ids), n, 0), axis=1)


def position_in_segment(segment_ids: chex.Array) -> chex.Array:
  """Index of each particle within its contiguous segment, `[B, N]` int32."""
  n = jnp.arange(segment_ids.shape[1], dtype=jnp.int32)[None]
  return n - run_start_index(segment_ids)


def run_sum(data: chex.Array, segment_ids: chex.Array, num_segments: int) -> chex.Array:
  """`[B, N, ...]` data summed per segment when every segment is one contiguous run.

  The `O(B·N)` counterpart of `segment_sum` for segment ids that take up to
  `N` values (TSMCTS's slots), where a one-hot membership would be `[B, N, N]`.
  Each run is summed by a segmented suffix scan (a fixed order, so bit-identical
  across runs on GPU), and its total is written to its id by the run's first
  particle, the only writer of that id. Returns `[B, num_segments, ...]`, zero
  for ids no particle carries.
  """
  chex.assert_equal_shape_prefix([data, segment_ids], 2)
  is_end = jnp.concatenate(
      [segment_ids[:, 1:] != segment_ids[:, :-1], jnp.ones_like(segment_ids[:, :1], bool)],
      axis=1)
  is_end = is_end.reshape(is_end.shape + (1,) * (data.ndim - 2))

  # In the suffix order of the scan, `later` is the element further right.
  def combine(later: tuple, earlier: tuple) -> tuple:
    ends_later, sum_later = later
    ends_earlier, sum_earlier = earlier
    return ends_later | ends_earlier, jnp.where(ends_earlier, sum_earlier, sum_later + sum_earlier)

  _, suffix = jax.lax.associative_scan(
      combine, (jnp.broadcast_to(is_end, data.shape), data), reverse=True, axis=1)
  # The first particle of a run holds the run's total; every other particle writes nowhere.
  target = jnp.where(run_starts(segment_ids), segment_ids, num_segments)

  def write(total: chex.Array, index: chex.Array) -> chex.Array:
    return jnp.zeros((num_segments,) + total.shape[1:], total.dtype).at[index].set(
        total, mode="drop")

  return jax.vmap(write)(suffix, target)
