import os

import pyro
import pytest
import torch

from tests.statistical import seed

# one thread per test process: CI has 2 cores and runs 2 pytest workers
torch.set_num_threads(int(os.environ.get("DLMPPL_TEST_THREADS", "1")))


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default=None,
        help="device of the tests that take the `device` fixture (cpu, cuda, cuda:1, ...); "
        "default: $DLMPPL_TEST_DEVICE, else cpu",
    )


def _device_name(config) -> str:
    return config.getoption("--device") or os.environ.get("DLMPPL_TEST_DEVICE") or "cpu"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "on_device: takes the `device` fixture, so runs on --device / $DLMPPL_TEST_DEVICE (set automatically)"
    )
    name = _device_name(config)
    try:
        torch.device(name)
    except RuntimeError as e:
        raise pytest.UsageError(f"--device / DLMPPL_TEST_DEVICE: not a torch device: {name!r} ({e})") from None


def pytest_collection_modifyitems(config, items):
    # `pytest -m on_device` selects exactly the tests that follow the chosen device
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.on_device)


def _available(dev: torch.device) -> bool:
    if dev.type == "cpu":
        return True
    if dev.type == "cuda":
        return torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count())
    mod = getattr(torch, dev.type, None)  # mps, xpu, ...
    return bool(mod is not None and hasattr(mod, "is_available") and mod.is_available())


@pytest.fixture
def device(request):
    """The device chosen by ``--device`` / ``DLMPPL_TEST_DEVICE`` (cpu by default).

    A test that takes it runs on that device: it should put its inputs there, and tensors
    it creates without ``device=`` land there too (the default device is set for the test
    when it is not the CPU, so a CPU run is unchanged).  Skipped only when the chosen
    device does not exist on this machine.
    """
    dev = torch.device(_device_name(request.config))
    if not _available(dev):
        pytest.skip(f"no {dev} device on this machine (chosen by --device / DLMPPL_TEST_DEVICE)")
    if dev.type == "cpu":
        yield dev
        return
    previous = torch.get_default_device()
    torch.set_default_device(dev)
    try:
        yield dev
    finally:
        torch.set_default_device(previous)


@pytest.fixture(autouse=True)
def _seed_and_clear():
    # DLMPPL_TEST_SEED moves every test onto fresh random numbers (tests/statistical.py)
    pyro.set_rng_seed(seed(0))
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
