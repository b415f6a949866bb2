"""Random draws with `jax.random`'s bits, drawn flat and reshaped.

With JAX's default PRNG (threefry, partitionable or not) element `i` of a draw
of any shape hashes the counter `i`, its index in the flattened array, so
`uniform(key, (n,)).reshape(shape)` equals `uniform(key, shape)` bit for bit
(tested in `tests/test_draws.py`). The flat draw compiles to much less code:
XLA:CPU emits threefry's rolled loop over a `[64, 16, 32]` array as 8 824
lines of optimised LLVM IR against 2 468 for the same loop over `[32 768]`
(0.28 against 0.15 s to compile), and the search's draws were a third of its
compiled program (`docs/performance.md`, "Compile time by kernel module").
"""

from __future__ import annotations

import math
from typing import Sequence

import chex
import jax
import jax.numpy as jnp


def uniform(rng_key: chex.PRNGKey, shape: Sequence[int]) -> chex.Array:
  """`jax.random.uniform(rng_key, shape, jnp.float32)` in `[0, 1)`, drawn flat."""
  return jax.random.uniform(rng_key, (math.prod(shape),), jnp.float32).reshape(tuple(shape))


def gumbel(rng_key: chex.PRNGKey, shape: Sequence[int],
           dtype: jnp.dtype = jnp.float32) -> chex.Array:
  """`jax.random.gumbel(rng_key, shape, dtype)`, drawn flat."""
  return jax.random.gumbel(rng_key, (math.prod(shape),), dtype).reshape(tuple(shape))


def categorical(rng_key: chex.PRNGKey, logits: chex.Array, shape: Sequence[int]) -> chex.Array:
  """`jax.random.categorical(rng_key, logits, shape=shape)` on the last axis, drawn flat.

  The Gumbel-max draw `jax.random.categorical` makes: `shape` is the result's,
  broadcastable from `logits.shape[:-1]`.
  """
  shape = tuple(shape)
  noise = gumbel(rng_key, shape + logits.shape[-1:], logits.dtype)
  return jnp.argmax(noise + logits, axis=-1)


def split(rng_key: chex.PRNGKey, shape: Sequence[int]) -> chex.Array:
  """`jax.random.split(rng_key, shape)`, split flat."""
  keys = jax.random.split(rng_key, math.prod(shape))
  return keys.reshape(tuple(shape) + keys.shape[1:])
