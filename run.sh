#!/usr/bin/env bash
# dlmppl's two commands:   bash run.sh demo     (the main job)
#                          bash run.sh test     (the test suite; what CI runs)
# also:                    bash run.sh bench NAME   (a benchmark in benchmarks/)
#
# Environment: inside an activated virtualenv/conda env the packages go there and
# an installed torch (e.g. your CUDA build) is kept; otherwise a .venv is made
# here.  torch is installed only when missing, as the CPU build (torch==2.13.0,
# override with DLMPPL_TORCH_SPEC).
set -euo pipefail
cd "$(dirname "$0")"

if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
  PY=python
else
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  PY=.venv/bin/python
fi

stamp=".dlmppl-install-stamp"
[ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] || stamp=".venv/.dlmppl-install-stamp"
want="$(cat pyproject.toml | sha1sum | cut -c1-40) $($PY -c 'import sys; print(sys.prefix)')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! $PY -c "import torch, dlmppl" 2>/dev/null; then
  if ! $PY -c "import torch" 2>/dev/null; then
    $PY -m pip install -q "${DLMPPL_TORCH_SPEC:-torch==2.13.0}"
  fi
  $PY -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

cmd="${1:-demo}"
shift || true
case "$cmd" in
  demo) exec $PY -m dlmppl.demo "$@" ;;
  test) exec $PY -m pytest -n 2 "$@" ;;
  bench) name="$1"; shift; exec $PY "benchmarks/${name%.py}.py" "$@" ;;
  *) echo "usage: bash run.sh demo|test|bench NAME" >&2; exit 2 ;;
esac
