r"""The Stiefel manifold ``V_p(R^n) = {X ∈ R^{n×p}: XᵀX = I}``.

Two metrics (geoopt's two classes): the embedded metric ``tr(ΔᵀΔ)`` (``EuclideanStiefel``,
exponential of Edelman, Arias & Smith 1998, eq. 2.14) and the canonical metric
``tr(Δᵀ(I - ½XXᵀ)Δ)`` (``CanonicalStiefel``, eq. 2.41).  The logarithm has no closed form:
:meth:`StiefelGeometry.log` solves ``exp_x(Δ) = y`` by damped Gauss–Newton on ``T_x``
(Zimmermann 2017 gives the canonical-metric alternative).  HMC uses the embedded metric
for both (the canonical volume is proportional to it, so densities agree up to a constant).
"""

from __future__ import annotations

import math

import geoopt
import torch

from .base import Geometry, geometry_of
from .spd import _sym

__all__ = ["StiefelGeometry"]

STIEFEL_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _proju(x, u):
    return u - x @ _sym(x.transpose(-1, -2) @ u)


def _exp_embedded(x, u):
    p = x.shape[-1]
    x, u = torch.broadcast_tensors(x, u)
    a = x.transpose(-1, -2) @ u
    s = u.transpose(-1, -2) @ u
    eye = torch.eye(p, dtype=x.dtype, device=x.device).expand_as(a)
    blk = torch.cat((torch.cat((a, -s), -1), torch.cat((eye, a), -1)), -2)
    w = torch.linalg.matrix_exp(blk)[..., :p]
    return torch.cat((x, u), -1) @ (w @ torch.linalg.matrix_exp(-a))


def _exp_canonical(x, u):
    p = x.shape[-1]
    x, u = torch.broadcast_tensors(x, u)
    a = x.transpose(-1, -2) @ u
    q, r = torch.linalg.qr(u - x @ a)
    blk = torch.cat((torch.cat((a, -r.transpose(-1, -2)), -1), torch.cat((r, torch.zeros_like(a)), -1)), -2)
    mn = torch.linalg.matrix_exp(blk)[..., :p]
    return x @ mn[..., :p, :] + q @ mn[..., p:, :]


def _log(x, y, exp_fn, tol=None, max_iter=50):
    """Solve ``exp_x(Δ) = y`` by damped Gauss–Newton (Levenberg–Marquardt) on ``T_x``.

    Runs in float64 whatever the inputs' dtype (the normal equations are singular in the
    ``p(p+1)/2`` normal directions and float32 cannot carry the damping that regularises
    them) and returns ``Δ`` in the inputs' dtype.  ``ValueError`` naming ``y`` when it does
    not converge (``y`` beyond the injectivity radius): a logarithm that is not one is
    never returned.
    """
    from torch.func import jacfwd, vmap

    x, y = torch.broadcast_tensors(x, y)
    batch = x.shape[:-2]
    n, p = x.shape[-2:]
    dtype = x.dtype
    if x.numel() == 0:
        return torch.zeros_like(x)
    xf = x.reshape(-1, n, p).double()
    yf = y.reshape(-1, n, p).double()
    if tol is None:
        tol = STIEFEL_TOL.get(dtype, 1e-5)
    w = _proju(xf, yf - xf)

    def resid(wi, xi, yi):
        return (exp_fn(xi, _proju(xi, wi)) - yi).reshape(-1)

    jac = vmap(jacfwd(resid), in_dims=(0, 0, 0))
    res_fn = vmap(resid)
    eye = torch.eye(n * p, dtype=xf.dtype, device=x.device)
    worst = float("inf")
    for _ in range(max_iter):
        r = res_fn(w, xf, yf)
        worst = float(r.detach().abs().max())
        if worst < tol:
            break
        j = jac(w, xf, yf).reshape(-1, n * p, n * p)
        jtj = j.transpose(-1, -2) @ j
        mu = 1e-10 * jtj.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1.0)[..., None, None]
        step = torch.linalg.solve(jtj + mu * eye, (j.transpose(-1, -2) @ r.unsqueeze(-1)))
        w = _proju(xf, w - step.reshape(-1, n, p))
    else:
        worst = float(res_fn(w, xf, yf).detach().abs().max())
    if not worst < max(tol, 1e3 * torch.finfo(dtype).eps):
        raise ValueError(
            f"y: the Stiefel logarithm did not converge in {max_iter} iterations (residual {worst:.3g}): "
            "y is too far from x (beyond the injectivity radius) or not on the manifold"
        )
    return w.reshape(batch + (n, p)).to(dtype)


class StiefelGeometry(Geometry):
    """``geoopt.Stiefel`` (``EuclideanStiefel``: embedded metric; ``CanonicalStiefel``: canonical)."""

    name = "Stiefel"
    bounds = "XᵀX = I"
    compact = True

    @property
    def embedded(self):
        return not self.canonical

    def __init__(self, manifold):
        super().__init__(manifold)
        self.canonical = not isinstance(manifold, geoopt.EuclideanStiefel)
        self.log_tol = None
        self.log_max_iter = 50

    def _exp_fn(self):
        return _exp_canonical if self.canonical else _exp_embedded

    def exp(self, x, v):
        return self._exp_fn()(x, v)

    def log(self, x, y):
        return _log(x, y, self._exp_fn(), tol=self.log_tol, max_iter=self.log_max_iter)

    def inner(self, x, u, v=None):
        v = u if v is None else v
        out = (u * v).sum((-1, -2))
        if self.canonical:
            out = out - 0.5 * ((x.transpose(-1, -2) @ u) * (x.transpose(-1, -2) @ v)).sum((-1, -2))
        return out

    def proju(self, x, u):
        return _proju(x, u)

    def violation(self, x):
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        return (x.transpose(-1, -2) @ x - eye).abs().amax((-1, -2))

    def intrinsic_dim(self, event_shape) -> int:
        n, p = (int(s) for s in tuple(event_shape)[-2:])
        return n * p - p * (p + 1) // 2

    def origin(self, event_shape, dtype=None, device=None):
        n, p = tuple(event_shape)[-2:]
        return torch.eye(n, p, dtype=dtype, device=device)

    def random_tangent(self, x):
        return _proju(x, torch.randn_like(x))

    def log_volume(self, event_shape):
        """``p log 2 + (np/2) log π - log Γ_p(n/2)`` (canonical metric), ``+ p(p-1)/4 · log 2`` (embedded)."""
        event_shape = tuple(event_shape)
        if len(event_shape) != 2 or event_shape[0] < event_shape[1] or event_shape[1] < 1:
            raise ValueError(
                f"event_shape: points of {type(self.manifold).__name__} must have shape (n, p) with n >= p >= 1, "
                f"got {event_shape}"
            )
        n, p = event_shape
        mvlgamma = p * (p - 1) / 4 * math.log(math.pi) + sum(math.lgamma(n / 2 - j / 2) for j in range(p))
        lv = p * math.log(2.0) + n * p / 2 * math.log(math.pi) - mvlgamma
        return lv if self.canonical else lv + p * (p - 1) / 4 * math.log(2.0)

    def random_uniform(self, shape, dtype=None, device=None):
        # QR of a Gaussian matrix with the sign correction of Mezzadri 2007
        q, r = torch.linalg.qr(torch.randn(shape, dtype=dtype, device=device))
        sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        return q * torch.where(sign == 0, torch.ones_like(sign), sign)[..., None, :]

    # ---------------------------------------------------------------- HMC (embedded metric)

    def egrad2rgrad(self, x, g):
        return _proju(x, g)

    def kinetic(self, x, v):
        return 0.5 * (v * v).sum()

    def flow(self, x, v, t):
        # Edelman et al.'s [x, v] expm(t[[A, -S], [I, A]]) in the orthonormal frame [x, Q],
        # QR = v - xA: there the generator is the skew B = [[2A, -Rᵀ], [R, 0]], so every factor
        # is orthogonal and the flow keeps its accuracy (and reversibility) at any step
        n, p = x.shape[-2:]
        a = x.transpose(-1, -2) @ v
        a = 0.5 * (a - a.transpose(-1, -2))  # skew in exact arithmetic
        ea = torch.linalg.matrix_exp(-t * a)
        k = min(p, n - p)
        if k == 0:  # n = p (orthogonal group): v = xA and the geodesic is x expm(tA)
            x_new = x @ ea.transpose(-1, -2)
            return self.project(x_new, x_new @ a)
        w = v - x @ a
        # QR of [x, w]: the columns after the first p are orthonormal and orthogonal to x,
        # also when w is rank deficient
        q = torch.linalg.qr(torch.cat([x, w], -1)).Q[..., p : p + k]
        r = q.transpose(-1, -2) @ w
        zeros = torch.zeros(x.shape[:-2] + (k, k), dtype=x.dtype, device=x.device)
        b = torch.cat([torch.cat([2 * a, -r.transpose(-1, -2)], -1), torch.cat([r, zeros], -1)], -2)
        e = torch.linalg.matrix_exp(t * b)
        frame = torch.cat([x, q], -1)
        return self.project(frame @ e[..., :, :p] @ ea, frame @ (e @ torch.cat([a, r], -2)) @ ea)

    def project(self, x, v):
        u, _, vh = torch.linalg.svd(x, full_matrices=False)
        x = u @ vh
        return x, _proju(x, v)

    def closed_geodesic_length(self, x) -> float:
        # one column turning in a plane orthogonal to the others (n > p); for n = p the
        # shortest closed geodesics (a 2x2 rotation block) are √2 longer
        n, p = x.shape[-2:]
        return 2 * math.pi if n > p else 2 * math.pi * math.sqrt(2)


geometry_of.register(geoopt.Stiefel, StiefelGeometry)
