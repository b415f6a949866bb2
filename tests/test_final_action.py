"""What a search may return as its action and weights.

SMCTS, as Gumbel MuZero, chooses among the actions it searched; an action whose root logit is NaN
is invalid (as documented), for every policy.
"""

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx

POLICIES = {"smc": smctx.smc_policy, "smcts": smctx.smcts_policy, "tsmcts": smctx.tsmcts_policy}


def _zero_model(num_actions):
  """Every transition pays 0 and every later state is worth 0, with a flat prior."""
  def recurrent_fn(params, rng_key, action, embedding):
    del params, rng_key
    zeros = jnp.zeros(action.shape, jnp.float32)
    return mctx.RecurrentFnOutput(
        reward=zeros, discount=jnp.ones_like(zeros), value=zeros,
        prior_logits=jnp.zeros(action.shape + (num_actions,))), embedding
  return recurrent_fn


@pytest.mark.parametrize("num_actions, num_simulations, num_particles", [(32, 16, 16), (8, 16, 2)])
def test_smcts_never_chooses_an_action_it_did_not_search(num_actions, num_simulations,
                                                         num_particles):
  # The root value (1) exceeds every searched Q (0), so an unsearched action's
  # mixed value is the largest completed Q: before the fix it was chosen in 9
  # of 10 searches at A=32, N=16 and 20 of 20 at A=8, N=2.
  batch = 64
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, num_actions)),
                           value=jnp.ones((batch,)), embedding=jnp.zeros((batch,)))
  search = jax.jit(lambda key: smctx.smcts_policy(
      None, key, root, _zero_model(num_actions), num_simulations, num_particles=num_particles))
  for seed in range(3):
    output = search(jax.random.key(seed))
    visits = np.asarray(output.search_tree.summary().visit_counts)
    chosen_visits = visits[np.arange(batch), np.asarray(output.action)]
    assert np.all(chosen_visits > 0)
    assert np.any(visits == 0)  # the situation the test is about does arise


@pytest.mark.parametrize("elimination", ["sequential_halving", "random"])
def test_tsmcts_never_chooses_an_action_it_did_not_search(elimination):
  # As above: an unsearched action's mixed value is the largest completed Q. With random
  # elimination (the ablation) the winner is any evaluated candidate, never an unvisited one.
  batch, num_actions = 64, 32
  root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, num_actions)),
                           value=jnp.ones((batch,)), embedding=jnp.zeros((batch,)))
  output = jax.jit(lambda key: smctx.tsmcts_policy(
      None, key, root, _zero_model(num_actions), 64, num_particles=8,
      elimination=elimination))(jax.random.key(0))
  visits = np.asarray(output.search_tree.summary().visit_counts)
  assert np.all(visits[np.arange(batch), np.asarray(output.action)] > 0)
  assert np.any(visits == 0)


@pytest.mark.parametrize("name", POLICIES)
def test_nan_root_logits_are_invalid_actions(name):
  # Action 1 has a NaN logit in every row: it gets no particles, no weight,
  # and is never chosen, exactly as if it were masked.
  batch, num_actions = 16, 4
  logits = jnp.zeros((batch, num_actions)).at[:, 1].set(jnp.nan)
  root = mctx.RootFnOutput(prior_logits=logits, value=jnp.zeros((batch,)),
                           embedding=jnp.zeros((batch,)))
  output = jax.jit(lambda key: POLICIES[name](
      None, key, root, _zero_model(num_actions), 64))(jax.random.key(0))
  diagnostics = output.search_tree.extra_data
  assert np.all(np.asarray(diagnostics.particles_per_action)[..., 1] == 0)
  np.testing.assert_array_equal(np.asarray(output.action_weights)[:, 1], 0.0)
  np.testing.assert_allclose(np.asarray(output.action_weights).sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.asarray(output.action) != 1)
  assert np.all(np.asarray(diagnostics.nonfinite_root))  # still reported
