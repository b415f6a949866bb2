"""Search comparison on a built-in MDP with known optimal values.

Runs `mctx.gumbel_muzero_policy`, `smctx.smc_policy`, `smctx.smcts_policy`
and `smctx.tsmcts_policy` at equal budgets on random tabular MDPs (exact
`Q*` and `V*` by value iteration; the "network" is a noisy value and a weak
prior) and prints, per algorithm and budget:

* regret: `V*(s) − Q*(s, action)` of the chosen action, mean over roots;
* value error: `|search value − V*(s)|`, mean over roots;
* sequential calls: `recurrent_fn` calls of one search, counted by a host
  callback in a wrapped model (not taken from the library's arithmetic);
* time per search call (batch of all roots, after compilation, median).

Usage: `python -m smctx.demo [--budgets 16 64 256] [--seeds 2] [--mdps 2]`.
"""

from __future__ import annotations

import argparse
import time

import jax
import mctx
import numpy as np

import smctx
from smctx import experiments
from smctx import tabular

ALGORITHMS = {
    "gumbel_muzero (mctx)": mctx.gumbel_muzero_policy,
    "smc": smctx.smc_policy,
    "smcts": smctx.smcts_policy,
    "tsmcts": smctx.tsmcts_policy,
}


def make_problems(num_mdps: int, num_states: int, num_actions: int):
  return [tabular.random_mdp(seed, num_states, num_actions, discount=0.9, value_noise=0.5,
                             prior_noise=1.0, prior_quality=1.0) for seed in range(num_mdps)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--budgets", type=int, nargs="+", default=[16, 64, 256])
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--mdps", type=int, default=2)
  parser.add_argument("--states", type=int, default=200)
  parser.add_argument("--actions", type=int, default=8)
  args = parser.parse_args(argv)

  mdps = make_problems(args.mdps, args.states, args.actions)
  q_star, v_star = tabular.solve(mdps[0])
  prior = jax.nn.softmax(mdps[0].prior_logits, axis=-1)
  print(f"{args.mdps} random MDPs, {args.states} states x {args.actions} actions, discount 0.9; "
        f"{args.states} roots per search, {args.seeds} seeds.")
  print(f"Network: values V* + noise (0.5 std(V*)), weak prior; regret of sampling the prior: "
        f"{np.mean(v_star - np.sum(np.asarray(prior) * q_star, -1)):.3f} (first MDP).")
  header = (f"{'algorithm':22s} {'budget':>6s} {'regret':>8s} {'value err':>9s} "
            f"{'seq. calls':>10s} {'ms/search':>9s}")
  print(header)
  print("-" * len(header))
  started = time.perf_counter()
  for budget in args.budgets:
    for name, policy in ALGORITHMS.items():
      (row,) = experiments.regret(mdps, {name: policy}, budgets=[budget], seeds=args.seeds,
                                  timing_repeats=3)
      calls = experiments.sequential_calls(policy, budget)["sequential_calls"]
      print(f"{name:22s} {budget:6d} {row['action_regret']:8.3f} {row['value_error']:9.3f} "
            f"{calls:10d} {1e3 * row['seconds']:9.2f}", flush=True)
  print(f"({time.perf_counter() - started:.0f} s; lower regret and value error are better; "
        f"jax {jax.__version__} on {jax.devices()[0].platform})")


if __name__ == "__main__":
  main()
