"""Timing of dlmppl.diagnostics.summary against arviz.summary on the same draws.

    OMP_NUM_THREADS=1 python benchmarks/bench_diagnostics.py

Draws: 4 chains x 1000 draws of (a) 10 Euclidean scalars, (b) one point on
S^2, (c) one point on S^9 and (d) one point on the Poincaré disk.  arviz
summarises ambient coordinates (mean, sd, HDI, MCSE, ESS, R-hat); dlmppl
summarises the manifold sites intrinsically (Fréchet mean, spread, R-hat/ESS on
principal tangent coordinates and on the geodesic distance).  Also prints the
R-hat of the "oblique narrow direction" example of tests/diagnostics.
"""

import argparse
import time
import warnings

import arviz as az
import numpy as np
import torch
from ratios import record  # benchmarks/ is on sys.path when this script runs

import dlmppl.diagnostics as D
from dlmppl import manifolds as m

warnings.simplefilter("ignore")


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def draws(C=4, N=1000):
    g = torch.Generator().manual_seed(0)
    s2 = unit(torch.randn(C, N, 3, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    s9 = unit(torch.randn(C, N, 10, generator=g, dtype=torch.float64) * 0.2 + torch.eye(10, dtype=torch.float64)[0])
    ball = torch.randn(C, N, 2, generator=g, dtype=torch.float64) * 0.2 + 0.3
    return {
        "beta": torch.randn(C, N, 10, generator=g, dtype=torch.float64),
        "s2": s2,
        "s9": s9,
        "ball": ball,
    }


def best_of(fn, reps=3):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="best of 2 instead of 3 (bench_all)")
    reps = 2 if ap.parse_args().quick else 3
    d = draws()
    manifolds = {"s2": m.Sphere(), "s9": m.Sphere(), "ball": m.PoincareBall(1.0)}
    idata = D.to_inference_data(d, manifolds=manifolds)
    rows = []
    for var in ("beta", "s2", "s9", "ball"):
        t_az = best_of(lambda v=var: az.summary(idata, var_names=[v]), reps)
        t_dl = best_of(lambda v=var: D.summary(idata, var_names=[v]), reps)
        rows.append((var, t_az, t_dl))
    t_az = best_of(lambda: az.summary(idata), reps)
    t_dl = best_of(lambda: D.summary(idata), reps)
    rows.append(("all", t_az, t_dl))
    print("| sites | arviz.summary (s) | dlmppl summary (s) | dlmppl / arviz |")
    print("|---|---|---|---|")
    for var, a, b in rows:
        print(f"| {var} | {a:.4f} | {b:.4f} | {b / a:.2f} |")
        if var in ("beta", "all"):
            record("diagnostics", f"summary of {'10 scalars' if var == 'beta' else 'all 4 sites'}: time ours / arviz",
                   b / a, better="lower", note="manifold sites do more")

    # the oblique-narrow-direction example (tests/diagnostics/test_diagnostics_stats.py)
    torch.manual_seed(0)
    S2 = m.Sphere()
    mu = unit(torch.ones(3, dtype=torch.float64))
    u = unit(torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64))
    v = unit(torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64))
    side = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)[:, None]
    a = torch.randn(4, 1000, dtype=torch.float64) * 0.01 + side * 0.01
    b = torch.randn(4, 1000, dtype=torch.float64) * 0.6
    V = a[..., None] * u + b[..., None] * v
    X = S2.expmap(mu.expand_as(V), V)
    amb = D.summary({"X": X.numpy()}, round_to="none")["r_hat"].to_numpy()  # no manifold: arviz per ambient coordinate
    ours = D.manifold_diagnostics(X, S2)
    print()
    print("oblique narrow direction, chains 2 sd apart along it:")
    print(f"  ambient R-hat per coordinate (arviz): {np.round(amb, 4)}")
    print(f"  dlmppl R-hat (pc0, pc1, dist):        {np.round(ours['r_hat'], 4)}")


if __name__ == "__main__":
    main()
