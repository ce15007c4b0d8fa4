"""The flat torus T^n (issue 13): maps at the wrap, dtypes, empty batches, the Fréchet mean
across ±π, and geoopt's RiemannianAdam on a torus parameter."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from dlmppl import constraints, geometry
from dlmppl.geometry import geometry_of
from dlmppl.geometry.torus import Torus, wrap_angle

PI = math.pi
T = Torus()
G = geometry_of(T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wrap_is_canonical_and_exp_log_dist_cross_the_wrap(dtype):
    a = torch.tensor([PI, -PI, 3 * PI, -3 * PI, 0.0, 2 * PI, -1e-30, 7.0], dtype=dtype)
    w = wrap_angle(a)
    assert bool(((w > -PI) & (w <= PI + 1e-6)).all())
    torch.testing.assert_close(w[:4], torch.full((4,), PI, dtype=dtype))  # π ≡ -π is written π
    torch.testing.assert_close(torch.cos(w), torch.cos(a), atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)

    x = torch.tensor([[PI - 0.1, 0.2], [-PI + 0.05, PI]], dtype=dtype)
    y = torch.tensor([[-PI + 0.1, 0.5], [PI - 0.05, -PI + 0.3]], dtype=dtype)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
    v = G.log(x, y)
    torch.testing.assert_close(v, torch.tensor([[0.2, 0.3], [-0.1, 0.3]], dtype=dtype), **tol)  # the short way
    torch.testing.assert_close(G.exp(x, v), wrap_angle(y), **tol)
    torch.testing.assert_close(G.dist(x, y), torch.tensor([math.hypot(0.2, 0.3), math.hypot(0.1, 0.3)], dtype=dtype), **tol)
    torch.testing.assert_close(geometry.distance(T, x, y), G.dist(x, y))
    mid = G.geodesic(x[:1], y[:1], 0.5)  # through ±π, not through 0
    assert abs(abs(float(mid[0, 0])) - PI) < 1e-5
    assert G.exp(x, v).dtype == dtype and G.dist(x, y).dtype == dtype
    # a tie (antipodal coordinate) gives +π, and d = π
    xt, yt = torch.zeros(1, 1, dtype=dtype), torch.full((1, 1), PI, dtype=dtype)
    assert float(G.log(xt, yt)) == pytest.approx(PI) and float(G.dist(xt, yt)) == pytest.approx(PI)


def test_violation_bounds_and_validation():
    x = torch.tensor([[PI, -PI], [0.0, 3.5], [float("nan"), 0.0], [float("inf"), 0.0]], dtype=torch.float64)
    v = G.violation(x)
    assert v[0] == 0 and abs(float(v[1]) - (3.5 - PI)) < 1e-12 and math.isinf(v[2]) and math.isinf(v[3])
    ok = constraints.manifold(T).check(x)
    assert ok.tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match=r"x: 1 point\(s\) not on Torus"):
        geometry.distance(T, x[1:2], x[:1])
    with pytest.raises(ValueError, match="n: Torus"):
        Torus(0)
    with pytest.raises(ValueError, match="event_shape"):
        geometry_of(Torus(3)).log_volume((2,))
    assert geometry_of(Torus(3)).log_volume((3,)) == pytest.approx(3 * math.log(2 * PI))
    assert G.flat and G.compact and not G.linear


def test_empty_batches_and_shapes():
    for shape in [(0, 3), (2, 0, 3)]:
        x = torch.zeros(shape)
        assert G.exp(x, x).shape == shape and G.log(x, x).shape == shape
        assert G.dist(x, x).shape == shape[:-1] and G.violation(x).shape == shape[:-1]
        assert G.frame(x).shape == shape[:-1] + (3, 3)
        assert G.random_uniform(shape).shape == shape
        xf, vf = G.flow(x, x, 0.3)
        assert xf.shape == shape and vf.shape == shape


def test_flow_is_exact_and_reversible_across_the_wrap():
    x = torch.tensor([[PI - 0.05, -PI + 0.02]], dtype=torch.float64)
    v = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    x1, v1 = G.flow(x, v, 0.3)
    torch.testing.assert_close(x1, torch.tensor([[-PI + 0.25, PI - 0.58]], dtype=torch.float64))
    torch.testing.assert_close(v1, v)
    x0, _ = G.flow(x1, -v1, 0.3)
    torch.testing.assert_close(x0, x)
    assert G.max_step(x) == pytest.approx(PI / math.sqrt(2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frechet_mean_and_spread_handle_the_wrap(dtype):
    torch.manual_seed(0)
    centre = torch.tensor([PI - 0.1, -PI + 0.2, 0.5], dtype=dtype)
    pts = wrap_angle(centre + 0.3 * torch.randn(400, 3, dtype=dtype))
    m = geometry.frechet_mean(pts, T)
    # the flat Karcher mean is the circular unwrapped average of the draws about any nearby point
    ref = centre + wrap_angle(pts - centre).mean(0)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert float(G.dist(m, wrap_angle(ref))) < tol
    assert bool(G.violation(m) == 0)
    assert float(pts.mean(0)[0]).__abs__() < 2.0  # the ambient average is far off: it is not used
    s = G.spread(pts) / 3
    assert 0.06 < float(s) < 0.12  # ≈ 0.3², where the ambient variance of coordinate 0 is ≈ π²


def test_riemannian_adam_moves_a_torus_parameter_across_the_wrap():
    target = torch.tensor([-PI + 0.1, 0.3], dtype=torch.float64)
    p = geoopt.ManifoldParameter(torch.tensor([PI - 0.2, 0.0], dtype=torch.float64), manifold=T)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        loss = -torch.cos(p - target).sum()  # minimised at the target, reached the short way through ±π
        loss.backward()
        opt.step()
        assert bool(G.violation(p.detach()) == 0)
    assert float(G.dist(p.detach(), target)) < 1e-3
    assert p.manifold.check_point_on_manifold(p.detach())
