"""Closed-form geodesics: references from geoopt's own implementations, scipy and known formulas."""

import geoopt
import pytest
import scipy.optimize
import torch

import dlmppl.manifolds as M
from dlmppl import geometry as geo

DT = torch.float64


def _spd(*shape):
    a = torch.randn(*shape, dtype=DT)
    return a @ a.transpose(-1, -2) + 0.5 * torch.eye(shape[-1], dtype=DT)


def _pairs(name):
    """(manifold, x, y, reference distance or None)."""
    if name == "euclidean":
        x, y = torch.randn(4, 3, dtype=DT), torch.randn(4, 3, dtype=DT)
        return M.Euclidean(1), x, y, (x - y).norm(dim=-1)
    if name == "sphere":
        S = M.Sphere()
        x, y = S.random_uniform(4, 3, dtype=DT), S.random_uniform(4, 3, dtype=DT)
        return S, x, y, torch.arccos((x * y).sum(-1).clamp(-1, 1))
    if name == "poincare_batched":
        c = torch.tensor([[0.5], [1.0], [2.0], [3.0]], dtype=DT)
        x, y = 0.2 * torch.randn(4, 2, dtype=DT), 0.2 * torch.randn(4, 2, dtype=DT)
        ref = torch.stack([geoopt.PoincareBall(ci.item()).dist(xi, yi) for ci, xi, yi in zip(c, x, y, strict=True)])
        return M.PoincareBall(c), x, y, ref
    if name == "stereo_mixed_sign":
        k = torch.tensor([[-1.5], [0.0], [0.7], [2.0]], dtype=DT)
        x, y = 0.3 * torch.randn(4, 2, dtype=DT), 0.3 * torch.randn(4, 2, dtype=DT)
        refs = []
        for ki, xi, yi in zip(k, x, y, strict=True):
            if ki.item() == 0:
                refs.append(2 * (xi - yi).norm())  # λ = 2 at κ = 0
            else:
                refs.append(geoopt.Stereographic(ki.item()).dist(xi, yi))
        return M.Stereographic(k), x, y, torch.stack(refs)
    if name == "lorentz":
        L = M.Lorentz(k=2.0)
        x = L.expmap0(L.proju(L.origin(3, dtype=DT), torch.randn(4, 3, dtype=DT)))
        y = L.expmap0(L.proju(L.origin(3, dtype=DT), torch.randn(4, 3, dtype=DT)))
        return L, x, y, L.dist(x, y)
    if name in ("stiefel_embedded", "stiefel_canonical"):
        St = M.EuclideanStiefel() if name == "stiefel_embedded" else M.CanonicalStiefel()
        x = torch.linalg.qr(torch.randn(3, 5, 2, dtype=DT))[0]
        u = M.EuclideanStiefel().proju(x, 0.6 * torch.randn(3, 5, 2, dtype=DT))
        return St, x, geo.expmap(St, x, u), None
    if name == "spd":
        S = M.SymmetricPositiveDefinite()
        x, y = _spd(3, 3, 3), _spd(3, 3, 3)
        return S, x, y, S.dist(x, y)
    if name == "product":
        P = M.ProductManifold((M.Sphere(), 3), (M.PoincareBall(1.0), 2))
        s = M.Sphere().random_uniform(2, 4, 3, dtype=DT)
        b = 0.3 * torch.randn(2, 4, 2, dtype=DT)
        x, y = torch.cat((s[0], b[0]), -1), torch.cat((s[1], b[1]), -1)
        ref = (torch.arccos((s[0] * s[1]).sum(-1)) ** 2 + geoopt.PoincareBall(1.0).dist(b[0], b[1]) ** 2).sqrt()
        return P, x, y, ref
    if name == "scaled_sphere":
        S = M.Sphere()
        x, y = S.random_uniform(4, 3, dtype=DT), S.random_uniform(4, 3, dtype=DT)
        return M.Scaled(S, 2.5), x, y, 2.5 * torch.arccos((x * y).sum(-1))
    raise KeyError(name)


NAMES = [
    "euclidean",
    "sphere",
    "poincare_batched",
    "stereo_mixed_sign",
    "lorentz",
    "stiefel_embedded",
    "stiefel_canonical",
    "spd",
    "product",
    "scaled_sphere",
]


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_geodesic_consistency(name):
    man, x, y, ref = _pairs(name)
    d = geo.distance(man, x, y)
    if ref is not None:
        # references partly in float32 curvature (geoopt stores k as float32)
        torch.testing.assert_close(d, ref.to(DT), rtol=1e-6, atol=1e-9)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=DT)
    g = geo.geodesic(man, x, y, t)
    assert g.shape == (4,) + x.shape
    torch.testing.assert_close(g[0], x, rtol=0, atol=1e-12)
    torch.testing.assert_close(g[-1], y, rtol=0, atol=1e-8)
    # constant speed: d(γ(s), γ(t)) = |t - s| d(x, y)
    torch.testing.assert_close(geo.distance(man, g[1], g[2]), 0.25 * d, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(geo.distance(man, x, g[2]), 0.5 * d, rtol=1e-6, atol=1e-8)
    # closed-form geodesic == shoot of the log map; ‖log‖ == distance
    v = geo.logmap(man, x, y)
    torch.testing.assert_close(geo.shoot(man, x, v, t), g, rtol=0, atol=1e-9)
    torch.testing.assert_close(geo.norm(man, x, v), d, rtol=1e-8, atol=1e-10)
    # interpolate: n points, endpoints exact
    pts = geo.interpolate(man, x, y, 5)
    assert pts.shape == (5,) + x.shape
    torch.testing.assert_close(pts[-1], y, rtol=0, atol=0)
    # scalar t keeps the points' shape
    assert geo.geodesic(man, x, y, 0.3).shape == x.shape


def test_stiefel_exp_references():
    # embedded metric: geoopt's independent implementation of Edelman et al. (2.14)
    x = torch.linalg.qr(torch.randn(3, 6, 3, dtype=DT))[0]
    u = M.EuclideanStiefel().proju(x, torch.randn(3, 6, 3, dtype=DT))
    torch.testing.assert_close(geo.expmap(M.EuclideanStiefel(), x, u), M.EuclideanStiefel().expmap(x, u))
    # canonical metric: the one-parameter subgroup of O(n) with the horizontal generator
    # W = Δxᵀ - xΔᵀ - x(xᵀΔ)xᵀ (the quotient O(n)/O(n-p) picture), Y(t) = expm(tW) x
    a = x.transpose(-1, -2) @ u
    W = u @ x.transpose(-1, -2) - x @ u.transpose(-1, -2) - x @ a @ x.transpose(-1, -2)
    ref = torch.linalg.matrix_exp(W) @ x
    torch.testing.assert_close(geo.expmap(M.CanonicalStiefel(), x, u), ref)
    # the iterative log recovers the tangent vector
    torch.testing.assert_close(geo.logmap(M.CanonicalStiefel(), x, ref), u, rtol=0, atol=1e-8)


def test_spd_exp_matches_geoopt():
    S = M.SymmetricPositiveDefinite()
    x = _spd(4, 3, 3)
    u = 0.5 * (lambda a: a + a.transpose(-1, -2))(torch.randn(4, 3, 3, dtype=DT))
    torch.testing.assert_close(geo.expmap(S, x, u), S.expmap(x, u))


def test_batched_curvature_broadcasts_with_t():
    k = torch.tensor([[-1.0], [0.0], [1.0]], dtype=DT)
    man = M.Stereographic(k)
    x, y = 0.3 * torch.randn(3, 2, dtype=DT), 0.3 * torch.randn(3, 2, dtype=DT)
    g = geo.geodesic(man, x, y, torch.linspace(0, 1, 7, dtype=DT))
    assert g.shape == (7, 3, 2)
    # κ = 0 row is the straight line
    torch.testing.assert_close(g[:, 1], x[1] + torch.linspace(0, 1, 7, dtype=DT)[:, None] * (y[1] - x[1]))


def test_frechet_mean_poincare_matches_scipy():
    P = M.PoincareBall(1.0)
    pts = 0.4 * torch.randn(7, 2, dtype=DT)
    w = torch.rand(7, dtype=DT)
    m = geo.frechet_mean(pts, P, weights=w)

    def f(p):
        p = torch.as_tensor(p, dtype=DT)
        return float((w * geo.distance(P, p.expand_as(pts), pts) ** 2).sum())

    ref = scipy.optimize.minimize(f, pts.mean(0).numpy(), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14}).x
    torch.testing.assert_close(m, torch.as_tensor(ref), rtol=0, atol=1e-6)


def test_frechet_mean_sphere_stationary_and_euclidean():
    S = M.Sphere()
    pts = torch.nn.functional.normalize(torch.randn(20, 3, dtype=DT) + torch.tensor([0, 0, 3.0], dtype=DT), dim=-1)
    m = geo.frechet_mean(pts, S)
    assert abs(float(m.norm()) - 1) < 1e-12
    assert float(geo.logmap(S, m, pts).mean(0).norm()) < 1e-9
    # a perturbed point has a larger Fréchet function
    f = lambda p: float((geo.distance(S, p.expand_as(pts), pts) ** 2).sum())
    q = geo.expmap(S, m, S.proju(m, torch.tensor([0.01, -0.02, 0.0], dtype=DT)))
    assert f(m) < f(q)
    e = torch.randn(5, 4, dtype=DT)
    torch.testing.assert_close(geo.frechet_mean(e, M.Euclidean(1)), e.mean(0))


def test_errors():
    x = torch.zeros(2, dtype=DT)
    with pytest.raises(ValueError, match="t must be"):
        geo.geodesic(M.Euclidean(1), x, x, torch.zeros(2, 2, dtype=DT))
    with pytest.raises(ValueError, match="manifold"):
        geo.distance(M.UpperHalf(), x, x)
    with pytest.raises(ValueError, match="n must be"):
        geo.interpolate(M.Euclidean(1), x, x, 1)
