"""The traced-once potential (dlmppl.inference.potential) equals Pyro's potential_fn (issue 15, point 1).

Deterministic equalities (no statistical assertion): at random unconstrained points, the lean
potential and its gradient agree with Pyro's ``initialize_model`` potential to 1e-12 in float64
(relative), on models with constrained sites (positive, unit interval, simplex, correlation
Cholesky), nested plates, ``poutine.scale``/``mask``, a manifold site, ``pyro.factor`` and
``pyro.deterministic``.  Models with an enumerated discrete site and ``jit_compile=True`` keep
Pyro's potential.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, config_enumerate
from pyro.infer.mcmc.util import initialize_model

from dlmppl import manifolds
from dlmppl.distributions import ManifoldUniform, VonMisesFisher
from dlmppl.inference import RiemannianHMC, RiemannianNUTS
from dlmppl.inference.integrators import potential_grad
from dlmppl.inference.potential import lean_applies, lean_potential_fn

D = torch.float64


def constrained(data):
    """Positive, unit-interval, simplex and correlation-Cholesky sites; nested plates; scale and mask."""
    s = pyro.sample("s", dist.Gamma(torch.tensor(2.0, dtype=D), 1.0))
    p = pyro.sample("p", dist.Beta(torch.tensor(2.0, dtype=D), 3.0))
    w = pyro.sample("w", dist.Dirichlet(torch.ones(3, dtype=D)))
    L = pyro.sample("L", dist.LKJCholesky(3, torch.tensor(2.0, dtype=D)))
    with pyro.plate("groups", 2, dim=-2):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(1, 3, dtype=D), 1.0).to_event(1))
        with pyro.plate("rows", data.shape[1], dim=-1):
            obs_mask = torch.arange(data.shape[1]) % 3 != 0
            with poutine.scale(scale=0.7), poutine.mask(mask=obs_mask):
                pyro.sample("y", dist.MultivariateNormal(loc, scale_tril=s * L), obs=data)
    pyro.sample("z", dist.Bernoulli(p), obs=torch.tensor(1.0, dtype=D))
    pyro.sample("c", dist.Categorical(w), obs=torch.tensor(2))


def manifold_factor(obs):
    """A sphere site, a vMF likelihood in a plate, a factor and a deterministic site."""
    mu = pyro.sample("mu", ManifoldUniform(manifolds.Sphere(), event_shape=(3,), dtype=D))
    kappa = pyro.sample("kappa", dist.LogNormal(torch.tensor(1.0, dtype=D), 0.5))
    pyro.deterministic("kappa2", kappa**2)
    with pyro.plate("data", obs.shape[0]):
        pyro.sample("obs", VonMisesFisher(mu, kappa), obs=obs)
    pyro.factor("pull", 3.0 * mu[2] - 0.1 * kappa)


def factor_only():
    x = pyro.sample("x", dist.Normal(torch.zeros(4, dtype=D), 1.0).to_event(1))
    pyro.factor("f", -(x.sin() ** 2).sum())


def _data():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 5, 3, generator=g, dtype=D)
    v = torch.randn(6, 3, generator=g, dtype=D)
    return {
        "constrained": (constrained, (y,)),
        "manifold_factor": (manifold_factor, (v / v.norm(dim=-1, keepdim=True),)),
        "factor_only": (factor_only, ()),
    }


def _points(init, transforms, manifold_sites, n=3):
    """``n`` random unconstrained points near ``init`` (manifold sites: random points of S^2)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        z = {}
        for k, v in init.items():
            if k in manifold_sites:
                x = torch.randn(v.shape, generator=g, dtype=v.dtype)
                z[k] = x / x.norm(dim=-1, keepdim=True)
            else:
                z[k] = v + 0.5 * torch.randn(v.shape, generator=g, dtype=v.dtype)
        out.append(z)
    return out


@pytest.mark.parametrize("name", ["constrained", "manifold_factor", "factor_only"])
@pytest.mark.parametrize("validation", [True, False])
def test_lean_equals_pyro_potential(name, validation):
    model, args = _data()[name]
    pyro.set_rng_seed(0)
    kernel = RiemannianNUTS(model)
    kernel.setup(0, *args)  # the kernel's transforms: the identity for the manifold site
    assert kernel.potential_kind == "lean"
    transforms = kernel.transforms
    _, pyro_fn, _, trace = initialize_model(model, args, transforms=transforms, initial_params={})
    assert lean_applies(trace)
    lean_fn = lean_potential_fn(model, args, {}, transforms)
    manifold_sites = set(kernel._geometries)
    assert (name == "manifold_factor") == bool(manifold_sites)
    with pyro.validation_enabled(validation):
        for z in _points(kernel.initial_params, transforms, manifold_sites):
            g_ref, u_ref = potential_grad(pyro_fn, {k: v.clone() for k, v in z.items()})
            g, u = potential_grad(lean_fn, {k: v.clone() for k, v in z.items()})
            assert u.dtype == D and torch.isfinite(u_ref)
            torch.testing.assert_close(u, u_ref, rtol=1e-12, atol=1e-12)
            for k in g_ref:
                torch.testing.assert_close(g[k], g_ref[k], rtol=1e-12, atol=1e-12)


def test_lean_nuts_same_draws_as_pyro_potential():
    """Same seed, same potential: RiemannianNUTS draws the same chain with either potential."""
    model, args = _data()["manifold_factor"]
    draws = []
    for trace_once in (True, False):
        pyro.set_rng_seed(3)
        kernel = RiemannianNUTS(model, trace_once=trace_once, max_tree_depth=4)
        mcmc = MCMC(kernel, num_samples=15, warmup_steps=15, disable_progbar=True)
        mcmc.run(*args)
        assert kernel.potential_kind == ("lean" if trace_once else "pyro")
        draws.append(mcmc.get_samples())
    for k in draws[0]:
        torch.testing.assert_close(draws[0][k], draws[1][k], rtol=1e-10, atol=1e-10)


def test_enumerated_model_keeps_pyro_potential():
    @config_enumerate
    def mixture(data):
        loc = pyro.sample("loc", dist.Normal(torch.tensor([-1.0, 1.0], dtype=D), 1.0).to_event(1))
        with pyro.plate("data", data.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(torch.tensor(0.5, dtype=D)))
            pyro.sample("obs", dist.Normal(loc[c.long()], 1.0), obs=data)

    data = torch.tensor([-1.2, -0.8, 0.9, 1.3], dtype=D)
    pyro.set_rng_seed(0)
    kernel = RiemannianNUTS(mixture, max_plate_nesting=1, max_tree_depth=3)
    mcmc = MCMC(kernel, num_samples=5, warmup_steps=5, disable_progbar=True)
    mcmc.run(data)
    assert kernel.potential_kind == "pyro"
    assert torch.isfinite(mcmc.get_samples()["loc"]).all()


def test_jit_compile_keeps_pyro_potential():
    model, args = _data()["factor_only"]
    pyro.set_rng_seed(0)
    kernel = RiemannianHMC(model, jit_compile=True, ignore_jit_warnings=True, num_steps=3, step_size=0.1)
    mcmc = MCMC(kernel, num_samples=5, warmup_steps=5, disable_progbar=True)
    mcmc.run(*args)
    assert kernel.potential_kind == "pyro"
    assert mcmc.get_samples()["x"].shape == (5, 4)


def test_unconstrained_sites_pay_no_jacobian():
    """The transform the kernel passes for an unconstrained vector site, ``biject_to(real_vector).inv``
    (an ``_InverseTransform``), is recognised as the identity, as ``biject_to(real).inv`` is: no
    log|det J| term at each evaluation (seen missed: a zero Jacobian was computed, summed and
    subtracted at every gradient), and the potential and its gradient are Pyro's bit for bit."""

    def gaussian():
        pyro.sample("x", dist.MultivariateNormal(torch.zeros(3, dtype=D), scale_tril=torch.eye(3, dtype=D) * 2.0))
        pyro.sample("y", dist.Normal(torch.tensor(0.5, dtype=D), 1.0))

    pyro.set_rng_seed(0)
    kernel = RiemannianNUTS(gaussian)
    kernel.setup(0)
    assert kernel.potential_kind == "lean" and kernel.potential_fn.jacobians == []
    _, pyro_fn, _, _ = initialize_model(gaussian, (), transforms=kernel.transforms, initial_params={})
    for z in _points(kernel.initial_params, kernel.transforms, set()):
        g_ref, u_ref = potential_grad(pyro_fn, {k: v.clone() for k, v in z.items()})
        g, u = potential_grad(kernel.potential_fn, {k: v.clone() for k, v in z.items()})
        assert torch.equal(u, u_ref) and all(torch.equal(g[k], g_ref[k]) for k in g_ref)
