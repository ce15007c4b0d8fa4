"""Issue 8 benchmark: generation from a small Euclidean VAE on the 8x8 digits (200 training images) by
prior sampling vs. intrinsic-uniform sampling (Chadebec & Allassonnière 2022) vs. a 10-component GMM on the
codes (the ex-post density a user would otherwise fit); MMD and k-NN precision/recall to held-out images,
3 seeds; then time per geodesic under metric fields for d = 2..32.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_intrinsic.py [--quick]
"""

import sys
import time
import warnings

import numpy as np
import pyro
import torch
from ratios import record  # benchmarks/ is on sys.path when this script runs
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture

from dlmppl.geometry import ChadebecMetric, LearnedMetric, connecting_geodesic
from dlmppl.models import ManifoldVAE, chadebec_metric, intrinsic_codes

QUICK = "--quick" in sys.argv
N_TRAIN, N_GEN, LATENT, STEPS = 200, (300 if QUICK else 1000), 8, (300 if QUICK else 2500)
SEEDS = [0] if QUICK else [0, 1, 2]


def mmd2(x, y):
    """Unbiased MMD² with a Gaussian kernel, bandwidth = median pairwise distance of the pooled sample."""
    xy = torch.cat((x, y))
    d2 = torch.cdist(xy, xy).pow(2)
    h = d2[d2 > 0].median()
    K = torch.exp(-d2 / h)
    n, m = len(x), len(y)
    kxx, kyy, kxy = K[:n, :n], K[n:, n:], K[:n, n:]
    return float((kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.mean())


def knn_precision_recall(real, fake, k=5, basis=None):
    """Kynkäänniemi et al. (2019): precision = share of fakes inside some real k-NN ball; recall symmetric.

    Computed on the leading principal components ``basis`` (fitted on the training images): decoded means are
    smooth and real digits are not, so pixel-space k-NN balls of the fakes are too small to cover anything.
    """
    if basis is not None:
        real, fake = real @ basis, fake @ basis

    def inside(ref, query):
        r = torch.cdist(ref, ref).kthvalue(k + 1, dim=-1).values  # k-th neighbour (self excluded)
        return (torch.cdist(query, ref) <= r[None]).any(-1).float().mean().item()

    return inside(real, fake), inside(fake, real)


def train_vae(x, seed):
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    vae = ManifoldVAE(64, "euclidean", latent_dim=LATENT, hidden=(128,), likelihood="bernoulli")
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 2e-3}), pyro.infer.Trace_ELBO())
    for _ in range(STEPS):
        svi.step(x)
    return vae


def generation_table():
    digits = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    rows = []
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(digits), generator=g)
        train, test = digits[perm[:N_TRAIN]], digits[perm[N_TRAIN : N_TRAIN + 1000]]
        t0 = time.perf_counter()
        vae = train_vae(train, seed)
        t_train = time.perf_counter() - t0
        torch.manual_seed(seed)
        with torch.no_grad():
            t0 = time.perf_counter()
            prior = vae.sample(N_GEN)
            t_prior = time.perf_counter() - t0
            t0 = time.perf_counter()
            metric = chadebec_metric(vae, train, lam=1e-3)
            codes = intrinsic_codes(metric, N_GEN, metric.mu, warmup_steps=80, post_steps=20, num_steps=8)
            intrinsic = torch.sigmoid(vae.decode(codes))
            t_intr = time.perf_counter() - t0
            t0 = time.perf_counter()
            metric_med = chadebec_metric(vae, train, lam=1e-3, rho="median")
            codes = intrinsic_codes(metric_med, N_GEN, metric_med.mu, warmup_steps=80, post_steps=20, num_steps=8)
            intrinsic_med = torch.sigmoid(vae.decode(codes))
            t_med = time.perf_counter() - t0
            mu = metric.mu.numpy()
            t0 = time.perf_counter()
            gmm = GaussianMixture(10, covariance_type="full", random_state=seed, reg_covar=1e-4).fit(mu)
            gcodes = torch.tensor(gmm.sample(N_GEN)[0], dtype=torch.float32)
            gmm_x = torch.sigmoid(vae.decode(gcodes))
            t_gmm = time.perf_counter() - t0
        centre = train.mean(0)
        basis = torch.linalg.svd(train - centre, full_matrices=False)[2][:10].T
        for name, xs, t in (("prior N(0,I)", prior, t_prior), ("GMM-10 on codes", gmm_x, t_gmm), ("intrinsic √det G, ρ=max-min (paper)", intrinsic, t_intr), ("intrinsic √det G, ρ=median NN", intrinsic_med, t_med), ("train images (ceiling)", train, 0.0)):
            p, r = knn_precision_recall(test - centre, xs - centre, basis=basis)
            rows.append((seed, name, mmd2(xs, test), p, r, t))
        print(f"seed {seed}: VAE trained in {t_train:.1f}s", flush=True)
    return rows


def geodesic_timing():
    out = []
    torch.manual_seed(0)
    for d in (2, 4, 8, 16, 32):
        mu = torch.randn(200, d)
        cm = ChadebecMetric(mu, 0.05 + 0.1 * torch.rand(200, d), lam=1e-3)
        lm = LearnedMetric(d, kind="full", hidden=(64, 64))
        z0, z1 = mu[:16], mu[16:32]
        for name, m in (("Chadebec (N=200)", cm), ("LearnedMetric full", lm)):
            t0 = time.perf_counter()
            res = connecting_geodesic(m, z0, z1, 16, max_iter=100)
            dt = (time.perf_counter() - t0) / 16
            out.append((d, name, 1e3 * dt, int(res.n_iter), float(res.converged.float().mean())))
    return out


def main():
    warnings.filterwarnings("ignore")
    t_all = time.perf_counter()
    rows = generation_table()
    lines = [f"| seed | sampler | MMD² ↓ | k-NN precision (PCA-10, k=5) ↑ | k-NN recall ↑ | time to generate {N_GEN} (s) |", "|---|---|---|---|---|---|"]
    for seed, name, m, p, r, t in rows:
        lines.append(f"| {seed} | {name} | {m:.4f} | {p:.3f} | {r:.3f} | {t:.2f} |")
    names = list(dict.fromkeys(r[1] for r in rows))
    lines += ["", f"| sampler (mean ± sd over {len(SEEDS)} seeds) | MMD² ↓ | precision ↑ | recall ↑ |", "|---|---|---|---|"]
    agg = {}
    for name in names:
        a = np.array([[r[2], r[3], r[4]] for r in rows if r[1] == name])
        agg[name] = a.mean(0)
        lines.append(f"| {name} | {a[:, 0].mean():.4f} ± {a[:, 0].std():.4f} | {a[:, 1].mean():.3f} ± {a[:, 1].std():.3f} | {a[:, 2].mean():.3f} ± {a[:, 2].std():.3f} |")
    pri = agg["prior N(0,I)"]
    lines.append("")
    for key in ("intrinsic √det G, ρ=max-min (paper)", "intrinsic √det G, ρ=median NN"):
        intr = agg[key]
        record("intrinsic", f"generation {key.split(', ')[1]}: MMD² prior / intrinsic", pri[0] / intr[0],
               note=f"{len(SEEDS)} seed(s); > 1: intrinsic closer")
        lines.append(f"{key}: ratio MMD² prior / intrinsic = {pri[0] / intr[0]:.2f} (>1: intrinsic closer to held-out data); precision intrinsic/prior = {intr[1] / pri[1]:.2f}; recall intrinsic/prior = {intr[2] / pri[2]:.2f}")
    tim = geodesic_timing()
    lines += ["", "| d | metric | ms per geodesic (16 pairs batched, 16 points) | L-BFGS iters | converged |", "|---|---|---|---|---|"]
    for d, name, ms, it, conv in tim:
        lines.append(f"| {d} | {name} | {ms:.1f} | {it} | {conv:.2f} |")
    lines.append("")
    lines.append(f"total runtime {time.perf_counter() - t_all:.0f} s on a shared 2-core CPU (no GPU), OMP_NUM_THREADS=1{' (--quick)' if QUICK else ''}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
