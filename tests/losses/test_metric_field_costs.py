"""Losses with ground distances from a metric field (issue 8, point 4)."""

import pytest
import torch

import dlmppl.manifolds as M
from dlmppl.geometry import ConformalMetric
from dlmppl.losses import manifold_distances, topological, wasserstein


def _disk_points(n, seed):
    g = torch.Generator().manual_seed(seed)
    r = 0.6 * torch.rand(n, 1, generator=g, dtype=torch.float64).sqrt()
    a = 2 * torch.pi * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return torch.cat([r * a.cos(), r * a.sin()], -1)


def test_metric_field_distances_match_the_poincare_closed_form():
    x, y = _disk_points(5, 0), _disk_points(4, 1)
    field = ConformalMetric(-1.0)  # λ(z)² I with λ = 2 / (1 - ‖z‖²): the Poincaré disk
    d_field = manifold_distances(x, y, field)
    d_exact = manifold_distances(x, y, M.PoincareBall(1.0))
    assert d_field.shape == (5, 4)
    torch.testing.assert_close(d_field, d_exact, rtol=1e-2, atol=1e-3)
    # a flat metric would give a different answer: the test can tell them apart
    assert (manifold_distances(x, y, None) * 2 - d_exact).abs().max() > 0.05


def test_wasserstein_and_topological_accept_a_metric_field():
    x, y = _disk_points(6, 2), _disk_points(6, 3).requires_grad_()
    field = ConformalMetric(-1.0)
    w_field = wasserstein(x, y, manifold=field, p=2)
    w_exact = wasserstein(x, y, manifold=M.PoincareBall(1.0), p=2)
    assert w_field.item() == pytest.approx(w_exact.item(), rel=2e-2)
    (g,) = torch.autograd.grad(w_field, y)
    assert torch.isfinite(g).all() and g.abs().sum() > 0

    data = torch.randn(6, 5, dtype=torch.float64)
    t_field = topological(data, y, z_manifold=field, dims=(0, 1))
    t_exact = topological(data, y, z_manifold=M.PoincareBall(1.0), dims=(0, 1))
    assert t_field.item() == pytest.approx(t_exact.item(), rel=2e-2)
    with pytest.raises(ValueError, match="metric field"):
        wasserstein(x, y, manifold=field, method="sliced")
