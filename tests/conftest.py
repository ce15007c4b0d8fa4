import os

import pyro
import pytest
import torch

from tests.statistical import seed

# one thread per test process: CI has 2 cores and runs 2 pytest workers
torch.set_num_threads(int(os.environ.get("DLMPPL_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed_and_clear():
    # DLMPPL_TEST_SEED moves every test onto fresh random numbers (tests/statistical.py)
    pyro.set_rng_seed(seed(0))
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
