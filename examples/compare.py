"""The same training with each search at an equal budget, over several seeds.

Runs `snake.train` (default), `alphazero_pgx.train` (`--env pgx`) or `muzero.train` (`--env
muzero`: Snake searched through a learned model) in this process for every search in `--searches`
and every seed `0 .. --seeds-1`, all at the same `--num-simulations`, then

* writes `compare.csv` (per run, up to ~200 evenly spaced iterations: search, seed, env_steps,
  wall_time, the metric, its smoothed value and the losses) and `compare_summary.csv` (per
  search: final metric mean/std/min/max over seeds, its interquartile mean (IQM) with a 95 %
  percentile-bootstrap confidence interval over seeds, wall time), both with device and versions
  as `# ` lines;
* plots `compare.png`: the IQM over seeds with its bootstrap confidence band, against environment
  steps (left) and wall-clock time (right). (rliable's estimators, computed with scipy: see
  `_common.iqm_and_ci`.)

The snake metric is the mean episode return smoothed over `--smooth` iterations (episodes end at
irregular times, so single iterations are noisy); the pgx metric is the win rate against a
uniformly random player.

Runs can also be named with their own settings (`--run NAME=SEARCH:key=value,...`, any config
field: a budget, a latency `num_steps`, ...), and `--match-time NAME=SEARCH:REF` adds a run of
SEARCH at the largest budget (default layout, a doubling grid from REF's budget) whose training
steps per second, probed over a few iterations, are at least REF's: equal wall-clock. Gumbel
MuZero at 64 simulations against TSMCTS at the same sequential calls and at the same wall-clock:

  python examples/compare.py --seeds 3 --run gumbel64=gumbel:num_simulations=64 \
      --run tsmcts_calls64=tsmcts:num_simulations=1024,num_steps=64 \
      --match-time tsmcts_time=tsmcts:gumbel64 --out examples/results/compare_snake_latency

  python examples/compare.py --seeds 3 --out examples/results/compare_snake
  python examples/compare.py --env pgx --seeds 2 --num-simulations 64 --out runs/compare_ttt
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import math
import os
import time

import _common
import numpy as np


def _load(env: str):
  if env == "snake":
    import snake

    return snake, "mean_return"
  if env == "muzero":
    import muzero

    return muzero, "mean_return"
  import alphazero_pgx

  return alphazero_pgx, "win_rate"


def smoothed(rows, key: str, window: int) -> list[dict]:
  """Rows with `key + '_smoothed'`: the nan-mean of `key` over the last `window` rows."""
  values = np.asarray([r.get(key, math.nan) for r in rows], float)
  out = []
  for i, row in enumerate(rows):
    recent = values[max(0, i + 1 - window):i + 1]
    recent = recent[np.isfinite(recent)]
    out.append({**row, f"{key}_smoothed": float(recent.mean()) if len(recent) else math.nan})
  return out


def final_value(rows, key: str, fraction: float = 0.1) -> float:
  """Mean of the finite values of `key` over the last `fraction` of the run (at least one)."""
  values = np.asarray([r.get(key, math.nan) for r in rows], float)
  tail = values[-max(1, int(len(values) * fraction)):]
  tail = tail[np.isfinite(tail)]
  if not len(tail):
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if len(finite) else math.nan
  return float(tail.mean())


# Every search but the paper's variant of TSMCTS, which `--searches tsmcts_paper` adds.
DEFAULT_SEARCHES = tuple(s for s in _common.SEARCHES if s != "tsmcts_paper")


def parse_run(text: str) -> tuple[str, str, dict]:
  """`NAME=SEARCH[:key=value,...]` -> `(name, search, config overrides)` (Python literals)."""
  name, _, rest = text.partition("=")
  search, _, options = rest.partition(":")
  overrides = {}
  for item in filter(None, options.split(",")):
    key, _, value = item.partition("=")
    try:
      overrides[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      overrides[key.strip()] = value.strip()
  if not name or not search:
    raise ValueError(f"{text!r}: expected NAME=SEARCH[:key=value,...]")
  return name.strip(), search.strip(), overrides


def steps_per_second(module, config, iterations: int = 8) -> float:
  """Training speed of `config` (environment steps per second), from a short run: the median
  over its iterations after the first two (compilation)."""
  steps = config.num_envs * config.rollout_length
  short = dataclasses.replace(config, total_env_steps=iterations * steps, out=None, seed=0)
  rows = module.train(short, quiet=True)
  return float(np.median([r["steps_per_s"] for r in rows[2:]]))


def match_time(module, reference, search: str, quiet: bool = False) -> tuple[int, dict]:
  """The largest budget of `search` (default layout; `reference`'s budget times 1, 2, 4, ...)
  whose training steps per second are at least `reference`'s (`reference`'s budget when none
  is), and the probes."""
  target = steps_per_second(module, reference)
  probes, best = {"reference": target}, reference.num_simulations
  for k in range(9):
    budget = reference.num_simulations * 2**k
    config = dataclasses.replace(reference, search=search, num_simulations=budget,
                                 num_steps=None, num_particles=None)
    probes[budget] = steps_per_second(module, config)
    if not quiet:
      print(f"  time match: {search} at {budget}: {probes[budget]:.0f} steps/s "
            f"(reference {target:.0f})", flush=True)
    if probes[budget] < target:
      break
    best = budget
  return best, probes


def run(env: str = "snake", *, searches=DEFAULT_SEARCHES, seeds: int = 3, preset: str = "quick",
        num_simulations=None, num_particles=None, total_env_steps=None, smooth: int = 10,
        out: str | None = None, runs_dir: str | None = None, quiet: bool = False,
        runs=(), match=()) -> dict:
  """Trains every `(search, seed)`; returns `{search: [rows of seed 0, rows of seed 1, ...]}`.

  `runs`: named runs `(name, search, config overrides)` trained instead of `searches`;
  `match`: `(name, search, reference run name)` runs of `search` at the budget that trains as
  fast as the reference (`match_time`). Writes the CSVs and the figure into `out` when given;
  per-run metrics and checkpoints into `runs_dir/<name>_seed<k>` when given.
  """
  module, metric = _load(env)
  curves: dict[str, list[list[dict]]] = {}
  summary = []
  plan = list(runs) or [(s, s, {}) for s in searches]
  common = dict(preset=preset, num_simulations=num_simulations, num_particles=num_particles,
                total_env_steps=total_env_steps)
  for name, search, reference in match:
    ref_name, ref_search, ref_overrides = next(r for r in plan if r[0] == reference)
    ref_config = _common.resolve_config(module.Config, module.PRESETS, {
        **common, "search": ref_search, **ref_overrides})
    budget, probes = match_time(module, ref_config, search, quiet)
    print(f"{name}: {search} at {budget} simulations trains as fast as {ref_name} "
          f"({ref_config.num_simulations}); probes (steps/s): {probes}", flush=True)
    plan.append((name, search, {"num_simulations": budget}))
  for name, search, overrides in plan:
    curves[name] = []
    for seed in range(seeds):
      config = _common.resolve_config(module.Config, module.PRESETS, {
          **common, "search": search, "seed": seed, **overrides,
          "out": os.path.join(runs_dir, f"{name}_seed{seed}") if runs_dir else None})
      start = time.perf_counter()
      rows = module.train(config, quiet=quiet)
      seconds = time.perf_counter() - start
      if env in ("snake", "muzero"):
        rows = smoothed(rows, metric, smooth)
      curves[name].append(rows)
      summary.append({"search": name, "seed": seed, "final": final_value(rows, metric),
                      "wall_time": rows[-1]["wall_time"], "total_seconds": seconds,
                      "env_steps": rows[-1]["env_steps"],
                      "num_simulations": config.num_simulations,
                      "num_steps": config.num_steps,
                      "env_id": getattr(config, "env_id", "snake")})
      print(f"{name} seed {seed}: final {metric} {summary[-1]['final']:.3f}, "
            f"{rows[-1]['env_steps']} env steps, {rows[-1]['wall_time']:.0f} s training")
  y = f"{metric}_smoothed" if env in ("snake", "muzero") else metric
  if out:
    _write(out, env, preset, curves, summary, metric, y)
  return curves


def merge(dirs, out: str) -> dict:
  """Re-plots and re-summarises the runs of several `compare.py` outputs as one comparison.

  Reads each directory's `compare.csv` (the curves, as written: up to ~200 points per run) and
  the per-seed finals of its `compare_summary.csv` (computed from every iteration), so no run is
  repeated; the directories must share the environment, preset and metric. Returns the curves.
  """
  curves, summary, header, sources = {}, [], None, []
  for directory in dirs:
    meta, rows = _common.read_csv(os.path.join(directory, "compare.csv"))
    sources.append(f"{directory} ({next((m for m in meta if m.startswith('date:')), '?')})")
    _, per_search = _common.read_csv(os.path.join(directory, "compare_summary.csv"))
    line = next(m for m in meta if m.startswith("compare:"))
    if header not in (None, line):
      raise ValueError(f"{directory} compares {line!r}, the others {header!r}")
    header = line
    for row in per_search:
      search = str(row["search"])
      if search in curves:
        raise ValueError(f"search {search!r} is in more than one of {list(dirs)}")
      runs = [[r for r in rows if r["search"] == search and r["seed"] == seed]
              for seed in sorted({r["seed"] for r in rows if r["search"] == search})]
      finals = [float(v) for v in str(row["finals"]).split()]
      if len(finals) != len(runs):
        raise ValueError(f"{directory}: {len(runs)} runs of {search!r}, {len(finals)} finals")
      curves[search] = runs
      summary += [{"search": search, "seed": seed, "final": final,
                   "wall_time": run[-1]["wall_time"], "env_steps": run[-1]["env_steps"],
                   "num_simulations": row["num_simulations"]}
                  for seed, (run, final) in enumerate(zip(runs, finals, strict=True))]
  # "compare: env snake, preset quick, metric mean_return_smoothed"
  env, preset, y = (part.split()[-1] for part in header.split(":", 1)[1].split(","))
  for row in summary:
    row["env_id"] = env
  metric = y.removesuffix("_smoothed")
  _write(out, env, preset, curves, summary, metric, y,
         extra_meta=[f"merged from: {'; '.join(sources)}"])
  return curves


def _cell(value):
  return f"{value:.6g}" if isinstance(value, float) else value


def _write(out, env, preset, curves, summary, metric, y, extra_meta=()):
  os.makedirs(out, exist_ok=True)
  meta = _common.metadata([f"compare: env {env}, preset {preset}, metric {y}", *extra_meta])
  keys = ["search", "seed", "iteration", "env_steps", "wall_time", metric, y, "loss",
          "policy_loss", "value_loss", "steps_per_s"]
  keys = list(dict.fromkeys(keys))
  with open(os.path.join(out, "compare.csv"), "w", newline="") as f:
    for line in meta:
      f.write(f"# {line}\n")
    writer = csv.writer(f)
    writer.writerow(keys)
    for search, runs in curves.items():
      for seed, rows in enumerate(runs):
        # Rows with a value of the metric, at most ~200 per run (every stride-th and the last).
        rows = [r for r in rows if math.isfinite(r.get(y, math.nan))]
        stride = max(1, len(rows) // 200)
        for i, row in enumerate(rows):
          if i % stride == stride - 1 or i == len(rows) - 1:
            writer.writerow([search, seed] + [_cell(row.get(k, math.nan)) for k in keys[2:]])
  per_search = []
  for search in curves:
    finals = np.asarray([s["final"] for s in summary if s["search"] == search])
    walls = np.asarray([s["wall_time"] for s in summary if s["search"] == search])
    first = next(s for s in summary if s["search"] == search)
    center, low, high = _common.iqm_and_ci(finals)
    per_search.append({
        "search": search, "seeds": len(finals), "num_simulations": first["num_simulations"],
        "num_steps": first.get("num_steps"),
        "env_steps": summary[0]["env_steps"], f"final_{metric}_mean": finals.mean(),
        f"final_{metric}_std": finals.std(), f"final_{metric}_min": finals.min(),
        f"final_{metric}_max": finals.max(), f"final_{metric}_iqm": float(center),
        f"final_{metric}_ci_low": float(low), f"final_{metric}_ci_high": float(high),
        "wall_time_mean": walls.mean(), "finals": " ".join(f"{v:.3f}" for v in finals)})
  with open(os.path.join(out, "compare_summary.csv"), "w", newline="") as f:
    for line in meta + ["final: mean of the metric over the last 10% of iterations of each run",
                        f"iqm: interquartile mean of the finals over seeds; ci: its "
                        f"{_common.CONFIDENCE:.0%} percentile-bootstrap interval over seeds "
                        f"({_common.BOOTSTRAP_RESAMPLES} resamples; nan with one seed)"]:
      f.write(f"# {line}\n")
    writer = csv.DictWriter(f, fieldnames=list(per_search[0]))
    writer.writeheader()
    writer.writerows(per_search)
  for row in per_search:
    print(f"{row['search']:>7s}: final {metric} {row[f'final_{metric}_mean']:.3f} "
          f"± {row[f'final_{metric}_std']:.3f} over {row['seeds']} seeds "
          f"(min {row[f'final_{metric}_min']:.3f}, max {row[f'final_{metric}_max']:.3f}; "
          f"IQM {row[f'final_{metric}_iqm']:.3f}, {_common.CONFIDENCE:.0%} CI "
          f"[{row[f'final_{metric}_ci_low']:.3f}, {row[f'final_{metric}_ci_high']:.3f}]), "
          f"{row['wall_time_mean']:.0f} s")
  name = {"snake": "Snake", "muzero": "MuZero (learned model) on Snake"}.get(
      env, summary[0]["env_id"])
  budgets = {(s["num_simulations"], s.get("num_steps")) for s in summary}
  per_move = (f"{summary[0]['num_simulations']} simulations per move" if len(budgets) == 1
              else "budgets per run in the legend")
  title = f"{name} ({preset}), {per_move}: IQM and {_common.CONFIDENCE:.0%} bootstrap CI over seeds"
  _common.plot_bands(curves, os.path.join(out, "compare.png"), y=y, band="iqm", title=title,
                     meta=meta[:2])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--env", choices=("snake", "pgx", "muzero"), default="snake")
  parser.add_argument("--searches", nargs="+", choices=_common.SEARCHES,
                      default=list(DEFAULT_SEARCHES))
  parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. SEEDS-1 per search")
  parser.add_argument("--preset", choices=("quick", "full"), default="quick")
  parser.add_argument("--num-simulations", type=int, default=None,
                      help="the same budget for every search (default: the preset's)")
  parser.add_argument("--num-particles", type=int, default=None)
  parser.add_argument("--total-env-steps", type=int, default=None,
                      help="per run (default: the preset's)")
  parser.add_argument("--smooth", type=int, default=10,
                      help="iterations averaged for the snake return curve")
  parser.add_argument("--out", default="examples/results/compare")
  parser.add_argument("--runs-dir", default=None,
                      help="keep each run's metrics.csv and checkpoint under this directory")
  parser.add_argument("--quiet", action="store_true", help="no progress bars")
  parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                      help="train nothing: merge these compare.py outputs into --out")
  parser.add_argument("--run", action="append", default=[], metavar="NAME=SEARCH:k=v,...",
                      help="a named run with its own config fields (replaces --searches)")
  parser.add_argument("--match-time", action="append", default=[], metavar="NAME=SEARCH:REF",
                      help="a run of SEARCH at the budget that trains as fast as run REF")
  args = parser.parse_args(argv)
  if args.merge:
    merge(args.merge, args.out)
    return
  run(args.env, searches=args.searches, seeds=args.seeds, preset=args.preset,
      num_simulations=args.num_simulations, num_particles=args.num_particles,
      total_env_steps=args.total_env_steps, smooth=args.smooth, out=args.out,
      runs_dir=args.runs_dir, quiet=args.quiet, runs=[parse_run(r) for r in args.run],
      match=[(n, s, ref) for n, s, ref in (_parse_match(m) for m in args.match_time)])


def _parse_match(text: str) -> tuple[str, str, str]:
  """`NAME=SEARCH:REF` -> `(name, search, reference run)`."""
  name, _, rest = text.partition("=")
  search, _, reference = rest.partition(":")
  if not (name and search and reference):
    raise ValueError(f"--match-time {text!r}: expected NAME=SEARCH:REF")
  return name, search, reference


if __name__ == "__main__":
  main()
