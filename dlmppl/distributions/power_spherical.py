r"""The power spherical distribution (De Cao & Aziz 2020) on :math:`S^{d-1} \subset \mathbb{R}^d`.

.. math::

    p(x \mid \mu, \kappa) = C_d(\kappa)\,(1 + \mu^\top x)^{\kappa}, \qquad
    C_d(\kappa)^{-1} = 2^{\alpha+\beta}\,\pi^{\beta}\,\frac{\Gamma(\alpha)}{\Gamma(\alpha+\beta)},
    \quad \alpha = \tfrac{d-1}{2} + \kappa,\ \beta = \tfrac{d-1}{2},

a density with respect to the surface measure of the unit sphere; ``κ = 0`` is the
uniform distribution.  The cosine ``t = μᵀx`` satisfies ``(1+t)/2 ~ Beta(α, β)``,
so sampling is rejection-free: a Beta draw, a uniform tangent direction and the
Householder reflection that maps ``e_1`` to ``μ``.  The Beta draw is reparameterised
(torch's Dirichlet ``rsample``), so ``rsample`` has pathwise gradients to ``loc``
and ``concentration``.

Reference: N. De Cao and W. Aziz, "The Power Spherical distribution", ICML 2020
workshop on INNF+, arXiv:2006.04437.
"""

from __future__ import annotations

import math

import torch

from .base import SphericalLocConcentration
from .von_mises_fisher import _dot, _householder_to, _tangent_directions

__all__ = ["PowerSpherical"]


class PowerSpherical(SphericalLocConcentration):
    r"""Power spherical distribution on :math:`S^{d-1} \subset \mathbb{R}^d`, any ``d ≥ 2``.

    Args:
        loc: mean direction, unit vectors of shape ``batch_shape + (d,)``.
        concentration: ``κ ≥ 0``, shape broadcasting with ``loc.shape[:-1]``.
        validate_args: Pyro/torch argument validation (``ValueError`` naming the argument).

    ``log_prob`` is exact with respect to the surface measure; ``rsample`` is
    rejection-free and reparameterised (De Cao & Aziz 2020, Algorithm 1).
    """

    @property
    def _alpha_beta(self):
        beta = (self.dim - 1) / 2
        return beta + self.concentration, beta

    def log_normalizer(self) -> torch.Tensor:
        """``log C_d(κ)``, shape ``batch_shape``."""
        alpha, beta = self._alpha_beta
        return -((alpha + beta) * math.log(2) + beta * math.log(math.pi) + torch.lgamma(alpha) - torch.lgamma(alpha + beta))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        loc, kappa, value = self._promoted(value)  # float64 or integer points: torch's type promotion
        cos = _dot(loc, value)
        # xlogy: κ = 0 at the antipode gives 0, not 0·(-inf)
        beta = (self.dim - 1) / 2
        alpha = beta + kappa
        log_c = -((alpha + beta) * math.log(2) + beta * math.log(math.pi) + torch.lgamma(alpha) - torch.lgamma(alpha + beta))
        return log_c + torch.xlogy(kappa, 1 + cos)

    def rsample(self, sample_shape=torch.Size()):
        sample_shape = torch.Size(sample_shape)
        shape = self._extended_shape(sample_shape)[:-1]
        alpha, beta = self._alpha_beta
        v = _tangent_directions(shape, self.dim, self.loc.dtype, self.loc.device)
        if shape.numel() == 0:  # torch's Beta cannot sample an empty shape; keep the graph to the parameters
            s = (0 * alpha).expand(shape)
        else:
            # (1 - t)/2 ~ Beta(β, α): drawn directly, so that 1 - t keeps its precision for large κ
            s = torch.distributions.Beta(torch.full_like(alpha, beta), alpha).rsample(sample_shape).expand(shape)
        t = 1 - 2 * s
        r = 2 * torch.sqrt((s * (1 - s)).clamp_min(0))
        y = torch.cat([t[..., None], r[..., None] * v], -1)
        return _householder_to(self.loc.expand(y.shape), y)

    @property
    def mean(self):
        alpha, beta = self._alpha_beta
        return ((alpha - beta) / (alpha + beta))[..., None] * self.loc

    @property
    def mode(self):
        return self.loc

    def entropy(self):
        alpha, beta = self._alpha_beta
        e_log = math.log(2) + torch.digamma(alpha) - torch.digamma(alpha + beta)  # E[log(1 + μᵀx)]
        return -self.log_normalizer() - self.concentration * e_log
