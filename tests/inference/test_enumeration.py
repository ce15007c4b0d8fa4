"""Discrete sites enumerated out (``@config_enumerate``), as in Pyro's NUTS (issue 12)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS, config_enumerate
from pyro.infer.autoguide import init_to_value

from dlmppl import manifolds
from dlmppl.constraints import violation
from dlmppl.distributions import ManifoldUniform, VonMisesFisher
from dlmppl.inference import RiemannianNUTS
from tests import statistical as st

_DATA = torch.cat([torch.linspace(-3.0, -1.0, 15), torch.linspace(1.5, 3.5, 15)]).double()


@config_enumerate
def gmm(data):
    """1-d mixture of two unit-variance normals, locations with separated priors (no label switching)."""
    w = pyro.sample("w", dist.Beta(torch.tensor(2.0, dtype=data.dtype), torch.tensor(2.0, dtype=data.dtype)))
    loc = pyro.sample("loc", dist.Normal(torch.tensor([-2.0, 2.0], dtype=data.dtype), 1.0).to_event(1))
    with pyro.plate("data", data.shape[0]):
        c = pyro.sample("c", dist.Bernoulli(w))
        pyro.sample("obs", dist.Normal(loc[c.long()], 1.0), obs=data)


# both samplers start in the mode whose labels the priors favour (the other one is a local mode)
_INIT = init_to_value(values={"w": torch.tensor(0.5).double(), "loc": torch.tensor([-2.0, 2.0]).double()})


def _means(kernel, seed, n=150, warmup=75):
    pyro.set_rng_seed(seed)
    mcmc = MCMC(kernel, num_samples=n, warmup_steps=warmup, disable_progbar=True)
    mcmc.run(_DATA)
    s = mcmc.get_samples()
    return torch.cat([s["w"].reshape(n, 1), s["loc"]], -1)


@pytest.mark.statistical
def test_enumerated_gmm_matches_pyro_nuts():
    """Same posterior of (w, loc) as Pyro's NUTS: difference of the means within k standard errors."""
    ours = _means(RiemannianNUTS(gmm, max_plate_nesting=1, init_strategy=_INIT), st.seed(0))
    ref = _means(NUTS(gmm, max_plate_nesting=1, init_strategy=_INIT), st.seed(1))
    se = [(a.std(0, unbiased=True) / torch.as_tensor(st.ess(a)).sqrt()) for a in (ours, ref)]
    stderr = (se[0] ** 2 + se[1] ** 2).sqrt()
    st.assert_mc_estimate(ours.mean(0) - ref.mean(0), stderr, 0.0, what="E[(w, loc) | data]: RiemannianNUTS - NUTS",
                          max_stderr=0.1)


def test_enumeration_with_a_sphere_site():
    """A sphere site and an enumerated discrete site: runs, and the draws stay on S^2."""
    mu0 = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    obs = torch.stack([mu0, -mu0, mu0, -mu0 + 0.1]).double()
    obs = obs / obs.norm(dim=-1, keepdim=True)

    @config_enumerate
    def model(obs):
        mu = pyro.sample("mu", ManifoldUniform(manifolds.Sphere(), event_shape=(3,), dtype=torch.float64))
        with pyro.plate("data", obs.shape[0]):
            flip = pyro.sample("flip", dist.Bernoulli(torch.tensor(0.5, dtype=torch.float64)))
            sign = (1.0 - 2.0 * flip).unsqueeze(-1)
            pyro.sample("obs", VonMisesFisher(sign * mu, torch.tensor(5.0, dtype=torch.float64)), obs=obs)

    pyro.set_rng_seed(st.seed(2))
    mcmc = MCMC(RiemannianNUTS(model, max_plate_nesting=1), num_samples=40, warmup_steps=30, disable_progbar=True)
    mcmc.run(obs)
    mu = mcmc.get_samples()["mu"]
    assert mu.shape == (40, 3) and set(mcmc.get_samples()) == {"mu"}
    assert violation(manifolds.Sphere(), mu).max() < 1e-10
    # the posterior is symmetric under mu -> -mu and concentrated near the z axis
    assert math.isfinite(float(mu.sum())) and float(mu[:, 2].abs().mean()) > 0.5
