"""Geodesic steering: closed form with per-condition curvature, pull-back metrics, centroids."""

import pytest
import torch

import dlmppl.manifolds as M
from dlmppl import geometry as geo

DT = torch.float64
R = 2.0


def inv_stereo(z):
    n2 = z.pow(2).sum(-1, keepdim=True)
    return R * torch.cat((2 * z, n2 - 1), -1) / (n2 + 1)


def test_steer_closed_form_with_condition_curvature():
    # a dynamic-curvature model: one κ per condition; steering under condition c uses κ_c
    kappas = torch.tensor([-1.0, 0.0, 0.8], dtype=DT)
    z = 0.3 * torch.randn(4, 2, dtype=DT)
    target = torch.tensor([0.2, -0.3], dtype=DT)
    t = torch.linspace(0, 1, 5, dtype=DT)
    cond = torch.tensor([0, 1, 2, 0])
    path = geo.steer(z, target, t, manifold=lambda c: M.Stereographic(kappas[c].unsqueeze(-1)), condition=cond)
    assert path.shape == (5, 4, 2)
    torch.testing.assert_close(path[0], z)
    torch.testing.assert_close(path[-1], target.expand_as(z))
    for i, c in enumerate(cond.tolist()):
        ref = geo.geodesic(M.Stereographic(kappas[c]), z[i], target, t)
        torch.testing.assert_close(path[:, i], ref)
    # κ = 0: a straight line; κ ≠ 0: not
    lin = z[1] + t[:, None] * (target - z[1])
    torch.testing.assert_close(path[:, 1], lin)
    assert float((path[:, 0] - (z[0] + t[:, None] * (target - z[0]))).abs().max()) > 1e-3
    # scalar t: the points' shape
    assert geo.steer(z, target, 0.5).shape == z.shape


def test_steer_pullback_follows_great_circle_at_constant_speed():
    metric = geo.PullbackMetric(inv_stereo)
    z = torch.tensor([[0.8, 0.1], [-0.5, 0.7]], dtype=DT)
    target = torch.tensor([0.0, -0.8], dtype=DT)
    t = torch.linspace(0, 1, 6, dtype=DT)
    path = geo.steer(z, target, t, metric=metric, n_points=20)
    assert path.shape == (6, 2, 2)
    torch.testing.assert_close(path[0], z)
    torch.testing.assert_close(path[-1], target.expand_as(z))
    x = inv_stereo(path) / R
    ref = geo.geodesic(M.Sphere(), x[0], x[-1], t)
    # points at fractions of the arc length: on the great circle at the right places (1% of the radius)
    assert float((x - ref).norm(dim=-1).max()) < 0.01


def test_steer_toward_class_centroid_and_metric_factory():
    P = M.PoincareBall(1.0)
    codes = 0.3 * torch.randn(12, 2, dtype=DT)
    labels = torch.arange(12) % 3
    centroid = geo.class_centroid(codes, labels, 1, manifold=P)
    torch.testing.assert_close(centroid, geo.frechet_mean(codes[labels == 1], P))
    z = codes[labels == 0]
    # the metric of the condition from a factory: the Poincaré conformal metric of curvature c
    path = geo.steer(z, centroid, torch.tensor([0.0, 0.5, 1.0], dtype=DT), metric=lambda c: geo.ConformalMetric(c), condition=-1.0)
    ref = geo.geodesic(P, z, centroid, torch.tensor([0.0, 0.5, 1.0], dtype=DT))
    assert float((path - ref).abs().max()) < 5e-3
    with pytest.raises(ValueError, match="no code has label"):
        geo.class_centroid(codes, labels, 7)
    with pytest.raises(ValueError, match="metric"):
        geo.steer(z, centroid, 0.5, metric=3.0)
