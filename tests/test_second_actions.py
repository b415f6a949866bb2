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
