"""Tests of WrappedNormal: normalisation, flat limit, gradients, sampler vs density, shapes, errors."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch
from scipy import stats

import dlmppl.distributions.wrapped_normal as wn_mod
from dlmppl import kmath
from dlmppl import manifolds as M
from dlmppl.distributions.wrapped_normal import WrappedNormal
from dlmppl.geometry import geometry_of
from tests import statistical as st
from tests.distributions._frames import exp_frame, log_frame
from tests.helpers import (
    integrate_on_sphere,
    integrate_polar,
    log_sphere_area,
    uniform_sphere,
)

D = torch.float64


def _t(x):
    return torch.as_tensor(x, dtype=D)


def _lorentz_origin(k, d):
    return torch.cat([_t(k).sqrt().reshape(1), torch.zeros(d, dtype=D)])


def _lorentz_point(k, s):
    """Point of the hyperboloid ⟨x,x⟩_L = -k with spatial part ``s``."""
    return torch.cat([(k + s.pow(2).sum(-1, keepdim=True)).sqrt(), s], -1)


def _assert_one(est, se, alpha=st.ALPHA):
    # standard error ≤ 0.0067: power against a normalisation off by 4% or more
    st.assert_mc_estimate(est, se, 1.0, max_stderr=0.02 / 3, what="∫ p dvol", alpha=alpha)


def integrate_polar_chi(log_prob, point_from_tangent, d, k, s, num=60_000, batch_ndim=0):
    """Like ``tests.helpers.integrate_polar`` (geodesic polar coordinates at a base point o,
    ``dvol = sin_k(r)^{d-1} dr dξ``) but with the radius drawn from ``s·chi_d`` and
    importance-weighted, for a low variance when the mass sits within a few ``s`` of o."""
    shape = (num,) + (1,) * batch_ndim
    xi = uniform_sphere(num, d).reshape(shape + (d,))
    s = _t(s)
    r = s * torch.randn(shape + (d,), dtype=D).norm(dim=-1, keepdim=True)
    log_h = (d - 1) * (r / s).log() - 0.5 * (r / s) ** 2 - (0.5 * d - 1) * math.log(2) - math.lgamma(0.5 * d) - s.log()
    log_w = (d - 1) * kmath.sin_k(r, _t(k)).abs().log() + log_sphere_area(d) - log_h
    p = (log_prob(point_from_tangent(r * xi)) + log_w.squeeze(-1)).exp()
    return p.mean(0), p.std(0) / math.sqrt(num)


# ----------------------------------------------------------------------------------------------
# normalisation


@pytest.mark.statistical
@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_integrates_to_one_stereographic_batched_nonpositive(d):
    k = _t([-2.0, -0.5, 0.0]).reshape(3, 1)  # batched curvature, one per distribution
    man = M.Stereographic(k)
    loc = (torch.rand(3, d, dtype=D) - 0.5) * 0.2
    scale = 0.5 + 0.2 * torch.rand(3, 1, dtype=D)
    dist = WrappedNormal(man, loc, scale)
    assert dist.batch_shape == (3,)
    o = torch.zeros(d, dtype=D)
    est, se = integrate_polar_chi(dist.log_prob, lambda v: exp_frame("stereo", k, o, v), d, k, 1.2 * scale,
                                  batch_ndim=1)
    _assert_one(est, se)


@pytest.mark.statistical
@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("kappa", [0.5, 2.0])
def test_integrates_to_one_stereographic_positive_wraps(d, kappa):
    # σ√κ ≈ 1.4-2: a large part of the mass wraps past the antipode
    man = M.SphereProjection(kappa) if kappa == 2.0 else M.Stereographic(_t(kappa))
    # loc = o: the density has integrable singularities at loc and at its antipode (through the
    # wraps), which only polar coordinates centred at loc integrate with a finite variance
    loc = torch.zeros(d, dtype=D)
    scale = _t(2.0 / math.sqrt(kappa) * (1.0 if d > 3 else 0.7)).expand(1)
    dist = WrappedNormal(man, loc, scale if d % 2 else scale * (0.9 + 0.2 * torch.rand(d, dtype=D)))
    o = torch.zeros(d, dtype=D)
    est, se = integrate_polar(dist.log_prob, lambda v: exp_frame("stereo", _t(kappa), o, v), d, kappa,
                              math.pi / math.sqrt(kappa), num=60_000)
    _assert_one(est, se)


@pytest.mark.statistical
@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_integrates_to_one_lorentz_and_ball(d):
    k = _t(1.5)
    loc = _lorentz_point(k, 0.15 * torch.randn(d, dtype=D))
    scale = 0.5 + 0.1 * torch.rand(d, dtype=D)  # diagonal
    dist = WrappedNormal(M.Lorentz(k), loc, scale)
    o = _lorentz_origin(k, d)
    est, se = integrate_polar_chi(dist.log_prob, lambda v: exp_frame("lorentz", k, o, v), d, -1 / k,
                                  1.2 * float(scale.max()))
    _assert_one(est, se, alpha=st.ALPHA / 2)
    # geoopt's own Poincaré ball class, curvature -c
    c = 0.8
    ball = geoopt.PoincareBall(c)
    loc = 0.1 * torch.rand(d, dtype=D)
    dist = WrappedNormal(ball, loc, _t(0.6))
    est, se = integrate_polar_chi(dist.log_prob, lambda v: exp_frame("stereo", _t(-c), torch.zeros(d, dtype=D), v),
                                  d, -c, 1.2 * 0.6)
    _assert_one(est, se, alpha=st.ALPHA / 2)


@pytest.mark.statistical
@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_integrates_to_one_sphere(d):
    # σ = 1.5: the wraps carry several percent of the mass
    o = torch.eye(d + 1, dtype=D)[0]
    loc = o  # see test_integrates_to_one_stereographic_positive_wraps
    for scale in (_t(1.5), 1.4 + 0.2 * torch.rand(d, dtype=D)):
        dist = WrappedNormal(M.SphereExact(), loc, scale)
        est, se = integrate_polar(dist.log_prob, lambda v: exp_frame("sphere", None, o, v), d, 1.0, math.pi,
                                  num=60_000)
        _assert_one(est, se, alpha=st.ALPHA / 3)
    if d <= 3:  # an independent route: uniform points of the sphere (σ small keeps the variance finite)
        dist = WrappedNormal(M.Sphere(), loc, _t(0.5))
        est, se = integrate_on_sphere(dist.log_prob, d + 1, num=100_000)
        _assert_one(est, se, alpha=st.ALPHA / 3)


def test_euclidean_is_the_normal():
    loc, scale = torch.randn(4, 3, dtype=D), torch.rand(4, 3, dtype=D) + 0.1
    dist = WrappedNormal(M.Euclidean(ndim=1), loc, scale)
    x = dist.rsample((5,))
    ref = torch.distributions.Normal(loc, scale).log_prob(x).sum(-1)
    torch.testing.assert_close(dist.log_prob(x), ref)


@pytest.mark.statistical
def test_test_of_the_test_missing_wrap_and_wrong_logdet(monkeypatch):
    """The normalisation tests fail on deliberately broken densities."""
    d = 3
    o = torch.eye(d + 1, dtype=D)[0]
    dist = WrappedNormal(M.Sphere(), o, _t(1.5))

    def integral():
        return integrate_polar(dist.log_prob, lambda v: exp_frame("sphere", None, o, v), d, 1.0, math.pi,
                               num=40_000)

    _assert_one(*integral())
    with monkeypatch.context() as mp:  # forget the other preimages of exp
        mp.setattr(WrappedNormal, "_log_wrap_factor", lambda self, r, q, kappa: torch.zeros_like(r))
        with pytest.raises(AssertionError, match="standard errors"):
            _assert_one(*integral())
    with monkeypatch.context() as mp:  # wrong sign of the log-determinant
        orig = kmath.log_sin_k_ratio
        mp.setattr(wn_mod.kmath, "log_sin_k_ratio", lambda r, k: -orig(r, k))
        k = _t(1.0)
        lor = WrappedNormal(M.Lorentz(k), _lorentz_origin(k, d), _t(0.7))
        with pytest.raises(AssertionError):  # far off (> 0.2), or too noisy to have power
            _assert_one(*integrate_polar(lor.log_prob, lambda v: exp_frame("lorentz", k, _lorentz_origin(k, d), v),
                                         d, -1.0, 0.7 * 7, num=40_000))


# ----------------------------------------------------------------------------------------------
# flat limit, κ = 0


def test_flat_limit_from_both_sides():
    """At κ = 0 the chart has metric 4I: the Riemannian normal coordinates are 2z, so
    log p(z) = log N(2z; 2 loc, diag σ²) exactly, and κ = ±1e-4 is within O(κ) of it."""
    d = 4
    loc = 0.3 * torch.randn(d, dtype=D)
    scale = 0.3 + torch.rand(d, dtype=D)
    z = loc + 0.5 * torch.randn(50, d, dtype=D)
    ref = torch.distributions.Normal(2 * loc, scale).log_prob(2 * z).sum(-1)
    lp0 = WrappedNormal(M.Stereographic(_t(0.0)), loc, scale).log_prob(z)
    torch.testing.assert_close(lp0, ref, rtol=1e-12, atol=1e-12)
    for k in (1e-4, -1e-4):
        lpk = WrappedNormal(M.Stereographic(_t(k)), loc, scale).log_prob(z)
        err = (lpk - ref).abs().max()
        assert 1e-9 < err < 1e-2  # it does move, by O(κ)
        lp2k = WrappedNormal(M.Stereographic(_t(2 * k)), loc, scale).log_prob(z)
        assert ((lp2k - ref).abs().max() / err - 2).abs() < 0.05  # linear in κ


def test_no_nan_at_zero_curvature():
    d = 3
    k = torch.zeros((), dtype=D, requires_grad=True)
    loc = (0.2 * torch.randn(d, dtype=D)).requires_grad_()
    scale = torch.full((d,), 0.7, dtype=D, requires_grad=True)
    dist = WrappedNormal(M.Stereographic(k), loc, scale)
    z = dist.rsample((100,))
    z = torch.cat([z, loc.detach()[None]])  # including z = loc
    lp = dist.log_prob(z)
    (lp.sum() + z.sum()).backward()
    for t in (lp, k.grad, loc.grad, scale.grad):
        assert torch.isfinite(t).all()
    # batched κ containing 0 and both signs
    kb = torch.tensor([[-1.0], [0.0], [1.0]], dtype=D, requires_grad=True)
    dist = WrappedNormal(M.Stereographic(kb), loc, _t(0.5))
    lp = dist.log_prob(dist.rsample((10,)))
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(kb.grad).all()


# ----------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("kappa", [-0.8, 0.0, 0.6])
def test_gradcheck_stereographic(kappa):
    d = 3
    # |z| ≤ 0.4·1.5·√3 = 1.04 < 1/√0.8: inside the ball for every seed (an unclamped draw leaves it ~2% of the time)
    z = 0.4 * torch.randn(5, d, dtype=D).clamp(-1.5, 1.5)
    loc = (0.3 * torch.randn(d, dtype=D)).requires_grad_()
    scale = (0.8 + 0.2 * torch.rand(d, dtype=D)).requires_grad_()
    k = _t(kappa).requires_grad_()
    iso = _t([1.4]).requires_grad_()  # σ√κ large enough to bring in wrap terms for κ > 0
    z.requires_grad_()  # the value too: HMC differentiates log_prob in z

    def f(loc, scale, k, iso, z):
        man = M.Stereographic(k)
        return WrappedNormal(man, loc, scale).log_prob(z) + WrappedNormal(man, loc, iso).log_prob(z)

    assert torch.autograd.gradcheck(f, (loc, scale, k, iso, z))


def test_gradcheck_lorentz_and_sphere():
    d = 3
    k = _t(1.3).requires_grad_()
    s = (0.5 * torch.randn(d, dtype=D)).requires_grad_()
    scale = (0.6 + 0.3 * torch.rand(d, dtype=D)).requires_grad_()
    z = _lorentz_point(_t(1.3), torch.randn(4, d, dtype=D))

    # batched Lorentz k broadcasting with loc
    kb = _t([[0.5], [2.0]])
    lb = WrappedNormal(M.Lorentz(kb), _lorentz_point(kb, torch.zeros(2, d, dtype=D)), _t(0.4))
    assert lb.batch_shape == (2,) and lb.support.check(lb.rsample((5,))).all()

    def f(k, s, scale):
        man = geoopt.Lorentz()
        del man._parameters["k"]
        object.__setattr__(man, "k", k)  # a curvature tensor that carries a graph
        loc = _lorentz_point(k, s)
        zk = _lorentz_point(k, z[..., 1:])
        return WrappedNormal(man, loc, scale, validate_args=False).log_prob(zk)

    assert torch.autograd.gradcheck(f, (k, s, scale))
    w = torch.randn(d + 1, dtype=D).requires_grad_()
    zs = uniform_sphere(6, d + 1)

    def g(w, scale):
        loc = w / w.norm()
        return WrappedNormal(M.Sphere(), loc, 1.5 * scale).log_prob(zs) + WrappedNormal(
            M.Sphere(), loc, scale.mean()).log_prob(zs)

    assert torch.autograd.gradcheck(g, (w, scale))


@pytest.mark.statistical
def test_rsample_gradients_match_finite_differences_and_exact_expectation():
    """Pathwise gradients (common random numbers) of E f(z); and of E d(loc, z)² = Σ σ_i², exactly."""
    n = 4000
    a = _t([0.3, -0.2, 0.5])

    def objective(loc, scale, k):
        torch.manual_seed(st.seed(1))  # common random numbers: the finite differences see one sample
        z = WrappedNormal(M.Stereographic(k), loc, scale).rsample((n,))
        return (z * a).sum(-1).sin().mean() + z.pow(2).sum(-1).mean()

    loc, scale, k = _t([0.1, 0.2, -0.1]), _t([0.4, 0.6, 0.5]), _t(-0.7)
    params = [p.clone().requires_grad_() for p in (loc, scale, k)]
    grads = torch.autograd.grad(objective(*params), params)
    h = 1e-5
    for i, p in enumerate((loc, scale, k)):
        for j in range(p.numel()):
            e = torch.zeros_like(p).reshape(-1)
            e[j] = h
            e = e.reshape(p.shape)
            args_p = [q if m != i else q + e for m, q in enumerate((loc, scale, k))]
            args_m = [q if m != i else q - e for m, q in enumerate((loc, scale, k))]
            fd = (objective(*args_p) - objective(*args_m)) / (2 * h)
            assert abs(float(fd - grads[i].reshape(-1)[j])) < 1e-6
    # exact expectation: d(loc, z) = ‖v‖, so ∂E d²/∂σ_i = 2σ_i, independent of loc and κ.  One scale
    # row per draw: the per-draw gradients 2σ_i ε_i² are independent, their mean is the gradient
    kl = _t(0.5).requires_grad_()
    scale_l = scale.expand(n, 3).clone().requires_grad_()
    man = M.Stereographic(kl)
    z = WrappedNormal(man, loc, scale_l).rsample()
    gs, gk = torch.autograd.grad(man.dist(loc, z).pow(2).sum(), (scale_l, kl))
    st.assert_mc_estimate(gs.mean(0), gs.std(0) / math.sqrt(n), 2 * scale, max_stderr=0.03, what="∂E d²/∂σ")
    assert abs(float(gk)) < 1e-8 * n


# ----------------------------------------------------------------------------------------------
# sampler against density


@pytest.mark.statistical
def test_rsample_distance_law_hyperbolic():
    """d(loc, z) for an isotropic wrapped normal is σ·chi_d (KS test), on the ball and the hyperboloid."""
    for man, loc, d in (
        (M.PoincareBall(_t(1.5)), _t([0.3, -0.2, 0.1]), 3),
        (M.Lorentz(_t(0.7)), _lorentz_point(_t(0.7), _t([1.0, 0.5, -0.3, 0.2])), 4),
    ):
        z = WrappedNormal(man, loc, _t(0.8)).rsample((3000,))
        r = man.dist(loc, z)
        st.assert_ks(r / 0.8, stats.chi(d).cdf, what=f"d(loc, z)/σ on {type(man).__name__}", alpha=st.ALPHA / 2)


def _exact_by_rejection(log_prob, point_from_tangent, d, k, radius, n):
    """``n`` exact draws of ``exp(log_prob) dvol`` by rejection from geodesic polar coordinates at a
    point: ``r ~ U[0, radius]``, ``ξ`` uniform, ``x = point_from_tangent(r ξ)``, whose density is
    ``1 / (radius |S^{d-1}| sin_k(r)^{d-1})``.  The ratio ``p(x) sin_k(r)^{d-1}`` is bounded (the
    volume factor cancels the wrapped density's singularities at the cut locus); its bound is twice
    the largest of a pilot run, and every ratio used is checked against it.  Mass beyond ``radius``
    is dropped (choose it where that mass is negligible).  Independent of the sampler under test."""

    def propose(m):
        xi = uniform_sphere(m, d)
        r = torch.rand(m, 1, dtype=D) * radius
        x = point_from_tangent(r * xi)
        return x, log_prob(x) + (d - 1) * kmath.sin_k(r, _t(k)).abs().log().squeeze(-1)

    bound = float(propose(20_000)[1].max()) + math.log(2.0)
    out, total = [], 0
    while total < n:
        x, logw = propose(8 * n)
        assert float(logw.max()) <= bound, "rejection bound exceeded: raise the margin"
        keep = torch.rand(len(x), dtype=D).log() < logw - bound
        out.append(x[keep])
        total += int(keep.sum())
    return torch.cat(out)[:n]


@pytest.mark.statistical
def test_rsample_matches_log_prob_by_rejection_sampling():
    """Energy test (false alarm 1e-4): rsample vs exact draws of log_prob by rejection sampling
    (:func:`_exact_by_rejection`, geodesic polar coordinates at loc).  Poincaré ball (diagonal
    scale) and sphere (diagonal scale, σ large enough to wrap); the same test rejects a sampler
    with scales 1.5 times too large."""
    n = 1000
    # Poincaré ball, c = 1, d = 2: mass beyond geodesic radius 10 (> 11 σ) is negligible
    d, c = 2, 1.0
    loc = _t([0.3, 0.2])
    dist = WrappedNormal(M.PoincareBall(c), loc, _t([0.5, 0.9]))
    ref = _exact_by_rejection(dist.log_prob, lambda v: exp_frame("stereo", _t(-c), loc, v), d, -c, 10.0, n)
    st.assert_same_law(dist.rsample((n,)), ref, what="Poincaré rsample vs log_prob", alpha=st.ALPHA / 2)
    # sphere S^2
    loc = uniform_sphere(1, 3)[0]
    dist = WrappedNormal(M.Sphere(), loc, _t([0.9, 1.6]))
    ref = _exact_by_rejection(dist.log_prob, lambda v: exp_frame("sphere", None, loc, v), 2, 1.0, math.pi, n)
    st.assert_same_law(dist.rsample((n,)), ref, what="sphere rsample vs log_prob", alpha=st.ALPHA / 2)
    # and the test has power: a sampler with scales 1.5 times too large is rejected, already with 700
    # draws (statistic ≥ 29 permutation standard deviations out over 4 seeds)
    wrong = WrappedNormal(M.Sphere(), loc, _t([1.35, 2.4])).rsample((700,))
    with pytest.raises(AssertionError, match="combined p"):
        st.assert_same_law(wrong, ref[:700])


# ----------------------------------------------------------------------------------------------
# frame, shapes, errors


def test_frame_is_parallel_transport_from_origin():
    d = 3
    v = torch.randn(5, d, dtype=D)
    k = _t(-0.6)
    loc = 0.4 * torch.rand(5, d, dtype=D)
    ref = geoopt.Stereographic(-0.6).expmap(loc, geoopt.Stereographic(-0.6).transp0(loc, v / 2))
    torch.testing.assert_close(exp_frame("stereo", k, loc, v), ref)
    kl = _t(1.7)
    lor = geoopt.Lorentz(1.7)
    loc = _lorentz_point(kl, torch.randn(5, d, dtype=D))
    u = lor.transp0(loc, torch.cat([torch.zeros(5, 1, dtype=D), v], -1))
    torch.testing.assert_close(exp_frame("lorentz", kl, loc, v), lor.expmap(loc, u))
    torch.testing.assert_close(log_frame("lorentz", kl, loc, exp_frame("lorentz", kl, loc, v)), v)
    # sphere: the frame at loc is orthonormal and tangent
    loc = uniform_sphere(5, d + 1)
    jac = torch.autograd.functional.jacobian(lambda w: exp_frame("sphere", None, loc[0], w), torch.zeros(d, dtype=D))
    torch.testing.assert_close(jac.T @ jac, torch.eye(d, dtype=D))
    torch.testing.assert_close(loc[0] @ jac, torch.zeros(d, dtype=D))


def test_shapes_expand_and_batched_curvature():
    d = 3
    k = torch.linspace(-1, 1, 4, dtype=D).reshape(4, 1)
    dist = WrappedNormal(M.Stereographic(k), torch.zeros(d, dtype=D), _t(0.5))
    assert dist.batch_shape == (4,) and dist.event_shape == (d,)
    z = dist.rsample((7,))
    assert z.shape == (7, 4, d)
    assert dist.log_prob(z).shape == (7, 4)
    assert dist.log_prob(z[:, :1]).shape == (7, 4)
    e = dist.expand((2, 4))
    assert e.batch_shape == (2, 4) and e.rsample((3,)).shape == (3, 2, 4, d)
    assert e.log_prob(e.sample()).shape == (2, 4)
    torch.testing.assert_close(e.log_prob(z[:1].expand(2, 4, d)), dist.log_prob(z[0]).expand(2, 4))
    # to its own batch shape: the distribution itself (immutable; pyro.plate expands every site's)
    assert dist.expand((4,)) is dist and dist.expand(torch.Size([4])) is dist
    assert dist.expand((1, 4)) is not dist and dist.expand((1, 4)).batch_shape == (1, 4)
    # scale shapes: batch (isotropic), batch+(1,), batch+(d,) (diagonal)
    loc = 0.1 * torch.randn(5, d, dtype=D)
    for s, iso in ((torch.ones(5, dtype=D), True), (torch.ones(5, 1, dtype=D), True), (torch.ones(5, d, dtype=D), False)):
        w = WrappedNormal(M.PoincareBall(1.0), loc, s)
        assert w.batch_shape == (5,) and w._isotropic is iso
    # isotropic and diagonal-with-equal-entries give the same density
    z = w.rsample((3,))
    torch.testing.assert_close(WrappedNormal(M.PoincareBall(1.0), loc, torch.ones(5, dtype=D)).log_prob(z), w.log_prob(z))
    # sphere, Lorentz event shapes
    sp = WrappedNormal(M.Sphere(), uniform_sphere(2, 4), _t(0.3))
    assert sp.rsample((6,)).shape == (6, 2, 4) and sp.dim == 3
    assert torch.allclose(sp.rsample((6,)).norm(dim=-1), torch.ones((), dtype=D))
    lz = WrappedNormal(M.Lorentz(_t(1.0)), _lorentz_origin(1.0, 2), _t(2.0)).rsample((100,))
    assert M.Lorentz(_t(1.0)).check_point_on_manifold(lz)
    assert dist.support.check(dist.rsample((3,))).all()


def test_float32_follows_inputs():
    for man, loc in ((M.PoincareBall(1.0), torch.zeros(3)), (M.Stereographic(0.0), torch.zeros(3)),
                     (M.SphereProjection(1.0), torch.zeros(3)), (M.Sphere(), torch.tensor([1.0, 0.0, 0.0])),
                     (M.Lorentz(), torch.tensor([1.0, 0.0, 0.0]))):
        dist = WrappedNormal(man, loc, torch.tensor([0.5, 0.9]) if loc.shape[-1] == 3 and geometry_of(man).name == "Sphere" else 0.5)
        z = dist.rsample((100,))
        lp = dist.log_prob(z)
        assert z.dtype == lp.dtype == torch.float32 and torch.isfinite(lp).all()


def test_bad_inputs_raise_value_error_naming_the_argument():
    d = 3
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(M.PoincareBall(1.0), _t([0.9, 0.9, 0.0]), _t(0.5))
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(M.Sphere(), _t([1.0, 1.0, 0.0]), _t(0.5))
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(M.Lorentz(), _t([1.0, 1.0, 0.0]), _t(0.5))
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(M.Stereographic(_t(-1.0)), _t([float("nan"), 0.0, 0.0]), _t(0.5))
    for s in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            WrappedNormal(M.PoincareBall(1.0), torch.zeros(d, dtype=D), _t(s))
    with pytest.raises(ValueError, match="curvature"):
        WrappedNormal(M.Stereographic(_t(float("nan"))), torch.zeros(d, dtype=D), _t(0.5))
    with pytest.raises(ValueError, match="c must be"):
        WrappedNormal(M.PoincareBall(-1.0), torch.zeros(d, dtype=D), _t(0.5))
    with pytest.raises(ValueError, match="manifold"):
        WrappedNormal(M.Stiefel(), torch.eye(3, dtype=D)[:, :2], _t(0.5))
    dist = WrappedNormal(M.Sphere(), _t([1.0, 0.0, 0.0]), _t(0.5))
    with pytest.raises(ValueError):
        dist.log_prob(_t([2.0, 0.0, 0.0]))
    # validation off: no check
    WrappedNormal(M.PoincareBall(1.0), torch.zeros(d, dtype=D), _t(-1.0), validate_args=False)


def test_one_dimensional_positive_curvature_density_is_continuous_at_loc():
    """At z = loc exactly the wrap factor used Σ ξ²/σ² = 0/0 → 0 (found by the flat-circle test of
    tests/geometry/test_toy_family.py): log_prob(loc) was log(2n+1) too high on a circle of κ > 0."""
    man = M.SphereProjection(c=1.0)
    d = WrappedNormal(man, torch.zeros(1, dtype=D), torch.tensor(2.5, dtype=D))
    at, near = d.log_prob(torch.zeros(1, dtype=D)), d.log_prob(torch.full((1,), 1e-9, dtype=D))
    torch.testing.assert_close(at, near, rtol=1e-12, atol=1e-12)


def test_wrap_factor_gradient_is_finite_where_geodesics_do_not_close():
    """A batch mixing κ > 0 and κ < 0: on the κ < 0 rows (no wrap) a distance r that is an integer
    made the masked preimage length r + n zero and log's backward 0/0 = NaN (met at r = 2.0 while
    training a DynamicCurvatureVAE, calibration seed 10)."""
    import dlmppl.manifolds as m

    k = torch.tensor([[-0.9], [0.7]])
    M = m.Stereographic(k)
    loc = torch.zeros(2, 2)
    wn = WrappedNormal(M, loc, torch.full((2, 1), 0.3))
    r = torch.tensor([[2.0], [1.0]], requires_grad=True)
    q = (r / 0.3).pow(2)
    period = torch.tensor([[math.inf], [2 * math.pi / 0.7**0.5]])
    out = wn._log_wrap_factor(r, q, period)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(r.grad).all(), (out, r.grad, period)
