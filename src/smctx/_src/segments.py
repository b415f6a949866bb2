"""Per-root segment reductions over the particle axis.

Particles of one root are summed (or maxed) into segments: root actions,
resampling groups, or (group, second action) pairs.

Sums are masked dense reductions over `[B, N, num_segments]`, not scatter-adds.
A scatter-add on GPU accumulates with atomics in a run-dependent order, so the
same key would not give bit-identical searches there (measured: 5 determinism
tests failed on an H100 with scatter-adds). A reduction has a fixed order, and
XLA fuses the mask into it. Maxima are order-independent and stay scatters.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def segment_sum(data: chex.Array, segment_ids: chex.Array, num_segments: int,
                gather: bool = False) -> chex.Array:
  """`[B, N, ...]` data summed per segment: `[B, num_segments, ...]`.

  With `gather` (for `[B, N]` data only), each particle's segment total `[B, N]`.
  """
  member = segment_ids[:, :, None] == jnp.arange(num_segments)  # [B, N, S]
  member = member.reshape(member.shape + (1,) * (data.ndim - 2))
  out = jnp.sum(jnp.where(member, data[:, :, None], 0), axis=1)  # [B, S, ...]
  return jnp.take_along_axis(out, segment_ids, axis=1) if gather else out


def segment_max(data: chex.Array, segment_ids: chex.Array, num_segments: int,
                gather: bool = False) -> chex.Array:
  """`[B, N]` data maxed per segment (`-inf` for empty segments)."""
  out = jax.vmap(lambda d, s: jax.ops.segment_max(d, s, num_segments))(data, segment_ids)
  return jnp.take_along_axis(out, segment_ids, axis=1) if gather else out


def position_in_segment(segment_ids: chex.Array) -> chex.Array:
  """Index of each particle within its contiguous segment, `[B, N]` int32."""
  n = jnp.arange(segment_ids.shape[1])[None]
  is_start = jnp.concatenate(
      [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
  start = jax.lax.cummax(jnp.where(is_start, n, 0), axis=1)
  return (n - start).astype(jnp.int32)
