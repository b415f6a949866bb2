"""`smctx.models`: true environment dynamics as mctx `(root_fn, recurrent_fn)`.

Expected numbers are worked out by hand on tic-tac-toe positions and on
jumanji's Snake, or taken from the environment's own `step` (never from the
model's output); game-theoretic values come from a negamax in this file.
"""

import functools
import typing

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx
from smctx import models

# pgx and Jumanji are optional (the `examples` extra, which `.ci/run` installs); without them the
# environment models have nothing to wrap, so their tests skip rather than fail.
NEEDS_EXTRA = "needs the optional environments: pip install -e '.[examples]'"

LOWEST = np.finfo(np.float32).min


# ----------------------------------------------------------------------------
# masked_logits


def test_masked_logits_shifts_legal_max_to_zero_and_floors_illegal():
  logits = jnp.array([[1.0, 5.0, 3.0, 1e30]])
  mask = jnp.array([[True, False, True, False]])
  out = models.masked_logits(logits, mask)
  np.testing.assert_array_equal(out, [[-2.0, LOWEST, 0.0, LOWEST]])


def test_masked_logits_all_illegal_row_gives_finite_uniform_softmax():
  logits = jnp.array([[1e38, -1e38, 0.0]])
  out = models.masked_logits(logits, jnp.zeros((1, 3), bool))
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(jax.nn.softmax(out), [[1 / 3] * 3], rtol=1e-6)


def test_pgx_model_rejects_games_of_more_than_two_players_and_bad_discounts():
  class ThreePlayers:
    num_players = 3

  class OnePlayer:
    num_players = 1

  with pytest.raises(ValueError, match="num_players"):
    models.pgx_model(ThreePlayers(), lambda p, o: None)
  with pytest.raises(ValueError, match="discount"):
    models.pgx_model(OnePlayer(), lambda p, o: None, discount=1.5)


@pytest.mark.parametrize("discount", [-0.1, 1.5])
def test_jumanji_model_rejects_discount_outside_unit_interval(discount):
  with pytest.raises(ValueError, match="discount"):
    models.jumanji_model(object(), lambda p, o: None, discount=discount)


# ----------------------------------------------------------------------------
# pgx tic-tac-toe

NUM_SQUARES = 9
NET = {"logit_scale": 0.1, "value": 0.5}
ZERO_NET = {"logit_scale": 0.0, "value": 0.0}


def ttt_apply(params, observation):
  """Logits `scale·a`; value `value·(pieces on the board)/9`: known by hand at every node."""
  batch = observation.shape[0]
  logits = params["logit_scale"] * jnp.broadcast_to(
      jnp.arange(NUM_SQUARES, dtype=jnp.float32), (batch, NUM_SQUARES))
  pieces = jnp.sum(observation.reshape(batch, -1).astype(jnp.float32), axis=-1)
  return logits, params["value"] * pieces / NUM_SQUARES


class TicTacToe(typing.NamedTuple):
  env: typing.Any
  root_fn: typing.Any
  recurrent_fn: typing.Any
  step: typing.Any
  keys_by_first_player: typing.Any


@pytest.fixture(scope="module")
def ttt():
  pgx = pytest.importorskip("pgx", reason=NEEDS_EXTRA)
  env = pgx.make("tic_tac_toe")
  root_fn, recurrent_fn = models.pgx_model(env, ttt_apply)
  init = jax.jit(env.init)
  # pgx draws the first player from the key: find one key for each.
  keys = {}
  for seed in range(32):
    key = jax.random.PRNGKey(seed)
    keys.setdefault(int(init(key).current_player), key)
  assert set(keys) == {0, 1}
  return TicTacToe(env, jax.jit(root_fn), jax.jit(recurrent_fn),
                   jax.jit(jax.vmap(env.step)), keys)


def _stack(*trees):
  return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)


def _position(ttt, moves, first_player=0):
  """The unbatched pgx state after `moves` (X moves first) from the start."""
  state = jax.jit(ttt.env.init)(ttt.keys_by_first_player[first_player])
  for move in moves:
    state = _stack(state)
    state = jax.tree_util.tree_map(lambda x: x[0], ttt.step(state, jnp.array([move])))
  return state


# Game A: X (player id 0) wins on the top row at ply 5; ply 6 steps the finished
# game. Game B: O (player id 0, as X is player id 1) wins on the middle row at ply 6.
GAME_ACTIONS = np.array([[0, 3, 1, 4, 2, 5],
                         [0, 3, 1, 4, 8, 5]])
GAME_FIRST_PLAYER = (0, 1)
EXPECTED_REWARD = np.array([[0, 0, 0, 0, 1, 0],
                            [0, 0, 0, 0, 0, 1]], np.float32)
EXPECTED_DISCOUNT = np.array([[-1, -1, -1, -1, 0, 0],
                              [-1, -1, -1, -1, -1, 0]], np.float32)
# Pieces after each ply (value = 0.5·pieces/9 while the game goes on).
EXPECTED_VALUE = 0.5 / 9 * np.array([[1, 2, 3, 4, 0, 0],
                                     [1, 2, 3, 4, 5, 0]], np.float32)
OCCUPIED = ([{0}, {0, 3}, {0, 1, 3}, {0, 1, 3, 4}, None, None],
            [{0}, {0, 3}, {0, 1, 3}, {0, 1, 3, 4}, {0, 1, 3, 4, 8}, None])  # None: game over


@pytest.fixture(scope="module")
def ttt_game(ttt):
  """Steps games A and B through `recurrent_fn` and through `env.step`."""
  state = _stack(*[_position(ttt, [], p) for p in GAME_FIRST_PLAYER])
  reference = state
  outputs, states, references = [], [], []
  for ply in range(GAME_ACTIONS.shape[1]):
    action = jnp.asarray(GAME_ACTIONS[:, ply], jnp.int32)
    output, state = ttt.recurrent_fn(NET, jax.random.PRNGKey(ply), action, state)
    reference = ttt.step(reference, action)
    outputs.append(output)
    states.append(state)
    references.append(reference)
  return outputs, states, references


def test_pgx_next_state_is_env_step(ttt_game):
  _, states, references = ttt_game
  for state, reference in zip(states, references, strict=True):
    chex.assert_trees_all_equal(state, reference)


def test_pgx_reward_is_from_the_movers_view(ttt_game):
  outputs, states, _ = ttt_game
  reward = np.stack([o.reward for o in outputs], axis=1)
  np.testing.assert_array_equal(reward, EXPECTED_REWARD)
  # The winners were player ids 0 (game A, X) and 0 (game B, O): pgx pays by id.
  np.testing.assert_array_equal(states[4].rewards[0], [1.0, -1.0])
  np.testing.assert_array_equal(states[5].rewards[1], [1.0, -1.0])


def test_pgx_discount_is_minus_one_per_ply_and_zero_once_over(ttt_game):
  outputs, _, _ = ttt_game
  discount = np.stack([o.discount for o in outputs], axis=1)
  np.testing.assert_array_equal(discount, EXPECTED_DISCOUNT)


def test_pgx_value_is_network_value_at_next_state_and_zero_at_terminal(ttt_game):
  outputs, _, _ = ttt_game
  value = np.stack([o.value for o in outputs], axis=1)
  np.testing.assert_allclose(value, EXPECTED_VALUE, rtol=1e-6)


def test_pgx_prior_masks_occupied_squares(ttt_game):
  outputs, states, _ = ttt_game
  for game in range(2):
    for ply, occupied in enumerate(OCCUPIED[game]):
      logits = np.asarray(outputs[ply].prior_logits[game])
      legal = np.asarray(states[ply].legal_action_mask[game])
      if occupied is None:  # pgx makes every action legal at a terminal state
        expected_legal = np.ones(NUM_SQUARES, bool)
      else:
        expected_legal = np.array([a not in occupied for a in range(NUM_SQUARES)])
      np.testing.assert_array_equal(legal, expected_legal)
      np.testing.assert_array_equal(logits == LOWEST, ~expected_legal)
      best = max(a for a in range(NUM_SQUARES) if expected_legal[a])
      expected = 0.1 * (np.arange(NUM_SQUARES) - best)
      np.testing.assert_allclose(logits[expected_legal], expected[expected_legal], atol=1e-6)


def test_pgx_root_fn_masks_prior_and_embeds_state(ttt):
  state = _stack(_position(ttt, [4, 0]))
  root = ttt.root_fn(NET, jax.random.PRNGKey(0), state)
  expected_legal = np.array([a not in (0, 4) for a in range(NUM_SQUARES)])
  np.testing.assert_array_equal(root.prior_logits[0] == LOWEST, ~expected_legal)
  np.testing.assert_allclose(root.value, [0.5 * 2 / 9], rtol=1e-6)
  chex.assert_trees_all_equal(root.embedding, state)


def _negamax(ttt, state):
  """Game value for the player to move, by exhaustive search through `recurrent_fn`."""
  children = jax.tree_util.tree_map(
      lambda x: jnp.broadcast_to(x, (NUM_SQUARES,) + x.shape), state)
  output, children = ttt.recurrent_fn(
      ZERO_NET, jax.random.PRNGKey(0), jnp.arange(NUM_SQUARES, dtype=jnp.int32), children)
  best = -np.inf
  for action in np.flatnonzero(np.asarray(state.legal_action_mask)):
    child = jax.tree_util.tree_map(lambda x, a=action: x[a], children)
    value = float(output.reward[action])
    if output.discount[action] != 0:
      value += float(output.discount[action]) * _negamax(ttt, child)
    best = max(best, value)
  return best


# X to move in each. Values by hand:
#   XX. / OO. / ...  X completes the top row: +1.
#   OO. / OXX / .X.  O threatens 2 and 6, X has no line to finish: -1.
#   XOX / .O. / OX.  every reply blocks the last threat: a draw, 0.
@pytest.mark.parametrize("moves, expected", [
    ([0, 3, 1, 4], 1.0),
    ([4, 0, 5, 1, 7, 3], -1.0),
    ([0, 1, 2, 4, 7, 6], 0.0),
])
def test_pgx_negamax_through_model_gives_game_theoretic_value(ttt, moves, expected):
  assert _negamax(ttt, _position(ttt, moves)) == expected


@chex.dataclass(frozen=True)
class _ChainState:
  current_player: chex.Array
  observation: chex.Array
  rewards: chex.Array
  terminated: chex.Array
  truncated: chex.Array
  legal_action_mask: chex.Array


class _ChainEnv:
  """A pgx-like two-player chain that truncates at the second ply.

  Unlike pgx, it pays player 1 one point on every step, even from a finished
  game, so that the model itself must silence steps past the end.
  """

  num_players = 2

  def step(self, state, action, key):
    del action, key
    count = state.observation[0] + 1.0
    return _ChainState(
        current_player=1 - state.current_player,
        observation=jnp.array([count]),
        rewards=jnp.array([0.0, 1.0]),
        terminated=state.terminated,
        truncated=count >= 2.0,
        legal_action_mask=jnp.array([True, False]))


def test_pgx_truncation_ends_the_game_and_finished_games_pay_nothing():
  _, recurrent_fn = models.pgx_model(
      _ChainEnv(), lambda params, obs: (jnp.zeros((obs.shape[0], 2)), 0.25 + obs[:, 0]))
  # Batch: player 1 moves, player 0 moves, player 1 reaches the truncation,
  # player 1 steps a terminated game.
  state = _ChainState(
      current_player=jnp.array([1, 0, 1, 1], jnp.int32),
      observation=jnp.array([[0.0], [0.0], [1.0], [0.0]]),
      rewards=jnp.zeros((4, 2)),
      terminated=jnp.array([False, False, False, True]),
      truncated=jnp.zeros((4,), bool),
      legal_action_mask=jnp.ones((4, 2), bool))
  output, _ = recurrent_fn(None, jax.random.PRNGKey(0), jnp.zeros((4,), jnp.int32), state)
  np.testing.assert_array_equal(output.reward, [1.0, 0.0, 1.0, 0.0])
  np.testing.assert_array_equal(output.discount, [-1.0, -1.0, 0.0, 0.0])
  np.testing.assert_allclose(output.value, [1.25, 1.25, 0.0, 0.0])
  np.testing.assert_array_equal(output.prior_logits[:, 1], [LOWEST] * 4)


@functools.lru_cache(maxsize=None)
def _jitted_policy(policy, recurrent_fn, num_simulations):
  return jax.jit(functools.partial(
      policy, recurrent_fn=recurrent_fn, num_simulations=num_simulations))


# tsmcts runs at the budget of the test below (32) so that both share one
# compilation; the batch holds four independent searches of the position.
@pytest.mark.parametrize("policy, num_simulations",
                         [(smctx.tsmcts_policy, 32), (mctx.gumbel_muzero_policy, 64)],
                         ids=["tsmcts", "gumbel_muzero"])
def test_pgx_search_with_zero_network_takes_the_immediate_win(ttt, policy, num_simulations):
  # XX. / OO. / ...: only square 2 wins; O wins at 5 unless X takes 2 or 5.
  state = _stack(*[_position(ttt, [0, 3, 1, 4], p) for p in (0, 1, 0, 1)])
  root = ttt.root_fn(ZERO_NET, jax.random.PRNGKey(0), state)
  search = _jitted_policy(policy, ttt.recurrent_fn, num_simulations)
  for seed in range(2):
    out = search(ZERO_NET, jax.random.PRNGKey(seed), root,
                 invalid_actions=~state.legal_action_mask)
    np.testing.assert_array_equal(out.action, [2, 2, 2, 2])


@pytest.mark.parametrize("policy", [smctx.tsmcts_policy, smctx.smc_policy],
                         ids=["tsmcts", "smc"])
def test_pgx_model_inside_smctx_policies_under_jit(ttt, policy):
  state = _stack(_position(ttt, []), _position(ttt, [4], 1),
                 _position(ttt, [0, 3, 1, 4]), _position(ttt, [4, 0, 5, 1, 7, 3], 1))
  root = ttt.root_fn(NET, jax.random.PRNGKey(0), state)
  out = _jitted_policy(policy, ttt.recurrent_fn, 32)(
      NET, jax.random.PRNGKey(1), root, invalid_actions=~state.legal_action_mask)
  legal = np.asarray(state.legal_action_mask)
  assert np.all(legal[np.arange(4), np.asarray(out.action)])
  weights = np.asarray(out.action_weights)
  assert np.all(np.isfinite(weights))
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(weights[~legal], 0.0, atol=1e-6)


# ----------------------------------------------------------------------------
# jumanji

GAMMA = 0.9
SNAKE_NET = {"logit_scale": 0.1, "value": 0.7}


def snake_apply(params, observation):
  """Logits `scale·a`; value depends on the grid so that the node it is read at matters."""
  grid = observation.grid
  batch = grid.shape[0]
  logits = params["logit_scale"] * jnp.broadcast_to(jnp.arange(4, dtype=jnp.float32), (batch, 4))
  cells = jnp.arange(grid[0].size, dtype=jnp.float32).reshape(grid.shape[1:])
  value = params["value"] * jnp.tanh(jnp.sum(grid * cells, axis=(1, 2, 3)) / 100.0)
  return logits, value


class Snake(typing.NamedTuple):
  env: typing.Any
  root_fn: typing.Any
  recurrent_fn: typing.Any
  reset: typing.Any
  step: typing.Any


@pytest.fixture(scope="module")
def snake():
  jumanji = pytest.importorskip("jumanji", reason=NEEDS_EXTRA)
  env = jumanji.environments.Snake(num_rows=5, num_cols=5, time_limit=50)
  root_fn, recurrent_fn = models.jumanji_model(env, snake_apply, discount=GAMMA)
  return Snake(env, jax.jit(root_fn), jax.jit(recurrent_fn),
               jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step)))


def _expected_snake_output(timestep):
  """What the model must return, from the environment's own timestep."""
  logits, value = snake_apply(SNAKE_NET, timestep.observation)
  mask = np.asarray(timestep.observation.action_mask)
  return dict(
      reward=np.asarray(timestep.reward),
      discount=GAMMA * np.asarray(timestep.discount),
      value=np.where(np.asarray(timestep.discount) == 0, 0.0, np.asarray(value)),
      legal=mask,
  )


def test_jumanji_random_actions_match_env_step(snake):
  state, timestep = snake.reset(jax.random.split(jax.random.PRNGKey(0), 2))
  reference = state
  actions = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (12, 2), 0, 4))
  num_terminations = 0
  for t, action in enumerate(actions):
    action = jnp.asarray(action, jnp.int32)
    output, state = snake.recurrent_fn(SNAKE_NET, jax.random.PRNGKey(t), action, state)
    reference, timestep = snake.step(reference, action)
    chex.assert_trees_all_equal(state, reference)
    expected = _expected_snake_output(timestep)
    np.testing.assert_array_equal(output.reward, expected["reward"])
    np.testing.assert_allclose(output.discount, expected["discount"], rtol=1e-6)
    np.testing.assert_allclose(output.value, expected["value"], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(output.prior_logits) == LOWEST, ~expected["legal"])
    for leaf in (output.reward, output.discount, output.value, output.prior_logits):
      assert np.all(np.isfinite(leaf))
    num_terminations += int(np.sum(np.asarray(timestep.discount) == 0))
  assert num_terminations > 0  # the walk must have crossed a collision


def test_jumanji_collision_gives_zero_discount_and_value_then_stays_finite(snake):
  state, timestep = snake.reset(jax.random.PRNGKey(3)[None])
  root = snake.root_fn(SNAKE_NET, jax.random.PRNGKey(0), state, timestep.observation)
  chex.assert_trees_all_equal(root.embedding, state)
  up = jnp.zeros((1,), jnp.int32)
  row = int(state.head_position.row[0])
  # `row` moves up reach the top row, each with discount γ; the next leaves the board.
  for _ in range(row):
    output, state = snake.recurrent_fn(SNAKE_NET, jax.random.PRNGKey(0), up, state)
    np.testing.assert_allclose(output.discount, [GAMMA], rtol=1e-6)
    assert output.value[0] != 0.0
  top_row_logits = output.prior_logits if row else root.prior_logits
  assert top_row_logits[0, 0] == LOWEST  # `up` is masked on the top row
  output, state = snake.recurrent_fn(SNAKE_NET, jax.random.PRNGKey(0), up, state)
  np.testing.assert_array_equal(output.discount, [0.0])
  np.testing.assert_array_equal(output.value, [0.0])
  for _ in range(2):  # past the termination: the raw dynamics go on, finite
    output, state = snake.recurrent_fn(SNAKE_NET, jax.random.PRNGKey(0), up, state)
    for leaf in (output.reward, output.discount, output.value, output.prior_logits):
      assert np.all(np.isfinite(leaf))


class _CounterObservation(typing.NamedTuple):
  count: chex.Array
  action_mask: chex.Array


class _CounterEnv:
  """A jumanji-style chain: action 1 terminates, the third step truncates."""

  def step(self, count, action):
    from jumanji import types

    count = count + 1
    observation = _CounterObservation(count, jnp.array([True, count < 2]))
    reward = jnp.float32(10.0) * count
    timestep = jax.lax.cond(
        action == 1, types.termination,
        lambda r, o: jax.lax.cond(count >= 3, types.truncation, types.transition, r, o),
        reward, observation)
    return count, timestep


def _counter_apply(params, observation):
  del params
  batch = observation.count.shape[0]
  return jnp.zeros((batch, 2)), 0.5 + observation.count.astype(jnp.float32)


def test_jumanji_truncation_bootstraps_and_termination_does_not():
  pytest.importorskip("jumanji", reason=NEEDS_EXTRA)  # the fake env builds jumanji TimeSteps
  _, recurrent_fn = models.jumanji_model(_CounterEnv(), _counter_apply, discount=GAMMA)
  count = jnp.array([0, 0, 2], jnp.int32)
  action = jnp.array([0, 1, 0], jnp.int32)  # transition, termination, truncation
  output, count = jax.jit(recurrent_fn)(None, jax.random.PRNGKey(0), action, count)
  np.testing.assert_array_equal(count, [1, 1, 3])
  np.testing.assert_allclose(output.reward, [10.0, 10.0, 30.0])
  np.testing.assert_allclose(output.discount, [GAMMA, 0.0, GAMMA], rtol=1e-6)
  np.testing.assert_allclose(output.value, [1.5, 0.0, 3.5])
  np.testing.assert_array_equal(output.prior_logits[:, 1] == LOWEST, [False, False, True])


@pytest.mark.parametrize("policy", [smctx.tsmcts_policy, smctx.smc_policy],
                         ids=["tsmcts", "smc"])
def test_jumanji_model_inside_smctx_policies_under_jit(snake, policy):
  state, timestep = snake.reset(jax.random.split(jax.random.PRNGKey(5), 4))
  for _ in range(2):  # a couple of legal moves, so that the roots differ from a reset
    action = jnp.argmax(timestep.observation.action_mask, axis=-1).astype(jnp.int32)
    state, timestep = snake.step(state, action)
  observation = timestep.observation
  assert np.all(np.asarray(timestep.discount) == 1.0)
  root = snake.root_fn(SNAKE_NET, jax.random.PRNGKey(0), state, observation)
  out = _jitted_policy(policy, snake.recurrent_fn, 32)(
      SNAKE_NET, jax.random.PRNGKey(1), root, invalid_actions=~observation.action_mask)
  legal = np.asarray(observation.action_mask)
  assert np.all(legal[np.arange(4), np.asarray(out.action)])
  weights = np.asarray(out.action_weights)
  assert np.all(np.isfinite(weights))
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------
# A single-player pgx game (2048): the adapter against pgx's own step function.


def _game_2048_apply(params, observation):
  """A fixed network: logits from the board's first row, value = sum of the observation / 100."""
  del params
  batch = observation.shape[0]
  flat = observation.reshape(batch, -1).astype(jnp.float32)
  return flat[:, :4] - flat[:, 4:8], jnp.sum(flat, axis=-1) / 100.0


def test_pgx_single_player_model_is_env_step_with_discount_gamma():
  pgx = pytest.importorskip("pgx", reason=NEEDS_EXTRA)
  env = pgx.make("2048")
  gamma = 0.97
  root_fn, recurrent_fn = models.pgx_model(env, _game_2048_apply, discount=gamma)
  batch = 3
  state = jax.jit(jax.vmap(env.init))(jax.random.split(jax.random.PRNGKey(0), batch))
  root = jax.jit(root_fn)(None, jax.random.PRNGKey(1), state)
  logits, value = _game_2048_apply(None, state.observation)
  np.testing.assert_allclose(root.value, value, rtol=1e-6)
  assert np.all(np.asarray(root.prior_logits)[~np.asarray(state.legal_action_mask)]
                == np.finfo(np.float32).min)
  step = jax.jit(recurrent_fn)
  reference_step = jax.jit(jax.vmap(env.step))
  rng = np.random.default_rng(0)
  for t in range(12):
    legal = np.asarray(state.legal_action_mask)
    action = jnp.asarray([rng.choice(np.flatnonzero(row)) for row in legal], jnp.int32)
    key = jax.random.PRNGKey(100 + t)
    output, next_state = step(None, key, action, state)
    # The same per-game keys as the adapter splits from `key` (2048 places a random tile).
    reference = reference_step(state, action, jax.random.split(key, batch))
    for got, want in zip(jax.tree_util.tree_leaves(next_state),
                         jax.tree_util.tree_leaves(reference), strict=True):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    over = np.asarray(reference.terminated | reference.truncated)
    np.testing.assert_allclose(output.reward, np.asarray(reference.rewards)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(output.discount, np.where(over, 0.0, gamma), rtol=1e-6)
    _, next_value = _game_2048_apply(None, reference.observation)
    np.testing.assert_allclose(output.value, np.where(over, 0.0, next_value), rtol=1e-5)
    state = next_state
  assert np.any(np.asarray(output.reward) > 0)  # merges were paid along the way


@pytest.mark.parametrize("policy", ["tsmcts_policy",
                                    pytest.param("smc_policy", marks=pytest.mark.slow)])
def test_pgx_single_player_game_searches_under_jit(policy):
  pgx = pytest.importorskip("pgx", reason=NEEDS_EXTRA)
  env = pgx.make("2048")
  root_fn, recurrent_fn = models.pgx_model(env, _game_2048_apply, discount=0.99)
  state = jax.jit(jax.vmap(env.init))(jax.random.split(jax.random.PRNGKey(3), 2))

  @jax.jit
  def search(key, state):
    root = root_fn(None, key, state)
    return getattr(smctx, policy)(None, key, root, recurrent_fn, num_simulations=16,
                                  invalid_actions=~state.legal_action_mask)

  out = search(jax.random.PRNGKey(4), state)
  legal = np.asarray(state.legal_action_mask)
  assert legal[np.arange(2), np.asarray(out.action)].all()
  np.testing.assert_allclose(np.asarray(out.action_weights).sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.asarray(out.action_weights)[~legal] == 0)


# ----------------------------------------------------------------------------
# gymnax: the adapter against the environment's own `step_env`.


def _cartpole_apply(params, observation):
  """A fixed network: logits (x, -x) from the pole angle, value = 1 - |angle|."""
  del params
  angle = observation[:, 2]
  return jnp.stack([angle, -angle], axis=-1), 1.0 - jnp.abs(angle)


def test_gymnax_model_is_step_env_and_a_finished_episode_is_absorbing():
  gymnax = pytest.importorskip("gymnax", reason=NEEDS_EXTRA)
  env, env_params = gymnax.make("CartPole-v1")
  gamma, batch = 0.95, 2
  root_fn, recurrent_fn = models.gymnax_model(env, env_params, _cartpole_apply, discount=gamma)
  reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
  observation, state = reset(jax.random.split(jax.random.PRNGKey(0), batch), env_params)
  root = jax.jit(root_fn)(None, jax.random.PRNGKey(1), state, observation)
  logits, value = _cartpole_apply(None, observation)
  np.testing.assert_allclose(root.prior_logits, logits, rtol=1e-6)
  np.testing.assert_allclose(root.value, value, rtol=1e-6)
  step = jax.jit(recurrent_fn)
  reference_step = jax.jit(jax.vmap(env.step_env, in_axes=(0, 0, 0, None)))
  embedding, reference, finished = root.embedding, state, np.zeros(batch, bool)
  saw_done = False
  for t in range(40):  # always pushing left: the pole falls within 40 steps
    action = jnp.zeros((batch,), jnp.int32)
    key = jax.random.PRNGKey(10 + t)
    output, embedding = step(None, key, action, embedding)
    obs, reference_next, reward, done, _ = reference_step(
        jax.random.split(key, batch), reference, action, env_params)
    done = np.asarray(done)
    now_over = finished | done
    want_reward = np.where(finished, 0.0, np.asarray(reward))
    np.testing.assert_allclose(output.reward, want_reward, rtol=1e-6)
    np.testing.assert_allclose(output.discount, np.where(now_over, 0.0, gamma), rtol=1e-6)
    _, next_value = _cartpole_apply(None, obs)
    np.testing.assert_allclose(output.value, np.where(now_over, 0.0, next_value), rtol=1e-5)
    # The adapter's state is gymnax's until the episode ends, then stays put.
    for got, new, old in zip(jax.tree_util.tree_leaves(embedding[0]),
                             jax.tree_util.tree_leaves(reference_next),
                             jax.tree_util.tree_leaves(reference), strict=True):
      mask = finished.reshape((batch,) + (1,) * (np.ndim(new) - 1))
      np.testing.assert_allclose(np.asarray(got), np.where(mask, old, new), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(embedding[1]), now_over)
    saw_done |= bool(done.any())
    freeze = functools.partial(
        lambda was, old, new: np.where(was.reshape((batch,) + (1,) * (np.ndim(new) - 1)),
                                       old, new), finished)
    reference = jax.tree_util.tree_map(freeze, reference, reference_next)
    finished = now_over
  assert saw_done and finished.all()


def test_gymnax_model_inside_tsmcts_under_jit():
  gymnax = pytest.importorskip("gymnax", reason=NEEDS_EXTRA)
  env, env_params = gymnax.make("CartPole-v1")
  root_fn, recurrent_fn = models.gymnax_model(env, env_params, _cartpole_apply)
  observation, state = jax.vmap(env.reset, in_axes=(0, None))(
      jax.random.split(jax.random.PRNGKey(2), 3), env_params)

  @jax.jit
  def search(key):
    root = root_fn(None, key, state, observation)
    return smctx.tsmcts_policy(None, key, root, recurrent_fn, num_simulations=16)

  out = search(jax.random.PRNGKey(3))
  assert set(np.asarray(out.action).tolist()) <= {0, 1}
  np.testing.assert_allclose(np.asarray(out.action_weights).sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.isfinite(np.asarray(out.search_tree.node_values[:, 0])))


class _GymnaxCounterEnv:
  """A fake gymnax env: the state is a count, `done` only on reaching 2 (stepping past gives
  `done = False` again, so only the adapter's own flag keeps a finished episode over)."""

  def step_env(self, key, state, action, params):
    del key, action, params
    count = state + 1
    return count.astype(jnp.float32)[None], count, jnp.float32(1.0), count == 2, {}


def test_gymnax_finished_episode_stays_over_when_the_env_forgets_it():
  def apply(params, observation):
    del params
    return jnp.zeros((observation.shape[0], 2)), 0.5 + observation[:, 0]

  _, recurrent_fn = models.gymnax_model(_GymnaxCounterEnv(), None, apply, discount=0.9)
  # Batch: a plain step, the step that ends the episode, a step of a finished episode.
  embedding = (jnp.array([0, 1, 2], jnp.int32), jnp.array([False, False, True]))
  output, (count, over) = jax.jit(recurrent_fn)(
      None, jax.random.PRNGKey(0), jnp.zeros((3,), jnp.int32), embedding)
  np.testing.assert_array_equal(count, [1, 2, 2])
  np.testing.assert_array_equal(over, [False, True, True])
  np.testing.assert_allclose(output.reward, [1.0, 1.0, 0.0])
  np.testing.assert_allclose(output.discount, [0.9, 0.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(output.value, [1.5, 0.0, 0.0])
