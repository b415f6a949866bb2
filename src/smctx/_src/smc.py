"""SMC: the SPO-style baseline (`algorithms.md` section 1).

Root actions are sampled from the prior, particles are weighted by TD
advantages and resampled, and the policy target is the weighted occupancy of
root actions among the final particles. It shows the two defects that SMCTS
and TSMCTS fix: variance growing with depth, and path degeneracy.
"""

from __future__ import annotations

import functools
import dataclasses
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import mctx

from smctx._src import draws
from smctx._src import engine
from smctx._src import start as start_lib
from smctx._src import root as root_lib
from smctx._src import segments
from smctx._src import summary_tree
from smctx._src.base import SearchDiagnostics
from smctx._src.engine import DEFAULT_TEMPERATURE
from smctx._src.particles import Particles

def smc_policy(
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
    gumbel_scale: chex.Numeric = 1.0,
    num_particles: Optional[int] = None,
    num_steps: Optional[int] = None,
    temperature: float = DEFAULT_TEMPERATURE,
    td_scale: str = "running",
    resample: str = "ess",
    ess_threshold: float = 0.5,
    resampling_method: str = "systematic",
    max_num_considered_actions: int = 16,
) -> mctx.PolicyOutput[SearchDiagnostics]:
  """Runs the SMC baseline search and returns an `mctx.PolicyOutput`.

  `N = num_particles` particles per root sample their root action from the
  prior, then take `T ≈ num_simulations // N` steps, each one
  `recurrent_fn` call over all `B·N` particles. The policy target is
  `π_SMC(a) = Σ_n w̄_n·1[root_action_n = a]`, the weighted occupancy of root
  actions among the final particles.

  In the shape descriptions `B` is the batch size and `A` the number of actions.

  Args:
    params: forwarded to `recurrent_fn`.
    rng_key: random key, consumed.
    root: `mctx.RootFnOutput` with `prior_logits [B, A]`, `value [B]` and
      `embedding [B, ...]`.
    recurrent_fn: mctx's `(params, rng_key, action [B], embedding [B, ...])
      -> (RecurrentFnOutput, next_embedding)`, called as mctx calls it: `[B]`
      rows in root order (one particle of each root), vmapped over the `N`
      particles with one key each (one batched evaluation per step).
    num_simulations: model evaluations per root (mctx's unit), a Python int.
    invalid_actions: `[B, A]` bool/int mask, nonzero for invalid root actions.
    max_depth: caps the number of sequential steps `T`.
    loop_fn: `fori_loop`-like function driving the depth loop.
    qtransform: accepted for drop-in compatibility; unused by SMC (its target
      is an occupancy, not a greedified Q).
    gumbel_scale: scale of the Gumbel noise used to sample `action` from the
      policy target (0 gives its argmax).
    num_particles: width `N`; None chooses it from the budget.
    num_steps: the number of sequential `recurrent_fn` calls (the search's
      latency on an accelerator); the width is then `num_simulations //
      num_steps`, so `num_simulations` stays the budget and the two set
      latency and width separately. None: both chosen from the budget. Not
      together with `num_particles`.
    temperature: SMC temperature of the TD log-weights.
    td_scale: "running" (TD errors divided by their running RMS) or "none".
    resample: "ess", "always" or "never".
    ess_threshold: resample when `ESS < ess_threshold·N`.
    resampling_method: "systematic" or "multinomial".
    max_num_considered_actions: accepted for drop-in compatibility; unused.

  Returns:
    `mctx.PolicyOutput(action [B] int32, action_weights [B, A] float32,
    search_tree)`; `search_tree` is an `mctx.Tree` of the root and one child
    per action (visits = final particles per root action, Q = their weighted
    mean return) and `search_tree.extra_data` a `SearchDiagnostics`.
  """
  del qtransform  # SMC's target is an occupancy, not a greedified Q.
  options = start_lib.SearchOptions(
      num_simulations, num_particles, max_depth, gumbel_scale, max_num_considered_actions,
      temperature, td_scale, resample, ess_threshold, resampling_method,
      num_steps=num_steps)
  start = start_lib.start_search(rng_key, root, recurrent_fn, invalid_actions, options, "smc")
  prepared, layout, num_actions = start.root, start.layout, start.num_actions
  # Root actions sampled from the prior: the occupancy estimator requires it.
  root_action = draws.categorical(
      start.init_key, prepared.prior_logits[:, None, :],
      shape=(start.batch_size, start.num_particles)).astype(jnp.int32)
  particles = root_lib.particles_taking(prepared, start.model, root_action, params,
                                        start.init_key)
  config = dataclasses.replace(start.config, backpropagate=False)
  particles, _, diagnostics = engine.run_smc(
      params, start.search_key, start.model, particles, layout.num_steps, config, loop_fn)

  action_weights, tree = _occupancy_target(particles, prepared, num_actions)
  # Sampling from π_SMC with the Gumbel-max trick (greedy when gumbel_scale=0).
  log_target = jnp.where(action_weights > 0, jnp.log(jnp.maximum(action_weights, 1e-30)),
                         -jnp.inf)
  action = root_lib.masked_argmax(log_target + prepared.gumbel, prepared.invalid_actions)
  particles_per_action, num_considered = root_lib.root_action_counts(root_action, num_actions)
  return root_lib.policy_output(
      prepared, action=action, action_weights=action_weights, tree=tree,
      step_diagnostics=diagnostics, particles_per_action=particles_per_action,
      num_considered=num_considered, depths=layout.depths,
      num_particles=start.num_particles,
      num_simulations=num_simulations)


def _occupancy_target(particles: Particles, root: root_lib.PreparedRoot,
                      num_actions: int) -> tuple[chex.Array, mctx.Tree]:
  """`π_SMC`, the weighted occupancy of root actions among the final particles, and its tree.

  The tree's Q-values are the weighted mean returns of each root action's final
  particles, its visits their number, its value the weighted mean return.
  """
  w = jax.nn.softmax(particles.log_weight, axis=-1)
  occupancy = functools.partial(segments.segment_sum, segment_ids=particles.label,
                                num_segments=num_actions)
  action_weights = occupancy(w)
  weighted_returns = occupancy(w * particles.bootstrapped_return)
  qvalues = jnp.where(action_weights > 0, weighted_returns / jnp.maximum(action_weights, 1e-30),
                      0.0)
  value = jnp.sum(w * particles.bootstrapped_return, axis=-1)
  tree = summary_tree.root_tree(
      prior_logits=root.prior_logits, raw_value=root.value, qvalues=qvalues,
      visits=occupancy(jnp.ones_like(w)), node_value=value, invalid_actions=root.invalid_actions)
  return action_weights, tree
