# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Directional statistics: a Bayesian von Mises–Fisher model on S²
#
# Directions (wind, paleomagnetic poles, normals of surfaces, unit embeddings)
# are points on the sphere S² = {x ∈ ℝ³ : |x| = 1}. The von Mises–Fisher (vMF)
# distribution is the sphere's analogue of an isotropic normal:
#
# $$p(x \mid \mu, \kappa) = \frac{\kappa}{4\pi \sinh \kappa}\, e^{\kappa \mu^\top x},$$
#
# a density with respect to the surface (Riemannian volume) measure, with a
# mean direction μ ∈ S² and a concentration κ > 0 (the spread is roughly
# 1/√κ radians). We put a **uniform prior on μ over the sphere** and a Gamma
# prior on κ, and sample the posterior with `dl.inference.RiemannianNUTS`.
#
# The sampler integrates Hamiltonian dynamics for μ *on the sphere itself*
# (geodesic flow: great circles), so every draw of μ is a unit vector; κ is
# an ordinary positive parameter, which the kernel maps to the real line as
# Pyro's NUTS does. Nothing in the model mentions the sampler.

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch

import dlmppl as dl

SMOKE = os.environ.get("DLMPPL_SMOKE") == "1"
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()  # script, or notebook opened in tutorials/
OUT = Path(os.environ.get("DLMPPL_TUTORIAL_OUT") or HERE / "output" / "01_directional_statistics")
OUT.mkdir(parents=True, exist_ok=True)
N_DATA = 60 if SMOKE else 150
WARMUP, DRAWS = (30, 30) if SMOKE else (300, 300)
torch.set_default_dtype(torch.float64)
pyro.set_rng_seed(0)

# %% [markdown]
# ## Data
#
# We simulate directions around a known mean direction μ* with κ* = 12, so
# that we can compare the posterior with the truth.

# %%
mu_true = torch.tensor([1.0, -0.5, 0.8])
mu_true = mu_true / mu_true.norm()
kappa_true = 12.0
directions = dl.distributions.VonMisesFisher(mu_true, torch.tensor(kappa_true)).sample((N_DATA,))
print("data:", tuple(directions.shape), "unit norms:", bool(torch.allclose(directions.norm(dim=-1), torch.ones(N_DATA))))

# %% [markdown]
# ## Model
#
# `ManifoldUniform(Sphere(), event_shape=(3,))` is the uniform distribution on
# S² (density 1/(4π) w.r.t. area). Its support is the manifold constraint,
# which is how the Riemannian kernels recognise `mu` as a sphere-valued site.


# %%
def model(x):
    mu = pyro.sample("mu", dl.distributions.ManifoldUniform(dl.manifolds.Sphere(), event_shape=(3,)))
    kappa = pyro.sample("kappa", dist.Gamma(torch.tensor(2.0), torch.tensor(0.1)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dl.distributions.VonMisesFisher(mu, kappa), obs=x)


# %% [markdown]
# ## Sampling with Riemannian NUTS
#
# Two chains, so that R-hat can compare them. The step size is adapted during
# warm-up (dual averaging), as is a diagonal mass matrix for κ's
# unconstrained coordinate.

# %%
kernel = dl.inference.RiemannianNUTS(model)
mcmc = pyro.infer.MCMC(kernel, num_samples=DRAWS, warmup_steps=WARMUP, num_chains=2, disable_progbar=SMOKE)
mcmc.run(directions)
samples = mcmc.get_samples()
mu_draws, kappa_draws = samples["mu"], samples["kappa"]
print("every draw of mu on the sphere:", float((mu_draws.norm(dim=-1) - 1).abs().max()) < 1e-8)

# %% [markdown]
# ## Diagnostics with arviz
#
# `to_inference_data` builds an arviz `InferenceData`: the posterior (μ in its
# ambient coordinates, tagged with its manifold), the sampler's statistics
# (divergences, energy, step size, tree depth), the pointwise log-likelihood
# (for `arviz.loo`) and the observed data.
#
# `dl.diagnostics.summary` is manifold-aware: for μ the `mean` column is the
# **Fréchet mean** (the point minimising the mean squared geodesic distance),
# `rms_geodesic` is the RMS geodesic distance to it (not an ambient `sd`), and R-hat/ESS are computed on
# intrinsic coordinates (tangent coordinates at the Fréchet mean and the
# distance to it), where they mean something. Look for R-hat ≈ 1 and
# an ESS of at least a hundred or so per quantity (the run prints the worst
# row of each). Note how the three ambient rows `mu[i]` share one R-hat/ESS:
# they summarise the same point.

# %%
idata = dl.diagnostics.to_inference_data(mcmc)
table = dl.diagnostics.summary(idata)
print(table.to_string(float_format=lambda v: f"{v:.3f}"))
raw = dl.diagnostics.summary(idata, round_to="none")  # unrounded, to test against thresholds
print(f"worst rows: largest R-hat {raw['r_hat'].max():.3f}, smallest bulk ESS {raw['ess_bulk'].min():.0f} "
      f"of {mu_draws.shape[0]} draws", "(fine)" if raw["r_hat"].max() < 1.01 and raw["ess_bulk"].min() >= 100 else
      "(short of R-hat < 1.01 and ESS ≥ 100: run longer chains before trusting the numbers)")
ss = idata.sample_stats
print("divergences:", int(ss["diverging"].values.sum()), " mean acceptance:", round(float(ss["acceptance_rate"].values.mean()), 3))

# %% [markdown]
# ## Posterior versus truth
#
# The Fréchet mean of the μ draws should lie within a few degrees of μ*: with
# n directions the posterior spread of μ is about 1/√(nκ) radians. The κ
# posterior should cover κ* = 12.

# %%
mu_hat = dl.diagnostics.frechet_mean(mu_draws, dl.manifolds.Sphere())
angles = torch.rad2deg(torch.arccos((mu_draws @ mu_true).clamp(-1, 1)))
print(f"Fréchet mean of mu: {mu_hat.numpy().round(3)}, truth {mu_true.numpy().round(3)}")
print(f"angle(Fréchet mean, truth) = {math.degrees(math.acos(float((mu_hat @ mu_true).clamp(-1, 1)))):.2f}°; "
      f"expected posterior spread ≈ {math.degrees(1 / math.sqrt(N_DATA * kappa_true)):.2f}°")
lo, hi = kappa_draws.quantile(0.05).item(), kappa_draws.quantile(0.95).item()
print(f"kappa: posterior mean {kappa_draws.mean().item():.2f}, 90% interval [{lo:.2f}, {hi:.2f}], truth {kappa_true}")

# %% [markdown]
# ## Figures
#
# * `sphere.png`: the data and the posterior draws of μ in a Lambert
#   equal-area projection centred on μ* (areas are preserved, so the density
#   of dots is honest). The draws of μ form a small cloud inside the data.
# * `posterior_vs_truth.png`: the angle between each draw and μ* (should be a
#   few degrees) and the κ posterior with the truth marked.
# * `trace.png`, `rank.png`: per-chain traces and rank histograms; with
#   mixing chains the rank histograms are flat.
# * `energy.png`: marginal energy against energy transitions; similar widths
#   mean the momentum resampling explores the energy levels well (BFMI).

# %%
dl.diagnostics.plot_sphere([directions, mu_draws], labels=["data", "posterior draws of μ"], center=tuple(mu_true.tolist()),
                           title="vMF data and posterior of μ (equal-area)", path=OUT / "sphere.png")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
axes[0].hist(angles.numpy(), bins=30, color="C0")
axes[0].set_xlabel("angle between draw of μ and μ* (degrees)")
axes[1].hist(kappa_draws.numpy(), bins=30, color="C1")
axes[1].axvline(kappa_true, color="k", ls="--", label="truth κ*")
axes[1].set_xlabel("κ")
axes[1].legend()
fig.tight_layout()
fig.savefig(OUT / "posterior_vs_truth.png", dpi=110)
dl.diagnostics.plot_trace(idata, var_names=["kappa"], path=OUT / "trace.png")
dl.diagnostics.plot_rank(idata, var_names=["kappa"], path=OUT / "rank.png")
dl.diagnostics.plot_energy(idata, path=OUT / "energy.png")

# %% [markdown]
# ## The sphere site itself: intrinsic traces and a posterior predictive check
#
# arviz's trace and rank plots know nothing of the sphere: on μ they would
# draw three ambient coordinates of one point. `plot_trace_manifold` and
# `plot_rank_manifold` draw what the manifold R-hat above uses: the tangent
# coordinates of each draw at the Fréchet mean (along the principal geodesic
# directions, `pc0`, `pc1`) and the geodesic distance to it (`dist`).
#
# For a posterior predictive check, `pyro.infer.Predictive` replicates the
# data set from each posterior draw (`poutine.uncondition` makes the observed
# site sample), and `to_inference_data(..., posterior_predictive=...)` adds the
# group, with the sphere recorded on the replicated observations.
# `plot_ppc` then compares observed and replicated directions on the sphere:
# the densities of their geodesic distance to the observed Fréchet mean, and
# the points themselves. A replicated spread that differs from the observed
# one would show a misfit of κ; a shifted centre a misfit of μ.
#
# * `trace_mu.png`, `rank_mu.png`: μ in intrinsic coordinates, per chain.
# * `ppc.png`: the posterior predictive check of the directions.

# %%
pp = pyro.infer.Predictive(pyro.poutine.uncondition(model), posterior_samples=samples,
                           return_sites=["obs"])(directions)
idata = dl.diagnostics.to_inference_data(mcmc, posterior_predictive=pp)
dl.diagnostics.plot_trace_manifold(idata, var_names=["mu"], path=OUT / "trace_mu.png")
dl.diagnostics.plot_rank_manifold(idata, var_names=["mu"], path=OUT / "rank_mu.png")
dl.diagnostics.plot_ppc(idata, var_names="obs", path=OUT / "ppc.png")
ppc = dl.diagnostics.ppc_geodesic_distances(idata, "obs")
print(f"mean geodesic distance to the observed Fréchet mean: observed {ppc['observed'].mean():.3f} rad, "
      f"replicated {ppc['replicated'].mean():.3f} rad (5-95% over replicates "
      f"{np.quantile(ppc['replicated'].mean(1), 0.05):.3f}-{np.quantile(ppc['replicated'].mean(1), 0.95):.3f})")
print("figures written to", OUT)
