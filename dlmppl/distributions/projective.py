r"""Distributions on the real projective space ``RP^n`` (:class:`~dlmppl.geometry.projective.ProjectiveSpace`).

Points are unit vectors of ``R^{n+1}`` with ``x ~ -x`` (event shape ``(n+1,)``).  Densities are
with respect to the Riemannian volume of ``RP^n``, ``vol(RP^n) = vol(S^n)/2``: a density ``f``
on ``RP^n`` is the symmetric density ``f/2`` on ``S^n``, and a density ``p`` on ``S^n`` pushes
forward to ``p(x) + p(-x)`` (:mod:`dlmppl.geometry.projective`).  Draws are returned as one of
the two lifts; which one carries no information.

* ``ManifoldUniform(ProjectiveSpace(), (n+1,))`` (in :mod:`.uniform`): density ``1/vol(RP^n)``.
* :class:`AngularCentralGaussian` (Tyler 1987): the law of the line through ``z ~ N(0, Σ)``.
  On ``S^n``, ``p_S(x) = |Σ|^{-1/2} (xᵀΣ⁻¹x)^{-(n+1)/2} / vol(S^n)``, symmetric, so on ``RP^n``

  .. math:: f(x) = \frac{|\Sigma|^{-1/2}\,(x^\top\Sigma^{-1}x)^{-(n+1)/2}}{\mathrm{vol}(RP^n)}.

  ``Σ`` and ``cΣ`` (``c > 0``) give the same law: ``Σ`` is identifiable only up to scale.
  Exact sampler: ``z / ‖z‖``, ``z = L ε``, ``ε ~ N(0, I)`` (``rsample``, differentiable in ``L``).
  D. E. Tyler (1987), "Statistical analysis for the angular central Gaussian distribution on
  the sphere", Biometrika 74(3); Mardia & Jupp (2000), *Directional Statistics*, §9.4.4.
* ``WrappedNormal(ProjectiveSpace(), loc, scale)`` builds :class:`ProjectiveWrappedNormal`
  (:func:`~dlmppl.distributions.wrapped_normal.register_wrapped_normal`): the image on ``RP^n`` of
  the sphere's wrapped normal ``WN_S(loc, scale)``, density ``p_S(z) + p_S(-z)``.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import constraints as _tc
from torch.distributions.utils import lazy_property

from .. import manifolds as _manifolds
from .._shapes import broadcast_shapes
from ..geometry import geometry_of
from ..geometry.projective import ProjectiveGeometry, ProjectiveSpace
from .base import ManifoldDistribution, real_floating
from .wrapped_normal import WrappedNormal, register_wrapped_normal

__all__ = ["AngularCentralGaussian", "ProjectiveWrappedNormal"]


class AngularCentralGaussian(ManifoldDistribution):
    r"""Angular central Gaussian ``ACG(Σ)`` on ``RP^n`` (Tyler 1987); see the module docstring.

    Args:
        covariance_matrix: ``Σ``, symmetric positive definite, shape ``batch_shape + (n+1, n+1)``.
        scale_tril: or its lower Cholesky factor ``L`` (positive diagonal), same shape.
            Exactly one of the two.  ``Σ`` matters only up to a positive factor.

    ``event_shape = (n+1,)`` with ``n ≥ 1``; the support is ``manifold(ProjectiveSpace())``.
    ``log_prob(x) = -log vol(RP^n) - Σ log diag L - ((n+1)/2) log ‖L⁻¹x‖²`` (a density w.r.t.
    the volume of ``RP^n``, even in ``x``), shape ``broadcast(x batch, batch_shape)``.
    ``rsample``: normalised ``L ε``, exact, with pathwise gradients.  With validation on, a
    non-finite, non-PD covariance or a scale_tril that is not lower triangular with a positive
    diagonal raise ``ValueError`` naming it.
    """

    arg_constraints = {"covariance_matrix": _tc.positive_definite, "scale_tril": _tc.lower_cholesky}
    has_rsample = True
    _expand_attrs = ("_log_vol",)

    def __init__(self, covariance_matrix=None, scale_tril=None, validate_args=None):
        owner = type(self).__name__
        if (covariance_matrix is None) == (scale_tril is None):
            raise ValueError(f"covariance_matrix, scale_tril: {owner} needs exactly one of them")
        name, mat = ("covariance_matrix", covariance_matrix) if scale_tril is None else ("scale_tril", scale_tril)
        mat = real_floating(name, owner, mat, "a real matrix")
        if mat.dim() < 2 or mat.shape[-1] != mat.shape[-2] or mat.shape[-1] < 2:
            raise ValueError(
                f"{name}: {owner} needs shape batch_shape + (n+1, n+1) with n >= 1, got {tuple(mat.shape)}"
            )
        self.manifold = ProjectiveSpace()
        batch_shape, event_shape = mat.shape[:-2], mat.shape[-1:]
        setattr(self, name, mat)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)
        if name == "covariance_matrix":
            # (not PD with validation off: NaN densities and draws, as torch's MultivariateNormal would fail)
            L, info = torch.linalg.cholesky_ex(mat)
            self.scale_tril = torch.where((info == 0)[..., None, None], L, torch.full_like(L, math.nan))
        self._log_vol = float(geometry_of(self.manifold).log_volume(event_shape))

    @lazy_property
    def covariance_matrix(self):
        return self.scale_tril @ self.scale_tril.transpose(-1, -2)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        L = self.scale_tril
        eps = torch.randn(shape, dtype=L.dtype, device=L.device)
        z = (L @ eps.unsqueeze(-1)).squeeze(-1)
        return z / z.norm(dim=-1, keepdim=True)

    def log_prob(self, value):
        value = self._checked_value(value)
        L = self.scale_tril
        dtype = torch.promote_types(L.dtype, value.dtype)
        L, value = L.to(dtype), value.to(dtype)
        batch = broadcast_shapes(value.shape[:-1], self.batch_shape)
        D = self.event_shape[0]
        Lb = L.expand(batch + (D, D))
        y = torch.linalg.solve_triangular(Lb, value.expand(batch + (D,)).unsqueeze(-1), upper=False).squeeze(-1)
        half_log_det = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -self._log_vol - half_log_det - 0.5 * D * y.pow(2).sum(-1).log()


def _projective_geometry(manifold, cls="ProjectiveWrappedNormal"):
    g = geometry_of(manifold)
    if not isinstance(g, ProjectiveGeometry):
        raise ValueError(f"manifold: {cls} needs a ProjectiveSpace, got {type(manifold).__name__}")
    return g


@register_wrapped_normal(ProjectiveGeometry)
class ProjectiveWrappedNormal(WrappedNormal):
    r"""The wrapped normal on ``RP^n``: the image of the sphere's ``WN_S(loc, scale)`` under ``x ↦ ±x``.

    Built by ``WrappedNormal(ProjectiveSpace(), loc, scale)``.  ``loc`` ``batch + (n+1,)`` (a lift of
    the location), ``scale`` isotropic ``batch``/``batch + (1,)`` or diagonal ``batch + (n,)``, as
    for the sphere's :class:`~dlmppl.distributions.WrappedNormal`.

    * ``rsample``: a draw of ``WN_S(loc, scale)`` (one lift of the point; the sign carries no
      information), differentiable in ``loc`` and ``scale``.
    * ``log_prob(z) = logaddexp(log p_S(z), log p_S(-z))``, the push-forward density w.r.t. the
      volume of ``RP^n`` (``p_S`` the sphere law's density w.r.t. the volume of ``S^n``).  It is
      even in ``z``.  For ``n ≥ 2``, ``p_S`` has an integrable singularity at ``-loc``, so this
      density has one at ``loc`` (negligible away from it when ``scale ≪ π``).

    An isotropic law depends only on the point ``{loc, -loc}``.  A diagonal scale is read in the
    sphere's frame at the given lift (transported from ``e_0``); that frame at ``-loc`` is not
    ``±`` the one at ``loc``, so ``loc`` and ``-loc`` then give differently oriented laws (no
    continuous frame field exists on ``RP^n`` for most ``n``).
    """

    _geometry_of = staticmethod(_projective_geometry)

    def _sphere_law(self):
        return WrappedNormal(_manifolds.Sphere(), self.loc, self.scale, validate_args=False)

    def rsample(self, sample_shape=torch.Size()):
        return self._sphere_law().rsample(sample_shape)

    def log_prob(self, value):
        value = self._checked_value(value)
        law = self._sphere_law()
        return torch.logaddexp(law.log_prob(value), law.log_prob(-value))
