#!/usr/bin/env bash
# Tests the installed package, not the source tree (as mctx's test.sh does): builds the sdist and
# wheel, installs the wheel into a fresh virtual environment and runs the sdist's tests from a
# directory without `src/`. Usage: .ci/test_installed.sh [pip requirement ...]
# Extra arguments are installed first, e.g. the lowest supported versions:
#   .ci/test_installed.sh "jax==0.7.0" "jaxlib==0.7.0" "chex==0.1.91" "mctx==0.0.71"
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
python3 -m venv "$work/venv" && . "$work/venv/bin/activate"
pip install -q build
python -m build -q --outdir "$work/dist" .
if [ "$#" -gt 0 ]; then pip install -q "$@"; fi
wheel=$(ls "$work"/dist/smctx-*.whl)
pip install -q "$wheel[dev]" "$@"
tar xzf "$work"/dist/smctx-*.tar.gz -C "$work"
cd "$work"/smctx-*/ && rm -rf src
python -c "import smctx, jax; print('smctx', smctx.__version__, 'from', smctx.__file__, '| jax', jax.__version__)"
python -m pytest -q -n 2 -p no:cacheprovider
