"""Scenarios of tests/test_distributed.py, run by 2 processes (``python -m tests._dist_scenarios``)
and, for the single-process references, imported by the test."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import pyro_method

import dlmppl as dl
from dlmppl.distributed import DistributedSVI, distributed_loader, run_chains

N, D, GLOBAL_BATCH, EPOCHS = 48, 6, 16, 2
SHUFFLE_SEED = 5
S2 = dl.manifolds.Sphere()


def data(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, D, generator=g, dtype=torch.float64).to(dtype)


class DeltaVAE(dl.models.ManifoldVAE):
    """A Poincaré VAE with learnable curvature and a point-mass guide at the posterior location, plus a
    sphere-valued ``pyro.param``: its ELBO draws no random numbers, so its gradient is exact."""

    @pyro_method
    def model(self, x):
        mu = pyro.param("mu", lambda: torch.tensor([0.6, 0.0, 0.8], dtype=x.dtype), constraint=dl.constraints.manifold(S2))
        pyro.factor("mu_fit", (x[:, :3] @ mu).sum())  # a sum over rows, as the ELBO's data terms
        return super().model(x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            q = self.encode(x)[0]
            pyro.sample("z", dist.Delta(q.loc, event_dim=1))


def exact_setup(init_seed, sgd=False):
    """RiemannianAdam, or RiemannianSGD, whose step is linear in the gradient (a wrong gradient scale shows)."""
    torch.manual_seed(init_seed)
    vae = DeltaVAE(D, latent="poincare", latent_dim=2, hidden=(8,), likelihood="gaussian", obs_scale=None).double()
    optim = dl.inference.RiemannianSGD({"lr": 2e-4}) if sgd else dl.inference.RiemannianAdam({"lr": 0.02})
    return vae, optim


def scaled(fn):
    """``fn`` with its log densities scaled by ``N / len(x)``: the shard's ELBO estimates the whole data set's
    (what a subsampled ``pyro.plate(size=N)`` does), the setting of ``reduction="mean"``."""

    def wrapped(x):
        with pyro.poutine.scale(scale=N / x.shape[0]):
            return fn(x)

    return wrapped


def constrained_params():
    store = pyro.get_param_store()
    return {k: store[k].detach().clone() for k in store.keys()}


def stochastic_setup(seed):
    pyro.set_rng_seed(seed)
    vae = dl.models.ManifoldVAE(D, latent="poincare", latent_dim=2, hidden=(8,), likelihood="gaussian", obs_scale=None)
    optim = dl.inference.RiemannianAdam({"lr": 0.02})
    return vae, optim


def vmf_model(directions):
    mu = pyro.sample("mu", dl.distributions.ManifoldUniform(S2, event_shape=(3,), dtype=directions.dtype))
    kappa = pyro.sample("kappa", dist.Gamma(torch.tensor(2.0, dtype=directions.dtype), 0.2))
    with pyro.plate("data", directions.shape[0]):
        pyro.sample("obs", dl.distributions.VonMisesFisher(mu, kappa), obs=directions)


def vmf_data():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


CHAINS = dict(num_chains=3, num_samples=10, warmup_steps=10, base_seed=7)


def kernel():
    return dl.inference.RiemannianNUTS(vmf_model, max_tree_depth=4)


def train(svi, loader):
    """EPOCHS epochs of ``svi`` over the rank's shard; the step losses."""
    losses = []
    for epoch in range(EPOCHS):
        loader.sampler.set_epoch(epoch)
        for (xb,) in loader:
            losses.append(svi.step(xb))
    return losses


def run(out: Path) -> None:
    r = torch.distributed.get_rank()
    x64 = data()
    # A: exact comparison; each rank builds its model from its own seed (rank 0's is the reference's)
    vae, optim = exact_setup(100 + r)
    svi = DistributedSVI(vae.model, vae.guide, optim, pyro.infer.Trace_ELBO(), module=vae)
    loader = distributed_loader(x64, GLOBAL_BATCH, seed=SHUFFLE_SEED)
    losses = train(svi, loader)
    torch.save({"params": constrained_params(), "losses": losses}, out / f"exact_{r}.pt")

    # A': the same with each shard's ELBO scaled to the data set and the ranks' gradients averaged
    pyro.clear_param_store()
    vae, optim = exact_setup(100 + r, sgd=True)
    svi = DistributedSVI(scaled(vae.model), scaled(vae.guide), optim, pyro.infer.Trace_ELBO(), module=vae,
                         reduction="mean")
    losses = train(svi, loader)
    torch.save({"params": constrained_params(), "losses": losses}, out / f"mean_{r}.pt")

    # B: stochastic ELBO, different noise and data on each rank; checkpoint after 2 steps, resume
    pyro.clear_param_store()
    x32 = data(torch.float32)
    vae, optim = stochastic_setup(200 + r)
    svi = DistributedSVI(vae.model, vae.guide, optim, pyro.infer.Trace_ELBO(), module=vae)
    batches = [b for (b,) in distributed_loader(x32, GLOBAL_BATCH, seed=SHUFFLE_SEED)]
    for t, xb in enumerate(batches):
        svi.step(xb)
        if t == 0:
            svi.save(out / "ckpt.pt")
    full = constrained_params()
    pyro.clear_param_store()
    vae, optim = stochastic_setup(999)  # other initial values, fresh optimiser
    svi = DistributedSVI(vae.model, vae.guide, optim, pyro.infer.Trace_ELBO(), module=vae)
    svi.load(out / "ckpt.pt")
    for xb in batches[svi.num_steps:]:
        svi.step(xb)
    torch.save({"full": full, "resumed": constrained_params(), "num_steps": svi.num_steps}, out / f"stoch_{r}.pt")

    # C: MCMC chains over the ranks
    pyro.clear_param_store()
    idata = run_chains(kernel, vmf_data(), **CHAINS)
    if r == 0:
        np.savez(out / "chains.npz", **flatten(idata))


def flatten(idata) -> dict:
    out = {}
    for group in ("posterior", "sample_stats", "log_likelihood"):
        ds = idata[group]
        for k in ds.data_vars:
            out[f"{group}/{k}"] = np.asarray(ds[k].values)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    a = p.parse_args()
    torch.set_num_threads(1)
    pyro.enable_validation(True)
    torch.distributed.init_process_group("gloo")
    try:
        run(a.out)
    finally:
        torch.distributed.destroy_process_group()
    os._exit(0)
