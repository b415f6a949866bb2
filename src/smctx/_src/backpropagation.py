"""Back-propagation: running per-label value means kept at the search root.

This is what turns SMC into SMCTS (`algorithms.md` section 2). At every depth
step each label that still has particles gets the weighted mean of its
particles' bootstrapped returns, and a running mean takes it in with the number
of particles behind it as its weight (one visit per particle-step, as one
return per simulation in MCTS). A label that loses all its particles keeps its
last estimate: information is never lost.

A particle's label names the statistic it feeds: its root action in SMC and
SMCTS, its *slot* in TSMCTS (one per (group, second action) pair, see
`tsmcts.py`), so the table is `[B, L]` and never `[B, groups, actions]`.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp

from smctx._src import segments
from smctx._src.base import PytreeDataclass, pytree_dataclass
from smctx._src.particles import Particles


@pytree_dataclass(frozen=True)
class ActionValues(PytreeDataclass):
  """Running means of returns per label.

  qvalues: `[B, L]` running mean `Q` (0 where unvisited).
  visits: `[B, L]` particle-steps taken in by the mean.
  """
  qvalues: chex.Array
  visits: chex.Array

  @classmethod
  def zeros(cls, batch_size: int, num_labels: int) -> "ActionValues":
    z = jnp.zeros((batch_size, num_labels), jnp.float32)
    return cls(qvalues=z, visits=z)


def depth_estimates(particles: Particles, num_labels: int,
                    labels_are_runs: bool = False) -> tuple[chex.Array, chex.Array]:
  """Weighted mean return `q_t` and particle count `c_t` of every label.

  Weights are max-subtracted *within each label* before normalising
  (`algorithms.md` section 8.5): normalising over the whole root would
  underflow the weights of every label but the dominant one.
  `labels_are_runs`: every label is one contiguous run of particles (TSMCTS's
  slots), summed in `O(B·N)` instead of through a `[B, N, L]` membership.
  Returns `(q [B, L], count [B, L])`.
  """
  lw = particles.log_weight
  w = jnp.exp(lw - segments.segment_max(lw, particles.label, num_labels, gather=True))
  # One reduction for the three sums: [B, N, 3] -> [B, L, 3].
  stacked = jnp.stack([w, w * particles.bootstrapped_return, jnp.ones_like(w)], axis=-1)
  label_sum = segments.run_sum if labels_are_runs else segments.segment_sum
  sum_w, sum_wg, count = jnp.moveaxis(label_sum(stacked, particles.label, num_labels), -1, 0)
  q = jnp.where(count > 0, sum_wg / jnp.maximum(sum_w, 1e-30), 0.0)
  return q, count


def update(values: ActionValues, particles: Particles,
           labels_are_runs: bool = False) -> ActionValues:
  """`Q ← (n·Q + c_t·q_t)/(n + c_t)`, `n += c_t` for every label with particles."""
  q_t, c_t = depth_estimates(particles, values.qvalues.shape[-1], labels_are_runs)
  visits = values.visits + c_t
  running = (values.visits * values.qvalues + c_t * q_t) / jnp.maximum(visits, 1)
  qvalues = jnp.where(c_t > 0, running, values.qvalues)
  return ActionValues(qvalues=qvalues, visits=visits)
