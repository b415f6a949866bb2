"""Warm starts: a TSMCTS search begins where the previous move's left off (beyond the paper).

An agent stepping through an episode searches, at its next move, the state its action led to.
TSMCTS's last Sequential Halving iteration has just searched that state: the successor `s2` of
the winning candidate, with the candidate's group of particles, whose slot statistics give
`Q(s2, b)` for the second actions `b` and the particles behind each (`successor_estimates`).
The search returns them in `search_tree.extra_data.next_root`. `warm_start(output, action)`
keeps them for the rows whose agent took that action, and the next search
(`tsmcts_policy(..., warm_start=...)`) starts its Sequential Halving combination `Q_SH` from
them (`seed_halving`): the estimates count as an earlier iteration that gave each action
`weights` particles. They only refine actions the new search evaluates itself: visit counts,
and with them the completion of unvisited actions, stay the new search's own.

The estimates are about the model's `s2`. They describe the next root exactly when the model is
the environment and deterministic (a simulator, a board game); with a learned or stochastic
model they are a prior that the new search's iterations outweigh as they accumulate.
"""

from __future__ import annotations

from typing import Optional

import chex
import jax.numpy as jnp
import mctx

from smctx._src import segments
from smctx._src.base import WarmStart
from smctx._src.sequential_halving import HalvingState


def warm_start(policy_output: mctx.PolicyOutput, action: chex.Array, *,
               done: Optional[chex.Array] = None, weight: chex.Numeric = 1.0) -> WarmStart:
  """The `warm_start` of the next `tsmcts_policy` call, after the agent took `action [B]`.

  Rows whose `action` is not the one the search chose (a sampled move, an exploration step)
  keep no estimate, nor rows whose episode ended (`done [B]`, where the environment resets).
  `weight` scales the particles the estimates count for (0: none).
  """
  previous = policy_output.search_tree.extra_data.next_root
  kept = jnp.asarray(action).astype(jnp.int32) == previous.action
  if done is not None:
    kept = kept & ~jnp.asarray(done, bool)
  return previous.replace(weights=jnp.where(kept[:, None], previous.weights * weight, 0.0))


def successor_estimates(qvalues2: chex.Array, visits2: chex.Array, group: chex.Array,
                        num_particles: chex.Array, winner: chex.Array) -> WarmStart:
  """The winner's group's `Q(s2, ·)`, its particles spread over the second actions by visits.

  `qvalues2`, `visits2` `[B, G, A]`: each group's statistics per second action; `group`,
  `num_particles`, `winner` `[B]`: the winner's group, its particles, and the winner.
  """
  pick = lambda table: segments.take_along(table, group[:, None, None])[:, 0]
  visits = pick(visits2)
  weights = (num_particles[:, None] * visits
             / jnp.maximum(jnp.sum(visits, -1, keepdims=True), 1.0))
  return WarmStart(action=winner.astype(jnp.int32), qvalues=pick(qvalues2),
                   weights=weights.astype(jnp.float32))


def seed_halving(halving: HalvingState, warm: WarmStart,
                 invalid_actions: chex.Array) -> HalvingState:
  """`Q_SH` and its combination weights start from `warm`; nothing else changes."""
  usable = ~invalid_actions & jnp.isfinite(warm.qvalues) & jnp.isfinite(warm.weights)
  weights = jnp.where(usable & (warm.weights > 0), warm.weights, 0.0)
  return halving.replace(qvalues=jnp.where(weights > 0, warm.qvalues, 0.0).astype(jnp.float32),
                         weights=weights.astype(jnp.float32))
