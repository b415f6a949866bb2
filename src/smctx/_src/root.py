"""What every policy does at the search root before and after its particles run.

Before: validate, mask invalid actions (mctx convention: root only), cast to
float32, draw the Gumbel noise, and make rows with no valid action searchable
(they are searched as if every action were valid, then reported with zero
weights and action 0, `algorithms.md` section 8.12). After: assemble
`mctx.PolicyOutput` and the diagnostics.
"""

from __future__ import annotations

from typing import Optional

import chex
import jax.numpy as jnp
import mctx

from smctx._src import draws
from smctx._src import greedification
from smctx._src import particles as particles_lib
from smctx._src import segments
from smctx._src import summary_tree
from smctx._src.base import ActionModel
from smctx._src.base import PytreeDataclass, pytree_dataclass
from smctx._src.base import SearchDiagnostics
from smctx._src.base import WarmStart
from smctx._src.particles import Particles


@pytree_dataclass(frozen=True)
class PreparedRoot(PytreeDataclass):
  """The root as the engine sees it.

  prior_logits: `[B, A]` float32, max-subtracted, invalid actions at a finite
    minimum logit.
  value: `[B]` float32. embedding: `[B, ...]`.
  invalid_actions: `[B, A]` bool used by the search (all False in rows that
    have no valid action). no_valid_action: `[B]` bool.
  user_invalid_actions: `[B, A]` bool as given (all False if None), and
    actions whose logit is NaN.
  gumbel: `[B, A]` `gumbel_scale`-scaled Gumbel noise.
  nonfinite: `[B]` bool, rows whose value or logits were NaN/inf (not `-inf`).
  """
  prior_logits: chex.Array
  value: chex.Array
  embedding: chex.ArrayTree
  invalid_actions: chex.Array
  no_valid_action: chex.Array
  user_invalid_actions: chex.Array
  gumbel: chex.Array
  nonfinite: chex.Array


def prepare(rng_key: chex.PRNGKey, root: mctx.RootFnOutput, invalid_actions: chex.Array | None,
            gumbel_scale: chex.Numeric) -> PreparedRoot:
  """Masks, sanitises and adds Gumbel noise to the root (see the module docstring)."""
  raw_logits = jnp.asarray(root.prior_logits, jnp.float32)
  raw_value = jnp.asarray(root.value, jnp.float32)
  nonfinite = ~jnp.isfinite(raw_value) | jnp.any(jnp.isnan(raw_logits) | (raw_logits == jnp.inf),
                                                  axis=-1)
  # +inf logits become the row's maximum finite logit; NaN logits are invalid (below).
  raw_logits = jnp.where(raw_logits == jnp.inf, jnp.finfo(jnp.float32).max, raw_logits)
  # Every action's logit stays above the invalid actions' minimum, so a valid
  # action whose prior is 0 (logit −inf) still outranks every invalid one: a row
  # whose only valid action has logit −inf must still search and choose it.
  logits = jnp.maximum(particles_lib.sanitize_logits(raw_logits),
                       0.5 * jnp.finfo(jnp.float32).min)
  batch_size, num_actions = logits.shape
  # A NaN logit makes its action invalid (documented), as a mask would.
  user_invalid = jnp.isnan(jnp.asarray(root.prior_logits, jnp.float32))
  if invalid_actions is not None:
    user_invalid = user_invalid | jnp.asarray(invalid_actions).astype(bool)
  no_valid = jnp.all(user_invalid, axis=-1)
  invalid = user_invalid & ~no_valid[:, None]
  value = jnp.where(jnp.isfinite(raw_value), raw_value, 0.0)
  gumbel = gumbel_scale * draws.gumbel(rng_key, (batch_size, num_actions))
  return PreparedRoot(
      prior_logits=greedification.mask_logits(logits, invalid), value=value,
      embedding=root.embedding, invalid_actions=invalid, no_valid_action=no_valid,
      user_invalid_actions=user_invalid, gumbel=gumbel, nonfinite=nonfinite)


def particles_at_root(root: PreparedRoot, model: ActionModel, num_particles: int,
                      root_action: chex.Array, group: chex.Array, label: chex.Array,
                      params: chex.ArrayTree = None,
                      rng_key: chex.PRNGKey | None = None) -> Particles:
  """`N` particles per root sitting at the root state, about to take `root_action [B, N]`.

  `model` (an action model, `actions.py`) turns root action indices into
  actions; `params` and `rng_key` only serve to find the structure of a
  sampled model's policy.
  """
  batch_size = root.value.shape[0]
  shape = (batch_size, num_particles)
  return Particles(
      embedding=particles_lib.broadcast_to_particles(root.embedding, num_particles),
      action=model.root_actions(root_action),
      policy=model.root_policy(root.prior_logits, num_particles, params, rng_key, root.embedding),
      value=jnp.broadcast_to(root.value[:, None], shape),
      returns=jnp.zeros(shape, jnp.float32),
      discount_product=jnp.ones(shape, jnp.float32),
      log_weight=jnp.zeros(shape, jnp.float32),
      group=group.astype(jnp.int32),
      label=label.astype(jnp.int32))


def particles_taking(root: PreparedRoot, model: ActionModel, root_action: chex.Array,
                     params: chex.ArrayTree = None,
                     rng_key: chex.PRNGKey | None = None) -> Particles:
  """One group of particles at the root, each about to take (and labelled by) its root action."""
  return particles_at_root(root, model, root_action.shape[1], root_action,
                           group=jnp.zeros_like(root_action), label=root_action, params=params,
                           rng_key=rng_key)


def root_action_counts(root_action: chex.Array,
                       num_actions: int) -> tuple[chex.Array, chex.Array]:
  """`(particles_per_action [B, 1, A], num_considered [B, 1])` of a one-iteration search."""
  counts = segments.segment_sum(jnp.ones(root_action.shape, jnp.float32), root_action,
                                num_actions)
  return counts[:, None], jnp.sum(counts > 0, axis=-1)[:, None]


def masked_argmax(score: chex.Array, invalid_actions: chex.Array) -> chex.Array:
  """Argmax over valid actions, `[B]` int32: the first valid action of the highest score.

  A valid action scored `-inf` (SMC's log 0 for an action no particle reached)
  still beats every invalid one; a NaN score counts as `-inf`; a row with no
  valid action gets 0.
  """
  valid = ~invalid_actions
  score = jnp.where(valid & ~jnp.isnan(score), score, -jnp.inf)
  best = valid & (score == jnp.max(score, axis=-1, keepdims=True))
  return jnp.argmax(best, axis=-1).astype(jnp.int32)


def policy_output(root: PreparedRoot, *, action: chex.Array, action_weights: chex.Array,
                  tree: mctx.Tree, step_diagnostics: chex.ArrayTree,
                  particles_per_action: chex.Array, num_considered: chex.Array,
                  depths: tuple[int, ...], num_particles: int,
                  num_simulations: int,
                  next_root: Optional[WarmStart] = None) -> mctx.PolicyOutput:
  """Assembles the `PolicyOutput`; rows with no valid action get zeros and action 0.

  The search tree reports `num_simulations` (the budget), as mctx's does.
  """
  batch_size = root.value.shape[0]
  action_weights = jnp.where(root.user_invalid_actions, 0.0, action_weights)
  action_weights = jnp.where(root.no_valid_action[:, None], 0.0, action_weights)
  action = jnp.where(root.no_valid_action, 0, action).astype(jnp.int32)
  full = lambda x, dtype=jnp.int32: jnp.broadcast_to(jnp.asarray(x, dtype), (batch_size,))
  num_evaluations = num_particles * sum(depths)
  depth_per_iteration = jnp.broadcast_to(jnp.asarray(depths, jnp.int32),
                                         (batch_size, len(depths)))
  diagnostics = SearchDiagnostics(
      ess=step_diagnostics.ess,
      distinct_actions=step_diagnostics.distinct_actions,
      resampled=step_diagnostics.resampled,
      num_resamples=jnp.sum(step_diagnostics.num_resamples, axis=-1).astype(jnp.int32),
      particles_per_action=particles_per_action.astype(jnp.int32),
      num_considered=num_considered.astype(jnp.int32),
      depth=depth_per_iteration,
      num_particles=full(num_particles),
      num_evaluations=full(num_evaluations),
      nonfinite_model_outputs=jnp.sum(step_diagnostics.nonfinite, axis=-1).astype(jnp.int32),
      no_valid_action=root.no_valid_action,
      nonfinite_root=root.nonfinite,
      root_gumbel=root.gumbel,
      next_root=(WarmStart.zeros(batch_size, action_weights.shape[-1]) if next_root is None
                 else next_root))
  tree = tree.replace(extra_data=diagnostics, root_invalid_actions=root.user_invalid_actions)
  tree = summary_tree.with_budget(tree, num_simulations)
  return mctx.PolicyOutput(action=action, action_weights=action_weights, search_tree=tree)
