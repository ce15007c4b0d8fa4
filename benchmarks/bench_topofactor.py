"""When does the topological factor help?  Weight 0 / rule-chosen / 10× on three VAEs (issue 17, point 7).

A VAE's encoder is regularised by the topological-autoencoder loss (Moor et al. 2020),
``dl.losses.factor("topo", dl.losses.topological(x, z, normalize=True), w, in_guide=True)``, with
the weight ``w`` chosen by the rule of ``dl.losses.suggest_weight``: ``w = share · |−ELBO of a
batch| / topological loss of the batch``, both measured at initialisation (mean over a few
batches / ELBO draws), so that the factor starts at ``share`` times the ELBO.  Side by side in one
run, from the same initialisation per seed: weight 0 (plain VAE), ``0.1 ×``, ``1 ×`` (the rule,
``share = 1``) and ``10 ×`` the rule weight (digits: also the issue's fixed weight 50).

Cases:

* **circle σ = 1**: 128 points of a noisy unit circle in R¹⁰ (noise 0.05), a Gaussian VAE with a
  2-d Euclidean latent and a fixed observation scale σ = 1, the setting of tutorial 04 section 3
  where the plain VAE suffers posterior collapse; full batch.
* **circle σ = 0.1**: the same with σ = 0.1, where the reconstruction term alone keeps the loop.
* **digits S²**: scikit-learn's 8×8 digits (fixed split: 400 held out), a Bernoulli VAE with an
  S² latent (`ManifoldVAE(latent="sphere", latent_dim=2, hidden=(256,))`), minibatches of 128;
  the factor uses geodesic (great-circle) latent distances.

Metrics, all on HELD-OUT data encoded by the trained encoder (posterior locations): circles:
128 fresh circle points; the H1 loop score (largest H1 persistence / diameter of the codes; the
data's own is ≈ 0.6) and the topological loss (normalised, as trained) between the held-out
points and their codes.  Digits: the topological loss of held-out batches of 128 (mean over 3
batches), the 5-NN accuracy of the held-out codes' labels with the training codes as reference
(great-circle distance), and the held-out −ELBO per image.  Training time and its ratio to the
plain VAE's.  mean ± sd over seeds (the seed drives data (circles), initialisation, minibatches).

Usage: python benchmarks/bench_topofactor.py [--quick] [--seeds 0,1,2]
(writes benchmarks/results_topofactor.md unless --quick).  CPU, one torch thread.
The "Reading" paragraph of results_topofactor.md is written by hand from the printed numbers.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time

import pyro
import torch
from calibration import machine  # benchmarks/ is on sys.path when this script runs
from ratios import record

import dlmppl as dl

torch.set_num_threads(1)

SHARES = (0.0, 0.1, 1.0, 10.0)


def loop_score(z):
    """Largest H1 persistence of the codes' Rips filtration / their diameter."""
    dg = dl.losses.persistence(z, maxdim=1)[1]
    diam = torch.cdist(z, z).max()
    return float((dg[:, 1] - dg[:, 0]).max() / diam) if len(dg) else 0.0


def make_vae(case, seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed + 100)  # same initialisation for every weight of a seed
    if case["name"].startswith("circle"):
        return dl.models.ManifoldVAE(10, latent="euclidean", latent_dim=2, hidden=(64,), likelihood="gaussian",
                                     obs_scale=case["sigma"])
    return dl.models.ManifoldVAE(64, latent="sphere", latent_dim=2, hidden=(256,), likelihood="bernoulli",
                                 learn_curvature=False)


def z_manifold(vae):
    c = vae.components[0]
    return None if c.kind == "euclidean" else c.manifold


def batches(case, x, gen):
    if case["batch"] >= len(x):
        return [x]
    return [x[b] for b in torch.randperm(len(x), generator=gen).split(case["batch"])]


def rule_weight(case, x, seed, n_eval=4):
    """``suggest_weight`` at initialisation: −ELBO and topological loss of a few batches (guide draws)."""
    vae = make_vae(case, seed)
    svi = pyro.infer.SVI(vae.model, vae.guide, dl.inference.RiemannianAdam({"lr": case["lr"]}),
                         pyro.infer.Trace_ELBO())
    gen = torch.Generator().manual_seed(seed)
    bs = (batches(case, x, gen) * n_eval)[:n_eval]
    elbos, regs = [], []
    for b in bs:
        elbos.append(svi.evaluate_loss(b))
        with torch.no_grad():
            z = vae.encode(b)[0].sample()
            regs.append(float(dl.losses.topological(b, z, z_manifold=z_manifold(vae), normalize=True)))
    w = dl.losses.suggest_weight(elbos, regs, share=1.0)
    return w, statistics.mean(abs(e) for e in elbos) / len(bs[0]), statistics.mean(regs)


def train(case, x, seed, weight):
    vae = make_vae(case, seed)
    M = z_manifold(vae)

    def guide(xb):
        (z,) = vae.guide(xb)
        if weight > 0:
            dl.losses.factor("topo", dl.losses.topological(xb, z, z_manifold=M, normalize=True), weight=weight,
                             in_guide=True)

    svi = pyro.infer.SVI(vae.model, guide, dl.inference.RiemannianAdam({"lr": case["lr"]}), pyro.infer.Trace_ELBO())
    gen = torch.Generator().manual_seed(seed + 7)
    pyro.set_rng_seed(seed + 200)
    t = time.perf_counter()
    for _ in range(case["epochs"]):
        for b in batches(case, x, gen):
            svi.step(b)
    dt = time.perf_counter() - t
    vae.eval()
    return vae, dt


def evaluate(case, vae, data):
    xte = data["xte"]
    M = z_manifold(vae)
    out = {}
    with torch.no_grad():
        zte = vae.codes(xte)[0]
        if case["name"].startswith("circle"):
            out["loop score"] = loop_score(zte)
            out["topo loss"] = float(dl.losses.topological(xte, zte, z_manifold=M, normalize=True))
        else:
            bs = [slice(k * 128, (k + 1) * 128) for k in range(len(xte) // 128)]
            out["topo loss"] = statistics.mean(
                float(dl.losses.topological(xte[s], zte[s], z_manifold=M, normalize=True)) for s in bs)
            ztr = vae.codes(data["xtr"])[0]
            # on S² the great-circle distance is a monotone function of the chordal one: same neighbours
            nn_idx = torch.cdist(zte, ztr).topk(5, largest=False).indices
            votes = data["ytr"][nn_idx]
            pred = torch.mode(votes, dim=1).values
            out["5-NN acc"] = float((pred == data["yte"]).double().mean())
        elbo = pyro.infer.Trace_ELBO(num_particles=8, vectorize_particles=False)
        out["-ELBO/pt"] = elbo.loss(vae.model, vae.guide, xte) / len(xte)
    return out


def load(case, seed):
    if case["name"].startswith("circle"):
        pyro.set_rng_seed(seed)
        xtr, _ = dl.datasets.noisy_sphere(n=128, dim=1, ambient=10, noise=0.05)
        xte, _ = dl.datasets.noisy_sphere(n=128, dim=1, ambient=10, noise=0.05)
        return dict(xtr=xtr, xte=xte, data_loop=loop_score(xte))
    x, y = dl.datasets.digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    te, tr = perm[:400], perm[400:]
    return dict(xtr=x[tr], xte=x[te], ytr=y[tr], yte=y[te])


def fmt(vals, digits=3):
    m = statistics.mean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one seed, few steps, 2 cases, weights 0 and the rule "
                    "(smoke run, bench_all; writes nothing)")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    pyro.enable_validation(False)
    torch.set_default_dtype(torch.float64)
    seeds = [int(s) for s in args.seeds.split(",")]
    circle_steps, digit_epochs = 400, 30
    if args.quick:
        seeds, circle_steps, digit_epochs = seeds[:1], 150, 3
    cases = [
        dict(name="circle σ = 1", sigma=1.0, lr=3e-3, batch=128, epochs=circle_steps, fixed=()),
        dict(name="circle σ = 0.1", sigma=0.1, lr=3e-3, batch=128, epochs=circle_steps, fixed=()),
        dict(name="digits S²", lr=2e-3, batch=128, epochs=digit_epochs, fixed=(50.0,)),
    ]
    shares = SHARES
    if args.quick:  # the case where the factor helps, and digits; weight 0 and the rule's only
        cases, shares = [dict(c, fixed=()) for c in cases if c["name"] != "circle σ = 0.1"], (0.0, 1.0)
    t_all = time.perf_counter()

    def log(msg):
        print(f"{time.perf_counter() - t_all:7.0f}s  {msg}", flush=True)

    results = {}  # case -> variant -> metric -> list over seeds
    rules = {}  # case -> list of (w, |ELBO|/pt, R) at init
    done = []
    for seed in seeds:  # seeds outermost: the results file is rewritten after each (seed, case)
        for case in cases:
            data = load(case, seed)
            w_rule, elbo_pt, r0 = rule_weight(case, data["xtr"], seed)
            rules.setdefault(case["name"], []).append((w_rule, elbo_pt, r0))
            variants = [(f"{s:g} × rule" if s else "0 (plain)", s * w_rule) for s in shares]
            variants += [(f"{w:g} (fixed)", w) for w in case["fixed"]]
            t_plain = None
            for vname, w in variants:
                vae, dt = train(case, data["xtr"], seed, w)
                t_plain = dt if t_plain is None else t_plain
                r = evaluate(case, vae, data)
                r["weight"], r["train s"], r["time ratio"] = w, dt, dt / t_plain
                if "data_loop" in data:
                    r["data loop"] = data["data_loop"]
                for k, v in r.items():
                    results.setdefault(case["name"], {}).setdefault(vname, {}).setdefault(k, []).append(v)
                log(f"[{case['name']}] seed {seed} {vname:14s} w={w:8.2f}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k != "weight"))
            done.append((seed, case["name"]))
            report(args, cases, results, rules, done, circle_steps, digit_epochs, time.perf_counter() - t_all,
                   final=False)
    total = time.perf_counter() - t_all
    log(f"total {total / 60:.1f} min")
    for name, res in results.items():
        plain, rule = res["0 (plain)"], res["1 × rule"]
        if name == "circle σ = 1":  # where the factor is meant to help
            record("topofactor", f"{name}: held-out loop score, rule weight / plain",
                   statistics.mean(rule["loop score"]) / statistics.mean(plain["loop score"]), note="data: 0.61")
        record("topofactor", f"{name}: training time, rule weight / plain", statistics.mean(rule["time ratio"]),
               better="lower")
    print(report(args, cases, results, rules, done, circle_steps, digit_epochs, total, final=True))
    return 0


def report(args, cases, results, rules, done, circle_steps, digit_epochs, total, final):
    """The markdown of results_topofactor.md (written unless --quick)."""
    cmd = "nice -n 19 python benchmarks/bench_topofactor.py" + (" --quick" if args.quick else "")
    if args.seeds != "0,1,2":
        cmd += f" --seeds {args.seeds}"
    L = [
        "# The topological factor: when does it help? (issue 17, point 7)",
        "",
        f"Machine: {machine()['cpu']}, {torch.get_num_threads()} torch thread on a shared {platform.machine()} host "
        "with 2 cores, shared with other engineers' jobs during the run (timings noisy; the time ratios are "
        f"measured in the same run); Python {platform.python_version()}, torch {torch.__version__}, "
        f"pyro {pyro.__version__}; {datetime.date.today().isoformat()}; wall time {total / 60:.1f} min; "
        f"seeds {', '.join(map(str, sorted({d[0] for d in done})))}"
        + ("" if final else f" (run in progress: {len(done)} (seed, case) pairs done)") + ".",
        "",
        f"Command: `{cmd}` (writes this file; the Reading at the end is written by hand from the printed numbers).",
        "",
        "Factor: `losses.factor(\"topo\", losses.topological(x, z, z_manifold, normalize=True), w, in_guide=True)` "
        "on the guide's draws of each batch. Rule weight: `losses.suggest_weight(elbo, R, share=1)` = "
        "|−ELBO of a batch| / R at initialisation (mean over 4 batches or ELBO draws). "
        f"Circles: 128 training points, {circle_steps} full-batch steps, Adam lr 3e-3; digits: 1397 training / 400 "
        f"held-out images, {digit_epochs} epochs of minibatches of 128, lr 2e-3. All metrics on held-out data "
        "(see the module docstring of `benchmarks/bench_topofactor.py`).",
        "",
    ]
    for case in cases:
        name = case["name"]
        if name not in results:
            continue
        rw = rules[name]
        L += [f"## {name}", "",
              f"At initialisation: |−ELBO| per point {fmt([r[1] for r in rw], 2)}, topological loss of a batch "
              f"{fmt([r[2] for r in rw], 2)}, rule weight {fmt([r[0] for r in rw], 1)}.", ""]
        res = results[name]
        if name.startswith("circle"):
            dl_ = next(iter(res.values()))["data loop"]
            L.append(f"Loop score of the held-out data themselves: {fmt(dl_)}.")
            L.append("")
            cols = ["weight", "loop score", "topo loss", "-ELBO/pt", "train s", "time ratio"]
        else:
            cols = ["weight", "5-NN acc", "topo loss", "-ELBO/pt", "train s", "time ratio"]
        heads = {"loop score": "held-out loop score ↑", "topo loss": "held-out topo loss ↓",
                 "-ELBO/pt": "held-out −ELBO/pt", "5-NN acc": "held-out 5-NN acc ↑", "train s": "train (s)",
                 "time ratio": "time / plain", "weight": "weight"}
        L.append("| variant | " + " | ".join(heads[c] for c in cols) + " |")
        L.append("|---|" + "---|" * len(cols))
        for vname, m in res.items():
            cells = [fmt(m[c], 1 if c in ("weight", "train s") else (2 if c in ("-ELBO/pt", "time ratio") else 3))
                     for c in cols]
            L.append(f"| {vname} | " + " | ".join(cells) + " |")
        L.append("")
    text = "\n".join(L)
    if not args.quick:
        with open("benchmarks/results_topofactor.md", "w") as f:
            f.write(text)
    return text



if __name__ == "__main__":
    sys.exit(main())
