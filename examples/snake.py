"""AlphaZero-style policy iteration on Jumanji Snake, with any smctx (or mctx) search.

The environment itself is the search model (`smctx.models.jumanji_model`). Each iteration:

1. a jitted `lax.scan` rollout of `rollout_length` steps over `num_envs` vectorised games: at
   every step the search picks the action from the current state; finished episodes are reset
   by jumanji's `VmapAutoResetWrapper` in the rollout, while the search steps the raw
   environment (so never resets inside a search);
2. targets: the policy target is the search's `action_weights`, the value target the discounted
   return to the end of the segment, bootstrapped with the network's value there (so a Monte
   Carlo return when the episode ended inside the segment);
3. `num_updates` Adam steps on minibatches of the segment.

Usage (`--help` lists every config field as a flag, with the defaults of `--preset`):

  python examples/snake.py --preset quick --search tsmcts --out examples/results/snake_tsmcts
  python examples/snake.py --preset quick --search gumbel --num-simulations 16
  python examples/snake.py --preset full --search tsmcts --out runs/snake  # Snake-v1, GPU

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
  total_env_steps: int = 1_000_000  # environment steps of the whole run
  discount: float = 0.97  # discount per step (search and value targets)
  max_depth: Optional[int] = None  # the search's depth limit (None: the search's default)
  # Network and optimiser.
  hidden_sizes: tuple[int, ...] = (128, 128)  # MLP layer widths
  conv_channels: tuple[int, ...] = ()  # 3x3 convolution channels before the MLP (none: no conv)
  learning_rate: float = 1e-3  # Adam's step size
  num_updates: int = 4  # Adam steps per iteration
  batch_size: int = 128  # samples per Adam step
  value_coef: float = 1.0  # weight of the value loss
  max_grad_norm: float = 1.0  # gradient clipping by global norm
  checkpoint_every: int = 20  # iterations between checkpoints (and one at the end)
  keep_checkpoints: int = 3  # the latest checkpoints kept (orbax's max_to_keep)


PRESETS = {
    # 6x6 board, 100-step episodes: learns clearly in minutes on 2 CPU cores.
    "quick": dict(num_rows=6, num_cols=6, time_limit=100, num_envs=32, rollout_length=16,
                  total_env_steps=1_000_000, num_simulations=16, hidden_sizes=(128, 128),
                  conv_channels=()),
    # Snake-v1 (12x12, 4000-step episodes), about 1e7 steps: for a GPU.
    "full": dict(num_rows=12, num_cols=12, time_limit=4000, num_envs=512, rollout_length=32,
                 total_env_steps=10_000_000, num_simulations=32, hidden_sizes=(256, 256),
                 conv_channels=(32, 32), batch_size=1024, num_updates=8,
                 learning_rate=3e-4, discount=0.99, checkpoint_every=50),
}


class Network(nn.Module):
  """Policy-value network on the Snake observation: optional 3x3 convs, then an MLP."""
  num_actions: int
  hidden_sizes: Sequence[int]
  conv_channels: Sequence[int]
  time_limit: int

  @nn.compact
  def __call__(self, observation):
    x = observation.grid  # [B, R, C, 5]
    for channels in self.conv_channels:
      x = nn.relu(nn.Conv(channels, (3, 3))(x))
    x = x.reshape(x.shape[0], -1)
    time_left = 1.0 - observation.step_count.astype(jnp.float32) / self.time_limit
    x = jnp.concatenate([x, time_left[:, None]], axis=-1)
    for size in self.hidden_sizes:
      x = nn.relu(nn.Dense(size)(x))
    logits = nn.Dense(self.num_actions)(x)
    value = nn.Dense(1)(x)[:, 0]
    return logits, value


def make_env(config: Config):
  """The raw environment: the search's model (the training rollout wraps it)."""
  from jumanji.environments import Snake

  return Snake(num_rows=config.num_rows, num_cols=config.num_cols, time_limit=config.time_limit)


def setup(config: Config):
  """`(initial_state, step_fn)` for `_common.train_loop`; `step_fn` is jitted."""
  env = make_env(config)
  num_actions = env.action_spec.num_values
  network = Network(num_actions=num_actions, hidden_sizes=tuple(config.hidden_sizes),
                    conv_channels=tuple(config.conv_channels), time_limit=config.time_limit)
  apply_fn = network.apply
  root_fn, recurrent_fn = models.jumanji_model(env, apply_fn, discount=config.discount)
  search = _common.make_search(config.search, num_particles=config.num_particles,
                               num_steps=config.num_steps)
  optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                          optax.adam(config.learning_rate))
  update = _common.make_alphazero_update(apply_fn, optimizer, num_updates=config.num_updates,
                                         batch_size=config.batch_size,
                                         value_coef=config.value_coef)
  from jumanji.wrappers import VmapAutoResetWrapper

  # The training rollout's environments: batched, finished episodes reset by jumanji (with the
  # observation that ended them in `extras["next_obs"]`). The search keeps the raw `env`.
  train_env = VmapAutoResetWrapper(env, next_obs_in_extras=True)

  key = jax.random.key(config.seed)  # a typed key, like every key in the examples
  key, init_key, env_key = jax.random.split(key, 3)
  env_state, timestep = train_env.reset(jax.random.split(env_key, config.num_envs))
  params = network.init(init_key, jax.tree.map(lambda x: x[:1], timestep.observation))
  state = {
      "params": params,
      "opt_state": optimizer.init(params),
      "env_state": env_state,
      "observation": timestep.observation,
      "episode_return": jnp.zeros(config.num_envs),
      "episode_length": jnp.zeros(config.num_envs, jnp.int32),
      "rng_key": key,
  }

  def act(params, carry, rng_key):
    env_state, observation, episode_return, episode_length = carry
    root = root_fn(params, rng_key, env_state, observation)
    invalid = ~observation.action_mask
    # A trapped snake has no valid move; let the search choose among all (each ends the game).
    invalid = jnp.where(jnp.all(invalid, axis=-1, keepdims=True), False, invalid)
    output = search(params, rng_key, root, recurrent_fn, config.num_simulations,
                    invalid_actions=invalid, max_depth=config.max_depth)
    # Where `done`, `env_state` and `timestep.observation` already belong to the next episode.
    env_state, timestep = train_env.step(env_state, output.action)
    done = timestep.last()
    _, value_next = apply_fn(params, timestep.extras["next_obs"])
    episode_return = episode_return + timestep.reward
    episode_length = episode_length + 1
    transition = {
        "obs": observation,
        "policy": output.action_weights,
        "reward": timestep.reward,
        "discount": config.discount * timestep.discount,
        "value_next": value_next,
        "done": done,
        "root_value": output.search_tree.node_values[:, 0],
        "finished_return": jnp.where(done, episode_return, 0.0),
        "finished_length": jnp.where(done, episode_length, 0),
    }
    episode_return = jnp.where(done, 0.0, episode_return)
    episode_length = jnp.where(done, 0, episode_length)
    return (env_state, timestep.observation, episode_return, episode_length), transition

  @jax.jit
  def step_fn(state):
    key, rollout_key, update_key = jax.random.split(state["rng_key"], 3)
    params = state["params"]
    carry = (state["env_state"], state["observation"], state["episode_return"],
             state["episode_length"])
    carry, traj = jax.lax.scan(functools.partial(act, params), carry,
                               jax.random.split(rollout_key, config.rollout_length))
    returns = _common.bootstrapped_returns(traj["reward"], traj["discount"], traj["value_next"],
                                   traj["done"])
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    data = {"obs": jax.tree.map(flat, traj["obs"]), "policy": flat(traj["policy"]),
            "return": flat(jax.lax.stop_gradient(returns))}
    params, opt_state, losses = update(params, state["opt_state"], data, update_key)
    episodes = traj["done"].sum()
    metrics = {
        **losses,
        "mean_return": traj["finished_return"].sum() / episodes,  # nan if none finished
        "mean_length": traj["finished_length"].sum() / episodes,
        "episodes": episodes,
        "root_value": traj["root_value"].mean(),
    }
    new_state = {"params": params, "opt_state": opt_state, "env_state": carry[0],
                 "observation": carry[1], "episode_return": carry[2],
                 "episode_length": carry[3], "rng_key": key}
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
      desc=f"snake {config.num_rows}x{config.num_cols} {config.search}", quiet=quiet)


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
