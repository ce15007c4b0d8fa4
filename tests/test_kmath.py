"""κ-stereographic math: agreement with geoopt away from κ = 0, smoothness through κ = 0."""

import math

import geoopt.manifolds.stereographic.math as gm
import pytest
import torch

from dlmppl import kmath

D = torch.float64


def _pts(n=6, d=3, scale=0.15, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D) * scale


@pytest.mark.parametrize("k", [-2.0, -0.7, 0.4, 1.5])
def test_matches_geoopt_away_from_zero(k):
    x, y, v = _pts(seed=1), _pts(seed=2), _pts(seed=3)
    kt = torch.tensor(k, dtype=D)
    torch.testing.assert_close(kmath.mobius_add(x, y, kt), gm.mobius_add(x, y, k=kt))
    torch.testing.assert_close(kmath.expmap(x, v, kt), gm.expmap(x, v, k=kt))
    torch.testing.assert_close(kmath.logmap(x, y, kt), gm.logmap(x, y, k=kt))
    torch.testing.assert_close(kmath.dist(x, y, kt), gm.dist(x, y, k=kt))
    torch.testing.assert_close(kmath.expmap0(v, kt), gm.expmap0(v, k=kt))
    torch.testing.assert_close(kmath.logmap0(y, kt), gm.logmap0(y, k=kt))
    torch.testing.assert_close(kmath.parallel_transport(x, y, v, kt), gm.parallel_transport(x, y, v, k=kt))
    torch.testing.assert_close(kmath.gyration(x, y, v, kt), gm.gyration(x, y, v, k=kt))


@pytest.mark.parametrize("k", [-1.3, -1e-4, 0.0, 1e-4, 0.9])
def test_identities(k):
    x, y, v = _pts(seed=4), _pts(seed=5), _pts(seed=6)
    kt = torch.tensor(k, dtype=D)
    torch.testing.assert_close(kmath.expmap(x, kmath.logmap(x, y, kt), kt), y)
    torch.testing.assert_close(kmath.norm(x, kmath.logmap(x, y, kt), kt), kmath.dist(x, y, kt))
    # parallel transport is an isometry between tangent spaces
    u = _pts(seed=7)
    pu, pv = kmath.parallel_transport(x, y, u, kt), kmath.parallel_transport(x, y, v, kt)
    torch.testing.assert_close(kmath.inner(y, pu, pv, kt), kmath.inner(x, u, v, kt))
    # triangle inequality with the origin
    z0 = torch.zeros_like(x)
    assert (kmath.dist(x, y, kt) <= kmath.dist(x, z0, kt) + kmath.dist0(y, kt) + 1e-12).all()


def test_flat_limit_is_euclidean():
    x, y, v = _pts(seed=8), _pts(seed=9), _pts(seed=10)
    k0 = torch.tensor(0.0, dtype=D)
    torch.testing.assert_close(kmath.expmap(x, v, k0), x + v)
    torch.testing.assert_close(kmath.logmap(x, y, k0), y - x)
    torch.testing.assert_close(kmath.dist(x, y, k0), 2 * (y - x).norm(dim=-1))
    for eps in (1e-7, 1e-5, 1e-3):
        for s in (-1, 1):
            ks = torch.tensor(s * eps, dtype=D)
            err = (kmath.dist(x, y, ks) - kmath.dist(x, y, k0)).abs().max()
            assert err < 50 * eps, (s, eps, err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_through_zero(dtype):
    x, y, v = (_pts(seed=s).to(dtype) for s in (11, 12, 13))
    for k0 in (0.0, 1e-9, -1e-9, 1e-3, -1e-3, 0.5, -0.5):
        k = torch.tensor(k0, dtype=dtype, requires_grad=True)
        xx = x.clone().requires_grad_()
        out = (
            kmath.dist(xx, y, k).sum()
            + kmath.expmap(xx, v, k).sum()
            + kmath.logmap(xx, y, k).sum()
            + kmath.parallel_transport(xx, y, v, k).sum()
            + kmath.log_sin_k_ratio(kmath.dist(xx, y, k), k).sum()
            + kmath.project(kmath.expmap0(v, k), k).sum()
        )
        gk, gx = torch.autograd.grad(out, (k, xx))
        assert torch.isfinite(out) and torch.isfinite(gk) and torch.isfinite(gx).all(), k0


def test_gradcheck_in_curvature_across_zero():
    x, y, v = _pts(n=2, seed=14), _pts(n=2, seed=15), _pts(n=2, seed=16)
    for k0 in (0.0, 2e-3, -2e-3, 0.3, -0.3):
        k = torch.tensor(k0, dtype=D, requires_grad=True)
        assert torch.autograd.gradcheck(lambda k: kmath.dist(x, kmath.expmap(y, v, k), k), (k,))
        assert torch.autograd.gradcheck(lambda k: kmath.log_sin_k_ratio(torch.tensor([0.3, 2.0], dtype=D), k), (k,))


def test_log_sin_k_ratio_large_negative_curvature():
    r = torch.tensor([1e-3, 0.5, 3.0, 50.0, 400.0], dtype=D)
    k = torch.tensor(-1.0, dtype=D)
    ref = torch.log(torch.sinh(r.clamp(max=300)) / r.clamp(max=300))
    out = kmath.log_sin_k_ratio(r, k)
    torch.testing.assert_close(out[:4], ref[:4])
    assert torch.isfinite(out).all() and out[4] > 390  # log sinh(400) / 400 ≈ 400 - log 2 - log 400


def test_batched_curvature_broadcasts():
    x, y = _pts(n=4, seed=17), _pts(n=4, seed=18)
    ks = torch.tensor([[-1.0], [0.0], [0.5], [-0.2]], dtype=D)
    out = kmath.dist(x, y, ks)
    ref = torch.stack([kmath.dist(x[i], y[i], ks[i, 0]) for i in range(4)])
    torch.testing.assert_close(out, ref)
    assert out.shape == (4,)


def test_distance_gradients_stay_finite_at_near_antipodal_points_float32():
    """κ > 0: 1 + 2κ<x,y> + κ²|x|²|y|² cancels to 0 near the antipode y = -x/(κ|x|²) in float32, and
    the masked-out Taylor branch of near pairs overflowed: NaN gradients in a κ-stereographic VAE
    with learned curvature (calibration seed 6).  Values stay π/√κ and gradients finite."""
    k = torch.tensor(1.0, requires_grad=True)
    x = torch.tensor([[0.5, 0.0], [0.5, 0.0], [0.3, 0.2]], requires_grad=True)
    y = torch.tensor([[-2.0, 1e-4], [-2.0, 0.0], [0.3, 0.2001]], requires_grad=True)
    d = kmath.dist(x, y, k)
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d[:2], torch.full((2,), math.pi), atol=2e-3, rtol=0)
    gx, gy, gk = torch.autograd.grad(d.sum(), (x, y, k))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all() and torch.isfinite(gk).all()
