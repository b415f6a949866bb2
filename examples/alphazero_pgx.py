"""Self-play AlphaZero on a two-player pgx game, with any smctx (or mctx) search.

The game itself is the search model (`smctx.models.pgx_model`). Each iteration plays
`rollout_length` moves in `num_envs` parallel self-play games inside a jitted `lax.scan` (finished
games restart through pgx's `auto_reset` in the rollout; the search steps the raw game), then
trains the network on the search's
`action_weights` and on the game outcome from the mover's view (`-1` discount per ply; a segment
cut mid-game is bootstrapped with the network's value). Every `eval_every` iterations the agent
(greedy on `action_weights`) plays `eval_games` games against a uniformly random player, half
with each colour, and logs its win / draw / loss rates.

Usage (`--help` lists every config field as a flag, with the defaults of `--preset`):

  python examples/alphazero_pgx.py --preset quick --search tsmcts --out runs/ttt_tsmcts
  python examples/alphazero_pgx.py --preset full --search tsmcts --out runs/c4   # GPU
  # Two trained agents against each other, both colours (--out DIR also writes DIR/match.csv):
  python examples/alphazero_pgx.py --eval-match runs/ttt_tsmcts runs/ttt_gumbel --eval-games 200

`train(config) -> rows` and `match(dir_a, dir_b, ...)` are importable.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
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
  num_simulations: int = 64  # model evaluations per search
  num_particles: Optional[int] = None  # particles of the smctx searches (None: from the budget)
  num_steps: Optional[int] = None  # sequential calls of the smctx searches (None: from the budget)
  seed: int = 0  # random seed
  preset: Literal["quick", "full"] = "quick"  # quick (CPU, minutes) or full (GPU)
  out: Optional[str] = None  # directory for metrics.csv, checkpoints/, learning_curve.png
  resume: bool = False  # continue from the latest checkpoint in --out
  env_id: str = "tic_tac_toe"  # a two-player pgx game
  # Self-play.
  num_envs: int = 64  # games played in parallel
  rollout_length: int = 16  # moves per game per iteration
  total_env_steps: int = 300_000  # moves of the whole run
  max_depth: Optional[int] = None  # the search's depth limit (None: the search's default)
  # Exploration: the probability of a uniformly random legal move in self-play (the policy
  # target is still the search's); without it self-play settles into one perfect line and the
  # agent never sees the positions a weak opponent creates.
  random_move_prob: float = 0.1  # probability of a uniformly random legal move in self-play
  # Network and optimiser.
  hidden_sizes: tuple[int, ...] = (128, 128)  # MLP layer widths
  conv_channels: tuple[int, ...] = ()  # 3x3 convolution channels before the MLP (none: no conv)
  learning_rate: float = 1e-3  # Adam's step size
  num_updates: int = 4  # Adam steps per iteration
  batch_size: int = 256  # samples per Adam step
  value_coef: float = 1.0  # weight of the value loss
  max_grad_norm: float = 1.0  # gradient clipping by global norm
  # Evaluation against a uniformly random player.
  eval_every: int = 10  # iterations between evaluations against a random player
  eval_games: int = 256  # games per evaluation (half with each colour); also --eval-match's
  checkpoint_every: int = 20  # iterations between checkpoints (and one at the end)
  keep_checkpoints: int = 3  # the latest checkpoints kept (orbax's max_to_keep)


PRESETS = {
    "quick": dict(env_id="tic_tac_toe", num_envs=64, rollout_length=16, total_env_steps=300_000,
                  num_simulations=64, hidden_sizes=(128, 128), conv_channels=(), eval_every=10,
                  eval_games=256),
    # Connect Four on a GPU: ~2e7 moves of self-play.
    "full": dict(env_id="connect_four", num_envs=1024, rollout_length=32,
                 total_env_steps=20_000_000, num_simulations=64, hidden_sizes=(256, 256),
                 conv_channels=(64, 64, 64), batch_size=4096, num_updates=8, learning_rate=3e-4,
                 eval_every=50, eval_games=1024, checkpoint_every=50),
}


class Network(nn.Module):
  """Policy-value network on a pgx observation `[B, H, W, C]`: optional 3x3 convs, then an MLP.

  The value is `tanh`-squashed: game outcomes lie in `[-1, 1]`.
  """
  num_actions: int
  hidden_sizes: Sequence[int]
  conv_channels: Sequence[int]

  @nn.compact
  def __call__(self, observation):
    x = observation.astype(jnp.float32)
    for channels in self.conv_channels:
      x = nn.relu(nn.Conv(channels, (3, 3))(x))
    x = x.reshape(x.shape[0], -1)
    for size in self.hidden_sizes:
      x = nn.relu(nn.Dense(size)(x))
    logits = nn.Dense(self.num_actions)(x)
    value = jnp.tanh(nn.Dense(1)(x)[:, 0])
    return logits, value


@dataclasses.dataclass(frozen=True)
class Agent:
  """A network and a search bound to one config: what `act` and the checkpoints need."""
  config: Config
  env: object
  network: Network
  root_fn: object
  recurrent_fn: object
  search: object

  def policy(self, params, rng_key, state):
    """Search output for a batch of pgx states `[B]`."""
    root = self.root_fn(params, rng_key, state)
    return self.search(params, rng_key, root, self.recurrent_fn, self.config.num_simulations,
                       invalid_actions=~state.legal_action_mask, max_depth=self.config.max_depth)

  def greedy_action(self, params, rng_key, state):
    """Evaluation move: the most weighted action of the search (illegal ones excluded)."""
    weights = self.policy(params, rng_key, state).action_weights
    return jnp.argmax(jnp.where(state.legal_action_mask, weights, -1.0), axis=-1)


def make_agent(config: Config) -> Agent:
  import pgx

  env = pgx.make(config.env_id)
  network = Network(num_actions=env.num_actions, hidden_sizes=tuple(config.hidden_sizes),
                    conv_channels=tuple(config.conv_channels))
  root_fn, recurrent_fn = models.pgx_model(env, network.apply)
  search = _common.make_search(config.search, num_particles=config.num_particles,
                               num_steps=config.num_steps)
  return Agent(config, env, network, root_fn, recurrent_fn, search)


def random_action(rng_key, state):
  """A uniformly random legal action per game `[B]` (pgx's `act_randomly`)."""
  from pgx.experimental import act_randomly

  return act_randomly(rng_key, state.legal_action_mask)


def play(env, act_0, act_1, rng_key, num_games: int, max_moves: int = 1000):
  """Plays `num_games` games; agent 0 moves first in the even games.

  Returns agent 0's `win_rate`, `draw_rate`, `loss_rate` over all games, and the same with
  suffix `_first` / `_second` over the games where it moved first / second.

  `act_i(rng_key, state[B]) -> action[B]` is evaluated for every game at every move (and
  selected by whose turn it is), which keeps the loop a single batched computation.
  """
  init_key, loop_key = jax.random.split(rng_key)
  state = jax.vmap(env.init)(jax.random.split(init_key, num_games))
  # pgx draws the first player at random; agent 0 is whoever moves first in the even games.
  seat_0 = jnp.where(jnp.arange(num_games) % 2 == 0, state.current_player,
                     1 - state.current_player)

  def cond(carry):
    state, _, _, moves = carry
    return (~jnp.all(state.terminated | state.truncated)) & (moves < max_moves)

  def body(carry):
    state, returns, key, moves = carry
    key, key_0, key_1, step_key = jax.random.split(key, 4)
    action = jnp.where(state.current_player == seat_0, act_0(key_0, state), act_1(key_1, state))
    state = jax.vmap(env.step)(state, action, jax.random.split(step_key, num_games))
    # pgx pays on the final move only (a finished game steps to zero rewards): accumulate.
    return state, returns + state.rewards, key, moves + 1

  state, returns, _, _ = jax.lax.while_loop(
      cond, body, (state, jnp.zeros_like(state.rewards), loop_key, 0))
  outcome = jnp.take_along_axis(returns, seat_0[:, None], axis=1)[:, 0]
  first = jnp.arange(num_games) % 2 == 0
  rates = {}
  for suffix, games in (("", jnp.ones_like(first)), ("_first", first), ("_second", ~first)):
    for name, result in (("win", outcome > 0), ("draw", outcome == 0), ("loss", outcome < 0)):
      rates[f"{name}_rate{suffix}"] = jnp.sum(result & games) / jnp.sum(games)
  return rates


def setup(config: Config):
  """`(initial_state, step_fn, eval_fn)` for `_common.train_loop`; both functions are jitted."""
  agent = make_agent(config)
  env, network = agent.env, agent.network
  optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                          optax.adam(config.learning_rate))
  update = _common.make_alphazero_update(network.apply, optimizer,
                                         num_updates=config.num_updates,
                                         batch_size=config.batch_size,
                                         value_coef=config.value_coef)
  from pgx.experimental import auto_reset

  batch_init = jax.vmap(env.init)
  # The self-play rollout's step: a finished game restarts (pgx's auto-reset; the search steps the
  # raw `env`). The new game's first state keeps the finished game's `terminated`, `truncated`
  # and `rewards` (the rollout reads them) until its next step.
  train_step = jax.vmap(auto_reset(env.step, env.init))

  key = jax.random.key(config.seed)  # a typed key, like every key in the examples
  key, init_key, env_key = jax.random.split(key, 3)
  env_state = batch_init(jax.random.split(env_key, config.num_envs))
  params = network.init(init_key, env_state.observation[:1])
  state = {"params": params, "opt_state": optimizer.init(params), "env_state": env_state,
           "game_length": jnp.zeros(config.num_envs, jnp.int32), "rng_key": key}

  def act(params, carry, rng_key):
    env_state, game_length = carry
    search_key, explore_key, step_key = jax.random.split(rng_key, 3)
    # A game restarted by the last step is live: the search must not see the old game's flags.
    env_state = env_state.replace(terminated=jnp.zeros_like(env_state.terminated),
                                  truncated=jnp.zeros_like(env_state.truncated),
                                  rewards=jnp.zeros_like(env_state.rewards))
    output = agent.policy(params, search_key, env_state)
    mover = env_state.current_player
    explore_key, coin_key = jax.random.split(explore_key)
    explore = jax.random.uniform(coin_key, (config.num_envs,)) < config.random_move_prob
    action = jnp.where(explore, random_action(explore_key, env_state), output.action)
    # Where `ended`, `next_state` is already the next game's first state.
    next_state = train_step(env_state, action, jax.random.split(step_key, config.num_envs))
    reward = jnp.take_along_axis(next_state.rewards, mover[:, None], axis=1)[:, 0]
    ended = next_state.terminated | next_state.truncated
    # Only used where the game goes on (the discount is 0 where it ended).
    _, value_next = network.apply(params, next_state.observation)
    game_length = game_length + 1
    transition = {
        "obs": env_state.observation,
        "policy": output.action_weights,
        "reward": reward,
        # Zero-sum alternating moves: the next mover's value is the negative of ours.
        "discount": jnp.where(ended, 0.0, -1.0),
        "value_next": value_next,
        "ended": ended,
        "finished_length": jnp.where(ended, game_length, 0),
        "first_player_won": ended & (reward > 0) & (mover == 0),
    }
    return (next_state, jnp.where(ended, 0, game_length)), transition

  @jax.jit
  def step_fn(state):
    key, rollout_key, update_key = jax.random.split(state["rng_key"], 3)
    params = state["params"]
    carry, traj = jax.lax.scan(functools.partial(act, params),
                               (state["env_state"], state["game_length"]),
                               jax.random.split(rollout_key, config.rollout_length))
    returns = _common.bootstrapped_returns(traj["reward"], traj["discount"], traj["value_next"],
                                           traj["ended"])
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    data = {"obs": flat(traj["obs"]), "policy": flat(traj["policy"]),
            "return": flat(jax.lax.stop_gradient(returns))}
    params, opt_state, losses = update(params, state["opt_state"], data, update_key)
    games = traj["ended"].sum()
    metrics = {**losses, "games": games,
               "mean_game_length": traj["finished_length"].sum() / games}
    return {"params": params, "opt_state": opt_state, "env_state": carry[0],
            "game_length": carry[1], "rng_key": key}, metrics

  @jax.jit
  def eval_fn(state):
    # A fixed key: every evaluation plays the same random opponent moves.
    key = jax.random.key(config.seed + 10_000)
    greedy = functools.partial(agent.greedy_action, state["params"])
    return play(env, greedy, random_action, key, config.eval_games)

  return state, step_fn, eval_fn


def train(config: Config, *, quiet: bool = False) -> list[dict]:
  """Trains with `config`; returns the metric rows (also written to `config.out` if set)."""
  state, step_fn, eval_fn = setup(config)
  return _common.train_loop(
      state, step_fn, total_env_steps=config.total_env_steps,
      env_steps_per_iteration=config.num_envs * config.rollout_length, out_dir=config.out,
      resume=config.resume, config=config, eval_fn=eval_fn, eval_every=config.eval_every,
      checkpoint_every=config.checkpoint_every, keep_checkpoints=config.keep_checkpoints,
      postfix_keys=("win_rate", "loss_rate", "loss", "steps_per_s"),
      plot_y=("win_rate", "draw_rate", "loss_rate"),
      desc=f"{config.env_id} {config.search}", quiet=quiet)


def load_agent(directory: str):
  """`(agent, params)` from a checkpoint directory written by `train`."""
  saved = _common.load_checkpoint_info(directory)["config"]
  fields = {f.name for f in dataclasses.fields(Config)}
  config = Config(**{k: tuple(v) if isinstance(v, list) else v
                     for k, v in saved.items() if k in fields})
  template, _, _ = setup(config)  # the saved training state's structure (nothing compiled)
  state, _ = _common.load_checkpoint(directory, template)
  return make_agent(config), state["params"]


def match(dir_a: str, dir_b: str, *, num_games: int = 200, seed: int = 0) -> dict:
  """Agent A (checkpoint `dir_a`) against agent B, `num_games` games, half with each colour.

  Both play greedily on their own search's `action_weights`. Returns A's win / draw / loss
  rates and counts.
  """
  agent_a, params_a = load_agent(dir_a)
  agent_b, params_b = load_agent(dir_b)
  if agent_a.config.env_id != agent_b.config.env_id:
    raise ValueError(f"agents play different games: {agent_a.config.env_id} vs "
                     f"{agent_b.config.env_id}")
  result = jax.jit(lambda key: play(
      agent_a.env, functools.partial(agent_a.greedy_action, params_a),
      functools.partial(agent_b.greedy_action, params_b), key, num_games))(
          jax.random.key(seed))
  result = {k: float(v) for k, v in result.items()}
  for name, count in (("win", "wins"), ("draw", "draws"), ("loss", "losses")):
    result[count] = round(result[f"{name}_rate"] * num_games)
  result.update(a=f"{dir_a} ({agent_a.config.search})", b=f"{dir_b} ({agent_b.config.search})",
                games=num_games)
  return result


def main(argv=None):
  extra = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  extra.add_argument("--eval-match", nargs=2, metavar=("CKPT_A", "CKPT_B"), default=None,
                     help="play two trained agents (checkpoint directories) against each other, "
                          "both colours, --eval-games games, and report A's W/D/L")
  config, args = _common.parse_config(Config, PRESETS, argv, extra=extra,
                                      description=__doc__.split("\n\n")[0])
  if args.eval_match:
    result = match(*args.eval_match, num_games=config.eval_games, seed=config.seed)
    print(f"A = {result['a']}\nB = {result['b']}\nA vs B over {result['games']} games: "
          f"W/D/L = {result['wins']}/{result['draws']}/{result['losses']}")
    for seat in ("first", "second"):
      print(f"  A moving {seat}: W/D/L rates = {result[f'win_rate_{seat}']:.3f}/"
            f"{result[f'draw_rate_{seat}']:.3f}/{result[f'loss_rate_{seat}']:.3f}")
    if config.out:
      path = os.path.join(config.out, "match.csv")
      log = _common.MetricsLog(path, _common.metadata([f"match: A = {result['a']}, "
                                                       f"B = {result['b']}"]))
      log.append({k: v for k, v in result.items() if k not in ("a", "b")})
      print(f"wrote {path}")
    return result
  rows = train(config)
  last = _common.last_values(rows)
  print(f"vs uniformly random player ({config.eval_games} games, both colours): "
        f"W/D/L = {last['win_rate']:.3f}/{last['draw_rate']:.3f}/{last['loss_rate']:.3f}; "
        f"{rows[-1]['env_steps']} moves in {rows[-1]['wall_time']:.0f} s")
  return rows


if __name__ == "__main__":
  main()
