"""ChadebecMetric (issue 8): G(z) = Σᵢ Σᵢ⁻¹ ωᵢ(z) + λ e^{-τ|z|²} I against dense linear algebra, ρ heuristic,
construction from an encoder, and its intrinsic uniform law sampled by HMC (exact Gaussian reference)."""

import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from dlmppl.geometry.chadebec import ChadebecMetric, max_min_distance, posterior_moments
from dlmppl.models.intrinsic import intrinsic_codes
from tests import statistical as st

D64 = torch.float64


def dense_reference(z, mu, covs, lam, tau, rho):
    """Loop over centroids with dense matrices (independent of the implementation)."""
    d = z.shape[-1]
    G = torch.zeros(z.shape[0], d, d, dtype=D64)
    for i in range(mu.shape[0]):
        P = torch.linalg.inv(covs[i])
        diff = z - mu[i]
        m2 = torch.einsum("ba,ac,bc->b", diff, P, diff)
        G += torch.exp(-m2 / rho**2)[:, None, None] * P
    G += lam * torch.exp(-tau * z.pow(2).sum(-1))[:, None, None] * torch.eye(d, dtype=D64)
    return G


@pytest.mark.parametrize("full", [False, True])
def test_metric_inverse_logdet_agree_with_dense_linear_algebra(full):
    N, d = 7, 3
    mu = torch.randn(N, d, dtype=D64)
    if full:
        A = torch.randn(N, d, d, dtype=D64)
        cov = 0.1 * (A @ A.transpose(-1, -2)) + 0.05 * torch.eye(d, dtype=D64)
        covs = cov
    else:
        cov = 0.05 + 0.3 * torch.rand(N, d, dtype=D64)
        covs = torch.diag_embed(cov)
    m = ChadebecMetric(mu, cov, lam=0.02, tau=0.1)
    rho = float(m.rho)
    z = torch.cat((mu[:3] + 0.1 * torch.randn(3, d, dtype=D64), 2 * torch.randn(5, d, dtype=D64)))
    G = dense_reference(z, mu, covs, 0.02, 0.1, rho)
    torch.testing.assert_close(m.metric(z), G)
    torch.testing.assert_close(m.inverse(z), torch.linalg.inv(G))
    torch.testing.assert_close(m.logdet(z), torch.linalg.slogdet(G)[1])
    torch.testing.assert_close(m.log_volume(z), 0.5 * torch.linalg.slogdet(G)[1])
    v = torch.randn(8, d, dtype=D64)
    torch.testing.assert_close(m.quadratic(z, v), torch.einsum("ba,bac,bc->b", v, G, v))
    torch.testing.assert_close(m.solve(z, v), torch.linalg.solve(G, v))
    torch.testing.assert_close(m.metric_vector(z, v), torch.einsum("bac,bc->ba", G, v))
    # at a centroid its own weight is 1
    torch.testing.assert_close(m.weights(mu)[torch.arange(N), torch.arange(N)], torch.ones(N, dtype=D64))


def test_rho_is_the_largest_nearest_neighbour_distance():
    mu = torch.randn(9, 4, dtype=D64)
    nn = [min(float((mu[i] - mu[j]).norm()) for j in range(9) if j != i) for i in range(9)]
    assert float(max_min_distance(mu)) == pytest.approx(max(nn), rel=1e-12)
    assert float(ChadebecMetric(mu, torch.ones(9, 4, dtype=D64)).rho) == pytest.approx(max(nn), rel=1e-12)
    assert float(ChadebecMetric(mu, torch.ones(9, 4, dtype=D64), rho=0.3).rho) == pytest.approx(0.3)
    assert float(ChadebecMetric(mu, torch.ones(9, 4, dtype=D64), rho="median").rho) == pytest.approx(sorted(nn)[4], rel=1e-12)
    with pytest.raises(ValueError, match="rho"):
        ChadebecMetric(mu, torch.ones(9, 4, dtype=D64), rho="mean")


def test_from_encoder_and_posterior_moments():
    W = torch.randn(5, 2, dtype=D64)

    def encoder(x):
        return dist.Normal(x @ W, torch.nn.functional.softplus(x[:, :2]) + 0.1).to_event(1)

    x = torch.randn(12, 5, dtype=D64)
    m = ChadebecMetric.from_encoder(encoder, x, lam=1e-3)
    torch.testing.assert_close(m.mu, x @ W)
    torch.testing.assert_close(m.prec, (torch.nn.functional.softplus(x[:, :2]) + 0.1).pow(-2))
    loc, var = posterior_moments((x @ W, 2 * torch.ones(12, 2, dtype=D64)))
    torch.testing.assert_close(var, 4 * torch.ones(12, 2, dtype=D64))
    mvn = dist.MultivariateNormal(torch.zeros(3, 2, dtype=D64), torch.eye(2, dtype=D64).expand(3, 2, 2))
    assert posterior_moments(mvn)[1].shape == (3, 2, 2)


def test_errors_name_the_argument():
    mu = torch.randn(4, 2)
    with pytest.raises(ValueError, match="cov"):
        ChadebecMetric(mu, torch.ones(4, 3))
    with pytest.raises(ValueError, match="cov"):
        ChadebecMetric(mu, -torch.ones(4, 2))
    with pytest.raises(ValueError, match="lam"):
        ChadebecMetric(mu, torch.ones(4, 2), lam=0.0)
    with pytest.raises(ValueError, match="tau"):
        ChadebecMetric(mu, torch.ones(4, 2), tau=-1.0)
    with pytest.raises(ValueError, match="rho"):
        ChadebecMetric(mu[:1], torch.ones(1, 2))


@pytest.mark.statistical
def test_intrinsic_law_of_one_centroid_is_the_exact_gaussian():
    # one centroid, λ → 0: √det G = √det Σ⁻¹ · exp(-(d/2)(z-μ)ᵀΣ⁻¹(z-μ)/ρ²), i.e. z ~ N(μ, ρ² Σ / d)
    mu = torch.tensor([[1.0, -2.0]], dtype=D64)
    var = torch.tensor([[0.5, 2.0]], dtype=D64)
    m = ChadebecMetric(mu, var, lam=1e-12, rho=1.0)
    z = intrinsic_codes(m, 2000, mu, warmup_steps=100, post_steps=30, num_steps=8)
    std = (z - mu) / (var / 2).sqrt()
    # the final states of 2000 independent chains: independent draws, one KS test per coordinate
    for k in range(2):
        st.assert_ks(std[:, k], stats.norm.cdf, what=f"coordinate {k}", alpha=st.ALPHA / 2)
    # a sampler of the wrong law (det G instead of √det G: covariance halved) is rejected
    with pytest.raises(AssertionError, match="combined p"):
        st.assert_ks(std[:, 0] * 2**0.5, stats.norm.cdf, alpha=st.ALPHA / 2)
