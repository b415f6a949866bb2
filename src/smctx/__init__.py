"""smctx: batched tree search with (Twice) Sequential Monte Carlo in JAX.

Drop-in replacements for `mctx.gumbel_muzero_policy`:

* `smctx.tsmcts_policy`: Twice Sequential Monte Carlo Tree Search.
* `smctx.smcts_policy`: SMC with back-propagation of root action values.
* `smctx.smc_policy`: the SMC (SPO-style) baseline.

Each takes mctx's arguments and returns an `mctx.PolicyOutput`, making about
`num_simulations // num_particles` sequential `recurrent_fn` calls.

For continuous or sampled actions, `smctx.sampled_tsmcts_policy`,
`smctx.sampled_smcts_policy` and `smctx.sampled_smc_policy` search over
candidate actions given at the root (`smctx.SampledRootFnOutput`), with a model
returning `smctx.SampledRecurrentFnOutput`, on the same particle engine.
"""

from smctx._src.base import Layout
from smctx._src.budget import search_layout
from smctx._src.base import SampledPolicyOutput
from smctx._src.base import SampledRecurrentFnOutput
from smctx._src.base import SampledRootFnOutput
from smctx._src.base import SearchDiagnostics
from smctx._src.base import WarmStart
from smctx._src.checking import checked
from smctx._src.smc import smc_policy
from smctx._src.sampled import sampled_smc_policy
from smctx._src.sampled import sampled_smcts_policy
from smctx._src.sampled import sampled_tsmcts_policy
from smctx._src.smcts import smcts_policy
from smctx._src.tsmcts import SHARP_QTRANSFORM
from smctx._src.tsmcts import tsmcts_policy
from smctx._src.warm_start import warm_start
from smctx import model_error
from smctx import models
from smctx import plotting
from smctx import tabular

__all__ = [
    "Layout",
    "SHARP_QTRANSFORM",
    "SampledPolicyOutput",
    "SampledRecurrentFnOutput",
    "SampledRootFnOutput",
    "SearchDiagnostics",
    "checked",
    "model_error",
    "models",
    "plotting",
    "sampled_smc_policy",
    "sampled_smcts_policy",
    "sampled_tsmcts_policy",
    "search_layout",
    "smc_policy",
    "smcts_policy",
    "tabular",
    "tsmcts_policy",
    "warm_start",
    "WarmStart",
]

__version__ = "0.1.0"
