"""A/B of step changes that ran fewer kernels on CPU but were not kept (issue 24), and of one
that was kept (`root_step_cond` undoes it).

`docs/performance.md` lists changes to the search's step that ran fewer kernels and were no
faster on the 2-core CPU, where a kernel costs its arithmetic rather than its launch, and
marks them as "worth an A/B where a GPU is lent". This script is that A/B. Each variant is
applied as a patch of one library function while the search is traced; the library's files
are unchanged. The script checks each variant's outputs against the unchanged search and times
every program in one process, alternating a round at a time: the model-call floor and each search
as it is and with each variant (mctx, much slower, is timed before them, `--mctx-rounds` calls).

Variants:
  baseline          the search as it is.
  dense_slot_sums   `segments.run_sum` (TSMCTS's per-slot backup, a segmented scan of about ten
                    kernels) as one masked reduction over `[B, N, S]` (S <= 32 slots); equal up
                    to the order of the sums.
  sample_no_max     next actions from `exp(logits)`, without subtracting each row's maximum again
                    (sanitised logits already have maximum 0; a row of only the lowest logit is
                    drawn uniformly, as before); bit-identical.
  skip_resampling   resampling under a `lax.cond` that skips it at steps where no group of the
                    batch needs it (a TSMCTS search resamples somewhere at 38 % of its steps);
                    bit-identical.
  flat_model_call   `recurrent_fn` called once on `[B*N]` rows with the first slice key, as the
                    floor calls it. This is NOT the library's contract (mctx's `[B]` rows and one
                    key per particle slice); the outputs are the same for this deterministic
                    model. It measures what that contract costs (4-5 % on the CPU).
  segment_loops     TSMCTS's steps as a loop of segments (the steps up to an iteration boundary)
                    around a loop of steps: the boundary runs once a segment in the outer loop,
                    and an ordinary step no longer carries its conditional (XLA:GPU may read
                    every conditional's predicate on the host); bit-identical.
  root_step_cond    TSMCTS's root step and inner step as the two branches of a `lax.cond` in
                    every layout, as before `Schedule.selects_root_step` had them computed
                    and selected where root steps are few (one conditional less in every
                    step: on a GPU, XLA's `ConditionalThunk` copies each predicate to the
                    host and waits for the device); equal up to rounding (XLA fuses the two
                    programs differently).

Each row reports the median seconds per search and the paired ratio to the unchanged search
(`ratio`: mean over rounds of variant / baseline, with its standard error), search/floor and
speedup over mctx, the kernels of the compiled per-step loop (`speed.loop_kernels`: for
`segment_loops` that is the loop of segments with the loop of steps inside it, so not the same
count as its baseline's), and the
check against the baseline: `identical` (every output array bit-equal), `actions_equal` (the
fraction of equal actions) and `max_weight_diff` (largest difference in `action_weights`).

Usage:
  python benchmarks/ab_variants.py                    # mlp, batch 64, budget 256 (about a minute)
  python benchmarks/ab_variants.py --models mlp,tabular --batches 1,64 --rounds 100  # the CPU CSV
  python benchmarks/ab_variants.py --batches 256 --rounds 100   # GPU (`benchmarks/gpu.sh`, ab)

It writes `ab_variants_<device>.csv` and `ab_variants_<device>.png` into `--out`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import sys

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed  # noqa: E402
from claims import metadata  # noqa: E402
from claims import write_csv  # noqa: E402
from smctx._src import draws, engine, particles, segments, tsmcts  # noqa: E402

ALGORITHMS = ("smcts", "tsmcts")


def dense_slot_sums(original):
  def run_sum(data, segment_ids, num_segments):
    if num_segments > segments.DENSE_MAX_SEGMENTS:
      return original(data, segment_ids, num_segments)
    member = segment_ids[..., None] == jnp.arange(num_segments)  # [B, N, S]
    member = member.reshape(member.shape[:2] + (1,) * (data.ndim - 2) + member.shape[2:])
    summed = jnp.sum(jnp.where(member, data[..., None], 0), axis=1)  # [B, ..., S]
    return jnp.moveaxis(summed, -1, 1)
  return run_sum


def sample_no_max(original):
  def sample_actions(rng_key, prior_logits, uniform=None):
    # Sanitised logits have maximum 0 (mass 1 there), or every entry the lowest float32,
    # whose exp is 0: such a row is drawn uniformly, as `exp(logits - max)` would.
    num_actions = prior_logits.shape[-1]
    if num_actions > particles.MATMUL_CUMSUM_MAX_ACTIONS:  # the original sums with `cumsum`
      return original(rng_key, prior_logits, uniform)
    mass = jnp.exp(prior_logits)
    upper = jnp.triu(jnp.ones((num_actions, num_actions), mass.dtype))
    cdf = jnp.einsum("...a,ac->...c", mass, upper, precision=jax.lax.Precision.HIGHEST)
    uniform_row = cdf[..., -1:] == 0
    index = jnp.arange(num_actions)
    cdf = jnp.where(uniform_row, (index + 1).astype(mass.dtype), cdf)
    has_mass = (mass > 0) | uniform_row
    if uniform is None:
      uniform = draws.uniform(rng_key, prior_logits.shape[:-1] + (1,))
    draw = jnp.min(jnp.where((cdf > uniform * cdf[..., -1:]) & has_mass, index, num_actions), -1)
    return jnp.minimum(draw, jnp.max(jnp.where(has_mass, index, 0), -1)).astype(jnp.int32)
  return sample_actions


def skip_resampling(original):
  def resample_within_groups(rng_key, state, config, allow_resample):
    if config.resample != "ess":
      return original(rng_key, state, config, allow_resample)
    ess, size = particles.group_ess(state.log_weight, state.group, config.num_groups)
    needed = (ess < config.ess_threshold * size) & (size > 0) & allow_resample

    def resample():
      # The original's own ESS is this one: XLA cannot share it across the branch, and the
      # change this measures would compute it once.
      group_ess = particles.group_ess
      particles.group_ess = lambda *_: (ess, size)
      try:
        return original(rng_key, state, config, allow_resample)
      finally:
        particles.group_ess = group_ess

    def skip():
      itself = jnp.broadcast_to(jnp.arange(state.group.shape[1], dtype=jnp.int32),
                                state.group.shape)
      return state, jnp.zeros_like(needed), ess, itself

    return jax.lax.cond(jnp.any(needed), resample, skip)
  return resample_within_groups


def flat_model_call(original):
  del original

  def over_particle_slices(fn, slice_keys, *trees):
    batch, width = jax.tree_util.tree_leaves(trees)[0].shape[:2]
    rows = jax.tree_util.tree_map(lambda x: x.reshape((batch * width,) + x.shape[2:]), trees)
    output = fn(slice_keys[0], *rows)
    return jax.tree_util.tree_map(lambda x: x.reshape((batch, width) + x.shape[1:]), output)
  return over_particle_slices


@dataclasses.dataclass(frozen=True)
class _NoBoundary(tsmcts.Schedule):
  """The schedule with no step at an iteration boundary: `search_step` then runs none."""

  @property
  def at_boundary(self) -> tuple[bool, ...]:
    return (False,) * self.num_steps


def segment_loops(original):
  def run_steps(loop_fn, num_steps, body, carry, batch_size, reference=()):
    if getattr(body, "func", None) is not tsmcts.search_step:
      return original(loop_fn, num_steps, body, carry, batch_size, reference)
    # `reference` matters only inside `shard_map`, which this harness does not run.
    ctx, keys, elimination_key = body.args
    # A segment: the steps up to and including the next boundary (every search ends at one).
    ends = [i for i, boundary in enumerate(ctx.schedule.at_boundary) if boundary]
    starts, ends = jnp.asarray([0] + [e + 1 for e in ends[:-1]]), jnp.asarray(ends)
    schedule = _NoBoundary(**{f.name: getattr(ctx.schedule, f.name)
                              for f in dataclasses.fields(ctx.schedule)})
    step = functools.partial(tsmcts.search_step, dataclasses.replace(ctx, schedule=schedule),
                             keys, elimination_key)
    def step_body(i, state):
      carry, table = state
      carry, diagnostics = step(i, carry)
      return carry, table.write(i, diagnostics)

    def segment_body(j, state):
      carry, table = loop_fn(starts[j], ends[j] + 1, step_body, state)
      diagnostics = table.read(ends[j])
      carry, distinct = tsmcts.iteration_boundary(ctx, carry, keys.at(ends[j]), ends[j],
                                                  elimination_key, diagnostics.distinct_actions)
      return carry, table.write(ends[j], diagnostics.replace(distinct_actions=distinct))

    table = engine.DiagnosticsTable.zeros(batch_size, num_steps)
    carry, table = loop_fn(0, len(ends), segment_body, (carry, table))
    return carry, table.columns()
  return run_steps


def root_step_cond(original):
  """TSMCTS's root and inner steps under a `lax.cond` in every layout (`selects_root_step`)."""
  del original
  return property(lambda schedule: False)


# name: (module, attribute, patch); the patch takes the original function.
VARIANTS = {
    "baseline": None,
    "dense_slot_sums": (segments, "run_sum", dense_slot_sums),
    "sample_no_max": (particles, "sample_actions", sample_no_max),
    "skip_resampling": (engine, "resample_within_groups", skip_resampling),
    "flat_model_call": (particles, "over_particle_slices", flat_model_call),
    "segment_loops": (engine, "run_steps", segment_loops),
    "root_step_cond": (tsmcts.Schedule, "selects_root_step", root_step_cond),
}


@contextlib.contextmanager
def patched(variant: str):
  if VARIANTS[variant] is None:
    yield
    return
  module, name, patch = VARIANTS[variant]
  original = getattr(module, name)
  setattr(module, name, patch(original))
  try:
    yield
  finally:
    setattr(module, name, original)


def compare(output, reference) -> dict:
  leaves = jax.tree_util.tree_leaves(output)
  reference_leaves = jax.tree_util.tree_leaves(reference)
  identical = len(leaves) == len(reference_leaves) and all(
      a.shape == b.shape and bool(jnp.all((a == b) | (jnp.isnan(a) & jnp.isnan(b))))
      for a, b in zip(leaves, reference_leaves, strict=False))
  return dict(identical=identical,
              actions_equal=float(jnp.mean(output.action == reference.action)),
              max_weight_diff=float(jnp.max(jnp.abs(output.action_weights
                                                    - reference.action_weights))))


def alternate(programs: list, rounds: int) -> np.ndarray:
  """`[rounds, len(programs)]` wall seconds, every program called once per round, in turn."""
  return np.array([[wall for wall, _ in speed.timed_round(programs)] for _ in range(rounds)])


def measure(model: str, batch: int, budget: int, num_particles: int, variants: list[str],
            rounds: int, mctx_rounds: int, on_compiled=None) -> list[dict]:
  """One row per search and variant; `on_compiled(rows)` is called before the timing."""
  params, root_fn, recurrent_fn = speed.MODELS[model]()
  key = jax.random.PRNGKey(0)
  search_args = (params, key, root_fn(params, batch))
  num_calls = budget // num_particles
  floor_args = (params, key, root_fn(params, batch * num_particles).embedding)
  floor, _, _ = speed.compile_program(speed.floor_program(recurrent_fn, num_calls), *floor_args)
  mctx_search, mctx_compile, _ = speed.compile_program(
      speed.search_program("mctx", recurrent_fn, budget, None), *search_args)
  jax.block_until_ready((floor(*floor_args), mctx_search(*search_args)))
  mctx_seconds = float(np.median(alternate([(mctx_search, search_args)], mctx_rounds)))
  programs, rows = [(floor, floor_args)], []
  for algorithm in ALGORITHMS:
    reference = None
    for variant in variants:
      with patched(variant):
        compiled, compile_s, _ = speed.compile_program(
            speed.search_program(algorithm, recurrent_fn, budget, num_particles), *search_args)
      output = jax.block_until_ready(compiled(*search_args))
      reference = output if variant == "baseline" else reference
      kernels = speed.loop_kernels(compiled.as_text())
      rows.append(dict(model=model, batch=batch, budget=budget, num_particles=num_particles,
                       algorithm=algorithm, variant=variant, compile_s=round(compile_s, 2),
                       mctx_compile_s=round(mctx_compile, 2),
                       loop_kernels=kernels.get("loop_kernels"),
                       loop_kernels_lightest=kernels.get("loop_kernels_lightest"),
                       hlo_instructions=kernels.get("hlo_instructions"),
                       **compare(output, reference)))
      programs.append((compiled, search_args))
      print(f"compiled {algorithm} {variant} ({compile_s:.1f} s)", flush=True)
  if on_compiled is not None:
    on_compiled(rows)
  seconds = alternate(programs, rounds)
  floor_seconds = float(np.median(seconds[:, 0]))
  for j, row in enumerate(rows, start=1):
    baseline = 1 + len(variants) * (ALGORITHMS.index(row["algorithm"]))
    ratio = seconds[:, j] / seconds[:, baseline]
    median = float(np.median(seconds[:, j]))
    q25, q75 = np.percentile(seconds[:, j], [25, 75])
    row.update(seconds=median, iqr=float(q75 - q25), rounds=rounds,
               ratio=float(np.mean(ratio)), ratio_se=float(np.std(ratio, ddof=1) / np.sqrt(rounds)),
               floor_seconds=floor_seconds, search_over_floor=median / floor_seconds,
               mctx_seconds=mctx_seconds, speedup_over_mctx=mctx_seconds / median)
  return rows


def plot(rows: list[dict], path: str, meta: list[str]) -> None:
  configs = sorted({(r["model"], r["batch"], r["budget"]) for r in rows})
  fig, axes = plt.subplots(1, len(configs), figsize=(3.6 * len(configs), 3.2), squeeze=False)
  for ax, (model, batch, budget) in zip(axes[0], configs, strict=True):
    for k, algorithm in enumerate(ALGORITHMS):
      mine = [r for r in rows if (r["model"], r["batch"], r["budget"], r["algorithm"])
              == (model, batch, budget, algorithm) and r["variant"] != "baseline"]
      y = np.arange(len(mine)) + 0.2 * (2 * k - 1)
      ax.barh(y, [r["ratio"] - 1 for r in mine], height=0.38, left=1,
              xerr=[2 * r["ratio_se"] for r in mine], label=algorithm,
              color=speed.COLORS[algorithm])
      ax.set_yticks(np.arange(len(mine)), [r["variant"] for r in mine], fontsize=7)
    ax.axvline(1, color="0.3", lw=0.8)
    ax.set_xlabel("time / unchanged search (± 2 s.e.)", fontsize=8)
    ax.set_title(f"{model}, batch {batch}, budget {budget}", fontsize=8)
    ax.legend(fontsize=7)
  speed.save(fig, path, meta)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="mlp", help="comma-separated: mlp, tabular")
  parser.add_argument("--batches", default="64")
  parser.add_argument("--budgets", default="256")
  parser.add_argument("--num-particles", type=int, default=16)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--rounds", type=int, default=40)
  parser.add_argument("--mctx-rounds", type=int, default=5)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  args = parser.parse_args(argv)
  variants = ["baseline"] + [v for v in args.variants.split(",") if v and v != "baseline"]
  models = [m for m in args.models.split(",") if m]
  unknown = (set(variants) - set(VARIANTS)) | (set(models) - set(speed.MODELS))
  if unknown:
    parser.error(f"unknown {sorted(unknown)}")
  ints = lambda text: [int(x) for x in text.split(",") if x]
  configs = [(m, b, n) for m in models for b in ints(args.batches) for n in ints(args.budgets)]
  meta = metadata("ab_variants")
  print("\n".join(meta))
  os.makedirs(args.out, exist_ok=True)
  slug, rows = speed.device_slug(), []
  path = f"{args.out}/ab_variants_{slug}.csv"
  for model, batch, budget in configs:
    # The rows are written once compiled (outputs and kernels), and again once timed, so that
    # a run stopped by a time limit keeps what it measured.
    done = list(rows)
    rows += measure(model, batch, budget, args.num_particles, variants, args.rounds,
                    args.mctx_rounds, on_compiled=lambda new, done=done: write_csv(
                        path, done + new, meta))
    write_csv(path, rows, meta)
    print(f"== {model}, batch {batch}, budget {budget}")
    for r in rows[-len(variants) * len(ALGORITHMS):]:
      print(f"{r['algorithm']:6s} {r['variant']:16s} {r['seconds'] * 1e3:8.2f} ms  "
            f"ratio {r['ratio']:.3f} ± {r['ratio_se']:.3f}  search/floor "
            f"{r['search_over_floor']:.2f}  vs mctx x{r['speedup_over_mctx']:.1f}  kernels "
            f"{r['loop_kernels']}  identical {r['identical']} (actions "
            f"{r['actions_equal']:.3f}, weights {r['max_weight_diff']:.1e})")
  plot(rows, f"{args.out}/ab_variants_{slug}.png", meta)
  return 0


if __name__ == "__main__":
  sys.exit(main())
