"""The Stiefel logarithm (damped Gauss–Newton): float32, empty batches, and no silent non-logarithm (issue 11)."""

import math

import pytest
import torch

from dlmppl import geometry, manifolds


def _pair(seed, length, M, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.linalg.qr(torch.randn(3, 2, generator=g, dtype=torch.float64))[0]
    v = geometry.tangent_project(M, x, torch.randn(3, 2, generator=g, dtype=torch.float64))
    v = length * v / geometry.norm(M, x, v)
    return x.to(dtype), v, geometry.expmap(M, x, v).to(dtype)


@pytest.mark.parametrize("M", [manifolds.Stiefel(), manifolds.EuclideanStiefel()], ids=["canonical", "embedded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logmap_recovers_the_tangent_vector(M, dtype):
    # float32 used to give NaN for one in a few of these (a singular float32 normal-equation solve)
    for s in range(8):
        x, v, y = _pair(s, 0.99, M, dtype)
        w = geometry.logmap(M, x, y)
        assert w.dtype == dtype and torch.isfinite(w).all()
        tol = 2e-3 if dtype == torch.float32 else 1e-8
        assert float((w.double() - v).abs().max()) < tol
        assert abs(float(geometry.distance(M, x, y)) - 0.99) < tol


def test_empty_batch():
    M = manifolds.Stiefel()
    x = torch.zeros(0, 3, 2)
    assert geometry.logmap(M, x, x).shape == (0, 3, 2)
    assert geometry.distance(M, x, x).shape == (0,)


def test_beyond_the_injectivity_radius_raises_naming_y():
    M = manifolds.Stiefel()
    x, _, _ = _pair(0, 0.1, M, torch.float64)
    # -x is as far as a point gets on V_{3,2}; the iteration cannot reach it from the projection of y - x = -2x (= 0)
    with pytest.raises(ValueError, match="y: the Stiefel logarithm did not converge"):
        geometry.logmap(M, x, -x, stiefel_max_iter=20)
    assert math.isfinite(float(geometry.distance(M, x, geometry.expmap(M, x, torch.zeros_like(x)))))
