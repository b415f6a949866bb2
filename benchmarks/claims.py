"""The paper's search-level claims at benchmark scale: CSVs and figures in benchmarks/results/.

Runs the measurements of `smctx.experiments` (the same code as `tests/repro`)
with smctx and mctx side by side, prints each table as it completes, and
writes into `--out`:

  variance_vs_depth.csv/.png        claim 1 (smc, smcts, tsmcts)
  active_actions_vs_depth.csv/.png  claim 2 (path degeneracy)
  regret_vs_budget.csv/.png         claim 3 (+ regret_ratios.csv: TSMCTS / mctx, TSMCTS / SMC)
  ablation.csv/.png                 Sequential Halving ablation
  sequential_calls.csv              claim 4 (mctx calls / smctx calls)
  policy_improvement.csv            claim 3 (improvement on the prior)

Every CSV starts with `#` comment lines recording the device, versions (python,
jax, jaxlib, mctx, smctx), host platform, mode, date and git revision (read
with `pandas.read_csv(path, comment="#")`); every PNG carries the same lines in
its footer and in its PNG "Description" text chunk.

    python benchmarks/claims.py --quick          # a few minutes on 2 CPU cores
    python benchmarks/claims.py                  # full sizes
    python benchmarks/claims.py --only variance,regret --only calls
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import subprocess
import sys
import time

import jax
import jaxlib
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mctx  # noqa: E402
import numpy as np  # noqa: E402

import smctx  # noqa: E402
from smctx import experiments  # noqa: E402
from smctx import tabular  # noqa: E402

# Problems (the repro tests use the same ones, at the quick sizes).
VARIANCE_MDP = dict(seed=0, num_states=64, num_actions=4, discount=0.95, branching=3,
                    value_noise=1.0, prior_noise=0.5, prior_quality=1.0)
GRID = dict(size=8, value_noise=0.3)
GRID_ROOTS = [0, 1, 2, 8, 9, 10, 16, 17]
REGRET_MDP = dict(num_states=200, num_actions=8, discount=0.9, value_noise=0.5, prior_noise=1.0,
                  prior_quality=1.0)
IMPROVEMENT_MDP = dict(num_states=100, num_actions=6, discount=0.9, value_noise=0.0,
                       prior_noise=1.0, prior_quality=0.0)

VARIANCE_DEPTHS = (2, 4, 8, 16, 24)
VARIANCE_PARTICLES = 16
DEGENERACY_PARTICLES = 4
DEGENERACY_DEPTH = 24
IMPROVEMENT_BUDGET = 64
IMPROVEMENT_SEEDS = 2
CALLS_PARTICLES = 16
TIMING_REPEATS = 3  # regret_vs_budget `seconds`: median of 3 timed calls ...
TIMING_MDPS = 1  # ... on the first MDP (same shapes and compiled search for all MDPs)

SIZES = {
    "quick": dict(variance_roots=32, variance_seeds=32, degeneracy_seeds=16, regret_mdps=2,
                  regret_budgets=(16, 64, 256), regret_seeds=2, ablation_budgets=(64, 256),
                  improvement_mdps=3, calls_budgets=(64, 256, 1024)),
    "full": dict(variance_roots=64, variance_seeds=64, degeneracy_seeds=64, regret_mdps=6,
                 regret_budgets=(16, 32, 64, 128, 256, 512), regret_seeds=4,
                 ablation_budgets=(64, 128, 256, 512), improvement_mdps=6,
                 calls_budgets=(64, 256, 1024)),
}
ABLATION_COLORS = ("tab:green", "tab:blue", "tab:olive")
COLORS = {"gumbel_muzero": "tab:gray", "smc": "tab:red", "smcts": "tab:blue",
          "tsmcts": "tab:green"}


def _git_revision() -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "src"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return rev + ("+dirty src" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def metadata(mode: str) -> list[str]:
  """Three lines: device; versions; host, mode, date and git revision."""
  device = jax.devices()[0]
  return [
      f"device: {device.platform}"
      + (f" ({device.device_kind})" if device.device_kind != device.platform else ""),
      f"versions: python {platform.python_version()}, jax {jax.__version__}, "
      f"jaxlib {jaxlib.__version__}, mctx {getattr(mctx, '__version__', '?')}, "
      f"smctx {smctx.__version__}",
      f"host: {platform.platform()}, {os.cpu_count()} cpus; mode: {mode}; "
      f"date: {datetime.date.today().isoformat()}; git: {_git_revision()}",
  ]


def write_csv(path: str, rows: list[dict], meta: list[str]) -> None:
  with open(path, "w", newline="") as f:
    for line in meta:
      f.write(f"# {line}\n")
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def show(title: str, rows: list[dict]) -> None:
  print(f"\n== {title}")
  keys = list(rows[0])
  widths = [max(9, len(k)) for k in keys]
  print("  ".join(f"{k:>{w}s}" for k, w in zip(keys, widths, strict=True)))
  for row in rows:
    print("  ".join(f"{row[k]:{w}.4g}" if isinstance(row[k], float) else f"{str(row[k]):>{w}s}"
                    for k, w in zip(keys, widths, strict=True)))
  sys.stdout.flush()


def save(fig, path: str, meta: list[str]) -> None:
  """A small PNG whose footer and PNG text chunk record the device, versions, host and date."""
  fig.text(0.01, 0.03, meta[0] + " | " + meta[1], fontsize=6, color="0.4")
  fig.text(0.01, 0.005, meta[2], fontsize=6, color="0.4")
  fig.tight_layout(rect=(0, 0.05, 1, 1))
  software = f"benchmarks/claims.py, smctx {smctx.__version__}"
  fig.savefig(path, dpi=100, metadata={"Description": "\n".join(meta), "Software": software})
  plt.close(fig)


def _mdp(spec, seed=None):
  spec = dict(spec)
  seed = spec.pop("seed") if seed is None else seed
  return tabular.random_mdp(seed, spec.pop("num_states"), spec.pop("num_actions"), **spec)


def run_variance(size, out, meta):
  # mctx's Gumbel MuZero is not in this figure: experiments.variance_vs_depth passes
  # num_particles to every policy, and mctx.gumbel_muzero_policy has no such keyword
  # (TypeError). Its root-value error at equal budget is in regret_vs_budget.csv (value_error).
  rows = experiments.variance_vs_depth(
      _mdp(VARIANCE_MDP), np.arange(size["variance_roots"]), depths=VARIANCE_DEPTHS,
      num_particles=VARIANCE_PARTICLES, seeds=size["variance_seeds"],
      algorithms=("smc", "smcts", "tsmcts"))
  show(f"variance of the root value across seeds (N={VARIANCE_PARTICLES}, budget N*T)", rows)
  write_csv(f"{out}/variance_vs_depth.csv", rows, meta)
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for name in ("smc", "smcts", "tsmcts"):
    sub = [r for r in rows if r["algorithm"] == name]
    ax.plot([r["depth"] for r in sub], [r["variance"] for r in sub], "o-", label=name,
            color=COLORS[name])
  deepest = max(VARIANCE_DEPTHS)
  last = {r["algorithm"]: r["variance"] for r in rows if r["depth"] == deepest}
  ax.set(xlabel=f"depth T (budget {VARIANCE_PARTICLES}·T, N = {VARIANCE_PARTICLES} particles)",
         ylabel="variance of the root value across seeds", yscale="log",
         title=f"Root-value variance vs depth; at T={deepest}: SMC / TSMCTS = "
               f"{last['smc'] / last['tsmcts']:.1f}x, SMCTS / TSMCTS = "
               f"{last['smcts'] / last['tsmcts']:.1f}x\nrandom MDP: 64 states, 4 actions, "
               f"3 successors, value noise 1·std(V*); {size['variance_roots']} roots × "
               f"{size['variance_seeds']} seeds")
  ax.title.set_fontsize(9)
  ax.set_xticks(VARIANCE_DEPTHS)
  ax.legend(title="mctx Gumbel MuZero: n/a (no num_particles)", title_fontsize=7, fontsize=8)
  save(fig, f"{out}/variance_vs_depth.png", meta)
  return rows


def run_degeneracy(size, out, meta):
  rows = experiments.degeneracy(tabular.grid_world(**GRID), GRID_ROOTS,
                                num_particles=DEGENERACY_PARTICLES, depth=DEGENERACY_DEPTH,
                                seeds=size["degeneracy_seeds"])
  show(f"distinct root actions carried (grid world, N={DEGENERACY_PARTICLES}, "
       f"T={DEGENERACY_DEPTH})", [r for r in rows if r["step"] in (1, 2, 4, 8, 16, 24)])
  write_csv(f"{out}/active_actions_vs_depth.csv", rows, meta)
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for name in ("smc", "smcts", "tsmcts"):
    sub = [r for r in rows if r["algorithm"] == name]
    ax.plot([r["step"] for r in sub], [r["distinct_root_actions"] for r in sub], "o-", ms=3,
            color=COLORS[name],
            label=f"{name}: " + ("candidates alive (= root actions carried)" if name == "tsmcts"
                                 else "root actions carried by particles"))
    ax.axhline(sub[-1]["actions_with_estimates"], color=COLORS[name], ls="--", lw=1,
               label=f"{name}: root actions with a value estimate at the end "
                     f"({sub[-1]['actions_with_estimates']:.2f})")
  ax.set(xlabel="depth step", ylabel="root actions", ylim=(0, 6.5),
         title=f"Path degeneracy: Snake-like 8x8 grid, reward only far away, "
               f"{len(GRID_ROOTS)} roots × {size['degeneracy_seeds']} seeds\n"
               f"N = {DEGENERACY_PARTICLES} particles, T = {DEGENERACY_DEPTH} steps "
               f"(TSMCTS: same budget; its line = candidates alive)")
  ax.title.set_fontsize(9)
  ax.legend(fontsize=7, loc="upper right", ncol=1)
  save(fig, f"{out}/active_actions_vs_depth.png", meta)
  return rows


def regret_mdps(size):
  return [_mdp(REGRET_MDP, seed=s) for s in range(size["regret_mdps"])]


def regret_ratios(rows: list[dict]) -> list[dict]:
  """Per budget: TSMCTS over Gumbel MuZero (mctx) and over SMC, for each measured quantity."""
  by = {(r["algorithm"], r["budget"]): r for r in rows}
  ratios = []
  for budget in sorted({r["budget"] for r in rows}):
    t, g, s = (by[(a, budget)] for a in ("tsmcts", "gumbel_muzero", "smc"))
    ratio = dict(budget=budget)
    for key in ("action_regret", "target_regret", "value_error", "seconds"):
      ratio[f"{key}_tsmcts_over_gumbel_muzero"] = t[key] / g[key]
      ratio[f"{key}_tsmcts_over_smc"] = t[key] / s[key]
    ratios.append(ratio)
  return ratios


def run_regret(size, out, meta):
  mdps = regret_mdps(size)
  rows = experiments.regret(mdps, experiments.POLICIES, budgets=size["regret_budgets"],
                            seeds=size["regret_seeds"])
  # Timing on the first MDP only: every MDP has the same shapes and runs the same compiled
  # search, and mctx's cost grows faster than linearly with the budget on CPU, so timing all
  # of them would dominate the run. `seconds` is the median of TIMING_REPEATS timed calls.
  timed = experiments.regret(mdps[:TIMING_MDPS], experiments.POLICIES,
                             budgets=size["regret_budgets"], seeds=size["regret_seeds"],
                             timing_repeats=TIMING_REPEATS)
  for row, t in zip(rows, timed, strict=True):
    assert (row["algorithm"], row["budget"]) == (t["algorithm"], t["budget"])
    row["seconds"] = t["seconds"]
  show("simple regret at equal budget (seconds: median per search of all 200 roots, first MDP)",
       rows)
  write_csv(f"{out}/regret_vs_budget.csv", rows, meta)
  ratios = regret_ratios(rows)
  show("ratios (< 1: TSMCTS lower; gmz = mctx Gumbel MuZero)",
       [{k.replace("_tsmcts_over_gumbel_muzero", " ts/gmz").replace("_tsmcts_over_smc", " ts/smc"):
         v for k, v in r.items()} for r in ratios])
  write_csv(f"{out}/regret_ratios.csv", ratios, meta)
  fig, axes = plt.subplots(1, 2, figsize=(8, 4))
  for name in experiments.POLICIES:
    sub = [r for r in rows if r["algorithm"] == name]
    budgets = [r["budget"] for r in sub]
    label = "gumbel_muzero (mctx)" if name == "gumbel_muzero" else name
    axes[0].errorbar(budgets, [r["action_regret"] for r in sub],
                     yerr=[r["action_regret_sem"] for r in sub], marker="o", ms=4, capsize=3,
                     label=label, color=COLORS[name])
    axes[1].plot(budgets, [r["target_regret"] for r in sub], "o-", ms=4, label=label,
                 color=COLORS[name])
  axes[0].set(xscale="log", xlabel="num_simulations", ylabel="V*(s) − Q*(s, action)",
              title="regret of the chosen action (± s.e.m.)")
  axes[1].set(xscale="log", xlabel="num_simulations", ylabel="V*(s) − Σ_a π_target(a)·Q*(s, a)",
              title="regret of the policy target")
  for ax in axes:
    ax.title.set_fontsize(10)
    ax.set_xticks(size["regret_budgets"], [str(b) for b in size["regret_budgets"]])
    ax.minorticks_off()
  axes[0].legend(fontsize=8)
  fig.suptitle(f"Equal-budget regret: {size['regret_mdps']} random MDPs (200 states, 8 actions, "
               f"value noise 0.5·std(V*), weak prior) × 200 roots × {size['regret_seeds']} seeds",
               fontsize=9)
  save(fig, f"{out}/regret_vs_budget.png", meta)
  return rows


def run_ablation(size, out, meta):
  rows = experiments.regret(regret_mdps(size), experiments.ABLATIONS,
                            budgets=size["ablation_budgets"], seeds=size["regret_seeds"])
  show("ablation of Sequential Halving", rows)
  write_csv(f"{out}/ablation.csv", rows, meta)
  fig, ax = plt.subplots(figsize=(7, 4))
  names = list(experiments.ABLATIONS)
  budgets = size["ablation_budgets"]
  width = 0.8 / len(names)
  for i, name in enumerate(names):
    sub = {r["budget"]: r for r in rows if r["algorithm"] == name}
    ax.bar(np.arange(len(budgets)) + i * width, [sub[b]["action_regret"] for b in budgets],
           width, yerr=[sub[b]["action_regret_sem"] for b in budgets], capsize=3, label=name,
           color=ABLATION_COLORS[i])
  ax.set_xticks(np.arange(len(budgets)) + width * (len(names) - 1) / 2, [str(b) for b in budgets])
  ax.set(xlabel="num_simulations", ylabel="V*(s) − Q*(s, action)  (± s.e.m.)",
         title=f"Sequential Halving ablation: regret of the chosen action\n"
               f"same problem as regret_vs_budget: {size['regret_mdps']} random MDPs × 200 roots "
               f"× {size['regret_seeds']} seeds")
  ax.title.set_fontsize(9)
  ax.legend(fontsize=8)
  save(fig, f"{out}/ablation.png", meta)
  return rows


def run_calls(size, out, meta):
  rows = []
  for budget in size["calls_budgets"]:
    mctx_calls = experiments.sequential_calls(mctx.gumbel_muzero_policy, budget)  # no N
    rows.append(dict(algorithm="gumbel_muzero", num_particles="", **mctx_calls,
                     mctx_calls_over_this=1.0))
    for name in ("smc", "smcts", "tsmcts"):
      r = experiments.sequential_calls(experiments.POLICIES[name], budget,
                                        num_particles=CALLS_PARTICLES)
      rows.append(dict(algorithm=name, num_particles=CALLS_PARTICLES, **r,
                       mctx_calls_over_this=mctx_calls["sequential_calls"] / r["sequential_calls"]))
  show("sequential recurrent_fn calls per search, counted by a callback in the model; "
       "mctx_calls_over_this = mctx calls / this algorithm's calls", rows)
  write_csv(f"{out}/sequential_calls.csv", rows, meta)
  return rows


def run_policy_improvement(size, out, meta):
  mdps = [_mdp(IMPROVEMENT_MDP, seed=s) for s in range(size["improvement_mdps"])]
  rows = experiments.policy_improvement(mdps, num_simulations=IMPROVEMENT_BUDGET,
                                        seeds=IMPROVEMENT_SEEDS)
  show(f"policy improvement over the prior ({len(mdps)} MDPs x 100 states x "
       f"{IMPROVEMENT_SEEDS} seeds, values = V^pi_theta, budget {IMPROVEMENT_BUDGET})", rows)
  write_csv(f"{out}/policy_improvement.csv", rows, meta)
  return rows


RUNS = {"variance": run_variance, "degeneracy": run_degeneracy, "regret": run_regret,
        "ablation": run_ablation, "calls": run_calls, "policy_improvement": run_policy_improvement}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on CPU)")
  parser.add_argument("--only", action="append", default=None,
                      help=f"comma-separated subset of {list(RUNS)}")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  args = parser.parse_args(argv)
  mode = "quick" if args.quick else "full"
  only = list(dict.fromkeys(x.strip() for arg in (args.only or [",".join(RUNS)])
                            for x in arg.split(",") if x.strip()))
  unknown = set(only) - set(RUNS)
  if unknown:
    parser.error(f"--only: unknown {sorted(unknown)}; choose from {list(RUNS)}")
  os.makedirs(args.out, exist_ok=True)
  meta = metadata(mode)
  print("\n".join(meta))
  started = time.perf_counter()
  runtimes = []
  for name in only:
    t = time.perf_counter()
    RUNS[name](SIZES[mode], args.out, meta)
    runtimes.append(dict(section=name, seconds=round(time.perf_counter() - t, 1)))
    print(f"({name}: {runtimes[-1]['seconds']:.0f} s)", flush=True)
  total = time.perf_counter() - started
  runtimes.append(dict(section="total", seconds=round(total, 1)))
  write_csv(f"{args.out}/runtimes.csv", runtimes, meta)
  print(f"\ntotal {total:.0f} s; results in {args.out}")


if __name__ == "__main__":
  sys.exit(main())
