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
  (no smooth global frame exists on ``S^d``), where every great circle from ``e_0``
  is minimising and the transported frames have no limit: there the frame is
  defined as ``(-e_1, e_2, …, e_d)``, the limit along the great circle through
  ``e_1`` (the image of the frame at ``e_0`` under the rotation by π in the
  ``(e_0, e_1)`` plane).  It is evaluated without dividing by ``1 + loc_0``, so it
  stays orthonormal (and draws and densities finite and exact) arbitrarily close to
  ``-e_0``; a diagonal-scale law still jumps there as ``loc`` crosses ``-e_0``.
  An *isotropic* scale does not need a frame: ``rsample`` then projects ``σ ε``,
  ``ε ~ N(0, I_{d+1})``, onto ``T_loc`` (an isotropic normal of ``T_loc``) and
  ``log_prob`` uses only ``d(loc, z)``, so isotropic wrapped normals are smooth for
  every ``loc``.
* Euclidean space (``Euclidean(ndim=1)``): the normal distribution itself.

Numerics near the boundary of the Poincaré ball (κ < 0).  ``exp_loc`` and
``log_loc`` are :func:`dlmppl.kmath.expmap_coords` / :func:`dlmppl.kmath.logmap_coords`:
closed forms without cancellation (no intermediate point ``tan_κ(r/2) v/r``, no
``1 - 2κ⟨x,y⟩ + …`` denominators), accurate to what the float inputs allow also for
``loc`` within ``1e-9`` (float64) of the boundary; nothing is clamped.  A point at
hyperbolic radius ``ρ`` from the origin has ``1 - √c‖x‖ ≈ 2 e^{-√c ρ}``, so a dtype can
only represent points out to ``ρ_max = kmath.max_radius(dtype)/√c`` (about 15.2/√c in
float32, 35.3/√c in float64; closer to the boundary the computed ``1 + κ‖x‖²`` may round to
0).  With validation on, a law that puts more than ``1e-6`` of its mass beyond
``ρ_max`` raises ``ValueError`` naming ``scale`` and ``loc`` (the bound used is
``d(o, loc) + σ_max · q``, ``q`` the ``1 - 1e-6`` quantile of ``χ_d``).  The rule for the
rest (and for any draw when validation is off): a draw beyond ``ρ_max`` is moved
radially onto the sphere of radius ``ρ_max`` (:func:`dlmppl.kmath.project`).

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

import functools
import math

import torch

from .. import kmath
from .._shapes import broadcast_shapes
from ..geometry import geometry_of
from .base import ManifoldLocScale

__all__ = ["WrappedNormal", "register_wrapped_normal"]

_LOG_2PI = math.log(2 * math.pi)


def _geometry(manifold, cls="WrappedNormal"):
    """The family of ``manifold`` if it has frame coordinates (constant curvature), else ``ValueError``."""
    g = geometry_of(manifold)
    if not hasattr(g, "exp_frame"):
        raise ValueError(
            f"manifold: {cls} needs a constant-curvature manifold with frame coordinates: a κ-stereographic "
            "model (Stereographic, PoincareBall, SphereProjection), Lorentz, Sphere or Euclidean(ndim=1), "
            f"got {type(manifold).__name__}"
        )
    if g.ndim != 1:
        raise ValueError(f"manifold: {type(manifold).__name__} must have ndim=1, got ndim={g.ndim}")
    return g


def _check_curvature(g, like) -> None:
    """``ValueError`` naming ``curvature`` for a NaN/inf curvature or a Lorentz ``k ≤ 0``."""
    K = g.sectional_curvature(like)
    if not torch.isfinite(K).all():
        raise ValueError(f"curvature: the manifold's curvature must be finite, got {K}")
    if hasattr(g, "check_curvature"):
        g.check_curvature(like)


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny).sqrt()


def radius_limit(manifold, like: torch.Tensor) -> torch.Tensor:
    """Largest distance from the origin (Riemannian units) whose points ``like.dtype`` represents.

    ``kmath.max_radius(dtype)/√c`` in a κ-stereographic model with κ = -c < 0 (15.25/√c in
    float32, 35.35/√c in float64), ``√k (log(max) - 4 - log √k)`` on the hyperboloid, ``inf``
    elsewhere (κ ≥ 0, spheres, Euclidean space): the family's ``radius_limit``.  Detached;
    the shape of the curvature (``()`` or ``batch + (1,)``).  The representability check of
    :class:`WrappedNormal` and :class:`RiemannianNormal` compares ``d(o, loc) + reach`` with it.
    """
    g = _geometry(manifold)
    if hasattr(g, "radius_limit"):
        return g.radius_limit(like)
    return torch.full_like(g.sectional_curvature(like).detach(), math.inf)


# ----------------------------------------------------------------------------------------------


_UNREPRESENTABLE_MASS = 1e-6
"""Largest probability a law may put beyond the radius its dtype represents (validation)."""


@functools.cache
def _chi_isf(d: int, p: float) -> float:
    from scipy.stats import chi

    return float(chi.isf(p, d))


def _check_finite_scale(scale: torch.Tensor) -> None:
    bad = ~torch.isfinite(scale)
    if bool(bad.any()):
        raise ValueError(f"scale: must be finite (0 < scale < inf), got {int(bad.sum())} NaN/inf value(s)")


def keep_representable(manifold, tangent: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink an encoder's location ``tangent`` and ``scale`` so that a wrapped normal stays representable.

    For a location ``exp_o(tangent)`` (``tangent`` ``batch + (d,)`` in Riemannian units, so
    ``d(o, loc) = ‖tangent‖``) and ``scale`` ``batch + (d,)``: ``‖tangent‖`` is capped at
    ``0.9 R`` and ``scale`` at ``(0.98 R - ‖tangent‖) / q`` (``R`` = :func:`radius_limit`,
    ``q`` the reach quantile of :class:`WrappedNormal`'s check), so the check passes by
    construction.  Where ``R = inf`` (no boundary) both are returned unchanged.  A cap is a
    clamp (zero gradient beyond it, like the saturation of a bounded activation): it stops an
    untrained or diverging encoder from asking for a law that the dtype cannot represent,
    instead of the ``ValueError`` the distribution raises then.
    """
    limit = radius_limit(manifold, tangent)
    if not bool(torch.isfinite(limit).any()):
        return tangent, scale
    q = _chi_isf(tangent.shape[-1], _UNREPRESENTABLE_MASS)
    if limit.dim() and limit.shape[-1] != 1:  # a curvature of shape batch (not batch + (1,))
        limit = limit.unsqueeze(-1)
    r = tangent.norm(dim=-1, keepdim=True)
    r_max = 0.9 * limit
    over = r > r_max  # never where limit = inf; the unselected branch keeps finite gradients
    r_cap = torch.where(over, r_max, r)
    tangent = tangent * torch.where(over, r_cap / r.clamp_min(torch.finfo(r.dtype).tiny), torch.ones_like(r))
    s_max = (0.98 * limit - r_cap) / q
    return tangent, torch.minimum(scale, s_max)


def _check_representable(cls: str, g, loc: torch.Tensor, reach: torch.Tensor) -> None:
    """``ValueError`` naming ``scale`` when draws may leave what ``loc.dtype`` represents.

    ``reach`` (``batch_shape + (1,)``, Riemannian units) bounds the distance of a draw
    from ``loc`` except for probability :data:`_UNREPRESENTABLE_MASS`; a draw can then be
    at most ``d(o, loc) + reach`` from the origin, which must stay within the family's
    ``radius_limit`` (only hyperbolic families have one: the Poincaré ball's boundary, the
    hyperboloid's coordinates that grow like ``e^ρ``).
    """
    if not hasattr(g, "radius_limit") or loc.numel() == 0:
        return
    loc, reach = loc.detach(), reach.detach()
    limit = g.radius_limit(loc)
    if not bool(torch.isfinite(limit).any()):
        return
    rho = g.dist(g.origin(loc.shape[-1:], loc.dtype, loc.device), loc).unsqueeze(-1)
    far = torch.broadcast_tensors(rho + reach - limit, rho)[0]
    far = torch.where(torch.isfinite(far), far, torch.full_like(far, -math.inf))
    if bool((far > 0).any()):
        i = int(far.reshape(-1).argmax())
        rho_i = float(rho.expand(far.shape).reshape(-1)[i])
        reach_i = float(reach.expand(far.shape).reshape(-1)[i])
        lim_i = float(limit.expand(far.shape).reshape(-1)[i])
        K_i = float(g.sectional_curvature(loc).detach().expand(far.shape).reshape(-1)[i])
        raise ValueError(
            f"scale: {cls} with loc at hyperbolic radius {rho_i:.4g} and scale reaching {reach_i:.4g} "
            f"(except for probability {_UNREPRESENTABLE_MASS:g}) puts mass beyond radius {lim_i:.4g} from the "
            f"origin (curvature {K_i:.4g}) of {g.name}, the largest {loc.dtype} can represent there; use "
            + ("float64, " if torch.finfo(loc.dtype).eps > 1e-15 else "")
            + "a smaller scale, or a loc nearer the origin"
        )


def _wrap_count(sigma_over_period: float, d: int) -> int:
    """Preimages on each side within ``t = 10 + 2√d`` standard deviations (at most 10⁴)."""
    t = 10.0 + 2.0 * math.sqrt(d)
    return int(min(math.ceil(t * sigma_over_period + 0.5), 10_000))


_FAMILY_LAWS: dict = {}
"""Geometry class -> the :class:`WrappedNormal` subclass that implements the law on that family."""


def register_wrapped_normal(geometry_cls):
    """Class decorator: the subclass of :class:`WrappedNormal` that ``WrappedNormal(M, …)`` builds for a
    manifold ``M`` whose :func:`~dlmppl.geometry.geometry_of` is a ``geometry_cls`` (or a subclass).

    For families whose wrapped normal is not the constant-curvature construction of this module
    (SO(3): a Lie-group exponential of matrices; the torus: a wrap in every coordinate; RP^n: an
    antipodal symmetrisation).  ``isinstance(WrappedNormal(M, …), WrappedNormal)`` stays true.
    """

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, WrappedNormal)):
            raise TypeError(f"register_wrapped_normal: {cls!r} is not a subclass of WrappedNormal")
        _FAMILY_LAWS[geometry_cls] = cls
        return cls

    return deco


def _family_law(manifold):
    """The registered subclass for ``manifold``'s family, or ``None``."""
    try:
        g = geometry_of(manifold)
    except ValueError:
        return None  # __init__ raises the error that names the manifold
    for k in type(g).__mro__:
        if k in _FAMILY_LAWS:
            return _FAMILY_LAWS[k]
    return None


class WrappedNormal(ManifoldLocScale):
    r"""Wrapped normal ``exp_loc(PT_{o→loc}(v))``, ``v ~ N(0, diag σ²)``; see the module docstring.

    Args:
        manifold: a κ-stereographic model (dlmppl's or geoopt's ``Stereographic``,
            ``PoincareBall``, ``SphereProjection`` and their ``*Exact`` variants;
            batched curvature of shape ``batch_shape + (1,)`` broadcasts with
            ``loc``), ``Lorentz``, ``Sphere``/``SphereExact`` or ``Euclidean(ndim=1)``.
        loc: points on ``manifold``, shape ``batch_shape + (n,)`` (``n = d`` for
            the stereographic model and Euclidean space, ``d + 1`` for Lorentz and
            the sphere).
        scale: positive, finite standard deviations in Riemannian units, in the
            orthonormal frame at ``loc``: isotropic, shape ``batch_shape`` or
            ``batch_shape + (1,)``, or diagonal, shape ``batch_shape + (d,)``.  A
            ``scale`` whose last dimension is ``d > 1`` is read as diagonal; give
            per-batch isotropic scales a trailing dimension 1.

    ``log_prob`` is a density with respect to the Riemannian volume measure,
    with the exact log-determinant of the exponential map (and the sum over all
    preimages for κ > 0).  ``rsample`` is differentiable with respect to
    ``loc``, ``scale`` and the curvature.  Empty batches (e.g. ``loc`` of shape
    ``(0, n)``) give empty draws and densities.  With validation on, a NaN or
    infinite curvature or ``scale``, and (Poincaré ball) a law with mass beyond the
    radius the dtype represents, raise ``ValueError`` (module docstring).
    """

    _geometry_of = staticmethod(_geometry)
    _expand_attrs = ("_geometry", "_dim", "_isotropic")

    def __new__(cls, *args, **kwargs):
        # families with their own construction (register_wrapped_normal) get their subclass
        if cls is WrappedNormal:
            manifold = kwargs["manifold"] if "manifold" in kwargs else (args[0] if args else None)
            sub = _family_law(manifold) if manifold is not None else None
            if sub is not None:
                return super().__new__(sub)
        return super().__new__(cls)

    def _scale_shape(self, scale, d):
        """Isotropic ``batch + (1,)`` (a ``batch`` scale gets its trailing 1) or diagonal ``batch + (d,)``."""
        if scale.dim() >= 1 and (scale.shape[-1] == 1 or (scale.shape[-1] == d and d > 1)):
            self._isotropic = scale.shape[-1] == 1
            return scale
        self._isotropic = True
        return scale.unsqueeze(-1)

    def _check_curvature(self, like):
        _check_curvature(self._geometry, like)

    def _check_law(self):
        _check_finite_scale(self.scale)
        reach = self.scale.amax(-1, keepdim=True) * _chi_isf(self._dim, _UNREPRESENTABLE_MASS)
        _check_representable("WrappedNormal", self._geometry, self.loc, reach)

    @property
    def curvature(self) -> torch.Tensor:
        """Sectional curvature (shape ``()`` or ``batch_shape + (1,)``)."""
        return self._geometry.sectional_curvature(self.loc)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        g = self._geometry
        if g.embedded and self._isotropic:
            # embedded metric: the projection of an ambient standard normal is standard normal on T_loc
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            return g.projx(g.exp(self.loc, self.scale * g.proju(self.loc, eps)))
        eps = torch.randn(shape[:-1] + (self._dim,), dtype=self.loc.dtype, device=self.loc.device)
        return g.exp_frame(self.loc, eps * self.scale)

    def log_prob(self, value):
        value = self._checked_value(value)
        g, d = self._geometry, self._dim
        kappa = g.sectional_curvature(self.loc)
        scale = self.scale
        if g.embedded and self._isotropic:
            # at least √tiny, as the frame path's norm: the wrap factor divides by r²
            r = g.dist(self.loc, value).unsqueeze(-1).clamp_min(torch.finfo(value.dtype).tiny ** 0.5)
            q = (r / scale).pow(2)  # (..., 1)
        else:
            v = g.log_frame(self.loc, value)
            r = _safe_norm(v)
            q = (v / scale).pow(2).sum(-1, keepdim=True)
        if self._isotropic:
            log_det_scale = d * scale.log()
        else:
            log_det_scale = scale.log().sum(-1, keepdim=True)
        log_n = -0.5 * q - log_det_scale - 0.5 * d * _LOG_2PI
        if g.flat or d == 1:
            lp = log_n
        else:
            lp = log_n - (d - 1) * kmath.log_sin_k_ratio(r, kappa)
        period = g.wrap_period(self.loc)
        if period is not None:
            lp = lp + self._log_wrap_factor(r, q, period)
        return lp.squeeze(-1)

    def _log_wrap_factor(self, r, q, period):
        """``log Σ_n N(v_n)|c_n|^{d-1} / N(v_0)`` over the preimages ``r + n·period`` of ``exp_loc``
        along the geodesic (the family's :meth:`~dlmppl.geometry.Geometry.wrap_period`; ``inf``
        where geodesics do not close)."""
        d = self._dim
        period = period.expand(r.shape) if period.dim() else period
        pos = torch.isfinite(period)
        with torch.no_grad():
            if r.numel() == 0 or not bool(pos.any()):
                return torch.zeros_like(r)
            sig = self.scale.amax(-1, keepdim=True)
            ratio = torch.where(pos, sig / torch.where(pos, period, torch.ones_like(period)), torch.zeros_like(sig))
            n_max = _wrap_count(float(ratio.max()), d)
        period = torch.where(pos, period, torch.ones_like(period))
        n = torch.arange(1, n_max + 1, dtype=r.dtype, device=r.device)
        n = torch.cat([n, -n]).reshape((-1,) + (1,) * r.dim())
        # Σ ξ_i²/σ_i², ξ = v/r; at v = 0 exactly (z = loc) the direction is undefined: the mean of
        # 1/σ_i² (exact for an isotropic scale and in one dimension; for d ≥ 2 the density has an
        # integrable singularity there anyway)
        inv_var = self.scale.pow(-2).mean(-1, keepdim=True)
        qxi = torch.where(q > 0, q / r.pow(2), inv_var.expand(broadcast_shapes(q.shape, inv_var.shape)))
        s = r + n * period  # signed lengths of the other preimages
        # where geodesics do not close (masked below) s = r + n may be 0 exactly (r = 2.0 was met in
        # training): keep log's backward away from 0/0 there
        s_abs = torch.where(pos, s.abs(), torch.ones_like(s))
        terms = -0.5 * (s.pow(2) - r.pow(2)) * qxi + (d - 1) * (s_abs.log() - r.log())
        terms = torch.where(pos, terms, torch.full_like(terms, -math.inf))
        zero = torch.zeros_like(r).unsqueeze(0)
        return torch.logsumexp(torch.cat([zero, terms], 0), 0)
