"""Scaling of dlmppl.distributed on this machine: 1 vs 2 processes (issue 16, point 4).

(a) Data-parallel SVI: ManifoldVAE (Poincaré ball, learned curvature, 64-256-2, digits) with
    DistributedSVI + RiemannianAdam at a fixed global batch; samples/s over timed steps.
(b) MCMC: ``run_chains`` of RiemannianNUTS on a vMF posterior, the same chains on 1 or 2
    processes; chains/s including the gather into one InferenceData.
(c) On paper, a 64-GPU run: bytes all-reduced per step (parameters × 4) and the ring all-reduce
    traffic per GPU, 2 (N - 1) / N of it; and the per-call CPU time of the persistence pairing of
    ``dlmppl.losses.topological`` at each rank's batch size, the part that stays on CPU.

Usage: python benchmarks/bench_distributed.py [--quick]   (writes benchmarks/results_distributed.md;
--quick: benchmarks/.ratios/quick/results_distributed.md)
Each configuration runs in its own ``torchrun`` job (gloo, one torch thread per process); 1 and 2
processes alternate, ``--repeats`` times, and the medians are reported side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from calibration import cpu_name  # benchmarks/ is on sys.path when this script runs
from ratios import quick_out, record

import dlmppl as dl
from dlmppl.distributed import DistributedSVI, distributed_loader, run_chains

HERE = Path(__file__).resolve().parent
HIDDEN = 256


def make_vae():
    return dl.models.ManifoldVAE(64, latent="poincare", latent_dim=2, hidden=(HIDDEN,))


def vmf_model(directions):
    S2 = dl.manifolds.Sphere()
    mu = pyro.sample("mu", dl.distributions.ManifoldUniform(S2, event_shape=(3,), dtype=directions.dtype))
    kappa = pyro.sample("kappa", dist.Gamma(torch.tensor(2.0, dtype=directions.dtype), 0.1))
    with pyro.plate("data", directions.shape[0]):
        pyro.sample("obs", dl.distributions.VonMisesFisher(mu, kappa), obs=directions)


def vmf_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, generator=g, dtype=torch.float64) * 0.4 + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def slowest(seconds):
    t = torch.tensor([seconds], dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t[0])


def worker(a):
    torch.set_num_threads(1)
    dl.distributed.init()
    r = dl.distributed.rank()
    barrier = torch.distributed.barrier
    # (a) SVI, at each global batch size
    x, _ = dl.datasets.digits()
    svi_rates = {}
    for batch in a.batch:
        pyro.clear_param_store()
        pyro.set_rng_seed(r)
        vae = make_vae()
        svi = DistributedSVI(vae.model, vae.guide, dl.inference.RiemannianAdam({"lr": 1e-3}), pyro.infer.Trace_ELBO(),
                             module=vae)
        batches = [b for (b,) in distributed_loader(x, batch, seed=0)]
        for xb in batches[:3]:  # warm-up, parameter broadcast
            svi.step(xb)
        barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        for t in range(a.steps):
            svi.step(batches[t % len(batches)])
        barrier()
        svi_s, svi_cpu = time.perf_counter() - t0, slowest(time.process_time() - c0)
        # per CPU-second of the busiest rank: the throughput if each rank had a core of its own
        svi_rates[batch] = (a.steps * batch / svi_s, a.steps * batch / svi_cpu)
    # (b) MCMC
    barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    idata = run_chains(lambda: dl.inference.RiemannianNUTS(vmf_model), vmf_data(), num_chains=a.chains,
                       num_samples=a.draws, warmup_steps=a.draws, base_seed=0)
    barrier()
    mcmc_s, mcmc_cpu = time.perf_counter() - t0, slowest(time.process_time() - c0)
    if r == 0:
        assert idata.posterior["mu"].shape[:2] == (a.chains, a.draws)
        out = {"chains_per_s": a.chains / mcmc_s, "chains_per_cpu_s": a.chains / mcmc_cpu}
        for batch, (wall, cpu) in svi_rates.items():
            out[f"svi_samples_per_s_{batch}"] = wall
            out[f"svi_samples_per_cpu_s_{batch}"] = cpu
        Path(a.out).write_text(json.dumps(out))
    torch.distributed.destroy_process_group()


def launch(nproc, a, out):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
           str(Path(__file__).resolve()), "--worker", "--out", str(out), "--batch", *map(str, a.batch),
           "--steps", str(a.steps), "--chains", str(a.chains), "--draws", str(a.draws)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return json.loads(Path(out).read_text())


def pairing_times(ns, reps):
    """Best-of-``reps`` CPU seconds of one ``topological`` call (forward + backward) and of its CPU pairing alone."""
    from dlmppl.losses.topology import rips_pairs

    ball = dl.manifolds.PoincareBall(1.0)
    x, _ = dl.datasets.digits()
    rows = []
    for n in ns:
        xb = x[:n]
        z = ball.expmap0(0.3 * torch.randn(n, 2)).requires_grad_(True)
        for dims in ((0,), (0, 1)):
            full, pair = [], []
            for _ in range(reps):
                t0 = time.process_time()
                loss = dl.losses.topological(xb, z, z_manifold=ball, dims=dims)
                loss.backward()
                full.append(time.process_time() - t0)
                D = ball.dist(z.detach()[:, None], z.detach()[None]).numpy()
                t0 = time.process_time()
                rips_pairs(D, maxdim=dims[-1])
                Dx = torch.cdist(xb, xb).numpy()
                rips_pairs(Dx, maxdim=dims[-1])
                pair.append(time.process_time() - t0)
            rows.append((n, dims, min(full), min(pair)))  # best of: other jobs' contention only adds time
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--out")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch", type=int, nargs="+", default=[128, 1024], help="global batch sizes")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    if a.quick:
        a.steps, a.draws, a.repeats = 10, 20, 1
    torch.set_num_threads(1)
    res = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):
            for n in (1, 2):
                r = launch(n, a, Path(tmp) / f"r{n}_{i}.json")
                res[n].append(r)
                print(n, "process(es):", r, flush=True)
    med = {n: {k: statistics.median(v[k] for v in res[n]) for k in res[n][0]} for n in res}
    ratio = {k: med[2][k] / med[1][k] for k in med[1]}
    for b in a.batch:
        record("distributed", f"DistributedSVI batch {b}: samples/s 2 processes / 1", ratio[f"svi_samples_per_s_{b}"],
               note="wall")
    record("distributed", f"run_chains {a.chains} NUTS chains: chains/s 2 processes / 1", ratio["chains_per_s"],
           note="wall")
    for k in med[1]:
        print(f"{k}: 1 process {med[1][k]:.3f}, 2 processes {med[2][k]:.3f} (x{ratio[k]:.2f})")

    # CPU time of one SVI step in one process against the rows it gets: how much of a step a second
    # process can take over (t(B) / t(B/2) bounds the 2-process speed-up, communication aside), and
    # the per-step cost that does not shrink with the batch (Python, Pyro's tracing, the optimiser)
    vae = make_vae()
    n_params = sum(p.numel() for p in vae.parameters())
    x, _ = dl.datasets.digits()
    svi = pyro.infer.SVI(vae.model, vae.guide, dl.inference.RiemannianAdam({"lr": 1e-3}), pyro.infer.Trace_ELBO())
    k = 5 if a.quick else 20

    def step_cpu(xb):  # best process time of k steps after 3 warm-up ones: other jobs only ever add to it
        ts = []
        for _ in range(3 + k):
            t0 = time.process_time()
            svi.step(xb)
            ts.append(time.process_time() - t0)
        return min(ts[3:])

    rows = sorted({2, *a.batch, *(b // 2 for b in a.batch)})
    step_cpu_s = {n: step_cpu(x[:n]) for n in rows}
    print("SVI step CPU time, one process:", {n: round(t * 1e3, 1) for n, t in step_cpu_s.items()}, "ms")
    ns = (32, 64, 128) if a.quick else (16, 32, 64, 128, 256, 512)
    pairs = pairing_times(ns, 3 if a.quick else 5)
    for row in pairs:
        print("pairing n={} dims={}: topological() {:.4f} s, pairing {:.4f} s".format(*row))
    write(a, med, ratio, n_params, step_cpu_s, pairs)


def write(a, med, ratio, n_params, step_cpu_s, pairs):
    overhead_s = step_cpu_s[2]
    nbytes = 4 * n_params
    N = 64
    ring = 2 * (N - 1) / N * nbytes
    load = os.getloadavg()
    lines = [
        "## Scaling out: dlmppl.distributed, 1 vs 2 processes (issue 16)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores shared with other engineers' jobs "
        f"(load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end of the run), no GPU; torch {torch.__version__}, "
        f"gloo on localhost, one torch thread per process; median of {a.repeats} alternating runs. "
        "On a loaded 2-core machine a second process competes with the other jobs for the second core, "
        "so these ratios say little about a dedicated machine: they show that the path runs and what it costs here.",
        "",
        "| | 1 process | 2 processes | ratio (2 / 1) |",
        "|---|---|---|---|",
    ]
    for b in a.batch:
        w, c = f"svi_samples_per_s_{b}", f"svi_samples_per_cpu_s_{b}"
        lines += [
            f"| SVI, ManifoldVAE 64-{HIDDEN}-2 Poincaré κ learned, global batch {b}: samples/s (wall) | "
            f"{med[1][w]:.0f} | {med[2][w]:.0f} | {ratio[w]:.2f} |",
            f"| same, samples per CPU-second of the busiest rank | {med[1][c]:.0f} | {med[2][c]:.0f} | {ratio[c]:.2f} |",
        ]
    lines += [
        f"| MCMC, RiemannianNUTS on a vMF posterior, {a.chains} chains × ({a.draws} warm-up + {a.draws} draws), "
        f"gathered into one InferenceData: chains/s (wall) | {med[1]['chains_per_s']:.3f} | {med[2]['chains_per_s']:.3f} | "
        f"{ratio['chains_per_s']:.2f} |",
        f"| same, chains per CPU-second of the busiest rank | {med[1]['chains_per_cpu_s']:.3f} | "
        f"{med[2]['chains_per_cpu_s']:.3f} | {ratio['chains_per_cpu_s']:.2f} |",
        "",
        "Wall-clock rates are what this shared machine gave. The per-CPU-second rates divide by the process time "
        "of the rank that used most; it includes what gloo spends waiting for the other rank when that one is "
        "descheduled, and contention for shared caches inflates CPU time too (hence ratios above 2): on a loaded "
        "machine it is no clean measure of a rank's work either.",
        "",
        "CPU time of one SVI step in one process (best of 20 steps) against its rows, and the 2-process speed-up "
        "it allows at a global batch B, t(B) / t(B/2), communication aside:",
        "",
        "| rows | " + " | ".join(str(n) for n in step_cpu_s) + " |",
        "|---|" + "---|" * len(step_cpu_s),
        "| CPU ms per step | " + " | ".join(f"{t * 1e3:.1f}" for t in step_cpu_s.values()) + " |",
        "",
        "Ideal 2-process speed-up: " + ", ".join(
            f"B = {b}: {step_cpu_s[b] / step_cpu_s[b // 2]:.2f}" for b in a.batch) + ". "
        f"A step of this small VAE costs {overhead_s * 1e3:.1f} ms of CPU at 2 rows: that fixed part (Python, "
        "Pyro's tracing, the Riemannian optimiser's per-parameter work) is paid by every rank, so splitting a "
        "batch over processes pays only when the rows' share of the step dominates it (larger networks or "
        "batches); chains, which share nothing, spread over processes with no such floor.",
        "",
        "### A 64-GPU run, on paper",
        "",
        f"The benchmark's VAE has {n_params:,} parameters, so one step all-reduces {nbytes / 1e6:.2f} MB of float32 "
        f"gradients (plus one float64 per parameter tensor for the loss and the used-gradient flags). "
        f"A ring all-reduce over N = {N} GPUs sends and receives 2 (N - 1) / N of it per GPU: {ring / 1e6:.2f} MB. "
        f"At 25 GB/s per GPU across nodes (200 Gb/s InfiniBand, assumed) that is {ring / 25e9 * 1e6:.0f} µs of transfer, "
        f"at NVLink speed within a node (~450 GB/s, assumed) {ring / 450e9 * 1e6:.1f} µs; the ring's 2 (N - 1) = {2 * (N - 1)} "
        "sequential hops at an assumed 5-10 µs each across nodes add 0.6-1.3 ms, which dominates for a model this small: "
        "about 1 ms per step whatever the per-GPU batch (NCCL's tree algorithm cuts the hops to ~2 log2 N).",
        "",
        f"The fixed {overhead_s * 1e3:.1f} ms of CPU per step measured here does not shrink on a GPU: with this host "
        "CPU it is a floor for a GPU step of this model (a faster host lowers it); no GPU was available to this task "
        f"to measure one. With 64 GPUs the ~1 ms all-reduce is {'below' if overhead_s > 1e-3 else 'comparable to'} "
        "that floor: the communication of this model is no bottleneck.",
        "",
        "Where the CPU persistence pairing of `dlmppl.losses.topological` becomes the bottleneck: it runs on CPU "
        "on every rank, for its own batch (the input's and the codes' distance matrices). CPU time per call, "
        "best of repeats on this machine (one thread):",
        "",
        "| rows per rank | dims | `topological` forward + backward (CPU s) | pairing of both matrices (CPU s) |",
        "|---|---|---|---|",
    ]
    for n, dims, full, pair in pairs:
        lines.append(f"| {n} | {dims} | {full:.4f} | {pair:.4f} |")
    by = {(n, d): pair for n, d, _, pair in pairs}
    n_big = max((n for n, d in by if d == (0, 1)), default=None)
    over = {d: [n for n, dd, _, pair in pairs if dd == d and pair > overhead_s] for d in ((0,), (0, 1))}
    first = {d: (f"from {min(v)} rows per rank" if v else f"at none of the sizes measured (up to {max(n for n, *_ in pairs)})")
             for d, v in over.items()}
    lines += [
        "",
        f"The pairing exceeds the {overhead_s * 1e3:.1f} ms floor of a GPU step {first[(0, 1)]} with H1 "
        f"(`dims=(0, 1)`), and {first[(0,)]} with H0 alone (`dims=(0,)`, a minimum spanning tree). Beyond that a "
        "topology-regularised run on GPUs waits on the CPU at any N: data parallelism helps only through the "
        "smaller per-rank batch (the pairing grows faster than linearly in n), and each GPU needs a CPU core of its "
        "own for its pairing (8 per 8-GPU node), or the ranks of a node queue behind each other. "
        + (f"At {n_big} rows per GPU the H1 pairing ({by[(n_big, (0, 1))] * 1e3:.1f} ms) is "
           f"{by[(n_big, (0, 1))] / 1e-3:.0f}× the ~1 ms all-reduce of a 64-GPU ring: the pairing, not the "
           "communication, sets the step time." if n_big else ""),
        "",
        "Reproduce: `python benchmarks/bench_distributed.py` (then `python benchmarks/collect.py`).",
    ]
    out = quick_out("distributed") if a.quick else HERE / "results_distributed.md"  # quick: not the results
    out.write_text("\n".join(lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
