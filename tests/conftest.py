"""Test-wide settings.

XLA compile time dominates the default run on a 2-core CPU, and almost all of
it goes to optimisation passes. The tests check what a search computes, not
how fast, so they run with XLA's optimisations mostly off (measured: half the
CPU time of `tests/test_semantics.py`, same results), and with XLA:CPU's older
elemental code generator instead of its MLIR fusion emitters
(`--xla_cpu_use_fusion_emitters=false`), which compiles a TSMCTS program in
0.76 instead of 1.80 s (tabular model, batch 4, 64 simulations). Set
`SMCTX_TEST_XLA_OPTIMIZE=1` to run them on fully optimised programs with the
default code generator; the benchmarks always do.
"""

import os

import jax

if os.environ.get("SMCTX_TEST_XLA_OPTIMIZE", "0") != "1":
  jax.config.update("jax_disable_most_optimizations", True)
  # Read when the CPU backend starts, after this file is imported (no array exists yet).
  # jaxlib 0.6-0.10 know the flag; should a later one drop it, XLA stops with "Unknown
  # flags in XLA_FLAGS" and this line goes.
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_use_fusion_emitters=false"]).strip()
