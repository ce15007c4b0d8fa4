"""Simulation-based calibration: ``dlmppl.diagnostics.sbc`` against the loop a user would write.

    OMP_NUM_THREADS=1 python benchmarks/bench_sbc.py [--sims 8] [--out benchmarks/results_sbc.md]

Model: a mean direction ``mu ~ vMF(north, 2)`` on S^2 and 10 observations
``y_i ~ vMF(mu, 5)``; inference: ``RiemannianNUTS``, 200 warm-up + 200 draws per
simulation, 100 ranked draws.  Three ways, in one run on the same machine:

(a) a hand-written loop (what a user writes without the module, after Talts et al.
    2018, Algorithm 1): prior predictive by ``poutine.trace``, ``poutine.condition``,
    ``pyro.infer.MCMC``, the rank of one quantity (the geodesic distance of ``mu`` to
    the north pole) among evenly spaced draws;
(b) ``sbc(..., num_workers=1)``: the same simulations, with the test quantities of
    the module (distance, two tangent coordinates, the log-likelihood), the
    autocorrelation check and the uniformity test;
(c) ``sbc(..., num_workers=2)``: the simulations in two processes.

Prints the seconds per simulation and the ratios (b)/(a) (the module's overhead) and
(b)/(c) (the speed-up of the worker processes), and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import time
import warnings
from pathlib import Path

import pyro
import torch
from calibration import machine  # benchmarks/ is on sys.path when this script runs
from pyro import poutine
from pyro.infer import MCMC
from ratios import quick_out, record

from dlmppl import manifolds
from dlmppl.diagnostics import MCMCInference, sbc
from dlmppl.distributions import VonMisesFisher
from dlmppl.inference import RiemannianNUTS

F64 = torch.float64
NORTH = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
NUM_SAMPLES, WARMUP, NUM_DRAWS, N_OBS = 200, 200, 100, 10


def model(y=None):
    mu = pyro.sample("mu", VonMisesFisher(NORTH, torch.tensor(2.0, dtype=F64)))
    with pyro.plate("obs", N_OBS):
        pyro.sample("y", VonMisesFisher(mu, torch.tensor(5.0, dtype=F64)), obs=y)


def kernel(m):
    return RiemannianNUTS(m)


def hand_loop(num_sims: int, seed: int = 0) -> list[int]:
    """Talts et al. (2018), Algorithm 1, written out: one rank per simulation."""
    sphere = manifolds.Sphere()
    ranks = []
    for i in range(num_sims):
        pyro.set_rng_seed(seed * 100_003 + i)
        tr = poutine.trace(model).get_trace()
        mu_true, y = tr.nodes["mu"]["value"], tr.nodes["y"]["value"]
        mcmc = MCMC(kernel(poutine.condition(model, {"y": y})), num_samples=NUM_SAMPLES, warmup_steps=WARMUP,
                    disable_progbar=True)
        mcmc.run()
        mu = mcmc.get_samples()["mu"][:: NUM_SAMPLES // NUM_DRAWS][:NUM_DRAWS]
        d_true = sphere.dist(mu_true, NORTH)
        ranks.append(int((sphere.dist(mu, NORTH) < d_true).sum()))
    return ranks


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sims", type=int, default=8, help="simulations per method (default 8)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results_sbc.md"))
    ap.add_argument("--quick", action="store_true", help="2 simulations of 60 + 60 draws (bench_all; writes "
                    "to a scratch file unless --out)")
    args = ap.parse_args(argv)
    global NUM_SAMPLES, WARMUP, NUM_DRAWS
    if args.quick:
        args.sims, NUM_SAMPLES, WARMUP, NUM_DRAWS = 2, 60, 60, 30
        if args.out == ap.get_default("out"):
            args.out = str(quick_out("sbc"))
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    n = args.sims
    info = machine()  # benchmarks/calibration.py's record of the CPU and versions
    inf = MCMCInference(kernel, num_samples=NUM_SAMPLES, warmup_steps=WARMUP)

    t_a, ranks = timed(lambda: hand_loop(n))
    t_b, res1 = timed(lambda: sbc(model, inf, n, observed="y", num_draws=NUM_DRAWS, progress=False, seed=0))
    t_c, res2 = timed(lambda: sbc(model, inf, n, observed="y", num_draws=NUM_DRAWS, progress=False, seed=0,
                                  num_workers=2))
    same = all((res1.ranks[k] == res2.ranks[k]).all() for k in res1.ranks)
    record("sbc", "SBC: time dlmppl sbc / hand-written loop", t_b / t_a, better="lower",
           note=f"{n} sims; 4 quantities vs 1")
    record("sbc", "SBC: speed-up of 2 worker processes", t_b / t_c, note="2 cores, shared")
    rows = [
        ("(a) hand-written loop (1 quantity)", t_a),
        ("(b) dlmppl sbc, 1 process (4 quantities + checks)", t_b),
        ("(c) dlmppl sbc, 2 processes", t_c),
    ]
    lines = [
        "# SBC: `dlmppl.diagnostics.sbc` vs a hand-written loop (benchmarks/bench_sbc.py)",
        "",
        f"- date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; machine: {info['cpu']}, {info['cores']} cores; "
        f"Python {info['python']}, torch {info['torch']}, pyro-ppl {info['pyro']}",
        f"- model: mu ~ vMF(north, 2) on S^2, {N_OBS} observations vMF(mu, 5); RiemannianNUTS, "
        f"{WARMUP} warm-up + {NUM_SAMPLES} draws, {NUM_DRAWS} ranked draws; {n} simulations per method",
        "",
        "| method | total (s) | per simulation (s) |",
        "|---|---|---|",
        *[f"| {name} | {t:.1f} | {t / n:.2f} |" for name, t in rows],
        "",
        f"- overhead of the module, (b)/(a): **{t_b / t_a:.2f}x**",
        f"- speed-up of 2 worker processes, (b)/(c): **{t_b / t_c:.2f}x**",
        f"- ranks identical with 1 and 2 processes: {same}; uniformity p-value of (b), all quantities "
        f"(Bonferroni): {res1.pvalue():.3f}; (a) returned {len(ranks)} ranks",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
