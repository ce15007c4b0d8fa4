"""WrappedNormal / RiemannianNormal at the edges (issue 11, defects 3, 4, 5, 7, 11).

* Poincaré ball: draws are not pinned at a fixed radius (the old ``kmath.project`` clamp at
  6.21/√c in float32 and 12.21/√c in float64), ``loc`` near the boundary gives the right law,
  gradients of ``E d(loc, z)²`` through ``rsample`` are unbiased, ``log_prob`` near the
  boundary is as accurate as its float inputs allow, and a law the dtype cannot represent
  raises ``ValueError`` naming ``scale``;
* empty batches, non-finite ``scale`` and curvature;
* the sphere with a diagonal scale at ``loc = -e_0`` (documented frame ``(-e_1, e_2, …)``).
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy import integrate, stats

from dlmppl import kmath
from dlmppl import manifolds as M
from dlmppl.distributions import RiemannianNormal, WrappedNormal
from dlmppl.distributions.riemannian_normal import _log_g, _radial_mode, riemannian_normal_log_normalizer
from dlmppl.geometry import geometry_of
from tests.statistical import assert_ks, assert_mc_estimate, assert_same_law

D = torch.float64
mp.mp.dps = 50


def _t(x, dtype=D):
    return torch.as_tensor(x, dtype=dtype)


def _boundary_point(delta, d=3, dtype=D, c=1.0):
    u = torch.arange(1, d + 1, dtype=D)
    return (u / u.norm() * (1 - delta) / math.sqrt(c)).to(dtype)


def _radial_cdf(x, n):
    """CDF of ``t ∝ e^{-t²/2} sinh(x t)^n`` on ``(0, ∞)`` by the trapezoid rule."""
    m = float(_radial_mode(_t(x), n))
    ts = np.linspace(0, m + 12, 40001)
    lg = _log_g(_t(ts), _t(x), n).numpy()
    g = np.exp(lg - lg.max())
    cdf = integrate.cumulative_trapezoid(g, ts, initial=0)
    return lambda t: np.interp(t, ts, cdf / cdf[-1])


# ----------------------------------------------------------------------------------------------
# laws: no pinned draws, loc near the boundary


@pytest.mark.statistical
@pytest.mark.parametrize("dtype,delta", [(D, 1e-6), (D, 1e-9), (torch.float32, 1e-3)])
def test_wrapped_normal_with_loc_near_the_boundary_has_the_chi_law(dtype, delta):
    """d(loc, z)/σ ~ χ_3; on f9cfeb8 every draw landed at distance 9.21 (float64, δ = 1e-9)."""
    sigma = 0.1
    ball = M.PoincareBall(_t(1.0, dtype))
    loc = _boundary_point(delta, dtype=dtype)
    z = WrappedNormal(ball, loc, _t(sigma, dtype)).sample((2000,))
    assert z.dtype == dtype and ball.dist(loc, z).isfinite().all()
    r = kmath.dist(loc.double(), z.double(), _t(-1.0))
    assert_ks(r / sigma, stats.chi(3).cdf, what="d(loc, z)/σ near the boundary")


@pytest.mark.statistical
def test_wrapped_normal_float32_draws_are_not_pinned():
    """float32, σ = 2.5 at the origin: about 10% of the draws were pinned at radius 6.21 on f9cfeb8."""
    sigma, d = 2.5, 3
    ball = M.PoincareBall(1.0)
    z = WrappedNormal(ball, torch.zeros(d), torch.tensor(sigma)).sample((3000,))
    r = kmath.dist0(z.double(), _t(-1.0))
    assert float(r.max()) > 6.5
    assert_ks(r / sigma, stats.chi(d).cdf, what="float32 wrapped-normal radius")


@pytest.mark.statistical
@pytest.mark.parametrize("delta,sigma,c,d", [(0.0, 2.0, 3.0, 2), (1e-8, 1.0, 3.0, 2), (0.0, 3.0, 1.0, 3)])
def test_riemannian_normal_radial_law_far_from_the_origin(delta, sigma, c, d):
    """c = 3, d = 2: σ = 2 at the origin (radii ≈ 12/√3 ± 2): half the draws were pinned at
    12.21/√c on f9cfeb8; σ = 1 at 1e-8 from the boundary (radius 19.1/√c): all were.
    c = 1, d = 3, σ = 3 (radii ≈ 18 ± 3): 14.5% were."""
    ball = M.PoincareBall(_t(c))
    loc = _boundary_point(delta, d=d, c=c) if delta else torch.zeros(d, dtype=D)
    z = RiemannianNormal(ball, loc, _t(sigma)).sample((2000,))
    t = kmath.dist(loc, z, _t(-c)) / sigma
    assert_ks(t, _radial_cdf(sigma * math.sqrt(c), d - 1), what="Riemannian-normal radius")


# ----------------------------------------------------------------------------------------------
# gradients through rsample


def _per_sample_grads(dist_fn, sigma, c, n, d, dtype):
    s = torch.full((n,), sigma, dtype=dtype, requires_grad=True)
    cc = torch.full((n, 1), c, dtype=dtype, requires_grad=True)
    loc = torch.zeros(d, dtype=dtype)
    ball = M.PoincareBall(cc)
    z = dist_fn(ball, loc, s).rsample()
    r2 = kmath.dist(loc, z, -cc).pow(2)
    gs, gc = torch.autograd.grad(r2.sum(), (s, cc))  # each draw depends on its own σ_i, c_i
    return r2.detach().double(), gs.double(), gc.squeeze(-1).double()


def _assert_mean(x, target, what):
    assert_mc_estimate(x.mean(), x.std() / math.sqrt(len(x)), target, what=what)


@pytest.mark.statistical
def test_wrapped_normal_rsample_gradients_are_unbiased_float32():
    """E d² = d σ² (any c): ∂/∂σ = 2 d σ, ∂/∂c = 0 (f9cfeb8: pinned draws carry no radial gradient)."""
    sigma, c, d, n = 2.5, 1.0, 3, 4000
    r2, gs, gc = _per_sample_grads(WrappedNormal, sigma, c, n, d, torch.float32)
    _assert_mean(r2, d * sigma**2, "E d²")
    _assert_mean(gs, 2 * d * sigma, "∂E d²/∂σ")
    _assert_mean(gc, 0.0, "∂E d²/∂c")


def _riemannian_normal_moments(sigma, c, d):
    """``E d² = σ³ ∂_σ log Z`` and its derivatives in σ and c (autograd of the exact normaliser)."""
    s = _t(sigma).requires_grad_()
    cc = _t(c).requires_grad_()
    (g,) = torch.autograd.grad(riemannian_normal_log_normalizer(s, cc, d), s, create_graph=True)
    e = s**3 * g
    ds, dc = torch.autograd.grad(e, (s, cc))
    return float(e.detach()), float(ds), float(dc)


def test_riemannian_normal_second_moment_closed_form():
    # the reference of the next test against quadrature of the radial law, and c → 0 (E d² = d σ²)
    for sigma, c, d in ((2.0, 3.0, 2), (0.7, 1.3, 4)):
        e, _, _ = _riemannian_normal_moments(sigma, c, d)
        x = sigma * math.sqrt(c)
        ts = np.linspace(1e-9, float(_radial_mode(_t(x), d - 1)) + 14, 40001)
        lg = _log_g(_t(ts), _t(x), d - 1).numpy()
        w = np.exp(lg - lg.max())
        quad = sigma**2 * np.trapezoid(ts**2 * w, ts) / np.trapezoid(w, ts)
        assert abs(e - quad) < 1e-6 * quad
    e, ds, _ = _riemannian_normal_moments(0.8, 0.0, 3)
    assert abs(e - 3 * 0.64) < 1e-10 and abs(ds - 6 * 0.8) < 1e-8


@pytest.mark.statistical
def test_riemannian_normal_rsample_gradients_are_unbiased():
    """σ = 2, c = 3, d = 2: on f9cfeb8 ∂E d²/∂σ came out 36 instead of 99.9 and ∂/∂c -1.2 instead of 15.9."""
    sigma, c, d, n = 2.0, 3.0, 2, 4000
    e, ds, dc = _riemannian_normal_moments(sigma, c, d)
    r2, gs, gc = _per_sample_grads(RiemannianNormal, sigma, c, n, d, D)
    _assert_mean(r2, e, "E d²")
    _assert_mean(gs, ds, "∂E d²/∂σ")
    _assert_mean(gc, dc, "∂E d²/∂c")


# ----------------------------------------------------------------------------------------------
# log_prob near the boundary


def _mp_dist(x, y):
    x = [mp.mpf(float(a)) for a in x]
    y = [mp.mpf(float(a)) for a in y]
    d2 = sum((a - b) ** 2 for a, b in zip(x, y, strict=True))
    return 2 * mp.asinh(mp.sqrt(d2 / ((1 - sum(a * a for a in x)) * (1 - sum(a * a for a in y)))))


def _mp_exp(x, v):
    """``x ⊕ tanh(r/2) v/r`` (c = 1) in 50-digit arithmetic."""
    x = [mp.mpf(float(a)) for a in x]
    v = [mp.mpf(float(a)) for a in v]
    r = mp.sqrt(sum(a * a for a in v))
    b = [mp.tanh(r / 2) * a / r for a in v]
    x2, b2 = sum(a * a for a in x), sum(a * a for a in b)
    xb = sum(a * q for a, q in zip(x, b, strict=True))
    den = 1 + 2 * xb + x2 * b2
    return [((1 + 2 * xb + b2) * a + (1 - x2) * q) / den for a, q in zip(x, b, strict=True)]


@pytest.mark.parametrize("delta", [1e-6, 1e-8, 1e-10])
def test_log_prob_near_the_boundary_matches_mpmath(delta):
    """Both densities at points near ``loc`` within δ of the boundary (c = 1, d = 3, σ = 0.2): error
    at most what the inputs allow (f9cfeb8: 2.4e-3 at δ = 1e-6, 0.22 at 1e-8)."""
    d, sigma = 3, 0.2
    ball = M.PoincareBall(_t(1.0))
    loc = _boundary_point(delta)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(8, d, generator=g, dtype=D) * sigma
    z = torch.tensor([[float(a) for a in _mp_exp(loc, vi)] for vi in v], dtype=D)  # exact, then rounded
    eps = torch.finfo(D).eps
    log_z = float(riemannian_normal_log_normalizer(_t(sigma), _t(1.0), d))
    wn = WrappedNormal(ball, loc, _t(sigma)).log_prob(z)
    rn = RiemannianNormal(ball, loc, _t(sigma)).log_prob(z)
    for i in range(8):
        r = _mp_dist(loc, z[i])
        dz = 1 - mp.sqrt(sum(mp.mpf(float(a)) ** 2 for a in z[i]))
        dr = 4 * eps * (1 / delta + 1 / float(dz))  # input-limited error of the distance
        ref_wn = -r**2 / (2 * sigma**2) - d * mp.log(sigma) - d / 2 * mp.log(2 * mp.pi) - (d - 1) * mp.log(mp.sinh(r) / r)
        ref_rn = -r**2 / (2 * sigma**2) - log_z
        slope_wn = float(r) / sigma**2 + (d - 1) * abs(float(mp.coth(r) - 1 / r))
        slope_rn = float(r) / sigma**2
        assert abs(float(wn[i]) - float(ref_wn)) <= slope_wn * dr + 1e-13 * abs(float(ref_wn)), (i, float(wn[i]), float(ref_wn))
        assert abs(float(rn[i]) - float(ref_rn)) <= slope_rn * dr + 1e-13 * abs(float(ref_rn)), (i, float(rn[i]), float(ref_rn))


# ----------------------------------------------------------------------------------------------
# errors: unrepresentable laws, non-finite arguments


def test_law_beyond_what_the_dtype_represents_raises_naming_scale():
    # float32 resolves the unit ball out to hyperbolic radius 15.25: σ = 3 at the origin puts
    # more than 1e-6 of a χ_3 law beyond it, σ = 2.5 does not
    with pytest.raises(ValueError, match="^scale: .*float32"):
        WrappedNormal(M.PoincareBall(1.0), torch.zeros(3), torch.tensor(3.0))
    WrappedNormal(M.PoincareBall(1.0), torch.zeros(3), torch.tensor(2.5))
    # the bound scales with the curvature and counts the distance of loc from the origin
    with pytest.raises(ValueError, match="^scale: "):
        WrappedNormal(M.PoincareBall(100.0), torch.zeros(3), torch.tensor(0.3))
    with pytest.raises(ValueError, match="^scale: .*loc"):
        WrappedNormal(M.PoincareBall(_t(1.0)), _boundary_point(1e-14), _t(0.5))
    # RiemannianNormal: radii ≈ (d-1) σ² √c ± σ, float64 resolves radius 35.35
    with pytest.raises(ValueError, match="^scale: .*torch.float64.*use a smaller scale"):
        RiemannianNormal(M.PoincareBall(_t(1.0)), torch.zeros(3, dtype=D), _t(3.5))
    RiemannianNormal(M.PoincareBall(_t(1.0)), torch.zeros(3, dtype=D), _t(3.0))
    # κ ≥ 0 and validation off: no check
    WrappedNormal(M.Stereographic(_t(0.5)), torch.zeros(3, dtype=D), _t(30.0))
    WrappedNormal(M.PoincareBall(1.0), torch.zeros(3), torch.tensor(3.0), validate_args=False)


@pytest.mark.parametrize("cls", [WrappedNormal, RiemannianNormal])
def test_non_finite_scale_and_curvature_raise_naming_the_argument(cls):
    loc = torch.zeros(3, dtype=D)
    for s in (float("inf"), float("nan"), -float("inf")):
        with pytest.raises(ValueError, match="scale"):
            cls(M.PoincareBall(_t(1.0)), loc, _t(s))
        with pytest.raises(ValueError, match="scale"):
            cls(M.PoincareBall(_t(1.0)), loc.expand(2, 3), _t([0.5, s]))
    for c in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="^c: "):
            cls(M.PoincareBall(c), loc, _t(0.5))
        k = torch.tensor([[-1.0], [-c]], dtype=D, requires_grad=True)
        torch.distributions.Distribution.set_default_validate_args(False)  # the manifold takes it as it is
        try:
            man = M.Stereographic(k * 1)
        finally:
            torch.distributions.Distribution.set_default_validate_args(True)
        with pytest.raises(ValueError, match="curvature"):
            cls(man, loc, _t(0.5))


# ----------------------------------------------------------------------------------------------
# empty batches


def _empty_cases():
    return [
        (WrappedNormal, M.PoincareBall(_t(1.0)), torch.zeros(0, 3, dtype=D), _t(0.5)),
        (WrappedNormal, M.Stereographic(_t(0.7)), torch.zeros(0, 3, dtype=D), _t([0.5, 0.2, 0.3])),
        (WrappedNormal, M.Sphere(), torch.zeros(0, 3, dtype=D), _t([0.5, 0.2])),
        (WrappedNormal, M.Sphere(), torch.zeros(0, 3, dtype=D), _t(0.5)),
        (WrappedNormal, M.Euclidean(ndim=1), torch.zeros(0, 3, dtype=D), _t(0.5)),
        (RiemannianNormal, M.PoincareBall(_t(1.0)), torch.zeros(0, 3, dtype=D), _t(0.5)),
        (RiemannianNormal, M.Stereographic(_t(-0.5)), torch.zeros(0, 2, dtype=D), torch.ones(0, dtype=D)),
    ]


@pytest.mark.parametrize("case", range(7))
def test_empty_batches_give_empty_results(case):
    cls, man, loc, scale = _empty_cases()[case]
    dist = cls(man, loc, scale)
    n = loc.shape[-1]
    assert dist.batch_shape == (0,)
    assert dist.rsample((4,)).shape == (4, 0, n)
    assert dist.sample().shape == (0, n)
    assert dist.log_prob(torch.zeros(0, n, dtype=D)).shape == (0,)
    assert dist.log_prob(torch.zeros(5, 0, n, dtype=D)).shape == (5, 0)
    assert dist.expand((2, 0)).sample((3,)).shape == (3, 2, 0, n)
    # and an empty sample shape from a non-empty batch
    loc2 = torch.eye(n, dtype=D)[:1].expand(2, n) if geometry_of(man).name == "Sphere" else torch.zeros(2, n, dtype=D)
    full = cls(man, loc2, scale if scale.dim() == 0 or scale.shape[0] != 0 else _t(0.5))
    z = full.rsample((0,))
    assert z.shape == (0, 2, n) and full.log_prob(z).shape == (0, 2)


# ----------------------------------------------------------------------------------------------
# sphere, diagonal scale, loc = -e_0 (defect 5)


def _rot(n, angle=math.pi):
    """Rotation by ``angle`` in the (e_0, e_1) plane; by π: e_0 → -e_0, frame (e_1, e_2, …) → (-e_1, e_2, …)."""
    q = torch.eye(n, dtype=D)
    if angle == math.pi:  # exactly
        q[0, 0] = q[1, 1] = -1.0
        return q
    q[0, 0] = q[1, 1] = math.cos(angle)
    q[1, 0] = math.sin(angle)
    q[0, 1] = -math.sin(angle)
    return q


@pytest.mark.parametrize("n", [3, 4])
def test_sphere_diagonal_scale_at_the_antipode_of_e0_is_finite_and_exact(n):
    sphere = M.Sphere()
    scale = torch.linspace(0.3, 0.9, n - 1, dtype=D)
    e0 = torch.eye(n, dtype=D)[0]
    south = WrappedNormal(sphere, -e0, scale)
    north = WrappedNormal(sphere, e0, scale)
    z = south.rsample((500,))
    assert torch.isfinite(z).all() and torch.allclose(z.norm(dim=-1), torch.ones((), dtype=D))
    lp = south.log_prob(z)
    assert torch.isfinite(lp).all()
    # the documented frame (-e_1, e_2, …): the law at -e_0 is the rotation Q of the law at e_0
    q = _rot(n)
    w = north.rsample((200,))
    torch.testing.assert_close(south.log_prob(w @ q.T), north.log_prob(w))
    # along the great circle from e_0 through e_1 the transported frame is the rotation itself,
    # arbitrarily close to -e_0 (the old formula divided by 1 + loc_0 → 0)
    for a in (1e-4, 1e-10, 1e-300):
        qa = _rot(n, math.pi - a)
        near = qa[:, 0]
        dist = WrappedNormal(sphere, near, scale)
        torch.testing.assert_close(dist.log_prob(w @ qa.T), north.log_prob(w), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(dist.rsample((3,)).norm(dim=-1), torch.ones(3, dtype=D))
    # gradients exist and are finite at -e_0
    s = scale.clone().requires_grad_()
    WrappedNormal(sphere, -e0, s).rsample((10,)).sum().backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.statistical
def test_sphere_diagonal_scale_at_the_antipode_law_is_the_rotated_law():
    n = 3
    scale = _t([0.4, 1.1])
    e0 = torch.eye(n, dtype=D)[0]
    south = WrappedNormal(M.Sphere(), -e0, scale).sample((1000,))
    north = WrappedNormal(M.Sphere(), e0, scale).sample((1000,)) @ _rot(n).T
    assert_same_law(south, north, what="WrappedNormal at -e0 vs rotated law at e0")
