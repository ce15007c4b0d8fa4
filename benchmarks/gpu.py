"""dlmppl on an accelerator (issue 16, point 1): `bash run.sh gpu` runs this after the device tests.

Side by side, in one run:

(a) ManifoldVAE training throughput: Poincaré (c = 1), sphere and learned-κ (κ-stereographic)
    latents against the same network with a Euclidean latent; time per epoch and the ratio
    to Euclidean (target ≤ 1.5×).  Binarised 8×8 digits, batch 128, MLP 64-256-256-(2+2).
(b) Topological loss (Moor et al. 2020) at n = 1024 points: forward + backward per call,
    pairing on the CPU (giotto-ph / MST), values and gradients on the device; on CUDA the
    host-to-device copies per call are counted with torch.profiler (target: one copy of
    indices per call).
(c) Sinkhorn W₂² (log domain, ε = 0.05) at n = 10⁴ against geomloss's ``SamplesLoss`` on
    the same device when geomloss is installed.
(d) vMF ``rsample`` at 10⁶ draws (S² and S¹⁵), on the device and on the CPU.
(e) RiemannianNUTS on a vMF posterior with several chains: Pyro's ``MCMC(num_chains=C)``
    (one process per chain: the kernel has no vectorised-chains mode) against the same C
    chains one after another.

Usage: python benchmarks/gpu.py [--device cuda|cpu] [--quick] [--record]
Default device: cuda when available, else cpu.  ``--quick`` shrinks every size (a smoke run
of a few minutes on CPU).  Results go to benchmarks/results_gpu.md for a full run, or with
``--record`` for a quick one; each section that fails prints its error and the run goes on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import traceback

import pyro
import torch
from pyro.infer import MCMC, SVI, Trace_ELBO

import dlmppl as dl
from dlmppl import losses
from dlmppl.datasets import digits
from dlmppl.distributions import ManifoldUniform, VonMisesFisher
from dlmppl.inference import RiemannianAdam, RiemannianNUTS
from dlmppl.models import ManifoldVAE


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, reps, warm=1):
    """Median seconds of ``reps`` calls after ``warm`` warm-up calls (synchronised on CUDA)."""
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def machine(dev):
    cpu = platform.processor() or platform.machine()
    name = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else f"CPU ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s))")
    return f"{name}; torch {torch.__version__}, pyro {pyro.__version__}, Python {platform.python_version()}"


# ---------------------------------------------------------------------------------------- (a)

LATENTS = (("Euclidean", dict(latent="euclidean")), ("Poincaré c=1", dict(latent="poincare", learn_curvature=False)),
           ("sphere", dict(latent="sphere")), ("learned κ", dict(latent="stereographic")))


def vae_throughput(dev, quick):
    x = digits(binarize=True)[0].to(dev)
    if quick:
        x = x[:512]
    epochs = 2 if quick else 5
    rows = []
    for name, kw in LATENTS:
        pyro.set_rng_seed(0)
        pyro.clear_param_store()
        vae = ManifoldVAE(64, latent_dim=2, hidden=(256, 256), likelihood="bernoulli", **kw).to(dev)
        svi = SVI(vae.model, vae.guide, RiemannianAdam({"lr": 1e-3}), Trace_ELBO())

        def epoch(vae=vae, svi=svi):
            loss = 0.0
            for b in torch.randperm(x.shape[0], device=dev).split(128):
                loss += svi.step(x[b])
            return loss

        t = timed(epoch, dev, epochs)
        rows.append((name, t, x.shape[0] / t, epoch() / x.shape[0]))
    base = rows[0][1]
    out = ["| latent | s / epoch | samples / s | ratio to Euclidean | ELBO loss / datum |", "|---|---|---|---|---|"]
    out += [f"| {n} | {t:.3f} | {r:.0f} | {t / base:.2f} | {loss:.2f} |" for n, t, r, loss in rows]
    worst = max(t / base for _, t, _, _ in rows[1:])
    out.append(f"\nworst ratio {worst:.2f} (target ≤ 1.5): {'met' if worst <= 1.5 else 'NOT met'}; "
               f"{x.shape[0]} images per epoch, batch 128, median of {epochs} epochs after one warm-up epoch.")
    return out


# ---------------------------------------------------------------------------------------- (b)


def count_h2d(fn, dev):
    """Host-to-device copies (count, bytes if the profiler reports them) during one call, on CUDA."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        sync(dev)
    ev = [e for e in prof.events() if "HtoD" in e.name or "Memcpy HtoD" in e.name]
    dh = [e for e in prof.events() if "DtoH" in e.name]
    return len(ev), len(dh)


def topological_loss(dev, quick):
    n = 256 if quick else 1024
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 10, generator=g).to(dev)
    z0 = torch.randn(n, 2, generator=g).to(dev)
    ball = dl.manifolds.PoincareBall(1.0).to(dev)

    def call(manifold=None):
        z = (0.3 * torch.tanh(z0)).requires_grad_()
        loss = losses.topological(x, z, z_manifold=manifold, dims=(0, 1))
        loss.backward()
        return loss, z.grad

    out = ["| case | s / call (forward + backward) |", "|---|---|"]
    for name, m in (("Euclidean z", None), ("Poincaré z", ball)):
        out.append(f"| {name}, n = {n}, H0 + H1 | {timed(lambda m=m: call(m), dev, 1 if quick else 3):.3f} |")
    loss, grad = call(ball)
    out.append(f"\nloss on {loss.device}, gradient on {grad.device}, finite: {bool(torch.isfinite(grad).all())}.")
    if dev.type == "cuda":
        h2d, d2h = count_h2d(lambda: call(ball), dev)
        out.append(f"host→device copies per call: {h2d} (target 1: the pair indices); device→host: {d2h} "
                   "(the distance matrices for the CPU pairing).")
    else:
        out.append("host↔device copies: not measurable on a CPU run.")
    return out


# ---------------------------------------------------------------------------------------- (c)


def sinkhorn(dev, quick):
    n = 500 if quick else 10_000
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g).to(dev)
    y = (torch.randn(n, 3, generator=g) + 0.5).to(dev)
    reg = 0.05

    def ours():
        return losses.wasserstein(x, y, None, p=2, method="sinkhorn", reg=reg, tol=1e-4, max_iter=1000)

    reps = 1 if quick else 3
    t_ours = timed(ours, dev, reps)
    out = ["| implementation | s / call | value |", "|---|---|---|",
           f"| dlmppl `wasserstein(method='sinkhorn')` (POT log domain, ε-scaling), n = {n} | {t_ours:.3f} | {float(ours()):.4f} |"]
    try:
        from geomloss import SamplesLoss
    except ImportError:
        out.append("\ngeomloss is not installed here: no comparison.")
        return out
    # geomloss's p = 2 cost is |x - y|² / 2 and its blur is ε^(1/p): the same regularised problem
    gl = SamplesLoss("sinkhorn", p=2, blur=(reg / 2) ** 0.5, scaling=0.9, debias=False)

    def theirs():
        return 2 * gl(x, y)

    t_gl = timed(theirs, dev, reps)
    import geomloss

    out.append(f"| geomloss {geomloss.__version__} `SamplesLoss('sinkhorn', debias=False)` ×2 | {t_gl:.3f} | {float(theirs()):.4f} |")
    out.append(f"\nratio dlmppl / geomloss: {t_ours / t_gl:.2f}.")
    return out


# ---------------------------------------------------------------------------------------- (d)


def vmf_rsample(dev, quick):
    n = 100_000 if quick else 1_000_000
    out = ["| case | device s | CPU s | CPU / device |", "|---|---|---|---|"]
    for d in (3, 16):
        loc = torch.nn.functional.normalize(torch.ones(d), dim=0)
        kappa = torch.tensor(10.0)

        def draw(dv, loc=loc, kappa=kappa):
            return VonMisesFisher(loc.to(dv), kappa.to(dv)).rsample((n,))

        t_dev = timed(lambda: draw(dev), dev, 3)
        t_cpu = timed(lambda: draw(torch.device("cpu")), torch.device("cpu"), 1 if quick else 3) if dev.type != "cpu" else t_dev
        out.append(f"| S^{d - 1}, κ = 10, {n:.0e} draws | {t_dev:.3f} | {t_cpu:.3f} | {t_cpu / t_dev:.1f} |")
    return out


# ---------------------------------------------------------------------------------------- (e)


def vmf_model(obs):
    mu = pyro.sample("mu", ManifoldUniform(dl.manifolds.Sphere(), (3,), dtype=obs.dtype, device=obs.device))
    kappa = pyro.sample("kappa", pyro.distributions.Gamma(torch.tensor(2.0, dtype=obs.dtype, device=obs.device),
                                                          torch.tensor(0.1, dtype=obs.dtype, device=obs.device)))
    with pyro.plate("data", obs.shape[0], device=obs.device):
        pyro.sample("obs", VonMisesFisher(mu, kappa), obs=obs)


def nuts_chains(dev, quick):
    chains, ns, nw = (2, 50, 50) if quick else (4, 500, 500)
    obs = VonMisesFisher(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), torch.tensor(10.0, dtype=torch.float64))
    obs = obs.sample((200,)).to(dev)

    def run(num_chains):
        kw = {"mp_context": "spawn"} if (num_chains > 1 and dev.type == "cuda") else {}
        m = MCMC(RiemannianNUTS(vmf_model), num_samples=ns, warmup_steps=nw, num_chains=num_chains, disable_progbar=True, **kw)
        m.run(obs)
        return m

    t0 = time.perf_counter()
    for c in range(chains):
        pyro.set_rng_seed(c)
        run(1)
    t_seq = time.perf_counter() - t0
    out = ["| chains | how | s | draws / s |", "|---|---|---|---|",
           f"| {chains} | one after another in this process | {t_seq:.1f} | {chains * ns / t_seq:.0f} |"]
    try:
        t0 = time.perf_counter()
        m = run(chains)
        t_par = time.perf_counter() - t0
        mu = m.get_samples(group_by_chain=True)["mu"]
        out.append(f"| {chains} | Pyro `MCMC(num_chains={chains})`, one process each | {t_par:.1f} | {chains * ns / t_par:.0f} |")
        out.append(f"\nratio sequential / parallel: {t_seq / t_par:.2f}; draws {tuple(mu.shape)} on {mu.device}.")
    except Exception as e:  # noqa: BLE001 - recorded, the other sections still run
        out.append(f"\nPyro's multi-process chains failed here: {type(e).__name__}: {str(e)[:200]}")
    out.append(f"\n{ns} draws after {nw} warm-up per chain; vMF posterior of 200 points on S².")
    return out


SECTIONS = (
    ("(a) ManifoldVAE training throughput", vae_throughput),
    ("(b) Topological loss", topological_loss),
    ("(c) Sinkhorn", sinkhorn),
    ("(d) vMF rsample", vmf_rsample),
    ("(e) RiemannianNUTS, several chains", nuts_chains),
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--record", action="store_true", help="write benchmarks/results_gpu.md also for --quick")
    ap.add_argument("--only", default="", help="comma-separated section letters, e.g. a,d")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu)")
    if dev.type == "cpu":
        torch.set_num_threads(1)  # the project's CPU figures are one-thread (shared machine)
    mode = "quick (smoke sizes)" if args.quick else "full"
    lines = ["## dlmppl on an accelerator (benchmarks/gpu.py)", "",
             f"Device: {dev} — {machine(dev)}. Mode: {mode}. `python benchmarks/gpu.py"
             f"{' --quick' if args.quick else ''} --device {dev.type}`.", ""]
    if dev.type == "cpu":
        lines += ["A CPU run: it checks the benchmark end to end and gives the CPU side of the ratios; "
                  "it says nothing of GPU speed. No GPU figures exist until `bash run.sh gpu` runs on one.", ""]
    failed = []
    for title, fn in SECTIONS:
        letter = title[1]
        if args.only and letter not in args.only.split(","):
            continue
        print(f"== {title}", flush=True)
        t0 = time.perf_counter()
        try:
            body = fn(dev, args.quick)
        except Exception:  # noqa: BLE001 - a failing section is reported, the others still run
            failed.append(title)
            body = ["FAILED:", "```", traceback.format_exc().strip()[-1500:], "```"]
        print("\n".join(body), f"\n({time.perf_counter() - t0:.0f} s)\n", flush=True)
        lines += [f"### {title}", "", *body, ""]
    if not args.quick or args.record:
        with open("benchmarks/results_gpu.md", "w") as f:
            f.write("\n".join(lines) + "\n")
        print("wrote benchmarks/results_gpu.md")
    if failed:
        raise SystemExit(f"sections failed: {failed}")


if __name__ == "__main__":
    main()
