"""Trace-time errors: one test per message, naming the argument, the value and what is accepted."""

import jax
import jax.numpy as jnp
import mctx
import pytest

import smctx
from tests.policies import each_policy, each_policy_slow_but_tsmcts

B, A = 2, 4


def _root(**overrides):
  fields = dict(prior_logits=jnp.zeros((B, A)), value=jnp.zeros(B), embedding=jnp.zeros((B, 3)))
  fields.update(overrides)
  return mctx.RootFnOutput(**fields)


def _model(reward_shape=None, logits_actions=A, next_embedding=None, reward_dtype=jnp.float32):
  def recurrent_fn(params, rng_key, action, embedding):
    n = action.shape[0]
    reward = jnp.zeros(reward_shape or (n,), reward_dtype)
    out = mctx.RecurrentFnOutput(reward=reward, discount=jnp.ones((n,)),
                                 prior_logits=jnp.zeros((n, logits_actions)),
                                 value=jnp.zeros((n,)))
    return out, (embedding if next_embedding is None else next_embedding(embedding))
  return recurrent_fn


def _call(policy, root=None, recurrent_fn=None, num_simulations=8, invalid_actions=None,
          **kwargs):
  return policy(None, jax.random.PRNGKey(0), root if root is not None else _root(),
                recurrent_fn or _model(), num_simulations, invalid_actions, **kwargs)


@each_policy
def test_gumbel_scale_negative(policy):
  with pytest.raises(ValueError, match=r"gumbel_scale=-1.0 is not accepted; expected .* >= 0"):
    _call(policy, gumbel_scale=-1.0)


@each_policy
def test_max_num_considered_actions_zero(policy):
  with pytest.raises(ValueError, match=r"max_num_considered_actions=0 .* positive Python int"):
    _call(policy, max_num_considered_actions=0)


@each_policy
def test_num_simulations_not_an_int(policy):
  with pytest.raises(ValueError, match=r"num_simulations=8.5 is not accepted"):
    _call(policy, num_simulations=8.5)


@each_policy
def test_td_scale_unknown(policy):
  with pytest.raises(ValueError, match=r"td_scale='rms' is not accepted; expected one of"):
    _call(policy, td_scale="rms")


@each_policy
def test_num_steps_with_num_particles(policy):
  with pytest.raises(ValueError, match=r"num_particles=4 and num_steps=2 are not accepted "
                                       r"together: num_steps sets the width"):
    _call(policy, num_particles=4, num_steps=2)


@each_policy
def test_num_steps_zero(policy):
  with pytest.raises(ValueError, match=r"num_steps=0 is not accepted; expected a positive"):
    _call(policy, num_steps=0)


def test_elimination_unknown():
  with pytest.raises(ValueError, match=r"elimination='greedy' is not accepted"):
    _call(smctx.tsmcts_policy, elimination="greedy")


@each_policy
def test_temperature_nonfinite(policy):
  with pytest.raises(ValueError, match=r"temperature=inf is not accepted"):
    _call(policy, temperature=float("inf"))


@each_policy
def test_num_simulations_bool(policy):
  # bool subclasses int: True must not pass as a budget of 1.
  with pytest.raises(ValueError, match=r"num_simulations=True is not accepted; expected a posit"):
    _call(policy, num_simulations=True)


@each_policy
def test_temperature_zero(policy):
  # The TD log-weights are divided by the temperature: 0 is refused, not turned into NaN.
  with pytest.raises(ValueError, match=r"temperature=0.0 is not accepted; expected .* > 0"):
    _call(policy, temperature=0.0)


@each_policy
def test_gumbel_scale_nonfinite(policy):
  with pytest.raises(ValueError, match=r"gumbel_scale=inf is not accepted; expected a finite"):
    _call(policy, gumbel_scale=float("inf"))


@each_policy
@pytest.mark.parametrize("ess_threshold", [0.0, 1.0])
def test_ess_threshold_interval_is_closed(policy, ess_threshold):
  # Documented range [0, 1], both ends included; tracing alone (eval_shape) shows acceptance.
  out = jax.eval_shape(lambda: _call(policy, ess_threshold=ess_threshold))
  assert out.action.shape == (B,)


@each_policy
def test_root_logits_rank(policy):
  with pytest.raises(ValueError, match=r"root.prior_logits has shape \(2, 4, 1\); expected"):
    _call(policy, root=_root(prior_logits=jnp.zeros((B, A, 1))))


@each_policy
def test_root_value_shape(policy):
  with pytest.raises(ValueError, match=r"root.value has shape \(3,\); expected \(2,\)"):
    _call(policy, root=_root(value=jnp.zeros(3)))


@each_policy
def test_root_logits_integer_dtype(policy):
  with pytest.raises(ValueError, match=r"root.prior_logits has dtype int32; expected a floating"):
    _call(policy, root=_root(prior_logits=jnp.zeros((B, A), jnp.int32)))


@each_policy
def test_root_embedding_batch(policy):
  with pytest.raises(ValueError, match=r"root.embedding has a leaf of shape \(5, 3\)"):
    _call(policy, root=_root(embedding={"x": jnp.zeros((5, 3))}))


@each_policy
def test_root_with_no_actions(policy):
  with pytest.raises(ValueError, match=r"root.prior_logits has shape \(2, 0\); num_actions must"):
    _call(policy, root=_root(prior_logits=jnp.zeros((B, 0))))


@each_policy
def test_root_embedding_scalar_leaf(policy):
  # A 0-d leaf has no batch axis at all: refused by name, not by an indexing error later.
  with pytest.raises(ValueError, match=r"root.embedding has a leaf of shape \(\)"):
    _call(policy, root=_root(embedding={"x": jnp.zeros((B, 3)), "t": jnp.zeros(())}))


@each_policy
def test_invalid_actions_float_dtype(policy):
  with pytest.raises(ValueError, match=r"invalid_actions has dtype float32; expected bool"):
    _call(policy, invalid_actions=jnp.zeros((B, A), jnp.float32))


@each_policy
def test_model_reward_shape(policy):
  with pytest.raises(ValueError, match=r"recurrent_fn returned reward of shape \(1,\); expected"):
    _call(policy, recurrent_fn=_model(reward_shape=(1,)))


@each_policy
def test_model_reward_integer_dtype(policy):
  with pytest.raises(ValueError, match=r"recurrent_fn returned reward of dtype int32"):
    _call(policy, recurrent_fn=_model(reward_dtype=jnp.int32))


@each_policy
def test_model_num_actions_differs_from_root(policy):
  with pytest.raises(ValueError, match=r"prior_logits of shape \(\d+, 6\); expected \(\d+, 4\)"):
    _call(policy, recurrent_fn=_model(logits_actions=6))


@each_policy
def test_model_next_embedding_structure(policy):
  with pytest.raises(ValueError, match=r"next embedding with structure"):
    _call(policy, recurrent_fn=_model(next_embedding=lambda e: (e, e)))


@each_policy
def test_model_next_embedding_shape(policy):
  with pytest.raises(ValueError, match=r"next-embedding leaf of shape \(\d+, 2\)"):
    _call(policy, recurrent_fn=_model(next_embedding=lambda e: e[:, :2]))


@each_policy
def test_model_next_embedding_dtype(policy):
  # Same shape, other dtype: the loop carry would change type between steps.
  with pytest.raises(ValueError, match=r"next-embedding leaf of shape \(\d+, 3\) and dtype int32"):
    _call(policy, recurrent_fn=_model(next_embedding=lambda e: e.astype(jnp.int32)))


@each_policy
def test_model_output_type(policy):
  def recurrent_fn(params, rng_key, action, embedding):
    return (jnp.zeros(action.shape),) * 4, embedding
  with pytest.raises(ValueError, match=r"must return \(mctx.RecurrentFnOutput, next_embedding\)"):
    _call(policy, recurrent_fn=recurrent_fn)


@each_policy_slow_but_tsmcts
def test_small_budget_shrinks_width_instead_of_failing(policy):
  out = _call(policy, num_simulations=3, num_particles=64)
  assert int(out.search_tree.extra_data.num_particles[0]) <= 3
