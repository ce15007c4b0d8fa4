"""Manifold statistics (Fréchet mean, tangent coordinates, R-hat/ESS), summary, PSIS."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import dlmppl.diagnostics as D
from dlmppl import manifolds as m
from dlmppl.diagnostics import _compat
from dlmppl.geometry import geometry_of
from dlmppl.inference import importance
from tests import statistical as st

az = _compat.az
S2 = m.Sphere()


def _exp(M, mu, V):
    return geometry_of(M).exp(mu.expand_as(V), V)


def _unit(v):
    return v / v.norm()


# --------------------------------------------------------------------------- Fréchet mean


@pytest.mark.parametrize(
    "M, mu",
    [
        (m.Sphere(), _unit(torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64))),
        (m.PoincareBall(1.0), torch.tensor([0.4, -0.3], dtype=torch.float64)),
        (m.Stereographic(0.7), torch.tensor([0.5, 0.2], dtype=torch.float64)),
        (m.Lorentz(1.0), None),
    ],
)
def test_frechet_mean_of_symmetric_cloud(M, mu):
    if mu is None:  # a point on the hyperboloid <x,x>_L = -1
        s = torch.tensor([0.4, -0.7], dtype=torch.float64)
        mu = torch.cat([(1 + s.pow(2).sum()).sqrt().reshape(1), s])
    B = D.tangent_basis(M, mu)
    c = torch.randn(40, B.shape[0], dtype=torch.float64) * 0.4
    c = torch.cat([c, -c])  # tangent vectors summing to zero: mu is the Fréchet mean
    X = _exp(M, mu, c @ B)
    est = D.frechet_mean(X, M)
    torch.testing.assert_close(est, mu, atol=1e-7, rtol=0)
    # tangent coordinates at the mean recover the coefficients, their norm is the distance
    T = D.tangent_coordinates(X, M, mu, B)
    torch.testing.assert_close(T, c, atol=1e-7, rtol=0)


def test_frechet_mean_two_points_weighted():
    x = _unit(torch.tensor([1.0, 0.2, 0.1], dtype=torch.float64))
    y = _unit(torch.tensor([-0.2, 1.0, 0.4], dtype=torch.float64))
    for M, a, b in ((S2, x, y), (m.PoincareBall(2.0), x[:2] * 0.5, y[:2] * 0.6)):
        est = D.frechet_mean(torch.stack([a, b]), M, weights=torch.tensor([0.25, 0.75], dtype=torch.float64))
        # weighted mean of two points sits at fraction 0.75 of the geodesic from a to b
        V = geometry_of(M).log(a, b)
        torch.testing.assert_close(est, geometry_of(M).exp(a, 0.75 * V), atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match="weights"):
        D.frechet_mean(torch.stack([x, y]), S2, weights=torch.tensor([-1.0, 2.0]))


def test_tangent_basis_orthonormal():
    for M, mu in (
        (S2, _unit(torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64))),
        (m.PoincareBall(1.0), torch.tensor([0.5, 0.3], dtype=torch.float64)),
    ):
        B = D.tangent_basis(M, mu)
        G = D.stats._gram(M, mu, B, B)
        torch.testing.assert_close(G, torch.eye(B.shape[0], dtype=torch.float64), atol=1e-10, rtol=0)
    B = D.tangent_basis(S2, mu := _unit(torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64)))
    torch.testing.assert_close(B @ mu, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- R-hat on the sphere


def _oblique_chains(offset, C=4, N=1000):
    """Draws around mu = (1,1,1)/√3, wide (sd 0.6) along v and narrow (sd 0.01) along u.

    ``offset``: chains 0,1 sit at -offset and chains 2,3 at +offset along the narrow
    direction u, i.e. they have not mixed along it.
    """
    mu = _unit(torch.ones(3, dtype=torch.float64))
    u = _unit(torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64))
    v = _unit(torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64))
    side = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)[:C, None]
    a = torch.randn(C, N, dtype=torch.float64) * 0.01 + side * offset
    b = torch.randn(C, N, dtype=torch.float64) * 0.6
    return _exp(S2, mu, a[..., None] * u + b[..., None] * v)


def _ambient_rhat(X):
    return _compat.rhat_ess(np.asarray(X))["r_hat"]


@pytest.mark.statistical
def test_rhat_oblique_narrow_direction_ambient_misleads():
    """Chains 2 sd apart along a narrow direction oblique to the ambient axes.

    Every ambient coordinate mixes that direction with a 60x wider one, so its
    R-hat stays < 1.01 ("converged"); the tangent coordinate along the narrow
    principal geodesic direction at the Fréchet mean shows R-hat ≈ 1.4.

    Thresholds against their sampling spread (40 seeds): ambient max R-hat 1.0050 ± 0.0011
    (max 1.0073; 1.01 is 4.5 sd out), ours 1.431 ± 0.012 (1.2: 20 sd), mixed chains 1.0005 ±
    0.0006 and 1.0007 ± 0.0006 (1.02: > 30 sd).
    """
    X = _oblique_chains(offset=0.01)
    amb = _ambient_rhat(X)
    ours = D.manifold_diagnostics(X, S2)
    assert amb.max() < 1.01
    assert ours["max_r_hat"] > 1.2
    # control: mixed chains, both agree that nothing is wrong
    X0 = _oblique_chains(offset=0.0)
    assert _ambient_rhat(X0).max() < 1.02
    assert D.manifold_diagnostics(X0, S2)["max_r_hat"] < 1.02


@pytest.mark.statistical
def test_rhat_flags_chains_stuck_in_antipodal_modes():
    """Measured over 40 seeds: antipodal R-hat 1.829 ± 0.002 (1.5: > 100 sd), one chain split in two
    1.005 ± 0.005 (max 1.024; 1.05: 9.5 sd)."""
    p = torch.tensor([0.3, -0.4, 0.866], dtype=torch.float64)
    p = _unit(p)
    B = D.tangent_basis(S2, p)
    V = torch.randn(2, 400, 2, dtype=torch.float64) * 0.15 @ B
    X = torch.stack([_exp(S2, p, V[0]), _exp(S2, -p, V[1])])  # chain 0 near p, chain 1 near -p
    d = D.manifold_diagnostics(X, S2)
    assert d["max_r_hat"] > 1.5
    # one chain's draws on its own: no alarm
    single = torch.stack([X[0, :200], X[0, 200:]])
    assert D.manifold_diagnostics(single, S2)["max_r_hat"] < 1.05


# --------------------------------------------------------------------------- summary


def test_summary_rows_and_euclidean_match_arviz():
    X = _oblique_chains(offset=0.0, N=200)
    sigma = torch.rand(4, 200, dtype=torch.float64) + 1.0
    beta = torch.randn(4, 200, 2, dtype=torch.float64)
    draws = {"loc": X, "sigma": sigma, "beta": beta}
    s = D.summary(draws, manifolds={"loc": S2}, round_to="none")
    assert list(s.columns) == ["mean", "sd", "rms_geodesic", "ess_bulk", "ess_tail", "r_hat", "manifold"]
    assert {"loc[0]", "loc[1]", "loc[2]", "loc.pc0", "loc.pc1", "loc.dist", "sigma", "beta[0]", "beta[1]"} == set(s.index)
    mu = D.frechet_mean(X.reshape(-1, 3), S2)
    np.testing.assert_allclose(s.loc[["loc[0]", "loc[1]", "loc[2]"], "mean"].values, mu.numpy(), atol=1e-8)
    dist_ = geometry_of(S2).dist(mu, X.reshape(-1, 3))
    np.testing.assert_allclose(s.loc["loc[0]", "rms_geodesic"], float(dist_.pow(2).mean().sqrt()), rtol=1e-6)
    assert np.isnan(s.loc["loc[0]", "sd"]) and np.isnan(s.loc["sigma", "rms_geodesic"])
    assert s.loc["loc[1]", "r_hat"] == s.loc[["loc.pc0", "loc.pc1", "loc.dist"], "r_hat"].max()
    ref = az.summary(
        az.from_dict(posterior={"sigma": sigma.numpy(), "beta": beta.numpy()}) if not _compat.ARVIZ_1 else
        az.from_dict({"posterior": {"sigma": sigma.numpy(), "beta": beta.numpy()}}),
        kind="all", round_to="none",
    )
    for ours_name, ref_name in (("sigma", "sigma"), ("beta[1]", "beta[1]")):
        for col in ("mean", "sd", "ess_bulk", "ess_tail", "r_hat"):
            np.testing.assert_allclose(s.loc[ours_name, col], ref.loc[ref_name, col], rtol=1e-6)


def test_summary_batched_manifold_points():
    # two points on S^2 per draw (site shape (2, 3)): one summary block per point
    X = torch.stack([_oblique_chains(0.0, N=100), _oblique_chains(0.0, N=100)], 2)
    s = D.summary({"dirs": X}, manifolds={"dirs": S2}, intrinsic=False)
    assert list(s.index) == [f"dirs[{i}, {j}]" for i in range(2) for j in range(3)]


def _idata_with_dims(chains):
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(chains, 100, 2, 3, generator=g, dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.randn(chains, 100, 2, 3, generator=g, dtype=torch.float64) * 0.1
                                      + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), dim=-1)
    groups = {"posterior": {"mu": mu.numpy(), "d": d.numpy()}}
    idata = _compat.from_dict(groups, coords={"a": ["p", "q"], "x": ["u", "v", "w"], "pt": ["left", "right"]},
                              dims={"mu": ["a", "x"], "d": ["pt", "xyz"]})
    _compat.set_var_attrs(idata, "posterior", "d", D.manifold_attrs(S2))
    return idata


def test_summary_rows_follow_coords_and_dims_as_arviz():
    """Row names are arviz's (``mu[p, u]``) where the InferenceData names its dims; a manifold
    point's own rows use the labels of its batch dims (``d[left].dist``)."""
    idata = _idata_with_dims(chains=2)
    s = D.summary(idata, round_to="none")
    ref = az.summary(idata, var_names=["mu"], kind="all", round_to="none")
    assert list(s.index[:6]) == list(ref.index) == [f"mu[{a}, {x}]" for a in "pq" for x in "uvw"]
    np.testing.assert_allclose(s.loc[ref.index, "mean"].values, ref["mean"].values, rtol=1e-10)
    assert {"d[left, 0]", "d[right, 2]", "d[left].dist", "d[right].pc1"} <= set(s.index)
    assert (s.loc[["d[left, 0]", "d[right].dist"], "manifold"] == "Sphere").all()


def test_summary_of_one_chain_omits_r_hat_and_rounds_like_arviz():
    """An SVI posterior (one chain): no R-hat column rather than NaN; by default the numbers are
    rounded as arviz rounds them (3 decimals, ESS to integers) and the tangent means at the
    Fréchet mean, zero by construction, read 0 rather than round-off like 3e-13."""
    idata = _idata_with_dims(chains=1)
    s = D.summary(idata)
    assert "r_hat" not in s.columns and not s.drop(columns="manifold").isna().all(axis=1).any()
    raw = D.summary(idata, round_to="none")
    num = ["mean", "sd", "rms_geodesic", "ess_bulk", "ess_tail"]
    np.testing.assert_allclose(s[num].values, raw[num].round({"ess_bulk": 0, "ess_tail": 0, "mean": 3, "sd": 3,
                                                              "rms_geodesic": 3}).values, equal_nan=True)
    if not _compat.ARVIZ_1:  # arviz 0.x's default rounding, which summary documents
        ref = az.summary(idata, var_names=["mu"], kind="all")
        np.testing.assert_allclose(s.loc[ref.index, ["mean", "sd", "ess_bulk"]].values,
                                   ref[["mean", "sd", "ess_bulk"]].values)
    assert (raw.loc[["d[left].pc0", "d[left].pc1"], "mean"] == 0.0).all()
    assert (D.summary(idata, round_to=1)["mean"] == raw["mean"].round(1)).all()


# --------------------------------------------------------------------------- PSIS


def _arviz_psislw(lw):
    """arviz's own PSIS, called directly: ``az.psislw`` (0.x) or ``arviz_stats`` on log ratios (1.x)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if hasattr(az, "psislw"):
            return az.psislw(lw.copy())
        from arviz_stats.base import array_stats

        return array_stats.psislw(-lw.copy(), r_eff=1.0)


@pytest.mark.parametrize("kind", ["normal", "heavy", "small"])
def test_psislw_matches_arviz(kind):
    g = torch.Generator().manual_seed(1)
    if kind == "normal":
        lw = torch.randn(3000, generator=g, dtype=torch.float64) * 1.3
    elif kind == "heavy":
        lw = -0.9 * torch.rand(2000, generator=g, dtype=torch.float64).log().neg().log()
        lw = 0.9 * -torch.rand(2000, generator=g, dtype=torch.float64).log()
    else:
        lw = torch.randn(60, generator=g, dtype=torch.float64)
    ours, k = D.psislw(lw)
    ref, kref = _arviz_psislw(lw.numpy())
    np.testing.assert_allclose(k, float(kref), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.exp(ours).sum(), 1.0, rtol=1e-12)


@pytest.mark.statistical
def test_pareto_khat_recovers_tail_index():
    """Weights with a Pareto tail of index ξ: w = U^-ξ, whose exceedances over any threshold are exactly
    GPD(k = ξ).  k̂ is fitted to the M = ⌈min(S/5, 3√S)⌉ largest (Vehtari et al. 2024) and pulled
    towards 0.5 by the prior weight 10 (its mean is (Mξ + 5)/(M + 10)); its sampling sd is the
    GPD shape's asymptotic (1 + ξ)/√M (measured over 150 seeds at S = 1e5: 0.038 and 0.056 against
    0.042 and 0.058; bias < 0.003).  S = 1e6: sd ≈ 0.03, so a k̂ off by 0.2 fails."""
    n = 1_000_000
    m = math.ceil(min(0.2 * n, 3 * math.sqrt(n)))
    g = torch.Generator().manual_seed(st.seed(2))
    xis = torch.tensor([0.3, 0.8], dtype=torch.float64)
    khat = torch.stack([torch.as_tensor(float(D.pareto_khat(-xi * torch.rand(n, generator=g, dtype=torch.float64).log())))
                        for xi in xis.tolist()])
    st.assert_mc_estimate(khat, (1 + xis) / math.sqrt(m), (m * xis + 5) / (m + 10), what="Pareto k̂")
    assert D.pareto_khat(torch.zeros(100)) == -math.inf


def _conjugate(y, s0=2.0, s=1.0):
    """Posterior N(mean, sd²) per dimension and log evidence of y (n, d) under gauss_model."""
    n, d = y.shape
    var = 1.0 / (1.0 / s0**2 + n / s**2)
    mean = var * y.sum(0) / s**2
    # per dimension: y[:, j] ~ N(0, s^2 I + s0^2 11^T)
    cov = s**2 * torch.eye(n, dtype=y.dtype) + s0**2
    logz = dist.MultivariateNormal(torch.zeros(n, dtype=y.dtype), cov).log_prob(y.T).sum()
    return mean, var**0.5, logz


def gauss_model(y):
    z = pyro.sample("z", dist.Normal(torch.zeros(y.shape[1], dtype=y.dtype), 2.0).to_event(1))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(z, 1.0).to_event(1), obs=y)


def _guide(mean, sd, scale):
    def guide(y):
        pyro.sample("z", dist.Normal(mean, sd * scale).to_event(1))

    return guide


@pytest.mark.statistical
def test_psis_diagnostic_good_and_narrow_guides():
    """A guide of relative scale s < 1 gives weights ∝ exp((1 - s²) χ²_d / 2), whose tail is Pareto of
    index k = 1 - s² (up to log factors): s = 0.4 (k = 0.84) is flagged (k̂ > 0.7).  Measured over 20
    seeds with 20000 particles: k̂ = 1.13 ± 0.08 (min 1.00; 0.7 is 5 sd out); s = 0.5 (k = 0.75,
    as this test had) gave 1.03 ± 0.15 at 2000 particles, min 0.702: too close.  The 1.3x wider
    guide: k̂ = -0.03 ± 0.06 (0.5 is 8 sd out)."""
    y = torch.randn(8, 10, dtype=torch.float64) + 1.0
    mean, sd, logz = _conjugate(y)
    k, lw = D.psis_diagnostic(gauss_model, _guide(mean, sd, 1.0), y, num_particles=2000, return_log_weights=True)
    # exact posterior: every importance weight is the evidence p(y)
    torch.testing.assert_close(lw, logz.expand(2000), atol=1e-9, rtol=0)
    assert k < 0.5
    # a wider guide is still a good proposal; a 2.5x too narrow one (10-d) is not
    assert D.psis_diagnostic(gauss_model, _guide(mean, sd, 1.3), y, num_particles=2000) < 0.5
    assert D.psis_diagnostic(gauss_model, _guide(mean, sd, 0.4), y, num_particles=20_000) > 0.7


def test_psis_diagnostic_loop_fallback_agrees():
    y = torch.randn(5, 3, dtype=torch.float64)
    mean, sd, logz = _conjugate(y)
    _, lw = D.psis_diagnostic(gauss_model, _guide(mean, sd, 1.0), y, num_particles=20, vectorize=False, return_log_weights=True)
    torch.testing.assert_close(lw, logz.expand(20), atol=1e-9, rtol=0)
    # the vectorised path itself (not its loop fallback) gives the same weights
    lwv = importance.log_weights(gauss_model, _guide(mean, sd, 1.0), (y,), {}, 20, 1)
    torch.testing.assert_close(lwv, logz.expand(20), atol=1e-9, rtol=0)
    assert importance.plate_nesting(gauss_model, _guide(mean, sd, 1.0), (y,), {}) == 1


def test_summary_of_an_svi_guide_reads_as_an_mcmc_one():
    """From AutoManifoldNormal through to_inference_data(guide) to summary: one chain, no R-hat
    column, every printed number finite or an empty cell of the other spread column."""
    from dlmppl.distributions import ManifoldUniform, VonMisesFisher
    from dlmppl.inference.autoguides import AutoManifoldNormal

    def model(y):
        mu = pyro.sample("mu", ManifoldUniform(S2, event_shape=(3,), dtype=y.dtype))
        kappa = pyro.sample("kappa", dist.Gamma(torch.tensor(2.0, dtype=y.dtype), 0.1))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("obs", VonMisesFisher(mu, kappa), obs=y)

    pyro.clear_param_store()
    y = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64) + 3.0, dim=-1)
    guide = AutoManifoldNormal(model)
    guide(y)
    idata = D.to_inference_data(guide, model=model, model_args=(y,), num_samples=200)
    s = D.summary(idata)
    assert list(s.columns) == ["mean", "sd", "rms_geodesic", "ess_bulk", "ess_tail", "manifold"]
    assert np.isfinite(s.loc[["mu[0]", "mu[1]", "mu[2]"], "rms_geodesic"]).all()
    assert np.isfinite(s.loc[["kappa", "mu.pc0", "mu.pc1", "mu.dist"], "sd"]).all()
    assert (s.loc[["mu.pc0", "mu.pc1"], "mean"] == 0.0).all()
