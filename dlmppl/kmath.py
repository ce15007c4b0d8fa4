r"""Closed-form math of the κ-stereographic model, smooth through κ = 0.

Every function takes the curvature ``k`` as a tensor that broadcasts with the
points (shape ``()`` or ``batch_shape + (1,)`` for points of shape
``batch_shape + (d,)``), so one curvature per data point is as cheap as one
curvature for all.

The trigonometric functions of the model are written as ``x * F(k x²)`` with
``F`` an even entire-like function of ``u = k x²``:

    tan_k(x)   = x T(k x²),   T(u) = tan(√u)/√u,     tanh(√-u)/√-u,   1 + u/3 + 2u²/15 + ...
    artan_k(y) = y A(k y²),   A(u) = arctan(√u)/√u,  artanh(√-u)/√-u, 1 - u/3 + u²/5 - ...
    sin_k(r)   = r S(k r²),   S(u) = sin(√u)/√u,     sinh(√-u)/√-u,   1 - u/6 + u²/120 - ...
    cos_k(r)   = C(k r²),     C(u) = cos(√u),        cosh(√-u),       1 - u/2 + u²/24 - ...
    arsin_k(t) = t H(k t²),   H(u) = arcsin(√u)/√u,  arsinh(√-u)/√-u, 1 + u/6 + 3u²/40 + ...

Near ``u = 0`` a Taylor polynomial is used and the branches are selected with
the "double where" so that neither values nor gradients (with respect to the
points or to κ) see a 0/0.  This is what lets a learnable curvature change
sign during training.

Near the boundary of the Poincaré ball (κ < 0) the textbook formulas cancel
catastrophically (``1 - 2κ⟨x,y⟩ + κ²|x|²|y|²`` for nearby points, ``cosh - sinh`` for
long steps back towards the origin, the point ``tan_κ(r/2) v/r`` rounding onto the
boundary).  :func:`dist`, :func:`logmap` / :func:`logmap_coords`, :func:`expmap` /
:func:`expmap_coords`, :func:`mobius_add` and :func:`geodesic` are written in
rearranged forms whose terms are all non-negative for κ < 0, so that their error stays
at what the float inputs allow (a point with ``1 - √c|x| = δ`` is only known to a
hyperbolic distance ``~eps/δ``), also within ``1e-9`` of the boundary in float64.  The
dtype itself resolves the ball only out to hyperbolic radius :func:`max_radius` ``/√c``;
:func:`project` moves only points beyond it.

References: Bachmann, Bécigneul & Ganea, "Constant Curvature Graph
Convolutional Networks", ICML 2020; Skopek, Ganea & Bécigneul,
"Mixed-curvature Variational Autoencoders", ICLR 2020; the function layout
follows ``geoopt/manifolds/stereographic/math.py``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "tan_k",
    "artan_k",
    "sin_k",
    "log_sin_k_ratio",
    "lambda_x",
    "mobius_add",
    "gyration",
    "expmap",
    "expmap0",
    "expmap_coords",
    "logmap",
    "logmap_coords",
    "logmap0",
    "dist",
    "dist0",
    "parallel_transport",
    "parallel_transport0",
    "parallel_transport0back",
    "inner",
    "norm",
    "egrad2rgrad",
    "project",
    "boundary_margin",
    "max_radius",
    "geodesic",
]


def _switch_eps(dtype: torch.dtype) -> float:
    # |u| below which the Taylor polynomial (to u^4) is used: its truncation
    # error u^5 is below the dtype's resolution there.
    return 1e-3 if dtype == torch.float64 else 1e-2


def _series(u, coeffs):
    out = torch.full_like(u, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * u + c
    return out


def _even_fn(u, pos_fn, neg_fn, coeffs, divide=True):
    # F(u) = pos_fn(√u)/√u (u > 0), neg_fn(√-u)/√-u (u < 0), Taylor near 0; ``divide=False``
    # for functions that are already even in √u (cos, cosh).
    eps = _switch_eps(u.dtype)
    pos = u > eps
    neg = u < -eps
    one = torch.ones_like(u)
    up = torch.where(pos, u, one).sqrt()
    un = torch.where(neg, -u, one).sqrt()
    fp, fn = pos_fn(up), neg_fn(un)
    if divide:
        fp, fn = fp / up, fn / un
    # the series only at |u| ≤ eps: at a huge u (κ d² over a vanishing denominator, near-antipodal
    # points of a κ > 0 model) it overflows, and 0·inf in its masked-out gradient is NaN
    small = torch.where(pos | neg, torch.zeros_like(u), u)
    return torch.where(pos, fp, torch.where(neg, fn, _series(small, coeffs)))


_T_COEFFS = (1.0, 1.0 / 3, 2.0 / 15, 17.0 / 315, 62.0 / 2835)
_A_COEFFS = (1.0, -1.0 / 3, 1.0 / 5, -1.0 / 7, 1.0 / 9)
_S_COEFFS = (1.0, -1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880)
_C_COEFFS = (1.0, -1.0 / 2, 1.0 / 24, -1.0 / 720, 1.0 / 40320)
_H_COEFFS = (1.0, 1.0 / 6, 3.0 / 40, 5.0 / 112, 35.0 / 1152)


def _T(u):
    return _even_fn(u, torch.tan, torch.tanh, _T_COEFFS)


def _A(u):
    return _even_fn(u, torch.atan, _artanh, _A_COEFFS)


def _S(u):
    return _even_fn(u, torch.sin, torch.sinh, _S_COEFFS)


def _C(u):
    # cos_κ(r) = C(κ r²): cos(√u), cosh(√-u)
    return _even_fn(u, torch.cos, torch.cosh, _C_COEFFS, divide=False)


def _H(u):
    # arsin_κ(t) = t H(κ t²): asin(√u)/√u, asinh(√-u)/√-u (only used for u ≤ eps when u > 0)
    # the positive branch only ever sees √u ≤ √eps ≪ 1 (or the placeholder 1 of _even_fn, where
    # asin' is infinite: the clamp at 1/2 keeps its masked-out gradient finite, 0 instead of NaN)
    return _even_fn(u, lambda s: torch.asin(s.clamp(max=0.5)), torch.asinh, _H_COEFFS)


def _artanh(x):
    # the largest float below 1 keeps the (rounded) boundary of the ball finite
    x = x.clamp(max=1 - torch.finfo(x.dtype).eps / 2)
    return torch.atanh(x)


def _sqnorm(x, keepdim=True):
    return x.pow(2).sum(-1, keepdim=keepdim)


def _norm(x, keepdim=True):
    return _sqnorm(x, keepdim).clamp_min(torch.finfo(x.dtype).tiny).sqrt()


def _k(k, like):
    return torch.as_tensor(k, dtype=like.dtype, device=like.device)


def tan_k(x, k):
    """``tan_κ(x) = tan(√κ x)/√κ`` (κ>0), ``tanh(√-κ x)/√-κ`` (κ<0), ``x`` (κ=0)."""
    k = _k(k, x)
    return x * _T(k * x * x)


def artan_k(y, k):
    """Inverse of :func:`tan_k`."""
    k = _k(k, y)
    return y * _A(k * y * y)


def sin_k(r, k):
    """``sin_κ(r) = sin(√κ r)/√κ`` (κ>0), ``sinh(√-κ r)/√-κ`` (κ<0), ``r`` (κ=0)."""
    k = _k(k, r)
    return r * _S(k * r * r)


def log_sin_k_ratio(r, k):
    """``log(sin_κ(r) / r)``, the radial log-Jacobian factor of the exponential map.

    For a d-dimensional space of constant curvature κ the Riemannian volume
    element in geodesic polar coordinates is ``sin_κ(r)^{d-1} dr dξ``, so the
    log-determinant of ``exp_μ`` at a tangent vector of norm ``r`` is
    ``(d-1) * log_sin_k_ratio(r, κ)``.  Computed without cancellation for large
    negative κ r² (``log sinh`` grows linearly).
    """
    k = _k(k, r)
    u = k * r * r
    eps = _switch_eps(r.dtype)
    big_neg = u < -4.0
    un = torch.where(big_neg, -u, torch.full_like(u, 16.0)).sqrt()
    # log(sinh(s)/s) = s - log 2 + log1p(-exp(-2s)) - log s
    big = un - 0.6931471805599453 + torch.log1p(-torch.exp(-2 * un)) - torch.log(un)
    small = torch.log(_S(torch.where(big_neg, torch.full_like(u, -eps / 2), u)).clamp_min(torch.finfo(r.dtype).tiny))
    return torch.where(big_neg, big, small)


def lambda_x(x, k, keepdim=True):
    """Conformal factor ``λ_x = 2 / (1 + κ‖x‖²)``; shape ``(..., 1)`` with keepdim."""
    k = _k(k, x)
    return 2.0 / (1.0 + k * _sqnorm(x, keepdim))


def mobius_add(x, y, k):
    """Möbius addition ``x ⊕_κ y`` (gyrovector addition; Euclidean ``x + y`` at κ=0).

    Written as ``((1+κ|x|²) - κ|x+y|²) x + (1+κ|x|²) y`` over
    ``(1+κ|x|²)(1+κ|y|²) - κ|x+y|²`` (the textbook coefficients
    ``1 - 2κ⟨x,y⟩ - κ|y|²`` and ``1 - 2κ⟨x,y⟩ + κ²|x|²|y|²`` rearranged): for κ < 0 every
    term is non-negative, so nothing cancels when ``x`` and ``y`` are near the boundary.
    """
    k = _k(k, x)
    px = 1 + k * _sqnorm(x)
    py = 1 + k * _sqnorm(y)
    s2 = _sqnorm(x + y)
    num = (px - k * s2) * x + px * y
    den = px * py - k * s2
    return num / den.clamp_min(torch.finfo(x.dtype).tiny)


def gyration(u, v, w, k):
    """Gyration ``gyr[u, v] w`` (Ungar 2005)."""
    k = _k(k, u)
    u2 = _sqnorm(u)
    v2 = _sqnorm(v)
    uv = (u * v).sum(-1, keepdim=True)
    uw = (u * w).sum(-1, keepdim=True)
    vw = (v * w).sum(-1, keepdim=True)
    k2 = k * k
    a = -k2 * uw * v2 - k * vw + 2 * k2 * uv * vw
    b = -k2 * vw * u2 + k * uw
    # 1 - 2κ⟨u,v⟩ + κ²|u|²|v|², written without cancellation for κ < 0
    d = (1 + k * u2) * (1 + k * v2) - k * _sqnorm(u + v)
    return w + 2 * (a * u + b * v) / d.clamp_min(torch.finfo(u.dtype).tiny)


def expmap0(u, k):
    """Exponential map at the origin; ``u`` in ambient coordinates of ``T_0``."""
    k = _k(k, u)
    return u * _T(k * _sqnorm(u))


def logmap0(y, k):
    """Logarithmic map at the origin (inverse of :func:`expmap0`)."""
    k = _k(k, y)
    return y * _A(k * _sqnorm(y))


def expmap_coords(x, v, k):
    r"""``exp_x`` of the tangent vector with coordinates ``v`` in the orthonormal frame ``e_i / λ_x``.

    ``v = λ_x u`` for an ambient tangent vector ``u``; ``‖v‖ = r`` is the geodesic
    length.  This is ``x ⊕_κ tan_κ(r/2) v/r`` (Bachmann et al. 2020) with numerator and
    denominator multiplied by ``cos_κ(r/2)²``, so that the intermediate point
    ``tan_κ(r/2) v/r`` (which rounds onto the boundary for large ``r``) never appears:

        z = [C₁ x + ½(1+κ|x|²) sin_κ(r) v/r] / [(1+κ|x|²) - κ|cos_κ(r/2) x + sin_κ(r/2) v/r|²],
        C₁ = cos_κ(r) - κ sin_κ(r) ⟨x, v⟩/r.

    For κ r² < -1 (hyperbolic, long steps) ``C₁`` would cancel (``cosh - sinh``) when the step
    points back towards the origin; there, with ``s = √-κ`` and ``E = e^{-s r}``, numerator and
    denominator are divided by ``e^{s r}/2`` and
    ``C₁ ∝ 2E² + (1-E²)((1 - s|x|) + s|x| |x̂ + v̂|²/2)``, a sum of non-negative terms that
    shares the factor ``1 - s|x|`` with ``1 + κ|x|² = (1 - s|x|)(1 + s|x|)``: the result is
    then as accurate as ``x`` itself allows, also within ``1e-9`` of the boundary, and nothing
    overflows for any ``r``.  Smooth through κ = 0 (the other branch uses the even functions
    of this module).  Shapes: ``x`` ``(..., d)``, ``v`` ``(..., d)``, ``k`` broadcasting.
    The result is not projected: a step that leaves what the dtype can represent lands on
    (or just past) the boundary; see :func:`project`.
    """
    k = _k(k, x)
    tiny = torch.finfo(x.dtype).tiny
    r = _norm(v)
    x2 = _sqnorm(x)
    xv = (x * v).sum(-1, keepdim=True)
    u = k * r * r
    stable = u < -1.0
    # z = A x + B v with per-row scalars A, B: one (..., d) combination at the end.
    # General branch (|κ| r² ≤ 1 or κ ≥ 0), masked rows replaced by safe values.  Half-angle
    # functions only: sin_κ(r/2) = (r/2) S(u/4), cos_κ(r/2) = C(u/4); |vec|² from scalars
    # (for |κ| r² ≤ 1 its terms do not cancel by more than a small factor).
    ug = torch.where(stable, torch.full_like(u, -1.0), u)
    sh = _S(ug / 4)
    ch = _C(ug / 4)
    sr = sh * ch  # sin_κ(r)/r = 2 sin_κ(r/2) cos_κ(r/2) / r
    cr = 1 - 0.5 * ug * sh * sh  # cos_κ(r) = 1 - 2κ sin_κ(r/2)²
    px = 1 + k * x2
    c1 = cr - k * sr * xv
    vec2 = ch * ch * x2 + ch * sh * xv + 0.25 * sh * sh * r * r  # |cos_κ(r/2) x + sin_κ(r/2) v/r|²
    den_g = torch.where(stable, torch.ones_like(u), px - k * vec2).clamp_min(tiny)
    # stable branch (κ r² < -1, so κ < 0 and r > 0): vector forms, they cancel when z is near 0
    ks = torch.where(stable, k, -torch.ones_like(u))
    s = (-ks).sqrt()
    rs = torch.where(stable, r, torch.full_like(r, 2.0))
    e = torch.exp(-s * rs)
    xn = x2.clamp_min(tiny).sqrt()
    sa = s * xn
    eps_s = 1 - sa
    alpha = eps_s * (1 + sa)
    c1s = 2 * e * e + (1 - e * e) * (eps_s + 0.5 * sa * _sqnorm(x / xn + v / rs))
    vec_s = (1 + e) * x + ((1 - e) / (s * rs)) * v
    den_s = torch.where(stable, 2 * alpha * e + 0.5 * s * s * _sqnorm(vec_s), torch.ones_like(u)).clamp_min(tiny)
    a = torch.where(stable, c1s / den_s, c1 / den_g)
    b = torch.where(stable, 0.5 * alpha * (1 - e * e) / (s * rs) / den_s, 0.5 * px * sr / den_g)
    return a * x + b * v


def expmap(x, u, k):
    """Exponential map ``exp_x(u) = x ⊕ tan_κ(λ_x‖u‖/2) u/‖u‖`` (evaluated by :func:`expmap_coords`)."""
    k = _k(k, x)
    return expmap_coords(x, lambda_x(x, k) * u, k)


def _dist_parts(x, y, k):
    r"""Pieces of the distance and logarithm in a form that does not cancel near the boundary.

    With ``P = (1+κ|x|²)(1+κ|y|²)`` and ``D = P - κ|x-y|²`` (the denominator of
    ``w = (-x) ⊕ y``, ``|w|² = |x-y|²/D``):

    * κ ≤ 0 (and small κ t²): ``sin_κ(d/2) = |x-y|/√P =: t``, so
      ``d = 2 t H(κ t²)``, ``H(u) = asinh(√-u)/√-u`` (the classical
      ``cosh d = 1 + 2c|x-y|²/((1-c|x|²)(1-c|y|²))`` in its cancellation-free asinh form);
    * κ > 0 beyond the Taylor range: ``tan_κ(d/2) = |w|``, ``d = 2|w| A(κ|w|²)`` (atan,
      well conditioned up to the antipode).

    Returns ``(diff, 1+κ|x|², D, ratio)`` with ``d = 2 |x-y| ratio``; all ``(..., 1)`` but ``diff``.
    """
    tiny = torch.finfo(x.dtype).tiny
    diff = y - x
    diff2 = _sqnorm(diff)
    px = 1 + k * _sqnorm(x)
    py = 1 + k * _sqnorm(y)
    p = (px * py).clamp_min(tiny)
    # p - κ|x-y|² cancels to 0 near antipodal points of a κ > 0 model (float32 training found
    # them: NaN gradients through 1/dd); below its rounding noise eps·p it is held at eps·p, a
    # finite value and gradient (the distance there is π/√κ to within the same noise)
    dd = torch.maximum(p - k * diff2, torch.finfo(x.dtype).eps * p)
    ut = k * diff2 / p
    use_t = ut <= _switch_eps(x.dtype)
    ratio_t = _H(torch.where(use_t, ut, torch.zeros_like(ut))) / p.sqrt()
    # masked-out entries get benign placeholders in numerator and denominator alike, so that their
    # (discarded) gradients stay finite: 0·inf would make them NaN (near-antipodal points at κ > 0)
    dd_w = torch.where(use_t, torch.ones_like(dd), dd)
    uw = torch.where(use_t, torch.ones_like(ut), k * diff2) / dd_w
    ratio_w = _A(uw) / dd_w.sqrt()
    return diff, px, dd, torch.where(use_t, ratio_t, ratio_w)


def logmap_coords(x, y, k):
    r"""Coordinates of ``log_x(y)`` in the orthonormal frame ``e_i / λ_x`` (``λ_x log_x y``).

    ``= 2 ratio · num / √D`` with ``num = (1+κ|x|²)(y - x) + κ|x-y|² x`` (the numerator of
    ``(-x) ⊕ y``, free of cancellation), ``|num| = |x-y| √D``, and ``d = 2|x-y| ratio``
    from :func:`_dist_parts`; its norm is the geodesic distance.  Inverse of
    :func:`expmap_coords`; smooth at ``y = x`` and through κ = 0.
    """
    k = _k(k, x)
    diff, px, dd, ratio = _dist_parts(x, y, k)
    num = px * diff + k * _sqnorm(diff) * x
    return 2 * ratio * num / dd.sqrt()


def logmap(x, y, k):
    """Logarithmic map ``log_x(y) = (2/λ_x) artan_κ(‖w‖) w/‖w‖``, ``w = (-x) ⊕ y`` (via :func:`logmap_coords`)."""
    k = _k(k, x)
    return logmap_coords(x, y, k) / lambda_x(x, k)


def dist0(y, k, keepdim=False):
    """Geodesic distance from the origin, ``2 artan_κ(‖y‖)``."""
    k = _k(k, y)
    r = _norm(y)
    out = 2 * r * _A(k * r * r)
    return out if keepdim else out.squeeze(-1)


def dist(x, y, k, keepdim=False):
    """Geodesic distance ``d_κ(x, y) = 2 artan_κ(‖(-x) ⊕ y‖)``.

    Evaluated as ``2 asinh(√-κ |x-y| / √((1+κ|x|²)(1+κ|y|²)))/√-κ`` for κ < 0 (smoothly
    through κ = 0 and, for κ > 0, by the atan form; :func:`_dist_parts`), which keeps
    full accuracy for points within ``1e-9`` (float64) of the boundary.
    """
    k = _k(k, x)
    diff, _, _, ratio = _dist_parts(x, y, k)
    out = 2 * _norm(diff) * ratio
    return out if keepdim else out.squeeze(-1)


def parallel_transport(x, y, v, k):
    """Parallel transport of ``v ∈ T_x`` to ``T_y``: ``gyr[y, -x] v λ_x/λ_y``."""
    k = _k(k, x)
    return gyration(y, -x, v, k) * lambda_x(x, k) / lambda_x(y, k)


def parallel_transport0(y, v, k):
    """Parallel transport from the origin to ``y``: ``v (1 + κ‖y‖²)``."""
    k = _k(k, y)
    return v * (1 + k * _sqnorm(y))


def parallel_transport0back(x, v, k):
    """Parallel transport from ``x`` back to the origin: ``v / (1 + κ‖x‖²)``."""
    k = _k(k, x)
    return v / (1 + k * _sqnorm(x))


def inner(x, u, v, k, keepdim=False):
    """Riemannian inner product ``λ_x² ⟨u, v⟩``."""
    out = lambda_x(x, k) ** 2 * (u * v).sum(-1, keepdim=True)
    return out if keepdim else out.squeeze(-1)


def norm(x, u, k, keepdim=False):
    """Riemannian norm ``λ_x ‖u‖``."""
    out = lambda_x(x, k) * _norm(u)
    return out if keepdim else out.squeeze(-1)


def egrad2rgrad(x, grad, k):
    """Riemannian gradient from the Euclidean one: ``grad / λ_x²``."""
    return grad / lambda_x(x, k) ** 2


def boundary_margin(dtype: torch.dtype) -> float:
    """Default relative margin of :func:`project`: ``4 eps`` of ``dtype`` (a few units in the last place).

    A point at ``√c|x| = 1 - 4 eps`` has hyperbolic radius ``log(1/(2 eps))/√c``, about
    15.2/√c in float32 and 35.3/√c in float64 (:func:`max_radius`); closer to the
    boundary the dtype cannot tell points apart from it.
    """
    return 4 * torch.finfo(dtype).eps


def max_radius(dtype: torch.dtype) -> float:
    """Hyperbolic radius (for curvature -1) of the points :func:`project` leaves alone: ``log((2 - m)/m)``, ``m`` the margin."""
    m = boundary_margin(dtype)
    return math.log((2 - m) / m)


def project(x, k, eps=None):
    """Pull points back inside the ball ``‖x‖ < (1 - eps)/√(-κ)`` for κ < 0 (no-op for κ ≥ 0).

    ``eps`` defaults to :func:`boundary_margin` (``4 eps`` of the dtype): only points
    that the dtype can no longer tell from the boundary are moved (beyond hyperbolic
    radius :func:`max_radius` ``/√c``), so projecting never changes a representable point.
    """
    k = _k(k, x)
    if eps is None:
        eps = boundary_margin(x.dtype)
    neg = k < 0
    tiny = torch.finfo(x.dtype).tiny
    radius2 = (1 - eps) ** 2 / torch.where(neg, -k, torch.ones_like(k)).clamp_min(tiny)
    n2 = _sqnorm(x)
    outside = neg & (n2 > radius2)
    scale = torch.where(outside, (radius2 / torch.where(outside, n2, torch.ones_like(n2))).sqrt(), torch.ones_like(n2))
    return x * scale


def geodesic(t, x, y, k):
    """Point at fraction ``t`` of the geodesic from ``x`` to ``y``: ``exp_x(t log_x(y))``.

    ``t`` broadcasts with the points (give it a trailing dimension of size 1).
    """
    k = _k(k, x)
    return expmap_coords(x, t * logmap_coords(x, y, k), k)
