"""smctx: batched tree search with (Twice) Sequential Monte Carlo in JAX.

Drop-in replacements for `mctx.gumbel_muzero_policy`:

* `smctx.tsmcts_policy`: Twice Sequential Monte Carlo Tree Search.
* `smctx.smcts_policy`: SMC with back-propagation of root action values.
* `smctx.smc_policy`: the SMC (SPO-style) baseline.

Each takes mctx's arguments and returns an `mctx.PolicyOutput`, making about
`num_simulations // num_particles` sequential `recurrent_fn` calls.
"""

from smctx._src.budget import Layout
from smctx._src.checking import checked
from smctx._src.smc import smc_policy
from smctx._src.smcts import smcts_policy
from smctx._src.summary_tree import SearchDiagnostics
from smctx._src.tsmcts import tsmcts_policy

__all__ = [
    "Layout",
    "SearchDiagnostics",
    "checked",
    "smc_policy",
    "smcts_policy",
    "tsmcts_policy",
]

__version__ = "0.1.0"
