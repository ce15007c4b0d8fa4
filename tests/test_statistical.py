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


def test_mc_estimate_atol_and_one_sided_bound():
    st.assert_mc_estimate(1.0 + 1e-11, 0.0, 1.0, atol=1e-10)  # a deterministic error only
    with pytest.raises(AssertionError):
        st.assert_mc_estimate(1.0 + 1e-9, 0.0, 1.0, atol=1e-10)
    # one-sided: far above the lower bound passes, 6 standard errors below fails
    st.assert_mc_bound(torch.tensor([3.0, 0.1]), 0.1, lower=0.0)
    with pytest.raises(AssertionError, match="below"):
        st.assert_mc_bound(-0.6, 0.1, lower=0.0)
    with pytest.raises(AssertionError, match="above"):
        st.assert_mc_bound(0.6, 0.1, upper=0.0)
    # calibrated under the null: 2000 one-sided checks of N(0, 1) means at alpha = 0.05
    z = torch.randn(2000, 50, dtype=torch.float64)
    fails = 0
    for row in z:
        try:
            st.assert_mc_bound(row.mean(), 1 / math.sqrt(50), lower=0.0, alpha=0.05)
        except AssertionError:
            fails += 1
    # the slack √1.5 makes the check conservative: P(Z < -1.2247·1.645) = 0.022
    assert fails < 0.05 * 2000 - 3 * math.sqrt(2000 * 0.05 * 0.95), fails


def test_cdf_at_known_quantiles_of_a_chain():
    from scipy import stats

    z = _ar1(20000, 0.9)[0]
    levels = np.array([0.1, 0.5, 0.9])
    st.assert_cdf_at(z, stats.norm.ppf(levels), levels)
    # a chain with a 50% too large spread moves the CDF at the 10% and 90% points by 0.097, ≈ 14 MCSE
    with pytest.raises(AssertionError, match="MCSE"):
        st.assert_cdf_at(1.5 * z, stats.norm.ppf(levels), levels)
    st.assert_cdf_at(torch.randn(4000), 0.0, 0.5, iid=True)


def test_binomial_rate_and_majority():
    assert st.binomial_pvalue(0, 100, at_most=0.01) == pytest.approx(1.0)
    assert st.binomial_pvalue(5, 10, at_most=0.5) == pytest.approx(0.623046875)
    assert st.binomial_pvalue(5, 10, at_least=0.5) == pytest.approx(0.623046875)
    st.assert_rate(3, 200, at_most=0.02)
    with pytest.raises(AssertionError, match="rate"):
        st.assert_rate(20, 200, at_most=0.02)
    with pytest.raises(ValueError):
        st.binomial_pvalue(1, 2)
    # 2 of 3 seeds with a per-seed failure rate of 5%: 3 q² (1 - q) + q³
    assert st.majority_false_alarm(0.05, 3, 2) == pytest.approx(3 * 0.05**2 * 0.95 + 0.05**3)
    outs = st.majority(lambda i: (i != 1, i), n=3, need=2)
    assert [o[1] for o in outs] == [0, 1, 2]
    assert len(st.majority(lambda i: True, n=3, need=2)) == 2  # decided after two runs
    with pytest.raises(AssertionError, match="1 of 3 seeds run"):
        st.majority(lambda i: i == 0, n=3, need=2)
    with pytest.raises(AssertionError, match="0 of 2 seeds run"):
        st.majority(lambda i: False, n=3, need=2)  # decided after two failures


def test_assert_same_law_can_reject_below_the_default_floor():
    """With a Bonferroni share ``alpha < 1e-4`` the permutation budget grows so that the
    smallest p-value is below ``alpha``: clearly different laws are refused (with the fixed
    budget of 9999 permutations the p-value could not go below 1e-4 and this passed)."""
    x, y = torch.randn(400, 3), 1.5 * torch.randn(400, 3)
    with pytest.raises(AssertionError):
        st.assert_same_law(x, y, alpha=st.ALPHA / 4)
