import pyro
import pyro.distributions as dist
import pytest
import torch

from dlmppl import losses, manifolds
from tests import statistical as st


def test_factor_adds_minus_weight_times_loss_to_the_trace():
    loss = torch.tensor(1.5)

    def model():
        losses.factor("reg", loss, weight=3.0)

    tr = pyro.poutine.trace(model).get_trace()
    assert tr.log_prob_sum().item() == pytest.approx(-4.5)
    with pytest.raises(ValueError, match="weight"):
        losses.factor("r", loss, weight=-1.0)
    with pytest.raises(ValueError, match="loss"):
        losses.factor("r", torch.ones(3))


@pytest.mark.statistical
def test_svi_with_wasserstein_factor_in_the_model_moves_the_guide():
    """An optimisation outcome (no exact false-alarm rate): measured over seeds 0-19, the final
    W/W(0) ratio is 0.004-0.011, twenty times below the bound 0.2."""
    # latent cloud z ~ N(0, I) per point; the factor pulls it onto a target cloud on the sphere
    target = torch.randn(30, 3)
    target = target / target.norm(dim=-1, keepdim=True) + torch.tensor([3.0, 0.0, 0.0])

    def model():
        with pyro.plate("pts", 30):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 10.0).to_event(1))
        losses.factor("ot", losses.wasserstein(z, target), weight=50.0)

    def guide():
        loc = pyro.param("loc", torch.zeros(30, 3))
        with pyro.plate("pts", 30):
            pyro.sample("z", dist.Normal(loc, 0.01).to_event(1))

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO())
    for _ in range(40):
        svi.step()
    loc = pyro.param("loc").detach()
    assert losses.wasserstein(loc, target).item() < 0.2 * losses.wasserstein(torch.zeros(30, 3), target).item()


def test_factor_in_a_guide_adds_plus_weight_times_loss_and_reaches_the_encoder():
    x = torch.randn(20, 5)
    enc = torch.nn.Linear(5, 2)
    seen = {}

    def model(x):
        with pyro.plate("data", 20):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    def guide(x, with_factor):
        pyro.module("enc", enc)
        with pyro.plate("data", 20):
            z = pyro.sample("z", dist.Normal(enc(x), 0.01).to_event(1))
        if with_factor:
            seen["topo"] = losses.topological(x, z, dims=(0, 1))
            losses.factor("topo", seen["topo"], weight=5.0, in_guide=True)

    elbo = pyro.infer.Trace_ELBO()
    pyro.set_rng_seed(st.seed(1))
    base = elbo.differentiable_loss(model, lambda x: guide(x, False), x)
    pyro.set_rng_seed(st.seed(1))
    with_f = elbo.differentiable_loss(model, lambda x: guide(x, True), x)
    # the SVI loss (negative ELBO) gains +5 * loss, the same sign as in a model
    assert (with_f - base).item() == pytest.approx(5.0 * seen["topo"].item(), rel=1e-5)
    enc.zero_grad()
    (with_f - base).backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0


@pytest.mark.statistical
def test_svi_topological_factor_on_a_poincare_latent_decreases_the_loss():
    """Free latent codes in the Poincaré ball trained only by the topological factor: the mean loss
    of the last 5 of 60 steps falls below 0.9 x that of the first 5.

    An optimisation outcome (no exact false-alarm rate).  The loss of random 8-d data against 2-d
    codes plateaus: with lr 0.02 (as this test had) the ratio was 0.57-0.84 over seeds 0-13 (it
    failed its old bound 0.7 on 8 of 14 seeds, and on another machine with 38.1/52.8 = 0.72);
    150 steps do not lower it much (0.56-0.78).  With lr 0.05 it is 0.57-0.76 over seeds 0-9
    (mean 0.66, sd 0.05): the bound 0.9 is 5 sd above the mean, while a factor whose gradient
    does not reach the codes leaves the ratio at 1.  The bound held on seeds 0-11 (0/12 failures).
    """
    x = torch.randn(64, 8)
    M = manifolds.PoincareBall(1.0)

    def model(x):
        pass

    def guide(x):
        u = pyro.param("u", 0.1 * torch.randn(64, 2))
        z = M.expmap0(u)
        losses.factor(
            "topo", losses.topological(x, z, z_manifold=M, normalize=True), weight=1.0, in_guide=True
        )

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO())
    ls = [svi.step(x) for _ in range(60)]
    assert sum(ls[-5:]) < 0.9 * sum(ls[:5]), (sum(ls[-5:]), sum(ls[:5]))


@pytest.mark.statistical
def test_topological_factor_with_a_manifold_vae():
    """The documented ManifoldVAE pattern: the factor shapes the encoder during SVI.  An optimisation
    outcome: the factor halved on seeds 0-11 (0/12 failures)."""
    import pyro

    import dlmppl as dl
    from dlmppl import losses

    x, _ = dl.datasets.noisy_circles(n=64, noise=0.02)
    x = x.float()
    vae = dl.models.ManifoldVAE(x.shape[-1], latent="poincare", latent_dim=2, hidden=(32,),
                                likelihood="gaussian", obs_scale=0.1)
    ball = vae.components[0].manifold

    def topo(x):
        return losses.topological(x, vae.encode(x)[0].loc, z_manifold=ball, dims=(0, 1))

    def guide(x):
        vae.guide(x)
        losses.factor("topo", topo(x), weight=5.0, in_guide=True)

    before = topo(x).item()
    svi = pyro.infer.SVI(vae.model, guide, dl.inference.RiemannianAdam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    for _ in range(60):
        svi.step(x)
    assert topo(x).item() < 0.5 * before


def test_suggest_weight_scales_the_factor_to_a_share_of_the_elbo():
    # reference by hand: share · mean|ELBO| / mean(R)
    assert losses.suggest_weight(-1000.0, 20.0) == pytest.approx(50.0)
    assert losses.suggest_weight([1000.0, -1200.0], [10.0, 12.0], share=0.5) == pytest.approx(0.5 * 1100 / 11)
    # tensors (with graphs), on any dtype; one value per batch
    e = torch.tensor([300.0, 500.0], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([2.0, 6.0], requires_grad=True)
    w = losses.suggest_weight(e, r, share=2.0)
    assert isinstance(w, float) and w == pytest.approx(2.0 * 400 / 4)
    assert losses.suggest_weight([torch.tensor(-8.0), torch.tensor(-12.0)], [torch.tensor(1.0), 3.0]) == 5.0
    # the factor at that weight weighs share × |ELBO| at the batch it was measured on
    loss = torch.tensor(4.0)
    tr = pyro.poutine.trace(lambda: losses.factor("r", loss, weight=losses.suggest_weight(-600.0, loss, 0.3))).get_trace()
    assert tr.log_prob_sum().item() == pytest.approx(-0.3 * 600)


@pytest.mark.parametrize(
    "args, name",
    [
        (([], []), "elbo_loss"),
        (([1.0], []), "loss"),
        (([1.0, 2.0], [1.0]), "elbo_loss, loss"),
        ((float("nan"), 1.0), "elbo_loss"),
        ((1.0, float("inf")), "loss"),
        ((1.0, 0.0), "loss"),
        (([1.0, 1.0], torch.tensor([-1.0, 0.5])), "mean must be > 0"),
        ((1.0, 1.0, 0.0), "share"),
        ((1.0, 1.0, float("inf")), "share"),
        ((1.0, 1.0, "a"), "share"),
        (("x", 1.0), "elbo_loss"),
        ((1.0, 1e-320), "loss"),
    ],
)
def test_suggest_weight_refuses_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        losses.suggest_weight(*args)


@pytest.mark.statistical
def test_rule_weight_keeps_the_loop_of_held_out_data_under_posterior_collapse():
    """The recipe of tutorial 04 section 3, small: a VAE on 64 points of a noisy circle in R¹⁰ with
    σ = 1 collapses (held-out loop score 0.03-0.09 at ``share=0.01`` on seeds 200-202: the test of
    the test); the topological factor at the weight of ``suggest_weight(share=1)`` keeps the loop
    of 64 *held-out* points (data ≈ 0.6).  An optimisation outcome: after 150 steps the held-out
    loop score was 0.39-0.56 on seeds 200-215 (0/16 below 0.3); decided by 3 of 5 seeds
    (``st.majority``: a false alarm of 2e-3 at a per-seed failure rate of 6 %)."""
    import dlmppl as dl

    def loop_score(z):
        dg = losses.persistence(z, maxdim=1)[1]
        return float((dg[:, 1] - dg[:, 0]).max() / torch.cdist(z, z).max()) if len(dg) else 0.0

    def run(i):
        pyro.clear_param_store()
        x, _ = dl.datasets.noisy_sphere(n=64, dim=1, ambient=10, noise=0.05, dtype=torch.float32)
        x_te, _ = dl.datasets.noisy_sphere(n=64, dim=1, ambient=10, noise=0.05, dtype=torch.float32)
        vae = dl.models.ManifoldVAE(10, latent="euclidean", latent_dim=2, hidden=(64,), likelihood="gaussian",
                                    obs_scale=1.0)

        def guide(xb):
            (z,) = vae.guide(xb)
            losses.factor("topo", losses.topological(xb, z, normalize=True), weight=w, in_guide=True)

        optim, elbo = dl.inference.RiemannianAdam({"lr": 1e-2}), pyro.infer.Trace_ELBO()
        with torch.no_grad():
            r0 = losses.topological(x, vae.encode(x)[0].sample(), normalize=True)
        w = losses.suggest_weight(pyro.infer.SVI(vae.model, vae.guide, optim, elbo).evaluate_loss(x), r0, share=1.0)
        svi = pyro.infer.SVI(vae.model, guide, optim, elbo)
        for _ in range(150):
            svi.step(x)
        s = loop_score(vae.codes(x_te)[0])
        return s > 0.3, round(s, 3)

    st.majority(run, n=5, need=3, what="held-out loop score > 0.3")
