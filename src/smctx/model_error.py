"""Corrupted tabular models: the search sees a wrong model, the exact values stay the reference.

A MuZero-style agent searches a learned model, which is wrong. This module
makes the tabular problems of `smctx.problems` wrong in controlled ways, so
that a search can be scored against the true `Q*`/`V*` while it plans with a
model whose error is known. `benchmarks/model_error.py` runs the study.

Corruptions (`Corruption`; every field 0 is the true model):

* transition error (`transition = p`): with probability `p` the successor is
  a uniformly random *other* state of the same problem (never the true
  successor; terminal states stay absorbing);
* reward error (`reward_bias = b`, `reward_noise = σ`): the reward is
  `r + (b + σ·ε)·reward_scale`, `ε ~ N(0, 1)` (rewards out of terminal states
  stay 0);
* compounding error (`value_noise = v`, `prior_noise = l`): a node `d` steps
  below the root gets value `V + v·d·value_scale·ε` (terminal values stay 0)
  and prior logits `logits + l·d·ε_a` (illegal logits untouched), like a
  latent model that drifts as it is unrolled. The root (depth 0) is exact.

`reward_scale` and `value_scale` are per problem (`scales`): the standard
deviation of the rewards of the live states' legal actions and of `V*` over
the live states, so that one level means the same in every family.

Noise (`model(noise=...)`): `"fresh"` draws every random number from the
`rng_key` of each `recurrent_fn` call, so two visits of one state-action see
different errors; `"fixed"` derives them from the state, action (or depth) and
a seed, so the model is wrong the same way every time, as a learned model is.

The embedding is `Embedding(state, depth)`, depth 0 at the root. `params` is
`merge(problems)` with `with_corruption(params, corruption)`; the corruption
is data, so one compiled search serves every level:

```python
params, roots, _ = model_error.merge(probs)
root_fn, recurrent_fn = model_error.model()
noisy = model_error.with_corruption(params, model_error.corruption("reward", 0.5))
out = smctx.tsmcts_policy(noisy, key, root_fn(noisy, roots), recurrent_fn, 64)
```
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from smctx import problems

KINDS = ("transition", "reward", "compounding")  # the study's kinds
EXTRA_KINDS = ("reward_bias", "reward_noise")  # the two halves of `reward`, one at a time
NOISE = ("fresh", "fixed")


class Corruption(NamedTuple):
  """How wrong the model is (see the module docstring; all 0: the true model).

  transition: probability that the successor is a uniformly random other state.
  reward_bias: added to every reward, in units of the problem's `reward_scale`.
  reward_noise: standard deviation of Gaussian reward noise (same units).
  value_noise: value-noise standard deviation per step below the root, in units
    of the problem's `value_scale`.
  prior_noise: prior-logit noise standard deviation per step below the root.
  """
  transition: float = 0.0
  reward_bias: float = 0.0
  reward_noise: float = 0.0
  value_noise: float = 0.0
  prior_noise: float = 0.0


class Embedding(NamedTuple):
  """The tabular state and its depth below the root (0 at the root), both int32."""
  state: jax.Array
  depth: jax.Array


def corruption(kind: str, level: float) -> Corruption:
  """One kind of error at `level`: the study's parameterisation.

  `transition`: `Corruption(transition=level)`; `reward`: bias and noise
  both `level` (reward standard deviations); `compounding`: value and prior
  noise both `level` per step of depth. `reward_bias` and `reward_noise` set
  one half of `reward` only.
  """
  level = float(level)
  if kind == "transition":
    if not 0.0 <= level <= 1.0:
      raise ValueError(f"transition error is a probability, got {level}")
    return Corruption(transition=level)
  if kind == "reward":
    return Corruption(reward_bias=level, reward_noise=level)
  if kind == "compounding":
    return Corruption(value_noise=level, prior_noise=level)
  if kind == "reward_bias":
    return Corruption(reward_bias=level)
  if kind == "reward_noise":
    return Corruption(reward_noise=level)
  raise ValueError(f"unknown corruption kind {kind!r}; known: {KINDS + EXTRA_KINDS}")


def scales(problem: problems.Problem) -> tuple[float, float]:
  """`(reward_scale, value_scale)` of a problem: std of the rewards of the live states' legal
  actions and std of `V*` over the live states (at least 1e-6)."""
  live = ~problem.terminal
  rewards = problem.rewards[live][problem.legal[live]]
  return (max(float(np.std(rewards)), 1e-6), max(float(np.std(problem.v_star[live])), 1e-6))


def merge(probs, max_successors: int | None = None):
  """`problems.merge` plus what the corruptions need: `(params, roots, offsets)`.

  Adds per state: `first_state` and `problem_states` (int32: the problem's
  first global state and its number of states, where wrong successors are
  drawn), `reward_scale` and `value_scale` (float32, `scales`).
  """
  params, roots, offsets = problems.merge(probs, max_successors)
  extra: dict[str, list[np.ndarray]] = {
      k: [] for k in ("first_state", "problem_states", "reward_scale", "value_scale")}
  for p, offset in zip(probs, offsets, strict=True):
    reward_scale, value_scale = scales(p)
    extra["first_state"].append(np.full(p.num_states, offset))
    extra["problem_states"].append(np.full(p.num_states, p.num_states))
    extra["reward_scale"].append(np.full(p.num_states, reward_scale))
    extra["value_scale"].append(np.full(p.num_states, value_scale))
  dtypes = dict(first_state=jnp.int32, problem_states=jnp.int32)
  params = dict(params, **{k: jnp.asarray(np.concatenate(v), dtypes.get(k, jnp.float32))
                           for k, v in extra.items()})
  return params, roots, offsets


def with_corruption(params: dict, corruption: Corruption) -> dict:
  """`params` whose model is corrupted by `corruption` (float32 scalars: no recompilation)."""
  return dict(params, corruption=jax.tree_util.tree_map(
      lambda x: jnp.asarray(x, jnp.float32), corruption))


def _fixed_key(seed: int, stream: int, *ids):
  """One key per element of the broadcast `ids`: a function of the seed, stream and ids."""
  arrays = jnp.broadcast_arrays(*(jnp.asarray(i, jnp.int32) for i in ids))
  base = jax.random.fold_in(jax.random.PRNGKey(seed), stream)

  def one(*values):
    key = base
    for v in values:
      key = jax.random.fold_in(key, v)
    return key

  keys = jax.vmap(one)(*(i.reshape(-1) for i in arrays))
  return keys, arrays[0].shape


def _uniform(noise, seed, stream, rng_key, shape, ids):
  """Uniform [0, 1) numbers of `shape`: from `rng_key`, or (fixed) from `ids` [shape]."""
  if noise == "fresh":
    return jax.random.uniform(jax.random.fold_in(rng_key, stream), shape)
  keys, s = _fixed_key(seed, stream, *ids)
  return jax.vmap(jax.random.uniform)(keys).reshape(s)


def _normal(noise, seed, stream, rng_key, shape, ids, tail=()):
  """Standard normals of `shape + tail`: from `rng_key`, or (fixed) from `ids` [shape]."""
  if noise == "fresh":
    return jax.random.normal(jax.random.fold_in(rng_key, stream), shape + tail)
  keys, s = _fixed_key(seed, stream, *ids)
  return jax.vmap(lambda k: jax.random.normal(k, tail))(keys).reshape(s + tail)


def model(noise: str = "fresh", seed: int = 0, base=None):
  """mctx's `(root_fn, recurrent_fn)` over `params` from `merge` (and `with_corruption`).

  Args:
    noise: `"fresh"` (every call draws its errors from its `rng_key`) or
      `"fixed"` (errors are a function of state, action, depth and `seed`).
    seed: the seed of the fixed errors.
    base: the true model, `problems.model()` by default: any `(root_fn,
      recurrent_fn)` over the same `params` whose embedding is the state.

  Returns:
    `root_fn(params, states [B])` and `recurrent_fn(params, rng_key, action,
    embedding)` with `Embedding(state, depth)` embeddings. Without
    `params["corruption"]` (or with all fields 0) the outputs and successors
    are the base model's exactly: the base gets the same `rng_key`, and the
    corruption's random numbers come from keys folded out of it.
  """
  if noise not in NOISE:
    raise ValueError(f"noise must be one of {NOISE}, got {noise!r}")
  base_root_fn, base_recurrent_fn = base or problems.model()

  def root_fn(params, states):
    out = base_root_fn(params, states)
    state = jnp.asarray(out.embedding, jnp.int32)
    return out.replace(embedding=Embedding(state, jnp.zeros_like(state)))

  def recurrent_fn(params, rng_key, action, embedding):
    c = params.get("corruption", Corruption())
    state = embedding.state
    depth = embedding.depth + 1
    out, true_next = base_recurrent_fn(params, rng_key, action, state)
    true_next = jnp.asarray(true_next, jnp.int32)
    terminal = params["terminal"]
    shape = state.shape
    uniform = lambda stream, ids: _uniform(noise, seed, stream, rng_key, shape, ids)
    normal = lambda stream, ids, tail=(): _normal(noise, seed, stream, rng_key, shape, ids, tail)

    # Transition error: a uniformly random other state of the same problem.
    first, size = params["first_state"][state], params["problem_states"][state]
    pick = jnp.floor(uniform(1, (state, action)) * (size - 1)).astype(jnp.int32)
    pick = jnp.minimum(pick, jnp.maximum(size - 2, 0))  # guard the float edge at u -> 1
    wrong = first + pick + (first + pick >= true_next).astype(jnp.int32)
    corrupt = (uniform(2, (state, action)) < c.transition) & ~terminal[state] & (size > 1)
    next_state = jnp.where(corrupt, wrong, true_next)
    # Outputs of the successor actually taken (the base model's rules).
    ends = terminal[state] | terminal[next_state]
    discount = jnp.where(ends, 0.0, params["discount"][state]).astype(out.discount.dtype)
    value = jnp.where(terminal[next_state], 0.0, params["values"][next_state])
    logits = params["prior_logits"][next_state]

    # Reward error: bias and noise in units of the problem's reward scale.
    error = (c.reward_bias + c.reward_noise * normal(3, (state, action)))
    reward = out.reward + jnp.where(terminal[state], 0.0,
                                    error * params["reward_scale"][state])

    # Compounding error: value and prior noise growing with the depth below the root.
    grow = depth.astype(jnp.float32)
    value_eps = normal(4, (next_state, depth))
    value = value + jnp.where(terminal[next_state], 0.0,
                              c.value_noise * grow * params["value_scale"][next_state]
                              * value_eps)
    logit_eps = normal(5, (next_state, depth), (logits.shape[-1],))
    legal = logits > 0.5 * problems.ILLEGAL_LOGIT
    logits = jnp.where(legal, logits + (c.prior_noise * grow)[..., None] * logit_eps, logits)

    out = out.replace(reward=reward.astype(out.reward.dtype), discount=discount,
                      prior_logits=logits.astype(out.prior_logits.dtype),
                      value=value.astype(out.value.dtype))
    return out, Embedding(next_state.astype(jnp.int32), depth.astype(jnp.int32))

  return root_fn, recurrent_fn
