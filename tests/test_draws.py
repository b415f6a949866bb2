"""Flat random draws (`_src/draws.py`) give `jax.random`'s bits for every shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smctx._src import draws

SHAPES = [(5,), (3, 4), (2, 3, 7), (4, 1), (2, 1, 3, 1)]


@pytest.fixture(params=[True, False], ids=["partitionable", "original"])
def threefry(request):
  with jax.threefry_partitionable(request.param):
    yield


@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_and_gumbel_are_jax_randoms_bits(threefry, shape):
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(draws.uniform(key, shape), jax.random.uniform(key, shape))
  np.testing.assert_array_equal(draws.gumbel(key, shape), jax.random.gumbel(key, shape))
  assert draws.uniform(key, shape).shape == shape


def test_gumbel_in_high_dynamic_range_mode_is_jax_randoms_bits(threefry):
  key = jax.random.PRNGKey(3)
  jax.config.update("jax_high_dynamic_range_gumbel", True)
  try:
    np.testing.assert_array_equal(draws.gumbel(key, (3, 5)), jax.random.gumbel(key, (3, 5)))
    assert not np.array_equal(draws.gumbel(key, (3, 5)),
                              jax.random.gumbel(key, (3, 5), mode="low"))
  finally:
    jax.config.update("jax_high_dynamic_range_gumbel", False)


def test_categorical_is_jax_randoms_draw(threefry):
  key = jax.random.PRNGKey(11)
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 1, 6)), jnp.float32)
  logits = logits.at[0, 0, 2].set(-jnp.inf)
  got = draws.categorical(key, logits, (4, 9))
  np.testing.assert_array_equal(got, jax.random.categorical(key, logits, shape=(4, 9)))
  assert not np.any(np.asarray(got)[0] == 2)
  half = logits.astype(jnp.bfloat16)
  np.testing.assert_array_equal(draws.categorical(key, half, (4, 9)),
                                jax.random.categorical(key, half, shape=(4, 9)))


@pytest.mark.parametrize("make_key", [jax.random.PRNGKey, jax.random.key], ids=["raw", "typed"])
def test_split_is_jax_randoms_split(threefry, make_key):
  key = make_key(5)
  got, want = draws.split(key, (4, 3)), jax.random.split(key, (4, 3))
  assert got.shape == want.shape
  if make_key is jax.random.key:
    got, want = jax.random.key_data(got), jax.random.key_data(want)
  np.testing.assert_array_equal(got, want)
