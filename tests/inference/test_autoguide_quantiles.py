"""AutoManifoldNormal.quantiles (issue 17, point 4): Euclidean sites as AutoNormal, manifold sites
as quantiles of the geodesic distance to the factor's centre, against independent references."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch

import dlmppl.manifolds as M
from dlmppl.distributions import ManifoldUniform, WrappedNormal
from dlmppl.inference.autoguides import AutoManifoldNormal
from tests import statistical as st

DT = torch.float64
Q = [0.05, 0.25, 0.5, 0.9, 0.99]


def model():
    pyro.sample("s", dist.LogNormal(torch.tensor(0.0, dtype=DT), 1.0))
    pyro.sample("b", dist.Normal(torch.zeros(3, dtype=DT), 1.0).to_event(1))
    pyro.sample("mu", ManifoldUniform(M.Sphere(), event_shape=(3,), dtype=DT))
    with pyro.plate("pts", 2):
        pyro.sample("w", ManifoldUniform(M.Sphere(), event_shape=(5,), dtype=DT))
        pyro.sample("z", WrappedNormal(M.PoincareBall(1.0), torch.zeros(2, dtype=DT), torch.ones(2, dtype=DT)))


def _guide():
    pyro.clear_param_store()
    g = AutoManifoldNormal(model)
    g()
    g.locs.s = torch.tensor(0.3, dtype=DT)
    g.scales.s = torch.tensor(0.7, dtype=DT)
    g.locs.b = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    g.scales.b = torch.tensor([0.1, 1.0, 3.0], dtype=DT)
    g.concentrations.mu = torch.tensor(20.0, dtype=DT)
    g.concentrations.w = torch.tensor([3.0, 50.0], dtype=DT)
    g.locs.z = torch.tensor([[0.2, 0.1], [-0.5, 0.6]], dtype=DT)
    g.scales.z = torch.tensor([[0.3, 0.3], [0.05, 0.05]], dtype=DT)
    return g


def test_euclidean_sites_are_autonormal_quantiles():
    q = _guide().quantiles(Q)
    z = scipy.stats.norm.ppf(Q)
    np.testing.assert_allclose(q["s"].numpy(), np.exp(0.3 + 0.7 * z), rtol=1e-10)
    ref = np.array([1.0, -2.0, 0.5]) + np.array([0.1, 1.0, 3.0]) * z[:, None]
    np.testing.assert_allclose(q["b"].numpy(), ref, rtol=1e-10)
    assert q["b"].shape == (len(Q), 3) and q["s"].dtype == DT
    with pytest.raises(ValueError, match="quantiles"):
        _guide().quantiles([0.0, 0.5])


def _power_spherical_radius_reference(kappa, n, q):
    """Solve P(d ≤ r) = q for d the geodesic distance to the mean of a Power Spherical law on S^{n-1}:
    the density of the cosine t is ∝ (1 + t)^(α-1) (1 - t)^(β-1), α = (n-1)/2 + κ, β = (n-1)/2
    (De Cao & Aziz 2020, eq. 4), integrated by quadrature."""
    a, b = (n - 1) / 2 + kappa, (n - 1) / 2
    dens = lambda t: (1 + t) ** (a - 1) * (1 - t) ** (b - 1)
    total = scipy.integrate.quad(dens, -1, 1, epsabs=0, epsrel=1e-12, limit=200)[0]
    upper = lambda c: scipy.integrate.quad(dens, c, 1, epsabs=0, epsrel=1e-12, limit=200)[0] / total
    return math.acos(scipy.optimize.brentq(lambda c: upper(c) - q, -1 + 1e-15, 1 - 1e-15, xtol=1e-14))


def test_sphere_sites_give_exact_radius_quantiles():
    q = _guide().quantiles(Q)
    assert q["mu"].shape == (len(Q),) and q["w"].shape == (len(Q), 2)
    for j, p in enumerate(Q):
        assert abs(float(q["mu"][j]) - _power_spherical_radius_reference(20.0, 3, p)) < 1e-6
        for i, k in enumerate((3.0, 50.0)):
            assert abs(float(q["w"][j, i]) - _power_spherical_radius_reference(k, 5, p)) < 1e-6
    assert (q["mu"].diff() > 0).all()


@pytest.mark.statistical
def test_wrapped_normal_sites_radius_quantiles_match_the_chi_law():
    """On the Poincaré disk d(m, exp_m v) = |v| with v ~ N(0, σ² I_2) in an orthonormal frame, so
    d/σ is chi with 2 degrees of freedom.  The estimate r̂_q is an empirical quantile of n draws:
    F(r̂_q) - q is asymptotically normal with sd sqrt(q(1-q)/n); assert_mc_estimate holds the
    false-alarm rate (Bonferroni over the 2 × 5 checks)."""
    n = 8192
    pyro.set_rng_seed(st.seed(0))
    q = _guide().quantiles(Q, num_samples=n)["z"]
    assert q.shape == (len(Q), 2)
    for i, sigma in enumerate((0.3, 0.05)):
        for j, p in enumerate(Q):
            F = scipy.stats.chi.cdf(float(q[j, i]) / sigma, 2)
            st.assert_mc_estimate(F, math.sqrt(p * (1 - p) / n), p, what=f"F(r̂_{p}) for σ={sigma}",
                                  alpha=st.ALPHA / 10)
