"""PowerSpherical: normalisation, sampler against an exact rejection sampler, gradients, shapes."""

import math
import warnings

import pytest
import torch
from scipy import integrate, stats

from dlmppl.distributions.power_spherical import PowerSpherical
from tests.helpers import energy_distance_test, integrate_on_sphere, log_sphere_area, uniform_sphere


def _unit(d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g, dtype=dtype)
    return x / x.norm()


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_density_integrates_to_one(d):
    mu = _unit(d, seed=d)
    dist = PowerSpherical(mu, torch.tensor([0.0, 1.0, 4.0, 12.0], dtype=torch.float64), validate_args=False)
    est, se = integrate_on_sphere(dist.log_prob, d, num=400_000, batch_ndim=1)
    assert ((est - 1).abs() < 0.02).all(), est
    assert ((est - 1).abs() < 5 * se + 1e-12).all(), (est, se)


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


@pytest.mark.parametrize("d,kappa", [(2, 2.0), (3, 6.0), (8, 10.0)])
def test_samples_match_exact_rejection_sampler(d, kappa):
    mu = _unit(d, seed=d)
    n = 400
    g = torch.Generator().manual_seed(1)
    ref = _exact_reference_sampler(mu, kappa, n, g)
    ours = PowerSpherical(mu, torch.tensor(kappa, dtype=torch.float64)).sample((n,))
    assert energy_distance_test(ours, ref, num_permutations=50, generator=g) > 0.05
    if d == 3:  # the test has power: κ off by 50% is rejected
        wrong = PowerSpherical(mu, torch.tensor(1.5 * kappa, dtype=torch.float64)).sample((n,))
        assert energy_distance_test(wrong, ref, num_permutations=50, generator=g) < 0.05


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
    if kappa < 1e4 or dtype == torch.float64:
        assert stats.kstest(one_minus_t.numpy() / 2, stats.beta(b, a).cdf).pvalue > 0.01
    torch.testing.assert_close(dist.mean.double(), kappa / (d - 1 + kappa) * mu.double())
    # 1 - μᵀx has mean 2β/(α+β): relative check, meaningful also at large κ
    m, se = one_minus_t.mean(), one_minus_t.std() / math.sqrt(5000)
    assert abs(m - 2 * b / (a + b)) < 5 * se + (1e-5 if dtype == torch.float32 and kappa < 1e4 else 0)


def test_log_prob_gradcheck_float64():
    d = 5
    loc = _unit(d).expand(2, d).clone().requires_grad_(True)
    kappa = torch.tensor([0.3, 7.0], dtype=torch.float64, requires_grad=True)
    x = torch.stack([_unit(d, seed=s) for s in (1, 2)])
    assert torch.autograd.gradcheck(lambda m, k: PowerSpherical(m, k, validate_args=False).log_prob(x), (loc, kappa))


def test_rsample_gradients_match_closed_form():
    """E[μᵀx] = κ/(d-1+κ): mean pathwise gradient in κ is (d-1)/(d-1+κ)²; E[bᵀx] = κ/(d-1+κ) μᵀb:
    Riemannian gradient in μ is κ/(d-1+κ) (I - μμᵀ) b."""
    d, kappa, n = 4, 2.5, 20_000
    mu = _unit(d, seed=3)
    kk = torch.full((n,), kappa, dtype=torch.float64, requires_grad=True)
    gk = torch.autograd.grad((PowerSpherical(mu, kk).rsample() @ mu).sum(), kk)[0]
    assert abs(gk.mean().item() - (d - 1) / (d - 1 + kappa) ** 2) < 4 * gk.std().item() / math.sqrt(n)
    b = _unit(d, seed=4)
    m = mu.clone().requires_grad_(True)
    x = PowerSpherical(m, torch.tensor(kappa, dtype=torch.float64)).rsample((n,))
    (gmu,) = torch.autograd.grad((x @ b).mean(), m)
    proj = lambda v: v - (v @ mu) * mu
    torch.testing.assert_close(proj(gmu), kappa / (d - 1 + kappa) * proj(b), atol=0.02, rtol=0)


def test_entropy_matches_monte_carlo():
    dist = PowerSpherical(_unit(3, seed=5), torch.tensor([0.0, 1.0, 20.0], dtype=torch.float64))
    lp = dist.log_prob(dist.sample((20_000,)))
    se = lp.std(0) / math.sqrt(20_000)
    assert ((dist.entropy() + lp.mean(0)).abs() < 5 * se + 1e-9).all()
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
