r"""Optimal-transport losses with geodesic ground costs, on POT's torch backend.

The ground cost between two point clouds comes from one function,
:func:`_cost`, which returns ``d(x_i, y_j) ** p`` for the geodesic distance
``d`` of a manifold (Euclidean distance when no manifold is given, so that
``p = 2`` is the squared Euclidean cost).  Every loss here is the transport
cost for that ground cost, i.e. ``W_p(μ, ν) ** p``; take the ``1/p``-th power
for the distance ``W_p`` itself.

References: Peyré & Cuturi, "Computational Optimal Transport", 2019;
Flamary et al., "POT: Python Optimal Transport", JMLR 2021; Cuturi,
"Sinkhorn distances", NeurIPS 2013; Bonneel et al., "Sliced and Radon
Wasserstein barycenters of measures", JMIV 2015; Bonet et al., "Spherical
sliced-Wasserstein", ICLR 2023.
"""

from __future__ import annotations

import math

import geoopt
import ot
import torch

from ..geometry import geometry_of
from ._checks import check_cloud, check_finite, check_int, check_power, validating

__all__ = ["manifold_distances", "wasserstein"]


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    # the clamp keeps the gradient finite (zero) where two points coincide
    return v.pow(2).sum(-1).clamp_min(torch.finfo(v.dtype).tiny).sqrt()


_EUCLIDEAN = geoopt.Euclidean(1)


def _one_curvature(geometry, like: torch.Tensor) -> None:
    """Pairwise distances broadcast ``(n, 1, D)`` against ``(1, m, D)``: one curvature for all points."""
    if hasattr(geometry, "sectional_curvature") and geometry.sectional_curvature(like).numel() != 1:
        raise ValueError(
            "manifold: pairwise distances need one curvature for all points, got a "
            f"curvature of shape {tuple(geometry.sectional_curvature(like).shape)}"
        )


def manifold_distances(x: torch.Tensor, y: torch.Tensor, manifold=None) -> torch.Tensor:
    r"""Geodesic distances on ``manifold`` between every point of ``x`` and every point of ``y``, in closed form.

    The ground distances of the OT and PH losses.  For a metric field, where no
    closed form exists, it hands over to :func:`dlmppl.geometry.metric_distances`.

    Parameters
    ----------
    x : Tensor, shape ``(n, D)``
    y : Tensor, shape ``(m, D)``
        points in ambient coordinates (``D = d + 1`` on ``S^d`` and the
        hyperboloid).
    manifold : geoopt manifold or None
        ``None``: ``‖x - y‖``; a manifold: its family's
        :meth:`~dlmppl.geometry.Geometry.dist` broadcast over pairs (Euclidean ``‖x - y‖``; sphere
        ``2 atan2(‖x - y‖, ‖x + y‖)``, finite gradients at coincident and antipodal points;
        κ-stereographic :func:`dlmppl.kmath.dist`, smooth through κ = 0; Lorentz(k)
        :func:`dlmppl.lmath.dist`, cancellation-free far from the origin).  A metric field
        (:class:`dlmppl.geometry.MetricField`: pull-back, learned, Chadebec...):
        lengths of connecting geodesics from
        :func:`dlmppl.geometry.metric_distances` (``n m`` batched L-BFGS
        solves of 16-point discrete curves: orders of magnitude dearer than a
        closed form; see that module for the cost).

    Returns
    -------
    Tensor, shape ``(n, m)``, differentiable in both clouds (and in the
    curvature when it is learnable).  Coincident points have a zero gradient.
    NaN or infinite coordinates are a ``ValueError`` naming the cloud when
    Pyro's validation is on (the default).
    """
    check_cloud(x, "x")
    check_cloud(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x, y: expected point clouds of shapes (n, D) and (m, D), got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    if validating():
        check_finite(x, "x")
        check_finite(y, "y")
    return _manifold_distances(x, y, manifold)


def _manifold_distances(x: torch.Tensor, y: torch.Tensor, manifold=None) -> torch.Tensor:
    if _is_metric_field(manifold):
        from ..geometry.distances import metric_distances

        return metric_distances(manifold, x, y)
    return _geodesic(x[:, None, :], y[None, :, :], manifold)


def _is_metric_field(manifold) -> bool:
    from ..geometry.metrics import MetricField

    return isinstance(manifold, MetricField)


def _geodesic(x: torch.Tensor, y: torch.Tensor, manifold=None) -> torch.Tensor:
    """Geodesic distance between broadcasting point tensors ``x``, ``y`` (``(..., D)``)."""
    if manifold is None:
        return _safe_norm(x - y)
    if _is_metric_field(manifold):
        from ..geometry.distances import paired_metric_distances

        x, y = torch.broadcast_tensors(x, y)
        shape = x.shape[:-1]
        d = paired_metric_distances(manifold, x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))
        return d.reshape(shape)
    g = geometry_of(manifold)
    _one_curvature(g, x)
    return g.dist(x, y)


def _sq_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``‖x_i - y_j‖²``, shape ``(n, m)``, by one matrix product (``ot.dist``'s formula).

    ``‖x‖² + ‖y‖² - 2 x·y`` needs no ``(n, m, D)`` temporary and no square root
    squared again; both clouds are first centred at one common point (the cost is
    translation invariant, so the detached shift changes neither the value nor
    the gradient), which keeps the cancellation of the formula at the scale of
    the clouds' spread instead of their distance from the origin.
    """
    c = (x.detach().mean(0) + y.detach().mean(0)) / 2
    xc, yc = x - c, y - c
    C = torch.addmm(yc.pow(2).sum(-1)[None, :], xc, yc.T, alpha=-2)
    return (C + xc.pow(2).sum(-1)[:, None]).clamp_min(0)


def _cost(x: torch.Tensor, y: torch.Tensor, manifold=None, p: float = 2) -> torch.Tensor:
    """Ground-cost matrix ``d(x_i, y_j) ** p``, shape ``(n, m)``.

    The single place where ground costs are made, so that other notions of
    distance (e.g. metric fields) can be plugged in here.  Euclidean ``p = 2``
    is :func:`_sq_euclidean` (no square root squared again).
    """
    if manifold is None and p == 2:
        return _sq_euclidean(x, y)
    d = _manifold_distances(x, y, manifold)
    return d if p == 1 else d.pow(p)


def _sinkhorn_value(C, a, b, reg, max_iter, tol):
    """Entropic OT value ``⟨P, C⟩ + reg·KL(P ‖ a⊗b)`` with envelope-theorem gradients.

    Log-domain Sinkhorn (``ot.bregman.sinkhorn_log``) with ε-scaling: ε is
    halved from the largest cost down to ``reg`` with two iterations per
    stage, warm-starting each stage from the previous potentials (Schmitzer
    2019; Feydy et al. 2019); the last stage runs to ``tol`` or ``max_iter``.
    The number of stages, ``⌈log2(max C / reg)⌉``, is fixed before the loop
    (``C`` is finite, checked by the caller).  When ``reg`` is tiny against
    the cost range the last stage still converges slowly (Sinkhorn's linear
    rate): in training loops use ``tol ≈ 1e-3`` or a small ``max_iter``.

    Points of zero weight carry no mass: the solve runs on the supports of
    ``a`` and ``b`` (so ``log 0 = -inf`` never enters POT), and the dual
    potentials are extended to every point by the soft c-transforms
    ``f_i = -reg log Σ_j b_j exp((g_j - C_ij)/reg)`` (and the same for ``g``),
    the gradient of the value in ``a`` and ``b`` (Feydy et al. 2019, §2).
    At convergence the gradient is ``P`` for ``C`` and ``f``, ``g`` for
    ``a``, ``b`` (centred: the weights' total is fixed).
    """
    with torch.no_grad():
        C0, a0, b0 = C.detach(), a.detach(), b.detach()
        # the only host syncs: the cost range (for the ε-schedule) and the supports
        sa, sb = a0 > 0, b0 > 0
        full = bool(sa.all()) and bool(sb.all())
        if full:
            Cs, as_, bs = C0, a0, b0
        else:
            Cs, as_, bs = C0[sa][:, sb], a0[sa], b0[sb]
        cmax = float(Cs.max())
        if cmax / reg > torch.finfo(C0.dtype).max:
            raise ValueError(
                f"reg: {reg:.3g} is too small for costs up to {cmax:.3g}: cost / reg overflows "
                f"{C0.dtype}"
            )
        loga, logb = as_.log(), bs.log()
        # log2 of each: cmax / reg may overflow for a subnormal reg
        n_stages = math.ceil(math.log2(cmax) - math.log2(reg)) if cmax > reg else 0
        eps, u, v = cmax, None, None
        for _ in range(n_stages):
            _, log = ot.bregman.sinkhorn_log(
                as_, bs, Cs, eps, numItermax=2, stopThr=tol, log=True, warn=False,
                warmstart=None if u is None else (u, v),
            )
            nxt = max(eps / 2, reg)
            # POT's log-scalings are u = f/ε + log a, v = g/ε + log b: keep f, g
            # for the next ε, with the free constant (f + c, g - c) split evenly,
            # so |f|/ε and |g|/ε stay ~ max C / 2ε: at tiny ε a drifting
            # constant of order 1/ε would cost the exponents their last digits
            fe, ge = log["log_u"] - loga, log["log_v"] - logb
            shift = 0.5 * (fe.mean() - ge.mean())
            u = (fe - shift) * (eps / nxt) + loga
            v = (ge + shift) * (eps / nxt) + logb
            eps = nxt
        P, log = ot.bregman.sinkhorn_log(
            as_, bs, Cs, reg, numItermax=max_iter, stopThr=tol, log=True,
            warmstart=None if u is None else (u, v),
        )
        ab = as_[:, None] * bs[None, :]
        kl = (torch.special.xlogy(P, P) - torch.special.xlogy(P, ab) - P + ab).sum()
        gs = reg * (log["log_v"] - logb)
        # soft c-transforms: potentials at every point, finite at zero weights
        f = -reg * torch.logsumexp(logb[None, :] + (gs[None, :] - C0[:, sb]) / reg, 1)
        fs = f if full else f[sa]
        g = -reg * torch.logsumexp(loga[:, None] + (fs[:, None] - C0[sa]) / reg, 0)
        f, g = f - f.mean(), g - g.mean()
        if not full:
            P = torch.zeros_like(C0).index_put_(
                (sa.nonzero()[:, :1], sb.nonzero()[:, 0][None, :]), P
            )
    value = (C * P).sum() + reg * kl
    return value + (f * (a - a0)).sum() + (g * (b - b0)).sum()


def _weights(w, n, like, name, check_values):
    """Weights of a cloud of ``n`` points, normalised to sum one.

    Zero weights are legal (a point without mass); negative or non-finite
    weights and a non-positive total are a ``ValueError`` naming ``name``.
    """
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(w, device=like.device)
    if not (w.is_floating_point() or w.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name}: expected real weights, got {w.dtype}")
    w = w.to(like.dtype)
    if w.shape != (n,):
        raise ValueError(f"{name}: expected weights of shape ({n},), got {tuple(w.shape)}")
    total = w.sum()
    if check_values:
        check_finite(w, name, "weights")
        if bool((w < 0).any()):
            raise ValueError(f"{name}: weights must be non-negative, got {float(w.min()):.3g}")
        if not bool(total > 0):
            raise ValueError(f"{name}: weights must have a positive sum, got {float(total):.3g}")
    return w / total


def wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    manifold=None,
    p: float = 2,
    method: str = "emd",
    reg: float = 0.05,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    n_projections: int = 50,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> torch.Tensor:
    r"""Optimal-transport cost ``W_p(μ, ν)^p`` between two weighted point clouds.

    ``μ = Σ a_i δ_{x_i}``, ``ν = Σ b_j δ_{y_j}`` (uniform weights by default)
    and the ground cost is ``d(x, y)^p`` with ``d`` the geodesic distance of
    ``manifold`` (see :func:`manifold_distances`; Euclidean when ``None``, so
    ``p = 2`` gives the squared Euclidean cost).  Convention: the value is the
    *cost* ``W_p^p`` (for a point and its rotation by θ on the sphere: θ for
    ``p = 1``, θ² for ``p = 2``), as returned by ``ot.emd2``.

    Parameters
    ----------
    x : Tensor, shape ``(n, D)``
    y : Tensor, shape ``(m, D)``
    manifold : geoopt manifold, a metric field (:class:`dlmppl.geometry.MetricField`), or None
    p : float
        power of the ground distance, finite and positive (``p = inf``, W_∞,
        is a ``ValueError``: the value is ``W_p^p``).
    method : {"emd", "sinkhorn", "sliced"}
        ``"emd"``: exact OT (network simplex, ``ot.emd2``; CPU solver, the plan
        comes back to the inputs' device, gradients by the envelope theorem).
        ``"sinkhorn"``: entropic OT solved in the log domain
        (``ot.bregman.sinkhorn_log`` with ε-scaling; small ``reg`` neither
        underflows nor stalls), value ``⟨P, C⟩ + reg·KL(P ‖ a⊗b)`` with envelope
        gradients (exact at convergence, no unrolled iterations, so memory is
        one cost matrix); it tends to the EMD value as ``reg → 0``.
        ``"sliced"``: sliced Wasserstein ``SW_p^p`` (in arc length on spheres) with ``n_projections``
        random directions drawn from torch's generator: spherical sliced
        Wasserstein (Bonet et al. 2023, ``ot.sliced_wasserstein_sphere``) on
        spheres, Euclidean slicing of the ambient coordinates otherwise
        (``ot.sliced_wasserstein_distance``).  Never builds the cost matrix.
    reg : float
        entropic regularisation for ``"sinkhorn"``, in units of the cost.
    a, b : Tensor, shape ``(n,)`` and ``(m,)``, optional
        non-negative weights, normalised to sum one (uniform by default).
        Zero weights are legal: such a point carries no mass and the value is
        that of the clouds without it, in every method.
    n_projections : int
        number of slices for ``"sliced"``, ``>= 1``.
    max_iter, tol : Sinkhorn's iteration limit (``>= 1``) and tolerance on the
        L2 norm of the marginal violation (POT warns when it stops before
        ``tol``).

    Returns
    -------
    Tensor, shape ``()``, on the inputs' device, differentiable with respect
    to ``x``, ``y`` (and ``a``, ``b`` for ``"emd"`` and ``"sinkhorn"``).

    Raises
    ------
    ValueError
        naming the argument: an empty cloud (the cost between empty measures
        is undefined), NaN or infinite coordinates, negative or non-finite
        weights or weights of zero total, a non-finite ground cost, ``p`` not
        finite and positive, ``reg`` not finite and positive,
        ``n_projections < 1``.  ``"emd"`` and ``"sinkhorn"`` always check the
        values (they synchronise with the host anyway); ``"sliced"``, which
        otherwise never leaves the device, checks them when Pyro's validation
        is on (the default).
    """
    check_cloud(x, "x")
    check_cloud(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x, y: expected point clouds of shapes (n, D) and (m, D), got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    for name, c in (("x", x), ("y", y)):
        if c.shape[0] == 0:
            raise ValueError(f"{name}: the optimal-transport cost needs a non-empty point cloud")
    if method not in ("emd", "sinkhorn", "sliced"):
        raise ValueError(f"method: expected 'emd', 'sinkhorn' or 'sliced', got {method!r}")
    p = check_power(p)
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    # exact OT and Sinkhorn sync with the host anyway (POT's CPU solver, the
    # ε-schedule): their values are always checked; sliced only when validating
    check_values = method != "sliced" or validating()
    if check_values:
        check_finite(x, "x")
        check_finite(y, "y")
    a = _weights(a, x.shape[0], x, "a", check_values)
    b = _weights(b, y.shape[0], x, "b", check_values)
    if method == "emd":
        C = _checked_cost(x, y, manifold, p)
        return ot.emd2(a, b, C)
    if method == "sinkhorn":
        try:
            reg_ok = math.isfinite(float(reg)) and float(reg) > 0
        except (TypeError, ValueError):
            reg_ok = False
        if not reg_ok:
            raise ValueError(f"reg: must be a finite positive number for method='sinkhorn', got {reg!r}")
        reg = float(reg)
        max_iter = check_int(max_iter, "max_iter", 1)
        if not tol >= 0:
            raise ValueError(f"tol: must be >= 0, got {tol}")
        C = _checked_cost(x, y, manifold, p)
        return _sinkhorn_value(C, a, b, reg, max_iter, tol)
    n_projections = check_int(n_projections, "n_projections", 1)
    if _is_metric_field(manifold):
        raise ValueError("manifold: sliced Wasserstein needs a manifold with closed-form projections, not a metric field")
    sw = geometry_of(manifold if manifold is not None else _EUCLIDEAN).sliced_wasserstein(x, y, a, b, n_projections, p)
    return sw if p == 1 else sw.pow(p)


def _checked_cost(x, y, manifold, p):
    C = _cost(x, y, manifold, p)
    if manifold is None and p == 2:
        # finite points (checked by the caller): every entry is at most
        # 2(‖x_i - c‖² + ‖y_j - c‖²), so checking the largest squared norms (O(n)
        # instead of a pass over the n × m matrix) is enough
        c = (x.detach().mean(0) + y.detach().mean(0)) / 2
        top = 2 * ((x.detach() - c).pow(2).sum(-1).max() + (y.detach() - c).pow(2).sum(-1).max())
        if bool(torch.isfinite(top)):
            return C
    # finite points can still give a non-finite cost: off-manifold points, an
    # overflowing d**p, a manifold whose curvature overflowed
    if not bool(torch.isfinite(C.detach()).all()):
        raise ValueError(
            "x, y: the ground cost d(x, y)**p is not finite for these points (points off "
            "the manifold, a manifold whose curvature overflowed, or distances whose p-th "
            "power overflows the dtype)"
        )
    return C
