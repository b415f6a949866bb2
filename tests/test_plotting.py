"""`smctx.plotting.plot_diagnostics` draws exactly what the diagnostics hold."""

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import smctx

matplotlib = pytest.importorskip(
    "matplotlib",
    reason="plotting needs matplotlib, from the examples extra: pip install -e '.[examples]'")
matplotlib.use("Agg")


def test_plot_diagnostics_draws_the_roots_ess_distinct_actions_and_halving():
  batch, num_actions = 2, 4
  rng = np.random.default_rng(0)
  root = mctx.RootFnOutput(prior_logits=jnp.asarray(rng.normal(size=(batch, num_actions)),
                                                    jnp.float32),
                           value=jnp.zeros((batch,)), embedding=jnp.zeros((batch,)))

  def recurrent_fn(params, key, action, embedding):
    reward = jax.random.normal(key, embedding.shape)
    return mctx.RecurrentFnOutput(reward=reward, discount=jnp.full_like(embedding, 0.9),
                                  prior_logits=jnp.zeros((batch, num_actions)),
                                  value=jnp.zeros_like(embedding)), embedding

  out = jax.jit(lambda key: smctx.tsmcts_policy(None, key, root, recurrent_fn, 32))(
      jax.random.key(0))
  fig = smctx.plotting.plot_diagnostics(out, root_index=1)
  d = out.search_tree.extra_data
  ax_ess, ax_distinct, ax_halving = fig.axes
  np.testing.assert_allclose(ax_ess.lines[0].get_ydata(), np.asarray(d.ess[1]))
  assert ax_ess.lines[1].get_ydata()[0] == int(d.num_particles[1])
  np.testing.assert_allclose(ax_distinct.lines[0].get_ydata(), np.asarray(d.distinct_actions[1]))
  heights = np.array([p.get_height() for p in ax_halving.patches]).reshape(
      d.particles_per_action.shape[1], num_actions)
  np.testing.assert_array_equal(heights, np.asarray(d.particles_per_action[1]))
  assert "evaluations" in fig._suptitle.get_text()
  matplotlib.pyplot.close(fig)
