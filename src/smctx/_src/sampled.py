"""Sampled-action (continuous) policies: SMC, SMCTS and TSMCTS over candidate actions.

The root offers `M` candidate actions sampled by the user's policy (any pytree
of `[B, M, ...]` arrays). The search treats them as a discrete root with `M`
actions (prior: uniform over the candidates, or `root.prior_logits`), so
Sequential Halving, the inverse-variance combination, the greedification and
the root summary tree are the discrete ones. Below the root every particle
draws its next action from the policy the model returns there, with the
user's `action_sampler`. In TSMCTS each particle of a candidate's group draws
its own second action at `s2`, and the second greedification uses the empirical
prior over those samples (uniform), as Sampled MuZero does.

The three functions run the discrete policies' code with a sampled action
model (`actions.SampledActions`): one engine, no copied loop.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import chex
import jax
import mctx

from smctx._src import actions
from smctx._src import smc
from smctx._src import smcts
from smctx._src import tsmcts
from smctx._src.base import SampledPolicyOutput
from smctx._src.base import SampledRootFnOutput

_ARGS_DOC = """
  In the shape descriptions `B` is the batch size and `M` the number of
  candidates. `recurrent_fn` and `action_sampler` see `[B]` rows in root
  order, as mctx calls a `recurrent_fn`: one particle of each root, vmapped
  over the `N` particles with one key each (one batched evaluation per step).

  Args:
    params: forwarded to `recurrent_fn`.
    rng_key: random key, consumed.
    root: `smctx.SampledRootFnOutput(candidates [B, M, ...] pytree, value [B],
      embedding [B, ...], prior_logits [B, M] or None for uniform)`.
    recurrent_fn: `(params, rng_key, action [B, ...] pytree, embedding
      [B, ...]) -> (smctx.SampledRecurrentFnOutput(reward, discount, value,
      policy), next_embedding)`; `policy` describes the policy at the next state.
    num_simulations: model evaluations per root, a Python int.
    invalid_actions: `[B, M]` mask, nonzero for candidates never to choose
      (e.g. padding).
    max_depth: caps the depth, as for the discrete policy.
    loop_fn: `fori_loop`-like function driving the depth loop.
    action_sampler: `(rng_key, policy [B, ...]) -> action [B, ...]`, drawing
      one next action per particle (independently for copies made by
      resampling); None when the model's `policy` output already is the next
      action (copies of a resampled particle then share it).
    The other keywords are the discrete policy's ({name}), with "actions"
      read as "candidates".

  Returns:
    `smctx.SampledPolicyOutput(action [B] int32 candidate index,
    chosen_action [B, ...] pytree, action_weights [B, M], search_tree)`.
"""


def _run(policy: Callable[..., mctx.PolicyOutput], params: mctx.Params, rng_key: chex.PRNGKey,
         root: SampledRootFnOutput, recurrent_fn: Callable, num_simulations: int,
         invalid_actions: Optional[chex.Array], max_depth: Optional[int], loop_fn: mctx.LoopFn,
         action_sampler: Optional[Callable], kwargs: dict) -> SampledPolicyOutput:
  """Runs the discrete `policy` on the candidates as a discrete root, with a sampled model."""
  if action_sampler is not None and not callable(action_sampler):
    raise ValueError(
        f"action_sampler must be callable or None; got {type(action_sampler).__name__}.")
  if not callable(recurrent_fn):
    raise ValueError(f"recurrent_fn must be callable; got {type(recurrent_fn).__name__}.")
  discrete_root = actions.sampled_root(root, invalid_actions)
  model = actions.SampledActions(recurrent_fn=recurrent_fn, candidates=root.candidates,
                                 action_sampler=action_sampler)
  output = policy(params, rng_key, discrete_root, model, num_simulations, invalid_actions,
                  max_depth, loop_fn, **kwargs)
  return SampledPolicyOutput(action=output.action, chosen_action=model.chosen(output.action),
                             action_weights=output.action_weights,
                             search_tree=output.search_tree)


def _sampled_policy(policy: Callable[..., mctx.PolicyOutput], name: str, summary: str) -> Callable:
  """The sampled-action version of a discrete policy (same engine, same code)."""

  def sampled_policy(
      params: mctx.Params,
      rng_key: chex.PRNGKey,
      root: SampledRootFnOutput,
      recurrent_fn: Callable,
      num_simulations: int,
      invalid_actions: Optional[chex.Array] = None,
      max_depth: Optional[int] = None,
      loop_fn: mctx.LoopFn = jax.lax.fori_loop,
      *,
      action_sampler: Optional[Callable] = None,
      **kwargs,
  ) -> SampledPolicyOutput:
    return _run(policy, params, rng_key, root, recurrent_fn, num_simulations, invalid_actions,
                max_depth, loop_fn, action_sampler, kwargs)

  sampled_policy.__name__ = sampled_policy.__qualname__ = name
  # The signature shows the discrete policy's keywords instead of `**kwargs`.
  own = inspect.signature(sampled_policy).parameters.values()
  keywords = [p for p in inspect.signature(policy).parameters.values()
              if p.kind is inspect.Parameter.KEYWORD_ONLY]
  sampled_policy.__signature__ = inspect.signature(sampled_policy).replace(  # type: ignore[attr-defined]
      parameters=[p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD] + keywords)
  sampled_policy.__doc__ = summary + _ARGS_DOC.format(name=f"`smctx.{policy.__name__}`")
  return sampled_policy


sampled_tsmcts_policy = _sampled_policy(
    tsmcts.tsmcts_policy, "sampled_tsmcts_policy",
    """Runs TSMCTS over sampled candidate actions (continuous control).

  Sequential Halving over the `M` candidates; each candidate's group of
  particles takes it, then runs SMCTS from the successor with second actions
  sampled by `action_sampler`; the second greedification over those samples
  gives `Q(candidate)`, combined across iterations by inverse variance.
  `action_weights = softmax(prior_logits + σ(Q̃))` over the candidates.
""")

sampled_smcts_policy = _sampled_policy(
    smcts.smcts_policy, "sampled_smcts_policy",
    """Runs SMCTS over sampled candidate actions (continuous control).

  The particles take the candidates without replacement first (Gumbel-top),
  then sample their actions from the model's policies with `action_sampler`;
  every candidate keeps a running mean of its particles' weighted returns.
""")

sampled_smc_policy = _sampled_policy(
    smc.smc_policy, "sampled_smc_policy",
    """Runs the SMC baseline over sampled candidate actions.

  Root candidates are drawn from their prior, the particles then sample their
  actions with `action_sampler`; `action_weights` is the weighted occupancy of
  the candidates among the final particles.
""")
