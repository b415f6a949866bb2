"""What every policy does before its particles move.

Validate the static arguments and the root, wrap the user's model in an action
model, split the budget into width and depth, split the key, and prepare the
root (masking, Gumbel noise). SMC, SMCTS and TSMCTS all begin with
`start_search` and differ only in the layout they ask for and in what they do
with the particles afterwards.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import chex
import jax
import mctx

from smctx._src import actions
from smctx._src import budget
from smctx._src import engine
from smctx._src import root as root_lib
from smctx._src import validation
from smctx._src.base import ActionModel
from smctx._src.base import Layout


@dataclasses.dataclass(frozen=True)
class SearchStart:
  """A search about to run.

  config: the particle engine's static settings; model: the action model;
  layout: width and depth; root: the prepared root (arrays);
  init_key, search_key: keys for the policy's root assignment and its loop.
  """
  config: engine.EngineConfig
  model: ActionModel
  layout: Layout
  root: root_lib.PreparedRoot
  init_key: chex.PRNGKey
  search_key: chex.PRNGKey

  @property
  def batch_size(self) -> int:
    return self.root.prior_logits.shape[0]

  @property
  def num_actions(self) -> int:
    return self.root.prior_logits.shape[1]

  @property
  def num_particles(self) -> int:
    return self.layout.num_particles


@dataclasses.dataclass(frozen=True)
class SearchOptions:
  """The static arguments every policy shares, in the order of their signatures."""
  num_simulations: int
  num_particles: Optional[int]
  max_depth: Optional[int]
  gumbel_scale: chex.Numeric
  max_num_considered_actions: int
  temperature: float
  td_scale: str
  resample: str
  ess_threshold: float
  resampling_method: str
  tsmcts_target_depth: int = budget.TSMCTS_TARGET_DEPTH
  tsmcts_distinct_paths: bool = True
  num_steps: Optional[int] = None

  def layout(self, algorithm: str, num_actions: int) -> Layout:
    """Width and depth of `algorithm` ("smc", "smcts" or "tsmcts"), `budget.py`."""
    if algorithm == "tsmcts":
      return budget.tsmcts_layout(self.num_simulations, num_actions, self.num_particles,
                                  self.max_num_considered_actions, self.max_depth,
                                  self.tsmcts_target_depth, self.tsmcts_distinct_paths,
                                  num_steps=self.num_steps)
    return budget.smc_layout(self.num_simulations, num_actions, self.num_particles,
                             self.max_depth, assign_without_replacement=algorithm == "smcts",
                             num_steps=self.num_steps)


def start_search(rng_key: chex.PRNGKey, root: mctx.RootFnOutput,
                 recurrent_fn: mctx.RecurrentFn | ActionModel,
                 invalid_actions: Optional[chex.Array], options: SearchOptions,
                 algorithm: str) -> SearchStart:
  """Checks a policy's arguments and prepares the search of `algorithm`."""
  validation.check_static_args(**{k: v for k, v in dataclasses.asdict(options).items()
                                  if not k.startswith("tsmcts_")})
  _, num_actions = validation.check_root(root, invalid_actions)
  model = actions.as_action_model(recurrent_fn, num_actions)
  layout = options.layout(algorithm, num_actions)
  config = engine.EngineConfig(
      temperature=options.temperature, td_scale=options.td_scale, resample=options.resample,
      ess_threshold=options.ess_threshold, resampling_method=options.resampling_method,
      num_groups=1, num_labels=num_actions)
  gumbel_key, init_key, search_key = jax.random.split(rng_key, 3)
  prepared = root_lib.prepare(gumbel_key, root, invalid_actions, options.gumbel_scale)
  return SearchStart(config=config, model=model, layout=layout, root=prepared,
                     init_key=init_key, search_key=search_key)
