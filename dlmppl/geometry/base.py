r"""The geometry registry: one :class:`Geometry` per manifold family.

Everything in dlmppl that needs manifold-specific math (densities, HMC
integrators, OT costs, Fréchet means, plots, VAE latents) asks
:func:`geometry_of` for it.  ``geometry_of(M)`` dispatches on the class of the
geoopt manifold ``M`` (:func:`functools.singledispatch`, so a user's subclass of
a geoopt class gets its parent's geometry) and returns a :class:`Geometry`
bound to ``M`` (its curvature is read from ``M`` at every call, so a learnable
curvature stays differentiable).  A new family is one subclass of
:class:`Geometry` registered with ``geometry_of.register(MyManifold)``.

Conventions of every method (DESIGN.md): points ``x`` and tangent vectors
``u, v`` are ambient, of shape ``batch_shape + event_shape`` (``event_shape``
has ``M.ndim`` dims) and broadcast; scalar results (inner products, norms,
distances, violations) have shape ``batch_shape``; curvature may carry batch
dimensions that broadcast with the points.
"""

from __future__ import annotations

import copy
import functools
import math

import torch

__all__ = ["Geometry", "geometry_of", "frechet_mean"]


def _tiny(x):
    return torch.finfo(x.dtype).tiny


class Geometry:
    """The geometry of one manifold family, bound to a manifold ``M``.

    Subclasses implement :meth:`exp`, :meth:`log`, :meth:`inner`, :meth:`proju`,
    :meth:`violation`, :meth:`intrinsic_dim`, :meth:`origin` and, for HMC,
    :meth:`flow`; the defaults below derive the rest.  ``bounds`` is the support
    in words, used in error messages.
    """

    name = "Geometry"
    bounds = "on the manifold"
    #: Geodesics of this family close up (sphere, Stiefel, κ > 0): see :meth:`closed_geodesic_length`.
    compact = False
    #: Flat (curvature 0 everywhere): no volume correction in wrapped laws (Euclidean space, the torus).
    flat = False
    #: The ambient coordinates are a global linear chart whose straight lines are the geodesics
    #: (Euclidean space): the weighted ambient average is the Fréchet mean, ``projx`` is the
    #: identity, straight-line interpolation is geodesic.  ``False`` for a flat family whose
    #: coordinates wrap (the torus: the average of angles near ±π is near 0, not the mean).
    linear = False
    #: The metric is the ambient one restricted to the tangent spaces (sphere, Stiefel).
    embedded = False

    def __init__(self, manifold):
        self.manifold = manifold
        self.ndim = int(manifold.ndim)
        self._detach = False

    # -------------------------------------------------------------- construction helpers

    def detached(self) -> Geometry:
        """A copy whose curvature is detached from autograd (what HMC flows use)."""
        g = copy.copy(self)
        g._detach = True
        return g

    def _param(self, value, like):
        """A manifold parameter (curvature) as a tensor of ``like``'s dtype/device, detached if asked."""
        t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        return t.detach() if self._detach else t

    def _sum_event(self, t):
        for _ in range(self.ndim):
            t = t.sum(-1)
        return t

    # -------------------------------------------------------------- the family's math

    def exp(self, x, v):
        """Riemannian exponential ``exp_x(v)``; shape of ``broadcast(x, v)``."""
        raise ValueError(f"{self.name}: no exponential map")

    def log(self, x, y):
        """Riemannian logarithm ``log_x(y)`` (inverse of :meth:`exp` within the injectivity radius)."""
        raise ValueError(f"{self.name}: no logarithm map")

    def inner(self, x, u, v=None):
        """``g_x(u, v)``; shape ``batch_shape``.  Default: the embedded (ambient) metric."""
        return self._sum_event(u * (u if v is None else v))

    def norm(self, x, u):
        """``‖u‖_x``; shape ``batch_shape``."""
        return self.inner(x, u).clamp_min(0).sqrt()

    def dist(self, x, y):
        """Geodesic distance ``d(x, y) = ‖log_x y‖``; shape ``batch_shape``."""
        return self.norm(x, self.log(x, y))

    def geodesic(self, x, y, t):
        """Point at fraction ``t`` of the minimising geodesic from ``x`` to ``y``: ``exp_x(t log_x y)``
        (``t`` broadcastable against the points)."""
        return self.exp(x, t * self.log(x, y))

    def proju(self, x, u):
        """Orthogonal projection of an ambient vector onto ``T_x M``."""
        return u

    def egrad2rgrad(self, x, g):
        """Riemannian gradient from the Euclidean one (``G(x)⁻¹ g`` projected); default: :meth:`proju`."""
        return self.proju(x, g)

    def violation(self, x):
        """How far each point is from ``M`` (0 on it, ``inf`` for non-finite points); ``batch_shape``."""
        raise ValueError(f"{self.name}: no on-manifold check")

    def intrinsic_dim(self, event_shape) -> int:
        """Dimension of ``M`` for points of ``event_shape``."""
        n = 1
        for s in tuple(event_shape):
            n *= int(s)
        return n

    def origin(self, event_shape, dtype=None, device=None):
        """The family's reference point (``event_shape``), where wrapped laws are centred by default."""
        raise ValueError(f"{self.name}: no origin")

    def log_volume(self, event_shape):
        """Log of the total Riemannian volume (``None`` where it is infinite)."""
        return None

    def random_uniform(self, shape, dtype=None, device=None):
        """Exact draws of the uniform law (normalised volume) of a compact family, ``shape = batch + event``."""
        raise ValueError(
            f"ManifoldUniform: manifold {type(self.manifold).__name__} is not supported (Sphere and Stiefel manifolds are)"
        )

    def frame(self, x):
        """Orthonormal basis of ``T_x M``: shape ``batch_shape + (d,) + event_shape``.

        Default: project the ambient unit vectors and orthonormalise them for
        :meth:`inner` (eigen-decomposition of their Gram matrix, keeping the
        ``d`` leading directions).
        """
        event = tuple(x.shape[x.dim() - self.ndim :])
        batch = x.shape[: x.dim() - self.ndim]
        D = math.prod(event)
        d = self.intrinsic_dim(event)
        E = torch.eye(D, dtype=x.dtype, device=x.device).reshape((D,) + event)
        xb = x.unsqueeze(len(batch))  # batch + (1,) + event
        P = self.proju(xb, E).expand(batch + (D,) + event)  # (some proju ignore x: broadcast)
        G = self.inner(xb.unsqueeze(len(batch)), P.unsqueeze(len(batch) + 1), P.unsqueeze(len(batch)))
        G = 0.5 * (G + G.transpose(-1, -2))
        lam, U = torch.linalg.eigh(G)
        lam, U = lam.flip(-1)[..., :d], U.flip(-1)[..., :d]
        coef = U / lam.clamp_min(_tiny(x)).sqrt().unsqueeze(-2)  # batch + (D, d)
        flat = P.reshape(batch + (D, D))
        return (coef.transpose(-1, -2) @ flat).reshape(batch + (d,) + event)

    def random_tangent(self, x):
        """A tangent vector at ``x`` that is standard normal in an orthonormal basis of ``T_x M``."""
        f = self.frame(x)
        w = torch.randn(f.shape[: f.dim() - self.ndim], dtype=x.dtype, device=x.device)
        return (w.reshape(w.shape + (1,) * self.ndim) * f).sum(x.dim() - self.ndim)

    def curvature_argument(self):
        """The curvature argument of the manifold's constructor (a tensor), ``None`` for families without one."""
        return None

    def wrap_period(self, like):
        """Length after which a geodesic returns to its start, as a tensor broadcastable against the
        curvature (``inf`` where it never does), or ``None`` for families whose geodesics never
        close: wrapped laws sum over the preimages ``r + n·period`` of ``exp_x``."""
        return None

    def sliced_wasserstein(self, x, y, a, b, n_projections, p):
        """Sliced ``W_p`` between weighted clouds ``x`` ``(n, D)``, ``y`` ``(m, D)`` (the ``p``-th root).

        Default: POT's Euclidean slicing of the ambient coordinates (Bonneel et al. 2015);
        the sphere overrides it with great-circle slices (Bonet et al. 2023).
        """
        import ot

        proj = torch.randn(x.shape[-1], n_projections, dtype=x.dtype, device=x.device)
        proj = proj / proj.norm(dim=0, keepdim=True)
        return ot.sliced_wasserstein_distance(x, y, a, b, n_projections=n_projections, p=p, projections=proj)

    @staticmethod
    def _horospherical_sw(busemann, d, x, y, a, b, n_projections, p):
        """Horospherical sliced ``W_p`` on a hyperbolic space (Bonet et al. 2023, "Hyperbolic
        sliced-Wasserstein via geodesic and horospherical projections", HHSW): each slice is
        the Busemann function ``busemann(points, v)`` ``(n, P)`` of an ideal point ``v`` drawn
        uniformly from the ``d``-dimensional directions at the origin (``v``: ``(d, P)``, unit
        columns); the 1-d
        laws of the slices are compared exactly (``ot.wasserstein_1d``).  Returns
        ``(mean over slices of W_p^p)^(1/p)``, a 0-d tensor."""
        import ot

        v = torch.randn(d, n_projections, dtype=x.dtype, device=x.device)
        v = v / v.norm(dim=0, keepdim=True)
        w = ot.wasserstein_1d(busemann(x, v), busemann(y, v), a, b, p=p)
        return w.mean().pow(1.0 / p)

    # -------------------------------------------------------------- HMC

    def flow(self, x, v, t):
        """Exact geodesic flow for time ``t``: ``(γ(t), γ'(t))`` with ``γ(0) = x``, ``γ'(0) = v``."""
        raise ValueError(f"{self.name}: no exact geodesic flow (needed by the HMC kernels)")

    def project(self, x, v):
        """Round-off clean-up of a point and its velocity (the identity on the tangent bundle)."""
        return x, v

    def projx(self, x):
        """Round-off clean-up of a point alone: the point of :meth:`project` (without a velocity to carry)."""
        return self.project(x, torch.zeros_like(x))[0]

    def covector(self, x, v):
        """The momentum ``G(x) v`` in ambient coordinates (``sum(covector * v) = g(v, v)``)."""
        return v

    def kinetic(self, x, v):
        """``½ g_x(v, v)`` summed over every point (a 0-d tensor)."""
        return 0.5 * self.inner(x, v).sum()

    def closed_geodesic_length(self, x) -> float:
        """Length of the shortest closed geodesic (``inf`` where geodesics do not close)."""
        return math.inf

    def point_dim(self, x) -> int:
        """Intrinsic dimension of one point of ``x`` (ambient shape ``batch + event``)."""
        return max(self.intrinsic_dim(x.shape[x.dim() - self.ndim :]), 1)

    def max_step(self, x, inverse_mass=1.0) -> float:
        """Largest useful HMC step on a family whose geodesics close up (``inf`` elsewhere).

        A velocity drawn as the kernels draw it travels ``ε √(d / m)`` in a step;
        ``ε_max = (L/2) √(m/d)`` makes that half the shortest closed geodesic
        ``L`` (:meth:`closed_geodesic_length`), the largest step for which the
        step-size adaptation still sees a larger step as larger.  A float.
        """
        length = self.closed_geodesic_length(x)
        if not math.isfinite(length):
            return math.inf
        return 0.5 * length / math.sqrt(self.point_dim(x) * float(inverse_mass))

    def spread(self, draws):
        """``E g(x - x̄, x - x̄)`` of draws ``(n,) + site shape`` about their ambient mean ``x̄`` (a 0-d
        tensor; about the mean squared geodesic distance to the mean for concentrated draws): what
        the HMC kernels' scalar mass adaptation divides by the dimension."""
        mean = draws.mean(0)
        d = draws - mean
        return ((self.covector(mean.expand_as(d), d) * d).sum() / draws.shape[0]).clamp_min(0)

    # the names the HMC kernels use
    def momentum(self, x):
        return self.random_tangent(x)

    def rgrad(self, x, g):
        return self.egrad2rgrad(x, g)

    def for_hmc(self) -> Geometry:
        """The geometry the HMC kernels use (curvature detached); ``ValueError`` without an exact flow."""
        return self.detached()

    # -------------------------------------------------------------- statistics

    def mean_step(self, mean, points, w):
        """``(g, ‖g‖, move)`` for :func:`frechet_mean`: the Karcher gradient ``Σ wᵢ log_m xᵢ``
        (``w`` broadcastable against ``points``) and ``s ↦ exp_m(s g)``."""
        g = (w * self.log(mean.unsqueeze(0), points)).sum(0)
        return g, self.norm(mean, g), lambda s: self.exp(mean, s * g)

    def frechet_mean(self, points, weights=None, **kwargs):
        """Weighted Fréchet mean of ``points`` ``(N, *batch, *event)`` over dim 0 (:func:`frechet_mean`)."""
        return frechet_mean(self, points, weights=weights, **kwargs)

    def __repr__(self):
        return f"{type(self).__name__}({self.manifold!r})"


@functools.singledispatch
def geometry_of(manifold) -> Geometry:
    """The :class:`Geometry` of a geoopt manifold (dispatch on its class).

    Raises ``ValueError`` naming ``manifold`` for a class no family is registered
    for (register one with ``geometry_of.register(ManifoldClass, GeometryClass)``).
    """
    supported = ", ".join(sorted(k.__name__ for k in geometry_of.registry if k is not object))
    raise ValueError(
        f"manifold: {type(manifold).__name__} is not supported by dlmppl.geometry (supported: {supported} "
        "and their subclasses; register a Geometry with dlmppl.geometry.geometry_of.register)"
    )


def frechet_mean(geometry, points, weights=None, iters=100, tol=None, step=1.0, init=None):
    r"""Weighted Fréchet (Karcher) mean by Riemannian gradient descent with a monotone step.

    Minimises ``f(m) = Σᵢ wᵢ d(m, xᵢ)²`` with ``m ← exp_m(s · Σᵢ wᵢ log_m(xᵢ))``
    (Karcher 1977; Pennec 2006, alg. 1), where the step ``s`` (at most ``step``)
    is halved whenever ``f`` would increase and doubled back after a success,
    independently for every batch element.  The start is, of up to 16 evenly
    spaced sample points, the one with the smallest ``f`` (scored on up to 512
    evenly spaced points).  A family may override :meth:`Geometry.mean_step`
    (the gradient step in its own coordinates, e.g. Lorentz frame coordinates).

    Shapes: ``points`` ``(N, *batch, *event)``; ``weights`` ``(N,)`` or
    ``(N, *batch)``, non-negative; ``init`` ``(*batch, *event)``.  Returns
    ``(*batch, *event)``.  Stops when ``‖Σ wᵢ log_m xᵢ‖ < tol`` (default ``1e-10``
    float64, ``1e-6`` float32); one host sync per iteration.
    """
    if points.dim() < 1 or points.shape[0] < 1:
        raise ValueError("frechet_mean: points must have shape (N, *event) with N >= 1")
    n = points.shape[0]
    if weights is None:
        weights = torch.full((n,), 1.0 / n, dtype=points.dtype, device=points.device)
    weights = torch.as_tensor(weights, dtype=points.dtype, device=points.device)
    if weights.shape[:1] != (n,) or (weights < 0).any() or not (weights.sum(0) > 0).all():
        raise ValueError("frechet_mean: weights must be (N,) or (N, *batch), non-negative, with a positive sum")
    weights = weights / weights.sum(0, keepdim=True)
    w = weights.reshape(weights.shape + (1,) * (points.dim() - weights.dim()))
    if tol is None:
        tol = 1e-10 if points.dtype == torch.float64 else 1e-6
    if geometry.linear and init is None:  # a vector space: the average is the mean
        return (w * points).sum(0)

    def objective(m, pts=points, ww=weights):
        d2 = geometry.dist(m.unsqueeze(0), pts).pow(2)
        return (ww.reshape(ww.shape + (1,) * (d2.dim() - ww.dim())) * d2).sum(0)

    if init is not None:
        mean = init.to(points)
    else:
        idx = torch.linspace(0, n - 1, min(n, 16), device=points.device).round().long()
        sub = torch.linspace(0, n - 1, min(n, 512), device=points.device).round().long()
        costs = torch.stack([objective(points[i], points[sub], weights[sub]) for i in idx])
        best = costs.argmin(0)
        cands = points[idx]
        sel = best.reshape((1,) + best.shape + (1,) * (cands.dim() - 1 - best.dim()))
        mean = torch.take_along_dim(cands, sel.expand((1,) + cands.shape[1:]), 0).squeeze(0)
    f = objective(mean)
    s = torch.full(f.shape, float(step), dtype=points.dtype, device=points.device)
    ev = mean.dim() - f.dim()

    def bcast(t):
        return t.reshape(t.shape + (1,) * ev)

    for _ in range(iters):
        g, gnorm, move = geometry.mean_step(mean, points, w)
        if float(gnorm.detach().max()) < tol:
            break
        cand = move(bcast(s))
        fc = objective(cand)
        ok = fc <= f
        mean = torch.where(bcast(ok), cand, mean)
        f = torch.where(ok, fc, f)
        s = torch.where(ok, (2 * s).clamp(max=float(step)), s / 2)
        if float(s.max()) < 1e-12:
            break
    return mean
