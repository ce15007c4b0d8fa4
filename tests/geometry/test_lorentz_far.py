"""Lorentz model far from the origin (issue 11, defects 1 and 9): against mpmath.

A point at hyperbolic radius ρ has coordinates of size e^ρ/2; the Minkowski-product
formulas cancel from ρ ≈ 10 (float64) / ρ ≈ 4 (float32) and overflow in float32 beyond
ρ ≈ 44.  References (tests/lorentz_reference.py) are computed with mpmath from the float
coordinates themselves.  Along coordinate axes every float point is resolved exactly and
the answers must be accurate to a few eps; in a generic direction the coordinates of a
point at radius ρ resolve it only to ≈ eps·sinh ρ across the radius, and that is the
accuracy asked for there.
"""

import math

import pytest
import torch

from dlmppl import constraints, geometry, manifolds
from tests import lorentz_reference as ref

D, F = torch.float64, torch.float32
EPS = {D: torch.finfo(D).eps, F: torch.finfo(F).eps}

# (dtype, radius): float64 to 40 and beyond, float32 to 40 (issue 11: 20, 25, 40 / 8, 20, 40)
FAR = [(D, 20.0), (D, 25.0), (D, 40.0), (D, 300.0), (F, 8.0), (F, 20.0), (F, 40.0), (F, 80.0)]
# frame directions of a unit step (the distance from loc is exactly 1 before rounding)
STEPS = [(0.6, -0.8, 0.0), (-0.48, 0.6, 0.64), (-1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]


def _loc(dtype, radius, k=1.0, axis=0):
    return ref.axis_point(radius, 3, dtype, axis=axis, k=k)


def _step(loc, w, k, dtype, radius):
    """The float point at the end of the unit frame step ``w`` from ``loc`` (mpmath, rounded)."""
    zs = ref.exp_frame(loc, torch.tensor(w, dtype=D), k, ref.digits(radius + 2))
    return ref.point_from_spatial(zs, dtype, k)


@pytest.mark.parametrize("dtype,radius", FAR, ids=[f"{str(d)[6:]}-r{r:g}" for d, r in FAR])
@pytest.mark.parametrize("k", [1.0, 2.5])
def test_distance_far_from_the_origin(dtype, radius, k):
    """`geometry.distance` and `Lorentz.dist` at distance 1 from points at radius 20-300 (issue: 0.0 at 20)."""
    L = manifolds.Lorentz(k)
    loc = _loc(dtype, radius, k, axis=1)
    for w in STEPS:
        z = _step(loc, w, k, dtype, radius)
        expect = ref.dist(loc, z, k, ref.digits(radius + 2))
        for got in (geometry.distance(L, loc, z), L.dist(loc, z), L.dist(z, loc)):
            assert got.dtype == dtype
            assert abs(float(got) - expect) <= 8 * EPS[dtype] * expect, (w, float(got), expect)


@pytest.mark.parametrize("dtype,radius", [(D, 20.0), (D, 10.0), (F, 8.0), (F, 4.0)])
def test_distance_in_a_generic_direction_is_accurate_to_the_resolution_of_the_points(dtype, radius):
    """Off the axes a float point at radius ρ is resolved to ≈ eps·sinh ρ; the distance must be that accurate."""
    L = manifolds.Lorentz()
    u = torch.tensor([1.0, 0.3, -0.2], dtype=D)
    loc = ref.point_from_spatial((math.sinh(radius) * u / u.norm()).tolist(), dtype)
    for w in STEPS:
        z = _step(loc, w, 1.0, dtype, radius)
        expect = ref.dist(loc, z, 1.0, ref.digits(radius + 2))
        got = float(geometry.distance(L, loc, z))
        assert abs(got - expect) <= 4 * EPS[dtype] * math.cosh(radius) * expect, (w, got, expect)


@pytest.mark.parametrize("dtype,radius", FAR, ids=[f"{str(d)[6:]}-r{r:g}" for d, r in FAR])
def test_expmap_and_logmap_far_from_the_origin(dtype, radius):
    """`geometry.expmap` / `logmap` at radius 20-300 against mpmath (each coordinate), and their round trip."""
    L = manifolds.Lorentz(2.0)
    loc = _loc(dtype, radius, 2.0)
    dps = ref.digits(radius + 3)
    tol = 16 * EPS[dtype]
    for w in STEPS + [(1.2, -2.0, 0.5), (-2.5, 0.3, -0.1)]:
        wt = torch.tensor(w, dtype=D)
        v = ref.frame_to_ambient(loc, wt, 2.0, dtype, dps)
        z = geometry.expmap(L, loc, v)
        zs = ref.exp_frame(loc, ref.frame_from_ambient(loc, v, 2.0, dps), 2.0, dps)
        for got, want in zip(z[1:].tolist(), zs, strict=True):
            assert abs(got - float(want)) <= tol * abs(float(want)) + tol * 1e-30, (w, z, zs)
        # logmap of the rounded endpoint, compared in the frame at loc
        zr = ref.point_from_spatial(zs, dtype, 2.0)
        u = geometry.logmap(L, loc, zr)
        assert u.dtype == dtype and torch.isfinite(u).all()
        got = torch.tensor(ref.frame_from_ambient(loc, u, 2.0, dps), dtype=D)
        want = torch.tensor(ref.log_frame(loc, zr, 2.0, dps), dtype=D)
        assert (got - want).norm() <= tol * want.norm(), (w, got, want)


@pytest.mark.parametrize("dtype", [D, F])
def test_logmap_is_finite_and_accurate_at_distance_50(dtype):
    """Issue 11, defect 9: float32 logmap was NaN at distance 50 (and beyond, to distance ≈ 160)."""
    L = manifolds.Lorentz()
    cases = [(0.0, 50.0), (25.0, 25.0), (50.0, 50.0), (80.0, 80.0)] if dtype == F else [(0.0, 50.0), (25.0, 25.0), (300.0, 300.0)]
    for r1, r2 in cases:
        x = ref.axis_point(r1, 2, dtype, axis=0)
        y = ref.axis_point(r2, 2, dtype, axis=1)
        dps = ref.digits(max(r1, r2) + 2)
        v = geometry.logmap(L, x, y)
        assert torch.isfinite(v).all(), (r1, r2, v)
        got = torch.tensor(ref.frame_from_ambient(x, v, 1.0, dps), dtype=D)
        want = torch.tensor(ref.log_frame(x, y, 1.0, dps), dtype=D)
        assert (got - want).norm() <= 16 * EPS[dtype] * want.norm(), (r1, r2, got, want)
        d = geometry.distance(L, x, y)
        assert abs(float(d) - ref.dist(x, y, 1.0, dps)) <= 8 * EPS[dtype] * float(d)


@pytest.mark.parametrize("dtype,radius", [(F, 50.0), (F, 80.0), (D, 50.0), (D, 600.0)])
def test_constraint_accepts_valid_points_far_out_and_rejects_invalid_ones(dtype, radius):
    """Issue 11, defect 9: float32 points beyond radius ≈ 44 were rejected (x_0² overflows)."""
    L = manifolds.Lorentz()
    c = constraints.manifold(L)
    u = torch.tensor([0.6, -0.8, 0.0], dtype=D)
    pts = torch.stack([
        ref.axis_point(radius, 3, dtype),
        ref.point_from_spatial((math.sinh(radius) * u).tolist(), dtype),
        ref.point_from_spatial((math.sinh(radius / 2) * u).tolist(), dtype),
    ])
    assert c.check(pts).all()
    assert torch.isfinite(constraints.violation(L, pts)).all()
    assert L.check_point_on_manifold(pts)
    bad = pts.clone()
    bad[:, 0] = bad[:, 0] * (1 + 1e3 * constraints.tolerance(dtype))  # off the hyperboloid
    assert not c.check(bad).any()
    low = pts.clone()
    low[:, 0] = -low[:, 0]  # the other sheet
    assert not c.check(low).any()


@pytest.mark.parametrize("dtype,radius", [(D, 20.0), (D, 40.0), (F, 20.0), (F, 40.0)])
def test_inner_norm_and_tangent_projection_far_from_the_origin(dtype, radius):
    """⟨v, v⟩_L of tangent vectors at radius 20-40 (|v_s|² - v_0² cancels) and the projection onto T_x."""
    L = manifolds.Lorentz()
    x = _loc(dtype, radius)
    dps = ref.digits(radius + 2)
    for w in STEPS + [(3.0, -0.5, 0.25)]:
        wt = torch.tensor(w, dtype=D)
        v = ref.frame_to_ambient(x, wt, 1.0, dtype, dps)
        n2 = float(wt.pow(2).sum())
        assert abs(float(geometry.inner(L, x, v)) - n2) <= 8 * EPS[dtype] * n2
        assert abs(float(geometry.norm(L, x, v)) - n2**0.5) <= 8 * EPS[dtype] * n2**0.5
        assert abs(float(L.inner(x, v)) - n2) <= 8 * EPS[dtype] * n2
        p = geometry.tangent_project(L, x, v)
        got = torch.tensor(ref.frame_from_ambient(x, p, 1.0, dps), dtype=D)
        assert (got - wt).norm() <= 16 * EPS[dtype] * wt.norm()


def test_gradients_are_finite_far_out_and_at_coincident_points():
    L = manifolds.Lorentz()
    for radius in (0.0, 0.5, 20.0, 40.0):
        x = ref.axis_point(radius, 3, D).requires_grad_(True)
        y = _step(x.detach(), (0.6, -0.8, 0.0), 1.0, D, radius).requires_grad_(True)
        for a, b in ((x, y), (x, x)):
            out = geometry.distance(L, a, b) + geometry.logmap(L, a, b).sum() + geometry.expmap(L, a, geometry.logmap(L, a, b)).sum()
            g = torch.autograd.grad(out, (x, y), allow_unused=True)
            assert all(gi is None or torch.isfinite(gi).all() for gi in g)


def test_distance_gradient_far_out_is_the_unit_tangent_away_from_x():
    """At radius 30 (float64) the derivative of d(x, y) along the unit tangent at y pointing away from x is 1."""
    x = ref.axis_point(30.0, 2, D)
    y = _step(x, (0.6, 0.8), 1.0, D, 30.0)
    dps = ref.digits(32)
    yy = y.clone().requires_grad_(True)
    d = geometry.distance(manifolds.Lorentz(), x, yy)
    (g,) = torch.autograd.grad(d, yy)
    w = torch.tensor(ref.log_frame(y, x, 1.0, dps), dtype=D)
    u = ref.frame_to_ambient(y, -w / w.norm(), 1.0, D, dps)
    assert abs(float((g * u).sum()) - 1.0) < 1e-10
