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
import jax.numpy as jnp
import mctx
import numpy as np

import smctx
from smctx import tabular

ALGORITHMS = {
    "gumbel_muzero (mctx)": mctx.gumbel_muzero_policy,
    "smc": smctx.smc_policy,
    "smcts": smctx.smcts_policy,
    "tsmcts": smctx.tsmcts_policy,
}


def count_sequential_calls(policy, mdp, num_simulations: int) -> int:
  """Runs one jitted search with a model that reports each call to the host."""
  root_fn, recurrent_fn = tabular.parametric_model(mdp.deterministic)
  calls = []

  def counted(params, rng_key, action, embedding):
    jax.debug.callback(lambda: calls.append(1), ordered=True)
    return recurrent_fn(params, rng_key, action, embedding)

  params = tabular.tables(mdp)
  out = jax.jit(lambda p, k: policy(p, k, root_fn(p, jnp.arange(4)), counted, num_simulations))(
      params, jax.random.PRNGKey(0))
  jax.block_until_ready(out)
  jax.effects_barrier()
  return len(calls)


def evaluate(policy, mdps, num_simulations: int, seeds: int, repeats: int = 3):
  """Mean regret, value error and median seconds per search over MDPs and seeds.

  MDPs must share their shape: their tables travel as `params`, so the search
  compiles once.
  """
  root_fn, recurrent_fn = tabular.parametric_model(all(m.deterministic for m in mdps))
  states = jnp.arange(mdps[0].num_states)
  search = jax.jit(lambda params, key: policy(
      params, key, root_fn(params, states), recurrent_fn, num_simulations))
  regrets, errors, seconds = [], [], []
  for mdp in mdps:
    params = tabular.tables(mdp)
    q_star, v_star = tabular.solve(mdp)
    for seed in range(seeds):
      out = jax.block_until_ready(search(params, jax.random.PRNGKey(seed)))
      action = np.asarray(out.action)
      value = np.asarray(out.search_tree.node_values[:, mctx.Tree.ROOT_INDEX])
      regrets.append(np.mean(v_star - q_star[np.arange(len(action)), action]))
      errors.append(np.mean(np.abs(value - v_star)))
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(search(params, jax.random.PRNGKey(123)))
      seconds.append(time.perf_counter() - start)
  return float(np.mean(regrets)), float(np.mean(errors)), float(np.median(seconds))


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
      regret, error, seconds = evaluate(policy, mdps, budget, args.seeds)
      calls = count_sequential_calls(policy, mdps[0], budget)
      print(f"{name:22s} {budget:6d} {regret:8.3f} {error:9.3f} {calls:10d} "
            f"{1e3 * seconds:9.2f}", flush=True)
  print(f"({time.perf_counter() - started:.0f} s; lower regret and value error are better; "
        f"jax {jax.__version__} on {jax.devices()[0].platform})")


if __name__ == "__main__":
  main()
