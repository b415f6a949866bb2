"""Options that change where a search spends its budget: `elimination=` and `resample=`.

Two problems with answers derived by hand:

* a bandit with exact Q: discount 0 and a fixed reward per action, so every
  evaluated candidate's `Q_SH` is its reward, whatever the particles did;
* a first-step-reward model: the root action 0 earns reward 1, nothing else
  ever earns anything, values are 0 and discounts 1. After the first step the
  TD weights of the particles that took action 0 are `e^{1/τ}` times the
  others' (with `td_scale="none"`), and every later TD error is 0.
"""

import functools

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx
from tests.policies import POLICIES

# --------------------------------------------------------------------------
# elimination="random" (TSMCTS)
# --------------------------------------------------------------------------

# m1 = 8 candidates (all actions), N = 16, budget 48: K = 3 halving iterations
# of one step each, with 8, 4 and 2 live candidates.
REWARDS = np.array([0.1, 0.5, -0.2, 0.9, 0.3, 0.0, 0.7, -0.5], np.float32)
BEST = int(np.argmax(REWARDS))
NUM_ROOTS = 2000


def _bandit_fn(params, rng_key, action, embedding):
  del params, rng_key
  zeros = jnp.zeros(action.shape, jnp.float32)
  return mctx.RecurrentFnOutput(reward=jnp.asarray(REWARDS)[action], discount=zeros,
                                prior_logits=jnp.zeros(action.shape + (len(REWARDS),)),
                                value=zeros), embedding


@functools.cache
def _bandit_search(elimination):
  """Flat prior, no Gumbel noise: the only randomness is random elimination's own."""
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((NUM_ROOTS, len(REWARDS))),
                           value=jnp.zeros(NUM_ROOTS), embedding=jnp.zeros(NUM_ROOTS))
  out = jax.jit(lambda key: smctx.tsmcts_policy(
      None, key, root, _bandit_fn, 48, num_particles=16, gumbel_scale=0.0,
      elimination=elimination))(jax.random.PRNGKey(0))
  alive = np.asarray(out.search_tree.extra_data.particles_per_action) > 0  # [B, K, A]
  np.testing.assert_array_equal(alive.sum(-1), np.broadcast_to([8, 4, 2], (NUM_ROOTS, 3)))
  return out, alive


def test_sequential_halving_keeps_the_best_candidates_in_every_iteration():
  _, alive = _bandit_search("sequential_halving")
  by_reward = np.argsort(-REWARDS)
  for iteration, m in enumerate([8, 4, 2]):
    want = np.zeros(len(REWARDS), bool)
    want[by_reward[:m]] = True
    assert np.all(alive[:, iteration] == want), iteration


def test_random_elimination_keeps_a_uniformly_random_half_of_the_survivors():
  _, alive = _bandit_search("random")
  # Survivors of an iteration are drawn among the candidates alive in it.
  assert np.all(alive[:, 1] <= alive[:, 0]) and np.all(alive[:, 2] <= alive[:, 1])
  # A uniformly random half: the best action is alive in iteration 2 with
  # probability 4/8 and in iteration 3 with probability 4/8 · 2/4 = 1/4 (SH: 1).
  # Binomial standard errors over 2000 roots: 0.011 and 0.010; margins 0.05, 0.045.
  assert abs(alive[:, 1, BEST].mean() - 0.5) < 0.05
  assert abs(alive[:, 2, BEST].mean() - 0.25) < 0.045


def test_random_elimination_chooses_among_every_candidate_ever_evaluated():
  out, alive = _bandit_search("random")
  # The best action was dropped before the last iteration in about 3/4 of the
  # roots; its exact Q from the first iteration still makes it the choice.
  assert (~alive[:, 2, BEST]).mean() > 0.6
  np.testing.assert_array_equal(out.action, np.full(NUM_ROOTS, BEST))


# --------------------------------------------------------------------------
# resample="always" / "never" / "ess"
# --------------------------------------------------------------------------

NUM_PARTICLES, TEMPERATURE, BATCH = 16, 0.05, 64


def _first_step_reward_fn(num_actions):
  def recurrent_fn(params, rng_key, action, state):
    del params, rng_key
    at_root = state < 0  # the state is -1 at the root, then the root action taken
    reward = jnp.where(at_root & (action == 0), 1.0, 0.0)
    zeros = jnp.zeros(action.shape, jnp.float32)
    out = mctx.RecurrentFnOutput(reward=reward, discount=zeros + 1.0, value=zeros,
                                 prior_logits=jnp.zeros(action.shape + (num_actions,)))
    return out, jnp.where(at_root, action, state)
  return recurrent_fn


@functools.cache
def _first_step_search(name, resample, ess_threshold=0.5):
  """SMC and SMCTS: 2 actions, 4 steps; TSMCTS: 4 actions, 2 iterations of 4 steps."""
  num_actions = 4 if name == "tsmcts" else 2
  num_simulations = NUM_PARTICLES * (8 if name == "tsmcts" else 4)
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((BATCH, num_actions)), value=jnp.zeros(BATCH),
                           embedding=jnp.full((BATCH,), -1, jnp.int32))
  return jax.jit(lambda key: POLICIES[name](
      None, key, root, _first_step_reward_fn(num_actions), num_simulations,
      num_particles=NUM_PARTICLES, temperature=TEMPERATURE, td_scale="none", resample=resample,
      ess_threshold=ess_threshold))(jax.random.PRNGKey(0))


@pytest.mark.parametrize("name", ["smc", "smcts"])
def test_resample_always_resamples_at_every_step_but_the_last(name):
  # After the first step the weights are equal again, so "ess" would not resample there.
  diagnostics = _first_step_search(name, "always").search_tree.extra_data
  np.testing.assert_array_equal(diagnostics.resampled,
                                np.broadcast_to([True, True, True, False], (BATCH, 4)))
  np.testing.assert_array_equal(diagnostics.num_resamples, np.full(BATCH, 3))


def test_tsmcts_resample_always_resamples_at_every_inner_step_but_an_iterations_last():
  # Iteration 1: a root step (no weights), two inner steps, a last step (no resampling).
  # Iteration 2 starts at iteration 1's successors (smctx's default): no root step, so
  # three inner steps resample before its last.
  diagnostics = _first_step_search("tsmcts", "always").search_tree.extra_data
  want = [False, True, True, False] + [True, True, True, False]
  np.testing.assert_array_equal(diagnostics.resampled, np.broadcast_to(want, (BATCH, 8)))


@pytest.mark.parametrize("name", list(POLICIES))
def test_resample_never_never_resamples(name):
  diagnostics = _first_step_search(name, "never").search_tree.extra_data
  assert not np.any(np.asarray(diagnostics.resampled))
  np.testing.assert_array_equal(diagnostics.num_resamples, np.zeros(BATCH))


def test_resample_always_moves_every_smc_particle_to_the_heavily_weighted_action():
  # Weight ratio e^{1/τ} = e^20: systematic resampling after the first step
  # copies only particles that took action 0 (every row has some).
  out = _first_step_search("smc", "always")
  initial = np.asarray(out.search_tree.extra_data.particles_per_action)[:, 0]
  assert np.all(initial[:, 0] > 0) and np.any(initial[:, 1] > 0)
  np.testing.assert_array_equal(out.search_tree.children_visits[:, 0],
                                np.broadcast_to([NUM_PARTICLES, 0], (BATCH, 2)))
  np.testing.assert_array_equal(out.search_tree.extra_data.distinct_actions[:, 0], np.ones(BATCH))


def test_resample_never_keeps_every_smc_particle_on_its_initial_action():
  out = _first_step_search("smc", "never")
  initial = np.asarray(out.search_tree.extra_data.particles_per_action)[:, 0]
  np.testing.assert_array_equal(out.search_tree.children_visits[:, 0], initial)


def test_resample_ess_resamples_only_when_the_ess_falls_below_the_threshold():
  # With n0 particles on action 0 the ESS after the first step is n0 (up to
  # e^-20): below 0.55·16 = 8.8 exactly when 1 <= n0 <= 8 (n0 = 0: equal
  # weights, ESS 16). Afterwards every TD error is 0 and the ESS stays put.
  out = _first_step_search("smc", "ess", ess_threshold=0.55)
  n0 = np.asarray(out.search_tree.extra_data.particles_per_action)[:, 0, 0]
  resampled = np.asarray(out.search_tree.extra_data.resampled)
  want = (n0 >= 1) & (n0 <= 8)
  assert 0 < want.sum() < BATCH  # both cases occur
  np.testing.assert_array_equal(resampled[:, 0], want)
  assert not np.any(resampled[:, 1:])


# --------------------------------------------------------------------------
# variant= (TSMCTS): smctx's defaults or the paper's
# --------------------------------------------------------------------------


def _root(num_actions: int, batch: int = 4) -> mctx.RootFnOutput:
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(batch, num_actions)), jnp.float32)
  return mctx.RootFnOutput(prior_logits=logits, value=jnp.zeros((batch,)),
                           embedding=jnp.zeros((batch,), jnp.int32))


def _counting_fn(num_actions: int):
  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    reward = 0.1 * action.astype(jnp.float32) - 0.05 * embedding.astype(jnp.float32)
    return mctx.RecurrentFnOutput(reward=reward, discount=jnp.full(action.shape, 0.9),
                                  prior_logits=jnp.zeros(action.shape + (num_actions,)),
                                  value=jnp.zeros(action.shape)), embedding + action
  return recurrent_fn


@pytest.mark.parametrize("variant,kwargs,width,depths", [
    # 4 actions, 64 simulations: m1 = 4, K = 2 iterations (4, then 2 candidates).
    # smctx: depth 2 per iteration would give N = 64 // (2·2) = 16, 8 particles per survivor,
    # more than the 4 paths of depth 2 below it; distinct paths need depth 3 in iteration 2:
    # N·(2 + 3) <= 64 gives N = 12 (3 and 6 particles per candidate; 60 evaluations).
    ("smctx", {}, 12, (2, 3)),
    # The paper's variant: depth 3, N = 64 // 6 = 10 (60 evaluations).
    ("paper", {}, 10, (3, 3)),
    # depth_per_iteration=4: N = 64 // (2·4) = 8; groups of 2 and 4 fit in 4^3 paths.
    pytest.param("smctx", dict(depth_per_iteration=4), 8, (4, 4), marks=pytest.mark.slow),
    pytest.param("paper", dict(depth_per_iteration=2), 16, (2, 2), marks=pytest.mark.slow),
    # An explicit width wins over depth_per_iteration: 64 // (2·4) = 8 steps per iteration.
    ("smctx", dict(depth_per_iteration=2, num_particles=4), 4, (8, 8)),
])
def test_variant_sets_the_default_width_and_depth(variant, kwargs, width, depths):
  search = jax.jit(functools.partial(smctx.tsmcts_policy, recurrent_fn=_counting_fn(4),
                                     num_simulations=64, variant=variant, **kwargs))
  diagnostics = search(None, jax.random.key(0), _root(4)).search_tree.extra_data
  np.testing.assert_array_equal(diagnostics.num_particles, width)
  np.testing.assert_array_equal(diagnostics.depth, np.broadcast_to(depths, (4, 2)))


@pytest.mark.parametrize("variant,kwargs,num_steps", [
    ("smctx", {}, 5), ("paper", {}, 6), ("smctx", dict(depth_per_iteration=4), 8),
    ("paper", dict(depth_per_iteration=2), 4)])
def test_variant_sets_the_number_of_steps_without_compiling(variant, kwargs, num_steps):
  # The per-step diagnostics have one column per sequential call: the sum of the depths
  # above ((2, 3), (3, 3), (4, 4), (2, 2)). Shapes only (`jax.eval_shape`), nothing compiled,
  # so the slow cases above are checked in the default run too.
  shapes = jax.eval_shape(functools.partial(
      smctx.tsmcts_policy, recurrent_fn=_counting_fn(4), num_simulations=64, variant=variant,
      **kwargs), None, jax.random.key(0), _root(4))
  assert shapes.search_tree.extra_data.ess.shape == (4, num_steps)


@pytest.mark.parametrize("name", list(POLICIES))
def test_resampling_method_reaches_the_search(name):
  program = lambda method: str(jax.make_jaxpr(functools.partial(
      POLICIES[name], recurrent_fn=_counting_fn(4), num_simulations=64,
      resampling_method=method))(None, jax.random.key(0), _root(4)))
  assert program("multinomial") != program("systematic")


@pytest.mark.parametrize("kwargs", [dict(reuse_successors=1), dict(reuse_successors="yes"),
                                    dict(reuse_successors=True, max_depth=3)])
def test_bad_reuse_successors_is_refused_naming_the_argument(kwargs):
  with pytest.raises(ValueError, match="reuse_successors"):
    smctx.tsmcts_policy(None, jax.random.key(0), _root(4), _counting_fn(4), 16, **kwargs)


def test_distinct_copies_reaches_the_inner_search():
  program = lambda flag: str(jax.make_jaxpr(functools.partial(
      smctx.tsmcts_policy, recurrent_fn=_counting_fn(4), num_simulations=64,
      distinct_copies=flag))(None, jax.random.key(0), _root(4)))
  assert program(True) != program(False)


@pytest.mark.parametrize("value", [1, "yes"])
def test_bad_distinct_copies_is_refused_naming_the_argument(value):
  with pytest.raises(ValueError, match="distinct_copies"):
    smctx.tsmcts_policy(None, jax.random.key(0), _root(4), _counting_fn(4), 16,
                        distinct_copies=value)


@pytest.mark.parametrize("value", [0, -1, 2.5, "2"])
def test_bad_depth_per_iteration_is_refused_naming_the_argument(value):
  with pytest.raises(ValueError, match="depth_per_iteration"):
    smctx.tsmcts_policy(None, jax.random.key(0), _root(4), _counting_fn(4), 16,
                        depth_per_iteration=value)


_SOFT = mctx.qtransform_completed_by_mix_value
_SHARP = functools.partial(_SOFT, value_scale=0.3)


def _transform_runs():
  """`run(**kw)`: one jitted 16-simulation TSMCTS per configuration, and its weights."""
  outputs = {}

  def run(**kw):
    name = tuple(sorted((k, id(v) if callable(v) else v) for k, v in kw.items()))
    if name not in outputs:
      outputs[name] = jax.jit(functools.partial(
          smctx.tsmcts_policy, recurrent_fn=_counting_fn(4), num_simulations=16,
          num_particles=4, **kw))(None, jax.random.key(1), _root(4))
    return outputs[name]

  return run, lambda **kw: np.asarray(run(**kw).action_weights)


def test_variant_sets_the_default_transform_and_an_explicit_one_wins():
  soft, sharp = _SOFT, _SHARP
  run, weights = _transform_runs()
  # smctx: the sharper transform decides and makes the policy target.
  np.testing.assert_allclose(weights(), weights(qtransform=sharp, target_qtransform=sharp),
                             atol=1e-6)
  np.testing.assert_array_equal(run().action, run(target_qtransform=soft).action)
  assert not np.allclose(weights(), weights(target_qtransform=soft), atol=1e-3)
  # An explicit qtransform makes the target too (as in mctx): see the paper variant's test.


@pytest.mark.slow  # three more compilations, about 15 s on 2 cores
def test_paper_variant_targets_with_its_decision_transform_unless_told_otherwise():
  soft, sharp = _SOFT, _SHARP
  _, weights = _transform_runs()
  # The paper's variant: mctx's transform for both, unless a target is given.
  np.testing.assert_allclose(weights(variant="paper"), weights(variant="paper", qtransform=soft),
                             atol=1e-6)
  assert not np.allclose(weights(variant="paper"),
                         weights(variant="paper", target_qtransform=sharp), atol=1e-3)


def test_unknown_variant_is_refused_naming_the_argument():
  with pytest.raises(ValueError, match="variant"):
    smctx.tsmcts_policy(None, jax.random.key(0), _root(4), _counting_fn(4), 16, variant="fast")
