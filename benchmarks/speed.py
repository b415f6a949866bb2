"""Speed, memory and compile time of smctx against mctx (GitHub issue "Performance").

Every configuration (model × batch `B` × `num_simulations` × algorithm ×
`num_particles` `N`) is compiled once and then timed. Columns of the CSV:

  time      `time_median_s`, `time_iqr_s` (q75 − q25), `repeats`: wall seconds per
            search call after compilation, over repeated calls, each waited for
            with `jax.block_until_ready` (one untimed warm-up call first);
            `cpu_s`: median process CPU seconds per call (all threads; on a shared
            CPU it is disturbed less by other processes than wall time).
  floor     `floor_median_s`, `floor_iqr_s`, `floor_cpu_s`: the model-call floor,
            timed the same way, in alternation with the search (each round calls
            the search, then the floor) so that both see the same load. It makes
            the same number of sequential `recurrent_fn` calls (`sequential_calls`)
            at the same width (`floor_width`: `B·N` for smctx, `B` for mctx) with
            no search around them: a `lax.fori_loop` that feeds the next
            embedding back.
            `search_over_floor` = time / floor and `cpu_search_over_floor` likewise.
            smctx's calls are read from its own output
            (`search_tree.extra_data.depth` summed) and `particles_used` from
            `extra_data.num_particles` (a small budget may shrink the width).
            mctx makes `num_simulations` calls.
  depth     `search_depth`: mctx, the mean over roots of the depth of the deepest
            tree node; smctx, the number of steps of its longest SMC run.
  memory    from XLA's memory analysis of the compiled search
            (`compiled.memory_analysis()`): `xla_temp_bytes`, `xla_argument_bytes`,
            `xla_output_bytes`, and `xla_total_bytes` = temp + argument + output
            − alias (alias is 0 here: nothing is donated). The figures use
            `xla_total_bytes`. Where the device reports it (GPU),
            `device_peak_bytes` is the allocator's peak after the configuration
            ran. That peak belongs to the whole process and cannot be reset:
            `device_peak_exact` is 1 when it rose during this configuration, which
            makes it this configuration's own peak, and 0 when it did not, which
            makes it only an upper bound.
  compile   `compile_s`: wall seconds of `jax.jit(f).lower(...).compile()`, with
            `lower_s` the part spent tracing and lowering. Every algorithm is
            compiled and run once on a tiny problem before anything is measured,
            so the first configuration does not pay the process's one-time costs.
            `hlo_instructions`: the compiled program's instructions, fused ones
            included (compile time grows with them and, more steeply, with kernels).
  other     `flops` (XLA cost analysis), `status` (`ok`, `skipped` or `error`) with
            a `note`, and `load1`, the 1-minute load average when the row was
            measured.

Algorithms: `mctx` (`mctx.gumbel_muzero_policy`, `max_num_considered_actions=16`)
and smctx's `smc`, `smcts` and `tsmcts` (`smctx.*_policy` with their defaults),
all at equal `num_simulations`. Both models are written here and have `A = 32`
actions:

  tabular   a random deterministic MDP with 4096 states. The embedding is the
            state index and `recurrent_fn` is table lookups, so the search's own
            overhead dominates.
  mlp       a world model: `[embedding (128), one_hot(action, 32)]` -> 2 hidden
            layers of 256 (relu) -> next embedding (128, tanh), reward, value and
            32 logits. Its parameters are random with a fixed seed, in pure
            jax.numpy, and the model dominates.

Grids (`--mode`):

  quick     budgets 64, 256, 1024 × batch 1, 64 × N = 16; a particle sweep
            N = 8, 32, 128 at budget 256 (batch 1, 64); the headline configuration;
            both models. About 8-10 minutes on 2 busy CPU cores.
  full      budgets 64, 256, 1024, 4096 × batch 1, 64, 1024 × N = 8, 16, 32, 128,
            and the headline configuration; both models. Meant for a GPU.
  headline  only the headline configuration: MLP model, num_simulations = 256,
            batch 256, N = 16, all four algorithms (the GPU target).
  latency   the headline model and batch at equal sequential calls: mctx at S = 16, 64,
            256 simulations against tsmcts making the same S calls with N = 16, 64, 256
            particles (num_simulations = N·S; `--latency-steps`, `--latency-widths`);
            writes speed_latency_<device>.csv and .json (speedup = mctx seconds / tsmcts
            seconds at the same calls). The GPU script's speed part.
  go        the issue's Go-sized configuration: the mlp model with 362 actions
            (`go`), batch 64, num_simulations = 800, N = 16, all four algorithms;
            writes speed_go_<device>.csv only.
  memory    compiles, runs nothing: XLA memory of each algorithm at widths
            N = 16 … 1024 with a fixed budget per particle (12·N simulations),
            batch 64, tabular model; writes speed_memory_sweep_<device>.csv/png.
            `bytes_per_particle` flat in N means O(B·N) memory.

A configuration whose time per call, extrapolated from the same series at the
previous budgets, would exceed `--max-call-seconds` is not run. It is written
with `status=skipped` and the prediction in `note`. mctx has no `N`: it runs
once per (model, batch, budget) and its `num_particles` is empty.

Outputs in `--out` (default `benchmarks/results`). `<device>` is a slug of
`jax.devices()[0].device_kind` (`cpu` on CPU):

  speed_<device>.csv                    one row per configuration, after `#` metadata
                                        lines (device, versions, host, mode, date, git
                                        revision, wall time)
  speed_time_vs_budget_<device>.png     log-log seconds per call against the budget, one
                                        panel per model × batch (lines: N = 16; dashed:
                                        floors)
  speed_memory_vs_budget_<device>.png   XLA total bytes against the budget, same panels
  speed_headline_<device>.json          the headline ratios (`headline_summary`): tsmcts /
                                        mctx speedup, search/floor per algorithm,
                                        compile-time ratios, memory growth

    python benchmarks/speed.py --mode quick                  # 2-core CPU, < 15 min
    python benchmarks/speed.py --mode full                   # GPU
    python benchmarks/speed.py --mode headline               # the GPU target only
    python benchmarks/speed.py --mode quick --models mlp --algorithms mctx,tsmcts
    python benchmarks/speed.py --mode full --max-call-seconds 30 --out /tmp/speed

A long full run can be split (for example, where one command may run for only
10 minutes) and merged afterwards. `--from-csv` measures nothing: it merges
the CSVs and writes the merged CSV, the figures and the JSON:

    python benchmarks/speed.py --mode full --batches 1,64 --out /tmp/a
    python benchmarks/speed.py --mode full --batches 1024 --models mlp --out /tmp/b
    python benchmarks/speed.py --from-csv /tmp/a/speed_*.csv /tmp/b/speed_*.csv

Read the CSV with `pandas.read_csv(path, comment="#")`.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import sys
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import mctx  # noqa: E402
import numpy as np  # noqa: E402

import smctx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from claims import metadata  # noqa: E402
from claims import write_csv  # noqa: E402

NUM_ACTIONS = 32
GO_ACTIONS = 362  # `--mode go`: the mlp model with a Go board's actions (19 x 19 + pass)
EMBEDDING_SIZE = 128
HIDDEN_SIZE = 256
TABULAR_STATES = 4096
DISCOUNT = 0.99
MODEL_SEED = 0
MCTX_CONSIDERED = 16  # mctx.gumbel_muzero_policy's max_num_considered_actions (its default)

ALGORITHMS: dict[str, Callable] = {
    "mctx": mctx.gumbel_muzero_policy,
    "smc": smctx.smc_policy,
    "smcts": smctx.smcts_policy,
    "tsmcts": smctx.tsmcts_policy,
}
COLORS = {"mctx": "tab:gray", "smc": "tab:red", "smcts": "tab:blue", "tsmcts": "tab:green"}
PARTICLE_MARKERS = {8: "v", 16: "o", 32: "s", 128: "D"}

HEADLINE = dict(model="mlp", batch=256, budget=256, num_particles=16)
REFERENCE_PARTICLES = 16  # the N of the figures and of the per-budget summaries

# Each mode: blocks of (batches, budgets, particles), run in order for every model.
GRIDS = {
    "quick": [
        dict(batches=(1, 64), budgets=(64, 256, 1024), particles=(16,)),
        dict(batches=(1, 64), budgets=(256,), particles=(8, 32, 128)),
    ],
    "full": [
        dict(batches=(1, 64, 1024), budgets=(64, 256, 1024, 4096), particles=(8, 16, 32, 128)),
    ],
    "headline": [],
    "memory": [],
    "latency": [],
    "kernels": [],
    "profile": [],
    # The Go-sized target: 362 actions, batch 64, 800 simulations (TSMCTS: 50 calls).
    "go": [dict(batches=(64,), budgets=(800,), particles=(16,))],
}
# `--mode kernels`: compiles only, counts the kernels of each search's per-step loop body.
KERNEL_CONFIGS = [(model, batch, 256, 16) for model in ("tabular", "mlp") for batch in (1, 64)]
# `--mode profile`: traces each search; at batch 1 the profiler's own cost per kernel would
# swamp kernels of a few microseconds, so only batch 64.
PROFILE_CONFIGS = [(model, 64, 256, 16) for model in ("tabular", "mlp")]
# `--mode latency`: the headline model and batch at equal sequential calls: mctx at S
# simulations against tsmcts making the same S calls at widths N (num_simulations = N·S).
LATENCY_STEPS = (16, 64, 256)
LATENCY_WIDTHS = (16, 64, 256)
# Timing: at least `min_repeats` calls after one warm-up call, and more until
# `target_seconds` of timed calls or `max_repeats`.
TIMING = {
    "quick": dict(min_repeats=3, max_repeats=15, target_seconds=0.5),
    "full": dict(min_repeats=5, max_repeats=50, target_seconds=1.0),
    "headline": dict(min_repeats=5, max_repeats=50, target_seconds=2.0),
    "latency": dict(min_repeats=3, max_repeats=20, target_seconds=0.5),
    "go": dict(min_repeats=5, max_repeats=50, target_seconds=1.0),
}
MAX_CALL_SECONDS = {"quick": 10.0, "full": 30.0, "headline": 120.0, "memory": 0.0,
                    "latency": 30.0, "kernels": 0.0, "profile": 0.0, "go": 120.0}


# -- Models ------------------------------------------------------------------------------------


def tabular_model(seed: int = MODEL_SEED, num_states: int = TABULAR_STATES):
  """A random deterministic MDP as `(params, root_fn, recurrent_fn)`; embedding = state index."""
  rng = np.random.default_rng(seed)
  shape = (num_states, NUM_ACTIONS)
  params = dict(
      next_state=jnp.asarray(rng.integers(0, num_states, shape), jnp.int32),
      reward=jnp.asarray(rng.normal(size=shape), jnp.float32),
      prior_logits=jnp.asarray(rng.normal(size=shape), jnp.float32),
      value=jnp.asarray(rng.normal(size=num_states), jnp.float32))

  def root_fn(params, batch_size: int) -> mctx.RootFnOutput:
    states = jnp.arange(batch_size, dtype=jnp.int32) % num_states
    return mctx.RootFnOutput(prior_logits=params["prior_logits"][states],
                             value=params["value"][states], embedding=states)

  def recurrent_fn(params, rng_key, action, state):
    del rng_key  # deterministic
    next_state = params["next_state"][state, action]
    output = mctx.RecurrentFnOutput(
        reward=params["reward"][state, action],
        discount=jnp.full(action.shape, DISCOUNT, jnp.float32),
        prior_logits=params["prior_logits"][next_state],
        value=params["value"][next_state])
    return output, next_state

  return params, root_fn, recurrent_fn


def mlp_model(seed: int = MODEL_SEED, num_actions: int = NUM_ACTIONS):
  """An MLP world model as `(params, root_fn, recurrent_fn)`; embedding `[128]` float32."""
  *layer_keys, root_key = jax.random.split(jax.random.PRNGKey(seed), 4)
  sizes = [(EMBEDDING_SIZE + num_actions, HIDDEN_SIZE), (HIDDEN_SIZE, HIDDEN_SIZE),
           (HIDDEN_SIZE, EMBEDDING_SIZE + 2 + num_actions)]
  params = [dict(w=jax.random.normal(k, s, jnp.float32) * np.sqrt(2.0 / s[0]),
                 b=jnp.zeros(s[1], jnp.float32)) for k, s in zip(layer_keys, sizes, strict=True)]

  def root_fn(params, batch_size: int) -> mctx.RootFnOutput:
    del params
    embedding = jax.random.normal(root_key, (batch_size, EMBEDDING_SIZE), jnp.float32)
    logits = jax.random.normal(jax.random.fold_in(root_key, 1), (batch_size, num_actions))
    value = jax.random.normal(jax.random.fold_in(root_key, 2), (batch_size,))
    return mctx.RootFnOutput(prior_logits=logits, value=value, embedding=embedding)

  def recurrent_fn(params, rng_key, action, embedding):
    del rng_key  # deterministic
    x = jnp.concatenate([embedding, jax.nn.one_hot(action, num_actions, dtype=jnp.float32)], -1)
    for layer in params[:-1]:
      x = jax.nn.relu(x @ layer["w"] + layer["b"])
    out = x @ params[-1]["w"] + params[-1]["b"]
    # tanh keeps the embedding bounded over thousands of sequential calls.
    next_embedding = jnp.tanh(out[:, :EMBEDDING_SIZE])
    output = mctx.RecurrentFnOutput(
        reward=out[:, EMBEDDING_SIZE], discount=jnp.full(action.shape, DISCOUNT, jnp.float32),
        value=out[:, EMBEDDING_SIZE + 1], prior_logits=out[:, EMBEDDING_SIZE + 2:])
    return output, next_embedding

  return params, root_fn, recurrent_fn


def go_model(seed: int = MODEL_SEED):
  """The mlp model with `GO_ACTIONS` actions (`--mode go`; not in the other modes' default)."""
  return mlp_model(seed, num_actions=GO_ACTIONS)


MODELS = {"tabular": tabular_model, "mlp": mlp_model, "go": go_model}
DEFAULT_MODELS = ("tabular", "mlp")


# -- Programs ----------------------------------------------------------------------------------


def search_program(algorithm: str, recurrent_fn, budget: int, num_particles: int | None):
  """`(params, rng_key, root) -> PolicyOutput` of one search of the whole batch."""
  policy = ALGORITHMS[algorithm]
  kwargs = ({"max_num_considered_actions": MCTX_CONSIDERED} if algorithm == "mctx"
            else {"num_particles": num_particles})

  def search(params, rng_key, root):
    return policy(params, rng_key, root, recurrent_fn, budget, **kwargs)

  return search


def floor_program(recurrent_fn, num_calls: int):
  """`(params, rng_key, embedding [W, ...]) -> (embedding, output)`: `num_calls` model calls.

  No search: the next embedding is fed back, the action cycles with the loop
  index, and the last output is carried so that nothing is dead code.
  """

  def floor(params, rng_key, embedding):
    width = jax.tree_util.tree_leaves(embedding)[0].shape[0]
    actions = jnp.arange(width, dtype=jnp.int32)
    first, _ = jax.eval_shape(recurrent_fn, params, rng_key, actions, embedding)
    output = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), first)

    def body(i, carry):
      embedding, _ = carry
      output, embedding = recurrent_fn(params, jax.random.fold_in(rng_key, i),
                                       (actions + i) % NUM_ACTIONS, embedding)
      return embedding, output

    return jax.lax.fori_loop(0, num_calls, body, (embedding, output))

  return floor


def compile_program(fn, *args):
  """`(compiled, seconds, lower_seconds)` of `jax.jit(fn).lower(*args).compile()`.

  `seconds` is the wall time of lowering and compiling together, `lower_seconds`
  the part spent tracing and lowering to StableHLO.
  """
  start = time.perf_counter()
  lowered = jax.jit(fn).lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  return compiled, time.perf_counter() - start, lowered_at - start


def timed_round(programs) -> list[tuple[float, float]]:
  """Calls every compiled program of `[(compiled, args), ...]` once, in turn: the wall and the
  process CPU seconds of each call."""
  times = []
  for compiled, args in programs:
    start, cpu_start = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(*args))
    times.append((time.perf_counter() - start, time.process_time() - cpu_start))
  return times


def time_calls(programs, min_repeats: int, max_repeats: int, target_seconds: float):
  """Per-call seconds of compiled programs, called in turn so that they share the load.

  `programs`: `[(compiled, args), ...]`, each already called once (warm-up).
  Each round calls every program once; rounds go on until `min_repeats` and
  `target_seconds` in all (or `max_repeats`). Returns one dict per program:
  `median`, `iqr` (wall seconds), `repeats`, and `cpu_median`, the median
  process CPU seconds per call (all threads; on a shared CPU it is disturbed
  less by other processes than wall time).
  """
  seconds = [[] for _ in programs]
  cpu_seconds = [[] for _ in programs]
  while len(seconds[0]) < max_repeats and (len(seconds[0]) < min_repeats
                                           or sum(map(sum, seconds)) < target_seconds):
    for (wall, cpu), walls, cpus in zip(timed_round(programs), seconds, cpu_seconds, strict=True):
      walls.append(wall)
      cpus.append(cpu)
  stats = []
  for wall, cpu in zip(seconds, cpu_seconds, strict=True):
    q25, q50, q75 = np.percentile(wall, [25, 50, 75])
    stats.append(dict(median=float(q50), iqr=float(q75 - q25), repeats=len(wall),
                      cpu_median=float(np.median(cpu))))
  return stats


# Instructions that launch no kernel of their own (views, tuples, constants, parameters).
_NO_KERNEL = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast",
              "after-all", "partition-id", "replica-id", "opt-barrier"}
# The kinds reported on their own; every other instruction counts under `other`.
KERNEL_KINDS = ("fusion", "sort", "scatter", "gather", "custom-call", "while", "conditional",
                "dot", "copy")
LOOP_COLUMNS = ("loop_kernels", "loop_kernels_lightest", "loop_kernels_heaviest") + tuple(
    f"loop_{k.replace('-', '_')}" for k in KERNEL_KINDS + ("other",)) + ("hlo_instructions",)
# The phases of a step, as `jax.named_scope`s in the library (`engine.smc_step`, `particles.mutate`,
# TSMCTS's `root_step`, `end_iteration` and `reroot`): a kernel belongs to the first of these
# scopes in its `op_name`, and to `loop` (the step's own selection, carries and key
# slicing) when it has none.
PHASES = ("model", "weighting", "backup", "resampling", "next_actions", "diagnostics",
          "root_step", "end_iteration", "rerooting", "loop")
PHASE_COLUMNS = tuple(f"phase_{p}" for p in PHASES)


def phase_of(op_name: str) -> str:
  """The phase of a kernel from its `op_name` metadata (`PHASES`)."""
  for part in op_name.split("/"):
    if part in PHASES:
      return part
  return "loop"


def _op_name(line: str) -> str:
  found = re.search(r'op_name="([^"]*)"', line)
  return found.group(1) if found else ""


# Loops, branches and calls: their kernels are counted in the computations they run.
_CONTAINERS = ("while", "conditional", "call")


def _instructions(hlo_text: str):
  """`(computation, name, opcode, line)` of every instruction of optimised HLO text."""
  current = None
  for line in hlo_text.splitlines():
    line = re.sub(r"/\*.*?\*/", "", line)  # `/*index=5*/` in long tuple shapes
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if header and not line.startswith(" "):
      current = header.group(1)
      continue
    found = re.match(r"^\s+(?:ROOT )?%?([\w.\-]+) = [^=]*? ([a-z][\w\-]*)\(", line)
    if current is not None and found:
      yield current, found.group(1), found.group(2), line


def _computations(hlo_text: str) -> dict[str, list[tuple[str, str]]]:
  """Computation name -> the `(opcode, line)` of its instructions (optimised HLO text)."""
  computations: dict[str, list[tuple[str, str]]] = {}
  for computation, _, opcode, line in _instructions(hlo_text):
    computations.setdefault(computation, []).append((opcode, line))
  return computations


def loop_kernels(hlo_text: str) -> dict:
  """Kernels of the compiled per-step loop body, counted by kind.

  The loop is the `while` whose body holds the most instructions (the depth loop of a
  search; mctx's simulation loop); its body is counted with the branches of its
  `conditional`s and the bodies of nested `while`s (every branch, so an upper bound on one
  step), each fusion as one kernel. Returns `loop_kernels` (all kinds), `loop_<kind>` for
  `KERNEL_KINDS` and `loop_other`, and `phase_<phase>`: the kernels that compute (not the
  loops, branches and carry copies) by phase of the step (`PHASES`). Branches are
  exclusive, so it also returns `loop_kernels_lightest` and `loop_kernels_heaviest`, bounds
  on the kernels of one step: the lightest (or heaviest) branch taken at every
  `conditional`. Which combinations of branches a step really takes is the search's own
  schedule (TSMCTS: `docs/performance.md`, "Kernels per step"). `hlo_instructions` counts
  the instructions of the whole program, fused ones included, which compile time grows
  with (with the kernels, more steeply).
  """
  computations = _computations(hlo_text)

  def called(line, key):
    return re.findall(rf"{key}=%?([\w.\-]+)", line) + sum(
        (re.findall(r"%?([\w.\-]+)", group) for group in
         re.findall(rf"{key}=\{{([^}}]*)\}}", line)), [])

  def callees(op, line):
    """The computations a loop (body and condition), branch or call runs."""
    keys = {"while": ("body", "condition"), "call": ("to_apply",),
            "conditional": ("branch_computations", "true_computation", "false_computation")}
    return sum((called(line, key) for key in keys.get(op, ())), [])

  bodies = [b for instructions in computations.values() for op, line in instructions
            if op == "while" for b in called(line, "body")]
  if not bodies:
    return {}
  main = max(bodies, key=lambda b: len(computations.get(b, ())))
  counts = dict.fromkeys(LOOP_COLUMNS + PHASE_COLUMNS, 0)
  seen = set()

  def visit(name):
    if name in seen or name not in computations:
      return
    seen.add(name)
    for op, line in computations[name]:
      if op in _NO_KERNEL:
        continue
      kind = op if op in KERNEL_KINDS else "other"
      counts[f"loop_{kind.replace('-', '_')}"] += 1
      counts["loop_kernels"] += 1
      if op not in _CONTAINERS + ("copy",):
        counts[f"phase_{phase_of(_op_name(line))}"] += 1
      for sub in callees(op, line):
        visit(sub)

  def one_step(name, pick):
    """Kernels of `name` with one branch, by `pick` (min or max), of every conditional."""
    total = 0
    for op, line in computations.get(name, ()):
      if op in _NO_KERNEL:
        continue
      inner = [one_step(sub, pick) for sub in callees(op, line)]
      total += 1 + (pick(inner) if op == "conditional" else sum(inner))
    return total

  visit(main)
  counts["loop_kernels_lightest"] = one_step(main, min)
  counts["loop_kernels_heaviest"] = one_step(main, max)
  counts["hlo_instructions"] = sum(len(instructions) for instructions in computations.values())
  return counts


def use_unrolled_threefry() -> bool:
  """Compiles threefry for the CPU as for a GPU: unrolled, fused into the kernels around it.

  JAX lowers threefry to a rolled loop on CPU only (to compile faster); each draw is then a
  `while` of five trips, about 23 kernels counted and 80 run. A GPU compiles JAX's default
  lowering (unless `jax_threefry_gpu_kernel_lowering` is set), which this registers for the
  CPU: the same random bits, and kernels counted and run on this CPU close to what a GPU
  launches. It reaches into JAX's private lowering registry, so a JAX version may break it.
  Returns whether it did (on a GPU or TPU there is nothing to change).
  """
  if jax.default_backend() != "cpu":
    return False
  try:
    from jax._src.interpreters import mlir  # pylint: disable=g-import-not-at-top
    from jax._src.random import threefry2x32  # pylint: disable=g-import-not-at-top
    rule = threefry2x32._threefry2x32_lowering_rule  # noqa: SLF001
  except (ImportError, AttributeError) as error:
    raise SystemExit(f"--gpu-threefry: this JAX ({jax.__version__}) has no threefry lowering "
                     f"where it is expected ({error})") from error
  mlir.register_lowering(threefry2x32.threefry2x32_p, rule, platform="cpu")
  return True


def compiled_searches(models, algorithms, configs):
  """Each algorithm compiled at each `(model, batch, budget, N)` configuration: yields the
  row's identifying columns, the compiled search, its arguments and its compile seconds."""
  built = {name: MODELS[name]() for name in models}
  for model, batch, budget, n in configs:
    if model not in built:
      continue
    params, root_fn, recurrent_fn = built[model]
    args = (params, jax.random.PRNGKey(0), root_fn(params, batch))
    for algorithm in algorithms:
      width = None if algorithm == "mctx" else n
      compiled, compile_s, _ = compile_program(
          search_program(algorithm, recurrent_fn, budget, width), *args)
      row = dict(model=model, algorithm=algorithm, batch=batch, budget=budget,
                 num_particles="" if width is None else width)
      yield row, compiled, args, compile_s


def _describe(row: dict) -> str:
  return (f"{row['model']:>7s} {row['algorithm']:>6s} B={row['batch']:<3d} "
          f"budget={row['budget']} N={row['num_particles']}:")


def kernel_rows(models, algorithms, configs=KERNEL_CONFIGS) -> list[dict]:
  """`--mode kernels`: each algorithm compiled at each configuration, its loop body's
  kernels counted (`loop_kernels`) and printed; nothing is run."""
  rows = []
  for row, compiled, _, compile_s in compiled_searches(models, algorithms, configs):
    row.update(compile_s=round(compile_s, 2), **loop_kernels(compiled.as_text()))
    rows.append(row)
    kinds = " ".join(f"{k[5:]}={v}" for k, v in row.items()
                     if k.startswith("loop_") and not k.startswith("loop_kernels") and v)
    print(f"{_describe(row)} {row.get('loop_kernels', 0):4d} kernels per step ({kinds}; one "
          f"step {row.get('loop_kernels_lightest', 0)}-{row.get('loop_kernels_heaviest', 0)}); "
          f"{row.get('hlo_instructions', 0)} instructions, compile {row['compile_s']:.2f} s",
          flush=True)
  return rows


def instruction_table(hlo_text: str) -> dict[str, tuple[str, str]]:
  """HLO instruction name -> `(opcode, op_name)`, over every computation of a module."""
  return {name: (opcode, _op_name(line)) for _, name, opcode, line in _instructions(hlo_text)}


# On a GPU, XLA runs sequences of kernels as command buffers (CUDA graphs) by default; their
# kernels appear in a trace without the HLO instruction that launched them (seen on an H100 with
# jax 0.11.2: no smctx kernel matched; openxla/xprof#3070), so `--mode profile` turns them off.
# The wall times it reports are then those of kernels launched one by one.
COMMAND_BUFFERS_OFF = "--xla_gpu_enable_command_buffer="


def phase_seconds(compiled, args, repeats: int) -> dict:
  """Seconds per call spent in each phase's kernels, and the kernels run per call, from a
  `jax.profiler` trace of `repeats` calls (`kernel_events_by_phase`). On a GPU or TPU only
  the device's events count (the host's launch events carry the same names), except for
  `conditionals_run`, read from every plane (a GPU runs conditionals on the host; not yet
  checked on one: a conditional traced on two of the host's lines would count twice)."""
  table = instruction_table(compiled.as_text())
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder):
      for _ in range(repeats):
        jax.block_until_ready(compiled(*args))
    [path] = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
    profile = jax.profiler.ProfileData.from_file(path)
  planes = list(profile.planes)
  device = [p for p in planes if p.name.startswith(("/device:GPU", "/device:TPU"))]
  events = lambda chosen: ((dict(event.stats).get("hlo_op", event.name), event.duration_ns)
                           for plane in chosen for line in plane.lines for event in line.events)
  result = kernel_events_by_phase(events(device or planes), table, repeats)
  # A GPU runs its conditionals on the host's side (`ConditionalThunk`): every plane counts.
  result["conditionals_run"] = kernel_events_by_phase(
      events(planes), table, repeats)["conditionals_run"]
  if device and result["kernels_run"] == 0:
    print("warning: no kernel of the trace was matched to an instruction; kernels run inside a "
          f"command buffer carry none ({COMMAND_BUFFERS_OFF} turns them off)", flush=True)
  return result


def kernel_events_by_phase(events, table: dict[str, tuple[str, str]], repeats: int) -> dict:
  """Per call: the seconds of each phase's kernels and the number of kernels run.

  events: `(HLO instruction name, duration in ns)` of every event of `repeats` calls;
  table: `instruction_table` of the program. An event whose name is no instruction of
  the program (the runtime's own) is ignored, and so are loops, branches and calls
  (their kernels are events themselves), so each phase gets the time of the kernels it
  launched, summed over threads or streams. Returns `time_<phase>` for `PHASES`,
  `time_kernels` (their total), `kernels_run` (kernels launched per call: what a step's
  dispatch costs, with every loop trip and taken branch, unlike the static counts of
  `loop_kernels`), `kernels_run_copies` (the copies among them) and `conditionals_run`
  (the `conditional`s entered per call: on a GPU each one copies its predicate to the host
  and waits for the device, XLA's `ConditionalThunk`, where a loop of known trip count
  does not wait).
  """
  totals = dict.fromkeys(PHASES, 0.0)
  launched = copies = conditionals = 0
  for name, duration_ns in events:
    opcode, op_name = table.get(name, ("", ""))
    conditionals += opcode == "conditional"
    if opcode and opcode not in _CONTAINERS:
      totals[phase_of(op_name)] += duration_ns * 1e-9 / repeats
      launched += 1
      copies += opcode == "copy"
  return dict({f"time_{p}": t for p, t in totals.items()}, time_kernels=sum(totals.values()),
              kernels_run=launched / repeats, kernels_run_copies=copies / repeats,
              conditionals_run=conditionals / repeats)


def profile_rows(models, algorithms, configs=PROFILE_CONFIGS, repeats: int = 20) -> list[dict]:
  """`--mode profile`: each search at each configuration, timed (median of calls) and
  traced; its kernels' time by phase of the step (`phase_seconds`) and kernel counts."""
  rows = []
  for row, compiled, args, _ in compiled_searches(models, algorithms, configs):
    jax.block_until_ready(compiled(*args))
    [timed] = time_calls([(compiled, args)], min_repeats=repeats, max_repeats=repeats,
                         target_seconds=0.0)
    row.update(time_median_s=timed["median"], **phase_seconds(compiled, args, repeats),
               **loop_kernels(compiled.as_text()))
    rows.append(row)
    phases = " ".join(f"{p}={row[f'time_{p}'] * 1e3:.2f}" for p in PHASES
                      if row[f"time_{p}"] > 0)
    print(f"{_describe(row)} {timed['median'] * 1e3:.2f} ms a search, kernels "
          f"{row['time_kernels'] * 1e3:.2f} ms ({phases}), {row['kernels_run']:.0f} kernels "
          f"run ({row['kernels_run_copies']:.0f} copies), {row['conditionals_run']:.0f} "
          "conditionals entered", flush=True)
  return rows


def memory_analysis(compiled) -> dict:
  stats = compiled.memory_analysis()
  if stats is None:
    return dict(xla_temp_bytes="", xla_argument_bytes="", xla_output_bytes="",
                xla_total_bytes="")
  temp, arg = stats.temp_size_in_bytes, stats.argument_size_in_bytes
  out, alias = stats.output_size_in_bytes, stats.alias_size_in_bytes
  return dict(xla_temp_bytes=temp, xla_argument_bytes=arg, xla_output_bytes=out,
              xla_total_bytes=temp + arg + out - alias)


# Memory sweep (`--mode memory`): width N at a fixed budget per particle, so
# that memory should grow linearly in N (the search keeps O(B·N·A) state).
SWEEP_WIDTHS = (16, 32, 64, 128, 256, 512, 1024)
SWEEP_EVALUATIONS_PER_PARTICLE = 12  # TSMCTS: K = 4 iterations of depth 3 at m1 = 16
SWEEP_BATCH = 64


def memory_sweep(algorithms: list[str], widths=SWEEP_WIDTHS, batch_size: int = SWEEP_BATCH,
                 evaluations_per_particle: int = SWEEP_EVALUATIONS_PER_PARTICLE) -> list[dict]:
  """XLA memory of one compiled search (tabular model) per algorithm and width; nothing runs.

  mctx gets the same `num_simulations` (`N·evaluations_per_particle`), so its
  column shows memory growing with the budget; smctx's should grow with `N`
  only: `bytes_per_particle` (= total / (B·N)) flat means `O(B·N)`.
  """
  params, root_fn, recurrent_fn = tabular_model()
  root = root_fn(params, batch_size)
  rows = []
  for algorithm in algorithms:
    for width in widths:
      budget = width * evaluations_per_particle
      program = search_program(algorithm, recurrent_fn, budget,
                               None if algorithm == "mctx" else width)
      compiled, seconds, _ = compile_program(program, params, jax.random.key(0), root)
      memory = memory_analysis(compiled)
      total = memory["xla_total_bytes"]
      rows.append(dict(algorithm=algorithm, batch=batch_size, num_particles=width,
                       num_simulations=budget, compile_s=round(seconds, 2), **memory,
                       bytes_per_particle=(round(total / (batch_size * width), 1)
                                           if total != "" else "")))
      print(f"memory sweep {algorithm:7s} N={width:5d} budget={budget:6d}: "
            f"{total / 2**20 if total != '' else float('nan'):9.1f} MiB")
  return rows


def plot_memory_sweep(rows: list[dict], path: str, meta: list[str]) -> None:
  """XLA memory against the width N (fixed budget per particle), one line per algorithm."""
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for algorithm in dict.fromkeys(r["algorithm"] for r in rows):
    mine = [r for r in rows if r["algorithm"] == algorithm and r["xla_total_bytes"] != ""]
    ax.plot([r["num_particles"] for r in mine], [r["xla_total_bytes"] / 2**20 for r in mine],
            marker="o", label=algorithm)
  widths = sorted({r["num_particles"] for r in rows})
  first = min((r["xla_total_bytes"] for r in rows if r["num_particles"] == widths[0]
               and r["xla_total_bytes"] != ""), default=None)
  if first:
    ax.plot(widths, [first / 2**20 * w / widths[0] for w in widths], "k:", label="∝ N")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel(f"particles N (budget = {SWEEP_EVALUATIONS_PER_PARTICLE}·N)")
  ax.set_ylabel("XLA memory of the search (MiB)")
  ax.set_title(f"Memory against width, batch {rows[0]['batch']}", fontsize=10)
  ax.legend(fontsize=8)
  save(fig, path, meta)


def mctx_tree_depth(tree: mctx.Tree) -> float:
  """Mean over roots of the depth of the deepest node of an mctx search tree."""
  parents = np.asarray(tree.parents)  # [B, num_nodes]; a node's parent has a smaller index
  depth = np.zeros(parents.shape, np.int64)
  rows = np.arange(parents.shape[0])
  for node in range(1, parents.shape[1]):
    parent = parents[:, node]
    depth[:, node] = np.where(parent >= 0, depth[rows, np.maximum(parent, 0)] + 1, 0)
  return float(np.mean(depth.max(axis=1)))


def device_peak_bytes():
  stats = jax.devices()[0].memory_stats()
  return None if not stats or "peak_bytes_in_use" not in stats else int(stats["peak_bytes_in_use"])


def flops(compiled) -> float | str:
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))
  except Exception:  # cost analysis is best effort on some backends
    return ""


# -- Measurement -------------------------------------------------------------------------------


class Runner:
  """Measures configurations of one mode; compiled floors are cached and shared."""

  def __init__(self, mode: str, max_call_seconds: float, verbose: bool = True):
    self.mode = mode
    self.timing = TIMING[mode]
    self.max_call_seconds = max_call_seconds
    self.models = {name: make() for name, make in MODELS.items()}
    self.floors: dict[tuple, tuple] = {}  # (model, width, calls) -> (compiled, args, seconds)
    self.measured: dict[tuple, list[tuple[int, float]]] = {}  # series -> [(budget, seconds)]
    self.verbose = verbose

  def warm_up(self, algorithms) -> None:
    """Compiles and runs every algorithm once on a tiny problem, untimed.

    The first compilation of a process pays one-time costs (backend start,
    tracing caches); without this the first configuration's compile time
    would carry them.
    """
    params, root_fn, recurrent_fn = self.models["tabular"]
    root = root_fn(params, 1)
    for algorithm in algorithms:
      fn = search_program(algorithm, recurrent_fn, 8, 4)
      compiled, _, _ = compile_program(fn, params, jax.random.PRNGKey(0), root)
      jax.block_until_ready(compiled(params, jax.random.PRNGKey(0), root))
    compiled, _, _ = compile_program(floor_program(recurrent_fn, 2), params,
                                     jax.random.PRNGKey(0), root.embedding)
    jax.block_until_ready(compiled(params, jax.random.PRNGKey(0), root.embedding))

  def predicted_seconds(self, series, budget: int) -> float | None:
    """Time per call extrapolated from the same series at smaller budgets (None: unknown)."""
    points = sorted(p for p in self.measured.get(series, []) if p[0] < budget)
    if not points:
      return None
    (b1, t1) = points[-1]
    exponent = 1.0
    if len(points) >= 2:  # mctx's CPU time grows faster than linearly with the budget
      (b0, t0) = points[-2]
      exponent = float(np.clip(np.log(t1 / t0) / np.log(b1 / b0), 1.0, 2.0))
    return t1 * (budget / b1) ** exponent

  def floor(self, model: str, num_calls: int, root_embedding, repeat: int):
    """`(compiled, args, compile_seconds)` of the floor at width `B·repeat`, cached and warm."""
    width = root_embedding.shape[0] * repeat
    key = (model, width, num_calls)
    if key not in self.floors:
      params, _, recurrent_fn = self.models[model]
      args = (params, jax.random.PRNGKey(1), jnp.repeat(root_embedding, repeat, axis=0))
      compiled, compile_s, _ = compile_program(floor_program(recurrent_fn, num_calls), *args)
      jax.block_until_ready(compiled(*args))
      self.floors[key] = (compiled, args, compile_s)
    return self.floors[key]

  def run(self, model: str, algorithm: str, batch: int, budget: int,
          num_particles: int | None) -> dict:
    params, root_fn, recurrent_fn = self.models[model]
    row = dict(model=model, algorithm=algorithm, batch=batch, budget=budget,
               num_particles=num_particles if algorithm != "mctx" else "", status="ok",
               note="", particles_used="", sequential_calls="", search_depth="", floor_width="",
               time_median_s="", time_iqr_s="", repeats="", floor_median_s="",
               floor_iqr_s="", search_over_floor="", cpu_s="", floor_cpu_s="",
               cpu_search_over_floor="", compile_s="", lower_s="", floor_compile_s="",
               xla_temp_bytes="", xla_argument_bytes="", xla_output_bytes="",
               xla_total_bytes="", device_peak_bytes="", device_peak_exact="", flops="",
               load1=round(os.getloadavg()[0], 2), **dict.fromkeys(LOOP_COLUMNS, ""))
    series = (model, algorithm, batch, num_particles if algorithm != "mctx" else None)
    predicted = self.predicted_seconds(series, budget)
    if predicted is not None and predicted > self.max_call_seconds:
      row.update(status="skipped", note=f"predicted {predicted:.3g} s per call > "
                 f"{self.max_call_seconds:g} s")
      self._print(row)
      return row
    root = root_fn(params, batch)
    key = jax.random.PRNGKey(0)
    try:
      compiled, compile_s, lower_s = compile_program(
          search_program(algorithm, recurrent_fn, budget, num_particles), params, key, root)
      # After compiling: a GPU compiler's autotuning scratch is not the search's memory.
      peak_before = device_peak_bytes()
      out = jax.block_until_ready(compiled(params, key, root))  # warm-up
    except Exception as error:  # noqa: BLE001 - e.g. out of memory on a large grid point
      row.update(status="error", note=f"{type(error).__name__}: {str(error)[:200]}")
      self._print(row)
      return row
    peak_after = device_peak_bytes()  # before the floor runs
    if algorithm == "mctx":
      particles_used, num_calls = 1, budget
      search_depth = mctx_tree_depth(out.search_tree)
    else:
      diag = out.search_tree.extra_data
      particles_used = int(np.asarray(diag.num_particles)[0])
      num_calls = int(np.asarray(diag.depth)[0].sum())
      search_depth = int(np.asarray(diag.depth)[0].max())
    floor, floor_args, floor_compile_s = self.floor(model, num_calls, root.embedding,
                                                    particles_used)
    t, f = time_calls([(compiled, (params, key, root)), (floor, floor_args)], **self.timing)
    self.measured.setdefault(series, []).append((budget, t["median"]))
    row.update(
        particles_used=particles_used if algorithm != "mctx" else "",
        sequential_calls=num_calls, search_depth=search_depth, floor_width=batch * particles_used,
        time_median_s=t["median"], time_iqr_s=t["iqr"], repeats=t["repeats"],
        floor_median_s=f["median"], floor_iqr_s=f["iqr"], floor_cpu_s=f["cpu_median"],
        floor_compile_s=floor_compile_s, search_over_floor=t["median"] / f["median"],
        cpu_s=t["cpu_median"], cpu_search_over_floor=t["cpu_median"] / max(f["cpu_median"], 1e-9),
        compile_s=compile_s, lower_s=lower_s,
        **memory_analysis(compiled), flops=flops(compiled), load1=round(os.getloadavg()[0], 2),
        **loop_kernels(compiled.as_text()))
    if peak_after is not None:
      row.update(device_peak_bytes=peak_after,
                 device_peak_exact=int(peak_before is None or peak_after > peak_before))
    self._print(row)
    return row

  def _print(self, row):
    if not self.verbose:
      return
    n = f"N={row['num_particles']}" if row["num_particles"] != "" else "     "
    head = (f"{row['model']:>7s} {row['algorithm']:>6s} B={row['batch']:<5d} "
            f"budget={row['budget']:<5d} {n:>6s}")
    if row["status"] != "ok":
      print(f"{head}  {row['status']}: {row['note']}", flush=True)
      return
    mb = row["xla_total_bytes"] / 2**20 if row["xla_total_bytes"] != "" else float("nan")
    print(f"{head}  calls={row['sequential_calls']:<5d} {row['time_median_s'] * 1e3:9.2f} ms "
          f"(iqr {row['time_iqr_s'] * 1e3:.2f})  floor {row['floor_median_s'] * 1e3:8.2f} ms  "
          f"x{row['search_over_floor']:6.2f}  compile {row['compile_s']:5.2f} s  "
          f"xla {mb:8.2f} MiB  load {row['load1']}", flush=True)


def configurations(mode: str, models, algorithms, batches=None, budgets=None):
  """`(model, algorithm, batch, budget, num_particles)` in run order, without duplicates.

  Within a series the budget increases, so a skipped budget is predicted from
  the ones before it; mctx (no `N`) appears once per (model, batch, budget).
  `batches` / `budgets` (optional) keep only those values (the headline
  configuration included).
  """
  seen, configs = set(), []

  def add(config):
    if config not in seen:
      seen.add(config)
      configs.append(config)

  # mctx last within each batch: its memory grows with the budget, and a GPU's
  # running peak after it would hide the smctx searches' own peaks.
  order = [a for a in algorithms if a != "mctx"] + [a for a in algorithms if a == "mctx"]
  for block in GRIDS[mode]:
    for model in models:
      for batch in block["batches"]:
        for algorithm in order:
          particles = (None,) if algorithm == "mctx" else block["particles"]
          for n in particles:
            for budget in block["budgets"]:
              add((model, algorithm, batch, budget, n))
  if HEADLINE["model"] in models:
    for algorithm in algorithms:
      add((HEADLINE["model"], algorithm, HEADLINE["batch"], HEADLINE["budget"],
           None if algorithm == "mctx" else HEADLINE["num_particles"]))
  return [c for c in configs if (batches is None or c[2] in batches)
          and (budgets is None or c[3] in budgets)]


def latency_configurations(algorithms, steps=LATENCY_STEPS, widths=LATENCY_WIDTHS):
  """Equal sequential calls at the headline model and batch: mctx at S simulations, every
  smctx algorithm at N·S simulations with N particles (S calls each)."""
  model, batch = HEADLINE["model"], HEADLINE["batch"]
  configs = []
  for s in steps:
    for algorithm in algorithms:
      if algorithm == "mctx":
        configs.append((model, algorithm, batch, s, None))
      else:
        configs += [(model, algorithm, batch, n * s, n) for n in widths]
  return configs


def latency_summary(rows) -> list[dict]:
  """Per S: mctx's seconds, and each smctx configuration's seconds, calls, width and speedup
  (mctx seconds / its seconds) at the same sequential calls."""
  out = []
  for mctx_row in _ok(rows, algorithm="mctx"):
    s = mctx_row["budget"]
    for r in _ok(rows):
      if r["algorithm"] != "mctx" and r["sequential_calls"] == s and r["budget"] == s * (
          r["num_particles"] or 0):
        out.append(dict(sequential_calls=s, algorithm=r["algorithm"],
                        width=r["particles_used"], num_simulations=r["budget"],
                        seconds=r["time_median_s"], mctx_seconds=mctx_row["time_median_s"],
                        speedup=mctx_row["time_median_s"] / r["time_median_s"],
                        search_over_floor=r["search_over_floor"]))
  return out


# -- Summary -----------------------------------------------------------------------------------


def _ok(rows, **match):
  return [r for r in rows if r["status"] == "ok" and all(r[k] == v for k, v in match.items())]


def _one(rows, **match):
  found = _ok(rows, **match)
  return found[0] if found else None


def _n(algorithm, n):
  return "" if algorithm == "mctx" else n


def reference_batch(rows, model):
  """The largest batch at which every budget of the main grid was measured for the model."""
  batches = sorted({r["batch"] for r in _ok(rows, model=model)
                    if r["batch"] != HEADLINE["batch"] or model != HEADLINE["model"]})
  budgets = {r["budget"] for r in _ok(rows, model=model, batch=batches[0])} if batches else set()
  for batch in reversed(batches):
    measured = {r["budget"] for r in _ok(rows, model=model, batch=batch, algorithm="tsmcts",
                                         num_particles=REFERENCE_PARTICLES)}
    if measured >= budgets:
      return batch
  return batches[-1] if batches else None


def headline_summary(rows, algorithms) -> dict:
  """The headline ratios: a JSON-ready dict.

  headline: at the headline configuration, each algorithm's time, floor,
    search/floor, compile time, XLA bytes; tsmcts/mctx speedup (mctx seconds /
    tsmcts seconds) and compile-time ratios (algorithm / mctx).
  per_model: for each model at its reference batch (the largest batch with all
    budgets measured) and N = 16, per budget: seconds, search/floor and XLA
    bytes of every algorithm, the tsmcts/mctx speedup; and the memory growth
    (XLA total bytes at the largest over the smallest budget) of each algorithm.
  """
  summary: dict = {"headline_config": dict(HEADLINE), "key_ratios": {}, "headline": {},
                   "per_model": {}}
  h = summary["headline"]
  at = {a: _one(rows, model=HEADLINE["model"], algorithm=a, batch=HEADLINE["batch"],
                budget=HEADLINE["budget"], num_particles=_n(a, HEADLINE["num_particles"]))
        for a in algorithms}
  for a, r in at.items():
    if r is not None:
      h[a] = dict(seconds=r["time_median_s"], iqr_seconds=r["time_iqr_s"],
                  floor_seconds=r["floor_median_s"], search_over_floor=r["search_over_floor"],
                  cpu_search_over_floor=r["cpu_search_over_floor"],
                  sequential_calls=r["sequential_calls"], compile_seconds=r["compile_s"],
                  xla_total_bytes=r["xla_total_bytes"])
  if at.get("mctx") is not None:
    for a, r in at.items():
      if a != "mctx" and r is not None:
        h[f"{a}_speedup_vs_mctx"] = at["mctx"]["time_median_s"] / r["time_median_s"]
        h[f"{a}_compile_ratio_vs_mctx"] = r["compile_s"] / at["mctx"]["compile_s"]
  for model in sorted({r["model"] for r in _ok(rows)}):
    batch = reference_batch(rows, model)
    if batch is None:
      continue
    m = summary["per_model"][model] = dict(batch=batch, num_particles=REFERENCE_PARTICLES,
                                           by_budget={}, memory_growth={})
    budgets = sorted({r["budget"] for r in _ok(rows, model=model, batch=batch)})
    for budget in budgets:
      entry = {}
      for a in algorithms:
        r = _one(rows, model=model, algorithm=a, batch=batch, budget=budget,
                 num_particles=_n(a, REFERENCE_PARTICLES))
        if r is not None:
          entry[a] = dict(seconds=r["time_median_s"], search_over_floor=r["search_over_floor"],
                          cpu_search_over_floor=r["cpu_search_over_floor"],
                          compile_seconds=r["compile_s"], xla_total_bytes=r["xla_total_bytes"])
      if "mctx" in entry and "tsmcts" in entry:
        entry["tsmcts_speedup_vs_mctx"] = entry["mctx"]["seconds"] / entry["tsmcts"]["seconds"]
      m["by_budget"][str(budget)] = entry
    for a in algorithms:
      series = [(b, m["by_budget"][str(b)][a]["xla_total_bytes"]) for b in budgets
                if a in m["by_budget"][str(b)]]
      if len(series) >= 2 and series[0][1]:
        m["memory_growth"][a] = dict(smallest_budget=series[0][0], largest_budget=series[-1][0],
                                     ratio=series[-1][1] / series[0][1])
  key = summary["key_ratios"]
  for k, v in h.items():
    if not isinstance(v, dict):
      key[f"headline_{k}"] = v
  for a, r in h.items():
    if isinstance(r, dict):
      key[f"headline_{a}_search_over_floor"] = r["search_over_floor"]
  for model, m in summary["per_model"].items():
    for a, g in m["memory_growth"].items():
      key[f"{model}_{a}_memory_growth_{g['smallest_budget']}_to_{g['largest_budget']}"] = (
          g["ratio"])
  return summary


def print_summary(summary: dict) -> None:
  h = summary["headline"]
  cfg = summary["headline_config"]
  print(f"\n== headline: {cfg['model']} model, budget {cfg['budget']}, batch {cfg['batch']}, "
        f"N = {cfg['num_particles']}")
  if not h:
    print("  (not measured)")
  for a, r in h.items():
    if isinstance(r, dict):
      print(f"  {a:>6s}: {r['seconds'] * 1e3:9.2f} ms, search/floor {r['search_over_floor']:6.2f}"
            f" (CPU time {r['cpu_search_over_floor']:.2f}),"
            f" calls {r['sequential_calls']}, compile {r['compile_seconds']:.2f} s, "
            f"XLA {r['xla_total_bytes'] / 2**20:.1f} MiB")
  for k, v in h.items():
    if not isinstance(v, dict):
      print(f"  {k}: {v:.3g}")
  for model, m in summary["per_model"].items():
    print(f"\n== {model} model, batch {m['batch']}, N = {m['num_particles']}: per budget")
    for budget, entry in m["by_budget"].items():
      cells = [f"{a} {r['seconds'] * 1e3:.1f} ms (x{r['search_over_floor']:.2f} floor, "
               f"CPU x{r['cpu_search_over_floor']:.2f}, "
               f"{r['xla_total_bytes'] / 2**20:.2f} MiB, compile {r['compile_seconds']:.1f} s)"
               for a, r in entry.items() if isinstance(r, dict)]
      speed = entry.get("tsmcts_speedup_vs_mctx")
      print(f"  {budget:>5s}: " + "; ".join(cells)
            + (f"; tsmcts speedup vs mctx {speed:.2f}x" if speed else ""))
    for a, g in m["memory_growth"].items():
      print(f"  memory growth {a}: x{g['ratio']:.2f} from budget {g['smallest_budget']} "
            f"to {g['largest_budget']}")
  sys.stdout.flush()


# -- Figures -----------------------------------------------------------------------------------


def save(fig, path: str, meta: list[str], right: float = 1.0) -> None:
  """A small PNG whose footer and PNG text chunk record the device, versions, host and date."""
  fig.text(0.01, 0.03, meta[0] + " | " + meta[1], fontsize=6, color="0.4")
  fig.text(0.01, 0.005, meta[2], fontsize=6, color="0.4")
  fig.tight_layout(rect=(0, 0.05, right, 1))
  software = f"benchmarks/speed.py, smctx {smctx.__version__}"
  fig.savefig(path, dpi=90, metadata={"Description": "\n".join(meta), "Software": software})
  plt.close(fig)


def plot_vs_budget(rows, algorithms, path, meta, quantity: str) -> None:
  """One panel per model × batch; lines per algorithm at N = 16, other N as markers."""
  models = sorted({r["model"] for r in _ok(rows)})
  batches = sorted({r["batch"] for r in _ok(rows)
                    if len({x["budget"] for x in _ok(rows, batch=r["batch"])}) > 1})
  if not models or not batches:
    print(f"(no {os.path.basename(path)}: no batch was measured at two budgets or more)")
    return
  fig, axes = plt.subplots(len(models), len(batches),
                           figsize=(4 * len(batches) + 1.6, 3.4 * len(models) + 0.4), squeeze=False)
  key = "time_median_s" if quantity == "time" else "xla_total_bytes"
  scale = 1.0 if quantity == "time" else 1 / 2**20
  for i, model in enumerate(models):
    for j, batch in enumerate(batches):
      ax = axes[i, j]
      for a in algorithms:
        for n in sorted({r["num_particles"] for r in _ok(rows, model=model, algorithm=a)},
                        key=str):
          sub = sorted(_ok(rows, model=model, algorithm=a, batch=batch, num_particles=n),
                       key=lambda r: r["budget"])
          if not sub:
            continue
          x = [r["budget"] for r in sub]
          y = [r[key] * scale for r in sub]
          if n in ("", REFERENCE_PARTICLES):
            label = a if a == "mctx" else f"{a} (N={n})"
            ax.plot(x, y, "o-", color=COLORS[a], ms=4, label=label)
            if quantity == "time":
              ax.plot(x, [r["floor_median_s"] for r in sub], "--", color=COLORS[a], lw=1,
                      alpha=0.7)
          else:
            ax.plot(x, y, PARTICLE_MARKERS.get(n, "x"), color=COLORS[a], ms=5, mfc="none",
                    label=f"{a} N={n}")
          skipped = [r for r in rows if r["status"] == "skipped" and r["model"] == model
                     and r["algorithm"] == a and r["batch"] == batch and r["num_particles"] == n]
          for r in skipped:
            ax.axvline(r["budget"], color=COLORS[a], lw=0.5, ls=":")
      budgets = sorted({r["budget"] for r in _ok(rows, model=model, batch=batch)})
      ax.set(xscale="log", yscale="log", title=f"{model} model, batch {batch}",
             xlabel="num_simulations",
             ylabel="seconds per search call" if quantity == "time" else "XLA memory (MiB)")
      ax.set_xticks(budgets, [str(b) for b in budgets])
      ax.xaxis.set_minor_locator(ticker.NullLocator())
      plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
      ax.yaxis.set_major_formatter(plain)
      low, high = ax.get_ylim()
      # Less than a decade shown: label the minor ticks too, or the axis has no numbers.
      ax.yaxis.set_minor_formatter(plain if high < 10 * low else ticker.NullFormatter())
      ax.title.set_fontsize(9)
  legend = {}
  for ax in axes.flat:
    for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
      legend.setdefault(label, handle)
  order = lambda label: (list(ALGORITHMS).index(label.split()[0]), "(" not in label, label)
  labels = sorted(legend, key=order)
  handles = [legend[label] for label in labels]
  if quantity == "time":
    handles.append(Line2D([], [], color="0.3", ls="--", lw=1))
    labels.append("floor")
  fig.legend(handles, labels, fontsize=7, loc="center right")
  if quantity == "time":
    fig.suptitle("Time per search call (median of repeated calls). Dashed: model-call floor, the "
                 "same number of sequential recurrent_fn calls\nat the same width with no search, "
                 "timed alongside each algorithm. Lines N = "
                 f"{REFERENCE_PARTICLES}, open markers other N; dotted verticals: skipped",
                 fontsize=8)
  else:
    fig.suptitle("XLA memory analysis of the compiled search: temp + argument + output bytes\n"
                 f"Lines N = {REFERENCE_PARTICLES}, open markers other N; "
                 "dotted verticals: skipped", fontsize=8)
  save(fig, path, meta, right=0.84)


# -- Main --------------------------------------------------------------------------------------


def device_slug(device_line: str | None = None) -> str:
  """`cpu`, `nvidia_h100_80gb_hbm3`, ...: from this process's device or a CSV's device line."""
  if device_line is None:
    kind = jax.devices()[0].device_kind
  else:  # "device: gpu (NVIDIA H100 80GB HBM3)" or "device: cpu"
    found = re.search(r"\((.*)\)", device_line)
    kind = found.group(1) if found else device_line.split(":", 1)[-1]
  return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or "device"


def read_csvs(paths: list[str]):
  """Rows (numbers parsed) and metadata lines of speed CSVs; the metadata is the first file's."""
  rows, meta = [], None

  def parse(text):
    for kind in (int, float):
      try:
        return kind(text)
      except ValueError:
        pass
    return text

  for path in paths:
    with open(path) as f:
      lines = f.read().splitlines()
    comments = [line[2:] for line in lines if line.startswith("#")]
    meta = meta or comments
    for row in csv.DictReader(line for line in lines if not line.startswith("#")):
      rows.append({k: parse(v) for k, v in row.items()})
  meta = list(meta)
  meta[2] += f"; merged from {len(paths)} file(s) by --from-csv"
  return rows, meta


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mode", choices=list(GRIDS), default="quick")
  parser.add_argument("--models", default=None,
                      help=f"comma-separated subset of {list(MODELS)} (default: "
                           f"{','.join(DEFAULT_MODELS)}; go in --mode go)")
  parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                      help=f"comma-separated subset of {list(ALGORITHMS)}")
  parser.add_argument("--max-call-seconds", type=float, default=None,
                      help="skip a configuration predicted slower than this per call "
                           f"(default per mode: {MAX_CALL_SECONDS})")
  parser.add_argument("--batches", default=None,
                      help="comma-separated batch sizes: run only these (e.g. to split a long "
                           "full run over several commands)")
  parser.add_argument("--budgets", default=None,
                      help="comma-separated num_simulations: run only these")
  parser.add_argument("--from-csv", nargs="+", default=None, metavar="CSV",
                      help="measure nothing: merge these speed CSVs (e.g. the parts of a split "
                           "run) and write the merged CSV, the figures and the headline JSON")
  parser.add_argument("--latency-steps", default=",".join(map(str, LATENCY_STEPS)),
                      help="--mode latency: the sequential calls S")
  parser.add_argument("--latency-widths", default=",".join(map(str, LATENCY_WIDTHS)),
                      help="--mode latency: the smctx widths N at each S")
  parser.add_argument("--gpu-threefry", action="store_true",
                      help="--mode kernels/profile on a CPU: compile random numbers as a GPU "
                           "does (JAX's unrolled threefry, not the CPU's rolled loop), so the "
                           "kernels counted and run are close to what a GPU launches")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  args = parser.parse_args(argv)
  default_models = ("go",) if args.mode == "go" else DEFAULT_MODELS
  models = [m for m in (args.models or ",".join(default_models)).split(",") if m]
  algorithms = [a for a in args.algorithms.split(",") if a]
  unknown = (set(models) - set(MODELS)) | (set(algorithms) - set(ALGORITHMS))
  if unknown:
    parser.error(f"unknown {sorted(unknown)}")
  if args.gpu_threefry and args.mode not in ("kernels", "profile"):
    parser.error("--gpu-threefry applies to --mode kernels and --mode profile only")
  max_call = args.max_call_seconds or MAX_CALL_SECONDS[args.mode]
  os.makedirs(args.out, exist_ok=True)
  started = time.perf_counter()
  if args.mode == "memory":
    meta = metadata(args.mode)
    rows = memory_sweep(algorithms)
    slug = device_slug()
    write_csv(f"{args.out}/speed_memory_sweep_{slug}.csv", rows, meta)
    plot_memory_sweep(rows, f"{args.out}/speed_memory_sweep_{slug}.png", meta)
    return 0
  if args.mode == "profile" and "xla_gpu_enable_command_buffer" not in os.environ.get(
      "XLA_FLAGS", ""):  # read when the backend starts, which nothing above has done
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {COMMAND_BUFFERS_OFF}".strip()
  if args.mode in ("kernels", "profile"):
    meta, suffix = metadata(args.mode), ""
    if args.mode == "profile" and jax.default_backend() == "gpu":
      meta.append(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')} (per-kernel attribution)")
    if args.gpu_threefry and use_unrolled_threefry():
      meta.append("threefry: unrolled, as a GPU compiles it (--gpu-threefry)")
      suffix = "_gpu_threefry"
    rows = (kernel_rows if args.mode == "kernels" else profile_rows)(models, algorithms)
    write_csv(f"{args.out}/speed_{args.mode}_{device_slug()}{suffix}.csv", rows, meta)
    return 0
  if args.from_csv:
    rows, meta = read_csvs(args.from_csv)
    algorithms = [a for a in ALGORITHMS if any(r["algorithm"] == a for r in rows)]
    slug = device_slug(meta[0])
    total = float("nan")
  else:
    meta = metadata(args.mode)
    print("\n".join(meta))
    ints = lambda text: None if text is None else [int(x) for x in text.split(",") if x]
    runner = Runner(args.mode, max_call)
    if args.mode == "latency":
      algorithms = [a for a in algorithms if a in ("mctx", "tsmcts")]
      runner.warm_up(algorithms)
      rows = [runner.run(*config) for config in latency_configurations(
          algorithms, ints(args.latency_steps), ints(args.latency_widths))]
      slug = device_slug()
      write_csv(f"{args.out}/speed_latency_{slug}.csv", rows, meta)
      summary = latency_summary(rows)
      with open(f"{args.out}/speed_latency_{slug}.json", "w") as f:
        json.dump(dict(metadata=meta, rows=summary,
                       wall_seconds=time.perf_counter() - started), f, indent=1)
      for r in summary:
        print(f"S={r['sequential_calls']:4d} {r['algorithm']} N={r['width']:<4d} "
              f"{r['seconds'] * 1e3:9.2f} ms vs mctx {r['mctx_seconds'] * 1e3:9.2f} ms: "
              f"x{r['speedup']:.2f} faster, search/floor {r['search_over_floor']:.2f}")
      return 0
    runner.warm_up(algorithms)
    rows = [runner.run(*config) for config in configurations(
        args.mode, models, algorithms, ints(args.batches), ints(args.budgets))]
    total = time.perf_counter() - started
    meta[2] += f"; wall {total:.0f} s"
    slug = device_slug()
  summary = headline_summary(rows, algorithms)
  summary["metadata"] = meta
  summary["wall_seconds"] = None if args.from_csv else total
  print_summary(summary)
  if args.mode == "go":  # one configuration: its own files, none of the per-budget ones
    write_csv(f"{args.out}/speed_go_{slug}.csv", rows, meta)
    print(f"\ntotal {total:.0f} s; results in {args.out}/speed_go_{slug}.csv")
    return 0
  write_csv(f"{args.out}/speed_{slug}.csv", rows, meta)
  with open(f"{args.out}/speed_headline_{slug}.json", "w") as f:
    json.dump(summary, f, indent=1)
  plot_vs_budget(rows, algorithms, f"{args.out}/speed_time_vs_budget_{slug}.png", meta, "time")
  plot_vs_budget(rows, algorithms, f"{args.out}/speed_memory_vs_budget_{slug}.png", meta,
                 "memory")
  done = f"merged {len(rows)} rows" if args.from_csv else f"total {total:.0f} s"
  print(f"\n{done}; results in {args.out}")


if __name__ == "__main__":
  sys.exit(main())
