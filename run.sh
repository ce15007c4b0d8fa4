#!/usr/bin/env bash
# dlmppl's two commands:   bash run.sh demo     (the main job)
#                          bash run.sh test     (the test suite; what CI runs)
# also:                    bash run.sh bench NAME   (a benchmark in benchmarks/)
#                          bash run.sh bench all    (every benchmark, --quick, then one table of all ratios)
#                          bash run.sh gpu          (device tests + benchmarks/gpu.py on cuda)
#                          bash run.sh install      (only make/update the environment)
#                          bash run.sh torch-plan   (print how torch would be installed; installs nothing)
#
# Environment: inside an activated virtualenv/conda env the packages go there and
# an installed torch (e.g. your CUDA build) is kept; otherwise a virtualenv is made
# here (.venv, or DLMPPL_VENV) with $PYTHON (default python3).  torch is installed
# only when missing, as torch==2.13.0 (override with DLMPPL_TORCH_SPEC): on a machine
# without an NVIDIA GPU (no /dev/nvidia[0-9]*, no working nvidia-smi) from PyTorch's
# CPU wheel index (DLMPPL_TORCH_INDEX), which is probed first with a short connect
# timeout (DLMPPL_INDEX_TIMEOUT seconds, default 5); when it cannot be reached, or
# the install from it fails, from the default index, which on Linux gives PyPI's
# CUDA build (5.4 GB instead of 1.7 GB; see README).
set -euo pipefail
cd "$(dirname "$0")"

TORCH_SPEC="${DLMPPL_TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX="${DLMPPL_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
INDEX_TIMEOUT="${DLMPPL_INDEX_TIMEOUT:-5}"

nvidia_gpu() {  # an NVIDIA device node, or an nvidia-smi that lists a GPU
  compgen -G "/dev/nvidia[0-9]*" >/dev/null && return 0
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"
}

index_reachable() {  # $1 python, $2 url: an HTTP answer within INDEX_TIMEOUT seconds
  "$1" - "$2" "$INDEX_TIMEOUT" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).close()
EOF
}

# The torch plan, one word: "cpu-index" or "default" (and why, on stderr).
torch_plan() {
  if nvidia_gpu; then
    echo "run.sh: NVIDIA GPU found: torch from the default index (CUDA build)" >&2; echo default
  elif [ -z "$TORCH_INDEX" ]; then
    echo "run.sh: DLMPPL_TORCH_INDEX is empty: torch from the default index" >&2; echo default
  elif index_reachable "$1" "$TORCH_INDEX"; then
    echo "run.sh: no NVIDIA GPU: torch from $TORCH_INDEX" >&2; echo cpu-index
  else
    echo "run.sh: no NVIDIA GPU, but $TORCH_INDEX could not be reached (connect timeout ${INDEX_TIMEOUT}s): torch from the default index" >&2
    echo default
  fi
}

install_torch() {  # $1 python
  if [ "$(torch_plan "$1")" = cpu-index ]; then
    "$1" -m pip install -q --index-url "$TORCH_INDEX" "$TORCH_SPEC" && return 0
    echo "run.sh: installing $TORCH_SPEC from $TORCH_INDEX failed: trying the default index" >&2
  fi
  "$1" -m pip install -q "$TORCH_SPEC"
}

cmd="${1:-demo}"
shift || true

if [ "$cmd" = torch-plan ]; then  # dry run: what an install would do on this machine, nothing installed
  probe="${PYTHON:-python3}"
  "$probe" -c "import sys" >/dev/null 2>&1 || probe=python3
  plan="$(torch_plan "$probe")"
  echo "plan=$plan spec=$TORCH_SPEC index=$([ "$plan" = cpu-index ] && echo "$TORCH_INDEX" || echo default)"
  exit 0
fi

VENV="${DLMPPL_VENV:-.venv}"
if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
  PY=python
else
  ver='import sys; print("%d.%d" % sys.version_info[:2])'
  if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
  elif [ -n "${PYTHON:-}" ] && [ "$("$VENV/bin/python" -c "$ver")" != "$("$PYTHON" -c "$ver")" ]; then
    echo "run.sh: warning: $VENV has Python $("$VENV/bin/python" -c "$ver"), not PYTHON=$PYTHON's: set DLMPPL_VENV to make another" >&2
  fi
  PY="$VENV/bin/python"
fi

stamp=".dlmppl-install-stamp"
[ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] || stamp="$VENV/.dlmppl-install-stamp"
want="$(cat pyproject.toml | sha1sum | cut -c1-40) $($PY -c 'import sys; print(sys.prefix)')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! $PY -c "import torch, dlmppl" 2>/dev/null; then
  if ! $PY -c "import torch" 2>/dev/null; then
    install_torch "$PY"
  fi
  $PY -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

case "$cmd" in
  install) $PY -c "import sys, torch, arviz; print('run.sh:', sys.executable, 'python', sys.version.split()[0], 'torch', torch.__version__, 'arviz', arviz.__version__)" ;;
  demo) exec $PY -m dlmppl.demo "$@" ;;
  test) exec $PY -m pytest -n 2 "$@" ;;
  bench) name="${1:?usage: bash run.sh bench NAME|all}"; shift; [ "$name" = all ] && name=bench_all
    # this checkout's dlmppl first, also when DLMPPL_VENV's editable install points at another one
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    name="${name%.py}"; [ -f "benchmarks/$name.py" ] || name="bench_$name"  # bench directional = bench bench_directional
    exec $PY "benchmarks/$name.py" "$@" ;;
  gpu) dev="${DLMPPL_TEST_DEVICE:-cuda}"  # the on_device tests, then benchmarks/gpu.py, on $dev
    $PY -c "import sys, torch; sys.exit(torch.device('$dev').type == 'cuda' and not torch.cuda.is_available())" \
      || { echo "run.sh gpu: torch sees no CUDA device (set DLMPPL_TEST_DEVICE to choose another)" >&2; exit 1; }
    DLMPPL_TEST_DEVICE="$dev" $PY -m pytest -m on_device "$@" && exec $PY benchmarks/gpu.py --device "$dev" ;;
  *) echo "usage: bash run.sh demo|test|gpu|bench NAME|bench all|install|torch-plan" >&2; exit 2 ;;
esac
