"""Throughput of log_prob and rsample: VonMisesFisher / PowerSpherical vs scipy and Pyro.

Compared side by side in one run at d = 3, 64, 512 with 10^4 points:

* ``one dist``: one (μ, κ), 10^4 points (a likelihood over data; sampling 10^4 draws);
* ``10^4 dists``: batch of 10^4 distinct (μ, κ), one point each (a VAE's posteriors),
  which scipy cannot do without a Python loop (not timed);
* ``rsample+grad``: 10^4 draws and a backward pass to (μ, κ).

Peers: ``scipy.stats.vonmises_fisher`` (logpdf / rvs), ``pyro.distributions.ProjectedNormal``
(Pyro's sphere distribution; its log_prob exists only for d ≤ 4).  Run:
``python benchmarks/bench_directional.py [--repeats N] [--out benchmarks/results_directional.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as pdist
import scipy
import torch
from ratios import quick_out, record  # benchmarks/ is on sys.path when this script runs
from scipy import stats

from dlmppl.distributions import PowerSpherical, VonMisesFisher

N = 10_000


def best_time(fn, repeats):
    """Median CPU time of the calling thread (``time.thread_time``) over ``repeats`` calls.

    Every method runs on one thread (torch with one thread, scipy and numpy single-threaded),
    so the thread's CPU time is the work done; on the shared machine, wall time also counts
    the slices other jobs take, which swamped the ratios.
    """
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        times.append(time.thread_time() - t)
    return statistics.median(times)


def unit(shape, d, gen):
    x = torch.randn(*shape, d, generator=gen, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def bench_dim(d, repeats, gen):
    """Timings (seconds) of every method and task at dimension ``d``."""
    mu = unit((), d, gen)
    kappa = torch.tensor(10.0, dtype=torch.float64)
    mus = unit((N,), d, gen)
    kappas = torch.rand(N, generator=gen, dtype=torch.float64) * 50
    x = unit((N,), d, gen)
    sp = stats.vonmises_fisher(mu.numpy(), float(kappa))
    xn = x.numpy()
    rng = np.random.default_rng(0)
    res = {}
    # log_prob, one distribution
    res["lp1", "scipy vMF"] = best_time(lambda: sp.logpdf(xn), repeats)
    res["lp1", "dlmppl vMF"] = best_time(lambda: VonMisesFisher(mu, kappa, validate_args=False).log_prob(x), repeats)
    res["lp1", "dlmppl PowerSpherical"] = best_time(lambda: PowerSpherical(mu, kappa, validate_args=False).log_prob(x), repeats)
    if d <= 4:
        res["lp1", "pyro ProjectedNormal"] = best_time(lambda: pdist.ProjectedNormal(kappa * mu, validate_args=False).log_prob(x), repeats)
    # log_prob, 10^4 distributions
    res["lpB", "dlmppl vMF"] = best_time(lambda: VonMisesFisher(mus, kappas, validate_args=False).log_prob(x), repeats)
    res["lpB", "dlmppl PowerSpherical"] = best_time(lambda: PowerSpherical(mus, kappas, validate_args=False).log_prob(x), repeats)
    if d <= 4:
        res["lpB", "pyro ProjectedNormal"] = best_time(lambda: pdist.ProjectedNormal(kappas[:, None] * mus, validate_args=False).log_prob(x), repeats)
    # sampling 10^4 draws of one distribution
    res["s1", "scipy vMF"] = best_time(lambda: sp.rvs(N, random_state=rng), repeats)
    with torch.no_grad():
        res["s1", "dlmppl vMF"] = best_time(lambda: VonMisesFisher(mu, kappa, validate_args=False).rsample((N,)), repeats)
        res["s1", "dlmppl PowerSpherical"] = best_time(lambda: PowerSpherical(mu, kappa, validate_args=False).rsample((N,)), repeats)
        res["s1", "pyro ProjectedNormal"] = best_time(lambda: pdist.ProjectedNormal(kappa * mu, validate_args=False).rsample((N,)), repeats)

    # rsample + backward, 10^4 distinct distributions
    def grad_step(make):
        m = mus.clone().requires_grad_(True)
        k = kappas.clone().requires_grad_(True)
        make(m, k).rsample().sum().backward()

    res["sB", "dlmppl vMF"] = best_time(lambda: grad_step(lambda m, k: VonMisesFisher(m, k, validate_args=False)), repeats)
    res["sB", "dlmppl PowerSpherical"] = best_time(lambda: grad_step(lambda m, k: PowerSpherical(m, k, validate_args=False)), repeats)
    res["sB", "pyro ProjectedNormal"] = best_time(
        lambda: grad_step(lambda m, k: pdist.ProjectedNormal(k[:, None] * m, validate_args=False)), repeats
    )
    return res


def run(repeats, dims=(3, 64, 512)):
    gen = torch.Generator().manual_seed(0)
    return [(d, bench_dim(d, repeats, gen)) for d in dims]


# issue 15, point 2: (d, task, peer, bound, "≥" or "≤") on the ratio peer time / dlmppl vMF time
TARGETS = [
    (3, "lp1", "scipy vMF", 1.0, "≥"),
    (64, "lp1", "scipy vMF", 1.0, "≥"),
    (3, "s1", "scipy vMF", 2.0, "≥"),
    (64, "s1", "scipy vMF", 1.0, "≥"),
    (3, "sB", "pyro ProjectedNormal", 0.5, "≥"),  # time ≤ 2× ProjectedNormal's
    (64, "sB", "pyro ProjectedNormal", 0.5, "≥"),
]


def targets_table(rows):
    lines = [
        "| d | task | peer | speed-up of dlmppl vMF (peer time / vMF time) | target | met |",
        "|---|---|---|---:|---|---|",
    ]
    by_d = dict(rows)
    for d, task, peer, bound, op in TARGETS:
        res = by_d.get(d)
        if res is None or (task, peer) not in res:
            continue
        r = res[task, peer] / res[task, "dlmppl vMF"]
        short = {"lp1": "log_prob", "s1": "sample", "sB": "rsample+backward, 1e4 dists"}[task]
        record("directional", f"vMF d={d} {short}: speed-up vs {peer}", r, bound, "higher" if op == "≥" else "lower")
        lines.append(f"| {d} | {TASKS[task]} | {peer} | {r:.2f}× | {op} {bound:g}× | {'yes' if r >= bound else 'no'} |")
    return "\n".join(lines)


TASKS = {
    "lp1": "log_prob, 1 dist × 10^4 points",
    "lpB": "log_prob, 10^4 dists × 1 point",
    "s1": "sample, 10^4 draws of 1 dist",
    "sB": "rsample + backward, 10^4 dists",
}


def table(rows):
    lines = [
        "| d | task | method | time (ms) | Mpts/s | vs scipy vMF | vs Pyro ProjectedNormal |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for d, res in rows:
        for task, label in TASKS.items():
            ref_s = res.get((task, "scipy vMF"))
            ref_p = res.get((task, "pyro ProjectedNormal"))
            for (t, method), sec in res.items():
                if t != task:
                    continue
                r_s = f"{ref_s / sec:.1f}×" if ref_s and method != "scipy vMF" else "—"
                r_p = f"{ref_p / sec:.1f}×" if ref_p and method != "pyro ProjectedNormal" else "—"
                lines.append(f"| {d} | {label} | {method} | {1e3 * sec:.2f} | {N / sec / 1e6:.2f} | {r_s} | {r_p} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="d = 3 and 64 only, 3 repeats (bench_all)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dims", default="3,64,512", help="comma-separated ambient dimensions")
    ap.add_argument("--label", default="this checkout", help="name of the code measured (one table per label)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results_directional.md"))
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.dims = min(args.repeats, 3), "3,64"
        if args.out == ap.get_default("out"):  # a quick run does not overwrite the full results
            args.out = str(quick_out("directional"))
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    rows = run(args.repeats, tuple(int(d) for d in args.dims.split(",")))
    body = targets_table(rows) + "\n\n" + table(rows)
    header = (
        "# Directional distributions: throughput (benchmarks/bench_directional.py)\n\n"
        f"Machine: shared 2-core CPU (no GPU; other engineers' jobs were running), {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__} ({args.threads} thread), pyro {pyro.__version__}, scipy {scipy.__version__}, "
        f"Python {platform.python_version()}; float64; median CPU time of the calling thread over {args.repeats} runs "
        "(`time.thread_time`: every method is single-threaded, and wall time on the shared machine also counts "
        "other jobs' time slices).  One table per code version (`--label`), each from its own run; the ratios "
        "inside a table are same-run.\n\n"
        "Ratios are speed-ups (time of the peer / time of the method); > 1 means faster than the peer. "
        "scipy's vMF has no batch of parameters (so no '10^4 dists' rows) and no gradients; "
        "Pyro's ProjectedNormal has log_prob only for d ≤ 4 and is a different family "
        "(the projection of a Gaussian), shown as the sphere distribution Pyro offers. "
        "All torch distributions are timed with validate_args=False (with validation on, log_prob also "
        "checks that every point is on the sphere: one more pass over the data). κ = 10 for '1 dist', "
        "κ ~ U(0, 50) for '10^4 dists'.  Targets of issue 15 (point 2) first, then every row.\n"
    )
    path = Path(args.out)
    old = path.read_text() if path.exists() else ""
    tables = {}
    for block in old.split("\n## ")[1:]:  # keep the other labels' tables
        name, _, text = block.partition("\n")
        tables[name.strip()] = text.strip("\n")
    tables[args.label] = body
    text = header + "".join(f"\n## {name}\n\n{t}\n" for name, t in tables.items())
    print(text)
    path.write_text(text)


if __name__ == "__main__":
    main()
