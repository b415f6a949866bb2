"""No silent recompilation, and one trace of the model per search."""

import jax
import jax.numpy as jnp
import mctx
import numpy as np

from tests.policies import each_policy

B, A = 4, 6


def _root(seed):
  rng = np.random.default_rng(seed)
  return mctx.RootFnOutput(prior_logits=jnp.asarray(rng.normal(size=(B, A)), jnp.float32),
                           value=jnp.asarray(rng.normal(size=B), jnp.float32),
                           embedding=jnp.asarray(rng.normal(size=(B, 3)), jnp.float32))


def _counting_model(traces):
  def recurrent_fn(params, rng_key, action, embedding):
    traces.append(1)  # Python side effect: runs once per trace, never per execution
    nxt = jnp.tanh(embedding + params["w"] * action[:, None])
    return mctx.RecurrentFnOutput(reward=nxt[:, 0], discount=jnp.full(action.shape, 0.9),
                                  prior_logits=jnp.tile(nxt[:, :1], (1, A)),
                                  value=nxt[:, 1]), nxt
  return recurrent_fn


@each_policy
def test_repeated_calls_with_the_same_shapes_compile_once(policy):
  traces = []
  model = _counting_model(traces)
  search = jax.jit(lambda params, key, root: policy(params, key, root, model, 32))
  for i in range(4):  # new keys, new root data, new params values: same shapes
    out = search({"w": jnp.float32(0.1 * i)}, jax.random.PRNGKey(i), _root(i))
    jax.block_until_ready(out)
  assert search._cache_size() == 1
  assert len(traces) == 1


@each_policy
def test_the_model_is_traced_once_per_policy_call(policy):
  # The depth loop and all Sequential Halving iterations are one loop_fn loop:
  # the model is traced once, not once per step or per iteration.
  traces = []
  jax.make_jaxpr(lambda root: policy({"w": 0.3}, jax.random.PRNGKey(0), root,
                                     _counting_model(traces), 256, num_particles=8))(_root(0))
  assert len(traces) == 1
