r"""The Riemannian (maximum-entropy) normal distribution on hyperbolic space.

.. math::

    p(z \mid \mu, \sigma) = \frac{1}{Z(\sigma, c, d)}
        \exp\Big(-\frac{d_c(\mu, z)^2}{2\sigma^2}\Big)

with respect to the Riemannian volume of the d-dimensional hyperbolic space of
curvature ``-c`` (Said, Bombrun & Berthoumieu 2014; Pennec 2006; Mathieu,
Le Lan, Maddison, Tomioka & Teh 2019, "Continuous Hierarchical Representations
with Poincaré Variational Auto-Encoders", NeurIPS, Sec. 3 and App. B).

Normaliser.  In geodesic polar coordinates the volume element is
``(sinh(√c r)/√c)^{d-1} dr dξ``; with ``r = σ t`` and ``x = σ√c``

.. math::

    Z = A_{d-1}\, \sigma^d\, F_d(x), \qquad
    F_d(x) = \int_0^\infty e^{-t^2/2} \Big(\frac{\sinh(x t)}{x}\Big)^{d-1} dt,

``A_{d-1} = 2π^{d/2}/Γ(d/2)`` the area of the unit sphere ``S^{d-1}``.
Expanding ``sinh^{n}``, ``n = d-1``, into exponentials gives the closed form
(Mathieu et al. 2019, eq. 6)

.. math::

    F_d(x) = \frac{\sqrt{\pi/2}}{(2x)^n} \sum_{k=0}^{n} (-1)^k \binom{n}{k}
             e^{a_k^2/2}\,\big(1 + \operatorname{erf}(a_k/\sqrt 2)\big), \qquad a_k = (n - 2k)\,x,

evaluated here in log space (``log(1+erf(a/√2)) = log 2 + log Φ(a)`` with
``torch.special.log_ndtr``, signed log-sum-exp).  The alternating sum is an
``n``-th finite difference and cancels catastrophically for small ``x``; there
(``x < x_s(n) = 2/√n``, where the closed form's condition number
``Σ|terms| / |Σ terms|`` exceeds about ``10^3``) the convergent series

.. math::

    F_d(x) = \sum_{j\ge 0} b_j\, x^{2j} \int_0^\infty e^{-t^2/2} t^{n+2j} dt,
    \qquad \Big(\frac{\sinh y}{y}\Big)^n = \sum_j b_j y^{2j},

is used instead: all its terms are positive.  The coefficients are computed
once per dimension (log-space powers of the series of ``sinh y / y``) and the
number of terms is chosen so that the dropped tail is below ``e^{-40}``.  Both
branches are ordinary torch expressions of ``σ`` and ``c`` (the series is a
polynomial in ``c σ²``, so ``c = 0``, the Euclidean normal with the metric of
the chart, is included without a singularity), so ``log_prob`` is
differentiable in ``loc``, ``scale`` and the curvature.  The normaliser is
computed in float64 and cast to the input's dtype.  Accuracy against
quadrature: ``tests/distributions/test_riemannian_normal.py``.

Sampling.  ``z = exp_μ(r ξ)`` with ``ξ`` uniform on the unit sphere of
``T_μ`` (coordinates in the frame of :mod:`.wrapped_normal`) and ``r = σ t``,
where ``t`` has density ``g(t) ∝ e^{-t²/2} sinh(x t)^{d-1}`` on ``(0, ∞)``.
``log g`` is 1-strongly concave (``(log sinh)'' = -1/sinh² < 0``), so with
``m`` its mode (Newton's method on ``t = n x coth(x t)``, monotone from
``max(n x, √n)``) ``g(t) ≤ g(m) e^{-(t-m)²/2}``: ``t`` is drawn by rejection
from the envelope ``N(m, 1)`` (proposals ``t ≤ 0`` are rejected).  For
``d = 1`` ``t`` is half-normal and drawn directly.  The acceptance rate is
``∫_0^∞ g / (g(m) √(2π))``; in the Euclidean limit ``c σ² → 0`` it is
0.658 for ``d = 2``, 0.693 for ``d = 5`` and tends to ``1/√2`` as ``d`` grows,
and it increases towards 1 as ``σ√c`` grows (the radial law becomes normal
with unit variance in ``t``); the tests measure it (≥ 0.65 on their grid).

Gradients.  ``rsample`` is reparameterised (``has_rsample = True``): the draw is
``exp_μ(σ t ξ)``, differentiable in ``loc``, ``scale`` and the curvature, with the
gradient of the rejection-sampled ``t`` with respect to ``x² = c σ²`` given implicitly
(Figurnov, Mohamed & Mnih 2018, "Implicit Reparameterization Gradients"; ``_dt_dy``);
``sample`` is ``rsample`` without gradients.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .. import kmath
from .base import ManifoldLocScale
from .wrapped_normal import (
    _UNREPRESENTABLE_MASS,
    _check_curvature,
    _check_finite_scale,
    _check_representable,
    _geometry,
    _safe_norm,
)

__all__ = ["RiemannianNormal", "riemannian_normal_log_normalizer"]


# ----------------------------------------------------------------------------------------------
# log-normaliser


def _switch(n: int) -> float:
    return 2.0 / math.sqrt(n)


def _log_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty_like(a)
    for j in range(a.shape[0]):
        s = a[: j + 1] + b[j::-1]
        m = s.max()
        out[j] = m + math.log(np.exp(s - m).sum()) if np.isfinite(m) else -np.inf
    return out


@functools.cache
def _series_coefficients(n: int) -> tuple[tuple[float, ...], bool]:
    """Coefficients ``γ_j`` with ``F_d(x) / M_n = Σ_j γ_j u^j``, ``u = (x / x_s)^2``.

    Returns the coefficients (as logs when ``plain`` is False) and ``plain``,
    whether they fit in float64 for Horner's scheme.
    """
    xs = _switch(n)
    d = n + 1
    j_max = int(xs * xs * n * n + 12 * xs * n + 40)
    i = np.arange(j_max)
    from scipy.special import gammaln

    # log coefficients of (sinh(xs y)/(xs y))^n in y^{2j}, by log-space powering
    base = 2 * i * math.log(xs) - gammaln(2 * i + 2)
    res = np.full(j_max, -np.inf)
    res[0] = 0.0
    p, m = base, n
    while m:
        if m & 1:
            res = _log_convolve(res, p)
        m >>= 1
        if m:
            p = _log_convolve(p, p)
    # ∫ e^{-t²/2} t^{n+2j} dt / ∫ e^{-t²/2} t^n dt = 2^j Γ(d/2 + j) / Γ(d/2)
    logc = res + i * math.log(2.0) + gammaln(d / 2 + i) - gammaln(d / 2)
    keep = np.nonzero(logc > logc.max() - 40.0)[0].max() + 1
    logc = logc[:keep]
    plain = bool(logc.max() < 600.0)
    return (tuple(np.exp(logc).tolist()) if plain else tuple(logc.tolist())), plain


def _log_moment(n: int) -> float:
    """``log ∫_0^∞ e^{-t²/2} t^n dt``."""
    return 0.5 * (n - 1) * math.log(2.0) + math.lgamma(0.5 * (n + 1))


def _log_f_series(x2: torch.Tensor, n: int) -> torch.Tensor:
    coeffs, plain = _series_coefficients(n)
    u = x2 / _switch(n) ** 2
    if plain:
        acc = torch.full_like(u, coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = acc * u + c
        return _log_moment(n) + acc.log()
    # very large n: log-space Horner (u is bounded away from 0 only through the clamp)
    logu = u.clamp_min(torch.finfo(u.dtype).tiny).log()
    acc = torch.full_like(u, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = torch.logaddexp(acc + logu, torch.full_like(u, c))
    return _log_moment(n) + acc


def _log_f_closed(x: torch.Tensor, n: int) -> torch.Tensor:
    k = torch.arange(n + 1, dtype=x.dtype, device=x.device)
    a = (n - 2 * k) * x.unsqueeze(-1)
    logc = torch.tensor(
        [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in range(n + 1)],
        dtype=x.dtype,
        device=x.device,
    )
    sign = torch.tensor([(-1.0) ** j for j in range(n + 1)], dtype=x.dtype, device=x.device)
    terms = logc + 0.5 * a * a + torch.special.log_ndtr(a)
    m = terms.detach().amax(-1, keepdim=True)
    s = (sign * (terms - m).exp()).sum(-1)
    return (
        m.squeeze(-1)
        + s.log()
        + math.log(2.0)
        - n * (math.log(2.0) + x.log())
        + 0.5 * math.log(math.pi / 2)
    )


def _log_f(x2: torch.Tensor, n: int) -> torch.Tensor:
    """``log F_d(x)`` as a function of ``x² = c σ²`` (float64 tensor), ``n = d - 1``."""
    if n == 0:
        return torch.full_like(x2, 0.5 * math.log(math.pi / 2))
    xs2 = _switch(n) ** 2
    small = x2 < xs2
    series = _log_f_series(torch.where(small, x2, torch.full_like(x2, xs2)), n)
    closed = _log_f_closed(torch.where(small, torch.full_like(x2, xs2), x2).sqrt(), n)
    return torch.where(small, series, closed)


def _log_sphere_area(d: int) -> float:
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def riemannian_normal_log_normalizer(scale: torch.Tensor, c: torch.Tensor, d: int) -> torch.Tensor:
    """``log Z(σ, c, d)`` of the Riemannian normal on ``d``-dimensional hyperbolic space of curvature ``-c``.

    ``scale`` (σ > 0) and ``c`` (≥ 0) broadcast; the result has their broadcast
    shape, the dtype of ``scale``.  Differentiable in both.  ``c = 0`` gives
    the Euclidean normaliser ``(2π)^{d/2} σ^d``.
    """
    scale, c = torch.broadcast_tensors(torch.as_tensor(scale), torch.as_tensor(c, dtype=torch.as_tensor(scale).dtype))
    s64 = scale.double()
    x2 = c.double() * s64 * s64
    out = _log_sphere_area(d) + d * s64.log() + _log_f(x2, d - 1)
    return out.to(scale.dtype)


# ----------------------------------------------------------------------------------------------
# radial sampler


def _ycoth(y: torch.Tensor) -> torch.Tensor:
    small = y < 1e-3
    ys = torch.where(small, torch.ones_like(y), y)
    return torch.where(small, 1 + y * y / 3, ys / torch.tanh(ys))


def _log_g(t: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    """``-t²/2 + n log(sinh(x t)/x)``, ``t > 0``."""
    if n == 0:
        return -0.5 * t * t
    ts = t.clamp_min(torch.finfo(t.dtype).tiny)
    return -0.5 * t * t + n * (ts.log() + kmath.log_sin_k_ratio(ts, -x * x))


def _radial_mode(x: torch.Tensor, n: int, iters: int = 60) -> torch.Tensor:
    if n == 0:
        return torch.zeros_like(x)
    t = torch.maximum(n * x, torch.full_like(x, math.sqrt(n)))
    for _ in range(iters):
        y = x * t
        h = -t + n * _ycoth(y) / t
        sy = torch.where(y < 1e-3, torch.ones_like(y), y / torch.sinh(y).clamp_min(torch.finfo(y.dtype).tiny))
        dh = -1 - n * sy * sy / (t * t)
        t = t - h / dh
    return t


def sample_radius(x: torch.Tensor, n: int, sample_shape=torch.Size(), max_rounds: int = 1000) -> torch.Tensor:
    """Draw ``t`` with density ``∝ e^{-t²/2} sinh(x t)^n`` on ``(0, ∞)`` by rejection from ``N(mode, 1)``.

    ``x`` (``≥ 0``, any shape) broadcasts; returns ``sample_shape + x.shape``.
    """
    shape = torch.Size(sample_shape) + x.shape
    if n == 0:  # half-normal: exact without rejection
        return torch.randn(shape, dtype=x.dtype, device=x.device).abs()
    x = x.expand(shape)
    m = _radial_mode(x, n)
    log_gm = _log_g(m, x, n)
    out = torch.zeros(shape, dtype=x.dtype, device=x.device)
    todo = torch.ones(shape, dtype=torch.bool, device=x.device)
    for _ in range(max_rounds):
        t = m + torch.randn(shape, dtype=x.dtype, device=x.device)
        log_u = torch.rand(shape, dtype=x.dtype, device=x.device).log()
        ok = (t > 0) & (log_u < _log_g(t.clamp_min(0), x, n) - log_gm + 0.5 * (t - m) ** 2)
        new = ok & todo
        out = torch.where(new, t, out)
        todo = todo & ~ok
        if not bool(todo.any()):
            return out
    raise RuntimeError("RiemannianNormal: radial rejection sampler did not finish")


def _langevin_over_y(y: torch.Tensor) -> torch.Tensor:
    """``(coth y - 1/y) / y`` for ``y ≥ 0`` (``1/3`` at 0)."""
    small = y < (1e-3 if y.dtype == torch.float64 else 3e-2)
    ys = torch.where(small, torch.ones_like(y), y)
    y2 = y * y
    return torch.where(small, 1.0 / 3 - y2 / 45 + 2 * y2 * y2 / 945, (1 / torch.tanh(ys) - 1 / ys) / ys)


def _dlog_g_dy(s: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    """``∂ log g(s) / ∂(x²) = (n s² / 2) L(x s) / (x s)``, smooth at ``x = 0``."""
    return 0.5 * n * s * s * _langevin_over_y(x * s)


_GL_NODES = 64


def _gauss_legendre(dtype, device):
    nodes, weights = np.polynomial.legendre.leggauss(_GL_NODES)
    return (torch.as_tensor((nodes + 1) / 2, dtype=dtype, device=device),
            torch.as_tensor(weights / 2, dtype=dtype, device=device))


def _dt_dy(t: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    """Implicit reparameterisation gradient ``dt/d(x²)`` of a draw ``t`` of the radial law.

    ``dt/dy = -∫_0^t g(s) (h(s) - E h) ds / g(t)`` with ``h = ∂_y log g``
    (Figurnov, Mohamed & Mnih 2018); the integral is taken over ``[0, t]`` left
    of the mode and as ``-∫_t^∞`` right of it, so that ``g(s)/g(t) ≤ 1`` on the
    integration range, by 64-point Gauss–Legendre quadrature.
    """
    if n == 0:
        return torch.zeros_like(t)
    u, w = _gauss_legendre(t.dtype, t.device)
    m = _radial_mode(x, n)
    # E h over [0, m + 14] (log g is 1-strongly concave: the rest is below e^-98)
    top = m + 14.0
    s = top.unsqueeze(-1) * u
    lg = _log_g(s, x.unsqueeze(-1), n)
    wg = (lg - lg.amax(-1, keepdim=True)).exp() * w
    e_h = (wg * _dlog_g_dy(s, x.unsqueeze(-1), n)).sum(-1) / wg.sum(-1)
    right = t >= m
    lo = torch.where(right, t, torch.zeros_like(t))
    hi = torch.where(right, torch.maximum(t, m) + 14.0, t)
    s = lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * u
    lg = _log_g(s.clamp_min(torch.finfo(t.dtype).tiny), x.unsqueeze(-1), n) - _log_g(t, x, n).unsqueeze(-1)
    integral = ((lg.exp() * (_dlog_g_dy(s, x.unsqueeze(-1), n) - e_h.unsqueeze(-1))) * w).sum(-1) * (hi - lo)
    return torch.where(right, integral, -integral)


class _ImplicitRadius(torch.autograd.Function):
    """``t`` drawn outside; backward with the implicit gradient ``dt/dy``, ``y = c σ²``."""

    @staticmethod
    def forward(ctx, y, t, n):
        ctx.save_for_backward(y, t)
        ctx.n = n
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        y, t = ctx.saved_tensors
        with torch.no_grad():
            g = _dt_dy(t, y.clamp_min(0).sqrt(), ctx.n)
        return grad * g, None, None


# ----------------------------------------------------------------------------------------------


class RiemannianNormal(ManifoldLocScale):
    r"""Riemannian normal ``∝ exp(-d(loc, z)² / (2 scale²))`` on hyperbolic space; see the module docstring.

    Args:
        manifold: a κ-stereographic model with κ ≤ 0 (``PoincareBall``,
            ``Stereographic``; batched κ of shape ``batch_shape + (1,)``; κ = 0 is
            the Euclidean limit) or ``Lorentz``.
        loc: points, shape ``batch_shape + (n,)``.
        scale: positive and finite, shape ``batch_shape`` or ``batch_shape + (1,)``.

    Empty batches give empty draws and densities.  On the Poincaré ball the draws
    are made with :func:`dlmppl.kmath.expmap_coords` and nothing is clamped; with
    validation on, a law with more than ``1e-6`` of its mass beyond the radius the dtype
    represents raises ``ValueError`` naming ``scale`` (see :mod:`.wrapped_normal`,
    "Numerics near the boundary", for the bound and for the rule applied otherwise).

    ``log_prob`` (shape ``sample_shape + batch_shape``) is a density with
    respect to the Riemannian volume and differentiable with respect to
    ``loc``, ``scale`` and the curvature; ``sample`` draws by rejection and
    ``rsample`` adds implicit reparameterisation gradients (module docstring).
    """

    @staticmethod
    def _geometry_of(manifold):
        g = _geometry(manifold, "RiemannianNormal")
        if not hasattr(g, "radius_limit"):  # the families that can be hyperbolic
            raise ValueError(
                f"manifold: RiemannianNormal needs hyperbolic space (PoincareBall, Stereographic with κ ≤ 0 "
                f"or Lorentz), got {type(manifold).__name__}"
            )
        return g

    def _scale_shape(self, scale, d):
        return scale if scale.dim() and scale.shape[-1] == 1 else scale.unsqueeze(-1)

    def _check_law(self):
        _check_finite_scale(self.scale)
        _check_representable("RiemannianNormal", self._geometry, self.loc, self._reach(self._c()))

    def _reach(self, c):
        """Bound on ``d(loc, z)`` except for probability :data:`_UNREPRESENTABLE_MASS` (shape ``batch_shape + (1,)``).

        ``r = σ t`` with ``t`` of density ``g``: ``log g`` is 1-strongly concave, so
        ``g(t) ≤ g(m) e^{-(t-m)²/2}`` and, with the acceptance rate ``∫g / (g(m)√(2π)) ≥ 1/2``
        of the radial sampler (module docstring), ``P(t > m + u) ≤ 2 Φ(-u)``; the mode
        satisfies ``m² = n · xm coth(xm) ≤ n (1 + x m)``, so ``m ≤ (n x + √(n²x² + 4n))/2``.
        """
        n = self._dim - 1
        c = torch.as_tensor(c, dtype=self.scale.dtype, device=self.scale.device)
        x = c.clamp_min(0).sqrt() * self.scale
        m = 0.5 * (n * x + (n * n * x * x + 4 * n).sqrt())
        u = -float(torch.special.ndtri(torch.tensor(_UNREPRESENTABLE_MASS / 2, dtype=torch.float64, device="cpu")))
        return self.scale * (m + u)

    def _check_curvature(self, like):
        _check_curvature(self._geometry, like)
        K = self._geometry.sectional_curvature(like)
        if (K > 0).any():
            raise ValueError(f"curvature: RiemannianNormal needs κ ≤ 0 (hyperbolic space), got {K}")

    def _c(self):
        """``c = -κ ≥ 0`` (κ the sectional curvature)."""
        return -self._geometry.sectional_curvature(self.loc)

    def log_normalizer(self) -> torch.Tensor:
        """``log Z``, shape ``batch_shape``."""
        c = self._c()
        out = riemannian_normal_log_normalizer(self.scale, c, self._dim)
        return out.expand(self.batch_shape + (1,)).squeeze(-1)

    def log_prob(self, value):
        value = self._checked_value(value)
        v = self._geometry.log_frame(self.loc, value)
        r2 = v.pow(2).sum(-1, keepdim=True)
        log_z = riemannian_normal_log_normalizer(self.scale, self._c(), self._dim)
        return (-0.5 * r2 / self.scale.pow(2) - log_z).squeeze(-1)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        c = torch.as_tensor(self._c(), dtype=self.loc.dtype, device=self.loc.device)
        y = (c * self.scale * self.scale).expand(self.batch_shape + (1,))
        with torch.no_grad():
            t = sample_radius(y.clamp_min(0).sqrt(), self._dim - 1, sample_shape)
        if y.requires_grad:
            t = _ImplicitRadius.apply(y.expand(t.shape), t, self._dim - 1)
        xi = torch.randn(shape[:-1] + (self._dim,), dtype=self.loc.dtype, device=self.loc.device)
        xi = xi / _safe_norm(xi)
        return self._geometry.exp_frame(self.loc, (t * self.scale) * xi)

