"""Unit checks of the particle engine's pieces against NumPy references."""

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from smctx._src import actions
from smctx._src import backpropagation
from smctx._src import particles as particles_lib
from smctx._src import sequential_halving


def _groups(sizes):
  return np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("scale", [1, 13])  # 16 particles, or 208 (searchsorted's scan branch)
@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_resampling_never_crosses_groups(method, scale):
  rng = np.random.default_rng(0)
  group = jnp.asarray(np.stack([_groups([3 * scale, 5 * scale, 1 * scale, 7 * scale]),
                                _groups([8 * scale, 8 * scale, 0, 0])]), jnp.int32)
  log_weight = jnp.asarray(rng.normal(size=(2, 16 * scale)) * 3, jnp.float32)
  for seed in range(20):
    anc = np.asarray(particles_lib.resampling_ancestors(
        jax.random.PRNGKey(seed), log_weight, group, 4, method))
    g = np.asarray(group)
    assert np.all(np.take_along_axis(g, anc, axis=1) == g)
    # Non-decreasing (documented): a run of equal labels stays one run, as TSMCTS's slots need.
    assert np.all(np.diff(anc, axis=1) >= 0)


@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_resampling_keeps_round_off_at_a_group_end_inside_the_group(method, monkeypatch):
  # With the largest uniform below 1 that float32 holds, a group's last position rounds to
  # the group's upper end, rank + 1, while its cumulative weights can end just below it in
  # float32 (0.99999994 or 0.9999999 for the first group of five of these roots): the search
  # then lands on the next group's first particle, which the clip to the group must undo.
  top = np.float32(1.0 - 2.0**-24)
  monkeypatch.setattr(jax.random, "uniform", lambda key, shape, *a, **k: jnp.full(shape, top))
  rng = np.random.default_rng(0)
  # 8 roots of 12 particles in 3 groups of random sizes, log-weights of random spreads.
  group = np.stack([np.repeat(np.arange(3), 1 + rng.multinomial(9, [1 / 3] * 3))
                    for _ in range(8)])
  log_weight = rng.normal(size=group.shape) * rng.choice([0.1, 1.0, 5.0], size=(8, 1))
  anc = np.asarray(particles_lib.resampling_ancestors(
      jax.random.PRNGKey(0), jnp.asarray(log_weight, jnp.float32),
      jnp.asarray(group, jnp.int32), 3, method))
  np.testing.assert_array_equal(np.take_along_axis(group, anc, axis=1), group)


# Log-weights far from 0 (e^1000 overflows float32, e^-1000 underflows) must normalise as well.
@pytest.mark.parametrize("offset", [0.0, 1000.0, -1000.0])
def test_systematic_resampling_copies_floor_or_ceil_of_expected(offset):
  # Systematic resampling gives particle i either floor(N_g·w_i) or ceil(N_g·w_i) copies.
  rng = np.random.default_rng(1)
  sizes = [6, 10]
  group = jnp.asarray(_groups(sizes)[None], jnp.int32)
  lw = (rng.normal(size=(1, 16)) + offset).astype(np.float32)
  w = np.exp(lw[0].astype(np.float64) - offset)
  expected = np.empty(16)
  start = 0
  for size in sizes:
    block = w[start:start + size] / w[start:start + size].sum()
    expected[start:start + size] = size * block
    start += size
  for seed in range(20):
    anc = np.asarray(particles_lib.resampling_ancestors(
        jax.random.PRNGKey(seed), jnp.asarray(lw, jnp.float32), group, 2, "systematic"))[0]
    copies = np.bincount(anc, minlength=16)
    assert np.all(copies >= np.floor(expected - 1e-5))
    assert np.all(copies <= np.ceil(expected + 1e-5))


def test_multinomial_resampling_frequencies_match_weights():
  lw = jnp.log(jnp.asarray([[0.1, 0.2, 0.7, 0.5, 0.5]], jnp.float32))
  group = jnp.asarray([[0, 0, 0, 1, 1]], jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  anc = jax.vmap(lambda k: particles_lib.resampling_ancestors(k, lw, group, 2, "multinomial"))(keys)
  anc = np.asarray(anc)[:, 0, :3].ravel()
  freq = np.bincount(anc, minlength=3) / anc.size
  np.testing.assert_allclose(freq, [0.1, 0.2, 0.7], atol=0.02)


# e^±1000 is out of float32's range; groups 1000 apart must each normalise by their own maximum.
@pytest.mark.parametrize("offsets", [(0.0, 0.0), (1000.0, 1000.0), (-1000.0, -1000.0),
                                     (0.0, -1000.0)])
def test_group_ess_matches_formula(offsets):
  group = np.array([[0, 0, 1, 1, 1]])
  lw = np.log(np.array([[1.0, 1.0, 2.0, 4.0, 3.0]])) + np.asarray(offsets)[group]
  ess, size = particles_lib.group_ess(jnp.asarray(lw, jnp.float32), jnp.asarray(group), 2)
  w1, w2 = np.array([1.0, 1.0]), np.array([2.0, 4.0, 3.0])
  np.testing.assert_allclose(np.asarray(ess)[0], [w1.sum()**2 / (w1**2).sum(),
                                                 w2.sum()**2 / (w2**2).sum()], rtol=1e-4)
  np.testing.assert_array_equal(np.asarray(size)[0], [2, 3])


def _particles(label, group, log_weight, returns):
  b, n = label.shape
  z = jnp.zeros((b, n), jnp.float32)
  return particles_lib.Particles(
      embedding=z, action=jnp.asarray(label, jnp.int32), policy=jnp.zeros((b, n, 3)),
      value=z, returns=jnp.asarray(returns, jnp.float32), discount_product=z,
      log_weight=jnp.asarray(log_weight, jnp.float32), group=jnp.asarray(group, jnp.int32),
      label=jnp.asarray(label, jnp.int32))


def test_backpropagation_running_mean_of_weighted_means():
  label = np.array([[0, 0, 1, 2]])
  group = np.zeros_like(label)
  # Huge log-weights on one action must not underflow another action's weights.
  lw1 = np.array([[0.0, np.log(3.0), -500.0, -500.0 + np.log(2.0)]])
  g1 = np.array([[1.0, 2.0, 5.0, 8.0]])
  values = backpropagation.ActionValues.zeros(1, 3)
  values = backpropagation.update(values, _particles(label, group, lw1, g1))
  q1 = np.array([(1 * 1 + 3 * 2) / 4, 5.0, 8.0])
  np.testing.assert_allclose(np.asarray(values.qvalues)[0], q1, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(values.visits)[0], [2, 1, 1])
  # Second depth: action 2 lost its particles and keeps its estimate.
  label2 = np.array([[0, 1, 1, 1]])
  g2 = np.array([[4.0, 1.0, 2.0, 3.0]])
  values = backpropagation.update(values, _particles(label2, group, np.zeros((1, 4)), g2))
  expected = np.array([(2 * q1[0] + 1 * 4.0) / 3, (1 * 5.0 + 3 * 2.0) / 4, 8.0])
  np.testing.assert_allclose(np.asarray(values.qvalues)[0], expected, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(values.visits)[0], [3, 4, 1])


def test_backpropagation_gathers_a_labels_particles_from_anywhere_along_the_particle_axis():
  # SMC draws each particle's root action (its label) from the prior, so a label's particles
  # are not one contiguous run: every label's weighted mean and count take in all of its
  # particles wherever they are. Reference: a NumPy loop over the labels.
  label = np.array([[2, 0, 1, 0, 2, 0, 1]])
  lw = np.array([[0.3, -1.0, 0.0, 0.5, -0.2, 2.0, -0.7]])
  g = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
  values = backpropagation.update(backpropagation.ActionValues.zeros(1, 4),
                                  _particles(label, np.zeros_like(label), lw, g))
  want_q, want_n = np.zeros(4), np.zeros(4)
  for a in range(3):
    member = label[0] == a
    w = np.exp(lw[0, member] - lw[0, member].max())
    want_q[a], want_n[a] = np.sum(w * g[0, member]) / np.sum(w), member.sum()
  np.testing.assert_allclose(np.asarray(values.qvalues)[0], want_q, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(values.visits)[0], want_n)


def test_a_label_without_particles_keeps_its_estimate_bit_for_bit():
  # Labels 1 and 2 get no particle at this depth: their running means come back exactly as
  # they were (in float32, n·Q / n is not always Q: 3 · 0.94708097 / 3 rounds to 0.9470809),
  # with their visit counts.
  kept = np.array([0.94708097, -0.21879166], np.float32)
  values = backpropagation.ActionValues(
      qvalues=jnp.asarray([[0.5, kept[0], kept[1]]], jnp.float32),
      visits=jnp.asarray([[2.0, 3.0, 7.0]], jnp.float32))
  label = np.array([[0, 0]])
  values = backpropagation.update(values, _particles(label, np.zeros_like(label),
                                                     np.zeros((1, 2)), np.array([[1.0, 2.0]])))
  np.testing.assert_array_equal(np.asarray(values.qvalues)[0, 1:], kept)
  np.testing.assert_array_equal(np.asarray(values.visits)[0], [4.0, 3.0, 7.0])
  np.testing.assert_allclose(float(values.qvalues[0, 0]), (2 * 0.5 + 2 * 1.5) / 4, rtol=1e-6)


def test_tsmcts_slots_keep_the_statistics_of_every_group_and_second_action():
  # TSMCTS sorts each group's particles by second action at re-rooting, backs
  # returns up per slot (first particle of each run of equal (group, second
  # action)) in O(B·N), and spreads the slot table to [B, G, A] when an
  # iteration ends. Reference: running weighted means kept per pair directly,
  # in NumPy. Groups hold duplicate second actions (as when a group outnumbers
  # the actions) and resampling within groups (non-decreasing ancestors, as
  # systematic resampling draws them) moves pairs between positions.
  from smctx._src import rerooting
  from smctx._src import segments
  rng = np.random.default_rng(3)
  b, g, a = 2, 3, 4
  group = np.stack([_groups([5, 4, 3]), _groups([2, 2, 8])])
  n = group.shape[1]
  unsorted = rng.integers(0, a, size=(b, n))
  unsorted[1, 4:] = [0, 2, 2, 0, 0, 3, 2, 2]  # duplicates in the big group
  order = np.asarray(jax.vmap(rerooting._run_order_of_one_root, in_axes=(0, 0, None, None))(
      jnp.asarray(group, jnp.int32), jnp.asarray(unsorted, jnp.int32), g, a))
  second = np.take_along_axis(unsorted, order, 1)
  for i in range(b):  # a stable sort by second action within each group
    expected = np.lexsort((np.arange(n), unsorted[i], group[i]))
    np.testing.assert_array_equal(order[i], expected)
  slot = np.asarray(segments.run_start_index(jnp.asarray(group * a + second, jnp.int32)))
  for i in range(b):
    for j in range(n):
      same = np.flatnonzero((group[i] == group[i, j]) & (second[i] == second[i, j]))
      assert slot[i, j] == same[0] and np.all(np.diff(same) == 1)  # one contiguous run
  values = backpropagation.ActionValues.zeros(b, n)
  ref_q, ref_n = np.zeros((b, g, a)), np.zeros((b, g, a))
  carried = np.broadcast_to(np.arange(n), (b, n)).copy()  # which original particle's pair
  for step in range(4):
    lw = rng.normal(size=(b, n)) * (30.0 if step == 2 else 1.0)
    ret = rng.normal(size=(b, n))
    p = _particles(np.take_along_axis(slot, carried, 1), group, lw, ret)
    values = backpropagation.update(values, p, labels_are_runs=True)
    pair_second = np.take_along_axis(second, carried, 1)
    for i in range(b):
      for gg in range(g):
        for aa in range(a):
          m = (group[i] == gg) & (pair_second[i] == aa)
          if not m.any():
            continue
          w = np.exp(lw[i, m] - lw[i, m].max())
          q_t, c_t = np.sum(w * ret[i, m]) / np.sum(w), m.sum()
          ref_q[i, gg, aa] = (ref_n[i, gg, aa] * ref_q[i, gg, aa] + c_t * q_t) / (
              ref_n[i, gg, aa] + c_t)
          ref_n[i, gg, aa] += c_t
    # Resample within groups: sorted random members of the particle's group.
    for i in range(b):
      ancestors = np.array([rng.choice(np.flatnonzero(group[i] == group[i, j]))
                            for j in range(n)])
      ancestors = np.sort(ancestors)  # groups are contiguous: sorting keeps them in place
      carried[i] = carried[i, ancestors]
  record = rerooting.RootStep.zeros(b, n, g, a).replace(
      second_label=jnp.asarray(second, jnp.int32), slot=jnp.asarray(slot, jnp.int32))
  spread = lambda x: np.asarray(rerooting.spread_to_second_labels(
      x, jnp.asarray(group, jnp.int32), record))
  visits = spread(values.visits)
  q = spread(jnp.where(values.visits > 0, values.qvalues, 0.0))
  np.testing.assert_array_equal(visits, ref_n)
  np.testing.assert_allclose(q, ref_q, rtol=1e-5, atol=1e-6)


def test_split_particles_gives_leftovers_to_best_ranked():
  group = np.asarray(sequential_halving.split_particles(10, jnp.asarray([3, 1, 4, 10])))
  np.testing.assert_array_equal(np.bincount(group[0]), [4, 3, 3])
  np.testing.assert_array_equal(np.bincount(group[1]), [10])
  np.testing.assert_array_equal(np.bincount(group[2]), [3, 3, 2, 2])
  np.testing.assert_array_equal(np.bincount(group[3]), [1] * 10)
  assert np.all(np.diff(group, axis=1) >= 0)  # contiguous groups


def test_inverse_variance_combination():
  q, n = sequential_halving.combine_iterations(
      jnp.asarray([[1.0, 2.0, 0.0]]), jnp.asarray([[2.0, 3.0, 0.0]]),
      jnp.asarray([[4.0, 9.0, 7.0]]), jnp.asarray([[4.0, 0.0, 1.0]]))
  np.testing.assert_allclose(np.asarray(q)[0], [(2 * 1 + 4 * 4) / 6, 2.0, 7.0])
  np.testing.assert_allclose(np.asarray(n)[0], [6, 3, 1])


@pytest.mark.parametrize("padding", [0, 200])  # 7 actions (matrix-product CDF) or 207 (cumsum)
def test_sample_actions_matches_the_softmax_and_never_draws_zero_probability_actions(padding):
  # Frequencies of 200k draws against softmax(logits) computed here; the
  # zero-probability actions (a very low finite logit, as masked actions get)
  # sit first, in the middle and last, where an off-by-one of the inverse CDF
  # would draw them.
  low = float(jnp.finfo(jnp.float32).min)
  logits = jnp.array([[low, 0.3, -1.0, low, 2.0, 0.0, low],
                      [low, low, low, 0.0, low, low, low]], jnp.float32)
  logits = jnp.concatenate([logits, jnp.full((2, padding), low)], axis=1)
  num_actions = logits.shape[1]
  draws = particles_lib.sample_actions(
      jax.random.PRNGKey(0), jnp.broadcast_to(logits[:, None], (2, 100_000, num_actions)))
  freq = np.stack([np.bincount(np.asarray(d), minlength=num_actions) / d.shape[0]
                   for d in draws])
  expected = np.exp(np.where(np.asarray(logits) == low, -np.inf, np.asarray(logits)))
  expected /= expected.sum(-1, keepdims=True)
  np.testing.assert_allclose(freq, expected, atol=0.005)
  assert freq[0, [0, 3, 6]].sum() == 0 and freq[1, 3] == 1.0


@pytest.mark.parametrize("offset", [1000.0, -1000.0])  # e^±1000 is out of float32's range
def test_sample_actions_draws_from_the_softmax_of_logits_far_from_zero(offset):
  # A sampler may be given a model's raw logits (`action_sampler=sample_actions`): only
  # their differences count. Expected softmax([0, log 3]) = [1/4, 3/4].
  logits = jnp.asarray([[[offset, offset + np.log(3.0)]]], jnp.float32)
  draws = np.asarray(particles_lib.sample_actions(jax.random.PRNGKey(0),
                                                  jnp.broadcast_to(logits, (1, 20_000, 2))))
  np.testing.assert_allclose(np.bincount(draws.ravel(), minlength=2) / draws.size,
                             [0.25, 0.75], atol=0.02)


def _mutate_with_logits(logits_of):
  """`particles.mutate` of 2 roots x 3 particles whose model returns `logits_of(action)`."""
  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    ones = jnp.ones(action.shape, jnp.float32)
    output = mctx.RecurrentFnOutput(reward=ones, discount=ones, prior_logits=logits_of(action),
                                    value=ones)
    return output, embedding
  model = actions.DiscreteActions(recurrent_fn=recurrent_fn, num_actions=3)
  action = jnp.asarray([[2, 0, 2], [0, 0, 1]], jnp.int32)
  keys = particles_lib.particle_slice_keys(jax.random.PRNGKey(0), 3)
  return particles_lib.mutate(None, keys, model, action, jnp.zeros((2, 3, 1)))


def test_mutate_gives_nan_logits_no_prior_mass_and_counts_their_particles():
  # Particles taking action 2 get one NaN logit (action 1's): that action has prior 0, the
  # others keep their softmax, and each such particle counts as a non-finite model output
  # although its reward, discount and value are finite.
  step = _mutate_with_logits(lambda a: jnp.where(
      (a == 2)[:, None], jnp.asarray([0.0, jnp.nan, 1.0]), jnp.asarray([0.0, 0.5, 1.0])))
  np.testing.assert_array_equal(np.asarray(step.nonfinite), [2, 0])
  prior = np.asarray(jax.nn.softmax(step.policy))
  with_nan = np.array([1.0, 0.0, np.e]) / (1.0 + np.e)
  clean = np.exp([0.0, 0.5, 1.0]) / np.exp([0.0, 0.5, 1.0]).sum()
  np.testing.assert_allclose(prior[0], [with_nan, clean, with_nan], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(prior[1], [clean] * 3, rtol=1e-6)


def test_mutate_max_subtracts_half_precision_logits_in_float32():
  # bfloat16 logits 3 and -3/256 differ by 3 + 3/256, which bfloat16 (8 significant bits)
  # rounds to 3.015625; the policy is float32 and exact.
  step = _mutate_with_logits(lambda a: jnp.broadcast_to(
      jnp.asarray([3.0, -3.0 / 256, 1.0], jnp.bfloat16), a.shape + (3,)))
  assert step.policy.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(step.policy),
                                np.broadcast_to([0.0, -3.0 - 3.0 / 256, -2.0], (2, 3, 3)))
