"""The paper's search-level claims at benchmark scale: CSVs and figures in benchmarks/results/.

Runs the measurements of `smctx.experiments` (the same code as `tests/repro`)
with smctx and mctx side by side, prints each table as it completes, and
writes `<name>.csv` (with `#` header lines recording the device and versions)
and `<name>.png` for: variance_vs_depth, active_actions_vs_depth,
regret_vs_budget, ablation; CSV only for sequential_calls and
policy_improvement.

    python benchmarks/claims.py --quick          # a few minutes on 2 CPU cores
    python benchmarks/claims.py                  # larger sizes
    python benchmarks/claims.py --only variance,regret
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
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

SIZES = {
    "quick": dict(variance_roots=32, variance_seeds=32, degeneracy_seeds=16, regret_mdps=2,
                  regret_budgets=(16, 64, 256), regret_seeds=2, ablation_budgets=(64, 256),
                  improvement_mdps=3, calls_budgets=(64, 256, 1024)),
    "full": dict(variance_roots=64, variance_seeds=64, degeneracy_seeds=64, regret_mdps=6,
                 regret_budgets=(16, 32, 64, 128, 256, 512), regret_seeds=4,
                 ablation_budgets=(64, 128, 256, 512), improvement_mdps=6,
                 calls_budgets=(64, 256, 1024)),
}
COLORS = {"gumbel_muzero": "tab:gray", "smc": "tab:red", "smcts": "tab:blue",
          "tsmcts": "tab:green"}


def metadata(mode: str) -> list[str]:
  device = jax.devices()[0]
  return [
      f"device: {device.platform}"
      + (f" ({device.device_kind})" if device.device_kind != device.platform else ""),
      f"versions: python {platform.python_version()}, jax {jax.__version__}, "
      f"jaxlib {jaxlib.__version__}, mctx {getattr(mctx, '__version__', '?')}, "
      f"smctx {smctx.__version__}",
      f"host: {platform.platform()}, {os.cpu_count()} cpus; mode: {mode}; "
      f"date: {datetime.date.today().isoformat()}",
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
  print("  ".join(f"{k:>14s}" for k in keys))
  for row in rows:
    print("  ".join(f"{row[k]:14.4g}" if isinstance(row[k], float) else f"{str(row[k]):>14s}"
                    for k in keys))


def save(fig, path: str, meta: list[str]) -> None:
  fig.text(0.01, 0.005, meta[0] + " | " + meta[1], fontsize=6, color="0.4")
  fig.tight_layout(rect=(0, 0.03, 1, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _mdp(spec, seed=None):
  spec = dict(spec)
  seed = spec.pop("seed") if seed is None else seed
  return tabular.random_mdp(seed, spec.pop("num_states"), spec.pop("num_actions"), **spec)


def run_variance(size, out, meta):
  rows = experiments.variance_vs_depth(
      _mdp(VARIANCE_MDP), np.arange(size["variance_roots"]), depths=(2, 4, 8, 16, 24),
      num_particles=16, seeds=size["variance_seeds"])
  show("variance of the root value across seeds (N=16, budget 16*T)", rows)
  write_csv(f"{out}/variance_vs_depth.csv", rows, meta)
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for name in ("smc", "smcts", "tsmcts"):
    sub = [r for r in rows if r["algorithm"] == name]
    ax.plot([r["depth"] for r in sub], [r["variance"] for r in sub], "o-", label=name,
            color=COLORS[name])
  last = {r["algorithm"]: r["variance"] for r in rows if r["depth"] == 24}
  ax.set(xlabel="depth T (budget 16·T, N = 16)", ylabel="variance of root value across seeds",
         yscale="log", title=f"Root-value variance vs depth: SMC / TSMCTS at T=24 = "
                             f"{last['smc'] / last['tsmcts']:.1f}x\nstochastic random MDP "
                             "(64 states, 4 actions, 3 successors, value noise 1·std)")
  ax.legend()
  save(fig, f"{out}/variance_vs_depth.png", meta)
  return rows


def run_degeneracy(size, out, meta):
  rows = experiments.degeneracy(tabular.grid_world(**GRID), GRID_ROOTS, num_particles=4,
                                depth=24, seeds=size["degeneracy_seeds"])
  show("distinct root actions carried (grid world, N=4, T=24)",
       [r for r in rows if r["step"] in (1, 2, 4, 8, 16, 24)])
  write_csv(f"{out}/active_actions_vs_depth.csv", rows, meta)
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for name in ("smc", "smcts", "tsmcts"):
    sub = [r for r in rows if r["algorithm"] == name]
    ax.plot([r["step"] for r in sub], [r["distinct_root_actions"] for r in sub], "o-", ms=3,
            color=COLORS[name], label=f"{name}: root actions carried by particles")
    ax.axhline(sub[-1]["actions_with_estimates"], color=COLORS[name], ls="--", lw=1,
               label=f"{name}: root actions with a value estimate at the end "
                     f"({sub[-1]['actions_with_estimates']:.2f})")
  ax.set(xlabel="depth step", ylabel="root actions", ylim=(0, 6.5),
         title="Path degeneracy: Snake-like 8x8 grid, reward only far away\n"
               "N = 4 particles, T = 24 steps (TSMCTS: same budget)")
  ax.legend(fontsize=7, loc="upper right", ncol=1)
  save(fig, f"{out}/active_actions_vs_depth.png", meta)
  return rows


def regret_mdps(size):
  return [_mdp(REGRET_MDP, seed=s) for s in range(size["regret_mdps"])]


def run_regret(size, out, meta):
  rows = experiments.regret(regret_mdps(size), experiments.POLICIES,
                            budgets=size["regret_budgets"], seeds=size["regret_seeds"],
                            timing_repeats=3)
  by = {(r["algorithm"], r["budget"]): r for r in rows}
  for r in rows:
    g, s = by[("gumbel_muzero", r["budget"])], by[("smc", r["budget"])]
    r["action_regret_vs_gumbel"] = r["action_regret"] / g["action_regret"]
    r["action_regret_vs_smc"] = r["action_regret"] / s["action_regret"]
    r["speedup_vs_gumbel"] = g["seconds"] / r["seconds"]
  show("simple regret at equal budget", rows)
  write_csv(f"{out}/regret_vs_budget.csv", rows, meta)
  fig, axes = plt.subplots(1, 2, figsize=(9, 4))
  for name in experiments.POLICIES:
    sub = [r for r in rows if r["algorithm"] == name]
    budgets = [r["budget"] for r in sub]
    axes[0].errorbar(budgets, [r["action_regret"] for r in sub],
                     yerr=[r["action_regret_sem"] for r in sub], marker="o", capsize=3,
                     label=name, color=COLORS[name])
    axes[1].plot(budgets, [r["target_regret"] for r in sub], "o-", label=name,
                 color=COLORS[name])
  axes[0].set(xscale="log", xlabel="num_simulations", ylabel="V* − Q*(s, action)",
              title="regret of the chosen action")
  axes[1].set(xscale="log", xlabel="num_simulations", ylabel="V* − Σ π_target·Q*",
              title="regret of the policy target")
  for ax in axes:
    ax.legend(fontsize=8)
    ax.set_xticks(size["regret_budgets"], [str(b) for b in size["regret_budgets"]])
    ax.minorticks_off()
  fig.suptitle(f"{size['regret_mdps']} random MDPs (200 states, 8 actions, value noise 0.5·std, "
               f"weak prior) × 200 roots × {size['regret_seeds']} seeds", fontsize=9)
  save(fig, f"{out}/regret_vs_budget.png", meta)
  return rows


def run_ablation(size, out, meta):
  rows = experiments.regret(regret_mdps(size), experiments.ABLATIONS,
                            budgets=size["ablation_budgets"], seeds=size["regret_seeds"])
  show("ablation of Sequential Halving", rows)
  write_csv(f"{out}/ablation.csv", rows, meta)
  fig, ax = plt.subplots(figsize=(6.5, 4))
  names = list(experiments.ABLATIONS)
  budgets = size["ablation_budgets"]
  width = 0.8 / len(names)
  for i, name in enumerate(names):
    sub = {r["budget"]: r for r in rows if r["algorithm"] == name}
    ax.bar(np.arange(len(budgets)) + i * width, [sub[b]["action_regret"] for b in budgets],
           width, yerr=[sub[b]["action_regret_sem"] for b in budgets], capsize=3, label=name)
  ax.set_xticks(np.arange(len(budgets)) + width * (len(names) - 1) / 2, [str(b) for b in budgets])
  ax.set(xlabel="num_simulations", ylabel="regret of the chosen action",
         title="Sequential Halving ablation (same MDPs as regret_vs_budget)")
  ax.legend(fontsize=8)
  save(fig, f"{out}/ablation.png", meta)
  return rows


def run_calls(size, out, meta):
  rows = []
  for budget in size["calls_budgets"]:
    mctx_calls = experiments.sequential_calls(mctx.gumbel_muzero_policy, budget)
    rows.append(dict(algorithm="gumbel_muzero", **mctx_calls, mctx_over_this=1.0))
    for name in ("smc", "smcts", "tsmcts"):
      r = experiments.sequential_calls(experiments.POLICIES[name], budget, num_particles=16)
      rows.append(dict(algorithm=name, **r, mctx_over_this=mctx_calls["sequential_calls"]
                       / r["sequential_calls"]))
  show("sequential recurrent_fn calls (N = 16), counted by a callback in the model", rows)
  write_csv(f"{out}/sequential_calls.csv", rows, meta)
  return rows


def run_policy_improvement(size, out, meta):
  mdps = [_mdp(IMPROVEMENT_MDP, seed=s) for s in range(size["improvement_mdps"])]
  rows = experiments.policy_improvement(mdps, num_simulations=64, seeds=2)
  show("policy improvement over the prior (values = V^{pi_theta}, budget 64)", rows)
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
  only = [x for arg in (args.only or [",".join(RUNS)]) for x in arg.split(",") if x]
  unknown = set(only) - set(RUNS)
  if unknown:
    parser.error(f"--only: unknown {sorted(unknown)}; choose from {list(RUNS)}")
  os.makedirs(args.out, exist_ok=True)
  meta = metadata(mode)
  print("\n".join(meta))
  started = time.perf_counter()
  for name in only:
    t = time.perf_counter()
    RUNS[name](SIZES[mode], args.out, meta)
    print(f"({name}: {time.perf_counter() - t:.0f} s)", flush=True)
  print(f"\ntotal {time.perf_counter() - started:.0f} s; results in {args.out}")


if __name__ == "__main__":
  sys.exit(main())
