"""Before/after the geometry redesign, side by side in one run: is anything slower?

The same workloads run in two worker processes that import dlmppl from two source trees: the
commit before the redesign (``--before``, default ``1e771c2``, its ``dlmppl/`` unpacked by
``git archive`` into a temporary folder) and the working tree.  Each worker sets the workloads up
once (with one warm-up call each), then times the blocks the parent sends it: a block is one
untimed call and then the timed ones (one run of a chain: no untimed one), and the two trees'
blocks of a workload run back to back, in alternating order, so that load on a shared machine
hits both alike.  Time is the CPU time of the worker's one thread (``time.thread_time``: time
the process waits for a core on the loaded 2-core machine does not count), per call; each
workload's time is the median over its blocks, and the table reports ``after / before`` of the
medians (below 1: faster) and the range of the ratios of single block pairs.  Both workers run
with glibc's malloc thresholds fixed (``_Worker``), so that page faults do not depend on a
process's history.

(Until this version each worker ran the workloads once in a fresh process and timed them with
``perf_counter``, one worker per tree per round: five quick runs of that on the same code gave
the sphere distance 0.34 to 2.33, and the worst of nine such ratios was mostly noise.  Neither
the workloads nor the trees compared changed.)

Workloads (public API only, present in both trees): ``WrappedNormal`` ``rsample`` +
``log_prob`` on the Poincaré ball, the hyperboloid and the sphere (n = 10⁴);
``geometry.distance`` on the sphere and the hyperboloid (n = 10⁵); exact OT on the
Poincaré ball (n = 200); ``RiemannianNUTS`` on a vMF-mean posterior on S² and
``RiemannianHMC`` on a 10-d Gaussian (fixed steps, time per draw).  NUTS's total time
depends on the trajectory lengths its adaptation picks, so its time per gradient evaluation
(per call of the model) is reported too: that is the cost of the code.

Run: ``python benchmarks/bench_redesign.py [--rounds 5] [--sub 4] [--reps 5] [--before REV]``; writes
the table into ``benchmarks/results_redesign.md`` (keeping the sections below it that start with a
``###`` heading); ``--quick`` (bench_all): 2 rounds of 3 single calls, shorter chains, into a
scratch file.
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
QUICK = sys.argv[1:] == ["quick"]  # bench_redesign.py --quick: shorter chains
import dlmppl
from dlmppl import manifolds as M
from dlmppl.distributions import WrappedNormal, VonMisesFisher, ManifoldUniform
from dlmppl import geometry, losses
from dlmppl.inference import RiemannianNUTS, RiemannianHMC
from pyro.infer import MCMC
D = torch.float64
pyro.set_rng_seed(0)
work = {}  # name -> function

def timed(name, fn):
    fn()  # warm-up
    work[name] = fn

n = 10_000
for label, man, loc in [
    ("WrappedNormal Poincaré d=2", M.PoincareBall(1.0), torch.tensor([0.3, -0.2], dtype=D)),
    ("WrappedNormal Lorentz d=2", M.Lorentz(1.0), torch.tensor([1.0, 0.0, 0.0], dtype=D)),
    ("WrappedNormal sphere S²", M.Sphere(), torch.tensor([0.0, 0.0, 1.0], dtype=D)),
]:
    wn = WrappedNormal(man, loc, torch.tensor(0.5, dtype=D))
    timed(label + " rsample+log_prob", lambda wn=wn: wn.log_prob(wn.rsample((n,))))

x = torch.nn.functional.normalize(torch.randn(100_000, 3, dtype=D), dim=-1)
y = torch.nn.functional.normalize(torch.randn(100_000, 3, dtype=D), dim=-1)
timed("distance sphere n=1e5", lambda: geometry.distance(M.Sphere(), x, y))
lor = M.Lorentz(1.0)
xs = lor.expmap0(torch.cat([torch.zeros(100_000, 1, dtype=D), torch.randn(100_000, 2, dtype=D)], -1))
ys = lor.expmap0(torch.cat([torch.zeros(100_000, 1, dtype=D), torch.randn(100_000, 2, dtype=D)], -1))
timed("distance Lorentz n=1e5", lambda: geometry.distance(lor, xs, ys))

ball = M.PoincareBall(1.0)
a = ball.expmap0(0.3 * torch.randn(200, 2, dtype=D))
b = ball.expmap0(0.3 * torch.randn(200, 2, dtype=D))
timed("wasserstein emd Poincaré n=200", lambda: losses.wasserstein(a, b, manifold=ball))

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

timed(f"RiemannianNUTS vMF mean S², {NS + NW} draws", run_nuts)
timed(f"RiemannianHMC 10-d Gaussian, {NH} draws x 10 steps", run_hmc)
print("JSON" + json.dumps({"names": list(work), "per_gradient": "RiemannianNUTS vMF mean S², per gradient"}), flush=True)
# then one block per line of stdin, `{"name": ..., "reps": k, "warm": bool}`: the CPU time of this (only) thread per
# repetition, and for NUTS the number of model calls (gradient evaluations) of the run
for line in sys.stdin:
    req = json.loads(line)
    fn = work[req["name"]]
    if req["warm"]:
        fn()  # untimed: the caches hold this workload's data, not the other tree's
    calls[0] = 0
    t0 = time.thread_time()
    for _ in range(req["reps"]):
        fn()
    t = (time.thread_time() - t0) / req["reps"]
    print("JSON" + json.dumps({"t": t, "calls": calls[0] / req["reps"]}), flush=True)
"""


class _Worker:
    """One tree's worker process: sets the workloads up once, then times the blocks it is sent."""

    def __init__(self, src: Path, quick: bool):
        self.src = src
        self.err = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty stderr cannot block it
        # glibc's malloc fixed so that memory, once the warm-up has allocated it, is reused: left dynamic, glibc
        # raises its mmap threshold as a process frees large blocks and returns the heap's top at the trim
        # threshold, and whether a tensor of 2.4 MB costs ~600 page faults then depends on the worker's
        # history (the sphere distance took 3.5 ms in one process and 6 ms in another, with the same code)
        env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1",
                   MALLOC_MMAP_THRESHOLD_=str(32 << 20), MALLOC_TRIM_THRESHOLD_=str(1 << 30))
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, *(["quick"] if quick else [])], env=env,
                                     cwd=src, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True)

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("JSON"):
                return json.loads(line[4:])
        self.proc.wait()
        self.err.seek(0)
        raise RuntimeError(f"worker on {self.src} failed:\n{self.err.read()[-3000:]}")

    def block(self, name: str, reps: int, warm: bool) -> dict:
        self.proc.stdin.write(json.dumps({"name": name, "reps": reps, "warm": warm}) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()
        self.err.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5, --quick 2); a round is one "
                    "block pair of each chain and --sub block pairs of each other workload")
    ap.add_argument("--sub", type=int, default=None, help="block pairs per round of the short workloads "
                    "(default 4, --quick 3)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions in one block of a short workload "
                    "(default 5, --quick 1)")
    ap.add_argument("--before", default="1e771c2", help="git revision before the redesign")
    ap.add_argument("--before-path", default=None, help="a checkout of it (default: a temporary `git archive` copy)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_redesign.md"))
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 single calls, shorter chains "
                    "(bench_all; writes to a scratch file unless --out)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from calibration import machine
    from ratios import quick_out, record

    for key, full, quick in (("rounds", 5, 2), ("sub", 4, 3), ("reps", 5, 1)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.quick:
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
    workers = {}
    try:
        # both set up at once (setup and warm-up are not timed), then every block alternates the trees
        workers = {"before": _Worker(before, args.quick), "after": _Worker(ROOT, args.quick)}
        heads = {k: w.read() for k, w in workers.items()}
        names, per_grad = heads["before"]["names"], heads["before"]["per_gradient"]
        if heads["after"]["names"] != names:
            raise RuntimeError(f"the trees' workloads differ: {names} / {heads['after']['names']}")
        times = {k: {name: [] for name in names + [per_grad]} for k in workers}
        pairs = 0
        for r in range(args.rounds):
            for name in names:
                chain = name.startswith("Riemannian")  # one run per block, one block per round
                for _ in range(1 if chain else args.sub):
                    order = ("before", "after") if pairs % 2 == 0 else ("after", "before")
                    pairs += 1
                    for which in order:
                        res = workers[which].block(name, 1 if chain else args.reps, warm=not chain)
                        times[which][name].append(res["t"])
                        if res["calls"]:
                            times[which][per_grad].append(res["t"] / res["calls"])
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        for w in workers.values():
            w.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    rows, ratio = [], {}
    for name in names + [per_grad]:
        b, a = times["before"][name], times["after"][name]
        ratio[name] = statistics.median(a) / statistics.median(b)
        paired = sorted(x / y for x, y in zip(a, b, strict=True))  # the two halves of one block pair
        rows.append(f"| {name} | {1e3 * statistics.median(b):.2f} | {1e3 * statistics.median(a):.2f} | "
                    f"{ratio[name]:.2f} | {paired[0]:.2f}–{paired[-1]:.2f} ({len(paired)}) |")
    worst = max(ratio, key=ratio.get)
    # issue 12: "no slowdown beyond noise"
    record("redesign", "geometry redesign: time after / before, worst workload", ratio[worst], 1.25, "lower",
           note=f"{worst}; CPU time, median of {len(times['before'][worst])} interleaved blocks")
    record("redesign", "geometry redesign: NUTS time per gradient after / before", ratio[per_grad], 1.25, "lower")
    info = machine()
    mode = "--quick" if args.quick else "full"
    text = (
        "## Geometry redesign: before / after (`bench_redesign.py`)\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, torch {info['torch']}, "
        f"pyro-ppl {info['pyro']}, geoopt {info['geoopt']}.  `before` = `{args.before}` (the commit before the "
        "redesign), `after` = the working tree, each in one worker process (one thread) that sets the workloads "
        f"up once.  {mode} mode: {args.rounds} rounds; a round times each chain once per tree and each other "
        f"workload {args.sub} times per tree, in blocks of {args.reps} call(s) after one untimed call, the two trees' "
        "blocks back to back in alternating order.  Time = CPU time of the worker's thread (`time.thread_time`) per call, median over "
        "the blocks; ratio = after / before of the medians (below 1: faster); range = smallest and largest ratio "
        "of the two blocks of one pair (number of pairs).\n\n"
        "| workload | before (ms) | after (ms) | after / before | range of pairs |\n|---|---:|---:|---:|---|\n"
        + "\n".join(rows) + "\n"
    )
    out = Path(args.out)
    # the sections written by hand below the table (### headings: library size) are kept
    old = out.read_text() if out.exists() else ""
    keep = old[old.index("\n### ") + 1:] if "\n### " in old else ""
    out.write_text(text + ("\n\n" + keep if keep else ""))
    print(text)

if __name__ == "__main__":
    main()
