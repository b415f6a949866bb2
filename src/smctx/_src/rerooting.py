"""Re-rooting at `s2`: the root step of a TSMCTS iteration (`algorithms.md` section 3).

Every particle of a candidate's group has just taken the candidate from the
root and reached a successor `s2`. Here the particles

* pool their group's `s2` samples into one chance node (mean prior
  probabilities and mean value, section 8.9);
* take their second actions: without replacement within the group (the
  `k`-th particle takes the `k`-th action of the group's Gumbel-top ranking of
  the pooled prior), but only an action that is legal in the particle's own
  state; a particle past the number of ranked actions, or whose ranked action
  its own state forbids, draws from its own prior instead;
* are reordered within their group so that particles with the same second
  label are contiguous, and are labelled by their *slot*: the index of the
  first particle of that run. A slot stands for one (group, second label)
  pair; resampling (non-decreasing ancestors) keeps each slot one contiguous
  run, so the inner search keeps `Q2` in a `[B, N]` table summed in `O(B·N)`
  (`segments.run_sum`), and `spread_to_second_labels` lays it out as
  `[B, G, L]` once per iteration for the second greedification.

For sampled actions each particle draws its own second action and its label
is its position in the group: every particle is its own slot.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from smctx._src import draws
from smctx._src import greedification
from smctx._src import particles as particles_lib
from smctx._src import segments
from smctx._src import sequential_halving
from smctx._src.base import ActionModel
from smctx._src.base import PytreeDataclass, pytree_dataclass
from smctx._src.engine import StepKeys
from smctx._src.particles import ModelStep
from smctx._src.particles import Particles


# Up to this many particles a root's particles are sorted by pairwise comparisons of their keys
# (`sequential_halving.descending_order`); beyond it, by a counting sort.
PAIRWISE_MAX_PARTICLES = sequential_halving.PAIRWISE_MAX_ACTIONS


@pytree_dataclass(frozen=True)
class RootStep(PytreeDataclass):
  """What the root step of the current iteration saw, per particle `[B, N]`.

  reward, discount: of the root transition; value: network value at `s2`;
  root_action: the candidate taken; second_label: the particle's label at
  `s2` (its second action, or for sampled actions its position in the group);
  slot: the slot the particle fed (first particle of its run of equal second
  labels). pooled_logits `[B, G, L]` and pooled_value `[B, G]`: the group's
  `s2` samples pooled as one chance node.
  """
  reward: chex.Array
  discount: chex.Array
  value: chex.Array
  root_action: chex.Array
  second_label: chex.Array
  slot: chex.Array
  pooled_logits: chex.Array
  pooled_value: chex.Array

  @classmethod
  def zeros(cls, batch_size: int, num_particles: int, num_groups: int,
            num_labels: int) -> "RootStep":
    zeros_n = jnp.zeros((batch_size, num_particles), jnp.float32)
    ints_n = jnp.zeros((batch_size, num_particles), jnp.int32)
    return cls(reward=zeros_n, discount=zeros_n, value=zeros_n, root_action=ints_n,
               second_label=ints_n, slot=ints_n,
               pooled_logits=jnp.zeros((batch_size, num_groups, num_labels), jnp.float32),
               pooled_value=jnp.zeros((batch_size, num_groups), jnp.float32))


def group_sizes_and_values(particles: Particles, step: ModelStep,
                           num_groups: int) -> tuple[chex.Array, chex.Array]:
  """Group size `[B, G]` and the group's mean value at `s2` `[B, G]` (its chance node)."""
  size = segments.segment_sum(jnp.ones_like(step.value), particles.group, num_groups)
  pooled_value = segments.segment_sum(step.value, particles.group, num_groups) / jnp.maximum(
      size, 1)
  return size, pooled_value


def _second_action_of_one_root(group: chex.Array, own_logits: chex.Array,
                               group_score: chex.Array, sampled: chex.Array) -> chex.Array:
  """Second actions `[N]` of one root: the `k`-th ranked action where legal, else `sampled`.

  group_score `[G, A]`: Gumbel noise plus the group's pooled logits; own_logits
  `[N, A]`: each particle's prior at its own `s2`.
  """
  num_actions = own_logits.shape[-1]
  position = segments.position_in_segment(group[None])[0]
  # The action ranked at the particle's position in its group's order.
  ranked = sequential_halving.action_at_position(group_score, position, group.shape[0],
                                                 rows=group)
  # Legal in the particle's own state: positive probability, as `sample_actions` reads it.
  own_mass = jnp.exp(own_logits - jnp.max(own_logits, axis=-1, keepdims=True))
  legal = segments.take_along(own_mass, ranked[:, None], axis=-1)[:, 0] > 0
  return jnp.where((position < num_actions) & legal, ranked, sampled).astype(jnp.int32)


def _discrete_second_actions(particles: Particles, step: ModelStep, keys: StepKeys,
                             num_groups: int, size: chex.Array, model: ActionModel,
                             gumbel_scale: chex.Numeric):
  """Second actions and labels `[B, N]` and the pooled prior at `s2` `[B, G, A]`."""
  batch_size = particles.value.shape[0]
  num_actions = step.policy.shape[-1]
  probs = jax.nn.softmax(step.policy, axis=-1)
  pooled_probs = segments.segment_sum(probs, particles.group, num_groups) / jnp.maximum(
      size, 1)[..., None]
  pooled_logits = jnp.log(jnp.maximum(pooled_probs, jnp.finfo(jnp.float32).tiny))
  gumbel = gumbel_scale * draws.gumbel(keys.resample, (batch_size, num_groups, num_actions))
  sampled = model.sample(keys.sample, step.policy)
  second_action = jax.vmap(_second_action_of_one_root)(
      particles.group, step.policy, gumbel + pooled_logits, sampled)
  return second_action, second_action, pooled_logits


def _sampled_second_actions(particles: Particles, step: ModelStep, keys: StepKeys,
                            num_groups: int, size: chex.Array, model: ActionModel,
                            gumbel_scale: chex.Numeric):
  """Each particle's own sampled second action, labelled by its position in the group.

  A group's `L ≤ N` labels are the second actions it sampled; as in Sampled
  MuZero their empirical distribution is the prior at `s2`: uniform over the
  labels in use, `[B, G, L]`.
  """
  del num_groups, gumbel_scale
  num_labels = particles.value.shape[1]
  second_action = model.sample(keys.sample, step.policy)
  label = segments.position_in_segment(particles.group)
  unused = jnp.arange(num_labels) >= size[..., None]  # [B, G, L]
  pooled_logits = greedification.mask_logits(jnp.zeros(unused.shape, jnp.float32), unused)
  return second_action, label, pooled_logits


def _run_order_of_one_root(group: chex.Array, label: chex.Array, num_groups: int,
                           num_labels: int) -> chex.Array:
  """The permutation `[N]` that sorts one root's particles by label within each group.

  Stable, so groups keep their positions and a particle only moves within its
  group. Up to `PAIRWISE_MAX_PARTICLES` particles the (group, label) keys are
  ranked by pairwise comparisons (`O(N²)`, a couple of fused kernels); beyond,
  a counting sort in `O(N·(G + L))`: a particle's destination is its group's
  start, plus the particles of its group with a smaller label, plus the earlier
  particles of its group with the same label.
  """
  if group.shape[0] <= PAIRWISE_MAX_PARTICLES:
    return sequential_halving.descending_order(-(group * num_labels + label))
  has_label = jax.nn.one_hot(label, num_labels, dtype=jnp.int32)  # [N, L]
  # Particles per (group, label): a float32 contraction, exact for whole counts below 2^24.
  counts = segments.segment_sum(has_label[None].astype(jnp.float32), group[None],
                                num_groups)[0].astype(jnp.int32)  # [G, L]
  smaller_label = (jnp.cumsum(counts, axis=-1) - counts)[group, label]
  position = segments.position_in_segment(group[None])[0]
  group_start = jnp.arange(group.shape[0]) - position
  seen_through = jnp.cumsum(has_label, axis=0)  # [N, L]: each label up to and with a particle
  seen = seen_through - has_label  # same label earlier in the row
  seen_before_group = seen_through[jnp.maximum(group_start - 1, 0)]
  seen_before_group = jnp.where((group_start > 0)[:, None], seen_before_group, 0)
  same_label_earlier = segments.take_along(seen - seen_before_group, label[:, None], axis=-1)[:, 0]
  destination = group_start + smaller_label + same_label_earlier
  return jnp.zeros_like(group).at[destination].set(jnp.arange(group.shape[0], dtype=group.dtype))


def reroot(particles: Particles, step: ModelStep, keys: StepKeys, num_groups: int,
           model: ActionModel, gumbel_scale: chex.Numeric) -> tuple[Particles, RootStep]:
  """Root step: particles move to `s2` and start an SMCTS there, inside their group.

  Returns the re-rooted particles (returns restarted at `s2`, labelled by
  slot, about to take their second action) and the iteration's `RootStep`.
  """
  chex.assert_equal_shape([particles.value, particles.group, step.value, step.reward])
  size, pooled_value = group_sizes_and_values(particles, step, num_groups)
  second_actions = (_sampled_second_actions if model.samples_second_actions
                    else _discrete_second_actions)
  second_action, second_label, pooled_logits = second_actions(
      particles, step, keys, num_groups, size, model, gumbel_scale)
  num_labels = pooled_logits.shape[-1]
  per_particle = (step.reward, step.discount, step.value, step.policy, step.embedding,
                  second_action, second_label, particles.label)
  if not model.samples_second_actions:  # positions are already sorted labels otherwise
    order = jax.vmap(_run_order_of_one_root, in_axes=(0, 0, None, None))(
        particles.group, second_label, num_groups, num_labels)
    per_particle = particles_lib.gather_particles(per_particle, order)
  reward, discount, value, policy, embedding, second_action, second_label, root_action = (
      per_particle)
  slot = segments.run_start_index(particles.group * num_labels + second_label)
  record = RootStep(reward=reward, discount=discount, value=value, root_action=root_action,
                    second_label=second_label, slot=slot, pooled_logits=pooled_logits,
                    pooled_value=pooled_value)
  rerooted = particles.replace(
      embedding=embedding, policy=policy, value=value, returns=jnp.zeros_like(value),
      discount_product=jnp.ones_like(value), log_weight=jnp.zeros_like(value),
      action=second_action, label=slot)
  return rerooted, record


def record_root_step(particles: Particles, step: ModelStep, num_groups: int,
                     num_labels: int) -> tuple[Particles, RootStep]:
  """Root step of a one-step iteration: what the iteration's end needs, no second actions.

  The iteration ends with this step and its particles go back to the root, so
  they take no second action and the inner search is empty (`V_SMCTS` is the
  pooled value). The particles are returned as they were.
  """
  _, pooled_value = group_sizes_and_values(particles, step, num_groups)
  batch_size, num_particles = step.value.shape
  record = RootStep.zeros(batch_size, num_particles, num_groups, num_labels).replace(
      reward=step.reward, discount=step.discount, value=step.value,
      root_action=particles.label, pooled_value=pooled_value)
  return particles, record


def _spread_one_root(table: chex.Array, group: chex.Array, record_label: chex.Array,
                     slot: chex.Array, num_groups: int, num_labels: int) -> chex.Array:
  """One root's slot table `[N]` laid out per (group, second label) `[G, L]`."""
  is_slot = slot == jnp.arange(slot.shape[0])
  flat = jnp.where(is_slot, group * num_labels + record_label, num_groups * num_labels)
  spread = jnp.zeros((num_groups * num_labels,), table.dtype).at[flat].set(table, mode="drop")
  return spread.reshape(num_groups, num_labels)


def spread_to_second_labels(table: chex.Array, group: chex.Array,
                            record: RootStep) -> chex.Array:
  """Slot statistics `[B, N]` spread to (group, second label) `[B, G, L]`.

  A slot's entry sits at the position of its first particle at re-rooting, the
  only position that writes it, so the layout is a scatter without collisions.
  """
  num_groups, num_labels = record.pooled_logits.shape[1:]
  chex.assert_equal_shape([table, group, record.slot])
  return jax.vmap(_spread_one_root, in_axes=(0, 0, 0, 0, None, None))(
      table, group, record.second_label, record.slot, num_groups, num_labels)
