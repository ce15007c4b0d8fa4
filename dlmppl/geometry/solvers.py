r"""Geodesics under a metric field: lengths and energies of discrete curves, boundary-value
(connecting) and initial-value (shooting) solvers.

A discrete curve is a tensor ``(..., n_points, d)`` sampled at ``t_i = i/(n-1)``.
With segment vectors ``Δᵢ = c_{i+1} - cᵢ`` (``log_{cᵢ} c_{i+1}`` on a latent
manifold) and the metric field's squared speed ``q(z, v) = vᵀG(z)v``:

* length  ``L = Σᵢ √q(mᵢ, Δᵢ)``,
* energy  ``E = ½ ∫₀¹ ‖ċ‖² dt ≈ ½ (n-1) Σᵢ q(mᵢ, Δᵢ)``,

where ``q(mᵢ, Δᵢ)`` is the midpoint rule in ``R^d`` and the trapezoid
``½[q(cᵢ, log_{cᵢ}c_{i+1}) + q(c_{i+1}, log_{c_{i+1}}cᵢ)]`` on a latent manifold;
both are second-order accurate. A geodesic has constant speed, so ``E = L²/2``
there and ``E ≥ L²/2`` for every curve (Cauchy–Schwarz); minimising ``E`` gives
the geodesic (Arvanitidis et al., "Latent space oddity", ICLR 2018; Shao, Kumar &
Fletcher, "The Riemannian geometry of deep generative models", 2018).

:func:`connecting_geodesic` minimises the discrete energy over the interior
points with L-BFGS (strong Wolfe line search).  The interior displacement from
the initial curve (a straight line, or the latent manifold's own geodesic) is
written in the discrete sine basis with coefficients scaled by ``1/k``, which
diagonalises the Euclidean part of the energy's Hessian (the discrete
Laplacian) and makes the conditioning independent of ``n_points``.  On a
latent manifold the interior points are ``exp_{bᵢ}(Pᵢ δᵢ)`` (``bᵢ`` the initial
curve, ``Pᵢ`` the tangent projection), so the curve stays on the manifold.

:func:`shooting_geodesic` integrates ``z̈ = -Γ(z)[ż, ż]`` with classical RK4,
the acceleration coming from :meth:`MetricField.acceleration` (autograd of the
metric).  On a latent manifold it integrates in the normal-coordinate chart
``u ↦ exp_{z₀}(B u)`` at the start point (``B`` a basis of ``T_{z₀}M``), in
which the pulled-back metric is again a metric field on ``R^m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.func import jvp as _fjvp

from . import geodesics as _g
from .base import geometry_of
from .metrics import MetricField

__all__ = [
    "curve_length",
    "curve_energy",
    "segment_speeds",
    "connecting_geodesic",
    "shooting_geodesic",
    "GeodesicResult",
    "ChartMetric",
]


def _check_metric(metric):
    if not isinstance(metric, MetricField):
        raise ValueError(
            f"metric must be a dlmppl.geometry.MetricField (PullbackMetric, ConformalMetric, ...), got {type(metric).__name__}"
        )


def _manifold_of(metric, manifold):
    if manifold is not None:
        return manifold
    return getattr(metric, "manifold", None)


def segment_speeds(metric, curve, *, condition=None, manifold=None):
    """Squared segment lengths ``q(mᵢ, Δᵢ)`` of a discrete curve, shape ``(..., n-1)``.

    ``curve``: ``(..., n, d)``.  The field is evaluated on points of shape ``(n-1, ..., d)``
    (point axis first), so fields with batched parameters and a ``condition`` of the
    curves' batch shape broadcast as they do for single codes.
    """
    _check_metric(metric)
    if curve.dim() < 2 or curve.shape[-2] < 2:
        raise ValueError(f"curve must have shape (..., n_points >= 2, d), got {tuple(curve.shape)}")
    M = _manifold_of(metric, manifold)
    # the point axis goes first, so that batched parameters of the field (one curvature or
    # condition per curve, shape batch + (c,)) broadcast from the right as for single points
    c = curve.movedim(-2, 0)
    a, b = c[:-1], c[1:]
    if M is None or geometry_of(M).linear:
        q = metric.quadratic(0.5 * (a + b), b - a, condition=condition)
    else:
        fwd = _g.logmap(M, a, b)
        bwd = _g.logmap(M, b, a)
        q = 0.5 * (metric.quadratic(a, fwd, condition=condition) + metric.quadratic(b, bwd, condition=condition))
    return q.movedim(0, -1)


def curve_length(metric, curve, *, condition=None, manifold=None):
    """Riemannian length ``Σᵢ √q(mᵢ, Δᵢ)`` of discrete curves ``(..., n, d)``; shape ``(...)``."""
    q = segment_speeds(metric, curve, condition=condition, manifold=manifold)
    return q.clamp_min(0).sqrt().sum(-1)


def curve_energy(metric, curve, *, condition=None, manifold=None):
    """Curve energy ``½∫‖ċ‖²dt ≈ ½(n-1)Σᵢ q(mᵢ, Δᵢ)`` of curves ``(..., n, d)``; shape ``(...)``.

    ``E ≥ L²/2`` with equality exactly for constant-speed curves.
    """
    q = segment_speeds(metric, curve, condition=condition, manifold=manifold)
    return 0.5 * (curve.shape[-2] - 1) * q.sum(-1)


@dataclass
class GeodesicResult:
    """Output of :func:`connecting_geodesic` / :func:`shooting_geodesic`.

    curve: ``(..., n_points, d)``; length, energy: ``(...)``; converged: bool ``(...)``
    (relative gradient norm below tolerance); grad_norm: ``(...)``; n_iter: L-BFGS
    iterations used (shared by the batch); velocity: ``(..., n_points, d)`` for shooting.
    """

    curve: torch.Tensor
    length: torch.Tensor
    energy: torch.Tensor
    converged: torch.Tensor | None = None
    grad_norm: torch.Tensor | None = None
    n_iter: int = 0
    velocity: torch.Tensor | None = None


def _sine_basis(n_points, dtype, device):
    # S[i, k] = sin(π k tᵢ)/k over interior nodes i and modes k = 1..n-2
    m = n_points - 2
    t = torch.arange(1, m + 1, dtype=dtype, device=device) / (n_points - 1)
    k = torch.arange(1, m + 1, dtype=dtype, device=device)
    return torch.sin(math.pi * t[:, None] * k[None, :]) / k[None, :]


def _with_ends(curve, z0, z1):
    # endpoints exactly z0, z1 (a line z0 + t (z1 - z0) misses z1 by rounding)
    return torch.cat((z0.unsqueeze(-2), curve[..., 1:-1, :], z1.unsqueeze(-2)), -2)


def connecting_geodesic(
    metric,
    z0,
    z1,
    n_points: int = 32,
    *,
    condition=None,
    manifold=None,
    max_iter: int = 500,
    tol: float | None = None,
    init: torch.Tensor | None = None,
    history_size: int = 50,
):
    r"""Geodesic between ``z0`` and ``z1`` under ``metric`` by minimising the discrete energy.

    Parameters
    ----------
    metric : :class:`~dlmppl.geometry.MetricField`.
    z0, z1 : ``(..., d)`` (broadcast; a batch of pairs is solved jointly: the energies
        are summed, which is separable, so each pair reaches its own minimum).
    n_points : points of the discrete curve, endpoints included (>= 3).
    condition : passed to the metric's methods as ``condition=``; the field is evaluated on
        points ``(n_points - 1, ..., d)`` (point axis first), so a condition of the pairs' batch
        shape broadcasts.
    manifold : the latent manifold (default ``metric.manifold``); the curve stays on it.
    max_iter : L-BFGS iterations; tol : relative gradient tolerance for ``converged``:
        ``‖∇E‖ ≤ tol · max(‖∇E₀‖, E, 1)`` per pair, ``∇E₀`` the gradient at the initial curve
        (default 1e-6 float64, 5e-3 float32: float32 gradients of the discrete energy carry
        roundoff of about 1e-3 of their scale; the energy itself is then within ~1e-7 of its minimum).
    init : optional initial curve ``(..., n_points, d)`` (endpoints are overwritten).

    Returns :class:`GeodesicResult` with ``curve (..., n_points, d)``, ``length``,
    ``energy``, ``converged``, ``grad_norm``, ``n_iter``.  The optimisation runs
    on the inputs' device; parameters of the metric (decoder weights) receive no
    gradient.  The returned curve depends on ``z0, z1`` through the initial curve
    only (the displacement is detached).
    """
    _check_metric(metric)
    if n_points < 3:
        raise ValueError(f"n_points must be >= 3, got {n_points}")
    M = _manifold_of(metric, manifold)
    if M is not None and geometry_of(M).ndim != 1:
        raise ValueError("connecting_geodesic: latent manifolds with matrix points are not supported (manifold)")
    z0, z1 = torch.broadcast_tensors(z0, z1)
    dtype, device = z0.dtype, z0.device
    if tol is None:
        tol = 1e-6 if dtype == torch.float64 else 5e-3
    t = torch.linspace(0, 1, n_points, dtype=dtype, device=device)
    euclid = M is None or geometry_of(M).linear
    with torch.no_grad():
        if init is not None:
            base = init.detach().clone()
            base[..., 0, :] = z0
            base[..., -1, :] = z1
        elif euclid:
            base = z0.unsqueeze(-2) + t[:, None] * (z1 - z0).unsqueeze(-2)
        else:
            base = _g.interpolate(M, z0, z1, n_points).movedim(0, -2)
    base = _with_ends(base.detach(), z0.detach(), z1.detach())
    S = _sine_basis(n_points, dtype, device)
    coef = torch.zeros(base.shape[:-2] + (n_points - 2, base.shape[-1]), dtype=dtype, device=device, requires_grad=True)

    def build(c, base=base):
        disp = S @ c
        inner = base[..., 1:-1, :]
        if euclid:
            inner = inner + disp
        else:
            inner = _g.expmap(M, inner, _g.tangent_project(M, inner, disp))
        return torch.cat((base[..., :1, :], inner, base[..., -1:, :]), -2)

    def energies(c):
        return curve_energy(metric, build(c), condition=condition, manifold=M)

    # the optimisation needs autograd even when the caller is under torch.no_grad()
    with torch.enable_grad():
        c0 = coef.detach().requires_grad_(True)
        e0 = energies(c0)
        (g0,) = torch.autograd.grad(e0.sum(), c0)
        g0 = g0.flatten(-2).norm(dim=-1)
        e0 = e0.detach().abs().clamp_min(1.0)
        opt = torch.optim.LBFGS(
            [coef],
            lr=1.0,
            max_iter=max_iter,
            history_size=history_size,
            # max-abs gradient of all pairs: stop when every pair is well below its own tolerance
            tolerance_grad=float(0.1 * tol * torch.maximum(g0, e0).min()),
            tolerance_change=float(10 * torch.finfo(dtype).eps * e0.sum()),
            line_search_fn="strong_wolfe",
        )

        def closure():
            e = energies(coef).sum()
            (g,) = torch.autograd.grad(e, coef)
            coef.grad = g
            return e.detach()

        opt.step(closure)
        n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
        coef_final = coef.detach().requires_grad_(True)
        e = energies(coef_final)
        (g,) = torch.autograd.grad(e.sum(), coef_final)
        gnorm = g.flatten(-2).norm(dim=-1)
        e = e.detach()
        converged = gnorm <= tol * torch.maximum(g0, e.abs().clamp_min(1.0))
    # the curve, differentiable in z0/z1 through the initial curve
    if euclid:
        base_g = z0.unsqueeze(-2) + t[:, None] * (z1 - z0).unsqueeze(-2) if init is None else base
    else:
        base_g = _g.interpolate(M, z0, z1, n_points).movedim(0, -2) if init is None else base
    curve = build(coef.detach(), base=_with_ends(base_g, z0, z1))
    q = segment_speeds(metric, curve, condition=condition, manifold=M)
    length = q.clamp_min(0).sqrt().sum(-1)
    energy = 0.5 * (n_points - 1) * q.sum(-1)
    return GeodesicResult(curve=curve, length=length, energy=energy, converged=converged, grad_norm=gnorm, n_iter=n_iter)


class ChartMetric(MetricField):
    r"""A metric field pulled back through the normal-coordinate chart ``u ↦ exp_p(B u)``.

    ``base`` ``p`` ``(..., D)`` on ``manifold``, ``B`` ``(..., D, m)`` a basis of ``T_pM``;
    ``u`` in ``R^m``. ``quadratic(u, w) = q_M(φ(u), Dφ(u)[w])`` by one JVP of the chart.
    Used by :func:`shooting_geodesic` on latent manifolds.
    """

    def __init__(self, metric, manifold, base, basis):
        super().__init__()
        self.inner_metric = metric
        self.chart_manifold = manifold
        self.base = base
        self.basis = basis

    def chart(self, u):
        # u: (..., m) broadcasting from the right with the base points (...,)
        return _g.expmap(self.chart_manifold, self.base, (self.basis @ u.unsqueeze(-1)).squeeze(-1))

    def quadratic(self, u, w, condition=None):
        u, w = torch.broadcast_tensors(u, w)
        z, dz = _fjvp(self.chart, (u,), (w,))
        return self.inner_metric.quadratic(z, dz, condition=condition)

    def metric(self, u, condition=None):
        m = u.shape[-1]
        eye = torch.eye(m, dtype=u.dtype, device=u.device)
        basis = eye.reshape((m,) + (1,) * (u.dim() - 1) + (m,)).expand((m,) + u.shape)
        z = self.chart(u)
        dz = torch.func.vmap(lambda e: _fjvp(self.chart, (u,), (e,))[1])(basis).movedim(0, -1)  # (..., D, m)
        G = self.inner_metric.metric(z, condition=condition)
        return dz.transpose(-1, -2) @ G @ dz


def _tangent_basis(M, p):
    D = p.shape[-1]
    g = geometry_of(M)
    m = g.intrinsic_dim(p.shape[-1:])
    eye = torch.eye(D, dtype=p.dtype, device=p.device).expand(p.shape[:-1] + (D, D))
    proj = g.proju(p.unsqueeze(-2), eye).transpose(-1, -2)  # columns = P e_j
    U, _, _ = torch.linalg.svd(proj)
    return U[..., :m]


def shooting_geodesic(metric, z, v, t: float = 1.0, n_steps: int = 100, *, condition=None, manifold=None):
    r"""Solve the geodesic initial-value problem ``z(0) = z``, ``ż(0) = v`` up to time ``t`` (RK4).

    Parameters
    ----------
    metric : :class:`~dlmppl.geometry.MetricField` (its :meth:`acceleration` gives ``-Γ[v, v]``).
    z, v : ``(..., d)``; on a latent manifold ``v`` must be tangent at ``z``.
    t : final time; n_steps : RK4 steps.

    Returns :class:`GeodesicResult` with ``curve`` and ``velocity`` ``(..., n_steps+1, d)``,
    ``length`` and ``energy = ½∫₀ᵗ‖ż‖²`` of the discrete curve.  Differentiable in ``z``, ``v``.
    On a latent manifold the integration runs in the normal chart at ``z`` (valid up to
    the cut locus of ``z``).
    """
    _check_metric(metric)
    M = _manifold_of(metric, manifold)
    z, v = torch.broadcast_tensors(z, v)
    if M is not None and not geometry_of(M).linear:
        B = _tangent_basis(M, z)
        chart = ChartMetric(metric, M, z, B)
        u0 = torch.zeros(z.shape[:-1] + (B.shape[-1],), dtype=z.dtype, device=z.device)
        w0 = (B.transpose(-1, -2) @ v.unsqueeze(-1)).squeeze(-1)
        res = shooting_geodesic(chart, u0, w0, t, n_steps, condition=condition)
        curve, vel = torch.func.jvp(chart.chart, (res.curve.movedim(-2, 0),), (res.velocity.movedim(-2, 0),))
        curve, vel = curve.movedim(0, -2), vel.movedim(0, -2)
        q = segment_speeds(metric, curve, condition=condition, manifold=M)
        return GeodesicResult(
            curve=curve, length=q.clamp_min(0).sqrt().sum(-1), energy=0.5 * n_steps * q.sum(-1) / t, velocity=vel
        )
    h = t / n_steps

    def f(x, u):
        return u, metric.acceleration(x, u, condition=condition)

    xs, us = [z], [v]
    x, u = z, v
    for _ in range(n_steps):
        k1x, k1u = f(x, u)
        k2x, k2u = f(x + 0.5 * h * k1x, u + 0.5 * h * k1u)
        k3x, k3u = f(x + 0.5 * h * k2x, u + 0.5 * h * k2u)
        k4x, k4u = f(x + h * k3x, u + h * k3u)
        x = x + h / 6 * (k1x + 2 * k2x + 2 * k3x + k4x)
        u = u + h / 6 * (k1u + 2 * k2u + 2 * k3u + k4u)
        xs.append(x)
        us.append(u)
    curve = torch.stack(xs, -2)
    vel = torch.stack(us, -2)
    q = segment_speeds(metric, curve, condition=condition)
    return GeodesicResult(curve=curve, length=q.clamp_min(0).sqrt().sum(-1), energy=0.5 * n_steps * q.sum(-1) / t, velocity=vel)
