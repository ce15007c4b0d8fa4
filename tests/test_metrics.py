"""dlmppl.metrics against hand-computed small cases and independent implementations
(scikit-learn, scipy, naive loops)."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy, spearmanr
from sklearn.manifold import trustworthiness as sk_trustworthiness
from sklearn.metrics import mutual_info_score

from dlmppl import manifolds, metrics
from dlmppl.geometry.torus import wrap_angle
from dlmppl.metrics import (
    continuity,
    dci,
    density_coverage,
    distance_preservation,
    mig,
    mmd2,
    mmd_test,
    mode_coverage,
    precision_recall,
    trustworthiness,
)
from tests.statistical import ALPHA, assert_rate, seed

f64 = torch.float64


def _t(values, dtype=f64):
    return torch.tensor(values, dtype=dtype)


def _sphere(n, d=3, dtype=f64):
    x = torch.randn(n, d, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def _arc(a, b):  # independent geodesic distance on the unit sphere
    return math.acos(max(-1.0, min(1.0, float(a @ b))))


# ---------------------------------------------------------------------------------------- MMD


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_mmd2_hand_case(dtype):
    # x = {0, 1}, y = {2, 4}, k(a, b) = exp(-(a-b)²/(2h²)).  h = 1:
    # xx: k(0,1) = e^-1/2 (the two ordered pairs / (2·1)); yy: k(2,4) = e^-2;
    # xy: (k(0,2) + k(0,4) + k(1,2) + k(1,4)) / 4 = (e^-2 + e^-8 + e^-1/2 + e^-9/2) / 4
    # MMD² = e^-1/2 + e^-2 - 2 xy = (e^-1/2 + e^-2 - e^-8 - e^-9/2) / 2
    x, y = _t([[0.0], [1.0]], dtype), _t([[2.0], [4.0]], dtype)
    e = math.exp
    want = (e(-0.5) + e(-2) - e(-8) - e(-4.5)) / 2
    got = mmd2(x, y, bandwidth=1.0)
    assert got.dtype == dtype and abs(float(got) - want) < 1e-6
    # median heuristic: pooled distances 1, 2, 4, 1, 3, 2 -> median 2, so h = 2: k = exp(-d²/8)
    k = lambda d: e(-(d**2) / 8)
    want = k(1) + k(2) - (k(2) + k(4) + k(1) + k(3)) / 2
    assert abs(float(mmd2(x, y)) - want) < 1e-6


def _naive_mmd2(x, y, dist, h):
    k = lambda a, b: math.exp(-(dist(a, b) ** 2) / (2 * h * h))
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd2_matches_naive_loop_gaussian_and_geodesic():
    x, y = torch.randn(7, 2, 3, dtype=f64), torch.randn(9, 2, 3, dtype=f64) + 0.3
    eucl = lambda a, b: float((a - b).norm())
    assert abs(float(mmd2(x, y, bandwidth=1.3)) - _naive_mmd2(x, y, eucl, 1.3)) < 1e-12
    pooled = torch.cat([x, y])
    dists = sorted(eucl(pooled[i], pooled[j]) for i in range(16) for j in range(i + 1, 16))
    h = dists[(len(dists) - 1) // 2]  # lower median of the 120 pooled distances
    assert abs(float(mmd2(x, y)) - _naive_mmd2(x, y, eucl, h)) < 1e-12
    xs, ys = _sphere(6), _sphere(8)
    got = mmd2(xs, ys, kernel="geodesic", bandwidth=0.7, manifold=manifolds.Sphere())
    assert abs(float(got) - _naive_mmd2(xs, ys, _arc, 0.7)) < 1e-12


def test_mmd_test_returns_mmd2_and_a_permutation_pvalue():
    x, y = torch.randn(10, 2, dtype=f64), torch.randn(12, 2, dtype=f64)
    g = torch.Generator().manual_seed(1)
    stat, p = mmd_test(x, y, num_permutations=199, generator=g)
    assert torch.equal(stat, mmd2(x, y))
    assert (
        1 / 200 <= float(p) <= 1 and abs(float(p) * 200 - round(float(p) * 200)) < 1e-9
    )  # (1 + count) / (1 + B)
    again = mmd_test(x, y, num_permutations=199, generator=torch.Generator().manual_seed(1))[1]
    assert torch.equal(p, again)  # the permutations come from the generator
    far = mmd_test(x, y + 50.0, bandwidth=1.0, num_permutations=99, generator=g)[1]
    assert float(far) == 1 / 100  # separated clouds: no relabelling reaches the observed statistic


@pytest.mark.statistical
def test_mmd_test_is_valid_under_the_null_and_rejects_a_shift():
    # 400 independent null replicates (n = m = 20, B = 99): P(p <= a) <= a exactly, for a = 0.05 and 0.2
    # (Bonferroni over the 3 assertions).  Shifted law (mean + 1.5 in each of 2 coordinates): power
    # is ~1 at n = 20, asserted only as >= 0.5.
    g = torch.Generator().manual_seed(seed(7))
    R = 400
    null = torch.stack(
        [
            mmd_test(
                torch.randn(20, 2, generator=g),
                torch.randn(20, 2, generator=g),
                num_permutations=99,
                generator=g,
            )[1]
            for _ in range(R)
        ]
    )
    assert_rate(int((null <= 0.05).sum()), R, at_most=0.05, what="null rejections at 0.05", alpha=ALPHA / 3)
    assert_rate(int((null <= 0.2).sum()), R, at_most=0.2, what="null rejections at 0.2", alpha=ALPHA / 3)
    R1 = 40
    alt = torch.stack(
        [
            mmd_test(
                torch.randn(20, 2, generator=g),
                torch.randn(20, 2, generator=g) + 1.5,
                num_permutations=99,
                generator=g,
            )[1]
            for _ in range(R1)
        ]
    )
    assert_rate(int((alt <= 0.05).sum()), R1, at_least=0.5, what="rejections of a shift", alpha=ALPHA / 3)


def test_mmd_errors():
    x = torch.randn(5, 3, dtype=f64)
    with pytest.raises(ValueError, match="^x: need at least 2"):
        mmd2(x[:0], x)
    with pytest.raises(ValueError, match="^y: need at least 2"):
        mmd2(x, x[:1])
    with pytest.raises(ValueError, match="event shapes differ"):
        mmd2(x, torch.randn(4, 2, dtype=f64))
    with pytest.raises(ValueError, match="^manifold"):
        mmd2(x, x, kernel="geodesic")
    with pytest.raises(ValueError, match="^kernel"):
        mmd2(x, x, kernel="laplace")
    with pytest.raises(ValueError, match="^bandwidth"):
        mmd2(x, x, bandwidth=0.0)
    with pytest.raises(ValueError, match="^bandwidth: the median"):
        mmd2(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="^x: 3 NaN"):
        mmd2(torch.cat([x[:4], torch.full((1, 3), math.nan, dtype=f64)]), x)
    with pytest.raises(ValueError, match="^y: .*not on"):  # off the sphere
        mmd2(_sphere(4), x, kernel="geodesic", manifold=manifolds.Sphere())
    with pytest.raises(ValueError, match="^num_permutations"):
        mmd_test(x, x, num_permutations=0)


# ------------------------------------------------------------------------ k-NN based fidelity


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_precision_recall_density_coverage_hand_case(dtype):
    # real {0, 1, 3}, fake {0.5, 6}, k = 1.  Real radii (distance to the nearest other real point):
    # 0 -> 1, 1 -> 1, 3 -> 2.  Fake radii: 5.5 and 5.5.
    # precision: 0.5 lies in B(0, 1); 6 is 6, 5, 3 from the real points, outside radii 1, 1, 2 -> 1/2.
    # recall: the real points are 0.5, 0.5, 2.5 from fake 0.5, inside its radius 5.5 -> 3/3.
    # density: fake 0.5 is inside B(0,1), B(1,1) but not B(3,2) (2.5 > 2): 2 balls; fake 6: 0 -> 2/(k·2) = 1.
    # coverage: balls of 0 and 1 hold 0.5, the ball of 3 (radius 2) holds no fake point -> 2/3.
    real, fake = _t([[0.0], [1.0], [3.0]], dtype), _t([[0.5], [6.0]], dtype)
    pr = precision_recall(real, fake, k=1)
    dc = density_coverage(real, fake, k=1)
    assert pr.precision.dtype == dtype
    assert torch.allclose(torch.stack([*pr, *dc]), _t([0.5, 1.0, 1.0, 2 / 3], dtype))
    # closed balls (Kynkäänniemi et al. eq. 1): fake 5 lies on the boundary of B(3, 2)
    on_edge = _t([[5.0], [9.0]], dtype)
    assert float(precision_recall(real, on_edge, k=1).precision) == 0.5
    assert float(density_coverage(real, on_edge, k=1).coverage) == pytest.approx(1 / 3)


def test_knn_metrics_match_naive_loops_with_geodesic_distances():
    real, fake, k = _sphere(15), _sphere(11), 3
    S = manifolds.Sphere()

    def radii(pts):
        return [sorted(_arc(p, q) for j, q in enumerate(pts) if j != i)[k - 1] for i, p in enumerate(pts)]

    rr, rf = radii(real), radii(fake)
    inside = [[_arc(r, f) <= rr[i] for f in fake] for i, r in enumerate(real)]
    precision = np.mean([any(inside[i][j] for i in range(15)) for j in range(11)])
    recall = np.mean([any(_arc(r, f) <= rf[j] for j, f in enumerate(fake)) for r in real])
    density = sum(map(sum, inside)) / (k * 11)
    coverage = np.mean([any(row) for row in inside])
    pr, dc = precision_recall(real, fake, k, manifold=S), density_coverage(real, fake, k, manifold=S)
    assert np.allclose([*map(float, pr), *map(float, dc)], [precision, recall, density, coverage])
    # the geodesic and the chordal distance order neighbours alike on the sphere: same values
    assert np.allclose(list(map(float, precision_recall(real, fake, k))), [precision, recall])


def test_knn_metrics_errors():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="^real: need at least 1"):
        precision_recall(x[:0], x)
    with pytest.raises(ValueError, match="^fake: need at least 1"):
        density_coverage(x, x[:0])
    with pytest.raises(ValueError, match="^k: .*fake"):
        precision_recall(x, x[:2], k=2)
    with pytest.raises(ValueError, match="^k: .*real"):
        density_coverage(x, x, k=4)
    with pytest.raises(ValueError, match="event shapes differ"):
        precision_recall(x, torch.randn(4, 3))
    pairs = _sphere(8).reshape(4, 2, 3)  # points of S² in pairs: not points of the sphere's (3,) event shape
    with pytest.raises(ValueError, match="^manifold: points of event shape"):
        precision_recall(pairs, pairs, k=1, manifold=manifolds.Sphere())


def test_mode_coverage_hand_case_and_scipy_jsd():
    # modes 0, 10, 20 (1-d); samples 0.1, -0.2, 9.5, 30; threshold 1.
    # nearest modes: 0, 0, 10, 20 (distance 10 > 1: off-mode) -> counts (2, 1, 0), 1 off-mode.
    # covered (>= 1 sample): modes 0 and 10 -> 2/3; on_mode = 3/4.
    # p = (2, 1, 0, 1)/4 against q = (1/3, 1/3, 1/3, 0)  (the last bin: off-mode)
    modes, samples = _t([[0.0], [10.0], [20.0]]), _t([[0.1], [-0.2], [9.5], [30.0]])
    out = mode_coverage(samples, modes, threshold=1.0)
    assert out.counts.tolist() == [2, 1, 0]
    assert float(out.coverage) == pytest.approx(2 / 3) and float(out.on_mode) == 0.75
    assert float(out.jsd) == pytest.approx(
        jensenshannon([0.5, 0.25, 0, 0.25], [1 / 3] * 3 + [0]) ** 2, rel=1e-12
    )
    # no threshold: 30 counts for mode 20; at least 2 samples (or a fraction 0.3 of 4 -> 2) to cover
    out = mode_coverage(samples, modes, min_samples=2, weights=[2.0, 1.0, 1.0])
    assert out.counts.tolist() == [2, 1, 1] and float(out.coverage) == pytest.approx(1 / 3)
    assert float(out.jsd) < 1e-15  # histogram (2, 1, 1)/4 equals the weights (2, 1, 1)/4
    assert float(mode_coverage(samples, modes, min_samples=0.3).coverage) == pytest.approx(1 / 3)
    out32 = mode_coverage(samples.float(), modes.float(), threshold=1.0)
    assert out32.jsd.dtype == torch.float32 and float(out32.jsd) == pytest.approx(
        jensenshannon([0.5, 0.25, 0, 0.25], [1 / 3] * 3 + [0]) ** 2, rel=1e-5
    )


def test_mode_coverage_uses_geodesic_distances():
    # a sample 0.5 rad from the north pole: chord 2 sin(0.25) = 0.4948 < threshold 0.497 < arc 0.5
    modes = _t([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    s = _t([[math.sin(0.5), 0.0, math.cos(0.5)]])
    assert mode_coverage(s, modes, threshold=0.497).counts.tolist() == [1, 0]
    geo = mode_coverage(s, modes, manifold=manifolds.Sphere(), threshold=0.497)
    assert (
        geo.counts.tolist() == [0, 0]
        and float(geo.on_mode) == 0
        and float(geo.jsd) == pytest.approx(math.log(2))
    )


def test_mode_coverage_errors():
    m = torch.randn(3, 2)
    with pytest.raises(ValueError, match="^samples"):
        mode_coverage(m[:0], m)
    with pytest.raises(ValueError, match="^modes"):
        mode_coverage(m, m[:0])
    with pytest.raises(ValueError, match="^weights"):
        mode_coverage(m, m, weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="^min_samples"):
        mode_coverage(m, m, min_samples=0)
    with pytest.raises(ValueError, match="^threshold"):
        mode_coverage(m, m, threshold=-1.0)


# -------------------------------------------------------------------------- disentanglement


def test_mig_hand_cases():
    # v = (0, 0, 1, 1): H = log 2.  z1 = (0, .1, .9, 1) in 2 bins -> (0, 0, 1, 1): I = log 2.
    # z2 = (0, 1, 1, 1) -> labels (0, 1, 1, 1): p(z,v) = (1/4, 0; 1/4, 1/2), p(z) = (1/4, 3/4), p(v) = (1/2, 1/2)
    # I = 1/4 log 2 + 1/4 log(2/3) + 1/2 log(4/3) = 1.5 log 2 - 0.75 log 3
    # MIG = (log 2 - I) / log 2 = 0.75 log2(3) - 0.5
    codes = _t([[0.0, 0.0], [0.1, 1.0], [0.9, 1.0], [1.0, 1.0]])
    out = mig(codes, _t([0.0, 0.0, 1.0, 1.0]), bins=2)
    assert float(out.mutual_info[1, 0]) == pytest.approx(1.5 * math.log(2) - 0.75 * math.log(3), rel=1e-12)
    assert float(out.score) == pytest.approx(0.75 * math.log2(3) - 0.5, rel=1e-12)
    # a circular factor: 0 and 2π are one angle, π and -π another -> the same two labels, MIG 1 with z2 constant
    codes[:, 1] = 0.5
    angles = _t([0.0, 2 * math.pi, math.pi, -math.pi])
    assert float(mig(codes, angles, circular=True, bins=2).score) == pytest.approx(1.0)
    # read as 4 distinct numbers: H = log 4, I(z1; v) = log 2 -> MIG 1/2
    assert float(mig(codes, angles, bins=2).score) == pytest.approx(0.5)
    # equal arcs on the circle: 4 bins from angle 0; 0.1 and 2π - 0.1 fall in the first and last
    out = mig(codes, _t([0.1, 2 * math.pi - 0.1, math.pi + 0.1, -0.1]), circular=[0], factor_bins=4, bins=2)
    assert float(out.entropy[0]) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


def test_mig_matches_disentanglement_lib_recipe_with_sklearn_mi():
    n, bins = 300, 10
    v = torch.stack([torch.randint(3, (n,)), torch.randint(5, (n,))], 1).double()
    z = torch.cat([v + 0.3 * torch.randn(n, 2, dtype=f64), torch.randn(n, 2, dtype=f64)], 1) @ torch.randn(
        4, 4, dtype=f64
    )
    out = mig(z, v, bins=bins)
    zn, vn = z.numpy(), v.numpy()
    # disentanglement_lib's _histogram_discretize, then scikit-learn's plug-in MI (nats)
    lab = np.stack([np.digitize(zn[:, c], np.histogram(zn[:, c], bins)[1][:-1]) for c in range(4)], 1)
    mi = np.array([[mutual_info_score(lab[:, c], vn[:, f]) for f in range(2)] for c in range(4)])
    ent = np.array([mutual_info_score(vn[:, f], vn[:, f]) for f in range(2)])
    top = np.sort(mi, axis=0)[::-1]
    assert np.allclose(out.mutual_info.numpy(), mi, atol=1e-12)
    assert float(out.score) == pytest.approx(np.mean((top[0] - top[1]) / ent), abs=1e-12)
    out32 = mig(z.float(), v.long(), bins=bins)  # integer factors, float32 codes
    assert out32.score.dtype == torch.float32 and abs(float(out32.score) - float(out.score)) < 1e-4


def test_mig_errors():
    z = torch.randn(6, 3)
    with pytest.raises(ValueError, match="^factors: factor.* constant"):
        mig(z, torch.ones(6))
    with pytest.raises(ValueError, match="^codes: MIG needs at least 2"):
        mig(z[:, :1], torch.arange(6.0))
    with pytest.raises(ValueError, match="^codes: need at least 1"):
        mig(z[:0], torch.arange(0.0))
    with pytest.raises(ValueError, match="^factors: expected 6 rows"):
        mig(z, torch.arange(5.0))
    with pytest.raises(ValueError, match="^bins"):
        mig(z, torch.arange(6.0), bins=1)
    with pytest.raises(ValueError, match="^circular"):
        mig(z, torch.arange(6.0), circular=[3])


def test_dci_scores_hand_cases_and_scipy_entropy():
    # R = [[2, 0], [1, 1]]: code 0 -> P = (1, 0), D_0 = 1; code 1 -> (1/2, 1/2), D_1 = 0; ρ = (1/2, 1/2): D = 1/2.
    # factor 0 -> Q = (2/3, 1/3), C_0 = 1 - H_2(2/3, 1/3); factor 1 -> (0, 1), C_1 = 1; weights (3/4, 1/4).
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    D, C = metrics._dci_scores(_t([[2.0, 0.0], [1.0, 1.0]]))
    assert float(D) == pytest.approx(0.5) and float(C) == pytest.approx(0.75 * (1 - h) + 0.25)
    # one code informing both factors: D = 0, C = 1; no importance at all: 0 and 0
    assert [float(s) for s in metrics._dci_scores(_t([[1.0, 1.0], [0.0, 0.0]]))] == pytest.approx([0.0, 1.0])
    assert [float(s) for s in metrics._dci_scores(torch.zeros(3, 2, dtype=f64))] == [0.0, 0.0]
    # disentanglement_lib's formulas with scipy's entropy on a random matrix
    R = torch.rand(5, 3, dtype=f64)
    Rn = R.numpy()
    d_ref = np.sum((1 - entropy(Rn.T, base=3)) * Rn.sum(1) / Rn.sum())
    c_ref = np.sum((1 - entropy(Rn, base=5)) * Rn.sum(0) / Rn.sum())
    assert [float(s) for s in metrics._dci_scores(R)] == pytest.approx([d_ref, c_ref], rel=1e-12)


def _quasi(n, d):
    """``n`` deterministic, evenly spread points of [0, 1)^d (unscrambled Sobol, the 0 point dropped):
    test data whose structure does not depend on the seed."""
    return torch.quasirandom.SobolEngine(d).draw(n + 1, dtype=f64)[1:]


def test_dci_on_known_structure_with_a_circular_factor():
    n = 400
    u = _quasi(n, 4)
    theta, s = (2 * u[:, 0] - 1) * math.pi, u[:, 1]
    # codes: (cos θ, sin θ) carry the angle, code 2 the scale, code 3 is unrelated
    noise = torch.special.ndtri(u[:, 2:])
    codes = torch.stack([torch.cos(theta), torch.sin(theta), 2 * s + 0.01 * noise[:, 0], noise[:, 1]], 1)
    g = torch.Generator().manual_seed(3)
    out = dci(codes, torch.stack([theta, s], 1), circular=[True, False], alpha=0.01, generator=g)
    assert out.importance.shape == (4, 2)
    # R ≈ [[½, 0], [½, 0], [0, 1], [0, 0]] (the angle's importance is the mean over its cos and sin fits):
    # D = 1; C_θ = 1 - H_4(½, ½) = ½, C_s = 1, weighted equally -> C ≈ 3/4
    assert float(out.disentanglement) > 0.99 and float(out.completeness) == pytest.approx(0.75, abs=0.01)
    assert float(out.informativeness_per_factor.max()) < 0.1
    # read linearly, θ is not a linear function of (cos θ, sin θ): its error stays large
    flat = dci(codes, torch.stack([theta, s], 1), alpha=0.01, generator=torch.Generator().manual_seed(3))
    assert float(flat.informativeness_per_factor[0]) > 0.4
    # entangled codes (a rotation mixing the scale into both angle codes) lower the disentanglement
    mixed = codes.clone()
    mixed[:, 0], mixed[:, 2] = codes[:, 0] + codes[:, 2], codes[:, 0] - codes[:, 2]
    assert (
        float(dci(mixed, torch.stack([theta, s], 1), circular=[0], alpha=0.01, generator=g).disentanglement)
        < 0.5
    )
    # gradient boosting, float32 codes: same structure, results in float32
    gb = dci(
        codes[:150].float(),
        torch.stack([theta, s], 1)[:150].float(),
        circular=[0],
        regressor="gbt",
        generator=g,
    )
    assert gb.disentanglement.dtype == torch.float32 and float(gb.informativeness_per_factor.max()) < 0.3


def test_dci_informativeness_without_information_is_one():
    # codes independent of the factors: each prediction is about the constant training mean, whose
    # error is that of the test mean (up to O(1/n)), so the normalised error is ≈ 1.  The angle sits
    # across the cut ±π (mean direction π): only a wrapped (angular) error gives ≈ 1 there.
    n = 400
    g = torch.special.ndtri(_quasi(n, 5))
    factors = torch.stack([wrap_angle(math.pi + 0.3 * g[:, 0]), g[:, 1]], 1)
    out = dci(g[:, 2:], factors, circular=[0], generator=torch.Generator().manual_seed(0))
    assert ((out.informativeness_per_factor > 0.95) & (out.informativeness_per_factor < 1.1)).all()


def test_dci_errors():
    z = torch.randn(20, 3)
    with pytest.raises(ValueError, match="^regressor"):
        dci(z, torch.randn(20), regressor="svm")
    with pytest.raises(ValueError, match="^test_fraction"):
        dci(z, torch.randn(20), test_fraction=1.0)
    with pytest.raises(ValueError, match="^codes"):
        dci(z[:0], torch.randn(0))
    with pytest.raises(ValueError, match="^factors: factor 0 is constant"):
        dci(z, torch.ones(20))


# ------------------------------------------------------------------------ embedding geometry


def test_distance_preservation_hand_case_and_scipy():
    # latent 0, 1, 3 and factor 0, 2, 1: pairs (0,1), (0,2), (1,2) -> latent distances 1, 3, 2 (ranks 1, 3, 2),
    # factor distances 2, 1, 1 (ranks 3, 1.5, 1.5).  Centred: (-1, 1, 0) and (1, -.5, -.5):
    # ρ = -1.5 / (√2 · √1.5) = -√3/2
    rho = distance_preservation(_t([[0.0], [1.0], [3.0]]), _t([0.0, 2.0, 1.0]))
    assert float(rho) == pytest.approx(-math.sqrt(3) / 2, rel=1e-12)
    # random latent points against integer (heavily tied) factors, all pairs
    z, v = torch.randn(30, 4, dtype=f64), torch.randint(3, (30, 2))
    i, j = np.triu_indices(30, 1)
    zn, vn = z.numpy(), v.numpy().astype(float)
    ref = spearmanr(np.linalg.norm(zn[i] - zn[j], axis=1), np.linalg.norm(vn[i] - vn[j], axis=1)).statistic
    assert float(distance_preservation(z, v)) == pytest.approx(ref, rel=1e-12)
    got32 = distance_preservation(z.float(), v)
    assert got32.dtype == torch.float32 and float(got32) == pytest.approx(ref, abs=1e-5)


def test_distance_preservation_on_the_circle():
    # points on S¹ ⊂ R² with the sphere's arc length; factors = their angles on the circle
    fixed = torch.Generator().manual_seed(
        1
    )  # data fixed whatever the test seed: the 0.99 below is not random
    theta = (torch.rand(40, generator=fixed, dtype=f64) * 2 - 1) * math.pi
    z = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    S = manifolds.Sphere()
    assert float(distance_preservation(z, theta, manifold=S, circular=True)) == pytest.approx(1.0, abs=1e-12)
    # read linearly, |θᵢ - θⱼ| ignores the wrap: the pairs more than π apart are misranked
    i, j = np.triu_indices(40, 1)
    ref = spearmanr(
        [_arc(z[a], z[b]) for a, b in zip(i, j, strict=True)], (theta[i] - theta[j]).abs().numpy()
    ).statistic
    flat = distance_preservation(z, theta, manifold=S)
    assert float(flat) == pytest.approx(ref, rel=1e-12) and ref < 0.99
    # the torus's geodesic distance as factor metric, and a callable: same as the circular factor
    torus = distance_preservation(z, theta[:, None], manifold=S, factor_metric=manifolds.Torus())
    call = distance_preservation(z, theta, manifold=S, factor_metric=lambda a, b: (a - b).abs())
    assert float(torus) == pytest.approx(1.0, abs=1e-12) and float(call) == pytest.approx(ref, rel=1e-12)
    # a random subset of pairs from a generator: reproducible, and rank-perfect pairs stay perfect
    sub = [
        distance_preservation(
            z, theta, manifold=S, circular=True, num_pairs=50, generator=torch.Generator().manual_seed(s)
        )
        for s in (5, 5)
    ]
    assert torch.equal(sub[0], sub[1]) and float(sub[0]) == pytest.approx(1.0, abs=1e-12)
    noisy = [
        distance_preservation(
            z + 0.3 * torch.randn_like(z),
            theta,
            circular=True,
            num_pairs=50,
            generator=torch.Generator().manual_seed(s),
        )
        for s in (5, 6)
    ]
    assert not torch.equal(noisy[0], noisy[1])


def test_distance_preservation_errors():
    z = torch.randn(5, 2)
    with pytest.raises(ValueError, match="^latent: need at least 2"):
        distance_preservation(z[:1], torch.randn(1))
    with pytest.raises(ValueError, match="^factors: expected 5 rows"):
        distance_preservation(z, torch.randn(4))
    with pytest.raises(ValueError, match="^factors: all pair distances are equal"):
        distance_preservation(z, torch.ones(5))
    with pytest.raises(ValueError, match="^factor_metric"):
        distance_preservation(z, torch.randn(5), factor_metric="cosine")
    with pytest.raises(ValueError, match="^num_pairs"):
        distance_preservation(z, torch.randn(5), num_pairs=1)


def test_trustworthiness_continuity_hand_case():
    # high x = (0, 1, 3, 7), low y = (0, 10, 1, 4), k = 1 (n = 4).  Ranks in the high space (1 = nearest):
    # from 0: 1->1, 3->2, 7->3; from 1: 0->1, 3->2, 7->3; from 3: 1->1, 0->2, 7->3; from 7: 3->1, 1->2, 0->3.
    # Low nearest neighbours: p0 -> p2 (high rank 2, penalty 1), p1 -> p3 (rank 3, penalty 2),
    # p2 -> p0 (rank 2, penalty 1), p3 -> p2 (rank 1, 0): sum 4, T = 1 - 2/(4·1·(8-3-1)) · 4 = 1/2.
    # Continuity: high nearest neighbours p0 -> p1, p1 -> p0, p2 -> p1, p3 -> p2 have low ranks 3, 3, 3, 1:
    # penalties 2 + 2 + 2 + 0 = 6, C = 1 - 6/8 = 1/4.
    hi, lo = _t([[0.0], [1.0], [3.0], [7.0]]), _t([[0.0], [10.0], [1.0], [4.0]])
    assert float(trustworthiness(hi, lo, k=1)) == pytest.approx(0.5)
    assert float(continuity(hi, lo, k=1)) == pytest.approx(0.25)


def test_trustworthiness_continuity_match_sklearn():
    x = torch.randn(40, 6, dtype=f64)
    y = x[:, :2] + 0.5 * torch.randn(40, 2, dtype=f64)
    for k in (1, 5, 12):
        assert float(trustworthiness(x, y, k)) == pytest.approx(
            sk_trustworthiness(x.numpy(), y.numpy(), n_neighbors=k), rel=1e-12
        )
        assert float(continuity(x, y, k)) == pytest.approx(
            sk_trustworthiness(y.numpy(), x.numpy(), n_neighbors=k), rel=1e-12
        )
    # geodesic distances: a sphere embedding, given as a manifold or as precomputed matrices
    s = y.new_zeros(40, 3)
    s[:, :2] = y
    s[:, 2] = 1.0
    s = s / s.norm(dim=-1, keepdim=True)
    geo = torch.tensor([[_arc(a, b) for b in s] for a in s], dtype=f64)
    ref = sk_trustworthiness(geo.numpy(), x.numpy(), n_neighbors=5, metric="precomputed")
    assert float(continuity(x, s, 5, manifold_low=manifolds.Sphere())) == pytest.approx(ref, rel=1e-12)
    dx = torch.cdist(x, x)
    assert float(continuity(dx, geo, 5, precomputed=True)) == pytest.approx(ref, rel=1e-12)
    assert float(trustworthiness(x.float(), y.float(), 5)) == pytest.approx(
        sk_trustworthiness(x.numpy(), y.numpy(), n_neighbors=5), abs=1e-6
    )


def test_trustworthiness_errors():
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="^k: "):
        trustworthiness(x, x, k=3)  # k < n/2
    with pytest.raises(ValueError, match="^x_high, x_low: need the same number"):
        continuity(x, x[:5], k=1)
    with pytest.raises(ValueError, match="^x_low: need at least 1"):
        trustworthiness(x, x[:0])
    with pytest.raises(ValueError, match="^x_high: precomputed"):
        trustworthiness(x, x, k=1, precomputed=True)


def test_lazy_submodule():
    import dlmppl

    assert dlmppl.metrics is metrics and "metrics" in dlmppl.__all__


def test_shared_distance_helper_under_a_metric_field():
    # the flat conformal metric G = 4 I (κ = 0): every geodesic distance is twice the Euclidean one
    from dlmppl.geometry import ConformalMetric

    x, y = torch.randn(3, 2, dtype=f64), torch.randn(2, 2, dtype=f64)
    G = ConformalMetric(0.0)
    assert torch.allclose(metrics._pairwise(x, y, G), 2 * torch.cdist(x, y), atol=1e-5)
    assert torch.allclose(metrics._paired(x[:2], y, G), 2 * (x[:2] - y).norm(dim=-1), atol=1e-5)
