"""SMCTS: SMC with back-propagation of root action values (`algorithms.md` section 2).

The particle system is SMC's; the root keeps running means `Q(a)` of the
weighted returns of every root action and returns the greedified policy
`I(π_θ, Q)`. Root actions are assigned without replacement first
(Gumbel-top-`min(N, valid)`), the remaining particles by prior sampling
(section 8.6), so that a small `N` still covers the best-looking actions.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import mctx

from smctx._src import actions
from smctx._src import budget
from smctx._src import engine
from smctx._src import greedification
from smctx._src import root as root_lib
from smctx._src import sequential_halving
from smctx._src import summary_tree
from smctx._src import validation

DEFAULT_TEMPERATURE = 0.3


def smcts_policy(
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
    temperature: float = DEFAULT_TEMPERATURE,
    td_scale: str = "running",
    resample: str = "ess",
    ess_threshold: float = 0.5,
    resampling_method: str = "systematic",
    max_num_considered_actions: int = 16,
) -> mctx.PolicyOutput[summary_tree.SearchDiagnostics]:
  """Runs SMCTS (SMC with root back-propagation) and returns an `mctx.PolicyOutput`.

  `N` particles per root take `T ≈ num_simulations // N` steps, one
  `recurrent_fn` call over all `B·N` particles each. After every step each
  root action's weighted mean bootstrapped return enters a running mean
  `Q(a)`; the result is Gumbel MuZero's completed-Q operator applied to
  `Q`: `action_weights = softmax(logits + σ(Q̃))`.

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
    qtransform: mctx qtransform giving `σ(Q̃)` at the root.
    gumbel_scale: scale of the Gumbel noise (root assignment and the action
      `argmax g + logits + σ(Q̃)`); 0 gives a greedy action.
    num_particles: width `N`; None chooses it from the budget.
    temperature: SMC temperature of the TD log-weights.
    td_scale: "running" (TD errors divided by their running RMS) or "none".
    resample: "ess", "always" or "never".
    ess_threshold: resample when `ESS < ess_threshold·N`.
    resampling_method: "systematic" or "multinomial".
    max_num_considered_actions: accepted for drop-in compatibility; unused
      (SMCTS assigns `min(N, valid actions)` root actions without replacement).

  Returns:
    `mctx.PolicyOutput(action [B] int32, action_weights [B, A] float32,
    search_tree)`; `search_tree` is an `mctx.Tree` of the root and one child
    per action (visits = particle-steps under the action, Q = running mean)
    and `search_tree.extra_data` a `SearchDiagnostics`.
  """
  config = engine.engine_config(
      num_simulations=num_simulations, num_particles=num_particles, max_depth=max_depth,
      temperature=temperature, td_scale=td_scale, resample=resample,
      ess_threshold=ess_threshold, resampling_method=resampling_method,
      gumbel_scale=gumbel_scale, max_num_considered_actions=max_num_considered_actions)
  batch_size, num_actions = validation.check_root(root, invalid_actions)
  model = actions.as_action_model(recurrent_fn, num_actions)
  layout = budget.smc_layout(num_simulations, num_actions, num_particles, max_depth,
                             assign_without_replacement=True)
  n = layout.num_particles
  gumbel_key, init_key, search_key = jax.random.split(rng_key, 3)
  prepared = root_lib.prepare(gumbel_key, root, invalid_actions, gumbel_scale)

  # Gumbel-top-min(N, valid) root actions without replacement, the rest sampled.
  valid = ~prepared.invalid_actions
  order = sequential_halving.rank_candidates(prepared.gumbel + prepared.prior_logits, valid)
  num_valid = jnp.sum(valid, axis=-1, keepdims=True)
  slot = jnp.arange(n)[None]
  top = jnp.take_along_axis(order, jnp.minimum(slot, num_actions - 1), axis=1)
  sampled = jax.random.categorical(
      init_key, prepared.prior_logits[:, None, :], shape=(batch_size, n))
  root_action = jnp.where(slot < num_valid, top, sampled).astype(jnp.int32)
  particles = root_lib.particles_taking(prepared, model, root_action, params, init_key)
  config = dataclasses.replace(config, num_labels=num_actions)
  _, values, diagnostics = engine.run_smc(
      params, search_key, model, particles, layout.num_steps, config, loop_fn)

  greedified = greedification.greedify(
      prior_logits=prepared.prior_logits, raw_value=prepared.value,
      qvalues=values.qvalues, visits=values.visits, qtransform=qtransform,
      invalid_actions=prepared.invalid_actions)
  action = root_lib.masked_argmax(
      prepared.gumbel + prepared.prior_logits + greedified.transformed, prepared.invalid_actions)
  particles_per_action, num_considered = root_lib.root_action_counts(root_action, num_actions)
  return root_lib.policy_output(
      prepared, action=action, action_weights=greedified.policy, tree=greedified.tree,
      step_diagnostics=diagnostics, particles_per_action=particles_per_action,
      num_considered=num_considered, depths=layout.depths, num_particles=n)
