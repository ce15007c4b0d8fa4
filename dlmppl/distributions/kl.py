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

All results have the broadcast batch shape of the two arguments and the dtype of
the parameters; they are computed in float64 without cancellation (large κ: the
terms of size κ are differenced analytically; small κ: series that keep the
relative accuracy of a KL that vanishes like κ²), see ``_vmf_divergences`` and
``_ps_divergences``.  For two vMFs,

.. math::

    \mathrm{KL}(p \| q) = \mathrm{KL}(p \| U) - \mathrm{KL}(q \| U)
        + \kappa_q\big[(1 - \cos) + \cos\,(1 - A_d(\kappa_p)) - (1 - A_d(\kappa_q))\big],
    \qquad 1 - \cos = \tfrac12 \|\mu_p - \mu_q\|^2,

(the directions normalised in float64), which is the formula above rearranged.
"""

from __future__ import annotations

import torch
from torch.distributions.kl import register_kl

from .._shapes import broadcast_shapes
from ..geometry import geometry_of
from .power_spherical import PowerSpherical, _ps_divergences
from .uniform import ManifoldUniform
from .von_mises_fisher import VonMisesFisher, _vmf_divergences

__all__ = []


def _check_sphere(q: ManifoldUniform, p, name: str):
    if type(geometry_of(q.manifold)) is not type(geometry_of(p.manifold)):
        raise ValueError(f"{name}: the uniform distribution must be on a sphere, got {type(q.manifold).__name__}")
    if q.event_shape != p.event_shape:
        raise ValueError(f"{name}: event shapes differ: {tuple(p.event_shape)} and {tuple(q.event_shape)}")


def _batch(t: torch.Tensor, other_batch, dtype) -> torch.Tensor:
    return t.to(dtype).expand(broadcast_shapes(t.shape, other_batch))


def _register_uniform(cls, divergences, forward: bool):
    """Register ``KL(cls ‖ uniform)`` (``forward``) or ``KL(uniform ‖ cls)`` from ``divergences(d, κ)``,
    whose first two results are the two KLs."""
    pair = (cls, ManifoldUniform) if forward else (ManifoldUniform, cls)
    name = f"KL({pair[0].__name__} || {pair[1].__name__})"

    @register_kl(*pair)
    def _kl(p, q):
        law, uniform = (p, q) if forward else (q, p)
        _check_sphere(uniform, law, name)
        kl = divergences(law.dim, law.concentration)[0 if forward else 1]
        return _batch(kl, uniform.batch_shape, law.concentration.dtype)


for _cls, _divergences in ((VonMisesFisher, _vmf_divergences), (PowerSpherical, _ps_divergences)):
    for _forward in (True, False):
        _register_uniform(_cls, _divergences, _forward)


@register_kl(VonMisesFisher, VonMisesFisher)
def _kl_vmf_vmf(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError(f"KL(VonMisesFisher || VonMisesFisher): event shapes differ: {tuple(p.event_shape)} and {tuple(q.event_shape)}")
    d = p.dim
    kl_p, _, one_m_ap = _vmf_divergences(d, p.concentration)
    kl_q, _, one_m_aq = _vmf_divergences(d, q.concentration)
    wd = kl_p.dtype
    mp, mq = p.loc.to(wd), q.loc.to(wd)
    mp = mp / mp.norm(dim=-1, keepdim=True)
    mq = mq / mq.norm(dim=-1, keepdim=True)
    one_m_cos = 0.5 * (mp - mq).pow(2).sum(-1)  # 1 - μ_pᵀμ_q without cancellation
    kq = q.concentration.to(wd)
    kl = kl_p - kl_q + kq * (one_m_cos + (1 - one_m_cos) * one_m_ap - one_m_aq)
    dtype = torch.promote_types(p.concentration.dtype, q.concentration.dtype)
    return kl.to(dtype)
