"""Test-wide settings.

XLA compile time dominates the default run on a 2-core CPU, and almost all of
it goes to optimisation passes. The tests check what a search computes, not
how fast, so they run with XLA's optimisations mostly off (measured: half the
CPU time of `tests/test_semantics.py`, same results). Set
`SMCTX_TEST_XLA_OPTIMIZE=1` to run them on fully optimised programs; the
benchmarks always do.
"""

import os

import jax

if os.environ.get("SMCTX_TEST_XLA_OPTIMIZE", "0") != "1":
  jax.config.update("jax_disable_most_optimizations", True)
