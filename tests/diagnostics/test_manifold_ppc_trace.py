"""Prior / posterior predictive groups with manifold metadata, the manifold PPC plot, and trace /
rank plots of manifold sites in intrinsic coordinates (issue 17, points 1 and 2)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402
import scipy.optimize  # noqa: E402
import torch  # noqa: E402
from pyro.infer import Predictive  # noqa: E402

import dlmppl.diagnostics as D  # noqa: E402
from dlmppl import manifolds as m  # noqa: E402
from dlmppl.diagnostics import _compat  # noqa: E402
from dlmppl.distributions import ManifoldUniform, VonMisesFisher, WrappedNormal  # noqa: E402

DT = torch.float64


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def vmf_model(n, obs=None):
    mu = pyro.sample("mu", ManifoldUniform(m.Sphere(), event_shape=(3,), dtype=DT))
    kappa = pyro.sample("kappa", dist.Gamma(torch.tensor(2.0, dtype=DT), 0.1))
    with pyro.plate("data", n):
        pyro.sample("obs", VonMisesFisher(mu, kappa), obs=obs)


def _posterior(C=2, S=40, seed=0):
    """Stand-in posterior draws near the truth (the groups' plumbing does not need MCMC)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0], dtype=DT)
                                       + 0.05 * torch.randn(C, S, 3, generator=g, dtype=DT), dim=-1)
    kappa = 10.0 + torch.rand(C, S, generator=g, dtype=DT)
    return {"mu": mu, "kappa": kappa}


def _vmf_idata(N=60, C=2, S=40):
    pyro.set_rng_seed(0)
    y = VonMisesFisher(torch.tensor([0.0, 0.0, 1.0], dtype=DT), torch.tensor(10.0, dtype=DT)).sample((N,))
    post = _posterior(C, S)
    flat = {k: v.reshape((C * S,) + v.shape[2:]) for k, v in post.items()}
    pp = Predictive(vmf_model, posterior_samples=flat, return_sites=["obs"])(N)
    prior = Predictive(vmf_model, num_samples=25)(N)
    idata = D.to_inference_data(post, model=vmf_model, model_args=(N, y), prior=prior, posterior_predictive=pp)
    return idata, y, post, pp, prior


def test_prior_and_posterior_predictive_groups_carry_manifold_attrs(tmp_path):
    idata, y, post, pp, prior = _vmf_idata()
    groups = set(_compat.group_names(idata))
    assert {"posterior", "prior", "prior_predictive", "posterior_predictive", "observed_data", "log_likelihood"} <= groups
    ppg = _compat.get_group(idata, "posterior_predictive")
    # Predictive keeps the order of the flattened posterior: chains are split back
    assert ppg["obs"].shape == (2, 40, 60, 3)
    np.testing.assert_array_equal(ppg["obs"].values, pp["obs"].reshape(2, 40, 60, 3).numpy())
    assert not np.allclose(ppg["obs"].values[0, 0], y.numpy())  # replicated, not the observed values
    obs = _compat.get_group(idata, "observed_data")["obs"]
    assert ppg["obs"].dims[2:] == obs.dims  # shared dims, as arviz's from_pyro
    pri = _compat.get_group(idata, "prior")
    assert set(pri.data_vars) == {"mu", "kappa"} and pri["mu"].shape == (1, 25, 3)
    assert prior["kappa"].shape == (25, 1)  # Predictive adds a plate dim: the group has the site's own shape
    np.testing.assert_array_equal(pri["kappa"].values[0], prior["kappa"].reshape(-1).numpy())
    prp = _compat.get_group(idata, "prior_predictive")
    assert set(prp.data_vars) == {"obs"} and prp["obs"].shape == (1, 25, 60, 3)
    for grp, var in (("observed_data", "obs"), ("posterior_predictive", "obs"), ("prior_predictive", "obs"),
                     ("prior", "mu"), ("posterior", "mu")):
        M = D.manifold_from_attrs(dict(_compat.get_group(idata, grp)[var].attrs))
        assert M is not None and M.name == "Sphere", (grp, var)
    assert "manifold" not in _compat.get_group(idata, "prior")["kappa"].attrs
    path = tmp_path / "ppc.nc"
    idata.to_netcdf(str(path))
    back = _compat.from_netcdf(str(path))
    assert _compat.get_group(back, "posterior_predictive")["obs"].attrs["manifold"] in ("Sphere", "SphereExact")


def test_predictive_arguments_are_checked():
    post = _posterior()
    with pytest.raises(ValueError, match="posterior_predictive"):
        D.to_inference_data(post, posterior_predictive={})
    with pytest.raises(ValueError, match="prior"):
        D.to_inference_data(post, prior={"a": torch.zeros(3), "b": torch.zeros(4)})
    # without a model: sites not in the posterior are the predictive ones
    idata = D.to_inference_data(post, prior={"mu": post["mu"][0], "obs": torch.zeros(40, 5)})
    assert set(_compat.get_group(idata, "prior_predictive").data_vars) == {"obs"}


def _frechet_mean_reference(y):
    """argmin_μ Σ arccos(⟨μ, y_i⟩)² over the sphere, by Nelder-Mead in spherical angles."""
    def f(a):
        mu = np.array([np.sin(a[0]) * np.cos(a[1]), np.sin(a[0]) * np.sin(a[1]), np.cos(a[0])])
        return np.sum(np.arccos(np.clip(y @ mu, -1, 1)) ** 2)

    c = y.mean(0) / np.linalg.norm(y.mean(0))
    a0 = [np.arccos(c[2]), np.arctan2(c[1], c[0])]
    a = scipy.optimize.minimize(f, a0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}).x
    return np.array([np.sin(a[0]) * np.cos(a[1]), np.sin(a[0]) * np.sin(a[1]), np.cos(a[0])])


def test_ppc_geodesic_distances_against_a_reference():
    idata, y, post, pp, prior = _vmf_idata()
    r = D.ppc_geodesic_distances(idata, "obs", num_pp_samples=7)
    mu_ref = _frechet_mean_reference(y.numpy())
    np.testing.assert_allclose(r["mean"].numpy(), mu_ref, atol=1e-6)
    np.testing.assert_allclose(r["observed"], np.arccos(np.clip(y.numpy() @ mu_ref, -1, 1)), atol=1e-6)
    rep = pp["obs"].reshape(80, 60, 3).numpy()
    idx = np.linspace(0, 79, 7).round().astype(int)
    np.testing.assert_allclose(r["replicated"], np.arccos(np.clip(rep[idx] @ mu_ref, -1, 1)), atol=1e-6)
    assert D.ppc_geodesic_distances(idata)["replicated"].shape == (80, 60)  # the only manifold observation
    assert D.ppc_geodesic_distances(idata, group="prior_predictive")["replicated"].shape == (25, 60)


def test_plot_ppc_dispatches_on_the_manifold(tmp_path):
    idata, *_ = _vmf_idata()
    axes = D.plot_ppc(idata, path=tmp_path / "ppc.png")
    assert (tmp_path / "ppc.png").stat().st_size > 2000
    ax_d, ax_p = axes
    # one density per replicated data set (50 of 80), the pooled one and the observed one
    assert len(ax_d.get_lines()) == 50 + 2
    r = D.ppc_geodesic_distances(idata, "obs")
    grid, dens = ax_d.get_lines()[-1].get_data()
    assert abs(np.trapezoid(dens, grid) - 1.0) < 0.02 and grid.min() == 0.0 and grid.max() >= r["observed"].max()
    # the points panel is the equal-area sphere map centred at the observed Fréchet mean
    xy = np.concatenate([c.get_offsets() for c in ax_p.collections])
    assert xy.shape[0] == 2 * 60 and np.all(np.hypot(xy[:, 0], xy[:, 1]) <= 2.0 + 1e-9)
    obs_xy = ax_p.collections[-1].get_offsets()
    np.testing.assert_allclose(np.hypot(obs_xy[:, 0], obs_xy[:, 1]), 2 * np.sin(r["observed"] / 2), atol=1e-9)
    with pytest.raises(ValueError, match="group"):
        D.plot_ppc(idata, group="likelihood")


def test_plot_ppc_on_the_poincare_disk_and_elsewhere(tmp_path):
    pyro.set_rng_seed(1)
    for M, loc in ((m.PoincareBall(1.0), torch.tensor([0.3, -0.2], dtype=DT)),
                   (m.Lorentz(1.0), torch.tensor([1.0, 0.0, 0.0], dtype=DT))):
        law = WrappedNormal(M, loc, torch.full((loc.shape[-1] - (1 if loc.shape[-1] == 3 else 0),), 0.3, dtype=DT))
        y = law.sample((40,))
        rep = law.sample((30, 40))
        groups = {"posterior": {"s": np.zeros((1, 30))}, "posterior_predictive": {"y": rep.numpy()[None]},
                  "observed_data": {"y": y.numpy()}}
        idata = _compat.from_dict(groups, dims={"y": ["y_dim_0", "y_dim_1"]})
        for g in ("observed_data", "posterior_predictive"):
            _compat.set_var_attrs(idata, g, "y", D.manifold_attrs(M))
        ax_d, ax_p = D.plot_ppc(idata, path=tmp_path / f"{type(M).__name__}.png")
        pts = np.concatenate([c.get_offsets() for c in ax_p.collections if len(c.get_offsets())])
        assert pts.shape[0] == 80
        if type(M).__name__ == "PoincareBall":
            np.testing.assert_allclose(np.sort(pts[:, 0]), np.sort(np.concatenate([rep[-1, :, 0], y[:, 0]])))
        else:  # principal tangent coordinates at the Fréchet mean: their norm is the distance
            r = D.ppc_geodesic_distances(idata, "y")
            np.testing.assert_allclose(np.sort(np.hypot(pts[40:, 0], pts[40:, 1])), np.sort(r["observed"]), atol=1e-8)


def _oblique_chains(offset, C=2, N=150, seed=0):
    """Draws near (0, 0, 1) on S²; chain 0 shifted by ``offset`` radians along x."""
    g = torch.Generator().manual_seed(seed)
    v = 0.05 * torch.randn(C, N, 2, generator=g, dtype=DT)
    v[0, :, 0] += offset
    t = v.norm(dim=-1, keepdim=True)
    x = torch.cat([torch.sin(t) * v / t, torch.cos(t)], -1)
    return x


def test_trace_plot_of_a_manifold_site_draws_tangent_coordinates_and_distance(tmp_path):
    X = _oblique_chains(0.0)
    axes = D.plot_trace_manifold({"mu": X}, manifolds={"mu": m.Sphere()}, path=tmp_path / "trace.png")
    assert axes.shape == (3, 2) and (tmp_path / "trace.png").stat().st_size > 2000
    mu_ref = _frechet_mean_reference(X.reshape(-1, 3).numpy())
    dist_ref = np.arccos(np.clip(X.numpy() @ mu_ref, -1, 1))  # (chain, draw)
    lines = axes[2, 1].get_lines()
    for ch in range(2):
        np.testing.assert_allclose(lines[ch].get_ydata(), dist_ref[ch], atol=1e-6)
    # the two tangent coordinates are an orthonormal frame at the mean: pc0² + pc1² = d²
    pc = np.stack([axes[i, 1].get_lines()[0].get_ydata() for i in range(2)], -1)
    np.testing.assert_allclose(np.hypot(pc[:, 0], pc[:, 1]), dist_ref[0], atol=1e-6)
    assert "mu.dist" in axes[2, 1].get_title() and "R-hat" in axes[2, 1].get_title()
    with pytest.raises(ValueError, match="manifold"):
        D.plot_trace_manifold({"mu": X})
    # a batch of points: one block of rows per point, or one point by index
    B = torch.stack([X, _oblique_chains(0.0, seed=1)], 2)
    assert D.plot_trace_manifold({"mu": B}, manifolds={"mu": m.Sphere()}).shape == (6, 2)
    with pytest.raises(ValueError, match="point"):
        D.manifold_trace_coordinates({"mu": B}, "mu", manifolds={"mu": m.Sphere()})
    co = D.manifold_trace_coordinates({"mu": B}, "mu", manifolds={"mu": m.Sphere()}, point=1)
    assert co["tangent"].shape == (2, 150, 2)


def test_rank_histograms_and_rank_plot_separate_unmixed_chains(tmp_path):
    v = np.arange(20.0).reshape(2, 10)  # chain 0 holds the 10 lowest values
    np.testing.assert_array_equal(D.rank_histograms(v, bins=2), [[10, 0], [0, 10]])
    mixed = D.rank_histograms(np.arange(20.0).reshape(10, 2).T, bins=2)
    np.testing.assert_array_equal(mixed, [[5, 5], [5, 5]])
    # chain 0 shifted by 10 posterior sd along x on the sphere: the ranks of pc0 split the chains
    X = _oblique_chains(0.5)
    axes = D.plot_rank_manifold({"mu": X}, manifolds={"mu": m.Sphere()}, bins=10, path=tmp_path / "rank.png")
    assert axes.shape == (1, 3)
    co = D.manifold_trace_coordinates({"mu": X}, "mu", manifolds={"mu": m.Sphere()})
    counts = D.rank_histograms(co["tangent"][..., 0], bins=10)
    assert counts.sum(1).tolist() == [150, 150]
    assert sorted([counts[0, :5].sum(), counts[0, 5:].sum()]) == [0, 150]
    bars = [p.get_height() for p in axes[0, 0].patches]
    np.testing.assert_array_equal(bars, counts.reshape(-1))


def test_plot_ppc_of_a_euclidean_site_is_arviz(tmp_path):
    rng = np.random.default_rng(0)
    groups = {"posterior": {"s": rng.normal(size=(2, 20))}, "posterior_predictive": {"y": rng.normal(size=(2, 20, 30))},
              "observed_data": {"y": rng.normal(size=30)}}
    idata = _compat.from_dict(groups, dims={"y": ["y_dim_0"]})
    kwargs = {} if _compat.ARVIZ_1 else {"num_pp_samples": 5}  # arviz 1.x: plot_ppc_dist's own arguments
    out = D.plot_ppc(idata, path=tmp_path / "e.png", **kwargs)
    assert (tmp_path / "e.png").stat().st_size > 2000
    assert not isinstance(out, np.ndarray) or out.size == 1  # arviz's one panel, not the two manifold panels
