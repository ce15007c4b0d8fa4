r"""Metric fields on a latent space: the interface, decoder pull-backs, conformal metrics.

A *metric field* assigns to each latent point ``z`` (shape ``(..., d)``) an SPD
matrix ``G(z)`` (shape ``(..., d, d)``).  :class:`MetricField` is the interface
every geodesic, length, energy and steering function of :mod:`dlmppl.geometry`
accepts; subclasses implement :meth:`MetricField.metric` and may override the
cheaper queries:

=====================  ============================================  ===========================
method                 returns                                       default
=====================  ============================================  ===========================
``metric(z)``          ``G(z)``, ``(..., d, d)``                      (abstract)
``inverse(z)``         ``G(z)⁻¹``, ``(..., d, d)``                    Cholesky inverse
``logdet(z)``          ``log det G(z)``, ``(...)``                    Cholesky
``inner(z, u, v)``     ``uᵀ G(z) v``, ``(...)``                       dense
``quadratic(z, v)``    ``vᵀ G(z) v``, ``(...)``                       ``inner(z, v, v)``
``metric_vector(z,v)`` ``G(z) v``, ``(..., d)``                       dense
``acceleration(z,v)``  ``-Γ(z)[v, v]``, the geodesic acceleration      autograd of ``quadratic``
=====================  ============================================  ===========================

Every method takes an optional keyword ``condition`` (e.g. the class label or
the context of a conditional model); fields that do not depend on a condition
ignore it.  ``field.manifold`` is the manifold the latent codes live on
(``None``: Euclidean coordinates ``R^d``); when it is set, ``z`` is in its
ambient coordinates and only tangent vectors are meaningful arguments ``v``.

Implemented here: :class:`PullbackMetric` (Arvanitidis, Hansen & Hauberg,
"Latent space oddity: on the curvature of deep generative models", ICLR 2018),
:class:`ConformalMetric` (the κ-stereographic metric ``λ_κ(z)² I``),
:class:`EuclideanMetric` (``I``, for tests and as a neutral element).
"""

from __future__ import annotations

import torch
from torch.func import grad as _fgrad
from torch.func import jvp as _fjvp

from .. import kmath
from .._shapes import broadcast_shapes

__all__ = ["MetricField", "PullbackMetric", "ConformalMetric", "EuclideanMetric"]


class MetricField(torch.nn.Module):
    r"""Base class of Riemannian metric fields ``z ↦ G(z)`` (SPD, ``(..., d, d)``).

    Subclasses implement :meth:`metric`; they override :meth:`quadratic` /
    :meth:`inner` (and :meth:`inverse`, :meth:`logdet`) when a cheaper formula
    exists, e.g. ``‖J v‖²`` by a Jacobian–vector product for a pull-back.
    The class is an ``nn.Module`` so that learned fields (``PyroModule`` or
    ``nn.Module`` subclasses) register their parameters.

    Attributes
    ----------
    manifold : the latent manifold (``None``: ``R^d``); subclasses set it by assigning
        ``self.latent_manifold`` (registered as a submodule when it is one).
    """

    @property
    def manifold(self):
        try:
            return self.latent_manifold
        except AttributeError:
            return None

    # -- to implement ----------------------------------------------------------------
    def metric(self, z: torch.Tensor, condition=None) -> torch.Tensor:
        """``G(z)``, shape ``z.shape[:-1] + (d, d)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement metric(z, condition=None)")

    # -- defaults by dense linear algebra -------------------------------------------
    def inverse(self, z, condition=None):
        """``G(z)⁻¹``, ``(..., d, d)`` (default: Cholesky inverse of :meth:`metric`)."""
        return torch.cholesky_inverse(torch.linalg.cholesky(self.metric(z, condition=condition)))

    def logdet(self, z, condition=None):
        """``log det G(z)``, ``(...)`` (default: Cholesky of :meth:`metric`)."""
        L = torch.linalg.cholesky(self.metric(z, condition=condition))
        return 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def inner(self, z, u, v, condition=None):
        """``uᵀ G(z) v``, shape ``broadcast(...)``."""
        G = self.metric(z, condition=condition)
        return (u.unsqueeze(-2) @ G @ v.unsqueeze(-1)).squeeze(-1).squeeze(-1)

    def quadratic(self, z, v, condition=None):
        """``vᵀ G(z) v``, shape ``broadcast(...)``; the squared speed of a curve with velocity ``v``."""
        return self.inner(z, v, v, condition=condition)

    def metric_vector(self, z, v, condition=None):
        """``G(z) v``, ``(..., d)``."""
        return (self.metric(z, condition=condition) @ v.unsqueeze(-1)).squeeze(-1)

    def solve(self, z, rhs, condition=None):
        """``G(z)⁻¹ rhs`` for ``rhs`` of shape ``(..., d)`` (Cholesky solve)."""
        L = torch.linalg.cholesky(self.metric(z, condition=condition))
        return torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)

    def acceleration(self, z, v, condition=None):
        r"""Geodesic acceleration ``z̈ = -Γ(z)[v, v]``, ``(..., d)``.

        From the Euler–Lagrange equation of ``½ vᵀG(z)v``:
        ``G z̈ = ½ ∇_z(vᵀGv) - (∂_v G) v``, where ``(∂_v G) v = ½ D_z(∇_v q)[v]``;
        both terms come from autograd of :meth:`quadratic` (a gradient and a
        forward-over-reverse JVP), so the Christoffel symbols are never formed.
        Requires the field to be differentiable twice and batch-independent.
        """
        z, v = torch.broadcast_tensors(z, v)

        def q(zz, vv):
            return self.quadratic(zz, vv, condition=condition).sum()

        gz = _fgrad(q, argnums=0)(z, v)
        _, dgv = _fjvp(lambda zz: _fgrad(q, argnums=1)(zz, v), (z,), (v,))
        rhs = 0.5 * gz - 0.5 * dgv
        return self.solve(z, rhs, condition=condition)


class EuclideanMetric(MetricField):
    """The identity metric ``G = I`` on ``R^d`` (straight-line geodesics)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def metric(self, z, condition=None):
        eye = torch.eye(self.dim, dtype=z.dtype, device=z.device)
        return eye.expand(z.shape[:-1] + (self.dim, self.dim))

    def quadratic(self, z, v, condition=None):
        return torch.broadcast_tensors(z, v)[1].pow(2).sum(-1)

    def acceleration(self, z, v, condition=None):
        return torch.zeros(broadcast_shapes(z.shape, v.shape), dtype=z.dtype, device=z.device)


class ConformalMetric(MetricField):
    r"""Metric of the κ-stereographic model, ``G(z) = λ_κ(z)² I``, ``λ_κ = 2/(1 + κ‖z‖²)``.

    κ < 0: Poincaré ball of curvature κ; κ = 0: ``4 I`` (flat); κ > 0:
    stereographic sphere.  ``k`` is a number, a tensor broadcasting as
    ``batch_shape + (1,)`` (one curvature per code, e.g. per condition of a
    dynamic-curvature VAE), or a κ-stereographic manifold whose curvature is used.
    Closed-form inverse, log-determinant and geodesic acceleration
    (``-2(∇φ·v)v + ‖v‖²∇φ`` with ``φ = log λ``). Reference: Ganea, Bécigneul &
    Hofmann, "Hyperbolic neural networks", NeurIPS 2018; Bachmann et al. 2020.
    """

    def __init__(self, k):
        super().__init__()
        if isinstance(k, torch.nn.Module) and hasattr(k, "k"):
            k = k.k
        self._k = k

    def _kk(self, z):
        return torch.as_tensor(self._k, dtype=z.dtype, device=z.device)

    def _lam(self, z):
        return kmath.lambda_x(z, self._kk(z))  # (..., 1)

    def metric(self, z, condition=None):
        d = z.shape[-1]
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        return self._lam(z).pow(2).unsqueeze(-1) * eye

    def inverse(self, z, condition=None):
        d = z.shape[-1]
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        return self._lam(z).pow(-2).unsqueeze(-1) * eye

    def logdet(self, z, condition=None):
        return 2 * z.shape[-1] * self._lam(z).abs().log().squeeze(-1)

    def inner(self, z, u, v, condition=None):
        return self._lam(z).pow(2).squeeze(-1) * (u * v).sum(-1)

    def metric_vector(self, z, v, condition=None):
        return self._lam(z).pow(2) * v

    def solve(self, z, rhs, condition=None):
        return rhs / self._lam(z).pow(2)

    def acceleration(self, z, v, condition=None):
        k = self._kk(z)
        grad_phi = -k * self._lam(z) * z  # ∇ log λ
        return -2 * (grad_phi * v).sum(-1, keepdim=True) * v + v.pow(2).sum(-1, keepdim=True) * grad_phi


def _flat_out(out, batch_ndim):
    return out.reshape(out.shape[:batch_ndim] + (-1,))


class PullbackMetric(MetricField):
    r"""Pull-back metric of a decoder: ``G(z) = J_μ(z)ᵀ J_μ(z) + J_σ(z)ᵀ J_σ(z)``.

    For a deterministic decoder ``f`` (``variance_decoder=None``) this is
    ``JᵀJ``, the metric that makes the latent length of a curve equal the length
    of its image.  For a stochastic decoder ``x ~ N(μ(z), diag σ²(z))`` with a
    learned variance it is the expected metric ``E[JᵀJ] = J_μᵀJ_μ + J_σᵀJ_σ``
    (Arvanitidis, Hansen & Hauberg, "Latent space oddity", ICLR 2018, Thm. 1),
    which grows where the decoder is uncertain, so geodesics avoid regions
    without data.

    Parameters
    ----------
    decoder : callable ``z (..., d) -> μ (..., *data_shape)`` (or ``decoder(z, condition)``
        when a condition is given); must be batch-independent (no batch-norm in train mode).
    latent_manifold : the manifold the codes live on (``z`` in its ambient coordinates), or None.
    variance_decoder : callable ``z -> σ (..., *data_shape)``, the decoder's *standard deviation*.

    ``quadratic(z, v) = ‖J_μ v‖² + ‖J_σ v‖²`` uses one forward-mode JVP per
    decoder: cost of about two decoder evaluations, memory independent of the
    data dimension, the Jacobian never formed.  ``metric(z)`` forms ``J`` by
    ``d`` JVPs batched into one decoder call on a ``(..., d, d)`` input.
    """

    def __init__(self, decoder, latent_manifold=None, variance_decoder=None):
        super().__init__()
        self.decoder = decoder
        self.variance_decoder = variance_decoder
        self.latent_manifold = latent_manifold

    def _call(self, fn, z, condition):
        return fn(z) if condition is None else fn(z, condition)

    def _jvps(self, z, v, condition):
        z, v = torch.broadcast_tensors(z, v)
        nb = z.dim() - 1
        outs = []
        for fn in (self.decoder, self.variance_decoder):
            if fn is None:
                continue
            _, t = _fjvp(lambda zz, fn=fn: self._call(fn, zz, condition), (z,), (v,))
            outs.append(_flat_out(t, nb))
        return outs

    def quadratic(self, z, v, condition=None):
        return sum(t.pow(2).sum(-1) for t in self._jvps(z, v, condition))

    def inner(self, z, u, v, condition=None):
        tu = self._jvps(z, u, condition)
        tv = self._jvps(z, v, condition)
        return sum((a * b).sum(-1) for a, b in zip(tu, tv, strict=True))

    def jacobian(self, z, condition=None):
        """Jacobians ``[J_μ]`` or ``[J_μ, J_σ]``, each ``(..., D, d)``, by ``d`` JVPs under ``vmap``."""
        d = z.shape[-1]
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        basis = eye.reshape((d,) + (1,) * (z.dim() - 1) + (d,)).expand((d,) + z.shape)
        js = torch.func.vmap(lambda e: tuple(self._jvps(z, e, condition)))(basis)  # each (d, ..., D)
        return [j.movedim(0, -1) for j in js]

    def metric(self, z, condition=None):
        return sum(j.transpose(-1, -2) @ j for j in self.jacobian(z, condition=condition))

    def metric_vector(self, z, v, condition=None):
        # G v = Σ Jᵀ (J v): one JVP and one VJP per decoder
        z, v = torch.broadcast_tensors(z, v)
        out = torch.zeros_like(v)
        nb = z.dim() - 1
        for fn in (self.decoder, self.variance_decoder):
            if fn is None:
                continue
            f = lambda zz, fn=fn: _flat_out(self._call(fn, zz, condition), nb)
            _, jv = _fjvp(f, (z,), (v,))
            _, vjp = torch.func.vjp(f, z)
            out = out + vjp(jv)[0]
        return out
