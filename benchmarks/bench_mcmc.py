"""ESS per second: dlmppl's RiemannianNUTS against Pyro's NUTS, side by side in one run.

(a) posterior of a vMF mean direction on S^{d-1} (d = 3, 10, 50; uniform prior,
    N = 50 observations, κ = 10 known): RiemannianNUTS on the sphere against
    Pyro's NUTS with ``ProjectedNormalReparam`` (what a Pyro user writes today);
(b) 100-dimensional correlated Gaussian: RiemannianNUTS (Euclidean path)
    against Pyro's NUTS, overhead ratio;
(c) Neal's funnel (10-d): RiemannianNUTS(metric="softabs") against Pyro's NUTS,
    ESS of the log-scale and divergences.

ESS: ``pyro.ops.stats.effective_sample_size`` of each coordinate (minimum over
coordinates), one chain.  Run: ``python benchmarks/bench_mcmc.py [--quick]``;
writes ``benchmarks/results_mcmc.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.infer.reparam import ProjectedNormalReparam
from pyro.ops.stats import effective_sample_size
from ratios import record  # benchmarks/ is on sys.path when this script runs

import dlmppl
from dlmppl.distributions import ManifoldUniform
from dlmppl.inference import RiemannianNUTS


def _ess(x):
    """min over coordinates of the ESS of a (num_samples, ...) tensor (one chain)."""
    flat = x.reshape(1, x.shape[0], -1).double()
    return float(effective_sample_size(flat, chain_dim=0, sample_dim=1).min())


def _timed(kernel, num_samples, warmup, **kw):
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, disable_progbar=True, **kw)
    t = time.perf_counter()
    mcmc.run()
    return mcmc, time.perf_counter() - t


def _vmf_data(d, n=50, kappa=10.0):
    import numpy as np
    import scipy.stats

    mu = torch.zeros(d, dtype=torch.float64)
    mu[0] = 1.0
    x = scipy.stats.vonmises_fisher(mu.numpy(), kappa).rvs(n, random_state=np.random.default_rng(d))
    return torch.as_tensor(x), kappa


def bench_vmf(d, num_samples, warmup):
    obs, kappa = _vmf_data(d)

    def ours():
        mu = pyro.sample("mu", ManifoldUniform(dlmppl.manifolds.Sphere(), event_shape=(d,), dtype=obs.dtype))
        pyro.factor("lik", kappa * (obs @ mu).sum())

    def theirs():
        mu = pyro.sample("mu", dist.ProjectedNormal(torch.zeros(d, dtype=obs.dtype)))
        pyro.factor("lik", kappa * (obs @ mu).sum())

    rows = []
    pyro.set_rng_seed(0)
    m, t = _timed(RiemannianNUTS(ours), num_samples, warmup)
    rows.append(("RiemannianNUTS", t, _ess(m.get_samples()["mu"]), len(m._diagnostics[0]["divergences"])))
    pyro.set_rng_seed(0)
    m, t = _timed(NUTS(poutine.reparam(theirs, config={"mu": ProjectedNormalReparam()})), num_samples, warmup)
    # the reparameterised latent is "mu_normal"; mu = mu_normal / |mu_normal|
    mu = torch.nn.functional.normalize(m.get_samples()["mu_normal"], dim=-1)
    rows.append(("Pyro NUTS + ProjectedNormalReparam", t, _ess(mu), len(m._diagnostics[0]["divergences"])))
    return rows


def bench_gaussian(num_samples, warmup, dim=100):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    cov = a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)
    scale_tril = torch.linalg.cholesky(cov)
    loc = torch.zeros(dim, dtype=torch.float64)

    calls = [0]

    def model():
        calls[0] += 1  # one model trace per potential (and gradient) evaluation, in both kernels
        pyro.sample("x", dist.MultivariateNormal(loc, scale_tril=scale_tril))

    rows = []
    for name, k in (("RiemannianNUTS", RiemannianNUTS), ("Pyro NUTS", NUTS)):
        pyro.set_rng_seed(0)
        calls[0] = 0
        m, t = _timed(k(model), num_samples, warmup)
        diag = m._diagnostics[0]
        rows.append((name, t, _ess(m.get_samples()["x"]), len(diag["divergences"]), calls[0]))
    return rows


def _funnel(z):
    v, x = z["v"], z["x"]
    return v.pow(2).sum() / 18 + 0.5 * (x.pow(2) * torch.exp(-v)).sum() + 4.5 * v.sum()


def bench_funnel(num_samples, warmup):
    init = {"v": torch.zeros(1, dtype=torch.float64), "x": torch.full((9,), 0.5, dtype=torch.float64)}
    rows = []
    for name, kernel in (
        ("RiemannianNUTS softabs", RiemannianNUTS(potential_fn=_funnel, metric="softabs", max_tree_depth=5)),
        ("Pyro NUTS", NUTS(potential_fn=_funnel)),
    ):
        pyro.set_rng_seed(0)
        m, t = _timed(kernel, num_samples, warmup, initial_params=init)
        v = m.get_samples()["v"].squeeze(-1)
        q = torch.quantile(v, torch.tensor([0.1, 0.9], dtype=torch.float64))
        rows.append((name, t, _ess(v), len(m._diagnostics[0]["divergences"]), q.tolist()))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-funnel", action="store_true", help="skip (c), minutes under load (bench_all)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results_mcmc.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    ns, nw = (200, 150) if args.quick else (500, 300)
    lines = [
        "# MCMC benchmark (bench_mcmc.py)",
        "",
        f"Machine: shared 2-core CPU, no GPU, 1 torch thread, load from other jobs (timings noisy); "
        f"torch {torch.__version__}, pyro {pyro.__version__}, {platform.python_version()}. "
        f"One chain, {ns} draws after {nw} warm-up steps. ESS = min over coordinates.",
        "",
        "## (a) vMF mean direction posterior (N=50, κ=10, uniform prior)",
        "",
        "| d | sampler | time (s) | ESS | ESS/s | divergences | ESS/s ratio (ours/Pyro) |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in (3, 10, 50):
        rows = bench_vmf(d, ns, nw)
        ratio = (rows[0][2] / rows[0][1]) / max(rows[1][2] / rows[1][1], 1e-12)
        record("mcmc", f"vMF mean d={d}: ESS/s ours / Pyro NUTS+reparam", ratio, 3.0)
        for i, (name, t, ess, div) in enumerate(rows):
            lines.append(f"| {d} | {name} | {t:.1f} | {ess:.0f} | {ess / t:.1f} | {div} | {f'{ratio:.2f}' if i == 0 else ''} |")
        print("\n".join(lines[-2:]), flush=True)
    lines += [
        "",
        "## (b) 100-d correlated Gaussian (diagonal mass matrix adaptation)",
        "",
        "| sampler | time (s) | ESS | ESS/s | divergences | gradient evaluations | ms per evaluation | "
        "overhead per evaluation (ours/Pyro) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = bench_gaussian(ns, nw)
    per = [t / max(n, 1) for _, t, _, _, n in rows]
    record("mcmc", "100-d Gaussian: time per gradient ours / Pyro NUTS", per[0] / per[1], 0.8, "lower")
    for i, (name, t, ess, div, n) in enumerate(rows):
        lines.append(
            f"| {name} | {t:.1f} | {ess:.0f} | {ess / t:.1f} | {div} | {n} | {1e3 * per[i]:.2f} | "
            f"{f'{per[0] / per[1]:.2f}' if i == 0 else ''} |"
        )
    lines.append("")
    lines.append(
        "The two kernels run the same algorithm (multinomial NUTS, diagonal mass adaptation, same warm-up "
        "schedule) on different random streams, so their trajectory lengths differ in a short run; the cost "
        "of the kernel is the time per gradient evaluation (each evaluation traces the model once in both)."
    )
    print("\n".join(lines[-4:]), flush=True)
    lines += [
        "",
        "## (c) Neal's funnel, 10-d (ESS and quantiles of the log-scale v ~ N(0, 3²); exact q10/q90 = ∓3.84)",
        "",
        "| sampler | time (s) | ESS(v) | ESS(v)/s | divergences | q10, q90 of v |",
        "|---|---|---|---|---|---|",
    ]
    for name, t, ess, div, q in [] if args.no_funnel else bench_funnel(ns, nw):
        lines.append(f"| {name} | {t:.1f} | {ess:.0f} | {ess / t:.2f} | {div} | {q[0]:.2f}, {q[1]:.2f} |")
    print("\n".join(lines[-2:]), flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
