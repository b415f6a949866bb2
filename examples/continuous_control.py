"""Continuous control with sampled-action search: gymnax's Pendulum-v1 swing-up.

An AlphaZero-style loop over a continuous action space. The search's model is
the true simulator (the environment is pure JAX, so `recurrent_fn` *is* the
environment step) plus the value and policy networks at the next state:

* root: `M` candidate actions sampled from the current tanh-squashed Gaussian
  policy (`prior_logits=None`: uniform over the candidates, which is right for
  i.i.d. samples of the policy);
* inner nodes: `action_sampler` samples the next action of each particle from
  the network's Gaussian at that state;
* acting: the search's `chosen_action`;
* policy loss: weighted maximum likelihood `-Σ_m w_m log π(c_m | s)` with
  `w = action_weights` (an MPO/SPO-style target);
* value loss: squared error to TD(λ) returns of the episode, bootstrapped with
  the search values of the visited states.

Usage (`--help` lists every config field as a flag, with the defaults of `--preset`):

    python examples/continuous_control.py                  # quick preset, TSMCTS
    python examples/continuous_control.py --search smc     # the SMC baseline
    python examples/continuous_control.py --compare        # SMC vs TSMCTS at an equal budget
    python examples/continuous_control.py --preset full    # longer, larger budget (a GPU)

Outputs go to `examples/results/continuous_<search>/` (`metrics.csv` with `#` device and
version lines, `learning_curve.png`, a checkpoint for `--resume`); `--compare` writes
`examples/results/continuous_compare*.csv` and `continuous_compare.png`. `train(config) -> rows`
is importable.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import time
from typing import Literal, Optional, Sequence

import _common
import flax.linen as nn
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import optax

import smctx

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# ----------------------------------------------------------------------------
# The environment: a continuous-action gymnax environment (Pendulum-v1 by default).
# ----------------------------------------------------------------------------


class GymnaxEnv:
  """A deterministic continuous-action gymnax environment, batched, actions in [-1, 1].

  `reset(key, B) -> state [B]`, `observe(state) -> obs [B, obs]` (divided by the observation
  box's finite bounds), `step(state, action [B, act])
  -> (next state, reward [B])`. Actions in `[-1, 1]` are mapped onto the action space's box.
  The search steps the environment as its model, so it must be deterministic (Pendulum-v1 is):
  `step_env` gets a fixed key and never auto-resets; episodes last `max_steps_in_episode`.
  Pendulum-v1's rewards are Gym's `-(θ² + 0.1 θ'² + 0.001 u²)` (per step in [-16.3, 0]); a
  random policy scores about -1200 per episode, a good swing-up about -150.
  """

  def __init__(self, env_id: str):
    import gymnax  # the examples extra

    self._env, self._params = gymnax.make(env_id)
    space = self._env.action_space(self._params)
    self._low, self._high = jnp.asarray(space.low), jnp.asarray(space.high)
    self.name = env_id
    observation_space = self._env.observation_space(self._params)
    self.observation_size = int(np.prod(observation_space.shape))
    # Observations divided by the box's bounds where they are finite (Pendulum: θ' / 8).
    high = np.abs(np.asarray(observation_space.high, np.float32))
    self._observation_scale = jnp.asarray(np.where(np.isfinite(high) & (high > 0), high, 1.0))
    self.action_size = int(np.prod(space.shape)) if space.shape else 1
    self.episode_length = int(self._params.max_steps_in_episode)

  def reset(self, rng_key: jax.Array, batch_size: int):
    _, state = jax.vmap(self._env.reset, in_axes=(0, None))(
        jax.random.split(rng_key, batch_size), self._params)
    return state

  def observe(self, state) -> jax.Array:
    return jax.vmap(lambda s: self._env.get_obs(s, self._params))(state) / self._observation_scale

  def step(self, state, action: jax.Array):
    """`action [B, act]` in [-1, 1] -> (next state, reward [B])."""
    scaled = self._low + (jnp.clip(action, -1.0, 1.0) + 1.0) / 2.0 * (self._high - self._low)
    # One fixed key for every environment: the environment is deterministic.
    _, next_state, reward, _, _ = jax.vmap(self._env.step_env, in_axes=(None, 0, 0, None))(
        jax.random.key(0), state, scaled.reshape(action.shape[0], -1), self._params)
    return next_state, reward


# ----------------------------------------------------------------------------
# Networks: a tanh-squashed Gaussian policy and a value function.
# ----------------------------------------------------------------------------

LOG_STD_MIN, LOG_STD_MAX = -3.0, 1.0
INITIAL_LOG_STD = 0.0


class PolicyValueNet(nn.Module):
  """obs [B, obs] -> (mean [B, act], log_std [B, act]) of the pre-tanh Gaussian, value [B]."""

  action_size: int
  hidden: int = 64
  value_scale: float = 10.0

  @nn.compact
  def __call__(self, obs):
    def torso(x, name):
      for i in range(2):
        x = nn.tanh(nn.Dense(self.hidden, name=f"{name}_{i}")(x))
      return x

    p = torso(obs, "policy")
    mean = nn.Dense(self.action_size, name="mean", kernel_init=nn.initializers.zeros)(p)
    log_std = nn.Dense(self.action_size, name="log_std", kernel_init=nn.initializers.zeros)(p)
    # Bounded log-std, starting at INITIAL_LOG_STD (broad exploration in the pre-tanh space).
    offset = math.log((INITIAL_LOG_STD - LOG_STD_MIN) / (LOG_STD_MAX - INITIAL_LOG_STD))
    log_std = LOG_STD_MIN + (LOG_STD_MAX - LOG_STD_MIN) * nn.sigmoid(log_std + offset)
    value = self.value_scale * nn.Dense(1, name="value")(torso(obs, "value"))[..., 0]
    return (mean, log_std), value


def gaussian_log_prob(z, mean, log_std):
  """log N(z; mean, exp(log_std)) summed over the action dimensions.

  The candidates are pre-tanh samples `z` and the environment applies
  `tanh(z)`: the tanh Jacobian does not depend on the parameters, so the
  weighted maximum likelihood of the squashed policy has this gradient.
  """
  return jnp.sum(-0.5 * ((z - mean) / jnp.exp(log_std))**2 - log_std
                 - 0.5 * math.log(2.0 * math.pi), axis=-1)


def sample_gaussian(rng_key, policy):
  """`action_sampler`: `(mean [B', act], log_std [B', act])` -> pre-tanh action `[B', act]`."""
  mean, log_std = policy
  return mean + jnp.exp(log_std) * jax.random.normal(rng_key, mean.shape)


# ----------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------

SEARCHES = ("smc", "smcts", "tsmcts")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run depends on; presets fill it, flags override single fields."""
  search: Literal["smc", "smcts", "tsmcts"] = "tsmcts"  # the sampled-action search policy
  num_simulations: int = 64  # model evaluations per search
  num_particles: Optional[int] = None  # particles (None: chosen from the budget)
  num_candidates: int = 8  # M: candidate actions sampled from the policy at the root
  seed: int = 0  # random seed
  preset: Literal["quick", "full"] = "quick"  # quick (CPU, minutes) or full (GPU)
  out: Optional[str] = None  # directory (default: examples/results/continuous_<search>)
  resume: bool = False  # continue from the latest checkpoint in --out
  env: str = "Pendulum-v1"  # a deterministic continuous-action gymnax environment
  num_envs: int = 16  # episodes played in parallel; one iteration = one episode each
  total_env_steps: int = 16 * 200 * 60  # environment steps of the whole run
  discount: float = 0.97  # discount per step (search and value targets)
  reward_scale: float = 0.1  # rewards as the search and the value network see them
  td_lambda: float = 0.9  # lambda of the TD(lambda) value targets
  hidden: int = 64  # width of the policy and value MLPs
  learning_rate: float = 1e-3  # Adam's step size
  num_epochs: int = 2  # passes over each iteration's data
  batch_size: int = 256  # samples per Adam step
  entropy_cost: float = 1e-3  # weight of the entropy bonus on the Gaussian policy
  eval_every: int = 5  # iterations between evaluations of the policy network alone
  checkpoint_every: int = 20  # iterations between checkpoints (and one at the end)
  keep_checkpoints: int = 3  # the latest checkpoints kept (orbax's max_to_keep)


PRESETS = {
    # Pendulum swing-up: returns climb from about -1300 to about -150 in under a minute on
    # 2 CPU cores (about 20 s of it compilation). N = 8 particles: with M = 8 candidates
    # (K = 3 halving iterations) and 64 simulations, smctx's default width (16) leaves TSMCTS
    # at depth 1 in two of its three iterations; 8 particles give depth 2 in all three (and
    # SMC depth 8), which measured better for both (3 seeds each).
    "quick": dict(env="Pendulum-v1", num_envs=16, total_env_steps=16 * 200 * 60,
                  num_simulations=64, num_particles=8, num_candidates=8),
    # Longer, wider and with a larger budget (meant for a GPU).
    "full": dict(env="Pendulum-v1", num_envs=64, total_env_steps=64 * 200 * 200,
                 num_simulations=256, num_candidates=16, hidden=256, learning_rate=3e-4,
                 num_epochs=4, batch_size=1024, eval_every=10),
}


def make_env(config: Config):
  return GymnaxEnv(config.env)


# ----------------------------------------------------------------------------
# The search: the simulator is the model, the networks sit at its nodes.
# ----------------------------------------------------------------------------

def make_search(env, net: PolicyValueNet, config: Config):
  """`(params, rng_key, env_state [B]) -> (chosen pre-tanh action [B, act], candidates
  [B, M, act], action_weights [B, M], search value [B])`."""
  policy = {"smc": smctx.sampled_smc_policy, "smcts": smctx.sampled_smcts_policy,
            "tsmcts": smctx.sampled_tsmcts_policy}[config.search]

  def recurrent_fn(params, rng_key, action, state):
    del rng_key  # the simulator is deterministic
    next_state, reward = env.step(state, jnp.tanh(action))
    policy_params, value = net.apply(params, env.observe(next_state))
    out = smctx.SampledRecurrentFnOutput(
        reward=config.reward_scale * reward,
        discount=jnp.full_like(reward, config.discount),
        value=value,
        policy=policy_params)  # (mean, log_std): `sample_gaussian` draws the next action
    return out, next_state

  def search(params, rng_key, state):
    candidate_key, search_key = jax.random.split(rng_key)
    (mean, log_std), value = net.apply(params, env.observe(state))
    noise = jax.random.normal(candidate_key,
                              (mean.shape[0], config.num_candidates, mean.shape[1]))
    candidates = mean[:, None] + jnp.exp(log_std)[:, None] * noise  # [B, M, act]
    # prior_logits=None: uniform over the candidates, right for i.i.d. samples of the policy.
    root = smctx.SampledRootFnOutput(candidates=candidates, value=value, embedding=state)
    out = policy(params, search_key, root, recurrent_fn, config.num_simulations,
                 num_particles=config.num_particles, action_sampler=sample_gaussian)
    return (out.chosen_action, candidates, out.action_weights,
            out.search_tree.node_values[:, mctx.Tree.ROOT_INDEX])

  return search


# ----------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------

def lambda_returns(rewards, values, bootstrap, discount, td_lambda):
  """TD(λ) targets `G_t = r_t + γ((1−λ) v_{t+1} + λ G_{t+1})`, `G_T = v_T`; inputs `[T, E]`.

  `values` are the search values of the visited states (better than the network's own), and
  `bootstrap` the network value after the last step (episodes are truncated, not terminated).
  """
  next_values = jnp.concatenate([values[1:], bootstrap[None]], axis=0)

  def backward(g_next, xs):
    reward, v_next = xs
    g = reward + discount * ((1.0 - td_lambda) * v_next + td_lambda * g_next)
    return g, g

  _, returns = jax.lax.scan(backward, bootstrap, (rewards, next_values), reverse=True)
  return returns


def policy_value_loss(params, net, batch, entropy_cost):
  """Weighted maximum likelihood of the candidates plus value regression.

  `-Σ_m w_m log π(c_m | s)` with `w` the search's `action_weights` `[b, M]` (a
  policy-improvement target over the sampled candidates, as in MPO/SPO), and
  `½(V(s) − G)²` with `G` the TD(λ) target. A small entropy bonus slows the
  collapse of the Gaussian.
  """
  (mean, log_std), value = net.apply(params, batch["obs"])
  log_prob = gaussian_log_prob(batch["candidates"], mean[:, None], log_std[:, None])  # [b, M]
  policy_loss = -jnp.mean(jnp.sum(batch["weights"] * log_prob, axis=-1))
  value_loss = 0.5 * jnp.mean((value - batch["return"])**2)
  log_std_mean = jnp.mean(log_std)
  loss = policy_loss + value_loss - entropy_cost * log_std_mean
  return loss, {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss,
                "log_std": log_std_mean}


def setup(config: Config):
  """`(initial_state, step_fn, eval_fn)` for `_common.train_loop`; both functions jitted."""
  if config.search not in SEARCHES:
    raise ValueError(f"search must be one of {SEARCHES} for sampled actions; got "
                     f"{config.search!r} (mctx has no sampled-action Gumbel MuZero)")
  env = make_env(config)
  net = PolicyValueNet(action_size=env.action_size, hidden=config.hidden)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.learning_rate))
  search = make_search(env, net, config)

  # A typed key, like every key in the examples.
  key, init_key = jax.random.split(jax.random.key(config.seed))
  params = net.init(init_key, jnp.zeros((1, env.observation_size)))
  state = {"params": params, "opt_state": optimizer.init(params), "rng_key": key}

  def act(params, env_state, rng_key):
    chosen, candidates, weights, search_value = search(params, rng_key, env_state)
    next_state, reward = env.step(env_state, jnp.tanh(chosen))
    return next_state, {"obs": env.observe(env_state), "candidates": candidates,
                        "weights": weights, "reward": reward, "search_value": search_value}

  def sgd_step(carry, batch):
    params, opt_state = carry
    grads, metrics = jax.grad(policy_value_loss, has_aux=True)(params, net, batch,
                                                               config.entropy_cost)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), metrics

  @jax.jit
  def step_fn(state):
    """One iteration: `num_envs` full episodes with the search, then the updates."""
    key, reset_key, rollout_key, shuffle_key = jax.random.split(state["rng_key"], 4)
    params = state["params"]
    env_state = env.reset(reset_key, config.num_envs)
    final_state, traj = jax.lax.scan(functools.partial(act, params), env_state,
                                     jax.random.split(rollout_key, env.episode_length))
    _, bootstrap = net.apply(params, env.observe(final_state))
    returns = lambda_returns(config.reward_scale * traj["reward"], traj["search_value"],
                             bootstrap, config.discount, config.td_lambda)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    data = {"obs": flat(traj["obs"]), "candidates": flat(traj["candidates"]),
            "weights": flat(traj["weights"]), "return": flat(returns)}
    num = data["obs"].shape[0]
    num_batches = num // config.batch_size

    def epoch(carry, key):
      order = jax.random.permutation(key, num)[:num_batches * config.batch_size]
      batches = jax.tree.map(
          lambda x: x[order].reshape((num_batches, config.batch_size) + x.shape[1:]), data)
      return jax.lax.scan(sgd_step, carry, batches)

    (params, opt_state), losses = jax.lax.scan(
        epoch, (params, state["opt_state"]), jax.random.split(shuffle_key, config.num_epochs))
    metrics = {
        **jax.tree.map(jnp.mean, losses),
        "mean_return": jnp.mean(jnp.sum(traj["reward"], axis=0)),
        "root_value": jnp.mean(traj["search_value"][0]) / config.reward_scale,
    }
    return {"params": params, "opt_state": opt_state, "rng_key": key}, metrics

  @jax.jit
  def policy_return(params, rng_key):
    env_state = env.reset(rng_key, config.num_envs)

    def step(env_state, _):
      (mean, _), _ = net.apply(params, env.observe(env_state))
      return env.step(env_state, jnp.tanh(mean))

    _, rewards = jax.lax.scan(step, env_state, None, length=env.episode_length)
    return jnp.mean(jnp.sum(rewards, axis=0))

  def eval_fn(state):
    """Return of the policy network alone (its mean action, no search), on fresh episodes."""
    return {"policy_return": policy_return(state["params"],
                                           jax.random.fold_in(state["rng_key"], 1))}

  return state, step_fn, eval_fn, env


def train(config: Config, *, quiet: bool = False) -> list[dict]:
  """Trains with `config`; returns the metric rows (also written to `config.out` if set)."""
  state, step_fn, eval_fn, env = setup(config)
  return _common.train_loop(
      state, step_fn, total_env_steps=config.total_env_steps,
      env_steps_per_iteration=config.num_envs * env.episode_length, out_dir=config.out,
      resume=config.resume, config=config, eval_fn=eval_fn, eval_every=config.eval_every,
      checkpoint_every=config.checkpoint_every, keep_checkpoints=config.keep_checkpoints,
      postfix_keys=("mean_return", "policy_return", "loss", "steps_per_s"),
      plot_y="mean_return", desc=f"{config.env} {config.search}", quiet=quiet)


def final_return(rows: Sequence[dict], last: int = 10) -> float:
  """Mean episode return of the search over the last `last` iterations."""
  return float(np.mean([r["mean_return"] for r in rows[-last:]]))


# ----------------------------------------------------------------------------
# SMC against TSMCTS at an equal budget.
# ----------------------------------------------------------------------------

def compare(config: Config, searches: Sequence[str], seeds: int, out: str) -> list[dict]:
  """Trains every search for seeds `0..seeds-1` at the same budget; CSVs and a PNG in `out`.

  Writes `continuous_compare.csv` (every iteration of every run),
  `continuous_compare_summary.csv` (per search: final return over seeds, its interquartile mean
  with a 95 % percentile-bootstrap interval, wall time) and `continuous_compare.png` (the IQM
  over seeds with its bootstrap band, against environment steps).
  """
  curves, rows_out, summary = {}, [], []
  for search in searches:
    curves[search] = []
    finals, walls = [], []
    for seed in range(seeds):
      run_config = dataclasses.replace(config, search=search, seed=seed, out=None, resume=False)
      start = time.perf_counter()
      rows = train(run_config, quiet=False)
      walls.append(time.perf_counter() - start)
      curves[search].append(rows)
      finals.append(final_return(rows))
      rows_out += [{"search": search, "seed": seed, **row} for row in rows]
      print(f"{search} seed {seed}: final return {finals[-1]:.1f} "
            f"(mean of the last 10 iterations), {walls[-1]:.0f} s")
    center, low, high = _common.iqm_and_ci(np.asarray(finals))
    summary.append({"search": search, "num_simulations": config.num_simulations,
                    "num_candidates": config.num_candidates, "seeds": seeds,
                    "final_return_mean": float(np.mean(finals)),
                    "final_return_std": float(np.std(finals)),
                    "final_return_iqm": float(center), "final_return_ci_low": float(low),
                    "final_return_ci_high": float(high),
                    "final_return_min": float(np.min(finals)),
                    "final_return_max": float(np.max(finals)),
                    "first_return_mean": float(np.mean([c[0]["mean_return"]
                                                        for c in curves[search]])),
                    # Mean over all iterations: learning speed, when both end at the optimum.
                    "run_return_mean": float(np.mean([np.mean([r["mean_return"] for r in c])
                                                      for c in curves[search]])),
                    # The policy network alone (mean action, no search) after training.
                    "policy_return_mean": float(np.mean([c[-1]["policy_return"]
                                                         for c in curves[search]])),
                    "policy_return_min": float(np.min([c[-1]["policy_return"]
                                                       for c in curves[search]])),
                    "policy_return_max": float(np.max([c[-1]["policy_return"]
                                                       for c in curves[search]])),
                    "wall_time_mean": float(np.mean(walls))})
  config_line = f"config: {json.dumps(dataclasses.asdict(config), default=str)}"
  meta = _common.metadata([
      config_line, "final return = mean episode return of the search over the last 10 iterations",
      f"iqm: interquartile mean of the final returns over seeds; ci: its "
      f"{_common.CONFIDENCE:.0%} percentile-bootstrap interval over seeds "
      f"({_common.BOOTSTRAP_RESAMPLES} resamples; nan with one seed)"])
  for name, table in (("continuous_compare.csv", rows_out),
                      ("continuous_compare_summary.csv", summary)):
    log = _common.MetricsLog(os.path.join(out, name), meta)
    for row in table:
      log.append(row)
  # Environment steps only: on a shared CPU the wall-clock axis is mostly compilation and load.
  _common.plot_bands(curves, os.path.join(out, "continuous_compare.png"), y="mean_return",
                     xs=(("env_steps", "environment steps"),), band="iqm",
                     title=f"{config.env}, {config.num_simulations} simulations, "
                           f"M={config.num_candidates}\nIQM and {_common.CONFIDENCE:.0%} "
                           f"bootstrap CI over seeds", meta=meta[:1])
  for row in summary:
    print(f"{row['search']:>7s}: return {row['first_return_mean']:.0f} -> "
          f"{row['final_return_mean']:.0f} (seeds {row['final_return_min']:.0f} .. "
          f"{row['final_return_max']:.0f}), mean over the run {row['run_return_mean']:.0f}; "
          f"policy network alone {row['policy_return_mean']:.0f} (seeds "
          f"{row['policy_return_min']:.0f} .. {row['policy_return_max']:.0f}); "
          f"{row['wall_time_mean']:.0f} s per run")
  return summary


def main(argv=None):
  extra = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  extra.add_argument("--compare", action="store_true",
                     help="train SMC and TSMCTS at the same budget and compare their returns")
  extra.add_argument("--seeds", type=int, default=3, help="seeds per search with --compare")
  # `--search` takes smc, smcts or tsmcts: mctx has no sampled-action Gumbel MuZero.
  config, args = _common.parse_config(Config, PRESETS, argv, extra=extra,
                                      description=__doc__.split("\n\n")[0])
  if args.compare:
    compare(config, ("smc", "tsmcts"), args.seeds, config.out or RESULTS)
    return
  if config.out is None:
    config = dataclasses.replace(config, out=os.path.join(RESULTS, f"continuous_{config.search}"))
  rows = train(config)
  print(f"{config.env} {config.search}: return {rows[0]['mean_return']:.1f} -> "
        f"{final_return(rows):.1f} (mean of the last 10 iterations), "
        f"{rows[-1]['env_steps']} env steps in {rows[-1]['wall_time']:.0f} s; outputs in "
        f"{config.out}")


if __name__ == "__main__":
  main()
