"""The root summary tree: root statistics read back through mctx's own `Tree` API.

Expected values are the inputs themselves (or NumPy arithmetic on them): what
goes in as per-action statistics must come out of `tree.summary()`,
`tree.qvalues(ROOT_INDEX)` and a qtransform unchanged.
"""

import jax
import jax.numpy as jnp
import mctx
import numpy as np

from smctx._src import summary_tree

ROOT = mctx.Tree.ROOT_INDEX
rng = np.random.default_rng(0)
LOGITS = rng.normal(size=(3, 5)).astype(np.float32)
RAW_VALUE = np.array([0.4, -1.0, 2.5], np.float32)
NODE_VALUE = np.array([0.7, -0.3, 1.9], np.float32)
VISITS = np.array([[3, 0, 5, 1, 0],
                   [2, 0, 0, 0, 6],
                   [0, 0, 0, 0, 0]], np.float32)
# Arbitrary floats where visited (bit-exact round trip expected), garbage where not.
QVALUES = np.where(VISITS > 0, rng.normal(size=(3, 5)), 1e3).astype(np.float32)
INVALID = np.array([[False, True, False, False, True],
                    [False] * 5,
                    [True, False, False, False, False]])


def _tree(root_only=False, invalid=INVALID):
  return summary_tree.root_tree(
      prior_logits=jnp.asarray(LOGITS), raw_value=jnp.asarray(RAW_VALUE),
      qvalues=jnp.asarray(QVALUES), visits=jnp.asarray(VISITS),
      node_value=jnp.asarray(NODE_VALUE),
      invalid_actions=None if invalid is None else jnp.asarray(invalid), root_only=root_only)


def test_summary_returns_the_visit_counts_and_root_value():
  summary = _tree().summary()
  np.testing.assert_array_equal(summary.visit_counts, VISITS)
  np.testing.assert_array_equal(summary.value, NODE_VALUE)
  total = VISITS.sum(-1, keepdims=True)
  want_probs = np.where(total > 0, VISITS / np.maximum(total, 1), 1 / 5)  # mctx: uniform if none
  np.testing.assert_allclose(summary.visit_probs, want_probs, rtol=1e-6)


def test_summary_qvalues_are_the_inputs_where_visited_and_zero_elsewhere():
  summary = _tree().summary()
  np.testing.assert_array_equal(summary.qvalues, np.where(VISITS > 0, QVALUES, 0.0))


def test_root_qvalues_are_exact():
  # Bit-exact: the child's Q is stored with reward 0 and discount 1.
  tree = _tree()
  got = tree.qvalues(jnp.full((3,), ROOT))
  np.testing.assert_array_equal(np.asarray(got)[VISITS > 0], QVALUES[VISITS > 0])


def test_children_nodes_carry_their_actions_statistics():
  tree = _tree()
  num_actions = LOGITS.shape[1]
  child = np.arange(1, num_actions + 1)
  np.testing.assert_array_equal(tree.children_index[:, ROOT],
                                np.where(VISITS > 0, child, mctx.Tree.UNVISITED))
  np.testing.assert_array_equal(tree.node_visits[:, ROOT], VISITS.sum(-1))
  np.testing.assert_array_equal(tree.node_visits[:, 1:], VISITS)
  np.testing.assert_array_equal(tree.raw_values[:, ROOT], RAW_VALUE)
  visited = VISITS > 0
  np.testing.assert_array_equal(np.asarray(tree.node_values[:, 1:])[visited], QVALUES[visited])
  np.testing.assert_array_equal(tree.parents[:, ROOT], [mctx.Tree.NO_PARENT] * 3)
  np.testing.assert_array_equal(tree.parents[:, 1:], np.zeros((3, num_actions)))
  np.testing.assert_array_equal(tree.action_from_parent[:, 1:],
                                np.broadcast_to(np.arange(num_actions), (3, num_actions)))
  np.testing.assert_array_equal(tree.children_prior_logits[:, ROOT], LOGITS)


def test_root_invalid_actions_are_stored_and_default_to_none_invalid():
  np.testing.assert_array_equal(_tree().root_invalid_actions, INVALID)
  np.testing.assert_array_equal(_tree(invalid=None).root_invalid_actions,
                                np.zeros((3, 5), bool))


def test_root_only_tree_has_the_root_node_alone_with_the_same_root_rows():
  full, root_only = _tree(), _tree(root_only=True)
  assert root_only.node_values.shape == (3, 1)
  assert root_only.children_visits.shape == (3, 1, 5)
  for field in ("children_visits", "children_values", "children_prior_logits",
                "children_rewards", "children_discounts", "children_index"):
    np.testing.assert_array_equal(getattr(root_only, field)[:, ROOT],
                                  getattr(full, field)[:, ROOT], err_msg=field)
  np.testing.assert_array_equal(root_only.raw_values[:, ROOT], RAW_VALUE)
  np.testing.assert_array_equal(root_only.node_values[:, ROOT], NODE_VALUE)


def test_a_qtransform_at_the_root_gives_the_same_result_on_both_trees():
  transform = jax.vmap(mctx.qtransform_completed_by_mix_value, in_axes=(0, None))
  np.testing.assert_array_equal(transform(_tree(root_only=True), ROOT), transform(_tree(), ROOT))


def test_with_budget_reports_the_budget_through_jit_and_vmap():
  tree = summary_tree.with_budget(_tree(), 256)
  assert isinstance(tree, mctx.Tree) and tree.num_simulations == 256
  assert _tree().num_simulations == 5  # mctx's own count: nodes - 1, here the actions.
  jitted = jax.jit(lambda t: t.replace(node_values=t.node_values + 1.0))(tree)
  assert type(jitted) is type(tree) and jitted.num_simulations == 256
  per_row = jax.vmap(lambda t: t)(tree)
  assert per_row.num_simulations == 256
  assert summary_tree.with_budget(_tree(), 64).num_simulations == 64
  for got, want in zip(jax.tree_util.tree_leaves(jitted.summary()),
                       jax.tree_util.tree_leaves(_tree().summary()), strict=True):
    np.testing.assert_allclose(got, want + (1.0 if got.shape == NODE_VALUE.shape else 0.0))
