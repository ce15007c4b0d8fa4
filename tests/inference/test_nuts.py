"""RiemannianNUTS: vMF on S^9, U-turn on the sphere, Stiefel Haar moments, hyperbolic wrapped normals,
multi-chain runs and the per-draw diagnostics contract."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import MCMC

from dlmppl import manifolds
from dlmppl.constraints import violation
from dlmppl.distributions.von_mises_fisher import VonMisesFisher
from dlmppl.distributions.wrapped_normal import WrappedNormal
from dlmppl.inference.kernels import RiemannianNUTS
from tests import statistical as st
from tests.inference._targets import mixed_model, mixed_posterior_means, scipy_vmf, vmf_model, vmf_mrl


def _run(kernel, num_samples, warmup, **kw):
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, disable_progbar=True, **kw)
    mcmc.run()
    return mcmc


@pytest.mark.slow
@pytest.mark.statistical
def test_vmf_s9_nuts():
    d, kappa = 10, 8.0
    loc = torch.zeros(d, dtype=torch.float64)
    loc[3] = 1.0
    mcmc = _run(RiemannianNUTS(vmf_model(loc, torch.tensor(kappa, dtype=torch.float64))), 1000, 200)
    x = mcmc.get_samples()["x"]
    assert violation(manifolds.Sphere(), x).max() < 1e-10
    st.assert_same_law(x, scipy_vmf(loc, kappa, 1000), x_chain=True, what="NUTS vMF on S^9", alpha=st.ALPHA / 2)
    st.assert_mean(x @ loc, vmf_mrl(d, kappa), what="mean resultant length", alpha=st.ALPHA / 2)


@pytest.mark.statistical
def test_vmf_distribution_in_model():
    """The normalised VonMisesFisher (support = manifold constraint) is found and sampled."""
    loc = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)

    def model():
        pyro.sample("x", VonMisesFisher(loc, torch.tensor(6.0, dtype=torch.float64)))

    mcmc = _run(RiemannianNUTS(model), 300, 100)
    x = mcmc.get_samples()["x"]
    assert mcmc._diagnostics[0]["manifold_sites"] == {"x": "SphereExact"}
    st.assert_mean(x @ loc, vmf_mrl(3, 6.0), what="mean resultant length")


@pytest.mark.slow
@pytest.mark.statistical
def test_u_turn_on_uniform_sphere():
    """Uniform on S^2 at a fixed step ε: trajectories stop after about half a great circle.

    At speed s a half turn takes π/(s ε) steps; the tree must stop near there,
    not at ``max_tree_depth`` (2^10 steps).  On the uniform target the tree depth depends only on
    the freshly drawn momentum, so the draws' tree depths are independent.
    """
    eps = 0.2

    def pot(z):
        return (z["x"] * 0).sum()

    kernel = RiemannianNUTS(potential_fn=pot, manifolds={"x": manifolds.Sphere()}, step_size=eps, adapt_step_size=False)
    init = {"x": torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)}
    mcmc = _run(kernel, 200, 0, initial_params=init)
    stats = mcmc._diagnostics[0].sample_stats
    # only very slow momenta (speed s < π/(1023 ε), probability 1.2e-4) may need the whole tree
    st.assert_rate(int((stats["tree_depth"] >= 10).sum()), 200, at_most=0.02, what="full trees", alpha=st.ALPHA / 2)
    # median speed of a 2-d standard normal is √(2 log 2) ≈ 1.18: half a turn ≈ 13 steps at ε=0.2,
    # so the doubling stops at 16 or 32 steps; a sampler blind to the U-turn runs 1023.  The median
    # leaves [8, 64] only if 100 of 200 independent speeds fall beyond 2 (probability e^-2 each) or
    # below 0.49 (0.11 each): binomial tails < 1e-30
    med = float(stats["n_steps"].double().median())
    assert 8 <= med <= 64
    x = mcmc.get_samples()["x"]
    st.assert_mean(x, torch.zeros(3, dtype=torch.float64), what="uniform on S^2: E x", alpha=st.ALPHA / 2)


@pytest.mark.slow
@pytest.mark.statistical
def test_stiefel_uniform_haar_moments():
    """Uniform on Stiefel(5, 2): E[X] = 0 and E[X Xᵀ] = (p/n) I."""

    def pot(z):
        return (z["X"] * 0).sum()

    kernel = RiemannianNUTS(potential_fn=pot, manifolds={"X": manifolds.Stiefel()}, max_tree_depth=5)
    init = {"X": torch.eye(5, 2, dtype=torch.float64)}
    mcmc = _run(kernel, 1000, 150, initial_params=init)
    x = mcmc.get_samples()["X"]
    assert violation(manifolds.Stiefel(), x).max() < 1e-10
    st.assert_mean(x, torch.zeros(5, 2, dtype=torch.float64), what="Haar E[X]", alpha=st.ALPHA / 2, max_mcse=0.03)
    st.assert_mean(x @ x.transpose(-1, -2), 0.4 * torch.eye(5, dtype=torch.float64), what="Haar E[X Xᵀ]",
                   alpha=st.ALPHA / 2, max_mcse=0.02)


@pytest.mark.slow
@pytest.mark.statistical
@pytest.mark.parametrize(
    "M,loc",
    [
        (manifolds.Lorentz(), torch.tensor([math.cosh(0.5), math.sinh(0.5), 0.0], dtype=torch.float64)),
        (manifolds.PoincareBall(c=1.0), torch.tensor([0.2, -0.1], dtype=torch.float64)),
    ],
    ids=["lorentz", "poincare"],
)
def test_wrapped_normal_hyperbolic(M, loc):
    """Draws match the wrapped normal's own exact sampler (energy test on the chain thinned by 2τ)
    and its mean (within k MCSE; the exact mean from 10^5 exact draws, whose own error is < 10% of
    the chain's MCSE)."""
    scale = torch.tensor(0.6, dtype=torch.float64)

    def model():
        pyro.sample("z", WrappedNormal(M, loc, scale))

    mcmc = _run(RiemannianNUTS(model), 1200, 200)
    z = mcmc.get_samples()["z"]
    assert mcmc._diagnostics[0]["manifold_sites"]["z"] == type(M).__name__
    exact = WrappedNormal(M, loc, scale).sample((100_000,))
    st.assert_same_law(z, exact[:1200], x_chain=True, what=f"NUTS wrapped normal on {type(M).__name__}",
                       alpha=st.ALPHA / 2)
    st.assert_mean(z, exact.mean(0), what="mean", alpha=st.ALPHA / 2)


@pytest.mark.slow
@pytest.mark.statistical
def test_mixed_model_nuts():
    pyro.set_rng_seed(st.seed(2))
    obs = scipy_vmf(torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64), 3.0, 20, seed=st.seed(5))
    mcmc = _run(RiemannianNUTS(mixed_model(obs)), 500, 200)
    s = mcmc.get_samples()
    e_kappa, e_mu = mixed_posterior_means(obs)
    st.assert_mean(s["kappa"], e_kappa, what="E[κ | obs]", alpha=st.ALPHA / 2)
    st.assert_mean(s["mu"], e_mu, what="E[μ | obs]", alpha=st.ALPHA / 2)


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "processes"])
def test_multichain_diagnostics_contract(parallel, monkeypatch):
    """num_chains=2 (sequential, and in worker processes as on machines with more cores):
    samples grouped by chain, summary(), per-draw sample_stats of each chain reach the main process."""
    import pyro.infer.mcmc.api as api

    monkeypatch.setattr(api.mp, "cpu_count", lambda: 4 if parallel else 1)
    loc = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    n = 40
    mcmc = _run(RiemannianNUTS(vmf_model(loc, torch.tensor(3.0, dtype=torch.float64))), n, 30, num_chains=2)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert x.shape == (2, n, 3)
    assert not torch.equal(x[0], x[1])
    mcmc.summary()
    diag = mcmc.diagnostics()
    assert "sample_stats" not in diag  # Pyro's keys; the per-draw stats are an attribute
    for i, c in enumerate(("chain 0", "chain 1")):
        stats = mcmc._diagnostics[i].sample_stats  # pickled from the chain's process with it
        assert set(stats) == {"diverging", "energy", "step_size", "acceptance_rate", "n_steps", "tree_depth"}
        for v in stats.values():
            assert v.shape == (n,) and v.device.type == "cpu"
        assert stats["diverging"].dtype == torch.bool
        assert diag["manifold_sites"][c] == {"x": "Sphere"}
        assert isinstance(diag["divergences"][c], list)
        assert 0.0 <= diag["acceptance rate"][c] <= 1.0
    assert len(mcmc._diagnostics) == 2
