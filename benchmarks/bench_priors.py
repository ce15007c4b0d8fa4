"""Benchmark of learned and matched priors for manifold VAEs (issue 14, point 5).

The benchmark the proposals would run: on two image data sets with a known structure,

* dSprites-like sprites (``dlmppl.datasets.sprites``: factors shape, scale, rotation (circular),
  x, y), small images;
* scikit-learn's 8×8 digits (``dlmppl.datasets.digits``, grey levels in [0, 1]; ten classes),

train ``ManifoldVAE``s with a 2-dimensional latent in three geometries (Euclidean R², sphere S²,
Poincaré disk with c = 1) and compare three priors:

(i)   the fixed prior (standard normal, uniform on S², standard wrapped normal at 0 of the disk);
(ii)  a two-stage ``FlowMatchingPrior`` fitted to the training codes of the VAE of (i), set with
      ``vae.set_prior`` (same encoder and decoder as (i): only the prior changes);
(iii) SW prior matching: a VAE trained with ``prior_matching="sliced"`` (geodesic sliced W₂²
      toward the fixed prior, weight λ per datum) from the same initialisation as (i).

Metrics, over seeds (mean ± sd; the data and their split are fixed, the seed drives the
networks' initialisation, minibatches, prior draws and flow-matching fit):

* latent gap: MMD² (geodesic Gaussian kernel, ``manifold=``) between prior draws and the codes
  (posterior means, which the flow is fitted to) of held-out images, and between prior draws and one
  draw of q(z | x) per held-out image (the aggregate posterior); bandwidth = median geodesic
  distance within the codes (resp. the draws);
* the same gap seen through the decoder: precision / recall (feature space) of decoded prior draws
  against the decoded codes of held-out images;
* MMD² between decoded prior samples (Bernoulli means) and held-out images, in pixel space and in
  the hidden layer of a small network trained here on the real training images (a classifier
  of the digit; a regressor of the sprite factors), both with a bandwidth fixed per data set
  (median distance between held-out images), so that all rows of a data set share one kernel;
* precision / recall (Kynkäänniemi et al. 2019, k = 5) in pixel and feature space;
* digits: mode coverage of the classes that the classifier assigns to the samples
  (``dlmppl.metrics.mode_coverage`` of its class probabilities against the one-hot vertices,
  weighted by the real class frequencies: nearest vertex = arg-max class; JSD of the histogram);
* sprites: MIG and DCI (lasso) of the codes of all images, rotation marked circular;
* reconstruction error (Bernoulli cross-entropy per image, held-out) of each VAE.

Usage: python benchmarks/bench_priors.py [--quick] [--seeds 0,1,2]
(writes benchmarks/results_priors.md unless --quick).  CPU, one torch thread.
The "Reading" paragraph of results_priors.md is written by hand from the printed numbers.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import time

import pyro
import torch
from calibration import machine  # benchmarks/ is on sys.path when this script runs
from pyro.infer import SVI, Trace_ELBO
from ratios import record
from torch import nn

import dlmppl as dl
from dlmppl import metrics
from dlmppl.datasets import SPRITES_CIRCULAR, SPRITES_SHAPES, SPRITES_SYMMETRY, digits, sprites
from dlmppl.inference import RiemannianAdam
from dlmppl.models import FlowMatchingPrior, ManifoldVAE

torch.set_num_threads(1)

GEOMETRIES = (("Euclidean R²", "euclidean"), ("sphere S²", "sphere"), ("Poincaré disk", "poincare"))
PRIORS = ("fixed", "flow (2-stage)", "SW-matched")


# ------------------------------------------------------------------------------------- data


def load(name, cfg):
    """Images ``(N, D)`` in [0, 1], a fixed train/test split, and labels/factors."""
    g = torch.Generator().manual_seed(1234)
    if name == "digits":
        x, y = digits(binarize=False)
        perm = torch.randperm(len(x), generator=g)
        n_test = cfg["digits_test"]
        te, tr = perm[:n_test], perm[n_test:]
        return dict(xtr=x[tr], xte=x[te], ytr=y[tr], yte=y[te])
    torch.manual_seed(1234)  # sprites draws its factors from torch's generator
    n = cfg["sprites_n"]
    img, f = sprites(n, size=cfg["sprites_size"], positions=cfg["sprites_positions"], dtype=torch.float32)
    x = img.reshape(n, -1)
    n_test = cfg["sprites_test"]
    return dict(xtr=x[n_test:], xte=x[:n_test], ytr=f[n_test:], yte=f[:n_test])


def sprite_targets(f):
    """Regression targets of the identifiable sprite factors: scale, x, y and (cos, sin)(order·θ)."""
    order = torch.tensor([SPRITES_SYMMETRY[s] for s in SPRITES_SHAPES], dtype=f.dtype)[f[:, 0].long()]
    a = order * f[:, 2]
    return torch.stack([f[:, 1], f[:, 3], f[:, 4], a.cos(), a.sin()], -1)


class FeatureNet(nn.Module):
    """A small MLP trained on the real images; its hidden layer is the feature space of the metrics."""

    def __init__(self, d_in, n_out, width=128):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, 256), nn.ReLU(), nn.Linear(256, width), nn.ReLU())
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        return self.head(self.body(x))


def train_feature_net(name, data, steps):
    """Digits: a 10-class classifier; sprites: shape classifier + regressor of the other factors.

    Returns the net and a line on its held-out quality."""
    torch.manual_seed(777)
    xtr, xte = data["xtr"], data["xte"]
    if name == "digits":
        net = FeatureNet(xtr.shape[1], 10)
    else:
        net = FeatureNet(xtr.shape[1], len(SPRITES_SHAPES) + 5)
        ttr, tte = sprite_targets(data["ytr"]), sprite_targets(data["yte"])
        mu, sd = ttr.mean(0), ttr.std(0)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(steps):
        i = torch.randint(0, len(xtr), (128,))
        out = net(xtr[i])
        if name == "digits":
            loss = nn.functional.cross_entropy(out, data["ytr"][i])
        else:
            ns = len(SPRITES_SHAPES)
            loss = nn.functional.cross_entropy(out[:, :ns], data["ytr"][i, 0].long())
            loss = loss + (out[:, ns:] - (ttr[i] - mu) / sd).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        out = net(xte)
        if name == "digits":
            acc = (out.argmax(-1) == data["yte"]).float().mean().item()
            return net, f"held-out accuracy {acc:.3f}"
        ns = len(SPRITES_SHAPES)
        acc = (out[:, :ns].argmax(-1) == data["yte"][:, 0].long()).float().mean().item()
        pred = out[:, ns:] * sd + mu
        r2 = 1 - (pred - tte).square().mean(0) / tte.var(0)
        names = ("scale", "x", "y", "cos kθ", "sin kθ")
        r2s = ", ".join(f"{n} {v:.2f}" for n, v in zip(names, r2.tolist(), strict=True))
        return net, f"held-out shape accuracy {acc:.3f}; R² {r2s} (k = the shape's symmetry order)"


def median_dist(x):
    d = torch.cdist(x, x)
    i, j = torch.triu_indices(len(x), len(x), 1)
    return float(d[i, j].median())


# ------------------------------------------------------------------------------------- models


def train_vae(latent, xtr, seed, cfg, matching_weight=None):
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    kw = dict(prior_matching="sliced", matching_weight=matching_weight) if matching_weight else {}
    vae = ManifoldVAE(xtr.shape[1], latent=latent, latent_dim=2, hidden=cfg["hidden"], likelihood="bernoulli",
                      learn_curvature=False, **kw)
    svi = SVI(vae.model, vae.guide, RiemannianAdam({"lr": cfg["lr"]}), Trace_ELBO())
    loss = float("nan")
    for _ in range(cfg["epochs"]):
        tot = 0.0
        for b in torch.randperm(len(xtr)).split(cfg["batch"]):
            tot += svi.step(xtr[b])
        loss = tot / len(xtr)
    if not math.isfinite(loss):
        raise RuntimeError(f"{latent} VAE (matching={matching_weight}) seed {seed}: loss {loss}")
    vae.eval()
    return vae, loss


def fit_flow(vae, xtr, seed, cfg):
    c = vae.components[0]
    torch.manual_seed(seed + 1000)
    prior = FlowMatchingPrior(c.manifold, c.event_shape)
    hist = prior.fit(vae.codes(xtr)[0], steps=cfg["fm_steps"])
    prior.requires_grad_(False)
    prior.eval()
    return prior, hist


# ------------------------------------------------------------------------------------- metrics


def recon_bce(vae, x):
    with torch.no_grad():
        logits = vae.decode(vae.codes(x))
        return nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum").item() / len(x)


def encoder_metrics(vae, data, seed):
    """MIG and DCI of the codes of all sprite images (a property of the encoder: shared by (i) and (ii))."""
    x = torch.cat([data["xtr"], data["xte"]])
    f = torch.cat([data["ytr"], data["yte"]])
    z = vae.codes(x)[0]
    circ = list(SPRITES_CIRCULAR)
    m = metrics.mig(z, f, circular=circ, bins=20)
    d = metrics.dci(z, f, circular=circ, generator=torch.Generator().manual_seed(seed))
    return {"MIG": float(m.score), "DCI D": float(d.disentanglement), "DCI C": float(d.completeness),
            "DCI I": float(d.informativeness)}


def evaluate(name, vae, data, ref, seed):
    """The metrics of one (VAE, prior) pair; the prior is whatever ``vae`` now has."""
    c = vae.components[0]
    xte = data["xte"]
    n = len(xte)
    torch.manual_seed(seed + 2000)
    with torch.no_grad():
        z = c.prior(xte, (n,)).sample()
        if not bool(torch.isfinite(z).all()):
            raise RuntimeError(f"non-finite prior draws ({int((~torch.isfinite(z)).sum())} entries)")
        codes = vae.codes(xte)[0]
        h_lat = float(dl.geometry.distance(c.manifold, codes[:, None], codes[None]).flatten().median())
        out = {"latent MMD²": float(metrics.mmd2(z, codes, kernel="geodesic", manifold=c.manifold, bandwidth=h_lat))}
        zq = vae.encode(xte)[0].sample()  # one draw of the aggregate posterior per held-out image
        h_q = float(dl.geometry.distance(c.manifold, zq[:, None], zq[None]).flatten().median())
        out["latent MMD² (q draws)"] = float(metrics.mmd2(z, zq, kernel="geodesic", manifold=c.manifold, bandwidth=h_q))
        # collapse diagnostics (encoder only): spread of the codes, and of a posterior draw about its code
        out["code spread"] = h_lat
        out["q spread"] = float(dl.geometry.distance(c.manifold, zq, codes).mean())
        samples = torch.sigmoid(vae.decode([z]))
        out["pixel MMD²"] = float(metrics.mmd2(samples, xte, bandwidth=ref["h_pix"]))
        fs, fr = ref["net"].body(samples), ref["feat_te"]
        out["feature MMD²"] = float(metrics.mmd2(fs, fr, bandwidth=ref["h_feat"]))
        pr = metrics.precision_recall(xte, samples, k=5)
        out["precision (pix)"], out["recall (pix)"] = float(pr.precision), float(pr.recall)
        pr = metrics.precision_recall(fr, fs, k=5)
        out["precision (feat)"], out["recall (feat)"] = float(pr.precision), float(pr.recall)
        # the prior judged through the same decoder: decoded prior draws against the decoded codes of
        # held-out images (decoder blur and the 2-d image manifold are then common to both sets)
        frec = ref["net"].body(torch.sigmoid(vae.decode(vae.codes(xte))))
        pr = metrics.precision_recall(frec, fs, k=5)
        out["precision (vs recon)"], out["recall (vs recon)"] = float(pr.precision), float(pr.recall)
        out["recon BCE"] = recon_bce(vae, xte)
        if name == "digits":
            probs = torch.softmax(ref["net"](samples), -1)
            mc = metrics.mode_coverage(probs, torch.eye(10), weights=ref["class_freq"], min_samples=0.02)
            out["classes ≥2%"] = float(mc.coverage) * 10
            out["class JSD"] = float(mc.jsd)
    return out


# ------------------------------------------------------------------------------------- driver


def fmt(vals, digits=3):
    m = statistics.mean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    if abs(m) < 10 ** -(digits - 1) and m != 0 or max(abs(m), sd) < 1e-2:
        return f"{m:.2e} ± {sd:.1e}"
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def run_dataset(name, cfg, seeds, log):
    data = load(name, cfg)
    t0 = time.perf_counter()
    net, quality = train_feature_net(name, data, cfg["net_steps"])
    with torch.no_grad():
        feat_te = net.body(data["xte"])
    ref = dict(net=net, feat_te=feat_te, h_pix=median_dist(data["xte"]), h_feat=median_dist(feat_te))
    if name == "digits":
        ref["class_freq"] = torch.bincount(data["ytr"], minlength=10).float() / len(data["ytr"])
    log(f"[{name}] {len(data['xtr'])} train / {len(data['xte'])} test images of {data['xtr'].shape[1]} pixels; "
        f"feature net: {quality} ({time.perf_counter() - t0:.0f} s)")
    res = {}  # (geometry, prior) -> metric -> list over seeds
    info = {"quality": quality, "n_train": len(data["xtr"]), "n_test": len(data["xte"]), "D": data["xtr"].shape[1],
            "times": {}, "fm_loss": {}, "elbo": {}}
    for gname, latent in GEOMETRIES:
        for seed in seeds:
            t = time.perf_counter()
            vae, loss_fixed = train_vae(latent, data["xtr"], seed, cfg)
            t_vae = time.perf_counter() - t
            enc = encoder_metrics(vae, data, seed) if name == "sprites" else {}
            r = evaluate(name, vae, data, ref, seed)
            for k, v in {**r, **enc}.items():
                res.setdefault((gname, PRIORS[0]), {}).setdefault(k, []).append(v)
            t = time.perf_counter()
            prior, hist = fit_flow(vae, data["xtr"], seed, cfg)
            t_fm = time.perf_counter() - t
            vae.set_prior(prior)
            r = evaluate(name, vae, data, ref, seed)
            for k, v in {**r, **enc}.items():
                res.setdefault((gname, PRIORS[1]), {}).setdefault(k, []).append(v)
            t = time.perf_counter()
            vae_sw, loss_sw = train_vae(latent, data["xtr"], seed, cfg, matching_weight=cfg["sw_weight"])
            t_sw = time.perf_counter() - t
            enc = encoder_metrics(vae_sw, data, seed) if name == "sprites" else {}
            r = evaluate(name, vae_sw, data, ref, seed)
            for k, v in {**r, **enc}.items():
                res.setdefault((gname, PRIORS[2]), {}).setdefault(k, []).append(v)
            info["times"].setdefault(gname, []).append((t_vae, t_fm, t_sw))
            fm_end = statistics.mean(hist[-max(1, len(hist) // 20):])
            info["fm_loss"].setdefault(gname, []).append((hist[0], fm_end))
            info["elbo"].setdefault(gname, []).append((loss_fixed, loss_sw))
            short = ", ".join(
                f"{p}: latMMD² {res[(gname, p)]['latent MMD²'][-1]:.3g} featMMD² {res[(gname, p)]['feature MMD²'][-1]:.3g}"
                f" P/R {res[(gname, p)]['precision (feat)'][-1]:.2f}/{res[(gname, p)]['recall (feat)'][-1]:.2f}"
                for p in PRIORS)
            log(f"[{name}] {gname:13s} seed {seed}: -ELBO/img fixed {loss_fixed:.1f} SW {loss_sw:.1f}; "
                f"train {t_vae:.0f}+{t_sw:.0f} s, FM fit {t_fm:.0f} s; {short}")
    return res, info


METRIC_NOTES = {
    "latent MMD²": "↓",
    "pixel MMD²": "↓",
    "feature MMD²": "↓",
    "precision (pix)": "↑",
    "recall (pix)": "↑",
    "precision (feat)": "↑",
    "recall (feat)": "↑",
    "recon BCE": "↓",
    "latent MMD² (q draws)": "↓",
    "precision (vs recon)": "↑",
    "code spread": "",
    "q spread": "",
    "recall (vs recon)": "↑",
    "classes ≥2%": "↑",
    "class JSD": "↓",
    "MIG": "↑",
    "DCI D": "↑",
    "DCI C": "↑",
    "DCI I": "↓",
}


def table(res, cols):
    lines = ["| geometry | prior | " + " | ".join(f"{c} {METRIC_NOTES[c]}".strip() for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for gname, _ in GEOMETRIES:
        for p in PRIORS:
            r = res[(gname, p)]
            lines.append(f"| {gname} | {p} | " + " | ".join(fmt(r[c]) for c in cols) + " |")
    return lines


def winners(res, cols):
    """Per geometry and metric: the best prior by mean, '*' when it beats each other prior on every seed."""
    lines = ["| geometry | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for gname, _ in GEOMETRIES:
        cells = []
        for c in cols:
            sign = -1 if METRIC_NOTES[c] == "↓" else 1
            means = {p: sign * statistics.mean(res[(gname, p)][c]) for p in PRIORS}
            best = max(means, key=means.get)
            others = [p for p in PRIORS if p != best]
            vb = res[(gname, best)][c]
            ties = [p for p in others if res[(gname, p)][c] == vb]
            every = all(all(sign * (a - b) > 0 for a, b in zip(vb, res[(gname, p)][c], strict=True)) for p in others)
            label = " = ".join([best.split(" ")[0]] + [p.split(" ")[0] for p in ties])
            cells.append(label + (" *" if every else ""))
        lines.append(f"| {gname} | " + " | ".join(cells) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one seed, few steps (smoke test; writes nothing)")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    pyro.enable_validation(False)
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = dict(hidden=(256,), lr=2e-3, batch=128, sw_weight=20.0, digits_test=400, sprites_n=3000, sprites_test=500,
               sprites_size=16, sprites_positions=16, epochs=30, fm_steps=1500, net_steps=2000)
    if args.quick:
        seeds = seeds[:1]
        cfg.update(epochs=2, fm_steps=40, net_steps=100, sprites_n=800, sprites_test=200, digits_test=200)
    t_all = time.perf_counter()

    def log(msg):
        print(f"{time.perf_counter() - t_all:7.0f}s  {msg}", flush=True)

    results = {}
    for name in ("sprites", "digits"):
        results[name] = run_dataset(name, cfg, seeds, log)
    total = time.perf_counter() - t_all
    log(f"total {total / 60:.1f} min")
    for name, (res, _) in results.items():  # the prior gap, summed over the three geometries
        fixed = sum(statistics.mean(res[(g, PRIORS[0])]["latent MMD²"]) for g, _ in GEOMETRIES)
        for p in PRIORS[1:]:
            other = sum(statistics.mean(res[(g, p)]["latent MMD²"]) for g, _ in GEOMETRIES)
            record("priors", f"{name}: latent MMD² to held-out codes, {p.split(' ')[0]} / fixed prior",
                   other / fixed if fixed > 0 else float("nan"), better="lower", note="sum over 3 geometries")

    cmd = "nice -n 19 python benchmarks/bench_priors.py" + (" --quick" if args.quick else "")
    if args.seeds != "0,1,2":
        cmd += f" --seeds {args.seeds}"
    gap = ["latent MMD²", "latent MMD² (q draws)", "precision (vs recon)", "recall (vs recon)", "code spread", "q spread"]
    common = ["pixel MMD²", "feature MMD²", "precision (pix)", "recall (pix)", "precision (feat)", "recall (feat)",
              "recon BCE"]
    L = [
        "# Learned and matched priors on curved latent spaces (issue 14)",
        "",
        f"Machine: {machine()['cpu']}, {torch.get_num_threads()} torch thread on a shared {platform.machine()} host "
        f"with 2 cores (another job was running; the benchmark ran under `nice -n 19`); "
        f"Python {platform.python_version()}, torch {torch.__version__}, pyro {pyro.__version__}; "
        f"{datetime.date.today().isoformat()}; total wall time {total / 60:.1f} min.",
        "",
        f"Command: `{cmd}` (writes this file; the Reading at the end is written by hand from the printed numbers).",
        "",
        "## Settings",
        "",
        f"* Data (fixed split, seed 1234): **sprites**: {results['sprites'][1]['n_train']} train / "
        f"{results['sprites'][1]['n_test']} held-out dSprites-like images of {cfg['sprites_size']}×{cfg['sprites_size']} "
        f"px (`datasets.sprites`, soft edges; 3 shapes, 6 scales, 40 rotations, {cfg['sprites_positions']} x and y "
        f"positions, factors drawn uniformly); **digits**: {results['digits'][1]['n_train']} train / "
        f"{results['digits'][1]['n_test']} held-out 8×8 digits, grey levels in [0, 1] (Bernoulli likelihood on grey "
        "levels, as is usual for MNIST; with binarised digits the Bernoulli means are never close to a binary image).",
        f"* VAEs: `ManifoldVAE(latent, latent_dim=2, hidden={cfg['hidden']}, likelihood='bernoulli')`, Poincaré "
        f"curvature fixed at -1; Trace_ELBO, RiemannianAdam lr {cfg['lr']}, batch {cfg['batch']}, {cfg['epochs']} epochs. "
        "Fixed priors: N(0, I), uniform on S², standard wrapped normal at 0.",
        f"* (ii) flow: `FlowMatchingPrior(c.manifold, c.event_shape)` (defaults: MLP 64-64, 64 Fourier features, "
        f"RK4 with 16 steps), `fit(vae.codes(x_train)[0], steps={cfg['fm_steps']})`, then `vae.set_prior(prior)`; "
        "the encoder and decoder are those of (i), so recon BCE, MIG and DCI are identical to (i) by construction.",
        f"* (iii) SW-matched: `prior_matching='sliced', matching_weight={cfg['sw_weight']}` (50 slices; spherical on S², "
        "horospherical on the disk), same seed and initialisation as (i).",
        f"* Seeds {seeds}: network initialisation, minibatches, prior draws, flow fit.  Mean ± sd over seeds.",
        "* Latent MMD²: geodesic Gaussian kernel (`mmd2(..., kernel='geodesic', manifold=M)`) between "
        "as many prior draws as held-out images and the held-out codes (posterior means, what the flow is fitted "
        "to), bandwidth = median geodesic distance between those codes (so (i) and (ii) are scored with the same "
        "kernel).  `(q draws)`: the same against one draw z ~ q(z | x) per held-out image, a sample of the "
        "aggregate posterior (bandwidth: median distance between those draws).  `vs recon`: precision / recall "
        "in feature space of the decoded prior draws against the decoded codes of the held-out images: the "
        "prior judged through the same decoder, so that decoder blur is common to both sets.  Collapse "
        "diagnostics (encoder only): `code spread` = median geodesic distance between held-out codes, "
        "`q spread` = mean geodesic distance of a draw z ~ q(z | x) to its code; a collapsed posterior has "
        "codes bunched together (small code spread) and q spread at the prior's scale.",
        "* Samples: decoded prior draws (Bernoulli means), as many as held-out images.  Pixel / feature MMD²: Gaussian "
        "kernel, bandwidth fixed per data set (median distance between held-out images), unbiased estimate (may be < 0). "
        "Precision / recall: k = 5, held-out images as the real set.",
        "* Feature space: the 128-unit hidden layer of a small MLP (D-256-128) trained here on the real training "
        "images — the FID idea (a network trained on real data) without a download.  Pixel distances are poor "
        "judges of sprites (two sprites that do not overlap are equally far apart whatever their shape or "
        "distance), so the sprite net is trained to predict the factors (shape class, scale, x, y, and "
        "(cos, sin) of the symmetry order × rotation, the identifiable rotation); the digit net is the digit "
        f"classifier.  Sprite net: {results['sprites'][1]['quality']}.  Digit classifier: {results['digits'][1]['quality']}.",
        "* Digit classes of the samples: `mode_coverage(softmax probabilities, one-hot vertices, weights = real class "
        "frequencies, min_samples=0.02)`: the nearest vertex is the arg-max class, so `jsd` is the Jensen–Shannon "
        "divergence (nats) of the predicted-class histogram to the real one and `classes ≥2%` the number of classes "
        "receiving at least 2% of the samples.",
        "* MIG (20 bins) and DCI (lasso, α = 0.02, 25% test) on the codes (ambient coordinates: 3 on S², 2 otherwise) "
        "of all sprite images, rotation circular.  With a 2-d latent for 5 factors these mostly measure how x and y "
        "are split over the code axes.",
        "* recon BCE: Bernoulli cross-entropy (nats per image) of the decoded posterior means of held-out images.",
        "",
    ]
    for name, title in (("sprites", "dSprites-like sprites"), ("digits", "8×8 digits")):
        res, info = results[name]
        extra = ["MIG", "DCI D", "DCI C", "DCI I"] if name == "sprites" else ["classes ≥2%", "class JSD"]
        L += [f"## {title}", "", "### The prior–aggregate-posterior gap", ""]
        L += table(res, gap)
        L += ["", "### Decoded prior samples against held-out images", ""]
        L += table(res, common)
        L += ["", "### " + ("Disentanglement of the codes" if name == "sprites" else "Digit classes of the samples"), ""]
        L += table(res, extra)
        L += ["", "### Best prior per metric", "",
              "Best mean; `*`: better than both other priors on every seed (paired by seed).  `fixed = flow`: the "
              "metric depends on the encoder only.", ""]
        L += winners(res, gap[:4] + common + extra)
        L += ["", "### Training", "", "| geometry | -ELBO/img fixed | -ELBO/img SW (incl. λ·SW) | FM loss start → end "
              "| train fixed (s) | FM fit (s) | train SW (s) |", "|---|---|---|---|---|---|---|"]
        for gname, _ in GEOMETRIES:
            el, fm, ts = info["elbo"][gname], info["fm_loss"][gname], info["times"][gname]
            L.append(f"| {gname} | {fmt([e[0] for e in el], 1)} | {fmt([e[1] for e in el], 1)} | "
                     f"{statistics.mean(f[0] for f in fm):.3f} → {statistics.mean(f[1] for f in fm):.3f} | "
                     f"{statistics.mean(t[0] for t in ts):.0f} | {statistics.mean(t[1] for t in ts):.0f} | "
                     f"{statistics.mean(t[2] for t in ts):.0f} |")
        L.append("")
    text = "\n".join(L)
    print(text)
    if not args.quick:
        with open("benchmarks/results_priors.md", "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
