"""The example scripts of `examples/`, loaded for their tests (one loader for every test module).

The examples import `_common` by name, so each is loaded from `examples/` with importlib and
registered in `sys.modules` under its own name.
"""

import importlib.util
import pathlib
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
# Halves XLA's CPU compile time for these per-call options (the tests check behaviour, not speed).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def load(name: str):
  """The module `examples/<name>.py`, loaded once per process."""
  if name in sys.modules and getattr(sys.modules[name], "__file__", "").startswith(str(EXAMPLES)):
    return sys.modules[name]
  spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module
