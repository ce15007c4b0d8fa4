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
# # 3. Dynamic curvature: a latent space whose curvature depends on the class
#
# A κ-stereographic space 𝔐_κ is one chart, ℝ^d (or the ball |z| < 1/√−κ
# when κ < 0), that carries the sphere's geometry for κ > 0, the flat one for
# κ = 0 and the hyperbolic one for κ < 0; its closed forms (exponential map,
# distance, geodesics) are smooth in κ through 0 (Skopek et al. 2020). The
# `DynamicCurvatureVAE` lets a small network g predict the curvature **per
# datum** from a condition c:
#
# $$\kappa_i = g(c_i),\quad z_i \sim \mathcal{WN}_{\kappa_i}(0, I),\quad
# x_i \sim \mathcal N(f_{\kappa_i}(z_i), \sigma^2 I),$$
#
# with the decoder f reading geodesic distances in 𝔐_κ to learned anchors,
# so that the geometry matters to the likelihood. Here the condition is the
# digit's label: each class of scikit-learn's 8×8 digits gets its own latent
# geometry. g starts at κ = 0 for every class; any curvature that appears is
# what the data ask for.
#
# Then we use the geometry: the **geodesic** between two codes in 𝔐_κ (with
# the κ of their class) is the natural interpolation, and `steer` moves codes
# along geodesics toward a class centroid (a Fréchet mean in 𝔐_κ).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

import dlmppl as dl

SMOKE = os.environ.get("DLMPPL_SMOKE") == "1"
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()  # script, or notebook opened in tutorials/
OUT = Path(os.environ.get("DLMPPL_TUTORIAL_OUT") or HERE / "output" / "03_dynamic_curvature")
OUT.mkdir(parents=True, exist_ok=True)
STEPS = 20 if SMOKE else 2500
pyro.set_rng_seed(0)

# %% [markdown]
# ## Data and model

# %%
x, labels = dl.datasets.digits()
if SMOKE:
    x, labels = x[:300], labels[:300]
print("digits:", tuple(x.shape), "classes:", labels.unique().tolist())

pyro.clear_param_store()
vae = dl.models.DynamicCurvatureVAE(x.shape[1], latent_dim=2, condition="label", n_conditions=10, hidden=(128,),
                                    kappa_bound=4.0, likelihood="gaussian", decoder="distance", n_anchors=16)
# lr 1e-3: at 3e-3 the distance decoder's gradients blow up (NaN curvature) within a few hundred steps
svi = pyro.infer.SVI(vae.model, vae.guide, dl.inference.RiemannianAdam({"lr": 1e-3}), pyro.infer.Trace_ELBO())
losses = []
for step in range(STEPS):
    losses.append(svi.step(x, labels) / x.shape[0])
    if not SMOKE and step % 500 == 0:
        print(f"step {step:5d}  -ELBO per digit {losses[-1]:.2f}")
print(f"final -ELBO per digit {losses[-1]:.2f}")
dl.diagnostics.plot_elbo(losses, path=OUT / "elbo.png")

# %% [markdown]
# ## Curvature per class
#
# `vae.kappa(condition=labels)` evaluates g. Positive κ: a spherical latent
# geometry (bounded, geodesics converge); negative: hyperbolic (room grows
# exponentially, suited to classes with many distinct styles spread out from
# a prototype). The bar chart is the learned answer per digit.

# %%
classes = torch.arange(10)
with torch.no_grad():
    kappas = vae.kappa(condition=classes).squeeze(-1)
for c, k in zip(classes.tolist(), kappas.tolist(), strict=True):
    print(f"digit {c}: κ = {k:+.3f}")
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.bar(classes.numpy(), kappas.numpy(), color=["C3" if k < 0 else "C0" for k in kappas.tolist()])
ax.axhline(0, color="k", lw=0.8)
ax.set_xticks(classes.numpy())
ax.set_xlabel("digit (condition)")
ax.set_ylabel("learned curvature κ")
ax.set_title("κ = g(label): red hyperbolic, blue spherical")
fig.savefig(OUT / "curvature_per_class.png", dpi=110, bbox_inches="tight")

# %% [markdown]
# ## Geodesic interpolation within a class
#
# We take the class with the smallest curvature (the most hyperbolic, or
# least spherical, latent space), encode its digits in 𝔐_κ with that class's κ, and
# interpolate between two of its digits along the geodesic of 𝔐_κ
# (`dl.geometry.interpolate`). In the chart, a geodesic that does not pass
# through the origin is a circular arc: for κ < 0 it bends towards the
# origin (towards the prior's centre, where typical shapes sit), for κ > 0
# away from it; the decoded strip should show a smooth morph that passes
# through more typical shapes. `plot_latent_interpolation` draws the codes of
# the class, the geodesic, and the decoded images along it.

# %%
a = int(kappas.argmin())
k_a = kappas[a]
M_a = dl.manifolds.Stereographic(k_a)
with torch.no_grad():
    xa = x[labels == a]
    kap = k_a.expand(xa.shape[0], 1)
    z_a = vae.encode(xa, kap).loc
# two digits far apart and far from collinear with the origin (where the geodesic is straight in the chart)
i = int(z_a.norm(dim=-1).argmax())
j = int((z_a[i, 0] * z_a[:, 1] - z_a[i, 1] * z_a[:, 0]).abs().argmax())
path = dl.geometry.interpolate(M_a, z_a[i], z_a[j], 9)
chord = torch.stack([(1 - t) * z_a[i] + t * z_a[j] for t in torch.linspace(0, 1, 9)])
print(f"class {a} (κ = {float(k_a):+.3f}): geodesic length {float(dl.geometry.distance(M_a, z_a[i], z_a[j])):.3f}; "
      f"largest gap between geodesic and straight chord in the chart {float((path - chord).norm(dim=-1).max()):.3f}")


def decode_class(z, label=a, kappa=k_a):
    with torch.no_grad():
        return vae.decode(z, kappa.reshape(1, 1).expand(z.shape[0], 1), torch.full((z.shape[0],), label))


dl.diagnostics.plot_latent_interpolation(z_a, [(i, j)], manifold=M_a, num_points=9, decoder=decode_class, image_shape=(8, 8),
                                         title=f"digit {a}: geodesic of M_κ, κ = {float(k_a):+.2f}",
                                         path=OUT / "geodesic_interpolation.png")

# %% [markdown]
# ## Steering toward the class prototype
#
# `dl.geometry.class_centroid` is the Fréchet mean of the class's codes in
# 𝔐_κ; `dl.geometry.steer(z, centroid, t, manifold=M_a)` moves codes along
# their geodesics to it. Each row of the figure starts at a digit's own code
# (t = 0) and ends at the centroid (t = 1): the idiosyncrasies of the
# handwriting should fade into the class prototype.

# %%
with torch.no_grad():
    centroid = dl.geometry.class_centroid(z_a, torch.zeros(z_a.shape[0], dtype=torch.long), 0, manifold=M_a)
    starts = z_a[torch.randperm(z_a.shape[0])[:4]]
    ts = torch.linspace(0, 1, 7)
    steered = dl.geometry.steer(starts, centroid, ts, manifold=M_a)  # (T, 4, 2)
    imgs = decode_class(steered.reshape(-1, 2)).reshape(len(ts), 4, 8, 8)
fig, axes = plt.subplots(4, len(ts), figsize=(1.1 * len(ts), 4.6))
for r in range(4):
    for c in range(len(ts)):
        axes[r, c].imshow(imgs[c, r].numpy(), cmap="gray")
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
        if r == 0:
            axes[r, c].set_title(f"t={float(ts[c]):.2f}", fontsize=8)
fig.suptitle(f"digit {a}: steering codes along geodesics to the class centroid")
fig.savefig(OUT / "steering.png", dpi=110, bbox_inches="tight")
print("figures written to", OUT)
