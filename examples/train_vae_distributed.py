"""Data-parallel training of a manifold VAE with dlmppl.distributed.

    torchrun --nproc_per_node=2 examples/train_vae_distributed.py --epochs 20 --checkpoint vae.pt
    python examples/train_vae_distributed.py --epochs 20        # the same run in one process

A Poincaré-ball VAE with learnable curvature on scikit-learn's 8×8 digits: every process takes
``--batch / N`` rows of each global batch (a DistributedSampler), the gradients of all parameters
(networks, curvature) are all-reduced before RiemannianAdam's step, so the replicas stay identical;
rank 0 prints the ELBO and writes the checkpoint after every epoch, from which a new launch with
the same ``--checkpoint`` resumes (on the same number of processes to also resume the random streams).
"""

from __future__ import annotations

import argparse
import os
import time

import pyro
import torch

import dlmppl as dl
from dlmppl.distributed import DistributedSVI, distributed_loader


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128, help="global batch size (all processes together)")
    p.add_argument("--latent", default="poincare")
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="file to resume from and to write after every epoch")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    device = dl.distributed.init()  # gloo on CPU, NCCL on GPU; nothing without torchrun
    main_rank = dl.distributed.is_main()
    pyro.set_rng_seed(a.seed + dl.distributed.rank())  # own ELBO noise per rank; parameters come from rank 0

    x, _ = dl.datasets.digits()
    vae = dl.models.ManifoldVAE(x.shape[-1], latent=a.latent, latent_dim=a.latent_dim, hidden=(a.hidden,)).to(device)
    optim = dl.inference.RiemannianAdam({"lr": a.lr})
    svi = DistributedSVI(vae.model, vae.guide, optim, pyro.infer.Trace_ELBO(), module=vae)
    loader = distributed_loader(x, a.batch, seed=a.seed)
    if a.checkpoint and os.path.exists(a.checkpoint):
        svi.load(a.checkpoint, map_location=device)
    steps_per_epoch = len(loader)
    start = svi.num_steps // steps_per_epoch
    for epoch in range(start, a.epochs):
        loader.sampler.set_epoch(epoch)
        t0, total = time.perf_counter(), 0.0
        for (xb,) in loader:
            total += svi.step(xb.to(device))
        dt = time.perf_counter() - t0
        if main_rank:
            kappa = float(vae.curvatures()[0].detach())
            print(f"epoch {epoch}: ELBO/datum {-total / (steps_per_epoch * a.batch):.3f}  κ = {kappa:.3f}  "
                  f"{steps_per_epoch * a.batch / dt:.0f} samples/s", flush=True)
        if a.checkpoint:
            svi.save(a.checkpoint)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
