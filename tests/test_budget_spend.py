"""Default layouts spend the budget (issue 12, item 4).

A width `N` spends `N·(num_simulations // N)` evaluations; a width forced up
to the number of actions (SMC/SMCTS) or of root candidates (TSMCTS) used to
lose up to half the budget (SMCTS, 64 actions, budget 127: 64 evaluations).
The arithmetic is checked on a dense grid; a subset runs the real searches
with a model that counts the rows it is called with.
"""

from __future__ import annotations

import math

import jax
import jax.extend
import jax.experimental
import jax.numpy as jnp
import numpy as np
import pytest

from smctx import tabular
from smctx._src import budget
from tests.policies import NAMES_SLOW_BUT_TSMCTS, POLICIES

BUDGETS = range(16, 1025)
NUM_ACTIONS = (2, 3, 4, 5, 7, 8, 9, 16, 17, 32, 64, 82, 128, 200, 362)
MAX_CONSIDERED = 16  # tsmcts_policy's default max_num_considered_actions
# TSMCTS keeps its `m1` root candidates before spending the budget: on the
# grid, these (num_simulations, num_actions) spend under 90% (budget.py's
# module docstring), all at budgets under 32.
TSMCTS_KEEPS_CANDIDATES = {(17, 5), (17, 7), (17, 8), (27, 9), (28, 9), (29, 9), (30, 9),
                           (31, 9)}


def smc_default(num_simulations, num_actions, max_depth=None):
  return budget.smc_layout(num_simulations, num_actions, None, max_depth, True)


def tsmcts_default(num_simulations, num_actions, max_depth=None):
  return budget.tsmcts_layout(num_simulations, num_actions, None, MAX_CONSIDERED, max_depth)


def spends_90_percent(layout, num_simulations):
  return 10 * layout.num_evaluations >= 9 * num_simulations


@pytest.mark.parametrize("max_depth", [None, 1, 3])
def test_smc_default_layouts_spend_the_budget(max_depth):
  for num_actions in NUM_ACTIONS:
    for num_simulations in BUDGETS:
      layout = smc_default(num_simulations, num_actions, max_depth)
      n = layout.num_particles
      context = (num_simulations, num_actions, max_depth, layout)
      assert layout.num_evaluations <= num_simulations, context
      # At every budget, not only at num_simulations >= 2·A.
      assert spends_90_percent(layout, num_simulations), context
      # The design's lower bounds on the width: one particle per action, and
      # never narrower than the target depth's width (the width only grows).
      depth = 8 if max_depth is None else min(8, max_depth)
      assert n >= min(num_actions, num_simulations), context
      assert n >= num_simulations // depth, context
      assert layout.depths == (num_simulations // n if max_depth is None
                               else min(num_simulations // n, max_depth),), context


@pytest.mark.parametrize("max_depth", [None, 1, 3])
def test_tsmcts_default_layouts_spend_the_budget(max_depth):
  under_90, repeats = set(), set()
  for num_actions in NUM_ACTIONS:
    m1 = min(MAX_CONSIDERED, num_actions)
    k = budget.num_halving_iterations(m1)
    for num_simulations in BUDGETS:
      layout = tsmcts_default(num_simulations, num_actions, max_depth)
      n = layout.num_particles
      context = (num_simulations, num_actions, max_depth, layout)
      assert layout.num_evaluations <= num_simulations, context
      assert min(layout.depths) >= 1, context
      if max_depth is not None:
        assert max(layout.depths) <= max_depth, context
      if num_simulations >= 2 * num_actions and not spends_90_percent(layout, num_simulations):
        under_90.add((num_simulations, num_actions))
      # The design: every candidate when the budget gives each iteration a
      # step, two particles per candidate when it gives them two steps each
      # (depth 2 or more); never narrower than depth 8 per iteration would be, nor
      # than the sqrt(budget)/2 sequential calls that larger budgets grow to.
      if m1 * k <= num_simulations:
        assert layout.num_considered == m1, context
        assert len(layout.depths) == k, context
        assert n >= m1, context
        assert n >= num_simulations // max(k * 8, round(math.sqrt(num_simulations) / 2)), context
      if max_depth is None:
        assert layout.num_steps >= round(math.sqrt(num_simulations) / 2), context
      if 2 * m1 * k * 2 <= num_simulations:
        assert n >= 2 * m1, context
      # Groups deep enough for distinct paths: a candidate's ceil(N / m_i)
      # particles are at most the A^(T_i - 1) paths below it, except where
      # that would leave more than 10% of a small budget unspent.
      if max_depth is None and num_simulations >= 8 * num_actions:
        paths = [num_actions ** (t - 1) for t in layout.depths]
        group = [-(-n // m) for m in layout.considered_per_iteration]
        if any(p < g for p, g in zip(paths, group, strict=True)):
          repeats.add((num_simulations, num_actions))
  if max_depth is None:
    assert len(repeats) <= 24 and max(s for s, _ in repeats) < 300, sorted(repeats)
  if max_depth is None or max_depth >= 2:
    assert under_90 == TSMCTS_KEEPS_CANDIDATES
  else:
    # One step per iteration: a budget under m1·K leaves little choice.
    assert all(s < 36 for s, _ in under_90), sorted(under_90)


@pytest.mark.parametrize("num_simulations,num_actions,smc_width,tsmcts_width", [
    (127, 64, 127, 18),  # SMC/SMCTS spent 64 (N = 64, one step), TSMCTS 112 (N = 16)
    # SMC/SMCTS spent 20 (N = 4), TSMCTS 16 (N = 8, two steps); TSMCTS now 21 (N = 7,
    # depths 1 and 2: two steps per iteration would leave N <= 5, spending 20 or less).
    (23, 4, 7, 7),
    # SMC/SMCTS spent 400 (N = 200); TSMCTS 588 (12 = round(sqrt(599) / 2) calls of 49).
    (599, 200, 299, 49),
])
def test_previously_underspent_layouts(num_simulations, num_actions, smc_width,
                                       tsmcts_width):
  smc = smc_default(num_simulations, num_actions)
  tsmcts = tsmcts_default(num_simulations, num_actions)
  assert smc.num_particles == smc_width
  assert tsmcts.num_particles == tsmcts_width
  assert spends_90_percent(smc, num_simulations)
  assert spends_90_percent(tsmcts, num_simulations)


@pytest.mark.parametrize("num_simulations,num_actions,width,depths", [
    # Worked by hand from the rule "a candidate's ceil(N / m_i) particles are at most the
    # A^(T_i - 1) paths below it" (smctx's default; docs/algorithms.md, "Search quality").
    (16, 4, 4, (2, 2)),  # 8 x (1, 1) would repeat the root step of 2 and then 4 copies
    (64, 4, 12, (2, 3)),  # 16 x (2, 2) puts 8 on the 4 paths of depth 2; 13 x (2, 3) > 64
    (256, 9, 27, (2, 2, 2, 3)),  # 32 x (2, 2, 2, 2): 16 > 9 at the end; 28 x 9 steps > 256
    (256, 362, 32, (2, 2, 2, 2)),  # 362 paths at depth 2: unchanged, 16 per survivor
])
def test_default_layouts_leave_room_for_distinct_paths(num_simulations, num_actions, width,
                                                       depths):
  layout = tsmcts_default(num_simulations, num_actions)
  assert (layout.num_particles, layout.depths) == (width, depths)


@pytest.mark.parametrize("num_simulations,num_actions,width,depths", [
    # sqrt(budget)/2 sequential calls, spread over the K iterations, width budget // calls.
    (1024, 4, 64, (8, 8)),  # the distinct-path layout made 9 calls (113 particles)
    (4096, 9, 128, (8, 8, 8, 8)),  # 32 calls: 4096 // 32 = 128 particles
    (4096, 362, 128, (8, 8, 8, 8)),  # m1 = 16 candidates, K = 4
    (2500, 2, 100, (25,)),  # one iteration: all 25 calls in it
])
def test_larger_budgets_buy_depth_as_well_as_width(num_simulations, num_actions, width,
                                                   depths):
  layout = tsmcts_default(num_simulations, num_actions)
  assert (layout.num_particles, layout.depths) == (width, depths)


@pytest.mark.parametrize("num_simulations,num_actions,max_depth,width,depth", [
    # Exactly 90% is enough: 3 particles x 3 steps spend 9 of 10 and are the deepest
    # layout that does, so not 5 x 2 (all 10).
    (10, 3, None, 3, 3),
    # The same with max_depth=6: 6 x 6 spend 36 of 40, so not 8 x 5 (all 40).
    (40, 4, 6, 6, 6),
    # max_depth caps the steps a width spends: 2 x min(16 // 2, 6) = 12 of 16 is too little,
    # 3 x min(16 // 3, 6) = 15 is enough (counted without the cap, 2 x 8 would have won).
    (16, 2, 6, 3, 5),
])
def test_smc_default_width_by_hand(num_simulations, num_actions, max_depth, width, depth):
  layout = smc_default(num_simulations, num_actions, max_depth)
  assert (layout.num_particles, layout.depths) == (width, (depth,))


def test_tsmcts_max_depth_caps_each_iteration_not_the_whole_search():
  # 9 simulations, 3 actions, max_depth=2: m1 = 3 candidates, K = 2 iterations, so a width's
  # steps are capped at K·max_depth = 4. 3 particles take 9 // 3 = 3 steps (spending all 9),
  # as depths 1 and 2 (the second iteration's groups of 2 need depth 2 for distinct paths).
  # Capped at max_depth = 2 steps in all, 3 particles would spend 6 and 4 x (1, 1) only 8.
  layout = tsmcts_default(9, 3, max_depth=2)
  assert (layout.num_particles, layout.depths) == (3, (1, 2))


def test_fill_width_keeps_the_deepest_of_equally_spending_widths():
  # `_fill_width(budget=5, min_width=1, target_steps=3, min_steps=2, max_steps=4)`: 3 steps
  # give width 5 // 3 = 1 and 1 x min(5, 4) = 4 evaluations; 2 steps give width 2 and
  # 2 x min(2, 4) = 4. Neither spends 90% of 5; of the equals, the deeper (width 1) wins.
  assert budget._fill_width(5, 1, 3, 2, 4) == 1


def test_explicit_width_is_honoured():
  """Only the default width moves: an explicit one stays as asked."""
  assert budget.smc_layout(127, 64, 64, None, True).num_particles == 64
  assert budget.tsmcts_layout(23, 4, 8, MAX_CONSIDERED, None).num_particles == 8


# Counting the rows `recurrent_fn` is called with.


class RowCounter:
  """Counts the rows of every `recurrent_fn` call, at run time or from the program.

  The wrapped `recurrent_fn` passes its actions to an unordered
  `io_callback`. Called on `[B·N]` flattened particles the callback sees
  them at once; lifted over the particle axis with `jax.vmap` (`[B]` rows per
  slice) it is mapped with `lax.map` and sees each slice. Either way:

  * at run time, the rows it receives add up to `B·N` per step (`rows`);
  * in the traced program (`static_rows`), each callback's operand size
    times the lengths of the `scan`s around it (the depth loop, `fori_loop`
    with static bounds, and `lax.map`'s) is the same count, without
    compiling. A callback under a `while` or `cond` has no static count.

  `test_row_counter_flat_and_vmapped` checks both on both kinds of call.
  """

  def __init__(self):
    self.rows = 0

  def _record(self, action):
    self.rows += int(np.size(action))
    return np.zeros((), np.int32)

  def wrap(self, recurrent_fn):
    def counted(params, rng_key, action, embedding):
      jax.experimental.io_callback(self._record, jax.ShapeDtypeStruct((), jnp.int32), action,
                                   ordered=False)
      return recurrent_fn(params, rng_key, action, embedding)
    return counted

  @staticmethod
  def static_rows(fn, *args) -> int:
    """Rows the counted `recurrent_fn` is called with when `fn(*args)` runs."""
    return _callback_rows(jax.make_jaxpr(fn)(*args).jaxpr, 1, ())


def _callback_rows(jaxpr, repeats: int, path: tuple[str, ...]) -> int:
  rows = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "io_callback":
      assert not {"while", "cond"} & set(path), path
      rows += repeats * math.prod(eqn.invars[0].aval.shape)
    inner = repeats * eqn.params["length"] if name == "scan" else repeats
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          sub = sub.jaxpr
        if isinstance(sub, jax.extend.core.Jaxpr):
          rows += _callback_rows(sub, inner, path + (name,))
  return rows


def test_row_counter_flat_and_vmapped():
  batch, width, num_actions = 3, 5, 4
  mdp = tabular.random_mdp(0, num_states=6, num_actions=num_actions, discount=0.9)
  root_fn, recurrent_fn = tabular.model(mdp)
  embedding = root_fn(jnp.arange(batch, dtype=jnp.int32)).embedding
  key = jax.random.PRNGKey(0)
  action = jnp.zeros((batch, width), jnp.int32)
  particles = jnp.repeat(embedding[:, None], width, axis=1)
  counter = RowCounter()
  counted = counter.wrap(recurrent_fn)

  def flat(a, e):  # one call on B·N rows, twice
    out, e = counted(None, key, a.reshape(-1), e.reshape(-1))
    return counted(None, key, a.reshape(-1), e)

  def vmapped(a, e):  # N calls on B rows each, batched by vmap, twice
    call = jax.vmap(lambda k, a, e: counted(None, k, a, e), in_axes=(0, 1, 1), out_axes=1)
    keys = jax.random.split(key, width)
    out, e = call(keys, a, e)
    return call(keys, a, e)

  for fn in (flat, vmapped):
    assert RowCounter.static_rows(fn, action, particles) == 2 * batch * width
    counter.rows = 0
    jax.block_until_ready(jax.jit(fn)(action, particles))
    jax.effects_barrier()
    assert counter.rows == 2 * batch * width


BATCH = 2
# (num_simulations, num_actions): the previously failing layouts first.
SMC_COUNTED = [(127, 64), (599, 200), (723, 362), (17, 3), (23, 4), (39, 5), (55, 7), (16, 2),
               (100, 9), (64, 17), (135, 17), (300, 82), (255, 32), (1000, 128)]
TSMCTS_COUNTED = [(23, 4), (17, 5), (27, 9), (127, 64), (47, 3), (41, 3), (18, 4), (34, 3),
                  (89, 5), (64, 16), (200, 17), (383, 128), (125, 7), (1000, 362)]


def search(policy, num_simulations, num_actions, counter):
  """`(fn, key)`: the jittable search with a counted model, and its argument."""
  mdp = tabular.random_mdp(0, num_states=8, num_actions=num_actions, discount=0.9)
  root_fn, recurrent_fn = tabular.model(mdp)
  root = root_fn(jnp.arange(BATCH, dtype=jnp.int32))
  fn = lambda key: policy(None, key, root, counter.wrap(recurrent_fn),
                          num_simulations=num_simulations)
  return fn, jax.random.PRNGKey(0)


def static_evaluations(policy, num_simulations, num_actions):
  """Rows the real search passes to `recurrent_fn`, per root, from its program."""
  rows = RowCounter.static_rows(*search(policy, num_simulations, num_actions, RowCounter()))
  assert rows % BATCH == 0
  return rows // BATCH


@pytest.mark.parametrize("name,num_simulations,num_actions,evaluations", [
    ("smcts", 127, 64, 127),  # one step of 127 particles per root
    ("tsmcts", 23, 4, 21),  # m1 = 4, K = 2, N = 7, depths 1 and 2
])
def test_counted_by_hand(name, num_simulations, num_actions, evaluations):
  """Run and counted: the rows the model received, against a hand count."""
  counter = RowCounter()
  fn, key = search(POLICIES[name], num_simulations, num_actions, counter)
  jax.block_until_ready(jax.jit(fn)(key))
  jax.effects_barrier()
  assert counter.rows == evaluations * BATCH
  assert static_evaluations(POLICIES[name], num_simulations, num_actions) == evaluations


@pytest.mark.parametrize("name", NAMES_SLOW_BUT_TSMCTS)
def test_counted_evaluations_spend_the_budget(name):
  configs = TSMCTS_COUNTED if name == "tsmcts" else SMC_COUNTED
  layout_fn = tsmcts_default if name == "tsmcts" else smc_default
  for num_simulations, num_actions in configs:
    evaluations = static_evaluations(POLICIES[name], num_simulations, num_actions)
    context = (name, num_simulations, num_actions, evaluations)
    assert evaluations == layout_fn(num_simulations, num_actions).num_evaluations, context
    assert evaluations <= num_simulations, context
    if (num_simulations, num_actions) not in TSMCTS_KEEPS_CANDIDATES:
      assert 10 * evaluations >= 9 * num_simulations, context
