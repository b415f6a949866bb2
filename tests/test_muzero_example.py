"""The MuZero example (`examples/muzero.py`): searches over its learned model, targets, training.

Loaded from `examples/` with importlib and registered in `sys.modules`, as `test_examples.py`
does. Compilation dominates: the training steps are compiled at tiny sizes with XLA's fast
options, TSMCTS in the default run; the Gumbel, SMC and SMCTS training steps and the direct checks
of every search's output over the learned model run with `-m slow`.
"""

import math

import pytest

for _name in ("flax", "optax", "jumanji", "tqdm", "matplotlib"):
  pytest.importorskip(_name, reason=f"examples need {_name}: pip install -e '.[examples]'")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tests.examples import FAST_COMPILE  # noqa: E402
from tests.examples import load as _load  # noqa: E402

SEARCHES = ("gumbel", "smc", "smcts", "tsmcts")


common = _load("_common")
muzero = _load("muzero")


def _tiny(search):
  return muzero.Config(search=search, num_rows=5, num_cols=5, time_limit=10, num_envs=4,
                       rollout_length=4, num_simulations=8, latent_size=8, hidden_sizes=(16,),
                       replay_length=8, unroll_steps=2, td_steps=2, batch_size=8,
                       num_updates=1, total_env_steps=32, explore_epsilon=0.25)


def _compile(search):
  state, step_fn = muzero.setup(_tiny(search))
  return state, step_fn.lower(state).compile(FAST_COMPILE)


@pytest.fixture(scope="module")
def compiled():
  """`{search: (initial state, compiled step_fn)}` of TSMCTS (the other searches compile in their
  own `-m slow` tests: the default run's time is at its limit)."""
  return {"tsmcts": _compile("tsmcts")}


def _leaves_differ(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                      strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_runs_on_the_learned_model_under_jit(search):
  config = _tiny(search)
  env = muzero.make_env(config)
  network = muzero.MuZeroNetwork(num_actions=4, latent_size=8, hidden_sizes=(16,),
                                 time_limit=config.time_limit)
  root_fn, recurrent_fn = muzero.make_model(network, config.discount)
  _, timestep = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 3))
  observation = timestep.observation
  params = network.init(jax.random.PRNGKey(1), observation, jnp.zeros(3, jnp.int32))
  policy = common.make_search(search)

  def search_fn(params, key):
    root = root_fn(params, observation)
    return root, policy(params, key, root, recurrent_fn, num_simulations=8,
                        invalid_actions=~observation.action_mask)

  key = jax.random.PRNGKey(2)
  root, output = jax.jit(search_fn).lower(params, key).compile(FAST_COMPILE)(params, key)
  assert root.embedding.shape == (3, 8)
  weights = np.asarray(output.action_weights)
  assert np.all(np.isfinite(weights))
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  mask = np.asarray(observation.action_mask)
  assert np.all(weights[~mask] == 0)
  assert np.all(mask[np.arange(3), np.asarray(output.action)])

  # One model step: finite outputs of the right shapes, the configured discount, latents in [0, 1].
  out, next_latent = recurrent_fn(params, None, jnp.asarray([0, 1, 2]), root.embedding)
  assert out.prior_logits.shape == (3, 4) and out.value.shape == out.reward.shape == (3,)
  np.testing.assert_allclose(out.discount, config.discount)
  assert np.all((np.asarray(next_latent) >= 0) & (np.asarray(next_latent) <= 1))


@pytest.mark.parametrize("search", [
    pytest.param(s, marks=pytest.mark.slow) if s != "tsmcts" else s for s in SEARCHES])
def test_two_training_iterations_give_finite_losses_and_new_params(compiled, search):
  state, step_fn = compiled[search] if search in compiled else _compile(search)
  first, metrics_1 = step_fn(state)
  second, metrics_2 = step_fn(first)
  for metrics in (metrics_1, metrics_2):
    for key in ("loss", "policy_loss", "value_loss", "reward_loss"):
      assert math.isfinite(float(metrics[key])), (key, metrics)
  assert _leaves_differ(state["params"], first["params"])
  assert _leaves_differ(first["params"], second["params"])
  assert int(second["replay_size"]) == 8
  assert _leaves_differ(state["replay"]["obs"], second["replay"]["obs"])


def test_n_step_returns_stop_at_episode_ends_and_at_the_newest_step():
  reward = jnp.asarray([1.0, 0.0, 2.0, 0.0, 1.0])[:, None]
  discount = jnp.asarray([0.5, 0.5, 0.0, 0.5, 0.5])[:, None]  # step 2 terminates
  value_next = jnp.asarray([10.0, 20.0, 30.0, 40.0, 50.0])[:, None]
  done = jnp.asarray([False, False, True, False, False])[:, None]
  n_step = jax.jit(muzero.n_step_returns, static_argnums=4)
  returns = np.asarray(n_step(reward, discount, value_next, done, 2))[:, 0]
  # t=0: r0 + d0 (r1 + d1 v2); t=1: r1 + d1 r2 (step 2 ends); t=2: r2; t=3: r3 + d3 (r4 + d4 v5);
  # t=4: the newest step bootstraps at once.
  np.testing.assert_allclose(returns, [1 + 0.5 * (0 + 0.5 * 20), 0 + 0.5 * 2.0, 2.0,
                                       0 + 0.5 * (1 + 0.5 * 50), 1 + 0.5 * 50])


def test_unroll_targets_absorb_after_a_termination_and_mask_after_a_truncation():
  length, num_actions = 6, 4
  replay = {
      "obs": jnp.arange(length * 2, dtype=jnp.float32).reshape(length, 2),
      "action": jnp.tile(jnp.arange(length)[:, None] % num_actions, (1, 2)),
      "policy": jnp.full((length, 2, num_actions), 0.25),
      "reward": jnp.ones((length, 2)),
      "value_target": jnp.full((length, 2), 7.0),
      # Game 0 terminates at step 1; game 1 is truncated (time limit) at step 1.
      "done": jnp.asarray([[False, False], [True, True]] + [[False, False]] * 4),
      "terminal": jnp.asarray([[False, False], [True, False]] + [[False, False]] * 4),
  }
  targets = jax.jit(muzero.unroll_targets, static_argnums=3)
  batch = targets(replay, jnp.asarray([0, 0, 3]), jnp.asarray([0, 1, 0]), 3)
  np.testing.assert_array_equal(batch["obs"], [0.0, 1.0, 6.0])
  np.testing.assert_array_equal(batch["actions"], [[0, 1, 2], [0, 1, 2], [3, 0, 1]])
  # Terminated after its second step: zero reward and value targets from then on, still trained.
  np.testing.assert_array_equal(batch["reward"][0], [1, 1, 0])
  np.testing.assert_array_equal(batch["reward_mask"][0], [1, 1, 1])
  np.testing.assert_array_equal(batch["value"][0], [7, 7, 0, 0])
  np.testing.assert_array_equal(batch["value_mask"][0], [1, 1, 1, 1])
  np.testing.assert_array_equal(batch["policy_mask"][0], [1, 1, 0, 0])
  # Truncated: nothing after it is trained.
  np.testing.assert_array_equal(batch["reward_mask"][1], [1, 1, 0])
  np.testing.assert_array_equal(batch["value_mask"][1], [1, 1, 0, 0])
  # Started 3 steps before the newest: the steps past it are masked.
  np.testing.assert_array_equal(batch["reward_mask"][2], [1, 1, 1])
  np.testing.assert_array_equal(batch["value_mask"][2], [1, 1, 1, 0])


def test_egocentric_view_puts_the_head_in_the_centre():
  grid = np.zeros((2, 3, 4, 5), np.float32)
  grid[0, 0, 0, 1] = grid[1, 2, 3, 1] = 1.0  # heads in opposite corners
  grid[0, 0, 1, 3] = 1.0  # a fruit right of the first head
  view = np.asarray(jax.jit(muzero.egocentric)(jnp.asarray(grid)))
  assert view.shape == (2, 5, 7, 6)
  assert np.all(view[:, 2, 3, 1] == 1.0)
  assert view[0, 2, 4, 3] == 1.0
  # Off the board: the first head sees walls above and to its left, the second below and right.
  assert view[0, 1, 3, 5] == 1.0 and view[0, 2, 2, 5] == 1.0 and view[0, 3, 4, 5] == 0.0
  assert view[1, 3, 3, 5] == 1.0 and view[1, 2, 4, 5] == 1.0 and view[1, 1, 2, 5] == 0.0
