# ruff: noqa: E501 (the HLO module below keeps XLA's one instruction per line)
"""The kernel counting and phase attribution of `benchmarks/speed.py`, on hand-written HLO.

`--mode kernels` and `--mode profile` read the optimised HLO text of a search: the
loop with the largest body, its branches and nested loops, and each kernel's phase
from the `jax.named_scope` in its `op_name`. The module below is written by hand so
that the expected counts are known without XLA: a small loop (3 instructions) and
the search loop, whose body holds a fusion of the model, a conditional with two
branches (one of which runs a rolled random-number loop), a carry copy, a dot and a
multi-output fusion whose tuple shape carries XLA's `/*index=5*/` comment.
"""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip(
    "matplotlib",
    reason="the benchmark draws with matplotlib (examples extra): pip install -e '.[examples]'")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import speed  # noqa: E402

OP = 'metadata={{op_name="jit(search)/while/body/closed_call/{}"}}'
HLO = f"""HloModule jit_search

%fused_model (param_0: f32[4]) -> f32[4] {{
  %param_0 = f32[4]{{0}} parameter(0)
  ROOT %exp.1 = f32[4]{{0}} exponential(%param_0), {OP.format("model/exp")}
}}

%small_body (p: (s32[], f32[4])) -> (s32[], f32[4]) {{
  %p = (s32[], f32[4]{{0}}) parameter(0)
  %gte.1 = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], f32[4]{{0}}) tuple(%gte.1, %gte.1)
}}

%small_cond (p: (s32[], f32[4])) -> pred[] {{
  %p = (s32[], f32[4]{{0}}) parameter(0)
  ROOT %lt = pred[] constant(false)
}}

%threefry_body (p: (s32[], u32[4])) -> (s32[], u32[4]) {{
  %p = (s32[], u32[4]{{0}}) parameter(0)
  %add_fusion.1 = u32[4]{{0}} fusion(%p), kind=kLoop, calls=%fused_model, {OP.format("cond/branch_1_fun/resampling/jit(_uniform)/while/body/add")}
  %xor_fusion.1 = u32[4]{{0}} fusion(%p), kind=kLoop, calls=%fused_model, {OP.format("cond/branch_1_fun/resampling/jit(_uniform)/while/body/xor")}
  ROOT %t = (s32[], u32[4]{{0}}) tuple(%p, %add_fusion.1)
}}

%threefry_cond (p: (s32[], u32[4])) -> pred[] {{
  %p = (s32[], u32[4]{{0}}) parameter(0)
  ROOT %lt.2 = pred[] constant(false)
}}

%branch_inner (p: f32[4]) -> f32[4] {{
  %p = f32[4]{{0}} parameter(0)
  %w.3 = (s32[], u32[4]{{0}}) while(%p), condition=%threefry_cond, body=%threefry_body, {OP.format("cond/branch_1_fun/resampling/jit(_uniform)/while")}
  %backup_fusion = f32[4]{{0}} fusion(%p), kind=kLoop, calls=%fused_model, {OP.format("cond/branch_1_fun/backup/add")}
  ROOT %copy.9 = f32[4]{{0}} copy(%backup_fusion)
}}

%branch_root (p: f32[4]) -> f32[4] {{
  %p = f32[4]{{0}} parameter(0)
  ROOT %reroot_fusion = f32[4]{{0}} fusion(%p), kind=kLoop, calls=%fused_model, {OP.format("cond/branch_0_fun/rerooting/mul")}
}}

%search_body (p: (s32[], f32[4])) -> (s32[], f32[4]) {{
  %p = (s32[], f32[4]{{0}}) parameter(0)
  %gte.2 = f32[4]{{0}} get-tuple-element(%p), index=1
  %model_fusion = f32[4]{{0}} fusion(%gte.2), kind=kLoop, calls=%fused_model, {OP.format("model/exp")}
  %pick = pred[] constant(true)
  %cond.1 = f32[4]{{0}} conditional(%pick, %model_fusion, %model_fusion), true_computation=%branch_root, false_computation=%branch_inner, {OP.format("cond")}
  %dot.4 = f32[4]{{0}} dot(%cond.1, %cond.1), {OP.format("dot_general")}
  %multi_fusion = (f32[4]{{0}}, f32[4]{{0}}, f32[4]{{0}}, f32[4]{{0}}, f32[4]{{0}}, /*index=5*/f32[4]{{0}}) fusion(%dot.4), kind=kLoop, calls=%fused_model, {OP.format("weighting/add")}
  %copy.1 = f32[4]{{0}} copy(%dot.4)
  ROOT %t = (s32[], f32[4]{{0}}) tuple(%p, %copy.1)
}}

%search_cond (p: (s32[], f32[4])) -> pred[] {{
  %p = (s32[], f32[4]{{0}}) parameter(0)
  ROOT %lt.3 = pred[] constant(false)
}}

ENTRY %main (a: f32[4]) -> f32[4] {{
  %a = f32[4]{{0}} parameter(0)
  %w.1 = (s32[], f32[4]{{0}}) while(%a), condition=%small_cond, body=%small_body
  %w.2 = (s32[], f32[4]{{0}}) while(%a), condition=%search_cond, body=%search_body
  ROOT %gte.9 = f32[4]{{0}} get-tuple-element(%w.2), index=1
}}
"""


def test_phase_of_reads_the_outermost_phase_scope_of_an_op_name():
  assert speed.phase_of("jit(search)/while/body/cond/branch_1_fun/rerooting/jit(_gumbel)/log") \
      == "rerooting"
  assert speed.phase_of("jit(search)/while/body/end_iteration/model/exp") == "end_iteration"
  assert speed.phase_of("jit(search)/while/body/closed_call/select_n") == "loop"
  # A scope is a whole path component: `model_x` or `my_model` is not `model`.
  assert speed.phase_of("jit(search)/my_model/model_x/add") == "loop"
  assert speed.phase_of("") == "loop"


def test_loop_kernels_counts_the_search_loop_with_its_branches_and_nested_loops():
  counts = speed.loop_kernels(HLO)
  # The search loop's body (not the 3-instruction one): 2 fusions, conditional, dot, copy;
  # the inner branch: while, fusion, copy; its rolled loop: 2 fusions; the root branch: 1
  # fusion. Parameters, tuples, get-tuple-elements and constants launch nothing.
  assert counts["loop_fusion"] == 6
  assert counts["loop_conditional"] == 1
  assert counts["loop_while"] == 1
  assert counts["loop_dot"] == 1
  assert counts["loop_copy"] == 2
  assert counts["loop_kernels"] == 11
  # One step takes one branch: the body's 5 and the root branch's 1, or the inner one's 5.
  assert counts["loop_kernels_lightest"] == 6
  assert counts["loop_kernels_heaviest"] == 10
  # Phases count the computing kernels only (no loops, branches or copies).
  assert counts["phase_model"] == 1
  assert counts["phase_weighting"] == 1
  assert counts["phase_resampling"] == 2
  assert counts["phase_backup"] == 1
  assert counts["phase_rerooting"] == 1
  assert counts["phase_loop"] == 1  # the dot, outside every phase
  assert sum(counts[f"phase_{p}"] for p in speed.PHASES) == 7
  # The whole program's instructions: every indented definition of every computation.
  defined = [line for line in HLO.splitlines() if line.startswith(("  %", "  ROOT %"))]
  assert counts["hlo_instructions"] == len(defined) == 34


def test_instruction_table_maps_every_instruction_to_its_opcode_and_op_name():
  table = speed.instruction_table(HLO)
  assert table["model_fusion"] == ("fusion", "jit(search)/while/body/closed_call/model/exp")
  assert table["w.3"][0] == "while"
  assert table["add_fusion.1"] == (
      "fusion", "jit(search)/while/body/closed_call/cond/branch_1_fun/resampling/jit(_uniform)"
      "/while/body/add")
  assert table["p"][0] == "parameter"
  assert table["multi_fusion"] == ("fusion", "jit(search)/while/body/closed_call/weighting/add")


def test_kernel_events_by_phase_sums_each_kernels_time_and_counts_kernels_run():
  table = speed.instruction_table(HLO)
  # Two calls: each runs the model, the inner branch with two trips of its rolled loop,
  # the carry copies and the dot; the loops and the branch themselves are events too,
  # and so is one of the runtime's own (not an instruction of the program).
  one_call = [("model_fusion", 1000), ("w.2", 9000), ("cond.1", 5000), ("w.3", 3000),
              ("add_fusion.1", 100), ("xor_fusion.1", 100), ("add_fusion.1", 300),
              ("xor_fusion.1", 300), ("backup_fusion", 200), ("copy.9", 50), ("dot.4", 400),
              ("copy.1", 50), ("ThunkExecutor::Execute", 7000)]
  result = speed.kernel_events_by_phase(one_call * 2, table, repeats=2)
  assert result["time_model"] == pytest.approx(1e-6)
  assert result["time_resampling"] == pytest.approx(0.8e-6)  # 2 trips of 2 fusions
  # The copies (no `op_name`) and the dot are in no phase: `loop`.
  assert result["time_backup"] == pytest.approx(0.2e-6)
  assert result["time_loop"] == pytest.approx(0.5e-6)
  assert result["time_rerooting"] == 0.0
  assert result["time_kernels"] == pytest.approx(2.5e-6)
  # Per call: 1 model + 4 random-number + 1 backup + 1 dot + 2 copies; no loop or branch.
  assert result["kernels_run"] == 9
  assert result["kernels_run_copies"] == 2
  assert result["conditionals_run"] == 1  # `cond.1`, once a call


def test_go_mode_is_the_go_sized_configuration_and_stays_out_of_the_other_modes():
  # The Go-sized target: 362 actions, batch 64, 800 simulations, N = 16.
  configs = speed.configurations("go", ["go"], list(speed.ALGORITHMS))
  assert sorted(configs) == sorted([("go", "smc", 64, 800, 16), ("go", "smcts", 64, 800, 16),
                                    ("go", "tsmcts", 64, 800, 16), ("go", "mctx", 64, 800, None)])
  params, root_fn, _ = speed.MODELS["go"]()
  assert root_fn(params, 2).prior_logits.shape == (2, 362)
  assert "go" not in speed.DEFAULT_MODELS
