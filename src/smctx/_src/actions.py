"""Action models: how particles take actions and call the user's model.

The particle engine never looks inside an action. It asks an action model for
three things: the actions of particles leaving the root (`root_actions`), one
call of the user's `recurrent_fn` (`call`), and the next action of every
particle drawn from the policy at its state (`sample`).

The user's functions (`recurrent_fn`, `action_sampler`) see what mctx shows
a `recurrent_fn`: `[B]` rows, one per root, in root order. `call` and the
sampler work on one particle slice `[B, ...]`; the engine lifts them over the
particle axis with `jax.vmap` (`particles.over_particle_slices`), one key per
slice, so that each step is still one batched evaluation of all `B·N`
particles.

* `DiscreteActions` is mctx's setting: actions are indices in `[0, A)`, the
  model returns prior logits, next actions are drawn from them.
* `SampledActions` is the continuous (or sampled) setting: the root offers
  `M` candidate actions (any pytree of `[B, M, ...]` arrays) and is searched
  exactly as a discrete root with `M` actions; below the root the model returns
  a `policy` pytree and the next actions are the user's samples from it.

SMC, SMCTS and TSMCTS run unchanged on either: both action models plug into
the same loop (`engine.py`, `tsmcts.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp
import mctx

from smctx._src import particles as particles_lib
from smctx._src import segments
from smctx._src import validation
from smctx._src.base import ActionModel
from smctx._src.base import ModelOutput
from smctx._src.base import SampledRecurrentFnOutput
from smctx._src.base import SampledRootFnOutput


@dataclasses.dataclass(frozen=True)
class DiscreteActions:
  """mctx's discrete actions: indices in `[0, A)`, policies are prior logits."""
  recurrent_fn: Callable
  num_actions: int
  # TSMCTS labels the second actions of a group by the actions themselves.
  samples_second_actions = False

  def root_actions(self, index: chex.Array) -> chex.Array:
    return index.astype(jnp.int32)

  def root_policy(self, root_logits: chex.Array, num_particles: int, params: chex.ArrayTree,
                  rng_key: chex.PRNGKey, embedding: chex.ArrayTree) -> chex.Array:
    del params, rng_key, embedding
    return particles_lib.broadcast_to_particles(root_logits, num_particles)

  def call(self, params: chex.ArrayTree, rng_key: chex.PRNGKey, action: chex.ArrayTree,
           embedding: chex.ArrayTree) -> ModelOutput:
    """`recurrent_fn` on one particle slice: `action [B]`, `embedding [B, ...]`."""
    output, next_embedding = self.recurrent_fn(params, rng_key, action, embedding)
    validation.check_model_output(output, next_embedding, embedding, action.shape[0],
                                  self.num_actions)
    logits = jnp.asarray(output.prior_logits, jnp.float32)
    bad = jnp.any(jnp.isnan(logits), axis=-1)
    logits = particles_lib.sanitize_logits(jnp.where(jnp.isnan(logits), -jnp.inf, logits))
    return ModelOutput(output.reward, output.discount, output.value, logits, next_embedding, bad)

  def sample(self, slice_keys: chex.Array, policy: chex.Array) -> chex.Array:
    """Next actions `[B, N]` from the logits `[B, N, A]`, one key per particle slice `[N]`.

    The uniforms are those `SampledActions.sample` would give a sampler
    calling `particles.sample_actions(key, logits [B, A])` per slice, so
    that such a sampled search is the discrete search, bit for bit. Only the
    draw is per slice: sampling the whole `[B, N, A]` at once saves the
    transposes in and out of a vmap (0.1 ms of a 7 ms step at the headline
    `B·N = 4096`, `A = 32`, CPU).
    """
    uniform = particles_lib.uniform_per_slice(slice_keys, policy.shape[:-1] + (1,))
    return particles_lib.sample_actions(None, policy, uniform=uniform)


@dataclasses.dataclass(frozen=True)
class SampledActions:
  """Sampled actions: candidates at the root, the user's samples below it.

  candidates: pytree of `[B, M, ...]`; action_sampler:
  `(rng_key, policy [B, ...]) -> action [B, ...]`, or None when the model's
  `policy` output is already the next action. Like `recurrent_fn`, the sampler
  sees `[B]` rows, one particle of each root in root order, and is called once
  per particle slice with its own key (batched by `jax.vmap`).
  """
  recurrent_fn: Callable
  candidates: Any
  action_sampler: Optional[Callable]
  # TSMCTS labels each particle's own sampled second action (section "sampled" in its docstring).
  samples_second_actions = True

  @property
  def num_actions(self) -> int:
    return jax.tree_util.tree_leaves(self.candidates)[0].shape[1]

  def root_actions(self, index: chex.Array):
    """The candidates `index [B, N]` points at: pytree of `[B, N, ...]`."""
    def take(x):
      i = index.reshape(index.shape + (1,) * (x.ndim - 2))
      return segments.take_along(x, i)
    return jax.tree_util.tree_map(take, self.candidates)

  def root_policy(self, root_logits: chex.Array, num_particles: int, params: chex.ArrayTree,
                  rng_key: chex.PRNGKey, embedding: chex.ArrayTree) -> chex.ArrayTree:
    """A zero policy of the model's structure: particles at the root never sample from it."""
    del root_logits
    batch_size = jax.tree_util.tree_leaves(embedding)[0].shape[0]
    action = self.chosen(jnp.zeros((batch_size,), jnp.int32))
    shapes = jax.eval_shape(lambda: self.call(params, rng_key, action, embedding).policy)
    return jax.tree_util.tree_map(
        lambda s: jnp.zeros((batch_size, num_particles) + s.shape[1:], s.dtype), shapes)

  def call(self, params: chex.ArrayTree, rng_key: chex.PRNGKey, action: chex.ArrayTree,
           embedding: chex.ArrayTree) -> ModelOutput:
    """`recurrent_fn` on one particle slice: pytrees of `[B, ...]` actions and embeddings."""
    output, next_embedding = self.recurrent_fn(params, rng_key, action, embedding)
    num_evaluations = jax.tree_util.tree_leaves(action)[0].shape[0]
    if not isinstance(output, SampledRecurrentFnOutput):
      raise ValueError("recurrent_fn of a sampled policy must return "
                       "(smctx.SampledRecurrentFnOutput, next_embedding); its first output is a "
                       f"{type(output).__name__}.")
    validation.check_model_scalars(output, num_evaluations)
    for leaf in jax.tree_util.tree_leaves(output.policy):
      if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != num_evaluations:
        raise ValueError(
            f"recurrent_fn returned a policy leaf of shape {jnp.shape(leaf)}; every leaf needs "
            f"one row per root of the batch, B = {num_evaluations} (it is called with B rows, "
            "like an mctx recurrent_fn).")
    validation.check_next_embedding(next_embedding, embedding)
    # Non-finite float policy entries are zeroed and reported, like NaN logits.
    bad = jnp.zeros((num_evaluations,), bool)
    policy = []
    for leaf in jax.tree_util.tree_leaves(output.policy):
      leaf = jnp.asarray(leaf)
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        finite = jnp.isfinite(leaf)
        bad = bad | ~jnp.all(finite.reshape(num_evaluations, -1), axis=-1)
        leaf = jnp.where(finite, leaf, 0)
      policy.append(leaf)
    policy = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(output.policy), policy)
    return ModelOutput(output.reward, output.discount, output.value, policy, next_embedding, bad)

  def sample(self, slice_keys: chex.Array, policy: chex.ArrayTree) -> chex.ArrayTree:
    """Next actions `[B, N, ...]` from the policies `[B, N, ...]`, one sample per particle.

    The sampler sees one particle slice at a time, `[B, ...]` rows with the
    slice's own key of `slice_keys [N]` (`particles.over_particle_slices`).
    """
    return particles_lib.over_particle_slices(self._sample_slice, slice_keys, policy)

  def _sample_slice(self, rng_key: chex.PRNGKey, policy: chex.ArrayTree) -> chex.ArrayTree:
    """Next actions `[B, ...]` of one particle slice, checked and cast to the candidates' dtypes."""
    batch_size = jax.tree_util.tree_leaves(policy)[0].shape[0]
    if self.action_sampler is None:
      action = policy
      source = "recurrent_fn's policy (action_sampler=None)"
    else:
      action = self.action_sampler(rng_key, policy)
      source = "action_sampler"
    validation.check_sampled_actions(action, self.candidates, batch_size, source)
    # The particles' actions keep the candidates' dtypes (a loop carry may not change type).
    return jax.tree_util.tree_map(lambda a, c: jnp.asarray(a, c.dtype), action, self.candidates)

  def chosen(self, action: chex.Array):
    """The candidate `action [B]` points at: pytree of `[B, ...]`."""
    return jax.tree_util.tree_map(lambda x: x[:, 0], self.root_actions(action[:, None]))


def sampled_root(root: SampledRootFnOutput,
                 invalid_actions: chex.Array | None) -> mctx.RootFnOutput:
  """The candidates as a discrete root with `M` actions (checked)."""
  batch_size, num_candidates = validation.check_sampled_root(root, invalid_actions)
  prior_logits = root.prior_logits
  if prior_logits is None:
    prior_logits = jnp.zeros((batch_size, num_candidates), jnp.float32)
  return mctx.RootFnOutput(prior_logits=prior_logits, value=root.value, embedding=root.embedding)


def as_action_model(recurrent_fn: Callable | ActionModel, num_actions: int) -> ActionModel:
  """A user's `recurrent_fn` is a discrete model; an action model passes through."""
  if isinstance(recurrent_fn, (DiscreteActions, SampledActions)):
    return recurrent_fn
  if not callable(recurrent_fn):
    raise ValueError(f"recurrent_fn must be callable; got {type(recurrent_fn).__name__}.")
  return DiscreteActions(recurrent_fn=recurrent_fn, num_actions=num_actions)
