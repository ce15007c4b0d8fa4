"""WrappedNormal throughput against the same computation written by hand with geoopt.

For the Poincaré ball (c = 1) and the Lorentz model (k = 1), d = 16 and 64,
batch 10^4 points: ``rsample`` and ``log_prob`` of dlmppl's ``WrappedNormal``
versus what a user of geoopt writes: a normal in the tangent space at the
origin, ``transp0`` to ``loc``, ``expmap``; and ``logmap``, ``transp0back``,
``dist`` and the log-determinant ``(d-1) log(sinh(√c r)/(√c r))`` for the
density.  The two are checked to agree before timing.

Usage: ``python benchmarks/bench_wrapped.py [--threads N] [--out benchmarks/results_wrapped.md]``.
"""

from __future__ import annotations

import argparse
import math
import time

import geoopt
import torch
from ratios import record  # benchmarks/ is on sys.path when this script runs

from dlmppl.distributions import WrappedNormal


def _time_pair(fa, fb, rounds=15):
    """Interleaved timings of two functions (the machine is shared): medians of each, and of the ratios."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    ratios = sorted(b / a for a, b in zip(ta, tb, strict=True))
    return sorted(ta)[rounds // 2], sorted(tb)[rounds // 2], ratios[rounds // 2]


def _log_normal(v, sigma):
    d = v.shape[-1]
    return -0.5 * (v / sigma).pow(2).sum(-1) - d * math.log(sigma) - 0.5 * d * math.log(2 * math.pi)


def ball_by_hand(d, n, sigma, loc):
    ball = geoopt.PoincareBall(1.0)

    def rsample():
        v = sigma * torch.randn(n, d, dtype=loc.dtype)
        u = ball.transp0(loc, v / 2)  # Riemannian-unit vectors at 0 have norm 1/2
        return ball.expmap(loc, u)

    def log_prob(z):
        u = ball.logmap(loc, z)
        v = 2 * ball.transp0back(loc, u)
        r = ball.dist(loc, z)
        return _log_normal(v, sigma) - (d - 1) * torch.log(torch.sinh(r) / r)

    return rsample, log_prob


def lorentz_by_hand(d, n, sigma, loc):
    lor = geoopt.Lorentz(1.0)

    def rsample():
        v = sigma * torch.randn(n, d, dtype=loc.dtype)
        u = lor.transp0(loc, torch.cat([torch.zeros(n, 1, dtype=loc.dtype), v], -1))
        return lor.expmap(loc, u)

    def log_prob(z):
        u = lor.logmap(loc, z)
        v = lor.transp0back(loc, u)[..., 1:]
        r = lor.dist(loc, z)
        return _log_normal(v, sigma) - (d - 1) * torch.log(torch.sinh(r) / r)

    return rsample, log_prob


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="float64, d = 16 only, 7 rounds (bench_all)")
    args = ap.parse_args()
    rounds = 7 if args.quick else 15
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sigma, n = 0.7, args.n
    rows = []
    for dtype in (torch.float64,) if args.quick else (torch.float32, torch.float64):
        for d in (16,) if args.quick else (16, 64):
            for name in ("PoincareBall", "Lorentz"):
                if name == "PoincareBall":
                    loc = (0.3 / math.sqrt(d)) * torch.ones(d, dtype=dtype)
                    ours = WrappedNormal(geoopt.PoincareBall(1.0), loc, torch.tensor(sigma, dtype=dtype))
                    rs, lp = ball_by_hand(d, n, sigma, loc)
                else:
                    s = (0.3 / math.sqrt(d)) * torch.ones(d, dtype=dtype)
                    loc = torch.cat([(1 + s.pow(2).sum()).sqrt().reshape(1), s])
                    ours = WrappedNormal(geoopt.Lorentz(1.0), loc, torch.tensor(sigma, dtype=dtype))
                    rs, lp = lorentz_by_hand(d, n, sigma, loc)
                z = ours.rsample((n,))
                with torch.no_grad():
                    ref, got = lp(z), ours.log_prob(z)
                err = float((ref - got).abs().max() / ref.abs().max())
                rs_ours, rs_hand, rs_ratio = _time_pair(lambda ours=ours: ours.rsample((n,)), rs, rounds)
                with torch.no_grad():
                    lp_ours, lp_hand, lp_ratio = _time_pair(lambda ours=ours, z=z: ours.log_prob(z),
                                                            lambda lp=lp, z=z: lp(z), rounds)
                rows.append((name, str(dtype).replace("torch.", ""), d, rs_ours, rs_hand, rs_ratio,
                             lp_ours, lp_hand, lp_ratio, err))
    head = ("| manifold | dtype | d | rsample dlmppl (Mpts/s) | rsample geoopt by hand (Mpts/s) | ratio | "
            "log_prob dlmppl (Mpts/s) | log_prob geoopt by hand (Mpts/s) | ratio | max rel. diff |")
    lines = [head, "|" + "---|" * 10]
    for name, dt, d, a, b, ab, c, e, ce, err in rows:
        lines.append(f"| {name} | {dt} | {d} | {n / a / 1e6:.2f} | {n / b / 1e6:.2f} | {ab:.2f} | "
                     f"{n / c / 1e6:.2f} | {n / e / 1e6:.2f} | {ce:.2f} | {err:.1e} |")
    table = "\n".join(lines)
    for i, what in ((5, "rsample"), (8, "log_prob")):
        worst = min(rows, key=lambda r, i=i: r[i])
        record("wrapped", f"WrappedNormal {what}: geoopt by hand / ours, worst case", worst[i],
               note=f"{worst[0]} {worst[1]} d={worst[2]}; {len(rows)} cases")
        record("wrapped", f"WrappedNormal {what}: geoopt by hand / ours, median case",
               sorted(r[i] for r in rows)[len(rows) // 2], note=f"{len(rows)} cases")
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# WrappedNormal vs geoopt by hand\n\n")
            f.write(f"batch {n} points, σ = {sigma}, torch threads = {args.threads}; medians of {rounds} interleaved "
                    "rounds (ratio: median of the per-round time ratios, hand / dlmppl, > 1 means dlmppl is "
                    "faster). Shared 2-core CPU machine with other jobs running, no GPU: absolute figures are "
                    "noisy. The hand-written density uses log(sinh(r)/r), which is NaN at r = 0 and overflows "
                    "for large r; dlmppl's is finite there and smooth in the curvature through 0.\n\n")
            f.write(table + "\n")


if __name__ == "__main__":
    main()
