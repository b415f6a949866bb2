"""Budget layout arithmetic and trace-time argument errors."""

import jax
import jax.numpy as jnp
import mctx
import pytest

from smctx._src import budget
from tests.policies import each_policy


@pytest.mark.parametrize("num_simulations", [1, 2, 7, 16, 32, 64, 100, 256, 1000])
@pytest.mark.parametrize("num_actions", [1, 2, 3, 7, 8, 20])
@pytest.mark.parametrize("num_particles", [None, 4, 16, 64])
def test_tsmcts_layout_spends_budget_without_exceeding_it(num_simulations, num_actions,
                                                          num_particles):
  layout = budget.tsmcts_layout(num_simulations, num_actions, num_particles, 16, None)
  n = layout.num_particles
  assert 1 <= n <= (num_particles or num_simulations)
  assert 1 <= layout.num_considered <= min(16, num_actions, n)
  assert len(layout.depths) == len(layout.considered_per_iteration) >= 1
  assert min(layout.depths) >= 1
  assert layout.num_evaluations <= num_simulations
  assert layout.num_evaluations > num_simulations - n
  # Sequential Halving halves (rounding up) down to two candidates.
  seq = layout.considered_per_iteration
  assert all(b == -(-a // 2) for a, b in zip(seq[:-1], seq[1:], strict=True))
  assert seq[-1] <= 2


@pytest.mark.parametrize("num_simulations", [1, 5, 16, 64, 300])
@pytest.mark.parametrize("num_particles", [None, 3, 32])
def test_smc_layout_spends_budget(num_simulations, num_particles):
  layout = budget.smc_layout(num_simulations, 8, num_particles, None, True)
  assert layout.num_evaluations <= num_simulations
  assert layout.num_evaluations > num_simulations - layout.num_particles


def test_max_depth_caps_depth():
  layout = budget.tsmcts_layout(256, 8, 8, 16, max_depth=2)
  assert max(layout.depths) <= 2
  layout = budget.smc_layout(256, 8, None, 3, True)
  assert max(layout.depths) <= 3 and layout.num_evaluations > 256 - layout.num_particles


def _root(batch=2, actions=4):
  return mctx.RootFnOutput(prior_logits=jnp.zeros((batch, actions)), value=jnp.zeros(batch),
                           embedding=jnp.zeros((batch,)))


def _model(params, key, action, embedding):
  z = jnp.zeros(action.shape)
  return mctx.RecurrentFnOutput(reward=z, discount=z + 1, prior_logits=jnp.zeros((z.shape[0], 4)),
                                value=z), embedding


@each_policy
@pytest.mark.parametrize("kwargs, name", [
    (dict(num_simulations=0), "num_simulations"),
    (dict(num_simulations=8, num_particles=0), "num_particles"),
    (dict(num_simulations=8, temperature=-1.0), "temperature"),
    (dict(num_simulations=8, resample="sometimes"), "resample"),
    (dict(num_simulations=8, resampling_method="stratified"), "resampling_method"),
    (dict(num_simulations=8, ess_threshold=1.5), "ess_threshold"),
    (dict(num_simulations=8, max_depth=0), "max_depth"),
])
def test_bad_static_arguments_name_the_argument(policy, kwargs, name):
  with pytest.raises(ValueError, match=name):
    policy(None, jax.random.PRNGKey(0), _root(), _model, **kwargs)


@each_policy
def test_mismatched_invalid_actions_shape_is_an_error(policy):
  with pytest.raises(ValueError, match="invalid_actions"):
    policy(None, jax.random.PRNGKey(0), _root(), _model, 8,
           invalid_actions=jnp.zeros((2, 5), bool))
