"""The paper's search-level claims (`algorithms.md` section 7) as checks.

Problems are those of `benchmarks/claims.py` (same sizes as `--quick`, except that
the regret checks use 4 MDPs where the quick benchmark uses 2); the numbers in
`docs/reproducing.md` come from these runs. Claims that
did not reproduce are kept as recorded measurements whose assertions check
only what is true and able to fail (e.g. every variant improves on the prior).
"""

import mctx
import numpy as np
import pytest

import smctx
from smctx import experiments
from smctx import tabular

VARIANCE_MDP = dict(seed=0, num_states=64, num_actions=4, discount=0.95, branching=3,
                    value_noise=1.0, prior_noise=0.5, prior_quality=1.0)
REGRET_MDPS = [dict(seed=s, num_states=200, num_actions=8, discount=0.9, value_noise=0.5,
                    prior_noise=1.0, prior_quality=1.0) for s in range(4)]


def _random_mdp(spec):
  spec = dict(spec)
  return tabular.random_mdp(spec.pop("seed"), spec.pop("num_states"), spec.pop("num_actions"),
                            **spec)


@pytest.fixture(scope="module")
def regret_mdps():
  return [_random_mdp(spec) for spec in REGRET_MDPS]


def _prior_regret(mdps):
  """Regret of sampling the network's prior, by exact values (~0.89 here)."""
  regrets = []
  for mdp in mdps:
    q_star, v_star = tabular.solve(mdp)
    prior = np.exp(mdp.prior_logits - mdp.prior_logits.max(-1, keepdims=True))
    prior /= prior.sum(-1, keepdims=True)
    regrets.append(np.mean(v_star - np.sum(prior * q_star, -1)))
  return float(np.mean(regrets))


def _by(rows, **match):
  return [r for r in rows if all(r[k] == v for k, v in match.items())]


def test_claim1_variance_grows_with_depth_for_smc_and_tsmcts_is_several_times_lower(report):
  mdp = _random_mdp(VARIANCE_MDP)
  rows = experiments.variance_vs_depth(mdp, np.arange(32), depths=(2, 4, 8, 16, 24),
                                       num_particles=16, seeds=32)
  report("variance of the root value across 32 seeds, N=16, budget 16*T", rows)
  smc = [r["variance"] for r in _by(rows, algorithm="smc")]
  tsmcts_24 = _by(rows, algorithm="tsmcts", depth=24)[0]["variance"]
  smcts_24 = _by(rows, algorithm="smcts", depth=24)[0]["variance"]
  # SMC's variance grows with depth (each doubling of depth, and overall by > 5x).
  assert all(b > a for a, b in zip(smc[:-1], smc[1:], strict=True)), smc
  assert smc[-1] > 5 * smc[0]
  # TSMCTS at depth 24: at most half of SMC's (the paper: about 4-5x lower).
  assert tsmcts_24 <= 0.5 * smc[-1]
  assert tsmcts_24 < smcts_24 < smc[-1]


def test_claim2_smc_degenerates_to_one_root_action_tsmcts_keeps_all_candidates(report):
  mdp = tabular.grid_world(8, value_noise=0.3)
  rows = experiments.degeneracy(mdp, [0, 1, 2, 8, 9, 10, 16, 17], num_particles=4, depth=24,
                                seeds=16)
  report("distinct root actions, grid world 8x8, N=4, T=24",
         [r for r in rows if r["step"] in (1, 4, 8, 16, 24)])
  smc = _by(rows, algorithm="smc")
  tsmcts = _by(rows, algorithm="tsmcts")
  assert smc[0]["initial_root_actions"] > 2.0  # it started with several root actions...
  assert smc[-1]["distinct_root_actions"] < 1.25  # ...and ends with about one
  assert smc[-1]["target_support"] < 1.25  # its policy target is (nearly) one-hot
  # TSMCTS: every one of its m1 = min(16, A, N) = 4 candidates holds an estimate.
  assert tsmcts[-1]["initial_root_actions"] == 4.0
  assert tsmcts[-1]["actions_with_estimates"] == 4.0
  # SMCTS loses particles like SMC but keeps the estimates of every root action it tried.
  smcts = _by(rows, algorithm="smcts")
  assert smcts[-1]["distinct_root_actions"] < 1.25
  assert smcts[-1]["actions_with_estimates"] == smcts[-1]["initial_root_actions"] == 4.0


def test_claim3a_policy_improvement_over_the_prior(report):
  mdps = [tabular.random_mdp(s, 100, 6, discount=0.9, value_noise=0.0, prior_noise=1.0,
                             prior_quality=0.0) for s in range(3)]
  rows = experiments.policy_improvement(mdps, num_simulations=64, seeds=2)
  report("policy improvement with Q^{pi_theta} (values = V^{pi_theta}), budget 64", rows)
  for name in ("smcts", "tsmcts"):
    (row,) = _by(rows, algorithm=name)
    assert row["fraction_improved"] >= 0.95, row
    assert row["mean_improvement"] > 0.5, row


def test_claim3b_equal_budget_regret_tsmcts_beats_smc_and_comparison_with_gumbel(
    report, regret_mdps):
  rows = experiments.regret(regret_mdps, experiments.POLICIES, budgets=(16, 64, 256), seeds=2)
  report("simple regret at equal budget (4 MDPs x 200 roots x 2 seeds)", rows)
  for budget in (16, 64, 256):
    tsmcts = _by(rows, algorithm="tsmcts", budget=budget)[0]
    smc = _by(rows, algorithm="smc", budget=budget)[0]
    gumbel = _by(rows, algorithm="gumbel_muzero", budget=budget)[0]
    assert tsmcts["action_regret"] < smc["action_regret"], (budget, tsmcts, smc)
    # Recorded, not asserted: TSMCTS vs Gumbel MuZero (see docs/reproducing.md).
    print(f"   budget {budget}: tsmcts/gumbel action regret "
          f"{tsmcts['action_regret'] / gumbel['action_regret']:.2f}, target regret "
          f"{tsmcts['target_regret'] / gumbel['target_regret']:.2f}")
  # Every search's target improves a lot on the prior at budgets of 64 and more.
  prior_regret = _prior_regret(regret_mdps)
  assert all(r["target_regret"] < 0.5 * prior_regret for r in rows if r["budget"] >= 64)


def test_sequential_halving_ablation_recorded(report, regret_mdps):
  rows = experiments.regret(regret_mdps, experiments.ABLATIONS, budgets=(64, 256), seeds=2)
  report("ablation: action regret of TSMCTS variants", rows)
  prior_regret = _prior_regret(regret_mdps)
  for row in rows:  # every variant still improves a lot on the prior
    assert np.isfinite(row["action_regret"]) and row["action_regret"] < 0.35 * prior_regret
  # The paper's claim that SH improves on random elimination is recorded, not asserted:
  for budget in (64, 256):
    full = _by(rows, algorithm="tsmcts", budget=budget)[0]["action_regret"]
    random = _by(rows, algorithm="tsmcts, random elimination", budget=budget)[0]["action_regret"]
    print(f"   budget {budget}: SH {full:.3f} vs random elimination {random:.3f}")


@pytest.mark.parametrize("budget", [64, 256])
def test_claim4_sequential_calls(report, budget):
  rows = [dict(algorithm="gumbel_muzero",
               **experiments.sequential_calls(mctx.gumbel_muzero_policy, budget))]
  for name, policy in (("smc", smctx.smc_policy), ("smcts", smctx.smcts_policy),
                       ("tsmcts", smctx.tsmcts_policy)):
    rows.append(dict(algorithm=name,
                     **experiments.sequential_calls(policy, budget, num_particles=16)))
  report(f"sequential recurrent_fn calls at budget {budget}, N=16", rows)
  assert rows[0]["sequential_calls"] == budget
  for row in rows[1:]:
    assert row["sequential_calls"] == budget // 16
    assert row["evaluations_per_root"] == budget
