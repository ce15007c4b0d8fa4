"""to_inference_data: groups, sample stats, pointwise log-likelihood, netCDF round trip."""


import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import dlmppl.diagnostics as D
from dlmppl import manifolds as m
from dlmppl.diagnostics import _compat
from tests import statistical as st

az = _compat.az


def normal_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(mu, sigma), obs=y)


@pytest.fixture
def y():
    return torch.randn(12) * 1.5 + 0.7


def _manual_loglik(idata, y):
    post = _compat.get_group(idata, "posterior")
    mu = torch.as_tensor(post["mu"].values)
    sigma = torch.as_tensor(post["sigma"].values)
    return dist.Normal(mu[..., None], sigma[..., None]).log_prob(y).numpy()


def test_from_pyro_nuts(y, tmp_path):
    mcmc = MCMC(NUTS(normal_model), num_samples=60, warmup_steps=40, num_chains=1, disable_progbar=True)
    mcmc.run(y)
    idata = D.to_inference_data(mcmc)
    groups = set(_compat.group_names(idata))
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= groups
    post = _compat.get_group(idata, "posterior")
    assert post["mu"].shape == (1, 60) and post["mu"].dims == ("chain", "draw")
    ss = _compat.get_group(idata, "sample_stats")
    assert ss["diverging"].dtype == bool and ss["diverging"].shape == (1, 60)
    ll = _compat.get_group(idata, "log_likelihood")["obs"]
    assert ll.shape == (1, 60, 12)
    np.testing.assert_allclose(ll.values, _manual_loglik(idata, y), rtol=1e-5, atol=1e-5)
    obs = _compat.get_group(idata, "observed_data")["obs"]
    np.testing.assert_allclose(obs.values, y.numpy())
    assert obs.dims == ll.dims[2:]
    loo = _compat.loo(idata, pointwise=True)  # az.loo: a Series in arviz 0.x, ELPDData in 1.x
    assert np.isfinite(loo["elpd_loo"]) and loo["pareto_k"].shape == (12,)
    # summary straight from the MCMC run: Euclidean sites, as arviz computes them
    s = D.summary(mcmc, round_to="none")
    assert list(s.index) == ["mu", "sigma"] and (s["manifold"] == "").all()
    np.testing.assert_allclose(s.loc["mu", "mean"], float(mcmc.get_samples()["mu"].mean()), rtol=1e-5)


def test_divergences_become_diverging_flags():
    stats = D.convert._chain_sample_stats({"divergences": [0, 3, 7]}, 8)
    np.testing.assert_array_equal(stats["diverging"], [1, 0, 0, 1, 0, 0, 0, 1])


class _ContractKernel:
    """A kernel that reports per-draw statistics under dlmppl's diagnostics contract."""

    def __init__(self, model):
        self.model = model


class _ContractMCMC:
    """MCMC-like object: ``get_samples``, ``kernel``, ``_diagnostics``, ``_args`` (the contract)."""

    def __init__(self, samples, diagnostics, model, args):
        self._samples = samples
        self._diagnostics = diagnostics
        self.kernel = _ContractKernel(model)
        self._args, self._kwargs = args, {}

    def get_samples(self, num_samples=None, group_by_chain=False):
        return self._samples


def sphere_model(x):
    # a manifold site whose support is declared with dlmppl.constraints.manifold
    loc = pyro.sample("loc", _SphereUniform())
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(loc, 0.5).to_event(1), obs=x)


class _SphereUniform(dist.TorchDistribution):
    """Uniform distribution on S^2 declared with the manifold support (density 1/(4π))."""

    arg_constraints = {}

    def __init__(self):
        super().__init__(torch.Size(), torch.Size([3]))

    @property
    def support(self):
        from dlmppl.constraints import manifold

        return manifold(m.Sphere())

    def sample(self, sample_shape=torch.Size()):
        z = torch.randn(sample_shape + (3,))
        return z / z.norm(dim=-1, keepdim=True)

    def log_prob(self, value):
        return torch.full(value.shape[:-1], -np.log(4 * np.pi))


def test_contract_sample_stats_and_manifold_attrs(tmp_path):
    C, N = 2, 25
    z = torch.randn(C, N, 3)
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.randn(5, 3)
    diags = []
    for c in range(C):
        g = torch.Generator().manual_seed(c)
        diags.append(
            {
                "divergences": [2],
                "acceptance rate": 0.8,
                "sample_stats": {
                    "diverging": torch.arange(N) == 2,
                    "energy": torch.rand(N, generator=g, dtype=torch.float64),
                    "step_size": torch.full((N,), 0.1 * (c + 1), dtype=torch.float64),
                    "acceptance_rate": torch.rand(N, generator=g, dtype=torch.float64),
                    "n_steps": torch.randint(1, 8, (N,), generator=g),
                    "tree_depth": torch.randint(1, 4, (N,), generator=g),
                },
                "manifold_sites": {"loc": "Sphere"},
            }
        )
    mcmc = _ContractMCMC({"loc": z}, diags, sphere_model, (x,))
    idata = D.to_inference_data(mcmc)
    ss = _compat.get_group(idata, "sample_stats")
    for key in ("diverging", "energy", "step_size", "acceptance_rate", "n_steps", "tree_depth"):
        assert ss[key].shape == (C, N), key
    np.testing.assert_allclose(ss["step_size"].values[1], 0.2)
    assert ss["diverging"].values[:, 2].all() and ss["diverging"].values.sum() == 2
    post = _compat.get_group(idata, "posterior")
    assert post["loc"].shape == (C, N, 3)
    assert post["loc"].attrs["manifold"] == "Sphere"
    # log-likelihood replay, one value per observation (the plate), event dims summed
    ll = _compat.get_group(idata, "log_likelihood")["obs"].values
    ref = dist.Normal(z[:, :, None, :], 0.5).log_prob(x).sum(-1).numpy()
    np.testing.assert_allclose(ll, ref, rtol=1e-5, atol=1e-5)
    # netCDF round trip keeps values, sample stats and the manifold attribute
    path = tmp_path / "idata.nc"
    idata.to_netcdf(str(path))
    back = _compat.from_netcdf(str(path))
    post2 = _compat.get_group(back, "posterior")
    np.testing.assert_allclose(post2["loc"].values, z.numpy())
    assert post2["loc"].attrs["manifold"] == "Sphere"
    np.testing.assert_array_equal(_compat.get_group(back, "sample_stats")["diverging"].values, ss["diverging"].values)
    np.testing.assert_allclose(_compat.get_group(back, "log_likelihood")["obs"].values, ll)
    # summary reads the manifold back from the attrs of the file
    s = D.summary(back)
    assert "loc.dist" in s.index and s.loc["loc[0]", "manifold"] == "Sphere"


def test_manifold_attrs_round_trip():
    for M in (m.Sphere(), m.PoincareBall(0.5), m.Stereographic(0.3), m.Lorentz(2.0), m.SphereProjection(1.5)):
        attrs = D.manifold_attrs(M)
        M2 = D.manifold_from_attrs(attrs)
        assert type(M2) is type(M)
        torch.testing.assert_close(m.curvature(M2).float(), m.curvature(M).float())
    # a per-point (batched) curvature has no scalar attribute: not rebuilt with a wrong default
    batched = D.manifold_attrs(m.Stereographic(torch.tensor([[0.5], [-0.5]])))
    assert "manifold_k" not in batched and D.manifold_from_attrs(batched) is None
    assert D.manifold_from_attrs({"manifold": "NoSuchManifold"}) is None


def test_dict_source_and_vectorized_loglik_matches_loop(y):
    C, N = 3, 20
    draws = {"mu": torch.randn(C, N), "sigma": torch.rand(C, N) + 0.5}
    idata = D.to_inference_data(draws, model=normal_model, model_args=(y,))
    ll = _compat.get_group(idata, "log_likelihood")["obs"].values
    np.testing.assert_allclose(ll, _manual_loglik(idata, y), rtol=1e-5, atol=1e-5)
    flat = {k: v.reshape(C * N) for k, v in draws.items()}
    loop = D.log_likelihood(normal_model, flat, (y,), vectorize=False)["obs"]
    np.testing.assert_allclose(ll.reshape(C * N, -1), loop.numpy(), rtol=1e-6)
    # the vectorised replay itself (not its loop fallback) gives the same values
    ref = D.convert._trace(normal_model, {k: v[0] for k, v in flat.items()}, (y,), {})
    vec = D.convert._loglik_vectorized(normal_model, flat, C * N, (y,), {}, ref)["obs"]
    np.testing.assert_allclose(vec.numpy(), loop.numpy(), rtol=1e-6)
    # flat draws with num_chains
    idata2 = D.to_inference_data(flat, num_chains=C)
    np.testing.assert_allclose(_compat.get_group(idata2, "posterior")["mu"].values, draws["mu"].numpy())


@pytest.mark.statistical
def test_from_svi_guide(y):
    guide = AutoNormal(normal_model)
    svi = SVI(normal_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(100):
        svi.step(y)
    idata = D.to_inference_data(guide, model=normal_model, model_args=(y,), num_samples=200)
    post = _compat.get_group(idata, "posterior")
    assert post["mu"].shape == (1, 200)
    # draws come from the fitted guide: half of the 200 independent draws lie below its median
    st.assert_cdf_at(torch.as_tensor(post["mu"].values).reshape(-1), float(guide.median(y)["mu"]), 0.5, iid=True,
                     what="guide draws at the guide's median")
    assert (post["sigma"].values > 0).all()
    ll = _compat.get_group(idata, "log_likelihood")["obs"].values
    np.testing.assert_allclose(ll, _manual_loglik(idata, y), rtol=1e-5, atol=1e-5)


def test_bad_source_raises():
    with pytest.raises(ValueError, match="source"):
        D.to_inference_data(3.0)
    with pytest.raises(ValueError, match="model"):
        D.to_inference_data(lambda: None)


@pytest.mark.slow
def test_from_riemannian_hmc_real_kernel(tmp_path):
    from dlmppl.distributions.von_mises_fisher import VonMisesFisher
    from dlmppl.inference.kernels import RiemannianHMC

    mu0 = torch.tensor([0.0, 0.6, 0.8])
    x = VonMisesFisher(mu0, torch.tensor(10.0)).sample((20,))

    def vmf_model(x):
        mu = pyro.sample("mu", VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(0.01)))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", VonMisesFisher(mu, torch.tensor(10.0)), obs=x)

    kernel = RiemannianHMC(vmf_model, step_size=0.03, num_steps=4, adapt_step_size=False, adapt_mass_matrix=False)
    mcmc = MCMC(kernel, num_samples=30, warmup_steps=10, disable_progbar=True)
    mcmc.run(x)
    idata = D.to_inference_data(mcmc)
    ss = _compat.get_group(idata, "sample_stats")
    for key in ("diverging", "energy", "step_size", "acceptance_rate", "n_steps"):
        assert ss[key].shape == (1, 30), key
    assert (ss["n_steps"].values == 4).all()
    post = _compat.get_group(idata, "posterior")
    assert post["mu"].attrs["manifold"] in ("Sphere", "SphereExact")
    mu = torch.as_tensor(post["mu"].values)
    torch.testing.assert_close(mu.norm(dim=-1), torch.ones(1, 30), atol=1e-5, rtol=0)
    ll = _compat.get_group(idata, "log_likelihood")["obs"].values
    ref = VonMisesFisher(mu[..., None, :], torch.tensor(10.0)).log_prob(x).numpy()
    np.testing.assert_allclose(ll, ref, rtol=1e-4, atol=1e-4)
    s = D.summary(idata)
    fm = s.loc[["mu[0]", "mu[1]", "mu[2]"], "mean"].values
    assert np.arccos(np.clip(fm @ mu0.numpy(), -1, 1)) < 0.3


def test_riemannian_kernel_diagnostics_read_as_pyros(y):
    """mcmc.diagnostics() prints as Pyro's (no per-draw arrays); the per-draw stats reach
    to_inference_data's sample_stats group (issue 12)."""
    from dlmppl.inference import RiemannianNUTS
    from dlmppl.inference.kernels import SampleStats

    mcmc = MCMC(RiemannianNUTS(normal_model), num_samples=30, warmup_steps=20, num_chains=1, disable_progbar=True)
    mcmc.run(y)
    diag = mcmc.diagnostics()
    assert isinstance(diag["divergences"]["chain 0"], list) and 0 <= diag["acceptance rate"]["chain 0"] <= 1
    # Pyro's keys (and short summaries of ours); no per-draw arrays
    assert "sample_stats" not in diag
    assert "tensor(" not in repr({k: v for k, v in diag.items() if k not in mcmc.get_samples()})
    stats = mcmc._diagnostics[0].sample_stats
    assert isinstance(stats, SampleStats) and stats["energy"].shape == (30,)
    assert repr(stats).startswith("SampleStats(30 draws: diverging")
    ss = _compat.get_group(D.to_inference_data(mcmc, log_likelihood=False), "sample_stats")
    assert {"diverging", "energy", "tree_depth", "acceptance_rate"} <= set(ss.data_vars)
    assert ss["energy"].shape == (1, 30)
