"""The root summary tree: root statistics laid out as an `mctx.Tree`.

smctx keeps no tree, only per-root-action statistics. Laying them out as an
`mctx.Tree` with the root (`ROOT_INDEX = 0`) and one child per action lets the
user's `qtransform` (mctx's own functions) and `Tree.summary()` work unchanged.
A child's Q-value is stored as `children_values` with reward 0 and discount 1,
so `tree.qvalues(ROOT_INDEX)` returns it exactly. Embeddings are not stored
(the tree holds a `[B, num_nodes]` placeholder): a search never keeps states.

The tree a policy returns reports the search's budget as `num_simulations`
(mctx derives it from the node count, which is `A`, not the budget, here); its
nodes are `tree.node_visits.shape[-1]`, the root and one per action.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import chex
import jax.numpy as jnp
import mctx


def root_tree(*, prior_logits: chex.Array, raw_value: chex.Array, qvalues: chex.Array,
              visits: chex.Array, node_value: chex.Array,
              invalid_actions: chex.Array | None = None, extra_data: Any = None,
              root_only: bool = False) -> mctx.Tree:
  """Builds a two-level `mctx.Tree` of `[B]` roots with `A` children each.

  With `root_only`, the tree holds the root node alone (its children's
  statistics are in the root's `children_*` rows, which is all a qtransform at
  the root reads). The search uses it for its internal greedifications: the
  full tree's `[B, A+1, A]` children arrays are mostly zeros, and building them
  for TSMCTS's `B·m1` inner roots at every iteration cost more than the
  qtransform itself.

  Args:
    prior_logits: `[B, A]` root prior logits (already masked).
    raw_value: `[B]` the network's value of the root.
    qvalues: `[B, A]` action values (anything where `visits == 0`).
    visits: `[B, A]` model evaluations spent under each action.
    node_value: `[B]` the search value of the root.
    invalid_actions: `[B, A]` bool mask, True for invalid.
    extra_data: stored as `tree.extra_data`.
  """
  batch_size, num_actions = prior_logits.shape
  num_nodes = 1 if root_only else num_actions + 1
  f32 = jnp.float32
  visits = visits.astype(f32)
  qvalues = jnp.where(visits > 0, qvalues, 0.0).astype(f32)
  zeros_na = jnp.zeros((batch_size, num_nodes, num_actions), f32)

  def root_row(x):
    return zeros_na.at[:, 0].set(x.astype(zeros_na.dtype))

  child_ids = jnp.arange(1, num_actions + 1, dtype=jnp.int32)
  children_index = jnp.full((batch_size, num_nodes, num_actions), mctx.Tree.UNVISITED, jnp.int32)
  children_index = children_index.at[:, 0].set(
      jnp.where(visits > 0, child_ids[None], mctx.Tree.UNVISITED))
  children = slice(0, num_nodes - 1)  # the child nodes' entries (none when root_only)
  node_visits = jnp.concatenate([jnp.sum(visits, -1, keepdims=True), visits[:, children]], axis=1)
  node_values = jnp.concatenate([node_value[:, None].astype(f32), qvalues[:, children]], axis=1)
  raw_values = jnp.concatenate([raw_value[:, None].astype(f32), qvalues[:, children]], axis=1)
  parents = jnp.concatenate(
      [jnp.full((batch_size, 1), mctx.Tree.NO_PARENT, jnp.int32),
       jnp.zeros((batch_size, num_nodes - 1), jnp.int32)], axis=1)
  action_from_parent = jnp.concatenate(
      [jnp.full((batch_size, 1), mctx.Tree.NO_PARENT, jnp.int32),
       jnp.broadcast_to(jnp.arange(num_nodes - 1, dtype=jnp.int32), (batch_size, num_nodes - 1))],
      axis=1)
  if invalid_actions is None:
    invalid_actions = jnp.zeros((batch_size, num_actions), bool)
  return mctx.Tree(
      node_visits=node_visits.astype(jnp.int32),
      raw_values=raw_values,
      node_values=node_values,
      parents=parents,
      action_from_parent=action_from_parent,
      children_index=children_index,
      children_prior_logits=root_row(prior_logits),
      children_visits=root_row(visits).astype(jnp.int32),
      children_rewards=zeros_na,
      children_discounts=root_row(jnp.ones_like(qvalues)),
      children_values=root_row(qvalues),
      embeddings=jnp.zeros((batch_size, num_nodes), f32),
      root_invalid_actions=invalid_actions.astype(bool),
      extra_data=extra_data)


@functools.cache
def _budget_tree_class(num_simulations: int) -> type[mctx.Tree]:
  """An `mctx.Tree` subclass whose `num_simulations` is the static budget."""

  @chex.dataclass(frozen=True)
  class SummaryTree(mctx.Tree):
    """`mctx.Tree` of a root and its actions; `num_simulations` is the search's budget."""

    @property
    def num_simulations(self) -> int:
      return num_simulations

  SummaryTree.__qualname__ = SummaryTree.__name__ = f"SummaryTree{num_simulations}"
  return SummaryTree


def with_budget(tree: mctx.Tree, num_simulations: int) -> mctx.Tree:
  """`tree` as an `mctx.Tree` (subclass) whose `num_simulations` is the budget.

  The class is static per budget, so the tree stays a pytree of arrays (jit,
  vmap and `tree.replace` keep it) and `num_simulations` stays a Python int.
  """
  fields = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
  return _budget_tree_class(int(num_simulations))(**fields)
