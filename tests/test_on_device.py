"""The core of the library on the test device (issue 16, point 1).

Every test here takes the ``device`` fixture (tests/conftest.py): on the default CPU run
they run on the CPU; ``DLMPPL_TEST_DEVICE=cuda`` (or ``--device cuda``, ``bash run.sh gpu``)
runs the same tests on the GPU, and ``pytest -m on_device`` selects exactly them.  Off the
CPU the fixture makes the device the default one, so the CPU references here are built
with an explicit ``device="cpu"``.

What runs on the device, checked against the CPU in float64 (an independent evaluation
of the same maps; float32 results within float32 round-off of it):
geometry maps of every family (exp, log, dist, inner, proju, exact HMC flow),
``log_prob`` of every public distribution family at the same points, ``rsample`` with
gradients (on the support, the inputs' dtype and device), the law of vMF draws against its
closed-form mean resultant length, OT (exact, Sinkhorn) and topological losses with their
gradients, a few RiemannianNUTS iterations, and ManifoldVAE training steps (Poincaré,
sphere, learned-curvature κ-stereographic).
"""

from __future__ import annotations

import copy
import math

import pyro
import pytest
import torch
from pyro.infer import MCMC, SVI, Trace_ELBO

from dlmppl import losses
from dlmppl import manifolds as M
from dlmppl.constraints import manifold as on_manifold
from dlmppl.distributions import ManifoldUniform, VonMisesFisher
from dlmppl.geometry import geometry_of
from tests import statistical as st
from tests.device_cases import DISTRIBUTIONS, FAMILIES, c, event_of, tangent, unit

F32, F64 = torch.float32, torch.float64


def on_cpu():
    """The CPU references run with the CPU as default device (the fixture makes the test device the default)."""
    return torch.device("cpu")


def _tol(dtype):
    return {"rtol": 2e-4, "atol": 2e-4} if dtype == F32 else {"rtol": 1e-9, "atol": 1e-9}


def _close(got, want, dtype, device, what):
    assert got.device.type == device.type, f"{what}: on {got.device}, inputs on {device}"
    assert got.dtype == dtype, f"{what}: {got.dtype} from {dtype} inputs"
    torch.testing.assert_close(got.cpu().to(F64), want, **_tol(dtype), msg=lambda m: f"{what}: {m}")


# ----------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("man", FAMILIES, ids=lambda m: type(m).__name__)
def test_geometry_maps_on_device_match_cpu_float64(man, dtype, device):
    g = geometry_of(man)
    gen = torch.Generator().manual_seed(0)
    event = event_of(g)
    with on_cpu():
        o = g.origin(event, F64, device="cpu").expand((4,) + event)
        x = g.exp(o, tangent(g, o, 0.3, gen))
        y = g.exp(o, tangent(g, o, 0.3, gen))
        u = tangent(g, x, 0.2, gen)
    flows = not isinstance(man, M.Scaled)  # HMC refuses a rescaled metric by design

    def maps(g, x, y, u):
        out = {"exp": g.exp(x, u), "log": g.log(x, y), "dist": g.dist(x, y), "inner": g.inner(x, u, u),
               "proju": g.proju(x, u + 0.1)}
        if flows:
            out["flow"] = g.for_hmc().flow(x, u, 0.3)[0]
        return out

    with on_cpu():
        want = maps(g, x, y, u)
    gd = geometry_of(copy.deepcopy(man).to(device))  # the shared FAMILIES stay on the CPU
    got = maps(gd, x.to(device, dtype), y.to(device, dtype), u.to(device, dtype))
    for k in want:
        _close(got[k], want[k], dtype, device, f"{g.name}.{k}")


# ------------------------------------------------------------------------------ distributions


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_log_prob_on_device_matches_cpu_float64(name, dtype, device):
    with on_cpu():
        ref = DISTRIBUTIONS[name](F64, "cpu")
        x = ref.sample((6,))
        want = ref.log_prob(x)
    d = DISTRIBUTIONS[name](dtype, device)
    _close(d.log_prob(x.to(device, dtype)), want, dtype, device, f"{name}.log_prob")


@pytest.mark.parametrize("name", [n for n in DISTRIBUTIONS if DISTRIBUTIONS[n](F32).has_rsample])
def test_rsample_on_device_stays_on_the_support(name, device):
    d = DISTRIBUTIONS[name](F32, device)
    z = d.rsample((7,))
    assert z.device.type == device.type and z.dtype == F32, (z.device, z.dtype)
    assert torch.isfinite(z).all()
    assert d.support.check(z).all(), f"{name}: draws off the support"


def test_reparameterized_gradients_on_device(device):
    from dlmppl.distributions import PowerSpherical, WrappedNormal

    loc = unit(4, d=3, dtype=F32, dev=device).requires_grad_()
    kappa = c([0.5, 2.0, 10.0, 200.0], F32, device).requires_grad_()
    scale = c([0.3, 0.5, 1.0, 2.0], F32, device).requires_grad_()
    ball = M.PoincareBall(1.0).to(device)
    z = VonMisesFisher(loc, kappa).rsample((3,)) + PowerSpherical(loc, kappa).rsample((3,))
    w = WrappedNormal(ball, 0.2 * loc[:, :2], scale).rsample((3,))
    (z.pow(2).sum() + w.pow(2).sum()).backward()
    for t in (loc, kappa, scale):
        assert t.grad.device.type == device.type and t.grad.dtype == F32 and torch.isfinite(t.grad).all()
    assert kappa.grad.abs().sum() > 0 and scale.grad.abs().sum() > 0


@pytest.mark.statistical
def test_vmf_draws_on_device_have_the_closed_form_mean_resultant_length(device):
    """E[μᵀx] = coth κ − 1/κ on S² (an independent closed form); one z-test per κ, false alarm 1e-4 in all."""
    kappa = c([0.5, 4.0, 40.0], F32, device)
    d = VonMisesFisher(unit(d=3, dtype=F32, dev=device).expand(3, 3), kappa)
    n = 20_000
    w = (d.rsample((n,)) * d.loc).sum(-1).to(F64).cpu()  # (n, 3)
    k = kappa.to(F64).cpu()
    truth = 1 / torch.tanh(k) - 1 / k
    for j in range(3):
        st.assert_mc_estimate(w[:, j].mean(), w[:, j].std() / n**0.5, truth[j], what=f"E[mu.x], kappa={k[j]:g}",
                              alpha=st.ALPHA / 3)


# ------------------------------------------------------------------------------------- losses


def _cloud(n, d, seed):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed), device="cpu")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_losses_and_gradients_on_device_match_cpu_float64(dtype, device):
    s = _cloud(24, 3, 0)
    s = s / s.norm(dim=-1, keepdim=True)
    t = _cloud(20, 3, 1)
    t = t / t.norm(dim=-1, keepdim=True)
    ang = torch.linspace(0, 2 * math.pi, 33, dtype=F64, device="cpu")[:-1]
    circle = 0.4 * torch.stack([ang.cos(), ang.sin()], -1) + 0.02 * _cloud(32, 2, 2)
    hx = _cloud(32, 5, 3)
    sphere, ball = M.Sphere(), M.PoincareBall(1.0).to("cpu")

    def run(s, t, circle, hx, ball):
        tol = 1e-9 if s.dtype == F64 else 1e-5
        s, circle = s.clone().requires_grad_(), circle.clone().requires_grad_()
        out = {
            "emd": losses.wasserstein(s, t, sphere, p=2, method="emd"),
            "sinkhorn": losses.wasserstein(s, t, sphere, p=2, method="sinkhorn", reg=0.1, tol=tol, max_iter=5000),
            "topological": losses.topological(hx, circle, z_manifold=ball),
            "target": losses.topology_target_loss(circle, betti={1: 1}, manifold=ball),
        }
        sum(out.values()).backward()
        out["grad_s"], out["grad_circle"] = s.grad, circle.grad
        return out

    with on_cpu():
        want = run(s, t, circle, hx, ball)
    got = run(s.to(device, dtype), t.to(device, dtype), circle.to(device, dtype), hx.to(device, dtype), M.PoincareBall(1.0).to(device))
    tol = {"rtol": 2e-3, "atol": 2e-4} if dtype == F32 else {"rtol": 1e-7, "atol": 1e-9}
    for k in want:
        assert got[k].device.type == device.type and got[k].dtype == dtype, (k, got[k].device, got[k].dtype)
        torch.testing.assert_close(got[k].detach().cpu().to(F64), want[k].detach(), **tol, msg=lambda m, k=k: f"{k}: {m}")


# ---------------------------------------------------------------------------------------- MCMC


def test_riemannian_nuts_on_device(device):
    with on_cpu():
        obs = VonMisesFisher(unit(d=3, dtype=F64), c(8.0, F64)).sample((30,))
    obs = obs.to(device)

    def model(obs):
        mu = pyro.sample("mu", ManifoldUniform(M.Sphere(), (3,), dtype=obs.dtype, device=obs.device))
        kappa = pyro.sample("kappa", pyro.distributions.Gamma(c(2.0, obs.dtype, obs.device), c(0.2, obs.dtype, obs.device)))
        with pyro.plate("data", obs.shape[0], device=obs.device):
            pyro.sample("obs", VonMisesFisher(mu, kappa), obs=obs)

    from dlmppl.inference import RiemannianNUTS

    mcmc = MCMC(RiemannianNUTS(model, max_tree_depth=5), num_samples=10, warmup_steps=10, disable_progbar=True)
    mcmc.run(obs)
    s = mcmc.get_samples()
    for k, v in s.items():
        assert v.device.type == device.type and v.dtype == F64 and torch.isfinite(v).all(), k
    assert on_manifold(M.Sphere()).check(s["mu"]).all()
    # 30 draws at kappa = 8 pin the mean direction: the draws sit near the data's mean direction
    assert (s["mu"] @ (obs.mean(0) / obs.mean(0).norm())).min() > 0.8


# -------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("latent", ["poincare", "sphere", "stereographic"])
def test_manifold_vae_trains_on_device(latent, device):
    from dlmppl.inference import RiemannianAdam
    from dlmppl.models import ManifoldVAE

    x = (torch.rand(32, 10, generator=torch.Generator().manual_seed(4), device="cpu") < 0.3).float().to(device)
    vae = ManifoldVAE(10, latent, 2, hidden=(16,), likelihood="bernoulli").to(device)
    svi = SVI(vae.model, vae.guide, RiemannianAdam({"lr": 0.05}), Trace_ELBO())
    first = svi.evaluate_loss(x)
    for _ in range(15):
        svi.step(x)
    last = sum(svi.evaluate_loss(x) for _ in range(5)) / 5
    assert math.isfinite(first) and math.isfinite(last)
    for name, p in vae.named_parameters():
        assert p.device.type == device.type and torch.isfinite(p).all(), name
    (z,) = vae.codes(x)
    assert z.device.type == device.type
    assert on_manifold(vae.components[0].manifold).check(z.detach()).all()
    if latent == "stereographic":  # the learned curvature lives on the device with the rest
        assert vae.curvatures()[0].device.type == device.type
    assert last < first, (first, last)  # 15 Adam steps at lr 0.05 cut the ELBO loss of this small net
