"""Tests of RiemannianNormal: normaliser vs quadrature, normalisation, gradients, sampler, shapes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from dlmppl import kmath
from dlmppl import manifolds as M
from dlmppl.distributions.riemannian_normal import (
    RiemannianNormal,
    _dt_dy,
    _ImplicitRadius,
    _log_f_closed,
    _log_g,
    _radial_mode,
    riemannian_normal_log_normalizer,
    sample_radius,
)
from dlmppl.distributions.wrapped_normal import WrappedNormal
from tests import statistical as st
from tests.distributions._frames import exp_frame, log_frame
from tests.helpers import log_sphere_area, uniform_sphere

D = torch.float64


def _t(x):
    return torch.as_tensor(x, dtype=D)


def _lorentz_point(k, s):
    return torch.cat([(k + s.pow(2).sum(-1, keepdim=True)).sqrt(), s], -1)


def _log_radial(r, sigma, c, n):
    """log of e^{-r²/2σ²} (sinh(√c r)/√c)^n, stable for large arguments (numpy)."""
    y = math.sqrt(c) * r
    log_sinh = y + np.log1p(-np.exp(-2 * y)) - math.log(2) if y > 1e-8 else math.log(max(y, 1e-300))
    return -r * r / (2 * sigma * sigma) + n * (log_sinh - 0.5 * math.log(c))


def _log_z_quad(sigma, c, d):
    n = d - 1
    rs = np.linspace(1e-9, sigma * (n * math.sqrt(c) * sigma + 12 + math.sqrt(n)), 2001)
    vals = np.array([_log_radial(r, sigma, c, n) for r in rs])
    peak = rs[vals.argmax()]
    top = vals.max()
    val, _ = integrate.quad(lambda r: math.exp(_log_radial(r, sigma, c, n) - top), 0, rs[-1] + 20 * sigma,
                            points=[peak], epsabs=0, epsrel=1e-13, limit=200)
    return log_sphere_area(d) + top + math.log(val)


# ----------------------------------------------------------------------------------------------
# normaliser


@pytest.mark.parametrize("d", list(range(2, 11)))
def test_log_normalizer_matches_quadrature(d):
    sig = [0.05, 0.1, 0.3, 0.7, 1.0, 2.0, 3.0]
    cs = [0.5, 1.0, 2.0]
    s_t = _t(sig).reshape(-1, 1)
    c_t = _t(cs).reshape(1, -1)
    got = riemannian_normal_log_normalizer(s_t, c_t, d)
    ref = _t([[_log_z_quad(s, c, d) for c in cs] for s in sig])
    err = ((got - ref).abs() / ref.abs().clamp_min(1)).max()
    assert err < 1e-10, err
    # c = 0: the Euclidean normaliser
    torch.testing.assert_close(riemannian_normal_log_normalizer(s_t, _t(0.0), d).squeeze(-1),
                               0.5 * d * math.log(2 * math.pi) + d * s_t.log().squeeze(-1))
    # float32 in, float32 out, same values
    got32 = riemannian_normal_log_normalizer(s_t.float(), c_t.float(), d)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), ref, rtol=1e-6, atol=1e-5)


def test_test_of_the_test_closed_form_alone_cancels():
    """The quadrature comparison would fail for the plain closed form (Mathieu et al. eq. 6) at small σ√c."""
    d, sigma, c = 10, 0.05, 1.0
    ref = _log_z_quad(sigma, c, d)
    closed = log_sphere_area(d) + d * math.log(sigma) + float(_log_f_closed(_t([sigma * math.sqrt(c)]), d - 1))
    assert not abs(closed - ref) < 1e-10  # the tolerance of test_log_normalizer_matches_quadrature


@pytest.mark.statistical
@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_integrates_to_one(d):
    """Monte Carlo over geodesic polar coordinates at the origin, radius importance-sampled."""
    num = 60_000
    k = _t([-2.0, -0.7, -0.1]).reshape(3, 1)  # batched curvature
    scale = _t([0.35, 0.5, 0.6]).reshape(3, 1)
    loc = 0.05 * scale * torch.randn(3, d, dtype=D)
    dist = RiemannianNormal(M.Stereographic(k), loc, scale)
    assert dist.batch_shape == (3,)
    # chi proposal whose mode sits at the radial mode σ·m of the target
    s = 1.15 * scale * _radial_mode((-k).sqrt() * scale, d - 1) / math.sqrt(d - 1)
    xi = uniform_sphere(num, d).reshape(num, 1, d)
    r = s * torch.randn(num, 1, d, dtype=D).norm(dim=-1, keepdim=True)
    log_h = (d - 1) * (r / s).log() - 0.5 * (r / s) ** 2 - (0.5 * d - 1) * math.log(2) - math.lgamma(0.5 * d) - s.log()
    log_w = (d - 1) * kmath.sin_k(r, k).log() + log_sphere_area(d) - log_h
    p = (dist.log_prob(exp_frame("stereo", k, torch.zeros(d, dtype=D), r * xi)) + log_w.squeeze(-1)).exp()
    # standard error ≤ 0.006: power against a normalisation off by 4% or more
    st.assert_mc_estimate(p.mean(0), p.std(0) / math.sqrt(num), 1.0, max_stderr=0.006, what="∫ p dvol")


def test_agrees_with_wrapped_normal_where_they_coincide():
    """d = 1 (a geodesic line) and κ = 0 (flat): the Riemannian and the wrapped normal are the same law."""
    z = 0.3 * torch.randn(20, 1, dtype=D)
    for k in (-1.5, 0.0):
        man = M.Stereographic(_t(k))
        torch.testing.assert_close(RiemannianNormal(man, _t([0.1]), _t(0.7)).log_prob(z),
                                   WrappedNormal(man, _t([0.1]), _t(0.7)).log_prob(z))
    z = 0.3 * torch.randn(20, 4, dtype=D)
    man = M.Stereographic(_t(0.0))
    torch.testing.assert_close(RiemannianNormal(man, 0.1 * torch.ones(4, dtype=D), _t(0.7)).log_prob(z),
                               WrappedNormal(man, 0.1 * torch.ones(4, dtype=D), _t(0.7)).log_prob(z))
    k = _t(2.0)
    lor_loc = _lorentz_point(k, _t([0.4]))
    lor_z = _lorentz_point(k, torch.randn(10, 1, dtype=D))
    torch.testing.assert_close(RiemannianNormal(M.Lorentz(k), lor_loc, _t(0.9)).log_prob(lor_z),
                               WrappedNormal(M.Lorentz(k), lor_loc, _t(0.9)).log_prob(lor_z))


# ----------------------------------------------------------------------------------------------
# gradients


def test_gradcheck_log_prob():
    d = 3
    z = 0.3 * torch.randn(4, 1, d, dtype=D)
    loc = (0.2 * torch.randn(d, dtype=D)).requires_grad_()
    k = _t(-0.8).requires_grad_()
    # σ√c on both sides of the series / closed-form switch (2/√(d-1) = 1.41)
    scale = _t([[0.3], [2.5]]).requires_grad_()

    def f(loc, scale, k):
        return RiemannianNormal(M.Stereographic(k), loc, scale).log_prob(z)

    assert torch.autograd.gradcheck(f, (loc, scale, k))
    # near κ = 0 and across the switch, in σ
    assert torch.autograd.gradcheck(f, (loc, scale, _t(-1e-3).requires_grad_()))
    assert torch.autograd.gradcheck(lambda s: riemannian_normal_log_normalizer(s, _t(1.0), 6),
                                    (_t([0.8944, 0.8945, 0.9, 3.0]).requires_grad_(),))


def test_gradient_at_zero_curvature_is_finite_and_correct():
    d, h = 4, 1e-6
    z = 0.3 * torch.randn(6, d, dtype=D)
    loc = 0.1 * torch.randn(d, dtype=D)
    k = torch.zeros((), dtype=D, requires_grad=True)
    lp = RiemannianNormal(M.Stereographic(k), loc, _t(0.8)).log_prob(z).sum()
    (g,) = torch.autograd.grad(lp, k)
    fd = (lp.detach() - RiemannianNormal(M.Stereographic(_t(-h)), loc, _t(0.8)).log_prob(z).sum()) / h
    assert torch.isfinite(g)
    assert abs(float(g - fd)) < 1e-4 * max(1.0, abs(float(g)))


# ----------------------------------------------------------------------------------------------
# sampler


def _radial_cdf(x, n):
    """CDF of t ∝ e^{-t²/2} sinh(x t)^n on a fine grid, by the trapezoid rule (numpy)."""
    m = float(_radial_mode(_t(x), n))
    ts = np.linspace(0, m + 12, 20001)
    lg = _log_g(_t(ts), _t(x), n).numpy()
    g = np.exp(lg - lg.max())
    cdf = integrate.cumulative_trapezoid(g, ts, initial=0)
    return lambda t: np.interp(t, ts, cdf / cdf[-1])


@pytest.mark.statistical
@pytest.mark.parametrize("d,x", [(2, 0.05), (2, 2.0), (5, 0.3), (5, 1.5), (8, 1.0)])
def test_radial_law_ks(d, x):
    """d(loc, z)/σ of samples against the radial CDF by quadrature (KS test), on the ball."""
    c = 1.3
    sigma = x / math.sqrt(c)
    loc = 0.2 * torch.rand(d, dtype=D)
    man = M.PoincareBall(_t(c))
    z = RiemannianNormal(man, loc, _t(sigma)).sample((4000,))
    t = man.dist(loc, z) / sigma
    cdf = _radial_cdf(x, d - 1)
    st.assert_ks(t, cdf, what="d(loc, z)/σ")
    # the test has power: 10% too wide a radius is rejected
    with pytest.raises(AssertionError, match="combined p"):
        st.assert_ks(1.1 * t, cdf)


@pytest.mark.statistical
@pytest.mark.parametrize("d,sigma,at_origin", [(3, 0.9, False), (8, 2.7, True)])
def test_lorentz_samples_radius_and_direction(d, sigma, at_origin):
    """Hyperboloid: radial KS test and isotropy of the direction; far radii (σ√c = 3, d = 8:
    distances ≈ 50, beyond what the Poincaré ball resolves in float64) at the origin."""
    k = _t(0.8)
    loc = _lorentz_point(k, torch.zeros(d, dtype=D) if at_origin else 0.3 * torch.randn(d, dtype=D))
    dist = RiemannianNormal(M.Lorentz(k), loc, _t(sigma))
    z = dist.sample((2000,))
    assert dist.support.check(z).all()

    v = log_frame("lorentz", k, loc, z)
    r = v.norm(dim=-1)
    st.assert_ks(r / sigma, _radial_cdf(sigma / math.sqrt(float(k)), d - 1), what="radius", alpha=st.ALPHA / 3)
    # the direction ξ is uniform on S^{d-1}: E ξ = 0, E ξξᵀ = I/d (standard errors from the draws)
    xi = v / r[:, None]
    n = len(xi)
    st.assert_mc_estimate(xi.mean(0), xi.std(0) / math.sqrt(n), 0.0, max_stderr=0.02, what="E ξ", alpha=st.ALPHA / 3)
    outer = xi[:, :, None] * xi[:, None, :]
    st.assert_mc_estimate(outer.mean(0), outer.std(0) / math.sqrt(n), torch.eye(d, dtype=D) / d, max_stderr=0.01,
                          what="E ξξᵀ", alpha=st.ALPHA / 3)


def test_rejection_envelope_bound_and_acceptance():
    """g(t) ≤ g(m) e^{-(t-m)²/2} (strong log-concavity) and the documented acceptance rates."""
    for n in (1, 4, 9, 20):
        for x in (0.0, 0.1, 1.0, 3.0):
            xt = _t(x)
            m = _radial_mode(xt, n)
            ts = _t(np.linspace(1e-3, float(m) + 15, 6000))
            gap = _log_g(ts, xt, n) - _log_g(m, xt, n) + 0.5 * (ts - m) ** 2
            assert gap.max() < 1e-9
            lg = _log_g(ts, xt, n)
            acc = float(torch.trapezoid((lg - _log_g(m, xt, n)).exp(), ts)) / math.sqrt(2 * math.pi)
            assert 0.65 < acc <= 1.0 + 1e-9, (n, x, acc)
    t = sample_radius(_t([0.0, 1.0]), 0, (1000,))
    assert t.shape == (1000, 2) and (t >= 0).all()


def _radial_moment(y, n, power):
    """E[t^power] of the radial law at x² = y, by the trapezoid rule on a fine grid."""
    x = _t(math.sqrt(y))
    ts = _t(np.linspace(1e-9, float(_radial_mode(x, n)) + 14, 40001))
    lg = _log_g(ts, x, n)
    g = (lg - lg.max()).exp()
    return float(torch.trapezoid(ts**power * g, ts) / torch.trapezoid(g, ts))


@pytest.mark.statistical
@pytest.mark.parametrize("n,y", [(1, 0.0), (4, 0.5), (9, 0.01)])
def test_implicit_radius_gradient_matches_derivative_of_the_mean(n, y):
    """MC mean of the implicit dt/dy against d E[t] / dy by finite differences of quadrature."""
    num = 4000
    yt = _t(y).requires_grad_()
    t = sample_radius(yt.detach().sqrt(), n, (num,))
    (g,) = torch.autograd.grad(_ImplicitRadius.apply(yt.expand(num), t, n).mean(), yt)
    se = _dt_dy(t, yt.detach().sqrt().expand(num), n).std() / math.sqrt(num)
    h = 1e-4
    lo = max(y - h, 0.0)
    fd = (_radial_moment(y + h, n, 1) - _radial_moment(lo, n, 1)) / (y + h - lo)
    # atol: the one-sided difference at y = 0 and the quadrature (≈ 1e-7)
    st.assert_mc_estimate(g, se, fd, atol=1e-6, what="dE[t]/dy")


@pytest.mark.statistical
def test_rsample_gradients():
    """∂/∂σ and ∂/∂κ of E d(loc, z)² = σ² E[t²](−κσ²) through rsample vs quadrature; finite grads to loc.

    One (σ, κ, loc) row per draw: the per-draw gradients are independent and their mean is the
    gradient of the mean, so its standard error comes from the draws."""
    d, num = 3, 4000
    sigma, kappa = 0.6, -1.2
    s = _t(sigma).expand(num).clone().requires_grad_()
    k = _t(kappa).expand(num, 1).clone().requires_grad_()
    loc = (0.1 * torch.randn(d, dtype=D)).expand(num, d).clone().requires_grad_()
    man = M.Stereographic(k)
    z = RiemannianNormal(man, loc, s).rsample()
    r2 = man.dist(loc.detach(), z).pow(2)
    gs, gk, gl = torch.autograd.grad(r2.sum(), (s, k, loc))
    gk = gk.squeeze(-1)

    def expected(sig, kap):
        return sig * sig * _radial_moment(-kap * sig * sig, d - 1, 2)

    h = 1e-4
    fd_s = (expected(sigma + h, kappa) - expected(sigma - h, kappa)) / (2 * h)
    fd_k = (expected(sigma, kappa + h) - expected(sigma, kappa - h)) / (2 * h)
    # standard errors ≈ 1.2% of the gradients (power against an error of 7%); atol: the O(h²)
    # central difference of a trapezoid-rule moment (≈ 1e-7)
    for g, fd, name in ((gs, fd_s, "∂E d²/∂σ"), (gk, fd_k, "∂E d²/∂κ")):
        st.assert_mc_estimate(g.mean(), g.std() / math.sqrt(num), fd, atol=1e-5, max_stderr=0.015 * abs(fd),
                              what=name, alpha=st.ALPHA / 2)
    assert torch.isfinite(gl).all()


# ----------------------------------------------------------------------------------------------
# shapes and errors


def test_shapes_expand_and_batched_curvature():
    d = 3
    k = _t([[-0.5], [-1.0], [-2.0], [-4.0]])
    dist = RiemannianNormal(M.Stereographic(k), torch.zeros(d, dtype=D), _t(0.5))
    assert dist.batch_shape == (4,) and dist.event_shape == (d,)
    z = dist.sample((7,))
    assert z.shape == (7, 4, d) and dist.support.check(z).all()
    assert dist.log_prob(z).shape == (7, 4)
    e = dist.expand((2, 4))
    assert e.batch_shape == (2, 4) and e.sample((3,)).shape == (3, 2, 4, d)
    torch.testing.assert_close(e.log_prob(z[:2]), dist.log_prob(z[:2]))
    assert dist.log_normalizer().shape == (4,)
    r = RiemannianNormal(M.PoincareBall(_t(1.0)), 0.1 * torch.randn(5, d, dtype=D), torch.rand(5, dtype=D) + 0.1)
    assert r.batch_shape == (5,) and r.sample().shape == (5, d)
    r = RiemannianNormal(M.Lorentz(_t(1.0)), _lorentz_point(_t(1.0), torch.randn(2, 1, 4, dtype=D)), _t([0.5, 1.0, 2.0]))
    assert r.batch_shape == (2, 3) and r.sample((4,)).shape == (4, 2, 3, 5)
    # gradient with respect to a batched, learnable curvature
    kb = k.clone().requires_grad_()
    RiemannianNormal(M.Stereographic(kb), torch.zeros(d, dtype=D), _t(0.5)).log_prob(z).sum().backward()
    assert torch.isfinite(kb.grad).all() and kb.grad.shape == (4, 1)


def test_bad_inputs_raise_value_error_naming_the_argument():
    d = 3
    with pytest.raises(ValueError, match="curvature"):
        RiemannianNormal(M.Stereographic(_t(0.5)), torch.zeros(d, dtype=D), _t(0.5))
    with pytest.raises(ValueError, match="curvature"):
        RiemannianNormal(M.Stereographic(_t(float("nan"))), torch.zeros(d, dtype=D), _t(0.5))
    with pytest.raises(ValueError, match="manifold"):
        RiemannianNormal(M.Sphere(), _t([1.0, 0.0, 0.0]), _t(0.5))
    with pytest.raises(ValueError, match="loc"):
        RiemannianNormal(M.PoincareBall(_t(1.0)), _t([0.9, 0.9, 0.0]), _t(0.5))
    with pytest.raises(ValueError, match="loc"):
        RiemannianNormal(M.PoincareBall(_t(1.0)), _t([float("nan"), 0.0, 0.0]), _t(0.5))
    for s in (0.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            RiemannianNormal(M.PoincareBall(_t(1.0)), torch.zeros(d, dtype=D), _t(s))
    with pytest.raises(ValueError, match="loc"):
        RiemannianNormal(M.Lorentz(_t(1.0)), _t([2.0, 0.0, 0.0]), _t(0.5))
