"""FlowMatchingPrior (Chen & Lipman 2024): divergences, densities and samples against independent references.

References: closed-form Riemannian divergences (Laplacians of known functions, the chart formula
``div v = |g|^{-1/2} ∂_i(|g|^{1/2} v^i)`` for the conformal ball, an isometry to the hyperboloid),
a flow with a closed-form solution and density on S² (the pull to the north pole,
``tan(θ_t/2) = tan(θ_0/2) e^{-at}``, a stereographic dilation), quadrature of the density, and
two-sample tests against exact samplers of the target mixtures (tests/statistical.py).
"""

import math

import geoopt
import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import dlmppl.manifolds as m
from dlmppl.constraints import ManifoldConstraint
from dlmppl.distributions import VonMisesFisher, WrappedNormal
from dlmppl.models import FlowMatchingPrior, FlowPriorDistribution, ManifoldVAE
from tests import statistical as st

# ------------------------------------------------------------------------------------------ targets


def _direction(polar, azimuth):
    p, a = math.radians(polar), math.radians(azimuth)
    return [math.sin(p) * math.cos(a), math.sin(p) * math.sin(a), math.cos(p)]


# 70° to 125° apart (modes of angular width 8° to 13°); not a spherical design, so the mixture's
# mean is not the uniform law's 0 (a tetrahedron would match the uniform law's first two moments,
# and the energy test would then need many more draws to tell them apart)
_LOCS = torch.tensor([_direction(0, 0), _direction(70, 0), _direction(70, 140), _direction(125, 250)])
_KAPPA = torch.tensor([20.0, 30.0, 40.0, 50.0])


def vmf_mixture(n):
    """Equal-weight mixture of 4 vMF on S² at :data:`_LOCS`, κ = 20..50."""
    c = torch.randint(0, 4, (n,))
    return VonMisesFisher(_LOCS[c], _KAPPA[c]).sample()


def vmf_mixture_log_prob(z):
    lps = torch.stack([VonMisesFisher(_LOCS[i].to(z), _KAPPA[i].to(z)).log_prob(z) for i in range(4)], -1)
    return torch.logsumexp(lps, -1) - math.log(4)


def _tree_locs():
    """A depth-2 tree in the Poincaré disk: the root at 0, 3 children at distance 1.5, 2 grandchildren each at 3."""
    pts = [torch.zeros(2)]
    for k in range(3):
        a = math.pi / 2 + 2 * math.pi * k / 3
        pts.append(math.tanh(0.75) * torch.tensor([math.cos(a), math.sin(a)]))
        for da in (-0.3, 0.3):
            pts.append(math.tanh(1.5) * torch.tensor([math.cos(a + da), math.sin(a + da)]))
    return torch.stack(pts)


_TREE = _tree_locs()
_DISK = m.PoincareBall(1.0)


def tree_mixture(n):
    """Equal-weight mixture of 10 wrapped normals (σ = 0.25) at the nodes of :func:`_tree_locs`."""
    c = torch.randint(0, len(_TREE), (n,))
    return WrappedNormal(_DISK, _TREE[c], torch.full((n, 1), 0.25)).sample()


# trained once per module (each fixture seeds itself: the autouse seed runs after module fixtures)
@pytest.fixture(scope="module")
def sphere_flow():
    pyro.set_rng_seed(st.seed(1))
    prior = FlowMatchingPrior(m.Sphere(), (3,))
    prior.fit(vmf_mixture(20000), steps=1000, batch_size=1024, lr=3e-3)
    return prior


@pytest.fixture(scope="module")
def tree_flow():
    pyro.set_rng_seed(st.seed(2))
    prior = FlowMatchingPrior(_DISK, (2,))
    prior.fit(tree_mixture(20000), steps=1500, batch_size=1024, lr=3e-3)
    return prior


# ------------------------------------------------------------------------------------------ samples


@pytest.mark.slow
@pytest.mark.statistical
def test_sphere_flow_samples_match_the_vmf_mixture(sphere_flow):
    x = sphere_flow.sample((2000,))
    assert x.shape == (2000, 3) and float(sphere_flow.geometry.violation(x).max()) <= 1e-6
    st.assert_same_law(x, vmf_mixture(2000), what="flow on S² vs 4-vMF mixture")


def _normal_coordinates(x):
    """Riemannian normal coordinates at the disk's origin: a bijection of the disk onto R², so the
    energy test on them still tests equality of laws, with its power spread over the tree instead
    of crowded at the boundary (ambient coordinates squeeze the leaves, at 0.9 of the radius)."""
    from dlmppl.geometry import geometry_of

    return geometry_of(_DISK).log_frame(torch.zeros_like(x), x)


@pytest.mark.slow
@pytest.mark.statistical
def test_poincare_flow_samples_match_the_tree_mixture(tree_flow):
    x = tree_flow.sample((2000,))
    assert x.shape == (2000, 2) and float(tree_flow.geometry.violation(x).max()) == 0
    st.assert_same_law(
        _normal_coordinates(x),
        _normal_coordinates(tree_mixture(2000)),
        what="flow on the Poincaré disk vs tree mixture",
    )


@pytest.mark.statistical
@pytest.mark.parametrize("case", ["sphere", "disk"])
def test_of_the_test_untrained_and_base_only_priors_fail(case):
    # the two-sample test has power: an untrained flow (random field, base scale 1) and its base law
    # fail it.  250 draws, not 2000: a rejection runs all 9999 permutations, whose cost grows as n²
    M, shape, target = (m.Sphere(), (3,), vmf_mixture) if case == "sphere" else (_DISK, (2,), tree_mixture)
    feats = (lambda x: x) if case == "sphere" else _normal_coordinates
    prior = FlowMatchingPrior(M, shape, hidden=(32,))
    for draws in (prior.sample((250,)), prior.base_sample((250,))):
        with pytest.raises(AssertionError):
            st.assert_same_law(feats(draws), feats(target(250)), what="untrained")


def test_log_prob_integrates_to_one_on_the_sphere(sphere_flow):
    """Gauss–Legendre in cos θ × the trapezoidal rule in φ (spectral for periodic integrands)."""
    nu, nphi = 48, 96
    u, w = np.polynomial.legendre.leggauss(nu)
    u, w = torch.as_tensor(u, dtype=torch.float32), torch.as_tensor(w, dtype=torch.float32)
    phi = torch.arange(nphi, dtype=torch.float32) * (2 * math.pi / nphi)
    s = (1 - u**2).sqrt()
    z = torch.stack([s[:, None] * phi.cos(), s[:, None] * phi.sin(), u[:, None].expand(nu, nphi)], -1)
    weights = w[:, None] * (2 * math.pi / nphi)

    def integral(log_prob):
        return float((log_prob(z.reshape(-1, 3)).reshape(nu, nphi).exp() * weights).sum())

    # the rule itself on the target mixture (κ up to 50): exact to 1e-4
    assert abs(integral(vmf_mixture_log_prob) - 1) < 1e-4
    with torch.no_grad():
        total = integral(lambda x: sphere_flow.log_prob(x, num_steps=8))
    assert abs(total - 1) < 0.02, total
    # and the flow's density is the target's: E_target |log q - log p| small where the mass is
    y = vmf_mixture(200)
    with torch.no_grad():
        gap = (sphere_flow.log_prob(y, num_steps=8) - vmf_mixture_log_prob(y)).abs().mean()
    assert gap < 0.5, gap


def test_backward_log_prob_agrees_with_the_forward_solve(sphere_flow):
    # the density of a draw from one forward solve (log p_0(z_0) - ∫ div) and from a backward solve.
    # 32 RK4 steps: at 16 the solvers' own discretisation error depended on how sharp the trained field
    # came out (3e-4 to 5e-3 over three training seeds, against ≤ 1.4e-4 at 32), so the test measured the
    # training draw rather than the consistency of the two solves
    with torch.no_grad():
        x, lp_forward = sphere_flow.sample_and_log_prob((64,), num_steps=32)
        lp_backward = sphere_flow.log_prob(x, num_steps=32)
    assert torch.allclose(lp_forward, lp_backward, atol=2e-3), (lp_forward - lp_backward).abs().max()


# ------------------------------------------------------------------------------------------ known fields


class _Const(nn.Module):
    """An ambient field ``(z, t) ↦ f(z)`` (the prior projects it onto ``T_z M``)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, z, t):
        return self.fn(z)


def _north_pull(a):
    e = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return _Const(lambda z: a * e.to(z).expand_as(z))  # proju: a (e_N - <z, e_N> z), the gradient of a cos θ


def _north_pull_exact(z0, a, t=1.0):
    """Closed-form flow of :func:`_north_pull`: tan(θ_t/2) = tan(θ_0/2) e^{-at}, φ fixed."""
    theta = torch.arccos(z0[:, 2].clamp(-1, 1))
    th1 = 2 * torch.atan(torch.tan(theta / 2) * math.exp(-a * t))
    rho = z0[:, :2] / z0[:, :2].norm(dim=-1, keepdim=True)
    return torch.cat([th1.sin()[:, None] * rho, th1.cos()[:, None]], -1)


def _north_pull_log_density(z, a):
    """The uniform law on S² pushed by :func:`_north_pull` for t = 1: a stereographic dilation by λ = e^{-a}."""
    lam = math.exp(-a)
    u1 = torch.tan(torch.arccos(z[:, 2].clamp(-1, 1)) / 2)
    return (
        -math.log(4 * math.pi) + 2 * torch.log1p(u1**2) - 2 * math.log(lam) - 2 * torch.log1p((u1 / lam) ** 2)
    )


def _sphere_points(n, dtype=torch.float64):
    z = torch.randn(n, 3, dtype=dtype)
    z = z / z.norm(dim=-1, keepdim=True)
    return z[z[:, 2].abs() < 0.95]  # away from the poles (the closed forms' φ)


def test_log_prob_and_samples_of_a_closed_form_flow():
    a = 0.8
    prior = FlowMatchingPrior(m.Sphere(), (3,), field=_north_pull(a), num_steps=16).double()
    z0 = _sphere_points(64)
    z1, _ = prior.integrate(z0)
    assert torch.allclose(z1, _north_pull_exact(z0, a), atol=1e-6)
    z = _sphere_points(64)
    assert torch.allclose(prior.log_prob(z), _north_pull_log_density(z, a), atol=1e-6)
    # the sampler draws that law: its cos θ has the dilated law's mean (quadrature of the closed form)
    u, w = np.polynomial.legendre.leggauss(64)
    u = torch.as_tensor(u)
    zz = torch.stack([(1 - u**2).sqrt(), torch.zeros_like(u), u], -1)
    mean_cos = float((torch.as_tensor(w) * 2 * math.pi * _north_pull_log_density(zz, a).exp() * u).sum())
    st.assert_mean(
        prior.sample((2000,), num_steps=8)[:, 2], mean_cos, iid=True, what="E cos θ", max_mcse=0.02
    )


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_runge_kutta_in_normal_coordinates_has_its_order(method, order):
    # halving the step divides the global error by 2^order (the pull-back of the stage slopes is exact)
    a = 1.5
    prior = FlowMatchingPrior(m.Sphere(), (3,), field=_north_pull(a), method=method).double()
    z0 = _sphere_points(32)
    exact = _north_pull_exact(z0, a)
    with torch.no_grad():
        errs = [float((prior.integrate(z0, num_steps=n)[0] - exact).norm(dim=-1).max()) for n in (8, 16)]
    rate = math.log2(errs[0] / errs[1])
    assert abs(rate - order) < 0.35, (errs, rate)


def _poincare_radial(b):
    return _Const(lambda x: b * x)


def _lorentz_pushforward_of_radial(b):
    # the isometry x ↦ ((1 + r²), 2x)/(1 - r²) from the Poincaré disk (c = 1) to the hyperboloid (k = 1),
    # differentiated along the field b x of the disk
    def fn(y):
        x = y[:, 1:] / (1 + y[:, :1])
        r2 = x.pow(2).sum(-1, keepdim=True)
        dy0 = 4 * b * r2 / (1 - r2) ** 2
        dys = 2 * b * x * (1 + r2) / (1 - r2) ** 2
        return torch.cat([dy0, dys], -1)

    return _Const(fn)


def _divergence_cases():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64)
    S = A + A.T
    a = torch.randn(3, generator=g, dtype=torch.float64)
    B = torch.randn(2, 2, generator=g, dtype=torch.float64)

    def disk_points(n, r=0.8):
        x = torch.randn(n, 2, dtype=torch.float64)
        return r * torch.rand(n, 1, dtype=torch.float64) * x / x.norm(dim=-1, keepdim=True)

    def stereo_div(k):  # |g|^{-1/2} ∂_i(|g|^{1/2} v^i), |g|^{1/2} = λ^d, λ = 2/(1 + κ|x|²), v = b x
        return lambda x: 2 * 0.7 * (1 - k * 2 / (1 + k * x.pow(2).sum(-1)) * x.pow(2).sum(-1))

    def so3_points(n):
        from dlmppl.geometry import geometry_of

        return geometry_of(m.SO3()).random_uniform((n, 3, 3), torch.float64)

    sphere_x = lambda n: _sphere_points(4 * n)[:n]  # the pole filter drops ~5%: draw enough for n
    return {
        # S²: the gradient of <a, z>, a spherical harmonic of degree 1: Δ = -2 <a, z>
        "sphere": (m.Sphere(), (3,), _Const(lambda z: a.expand_as(z)), sphere_x, lambda z: -2 * (z @ a)),
        # Poincaré disk (κ = -1) and a positively curved stereographic plane (κ = 0.5): the chart formula
        "poincare": (m.PoincareBall(1.0), (2,), _poincare_radial(0.7), disk_points, stereo_div(-1.0)),
        "stereographic": (m.Stereographic(0.5), (2,), _poincare_radial(0.7), disk_points, stereo_div(0.5)),
        # the hyperboloid: the same field through an isometry has the same divergence
        "lorentz": (
            m.Lorentz(1.0),
            (3,),
            _lorentz_pushforward_of_radial(0.7),
            lambda n: (
                lambda x: (
                    torch.cat([(1 + x.pow(2).sum(-1, keepdim=True)), 2 * x], -1)
                    / (1 - x.pow(2).sum(-1, keepdim=True))
                )
            )(disk_points(n)),
            lambda y: stereo_div(-1.0)(y[:, 1:] / (1 + y[:, :1])),
        ),
        "euclidean": (
            m.Euclidean(ndim=1),
            (2,),
            _Const(lambda x: x @ B.T),
            lambda n: torch.randn(n, 2, dtype=torch.float64),
            lambda x: torch.trace(B).expand(x.shape[:1]),
        ),
        # SO(3) with ½ tr(UᵀV): the gradient 2 proj(A) of tr(AᵀR); Δ tr(AᵀR) = -2 tr(AᵀR)
        "so3": (
            m.SO3(),
            (3, 3),
            _Const(lambda R: 2 * A.expand_as(R)),
            so3_points,
            lambda R: -2 * (A * R).sum((-1, -2)),
        ),
        "torus": (
            m.Torus(),
            (2,),
            _Const(torch.sin),
            lambda n: math.pi * (2 * torch.rand(n, 2, dtype=torch.float64) - 1),
            lambda x: x.cos().sum(-1),
        ),
        # RP²: the gradient of ½ zᵀSz (odd in z, a field on RP²): ½ Δ(zᵀSz) = tr S - 3 zᵀSz
        "projective": (
            m.ProjectiveSpace(),
            (3,),
            _Const(lambda z: z @ S),
            sphere_x,
            lambda z: torch.trace(S) - 3 * ((z @ S) * z).sum(-1),
        ),
        # a product: the sum
        "product": (
            geoopt.ProductManifold((m.Sphere(), 3), (m.PoincareBall(1.0), 2)),
            (5,),
            _Const(lambda z: torch.cat([a.expand_as(z[:, :3]), 0.7 * z[:, 3:]], -1)),
            lambda n: torch.cat([_sphere_points(4 * n)[:n], disk_points(n)], -1),
            lambda z: -2 * (z[:, :3] @ a) + stereo_div(-1.0)(z[:, 3:]),
        ),
    }


@pytest.mark.parametrize("name", list(_divergence_cases()))
def test_exact_divergence_against_closed_forms(name):
    M, shape, field, points, div = _divergence_cases()[name]
    prior = FlowMatchingPrior(M, shape, field=field).double()
    z = points(16)
    got = prior.divergence(z, 0.3)
    assert got.shape == (16,)
    assert torch.allclose(got, div(z), atol=1e-9, rtol=1e-9), (got, div(z))


@pytest.mark.statistical
def test_hutchinson_is_unbiased_for_the_divergence_and_log_prob():
    # a random (untrained) MLP field on a product with a conformal factor (Christoffel term ≠ 0)
    M = geoopt.ProductManifold((m.Sphere(), 3), (m.PoincareBall(1.0), 2))
    prior = FlowMatchingPrior(M, (5,), hidden=(16,), num_steps=2).double()
    z = prior.sample((4,))
    n = 1500
    exact = prior.divergence(z, 0.4).detach()
    reps = z.repeat(n, 1)
    alpha = st.ALPHA / 3
    for probe in ("rademacher", "gaussian"):
        est = prior.divergence(reps, 0.4, hutchinson=True, probe=probe).detach().reshape(n, 4)
        st.assert_mean(est, exact, iid=True, alpha=alpha, what=f"Hutchinson ({probe})")
    with torch.no_grad():
        lp = prior.log_prob(z)
        est = prior.log_prob(z.repeat(300, 1), hutchinson=True).reshape(300, 4)
    st.assert_mean(est, lp, iid=True, alpha=alpha, what="Hutchinson log_prob")


def test_log_prob_gradient_matches_finite_differences():
    # the density is differentiable in z (through the backward solve, divergence included) and in θ
    prior = FlowMatchingPrior(m.PoincareBall(1.0), (2,), hidden=(16,), num_steps=3).double()
    z = torch.tensor([[0.2, -0.3], [0.5, 0.1]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(prior.log_prob(z).sum(), z)
    eps = 1e-6
    for i in range(2):
        e = torch.zeros_like(z)
        e[:, i] = eps
        with torch.no_grad():
            fd = (prior.log_prob(z + e) - prior.log_prob(z - e)) / (2 * eps)
        assert torch.allclose(g[:, i], fd, atol=1e-6), (g[:, i], fd)
    w = prior.field.net[0].weight
    (gw,) = torch.autograd.grad(prior.log_prob(z.detach()).sum(), w)
    with torch.no_grad():
        w[0, 0] += eps
        up = prior.log_prob(z).sum()
        w[0, 0] -= 2 * eps
        down = prior.log_prob(z).sum()
        w[0, 0] += eps
    assert abs(float(gw[0, 0]) - float((up - down) / (2 * eps))) < 1e-6


# ------------------------------------------------------------------------------------------ edges


_FAMILIES = {
    "sphere": (m.Sphere(), (3,)),
    "poincare": (m.PoincareBall(1.0), (2,)),
    "lorentz": (m.Lorentz(1.0), (3,)),
    "euclidean": (m.Euclidean(ndim=1), (2,)),
    "so3": (m.SO3(), (3, 3)),
    "torus": (m.Torus(), (2,)),
    "projective": (m.ProjectiveSpace(), (3,)),
    "product": (geoopt.ProductManifold((m.Sphere(), 3), (m.PoincareBall(1.0), 2)), (5,)),
}


@pytest.mark.parametrize("name", list(_FAMILIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_family_samples_on_the_manifold_with_finite_densities(name, dtype):
    M, shape = _FAMILIES[name]
    prior = FlowMatchingPrior(M, shape, hidden=(16,), num_steps=4).to(dtype)
    codes = prior.base_sample((64,))
    hist = prior.fit(codes, steps=3, batch_size=16)
    assert len(hist) == 3 and all(math.isfinite(h) for h in hist)
    x = prior.sample((2, 5))
    assert x.shape == (2, 5) + shape and x.dtype == dtype and x.device == codes.device
    assert float(prior.geometry.violation(x).max()) <= 1e-6
    lp = prior.log_prob(x)
    assert lp.shape == (2, 5) and lp.dtype == dtype and torch.isfinite(lp).all()
    # empty batches
    assert prior.sample((0,)).shape == (0,) + shape
    assert prior.log_prob(x[:0]).shape == (0, 5)
    assert prior.divergence(x[0, :0], 0.5).shape == (0,)


def test_projective_flow_does_not_depend_on_the_lift():
    prior = FlowMatchingPrior(m.ProjectiveSpace(), (3,), hidden=(16,), num_steps=4).double()
    z = prior.base_sample((8,))
    v = prior.velocity(z, 0.3)
    assert torch.allclose(prior.velocity(-z, 0.3), -v, atol=1e-12)  # (z, v) ~ (-z, -v)
    with torch.no_grad():
        assert torch.allclose(prior.log_prob(-z), prior.log_prob(z), atol=1e-9)


def test_base_scale_follows_the_data_spread():
    prior = FlowMatchingPrior(_DISK, (2,), hidden=(8,))
    codes = tree_mixture(4000)
    prior.fit(codes, steps=1, batch_size=8)
    o = torch.zeros(2)
    expected = (prior.geometry.dist(o, codes).pow(2).mean() / 2).sqrt()
    assert torch.allclose(prior.base_scales, expected.reshape(1), rtol=1e-5)
    fixed = FlowMatchingPrior(_DISK, (2,), hidden=(8,), base_scale=0.5)
    fixed.fit(codes, steps=1, batch_size=8)
    assert float(fixed.base_scales) == 0.5
    # the base density is the wrapped normal's
    z = codes[:5]
    assert torch.allclose(fixed.base_log_prob(z), WrappedNormal(_DISK, o, torch.tensor([0.5])).log_prob(z))


def test_rebinding_the_manifold_uses_its_curvature():
    # a VAE rebinds the prior to its own (learnable-curvature) manifold: every map must follow it
    prior = FlowMatchingPrior(m.PoincareBall(1.0), (2,), hidden=(8,), num_steps=2).double()
    z = torch.tensor([[0.1, 0.2], [-0.3, 0.1]], dtype=torch.float64)
    with torch.no_grad():
        before = prior.log_prob(z)
        prior.manifold = m.PoincareBall(2.0)
        after = prior.log_prob(z)
        fresh = FlowMatchingPrior(m.PoincareBall(2.0), (2,), hidden=(8,), num_steps=2).double()
        fresh.load_state_dict(prior.state_dict())
        assert torch.allclose(after, fresh.log_prob(z)) and not torch.allclose(before, after)


def test_bad_arguments_raise_value_errors_naming_them():
    with pytest.raises(ValueError, match="method"):
        FlowMatchingPrior(m.Sphere(), (3,), method="heun")
    with pytest.raises(ValueError, match="num_steps"):
        FlowMatchingPrior(m.Sphere(), (3,), num_steps=0)
    with pytest.raises(ValueError, match="base_scale"):
        FlowMatchingPrior(_DISK, (2,), base_scale=-1.0)
    with pytest.raises(ValueError, match="probe"):
        FlowMatchingPrior(m.Sphere(), (3,), probe="uniform")
    with pytest.raises(ValueError, match="manifold"):
        FlowMatchingPrior(object(), (2, 2))
    prior = FlowMatchingPrior(m.Sphere(), (3,), hidden=(8,))
    with pytest.raises(ValueError, match="codes"):
        prior.fit(torch.randn(10, 3) * 3)  # off the sphere
    with pytest.raises(ValueError, match="codes"):
        prior.fit(torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match="codes"):
        prior.fit(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="steps"):
        prior.fit(prior.base_sample((4,)), steps=0)
    with pytest.raises(ValueError, match="z"):
        prior.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="value"):
        prior.distribution((4,)).log_prob(3 * torch.ones(4, 3))
    with pytest.raises(ValueError, match="manifold"):
        prior.manifold = _DISK


def test_distribution_is_a_pyro_site_function():
    prior = FlowMatchingPrior(m.Sphere(), (3,), hidden=(8,), num_steps=2)
    d = prior.distribution((4,))
    assert isinstance(d, FlowPriorDistribution) and isinstance(d.support, ManifoldConstraint)
    assert d.batch_shape == (4,) and d.event_shape == (3,)
    assert d.support.check(d.sample()).all()
    assert d.expand((2, 4)).sample().shape == (2, 4, 3)

    def model():
        with pyro.plate("data", 5):
            return pyro.sample("z", prior.distribution())

    tr = pyro.poutine.trace(model).get_trace()
    assert tr.nodes["z"]["value"].shape == (5, 3)
    assert torch.isfinite(tr.log_prob_sum())


# ------------------------------------------------------------------------------------------ VAE


def _svi(vae, x, steps):
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    return [svi.step(x) for _ in range(steps)], svi


@pytest.mark.parametrize("latent", ["sphere", "poincare"])
def test_vae_two_stage_and_joint_flow_priors(latent):
    x = (torch.rand(32, 10) < 0.3).float()
    vae = ManifoldVAE(10, latent, 2, hidden=(16,))
    _, svi = _svi(vae, x, 3)
    c = vae.components[0]
    prior = FlowMatchingPrior(c.manifold, c.event_shape, hidden=(16,), num_steps=2)
    prior.fit(vae.codes(x)[0], steps=5, batch_size=16)
    assert vae.set_prior(prior) is vae
    assert c.learned_prior is prior and prior.manifold is c.manifold
    assert vae.sample(6).shape == (6, 10)
    # the model scores z with the flow's density
    tr = pyro.poutine.trace(vae.model).get_trace(x)
    z = tr.nodes["z"]["value"]
    assert torch.allclose(tr.nodes["z"]["fn"].log_prob(z), prior.log_prob(z))
    assert math.isfinite(svi.evaluate_loss(x))
    vae.set_prior(None)
    assert c.learned_prior is None and not isinstance(c.prior(x, (2,)), FlowPriorDistribution)
    # joint: the ELBO trains the flow's parameters (and shares the latent's learnable curvature)
    pyro.clear_param_store()
    M = m.Sphere() if latent == "sphere" else m.PoincareBall(1.0)
    shape = (3,) if latent == "sphere" else (2,)
    vae = ManifoldVAE(
        10, latent, 2, hidden=(16,), prior=FlowMatchingPrior(M, shape, hidden=(16,), num_steps=2)
    )
    w0 = vae.components[0].learned_prior.field.net[0].weight.detach().clone()
    losses, _ = _svi(vae, x, 3)
    assert all(math.isfinite(v) for v in losses)
    assert not torch.equal(w0, vae.components[0].learned_prior.field.net[0].weight)
    assert vae.components[0].learned_prior.manifold is vae.components[0].manifold
    with pytest.raises(ValueError, match="prior"):
        vae.set_prior(FlowMatchingPrior(m.Lorentz(), (3,), hidden=(4,)))
