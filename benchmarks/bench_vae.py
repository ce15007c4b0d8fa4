"""Benchmark of dlmppl's manifold VAEs (issue 4, point 6).

(a) Branching-diffusion data (Mathieu et al. 2019): test marginal
    log-likelihood (IWAE, K particles) of Euclidean, Poincaré (c=1) and
    learned-curvature (κ-stereographic) VAEs at latent dimension 2 and 5,
    several seeds.
(b) Time per SVI step of ManifoldVAE (Pyro SVI + LeanTrace_ELBO + RiemannianAdam)
    against a hand-written PyTorch loop computing the same single-sample ELBO with the
    same networks and torch.optim.Adam (issue 15, point 5: target <= 1.1x); the path
    before (Trace_ELBO, foreach optimiser kernels) in the same rounds; where the fixed
    cost of a step goes at 2 rows.

Usage: python benchmarks/bench_vae.py [--quick] [--part b] [--runs 3]   (writes benchmarks/results_vae.md; --part b: only (b))
CPU only; figures are from a shared 2-core machine.
"""

import argparse
import os
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from ratios import record  # benchmarks/ is on sys.path when this script runs

from dlmppl.datasets import branching_diffusion, digits
from dlmppl.inference import LeanTrace_ELBO, RiemannianAdam
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


IMPLS = (
    ("lean", "dlmppl ManifoldVAE + pyro SVI + `LeanTrace_ELBO` + RiemannianAdam (fused, torch's fused Adam kernel): the default path since this issue"),
    ("before", "same with pyro's `Trace_ELBO` and `RiemannianAdam(..., fused=\"foreach\")`: the path before this change"),
    ("single", "`Trace_ELBO` + `RiemannianAdam(..., fused=False)`: one optimiser call per parameter (issue 4)"),
    ("hand", "hand-written torch loop (same nets, same distributions) + `torch.optim.Adam` (its default, per-tensor loop)"),
    ("hand_fused", "hand-written torch loop + `torch.optim.Adam(fused=True)` (reference: the same kernel as the fused path)"),
)


def _make_vae(hidden):
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    return ManifoldVAE(64, "poincare", 2, hidden=hidden, likelihood="bernoulli", learn_curvature=False)


def _hand_step(vae2, torch_fused):
    """The hand-written step: same networks, same distributions, same single-sample ELBO."""
    params = list(vae2.encoder.parameters()) + list(vae2.decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, fused=True if torch_fused else None)
    comp = vae2.components[0]

    def loss_of(b):
        q = vae2.encode(b)[0]
        z = q.rsample()
        p = comp.prior(b, (b.shape[0],))
        logits = vae2.decode(z)
        ll = torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob(b).sum(-1)
        return -(ll + p.log_prob(z) - q.log_prob(z)).sum()

    def step(b):
        loss = loss_of(b)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, loss_of


def _svi_step(hidden, elbo, fused):
    vae = _make_vae(hidden)
    return SVI(vae.model, vae.guide, RiemannianAdam({"lr": 1e-3}, fused=fused), elbo).step, vae


def part_b(n_blocks, block, batch, hidden, clock=time.thread_time):
    """ms per step of the implementations of ``IMPLS``: ``n_blocks`` rounds in which each runs
    ``block`` steps in turn, so that they share the load of the machine round by round.  Returns
    one dict ``name -> ms`` per round.  ``clock``: CPU time of this thread by default, which the
    other jobs of a shared machine disturb less than wall time."""
    x, _ = digits(binarize=True)
    x = x[: batch * 4]
    batches = [x[i * batch : (i + 1) * batch] for i in range(4)]
    steps = {
        "lean": _svi_step(hidden, LeanTrace_ELBO(), True)[0],
        "before": _svi_step(hidden, Trace_ELBO(), "foreach")[0],
        "single": _svi_step(hidden, Trace_ELBO(), False)[0],
        "hand": _hand_step(_make_vae(hidden), False)[0],
        "hand_fused": _hand_step(_make_vae(hidden), True)[0],
    }
    out = []
    for r in range(n_blocks + 1):
        times = {}
        for name, f in steps.items():
            if not name.startswith("hand"):
                # the VAEs use the same parameter names: the store holds the one being stepped
                pyro.clear_param_store()
            f(batches[0])
            t0 = clock()
            for i in range(block):
                f(batches[i % 4])
            times[name] = (clock() - t0) / block * 1e3
        if r:  # the first round is a warm-up
            out.append(times)
    return out


def fixed_cost(hidden, rows=2, reps=200, clock=time.thread_time):
    """Where the time of a step goes at ``rows`` rows (where the arithmetic is negligible):
    forward (model, guide and ELBO, building the graph), backward, optimiser, in ms, for the lean
    SVI path (``LeanTrace_ELBO.differentiable_loss`` for the forward) and the hand-written loop.
    Medians over 5 interleaved blocks of ``reps`` calls."""
    x, _ = digits(binarize=True)
    b = x[:rows]
    svi_step, vae = _svi_step(hidden, LeanTrace_ELBO(), True)
    elbo = LeanTrace_ELBO()
    hand_step, hand_loss = _hand_step(_make_vae(hidden), False)
    vae_params = list(vae.parameters())

    def lean_fwd():
        elbo.differentiable_loss(vae.model, vae.guide, b)

    def lean_fwd_bwd():
        elbo.differentiable_loss(vae.model, vae.guide, b).backward()
        for p in vae_params:
            p.grad = None

    def hand_fwd():
        hand_loss(b)

    def hand_fwd_bwd():
        hand_loss(b).backward()

    fs = dict(lean_step=lambda: svi_step(b), lean_fwd=lean_fwd, lean_fwd_bwd=lean_fwd_bwd,
              hand_step=lambda: hand_step(b), hand_fwd=hand_fwd, hand_fwd_bwd=hand_fwd_bwd)
    res = {k: [] for k in fs}
    for _ in range(5):
        for k, f in fs.items():
            f()
            t0 = clock()
            for _ in range(reps):
                f()
            res[k].append((clock() - t0) / reps * 1e3)
    med = {k: statistics.median(v) for k, v in res.items()}
    rows_out = {}
    for who in ("lean", "hand"):
        fwd, fb, st = med[f"{who}_fwd"], med[f"{who}_fwd_bwd"], med[f"{who}_step"]
        rows_out[who] = (st, fwd, fb - fwd, st - fb)
    return rows_out


def part_b_lines(runs, n_blocks, block, fixed=None):
    """``runs``: one list of rounds (``part_b``'s output) per run of the benchmark."""
    q = statistics.quantiles
    lines = [
        "## (b) Time per SVI step",
        "",
        "Poincaré-ball VAE on binarised 8×8 digits, batch 128, MLPs 64-256-256-(2+2) and 2-256-256-64; "
        f"{n_blocks} rounds in which each implementation runs {block} steps in turn (CPU time of the thread); "
        "ratios to the hand-written loop are medians of the per-round ratios, with their quartiles, "
        f"in each of {len(runs)} runs of the benchmark. Machine: the shared 2-core x86-64 "
        "CPU, torch 2.13.0+cpu, pyro 1.9.2, one thread, while other engineers' jobs were running "
        f"(load average {os.getloadavg()[0]:.0f} at the end of the runs).",
        "",
        "| implementation | ms / step (run 1) | " + " | ".join(f"ratio to hand-written, run {i + 1}" for i in range(len(runs))) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    for name, label in IMPLS:
        cells = []
        for rounds in runs:
            r = [t[name] / t["hand"] for t in rounds]
            qs = q(r)
            cells.append(f"{statistics.median(r):.3f} ({qs[0]:.3f}–{qs[2]:.3f})")
        ms = statistics.median(t[name] for t in runs[0])
        lines.append(f"| {label} | {ms:.2f} | " + " | ".join(cells) + " |")
    after_before = [statistics.median(t["lean"] / t["before"] for t in rounds) for rounds in runs]
    vs_fused = [statistics.median(t["lean"] / t["hand_fused"] for t in rounds) for rounds in runs]
    lean_hand = [statistics.median(t["lean"] / t["hand"] for t in rounds) for rounds in runs]
    record("vae", "SVI step: ManifoldVAE (LeanTrace_ELBO) / hand-written loop", statistics.median(lean_hand), 1.1,
           "lower", f"median of {len(runs)} runs")
    record("vae", "SVI step: ManifoldVAE / hand-written loop with fused Adam", statistics.median(vs_fused), 1.1,
           "lower", "stricter peer: torch's fused Adam kernel in the hand loop")
    lines += [
        "",
        "After / before (lean / before), same rounds, per run: " + ", ".join(f"{v:.3f}" for v in after_before)
        + ".  Lean path / hand-written loop with torch's fused Adam: " + ", ".join(f"{v:.3f}" for v in vs_fused) + ".",
        "",
    ]
    if fixed is not None:
        lines += [
            "Fixed cost at 2 rows (the arithmetic is negligible there), ms per step, medians of 5 blocks of 200: "
            "forward = model, guide and ELBO with the autograd graph (`LeanTrace_ELBO.differentiable_loss` / "
            "the hand-written loss), backward = forward+backward − forward, optimiser = step − forward+backward.",
            "",
            "| 2 rows | step | forward | backward | optimiser |",
            "|---|---|---|---|---|",
        ]
        for who, label in (("lean", "lean SVI path"), ("hand", "hand-written loop")):
            st, fwd, bwd, opt = fixed[who]
            lines.append(f"| {label} | {st:.2f} | {fwd:.2f} | {bwd:.2f} | {opt:.2f} |")
        lines.append("")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--part", choices=["a", "b", "all"], default="all", help="b: only the SVI step timing")
    ap.add_argument("--runs", type=int, default=3, help="(b): runs of the timing, each reported (default 3)")
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
        runs = [part_b(n_blocks, block, 128, (256, 256)) for _ in range(1 if args.quick else args.runs)]
        fixed = fixed_cost((256, 256), reps=20 if args.quick else 200)
        b_lines = part_b_lines(runs, n_blocks, block, fixed)
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
