"""Shared targets for the Riemannian HMC/NUTS tests."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import scipy.stats
import torch
from pyro.ops.integrator import potential_grad

from dlmppl import manifolds
from dlmppl.distributions.base import ManifoldDistribution
from dlmppl.inference.kernels import RiemannianHMC


class TiltedSphere(ManifoldDistribution):
    """vMF density on S^{d-1} up to its constant: log p = κ μ·x (w.r.t. surface measure).

    The normalised ``VonMisesFisher`` evaluates Bessel functions on every call
    (≈ 8 ms); MCMC needs the density only up to a constant, so the tests use
    this one for speed (``test_vmf_distribution_in_model`` runs the real one).
    """

    arg_constraints = {}

    def __init__(self, loc, concentration, validate_args=False):
        self.manifold = manifolds.Sphere()
        self.loc = loc
        self.concentration = concentration
        super().__init__(batch_shape=loc.shape[:-1], event_shape=loc.shape[-1:], validate_args=validate_args)

    def log_prob(self, x):
        return self.concentration * (x * self.loc).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        x = torch.randn(torch.Size(sample_shape) + self.loc.shape, dtype=self.loc.dtype)
        return x / x.norm(dim=-1, keepdim=True)


def vmf_model(loc, kappa):
    def model():
        pyro.sample("x", TiltedSphere(loc, kappa))

    return model


def scipy_vmf(loc, kappa, n, seed=None):
    """``n`` exact vMF draws by scipy; ``seed`` defaults to ``tests.statistical.seed(1)`` (it moves
    with ``DLMPPL_TEST_SEED``); pass ``seed(i)`` for other independent streams."""
    from tests.statistical import seed as _seed

    rng = np.random.default_rng(_seed(1) if seed is None else seed)
    return torch.as_tensor(scipy.stats.vonmises_fisher(loc.double().numpy(), float(kappa)).rvs(n, random_state=rng))


def vmf_mrl(d, kappa):
    """Mean resultant length I_{d/2}(κ)/I_{d/2-1}(κ)."""
    from scipy.special import ive

    return float(ive(d / 2, kappa) / ive(d / 2 - 1, kappa))


def log_c3(kappa):
    """log of the vMF normaliser on S^2: κ / (4π sinh κ)."""
    return torch.log(kappa) - math.log(4 * math.pi) - (kappa + torch.log1p(-torch.exp(-2 * kappa)) - math.log(2.0))


def mixed_model(obs):
    """μ uniform on S^2, κ ~ Gamma(2, 0.5), obs_i ~ vMF(μ, κ)."""
    from dlmppl.distributions.uniform import ManifoldUniform

    def model():
        mu = pyro.sample("mu", ManifoldUniform(manifolds.Sphere(), event_shape=(3,), dtype=obs.dtype))
        kappa = pyro.sample("kappa", dist.Gamma(torch.tensor(2.0, dtype=obs.dtype), torch.tensor(0.5, dtype=obs.dtype)))
        pyro.factor("lik", obs.shape[0] * log_c3(kappa) + kappa * (obs @ mu).sum())

    return model


def mixed_posterior_means(obs):
    """E[κ | obs] and E[μ | obs] by quadrature (μ integrated analytically)."""
    s = obs.sum(0)
    r = s.norm()
    n = obs.shape[0]
    kap = torch.linspace(1e-4, 60.0, 200_001, dtype=torch.float64)
    # ∫_{S^2} exp(κ μ·s) dμ = 4π sinh(κR)/(κR)
    log_int = kap * r + torch.log1p(-torch.exp(-2 * kap * r)) - math.log(2.0) - torch.log(kap * r) + math.log(4 * math.pi)
    logp = dist.Gamma(2.0, 0.5).log_prob(kap) + n * log_c3(kap) + log_int
    w = torch.exp(logp - logp.max())
    w = w / w.sum()
    t = kap * r
    coth = 1 / torch.tanh(t)
    a = coth - 1 / t  # mean resultant length of vMF(κR) on S^2
    return float((w * kap).sum()), (w * a).sum() * s / r


class SymplecticEulerHMC(RiemannianHMC):
    """A deliberately broken integrator, for tests of the tests: a full momentum step then a
    full geodesic step (symplectic Euler, as geoopt's RHMC): volume preserving but not
    reversible, so the Metropolis step does not correct it and the chain's law is wrong."""

    def _leapfrog(self, z, r, aux, step_size, num_steps=1):
        z, r = dict(z), dict(r)
        grads = aux
        for _ in range(num_steps):
            for name, g in self._geometries.items():
                r[name] = r[name] - step_size * g.rgrad(z[name], grads[name])
                z[name], r[name] = g.flow(z[name], r[name], step_size)
            grads, pe = potential_grad(self.potential_fn, z)
        return z, r, grads, pe
