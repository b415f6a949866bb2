"""TSMCTS: SMCTS inside Sequential Halving at the root (`algorithms.md` section 3).

One `loop_fn` loop runs every sequential step of every Sequential Halving
iteration, so the model is traced once and each step is exactly one
`recurrent_fn` call over all `B·N` particles:

* the first step of an iteration takes each group's candidate root action
  from the root state and *re-roots* the particles at the successor `s2`
  (their returns restart there and their label becomes their slot: one
  per (group, second action), `_reroot`);
* the other steps are SMCTS steps inside each group (resampling never
  crosses groups, so a particle never changes root action);
* the last step finalises the iteration: the second greedification gives
  `V_SMCTS(s2)` (an iteration of one step has no inner search and takes the
  pooled value `v̄(s2)`), `Q_i(a) = r + discount·V_SMCTS(s2)` enters the
  inverse-variance combination `Q_SH`, the candidates are halved by
  `g + logits + σ(Q̃_SH)`, and the particles return to the root split over the
  survivors.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np

from smctx._src import actions
from smctx._src import backpropagation
from smctx._src import budget
from smctx._src import engine
from smctx._src import greedification
from smctx._src import particles as particles_lib
from smctx._src import root as root_lib
from smctx._src import segments
from smctx._src import sequential_halving
from smctx._src import summary_tree
from smctx._src import validation

DEFAULT_TEMPERATURE = 0.3


@chex.dataclass(frozen=True)
class RootStep:
  """What the root step of the current iteration saw, per particle `[B, N]`.

  reward, discount: of the root transition; value: network value at `s2`;
  root_action: the candidate taken; second_label: the particle's label at
  `s2` (its second action, or for sampled actions its position in the group).
  pooled_logits `[B, G, L]` and pooled_value `[B, G]`: the group's `s2`
  samples pooled as one chance node (mean of the prior *probabilities* and of
  the values, section 8.9).
  """
  reward: chex.Array
  discount: chex.Array
  value: chex.Array
  root_action: chex.Array
  second_label: chex.Array
  pooled_logits: chex.Array
  pooled_value: chex.Array


@chex.dataclass(frozen=True)
class HalvingState:
  """Root state of Sequential Halving, `O(A)` per root whatever the budget.

  qvalues, weights: `Q_SH` and `Σ_j N_j(a)` of the inverse-variance
  combination `[B, A]`; visits: model evaluations under each action `[B, A]`;
  considered: candidates still alive `[B, A]`; particles_per_action
  `[B, K, A]` and num_considered `[B, K]` are diagnostics.
  """
  qvalues: chex.Array
  weights: chex.Array
  visits: chex.Array
  considered: chex.Array
  particles_per_action: chex.Array
  num_considered: chex.Array


def _schedule(depths):
  """Static per-step flags: first / last step of an iteration, iteration index."""
  first, last, iteration = [], [], []
  for i, depth in enumerate(depths):
    for t in range(depth):
      first.append(t == 0)
      last.append(t == depth - 1)
      iteration.append(i)
  return (jnp.asarray(np.array(first)), jnp.asarray(np.array(last)),
          jnp.asarray(np.array(iteration, np.int32)))


def _pooled_state(particles, step, num_groups):
  """Group size `[B, G]` and the group's `s2` samples pooled as one chance node (section 8.9)."""
  size = segments.segment_sum(jnp.ones_like(step.value), particles.group, num_groups)
  pooled_value = segments.segment_sum(step.value, particles.group, num_groups) / jnp.maximum(
      size, 1)
  return size, pooled_value


def _discrete_second_actions(particles, step, rng_keys, num_groups, size, model):
  """Second actions of discrete TSMCTS and the pooled prior at `s2` `[B, G, A]`.

  Second actions are assigned without replacement within each group
  (Gumbel-top over the group's pooled prior, as SMCTS does at its root,
  section 8.6), the particles beyond the number of plausible actions by
  sampling from their own prior. The label at `s2` is the second action.
  """
  gumbel_key, sample_key = rng_keys[0], rng_keys[1]
  batch_size = particles.value.shape[0]
  num_actions = step.policy.shape[-1]
  probs = jax.nn.softmax(step.policy, axis=-1)
  pooled_probs = segments.segment_sum(probs, particles.group, num_groups) / jnp.maximum(
      size, 1)[..., None]
  pooled_logits = jnp.log(jnp.maximum(pooled_probs, jnp.finfo(jnp.float32).tiny))
  gumbel = jax.random.gumbel(gumbel_key, (batch_size, num_groups, num_actions))
  rank = sequential_halving.descending_rank(gumbel + pooled_logits)  # [B, G, A]
  position = segments.position_in_segment(particles.group)
  own_rank = jnp.take_along_axis(rank, particles.group[..., None], axis=1)  # [B, N, A]
  # The action ranked at the particle's position in its group (no sort, no inverse permutation).
  at_position = own_rank == jnp.minimum(position, num_actions - 1)[..., None]
  top = jnp.sum(jnp.where(at_position, jnp.arange(num_actions), 0), axis=-1)
  top_prob = jnp.take_along_axis(
      jnp.take_along_axis(pooled_probs, particles.group[..., None], axis=1), top[..., None],
      axis=2)[..., 0]
  sampled = model.sample(sample_key, step.policy)
  second_action = jnp.where((position < num_actions) & (top_prob > 0), top, sampled)
  second_action = second_action.astype(jnp.int32)
  return second_action, second_action, pooled_logits


def _sampled_second_actions(particles, step, rng_keys, num_groups, size, model):
  """Second actions of sampled TSMCTS and the pooled prior over them `[B, G, L]`.

  Each particle draws its own second action from the policy at its `s2` and
  is labelled by its position in the group, so a group's `L ≤ N` labels are
  the second actions it sampled. As in Sampled MuZero, their empirical
  distribution is the prior at `s2`: uniform over the labels in use.
  """
  del num_groups
  num_labels = particles.value.shape[1]
  second_action = model.sample(rng_keys[0], step.policy)
  label = segments.position_in_segment(particles.group)
  unused = jnp.arange(num_labels) >= size[..., None]  # [B, G, L]
  pooled_logits = greedification.mask_logits(jnp.zeros(unused.shape, jnp.float32), unused)
  return second_action, label, pooled_logits


def _reroot(particles, step, rng_keys, num_groups, model):
  """Root step: particles move to `s2` and start an SMCTS there, inside their group.

  The particles' back-propagation label becomes their *slot*: the index of
  the first particle of the group with the same second label. A slot stands
  for one (group, second label) pair, so `Q2` is kept in a `[B, N]` table
  during the iteration rather than a `[B, G, L]` one (32× larger at `N = 16`,
  `A = 32`, and updated every step), and is spread back to `[B, G, L]` once,
  when the iteration finishes.
  """
  size, pooled_value = _pooled_state(particles, step, num_groups)
  second_actions = (_sampled_second_actions if model.samples_second_actions
                    else _discrete_second_actions)
  second_action, second_label, pooled_logits = second_actions(
      particles, step, rng_keys, num_groups, size, model)
  num_second_labels = pooled_logits.shape[-1]
  if model.samples_second_actions:  # labels are positions in the group: every slot is its own
    slot = jnp.broadcast_to(jnp.arange(second_label.shape[1], dtype=jnp.int32), second_label.shape)
  else:
    slot = segments.first_in_segment(particles.group * num_second_labels + second_label,
                                     num_groups * num_second_labels)
  record = _root_record(particles, step, second_label, pooled_logits, pooled_value)
  rerooted = particles.replace(
      embedding=step.embedding, policy=step.policy, value=step.value,
      returns=jnp.zeros_like(step.value), discount_product=jnp.ones_like(step.value),
      log_weight=jnp.zeros_like(step.value), action=second_action, label=slot)
  return rerooted, record


def _record_root_step(particles, step, num_groups, num_second_labels):
  """Root step of a one-step iteration: what `finish_iteration` needs, no second actions.

  The iteration ends with this step and its particles go back to the root, so
  they take no second action and the inner search is empty (`V_SMCTS` is the
  pooled value). The particles are returned as they were.
  """
  _, pooled_value = _pooled_state(particles, step, num_groups)
  batch_size = step.value.shape[0]
  no_second_labels = jnp.zeros((batch_size, num_groups, num_second_labels), jnp.float32)
  record = _root_record(particles, step, jnp.zeros_like(particles.label), no_second_labels,
                        pooled_value)
  return particles, record


def _root_record(particles, step, second_label, pooled_logits, pooled_value) -> RootStep:
  """What the iteration keeps of its root step (particles still labelled by root action)."""
  return RootStep(reward=step.reward, discount=step.discount, value=step.value,
                  root_action=particles.label, second_label=second_label,
                  pooled_logits=pooled_logits, pooled_value=pooled_value)


def _static_or_cond(flags, index, if_true, if_false, *references):
  """`if_true()` where `flags[index]`, else `if_false()`; no `lax.cond` when `flags` is constant."""
  if all(flags):
    return if_true()
  if not any(flags):
    return if_false()
  branch = lambda fn: lambda: engine.match_varying(fn(), *references)
  return jax.lax.cond(jnp.asarray(flags)[index], branch(if_true), branch(if_false))


def _values_by_second_label(values, particles, first, num_groups):
  """Slot statistics `[B, N]` spread to (group, second label) `[B, G, L]`.

  Every pair's visits sit on its one slot (the others of the pair are never
  carried), so the sums copy each slot's values exactly.
  """
  num_second_labels = first.pooled_logits.shape[-1]
  spread = lambda x: segments.segment_sum_2d(x, particles.group, num_groups, first.second_label,
                                             num_second_labels)
  visits = spread(values.visits)
  qvalues = spread(jnp.where(values.visits > 0, values.qvalues, 0.0))
  return qvalues, visits


def tsmcts_policy(
    params: mctx.Params,
    rng_key: chex.PRNGKey,
    root: mctx.RootFnOutput,
    recurrent_fn: mctx.RecurrentFn,
    num_simulations: int,
    invalid_actions: Optional[chex.Array] = None,
    max_depth: Optional[int] = None,
    loop_fn: mctx.LoopFn = jax.lax.fori_loop,
    *,
    qtransform: mctx.QTransform = mctx.qtransform_completed_by_mix_value,
    max_num_considered_actions: int = 16,
    gumbel_scale: chex.Numeric = 1.0,
    num_particles: Optional[int] = None,
    temperature: float = DEFAULT_TEMPERATURE,
    td_scale: str = "running",
    resample: str = "ess",
    ess_threshold: float = 0.5,
    resampling_method: str = "systematic",
    elimination: str = "sequential_halving",
) -> mctx.PolicyOutput[summary_tree.SearchDiagnostics]:
  """Runs Twice Sequential Monte Carlo Tree Search; a drop-in for `mctx.gumbel_muzero_policy`.

  The root's `m1` Gumbel-top candidates go through `K = ceil(log2 m1)`
  Sequential Halving iterations. In each, the `N` particles are split over the
  surviving candidates; each group takes its candidate from the root and runs
  SMCTS from the successor state for `T_SH − 1` more steps; the improved
  policy at the successor applied to its own value estimates (the second
  greedification) gives `Q_i(a)`, combined across iterations by inverse
  variance into `Q_SH(a)`. A search makes about `num_simulations // N`
  sequential `recurrent_fn` calls, each over all `B·N` particles, and keeps
  `O(B·N + B·A)` memory whatever the budget.

  In the shape descriptions `B` is the batch size and `A` the number of actions.

  Args:
    params: forwarded to `recurrent_fn`.
    rng_key: random key, consumed.
    root: `mctx.RootFnOutput` with `prior_logits [B, A]`, `value [B]` and
      `embedding [B, ...]`.
    recurrent_fn: mctx's `(params, rng_key, action [B], embedding [B, ...])
      -> (RecurrentFnOutput, next_embedding)`, called as mctx calls it: `[B]`
      rows in root order (one particle of each root), vmapped over the `N`
      particles with one key each (one batched evaluation per step);
      `value` and `prior_logits` are from the point of view of the player to
      move in the next state, `discount` is `gamma`, 0 at termination, `-1`
      for two-player games.
    num_simulations: model evaluations per root (mctx's unit), a Python int.
    invalid_actions: `[B, A]` bool/int mask, nonzero for invalid root actions.
    max_depth: caps the depth `T_SH` of every iteration.
    loop_fn: `fori_loop`-like function driving the depth loop.
    qtransform: mctx qtransform giving `σ(Q̃)`, at the root and at the
      successor states (second greedification).
    max_num_considered_actions: most root candidates `m1` (also at most the
      number of actions and `N`).
    gumbel_scale: scale of the Gumbel noise of the candidates and the final
      action; 0 makes the search's choices deterministic given its values.
    num_particles: width `N`; None chooses it from the budget (depth per
      iteration near 6). A budget below `N·K` shrinks the width instead of
      failing.
    temperature: SMC temperature of the TD log-weights.
    td_scale: "running" (TD errors divided by their running RMS) or "none".
    resample: "ess", "always" or "never" (within each candidate's group).
    ess_threshold: a group resamples when `ESS < ess_threshold·N_group`.
    resampling_method: "systematic" or "multinomial".
    elimination: "sequential_halving" keeps the best half of the candidates by
      `g + logits + σ(Q̃_SH)` after each iteration; "random" keeps a uniformly
      random half instead and picks the final action by the same score among
      all candidates ever evaluated (an ablation of Sequential Halving's budget
      allocation: same budget, same estimates, no selection).

  Returns:
    `mctx.PolicyOutput(action [B] int32, action_weights [B, A] float32,
    search_tree)`: `action` is the Sequential Halving winner,
    `action_weights = softmax(logits + σ(Q̃_SH))` (zero on invalid actions),
    `search_tree` an `mctx.Tree` of the root and one child per action
    (visits = evaluations under the action, Q = `Q_SH`,
    `node_values[:, 0]` = search value) whose `extra_data` is a
    `SearchDiagnostics`.
  """
  config = engine.engine_config(
      num_simulations=num_simulations, num_particles=num_particles, max_depth=max_depth,
      temperature=temperature, td_scale=td_scale, resample=resample,
      ess_threshold=ess_threshold, resampling_method=resampling_method,
      gumbel_scale=gumbel_scale, max_num_considered_actions=max_num_considered_actions)
  validation.check_choice("elimination", elimination, validation.ELIMINATIONS)
  batch_size, num_actions = validation.check_root(root, invalid_actions)
  model = actions.as_action_model(recurrent_fn, num_actions)
  layout = budget.tsmcts_layout(num_simulations, num_actions, num_particles,
                                max_num_considered_actions, max_depth)
  n, m1 = layout.num_particles, layout.num_considered
  num_iterations = len(layout.depths)
  gumbel_key, search_key, elimination_key = jax.random.split(rng_key, 3)
  keys = engine.step_keys(search_key, layout.num_steps)
  prepared = root_lib.prepare(gumbel_key, root, invalid_actions, gumbel_scale)
  # Labels at s2: the second actions (discrete) or the particles' positions in their group.
  num_second_labels = n if model.samples_second_actions else num_actions
  # Back-propagation labels are slots (particle indices, see `_reroot`).
  config = dataclasses.replace(config, num_groups=m1, num_labels=n)
  is_first, is_last, iteration_of_step = _schedule(layout.depths)
  # Iterations of one step take no second action and have no inner search.
  one_step_iteration = tuple(depth == 1 for depth in layout.depths)
  in_one_step_iteration = tuple(depth == 1 for depth in layout.depths for _ in range(depth))
  depth_of_iteration = jnp.asarray(layout.depths, jnp.float32)
  keep_after_iteration = jnp.asarray(
      [-(-m // 2) for m in layout.considered_per_iteration], jnp.int32)

  def fresh_start(score, considered):
    group, root_action, _ = sequential_halving.assign_particles(score, considered, n)
    particles = root_lib.particles_at_root(prepared, model, n, root_action, group,
                                           label=root_action, params=params, rng_key=search_key)
    values = backpropagation.ActionValues.zeros(batch_size, n)
    return particles, values

  def greedify_root(halving):
    return greedification.greedify(
        prior_logits=prepared.prior_logits, raw_value=prepared.value,
        qvalues=halving.qvalues, visits=halving.visits, qtransform=qtransform,
        invalid_actions=prepared.invalid_actions)

  def finish_iteration(carry, iteration):
    particles, values, td_scale, first, halving = carry
    def second_greedification():
      # V_SMCTS = Σ_b I(π(s2), Q2)(b)·Q̃2(b), per group.
      flat = lambda x: x.reshape((batch_size * m1,) + x.shape[2:])
      qvalues2, visits2 = _values_by_second_label(values, particles, first, m1)
      inner = greedification.greedify(
          prior_logits=flat(first.pooled_logits), raw_value=flat(first.pooled_value),
          qvalues=flat(qvalues2), visits=flat(visits2), qtransform=qtransform)
      return inner.value.reshape(batch_size, m1)

    # An iteration of one step has no inner search: V_SMCTS is the pooled value.
    v_search = _static_or_cond(one_step_iteration, iteration, lambda: first.pooled_value,
                               second_greedification, carry)
    improvement = jnp.take_along_axis(v_search - first.pooled_value, particles.group, axis=1)
    # Q_i(a): group mean of r + discount·(v(s2) + V_SMCTS − pooled v(s2)); with a
    # deterministic model this is exactly r + discount·V_SMCTS(s2).
    q_particle = first.reward + first.discount * (first.value + improvement)
    count = segments.segment_sum(jnp.ones_like(q_particle), first.root_action, num_actions)
    q_iter = segments.segment_sum(q_particle, first.root_action, num_actions) / jnp.maximum(
        count, 1)
    q_sh, weights = sequential_halving.combine_iterations(
        halving.qvalues, halving.weights, q_iter, count)
    halving = halving.replace(
        qvalues=q_sh, weights=weights,
        visits=halving.visits + count * depth_of_iteration[iteration],
        particles_per_action=halving.particles_per_action.at[:, iteration].set(count),
        num_considered=halving.num_considered.at[:, iteration].set(
            jnp.sum(count > 0, axis=-1).astype(jnp.int32)))
    score = prepared.gumbel + prepared.prior_logits + greedify_root(halving).transformed
    if elimination == "random":
      keep_score = jax.random.uniform(jax.random.fold_in(elimination_key, iteration), score.shape)
    else:
      keep_score = score
    considered = sequential_halving.top_considered(
        keep_score, halving.considered, keep_after_iteration[iteration])
    halving = halving.replace(considered=considered)
    particles, values = fresh_start(score, considered)
    return engine.match_varying((particles, values, td_scale, first, halving), carry)

  def body(i, carry):
    particles, values, td_scale, first, halving = carry
    step = particles_lib.mutate(params, keys[i, 0], model, particles.action, particles.embedding)

    def root_step(_):
      def reroot():
        rerooted, record = _reroot(particles, step, keys[i, 1:], m1, model)
        return rerooted, record, engine.distinct_labels_per_group(rerooted, n)

      def record_only():
        rerooted, record = _record_root_step(particles, step, m1, num_second_labels)
        return rerooted, record, jnp.zeros((batch_size,), jnp.float32)

      rerooted, record, distinct = _static_or_cond(in_one_step_iteration, i, record_only, reroot,
                                                   carry, step)
      diag = engine.StepDiagnostics(
          ess=jnp.full((batch_size,), float(n)),
          distinct_actions=distinct,
          resampled=jnp.zeros((batch_size,), bool),
          num_resamples=jnp.zeros((batch_size,), jnp.int32), nonfinite=step.nonfinite)
      return engine.match_varying((rerooted, values, td_scale, record, diag), carry, step)

    def inner_step(_):
      p, v, td, diag = engine.smc_step(particles, values, td_scale, step, keys[i, 1:], config,
                                       allow_resample=~is_last[i], model=model)
      return engine.match_varying((p, v, td, first, diag), carry, step)

    particles, values, td_scale, first, diag = jax.lax.cond(
        is_first[i], root_step, inner_step, None)
    carry = jax.lax.cond(is_last[i], finish_iteration, lambda c, _: c,
                         (particles, values, td_scale, first, halving), iteration_of_step[i])
    return carry, diag

  # Gumbel-top-m1 candidates among valid actions.
  initial_score = prepared.gumbel + prepared.prior_logits
  considered = sequential_halving.top_considered(initial_score, ~prepared.invalid_actions, m1)
  particles, values = fresh_start(initial_score, considered)
  zeros_a = jnp.zeros((batch_size, num_actions), jnp.float32)
  halving = HalvingState(
      qvalues=zeros_a, weights=zeros_a, visits=zeros_a, considered=considered,
      particles_per_action=jnp.zeros((batch_size, num_iterations, num_actions), jnp.float32),
      num_considered=jnp.zeros((batch_size, num_iterations), jnp.int32))
  zeros_n = jnp.zeros((batch_size, n), jnp.float32)
  first = RootStep(reward=zeros_n, discount=zeros_n, value=zeros_n,
                   root_action=jnp.zeros((batch_size, n), jnp.int32),
                   second_label=jnp.zeros((batch_size, n), jnp.int32),
                   pooled_logits=jnp.zeros((batch_size, m1, num_second_labels), jnp.float32),
                   pooled_value=jnp.zeros((batch_size, m1), jnp.float32))
  carry = (particles, values, engine.TDScale.zeros(batch_size), first, halving)
  (_, _, _, _, halving), diagnostics = engine.run_steps(
      loop_fn, layout.num_steps, body, carry, batch_size, reference=(params, search_key))

  greedified = greedify_root(halving)
  # The Sequential Halving winner: the best-scored survivor of the last halving.
  score = prepared.gumbel + prepared.prior_logits + greedified.transformed
  if elimination == "random":
    # The ablation changes only where the budget goes: the final choice still
    # uses every estimate, over all candidates that were ever evaluated.
    action = root_lib.masked_argmax(score, ~(halving.visits > 0))
  else:
    action = root_lib.masked_argmax(score, ~halving.considered)
  return root_lib.policy_output(
      prepared, action=action, action_weights=greedified.policy, tree=greedified.tree,
      step_diagnostics=diagnostics, particles_per_action=halving.particles_per_action,
      num_considered=halving.num_considered, depths=layout.depths, num_particles=n)
