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

from smctx._src import draws
from smctx._src import engine
from smctx._src import start as start_lib
from smctx._src import greedification
from smctx._src import root as root_lib
from smctx._src import segments
from smctx._src import sequential_halving
from smctx._src import validation
from smctx._src.base import SearchDiagnostics
from smctx._src.engine import DEFAULT_TEMPERATURE

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
    num_steps: Optional[int] = None,
    temperature: float = DEFAULT_TEMPERATURE,
    td_scale: str = "running",
    resample: str = "ess",
    ess_threshold: float = 0.5,
    resampling_method: str = "systematic",
    max_num_considered_actions: int = 16,
    td_lambda: float = 1.0,
) -> mctx.PolicyOutput[SearchDiagnostics]:
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
    num_steps: the number of sequential `recurrent_fn` calls (the search's
      latency on an accelerator); the width is then `num_simulations //
      num_steps`, so `num_simulations` stays the budget and the two set
      latency and width separately. None: both chosen from the budget. Not
      together with `num_particles`.
    td_lambda: λ of the returns the search's value means take in, per
      particle: `v_0 + Σ_j λ^(j−1)·Γ_(j−1)·δ_j`, the `k`-step returns weighted
      `(1−λ)·λ^(k−1)` (the paper's open question 1; `docs/algorithms.md`,
      "TD(λ) backups"). 1 (default) is the bootstrapped return `G + Γ·v`, as
      specified. Below 1 deep returns count less: measured to help deep
      layouts on problems with informative values and to cost Snake, so
      not the default.
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
  validation.check_td_lambda(td_lambda)
  options = start_lib.SearchOptions(
      num_simulations, num_particles, max_depth, gumbel_scale, max_num_considered_actions,
      temperature, td_scale, resample, ess_threshold, resampling_method,
      num_steps=num_steps)
  start = start_lib.start_search(rng_key, root, recurrent_fn, invalid_actions, options, "smcts")
  prepared, layout = start.root, start.layout
  root_action = _root_actions(start.init_key, prepared, start.num_particles)
  particles = root_lib.particles_taking(prepared, start.model, root_action, params,
                                        start.init_key)
  config = dataclasses.replace(start.config, td_lambda=td_lambda)
  _, values, diagnostics = engine.run_smc(
      params, start.search_key, start.model, particles, layout.num_steps, config, loop_fn)

  greedified = greedification.greedify(
      prior_logits=prepared.prior_logits, raw_value=prepared.value,
      qvalues=values.qvalues, visits=values.visits, qtransform=qtransform,
      invalid_actions=prepared.invalid_actions)
  # As Gumbel MuZero, the action is chosen among the actions the search
  # visited: an unvisited action's completed Q is a guess (the mixed value),
  # which the min-max rescaling can put above every searched one.
  action = root_lib.masked_argmax(
      prepared.gumbel + prepared.prior_logits + greedified.transformed,
      prepared.invalid_actions | (values.visits == 0))
  particles_per_action, num_considered = root_lib.root_action_counts(
      root_action, start.num_actions)
  return root_lib.policy_output(
      prepared, action=action, action_weights=greedified.policy, tree=greedified.tree,
      step_diagnostics=diagnostics, particles_per_action=particles_per_action,
      num_considered=num_considered, depths=layout.depths, num_particles=start.num_particles,
      num_simulations=num_simulations)


def _root_actions(rng_key: chex.PRNGKey, root: root_lib.PreparedRoot,
                  num_particles: int) -> chex.Array:
  """Gumbel-top-`min(N, valid)` root actions without replacement, the rest sampled. `[B, N]`."""
  batch_size, num_actions = root.prior_logits.shape
  valid = ~root.invalid_actions
  order = sequential_halving.rank_candidates(root.gumbel + root.prior_logits, valid,
                                             count=num_particles)
  num_valid = jnp.sum(valid, axis=-1, keepdims=True)
  slot = jnp.arange(num_particles)[None]
  top = segments.take_along(order, jnp.minimum(slot, num_actions - 1))
  sampled = draws.categorical(
      rng_key, root.prior_logits[:, None, :], shape=(batch_size, num_particles))
  return jnp.where(slot < num_valid, top, sampled).astype(jnp.int32)
