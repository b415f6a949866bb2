"""The searches under test, named once for every test module."""

import pytest

import smctx

# smctx's three searches, by the names the tests use.
POLICIES = {"smc": smctx.smc_policy, "smcts": smctx.smcts_policy, "tsmcts": smctx.tsmcts_policy}
# Their sampled-action versions (`smctx.sampled_*_policy`), under the same names.
SAMPLED_POLICIES = {"smc": smctx.sampled_smc_policy, "smcts": smctx.sampled_smcts_policy,
                    "tsmcts": smctx.sampled_tsmcts_policy}

# Runs a test once per search, the search function passed as `policy` (test ids: its name).
each_policy = pytest.mark.parametrize("policy", list(POLICIES.values()), ids=list(POLICIES))

# The same, with SMC and SMCTS behind `-m slow`: for the costliest checks, where TSMCTS (which
# runs every code path the other two do, and more) keeps the default run under 10 minutes.
each_policy_slow_but_tsmcts = pytest.mark.parametrize(
    "policy", [pytest.param(p, id=n, marks=() if n == "tsmcts" else pytest.mark.slow)
               for n, p in POLICIES.items()])
NAMES_SLOW_BUT_TSMCTS = [pytest.param(n, marks=() if n == "tsmcts" else pytest.mark.slow)
                         for n in POLICIES]
