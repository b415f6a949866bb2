"""Search quality on Snake with a fixed trained network: smctx and mctx choose every move.

The tabular benchmark (`quality.py`) scores searches on problems with exact values and a
synthetic network. This one scores them where learning happens: Jumanji Snake (the quick preset
of `examples/snake.py`, 6x6 board, 100-step episodes) with a policy-value network trained by
`examples/snake.py` itself. The network is frozen; each search plays `--episodes` games (one per
environment, batched), choosing every move with `num_simulations` evaluations of the real
environment as its model, Gumbel noise on (`gumbel_scale=1`, as in training). The score is the
mean episode return (fruit eaten, ± s.e. over episodes); the prior alone (a move sampled from the
network's policy) is the reference a search must improve on. Every search plays the same games
(the same keys).

Since the network is fixed, a difference here is a difference in the search's choices, not in
learning: it separates "TSMCTS chooses worse" from "TSMCTS's targets train worse".

Networks: `early` (150k environment steps of training) and `late` (1M steps), both trained with
TSMCTS at 16 simulations, seed 0; they are trained on the first run (~1.5 and ~3 min on 2 CPU
cores) and kept under `--networks` (not committed). Searches: mctx's Gumbel MuZero at each
budget and with `max_depth` 2, 3, 5 (how much of its lead is depth); smctx's TSMCTS (default and
paper variant), SMC and SMCTS; TSMCTS with fewer, deeper particles (`num_particles`).

  python benchmarks/snake_search.py                      # ~20 min on 2 CPU cores (first run)
  python benchmarks/snake_search.py --episodes 64 --budgets 16,64   # a quick look

Writes `snake_search.csv` / `.json` (per network and search: return, s.e., ratio to Gumbel
MuZero's return at the same budget, seconds per batch of games) and `snake_search.png` into
`--out` (default `benchmarks/results/snake_search/`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mctx  # noqa: E402
import numpy as np  # noqa: E402

import smctx  # noqa: E402
from smctx import models  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))
from claims import metadata  # noqa: E402

import _common  # noqa: E402  (examples/_common.py)
import snake  # noqa: E402  (examples/snake.py)

NETWORKS = {"early": 150_000, "late": 1_000_000}  # training environment steps
TRAINING_SEARCH, TRAINING_SIMULATIONS = "tsmcts", 16


@dataclasses.dataclass(frozen=True)
class Spec:
  """One search to score: `policy` at `budget`, with `kwargs`."""
  name: str  # row label
  search: str  # gumbel_muzero, tsmcts, tsmcts_paper, smc, smcts, prior
  budget: int
  kwargs: tuple = ()
  max_depth: int | None = None


def specs(budgets: list[int]) -> list[Spec]:
  out = [Spec("prior", "prior", 0)]
  for b in budgets:
    out += [Spec("gumbel_muzero", "gumbel_muzero", b), Spec("tsmcts", "tsmcts", b)]
  if 64 in budgets:
    out += [Spec("gumbel_muzero max_depth=2", "gumbel_muzero", 64, max_depth=2),
            Spec("gumbel_muzero max_depth=3", "gumbel_muzero", 64, max_depth=3),
            Spec("gumbel_muzero max_depth=5", "gumbel_muzero", 64, max_depth=5),
            Spec("tsmcts_paper", "tsmcts_paper", 64), Spec("smc", "smc", 64),
            Spec("smcts", "smcts", 64),
            Spec("tsmcts num_particles=8", "tsmcts", 64, (("num_particles", 8),)),
            Spec("tsmcts num_particles=4", "tsmcts", 64, (("num_particles", 4),))]
  if 256 in budgets:
    out += [Spec("tsmcts num_particles=16", "tsmcts", 256, (("num_particles", 16),)),
            Spec("tsmcts num_particles=8", "tsmcts", 256, (("num_particles", 8),))]
  return out


def policy_of(spec: Spec):
  kwargs = dict(spec.kwargs)
  if spec.search == "gumbel_muzero":
    return functools.partial(mctx.gumbel_muzero_policy, **kwargs)
  if spec.search == "tsmcts_paper":
    return functools.partial(smctx.tsmcts_policy, variant="paper", **kwargs)
  return functools.partial({"tsmcts": smctx.tsmcts_policy, "smc": smctx.smc_policy,
                            "smcts": smctx.smcts_policy}[spec.search], **kwargs)


def trained_network(name: str, directory: str, quiet: bool):
  """`(config, params)` of network `name`, trained into `directory/name` unless already there."""
  config = snake.Config(search=TRAINING_SEARCH, num_simulations=TRAINING_SIMULATIONS, seed=0,
                        total_env_steps=NETWORKS[name], out=os.path.join(directory, name))
  template, _ = snake.setup(config)
  if not _common.checkpoint_exists(config.out):
    print(f"training the {name} network ({NETWORKS[name]} steps, {TRAINING_SEARCH} at "
          f"{TRAINING_SIMULATIONS} simulations) into {config.out}", flush=True)
    snake.train(config, quiet=quiet)
  state, info = _common.load_checkpoint(config.out, template)
  if info["env_steps"] < NETWORKS[name]:
    raise ValueError(f"{config.out} holds a network of {info['env_steps']} steps, expected "
                     f"{NETWORKS[name]}: remove it to retrain")
  return config, state["params"]


def checkpoint_network(directory: str):
  """`(config, params)` of the latest checkpoint of a quick-preset `examples/snake.py` run."""
  config = snake.Config()
  template, _ = snake.setup(config)
  state, info = _common.load_checkpoint(directory, template)
  print(f"{directory}: {info['env_steps']} env steps of {info['config']['search']} at "
        f"{info['config']['num_simulations']} simulations", flush=True)
  return config, state["params"]


def make_player(config, params, spec: Spec, episodes: int):
  """A jitted `key -> returns [episodes]`: one episode per environment, `spec` choosing moves."""
  env = snake.make_env(config)
  network = snake.Network(num_actions=env.action_spec.num_values,
                          hidden_sizes=tuple(config.hidden_sizes),
                          conv_channels=tuple(config.conv_channels), time_limit=config.time_limit)
  root_fn, recurrent_fn = models.jumanji_model(env, network.apply, discount=config.discount)
  policy = None if spec.search == "prior" else policy_of(spec)

  def move(env_state, observation, key):
    invalid = ~observation.action_mask
    invalid = jnp.where(jnp.all(invalid, -1, keepdims=True), False, invalid)  # trapped: any
    if policy is None:
      logits, _ = network.apply(params, observation)
      return jax.random.categorical(key, jnp.where(invalid, -jnp.inf, logits))
    root = root_fn(params, key, env_state, observation)
    return policy(params, key, root, recurrent_fn, spec.budget, invalid_actions=invalid,
                  max_depth=spec.max_depth).action

  @jax.jit
  def play(key):
    reset_key, key = jax.random.split(key)
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(reset_key, episodes))

    def step(carry, key):
      env_state, timestep, episode_return, playing = carry
      action = move(env_state, timestep.observation, key)
      env_state, timestep = jax.vmap(env.step)(env_state, action)
      episode_return = episode_return + playing * timestep.reward
      playing = playing * (1.0 - timestep.last().astype(jnp.float32))
      return (env_state, timestep, episode_return, playing), None

    init = (env_state, timestep, jnp.zeros(episodes), jnp.ones(episodes))
    (_, _, episode_return, _), _ = jax.lax.scan(step, init,
                                                jax.random.split(key, config.time_limit))
    return episode_return

  return play


def score(config, params, spec: Spec, episodes: int, seed: int) -> dict:
  play = make_player(config, params, spec, episodes)
  key = jax.random.key(seed)
  jax.block_until_ready(play.lower(key).compile())  # compile outside the timing
  start = time.perf_counter()
  returns = np.asarray(jax.block_until_ready(play(key)))
  seconds = time.perf_counter() - start
  return dict(mean_return=float(returns.mean()),
              se=float(returns.std(ddof=1) / np.sqrt(len(returns))), seconds=seconds)


def plot(rows: list[dict], path: str, meta: list[str]) -> None:
  networks = list(dict.fromkeys(r["network"] for r in rows))
  fig, axes = plt.subplots(1, len(networks), figsize=(5.2 * len(networks), 4.0), squeeze=False)
  for ax, network in zip(axes[0], networks, strict=True):
    mine = [r for r in rows if r["network"] == network]
    prior = next(r for r in mine if r["search"] == "prior")
    ax.axhline(prior["mean_return"], color="gray", ls=":", label="prior alone")
    for name, style in (("gumbel_muzero", "o-"), ("tsmcts", "s-"),
                        ("tsmcts num_particles=8", "^--")):
      pts = sorted((r["budget"], r["mean_return"], r["se"]) for r in mine if r["search"] == name)
      if pts:
        b, m, s = map(np.asarray, zip(*pts, strict=True))
        ax.errorbar(b, m, yerr=s, fmt=style, capsize=3, label=name)
    depth = sorted((r["max_depth"], r["mean_return"]) for r in mine
                   if r["search"].startswith("gumbel_muzero max_depth"))
    for d, m in depth:
      ax.annotate(f"GMZ depth≤{d}", (64, m), fontsize=7, xytext=(3, 0),
                  textcoords="offset points")
      ax.plot([64], [m], "x", color="C0")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("num_simulations")
    ax.set_ylabel("mean episode return (fixed network)")
    ax.set_title(f"{network} network", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.text(0.01, 0.005, "\n".join(meta[:3]), fontsize=5, va="bottom")
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  fig.savefig(path, dpi=72, metadata={"Description": "\n".join(meta)})
  plt.close(fig)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=os.path.join(HERE, "results", "snake_search"))
  parser.add_argument("--networks", default=os.path.join(HERE, "results", "snake_search",
                                                        "networks"),
                      help="where the trained networks are kept (trained if absent)")
  parser.add_argument("--budgets", default="16,64,256")
  parser.add_argument("--episodes", type=int, default=128, help="games per search (batched)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--only-networks", default=",".join(NETWORKS),
                      help="which of the benchmark's own networks to score (empty: none)")
  parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR",
                      help="also score the network of a quick-preset examples/snake.py run "
                           "(its --out, e.g. from compare.py --runs-dir)")
  args = parser.parse_args(argv)
  budgets = [int(b) for b in args.budgets.split(",")]
  command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + list(argv or sys.argv[1:]))
  meta = metadata(f"episodes {args.episodes}, seed {args.seed}") + [f"command: {command}"]
  os.makedirs(args.out, exist_ok=True)
  rows = []
  networks = [(n, lambda n=n: trained_network(n, args.networks, quiet=True))
              for n in args.only_networks.split(",") if n]
  for text in args.checkpoint:
    name, directory = text.split("=", 1)
    networks.append((name, functools.partial(checkpoint_network, directory)))
  for network, load in networks:
    config, params = load()
    for spec in specs(budgets):
      result = score(config, params, spec, args.episodes, args.seed)
      rows.append(dict(network=network, search=spec.name, budget=spec.budget,
                       max_depth=spec.max_depth, **result))
      print(f"{network:5s} {spec.name:28s} {spec.budget:4d}  return {result['mean_return']:6.2f} "
            f"± {result['se']:.2f}  ({result['seconds']:.1f} s)", flush=True)
  gumbel = {(r["network"], r["budget"]): r["mean_return"] for r in rows
            if r["search"] == "gumbel_muzero"}
  for r in rows:
    ref = gumbel.get((r["network"], r["budget"]))
    r["ratio_to_gumbel"] = r["mean_return"] / ref if ref else float("nan")
  keys = ["network", "search", "budget", "max_depth", "mean_return", "se", "ratio_to_gumbel",
          "seconds"]
  with open(os.path.join(args.out, "snake_search.csv"), "w") as f:
    f.writelines(f"# {line}\n" for line in meta)
    f.write(",".join(keys) + "\n")
    for r in rows:
      f.write(",".join("" if r[k] is None else (f"{r[k]:.6g}" if isinstance(r[k], float)
                                                else str(r[k])) for k in keys) + "\n")
  with open(os.path.join(args.out, "snake_search.json"), "w") as f:
    json.dump(dict(metadata=meta, networks=NETWORKS, training_search=TRAINING_SEARCH,
                   training_simulations=TRAINING_SIMULATIONS, rows=rows), f, indent=1)
  plot(rows, os.path.join(args.out, "snake_search.png"), meta)
  print(f"results in {args.out}")


if __name__ == "__main__":
  main()
