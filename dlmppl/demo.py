"""dlmppl's main job: a short end-to-end tour (run ``python -m dlmppl.demo``).

1. A manifold posterior by MCMC: the mean direction (on S²) and concentration
   of a von Mises–Fisher sample, with ``RiemannianNUTS`` (two chains), checked
   with manifold-aware R-hat/ESS and arviz, saved as an ``InferenceData``.
2. A small manifold VAE by SVI: a Poincaré-disk VAE with learnable curvature on
   hierarchical (branching-diffusion) data, with the ELBO curve and the latent
   codes drawn on the disk.

Figures and the InferenceData file go to an output folder named at the end
(``--out``, default ``./dlmppl-output``).  ``--quick`` shortens everything.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402

import dlmppl as dl  # noqa: E402
from dlmppl._progress import progress_bar  # noqa: E402
from dlmppl.distributions import ManifoldUniform, VonMisesFisher  # noqa: E402


def vmf_model(directions):
    """Uniform prior on the mean direction, Gamma prior on the concentration."""
    mu = pyro.sample("mu", ManifoldUniform(dl.manifolds.Sphere(), event_shape=(3,), dtype=directions.dtype))
    kappa = pyro.sample("kappa", dist.Gamma(torch.tensor(2.0, dtype=directions.dtype), 0.1))
    with pyro.plate("data", directions.shape[0]):
        pyro.sample("obs", VonMisesFisher(mu, kappa), obs=directions)


def part_mcmc(out: Path, quick: bool):
    print("\n== 1. Bayesian von Mises–Fisher model on S² with RiemannianNUTS ==")
    torch.manual_seed(1)
    mu_true = torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    mu_true = mu_true / mu_true.norm()
    kappa_true = 15.0
    directions = VonMisesFisher(mu_true, torch.tensor(kappa_true, dtype=torch.float64)).sample((200,))
    print(f"data: 200 directions, true mean direction {mu_true.numpy().round(3)}, true κ = {kappa_true}")

    n_warm, n_draw = (50, 50) if quick else (300, 300)
    kernel = dl.inference.RiemannianNUTS(vmf_model)
    mcmc = pyro.infer.MCMC(kernel, num_samples=n_draw, warmup_steps=n_warm, num_chains=2)
    t0 = time.perf_counter()
    mcmc.run(directions)
    print(f"sampling took {time.perf_counter() - t0:.1f} s")
    samples = mcmc.get_samples()
    mu_draws, kappa_draws = samples["mu"], samples["kappa"]

    idata = dl.diagnostics.to_inference_data(mcmc)
    table = dl.diagnostics.summary(idata)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    fm = dl.diagnostics.frechet_mean(mu_draws, dl.manifolds.Sphere())
    angle = torch.arccos((fm @ mu_true).clamp(-1, 1)).item()
    print(f"posterior Fréchet mean of mu: {fm.numpy().round(3)} ({math.degrees(angle):.2f}° from the truth)")
    print(f"posterior mean of κ: {kappa_draws.mean().item():.2f} (90% interval "
          f"{kappa_draws.quantile(0.05).item():.2f}–{kappa_draws.quantile(0.95).item():.2f})")
    ss = idata.sample_stats
    print(f"divergences: {int(ss['diverging'].values.sum())}, mean acceptance: "
          f"{float(ss['acceptance_rate'].values.mean()):.2f}")

    path = out / "vmf_posterior.nc"
    idata.to_netcdf(str(path))
    dl.diagnostics.plot_sphere([directions.numpy(), mu_draws.numpy(), mu_true[None].numpy()],
                               labels=["data", "posterior of mu", "true mu"], colors=["C0", "C1", "red"],
                               s=[8, 8, 400], markers=["o", "o", "+"],
                               center=tuple(mu_true.tolist()), title="vMF posterior on S²",
                               path=out / "vmf_sphere.png")
    dl.diagnostics.plot_trace(idata, var_names=["kappa"], path=out / "vmf_trace_kappa.png")
    # the sphere site in intrinsic coordinates: tangent coordinates at the Fréchet mean and the distance to it
    dl.diagnostics.plot_trace_manifold(idata, var_names=["mu"], path=out / "vmf_trace_mu.png")
    return path


def part_vae(out: Path, quick: bool):
    print("\n== 2. Poincaré-disk VAE with learnable curvature on hierarchical data (SVI) ==")
    pyro.clear_param_store()
    torch.manual_seed(0)
    # a binary tree of depth 4 grown by a branching diffusion in R^20; y = (depth, node id)
    x, y = dl.datasets.branching_diffusion(depth=4, dim=20, n_siblings=10)
    vae = dl.models.ManifoldVAE(x.shape[-1], latent="poincare", latent_dim=2, hidden=(64,),
                                likelihood="gaussian", obs_scale=None)
    optim = dl.inference.RiemannianAdam({"lr": 3e-3})
    svi = pyro.infer.SVI(vae.model, vae.guide, optim, pyro.infer.Trace_ELBO())
    steps = 60 if quick else 1500
    losses = []
    for _ in progress_bar(range(steps), desc="SVI", mininterval=1.0):
        losses.append(svi.step(x) / x.shape[0])
    c = vae.curvatures()[0].item()
    print(f"final ELBO per point: {-losses[-1]:.3f}; learned curvature κ = {c:.3f}")
    with torch.no_grad():
        z = vae.encode(x)[0].loc  # posterior location of each code, on the disk
        ball = dl.manifolds.PoincareBall(-c)
        # one Fréchet mean per tree node; the tree's edges drawn as hyperbolic geodesics
        nodes = y[:, 1].unique()
        centre = {int(i): dl.geometry.frechet_mean(z[y[:, 1] == i].double(), ball) for i in nodes}
        edges = [(centre[(i - 1) // 2].numpy(), centre[i].numpy()) for i in centre if i > 0 and (i - 1) // 2 in centre]
    dl.diagnostics.plot_elbo(losses, path=out / "vae_elbo.png")
    dl.diagnostics.plot_poincare_disk(z.numpy(), c=-c, labels=y[:, 0].numpy(), geodesics=edges, legend_title="tree depth",
                                      title="latent codes by tree depth; tree edges as geodesics",
                                      path=out / "vae_poincare_latents.png")

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("DLMPPL_OUT", "dlmppl-output"))
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pyro.set_rng_seed(0)
    nc = part_mcmc(out, args.quick)
    part_vae(out, args.quick)
    print(f"\nDone in {time.perf_counter() - t0:.0f} s. Figures and the InferenceData ({nc.name}) are in {out}")
    return out


if __name__ == "__main__":
    main()
