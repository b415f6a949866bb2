"""Problem families with exact values, for measuring search quality.

Every problem is a finite MDP (or a two-player game) in sparse tabular form,
with exact optimal values `Q*`/`V*` computed without any search, an imperfect
"network" (prior logits and a value per state) and the root states to search
from. `benchmarks/quality.py` measures the searches on them.

Families (`FAMILIES`; each is `builder(seed, network, num_roots) -> Problem`):

* `random_stochastic`: `tabular.random_mdp` with 3 random successors per
  action (100 states, 9 actions, discount 0.9).
* `random_deterministic`: the same with one successor per action.
* `chain`: a corridor of `length` positions where one action per position
  (random) moves forward and the last forward move ends the episode with
  reward 1. The other actions are distractors: one "bail" action pays
  `bail_reward` at once and ends the episode (the worst action everywhere),
  the others send the agent back to the start or a few positions back. The
  network's value is informative only within `visible` steps of the goal
  (elsewhere it is 0 plus noise), and the roots are the positions from which
  at least `min_steps` correct steps are needed to reach an informative
  state: only a search that follows the corridor that far can tell the
  forward action from the bail.
* `tic_tac_toe`: every reachable tic-tac-toe position, with exact negamax
  values (mover's view; +1 win, 0 draw, -1 loss), as a two-player problem
  (mctx's discount -1 per ply). Roots are non-terminal positions whose legal
  moves do not all have the same value.

Networks (`NETWORKS`): `good` (value noise of 0.25 standard deviations of
`V*`, an informative prior whose argmax has a normalised regret of about
0.04-0.12), `poor` (value noise of one standard deviation, a weakly
informative, noisy prior: argmax regret about 0.25-0.4) and `wrong_prior`
(the `good` settings with their own draw of the noise, except that the prior
puts `wrong_prior_mass` = 0.8 on the legal action with the lowest `Q*` in every
non-terminal state where actions differ).

Illegal actions (occupied cells in tic-tac-toe) have prior logit
`finfo(float32).min` and are masked at the root (`legal`); below the root a
search may still pick one, and it then acts as the state's worst legal action
(lowest `Q*`), so the problem's optimal values do not depend on it.

`merge(problems)` puts any number of problems into one table (states offset
per problem) and `model()` is mctx's `(root_fn, recurrent_fn)` reading it from
`params`, so that all families share one compiled search.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import jax
import jax.numpy as jnp
import mctx
import numpy as np

from smctx import tabular

ILLEGAL_LOGIT = float(np.finfo(np.float32).min)
NUM_ACTIONS = 9  # every family has 9 actions, so that all share one compiled search


@dataclasses.dataclass(frozen=True)
class Network:
  """How an imperfect network is made from the exact values.

  values: `V* + value_noise·std(V*)·ε` (the chain family: `V*` only near the
    goal, 0 elsewhere, plus the same noise).
  prior logits: `prior_quality·(Q* − V*)/std(Q*) + prior_noise·ε` over the
    legal actions; with `wrong_prior_mass > 0`, the worst legal action then
    gets that much probability.
  """
  value_noise: float
  prior_quality: float
  prior_noise: float
  wrong_prior_mass: float = 0.0


NETWORKS: dict[str, Network] = {
    "good": Network(value_noise=0.25, prior_quality=1.0, prior_noise=0.5),
    "poor": Network(value_noise=1.0, prior_quality=0.3, prior_noise=1.0),
    "wrong_prior": Network(value_noise=0.25, prior_quality=1.0, prior_noise=0.5,
                           wrong_prior_mass=0.8),
}


@dataclasses.dataclass(frozen=True)
class Problem:
  """A sparse finite MDP, exact values, a network and roots (NumPy arrays).

  next_states: `[S, A, K]` successor states; `probs`: `[S, A, K]` their
    probabilities (padding entries have probability 0).
  rewards: `[S, A]` reward of the mover.
  terminal: `[S]`; entering a terminal state ends the episode (discount 0,
    value 0); terminal states are absorbing with reward 0.
  legal: `[S, A]` legal actions (an illegal action has the dynamics of the
    state's worst legal action).
  discount: `gamma`; two-player problems use `-gamma` in the model.
  q_star, v_star: `[S, A]`, `[S]` exact optimal values (mover's view);
    `V*(s) = max over legal a of Q*(s, a)`.
  prior_logits, values: `[S, A]`, `[S]` the network (legal maximum logit 0,
    illegal `ILLEGAL_LOGIT`; value 0 at terminal states).
  roots: `[R]` states to search from.
  """
  family: str
  network: str
  instance: int
  next_states: np.ndarray
  probs: np.ndarray
  rewards: np.ndarray
  terminal: np.ndarray
  legal: np.ndarray
  discount: float
  two_player: bool
  q_star: np.ndarray
  v_star: np.ndarray
  prior_logits: np.ndarray
  values: np.ndarray
  roots: np.ndarray

  @property
  def num_states(self) -> int:
    return self.rewards.shape[0]

  @property
  def num_actions(self) -> int:
    return self.rewards.shape[1]

  def spread(self, states=None) -> np.ndarray:
    """`V*(s) − min over legal a of Q*(s, a)`: the regret of the worst legal action."""
    states = self.roots if states is None else np.asarray(states)
    q = np.where(self.legal[states], self.q_star[states], np.inf)
    return self.v_star[states] - q.min(-1)


def _rng(seed: int, *labels: str) -> np.random.Generator:
  """A generator determined by the seed and labels (stable across runs and Python versions)."""
  return np.random.default_rng([seed] + [zlib.crc32(label.encode()) for label in labels])


def _sparse(transitions: np.ndarray, max_successors: int):
  """`[S, A, S]` dense probabilities -> `([S, A, K]` states, `[S, A, K]` probabilities)."""
  order = np.argsort(-transitions, axis=-1, kind="stable")[..., :max_successors]
  probs = np.take_along_axis(transitions, order, -1)
  assert np.allclose(probs.sum(-1), 1.0), "more successors than max_successors"
  order = np.where(probs > 0, order, order[..., :1])  # padding: the first successor, prob 0
  return order.astype(np.int32), probs


def _network(spec: Network, q_star, v_star, legal, terminal, rng, value_target=None):
  """Prior logits `[S, A]` and values `[S]` for `spec` (see `Network`)."""
  live = ~terminal
  value_scale = max(float(np.std(v_star[live])), 1e-6)
  q_scale = max(float(np.std(q_star[live][legal[live]])), 1e-6)
  target = v_star if value_target is None else value_target
  values = target + spec.value_noise * value_scale * rng.normal(size=v_star.shape)
  values = np.where(terminal, 0.0, values)
  adv = (q_star - v_star[:, None]) / q_scale
  logits = spec.prior_quality * adv + spec.prior_noise * rng.normal(size=q_star.shape)
  if spec.wrong_prior_mass > 0:
    worst_q = np.where(legal, q_star, np.inf)
    # Ties broken at random: a small random key that never outranks a real difference.
    worst = np.argmin(worst_q + 1e-9 * rng.random(q_star.shape), axis=-1)
    rows = np.flatnonzero(live & (v_star - worst_q.min(-1) > 1e-9))  # >= 2 legal actions
    others = np.where(legal[rows], logits[rows], -np.inf)
    others[np.arange(len(rows)), worst[rows]] = -np.inf
    top = others.max(-1)
    lse = np.log(np.sum(np.exp(others - top[:, None]), -1)) + top
    mass = spec.wrong_prior_mass
    # softmax gives the worst action exactly `mass`: its logit is log(mass / (1 − mass)) + LSE.
    logits[rows, worst[rows]] = np.log(mass / (1.0 - mass)) + lse
  logits = np.where(legal, logits, -np.inf)
  logits = logits - np.max(logits, -1, keepdims=True)
  logits = np.where(legal, logits, ILLEGAL_LOGIT)
  return logits, values


def _illegal_as_worst(next_states, probs, rewards, q_star, legal):
  """Gives every illegal action the dynamics and `Q*` of the state's worst legal action."""
  worst = np.argmin(np.where(legal, q_star, np.inf), axis=-1)  # [S]
  rows = np.arange(len(worst))
  copy = ~legal
  next_states = np.where(copy[..., None], next_states[rows, worst][:, None], next_states)
  probs = np.where(copy[..., None], probs[rows, worst][:, None], probs)
  rewards = np.where(copy, rewards[rows, worst][:, None], rewards)
  q_star = np.where(copy, q_star[rows, worst][:, None], q_star)
  return next_states, probs, rewards, q_star


def from_tabular(mdp: tabular.TabularMDP, *, family: str, network: str, instance: int,
                 roots, max_successors: int | None = None, value_target=None) -> Problem:
  """A `Problem` from a dense `tabular.TabularMDP` (all actions legal; exact values by
  `tabular.solve`), with the network `NETWORKS[network]` drawn from `(instance, network)`."""
  if max_successors is None:
    max_successors = int(np.max(np.sum(mdp.transitions > 0, -1)))
  next_states, probs = _sparse(mdp.transitions, max_successors)
  q_star, v_star = tabular.solve(mdp)
  legal = np.ones(q_star.shape, bool)
  rng = _rng(instance, family, network)
  logits, values = _network(NETWORKS[network], q_star, v_star, legal, mdp.terminal, rng,
                            value_target)
  return Problem(family=family, network=network, instance=instance, next_states=next_states,
                 probs=probs, rewards=np.asarray(mdp.rewards, np.float64),
                 terminal=np.asarray(mdp.terminal, bool), legal=legal,
                 discount=float(mdp.discount), two_player=mdp.two_player, q_star=q_star,
                 v_star=v_star, prior_logits=logits, values=values,
                 roots=np.asarray(roots, np.int64))


def _choose_roots(candidates, num_roots, rng):
  candidates = np.asarray(candidates)
  if num_roots >= len(candidates):
    return candidates
  return np.sort(rng.choice(candidates, size=num_roots, replace=False))


# -- Random MDPs ---------------------------------------------------------------------------------


def random_problem(seed: int, network: str, num_roots: int, *, branching: int = 3,
                   num_states: int = 100, discount: float = 0.9) -> Problem:
  """A `tabular.random_mdp` (9 actions) with `num_roots` random roots (the same for every
  network of one seed)."""
  mdp = tabular.random_mdp(seed, num_states, NUM_ACTIONS, discount=discount,
                           branching=branching, value_noise=0.0, prior_noise=0.0)
  family = "random_stochastic" if branching > 1 else "random_deterministic"
  roots = _choose_roots(np.arange(num_states), num_roots, _rng(seed, family, "roots"))
  return from_tabular(mdp, family=family, network=network, instance=seed, roots=roots,
                      max_successors=branching)


# -- Long-horizon corridor ----------------------------------------------------------------------

CHAIN_LENGTH = 20
CHAIN_DISCOUNT = 0.97
CHAIN_BAIL_REWARD = 0.3
CHAIN_VISIBLE = 2  # the value network knows V* only within this many steps of the goal
CHAIN_MIN_STEPS = 10  # roots need at least this many correct steps to reach a known value
# The action kinds at every position, shuffled per position: one forward move, one bail,
# and distractors that move back (`back_k`: k positions back, clipped at 0; `reset`: to 0).
CHAIN_ACTIONS = ("forward", "bail", "reset", "reset", "reset", "back_2", "back_2", "back_4",
                 "back_4")


def chain_mdp(seed: int, *, length: int = CHAIN_LENGTH, discount: float = CHAIN_DISCOUNT,
              bail_reward: float = CHAIN_BAIL_REWARD):
  """The corridor as a dense `tabular.TabularMDP` and the kind of every action `[L, A]`.

  States `0..L-1` are positions, `L` is the goal and `L+1` the bail terminal.
  The forward action at position `L-1` reaches the goal with reward 1, so
  `V*(i) = discount**(L-1-i)` while `bail_reward < discount**L`.
  """
  rng = _rng(seed, "chain")
  goal, dead = length, length + 1
  num_states = length + 2
  transitions = np.zeros((num_states, NUM_ACTIONS, num_states))
  rewards = np.zeros((num_states, NUM_ACTIONS))
  kinds = np.empty((length, NUM_ACTIONS), dtype=object)
  for i in range(length):
    kinds[i] = rng.permutation(np.array(CHAIN_ACTIONS, dtype=object))
    for a, kind in enumerate(kinds[i]):
      if kind == "forward":
        nxt = goal if i == length - 1 else i + 1
        rewards[i, a] = 1.0 if i == length - 1 else 0.0
      elif kind == "bail":
        nxt, rewards[i, a] = dead, bail_reward
      elif kind == "reset":
        nxt = 0
      else:
        nxt = max(i - int(kind.split("_")[1]), 0)
      transitions[i, a, nxt] = 1.0
  for t in (goal, dead):
    transitions[t, :, t] = 1.0
  terminal = np.zeros(num_states, bool)
  terminal[[goal, dead]] = True
  mdp = tabular.TabularMDP(transitions=transitions, rewards=rewards, discount=discount,
                           terminal=terminal, prior_logits=np.zeros((num_states, NUM_ACTIONS)),
                           values=np.zeros(num_states))
  return mdp, kinds


def chain_problem(seed: int, network: str, num_roots: int, *, length: int = CHAIN_LENGTH,
                  visible: int = CHAIN_VISIBLE, min_steps: int = CHAIN_MIN_STEPS) -> Problem:
  """The corridor with a value network that is uninformative (0) far from the goal.

  Roots: positions `i <= length − visible − min_steps`, from which at least
  `min_steps` correct moves are needed to reach a position whose network
  value is informative (`num_roots` of them at random if there are more).
  """
  mdp, _ = chain_mdp(seed, length=length)
  _, v_star = tabular.solve(mdp)
  positions = np.arange(mdp.num_states)
  informative = mdp.terminal | (positions >= length - visible)
  value_target = np.where(informative, v_star, 0.0)
  candidates = np.arange(length - visible - min_steps + 1)
  roots = _choose_roots(candidates, num_roots, _rng(seed, "chain", "roots"))
  return from_tabular(mdp, family="chain", network=network, instance=seed, roots=roots,
                      max_successors=1, value_target=value_target)


# -- Tic-tac-toe --------------------------------------------------------------------------------

_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8),
          (2, 4, 6))


def ttt_winner(board) -> int:
  """1 or 2 if that player has three in a row, else 0 (`board`: 9 cells in {0, 1, 2})."""
  for a, b, c in _LINES:
    if board[a] != 0 and board[a] == board[b] == board[c]:
      return board[a]
  return 0


@functools.lru_cache(maxsize=1)
def tic_tac_toe_game():
  """Every reachable position with exact negamax values.

  Returns a dict of NumPy arrays: `boards` `[S, 9]` (0 empty, 1 X, 2 O; X
  moves first), `next_states` `[S, 9]` (illegal moves: -1), `rewards` `[S, 9]`
  (+1 for the winning move), `terminal` `[S]` (won or full), `legal` `[S, 9]`,
  `q_star` `[S, 9]` (illegal: -inf) and `v_star` `[S]`, from the view of the
  player to move (0 at terminal positions). State 0 is the empty board.
  """
  index: dict[tuple[int, ...], int] = {}
  boards: list[tuple[int, ...]] = []
  stack: list[tuple[int, ...]] = [(0,) * 9]
  index[(0,) * 9] = 0
  boards.append((0,) * 9)
  while stack:  # depth-first enumeration of reachable positions
    board = stack.pop()
    if ttt_winner(board) or all(board):
      continue
    player = 1 if board.count(1) == board.count(2) else 2
    for cell in range(9):
      if board[cell] == 0:
        nxt = board[:cell] + (player,) + board[cell + 1:]
        if nxt not in index:
          index[nxt] = len(boards)
          boards.append(nxt)
          stack.append(nxt)
  num = len(boards)
  next_states = np.full((num, 9), -1, np.int64)
  rewards = np.zeros((num, 9))
  terminal = np.zeros(num, bool)
  legal = np.zeros((num, 9), bool)
  for s, board in enumerate(boards):
    terminal[s] = bool(ttt_winner(board)) or all(board)
    if terminal[s]:
      continue
    player = 1 if board.count(1) == board.count(2) else 2
    for cell in range(9):
      if board[cell] == 0:
        nxt = board[:cell] + (player,) + board[cell + 1:]
        legal[s, cell] = True
        next_states[s, cell] = index[nxt]
        rewards[s, cell] = 1.0 if ttt_winner(nxt) == player else 0.0

  v_star = np.zeros(num)
  q_star = np.full((num, 9), -np.inf)
  # Every move adds a piece, so positions with more pieces come first in reverse order.
  order = sorted(range(num), key=lambda s: -sum(1 for c in boards[s] if c))
  for s in order:
    if terminal[s]:
      continue
    for move in np.flatnonzero(legal[s]):
      successor = next_states[s, move]
      q_star[s, move] = rewards[s, move] - (0.0 if terminal[successor] else v_star[successor])
    v_star[s] = q_star[s].max()
  return dict(boards=np.asarray(boards, np.int8), next_states=next_states, rewards=rewards,
              terminal=terminal, legal=legal, q_star=q_star, v_star=v_star)


def tic_tac_toe_problem(seed: int, network: str, num_roots: int) -> Problem:
  """Tic-tac-toe with a noisy network (`NETWORKS[network]`, drawn from `seed`) and
  `num_roots` random non-terminal positions whose legal moves differ in value."""
  game = tic_tac_toe_game()
  num = len(game["v_star"])
  terminal, legal = game["terminal"], game["legal"].copy()
  legal[terminal] = True  # absorbing: every action stays, uniform prior
  next_states = np.where(game["next_states"] >= 0, game["next_states"],
                         np.arange(num)[:, None])
  q_star = np.where(np.isfinite(game["q_star"]), game["q_star"], 0.0)
  next_states, probs, rewards, q_star = _illegal_as_worst(
      next_states[..., None], np.ones(next_states.shape + (1,)), game["rewards"], q_star, legal)
  v_star = game["v_star"]
  rng = _rng(seed, "tic_tac_toe", network)
  logits, values = _network(NETWORKS[network], q_star, v_star, legal, terminal, rng)
  q_legal = np.where(legal, q_star, np.inf)
  candidates = np.flatnonzero(~terminal & (v_star - q_legal.min(-1) > 1e-9))
  roots = _choose_roots(candidates, num_roots, _rng(seed, "tic_tac_toe", "roots"))
  return Problem(family="tic_tac_toe", network=network, instance=seed,
                 next_states=next_states.astype(np.int32), probs=probs, rewards=rewards,
                 terminal=terminal, legal=legal, discount=1.0, two_player=True,
                 q_star=q_star, v_star=v_star, prior_logits=logits, values=values, roots=roots)


FAMILIES = {
    "random_stochastic": functools.partial(random_problem, branching=3),
    "random_deterministic": functools.partial(random_problem, branching=1),
    "chain": chain_problem,
    "tic_tac_toe": tic_tac_toe_problem,
}


# -- One table for all problems, as an mctx model ----------------------------------------------


def merge(problems, max_successors: int | None = None):
  """All problems in one table: `(params, roots [R], offsets [P])`.

  Problem `p`'s state `s` becomes `offsets[p] + s`; `roots` are the global
  indices of every problem's roots, in order. `params` (JAX arrays) is what
  `model()` reads: `next_states [S, A, K]` int32, `log_probs [S, A, K]`,
  `rewards [S, A]`, `terminal [S]`, `discount [S]` (negative in two-player
  problems), `prior_logits [S, A]`, `values [S]`.
  """
  k = max_successors or max(p.next_states.shape[-1] for p in problems)
  offsets = np.cumsum([0] + [p.num_states for p in problems])[:-1]
  parts: dict[str, list[np.ndarray]] = {
      key: [] for key in ("next_states", "log_probs", "rewards", "terminal", "discount",
                          "prior_logits", "values")}
  for p, offset in zip(problems, offsets, strict=True):
    pad = k - p.next_states.shape[-1]
    ns = np.concatenate([p.next_states, np.repeat(p.next_states[..., :1], pad, -1)], -1)
    pr = np.concatenate([p.probs, np.zeros(p.probs.shape[:-1] + (pad,))], -1)
    parts["next_states"].append(ns + offset)
    parts["log_probs"].append(np.where(pr > 0, np.log(np.maximum(pr, 1e-38)), -np.inf))
    parts["rewards"].append(p.rewards)
    parts["terminal"].append(p.terminal)
    parts["discount"].append(np.full(p.num_states, -p.discount if p.two_player else p.discount))
    parts["prior_logits"].append(p.prior_logits)
    parts["values"].append(p.values)
  dtypes = dict(next_states=jnp.int32, terminal=jnp.bool_)
  params = {key: jnp.asarray(np.concatenate(v), dtypes.get(key, jnp.float32))
            for key, v in parts.items()}
  roots = np.concatenate([p.roots + o for p, o in zip(problems, offsets, strict=True)])
  return params, roots, offsets


def model():
  """mctx's `(root_fn, recurrent_fn)` over `params` from `merge`; the embedding is the state.

  `root_fn(params, states [B])`; `recurrent_fn` samples the successor from
  `rng_key` (a table with one successor per action takes it directly). The
  conventions are `tabular.parametric_model`'s.
  """

  def root_fn(params, states):
    states = jnp.asarray(states, jnp.int32)
    return mctx.RootFnOutput(prior_logits=params["prior_logits"][states],
                             value=params["values"][states], embedding=states)

  def recurrent_fn(params, rng_key, action, state):
    terminal = params["terminal"]
    successors = params["next_states"][state, action]  # [..., K]
    if successors.shape[-1] == 1:
      next_state = successors[..., 0]
    else:
      pick = jax.random.categorical(rng_key, params["log_probs"][state, action])
      next_state = jnp.take_along_axis(successors, pick[..., None], -1)[..., 0]
    next_state = jnp.where(terminal[state], state, next_state).astype(jnp.int32)
    reward = jnp.where(terminal[state], 0.0, params["rewards"][state, action])
    ends = terminal[state] | terminal[next_state]
    discount = jnp.where(ends, 0.0, params["discount"][state]).astype(jnp.float32)
    value = jnp.where(terminal[next_state], 0.0, params["values"][next_state])
    return mctx.RecurrentFnOutput(reward=reward, discount=discount,
                                  prior_logits=params["prior_logits"][next_state],
                                  value=value), next_state

  return root_fn, recurrent_fn
