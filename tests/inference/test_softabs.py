"""SoftAbs RMHMC: the θ-gradient of H against autograd, reversibility, and Neal's funnel."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS

from dlmppl import manifolds
from dlmppl.inference.hmc import RiemannianHMC
from dlmppl.inference.nuts import RiemannianNUTS
from dlmppl.inference.softabs import SoftAbsIntegrator, softabs


def _funnel(z):
    v, x = z["v"], z["x"]
    return v.pow(2).sum() / 18 + 0.5 * (x.pow(2) * torch.exp(-v)).sum() + 4.5 * v.sum()


def _quartic(z):
    t = z["t"]
    return 0.25 * t.pow(4).sum() + t[0] * t[1] - 0.3 * t[1] * t[2] ** 2


def test_softabs_function():
    lam = torch.tensor([-3.0, -1e-9, 0.0, 1e-5, 2.0], dtype=torch.float64)
    g, gp = softabs(lam, 10.0)
    ref = lam * torch.cosh(10 * lam) / torch.sinh(10 * lam)
    assert torch.allclose(g[[0, 3, 4]], ref[[0, 3, 4]], rtol=1e-9)
    assert torch.allclose(g[1:3], torch.full((2,), 0.1, dtype=torch.float64))
    eps = 1e-6
    num = (softabs(lam + eps, 10.0)[0] - softabs(lam - eps, 10.0)[0]) / (2 * eps)
    assert torch.allclose(gp, num, atol=1e-6)


def test_dH_dtheta_matches_autograd():
    """The closed-form gradient (Betancourt 2013, eqs. 17-19) equals autograd of H(θ, p)."""
    theta = torch.tensor([0.3, -0.8, 1.1], dtype=torch.float64)
    p = torch.tensor([0.5, 1.5, -0.7], dtype=torch.float64)
    integ = SoftAbsIntegrator(_quartic, {"t": theta}, alpha=2.0)
    s = integ._state(theta)
    ours = integ._dH_dtheta(s, p)

    def ham(t):
        pe = _quartic({"t": t})
        h = torch.autograd.functional.hessian(lambda u: _quartic({"t": u}), t, create_graph=True)
        lam, q = torch.linalg.eigh(h)
        g = lam / torch.tanh(2.0 * lam)
        ginv = q @ torch.diag(1 / g) @ q.T
        return pe + 0.5 * g.log().sum() + 0.5 * p @ ginv @ p

    t = theta.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(ham(t), t)
    assert torch.allclose(ours, ref, rtol=1e-7, atol=1e-9)
    ke, vel, cov = integ.kinetic(s, {"theta": p})
    assert torch.allclose(ke + s.pe, ham(theta.clone()).detach(), rtol=1e-10)


def test_generalized_leapfrog_reversible():
    pyro.set_rng_seed(0)
    theta = torch.tensor([0.3, -0.8, 1.1], dtype=torch.float64)
    integ = SoftAbsIntegrator(_quartic, {"t": theta}, alpha=2.0, fixed_point_iters=30)
    s, _ = integ.prepare({"t": theta})
    r = integ.sample_momentum(s)
    z1, r1, s1, _ = integ.leapfrog({"t": theta}, r, s, 0.1, 5)
    z2, r2, _, _ = integ.leapfrog(z1, {"theta": -r1["theta"]}, s1, 0.1, 5)
    assert torch.allclose(z2["t"], theta, atol=1e-8)
    assert torch.allclose(-r2["theta"], r["theta"], atol=1e-8)


def test_softabs_rejects_manifold_sites():
    k = RiemannianHMC(potential_fn=lambda z: (z["x"] * 0).sum(), manifolds={"x": manifolds.Sphere()}, metric="softabs")
    init = {"x": torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)}
    with pytest.raises(ValueError, match="softabs"):
        MCMC(k, num_samples=2, warmup_steps=1, initial_params=init, disable_progbar=True).run()


@pytest.mark.slow
def test_funnel_softabs_vs_nuts():
    """Neal's funnel, 10-d: SoftAbs NUTS gets the log-scale quantiles of N(0, 3²); Pyro's NUTS diverges more."""
    init = {"v": torch.zeros(1, dtype=torch.float64), "x": torch.full((9,), 0.5, dtype=torch.float64)}
    pyro.set_rng_seed(0)
    kernel = RiemannianNUTS(potential_fn=_funnel, metric="softabs", max_tree_depth=5, fixed_point_iters=6)
    mcmc = MCMC(kernel, num_samples=300, warmup_steps=100, initial_params=init, disable_progbar=True)
    mcmc.run()
    v = mcmc.get_samples()["v"].squeeze(-1)
    q = torch.quantile(v, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    ref = torch.tensor([-3.845, 0.0, 3.845], dtype=torch.float64)
    # a short chain (300 draws, ESS of v of a few dozen): tolerance 0.5 σ
    assert (q - ref).abs().max() < 1.5, q
    ours = len(mcmc._diagnostics[0]["divergences"])
    pyro.set_rng_seed(0)
    nuts = MCMC(NUTS(potential_fn=_funnel), num_samples=300, warmup_steps=100, initial_params=init, disable_progbar=True)
    nuts.run()
    theirs = len(nuts._diagnostics[0]["divergences"])
    assert ours < theirs
