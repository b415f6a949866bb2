"""Tabular MDPs with known optimal values, as mctx models.

A `TabularMDP` is a small finite MDP together with an imperfect "network":
prior logits and a noisy value per state. `model(mdp)` turns it into mctx's
`(root_fn, recurrent_fn)` pair with the state index as the embedding, and
`solve` / `evaluate_policy` give exact values (NumPy, float64) to measure a
search against. The demo and the test-suite use them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mctx
import numpy as np


@dataclasses.dataclass(frozen=True)
class TabularMDP:
  """A finite MDP and an imperfect network for it (NumPy arrays).

  transitions: `[S, A, S]` next-state probabilities.
  rewards: `[S, A]` expected reward of taking `a` in `s`.
  discount: `gamma`.
  terminal: `[S]` bool; entering a terminal state gives discount 0 (the
    episode ends) and a terminal state is absorbing with reward 0.
  prior_logits: `[S, A]` the network's policy logits.
  values: `[S]` the network's value estimates.
  two_player: if True, players alternate: rewards are from the mover's view
    and the model's discount is `-gamma` (mctx/pgx convention).
  """
  transitions: np.ndarray
  rewards: np.ndarray
  discount: float
  terminal: np.ndarray
  prior_logits: np.ndarray
  values: np.ndarray
  two_player: bool = False

  @property
  def num_states(self) -> int:
    return self.rewards.shape[0]

  @property
  def num_actions(self) -> int:
    return self.rewards.shape[1]

  @property
  def deterministic(self) -> bool:
    return bool(np.all(np.isclose(self.transitions.max(-1), 1.0)))


def solve(mdp: TabularMDP, tol: float = 1e-10, max_iter: int = 100_000):
  """Optimal `(Q* [S, A], V* [S])` by value iteration (float64).

  For two-player MDPs values are from the mover's view (negamax).
  """
  sign = -1.0 if mdp.two_player else 1.0
  cont = mdp.discount * (~mdp.terminal).astype(np.float64)
  v = np.zeros(mdp.num_states)
  for _ in range(max_iter):
    q = mdp.rewards + sign * mdp.transitions @ (cont * v)
    q[mdp.terminal] = 0.0
    new_v = q.max(-1)
    if np.max(np.abs(new_v - v)) < tol:
      v = new_v
      break
    v = new_v
  q = mdp.rewards + sign * mdp.transitions @ (cont * v)
  q[mdp.terminal] = 0.0
  return q, q.max(-1)


def evaluate_policy(mdp: TabularMDP, policy: np.ndarray):
  """`(Q^π [S, A], V^π [S])` of a stochastic policy `[S, A]`, by a linear solve."""
  sign = -1.0 if mdp.two_player else 1.0
  cont = mdp.discount * (~mdp.terminal).astype(np.float64)
  # V = Σ_a π (R + sign·P (cont·V))  =>  (I − sign·P_π diag(cont)) V = R_π
  p_pi = np.einsum("sa,sat->st", policy, mdp.transitions)
  r_pi = np.sum(policy * mdp.rewards, -1)
  live = ~mdp.terminal
  m = np.eye(mdp.num_states) - sign * p_pi * cont[None, :]
  m[~live] = np.eye(mdp.num_states)[~live]
  r_pi = np.where(live, r_pi, 0.0)
  v = np.linalg.solve(m, r_pi)
  q = mdp.rewards + sign * mdp.transitions @ (cont * v)
  q[mdp.terminal] = 0.0
  return q, v


def random_mdp(seed: int, num_states: int = 200, num_actions: int = 8, *,
               discount: float = 0.9, branching: int = 1, reward_scale: float = 1.0,
               reward_sparsity: float = 0.0, value_noise: float = 0.5,
               prior_noise: float = 1.0, prior_quality: float = 0.0,
               two_player: bool = False) -> TabularMDP:
  """A random MDP with an imperfect network.

  Transitions go to `branching` random successors (deterministic when 1),
  rewards are Gaussian (zeroed with probability `reward_sparsity`). The
  network's values are `V* + value_noise·std(V*)·ε`; its prior logits are
  `prior_quality·(Q* − V*)/std(Q*) + prior_noise·ε`.
  """
  rng = np.random.default_rng(seed)
  s, a = num_states, num_actions
  transitions = np.zeros((s, a, s))
  for i in range(s):
    for j in range(a):
      nxt = rng.choice(s, size=branching, replace=False)
      transitions[i, j, nxt] = rng.dirichlet(np.ones(branching)) if branching > 1 else 1.0
  rewards = rng.normal(size=(s, a)) * reward_scale
  rewards *= rng.random((s, a)) >= reward_sparsity
  base = TabularMDP(transitions=transitions, rewards=rewards, discount=discount,
                    terminal=np.zeros(s, bool), prior_logits=np.zeros((s, a)),
                    values=np.zeros(s), two_player=two_player)
  q_star, v_star = solve(base)
  v_std = max(float(np.std(v_star)), 1e-6)
  adv = (q_star - v_star[:, None]) / max(float(np.std(q_star)), 1e-6)
  prior_logits = prior_quality * adv + prior_noise * rng.normal(size=(s, a))
  values = v_star + value_noise * v_std * rng.normal(size=s)
  return dataclasses.replace(base, prior_logits=prior_logits, values=values)


def grid_world(size: int = 8, *, discount: float = 0.97, value_noise: float = 0.3,
               prior_noise: float = 0.0, seed: int = 0) -> TabularMDP:
  """A Snake-like sparse-reward grid: reward only far away, death at the walls.

  States are the `size x size` cells plus two absorbing terminal states. The
  four actions move up, down, left, right. Stepping off the grid ends the
  episode with reward −1. Reaching the food in the corner opposite the start
  cell (`start_state`, cell 0) ends it with reward +1. Every other step gives
  0. The network's values are `V* + value_noise·ε` (0 at terminals), and its
  prior is uniform plus `prior_noise·ε`.
  """
  rng = np.random.default_rng(seed)
  cells = size * size
  dead, fed = cells, cells + 1
  num_states = cells + 2
  food = cells - 1
  transitions = np.zeros((num_states, 4, num_states))
  rewards = np.zeros((num_states, 4))
  moves = [(-1, 0), (1, 0), (0, -1), (0, 1)]
  for cell in range(cells):
    row, col = divmod(cell, size)
    for a, (dr, dc) in enumerate(moves):
      r, c = row + dr, col + dc
      if not (0 <= r < size and 0 <= c < size):
        transitions[cell, a, dead], rewards[cell, a] = 1.0, -1.0
      elif r * size + c == food:
        transitions[cell, a, fed], rewards[cell, a] = 1.0, 1.0
      else:
        transitions[cell, a, r * size + c] = 1.0
  for terminal_state in (dead, fed):
    transitions[terminal_state, :, terminal_state] = 1.0
  terminal = np.zeros(num_states, bool)
  terminal[[dead, fed]] = True
  base = TabularMDP(transitions=transitions, rewards=rewards, discount=discount,
                    terminal=terminal, prior_logits=np.zeros((num_states, 4)),
                    values=np.zeros(num_states))
  _, v_star = solve(base)
  values = np.where(terminal, 0.0, v_star + value_noise * rng.normal(size=num_states))
  prior_logits = prior_noise * rng.normal(size=(num_states, 4))
  return dataclasses.replace(base, values=values, prior_logits=prior_logits)


def tables(mdp: TabularMDP) -> dict:
  """The MDP and its network as a pytree of arrays, to pass as mctx `params`.

  MDPs of equal shape share one compiled search when their tables travel as
  `params` (see `parametric_model`) instead of being baked into the model.
  """
  log_p = np.where(mdp.transitions > 0, np.log(np.maximum(mdp.transitions, 1e-38)), -np.inf)
  return {
      "log_transitions": jnp.asarray(log_p, jnp.float32),
      "rewards": jnp.asarray(mdp.rewards, jnp.float32),
      "terminal": jnp.asarray(mdp.terminal),
      "prior_logits": jnp.asarray(mdp.prior_logits, jnp.float32),
      "values": jnp.asarray(mdp.values, jnp.float32),
      "discount": jnp.asarray(-mdp.discount if mdp.two_player else mdp.discount, jnp.float32),
  }


def parametric_model(deterministic: bool = False):
  """mctx's `(root_fn, recurrent_fn)` reading the MDP from `params = tables(mdp)`.

  `root_fn(params, states [B]) -> RootFnOutput`; `recurrent_fn(params, rng_key,
  action, state)` samples the successor from `rng_key`, or, if
  `deterministic` (every transition has one successor), takes it without
  drawing random numbers.
  """

  def root_fn(params, states):
    states = jnp.asarray(states, jnp.int32)
    return mctx.RootFnOutput(prior_logits=params["prior_logits"][states],
                             value=params["values"][states], embedding=states)

  def recurrent_fn(params, rng_key, action, state):
    terminal = params["terminal"]
    log_p = params["log_transitions"][state, action]
    if deterministic:
      next_state = jnp.argmax(log_p, axis=-1)
    else:
      next_state = jax.random.categorical(rng_key, log_p)
    next_state = jnp.where(terminal[state], state, next_state).astype(jnp.int32)
    reward = jnp.where(terminal[state], 0.0, params["rewards"][state, action])
    ends = terminal[state] | terminal[next_state]
    discount = jnp.where(ends, 0.0, params["discount"]).astype(jnp.float32)
    value = jnp.where(terminal[next_state], 0.0, params["values"][next_state])
    return mctx.RecurrentFnOutput(reward=reward, discount=discount,
                                  prior_logits=params["prior_logits"][next_state],
                                  value=value), next_state

  return root_fn, recurrent_fn


def model(mdp: TabularMDP):
  """mctx's `(root_fn, recurrent_fn)` for one MDP; the embedding is the state index.

  `root_fn(states [B]) -> RootFnOutput`. `recurrent_fn` ignores its `params`
  and samples the successor from `rng_key` when the MDP is stochastic.
  """
  params = tables(mdp)
  root_fn, recurrent_fn = parametric_model(mdp.deterministic)
  return (lambda states: root_fn(params, states),
          lambda _, rng_key, action, state: recurrent_fn(params, rng_key, action, state))
