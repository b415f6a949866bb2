"""Trace-time checks of static arguments and shapes.

Every message names the argument, the value received and what is accepted, so
that a mistake fails at trace time, not as a silently wrong search.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import mctx

from smctx._src import engine


def _is_int(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_positive_int(name: str, value, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if not _is_int(value) or value < 1:
    accepted = "a positive Python int" + (" or None" if allow_none else "")
    raise ValueError(f"{name}={value!r} is not accepted; expected {accepted}.")


def check_choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not accepted; expected one of {list(choices)}.")


def check_positive_number(name: str, value) -> None:
  """Rejects a non-positive or non-finite Python number; traced values pass."""
  if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
    if value.ndim == 0:
      value = float(value)
  if isinstance(value, numbers.Real):
    if not (value > 0 and value < float("inf")):
      raise ValueError(f"{name}={value!r} is not accepted; expected a finite number > 0.")


def check_fraction(name: str, value) -> None:
  if not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
    raise ValueError(f"{name}={value!r} is not accepted; expected a number in [0, 1].")


def engine_config(*, num_simulations, num_particles, max_depth, temperature, td_scale,
                  resample, ess_threshold, resampling_method, num_groups: int = 1,
                  num_labels: int = 1) -> engine.EngineConfig:
  """Checks the static arguments every policy shares and returns the engine's config."""
  check_positive_int("num_simulations", num_simulations)
  check_positive_int("num_particles", num_particles, allow_none=True)
  check_positive_int("max_depth", max_depth, allow_none=True)
  check_positive_number("temperature", temperature)
  check_choice("td_scale", td_scale, engine.TD_SCALES)
  check_choice("resample", resample, engine.RESAMPLE_MODES)
  check_fraction("ess_threshold", ess_threshold)
  check_choice("resampling_method", resampling_method, engine.RESAMPLING_METHODS)
  return engine.EngineConfig(
      temperature=temperature, td_scale=td_scale, resample=resample,
      ess_threshold=ess_threshold, resampling_method=resampling_method, num_groups=num_groups,
      num_labels=num_labels)


def check_root(root, invalid_actions) -> tuple[int, int]:
  """Checks the root's shapes; returns `(batch_size, num_actions)`."""
  if not isinstance(root, mctx.RootFnOutput):
    raise ValueError(f"root must be an mctx.RootFnOutput; got {type(root).__name__}.")
  logits_shape = jnp.shape(root.prior_logits)
  if len(logits_shape) != 2:
    raise ValueError(
        f"root.prior_logits has shape {logits_shape}; expected [B, num_actions].")
  batch_size, num_actions = logits_shape
  if num_actions < 1:
    raise ValueError(f"root.prior_logits has shape {logits_shape}; num_actions must be >= 1.")
  if jnp.shape(root.value) != (batch_size,):
    raise ValueError(
        f"root.value has shape {jnp.shape(root.value)}; expected ({batch_size},) to match "
        f"root.prior_logits {logits_shape}.")
  for leaf in jax.tree_util.tree_leaves(root.embedding):
    if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != batch_size:
      raise ValueError(
          f"root.embedding has a leaf of shape {jnp.shape(leaf)}; every leaf needs the batch "
          f"size {batch_size} as its leading axis.")
  if invalid_actions is not None and jnp.shape(invalid_actions) != logits_shape:
    raise ValueError(
        f"invalid_actions has shape {jnp.shape(invalid_actions)}; expected {logits_shape} "
        "(the shape of root.prior_logits).")
  return batch_size, num_actions
