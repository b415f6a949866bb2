"""Measurements of the paper's search-level claims, on problems with exact values.

One implementation serves the reproducibility tests (`tests/repro`, small
sizes, assertions), the benchmarks (`benchmarks/`, larger sizes, CSV and
plots) and the demo. Every function returns a list of flat dict rows, so
callers can assert on them, print them or write them to CSV.

Problems come from `smctx.tabular`; their tables travel as mctx `params`,
so all MDPs of one shape share one compiled search, and seeds are a `vmap`
axis. Exact values are from value iteration or a linear policy evaluation
(NumPy, float64), never from the searches themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import mctx
import numpy as np

import smctx
from smctx import tabular

POLICIES: dict[str, Callable] = {
    "gumbel_muzero": mctx.gumbel_muzero_policy,
    "smc": smctx.smc_policy,
    "smcts": smctx.smcts_policy,
    # The repro suite checks the paper's claims on the paper's variant.
    "tsmcts": functools.partial(smctx.tsmcts_policy, variant="paper"),
}


def searcher(policy, num_simulations: int, states: Sequence[int] | np.ndarray,
             deterministic: bool, **kwargs):
  """A jitted `(params, keys [K]) -> PolicyOutput [K, B, ...]` over the given root states."""
  root_fn, recurrent_fn = tabular.parametric_model(deterministic)
  roots = jnp.asarray(states, jnp.int32)

  def one(params, key):
    return policy(params, key, root_fn(params, roots), recurrent_fn, num_simulations, **kwargs)

  return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def _keys(seeds: int, offset: int = 0):
  return jax.random.split(jax.random.PRNGKey(offset), seeds)


def variance_vs_depth(mdp: tabular.TabularMDP, states: Sequence[int], *,
                      depths: Sequence[int] = (2, 4, 8, 16, 24), num_particles: int = 16,
                      seeds: int = 32, algorithms: Sequence[str] = ("smc", "smcts", "tsmcts"),
                      **policy_kwargs) -> list[dict]:
  """Variance across seeds of the root value estimate at equal budget `N·T`.

  For each algorithm and depth `T`, every root is searched `seeds` times with
  `num_particles=N` and `num_simulations=N·T` (TSMCTS spreads `T` over its
  Sequential Halving iterations). Row: algorithm, depth, budget, variance (the
  mean over roots of the variance across seeds), mean_value, value_error
  (mean |value − V*|).
  """
  _, v_star = tabular.solve(mdp)
  params = tabular.tables(mdp)
  rows = []
  for name in algorithms:
    for depth in depths:
      budget = num_particles * depth
      search = searcher(POLICIES[name], budget, states, mdp.deterministic,
                        num_particles=num_particles, **policy_kwargs)
      out = search(params, _keys(seeds))
      value = np.asarray(out.search_tree.node_values[..., mctx.Tree.ROOT_INDEX])  # [K, B]
      rows.append(dict(
          algorithm=name, depth=depth, budget=budget, num_particles=num_particles,
          variance=float(np.mean(np.var(value, axis=0))),
          mean_value=float(np.mean(value)),
          value_error=float(np.mean(np.abs(value - v_star[np.asarray(states)][None])))))
  return rows


def degeneracy(mdp: tabular.TabularMDP, states: Sequence[int], *, num_particles: int = 4,
               depth: int = 24, seeds: int = 16) -> list[dict]:
  """Root actions still carried by the particles, per depth, and root actions with estimates.

  SMC and SMCTS run `depth` steps with `num_particles` particles; TSMCTS runs
  the same budget. Rows (one per algorithm and step), means over roots and
  seeds: `distinct_root_actions` carried by the particles after the step;
  `distinct_second_actions` carried within each TSMCTS group (NaN for the
  others); `actions_with_estimates`, root actions holding a value estimate at
  the end (visits > 0); `target_support`, actions with non-zero weight in the
  policy target; `initial_root_actions`, distinct root actions at the start.
  """
  params = tabular.tables(mdp)
  budget = num_particles * depth
  rows = []
  for name in ("smc", "smcts", "tsmcts"):
    search = searcher(POLICIES[name], budget, states, mdp.deterministic,
                      num_particles=num_particles)
    out = search(params, _keys(seeds))
    diag = out.search_tree.extra_data
    carried = np.asarray(diag.distinct_actions).mean(axis=(0, 1))  # [S]
    if name == "tsmcts":
      # Particles never leave their candidate's group: the root actions carried at
      # a step are the live candidates of that step's iteration. The per-step
      # diagnostic counts distinct *second* actions within each group.
      depths = np.asarray(diag.depth)[0, 0]
      iteration_of_step = np.repeat(np.arange(len(depths)), depths)
      root_carried = np.asarray(diag.num_considered).mean(axis=(0, 1))[iteration_of_step]
      second_carried = carried
    else:
      root_carried, second_carried = carried, np.full_like(carried, np.nan)
    with_estimates = float(np.mean(np.sum(
        np.asarray(out.search_tree.children_visits[..., 0, :]) > 0, axis=-1)))
    support = float(np.mean(np.sum(np.asarray(out.action_weights) > 1e-6, axis=-1)))
    initial = float(np.mean(np.asarray(diag.num_considered)[..., 0]))
    for step in range(len(root_carried)):
      rows.append(dict(algorithm=name, step=step + 1,
                       distinct_root_actions=float(root_carried[step]),
                       distinct_second_actions=float(second_carried[step]),
                       actions_with_estimates=with_estimates, target_support=support,
                       initial_root_actions=initial, num_particles=num_particles,
                       budget=budget))
  return rows


def policy_improvement(mdps: Sequence[tabular.TabularMDP], *, num_simulations: int = 64,
                       seeds: int = 2, algorithms: Sequence[str] = ("smc", "smcts", "tsmcts",
                                                                    "gumbel_muzero"),
                       **policy_kwargs) -> list[dict]:
  """Does the search's policy target improve on the prior, measured with `Q^{π_θ}`?

  The network is made consistent with its prior: its values are `V^{π_θ}`
  (exact, by policy evaluation), so the question is purely whether the
  search improves the policy it starts from. Row per algorithm: the fraction
  of (state, seed) pairs with `Σ_a π_search(a)Q^{π_θ}(s,a) ≥ Σ_a π_θ(a)Q^{π_θ}(s,a)
  − 1e-6`, and the mean improvement.
  """
  consistent = []
  for mdp in mdps:
    prior = np.asarray(jax.nn.softmax(mdp.prior_logits, axis=-1), np.float64)
    q_prior, v_prior = tabular.evaluate_policy(mdp, prior)
    consistent.append((dataclasses.replace(mdp, values=v_prior), prior, q_prior))
  states = np.arange(mdps[0].num_states)
  rows = []
  for name in algorithms:
    search = searcher(POLICIES[name], num_simulations, states, mdps[0].deterministic,
                      **policy_kwargs)
    improved, gains = [], []
    for mdp, prior, q_prior in consistent:
      out = search(tabular.tables(mdp), _keys(seeds))
      target = np.asarray(out.action_weights, np.float64)  # [K, S, A]
      gain = np.sum(target * q_prior[None], -1) - np.sum(prior * q_prior, -1)[None]
      improved.append(gain >= -1e-6)
      gains.append(gain)
    rows.append(dict(algorithm=name, budget=num_simulations,
                     fraction_improved=float(np.mean(improved)),
                     mean_improvement=float(np.mean(gains))))
  return rows


def regret(mdps: Sequence[tabular.TabularMDP], policies: dict[str, Callable], *,
           budgets: Sequence[int] = (16, 64, 256), seeds: int = 2, timing_repeats: int = 0,
           states: Sequence[int] | np.ndarray | None = None) -> list[dict]:
  """Simple regret of the chosen action and of the policy target at equal budgets.

  Row per policy and budget: `action_regret = V*(s) − Q*(s, action)`,
  `target_regret = V*(s) − Σ_a π_target(a)·Q*(s, a)`, `value_error =
  |search value − V*(s)|`, means over MDPs, roots and seeds; with
  `timing_repeats`, the median seconds per search of all roots (the batch of
  `seeds` searches timed together, divided by `seeds`).
  """
  roots = np.arange(mdps[0].num_states) if states is None else np.asarray(states)
  solved = [tabular.solve(mdp) for mdp in mdps]
  rows = []
  for budget in budgets:
    for name, policy in policies.items():
      search = searcher(policy, budget, roots, all(m.deterministic for m in mdps))
      action_regret, target_regret, value_error, seconds = [], [], [], []
      for mdp, (q_star, v_star) in zip(mdps, solved, strict=True):
        params = tabular.tables(mdp)
        out = search(params, _keys(seeds))
        q, v = q_star[roots], v_star[roots]
        action = np.asarray(out.action)  # [K, B]
        weights = np.asarray(out.action_weights, np.float64)
        value = np.asarray(out.search_tree.node_values[..., mctx.Tree.ROOT_INDEX])
        action_regret.append(v[None] - np.take_along_axis(q[None], action[..., None], -1)[..., 0])
        target_regret.append(v[None] - np.sum(weights * q[None], -1))
        value_error.append(np.abs(value - v[None]))
        for _ in range(timing_repeats):  # same shapes as above: no recompilation
          start = time.perf_counter()
          jax.block_until_ready(search(params, _keys(seeds, offset=99)))
          seconds.append((time.perf_counter() - start) / seeds)
      rows.append(dict(
          algorithm=name, budget=budget, action_regret=float(np.mean(action_regret)),
          action_regret_sem=float(np.std(action_regret) / np.sqrt(np.size(action_regret))),
          target_regret=float(np.mean(target_regret)), value_error=float(np.mean(value_error)),
          seconds=float(np.median(seconds)) if seconds else float("nan")))
  return rows


ABLATIONS: dict[str, Callable] = {
    "tsmcts": functools.partial(smctx.tsmcts_policy, variant="paper"),
    "smcts (no sequential halving)": smctx.smcts_policy,
    "tsmcts, random elimination": functools.partial(smctx.tsmcts_policy, variant="paper",
                                                    elimination="random"),
}


def sequential_calls(policy, num_simulations: int, *, num_actions: int = 8,
                     **kwargs) -> dict:
  """Sequential `recurrent_fn` calls and evaluations per root of one jitted search.

  Counted by a host callback inside a wrapped model, not from any search's
  own arithmetic.
  """
  mdp = tabular.random_mdp(0, 16, num_actions)
  root_fn, recurrent_fn = tabular.parametric_model(True)
  calls, widths = [], []
  batch = 4

  def record(action):
    calls.append(1)
    widths.append(int(np.size(action)))
    return np.zeros(np.shape(action), np.float32)

  def counted(params, rng_key, action, embedding):
    # smctx vmaps recurrent_fn over its particles ([B] rows per slice); with
    # vmap_method="expand_dims" the callback runs once per batched evaluation
    # (one sequential call) and sees all of its rows.
    zeros = jax.pure_callback(record, jax.ShapeDtypeStruct(action.shape, jnp.float32), action,
                              vmap_method="expand_dims")
    output, next_embedding = recurrent_fn(params, rng_key, action, embedding)
    return output.replace(reward=output.reward + zeros), next_embedding  # keeps the callback live

  params = tabular.tables(mdp)
  out = jax.jit(lambda p, k: policy(p, k, root_fn(p, jnp.arange(batch)), counted,
                                    num_simulations, **kwargs))(params, jax.random.PRNGKey(0))
  jax.block_until_ready(out)
  jax.effects_barrier()
  return dict(budget=num_simulations, sequential_calls=len(calls),
              evaluations_per_root=sum(widths) // batch)
