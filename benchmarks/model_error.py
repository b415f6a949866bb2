"""Model-error study: how each search degrades when the model it searches is wrong.

The problems are those of the quality benchmark (`benchmarks/quality.py`,
`smctx.problems`: random stochastic and deterministic MDPs, the chain, tic-tac-toe;
networks good, poor and wrong_prior), built and scored by its functions. The
searches plan with a corrupted model (`smctx.model_error`) and are scored
against the true `Q*`/`V*`:

  transition   with probability p the successor is a uniformly random other state
  reward       reward + (level + level·ε)·reward_scale: bias and noise of `level`
               standard deviations of the problem's rewards
  compounding  value noise of level·d standard deviations of V* and prior-logit noise
               of level·d at depth d below the root (exact root)

Searches: Gumbel MuZero (`mctx.gumbel_muzero_policy`), SMC, SMCTS and TSMCTS (smctx
defaults), at equal evaluations (`num_simulations` = 64 and 256), all with the same
`invalid_actions` and, for every level, the same random keys (the level-0 model is
the quality benchmark's model exactly). The model's errors are drawn afresh at every
`recurrent_fn` call (`--noise fresh`, default) or are a fixed function of state,
action and depth (`--noise fixed`: the model is wrong the same way every time).

Metrics per root are the quality benchmark's (`quality.root_metrics`): normalised
simple regret (0 optimal, 1 the worst legal move) and normalised value error
`|node_values[root] − V*| / mean spread`; and, for the smctx searches, how the
importance weights behave: `ess_fraction`, the mean over the search's steps of the
effective sample size over the number of particles, and `resample_rate`, resampling
events per step (TSMCTS counts events per group, so compare it with itself only). Roots are
averaged per instance (one MDP and its three networks; tic-tac-toe: one draw of the
network noise), then mean ± s.e. over instances per family. Family `pooled` is the mean of
the families' means (standard error `sqrt(Σ se_f²) / F`) without the chain (`NOT_POOLED`:
its true model misleads every search by construction, and errors that make its bail look
worse help), which is reported on its own; `all` pools every family. The slope of a metric
against the level is the least-squares slope over the levels, computed per instance (so it
is paired across levels) and averaged in the same way.

Outputs in `--out` (default `benchmarks/results/model_error`, tiny mode a temporary
directory): `model_error.csv` (one row per kind, level, search, budget and family),
`model_error_slopes.csv`, `model_error_instances.csv` (the units of the statistics: per
instance, networks pooled), `model_error.json` (everything with the metadata and the
configuration), `model_error.png` (pooled), `model_error_chain.png` and
`model_error_slopes.md`. CSVs start with `#` metadata lines (device, versions, host, mode,
date, git revision, command): `pandas.read_csv(path, comment="#")`.

    python benchmarks/model_error.py --mode tiny      # smoke test, seconds
    python benchmarks/model_error.py --mode small     # budget 64, 2 instances (tests/repro)
    python benchmarks/model_error.py                  # quick: <= 10 min on 2 CPU cores
    python benchmarks/model_error.py --noise fixed --out /tmp/model_error_fixed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mctx  # noqa: E402
import numpy as np  # noqa: E402

import smctx  # noqa: E402
from smctx import model_error  # noqa: E402
from smctx import problems  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality  # noqa: E402
from claims import metadata  # noqa: E402
from claims import write_csv  # noqa: E402

SEARCH_NAMES = ("gumbel_muzero", "smc", "smcts", "tsmcts")
# Error levels per kind (0 included): evenly spaced, so that the least-squares slope weighs
# them alike. Units: a probability; reward standard deviations; standard deviations (value)
# and logits (prior) per step of depth.
LEVELS = {
    "transition": (0.0, 0.1, 0.2, 0.3, 0.4),
    "reward": (0.0, 0.25, 0.5, 0.75, 1.0),
    "compounding": (0.0, 0.05, 0.1, 0.15, 0.2),
    "reward_bias": (0.0, 0.25, 0.5, 0.75, 1.0),  # not in the default run (--kinds)
    "reward_noise": (0.0, 0.25, 0.5, 0.75, 1.0),
}
LEVEL_LABELS = {
    "transition": "p(wrong successor)",
    "reward": "reward bias = noise (reward s.d.)",
    "compounding": "noise per step of depth",
    "reward_bias": "reward bias (reward s.d.)",
    "reward_noise": "reward noise (reward s.d.)",
}
MODES = {
    # tiny: the end points of every sweep, one budget, one network, one instance.
    "tiny": dict(instances=1, roots=2, networks=("good",), budgets=(16,), endpoints=True,
                 batch=64),
    # small: every level at budget 64 on 2 instances (the repro suite's record).
    "small": dict(instances=2, roots=4, networks=tuple(problems.NETWORKS), budgets=(64,),
                  endpoints=False, batch=64),
    # The quality benchmark's evaluation problems (12 instances x 4 roots x 3 networks per
    # family), batch and keys: the level-0 runs are its equal-evaluation runs at 64 and 256.
    "quick": dict(instances=12, roots=4, networks=tuple(problems.NETWORKS), budgets=(64, 256),
                  endpoints=False, batch=64),
}
METRICS = quality.METRICS + ("ess_fraction", "min_ess_fraction", "resample_rate")
# Left out of the `pooled` family: on the chain the true model misleads every search by
# construction (a blind value network and a bail paying 0.3 at once: regret about 0.85 at
# level 0), and errors that make the bail look worse help; it is reported on its own.
NOT_POOLED = ("chain",)
SLOPE_METRICS = ("norm_simple_regret", "norm_value_error", "ess_fraction")
PLOT_METRICS = (("norm_simple_regret", "simple regret / spread"),
                ("norm_value_error", "|root value − V*| / spread"),
                ("ess_fraction", "mean ESS / particles (smctx)"))
COLORS = quality.COLORS
BUDGET_STYLES = ("--", "-", ":", "-.")


# -- Searching the corrupted model -----------------------------------------------------------


class Evaluator:
  """Compiles each (search, budget) once and runs it at any corruption on every root."""

  def __init__(self, params, roots, invalid, searches, *, noise: str, batch: int, seed: int,
               verbose: bool = True):
    self.params = params
    self.roots = np.asarray(roots, np.int32)
    self.invalid = np.asarray(invalid, bool)
    self.searches = searches
    self.batch = min(batch, len(self.roots))
    self.seed = seed
    self.verbose = verbose
    self.root_fn, self.recurrent_fn = model_error.model(noise=noise, seed=seed)
    self.compile_seconds, self.run_seconds = {}, {}
    self._compiled = {}

  def compiled(self, name: str, budget: int):
    if (name, budget) not in self._compiled:
      policy, kwargs = self.searches[name]
      root_fn, recurrent_fn = self.root_fn, self.recurrent_fn

      def run(params, rng_key, roots, invalid):
        out = policy(params, rng_key, root_fn(params, roots), recurrent_fn, budget,
                     invalid_actions=invalid, **kwargs)
        value = out.search_tree.node_values[:, mctx.Tree.ROOT_INDEX]
        extra = out.search_tree.extra_data
        if isinstance(extra, smctx.SearchDiagnostics):
          fraction = extra.ess / extra.num_particles[:, None].astype(jnp.float32)
          weights = (jnp.mean(fraction, -1), jnp.min(fraction, -1),
                     extra.num_resamples.astype(jnp.float32) / extra.ess.shape[-1])
        else:  # mctx: no importance weights
          weights = (jnp.full(value.shape, jnp.nan),) * 3
        return (out.action, out.action_weights, value) + weights

      start = time.perf_counter()
      params = model_error.with_corruption(self.params, model_error.Corruption())
      args = (params, jax.random.PRNGKey(0), jnp.asarray(self.roots[:self.batch]),
              jnp.asarray(self.invalid[:self.batch]))
      self._compiled[(name, budget)] = jax.jit(run).lower(*args).compile()
      self.compile_seconds[f"{name}@{budget}"] = round(time.perf_counter() - start, 2)
    return self._compiled[(name, budget)]

  def evaluate(self, name: str, budget: int, corruption: model_error.Corruption):
    """Per-root outputs for every root: action, weights, value, ESS fractions, resampling."""
    fn = self.compiled(name, budget)
    params = model_error.with_corruption(self.params, corruption)
    base = jax.random.PRNGKey(self.seed)  # the same keys at every level
    n, b = len(self.roots), self.batch
    outs = []
    start = time.perf_counter()
    for c in range(math.ceil(n / b)):
      idx = np.resize(np.arange(c * b, min((c + 1) * b, n)), b)  # pad the last chunk
      out = fn(params, jax.random.fold_in(base, c), jnp.asarray(self.roots[idx]),
               jnp.asarray(self.invalid[idx]))
      outs.append([np.asarray(x)[: min(b, n - c * b)] for x in out])
    seconds = time.perf_counter() - start
    key = f"{name}@{budget}"
    self.run_seconds[key] = round(self.run_seconds.get(key, 0.0) + seconds, 2)
    return tuple(np.concatenate([o[i] for o in outs]) for i in range(len(outs[0])))


def per_root(table, result) -> dict:
  """The quality benchmark's metrics and the importance-weight statistics, per root."""
  action, weights, value, ess_mean, ess_min, resample = result
  out = quality.root_metrics(table, action, weights, value)
  out.update(ess_fraction=np.asarray(ess_mean, np.float64),
             min_ess_fraction=np.asarray(ess_min, np.float64),
             resample_rate=np.asarray(resample, np.float64))
  return out


# -- Aggregation -----------------------------------------------------------------------------


def instance_rows(table, metrics: dict, labels: dict) -> list[dict]:
  """Means over the roots of each (family, network, instance): the quality benchmark's rows,
  with the importance-weight statistics added."""
  rows = quality.instance_rows(table, metrics, labels)
  keys = list(zip(table["family"], table["network"], table["instance"], strict=True))
  for row, key in zip(rows, dict.fromkeys(keys), strict=True):
    mask = np.array([k == key for k in keys])
    for m in ("ess_fraction", "min_ess_fraction", "resample_rate"):
      row[m] = float(np.mean(metrics[m][mask]))
  return rows


def _mean_se(x) -> tuple[float, float]:
  x = np.asarray(x, np.float64)
  if len(x) == 0 or np.all(np.isnan(x)):
    return float("nan"), float("nan")
  se = float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
  return float(np.mean(x)), se


def _pool_families(per_family: dict) -> tuple[float, float]:
  """Mean of the families' means, standard error `sqrt(Σ se_f²) / F`."""
  means = [m for m, _ in per_family.values()]
  ses = [s for _, s in per_family.values()]
  return float(np.mean(means)), float(np.sqrt(np.sum(np.square(ses))) / len(ses))


def units(inst: list[dict], group_keys) -> dict:
  """`{group: {family: {instance: {metric: value}}}}`, the networks of an instance pooled."""
  out: dict = {}
  for r in inst:
    g = tuple(r[k] for k in group_keys)
    out.setdefault(g, {}).setdefault(r["family"], {}).setdefault(r["instance"], []).append(r)
  return {g: {f: {i: {m: float(np.mean([r[m] for r in rs])) for m in METRICS}
                  for i, rs in by_inst.items()}
              for f, by_inst in by_family.items()}
          for g, by_family in out.items()}


def unit_rows(inst: list[dict]) -> list[dict]:
  """The units of the statistics: per (kind, level, search, budget, family, instance), the
  networks pooled."""
  keys = ("kind", "level", "search", "budget")
  return [dict(zip(keys, g, strict=True), family=f, instance=i, **metrics)
          for g, by_family in units(inst, keys).items()
          for f, by_inst in by_family.items() for i, metrics in sorted(by_inst.items())]


def family_groups(families) -> dict[str, list[str]]:
  """Each family alone, `pooled` (the families not in `NOT_POOLED`; all of them if none is
  left) and `all`."""
  pooled = [f for f in families if f not in NOT_POOLED] or list(families)
  return {**{f: [f] for f in families}, "pooled": pooled, "all": list(families)}


def _stats(per_family: dict, group: list[str]) -> tuple[float, float]:
  """`(mean, se)` of one family, or the pooled statistics of several."""
  return per_family[group[0]] if len(group) == 1 else _pool_families(
      {f: per_family[f] for f in group})


def summarise(inst: list[dict]) -> list[dict]:
  """Mean ± s.e. over instances per (kind, level, search, budget, family); the families pooled
  (`family_groups`)."""
  keys = ("kind", "level", "search", "budget")
  rows = []
  for g, by_family in units(inst, keys).items():
    stats = {f: {m: _mean_se([u[m] for u in by_inst.values()]) for m in METRICS}
             for f, by_inst in by_family.items()}
    for name, group in family_groups(list(by_family)).items():
      row = dict(zip(keys, g, strict=True), family=name,
                 instances=sum(len(by_family[f]) for f in group))
      for m in METRICS:
        row[m], row[f"{m}_se"] = _stats({f: stats[f][m] for f in group}, group)
      rows.append(row)
  return rows


def slopes(inst: list[dict]) -> list[dict]:
  """Least-squares slope of each metric against the level, per instance, then averaged."""
  keys = ("kind", "search", "budget")
  rows = []
  grouped: dict = {}
  for r in inst:
    grouped.setdefault(tuple(r[k] for k in keys), []).append(r)
  for g, rs in grouped.items():
    levels = sorted({r["level"] for r in rs})
    x = np.asarray(levels) - np.mean(levels)
    by_level = units(rs, ("level",))
    families = list(by_level[(levels[0],)])
    per_family = {}
    for f in families:
      instances = sorted(by_level[(levels[0],)][f])
      per_family[f] = {m: [float(np.dot(x, [by_level[(lv,)][f][i][m] for lv in levels])
                                 / np.dot(x, x)) for i in instances] for m in SLOPE_METRICS}
    for name, group in family_groups(families).items():
      row = dict(zip(keys, g, strict=True), family=name, levels=len(levels),
                 max_level=levels[-1])
      for m in SLOPE_METRICS:
        row[f"{m}_slope"], row[f"{m}_slope_se"] = _stats(
            {f: _mean_se(per_family[f][m]) for f in group}, group)
      rows.append(row)
  return rows


# -- Outputs ---------------------------------------------------------------------------------


def _fmt(mean, se, digits=3) -> str:
  if not np.isfinite(mean):
    return "n/a"
  return f"{mean:+.{digits}f} ± {se:.{digits}f}" if np.isfinite(se) else f"{mean:+.{digits}f}"


def slopes_markdown(slope_rows, summary_rows, searches, budgets, levels: dict,
                    family: str = "pooled", label: str = "") -> str:
  """The slopes of one family (or pool) and the metrics at level 0 and the largest level."""
  kinds = list(levels)
  label = label or family
  by = {(r["kind"], r["search"], r["budget"]): r for r in slope_rows if r["family"] == family}
  at = {(r["kind"], r["level"], r["search"], r["budget"]): r for r in summary_rows
        if r["family"] == family}
  lines = [f"**Slopes, {label}**: least squares against the level, per instance, mean ± s.e. "
           "over instances; normalised simple regret and normalised value error per unit of "
           "level. Levels: "
           + "; ".join(f"{k} {', '.join(f'{v:g}' for v in levels[k])}" for k in kinds) + ".",
           "", "| search | B | " + " | ".join(f"{k}: regret | {k}: value error" for k in kinds)
           + " |", "|---|---|" + "---|---|" * len(kinds)]
  for budget in budgets:
    for name in searches:
      cells = []
      for k in kinds:
        r = by.get((k, name, budget))
        cells += ([_fmt(r["norm_simple_regret_slope"], r["norm_simple_regret_slope_se"]),
                   _fmt(r["norm_value_error_slope"], r["norm_value_error_slope_se"])]
                  if r else ["error", "error"])
      lines.append(f"| {name} | {budget} | " + " | ".join(cells) + " |")
  lines += ["", f"**At the ends of each sweep, {label}**: normalised simple regret, normalised "
            "value error and, for smctx, the effective sample size over the particles (mean "
            "over the search's steps, and its smallest step), level 0 → the largest level.", "",
            "| search | B | metric | " + " | ".join(kinds) + " |",
            "|---|---|---|" + "---|" * len(kinds)]
  for budget in budgets:
    for name in searches:
      for m, what in (("norm_simple_regret", "regret"), ("norm_value_error", "value error"),
                      ("ess_fraction", "ESS / N"), ("min_ess_fraction", "min ESS / N")):
        cells = []
        for k in kinds:
          lo, hi = at.get((k, levels[k][0], name, budget)), at.get(
              (k, levels[k][-1], name, budget))
          cells.append(f"{lo[m]:.3f} → {hi[m]:.3f}" if lo and hi and np.isfinite(lo[m])
                       else "n/a")
        if m.endswith("ess_fraction") and all(c == "n/a" for c in cells):
          continue
        lines.append(f"| {name} | {budget} | {what} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def save_png(fig, path: str, meta: list[str]) -> None:
  """A small PNG; the metadata lines in its footer and in its PNG "Description" chunk."""
  fig.text(0.01, 0.018, meta[0] + " | " + meta[1], fontsize=6, color="0.4")
  fig.text(0.01, 0.003, meta[2] + " | " + meta[3], fontsize=6, color="0.4")
  fig.tight_layout(rect=(0, 0.03, 1, 0.95))
  fig.savefig(path, dpi=72, metadata={"Description": "\n".join(meta),
                                      "Software": f"benchmarks/model_error.py, smctx "
                                                  f"{smctx.__version__}"})
  plt.close(fig)


def plot(rows, searches, budgets, kinds, path: str, meta: list[str], title: str,
         family: str = "pooled") -> None:
  """Each metric against the level: one panel per metric × kind, one line per search × budget."""
  rows = [r for r in rows if r["family"] == family]
  fig, axes = plt.subplots(len(PLOT_METRICS), len(kinds), squeeze=False,
                           figsize=(3.6 * len(kinds), 2.5 * len(PLOT_METRICS) + 0.9))
  for j, kind in enumerate(kinds):
    for i, (metric, ylabel) in enumerate(PLOT_METRICS):
      ax = axes[i][j]
      for name in searches:
        for b, budget in enumerate(budgets):
          sub = sorted((r for r in rows if (r["kind"], r["search"], r["budget"])
                        == (kind, name, budget)), key=lambda r: r["level"])
          if not sub or not np.isfinite(sub[0][metric]):
            continue
          ax.errorbar([r["level"] for r in sub], [r[metric] for r in sub],
                      yerr=[np.nan_to_num(r[f"{metric}_se"]) for r in sub], marker="o", ms=3,
                      capsize=2, lw=1.2, ls=BUDGET_STYLES[b % len(BUDGET_STYLES)],
                      color=COLORS.get(name, "k"), label=f"{name} @ {budget}")
      ax.set_ylim(bottom=0)
      ax.tick_params(labelsize=7)
      if i == 0:
        ax.set_title(f"{kind} error", fontsize=9)
      if j == 0:
        ax.set_ylabel(ylabel, fontsize=8)
      if i == len(PLOT_METRICS) - 1:
        ax.set_xlabel(LEVEL_LABELS[kind], fontsize=8)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.955), fontsize=7,
             ncol=min(len(labels), 8), frameon=False)
  fig.suptitle(title, fontsize=8, x=0.01, ha="left")
  save_png(fig, path, meta)


# -- Main ------------------------------------------------------------------------------------


def run(mode: str = "quick", *, out: str | None = None, searches=None, families=None,
        networks=None, kinds=None, noise: str = "fresh", seed_offset: int = 0,
        budgets=None, instances: int | None = None, roots: int | None = None,
        command: str | None = None, verbose: bool = True) -> dict:
  """Runs the study and writes its files into `out`; returns the JSON document."""
  size = dict(MODES[mode])
  for key, value in (("budgets", budgets), ("instances", instances), ("roots", roots)):
    if value is not None:
      size[key] = tuple(value) if key == "budgets" else value
  budgets = tuple(size["budgets"])
  if out is None:
    out = (tempfile.mkdtemp(prefix="smctx_model_error_tiny_") if mode == "tiny" else
           os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "model_error"))
  os.makedirs(out, exist_ok=True)
  families = list(families or problems.FAMILIES)
  networks = list(networks or size["networks"])
  kinds = list(kinds or model_error.KINDS)
  names = list(searches or SEARCH_NAMES)
  table_of_searches = quality.resolve_searches(names)
  table_of_searches = {n: table_of_searches[n] for n in names}  # no reference added
  levels = {k: (LEVELS[k][0], LEVELS[k][-1]) if size["endpoints"] else LEVELS[k] for k in kinds}
  command = command or "python benchmarks/model_error.py " + " ".join(
      shlex.quote(a) for a in sys.argv[1:])
  meta = metadata(f"{mode}, noise {noise}, seed offset {seed_offset}") + [f"command: {command}"]
  log = print if verbose else (lambda *a, **k: None)
  log("\n".join(meta))
  started = time.perf_counter()

  probs = quality.build_problems(families, networks, size["instances"], size["roots"],
                                 seed_offset)
  params, roots, _ = model_error.merge(probs)
  table = quality.root_table(probs)
  log(f"{len(probs)} problems, {len(roots)} roots, {params['rewards'].shape[0]} states; "
      f"built in {time.perf_counter() - started:.1f} s")
  evaluator = Evaluator(params, roots, ~table["legal"], table_of_searches, noise=noise,
                        batch=size["batch"], seed=seed_offset, verbose=verbose)

  inst = []
  for budget in budgets:
    for name in names:
      clean = None
      for kind in kinds:
        for level in levels[kind]:
          if level == 0.0 and clean is not None:
            result = clean  # one run of the true model serves every kind
          else:
            start = time.perf_counter()
            result = evaluator.evaluate(name, budget, model_error.corruption(kind, level))
            if level == 0.0:
              clean = result
            metrics = per_root(table, result)
            log(f"  {name:>14s} @ {budget:>4d} {kind:>11s} {level:<5g}: regret "
                f"{np.mean(metrics['norm_simple_regret']):.3f}, value error "
                f"{np.mean(metrics['norm_value_error']):.3f}, ESS/N "
                f"{np.mean(metrics['ess_fraction']):.3f} ({time.perf_counter() - start:.1f} s; "
                f"compile {evaluator.compile_seconds[f'{name}@{budget}']:.1f} s)")
          inst += instance_rows(table, per_root(table, result),
                                dict(kind=kind, level=float(level), search=name, budget=budget))

  rows = summarise(inst)
  slope_rows = slopes(inst)
  groups = family_groups(families)
  pooled_label = ("pooled over " + ", ".join(groups["pooled"])
                  + (f" ({', '.join(f for f in families if f not in groups['pooled'])} below)"
                     if len(groups["pooled"]) < len(families) else ""))
  markdown = slopes_markdown(slope_rows, rows, names, budgets, levels, "pooled", pooled_label)
  alone = [f for f in families if f not in groups["pooled"]]
  for family in alone:
    markdown += "\n" + slopes_markdown(slope_rows, rows, names, budgets, levels, family)
  total = time.perf_counter() - started

  rounded = quality._rounded
  write_csv(f"{out}/model_error.csv", rounded(rows), meta)
  write_csv(f"{out}/model_error_slopes.csv", rounded(slope_rows), meta)
  write_csv(f"{out}/model_error_instances.csv", rounded(unit_rows(inst)), meta)
  with open(f"{out}/model_error_slopes.md", "w") as f:
    f.write(f"<!-- {' | '.join(meta)} -->\n{markdown}")
  figures = {"pooled": "model_error.png", **{f: f"model_error_{f}.png" for f in alone}}
  for family, name in figures.items():
    group = groups.get(family, [family])
    left_out = [f for f in families if f not in group]
    what = family if len(group) == 1 else f"{len(group)} families pooled" + (
        f" (without {', '.join(left_out)})" if left_out else "")
    plot(rows, names, budgets, kinds, f"{out}/{name}", meta,
         f"Searching a corrupted model ({noise} errors), scored against the true values. "
         f"{what}; mean ± s.e. over {size['instances']} instances × {len(networks)} networks",
         family=family)
  doc = dict(metadata=meta, command=command, mode=mode, noise=noise, seed_offset=seed_offset,
             size=size, levels=levels, families=families, networks=networks,
             searches={n: dict(policy=f"{p.__module__}.{p.__name__}", kwargs=k)
                       for n, (p, k) in table_of_searches.items()},
             problems=dict(num_problems=len(probs), num_roots=int(len(roots)),
                           num_states=int(params["rewards"].shape[0])),
             compile_seconds=evaluator.compile_seconds, run_seconds=evaluator.run_seconds,
             rows=rows, slopes=slope_rows, table_markdown=markdown, runtime_s=round(total, 1))
  with open(f"{out}/model_error.json", "w") as f:
    json.dump(doc, f, indent=1, default=quality._json_default)
  log("\n" + markdown)
  log(f"total {total:.0f} s; results in {out}")
  return doc


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mode", choices=list(MODES), default="quick")
  parser.add_argument("--out", default=None,
                      help="default: benchmarks/results/model_error (tiny: a temp dir)")
  parser.add_argument("--searches", default=None, help=f"comma-separated, from {SEARCH_NAMES}")
  parser.add_argument("--families", default=None, help=f"subset of {list(problems.FAMILIES)}")
  parser.add_argument("--networks", default=None, help=f"subset of {list(problems.NETWORKS)}")
  parser.add_argument("--kinds", default=None,
                      help=f"from {model_error.KINDS + model_error.EXTRA_KINDS} (default: the "
                           "first three)")
  parser.add_argument("--noise", choices=model_error.NOISE, default="fresh")
  parser.add_argument("--seed-offset", type=int, default=0)
  parser.add_argument("--budgets", default=None, help="comma-separated, e.g. 64,256")
  parser.add_argument("--instances", type=int, default=None)
  parser.add_argument("--roots", type=int, default=None, help="roots per instance")
  parser.add_argument("--fast-compile", action="store_true",
                      help="XLA optimisations mostly off (default in tiny mode)")
  args = parser.parse_args(argv)
  if args.fast_compile or args.mode == "tiny":
    jax.config.update("jax_disable_most_optimizations", True)
  split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None
  return run(args.mode, out=args.out, searches=split(args.searches),
             families=split(args.families), networks=split(args.networks),
             kinds=split(args.kinds), noise=args.noise, seed_offset=args.seed_offset,
             budgets=[int(b) for b in split(args.budgets)] if args.budgets else None,
             instances=args.instances, roots=args.roots,
             command="python benchmarks/model_error.py " + " ".join(
                 shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
  main()
