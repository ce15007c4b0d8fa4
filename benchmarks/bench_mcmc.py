"""ESS per second: dlmppl's RiemannianNUTS against Pyro's NUTS (and NumPyro's), side by side in one run.

(a) posterior of a vMF mean direction on S^{d-1} (d = 3, 10, 50; uniform prior,
    N = 50 observations, κ = 10 known): RiemannianNUTS on the sphere against
    Pyro's NUTS with ``ProjectedNormalReparam`` (what a Pyro user writes today);
(b) 100-dimensional correlated Gaussian: RiemannianNUTS (Euclidean path) with its
    traced-once potential (the default), and with Pyro's potential
    (``trace_once=False``, the path before issue 15), against Pyro's NUTS: time per
    gradient evaluation (wall clock and CPU time of the process);
(c) Neal's funnel (10-d): RiemannianNUTS(metric="softabs") against Pyro's NUTS,
    ESS of the log-scale and divergences;
(d) with ``--numpyro``: NumPyro's NUTS on the target of (b) (same covariance, float64,
    diagonal mass, same warm-up and draws), its compile time reported apart.  NumPyro
    and jax (CPU) live in the benchmark's own environment ``benchmarks/.venv-numpyro``
    (created with ``python -m venv`` + ``pip install numpyro jax`` when absent; git-ignored),
    which runs ``benchmarks/_numpyro_gaussian.py``; the draws come back in a file and
    their ESS is computed here with the same estimator.

ESS: ``pyro.ops.stats.effective_sample_size`` of each coordinate (minimum over
coordinates), one chain.  Run: ``python benchmarks/bench_mcmc.py [--quick] [--numpyro]``;
writes ``benchmarks/results_mcmc.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
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


def _timed(kernel, num_samples, warmup, cpu=None, **kw):
    """Run one chain; ``(mcmc, wall seconds)``; the CPU seconds go to ``cpu`` (a list) if given."""
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, disable_progbar=True, **kw)
    t, c = time.perf_counter(), time.process_time()
    mcmc.run()
    if cpu is not None:
        cpu.append(time.process_time() - c)
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


def _gaussian_scale_tril(dim=100):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    cov = a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)
    return torch.linalg.cholesky(cov)


_GAUSSIAN_KERNELS = (
    ("RiemannianNUTS", RiemannianNUTS),
    ("RiemannianNUTS, Pyro's potential (trace_once=False: before)", lambda m: RiemannianNUTS(m, trace_once=False)),
    ("Pyro NUTS", NUTS),
)


def bench_gaussian(num_samples, warmup, dim=100, repeats=1):
    """Rows ``(name, wall s, ESS, divergences, gradient evaluations, CPU s)``, the kernels
    interleaved ``repeats`` times (the per-gradient costs: medians over the repeats)."""
    scale_tril = _gaussian_scale_tril(dim)
    loc = torch.zeros(dim, dtype=torch.float64)

    calls = [0]

    def model():
        calls[0] += 1  # one model run per potential (and gradient) evaluation, in all kernels
        pyro.sample("x", dist.MultivariateNormal(loc, scale_tril=scale_tril))

    torch.broadcast_shapes((1,), (1,))  # its first call imports sympy (seconds): not in any timing
    runs = {name: [] for name, _ in _GAUSSIAN_KERNELS}
    for _ in range(repeats):
        for name, k in _GAUSSIAN_KERNELS:
            pyro.set_rng_seed(0)
            calls[0] = 0
            cpu = []
            m, t = _timed(k(model), num_samples, warmup, cpu=cpu)
            diag = m._diagnostics[0]
            runs[name].append((t, _ess(m.get_samples()["x"]), len(diag["divergences"]), calls[0], cpu[0]))
    rows = []
    for name, rs in runs.items():
        med = sorted(rs, key=lambda r: r[0] / r[3])[len(rs) // 2]  # the run of median wall time per gradient
        rows.append((name, *med))
    return rows


def bench_numpyro(num_samples, warmup, dim=100):
    """NumPyro's NUTS on the target of (b), in benchmarks/.venv-numpyro (created if absent).

    Returns a dict (wall/CPU seconds of the timed run, compile seconds, ESS, gradient
    evaluations, versions), or a string saying why it did not run."""
    here = os.path.dirname(os.path.abspath(__file__))
    venv = os.path.join(here, ".venv-numpyro")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        try:
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run([py, "-m", "pip", "install", "-q", "numpyro", "jax"], check=True)
        except (subprocess.CalledProcessError, OSError) as e:
            return f"blocked: could not create {venv} with numpyro and jax ({e})"
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(src, scale_tril=_gaussian_scale_tril(dim).numpy())
        proc = subprocess.run([py, os.path.join(here, "_numpyro_gaussian.py"), src, out, str(num_samples), str(warmup)],
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            return f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        r = np.load(out)
        x = torch.as_tensor(r["x"])
        return {
            "time": float(r["time"]), "cpu": float(r["cpu_time"]), "compile": float(r["compile_time"]),
            "cpu_compile": float(r["cpu_compile_time"]), "ess": _ess(x), "gradients": int(r["gradients"]),
            "versions": tuple(str(v) for v in r["versions"]),
        }  # fmt: skip


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
    ap.add_argument("--numpyro", action="store_true", help="(d): NumPyro's NUTS on (b)'s target, in benchmarks/.venv-numpyro")
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
        "| sampler | time (s) | CPU (s) | ESS | ESS/s | divergences | gradient evaluations | ms per evaluation "
        "(wall, CPU) | per evaluation / Pyro NUTS's (wall, CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    repeats = 1 if args.quick else 3
    rows = bench_gaussian(ns, nw, repeats=repeats)
    ref = rows[-1]
    record("mcmc", "100-d Gaussian: CPU time per gradient ours / Pyro NUTS", (rows[0][5] / rows[0][4]) / (ref[5] / ref[4]),
           0.8, "lower")
    for name, t, ess, div, n, c in rows:
        rel = "" if name == "Pyro NUTS" else f"{(t / n) / (ref[1] / ref[4]):.2f}, {(c / n) / (ref[5] / ref[4]):.2f}"
        lines.append(
            f"| {name} | {t:.1f} | {c:.1f} | {ess:.0f} | {ess / t:.1f} | {div} | {n} | "
            f"{1e3 * t / n:.2f}, {1e3 * c / n:.2f} | {rel} |"
        )
    lines.append("")
    lines.append(
        "The kernels run the same algorithm (multinomial NUTS, diagonal mass adaptation, same warm-up "
        "schedule); the two RiemannianNUTS rows draw the same chain (same seed, same potential to the last "
        "bit), Pyro's NUTS another random stream, so trajectory lengths differ in a short run: the cost of a "
        "kernel is its time per gradient evaluation (each evaluation runs the model once in all three). "
        f"Kernels interleaved {repeats} time(s) in one process; the row of each is its run of median time "
        "per evaluation. CPU: the process's CPU time (the machine is shared)."
    )
    print("\n".join(lines[-4 - len(rows):]), flush=True)
    gaussian = rows[0]
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
    if args.numpyro:
        r = bench_numpyro(ns, nw)
        lines += ["", "## (d) NumPyro's NUTS on the 100-d Gaussian of (b) (--numpyro)", ""]
        if isinstance(r, str):
            lines.append(f"NumPyro not run: {r}")
        else:
            name, t, ess, div, n, c = gaussian
            ratio, ratio_cpu = (ess / t) / (r["ess"] / r["time"]), (ess / c) / (r["ess"] / r["cpu"])
            record("mcmc", "100-d Gaussian: ESS/s (CPU) ours / NumPyro NUTS", ratio_cpu, 1 / 3,
                   note="within 3x of NumPyro; compile time excluded")
            lines += [
                f"numpyro {r['versions'][0]}, jax {r['versions'][1]} (CPU, float64, one XLA thread), in "
                "benchmarks/.venv-numpyro. Times exclude compilation (reported apart: the first run's time "
                "minus the second's on one MCMC object).",
                "",
                "| sampler | time (s) | CPU (s) | compile (s, wall / CPU) | ESS | ESS/s (wall, CPU) | "
                "gradient evaluations | ms per evaluation (wall, CPU) | ESS/s ours/NumPyro (wall, CPU) |",
                "|---|---|---|---|---|---|---|---|---|",
                f"| {name} | {t:.1f} | {c:.1f} | 0 | {ess:.0f} | {ess / t:.1f}, {ess / c:.1f} | {n} | "
                f"{1e3 * t / n:.2f}, {1e3 * c / n:.2f} | {ratio:.2f}, {ratio_cpu:.2f} |",
                f"| NumPyro NUTS | {r['time']:.1f} | {r['cpu']:.1f} | {r['compile']:.1f} / {r['cpu_compile']:.1f} | "
                f"{r['ess']:.0f} | {r['ess'] / r['time']:.1f}, {r['ess'] / r['cpu']:.1f} | {r['gradients']} | "
                f"{1e3 * r['time'] / r['gradients']:.2f}, {1e3 * r['cpu'] / r['gradients']:.2f} |  |",
            ]
        print("\n".join(lines[-3:]), flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
