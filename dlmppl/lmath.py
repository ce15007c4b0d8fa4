r"""Closed-form math of the Lorentz (hyperboloid) model, accurate far from the origin.

The model is ``H = {x ∈ R^{d+1} : ⟨x, x⟩_L = -k, x_0 > 0}`` with the Minkowski
product ``⟨u, v⟩_L = -u_0 v_0 + u_s·v_s`` (``u_s`` the spatial part), curvature
``-1/k``; write ``R = √k``.  Every function takes ``k`` as a number or a tensor
that broadcasts with the points (shape ``()`` or ``batch_shape + (1,)`` for points
of shape ``batch_shape + (d+1,)``).

Why not the textbook formulas.  A point at hyperbolic radius ``ρ`` has
coordinates of size ``R e^ρ / 2``; ``d(x, y) = R arcosh(-⟨x, y⟩_L / k)`` takes
the difference of two numbers of size ``e^{2ρ}`` to get one of size
``cosh(d/R)``, so in float64 it is wrong from ``ρ ≈ 10`` (``0.0`` instead of
``1`` at ``ρ = 20``) and in float32 from ``ρ ≈ 4``; ``log_x y ∝ y - cosh(d) x``,
``⟨v, v⟩_L`` for a tangent vector and the Minkowski projection cancel in the
same way, and in float32 every product of two coordinates overflows beyond
``ρ ≈ 44``.  Here:

* A point is determined by its spatial part ``x_s``; ``x_0 = hypot(R, |x_s|)``
  is recomputed (overflow-free) wherever it matters.  So is a tangent vector:
  ``v_0 = x_s·v_s / x_0``.
* Tangent vectors are handled in the *frame* at ``x``: the parallel transport
  of the standard basis ``e_1 … e_d`` of ``T_o`` from the origin
  ``o = (R, 0, …, 0)``, i.e. the Lorentz boost ``B_x`` that maps ``o`` to ``x``
  (the frame of Nagano et al. 2019's wrapped normal).  In it, with ``x̂`` the unit
  spatial direction of ``x``, ``v_s = w_∥ (x_0/R) x̂ + w_⊥``, ``v_0 = w_∥ |x_s|/R``
  and ``g(v, v) = |w|² = w_∥² + |w_⊥|²``: no cancellation.  The perpendicular part
  ``w_⊥`` is extracted with a pivoted Householder reflection that maps ``x̂`` to a
  coordinate axis, so it is exact when ``x_s`` lies along an axis (and, in general,
  accurate to what the coordinates of ``x`` resolve: a float point at radius ``ρ``
  in a generic direction is only defined up to ``eps·sinh ρ`` across its radius).
* Two points ``x, y`` are compared through ``y' = B_x^{-1} y``, the coordinates
  of ``y`` in the frame at ``x``.  Far from the origin (``|x_s| > 4R``) its
  spatial part is built from the polar decomposition of ``y_s`` about ``x̂``
  (hyperbolic law of cosines in "haversine" form):

      y'_∥ = R [sinh(ρ_y − ρ_x) − cosh ρ_x sinh ρ_y (1 − cos θ)],   y'_⊥ = (y_s)_⊥,
      sinh(ρ_y − ρ_x) = (|y_s| − |x_s|)(|x_s| + |y_s|) / (|x_s| y_0 + x_0 |y_s|),
      sinh ρ_y (1 − cos θ) = |(y_s)_⊥|² / (R (|y_s| + y_s·x̂))        (y_s·x̂ > 0),

  every term non-negative or exactly computed; near the origin the plain boost
  formula is already accurate and smooth.  Then ``d = R asinh(|y'_s|/R)`` and
  ``log_x y`` has frame coordinates ``y'_s · asinh(|y'_s|/R) / (|y'_s|/R)``.
  When ``|y'_s|`` could overflow (distances beyond ``≈ 88 R`` in float32), ``y'_s``
  is carried scaled by ``γ^{-2}`` with ``γ ≈ sinh(d/2R)``.
* ``exp_x`` is the boost of ``exp_o``, with ``sinh(ρ_x − r)`` written as above
  for geodesics that head towards the origin.

Accuracy (against mpmath in ``tests/geometry/test_lorentz_far.py``,
``tests/distributions/test_lorentz_far_densities.py`` and
``tests/inference/test_lorentz_flow.py``): for points given by their float
coordinates, distances, ``exp``/``log``, the geodesic flow and the derived
densities are accurate to a modest multiple of the dtype's ``eps`` (relative for
distances of order 1 and more, absolute for tiny distances) up to radius
``≈ 700 R`` (float64) / ``≈ 85 R`` (float32) along coordinate axes, and to
``eps·sinh ρ`` (the resolution of the inputs) in generic directions.  ``exp_x v``
itself has a condition number ``≈ sinh(|v|/R)`` across the geodesic (Jacobi fields
grow like ``sinh``), so long geodesics are only that accurate.

References: Nickel & Kiela, "Learning Continuous Hierarchies in the Lorentz Model
of Hyperbolic Geometry", ICML 2018 (the model); Nagano et al., "A Wrapped Normal
Distribution on Hyperbolic Space for Gradient-Based Learning", ICML 2019 (the
transported frame); Ratcliffe, *Foundations of Hyperbolic Manifolds*, §3.5 (the
hyperbolic law of cosines); layout after :mod:`dlmppl.kmath`.
"""

from __future__ import annotations

import math

import torch

from ._shapes import broadcast_shapes

__all__ = [
    "time_coord",
    "project",
    "origin",
    "violation",
    "frame_from_ambient",
    "frame_to_ambient",
    "to_tangent",
    "inner",
    "norm",
    "tangent_project",
    "egrad2rgrad",
    "dist",
    "dist0",
    "log_frame",
    "exp_frame",
    "logmap",
    "expmap",
    "logmap0",
    "expmap0",
    "geodesic_flow",
]

# |x_s| / R above which the far-from-the-origin forms are used (x_0 / |x_s| ≤ 1.031 there,
# and below it the plain boost formulas lose at most a factor x_0 / R ≤ 4.2 to cancellation)
_FAR = 4.0


def _k(k, like):
    return torch.as_tensor(k, dtype=like.dtype, device=like.device)


def _prep(k, *ts):
    """``(R, k, ts)``: ``R = √k`` and the tensors ``ts`` (``(..., m)``) expanded to one batch shape ``(..., 1)``/``(..., m)``."""
    k = _k(k, ts[0])
    batch = broadcast_shapes(*(t.shape[:-1] for t in ts), k.shape[:-1] if k.dim() else ())
    k = k.expand(batch + (1,))
    return k.sqrt(), k, [t.expand(batch + t.shape[-1:]) for t in ts]


def _tiny(x):
    return torch.finfo(x.dtype).tiny


def _norm(v, keepdim=True):
    """``|v|`` over the last dim without overflow; gradient 0 (not NaN) at ``v = 0``."""
    tiny = _tiny(v)
    m = v.detach().abs().amax(-1, keepdim=True).clamp_min(tiny)
    s = (v / m).pow(2).sum(-1, keepdim=True)
    out = m * s.clamp_min(tiny).sqrt()
    out = torch.where(s > 0, out, torch.zeros_like(out))
    return out if keepdim else out.squeeze(-1)


def _dot(a, b):
    return (a * b).sum(-1, keepdim=True)


def _hypot(a, b):
    """``sqrt(a² + b²)`` without overflow, with the gradient of a smooth norm away from 0."""
    m = torch.maximum(a.detach().abs(), b.detach().abs()).clamp_min(_tiny(a))
    s = (a / m).pow(2) + (b / m).pow(2)
    return m * s.clamp_min(_tiny(a)).sqrt()


def _sinhc(r):
    """``sinh(r)/r`` (1 at 0), smooth."""
    small = r.abs() < (1e-3 if r.dtype == torch.float64 else 3e-2)
    rs = torch.where(small, torch.ones_like(r), r)
    r2 = r * r
    return torch.where(small, 1 + r2 / 6 + r2 * r2 / 120, torch.sinh(rs) / rs)


def _asinhc(t):
    """``asinh(t)/t`` for ``t ≥ 0`` (1 at 0), smooth."""
    small = t < (1e-3 if t.dtype == torch.float64 else 3e-2)
    ts = torch.where(small, torch.ones_like(t), t)
    t2 = t * t
    return torch.where(small, 1 - t2 / 6 + 3 * t2 * t2 / 40, torch.asinh(ts) / ts)


def _split(ah, v):
    """``(v·x̂, v - (v·x̂) x̂)`` for unit ``ah``: the perpendicular part by a pivoted Householder.

    ``H = I - 2uuᵀ/|u|²``, ``u = x̂ + s e_p`` (``p`` the largest component of ``x̂``,
    ``s`` its sign) maps ``x̂`` to ``-s e_p``; ``v_⊥ = H P H v`` with ``P`` dropping
    component ``p``.  Unlike ``v - (v·x̂) x̂`` this never subtracts the large parallel
    part of ``v`` from itself: exact when ``x̂`` is a coordinate axis.
    """
    ah, v = torch.broadcast_tensors(ah, v)
    idx = ah.detach().abs().argmax(-1, keepdim=True)
    e = torch.zeros_like(ah).scatter(-1, idx, 1.0)
    ap = ah.gather(-1, idx)
    s = torch.where(ap >= 0, torch.ones_like(ap), -torch.ones_like(ap))
    u = ah + s * e
    beta = 1.0 / (1.0 + ap.abs())  # 2 / |u|²
    hv = v - beta * _dot(u, v) * u
    q = hv * (1 - e)
    return _dot(v, ah), q - beta * _dot(u, q) * u


def _far_parts(a, R):
    """``(far, a_f, n, x0, ah)``: the far-branch mask and safe inputs for it (double where)."""
    n = _norm(a)
    far = n > _FAR * R
    e0 = torch.zeros(a.shape[-1], dtype=a.dtype, device=a.device)
    e0[0] = 1.0
    safe = (e0 * ((2 * _FAR) * R)).expand_as(a)
    a_f = torch.where(far, a, safe)
    n_f = torch.where(far, n, _norm(safe))
    x0_f = _hypot(R.expand_as(n_f), n_f)
    return far, a_f, n_f, x0_f, a_f / n_f


def _log_max(r):
    return math.log(torch.finfo(r.dtype).max)


def _sinh_diff(n, x0, r, R):
    """``sinh(ρ - r)`` for ``|x_s| = n = R sinh ρ`` (``x0 = R cosh ρ``), without cancellation.

    ``R sinh(ρ - r) = (n - R sinh r)(n + R sinh r) / (n cosh r + x0 sinh r)``, reduced by
    ``x0 cosh r``; beyond the overflow of ``cosh r`` (``r > 0.9 log(max)``) the same fraction
    is evaluated with ``e^{r - log(x0/R)}`` and ``e^{log(n/R) - r}``.  ``n/x0`` is bounded
    away from 0 (far branch).
    """
    big = r > 0.9 * _log_max(r)
    rs = torch.where(big, torch.ones_like(r), r)
    rl = torch.where(big, r, torch.full_like(r, 0.9 * _log_max(r)))
    a = ((n - R * torch.sinh(rs)) / x0) * ((n + R * torch.sinh(rs)) / (R * torch.cosh(rs))) / (n / x0 + torch.tanh(rs))
    t1 = n / x0 - 0.5 * torch.exp(rl - torch.log(x0 / R))  # (n - R sinh r)/x0, e^{-2r} negligible
    t2 = 2 * torch.exp(torch.log(n / R) - rl) + 1  # (n/R)/sinh r + 1
    b = t1 * t2 / (n / x0 + 1)
    return torch.where(big, b, a)


def _sqrt_sinhc(r):
    """``sqrt(sinh(r)/r)`` without overflow of ``sinh``."""
    big = r > 0.9 * _log_max(r)
    rl = torch.where(big, r, torch.full_like(r, 0.9 * _log_max(r)))
    rs = torch.where(big, torch.ones_like(r), r)
    return torch.where(big, torch.exp(0.5 * (rl - 0.6931471805599453 - torch.log(rl))), _sinhc(rs).sqrt())


def _sqrt_cosh(r):
    """``sqrt(cosh r)`` without overflow."""
    return torch.exp(0.5 * (r.abs() - 0.6931471805599453 + torch.log1p(torch.exp(-2 * r.abs()))))


def _at_infinity(z):
    """Points (or vectors) with a non-finite coordinate become all ``inf`` (never NaN)."""
    bad = ~torch.isfinite(z).all(-1, keepdim=True)
    return torch.where(bad, torch.full_like(z, float("inf")), z)


# ----------------------------------------------------------------------------- points


def time_coord(xs, k):
    """``x_0 = sqrt(k + |x_s|²)`` for spatial parts ``xs`` (``(..., d)`` → ``(..., 1)``), overflow-free."""
    R, _, (xs,) = _prep(k, xs)
    return _hypot(R, _norm(xs))


def project(x, k):
    """The point of ``H`` with the spatial part of ``x`` (``x_0`` recomputed)."""
    R, _, (xs,) = _prep(k, x[..., 1:])
    return torch.cat([_hypot(R, _norm(xs)), xs], -1)


def origin(like, k):
    """``o = (√k, 0, …, 0)`` with the shape, dtype and device of ``like`` (keeps the graph of ``k``)."""
    R, _, (z,) = _prep(k, torch.zeros_like(like[..., 1:]))
    return torch.cat([R, z], -1)


def violation(x, k):
    """Relative violation of ``⟨x, x⟩_L = -k``: ``|x_0² - k - |x_s|²| / (1 + x_0²)``, shape ``x.shape[:-1]``.

    Computed as ``|x_0 - x_0*| (x_0 + x_0*) / (1 + x_0²)`` with ``x_0* = hypot(√k, |x_s|)``,
    so it neither cancels nor overflows for points that float32 can hold (radius up to
    ``≈ 88 √k``, where ``x_0²`` overflows).  ``inf`` for ``x_0 ≤ 0`` (the lower sheet).
    """
    R, _, (x,) = _prep(k, x)
    x0 = x[..., :1]
    xs0 = _hypot(R, _norm(x[..., 1:]))
    h = _hypot(torch.ones_like(x0), x0)
    v = (x0 - xs0).abs() * ((x0 + xs0) / h) / h
    v = torch.where(x0 > 0, v, torch.full_like(v, float("inf")))
    return v.squeeze(-1)


# ----------------------------------------------------------------------------- tangent vectors


def _near(far, a, k):
    """``(a_n, x0_n)``: ``a`` where not far (0 elsewhere, a safe input) and its ``x_0``."""
    a_n = torch.where(far, torch.zeros_like(a), a)
    return a_n, (k + a_n.pow(2).sum(-1, keepdim=True)).sqrt()


def frame_from_ambient(x, v, k):
    """Coordinates ``(..., d)`` of the tangent vector ``v ∈ T_x`` in the frame at ``x`` (uses ``v_s`` only).

    ``w = B_x^{-1} v``: ``w_∥ = (v_s·x̂) R / x_0``, ``w_⊥ = (v_s)_⊥``.
    """
    R, k, (a, vs) = _prep(k, x[..., 1:], v[..., 1:])
    far, a_f, n_a, x0, ah = _far_parts(a, R)
    # near the origin: w = v_s - (a·v_s) a / (x_0 (R + x_0)) (cancels by at most x_0/R)
    a_n, x0_n = _near(far, a, k)
    w_n = vs - _dot(a_n, vs) / (x0_n * (R + x0_n)) * a_n
    par, perp = _split(ah, vs)
    w_f = perp + (par * R / x0) * ah
    return torch.where(far, w_f, w_n)


def frame_to_ambient(x, w, k):
    """The tangent vector at ``x`` with frame coordinates ``w`` (``(..., d)`` → ``(..., d+1)``).

    ``v_s = w + (x_s·w) x_s / (R (R + x_0))``, ``v_0 = x_s·w / R`` (Nagano et al. 2019):
    no cancellation beyond that of the coordinates themselves.
    """
    R, k, (a, w) = _prep(k, x[..., 1:], w)
    x0 = _hypot(R, _norm(a))
    aw = _dot(a, w)
    vs = w + aw / (R * (R + x0)) * a
    return torch.cat([aw / R, vs], -1)


def to_tangent(x, v, k):
    """The tangent vector at ``x`` with the spatial part of ``v``: ``v_0 = (x̂·v_s) |x_s| / x_0``."""
    R, k, (a, vs) = _prep(k, x[..., 1:], v[..., 1:])
    n = _norm(a)
    v0 = _dot(a / n.clamp_min(_tiny(n)), vs) * (n / _hypot(R, n))
    return torch.cat([v0, vs], -1)


def inner(x, u, v, k, keepdim=False):
    """Riemannian inner product ``⟨u, v⟩_L`` of tangent vectors at ``x`` (from their frame coordinates)."""
    out = _dot(frame_from_ambient(x, u, k), frame_from_ambient(x, v, k))
    return out if keepdim else out.squeeze(-1)


def norm(x, v, k, keepdim=False):
    """Riemannian norm of the tangent vector ``v`` at ``x``."""
    return _norm(frame_from_ambient(x, v, k), keepdim=keepdim)


def tangent_project(x, u, k):
    """Projection of an ambient vector ``u`` onto ``T_x`` along the time axis: ``(x̂·u_s |x_s|/x_0, u_s)``.

    Not the Minkowski-orthogonal projection ``u + ⟨x, u⟩_L x / k``: that one depends on
    ``u_0`` with a condition number ``≈ e^{2ρ}`` at radius ``ρ`` (a tangent vector rounded
    to floats is moved by ``eps·e^{2ρ}``), while this one is the identity on ``T_x`` in
    floating point too.  Both are linear projections onto ``T_x``; for the Riemannian
    gradient of a function of the ambient coordinates use :func:`egrad2rgrad`.
    """
    return to_tangent(x, u, k)


def egrad2rgrad(x, g, k):
    """Riemannian gradient (ambient, tangent at ``x``) from the Euclidean gradient ``g`` of a function of ``x``.

    Its frame coordinates are ``G_i = g·E_i`` for the frame vectors ``E_i = B_x e_i``:
    ``G = g_s + [(x_s·g_s)/(R(x_0+R)) + g_0/R] x_s``, without the Minkowski projection
    (which cancels far from the origin).
    """
    R, k, (a, g) = _prep(k, x[..., 1:], g)
    g0, gs = g[..., :1], g[..., 1:]
    x0 = _hypot(R, _norm(a))
    G = gs + (_dot(a, gs) / (R * (x0 + R)) + g0 / R) * a
    return frame_to_ambient(x, G, k)


# ----------------------------------------------------------------------------- two points


def _relative(x, y, k):
    """``(ỹ, γ, R)`` with ``y'_s = γ² ỹ`` the spatial part of ``B_x^{-1} y`` (``y`` seen from ``x``).

    ``γ ≥ 1`` is a detached scale, 1 unless ``|y'_s|`` could overflow.
    """
    R, k, (a, b) = _prep(k, x[..., 1:], y[..., 1:])
    big = torch.finfo(a.dtype).max ** 0.25
    n_b = _norm(b)
    y0 = _hypot(R, n_b)
    far, a_f, n_a, x0, ah = _far_parts(a, R)

    # near the origin: the boost B_x^{-1} y = b + a [(a·b)/(R(x0+R)) - y0/R], scaled by γ^-2
    a_n, x0_n = _near(far, a, k)
    g_n = torch.where(y0 / R > big, (y0 / R).sqrt(), torch.ones_like(y0)).detach()
    bg = b / g_n / g_n
    yt_n = bg + a_n * (_dot(a_n, bg) / (R * (x0_n + R)) - (y0 / g_n / g_n) / R)

    # far: y'_∥ = R [sinh(ρ_y - ρ_x) - cosh ρ_x sinh ρ_y (1 - cos θ)], y'_⊥ = b_⊥
    b_par, b_perp = _split(ah, b)
    beta = _norm(b_perp)
    sp = ((n_b - n_a) / x0) * ((n_a + n_b) / y0) / (n_a / x0 + n_b / y0)  # sinh(ρ_y - ρ_x)
    pos = b_par > 0
    den = torch.where(pos, n_b + b_par, torch.ones_like(b_par))
    e = torch.where(pos, beta * (beta / den), n_b - b_par)  # |y_s| (1 - cos θ) ≥ 0
    with torch.no_grad():  # γ ≈ max(1, sinh(d/2R)) (haversine), only a scale
        h_r = sp.abs() / (2 * (1 + _hypot(torch.ones_like(sp), sp))).sqrt()
        h_t = (n_a / R).sqrt() * (e / (2 * R)).sqrt()
        g_f = _hypot(h_r, h_t).clamp_min(1.0)
    yt_par = R * (sp / g_f) / g_f - (x0 / g_f) * (e / g_f) / R
    yt_f = yt_par * ah + (b_perp / g_f) / g_f
    return torch.where(far, yt_f, yt_n), torch.where(far, g_f, g_n), R


def _dist_from_relative(yt, g, R):
    """``(d/R, |ỹ|/R)``, ``d/R = asinh(γ² |ỹ| / R)`` (``(..., 1)``) without forming ``γ²|ỹ|``."""
    z = _norm(yt) / R
    scaled = g > 1
    gs = torch.where(scaled, g, torch.full_like(g, 2.0))
    zs = torch.where(scaled, z, torch.ones_like(z))
    big = 2 * gs.log() + torch.log(zs + (zs * zs + gs.pow(-4)).sqrt())
    small = torch.asinh(torch.where(scaled, torch.zeros_like(z), z))
    return torch.where(scaled, big, small), z


def dist(x, y, k, keepdim=False):
    """Geodesic distance ``d(x, y)``; shape ``broadcast(batch)`` (``(..., 1)`` with keepdim).

    Coincident points (equal spatial parts) give exactly 0 with a zero gradient, as a
    Euclidean ``‖x - y‖`` does; the boost would leave ``O(eps |x_s|)`` of rounding, whose
    direction is noise (a unit-norm gradient for a ``p = 1`` transport cost).
    """
    yt, g, R = _relative(x, y, k)
    D, _ = _dist_from_relative(yt, g, R)
    out = R * D
    same = (x[..., 1:] == y[..., 1:]).all(-1, keepdim=True)
    out = torch.where(same, torch.zeros_like(out), out)
    return out if keepdim else out.squeeze(-1)


def dist0(y, k, keepdim=False):
    """Geodesic distance from the origin, ``R asinh(|y_s| / R)``."""
    R, _, (ys,) = _prep(k, y[..., 1:])
    out = R * torch.asinh(_norm(ys) / R)
    return out if keepdim else out.squeeze(-1)


def log_frame(x, y, k):
    """Frame coordinates ``(..., d)`` of ``log_x y`` (the frame transported from the origin).

    ``y'_s · asinh(|y'_s|/R) / (|y'_s|/R)`` with ``y'_s`` from the haversine form
    (module docstring); smooth at ``y = x``.
    """
    yt, g, R = _relative(x, y, k)
    D, z = _dist_from_relative(yt, g, R)
    scaled = g > 1
    factor = torch.where(scaled, D / torch.where(scaled, z, torch.ones_like(z)), _asinhc(z))
    return yt * factor


def logmap(x, y, k):
    """Riemannian logarithm ``log_x y`` (ambient tangent vector at ``x``)."""
    return frame_to_ambient(x, log_frame(x, y, k), k)


def logmap0(y, k):
    """``log_o y`` at the origin, ambient (time component 0)."""
    R, _, (ys,) = _prep(k, y[..., 1:])
    vs = ys * _asinhc(_norm(ys) / R)
    return torch.cat([torch.zeros_like(vs[..., :1]), vs], -1)


def _exp_point(x, w, k):
    """``exp_x`` of frame coordinates ``w``; returns ``(z_s, parts)`` (parts reused by the flow)."""
    R, k, (a, w) = _prep(k, x[..., 1:], w)
    nw = _norm(w)
    r = nw / R
    sc = _sinhc(r)  # R sinh(r) / |w|
    sch = _sqrt_sinhc(r)
    far, a_f, n_a, x0, ah = _far_parts(a, R)
    a_n, x0_n = _near(far, a, k)
    # near: B_x (R cosh r, sinhc·w)
    ps = sc * w
    zs_n = ps + a_n * (_dot(a_n, ps) / (R * (x0_n + R)) + torch.cosh(r))
    # far: the component along x̂, outwards / inwards
    w_par, w_perp = _split(ah, w)
    neg = w_par < 0
    den = torch.where(neg, nw - w_par, torch.ones_like(nw))  # |w| - w_∥ ≥ |w| inwards
    nw_perp = _norm(w_perp)
    sdiff = _sinh_diff(n_a, x0, torch.where(neg, r, torch.ones_like(r)), R)  # sinh(ρ_x - r)
    out_par = n_a * torch.cosh(r) + (x0 / R) * (sc * w_par)
    # (x0/R) sinhc (|w| + w_∥) with |w| + w_∥ = |w_⊥|²/(|w| - w_∥), as a product of two
    # balanced factors: each may under/overflow in float32 where the product does not
    f = (x0 / R).sqrt() * (sch * nw_perp)
    in_par = R * sdiff + f * (f / den)
    zs_f = torch.where(neg, in_par, out_par) * ah + sch * (sch * w_perp)
    zs = torch.where(far, zs_f, zs_n)
    parts = dict(R=R, k=k, a_n=a_n, x0_n=x0_n, far=far, n_a=n_a, x0=x0, ah=ah, r=r, neg=neg, sdiff=sdiff)
    return zs, parts


def exp_frame(x, w, k):
    """``exp_x`` of the tangent vector with frame coordinates ``w`` (``(..., d)``); returns points ``(..., d+1)``.

    ``B_x exp_o(w)``; far from the origin the component of ``z_s`` along ``x̂`` is
    ``|x_s| cosh r + (x_0/R) sinhc·w_∥`` outwards and
    ``R sinh(ρ_x - r) + (x_0/R) sinhc·(|w| + w_∥)`` inwards (``r = |w|/R``,
    ``sinhc = R sinh(r)/|w|``, ``|w| + w_∥ = |w_⊥|²/(|w| - w_∥)``).
    """
    zs, p = _exp_point(x, w, k)
    return _at_infinity(torch.cat([_hypot(p["R"], _norm(zs)), zs], -1))


def expmap(x, v, k):
    """Riemannian exponential ``exp_x v`` for an ambient tangent vector ``v`` (its spatial part is used)."""
    return exp_frame(x, frame_from_ambient(x, v, k), k)


def expmap0(u, k):
    """``exp_o u`` for an ambient tangent vector at the origin (``u_0`` ignored)."""
    R, _, (us,) = _prep(k, u[..., 1:])
    zs = us * _sinhc(_norm(us) / R)
    return torch.cat([_hypot(R, _norm(zs)), zs], -1)


def geodesic_flow(x, v, t, k):
    """The geodesic flow for time ``t``: ``(γ(t), γ'(t))`` with ``γ(0) = x``, ``γ'(0) = v`` (ambient).

    ``t``: a number or a tensor broadcasting with ``(..., 1)``, of either sign.  The point
    is :func:`exp_frame` of ``t w`` (``w`` the frame coordinates of ``v``); the velocity is
    ``B_x`` of ``(|w| sinh r, cosh r · w)``, ``r = |t w|/R``, its component along ``x̂``
    written without cancellation for inward geodesics:
    ``-|w| cosh(ρ_x - r) + (x_0/R) cosh r (|w| + w_∥)``.  Its time component follows
    from tangency at ``γ(t)``.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    sgn = torch.where(t < 0, -torch.ones_like(t), torch.ones_like(t))
    w = frame_from_ambient(x, v, k) * sgn  # flow(x, v, -t) = (z, -v') with (z, v') = flow(x, -v, t)
    tt = t.abs()
    zs, p = _exp_point(x, tt * w, k)
    R, r, far = p["R"], p["r"], p["far"]
    w = w.expand(zs.shape)
    nu = _norm(w)
    ch = torch.cosh(r)
    q0 = nu * torch.sinh(r)
    # near: B_x (|w| sinh r, cosh r w)
    a_n = p["a_n"]
    vs_n = ch * w + a_n * (_dot(a_n, ch * w) / (R * (p["x0_n"] + R)) + q0 / R)
    # far: the component along x̂ inwards is -|w| cosh(ρ_x - r) + (x0/R) cosh r (|w| + w_∥)
    u_par, u_perp = _split(p["ah"], w)
    neg = p["neg"] & (nu > 0)
    den = torch.where(neg, nu - u_par, torch.ones_like(nu))
    chh = _sqrt_cosh(r)
    f = (p["x0"] / R).sqrt() * (chh * _norm(u_perp))
    cdiff = _hypot(torch.ones_like(p["sdiff"]), p["sdiff"])  # cosh(ρ_x - r)
    out_v = (p["x0"] / R) * ch * u_par + (p["n_a"] / R) * q0
    in_v = -nu * cdiff + f * (f / den)
    vs_f = torch.where(neg, in_v, out_v) * p["ah"] + chh * (chh * u_perp)
    vs = torch.where(far, vs_f, vs_n)
    nz = _norm(zs)
    z0 = _hypot(R, nz)
    # tangency v_0 = z_s·v_s / z_0, as (ẑ·v_s)(|z_s|/z_0): z_s·v_s overflows in float32 beyond radius 44
    vel = torch.cat([_dot(zs / nz.clamp_min(_tiny(nz)), vs) * (nz / z0), vs], -1)
    return _at_infinity(torch.cat([z0, zs], -1)), _at_infinity(vel * sgn)
