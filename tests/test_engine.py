"""One step of the particle engine (`engine.smc_step`) against a hand-written NumPy step."""

import types

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from smctx._src import actions
from smctx._src import backpropagation
from smctx._src import draws
from smctx._src import engine
from smctx._src import particles as particles_lib

NUM_ACTIONS = 3
LABEL = np.array([[0, 0, 1, 2]])
VALUE = np.array([[0.5, 0.5, 0.2, 0.0]])
RETURNS = np.array([[1.0, 0.0, 0.5, 0.0]])
DISCOUNT_PRODUCT = np.array([[1.0, 0.9, 0.0, 1.0]])  # particle 2 has terminated
REWARD = np.array([[1.0, -1.0, 5.0, 0.25]])
DISCOUNT = np.array([[0.9, 0.9, 0.9, 0.0]])
NEXT_VALUE = np.array([[2.0, 1.0, 3.0, 4.0]])
# All prior mass on action 1: every particle's next action is 1.
NEXT_LOGITS = np.broadcast_to(np.array([-1e9, 0.0, -1e9]), (1, 4, NUM_ACTIONS))


def _inputs(log_weight=None, group=None):
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  log_weight = np.zeros((1, 4)) if log_weight is None else log_weight
  group = np.zeros((1, 4)) if group is None else group
  particles = particles_lib.Particles(
      embedding=jnp.zeros((1, 4)), action=jnp.zeros((1, 4), jnp.int32),
      policy=jnp.zeros((1, 4, NUM_ACTIONS)), value=f32(VALUE), returns=f32(RETURNS),
      discount_product=f32(DISCOUNT_PRODUCT), log_weight=f32(log_weight),
      group=jnp.asarray(group, jnp.int32), label=jnp.asarray(LABEL, jnp.int32))
  step = particles_lib.ModelStep(
      reward=f32(REWARD), discount=f32(DISCOUNT), value=f32(NEXT_VALUE),
      policy=f32(NEXT_LOGITS), embedding=jnp.arange(4.0)[None],
      nonfinite=jnp.zeros((1,), jnp.int32))
  return particles, step


def _config(**overrides):
  settings = dict(temperature=2.0, td_scale="none", resample="never", ess_threshold=0.5,
                  resampling_method="systematic", num_groups=1, num_labels=NUM_ACTIONS)
  settings.update(overrides)
  return engine.EngineConfig(**settings)


def _step(config, log_weight=None, allow_resample=True, td_scale=None, group=None):
  particles, step = _inputs(log_weight, group)
  model = actions.DiscreteActions(recurrent_fn=None, num_actions=NUM_ACTIONS)
  values = backpropagation.ActionValues.zeros(1, NUM_ACTIONS)
  td_scale = engine.TDScale.zeros(1) if td_scale is None else td_scale
  keys = engine.step_keys(jax.random.key(0), 1, 4, config.distinct_copies).at(0)
  return engine.smc_step(particles, values, td_scale, step, keys, config,
                         jnp.asarray(allow_resample), model)


def _reference_step(temperature):
  alive = DISCOUNT_PRODUCT != 0
  delta = np.where(alive, REWARD + DISCOUNT * NEXT_VALUE - VALUE, 0.0)
  log_weight = delta / temperature
  returns = RETURNS + DISCOUNT_PRODUCT * REWARD
  discount_product = DISCOUNT_PRODUCT * DISCOUNT
  bootstrapped = returns + discount_product * NEXT_VALUE
  q, visits = np.zeros(NUM_ACTIONS), np.zeros(NUM_ACTIONS)
  for a in range(NUM_ACTIONS):
    member = LABEL[0] == a
    w = np.exp(log_weight[0, member] - log_weight[0, member].max())
    q[a], visits[a] = np.sum(w * bootstrapped[0, member]) / np.sum(w), member.sum()
  return dict(delta=delta, log_weight=log_weight, returns=returns,
              discount_product=discount_product, q=q, visits=visits)


def test_smc_step_weights_backs_up_and_back_propagates_as_specified():
  particles, values, _, diagnostics = _step(_config())
  ref = _reference_step(2.0)
  np.testing.assert_allclose(np.asarray(particles.log_weight), ref["log_weight"], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(particles.returns), ref["returns"], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(particles.discount_product), ref["discount_product"])
  np.testing.assert_allclose(np.asarray(particles.value), NEXT_VALUE)
  np.testing.assert_allclose(np.asarray(values.qvalues)[0], ref["q"], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(values.visits)[0], ref["visits"])
  np.testing.assert_array_equal(np.asarray(particles.action), [[1, 1, 1, 1]])
  w = np.exp(ref["log_weight"] - ref["log_weight"].max())
  np.testing.assert_allclose(float(diagnostics.ess[0]), w.sum() ** 2 / (w**2).sum(), rtol=1e-5)
  assert not bool(diagnostics.resampled[0])
  assert float(diagnostics.distinct_actions[0]) == 3.0


def test_smc_step_without_back_propagation_leaves_the_values_alone():
  _, values, _, _ = _step(_config(backpropagate=False))
  np.testing.assert_array_equal(np.asarray(values.visits), 0.0)


def test_running_td_scale_divides_by_the_rms_of_the_alive_particles_td_errors():
  particles, _, td_scale, _ = _step(_config(td_scale="running", temperature=1.0))
  delta = _reference_step(1.0)["delta"]
  alive = DISCOUNT_PRODUCT != 0
  rms = np.sqrt(np.sum(delta[alive] ** 2) / alive.sum())
  np.testing.assert_allclose(np.asarray(particles.log_weight), delta / rms, rtol=1e-5)
  np.testing.assert_allclose(float(td_scale.count[0]), alive.sum())


@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_resampling_always_copies_a_dominant_particle_and_resets_weights(method):
  # Particle 3 holds all the weight: every particle becomes a copy of it.
  log_weight = np.array([[-1e4, -1e4, -1e4, 0.0]])
  particles, _, _, diagnostics = _step(_config(resample="always", resampling_method=method),
                                       log_weight=log_weight)
  np.testing.assert_array_equal(np.asarray(particles.label), [[2, 2, 2, 2]])
  np.testing.assert_array_equal(np.asarray(particles.embedding), [[3.0, 3.0, 3.0, 3.0]])
  np.testing.assert_array_equal(np.asarray(particles.log_weight), 0.0)
  assert bool(diagnostics.resampled[0]) and int(diagnostics.num_resamples[0]) == 1
  assert float(diagnostics.distinct_actions[0]) == 1.0


def test_no_resampling_where_it_is_not_allowed():
  log_weight = np.array([[-1e4, -1e4, -1e4, 0.0]])
  particles, _, _, diagnostics = _step(_config(resample="always"), log_weight=log_weight,
                                       allow_resample=False)
  np.testing.assert_array_equal(np.asarray(particles.label), LABEL)
  assert not bool(diagnostics.resampled[0])


def _ess(log_weight):
  w = np.exp(log_weight - log_weight.max())
  return w.sum() ** 2 / (w**2).sum()


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_ess_resampling_happens_exactly_when_the_ess_falls_below_the_threshold(threshold):
  # Uniform weights before the step: the ESS after it is that of the TD weights alone, about
  # 2.84 of 4 particles (by hand), so 0.5 (2 particles) keeps them and 0.8 (3.2) resamples.
  particles, _, _, diagnostics = _step(_config(resample="ess", ess_threshold=threshold))
  expected = _ess(_reference_step(2.0)["log_weight"][0]) < threshold * 4
  assert bool(diagnostics.resampled[0]) == expected
  assert int(diagnostics.num_resamples[0]) == int(expected)
  reset = np.zeros((1, 4)) if expected else _reference_step(2.0)["log_weight"]
  np.testing.assert_allclose(np.asarray(particles.log_weight), reset, rtol=1e-6)


def test_diagnostics_of_two_groups_sum_the_ess_and_average_the_labels_over_the_groups():
  # TSMCTS's layout: group 0 = particles 0, 1 (label 0), group 1 = particles 2, 3 (labels 1,
  # 2). Group 0's weight sits on particle 0 (ESS 1 < 0.75 * 2), group 1's is near uniform, so
  # only group 0 resamples: the root still counts as resampled at the step.
  log_weight = np.array([[0.0, -1e4, 0.0, 0.0]])
  config = _config(resample="ess", ess_threshold=0.75, num_groups=2)
  particles, _, _, diagnostics = _step(config, log_weight=log_weight, group=[[0, 0, 1, 1]])
  lw = (log_weight + _reference_step(2.0)["log_weight"])[0]
  ess = [_ess(lw[:2]), _ess(lw[2:])]
  assert ess[0] < 0.75 * 2 <= ess[1]
  np.testing.assert_allclose(float(diagnostics.ess[0]), sum(ess), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(particles.embedding), [[0.0, 0.0, 2.0, 3.0]])
  assert bool(diagnostics.resampled[0]) and int(diagnostics.num_resamples[0]) == 1
  # Labels 0, 1 and 2 are carried after resampling, over 2 groups.
  assert float(diagnostics.distinct_actions[0]) == 1.5


@pytest.mark.parametrize("labels_are_runs", [False, True])
def test_distinct_labels_per_group_counts_each_run_of_slots_once(labels_are_runs):
  # Root 0: groups of 3 and 3 particles carrying slots (0, 0, 2) and (3, 3, 3): 2 + 1 labels
  # over 2 groups. Root 1: one group of 6 with slots 0, 1, 1, 3, 4, 4: 4 labels. Slot ids are
  # the first particle of their run at re-rooting, so a label repeats only inside its run.
  particles = types.SimpleNamespace(
      label=jnp.asarray([[0, 0, 2, 3, 3, 3], [0, 1, 1, 3, 4, 4]], jnp.int32),
      group=jnp.asarray([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], jnp.int32))
  distinct = engine.distinct_labels_per_group(particles, 6, labels_are_runs)
  assert distinct.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(distinct), [1.5, 4.0])


def test_run_smc_resamples_at_every_step_but_the_last():
  # `resample="always"`: resampling at the last step would only add noise to SMC's final
  # particles (algorithms.md section 8.4), so its column alone stays False.
  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    out = mctx.RecurrentFnOutput(
        reward=jnp.ones_like(embedding), discount=jnp.full_like(embedding, 0.9),
        prior_logits=jnp.zeros(action.shape + (NUM_ACTIONS,)), value=embedding)
    return out, embedding + action

  particles, _ = _inputs()
  particles = particles.replace(discount_product=jnp.ones((1, 4)))
  model = actions.DiscreteActions(recurrent_fn=recurrent_fn, num_actions=NUM_ACTIONS)
  _, _, diagnostics = engine.run_smc(None, jax.random.key(0), model, particles, 3,
                                     _config(resample="always"), jax.lax.fori_loop)
  np.testing.assert_array_equal(np.asarray(diagnostics.resampled), [[True, True, False]])
  np.testing.assert_array_equal(np.asarray(diagnostics.num_resamples), [[1, 1, 0]])


def test_run_steps_records_one_diagnostic_column_per_step():
  # Each field a different function of the step and the row, so that a field written to
  # another's column, a step to another step's column or a row to another row shows.
  def body(i, carry):
    row = jnp.arange(2)
    diagnostics = engine.StepDiagnostics(
        ess=0.5 * i + 10.0 * row, distinct_actions=jnp.full((2,), 7.0) - i,
        resampled=(i + row) % 2 == 0, num_resamples=(3 * i + row).astype(jnp.int32),
        nonfinite=(100 * row + i * i).astype(jnp.int32))
    return carry + 1, diagnostics

  carry, diagnostics = engine.run_steps(jax.lax.fori_loop, 5, body, jnp.int32(0), 2)
  assert int(carry) == 5
  step, row = np.arange(5)[None], np.arange(2)[:, None]
  want = dict(ess=(0.5 * step + 10.0 * row, np.float32),
              distinct_actions=(np.broadcast_to(7.0 - step, (2, 5)), np.float32),
              resampled=((step + row) % 2 == 0, np.bool_),
              num_resamples=(3 * step + row, np.int32),
              nonfinite=(100 * row + step * step, np.int32))
  for name, (values, dtype) in want.items():
    got = np.asarray(getattr(diagnostics, name))
    assert got.dtype == dtype, name
    np.testing.assert_array_equal(got, values, err_msg=name)


# Distinct actions for the copies of a particle (`distinct_copies`, `engine.copy_actions`).
COPY_LOGITS = np.log([0.5, 0.3, 0.15, 0.05, 1.0]) - np.array([0, 0, 0, 0, np.inf])  # 4: none


def _copy_actions(source, num_keys, logits=COPY_LOGITS, sampled=-7):
  source = jnp.asarray(source, jnp.int32)[None]
  policy = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), source.shape + (len(logits),))
  keys = jax.random.split(jax.random.key(3), num_keys)
  return np.asarray(jax.vmap(lambda k: engine.copy_actions(
      k, policy, source, jnp.full(source.shape, sampled, jnp.int32)))(keys))[:, 0]


def test_copies_take_distinct_actions_with_mass_then_fall_back_to_their_own_draw():
  # Particle 0 was copied six times (more copies than its 4 actions with mass), 6 and 7 are
  # copies of another, 8 is alone.
  got = _copy_actions([0, 0, 0, 0, 0, 0, 6, 6, 8], num_keys=200)
  for row in got:
    assert sorted(row[:4]) == [0, 1, 2, 3]  # every action with mass once, never action 4
    assert list(row[4:6]) == [-7, -7]  # beyond them: the particle's own independent draw
    assert row[6] != row[7] and {row[6], row[7]} <= {0, 1, 2, 3}


def test_copies_over_many_actions_take_the_head_of_their_gumbel_order():
  # Beyond 128 actions the copies take the best few of `gumbel + logits` (a partial order)
  # instead of ranking every action; the same order, checked against a stable argsort with
  # the Gumbel noise drawn as `copy_actions` draws it (the source's row, shared by its copies).
  num_actions = 200
  logits = np.where(np.arange(num_actions) % 7 == 3, -np.inf, 0.0).astype(np.float32)
  source = jnp.asarray([[0, 0, 0, 0, 0, 5]], jnp.int32)
  policy = jnp.broadcast_to(jnp.asarray(logits), (1, 6, num_actions))
  key = jax.random.key(4)
  got = np.asarray(engine.copy_actions(key, policy, source, jnp.full((1, 6), -7, jnp.int32)))
  gumbel = np.asarray(draws.gumbel(key, (1, 6, num_actions)))[0, 0]
  order = np.argsort(-(gumbel + logits), kind="stable")
  np.testing.assert_array_equal(got[0, :5], order[:5])
  assert np.isfinite(logits[got[0, 5]])  # the lone particle's own best: an action with mass


def test_the_first_copy_draws_from_the_prior_and_the_second_from_what_is_left():
  # Gumbel-top-k: the first is a draw from the prior; the second, from the prior
  # renormalised without the first (computed here by hand).
  got = _copy_actions([0, 0], num_keys=20000)
  p = np.exp(COPY_LOGITS)
  first = np.bincount(got[:, 0], minlength=5) / len(got)
  np.testing.assert_allclose(first, p, atol=0.015)
  second = np.bincount(got[:, 1], minlength=5) / len(got)
  expected_second = [sum(p[i] * p[j] / (1 - p[i]) for i in range(4) if i != j) for j in range(5)]
  np.testing.assert_allclose(second, expected_second, atol=0.015)


def test_step_with_distinct_copies_gives_the_copies_of_a_dominant_particle_distinct_actions():
  particles, step = _inputs(np.array([[-1e4, -1e4, -1e4, 0.0]]))
  step = step.replace(policy=jnp.zeros((1, 4, NUM_ACTIONS)))  # uniform next prior
  model = actions.DiscreteActions(recurrent_fn=None, num_actions=NUM_ACTIONS)
  config = _config(resample="always", distinct_copies=True)
  out, *_ = engine.smc_step(particles, backpropagation.ActionValues.zeros(1, NUM_ACTIONS),
                            engine.TDScale.zeros(1), step,
                            engine.step_keys(jax.random.key(1), 1, 4, True).at(0), config,
                            jnp.asarray(True), model)
  action = np.asarray(out.action)[0]
  # Four copies of particle 3 over three actions: the first three take all three.
  assert sorted(action[:3]) == [0, 1, 2] and 0 <= action[3] < NUM_ACTIONS


@pytest.mark.parametrize("make_key", [jax.random.PRNGKey, jax.random.key], ids=["raw", "typed"])
@pytest.mark.parametrize("distinct_copies", [False, True])
def test_step_keys_are_the_keys_each_step_would_split_for_itself(make_key, distinct_copies):
  num_steps, num_particles = 5, 3
  keys = engine.step_keys(make_key(4), num_steps, num_particles, distinct_copies)
  data = lambda k: np.asarray(jax.random.key_data(k) if k.dtype != jnp.uint32 else k)
  for i in range(num_steps):
    model_key, resample_key, next_key = (jax.random.split(make_key(4), (num_steps, 3))[i, j]
                                         for j in range(3))
    sample_key, copies_key = next_key, next_key
    if distinct_copies:
      sample_key, copies_key = jax.random.split(next_key)
    step = keys.at(i)
    np.testing.assert_array_equal(data(step.model),
                                  data(jax.random.split(model_key, num_particles)))
    np.testing.assert_array_equal(data(step.resample), data(resample_key))
    np.testing.assert_array_equal(data(step.sample),
                                  data(jax.random.split(sample_key, num_particles)))
    if distinct_copies:
      np.testing.assert_array_equal(data(step.copies), data(copies_key))
    # A particle slice's key is the same whether the step's key is split in the loop or before.
    np.testing.assert_array_equal(data(step.model),
                                  data(particles_lib.particle_slice_keys(model_key, 3)))
  # Slice keys of another width are refused, not broadcast.
  with pytest.raises(AssertionError):
    particles_lib.uniform_per_slice(keys.at(0).sample, (2, num_particles + 1, 1))
