"""Bit-identical searches on a GPU: the same key twice, and a batch split in two.

On a GPU, reductions may be scheduled differently from run to run or for other batch shapes;
smctx sums with fixed orders (segmented scans, one writer per scatter entry, `docs/algorithms.md`,
"One loop for TSMCTS"), so a search must be a function of its key and its own root alone. The
batch here is a `jax.vmap` of one-root searches with one key per root, as an agent vmaps its
search over environments: splitting it changes every kernel's shape, not a root's inputs.
Marked `gpu` and skipped without one (run on a GPU machine: `python -m pytest -m gpu`).
"""

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(jax.default_backend() != "gpu",
                       reason="needs a GPU (jax.default_backend() is "
                              f"{jax.default_backend()!r}); run with -m gpu on a GPU machine"),
]

BATCH, ACTIONS, EMBEDDING = 16, 6, 8


def _model(params, key, action, embedding):
  hidden = jnp.tanh(embedding @ params["w"] + params["a"][action])
  out = mctx.RecurrentFnOutput(reward=hidden[:, 0], discount=jnp.full(action.shape, 0.95),
                               prior_logits=hidden[:, :ACTIONS] * 2.0, value=hidden[:, 1])
  return out, hidden


def _inputs():
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(EMBEDDING, EMBEDDING)) / 3, jnp.float32),
            "a": jnp.asarray(rng.normal(size=(ACTIONS, EMBEDDING)), jnp.float32)}
  embedding = jnp.asarray(rng.normal(size=(BATCH, EMBEDDING)), jnp.float32)
  logits = jnp.asarray(rng.normal(size=(BATCH, ACTIONS)), jnp.float32)
  value = jnp.asarray(rng.normal(size=(BATCH,)), jnp.float32)
  keys = jax.random.split(jax.random.key(7), BATCH)
  return params, keys, logits, value, embedding


def _search(policy, num_simulations, **kwargs):
  def one_root(params, key, logits, value, embedding):
    root = mctx.RootFnOutput(prior_logits=logits[None], value=value[None],
                             embedding=embedding[None])
    out = policy(params, key, root, _model, num_simulations, **kwargs)
    return out.action[0], out.action_weights[0], out.search_tree.node_values[0]
  return jax.jit(jax.vmap(one_root, in_axes=(None, 0, 0, 0, 0)))


@pytest.mark.parametrize("name,kwargs", [
    ("tsmcts_policy", {}), ("tsmcts_policy", dict(num_steps=16)), ("smcts_policy", {}),
    ("smc_policy", {})])
def test_same_key_twice_and_a_split_batch_are_bit_identical(name, kwargs):
  params, keys, logits, value, embedding = _inputs()
  search = _search(getattr(smctx, name), 256, **kwargs)
  first = jax.device_get(search(params, keys, logits, value, embedding))
  again = jax.device_get(search(params, keys, logits, value, embedding))
  half = BATCH // 2
  parts = [jax.device_get(search(params, keys[s], logits[s], value[s], embedding[s]))
           for s in (slice(0, half), slice(half, BATCH))]
  split = [np.concatenate([a, b]) for a, b in zip(*parts, strict=True)]
  for x, y, z in zip(first, again, split, strict=True):
    np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(x, z)
