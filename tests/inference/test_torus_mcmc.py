"""Inference on the flat torus T^2 (issue 13): Riemannian HMC/NUTS against the exact sampler,
AutoManifoldNormal + RiemannianAdam against a closed-form posterior, and the circular summary.

The MCMC target is the sine bivariate von Mises model (Singh, Hnizdo & Demchuk 2002) with its
mass across ±π in both angles, written as a uniform prior on ``Torus(2)`` plus a ``pyro.factor``
of its unnormalised log density (Pyro's ``SineBivariateVonMises.log_prob`` evaluates a Bessel
series on every call, 30x slower); the reference draws are Pyro's exact rejection sampler
through :class:`~dlmppl.distributions.OnTorus`.  Draws are compared on the embedding
``(cos θ, sin θ)`` by the energy test after thinning by 2τ (``tests/statistical.py``).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as pd
import pytest
import torch
from pyro.infer import MCMC, SVI, Trace_ELBO

from dlmppl import diagnostics
from dlmppl.distributions import ManifoldUniform, OnTorus, TorusVonMises
from dlmppl.geometry import geometry_of
from dlmppl.geometry.torus import Torus, wrap_angle
from dlmppl.inference import AutoManifoldNormal, RiemannianAdam, RiemannianHMC, RiemannianNUTS
from tests import statistical as st

D = torch.float64
PI = math.pi
SINE = (PI - 0.3, -PI + 0.2, 2.0, 3.0, 1.5)
G = geometry_of(Torus())


def _sine_model():
    th = pyro.sample("theta", ManifoldUniform(Torus(2), (2,), dtype=D))
    mu, nu, k1, k2, lam = SINE
    pyro.factor("sine", k1 * torch.cos(th[0] - mu) + k2 * torch.cos(th[1] - nu) + lam * torch.sin(th[0] - mu) * torch.sin(th[1] - nu))


def _exact(n):
    pyro.set_rng_seed(st.seed(7))
    return OnTorus(pd.SineBivariateVonMises(*[torch.tensor(v, dtype=D) for v in SINE])).sample((n,))


def _embed(x):
    return torch.cat([torch.cos(x), torch.sin(x)], -1)


def _check_chain(kernel, num_samples, warmup):
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["theta"]
    assert float(G.violation(x).max()) == 0.0  # canonical angles at every draw
    assert float((x.abs() > PI - 0.5).double().mean()) > 0.3  # the chain does cross the wrap
    st.assert_same_law(_embed(x), _embed(_exact(num_samples)), x_chain=True, what=type(kernel).__name__)
    return mcmc, x


@pytest.mark.statistical
def test_riemannian_hmc_samples_the_sine_model_across_the_wrap():
    """τ ≈ 3 with trajectories of length 2.5 (measured): 1200 draws keep ≈ 200 after thinning."""
    _check_chain(RiemannianHMC(_sine_model, trajectory_length=2.5), 1200, 200)


@pytest.mark.statistical
def test_riemannian_nuts_samples_the_sine_model_and_the_summary_is_circular():
    """NUTS (τ ≈ 2.3 measured: 800 draws keep ≈ 170); then to_inference_data/summary of the torus
    site: the mean is the circular one (near ±π in both angles), not the ambient average."""
    mcmc, x = _check_chain(RiemannianNUTS(_sine_model), 800, 200)
    idata = diagnostics.to_inference_data(mcmc)
    s = diagnostics.summary(idata, round_to="none")
    assert set(s.loc[["theta[0]", "theta[1]"], "manifold"]) == {"Torus"}
    mean = torch.tensor(s.loc[["theta[0]", "theta[1]"], "mean"].to_numpy(dtype=float), dtype=D)
    circ = torch.atan2(torch.sin(x).mean(0), torch.cos(x).mean(0))
    assert float(G.dist(mean, circ)) < 0.15
    assert float(x.mean(0).abs().max()) < 2.5  # the ambient average is far from ±π


def test_summary_of_chains_sitting_at_the_wrap_has_no_spurious_r_hat():
    """Two chains of exact draws concentrated at ±π: the R-hat of ambient angles would be
    huge (each draw jumps between ≈ π and ≈ -π) and the mean near 0; the manifold-aware
    summary reports R-hat ≈ 1 and a mean at ±π."""
    torch.manual_seed(st.seed(11))
    draws = TorusVonMises(torch.tensor([PI, -PI + 0.05], dtype=D), 20.0).sample((2, 500))
    assert float(draws[..., 0].max()) > 3 and float(draws[..., 0].min()) < -3  # both sides of the wrap
    s = diagnostics.summary({"theta": draws}, manifolds={"theta": Torus()}, round_to="none")
    assert abs(abs(float(s.loc["theta[0]", "mean"])) - PI) < 0.1
    assert float(G.dist(torch.tensor(s.loc[["theta[0]", "theta[1]"], "mean"].to_numpy(dtype=float)),
                        torch.tensor([PI, -PI + 0.05], dtype=D))) < 0.1
    assert float(s.loc["theta[0]", "r_hat"]) < 1.02
    naive = diagnostics.summary({"theta": draws}, round_to="none")
    assert float(naive.loc["theta[0]", "r_hat"]) > 1.02 or abs(float(naive.loc["theta[0]", "mean"])) < 1.0


def _vm_posterior(mu0, k0, obs, k):
    """Von Mises prior x von Mises likelihood: von Mises posterior with κ e^{iμ} = κ0 e^{iμ0} + κ Σ e^{iθ_j}."""
    c = k0 * torch.cos(mu0) + k * torch.cos(obs).sum(0)
    s = k0 * torch.sin(mu0) + k * torch.sin(obs).sum(0)
    return torch.atan2(s, c), torch.hypot(c, s)


def test_auto_manifold_normal_fits_a_torus_posterior_across_the_wrap():
    """Majority of 3 seeds (an optimisation result): the guide's location reaches the closed-form
    posterior mean direction (across ±π) and its scale ≈ 1/√κ_post (the wrapped normal that
    matches a concentrated von Mises)."""
    mu0 = torch.tensor([PI - 0.3, 0.0], dtype=D)
    obs = wrap_angle(torch.tensor([[PI - 0.1, 1.0], [-PI + 0.2, 1.2], [PI, 0.8], [-PI + 0.1, 1.1]], dtype=D))
    k0, k = 1.0, 8.0
    post_mu, post_k = _vm_posterior(mu0, k0, obs, k)

    def model():
        th = pyro.sample("theta", TorusVonMises(mu0, k0))
        with pyro.plate("data", obs.shape[0]):
            pyro.sample("obs", pd.VonMises(th, k).to_event(1), obs=obs)

    def fit(i):
        pyro.clear_param_store()
        guide = AutoManifoldNormal(model, init_scale=0.3)
        elbo = Trace_ELBO(num_particles=2, vectorize_particles=True)
        for lr, steps in ((0.08, 150), (0.01, 100)):  # a smaller step at the end: less SGD jitter
            svi = SVI(model, guide, RiemannianAdam({"lr": lr}), elbo)
            for _ in range(steps):
                svi.step()
        loc = guide.median()["theta"]
        scale = guide.scales.theta.detach()
        ok_loc = float(G.dist(loc, post_mu)) < 0.1  # posterior sd ≈ 0.15 and float(G.violation(loc)) == 0
        ok_scale = bool(((scale * post_k.sqrt() - 1).abs() < 0.25).all())
        return ok_loc and ok_scale, (loc.tolist(), scale.tolist(), post_mu.tolist())

    st.majority(fit, 3, 2, what="AutoManifoldNormal on the torus")
