"""RP^n (issue 13): the projective geometry is the sphere's on the nearer lift.

Distances are ``arccos |⟨x, y⟩|`` (numpy reference), symmetric in the signs of both points
and at most π/2, accurate near 0 and near the cut locus; ``log``/``exp`` invert each other up
to the sign; volumes are half the sphere's; the Fréchet mean and the HMC spread ignore the signs
of the points; the dispatch picks the projective geometry for the geoopt.Sphere subclass.
"""

from __future__ import annotations

import math

import geoopt
import numpy as np
import pytest
import torch

from dlmppl import geometry, losses
from dlmppl.geometry import geometry_of
from dlmppl.geometry.projective import ProjectiveGeometry, ProjectiveSpace
from dlmppl.geometry.sphere import SphereGeometry

D = torch.float64
P = ProjectiveSpace()
G = geometry_of(P)


def _unit(shape, dtype=D):
    z = torch.randn(shape, dtype=dtype)
    return z / z.norm(dim=-1, keepdim=True)


def _signs(shape, dtype=D):
    return torch.where(torch.rand(shape, dtype=dtype) < 0.5, -1.0, 1.0).to(dtype).unsqueeze(-1)


def test_dispatch_picks_the_projective_geometry_and_leaves_the_sphere_alone():
    assert isinstance(G, ProjectiveGeometry)
    assert type(geometry_of(geoopt.Sphere())) is SphereGeometry
    assert isinstance(P, geoopt.Sphere)  # geoopt's optimisers see a sphere


@pytest.mark.parametrize("n1", [2, 3, 6])
def test_distance_is_arccos_of_the_absolute_product_and_sign_symmetric(n1):
    x, y = _unit((200, n1)), _unit((200, n1))
    ref = np.arccos(np.clip(np.abs((x.numpy() * y.numpy()).sum(-1)), 0, 1))
    d = G.dist(x, y)
    np.testing.assert_allclose(d.numpy(), ref, rtol=1e-10, atol=1e-12)
    for sx, sy in [(1, -1), (-1, 1), (-1, -1)]:
        torch.testing.assert_close(G.dist(sx * x, sy * y), d, rtol=0, atol=1e-14)
    torch.testing.assert_close(G.dist(y, x), d, rtol=0, atol=1e-14)
    assert float(d.max()) <= math.pi / 2
    torch.testing.assert_close(P.dist(x, -y), d)  # the geoopt class agrees
    torch.testing.assert_close(geometry.distance(P, x, -y), d)


def test_distance_is_accurate_near_zero_and_near_the_cut_locus():
    x = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    for t in [1e-12, 1e-7, 1e-3]:
        for s in [1, -1]:
            y = s * torch.tensor([math.cos(t), math.sin(t), 0.0], dtype=D)
            assert abs(float(G.dist(x, y)) - t) <= 1e-15 + 1e-12 * t
            z = s * torch.tensor([math.cos(math.pi / 2 - t), math.sin(math.pi / 2 - t), 0.0], dtype=D)
            assert abs(float(G.dist(x, z)) - (math.pi / 2 - t)) <= 1e-14


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_exp_round_trip_up_to_the_sign(dtype):
    x, y = _unit((300, 3), dtype), _unit((300, 3), dtype)
    y = y[G.dist(x, y) < 1.5]  # away from the cut locus, where log is discontinuous
    x = x[: y.shape[0]]
    y = y * _signs(y.shape[:-1], dtype)
    v = G.log(x, y)
    assert v.dtype == dtype
    torch.testing.assert_close(G.log(x, -y), v)
    torch.testing.assert_close(G.proju(x, v), v, rtol=0, atol=10 * torch.finfo(dtype).eps)
    torch.testing.assert_close(G.norm(x, v), G.dist(x, y), rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=1e-6)
    back = G.exp(x, v)
    assert float(G.violation(back).max()) < 10 * torch.finfo(dtype).eps
    # exp(log y) is the lift of y nearer to x: ±y
    torch.testing.assert_close(back * (back * y).sum(-1, keepdim=True).sign(), y, rtol=0,
                               atol=1e-5 if dtype == torch.float32 else 1e-12)
    assert float(G.dist(back, y).max()) < (2e-3 if dtype == torch.float32 else 1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_batches_and_dtypes(dtype):
    e = torch.empty(0, 4, dtype=dtype)
    assert G.dist(e, e).shape == (0,)
    assert G.log(e, e).shape == (0, 4) and G.exp(e, e).shape == (0, 4)
    assert G.frame(e).shape == (0, 3, 4)
    assert G.random_uniform((0, 4), dtype).shape == (0, 4)
    x = _unit((5, 4), dtype)
    for out in [G.dist(x, x), G.log(x, -x), G.exp(x, G.random_tangent(x)), *G.flow(x, G.random_tangent(x), 0.3)]:
        assert out.dtype == dtype
    assert float(G.dist(x, -x).max()) < 1e-3  # float32: sqrt(eps)-sized at coincident points


def test_volumes_are_half_the_sphere():
    assert abs(G.log_volume((2,)) - math.log(math.pi)) < 1e-14  # RP^1: a circle of length π
    assert abs(G.log_volume((3,)) - math.log(2 * math.pi)) < 1e-14  # RP^2: half of 4π
    for n1 in range(2, 8):
        assert abs(G.log_volume((n1,)) - (geometry_of(geoopt.Sphere()).log_volume((n1,)) - math.log(2))) < 1e-13
    assert G.intrinsic_dim((5,)) == 4
    torch.testing.assert_close(G.origin((3,), D), torch.tensor([1.0, 0.0, 0.0], dtype=D))


def test_geodesics_close_after_pi():
    x = _unit((10, 3))
    v = G.random_tangent(x)
    v = v / v.norm(dim=-1, keepdim=True)
    x1, v1 = G.flow(x, v, math.pi)  # the lift reaches -x: the same point
    assert float(G.dist(x1, x).max()) < 1e-7
    torch.testing.assert_close(x1, -x, rtol=0, atol=1e-12)
    assert G.closed_geodesic_length(x) == math.pi
    x2, _ = G.flow(x, v, 1.0)
    torch.testing.assert_close(G.dist(x, x2), torch.full((10,), 1.0, dtype=D))
    x3, _ = G.flow(x, v, 2.0)
    torch.testing.assert_close(G.dist(x, x3), torch.full((10,), math.pi - 2.0, dtype=D))  # past π/2: the other lift
    assert float(G.max_step(x)) < float(geometry_of(geoopt.Sphere()).max_step(x))


def test_frechet_mean_and_spread_ignore_the_signs_of_the_points():
    mu = torch.tensor([0.0, 0.6, 0.8], dtype=D)
    pts = G.exp(mu.expand(50, 3), 0.3 * G.random_tangent(mu.expand(50, 3)))
    flipped = pts * _signs((50,))
    m_sphere = geometry_of(geoopt.Sphere()).frechet_mean(pts)  # all on one side: the sphere's mean
    m = G.frechet_mean(flipped)
    assert float(G.dist(m, m_sphere)) < 1e-8
    torch.testing.assert_close(G.spread(flipped), G.spread(pts))
    ref = float(geometry_of(geoopt.Sphere()).dist(m_sphere, pts).pow(2).mean())
    # about the principal axis, near the Fréchet mean (which minimises it)
    assert ref * (1 - 1e-12) <= float(G.spread(flipped)) < 1.02 * ref
    # the sphere's spread of the same flipped points is not small: RP^n needs its own
    assert float(geometry_of(geoopt.Sphere()).spread(flipped)) > 10 * float(G.spread(flipped))
    # batched points (N, batch, event)
    mb = G.frechet_mean(torch.stack([flipped, -flipped.flip(0)], 1))
    assert mb.shape == (2, 3) and float(G.dist(mb, m).max()) < 1e-8


def test_geoopt_optimiser_moves_a_lift_and_the_manifold_methods_agree():
    a = torch.tensor([0.0, 0.0, 1.0], dtype=D)
    x = geoopt.ManifoldParameter(torch.tensor([0.6, 0.8, 0.0], dtype=D) + 0.1 * a, manifold=P)
    with torch.no_grad():
        x.copy_(x / x.norm())
    opt = geoopt.optim.RiemannianAdam([x], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = -((x * a).sum() ** 2)  # a function of the line: maximised at ±a
        loss.backward()
        opt.step()
    assert abs(float(x.detach().norm()) - 1) < 1e-10
    assert float(G.dist(x.detach(), a)) < 1e-3
    y = _unit((4, 3))
    torch.testing.assert_close(P.logmap(y, -a.expand(4, 3)), G.log(y, a.expand(4, 3)))


def test_sliced_wasserstein_and_ot_cost_do_not_see_the_signs():
    x, y = _unit((64, 3)), _unit((64, 3))
    s = _signs((64,))
    torch.manual_seed(1)
    a = losses.wasserstein(x, y, manifold=P, method="sliced", n_projections=50)
    torch.manual_seed(1)
    b = losses.wasserstein(x * s, -y, manifold=P, method="sliced", n_projections=50)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(losses.manifold_distances(x, -y, P), losses.manifold_distances(x, y, P))
