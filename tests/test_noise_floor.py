"""The noise-floor transform (beyond the paper) and the TD-error RMS TSMCTS hands it.

References: mctx's completed-Q transform recomputed in NumPy with the rescaling's
denominator `max(max Q̃ − min Q̃, noise_floor·td_rms)`; and the TD-error RMS of a
constant model worked out by hand from the search's layout.
"""

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx
from smctx._src import greedification
from tests.test_greedification import INVALID, LOGITS, QVALUES, RAW_VALUE, VISITS, _masked
from tests.test_greedification import _mixed_value, _softmax


def _sigma(td_rms, noise_floor, value_scale=0.3, maxvisit_init=50.0):
  """NumPy `σ` of the noise-floor transform for the test_greedification roots."""
  prior = _softmax(np.where(INVALID, -np.inf, LOGITS))
  completed = np.where(VISITS > 0, QVALUES,
                       _mixed_value(RAW_VALUE, QVALUES, VISITS, prior)[:, None])
  low, high = completed.min(-1, keepdims=True), completed.max(-1, keepdims=True)
  floor = np.maximum(noise_floor * np.asarray(td_rms, np.float64)[:, None], 1e-8)
  rescaled = (completed - low) / np.maximum(high - low, floor)
  return (maxvisit_init + VISITS.max(-1, keepdims=True)) * value_scale * rescaled


def _transformed(qtransform, extra_data=None):
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return greedification.greedify(
      prior_logits=f32(_masked(LOGITS, INVALID)), raw_value=f32(RAW_VALUE), qvalues=f32(QVALUES),
      visits=f32(VISITS), qtransform=qtransform, invalid_actions=jnp.asarray(INVALID),
      extra_data=extra_data).transformed


@pytest.mark.parametrize("noise_floor", [0.5, 1.0, 2.0])
def test_noise_floor_rescales_by_the_larger_of_the_q_spread_and_the_floor(noise_floor):
  # Completed-Q spreads of the three rows: 2.5, 1.0 and about 1.5. Row 0's floor is below
  # its spread at every noise_floor, row 1's above it from noise_floor 1, row 2's not at all.
  td_rms = np.array([0.5, 1.6, 0.0])
  transform = lambda tree, index: smctx.qtransform_completed_with_noise_floor(
      tree, index, noise_floor=noise_floor)
  got = _transformed(transform, greedification.SearchNoise(td_rms=jnp.asarray(td_rms)))
  np.testing.assert_allclose(got, _sigma(td_rms, noise_floor), rtol=1e-5, atol=1e-5)
  # Where the floor binds, σ spans less than mctx's full `(maxvisit_init + max N)·value_scale`.
  spans = np.ptp(np.asarray(got), axis=-1)  # the rescaling spans all actions, as mctx's
  full = (50.0 + VISITS.max(-1)) * 0.3
  np.testing.assert_allclose(spans[0], full[0], rtol=1e-5)
  assert (spans[1] < 0.99 * full[1]) == (noise_floor >= 1.0)


def test_without_search_noise_it_is_mctx_transform_with_value_scale_0_3():
  got = _transformed(smctx.qtransform_completed_with_noise_floor)
  want = _transformed(lambda tree, index: mctx.qtransform_completed_by_mix_value(
      tree, index, value_scale=0.3))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(got, _sigma(np.zeros(3), 1.0), rtol=1e-5, atol=1e-5)


def test_tsmcts_hands_its_qtransforms_the_rms_of_every_td_error_it_met():
  # Every transition: reward r, discount g, next value c; the roots' value is 0. So the
  # root step's TD errors are r + g·c and every later one r + g·c − c. With 16 simulations
  # over 4 particles: depths (2, 2), and iteration 2 starts at the root step's successors,
  # so the search meets 4 root-step and 12 later TD errors.
  r, g, c, num_actions, batch = 0.5, 0.9, 0.2, 4, 3

  def recurrent_fn(params, key, action, embedding):
    shape = action.shape
    return mctx.RecurrentFnOutput(
        reward=jnp.full(shape, r), discount=jnp.full(shape, g),
        prior_logits=jnp.zeros(shape + (num_actions,)), value=jnp.full(shape, c)), embedding

  # A probe target: σ = td_rms on action 0 only, so log(w0 / w1) = td_rms (uniform prior).
  probe = lambda tree, index: tree.extra_data.td_rms * jnp.eye(num_actions)[0]
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, num_actions)),
                           value=jnp.zeros((batch,)), embedding=jnp.zeros((batch, 1)))
  out = jax.jit(lambda key: smctx.tsmcts_policy(
      None, key, root, recurrent_fn, num_simulations=16, num_particles=4,
      target_qtransform=probe))(jax.random.key(0))
  weights = np.asarray(out.action_weights, np.float64)
  root_td, later_td = r + g * c, r + g * c - c
  want = np.sqrt((4 * root_td**2 + 12 * later_td**2) / 16)
  np.testing.assert_allclose(np.log(weights[:, 0] / weights[:, 1]), want, rtol=1e-4)
