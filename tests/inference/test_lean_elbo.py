"""LeanTrace_ELBO against pyro's Trace_ELBO: the same value and the same gradients.

The lean ELBO records the guide and the replayed model with its own small messengers and
assembles the ELBO itself; on the same draws (same seed) it must give Trace_ELBO's loss and
gradients.  Deterministic comparisons (no statistical threshold): float64, to 1e-12.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from dlmppl.inference import LeanTrace_ELBO, RiemannianAdam
from dlmppl.inference import elbo as elbo_mod
from dlmppl.models import ManifoldVAE

TOL = dict(rtol=1e-12, atol=1e-12)


@pytest.fixture(autouse=True)
def _no_validation():
    # the lean path runs with Pyro's validation off (with it on, Trace_ELBO itself runs)
    was = pyro.poutine.util.is_validation_enabled()
    pyro.enable_validation(False)
    yield
    pyro.enable_validation(was)


def _loss_and_grads(elbo, model, guide, params, *args, seed=1):
    for p in params:
        p.grad = None
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide, *args)
    return loss, [None if p.grad is None else p.grad.clone() for p in params]


def _assert_same(a, b):
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(torch.tensor(la), torch.tensor(lb), **TOL)
    assert len(ga) == len(gb)
    for i, (x, y) in enumerate(zip(ga, gb, strict=True)):
        assert (x is None) == (y is None), f"gradient {i}"
        if x is not None:
            torch.testing.assert_close(x, y, **TOL, msg=lambda m, i=i: f"gradient {i}: {m}")


def _vae(latent, **kw):
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    x = (torch.rand(24, 10, dtype=torch.float64) < 0.4).double()
    vae = ManifoldVAE(10, latent, 2, hidden=(16,), likelihood="gaussian", **kw).double()
    return vae, x


VAES = [
    ("poincare", dict(learn_curvature=False)),
    ("sphere", {}),
    ("stereographic", dict(curvature=-0.3)),  # learned κ
]


def _scaled(fn, scale):
    return poutine.scale(fn, scale=scale) if scale != 1.0 else fn


@pytest.mark.parametrize("scale", [1.0, 0.25], ids=["unscaled", "scaled"])
@pytest.mark.parametrize("latent,kw", VAES, ids=[v[0] for v in VAES])
def test_same_loss_and_gradients_as_trace_elbo_on_manifold_vae(latent, kw, scale):
    vae, x = _vae(latent, **kw)
    model, guide = _scaled(vae.model, scale), _scaled(vae.guide, scale)
    params = list(vae.parameters())
    assert any(p.requires_grad for p in params)
    ref = _loss_and_grads(Trace_ELBO(), model, guide, params, x)
    lean = _loss_and_grads(LeanTrace_ELBO(), model, guide, params, x)
    _assert_same(ref, lean)
    assert all(g is not None for g in lean[1])
    if latent == "stereographic":  # the learned curvature is among them, with a gradient
        curv = [i for i, (n, _) in enumerate(vae.named_parameters()) if n.startswith("components")]
        assert len(curv) == 1 and lean[1][curv[0]].abs().sum() > 0


def test_differentiable_loss_equals_trace_elbo():
    vae, x = _vae("stereographic", curvature=-0.3)
    params = list(vae.parameters())
    out = []
    for elbo in (Trace_ELBO(), LeanTrace_ELBO()):
        for p in params:
            p.grad = None
        pyro.set_rng_seed(2)
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        loss.backward()
        out.append((loss.item(), [p.grad.clone() for p in params]))
    _assert_same(*out)


def test_a_broken_lean_elbo_is_caught(monkeypatch):
    """Test of the test: a lean ELBO that forgets the sites' scale differs from Trace_ELBO."""
    vae, x = _vae("poincare", learn_curvature=False)
    model, guide = _scaled(vae.model, 0.25), _scaled(vae.guide, 0.25)
    params = list(vae.parameters())
    ref = _loss_and_grads(Trace_ELBO(), model, guide, params, x)
    monkeypatch.setattr(elbo_mod, "scale_and_mask", lambda t, scale=1.0, mask=None: t)
    broken = _loss_and_grads(LeanTrace_ELBO(), model, guide, params, x)
    with pytest.raises(AssertionError):
        _assert_same(ref, broken)


def test_svi_trajectory_equals_trace_elbo_with_riemannian_adam():
    """Six SVI steps (learned κ, RiemannianAdam): the same losses and parameters."""
    runs = []
    for elbo in (Trace_ELBO(), LeanTrace_ELBO()):
        vae, x = _vae("stereographic", curvature=-0.3)
        svi = SVI(vae.model, vae.guide, RiemannianAdam({"lr": 0.02}), elbo)
        pyro.set_rng_seed(5)
        losses = [svi.step(x) for _ in range(6)]
        runs.append((losses, [p.detach().clone() for p in vae.parameters()]))
    torch.testing.assert_close(torch.tensor(runs[0][0]), torch.tensor(runs[1][0]), **TOL)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, **TOL)


class _Toy(torch.nn.Module):
    """A model with a subsampled plate, a mask, an observed guide-free site, a factor and a
    non-reparameterised (Bernoulli) latent: Trace_ELBO's score-function path."""

    def __init__(self, discrete):
        super().__init__()
        self.discrete = discrete
        self.loc = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))
        self.data = torch.linspace(-1, 1, 20, dtype=torch.float64)

    def model(self):
        loc = pyro.param("loc", self.loc)
        a = pyro.sample("a", dist.Normal(torch.zeros((), dtype=torch.float64), 1.0))
        if self.discrete:
            b = pyro.sample("b", dist.Bernoulli(torch.tensor(0.4, dtype=torch.float64)))
            a = a + b
        with pyro.plate("data", 20, subsample_size=6) as idx:
            mask = idx % 3 != 0
            pyro.sample("y", dist.Normal(a + loc[0], 1.0).mask(mask), obs=self.data[idx])
        pyro.factor("f", -(a - loc[1]).pow(2))

    def guide(self):
        loc = pyro.param("loc", self.loc)
        pyro.sample("a", dist.Normal(loc[0], loc[1].exp()))
        if self.discrete:
            pyro.sample("b", dist.Bernoulli(torch.sigmoid(loc.sum())))
        with pyro.plate("data", 20, subsample_size=6):
            pass


@pytest.mark.parametrize("discrete", [False, True], ids=["reparameterised", "score function"])
def test_same_as_trace_elbo_with_subsampling_masks_factors_and_score_functions(discrete):
    toy = _Toy(discrete)
    pyro.clear_param_store()
    ref = _loss_and_grads(Trace_ELBO(), toy.model, toy.guide, [toy.loc])
    lean = _loss_and_grads(LeanTrace_ELBO(), toy.model, toy.guide, [toy.loc])
    _assert_same(ref, lean)
    assert lean[1][0] is not None and lean[1][0].abs().sum() > 0


def test_several_particles_and_validation_on_give_trace_elbo():
    vae, x = _vae("sphere")
    params = list(vae.parameters())
    _assert_same(
        _loss_and_grads(Trace_ELBO(num_particles=3), vae.model, vae.guide, params, x),
        _loss_and_grads(LeanTrace_ELBO(num_particles=3), vae.model, vae.guide, params, x),
    )
    pyro.enable_validation(True)  # the lean ELBO hands over to Trace_ELBO and its checks
    _assert_same(
        _loss_and_grads(Trace_ELBO(), vae.model, vae.guide, params, x),
        _loss_and_grads(LeanTrace_ELBO(), vae.model, vae.guide, params, x),
    )


def test_float32_is_bit_for_bit():
    vae, x = _vae("poincare", learn_curvature=False)
    vae, x = vae.float(), x.float()
    params = list(vae.parameters())
    ref = _loss_and_grads(Trace_ELBO(), vae.model, vae.guide, params, x)
    lean = _loss_and_grads(LeanTrace_ELBO(), vae.model, vae.guide, params, x)
    assert ref[0] == lean[0]  # the same sums in the same order
    assert all(torch.equal(a, b) for a, b in zip(ref[1], lean[1], strict=True))


def test_duplicate_sample_site_is_an_error():
    def guide():
        pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(RuntimeError, match="Multiple sample sites named 'z'"):
        LeanTrace_ELBO().loss_and_grads(lambda: None, guide)
