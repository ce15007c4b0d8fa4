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
sliced-Wasserstein", ICLR 2023; Feydy, "Geometric data analysis, beyond
convolutions", PhD thesis, 2020 (§3.3, symmetric ε-scaling); Feydy et al.,
"Interpolating between optimal transport and MMD using Sinkhorn divergences",
AISTATS 2019.
"""

from __future__ import annotations

import math
import warnings

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


# Sinkhorn: cost blocks in memory up to this many entries; beyond, rows are recomputed by blocks
_DENSE_MAX_ENTRIES = 2**24
_BLOCK_ENTRIES = 2**22


# exp of arguments below about -87 (float32) takes a slow path on x86 CPUs (subnormal and
# underflowing results: ~10x the time of the whole softmin); terms below exp(-_EXP_FLOOR)
# times the largest one are below the rounding of either dtype and are clamped there
_EXP_FLOOR = 80.0


def _logsumexp_(A: torch.Tensor) -> torch.Tensor:
    """``logsumexp(A, 1)``, shape ``(k,)``, overwriting ``A`` (``(k, m)``): the same value to
    rounding (terms under ``exp(-_EXP_FLOOR)`` times the row's largest are clamped there)."""
    m = A.amax(1, keepdim=True)
    A.sub_(m).clamp_(min=-_EXP_FLOOR).exp_()
    return A.sum(1).log_().add_(m[:, 0])


def _softmax_(A: torch.Tensor, massless: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(A, 1)`` in place in ``A`` (``(k, m)``), clamped as :func:`_logsumexp_`;
    the columns ``massless`` (a boolean mask or None: zero weights) are exactly 0."""
    m = A.amax(1, keepdim=True)
    A.sub_(m).clamp_(min=-_EXP_FLOOR).exp_()
    if massless is not None:
        A[:, massless] = 0
    return A.div_(A.sum(1, keepdim=True))


class _CostBlocks:
    """Row blocks of the ground cost (no autograd), dense or recomputed from the clouds.

    Dense (``n m ≤ 2^24``): ``C`` and a contiguous ``Cᵀ`` are kept.  Otherwise blocks of
    ``≈ 2^22`` entries are recomputed from ``x``, ``y`` at every pass (``O(n + m)`` memory
    besides one block; the geodesic distances are symmetric, so the blocks of ``Cᵀ`` are
    ``cost(y_block, x)``).
    """

    def __init__(self, x, y, manifold, p, C=None):
        self.x, self.y, self.manifold, self.p = x.detach(), y.detach(), manifold, p
        self.C = None if C is None else C.detach()
        self.Ct = None if C is None else self.C.T.contiguous()
        # squared Euclidean cost by blocks: h_j - C_ij/ε = (h_j - |y_j|²/ε) - |x_i|²/ε + (2/ε) x_i·y_j,
        # one matrix product per block and the row constant outside the log-sum-exp
        # (clouds centred at a common point, as in _sq_euclidean)
        self.sq = C is None and manifold is None and p == 2
        if self.sq:
            c = (self.x.mean(0) + self.y.mean(0)) / 2
            self.xc, self.yc = self.x - c, self.y - c
            self.x2, self.y2 = self.xc.pow(2).sum(-1), self.yc.pow(2).sum(-1)

    def _sq_softmin(self, eps, h, rows, rows2, cols, cols2):
        out = torch.empty(rows.shape[0], dtype=h.dtype, device=h.device)
        hh = h - cols2 / eps
        step = max(1, _BLOCK_ENTRIES // max(1, cols.shape[0]))
        for i in range(0, rows.shape[0], step):
            out[i:i + step] = _logsumexp_(torch.addmm(hh[None, :], rows[i:i + step], cols.T, alpha=2 / eps))
        return (out - rows2 / eps).mul_(-eps)

    def _blocks(self, rows, cols, dense):
        if dense is not None:
            yield slice(None), dense
            return
        step = max(1, _BLOCK_ENTRIES // max(1, cols.shape[0]))
        for i in range(0, rows.shape[0], step):
            with torch.no_grad():
                yield slice(i, i + step), _cost(rows[i:i + step], cols, self.manifold, self.p)

    def _softmin(self, eps, h, rows, cols, dense):
        out = torch.empty(rows.shape[0], dtype=h.dtype, device=h.device)
        for sl, Cb in self._blocks(rows, cols, dense):
            out[sl] = _logsumexp_(torch.add(h[None, :], Cb, alpha=-1 / eps))
        return out.mul_(-eps)

    def softmin_rows(self, eps, h):
        """``-ε log Σ_j exp(h_j - C_ij/ε)`` for every row ``i``, shape ``(n,)``."""
        if self.sq:
            return self._sq_softmin(eps, h, self.xc, self.x2, self.yc, self.y2)
        return self._softmin(eps, h, self.x, self.y, self.C)

    def softmin_cols(self, eps, h):
        """``-ε log Σ_i exp(h_i - C_ij/ε)`` for every column ``j``, shape ``(m,)``."""
        if self.sq:
            return self._sq_softmin(eps, h, self.yc, self.y2, self.xc, self.x2)
        return self._softmin(eps, h, self.y, self.x, self.Ct)

    def plan_blocks(self, eps, a, logb, g):
        """Row blocks ``(rows, C_block, P_block)`` of the plan ``P_ij = a_i softmax_j(log b_j + (g_j - C_ij)/ε)``.

        The plan of ``f = T(g)``, normalised by rows, so that it never overflows even where the
        potentials are too large for the dtype to resolve ``ε`` (float32 costs of 1e10).
        """
        massless = (logb == -math.inf) if bool((logb == -math.inf).any()) else None
        for sl, Cb in self._blocks(self.x, self.y, self.C):
            yield sl, Cb, _softmax_(torch.add(logb + g / eps, Cb, alpha=-1 / eps), massless).mul_(a[sl, None])

    def max(self):
        if self.C is not None:
            return self.C.max()
        return max(Cb.max() for _, Cb in self._blocks(self.x, self.y, None))


# Sinkhorn's ε-schedule and stopping (Feydy 2020, §3.3; Thibault et al. 2017; Brauer et al. 2017)
_SCALING = 0.1  # ratio of two successive ε of the annealing, at first
_SCALING_MAX = 0.5  # the slowest ratio, after stages that did not converge
_STAGE_UPDATES = 20  # at most this many alternating updates at each intermediate ε
_CHECK_EVERY = 10  # updates between two reads of the marginal error off the CPU (a device sync)
_OMEGA_MAX = 1.8  # over-relaxation cap (ω ≥ 1.9 diverged from cold starts at small ε)
_STALL = 20  # a solve at reg whose error fell less than 2× over this many updates has stalled
_NEWTON_MAX = 2**27  # n·n·m up to which a stalled solve at reg takes dense Newton steps
_TRUST = 4.0  # a Newton step changes no log-plan entry by more than this


def _newton_direction(C, eps, a, b, f, g):
    """Newton step ``δf`` of the dual in ``f``, ``g = T(f)`` eliminated (Brauer et al. 2017).

    ``(diag(P1) - P diag(b)⁻¹ Pᵀ) δf = ε (a - P1)``: a graph Laplacian (PSD, null vector
    ``1``, to which the right side is orthogonal), solved in float64 with the constant
    direction pinned by a rank-one term.  It moves the weakly coupled blocks of a nearly
    sparse plan against each other in one step: the mode whose Sinkhorn contraction rate
    tends to 1 as ``ε → 0``.
    """
    f64, g64, a64, b64 = f.double(), g.double(), a.double(), b.double()
    P = torch.exp(a64.log()[:, None] + b64.log()[None, :] + (f64[:, None] + g64[None, :] - C.double()) / eps)
    r = P.sum(1)
    H = torch.diag(r) - (P / b64) @ P.T
    lam, V = torch.linalg.eigh(H)
    # pseudo-inverse: the constant vector, and blocks whose coupling underflowed, are not moved
    keep = lam > lam[-1] * 1e-12
    return (V[:, keep] @ ((V[:, keep].T @ (eps * (a64 - r))) / lam[keep])).to(f.dtype)


def _sinkhorn_at(costs, eps, f, loga, logb, a, b, tol, max_updates, check_every, newton):
    """Alternating Sinkhorn updates at one ``ε`` from ``f``: ``(T(g), g, updates, error)``.

    Each update is ``g = T(f)`` (columns exact), then ``T(g)``, which gives the row marginal
    ``a exp((f - T(g))/ε)`` of ``(f, g)``: its L2 error comes for free, read every
    ``check_every`` updates; stop when it is at most ``tol`` or after ``max_updates``.
    ``f`` is over-relaxed (Thibault et al. 2017), ``ω = 2/(1 + √(1 - κ))`` from the observed
    rate ``κ`` per update, capped at ``_OMEGA_MAX``, back to 1 whenever the error grows.  With
    ``newton`` (small dense problems with positive weights), a solve whose error fell less than
    2× over ``_STALL`` updates takes Newton steps (:func:`_newton_direction`) in a trust
    region (no log-plan entry moves by more than ``_TRUST``), halved until they raise the dual
    ``⟨a, f⟩ + ⟨b, T(f)⟩`` (at most 5 halvings; then no more Newton).
    """
    err, omega, it = math.inf, 1.0, 0
    hist = []  # (update, error) at the reads
    trial = None  # (f before the Newton step, its dual, its error, its direction, step, first step)
    stepping = False  # after an accepted Newton step, Newton steps follow one another
    while True:
        g = costs.softmin_cols(eps, loga + f / eps)
        fn = costs.softmin_rows(eps, logb + g / eps)
        it += 1
        if trial is not None or it % check_every == 0 or it >= max_updates:
            err = float(torch.linalg.vector_norm(a * torch.expm1((f - fn) / eps)))
            hist.append((it, err))
        if err <= tol or it >= max_updates:
            return fn, g, it, err  # f = T(g): the rows of the plan are a exactly
        if trial is not None:
            f0, d0, e0, d, t, t0 = trial
            trial = None
            if not float((a * f).sum() + (b * g).sum()) > d0:  # the dual did not rise: a shorter
                if t > t0 / 32:  # step, or back to Sinkhorn for good
                    trial = (f0, d0, e0, d, t / 2, t0)
                    f = f0 + (t / 2) * d
                else:
                    newton, f, err, omega = False, f0, e0, 1.0
                    hist = [(it, e0)]
                continue
            hist = [(it, err)]  # accepted
            omega, stepping = 1.0, True
        if hist and hist[-1][0] == it:
            stalled = it - hist[0][0] >= _STALL and err > next(e for i, e in reversed(hist) if i <= it - _STALL) / 2
            if newton and (stepping or stalled):
                d = _newton_direction(costs.C, eps, a, b, f, g)
                # trust region: no entry of the plan changes by more than exp(_TRUST) in one step
                t = min(1.0, _TRUST * eps / max(float(d.abs().max()), torch.finfo(d.dtype).tiny))
                trial = (f, float((a * f).sum() + (b * g).sum()), err, d, t, t)
                f = f + t * d
                continue
            if len(hist) >= 2:
                (i0, e0), (i1, e1) = hist[-2], hist[-1]
                if e1 >= e0:
                    omega = 1.0
                elif omega == 1.0 and len(hist) >= 6 and e1 < hist[-6][1]:
                    i0, e0 = hist[-6]
                    kappa = (e1 / e0) ** (1 / (i1 - i0))
                    omega = min(2 / (1 + math.sqrt(1 - kappa)), _OMEGA_MAX)
        f = fn if omega == 1.0 else f + omega * (fn - f)


def _sinkhorn_potentials(costs: _CostBlocks, a, b, reg, max_iter, tol, cmax):
    """Dual potentials ``(f, g)`` of entropic OT at ``ε = reg`` (log domain), the updates at
    ``reg`` and the final marginal error.

    Symmetric ε-scaling with annealing of the potentials (Feydy 2020, §3.3; Feydy et al.
    2019): from ``ε = max C`` down to ``reg`` by factors of ``_SCALING`` (its square root
    after each stage that did not reach ``tol``, up to ``_SCALING_MAX``: problems that are
    hard at small ε, e.g. nearly a permutation plan, anneal more slowly); at each ε one
    symmetric update ``f ← (f + T(g))/2, g ← (g + T(f))/2`` (both from the previous pair),
    then alternating updates until the marginal error at that ε is at most ``tol`` (at most
    ``_STAGE_UPDATES`` of them before ``reg``; at ``reg``, ``max_iter``): a coarse ``tol``
    passes through the schedule with one update per stage, a fine one refines each stage.
    See :func:`_sinkhorn_at` for the updates and the stopping rule.  Zero weights enter as
    ``log 0 = -inf`` (no mass), and the potentials at those points are the soft
    c-transforms, the gradient of the value in the weights.
    """
    loga, logb = a.log(), b.log()
    check_every = 1 if a.device.type == "cpu" else _CHECK_EVERY
    newton = (
        costs.C is not None and a.shape[0] ** 2 * b.shape[0] <= _NEWTON_MAX
        and bool((a > 0).all()) and bool((b > 0).all())
    )
    eps, ratio = max(cmax, reg), _SCALING
    f = costs.softmin_rows(eps, logb)
    g = costs.softmin_cols(eps, loga)
    while eps > reg:
        eps = max(eps * ratio, reg)
        ft = costs.softmin_rows(eps, logb + g / eps)
        gt = costs.softmin_cols(eps, loga + f / eps)
        f, g = (f + ft) / 2, (g + gt) / 2
        if eps > reg:
            f, g, _, err = _sinkhorn_at(costs, eps, f, loga, logb, a, b, tol, _STAGE_UPDATES, check_every, False)
            if err > tol:  # this stage did not converge: anneal more slowly from here on
                ratio = min(ratio**0.5, _SCALING_MAX)
    return _sinkhorn_at(costs, reg, f, loga, logb, a, b, tol, max_iter, check_every, newton)


class _BlockedSinkhornValue(torch.autograd.Function):
    """``⟨P, C⟩ + reg·KL(P ‖ a⊗b)`` for a fixed plan ``P`` (given by its potentials), whose
    backward recomputes the cost by blocks of rows: ``∂/∂x = Σ_j P_ij ∇_x C_ij`` without the
    ``n × m`` graph (O(n + m) memory besides one block)."""

    @staticmethod
    def forward(ctx, x, y, value, a, g, logb, reg, manifold, p, *params):
        ctx.save_for_backward(x, y, a, g, logb, *params)
        ctx.reg, ctx.manifold, ctx.p = reg, manifold, p
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        x, y, a, g, logb, *params = ctx.saved_tensors
        reg, manifold, p = ctx.reg, ctx.manifold, ctx.p
        need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = torch.zeros_like(x) if need_x else None
        gy = torch.zeros_like(y) if need_y else None
        gp = [torch.zeros_like(q) for q in params]
        step = max(1, _BLOCK_ENTRIES // max(1, y.shape[0]))
        massless = (logb == -math.inf) if bool((logb == -math.inf).any()) else None
        for i in range(0, x.shape[0], step):
            with torch.enable_grad():
                xb = x[i:i + step].detach().requires_grad_(need_x)
                yb = y.detach().requires_grad_(need_y)
                Cb = _cost(xb, yb, manifold, p)
                P = _softmax_(torch.add(logb + g / reg, Cb.detach(), alpha=-1 / reg), massless).mul_(a[i:i + step, None])
                wrt = [t for t, need in ((xb, need_x), (yb, need_y)) if need] + [q for q in params if q.requires_grad]
                if not wrt:
                    break
                grads = torch.autograd.grad(Cb, wrt, grad_outputs=grad * P, allow_unused=True)
            k = 0
            if need_x:
                gx[i:i + step] = grads[0]
                k = 1
            if need_y:
                gy += grads[k]
                k += 1
            for j, q in enumerate(params):
                if q.requires_grad:
                    if grads[k] is not None:
                        gp[j] += grads[k]
                    k += 1
        return (gx, gy, None, None, None, None, None, None, None, *gp)


def _sinkhorn_value(x, y, manifold, p, a, b, reg, max_iter, tol):
    """Entropic OT value ``⟨P, C⟩ + reg·KL(P ‖ a⊗b)`` with envelope-theorem gradients.

    The potentials come from :func:`_sinkhorn_potentials` (no graph through the
    iterations, ``f = T(g)`` on return); the value and its gradients are those of the plan
    ``P_ij = a_i softmax_j(log b_j + (g_j - C_ij)/reg)`` (``= a_i b_j exp((f_i + g_j - C_ij)/reg)``,
    rows exactly ``a``, columns ``b`` to ``tol``): ``P`` for the cost (so ``Σ P ∇C`` for the points),
    ``f``, ``g`` (centred) for the weights, exact at convergence.  Up to ``2^24`` cost
    entries the cost matrix is built once with its graph; beyond, by blocks of rows in the
    forward and again in the backward (:class:`_BlockedSinkhornValue`), so memory is
    ``O(n + m)``.
    """
    dense = x.shape[0] * y.shape[0] <= _DENSE_MAX_ENTRIES or _is_metric_field(manifold)
    C = _checked_cost(x, y, manifold, p) if dense else None
    costs = _CostBlocks(x, y, manifold, p, C)
    with torch.no_grad():
        a0, b0 = a.detach(), b.detach()
        cmax = costs.max()
        if not dense and not bool(torch.isfinite(cmax)):
            raise ValueError(
                "x, y: the ground cost d(x, y)**p is not finite for these points (points off "
                "the manifold, a manifold whose curvature overflowed, or distances whose p-th "
                "power overflows the dtype)"
            )
        cmax = float(cmax)
        if cmax / reg > torch.finfo(a0.dtype).max:
            raise ValueError(
                f"reg: {reg:.3g} is too small for costs up to {cmax:.3g}: cost / reg overflows "
                f"{a0.dtype}"
            )
        f, g, it, err = _sinkhorn_potentials(costs, a0, b0, reg, max_iter, tol, cmax)
        if err > tol:
            warnings.warn(
                f"Sinkhorn did not converge: marginal error {err:.3g} > tol = {tol:.3g} after "
                f"max_iter = {max_iter} iterations at reg = {reg:.3g}",
                UserWarning, stacklevel=3,
            )
        logb = b0.log()
        # with f = T(g), log(P / ab) = (f ⊕ g - C)/reg and the rows of P are a, so
        # ⟨P, C⟩ + reg KL(P ‖ a⊗b) = Σ P (f ⊕ g) - reg (Σ P - 1) = ⟨a, f⟩ + ⟨Pᵀ1, g⟩
        col = torch.zeros_like(g)
        P = None
        for _, _, Pb in costs.plan_blocks(reg, a0, logb, g):
            col += Pb.sum(0)
            P = Pb if dense else None
        value = (a0 * f).sum() + (col * g).sum()
        fc, gc = f - (a0 * f).sum(), g - (b0 * g).sum()
    if dense:
        out = value + (C * P).sum() - (C.detach() * P).sum()
    else:
        params = [q for q in (manifold.parameters() if isinstance(manifold, torch.nn.Module) else ()) if q.requires_grad]
        out = _BlockedSinkhornValue.apply(x, y, value, a0, g, logb, reg, manifold, p, *params)
    return out + (fc * (a - a0)).sum() + (gc * (b - b0)).sum()


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
        ``"sinkhorn"``: entropic OT solved in the log domain by dlmppl's own
        solver: symmetric ε-scaling with annealing of the potentials (Feydy 2020),
        from ``max C`` down to ``reg`` by factors of 10 (more slowly after a stage
        that missed ``tol``), each ε refined until its marginal error is below
        ``tol``, then Sinkhorn updates at ``reg`` (over-relaxed; Newton steps on
        small problems that stall) until the marginal error is below ``tol``.
        Returns the *regularised cost* ``OT_reg = ⟨P, C⟩ + reg·KL(P ‖ a⊗b)`` of the
        computed plan (not the debiased Sinkhorn divergence
        ``OT_reg(μ, ν) - ½OT_reg(μ, μ) - ½OT_reg(ν, ν)``, which is two more calls;
        geomloss's ``SamplesLoss("sinkhorn", debias=False)`` returns the same
        ``OT_reg`` for the cost ``C/2``), with envelope gradients (exact at
        convergence, no unrolled iterations).  Memory: one cost matrix up to
        ``2^24`` entries; beyond, ``O(n + m)`` (the cost is recomputed by blocks of
        rows in every pass, forward and backward).  It tends to the EMD value as
        ``reg → 0``.
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
    max_iter, tol : Sinkhorn's iteration limit at ``reg`` (``>= 1``, after the
        ε-scaling stages) and tolerance on the L2 norm of the marginal violation
        (``‖P 1 - a‖`` of the plan one half-update before the returned one, whose
        rows are exact; checked at every iteration on a CPU, every 10 on other devices; a
        ``UserWarning`` when it stops before ``tol``).  ``tol`` also sets how far
        the ε-scaling stages are refined: a coarse ``tol`` costs little more than the
        schedule itself.

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
        return _sinkhorn_value(x, y, manifold, p, a, b, reg, max_iter, tol)
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
