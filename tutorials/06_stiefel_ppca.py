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
# # 6. Bayesian PCA on the Stiefel manifold
#
# Probabilistic PCA (Tipping & Bishop 1999) models data x ∈ ℝⁿ as
#
# $$x_i \sim \mathcal N\big(0,\; W \operatorname{diag}(\lambda) W^\top + \sigma^2 I_n\big),$$
#
# with p principal directions, the columns of W. Asking W to be
# **orthonormal**, W ∈ V_p(ℝⁿ) = {W ∈ ℝ^{n×p} : WᵀW = I} (the Stiefel
# manifold), separates directions (W) from variances (λ) and removes the
# scale ambiguity of ordinary PPCA. With a uniform prior on the Stiefel
# manifold and a Riemannian HMC sampler whose trajectories stay on it (the
# geodesic flow of Byrne & Girolami 2013), the posterior over principal
# *subspaces* comes out directly.
#
# Two symmetries remain, and a sampler must be read with them in mind:
#
# * **signs**: W diag(±1) gives the same covariance, so the posterior has
#   2^p modes of equal mass; one chain stays near one of them;
# * **rotations**: when two variances are equal, W R for any p×p rotation R
#   gives the same covariance, and the posterior is a continuum over R.
#
# What *is* identified is the subspace span(W): we measure it by the
# **principal angles** between span(W) and the true subspace (the arccos of
# the singular values of W*ᵀW), which are invariant to both symmetries.

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
OUT = Path(os.environ.get("DLMPPL_TUTORIAL_OUT") or HERE / "output" / "06_stiefel_ppca")
OUT.mkdir(parents=True, exist_ok=True)
N_DIM, P, N_OBS = 8, 2, 100
WARMUP, DRAWS = (5, 5) if SMOKE else (150, 200)
CHAINS = 2 if SMOKE else 4
TRAJ = 0.2 if SMOKE else 0.5
torch.set_default_dtype(torch.float64)
pyro.set_rng_seed(0)

# %% [markdown]
# ## Data
#
# A random 2-dimensional subspace of ℝ⁸ with variances λ* = (9, 4) along its
# two directions and isotropic noise σ* = 0.5.

# %%
W_true = dl.distributions.ManifoldUniform(dl.manifolds.Stiefel(), event_shape=(N_DIM, P)).sample()
lam_true = torch.tensor([9.0, 4.0])
sigma_true = 0.5
cov_true = W_true @ torch.diag(lam_true) @ W_true.T + sigma_true**2 * torch.eye(N_DIM)
x = dist.MultivariateNormal(torch.zeros(N_DIM), cov_true).sample((N_OBS,))
print("W* is orthonormal:", bool(torch.allclose(W_true.T @ W_true, torch.eye(P))))


# %% [markdown]
# ## Model
#
# Uniform prior on V_2(ℝ⁸), log-normal priors on the variances, a half-normal
# prior on the noise scale; the latent z's are integrated out (the marginal
# covariance above). With `shared_variance=True` both directions get the same
# λ: the model whose posterior is rotation-invariant.


# %%
def ppca(x, shared_variance=False):
    W = pyro.sample("W", dl.distributions.ManifoldUniform(dl.manifolds.Stiefel(), event_shape=(N_DIM, P)))
    if shared_variance:
        lam = pyro.sample("lam", dist.LogNormal(1.0, 1.5)).expand(P)
    else:
        lam = pyro.sample("lam", dist.LogNormal(1.0, 1.5).expand([P]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    cov = W @ torch.diag_embed(lam) @ W.T + sigma**2 * torch.eye(N_DIM)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.MultivariateNormal(torch.zeros(N_DIM), covariance_matrix=cov), obs=x)


# %% [markdown]
# ## Sampling with Riemannian HMC
#
# `RiemannianHMC` finds the Stiefel site from its support: W moves along
# Stiefel geodesics (momenta in the tangent space WᵀV + VᵀW = 0), λ and σ in
# their unconstrained coordinates. Each chain starts from its own prior draw
# of W, so different chains may settle in different sign modes.
#
# As in Pyro's `HMC`, the number of leapfrog steps is `trajectory_length /
# step_size`, the step size being adapted during warm-up. The posterior of W
# is concentrated (a few degrees wide with 100 observations), which forces
# small steps, so we use a trajectory of length 0.5 (the run prints the
# adapted step size and the leapfrog steps per trajectory); λ and σ, whose coordinates are whitened by the adapted mass
# matrix, would prefer longer ones: their ESS is the price.


# %%
def run(shared):
    kernel = dl.inference.RiemannianHMC(ppca, trajectory_length=TRAJ, target_accept_prob=0.8)
    mcmc = pyro.infer.MCMC(kernel, num_samples=DRAWS, warmup_steps=WARMUP, num_chains=CHAINS, disable_progbar=SMOKE)
    mcmc.run(x, shared_variance=shared)
    return mcmc


def principal_angles(W):
    """Principal angles (degrees) between span(W) and span(W*): W (..., n, p) → (..., p)."""
    s = torch.linalg.svdvals(W_true.T @ W).clamp(max=1.0)
    return torch.rad2deg(torch.arccos(s)).flip(-1)


mcmc = run(shared=False)
W_draws = mcmc.get_samples(group_by_chain=True)["W"]  # (chain, draw, n, p)
idata = dl.diagnostics.to_inference_data(mcmc)
print("max deviation of a draw from WᵀW = I:", float((W_draws.transpose(-1, -2) @ W_draws - torch.eye(P)).abs().max()))
angles = principal_angles(W_draws)
print("principal angles to the true subspace (deg), posterior mean:", angles.mean((0, 1)).numpy().round(2))
print("lambda posterior mean (sorted per draw):", mcmc.get_samples()["lam"].sort(-1, descending=True).values.mean(0).numpy().round(2),
      "truth", lam_true.numpy(),
      "; sigma:", round(float(mcmc.get_samples()["sigma"].mean()), 3), "truth", sigma_true)
print("divergences:", int(idata.sample_stats["diverging"].values.sum()),
      "; adapted step size per chain:", idata.sample_stats["step_size"].values[:, -1].round(4),
      "; leapfrog steps per trajectory:", int(idata.sample_stats["n_steps"].values.max()))
print(dl.diagnostics.summary(idata, var_names=["lam", "sigma"]).to_string(float_format=lambda t: f"{t:.3f}"))

# %% [markdown]
# ## Signs: the modes of the posterior over W
#
# The columns are not labelled either: swapping them together with the λ's
# gives the same covariance (p! more modes). We relabel each draw by sorting
# its columns by decreasing λ, the usual fix. After that, the cosine
# ⟨w_j, w_j*⟩ between the j-th sampled direction and the true one is
# ±|cos|: the sign is not identified. Per chain it sits near +1 or −1,
# and chains started in different places can disagree. This is why R-hat on
# the raw entries of W can be large while the subspace (the principal
# angles, left panel) is perfectly well determined: report functions of W
# that respect the symmetry. The same holds for λ: when different chains put
# the larger variance in different columns (label switching), `lam[0]` and
# `lam[1]` get a large R-hat in the summary above (it shows whether this
# run's chains did); sorted per draw, they recover λ* (printed above).

# %%
lam_draws = mcmc.get_samples(group_by_chain=True)["lam"]  # (chain, draw, p)
order = lam_draws.argsort(-1, descending=True)
W_sorted = torch.gather(W_draws, -1, order.unsqueeze(-2).expand_as(W_draws))
cos = torch.einsum("np,cdnp->cdp", W_true, W_sorted)  # (chain, draw, p)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for j in range(P):
    axes[0].hist(angles[..., j].reshape(-1).numpy(), bins=30, alpha=0.6, label=("largest", "smallest")[j] if P == 2 else f"angle {j + 1}")
axes[0].set_xlabel("principal angle to span(W*) (degrees)")
axes[0].legend()
axes[0].set_title("the subspace is identified")
for c in range(W_draws.shape[0]):
    axes[1].plot(cos[c, :, 0].numpy(), lw=0.8, label=f"chain {c}")
axes[1].set_ylim(-1.05, 1.05)
axes[1].set_xlabel("draw")
axes[1].set_ylabel("⟨w₁, w₁*⟩")
axes[1].set_title("sign of the first direction, per chain")
axes[1].legend(fontsize=7)
for c in range(W_draws.shape[0]):
    axes[2].scatter(cos[c, :, 0].numpy(), cos[c, :, 1].numpy(), s=4, color=f"C{c}")
axes[2].set_xlim(-1.05, 1.05)
axes[2].set_ylim(-1.05, 1.05)
axes[2].set_xlabel("⟨w₁, w₁*⟩")
axes[2].set_ylabel("⟨w₂, w₂*⟩")
axes[2].set_title("sign modes visited (colour: chain)")
fig.tight_layout()
fig.savefig(OUT / "subspace_and_signs.png", dpi=110)

# %% [markdown]
# ## Rotations: equal variances
#
# With one shared variance λ the likelihood depends on W only through WWᵀ,
# which is invariant under W → WR for every R ∈ O(2). Writing the sampled
# basis in the true one, W*ᵀW ≈ R(θ) (up to a reflection), the angle θ is not
# identified: its draws should spread over the circle, while the principal
# angles stay as small as before. In practice each chain drifts slowly
# along the orbit (a flat direction of the posterior, explored by a random
# walk) and different chains sit at different θ (the run prints where each
# chain's θ sits). R-hat on θ (or on the raw entries of W) would be huge,
# while the largest principal angle stays small (printed too). θ lives on a
# circle: its traces are drawn without the vertical jumps of the ±180° wrap.

# %%
mcmc_rot = run(shared=True)
W_rot = mcmc_rot.get_samples(group_by_chain=True)["W"]
M = W_true.T @ W_rot  # (chain, draw, 2, 2) ≈ rotation or reflection
theta = torch.rad2deg(torch.atan2(M[..., 1, 0], M[..., 0, 0]))
angles_rot = principal_angles(W_rot)
print("shared variance: principal angles (deg), posterior mean:", angles_rot.mean((0, 1)).numpy().round(2),
      f"; in-subspace rotation θ: circular spread (1 − |mean e^iθ|) = "
      f"{1 - abs(complex(torch.cos(torch.deg2rad(theta)).mean(), torch.sin(torch.deg2rad(theta)).mean())):.2f}")
for c in range(W_rot.shape[0]):
    th = torch.deg2rad(theta[c])
    print(f"  chain {c}: circular mean of θ {math.degrees(math.atan2(float(th.sin().mean()), float(th.cos().mean()))):7.1f}°")
print(f"largest principal angle (shared variance): median {float(angles_rot[..., 0].median()):.1f}°, "
      f"99th percentile {float(angles_rot[..., 0].quantile(0.99)):.1f}°, max {float(angles_rot[..., 0].max()):.1f}°")


def break_at_wrap(y, period=360.0):
    """(x, y) of a trace with NaN between consecutive draws that cross the ±period/2 wrap."""
    y = y.numpy()
    jumps = np.flatnonzero(np.abs(np.diff(y)) > period / 2) + 1
    return np.insert(np.arange(len(y), dtype=float), jumps, np.nan), np.insert(y, jumps, np.nan)


fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
for c in range(W_rot.shape[0]):
    axes[0].plot(*break_at_wrap(theta[c]), lw=0.8, label=f"chain {c}")
axes[0].set_ylim(-180, 180)
axes[0].set_xlabel("draw")
axes[0].set_ylabel("θ (degrees)")
axes[0].set_title("rotation within the subspace: not identified")
axes[0].legend(fontsize=7)
axes[1].hist(angles_rot[..., 0].reshape(-1).numpy(), bins=30, color="C2")  # angles[..., 0] is the largest
axes[1].set_xlabel("largest principal angle (degrees)")
axes[1].set_title("…while the subspace still is")
fig.tight_layout()
fig.savefig(OUT / "rotation_nonidentifiability.png", dpi=110)
print(f"(principal angles are invariant: max over both runs {float(max(angles.max(), angles_rot.max())):.1f}° "
      f"vs {math.degrees(math.acos(0)):.0f}° for an orthogonal subspace)")
print("figures written to", OUT)
