"""The sampled-action policies run the discrete engine: an exact equivalence.

A discrete problem posed as a sampled one (the candidates are all `A` actions
as integers, the model's policy is its prior logits, the sampler draws from
them with the discrete engine's own categorical draw) must give
the same searches for SMC and SMCTS: same root assignment, same particle
moves, same weights, same outputs (the actions bit for bit, the floats to
rounding). Any divergence between the two families'
code paths (a copied loop drifting, a key split differently, labels or
candidates mixed up) breaks it.

TSMCTS draws its second actions differently in the two families (without
replacement over a discrete prior; one sample per particle in the sampled one),
so it is compared by value instead: on a bandit, where nothing happens after
the root step, both give the same Q of every candidate.
"""

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx
from smctx._src import particles as particles_lib
from smctx import tabular
from tests.policies import POLICIES
from tests.policies import SAMPLED_POLICIES

B, A = 6, 5


def _problem():
  mdp = tabular.random_mdp(3, num_states=30, num_actions=A)
  root_fn, recurrent_fn = tabular.model(mdp)
  states = jnp.arange(B, dtype=jnp.int32) * 4
  root = root_fn(states)
  # Max-subtracted logits: the discrete engine's sanitising is then the identity
  # and the categorical draws of both families see the same numbers.
  root = root.replace(prior_logits=root.prior_logits
                      - jnp.max(root.prior_logits, axis=-1, keepdims=True))

  def discrete_fn(params, key, action, state):
    out, nxt = recurrent_fn(params, key, action, state)
    return out.replace(prior_logits=out.prior_logits
                       - jnp.max(out.prior_logits, axis=-1, keepdims=True)), nxt

  def sampled_fn(params, key, action, state):
    out, nxt = discrete_fn(params, key, action, state)
    return smctx.SampledRecurrentFnOutput(reward=out.reward, discount=out.discount,
                                          value=out.value, policy=out.prior_logits), nxt

  sampled_root = smctx.SampledRootFnOutput(
      candidates=jnp.broadcast_to(jnp.arange(A, dtype=jnp.int32), (B, A)), value=root.value,
      embedding=root.embedding, prior_logits=root.prior_logits)
  sampler = particles_lib.sample_actions  # the discrete engine's own draw
  return root, discrete_fn, sampled_root, sampled_fn, sampler


@pytest.mark.parametrize("name", [pytest.param("smc", marks=pytest.mark.slow), "smcts"])
def test_sampled_policy_with_all_actions_as_candidates_is_the_discrete_search(name):
  discrete, sampled = POLICIES[name], SAMPLED_POLICIES[name]
  root, discrete_fn, sampled_root, sampled_fn, sampler = _problem()
  invalid = jnp.zeros((B, A), bool).at[0, 1].set(True)
  key = jax.random.PRNGKey(7)
  kwargs = dict(num_particles=8)
  want = jax.jit(lambda k: discrete(None, k, root, discrete_fn, 64, invalid, **kwargs))(key)
  got = jax.jit(lambda k: sampled(None, k, sampled_root, sampled_fn, 64, invalid,
                                  action_sampler=sampler, **kwargs))(key)
  np.testing.assert_array_equal(got.action, want.action)
  np.testing.assert_array_equal(got.chosen_action, want.action)
  # The two are different XLA programs, and a code generator may round a transcendental
  # function differently in each (XLA:CPU's elemental emitter, which the test session uses:
  # 9e-7 apart in the weights); a drifted code path differs in the first digits.
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  close(got.action_weights, want.action_weights)
  close(got.search_tree.children_values, want.search_tree.children_values)
  close(got.search_tree.node_values, want.search_tree.node_values)
  close(got.search_tree.extra_data.ess, want.search_tree.extra_data.ess)


@pytest.mark.slow  # about 20 s on 2 cores
def test_sampled_tsmcts_on_a_bandit_has_the_discrete_q_values():
  rewards = jnp.array([[0.1, 0.9, 0.4, -0.3], [0.5, -0.2, 0.0, 0.7]])
  m = rewards.shape[1]

  def discrete_fn(params, key, action, row):
    r = rewards[row, action]
    return mctx.RecurrentFnOutput(reward=r, discount=jnp.zeros_like(r), value=jnp.zeros_like(r),
                                  prior_logits=jnp.zeros((r.shape[0], m))), row

  def sampled_fn(params, key, action, row):
    out, row = discrete_fn(params, key, action["index"], row)
    return smctx.SampledRecurrentFnOutput(reward=out.reward, discount=out.discount,
                                          value=out.value, policy={"index": action["index"]}), row

  rows = jnp.arange(2)
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((2, m)), value=jnp.zeros(2), embedding=rows)
  sampled_root = smctx.SampledRootFnOutput(
      candidates={"index": jnp.broadcast_to(jnp.arange(m), (2, m))}, value=jnp.zeros(2),
      embedding=rows)
  key = jax.random.PRNGKey(0)
  want = smctx.tsmcts_policy(None, key, root, discrete_fn, 32, num_particles=8, gumbel_scale=0.0)
  got = smctx.sampled_tsmcts_policy(None, key, sampled_root, sampled_fn, 32, num_particles=8,
                                    gumbel_scale=0.0)
  # Every candidate evaluated in the first halving has Q = its reward.
  visited = np.asarray(got.search_tree.children_visits[:, 0] > 0)
  np.testing.assert_allclose(np.asarray(got.search_tree.children_values[:, 0])[visited],
                             np.asarray(rewards)[visited], rtol=1e-6)
  np.testing.assert_allclose(got.search_tree.children_values, want.search_tree.children_values,
                             rtol=1e-6)
  np.testing.assert_array_equal(got.action, [1, 3])
  np.testing.assert_array_equal(got.chosen_action["index"], [1, 3])
