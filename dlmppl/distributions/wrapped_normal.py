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

import geoopt
import torch

from .. import kmath, lmath
from .. import manifolds as _manifolds
from .base import ManifoldLocScale

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


def _geometry(kind: str, manifold, loc: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Intrinsic dimension and curvature parameter (:func:`_param`) for points ``loc``."""
    return _intrinsic_dim(kind, loc.shape[-1]), _param(kind, manifold, loc)


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


def _sphere_axis(loc: torch.Tensor) -> torch.Tensor:
    r"""``n`` (``(..., d)``) with ``n nᵀ = μ_s μ_sᵀ / (1 + μ_0)``, the rank-one part of the transport ``e_0 → loc``.

    ``n = μ_s / √(1 + μ_0)`` for ``μ_0 ≥ 0`` and ``n = √(1 - μ_0) μ_s/|μ_s|`` for ``μ_0 < 0``
    (equal on the sphere, as ``|μ_s|² = (1 - μ_0)(1 + μ_0)``): no division by the vanishing
    ``1 + μ_0`` near ``-e_0``.  At ``loc = -e_0`` exactly, where the transported frame has
    no limit, ``μ_s/|μ_s|`` is replaced by ``e_1``: the frame there is ``(-e_1, e_2, …, e_d)``,
    the limit along the great circle from ``e_0`` through ``e_1``.
    """
    loc = loc / _safe_norm(loc)
    mu0, mus = loc[..., :1], loc[..., 1:]
    north = mu0 >= 0
    one = torch.ones_like(mu0)
    n_north = mus / torch.where(north, 1 + mu0, one).sqrt()
    m2 = mus.pow(2).sum(-1, keepdim=True)
    has_dir = m2 > 0
    e1 = torch.zeros_like(mus)
    e1[..., 0] = 1
    nhat = torch.where(has_dir, mus / torch.where(has_dir, m2, one).sqrt(), e1)
    n_south = nhat * torch.where(north, one, 1 - mu0).sqrt()
    return torch.where(north, n_north, n_south)


def _sphere_frame(loc: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Ambient tangent vector at ``loc`` with frame coordinates ``v``: ``[-⟨μ_s, v⟩, v - ⟨n, v⟩ n]``."""
    n = _sphere_axis(loc)
    mus = loc[..., 1:] / _safe_norm(loc)
    return torch.cat([-(mus * v).sum(-1, keepdim=True), v - (n * v).sum(-1, keepdim=True) * n], -1)


def _sphere_frame_t(loc: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Frame coordinates of a tangent vector ``u`` at ``loc`` (the transpose of :func:`_sphere_frame`)."""
    n = _sphere_axis(loc)
    mus = loc[..., 1:] / _safe_norm(loc)
    us = u[..., 1:]
    return us - u[..., :1] * mus - (n * us).sum(-1, keepdim=True) * n


def exp_frame(kind: str, p: torch.Tensor, loc: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``exp_loc`` of the tangent vector with coordinates ``v`` in the transported frame.

    ``p``: κ (stereographic) or ``k`` (Lorentz); ``loc``: ``(..., n)``; ``v``:
    ``(..., d)``; all broadcast.  Returns points ``(..., n)``.
    """
    if kind == "euclid":
        return loc + v
    if kind == "stereo":
        # cancellation-free closed form (no intermediate point near the boundary); the
        # projection moves only draws the dtype cannot tell from the boundary (module docstring)
        return kmath.project(kmath.expmap_coords(loc, v, p), p)
    r = _safe_norm(v)
    if kind == "lorentz":
        # cancellation-free boost of exp_o(v) (dlmppl.lmath): accurate far from the origin
        return lmath.exp_frame(loc, v, p)
    if kind == "sphere":
        u = _sphere_frame(loc, v)
        z = torch.cos(r) * loc + torch.sinc(r / math.pi) * u
        return z / _safe_norm(z)
    raise AssertionError(kind)


def log_frame(kind: str, p: torch.Tensor, loc: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Coordinates ``v`` (``(..., d)``) of ``log_loc(z)`` in the transported frame (inverse of :func:`exp_frame`)."""
    if kind == "euclid":
        return z - loc
    if kind == "stereo":
        return kmath.logmap_coords(loc, z, p)
    if kind == "lorentz":
        # y seen from loc without the cancelling Minkowski product (dlmppl.lmath)
        return lmath.log_frame(loc, z, p)
    if kind == "sphere":
        c = (loc * z).sum(-1, keepdim=True)
        w = z - c * loc
        nw = _safe_norm(w)
        r = torch.atan2(nw, c)
        u = w * (r / nw)
        return _sphere_frame_t(loc, u)
    raise AssertionError(kind)


def sphere_dist(loc: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Great-circle distance on the unit sphere, ``(..., 1)``, accurate near 0 and π."""
    c = (loc * z).sum(-1, keepdim=True)
    return torch.atan2(_safe_norm(z - c * loc), c)


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


def _lorentz_max_radius(dtype: torch.dtype, k: torch.Tensor) -> torch.Tensor:
    """Largest radius (Riemannian units) of Lorentz(k) points whose coordinates ``√k cosh(ρ/√k)`` stay finite.

    ``ρ/√k ≤ log(max/√k) - 4`` (a margin of e^4 below overflow): about ``84.7`` curvature
    radii in float32 and ``705.8`` in float64 for ``k = 1``.
    """
    big = math.log(torch.finfo(dtype).max) - 4.0
    R = k.sqrt()
    return R * (big - torch.log(R).clamp_min(0))


def radius_limit(manifold, like: torch.Tensor) -> torch.Tensor:
    """Largest distance from the origin (Riemannian units) whose points ``like.dtype`` represents.

    ``kmath.max_radius(dtype)/√c`` in a κ-stereographic model with κ = -c < 0 (15.25/√c in
    float32, 35.35/√c in float64), :func:`_lorentz_max_radius` on the hyperboloid, ``inf``
    elsewhere (κ ≥ 0, spheres, Euclidean space).  Detached; the shape of the curvature
    (``()`` or ``batch + (1,)``).  The representability check of :class:`WrappedNormal` and
    :class:`RiemannianNormal` compares ``d(o, loc) + reach`` with it.
    """
    kind = _manifold_kind(manifold)
    p = _param(kind, manifold, like).detach()
    if kind == "lorentz":
        return _lorentz_max_radius(like.dtype, p)
    if kind == "stereo":
        R = kmath.max_radius(like.dtype) / (-p).clamp_min(torch.finfo(p.dtype).tiny).sqrt()
        return torch.where(p < 0, R, torch.full_like(p, math.inf))  # κ ≥ 0: no boundary
    return torch.full_like(p, math.inf)


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


def _check_representable(cls: str, kind: str, p: torch.Tensor, loc: torch.Tensor, reach: torch.Tensor) -> None:
    """``ValueError`` naming ``scale``/``loc`` when draws may leave what ``loc.dtype`` represents.

    ``reach`` (``batch_shape + (1,)``, Riemannian units) bounds the distance of a draw
    from ``loc`` except for probability :data:`_UNREPRESENTABLE_MASS`; a draw can then be
    at most ``d(o, loc) + reach`` from the origin, which must stay within
    ``kmath.max_radius(dtype)/√c`` in the Poincaré ball (module docstring; only κ < 0 has a
    boundary) and within :func:`_lorentz_max_radius` on the hyperboloid, whose coordinates
    grow like ``e^ρ`` and overflow beyond it.
    """
    if kind not in ("stereo", "lorentz") or loc.numel() == 0:
        return
    p, loc, reach = p.detach(), loc.detach(), reach.detach()
    if kind == "lorentz":
        rho = lmath.dist0(loc, p, keepdim=True)
        limit = _lorentz_max_radius(loc.dtype, p)
        far = torch.broadcast_tensors(rho + reach - limit, rho)[0]
        if bool((far > 0).any()):
            i = int(far.reshape(-1).argmax())
            rho_i = float(rho.expand(far.shape).reshape(-1)[i])
            reach_i = float(reach.expand(far.shape).reshape(-1)[i])
            lim_i = float(torch.as_tensor(limit).expand(far.shape).reshape(-1)[i])
            raise ValueError(
                f"scale: {cls} with loc at hyperbolic radius {rho_i:.4g} and scale reaching {reach_i:.4g} "
                f"(except for probability {_UNREPRESENTABLE_MASS:g}) puts mass beyond radius {lim_i:.4g} from the "
                f"origin, where the Lorentz coordinates overflow {loc.dtype}; use "
                + ("float64, " if torch.finfo(loc.dtype).eps > 1e-15 else "")
                + "a smaller scale, or a loc nearer the origin"
            )
        return
    neg = p < 0
    if not bool(neg.any()):
        return
    s = torch.where(neg, -p, torch.zeros_like(p)).sqrt()
    rho = kmath.dist0(loc, p, keepdim=True)
    far = s * (rho + reach)
    limit = kmath.max_radius(loc.dtype)
    far = torch.where(neg, far, torch.zeros_like(far)).expand(torch.broadcast_shapes(far.shape, rho.shape))
    if bool((far > limit).any()):
        i = int(far.reshape(-1).argmax())
        rho_i = float(rho.expand(far.shape).reshape(-1)[i])
        reach_i = float(reach.expand(far.shape).reshape(-1)[i])
        c_i = float((s * s).expand(far.shape).reshape(-1)[i])
        raise ValueError(
            f"scale: {cls} with loc at hyperbolic radius {rho_i:.4g} and scale reaching {reach_i:.4g} "
            f"(except for probability {_UNREPRESENTABLE_MASS:g}) puts mass beyond radius "
            f"{limit / math.sqrt(c_i):.4g} from the origin (curvature -{c_i:.4g}), the largest {loc.dtype} can "
            "represent in the Poincaré ball; use "
            + ("float64, " if torch.finfo(loc.dtype).eps > 1e-15 else "")
            + "a smaller scale, or a loc nearer the origin"
        )


def _wrap_count(sqrt_k_sigma_max: float, d: int) -> int:
    t = 10.0 + 2.0 * math.sqrt(d)
    return int(min(math.ceil((t * sqrt_k_sigma_max + math.pi) / (2 * math.pi)), 10_000))


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

    _kind_of = staticmethod(_manifold_kind)
    _expand_attrs = ("_kind", "_dim", "_isotropic")

    _geometry = staticmethod(_geometry)

    def _scale_shape(self, scale, d):
        """Isotropic ``batch + (1,)`` (a ``batch`` scale gets its trailing 1) or diagonal ``batch + (d,)``."""
        if scale.dim() >= 1 and (scale.shape[-1] == 1 or (scale.shape[-1] == d and d > 1)):
            self._isotropic = scale.shape[-1] == 1
            return scale
        self._isotropic = True
        return scale.unsqueeze(-1)

    def _check_curvature(self, p):
        _check_curvature(self._kind, p)

    def _check_law(self, p):
        _check_finite_scale(self.scale)
        reach = self.scale.amax(-1, keepdim=True) * _chi_isf(self._dim, _UNREPRESENTABLE_MASS)
        _check_representable("WrappedNormal", self._kind, p, self.loc, reach)

    @property
    def curvature(self) -> torch.Tensor:
        """Sectional curvature (shape ``()`` or ``batch_shape + (1,)``)."""
        return _sectional(self._kind, _param(self._kind, self.manifold, self.loc))

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
        value = self._floating(value)
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
            if r.numel() == 0 or not bool(pos.any()):
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
