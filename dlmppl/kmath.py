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

Near ``u = 0`` a Taylor polynomial is used and the branches are selected with
the "double where" so that neither values nor gradients (with respect to the
points or to κ) see a 0/0.  This is what lets a learnable curvature change
sign during training.

References: Bachmann, Bécigneul & Ganea, "Constant Curvature Graph
Convolutional Networks", ICML 2020; Skopek, Ganea & Bécigneul,
"Mixed-curvature Variational Autoencoders", ICLR 2020; the function layout
follows ``geoopt/manifolds/stereographic/math.py``.
"""

from __future__ import annotations

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
    "logmap",
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


def _even_fn(u, pos_fn, neg_fn, coeffs):
    eps = _switch_eps(u.dtype)
    pos = u > eps
    neg = u < -eps
    one = torch.ones_like(u)
    up = torch.where(pos, u, one).sqrt()
    un = torch.where(neg, -u, one).sqrt()
    return torch.where(
        pos, pos_fn(up) / up, torch.where(neg, neg_fn(un) / un, _series(u, coeffs))
    )


_T_COEFFS = (1.0, 1.0 / 3, 2.0 / 15, 17.0 / 315, 62.0 / 2835)
_A_COEFFS = (1.0, -1.0 / 3, 1.0 / 5, -1.0 / 7, 1.0 / 9)
_S_COEFFS = (1.0, -1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880)


def _T(u):
    return _even_fn(u, torch.tan, torch.tanh, _T_COEFFS)


def _A(u):
    return _even_fn(u, torch.atan, _artanh, _A_COEFFS)


def _S(u):
    return _even_fn(u, torch.sin, torch.sinh, _S_COEFFS)


def _artanh(x):
    # clamp keeps the boundary of the ball finite in float32
    x = x.clamp(max=1 - torch.finfo(x.dtype).eps)
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
    """Möbius addition ``x ⊕_κ y`` (gyrovector addition; Euclidean ``x + y`` at κ=0)."""
    k = _k(k, x)
    x2 = _sqnorm(x)
    y2 = _sqnorm(y)
    xy = (x * y).sum(-1, keepdim=True)
    num = (1 - 2 * k * xy - k * y2) * x + (1 + k * x2) * y
    den = 1 - 2 * k * xy + k * k * x2 * y2
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
    d = 1 - 2 * k * uv + k2 * u2 * v2
    return w + 2 * (a * u + b * v) / d.clamp_min(torch.finfo(u.dtype).tiny)


def expmap0(u, k):
    """Exponential map at the origin; ``u`` in ambient coordinates of ``T_0``."""
    k = _k(k, u)
    return u * _T(k * _sqnorm(u))


def logmap0(y, k):
    """Logarithmic map at the origin (inverse of :func:`expmap0`)."""
    k = _k(k, y)
    return y * _A(k * _sqnorm(y))


def expmap(x, u, k):
    """Exponential map ``exp_x(u) = x ⊕ tan_κ(λ_x‖u‖/2) u/‖u‖``."""
    k = _k(k, x)
    lam = lambda_x(x, k)
    second = expmap0(lam * u / 2, k)
    return mobius_add(x, second, k)


def logmap(x, y, k):
    """Logarithmic map ``log_x(y) = (2/λ_x) artan_κ(‖w‖) w/‖w‖``, ``w = (-x) ⊕ y``."""
    k = _k(k, x)
    w = mobius_add(-x, y, k)
    return 2.0 / lambda_x(x, k) * logmap0(w, k)


def dist0(y, k, keepdim=False):
    """Geodesic distance from the origin, ``2 artan_κ(‖y‖)``."""
    k = _k(k, y)
    r = _norm(y)
    out = 2 * r * _A(k * r * r)
    return out if keepdim else out.squeeze(-1)


def dist(x, y, k, keepdim=False):
    """Geodesic distance ``d_κ(x, y) = 2 artan_κ(‖(-x) ⊕ y‖)``."""
    k = _k(k, x)
    return dist0(mobius_add(-x, y, k), k, keepdim=keepdim)


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


def project(x, k, eps=None):
    """Pull points back inside the ball ``‖x‖ < 1/√(-κ)`` for κ < 0 (no-op for κ ≥ 0)."""
    k = _k(k, x)
    if eps is None:
        eps = 4e-3 if x.dtype == torch.float32 else 1e-5
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
    return expmap(x, t * logmap(x, y, k), k)
