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
import subprocess
import sys

import jax

ELEMENTAL_CODEGEN = "--xla_cpu_use_fusion_emitters=false"


def _xla_knows(flag: str) -> bool:
  """Whether this jaxlib's XLA accepts `flag` (an unknown flag stops the process), checked
  once in a subprocess; pytest-xdist workers inherit the answer in the environment."""
  variable = "SMCTX_TEST_XLA_KNOWS_" + "".join(c if c.isalnum() else "_" for c in flag).upper()
  known = os.environ.get(variable)
  if known is None:
    env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
    check = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                           capture_output=True, check=False)
    known = os.environ[variable] = str(int(check.returncode == 0))
  return known == "1"


if os.environ.get("SMCTX_TEST_XLA_OPTIMIZE", "0") != "1":
  jax.config.update("jax_disable_most_optimizations", True)
  # XLA_FLAGS is read when the backend starts, after this file is imported (no array exists
  # yet). A jaxlib without the older generator runs the tests with its default one.
  flags = os.environ.get("XLA_FLAGS", "")
  if ELEMENTAL_CODEGEN not in flags and _xla_knows(ELEMENTAL_CODEGEN):
    os.environ["XLA_FLAGS"] = f"{flags} {ELEMENTAL_CODEGEN}".strip()
