"""Reproducibility checks of the paper's claims: `python -m pytest -m repro -s`.

Every test here carries the `repro` marker and prints the measurement it
makes (run with `-s` to see it), so a run of the suite is also a report.
"""

import json

import pytest


def pytest_collection_modifyitems(items):
  for item in items:
    if "tests/repro/" in str(item.fspath).replace("\\", "/"):
      item.add_marker(pytest.mark.repro)


@pytest.fixture
def report(record_property):
  """Prints rows of a measurement and attaches them to the test's junit record."""

  def _report(title, rows):
    print(f"\n== {title}")
    for row in rows:
      print("   " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in row.items()))
    record_property(title, json.dumps(rows))

  return _report
