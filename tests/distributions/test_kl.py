"""Closed-form KL divergences against Monte Carlo estimates E_p[log p - log q]."""

import math

import pytest
import torch
from torch.distributions import kl_divergence

import dlmppl.distributions.kl  # noqa: F401  (registers the KLs)
import dlmppl.manifolds as M
from dlmppl.distributions.power_spherical import PowerSpherical
from dlmppl.distributions.uniform import ManifoldUniform
from dlmppl.distributions.von_mises_fisher import VonMisesFisher
from tests import statistical as st


def _unit(d, seed):
    x = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm()


def _mc_kl(p, q, n=20_000):
    x = p.sample((n,))
    r = p.log_prob(x) - q.log_prob(x)
    return r.mean(0), r.std(0) / math.sqrt(n)


@pytest.mark.statistical
@pytest.mark.parametrize("family", [VonMisesFisher, PowerSpherical])
@pytest.mark.parametrize("d", [2, 3, 10])
def test_kl_to_uniform_matches_monte_carlo(family, d):
    p = family(_unit(d, 0), torch.tensor([0.0, 0.5, 5.0, 40.0], dtype=torch.float64))
    q = ManifoldUniform(M.Sphere(), (d,), batch_shape=(4,), dtype=torch.float64)
    kl = kl_divergence(p, q)
    assert kl.shape == (4,)
    mc, se = _mc_kl(p, q)
    # κ = 0: log p - log q is constant (se = 0), zero up to rounding
    st.assert_mc_estimate(mc, se, kl, atol=1e-10, what="KL(p ‖ uniform)", alpha=st.ALPHA / 2)
    assert kl[0].abs() < 1e-12 and (kl[1:] > 0).all()
    # reverse direction (uniform ‖ p)
    rkl = kl_divergence(q, p)
    rmc, rse = _mc_kl(q, p)
    st.assert_mc_estimate(rmc, rse, rkl, atol=1e-10, what="KL(uniform ‖ p)", alpha=st.ALPHA / 2)


@pytest.mark.statistical
def test_kl_vmf_vmf_matches_monte_carlo_and_broadcasts():
    d = 4
    p = VonMisesFisher(_unit(d, 1), torch.tensor([0.0, 2.0, 25.0], dtype=torch.float64))
    q = VonMisesFisher(_unit(d, 2), torch.tensor(3.0, dtype=torch.float64))
    kl = kl_divergence(p, q)
    assert kl.shape == (3,)
    mc, se = _mc_kl(p, q)
    st.assert_mc_estimate(mc, se, kl, atol=1e-10, what="KL(vMF ‖ vMF)")
    assert kl_divergence(p, p).abs().max() < 1e-10


def test_kl_uniform_must_be_on_a_sphere():
    p = VonMisesFisher(_unit(3, 0), torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="sphere"):
        kl_divergence(p, ManifoldUniform(M.Stiefel(), (3, 1)))
    with pytest.raises(ValueError, match="event shapes"):
        kl_divergence(p, ManifoldUniform(M.Sphere(), (4,)))
