"""Mass adaptation on the hyperboloid far from the origin (issue 11, defect 13): the per-site variance
estimate must not cancel at large radius."""

import math

import pytest
import torch

from dlmppl import manifolds
from dlmppl.distributions import WrappedNormal
from dlmppl.inference.integrators import geometry_of
from dlmppl.inference.kernels import manifold_variance
from tests.statistical import assert_mc_estimate

pytestmark = pytest.mark.statistical


@pytest.mark.parametrize("radius", [0.5, 10.0, 25.0])
def test_manifold_variance_is_the_wrapped_normal_variance_at_any_radius(radius):
    M = manifolds.Lorentz(1.0)
    loc = torch.tensor([math.cosh(radius), math.sinh(radius), 0.0], dtype=torch.float64)
    x = WrappedNormal(M, loc, torch.tensor(0.3, dtype=torch.float64)).sample((4000,))
    var = float(manifold_variance(geometry_of(M), x, 2))
    # E|v|²/2 = σ² for v ~ N(0, σ² I_2); the estimate is a mean of 4000 draws of |v - v̄|²/2 (sd σ²)
    assert_mc_estimate(var, 0.09 / math.sqrt(4000), 0.09, what="manifold_variance")
