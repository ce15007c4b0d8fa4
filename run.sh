#!/usr/bin/env bash
# dlmppl's two commands:   bash run.sh demo     (the main job)
#                          bash run.sh test     (the test suite; what CI runs)
# also:                    bash run.sh bench NAME   (a benchmark in benchmarks/)
#                          bash run.sh gpu          (device tests + benchmarks/gpu.py on cuda)
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
  gpu) dev="${DLMPPL_TEST_DEVICE:-cuda}"  # the on_device tests, then benchmarks/gpu.py, on $dev
    $PY -c "import sys, torch; sys.exit(torch.device('$dev').type == 'cuda' and not torch.cuda.is_available())" \
      || { echo "run.sh gpu: torch sees no CUDA device (set DLMPPL_TEST_DEVICE to choose another)" >&2; exit 1; }
    DLMPPL_TEST_DEVICE="$dev" $PY -m pytest -m on_device "$@" && exec $PY benchmarks/gpu.py --device "$dev" ;;
  *) echo "usage: bash run.sh demo|test|gpu|bench NAME" >&2; exit 2 ;;
esac
