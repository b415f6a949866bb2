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
cores) and kept under `--networks` (not committed).

Three comparisons in one run:

* equal evaluations (`--budgets`): mctx's Gumbel MuZero at each budget and with `max_depth` 2, 3,
  5 (how much of its lead is depth); smctx's TSMCTS (default and paper variant), SMC and SMCTS;
  TSMCTS with fewer, deeper particles (`num_particles`);
* equal sequential calls (`--calls`, `--widths`): Gumbel MuZero at S simulations against TSMCTS
  and SMCTS making S calls per move (`num_steps=S`) at widths N (num_simulations = N·S); the
  calls are read from each search's `extra_data` (`calls` column);
* equal wall-clock (`--time-budgets`): TSMCTS's default layout at the largest budget of a doubling
  grid whose games took no longer than Gumbel MuZero's at B, both measured in this run.

  python benchmarks/snake_search.py                      # ~1 h on 2 CPU cores
  python benchmarks/snake_search.py --episodes 64 --budgets 16,64 --calls "" --time-budgets ""
  python benchmarks/snake_search.py --calls 16,64,256 --widths 16,64,256   # on a GPU

Writes `snake_search.csv` / `.json` (per network, comparison and search: return, s.e., ratio to
Gumbel MuZero's return in the same comparison, sequential calls per move, seconds per batch of
games), `snake_search.png` (equal evaluations) and `snake_search_latency.png` (return against
sequential calls and against seconds) into `--out` (default `benchmarks/results/snake_search/`).
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
  comparison: str = "equal_evaluations"  # or equal_calls, equal_time
  target: int = 0  # Gumbel MuZero's budget this is compared with (0: its own budget)


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


def calls_specs(calls: list[int], widths: list[int], searches=("tsmcts", "smcts")) -> list[Spec]:
  """Equal sequential calls: Gumbel MuZero at S simulations, and each smctx search making S
  calls (`num_steps=S`) at every width N (num_simulations = N·S)."""
  out = []
  for s in calls:
    out.append(Spec("gumbel_muzero", "gumbel_muzero", s, comparison="equal_calls", target=s))
    for search in searches:
      out += [Spec(f"{search} N={n}", search, n * s, (("num_steps", s),),
                   comparison="equal_calls", target=s) for n in widths]
  return out


def policy_of(spec: Spec):
  kwargs = dict(spec.kwargs)
  kwargs.pop("warm_start", None)  # handled by the player (`make_player`)
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
  # `warm_start=True` (TSMCTS): each move's search starts from the previous one's estimates.
  warm = dict(spec.kwargs).get("warm_start", False)
  num_actions = env.action_spec.num_values

  def move(env_state, observation, key, warm_start):
    invalid = ~observation.action_mask
    invalid = jnp.where(jnp.all(invalid, -1, keepdims=True), False, invalid)  # trapped: any
    if policy is None:
      logits, _ = network.apply(params, observation)
      action = jax.random.categorical(key, jnp.where(invalid, -jnp.inf, logits))
      return action, jnp.zeros(action.shape, jnp.int32), warm_start
    root = root_fn(params, key, env_state, observation)
    out = policy(params, key, root, recurrent_fn, spec.budget, invalid_actions=invalid,
                 max_depth=spec.max_depth, **({"warm_start": warm_start} if warm else {}))
    extra = out.search_tree.extra_data
    # Sequential recurrent_fn calls of this move, as the search reports them (mctx: one per
    # simulation).
    calls = (jnp.sum(extra.depth, axis=-1) if isinstance(extra, smctx.SearchDiagnostics)
             else jnp.full(out.action.shape, spec.budget))
    if warm:
      warm_start = smctx.warm_start(out, out.action)
    return out.action, calls, warm_start

  @jax.jit
  def play(key):
    reset_key, key = jax.random.split(key)
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(reset_key, episodes))

    def step(carry, key):
      env_state, timestep, episode_return, playing, warm_start = carry
      action, calls, warm_start = move(env_state, timestep.observation, key, warm_start)
      env_state, timestep = jax.vmap(env.step)(env_state, action)
      episode_return = episode_return + playing * timestep.reward
      playing = playing * (1.0 - timestep.last().astype(jnp.float32))
      return ((env_state, timestep, episode_return, playing, warm_start),
              jnp.mean(calls.astype(jnp.float32)))

    init = (env_state, timestep, jnp.zeros(episodes), jnp.ones(episodes),
            smctx.WarmStart.zeros(episodes, num_actions))
    (_, _, episode_return, _, _), calls = jax.lax.scan(step, init,
                                                    jax.random.split(key, config.time_limit))
    return episode_return, jnp.mean(calls)

  return play


def score(config, params, spec: Spec, episodes: int, seed: int) -> dict:
  play = make_player(config, params, spec, episodes)
  key = jax.random.key(seed)
  jax.block_until_ready(play.lower(key).compile())  # compile outside the timing
  start = time.perf_counter()
  returns, calls = jax.block_until_ready(play(key))
  seconds = time.perf_counter() - start
  returns = np.asarray(returns)
  return dict(mean_return=float(returns.mean()),
              se=float(returns.std(ddof=1) / np.sqrt(len(returns))), seconds=seconds,
              calls=float(calls))


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


def match_time(score_at, target_seconds: float, grid: list[int], measured: dict) -> int:
  """The largest grid budget whose play took at most `target_seconds` (probing upwards from
  the budgets measured so far; `measured`: budget -> seconds, updated)."""
  best = None
  for budget in grid:
    if budget not in measured:
      measured[budget] = score_at(budget)["seconds"]
    if measured[budget] > target_seconds:
      break
    best = budget
  return best if best is not None else grid[0]


def _color(label: str) -> str:
  """Gray for Gumbel MuZero; greens for TSMCTS, blues for SMCTS, darker for wider."""
  if label.startswith("gumbel"):
    return "gray"
  shades = {"N=16": 0.45, "N=64": 0.7, "N=256": 0.95}
  level = next((v for k, v in shades.items() if f"{k} " in label + " "), 0.6)
  cmap = plt.get_cmap("Blues" if label.startswith("smcts") else "Greens")
  return cmap(level)


def plot_latency(rows: list[dict], path: str, meta: list[str]) -> None:
  """Return against sequential calls (equal calls) and against measured seconds (every run)."""
  networks = list(dict.fromkeys(r["network"] for r in rows))
  fig, axes = plt.subplots(len(networks), 2, figsize=(10.4, 3.6 * len(networks)), squeeze=False)
  for (ax_calls, ax_time), network in zip(axes, networks, strict=True):
    mine = [r for r in rows if r["network"] == network]
    calls = [r for r in mine if r["comparison"] == "equal_calls"]
    for name in dict.fromkeys(r["search"] for r in calls):
      pts = sorted((r["calls"], r["mean_return"], r["se"]) for r in calls if r["search"] == name)
      x, m, e = map(np.asarray, zip(*pts, strict=True))
      ax_calls.errorbar(x, m, yerr=e, fmt="o-" if name == "gumbel_muzero" else "s--",
                        capsize=3, label=name, color=_color(name))
    ax_calls.set_xscale("log", base=2)
    ax_calls.set_xlabel("sequential recurrent_fn calls per move")
    ax_calls.set_title(f"{network} network: equal sequential calls", fontsize=9)
    # One series per search (Gumbel MuZero and TSMCTS's default layout at every budget; each
    # width at equal calls as S varies), each play once.
    series: dict = {}
    for r in mine:
      if r["search"] == "prior" or r["max_depth"] is not None or not r["seconds"] > 0:
        continue
      if r["search"] in ("gumbel_muzero", "tsmcts"):
        label = r["search"] + (" (default layout)" if r["search"] == "tsmcts" else "")
      elif r["comparison"] == "equal_calls":
        label = f"{r['search']} (S varies)"
      else:
        continue
      series.setdefault(label, {})[r["budget"]] = (r["seconds"], r["mean_return"], r["se"])
    for label, points in series.items():
      x, m, e = map(np.asarray, zip(*sorted(points.values()), strict=True))
      ax_time.errorbar(x, m, yerr=e, fmt="s--" if "S varies" in label else "o-", capsize=3,
                       label=label, color=_color(label))
    ax_time.set_xscale("log")
    ax_time.set_xlabel("seconds to play the games (all moves, batched)")
    ax_time.set_title(f"{network} network: return against wall-clock", fontsize=9)
    for ax in (ax_calls, ax_time):
      ax.set_ylabel("mean episode return")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=6)
  fig.text(0.01, 0.005, "\n".join(meta[:3]), fontsize=5, va="bottom")
  fig.tight_layout(rect=(0, 0.05, 1, 1))
  fig.savefig(path, dpi=72, metadata={"Description": "\n".join(meta)})
  plt.close(fig)


def score_network(network: str, config, params, episodes: int, seed: int, *, budgets,
                  calls, widths, time_budgets, calls_searches) -> list[dict]:
  """Every comparison's rows for one network (plays shared between comparisons run once)."""
  rows, done = [], {}

  def run_spec(spec: Spec) -> dict:
    key = (spec.search, spec.budget, spec.kwargs, spec.max_depth)
    if key not in done:
      done[key] = score(config, params, spec, episodes, seed)
    result = done[key]
    rows.append(dict(network=network, search=spec.name, budget=spec.budget,
                     max_depth=spec.max_depth, comparison=spec.comparison,
                     target_budget=spec.target or spec.budget, **result))
    print(f"{network:5s} {spec.comparison:17s} {spec.name:28s} {spec.budget:6d}  return "
          f"{result['mean_return']:6.2f} ± {result['se']:.2f}  ({result['calls']:.0f} calls, "
          f"{result['seconds']:.1f} s)", flush=True)
    return result

  for spec in (specs(budgets) if budgets else []):
    run_spec(spec)
  for spec in calls_specs(calls, widths, calls_searches):
    run_spec(spec)
  # Equal wall-clock: TSMCTS (default layout) at the largest budget of a doubling grid whose
  # games took no longer than Gumbel MuZero's at B, measured in this run.
  for b in time_budgets:
    target = run_spec(Spec("gumbel_muzero", "gumbel_muzero", b, comparison="equal_time",
                           target=b))["seconds"]
    measured = {budget: r["seconds"] for (search, budget, kwargs, depth), r in done.items()
                if search == "tsmcts" and not kwargs and depth is None}
    probe = functools.partial(lambda target_budget, budget: run_spec(Spec(
        "tsmcts", "tsmcts", budget, comparison="equal_time_probe", target=target_budget)), b)
    chosen = match_time(probe, target, [b * 2**k for k in range(9)], measured)
    run_spec(Spec("tsmcts", "tsmcts", chosen, comparison="equal_time", target=b))
  return [r for r in rows if r["comparison"] != "equal_time_probe"]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=os.path.join(HERE, "results", "snake_search"))
  parser.add_argument("--networks", default=os.path.join(HERE, "results", "snake_search",
                                                        "networks"),
                      help="where the trained networks are kept (trained if absent)")
  parser.add_argument("--budgets", default="16,64,256",
                      help="equal evaluations: every search at these budgets (empty: none)")
  parser.add_argument("--calls", default="16,64",
                      help="equal sequential calls S (GPU: 16,64,256; empty: none)")
  parser.add_argument("--widths", default="16,64,256", help="widths N at equal calls")
  parser.add_argument("--calls-searches", default="tsmcts,smcts")
  parser.add_argument("--time-budgets", default="64",
                      help="equal wall-clock: Gumbel MuZero's budgets matched (empty: none)")
  parser.add_argument("--episodes", type=int, default=128, help="games per search (batched)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--only-networks", default=",".join(NETWORKS),
                      help="which of the benchmark's own networks to score (empty: none)")
  parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR",
                      help="also score the network of a quick-preset examples/snake.py run "
                           "(its --out, e.g. from compare.py --runs-dir)")
  args = parser.parse_args(argv)
  ints = lambda text: [int(x) for x in text.split(",") if x.strip()]
  budgets, calls, widths = ints(args.budgets), ints(args.calls), ints(args.widths)
  time_budgets = ints(args.time_budgets)
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
    rows += score_network(network, config, params, args.episodes, args.seed, budgets=budgets,
                          calls=calls, widths=widths, time_budgets=time_budgets,
                          calls_searches=args.calls_searches.split(","))
  reference = {(r["network"], r["comparison"], r["target_budget"]): r["mean_return"]
               for r in rows if r["search"] == "gumbel_muzero" and r["max_depth"] is None}
  for r in rows:
    ref = reference.get((r["network"], r["comparison"], r["target_budget"]))
    r["ratio_to_gumbel"] = r["mean_return"] / ref if ref else float("nan")
  keys = ["network", "comparison", "search", "budget", "target_budget", "max_depth", "calls",
          "mean_return", "se", "ratio_to_gumbel", "seconds"]
  with open(os.path.join(args.out, "snake_search.csv"), "w") as f:
    f.writelines(f"# {line}\n" for line in meta)
    f.write(",".join(keys) + "\n")
    for r in rows:
      f.write(",".join("" if r[k] is None else (f"{r[k]:.6g}" if isinstance(r[k], float)
                                                else str(r[k])) for k in keys) + "\n")
  with open(os.path.join(args.out, "snake_search.json"), "w") as f:
    json.dump(dict(metadata=meta, networks=NETWORKS, training_search=TRAINING_SEARCH,
                   training_simulations=TRAINING_SIMULATIONS, rows=rows), f, indent=1)
  evaluations = [r for r in rows if r["comparison"] == "equal_evaluations"]
  if evaluations:
    plot(evaluations, os.path.join(args.out, "snake_search.png"), meta)
  if any(r["comparison"] != "equal_evaluations" for r in rows):
    plot_latency(rows, os.path.join(args.out, "snake_search_latency.png"), meta)
  print(f"results in {args.out}")


if __name__ == "__main__":
  main()
