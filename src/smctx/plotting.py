"""A picture of one search: what `SearchDiagnostics` measured, for one root.

Needs matplotlib (`pip install smctx[examples]`); smctx itself does not import it.

```python
out = smctx.tsmcts_policy(params, key, root, recurrent_fn, num_simulations=64)
fig = smctx.plotting.plot_diagnostics(out, root_index=0)
fig.savefig("search.png")
```
"""

from __future__ import annotations

from typing import Any

import numpy as np


def plot_diagnostics(policy_output: Any, root_index: int = 0, *, title: str | None = None):
  """Draws one root's diagnostics in three panels and returns the matplotlib `Figure`.

  Panels: the effective sample size after each sequential step (with the
  width as a dashed line and resampling steps marked); the distinct actions the
  particles carry after each step (root actions for SMC/SMCTS, second actions
  for TSMCTS); and the particles given to each root action in each Sequential
  Halving iteration (one bar group per iteration; SMC/SMCTS have one).

  Args:
    policy_output: what an smctx policy returned (its `search_tree.extra_data`
      is a `smctx.SearchDiagnostics`).
    root_index: the row of the batch to draw.
    title: the figure's title; None: the width, depths and evaluations.
  """
  import matplotlib.pyplot as plt  # optional dependency, imported on use

  d = policy_output.search_tree.extra_data
  take = lambda x: np.asarray(x)[root_index]
  ess, distinct, resampled = take(d.ess), take(d.distinct_actions), take(d.resampled)
  per_action, depths = take(d.particles_per_action), take(d.depth)
  width, evaluations = int(take(d.num_particles)), int(take(d.num_evaluations))
  steps = np.arange(1, ess.shape[0] + 1)

  fig, (ax_ess, ax_distinct, ax_halving) = plt.subplots(1, 3, figsize=(13, 3.6))
  ax_ess.plot(steps, ess, marker="o", label="ESS")
  ax_ess.axhline(width, color="gray", linestyle="--", label=f"width N = {width}")
  if resampled.any():
    ax_ess.plot(steps[resampled], ess[resampled], "x", color="tab:red", markersize=9,
                label="resampled")
  ax_ess.set(xlabel="sequential step", ylabel="effective sample size", ylim=(0, width * 1.08))
  ax_ess.legend(fontsize=8)

  ax_distinct.step(steps, distinct, where="mid")
  ax_distinct.set(xlabel="sequential step", ylabel="distinct actions carried")

  iterations, num_actions = per_action.shape
  bar = 0.8 / iterations
  for k in range(iterations):
    ax_halving.bar(np.arange(num_actions) + k * bar, per_action[k], width=bar,
                   label=f"iteration {k + 1} (depth {int(depths[k])})")
  ax_halving.set(xlabel="root action", ylabel="particles")
  ax_halving.legend(fontsize=8)
  fig.suptitle(title or (f"root {root_index}: width {width}, depths "
                         f"{tuple(int(t) for t in depths)}, {evaluations} evaluations"))
  fig.tight_layout()
  return fig
