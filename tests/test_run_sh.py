"""run.sh's choice of torch index (``bash run.sh torch-plan``: a dry run that installs nothing).

No NVIDIA GPU: PyTorch's CPU index when it answers, the default index when it cannot be
reached, within the connect timeout; an NVIDIA GPU (a working ``nvidia-smi``): the default
index.  The GPU is faked with an ``nvidia-smi`` script on ``PATH``, the index with a local
HTTP server, a closed port and a socket that accepts but never answers.
"""

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_GPU_NODES = bool(list(Path("/dev").glob("nvidia[0-9]*")))

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="run.sh needs bash")


def _fake_smi(tmp_path, gpu: bool) -> str:
    """A directory holding a fake ``nvidia-smi``: lists one GPU, or fails as it does without a driver."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    smi = d / "nvidia-smi"
    if gpu:
        smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    else:
        smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\nexit 9\n")
    smi.chmod(0o755)
    return str(d)


def _plan(tmp_path, *, gpu: bool, index: str, timeout: float = 5):
    env = dict(os.environ, PATH=_fake_smi(tmp_path, gpu) + os.pathsep + os.environ["PATH"],
               DLMPPL_TORCH_INDEX=index, DLMPPL_INDEX_TIMEOUT=str(timeout), PYTHON=sys.executable)
    env.pop("DLMPPL_TORCH_SPEC", None)
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(ROOT / "run.sh"), "torch-plan"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), proc.stderr, time.perf_counter() - t0


@pytest.fixture
def index_server(tmp_path):
    """A local HTTP server standing for the CPU wheel index."""
    (tmp_path / "www").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there any more: connection refused


@pytest.mark.skipif(REAL_GPU_NODES, reason="this machine has NVIDIA device nodes: the no-GPU plan cannot be faked")
def test_no_gpu_reachable_index_is_used(tmp_path, index_server):
    out, err, _ = _plan(tmp_path, gpu=False, index=index_server)
    assert out == f"plan=cpu-index spec=torch==2.13.0 index={index_server}", err


@pytest.mark.skipif(REAL_GPU_NODES, reason="this machine has NVIDIA device nodes: the no-GPU plan cannot be faked")
def test_no_gpu_unreachable_index_falls_back_fast(tmp_path):
    out, err, _ = _plan(tmp_path, gpu=False, index=_closed_port_url())
    assert out == "plan=default spec=torch==2.13.0 index=default" and "could not be reached" in err
    # an index that accepts the connection and never answers costs the timeout, not pip's minutes
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
        out, err, dt = _plan(tmp_path, gpu=False, index=url, timeout=1)
    assert out.startswith("plan=default") and "could not be reached" in err
    assert 0.9 < dt < 30, dt


def test_gpu_uses_default_index(tmp_path, index_server):
    out, err, _ = _plan(tmp_path, gpu=True, index=index_server)  # the CPU index is reachable, but a GPU is present
    assert out == "plan=default spec=torch==2.13.0 index=default" and "NVIDIA GPU found" in err


def test_empty_index_means_default(tmp_path):
    out, _, _ = _plan(tmp_path, gpu=False, index="")
    assert out.startswith("plan=default")


FAKE_PYTHON = r"""#!/bin/bash
# a stand-in venv python for run.sh: logs pip calls, fails where the test says
echo "$*" >> "$LOG"
case "$*" in
  "-c import sys; print(sys.prefix)") echo /fake ;;
  "- "*) exit 0 ;;                                  # run.sh's index probe: let the real one decide
  "-c import torch"*) exit 1 ;;                     # no torch yet
  *"pip install -q --index-url"*) exit "$CPU_INDEX_RC" ;;
  *"pip install"*) exit 0 ;;
  *) exit 0 ;;
esac
"""


@pytest.mark.skipif(REAL_GPU_NODES, reason="this machine has NVIDIA device nodes: the no-GPU plan cannot be faked")
@pytest.mark.parametrize("cpu_index_rc", [0, 1])
def test_install_uses_cpu_index_and_falls_back(tmp_path, index_server, cpu_index_rc):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(FAKE_PYTHON.replace('"- "*) exit 0 ;;', '"- "*) exec ' + sys.executable + ' "$@" ;;'))
    py.chmod(0o755)
    log = tmp_path / "calls.log"
    env = dict(os.environ, PATH=_fake_smi(tmp_path, False) + os.pathsep + os.environ["PATH"],
               DLMPPL_TORCH_INDEX=index_server, DLMPPL_VENV=str(venv), LOG=str(log), CPU_INDEX_RC=str(cpu_index_rc))
    for k in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHON", "DLMPPL_TORCH_SPEC"):
        env.pop(k, None)
    proc = subprocess.run(["bash", str(ROOT / "run.sh"), "install"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pips = [ln for ln in log.read_text().splitlines() if ln.startswith("-m pip install")]
    expected = [f"-m pip install -q --index-url {index_server} torch==2.13.0"]
    if cpu_index_rc:
        expected.append("-m pip install -q torch==2.13.0")
        assert "failed: trying the default index" in proc.stderr
    assert pips == expected + ["-m pip install -q -e .[dev]"]
