"""ESS per second of several chains: vectorised RiemannianNUTS chains against sequential chains, side by side.

(a) posterior of a vMF mean direction on S^{d-1} (d = 3, 10, 50; uniform prior, N = 50
    observations, κ = 10 known; the model of bench_mcmc.py with the likelihood written to
    broadcast over leading dims), 4 chains: ``dlmppl.inference.MCMC(chain_method="vectorized")``
    with RiemannianNUTS, RiemannianNUTS with Pyro's MCMC (chains one after the other: 4 chains
    exceed the CPUs Pyro reserves on this machine), and Pyro's NUTS with
    ``ProjectedNormalReparam`` (4 chains, sequential as Pyro runs them here);
(b) the 100-d correlated Gaussian of bench_mcmc.py (b): vectorised RiemannianNUTS with 4 and 8
    chains against Pyro's NUTS with 4 chains.

ESS: arviz's bulk ESS over all chains (``az.ess`` of the ``(chain, draw)`` array) of every
coordinate, the minimum over coordinates; ESS/s = ESS / time of the whole run (warm-up included),
with the process's CPU time (one torch thread: the compute the run costs, robust to other jobs on a
shared machine) and, beside it, the wall time.  The draws are reproducible (fixed seeds): only the
times vary between runs.  ``--repeats R`` runs the samplers of each d R times, round-robin
(vectorised, sequential, Pyro, vectorised, ...), and takes each one's median CPU and wall time
(the draws, so the ESS, are the same in every round): on a shared machine one pair of runs can
move a ratio by 20%.  Run: ``python benchmarks/bench_chains.py [--quick] [--repeats R]
[--dims 3,10,50] [--no-gaussian]``; writes ``benchmarks/results_chains.md``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from calibration import machine  # benchmarks/ is on sys.path when this script runs
from pyro import poutine
from pyro.infer import NUTS
from pyro.infer.reparam import ProjectedNormalReparam
from ratios import record

import dlmppl
from dlmppl.distributions import ManifoldUniform
from dlmppl.inference import MCMC, RiemannianNUTS


def _ess(x):
    """min over coordinates of arviz's bulk ESS of ``x`` ``(chain, draw, ...)``, all chains together."""
    a = x.detach().double().cpu().numpy()
    a = a.reshape(a.shape[0], a.shape[1], -1)
    return float(min(az.ess(a[..., i], method="bulk") for i in range(a.shape[-1])))


def _timed(kernel, num_samples, warmup, num_chains, **kw):
    """``(mcmc, cpu seconds, wall seconds)`` of one run."""
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=num_chains, disable_progbar=True, **kw)
    t, c = time.perf_counter(), _cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pyro's "chains will be drawn sequentially"
        mcmc.run()
    return mcmc, _cpu() - c, time.perf_counter() - t


def _cpu():
    """CPU seconds of this process and its finished children (Pyro's chain processes, where it uses them)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _divergences(m):
    return sum(len(d["divergences"]) for d in m._diagnostics)


def _steps(m):
    """Leapfrog steps summed over chains (our kernels' sample stats), or None."""
    try:
        return int(sum(int(d.sample_stats["n_steps"].sum()) for d in m._diagnostics))
    except (AttributeError, KeyError, TypeError):
        return None


def _vmf_data(d, n=50, kappa=10.0):
    import scipy.stats

    mu = torch.zeros(d, dtype=torch.float64)
    mu[0] = 1.0
    x = scipy.stats.vonmises_fisher(mu.numpy(), kappa).rvs(n, random_state=np.random.default_rng(d))
    return torch.as_tensor(x), kappa


def bench_vmf(d, num_samples, warmup, num_chains=4, repeats=1):
    """Rows ``(sampler, median CPU s, median wall s, ESS, divergences, leapfrog steps)`` and the
    per-round ESS/CPU s ratios of the vectorised chains to Pyro."""
    obs, kappa = _vmf_data(d)

    def ours():
        mu = pyro.sample("mu", ManifoldUniform(dlmppl.manifolds.Sphere(), event_shape=(d,), dtype=obs.dtype))
        pyro.factor("lik", kappa * (mu @ obs.T).sum(-1))  # broadcasts over leading (chain) dims

    def theirs():
        mu = pyro.sample("mu", dist.ProjectedNormal(torch.zeros(d, dtype=obs.dtype)))
        pyro.factor("lik", kappa * (mu @ obs.T).sum(-1))

    def vectorised():
        m, c, t = _timed(RiemannianNUTS(ours), num_samples, warmup, num_chains, chain_method="vectorized")
        return c, t, _ess(m.get_samples(group_by_chain=True)["mu"]), _divergences(m), _steps(m)

    def sequential():
        m, c, t = _timed(RiemannianNUTS(ours), num_samples, warmup, num_chains)
        return c, t, _ess(m.get_samples(group_by_chain=True)["mu"]), _divergences(m), _steps(m)

    def pyro_reparam():
        m, c, t = _timed(NUTS(poutine.reparam(theirs, config={"mu": ProjectedNormalReparam()})), num_samples, warmup, num_chains)
        mu = torch.nn.functional.normalize(m.get_samples(group_by_chain=True)["mu_normal"], dim=-1)
        return c, t, _ess(mu), _divergences(m), None

    samplers = [("RiemannianNUTS, vectorised chains", vectorised), ("RiemannianNUTS, sequential chains", sequential),
                ("Pyro NUTS + ProjectedNormalReparam, sequential chains", pyro_reparam)]  # fmt: skip
    runs = {name: [] for name, _ in samplers}
    for _ in range(repeats):
        for name, fn in samplers:
            pyro.set_rng_seed(0)
            runs[name].append(fn())
    rows = []
    for name, _ in samplers:
        r = runs[name]
        rows.append((name, float(np.median([x[0] for x in r])), float(np.median([x[1] for x in r])), r[0][2], r[0][3], r[0][4]))
    vec, ref = runs[samplers[0][0]], runs[samplers[2][0]]
    per_round = [(v[2] / v[0]) / (p[2] / p[0]) for v, p in zip(vec, ref, strict=True)]
    return rows, per_round


def bench_gaussian(num_samples, warmup, chains=(4, 8), dim=100):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    cov = a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)
    scale_tril = torch.linalg.cholesky(cov)
    loc = torch.zeros(dim, dtype=torch.float64)

    def model():
        pyro.sample("x", dist.MultivariateNormal(loc, scale_tril=scale_tril))

    rows = []
    for k in chains:
        pyro.set_rng_seed(0)
        m, c, t = _timed(RiemannianNUTS(model), num_samples, warmup, k, chain_method="vectorized")
        rows.append((f"RiemannianNUTS, {k} vectorised chains", k, c, t, _ess(m.get_samples(group_by_chain=True)["x"]), _divergences(m)))
    pyro.set_rng_seed(0)
    m, c, t = _timed(NUTS(model), num_samples, warmup, 4)
    rows.append(("Pyro NUTS, 4 sequential chains", 4, c, t, _ess(m.get_samples(group_by_chain=True)["x"]), _divergences(m)))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results_chains.md"))
    ap.add_argument("--repeats", type=int, default=1, help="rounds of each (a) comparison; median times")
    ap.add_argument("--dims", default="3,10,50", help="the d of (a), comma-separated")
    ap.add_argument("--no-gaussian", action="store_true", help="skip (b)")
    args = ap.parse_args()
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    torch.set_num_threads(1)
    ns, nw = (100, 100) if args.quick else (500, 300)
    info = machine()
    lines = [
        "# Vectorised chains benchmark (bench_chains.py)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (shared with other jobs: timings noisy), no GPU, "
        f"1 torch thread; torch {info['torch']}, pyro {info['pyro']}, arviz {info['arviz']}, Python {info['python']}. "
        f"{'`--quick`: ' if args.quick else ''}{ns} draws per chain after {nw} warm-up steps. "
        "ESS = arviz bulk ESS over all chains, minimum over coordinates; ESS/s over the whole run (warm-up included), "
        "per CPU second of the process (the ratios) and per wall second"
        + (f"; (a): median CPU and wall times of {args.repeats} rounds, the samplers run round-robin." if args.repeats > 1 else "."),
        "",
        "## (a) vMF mean direction posterior (N=50, κ=10, uniform prior), 4 chains",
        "",
        "| d | sampler | CPU time (s) | wall time (s) | ESS | ESS/CPU s | divergences | leapfrog steps after warm-up (all chains) "
        "| ESS/CPU s ratio to Pyro + ProjectedNormalReparam | ESS/wall s ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rounds = []
    for d in (int(x) for x in args.dims.split(",")):
        rows, per_round = bench_vmf(d, ns, nw, repeats=args.repeats)
        ref, ref_wall = rows[2][3] / rows[2][1], rows[2][3] / rows[2][2]
        record("chains", f"vMF mean d={d}: ESS/CPU s vectorised RiemannianNUTS / Pyro NUTS+reparam (4 chains)",
               (rows[0][3] / rows[0][1]) / max(ref, 1e-12), 3.0,
               note=f"median of {args.repeats} rounds" if args.repeats > 1 else "")  # fmt: skip
        rounds.append((d, per_round))
        for name, c, t, ess, div, steps in rows:
            lines.append(f"| {d} | {name} | {c:.1f} | {t:.1f} | {ess:.0f} | {ess / c:.1f} | {div} | {steps if steps is not None else ''} | "
                         f"{(ess / c) / max(ref, 1e-12):.2f} | {(ess / t) / max(ref_wall, 1e-12):.2f} |")  # fmt: skip
        print("\n".join(lines[-3:]), flush=True)
    if args.repeats > 1:
        lines += ["", "ESS/CPU s ratio, vectorised RiemannianNUTS / Pyro + ProjectedNormalReparam, of each round (same-round pair): "
                  + "; ".join(f"d={d}: " + ", ".join(f"{x:.2f}" for x in r) for d, r in rounds) + "."]  # fmt: skip
        print(lines[-1], flush=True)
    if args.no_gaussian:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
        return
    lines += [
        "",
        "## (b) 100-d correlated Gaussian (diagonal mass adaptation)",
        "",
        "| sampler | chains | CPU time (s) | wall time (s) | ESS | ESS/CPU s | divergences | ESS/CPU s ratio to Pyro NUTS "
        "| ESS/wall s ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = bench_gaussian(ns, nw)
    ref, ref_wall = rows[-1][4] / rows[-1][2], rows[-1][4] / rows[-1][3]
    for name, k, c, t, ess, div in rows:
        lines.append(f"| {name} | {k} | {c:.1f} | {t:.1f} | {ess:.0f} | {ess / c:.1f} | {div} | "
                     f"{(ess / c) / max(ref, 1e-12):.2f} | {(ess / t) / max(ref_wall, 1e-12):.2f} |")  # fmt: skip
    print("\n".join(lines[-len(rows):]), flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
