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

import geoopt
import torch

from .. import constraints as _constraints
from .. import kmath, lmath
from .. import manifolds as _m

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

STIEFEL_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


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
        mname = type(_m._base(manifold)).__name__
        bound = _constraints._BOUNDS.get(mname, "on the manifold")
        raise ValueError(
            f"{name}: {int((~ok).sum())} point(s) not on {mname} ({bound}): largest violation {worst:g} > "
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
            manifold = bound.arguments["manifold"]
            _kind(manifold)  # an unsupported manifold is reported first
            for name in points:
                value = bound.arguments.get(name)
                if value is not None:
                    _check_point(manifold, name, value)
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


# --------------------------------------------------------------------------- helpers


def _tiny(x):
    return torch.finfo(x.dtype).tiny


def _ratio_sin(r):
    """``sin(r)/r`` with the limit 1 at 0 (value and gradient finite)."""
    small = r.abs() < 1e-3
    rs = torch.where(small, torch.ones_like(r), r)
    return torch.where(small, 1 - r * r / 6 + r**4 / 120, torch.sin(rs) / rs)


def _safe_norm(x, dims=(-1,)):
    return x.pow(2).sum(dims, keepdim=True).clamp_min(_tiny(x)).sqrt()


def _as_t(t, like):
    """``t`` as a tensor broadcastable against ``like`` (points shape); returns (t, batched)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t, False
    if t.dim() != 1:
        raise ValueError(f"t must be a number or a 1-d tensor of shape (T,), got shape {tuple(t.shape)}")
    return t.reshape(t.shape + (1,) * like.dim()), True


def _sym(a):
    return 0.5 * (a + a.transpose(-1, -2))


def _sym_fn(a, fn):
    """Apply ``fn`` to the eigenvalues of the symmetric matrix ``a``."""
    w, q = torch.linalg.eigh(_sym(a))
    return (q * fn(w).unsqueeze(-2)) @ q.transpose(-1, -2)


def _kind(M):
    b = _m._base(M)
    if isinstance(b, geoopt.ProductManifold):
        return "product"
    if isinstance(b, geoopt.Stereographic):
        return "stereographic"
    if isinstance(b, geoopt.Lorentz):
        return "lorentz"
    if isinstance(b, geoopt.Sphere):
        return "sphere"
    if isinstance(b, geoopt.EuclideanStiefel):
        return "stiefel_embedded"
    if isinstance(b, geoopt.Stiefel):
        return "stiefel_canonical"
    if isinstance(b, geoopt.SymmetricPositiveDefinite):
        return "spd"
    if isinstance(b, geoopt.Euclidean):
        return "euclidean"
    raise ValueError(
        f"manifold: {type(M).__name__} is not supported by dlmppl.geometry (supported: Euclidean, "
        "Sphere, Stereographic/PoincareBall/SphereProjection, Lorentz, Stiefel, SymmetricPositiveDefinite, "
        "ProductManifold, Scaled)"
    )


def _scale(M):
    s = 1.0
    while isinstance(M, geoopt.Scaled):
        s = s * M.scale
        M = M.base
    return s


def _lorentz_k(M, x):
    k = torch.as_tensor(_m._base(M).k, dtype=x.dtype, device=x.device)
    return k


def _stereo_k(M, x):
    return torch.as_tensor(_m._base(M).k, dtype=x.dtype, device=x.device)


def _product_apply(M, fn, *tensors):
    """Apply ``fn(component, *component_tensors)`` to each component and re-pack."""
    b = _m._base(M)
    outs = []
    for i, mi in enumerate(b.manifolds):
        parts = [b.take_submanifold_value(t, i) for t in tensors]
        outs.append(fn(mi, *parts))
    return outs


def _product_pack(M, outs):
    b = _m._base(M)
    flat = []
    for o, mi in zip(outs, b.manifolds, strict=True):
        nd = mi.ndim
        flat.append(o.reshape(o.shape[: o.dim() - nd] + (-1,)) if nd > 0 else o.unsqueeze(-1))
    batch = torch.broadcast_shapes(*[f.shape[:-1] for f in flat])
    flat = [f.expand(batch + f.shape[-1:]) for f in flat]
    return torch.cat(flat, -1)


# --------------------------------------------------------------------------- Stiefel


def _stiefel_exp_embedded(x, u):
    # Edelman, Arias & Smith 1998, eq. (2.14)
    p = x.shape[-1]
    x, u = torch.broadcast_tensors(x, u)
    a = x.transpose(-1, -2) @ u
    s = u.transpose(-1, -2) @ u
    eye = torch.eye(p, dtype=x.dtype, device=x.device).expand_as(a)
    blk = torch.cat((torch.cat((a, -s), -1), torch.cat((eye, a), -1)), -2)
    w = torch.linalg.matrix_exp(blk)[..., :p]
    return torch.cat((x, u), -1) @ (w @ torch.linalg.matrix_exp(-a))


def _stiefel_exp_canonical(x, u):
    # Edelman, Arias & Smith 1998, eq. (2.41)
    p = x.shape[-1]
    x, u = torch.broadcast_tensors(x, u)
    a = x.transpose(-1, -2) @ u
    q, r = torch.linalg.qr(u - x @ a)
    zero = torch.zeros_like(a)
    blk = torch.cat((torch.cat((a, -r.transpose(-1, -2)), -1), torch.cat((r, zero), -1)), -2)
    mn = torch.linalg.matrix_exp(blk)[..., :p]
    return x @ mn[..., :p, :] + q @ mn[..., p:, :]


def _stiefel_proju(x, u):
    return u - x @ _sym(x.transpose(-1, -2) @ u)


def _stiefel_log(x, y, exp_fn, tol=None, max_iter=50):
    """Solve ``exp_x(Δ) = y`` by damped Gauss–Newton (Levenberg–Marquardt) on the tangent space at ``x``.

    The iteration runs in float64 whatever the inputs' dtype (the ``np × np`` normal
    equations are singular in the ``p(p+1)/2`` normal directions and float32 cannot
    carry the damping that regularises them) and returns ``Δ`` in the inputs' dtype.
    A ``ValueError`` naming ``y`` is raised when it does not converge (``y`` beyond the
    injectivity radius of ``x``): a logarithm that is not one is never returned.
    """
    from torch.func import jacfwd, vmap

    x, y = torch.broadcast_tensors(x, y)
    batch = x.shape[:-2]
    n, p = x.shape[-2:]
    dtype = x.dtype
    if x.numel() == 0:
        return torch.zeros_like(x)
    xf = x.reshape(-1, n, p).double()
    yf = y.reshape(-1, n, p).double()
    if tol is None:
        tol = STIEFEL_TOL.get(dtype, 1e-5)
    w = _stiefel_proju(xf, yf - xf)

    def resid(wi, xi, yi):
        return (exp_fn(xi, _stiefel_proju(xi, wi)) - yi).reshape(-1)

    jac = vmap(jacfwd(resid), in_dims=(0, 0, 0))
    res_fn = vmap(resid)
    eye = torch.eye(n * p, dtype=xf.dtype, device=x.device)
    worst = float("inf")
    for _ in range(max_iter):
        r = res_fn(w, xf, yf)
        worst = float(r.detach().abs().max())
        if worst < tol:
            break
        j = jac(w, xf, yf).reshape(-1, n * p, n * p)
        jtj = j.transpose(-1, -2) @ j
        mu = 1e-10 * jtj.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1.0)[..., None, None]
        step = torch.linalg.solve(jtj + mu * eye, (j.transpose(-1, -2) @ r.unsqueeze(-1)))
        w = _stiefel_proju(xf, w - step.reshape(-1, n, p))
    else:
        worst = float(res_fn(w, xf, yf).detach().abs().max())
    if not worst < max(tol, 1e3 * torch.finfo(dtype).eps):
        raise ValueError(
            f"y: the Stiefel logarithm did not converge in {max_iter} iterations (residual {worst:.3g}): "
            "y is too far from x (beyond the injectivity radius) or not on the manifold"
        )
    return w.reshape(batch + (n, p)).to(dtype)


def _stiefel_inner(x, u, v, canonical):
    out = (u * v).sum((-1, -2))
    if canonical:
        out = out - 0.5 * ((x.transpose(-1, -2) @ u) * (x.transpose(-1, -2) @ v)).sum((-1, -2))
    return out


# --------------------------------------------------------------------------- public API


@_validated(points=('x',), vectors=('v',))
def expmap(manifold, x, v):
    """Riemannian exponential ``exp_x(v)`` (closed form for every supported manifold).

    Shapes: ``x`` and ``v`` broadcast, ``batch_shape + event_shape``.
    """
    kind = _kind(manifold)
    if kind == "euclidean":
        return x + v
    if kind == "sphere":
        r = _safe_norm(v)
        return torch.cos(r) * x + _ratio_sin(r) * v
    if kind == "stereographic":
        return kmath.expmap(x, v, _stereo_k(manifold, x))
    if kind == "lorentz":
        # the tangent vector is read from its spatial part (dlmppl.lmath: no cancellation far out)
        return lmath.expmap(x, v, _lorentz_k(manifold, x))
    if kind == "stiefel_embedded":
        return _stiefel_exp_embedded(x, v)
    if kind == "stiefel_canonical":
        return _stiefel_exp_canonical(x, v)
    if kind == "spd":
        s = _sym_fn(x, torch.sqrt)
        si = _sym_fn(x, torch.rsqrt)
        return _sym(s @ _sym_fn(si @ v @ si, torch.exp) @ s)
    outs = _product_apply(manifold, expmap, x, v)
    return _product_pack(manifold, outs)


@_validated(points=('x', 'y'), vectors=())
def logmap(manifold, x, y, *, stiefel_tol=None, stiefel_max_iter=50):
    """Riemannian logarithm ``log_x(y)`` (the inverse of :func:`expmap` within the injectivity radius).

    Closed form except on Stiefel, where it is solved iteratively (module docstring).
    Shapes: ``x`` and ``y`` broadcast, ``batch_shape + event_shape``.
    """
    kind = _kind(manifold)
    if kind == "euclidean":
        return y - x
    if kind == "sphere":
        c = (x * y).sum(-1, keepdim=True)
        u = y - c * x
        u = u - (u * x).sum(-1, keepdim=True) * x  # tangent also when |x| is 1 only to rounding
        un = _safe_norm(u)
        theta = torch.atan2(un, c)
        # antipodes: every great circle is minimising; take the documented one (module docstring)
        anti = (un <= 4 * torch.finfo(x.dtype).eps) & (c < 0)
        j = x.abs().argmin(-1, keepdim=True)
        e = torch.zeros_like(x).scatter(-1, j, 1.0)
        t_hat = e - x.gather(-1, j) * x
        t_hat = t_hat / _safe_norm(t_hat)
        return torch.where(anti, torch.pi * t_hat, u * (theta / un))
    if kind == "stereographic":
        return kmath.logmap(x, y, _stereo_k(manifold, x))
    if kind == "lorentz":
        return lmath.logmap(x, y, _lorentz_k(manifold, x))
    if kind in ("stiefel_embedded", "stiefel_canonical"):
        fn = _stiefel_exp_embedded if kind == "stiefel_embedded" else _stiefel_exp_canonical
        return _stiefel_log(x, y, fn, tol=stiefel_tol, max_iter=stiefel_max_iter)
    if kind == "spd":
        s = _sym_fn(x, torch.sqrt)
        si = _sym_fn(x, torch.rsqrt)
        return _sym(s @ _sym_fn(si @ y @ si, torch.log) @ s)
    outs = _product_apply(manifold, lambda mi, a, b: logmap(mi, a, b, stiefel_tol=stiefel_tol), x, y)
    return _product_pack(manifold, outs)


@_validated(points=('x',), vectors=('u', 'v'))
def inner(manifold, x, u, v=None):
    """Riemannian inner product ``g_x(u, v)``; shape ``batch_shape``."""
    if v is None:
        v = u
    s = _scale(manifold)
    kind = _kind(manifold)
    if kind in ("euclidean", "sphere"):
        nd = _m._base(manifold).ndim
        out = (u * v).sum(tuple(range(-nd, 0))) if nd else u * v
    elif kind == "stereographic":
        out = kmath.inner(x, u, v, _stereo_k(manifold, x))
    elif kind == "lorentz":
        # ⟨u, v⟩_L of tangent vectors from their frame coordinates (no cancellation)
        out = lmath.inner(x, u, v, _lorentz_k(manifold, x))
    elif kind in ("stiefel_embedded", "stiefel_canonical"):
        out = _stiefel_inner(x, u, v, kind == "stiefel_canonical")
    elif kind == "spd":
        xi = torch.linalg.inv(x)
        out = ((xi @ u) * (xi @ v).transpose(-1, -2)).sum((-1, -2))
    else:
        parts = _product_apply(manifold, inner, x, u, v)
        out = sum(torch.broadcast_tensors(*parts))
    return out * s * s if not isinstance(s, float) or s != 1.0 else out


@_validated(points=('x',), vectors=('u',))
def norm(manifold, x, u):
    """Riemannian norm ``‖u‖_x``; shape ``batch_shape``."""
    return inner(manifold, x, u).clamp_min(0).sqrt()


@_validated(points=('x', 'y'), vectors=())
def distance(manifold, x, y, *, stiefel_tol=None):
    """Geodesic distance ``d(x, y)``; shape ``broadcast(batch_shape)``.

    Closed form on all manifolds but Stiefel (``‖log_x y‖``, iterative log there).
    """
    kind = _kind(manifold)
    s = _scale(manifold)
    if kind == "euclidean":
        nd = _m._base(manifold).ndim
        d = (y - x).pow(2).sum(tuple(range(-nd, 0))).sqrt() if nd else (y - x).abs()
    elif kind == "sphere":
        c = (x * y).sum(-1)
        d = torch.atan2((y - c.unsqueeze(-1) * x).norm(dim=-1), c)
    elif kind == "stereographic":
        d = kmath.dist(x, y, _stereo_k(manifold, x))
    elif kind == "lorentz":
        # not √k arcosh(-⟨x, y⟩_L / k): that cancels from radius ≈ 10 in float64
        d = lmath.dist(x, y, _lorentz_k(manifold, x))
    elif kind == "spd":
        si = _sym_fn(x, torch.rsqrt)
        w = torch.linalg.eigvalsh(_sym(si @ y @ si))
        d = w.log().pow(2).sum(-1).sqrt()
    elif kind in ("stiefel_embedded", "stiefel_canonical"):
        u = logmap(manifold, x, y, stiefel_tol=stiefel_tol)
        d = _stiefel_inner(x, u, u, kind == "stiefel_canonical").clamp_min(0).sqrt()
    else:
        parts = _product_apply(manifold, lambda mi, a, b: distance(mi, a, b).pow(2), x, y)
        return (sum(torch.broadcast_tensors(*parts)).sqrt()) * s
    return d * s


@_validated(points=('x',), vectors=('v', 't'))
def shoot(manifold, x, v, t=1.0):
    """Geodesic from ``x`` with initial velocity ``v``: ``exp_x(t v)``.

    ``t``: number / 0-d tensor (output ``batch_shape + event_shape``) or ``(T,)``
    (output ``(T,) + batch_shape + event_shape``).
    """
    tt, _ = _as_t(t, torch.broadcast_tensors(x, v)[0])
    return expmap(manifold, x, tt * v)


@_validated(points=('x', 'y'), vectors=('t',))
def geodesic(manifold, x, y, t, **log_kwargs):
    """Point at fraction ``t`` of the minimising geodesic from ``x`` (t=0) to ``y`` (t=1).

    ``t``: number / 0-d tensor or shape ``(T,)`` (output ``(T,) + points shape``).
    Any curvature sign (κ-stereographic through κ = 0), batched curvature.
    """
    if _kind(manifold) == "lorentz":
        # in frame coordinates: an ambient tangent vector far out cannot carry its component across
        # the radius (its spatial part is ~e^r larger), so log-then-exp through it loses it (lmath)
        k = _lorentz_k(manifold, x)
        w = lmath.log_frame(x, y, k)
        tt, _ = _as_t(t, w)
        return lmath.exp_frame(x, tt * w, k)
    v = logmap(manifold, x, y, **log_kwargs)
    tt, _ = _as_t(t, v)
    return expmap(manifold, x, tt * v)


@_validated(points=('x', 'y'), vectors=())
def interpolate(manifold, x, y, n, **log_kwargs):
    """``n`` points equally spaced along the geodesic from ``x`` to ``y`` (both included).

    Output shape ``(n,) + broadcast(x, y).shape``.
    """
    if n < 2:
        raise ValueError(f"interpolate: n must be >= 2, got {n}")
    t = torch.linspace(0, 1, n, dtype=x.dtype, device=x.device)
    out = geodesic(manifold, x, y, t, **log_kwargs)
    # endpoints exactly
    y_b = torch.broadcast_to(y, out.shape[1:])
    return torch.cat((out[:-1], y_b.unsqueeze(0)), 0)


@_validated(points=('x',), vectors=('u',))
def tangent_project(manifold, x, u):
    """Project an ambient vector ``u`` onto the tangent space at ``x``."""
    kind = _kind(manifold)
    if kind == "sphere":
        return u - (x * u).sum(-1, keepdim=True) * x
    if kind == "lorentz":
        return lmath.tangent_project(x, u, _lorentz_k(manifold, x))
    if kind in ("stiefel_embedded", "stiefel_canonical"):
        return _stiefel_proju(x, u)
    if kind == "spd":
        return _sym(u)
    if kind == "product":
        return _product_pack(manifold, _product_apply(manifold, tangent_project, x, u))
    return u


@_validated(points=('points', 'init'), vectors=('weights',))
def frechet_mean(points, manifold, weights=None, iters=100, tol=None, step=1.0, init=None):
    r"""Weighted Fréchet (Karcher) mean by Riemannian gradient descent with a monotone step.

    Minimises ``f(m) = Σᵢ wᵢ d(m, xᵢ)²`` with ``m ← exp_m(s · Σᵢ wᵢ log_m(xᵢ))``
    (Karcher 1977; Pennec 2006, alg. 1), where the step ``s`` (at most
    ``step``) is halved whenever ``f`` would increase and doubled back after a
    success, independently for every batch element, so the iteration never
    oscillates on spread-out or curved data.  The start is, of up to 16 evenly
    spaced sample points, the one with the smallest ``f`` (scored on up to 512
    evenly spaced points); in flat space the weighted average is returned.

    Parameters
    ----------
    points : Tensor ``(N, *batch, *event)``; the mean is over dim 0.
    weights : Tensor ``(N,)`` or ``(N, *batch)``, non-negative; normalised to sum 1.
    iters, tol : at most ``iters`` steps; stops when the Riemannian gradient norm
        ``‖Σ wᵢ log_m xᵢ‖`` falls below ``tol`` (default ``1e-10`` float64, ``1e-6`` float32).
    step : largest step size (1 is Newton-like for spaces of curvature ≤ 0).
    init : Tensor ``(*batch, *event)``, optional starting point.

    Returns ``(*batch, *event)``: a local minimiser of ``f`` (the global one when the
    points lie in a geodesically convex ball, e.g. an open hemisphere).  One host
    sync per iteration (the stopping test).
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
    kind = _kind(manifold)
    if kind == "euclidean" and init is None:
        return (w * points).sum(0)

    def objective(m, pts=points, ww=weights):
        d2 = distance(manifold, m.unsqueeze(0), pts).pow(2)
        return (ww.reshape(ww.shape + (1,) * (d2.dim() - ww.dim())) * d2).sum(0)

    if init is not None:
        mean = init.to(points)
    else:
        idx = torch.linspace(0, n - 1, min(n, 16), device=points.device).round().long()
        sub = torch.linspace(0, n - 1, min(n, 512), device=points.device).round().long()
        costs = torch.stack([objective(points[i], points[sub], weights[sub]) for i in idx])  # (C, *batch)
        best = costs.argmin(0)  # (*batch)
        cands = points[idx]  # (C, *batch, *event)
        sel = best.reshape((1,) + best.shape + (1,) * (cands.dim() - 1 - best.dim()))
        mean = torch.take_along_dim(cands, sel.expand((1,) + cands.shape[1:]), 0).squeeze(0)
    f = objective(mean)
    bshape = f.shape
    s = torch.full(bshape, float(step), dtype=points.dtype, device=points.device)
    ev = mean.dim() - len(bshape)

    def bcast(t):
        return t.reshape(t.shape + (1,) * ev)

    lorentz = kind == "lorentz"  # frame coordinates at the mean (see geodesic); the frame is orthonormal
    k = _lorentz_k(manifold, points) if lorentz else None
    for _ in range(iters):
        if lorentz:
            g = (w * lmath.log_frame(mean.unsqueeze(0), points, k)).sum(0)
            gnorm = g.norm(dim=-1) * _scale(manifold)
        else:
            g = (w * logmap(manifold, mean.unsqueeze(0), points)).sum(0)
            gnorm = norm(manifold, mean, g)
        if float(gnorm.detach().max()) < tol:
            break
        cand = lmath.exp_frame(mean, bcast(s) * g, k) if lorentz else expmap(manifold, mean, bcast(s) * g)
        fc = objective(cand)
        ok = fc <= f
        mean = torch.where(bcast(ok), cand, mean)
        f = torch.where(ok, fc, f)
        s = torch.where(ok, (2 * s).clamp(max=float(step)), s / 2)
        if float(s.max()) < 1e-12:
            break
    return mean
