"""The transport cost on the hyperboloid far from the origin (issue 11, defect 1): the Minkowski chord cancels
there; the cost must be the geodesic distance, with a zero gradient at coincident points."""

import math

import torch

from dlmppl import geometry, losses, manifolds


def _pt(r, th):
    return torch.tensor([math.cosh(r), math.sinh(r) * math.cos(th), math.sinh(r) * math.sin(th)], dtype=torch.float64)


def test_pairwise_distance_far_from_the_origin():
    M = manifolds.Lorentz(1.0)
    x = torch.stack([_pt(20.0, 0.0), _pt(25.0, 0.0)])
    y = torch.stack([_pt(21.0, 0.0), _pt(24.0, 0.0)])
    D = losses.ot.manifold_distances(x, y, M)
    torch.testing.assert_close(D, torch.tensor([[1.0, 4.0], [4.0, 1.0]], dtype=torch.float64), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(D[0, 0], geometry.distance(M, x[0], y[0]))


def test_coincident_points_cost_zero_with_zero_gradient():
    M = manifolds.Lorentz(1.0)
    z = torch.stack([_pt(1.0, 0.3), _pt(2.0, 0.1)]).requires_grad_()
    D = losses.ot.manifold_distances(z, z.detach(), M)
    assert float(D[0, 0]) == 0.0 and float(D[1, 1]) == 0.0
    D.diagonal().sum().backward()
    assert float(z.grad.abs().max()) == 0.0
