"""Benchmark of dlmppl's manifold VAEs (issue 4, point 6).

(a) Branching-diffusion data (Mathieu et al. 2019): test marginal
    log-likelihood (IWAE, K particles) of Euclidean, Poincaré (c=1) and
    learned-curvature (κ-stereographic) VAEs at latent dimension 2 and 5,
    several seeds.
(b) Time per SVI step of ManifoldVAE (Pyro SVI + RiemannianAdam) against a
    hand-written PyTorch loop computing the same single-sample ELBO with the
    same networks and torch.optim.Adam.

Usage: python benchmarks/bench_vae.py [--quick] [--part b]   (writes benchmarks/results_vae.md; --part b: only (b))
CPU only; figures are from a shared 2-core machine.
"""

import argparse
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from ratios import record  # benchmarks/ is on sys.path when this script runs

from dlmppl.datasets import branching_diffusion, digits
from dlmppl.inference import RiemannianAdam
from dlmppl.models import ManifoldVAE

torch.set_num_threads(1)


MODELS = (
    ("Euclidean", dict(latent="euclidean")),
    ("Poincaré c=1", dict(latent="poincare", learn_curvature=False)),
    ("learned κ", dict(latent="stereographic")),
)


def part_a(seeds, configs, steps, K):
    """configs: (latent dim, decoder) pairs.  Returns rows and per-seed values."""
    rows = []
    for d, decoder in configs:
        base = None
        for name, kw in MODELS:
            vals = []
            for s in seeds:
                pyro.set_rng_seed(s)
                pyro.clear_param_store()
                x, _ = branching_diffusion(depth=5, dim=50, n_siblings=10)
                perm = torch.randperm(x.shape[0])
                ntest = x.shape[0] // 5
                xte, xtr = x[perm[:ntest]], x[perm[ntest:]]
                vae = ManifoldVAE(50, latent_dim=d, hidden=(200,), likelihood="gaussian", decoder=decoder, **kw)
                # the curvature learns with a larger step than the networks
                opt = RiemannianAdam(lambda pname: {"lr": 1e-2 if "components" in pname else 1e-3})
                svi = SVI(vae.model, vae.guide, opt, Trace_ELBO())
                for _ in range(steps):
                    for b in torch.randperm(xtr.shape[0]).split(64):
                        svi.step(xtr[b])
                ll = vae.log_marginal(xte, num_particles=K).mean().item()
                k = vae.curvatures()[0].item()
                vals.append((ll, k))
                print(f"  d={d} {decoder:8s} {name:14s} seed={s}: test log p(x) ≈ {ll:.2f}  κ={k:.3f}", flush=True)
            lls = [v[0] for v in vals]
            if base is None:
                base = lls
            diffs = [a - b for a, b in zip(lls, base, strict=True)]
            sd = statistics.stdev(lls) if len(lls) > 1 else 0.0
            dsd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            rows.append((d, decoder, name, statistics.mean(lls), sd, statistics.mean(diffs), dsd, statistics.mean(v[1] for v in vals)))
    return rows


def part_b(n_blocks, block, batch, hidden, clock=time.thread_time):
    """ms per step of (fused RiemannianAdam, per-parameter RiemannianAdam, hand-written loop):
    ``n_blocks`` rounds in which each runs ``block`` steps in turn, so that the three share the
    load of the machine round by round.  Returns one ``(fused, per-parameter, hand)`` triple per
    round.  ``clock``: CPU time of this thread by default, which the other jobs of a shared
    machine disturb less than wall time."""
    x, _ = digits(binarize=True)
    x = x[: batch * 4]
    batches = [x[i * batch : (i + 1) * batch] for i in range(4)]

    def make():
        pyro.set_rng_seed(0)
        pyro.clear_param_store()
        return ManifoldVAE(64, "poincare", 2, hidden=hidden, likelihood="bernoulli", learn_curvature=False)

    # (1, 2) dlmppl: Pyro SVI + RiemannianAdam, fused (the default) and one call per parameter (as before)
    svis = []
    for fused in (True, False):
        vae = make()
        svis.append(SVI(vae.model, vae.guide, RiemannianAdam({"lr": 1e-3}, fused=fused), Trace_ELBO()))

    # (3) hand-written loop: same networks, same distributions, same ELBO
    vae2 = make()
    params = list(vae2.encoder.parameters()) + list(vae2.decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    comp = vae2.components[0]

    def step(b):
        q = vae2.encode(b)[0]
        z = q.rsample()
        p = comp.prior(b, (b.shape[0],))
        logits = vae2.decode(z)
        ll = torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob(b).sum(-1)
        loss = -(ll + p.log_prob(z) - q.log_prob(z)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = []
    for r in range(n_blocks + 1):
        times = []
        for f in (svis[0].step, svis[1].step, step):
            if f is not step:
                # both VAEs use the same parameter names: the store holds the one being stepped
                pyro.clear_param_store()
            f(batches[0])
            t0 = clock()
            for i in range(block):
                f(batches[i % 4])
            times.append((clock() - t0) / block)
        if r:  # the first round is a warm-up
            out.append(tuple(times))
    return out


def part_b_lines(times, n_blocks, block):
    t_fused, t_single, t_torch = (statistics.median(t[i] for t in times) for i in range(3))
    r_fused = [t[0] / t[2] for t in times]
    r_single = [t[1] / t[2] for t in times]
    r_fs = [t[0] / t[1] for t in times]
    record("vae", "SVI step: ManifoldVAE / hand-written loop", statistics.median(r_fused), 1.1, "lower",
           f"median of {len(times)} rounds")
    q = statistics.quantiles
    return [
        "## (b) Time per SVI step",
        "",
        "Poincaré-ball VAE on binarised 8×8 digits, batch 128, MLPs 64-256-256-(2+2) and 2-256-256-64; "
        f"{n_blocks} rounds in which each implementation runs {block} steps in turn (CPU time of the thread); "
        "ratios are medians of the per-round ratios, with their quartiles. Machine: the shared 2-core x86-64 "
        "CPU, torch 2.13.0+cpu, pyro 1.9.2, one thread, while other engineers' jobs were running "
        "(load average about 8).",
        "",
        "| implementation | ms / step | ratio to hand-written: median (quartiles) |",
        "|---|---|---|",
        f"| dlmppl ManifoldVAE + pyro SVI + RiemannianAdam (fused, the default since issue 15) "
        f"| {t_fused * 1e3:.2f} | {statistics.median(r_fused):.3f} "
        f"({q(r_fused)[0]:.3f}–{q(r_fused)[2]:.3f}) |",
        f"| same with `RiemannianAdam(..., fused=False)`: one optimiser call per parameter, as before "
        f"| {t_single * 1e3:.2f} | {statistics.median(r_single):.3f} "
        f"({q(r_single)[0]:.3f}–{q(r_single)[2]:.3f}) |",
        f"| hand-written torch loop (same nets, same distributions) + torch Adam | {t_torch * 1e3:.2f} | 1.000 |",
        "",
        f"After / before (fused / per-parameter), same rounds: {statistics.median(r_fs):.3f} "
        f"({q(r_fs)[0]:.3f}–{q(r_fs)[2]:.3f}).",
        "",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--part", choices=["a", "b", "all"], default="all", help="b: only the SVI step timing")
    args = ap.parse_args()
    pyro.enable_validation(False)
    if args.quick:
        seeds, configs, epochs, K = [0], [(2, "mlp")], 5, 50
    else:
        seeds, configs, epochs, K = [0, 1, 2], [(2, "mlp"), (2, "distance"), (5, "mlp")], 30, 500
    path = "benchmarks/results_vae.md"
    b_lines = []
    if args.part in ("b", "all"):
        print("(b) time per SVI step")
        n_blocks, block = (4, 10) if args.quick else (40, 20)
        times = part_b(n_blocks, block, 128, (256, 256))
        b_lines = part_b_lines(times, n_blocks, block)
        print("\n".join(b_lines))
    if args.part == "b":  # replace only section (b) of the results file
        if not args.quick:
            with open(path) as f:
                text = f.read()
            head, rest = text.split("## (b) Time per SVI step", 1)
            with open(path, "w") as f:
                f.write(head + "\n".join(b_lines) + "\n" + rest[rest.index("## Reading") :])
        return
    print("(a) branching diffusion, test IWAE")
    rows = part_a(seeds, configs, epochs, K)
    lines = [
        "# ManifoldVAE benchmark (issue 4)",
        "",
        "Shared 2-core CPU, one torch thread, float32.  `python benchmarks/bench_vae.py`",
        "",
        "## (a) Branching-diffusion data: test marginal log-likelihood (IWAE)",
        "",
        f"Depth-5 binary tree in R^50 (Mathieu et al. 2019 sec. 5.1; 63 nodes × 10 noisy observations, 20% held out), "
        f"MLP 200 hidden, Gaussian likelihood with learned scale, {epochs} epochs of Riemannian Adam (lr 1e-3, "
        f"curvature lr 1e-2, batch 64), IWAE with K={K}; mean ± sd over seeds {seeds} (each seed draws its own tree). "
        "Decoder `mlp`: MLP on normal coordinates at the origin; `distance`: geodesic distances to 16 learned "
        "anchors, then the MLP. Δ: paired difference to the Euclidean VAE on the same seed. Higher is better.",
        "",
        "| latent dim | decoder | model | test log p(x) | sd | Δ vs Euclidean | sd(Δ) | final κ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d, dec, name, m, sd, dm, dsd, k in rows:
        lines.append(f"| {d} | {dec} | {name} | {m:.2f} | {sd:.2f} | {dm:+.2f} | {dsd:.2f} | {k:.3f} |")
    lines += [""] + b_lines
    if not args.quick and args.part == "all":
        with open(path, "w") as f:
            f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
