r"""Closed-form KL divergences of the directional distributions, registered with torch.

Importing this module registers (``torch.distributions.kl.register_kl``, which
``pyro``'s ``kl_divergence`` also dispatches through):

* ``KL(VonMisesFisher ‖ ManifoldUniform(sphere)) = log C_d(κ) + κ A_d(κ) + log|S^{d-1}|``
  (Davidson et al. 2018, "Hyperspherical Variational Auto-Encoders", eq. (9)-(10));
* ``KL(PowerSpherical ‖ ManifoldUniform(sphere)) = -H(p) + log|S^{d-1}|``, with the
  closed-form entropy of De Cao & Aziz (2020);
* ``KL(VonMisesFisher_p ‖ VonMisesFisher_q) = log C_d(κ_p) - log C_d(κ_q) + A_d(κ_p)(κ_p - κ_q μ_qᵀμ_p)``;
* ``KL(ManifoldUniform(sphere) ‖ VonMisesFisher) = -log|S^{d-1}| - log C_d(κ)`` and
  ``KL(ManifoldUniform(sphere) ‖ PowerSpherical) = -log|S^{d-1}| - log C_d(κ) - κ(log 2 + ψ(β) - ψ(2β))``,
  ``β = (d-1)/2``.

All results have the broadcast batch shape of the two arguments.
"""

from __future__ import annotations

import math

import torch
from torch.distributions.kl import register_kl

from .. import manifolds as _manifolds
from .power_spherical import PowerSpherical
from .uniform import ManifoldUniform
from .von_mises_fisher import VonMisesFisher, _dot

__all__ = []


def _check_sphere(q: ManifoldUniform, p, name: str):
    if not _manifolds.is_sphere(q.manifold):
        raise ValueError(f"{name}: the uniform distribution must be on a sphere, got {type(q.manifold).__name__}")
    if q.event_shape != p.event_shape:
        raise ValueError(f"{name}: event shapes differ: {tuple(p.event_shape)} and {tuple(q.event_shape)}")


def _batch(t: torch.Tensor, other_batch) -> torch.Tensor:
    return t.expand(torch.broadcast_shapes(t.shape, other_batch))


@register_kl(VonMisesFisher, ManifoldUniform)
def _kl_vmf_uniform(p, q):
    _check_sphere(q, p, "KL(VonMisesFisher || ManifoldUniform)")
    kl = p.log_normalizer() + p.concentration * p.mean_resultant_length + q.log_volume
    return _batch(kl, q.batch_shape)


@register_kl(PowerSpherical, ManifoldUniform)
def _kl_ps_uniform(p, q):
    _check_sphere(q, p, "KL(PowerSpherical || ManifoldUniform)")
    return _batch(q.log_volume - p.entropy(), q.batch_shape)


@register_kl(VonMisesFisher, VonMisesFisher)
def _kl_vmf_vmf(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError(f"KL(VonMisesFisher || VonMisesFisher): event shapes differ: {tuple(p.event_shape)} and {tuple(q.event_shape)}")
    cos = _dot(p.loc, q.loc)
    return p.log_normalizer() - q.log_normalizer() + p.mean_resultant_length * (p.concentration - q.concentration * cos)


@register_kl(ManifoldUniform, VonMisesFisher)
def _kl_uniform_vmf(p, q):
    _check_sphere(p, q, "KL(ManifoldUniform || VonMisesFisher)")
    return _batch(-p.log_volume - q.log_normalizer(), p.batch_shape)


@register_kl(ManifoldUniform, PowerSpherical)
def _kl_uniform_ps(p, q):
    _check_sphere(p, q, "KL(ManifoldUniform || PowerSpherical)")
    beta = (q.dim - 1) / 2
    e_log = math.log(2.0) + torch.special.digamma(torch.tensor(beta, dtype=torch.float64)) - torch.special.digamma(
        torch.tensor(2 * beta, dtype=torch.float64)
    )
    return _batch(-p.log_volume - q.log_normalizer() - q.concentration * e_log.item(), p.batch_shape)
