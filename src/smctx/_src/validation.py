"""Trace-time checks of static arguments and shapes.

Every message names the argument, the value received and what is accepted, so
that a mistake fails at trace time, not as a silently wrong search.
"""

from __future__ import annotations

import numbers
from typing import Any

import chex
import jax
import jax.numpy as jnp
import mctx

from smctx._src.base import WarmStart

RESAMPLE_MODES = ("ess", "always", "never")
RESAMPLING_METHODS = ("systematic", "multinomial")
TD_SCALES = ("running", "none")
ELIMINATIONS = ("sequential_halving", "random")
TSMCTS_VARIANTS = ("smctx", "paper")


def _is_int(x: Any) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if not _is_int(value) or value < 1:
    accepted = "a positive Python int" + (" or None" if allow_none else "")
    raise ValueError(f"{name}={value!r} is not accepted; expected {accepted}.")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not accepted; expected one of {list(choices)}.")


def check_positive_number(name: str, value: Any) -> None:
  """Rejects a non-positive or non-finite Python number; traced values pass."""
  if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
    if value.ndim == 0:
      value = float(value)
  if isinstance(value, numbers.Real):
    if not 0 < float(value) < float("inf"):
      raise ValueError(f"{name}={value!r} is not accepted; expected a finite number > 0.")


def check_fraction(name: str, value: Any) -> None:
  if not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
    raise ValueError(f"{name}={value!r} is not accepted; expected a number in [0, 1].")


ITERATION_WEIGHTS = ("visits", "variance")


def check_td_lambda(value: Any) -> None:
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not 0.0 < float(value) <= 1.0):
    raise ValueError(f"td_lambda={value!r} is not accepted; expected a number in (0, 1].")


def check_warm_start(warm_start: Any, batch_size: int, num_actions: int) -> None:
  """`warm_start` must be a `smctx.WarmStart` shaped for this batch and these actions."""
  if not isinstance(warm_start, WarmStart):
    raise ValueError(f"warm_start={type(warm_start).__name__} is not accepted; expected a "
                     "smctx.WarmStart (smctx.warm_start(previous_output, action)) or None.")
  expected = {"action": (batch_size,), "qvalues": (batch_size, num_actions),
              "weights": (batch_size, num_actions)}
  for name, shape in expected.items():
    got = tuple(getattr(warm_start, name).shape)
    if got != shape:
      raise ValueError(f"warm_start.{name} has shape {got}; expected {shape} (batch "
                       f"{batch_size}, {num_actions} actions).")


def check_nonnegative_number(name: str, value: Any) -> None:
  """Rejects a negative or non-finite Python number; traced values pass."""
  if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer) and value.ndim == 0:
    value = float(value)
  if isinstance(value, numbers.Real) and not (0 <= float(value) < float("inf")):
    raise ValueError(f"{name}={value!r} is not accepted; expected a finite number >= 0.")


def check_width_and_steps(num_particles: int | None, num_steps: int | None) -> None:
  """`num_steps` sets the width (`num_simulations // num_steps`): not both."""
  check_positive_int("num_particles", num_particles, allow_none=True)
  check_positive_int("num_steps", num_steps, allow_none=True)
  if num_particles is not None and num_steps is not None:
    raise ValueError(f"num_particles={num_particles!r} and num_steps={num_steps!r} are not "
                     "accepted together: num_steps sets the width to num_simulations // "
                     "num_steps; give one of them.")


def check_static_args(*, num_simulations: int, num_particles: int | None,
                      num_steps: int | None, max_depth: int | None, temperature: float,
                      td_scale: str, resample: str,
                      ess_threshold: float, resampling_method: str, gumbel_scale: chex.Numeric,
                      max_num_considered_actions: int) -> None:
  """Checks the static arguments every policy shares."""
  check_positive_int("num_simulations", num_simulations)
  check_width_and_steps(num_particles, num_steps)
  check_positive_int("max_depth", max_depth, allow_none=True)
  check_positive_int("max_num_considered_actions", max_num_considered_actions)
  check_positive_number("temperature", temperature)
  check_nonnegative_number("gumbel_scale", gumbel_scale)
  check_choice("td_scale", td_scale, TD_SCALES)
  check_choice("resample", resample, RESAMPLE_MODES)
  check_fraction("ess_threshold", ess_threshold)
  check_choice("resampling_method", resampling_method, RESAMPLING_METHODS)


def _is_float_dtype(x: Any) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def check_root(root: mctx.RootFnOutput, invalid_actions: chex.Array | None) -> tuple[int, int]:
  """Checks the root's shapes; returns `(batch_size, num_actions)`."""
  if not isinstance(root, mctx.RootFnOutput):
    raise ValueError(f"root must be an mctx.RootFnOutput; got {type(root).__name__}.")
  for name in ("prior_logits", "value"):
    if not _is_float_dtype(getattr(root, name)):
      raise ValueError(f"root.{name} has dtype {jnp.result_type(getattr(root, name))}; "
                       "expected a floating dtype (float16, bfloat16, float32 or float64).")
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
  check_embedding_batch(root.embedding, batch_size)
  if invalid_actions is not None:
    if jnp.shape(invalid_actions) != logits_shape:
      raise ValueError(
          f"invalid_actions has shape {jnp.shape(invalid_actions)}; expected {logits_shape} "
          "(the shape of root.prior_logits).")
    dtype = jnp.result_type(invalid_actions)
    if not (jnp.issubdtype(dtype, jnp.bool_) or jnp.issubdtype(dtype, jnp.integer)):
      raise ValueError(f"invalid_actions has dtype {dtype}; expected bool or an integer dtype "
                       "(nonzero/True marks an invalid action).")
  return batch_size, num_actions


def check_embedding_batch(embedding: chex.ArrayTree, batch_size: int) -> None:
  """Checks that every leaf of the root's embedding leads with the batch size."""
  for leaf in jax.tree_util.tree_leaves(embedding):
    if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != batch_size:
      raise ValueError(
          f"root.embedding has a leaf of shape {jnp.shape(leaf)}; every leaf needs the batch "
          f"size {batch_size} as its leading axis.")


def check_model_output(output: mctx.RecurrentFnOutput, next_embedding: chex.ArrayTree,
                       embedding: chex.ArrayTree, num_evaluations: int,
                       num_actions: int) -> None:
  """Checks what `recurrent_fn` returned for one particle slice of `num_evaluations = B` rows."""
  if not isinstance(output, mctx.RecurrentFnOutput):
    raise ValueError("recurrent_fn must return (mctx.RecurrentFnOutput, next_embedding); "
                     f"its first output is a {type(output).__name__}.")
  check_model_scalars(output, num_evaluations)
  expected = (num_evaluations, num_actions)
  if jnp.shape(output.prior_logits) != expected:
    raise ValueError(
        f"recurrent_fn returned prior_logits of shape {jnp.shape(output.prior_logits)}; "
        f"expected {expected}: one row per root of the batch (B = {num_evaluations}; it is "
        f"called with B rows, like an mctx recurrent_fn), with num_actions = {num_actions} as "
        "in root.prior_logits.")
  if not _is_float_dtype(output.prior_logits):
    raise ValueError(f"recurrent_fn returned prior_logits of dtype "
                     f"{jnp.result_type(output.prior_logits)}; expected a floating dtype.")
  check_next_embedding(next_embedding, embedding)


def check_model_scalars(output: Any, num_evaluations: int) -> None:
  """Checks the model's `reward`, `discount` and `value`: `[num_evaluations]` floats (`B`)."""
  for name in ("reward", "discount", "value"):
    x = getattr(output, name)
    if jnp.shape(x) != (num_evaluations,):
      raise ValueError(
          f"recurrent_fn returned {name} of shape {jnp.shape(x)}; expected ({num_evaluations},), "
          "one entry per root of the batch (it is called with B rows, like an mctx "
          "recurrent_fn).")
    if not _is_float_dtype(x):
      raise ValueError(f"recurrent_fn returned {name} of dtype {jnp.result_type(x)}; "
                       "expected a floating dtype.")


def check_next_embedding(next_embedding: chex.ArrayTree, embedding: chex.ArrayTree) -> None:
  """Checks that the next embedding has the structure, shapes and dtypes of the given one."""
  given: Any = jax.tree_util.tree_structure(embedding)
  got: Any = jax.tree_util.tree_structure(next_embedding)
  if given != got:
    raise ValueError(f"recurrent_fn returned a next embedding with structure {got}; expected "
                     f"the structure of the embedding it was given, {given}.")
  for x, y in zip(jax.tree_util.tree_leaves(embedding), jax.tree_util.tree_leaves(next_embedding),
                  strict=True):
    if jnp.shape(x) != jnp.shape(y) or jnp.result_type(x) != jnp.result_type(y):
      raise ValueError(
          f"recurrent_fn returned a next-embedding leaf of shape {jnp.shape(y)} and dtype "
          f"{jnp.result_type(y)}; expected shape {jnp.shape(x)} and dtype "
          f"{jnp.result_type(x)}, as the embedding it was given (shaped like root.embedding).")



def check_sampled_root(root: Any, invalid_actions: chex.Array | None) -> tuple[int, int]:
  """Checks a sampled-action root; returns `(batch_size, num_candidates)`."""
  if not all(hasattr(root, name) for name in ("candidates", "value", "embedding")):
    raise ValueError("root must be an smctx.SampledRootFnOutput (candidates, value, embedding, "
                     f"prior_logits); got {type(root).__name__}.")
  if not _is_float_dtype(root.value) or jnp.ndim(root.value) != 1:
    raise ValueError(f"root.value has shape {jnp.shape(root.value)} and dtype "
                     f"{jnp.result_type(root.value)}; expected a float vector [B].")
  batch_size = jnp.shape(root.value)[0]
  leaves = jax.tree_util.tree_leaves(root.candidates)
  if not leaves:
    raise ValueError("root.candidates is empty; expected a pytree of [B, M, ...] arrays.")
  num_candidates = jnp.shape(leaves[0])[1] if jnp.ndim(leaves[0]) >= 2 else 0
  for leaf in leaves:
    if jnp.ndim(leaf) < 2 or jnp.shape(leaf)[:2] != (batch_size, num_candidates):
      raise ValueError(
          f"root.candidates has a leaf of shape {jnp.shape(leaf)}; every leaf needs the leading "
          f"axes [B, M] = [{batch_size}, {num_candidates}] (B from root.value).")
  if num_candidates < 1:
    raise ValueError("root.candidates has M = 0 candidates; expected at least one.")
  check_embedding_batch(root.embedding, batch_size)
  expected = (batch_size, num_candidates)
  if root.prior_logits is not None:
    if jnp.shape(root.prior_logits) != expected or not _is_float_dtype(root.prior_logits):
      raise ValueError(
          f"root.prior_logits has shape {jnp.shape(root.prior_logits)} and dtype "
          f"{jnp.result_type(root.prior_logits)}; expected floats of shape {expected} "
          "(one logit per candidate) or None for uniform.")
  if invalid_actions is not None and jnp.shape(invalid_actions) != expected:
    raise ValueError(f"invalid_actions has shape {jnp.shape(invalid_actions)}; expected "
                     f"{expected}, one flag per candidate.")
  return batch_size, num_candidates


def check_sampled_actions(actions: chex.ArrayTree, candidates: chex.ArrayTree,
                          num_evaluations: int, source: str) -> None:
  """Checks one particle slice of sampled next actions: `B` rows shaped like candidates."""
  want: Any = jax.tree_util.tree_structure(candidates)
  got: Any = jax.tree_util.tree_structure(actions)
  if want != got:
    raise ValueError(f"{source} gave actions with structure {got}; expected the structure of "
                     f"root.candidates, {want}.")
  for c, a in zip(jax.tree_util.tree_leaves(candidates), jax.tree_util.tree_leaves(actions),
                  strict=True):
    expected = (num_evaluations,) + jnp.shape(c)[2:]
    if jnp.shape(a) != expected:
      raise ValueError(
          f"{source} gave an action leaf of shape {jnp.shape(a)}; expected {expected}: one "
          "action per row it was given (B rows, one per root), shaped like one candidate of "
          "root.candidates.")
