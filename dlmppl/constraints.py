r"""Pyro/torch constraints for manifold-valued supports.

``manifold(M)`` is the support of every dlmppl distribution on ``M``; the
inference code dispatches on it (``isinstance(c, ManifoldConstraint)``), never
on a distribution's class.  Its ``event_dim`` is the manifold's ``ndim``
(1 for the sphere, the Lorentz and κ-stereographic models and products, 2 for
Stiefel and SPD matrices), and ``check(x)`` returns one boolean per point
(shape ``x.shape[:-event_dim]`` broadcast with any batched curvature) with a
tolerance that depends on ``x.dtype`` (:func:`tolerance`).

Every ``biject_to`` / ``transform_to`` registration of the package is here, next
to the constraint it registers, so that importing the constraints is enough:

* ``transform_to(manifold(M))`` is :class:`ManifoldProjection`.  Pyro stores a
  constrained parameter as ``transform_to(constraint).inv(value)``; for a manifold
  constraint the unconstrained space is the ambient space, ``inv`` is the identity
  and the forward map is ``M.projx`` (a no-op on the manifold, and a safety net if a
  Euclidean optimiser moves the tensor off it).  ``biject_to`` is deliberately *not*
  registered for manifold constraints: HMC kernels and autoguides dispatch on the
  constraint themselves.
* ``biject_to(ball(R))`` and ``transform_to(ball(R))`` are :class:`BallTransform`.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import biject_to, transform_to
from torch.distributions import constraints as _tc
from torch.distributions.transforms import Transform

__all__ = [
    "BallConstraint",
    "BallTransform",
    "ManifoldConstraint",
    "ManifoldProjection",
    "ball",
    "manifold",
    "tolerance",
    "violation",
]


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of the on-manifold check: ``0.1 * sqrt(eps)`` of ``dtype``.

    float32: 3.5e-5, float64: 1.5e-9, float16/bfloat16: about 3e-3 / 9e-3.  Integer and
    boolean dtypes (exact points) get the tolerance of the default floating dtype.
    """
    if not (dtype.is_floating_point or dtype.is_complex):
        dtype = torch.get_default_dtype()
    return 0.1 * torch.finfo(dtype).eps ** 0.5


def violation(M, x: torch.Tensor) -> torch.Tensor:
    """How far each point of ``x`` is from ``M`` (0 on the manifold): the family's
    :meth:`~dlmppl.geometry.Geometry.violation`.

    Sphere: ``|‖x‖ - 1|``; Lorentz: ``|⟨x,x⟩_L + k| / (1 + x_0²)``; Stiefel:
    ``max |XᵀX - I|``; SPD: asymmetry ``max|X - Xᵀ| / max|X|`` (and ``inf`` when a
    Cholesky factorisation fails); κ-stereographic with κ<0: how far a point
    reaches past the ball ``κ‖x‖² > -1`` (``inf`` outside); Euclidean: 0 for
    finite points.  Shape: one value per point, ``batch_shape``.  Non-finite
    points give ``inf``.
    """
    from .geometry import geometry_of

    if not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    finite = _all_finite(x, M.ndim)
    v = geometry_of(M).violation(x)
    return torch.where(torch.broadcast_to(finite, v.shape) if finite.dim() <= v.dim() else finite, v, torch.full_like(v, float("inf")))


def _all_finite(x, ndim):
    f = torch.isfinite(x)
    for _ in range(ndim):
        f = f.all(-1)
    return f


class ManifoldConstraint(_tc.Constraint):
    """Points on a (geoopt) manifold ``M``; see :func:`manifold`."""

    is_discrete = False

    def __init__(self, M, tol: float | None = None):
        self.manifold = M
        self.event_dim = int(M.ndim)
        self.tol = tol
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        tol = tolerance(value.dtype) if self.tol is None else self.tol
        return violation(self.manifold, value) <= tol

    def __repr__(self):
        from .geometry import geometry_of

        tol = "dtype-dependent" if self.tol is None else f"{self.tol:g}"
        return f"manifold({type(self.manifold).__name__}: {geometry_of(self.manifold).bounds}, tol={tol})"


def manifold(M, tol: float | None = None) -> ManifoldConstraint:
    """The constraint "a point on ``M``", with ``event_dim = M.ndim``.

    Args:
        M: a geoopt manifold (or one of :mod:`dlmppl.manifolds`).
        tol: absolute tolerance of :meth:`check`; default :func:`tolerance` of
            the checked value's dtype.
    """
    return ManifoldConstraint(M, tol)


class ManifoldProjection(Transform):
    """``x ↦ M.projx(x)`` from the ambient space onto ``M``; inverse: identity.

    The ``transform_to`` of a :func:`dlmppl.constraints.manifold` constraint.
    On the manifold both directions are the identity.  Not a bijection of the
    ambient space, so it has no ``log_abs_det_jacobian`` and is never used as a
    ``biject_to`` (no density is transformed through it).
    """

    bijective = False

    def __init__(self, constraint: ManifoldConstraint, cache_size: int = 0):
        self._constraint = constraint
        super().__init__(cache_size=cache_size)

    @property
    def domain(self):
        return _tc.independent(_tc.real, self._constraint.event_dim)

    @property
    def codomain(self):
        return self._constraint

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return ManifoldProjection(self._constraint, cache_size=cache_size)

    def __eq__(self, other):
        return isinstance(other, ManifoldProjection) and other._constraint.manifold is self._constraint.manifold

    def _call(self, x):
        return self._constraint.manifold.projx(x)

    def _inverse(self, y):
        return y

    def log_abs_det_jacobian(self, x, y):
        raise NotImplementedError(
            "ManifoldProjection is not a bijection: manifold constraints have no biject_to; "
            "use a manifold distribution (dlmppl.distributions) instead of a transformed density"
        )


@transform_to.register(ManifoldConstraint)
def _transform_to_manifold(constraint):
    return ManifoldProjection(constraint)


class BallConstraint(_tc.Constraint):
    """Vectors of Euclidean norm ``< radius`` (the open ball), ``event_dim = 1``."""

    event_dim = 1

    def __init__(self, radius: float):
        if not radius > 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        self.radius = float(radius)
        super().__init__()

    def check(self, value):
        return value.norm(dim=-1) < self.radius

    def __repr__(self):
        return f"{type(self).__name__}(radius={self.radius})"


def ball(radius: float) -> BallConstraint:
    """The constraint ``‖z‖ < radius`` (``biject_to``/``transform_to`` give :class:`BallTransform`)."""
    return BallConstraint(radius)


class BallTransform(Transform):
    r"""Bijection ``R^d → B(0, R)``, ``y = R x / √(1 + ‖x‖²)``, ``event_dim = 1``.

    Inverse ``x = y / √(R² − ‖y‖²)``; ``log|det J| = d log R − (d+2)/2 · log(1 + ‖x‖²)``
    (a radial map ``y = f(r) x/r`` has ``det J = f'(r) (f(r)/r)^{d-1}``), smooth at 0.
    """

    domain = _tc.real_vector
    bijective = True
    sign = +1

    def __init__(self, radius: float, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self.radius = float(radius)

    @property
    def codomain(self):
        return ball(self.radius)

    def __eq__(self, other):
        return isinstance(other, BallTransform) and other.radius == self.radius

    def with_cache(self, cache_size=1):
        return self if self._cache_size == cache_size else BallTransform(self.radius, cache_size=cache_size)

    def _call(self, x):
        return self.radius * x * torch.rsqrt(1 + x.pow(2).sum(-1, keepdim=True))

    def _inverse(self, y):
        s = (self.radius**2 - y.pow(2).sum(-1, keepdim=True)).clamp_min(torch.finfo(y.dtype).tiny)
        return y * torch.rsqrt(s)

    def log_abs_det_jacobian(self, x, y):
        d = x.shape[-1]
        return d * math.log(self.radius) - 0.5 * (d + 2) * torch.log1p(x.pow(2).sum(-1))


@biject_to.register(BallConstraint)
@transform_to.register(BallConstraint)
def _ball_transform(constraint):
    return BallTransform(constraint.radius)
