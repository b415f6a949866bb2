"""TSMCTS's second actions at `s2`: legal in each particle's own state, ranked without noise at
`gumbel_scale=0`.

Expected values are by hand: the problems are built so that a legal play scores exactly 0 and any
illegal second action pays 1000, or so that the ranking is the prior's order.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import smctx
from smctx import tabular
from smctx._src import actions
from smctx._src import engine
from smctx._src import particles as particles_lib
from smctx._src import rerooting

ILLEGAL_PAYOFF = 1000.0


def _chance_then_forced_move_mdp():
  """Root action 0 leads to X or Y at random; only action 0 is legal at X, only 1 at Y.

  States: 0 root, 1 X, 2 Y, 3 terminal. Legal moves pay 0 and end the episode;
  an illegal move pays 1000 (the model's prior gives it probability 0). Root
  action 1 ends the episode at once with reward 0. Every legal value is 0.
  """
  transitions = np.zeros((4, 2, 4))
  transitions[0, 0, 1] = transitions[0, 0, 2] = 0.5
  transitions[0, 1, 3] = 1.0
  transitions[1:, :, 3] = 1.0
  rewards = np.zeros((4, 2))
  rewards[1, 1] = rewards[2, 0] = ILLEGAL_PAYOFF
  prior_logits = np.array([[0.0, 0.0], [0.0, -np.inf], [-np.inf, 0.0], [0.0, 0.0]])
  return tabular.TabularMDP(
      transitions=transitions, rewards=rewards, discount=1.0,
      terminal=np.array([False, False, False, True]), prior_logits=prior_logits,
      values=np.zeros(4))


@pytest.mark.slow  # about 11 s on 2 cores
def test_stochastic_successors_only_take_second_actions_legal_in_their_own_state():
  # Before the fix a particle took the group's Gumbel-ranked action whenever any
  # particle of its group could play it: Q_SH(0) averaged 696 over 20 seeds.
  root_fn, recurrent_fn = tabular.model(_chance_then_forced_move_mdp())
  root = root_fn(jnp.zeros((8,), jnp.int32))
  search = jax.jit(lambda key, policy: policy(None, key, root, recurrent_fn, 48, num_particles=16),
                   static_argnums=1)
  for policy in (smctx.tsmcts_policy, smctx.smcts_policy):
    for seed in range(20):
      output = search(jax.random.key(seed), policy)
      q_root_action_0 = np.asarray(output.search_tree.summary().qvalues)[:, 0]
      np.testing.assert_array_equal(q_root_action_0, 0.0)


def _rerooting_inputs(num_particles, logits_at_s2):
  """`num_particles` particles of one root in one group, all reaching one `s2` with these logits."""
  num_actions = logits_at_s2.shape[-1]
  shape = (1, num_particles)
  zeros = jnp.zeros(shape, jnp.float32)
  particles = particles_lib.Particles(
      embedding=zeros, action=jnp.zeros(shape, jnp.int32),
      policy=jnp.zeros(shape + (num_actions,)), value=zeros, returns=zeros,
      discount_product=jnp.ones(shape), log_weight=zeros, group=jnp.zeros(shape, jnp.int32),
      label=jnp.zeros(shape, jnp.int32))
  step = particles_lib.ModelStep(
      reward=zeros, discount=jnp.ones(shape), value=zeros,
      policy=jnp.broadcast_to(jnp.asarray(logits_at_s2, jnp.float32), shape + (num_actions,)),
      embedding=zeros, nonfinite=jnp.zeros((1,), jnp.int32))
  return particles, step


def _second_actions(key, gumbel_scale, logits_at_s2, num_particles):
  particles, step = _rerooting_inputs(num_particles, logits_at_s2)
  model = actions.as_action_model(lambda *a: None, logits_at_s2.shape[-1])
  keys = engine.step_keys(key, 1, num_particles).at(0)
  rerooted, _ = rerooting.reroot(particles, step, keys, 1, model, gumbel_scale)
  return np.asarray(rerooted.action[0])


def test_gumbel_scale_zero_ranks_second_actions_by_the_prior_alone():
  # With no Gumbel noise a group's particles take the actions in the prior's
  # order (ties by index), whatever the key; the re-rooting sorts the group
  # by second action, so they appear in index order.
  logits = np.array([0.5, 2.0, -1.0, 1.0, 0.0])
  expected_top4 = np.sort(np.argsort(-logits, kind="stable")[:4])
  for seed in range(5):
    got = _second_actions(jax.random.key(seed), 0.0, logits, num_particles=4)
    np.testing.assert_array_equal(got, expected_top4)
  # With noise the chosen set varies with the key.
  noisy = {tuple(_second_actions(jax.random.key(seed), 1.0, logits, 4)) for seed in range(20)}
  assert len(noisy) > 1


def test_gumbel_scale_zero_makes_a_deterministic_search_independent_of_the_key():
  # Deterministic model, groups no larger than the number of actions, two steps
  # per iteration (no resampling before an iteration's last step): with
  # gumbel_scale=0 nothing random is left, so every key gives the same search.
  # The paper's variant: each iteration restarts at the root (smctx's default starts
  # iteration 2 at s2, so its second step draws third actions from the prior).
  mdp = tabular.random_mdp(3, num_states=30, num_actions=4)
  root_fn, recurrent_fn = tabular.model(mdp)
  root = root_fn(jnp.arange(30))
  search = jax.jit(lambda key: smctx.tsmcts_policy(
      None, key, root, recurrent_fn, 32, num_particles=8, gumbel_scale=0.0, variant="paper"))
  reference = search(jax.random.key(0))
  assert tuple(np.asarray(reference.search_tree.extra_data.depth[0])) == (2, 2)
  for seed in (1, 2, 3):
    output = search(jax.random.key(seed))
    np.testing.assert_array_equal(np.asarray(output.action), np.asarray(reference.action))
    np.testing.assert_array_equal(np.asarray(output.action_weights),
                                  np.asarray(reference.action_weights))


def test_particles_past_the_ranked_actions_draw_from_their_own_prior():
  """A group of 8 particles at an `s2` with 3 actions: positions 0-2 take the group's ranked
  actions (by the pooled logits alone with gumbel_scale=0), positions 3-7 their own draw
  (`sampled`), never the worst-ranked action in its place."""
  group = jnp.zeros((8,), jnp.int32)
  logits = jnp.log(jnp.asarray([0.2, 0.7, 0.1], jnp.float32))
  own_logits = jnp.broadcast_to(logits, (8, 3))
  group_score = logits[None]  # one group; no Gumbel noise
  sampled = jnp.asarray([7, 7, 7, 0, 1, 0, 1, 0], jnp.int32)  # stand-ins for prior draws
  got = rerooting._second_action_of_one_root(group, own_logits, group_score, sampled)
  # Ranked by the logits: action 1 (0.7), then 0 (0.2), then 2 (0.1); then the own draws.
  np.testing.assert_array_equal(got, [1, 0, 2, 0, 1, 0, 1, 0])


def test_a_ranked_action_the_particles_own_state_forbids_falls_back_to_its_own_draw():
  """The group ranks action 0 then 1 then 2 (gumbel_scale=0); particle 1 reached a state where
  action 1 has no mass, so it takes its own draw instead of an illegal move."""
  group = jnp.zeros((3,), jnp.int32)
  low = np.finfo(np.float32).min  # how the model's sanitised logits mark an illegal action
  own_logits = jnp.asarray([[0.0, -1.0, -2.0], [0.0, low, -2.0], [0.0, -1.0, -2.0]])
  group_score = jnp.asarray([[0.0, -1.0, -2.0]])
  sampled = jnp.asarray([5, 6, 7], jnp.int32)  # stand-ins for the particles' own draws
  got = rerooting._second_action_of_one_root(group, own_logits, group_score, sampled)
  np.testing.assert_array_equal(got, [0, 6, 2])


def test_run_order_is_a_stable_sort_by_label_within_each_group():
  # The first particle's label appears twice in the first group: an off-by-one in the count of
  # same-label particles before the group shifts both copies onto their neighbours.
  group = np.array([0, 0, 0, 1, 1, 1])
  label = np.array([2, 2, 1, 2, 0, 2])
  got = rerooting._run_order_of_one_root(jnp.asarray(group), jnp.asarray(label), 2, 3)
  np.testing.assert_array_equal(got, np.lexsort((np.arange(6), label, group)))


@pytest.mark.parametrize("num_particles", [rerooting.PAIRWISE_MAX_PARTICLES,
                                           rerooting.PAIRWISE_MAX_PARTICLES + 72])
def test_run_order_sorts_by_label_within_groups_by_comparisons_and_by_counting(num_particles):
  # Up to `PAIRWISE_MAX_PARTICLES` the keys are ranked pairwise, beyond by a counting sort:
  # both the stable sort NumPy's lexsort gives, on groups of uneven sizes with repeated labels.
  rng = np.random.default_rng(num_particles)
  num_groups, num_labels = 5, 7
  group = np.sort(rng.integers(0, num_groups, size=(3, num_particles)), axis=1)
  label = rng.integers(0, num_labels, size=(3, num_particles))
  got = jax.vmap(rerooting._run_order_of_one_root, in_axes=(0, 0, None, None))(
      jnp.asarray(group, jnp.int32), jnp.asarray(label, jnp.int32), num_groups, num_labels)
  for b in range(3):
    np.testing.assert_array_equal(np.asarray(got)[b],
                                  np.lexsort((np.arange(num_particles), label[b], group[b])))


def test_reroot_restarts_particles_at_s2_and_labels_them_by_slot_of_group_and_second_action():
  # Two groups of three; at s2 only action 1 is legal, so every particle takes it (the first
  # by rank, the others by their own draw). The two groups' runs of second action 1 touch at
  # the boundary but are separate slots: each particle is labelled by its run's first index.
  low = np.finfo(np.float32).min
  particles, step = _rerooting_inputs(6, np.array([low, 0.0, low]))
  particles = particles.replace(group=jnp.asarray([[0, 0, 0, 1, 1, 1]], jnp.int32),
                                label=jnp.asarray([[2, 2, 2, 0, 0, 0]], jnp.int32),
                                returns=jnp.full((1, 6), 3.0), log_weight=jnp.full((1, 6), -2.0))
  value = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 9.0]])
  step = step.replace(value=jnp.asarray(value, jnp.float32), discount=jnp.full((1, 6), 0.5),
                      reward=jnp.full((1, 6), 0.25))
  model = actions.as_action_model(lambda *a: None, 3)
  keys = engine.step_keys(jax.random.key(0), 1, 6).at(0)
  rerooted, record = rerooting.reroot(particles, step, keys, 2, model, 0.0)
  np.testing.assert_array_equal(np.asarray(rerooted.action), 1)
  np.testing.assert_array_equal(np.asarray(rerooted.label), [[0, 0, 0, 3, 3, 3]])
  np.testing.assert_array_equal(np.asarray(record.slot), [[0, 0, 0, 3, 3, 3]])
  np.testing.assert_array_equal(np.asarray(record.root_action), [[2, 2, 2, 0, 0, 0]])
  # s2 is the new root: returns, discount products and weights restart there.
  np.testing.assert_array_equal(np.asarray(rerooted.returns), 0.0)
  np.testing.assert_array_equal(np.asarray(rerooted.discount_product), 1.0)
  np.testing.assert_array_equal(np.asarray(rerooted.log_weight), 0.0)
  np.testing.assert_array_equal(np.asarray(rerooted.value), value)
  # Each group's chance node at s2: the mean of its particles' values there.
  np.testing.assert_allclose(np.asarray(record.pooled_value), [[2.0, 6.0]])


def test_sampled_second_actions_label_particles_by_position_and_mask_unused_labels():
  # Groups of 3 and 1 particles: group 0 uses labels 0-2, group 1 label 0 only; the pooled
  # prior is uniform over the labels in use and (numerically) zero elsewhere.
  particles, step = _rerooting_inputs(4, np.zeros(3))
  particles = particles.replace(group=jnp.asarray([[0, 0, 0, 1]], jnp.int32))
  model = actions.as_action_model(lambda *a: None, 3)
  keys = engine.step_keys(jax.random.key(0), 1, 4).at(0)
  size = jnp.asarray([[3.0, 1.0]])
  _, label, pooled_logits = rerooting._sampled_second_actions(particles, step, keys, 2, size,
                                                              model, 1.0)
  np.testing.assert_array_equal(np.asarray(label), [[0, 1, 2, 0]])
  prior = np.asarray(jax.nn.softmax(pooled_logits, axis=-1))[0]
  np.testing.assert_allclose(prior, [[1 / 3, 1 / 3, 1 / 3, 0.0], [1.0, 0.0, 0.0, 0.0]],
                             atol=1e-6)


@pytest.mark.parametrize("num_actions", [5, 200])
def test_each_position_of_a_group_takes_that_position_of_the_groups_order(num_actions):
  """Both paths (ranks by comparisons up to 128 actions, the group's best few beyond): groups
  of 3, 6 and 3 particles; the `k`-th particle of a group takes the `k`-th action of a stable
  `argsort(-group_score)` (ties frequent), or its own draw past the number of actions (the
  sixth particle of the second group with 5 actions)."""
  rng = np.random.default_rng(1)
  group = jnp.asarray([0] * 3 + [1] * 6 + [2] * 3, jnp.int32)
  group_score = rng.integers(-3, 4, size=(3, num_actions)).astype(np.float32)
  own_logits = jnp.zeros((12, num_actions))  # every action legal everywhere
  sampled = jnp.full((12,), -7, jnp.int32)
  got = np.asarray(rerooting._second_action_of_one_root(
      group, own_logits, jnp.asarray(group_score), sampled))
  order = np.argsort(-group_score, axis=-1, kind="stable")
  position = [0, 1, 2, 0, 1, 2, 3, 4, 5, 0, 1, 2]
  expected = [order[g, k] if k < num_actions else -7
              for g, k in zip(np.asarray(group), position, strict=True)]
  np.testing.assert_array_equal(got, expected)
  assert (num_actions == 5) == (-7 in expected)  # the fallback is exercised on the small path
