"""Back-propagation: running per-action value means kept at the search root.

This is what turns SMC into SMCTS (`algorithms.md` section 2). At every depth
step each (group, label) segment that still has particles gets the weighted
mean of its particles' bootstrapped returns, and a running mean takes it in
with the number of particles behind it as its weight (one visit per
particle-step, as one return per simulation in MCTS). A segment that loses
all its particles keeps its last estimate: information is never lost.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp

from smctx._src import segments
from smctx._src.particles import Particles


@chex.dataclass(frozen=True)
class ActionValues:
  """Running means of returns per (group, label).

  qvalues: `[B, G, L]` running mean `Q` (0 where unvisited).
  visits: `[B, G, L]` particle-steps taken in by the mean.
  """
  qvalues: chex.Array
  visits: chex.Array

  @classmethod
  def zeros(cls, batch_size: int, num_groups: int, num_labels: int) -> "ActionValues":
    z = jnp.zeros((batch_size, num_groups, num_labels), jnp.float32)
    return cls(qvalues=z, visits=z)


def depth_estimates(particles: Particles, num_groups: int, num_labels: int):
  """Weighted mean return `q_t` and particle count `c_t` of every segment.

  Weights are max-subtracted *within each segment* before normalising
  (`algorithms.md` section 8.5): normalising over the whole root would
  underflow the weights of every segment but the dominant one.
  Returns `(q [B, G, L], count [B, G, L])`.
  """
  num_segments = num_groups * num_labels
  segment = particles.group * num_labels + particles.label
  lw = particles.log_weight
  w = jnp.exp(lw - segments.segment_max(lw, segment, num_segments, gather=True))
  by_segment = lambda x: segments.segment_sum_2d(x, particles.group, num_groups,
                                                 particles.label, num_labels)
  sum_w = by_segment(w)
  sum_wg = by_segment(w * particles.bootstrapped_return)
  count = by_segment(jnp.ones_like(w))
  q = jnp.where(count > 0, sum_wg / jnp.maximum(sum_w, 1e-30), 0.0)
  return q, count


def update(values: ActionValues, particles: Particles) -> ActionValues:
  """`Q ← (n·Q + c_t·q_t)/(n + c_t)`, `n += c_t` for every segment with particles."""
  _, num_groups, num_labels = values.qvalues.shape
  q_t, c_t = depth_estimates(particles, num_groups, num_labels)
  visits = values.visits + c_t
  running = (values.visits * values.qvalues + c_t * q_t) / jnp.maximum(visits, 1)
  qvalues = jnp.where(c_t > 0, running, values.qvalues)
  return ActionValues(qvalues=qvalues, visits=visits)
