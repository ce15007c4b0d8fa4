"""mpmath references for the Lorentz model (points given by their float spatial coordinates).

A float point ``x`` is read as the exact point of the hyperboloid with spatial part
``x[1:]`` (``x_0 = sqrt(k + |x_s|²)``, as :mod:`dlmppl.lmath` does), and every
quantity is computed with enough digits to absorb the ``e^{2ρ}`` cancellations.
"""

from __future__ import annotations

import math

import mpmath as mp
import torch


def digits(radius: float) -> int:
    """Working precision for points up to hyperbolic ``radius`` (in units of √k)."""
    return int(40 + 2 * radius / math.log(10))


def _vec(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().double().reshape(-1).tolist()
    return [v if isinstance(v, mp.mpf) else mp.mpf(float(v)) for v in x]


def _dot(a, b):
    return mp.fsum(u * v for u, v in zip(a, b, strict=True))


def _norm(a):
    return mp.sqrt(_dot(a, a))


def _relative(x, y, k):
    """Spatial part of ``B_x^{-1} y`` (mp vectors)."""
    k = mp.mpf(k)
    R = mp.sqrt(k)
    a, b = _vec(x[1:]), _vec(y[1:])
    x0 = mp.sqrt(k + _dot(a, a))
    y0 = mp.sqrt(k + _dot(b, b))
    c = _dot(a, b) / (R * (x0 + R)) - y0 / R
    return [bi + c * ai for ai, bi in zip(a, b, strict=True)], R


def dist(x, y, k, dps):
    with mp.workdps(dps):
        ys, R = _relative(x, y, k)
        return float(R * mp.asinh(_norm(ys) / R))


def log_frame(x, y, k, dps):
    with mp.workdps(dps):
        ys, R = _relative(x, y, k)
        n = _norm(ys)
        f = mp.asinh(n / R) / (n / R) if n != 0 else mp.mpf(1)
        return [float(f * v) for v in ys]


def exp_frame(x, w, k, dps):
    """Spatial part of ``exp_x`` of frame coordinates ``w`` (mp floats, not rounded)."""
    with mp.workdps(dps):
        k = mp.mpf(k)
        R = mp.sqrt(k)
        a, w = _vec(x[1:]), _vec(w)
        nw = _norm(w)
        r = nw / R
        sc = mp.sinh(r) / r if nw != 0 else mp.mpf(1)
        ps = [sc * v for v in w]
        x0 = mp.sqrt(k + _dot(a, a))
        c = _dot(a, ps) / (R * (x0 + R)) + mp.cosh(r)
        return [p + c * ai for ai, p in zip(a, ps, strict=True)]


def point_from_spatial(zs, dtype, k=1.0):
    """Round an mp spatial part to a float point (``x_0`` from the rounded spatial part, in mp)."""
    s = torch.tensor([float(v) for v in zs], dtype=torch.float64).to(dtype)
    with mp.workdps(60):
        x0 = mp.sqrt(mp.mpf(k) + _dot(_vec(s), _vec(s)))
    return torch.cat([torch.tensor([float(x0)], dtype=torch.float64).to(dtype), s])


def wrapped_normal_log_prob(loc, z, k, scale, dps):
    """``log N(v; 0, σ²) - (d-1) log(sinh(r/R) R / r)``, ``v = log_frame(loc, z)``, isotropic σ."""
    with mp.workdps(dps):
        ys, R = _relative(loc, z, k)
        d = len(ys)
        n = _norm(ys)
        r = R * mp.asinh(n / R)
        s = mp.mpf(float(scale))
        lp = -r * r / (2 * s * s) - d * mp.log(s) - d / mp.mpf(2) * mp.log(2 * mp.pi)
        if d > 1 and r != 0:
            lp -= (d - 1) * mp.log(mp.sinh(r / R) * R / r)
        return float(lp)


def riemannian_normal_log_prob(loc, z, k, scale, dps):
    """``-d²/(2σ²) - log Z`` with ``Z = A_{d-1} ∫ e^{-r²/2σ²} (R sinh(r/R))^{d-1} dr`` by quadrature."""
    with mp.workdps(dps):
        ys, R = _relative(loc, z, k)
        d = len(ys)
        r = R * mp.asinh(_norm(ys) / R)
        s = mp.mpf(float(scale))
    with mp.workdps(30):
        area = 2 * mp.pi ** (mp.mpf(d) / 2) / mp.gamma(mp.mpf(d) / 2)
        Rq = mp.mpf(R)
        if d == 2:  # ∫ e^{-t²/2σ²} R sinh(t/R) dt = R σ √(π/2) e^{σ²/2R²} erf(σ/(√2 R))
            integral = Rq * s * mp.sqrt(mp.pi / 2) * mp.exp(s * s / (2 * Rq * Rq)) * mp.erf(s / (mp.sqrt(2) * Rq))
        else:
            integral = mp.quad(lambda t: mp.exp(-t * t / (2 * s * s)) * (Rq * mp.sinh(t / Rq)) ** (d - 1), [0, s, 4 * s, 40 * s])
        return float(-mp.mpf(r) ** 2 / (2 * s * s) - mp.log(area * integral))


def frame_to_ambient(x, w, k, dtype, dps):
    """The tangent vector at ``x`` with frame coordinates ``w``, rounded to ``dtype`` (``v_0`` from tangency)."""
    with mp.workdps(dps):
        k = mp.mpf(k)
        R = mp.sqrt(k)
        a, w = _vec(x[1:]), _vec(w)
        x0 = mp.sqrt(k + _dot(a, a))
        c = _dot(a, w) / (R * (R + x0))
        vs = [wi + c * ai for ai, wi in zip(a, w, strict=True)]
        v0 = _dot(a, vs) / x0
        return torch.tensor([float(v0)] + [float(v) for v in vs], dtype=torch.float64).to(dtype)


def frame_from_ambient(x, v, k, dps):
    """Frame coordinates of the tangent vector with spatial part ``v[1:]`` at ``x`` (floats)."""
    with mp.workdps(dps):
        k = mp.mpf(k)
        R = mp.sqrt(k)
        a, vs = _vec(x[1:]), _vec(v[1:])
        x0 = mp.sqrt(k + _dot(a, a))
        c = _dot(a, vs) / (x0 * (R + x0))
        return [float(vi - c * ai) for ai, vi in zip(a, vs, strict=True)]


def axis_point(radius, d, dtype, axis=0, k=1.0):
    """The point at hyperbolic ``radius`` (in units of √k) on spatial axis ``axis`` of H^d."""
    zs = [mp.mpf(0)] * d
    with mp.workdps(digits(radius)):
        zs[axis] = mp.sqrt(k) * mp.sinh(radius)
        x0 = mp.sqrt(k) * mp.cosh(radius)
    s = torch.tensor([float(v) for v in zs], dtype=torch.float64)
    return torch.cat([torch.tensor([float(x0)], dtype=torch.float64), s]).to(dtype)
