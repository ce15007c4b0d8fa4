"""VonMisesFisher's sampler for d != 3 (issue 15, point 2): Wood's rejection with Ulrich's Beta
proposal, rounds for the missing draws only, and the projected-Gaussian tangent direction with its
fused backward.  Statistical assertions state their false-alarm rate (tests/statistical.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import dlmppl.distributions.von_mises_fisher as vmf_mod
from dlmppl.distributions import VonMisesFisher
from dlmppl.distributions.von_mises_fisher import bessel_iv_ratio
from tests import statistical as st
from tests.distributions.test_von_mises_fisher import (
    _assert_riemannian_loc_gradient,
    _fd_vs_pathwise,
)


def _unit(d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g, dtype=torch.float64)
    return (x / x.norm()).to(dtype)


def _cdf_one_minus_w(d, kappa):
    """Exact CDF of ``t = 1 - μᵀx``: density ∝ e^{-κt} (t(2-t))^{(d-3)/2} on [0, 2], by adaptive quadrature
    in ``u = κt`` (so that large κ keeps its scale), cumulated over the sorted points."""
    a = 0.5 * (d - 3)
    scale = max(kappa, 1.0)
    top = min(2 * scale, d + 400.0)  # beyond u = d + 400 the density is below e^{-300} of its peak

    def f(u):
        s = u / scale
        if not 0 < s < 2:
            return 0.0
        return math.exp(-kappa * s + a * (math.log(s) + math.log1p(-s / 2)))

    z = integrate.quad(f, 0, top, limit=400, epsabs=0, epsrel=1e-10)[0]

    def cdf(x):
        x = np.atleast_1d(np.asarray(x, dtype=float))
        order = np.argsort(x)
        out = np.empty_like(x)
        acc, prev = 0.0, 0.0
        for i in order:
            u = min(x[i] * scale, top)
            if u > prev:
                acc += integrate.quad(f, prev, u, limit=200, epsabs=0, epsrel=1e-10)[0]
                prev = u
            out[i] = min(acc / z, 1.0)
        return out

    return cdf


CASES = [(2, 3.0), (5, 0.7), (64, 10.0), (64, 300.0), (10, 1e5)]


@pytest.mark.statistical
@pytest.mark.parametrize("d,kappa", CASES)
def test_cosine_follows_its_exact_law_one_and_many_distributions(d, kappa):
    """KS of ``1 - μᵀx`` against its exact CDF (quadrature), false alarm 1e-4 in all (Bonferroni
    over three assertions): one distribution (a pool for one κ), 4000 distributions (a κ per draw,
    the rounds for missing draws), and the tangent direction's law (``e·v`` for a fixed unit
    tangent ``e``: ``(1 + e·v)/2 ~ Beta((d-2)/2, (d-2)/2)``; at d = 2, ``±1`` with equal odds)."""
    torch.manual_seed(st.seed(5))
    n = 4000
    mu = _unit(d, seed=d)
    k = torch.tensor(kappa, dtype=torch.float64)
    cdf = _cdf_one_minus_w(d, kappa)
    x1 = VonMisesFisher(mu, k).sample((n,))
    xb = VonMisesFisher(mu.expand(n, d), k.expand(n)).sample()
    for x, what in ((x1, "one distribution"), (xb, "a κ per draw")):
        assert ((x.norm(dim=-1) - 1).abs() < 10 * torch.finfo(x.dtype).eps).all()
        t = (x - mu).pow(2).sum(-1) / 2  # 1 - μᵀx without cancellation near the mode
        st.assert_ks(t, cdf, what=f"1 - μᵀx, d={d} κ={kappa}, {what}", alpha=st.ALPHA / 3)
    e = _unit(d, seed=99) - (_unit(d, seed=99) @ mu) * mu
    e = e / e.norm()
    tang = x1 - (x1 @ mu)[:, None] * mu
    ev = (tang @ e) / tang.norm(dim=-1)
    if d == 2:
        p = stats.binomtest(int((ev > 0).sum()), n, 0.5).pvalue  # exact two-sided binomial test
        st.assert_pvalues([p], "sign of the tangent, d=2", alpha=st.ALPHA / 3)
    else:
        beta = stats.beta((d - 2) / 2, (d - 2) / 2)
        st.assert_ks((ev + 1) / 2, beta.cdf, what=f"tangent direction, d={d}", alpha=st.ALPHA / 3)


def _wrong_beta_proposal(orig):
    """Broken on purpose: Ulrich's radius with the exponent 1/(d-2) instead of 2/(d-2), i.e. the
    proposal Beta((2d-3)/2, (2d-3)/2) in place of Beta((d-1)/2, (d-1)/2)."""

    def proposal(u, *args):
        u = u.clone()
        u[0] = 1 - torch.sqrt(1 - u[0])  # (1 - u')^{2/(d-2)} = (1 - u)^{1/(d-2)}
        return orig(u, *args)

    return proposal


@pytest.mark.statistical
def test_the_law_test_rejects_a_wrong_proposal(monkeypatch):
    """Test of the test: with a wrong Beta proposal, the KS test above (same sizes) fails."""
    monkeypatch.setattr(vmf_mod, "_wood_proposal", _wrong_beta_proposal(vmf_mod._wood_proposal))
    with pytest.raises(AssertionError, match="1 - μᵀx"):
        test_cosine_follows_its_exact_law_one_and_many_distributions(5, 0.7)


def _plain_cone_map(loc, t, n):
    """The map of ``_ConeMap`` by plain autograd operations (the reference for its fused backward)."""
    c = (n * loc).sum(-1, keepdim=True)
    pn = n - c * loc
    rho = torch.sqrt(t * (2 - t))
    return (1 - t)[..., None] * loc + (rho / pn.norm(dim=-1))[..., None] * pn


@pytest.mark.parametrize("d", [4, 40])
@pytest.mark.parametrize("loc_shape,sample_shape", [((), (7,)), ((5,), (5,)), ((5,), (3, 5)), ((1,), (4, 1))])
def test_fused_backward_equals_autograd(d, loc_shape, sample_shape):
    """The fused backward of the tangent map agrees with autograd through the same expression (float64)."""
    g = torch.Generator().manual_seed(d)
    loc = torch.randn(loc_shape + (d,), generator=g, dtype=torch.float64)
    loc = (loc / loc.norm(dim=-1, keepdim=True)).requires_grad_(True)
    t = (torch.rand(sample_shape, generator=g, dtype=torch.float64) * 1.9 + 0.05).requires_grad_(True)
    n = torch.randn(sample_shape + (d,), generator=g, dtype=torch.float64)
    weights = torch.randn(sample_shape + (d,), generator=g, dtype=torch.float64)
    x = vmf_mod._sample_from_cosine(loc, t, n.clone())
    ref = _plain_cone_map(loc, t, n)
    torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-14)
    got = torch.autograd.grad((x * weights).sum(), (loc, t))
    want = torch.autograd.grad((ref * weights).sum(), (loc, t))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.statistical
def test_gradients_at_d64_many_distributions():
    """d = 64, a (μ, κ) per draw (the benchmark's shape): the mean pathwise dE[μᵀx]/dκ is
    A'(κ) = 1 - A² - (d-1)A/κ, the Riemannian gradient of E[bᵀx] in μ is A (I - μμᵀ) b, and the
    pathwise dE[f]/dκ agrees with a finite difference made with common random numbers (false alarm
    1e-4 in all, Bonferroni over three)."""
    d, kappa, n = 64, 20.0, 20_000
    torch.manual_seed(st.seed(6))
    mu = _unit(d, seed=11)
    kk = torch.full((n,), kappa, dtype=torch.float64, requires_grad=True)
    gk = torch.autograd.grad((VonMisesFisher(mu.expand(n, d), kk).rsample() @ mu).sum(), kk)[0]
    a = bessel_iv_ratio(d / 2 - 1, torch.tensor(kappa, dtype=torch.float64)).item()
    da = 1 - a * a - (d - 1) * a / kappa
    st.assert_mc_estimate(gk.mean(), gk.std() / math.sqrt(n), da, what="dE[μᵀx]/dκ, d=64", alpha=st.ALPHA / 3)
    _assert_riemannian_loc_gradient(mu, kappa, _unit(d, seed=12), n, alpha=st.ALPHA / 3)
    gm, gs, fm, fs = _fd_vs_pathwise(d, kappa, n=n, h=0.5)
    st.assert_mc_estimate(gm - fm, math.sqrt(gs**2 + fs**2), 0.0, what="pathwise - finite difference, d=64",
                          alpha=st.ALPHA / 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [2, 4, 64])
def test_extreme_concentrations_and_empty_batches_give_finite_draws_and_gradients(d, dtype):
    """κ from 0 to 1e8 in one batch, float32 and float64: draws on the sphere and finite gradients to
    (μ, κ); empty sample and batch shapes give empty results."""
    kappa = torch.tensor([0.0, 1e-8, 1e-3, 1.0, 50.0, 1e4, 1e8], dtype=dtype, requires_grad=True)
    loc = _unit(d, seed=3, dtype=dtype).expand(7, d).clone().requires_grad_(True)
    x = VonMisesFisher(loc, kappa).rsample((300,))
    assert x.shape == (300, 7, d) and x.dtype == dtype
    assert ((x.norm(dim=-1) - 1).abs() < 10 * torch.finfo(dtype).eps).all()
    (x * torch.linspace(-1, 1, d, dtype=dtype)).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(kappa.grad).all()
    # at κ = 1e8 the draws sit at μ to within ~1e-4
    assert ((x[:, -1] @ loc[-1].detach()) > 1 - 1e-3).all()
    assert VonMisesFisher(loc[0], kappa[3]).rsample((0,)).shape == (0, d)
    empty = VonMisesFisher(loc[:0], kappa[:0]).rsample((5,))
    assert empty.shape == (5, 0, d)
    empty.sum().backward()
