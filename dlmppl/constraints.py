r"""Pyro/torch constraints for manifold-valued supports.

``manifold(M)`` is the support of every dlmppl distribution on ``M``; the
inference code dispatches on it (``isinstance(c, ManifoldConstraint)``), never
on a distribution's class.  Its ``event_dim`` is the manifold's ``ndim``
(1 for the sphere, the Lorentz and κ-stereographic models and products, 2 for
Stiefel and SPD matrices), and ``check(x)`` returns one boolean per point
(shape ``x.shape[:-event_dim]`` broadcast with any batched curvature) with a
tolerance that depends on ``x.dtype`` (:func:`tolerance`).
"""

from __future__ import annotations

import torch
from torch.distributions import constraints as _tc

__all__ = ["ManifoldConstraint", "manifold", "tolerance", "violation"]


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
