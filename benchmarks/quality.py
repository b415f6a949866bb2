"""Search quality against exact values: regret of smctx and mctx searches, known answers.

Problems (`smctx.problems`; every family has 9 actions and is solved exactly
without any search):

  random_stochastic     random MDPs, 100 states, 3 random successors per action, discount 0.9
  random_deterministic  the same with one successor per action
  chain                 a 20-position corridor: one forward action per position, a "bail"
                        action that pays 0.3 and ends the episode, and actions that go back;
                        reward 1 only at the end; the value network knows V* only within 2
                        steps of the goal (0 elsewhere), and every root needs >= 10 correct
                        steps to get there
  tic_tac_toe           every reachable position, exact negamax values, two-player
                        (discount -1 per ply); roots are positions whose moves differ in value

each with three networks: `good`, `poor` and `wrong_prior` (the good network
with 0.8 of the prior on the worst legal action in every state). An instance
is one seed of a family: one MDP (for tic-tac-toe, one draw of the network
noise) with its roots, shared by the three networks.

Searches (`SEARCHES`; more with `--searches` from `VARIANTS` or `--variant`):
`gumbel_muzero` (`mctx.gumbel_muzero_policy`), `muzero` (`mctx.muzero_policy`
in evaluation mode: no Dirichlet noise, the most visited action), `smc`,
`smcts` and `tsmcts` (smctx, defaults) and `tsmcts_paper` (`variant="paper"`).
All get the same `invalid_actions`.

Metrics per root: simple regret `V*(s) − Q*(s, action)`, expected regret of
the policy target `V*(s) − Σ_a w(a)·Q*(s, a)`, value error
`|node_values[root] − V*(s)|`. Normalised (`norm_*`): the regrets are divided
by the root's spread `V*(s) − min_legal Q*(s, ·)` (the regret of its worst
action: 0 is optimal, 1 the worst move), the value error by the mean spread
over the instance's roots. Means and standard errors are over instances: the
roots of one instance are averaged first (they share an MDP and a network, so
they are correlated), then `mean ± std(ddof=1)/sqrt(instances)` across
instances. Network `all` pools the three networks per instance before that.
`diff_to_gumbel` is the paired difference to Gumbel MuZero on the same
instances (same comparison and target budget), with its own standard error.
Rows with `search=prior` (budget 0) are the network alone: argmax prior action,
prior as target, network value.

Three comparisons in one run:

  equal_evaluations  every search at num_simulations = 16, 64, 256, 1024
  equal_calls        equal sequential recurrent_fn calls S = 16, 64, 256 (the latency on an
                     accelerator): Gumbel MuZero at num_simulations = S against TSMCTS and
                     SMCTS (`--calls-searches`) at num_steps = S and widths N = 16, 64, 256
                     (num_simulations = N·S); the calls made are read from each search's
                     `extra_data` (smctx: `depth` summed; mctx: one per simulation)
  equal_time         every smctx search at the largest budget on a grid
                     (8, 12, 16, 24, 32, 48, ...) whose time per search of one batch
                     (`--batch` >= 64 roots drawn from all problems, jitted, compiled
                     beforehand, run once, then the minimum over repeats;
                     `--timing-statistic median` for the median) does not exceed
                     Gumbel MuZero's time at budget B, measured in the same run on
                     the same batch. The budget is predicted by log-log interpolation
                     of the search's times measured so far, then checked by timing
                     it and its grid neighbours (at most `max_probes` new budgets per
                     B) until the chosen budget fits and the next grid budget is
                     measured not to fit (`bracketed`). `quality_timing.csv` lists
                     every timing, `quality.json` every match. The model is a table
                     lookup, so the times are the searches' own overhead.

Outputs in `--out` (default `benchmarks/results`; tiny mode: a temporary
directory): `quality.csv` (one row per comparison, family, network, search and
budget), `quality_instances.csv` (per-instance means), `quality_timing.csv`,
`quality.json` (all of it with the metadata and the configuration),
`quality_equal_evaluations.png`, `quality_equal_time.png`, `quality_vs_calls.png` (regret
against sequential calls), `quality_vs_seconds.png` (regret against measured seconds per
search, every timed search and budget) and `quality_table.md`
(the printed Markdown tables: each search's normalised simple regret over
Gumbel MuZero's). CSVs start with `#` metadata lines (device, versions, host,
mode, date, git revision, command): `pandas.read_csv(path, comment="#")`.

    python benchmarks/quality.py --mode tiny              # smoke test, < 1 min
    python benchmarks/quality.py --mode quick             # 2 CPU cores
    python benchmarks/quality.py --mode full              # a GPU
    python benchmarks/quality.py --mode quick --searches gumbel_muzero,tsmcts,tsmcts_greedy
    python benchmarks/quality.py --mode quick --variant "tsmcts_n16=tsmcts:num_particles=16"
    python benchmarks/quality.py --mode quick --seed-offset 1000000   # tuning problems

Seeds: instance `i` of every family uses seed `seed_offset + i`. The default
offset 0 is the evaluation range; tune on another range (`TUNING_SEED_OFFSET`)
so that what is reported is measured on problems that were not used to tune.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import math
import os
import shlex
import sys
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import mctx  # noqa: E402
import numpy as np  # noqa: E402

import smctx  # noqa: E402
from smctx import problems  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from claims import metadata  # noqa: E402
from claims import write_csv  # noqa: E402

TUNING_SEED_OFFSET = 1_000_000
REFERENCE = "gumbel_muzero"

# name -> (policy, keyword arguments). The first is the reference of the ratios
# and of the equal-time comparison; smctx searches get equal-time budgets.
SEARCHES: dict[str, tuple[Callable, dict]] = {
    "gumbel_muzero": (mctx.gumbel_muzero_policy, {}),
    "muzero": (mctx.muzero_policy, dict(dirichlet_fraction=0.0, temperature=0.0)),
    "smc": (smctx.smc_policy, {}),
    "smcts": (smctx.smcts_policy, {}),
    "tsmcts": (smctx.tsmcts_policy, {}),
    "tsmcts_paper": (smctx.tsmcts_policy, dict(variant="paper")),
}
# Named variants (name -> (base search, extra keywords)), run only when asked for with
# --searches; --variant NAME=BASE:key=value,... adds more from the command line.
VARIANTS: dict[str, tuple[str, dict]] = {
    "tsmcts_greedy": ("tsmcts", dict(gumbel_scale=0.0)),
    # Gumbel MuZero with TSMCTS's default transform (value_scale 0.3): an equal-transform check.
    "gumbel_muzero_sharp": ("gumbel_muzero", dict(value_scale=0.3)),
    # TSMCTS deciding with mctx's transform (the default before sharp decisions).
    "tsmcts_mctx_decisions": ("tsmcts", dict(qtransform=mctx.qtransform_completed_by_mix_value,
                                             target_qtransform=smctx.SHARP_QTRANSFORM)),
    "smcts_greedy": ("smcts", dict(gumbel_scale=0.0)),
    "tsmcts_n16": ("tsmcts", dict(num_particles=16)),
    "smcts_n16": ("smcts", dict(num_particles=16)),
    "gumbel_muzero_greedy": ("gumbel_muzero", dict(gumbel_scale=0.0)),
}
MCTX_POLICIES = (mctx.gumbel_muzero_policy, mctx.muzero_policy)
# The searches compared at equal sequential calls (`--calls-searches`): each makes S calls
# (`num_steps=S`) at every width N of the mode, num_simulations = N·S.
CALLS_SEARCHES = ("tsmcts", "smcts")

MODES = {
    # instances per family, roots per instance (the chain has at most 9 roots)
    "tiny": dict(instances=2, roots=4, budgets=(16,), batch=64, timing_repeats=3,
                 max_time_budget=64, max_probes=1, calls=(4,), widths=(4,)),
    "quick": dict(instances=4, roots=4, budgets=(16, 64, 256, 1024), batch=64, timing_repeats=5,
                  max_time_budget=65536, max_probes=3, calls=(16, 64, 256), widths=(16, 64, 256)),
    "full": dict(instances=16, roots=16, budgets=(16, 64, 256, 1024), batch=256,
                 timing_repeats=10, max_time_budget=65536, max_probes=6, calls=(16, 64, 256),
                 widths=(16, 64, 256)),
}
MAX_TIMING_SECONDS = 20.0  # stop repeating a timing after 2 calls once this much was timed
METRICS = ("simple_regret", "expected_regret", "value_error", "norm_simple_regret",
           "norm_expected_regret", "norm_value_error", "illegal_action")
COLORS = {"gumbel_muzero": "tab:gray", "muzero": "black", "smc": "tab:red", "smcts": "tab:blue",
          "tsmcts": "tab:green"}
NETWORK_ORDER = ("good", "poor", "wrong_prior")


# -- Searches --------------------------------------------------------------------------------


def parse_variant(text: str) -> tuple[str, str, dict]:
  """`NAME=BASE:key=value,key=value` -> (name, base, keywords); values are Python literals."""
  name, _, rest = text.partition("=")
  base, _, options = rest.partition(":")
  kwargs = {}
  for item in filter(None, options.split(",")):
    key, _, value = item.partition("=")
    try:
      kwargs[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      kwargs[key.strip()] = value.strip()
  if not name or not base:
    raise ValueError(f"--variant {text!r}: expected NAME=BASE:key=value,...")
  return name.strip(), base.strip(), kwargs


def resolve_searches(names, variants=()) -> dict[str, tuple[Callable, dict]]:
  """The searches to run: names from `SEARCHES`/`VARIANTS`, plus `--variant` strings."""
  table = dict(SEARCHES)
  known = dict(VARIANTS)
  for text in variants:
    name, base, kwargs = parse_variant(text)
    known[name] = (base, kwargs)
  out = {}
  for name in list(names) + [parse_variant(v)[0] for v in variants]:
    if name in out:
      continue
    if name in table:
      out[name] = table[name]
    elif name in known:
      base, kwargs = known[name]
      policy, base_kwargs = table[base] if base in table else resolve_searches([base])[base]
      out[name] = (policy, _with_qtransform({**base_kwargs, **kwargs}))
    else:
      raise ValueError(f"unknown search {name!r}; known: {list(table) + list(known)}")
  if REFERENCE not in out:
    out = {REFERENCE: table[REFERENCE], **out}
  return out


QTRANSFORM_KEYS = ("value_scale", "maxvisit_init", "rescale_values", "use_mixed_value")


def _with_qtransform(kwargs: dict) -> dict:
  """`value_scale=...` and the other keywords of mctx's completed-Q transform: a `qtransform`."""
  options = {k: kwargs.pop(k) for k in QTRANSFORM_KEYS if k in kwargs}
  if options:
    kwargs["qtransform"] = functools.partial(mctx.qtransform_completed_by_mix_value, **options)
  return kwargs


def is_smctx(policy) -> bool:
  return policy not in MCTX_POLICIES


def budget_grid(budgets, max_budget: int) -> list[int]:
  """8, 12, 16, 24, 32, 48, ... up to `max_budget`, and the equal-evaluation budgets."""
  grid, b = set(budgets), 8
  while b <= max_budget:
    grid.add(b)
    if b * 3 // 2 <= max_budget:
      grid.add(b * 3 // 2)
    b *= 2
  return sorted(grid)


# -- Problems --------------------------------------------------------------------------------


def build_problems(families, networks, instances: int, roots: int, seed_offset: int):
  """Every (family, network, instance) problem, in that order."""
  out = []
  for family in families:
    for network in networks:
      for i in range(instances):
        out.append(problems.FAMILIES[family](seed_offset + i, network, roots))
  return out


def root_table(probs) -> dict:
  """Per-root NumPy arrays, in `problems.merge` order: exact values, network and labels."""
  cols = {k: [] for k in ("family", "network", "instance", "state", "q_star", "v_star", "legal",
                          "spread", "instance_spread", "prior_logits", "network_value")}
  for p in probs:
    r = p.roots
    spread = p.spread()
    n = len(r)
    cols["family"] += [p.family] * n
    cols["network"] += [p.network] * n
    cols["instance"] += [p.instance] * n
    cols["state"].append(r)
    cols["q_star"].append(p.q_star[r])
    cols["v_star"].append(p.v_star[r])
    cols["legal"].append(p.legal[r])
    cols["spread"].append(spread)
    cols["instance_spread"].append(np.full(n, spread.mean()))
    cols["prior_logits"].append(p.prior_logits[r])
    cols["network_value"].append(p.values[r])
  return {k: np.asarray(v) if k in ("family", "network", "instance") else np.concatenate(v)
          for k, v in cols.items()}


def root_metrics(table, action, weights, value) -> dict:
  """Per-root metrics (NumPy, float64) of one search's outputs against exact values."""
  q, v = table["q_star"], table["v_star"]
  weights = np.asarray(weights, np.float64)
  action = np.asarray(action)
  qa = np.take_along_axis(q, action[:, None], -1)[:, 0]
  simple = v - qa
  expected = v - np.sum(weights * q, -1)
  value_error = np.abs(np.asarray(value, np.float64) - v)
  return dict(simple_regret=simple, expected_regret=expected, value_error=value_error,
              norm_simple_regret=simple / table["spread"],
              norm_expected_regret=expected / table["spread"],
              norm_value_error=value_error / table["instance_spread"],
              illegal_action=(~np.take_along_axis(table["legal"], action[:, None], -1)[:, 0])
              .astype(np.float64))


def prior_outputs(table):
  logits = np.asarray(table["prior_logits"], np.float64)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.argmax(logits, -1), weights, table["network_value"]


# -- Running and timing searches -------------------------------------------------------------


class Runner:
  """Compiles, runs and times searches on the merged problem table (results cached)."""

  def __init__(self, params, roots, invalid, searches, *, batch: int, seed: int,
               timing_repeats: int, timing_statistic: str = "min", verbose: bool = True):
    self.params = params
    self.roots = np.asarray(roots, np.int32)
    self.invalid = np.asarray(invalid, bool)
    self.searches = searches
    self.batch = batch
    self.seed = seed
    self.timing_repeats = timing_repeats
    self.timing_statistic = timing_statistic
    self.verbose = verbose
    self.root_fn, self.recurrent_fn = problems.model()
    self._compiled, self._results, self.times, self.calls = {}, {}, {}, {}
    self.timing_rows, self.errors = [], []
    # The timing batch: `batch` roots drawn from all problems with a fixed seed.
    pick = np.random.default_rng(seed).permutation(len(self.roots))
    pick = np.resize(pick, batch)
    self.timing_args = (jnp.asarray(self.roots[pick]), jnp.asarray(self.invalid[pick]))

  def _log(self, msg):
    if self.verbose:
      print(msg, flush=True)

  def compiled(self, name: str, budget: int):
    key = (name, budget)
    if key not in self._compiled:
      policy, kwargs = self.searches[name]
      root_fn, recurrent_fn = self.root_fn, self.recurrent_fn

      def run(params, rng_key, roots, invalid):
        out = policy(params, rng_key, root_fn(params, roots), recurrent_fn, budget,
                     invalid_actions=invalid, **kwargs)
        # Sequential recurrent_fn calls made, as the search reports them (mctx: one per
        # simulation).
        extra = out.search_tree.extra_data
        calls = (jnp.sum(extra.depth, axis=-1) if isinstance(extra, smctx.SearchDiagnostics)
                 else jnp.full(out.action.shape, budget, jnp.int32))
        return (out.action, out.action_weights,
                out.search_tree.node_values[:, mctx.Tree.ROOT_INDEX], calls)

      start = time.perf_counter()
      args = (self.params, jax.random.PRNGKey(0)) + self.timing_args
      self._compiled[key] = (jax.jit(run).lower(*args).compile(), time.perf_counter() - start)
    return self._compiled[key][0]

  def _guard(self, name, budget, what, fn):
    try:
      return fn()
    except Exception as e:  # noqa: BLE001 - recorded in the results, the run goes on
      message = f"{type(e).__name__}: {e}".splitlines()[0][:300]
      self.errors.append(dict(search=name, budget=budget, stage=what, error=message))
      self._log(f"  ERROR {name} @ {budget} ({what}): {message}")
      return None

  def evaluate(self, name: str, budget: int):
    """`(action [R], weights [R, A], value [R])` for every root, or None on error."""
    key = (name, budget)
    if key not in self._results:
      self._results[key] = self._guard(name, budget, "evaluate",
                                       lambda: self._evaluate(name, budget))
    return self._results[key]

  def _evaluate(self, name, budget):
    fn = self.compiled(name, budget)
    base = jax.random.PRNGKey(self.seed)
    n, b = len(self.roots), self.batch
    outs = []
    start = time.perf_counter()
    for c in range(math.ceil(n / b)):
      idx = np.resize(np.arange(c * b, min((c + 1) * b, n)), b)  # pad the last chunk
      out = fn(self.params, jax.random.fold_in(base, c), jnp.asarray(self.roots[idx]),
               jnp.asarray(self.invalid[idx]))
      outs.append([np.asarray(x)[: min(b, n - c * b)] for x in out])
    self._log(f"  {name:>16s} @ {budget:>5d}: compile {self._compiled[(name, budget)][1]:5.1f} s,"
              f" {n} roots in {time.perf_counter() - start:6.1f} s")
    self.calls[(name, budget)] = float(np.mean(np.concatenate([o[3] for o in outs])))
    return tuple(np.concatenate([o[i] for o in outs]) for i in range(3))

  def time(self, name: str, budget: int, purpose: str = "evaluation"):
    """Seconds per search of the timing batch (compiled beforehand; the minimum or the
    median of the repeats, `timing_statistic`), or None on error."""
    key = (name, budget)
    if key not in self.times:
      self.times[key] = self._guard(name, budget, "time", lambda: self._time(name, budget,
                                                                             purpose))
    return self.times[key]

  def _time(self, name, budget, purpose):
    fn = self.compiled(name, budget)
    args = (self.params, jax.random.PRNGKey(self.seed + 1)) + self.timing_args
    if (name, budget) not in self._results:  # a warm-up call, unless it already ran
      jax.block_until_ready(fn(*args))
    seconds = []
    for _ in range(self.timing_repeats):  # slow searches: at least 2 repeats, about 20 s
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      seconds.append(time.perf_counter() - start)
      if len(seconds) >= 2 and sum(seconds) > MAX_TIMING_SECONDS:
        break
    median, fastest = float(np.median(seconds)), float(np.min(seconds))
    q25, q75 = np.percentile(seconds, [25, 75])
    value = fastest if self.timing_statistic == "min" else median
    self.timing_rows.append(dict(
        search=name, budget=budget, purpose=purpose, batch=self.batch, seconds=value,
        statistic=self.timing_statistic, min_s=fastest, median_s=median, iqr_s=float(q75 - q25),
        repeats=len(seconds), compile_s=round(self._compiled[(name, budget)][1], 2),
        load1=round(os.getloadavg()[0], 2)))
    self._log(f"  {name:>16s} @ {budget:>5d}: {1e3 * value:9.2f} ms per search of "
              f"{self.batch} roots ({self.timing_statistic} of {len(seconds)}; "
              f"median {1e3 * median:.2f}; {purpose})")
    return value


def predict_budget(measured: dict, target: float, grid) -> int:
  """The largest grid budget whose time, interpolated in log-log from `measured`, fits."""
  points = sorted((b, t) for b, t in measured.items() if t is not None and t > 0)
  if not points:
    return grid[0]
  logb = np.log([b for b, _ in points])
  logt = np.log([t for _, t in points])
  if len(points) == 1:
    slope_lo = slope_hi = 1.0
  else:
    slope_lo = float(np.clip((logt[1] - logt[0]) / (logb[1] - logb[0]), 0.5, 2.0))
    slope_hi = float(np.clip((logt[-1] - logt[-2]) / (logb[-1] - logb[-2]), 0.5, 2.0))

  def predicted(b):
    x = math.log(b)
    if x <= logb[0]:
      return logt[0] + slope_lo * (x - logb[0])
    if x >= logb[-1]:
      return logt[-1] + slope_hi * (x - logb[-1])
    return float(np.interp(x, logb, np.maximum.accumulate(logt)))

  fits = [b for b in grid if predicted(b) <= math.log(target)]
  return fits[-1] if fits else grid[0]


def match_budget(time_at: Callable[[int], float | None], measured: dict, target: float, grid,
                 max_probes: int) -> dict:
  """The largest grid budget whose measured time fits `target` (see the module docstring).

  `measured` (budget -> seconds) holds the times known so far and is updated.
  Returns budget, its seconds, `fits` (False: even the smallest measured budget
  was too slow, or a time failed), `bracketed` (the next grid budget was
  measured and did not fit, or the grid ends) and the probes made.
  """
  probes = 0
  probe = predict_budget(measured, target, grid)
  while probes < max_probes:
    if probe is None or probe in measured:
      ok = [b for b in grid if measured.get(b) is not None and measured[b] <= target]
      if ok:
        above = [b for b in grid if b > max(ok)]
        probe = above[0] if above and above[0] not in measured else None
      else:
        tried = [b for b in grid if b in measured]
        below = [b for b in grid if b < min(tried)] if tried else grid[:1]
        probe = below[-1] if below else None
      if probe is None:
        break
    measured[probe] = time_at(probe)
    probes += 1
    probe = None
  ok = [b for b in grid if measured.get(b) is not None and measured[b] <= target]
  if ok:
    best = max(ok)
    above = [b for b in grid if b > best]
    bracketed = not above or (measured.get(above[0]) is not None
                              and measured[above[0]] > target)
    return dict(budget=best, seconds=measured[best], fits=True, bracketed=bracketed,
                probes=probes)
  tried = [b for b in grid if measured.get(b) is not None]
  best = min(tried) if tried else grid[0]
  return dict(budget=best, seconds=measured.get(best), fits=False, bracketed=False,
              probes=probes)


# -- Aggregation -----------------------------------------------------------------------------


def _mean_se(x):
  x = np.asarray(x, np.float64)
  se = float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
  return float(np.mean(x)), se


def instance_rows(table, per_root: dict, labels: dict) -> list[dict]:
  """Means over the roots of each (family, network, instance) of one search's metrics."""
  rows = []
  keys = list(zip(table["family"], table["network"], table["instance"], strict=True))
  for key in dict.fromkeys(keys):
    mask = np.array([k == key for k in keys])
    row = dict(labels, family=key[0], network=key[1], instance=int(key[2]),
               roots=int(mask.sum()))
    for m in METRICS:
      row[m] = float(np.mean(per_root[m][mask]))
    rows.append(row)
  return rows


def summarise(inst: list[dict]) -> list[dict]:
  """Mean ± s.e. across instances per (comparison, family, network, search, target budget);
  network `all` pools the networks per instance first; paired differences to the reference."""
  group_keys = ("comparison", "family", "search", "target_budget")
  groups: dict = {}
  for r in inst:
    groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
  # Per instance: each network and the pool of all networks.
  per_instance: dict = {}
  for gkey, rows in groups.items():
    by_net: dict = {}
    for r in rows:
      by_net.setdefault(r["network"], {})[r["instance"]] = r
    pooled = {}
    instances = sorted(set.intersection(*(set(v) for v in by_net.values())))
    for i in instances:
      nets = [by_net[n][i] for n in by_net]
      pooled[i] = dict(nets[0], network="all", roots=sum(r["roots"] for r in nets),
                       **{m: float(np.mean([r[m] for r in nets])) for m in METRICS})
    by_net["all"] = pooled
    for net, table in by_net.items():
      per_instance[gkey + (net,)] = table
  out = []
  for key, table in per_instance.items():
    comparison, family, search, target, network = key
    rows = [table[i] for i in sorted(table)]
    first = rows[0]
    row = dict(comparison=comparison, family=family, network=network, search=search,
               budget=first["budget"], target_budget=target, instances=len(rows),
               roots=sum(r["roots"] for r in rows))
    for m in METRICS:
      row[m], row[f"{m}_se"] = _mean_se([r[m] for r in rows])
    ref_comparison = "equal_evaluations" if comparison == "reference" else comparison
    ref = per_instance.get((ref_comparison, family, REFERENCE, target, network))
    if comparison == "reference" or ref is None:
      ref = None
    common = sorted(set(table) & set(ref)) if ref else []
    if common:
      ref_mean = float(np.mean([ref[i]["norm_simple_regret"] for i in common]))
      diff = [table[i]["norm_simple_regret"] - ref[i]["norm_simple_regret"] for i in common]
      row["ratio_to_gumbel"] = (float(np.mean([table[i]["norm_simple_regret"] for i in common]))
                                / ref_mean if ref_mean > 0 else float("nan"))
      row["diff_to_gumbel"], row["diff_to_gumbel_se"] = _mean_se(diff)
    else:
      row["ratio_to_gumbel"] = row["diff_to_gumbel"] = row["diff_to_gumbel_se"] = float("nan")
    row["seconds"] = first.get("seconds", float("nan"))
    row["reference_seconds"] = first.get("reference_seconds", float("nan"))
    row["match"] = first.get("match", "")
    row["width"] = first.get("width", float("nan"))
    row["calls"] = first.get("calls", float("nan"))
    out.append(row)
  order = {"reference": 0, "equal_evaluations": 1, "equal_calls": 2, "equal_time": 3}
  nets = {n: i for i, n in enumerate(NETWORK_ORDER + ("all",))}
  out.sort(key=lambda r: (order[r["comparison"]], r["family"], nets.get(r["network"], 9),
                          r["target_budget"], r["search"]))
  return out


# -- Tables and figures ----------------------------------------------------------------------


def _fmt_ratio(row, ref_row) -> str:
  if row is None:
    return "error"
  s, g = row["norm_simple_regret"], ref_row["norm_simple_regret"] if ref_row else float("nan")
  if not np.isfinite(s):
    return "n/a"
  if g == 0:
    return "= (both 0)" if s == 0 else "inf (ref. 0)"
  return f"{s / g:.2f}"


def markdown_tables(rows: list[dict], searches, budgets, networks=("all",)) -> str:
  """Ratio of each search's normalised simple regret to Gumbel MuZero's, per family and budget."""
  lines = []
  by = {(r["comparison"], r["family"], r["network"], r["search"], r["target_budget"]): r
        for r in rows}
  families = list(dict.fromkeys(r["family"] for r in rows))
  for comparison, title in (("equal_evaluations", "equal evaluations (num_simulations = B)"),
                            ("equal_time", "equal wall-clock (time of Gumbel MuZero at B)")):
    if not any(r["comparison"] == comparison for r in rows):
      continue  # not run (--no-equal-time)
    for network in networks:
      pooled = "pooled over the networks" if network == "all" else f"network `{network}`"
      lines += [f"\n**{title}**: normalised simple regret of each search / Gumbel MuZero's, "
                f"{pooled}; first row per family: Gumbel MuZero's normalised regret ± s.e."
                + ("; in brackets: the budget chosen († the next grid budget was not "
                   "timed; ‡ even the smallest budget tried was slower; + the grid's "
                   "largest budget)"
                   if comparison == "equal_time" else ""),
                "", "| family | search | " + " | ".join(f"B={b}" for b in budgets) + " |",
                "|---|---|" + "---|" * len(budgets)]
      for family in families:
        cells = []
        for b in budgets:
          g = by.get((comparison, family, network, REFERENCE, b))
          cells.append(f"{g['norm_simple_regret']:.3f} ± {g['norm_simple_regret_se']:.3f}"
                       if g else "error")
        lines.append(f"| {family} | {REFERENCE} (regret) | " + " | ".join(cells) + " |")
        for name in searches:
          if name == REFERENCE or (comparison == "equal_time" and not is_smctx(searches[name][0])):
            continue
          cells = []
          for b in budgets:
            r = by.get((comparison, family, network, name, b))
            cell = _fmt_ratio(r, by.get((comparison, family, network, REFERENCE, b)))
            if comparison == "equal_time" and r is not None:
              mark = {"not bracketed": "†", "too slow": "‡", "largest grid budget": "+"}.get(
                  r.get("match", ""), "")
              cell += f" ({r['budget']}{mark})"
            cells.append(cell)
          lines.append(f"| {family} | {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _width(name: str) -> int:
  """The width N of an equal-calls search name (`"tsmcts N=64"` -> 64; 0 without one)."""
  return int(name.split("N=")[1].split()[0]) if "N=" in name else 0


def _color(name: str):
  """Gray for Gumbel MuZero, MuZero black, SMC red; TSMCTS greens and SMCTS blues, darker for
  a wider layout at equal calls, the default layout darkest."""
  base = name.split(" ")[0]
  if base in ("gumbel_muzero", "muzero", "smc", "tsmcts_paper"):
    return {"gumbel_muzero": "tab:gray", "muzero": "black", "smc": "tab:red",
            "tsmcts_paper": "tab:olive"}[base]
  shade = {16: 0.4, 64: 0.6, 256: 0.8}.get(_width(name), 0.95)
  return plt.get_cmap("Blues" if base == "smcts" else "Greens")(shade)


def calls_table(rows: list[dict], calls, networks=("all",)) -> str:
  """Equal sequential calls: each search's regret / Gumbel MuZero's at `S` simulations, and
  the calls it made (from its `extra_data`), per family, width and `S`."""
  by = {(r["family"], r["network"], r["search"], r["target_budget"]): r for r in rows
        if r["comparison"] == "equal_calls"}
  if not by:
    return ""
  families = list(dict.fromkeys(k[0] for k in by))
  names = sorted(dict.fromkeys(k[2] for k in by if k[2] != REFERENCE),
                 key=lambda n: (n.split(" ")[0], _width(n)))
  lines = []
  for network in networks:
    pooled = "pooled over the networks" if network == "all" else f"network `{network}`"
    lines += [f"\n**equal sequential calls** (S calls: Gumbel MuZero at num_simulations = S, "
              f"smctx at num_steps = S and width N, num_simulations = N·S): normalised simple "
              f"regret / Gumbel MuZero's, {pooled}; first row per family: Gumbel MuZero's "
              f"regret ± s.e.; in brackets: the calls made (mean of `extra_data.depth` summed)",
              "", "| family | search | " + " | ".join(f"S={s}" for s in calls) + " |",
              "|---|---|" + "---|" * len(calls)]
    for family in families:
      cells = []
      for s in calls:
        g = by.get((family, network, REFERENCE, s))
        cells.append(f"{g['norm_simple_regret']:.3f} ± {g['norm_simple_regret_se']:.3f}"
                     if g else "error")
      lines.append(f"| {family} | {REFERENCE} (regret) | " + " | ".join(cells) + " |")
      for name in names:
        cells = []
        for s in calls:
          r = by.get((family, network, name, s))
          cell = _fmt_ratio(r, by.get((family, network, REFERENCE, s)))
          if r is not None:
            cell += f" ({r['calls']:.0f})"
          cells.append(cell)
        lines.append(f"| {family} | {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot_calls(rows, calls, path: str, meta: list[str]) -> None:
  """Regret against sequential calls (pooled networks): Gumbel MuZero at S simulations and
  each smctx search at each width, one panel per family."""
  sub = [r for r in rows if r["comparison"] == "equal_calls" and r["network"] == "all"]
  families = list(dict.fromkeys(r["family"] for r in sub))
  names = sorted(dict.fromkeys(r["search"] for r in sub),
                 key=lambda n: (n != REFERENCE, n.split(" ")[0], _width(n)))
  fig, axes = plt.subplots(1, len(families), squeeze=False, figsize=(3.3 * len(families), 3.4))
  for ax, family in zip(axes[0], families, strict=True):
    for name in names:
      pts = sorted((r["calls"], r["norm_simple_regret"], r["norm_simple_regret_se"])
                   for r in sub if r["family"] == family and r["search"] == name)
      if not pts:
        continue
      x, y, e = map(np.asarray, zip(*pts, strict=True))
      ax.errorbar(x, y, yerr=np.nan_to_num(e), label=name, color=_color(name), marker="o",
                  ms=3, capsize=2, lw=1.4 if name == REFERENCE else 1.2,
                  ls="--" if name.startswith("smcts") else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(calls, [str(c) for c in calls])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_title(family, fontsize=9)
    ax.set_xlabel("sequential recurrent_fn calls", fontsize=8)
    ax.tick_params(labelsize=7)
  axes[0][0].set_ylabel("regret / spread", fontsize=8)
  handles, labels = axes[0][0].get_legend_handles_labels()
  top = 1.0 - 0.35 / fig.get_figheight()
  fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, top), fontsize=7,
             ncol=min(len(labels), 7), frameon=False)
  fig.suptitle("Simple regret at equal sequential calls (mean ± s.e., pooled networks)",
               fontsize=9, x=0.01, ha="left")
  save_png(fig, path, meta, top=top - 0.07)


SECONDS_SEARCHES = ("gumbel_muzero", "smc", "smcts", "tsmcts")


def plot_seconds(rows, path: str, meta: list[str], batch: int) -> None:
  """Regret against measured seconds per search of the timing batch: Gumbel MuZero, SMC, SMCTS
  and TSMCTS at every budget (equal evaluations), and TSMCTS at each width at equal calls as the
  calls vary; one panel per family."""
  sub = [r for r in rows if r["network"] == "all" and np.isfinite(r.get("seconds", np.nan))
         and ((r["comparison"] == "equal_evaluations" and r["search"] in SECONDS_SEARCHES)
              or (r["comparison"] == "equal_calls" and r["search"].startswith("tsmcts ")))]
  families = list(dict.fromkeys(r["family"] for r in sub))
  fig, axes = plt.subplots(1, len(families), squeeze=False, figsize=(3.3 * len(families), 3.8))
  for ax, family in zip(axes[0], families, strict=True):
    series: dict = {}
    for r in sub:
      if r["family"] != family:
        continue
      label = (r["search"] if r["comparison"] == "equal_evaluations"
               else f"{r['search']} (S varies)")
      series.setdefault(label, []).append((r["seconds"], r["norm_simple_regret"],
                                           r["norm_simple_regret_se"]))
    for label, pts in sorted(series.items(), key=lambda kv: (kv[0].split(" ")[0] != REFERENCE,
                                                             kv[0].split(" ")[0],
                                                             _width(kv[0]))):
      x, y, e = map(np.asarray, zip(*sorted(pts), strict=True))
      ax.errorbar(x, y, yerr=np.nan_to_num(e), marker="o", ms=3, capsize=2, lw=1.0,
                  label=label, color=_color(label), ls="--" if "S varies" in label else "-")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(bottom=0)
    ax.set_title(family, fontsize=9)
    ax.set_xlabel(f"seconds per search of {batch} roots", fontsize=8)
    ax.tick_params(labelsize=7)
  axes[0][0].set_ylabel("regret / spread", fontsize=8)
  handles, labels = axes[0][0].get_legend_handles_labels()
  top = 1.0 - 0.35 / fig.get_figheight()
  fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, top), fontsize=6,
             ncol=min(len(labels), 6), frameon=False)
  fig.suptitle("Simple regret against measured wall-clock (mean ± s.e., pooled networks; "
               "'S varies': equal-calls runs)", fontsize=9, x=0.01, ha="left")
  save_png(fig, path, meta, top=top - 0.1)


def save_png(fig, path: str, meta: list[str], top: float = 0.95) -> None:
  """A small PNG; the metadata lines in its footer and in its PNG "Description" chunk."""
  fig.text(0.01, 0.022, meta[0] + " | " + meta[1], fontsize=6, color="0.4")
  fig.text(0.01, 0.004, meta[2] + " | " + meta[3], fontsize=6, color="0.4")
  fig.tight_layout(rect=(0, 0.035, 1, top))
  fig.savefig(path, dpi=72, metadata={"Description": "\n".join(meta),
                                      "Software": f"benchmarks/quality.py, smctx "
                                                  f"{smctx.__version__}"})
  plt.close(fig)


def plot(rows, comparison: str, searches, budgets, path: str, meta: list[str], title: str,
         chosen: dict | None = None) -> None:
  """Normalised simple regret against the budget: one panel per network × family."""
  families = list(dict.fromkeys(r["family"] for r in rows))
  networks = [n for n in NETWORK_ORDER if any(r["network"] == n for r in rows)]
  fig, axes = plt.subplots(len(networks), len(families), squeeze=False,
                           figsize=(3.3 * len(families), 2.6 * len(networks) + 0.8))
  palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for j, family in enumerate(families):
    for i, network in enumerate(networks):
      ax = axes[i][j]
      for k, name in enumerate(searches):
        sub = [r for r in rows if (r["comparison"], r["family"], r["network"], r["search"])
               == (comparison, family, network, name)]
        if not sub:
          continue
        sub.sort(key=lambda r: r["target_budget"])
        label = name
        if chosen and name in chosen:
          label += " (" + "/".join(str(chosen[name].get(b, "?")) for b in budgets) + ")"
        ax.errorbar([r["target_budget"] for r in sub], [r["norm_simple_regret"] for r in sub],
                    yerr=[np.nan_to_num(r["norm_simple_regret_se"]) for r in sub], marker="o",
                    ms=3, capsize=2, lw=1.2, label=label,
                    color=COLORS.get(name, palette[k % len(palette)]))
      prior = [r for r in rows if (r["comparison"], r["family"], r["network"], r["search"])
               == ("reference", family, network, "prior")]
      if prior:
        ax.axhline(prior[0]["norm_simple_regret"], color="0.5", ls="--", lw=0.8,
                   label="prior argmax (no search)")
      ax.set_xscale("log")
      ax.set_xticks(budgets, [str(b) for b in budgets])
      ax.minorticks_off()
      ax.set_ylim(bottom=0)
      ax.tick_params(labelsize=7)
      if i == 0:
        ax.set_title(family, fontsize=9)
      if j == 0:
        ax.set_ylabel(f"{network}\nregret / spread", fontsize=8)
      if i == len(networks) - 1:
        ax.set_xlabel("num_simulations" if comparison == "equal_evaluations"
                      else "Gumbel MuZero's budget B (same time)", fontsize=8)
  handles, labels = axes[0][0].get_legend_handles_labels()
  top = 1.0 - 0.75 / fig.get_figheight()
  fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, top + 0.005), fontsize=7,
             ncol=min(len(labels), 7), frameon=False)
  fig.suptitle(title, fontsize=9, x=0.01, ha="left")
  save_png(fig, path, meta, top=top - 0.02)


# -- Main ------------------------------------------------------------------------------------


def run(mode: str = "quick", *, out: str | None = None, searches=None, variants=(),
        families=None, networks=None, seed_offset: int = 0, batch: int | None = None,
        budgets=None, instances: int | None = None, roots: int | None = None,
        equal_time: bool = True, timing_statistic: str = "min", command: str | None = None,
        verbose: bool = True, calls=None, widths=None, calls_searches=CALLS_SEARCHES) -> dict:
  """Runs the benchmark and writes its files into `out`; returns the JSON document."""
  size = dict(MODES[mode])
  for key, value in (("batch", batch), ("budgets", budgets), ("instances", instances),
                     ("roots", roots), ("calls", calls), ("widths", widths)):
    if value is not None:
      size[key] = tuple(value) if key in ("budgets", "calls", "widths") else value
  budgets = tuple(size["budgets"])
  if out is None:
    out = (tempfile.mkdtemp(prefix="smctx_quality_tiny_") if mode == "tiny"
           else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
  os.makedirs(out, exist_ok=True)
  families = list(families or problems.FAMILIES)
  networks = list(networks or problems.NETWORKS)
  searches = resolve_searches(searches or list(SEARCHES), variants)
  command = command or "python benchmarks/quality.py " + " ".join(
      shlex.quote(a) for a in sys.argv[1:])
  meta = metadata(f"{mode}, seed offset {seed_offset}") + [f"command: {command}"]
  log = print if verbose else (lambda *a, **k: None)
  log("\n".join(meta))
  started = time.perf_counter()

  probs = build_problems(families, networks, size["instances"], size["roots"], seed_offset)
  params, roots, _ = problems.merge(probs)
  table = root_table(probs)
  log(f"{len(probs)} problems ({len(families)} families x {len(networks)} networks x "
      f"{size['instances']} instances), {len(roots)} roots, {params['rewards'].shape[0]} states; "
      f"built in {time.perf_counter() - started:.1f} s")
  runner = Runner(params, roots, ~table["legal"], dict(searches), batch=size["batch"],
                  seed=seed_offset, timing_repeats=size["timing_repeats"],
                  timing_statistic=timing_statistic, verbose=verbose)

  inst = instance_rows(table, root_metrics(table, *prior_outputs(table)),
                       dict(comparison="reference", search="prior", budget=0, target_budget=0))
  # 1. Equal evaluations (every search timed as well: the reference times are the targets).
  log("\n== equal evaluations")
  for budget in budgets:
    for name in searches:
      result = runner.evaluate(name, budget)
      # Timed: the reference and the searches matched to it (mctx's MuZero is not timed:
      # at 1024 simulations one call takes tens of seconds on a CPU).
      timed = name == REFERENCE or (equal_time and is_smctx(searches[name][0]))
      seconds = runner.time(name, budget) if result is not None and timed else None
      if result is None:
        continue
      inst += instance_rows(table, root_metrics(table, *result), dict(
          comparison="equal_evaluations", search=name, budget=budget, target_budget=budget,
          seconds=seconds if seconds is not None else float("nan"),
          reference_seconds=runner.times.get((REFERENCE, budget)) or float("nan")))

  # 2. Equal sequential calls: Gumbel MuZero at S simulations (S calls), each smctx search of
  # `calls_searches` with num_steps=S at each width N (num_simulations = N·S), timed too.
  calls_names = [n for n in calls_searches if n in searches] if size["calls"] else []
  if calls_names:
    log("\n== equal sequential calls")
  for s in size["calls"] if calls_names else ():
    result = runner.evaluate(REFERENCE, s)
    seconds = runner.time(REFERENCE, s) if result is not None else None
    if result is not None:
      inst += instance_rows(table, root_metrics(table, *result), dict(
          comparison="equal_calls", search=REFERENCE, budget=s, target_budget=s, width=1,
          calls=runner.calls[(REFERENCE, s)],
          seconds=seconds if seconds is not None else float("nan")))
    for base in calls_names:
      policy, kwargs = searches[base]
      for n in size["widths"]:
        key = f"{base} N={n} S={s}"
        runner.searches[key] = (policy, dict(kwargs, num_steps=s))
        result = runner.evaluate(key, n * s)
        seconds = runner.time(key, n * s, purpose="equal_calls") if result is not None else None
        if result is None:
          continue
        inst += instance_rows(table, root_metrics(table, *result), dict(
            comparison="equal_calls", search=f"{base} N={n}", budget=n * s, target_budget=s,
            width=n, calls=runner.calls[(key, n * s)],
            seconds=seconds if seconds is not None else float("nan")))

  # 3. Equal wall-clock: each smctx search against the reference's times measured above.
  chosen: dict = {}
  matches = []
  if equal_time:
    log("\n== equal wall-clock")
    grid = budget_grid(budgets, size["max_time_budget"])
    targets = {budget: runner.times.get((REFERENCE, budget)) for budget in budgets}
    for name, (policy, _) in searches.items():
      if name == REFERENCE or not is_smctx(policy):
        continue
      for budget in budgets:
        target = targets[budget]
        if target is None or runner.evaluate(REFERENCE, budget) is None:
          continue
        measured = {b: t for (n, b), t in runner.times.items() if n == name}
        match = match_budget(lambda b, name=name: runner.time(name, b, purpose="probe"),
                             measured, target, grid, size["max_probes"])
        match.update(search=name, target_budget=budget, reference_seconds=target)
        matches.append(match)
        chosen.setdefault(name, {})[budget] = match["budget"]
        log(f"  {name} matches {REFERENCE} @ {budget} ({1e3 * target:.2f} ms) with budget "
            f"{match['budget']} ({1e3 * (match['seconds'] or float('nan')):.2f} ms; fits: "
            f"{match['fits']}, bracketed: {match['bracketed']}, probes: {match['probes']})")
        result = runner.evaluate(name, match["budget"])
        if result is None:
          continue
        inst += instance_rows(table, root_metrics(table, *result), dict(
            comparison="equal_time", search=name, budget=match["budget"], target_budget=budget,
            seconds=match["seconds"] if match["seconds"] is not None else float("nan"),
            reference_seconds=target,
            match=("too slow" if not match["fits"] else
                   "largest grid budget" if match["budget"] == grid[-1] else
                   "" if match["bracketed"] else "not bracketed")))
    for budget in budgets:  # the reference itself, at its own budgets
      result = runner.evaluate(REFERENCE, budget)
      if result is not None:
        inst += instance_rows(table, root_metrics(table, *result), dict(
            comparison="equal_time", search=REFERENCE, budget=budget, target_budget=budget,
            seconds=targets[budget] or float("nan"),
            reference_seconds=targets[budget] or float("nan")))

  rows = summarise(inst)
  tables = markdown_tables(rows, searches, budgets) + calls_table(rows, size["calls"])
  detailed = (markdown_tables(rows, searches, budgets, networks=tuple(networks))
              + calls_table(rows, size["calls"], networks=tuple(networks)))
  total = time.perf_counter() - started

  write_csv(f"{out}/quality.csv", _rounded(rows), meta)
  write_csv(f"{out}/quality_instances.csv", _rounded(inst_columns(inst)), meta)
  if runner.timing_rows:
    write_csv(f"{out}/quality_timing.csv", runner.timing_rows, meta)
  with open(f"{out}/quality_table.md", "w") as f:
    f.write(f"<!-- {' | '.join(meta)} -->\n{tables}\n### Per network\n{detailed}")
  plot(rows, "equal_evaluations", searches, budgets, f"{out}/quality_equal_evaluations.png",
       meta, f"Simple regret / spread at equal evaluations (mean ± s.e. over "
             f"{size['instances']} instances; dashed: prior argmax)")
  if calls_names:
    plot_calls(rows, size["calls"], f"{out}/quality_vs_calls.png", meta)
  plot_seconds(rows, f"{out}/quality_vs_seconds.png", meta, size["batch"])
  if equal_time:
    plot(rows, "equal_time", [n for n in searches if n == REFERENCE
                              or is_smctx(searches[n][0])], budgets,
         f"{out}/quality_equal_time.png", meta,
         f"Simple regret / spread at equal wall-clock (each smctx search at the largest budget "
         f"as fast as Gumbel MuZero at B, batch {size['batch']}; legend: budgets chosen)",
         chosen=chosen)
  doc = dict(
      metadata=meta, command=command, mode=mode, seed_offset=seed_offset, size=size,
      timing_statistic=timing_statistic,
      families=families, networks={n: vars(problems.NETWORKS[n]) for n in networks},
      searches={n: dict(policy=f"{p.__module__}.{p.__name__}", kwargs=k)
                for n, (p, k) in runner.searches.items()},
      sequential_calls={f"{n}@{b}": c for (n, b), c in runner.calls.items()},
      problems=dict(num_problems=len(probs), num_roots=int(len(roots)),
                    num_states=int(params["rewards"].shape[0])),
      equal_time_matches=matches, timings=runner.timing_rows, errors=runner.errors,
      compile_seconds={f"{n}@{b}": round(c, 2) for (n, b), (_, c) in runner._compiled.items()},
      rows=rows, table_markdown=tables, runtime_s=round(total, 1))
  with open(f"{out}/quality.json", "w") as f:
    json.dump(doc, f, indent=1, default=_json_default)
  log("\n" + tables)
  if runner.errors:
    log(f"{len(runner.errors)} errors (in quality.json): {runner.errors}")
  log(f"total {total:.0f} s; results in {out}")
  return doc


def inst_columns(inst):
  """Per-instance rows with the same columns (reference rows have no times)."""
  keys = list(dict.fromkeys(k for r in inst for k in r))
  return [{k: r.get(k, float("nan")) for k in keys} for r in inst]


def _rounded(rows, digits: int = 6):
  """Floats to `digits` significant digits (smaller CSVs; the JSON keeps full precision)."""
  return [{k: float(f"{v:.{digits}g}") if isinstance(v, float) else v for k, v in r.items()}
          for r in rows]


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mode", choices=list(MODES), default="quick")
  parser.add_argument("--out", default=None, help="default: benchmarks/results (tiny: a temp dir)")
  parser.add_argument("--searches", default=None,
                      help=f"comma-separated, from {list(SEARCHES) + list(VARIANTS)}")
  parser.add_argument("--variant", action="append", default=[],
                      help="NAME=BASE:key=value,... e.g. tsmcts_n8=tsmcts:num_particles=8")
  parser.add_argument("--families", default=None, help=f"subset of {list(problems.FAMILIES)}")
  parser.add_argument("--networks", default=None, help=f"subset of {list(problems.NETWORKS)}")
  parser.add_argument("--seed-offset", type=int, default=0,
                      help=f"instance seeds start here (tuning: e.g. {TUNING_SEED_OFFSET})")
  parser.add_argument("--batch", type=int, default=None, help="roots per search call (>= 64)")
  parser.add_argument("--budgets", default=None, help="comma-separated, e.g. 16,64,256,1024")
  parser.add_argument("--instances", type=int, default=None)
  parser.add_argument("--roots", type=int, default=None, help="roots per instance")
  parser.add_argument("--no-equal-time", action="store_true")
  parser.add_argument("--calls", default=None,
                      help="sequential calls S of the equal-calls comparison, e.g. 16,64,256 "
                           "(empty string: skip it)")
  parser.add_argument("--widths", default=None, help="widths N at equal calls, e.g. 16,64,256")
  parser.add_argument("--calls-searches", default=",".join(CALLS_SEARCHES),
                      help="smctx searches compared at equal sequential calls")
  parser.add_argument("--timing-statistic", choices=("min", "median"), default="min",
                      help="per-search time over the repeats (min: least disturbed by other "
                           "processes on a shared machine)")
  parser.add_argument("--compilation-cache", default=None,
                      help="directory for JAX's persistent compilation cache (repeated runs)")
  parser.add_argument("--fast-compile", action="store_true",
                      help="XLA optimisations mostly off (default in tiny mode; times are then "
                           "not representative)")
  args = parser.parse_args(argv)
  if args.fast_compile or args.mode == "tiny":
    jax.config.update("jax_disable_most_optimizations", True)
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None
  run(args.mode, out=args.out, searches=split(args.searches), variants=args.variant,
      families=split(args.families), networks=split(args.networks),
      seed_offset=args.seed_offset, batch=args.batch,
      budgets=[int(b) for b in split(args.budgets)] if args.budgets else None,
      instances=args.instances, roots=args.roots, equal_time=not args.no_equal_time,
      calls=(None if args.calls is None else [int(c) for c in split(args.calls) or []]),
      widths=[int(w) for w in split(args.widths)] if args.widths else None,
      calls_searches=split(args.calls_searches) or (),
      timing_statistic=args.timing_statistic, command="python benchmarks/quality.py " + " ".join(
          shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
  sys.exit(main())
