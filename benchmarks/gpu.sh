#!/usr/bin/env bash
# One prepared command for a machine with a GPU: the default tests, the speed
# headline, the quality benchmark (equal evaluations and equal wall-clock) and
# a Snake comparison at 64 simulations, every result into one folder.
#
#   bash benchmarks/gpu.sh [OUT]             # on the GPU machine, about 8 minutes
#   SIZE=tiny bash benchmarks/gpu.sh /tmp/g  # dry run on a CPU, tiny sizes
#
# It installs nothing: run it where `import smctx` works (an installed
# checkout, or wheels unpacked on PYTHONPATH; benchmarks/README.md, "GPU").
# Each part runs under its own time limit and the next part runs whatever the
# previous one returned (exit code 124: the part ran out of time, its output so far is kept);
# `status.txt` lists every part with its exit code and
# seconds, `environment.txt` the device and versions. Parts and limits (s):
#   tests 240 (8 workers), speed headline 70, quality 120, Snake 64 simulations 90 (Gumbel MuZero
#   and TSMCTS, one seed): 520 s in all.
set -u
OUT="${1:-benchmarks/results/gpu}"
SIZE="${SIZE:-full}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

if [ "$SIZE" = "tiny" ]; then
  TESTS=(tests/test_validation.py -q -x)
  SPEED=(--mode headline --algorithms tsmcts,mctx --max-call-seconds 10)
  QUALITY=(--mode tiny)
  SNAKE=(--seeds 1 --num-simulations 16 --total-env-steps 4096 --searches gumbel tsmcts --quiet)
else
  TESTS=(-q -x -n 8)
  SPEED=(--mode headline)
  QUALITY=(--mode quick --budgets 64,256)
  SNAKE=(--seeds 1 --num-simulations 64 --searches gumbel tsmcts --quiet)
fi

: > "$OUT/status.txt"
part() {  # part NAME LIMIT COMMAND...: runs COMMAND with its log in OUT/NAME.log
  local name=$1 limit=$2 start rc
  shift 2
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

part tests 240 "$PYTHON" -m pytest "${TESTS[@]}"
part speed 70 "$PYTHON" benchmarks/speed.py "${SPEED[@]}" --out "$OUT/speed"
part quality 120 "$PYTHON" benchmarks/quality.py "${QUALITY[@]}" --out "$OUT/quality"
part snake 90 "$PYTHON" examples/compare.py "${SNAKE[@]}" --out "$OUT/snake64"
cat "$OUT/status.txt"
