"""A checking mode that turns data problems into errors, with `jax.experimental.checkify`.

By default a search never fails on data: NaN from the model, non-finite root
inputs and rows with no valid action give defined, finite outputs and are
reported in `search_tree.extra_data`. `checked(policy)` is for users who want
such data to be an error instead.
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import jax.numpy as jnp
import mctx
from jax.experimental import checkify

from smctx._src.base import SearchDiagnostics


def check_diagnostics(diagnostics: SearchDiagnostics) -> None:
  """`checkify.check`s the data problems a search reported."""
  checkify.check(~jnp.any(diagnostics.nonfinite_root),
                 "smctx: root.value or root.prior_logits is NaN/inf in {n} rows",
                 n=jnp.sum(diagnostics.nonfinite_root))
  checkify.check(jnp.all(diagnostics.nonfinite_model_outputs == 0),
                 "smctx: recurrent_fn returned NaN/inf for {n} particle-steps",
                 n=jnp.sum(diagnostics.nonfinite_model_outputs))
  checkify.check(~jnp.any(diagnostics.no_valid_action),
                 "smctx: invalid_actions marks every action invalid in {n} rows",
                 n=jnp.sum(diagnostics.no_valid_action))


def checked(policy: Callable[..., mctx.PolicyOutput]) -> Callable:
  """Wraps an smctx policy so that data problems become `checkify` errors.

  The wrapped function takes the policy's arguments and returns
  `(error, policy_output)`; `error.throw()` raises if the root or the model
  produced NaN/inf or a row had no valid action. It works under `jax.jit`:

      search = jax.jit(smctx.checked(smctx.tsmcts_policy), static_argnums=(3, 4))
      error, output = search(params, key, root, recurrent_fn, 64)
      error.throw()
  """

  @functools.wraps(policy)
  def search(params: chex.ArrayTree, rng_key: chex.PRNGKey, root: mctx.RootFnOutput,
             recurrent_fn: mctx.RecurrentFn, num_simulations: int,
             invalid_actions: chex.Array | None = None, *args, **kwargs):
    def run(params: chex.ArrayTree, rng_key: chex.PRNGKey, root: mctx.RootFnOutput,
            invalid_actions: chex.Array | None) -> mctx.PolicyOutput:
      output = policy(params, rng_key, root, recurrent_fn, num_simulations, invalid_actions,
                      *args, **kwargs)
      check_diagnostics(output.search_tree.extra_data)
      return output

    return checkify.checkify(run)(params, rng_key, root, invalid_actions)

  return search
