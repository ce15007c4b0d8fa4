r"""Manifolds: geoopt's classes under their own names, and curvature.

Everything geoopt offers is re-exported unchanged (``Euclidean``, ``Sphere``,
``SphereExact``, ``Lorentz``, the Stiefel variants,
``SymmetricPositiveDefinite``, ``ProductManifold``, ``Scaled``, ...), except the
κ-stereographic family (``Stereographic``, ``StereographicExact``,
``PoincareBall``, ``PoincareBallExact``, ``SphereProjection``,
``SphereProjectionExact``), which are thin subclasses of geoopt's that

* accept a curvature that is (a) a number, (b) a learnable parameter
  (``learnable=True`` or an ``nn.Parameter``), or (c) any tensor with batch
  dimensions, e.g. one curvature per data point produced by a network
  (shape ``batch_shape + (1,)``, it broadcasts with points of shape
  ``batch_shape + (d,)``), keeping its autograd graph;
* compute with :mod:`dlmppl.kmath`, which is smooth through κ = 0: values and
  gradients (also with respect to κ) are finite for κ of either sign and for
  κ exactly zero.

Conventions of geoopt kept here: ``Stereographic(k)`` has sectional curvature
``k``; ``PoincareBall(c)`` has curvature ``-c``; ``Lorentz(k)`` is the
hyperboloid ``⟨x, x⟩_L = -k`` with curvature ``-1/k``.  Use
:func:`curvature` to read the sectional curvature of any of them.
"""

from __future__ import annotations

import functools
import inspect
import math

import geoopt
import torch
from geoopt import ManifoldParameter, ManifoldTensor
from geoopt.manifolds import (
    BirkhoffPolytope,
    CanonicalStiefel,
    Euclidean,
    EuclideanStiefel,
    EuclideanStiefelExact,
    Manifold,
    ProductManifold,
    Scaled,
    Sphere,
    SphereExact,
    Stiefel,
    SymmetricPositiveDefinite,
    UpperHalf,
)

from . import kmath, lmath

__all__ = [
    "BirkhoffPolytope",
    "CanonicalStiefel",
    "Euclidean",
    "EuclideanStiefel",
    "EuclideanStiefelExact",
    "Lorentz",
    "Manifold",
    "ManifoldParameter",
    "ManifoldTensor",
    "PoincareBall",
    "PoincareBallExact",
    "ProductManifold",
    "Scaled",
    "Sphere",
    "SphereExact",
    "SphereProjection",
    "SphereProjectionExact",
    "Stereographic",
    "StereographicExact",
    "Stiefel",
    "SymmetricPositiveDefinite",
    "UpperHalf",
    "ProjectiveSpace",
    "SO3",
    "Torus",
    "CurvatureParameter",
    "curvature",
    "manifold_dim",
]


def _last_dim_only(cls):
    """Make the ``dim`` argument of ``cls``'s own methods mean what it says.

    :mod:`dlmppl.kmath` and :mod:`dlmppl.lmath` act on the last dimension; geoopt's
    signatures (and geoopt's own calls) carry ``dim``, so any other ``dim`` than the
    last is a ``ValueError`` instead of being silently ignored.
    """

    def checked(fn):
        @functools.wraps(fn)
        def method(self, *args, dim=-1, **kwargs):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            last = tensors[-1].dim() - 1 if tensors else -1
            if dim not in (-1, last):
                raise ValueError(f"dim: {type(self).__name__}.{fn.__name__} acts on the last dimension (dim=-1), got dim={dim}")
            return fn(self, *args, **kwargs)

        return method

    for name, fn in list(vars(cls).items()):
        if inspect.isfunction(fn) and "dim" in inspect.signature(fn).parameters:
            setattr(cls, name, checked(fn))
    return cls


@_last_dim_only
class _KappaMath:
    """Overrides of geoopt's stereographic methods with :mod:`dlmppl.kmath`."""

    def dist(self, x, y, *, keepdim=False, dim=-1):
        return kmath.dist(x, y, self.k, keepdim=keepdim)

    def dist2(self, x, y, *, keepdim=False, dim=-1):
        return self.dist(x, y, keepdim=keepdim) ** 2

    def dist0(self, x, *, keepdim=False, dim=-1):
        return kmath.dist0(x, self.k, keepdim=keepdim)

    def egrad2rgrad(self, x, u, *, dim=-1):
        return kmath.egrad2rgrad(x, u, self.k)

    def projx(self, x, *, dim=-1):
        return kmath.project(x, self.k)

    def inner(self, x, u, v=None, *, keepdim=False, dim=-1):
        return kmath.inner(x, u, u if v is None else v, self.k, keepdim=keepdim)

    def norm(self, x, u, *, keepdim=False, dim=-1):
        return kmath.norm(x, u, self.k, keepdim=keepdim)

    def expmap(self, x, u, *, project=True, dim=-1):
        y = kmath.expmap(x, u, self.k)
        return kmath.project(y, self.k) if project else y

    def expmap0(self, u, *, project=True, dim=-1):
        y = kmath.expmap0(u, self.k)
        return kmath.project(y, self.k) if project else y

    def logmap(self, x, y, *, dim=-1):
        return kmath.logmap(x, y, self.k)

    def logmap0(self, x, *, dim=-1):
        return kmath.logmap0(x, self.k)

    def transp(self, x, y, v, *, dim=-1):
        return kmath.parallel_transport(x, y, v, self.k)

    def transp0(self, y, u, *, dim=-1):
        return kmath.parallel_transport0(y, u, self.k)

    def transp0back(self, y, u, *, dim=-1):
        return kmath.parallel_transport0back(y, u, self.k)

    def lambda_x(self, x, *, dim=-1, keepdim=False):
        return kmath.lambda_x(x, self.k, keepdim=keepdim)

    def mobius_add(self, x, y, *, dim=-1, project=True):
        z = kmath.mobius_add(x, y, self.k)
        return kmath.project(z, self.k) if project else z

    def gyration(self, x, y, z, *, dim=-1):
        return kmath.gyration(x, y, z, self.k)

    def geodesic(self, t, x, y, *, dim=-1):
        return kmath.geodesic(t, x, y, self.k)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^x)`` to full relative accuracy for every ``x`` (torch's returns ``x`` above 20)."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def _inv_softplus(c: torch.Tensor) -> torch.Tensor:
    """``log(e^c - 1) = c + log(-expm1(-c))`` for ``c > 0``: no overflow for large ``c``.

    (``log(expm1(c))`` is ``inf`` from ``c ≈ 88`` in float32 and ``709`` in float64.)
    """
    return c + torch.log(-torch.expm1(-c))


def _validating() -> bool:
    # the switch of Pyro/torch validation (pyro.enable_validation sets it)
    return bool(torch.distributions.Distribution._validate_args)


def _check_finite(owner: str, name: str, k: torch.Tensor) -> None:
    if not bool(torch.isfinite(k.detach()).all()):
        raise ValueError(f"{name}: {owner} needs a finite curvature, got {k.detach()}")


def _store_curvature(module: torch.nn.Module, name: str, k, learnable: bool):
    """Store ``k`` as a parameter, or as a plain tensor when it carries a graph.

    A NaN or infinite ``k`` raises ``ValueError`` (for a tensor that carries a graph,
    e.g. a network output, only when validation is on: the check is a host sync).
    """
    owner = type(module).__name__
    if isinstance(k, torch.nn.Parameter):
        _check_finite(owner, name, k)
        module.register_parameter(name, k)
        return
    if isinstance(k, torch.Tensor) and k.requires_grad:
        # a network output or a user's tensor: keep the graph
        if _validating():
            _check_finite(owner, name, k)
        object.__setattr__(module, name, k)
        return
    k = torch.as_tensor(k)
    if not torch.is_floating_point(k):
        k = k.to(torch.get_default_dtype())
    k = k.detach().clone()
    _check_finite(owner, name, k)
    if learnable:
        module.register_parameter(name, torch.nn.Parameter(k))
    else:
        # a buffer, not a frozen Parameter: PyroModule would warn on every call
        module.register_buffer(name, k)


class Stereographic(_KappaMath, geoopt.Stereographic):
    __doc__ = (
        "κ-stereographic model of curvature ``k`` (any sign, zero included, batched)."
        "\n\n    Parameters\n    ----------\n    k : float | Tensor | nn.Parameter\n"
        "        curvature; a tensor of shape ``batch_shape + (1,)`` gives one curvature\n"
        "        per point and keeps its autograd graph (network outputs).\n"
        "    learnable : bool\n        make a number ``k`` a trainable parameter.\n"
    )

    def __init__(self, k=0.0, learnable=False):
        torch.nn.Module.__init__(self)
        _store_curvature(self, "k", k, learnable)

    def extra_repr(self):
        k = self.k
        return f"k={k.item():.4g}" if k.numel() == 1 else f"k: tensor{tuple(k.shape)}"


@_last_dim_only
class StereographicExact(Stereographic, geoopt.StereographicExact):
    __doc__ = "κ-stereographic model whose retraction is the exact exponential map."

    def retr(self, x, u, *, dim=-1):
        return self.expmap(x, u)

    def retr_transp(self, x, u, v, *, dim=-1):
        y = self.expmap(x, u)
        return y, self.transp(x, y, v)

    def transp_follow_retr(self, x, u, v, *, dim=-1):
        return self.transp(x, self.expmap(x, u), v)


class _SignedCurvature(Stereographic):
    """Stereographic model whose curvature keeps a sign: ``κ = sign · c``, ``c > 0``.

    A number or plain tensor ``c`` is stored as ``ρ = softplus⁻¹(c)`` (a parameter when
    ``learnable``) and read back as ``c = softplus(ρ)``, both evaluated in forms that
    neither overflow nor lose relative accuracy, so any finite ``c > 0`` the dtype holds
    (``1e-30`` … ``1e30`` in float32) round-trips to within ``|log c|`` ulps (``log(expm1(c))``
    overflowed from ``c ≈ 88`` in float32, ``709`` in float64).  A tensor that
    carries a graph (a network output) is used as it is.  ``c`` must be finite and
    ``> 0``: otherwise ``ValueError`` naming ``c`` (for a graph tensor only when
    validation is on).
    """

    _sign = -1.0

    def __init__(self, c=1.0, learnable=False):
        torch.nn.Module.__init__(self)
        if isinstance(c, torch.Tensor) and c.requires_grad:
            if _validating():
                self._check_c(c)
            object.__setattr__(self, "_c_tensor", c)
            return
        c = torch.as_tensor(c)
        if not torch.is_floating_point(c):
            c = c.to(torch.get_default_dtype())
        self._check_c(c)
        with torch.no_grad():
            isp = _inv_softplus(c.detach().clone())
        if learnable:
            self.isp_c = torch.nn.Parameter(isp)
        else:
            self.register_buffer("isp_c", isp)

    def _check_c(self, c):
        c = c.detach()
        if not bool(((c > 0) & torch.isfinite(c)).all()):
            raise ValueError(f"c: {type(self).__name__}: c must be > 0 and finite (curvature {self._sign:+g}·c), got {c}")

    @property
    def c(self):
        c = self.__dict__.get("_c_tensor")
        return c if c is not None else _softplus(self.isp_c)

    @property
    def k(self):
        return self._sign * self.c

    def extra_repr(self):
        c = self.c
        return f"c={c.item():.4g}" if c.numel() == 1 else f"c: tensor{tuple(c.shape)}"


class PoincareBall(_SignedCurvature, geoopt.PoincareBall):
    __doc__ = "Poincaré ball of curvature ``-c`` (``c > 0``, learnable, or batched)."
    _sign = -1.0


class PoincareBallExact(PoincareBall, StereographicExact, geoopt.PoincareBallExact):
    __doc__ = "Poincaré ball whose retraction is the exact exponential map."


class SphereProjection(_SignedCurvature, geoopt.SphereProjection):
    __doc__ = "Stereographic projection of the sphere of curvature ``k > 0``."
    _sign = 1.0


class SphereProjectionExact(SphereProjection, StereographicExact, geoopt.SphereProjectionExact):
    __doc__ = "Stereographic sphere whose retraction is the exact exponential map."


@_last_dim_only
class Lorentz(geoopt.Lorentz):
    __doc__ = (
        "Hyperboloid ``⟨x, x⟩_L = -k`` (curvature ``-1/k``) whose ``k`` may be a number,\n"
        "    a learnable parameter, or a tensor that keeps its autograd graph (e.g. a\n"
        "    network output of shape ``batch_shape + (1,)``).\n\n"
        "    Distances, ``exp``/``log`` (at any point and at the origin), inner products,\n"
        "    projections, the Riemannian gradient and the point check use the\n"
        "    cancellation-free forms of :mod:`dlmppl.lmath` (geoopt's Minkowski-product\n"
        "    formulas are wrong far from the origin: ``dist`` is 0 for points at distance 1\n"
        "    at radius 20 in float64); tangent vectors are read from their spatial part."
    )

    def __init__(self, k=1.0, learnable=False):
        torch.nn.Module.__init__(self)
        _store_curvature(self, "k", k, learnable)

    def _kk(self, x):
        return torch.as_tensor(self.k).to(dtype=x.dtype, device=x.device)

    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5, dim=-1):
        ok = bool((lmath.violation(x, self._kk(x)) <= atol + rtol).all())
        return ok, None if ok else f"'x' violates ⟨x, x⟩_L = -k by more than {atol + rtol:g} (relative)"

    def dist(self, x, y, *, keepdim=False, dim=-1):
        return lmath.dist(x, y, self._kk(x), keepdim=keepdim)

    def dist0(self, x, *, keepdim=False, dim=-1):
        return lmath.dist0(x, self._kk(x), keepdim=keepdim)

    def egrad2rgrad(self, x, u, *, dim=-1):
        return lmath.egrad2rgrad(x, u, self._kk(x))

    def projx(self, x, *, dim=-1):
        return lmath.project(x, self._kk(x))

    def proju(self, x, v, *, dim=-1):
        return lmath.tangent_project(x, v, self._kk(x))

    def inner(self, x, u, v=None, *, keepdim=False, dim=-1):
        return lmath.inner(x, u, u if v is None else v, self._kk(x), keepdim=keepdim)

    def expmap(self, x, u, *, norm_tan=True, project=True, dim=-1):
        # the spatial part of u defines the tangent vector (the Minkowski projection of a
        # tangent vector is ill-conditioned far out); the result is on the hyperboloid
        return lmath.expmap(x, u, self._kk(x))

    def expmap0(self, u, *, project=True, dim=-1):
        return lmath.expmap0(u, self._kk(u))

    def logmap(self, x, y, *, dim=-1):
        return lmath.logmap(x, y, self._kk(x))

    def logmap0(self, y, *, dim=-1):
        return lmath.logmap0(y, self._kk(y))

    retr = expmap


class CurvatureParameter(torch.nn.Module):
    """A learnable curvature, free or with a fixed sign.

    ``sign=None`` gives a free real parameter (the space may pass from
    hyperbolic through flat to spherical during training); ``sign=-1`` or
    ``+1`` gives ``κ = sign * softplus(ρ)``.  Calling the module returns κ with
    shape ``()``; pass it to :class:`Stereographic`.
    """

    def __init__(self, init: float = 0.0, sign: float | None = None):
        super().__init__()
        self.sign = sign
        if not math.isfinite(float(init)):
            raise ValueError(f"init: CurvatureParameter needs a finite initial curvature, got {init}")
        if sign is None:
            self.raw = torch.nn.Parameter(torch.tensor(float(init)))
        else:
            if init * sign <= 0:
                raise ValueError(f"init: CurvatureParameter init={init} has the wrong sign for sign={sign}")
            self.raw = torch.nn.Parameter(_inv_softplus(torch.tensor(abs(float(init)))))

    def forward(self) -> torch.Tensor:
        if self.sign is None:
            return self.raw
        return self.sign * _softplus(self.raw)


def curvature(manifold) -> torch.Tensor:
    """Sectional curvature of a constant-curvature manifold as a tensor (its family's
    ``sectional_curvature``): sphere ``1``; Euclidean ``0``; κ-stereographic / Poincaré ball
    ``k``; Lorentz(k) ``-1/k``; keeps the graph of a learnable curvature.  ``ValueError``
    for other manifolds."""
    from .geometry import geometry_of

    g = geometry_of(manifold)
    if not hasattr(g, "sectional_curvature"):
        raise ValueError(f"curvature: {type(manifold).__name__} has no constant sectional curvature")
    k = getattr(manifold, "k", None)
    return g.sectional_curvature(k if isinstance(k, torch.Tensor) else torch.zeros(()))


def manifold_dim(manifold, event_shape) -> int:
    """Intrinsic dimension of ``manifold`` for points of ``event_shape`` (its family's
    :meth:`~dlmppl.geometry.Geometry.intrinsic_dim`)."""
    from .geometry import geometry_of

    return geometry_of(manifold).intrinsic_dim(tuple(event_shape))


# manifolds geoopt does not have, each defined with its geometry in dlmppl/geometry/ (issue 13)
from .geometry.projective import ProjectiveSpace  # noqa: E402
from .geometry.so3 import SO3  # noqa: E402
from .geometry.torus import Torus  # noqa: E402
