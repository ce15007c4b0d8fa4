"""Inference on SO(3) (issue 13): Riemannian HMC and NUTS sample a Matrix Fisher site (two-sample
tests against the exact sampler after thinning), AutoManifoldNormal + RiemannianAdam fit a
posterior with an SO(3) site, and the diagnostics summarise rotations by a Fréchet mean and
tangent coordinates with manifold-aware R-hat."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import MCMC, SVI, Trace_ELBO
from scipy.spatial.transform import Rotation

from dlmppl import diagnostics
from dlmppl.distributions import IsotropicGaussianSO3, ManifoldUniform, MatrixFisher
from dlmppl.geometry import geometry_of
from dlmppl.geometry.so3 import SO3
from dlmppl.inference import AutoManifoldNormal, RiemannianAdam, RiemannianHMC, RiemannianNUTS
from tests import statistical as st

D = torch.float64
M = SO3()
G = geometry_of(M)


def _F():
    u = torch.as_tensor(Rotation.random(random_state=3).as_matrix(), dtype=D)
    v = torch.as_tensor(Rotation.random(random_state=4).as_matrix(), dtype=D)
    return u @ torch.diag(torch.tensor([4.0, 3.0, 2.0], dtype=D)) @ v.T


def _mf_model(F):
    def model():
        pyro.sample("R", MatrixFisher(F))

    return model


@pytest.mark.statistical
def test_riemannian_hmc_samples_a_matrix_fisher_site():
    F = _F()
    mcmc = MCMC(RiemannianHMC(_mf_model(F), step_size=0.3, trajectory_length=0.7, adapt_mass_matrix=False), num_samples=1800, warmup_steps=200,
                disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["R"]
    assert float(G.violation(x).max()) < 1e-10
    st.assert_same_law(x, MatrixFisher(F).sample((1800,)), x_chain=True, what="HMC on a Matrix Fisher site")
    # power: the exact sampler of a law four times as concentrated is refused
    with pytest.raises(AssertionError):
        st.assert_same_law(x, MatrixFisher(4 * F).sample((1800,)), x_chain=True)


@pytest.mark.statistical
def test_riemannian_nuts_samples_a_matrix_fisher_site_and_the_summary_is_manifold_aware():
    F = _F()
    mcmc = MCMC(RiemannianNUTS(_mf_model(F), max_tree_depth=4, adapt_mass_matrix=False), num_samples=400, warmup_steps=150, num_chains=2,
                disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples(group_by_chain=True)["R"]
    assert x.shape == (2, 400, 3, 3)
    st.assert_same_law(x, MatrixFisher(F).sample((800,)), x_chain=True, chains=True, what="NUTS on a Matrix Fisher site")

    idata = diagnostics.to_inference_data(mcmc)
    assert idata.posterior["R"].attrs["manifold"] == "SO3"
    s = diagnostics.summary(idata, manifolds={"R": M}, round_to="none")  # (SO3 is not re-exported by dlmppl.manifolds yet)
    assert {"R.pc0", "R.pc1", "R.pc2", "R.dist"} <= set(s.index)
    assert s.loc["R[0, 0]", "manifold"] == "SO3"
    mean = torch.tensor([[s.loc[f"R[{i}, {j}]", "mean"] for j in range(3)] for i in range(3)], dtype=D)
    assert float(G.violation(mean)) < 1e-6  # a rotation (Fréchet mean), not the ambient average
    assert float(G.dist(mean, MatrixFisher(F).mode)) < 0.2  # posterior sd of each angle ≈ 0.3-0.5 / √ESS
    assert float(s["r_hat"].max()) < 1.1


@pytest.mark.statistical
def test_auto_manifold_normal_and_riemannian_adam_fit_an_so3_posterior():
    """Posterior of a rotation under IGSO(3) observations: the guide's location reaches the data's
    Fréchet mean (the posterior mode under a Haar prior); 50 observations with σ = 0.4 give a
    posterior sd of ≈ 0.06 per angle, the bound is 0.15 (an optimisation outcome: vote of 2 of 3 seeds)."""
    truth = torch.as_tensor(Rotation.random(random_state=5).as_matrix(), dtype=D)

    def model(data):
        R = pyro.sample("R", ManifoldUniform(M, (3, 3), dtype=D))
        with pyro.plate("data", data.shape[0]):
            pyro.sample("obs", IsotropicGaussianSO3(R, torch.tensor(0.4, dtype=D)), obs=data)

    def run(i):
        pyro.clear_param_store()
        data = IsotropicGaussianSO3(truth, torch.tensor(0.4, dtype=D)).sample((50,))
        guide = AutoManifoldNormal(model, init_scale=0.1)
        svi = SVI(model, guide, RiemannianAdam({"lr": 0.08}), Trace_ELBO())
        for _ in range(150):
            svi.step(data)
        loc = guide.median(data)["R"]
        scale = pyro.get_param_store()["AutoManifoldNormal.scales.R"]
        ok = (float(G.violation(loc)) < 1e-8 and float(G.dist(loc, G.frechet_mean(data))) < 0.15
              and scale.shape == (3,) and float(scale.max()) < 0.2)
        return ok, (float(G.dist(loc, truth)), scale.tolist())

    st.majority(run, 3, 2, what="AutoManifoldNormal on SO(3)")
