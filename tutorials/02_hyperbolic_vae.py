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
# # 2. A hyperbolic VAE on hierarchical data
#
# Trees do not fit in Euclidean space: the number of nodes within distance r
# of the root grows exponentially in r, the volume of a Euclidean ball only
# polynomially. Hyperbolic space has exponential volume growth, so a tree
# embeds in the **Poincaré disk** with little distortion: the root near the
# centre, the leaves near the boundary, siblings close together and cousins
# far apart (the geodesic between two leaves bends through their common
# ancestor).
#
# We train two variational autoencoders with 2-D latent spaces on the same
# data, identical except for the latent geometry:
#
# * `ManifoldVAE(..., latent="euclidean")`: Gaussian prior and posterior in ℝ²;
# * `ManifoldVAE(..., latent="poincare")`: wrapped normal prior and posterior
#   on the Poincaré disk of curvature −c, with c learned.
#
# Both use `decoder="distance"`: the decoder's first layer is the geodesic
# distances from z to 16 learned anchor points (in the spirit of the
# gyroplane layer of Mathieu et al.), then an MLP. The latent geometry then
# shapes what the decoder can express. With a plain MLP on the coordinates
# (`decoder="mlp"`), a flexible decoder can bend any 2-D layout, and on this
# data the geometry matters much less (pass `decoder="mlp"` to `train` below
# to see it on your own run).
#
# The data are noisy observations of the nodes of a tree grown by a branching
# diffusion in ℝ⁵⁰ (Mathieu et al. 2019, "Continuous hierarchical
# representations with Poincaré VAEs"). We compare the models by their
# importance-weighted (IWAE) estimate of the held-out log-likelihood and look
# at the latent codes.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

import dlmppl as dl

SMOKE = os.environ.get("DLMPPL_SMOKE") == "1"
QUICK = os.environ.get("DLMPPL_QUICK") == "1"  # a third of the training steps: the same pictures, less converged
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()  # script, or notebook opened in tutorials/
OUT = Path(os.environ.get("DLMPPL_TUTORIAL_OUT") or HERE / "output" / "02_hyperbolic_vae")
OUT.mkdir(parents=True, exist_ok=True)
DEPTH = 3 if SMOKE else 5
STEPS = 30 if SMOKE else (1000 if QUICK else 3000)
PARTICLES = 8 if SMOKE else (100 if QUICK else 500)
pyro.set_rng_seed(0)

# %% [markdown]
# ## Data: a branching diffusion
#
# Each of the 2^(depth+1) − 1 nodes is observed several times with small
# noise; `y[:, 0]` is a node's depth and `y[:, 1]` its index (breadth-first,
# so the parent of node i is (i − 1) // 2). We hold out one observation in five.

# %%
x, y = dl.datasets.branching_diffusion(depth=DEPTH, branching=2, dim=50, n_siblings=10)
perm = torch.randperm(x.shape[0])
n_test = x.shape[0] // 5
idx_test, idx_train = perm[:n_test], perm[n_test:]
x_train, x_test = x[idx_train], x[idx_test]
print(f"{x.shape[0]} observations of {int(y[:, 1].max()) + 1} nodes in R^{x.shape[1]}; train {len(idx_train)}, test {n_test}")

# %% [markdown]
# ## Training
#
# Both models are trained by SVI with `dl.inference.RiemannianAdam`: the
# network weights take ordinary Adam steps, and any parameter that lives on a
# manifold (here none but the learnable curvature, which is a positive
# scalar) would be stepped along its manifold. The loss is the negative ELBO
# per observation.


# %%
def train(latent):
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    vae = dl.models.ManifoldVAE(x.shape[1], latent=latent, latent_dim=2, hidden=(64,), likelihood="gaussian",
                                obs_scale=None, decoder="distance")
    svi = pyro.infer.SVI(vae.model, vae.guide, dl.inference.RiemannianAdam({"lr": 3e-3}), pyro.infer.Trace_ELBO())
    losses = [svi.step(x_train) / len(idx_train) for _ in range(STEPS)]
    # keep the trained parameters with the model (the param store is cleared for the next one)
    return vae, losses


vae_euc, losses_euc = train("euclidean")
vae_hyp, losses_hyp = train("poincare")
c = -float(vae_hyp.curvatures()[0].detach())
print(f"final -ELBO per point: euclidean {losses_euc[-1]:.2f}, poincaré {losses_hyp[-1]:.2f}; learned curvature -c = {-c:.3f}")

# %% [markdown]
# ## Held-out log-likelihood (IWAE)
#
# `vae.log_marginal(x, num_particles=K)` is the IWAE bound
# log (1/K) Σ_k p(x, z_k) / q(z_k | x), which tightens to log p(x) as K grows
# (Burda et al. 2016). Higher is better. The run prints both estimates, the
# learned curvature, and which model the held-out data favour; the smoke
# and quick settings train too briefly for the gap to mean much.

# %%
with torch.no_grad():
    ll_euc = vae_euc.log_marginal(x_test, num_particles=PARTICLES).mean().item()
    ll_hyp = vae_hyp.log_marginal(x_test, num_particles=PARTICLES).mean().item()
print(f"held-out IWAE log p(x) per point (K={PARTICLES}): euclidean {ll_euc:.2f}, poincaré {ll_hyp:.2f}, "
      f"difference {ll_hyp - ll_euc:+.2f}")
print("verdict of this run:", "the Poincaré VAE fits the held-out tree better" if ll_hyp > ll_euc
      else "the Euclidean VAE fits the held-out tree at least as well")

# %% [markdown]
# ## Latent codes
#
# We encode every observation (posterior location, grey) and draw the tree:
# each node is placed at the Fréchet mean of its observations' codes
# (coloured by depth, legend), and each
# parent–child edge is drawn as a **geodesic** of the disk (an arc of a
# circle orthogonal to the boundary). What to look for: in the Poincaré disk,
# the root near the centre, depth increasing towards the boundary, and the
# two subtrees of each node in separate wedges; in the Euclidean plane the
# deeper levels crowd together.

# %%
def codes(vae, x):
    # posterior location: the wrapped normal on the disk has `loc`, the Euclidean Normal is wrapped in Independent
    q = vae.encode(x)[0]
    return (q.loc if hasattr(q, "loc") else q.mean).detach()


with torch.no_grad():
    z_hyp, z_euc = codes(vae_hyp, x), codes(vae_euc, x)
M_hyp = vae_hyp.components[0].manifold
nodes = y[:, 1].unique()
with torch.no_grad():
    centre_hyp = torch.stack([dl.geometry.frechet_mean(z_hyp[y[:, 1] == i], M_hyp) for i in nodes])
centre_euc = torch.stack([z_euc[y[:, 1] == i].mean(0) for i in nodes])
edges = [(int(i), int((i - 1) // 2)) for i in nodes if i > 0]

node_depth = torch.stack([y[y[:, 1] == i, 0][0] for i in nodes]).numpy()
fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
dl.diagnostics.plot_poincare_disk(z_hyp, c=c, ax=axes[0], s=4, alpha=0.3, colors="0.6",
                                  title=f"Poincaré VAE (curvature {-c:.2f})")
dl.diagnostics.plot_poincare_disk(centre_hyp, c=c, edges=edges, ax=axes[0], s=18, labels=node_depth, alpha=1.0)
axes[1].scatter(z_euc[:, 0], z_euc[:, 1], color="0.6", s=4, alpha=0.3)
for i, j in edges:
    axes[1].plot(*zip(centre_euc[i].tolist(), centre_euc[j].tolist(), strict=True), color="0.5", lw=0.8)
axes[1].scatter(centre_euc[:, 0], centre_euc[:, 1], c=node_depth, s=18)
axes[1].set_aspect("equal")
axes[1].set_title("Euclidean VAE")
fig.tight_layout()
fig.savefig(OUT / "latents.png", dpi=110)

# %% [markdown]
# The training curves: both should flatten; the gap between their ends
# is (up to the ELBO's slack and the train/test split) the gap in the IWAE
# estimates above.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), sharey=True)
dl.diagnostics.plot_elbo(losses_euc, ax=axes[0], title="Euclidean VAE: −ELBO per point")
dl.diagnostics.plot_elbo(losses_hyp, ax=axes[1], title="Poincaré VAE: −ELBO per point")
fig.savefig(OUT / "elbo.png", dpi=110, bbox_inches="tight")
print("figures written to", OUT)
