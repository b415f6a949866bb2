"""smctx's public types and the protocols its modules share (as mctx's `base.py`).

The discrete policies take and return mctx's own types (`mctx.RootFnOutput`,
`mctx.RecurrentFnOutput`, `mctx.PolicyOutput`); what smctx adds is here: the
sampled-action inputs and outputs, the diagnostics a search reports, the
layout it uses, and the action-model protocol the particle engine talks to.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Protocol, TypeVar

import chex
import jax.numpy as jnp
import mctx

if TYPE_CHECKING:
  from typing import Self, dataclass_transform

  _T = TypeVar("_T")

  @dataclass_transform()
  def pytree_dataclass(*, frozen: bool = False) -> Callable[[type[_T]], type[_T]]:
    """`chex.dataclass`, as type checkers see it: a dataclass (fields, `__init__`)."""
    ...
else:
  pytree_dataclass = chex.dataclass


class PytreeDataclass:
  """Base of smctx's `chex.dataclass` types: chex adds `replace` to each class, declared here
  for type checkers only (at run time this class adds nothing)."""

  if TYPE_CHECKING:
    def replace(self, **changes: Any) -> Self:
      ...


@pytree_dataclass(frozen=True)
class SampledRootFnOutput(PytreeDataclass):
  """The root of a sampled-action search.

  candidates: pytree of `[B, M, ...]` arrays, the `M` candidate actions of
    every root (e.g. `M` samples of the user's policy, `[B, M, action_dim]`).
  value: `[B]` network value of the root.
  embedding: `[B, ...]` model state of the root.
  prior_logits: `[B, M]` logits of the prior over the candidates, or None for
    uniform. Uniform is right when the candidates are i.i.d. samples of the
    policy (their empirical distribution is the sampled prior, as in Sampled
    MuZero); pass `log π − log β` when they were drawn from another proposal `β`.
  """
  candidates: chex.ArrayTree
  value: chex.Array
  embedding: chex.ArrayTree
  prior_logits: Optional[chex.Array] = None


@pytree_dataclass(frozen=True)
class SampledRecurrentFnOutput(PytreeDataclass):
  """What a sampled-action `recurrent_fn` returns for `[B]` transitions.

  `recurrent_fn` is called with `[B]` rows, one particle of each root, in root
  order (as mctx calls it).

  reward, discount, value: `[B]`, as in `mctx.RecurrentFnOutput`.
  policy: pytree of `[B, ...]` arrays describing the policy at the next state
    (e.g. `(mean, log_std)` of a Gaussian), from which `action_sampler` draws
    the next action; with `action_sampler=None` it *is* the next action.
  """
  reward: chex.Array
  discount: chex.Array
  value: chex.Array
  policy: chex.ArrayTree


@pytree_dataclass(frozen=True)
class SampledPolicyOutput(PytreeDataclass):
  """The result of a sampled-action search.

  action: `[B]` int32, index of the chosen candidate.
  chosen_action: pytree of `[B, ...]`, the chosen candidate itself.
  action_weights: `[B, M]` weights over the candidates (zero on invalid ones),
    a target for a weighted maximum-likelihood policy loss
    `−Σ_m w_m·log π(candidate_m)`.
  search_tree: `mctx.Tree` of the root and one child per candidate, with a
    `SearchDiagnostics` in `extra_data`.
  """
  action: chex.Array
  chosen_action: chex.ArrayTree
  action_weights: chex.Array
  search_tree: mctx.Tree


@pytree_dataclass(frozen=True)
class SearchDiagnostics(PytreeDataclass):
  """What a search measured about itself, in `search_tree.extra_data`.

  All fields have the batch axis `B` first. `S` is the number of sequential
  `recurrent_fn` calls of the search, `K` the number of Sequential Halving
  iterations (1 for SMC and SMCTS), `A` the number of actions.

  ess: `[B, S]` effective sample size after each step's weight update (summed
    over resampling groups; at most `num_particles`). TSMCTS root steps, which
    do not weight, report `num_particles`.
  distinct_actions: `[B, S]` after each step's resampling: for SMC/SMCTS the
    number of distinct root actions carried by the particles (path
    degeneracy shows as this falling to 1); for TSMCTS the mean over live
    candidates of the distinct second actions carried inside each group (0 at
    the root step of an iteration of one step, which takes no second action).
  resampled: `[B, S]` bool, whether any group of the root resampled at the step.
  num_resamples: `[B]` int32, resampling events (group-level for TSMCTS).
  particles_per_action: `[B, K, A]` int32, particles given to each root action
    in each Sequential Halving iteration (SMC/SMCTS: `K = 1`, at the start).
  num_considered: `[B, K]` int32, root actions alive in each iteration.
  depth: `[B, K]` int32, sequential steps of each iteration (`T` or `T_SH`).
  num_particles: `[B]` int32, the width actually used (may be smaller than the
    requested one when the budget is small, `algorithms.md` section 8.2).
  num_evaluations: `[B]` int32, `recurrent_fn` evaluations spent per root.
  nonfinite_model_outputs: `[B]` int32, particle-steps whose model output held
    a NaN/inf (replaced by finite values; never propagated to the targets).
  no_valid_action: `[B]` bool, rows where every action was invalid
    (`action_weights` is all zeros and `action` is 0 there).
  nonfinite_root: `[B]` bool, rows whose `root.value` was NaN/inf or whose
    `root.prior_logits` held a NaN or `+inf` (searched with finite
    replacements: value 0, NaN logits as invalid, `+inf` as the maximum).
  root_gumbel: `[B, A]` float32, the `gumbel_scale`-scaled Gumbel noise the
    search drew at the root (as mctx's `GumbelMuZeroExtraData.root_gumbel`):
    `argmax(root_gumbel + prior_logits)` is the prior's action under the same
    noise, the baseline of mctx's policy improvement demo.
  next_root: `WarmStart`, TSMCTS's estimates at the successor of `action`
    (weights 0 for the other searches); `smctx.warm_start` turns it into the
    next search's `warm_start`.
  """
  ess: chex.Array
  distinct_actions: chex.Array
  resampled: chex.Array
  num_resamples: chex.Array
  particles_per_action: chex.Array
  num_considered: chex.Array
  depth: chex.Array
  num_particles: chex.Array
  num_evaluations: chex.Array
  nonfinite_model_outputs: chex.Array
  no_valid_action: chex.Array
  nonfinite_root: chex.Array
  root_gumbel: chex.Array
  next_root: WarmStart


@pytree_dataclass(frozen=True)
class WarmStart(PytreeDataclass):
  """What a TSMCTS search learnt about the state after its chosen action, for the next search
  (`smctx.warm_start`; beyond the paper, opt-in).

  action: `[B]` int32, the root action whose successor these estimates are about (the
    halving's winner: the search's `action`, except under `elimination="random"`);
  qvalues: `[B, A]` float32, the search's estimates `Q(s2, b)` at that action's successor `s2`,
    from the point of view of the player to move there; weights: `[B, A]` float32, the
    particles behind each estimate (0 where there is none: rows, actions or searches with no
    estimate, SMC and SMCTS, sampled actions, a successor searched one step deep).
  """
  action: chex.Array
  qvalues: chex.Array
  weights: chex.Array

  @classmethod
  def zeros(cls, batch_size: int, num_actions: int) -> "WarmStart":
    zeros_a = jnp.zeros((batch_size, num_actions), jnp.float32)
    return cls(action=jnp.zeros((batch_size,), jnp.int32), qvalues=zeros_a, weights=zeros_a)


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a search spends its budget.

  num_particles: width `N` (particles per root).
  num_considered: `m1`, root candidates of the first Sequential Halving
    iteration (TSMCTS), or the number of root actions assigned without
    replacement (SMCTS); 0 for SMC.
  considered_per_iteration: `m_i` for each iteration (TSMCTS), else `(m1,)`.
  depths: sequential steps of each iteration (`T_SH` per iteration for
    TSMCTS, `(T,)` for SMC/SMCTS).
  """
  num_particles: int
  num_considered: int
  considered_per_iteration: tuple[int, ...]
  depths: tuple[int, ...]

  @property
  def num_steps(self) -> int:
    """Sequential `recurrent_fn` calls."""
    return sum(self.depths)

  @property
  def num_evaluations(self) -> int:
    """`recurrent_fn` evaluations per root."""
    return self.num_particles * self.num_steps



class ModelOutput(NamedTuple):
  """One model call on every particle; `bad_policy` marks non-finite policies."""
  reward: chex.Array
  discount: chex.Array
  value: chex.Array
  policy: Any
  next_embedding: Any
  bad_policy: chex.Array


class ActionModel(Protocol):
  """How particles take actions and call the user's model (`actions.py`).

  The particle engine never looks inside an action: it asks an action model
  for the actions of particles leaving the root, one model call on every
  particle, and each particle's next action drawn from the policy at its state.
  """
  @property
  def num_actions(self) -> int:
    """The number of root actions (candidates, for sampled actions)."""

  @property
  def samples_second_actions(self) -> bool:
    """TSMCTS: True when each particle draws its own second action (labels are positions in
    the group), False when second actions are action indices."""

  def root_actions(self, index: chex.Array) -> chex.ArrayTree:
    """Actions `[B, N, ...]` of particles leaving the root by candidate index `[B, N]`."""

  def root_policy(self, root_logits: chex.Array, num_particles: int, params: mctx.Params,
                  rng_key: chex.PRNGKey, embedding: chex.ArrayTree) -> chex.ArrayTree:
    """The policy `[B, N, ...]` particles at the root carry."""

  def call(self, params: mctx.Params, rng_key: chex.PRNGKey, action: chex.ArrayTree,
           embedding: chex.ArrayTree) -> ModelOutput:
    """One call of the user's model on every particle."""

  def sample(self, slice_keys: chex.Array, policy: chex.ArrayTree) -> chex.ArrayTree:
    """Next actions `[B, N, ...]` drawn from the particles' policies, one key per particle
    slice (`slice_keys [N]`)."""


LoopFn = Callable[..., Any]
