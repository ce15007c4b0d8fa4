"""Scalar (isotropic) mass adaptation of manifold sites in RiemannianHMC / RiemannianNUTS.

A posterior concentrated on the manifold (vMF with κ = 1000, sd ≈ 0.03 rad)
must still be sampled exactly, with a step size and tree depth set by the
adapted mass instead of the unit mass.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

from dlmppl import manifolds
from dlmppl.distributions.wrapped_normal import WrappedNormal
from dlmppl.inference.hmc import RiemannianHMC, manifold_variance
from dlmppl.inference.integrators import geometry_of
from dlmppl.inference.nuts import RiemannianNUTS
from tests.helpers import energy_distance_test
from tests.inference._targets import TiltedSphere, scipy_vmf, vmf_model, vmf_mrl

KAPPA = 1000.0
LOC = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)


def _run(kernel, num_samples, warmup, **kw):
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, disable_progbar=True, **kw)
    mcmc.run()
    return mcmc


def test_concentrated_vmf_nuts_with_mass_adaptation():
    """κ = 1000 on S²: draws match scipy's vMF; the adapted 1/m ≈ 1/κ (the per-dimension variance)."""
    kernel = RiemannianNUTS(vmf_model(LOC, torch.tensor(KAPPA, dtype=torch.float64)))
    mcmc = _run(kernel, 600, 200)
    x = mcmc.get_samples()["x"]
    inv_mass = kernel.manifold_inverse_mass["x"]
    assert 0.3 / KAPPA < inv_mass < 3.0 / KAPPA
    assert mcmc._diagnostics[0]["manifold_inverse_mass"] == {"x": inv_mass}
    # 1 - MRL = 1e-3 here: a chain off by a scale factor of the spread misses this by far
    mrl = vmf_mrl(3, KAPPA)
    assert abs(float((x @ LOC).mean()) - mrl) < 0.15 * (1 - mrl)
    p = energy_distance_test(x[::2], scipy_vmf(LOC, KAPPA, 300), num_permutations=200)
    assert p > 0.01


def test_concentrated_vmf_hmc_with_mass_adaptation():
    """Same target with RiemannianHMC (fixed trajectory length): exact and adapted."""
    kernel = RiemannianHMC(vmf_model(LOC, torch.tensor(KAPPA, dtype=torch.float64)), trajectory_length=1.0)
    mcmc = _run(kernel, 400, 150)
    x = mcmc.get_samples()["x"]
    assert 0.3 / KAPPA < kernel.manifold_inverse_mass["x"] < 3.0 / KAPPA
    mrl = vmf_mrl(3, KAPPA)
    assert abs(float((x @ LOC).mean()) - mrl) < 0.15 * (1 - mrl)
    p = energy_distance_test(x[::2], scipy_vmf(LOC, KAPPA, 200), num_permutations=200)
    assert p > 0.01


def _mixed_model():
    pyro.sample("x", TiltedSphere(LOC, torch.tensor(KAPPA, dtype=torch.float64)))
    pyro.sample("y", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))


def test_mass_adaptation_speed_claim():
    """A concentrated manifold site next to a unit-scale Euclidean site: with unit manifold mass
    dual averaging must shrink ε to the manifold scale (≈ 0.03) and NUTS runs long trees for the
    Euclidean site; with the adapted scalar mass ε ≈ 1 and trees are short."""
    fast = RiemannianNUTS(_mixed_model)
    mcmc_fast = _run(fast, 60, 100)
    slow = RiemannianNUTS(_mixed_model, adapt_mass_matrix=False)
    mcmc_slow = _run(slow, 60, 100)
    assert slow.manifold_inverse_mass == {"x": 1.0}  # adapt_mass_matrix=False keeps unit masses
    steps_fast = mcmc_fast._diagnostics[0]["sample_stats"]["n_steps"].double().mean()
    steps_slow = mcmc_slow._diagnostics[0]["sample_stats"]["n_steps"].double().mean()
    assert fast.step_size > 10 * slow.step_size
    assert steps_fast < 8
    assert steps_slow > 2 * steps_fast
    x = mcmc_fast.get_samples()["x"]
    assert abs(float((x @ LOC).mean()) - vmf_mrl(3, KAPPA)) < 1e-3


@pytest.mark.parametrize(
    "M, loc",
    [
        (manifolds.Lorentz(), torch.tensor([math.cosh(0.5), math.sinh(0.5), 0.0], dtype=torch.float64)),
        (manifolds.PoincareBall(c=1.0), torch.tensor([0.2, -0.1], dtype=torch.float64)),
    ],
    ids=["lorentz", "poincare"],
)
def test_manifold_variance_hyperbolic(M, loc):
    """The variance estimate is the per-dimension Riemannian variance (scale² in Riemannian units)."""
    scale = 0.05
    draws = WrappedNormal(M, loc, torch.tensor(scale, dtype=torch.float64)).sample((4000,))
    var = float(manifold_variance(geometry_of(M), draws, 2))
    assert abs(var / scale**2 - 1) < 0.1


def test_manifold_variance_sphere_batched():
    """A batch of 4 independent vMF(κ) sites on S²: per-dimension variance ≈ 1/κ."""
    draws = torch.stack([scipy_vmf(LOC, KAPPA, 2000, seed=s) for s in range(4)], 1)
    var = float(manifold_variance(geometry_of(manifolds.Sphere()), draws, 4 * 2))
    assert abs(var * KAPPA - 1) < 0.1
