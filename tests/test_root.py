"""The root before and after a search (`root.py`): preparation, the masked argmax, the output.

Expected values are written by hand or computed with NumPy from the inputs.
"""

import types

import jax
import jax.numpy as jnp
import mctx
import numpy as np

from smctx._src import actions
from smctx._src import root as root_lib
from smctx._src import summary_tree

MIN_LOGIT = float(np.finfo(np.float32).min)
EULER_GAMMA = 0.5772156649015329

LOGITS = np.array([[0.3, -1.2, 2.0, 0.0],
                   [1.5, 0.2, -0.4, 0.9],
                   [-0.5, 0.5, 1.0, -1.0]], np.float32)
VALUE = np.array([0.4, -1.0, 2.5], np.float32)
# Row 0: all valid; row 1: its best action invalid; row 2: no valid action.
INVALID = np.array([[False, False, False, False],
                    [True, False, True, False],
                    [True, True, True, True]])


def _softmax(x):
  e = np.exp(x - np.max(x, axis=-1, keepdims=True))
  return e / np.sum(e, axis=-1, keepdims=True)


def _prepare(logits=LOGITS, value=VALUE, invalid=INVALID, gumbel_scale=1.0, seed=0):
  root = mctx.RootFnOutput(prior_logits=jnp.asarray(logits), value=jnp.asarray(value),
                           embedding=jnp.zeros((np.shape(value)[0], 2)))
  invalid = None if invalid is None else jnp.asarray(invalid)
  return root_lib.prepare(jax.random.PRNGKey(seed), root, invalid, gumbel_scale)


# --------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------

def test_prepare_masks_invalid_actions_at_the_minimum_logit():
  prepared = _prepare()
  logits = np.asarray(prepared.prior_logits)
  rows = [0, 1]  # the rows with a valid action
  assert np.all(logits[rows][INVALID[rows]] == MIN_LOGIT)
  assert np.all(logits[rows][~INVALID[rows]] <= 0.0)  # max-subtracted
  want = _softmax(np.where(INVALID[rows], -np.inf, LOGITS[rows]))
  np.testing.assert_allclose(jax.nn.softmax(logits[rows]), want, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(prepared.invalid_actions[:2], INVALID[:2])


def test_prepare_casts_logits_and_value_to_float32():
  prepared = _prepare(logits=LOGITS.astype(jnp.bfloat16), value=VALUE.astype(jnp.bfloat16))
  assert prepared.prior_logits.dtype == jnp.float32
  assert prepared.value.dtype == jnp.float32


def test_prepare_searches_a_row_with_no_valid_action_as_if_every_action_were_valid():
  prepared = _prepare()
  np.testing.assert_array_equal(prepared.no_valid_action, [False, False, True])
  np.testing.assert_array_equal(prepared.invalid_actions[2], [False] * 4)
  np.testing.assert_array_equal(prepared.user_invalid_actions, INVALID)
  np.testing.assert_allclose(jax.nn.softmax(prepared.prior_logits[2]), _softmax(LOGITS[2]),
                             rtol=1e-6)


def test_prepare_without_a_mask_has_every_action_valid():
  prepared = _prepare(invalid=None)
  assert not np.any(prepared.invalid_actions)
  assert not np.any(prepared.user_invalid_actions)
  assert not np.any(prepared.no_valid_action)
  np.testing.assert_allclose(jax.nn.softmax(prepared.prior_logits), _softmax(LOGITS), rtol=1e-6)


def test_prepare_gives_plus_inf_logits_all_the_prior_mass_and_flags_the_row():
  logits = LOGITS.copy()
  logits[0, [0, 3]] = np.inf
  prepared = _prepare(logits=logits, invalid=None)
  assert np.all(np.isfinite(np.asarray(prepared.prior_logits)))
  np.testing.assert_allclose(jax.nn.softmax(prepared.prior_logits[0]), [0.5, 0.0, 0.0, 0.5],
                             atol=1e-7)
  np.testing.assert_array_equal(prepared.nonfinite, [True, False, False])


def test_prepare_keeps_a_valid_action_with_minus_inf_logit_above_the_invalid_ones():
  logits = LOGITS.copy()
  logits[1, 1] = -np.inf  # row 1's valid actions are 1 and 3
  prepared = _prepare(logits=logits)
  row = np.asarray(prepared.prior_logits[1])
  assert np.isfinite(row[1]) and row[1] > row[0] and row[1] > row[2]
  assert not prepared.nonfinite[1]  # -inf is a zero prior, not a data problem


def test_prepare_searches_a_nonfinite_value_as_zero_and_flags_the_row():
  prepared = _prepare(value=np.array([np.nan, np.inf, 2.5], np.float32))
  np.testing.assert_array_equal(prepared.value, [0.0, 0.0, 2.5])
  np.testing.assert_array_equal(prepared.nonfinite, [True, True, False])


def test_prepare_treats_nan_logits_as_invalid_actions():
  logits = LOGITS.copy()
  logits[0, 2] = np.nan
  prepared = _prepare(logits=logits, invalid=None)
  np.testing.assert_array_equal(prepared.invalid_actions[0], [False, False, True, False])
  assert prepared.prior_logits[0, 2] == MIN_LOGIT
  np.testing.assert_allclose(jax.nn.softmax(prepared.prior_logits[0]),
                             _softmax(np.where([False, False, True, False], -np.inf, logits[0])),
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(prepared.nonfinite, [True, False, False])


def test_prepare_gumbel_noise_is_standard_gumbel_times_the_scale():
  assert not np.any(np.asarray(_prepare(gumbel_scale=0.0).gumbel))
  batch, num_actions, scale = 512, 64, 2.0
  prepared = _prepare(logits=np.zeros((batch, num_actions), np.float32),
                      value=np.zeros(batch, np.float32), invalid=None, gumbel_scale=scale)
  noise = np.asarray(prepared.gumbel, np.float64)
  # Gumbel(0, 1): mean γ, standard deviation π/√6. 32768 draws: the mean's
  # standard error is 0.014 here (margin 0.06), the spread's about 0.015 (margin 0.08).
  assert abs(noise.mean() - scale * EULER_GAMMA) < 0.06
  assert abs(noise.std() - scale * np.pi / np.sqrt(6)) < 0.08


# --------------------------------------------------------------------------
# particles at the root, root action counts
# --------------------------------------------------------------------------

def test_particles_at_root_sit_at_the_root_with_its_value_and_no_history():
  prepared = _prepare()
  root_action = np.array([[2, 0, 2], [1, 3, 3], [0, 1, 2]])
  group = np.array([[0, 0, 1], [0, 1, 1], [0, 0, 0]])
  label = np.array([[5, 6, 7], [0, 1, 2], [4, 4, 4]])
  model = actions.DiscreteActions(recurrent_fn=None, num_actions=4)
  p = root_lib.particles_at_root(prepared, model, 3, jnp.asarray(root_action),
                                 jnp.asarray(group), jnp.asarray(label))
  # The first TD error, r + γ·v' − v, starts from the root's value v (it sets the running
  # TD scale); nothing is yet returned, discounted or weighted.
  np.testing.assert_array_equal(p.value, np.repeat(VALUE[:, None], 3, axis=1))
  np.testing.assert_array_equal(p.returns, np.zeros((3, 3)))
  np.testing.assert_array_equal(p.discount_product, np.ones((3, 3)))
  np.testing.assert_array_equal(p.log_weight, np.zeros((3, 3)))
  for got, want in ((p.action, root_action), (p.group, group), (p.label, label)):
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(p.policy, np.repeat(np.asarray(prepared.prior_logits)[:, None],
                                                    3, axis=1))
  assert p.embedding.shape == (3, 3, 2)


def test_root_action_counts_count_particles_and_distinct_actions():
  counts, considered = root_lib.root_action_counts(jnp.asarray([[0, 0, 2], [1, 1, 1]]), 4)
  np.testing.assert_array_equal(counts, [[[2, 0, 1, 0]], [[0, 3, 0, 0]]])
  np.testing.assert_array_equal(considered, [[2], [1]])


# --------------------------------------------------------------------------
# masked_argmax
# --------------------------------------------------------------------------

def test_masked_argmax_is_the_argmax_over_valid_actions():
  rng = np.random.default_rng(0)
  score = rng.normal(size=(64, 7)).astype(np.float32)
  invalid = rng.random((64, 7)) < 0.5
  invalid[np.arange(64), rng.integers(0, 7, 64)] = False  # at least one valid action per row
  invalid[np.arange(64), np.argmax(score, -1)] = rng.random(64) < 0.7  # often the best is invalid
  invalid[np.all(invalid, -1), 0] = False
  got = root_lib.masked_argmax(jnp.asarray(score), jnp.asarray(invalid))
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, np.argmax(np.where(invalid, -np.inf, score), -1))


def test_masked_argmax_returns_a_valid_action_even_at_a_score_of_minus_inf():
  # SMC scores an action its particles never reached with log 0 = -inf: still a valid one,
  # whether it comes before or after the invalid actions (which must not win the tie).
  score = jnp.array([[-jnp.inf, 5.0, -jnp.inf, 2.0], [5.0, -jnp.inf, 1.0, -jnp.inf]])
  invalid = jnp.array([[False, True, False, True], [True, False, True, False]])
  np.testing.assert_array_equal(root_lib.masked_argmax(score, invalid), [0, 1])


def test_masked_argmax_of_a_row_with_no_valid_action_is_zero():
  got = root_lib.masked_argmax(jnp.array([[1.0, 3.0]]), jnp.array([[True, True]]))
  np.testing.assert_array_equal(got, [0])


def test_masked_argmax_breaks_ties_by_the_lowest_valid_index():
  score = jnp.array([[1.0, 3.0, 3.0, 3.0]])
  got = root_lib.masked_argmax(score, jnp.array([[False, True, False, False]]))
  np.testing.assert_array_equal(got, [2])


# --------------------------------------------------------------------------
# policy_output
# --------------------------------------------------------------------------

NUM_STEPS, NUM_PARTICLES, DEPTHS = 3, 8, (2, 1)


def _policy_output(action=(1, 3, 2), weights=None):
  prepared = _prepare()
  batch, num_actions = LOGITS.shape
  if weights is None:
    weights = np.full((batch, num_actions), 1.0 / num_actions, np.float32)
  steps = lambda x: jnp.asarray(np.broadcast_to(np.asarray(x), (batch, NUM_STEPS)))
  step_diagnostics = types.SimpleNamespace(
      ess=steps([8.0, 5.5, 3.0]), distinct_actions=steps([4.0, 3.0, 1.0]),
      resampled=steps([False, True, True]),
      num_resamples=jnp.asarray([[0, 1, 2], [0, 0, 0], [1, 1, 1]], jnp.int32),
      nonfinite=jnp.asarray([[0, 0, 0], [2, 0, 5], [0, 1, 0]], jnp.int32))
  tree = summary_tree.root_tree(
      prior_logits=prepared.prior_logits, raw_value=prepared.value,
      qvalues=jnp.zeros((batch, num_actions)), visits=jnp.ones((batch, num_actions)),
      node_value=prepared.value, invalid_actions=prepared.invalid_actions)
  return root_lib.policy_output(
      prepared, action=jnp.asarray(action, jnp.int32), action_weights=jnp.asarray(weights),
      tree=tree, step_diagnostics=step_diagnostics,
      particles_per_action=jnp.full((batch, len(DEPTHS), num_actions), 2.0),
      num_considered=jnp.full((batch, len(DEPTHS)), 4), depths=DEPTHS,
      num_particles=NUM_PARTICLES, num_simulations=NUM_PARTICLES * sum(DEPTHS) + 5)


def test_policy_output_tree_reports_the_budget():
  # The budget given, not the evaluations spent (5 fewer here) nor mctx's node count - 1.
  assert _policy_output().search_tree.num_simulations == NUM_PARTICLES * sum(DEPTHS) + 5


def test_policy_output_zeroes_the_weights_of_invalid_actions():
  out = _policy_output()
  weights = np.asarray(out.action_weights)
  np.testing.assert_array_equal(weights[1], [0.0, 0.25, 0.0, 0.25])
  np.testing.assert_array_equal(weights[0], [0.25] * 4)


def test_policy_output_gives_a_row_with_no_valid_action_zero_weights_and_action_0():
  out = _policy_output(action=(1, 3, 2))
  np.testing.assert_array_equal(out.action, [1, 3, 0])
  np.testing.assert_array_equal(out.action_weights[2], [0.0] * 4)
  np.testing.assert_array_equal(out.search_tree.extra_data.no_valid_action, [False, False, True])


def test_policy_output_tree_carries_the_users_mask():
  out = _policy_output()
  np.testing.assert_array_equal(out.search_tree.root_invalid_actions, INVALID)


def test_policy_output_diagnostics_total_the_per_step_counts():
  diagnostics = _policy_output().search_tree.extra_data
  np.testing.assert_array_equal(diagnostics.num_resamples, [3, 0, 3])
  np.testing.assert_array_equal(diagnostics.nonfinite_model_outputs, [0, 7, 1])
  np.testing.assert_array_equal(diagnostics.num_evaluations, [NUM_PARTICLES * 3] * 3)
  np.testing.assert_array_equal(diagnostics.num_particles, [NUM_PARTICLES] * 3)
  np.testing.assert_array_equal(diagnostics.depth, [list(DEPTHS)] * 3)
