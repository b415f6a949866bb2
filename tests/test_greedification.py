"""The root greedification operator `I(π_θ, Q)` against NumPy references.

The references follow the Gumbel MuZero paper (Danihelka et al., 2022):
the mixed value of Appendix D, Q-values completed by it, mctx's default
`σ` (`qtransform_completed_by_mix_value`: completed Q rescaled to [0, 1] over
all actions, times `(maxvisit_init + max_b N(b))·value_scale`), and
`I(π_θ, Q) = softmax(logits + σ)` over valid actions. Everything is
recomputed here in float64.
"""

import jax
import jax.numpy as jnp
import mctx
import numpy as np

from smctx._src import greedification

MIN_LOGIT = float(np.finfo(np.float32).min)
VALUE_SCALE, MAXVISIT_INIT = 0.1, 50.0  # mctx's defaults

# Three roots, five actions. Row 0 has every action valid, row 1 two invalid
# ones, row 2 one. Invalid actions are never visited; row 2 visits one action.
LOGITS = np.array([[0.3, -1.2, 2.0, 0.0, 0.7],
                   [1.5, 0.2, -0.4, 0.9, -2.0],
                   [-0.5, 0.5, 1.0, -1.0, 0.0]])
INVALID = np.array([[False, False, False, False, False],
                    [False, True, False, True, False],
                    [False, False, False, False, True]])
RAW_VALUE = np.array([0.4, -1.0, 2.5])
VISITS = np.array([[3, 0, 5, 1, 0],
                   [2, 0, 0, 0, 6],
                   [0, 0, 4, 0, 0]])
# Q-values where visited; anything (here large garbage) where not.
QVALUES = np.where(VISITS > 0, np.array([[1.0, 0.0, -0.5, 2.0, 0.0],
                                         [0.25, 0.0, 0.0, 0.0, -0.75],
                                         [0.0, 0.0, 1.5, 0.0, 0.0]]), 1e3)


def _softmax(x):
  x = x - np.max(x, axis=-1, keepdims=True)
  e = np.exp(x)
  return e / np.sum(e, axis=-1, keepdims=True)


def _masked(logits, invalid):
  """Prior logits as `greedify` expects them: max-subtracted, invalid at the minimum logit."""
  return np.where(invalid, MIN_LOGIT, logits - np.max(logits, axis=-1, keepdims=True))


def _mixed_value(raw_value, qvalues, visits, prior_probs):
  """Appendix D: `(v̂ + ΣN / Σ_{visited} π · Σ_{visited} π·q) / (1 + ΣN)`."""
  visited = visits > 0
  total = visits.sum(-1)
  sum_probs = np.where(visited, prior_probs, 0.0).sum(-1)
  weighted_q = np.where(visited, prior_probs * qvalues, 0.0).sum(-1) / np.where(
      total > 0, sum_probs, 1.0)
  return (raw_value + total * weighted_q) / (1 + total)


def _reference(logits, raw_value, qvalues, visits, invalid):
  """`(σ, completed Q, policy, value)` of the operator with mctx's default qtransform."""
  prior = _softmax(np.where(invalid, -np.inf, logits))
  completed = np.where(visits > 0, qvalues,
                       _mixed_value(raw_value, qvalues, visits, prior)[:, None])
  low, high = completed.min(-1, keepdims=True), completed.max(-1, keepdims=True)
  rescaled = (completed - low) / np.maximum(high - low, 1e-8)
  sigma = (MAXVISIT_INIT + visits.max(-1, keepdims=True)) * VALUE_SCALE * rescaled
  policy = _softmax(np.where(invalid, -np.inf, logits + sigma))
  value = np.sum(policy * completed, axis=-1)
  return sigma, completed, policy, value


def _greedify(logits=LOGITS, raw_value=RAW_VALUE, qvalues=QVALUES, visits=VISITS,
              invalid=INVALID, qtransform=mctx.qtransform_completed_by_mix_value):
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return greedification.greedify(
      prior_logits=f32(_masked(logits, invalid)), raw_value=f32(raw_value), qvalues=f32(qvalues),
      visits=f32(visits), qtransform=qtransform, invalid_actions=jnp.asarray(invalid))


def test_mask_logits_subtracts_the_row_max_and_sets_invalid_to_the_minimum_logit():
  out = np.asarray(greedification.mask_logits(jnp.asarray(LOGITS, jnp.float32),
                                              jnp.asarray(INVALID)))
  want = LOGITS - LOGITS.max(-1, keepdims=True)  # the max over all actions, invalid ones too
  np.testing.assert_allclose(out[~INVALID], want[~INVALID], rtol=1e-6, atol=1e-6)
  assert np.all(out[INVALID] == MIN_LOGIT)


def test_mask_logits_without_a_mask_only_subtracts_the_row_max():
  out = greedification.mask_logits(jnp.asarray(LOGITS, jnp.float32), None)
  np.testing.assert_allclose(out, LOGITS - LOGITS.max(-1, keepdims=True), rtol=1e-6, atol=1e-6)


def test_mask_logits_of_a_row_with_no_valid_action_is_finite_and_softmax_uniform():
  out = greedification.mask_logits(jnp.asarray(LOGITS[:1], jnp.float32),
                                   jnp.ones((1, 5), bool))
  assert np.all(np.isfinite(np.asarray(out)))
  np.testing.assert_allclose(jax.nn.softmax(out), np.full((1, 5), 0.2), rtol=1e-6)


def test_mixed_value_matches_appendix_d():
  prior = _softmax(LOGITS)
  got = greedification.mixed_value(jnp.asarray(RAW_VALUE, jnp.float32),
                                   jnp.asarray(QVALUES, jnp.float32),
                                   jnp.asarray(VISITS, jnp.float32),
                                   jnp.asarray(prior, jnp.float32))
  np.testing.assert_allclose(got, _mixed_value(RAW_VALUE, QVALUES, VISITS, prior), rtol=1e-5)


def test_mixed_value_when_the_visited_actions_have_almost_no_prior_mass():
  # The visited actions' priors (e^-80 ≈ 1.8e-35 each) still weigh their Q-values, as mctx's
  # `_compute_mixed_value` does: the mean of 0.5 and 0.7, not a value collapsed towards 0.
  logits = np.array([[0.0, -80.0, -80.0]])
  qvalues = np.array([[0.0, 0.5, 0.7]])
  visits = np.array([[0.0, 3.0, 3.0]])
  got = greedification.mixed_value(jnp.asarray([0.1], jnp.float32),
                                   jnp.asarray(qvalues, jnp.float32),
                                   jnp.asarray(visits, jnp.float32),
                                   jax.nn.softmax(jnp.asarray(logits, jnp.float32)))
  np.testing.assert_allclose(got, [(0.1 + 6 * 0.6) / 7], rtol=1e-5)


def test_mixed_value_floors_each_prior_at_the_smallest_normal_float_and_no_higher():
  # As mctx's `_compute_mixed_value`, every prior counts as at least float32's `tiny`
  # (~1.2e-38). Row 0: the visited priors (e^-200) underflow to 0 in float32, so both weigh
  # `tiny` and their Q-values still count, equally: the mean of 1.5 and 1.7 (without the floor
  # they would drop out, leaving 0.1 / 7). Q-values of at least 1 keep `tiny·Q` a normal
  # float: below 1 it is subnormal, which XLA:CPU flushes to zero (mctx's order of operations).
  # Row 1: priors e^-20 and e^-22, below float32's eps but above `tiny`, keep their ratio
  # e^2 : 1 (a floor at eps would weigh them equally).
  logits = np.array([[0.0, -200.0, -200.0],
                     [0.0, -20.0, -22.0]])
  qvalues = np.array([[0.0, 1.5, 1.7],
                      [0.0, 0.5, 0.7]])
  visits = np.array([[0.0, 3.0, 3.0]] * 2)
  prior = jax.nn.softmax(jnp.asarray(logits, jnp.float32))
  assert float(prior[0, 1]) == 0.0  # the underflow the floor is for
  got = greedification.mixed_value(jnp.asarray([0.1, 0.1], jnp.float32),
                                   jnp.asarray(qvalues, jnp.float32),
                                   jnp.asarray(visits, jnp.float32), prior)
  weighted_q1 = (0.5 + np.exp(-2.0) * 0.7) / (1.0 + np.exp(-2.0))
  np.testing.assert_allclose(got, [(0.1 + 6 * 1.6) / 7, (0.1 + 6 * weighted_q1) / 7], rtol=1e-5)


def test_mixed_value_without_visits_is_the_raw_value():
  got = greedification.mixed_value(jnp.asarray(RAW_VALUE, jnp.float32),
                                   jnp.asarray(QVALUES, jnp.float32), jnp.zeros((3, 5)),
                                   jnp.full((3, 5), 0.2))
  np.testing.assert_allclose(got, RAW_VALUE, rtol=1e-6)


def test_greedify_transformed_is_mctx_completed_by_mix_value():
  sigma, _, _, _ = _reference(LOGITS, RAW_VALUE, QVALUES, VISITS, INVALID)
  np.testing.assert_allclose(_greedify().transformed, sigma, rtol=1e-5, atol=1e-5)


def test_greedify_completes_unvisited_actions_with_the_mixed_value():
  _, completed, _, _ = _reference(LOGITS, RAW_VALUE, QVALUES, VISITS, INVALID)
  np.testing.assert_allclose(_greedify().completed, completed, rtol=1e-5, atol=1e-6)


def test_greedify_policy_is_softmax_of_logits_plus_sigma_and_zero_on_invalid_actions():
  _, _, policy, _ = _reference(LOGITS, RAW_VALUE, QVALUES, VISITS, INVALID)
  got = np.asarray(_greedify().policy)
  np.testing.assert_allclose(got, policy, rtol=1e-5, atol=1e-7)
  assert np.all(got[INVALID] == 0.0)


def test_greedify_value_is_the_policy_weighted_completed_q():
  _, _, _, value = _reference(LOGITS, RAW_VALUE, QVALUES, VISITS, INVALID)
  out = _greedify()
  np.testing.assert_allclose(out.value, value, rtol=1e-5)
  np.testing.assert_allclose(out.tree.node_values[:, mctx.Tree.ROOT_INDEX], value, rtol=1e-5)


def test_greedify_without_visits_returns_the_prior_and_the_raw_value():
  # Every Q̃ is the raw value, so σ is constant (zero after rescaling): I(π, Q) = π.
  out = _greedify(visits=np.zeros_like(VISITS))
  np.testing.assert_allclose(out.transformed, np.zeros((3, 5)), atol=1e-6)
  np.testing.assert_allclose(out.policy, _softmax(np.where(INVALID, -np.inf, LOGITS)), rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(out.value, RAW_VALUE, rtol=1e-6)


def test_greedify_applies_the_users_qtransform_to_the_root_statistics():
  # A qtransform reading the root's visit counts: σ(a) = N(a), so I(π, Q) = softmax(logits + N).
  visit_transform = lambda tree, index: tree.children_visits[index].astype(jnp.float32)
  out = _greedify(qtransform=visit_transform)
  np.testing.assert_allclose(out.transformed, VISITS, rtol=0)
  np.testing.assert_allclose(out.policy, _softmax(np.where(INVALID, -np.inf, LOGITS + VISITS)),
                             rtol=1e-5, atol=1e-7)


def test_greedify_policy_of_a_row_with_no_valid_action_is_zero():
  # Every logit of row 2 at the minimum logit: the softmax is uniform there, but no action is
  # valid, so I(π, Q) is zero on the whole row and its value Σ_a I(π, Q)(a)·Q̃(a) is 0.
  invalid = INVALID.copy()
  invalid[2] = True
  visits = np.where(invalid, 0, VISITS)
  out = _greedify(visits=visits, invalid=invalid)
  np.testing.assert_array_equal(np.asarray(out.policy)[2], 0.0)
  assert float(out.value[2]) == 0.0
  # The other rows are as before.
  _, _, policy, value = _reference(LOGITS[:2], RAW_VALUE[:2], QVALUES[:2], visits[:2],
                                   invalid[:2])
  np.testing.assert_allclose(np.asarray(out.policy)[:2], policy, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(out.value)[:2], value, rtol=1e-5)


def test_greedify_gives_the_qtransform_the_mixed_value_as_the_roots_value():
  # mctx's qtransform_by_parent_and_siblings rescales Q by the min and max over the root's
  # node value and its visited Q-values. The root's value it reads is the mixed value: in row 1
  # (0.085 by Appendix D) it lies between the visited Q-values 0.25 and -0.75, so σ(4) = 0,
  # where the raw value -1.0 would have widened the range (σ(4) = 0.25 / 1.25 = 0.2).
  prior = _softmax(np.where(INVALID, -np.inf, LOGITS))
  node_value = _mixed_value(RAW_VALUE, QVALUES, VISITS, prior)
  visited = VISITS > 0
  safe = np.where(visited, QVALUES, node_value[:, None])
  low = np.minimum(node_value, safe.min(-1))[:, None]
  high = np.maximum(node_value, safe.max(-1))[:, None]
  sigma = (np.where(visited, QVALUES, low) - low) / np.maximum(high - low, 1e-8)
  out = _greedify(qtransform=mctx.qtransform_by_parent_and_siblings)
  np.testing.assert_allclose(out.transformed, sigma, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.policy, _softmax(np.where(INVALID, -np.inf, LOGITS + sigma)),
                             rtol=1e-5, atol=1e-7)
