"""SO(3) geometry (issue 13): Rodrigues exp/log at angles near 0 and π, the distance, the
volume, the exact flow, geoopt's optimisers, Fréchet means and empty batches."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from dlmppl.geometry import geometry_of
from dlmppl.geometry.so3 import (
    SO3,
    SO3Geometry,
    hat,
    matrix_to_quaternion,
    quaternion_to_matrix,
    so3_exp,
    so3_log,
)

M = SO3()
G = geometry_of(M)
ANGLES = [0.0, 1e-12, 1e-7, 1e-3, 0.5, 2.0, math.pi / 2, 3.0, math.pi - 1e-3, math.pi - 1e-7, math.pi]


def _axes(n, dtype):
    a = torch.randn(n, 3, dtype=torch.float64)
    return (a / a.norm(dim=-1, keepdim=True)).to(dtype)


def test_registered():
    assert isinstance(G, SO3Geometry)
    assert G.compact and G.intrinsic_dim((3, 3)) == 3
    assert abs(G.log_volume((3, 3)) - math.log(8 * math.pi**2)) < 1e-15
    with pytest.raises(ValueError, match="event_shape"):
        G.log_volume((4, 4))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
@pytest.mark.parametrize("theta", ANGLES)
def test_exp_log_round_trip_and_distance_near_zero_and_pi(theta, dtype, tol):
    n = _axes(8, dtype)
    x = G.random_uniform((8, 3, 3), dtype=torch.float64).to(dtype)
    w = theta * n
    y = x @ so3_exp(w)
    assert float(G.violation(y).max()) < 10 * torch.finfo(dtype).eps
    v = G.log(x, y)
    wl = so3_log(x.transpose(-1, -2) @ y)
    err = (wl - w).norm(dim=-1)
    if theta > math.pi - 1e-6:  # both ±π n are logarithms at π (and within rounding of it)
        err = torch.minimum(err, (wl + w).norm(dim=-1))
    assert float(err.max()) <= tol * max(1.0, theta) + 4 * torch.finfo(dtype).eps
    torch.testing.assert_close(G.exp(x, v), y, atol=10 * tol, rtol=0)
    # about eps absolute (the product xᵀy of a random x carries eps of rounding; at x = I the
    # distance is relative accurate, test below)
    d = G.dist(x, y)
    assert float((d - theta).abs().max()) <= tol * theta + 16 * torch.finfo(dtype).eps
    torch.testing.assert_close(G.norm(x, v), d, atol=10 * tol, rtol=tol)


def test_small_angle_distance_is_relative_accurate_in_float32():
    theta = 1e-6
    x = torch.eye(3)
    y = so3_exp(torch.tensor([0.0, 0.0, theta]))
    assert abs(float(G.dist(x, y)) / theta - 1) < 1e-5
    # arccos((tr - 1)/2) would give 0 or 3e-4 here


def test_log_at_pi_uses_the_symmetric_part_and_gradients_stay_finite():
    w = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    w = (math.pi - 1e-9) * w / w.norm()
    r = so3_exp(w).requires_grad_()
    out = so3_log(r)
    torch.testing.assert_close(out, w, atol=1e-12, rtol=0)
    out.sum().backward()
    assert torch.isfinite(r.grad).all()
    for theta in (0.0, 1e-9, math.pi):  # distance gradients at coincident and antipodal rotations
        x = torch.eye(3, dtype=torch.float64, requires_grad=True)
        y = so3_exp(torch.tensor([0.0, theta, 0.0], dtype=torch.float64))
        G.dist(x, y).backward()
        assert torch.isfinite(x.grad).all()


def test_gradcheck_exp_log_dist():
    w = torch.tensor([[0.3, -1.2, 0.4], [1e-3, 2e-3, -1e-3], [2.0, 1.0, 1.5]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(so3_exp, (w,))
    r = so3_exp(w.detach())

    def log_of(a):  # through the tangent-space parametrisation, so the input stays a rotation
        return so3_log(r @ so3_exp(a))

    a = (1e-2 * torch.randn(3, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(log_of, (a,))
    assert torch.autograd.gradcheck(lambda b: G.dist(r, r[[1, 2, 0]] @ so3_exp(b)), (a,))


def test_quaternions_round_trip_and_hat_is_the_cross_product():
    q = torch.randn(50, 4, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = q * torch.sign(q[:, :1])
    torch.testing.assert_close(matrix_to_quaternion(quaternion_to_matrix(q)), q, atol=1e-12, rtol=0)
    a, b = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close((hat(a) @ b.unsqueeze(-1)).squeeze(-1), torch.linalg.cross(a, b))


def test_frame_tangent_proju_egrad_and_reflections():
    x = G.random_uniform((5, 3, 3), dtype=torch.float64)
    f = G.frame(x)
    assert f.shape == (5, 3, 3, 3)
    gram = G.inner(x.unsqueeze(1).unsqueeze(1), f.unsqueeze(2), f.unsqueeze(1))
    torch.testing.assert_close(gram, torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
    # Riemannian gradient: g(rgrad, u) = <egrad, u>_F for every tangent u
    e = torch.randn(5, 3, 3, dtype=torch.float64)
    u = G.random_tangent(x)
    torch.testing.assert_close(G.inner(x, G.egrad2rgrad(x, e), u), (e * u).sum((-1, -2)))
    refl = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert float(G.violation(refl)) == pytest.approx(2.0)
    p = M.projx(refl + 0.01 * torch.randn(3, 3, dtype=torch.float64))
    assert float(G.violation(p)) < 1e-14  # the nearest *rotation* (det fixed), not the reflection


def test_volume_matches_the_angle_density_of_haar_draws():
    # the volume element in exponential coordinates (2 - 2cos θ)/θ² integrates to 8π² over the ball
    x = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    f = 4 * math.pi * (2 - 2 * torch.cos(x))
    assert abs(float(torch.trapezoid(f, x)) - 8 * math.pi**2) < 1e-6


def test_flow_is_exact_reversible_and_keeps_speed():
    h = G.for_hmc()
    x = G.random_uniform((6, 3, 3), dtype=torch.float64)
    v = 3.0 * h.random_tangent(x)
    x1, v1 = h.flow(x, v, 0.7)
    torch.testing.assert_close(x1, G.exp(x, 0.7 * v))
    torch.testing.assert_close(G.inner(x1, v1), G.inner(x, v))
    x2, v2 = h.flow(x1, -v1, 0.7)
    torch.testing.assert_close(x2, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(v2, -v, atol=1e-12, rtol=0)
    # closes after 2π at unit speed
    u = x @ hat(_axes(6, torch.float64))
    torch.testing.assert_close(h.flow(x, u, 2 * math.pi)[0], x, atol=1e-12, rtol=0)
    assert h.max_step(x) == pytest.approx(math.pi / math.sqrt(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_batches(dtype):
    x = torch.empty(0, 3, 3, dtype=dtype)
    assert G.exp(x, x).shape == (0, 3, 3) and G.log(x, x).shape == (0, 3, 3)
    assert G.dist(x, x).shape == (0,) and G.violation(x).shape == (0,)
    assert G.frame(x).shape == (0, 3, 3, 3) and G.random_tangent(x).shape == (0, 3, 3)
    assert G.flow(x, x, 0.1)[0].shape == (0, 3, 3)
    assert G.random_uniform((0, 3, 3), dtype=dtype).shape == (0, 3, 3)
    assert M.projx(x).shape == (0, 3, 3)


def test_frechet_mean_of_a_symmetric_cloud_is_its_centre():
    c = G.random_uniform((3, 3), dtype=torch.float64)
    w = 0.6 * torch.randn(20, 3, dtype=torch.float64)
    pts = torch.cat([c @ so3_exp(w), c @ so3_exp(-w)])
    m = G.frechet_mean(pts)
    assert float(G.dist(m, c)) < 1e-8


def test_geoopt_riemannian_adam_minimises_a_distance_on_so3():
    target = G.random_uniform((3, 3), dtype=torch.float64)
    p = geoopt.ManifoldParameter(torch.eye(3, dtype=torch.float64), manifold=M)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = (p - target).pow(2).sum()  # chordal: its minimiser is the target
        loss.backward()
        opt.step()
    assert float(G.violation(p.detach())) < 1e-12
    assert float(G.dist(p.detach(), target)) < 1e-3
    torch.testing.assert_close(M.transp(p, target, p @ hat(torch.ones(3, dtype=torch.float64))),
                               target @ hat(torch.ones(3, dtype=torch.float64)))
