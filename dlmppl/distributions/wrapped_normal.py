r"""The wrapped (tangent-space) normal distribution on constant-curvature manifolds.

A draw is made in three steps (Nagano et al. 2019, "A Wrapped Normal
Distribution on Hyperbolic Space for Gradient-Based Learning", ICML; Skopek,
Ganea & Bécigneul 2020, "Mixed-curvature Variational Autoencoders", ICLR, for
the κ-stereographic family; Mathieu et al. 2019 for the Poincaré ball):

1. ``v ~ N(0, diag σ²)`` in ``R^d`` (``d`` the intrinsic dimension);
2. ``v`` is read as coordinates in the tangent space at the manifold's origin
   ``o`` with respect to its standard orthonormal frame, and parallel-transported
   along the geodesic from ``o`` to ``loc``; this gives an orthonormal frame of
   ``T_loc`` that depends smoothly on ``loc``;
3. ``z = exp_loc(v)``.

Origins and frames (``e_i`` the standard basis of the ambient space):

* κ-stereographic model (``Stereographic``, ``PoincareBall``,
  ``SphereProjection``, dlmppl's or geoopt's, any sign of κ, κ = 0 included,
  κ batched as ``batch_shape + (1,)``): ``o = 0``, frame ``e_i / 2`` (the metric
  at the origin is ``4 I``, so a Riemannian-unit vector has ambient norm 1/2).
  Transport to ``loc`` multiplies by ``1 + κ‖loc‖²`` and is smooth everywhere in
  the chart.  So ``z = loc ⊕_κ exp0_κ(v / 2)`` and, conversely,
  ``v = 2 log0_κ((-loc) ⊕_κ z)`` (:mod:`dlmppl.kmath`, smooth through κ = 0).
* Lorentz model ``⟨x, x⟩_L = -k``: ``o = (√k, 0, …, 0)``, frame ``e_1 … e_d``.
  Transport from ``o`` is smooth on the whole hyperboloid; ``exp``/``log`` in this
  frame are :func:`dlmppl.lmath.exp_frame` / :func:`~dlmppl.lmath.log_frame`, free of
  the Minkowski-product cancellation far from the origin.
* Sphere ``S^d ⊂ R^{d+1}`` (geoopt ``Sphere`` / ``SphereExact``): base point
  ``o = e_0 = (1, 0, …, 0)``, frame ``e_1 … e_d``, transported along the
  minimising geodesic; this frame is smooth everywhere except at ``loc = -e_0``
  (no smooth global frame exists on ``S^d``).  An *isotropic* scale does not
  need a frame: ``rsample`` then projects ``σ ε``, ``ε ~ N(0, I_{d+1})``, onto
  ``T_loc`` (an isotropic normal of ``T_loc``) and ``log_prob`` uses only
  ``d(loc, z)``, so isotropic wrapped normals are smooth for every ``loc``.
* Euclidean space (``Euclidean(ndim=1)``): the normal distribution itself.

Density (with respect to the Riemannian volume).  In geodesic polar
coordinates at ``loc`` the volume element is ``sin_κ(r)^{d-1} dr dξ``, so the
log-determinant of ``exp_loc`` at a tangent vector of norm ``r`` is
``(d-1) log(sin_κ(r)/r)`` and, when ``exp_loc`` is injective (κ ≤ 0),

.. math::

    \log p(z) = \log \mathcal N(v; 0, \operatorname{diag}\sigma^2)
                - (d-1) \log\frac{\sin_\kappa r}{r}, \qquad v = \text{coords of }\log_{loc} z,\ r = \|v\|.

For κ > 0 (sphere, stereographic sphere) ``exp_loc`` is not injective: the
preimages of ``z`` are ``v_n = (1 + 2πn/(√κ r)) v``, ``n ∈ Z``, all with
``|sin_κ|`` equal to ``|sin_κ(r)|``, so

.. math::

    \log p(z) = -(d-1)\log\frac{\sin_\kappa r}{r}
               + \operatorname{logsumexp}_n\Big[\log\mathcal N(v_n) + (d-1)\log|1 + 2\pi n/(\sqrt\kappa r)|\Big].

The sum is taken over ``|n| ≤ N`` with ``N`` chosen from the largest
``√κ σ`` of the batch so that the dropped terms are below ``e^{-50}`` of the
kept ones (this costs one device synchronisation per call when the manifold
can have κ > 0; Poincaré ball and Lorentz need none).  The density then
integrates to one exactly; note that for ``d ≥ 2`` it has integrable
singularities at the antipode ``-loc`` and (through the wraps) at ``loc``
itself.
"""

from __future__ import annotations

import math

import geoopt
import torch
from torch.distributions import constraints as _tc

from .. import constraints as _constraints
from .. import kmath, lmath
from .. import manifolds as _manifolds
from .base import ManifoldDistribution

__all__ = ["WrappedNormal"]

_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------
# geometry helpers: Riemannian coordinates in the transported frame, for each manifold kind


def _check_curvature(kind: str, p: torch.Tensor) -> None:
    """``ValueError`` naming ``curvature`` for a NaN/inf curvature or a Lorentz ``k ≤ 0``."""
    if not torch.isfinite(p).all():
        raise ValueError(f"curvature: the manifold's curvature must be finite, got {p}")
    if kind == "lorentz" and not (p > 0).all():
        raise ValueError(f"curvature: Lorentz k must be > 0, got {p}")


def _manifold_kind(manifold) -> str:
    base = _manifolds._base(manifold)
    if base is not manifold:
        raise ValueError(f"manifold: Scaled manifolds are not supported, got {manifold!r}")
    if isinstance(base, geoopt.Stereographic):
        return "stereo"
    if isinstance(base, geoopt.Lorentz):
        return "lorentz"
    if isinstance(base, geoopt.Sphere):
        return "sphere"
    if isinstance(base, geoopt.Euclidean):
        if base.ndim != 1:
            raise ValueError(f"manifold: Euclidean space must have ndim=1, got ndim={base.ndim}")
        return "euclid"
    raise ValueError(
        "manifold: expected a κ-stereographic model (Stereographic, PoincareBall, SphereProjection), "
        f"Lorentz, Sphere or Euclidean(ndim=1), got {type(manifold).__name__}"
    )


def _intrinsic_dim(kind: str, n: int) -> int:
    return n - 1 if kind in ("lorentz", "sphere") else n


def _param(kind: str, manifold, like: torch.Tensor) -> torch.Tensor:
    """κ for the stereographic model, ``k`` (hyperboloid parameter) for Lorentz."""
    if kind == "stereo":
        return torch.as_tensor(_manifolds.curvature(manifold)).to(dtype=like.dtype, device=like.device)
    if kind == "lorentz":
        return torch.as_tensor(manifold.k).to(dtype=like.dtype, device=like.device)
    return torch.ones((), dtype=like.dtype, device=like.device)


def _sectional(kind: str, p: torch.Tensor) -> torch.Tensor:
    if kind == "stereo":
        return p
    if kind == "lorentz":
        return -1.0 / p
    if kind == "sphere":
        return p
    return torch.zeros_like(p)


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny).sqrt()


def exp_frame(kind: str, p: torch.Tensor, loc: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``exp_loc`` of the tangent vector with coordinates ``v`` in the transported frame.

    ``p``: κ (stereographic) or ``k`` (Lorentz); ``loc``: ``(..., n)``; ``v``:
    ``(..., d)``; all broadcast.  Returns points ``(..., n)``.
    """
    if kind == "euclid":
        return loc + v
    if kind == "stereo":
        y = kmath.expmap0(v / 2, p)
        return kmath.project(kmath.mobius_add(loc, y, p), p)
    r = _safe_norm(v)
    if kind == "lorentz":
        # cancellation-free boost of exp_o(v) (dlmppl.lmath): accurate far from the origin
        return lmath.exp_frame(loc, v, p)
    if kind == "sphere":
        mu0, mus = loc[..., :1], loc[..., 1:]
        coef = (mus * v).sum(-1, keepdim=True) / (1 + mu0)
        u = torch.cat([-coef * (1 + mu0), v - coef * mus], -1)
        z = torch.cos(r) * loc + torch.sinc(r / math.pi) * u
        return z / _safe_norm(z)
    raise AssertionError(kind)


def log_frame(kind: str, p: torch.Tensor, loc: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Coordinates ``v`` (``(..., d)``) of ``log_loc(z)`` in the transported frame (inverse of :func:`exp_frame`)."""
    if kind == "euclid":
        return z - loc
    if kind == "stereo":
        w = kmath.mobius_add(-loc, z, p)
        return 2 * kmath.logmap0(w, p)
    if kind == "lorentz":
        # y seen from loc without the cancelling Minkowski product (dlmppl.lmath)
        return lmath.log_frame(loc, z, p)
    if kind == "sphere":
        c = (loc * z).sum(-1, keepdim=True)
        w = z - c * loc
        nw = _safe_norm(w)
        r = torch.atan2(nw, c)
        u = w * (r / nw)
        mu0, mus = loc[..., :1], loc[..., 1:]
        return u[..., 1:] - u[..., :1] * mus / (1 + mu0)
    raise AssertionError(kind)


def sphere_dist(loc: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Great-circle distance on the unit sphere, ``(..., 1)``, accurate near 0 and π."""
    c = (loc * z).sum(-1, keepdim=True)
    return torch.atan2(_safe_norm(z - c * loc), c)


# ----------------------------------------------------------------------------------------------


def _wrap_count(sqrt_k_sigma_max: float, d: int) -> int:
    t = 10.0 + 2.0 * math.sqrt(d)
    return int(min(math.ceil((t * sqrt_k_sigma_max + math.pi) / (2 * math.pi)), 10_000))


class WrappedNormal(ManifoldDistribution):
    r"""Wrapped normal ``exp_loc(PT_{o→loc}(v))``, ``v ~ N(0, diag σ²)``; see the module docstring.

    Args:
        manifold: a κ-stereographic model (dlmppl's or geoopt's ``Stereographic``,
            ``PoincareBall``, ``SphereProjection`` and their ``*Exact`` variants;
            batched curvature of shape ``batch_shape + (1,)`` broadcasts with
            ``loc``), ``Lorentz``, ``Sphere``/``SphereExact`` or ``Euclidean(ndim=1)``.
        loc: points on ``manifold``, shape ``batch_shape + (n,)`` (``n = d`` for
            the stereographic model and Euclidean space, ``d + 1`` for Lorentz and
            the sphere).
        scale: positive standard deviations in Riemannian units, in the
            orthonormal frame at ``loc``: isotropic, shape ``batch_shape`` or
            ``batch_shape + (1,)``, or diagonal, shape ``batch_shape + (d,)``.  A
            ``scale`` whose last dimension is ``d > 1`` is read as diagonal; give
            per-batch isotropic scales a trailing dimension 1.

    ``log_prob`` is a density with respect to the Riemannian volume measure,
    with the exact log-determinant of the exponential map (and the sum over all
    preimages for κ > 0).  ``rsample`` is differentiable with respect to
    ``loc``, ``scale`` and the curvature.
    """

    has_rsample = True

    def __init__(self, manifold, loc, scale, validate_args=None):
        kind = _manifold_kind(manifold)
        if not isinstance(loc, torch.Tensor):
            loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
        if loc.dim() < 1:
            raise ValueError(f"loc: expected a point of shape batch_shape + (n,), got shape {tuple(loc.shape)}")
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        d = _intrinsic_dim(kind, loc.shape[-1])
        if d < 1:
            raise ValueError(f"loc: the manifold has dimension {d} for points of shape {tuple(loc.shape)}")
        if scale.dim() >= 1 and scale.shape[-1] == d and d > 1:
            isotropic = False
        elif scale.dim() >= 1 and scale.shape[-1] == 1:
            isotropic = True
        else:
            isotropic = True
            scale = scale.unsqueeze(-1)
        p = _param(kind, manifold, loc)
        p_batch = p.shape[:-1] if p.dim() >= 1 else torch.Size()
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape[:-1], p_batch)
        self.manifold = manifold
        self._kind = kind
        self._dim = d
        self._isotropic = isotropic
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self.scale = scale.expand(batch_shape + scale.shape[-1:])
        if validate_args if validate_args is not None else torch.distributions.Distribution._validate_args:
            self._check_curvature(p)  # before the support check of loc, which needs a valid curvature
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)

    def _check_curvature(self, p):
        _check_curvature(self._kind, p)

    @property
    def arg_constraints(self):
        return {"loc": _constraints.manifold(self.manifold), "scale": _tc.positive}

    @property
    def dim(self) -> int:
        """Intrinsic dimension ``d``."""
        return self._dim

    @property
    def curvature(self) -> torch.Tensor:
        """Sectional curvature (shape ``()`` or ``batch_shape + (1,)``)."""
        return _sectional(self._kind, _param(self._kind, self.manifold, self.loc))

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(WrappedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.manifold = self.manifold
        new._kind = self._kind
        new._dim = self._dim
        new._isotropic = self._isotropic
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.scale = self.scale.expand(batch_shape + self.scale.shape[-1:])
        super(WrappedNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        p = _param(self._kind, self.manifold, self.loc)
        if self._kind == "sphere" and self._isotropic:
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = self.scale * (eps - (eps * self.loc).sum(-1, keepdim=True) * self.loc)
            r = _safe_norm(u)
            z = torch.cos(r) * self.loc + torch.sinc(r / math.pi) * u
            return z / _safe_norm(z)
        eps = torch.randn(shape[:-1] + (self._dim,), dtype=self.loc.dtype, device=self.loc.device)
        return exp_frame(self._kind, p, self.loc, eps * self.scale)

    def _may_wrap(self) -> bool:
        if self._kind == "sphere":
            return True
        if self._kind != "stereo":
            return False
        base = _manifolds._base(self.manifold)
        return not isinstance(base, geoopt.PoincareBall)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        kind, d = self._kind, self._dim
        p = _param(kind, self.manifold, self.loc)
        kappa = _sectional(kind, p)
        scale = self.scale
        if kind == "sphere" and self._isotropic:
            r = sphere_dist(self.loc, value)
            q = (r / scale).pow(2)  # (..., 1)
        else:
            v = log_frame(kind, p, self.loc, value)
            r = _safe_norm(v)
            q = (v / scale).pow(2).sum(-1, keepdim=True)
        if self._isotropic:
            log_det_scale = d * scale.log()
        else:
            log_det_scale = scale.log().sum(-1, keepdim=True)
        log_n = -0.5 * q - log_det_scale - 0.5 * d * _LOG_2PI
        if kind == "euclid" or d == 1:
            lp = log_n
        else:
            lp = log_n - (d - 1) * kmath.log_sin_k_ratio(r, kappa)
        if self._may_wrap():
            lp = lp + self._log_wrap_factor(r, q, kappa)
        return lp.squeeze(-1)

    def _log_wrap_factor(self, r, q, kappa):
        """``log Σ_n N(v_n)|c_n|^{d-1} / N(v_0)`` over the preimages of ``exp_loc`` (κ > 0)."""
        d = self._dim
        kappa = kappa.expand(r.shape) if kappa.dim() else kappa
        pos = kappa > 0
        with torch.no_grad():
            if not bool(pos.any()):
                return torch.zeros_like(r)
            sig = self.scale.amax(-1, keepdim=True)
            sk = torch.where(pos, kappa, torch.zeros_like(kappa)).sqrt()
            n_max = _wrap_count(float((sk * sig).max()), d)
        k_safe = torch.where(pos, kappa, torch.ones_like(kappa))
        period = 2 * math.pi / k_safe.sqrt()
        n = torch.arange(1, n_max + 1, dtype=r.dtype, device=r.device)
        n = torch.cat([n, -n]).reshape((-1,) + (1,) * r.dim())
        qxi = q / r.pow(2)  # Σ ξ_i²/σ_i², ξ = v/r
        s = r + n * period  # signed lengths of the other preimages
        terms = -0.5 * (s.pow(2) - r.pow(2)) * qxi + (d - 1) * (s.abs().log() - r.log())
        terms = torch.where(pos, terms, torch.full_like(terms, -math.inf))
        zero = torch.zeros_like(r).unsqueeze(0)
        return torch.logsumexp(torch.cat([zero, terms], 0), 0)
