"""Poincaré-ball numerics near the boundary, sphere antipodes, validation (issue 11, defects 3, 9, 11).

References are computed with mpmath (50 digits) from the *float* inputs, so what is measured is
the error of the algorithm; the bounds are what the float inputs allow: a point with
``1 - √c‖x‖ = δ`` is only known to a hyperbolic distance of about ``eps/δ``.
"""

from __future__ import annotations

import math

import mpmath as mp
import pytest
import torch

from dlmppl import geometry as G
from dlmppl import kmath
from dlmppl import manifolds as M

D = torch.float64
mp.mp.dps = 50


def _mp(x):
    return [mp.mpf(float(a)) for a in x.reshape(-1)]


def _mp_delta(x, c):
    """1 - √c‖x‖ of the float point ``x``, exactly."""
    return 1 - mp.sqrt(mp.mpf(c) * sum(a * a for a in _mp(x)))


def _mp_dist(x, y, c):
    x, y, c = (_mp(x) if isinstance(x, torch.Tensor) else x), (_mp(y) if isinstance(y, torch.Tensor) else y), mp.mpf(c)
    d2 = sum((a - b) ** 2 for a, b in zip(x, y, strict=True))
    px = 1 - c * sum(a * a for a in x)
    py = 1 - c * sum(a * a for a in y)
    return 2 * mp.asinh(mp.sqrt(c * d2 / (px * py))) / mp.sqrt(c)


def _mp_exp(x, v, c):
    """``x ⊕ tan_κ(r/2) v/r`` (κ = -c) in 50-digit arithmetic; ``v`` frame coordinates."""
    c = mp.mpf(c)
    s = mp.sqrt(c)
    r = mp.sqrt(sum(a * a for a in v))
    b = [mp.tanh(s * r / 2) / s * a / r for a in v]
    x2 = sum(a * a for a in x)
    b2 = sum(a * a for a in b)
    xb = sum(a * q for a, q in zip(x, b, strict=True))
    num = [(1 + 2 * c * xb + c * b2) * a + (1 - c * x2) * q for a, q in zip(x, b, strict=True)]
    den = 1 + 2 * c * xb + c * c * x2 * b2
    return [n / den for n in num]


def _mp_log_coords(x, y, c):
    """``λ_x log_x(y) = 2 artanh(√c‖w‖)/√c · w/‖w‖``, ``w = (-x) ⊕ y``."""
    c = mp.mpf(c)
    s = mp.sqrt(c)
    mx = [-a for a in x]
    x2 = sum(a * a for a in mx)
    y2 = sum(a * a for a in y)
    xy = sum(a * b for a, b in zip(mx, y, strict=True))
    num = [(1 + 2 * c * xy + c * y2) * a + (1 - c * x2) * b for a, b in zip(mx, y, strict=True)]
    den = 1 + 2 * c * xy + c * c * x2 * y2
    w = [n / den for n in num]
    nw = mp.sqrt(sum(a * a for a in w))
    return [2 * mp.atanh(s * nw) / s * a / nw for a in w]


def _unit(g, d=3):
    u = torch.randn(d, generator=g, dtype=D)
    return u / u.norm()


def _pair(g, delta, c, dtype):
    """Two points with ``1 - √c‖·‖ ≈ δ`` at hyperbolic distance O(1) (Euclidean distance ~ δ)."""
    u = _unit(g)
    w = torch.randn(3, generator=g, dtype=D)
    w = w - (w @ u) * u
    w = w / w.norm()
    ang = delta * (0.2 + 2 * float(torch.rand((), generator=g, dtype=D)))
    x = u * (1 - delta) / math.sqrt(c)
    y = (math.cos(ang) * u + math.sin(ang) * w) * (1 - delta * (0.5 + float(torch.rand((), generator=g, dtype=D)))) / math.sqrt(c)
    return x.to(dtype), y.to(dtype)


CASES = [(D, 1e-6), (D, 1e-9), (D, 1e-12), (torch.float32, 1e-3), (torch.float32, 1e-5)]


@pytest.mark.parametrize("dtype,delta", CASES)
@pytest.mark.parametrize("c", [1e-3, 1.0, 1e3])
def test_distance_and_log_near_boundary_match_mpmath(dtype, delta, c):
    g = torch.Generator().manual_seed(11)
    eps = torch.finfo(dtype).eps
    k = torch.tensor(-c, dtype=dtype)
    for _ in range(8):
        x, y = _pair(g, delta, c, dtype)
        dx, dy = float(_mp_delta(x, c)), float(_mp_delta(y, c))
        # what the inputs allow: each point is known to a hyperbolic distance ~ eps/δ
        limit = 4 * eps * (1 / dx + 1 / dy)
        ref = _mp_dist(x, y, c)
        for d in (kmath.dist(x, y, k), G.distance(M.PoincareBall(torch.tensor(c, dtype=dtype)), x, y)):
            assert torch.isfinite(d)
            assert abs(float(d) - float(ref)) * math.sqrt(c) <= limit, (float(d), float(ref), limit)
        # frame coordinates of the logarithm, v = λ_x log_x(y) (norm: the distance)
        v = kmath.lambda_x(x, k) * kmath.logmap(x, y, k)
        v_ref = torch.tensor([float(a) for a in _mp_log_coords(_mp(x), _mp(y), c)], dtype=D)
        assert (v.double() - v_ref).norm() * math.sqrt(c) <= limit * (1 + float(v_ref.norm()) * math.sqrt(c))
        torch.testing.assert_close(kmath.logmap_coords(x, y, k), v, rtol=10 * eps, atol=0)


def _spread(x, v, c, z_ref, n=4, seed=0):
    """Hyperbolic distance by which ``exp`` moves when every input coordinate moves by one rounding."""
    g = torch.Generator().manual_seed(seed)
    out = 0.0
    for _ in range(n):
        sx = torch.randint(0, 2, (len(x),), generator=g) * 2 - 1
        sv = torch.randint(0, 2, (len(v),), generator=g) * 2 - 1
        u = mp.mpf(2) ** -53
        xp = [a * (1 + int(s) * u) for a, s in zip(x, sx, strict=True)]
        vp = [a * (1 + int(s) * u) for a, s in zip(v, sv, strict=True)]
        out = max(out, float(_mp_dist(_mp_exp(xp, vp, c), z_ref, c)))
    return out


@pytest.mark.parametrize("delta", [1e-6, 1e-9, 1e-12])
@pytest.mark.parametrize("c", [1.0, 1e3])
def test_exp_near_boundary_matches_mpmath(delta, c):
    """``exp`` from points within δ of the boundary, short and long steps, including steps back
    through the origin (where the textbook form cancels): as accurate as the float inputs allow."""
    g = torch.Generator().manual_seed(3)
    k = torch.tensor(-c, dtype=D)
    s = math.sqrt(c)
    radius = 2 * math.atanh(1 - delta)  # hyperbolic radius of the base point (times √c)
    checked = 0
    for step in ("short", "back", "through", "tangential", "out"):
        u = _unit(g)
        x = u * (1 - delta) / s
        w = torch.randn(3, generator=g, dtype=D)
        if step == "short":
            v = 0.7 * w
        elif step == "back":
            v = -u * 0.8 * radius + 0.05 * w
        elif step == "through":
            v = -u * 1.3 * radius + 0.05 * w
        elif step == "tangential":
            v = 5.0 * (w - (w @ u) * u)
        else:
            v = 2.0 * u + 0.3 * w
        v = v / s
        # exp_x(u) with u = v/λ_x the ambient tangent vector (the manifold's expmap, as users call it)
        z = M.PoincareBall(torch.tensor(c, dtype=D)).expmap(x, v / kmath.lambda_x(x, k))
        z_ref = _mp_exp(_mp(x), _mp(v), c)
        dz = 1 - mp.sqrt(mp.mpf(c) * sum(a * a for a in z_ref))
        if dz < 1e-14:  # the exact point is closer to the boundary than float64 resolves well
            continue
        checked += 1
        assert float(1 + k * (z * z).sum()) > 0
        err = float(_mp_dist(_mp(z), z_ref, c)) * s
        allowed = 4 * (_spread(_mp(x), _mp(v), c, z_ref) * s + 2.2e-16 / float(dz))
        assert err <= allowed, (step, err, allowed)
        assert float(_mp_dist(_mp(kmath.expmap_coords(x, v, k)), z_ref, c)) * s <= allowed
        # the geodesic length is the norm of v, and log inverts exp
        torch.testing.assert_close(kmath.dist(x, z, k) * s, v.norm() * s, rtol=0, atol=allowed + 1e-12)
    assert checked >= 3


@pytest.mark.parametrize("dtype,delta", [(D, 1e-9), (torch.float32, 1e-5)])
def test_public_geometry_near_boundary_is_finite_and_consistent(dtype, delta):
    g = torch.Generator().manual_seed(5)
    ball = M.PoincareBall(torch.tensor(1.0, dtype=dtype))
    x, y = _pair(g, delta, 1.0, dtype)
    d = G.distance(ball, x, y)
    mid = G.geodesic(ball, x, y, 0.5)
    path = G.interpolate(ball, x, y, 5)
    v = G.logmap(ball, x, y)
    assert torch.isfinite(d) and torch.isfinite(mid).all() and torch.isfinite(path).all() and torch.isfinite(v).all()
    tol = 20 * torch.finfo(dtype).eps / delta
    assert abs(float(G.distance(ball, x, mid)) - float(d) / 2) <= tol * (1 + float(d))
    assert abs(float(G.norm(ball, x, v)) - float(d)) <= tol * (1 + float(d))
    torch.testing.assert_close(G.expmap(ball, x, v), y, rtol=0, atol=10 * float(tol) * delta)


def test_max_radius_is_where_the_dtype_resolves_the_boundary():
    for dtype, lo, hi in ((torch.float32, 15.2, 15.3), (D, 35.3, 35.4)):
        m = kmath.boundary_margin(dtype)
        assert m == 4 * torch.finfo(dtype).eps
        assert lo < kmath.max_radius(dtype) < hi
        # a point at that radius is strictly inside after rounding
        x = torch.tensor([math.tanh(kmath.max_radius(dtype) / 2), 0.0], dtype=dtype)
        assert float(1 - (x * x).sum()) > 0


@pytest.mark.parametrize("dtype", [torch.float32, D])
@pytest.mark.parametrize("c", [1e-8, 1.0, 1e3])
def test_project_moves_only_what_the_dtype_cannot_represent(dtype, c):
    g = torch.Generator().manual_seed(7)
    k = torch.tensor(-c, dtype=dtype)
    s = math.sqrt(c)
    rmax = 15.25 if dtype == torch.float32 else 35.35  # log(1/(2 eps)): 1 - √c|x| = 4 eps
    dirs = torch.randn(2000, 4, generator=g, dtype=D)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    # inside: radii up to 0.97 of the limit are left exactly as they are
    rho = torch.rand(2000, 1, generator=g, dtype=D) * 0.97 * rmax
    inside = (dirs * torch.tanh(rho / 2) / s).to(dtype)
    assert torch.equal(kmath.project(inside, k), inside)
    assert torch.equal(M.PoincareBall(torch.tensor(c, dtype=dtype)).projx(inside), inside)
    # outside or on the boundary: pulled strictly inside, to about the limit
    outside = (dirs * (1 + torch.rand(2000, 1, generator=g, dtype=D)) / s).to(dtype)
    p = kmath.project(outside, k)
    assert ((1 + k * (p * p).sum(-1)) > 0).all()
    r = kmath.dist0(p.double(), k.double()) * s
    assert (r > rmax - 0.5).all() and (r < rmax + 1.5).all()


# ----------------------------------------------------------------------------------------------
# sphere antipodes (defect 9)


@pytest.mark.parametrize("dtype", [torch.float32, D])
def test_sphere_logmap_of_antipodes_is_a_documented_tangent_of_length_pi(dtype):
    g = torch.Generator().manual_seed(9)
    sphere = M.Sphere()
    x = torch.randn(6, 4, generator=g, dtype=D)
    x = (x / x.norm(dim=-1, keepdim=True)).to(dtype)
    x = torch.cat([x, torch.eye(4, dtype=dtype)[:2]])  # ties in argmin |x_i|
    v = G.logmap(sphere, x, -x)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(v.norm(dim=-1), torch.full((8,), math.pi, dtype=dtype), rtol=8 * eps, atol=0)
    assert ((v * x).sum(-1).abs() < 8 * eps).all()
    # the documented direction: the projection of e_j, j = argmin |x_i| (first on ties)
    j = x.abs().argmin(-1)
    e = torch.nn.functional.one_hot(j, 4).to(dtype)
    t = e - x.gather(-1, j[:, None]) * x
    torch.testing.assert_close(v, math.pi * t / t.norm(dim=-1, keepdim=True), rtol=0, atol=16 * eps)
    assert int(j[6]) == 1 and int(j[7]) == 0
    # so the geodesic between antipodes is a great circle through the midpoint at distance π/2
    mid = G.geodesic(sphere, x, -x, 0.5)
    torch.testing.assert_close(G.distance(sphere, x, mid), torch.full((8,), math.pi / 2, dtype=dtype),
                               rtol=0, atol=64 * eps)
    torch.testing.assert_close(G.distance(sphere, mid, -x), torch.full((8,), math.pi / 2, dtype=dtype),
                               rtol=0, atol=64 * eps)
    # away from the antipode nothing changed: log_x(y) has length d(x, y) and points towards y
    y = torch.nn.functional.normalize(x + 0.3 * torch.randn(8, 4, generator=g, dtype=D).to(dtype), dim=-1)
    torch.testing.assert_close(G.logmap(sphere, x, y).norm(dim=-1), G.distance(sphere, x, y))


# ----------------------------------------------------------------------------------------------
# validation of dlmppl.geometry (defect 9)


def _calls(man, x, y, v):
    return {
        "expmap": (lambda a, b: G.expmap(man, a, v), ("x",)),
        "logmap": (lambda a, b: G.logmap(man, a, b), ("x", "y")),
        "distance": (lambda a, b: G.distance(man, a, b), ("x", "y")),
        "geodesic": (lambda a, b: G.geodesic(man, a, b, 0.3), ("x", "y")),
        "interpolate": (lambda a, b: G.interpolate(man, a, b, 3), ("x", "y")),
        "shoot": (lambda a, b: G.shoot(man, a, v, torch.tensor([0.0, 1.0], dtype=D)), ("x",)),
        "inner": (lambda a, b: G.inner(man, a, v), ("x",)),
        "norm": (lambda a, b: G.norm(man, a, v), ("x",)),
        "tangent_project": (lambda a, b: G.tangent_project(man, a, v), ("x",)),
        "frechet_mean": (lambda a, b: G.frechet_mean(torch.stack([a, b]), man), ("points",)),
    }


def _manifolds():
    s = torch.tensor([0.6, 0.0, 0.8], dtype=D)
    return [
        ("sphere", M.Sphere(), s, torch.tensor([0.0, 1.0, 0.0], dtype=D), torch.tensor([0.0, 0.3, 0.0], dtype=D),
         torch.tensor([0.6, 0.1, 0.8], dtype=D)),
        ("ball", M.PoincareBall(torch.tensor(2.0, dtype=D)), torch.tensor([0.1, 0.2, 0.0], dtype=D),
         torch.tensor([-0.3, 0.1, 0.2], dtype=D), torch.tensor([0.2, 0.0, 0.1], dtype=D),
         torch.tensor([0.8, 0.0, 0.0], dtype=D)),
    ]


@pytest.mark.parametrize("name", ["expmap", "logmap", "distance", "geodesic", "interpolate", "shoot", "inner", "norm",
                                  "tangent_project", "frechet_mean"])
def test_geometry_rejects_off_manifold_and_nan_points_naming_the_argument(name):
    for _, man, x, y, v, off in _manifolds():
        fn, args = _calls(man, x, y, v)[name]
        assert torch.isfinite(fn(x, y)).all()
        nan = torch.full_like(x, float("nan"))
        for bad in (off, nan):
            with pytest.raises(ValueError, match=f"^{args[0]}: "):
                fn(bad, y)
            if len(args) > 1:
                with pytest.raises(ValueError, match=f"^{args[1]}: "):
                    fn(x, bad)
        # validation off: no check (and no host synchronisation)
        torch.distributions.Distribution.set_default_validate_args(False)
        try:
            fn(nan, y)
        finally:
            torch.distributions.Distribution.set_default_validate_args(True)


def test_geometry_rejects_non_finite_tangent_vectors_and_times():
    ball = M.PoincareBall(torch.tensor(1.0, dtype=D))
    x = torch.tensor([0.1, 0.2], dtype=D)
    bad = torch.tensor([float("inf"), 0.0], dtype=D)
    with pytest.raises(ValueError, match="^v: "):
        G.expmap(ball, x, bad)
    with pytest.raises(ValueError, match="^u: "):
        G.inner(ball, x, bad)
    with pytest.raises(ValueError, match="^t: "):
        G.shoot(ball, x, x, torch.tensor([0.0, float("nan")], dtype=D))
    with pytest.raises(ValueError, match="^init: "):
        G.frechet_mean(torch.stack([x, -x]), ball, init=torch.tensor([2.0, 0.0], dtype=D))
    # empty batches pass through
    assert G.distance(ball, torch.zeros(0, 2, dtype=D), torch.zeros(0, 2, dtype=D)).shape == (0,)


def test_geometry_validation_accepts_float32_points_upcast_to_float64():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 3, generator=g)
    x = (x / x.norm(dim=-1, keepdim=True)).double()  # on the sphere to float32 rounding only
    assert G.distance(M.Sphere(), x[:1], x).shape == (50,)
    with pytest.raises(ValueError, match="^y: "):
        G.distance(M.Sphere(), x[:1], x * (1 + 1e-3))
