"""SoftAbs RMHMC: the θ-gradient of H against autograd, reversibility, and Neal's funnel."""

from __future__ import annotations

import pytest
import torch
from pyro.infer import MCMC

from dlmppl import manifolds
from dlmppl.inference.kernels import RiemannianHMC, RiemannianNUTS
from dlmppl.inference.softabs import SoftAbsIntegrator, softabs
from tests import statistical as st


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


def _funnel_end_states(num_chains, num_transitions, **kernel_kw):
    """End states of ``num_chains`` SoftAbs-NUTS chains, each started at an exact draw of the funnel
    and run ``num_transitions`` transitions of one fixed kernel (fixed step, no adaptation).

    If the kernel leaves the funnel invariant, every state of every chain is an exact draw, so the
    end states are independent exact draws (no burn-in, no autocorrelation, no ESS to estimate):
    returns ``v`` ``(num_chains,)``, ``u = x e^{-v/2}`` ``(num_chains, 9)`` (iid N(0, 1) under the
    funnel) and the number of divergent transitions.
    """
    vs, us, div = [], [], 0
    for _ in range(num_chains):
        v0 = 3.0 * torch.randn(1, dtype=torch.float64)
        init = {"v": v0, "x": torch.randn(9, dtype=torch.float64) * (0.5 * v0).exp()}
        kernel = RiemannianNUTS(potential_fn=_funnel, metric="softabs", max_tree_depth=5, step_size=0.3,
                                adapt_step_size=False, adapt_mass_matrix=False, **kernel_kw)
        mcmc = MCMC(kernel, num_samples=num_transitions, warmup_steps=0, initial_params=init, disable_progbar=True)
        mcmc.run()
        z = mcmc.get_samples()
        v, x = z["v"][-1, 0], z["x"][-1]
        vs.append(v)
        us.append(x * (-0.5 * v).exp())
        div += len(mcmc._diagnostics[0]["divergences"])
    return torch.stack(vs), torch.stack(us), div


def _assert_funnel_law(v, u):
    from scipy import stats

    st.assert_ks(v / 3.0, stats.norm.cdf, what="v / 3 of the end states", alpha=st.ALPHA / 2)
    st.assert_ks(u, stats.norm.cdf, what="x e^{-v/2} of the end states", alpha=st.ALPHA / 2)


@pytest.mark.slow
@pytest.mark.statistical
def test_funnel_softabs_vs_nuts():
    """Neal's funnel, 10-d: SoftAbs NUTS leaves the funnel invariant (v ~ N(0, 3²), x | v ~ N(0, e^v)).

    100 chains started at exact draws, 2 transitions each at a fixed step 0.3 (the adapted step is
    ≈ 0.31): KS tests of v and of x e^{-v/2} on the end states, exact false alarm 1e-4 together.
    A wrong kinetic energy (the ½ log det G term dropped) fails it (measured p(v) = 5e-15 with 100
    chains x 3 transitions).  Fixed-step, exact-start chains test invariance, not exploration:
    how well an adapted chain explores the neck is a performance question (tutorial 05).

    This test used to run one adapted 300-draw chain and compare the quantiles of v loosely, then
    assert fewer divergences than Pyro's Euclidean NUTS (``ours < theirs``: two random counts,
    measured 4 vs 17 here and 18 vs 0 on another machine).  The quantiles of a 300-draw chain
    cannot be checked with a stated error rate: the ESS of v is ≈ 26 there, and on seed 2 the
    chain entered the neck (v < -3.85) once, so the ESS estimate of that indicator (304) was far
    off and an MCSE-based check failed (CDF 0.003 vs 0.1).  Divergences: at most 20% of the
    transitions (exact binomial test; measured: 1-3 of 160 over seeds 4-7).
    """
    v, u, div = _funnel_end_states(100, 2)
    _assert_funnel_law(v, u)
    st.assert_rate(div, 100 * 2, at_most=0.2, what="divergent transitions", alpha=st.ALPHA)


@pytest.mark.slow
@pytest.mark.statistical
def test_funnel_invariance_test_fails_without_the_log_determinant(monkeypatch):
    """Test of the test: with ½ log det G dropped from the kinetic energy the chain targets
    e^{-U} |G|^{1/2} instead, and the end states' law moves away from the funnel."""
    orig = SoftAbsIntegrator.kinetic

    def kinetic(self, s, r):
        ke, vel, cov = orig(self, s, r)
        return ke - 0.5 * s.g.log().sum(), vel, cov

    monkeypatch.setattr(SoftAbsIntegrator, "kinetic", kinetic)
    v, u, _ = _funnel_end_states(100, 2)
    with pytest.raises(AssertionError, match="combined p"):
        _assert_funnel_law(v, u)
