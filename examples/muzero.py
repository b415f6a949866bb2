"""MuZero-style agent on Jumanji Snake: any smctx (or mctx) search over a *learned* model.

Unlike `snake.py`, the search never sees the environment. Three Flax MLPs form the model
(Schrittwieser et al., 2020):

* representation `h(observation) -> latent` (the board as seen from the snake's head, see
  `egocentric`, plus the time left; latents are min-max scaled to `[0, 1]` as in MuZero),
* dynamics `g(latent, action) -> (reward, next latent)`,
* prediction `f(latent) -> (policy logits, value)`,

and the search runs on latents through the usual mctx-style pair (`make_model`):
`root_fn(params, observation)` embeds the observation with `h` and predicts with `f`, and
`recurrent_fn(params, rng_key, action, latent)` steps `g` then `f`, with `discount = config
discount` at every step. The learned model has no termination: training targets after the end
of a game are zero reward and zero value ("absorbing"), so the model learns that a game over ends
the income. Only the root is masked (by the observation's `action_mask`).

Each iteration (one jitted function):

1. a `lax.scan` rollout of `rollout_length` steps over `num_envs` games; the search picks every
   move from the current observation (replaced, with probability `explore_epsilon`, by a
   uniformly random valid move); finished episodes are reset in the rollout;
2. the segment joins a replay of the last `replay_length` steps of every game, whose value
   targets are recomputed as `td_steps`-step returns, bootstrapped with the network's value of
   the observation reached (stored when acting) and cut at episode ends;
3. `num_updates` Adam steps on minibatches of `unroll_steps`-long sequences from the replay: the
   model is unrolled from `h(observation)` along the actions taken, and each step is trained on
   the search's `action_weights` (policy), the value target and the observed reward. Steps after
   a termination get the absorbing targets; steps after a time-limit truncation or past the
   newest replay step are masked out.

Usage (see `--help`):

  python examples/muzero.py --preset quick --out examples/results/muzero_quick
  python examples/muzero.py --preset quick --search gumbel --num-simulations 16
  python examples/compare.py --env muzero --seeds 3 --out examples/results/compare_muzero

`train(config) -> rows` is importable (used by `compare.py` and the tests).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, Optional, Sequence

import _common
import flax.linen as nn
import jax
import jax.numpy as jnp
import mctx
import optax

from smctx import models


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run depends on; presets fill it, flags override single fields."""
  search: _common.Search = "tsmcts"  # the search policy (gumbel: mctx's Gumbel MuZero)
  num_simulations: int = 16  # model evaluations per search
  num_particles: Optional[int] = None  # particles of the smctx searches (None: from the budget)
  num_steps: Optional[int] = None  # sequential calls of the smctx searches (None: from the budget)
  seed: int = 0  # random seed
  preset: Literal["quick", "full"] = "quick"  # quick (CPU, minutes) or full (GPU)
  out: Optional[str] = None  # directory for metrics.csv, checkpoints/, learning_curve.png
  resume: bool = False  # continue from the latest checkpoint in --out
  # Environment.
  num_rows: int = 6  # board rows
  num_cols: int = 6  # board columns
  time_limit: int = 100  # steps per episode at most
  # Rollouts.
  num_envs: int = 32  # environments stepped in parallel
  rollout_length: int = 16  # steps per environment per iteration
  total_env_steps: int = 250_000  # environment steps of the whole run
  discount: float = 0.97  # discount per step (the learned model's and the value targets')
  max_depth: Optional[int] = None  # the search's depth limit (None: the search's default)
  # A uniformly random valid move with this probability. Off: with the loss weights below the
  # search's own choices explore enough; at 0.1 the quick preset ended at 13.3 instead of 15.8.
  explore_epsilon: float = 0.0
  # Replay and targets.
  replay_length: int = 128  # steps kept per environment (num_envs * replay_length transitions)
  unroll_steps: int = 5  # K: model steps unrolled per training sequence
  td_steps: int = 10  # n of the n-step value targets
  # Networks and optimiser.
  latent_size: int = 64  # width of the latent state
  hidden_sizes: tuple[int, ...] = (128, 128)  # MLP layer widths of each of the three networks
  learning_rate: float = 1e-3  # Adam's step size
  num_updates: int = 16  # Adam steps per iteration
  batch_size: int = 128  # sequences per Adam step
  # Loss weights. The policy targets of a search over an untrained model are noise whose
  # gradients, at weight 1, drowned the rare fruit rewards (about 1 step in 100 at first): the
  # predicted reward of a fruit step was still 0.02 after 8e4 steps; at 0.1 (with the reward at
  # 5) it was 0.7 after 4e4.
  policy_coef: float = 0.1  # weight of the policy cross-entropy
  value_coef: float = 0.5  # weight of the value loss
  reward_coef: float = 5.0  # weight of the reward loss
  max_grad_norm: float = 1.0  # gradient clipping by global norm
  checkpoint_every: int = 20  # iterations between checkpoints (and one at the end)
  keep_checkpoints: int = 3  # the latest checkpoints kept (orbax's max_to_keep)


PRESETS = {
    # 6x6 board, 100-step episodes: learns clearly within minutes on 2 CPU cores.
    "quick": dict(num_rows=6, num_cols=6, time_limit=100, num_envs=32, rollout_length=16,
                  total_env_steps=250_000, num_simulations=16, latent_size=64,
                  hidden_sizes=(128, 128)),
    # Snake-v1 (12x12, 4000-step episodes): for a GPU (not run yet).
    "full": dict(num_rows=12, num_cols=12, time_limit=4000, num_envs=512, rollout_length=32,
                 total_env_steps=10_000_000, num_simulations=32, latent_size=256,
                 hidden_sizes=(512, 512), replay_length=256, batch_size=1024, num_updates=16,
                 learning_rate=3e-4, discount=0.99, checkpoint_every=50),
}


def _mlp(sizes: Sequence[int], x):
  for size in sizes:
    x = nn.relu(nn.Dense(size)(x))
  return x


def _scale_latent(latent):
  """MuZero's min-max normalisation of each latent to `[0, 1]`."""
  low = latent.min(axis=-1, keepdims=True)
  high = latent.max(axis=-1, keepdims=True)
  return (latent - low) / (high - low + 1e-5)


def egocentric(grid):
  """The board centred on the snake's head: `[B, R, C, F] -> [B, 2R - 1, 2C - 1, F + 1]`.

  The extra channel is 1 off the board (walls). Moving a fixed offset from the head is then the
  same input cell wherever the snake is, so "the fruit is next to the head" is one feature.
  """
  batch, rows, cols, features = grid.shape
  pad = ((0, 0), (rows - 1, rows - 1), (cols - 1, cols - 1), (0, 0))
  off_board = jnp.pad(jnp.zeros((batch, rows, cols, 1), grid.dtype), pad, constant_values=1.0)
  padded = jnp.concatenate([jnp.pad(grid, pad), off_board], axis=-1)
  head = jnp.argmax(grid[..., 1].reshape(batch, -1), axis=-1)  # channel 1: the head
  crop = lambda board, row, col: jax.lax.dynamic_slice(
      board, (row, col, 0), (2 * rows - 1, 2 * cols - 1, features + 1))
  return jax.vmap(crop)(padded, head // cols, head % cols)


class Representation(nn.Module):
  """`h`: Snake observation (seen from the head, plus the time left) -> latent."""
  latent_size: int
  hidden_sizes: Sequence[int]
  time_limit: int

  @nn.compact
  def __call__(self, observation):
    board = egocentric(observation.grid)
    x = board.reshape(board.shape[0], -1)
    time_left = 1.0 - observation.step_count.astype(jnp.float32) / self.time_limit
    x = jnp.concatenate([x, time_left[:, None]], axis=-1)
    return _scale_latent(nn.Dense(self.latent_size)(_mlp(self.hidden_sizes, x)))


class Dynamics(nn.Module):
  """`g`: (latent, action) -> (reward, next latent)."""
  latent_size: int
  hidden_sizes: Sequence[int]
  num_actions: int

  @nn.compact
  def __call__(self, latent, action):
    x = jnp.concatenate([latent, jax.nn.one_hot(action, self.num_actions)], axis=-1)
    x = _mlp(self.hidden_sizes, x)
    reward = nn.Dense(1)(x)[:, 0]
    return reward, _scale_latent(nn.Dense(self.latent_size)(x))


class Prediction(nn.Module):
  """`f`: latent -> (policy logits, value)."""
  hidden_sizes: Sequence[int]
  num_actions: int

  @nn.compact
  def __call__(self, latent):
    x = _mlp(self.hidden_sizes, latent)
    return nn.Dense(self.num_actions)(x), nn.Dense(1)(x)[:, 0]


class MuZeroNetwork(nn.Module):
  """The three networks; `apply(..., method=...)` calls one of them."""
  num_actions: int
  latent_size: int
  hidden_sizes: Sequence[int]
  time_limit: int

  def setup(self):
    self.representation = Representation(self.latent_size, self.hidden_sizes, self.time_limit)
    self.dynamics_net = Dynamics(self.latent_size, self.hidden_sizes, self.num_actions)
    self.prediction = Prediction(self.hidden_sizes, self.num_actions)

  def represent(self, observation):
    return self.representation(observation)

  def dynamics(self, latent, action):
    return self.dynamics_net(latent, action)

  def predict(self, latent):
    return self.prediction(latent)

  def __call__(self, observation, action):
    """All three networks once (used to initialise the parameters)."""
    latent = self.represent(observation)
    _, next_latent = self.dynamics(latent, action)
    return self.predict(next_latent)


def make_model(network: MuZeroNetwork, discount: float):
  """The learned model as `(root_fn, recurrent_fn)` for any smctx or mctx policy.

  * `root_fn(params, observation) -> mctx.RootFnOutput`: `embedding = h(observation)`,
    `prior_logits, value = f(embedding)`, the prior masked by `observation.action_mask`.
  * `recurrent_fn(params, rng_key, action, latent) -> (mctx.RecurrentFnOutput, next_latent)`:
    `reward, next_latent = g(latent, action)`, `prior_logits, value = f(next_latent)`,
    `discount = discount` (the model never terminates).
  """
  def root_fn(params, observation) -> mctx.RootFnOutput:
    latent = network.apply(params, observation, method=MuZeroNetwork.represent)
    logits, value = network.apply(params, latent, method=MuZeroNetwork.predict)
    return mctx.RootFnOutput(prior_logits=models.masked_logits(logits, observation.action_mask),
                             value=value, embedding=latent)

  def recurrent_fn(params, rng_key, action, latent):
    del rng_key  # a deterministic model
    reward, next_latent = network.apply(params, latent, action, method=MuZeroNetwork.dynamics)
    logits, value = network.apply(params, next_latent, method=MuZeroNetwork.predict)
    output = mctx.RecurrentFnOutput(reward=reward, discount=jnp.full_like(reward, discount),
                                    prior_logits=logits, value=value)
    return output, next_latent

  return root_fn, recurrent_fn


def make_env(config: Config):
  from jumanji.environments import Snake

  return Snake(num_rows=config.num_rows, num_cols=config.num_cols, time_limit=config.time_limit)


def n_step_returns(reward, discount, value_next, done, num_steps: int):
  """`[L, B]` `num_steps`-step returns along the replay's time axis.

  `G_t = r_t + d_t · (v_{t+1} if the episode ended at t, or after num_steps steps, or at the
  newest step; else G_{t+1})`, with `d_t` the discount of step `t` (0 at a termination) and
  `v_{t+1}` the network value of the observation that followed step `t` (stored when acting).
  """
  bootstrap = reward + discount * value_next
  returns = bootstrap
  newest = jnp.zeros_like(done).at[-1].set(True)
  stop = done | newest
  for _ in range(num_steps - 1):
    following = jnp.concatenate([returns[1:], returns[-1:]], axis=0)
    returns = jnp.where(stop, bootstrap, reward + discount * following)
  return returns


def unroll_targets(replay, start, env_index, unroll_steps: int):
  """The `unroll_steps + 1` training targets of the sequences starting at `(start, env_index)`.

  Returns `obs` (the first observation), `actions` `[N, K]`, and `[N, K + 1]` `value`,
  `value_mask`, `policy` `[N, K + 1, A]`, `policy_mask`, plus `[N, K]` `reward`,
  `reward_mask` (the reward of unroll step `k + 1`). After a termination the value and reward
  targets are 0 (absorbing) and the policy is masked; after a time-limit truncation or past the
  newest replay step everything is masked.
  """
  length = replay["reward"].shape[0]
  at = lambda x, k: x[jnp.minimum(start + k, length - 1), env_index]
  alive = jnp.ones(start.shape, bool)  # still inside the episode of the first observation
  absorbed = jnp.zeros(start.shape, bool)  # past a termination of that episode
  values, value_masks, policies, policy_masks = [], [], [], []
  rewards, reward_masks, actions = [], [], []
  for k in range(unroll_steps + 1):
    if k > 0:
      rewards.append(jnp.where(alive, at(replay["reward"], k - 1), 0.0))
      reward_masks.append(alive | absorbed)
      actions.append(at(replay["action"], k - 1))
      ended = alive & at(replay["done"], k - 1)
      absorbed = absorbed | (ended & at(replay["terminal"], k - 1))
      alive = alive & ~ended & (start + k < length)
    values.append(jnp.where(alive, at(replay["value_target"], k), 0.0))
    value_masks.append(alive | absorbed)
    policies.append(at(replay["policy"], k))
    policy_masks.append(alive)
  stack = lambda xs: jnp.stack(xs, axis=1).astype(jnp.float32)
  return {
      "obs": jax.tree.map(lambda x: x[start, env_index], replay["obs"]),
      "actions": jnp.stack(actions, axis=1),
      "value": stack(values), "value_mask": stack(value_masks),
      "policy": stack(policies), "policy_mask": stack(policy_masks),
      "reward": stack(rewards), "reward_mask": stack(reward_masks),
  }


def muzero_loss(params, network: MuZeroNetwork, batch, *, policy_coef: float, value_coef: float,
                reward_coef: float):
  """`(loss, aux)`: the K-step unrolled loss on policy (cross-entropy), value and reward (MSE/2).

  Each term is averaged over its unmasked steps; the latent's gradient is halved at every
  dynamics step, as in MuZero.
  """
  latent = network.apply(params, batch["obs"], method=MuZeroNetwork.represent)
  unroll_steps = batch["actions"].shape[1]
  policy_terms, value_terms, reward_terms = [], [], []
  for k in range(unroll_steps + 1):
    logits, value = network.apply(params, latent, method=MuZeroNetwork.predict)
    policy_terms.append(optax.softmax_cross_entropy(logits, batch["policy"][:, k]))
    value_terms.append(0.5 * (value - batch["value"][:, k]) ** 2)
    if k < unroll_steps:
      reward, latent = network.apply(params, latent, batch["actions"][:, k],
                                     method=MuZeroNetwork.dynamics)
      reward_terms.append(0.5 * (reward - batch["reward"][:, k]) ** 2)
      latent = 0.5 * latent + 0.5 * jax.lax.stop_gradient(latent)

  def masked_mean(terms, mask):
    return (jnp.stack(terms, axis=1) * mask).sum() / jnp.maximum(mask.sum(), 1.0)

  policy_loss = masked_mean(policy_terms, batch["policy_mask"])
  value_loss = masked_mean(value_terms, batch["value_mask"])
  reward_loss = masked_mean(reward_terms, batch["reward_mask"])
  loss = policy_coef * policy_loss + value_coef * value_loss + reward_coef * reward_loss
  return loss, {"policy_loss": policy_loss, "value_loss": value_loss,
                "reward_loss": reward_loss}


def setup(config: Config):
  """`(initial_state, step_fn)` for `_common.train_loop`; `step_fn` is jitted."""
  if config.replay_length < config.rollout_length:
    raise ValueError(f"replay_length={config.replay_length} must be at least "
                     f"rollout_length={config.rollout_length}")
  env = make_env(config)
  num_actions = env.action_spec.num_values
  network = MuZeroNetwork(num_actions=num_actions, latent_size=config.latent_size,
                          hidden_sizes=tuple(config.hidden_sizes), time_limit=config.time_limit)
  root_fn, recurrent_fn = make_model(network, config.discount)
  search = _common.make_search(config.search, num_particles=config.num_particles,
                               num_steps=config.num_steps)
  optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                          optax.adam(config.learning_rate))
  from jumanji.wrappers import VmapAutoResetWrapper

  # The training rollout's environments: batched, finished episodes reset by jumanji (with the
  # observation that ended them in `extras["next_obs"]`). The search never sees an environment.
  train_env = VmapAutoResetWrapper(env, next_obs_in_extras=True)

  key = jax.random.key(config.seed)  # a typed key, like every key in the examples
  key, init_key, env_key = jax.random.split(key, 3)
  # Jitted: compiling the initialisation is faster than running it op by op.
  env_state, timestep = jax.jit(train_env.reset)(jax.random.split(env_key, config.num_envs))
  observation = timestep.observation
  params = jax.jit(network.init)(init_key, jax.tree.map(lambda x: x[:1], observation),
                                 jnp.zeros(1, jnp.int32))
  shape = (config.replay_length, config.num_envs)
  replay = {
      "obs": jax.tree.map(lambda x: jnp.zeros(shape + x.shape[1:], x.dtype), observation),
      "action": jnp.zeros(shape, jnp.int32),
      "policy": jnp.zeros(shape + (num_actions,)),
      "reward": jnp.zeros(shape),
      "discount": jnp.zeros(shape),
      "value_next": jnp.zeros(shape),
      "done": jnp.zeros(shape, bool),
      "terminal": jnp.zeros(shape, bool),
      "value_target": jnp.zeros(shape),
  }
  state = {
      "params": params,
      "opt_state": optimizer.init(params),
      "env_state": env_state,
      "observation": observation,
      "episode_return": jnp.zeros(config.num_envs),
      "episode_length": jnp.zeros(config.num_envs, jnp.int32),
      "replay": replay,
      "replay_size": jnp.zeros((), jnp.int32),  # steps per game filled so far
      "rng_key": key,
  }

  def act(params, carry, rng_key):
    env_state, observation, episode_return, episode_length = carry
    search_key, explore_key, uniform_key = jax.random.split(rng_key, 3)
    root = root_fn(params, observation)
    invalid = ~observation.action_mask
    # A trapped snake has no valid move; let the search choose among all (each ends the game).
    invalid = jnp.where(jnp.all(invalid, axis=-1, keepdims=True), False, invalid)
    output = search(params, search_key, root, recurrent_fn, config.num_simulations,
                    invalid_actions=invalid, max_depth=config.max_depth)
    action = output.action
    if config.explore_epsilon > 0:
      uniform = jax.random.categorical(uniform_key, jnp.where(invalid, -jnp.inf, 0.0))
      explore = jax.random.uniform(explore_key, action.shape) < config.explore_epsilon
      action = jnp.where(explore, uniform, action)
    # Where `done`, `env_state` and `timestep.observation` already belong to the next episode.
    env_state, timestep = train_env.step(env_state, action)
    done = timestep.last()
    value_next = root_fn(params, timestep.extras["next_obs"]).value
    episode_return = episode_return + timestep.reward
    episode_length = episode_length + 1
    transition = {
        "obs": observation,
        "action": action,
        "policy": output.action_weights,
        "reward": timestep.reward,
        "discount": config.discount * timestep.discount,
        "value_next": value_next,
        "done": done,
        "terminal": done & (timestep.discount == 0),
        "root_value": output.search_tree.node_values[:, 0],
        "finished_return": jnp.where(done, episode_return, 0.0),
        "finished_length": jnp.where(done, episode_length, 0),
    }
    episode_return = jnp.where(done, 0.0, episode_return)
    episode_length = jnp.where(done, 0, episode_length)
    return (env_state, timestep.observation, episode_return, episode_length), transition

  def sgd_step(replay, replay_size, carry, rng_key):
    params, opt_state = carry
    start_key, env_key = jax.random.split(rng_key)
    # Uniform over the filled part of the replay (its newest `replay_size` steps).
    start = config.replay_length - 1 - jax.random.randint(
        start_key, (config.batch_size,), 0, replay_size)
    env_index = jax.random.randint(env_key, (config.batch_size,), 0, config.num_envs)
    batch = unroll_targets(replay, start, env_index, config.unroll_steps)
    (loss, aux), grads = jax.value_and_grad(muzero_loss, has_aux=True)(
        params, network, batch, policy_coef=config.policy_coef, value_coef=config.value_coef,
        reward_coef=config.reward_coef)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state), {"loss": loss, **aux}

  @jax.jit
  def step_fn(state):
    key, rollout_key, update_key = jax.random.split(state["rng_key"], 3)
    params = state["params"]
    carry = (state["env_state"], state["observation"], state["episode_return"],
             state["episode_length"])
    carry, traj = jax.lax.scan(functools.partial(act, params), carry,
                               jax.random.split(rollout_key, config.rollout_length))
    # The replay keeps the newest `replay_length` steps of every game, oldest first.
    replay = {k: jax.tree.map(lambda old, new: jnp.concatenate([old[config.rollout_length:],
                                                                new]), v, traj[k])
              for k, v in state["replay"].items() if k != "value_target"}
    replay["value_target"] = n_step_returns(replay["reward"], replay["discount"],
                                            replay["value_next"], replay["done"],
                                            config.td_steps)
    replay_size = jnp.minimum(state["replay_size"] + config.rollout_length,
                              config.replay_length)
    (params, opt_state), losses = jax.lax.scan(
        functools.partial(sgd_step, replay, replay_size), (params, state["opt_state"]),
        jax.random.split(update_key, config.num_updates))
    episodes = traj["done"].sum()
    metrics = {
        **jax.tree.map(jnp.mean, losses),
        "mean_return": traj["finished_return"].sum() / episodes,  # nan if none finished
        "mean_length": traj["finished_length"].sum() / episodes,
        "episodes": episodes,
        "root_value": traj["root_value"].mean(),
    }
    new_state = {"params": params, "opt_state": opt_state, "env_state": carry[0],
                 "observation": carry[1], "episode_return": carry[2],
                 "episode_length": carry[3], "replay": replay, "replay_size": replay_size,
                 "rng_key": key}
    return new_state, metrics

  return state, step_fn


def train(config: Config, *, quiet: bool = False) -> list[dict]:
  """Trains with `config`; returns the metric rows (also written to `config.out` if set)."""
  state, step_fn = setup(config)
  return _common.train_loop(
      state, step_fn, total_env_steps=config.total_env_steps,
      env_steps_per_iteration=config.num_envs * config.rollout_length, out_dir=config.out,
      resume=config.resume, config=config, checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints,
      postfix_keys=("mean_return", "loss", "steps_per_s"), plot_y="mean_return",
      desc=f"muzero snake {config.num_rows}x{config.num_cols} {config.search}", quiet=quiet)


def main(argv=None):
  config, _ = _common.parse_config(Config, PRESETS, argv, description=__doc__.split("\n\n")[0])
  rows = train(config)
  finished = [r for r in rows if r["mean_return"] == r["mean_return"]]
  if finished:
    last = finished[-10:]
    print(f"final mean return (last {len(last)} iterations): "
          f"{sum(r['mean_return'] for r in last) / len(last):.3f}; "
          f"{rows[-1]['env_steps']} env steps in {rows[-1]['wall_time']:.0f} s")


if __name__ == "__main__":
  main()
