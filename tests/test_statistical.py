"""The statistical-test helpers (tests/statistical.py): calibrated under the null, powerful against
a wrong law, thinning by the autocorrelation time, Fisher's combination."""

import math

import numpy as np
import pytest
import torch

from tests import statistical as st

pytestmark = pytest.mark.statistical


def _ar1(n, rho, chains=1):
    z = torch.zeros(chains, n, dtype=torch.float64)
    e = torch.randn(chains, n, dtype=torch.float64)
    z[:, 0] = e[:, 0]
    for i in range(1, n):
        z[:, i] = rho * z[:, i - 1] + math.sqrt(1 - rho * rho) * e[:, i]
    return z


def test_energy_test_pvalue_is_uniform_under_the_null():
    # 400 null replicates: P(p ≤ a) ≈ a (binomial bounds at false alarm 1e-6)
    ps = np.array([st.energy_test(torch.randn(25, 2), torch.randn(25, 2)) for _ in range(400)])
    for a in (0.05, 0.2, 0.5):
        k = (ps <= a).sum()
        sd = math.sqrt(400 * a * (1 - a))
        assert abs(k - 400 * a) < 5 * sd, (a, k)


def test_energy_test_rejects_a_wrong_scale_and_reaches_its_floor():
    p = st.energy_test(torch.randn(400, 3), 1.5 * torch.randn(400, 3))
    assert p == pytest.approx(1e-4)  # no permutation beats it: the smallest p-value
    with pytest.raises(AssertionError, match="combined p"):
        st.assert_same_law(torch.randn(400, 3), 1.5 * torch.randn(400, 3))
    with pytest.raises(ValueError):
        st.energy_test(torch.randn(1, 2), torch.randn(5, 2))


def test_thinning_by_autocorrelation_time():
    rho = 0.9  # τ = (1 + ρ)/(1 - ρ) = 19
    z = _ar1(20000, rho)
    tau = st.iat(z[0])
    assert 14 < tau < 25
    kept = st.thin(z[0])
    assert len(kept) == pytest.approx(20000 / math.ceil(2 * tau), abs=1)
    # the kept draws are nearly independent: lag-1 correlation ρ^(2τ) ≈ 0.02 (sd of its estimate 1/√n)
    k = kept.numpy()
    assert abs(np.corrcoef(k[:-1], k[1:])[0, 1]) < 0.02 + 5 / math.sqrt(len(k))
    both = st.thin(_ar1(4000, rho, chains=2), chains=True)
    assert both.dim() == 1 and 100 < len(both) < 500  # 8000 draws / 2τ ≈ 210; ESS estimates of 4000-draw chains vary


def test_assert_same_law_on_a_chain_uses_the_thinned_draws():
    z = _ar1(20000, 0.9)[0].unsqueeze(-1)
    st.assert_same_law(z, torch.randn(5000, 1, dtype=torch.float64), x_chain=True)
    with pytest.raises(AssertionError, match="independent draws"):
        st.assert_same_law(_ar1(500, 0.95)[0].unsqueeze(-1), torch.randn(500, 1), x_chain=True)


def test_assert_mean_uses_the_mcse_and_has_power():
    z = _ar1(20000, 0.9)[0]
    st.assert_mean(z, 0.0)
    # iid-treatment of a chain would understate the MCSE: a shift of 10 true MCSEs is caught
    shift = 10 * math.sqrt(19 / 20000)
    with pytest.raises(AssertionError, match="MCSE"):
        st.assert_mean(z + shift, 0.0)
    with pytest.raises(AssertionError, match="power"):
        st.assert_mean(torch.randn(10), 0.0, iid=True, max_mcse=0.01)


def test_fisher_combination_and_mc_estimate():
    assert st.fisher([1.0, 1.0]) == pytest.approx(1.0)
    assert st.fisher([0.01, 0.01]) == pytest.approx(0.01 * 0.01 * (1 - math.log(0.01 * 0.01)))
    with pytest.raises(AssertionError):
        st.assert_pvalues([1e-3, 1e-3, 1e-3])
    st.assert_pvalues([0.01, 0.5, 0.3])
    st.assert_mc_estimate(torch.tensor([1.001, 0.999]), torch.tensor([0.001, 0.001]), 1.0, max_stderr=0.002)
    with pytest.raises(AssertionError, match="standard errors"):
        st.assert_mc_estimate(1.01, 0.001, 1.0)


def test_seeds_follow_the_environment(monkeypatch):
    monkeypatch.setenv("DLMPPL_TEST_SEED", "7")
    assert st.base_seed() == 7 and st.seed(3) == 7003
    a = st.replicates(lambda i: torch.rand(()).item(), n=2)
    b = st.replicates(lambda i: torch.rand(()).item(), n=2)
    assert a == b and a[0] != a[1]
