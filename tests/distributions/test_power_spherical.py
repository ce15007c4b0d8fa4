"""PowerSpherical: normalisation, sampler against an exact rejection sampler, gradients, shapes."""

import math
import warnings

import pytest
import torch
from scipy import integrate, stats

from dlmppl.distributions.power_spherical import PowerSpherical
from tests import statistical as st
from tests.helpers import integrate_on_sphere_tilted, log_sphere_area, uniform_sphere


def _unit(d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g, dtype=dtype)
    return x / x.norm()


@pytest.mark.statistical
@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_density_integrates_to_one(d):
    """Importance sampled towards loc (tilt κ/2: (1 + w)^κ ≈ 2^κ e^{κ(w-1)/2} near w = 1); a
    standard error ≤ 0.004 gives power against a normaliser off by 3%."""
    mu = _unit(d, seed=d)
    kappa = torch.tensor([0.0, 1.0, 4.0, 12.0], dtype=torch.float64)
    dist = PowerSpherical(mu, kappa, validate_args=False)
    est, se = integrate_on_sphere_tilted(dist.log_prob, mu.expand(4, d), kappa / 2, num=200_000)
    st.assert_mc_estimate(est, se, 1.0, max_stderr=0.004, atol=1e-12, what=f"∫p dσ, d={d}")


def test_normalisation_by_quadrature():
    """|S^{d-2}| ∫_0^π C (1 + cos θ)^κ sin^{d-2}θ dθ = 1 to 1e-9, up to d = 500 and κ = 1e4."""
    for d in [2, 3, 7, 64, 500]:
        for k in [0.0, 0.5, 30.0, 1e4]:
            lc = PowerSpherical(_unit(d), torch.tensor(k, dtype=torch.float64)).log_normalizer().item()
            c = lc + log_sphere_area(d - 1) + k * math.log(2)  # (1+cos θ)^κ = 2^κ cos^{2κ}(θ/2)
            f = lambda th, k=k, d=d, c=c: math.exp(c + 2 * k * math.log(math.cos(th / 2)) + (d - 2) * math.log(math.sin(th))) if 0 < th < math.pi else 0.0
            peak = min(math.pi / 2, math.sqrt(4 * (d + 1) / (k + 1e-9)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mass = integrate.quad(f, 0, math.pi, points=[peak, 4 * peak] if peak < 0.7 else None, epsabs=0, epsrel=1e-11, limit=500)[0]
            assert abs(mass - 1) < 1e-9, (d, k, mass)


def test_kappa_zero_is_uniform():
    for d in [2, 3, 10, 300]:
        x = uniform_sphere(3, d)
        lp = PowerSpherical(_unit(d), torch.tensor(0.0, dtype=torch.float64)).log_prob(torch.cat([x, -_unit(d)[None]]))
        torch.testing.assert_close(lp, torch.full_like(lp, -log_sphere_area(d)), rtol=1e-12, atol=1e-10)


def _exact_reference_sampler(mu, kappa, n, generator):
    """Rejection from the uniform distribution, accepting with probability ((1 + μᵀx)/2)^κ."""
    out = []
    while sum(len(o) for o in out) < n:
        x = torch.randn(8 * n, mu.shape[-1], dtype=mu.dtype, generator=generator)
        x = x / x.norm(dim=-1, keepdim=True)
        acc = torch.rand(8 * n, dtype=mu.dtype, generator=generator) < ((1 + x @ mu) / 2) ** kappa
        out.append(x[acc])
    return torch.cat(out)[:n]


@pytest.mark.statistical
@pytest.mark.parametrize("d,kappa", [(2, 2.0), (3, 6.0), (8, 10.0)])
def test_samples_match_exact_rejection_sampler(d, kappa):
    """Energy test (false alarm 1e-4) against an exact rejection sampler; the same test rejects κ off
    by a factor 2 (statistic 28-37 permutation standard deviations out over 4 seeds)."""
    mu = _unit(d, seed=d)
    n = 1000
    g = torch.Generator().manual_seed(st.seed(1))
    ref = _exact_reference_sampler(mu, kappa, n, g)
    ours = PowerSpherical(mu, torch.tensor(kappa, dtype=torch.float64)).sample((n,))
    st.assert_same_law(ours, ref, what=f"PowerSpherical sampler d={d} κ={kappa}")
    if d == 3:  # the test has power: κ off by a factor 2 is rejected
        wrong = PowerSpherical(mu, torch.tensor(2 * kappa, dtype=torch.float64)).sample((n,))
        with pytest.raises(AssertionError, match="combined p"):
            st.assert_same_law(wrong, ref)


@pytest.mark.statistical
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d,kappa", [(2, 0.0), (3, 3.0), (50, 40.0), (3, 1e5), (300, 1e4)])
def test_cosine_marginal_is_beta(d, kappa, dtype):
    """(1 + μᵀx)/2 ~ Beta(α, β): KS test on 5000 draws, and E[x] = κ/(d-1+κ) μ."""
    mu = _unit(d, seed=2, dtype=dtype)
    dist = PowerSpherical(mu, torch.tensor(kappa, dtype=dtype))
    x = dist.sample((5000,))
    assert x.dtype == dtype and ((x.norm(dim=-1) - 1).abs() < 10 * torch.finfo(dtype).eps).all()
    one_minus_t = (1 - x.double() @ mu.double()).clamp_min(0)
    a, b = (d - 1) / 2 + kappa, (d - 1) / 2
    # float32 at κ ≥ 1e4: 1 - μᵀx ~ 1e-4 is resolved to ~1e-7 only: no KS test there
    ks = kappa < 1e4 or dtype == torch.float64
    if ks:
        st.assert_ks(one_minus_t / 2, stats.beta(b, a).cdf, what="(1 - μᵀx)/2 ~ Beta", alpha=st.ALPHA / 2)
    torch.testing.assert_close(dist.mean.double(), kappa / (d - 1 + kappa) * mu.double())
    # 1 - μᵀx has mean 2β/(α+β): relative check, meaningful also at large κ; float32 rounding of
    # x (≈ 6e-8 per coordinate) moves 1 - μᵀx by up to ~1e-5 at small κ
    st.assert_mc_estimate(one_minus_t.mean(), one_minus_t.std() / math.sqrt(5000), 2 * b / (a + b),
                          atol=1e-5 if dtype == torch.float32 and kappa < 1e4 else 0.0, what="E[1 - μᵀx]",
                          alpha=st.ALPHA / 2 if ks else st.ALPHA)


def test_log_prob_gradcheck_float64():
    d = 5
    loc = _unit(d).expand(2, d).clone().requires_grad_(True)
    kappa = torch.tensor([0.3, 7.0], dtype=torch.float64, requires_grad=True)
    x = torch.stack([_unit(d, seed=s) for s in (1, 2)])
    assert torch.autograd.gradcheck(lambda m, k: PowerSpherical(m, k, validate_args=False).log_prob(x), (loc, kappa))


@pytest.mark.statistical
def test_rsample_gradients_match_closed_form():
    """E[μᵀx] = κ/(d-1+κ): mean pathwise gradient in κ is (d-1)/(d-1+κ)²; E[bᵀx] = κ/(d-1+κ) μᵀb:
    Riemannian gradient in μ is κ/(d-1+κ) (I - μμᵀ) b (per-draw gradients: one loc row per draw)."""
    d, kappa, n = 4, 2.5, 20_000
    mu = _unit(d, seed=3)
    kk = torch.full((n,), kappa, dtype=torch.float64, requires_grad=True)
    gk = torch.autograd.grad((PowerSpherical(mu, kk).rsample() @ mu).sum(), kk)[0]
    st.assert_mc_estimate(gk.mean(), gk.std() / math.sqrt(n), (d - 1) / (d - 1 + kappa) ** 2, what="dE[μᵀx]/dκ",
                          alpha=st.ALPHA / 2)
    b = _unit(d, seed=4)
    m = mu.expand(n, d).clone().requires_grad_(True)
    x = PowerSpherical(m, torch.tensor(kappa, dtype=torch.float64)).rsample()
    (g,) = torch.autograd.grad((x @ b).sum(), m)
    pg = g - (g @ mu)[:, None] * mu
    st.assert_mc_estimate(pg.mean(0), pg.std(0) / math.sqrt(n), kappa / (d - 1 + kappa) * (b - (b @ mu) * mu),
                          max_stderr=0.005, atol=1e-12, what="Riemannian gradient in loc", alpha=st.ALPHA / 2)


@pytest.mark.statistical
def test_entropy_matches_monte_carlo():
    dist = PowerSpherical(_unit(3, seed=5), torch.tensor([0.0, 1.0, 20.0], dtype=torch.float64))
    lp = dist.log_prob(dist.sample((20_000,)))
    st.assert_mc_estimate(-lp.mean(0), lp.std(0) / math.sqrt(20_000), dist.entropy(), atol=1e-9, what="entropy")
    assert abs(dist.entropy()[0].item() - log_sphere_area(3)) < 1e-12


def test_shapes_expand_broadcasting():
    loc = torch.stack([_unit(3, seed=s, dtype=torch.float32) for s in range(4)]).reshape(4, 1, 3)
    dist = PowerSpherical(loc, torch.tensor([0.5, 1.0, 2.0, 70.0, 0.0]))
    assert dist.batch_shape == (4, 5) and dist.event_shape == (3,)
    x = dist.rsample((2,))
    assert x.shape == (2, 4, 5, 3) and x.dtype == torch.float32
    assert dist.log_prob(x).shape == (2, 4, 5) and dist.entropy().shape == (4, 5)
    e = dist.expand((7, 4, 5))
    assert e.batch_shape == (7, 4, 5) and e.sample().shape == (7, 4, 5, 3)
    torch.testing.assert_close(e.log_prob(x[0]), dist.log_prob(x[0]).expand(7, 4, 5))


@pytest.mark.parametrize(
    "loc,kappa,name",
    [
        (torch.tensor([1.0, 1.0, 0.0]), 1.0, "loc"),
        (torch.tensor([float("nan"), 0.0, 1.0]), 1.0, "loc"),
        (torch.tensor([0.0, 0.0, 1.0]), -0.5, "concentration"),
        (torch.tensor([0.0, 0.0, 1.0]), float("nan"), "concentration"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(loc, kappa, name):
    with pytest.raises(ValueError, match=name):
        PowerSpherical(loc, torch.tensor(kappa), validate_args=True)
