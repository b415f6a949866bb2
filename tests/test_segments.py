"""Per-root segment reductions (`_src/segments.py`) against NumPy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smctx._src import segments


def _np_segment_sum(data, ids, num_segments):
  out = np.zeros((data.shape[0], num_segments) + data.shape[2:])
  for b in range(data.shape[0]):
    for n in range(data.shape[1]):
      if 0 <= ids[b, n] < num_segments:
        out[b, ids[b, n]] += data[b, n]
  return out


def test_segment_sum_matches_a_loop_and_ignores_out_of_range_ids():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 6, size=(3, 10))
  ids[0, 0] = 7  # out of range: counts nowhere
  data = rng.normal(size=(3, 10, 2)).astype(np.float32)
  got = segments.segment_sum(jnp.asarray(data), jnp.asarray(ids), 6)
  np.testing.assert_allclose(np.asarray(got), _np_segment_sum(data, ids, 6), atol=1e-6)


def test_segment_sum_gather_gives_each_particle_its_segment_total():
  ids = np.array([[0, 1, 0, 2]])
  data = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
  got = segments.segment_sum(jnp.asarray(data), jnp.asarray(ids), 3, gather=True)
  np.testing.assert_array_equal(np.asarray(got), [[4.0, 2.0, 4.0, 4.0]])


def _dot_precisions(jaxpr):
  """The `precision` of every `dot_general` in a jaxpr, nested jaxprs included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      yield eqn.params["precision"]
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)
      if hasattr(inner, "eqns"):
        yield from _dot_precisions(inner)


def test_segment_sum_keeps_every_float32_bit():
  # 1 + 2^-20 + 2^-22 needs 22 mantissa bits: exact in float32, but TF32 (the default
  # matmul precision of recent GPUs, 10 bits) would drop both fractions. The contraction
  # must ask for HIGHEST precision, which the CPU would not show by the values alone.
  ids = jnp.asarray([[0, 1, 0]], jnp.int32)
  data = jnp.asarray([[1.0 + 2.0**-20, 3.0, 2.0**-22]], jnp.float32)
  got = np.asarray(segments.segment_sum(data, ids, 2))
  np.testing.assert_array_equal(got, np.asarray([[1.0 + 2.0**-20 + 2.0**-22, 3.0]], np.float32))
  jaxpr = jax.make_jaxpr(lambda d, i: segments.segment_sum(d, i, 2))(data, ids).jaxpr
  precisions = list(_dot_precisions(jaxpr))
  highest = jax.lax.Precision.HIGHEST
  assert precisions and all(p == (highest, highest) for p in precisions), precisions


def test_segment_max_is_minus_infinity_on_empty_segments():
  ids = np.array([[0, 0, 2]])
  data = np.array([[1.0, 5.0, -3.0]], np.float32)
  got = np.asarray(segments.segment_max(jnp.asarray(data), jnp.asarray(ids), 4))
  np.testing.assert_array_equal(got, [[5.0, -np.inf, -3.0, -np.inf]])


@pytest.mark.parametrize("num_segments", [1, 6, segments.DENSE_MAX_SEGMENTS,
                                          segments.DENSE_MAX_SEGMENTS + 1])
def test_segment_max_matches_a_loop_on_both_sides_of_the_dense_limit(num_segments):
  # Up to `DENSE_MAX_SEGMENTS` a masked reduction, beyond it a scatter: the same maxima,
  # -inf for empty segments, ids out of range ignored, and each particle's own with `gather`.
  rng = np.random.default_rng(num_segments)
  ids = rng.integers(0, num_segments, size=(3, 12))
  ids[1, 3] = num_segments + 2  # out of range: counts nowhere
  data = rng.normal(size=(3, 12)).astype(np.float32)
  want = np.full((3, num_segments), -np.inf, np.float32)
  for b in range(3):
    for n in range(12):
      if ids[b, n] < num_segments:
        want[b, ids[b, n]] = max(want[b, ids[b, n]], data[b, n])
  got = segments.segment_max(jnp.asarray(data), jnp.asarray(ids), num_segments)
  np.testing.assert_array_equal(np.asarray(got), want)
  gathered = segments.segment_max(jnp.asarray(data), jnp.asarray(ids), num_segments,
                                  gather=True)
  in_range = ids < num_segments
  np.testing.assert_array_equal(np.asarray(gathered)[in_range],
                                np.take_along_axis(want, np.minimum(ids, num_segments - 1),
                                                   axis=1)[in_range])


def test_runs_starts_positions_and_start_indices():
  ids = jnp.asarray([[3, 3, 1, 1, 1, 4], [0, 2, 2, 2, 2, 2]])
  np.testing.assert_array_equal(np.asarray(segments.run_starts(ids)),
                                [[1, 0, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(np.asarray(segments.run_start_index(ids)),
                                [[0, 0, 2, 2, 2, 5], [0, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(np.asarray(segments.position_in_segment(ids)),
                                [[0, 1, 0, 1, 2, 0], [0, 0, 1, 2, 3, 4]])


@pytest.mark.parametrize("num_segments", [8, 33])
def test_run_sum_equals_a_dense_segment_sum_on_contiguous_runs(num_segments):
  rng = np.random.default_rng(num_segments)
  num_particles = 40
  ids = np.zeros((2, num_particles), np.int32)
  for b in range(2):
    # Contiguous runs with distinct ids in any order, some ids unused.
    num_runs = min(num_segments - 1, 12) if b == 0 else min(num_segments, num_particles)
    cuts = np.sort(rng.choice(np.arange(1, num_particles), num_runs - 1, replace=False))
    lengths = np.diff(np.concatenate([[0], cuts, [num_particles]]))
    ids[b] = np.repeat(rng.permutation(num_segments)[:num_runs], lengths)
  data = rng.normal(size=(2, num_particles, 3)).astype(np.float32)
  got = np.asarray(segments.run_sum(jnp.asarray(data), jnp.asarray(ids), num_segments))
  np.testing.assert_allclose(got, _np_segment_sum(data, ids, num_segments), rtol=1e-5,
                             atol=1e-5)
  got_flat = np.asarray(segments.run_sum(jnp.asarray(data[..., 0]), jnp.asarray(ids),
                                         num_segments))
  np.testing.assert_allclose(got_flat, _np_segment_sum(data[..., 0], ids, num_segments),
                             rtol=1e-5, atol=1e-5)


def test_run_sum_memory_is_linear_in_the_number_of_particles():
  # The dense contraction for N slot ids builds a [B, N, N] membership; the run
  # sum must not: its compiled temporaries stay within a few [B, N] arrays.
  import jax
  batch, n = 4, 2048
  ids = jnp.zeros((batch, n), jnp.int32)
  data = jnp.zeros((batch, n), jnp.float32)
  compiled = jax.jit(lambda d, i: segments.run_sum(d, i, n)).lower(data, ids).compile()
  stats = compiled.memory_analysis()
  if stats is None:  # backend without memory analysis
    return
  assert stats.temp_size_in_bytes < 64 * batch * n * 4  # [B, N, N] would be 2048x more


def test_take_along_matches_numpy_and_clamps_an_index_out_of_range():
  rng = np.random.default_rng(1)
  table = rng.normal(size=(3, 5, 2)).astype(np.float32)
  index = rng.integers(0, 5, size=(3, 4))
  got = segments.take_along(jnp.asarray(table), jnp.asarray(index)[..., None])
  np.testing.assert_array_equal(np.asarray(got), np.take_along_axis(table, index[..., None], 1))
  rows = rng.normal(size=(3, 6)).astype(np.float32)
  column = rng.integers(0, 6, size=(3, 1))
  np.testing.assert_array_equal(
      np.asarray(segments.take_along(jnp.asarray(rows), jnp.asarray(column), axis=-1)),
      np.take_along_axis(rows, column, -1))
  # Past either end: the nearest end's entry, never a NaN fill (jnp's default mode).
  beyond = jnp.array([[7, 5, 4, 0]])
  got = segments.take_along(jnp.asarray(rows[:1]), beyond, axis=-1)
  np.testing.assert_array_equal(np.asarray(got), rows[:1, [5, 5, 4, 0]])


def test_nonnegative_divmod_is_pythons_divmod_broadcast():
  a = np.arange(0, 40, dtype=np.int32)[None, :]
  b = np.arange(1, 9, dtype=np.int32)[:, None]
  q, r = segments.nonnegative_divmod(jnp.asarray(a), jnp.asarray(b))
  assert q.shape == r.shape == (8, 40)
  np.testing.assert_array_equal(np.asarray(q), a // b)
  np.testing.assert_array_equal(np.asarray(r), a % b)
  q, r = segments.nonnegative_divmod(jnp.int32(17), jnp.asarray(b))
  np.testing.assert_array_equal(np.asarray(q), 17 // b)
  np.testing.assert_array_equal(np.asarray(r), 17 % b)
