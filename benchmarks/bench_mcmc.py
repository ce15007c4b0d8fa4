"""ESS per second: dlmppl's RiemannianNUTS against Pyro's NUTS (and NumPyro's), side by side in one run.

(a) posterior of a vMF mean direction on S^{d-1} (d = 3, 10, 50; uniform prior,
    N = 50 observations, κ = 10 known): RiemannianNUTS on the sphere against
    Pyro's NUTS with ``ProjectedNormalReparam`` (what a Pyro user writes today);
(b) 100-dimensional correlated Gaussian: RiemannianNUTS (Euclidean path) with its
    traced-once potential (the default), and with Pyro's potential
    (``trace_once=False``, the path before issue 15), against Pyro's NUTS: time per
    gradient evaluation over the sampling phase (CPU time of the process, and wall
    clock), the kernels interleaved in rounds (:func:`bench_gaussian`);
(c) Neal's funnel (10-d): RiemannianNUTS(metric="softabs") against Pyro's NUTS,
    ESS of the log-scale and divergences;
(d) with ``--numpyro``: NumPyro's NUTS on the target of (b) (same covariance, float64,
    diagonal mass, same warm-up and draws), its compile time reported apart.  NumPyro
    and jax (CPU) live in the benchmark's own environment ``benchmarks/.venv-numpyro``
    (created with ``python -m venv`` + ``pip install numpyro jax`` when absent; git-ignored),
    which runs ``benchmarks/_numpyro_gaussian.py``; the draws come back in a file and
    their ESS is computed here with the same estimator.

ESS: ``pyro.ops.stats.effective_sample_size`` of each coordinate (minimum over
coordinates), one chain per seed ((a): seeds 0..N-1, totals).  Run: ``python benchmarks/bench_mcmc.py [--quick] [--numpyro] [--seeds N]
[--only a,b,c] [--rounds N]``; writes ``benchmarks/results_mcmc.md``.
"""

from __future__ import annotations

import argparse
import math
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
    """min over coordinates of the ESS of a (num_samples, ...) tensor (one chain), capped as Stan and arviz cap it.

    Pyro's estimator (Geyer's initial sequence) has no cap: for an antithetic coordinate (lag-1
    autocorrelation near -1, which NUTS produces) ``τ = -1 + 2 Σ ρ`` can come out near 0 or negative,
    and the ESS ``N / τ`` huge or negative (seen: -5000 from 200 draws).  Stan's rule
    ``τ ≥ 1 / log10 N`` bounds it by ``N log10 N``, for every sampler alike.
    """
    n = x.shape[0]
    flat = x.reshape(1, n, -1).double()
    ess = effective_sample_size(flat, chain_dim=0, sample_dim=1)
    tau = torch.clamp(n / ess, min=1.0 / math.log10(n)).where(ess > 0, torch.tensor(1.0 / math.log10(n), dtype=ess.dtype))
    return float((n / tau).min())


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


def bench_vmf(d, num_samples, warmup, seeds=(0,)):
    """Rows ``(sampler, CPU s, ESS, divergences, per-seed ESS/CPU s)`` summed over one chain per seed.

    One chain per seed and sampler, as a user runs it (``MCMC(kernel).run()`` after
    ``pyro.set_rng_seed(seed)``), the two samplers alternating which runs first; the ESS of one
    chain of a few hundred draws scatters by ±30 %, so the ratio is that of the totals,
    ``(Σ ESS / Σ CPU s)`` ours over Pyro's, over the seeds (CPU time of the process: both samplers
    are single-threaded, and the wall time also counts other jobs' time slices).
    """
    obs, kappa = _vmf_data(d)

    def ours():
        mu = pyro.sample("mu", ManifoldUniform(dlmppl.manifolds.Sphere(), event_shape=(d,), dtype=obs.dtype))
        pyro.factor("lik", kappa * (obs @ mu).sum())

    def theirs():
        mu = pyro.sample("mu", dist.ProjectedNormal(torch.zeros(d, dtype=obs.dtype)))
        pyro.factor("lik", kappa * (obs @ mu).sum())

    def run_ours(seed):
        pyro.set_rng_seed(seed)
        cpu = []
        m, _ = _timed(RiemannianNUTS(ours), num_samples, warmup, cpu=cpu)
        return cpu[0], _ess(m.get_samples()["mu"]), len(m._diagnostics[0]["divergences"])

    def run_theirs(seed):
        pyro.set_rng_seed(seed)
        cpu = []
        m, _ = _timed(NUTS(poutine.reparam(theirs, config={"mu": ProjectedNormalReparam()})), num_samples, warmup, cpu=cpu)
        # the reparameterised latent is "mu_normal"; mu = mu_normal / |mu_normal|
        mu = torch.nn.functional.normalize(m.get_samples()["mu_normal"], dim=-1)
        return cpu[0], _ess(mu), len(m._diagnostics[0]["divergences"])

    res = {"RiemannianNUTS": [], "Pyro NUTS + ProjectedNormalReparam": []}
    for i, seed in enumerate(seeds):
        order = [("RiemannianNUTS", run_ours), ("Pyro NUTS + ProjectedNormalReparam", run_theirs)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            res[name].append(fn(seed))
    return [
        (name, sum(r[0] for r in runs), sum(r[1] for r in runs), sum(r[2] for r in runs), [r[1] / r[0] for r in runs])
        for name, runs in res.items()
    ]


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
_OURS, _BEFORE, _PYRO = (name for name, _ in _GAUSSIAN_KERNELS)


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def bench_gaussian(num_samples, warmup, dim=100, rounds=1, before_rounds=None):
    """The kernels of (b) interleaved over ``rounds`` rounds (ours, ours before, Pyro's; the
    before-kernel in the first ``before_rounds`` rounds only, default all).

    Each run is what a user runs, ``MCMC(kernel, num_samples, warmup_steps).run()`` from seed 0
    (every round draws the same chain: the rounds differ only by the machine's load).  MCMC's
    ``hook_fn``, called after every transition, marks the end of warm-up and of the last draw, so
    that the timed phase is the same for every kernel: the ``num_samples`` transitions of the
    sampling phase (no setup, no warm-up); the model counts its runs (one per potential and
    gradient evaluation, in all kernels).  Returns ``{name: [run, ...]}``, a run a dict of the
    sampling phase's ``wall``, ``cpu`` seconds and ``grads``, the same over the whole ``run()``
    (``wall_all``, ``cpu_all``, ``grads_all``: setup and warm-up included), ``ess`` and ``div``."""
    scale_tril = _gaussian_scale_tril(dim)
    loc = torch.zeros(dim, dtype=torch.float64)

    calls = [0]

    def model():
        calls[0] += 1  # one model run per potential (and gradient) evaluation, in all kernels
        pyro.sample("x", dist.MultivariateNormal(loc, scale_tril=scale_tril))

    torch.broadcast_shapes((1,), (1,))  # its first call imports sympy (seconds): not in any timing
    runs = {name: [] for name, _ in _GAUSSIAN_KERNELS}
    for i in range(rounds):
        for name, k in _GAUSSIAN_KERNELS:
            if name == _BEFORE and before_rounds is not None and i >= before_rounds:
                continue
            marks = {}

            def hook(kernel, params, stage, j, marks=marks):
                if (stage.startswith("Warmup") and j == warmup - 1) or (stage.startswith("Sample") and j == num_samples - 1):
                    marks[stage[:6]] = (time.perf_counter(), time.process_time(), calls[0])

            pyro.set_rng_seed(0)
            calls[0] = 0
            mcmc = MCMC(k(model), num_samples=num_samples, warmup_steps=warmup, disable_progbar=True, hook_fn=hook)
            t0, c0 = time.perf_counter(), time.process_time()
            mcmc.run()
            t1, c1 = time.perf_counter(), time.process_time()
            (tw, cw, nw), (ts, cs, ns) = marks["Warmup"], marks["Sample"]
            runs[name].append({
                "wall": ts - tw, "cpu": cs - cw, "grads": ns - nw, "wall_all": t1 - t0, "cpu_all": c1 - c0,
                "grads_all": calls[0], "ess": _ess(mcmc.get_samples()["x"]),
                "div": len(mcmc._diagnostics[0]["divergences"]),
            })  # fmt: skip
    return runs


def _grads(key):
    return "grads_all" if key.endswith("_all") else "grads"


def gaussian_summary(runs):
    """Per kernel: medians over its rounds of the cost per gradient evaluation (ms, sampling phase:
    ``wall``, ``cpu``; whole run: ``wall_all``, ``cpu_all``) and, against Pyro's NUTS, the median
    over rounds of the ratio of the two runs of a round (``ratio_cpu``, ``ratio_wall``,
    ``ratio_cpu_all``) with the rounds' ``min``/``max`` of ``ratio_cpu``."""
    ref = runs[_PYRO]
    out = {}
    for name, rs in runs.items():
        row = {key: _median([1e3 * r[key] / r[_grads(key)] for r in rs]) for key in ("wall", "cpu", "wall_all", "cpu_all")}
        row.update(rounds=len(rs), grads=rs[0]["grads"], grads_all=rs[0]["grads_all"], ess=rs[0]["ess"], div=rs[0]["div"])
        if name != _PYRO:
            for key in ("cpu", "wall", "cpu_all"):
                g = _grads(key)
                # round i of this kernel against round i of Pyro's (run next to it)
                rat = [(a[key] / a[g]) / (b[key] / b[g]) for a, b in zip(rs, ref, strict=False)]
                row["ratio_" + key] = _median(rat)
                if key == "cpu":
                    row["min"], row["max"] = min(rat), max(rat)
        out[name] = row
    return out


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
    ap.add_argument("--only", default="a,b,c", help="sections to run, e.g. 'b' ((d) needs b)")
    ap.add_argument("--seeds", type=int, default=None, help="(a): chains (seeds 0..N-1) per sampler (default 3 with --quick, else 5)")
    ap.add_argument("--rounds", type=int, default=None, help="(b): interleaved rounds (default 3 with --quick, else 5)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results_mcmc.md"))
    args = ap.parse_args()
    sections = set(args.only.split(",")) - ({"c"} if args.no_funnel else set())
    torch.set_num_threads(1)
    ns, nw = (200, 150) if args.quick else (500, 300)
    lines = [
        "# MCMC benchmark (bench_mcmc.py)",
        "",
        f"Machine: shared 2-core CPU, no GPU, 1 torch thread, load from other jobs (timings noisy); "
        f"torch {torch.__version__}, pyro {pyro.__version__}, {platform.python_version()}. "
        f"One chain, {ns} draws after {nw} warm-up steps. ESS = min over coordinates.",
    ]
    if "a" in sections:
        lines += [
            "",
            "## (a) vMF mean direction posterior (N=50, κ=10, uniform prior)",
            "",
            f"One chain per seed and sampler, seeds 0-{(args.seeds or (3 if args.quick else 5)) - 1}, the samplers "
            "alternating which runs first; time = CPU s of the process summed over the seeds, ESS summed over "
            "the seeds; the ratio is (Σ ESS / Σ CPU s) ours over Pyro's (the ESS of one chain of a few hundred "
            "draws scatters by ±30 %: one seed's ratio went from 2.4 to 3.4 between runs of the same code).",
            "",
            "| d | sampler | CPU time (s) | ESS | ESS per CPU s | divergences | ratio (ours/Pyro) | per-seed ratios |",
            "|---|---|---|---|---|---|---|---|",
        ]
    gaussian = None
    seeds = tuple(range(args.seeds or (3 if args.quick else 5)))
    for d in (3, 10, 50) if "a" in sections else ():
        rows = bench_vmf(d, ns, nw, seeds)
        ratio = (rows[0][2] / rows[0][1]) / max(rows[1][2] / rows[1][1], 1e-12)
        per_seed = [a / max(b, 1e-12) for a, b in zip(rows[0][4], rows[1][4], strict=True)]
        record("mcmc", f"vMF mean d={d}: ESS/s ours / Pyro NUTS+reparam", ratio, 3.0,
               note=f"ESS per CPU s, totals over {len(seeds)} seeds; per seed {min(per_seed):.2f}-{max(per_seed):.2f}")
        for i, (name, t, ess, div, _) in enumerate(rows):
            seeds_col = ", ".join(f"{r:.2f}" for r in per_seed) if i == 0 else ""
            lines.append(f"| {d} | {name} | {t:.1f} | {ess:.0f} | {ess / t:.1f} | {div} | {f'{ratio:.2f}' if i == 0 else ''} | {seeds_col} |")
        print("\n".join(lines[-2:]), flush=True)
    if "b" in sections:
        rounds = args.rounds or (3 if args.quick else 5)
        before_rounds = 1 if args.quick else None
        runs = bench_gaussian(ns, nw, rounds=rounds, before_rounds=before_rounds)
        summary = gaussian_summary(runs)
        ours = summary[_OURS]
        record("mcmc", "100-d Gaussian: CPU time per gradient ours / Pyro NUTS", ours["ratio_cpu"], 0.8, "lower",
               note=f"sampling phase; median of {rounds} interleaved rounds (min {ours['min']:.2f}, max {ours['max']:.2f})")
        lines += [
            "",
            "## (b) 100-d correlated Gaussian (diagonal mass matrix adaptation)",
            "",
            "| sampler | rounds | ESS | divergences | gradient evaluations (sampling; whole run) | ms per evaluation, "
            "sampling (wall, CPU) | ms per evaluation, whole run (CPU) | per evaluation / Pyro NUTS's: CPU, sampling "
            "(median [min, max] of rounds) | same, wall, sampling | same, CPU, whole run |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in summary.items():
            rel = ("| | |" if name == _PYRO else
                   f"**{r['ratio_cpu']:.2f}** [{r['min']:.2f}, {r['max']:.2f}] | {r['ratio_wall']:.2f} | {r['ratio_cpu_all']:.2f} |")
            lines.append(
                f"| {name} | {r['rounds']} | {r['ess']:.0f} | {r['div']} | {r['grads']}; {r['grads_all']} | "
                f"{r['wall']:.3f}, {r['cpu']:.3f} | {r['cpu_all']:.3f} | {rel}"
            )  # fmt: skip
        lines.append("")
        lines.append(
            "The kernels run the same algorithm (multinomial NUTS, diagonal mass adaptation, same warm-up "
            "schedule); the two RiemannianNUTS rows draw the same chain (same seed, same potential to the last "
            "bit), Pyro's NUTS another random stream, so trajectory lengths differ in a short run: the cost of a "
            "kernel is its time per gradient evaluation (each evaluation runs the model once in all three). "
            f"Each kernel runs as a user runs it (`MCMC(kernel, {ns}, warmup_steps={nw}).run()`, seed 0), in "
            f"{rounds} rounds in one process, the kernels interleaved within each round"
            + (" (the before-kernel in the first round only)" if before_rounds else "")
            + "; MCMC's `hook_fn` marks the end of warm-up and of the last draw, so the measure of record is "
            "the same phase for every kernel: CPU time of the process over the sampling phase (no setup, no "
            "warm-up) divided by the gradient evaluations in it, each round's value divided by Pyro NUTS's of "
            "the same round, the median over rounds (the other columns: medians over rounds, per kernel)."
        )
        print("\n".join(lines[-3 - len(summary):]), flush=True)
        runs_ours = runs[_OURS]
        med = sorted(runs_ours, key=lambda r: r["cpu_all"] / r["grads_all"])[len(runs_ours) // 2]
        gaussian = (_OURS, med["wall_all"], med["ess"], med["div"], med["grads_all"], med["cpu_all"])
    if "c" in sections:
        lines += [
            "",
            "## (c) Neal's funnel, 10-d (ESS and quantiles of the log-scale v ~ N(0, 3²); exact q10/q90 = ∓3.84)",
            "",
            "| sampler | time (s) | ESS(v) | ESS(v)/s | divergences | q10, q90 of v |",
            "|---|---|---|---|---|---|",
        ]
        for name, t, ess, div, q in bench_funnel(ns, nw):
            lines.append(f"| {name} | {t:.1f} | {ess:.0f} | {ess / t:.2f} | {div} | {q[0]:.2f}, {q[1]:.2f} |")
        print("\n".join(lines[-2:]), flush=True)
    if args.numpyro and gaussian is not None:
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
    text = "\n".join(lines) + "\n"
    ran = set(sections) | ({"d"} if args.numpyro else set())
    if ran != {"a", "b", "c", "d"} and os.path.exists(args.out):
        # a partial run (--only, --no-funnel, no --numpyro) keeps the other sections of the file, marked as older
        old = open(args.out).read().split("\n## ")[1:]
        new = {block[1]: block for block in text.split("\n## ")[1:]}
        for block in old:
            key = block[1]
            if key not in new and key not in ran:
                head, _, body = block.partition("\n")
                note = "*(From an earlier run of this file: this section was not rerun.)*"
                new[key] = head + "\n\n" + note + body if note not in body else block
        text = text.split("\n## ")[0] + "".join("\n## " + new[k] for k in sorted(new))
        text = text.rstrip("\n") + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
