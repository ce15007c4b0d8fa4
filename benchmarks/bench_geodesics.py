"""Benchmark: connecting_geodesic under a decoder pull-back metric, JVP path vs dense Jacobian.

Decoder with a known answer in every dimension: f(z) = R · A · σ⁻¹(z), where σ⁻¹ is
the inverse stereographic projection R^d → S^d ⊂ R^{d+1} and A (D × (d+1)) has
orthonormal columns, so f is an isometric embedding of a radius-R sphere in R^D
and the pull-back geodesic length is R · (great-circle angle).

Compared side by side, same solver (dlmppl's L-BFGS on the discrete energy):
* "jvp": dlmppl.geometry.PullbackMetric (‖J v‖² by one forward-mode JVP, J never formed);
* "dense": what a user would otherwise write: J by torch.func.jacfwd (vmap over the
  batch, d JVPs), G = JᵀJ, then vᵀGv (the strong dense baseline; jacrev would need D
  backward passes).

Run:  python benchmarks/bench_geodesics.py [--quick]
Writes the table to benchmarks/results_geodesics.md.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from ratios import record  # benchmarks/ is on sys.path when this script runs

import dlmppl.geometry as geo

DT = torch.float64
R = 2.0


def make_decoder(d, D, gen):
    A = torch.linalg.qr(torch.randn(D, d + 1, generator=gen, dtype=DT))[0]  # orthonormal columns

    def f(z):
        n2 = z.pow(2).sum(-1, keepdim=True)
        s = torch.cat((2 * z, n2 - 1), -1) / (n2 + 1)
        return R * s @ A.T

    return f


class DenseJacobianMetric(geo.MetricField):
    """Baseline: dense Jacobian by jacfwd, G = JᵀJ, quadratic vᵀGv."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def metric(self, z, condition=None):
        flat = z.reshape(-1, z.shape[-1])
        J = torch.func.vmap(torch.func.jacfwd(self.f))(flat)  # (B, D, d)
        G = J.transpose(-1, -2) @ J
        return G.reshape(z.shape[:-1] + G.shape[-2:])

    def quadratic(self, z, v, condition=None):
        z, v = torch.broadcast_tensors(z, v)
        G = self.metric(z)
        return (v.unsqueeze(-2) @ G @ v.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def exact_length(f, z0, z1):
    x0, x1 = f(z0), f(z1)
    cos = ((x0 * x1).sum(-1) / (R * R)).clamp(-1, 1)
    return R * torch.arccos(cos)


def run_cell(d, D, n_pairs, n_points, max_iter, gen):
    f = make_decoder(d, D, gen)
    # endpoints well inside the chart (|z| < 1): geodesics stay away from the pole at infinity
    z0 = torch.nn.functional.normalize(torch.randn(n_pairs, d, generator=gen, dtype=DT), dim=-1) * 0.8
    z1 = torch.nn.functional.normalize(torch.randn(n_pairs, d, generator=gen, dtype=DT), dim=-1) * 0.8
    ref = exact_length(f, z0, z1)
    out = {}
    for name, metric in (("jvp", geo.PullbackMetric(f)), ("dense", DenseJacobianMetric(f))):
        t0 = time.perf_counter()
        res = geo.connecting_geodesic(metric, z0, z1, n_points=n_points, max_iter=max_iter)
        dt = time.perf_counter() - t0
        err = float(((res.length - ref) / ref).abs().max())
        out[name] = (dt, err, res.n_iter, bool(res.converged.all()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a 2x2 grid for a smoke run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    if args.quick:
        grid = [(2, 64), (16, 512)]
    else:
        # an isometric embedding of S^d needs D >= d + 1: the d = 64 row uses D = 128 for its smallest D
        grid = [(d, D) for d in (2, 16) for D in (64, 1024, 4096)] + [(64, D) for D in (128, 1024, 4096)]
    n_pairs, n_points, max_iter = 4, 16, 60
    # warm-up (first torch.func use pays a one-off cost)
    run_cell(2, 8, 1, 8, 5, gen)
    rows = []
    for d, D in grid:
        r = run_cell(d, D, n_pairs, n_points, max_iter, gen)
        rows.append((d, D, r))
        (tj, ej, ij, cj), (td, ed, idn, cd) = r["jvp"], r["dense"]
        record("geodesics", f"pull-back geodesic d={d} D={D}: time dense Jacobian / JVP", td / tj,
               note=f"rel. error {ej:.0e}")
        print(
            f"d={d:3d} D={D:5d}  jvp {tj:7.2f}s err {ej:.2e} it {ij:3d} conv {cj} | "
            f"dense {td:7.2f}s err {ed:.2e} it {idn:3d} conv {cd} | dense/jvp time {td / tj:5.2f}",
            flush=True,
        )
    lines = [
        "# connecting_geodesic: JVP pull-back vs dense-Jacobian baseline",
        "",
        "Machine: shared 2-core CPU (no GPU), one torch thread, load from other jobs present;",
        "float64. Decoder: isometric embedding of a radius-2 sphere in R^D (inverse stereographic",
        "projection then an orthonormal D×(d+1) map), so the exact geodesic length is known.",
        f"{n_pairs} pairs per solve (batched), {n_points} curve points, at most {max_iter} L-BFGS iterations;",
        "error = max relative error of the length against R·(great-circle angle) (includes the",
        "O(h²) discretisation error of the curve). Dense = torch.func.jacfwd Jacobian, G = JᵀJ.",
        f"Grid: latent d ∈ {{{', '.join(str(g) for g in sorted({g[0] for g in grid}))}}}, data D ∈ "
        f"{{{', '.join(str(g) for g in sorted({g[1] for g in grid}))}}} (subset of 2..64 × 64..4096; d = 64 uses D = 128 as the smallest, since S^d embeds isometrically only for D > d).",
        "",
        "| d | D | JVP time (s) | JVP rel. error | dense time (s) | dense rel. error | iters (jvp/dense) | dense / JVP time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d, D, r in rows:
        (tj, ej, ij, _), (td, ed, idn, _) = r["jvp"], r["dense"]
        lines.append(f"| {d} | {D} | {tj:.2f} | {ej:.1e} | {td:.2f} | {ed:.1e} | {ij}/{idn} | {td / tj:.2f} |")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results_geodesics.md")
    if not args.quick:
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
