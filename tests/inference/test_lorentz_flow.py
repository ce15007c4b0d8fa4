"""The HMC geometry of the Lorentz model far from the origin (issue 11, defect 13, Lorentz part).

Old behaviour: the flow took its speed from ⟨v, v⟩_L = |v_s|² - v_0² (both ~ e^{2ρ}) and moved
with cosh(st) x + sinh(st)/s v, the projection added ⟨x, v⟩_L x / k: far from the origin the
speed, the point and the velocity were garbage, so chains escaped to infinity.  Points and
velocities here lie along a coordinate axis, where float coordinates resolve them exactly;
references are mpmath evaluations from the float coordinates (tests/lorentz_reference.py).
"""

import math

import pytest
import torch

from dlmppl import manifolds
from dlmppl.distributions import RiemannianNormal, WrappedNormal
from dlmppl.inference.integrators import geometry_of, riemannian_leapfrog
from tests import lorentz_reference as ref

D, F = torch.float64, torch.float32
# unit frame velocities: inward / outward radial, perpendicular, oblique
DIRS = [(-1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.6, -0.8), (-0.6, 0.0, 0.8), (0.48, -0.6, 0.64)]


def _frame(x, v, radius):
    return torch.tensor(ref.frame_from_ambient(x, v, 1.0, ref.digits(radius + 12)), dtype=D)


@pytest.mark.parametrize("radius", [20.0, 30.0, 40.0])
@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_flow_far_out_is_exact_reversible_and_keeps_the_speed(radius, t):
    """float64, steps up to 5 at radius 20-40: endpoint = exp_x(t v), |v| kept, flow(z, -v', t) = (x, -v)."""
    g = geometry_of(manifolds.Lorentz())
    x = ref.axis_point(radius, 3, D)
    dps = ref.digits(radius + t + 2)
    for w in DIRS:
        wt = torch.tensor(w, dtype=D)
        v = ref.frame_to_ambient(x, wt, 1.0, D, dps)
        z, u = g.flow(x, v, t)
        assert abs(ref.dist(x, z, 1.0, dps) - t) <= 1e-13 * t, (w, z)
        zs = ref.exp_frame(x, t * wt, 1.0, dps)
        for got, want in zip(z[1:].tolist(), zs, strict=True):
            assert abs(got - float(want)) <= 1e-14 * abs(float(want)) + 1e-300, (w, z, zs)
        assert abs(float(_frame(z, u, radius + t).norm()) - 1.0) <= 1e-13, (w, u)
        assert abs(float(g.kinetic(z, u)) - 0.5) <= 1e-13 and abs(float(g.kinetic(x, v)) - 0.5) <= 1e-13
        x2, v2 = g.flow(z, -u, t)
        # the representation of z has relative error eps; geodesics diverge like e^{t}
        tol = 50 * torch.finfo(D).eps * math.exp(2 * t)
        assert ref.dist(x, x2, 1.0, dps) <= tol, (w, x2)
        assert (_frame(x, v2, radius) + wt).norm() <= tol, (w, v2)


@pytest.mark.parametrize("radius", [8.0, 20.0, 40.0])
def test_flow_far_out_in_float32(radius):
    g = geometry_of(manifolds.Lorentz())
    x = ref.axis_point(radius, 3, F)
    eps = torch.finfo(F).eps
    for w in DIRS:
        wt = torch.tensor(w, dtype=D)
        v = ref.frame_to_ambient(x, wt, 1.0, F, ref.digits(radius + 3))
        z, u = g.flow(x, v, 1.0)
        assert z.dtype == F and torch.isfinite(z).all() and torch.isfinite(u).all()
        assert abs(ref.dist(x, z, 1.0, ref.digits(radius + 3)) - 1.0) <= 16 * eps
        assert abs(float(g.kinetic(z, u)) - 0.5) <= 16 * eps
        x2, v2 = g.flow(z, -u, 1.0)
        assert ref.dist(x, x2, 1.0, ref.digits(radius + 3)) <= 64 * eps
        assert (_frame(x, v2, radius) + wt).norm() <= 64 * eps


@pytest.mark.parametrize("radius", [10.0, 20.0, 40.0])
def test_projection_is_the_identity_on_tangent_vectors_far_out(radius):
    """The round-off clean-up after each step must not move a tangent vector (old: ⟨x, v⟩_L x / k, ~ e^{3ρ} eps)."""
    g = geometry_of(manifolds.Lorentz())
    u = torch.tensor([0.6, -0.48, 0.64], dtype=D)  # a generic direction: x_s has no zero coordinate
    x = ref.point_from_spatial((math.sinh(radius) * u).tolist(), D)
    for w in DIRS:
        wt = torch.tensor(w, dtype=D)
        v = ref.frame_to_ambient(x, wt, 1.0, D, ref.digits(radius + 2))
        x2, v2 = g.project(x, v)
        assert torch.equal(x2[1:], x[1:])
        assert (_frame(x2, v2, radius) - _frame(x, v, radius)).norm() <= 4 * torch.finfo(D).eps


@pytest.mark.parametrize("radius", [20.0, 30.0])
def test_riemannian_gradient_far_out(radius):
    """rgrad of U = d(loc, z)²/(2σ²) + const (a RiemannianNormal) is -log_z(loc)/σ²."""
    loc = ref.axis_point(radius, 2, D, axis=1)
    z = ref.point_from_spatial(ref.exp_frame(loc, torch.tensor([0.6, -0.9], dtype=D), 1.0, ref.digits(radius + 2)), D)
    g = geometry_of(manifolds.Lorentz())
    zz = z.clone().requires_grad_(True)
    U = -RiemannianNormal(manifolds.Lorentz(), loc, torch.tensor(0.5, dtype=D)).log_prob(zz)
    (egrad,) = torch.autograd.grad(U, zz)
    got = _frame(z, g.rgrad(z, egrad), radius + 1)
    want = -torch.tensor(ref.log_frame(z, loc, 1.0, ref.digits(radius + 2)), dtype=D) / 0.25
    assert (got - want).norm() <= 1e-12 * want.norm()


def test_momentum_is_standard_normal_in_the_frame_far_out():
    g = geometry_of(manifolds.Lorentz())
    x = ref.axis_point(30.0, 3, D)
    torch.manual_seed(1)
    v = g.momentum(x.expand(4, 4))
    torch.manual_seed(1)
    xi = torch.randn(4, 3, dtype=D)
    for i in range(4):
        assert (_frame(x, v[i], 30.0) - xi[i]).norm() <= 4 * torch.finfo(D).eps * xi[i].norm()
        assert abs(float(g.kinetic(x, v[i])) - 0.5 * float(xi[i].pow(2).sum())) <= 1e-14 * float(xi[i].pow(2).sum())


@pytest.mark.parametrize("radius", [20.0, 30.0])
def test_leapfrog_far_out_conserves_energy_and_is_reversible(radius):
    """Geodesic leapfrog on a wrapped normal centred at radius 20-30: |ΔH| is O(ε²), and it runs back."""
    loc = ref.axis_point(radius, 2, D, axis=0)
    dist = WrappedNormal(manifolds.Lorentz(), loc, torch.tensor(0.5, dtype=D))
    g = geometry_of(manifolds.Lorentz())

    def potential(z):
        return -dist.log_prob(z["z"])

    z0 = ref.point_from_spatial(ref.exp_frame(loc, torch.tensor([0.3, -0.4], dtype=D), 1.0, ref.digits(radius + 2)), D)
    torch.manual_seed(2)
    r0 = g.momentum(z0)

    def energy(z, r):
        return float(potential(z)) + float(g.kinetic(z["z"], r["z"]))

    state = ({"z": z0}, {"z": r0})
    h0 = energy(*state)
    for step in (0.05, 0.25):
        z1, r1, _, _ = riemannian_leapfrog(state[0], state[1], potential, lambda r: {}, {"z": g}, step, 10)
        assert abs(energy(z1, r1) - h0) <= 2 * step**2, (step, energy(z1, r1), h0)
        z2, r2, _, _ = riemannian_leapfrog(z1, {"z": -r1["z"]}, potential, lambda r: {}, {"z": g}, step, 10)
        assert ref.dist(z0, z2["z"], 1.0, ref.digits(radius + 3)) <= 1e-9
        assert (_frame(z0, r2["z"], radius) + _frame(z0, r0, radius)).norm() <= 1e-9
