"""True environment dynamics as mctx models: `(root_fn, recurrent_fn)` pairs.

The paper searches with the environment itself as the model. These helpers turn
a pure-JAX environment and a network `apply_fn` into the two functions that
`smctx.tsmcts_policy`, `smctx.smcts_policy`, `smctx.smc_policy` (and
`mctx.gumbel_muzero_policy`) consume:

```python
root_fn, recurrent_fn = smctx.models.pgx_model(env, apply_fn)
root = root_fn(params, key, state)
output = smctx.tsmcts_policy(params, key, root, recurrent_fn, num_simulations=64,
                             invalid_actions=~state.legal_action_mask)
```

The embedding is the environment's own state pytree, so every
`recurrent_fn` call is one batched `env.step`.

Conventions (mctx's): the prior and the value at a node are from the point of
view of the player to move there; the reward of a transition is from the point
of view of the player who acted; two-player zero-sum games use discount `-γ`
(`-1` by default) per ply, so that `reward + discount * value` is the acting
player's return.
Terminal transitions have discount `0` and value `0`.

This module imports no environment package: the environment object is an
argument, so the core stays free of pgx, jumanji and gymnax.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import chex
import jax
import jax.numpy as jnp
import mctx

# apply_fn(params, observation [B, ...]) -> (logits [B, A], value [B]).
ApplyFn = Callable[[Any, Any], Tuple[chex.Array, chex.Array]]


def masked_logits(logits: chex.Array, mask: chex.Array) -> chex.Array:
  """Puts illegal actions at the lowest finite logit, as pgx's mctx examples do.

  The legal logits are shifted so that their maximum is `0` (softmax is
  unchanged, and large network outputs cannot overflow); illegal ones become
  `jnp.finfo(logits.dtype).min`, a *finite* value, so that a row with no legal
  action (a terminal state) still gives a uniform, NaN-free softmax.

  Args:
    logits: `[..., A]` unnormalised action logits.
    mask: `[..., A]` boolean, `True` where the action is legal.

  Returns:
    `[..., A]` logits of the same dtype as `logits`.
  """
  chex.assert_equal_shape([logits, mask])
  mask = mask.astype(bool)
  lowest = jnp.finfo(logits.dtype).min
  legal_max = jnp.max(jnp.where(mask, logits, lowest), axis=-1, keepdims=True)
  # A row with no legal action keeps its logits unshifted (they are all replaced).
  legal_max = jnp.where(jnp.any(mask, axis=-1, keepdims=True), legal_max, 0.0)
  legal_max = jax.lax.stop_gradient(legal_max)
  return jnp.where(mask, logits - legal_max, lowest)


def _check_discount(discount: float) -> None:
  if not 0.0 <= discount <= 1.0:
    raise ValueError(f"discount={discount!r} must be in [0, 1].")


def _apply(apply_fn: ApplyFn, params: Any, observation: Any, batch_size: int):
  logits, value = apply_fn(params, observation)
  chex.assert_rank(logits, 2)
  chex.assert_shape(value, (batch_size,))
  chex.assert_axis_dimension(logits, 0, batch_size)
  return logits, value


def pgx_model(env: Any, apply_fn: ApplyFn, discount: float = 1.0):
  """The dynamics of a pgx game as `(root_fn, recurrent_fn)`: two-player zero-sum games
  (tic-tac-toe, Go, chess, ...) and single-player ones (2048, MinAtar).

  Args:
    env: a `pgx.Env` with `env.num_players` 1 or 2 (e.g.
      `pgx.make("tic_tac_toe")`, `pgx.make("2048")`).
    apply_fn: `apply_fn(params, observation) -> (logits, value)` with
      `observation` the batched `state.observation` `[B, ...]`, `logits`
      `[B, A]` and `value` `[B]` from the point of view of the player to move.
    discount: `γ` per step, in `[0, 1]`: the discount of a single-player game;
      a two-player game uses `-γ` per ply (the next value is the opponent's).

  Returns:
    `(root_fn, recurrent_fn)`:

    * `root_fn(params, rng_key, state) -> mctx.RootFnOutput` for a batched
      pgx `State` `[B]`: `prior_logits` `[B, A]` are the network's logits with
      illegal actions at `jnp.finfo(dtype).min` (see `masked_logits`),
      `value` `[B]` the network value, `embedding` the state itself.
    * `recurrent_fn(params, rng_key, action, state) -> (mctx.RecurrentFnOutput,
      next_state)` with `action` `[B]`: steps `jax.vmap(env.step)` (with a key
      per game, split from `rng_key`, for pgx's stochastic games such as 2048).
      `reward = next_state.rewards[b, state.current_player[b]]` is the reward
      of the player who just moved; `discount` is `-γ` per ply in a
      two-player game, `γ` in a single-player one, and `0` once the game is
      over (`terminated`, or `truncated`, after which pgx pays nothing more);
      `value` is the network value at `next_state` (`0` once over), from the
      view of the player to move there; `prior_logits` are masked by
      `next_state.legal_action_mask` (pgx makes every action legal at a
      terminal state, which keeps the prior finite). Stepping a state that is
      already over gives reward `0` and discount `0`: pgx returns it unchanged.

  Raises:
    ValueError: if the game has neither one nor two players, or `discount` is
      outside `[0, 1]`.
  """
  num_players = getattr(env, "num_players", None)
  if num_players not in (1, 2):
    raise ValueError(
        "pgx_model expects a single-player or two-player zero-sum pgx environment; "
        f"got env.num_players={num_players}.")
  _check_discount(discount)
  # Two-player zero-sum: the next state's value is the opponent's, hence the sign.
  step_discount = -discount if num_players == 2 else discount

  def root_fn(params, rng_key, state) -> mctx.RootFnOutput:
    del rng_key
    batch_size = state.legal_action_mask.shape[0]
    logits, value = _apply(apply_fn, params, state.observation, batch_size)
    return mctx.RootFnOutput(
        prior_logits=masked_logits(logits, state.legal_action_mask),
        value=value,
        embedding=state)

  def recurrent_fn(params, rng_key, action, state):
    batch_size = action.shape[0]
    chex.assert_shape(action, (batch_size,))
    mover = state.current_player
    was_over = state.terminated | state.truncated
    step_keys = jax.random.split(rng_key, batch_size)
    next_state = jax.vmap(env.step)(state, action, step_keys)
    logits, value = _apply(apply_fn, params, next_state.observation, batch_size)

    # pgx pays every player on the transition; the mover's share is the
    # reward of the edge (mctx: reward from the view of who acted).
    mover_reward = jnp.take_along_axis(
        next_state.rewards, jnp.clip(mover, 0, num_players - 1)[:, None], axis=1)[:, 0]
    is_over = next_state.terminated | next_state.truncated
    reward = jnp.where(was_over, 0.0, mover_reward).astype(value.dtype)
    discount = jnp.where(is_over, 0.0, step_discount).astype(value.dtype)
    value = jnp.where(is_over, 0.0, value).astype(value.dtype)
    output = mctx.RecurrentFnOutput(
        reward=reward,
        discount=discount,
        prior_logits=masked_logits(logits, next_state.legal_action_mask),
        value=value)
    return output, next_state

  return root_fn, recurrent_fn


def _mask_by_observation(logits: chex.Array, observation: Any) -> chex.Array:
  """Masks `logits` `[B, A]` by `observation.action_mask` when it has one."""
  mask = getattr(observation, "action_mask", None)
  if mask is None:
    return logits
  if mask.shape != logits.shape:
    raise ValueError(
        f"observation.action_mask has shape {mask.shape} but the logits have shape "
        f"{logits.shape}; jumanji_model needs one flat discrete action per step.")
  return masked_logits(logits, mask)


def jumanji_model(env: Any, apply_fn: ApplyFn, discount: float = 0.99):
  """The dynamics of a single-agent jumanji environment as `(root_fn, recurrent_fn)`.

  Args:
    env: a jumanji `Environment` with one discrete action per step (e.g.
      `jumanji.environments.Snake(num_rows=6, num_cols=6)`). Pass the raw
      environment: the search must not auto-reset.
    apply_fn: `apply_fn(params, observation) -> (logits, value)` with
      `observation` the environment's `Observation` pytree batched `[B, ...]`,
      `logits` `[B, A]` and `value` `[B]`.
    discount: the agent's discount `γ`, a Python float in `[0, 1]`.

  Returns:
    `(root_fn, recurrent_fn)`:

    * `root_fn(params, rng_key, state, observation) -> mctx.RootFnOutput` for
      a batched `State` `[B]` and its `Observation`: `prior_logits` `[B, A]`
      masked by `observation.action_mask` when the observation has one (see
      `masked_logits`), `value` `[B]`, `embedding` the state.
    * `recurrent_fn(params, rng_key, action, state) -> (mctx.RecurrentFnOutput,
      next_state)` with `action` `[B]`: steps `jax.vmap(env.step)`;
      `reward = timestep.reward`, `discount = γ·timestep.discount` (`0` at a
      termination; a jumanji *truncation* keeps `timestep.discount = 1`, so the
      search bootstraps there), `value` the network value at
      `timestep.observation`, `0` where `timestep.discount == 0`, and
      `prior_logits` masked by `timestep.observation.action_mask`. jumanji's
      `step` has no notion of an absorbing terminal state, so stepping past a
      termination continues the raw dynamics; its outputs stay finite and the
      zero discount already removes them from every return.

  Raises:
    ValueError: if `discount` is outside `[0, 1]`.
  """
  _check_discount(discount)

  def root_fn(params, rng_key, state, observation) -> mctx.RootFnOutput:
    del rng_key
    batch_size = jax.tree_util.tree_leaves(state)[0].shape[0]
    logits, value = _apply(apply_fn, params, observation, batch_size)
    return mctx.RootFnOutput(
        prior_logits=_mask_by_observation(logits, observation),
        value=value,
        embedding=state)

  def recurrent_fn(params, rng_key, action, state):
    # Stochastic jumanji environments carry their own key inside `state`.
    del rng_key
    batch_size = action.shape[0]
    chex.assert_shape(action, (batch_size,))
    next_state, timestep = jax.vmap(env.step)(state, action)
    logits, value = _apply(apply_fn, params, timestep.observation, batch_size)
    terminated = timestep.discount == 0
    output = mctx.RecurrentFnOutput(
        reward=jnp.asarray(timestep.reward, value.dtype),
        discount=(discount * timestep.discount).astype(value.dtype),
        prior_logits=_mask_by_observation(logits, timestep.observation),
        value=jnp.where(terminated, 0.0, value).astype(value.dtype))
    return output, next_state

  return root_fn, recurrent_fn


def gymnax_model(env: Any, env_params: Any, apply_fn: ApplyFn, discount: float = 0.99):
  """The dynamics of a discrete-action gymnax environment as `(root_fn, recurrent_fn)`.

  Args:
    env: a gymnax `Environment` with a `Discrete` action space (e.g.
      `gymnax.make("CartPole-v1")[0]`). The search steps it with `step_env`,
      which does not auto-reset.
    env_params: the environment's parameters (`gymnax.make(...)[1]`).
    apply_fn: `apply_fn(params, observation) -> (logits, value)` with
      `observation` `[B, ...]`, `logits` `[B, A]` and `value` `[B]`.
    discount: the agent's discount `γ`, a Python float in `[0, 1]`.

  Returns:
    `(root_fn, recurrent_fn)`; the embedding is `(state, done)`, the batched
    gymnax `EnvState` `[B]` and a `[B]` bool flag of finished episodes:

    * `root_fn(params, rng_key, state, observation) -> mctx.RootFnOutput`:
      the network's `prior_logits` and `value` at `observation`, embedding
      `(state, False)`.
    * `recurrent_fn(params, rng_key, action, embedding) -> (mctx.RecurrentFnOutput,
      next_embedding)`: steps `jax.vmap(env.step_env)` with a key per episode
      split from `rng_key`; `reward` is gymnax's, `discount` is `γ` and `0` once
      `done` (gymnax's `done` includes its time limit, so the search does not
      bootstrap past it), `value` the network value at the next observation
      (`0` once done). A finished episode is absorbing: stepping it again keeps
      its state and gives reward `0` and discount `0`.

  Raises:
    ValueError: if `discount` is outside `[0, 1]`.
  """
  _check_discount(discount)
  step = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))

  def root_fn(params, rng_key, state, observation) -> mctx.RootFnOutput:
    del rng_key
    batch_size = jax.tree_util.tree_leaves(observation)[0].shape[0]
    logits, value = _apply(apply_fn, params, observation, batch_size)
    return mctx.RootFnOutput(prior_logits=logits, value=value,
                             embedding=(state, jnp.zeros((batch_size,), bool)))

  def recurrent_fn(params, rng_key, action, embedding):
    state, was_done = embedding
    batch_size = action.shape[0]
    chex.assert_shape(action, (batch_size,))
    observation, next_state, reward, done, _ = step(
        jax.random.split(rng_key, batch_size), state, action, env_params)
    logits, value = _apply(apply_fn, params, observation, batch_size)
    over = was_done | done
    keep = lambda old, new: jnp.where(
        was_done.reshape(was_done.shape + (1,) * (new.ndim - 1)), old, new)
    next_state = jax.tree_util.tree_map(keep, state, next_state)
    output = mctx.RecurrentFnOutput(
        reward=jnp.where(was_done, 0.0, reward).astype(value.dtype),
        discount=jnp.where(over, 0.0, discount).astype(value.dtype),
        prior_logits=logits,
        value=jnp.where(over, 0.0, value).astype(value.dtype))
    return output, (next_state, over)

  return root_fn, recurrent_fn
