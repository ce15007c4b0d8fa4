"""ManifoldUniform: sphere and Stiefel (Haar) volumes and samplers, errors on non-compact manifolds."""

import math

import numpy as np
import pytest
import torch

import dlmppl.manifolds as M
from dlmppl.distributions.uniform import ManifoldUniform, log_volume
from tests import statistical as st
from tests.helpers import integrate_on_sphere, log_sphere_area


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_sphere_density_integrates_to_one(d):
    dist = ManifoldUniform(M.Sphere(), (d,), dtype=torch.float64)
    est, _ = integrate_on_sphere(dist.log_prob, d, num=1000)
    assert abs(est.item() - 1) < 1e-12
    assert abs(dist.log_volume - log_sphere_area(d)) < 1e-12


@pytest.mark.statistical
def test_sphere_samples_are_uniform():
    """Energy test against normalised Gaussians drawn by numpy; the same test rejects a cap-biased sampler."""
    d, n = 3, 1000
    ours = ManifoldUniform(M.SphereExact(), (d,), dtype=torch.float64).sample((n,))
    assert ((ours.norm(dim=-1) - 1).abs() < 1e-12).all()
    z = torch.from_numpy(np.random.default_rng(st.seed(1)).standard_normal((n, d)))
    ref = z / z.norm(dim=-1, keepdim=True)
    st.assert_same_law(ours, ref, what="uniform sphere sampler")
    biased = ours.clone()
    biased[:, 0] = biased[:, 0].abs()  # a hemisphere-folded sampler: > 50 permutation sd out at 400 draws
    with pytest.raises(AssertionError, match="combined p"):
        st.assert_same_law(biased[:400], ref[:400])


def _so3_volume(stiefel):
    """Volume of St(3,2) ≅ SO(3) under ``stiefel``'s metric, from Euler angles: X(a,b,c) = first two
    columns of Rz(a) Ry(b) Rz(c); sqrt det of the metric's Gram matrix of ∂X depends on b only
    (invariance), so vol = 4π² ∫_0^π sqrt(det G(0, b, 0)) db (Gauss–Legendre)."""

    def rz(a):
        c, s = torch.cos(a), torch.sin(a)
        z, o = torch.zeros_like(a), torch.ones_like(a)
        return torch.stack([torch.stack([c, -s, z]), torch.stack([s, c, z]), torch.stack([z, z, o])])

    def ry(b):
        c, s = torch.cos(b), torch.sin(b)
        z, o = torch.zeros_like(b), torch.ones_like(b)
        return torch.stack([torch.stack([c, z, s]), torch.stack([z, o, z]), torch.stack([-s, z, c])])

    def x_of(angles):
        a, b, c = angles
        return (rz(a) @ ry(b) @ rz(c))[:, :2]

    nodes, weights = np.polynomial.legendre.leggauss(40)
    total = 0.0
    for t, w in zip(nodes, weights, strict=True):
        b = math.pi * (t + 1) / 2
        ang = torch.tensor([0.0, b, 0.0], dtype=torch.float64)
        x = x_of(ang)
        jac = torch.autograd.functional.jacobian(x_of, ang)  # (3, 2, 3)
        cols = [jac[..., i] for i in range(3)]
        gram = torch.tensor([[stiefel.inner(x, u, v).item() for v in cols] for u in cols])
        total += w * math.pi / 2 * math.sqrt(max(torch.linalg.det(gram).item(), 0.0))
    return 4 * math.pi**2 * total


@pytest.mark.parametrize("stiefel", [M.CanonicalStiefel(), M.EuclideanStiefel()])
def test_stiefel_volume_matches_metric(stiefel):
    """James' volume formula (and the √2 stretch of the Euclidean metric) against a direct integral of
    the Riemannian volume form of geoopt's metric over St(3,2); St(n,1) is the sphere."""
    assert abs(log_volume(stiefel, (3, 2)) - math.log(_so3_volume(stiefel))) < 1e-6
    for n in [2, 5, 9]:
        assert abs(log_volume(stiefel, (n, 1)) - log_sphere_area(n)) < 1e-12
    # O(2) = two circles; the canonical metric gives unit speed to X(θ) = rotation by θ
    speed = 1.0 if isinstance(stiefel, M.CanonicalStiefel) else math.sqrt(2)
    assert abs(log_volume(stiefel, (2, 2)) - math.log(2 * 2 * math.pi * speed)) < 1e-12


def _assert_haar_mean_zero(x, alpha=st.ALPHA):
    # E[X] = 0 with the exact standard error: sd(X_ij) = 1/√n under Haar
    n = x.shape[-2]
    st.assert_mc_estimate(x.mean(0), 1 / math.sqrt(n * x.shape[0]), 0.0, what="Haar E[X]", alpha=alpha)


@pytest.mark.statistical
def test_stiefel_haar_samples():
    """Samples are orthonormal, E[X] = 0 and E[X_ij²] = 1/n (Haar), and match the polar-decomposition
    construction G(GᵀG)^{-1/2} (an independent exact Haar sampler) in an energy test."""
    n, p = 4, 2
    dist = ManifoldUniform(M.Stiefel(), (n, p), dtype=torch.float64)
    x = dist.sample((4000,))
    assert x.shape == (4000, n, p)
    eye = torch.eye(p, dtype=torch.float64)
    assert ((x.transpose(-1, -2) @ x - eye).abs().amax((-1, -2)) < 1e-12).all()
    _assert_haar_mean_zero(x, alpha=st.ALPHA / 3)  # LAPACK's Q without sign correction fails this
    sq = x.pow(2)
    st.assert_mc_estimate(sq.mean(0), sq.std(0) / math.sqrt(4000), 1 / n, what="Haar E[X_ij²]", alpha=st.ALPHA / 3)
    g = torch.randn(1000, n, p, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(g.transpose(-1, -2) @ g)
    ref = g @ evecs @ torch.diag_embed(evals.rsqrt()) @ evecs.transpose(-1, -2)
    st.assert_same_law(x[:1000].flatten(1), ref.flatten(1), what="Haar vs polar decomposition", alpha=st.ALPHA / 3)


@pytest.mark.statistical
def test_unsigned_qr_is_not_haar():
    """Test of the test above: dropping the sign correction makes the mean test fail."""
    z = torch.randn(4000, 4, 2, dtype=torch.float64)
    q, _ = torch.linalg.qr(z)
    with pytest.raises(AssertionError, match="standard errors"):
        _assert_haar_mean_zero(q)


def test_log_prob_shapes_dtype_and_support():
    dist = ManifoldUniform(M.Sphere(), (3,), batch_shape=(2,), dtype=torch.float32)
    x = dist.sample((5,))
    assert x.shape == (5, 2, 3) and x.dtype == torch.float32
    lp = dist.log_prob(x)
    assert lp.shape == (5, 2) and lp.dtype == torch.float32
    assert dist.entropy().shape == (2,) and dist.expand((4, 2)).sample().shape == (4, 2, 3)
    with pytest.raises(ValueError):
        ManifoldUniform(M.Sphere(), (3,), validate_args=True).log_prob(torch.tensor([1.0, 1.0, 0.0]))
    st = ManifoldUniform(M.EuclideanStiefel(), (5, 3), batch_shape=(2,))
    assert st.log_prob(st.sample((3,))).shape == (3, 2)


@pytest.mark.parametrize(
    "manifold,event_shape,name",
    [
        (M.Euclidean(ndim=1), (3,), "Euclidean"),
        (M.PoincareBall(), (3,), "PoincareBall"),
        (M.Lorentz(), (3,), "Lorentz"),
        (M.Stereographic(-1.0), (3,), "Stereographic"),
        (M.Stereographic(0.0), (3,), "Stereographic"),
        (M.SymmetricPositiveDefinite(), (3, 3), "SymmetricPositiveDefinite"),
    ],
)
def test_non_compact_manifolds_raise(manifold, event_shape, name):
    with pytest.raises(ValueError, match=f"{name}.*not compact"):
        ManifoldUniform(manifold, event_shape)


def test_bad_event_shapes_raise():
    with pytest.raises(ValueError, match="Sphere"):
        ManifoldUniform(M.Sphere(), (1,))
    with pytest.raises(ValueError, match="Stiefel"):
        ManifoldUniform(M.Stiefel(), (2, 3))
