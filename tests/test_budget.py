"""Budget accounting measured from outside the library.

The model is wrapped so that every `recurrent_fn` call reports, through a
host callback, how many embeddings it received. Evaluations per root and the
number of sequential calls are counted on the host while the jitted search
runs, never taken from the library's own arithmetic; the library's
diagnostics are then compared with the counts.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx
from smctx import tabular
from tests.policies import POLICIES

BATCH = 2


class CallCounter:
  """Counts `recurrent_fn` calls and the rows of each, on the host.

  smctx calls `recurrent_fn` as mctx does, on `[B]` rows (recorded at trace
  time in `traced_sizes`), lifted over the particle axis with `jax.vmap`, so
  that a step is one batched evaluation of every particle. The host callback
  is a `pure_callback` with `vmap_method="expand_dims"`: vmap hands it the
  whole batch, so it runs once per batched evaluation (one sequential call)
  and `sizes` holds the rows each one evaluated.
  """

  def __init__(self):
    self.sizes: list[int] = []
    self.traced_sizes: list[int] = []

  def wrap(self, recurrent_fn):
    def counted(params, rng_key, action, embedding):
      self.traced_sizes.append(action.shape[0])
      zeros = jax.pure_callback(self._record, jax.ShapeDtypeStruct(action.shape, jnp.float32),
                                action, vmap_method="expand_dims")
      output, next_embedding = recurrent_fn(params, rng_key, action, embedding)
      # The callback's zeros feed the reward, so that it is not dead code.
      return output.replace(reward=output.reward + zeros), next_embedding
    return counted

  def _record(self, action):
    self.sizes.append(int(np.size(action)))
    return np.zeros(np.shape(action), np.float32)

  @property
  def calls(self) -> int:
    return len(self.sizes)

  @property
  def evaluations(self) -> int:
    return int(sum(self.sizes))


def mdp_model(num_actions, seed=0):
  mdp = tabular.random_mdp(seed, num_states=20, num_actions=num_actions, discount=0.9)
  root_fn, recurrent_fn = tabular.model(mdp)
  return root_fn(jnp.arange(BATCH, dtype=jnp.int32)), recurrent_fn


def run_counted(policy, num_simulations, num_actions, num_particles, **kwargs):
  """Runs one jitted search; returns `(PolicyOutput, CallCounter)`."""
  root, recurrent_fn = mdp_model(num_actions)
  counter = CallCounter()
  counted = counter.wrap(recurrent_fn)
  search = jax.jit(lambda key, root: policy(
      None, key, root, counted, num_simulations=num_simulations, **kwargs,
      **({} if num_particles == "omit" else {"num_particles": num_particles})))
  out = jax.block_until_ready(search(jax.random.PRNGKey(0), root))
  jax.effects_barrier()
  return out, counter


def check_budget(out, counter, num_simulations, num_actions, requested_particles):
  """The budget rules, from the counted calls. Returns the observed width N."""
  assert counter.calls >= 1
  # recurrent_fn sees the B roots, as under mctx...
  assert set(counter.traced_sizes) == {BATCH}, counter.traced_sizes
  # ...and every call evaluates the same B·N embeddings (one step of all particles).
  assert len(set(counter.sizes)) == 1, counter.sizes
  assert counter.sizes[0] % BATCH == 0
  width = counter.sizes[0] // BATCH
  evaluations = counter.evaluations // BATCH
  if requested_particles is not None:
    assert width <= requested_particles
  assert evaluations <= num_simulations, (evaluations, num_simulations)
  assert evaluations >= num_simulations - width, (evaluations, num_simulations, width)
  assert counter.calls * width == evaluations
  assert counter.calls <= math.ceil(num_simulations / width)
  # The library's own accounting agrees with what the model saw.
  diag = out.search_tree.extra_data
  np.testing.assert_array_equal(np.asarray(diag.num_evaluations), np.full(BATCH, evaluations))
  np.testing.assert_array_equal(np.asarray(diag.num_particles), np.full(BATCH, width))
  np.testing.assert_array_equal(np.asarray(diag.depth).sum(-1), np.full(BATCH, counter.calls))
  # A usable policy output.
  weights = np.asarray(out.action_weights)
  assert weights.shape == (BATCH, num_actions)
  assert np.all(np.isfinite(weights)) and np.all(weights >= 0)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  action = np.asarray(out.action)
  assert np.all((action >= 0) & (action < num_actions))
  return width


# (num_simulations, num_actions, num_particles); None lets the library choose.
CONFIGS = [
    (256, 8, 16),
    (50, 5, 8),  # remainder: 50 is not a multiple of N (or of N·K)
    (64, 4, None),
    (1, 3, None),  # the smallest budget there is
    (1, 3, 16),  # ... with a width that cannot be honoured
]


@pytest.mark.parametrize("num_simulations,num_actions,num_particles", CONFIGS)
@pytest.mark.parametrize("name", list(POLICIES))
def test_counted_evaluations_and_sequential_calls(name, num_simulations, num_actions,
                                                  num_particles):
  out, counter = run_counted(POLICIES[name], num_simulations, num_actions, num_particles)
  width = check_budget(out, counter, num_simulations, num_actions, num_particles)
  if num_particles is not None and num_particles * 3 <= num_simulations:
    # Enough budget: the requested width is honoured.
    assert width == num_particles
  if num_simulations == 1:
    assert counter.calls == 1 and counter.evaluations == BATCH
  if (num_simulations, num_particles) == (256, 16):
    # 16 sequential calls instead of mctx's 256 (see the mctx test below).
    assert counter.calls == 16
  if name in ("smcts", "tsmcts"):
    # Visits are evaluations spent under each root action.
    visits = np.asarray(out.search_tree.summary().visit_counts)
    np.testing.assert_array_equal(visits.sum(-1), np.full(BATCH, counter.evaluations // BATCH))


@pytest.mark.parametrize("num_simulations,num_actions,num_steps", [
    (256, 8, 16),  # 16 calls of 16 particles
    (100, 5, 7),  # 7 calls of 14 (98 evaluations)
    (64, 4, 64),  # one particle, as deep as mctx's 64 simulations
    (64, 9, 2),  # two calls: at most two halving iterations (m1 = 4)
])
@pytest.mark.parametrize("name", list(POLICIES))
def test_num_steps_sets_the_sequential_calls_and_the_width(name, num_simulations, num_actions,
                                                          num_steps):
  out, counter = run_counted(POLICIES[name], num_simulations, num_actions, "omit",
                             num_steps=num_steps)
  width = check_budget(out, counter, num_simulations, num_actions, None)
  assert counter.calls == num_steps
  assert width == num_simulations // num_steps


def test_mctx_gumbel_muzero_makes_one_call_per_simulation():
  """The same counter on mctx: 256 sequential calls of B embeddings each."""
  out, counter = run_counted(mctx.gumbel_muzero_policy, 256, 8, "omit")
  assert counter.calls == 256
  assert set(counter.sizes) == {BATCH}
  assert counter.evaluations // BATCH == 256
  assert out.action.shape == (BATCH,)


@pytest.mark.parametrize("num_particles", [None, pytest.param(16, marks=pytest.mark.slow)])
def test_tsmcts_pgx_style_small_budget(num_particles):
  """pgx's AlphaZero example: 32 simulations, 7 actions. Must work unchanged.

  With 16 particles and m1 = 7 candidates (K = 3 halving iterations) one
  step of every iteration would cost 48 > 32 evaluations: the width shrinks
  instead of raising.
  """
  out, counter = run_counted(smctx.tsmcts_policy, 32, 7, num_particles)
  width = check_budget(out, counter, 32, 7, num_particles)
  diag = out.search_tree.extra_data
  num_iterations = np.asarray(diag.depth).shape[1]
  considered = np.asarray(diag.num_considered)[:, 0]
  # Every iteration got at least one step, with the observed width.
  assert np.all(np.asarray(diag.depth) >= 1)
  assert width * num_iterations <= 32
  m1 = min(16, 7, width)  # min(max_num_considered_actions, A, N)
  np.testing.assert_array_equal(considered, np.full(BATCH, m1))
  assert num_iterations == math.ceil(math.log2(m1))
  if num_particles == 16:
    assert width < 16
