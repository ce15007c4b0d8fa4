r"""Closed-form geodesics on every manifold dlmppl supports.

For a manifold ``M`` (a geoopt/dlmppl manifold object) and points of shape
``batch_shape + event_shape`` (ambient event shape, see DESIGN.md):

* :func:`expmap` / :func:`logmap`: Riemannian exponential and logarithm;
* :func:`shoot` ``(M, x, v, t)``: the geodesic ``exp_x(t v)``;
* :func:`geodesic` ``(M, x, y, t)``: the point at fraction ``t`` of the
  minimising geodesic from ``x`` to ``y`` (``exp_x(t log_x y)``);
* :func:`interpolate` ``(M, x, y, n)``: ``n`` equally spaced points on it;
* :func:`distance` ``(M, x, y)``: the geodesic distance;
* :func:`frechet_mean` ``(points, M)``: the (weighted) Riemannian centre of mass.

``t`` may be a number, a 0-d tensor (output has the points' shape), or a 1-d
tensor of shape ``(T,)`` (output ``(T,) + points shape``).  Curvatures with batch
dimensions (κ-stereographic ``k`` of shape ``batch_shape + (1,)``, Lorentz ``k``)
broadcast with the points.

Manifolds and metrics:

=================================  ============================================================
Euclidean                          straight lines
Sphere / SphereExact (unit)        great circles
Stereographic, PoincareBall,       κ-stereographic closed forms of :mod:`dlmppl.kmath`, any
SphereProjection (+ Exact)         sign of κ including 0, batched κ (Bachmann et al. 2020)
Lorentz(k)                         hyperboloid ⟨x,x⟩_L = -k, curvature -1/k (Nickel & Kiela 2018);
                                   cancellation-free closed forms of :mod:`dlmppl.lmath`
EuclideanStiefel(+Exact)           embedded metric tr(ΔᵀΔ); exp by the matrix exponential of
                                   Edelman, Arias & Smith 1998 (eq. 2.14)
CanonicalStiefel / Stiefel()       canonical metric tr(Δᵀ(I-½XXᵀ)Δ); exp of Edelman et al.
                                   (eq. 2.41)
SymmetricPositiveDefinite          affine-invariant metric tr(X⁻¹UX⁻¹V) (Pennec et al. 2006)
ProductManifold                    componentwise; distance = √Σ dᵢ²
Scaled(M, s)                       metric s²g: the same geodesic curves, distances × s
=================================  ============================================================

The Stiefel logarithm has no closed form: :func:`logmap` on Stiefel (and so
:func:`geodesic`, :func:`distance`, :func:`interpolate` there) solves
``exp_x(Δ) = y`` for ``Δ`` by a damped Gauss–Newton shooting iteration on the
tangent space (tolerance ``stiefel_tol``, at most ``stiefel_max_iter`` steps);
it converges to the minimising geodesic for points within the injectivity
radius (the iteration starts from the projection of ``y - x``). See
Zimmermann, "A matrix-algebraic algorithm for the Riemannian logarithm on the
Stiefel manifold under the canonical metric", SIAM J. Matrix Anal. Appl. 2017,
for the canonical-metric alternative.

``shoot`` on ``Scaled(M, s)`` is the geodesic of the metric ``s² g`` with
initial velocity ``v``, i.e. the base manifold's ``exp_x(t v)`` (geoopt's
``Scaled.expmap`` instead rescales ``v`` by ``1/s``).

On the sphere, antipodal points are joined by every great circle: for
``y = -x`` (to rounding, ``‖y - ⟨x,y⟩x‖ ≤ 4 eps``) :func:`logmap` returns
``π t̂``, ``t̂`` the unit tangent at ``x`` obtained by projecting the basis vector
``e_j``, ``j = argmin_i |x_i|`` (the first on ties); :func:`geodesic` and
:func:`interpolate` follow that great circle.

Validation.  When validation is on (``torch.distributions.Distribution._validate_args``,
which ``pyro.enable_validation`` sets), every public function checks its arguments
once per call (nested calls between these functions are not re-checked): points
(``x``, ``y``, ``points``, ``init``) must lie on the manifold to
:func:`dlmppl.constraints.tolerance` of their dtype, but not below float32's
(``3.5e-5``, so that float32 points upcast to float64 pass;
:func:`dlmppl.constraints.violation`; NaN and inf are off the manifold),
tangent/ambient vectors and ``t`` must be finite;
otherwise ``ValueError`` naming the argument.  Each check is one host
synchronisation; switch validation off in hot loops.
"""

from __future__ import annotations

import functools
import inspect
import threading

import torch

from .. import constraints as _constraints
from .base import frechet_mean as _frechet_mean
from .base import geometry_of
from .stiefel import STIEFEL_TOL

__all__ = [
    "expmap",
    "logmap",
    "inner",
    "norm",
    "distance",
    "shoot",
    "geodesic",
    "interpolate",
    "frechet_mean",
    "tangent_project",
]

STIEFEL_TOL = STIEFEL_TOL  # the Stiefel logarithm's tolerance, read by the tests

# --------------------------------------------------------------------------- validation

_state = threading.local()


def _validating() -> bool:
    return bool(torch.distributions.Distribution._validate_args)


def _check_point(manifold, name, x):
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise ValueError(f"{name}: expected a floating-point tensor of points, got {type(x).__name__}"
                         + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if x.numel() == 0:
        return
    v = _constraints.violation(manifold, x)
    # not below float32's tolerance: float32 points upcast to float64 (as the diagnostics do) pass
    tol = max(_constraints.tolerance(x.dtype), _constraints.tolerance(torch.float32))
    ok = v <= tol  # False for NaN
    if not bool(ok.all()):
        inf = torch.full_like(v, float("inf"))
        worst = float(torch.where(ok, torch.zeros_like(v), torch.where(torch.isnan(v), inf, v)).max())
        g = geometry_of(manifold)
        raise ValueError(
            f"{name}: {int((~ok).sum())} point(s) not on {g.name} ({g.bounds}): largest violation {worst:g} > "
            f"tolerance {tol:g} (NaN/inf points count as off the manifold)"
        )


def _check_finite(name, u):
    if not isinstance(u, torch.Tensor):
        u = torch.as_tensor(u)
    if u.is_floating_point() and u.numel() and not bool(torch.isfinite(u).all()):
        raise ValueError(f"{name}: must be finite, got {int((~torch.isfinite(u)).sum())} NaN/inf entries")


def _validated(points=(), vectors=()):
    """Check the named arguments of a public function when validation is on (module docstring)."""

    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if getattr(_state, "active", False) or not _validating():
                return fn(*args, **kwargs)
            bound = sig.bind(*args, **kwargs)
            geometry_of(bound.arguments["manifold"])  # an unsupported manifold is reported first
            for name in points:
                value = bound.arguments.get(name)
                if value is not None:
                    _check_point(bound.arguments["manifold"], name, value)
            for name in vectors:
                value = bound.arguments.get(name)
                if value is not None:
                    _check_finite(name, value)
            _state.active = True
            try:
                return fn(*args, **kwargs)
            finally:
                _state.active = False

        return wrapper

    return deco


def _as_t(t, like):
    """``t`` as a tensor broadcastable against ``like`` (points shape)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t
    if t.dim() != 1:
        raise ValueError(f"t must be a number or a 1-d tensor of shape (T,), got shape {tuple(t.shape)}")
    return t.reshape(t.shape + (1,) * like.dim())


def _geometry(manifold, stiefel_tol=None, stiefel_max_iter=None):
    """``geometry_of(manifold)`` (a fresh instance) with the Stiefel logarithm's options set on it."""
    g = geometry_of(manifold)
    for part in [g, getattr(g, "base", None), *getattr(g, "parts", [])]:
        if part is not None and hasattr(part, "log_tol"):
            if stiefel_tol is not None:
                part.log_tol = stiefel_tol
            if stiefel_max_iter is not None:
                part.log_max_iter = stiefel_max_iter
    return g


# --------------------------------------------------------------------------- public API


@_validated(points=('x',), vectors=('v',))
def expmap(manifold, x, v):
    """Riemannian exponential ``exp_x(v)`` (closed form for every supported manifold).

    Shapes: ``x`` and ``v`` broadcast, ``batch_shape + event_shape``.
    """
    return geometry_of(manifold).exp(x, v)


@_validated(points=('x', 'y'), vectors=())
def logmap(manifold, x, y, *, stiefel_tol=None, stiefel_max_iter=50):
    """Riemannian logarithm ``log_x(y)`` (the inverse of :func:`expmap` within the injectivity radius).

    Closed form except on Stiefel, where it is solved iteratively (module docstring).
    Shapes: ``x`` and ``y`` broadcast, ``batch_shape + event_shape``.
    """
    return _geometry(manifold, stiefel_tol, stiefel_max_iter).log(x, y)


@_validated(points=('x',), vectors=('u', 'v'))
def inner(manifold, x, u, v=None):
    """Riemannian inner product ``g_x(u, v)``; shape ``batch_shape``."""
    return geometry_of(manifold).inner(x, u, v)


@_validated(points=('x',), vectors=('u',))
def norm(manifold, x, u):
    """Riemannian norm ``‖u‖_x``; shape ``batch_shape``."""
    return geometry_of(manifold).norm(x, u)


@_validated(points=('x', 'y'), vectors=())
def distance(manifold, x, y, *, stiefel_tol=None):
    """Geodesic distance ``d(x, y)``; shape ``broadcast(batch_shape)``.

    Closed form on all manifolds but Stiefel (``‖log_x y‖``, iterative log there).
    """
    return _geometry(manifold, stiefel_tol).dist(x, y)


@_validated(points=('x',), vectors=('v', 't'))
def shoot(manifold, x, v, t=1.0):
    """Geodesic from ``x`` with initial velocity ``v``: ``exp_x(t v)``.

    ``t``: number / 0-d tensor (output ``batch_shape + event_shape``) or ``(T,)``
    (output ``(T,) + batch_shape + event_shape``).
    """
    return geometry_of(manifold).exp(x, _as_t(t, torch.broadcast_tensors(x, v)[0]) * v)


@_validated(points=('x', 'y'), vectors=('t',))
def geodesic(manifold, x, y, t, *, stiefel_tol=None, stiefel_max_iter=None):
    """Point at fraction ``t`` of the minimising geodesic from ``x`` (t=0) to ``y`` (t=1).

    ``t``: number / 0-d tensor or shape ``(T,)`` (output ``(T,) + points shape``).
    Any curvature sign (κ-stereographic through κ = 0), batched curvature.
    """
    return _geometry(manifold, stiefel_tol, stiefel_max_iter).geodesic(x, y, _as_t(t, torch.broadcast_tensors(x, y)[0]))


@_validated(points=('x', 'y'), vectors=())
def interpolate(manifold, x, y, n, **log_kwargs):
    """``n`` points equally spaced along the geodesic from ``x`` to ``y`` (both included).

    Output shape ``(n,) + broadcast(x, y).shape``.
    """
    if n < 2:
        raise ValueError(f"interpolate: n must be >= 2, got {n}")
    t = torch.linspace(0, 1, n, dtype=x.dtype, device=x.device)
    out = geodesic(manifold, x, y, t, **log_kwargs)
    y_b = torch.broadcast_to(y, out.shape[1:])  # endpoints exactly
    return torch.cat((out[:-1], y_b.unsqueeze(0)), 0)


@_validated(points=('x',), vectors=('u',))
def tangent_project(manifold, x, u):
    """Project an ambient vector ``u`` onto the tangent space at ``x``."""
    return geometry_of(manifold).proju(x, u)


@_validated(points=('points', 'init'), vectors=('weights',))
def frechet_mean(points, manifold, weights=None, iters=100, tol=None, step=1.0, init=None):
    r"""Weighted Fréchet (Karcher) mean of ``points`` ``(N, *batch, *event)`` over dim 0.

    :func:`dlmppl.geometry.base.frechet_mean` on :func:`geometry_of` ``(manifold)``
    (Karcher 1977; Pennec 2006, alg. 1): Riemannian gradient descent with a monotone
    step (at most ``step``), started at the best of up to 16 sample points; in a vector
    space (:attr:`~dlmppl.geometry.Geometry.linear`) the weighted average.  ``weights`` ``(N,)`` or ``(N, *batch)``; ``iters``,
    ``tol`` (default ``1e-10`` float64, ``1e-6`` float32) bound the iteration; ``init``
    ``(*batch, *event)``.  Returns ``(*batch, *event)``: a local minimiser of
    ``Σ wᵢ d(m, xᵢ)²`` (the global one in a geodesically convex ball).
    """
    return _frechet_mean(geometry_of(manifold), points, weights=weights, iters=iters, tol=tol, step=step, init=init)
