"""Smoke tests of the examples: a few training steps of each with every search, tiny sizes.

The example modules are loaded from `examples/` with importlib and registered in `sys.modules`
(the examples import `_common` by name). Compilation dominates the run time, so every
`(example, search)` training step is compiled once, all of them in parallel threads (XLA
compiles outside the GIL), and shared by the tests.
"""

import argparse
import concurrent.futures
import dataclasses
import math
import os
import types
from typing import Optional

import pytest

# The examples' dependencies are the optional `examples` extra (`.ci/run` installs it); without
# them the examples cannot be imported, so their smoke tests skip rather than fail.
for _name in ("flax", "optax", "pgx", "jumanji", "tqdm", "matplotlib"):
  pytest.importorskip(_name, reason=f"examples need {_name}: pip install -e '.[examples]'")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tests.examples import FAST_COMPILE  # noqa: E402
from tests.examples import load as _load  # noqa: E402

SEARCHES = ("gumbel", "smc", "smcts", "tsmcts", "tsmcts_paper")


common = _load("_common")
snake = _load("snake")
alphazero_pgx = _load("alphazero_pgx")

TINY = {
    "snake": lambda search: snake.Config(
        search=search, num_rows=5, num_cols=5, time_limit=10, num_envs=4, rollout_length=4,
        num_simulations=8, hidden_sizes=(16,), batch_size=8, num_updates=2,
        total_env_steps=32),
    "pgx": lambda search: alphazero_pgx.Config(
        search=search, num_envs=4, rollout_length=4, num_simulations=8, hidden_sizes=(16,),
        batch_size=8, num_updates=2, total_env_steps=32, eval_games=4),
}
MODULES = {"snake": snake, "pgx": alphazero_pgx}


def _compile(example, search):
  state, step_fn = MODULES[example].setup(TINY[example](search))[:2]
  return state, step_fn.lower(state).compile(FAST_COMPILE)


class _Compiled(dict):
  """`{(example, search): (initial_state, compiled step_fn)}`, compiled on first use."""

  def __missing__(self, key):
    self[key] = _compile(*key)
    return self[key]


@pytest.fixture(scope="module")
def compiled():
  """TSMCTS for both examples compiled concurrently; the others when asked for (`-m slow`)."""
  keys = [(example, "tsmcts") for example in MODULES]
  workers = max(2, min(len(keys), os.cpu_count() or 2))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = {key: pool.submit(_compile, *key) for key in keys}
    return _Compiled({key: future.result() for key, future in futures.items()})


def _data(x):
  """The array itself, or a typed key's raw data (NumPy cannot compare typed keys)."""
  return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def _leaves_differ(a, b):
  return any(not np.array_equal(_data(x), _data(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("search", [
    pytest.param(s, marks=pytest.mark.slow) if s != "tsmcts" else s for s in SEARCHES])
@pytest.mark.parametrize("example", list(MODULES))
def test_two_training_iterations_give_finite_losses_and_new_params(compiled, example, search):
  state, step_fn = compiled[(example, search)]
  first, metrics_1 = step_fn(state)
  second, metrics_2 = step_fn(first)
  for metrics in (metrics_1, metrics_2):
    for key in ("loss", "policy_loss", "value_loss"):
      assert math.isfinite(float(metrics[key])), (key, metrics)
  assert _leaves_differ(state["params"], first["params"])
  assert _leaves_differ(first["params"], second["params"])
  # The rollout advanced the environments and the key.
  assert _leaves_differ(state["env_state"], second["env_state"])
  assert jnp.issubdtype(second["rng_key"].dtype, jax.dtypes.prng_key)  # typed keys throughout
  assert _leaves_differ(state["rng_key"], second["rng_key"])


def test_checkpoint_save_then_resume_continues_bit_identically(compiled, tmp_path):
  # One test for the orbax checkpoints (importing orbax takes seconds, once per process).
  state, step_fn = compiled[("snake", "tsmcts")]
  per_iteration = 4 * 4
  rows = common.train_loop(state, step_fn, total_env_steps=2 * per_iteration,
                           env_steps_per_iteration=per_iteration, out_dir=str(tmp_path),
                           checkpoint_every=1, keep_checkpoints=2, quiet=True)
  assert [r["iteration"] for r in rows] == [1, 2]
  assert common.checkpoint_exists(str(tmp_path))
  after_two = step_fn(step_fn(state)[0])[0]
  restored, info = common.load_checkpoint(str(tmp_path), state)
  assert info["iteration"] == 2 and info["env_steps"] == 2 * per_iteration
  assert not _leaves_differ(restored, after_two)

  rows = common.train_loop(state, step_fn, total_env_steps=3 * per_iteration,
                           env_steps_per_iteration=per_iteration, out_dir=str(tmp_path),
                           resume=True, checkpoint_every=1, keep_checkpoints=2, quiet=True)
  assert [r["iteration"] for r in rows] == [1, 2, 3]
  restored, info = common.load_checkpoint(str(tmp_path), state)
  assert info["iteration"] == 3
  assert not _leaves_differ(restored, step_fn(after_two)[0])
  # Only the last `keep_checkpoints` are kept; an older one still loads by its step.
  assert sorted(os.listdir(tmp_path / common.CHECKPOINT_DIR)) == ["2", "3"]
  assert not _leaves_differ(common.load_checkpoint(str(tmp_path), state, step=2)[0], after_two)
  assert common.load_checkpoint_info(str(tmp_path))["iteration"] == 3
  meta, csv_rows = common.read_csv(str(tmp_path / common.METRICS_FILE))
  assert [r["iteration"] for r in csv_rows] == [1, 2, 3]
  assert any(line.startswith("device:") for line in meta)
  assert (tmp_path / common.CURVE_FILE).stat().st_size > 0
  # A template of a different structure or shape is refused.
  with pytest.raises(ValueError, match="checkpoint"):
    common.load_checkpoint(str(tmp_path), {"params": state["params"]})
  with pytest.raises(ValueError, match="checkpoint"):
    common.load_checkpoint(str(tmp_path), {**state, "episode_return": jnp.zeros(5)})


def test_bootstrapped_returns_by_hand():
  # One env, three steps, gamma 0.5: the episode ends at step 1 (terminal, discount 0), a new
  # one runs to the segment end and bootstraps with v = 4.
  rewards = jnp.asarray([[1.0], [2.0], [3.0]])
  discounts = jnp.asarray([[0.5], [0.0], [0.5]])
  values_next = jnp.asarray([[9.0], [9.0], [4.0]])
  ended = jnp.asarray([[False], [True], [False]])
  returns = common.bootstrapped_returns(rewards, discounts, values_next, ended)
  np.testing.assert_allclose(returns[:, 0], [1.0 + 0.5 * 2.0, 2.0, 3.0 + 0.5 * 4.0])


def test_two_player_returns_alternate_sign():
  # Three plies, the third wins (+1 to its mover): the movers before see -1 and +1.
  returns = common.bootstrapped_returns(
      jnp.asarray([[0.0], [0.0], [1.0]]), jnp.asarray([[-1.0], [-1.0], [0.0]]),
      jnp.zeros((3, 1)), jnp.asarray([[False], [False], [True]]))
  np.testing.assert_allclose(returns[:, 0], [1.0, -1.0, 1.0])


def test_resolve_config_takes_preset_then_set_flags():
  config = common.resolve_config(snake.Config, snake.PRESETS,
                                 {"preset": "full", "search": "smc", "num_simulations": None})
  assert config.search == "smc" and config.num_rows == 12
  assert config.num_simulations == snake.PRESETS["full"]["num_simulations"]
  config = common.resolve_config(snake.Config, snake.PRESETS, {"num_simulations": 4})
  assert config.preset == "quick" and config.num_simulations == 4


def test_parse_config_takes_preset_then_a_flag_for_every_field(capsys):
  config, _ = common.parse_config(snake.Config, snake.PRESETS, [
      "--preset", "full", "--search", "smc", "--hidden-sizes", "64", "64", "--conv-channels",
      "--max-depth", "3", "--discount", "0.9", "--resume", "--out", "runs/x"])
  assert config.preset == "full" and config.num_rows == 12  # the full preset's
  assert config.search == "smc" and config.hidden_sizes == (64, 64) and config.conv_channels == ()
  assert (config.max_depth, config.discount, config.resume, config.out) == (3, 0.9, True, "runs/x")
  assert (common.parse_config(snake.Config, snake.PRESETS, [])[0]
          == common.resolve_config(snake.Config, snake.PRESETS, {}))
  # Flags that are not config fields are parsed first; `--seed` is not taken for `--seeds`.
  extra = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  extra.add_argument("--seeds", type=int, default=3)
  config, args = common.parse_config(continuous_control.Config, continuous_control.PRESETS,
                                     ["--seed", "2"], extra=extra)
  assert (config.seed, args.seeds, args.preset) == (2, 3, "quick")
  # Every field of every example's config is a flag.
  for module in (snake, alphazero_pgx, continuous_control):
    with pytest.raises(SystemExit):
      common.parse_config(module.Config, module.PRESETS, ["--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(module.Config):
      assert "--" + field.name.replace("_", "-") in text, (module.__name__, field.name)


def test_compare_summary_has_iqm_with_bootstrap_interval_and_plots_it(tmp_path):
  compare = _load("compare")
  # Five seeds of a 20-iteration run whose final values are 1, 2, 3, 4 and 100.
  finals = [1.0, 2.0, 3.0, 4.0, 100.0]
  curves = {"tsmcts": [[{"iteration": i, "env_steps": 10 * i, "wall_time": 0.5 * i,
                         "mean_return": final * min(1.0, i / 10)} for i in range(1, 21)]
                       for final in finals]}
  summary = [{"search": "tsmcts", "seed": seed, "final": compare.final_value(rows, "mean_return"),
              "wall_time": 10.0, "env_steps": 200, "num_simulations": 8, "env_id": "snake"}
             for seed, rows in enumerate(curves["tsmcts"])]
  compare._write(str(tmp_path), "snake", "quick", curves, summary, "mean_return", "mean_return")
  meta, (row,) = common.read_csv(str(tmp_path / "compare_summary.csv"))
  # The IQM drops the outer quarter at each end (here 1 and 100 of five): the mean of 2, 3, 4.
  assert row["final_mean_return_iqm"] == pytest.approx(3.0)
  assert row["final_mean_return_mean"] == pytest.approx(np.mean(finals))  # kept
  assert row["final_mean_return_ci_low"] < 3.0 < row["final_mean_return_ci_high"] <= 100.0
  assert any(line.startswith("iqm:") for line in meta)
  assert (tmp_path / "compare.png").stat().st_size > 0
  center, low, high = common.iqm_and_ci(np.asarray([[1.0, 5.0], [2.0, np.nan], [3.0, np.nan]]))
  np.testing.assert_allclose(center, [2.0, 5.0])  # a point one run reaches: that run's value
  assert low[0] <= 2.0 <= high[0] and np.isnan(low[1]) and np.isnan(high[1])


def test_compare_merge_joins_two_outputs_without_rerunning(tmp_path):
  compare = _load("compare")

  def output(directory, search, finals):
    curves = {search: [[{"iteration": i, "env_steps": 10 * i, "wall_time": 0.5 * i,
                         "mean_return": f * i / 20} for i in range(1, 21)] for f in finals]}
    summary = [{"search": search, "seed": seed, "final": f, "wall_time": 10.0, "env_steps": 200,
                "num_simulations": 64, "env_id": "snake"} for seed, f in enumerate(finals)]
    compare._write(str(directory), "snake", "quick", curves, summary, "mean_return",
                   "mean_return")

  output(tmp_path / "a", "gumbel", [25.0, 26.0, 27.0])
  output(tmp_path / "b", "tsmcts", [20.0, 21.0])
  compare.main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                str(tmp_path / "ab")])
  _, rows = common.read_csv(str(tmp_path / "ab" / "compare_summary.csv"))
  by_search = {r["search"]: r for r in rows}
  assert by_search["gumbel"]["final_mean_return_mean"] == pytest.approx(26.0)
  assert by_search["tsmcts"]["final_mean_return_mean"] == pytest.approx(20.5)
  assert by_search["tsmcts"]["seeds"] == 2
  assert (tmp_path / "ab" / "compare.png").stat().st_size > 0
  with pytest.raises(ValueError, match="more than one"):
    compare.merge([str(tmp_path / "a"), str(tmp_path / "a")], str(tmp_path / "aa"))


def test_make_search_gumbel_is_mctx_and_ignores_num_particles():
  import mctx

  search = common.make_search("gumbel", num_particles=7)
  assert search.func is mctx.gumbel_muzero_policy and "num_particles" not in search.keywords
  assert common.make_search("tsmcts", num_particles=7).keywords["num_particles"] == 7
  with pytest.raises(ValueError, match="search"):
    common.make_search("mcts")


def test_random_players_results_are_rates_that_sum_to_one():
  import pgx

  env = pgx.make("tic_tac_toe")
  key = jax.random.key(0)
  play = jax.jit(lambda key: alphazero_pgx.play(
      env, alphazero_pgx.random_action, alphazero_pgx.random_action, key, 16))
  result = play.lower(key).compile(FAST_COMPILE)(key)
  total = sum(float(result[k]) for k in ("win_rate", "draw_rate", "loss_rate"))
  assert total == pytest.approx(1.0)


continuous_control = _load("continuous_control")


# SMC and SMCTS behind -m slow, as for the discrete examples (the default run's time is at its
# limit); TSMCTS runs every code path of the sampled engine they do.
@pytest.mark.parametrize("search", [
    pytest.param(s, marks=pytest.mark.slow) if s in ("smc", "smcts") else s
    for s in continuous_control.SEARCHES])
def test_continuous_control_trains_with_every_sampled_search(search):
  # Its environment is gymnax's Pendulum, imported when the example builds it (a GPU machine
  # without gymnax failed here instead of skipping).
  pytest.importorskip(
      "gymnax", reason="needs gymnax, from the examples extra: pip install -e '.[examples]'")
  config = continuous_control.Config(
      search=search, num_simulations=8, num_particles=4, num_candidates=4, num_envs=2,
      hidden=8, batch_size=64, num_epochs=1)
  state, step_fn, _, _ = continuous_control.setup(config)
  step_fn = step_fn.lower(state).compile(FAST_COMPILE)
  first, metrics_1 = step_fn(state)
  second, metrics_2 = step_fn(first)
  for metrics in (metrics_1, metrics_2):
    for key in ("loss", "policy_loss", "value_loss", "mean_return"):
      assert math.isfinite(float(metrics[key])), (key, metrics)
  assert _leaves_differ(state["params"], first["params"])
  assert _leaves_differ(first["params"], second["params"])


def test_continuous_control_env_is_gymnax_pendulum_with_actions_scaled_to_the_box():
  gymnax = pytest.importorskip(
      "gymnax", reason="needs gymnax, from the examples extra: pip install -e '.[examples]'")
  env = continuous_control.GymnaxEnv("Pendulum-v1")
  reference, params = gymnax.make("Pendulum-v1")
  state = env.reset(jax.random.key(0), 3)
  action = jnp.array([[-1.0], [0.0], [0.5]])
  torque = jnp.array([[-2.0], [0.0], [1.0]])  # [-1, 1] onto Pendulum's [-2, 2]

  @jax.jit  # one compilation instead of many eager ops
  def both(state):
    next_state, reward = env.step(state, action)
    _, want_state, want_reward, _, _ = jax.vmap(reference.step_env, in_axes=(None, 0, 0, None))(
        jax.random.key(1), state, torque, params)
    return next_state, reward, want_state, want_reward, env.observe(next_state)

  next_state, reward, want_state, want_reward, observation = both(state)
  np.testing.assert_allclose(reward, want_reward, rtol=1e-6)
  np.testing.assert_allclose(next_state.theta, want_state.theta, rtol=1e-6)
  np.testing.assert_allclose(observation[:, 0], jnp.cos(next_state.theta), rtol=1e-6)
  np.testing.assert_allclose(observation[:, 2], next_state.theta_dot / 8.0, rtol=1e-6)
  assert (env.observation_size, env.action_size, env.episode_length) == (3, 1, 200)


def test_compare_named_runs_and_a_budget_matched_to_a_reference_speed(tmp_path, monkeypatch):
  """`--run` trains named runs with their own budgets and latency; `--match-time` adds a run of
  a search at the largest doubling of the reference's budget that trains at least as fast."""
  compare = _load("compare")

  @dataclasses.dataclass(frozen=True)
  class Config:
    search: str = "tsmcts"
    seed: int = 0
    preset: str = "quick"
    num_simulations: int = 16
    num_particles: Optional[int] = None
    num_steps: Optional[int] = None
    total_env_steps: int = 200
    out: Optional[str] = None
    num_envs: int = 2
    rollout_length: int = 5

  trained = []

  def train(config, quiet=False):
    # Speed: Gumbel MuZero at 64 trains 100 steps/s; TSMCTS's time grows with its budget and
    # matches that speed up to 256 simulations (1600 / sqrt(budget): 200 at 64, 100 at 256).
    trained.append(config)
    speed = 100.0 if config.search == "gumbel" else 1600.0 / np.sqrt(config.num_simulations)
    steps = config.num_envs * config.rollout_length
    return [{"iteration": i, "env_steps": steps * i, "wall_time": steps * i / speed,
             "steps_per_s": speed, "mean_return": float(i)}
            for i in range(1, config.total_env_steps // steps + 1)]

  module = types.SimpleNamespace(Config=Config, PRESETS={"quick": {}}, train=train)
  monkeypatch.setattr(compare, "_load", lambda env: (module, "mean_return"))
  curves = compare.run("snake", seeds=2, out=str(tmp_path), runs=[
      compare.parse_run("gumbel64=gumbel:num_simulations=64"),
      compare.parse_run("tsmcts_calls64=tsmcts:num_simulations=1024,num_steps=64")],
      match=[("tsmcts_time", "tsmcts", "gumbel64")], quiet=True)
  assert list(curves) == ["gumbel64", "tsmcts_calls64", "tsmcts_time"]
  runs = [c for c in trained if c.total_env_steps == 200]  # not the 80-step speed probes
  assert {(c.search, c.num_simulations, c.num_steps, c.seed) for c in runs} == {
      ("gumbel", 64, None, 0), ("gumbel", 64, None, 1), ("tsmcts", 1024, 64, 0),
      ("tsmcts", 1024, 64, 1), ("tsmcts", 256, None, 0), ("tsmcts", 256, None, 1)}
  _, rows = common.read_csv(str(tmp_path / "compare_summary.csv"))
  by_name = {r["search"]: r for r in rows}
  assert by_name["tsmcts_time"]["num_simulations"] == 256
  assert by_name["tsmcts_calls64"]["num_steps"] == 64
  with pytest.raises(ValueError, match="NAME=SEARCH"):
    compare.parse_run("tsmcts")
