"""dlmppl.distributed: 2 gloo processes on localhost against single-process references.

One launch of tests/_dist_scenarios.py (2 ranks) serves every test of the module; the references
are computed here with plain ``pyro.infer.SVI`` / ``pyro.infer.MCMC`` and no process group.
"""

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch

import dlmppl as dl
from dlmppl.distributed import DistributedSVI, distributed_loader, run_chains
from tests import _dist_scenarios as sc

ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out):
    port = _free_port()
    procs = []
    for r in range(2):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, "-m", "tests._dist_scenarios", str(out)], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0].decode())
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return [p.returncode for p in procs], logs


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    # one launch per test session, also under pytest-xdist: the workers share the parent of their
    # base temp dir, and the first to take the lock runs the 2 ranks for all of them
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # .../pytest-N/popen-gwK: pytest-N is this session's
        shared = shared.parent
    out = shared / "dlmppl_two_ranks"
    with open(shared / "dlmppl_two_ranks.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "done").exists():
            out.mkdir(exist_ok=True)
            for _ in range(3):  # the free port may be taken between its choice and the rendezvous
                codes, logs = _launch(out)
                if not any(c and "address already in use" in log.lower() for c, log in zip(codes, logs, strict=True)):
                    break
            for r, c in enumerate(codes):
                assert c == 0, f"rank {r} failed:\n{logs[r][-3000:]}"
            (out / "done").touch()
    return out


def _reference_exact(wrap=lambda f: f, sgd=False):
    """Plain SVI in one process on the global batches the two ranks shared out."""
    pyro.clear_param_store()
    x = sc.data()
    vae, optim = sc.exact_setup(100, sgd)  # rank 0's seed: the values every rank starts from
    svi = pyro.infer.SVI(wrap(vae.model), wrap(vae.guide), optim, pyro.infer.Trace_ELBO())
    losses = []
    for epoch in range(sc.EPOCHS):
        perm = torch.randperm(sc.N, generator=torch.Generator().manual_seed(sc.SHUFFLE_SEED + epoch))
        for t in range(sc.N // sc.GLOBAL_BATCH):
            losses.append(svi.step(x[perm[t * sc.GLOBAL_BATCH : (t + 1) * sc.GLOBAL_BATCH]]))
    return sc.constrained_params(), losses


def test_svi_replicas_equal_one_process_global_batch(two_ranks):
    r0, r1 = (torch.load(two_ranks / f"exact_{r}.pt") for r in range(2))
    ref, ref_losses = _reference_exact()
    assert set(r0["params"]) == set(ref) and {"mu", "components$$$0.manifold.isp_c"} <= set(ref)
    for k in ref:
        assert torch.equal(r0["params"][k], r1["params"][k]), k  # replicas identical to the bit
        # same steps as one process with the whole global batch, to summation round-off
        torch.testing.assert_close(r0["params"][k], ref[k], rtol=1e-9, atol=1e-11, msg=k)
    assert len(set(ref_losses)) == len(ref_losses)  # the parameters moved
    np.testing.assert_allclose(r0["losses"], ref_losses, rtol=1e-10)
    np.testing.assert_allclose(r1["losses"], ref_losses, rtol=1e-10)
    assert torch.allclose(r0["params"]["mu"].norm(), torch.tensor(1.0, dtype=torch.float64))


def test_svi_mean_reduction_equals_one_process_global_batch(two_ranks):
    # each shard's ELBO scaled by N / 8 and averaged over the ranks = the global batch's scaled by N / 16
    r0, r1 = (torch.load(two_ranks / f"mean_{r}.pt") for r in range(2))
    ref, ref_losses = _reference_exact(sc.scaled, sgd=True)
    for k in ref:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
        torch.testing.assert_close(r0["params"][k], ref[k], rtol=1e-9, atol=1e-11, msg=k)
    np.testing.assert_allclose(r0["losses"], ref_losses, rtol=1e-10)


def test_svi_stochastic_replicas_stay_identical(two_ranks):
    # each rank draws its own ELBO noise on its own shard: identical parameters only if the
    # gradients were combined before the Riemannian step
    r0, r1 = (torch.load(two_ranks / f"stoch_{r}.pt") for r in range(2))
    assert r0["num_steps"] == sc.N // sc.GLOBAL_BATCH
    for k in r0["full"]:
        assert torch.equal(r0["full"][k], r1["full"][k]), k


def test_checkpoint_resume_equals_uninterrupted_run(two_ranks):
    for r in range(2):
        res = torch.load(two_ranks / f"stoch_{r}.pt")
        for k in res["full"]:
            assert torch.equal(res["full"][k], res["resumed"][k]), (r, k)


def test_chains_across_ranks_equal_one_process(two_ranks):
    got = dict(np.load(two_ranks / "chains.npz"))
    torch.set_num_threads(1)
    idata = run_chains(sc.kernel, sc.vmf_data(), **sc.CHAINS)  # no process group: all chains here
    ref = sc.flatten(idata)
    assert set(got) == set(ref)
    assert {"sample_stats/diverging", "sample_stats/energy", "sample_stats/step_size"} <= set(ref)
    for k in ref:
        assert got[k].shape[0] == sc.CHAINS["num_chains"], k
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    # independently: the last chain (run by rank 1) is pyro.infer.MCMC seeded base_seed + 2
    pyro.set_rng_seed(sc.CHAINS["base_seed"] + 2)
    mcmc = pyro.infer.MCMC(sc.kernel(), num_samples=sc.CHAINS["num_samples"], warmup_steps=sc.CHAINS["warmup_steps"],
                           disable_progbar=True)
    mcmc.run(sc.vmf_data())
    np.testing.assert_array_equal(got["posterior/mu"][2], mcmc.get_samples()["mu"].numpy())
    assert not np.array_equal(got["posterior/mu"][0], got["posterior/mu"][1])  # independent streams
    assert idata.posterior["mu"].attrs["manifold"] == "Sphere"


# --------------------------------------------------------------------------- one process


def test_single_process_is_plain_svi():
    x = sc.data()[: sc.GLOBAL_BATCH]
    results = []
    for cls in (pyro.infer.SVI, DistributedSVI):
        pyro.clear_param_store()
        vae, optim = sc.stochastic_setup(3)
        svi = cls(vae.model, vae.guide, optim, pyro.infer.Trace_ELBO())
        losses = [svi.step(x.float()) for _ in range(3)]
        results.append((losses, sc.constrained_params()))
    assert results[0][0] == results[1][0]
    for k in results[0][1]:
        assert torch.equal(results[0][1][k], results[1][1][k]), k


def test_argument_errors():
    with pytest.raises(ValueError, match="reduction"):
        DistributedSVI(None, None, None, pyro.infer.Trace_ELBO(), reduction="avg")
    with pytest.raises(ValueError, match="loss"):
        DistributedSVI(None, None, None, object())
    with pytest.raises(ValueError, match="global_batch_size"):
        distributed_loader(torch.zeros(4, 2), 0)
    with pytest.raises(ValueError, match="num_chains"):
        run_chains(sc.kernel, sc.vmf_data(), num_chains=0, num_samples=2)
    loader = distributed_loader(torch.arange(10.0).unsqueeze(-1), 4, shuffle=False)
    assert [b[0].shape[0] for b in loader] == [4, 4]  # drop_last: no short batch
    assert dl.distributed.world_size() == 1 and dl.distributed.rank() == 0


def test_example_script_runs_and_resumes(tmp_path, capsys, monkeypatch):
    # examples/train_vae_distributed.py without torchrun (one process), in this interpreter: one
    # epoch, then a fresh param store resumed from the checkpoint for the second
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_vae_distributed", ROOT / "examples" / "train_vae_distributed.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    threads = torch.get_num_threads()
    ckpt = tmp_path / "vae.pt"
    outs = []
    try:
        for epochs in (1, 2):
            pyro.clear_param_store()
            example.main(["--epochs", str(epochs), "--batch", "256", "--hidden", "32", "--checkpoint", str(ckpt)])
            outs.append(capsys.readouterr().out)
    finally:
        torch.set_num_threads(threads)
    assert "epoch 0:" in outs[0] and "epoch 1:" not in outs[0]
    assert "epoch 1:" in outs[1] and "epoch 0:" not in outs[1]  # resumed after epoch 0
