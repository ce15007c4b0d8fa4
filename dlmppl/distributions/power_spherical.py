r"""The power spherical distribution (De Cao & Aziz 2020) on :math:`S^{d-1} \subset \mathbb{R}^d`.

.. math::

    p(x \mid \mu, \kappa) = C_d(\kappa)\,(1 + \mu^\top x)^{\kappa}, \qquad
    C_d(\kappa)^{-1} = 2^{\alpha+\beta}\,\pi^{\beta}\,\frac{\Gamma(\alpha)}{\Gamma(\alpha+\beta)},
    \quad \alpha = \tfrac{d-1}{2} + \kappa,\ \beta = \tfrac{d-1}{2},

a density with respect to the surface measure of the unit sphere; ``κ = 0`` is the
uniform distribution.  The cosine ``t = μᵀx`` satisfies ``(1+t)/2 ~ Beta(α, β)``,
so sampling is rejection-free: a Beta draw, a uniform tangent direction and the
Householder reflection that maps ``e_1`` to ``μ``.  The Beta draw is reparameterised
(torch's Dirichlet ``rsample``), so ``rsample`` has pathwise gradients to ``loc``
and ``concentration``.

Numerics.  The normaliser, entropy and KLs are differences of terms of size κ
(``κ log 2``, ``lgamma(α) - lgamma(α+β)``, ``κ(ψ(α+β) - ψ(α))``): they are formed
without cancellation, with ``lgamma(x+b) - lgamma(x)`` and ``ψ(x+b) - ψ(x)`` from
Stirling's series for ``x ≥ 10`` (the large terms differenced analytically,
``(x-½) log1p(b/x) + b log(x+b) - b + Δω``), and, for ``κ ≤ 0.02 β``, the KLs from
their cumulant series: with ``X = log(1 + μᵀx)`` under the uniform law (``(1+μᵀx)/2 ~
Beta(β, β)``), cumulants ``c_n = ψ^{(n-1)}(β) - ψ^{(n-1)}(2β)``,

.. math::

    \mathrm{KL}(p_\kappa \| U) = \sum_{n\ge2} (n-1)\,c_n \kappa^n / n!, \qquad
    \mathrm{KL}(U \| p_\kappa) = \sum_{n\ge2} c_n \kappa^n / n!,

which keep their relative accuracy as κ → 0.  Entropies and KLs are computed in
float64 and returned in the parameters' dtype.

Reference: N. De Cao and W. Aziz, "The Power Spherical distribution", ICML 2020
workshop on INNF+, arXiv:2006.04437.
"""

from __future__ import annotations

import functools
import math

import torch

from .base import SphericalLocConcentration
from .von_mises_fisher import _dot, _householder_to, _log_sphere_area, _tangent_directions, _work_dtype

__all__ = ["PowerSpherical"]

_STIRLING_MIN = 10.0
_KL_SERIES_TERMS = 8  # n = 2..9
_KL_SERIES_MAX = 0.02  # κ ≤ 0.02 β: truncation below 0.02^8 relative


def _stirling_tail(y: torch.Tensor) -> torch.Tensor:
    """``ω(y) = lgamma(y) - [(y - ½) log y - y + ½ log 2π]`` for ``y ≥ 10`` (error < 1e-13)."""
    r = 1 / y
    r2 = r * r
    return r * (1 / 12 + r2 * (-1 / 360 + r2 * (1 / 1260 + r2 * (-1 / 1680 + r2 / 1188))))


def _digamma_tail(y: torch.Tensor) -> torch.Tensor:
    """``log y - 1/(2y) - ψ(y)`` for ``y ≥ 10`` (error < 1e-13)."""
    r2 = 1 / (y * y)
    return r2 * (1 / 12 + r2 * (-1 / 120 + r2 * (1 / 252 + r2 * (-1 / 240 + r2 / 132))))


def _split(x: torch.Tensor):
    large = x >= _STIRLING_MIN
    return large, torch.where(large, x, torch.full_like(x, _STIRLING_MIN)), torch.where(large, torch.ones_like(x), x)


def lgamma_diff(x: torch.Tensor, b: float) -> torch.Tensor:
    """``lgamma(x + b) - lgamma(x)`` for ``x > 0`` and a number ``b ≥ 0``, accurate for large ``x``.

    Stirling's series with the large terms differenced analytically for ``x ≥ 10``:
    ``(x - ½) log1p(b/x) + b log(x + b) - b + ω(x + b) - ω(x)``; torch's lgamma below.
    """
    large, xl, xs = _split(x)
    asym = (xl - 0.5) * torch.log1p(b / xl) + b * torch.log(xl + b) - b + (_stirling_tail(xl + b) - _stirling_tail(xl))
    return torch.where(large, asym, torch.lgamma(xs + b) - torch.lgamma(xs))


def digamma_diff(x: torch.Tensor, b: float) -> torch.Tensor:
    """``ψ(x + b) - ψ(x)`` for ``x > 0`` and a number ``b ≥ 0``: ``log1p(b/x) + b/(2x(x+b)) - Δ(tail)`` for ``x ≥ 10``."""
    large, xl, xs = _split(x)
    asym = torch.log1p(b / xl) + b / (2 * xl * (xl + b)) - (_digamma_tail(xl + b) - _digamma_tail(xl))
    return torch.where(large, asym, torch.digamma(xs + b) - torch.digamma(xs))


@functools.cache
def _constants(d: int):
    """Per-dimension numbers: cumulants ``c_2..c_9`` of ``log(1 + μᵀx)`` under U, and the KL(U ‖ p) offsets."""
    beta = (d - 1) / 2
    b = torch.tensor([beta, 2 * beta], dtype=torch.float64, device="cpu")  # cached host constants
    # ψ^{(m)}(x) = (-1)^{m+1} m! ζ(m+1, x) (Hurwitz ζ: torch's trigamma is only accurate to ~1e-10)
    cum = []
    for n in range(2, 2 + _KL_SERIES_TERMS):
        m = n - 1
        z = torch.special.zeta(torch.tensor(float(m + 1), dtype=torch.float64, device="cpu"), b)
        cum.append((-1) ** (m + 1) * math.factorial(m) * float(z[0] - z[1]))
    dig = float(torch.digamma(b[:1]) - torch.digamma(b[1:]))  # ψ(β) - ψ(2β)
    return beta, cum, dig, math.lgamma(2 * beta) - math.lgamma(beta)


def _ps_divergences(d: int, kappa: torch.Tensor):
    """``(KL(p_κ ‖ U), KL(U ‖ p_κ))`` on ``S^{d-1}`` in :func:`_work_dtype` (module docstring, "Numerics")."""
    beta, cum, dig, lg0 = _constants(d)
    k = kappa.to(_work_dtype(kappa))
    small = k <= _KL_SERIES_MAX * beta
    ks = torch.where(small, k, torch.zeros_like(k))
    fwd = torch.zeros_like(k)
    rev = torch.zeros_like(k)
    for n in range(1 + _KL_SERIES_TERMS, 1, -1):  # Horner in κ: Σ_n a_n κ^n = κ²(a_2 + κ(a_3 + ...))
        c = cum[n - 2] / math.factorial(n)
        fwd = fwd * ks + (n - 1) * c
        rev = rev * ks + c
    fwd, rev = fwd * ks * ks, rev * ks * ks
    kb = torch.where(small, torch.ones_like(k), k)
    alpha = beta + kb
    lgd = lgamma_diff(alpha, beta)
    entropy = 2 * beta * math.log(2.0) + beta * math.log(math.pi) - lgd + kb * digamma_diff(alpha, beta)
    fwd_l = _log_sphere_area(d) - entropy
    rev_l = lg0 - lgd - kb * dig
    return torch.where(small, fwd, fwd_l), torch.where(small, rev, rev_l)


class PowerSpherical(SphericalLocConcentration):
    r"""Power spherical distribution on :math:`S^{d-1} \subset \mathbb{R}^d`, any ``d ≥ 2``.

    Args:
        loc: mean direction, unit vectors of shape ``batch_shape + (d,)``.
        concentration: ``κ ≥ 0`` (finite), shape broadcasting with ``loc.shape[:-1]``.
        validate_args: Pyro/torch argument validation (``ValueError`` naming the argument).

    ``log_prob`` is exact with respect to the surface measure (``-inf`` at the
    antipode ``-loc`` for ``κ > 0``, and within the rounding of ``1 + μᵀx``,
    ``4√d·eps``, of it); ``rsample`` is rejection-free and
    reparameterised (De Cao & Aziz 2020, Algorithm 1).
    """

    @property
    def _alpha_beta(self):
        beta = (self.dim - 1) / 2
        return beta + self.concentration, beta

    def _log_normalizer_plus(self, kappa: torch.Tensor, accurate: bool = True) -> torch.Tensor:
        """``log C_d(κ) + κ log 2 = -(2β log 2 + β log π) + lgamma(α+β) - lgamma(α)`` (no term of size κ).

        ``accurate=False`` differences torch's lgamma directly (2 kernels instead of ~25): its
        rounding, ``eps·α log α``, is within a factor ``log α`` of the rounding ``κ·eps`` that
        ``κ log(1 + μᵀx)`` has anyway, so ``log_prob`` (a hot path) uses it.
        """
        beta = (self.dim - 1) / 2
        alpha = beta + kappa
        diff = lgamma_diff(alpha, beta) if accurate else torch.lgamma(alpha + beta) - torch.lgamma(alpha)
        return diff - (2 * beta * math.log(2.0) + beta * math.log(math.pi))

    def log_normalizer(self) -> torch.Tensor:
        """``log C_d(κ)``, shape ``batch_shape`` (relative accuracy ~eps up to κ = 1e8)."""
        return self._log_normalizer_plus(self.concentration) - self.concentration * math.log(2.0)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        loc, kappa, value = self._promoted(value)
        # log C + κ log(1 + μᵀx) = (log C + κ log 2) + κ log((1 + μᵀx)/2).  At the antipode x = -μ,
        # 1 + μᵀx is 0 only up to the rounding of the dot product (≤ 2√d·eps measured; it was NaN
        # when it rounded below 0): values within 4√d·eps of 0 are read as the antipode, where the
        # density is 0 (-inf); xlogy gives 0, not 0·(-inf), for κ = 0 there.  (An accurate 1 + μᵀx,
        # ½‖μ + x‖², would cost a broadcast temporary: 5-10x slower at d = 512.)
        one_plus = 1 + _dot(loc, value)
        band = 4 * math.sqrt(self.dim) * torch.finfo(one_plus.dtype).eps
        half = torch.where(one_plus > band, one_plus / 2, torch.zeros_like(one_plus)).clamp(max=1)
        return self._log_normalizer_plus(kappa, accurate=False) + torch.xlogy(kappa, half)

    def rsample(self, sample_shape=torch.Size()):
        sample_shape = torch.Size(sample_shape)
        shape = self._extended_shape(sample_shape)[:-1]
        alpha, beta = self._alpha_beta
        v = _tangent_directions(shape, self.dim, self.loc.dtype, self.loc.device)
        if shape.numel() == 0:  # torch's Beta cannot sample an empty shape; keep the graph to the parameters
            s = (0 * alpha).expand(shape)
        else:
            # (1 - t)/2 ~ Beta(β, α): drawn directly, so that 1 - t keeps its precision for large κ
            s = torch.distributions.Beta(torch.full_like(alpha, beta), alpha).rsample(sample_shape).expand(shape)
        t = 1 - 2 * s
        r = 2 * torch.sqrt((s * (1 - s)).clamp_min(0))
        y = torch.cat([t[..., None], r[..., None] * v], -1)
        return _householder_to(self.loc.expand(y.shape), y)

    @property
    def mean(self):
        alpha, beta = self._alpha_beta
        return ((alpha - beta) / (alpha + beta))[..., None] * self.loc

    @property
    def mode(self):
        return self.loc

    def entropy(self):
        """``log|S^{d-1}| - KL(p ‖ U)``, shape ``batch_shape`` (module docstring, "Numerics")."""
        kl, _ = _ps_divergences(self.dim, self.concentration)
        return (_log_sphere_area(self.dim) - kl).to(self.concentration.dtype)
