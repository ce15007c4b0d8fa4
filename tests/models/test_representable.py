"""Hyperbolic VAE posteriors stay within what the dtype represents.

The wrapped normal raises a ``ValueError`` naming ``scale`` when ``d(o, loc) + reach`` passes the
largest radius its dtype represents (15.25/√c in float32 for the Poincaré ball; issue 11, defect
11).  An encoder asks for such laws early in training or when it diverges: a float32 Poincaré VAE
of ``tests/models/test_vae.py`` raised there on one seed of 20 (loc at radius 5.7, scale 1.5).
The VAEs cap the encoder's radius and scale (``keep_representable``) instead.
"""

from __future__ import annotations

import pytest
import torch

from dlmppl import manifolds
from dlmppl.distributions import WrappedNormal
from dlmppl.distributions.wrapped_normal import keep_representable, radius_limit
from dlmppl.models import DynamicCurvatureVAE, ManifoldVAE

F32, F64 = torch.float32, torch.float64


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("c", [1e-3, 1.0, 50.0])
def test_capped_encoder_outputs_give_a_representable_wrapped_normal(dtype, c):
    M = manifolds.PoincareBall(c)
    R = float(radius_limit(M, torch.zeros(2, dtype=dtype)))
    a = torch.tensor([[0.1, 0.2], [2.0 * R, 0.0], [0.5 * R, 0.5 * R], [0.0, 0.85 * R]], dtype=dtype, requires_grad=True)
    scale = torch.tensor([[0.3, 0.2], [1.0, 1.0], [R, 0.1], [3.0, 3.0]], dtype=dtype)
    with pytest.raises(ValueError, match="scale"):
        WrappedNormal(M, M.expmap0(a.detach() / 2), scale, validate_args=True)
    a2, s2 = keep_representable(M, a, scale)
    # small outputs are untouched; large ones are capped
    torch.testing.assert_close(a2[0], a[0])
    torch.testing.assert_close(s2[0], scale[0])
    assert float(a2.detach().norm(dim=-1).max()) <= 0.9 * R * (1 + 1e-5)
    q = WrappedNormal(M, M.expmap0(a2 / 2), s2, validate_args=True)  # no ValueError
    z = q.rsample((200,))
    assert bool(torch.isfinite(z).all()) and bool(torch.isfinite(q.log_prob(z)).all())
    g, = torch.autograd.grad(q.log_prob(z).sum() + s2.sum(), a)
    assert bool(torch.isfinite(g).all())


def test_gradients_stay_finite_where_some_rows_have_no_boundary():
    """κ per datum of both signs (DynamicCurvatureVAE): rows with κ ≥ 0 have no limit (inf), and
    the cap must not turn their gradients into NaN (inf · 0)."""
    kappa = torch.tensor([[-2.0], [0.0], [1.5]], dtype=F32)
    M = manifolds.Stereographic(kappa)
    a = torch.tensor([[30.0, 0.0], [0.3, 0.1], [0.0, 2.0]], dtype=F32, requires_grad=True)
    s = torch.tensor([[2.0, 2.0], [0.5, 0.5], [0.1, 0.1]], dtype=F32, requires_grad=True)
    a2, s2 = keep_representable(M, a, s)
    ga, gs = torch.autograd.grad((a2.pow(2).sum() + s2.sum()), (a, s))
    assert bool(torch.isfinite(ga).all()) and bool(torch.isfinite(gs).all())
    torch.testing.assert_close(a2[1:], a[1:].detach())
    assert float(a2[0].detach().norm()) < 0.9 * 15.25 / 2**0.5


def test_no_boundary_no_cap():
    a = torch.tensor([[1e3, 0.0]], dtype=F64)
    s = torch.tensor([[50.0, 50.0]], dtype=F64)
    for M in (manifolds.Stereographic(0.0), manifolds.Stereographic(0.5), manifolds.Euclidean(1)):
        a2, s2 = keep_representable(M, a, s)
        assert torch.equal(a2, a) and torch.equal(s2, s)


def test_float32_poincare_vae_with_a_diverged_encoder_still_builds_its_posterior():
    torch.manual_seed(0)
    vae = ManifoldVAE(16, "poincare", 2, hidden=(16,), likelihood="gaussian", obs_scale=0.3)
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.mul_(50.0)  # radii and scales far beyond 15.25 in float32
    x = torch.randn(32, 16)
    (q,) = vae.encode(x)
    z = q.rsample()
    assert bool(torch.isfinite(q.log_prob(z)).all())
    loss = -q.log_prob(z).sum()
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in vae.encoder.parameters() if p.grad is not None)


def test_float32_dynamic_curvature_vae_with_a_diverged_encoder_still_builds_its_posterior():
    torch.manual_seed(0)
    vae = DynamicCurvatureVAE(8, 2, condition="label", n_conditions=2, hidden=(16,))
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.mul_(50.0)
        for p in vae.kappa_net.parameters():
            p.zero_()
        list(vae.kappa_net.parameters())[-1].fill_(-3.0)  # κ = -3: boundary at radius 15.25/√3
    x = torch.randn(16, 8)
    kappa = vae.kappa(x, torch.zeros(16, dtype=torch.long))
    assert bool((kappa < 0).all())
    q = vae.encode(x, kappa)
    z = q.rsample()
    assert bool(torch.isfinite(q.log_prob(z)).all())
