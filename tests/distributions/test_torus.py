"""Distributions on the flat torus T^n (issue 13): ManifoldUniform, TorusVonMises / OnTorus
(Pyro's VonMises and SineBivariateVonMises declared on the torus) and the torus' WrappedNormal.

Each density integrates to 1 (the rectangle rule on the periodic grid is spectrally accurate),
matches an independent reference (scipy.stats.vonmises; a 401-term wrapped sum of
scipy.stats.norm), and each sampler passes an energy two-sample test (false alarm
``st.ALPHA``) against an independent numpy/scipy sampler, on the embedding
``θ ↦ (cos θ, sin θ)`` (a law on the torus is determined by the law of its embedding).
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as pd
import pytest
import torch
from scipy import stats

from dlmppl import constraints
from dlmppl.distributions import (
    ManifoldUniform,
    OnTorus,
    TorusVonMises,
    TorusWrappedNormal,
    WrappedNormal,
    wrapped_normal_log_density,
)
from dlmppl.geometry.torus import Torus, wrap_angle
from tests import statistical as st

D = torch.float64
PI = math.pi
T = Torus()


def _embed(theta):
    theta = torch.as_tensor(np.asarray(theta) if not torch.is_tensor(theta) else theta, dtype=D)
    return torch.cat([torch.cos(theta), torch.sin(theta)], -1)


def _grid(m, n=1):
    g = torch.linspace(-PI, PI, m + 1, dtype=D)[1:]  # (-π, π]
    if n == 1:
        return g.unsqueeze(-1)
    a, b = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([a, b], -1).reshape(-1, 2)


def _wn_reference(delta, scale, terms=200):
    """``Σ_{|k| ≤ 200} N(δ + 2πk; 0, σ)`` with scipy (independent of dlmppl)."""
    k = np.arange(-terms, terms + 1)[:, None]
    return stats.norm.pdf(np.asarray(delta)[None, :] + 2 * PI * k, 0.0, scale).sum(0)


# ---------------------------------------------------------------------------------- densities


@pytest.mark.parametrize("scale", [0.03, 0.5, 1.5, 1.999, 2.0, 3.0, 10.0])
def test_wrapped_normal_density_matches_the_wrapped_sum_and_integrates_to_one(scale):
    loc = torch.tensor([PI - 0.2], dtype=D)
    d = WrappedNormal(T, loc, torch.tensor(scale, dtype=D))
    assert isinstance(d, TorusWrappedNormal)
    th = _grid(4000)
    p = d.log_prob(th).exp()
    ref = _wn_reference(wrap_angle(th - loc).squeeze(-1).numpy(), scale)
    np.testing.assert_allclose(p.numpy(), ref, rtol=1e-11, atol=1e-300)
    assert abs(float(p.sum()) * 2 * PI / th.shape[0] - 1) < 1e-10


def test_wrapped_normal_diagonal_density_on_t2_is_the_product_and_integrates_to_one():
    loc = torch.tensor([PI - 0.1, -PI + 0.3], dtype=D)
    scale = torch.tensor([0.4, 2.5], dtype=D)
    d = WrappedNormal(T, loc, scale)
    th = _grid(300, 2)
    p = d.log_prob(th).exp()
    dl = wrap_angle(th - loc).numpy()
    ref = _wn_reference(dl[:, 0], 0.4) * _wn_reference(dl[:, 1], 2.5)
    np.testing.assert_allclose(p.numpy(), ref, rtol=1e-11)
    assert abs(float(p.sum()) * (2 * PI / 300) ** 2 - 1) < 1e-10


def test_wrapped_normal_log_density_is_smooth_in_scale_and_float32_agrees():
    delta = torch.tensor([-3.0, -1.0, 0.0, 2.0, PI], dtype=D)
    s = torch.tensor([1.9, 1.99, 1.999999, 2.0, 2.01], dtype=D)
    lp = wrapped_normal_log_density(delta[:, None], s[None, :])  # both series across the switch at σ = 2
    ref = np.log(np.stack([_wn_reference(delta.numpy(), float(si)) for si in s], -1))
    np.testing.assert_allclose(lp.numpy(), ref, rtol=1e-12)
    lp32 = wrapped_normal_log_density(delta[:, None].float(), s[None, :].float())
    assert lp32.dtype == torch.float32
    np.testing.assert_allclose(lp32.numpy(), ref, rtol=2e-6, atol=2e-6)
    loc = torch.tensor([2.9, -0.4], dtype=D, requires_grad=True)
    sc = torch.tensor([0.3, 2.5], dtype=D, requires_grad=True)
    x = torch.tensor([[-3.0, 1.0], [PI, -PI]], dtype=D)
    assert torch.autograd.gradcheck(lambda a, b: WrappedNormal(T, a, b, validate_args=False).log_prob(x), (loc, sc))


@pytest.mark.parametrize("kappa", [0.3, 4.0, 60.0])
def test_torus_von_mises_matches_scipy_and_integrates_to_one(kappa):
    loc = torch.tensor([PI - 0.05, -1.0], dtype=D)
    d = TorusVonMises(loc, kappa)
    th = _grid(200, 2)
    lp = d.log_prob(th)
    ref = stats.vonmises.logpdf(th[:, 0].numpy(), kappa, loc=float(loc[0])) + stats.vonmises.logpdf(
        th[:, 1].numpy(), kappa, loc=float(loc[1])
    )
    np.testing.assert_allclose(lp.numpy(), ref, rtol=1e-9, atol=1e-9)
    assert abs(float(lp.exp().sum()) * (2 * PI / 200) ** 2 - 1) < 1e-9


def _sine_log_density(th, mu, nu, k1, k2, lam):
    """Unnormalised sine-model log density (Singh, Hnizdo & Demchuk 2002), numpy."""
    phi, psi = th[..., 0], th[..., 1]
    return k1 * np.cos(phi - mu) + k2 * np.cos(psi - nu) + lam * np.sin(phi - mu) * np.sin(psi - nu)


SINE = (PI - 0.3, -PI + 0.2, 2.0, 3.0, 1.5)


def test_sine_bivariate_von_mises_on_the_torus_integrates_to_one_and_matches_the_formula():
    d = OnTorus(pd.SineBivariateVonMises(*[torch.tensor(v, dtype=D) for v in SINE]))
    assert d.event_shape == (2,) and d.batch_shape == ()
    assert isinstance(d.support, constraints.ManifoldConstraint) and d.support.event_dim == 1
    th = _grid(300, 2)
    lp = d.log_prob(th)
    # Pyro's normaliser is a Bessel series with torch's polynomial approximations (~1e-7 relative)
    assert abs(float(lp.exp().sum()) * (2 * PI / 300) ** 2 - 1) < 1e-6
    # the same density up to the normaliser (the quadrature above fixes it)
    diff = lp.numpy() - _sine_log_density(th.numpy(), *SINE)
    assert np.ptp(diff) < 1e-9
    # read modulo 2π: -π and π are one point, 2π + θ is θ
    torch.testing.assert_close(d.log_prob(torch.tensor([-PI, 0.3], dtype=D)), d.log_prob(torch.tensor([PI, 0.3], dtype=D)))


def test_manifold_uniform_on_the_torus():
    u = ManifoldUniform(Torus(3), (3,), dtype=D)
    x = u.sample((5000,))
    assert x.shape == (5000, 3) and bool(constraints.manifold(T).check(x).all())
    torch.testing.assert_close(u.log_prob(x[:4]), torch.full((4,), -3 * math.log(2 * PI), dtype=D))
    for j in range(3):
        st.assert_ks(x[:, j], stats.uniform(-PI, 2 * PI).cdf, what=f"uniform coordinate {j}", alpha=st.ALPHA / 3)
    with pytest.raises(ValueError, match="event_shape"):
        ManifoldUniform(Torus(3), (2,))


# ---------------------------------------------------------------------------------- samplers


@pytest.mark.statistical
def test_wrapped_normal_sampler_against_numpy_and_a_broken_scale_is_refused():
    loc = torch.tensor([PI - 0.2, -PI + 0.1], dtype=D)
    scale = torch.tensor([0.7, 1.6], dtype=D)
    n = 1500
    x = WrappedNormal(T, loc, scale).rsample((n,))
    assert bool(constraints.manifold(T).check(x).all())
    rng = np.random.default_rng(st.seed(1))
    y = np.angle(np.exp(1j * (loc.numpy() + scale.numpy() * rng.standard_normal((n, 2)))))
    st.assert_same_law(_embed(x), _embed(y), what="torus wrapped normal vs numpy")
    # test of the test: a sampler with the second scale 45% too small is refused
    bad = np.angle(np.exp(1j * (loc.numpy() + np.array([0.7, 0.9]) * rng.standard_normal((n, 2)))))
    with pytest.raises(AssertionError):
        st.assert_same_law(_embed(x), _embed(bad))


@pytest.mark.statistical
def test_torus_von_mises_sampler_against_scipy():
    loc = torch.tensor([PI - 0.1, 0.5], dtype=D)
    kappa = torch.tensor([3.0, 0.8], dtype=D)
    n = 1500
    x = TorusVonMises(loc, kappa).sample((n,))
    assert bool(((x > -PI) & (x <= PI)).all())  # canonical angles (Pyro's own draws are in [-π, π))
    y = np.stack([stats.vonmises.rvs(float(k), loc=float(m), size=n, random_state=st.seed(2 + j))
                  for j, (m, k) in enumerate(zip(loc, kappa, strict=True))], -1)
    st.assert_same_law(_embed(x), _embed(y), what="TorusVonMises vs scipy")


@pytest.mark.statistical
def test_sine_bivariate_sampler_against_an_inverse_cdf_grid_sampler():
    d = OnTorus(pd.SineBivariateVonMises(*[torch.tensor(v, dtype=D) for v in SINE]))
    n = 1500
    x = d.sample((n,))
    assert x.shape == (n, 2) and bool(constraints.manifold(T).check(x).all())
    # independent sampler: cells of a 1000 x 1000 grid drawn by their exact mass (numpy), then a
    # uniform point in the cell (its error, the density's variation within a cell, is ~1e-5)
    m = 1000
    edges = np.linspace(-PI, PI, m + 1)
    c = 0.5 * (edges[1:] + edges[:-1])
    a, b = np.meshgrid(c, c, indexing="ij")
    logp = _sine_log_density(np.stack([a, b], -1), *SINE).reshape(-1)
    p = np.exp(logp - logp.max())
    rng = np.random.default_rng(st.seed(3))
    cell = rng.choice(p.size, size=n, p=p / p.sum())
    h = 2 * PI / m
    y = np.stack([c[cell // m], c[cell % m]], -1) + h * (rng.random((n, 2)) - 0.5)
    st.assert_same_law(_embed(x), _embed(y), what="SineBivariateVonMises on T^2 vs grid sampler")


def _sine_features(th, mu, nu):
    phi, psi = th[..., 0] - mu, th[..., 1] - nu
    return np.stack([np.cos(phi), np.sin(phi), np.cos(psi), np.sin(psi), np.sin(phi) * np.sin(psi),
                     np.cos(2 * phi + psi)], -1)


@pytest.mark.statistical
def test_sine_bivariate_sampler_matches_the_densitys_moments():
    """Means of six features of 20000 draws against their quadrature values on a 1200² grid
    (midpoint rule: exact to round-off for this smooth periodic density), false alarm ALPHA/2;
    a law with 0.8 λ is refused at ALPHA/2 (its E[sin φ sin ψ] differs by ~20 standard errors).
    Pyro 1.9.2's own ``SineBivariateVonMises.sample`` fails this test (z ≈ -40 on E[cos φ])."""
    mu, nu, k1, k2, lam = SINE
    m = 1200
    c = np.linspace(-PI, PI, m, endpoint=False) + PI / m
    a, b = np.meshgrid(c, c, indexing="ij")
    th = np.stack([a, b], -1)
    logp = _sine_log_density(th, 0.0, 0.0, k1, k2, lam)
    w = np.exp(logp - logp.max())
    truth = (_sine_features(th, 0.0, 0.0) * (w / w.sum())[..., None]).sum((0, 1))
    pyro.set_rng_seed(st.seed(7))
    d = OnTorus(pd.SineBivariateVonMises(*[torch.tensor(v, dtype=D) for v in SINE]))
    x = d.sample((20000,)).numpy()
    st.assert_mean(_sine_features(x, mu, nu), truth, iid=True, alpha=st.ALPHA / 2,
                   what="SineBivariateVonMises feature means")
    wrong = OnTorus(pd.SineBivariateVonMises(*[torch.tensor(v, dtype=D) for v in (mu, nu, k1, k2, 0.8 * lam)]))
    with pytest.raises(AssertionError):
        st.assert_mean(_sine_features(wrong.sample((20000,)).numpy(), mu, nu), truth, iid=True, alpha=st.ALPHA / 2)


def test_sine_bivariate_sampler_shapes_and_strongly_bimodal_case():
    d = pd.SineBivariateVonMises(torch.zeros(3, dtype=D), torch.zeros(3, dtype=D), torch.tensor([1.0, 0.5, 50.0], dtype=D),
                                 torch.tensor([2.0, 0.5, 80.0], dtype=D), torch.tensor([-4.0, 6.0, 30.0], dtype=D))
    x = OnTorus(d).sample((5, 4))
    assert x.shape == (5, 4, 3, 2) and x.dtype == D and bool(torch.isfinite(x).all())
    assert OnTorus(d).sample((0,)).shape == (0, 3, 2)
    # λ² ≫ κ₁κ₂: φ's marginal is bimodal at ±acos(κ₁κ₂/λ²)-ish; draws in both modes, symmetric in sin φ
    y = OnTorus(pd.SineBivariateVonMises(*[torch.tensor(v, dtype=D) for v in (0.0, 0.0, 0.5, 0.5, 8.0)])).sample((4000,))
    frac = float((torch.sin(y[:, 0]) > 0).double().mean())
    assert 0.45 < frac < 0.55  # the two modes are mirror images: 0.5 ± 8 sd


# ---------------------------------------------------------------------------------- API


def test_shapes_expand_empty_batches_and_rsample_gradients():
    loc = torch.zeros(4, 3, dtype=D)
    d = WrappedNormal(T, loc, torch.full((4, 1), 0.5, dtype=D))
    assert d.batch_shape == (4,) and d.event_shape == (3,)
    e = d.expand((2, 4))
    assert isinstance(e, TorusWrappedNormal) and e.sample((5,)).shape == (5, 2, 4, 3)
    assert d.log_prob(torch.zeros(7, 1, 3, dtype=D)).shape == (7, 4)
    empty = WrappedNormal(T, torch.zeros(0, 2), torch.ones(0, 1))
    assert empty.sample((3,)).shape == (3, 0, 2) and empty.log_prob(torch.zeros(0, 2)).shape == (0,)
    v = TorusVonMises(torch.zeros(0, 2), 1.0)
    assert v.batch_shape == (0,) and v.log_prob(torch.zeros(0, 2)).shape == (0,)
    assert TorusVonMises.infer_shapes(loc=(5, 2), concentration=(1,)) == ((5,), (2,))
    tv = TorusVonMises(torch.zeros(2, dtype=D), torch.ones(2, dtype=D)).expand((6,))
    assert isinstance(tv, TorusVonMises) and tv.sample().shape == (6, 2) and tv.loc.shape == (6, 2)
    # OnTorus reads a scalar law's last batch dimension as the torus coordinates
    o = OnTorus(pd.VonMises(torch.zeros(5, 3), torch.ones(5, 3)))
    assert o.batch_shape == (5,) and o.event_shape == (3,) and o.manifold.n == 3
    assert o.expand((2, 5)).sample().shape == (2, 5, 3)
    # rsample: differentiable through the wrap (derivative 1)
    a = torch.tensor([PI - 0.01, 0.0], dtype=D, requires_grad=True)
    s = torch.tensor([0.2, 0.3], dtype=D, requires_grad=True)
    z = WrappedNormal(T, a, s).rsample((64,))
    z.sum().backward()
    torch.testing.assert_close(a.grad, torch.full((2,), 64.0, dtype=D))
    assert torch.isfinite(s.grad).all()
    z32 = WrappedNormal(T, torch.zeros(2), torch.tensor(0.3)).rsample((3,))
    assert z32.dtype == torch.float32


def test_arguments_are_validated_with_their_names():
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(T, torch.zeros(2), torch.tensor([0.1, -1.0]))
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(T, torch.zeros(2), torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="loc"):
        WrappedNormal(T, torch.tensor([4.0, 0.0]), 0.3)
    with pytest.raises(ValueError, match="concentration"):
        TorusVonMises(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="loc"):
        TorusVonMises(torch.tensor([float("inf"), 0.0]), 1.0)
    with pytest.raises(ValueError, match="loc"):
        TorusVonMises(torch.tensor(0.0), 1.0)
    with pytest.raises(ValueError, match="base"):
        OnTorus(pd.VonMises(0.0, 1.0))  # a scalar law with no batch dimension: which n?
    with pytest.raises(ValueError, match="base"):
        OnTorus(pd.Poisson(torch.ones(2)))
    with pytest.raises(ValueError, match="base"):
        OnTorus(pd.Normal(torch.zeros(2, 2), 1.0).to_event(2))
    d = TorusVonMises(torch.zeros(2), 1.0, validate_args=True)
    with pytest.raises(ValueError, match="value"):
        d.log_prob(torch.tensor([4.0, 0.0]))
    with pytest.raises(ValueError, match="value"):
        d.log_prob(torch.zeros(3))
