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
# # 4. Regularised latent spaces: optimal transport and topology
#
# `dl.losses` has differentiable losses that compare point clouds by their
# **geometry** (optimal transport with a geodesic ground cost) and by their
# **topology** (persistent homology of the Vietoris–Rips filtration). Each is
# an ordinary scalar tensor, and `dl.losses.factor(name, loss, weight)` adds
# it to a Pyro model (or guide) as a `pyro.factor` term, so the SVI loss
# becomes −ELBO + weight · loss. Three small experiments:
#
# 1. **OT on the sphere**: move a cloud of points on S² onto a target
#    distribution by minimising the Wasserstein cost with the *great-circle*
#    ground distance, the points staying on the sphere (SVI with
#    `RiemannianAdam` on a manifold-constrained `pyro.param`).
# 2. **A target topology**: `topology_target_loss(z, betti={1: 1})` pushes a
#    shapeless blob to have exactly one persistent loop.
# 3. **A topological autoencoder** (Moor et al. 2020): a VAE on a noisy
#    circle in ℝ¹⁰, with and without `topological(x, z)`, the loss that
#    makes the latent codes keep the persistence pairs of the data: a recipe
#    (the weight from the ELBO's magnitude, `suggest_weight`; the effect
#    measured on held-out points) and when the factor does not help.

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

import dlmppl as dl

SMOKE = os.environ.get("DLMPPL_SMOKE") == "1"
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()  # script, or notebook opened in tutorials/
OUT = Path(os.environ.get("DLMPPL_TUTORIAL_OUT") or HERE / "output" / "04_regularized_latents")
OUT.mkdir(parents=True, exist_ok=True)
OT_STEPS = 10 if SMOKE else 400
TOPO_STEPS = 10 if SMOKE else 400
VAE_STEPS = 10 if SMOKE else 600
torch.set_default_dtype(torch.float64)
pyro.set_rng_seed(0)

# %% [markdown]
# ## 1. Optimal transport on S²
#
# The target is a sample from a mixture of three von Mises–Fisher clusters.
# The cloud starts as a tight cap around the north pole. The model has no random
# variables at all, only a parameter on the sphere and a factor,
# `−W₂²(cloud, target)` with the ground cost `d(x, y)²`, `d` the
# great-circle distance; the guide is empty. With the manifold constraint,
# `RiemannianAdam` steps the points along the sphere (no renormalising by
# hand). The cloud has a third as many points as the target sample, so the
# cost cannot reach 0: the minimiser is an optimal *quantisation* of the
# target (each cloud point carries the mass of three target points). Look at
# the figure: the points split into three groups in the right proportions
# (1/2, 3/10, 1/5) and spread over each cluster.

# %%
S2 = dl.manifolds.Sphere()
centres = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.3], [-0.5, 0.8, 0.0], [0.0, -0.7, -0.7]]), dim=-1)
n_pts = 60 if SMOKE else 150
which = torch.multinomial(torch.tensor([0.5, 0.3, 0.2]), n_pts, replacement=True)
target = dl.distributions.VonMisesFisher(centres[which], torch.tensor(20.0)).sample()
init = dl.distributions.VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(50.0)).sample((n_pts // 3,))


def ot_model():
    z = pyro.param("cloud", init.clone(), constraint=dl.constraints.manifold(S2))
    dl.losses.factor("ot", dl.losses.wasserstein(z, target, manifold=S2, p=2))


def empty_guide():
    pass


pyro.clear_param_store()
svi = pyro.infer.SVI(ot_model, empty_guide, dl.inference.RiemannianAdam({"lr": 0.02}), pyro.infer.Trace_ELBO())
ot_losses = [svi.step() for _ in range(OT_STEPS)]
cloud = pyro.param("cloud").detach()
print(f"W2² (great-circle cost): start {ot_losses[0]:.3f} → end {ot_losses[-1]:.3f}; max |‖z‖−1| = {float((cloud.norm(dim=-1) - 1).abs().max()):.1e}")
fig = plt.figure(figsize=(13, 4.2))
ax1, ax2, ax3 = (fig.add_subplot(1, 3, k) for k in (1, 2, 3))
dl.diagnostics.plot_sphere([target, init], labels=["target", "start"], ax=ax1, title="before")
dl.diagnostics.plot_sphere([target, cloud], labels=["target", "after OT"], ax=ax2, title="after minimising W₂²")
dl.diagnostics.plot_elbo(ot_losses, ax=ax3, ylabel="W₂² (great-circle cost)", title="the SVI loss")
fig.tight_layout()
fig.savefig(OUT / "ot_sphere.png", dpi=110, bbox_inches="tight")

# %% [markdown]
# ## 2. Asking for one loop: `topology_target_loss`
#
# `persistence(z)` returns the Rips persistence diagrams (birth, death) of a
# cloud, differentiable in the points: each bar's ends are distances between
# two points, so gradients move exactly those points. The target loss rewards
# the persistence of the most persistent H1 bar and penalises all others
# (divided by the diameter, so shrinking or inflating the cloud does not
# help). We minimise it directly with a torch optimiser. Look for: one H1
# point far from the diagonal after training, the others close to it.

# %%
torch.manual_seed(1)
z0 = torch.randn(80 if SMOKE else 120, 2)
z = z0.clone().requires_grad_(True)
opt = torch.optim.Adam([z], lr=0.02)
topo_losses = []
for _ in range(TOPO_STEPS):
    opt.zero_grad()
    loss = dl.losses.topology_target_loss(z, betti={1: 1})
    loss.backward()
    opt.step()
    topo_losses.append(loss.item())
with torch.no_grad():
    dg_before = dl.losses.persistence(z0, maxdim=1)[1]
    dg_after = dl.losses.persistence(z.detach(), maxdim=1)[1]


def top_bars(dg, k=2):
    return sorted((dg[:, 1] - dg[:, 0]).tolist(), reverse=True)[:k]


print("two largest H1 persistences before:", [round(v, 3) for v in top_bars(dg_before)],
      " after:", [round(v, 3) for v in top_bars(dg_after)])
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
axes[0].scatter(z0[:, 0], z0[:, 1], s=8, label="start")
axes[0].scatter(z.detach()[:, 0], z.detach()[:, 1], s=8, label="after")
axes[0].set_aspect("equal")
axes[0].legend()
axes[0].set_title("point cloud")
for dg, name in ((dg_before, "before"), (dg_after, "after")):
    axes[1].scatter(dg[:, 0], dg[:, 1], s=14, label=name)
hi = float(torch.cat([dg_before, dg_after]).max()) if len(dg_before) + len(dg_after) else 1.0
axes[1].plot([0, hi], [0, hi], color="k", lw=0.8)
axes[1].set_xlabel("birth")
axes[1].set_ylabel("death")
axes[1].set_title("H1 persistence diagram")
axes[1].legend()
axes[2].plot(topo_losses)
axes[2].set_title("topology_target_loss")
fig.tight_layout()
fig.savefig(OUT / "target_topology.png", dpi=110)

# %% [markdown]
# ## 3. A topological VAE on a noisy circle, judged on held-out points
#
# Data: 128 training points on a circle of radius 1 in the first two
# coordinates of ℝ¹⁰, with noise in all ten, and 128 **fresh** points of the
# same circle that are never trained on. The VAE has a 2-D Gaussian latent
# space and a Gaussian likelihood with a fixed, generous observation scale
# (σ = 1, as large as the circle): the reconstruction term is then too weak
# to resist the KL term, which pulls every code to the origin, and the plain
# VAE suffers **posterior collapse**: the codes pile up near 0 and the loop
# is lost. We regularise the encoder with the topological autoencoder loss,
# inside the guide, after `z` is sampled:
# `dl.losses.factor("topo", dl.losses.topological(x, z, normalize=True), weight, in_guide=True)`.
# The loss compares the data's and the codes' distance matrices on the edges
# that create and destroy the persistent features (H0 and H1) of either.
#
# **The recipe.**
#
# 1. *Choose the weight by the ELBO's magnitude.* Pyro's `Trace_ELBO` of a
#    batch is a **sum** over its points (|ELBO| ≈ N × nats per point), while
#    the topological loss is one number per batch, so a bare weight means
#    nothing until it is compared with both. At initialisation, measure the
#    plain SVI loss of a batch and the topological loss of the guide's codes,
#    and take `w = dl.losses.suggest_weight(elbo, loss, share=1.0)` =
#    share · |ELBO| / loss: the factor then starts as large as the ELBO
#    itself. In `benchmarks/bench_topofactor.py` (benchmarks/RESULTS.md,
#    section "topofactor") a share of 1 is where the factor starts to keep
#    the loop; a tenth of it did not keep it, ten times more brought the loop
#    to the data's size at a higher −ELBO.
# 2. *Train* with the factor in the guide, from the same initialisation as
#    the plain VAE.
# 3. *Judge on held-out data*: encode the fresh points with the trained
#    encoder and compare, with and without the factor, the **loop score**
#    (the largest H1 persistence of the codes divided by their diameter; the
#    data's own is printed) and the **held-out topological loss** between
#    the fresh points and their codes. The run prints them, the training
#    time of both, and its own verdict.
#
# Look at the latent plots of the held-out codes coloured by the angle on
# the circle: with the factor the codes should keep a loop of about the
# data's size with the angle going round once, in order; without it they
# collapse to a small blob near the origin (note the axis scales).
#
# **When the factor does not help** (measured in `bench_topofactor`; its
# results are in benchmarks/RESULTS.md): when the reconstruction term
# already keeps the data's topology (the same circle with σ = 0.1: the plain
# VAE keeps the loop by itself, the factor changes neither held-out number
# and only multiplies the training time), and when the topology of the data
# *in the metric the loss uses* is not the structure you care about (8×8
# digits with an S² latent: the Rips persistence of Euclidean pixel distances
# is not the digits' class structure; no weight lowered the held-out
# topological loss or raised the held-out 5-NN accuracy of the codes, and
# from the rule's weight up both got slightly worse). Each training step
# also pays for Rips persistence pairings of the batch and of its codes: the
# run prints what that cost here.

# %%
x_c, u_c = dl.datasets.noisy_sphere(n=128, dim=1, ambient=10, noise=0.05)
x_te, u_te = dl.datasets.noisy_sphere(n=128, dim=1, ambient=10, noise=0.05)  # held out: never trained on
angle_te = torch.atan2(u_te[:, 1], u_te[:, 0])


def make_vae():
    pyro.clear_param_store()
    pyro.set_rng_seed(2)  # the same initialisation for every weight
    return dl.models.ManifoldVAE(10, latent="euclidean", latent_dim=2, hidden=(64,), likelihood="gaussian", obs_scale=1.0)


def train_vae(weight):
    vae = make_vae()

    def guide(x):
        (zz,) = vae.guide(x)
        if weight > 0:
            dl.losses.factor("topo", dl.losses.topological(x, zz, normalize=True), weight=weight, in_guide=True)

    svi = pyro.infer.SVI(vae.model, guide, dl.inference.RiemannianAdam({"lr": 3e-3}), pyro.infer.Trace_ELBO())
    t0 = time.perf_counter()
    for _ in range(VAE_STEPS):
        svi.step(x_c)
    return vae, time.perf_counter() - t0


def loop_score(zz):
    """Persistence of the largest H1 bar, relative to the cloud's diameter."""
    dg = dl.losses.persistence(zz, maxdim=1)[1]
    diam = torch.cdist(zz, zz).max()
    return float((dg[:, 1] - dg[:, 0]).max() / diam) if len(dg) else 0.0


# the weight rule, at initialisation: the factor starts at `share` × |ELBO of the batch|
vae0 = make_vae()
svi0 = pyro.infer.SVI(vae0.model, vae0.guide, dl.inference.RiemannianAdam({"lr": 3e-3}), pyro.infer.Trace_ELBO())
elbo0 = [svi0.evaluate_loss(x_c) for _ in range(4)]
with torch.no_grad():
    topo0 = [dl.losses.topological(x_c, vae0.encode(x_c)[0].sample(), normalize=True) for _ in range(4)]
weight = dl.losses.suggest_weight(elbo0, topo0, share=1.0)
print(f"at initialisation: |−ELBO| of the batch {sum(abs(e) for e in elbo0) / 4:.0f} "
      f"({sum(abs(e) for e in elbo0) / 4 / len(x_c):.1f} nats per point), topological loss "
      f"{float(sum(topo0)) / 4:.1f}; suggest_weight(share=1) = {weight:.1f}")

vae_plain, t_plain = train_vae(0.0)
vae_topo, t_topo = train_vae(weight)
rows = {}
for name, vae in (("plain VAE", vae_plain), (f"VAE + factor (w = {weight:.1f})", vae_topo)):
    with torch.no_grad():
        z_tr, z_te = vae.codes(x_c)[0], vae.codes(x_te)[0]
        rows[name] = dict(z_te=z_te, train=loop_score(z_tr), held_out=loop_score(z_te),
                          topo=float(dl.losses.topological(x_te, z_te, normalize=True)))
s_data = loop_score(x_te)
print(f"largest H1 persistence / diameter of the held-out data: {s_data:.3f}")
for name, r in rows.items():
    print(f"{name:28s} loop score: training codes {r['train']:.3f}, held-out codes {r['held_out']:.3f}; "
          f"held-out topological loss {r['topo']:.3f}")
print(f"training time: plain {t_plain:.1f} s, with the factor {t_topo:.1f} s ({t_topo / t_plain:.1f}×)")
(s_plain, s_topo) = (r["held_out"] for r in rows.values())
print("verdict of this run (held-out codes):",
      "the factor kept the loop the plain VAE lost" if s_topo > max(2 * s_plain, 0.5 * s_data)
      else "no clear effect of the factor on the loop in this run")
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
for ax, (name, r) in zip(axes, rows.items(), strict=True):
    sc = ax.scatter(r["z_te"][:, 0], r["z_te"][:, 1], c=angle_te.numpy(), cmap="hsv", s=10)
    ax.set_aspect("equal")
    ax.set_title(f"{name}: held-out codes\nH1 persistence / diameter {r['held_out']:.2f}")
fig.colorbar(sc, ax=axes, label="angle on the circle")
fig.savefig(OUT / "topological_vae.png", dpi=110, bbox_inches="tight")
print("figures written to", OUT)
