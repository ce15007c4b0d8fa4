"""Device and dtype discipline of the library's main entry points (issue 16, point 1).

DESIGN.md: device and dtype follow the inputs, and nothing reads a tensor on the host on a
hot path.  Without a GPU both are checked on the CPU:

* Device: the entry points run under :class:`meta_default`, a torch function mode that
  sends every tensor *dlmppl's own code* creates without ``device=`` to the ``meta``
  device while the inputs (and the models' parameters) live on the CPU; the first
  operation that mixes it with a CPU tensor raises ("Tensor on device meta is not on the
  expected device cpu"): exactly the tensors that would land on the CPU while the inputs
  are on ``cuda``.  (``torch.device("meta")`` as a context would also flag
  ``torch.as_tensor(t)`` of a tensor, which keeps ``t``'s device, and tensors made by
  Pyro, POT or the test; the mode leaves those out.)
* Dtype: the same calls in float32 and float64; every floating output (values, draws,
  gradients, parameters after a step) keeps the inputs' dtype.
* Host syncs: :class:`count_host_syncs` counts ``item``/``bool``/``float``/``tolist``/
  ``cpu``/``numpy`` calls made by dlmppl's code: none in the geometry maps, a measured
  budget per VAE training step.

Not flagged, on purpose: the CPU solvers (exact OT and the persistence pairing compute on
the host by design, DESIGN.md) and the constants cached on the host once.

The harness is seen to fail: the ``test_a_*`` tests break a geometry map on purpose (a
``torch.zeros`` without ``device=``, a float64 constant, a ``bool()`` of a tensor) and
check that it is caught; reverting the NUTS coin flip to ``torch.rand(())`` fails
``test_mcmc_kernels_follow_the_inputs[nuts-*]``.
"""

from __future__ import annotations

import math
import sys

import pyro
import pytest
import torch
from pyro.infer import MCMC, SVI, Trace_ELBO
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from dlmppl import manifolds as M
from dlmppl.distributions import ManifoldUniform, VonMisesFisher, WrappedNormal
from dlmppl.geometry import geometry_of
from tests.device_cases import DISTRIBUTIONS, FAMILIES
from tests.device_cases import c as _c
from tests.device_cases import event_of as _event
from tests.device_cases import tangent as _tangent
from tests.device_cases import unit as _unit

DTYPES = [torch.float32, torch.float64]
DT_IDS = ["f32", "f64"]


def _called_from_library(frame) -> bool:
    """Whether the first caller outside torch is dlmppl's own code (not Pyro, POT or the test)."""
    # torch's own frames, and another mode of this module stacked under this one
    while frame is not None and (frame.f_globals.get("__name__", "").startswith("torch")
                                 or frame.f_code.co_name == "__torch_function__"):
        frame = frame.f_back
    return frame is not None and frame.f_globals.get("__name__", "").startswith("dlmppl")


class meta_default(TorchFunctionMode):
    """Tensors dlmppl creates without ``device=`` go to ``meta``: mixing them with CPU inputs raises.

    ``torch.device("meta")`` as a context would do the same, with two false positives this
    mode leaves out: ``torch.as_tensor(t)`` of a tensor ``t`` keeps ``t``'s device when
    no default device is set (the context would move it to ``meta``), and factories called
    by Pyro, POT or the test itself are not the library's to fix.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None:
            data = args[0] if args else kwargs.get("data")
            keeps_device = func in (torch.as_tensor, torch.asarray) and isinstance(data, torch.Tensor)
            if not keeps_device and _called_from_library(sys._getframe(1)):
                kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _floats(out):
    """Every floating tensor in a (nested) result."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _floats(o)]
    return []


def _check(out, dtype, what):
    ts = _floats(out)
    assert ts, f"{what}: no floating output"
    for t in ts:
        assert t.device.type == "cpu", f"{what}: output on {t.device}"
        assert t.dtype == dtype, f"{what}: {t.dtype} output from {dtype} inputs"
        assert torch.isfinite(t).all(), f"{what}: non-finite output"


# ----------------------------------------------------------------------------------- geometry



def _geometry_outputs(man, dtype):
    g = geometry_of(man)
    gen = torch.Generator().manual_seed(0)
    event = _event(g)
    o = g.origin(event, dtype).expand((4,) + event)
    x = g.exp(o, _tangent(g, o, 0.3, gen))
    y = g.exp(o, _tangent(g, o, 0.3, gen))
    u, v = _tangent(g, x, 0.2, gen), _tangent(g, x, 0.2, gen)
    t = torch.full((4,) + (1,) * g.ndim, 0.5, dtype=dtype)
    with meta_default():
        outs = {
            "origin": g.origin(event, dtype, device=x.device),
            "exp": g.exp(x, u),
            "log": g.log(x, y),
            "dist": g.dist(x, y),
            "inner": g.inner(x, u, v),
            "norm": g.norm(x, u),
            "proju": g.proju(x, u + 0.1),
            "egrad2rgrad": g.egrad2rgrad(x, u),
            "geodesic": g.geodesic(x, y, t),
            "frame": g.frame(x),
            "random_tangent": g.random_tangent(x),
            "violation": g.violation(x),
            "kinetic": g.kinetic(x, u),
        }
        if not isinstance(man, M.Scaled):  # no exact flow for a rescaled metric: HMC refuses it by design
            outs["flow"] = g.for_hmc().flow(x, u, 0.3)
    return g, outs


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("man", FAMILIES, ids=lambda m: type(m).__name__)
def test_geometry_maps_follow_the_inputs(man, dtype):
    g, outs = _geometry_outputs(man, dtype)
    for k, out in outs.items():
        _check(out, dtype, f"{g.name}.{k}")


def _break(monkeypatch, cls, name, src):
    """Replace ``cls.name`` by ``src``, compiled as if written in ``cls``'s own module."""
    ns = {}
    exec(src, vars(sys.modules[cls.__module__]), ns)  # library globals: the harness treats it as dlmppl code
    monkeypatch.setattr(cls, name, ns[name])


def test_a_tensor_created_without_device_is_caught(monkeypatch):
    g = geometry_of(M.Sphere())
    src = "def dist(self, x, y):\n    return torch.zeros(x.shape[:-1]) + (x * y).sum(-1).clamp(-1, 1).acos()\n"
    _break(monkeypatch, type(g), "dist", src)
    with pytest.raises(RuntimeError, match="meta"):
        _geometry_outputs(M.Sphere(), torch.float32)
    # outside the harness the broken map runs silently on CPU: only the harness finds it
    x = _unit(3, d=3, dtype=torch.float32)
    assert g.dist(x, x).shape == (3,)


def test_a_float64_constant_is_caught(monkeypatch):
    g = geometry_of(M.PoincareBall(1.5))
    src = ("def dist(self, x, y):\n"
           "    return torch.ones(x.shape[:-1], dtype=torch.float64, device=x.device) * self.norm(x, self.log(x, y))\n")
    _break(monkeypatch, type(g), "dist", src)
    _, outs = _geometry_outputs(M.PoincareBall(1.5), torch.float32)
    with pytest.raises(AssertionError, match="float64 output from torch.float32"):
        _check(outs["dist"], torch.float32, "dist")


# ------------------------------------------------------------------------------ distributions




@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_distributions_follow_the_inputs(name, dtype):
    d = DISTRIBUTIONS[name](dtype)
    with meta_default():
        outs = {"sample": d.sample((5,))}
        outs["log_prob"] = d.log_prob(outs["sample"])
        if d.has_rsample:
            outs["rsample"] = d.rsample((5,))
            outs["rsample.log_prob"] = d.log_prob(outs["rsample"])
    for k, out in outs.items():
        _check(out, dtype, f"{name}.{k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_reparameterized_gradients_follow_the_inputs(dtype):
    loc = _unit(4, d=3, dtype=dtype).requires_grad_()
    kappa = _c([0.5, 2.0, 10.0, 200.0], dtype).requires_grad_()
    scale = _c([0.3, 0.5, 1.0, 2.0], dtype).requires_grad_()
    ball = M.PoincareBall()  # a manifold from a Python number holds a CPU curvature, as on any device
    with meta_default():
        z = VonMisesFisher(loc, kappa).rsample((3,))
        w = WrappedNormal(ball, 0.2 * loc[:, :2], scale).rsample((3,))
        (z.sum() + w.sum()).backward()
    _check([loc.grad, kappa.grad, scale.grad], dtype, "rsample gradients")


# ------------------------------------------------------------------------------------- losses


def _cloud(n, d, dtype, seed):
    return torch.randn(n, d, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize(
    "method,manifold",
    [("emd", None), ("emd", "sphere"), ("sinkhorn", "poincare"), ("sinkhorn", None), ("sliced", None), ("sliced", "sphere")],
)
def test_ot_losses_follow_the_inputs(method, manifold, dtype):
    from dlmppl import losses

    x, y = _cloud(20, 3, dtype, 0), _cloud(15, 3, dtype, 1)
    man = {"sphere": M.Sphere(), "poincare": M.PoincareBall(1.0), None: None}[manifold]
    if manifold == "sphere":
        x, y = x / x.norm(dim=-1, keepdim=True), y / y.norm(dim=-1, keepdim=True)
    elif manifold == "poincare":
        x, y = 0.3 * torch.tanh(x), 0.3 * torch.tanh(y)
    x.requires_grad_()
    with meta_default():
        val = losses.wasserstein(x, y, man, p=2, method=method)
        val.backward()
        dm = losses.manifold_distances(x.detach(), y, man)
    _check([val, x.grad, dm], dtype, f"wasserstein[{method}, {manifold}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_topology_losses_follow_the_inputs(dtype):
    from dlmppl import losses

    t = torch.linspace(0, 2 * math.pi, 31, dtype=dtype)[:-1]
    circle = torch.stack([t.cos(), t.sin()], -1) + 0.05 * _cloud(30, 2, dtype, 3)
    x = _cloud(30, 5, dtype, 4)
    z = (0.3 * torch.tanh(circle)).requires_grad_()
    ball = M.PoincareBall(1.0)
    with meta_default():
        dgms = losses.persistence(z, maxdim=1, manifold=ball)
        topo = losses.topological(x, z, z_manifold=ball)
        target = losses.topology_target_loss(z, betti={1: 1})
        dd = losses.diagram_distance(dgms[1], dgms[1].detach() * 1.1)
        (topo + target + dd).backward()
    _check(list(dgms) + [topo, target, dd, z.grad], dtype, "topology losses")


# ---------------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_riemannian_optimizers_follow_the_inputs(opt, dtype):
    from dlmppl.constraints import manifold as on
    from dlmppl.inference import RiemannianAdam, RiemannianSGD

    target = _unit(d=3, dtype=dtype)

    def model():
        mu = pyro.param("mu", _unit(d=3, dtype=dtype).flip(-1), constraint=on(M.Sphere()))
        k = pyro.param("k", _c(1.0, dtype), constraint=torch.distributions.constraints.positive)
        pyro.factor("f", k.log() * 0 + (mu * target).sum() * k)

    def guide():
        pass

    optim = (RiemannianAdam if opt == "adam" else RiemannianSGD)({"lr": 0.05})
    svi = SVI(model, guide, optim, Trace_ELBO())
    with meta_default():
        for _ in range(3):
            svi.step()
    _check([pyro.param("mu"), pyro.param("k")], dtype, f"Riemannian{opt}")


# ---------------------------------------------------------------------------------------- MCMC


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("kernel", ["hmc", "nuts"])
def test_mcmc_kernels_follow_the_inputs(kernel, dtype):
    from dlmppl.inference import RiemannianHMC, RiemannianNUTS

    obs = VonMisesFisher(_unit(d=3, dtype=dtype), _c(5.0, dtype)).sample((20,))

    def model(obs):
        mu = pyro.sample("mu", ManifoldUniform(M.Sphere(), (3,), dtype=obs.dtype, device=obs.device))
        kappa = pyro.sample("kappa", pyro.distributions.Gamma(_c(2.0, obs.dtype), _c(0.5, obs.dtype)))
        with pyro.plate("data", obs.shape[0], device=obs.device):
            pyro.sample("obs", VonMisesFisher(mu, kappa), obs=obs)

    k = RiemannianHMC(model, trajectory_length=0.5) if kernel == "hmc" else RiemannianNUTS(model, max_tree_depth=4)
    mcmc = MCMC(k, num_samples=3, warmup_steps=3, disable_progbar=True)
    with meta_default():
        mcmc.run(obs)
    _check(mcmc.get_samples(), dtype, f"Riemannian{kernel.upper()}")


# -------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("latent", ["euclidean", "sphere", "poincare", "lorentz", "stereographic"])
def test_manifold_vae_step_follows_the_inputs(latent, dtype):
    from dlmppl.inference import RiemannianAdam
    from dlmppl.models import ManifoldVAE

    x = (torch.rand(16, 8, generator=torch.Generator().manual_seed(5)) < 0.3).to(dtype)
    vae = ManifoldVAE(8, latent, 2, hidden=(8,), likelihood="bernoulli").to(dtype)
    svi = SVI(vae.model, vae.guide, RiemannianAdam({"lr": 0.01}), Trace_ELBO())
    with meta_default():
        loss = svi.step(x)
        z = vae.codes(x)
        rec = vae.reconstruct(x)
    assert math.isfinite(loss)
    _check(list(z) + [rec] + [p for p in vae.parameters()], dtype, f"ManifoldVAE[{latent}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_dynamic_curvature_vae_step_follows_the_inputs(dtype):
    from dlmppl.inference import RiemannianAdam
    from dlmppl.models import DynamicCurvatureVAE

    x = torch.randn(16, 6, dtype=dtype, generator=torch.Generator().manual_seed(6))
    cond = torch.arange(16) % 2
    vae = DynamicCurvatureVAE(6, 2, condition="label", n_conditions=2, hidden=(8,)).to(dtype)
    svi = SVI(vae.model, vae.guide, RiemannianAdam({"lr": 0.01}), Trace_ELBO())
    with meta_default():
        loss = svi.step(x, cond)
        kappa = vae.kappa(None, cond)
    assert math.isfinite(loss)
    _check([kappa] + [p for p in vae.parameters()], dtype, "DynamicCurvatureVAE")


# --------------------------------------------------------------------------------- host syncs

_SYNCS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
          torch.Tensor.__index__, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy}


class count_host_syncs(TorchFunctionMode):
    """Counts the calls made by dlmppl's own code that read a tensor on the host (a device sync on a GPU)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        f = sys._getframe(1)
        # torch's foreach optimisers read their step counters with .item(): torch keeps those
        # on the CPU (non-capturable, non-fused), so the read is no device synchronisation
        cpu_step_counter = f.f_code.co_name == "_get_value" and f.f_globals.get("__name__") == "torch.optim.optimizer"
        if func in _SYNCS and not cpu_step_counter and _called_from_library(f):
            self.calls.append(f"{func.__name__} at {f.f_globals.get('__name__')}:{f.f_lineno}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("man", [m for m in FAMILIES if not isinstance(m, M.Stiefel)], ids=lambda m: type(m).__name__)
def test_geometry_maps_make_no_host_sync(man):
    # Stiefel's log is an iterative solver with a tolerance test per Newton step (left out)
    pyro.enable_validation(False)
    with count_host_syncs() as c:
        _geometry_outputs(man, torch.float32)
    assert not c.calls, c.calls


@pytest.mark.parametrize("latent", ["euclidean", "sphere", "poincare"])
def test_vae_step_host_syncs_stay_within_budget(latent):
    """Measured when written: 2 per SVI step in dlmppl's code (Euclidean, sphere: the guide's
    centring flag, one finiteness check per device in the optimiser) and 3 for Poincaré (the
    wrapped normal's radius guard); Pyro's own (the returned loss) are not counted."""
    from dlmppl.inference import RiemannianAdam
    from dlmppl.models import ManifoldVAE

    pyro.enable_validation(False)
    x = (torch.rand(16, 8, generator=torch.Generator().manual_seed(5)) < 0.3).float()
    vae = ManifoldVAE(8, latent, 2, hidden=(8,), likelihood="bernoulli")
    svi = SVI(vae.model, vae.guide, RiemannianAdam({"lr": 0.01}), Trace_ELBO())
    svi.step(x)
    with count_host_syncs() as c:
        svi.step(x)
    assert len(c.calls) <= (3 if latent == "poincare" else 2), c.calls


def test_a_host_sync_is_counted(monkeypatch):
    g = geometry_of(M.Sphere())
    src = ("def dist(self, x, y):\n"
           "    d = (x * y).sum(-1).clamp(-1, 1).acos()\n"
           "    return d if bool((d >= 0).all()) else d.abs()\n")
    _break(monkeypatch, type(g), "dist", src)
    with count_host_syncs() as c:
        _geometry_outputs(M.Sphere(), torch.float32)
    assert len(c.calls) == 1 and "__bool__" in c.calls[0], c.calls


class count_index_transfers(TorchFunctionMode):
    """Calls in ``dlmppl.losses.topology`` that move a tensor to a device (``.to(device)``,
    ``torch.as_tensor``/``torch.tensor`` with ``device=``): each is a host-to-device copy on a GPU."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        f = sys._getframe(1)
        if f.f_globals.get("__name__") == "dlmppl.losses.topology":
            to_device = func is torch.Tensor.to and (
                "device" in kwargs or any(isinstance(a, (str, torch.device)) for a in args[1:])
            )
            made_on = func in (torch.as_tensor, torch.tensor) and kwargs.get("device") not in (None, "cpu")
            if to_device or made_on:
                self.calls.append(f"{func.__name__} at line {f.f_lineno}")
        return func(*args, **kwargs)


@pytest.mark.parametrize("normalize", [False, True])
def test_topological_loss_moves_its_indices_once(normalize):
    """Issue 16: the pairing runs on the CPU; its critical edges (and the longest edges when
    normalising) reach the points' device in one transfer per call."""
    from dlmppl.losses import topological

    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(40, 6, generator=g), torch.randn(40, 2, generator=g, requires_grad=True)
    with count_index_transfers() as c:
        loss = topological(x, z, dims=(0, 1), normalize=normalize)
    loss.backward()
    assert len(c.calls) == 1, c.calls
    assert torch.isfinite(z.grad).all()
