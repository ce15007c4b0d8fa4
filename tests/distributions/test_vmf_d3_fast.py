"""VonMisesFisher at d = 3 (issue 15, point 2): closed-form normaliser, exact inverse-CDF
sampling, closed-form implicit gradient, and no host synchronisation on the hot path.

References are independent of the code under test: mpmath at high precision for the
closed forms, the exact CDF of the cosine and of the azimuth for the sampler.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch

import dlmppl.distributions.von_mises_fisher as vmf_mod
from dlmppl.distributions import VonMisesFisher
from dlmppl.distributions.von_mises_fisher import vmf_dw_dkappa, vmf_log_normalizer
from tests import statistical as st

KAPPAS = [0.0, 1e-300, 1e-12, 1e-6, 1e-3, 0.1, 0.2499, 0.25, 0.3, 0.49, 0.5, 1.0, 10.0, 300.0, 1e4, 1e8]


def _ref_log_c3(k):
    k = mpmath.mpf(k)
    if k == 0:
        return -mpmath.log(4 * mpmath.pi)
    return mpmath.log(k) - mpmath.log(2 * mpmath.pi) - mpmath.log(-mpmath.expm1(-2 * k)) - k


def _ref_a3(k):
    k = mpmath.mpf(k)
    return mpmath.mpf(0) if k == 0 else mpmath.coth(k) - 1 / k


def _ref_dw(t, k):
    t, k = mpmath.mpf(t), mpmath.mpf(k)
    if k == 0:
        return t * (2 - t) / 2
    return (t - 2 * mpmath.expm1(k * t) / mpmath.expm1(2 * k)) / k


def test_log_normalizer_d3_matches_mpmath_from_zero_to_1e8():
    with mpmath.workdps(700):
        ref = torch.tensor([float(_ref_log_c3(k)) for k in KAPPAS], dtype=torch.float64)
        dref = torch.tensor([-float(_ref_a3(k)) for k in KAPPAS], dtype=torch.float64)
    kappa = torch.tensor(KAPPAS, dtype=torch.float64, requires_grad=True)
    got = vmf_log_normalizer(3, kappa)
    torch.testing.assert_close(got, ref, rtol=1e-15, atol=0)
    (g,) = torch.autograd.grad(got.sum(), kappa)
    # the derivative -A_3(κ) = -(coth κ - 1/κ) keeps its relative accuracy as κ → 0
    torch.testing.assert_close(g, dref, rtol=1e-14, atol=0)
    got32 = vmf_log_normalizer(3, torch.tensor(KAPPAS, dtype=torch.float32))
    assert got32.dtype == torch.float32
    assert ((got32.double() - ref).abs() <= 1e-6 * ref.abs()).all()
    k = torch.tensor([1e-3, 0.05, 0.2, 2.5, 40.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: vmf_log_normalizer(3, k), (k,))
    assert torch.autograd.gradgradcheck(lambda k: vmf_log_normalizer(3, k), (k,))


def test_implicit_gradient_d3_matches_mpmath_including_w_near_minus_one():
    # t = 1 - w near 2 is where (t - 2 (e^{κt}-1)/(e^{2κ}-1))/κ cancels: the former code lost
    # 7 digits there (1.1e-7 relative at κ = 0.5, t = 2 - 1e-9)
    ts = [1e-12, 1e-6, 0.01, 0.5, 1.0, 1.5, 1.99, 2.0 - 1e-9]
    with mpmath.workdps(700):  # κ down to 1e-300: the difference is 300 digits below t
        ref = torch.tensor([[float(_ref_dw(t, k)) for t in ts] for k in KAPPAS], dtype=torch.float64)
    t = torch.tensor(ts, dtype=torch.float64)[None, :]
    k = torch.tensor(KAPPAS, dtype=torch.float64)[:, None]
    got = vmf_dw_dkappa(t, k, 3)
    rel = (got - ref).abs() / ref.abs()
    assert rel.max() < 1e-13, rel.max()


class _NoSync(RuntimeError):
    pass


@pytest.fixture
def no_host_sync(monkeypatch):
    """Every way a tensor's value can reach Python raises (a Python branch on a tensor)."""

    def boom(*args, **kwargs):
        raise _NoSync("host synchronisation on the hot path")

    for name in ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, boom)


@pytest.mark.parametrize("batch", [(), (7,)])
def test_d3_log_prob_rsample_and_backward_never_sync(no_host_sync, batch):
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(batch + (3,), generator=g, dtype=torch.float64)
    loc = (loc / loc.norm(dim=-1, keepdim=True)).requires_grad_()
    # κ across both branches of every closed form, zero included
    kappa = (torch.rand(batch, generator=g, dtype=torch.float64) * 0.4 if batch else torch.tensor(0.2, dtype=torch.float64))
    if batch:
        kappa = torch.cat([kappa[:3], torch.tensor([0.0, 3.0, 50.0, 1e6], dtype=torch.float64)])
    kappa = kappa.requires_grad_()
    d = VonMisesFisher(loc, kappa, validate_args=False)
    x = d.rsample((5,))
    (x.sum() + d.log_prob(x.detach()).sum()).backward()
    assert loc.grad is not None and kappa.grad is not None


def test_the_sync_fixture_catches_a_python_branch_on_a_tensor(no_host_sync):
    with pytest.raises(_NoSync):
        vmf_mod.vmf_log_normalizer(4, torch.tensor([1.0, 20.0], dtype=torch.float64))  # d ≠ 3: region choice on host


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_d3_empty_batches(dtype):
    loc = torch.zeros(0, 3, dtype=dtype)
    kappa = torch.zeros(0, dtype=dtype, requires_grad=True)
    d = VonMisesFisher(loc, kappa)
    x = d.rsample((2,))
    assert x.shape == (2, 0, 3) and x.dtype == dtype
    lp = d.log_prob(x)
    assert lp.shape == (2, 0) and lp.dtype == dtype
    (x.sum() + lp.sum()).backward()
    assert kappa.grad.shape == (0,)


@pytest.mark.statistical
@pytest.mark.parametrize("kappa", [1e-200, 0.2, 5.0, 1e6])
def test_d3_cosine_and_azimuth_follow_their_exact_laws(kappa):
    """KS tests (false alarm 1e-4 in all, Bonferroni over the two) of w = μᵀx against the exact
    CDF F(w) = (e^{κ(w+1)} - 1)/(e^{2κ} - 1) and of the azimuth of x about μ (in a frame built
    here by Gram-Schmidt, not by the sampler's Householder map) against the uniform law."""
    torch.manual_seed(st.seed(3))
    mu = torch.tensor([0.48, -0.6, 0.64], dtype=torch.float64)
    mu = mu / mu.norm()
    x = VonMisesFisher(mu, torch.tensor(kappa, dtype=torch.float64)).sample((4000,))
    assert ((x.norm(dim=-1) - 1).abs() < 8 * torch.finfo(torch.float64).eps).all()
    # exact law of t = 1 - w: P(t ≤ s) = (1 - e^{-κs}) / (1 - e^{-2κ})
    t = (x - mu).pow(2).sum(-1) / 2  # 1 - μᵀx without cancellation near the mode
    st.assert_ks(t, lambda s: -np.expm1(-kappa * s) / -math.expm1(-2 * kappa) if kappa > 1e-100 else s / 2,
                 what=f"1 - μᵀx, κ={kappa}", alpha=st.ALPHA / 2)
    e1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    e1 = e1 - (e1 @ mu) * mu
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(mu, e1)
    phi = torch.atan2(x @ e2, x @ e1)
    st.assert_ks(phi, lambda p: (p + math.pi) / (2 * math.pi), what=f"azimuth, κ={kappa}", alpha=st.ALPHA / 2)


@pytest.mark.statistical
def test_the_law_tests_reject_a_wrong_azimuth():
    """Test of the test: an azimuth drawn on [0, π) only, or κ off by 20%, is rejected."""
    torch.manual_seed(st.seed(3))
    mu = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    x = VonMisesFisher(mu, torch.tensor(5.0, dtype=torch.float64)).sample((4000,))
    phi = torch.atan2(x[:, 1].abs(), x[:, 0])  # folded: a broken sampler's azimuth
    with pytest.raises(AssertionError):
        st.assert_ks(phi, lambda p: (p + math.pi) / (2 * math.pi), alpha=st.ALPHA / 2)
    t = 1 - x[:, 2]
    with pytest.raises(AssertionError):
        st.assert_ks(t, lambda s: -np.expm1(-6.0 * s) / -math.expm1(-12.0), alpha=st.ALPHA / 2)


@pytest.mark.parametrize("d", [3, 64])
def test_cached_normalizer_is_never_stale(d):
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(d, generator=g, dtype=torch.float64)
    loc = loc / loc.norm()
    x = VonMisesFisher(loc, torch.tensor(4.0, dtype=torch.float64)).sample((6,))
    kappa = torch.tensor(4.0, dtype=torch.float64)
    dist = VonMisesFisher(loc, kappa, validate_args=False)  # float32 points cast to float64 below
    first = dist.log_prob(x)
    torch.testing.assert_close(dist.log_prob(x), first, rtol=0, atol=0)
    dist.concentration.mul_(2)  # in place: the version counter moves, the cache must not serve 4.0
    torch.testing.assert_close(dist.log_prob(x), VonMisesFisher(loc, torch.tensor(8.0, dtype=torch.float64)).log_prob(x))
    # float32 points against float64 parameters, then a κ that needs its gradient: recomputed
    torch.testing.assert_close(dist.log_prob(x.float()), dist.log_prob(x.float().double()))
    kg = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    dg = VonMisesFisher(loc, kg)
    (gk,) = torch.autograd.grad(dg.log_prob(x).sum(), kg)
    a = vmf_mod.vmf_mean_resultant_length(d, kg.detach())
    torch.testing.assert_close(gk, (x @ loc).sum() - 6 * a)
