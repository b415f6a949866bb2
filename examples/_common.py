"""Shared plumbing of the smctx examples: flags, search selection, logging, checkpoints, plots.

Nothing here knows about an environment. An example supplies

* a frozen config dataclass and a dict of presets (`{"quick": {...}, "full": {...}}`),
* an initial training state (any pytree of arrays, e.g. `{"params", "opt_state", "env_state",
  "rng_key"}`; typed keys from `jax.random.key` and raw `jax.random.PRNGKey` keys both
  round-trip through the checkpoints),
* a jitted `step_fn(state) -> (state, metrics)` running one iteration (rollout + update),

and `train_loop` runs it with a tqdm bar, a metrics CSV, orbax checkpoints and a learning-curve
PNG:

```python
config, _ = _common.parse_config(Config, PRESETS)  # --preset NAME, then a flag per field
search = _common.make_search(config.search, num_particles=config.num_particles)
rows = _common.train_loop(state, step_fn, total_env_steps=..., env_steps_per_iteration=...,
                          out_dir=config.out, resume=config.resume, config=config)
```

Public API (stable): `Search`, `SEARCHES`, `parse_config`, `resolve_config`,
`make_search`, `metadata`, `MetricsLog`, `read_csv`, `checkpoint_manager`, `save_checkpoint`,
`load_checkpoint`, `load_checkpoint_info`, `checkpoint_exists`, `progress_bar`, `train_loop`,
`last_values`, `iqm`, `iqm_and_ci`, `plot_learning_curve`, `plot_bands`, and the jittable
AlphaZero pieces `bootstrapped_returns`, `alphazero_loss`, `make_alphazero_update`.

Examples import this module as `import _common` (`examples/` is on `sys.path` when an example runs
as a script; tests load it with importlib and register it in `sys.modules`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import shutil
import subprocess
import time
import typing
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import mctx
import numpy as np

import smctx

# The search policies of the examples (the type of their configs' `search` field).
Search = Literal["gumbel", "smc", "smcts", "tsmcts", "tsmcts_paper"]
SEARCHES = typing.get_args(Search)

_POLICIES = {
    "smc": smctx.smc_policy,
    "smcts": smctx.smcts_policy,
    "tsmcts": smctx.tsmcts_policy,
    # The paper's variant (mctx's transform, depth near 3): `tsmcts_policy(variant="paper")`.
    "tsmcts_paper": functools.partial(smctx.tsmcts_policy, variant="paper"),
}

CHECKPOINT_DIR = "checkpoints"  # orbax: one `<iteration>/` folder per kept checkpoint
METRICS_FILE = "metrics.csv"
CURVE_FILE = "learning_curve.png"


# ----------------------------------------------------------------------------------------------
# Flags and configs.


def _usage(action: argparse.Action) -> str:
  if action.nargs == 0:
    return action.option_strings[0]
  if isinstance(action.metavar, tuple):
    metavar = " ".join(action.metavar)
  elif action.choices:
    metavar = "{" + ",".join(map(str, action.choices)) + "}"
  else:
    metavar = action.metavar or action.dest.upper()
  return f"{action.option_strings[0]} {metavar}"


def parse_config(config_cls, presets: Mapping[str, Mapping[str, Any]],
                 argv: Optional[Sequence[str]] = None, *,
                 extra: Optional[argparse.ArgumentParser] = None, description: str = "",
                 default_preset: str = "quick") -> tuple[Any, argparse.Namespace]:
  """`(config, extra_args)` from the command line: a preset, then a flag for every config field.

  `--preset NAME` picks the preset whose values are the defaults; then every field of the
  dataclass `config_cls` is a flag (tyro): `--num-simulations 64`, `--hidden-sizes 64 64`,
  `--conv-channels` (an empty tuple), `--max-depth None`, `--resume` / `--no-resume`. So
  `--preset full --num-simulations 64` changes one field of the full preset. `--help` lists every
  field with its default under the chosen preset.

  Args:
    config_cls: a dataclass; its fields' types give the flags' types and choices (`Literal`).
    presets: `{name: {field: value}}`.
    argv: the arguments (default: `sys.argv[1:]`).
    extra: a parser (made with `add_help=False, allow_abbrev=False`) of flags that are not
      config fields, e.g. `--eval-match A B`; they are parsed first and shown in `--help`.
    description: the text at the top of `--help`.
    default_preset: the preset without `--preset`.

  Returns:
    The config and the namespace of `extra`'s flags (with `preset`).
  """
  import tyro

  parser = extra or argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  preset = parser.add_argument("--preset", choices=sorted(presets), default=default_preset)
  known, rest = parser.parse_known_args(argv)
  default = resolve_config(config_cls, presets, {"preset": known.preset})
  extras = [f"{_usage(a)}: {a.help or ''}" for a in parser._actions
            if a.option_strings and a is not preset]
  text = "\n\n".join([description or (config_cls.__doc__ or ""),
                       f"--preset {{{','.join(sorted(presets))}}} sets the defaults below "
                       f"(default: {default_preset}); the other flags change single fields."]
                      + extras)
  return tyro.cli(config_cls, args=rest, default=default, description=text), known


def resolve_config(config_cls, presets: Mapping[str, Mapping[str, Any]],
                   args: argparse.Namespace | Mapping[str, Any], **overrides):
  """Builds `config_cls` from a preset, then flags that were set, then `overrides`.

  `args` is an `argparse.Namespace` (or a dict) whose `preset` names the preset; every other
  attribute that is a field of `config_cls` and not None replaces the preset's value (dashes in
  flag names become underscores, as argparse does).
  """
  values = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
  preset = values.get("preset") or "quick"
  fields = {f.name for f in dataclasses.fields(config_cls)}
  merged = dict(presets[preset])
  if "preset" in fields:
    merged["preset"] = preset
  for name, value in values.items():
    if name in fields and value is not None and name != "preset":
      if isinstance(value, bool) and not value and name in merged:
        continue  # a store_true flag that was not given keeps the preset's value
      merged[name] = value
  merged.update(overrides)
  unknown = set(merged) - fields
  if unknown:
    raise ValueError(f"unknown config fields {sorted(unknown)} for {config_cls.__name__}")
  return config_cls(**merged)


# ----------------------------------------------------------------------------------------------
# Search selection.


def make_search(name: str, *, num_particles: Optional[int] = None,
                num_steps: Optional[int] = None, **policy_kwargs) -> Callable:
  """The search policy `name` with mctx's call signature.

  Returns `policy(params, rng_key, root, recurrent_fn, num_simulations, invalid_actions=None,
  max_depth=None, ...) -> mctx.PolicyOutput`. `gumbel` is `mctx.gumbel_muzero_policy` and ignores
  `num_particles` and `num_steps`; `smc`, `smcts` and `tsmcts` are the smctx policies with
  `num_particles` and `num_steps` (the latency) bound (None: chosen from the budget).
  `policy_kwargs` are bound as keywords (e.g. `gumbel_scale`).
  """
  if name == "gumbel":
    return functools.partial(mctx.gumbel_muzero_policy, **policy_kwargs)
  if name not in _POLICIES:
    raise ValueError(f"search must be one of {SEARCHES}, got {name!r}")
  return functools.partial(_POLICIES[name], num_particles=num_particles, num_steps=num_steps,
                           **policy_kwargs)


# ----------------------------------------------------------------------------------------------
# Metadata and CSV.


def _git_revision() -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "src", "examples"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return rev + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _version(module_name: str) -> str:
  try:
    module = __import__(module_name)
  except ImportError:
    return "-"
  return str(getattr(module, "__version__", "?"))


def metadata(extra: Iterable[str] = ()) -> list[str]:
  """Lines describing where a result came from: device, versions, host load, date, git revision.

  Written as `# ` lines at the top of every CSV. The 1-minute load average is recorded because
  wall-clock numbers on a shared machine are only meaningful next to it.
  """
  device = jax.devices()[0]
  kind = f" ({device.device_kind})" if device.device_kind != device.platform else ""
  versions = ", ".join(f"{name} {_version(name)}" for name in
                       ("jax", "jaxlib", "mctx", "smctx", "flax", "optax", "pgx", "jumanji"))
  try:
    load = "load average %.2f %.2f %.2f" % os.getloadavg()
  except OSError:
    load = "load average unknown"
  lines = [
      f"device: {device.platform}{kind}, {jax.device_count()} device(s)",
      f"versions: python {platform.python_version()}, {versions}",
      f"host: {platform.platform()}, {os.cpu_count()} cpus, {load}",
      f"date: {datetime.datetime.now().isoformat(timespec='seconds')}; git: {_git_revision()}",
  ]
  return lines + list(extra)


def _format(value) -> str:
  if isinstance(value, float):
    return f"{value:.6g}" if math.isfinite(value) else str(value)
  return str(value)


class MetricsLog:
  """An append-only CSV of metric rows with `# ` metadata lines at the top.

  The columns are fixed by the first row (missing keys of later rows are written as `nan`). With
  `resume=True` an existing file is kept up to `keep_until` (rows whose `iteration` is larger are
  dropped: they were logged after the checkpoint that training resumes from).
  """

  def __init__(self, path: str, meta: Sequence[str] = (), *, resume: bool = False,
               keep_until: Optional[int] = None):
    self.path = path
    self.meta = list(meta)
    self.rows: list[dict] = []
    self.fieldnames: Optional[list[str]] = None
    if resume and os.path.exists(path):
      old_meta, rows = read_csv(path)
      if keep_until is not None:
        rows = [r for r in rows if r.get("iteration", 0) <= keep_until]
      self.meta = old_meta + [f"resumed: {line}" for line in self.meta[:1] + self.meta[2:3]]
      self.rows = rows
      if rows:
        self.fieldnames = list(rows[0])
    self._rewrite()

  def _rewrite(self) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    with open(self.path, "w", newline="") as f:
      for line in self.meta:
        f.write(f"# {line}\n")
      if self.fieldnames:
        writer = csv.writer(f)
        writer.writerow(self.fieldnames)
        for row in self.rows:
          writer.writerow([_format(row.get(k, math.nan)) for k in self.fieldnames])

  def append(self, row: Mapping[str, Any]) -> None:
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    if self.fieldnames is None:
      self.fieldnames = list(row)
      self.rows.append(row)
      self._rewrite()
      return
    self.rows.append(row)
    with open(self.path, "a", newline="") as f:
      csv.writer(f).writerow([_format(row.get(k, math.nan)) for k in self.fieldnames])


def _parse(value: str):
  for cast in (int, float):
    try:
      return cast(value)
    except ValueError:
      pass
  return value


def read_csv(path: str) -> tuple[list[str], list[dict]]:
  """`(metadata lines without '# ', rows)` of a CSV written by `MetricsLog`; numbers parsed."""
  meta, lines = [], []
  with open(path, newline="") as f:
    for line in f:
      if line.startswith("# "):
        meta.append(line[2:].rstrip("\n"))
      elif line.strip():
        lines.append(line)
  rows = [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(lines)]
  return meta, rows


# ----------------------------------------------------------------------------------------------
# Checkpoints: orbax, one folder per kept iteration under `<out>/checkpoints/`.


def checkpoint_manager(directory: str, *, max_to_keep: Optional[int] = 3):
  """An `orbax.checkpoint.CheckpointManager` on `directory/checkpoints`, keeping the last
  `max_to_keep` checkpoints (None: all).

  Each checkpoint is a step (the training iteration) with two items: `state`, the training state
  (any pytree of arrays: parameters, optax states, pgx or jumanji environment states, typed or
  raw keys), and `info`, a JSON dict (iteration, env steps, wall time, config).
  """
  import orbax.checkpoint as ocp  # imported here: ~4 s, only runs that checkpoint pay it

  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(directory), CHECKPOINT_DIR),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "info": ocp.JsonCheckpointHandler()})


def _json_safe(info: Mapping[str, Any]) -> dict:
  return json.loads(json.dumps(dict(info), default=str))


def _save_step(manager, step: int, state: Any, info: Mapping[str, Any]) -> None:
  import orbax.checkpoint as ocp

  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             info=ocp.args.JsonSave(_json_safe(info))))


def checkpoint_exists(directory: str) -> bool:
  """Whether `directory` holds a checkpoint written by `save_checkpoint` or `train_loop`."""
  if not os.path.isdir(os.path.join(directory, CHECKPOINT_DIR)):
    return False
  with checkpoint_manager(directory, max_to_keep=None) as manager:
    return manager.latest_step() is not None


def save_checkpoint(directory: str, state: Any, info: Mapping[str, Any], *,
                    step: Optional[int] = None, max_to_keep: Optional[int] = 3) -> None:
  """Saves `state` (a pytree of arrays) and `info` (JSON-able) as checkpoint `step` of
  `directory` (default: `info["iteration"]`, else 0), waiting until it is written.

  Any pytree (optax states, pgx or jumanji environment states, typed keys) round-trips given a
  template of the same structure (`load_checkpoint`). `train_loop` keeps one manager open
  instead, so that its saves run in the background.
  """
  step = int(info.get("iteration", 0)) if step is None else step
  with checkpoint_manager(directory, max_to_keep=max_to_keep) as manager:
    _save_step(manager, step, state, info)


def _shape_dtype(leaf) -> tuple[tuple[int, ...], np.dtype]:
  # orbax stores a typed key as its raw key data.
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return tuple(np.shape(leaf)), np.dtype(leaf.dtype)


def load_checkpoint(directory: str, template: Any, *,
                    step: Optional[int] = None) -> tuple[Any, dict]:
  """`(state, info)` of checkpoint `step` of `directory` (default: the latest).

  `template` gives the pytree structure, shapes and dtypes (e.g. the initial training state).
  Raises `ValueError` if the checkpoint does not match the template's structure, shapes or
  dtypes (e.g. a checkpoint of a different preset), or if there is no checkpoint.
  """
  import orbax.checkpoint as ocp

  with checkpoint_manager(directory, max_to_keep=None) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"no checkpoint in {directory}")
    # orbax checks structure and shapes but casts dtypes silently: check them first.
    saved = manager.item_metadata(step)["state"]
    saved = {leaf.name: leaf for leaf in jax.tree.leaves(getattr(saved, "tree", saved))
             if hasattr(leaf, "name")}
    for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
      meta = saved.get(".".join(ocp.tree.str_keypath(path)))
      want = _shape_dtype(leaf)
      if meta is not None and (tuple(meta.shape), np.dtype(meta.dtype)) != want:
        raise ValueError(f"checkpoint array {jax.tree_util.keystr(path)} is "
                         f"{np.dtype(meta.dtype)}{list(meta.shape)}, expected "
                         f"{want[1]}{list(want[0])}")
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(template), info=ocp.args.JsonRestore()))
    except ValueError as e:
      raise ValueError(f"checkpoint {step} in {directory} does not match the template: {e}") from e
  return restored["state"], dict(restored["info"])


def load_checkpoint_info(directory: str, *, step: Optional[int] = None) -> dict:
  """The `info` dict of checkpoint `step` of `directory` (default: the latest)."""
  import orbax.checkpoint as ocp

  with checkpoint_manager(directory, max_to_keep=None) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"no checkpoint in {directory}")
    return dict(manager.restore(step, args=ocp.args.Composite(info=ocp.args.JsonRestore()))
                ["info"])


# ----------------------------------------------------------------------------------------------
# Progress and the training loop.


def progress_bar(total: int, *, initial: int = 0, desc: str = "", disable: bool = False):
  """A tqdm bar counting environment steps; show live metrics with `bar.set_postfix`."""
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, desc=desc, unit="step", unit_scale=True,
              dynamic_ncols=True, disable=disable, smoothing=0.1)


def _postfix(row: Mapping[str, Any], keys: Sequence[str]) -> dict:
  out = {}
  for key in keys:
    if key in row:
      value = row[key]
      out[key] = f"{value:.3g}" if isinstance(value, float) else value
  return out


def train_loop(state: Any, step_fn: Callable[[Any], tuple[Any, Mapping[str, Any]]], *,
               total_env_steps: int, env_steps_per_iteration: int, out_dir: Optional[str],
               resume: bool = False, config: Any = None,
               eval_fn: Optional[Callable[[Any], Mapping[str, Any]]] = None,
               eval_every: int = 0, checkpoint_every: int = 10,
               keep_checkpoints: Optional[int] = 3,
               postfix_keys: Sequence[str] = ("mean_return", "loss", "steps_per_s"),
               plot_y: str | Sequence[str] = "mean_return", desc: str = "", quiet: bool = False,
               meta: Iterable[str] = ()) -> list[dict]:
  """Runs `step_fn` until `total_env_steps`; returns the metric rows (one per iteration).

  Args:
    state: initial training state (pytree of arrays); also the template for resuming.
    step_fn: `state -> (state, metrics)`, one iteration (typically jitted); metrics are scalars.
    total_env_steps: stop once this many environment steps were taken.
    env_steps_per_iteration: environment steps taken by one `step_fn` call.
    out_dir: where `metrics.csv`, the checkpoints (`checkpoints/<iteration>/`, orbax) and
      `learning_curve.png` go; None writes nothing.
    resume: continue from the latest checkpoint in `out_dir` (iteration, env steps and wall time
      carry on; CSV rows after the checkpoint are dropped). Without it, checkpoints already in
      `out_dir` are deleted: the run replaces the one there (as its `metrics.csv` does).
    config: a dataclass saved with the checkpoint and as a `# config:` CSV line.
    eval_fn: `state -> metrics` run after the first iteration, every `eval_every` iterations and
      after the last; its time is excluded from `wall_time`. Its keys join the row.
    checkpoint_every: iterations between checkpoints (and one at the end).
    keep_checkpoints: how many of the latest checkpoints to keep (orbax's `max_to_keep`; None:
      all).
    postfix_keys: row keys shown live on the progress bar.
    plot_y: the row key (or keys) plotted by `plot_learning_curve` at the end.

  Each row holds `iteration`, `env_steps`, `wall_time` (seconds of training, compilation
  included, evaluation excluded), `steps_per_s` (of the last iteration) and `step_fn`'s metrics.
  """
  config_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}
  iteration, env_steps, wall_offset = 0, 0, 0.0
  if resume and out_dir and checkpoint_exists(out_dir):
    state, info = load_checkpoint(out_dir, state)
    iteration, env_steps, wall_offset = info["iteration"], info["env_steps"], info["wall_time"]
    if not quiet:
      print(f"resumed from {out_dir} at iteration {iteration}, {env_steps} env steps")
  elif out_dir and os.path.isdir(os.path.join(out_dir, CHECKPOINT_DIR)):
    shutil.rmtree(os.path.join(out_dir, CHECKPOINT_DIR))
    if not quiet:
      print(f"starting afresh: removed the old checkpoints in {out_dir} (--resume keeps them)")
  meta = metadata(list(meta) + ([f"config: {json.dumps(config_dict, default=str)}"]
                                if config_dict else []))
  log = None
  if out_dir:
    log = MetricsLog(os.path.join(out_dir, METRICS_FILE), meta, resume=resume and iteration > 0,
                     keep_until=iteration)
  rows = list(log.rows) if log else []
  bar = progress_bar(total_env_steps, initial=min(env_steps, total_env_steps), desc=desc,
                     disable=quiet)
  elapsed = wall_offset
  first = True
  manager = None  # opened at the first save; its saves run in the background
  try:
    while env_steps < total_env_steps:
      start = time.perf_counter()
      state, metrics = step_fn(state)
      metrics = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
      seconds = time.perf_counter() - start
      elapsed += seconds
      iteration += 1
      env_steps += env_steps_per_iteration
      row = {"iteration": iteration, "env_steps": env_steps, "wall_time": elapsed,
             "steps_per_s": env_steps_per_iteration / seconds, **metrics}
      last = env_steps >= total_env_steps
      if eval_fn is not None and (first or last or (eval_every and iteration % eval_every == 0)):
        row.update({k: float(v) for k, v in jax.device_get(dict(eval_fn(state))).items()})
      first = False
      rows.append(row)
      if log:
        log.append(row)
      if out_dir and (last or (checkpoint_every and iteration % checkpoint_every == 0)):
        if manager is None:
          manager = checkpoint_manager(out_dir, max_to_keep=keep_checkpoints)
        _save_step(manager, iteration, state, {"iteration": iteration, "env_steps": env_steps,
                                               "wall_time": elapsed, "config": config_dict})
      bar.update(min(env_steps, total_env_steps) - bar.n)
      bar.set_postfix(_postfix(last_values(rows), postfix_keys), refresh=False)
  finally:
    if manager is not None:
      manager.close()  # waits for the saves in flight
    bar.close()
  if out_dir and rows:
    plot_learning_curve(rows, os.path.join(out_dir, CURVE_FILE), y=plot_y,
                        title=desc, meta=meta[:2])
  return rows


def last_values(rows: Sequence[Mapping[str, Any]]) -> dict:
  """The last row, keys absent or nan there (e.g. evaluation) taken from the last 50 rows."""
  out: dict = {}
  for row in rows[-50:]:
    for k, v in row.items():
      if not (isinstance(v, float) and math.isnan(v)):
        out[k] = v
  return out


# ----------------------------------------------------------------------------------------------
# Plots.


def _series(rows: Sequence[Mapping[str, Any]], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
  pts = [(r[x], r[y]) for r in rows if isinstance(r.get(y), (int, float))
         and isinstance(r.get(x), (int, float)) and math.isfinite(r[y])]
  if not pts:
    return np.zeros(0), np.zeros(0)
  xs, ys = zip(*pts, strict=True)
  return np.asarray(xs, float), np.asarray(ys, float)


def _figure(ncols: int):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.6), squeeze=False)
  return plt, fig, axes[0]


def _save(plt, fig, path: str, meta: Sequence[str]) -> None:
  if meta:
    fig.text(0.01, 0.01, " | ".join(meta), fontsize=6, color="0.4")
  fig.tight_layout(rect=(0, 0.04 if meta else 0, 1, 1))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)


def plot_learning_curve(rows: Sequence[Mapping[str, Any]], path: str, *,
                        y: str | Sequence[str] = "mean_return", title: str = "",
                        meta: Sequence[str] = ()) -> None:
  """Two panels: `y` against `env_steps` and against `wall_time` (seconds); saved as a PNG.

  `y` is a row key or several (drawn on the same axes, e.g. win / draw / loss rates). Long noisy
  series (60 points or more) are drawn faint with a bold running mean over ~2% of the run.
  """
  keys = [y] if isinstance(y, str) else list(y)
  plt, fig, axes = _figure(2)
  for ax, x, label in ((axes[0], "env_steps", "environment steps"),
                       (axes[1], "wall_time", "wall-clock time (s)")):
    for key in keys:
      xs, ys = _series(rows, x, key)
      if len(xs) < 60:
        ax.plot(xs, ys, marker=".", label=key)
      else:
        window = max(2, len(xs) // 50)
        smooth = np.convolve(ys, np.ones(window) / window, mode="valid")
        (line,) = ax.plot(xs, ys, alpha=0.3, linewidth=0.8)
        ax.plot(xs[window - 1:], smooth, color=line.get_color(),
                label=f"{key}, mean of {window}")
    ax.legend(fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel(keys[0] if len(keys) == 1 else "")
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title, fontsize=10)
  _save(plt, fig, path, meta)


def _interpolate(runs: Sequence[tuple[np.ndarray, np.ndarray]], num: int = 100):
  """Runs resampled on a common grid over the union of their x ranges (nan outside a run)."""
  runs = [(x, y) for x, y in runs if len(x)]
  lo = min(x[0] for x, _ in runs)
  hi = max(x[-1] for x, _ in runs)
  grid = np.linspace(lo, hi, num) if hi > lo else np.asarray([lo])
  return grid, np.stack([np.where((grid >= x[0]) & (grid <= x[-1]), np.interp(grid, x, y),
                                  np.nan) for x, y in runs])


# Statistics over seeds. rliable (`rliable.metrics.aggregate_iqm`,
# `rliable.library.get_interval_estimates`) is the usual tool, but it does not import next to
# pandas 3: its dependency arch 7.2 calls pandas' `deprecate_kwarg` with the old signature
# (TypeError at import). The same estimates come from scipy: the IQM is `trim_mean(x, 0.25)`
# (what `aggregate_iqm` computes) and the interval a percentile bootstrap over runs (rliable's
# default method; with one task its stratified bootstrap is this plain one).

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def iqm(values, axis: int = 0):
  """Interquartile mean along `axis`: the mean of the middle 50 % (25 % cut at each end)."""
  from scipy import stats

  return stats.trim_mean(values, 0.25, axis=axis)


def iqm_and_ci(values, *, confidence: float = CONFIDENCE,
               n_resamples: int = BOOTSTRAP_RESAMPLES,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(iqm, low, high)` over the runs (axis 0) of `values` `[runs, ...]`.

  `low`, `high` bound the `confidence` percentile-bootstrap interval of the IQM, resampling
  runs. Non-finite entries (a run that does not reach a point) are left out of that point's
  statistics; a point with one finite run has that run's value as IQM and a nan interval.
  """
  from scipy import stats

  values = np.asarray(values, float)
  flat = values.reshape(values.shape[0], -1)
  out = np.full((3, flat.shape[1]), np.nan)
  finite = np.isfinite(flat)
  # One bootstrap per pattern of runs present (usually one: every run everywhere).
  for pattern in {tuple(column) for column in finite.T}:
    runs = np.asarray(pattern)
    if not runs.any():
      continue
    cols = (finite == runs[:, None]).all(0)
    data = flat[runs][:, cols]
    out[0, cols] = iqm(data, axis=0)
    if len(data) > 1:
      result = stats.bootstrap(
          (data,), lambda x, axis: iqm(x, axis=axis), n_resamples=n_resamples,
          confidence_level=confidence, method="percentile", axis=0, vectorized=True,
          rng=np.random.default_rng(seed))
      out[1, cols], out[2, cols] = result.confidence_interval
  center, low, high = (o.reshape(values.shape[1:]) for o in out)
  return center, low, high


def plot_bands(curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], path: str, *,
               y: str = "mean_return", xs: Sequence[tuple[str, str]] = (
                   ("env_steps", "environment steps"), ("wall_time", "wall-clock time (s)")),
               band: str = "minmax", title: str = "", meta: Sequence[str] = ()) -> None:
  """One panel per x key: a curve of `y` over seeds with a band around it, per label.

  `band="minmax"`: the mean with the min-max band; `"std"`: the mean ± std; `"iqm"`: the
  interquartile mean with its 95 % percentile-bootstrap interval over seeds (`iqm_and_ci`).
  `curves[label]` is a list of runs (one per seed), each a list of metric rows. Runs are
  interpolated onto a common grid over the union of their x ranges; where only some runs reach
  (the end of the wall-clock axis), the statistics are over those.
  """
  plt, fig, axes = _figure(len(xs))
  for (x, xlabel), ax in zip(xs, axes, strict=True):
    for label, runs in curves.items():
      series = [_series(rows, x, y) for rows in runs]
      if not any(len(s[0]) for s in series):
        continue
      grid, values = _interpolate(series)
      # Where only some runs cover x (e.g. wall-clock ends), statistics are over those runs.
      covered = np.isfinite(values).any(0)
      grid, values = grid[covered], values[:, covered]
      mean = np.nanmean(values, 0)
      if band == "iqm":
        mean, low, high = iqm_and_ci(values)
      elif band == "std":
        low, high = mean - np.nanstd(values, 0), mean + np.nanstd(values, 0)
      else:
        low, high = np.nanmin(values, 0), np.nanmax(values, 0)
      (line,) = ax.plot(grid, mean, label=f"{label} (n={len(values)})")
      ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  _save(plt, fig, path, meta)


# ----------------------------------------------------------------------------------------------
# AlphaZero training pieces (jittable).


def bootstrapped_returns(rewards, discounts, values_next, ended):
  """Returns `[T, B]` to the end of a rollout segment, bootstrapped with the network there.

  `G_t = r_t + d_t · (v_{t+1} if ended_t or t = T-1 else G_{t+1})`, where `d_t` is the discount
  of step `t` (`γ·discount` for single-agent tasks, `-1` per ply for two-player zero-sum games; 0
  at a termination), `v_{t+1}` the network value of the observation that followed step `t`
  (before any auto-reset) and `ended_t` whether the episode ended at `t`. An episode that ends
  inside the segment thus gets its Monte Carlo return.

  Args:
    rewards, discounts, values_next: `[T, B]` floats.
    ended: `[T, B]` booleans.
  """
  def backward(next_return, xs):
    reward, discount, value_next, end = xs
    g = reward + discount * jnp.where(end, value_next, next_return)
    return g, g

  _, returns = jax.lax.scan(backward, values_next[-1], (rewards, discounts, values_next, ended),
                            reverse=True)
  return returns


def alphazero_loss(params, apply_fn, batch, value_coef: float = 1.0):
  """`(loss, aux)`: cross-entropy to the search's `action_weights` + `value_coef` · MSE/2.

  `batch` holds `obs` (what `apply_fn(params, obs) -> (logits [N, A], value [N])` takes),
  `policy` `[N, A]` (the search's `action_weights`) and `return` `[N]`.
  """
  import optax

  logits, value = apply_fn(params, batch["obs"])
  policy_loss = optax.softmax_cross_entropy(logits, batch["policy"]).mean()
  value_loss = 0.5 * jnp.mean((value - batch["return"]) ** 2)
  loss = policy_loss + value_coef * value_loss
  return loss, {"policy_loss": policy_loss, "value_loss": value_loss}


def make_alphazero_update(apply_fn, optimizer, *, num_updates: int, batch_size: int,
                          value_coef: float = 1.0) -> Callable:
  """`update(params, opt_state, data, rng_key) -> (params, opt_state, mean losses)`.

  `num_updates` optimiser steps, each on `batch_size` samples drawn without replacement from
  `data` (`obs`, `policy`, `return`, leading dimension `N`), minimising `alphazero_loss`.
  """
  import optax

  def update(params, opt_state, data, rng_key):
    num = jax.tree.leaves(data)[0].shape[0]
    size = min(batch_size, num)

    def sgd_step(carry, key):
      params, opt_state = carry
      idx = jax.random.choice(key, num, (size,), replace=False)
      batch = jax.tree.map(lambda x: x[idx], data)
      (loss, aux), grads = jax.value_and_grad(alphazero_loss, has_aux=True)(
          params, apply_fn, batch, value_coef)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state), {"loss": loss, **aux}

    (params, opt_state), metrics = jax.lax.scan(
        sgd_step, (params, opt_state), jax.random.split(rng_key, num_updates))
    return params, opt_state, jax.tree.map(jnp.mean, metrics)

  return update
