r"""Offline evaluation metrics for generative models with manifold latents.

Sample quality: :func:`mmd2` / :func:`mmd_test` (Gretton et al. 2012), :func:`precision_recall`
(Kynkäänniemi et al. 2019), :func:`density_coverage` (Naeem et al. 2020), :func:`mode_coverage`.
Disentanglement: :func:`mig` (Chen et al. 2018), :func:`dci` (Eastwood & Williams 2018).
Geometry of an embedding: :func:`distance_preservation` (Spearman correlation of distances),
:func:`trustworthiness` / :func:`continuity` (Venna & Kaski 2001).

Point sets have shape ``(n, *event)`` (ambient event shape, DESIGN.md).  Every distance comes
from one helper, :func:`_pairwise` (paired: :func:`_paired`): with ``manifold=None`` the
Euclidean distance of the flattened events, with a geoopt manifold its closed-form geodesic
distance (``dlmppl.geometry.geometry_of(M).dist``; points checked on ``M`` when validation is on),
with a :class:`~dlmppl.geometry.MetricField` the lengths of connecting geodesics
(:func:`~dlmppl.geometry.metric_distances`, costly).  Results are tensors on the inputs' device and
dtype; only :func:`dci`'s regressors run on the CPU (scikit-learn).  Randomness (permutations,
train/test splits, pair subsets) comes from a ``torch.Generator`` argument or torch's global one.
Empty point sets, mismatched event shapes and NaN/inf points are a ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import geoopt
import torch

from .geometry import MetricField, geometry_of, metric_distances
from .geometry.distances import paired_metric_distances
from .geometry.geodesics import _check_point, _validating
from .geometry.torus import wrap_angle

__all__ = ["mmd2", "mmd_test", "precision_recall", "density_coverage", "mode_coverage", "mig", "dci"]
__all__ += ["distance_preservation", "trustworthiness", "continuity", "PrecisionRecall", "DensityCoverage"]
__all__ += ["ModeCoverage", "MIGResult", "DCIResult"]

_BLOCK = 1 << 24  # elements of one broadcast block of the pairwise distances
_TWO_PI = 2 * math.pi


# ------------------------------------------------------------------------- inputs and distances


def _points(x, name: str, manifold=None, min_n: int = 1) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x) or x.dim() < 1:
        got = f"shape {tuple(x.shape)}, {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a floating-point tensor of shape (n, *event), got {got}")
    if x.shape[0] < min_n:  # a metric of an empty set is undefined
        raise ValueError(f"{name}: need at least {min_n} point(s), got {x.shape[0]}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: {int((~torch.isfinite(x)).sum())} NaN/inf entries")
    if manifold is not None and not isinstance(manifold, MetricField) and _validating():
        _check_point(manifold, name, x)
    return x


def _same_event(x, y, nx: str, ny: str):
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"{nx}, {ny}: event shapes differ: {tuple(x.shape[1:])} and {tuple(y.shape[1:])}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


def _pairwise(x: torch.Tensor, y: torch.Tensor | None = None, manifold=None) -> torch.Tensor:
    """``D[i, j] = d(xᵢ, yⱼ)``, shape ``(n, m)`` (``y=None``: ``y = x``); see the module docstring."""
    y = x if y is None else y
    if manifold is None:  # exact differences, not ‖x‖² + ‖y‖² - 2⟨x, y⟩ (ranks need small distances)
        exact = "donot_use_mm_for_euclid_dist"
        return torch.cdist(x.reshape(len(x), -1), y.reshape(len(y), -1), compute_mode=exact)
    if isinstance(manifold, MetricField):
        return metric_distances(manifold, x, None if y is x else y)
    g = geometry_of(manifold)
    rows = max(1, _BLOCK // max(1, y.numel()))
    out = torch.cat([g.dist(x[i : i + rows, None], y[None]) for i in range(0, len(x), rows)])
    if out.shape != (len(x), len(y)):
        raise ValueError(f"manifold: points of event shape {tuple(x.shape[1:])} are not points of {g.name}")
    return out


def _paired(x: torch.Tensor, y: torch.Tensor, manifold=None) -> torch.Tensor:
    """``d(xᵢ, yᵢ)``, shape ``(n,)``: the diagonal of :func:`_pairwise` without the matrix."""
    if manifold is None:
        return (x - y).reshape(len(x), -1).norm(dim=-1)
    if isinstance(manifold, MetricField):
        return paired_metric_distances(manifold, x, y)
    out = geometry_of(manifold).dist(x, y)
    if out.shape != (len(x),):
        raise ValueError(f"manifold: points of event shape {tuple(x.shape[1:])} are not points of it")
    return out


def _check_k(k, n: int, name: str, upper: int | None = None) -> int:
    upper = n - 1 if upper is None else upper
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= upper:
        raise ValueError(f"k: must be an integer in [1, {upper}] for {n} points of {name}, got {k!r}")
    return k


def _circular_mask(circular, F: int, device) -> torch.Tensor:
    """``circular`` (None, one bool, bools per factor, or factor indices) as a ``(F,)`` bool mask."""
    if circular is None or circular is False:
        return torch.zeros(F, dtype=torch.bool, device=device)
    if circular is True:
        return torch.ones(F, dtype=torch.bool, device=device)
    c = torch.as_tensor(circular, device=device)
    if c.dtype == torch.bool:
        if c.shape != (F,):
            raise ValueError(f"circular: expected {F} booleans (one per factor), got shape {tuple(c.shape)}")
        return c
    if c.dim() != 1 or c.is_floating_point() or (c.numel() and (c.min() < 0 or c.max() >= F)):
        raise ValueError(f"circular: expected booleans or factor indices in [0, {F}), got {circular!r}")
    return torch.zeros(F, dtype=torch.bool, device=device).index_fill(0, c.long(), True)


def _factors(factors, like: torch.Tensor, manifold=None) -> torch.Tensor:
    """Factors with one row per point of ``like``; integer/bool labels become ``like``'s dtype."""
    if isinstance(factors, torch.Tensor) and not torch.is_floating_point(factors):
        factors = factors.to(like.dtype)
    f = _points(factors, "factors", manifold)
    if f.shape[0] != len(like):
        raise ValueError(f"factors: expected {len(like)} rows (one per point), got {f.shape[0]}")
    return f


def _is_manifold(obj) -> bool:
    return isinstance(obj, (geoopt.Manifold, MetricField))


# --------------------------------------------------------------------------------------- MMD


def _kernel_matrix(x, y, kernel, bandwidth, manifold):
    if kernel not in ("gaussian", "geodesic"):
        raise ValueError(f"kernel: must be 'gaussian' or 'geodesic', got {kernel!r}")
    if kernel == "geodesic" and manifold is None:
        raise ValueError("manifold: kernel='geodesic' needs the manifold of the points")
    if kernel == "gaussian" and manifold is not None:
        raise ValueError("manifold: the 'gaussian' kernel uses ambient coordinates; use kernel='geodesic'")
    x, y = _same_event(_points(x, "x", manifold, 2), _points(y, "y", manifold, 2), "x", "y")
    d = _pairwise(torch.cat([x, y]), None, manifold)
    if bandwidth is None:  # median heuristic (Gretton et al. 2012, §8), torch's lower median
        i, j = torch.triu_indices(len(d), len(d), 1, device=d.device)
        h = d[i, j].median()
        if not bool(h > 0):
            raise ValueError("bandwidth: the median heuristic gave 0 (coincident points); pass a bandwidth")
    else:
        h = torch.as_tensor(bandwidth, dtype=d.dtype, device=d.device)
        if h.dim() != 0 or not bool(torch.isfinite(h) & (h > 0)):
            raise ValueError(f"bandwidth: must be a positive finite number, got {bandwidth!r}")
    return torch.exp(-d.square() / (2 * h * h)), len(x)


def _mmd2_of_splits(K: torch.Tensor, a: torch.Tensor, n: int) -> torch.Tensor:
    """Unbiased MMD² of the splits ``a`` ``(B, N)`` (1 = first sample, ``n`` ones per row) of the pooled ``K``."""
    m = K.shape[0] - n
    K0 = K - torch.diag_embed(K.diagonal())  # the U-statistic leaves out i = j
    b = 1 - a
    kxx = ((a @ K0) * a).sum(-1) / (n * (n - 1))
    kyy = ((b @ K0) * b).sum(-1) / (m * (m - 1))
    kxy = ((a @ K) * b).sum(-1) / (n * m)
    return kxx + kyy - 2 * kxy


def mmd2(x, y, kernel: str = "gaussian", bandwidth=None, manifold=None) -> torch.Tensor:
    r"""Unbiased estimate of the squared maximum mean discrepancy (Gretton et al. 2012, JMLR, eq. 3).

    ``MMD²_u = Σ_{i≠j} k(xᵢ,xⱼ)/(n(n-1)) + Σ_{i≠j} k(yᵢ,yⱼ)/(m(m-1)) - 2 Σ_{i,j} k(xᵢ,yⱼ)/(nm)``
    with ``k(a, b) = exp(-d(a, b)² / (2h²))``: ``kernel="gaussian"`` takes ``d`` the Euclidean
    distance of the ambient coordinates, ``kernel="geodesic"`` the geodesic distance of
    ``manifold`` (not positive definite on curved spaces in general, Feragen et al. 2015, so the
    population value may be 0 for different laws; the permutation test stays exact).
    ``bandwidth=None``: ``h`` = the (lower) median of the pooled pairwise distances.

    x : ``(n, *event)``, y : ``(m, *event)`` with ``n, m ≥ 2``.  Returns a 0-d tensor (may be
    negative: the estimator is unbiased).  Sums are accumulated in float64, the result has the
    inputs' dtype.
    """
    K, n = _kernel_matrix(x, y, kernel, bandwidth, manifold)
    a = torch.zeros(1, len(K), dtype=torch.float64, device=K.device)
    a[:, :n] = 1
    return _mmd2_of_splits(K.double(), a, n)[0].to(K.dtype)


def mmd_test(x, y, kernel="gaussian", bandwidth=None, manifold=None, num_permutations=999, generator=None):
    r"""Two-sample permutation test with the statistic :func:`mmd2`: returns ``(mmd2, p_value)``.

    ``p = (1 + #{b : MMD²(πᵦ) ≥ MMD²_obs}) / (1 + B)`` over ``B = num_permutations`` random
    relabellings of the pooled sample (drawn from ``generator``), with the bandwidth fixed on the
    pooled sample (permutation invariant), so ``P(p ≤ α) ≤ α`` exactly when the pooled points are
    exchangeable (Lehmann & Romano, Testing Statistical Hypotheses, Thm 15.2.1).  Ties within
    ``16 N eps(float64)`` of the observed value count as ``≥``.  Both results are 0-d tensors.
    """
    if isinstance(num_permutations, bool) or not isinstance(num_permutations, int) or num_permutations < 1:
        raise ValueError(f"num_permutations: must be a positive integer, got {num_permutations!r}")
    K, n = _kernel_matrix(x, y, kernel, bandwidth, manifold)
    N, K64 = len(K), K.double()
    a0 = torch.zeros(1, N, dtype=torch.float64, device=K.device)
    a0[:, :n] = 1
    obs = _mmd2_of_splits(K64, a0, n)[0]
    tol = 16 * N * torch.finfo(torch.float64).eps
    device = generator.device if generator is not None else K.device
    count = torch.zeros((), dtype=torch.long, device=K.device)
    chunk = max(1, (1 << 22) // N)
    for start in range(0, num_permutations, chunk):
        B = min(chunk, num_permutations - start)
        perm = torch.rand(B, N, generator=generator, device=device).argsort(-1).to(K.device)
        a = torch.zeros(B, N, dtype=torch.float64, device=K.device).scatter_(1, perm[:, :n], 1.0)
        count += (_mmd2_of_splits(K64, a, n) >= obs - tol).sum()
    p = (1 + count).to(K.dtype) / (1 + num_permutations)
    return obs.to(K.dtype), p


# ---------------------------------------------------------------------- k-NN based fidelity


class PrecisionRecall(NamedTuple):
    precision: torch.Tensor  # 0-d: fraction of fake points inside the real k-NN manifold
    recall: torch.Tensor  # 0-d: fraction of real points inside the fake k-NN manifold


class DensityCoverage(NamedTuple):
    density: torch.Tensor  # 0-d: mean number of real k-NN balls holding a fake point, / k (unbounded)
    coverage: torch.Tensor  # 0-d: fraction of real k-NN balls holding at least one fake point


def _knn_radii(d_self: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest neighbour in its own set (itself excluded)."""
    return d_self.fill_diagonal_(float("inf")).kthvalue(k, dim=1).values


def _real_fake(real, fake, k, manifold):
    real = _points(real, "real", manifold)
    fake = _points(fake, "fake", manifold)
    real, fake = _same_event(real, fake, "real", "fake")
    _check_k(k, len(real), "real")
    return real, fake, _pairwise(real, fake, manifold)


def precision_recall(real, fake, k: int = 5, manifold=None) -> PrecisionRecall:
    r"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019, eqs. 1-3).

    The real (fake) manifold is the union of the closed balls ``B(φ, NN_k(φ))`` around each real
    (fake) point, with radius the distance to its k-th nearest neighbour in its own set.
    ``precision`` = fraction of fake points inside the real manifold, ``recall`` = fraction of
    real points inside the fake manifold.  ``manifold``: geodesic distances (module docstring).

    real : ``(n, *event)``, fake : ``(m, *event)``, ``1 ≤ k < n`` and ``k < m``.
    """
    real, fake, d = _real_fake(real, fake, k, manifold)
    _check_k(k, len(fake), "fake")
    r_real = _knn_radii(_pairwise(real, None, manifold), k)
    r_fake = _knn_radii(_pairwise(fake, None, manifold), k)
    precision = (d <= r_real[:, None]).any(0).to(d.dtype).mean()
    recall = (d <= r_fake[None, :]).any(1).to(d.dtype).mean()
    return PrecisionRecall(precision, recall)


def density_coverage(real, fake, k: int = 5, manifold=None) -> DensityCoverage:
    r"""Density and coverage (Naeem et al., ICML 2020, eqs. 3-4), from the real points' k-NN balls.

    ``density = (1/(k m)) Σⱼ Σᵢ 1[Yⱼ ∈ B(Xᵢ, NND_k(Xᵢ))]`` and
    ``coverage = (1/n) Σᵢ 1[∃ j: Yⱼ ∈ B(Xᵢ, NND_k(Xᵢ))]`` (closed balls; the authors' ``prdc``
    code uses open ones, which differs only on ties).  ``manifold``: geodesic distances.

    real : ``(n, *event)``, fake : ``(m, *event)``, ``1 ≤ k < n``.
    """
    real, fake, d = _real_fake(real, fake, k, manifold)
    inside = d <= _knn_radii(_pairwise(real, None, manifold), k)[:, None]
    density = inside.to(d.dtype).sum() / (k * len(fake))
    coverage = inside.any(1).to(d.dtype).mean()
    return DensityCoverage(density, coverage)


class ModeCoverage(NamedTuple):
    coverage: torch.Tensor  # 0-d: fraction of the K modes that are covered
    jsd: torch.Tensor  # 0-d: Jensen-Shannon divergence (nats, ≤ log 2) of the mode histogram to the weights
    counts: torch.Tensor  # (K,) long: samples whose nearest mode is this one and within threshold
    on_mode: torch.Tensor  # 0-d: fraction of samples within threshold of their nearest mode


def mode_coverage(samples, modes, manifold=None, threshold=None, min_samples=1, weights=None) -> ModeCoverage:
    r"""Coverage of known modes and the Jensen–Shannon divergence of the mode histogram.

    Each sample goes to its nearest mode (geodesic distance with ``manifold``) when it lies within
    ``threshold`` of it (``None``: no threshold), else it is *off-mode*.  ``counts[k]`` = samples
    assigned to mode ``k``; mode ``k`` is *covered* when ``counts[k] ≥ min_samples`` (an int ≥ 1,
    or a float in ``(0, 1)``: that fraction of all ``n`` samples, rounded up).

    Returns :class:`ModeCoverage`: ``coverage`` = covered modes / K; ``jsd`` =
    ``JSD(p, q) = ½ KL(p‖m) + ½ KL(q‖m)``, ``m = (p + q)/2``, natural log, between
    ``p = (counts, n_off) / n`` and ``q = (weights, 0)``, so off-mode samples count as mass on a
    bin the target lacks (0 = histogram equals the weights and no sample is off-mode; ``log 2`` =
    disjoint); ``counts``; ``on_mode`` = ``1 - n_off / n``.

    samples : ``(n, *event)``, modes : ``(K, *event)``, weights : ``(K,)`` non-negative (normalised
    here; default uniform).
    """
    samples = _points(samples, "samples", manifold)
    modes = _points(modes, "modes", manifold)
    samples, modes = _same_event(samples, modes, "samples", "modes")
    n, K = len(samples), len(modes)
    d = _pairwise(samples, modes, manifold)
    dist, nearest = d.min(1)
    if threshold is not None:
        if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and threshold >= 0):
            raise ValueError(f"threshold: must be a non-negative number or None, got {threshold!r}")
        on = dist <= threshold
    else:
        on = torch.ones_like(dist, dtype=torch.bool)
    if isinstance(min_samples, float) and 0 < min_samples < 1:
        need = math.ceil(min_samples * n)
    elif isinstance(min_samples, int) and not isinstance(min_samples, bool) and min_samples >= 1:
        need = min_samples
    else:
        raise ValueError(f"min_samples: must be an integer >= 1 or a fraction in (0, 1), got {min_samples!r}")
    counts = torch.bincount(nearest[on], minlength=K)
    if weights is None:
        w = torch.full((K,), 1.0 / K, dtype=d.dtype, device=d.device)
    else:
        w = torch.as_tensor(weights, dtype=d.dtype, device=d.device)
        if w.shape != (K,) or not bool(torch.isfinite(w).all() & (w >= 0).all() & (w.sum() > 0)):
            raise ValueError(f"weights: expected {K} non-negative finite weights, not all 0, got {weights!r}")
        w = w / w.sum()
    p = torch.cat([counts.to(d.dtype), (n - on.sum()).to(d.dtype)[None]]) / n
    q = torch.cat([w, w.new_zeros(1)])
    mid = (p + q) / 2
    kl = lambda a: (torch.xlogy(a, a) - torch.xlogy(a, mid)).sum()
    jsd = (kl(p) + kl(q)) / 2
    coverage = (counts >= need).to(d.dtype).mean()
    return ModeCoverage(coverage, jsd.clamp_min(0), counts, on.to(d.dtype).mean())


# -------------------------------------------------------------------------- disentanglement


def _bin_codes(z: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-width histogram bins of each column over its range (disentanglement_lib's
    ``np.digitize(z, np.histogram(z, bins)[1][:-1]) - 1``): labels ``(n, C)`` in ``[0, bins)``."""
    lo, hi = z.min(0).values, z.max(0).values
    t = torch.arange(1, bins, dtype=z.dtype, device=z.device) / bins
    edges = lo[:, None] + (hi - lo)[:, None] * t  # inner edges (C, bins - 1)
    cols = [torch.bucketize(z[:, c].contiguous(), edges[c].contiguous(), right=True) for c in range(len(lo))]
    return torch.stack(cols, 1)


def _factor_labels(v: torch.Tensor, circular: bool, bins: int | None) -> torch.Tensor:
    if circular:  # angles: position on the circle in turns, [0, 1); a turn of 2π is the same value
        turn = torch.remainder(v / _TWO_PI, 1.0)
        if bins is not None:
            return (turn * bins).floor().long().remainder(bins)
        v = torch.round(turn * 2**20).remainder(2**20)  # equal within 2π/2²⁰ rad: one value
    elif bins is not None:
        return _bin_codes(v[:, None], bins)[:, 0]
    return torch.unique(v, return_inverse=True)[1]


class MIGResult(NamedTuple):
    score: torch.Tensor  # 0-d: MIG, the mean of per_factor
    per_factor: torch.Tensor  # (F,): (I(z_j*; v_k) - I(z_j°; v_k)) / H(v_k), top two codes j*, j°
    mutual_info: torch.Tensor  # (C, F): I(z_j; v_k) in nats (discretised codes)
    entropy: torch.Tensor  # (F,): H(v_k) in nats


def mig(codes, factors, circular=None, bins: int = 20, factor_bins: int | None = None) -> MIGResult:
    r"""Mutual information gap (Chen et al., "Isolating sources of disentanglement in VAEs", NeurIPS 2018, eq. 6).

    ``MIG = (1/F) Σ_k (I(z_{j*}; v_k) - I(z_{j°}; v_k)) / H(v_k)``, ``j*``, ``j°`` the codes with the
    largest and second largest mutual information with factor ``v_k``.  As in disentanglement_lib,
    each code coordinate is discretised into ``bins`` equal-width bins over its range and the mutual
    information is the plug-in estimate of the discrete joint histogram (nats; equals
    ``sklearn.metrics.mutual_info_score`` of the labels).  Factors are discrete: each distinct value
    is a label (``factor_bins``: equal-width bins instead, for continuous factors).  ``circular``
    factors (angles in radians) are taken on the circle: values equal modulo 2π are one label, and
    ``factor_bins`` cuts the circle into equal arcs from angle 0.

    codes : ``(n, C)`` (ambient coordinates of manifold codes; extra event dims are flattened),
    ``C ≥ 2``; factors : ``(n,)`` or ``(n, F)``; circular : None, a bool, ``F`` bools or indices.
    A constant factor (``H = 0``) is a ``ValueError``.  Returns :class:`MIGResult`.
    """
    z = _points(codes, "codes")
    z = z.reshape(len(z), -1)
    if z.shape[1] < 2:
        raise ValueError(f"codes: MIG needs at least 2 code coordinates, got {z.shape[1]}")
    for name, b in (("bins", bins), ("factor_bins", factor_bins)):
        if (b is not None or name == "bins") and (isinstance(b, bool) or not isinstance(b, int) or b < 2):
            raise ValueError(f"{name}: must be an integer >= 2, got {b!r}")
    f = _factors(factors, z).reshape(len(z), -1)
    circ = _circular_mask(circular, f.shape[1], f.device).tolist()
    n, C = z.shape
    lz = _bin_codes(z, bins)
    offs = torch.arange(C, device=z.device) * bins
    mi, ent = [], []
    for k in range(f.shape[1]):
        lv = _factor_labels(f[:, k], circ[k], factor_bins)
        V = int(lv.max()) + 1
        joint = torch.bincount(((lz + offs) * V + lv[:, None]).reshape(-1), minlength=C * bins * V)
        p = joint.reshape(C, bins, V).to(z.dtype) / n
        pz, pv = p.sum(2, keepdim=True), p.sum(1, keepdim=True)
        mi.append((torch.xlogy(p, p) - torch.xlogy(p, pz * pv)).sum((1, 2)).clamp_min(0))
        ent.append(-torch.xlogy(pv[0, 0], pv[0, 0]).sum())
    mi, ent = torch.stack(mi, 1), torch.stack(ent)
    if bool((ent <= 0).any()):
        bad = torch.nonzero(ent <= 0).flatten().tolist()
        raise ValueError(f"factors: factor(s) {bad} are constant (zero entropy): MIG is undefined")
    top = mi.topk(2, dim=0).values
    per = (top[0] - top[1]) / ent
    return MIGResult(per.mean(), per, mi, ent)


class DCIResult(NamedTuple):
    disentanglement: torch.Tensor  # 0-d: Σ_j ρ_j D_j
    completeness: torch.Tensor  # 0-d: Σ_k ρ̃_k C_k
    informativeness: torch.Tensor  # 0-d: mean normalised test error over factors (lower is better)
    importance: torch.Tensor  # (C, F): R[j, k], importance of code j for factor k
    informativeness_per_factor: torch.Tensor  # (F,)


def _dci_scores(R: torch.Tensor):
    """Disentanglement and completeness of an importance matrix ``R`` ``(C, F)`` (disentanglement_lib's weighting)."""
    C, F = R.shape
    total = R.sum()
    if not bool(total > 0):  # no code informs any factor
        return R.new_zeros(()), R.new_zeros(())
    P = R / R.sum(1, keepdim=True).clamp_min(torch.finfo(R.dtype).tiny)
    Q = R / R.sum(0, keepdim=True).clamp_min(torch.finfo(R.dtype).tiny)
    D = 1 - (-torch.xlogy(P, P).sum(1) / math.log(F) if F > 1 else R.new_zeros(C))
    Cm = 1 - (-torch.xlogy(Q, Q).sum(0) / math.log(C) if C > 1 else R.new_zeros(F))
    return (R.sum(1) / total * D).sum(), (R.sum(0) / total * Cm).sum()


def dci(codes, factors, circular=None, *, regressor="lasso", alpha=0.02, test_fraction=0.25, generator=None):
    r"""Disentanglement, completeness and informativeness (Eastwood & Williams, ICLR 2018).

    One regressor per factor predicts it from all codes (standardised on the training split;
    targets standardised too); ``R[j, k]`` is the importance of code ``j`` for factor ``k``:
    ``regressor="lasso"`` (default, the paper's choice): ``|w_jk|`` of scikit-learn's ``Lasso(alpha)``,
    linear and deterministic; ``"gbt"``: ``GradientBoostingRegressor().feature_importances_``
    (nonlinear, slower; its seed drawn from ``generator``).  A ``circular`` factor θ is regressed as
    ``(cos θ, sin θ)`` (two regressors; ``R[:, k]`` is the mean of their importances) and predicted
    as ``atan2(ŝ, ĉ)``.  With ``P = R / row sums``, ``Q = R / column sums``:
    ``D_j = 1 - H_F(P_j·)``, ``C_k = 1 - H_C(Q_·k)`` (entropies in bases F and C), and the
    totals weight them by ``ρ_j = Σ_k R_jk / Σ R`` and ``ρ̃_k = Σ_j R_jk / Σ R`` as
    disentanglement_lib does (an all-zero ``R`` gives 0 and 0).  Informativeness per factor is the
    test-split RMSE divided by that of the constant test mean (angles: RMS angular distance over
    that of the circular mean): 0 = perfect, ≈ 1 = no information; ``informativeness`` is its mean.

    codes : ``(n, C)`` ambient coordinates (extra event dims flattened); factors : ``(n,)`` or
    ``(n, F)``; the train/test split (``test_fraction`` of rows for test) is drawn from ``generator``.
    Runs on the CPU in float64 (scikit-learn); returns :class:`DCIResult` on the codes' device and dtype.
    """
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Lasso

    z = _points(codes, "codes")
    z = z.reshape(len(z), -1)
    f = _factors(factors, z).reshape(len(z), -1)
    n, F = f.shape
    if regressor not in ("lasso", "gbt"):
        raise ValueError(f"regressor: must be 'lasso' or 'gbt', got {regressor!r}")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha: must be a positive number, got {alpha!r}")
    n_test = math.ceil(test_fraction * n) if isinstance(test_fraction, float) and 0 < test_fraction < 1 else 0
    if n_test < 2 or n - n_test < 2:
        raise ValueError(
            f"test_fraction: must leave >= 2 train and >= 2 test rows of {n}, got {test_fraction!r}"
        )
    circ = _circular_mask(circular, F, f.device).tolist()
    gdev = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(n, generator=generator, device=gdev).cpu()
    seed = int(torch.randint(2**31 - 1, (), generator=generator, device=gdev))
    Z, V = z.detach().double().cpu(), f.detach().double().cpu()
    tr, te = order[n_test:], order[:n_test]
    mu, sd = Z[tr].mean(0), Z[tr].std(0).clamp_min(1e-12)
    Ztr, Zte = ((Z[tr] - mu) / sd).numpy(), ((Z[te] - mu) / sd).numpy()

    def fit(y):  # importances (C,) and test predictions of the target y (n,)
        m, s = y[tr].mean(), y[tr].std().clamp_min(1e-12)
        model = Lasso(alpha=alpha) if regressor == "lasso" else GradientBoostingRegressor(random_state=seed)
        model.fit(Ztr, ((y[tr] - m) / s).numpy())
        imp = abs(model.coef_) if regressor == "lasso" else model.feature_importances_
        return torch.as_tensor(imp, dtype=torch.float64), torch.as_tensor(model.predict(Zte)) * s + m

    R, err = [], []
    for k in range(F):
        v = V[:, k]
        if circ[k]:
            (ic, c), (is_, s) = fit(torch.cos(v)), fit(torch.sin(v))
            R.append((ic + is_) / 2)
            mean = torch.atan2(torch.sin(v[te]).mean(), torch.cos(v[te]).mean())
            e = (
                wrap_angle(torch.atan2(s, c) - v[te]).square().mean()
                / wrap_angle(mean - v[te]).square().mean()
            )
        else:
            imp, pred = fit(v)
            R.append(imp)
            e = (pred - v[te]).square().mean() / (v[te] - v[te].mean()).square().mean()
        if not bool(torch.isfinite(e)):
            raise ValueError(f"factors: factor {k} is constant on the test split: informativeness undefined")
        err.append(e.sqrt())
    R, err = torch.stack(R, 1), torch.stack(err)
    D, Cm = _dci_scores(R)
    out = (D, Cm, err.mean(), R, err)
    return DCIResult(*(t.to(device=z.device, dtype=z.dtype) for t in out))


# ------------------------------------------------------------------------- embedding geometry


def _rank(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..P of ``v`` ``(P,)``, ties given their average rank (``scipy.stats.rankdata``), float64."""
    s, order = v.sort()
    _, inv, counts = torch.unique_consecutive(s, return_inverse=True, return_counts=True)
    avg = counts.cumsum(0).double() - (counts.double() - 1) / 2
    return torch.empty(len(v), dtype=torch.float64, device=v.device).scatter_(0, order, avg[inv])


def _spearman(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> torch.Tensor:
    ra, rb = _rank(a), _rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    for r, name in ((ra, na), (rb, nb)):
        if not bool(r.abs().max() > 0):
            raise ValueError(f"{name}: all pair distances are equal; the rank correlation is undefined")
    return ((ra * rb).sum() / (ra.norm() * rb.norm())).clamp(-1, 1).to(a.dtype)


def distance_preservation(
    latent, factors, manifold=None, factor_metric="euclidean", circular=None, num_pairs=None, generator=None
):
    r"""Spearman rank correlation between latent geodesic distances and true factor distances.

    ``ρ = corr(rank d_M(zᵢ, zⱼ), rank d_F(vᵢ, vⱼ))`` over the pairs ``i < j`` (ties get average ranks,
    as ``scipy.stats.spearmanr``), or over ``num_pairs`` pairs ``i ≠ j`` drawn uniformly with
    replacement from ``generator``.  ``d_M``: geodesic distance of ``manifold`` (Euclidean when None).
    ``d_F``: ``factor_metric="euclidean"``: ``√Σ_k δ_k²`` with ``δ_k = |vᵢₖ - vⱼₖ|``, or the angular
    distance ``|wrap(vᵢₖ - vⱼₖ)|`` for ``circular`` factors (radians); a geoopt manifold: its
    geodesic distance (factors are its points); a callable ``(a, b) -> (P,)`` on paired rows.

    All pairs hold ``O(n²)`` memory: use ``num_pairs`` for large ``n``.
    latent : ``(n, *event)``, factors : ``(n, ...)``, ``n ≥ 2``.  Returns a 0-d tensor in
    ``[-1, 1]``; equal distances on one side (a constant) are a ``ValueError``.
    """
    z = _points(latent, "latent", manifold, 2)
    v = _factors(factors, z, factor_metric if _is_manifold(factor_metric) else None)
    n = len(z)
    if num_pairs is None:
        i, j = torch.triu_indices(n, n, 1, device=z.device)
    else:
        if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 2:
            raise ValueError(f"num_pairs: must be an integer >= 2 or None, got {num_pairs!r}")
        gdev = generator.device if generator is not None else z.device
        i = torch.randint(n, (num_pairs,), generator=generator, device=gdev)
        j = (i + 1 + torch.randint(n - 1, (num_pairs,), generator=generator, device=gdev)) % n
        i, j = i.to(z.device), j.to(z.device)
    dz = _paired(z[i], z[j], manifold)
    if factor_metric == "euclidean":
        v = v.reshape(n, -1)
        delta = v[i] - v[j]
        delta = torch.where(_circular_mask(circular, v.shape[1], v.device), wrap_angle(delta), delta)
        dv = delta.norm(dim=-1)
    elif _is_manifold(factor_metric):
        dv = _paired(v[i], v[j], factor_metric)
    elif callable(factor_metric):
        dv = torch.as_tensor(factor_metric(v[i], v[j]), device=z.device)
        if dv.shape != i.shape:
            raise ValueError(
                f"factor_metric: the callable returned shape {tuple(dv.shape)}, not {tuple(i.shape)}"
            )
    else:
        raise ValueError(
            f"factor_metric: must be 'euclidean', a manifold or a callable, got {factor_metric!r}"
        )
    return _spearman(dz, dv, "latent", "factors")


def _distances(x, name, manifold, precomputed):
    if precomputed:
        d = _points(x, name)
        if d.shape != (len(d), len(d)) or not bool((d >= 0).all()):
            raise ValueError(
                f"{name}: precomputed distances must be a non-negative (n, n) matrix, got {tuple(d.shape)}"
            )
        return d.clone()
    x = _points(x, name, manifold)
    return _pairwise(x, None, manifold)


def _trust(d_ref: torch.Tensor, d_emb: torch.Tensor, k: int) -> torch.Tensor:
    """``1 - 2/(nk(2n-3k-1)) Σᵢ Σ_{j ∈ U_k(i)} (r(i, j) - k)``: ``U_k(i)`` the k-NN of ``i`` under
    ``d_emb`` that are not among its k-NN under ``d_ref``, ``r`` the rank (1 = nearest) under ``d_ref``."""
    n = len(d_ref)
    inf = float("inf")
    order = d_ref.fill_diagonal_(inf).argsort(dim=1, stable=True)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(1, n + 1, device=order.device).expand(n, n)
    )
    nn = d_emb.fill_diagonal_(inf).topk(k, dim=1, largest=False).indices
    penalty = (ranks.gather(1, nn) - k).clamp_min(0).sum()
    return 1 - penalty.to(d_ref.dtype) * (2.0 / (n * k * (2 * n - 3 * k - 1)))


def _pair_of_spaces(x_high, x_low, k, manifold_high, manifold_low, precomputed):
    d_high = _distances(x_high, "x_high", manifold_high, precomputed)
    d_low = _distances(x_low, "x_low", manifold_low, precomputed)
    if len(d_high) != len(d_low):
        raise ValueError(f"x_high, x_low: need the same number of points, got {len(d_high)} and {len(d_low)}")
    _check_k(k, len(d_high), "x_high", upper=(len(d_high) - 1) // 2)  # k < n/2, as scikit-learn
    dtype = torch.promote_types(d_high.dtype, d_low.dtype)
    return d_high.to(dtype), d_low.to(dtype)


def trustworthiness(x_high, x_low, k=5, *, manifold_high=None, manifold_low=None, precomputed=False):
    r"""Trustworthiness of an embedding (Venna & Kaski, ICANN 2001; the formula of ``sklearn.manifold.trustworthiness``).

    ``T(k) = 1 - 2/(nk(2n-3k-1)) Σᵢ Σ_{j ∈ U_k(i)} (r(i, j) - k)``: ``U_k(i)`` = the k nearest
    neighbours of ``i`` in the embedding ``x_low`` that are not among its k nearest in ``x_high``,
    ``r(i, j)`` = the rank of ``j`` among ``i``'s neighbours in ``x_high``.  1 = no false neighbours.
    Distances: Euclidean on flattened events, geodesic with ``manifold_high`` / ``manifold_low``, or,
    with ``precomputed=True``, ``x_high`` and ``x_low`` are ``(n, n)`` distance matrices.

    x_high : ``(n, *event_high)``, x_low : ``(n, *event_low)``, ``1 ≤ k < n/2``.  Returns a 0-d tensor.
    Ties in the distances are broken by index (scikit-learn's may differ on ties).
    """
    d_high, d_low = _pair_of_spaces(x_high, x_low, k, manifold_high, manifold_low, precomputed)
    return _trust(d_high, d_low, k)


def continuity(x_high, x_low, k=5, *, manifold_high=None, manifold_low=None, precomputed=False):
    r"""Continuity of an embedding (Venna & Kaski 2001): :func:`trustworthiness` with the roles swapped.

    ``C(k) = 1 - 2/(nk(2n-3k-1)) Σᵢ Σ_{j ∈ V_k(i)} (r̂(i, j) - k)``: ``V_k(i)`` = the k nearest
    neighbours of ``i`` in ``x_high`` missing from its k nearest in ``x_low``, ``r̂`` = ranks in
    ``x_low``.  1 = no neighbour torn apart.  Arguments as :func:`trustworthiness`.
    """
    d_high, d_low = _pair_of_spaces(x_high, x_low, k, manifold_high, manifold_low, precomputed)
    return _trust(d_low, d_high, k)
