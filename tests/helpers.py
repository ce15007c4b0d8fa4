"""Shared test utilities: Monte Carlo integration over manifolds (two-sample tests: tests/statistical.py)."""

from __future__ import annotations

import math

import torch

from dlmppl import kmath


def log_sphere_area(n: int) -> float:
    """log of the surface area of the unit sphere S^{n-1} in R^n."""
    return math.log(2.0) + 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * n)


def uniform_sphere(num: int, n: int, dtype=torch.float64) -> torch.Tensor:
    x = torch.randn(num, n, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def integrate_on_sphere(log_prob, n: int, num: int = 200_000, batch_ndim: int = 0, dtype=torch.float64):
    """∫_{S^{n-1}} exp(log_prob(x)) dσ(x) by uniform Monte Carlo.

    ``log_prob`` receives points of shape ``(num,) + (1,)*batch_ndim + (n,)``.
    Returns ``(estimate, standard error)``, each of the distribution's batch shape.
    """
    x = uniform_sphere(num, n, dtype).reshape((num,) + (1,) * batch_ndim + (n,))
    p = log_prob(x).exp() * math.exp(log_sphere_area(n))
    return p.mean(0), p.std(0) / math.sqrt(num)


def integrate_on_sphere_tilted(log_prob, loc: torch.Tensor, rate, num: int = 100_000):
    """∫_{S^{d-1}} exp(log_prob(x)) dσ(x) by importance sampling, for densities concentrated at ``loc``.

    Defensive mixture (Hesterberg 1995), half the draws from each component: the
    uniform law on the sphere, and ``x = w loc + √(1-w²) ξ`` with ``ξ`` uniform on the
    great sphere orthogonal to ``loc`` and ``w`` from ``∝ exp(rate · w)`` on ``[-1, 1]``
    (exact inverse CDF), whose density on the sphere is
    ``q(w) / (|S^{d-2}| (1-w²)^{(d-3)/2})``.  The weight ``p / q_mix ≤ 2 p / q_uniform``
    is bounded for a bounded density, so the variance is finite, and small when
    ``rate`` matches the concentration.  Independent of the distributions' samplers.

    ``loc``: ``batch + (d,)`` unit vectors, ``rate``: broadcasts with ``batch``.
    ``log_prob`` receives points ``(num,) + batch + (d,)``.  Returns ``(estimate,
    standard error)``, each of shape ``batch``.
    """
    loc = torch.as_tensor(loc)
    d = loc.shape[-1]
    batch = loc.shape[:-1]
    dtype = loc.dtype
    rate = torch.as_tensor(rate, dtype=dtype).expand(batch)
    half = num // 2
    # uniform half
    xu = uniform_sphere(half * max(1, batch.numel()), d, dtype).reshape((half,) + batch + (d,))
    # tilted half: w by inverse CDF, exact for rate ≥ 0 (rate = 0: uniform w)
    u = torch.rand((half,) + batch, dtype=dtype)
    r = rate.clamp_min(1e-12)
    w = 1 + torch.log(u + (1 - u) * torch.exp(-2 * r)) / r
    w = w.clamp(-1.0, 1.0)
    g = torch.randn((half,) + batch + (d,), dtype=dtype)
    g = g - (g * loc).sum(-1, keepdim=True) * loc
    xi = g / g.norm(dim=-1, keepdim=True)
    xt = w[..., None] * loc + (1 - w * w).clamp_min(0).sqrt()[..., None] * xi

    log_area = log_sphere_area(d)
    log_area_m1 = log_sphere_area(d - 1) if d > 2 else math.log(2.0)

    def log_q_mix(x):
        wx = (x * loc).sum(-1).clamp(-1.0, 1.0)
        log_qw = torch.log(r) + r * wx - torch.log(-torch.expm1(-2 * r)) - r  # r e^{r w} / (e^r - e^{-r})
        log_qt = log_qw - log_area_m1 - 0.5 * (d - 3) * torch.log1p(-wx * wx).clamp_min(-700.0)
        return torch.logaddexp(torch.full_like(log_qt, -log_area), log_qt) - math.log(2.0)

    fu = (log_prob(xu) - log_q_mix(xu)).exp()
    ft = (log_prob(xt) - log_q_mix(xt)).exp()
    est = 0.5 * (fu.mean(0) + ft.mean(0))
    se = ((fu.var(0) + ft.var(0)) / (4 * half)).sqrt()
    return est, se


def integrate_polar(log_prob, point_from_tangent, d: int, k, radius: float, num: int = 200_000,
                    batch_ndim: int = 0, dtype=torch.float64):
    """∫ exp(log_prob) dvol over a d-dimensional space of constant curvature ``k``.

    Geodesic polar coordinates at a base point o: ``x = exp_o(r ξ)``, with
    ``dvol = sin_k(r)^{d-1} dr dξ``.  ``point_from_tangent(v)`` maps
    ``v ∈ R^d`` (Riemannian coordinates of T_o, shape ``(num,)+(1,)*batch_ndim+(d,)``)
    to points.  ``r`` is uniform on ``[0, radius]``.  ``k`` may be a tensor that
    broadcasts with ``(num,)+batch+(1,)``.  Returns ``(estimate, standard error)``.
    """
    shape = (num,) + (1,) * batch_ndim
    xi = uniform_sphere(num, d, dtype).reshape(shape + (d,))
    r = torch.rand(shape + (1,), dtype=dtype) * radius
    k = torch.as_tensor(k, dtype=dtype)
    x = point_from_tangent(r * xi)
    log_w = (d - 1) * torch.log(kmath.sin_k(r, k).abs().clamp_min(1e-300))
    p = (log_prob(x) + log_w.squeeze(-1)).exp() * radius * math.exp(log_sphere_area(d))
    return p.mean(0), p.std(0) / math.sqrt(num)
