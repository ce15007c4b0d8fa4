"""A manifold family defined in this file alone gets the whole package (issue 12).

The flat circle ``R / 2πZ``, points as angles ``θ ∈ [-π, π)`` of shape ``(1,)``: a
geoopt manifold and its :class:`dlmppl.geometry.Geometry`, registered with
``geometry_of.register``.  Nothing in ``dlmppl`` knows this family, yet
``geometry.distance``, ``WrappedNormal`` (wrapped sum over the preimages ``θ + 2πn``),
Riemannian HMC, the OT cost and the manifold-aware summary all work on it, because
each asks the registry and nothing tests a manifold's type.
"""

from __future__ import annotations

import math

import geoopt
import numpy as np
import pyro
import pytest
import torch
from pyro.infer import MCMC
from scipy import stats

from dlmppl import diagnostics, geometry, losses
from dlmppl.distributions import WrappedNormal
from dlmppl.geometry import Geometry, geometry_of
from dlmppl.inference import RiemannianHMC
from tests import statistical as st

D = torch.float64
TWO_PI = 2 * math.pi


def _wrap(a):
    return torch.remainder(a + math.pi, TWO_PI) - math.pi


class FlatCircle(geoopt.Manifold):
    """The circle of length 2π as angles in ``[-π, π)``; ``ndim = 1`` (points ``(..., 1)``)."""

    name = "FlatCircle"
    ndim = 1
    reversible = True

    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        ok = bool(((x >= -math.pi - atol) & (x <= math.pi + atol)).all())
        return ok, None if ok else "angle outside [-π, π]"

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        return True, None

    def projx(self, x):
        return _wrap(x)

    def proju(self, x, u):
        return u

    def egrad2rgrad(self, x, u):
        return u

    def inner(self, x, u, v=None, *, keepdim=False):
        return (u * (u if v is None else v)).sum(-1, keepdim=keepdim)

    def expmap(self, x, u):
        return _wrap(x + u)

    def retr(self, x, u):
        return _wrap(x + u)


class CircleGeometry(Geometry):
    """The family's geometry: the whole of it is these few lines."""

    name = "FlatCircle"
    bounds = "-π ≤ θ ≤ π"
    compact = True

    def exp(self, x, v):
        return _wrap(x + v)

    def log(self, x, y):
        return _wrap(y - x)

    def dist(self, x, y):
        return _wrap(y - x).abs().squeeze(-1)

    def violation(self, x):
        return (x.abs() - math.pi).clamp_min(0).squeeze(-1)

    def origin(self, event_shape, dtype=None, device=None):
        return torch.zeros(tuple(event_shape), dtype=dtype, device=device)

    def log_volume(self, event_shape):
        return math.log(TWO_PI)

    def random_uniform(self, shape, dtype=None, device=None):
        return (torch.rand(shape, dtype=dtype, device=device) - 0.5) * TWO_PI

    def random_tangent(self, x):
        return torch.randn_like(x)

    def spread(self, draws):
        v = self.log(draws[-1].expand_as(draws), draws)
        return (v - v.mean(0)).pow(2).sum() / draws.shape[0]

    def flow(self, x, v, t):
        return _wrap(x + t * v), v

    def closed_geodesic_length(self, x):
        return TWO_PI

    # constant curvature (0), orthonormal frame = the angle itself, geodesics close after 2π
    def sectional_curvature(self, like):
        return torch.zeros((), dtype=like.dtype, device=like.device)

    def exp_frame(self, x, w):
        return self.exp(x, w)

    def log_frame(self, x, y):
        return self.log(x, y)

    def wrap_period(self, like):
        return torch.full((), TWO_PI, dtype=like.dtype, device=like.device)


geometry_of.register(FlatCircle, CircleGeometry)
C = FlatCircle()


def _wrapped_normal_pdf(theta, loc, scale, terms=20):
    """Reference: ``Σ_n N(θ + 2πn; loc, σ)`` (numpy, independent of dlmppl)."""
    n = np.arange(-terms, terms + 1)[:, None]
    return stats.norm.pdf(theta[None, :] + TWO_PI * n, loc, scale).sum(0)


def _wrapped_normal_cdf(loc, scale):
    grid = np.linspace(-math.pi, math.pi, 20001)
    pdf = _wrapped_normal_pdf(grid, loc, scale)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return lambda x: np.interp(x, grid, cdf)


def test_distance_and_validation_come_from_the_registered_geometry():
    x = torch.tensor([[math.pi - 0.1], [0.2]], dtype=D)
    y = torch.tensor([[-math.pi + 0.1], [-0.3]], dtype=D)
    torch.testing.assert_close(geometry.distance(C, x, y), torch.tensor([0.2, 0.5], dtype=D))
    with pytest.raises(ValueError, match=r"x: 1 point\(s\) not on FlatCircle \(-π ≤ θ ≤ π\)"):
        geometry.distance(C, torch.tensor([[4.0]], dtype=D), y[:1])
    mid = geometry.geodesic(C, x[0], y[0], 0.5)  # across the wrap, not through 0
    assert abs(abs(float(mid)) - math.pi) < 1e-12


@pytest.mark.parametrize("loc,scale", [(2.9, 0.4), (0.0, 2.5)])
def test_wrapped_normal_density_integrates_to_one_and_matches_the_wrapped_sum(loc, scale):
    d = WrappedNormal(C, torch.tensor([loc], dtype=D), torch.tensor(scale, dtype=D))
    theta = torch.linspace(-math.pi, math.pi, 4001, dtype=D)[:-1].unsqueeze(-1)
    p = d.log_prob(theta).exp()
    assert abs(float(p.sum()) * TWO_PI / theta.shape[0] - 1) < 1e-9  # periodic: the rectangle rule is spectral
    ref = _wrapped_normal_pdf(theta.squeeze(-1).numpy(), loc, scale)
    np.testing.assert_allclose(p.numpy(), ref, rtol=1e-9, atol=1e-300)


@pytest.mark.statistical
def test_riemannian_hmc_samples_a_wrapped_normal_across_the_wrap_and_the_summary_is_circular():
    """HMC on the circle (exact flow = wrapped straight line) against the wrapped-normal CDF (KS on
    the thinned chain, false-alarm rate ALPHA), with a test of the test; the summary's Fréchet
    mean is circular (near ±π) where the ambient mean of the angles is near 0."""
    loc, scale = 2.9, 0.6

    def model():
        pyro.sample("theta", WrappedNormal(C, torch.tensor([loc], dtype=D), torch.tensor(scale, dtype=D)))

    mcmc = MCMC(RiemannianHMC(model, step_size=0.5, num_steps=4), num_samples=3000, warmup_steps=300,
                disable_progbar=True)
    mcmc.run()
    theta = mcmc.get_samples()["theta"].squeeze(-1)
    assert bool((theta.abs() <= math.pi).all())
    st.assert_ks(theta, _wrapped_normal_cdf(loc, scale), x_chain=True, what="HMC on the flat circle",
                 alpha=st.ALPHA / 2)
    with pytest.raises(AssertionError):  # the test has power: a law with half the scale is refused
        st.assert_ks(theta, _wrapped_normal_cdf(loc, 0.5 * scale), x_chain=True, alpha=st.ALPHA / 2)

    s = diagnostics.summary({"theta": theta.reshape(1, -1, 1)}, manifolds={"theta": C}, round_to="none")
    mean = float(s.loc["theta[0]", "mean"])
    assert abs(float(_wrap(torch.tensor(mean - loc)))) < 0.1
    assert abs(float(theta.mean())) < 2.0  # the ambient mean is far off: the summary is not ambient


def test_ot_cost_uses_the_circle_distance():
    x = torch.tensor([[math.pi - 0.1], [0.0]], dtype=D)
    y = torch.tensor([[-math.pi + 0.1], [0.3]], dtype=D)
    # geodesic ground cost: 0.2 across the wrap and 0.3, each with mass 1/2
    w1 = losses.wasserstein(x, y, manifold=C, p=1, method="emd")
    assert abs(float(w1) - 0.25) < 1e-12
    cost = losses.manifold_distances(x, y, C)
    torch.testing.assert_close(cost, torch.tensor([[0.2, math.pi - 0.4], [math.pi - 0.1, 0.3]], dtype=D))
