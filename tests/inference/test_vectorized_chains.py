"""Vectorised chains (dlmppl.inference.vectorized, MCMC(chain_method="vectorized")): the batched
potential against the kernel's scalar one, shapes and diagnostics, the law of the draws against exact
samplers, and chain independence of the masked NUTS tree."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import dlmppl
from dlmppl.distributions import ManifoldUniform
from dlmppl.inference import MCMC, RiemannianHMC, RiemannianNUTS
from dlmppl.inference.vectorized import BatchedMasses, batched_integrator, batched_nuts_transition
from tests import statistical as st
from tests.inference._targets import scipy_vmf

D64 = torch.float64


def _obs(n=5, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=D64) + torch.tensor([2.0] + [0.0] * (d - 1), dtype=D64)
    return x / x.norm(dim=-1, keepdim=True)


def _joint_model(obs, kappa, scales):
    """mu: vMF-mean posterior on S^{d-1} (uniform prior, known κ; broadcasting likelihood),
    s ~ HalfNormal(1) (Euclidean constrained), x ~ N(0, diag(scales²)) in a plate."""

    def model():
        mu = pyro.sample("mu", ManifoldUniform(dlmppl.manifolds.Sphere(), event_shape=(obs.shape[-1],), dtype=D64))
        pyro.factor("lik", kappa * (mu @ obs.T).sum(-1))
        pyro.sample("s", dist.HalfNormal(torch.tensor(1.0, dtype=D64)))
        with pyro.plate("coords", scales.shape[0]):
            pyro.sample("x", dist.Normal(torch.zeros_like(scales), scales))

    return model


def _run(kernel, num_samples, warmup, num_chains=3, **kw):
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=num_chains,
                chain_method="vectorized", disable_progbar=True, **kw)  # fmt: skip
    mcmc.run()
    return mcmc


def test_batched_potential_equals_scalar_potentials():
    """The batched potential (one trace under the chains' plate) equals the kernel's scalar potential
    of each chain, and so do the gradients (1e-10, float64), with a plate, a constrained site and a factor."""
    obs, scales = _obs(), torch.tensor([0.5, 2.0], dtype=D64)
    mcmc = _run(RiemannianNUTS(_joint_model(obs, 3.0, scales)), 0, 0, num_chains=4)
    kernel = mcmc.kernel
    z = {k: v.clone() for k, v in mcmc._vz.items()}
    z["s"] = torch.randn(4, dtype=D64)  # unconstrained log-scale
    z["x"] = torch.randn(4, 2, dtype=D64)
    grads, pe = mcmc._vintegrator.init(z)
    assert pe.shape == (4,)
    for k in range(4):
        zk = {n: v[k].clone().requires_grad_(True) for n, v in z.items()}
        ref = kernel.potential_fn(zk)
        gk = torch.autograd.grad(ref, list(zk.values()))
        assert abs(float(pe[k] - ref.detach())) < 1e-10
        for (n, _), g in zip(zk.items(), gk, strict=True):
            assert torch.allclose(grads[n][k], g, atol=1e-10, rtol=0), n


def test_shapes_diagnostics_and_inference_data():
    obs, scales = _obs(), torch.tensor([0.5, 2.0], dtype=D64)
    pyro.set_rng_seed(st.seed(0))
    mcmc = _run(RiemannianNUTS(_joint_model(obs, 3.0, scales)), 10, 15)
    s = mcmc.get_samples(group_by_chain=True)
    assert s["mu"].shape == (3, 10, 3) and s["s"].shape == (3, 10) and s["x"].shape == (3, 10, 2)
    assert mcmc.get_samples()["mu"].shape == (30, 3)
    assert s["mu"].dtype == D64 and bool((s["s"] > 0).all())
    assert float((s["mu"].norm(dim=-1) - 1).abs().max()) < 1e-12
    diag = mcmc.diagnostics()
    assert set(diag["divergences"]) == {"chain 0", "chain 1", "chain 2"}
    assert "r_hat" in diag["mu"] and "n_eff" in diag["mu"]
    steps = [mcmc._diagnostics[k]["warmup"]["step_size"] for k in range(3)]
    assert len(set(steps)) == 3  # each chain adapts its own step size
    assert all(d["manifold_inverse_mass"]["mu"] > 0 for d in mcmc._diagnostics)
    idata = dlmppl.diagnostics.to_inference_data(mcmc)
    for key in ("diverging", "energy", "step_size", "acceptance_rate", "tree_depth", "n_steps"):
        assert idata.sample_stats[key].shape == (3, 10), key
    assert idata.posterior["mu"].shape == (3, 10, 3)
    assert (idata.sample_stats["step_size"].values[:, 0] == steps).all()
    mcmc.summary()


def test_hmc_float32_and_empty_run():
    def model():
        pyro.sample("mu", ManifoldUniform(dlmppl.manifolds.Sphere(), event_shape=(4,), dtype=torch.float32))
        pyro.sample("s", dist.LogNormal(torch.tensor(0.0), torch.tensor(1.0)))

    pyro.set_rng_seed(st.seed(0))
    mcmc = _run(RiemannianHMC(model, trajectory_length=1.0), 10, 10, num_chains=2)
    s = mcmc.get_samples(group_by_chain=True)
    assert s["mu"].shape == (2, 10, 4) and s["mu"].dtype == torch.float32
    assert "tree_depth" not in mcmc._diagnostics[0].sample_stats
    empty = _run(RiemannianNUTS(model), 0, 5, num_chains=2)
    assert empty.get_samples(group_by_chain=True)["mu"].shape == (2, 0, 4)


def test_errors():
    obs = _obs()

    def not_broadcasting():
        mu = pyro.sample("mu", ManifoldUniform(dlmppl.manifolds.Sphere(), event_shape=(3,), dtype=D64))
        pyro.factor("lik", 3.0 * (obs @ mu).sum())  # right for one chain; mixes the chains of a batch

    with pytest.raises(ValueError, match="broadcast"):
        _run(RiemannianNUTS(not_broadcasting), 2, 2, num_chains=3)  # a wrong value
    with pytest.raises(ValueError, match="broadcast"):
        _run(RiemannianNUTS(not_broadcasting), 2, 2, num_chains=2)  # a shape error
    with pytest.raises(ValueError, match="full_mass"):
        MCMC(RiemannianNUTS(not_broadcasting, full_mass=True), 2, num_chains=2, chain_method="vectorized")
    with pytest.raises(ValueError, match="chain_method"):
        MCMC(RiemannianNUTS(not_broadcasting), 2, chain_method="vectorised")
    with pytest.raises(ValueError, match="num_chains"):
        MCMC(RiemannianNUTS(not_broadcasting), 2, num_chains=0, chain_method="vectorized")
    def discrete():
        c = pyro.sample("c", dist.Bernoulli(torch.tensor(0.3, dtype=D64)))
        pyro.sample("y", dist.Normal(c, 1.0), obs=torch.tensor(0.5, dtype=D64))

    with pytest.raises(ValueError, match="discrete"):
        _run(RiemannianNUTS(discrete), 2, 2)
    with pytest.raises(ValueError, match="initial_params"):
        _run(RiemannianNUTS(potential_fn=lambda z: z["x"].pow(2).sum(-1)), 2, 2)


def test_chains_do_not_interact():
    """A chain's NUTS transition does not depend on the other chains: chain 0 gives the same tree,
    draw and statistics whether chain 1 stops at once (large step) or doubles to the maximal depth
    (tiny step).  Seen failing without the masking (every chain's tree doubled while any chain was
    still active: chain 0's tree depth was 6 instead of 1)."""
    loc = torch.tensor([0.0, 0.0, 1.0], dtype=D64)
    geoms = {"mu": dlmppl.inference.integrators.geometry_of(dlmppl.manifolds.Sphere())}
    masses = BatchedMasses({}, {"mu": torch.ones(2, dtype=D64)})
    integ = batched_integrator(lambda z: -8.0 * (z["mu"] * loc).sum(-1), geoms, masses)
    x0 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.3], [0.3, 1.0, 0.1]], dtype=D64), dim=-1)
    outs = []
    for eps1 in (1.5, 1e-3):
        torch.manual_seed(st.seed(3))
        z = {"mu": x0.clone()}
        aux, pe = integ.init(z)
        info = batched_nuts_transition(integ, z, pe, aux, torch.tensor([0.3, eps1], dtype=D64), max_tree_depth=6)
        outs.append(info)
    a, b = outs
    assert int(b.tree_depth[1]) == 6 and int(a.tree_depth[1]) < 6  # chain 1 did run differently
    assert int(a.tree_depth[0]) == int(b.tree_depth[0]) and int(a.num_proposals[0]) == int(b.num_proposals[0])
    assert torch.equal(a.z["mu"][0], b.z["mu"][0])
    assert float(a.accept_prob[0]) == float(b.accept_prob[0])


@pytest.mark.statistical
def test_law_against_exact_samplers():
    """The draws of 4 vectorised chains against exact draws, each family with a false alarm of ALPHA/3
    (tests/statistical.py: thinning by 2τ, energy and KS tests): the vMF-mean posterior on S^2
    (uniform prior, κ known: vMF(Σx/|Σx|, κ|Σx|)), a HalfNormal scale (constrained Euclidean site)
    and a 2-d Gaussian in a plate."""
    obs, kappa = _obs(n=5, seed=st.seed(7) % 1000), 1.5
    scales = torch.tensor([0.5, 2.0], dtype=D64)
    pyro.set_rng_seed(st.seed(0))
    mcmc = _run(RiemannianNUTS(_joint_model(obs, kappa, scales)), 250, 60, num_chains=4)
    s = mcmc.get_samples(group_by_chain=True)
    resultant = kappa * obs.sum(0)
    conc = float(resultant.norm())
    exact_mu = scipy_vmf(resultant / conc, conc, 2000)
    st.assert_same_law(s["mu"], exact_mu, x_chain=True, chains=True, what="vMF-mean posterior", alpha=st.ALPHA / 3)
    st.assert_ks(s["s"], lambda q: 2 * torch.distributions.Normal(0.0, 1.0).cdf(torch.as_tensor(q)).numpy() - 1,
                 x_chain=True, chains=True, what="HalfNormal scale", alpha=st.ALPHA / 3)  # fmt: skip
    exact_x = torch.randn(2000, 2, dtype=D64, generator=torch.Generator().manual_seed(st.seed(5))) * scales
    st.assert_same_law(s["x"], exact_x, x_chain=True, chains=True, what="Gaussian in a plate", alpha=st.ALPHA / 3)
    assert math.isfinite(float(mcmc._diagnostics[0]["acceptance rate"]))


def test_geometries_broadcast_over_chains():
    """Every HMC geometry takes points (K, *event) with per-chain flow times (K, 1, ...): the batched
    flow and kinetic energy equal K single-chain calls (seen failing for SPD and SO(3), whose flows
    scaled (..., n) eigenvalues / axis vectors by a time shaped like the matrix)."""
    from dlmppl.inference.integrators import geometry_of
    from dlmppl.inference.vectorized import _kinetic_fn
    from tests.device_cases import FAMILIES, event_of, tangent

    K = 3
    t = torch.tensor([0.1, -0.3, 0.5], dtype=D64)
    for M in FAMILIES:
        try:
            g = geometry_of(M)
        except ValueError:
            continue  # no exact flow (Scaled)
        ev = event_of(g)
        gen = torch.Generator().manual_seed(0)
        try:
            o = g.origin(ev, dtype=D64).expand((K, *ev)).clone()
            x = g.exp(o, tangent(g, o, 0.5, gen))
        except (NotImplementedError, ValueError):
            x = g.random_uniform((K, *ev), dtype=D64)
        v = tangent(g, x, 0.7, gen)
        xb, vb = g.flow(x, v, t.reshape((K,) + (1,) * len(ev)))
        for k in range(K):
            xk, vk = g.flow(x[k], v[k], float(t[k]))
            assert torch.allclose(xb[k], xk, atol=1e-10) and torch.allclose(vb[k], vk, atol=1e-10), g.name
        kinetic = torch.stack([g.kinetic(x[k], v[k]) for k in range(K)])
        assert torch.allclose(_kinetic_fn(g)(x, v), kinetic, atol=1e-12), g.name


def test_batched_potential_is_the_traced_potential():
    """The batched potential (one messenger adding up each site's scaled, masked log_prob per chain as
    the model runs) is the sum that ``poutine.trace(poutine.condition(model))`` under the chains' plate
    followed by ``Trace.compute_log_prob`` gives, bit for bit, and so is its gradient: a constrained
    site (log|det J|), a plate, ``poutine.scale``/``poutine.mask``, a factor and a manifold site."""
    from pyro import poutine
    from torch.distributions import biject_to, constraints
    from torch.distributions.transforms import identity_transform

    from dlmppl.inference.integrators import potential_grad
    from dlmppl.inference.vectorized import batched_potential

    K, obs = 4, _obs(n=5)
    y = torch.randn(5, dtype=D64, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([True, False, True, True, True])

    def model():
        s = pyro.sample("s", dist.HalfNormal(torch.tensor(1.0, dtype=D64)))
        mu = pyro.sample("mu", ManifoldUniform(dlmppl.manifolds.Sphere(), event_shape=(3,), dtype=D64))
        with pyro.plate("data", 5, dim=-1), poutine.scale(scale=2.0), poutine.mask(mask=mask):
            pyro.sample("obs", dist.Normal((mu * obs).sum(-1), s), obs=y)
        pyro.factor("f", 3.0 * mu[..., 0])

    transforms = {"s": biject_to(constraints.positive).inv, "mu": identity_transform}
    shapes = {"s": ((), ()), "mu": ((), (3,))}
    potential = batched_potential(model, (), {}, transforms, shapes, K, 1)

    def traced(z):
        t = transforms["s"]
        s = t.inv(z["s"])
        log_joint = t.inv.log_abs_det_jacobian(z["s"], s).reshape(K, -1).sum(-1)
        values = {"s": s.reshape(K, 1), "mu": z["mu"].reshape(K, 1, 3)}
        with pyro.plate("_chains", K, dim=-2):
            trace = poutine.trace(poutine.condition(model, values)).get_trace()
        trace.compute_log_prob(site_filter=lambda name, site: type(site["fn"]).__name__ != "_Subsample")
        for site in trace.nodes.values():
            if site["type"] == "sample" and "log_prob" in site:
                lp = site["log_prob"]
                lp = lp.expand((K,) + lp.shape[1:]) if lp.dim() >= 2 else lp.sum().expand(K)
                log_joint = log_joint + lp.reshape(K, -1).sum(-1)
        return -log_joint

    g = torch.Generator().manual_seed(st.seed(2))
    z = {"s": torch.randn(K, dtype=D64, generator=g), "mu": torch.randn(K, 3, dtype=D64, generator=g)}
    z["mu"] = z["mu"] / z["mu"].norm(dim=-1, keepdim=True)
    grads, pe = potential_grad(potential, z)
    ref_grads, ref = potential_grad(traced, z)
    assert pe.shape == (K,) and torch.equal(pe, ref)
    for name in z:
        assert torch.equal(grads[name], ref_grads[name]), name
