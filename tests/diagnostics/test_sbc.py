"""Simulation-based calibration (dlmppl.diagnostics.sbc).

The statistical tests decide through ``tests/statistical.py`` (false alarm 1e-4 by
construction: the ECDF uniformity test's p-value is exact, and an SBC result's
p-value is the Bonferroni combination over its test quantities).  Each one that
expects a pass has a "test of the test" beside it that must fail: a posterior
that is too narrow, a point-mass guide, a deliberately broken integrator.

The sampler tests run Riemannian HMC with short fixed trajectories on tiny
models; the ranks are taken among ``L = 10`` draws spread over 40 (sphere) / 20
(hyperbolic plane) iterations, more than one integrated autocorrelation time
apart (asserted from the autocorrelation time ``sbc`` pools over the chains).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from pyro import poutine
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

import dlmppl as dl
from dlmppl.diagnostics import (
    MCMCInference,
    SBCResult,
    SVIInference,
    chi2_uniformity_test,
    default_reference,
    ecdf_band,
    ecdf_uniformity_test,
    sbc,
    sbc_ranks,
)
from dlmppl.distributions import ManifoldUniform, VonMisesFisher, WrappedNormal
from dlmppl.inference import RiemannianHMC
from tests.inference._targets import SymplecticEulerHMC
from tests.statistical import assert_ks, assert_mc_estimate, assert_pvalues, seed

# --------------------------------------------------------------------------- helpers


def _sbc(*args, **kwargs):
    """``sbc`` without a progress bar; i.i.d. (exact) draws may trip the thinning warning by chance."""
    kwargs.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="sbc: the ranked draws")
        return sbc(*args, **kwargs)


def _rejected(p: float) -> bool:
    try:
        assert_pvalues(p, "broken")
    except AssertionError:
        return True
    return False


PRIOR_SD, NOISE_SD = 1.0, 1.0


def normal_model(n=5, y=None):
    """mu ∈ R² ~ N(0, I), y_i ~ N(mu, I): the posterior is N(Σy/(n+1), I/(n+1))."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), PRIOR_SD).to_event(1))
    with pyro.plate("data", n):
        pyro.sample("y", dist.Normal(mu, NOISE_SD).to_event(1), obs=y)


def normal_model_unbatched(n=5, y=None):
    """The same model, written so that it does not broadcast over a leading batch of draws."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), PRIOR_SD).to_event(1))
    loc = mu.reshape(2)  # fails for a batch of draws: the log-likelihood is then evaluated draw by draw
    with pyro.plate("data", n):
        pyro.sample("y", dist.Normal(loc, NOISE_SD).to_event(1), obs=y)


class ExactNormalKernel(MCMCKernel):
    """I.i.d. draws of the exact posterior of :func:`normal_model`, optionally scaled/shifted (broken)."""

    def __init__(self, model, scale=1.0, shift=0.0):
        self.model, self.scale, self.shift = model, scale, shift
        self.transforms = {}

    def setup(self, warmup_steps, *args, **kwargs):
        y = poutine.trace(self.model).get_trace(*args, **kwargs).nodes["y"]["value"]
        prec = 1 / PRIOR_SD**2 + y.shape[0] / NOISE_SD**2
        self._mean, self._sd = y.sum(0) / NOISE_SD**2 / prec, prec**-0.5
        self._init = {"mu": self._mean.clone()}

    @property
    def initial_params(self):
        return self._init

    @initial_params.setter
    def initial_params(self, value):
        self._init = value

    def sample(self, params):
        return {"mu": self._mean + self._sd * (self.shift + self.scale * torch.randn_like(self._mean))}


def _exact(scale=1.0, shift=0.0, num_samples=10):
    return MCMCInference(lambda m: ExactNormalKernel(m, scale, shift), num_samples=num_samples, warmup_steps=0)


def _gamma_stats(ranks, L):
    """The ECDF test's statistic, written out independently, for rank sets ``(R, n)``:
    ``min_t`` of the two-sided binomial tail of ``#{r < t}``, ``t = 1..L``."""
    ranks = np.atleast_2d(ranks)
    n = ranks.shape[1]
    counts = np.cumsum((ranks[..., None] == np.arange(L + 1)).sum(1), -1)[:, :L]  # (R, L): #{r < t}
    z = np.arange(1, L + 1) / (L + 1)
    c = np.arange(n + 1)[:, None]
    table = np.minimum(1, 2 * np.minimum(scipy.stats.binom.cdf(c, n, z), scipy.stats.binom.sf(c - 1, n, z)))
    return table[counts, np.arange(L)].min(-1)


# --------------------------------------------------------------------------- ranks


def test_sbc_ranks_counts_below():
    true = torch.tensor([0.5, 2.0, -1.0])
    draws = torch.tensor([[0.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.2, 1.5, 2.0], [0.4, 4.0, 3.0]])
    np.testing.assert_array_equal(sbc_ranks(true, draws), [3, 2, 0])
    assert sbc_ranks(true, draws).dtype == np.int64


@pytest.mark.statistical
def test_sbc_ranks_break_ties_uniformly():
    # a quantity equal to every draw (a discrete one, or a chain stuck at the truth): rank U{0..L}
    g = torch.Generator().manual_seed(seed(1))
    L = 9
    ranks = np.array([sbc_ranks(torch.zeros(1), torch.zeros(L, 1), generator=g)[0] for _ in range(2000)])
    assert ranks.min() >= 0 and ranks.max() <= L
    assert_pvalues(ecdf_uniformity_test(ranks, L), "tie-broken ranks")


def test_sbc_ranks_rejects_nan_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN"):
        sbc_ranks(torch.tensor([float("nan")]), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="draws"):
        sbc_ranks(torch.zeros(2), torch.zeros(3, 1))


# --------------------------------------------------------------------------- uniformity tests


@pytest.mark.statistical
def test_ecdf_test_pvalue_is_the_null_law_of_its_statistic():
    """The recursion's p-value equals P(γ' ≤ γ) estimated by brute force over uniform rank sets."""
    rng = np.random.default_rng(seed(2))
    n, L, reps = 40, 9, 50000
    null = _gamma_stats(rng.integers(0, L + 1, (reps, n)), L)
    for ranks in (rng.integers(0, L + 1, n), np.minimum(rng.integers(0, L + 1, n), rng.integers(0, L + 1, n))):
        p = ecdf_uniformity_test(ranks, L)
        est = float(np.mean(null <= _gamma_stats(ranks, L)[0] * (1 + 1e-9)))
        assert_mc_estimate(est, math.sqrt(max(est * (1 - est), 1 / reps) / reps), p, what="ECDF p-value")


@pytest.mark.statistical
@pytest.mark.parametrize("test", [ecdf_uniformity_test, chi2_uniformity_test])
def test_uniformity_tests_are_calibrated_on_uniform_ranks(test):
    rng = np.random.default_rng(seed(3))
    ps = [test(rng.integers(0, 20, 100), 19) for _ in range(300)]
    # the p-values of uniform ranks are (nearly) uniform: neither liberal nor needlessly conservative
    assert_ks(np.array(ps), "uniform", what=f"{test.__name__} p-values on uniform ranks")


@pytest.mark.parametrize(
    "shape",
    [
        ("U-shaped (draws too narrow)", lambda rng, n: rng.beta(0.4, 0.4, n)),
        ("hump (draws too wide)", lambda rng, n: rng.beta(3.0, 3.0, n)),
        ("skewed (draws biased)", lambda rng, n: rng.beta(2.5, 1.0, n)),
    ],
    ids=lambda s: s[0].split()[0],
)
@pytest.mark.parametrize("test", [ecdf_uniformity_test, chi2_uniformity_test])
def test_uniformity_tests_reject_non_uniform_ranks(shape, test):
    # power: p ≪ 1e-4 for each of these (DLMPPL_TEST_SEED 0-20: largest p 6e-7, ECDF test, U shape)
    rng = np.random.default_rng(seed(4))
    ranks = np.floor(shape[1](rng, 200) * 20).astype(int).clip(0, 19)
    assert _rejected(test(ranks, 19)), f"{test.__name__} did not reject {shape[0]} ranks"


@pytest.mark.statistical
def test_ecdf_band_is_left_with_probability_at_most_alpha():
    from dlmppl.diagnostics.sbc import _exit_probability

    rng = np.random.default_rng(seed(5))
    n, L, alpha, reps = 50, 14, 0.05, 4000
    z, lower, upper = ecdf_band(n, L, alpha)
    assert z.shape == lower.shape == upper.shape == (L,)
    # exactly: at most alpha, and not needlessly wide (the counts are discrete)
    exact = _exit_probability(n, z, np.rint(lower * n).astype(int), np.rint(upper * n).astype(int))
    assert alpha / 2 < exact <= alpha
    t = np.rint(z * (L + 1)).astype(int)
    ranks = rng.integers(0, L + 1, (reps, n))
    ecdf = (ranks[:, None, :] < t[None, :, None]).mean(-1)  # (reps, L)
    left = np.any((ecdf < lower - 1e-12) | (ecdf > upper + 1e-12), -1)
    for i in range(100):  # leaving the band is the ECDF test's rejection at level alpha
        assert left[i] == (ecdf_uniformity_test(ranks[i], L) <= alpha)
    est = left.mean()
    assert_mc_estimate(est, math.sqrt(exact * (1 - exact) / reps), exact, what="band exit frequency")


def test_uniformity_test_arguments():
    with pytest.raises(ValueError, match="ranks"):
        ecdf_uniformity_test(np.array([0, 11]), 10)
    with pytest.raises(ValueError, match="ranks"):
        ecdf_uniformity_test(np.array([]), 10)
    with pytest.raises(ValueError, match="num_draws"):
        ecdf_uniformity_test(np.array([0, 1]), 0)
    with pytest.raises(ValueError, match="bins"):
        chi2_uniformity_test(np.array([0, 1, 2]), 5, bins=7)
    with pytest.raises(ValueError, match="alpha"):
        ecdf_band(10, 5, alpha=1.5)


# --------------------------------------------------------------------------- the sbc driver


@pytest.mark.statistical
def test_sbc_passes_for_exact_posterior_draws_and_fails_for_a_narrow_one():
    """The machinery on its own: exact conjugate posterior draws give uniform ranks; draws with
    half the posterior spread (an over-confident inference) are rejected (DLMPPL_TEST_SEED 0-20:
    largest p 1e-7)."""
    ok = _sbc(normal_model, _exact(), 100, observed="y", num_draws=10, seed=seed(6))
    assert ok.quantities == ["mu[0]", "mu[1]", "log_lik"]
    for r in ok.ranks.values():
        assert r.shape == (100,) and r.min() >= 0 and r.max() <= 10
    assert_pvalues(ok.pvalue(), "exact posterior")
    narrow = _sbc(normal_model, _exact(scale=0.5), 100, observed="y", num_draws=10, seed=seed(6))
    assert _rejected(narrow.pvalue()), narrow.summary()


def test_sbc_vectorised_log_likelihood_equals_one_trace_per_draw():
    a = _sbc(normal_model, _exact(), 8, observed="y", num_draws=10, seed=3)
    b = _sbc(normal_model_unbatched, _exact(), 8, observed="y", num_draws=10, seed=3)
    for q in a.quantities:
        np.testing.assert_array_equal(a.ranks[q], b.ranks[q])


def test_sbc_is_reproducible_and_restores_the_global_rng():
    a = _sbc(normal_model, _exact(), 5, observed="y", num_draws=10, seed=11)
    b = _sbc(normal_model, _exact(), 5, observed="y", num_draws=10, seed=11)
    c = _sbc(normal_model, _exact(), 5, observed="y", num_draws=10, seed=12)
    assert all(np.array_equal(a.ranks[q], b.ranks[q]) for q in a.quantities)
    assert not all(np.array_equal(a.ranks[q], c.ranks[q]) for q in a.quantities)
    # seed=None: the base seed comes from torch's generator, which is left as if one number was drawn
    out = []
    for _ in range(2):
        pyro.set_rng_seed(5)
        r = _sbc(normal_model, _exact(), 4, observed="y", num_draws=10)
        out.append((r.ranks["mu[0]"], torch.rand(3)))
    assert np.array_equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@pytest.mark.slow
def test_sbc_parallel_chunks_give_the_serial_ranks():
    kw = dict(observed="y", num_draws=10, seed=21)
    serial = _sbc(normal_model, _exact(), 12, **kw)
    parallel = _sbc(normal_model, _exact(), 12, num_workers=2, **kw)
    assert parallel.quantities == serial.quantities
    for q in serial.quantities:
        np.testing.assert_array_equal(parallel.ranks[q], serial.ranks[q])
    np.testing.assert_array_equal(parallel.seeds, serial.seeds)


def test_sbc_manifold_quantities_batched_site_and_extra():
    S2 = dl.manifolds.Sphere()

    def model(y=None):
        z = pyro.sample("z", ManifoldUniform(S2, (3,), batch_shape=(2,)))
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal((z[..., 0] + w).sum(-1), 1.0), obs=y)

    class Prior(ExactNormalKernel):  # posterior draws from the prior: only the bookkeeping is tested
        def setup(self, warmup_steps, *args, **kwargs):
            self._init = {"z": ManifoldUniform(S2, (3,), batch_shape=(2,)).sample(), "w": torch.zeros(())}

        def sample(self, params):
            return {"z": ManifoldUniform(S2, (3,), batch_shape=(2,)).sample(), "w": torch.randn(())}

    ref = torch.tensor([0.0, 0.0, 1.0])
    res = sbc(
        model, MCMCInference(lambda m: Prior(m), num_samples=6, warmup_steps=0), 3, observed="y", num_draws=6,
        reference={"z": ref}, test_quantities={"z0_dot_ref": lambda p, d: p["z"][0] @ ref}, progress=False, seed=0,
    )  # fmt: skip
    assert res.quantities == [
        "z[0].distance", "z[0].tangent[0]", "z[0].tangent[1]",
        "z[1].distance", "z[1].tangent[0]", "z[1].tangent[1]",
        "w", "log_lik", "z0_dot_ref",
    ]  # fmt: skip
    # the distance to the reference and the custom cosine rank in opposite orders
    np.testing.assert_array_equal(res.ranks["z[0].distance"], 6 - res.ranks["z0_dot_ref"])


@pytest.mark.parametrize(
    "manifold, shape",
    [
        (dl.manifolds.Sphere(), (4,)),
        (dl.manifolds.Lorentz(2.0), (3,)),
        (dl.manifolds.PoincareBall(0.5), (2,)),
        (dl.manifolds.Stiefel(), (4, 2)),
        (dl.manifolds.SymmetricPositiveDefinite(), (3, 3)),
        (dl.manifolds.Euclidean(1), (3,)),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, tuple) else str(v),
)
def test_default_reference_lies_on_the_manifold(manifold, shape):
    o = default_reference(manifold, shape, torch.float64)
    assert o.shape == shape and o.dtype == torch.float64
    assert bool(dl.constraints.manifold(manifold).check(o).all())


def test_sbc_argument_errors():
    inf = _exact()
    with pytest.raises(ValueError, match="observed"):
        sbc(normal_model, inf, 2, observed="x", num_draws=5, progress=False)
    with pytest.raises(ValueError, match="already observed"):
        sbc(normal_model, inf, 2, observed="y", num_draws=5, model_args=(5, torch.zeros(5, 2)), progress=False)
    with pytest.raises(ValueError, match="num_draws"):
        sbc(normal_model, inf, 2, observed="y", num_draws=50, progress=False)
    with pytest.raises(ValueError, match="thin"):
        sbc(normal_model, inf, 2, observed="y", num_draws=5, thin=3, progress=False)
    with pytest.raises(ValueError, match="thin"):
        sbc(normal_model, inf, 2, observed="y", num_draws=5, thin="ess", progress=False)
    with pytest.raises(ValueError, match="num_simulations"):
        sbc(normal_model, inf, 0, observed="y", num_draws=5, progress=False)
    with pytest.raises(ValueError, match="inference"):
        sbc(normal_model, lambda m: ExactNormalKernel(m), 2, observed="y", progress=False)
    with pytest.raises(ValueError, match="kernel"):
        MCMCInference(ExactNormalKernel(normal_model), num_samples=10)
    with pytest.raises(ValueError, match="mcmc_kwargs"):
        MCMCInference(lambda m: ExactNormalKernel(m), num_samples=10, mcmc_kwargs={"num_chains": 2})
    with pytest.raises(ValueError, match="guide"):
        SVIInference(pyro.infer.autoguide.AutoNormal(normal_model), pyro.optim.Adam({}), 10)
    with pytest.raises(ValueError, match="picklable"):  # a lambda factory cannot be sent to spawned processes
        sbc(normal_model, inf, 2, observed="y", num_draws=5, num_workers=2, mp_context="spawn", progress=False)
    with pytest.raises(ValueError, match="mp_context"):
        sbc(normal_model, inf, 2, observed="y", num_draws=5, num_workers=2, mp_context="nope", progress=False)

    S2 = dl.manifolds.Sphere()

    def sphere_model(y=None):
        mu = pyro.sample("mu", ManifoldUniform(S2, (3,)))
        pyro.sample("y", VonMisesFisher(mu, torch.tensor(2.0)), obs=y)

    prior = MCMCInference(lambda m: RiemannianHMC(m, num_steps=1, step_size=0.1, adapt_step_size=False), 5, 0)
    with pytest.raises(ValueError, match="reference"):
        sbc(sphere_model, prior, 1, observed="y", num_draws=5, reference={"mu": torch.ones(3)}, progress=False)
    with pytest.raises(ValueError, match="reference"):
        sbc(sphere_model, prior, 1, observed="y", num_draws=5, reference={"nu": torch.ones(3)}, progress=False)


def test_sbc_result_summary_and_tests():
    rng = np.random.default_rng(0)
    res = SBCResult({"a": rng.integers(0, 11, 50), "b": np.zeros(50, dtype=int)}, num_draws=10)
    s = res.summary()
    assert list(s.index) == ["a", "b"] and {"mean_rank", "sd_rank", "p_ecdf", "p_chi2"} <= set(s.columns)
    assert s.loc["b", "p_ecdf"] < 1e-10 and res.pvalue() == min(1.0, 2 * s["p_ecdf"].min())
    assert set(res.test("chi2")) == {"a", "b"}
    assert "2 quantities" in repr(res)
    with pytest.raises(ValueError, match="method"):
        res.test("ks")
    with pytest.raises(ValueError, match="ranks"):
        SBCResult({"a": np.array([0, 12])}, num_draws=10)


def test_plot_sbc_writes_a_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from dlmppl.diagnostics import plot_sbc

    rng = np.random.default_rng(0)
    res = SBCResult({f"q{i}": rng.integers(0, 16, 80) for i in range(3)} | {"bad": np.full(80, 15)}, num_draws=15)
    path = tmp_path / "sbc.png"
    axes = plot_sbc(res, path=path)
    assert len(axes) == 4
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="quantities"):
        plot_sbc(res, quantities=["nope"])


# --------------------------------------------------------------------------- SVI


def test_sbc_svi_path():
    """Guide draws are ranked directly; a point-mass guide (AutoDelta) fails SBC for sure: every
    rank is 0 or L (DLMPPL_TEST_SEED 0-20: largest p 4e-16)."""
    from pyro.infer.autoguide import AutoDelta, AutoNormal

    kw = dict(observed="y", num_draws=10, model_args=(5,), progress=False, seed=seed(7))
    pyro.param("user_param", torch.ones(()))  # the user's param store survives SBC
    good = sbc(normal_model, SVIInference(lambda m: AutoNormal(m), pyro.optim.Adam({"lr": 0.05}), 30), 4, **kw)
    assert good.quantities == ["mu[0]", "mu[1]", "log_lik"] and good.spacing is None
    assert all(0 <= r.min() and r.max() <= 10 for r in good.ranks.values())
    assert "user_param" in pyro.get_param_store() and "AutoNormal.locs.mu" not in pyro.get_param_store()
    point = sbc(normal_model, SVIInference(lambda m: AutoDelta(m), pyro.optim.Adam({"lr": 0.1}), 1), 30, **kw)
    assert _rejected(point.pvalue()), point.summary()


def test_sbc_svi_manifold_guide():
    from dlmppl.inference import AutoManifoldNormal, RiemannianAdam

    def model(n=4, y=None):
        mu = pyro.sample("mu", ManifoldUniform(dl.manifolds.Sphere(), (3,)))
        with pyro.plate("data", n):
            pyro.sample("y", VonMisesFisher(mu, torch.tensor(3.0)), obs=y)

    inf = SVIInference(lambda m: AutoManifoldNormal(m), RiemannianAdam({"lr": 0.05}), 5)
    res = sbc(model, inf, 2, observed="y", num_draws=5, progress=False, seed=0)
    assert res.quantities == ["mu.distance", "mu.tangent[0]", "mu.tangent[1]", "log_lik"]


# --------------------------------------------------------------------------- Riemannian HMC


def vmf_model(n=3, obs=None):
    """mu uniform on S², three vMF directions of known concentration 2 around it."""
    mu = pyro.sample("mu", ManifoldUniform(dl.manifolds.Sphere(), (3,), dtype=torch.float64))
    with pyro.plate("data", n):
        pyro.sample("obs", VonMisesFisher(mu, torch.tensor(2.0, dtype=torch.float64)), obs=obs)


_LORENTZ = dl.manifolds.Lorentz()
_ORIGIN = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)


def hyperbolic_model(n=3, obs=None):
    """mu ~ WrappedNormal(origin, 1) on the hyperboloid H², three WrappedNormal(mu, 0.5) observations."""
    mu = pyro.sample("mu", WrappedNormal(_LORENTZ, _ORIGIN, torch.tensor(1.0, dtype=torch.float64)))
    with pyro.plate("data", n):
        pyro.sample("obs", WrappedNormal(_LORENTZ, mu, torch.tensor(0.5, dtype=torch.float64)), obs=obs)


# Fixed step and trajectory (no adaptation: a short warm-up is enough).  The trajectory is
# about a quarter of the posterior's oscillation period: a half period would end every
# transition at a turning point, where refreshing the momentum removes no energy, and chains
# started in the prior's tails would take many iterations to come down.
_SPHERE_HMC = dict(step_size=0.6, num_steps=2, adapt_step_size=False, adapt_mass_matrix=False)
_SPHERE_RUN = dict(num_samples=40, warmup_steps=10)
_H2_HMC = dict(step_size=0.2, num_steps=2, adapt_step_size=False, adapt_mass_matrix=False)
_H2_RUN = dict(num_samples=20, warmup_steps=10)


def _assert_thinned(res):
    # a passing SBC on autocorrelated draws would prove little: the ranked draws are more than one
    # integrated autocorrelation time apart (τ pooled over the 60 chains; measured on chains of 60
    # draws: sphere τ(log_lik) ≈ 3.3 (the angular quantities ≈ 0.7) with spacing 4, H² τ ≤ 1.2 with
    # spacing 2; short chains estimate τ a little low)
    assert set(res.autocorrelation_time) == set(res.quantities)
    assert max(res.autocorrelation_time.values()) < res.spacing, res.autocorrelation_time


@pytest.mark.slow
@pytest.mark.statistical
def test_sbc_passes_for_riemannian_hmc_vmf_on_the_sphere():
    inf = MCMCInference(lambda m: RiemannianHMC(m, **_SPHERE_HMC), **_SPHERE_RUN)
    res = sbc(vmf_model, inf, 60, observed="obs", num_draws=10, seed=seed(8), progress=False)
    assert res.quantities == ["mu.distance", "mu.tangent[0]", "mu.tangent[1]", "log_lik"]
    _assert_thinned(res)
    assert_pvalues(res.pvalue(), f"SBC of RiemannianHMC on a vMF model\n{res.summary()}")


@pytest.mark.slow
@pytest.mark.statistical
def test_sbc_passes_for_riemannian_hmc_wrapped_normal_on_the_hyperbolic_plane():
    inf = MCMCInference(lambda m: RiemannianHMC(m, **_H2_HMC), **_H2_RUN)
    res = sbc(hyperbolic_model, inf, 60, observed="obs", num_draws=10, seed=seed(9), progress=False)
    assert res.quantities == ["mu.distance", "mu.tangent[0]", "mu.tangent[1]", "log_lik"]
    _assert_thinned(res)
    assert_pvalues(res.pvalue(), f"SBC of RiemannianHMC on a wrapped normal on H²\n{res.summary()}")


@pytest.mark.slow
def test_sbc_fails_for_a_broken_integrator():
    """The sphere test with only the integrator changed, and more simulations: the failure must be
    certain, not likely (with 30 draws per chain and 60 simulations DLMPPL_TEST_SEED 0-9 gave p from
    4e-20 to 1e-7; as here, 40 draws and 80 simulations, seeds 0-3 gave 1e-20 to 3e-14)."""
    inf = MCMCInference(lambda m: SymplecticEulerHMC(m, **_SPHERE_HMC), **_SPHERE_RUN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its chains are also sticky: the thinning warning is expected
        res = sbc(vmf_model, inf, 80, observed="obs", num_draws=10, seed=seed(8), progress=False)
    assert _rejected(res.pvalue()), f"the broken integrator passed SBC\n{res.summary()}"
