"""The fused optimiser step (one update for many parameters) against the per-parameter one.

``RiemannianAdam``/``RiemannianSGD`` with ``fused=True`` step all the Euclidean parameters by one
``foreach`` torch call and the manifold parameters that share a manifold, shape and step count by
one stacked Riemannian update; ``fused=False`` is Pyro's loop of one optimiser per parameter
(geoopt's and torch's own code).  Both must give the same iterates to round-off, over several
steps, on several manifolds, with learnable curvatures, in float32 and float64.
"""

import geoopt
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import dlmppl.manifolds as M
from dlmppl.constraints import manifold
from dlmppl.inference import optim as optim_mod
from dlmppl.inference.optim import RiemannianAdam, RiemannianSGD


def _points(man, shape, n, dtype, gen):
    return [man.projx(0.3 * torch.randn(shape, dtype=dtype, generator=gen)) for _ in range(n)]


class _Net(pyro.nn.PyroModule):
    """Three manifold parameters of one manifold (two of one shape), a constrained pyro.param on the
    sphere, two Euclidean weights and the manifold's learnable curvature, if any."""

    def __init__(self, man, shape, dtype, gen):
        super().__init__()
        self.man = man
        a, b = _points(man, shape, 2, dtype, gen)
        c = man.projx(0.3 * torch.randn((3,) + shape, dtype=dtype, generator=gen))  # a batch of points
        self.a = M.ManifoldParameter(a, manifold=man)
        self.b = M.ManifoldParameter(b, manifold=man)
        self.c = M.ManifoldParameter(c, manifold=man)
        self.w = torch.nn.Parameter(torch.randn(4, dtype=dtype, generator=gen))
        self.v = torch.nn.Parameter(torch.randn(2, 3, dtype=dtype, generator=gen))
        self.target = man.projx(0.5 * torch.ones(shape, dtype=dtype)).detach()
        self.dir = torch.nn.functional.normalize(torch.arange(1.0, 5.0, dtype=dtype), dim=0)

    @pyro.nn.pyro_method
    def guide(self):
        mu = pyro.param("mu", torch.eye(4, dtype=self.w.dtype)[0], constraint=manifold(M.Sphere()))
        loss = 0.0
        for i, p in enumerate((self.a, self.b, self.c)):
            loss = loss + (i + 1) * (p - self.target).pow(2).sum() + 0.3 * (p * torch.randn_like(p)).sum()
        if any(True for _ in self.man.parameters()):  # a learnable curvature: a gradient through the distance
            loss = loss + self.man.dist(self.a, self.b).pow(2)
        loss = (
            loss + (self.w - 1).pow(2).sum() + self.v.sin().sum() * self.w.sum() - 5 * (mu * self.dir).sum()
        )
        pyro.factor("f", loss, has_rsample=True)


MANIFOLDS = [
    ("sphere", lambda dtype: M.Sphere(), (3,)),
    ("poincare, learned curvature", lambda dtype: M.PoincareBall(1.0, learnable=True), (2,)),
    ("stereographic, learned curvature", lambda dtype: M.Stereographic(-0.5, learnable=True), (3,)),
    ("lorentz", lambda dtype: M.Lorentz(), (3,)),
    ("stiefel", lambda dtype: M.Stiefel(), (4, 2)),
    ("so3", lambda dtype: M.SO3(), (3, 3)),
    ("torus", lambda dtype: M.Torus(), (2,)),
    ("projective", lambda dtype: M.ProjectiveSpace(), (3,)),
]


def _run(make_optim, name, dtype, steps):
    pyro.clear_param_store()
    gen = torch.Generator().manual_seed(3)
    _, make_man, shape = next(m for m in MANIFOLDS if m[0] == name)
    man = make_man(dtype).to(dtype)  # its curvature parameter, if any, is a Euclidean pyro.param of the net
    net = _Net(man, shape, dtype, gen)
    svi = SVI(lambda: None, net.guide, make_optim(), Trace_ELBO())
    pyro.set_rng_seed(0)
    trajectory = []
    for _ in range(steps):
        svi.step()
        trajectory.append({k: v.detach().clone() for k, v in pyro.get_param_store().items()})
    return trajectory


def _assert_same(t1, t2, dtype):
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    assert len(t1) == len(t2)
    for step, (s1, s2) in enumerate(zip(t1, t2, strict=True)):
        assert s1.keys() == s2.keys()
        for k in s1:
            torch.testing.assert_close(
                s1[k], s2[k], **tol, msg=lambda m, k=k, step=step: f"{k}, step {step}: {m}"
            )


OPTIMS = [
    ("adam", lambda fused: RiemannianAdam({"lr": 0.05}, fused=fused)),
    (
        "adam amsgrad wd stabilize",
        lambda fused: RiemannianAdam(
            {"lr": 0.03, "amsgrad": True, "weight_decay": 0.01, "stabilize": 3, "betas": (0.8, 0.99)},
            fused=fused,
        ),
    ),
    (
        "sgd momentum nesterov",
        lambda fused: RiemannianSGD({"lr": 0.02, "momentum": 0.7, "nesterov": True}, fused=fused),
    ),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", [m[0] for m in MANIFOLDS])
@pytest.mark.parametrize("opt_name", [o[0] for o in OPTIMS])
def test_fused_step_equals_per_parameter_step(opt_name, name, dtype):
    make = next(o[1] for o in OPTIMS if o[0] == opt_name)
    fused = _run(lambda: make(True), name, dtype, steps=12)
    single = _run(lambda: make(False), name, dtype, steps=12)
    _assert_same(fused, single, dtype)
    # the parameters moved: the comparison is not between two idle runs
    first, last = fused[0], fused[-1]
    assert all(not torch.equal(first[k], last[k]) for k in first)


def test_fused_path_groups_the_manifold_parameters(monkeypatch):
    """The fused run really goes through the stacked update, with several parameters at once."""
    calls = []
    orig = optim_mod._riemannian_adam_fused

    def spy(items):
        calls.append(len(items))
        return orig(items)

    monkeypatch.setattr(optim_mod, "_riemannian_adam_fused", spy)
    _run(lambda: RiemannianAdam({"lr": 0.05}), "poincare, learned curvature", torch.float64, steps=2)
    assert calls == [2, 2]  # a and b (same shape) together; c (a batch) and mu alone


def test_a_broken_fused_update_is_caught(monkeypatch):
    """Test of the test: a fused update without the transport of the first moment differs."""

    def broken_retr_transp(self, x, u, v):
        return self.retr(x, u), v

    _, make_man, _ = MANIFOLDS[1]
    man_cls = type(make_man(torch.float64))
    fused = []
    orig = optim_mod._riemannian_adam_fused

    def patched(items):  # only the fused path sees the broken manifold method
        with monkeypatch.context() as m:
            m.setattr(man_cls, "retr_transp", broken_retr_transp)
            orig(items)
        fused.append(1)

    monkeypatch.setattr(optim_mod, "_riemannian_adam_fused", patched)
    t1 = _run(lambda: RiemannianAdam({"lr": 0.05}, fused=True), MANIFOLDS[1][0], torch.float64, steps=12)
    monkeypatch.undo()
    t2 = _run(lambda: RiemannianAdam({"lr": 0.05}, fused=False), MANIFOLDS[1][0], torch.float64, steps=12)
    assert fused
    with pytest.raises(AssertionError):
        _assert_same(t1, t2, torch.float64)


def _resumed(fused, dtype=torch.float64):
    """5 steps, ``get_state``, a fresh optimiser given that state by ``set_state``, 5 more steps."""
    pyro.clear_param_store()
    net = _Net(M.Sphere(), (3,), dtype, torch.Generator().manual_seed(3))
    opt = RiemannianAdam({"lr": 0.05}, fused=fused)
    svi = SVI(lambda: None, net.guide, opt, Trace_ELBO())
    pyro.set_rng_seed(0)
    for _ in range(5):
        svi.step()
    state = opt.get_state()
    assert sorted(state) == sorted(pyro.get_param_store().keys())  # by parameter name, as Pyro keeps it
    assert all(len(s["state"]) == 1 for s in state.values())  # each holds its own moments
    opt2 = RiemannianAdam({"lr": 0.05}, fused=fused)
    opt2.set_state(state)
    svi2 = SVI(lambda: None, net.guide, opt2, Trace_ELBO())
    for _ in range(5):
        svi2.step()
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def test_fused_optimiser_state_round_trips_through_pyro_get_state():
    """The fused step keeps its state in Pyro's per-parameter optimisers: saving it with
    ``get_state`` and resuming from it gives what the per-parameter optimiser gives."""
    _assert_same([_resumed(True)], [_resumed(False)], torch.float64)


def test_nan_gradient_is_still_refused_by_the_fused_step():
    p = geoopt.ManifoldParameter(M.Sphere().projx(torch.randn(3)), manifold=M.Sphere())
    q = geoopt.ManifoldParameter(M.Sphere().projx(torch.randn(3)), manifold=M.Sphere())
    w = torch.nn.Parameter(torch.zeros(2))
    before = [t.detach().clone() for t in (p, q, w)]
    p.grad = torch.ones(3)
    q.grad = torch.ones(3)
    w.grad = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match="not finite"):
        RiemannianAdam({"lr": 0.1})([p, q, w])
    for t, b in zip((p, q, w), before, strict=True):
        assert torch.equal(t.detach(), b)


def test_fused_step_releases_the_gradients_and_the_per_parameter_step_keeps_them():
    for fused in (True, False):
        pyro.clear_param_store()
        net = _Net(M.Sphere(), (3,), torch.float64, torch.Generator().manual_seed(3))
        svi = SVI(lambda: None, net.guide, RiemannianAdam({"lr": 0.05}, fused=fused), Trace_ELBO())
        svi.step()
        grads = [p.unconstrained().grad for p in pyro.get_param_store().values()]
        if fused:
            assert all(g is None for g in grads)
        else:  # Pyro's SVI zeroes them
            assert all(g is not None and not g.any() for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_foreach_kernels_equal_the_fused_kernel_and_the_per_parameter_step(dtype):
    """``fused=True`` steps the Euclidean group with torch's fused kernel (where the device has
    one), ``fused="foreach"`` with the foreach kernels: both give the per-parameter iterates."""
    name = "poincare, learned curvature"
    single = _run(lambda: RiemannianAdam({"lr": 0.05}, fused=False), name, dtype, steps=12)
    for fused in (True, "foreach"):
        _assert_same(_run(lambda fused=fused: RiemannianAdam({"lr": 0.05}, fused=fused), name, dtype, steps=12), single, dtype)


def test_fused_kernel_is_used_on_cpu(monkeypatch):
    kernels = []
    orig = torch.optim.Adam.step

    def spy(self, *a, **k):
        kernels.append((self.param_groups[0].get("fused"), self.param_groups[0].get("foreach")))
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    _run(lambda: RiemannianAdam({"lr": 0.05}), "sphere", torch.float64, steps=1)
    _run(lambda: RiemannianAdam({"lr": 0.05}, fused="foreach"), "sphere", torch.float64, steps=1)
    (kernel, _), (no_kernel, foreach) = kernels  # one Euclidean call per run (w and v together)
    assert kernel is True and not no_kernel and foreach is True


def test_fused_must_be_a_known_mode():
    with pytest.raises(ValueError, match="fused"):
        RiemannianAdam({"lr": 0.1}, fused="kernel")


def _euclidean_params(gen, n=4):
    return [torch.nn.Parameter(torch.randn(3, 2, generator=gen)) for _ in range(n)]


def _grads(params, gen):
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)


def test_plan_of_the_last_step_gives_the_regrouping_path_bit_for_bit(monkeypatch):
    """Steps of Euclidean parameters reuse the last step's grouping (``_plan_of``) while the parameters,
    optimisers and hyper-parameters are unchanged: the same iterates, bit for bit, as regrouping at
    every step; a change of learning rate (a scheduler) is taken at the next step."""
    runs = []
    for use_plan in (True, False):
        gen = torch.Generator().manual_seed(0)
        params = _euclidean_params(gen)
        opt = RiemannianAdam({"lr": 0.05})
        if not use_plan:
            monkeypatch.setattr(opt, "_plan_of", lambda ps: None)
        used = []
        for i in range(6):
            _grads(params, gen)
            if i == 3:
                for o in opt.optim_objs.values():
                    o.param_groups[0]["lr"] = 0.01
            used.append(use_plan and opt._plan_of(params) is not None)
            opt(set(params))
            assert all(p.grad is None for p in params)
        runs.append([p.detach().clone() for p in params])
        if use_plan:  # the first step groups; the lr change regroups once
            assert used == [False, True, True, False, True, True]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    # the lr change reached the iterates: a run that keeps lr 0.05 ends elsewhere
    gen = torch.Generator().manual_seed(0)
    params = _euclidean_params(gen)
    opt = RiemannianAdam({"lr": 0.05})
    for _ in range(6):
        _grads(params, gen)
        opt(set(params))
    assert not torch.equal(params[0].detach(), runs[0][0])


def test_nan_gradient_is_refused_on_the_planned_path():
    gen = torch.Generator().manual_seed(1)
    params = _euclidean_params(gen)
    opt = RiemannianAdam({"lr": 0.05})
    _grads(params, gen)
    opt(params)
    _grads(params, gen)
    assert opt._plan_of(params) is not None
    before = [p.detach().clone() for p in params]
    params[2].grad[0, 1] = float("inf")
    with pytest.raises(ValueError, match="not finite"):
        opt(params)
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.detach(), b) and p.grad is None
    _grads(params, gen)  # and the next step goes on
    opt(params)
    assert not torch.equal(params[0].detach(), before[0])


def test_grads_all_finite_matches_the_per_tensor_check():
    gs = [torch.randn(3), torch.tensor([0.0, -0.0, 1e-45]), torch.randn(2, 2, dtype=torch.float64)]
    copies = [g.clone() for g in gs]
    assert optim_mod._grads_all_finite(gs) is True
    for g, c in zip(gs, copies, strict=True):  # untouched, bit for bit (signed zero, subnormal)
        assert torch.equal(g, c) and torch.equal(torch.signbit(g), torch.signbit(c))
    for bad in (float("nan"), float("inf"), -float("inf")):
        gs[1][2] = bad
        assert optim_mod._grads_all_finite(gs) is False
        assert optim_mod._all_finite(gs) == [True, False, True]
