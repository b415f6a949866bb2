"""The variants of `benchmarks/ab_variants.py` compute what they replace.

The A/B harness times patched searches against the search as it is. A patch that computed
something else would time a different search, so each is checked here: against a NumPy loop,
against the library function it replaces, and as a whole search against the unpatched one.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip(
    "matplotlib",
    reason="the benchmark draws with matplotlib (examples extra): pip install -e '.[examples]'")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import ab_variants  # noqa: E402
import speed  # noqa: E402

from smctx._src import particles, segments  # noqa: E402


@pytest.mark.parametrize("trailing", [(), (3,)])
def test_dense_slot_sums_match_a_loop_over_contiguous_runs(trailing):
  rng = np.random.default_rng(len(trailing))
  # Runs of slots in any order; slot 5 is carried by nobody, and an id of 8 counts nowhere.
  ids = np.array([[2, 2, 0, 0, 0, 7, 1, 1, 8, 3], [6, 6, 6, 6, 4, 4, 4, 4, 4, 0]], np.int32)
  data = rng.normal(size=ids.shape + trailing).astype(np.float32)
  expected = np.zeros((2, 8) + trailing, np.float32)
  for b in range(2):
    for n in range(ids.shape[1]):
      if ids[b, n] < 8:
        expected[b, ids[b, n]] += data[b, n]
  run_sum = ab_variants.dense_slot_sums(segments.run_sum)
  got = np.asarray(run_sum(jnp.asarray(data), jnp.asarray(ids), 8))
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  assert got.shape == (2, 8) + trailing and np.all(got[:, 5] == 0)


def test_sampling_without_the_maximum_draws_the_same_actions_bit_for_bit():
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(64, 5, 6)).astype(np.float32) * 3
  raw[0, 0] = -np.inf                      # no valid action: drawn uniformly
  raw[1, :, :4] = -np.inf                  # mass on the last two actions only
  raw[2, 0, 3] = np.inf                   # sanitised to the maximum, 0
  logits = particles.sanitize_logits(jnp.asarray(raw))
  uniform = jnp.asarray(rng.uniform(size=(64, 5, 1)), jnp.float32)
  sample = ab_variants.sample_no_max(particles.sample_actions)
  got = np.asarray(sample(None, logits, uniform=uniform))
  np.testing.assert_array_equal(got, particles.sample_actions(None, logits, uniform=uniform))
  # Independently: a uniform row takes action floor(6·u); a two-action row one of its two.
  assert got[0, 0] == int(6 * float(uniform[0, 0, 0]))
  assert set(got[1].tolist()) == {4, 5}


def test_the_flat_model_call_gives_every_particle_its_own_row():
  def model(key, action, embedding):
    del key
    return {"next": embedding * 2.0 + action[:, None], "value": jnp.sum(embedding, -1)}

  action = jnp.arange(12, dtype=jnp.int32).reshape(3, 4)
  embedding = jnp.arange(24, dtype=jnp.float32).reshape(3, 4, 2)
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  flat = ab_variants.flat_model_call(particles.over_particle_slices)
  got = flat(model, keys, action, embedding)
  e, a = np.arange(24, dtype=np.float32).reshape(3, 4, 2), np.arange(12).reshape(3, 4)
  np.testing.assert_array_equal(got["next"], e * 2 + a[..., None])
  np.testing.assert_array_equal(got["value"], e.sum(-1))


@pytest.fixture(scope="module")
def tabular_search():
  """`(search, args, output)`: a TSMCTS search of 8 roots (64 simulations, `N = 8`)."""
  params, root_fn, recurrent_fn = speed.MODELS["tabular"]()
  args = (params, jax.random.PRNGKey(3), root_fn(params, 8))
  search = lambda: jax.jit(speed.search_program("tsmcts", recurrent_fn, 64, 8))
  return search, args, search()(*args)


@pytest.mark.parametrize(
    "variant",
    ["sample_no_max", "skip_resampling", "flat_model_call", "segment_loops", "root_step_cond"])
def test_bit_identical_variants_give_the_search_as_it_is(tabular_search, variant):
  search, args, reference = tabular_search
  # Some steps resample somewhere in the batch and some nowhere: both branches of the skip.
  resampled = np.asarray(reference.search_tree.extra_data.resampled).any(axis=0)
  assert resampled.any() and not resampled.all()
  with ab_variants.patched(variant):
    program = search().lower(*args).compile()
  check = ab_variants.compare(program(*args), reference)
  if jax.default_backend() == "cpu":
    assert check == dict(identical=True, actions_equal=1.0, max_weight_diff=0.0)
  else:  # elsewhere XLA may fuse the patched program differently and round differently
    assert check["actions_equal"] == 1.0 and check["max_weight_diff"] < 1e-5


def test_patched_restores_the_library_function():
  original = segments.run_sum
  with ab_variants.patched("dense_slot_sums"):
    assert segments.run_sum is not original
  assert segments.run_sum is original
