"""Before/after the geometry redesign, side by side in one run: is anything slower?

The same workloads run in worker processes that import dlmppl from two source trees: the
commit before the redesign (``--before``, default ``1e771c2``, its ``dlmppl/`` unpacked by
``git archive`` into a temporary folder) and the working tree.  Workers alternate (before, after, before, ...) so that
load on a shared machine hits both alike; each workload's time is the median over rounds,
and the table reports ``after / before`` (below 1: faster now).

Workloads (public API only, present in both trees): ``WrappedNormal`` ``rsample`` +
``log_prob`` on the Poincaré ball, the hyperboloid and the sphere (n = 10⁴);
``geometry.distance`` on the sphere and the hyperboloid (n = 10⁵); exact OT on the
Poincaré ball (n = 200); ``RiemannianNUTS`` on a vMF-mean posterior on S² and
``RiemannianHMC`` on a 10-d Gaussian (fixed steps, time per draw).  NUTS's total time
depends on the trajectory lengths its adaptation picks, so its time per gradient evaluation
(per call of the model) is reported too: that is the cost of the code.

Run: ``python benchmarks/bench_redesign.py [--rounds 5] [--before REV]``; writes
``benchmarks/results_redesign.md`` (``--quick``: one round of shorter chains, into a scratch file).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, time, torch, pyro
torch.set_num_threads(1)
QUICK = sys.argv[1:] == ["quick"]  # bench_redesign.py --quick: fewer repeats, shorter chains
R = 6 if QUICK else 20
import dlmppl
from dlmppl import manifolds as M
from dlmppl.distributions import WrappedNormal, VonMisesFisher, ManifoldUniform
from dlmppl import geometry, losses
from dlmppl.inference import RiemannianNUTS, RiemannianHMC
from pyro.infer import MCMC
D = torch.float64
pyro.set_rng_seed(0)
out = {}

def timed(name, fn, reps):
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    out[name] = (time.perf_counter() - t0) / reps

n = 10_000
for label, man, loc in [
    ("WrappedNormal Poincaré d=2", M.PoincareBall(1.0), torch.tensor([0.3, -0.2], dtype=D)),
    ("WrappedNormal Lorentz d=2", M.Lorentz(1.0), torch.tensor([1.0, 0.0, 0.0], dtype=D)),
    ("WrappedNormal sphere S²", M.Sphere(), torch.tensor([0.0, 0.0, 1.0], dtype=D)),
]:
    wn = WrappedNormal(man, loc, torch.tensor(0.5, dtype=D))
    timed(label + " rsample+log_prob", lambda wn=wn: wn.log_prob(wn.rsample((n,))), R)

x = torch.nn.functional.normalize(torch.randn(100_000, 3, dtype=D), dim=-1)
y = torch.nn.functional.normalize(torch.randn(100_000, 3, dtype=D), dim=-1)
timed("distance sphere n=1e5", lambda: geometry.distance(M.Sphere(), x, y), R)
lor = M.Lorentz(1.0)
xs = lor.expmap0(torch.cat([torch.zeros(100_000, 1, dtype=D), torch.randn(100_000, 2, dtype=D)], -1))
ys = lor.expmap0(torch.cat([torch.zeros(100_000, 1, dtype=D), torch.randn(100_000, 2, dtype=D)], -1))
timed("distance Lorentz n=1e5", lambda: geometry.distance(lor, xs, ys), R)

ball = M.PoincareBall(1.0)
a = ball.expmap0(0.3 * torch.randn(200, 2, dtype=D))
b = ball.expmap0(0.3 * torch.randn(200, 2, dtype=D))
timed("wasserstein emd Poincaré n=200", lambda: losses.wasserstein(a, b, manifold=ball), R // 2)

obs = VonMisesFisher(torch.tensor([0.0, 0.0, 1.0], dtype=D), torch.tensor(10.0, dtype=D)).sample((50,))

calls = [0]

def vmf_model():
    calls[0] += 1
    mu = pyro.sample("mu", ManifoldUniform(M.Sphere(), (3,), dtype=D))
    with pyro.plate("n", 50):
        pyro.sample("x", VonMisesFisher(mu, torch.tensor(10.0, dtype=D)), obs=obs)

NS, NW, NH = (100, 50, 100) if QUICK else (200, 100, 300)

def run_nuts():
    pyro.set_rng_seed(1)
    MCMC(RiemannianNUTS(vmf_model), num_samples=NS, warmup_steps=NW, disable_progbar=True).run()

def gauss_model():
    pyro.sample("z", pyro.distributions.Normal(torch.zeros(10, dtype=D), 1.0).to_event(1))

def run_hmc():
    pyro.set_rng_seed(1)
    MCMC(RiemannianHMC(gauss_model, step_size=0.3, num_steps=10, adapt_step_size=False),
         num_samples=NH, warmup_steps=0, disable_progbar=True).run()

timed(f"RiemannianNUTS vMF mean S², {NS + NW} draws", run_nuts, 1)
calls[0] = 0
t0 = time.perf_counter()
run_nuts()
out["RiemannianNUTS vMF mean S², per gradient"] = (time.perf_counter() - t0) / calls[0]
timed(f"RiemannianHMC 10-d Gaussian, {NH} draws x 10 steps", run_hmc, 1)
print("JSON" + json.dumps(out))
"""


def _worker(src: Path, quick: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", WORKER, *(["quick"] if quick else [])], env=env,
                         capture_output=True, text=True, cwd=src)
    if res.returncode != 0:
        raise RuntimeError(f"worker on {src} failed:\n{res.stderr[-3000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("JSON")][-1]
    return json.loads(line[4:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", default="1e771c2", help="git revision before the redesign")
    ap.add_argument("--before-path", default=None, help="a checkout of it (default: a temporary `git archive` copy)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_redesign.md"))
    ap.add_argument("--quick", action="store_true", help="one round, shorter chains (bench_all; writes to a "
                    "scratch file unless --out)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from calibration import machine
    from ratios import quick_out, record

    if args.quick:
        args.rounds = 1
        if args.out == ap.get_default("out"):
            args.out = str(quick_out("redesign"))

    tmp = None
    before = Path(args.before_path) if args.before_path else None
    if before is None:
        # the package of that revision unpacked (no git worktree: nothing is registered in the repository)
        tmp = tempfile.mkdtemp(prefix="dlmppl-before-")
        tar = subprocess.run(["git", "archive", args.before, "dlmppl"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=tar.stdout, check=True)
        before = Path(tmp)
    try:
        runs = {"before": [], "after": []}
        for r in range(args.rounds):
            for which, src in (("before", before), ("after", ROOT)) if r % 2 == 0 else (("after", ROOT), ("before", before)):
                runs[which].append(_worker(src, args.quick))
                print(f"round {r + 1}/{args.rounds}: {which} done", flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    rows, ratio = [], {}
    for name in runs["before"][0]:
        b = statistics.median(run[name] for run in runs["before"])
        a = statistics.median(run[name] for run in runs["after"])
        rows.append(f"| {name} | {1e3 * b:.2f} | {1e3 * a:.2f} | {a / b:.2f} |")
        ratio[name] = a / b
    worst = max(ratio, key=ratio.get)
    # issue 12: "no slowdown beyond noise"; repeated runs here scatter by ±25% (results_redesign.md)
    record("redesign", "geometry redesign: time after / before, worst workload", ratio[worst], 1.25, "lower",
           note=f"{worst}; noise ±25%")
    per_grad = "RiemannianNUTS vMF mean S², per gradient"
    record("redesign", "geometry redesign: NUTS time per gradient after / before", ratio[per_grad], 1.25, "lower")
    info = machine()
    text = (
        "## Geometry redesign: before / after (`bench_redesign.py`)\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, torch {info['torch']}, "
        f"pyro-ppl {info['pyro']}, geoopt {info['geoopt']}.  "
        f"Median of {args.rounds} alternating rounds per tree, one thread; `before` = `{args.before}` (the "
        "commit before the redesign), `after` = the working tree.  Ratio = after / before (below 1: faster).\n\n"
        "| workload | before (ms) | after (ms) | after / before |\n|---|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
