"""The drop-in promise: mctx call sites work unchanged with smctx policies.

The call under test is the one pgx's AlphaZero example makes with
`mctx.gumbel_muzero_policy`, on a connect-four-like toy (7 columns, two
players, discount -1, full columns illegal).
"""

import functools

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from tests import policies

NUM_COLUMNS = 7
NUM_ROWS = 6
# smctx's searches and the one they replace.
POLICIES = {**policies.POLICIES, "mctx": mctx.gumbel_muzero_policy}
SMCTX_POLICIES = list(policies.POLICIES)

# Column heights of four boards: two with full columns, one with a single
# legal column. Board 0 wins at once by a third piece in the centre column.
HEIGHTS = np.array([
    [6, 0, 0, 2, 0, 0, 6],
    [0, 6, 6, 6, 6, 6, 0],
    [1, 2, 3, 0, 1, 6, 2],
    [6, 6, 6, 6, 6, 6, 3],
], np.int32)
BATCH = HEIGHTS.shape[0]


def _network(params, heights):
  """Toy network: prefers central columns, illegal ones at the minimum logit (as pgx)."""
  centre = -jnp.abs(jnp.arange(NUM_COLUMNS) - NUM_COLUMNS // 2).astype(jnp.float32)
  logits = params["w"] * jnp.broadcast_to(centre, heights.shape)
  logits = logits - jnp.max(logits, axis=-1, keepdims=True)
  logits = jnp.where(heights < NUM_ROWS, logits, jnp.finfo(jnp.float32).min)
  value = params["v"] * jnp.tanh(0.1 * (heights[:, 3].astype(jnp.float32) - 2.0))
  return logits, value


def recurrent_fn(params, rng_key, action, embedding):
  """pgx-style: `embedding` is the game state pytree."""
  del rng_key
  heights, player = embedding["heights"], embedding["player"]
  height_at = jnp.take_along_axis(heights, action[:, None], axis=1)[:, 0]
  heights = heights + jax.nn.one_hot(action, NUM_COLUMNS, dtype=jnp.int32)
  win = (action == NUM_COLUMNS // 2) & (height_at == 2)
  full = jnp.all(heights >= NUM_ROWS, axis=-1)
  reward = win.astype(jnp.float32)
  discount = jnp.where(win | full, 0.0, -1.0)
  logits, value = _network(params, heights)
  value = jnp.where(win | full, 0.0, value)
  next_state = {"heights": heights, "player": 1 - player}
  return mctx.RecurrentFnOutput(reward=reward, discount=discount, prior_logits=logits,
                                value=value), next_state


def _inputs():
  params = {"w": jnp.float32(0.5), "v": jnp.float32(0.3)}
  state = {"heights": jnp.asarray(HEIGHTS), "player": jnp.zeros((BATCH,), jnp.int32)}
  logits, value = _network(params, state["heights"])
  root = mctx.RootFnOutput(prior_logits=logits, value=value, embedding=state)
  legal_action_mask = state["heights"] < NUM_ROWS
  return params, root, legal_action_mask


@functools.cache
def _pgx_search(name):
  policy = POLICIES[name]

  def search(params, key, root, legal_action_mask):
    # Verbatim from pgx's AlphaZero example (examples/alphazero/train.py).
    policy_output = policy(
        params=params,
        rng_key=key,
        root=root,
        recurrent_fn=recurrent_fn,
        num_simulations=32,
        invalid_actions=~legal_action_mask,
        qtransform=mctx.qtransform_completed_by_mix_value,
        gumbel_scale=1.0,
    )
    return policy_output, policy_output.search_tree.summary()
  return jax.jit(search)


@pytest.mark.parametrize(
    "name", policies.NAMES_SLOW_BUT_TSMCTS + [pytest.param("mctx", marks=pytest.mark.slow)])
def test_pgx_alphazero_call_works_unchanged(name):
  params, root, legal = _inputs()
  out, summary = _pgx_search(name)(params, jax.random.key(0), root, legal)
  ref, ref_summary = _pgx_search("mctx")(params, jax.random.key(0), root, legal)
  assert type(out) is mctx.PolicyOutput
  assert isinstance(out.search_tree, mctx.Tree)
  # The budget, as mctx's tree reports it (there: its node count minus one).
  assert out.search_tree.num_simulations == ref.search_tree.num_simulations == 32
  assert out.action.shape == ref.action.shape == (BATCH,)
  assert out.action.dtype == ref.action.dtype == jnp.int32
  assert out.action_weights.shape == ref.action_weights.shape == (BATCH, NUM_COLUMNS)
  assert out.action_weights.dtype == ref.action_weights.dtype == jnp.float32
  for field in ("visit_counts", "visit_probs", "value", "qvalues"):
    got, want = getattr(summary, field), getattr(ref_summary, field)
    assert got.shape == want.shape, field
    assert got.dtype == want.dtype, field
    assert np.all(np.isfinite(np.asarray(got))), field
  root_value = out.search_tree.node_values[:, mctx.Tree.ROOT_INDEX]
  assert root_value.shape == (BATCH,) and np.all(np.isfinite(np.asarray(root_value)))
  # The legal-move contract.
  legal = np.asarray(legal)
  action, weights = np.asarray(out.action), np.asarray(out.action_weights)
  assert np.all(legal[np.arange(BATCH), action])
  assert np.all(weights[~legal] == 0.0)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  assert action[3] == 6  # the only legal column.


def _positional_equals_keyword(policy, max_depth, loop_fn):
  params, root, legal = _inputs()
  key = jax.random.key(1)
  positional = lambda: policy(params, key, root, recurrent_fn, 32, ~legal, max_depth, loop_fn)
  keyword = lambda: policy(params=params, rng_key=key, root=root, recurrent_fn=recurrent_fn,
                           num_simulations=32, invalid_actions=~legal, max_depth=max_depth,
                           loop_fn=loop_fn)
  return str(jax.make_jaxpr(positional)()) == str(jax.make_jaxpr(keyword)())


@pytest.mark.parametrize("name", SMCTX_POLICIES)
def test_mctx_positional_argument_order(name):
  policy = POLICIES[name]
  # Same program as the keyword call that runs in the test above...
  assert _positional_equals_keyword(policy, None, jax.lax.fori_loop)
  # ...and a user's own `loop_fn` and `max_depth` in their mctx positions.
  calls = []

  def my_fori_loop(lower, upper, body, init):
    calls.append((lower, upper))
    return jax.lax.fori_loop(lower, upper, body, init)

  assert _positional_equals_keyword(policy, 2, my_fori_loop)
  assert calls, "loop_fn was not used"
  # Run it: `max_depth=1` lands in its slot (one step per halving iteration).
  params, root, legal = _inputs()
  calls.clear()
  out = jax.jit(lambda p, k, r, m: policy(p, k, r, recurrent_fn, 32, ~m, 1, my_fori_loop))(
      params, jax.random.key(2), root, legal)
  assert calls
  assert out.action.shape == (BATCH,) and out.action.dtype == jnp.int32
  assert out.action_weights.shape == (BATCH, NUM_COLUMNS)
  np.testing.assert_array_equal(np.asarray(out.search_tree.extra_data.depth), 1)
  legal = np.asarray(legal)
  assert np.all(legal[np.arange(BATCH), np.asarray(out.action)])
  assert np.all(np.asarray(out.action_weights)[~legal] == 0.0)


def _masked_softmax(logits, invalid):
  logits = np.where(invalid, -np.inf, logits.astype(np.float64))
  logits = logits - logits.max(-1, keepdims=True)
  p = np.exp(logits)
  return p / p.sum(-1, keepdims=True)


@functools.cache
def _qtransform_search(name, qtransform_name):
  qtransform = {
      "parent_and_siblings": mctx.qtransform_by_parent_and_siblings,
      "mix_value_scaled": functools.partial(mctx.qtransform_completed_by_mix_value,
                                            value_scale=0.3, use_mixed_value=False),
  }[qtransform_name]

  def search(params, key, root, legal):
    return POLICIES[name](params, key, root, recurrent_fn, 32, ~legal, qtransform=qtransform)
  return jax.jit(search), qtransform


@pytest.mark.parametrize("name", [pytest.param("smcts", marks=pytest.mark.slow), "tsmcts"])
def test_mctx_completed_by_mix_value_with_options(name):
  params, root, legal = _inputs()
  search, qtransform = _qtransform_search(name, "mix_value_scaled")
  out = search(params, jax.random.key(3), root, legal)
  tree = out.search_tree
  # The improved policy is mctx's own formula on the returned root tree:
  # softmax(logits + qtransform(tree, root)) over legal actions.
  sigma = jax.vmap(qtransform, in_axes=[0, None])(tree, mctx.Tree.ROOT_INDEX)
  expected = _masked_softmax(np.asarray(root.prior_logits) + np.asarray(sigma),
                             ~np.asarray(legal))
  np.testing.assert_allclose(np.asarray(out.action_weights), expected, atol=2e-5)
  # The options are honoured: without them the policy differs.
  default, _ = _pgx_search(name)(params, jax.random.key(3), root, legal)
  assert not np.allclose(np.asarray(out.action_weights), np.asarray(default.action_weights),
                         atol=1e-3)


@pytest.mark.parametrize("name", [pytest.param("smcts", marks=pytest.mark.slow), "tsmcts"])
def test_mctx_qtransform_by_parent_and_siblings(name):
  params, root, legal = _inputs()
  search, _ = _qtransform_search(name, "parent_and_siblings")
  out = search(params, jax.random.key(3), root, legal)
  summary = out.search_tree.summary()
  weights = np.asarray(out.action_weights, np.float64)
  legal_np = np.asarray(legal)
  assert np.all(weights[~legal_np] == 0.0)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  # This qtransform maps Q into [0, 1]: the policy moves each legal action's
  # log-probability away from the prior's by a shift in [0, 1], and the
  # shift is monotone in Q over the visited actions.
  with np.errstate(divide="ignore"):
    log_prior = np.log(_masked_softmax(np.asarray(root.prior_logits), ~legal_np))
  q = np.asarray(summary.qvalues)
  visited = np.asarray(summary.visit_counts) > 0
  for b in range(BATCH):
    shift = np.log(weights[b, legal_np[b]]) - log_prior[b, legal_np[b]]
    assert shift.max() - shift.min() <= 1.0 + 1e-4, shift
    rated = visited[b][legal_np[b]]
    order = np.argsort(q[b, legal_np[b]][rated], kind="stable")
    assert np.all(np.diff(shift[rated][order]) >= -1e-4), (q[b], shift)
  # The transform is used: the default one moves the policy further.
  default, _ = _pgx_search(name)(params, jax.random.key(3), root, legal)
  assert not np.allclose(weights, np.asarray(default.action_weights), atol=1e-3)


@pytest.mark.parametrize("name", SMCTX_POLICIES)
def test_docstring_states_shapes(name):
  doc = POLICIES[name].__doc__
  assert doc
  assert "[B, A]" in doc
  for word in ("invalid_actions", "action_weights", "num_simulations", "recurrent_fn"):
    assert word in doc, word
