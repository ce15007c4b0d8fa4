"""Distributions on RP^n (issue 13): ManifoldUniform, AngularCentralGaussian, the antipodal WrappedNormal.

Each density integrates to 1 over RP^n (quadrature on RP^1/RP^2, Monte Carlo against the
uniform law on RP^4), matches an independent numpy/scipy reference (ACG: the radial integral
of scipy's multivariate normal; WN: the wrapped sums written out), and each sampler passes an
energy test against an independent numpy sampler on the sign-invariant features ``x xᵀ``, with
a test of the test (a sampler with a plausible bug is refused).
"""

from __future__ import annotations

import math

import geoopt
import numpy as np
import pytest
import torch
from scipy import integrate, stats

from dlmppl.constraints import ManifoldConstraint
from dlmppl.distributions import (
    AngularCentralGaussian,
    ManifoldUniform,
    ProjectiveWrappedNormal,
    RiemannianNormal,
    WrappedNormal,
)
from dlmppl.geometry.projective import ProjectiveSpace
from tests import statistical as st

D = torch.float64
P = ProjectiveSpace()
N_DRAWS = 800  # per sample of each energy test


def _t(x):
    return torch.as_tensor(x, dtype=D)


def _rotation(seed, n):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q


def _sigma(n=3):
    """An anisotropic covariance with a generic orientation (numpy, float64)."""
    q = _rotation(7, n)
    return q @ np.diag(np.geomspace(4.0, 0.25, n)) @ q.T


def _axial(x):
    """Sign-invariant features: the upper triangle of ``x xᵀ`` (``x`` ``(N, D)``)."""
    x = torch.as_tensor(x, dtype=D)
    i, j = torch.triu_indices(x.shape[-1], x.shape[-1])
    return (x.unsqueeze(-1) * x.unsqueeze(-2))[..., i, j]


# ------------------------------------------------------------------------------ quadrature


def _circle_nodes(m=2000):
    """RP^1: angles θ ∈ [0, π) (arc length), x = (cos θ, sin θ); the periodic rectangle rule."""
    th = torch.arange(m, dtype=D) * (math.pi / m)
    return th, torch.stack([th.cos(), th.sin()], -1), math.pi / m


def _rp2_nodes(pole, m_theta=300, m_phi=128):
    """RP^2 as the sphere in polar coordinates about ``pole``, weights halved (vol RP^2 = vol S^2 / 2).

    Gauss–Legendre in the polar angle θ ∈ [0, π] (the wrapped normal's singular factor
    ``(r/sin r)`` at the poles times ``sin θ`` is smooth), the rectangle rule in φ.
    """
    pole = torch.as_tensor(pole, dtype=D)
    basis = torch.as_tensor(np.linalg.qr(np.column_stack([pole.numpy(), np.eye(3)]))[0][:, :3], dtype=D)
    e0, e1, e2 = basis.T * torch.sign(basis[:, 0] @ pole)
    u, w = np.polynomial.legendre.leggauss(m_theta)
    th = _t(0.5 * math.pi * (u + 1))
    wt = _t(0.5 * math.pi * w) * th.sin()
    ph = torch.arange(m_phi, dtype=D) * (2 * math.pi / m_phi)
    x = th.cos()[:, None, None] * e0 + th.sin()[:, None, None] * (ph.cos()[None, :, None] * e1 + ph.sin()[None, :, None] * e2)
    weights = (0.5 * wt[:, None] * (2 * math.pi / m_phi)).expand(m_theta, m_phi)
    return x.reshape(-1, 3), weights.reshape(-1)


def _rp_integral_check(log_prob, nodes, weights, tol):
    total = float((log_prob(nodes).exp() * weights).sum())
    assert abs(total - 1) < tol, f"∫ p over RP^n = {total}"


# ------------------------------------------------------------------------------ references


def _acg_reference_sphere(x, sigma):
    """p_S(x) = ∫_0^∞ φ_Σ(t x) t^{n} dt: the density on S^n of z/‖z‖, z ~ N(0, Σ) (scipy quadrature)."""
    mvn = stats.multivariate_normal(np.zeros(len(x)), sigma)
    n = len(x) - 1
    val, _ = integrate.quad(lambda t: mvn.pdf(t * x) * t**n, 0, np.inf, epsabs=0, epsrel=1e-11, limit=200)
    return val


def _wn_rp1_reference(theta, theta0, sigma, terms=30):
    """RP^1: p_S(θ) + p_S(θ + π) with p_S the 2π-wrapped normal = the π-wrapped normal sum."""
    k = np.arange(-terms, terms + 1)[:, None]
    return stats.norm.pdf(theta[None, :] - theta0 + math.pi * k, 0, sigma).sum(0)


def _wn_s2_reference(r, sigma, terms=20):
    """Isotropic WN on S^2 at distance r from loc: Σ_k N_2(s_k) |s_k| / sin r, s_k = r + 2πk."""
    s = r[None, :] + 2 * math.pi * np.arange(-terms, terms + 1)[:, None]
    return (np.exp(-0.5 * (s / sigma) ** 2) / (2 * math.pi * sigma**2) * np.abs(s)).sum(0) / np.sin(r)


# ------------------------------------------------------------------------------ independent samplers (numpy)


def _acg_rejection(sigma, n, seed, matrix=None):
    """ACG draws by rejection from the uniform law on S^n: accept with (λ_max xᵀΣ⁻¹x)^{-D/2} ≤ 1.

    ``matrix`` (the deliberate bug of the test of the test): normalise ``matrix @ ε`` instead.
    """
    rng = np.random.default_rng(seed)
    dim = sigma.shape[0]
    if matrix is not None:
        z = rng.standard_normal((n, dim)) @ matrix.T
        return z / np.linalg.norm(z, axis=-1, keepdims=True)
    prec, lam = np.linalg.inv(sigma), np.linalg.eigvalsh(sigma).max()
    out = []
    while sum(len(o) for o in out) < n:
        x = rng.standard_normal((4 * n, dim))
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        acc = (lam * np.einsum("ni,ij,nj->n", x, prec, x)) ** (-dim / 2)
        out.append(x[rng.random(4 * n) < acc])
    return np.concatenate(out)[:n]


def _wn_numpy(loc, sigma, n, seed):
    """Isotropic WN on S^2: a N(0, σ² I_2) tangent vector at loc (numpy basis), then exp; random signs."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.column_stack([loc, np.eye(3)]))[0][:, 1:3]
    v = rng.standard_normal((n, 2)) * sigma @ basis.T
    r = np.linalg.norm(v, axis=-1, keepdims=True)
    z = np.cos(r) * loc + np.sin(r) * v / r
    return z * rng.choice([-1.0, 1.0], size=(n, 1))


# ------------------------------------------------------------------------------ AngularCentralGaussian


def test_acg_integrates_to_one_on_rp1_and_rp2_and_matches_the_radial_integral():
    q = _rotation(3, 2)
    s2 = q @ np.diag([5.0, 0.3]) @ q.T
    th, x, w = _circle_nodes()
    _rp_integral_check(AngularCentralGaussian(_t(s2)).log_prob, x, w, 1e-12)
    s3 = _sigma(3)
    d3 = AngularCentralGaussian(_t(s3))
    nodes, weights = _rp2_nodes([0.0, 0.0, 1.0])
    _rp_integral_check(d3.log_prob, nodes, weights, 1e-9)
    # the RP^n density is twice the S^n density of z/|z| (scipy's normal, integrated along the ray)
    pts = _t(_acg_rejection(s3, 6, 11))
    ref = np.log([2 * _acg_reference_sphere(p, s3) for p in pts.numpy()])
    np.testing.assert_allclose(d3.log_prob(pts).numpy(), ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(d3.log_prob(-pts).numpy(), ref, rtol=0, atol=1e-9)


def test_acg_deliberately_broken_densities_fail_the_normalisation_check():
    """Test of the test: the S^n density (missing the factor 2) and the wrong exponent -n/2 are refused."""
    s3 = _t(_sigma(3))
    d = AngularCentralGaussian(s3)
    nodes, weights = _rp2_nodes([0.0, 0.0, 1.0])
    with pytest.raises(AssertionError):
        _rp_integral_check(lambda x: d.log_prob(x) - math.log(2), nodes, weights, 1e-9)
    prec = torch.linalg.inv(s3)
    q = torch.einsum("ni,ij,nj->n", nodes, prec, nodes)
    wrong = -math.log(2 * math.pi) - 0.5 * torch.logdet(s3) - 1.0 * q.log()  # exponent -n/2 instead of -(n+1)/2
    with pytest.raises(AssertionError):
        _rp_integral_check(lambda x: wrong, nodes, weights, 1e-9)


@pytest.mark.statistical
def test_acg_integrates_to_one_on_rp4_against_the_uniform_law():
    """E_U[f] vol(RP^4) = 1 for U uniform on RP^4 (Monte Carlo, CLT standard error)."""
    s5 = _t(_sigma(5) / 2.0)  # milder anisotropy: a finite-variance importance ratio
    pyro_seed = st.seed(1)
    torch.manual_seed(pyro_seed)
    u = ManifoldUniform(P, (5,), dtype=D)
    x = u.sample((40000,))
    ratio = (AngularCentralGaussian(s5).log_prob(x) - u.log_prob(x)).exp()
    st.assert_mc_estimate(ratio.mean(), ratio.std() / math.sqrt(len(ratio)), 1.0, what="∫ ACG over RP^4",
                          max_stderr=0.05)


def test_acg_is_scale_invariant_and_the_identity_is_uniform():
    s3 = _t(_sigma(3))
    x = ManifoldUniform(P, (3,), dtype=D).sample((20,))
    torch.testing.assert_close(AngularCentralGaussian(3.7 * s3).log_prob(x), AngularCentralGaussian(s3).log_prob(x))
    torch.testing.assert_close(AngularCentralGaussian(scale_tril=torch.linalg.cholesky(s3)).log_prob(x),
                               AngularCentralGaussian(s3).log_prob(x))
    torch.testing.assert_close(AngularCentralGaussian(torch.eye(3, dtype=D)).log_prob(x), ManifoldUniform(P, (3,)).log_prob(x))
    torch.testing.assert_close(ManifoldUniform(P, (3,), dtype=D).log_prob(x), torch.full((20,), -math.log(2 * math.pi), dtype=D))


def _acg_draws(sigma, n):
    return AngularCentralGaussian(_t(sigma)).sample((n,))


@pytest.mark.statistical
def test_acg_sampler_against_rejection_sampling():
    """Energy test on x xᵀ against an independent numpy rejection sampler (false alarm ALPHA: the
    only assertion that can fail a correct sampler), and the test of the test: a sampler that
    normalises Σ ε instead of L ε (the law ACG(Σ²)) is refused.  (At ALPHA/2 the energy test could
    never refuse: its smallest p-value is 1/(9999 + 1) = 1e-4.)"""
    s3 = _sigma(3)
    x = _acg_draws(s3, N_DRAWS)
    ref = _acg_rejection(s3, N_DRAWS, st.seed(2))
    st.assert_same_law(_axial(x), _axial(ref), what="ACG sampler")
    broken = _acg_rejection(s3, N_DRAWS, st.seed(3), matrix=s3)
    with pytest.raises(AssertionError):
        st.assert_same_law(_axial(x), _axial(broken), what="ACG vs the broken sampler")


def test_acg_shapes_expand_empty_float32_and_support():
    L = torch.linalg.cholesky(_t(_sigma(3))).expand(2, 3, 3)
    d = AngularCentralGaussian(scale_tril=L)
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    assert isinstance(d.support, ManifoldConstraint) and type(d.support.manifold) is ProjectiveSpace
    x = d.rsample((4,))
    assert x.shape == (4, 2, 3)
    assert bool(d.support.check(-x).all())
    assert d.log_prob(x.unsqueeze(1).expand(4, 5, 2, 3)).shape == (4, 5, 2)
    assert d.log_prob(x[:, :1]).shape == (4, 2)  # a batch of 1 broadcasts
    e = d.expand((7, 2))
    assert e.sample().shape == (7, 2, 3) and e.log_prob(x[0]).shape == (7, 2)
    torch.testing.assert_close(e.log_prob(x[0])[3], d.log_prob(x[0]))
    assert AngularCentralGaussian.infer_shapes(covariance_matrix=(5, 4, 4)) == ((5,), (4,))
    empty = AngularCentralGaussian(torch.eye(3, dtype=D).expand(0, 3, 3))
    assert empty.sample((4,)).shape == (4, 0, 3) and empty.log_prob(torch.empty(4, 0, 3, dtype=D)).shape == (4, 0)
    f = AngularCentralGaussian(_t(_sigma(3)).float())
    y = f.sample((3,))
    assert y.dtype == torch.float32 and f.log_prob(y).dtype == torch.float32
    y64 = y.double() / y.double().norm(dim=-1, keepdim=True)
    torch.testing.assert_close(f.log_prob(y).double(), AngularCentralGaussian(_t(_sigma(3))).log_prob(y64),
                               rtol=1e-5, atol=1e-5)


def test_acg_rsample_is_differentiable():
    A = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [0.1, -0.2, 0.5]], dtype=D, requires_grad=True)
    x = AngularCentralGaussian(scale_tril=A).rsample((50,))
    (x[:, 0] ** 2).mean().backward()
    assert torch.isfinite(A.grad).all() and A.grad.abs().sum() > 0


def test_acg_validation_names_the_argument():
    s = _t(_sigma(3))
    with pytest.raises(ValueError, match="covariance_matrix, scale_tril"):
        AngularCentralGaussian()
    with pytest.raises(ValueError, match="covariance_matrix, scale_tril"):
        AngularCentralGaussian(s, scale_tril=torch.linalg.cholesky(s))
    with pytest.raises(ValueError, match="covariance_matrix"):
        AngularCentralGaussian(-s, validate_args=True)
    with pytest.raises(ValueError, match="covariance_matrix"):
        AngularCentralGaussian(s * math.nan, validate_args=True)
    with pytest.raises(ValueError, match="scale_tril"):
        AngularCentralGaussian(scale_tril=s, validate_args=True)  # not lower triangular
    with pytest.raises(ValueError, match="scale_tril"):
        AngularCentralGaussian(scale_tril=-torch.eye(3, dtype=D), validate_args=True)
    with pytest.raises(ValueError, match=r"covariance_matrix: .*\(n\+1, n\+1\)"):
        AngularCentralGaussian(torch.ones(3, 2, dtype=D))
    with pytest.raises(ValueError, match=r"covariance_matrix: .*n >= 1"):
        AngularCentralGaussian(torch.ones(1, 1, dtype=D))
    with pytest.raises(ValueError, match="value"):
        AngularCentralGaussian(s, validate_args=True).log_prob(torch.tensor([1.0, 1.0, 0.0], dtype=D))


# ------------------------------------------------------------------------------ WrappedNormal


def test_wrapped_normal_builds_the_antipodal_law_and_refuses_other_manifolds():
    loc = _t([0.0, 0.6, 0.8])
    d = WrappedNormal(P, loc, _t(0.4))
    assert isinstance(d, ProjectiveWrappedNormal) and isinstance(d, WrappedNormal)
    assert type(d.support.manifold) is ProjectiveSpace
    assert type(WrappedNormal(geoopt.Sphere(), loc, _t(0.4))) is WrappedNormal
    with pytest.raises(ValueError, match="manifold: ProjectiveWrappedNormal needs a ProjectiveSpace"):
        ProjectiveWrappedNormal(geoopt.Sphere(), loc, _t(0.4))
    with pytest.raises(ValueError, match="manifold"):
        RiemannianNormal(P, loc, _t(0.4))  # no projective Riemannian normal (yet): refused, not wrong
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(P, loc, _t(-0.4), validate_args=True)
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(P, 2 * loc, _t(0.4), validate_args=True)


@pytest.mark.parametrize("theta0,sigma", [(0.3, 0.4), (2.9, 1.5)])
def test_wrapped_normal_rp1_integrates_to_one_and_is_the_pi_wrapped_normal(theta0, sigma):
    d = WrappedNormal(P, _t([math.cos(theta0), math.sin(theta0)]), _t(sigma))
    th, x, w = _circle_nodes()
    _rp_integral_check(d.log_prob, x, w, 1e-12)
    np.testing.assert_allclose(d.log_prob(-x).exp().numpy(), _wn_rp1_reference(th.numpy(), theta0, sigma), rtol=1e-10)


@pytest.mark.parametrize("scale", [[0.5], [1.2], [0.3, 0.9]], ids=["iso0.5", "iso1.2", "diag"])
def test_wrapped_normal_rp2_integrates_to_one_and_matches_the_wrapped_sums(scale):
    loc = _t([0.48, -0.6, 0.64])
    d = WrappedNormal(P, loc, _t(scale))
    nodes, weights = _rp2_nodes(loc)
    _rp_integral_check(d.log_prob, nodes, weights, 1e-9)
    lp = d.log_prob(nodes)
    torch.testing.assert_close(d.log_prob(-nodes), lp)
    if len(scale) == 1:  # isotropic: p_S(z) + p_S(-z) written out, r = d_S(loc, z) and π - r
        z, m = nodes.numpy(), loc.numpy()
        r = 2 * np.arctan2(np.linalg.norm(z - m, axis=-1), np.linalg.norm(z + m, axis=-1))  # accurate at 0 and π
        keep = (r > 1e-6) & (r < math.pi - 1e-6)
        ref = _wn_s2_reference(r[keep], scale[0]) + _wn_s2_reference(math.pi - r[keep], scale[0])
        np.testing.assert_allclose(lp.exp().numpy()[keep], ref, rtol=1e-9)
        # an isotropic law depends on the point {loc, -loc} only
        torch.testing.assert_close(WrappedNormal(P, -loc, _t(scale)).log_prob(nodes), lp)


@pytest.mark.statistical
def test_wrapped_normal_sampler_against_numpy():
    """Energy test on x xᵀ of the isotropic RP^2 wrapped normal against a numpy tangent-normal
    sampler (false alarm ALPHA), and the test of the test: a sampler whose scale is 1.5 times too
    large is refused."""
    loc, sigma = np.array([0.48, -0.6, 0.64]), 0.7
    x = WrappedNormal(P, _t(loc), _t(sigma)).sample((N_DRAWS,))
    st.assert_same_law(_axial(x), _axial(_wn_numpy(loc, sigma, N_DRAWS, st.seed(4))), what="WN sampler")
    with pytest.raises(AssertionError):
        st.assert_same_law(_axial(x), _axial(_wn_numpy(loc, 1.5 * sigma, N_DRAWS, st.seed(5))))


def test_wrapped_normal_rsample_shapes_expand_empty_float32():
    loc = torch.tensor([[0.0, 0.6, 0.8], [1.0, 0.0, 0.0]], dtype=D, requires_grad=True)
    scale = torch.tensor([[0.3, 0.5], [0.2, 0.2]], dtype=D, requires_grad=True)
    d = WrappedNormal(P, loc, scale)
    z = d.rsample((5,))
    assert z.shape == (5, 2, 3)
    (z[..., 1] ** 2).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all() and scale.grad.abs().sum() > 0
    e = d.expand((4, 2))
    assert e.sample().shape == (4, 2, 3) and type(e) is ProjectiveWrappedNormal
    torch.testing.assert_close(e.log_prob(z[0].detach())[1], d.log_prob(z[0].detach()))
    empty = WrappedNormal(P, torch.empty(0, 3, dtype=D), _t(0.3))
    assert empty.sample((2,)).shape == (2, 0, 3) and empty.log_prob(torch.empty(2, 0, 3, dtype=D)).shape == (2, 0)
    f = WrappedNormal(P, torch.tensor([0.0, 0.6, 0.8]), torch.tensor(0.3))
    y = f.sample((3,))
    assert y.dtype == torch.float32 and f.log_prob(y).dtype == torch.float32
