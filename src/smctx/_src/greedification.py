"""The root greedification operator `I(π_θ, Q)` (`algorithms.md` section 4).

Gumbel MuZero's completed-Q operator, computed with the user's own mctx
`qtransform` on the root summary tree: `σ(Q̃) = qtransform(tree, ROOT_INDEX)`,
`I(π_θ, Q) = softmax(logits + σ(Q̃))` over valid actions. The same operator
gives TSMCTS's second greedification at the states after the root.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import mctx

from smctx._src import summary_tree
from smctx._src.base import PytreeDataclass, pytree_dataclass


def mask_logits(logits: chex.Array, invalid_actions: chex.Array | None) -> chex.Array:
  """Max-subtracted logits with a finite minimum logit on invalid actions.

  As mctx: a finite minimum (not `-inf`) keeps softmax finite even when a row
  has no valid action.
  """
  logits = logits - jnp.max(logits, axis=-1, keepdims=True)
  if invalid_actions is None:
    return logits
  return jnp.where(invalid_actions, jnp.finfo(logits.dtype).min, logits)


def mixed_value(raw_value: chex.Array, qvalues: chex.Array, visits: chex.Array,
                prior_probs: chex.Array) -> chex.Array:
  """Gumbel MuZero's mixed value (Appendix D of Danihelka et al., 2022), `[...]`."""
  visited = visits > 0
  prior_probs = jnp.maximum(prior_probs, jnp.finfo(prior_probs.dtype).tiny)
  sum_probs = jnp.sum(jnp.where(visited, prior_probs, 0.0), axis=-1, keepdims=True)
  # As mctx: the visited actions' own prior mass normalises, however small (each prior is at
  # least `tiny`); only a row with no visited action divides by 1 (all its terms are masked).
  weighted_q = jnp.sum(
      jnp.where(visited, prior_probs * qvalues / jnp.where(sum_probs > 0, sum_probs, 1.0), 0.0),
      axis=-1)
  total = jnp.sum(visits, axis=-1)
  return (raw_value + total * weighted_q) / (total + 1)


@pytree_dataclass(frozen=True)
class Greedified(PytreeDataclass):
  """The root operator's results, all `[B, A]` except `value: [B]`.

  transformed: `σ(Q̃)` from the user's qtransform.
  completed: `Q̃`, completed by the mixed value, in value units.
  policy: `I(π_θ, Q)`, zero on invalid actions.
  value: `Σ_a policy(a)·Q̃(a)`.
  tree: the root summary tree (its root value is `value`).
  """
  transformed: chex.Array
  completed: chex.Array
  policy: chex.Array
  value: chex.Array
  tree: mctx.Tree


def greedify(*, prior_logits: chex.Array, raw_value: chex.Array, qvalues: chex.Array,
             visits: chex.Array, qtransform: mctx.QTransform,
             invalid_actions: chex.Array | None = None, extra_data: Any = None) -> Greedified:
  """Applies `I(π_θ, Q)` to a batch of roots. `prior_logits` must be masked."""
  provisional_value = mixed_value(raw_value, qvalues, visits, jax.nn.softmax(prior_logits, -1))
  completed = jnp.where(visits > 0, qvalues, provisional_value[..., None])  # Q̃
  tree_fields = dict(prior_logits=prior_logits, raw_value=raw_value, qvalues=qvalues,
                     visits=visits, node_value=provisional_value,
                     invalid_actions=invalid_actions, extra_data=extra_data)
  # The qtransform reads the root's rows only; the full tree is built for the
  # caller (and compiled away when the caller does not use it).
  root_only = summary_tree.root_tree(**tree_fields, root_only=True)
  transformed = jax.vmap(qtransform, in_axes=[0, None])(root_only, mctx.Tree.ROOT_INDEX)
  tree = summary_tree.root_tree(**tree_fields)
  policy = jax.nn.softmax(mask_logits(prior_logits + transformed, invalid_actions), axis=-1)
  if invalid_actions is not None:
    policy = jnp.where(invalid_actions, 0.0, policy)
  value = jnp.sum(policy * completed, axis=-1)
  tree = tree.replace(node_values=tree.node_values.at[:, mctx.Tree.ROOT_INDEX].set(value))
  return Greedified(transformed=transformed, completed=completed, policy=policy, value=value,
                    tree=tree)
