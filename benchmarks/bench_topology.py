"""Benchmark: does a latent space of the data's topology pay? (issue 13, point 5)

Four procedural image data sets with a known latent factor (dlmppl.datasets):

==================  ==========  ==========================================
data                factor      matching latent
==================  ==========  ==========================================
rotating_sprite     S¹          ``"torus"``, d = 1 (the circle T¹)
clock               T²          ``"torus"``, d = 2
rotating_segment    RP¹         ``"projective"``, d = 1
rotating_object     SO(3)       ``"so3"``
==================  ==========  ==========================================

On each, three ManifoldVAEs with the same networks are trained by SVI (Trace_ELBO,
RiemannianAdam): a Euclidean latent and a sphere latent, both of dimension
``max(2, d)`` (``d`` the factor's dimension; a circle needs two Euclidean dimensions to
embed), and the matching-topology latent.  Reported, over seeds (mean ± sd):

* test log-likelihood: IWAE estimate of ``log p(x)`` with K particles on held-out images
  (Gaussian likelihood with fixed scale 0.1, so the figures compare across latents);
* geodesic error of the latent: the Spearman correlation between the latent geodesic
  distance of the posterior locations of random test pairs and the true factor distance
  (circle: |wrapped Δθ|; torus: the flat-torus distance; RP¹: min(|Δθ|, π - |Δθ|);
  SO(3): the angle of R₁ᵀR₂).  1 means the latent distances order pairs exactly as the
  factor does.

Usage: python benchmarks/bench_topology.py [--quick] [--seeds 0,1,2]
(writes benchmarks/results_topology.md).  CPU; one thread.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from ratios import record  # benchmarks/ is on sys.path when this script runs
from scipy.stats import spearmanr

from dlmppl import datasets, geometry, manifolds
from dlmppl.inference import RiemannianAdam
from dlmppl.models import ManifoldVAE

torch.set_num_threads(1)


def torus_dist(y1, y2):
    """Flat-torus distance of angles ``(..., n)`` (the circle for ``n = 1``)."""
    return geometry.distance(manifolds.Torus(), y1, y2)


def rp1_dist(y1, y2):
    """RP¹ distance of direction angles ``(..., 1)``: min(|Δθ|, π - |Δθ|) mod π."""
    def u(y):
        return torch.cat([y.cos(), y.sin()], -1)

    return geometry.distance(manifolds.ProjectiveSpace(), u(y1), u(y2))


def so3_dist(R1, R2):
    """The angle of ``R₁ᵀR₂``."""
    return geometry.distance(manifolds.SO3(), R1, R2)


DATA = (
    ("sprite (S¹)", datasets.rotating_sprite, torus_dist, ("torus", 1)),
    ("clock (T²)", datasets.clock, torus_dist, ("torus", 2)),
    ("segment (RP¹)", datasets.rotating_segment, rp1_dist, ("projective", 1)),
    ("object (SO(3))", datasets.rotating_object, so3_dist, ("so3", 3)),
)


def run_one(make_data, factor_dist, latent, dim, seed, n_train, n_test, epochs, K, size, hidden):
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    x, y = make_data(n_train + n_test, size=size, dtype=torch.float32)
    xtr, xte, yte = x[:n_train], x[n_train:], y[n_train:]
    vae = ManifoldVAE(x.shape[1], latent=latent, latent_dim=dim, hidden=hidden, likelihood="gaussian", obs_scale=0.1)
    svi = SVI(vae.model, vae.guide, RiemannianAdam({"lr": 2e-3}), Trace_ELBO())
    t0 = time.perf_counter()
    for _ in range(epochs):
        for b in torch.randperm(n_train).split(128):
            svi.step(xtr[b])
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        ll = vae.log_marginal(xte, num_particles=K).mean().item()
        z = vae.codes(xte)[0]
        g = vae.components[0].geometry
        i, j = torch.randint(0, n_test, (2, 4000))
        keep = i != j
        i, j = i[keep], j[keep]
        dz = g.dist(z[i], z[j])
        dy = factor_dist(yte[i], yte[j])
        rho = float(spearmanr(dz.numpy(), dy.numpy()).statistic)
    return ll, rho, train_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny run (smoke test of the script)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        cfg = dict(n_train=256, n_test=64, epochs=2, K=8, size=12, hidden=(64,))
        seeds = seeds[:1]
    else:
        cfg = dict(n_train=2000, n_test=500, epochs=30, K=100, size=16, hidden=(256,))
    rows = []
    t_all = time.perf_counter()
    for name, make, fdist, (kind, d) in DATA:
        base_dim = max(2, d)
        for label, latent, dim in (
            (f"Euclidean R^{base_dim}", "euclidean", base_dim),
            (f"sphere S^{base_dim}", "sphere", base_dim),
            (f"{kind} (matching)", kind, d),
        ):
            res = [run_one(make, fdist, latent, dim, s, **cfg) for s in seeds]
            lls, rhos, ts = zip(*res, strict=True)
            print(f"    per seed: log p(x) {[round(v, 1) for v in lls]}, Spearman {[round(v, 3) for v in rhos]}", flush=True)
            sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
            rows.append((name, label, statistics.mean(lls), sd(lls), statistics.mean(rhos), sd(rhos), statistics.mean(ts),
                         rhos))
            print(f"{name:16s} {label:22s} log p(x) {rows[-1][2]:9.1f} ± {rows[-1][3]:5.1f}   "
                  f"Spearman {rows[-1][4]:.3f} ± {rows[-1][5]:.3f}   train {rows[-1][6]:.1f} s", flush=True)
    total = time.perf_counter() - t_all
    for name, *_ in DATA:  # Spearman of the matching latent minus the Euclidean one's
        rho = {r[1].split(" ")[-1] if r[1].endswith("(matching)") else r[1].split(" ")[0]: r[4]
               for r in rows if r[0] == name}
        record("topology", f"{name}: Spearman(latent, factor) matching − Euclidean",
               rho["(matching)"] - rho["Euclidean"], unit="")
    lines = [
        "## Matching latent topology (bench_topology.py, issue 13)\n",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread, torch {torch.__version__}, "
        f"pyro {pyro.__version__}; seeds {seeds}; {cfg['n_train']} training / {cfg['n_test']} test images of "
        f"{cfg['size']}×{cfg['size']} pixels, {cfg['epochs']} epochs, batch 128, MLPs {cfg['hidden']}, Gaussian "
        f"likelihood (scale 0.1), IWAE with K = {cfg['K']}; total {total / 60:.1f} min."
        + (" **Quick mode: not a measurement.**" if args.quick else "") + "\n",
        "| data | latent | test log p(x) (IWAE) | Spearman(latent dist, factor dist) | per seed | train time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, label, ll, llsd, rho, rhosd, t, per in rows:
        seeds_txt = ", ".join(f"{v:.2f}" for v in per)
        lines.append(f"| {name} | {label} | {ll:.1f} ± {llsd:.1f} | {rho:.3f} ± {rhosd:.3f} | {seeds_txt} | {t:.1f} |")
    lines.append("")
    out = args.out or ("/tmp/results_topology_quick.md" if args.quick else "benchmarks/results_topology.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
