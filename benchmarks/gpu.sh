#!/usr/bin/env bash
# One prepared command for a machine with a GPU (issue "compute scaling", item 5): the speed
# headline at equal latency, the quality tables at equal sequential calls (and equal
# evaluations and wall-clock), and Snake with a frozen network at equal latency, every result
# into one folder, in 8 minutes or less.
#
#   bash benchmarks/gpu.sh --fetch-wheels    # here, with PyPI: the wheels the GPU lacks -> .whl/
#   bash benchmarks/gpu.sh [OUT]             # there (carry .whl), about 8 minutes
#   SIZE=tiny bash benchmarks/gpu.sh /tmp/g  # dry run on a CPU, tiny sizes
#   WHEEL_PYTHON=3.11 WHEELS_DIR=/tmp/w bash benchmarks/gpu.sh --fetch-wheels  # then, with
#   WHEELS_DIR=/tmp/w SIZE=tiny ..., the dry run installs from wheels too (this CPU's Python)
#   PARTS="tests speed" bash benchmarks/gpu.sh OUT   # a subset; "tests" runs the default tests
#   PARTS="profile tests" bash benchmarks/gpu.sh OUT # the per-phase profile (issue 24) and tests
#   PARTS="profile ab tests" bash benchmarks/gpu.sh OUT  # and the A/B of the step changes that
#                                                    # were not kept on CPU (ab_variants.py)
#   PARTS="targets profile tests ab" bash benchmarks/gpu.sh OUT  # issue 24's GPU run (H100,
#                                                    # 2026-12-05: 285 s; results committed)
#   PARTS="targets profile go cmdbuf" bash benchmarks/gpu.sh OUT  # what that run left: the
#                                                    # per-phase profile, the Go-sized target and
#                                                    # XLA's command buffers (limits 500 s; the
#                                                    # H100 ran targets in 29 s, profile in 94 s)
#   PARTS="targets profile go cmdbuf ab" AB_VARIANTS=baseline,root_step_cond \
#     bash benchmarks/gpu.sh OUT                     # and the A/B of the root step selected
#                                                    # (5d6af7f) against its conditional
#
# Such a machine has jax, chex, flax, optax, matplotlib and pytest but not mctx, pgx, jumanji
# or their own needs. Where `.whl/` exists beside this checkout's root, its wheels are
# installed with `pip install --no-index --no-deps --target` into a folder put on PYTHONPATH
# (nothing is downloaded there), and smctx itself is imported from `src/`. `--fetch-wheels`
# downloads them here for the GPU's Python (3.12, manylinux x86_64; WHEEL_PYTHON to change).
#
# Each part runs under its own time limit and the next part runs whatever the previous one
# returned (exit code 124: the part ran out of time, its output so far is kept); `status.txt`
# lists every part with its exit code and seconds, `environment.txt` the device and versions.
# Parts and limits (s): speed 90, quality 180, snake 200 (trains the `early` network first
# unless benchmarks/results/snake_search/networks is carried): 470 s in all; tests 240,
# profile 120 (not in the default parts: `speed.py --mode profile`, kernel time by phase, with
# XLA's command buffers off so that each kernel is named in the trace), ab 150 (not in the
# default parts: `ab_variants.py`, batch 256, budget 256), targets 110 (not in the default
# parts: issue 24's search/floor and compile times at 64-4096 simulations, N = 16, batch 256),
# go 150 (not in the default parts: `speed.py --mode go`, the Go-sized target: 362 actions,
# batch 64, 800 simulations), cmdbuf 120 (not in the default parts: the `targets` timings again
# with XLA's GPU command buffers off, then with WHILE and CONDITIONAL added to its default
# commands, so that the whole search loop can run as one CUDA graph: compare with `targets`;
# 60 s each, twice what `targets` took on the H100).
# The tests run without stopping at a failure, with JAX's preallocation off (8 workers share
# the GPU).
set -u
cd "$(dirname "$0")/.."
WHEELS=(mctx==0.0.71 pgx==2.6.0 svgwrite==1.4.3 jumanji==1.1.2 dm-env==1.6 dm-tree==0.1.10
        esquilax==2.1.0 jax-tqdm==0.4.0 gymnasium==1.3.0 farama-notifications==0.0.6
        tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1)
WHEELS_DIR="${WHEELS_DIR:-.whl}"
if [ "${1:-}" = "--fetch-wheels" ]; then
  mkdir -p "$WHEELS_DIR"
  python3 -m pip download --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$WHEELS_DIR" "${WHEELS[@]}"
  exit $?
fi

OUT="${1:-benchmarks/results/gpu}"
SIZE="${SIZE:-full}"
PARTS="${PARTS:-speed quality snake}"
PYTHON="${PYTHON:-python3}"
# The `ab` part's variants (`ab_variants.py --variants`): every one unless given.
AB_VARIANTS="${AB_VARIANTS:-}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d "$WHEELS_DIR" ] && ls "$WHEELS_DIR"/*.whl > /dev/null 2>&1; then
  SITE="${TMPDIR:-/tmp}/smctx_gpu_site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS_DIR"/*.whl || exit 1
  export PYTHONPATH="$SITE:$PWD/src:$PWD:${PYTHONPATH:-}"
else
  export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}"
fi

if [ "$SIZE" = "tiny" ]; then
  TESTS=(tests/test_validation.py -q -x)
  SPEED=(--mode latency --latency-steps 4 --latency-widths 4 --max-call-seconds 10)
  QUALITY=(--mode tiny)
  SNAKE=(--episodes 8 --budgets "" --calls 4 --widths 4,8 --time-budgets 8)
  PROFILE=(--mode profile --algorithms tsmcts --models tabular)
  AB=(--models tabular --batches 4 --rounds 3 --mctx-rounds 1)
  TARGETS=(--mode latency --latency-steps 4 --latency-widths 4 --max-call-seconds 10)
  GO=(--mode go --algorithms smcts,tsmcts)
else
  TESTS=(-q -n 8 -rs --durations=25)
  SPEED=(--mode latency)
  QUALITY=(--mode quick --budgets 64,256 --calls 16,64,256 --widths 16,64,256)
  SNAKE=(--episodes 256 --budgets "" --calls 16,64,256 --widths 16,64,256 --time-budgets 64)
  PROFILE=(--mode profile)
  AB=(--batches 256 --rounds 100)
  TARGETS=(--mode latency --latency-steps 4,16,64,256 --latency-widths 16)
  GO=(--mode go)
fi

: > "$OUT/status.txt"
part() {  # part NAME LIMIT COMMAND...: runs COMMAND with its log in OUT/NAME.log
  local name=$1 limit=$2 start rc
  shift 2
  case " $PARTS " in *" $name "*|*" ${name%%_*} "*) ;; *) return ;; esac  # cmdbuf: cmdbuf_*
  start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/status.txt"
}

{
  date -u +%FT%TZ
  git rev-parse --short HEAD 2>/dev/null
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  "$PYTHON" -c "import jax, mctx, smctx; print('jax', jax.__version__, 'mctx', mctx.__version__, 'smctx', smctx.__version__); print(jax.devices())"
} > "$OUT/environment.txt" 2>&1

part speed 90 "$PYTHON" benchmarks/speed.py "${SPEED[@]}" --out "$OUT/speed"
part quality 180 "$PYTHON" benchmarks/quality.py "${QUALITY[@]}" --out "$OUT/quality"
part snake 200 "$PYTHON" benchmarks/snake_search.py "${SNAKE[@]}" --only-networks early \
  --out "$OUT/snake"
part targets 110 "$PYTHON" benchmarks/speed.py "${TARGETS[@]}" --out "$OUT/targets"
part profile 120 "$PYTHON" benchmarks/speed.py "${PROFILE[@]}" --out "$OUT/speed"
part go 150 "$PYTHON" benchmarks/speed.py "${GO[@]}" --out "$OUT/go"
COMMAND_BUFFERS_GRAPH=+WHILE,+CONDITIONAL  # added to XLA's default commands
part cmdbuf_off 60 env XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=" \
  "$PYTHON" benchmarks/speed.py "${TARGETS[@]}" --out "$OUT/cmdbuf_off"
part cmdbuf_graph 60 env \
  XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=$COMMAND_BUFFERS_GRAPH" \
  "$PYTHON" benchmarks/speed.py "${TARGETS[@]}" --out "$OUT/cmdbuf_graph"
part ab 150 "$PYTHON" benchmarks/ab_variants.py "${AB[@]}" \
  ${AB_VARIANTS:+--variants "$AB_VARIANTS"} --out "$OUT/speed"
part tests 240 env XLA_PYTHON_CLIENT_PREALLOCATE=false "$PYTHON" -m pytest "${TESTS[@]}"
cat "$OUT/status.txt"
