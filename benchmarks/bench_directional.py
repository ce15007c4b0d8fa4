"""Throughput of log_prob and rsample: VonMisesFisher / PowerSpherical vs scipy and Pyro.

Compared side by side in one run at d = 3, 64, 512 with 10^4 points:

* ``one dist``: one (μ, κ), 10^4 points (a likelihood over data; sampling 10^4 draws);
* ``10^4 dists``: batch of 10^4 distinct (μ, κ), one point each (a VAE's posteriors),
  which scipy cannot do without a Python loop (not timed);
* ``rsample+grad``: 10^4 draws and a backward pass to (μ, κ).

Peers: ``scipy.stats.vonmises_fisher`` (logpdf / rvs), ``pyro.distributions.ProjectedNormal``
(Pyro's sphere distribution; its log_prob exists only for d ≤ 4).  Run:
``python benchmarks/bench_directional.py [--repeats N] [--before REV] [--out benchmarks/results_directional.md]``.

``--before REV`` also times ``VonMisesFisher`` as it was at git revision ``REV`` (its
``von_mises_fisher.py`` loaded beside the current package), in the same run, so the
target table shows the speed-ups before and after a change side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import random
import statistics
import subprocess
import tempfile
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


def unit(shape, d, gen):
    x = torch.randn(*shape, d, generator=gen, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def load_before(rev):
    """``VonMisesFisher`` of ``dlmppl/distributions/von_mises_fisher.py`` at git revision ``rev``.

    The file is loaded as a sibling module of the current ``dlmppl.distributions`` (its
    relative imports resolve to the current package), for timing only.
    """
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "show", f"{rev}:dlmppl/distributions/von_mises_fisher.py"], cwd=root,
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "von_mises_fisher_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("dlmppl.distributions._vmf_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.VonMisesFisher


def interleaved_times(fns, repeats):
    """Median thread CPU time (seconds) of each callable in ``fns``, measured round-robin.

    Each of the ``repeats`` rounds times every method once, in turn, so that a change in the
    shared machine's load during the run falls on all of them alike (timing one method's
    repeats in a block and then the next made two runs of identical code differ by 2-3× at a
    load average of 10 on 2 cores); the order is shuffled in every round, since a method timed
    right after scipy was measured up to 1.4× slower (+0.06 ms at d = 3) than the same code
    timed after another torch method.
    """
    for fn in fns.values():
        fn()  # warm-up
    keys = list(fns)
    times = {key: [] for key in keys}
    order = random.Random(0)
    for _ in range(repeats):
        order.shuffle(keys)  # no method always follows the same one
        for key in keys:
            t = time.thread_time()
            fns[key]()
            times[key].append(time.thread_time() - t)
    return {key: statistics.median(v) for key, v in times.items()}


def bench_dim(d, repeats, gen, before=None):
    """Timings (seconds) of every method and task at dimension ``d``; ``before``: an older ``VonMisesFisher`` class."""
    mu = unit((), d, gen)
    kappa = torch.tensor(10.0, dtype=torch.float64)
    mus = unit((N,), d, gen)
    kappas = torch.rand(N, generator=gen, dtype=torch.float64) * 50
    x = unit((N,), d, gen)
    sp = stats.vonmises_fisher(mu.numpy(), float(kappa))
    xn = x.numpy()
    rng = np.random.default_rng(0)
    vmf = {"dlmppl vMF": VonMisesFisher}
    if before is not None:
        vmf[BEFORE] = before
    fns = {}
    # log_prob, one distribution
    fns["lp1", "scipy vMF"] = lambda: sp.logpdf(xn)
    for name, cls in vmf.items():
        fns["lp1", name] = lambda cls=cls: cls(mu, kappa, validate_args=False).log_prob(x)
    fns["lp1", "dlmppl PowerSpherical"] = lambda: PowerSpherical(mu, kappa, validate_args=False).log_prob(x)
    if d <= 4:
        fns["lp1", "pyro ProjectedNormal"] = lambda: pdist.ProjectedNormal(kappa * mu, validate_args=False).log_prob(x)
    # log_prob, 10^4 distributions
    fns["lpB", "dlmppl vMF"] = lambda: VonMisesFisher(mus, kappas, validate_args=False).log_prob(x)
    fns["lpB", "dlmppl PowerSpherical"] = lambda: PowerSpherical(mus, kappas, validate_args=False).log_prob(x)
    if d <= 4:
        fns["lpB", "pyro ProjectedNormal"] = lambda: pdist.ProjectedNormal(kappas[:, None] * mus, validate_args=False).log_prob(x)

    # sampling 10^4 draws of one distribution
    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    fns["s1", "scipy vMF"] = lambda: sp.rvs(N, random_state=rng)
    for name, cls in vmf.items():
        fns["s1", name] = no_grad(lambda cls=cls: cls(mu, kappa, validate_args=False).rsample((N,)))
    fns["s1", "dlmppl PowerSpherical"] = no_grad(lambda: PowerSpherical(mu, kappa, validate_args=False).rsample((N,)))
    fns["s1", "pyro ProjectedNormal"] = no_grad(lambda: pdist.ProjectedNormal(kappa * mu, validate_args=False).rsample((N,)))

    # rsample + backward, 10^4 distinct distributions
    def grad_step(make):
        m = mus.clone().requires_grad_(True)
        k = kappas.clone().requires_grad_(True)
        make(m, k).rsample().sum().backward()

    for name, cls in vmf.items():
        fns["sB", name] = lambda cls=cls: grad_step(lambda m, k: cls(m, k, validate_args=False))
    fns["sB", "dlmppl PowerSpherical"] = lambda: grad_step(lambda m, k: PowerSpherical(m, k, validate_args=False))
    fns["sB", "pyro ProjectedNormal"] = lambda: grad_step(lambda m, k: pdist.ProjectedNormal(k[:, None] * m, validate_args=False))
    res = {}
    for task in TASKS:  # methods of one task interleaved; tasks one after the other
        res.update(interleaved_times({key: fn for key, fn in fns.items() if key[0] == task}, repeats))
    return res


BEFORE = "dlmppl vMF before"


def run(repeats, dims=(3, 64, 512), before=None):
    gen = torch.Generator().manual_seed(0)
    return [(d, bench_dim(d, repeats, gen, before)) for d in dims]


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
    """The issue-15 targets: speed-up of the current vMF (and of the ``--before`` one, same run) over the peer."""
    has_before = any((task, BEFORE) in res for _, res in rows for task in ("lp1", "s1", "sB"))
    head = "| d | task | peer | " + ("speed-up before | " if has_before else "") + "speed-up of dlmppl vMF (peer time / vMF time) | target | met |"
    lines = [head, "|---|---|---|" + ("---:|" if has_before else "") + "---:|---|---|"]
    by_d = dict(rows)
    for d, task, peer, bound, op in TARGETS:
        res = by_d.get(d)
        if res is None or (task, peer) not in res:
            continue
        r = res[task, peer] / res[task, "dlmppl vMF"]
        short = {"lp1": "log_prob", "s1": "sample", "sB": "rsample+backward, 1e4 dists"}[task]
        record("directional", f"vMF d={d} {short}: speed-up vs {peer}", r, bound, "higher" if op == "≥" else "lower")
        b = f"{res[task, peer] / res[task, BEFORE]:.2f}× | " if has_before and (task, BEFORE) in res else ("— | " if has_before else "")
        lines.append(f"| {d} | {TASKS[task]} | {peer} | {b}{r:.2f}× | {op} {bound:g}× | {'yes' if r >= bound else 'no'} |")
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
    ap.add_argument("--before", default=None, help="git revision whose VonMisesFisher is timed too, in the same run")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results_directional.md"))
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.dims = min(args.repeats, 3), "3,64"
        if args.out == ap.get_default("out"):  # a quick run does not overwrite the full results
            args.out = str(quick_out("directional"))
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    before = load_before(args.before) if args.before else None
    rows = run(args.repeats, tuple(int(d) for d in args.dims.split(",")), before)
    body = targets_table(rows) + "\n\n" + table(rows)
    header = (
        "# Directional distributions: throughput (benchmarks/bench_directional.py)\n\n"
        f"Machine: shared 2-core CPU (no GPU; other engineers' jobs were running), {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__} ({args.threads} thread), pyro {pyro.__version__}, scipy {scipy.__version__}, "
        f"Python {platform.python_version()}; float64; median CPU time of the calling thread over {args.repeats} runs "
        "(`time.thread_time`: every method is single-threaded, and wall time on the shared machine also counts "
        "other jobs' time slices); the methods of one task are timed round-robin (one call of each per round, "
        "in an order shuffled every round), so that changes of the machine's load fall on all of them alike.  One table per code version (`--label`), each from its own run; the ratios "
        "inside a table are same-run.\n\n"
        "Ratios are speed-ups (time of the peer / time of the method); > 1 means faster than the peer. "
        "scipy's vMF has no batch of parameters (so no '10^4 dists' rows) and no gradients; "
        "Pyro's ProjectedNormal has log_prob only for d ≤ 4 and is a different family "
        "(the projection of a Gaussian), shown as the sphere distribution Pyro offers. "
        "All torch distributions are timed with validate_args=False (with validation on, log_prob also "
        "checks that every point is on the sphere: one more pass over the data). κ = 10 for '1 dist', "
        "κ ~ U(0, 50) for '10^4 dists'.  Targets of issue 15 (point 2) first, then every row.  "
        "A table made with `--before REV` also times the vMF of git revision REV in the same run "
        "('dlmppl vMF before' rows, 'speed-up before' column).\n"
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
