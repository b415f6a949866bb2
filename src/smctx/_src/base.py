"""Types shared across smctx: the action-model protocol and type aliases.

The public input and output types of the policies live with mctx's own
(`mctx.RootFnOutput`, `mctx.RecurrentFnOutput`, `mctx.PolicyOutput`) or are
re-exported from `smctx` (the sampled-action types and `SearchDiagnostics`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import chex
import mctx


class ModelOutput(NamedTuple):
  """One model call on every particle; `bad_policy` marks non-finite policies."""
  reward: chex.Array
  discount: chex.Array
  value: chex.Array
  policy: Any
  next_embedding: Any
  bad_policy: chex.Array


class ActionModel(Protocol):
  """How particles take actions and call the user's model (`actions.py`).

  The particle engine never looks inside an action: it asks an action model
  for the actions of particles leaving the root, one model call on every
  particle, and each particle's next action drawn from the policy at its state.
  """
  num_actions: int
  # TSMCTS: True when each particle draws its own second action (labels are
  # positions in the group), False when second actions are action indices.
  samples_second_actions: bool

  def root_actions(self, index: chex.Array) -> chex.ArrayTree:
    """Actions `[B, N, ...]` of particles leaving the root by candidate index `[B, N]`."""

  def root_policy(self, root_logits: chex.Array, num_particles: int, params: mctx.Params,
                  rng_key: chex.PRNGKey, embedding: chex.ArrayTree) -> chex.ArrayTree:
    """The policy `[B, N, ...]` particles at the root carry."""

  def call(self, params: mctx.Params, rng_key: chex.PRNGKey, action: chex.ArrayTree,
           embedding: chex.ArrayTree) -> ModelOutput:
    """One call of the user's model on every particle."""

  def sample(self, rng_key: chex.PRNGKey, policy: chex.ArrayTree) -> chex.ArrayTree:
    """Next actions `[B, N, ...]` drawn from the particles' policies."""


LoopFn = Callable[..., Any]
