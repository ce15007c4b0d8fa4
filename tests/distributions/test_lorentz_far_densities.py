"""WrappedNormal and RiemannianNormal on the Lorentz model far from the origin (issue 11, defect 1).

Issue 11 measured, with ``loc`` at radius 20 and ``z`` at distance exactly 1, a WrappedNormal
log-density of -5.32 instead of -3.00 and a RiemannianNormal one of -4.95 instead of -2.94
(float64), errors of 2-23 nats at radius 20-25 and, in float32, from radius ≈ 8.  The
references here are mpmath evaluations of the densities at the float points
(tests/lorentz_reference.py); the points lie along a coordinate axis, where float
coordinates resolve them exactly (tests/geometry/test_lorentz_far.py for generic directions).
"""

import pytest
import torch

from dlmppl import manifolds
from dlmppl.distributions import RiemannianNormal, WrappedNormal
from tests import lorentz_reference as ref

D, F = torch.float64, torch.float32
EPS = {D: torch.finfo(D).eps, F: torch.finfo(F).eps}
FAR = [(D, 20.0), (D, 25.0), (D, 40.0), (F, 8.0), (F, 20.0), (F, 40.0)]
IDS = [f"{str(d)[6:]}-r{r:g}" for d, r in FAR]
STEPS = [(0.6, -0.8), (-1.0, 0.0), (0.0, 1.0), (1.5, 2.0), (-2.4, 0.7)]


def _points(dtype, radius, k):
    loc = ref.axis_point(radius, 2, dtype, axis=1, k=k)
    dps = ref.digits(radius + 4)
    zs = [ref.point_from_spatial(ref.exp_frame(loc, torch.tensor(w, dtype=D), k, dps), dtype, k) for w in STEPS]
    return loc, torch.stack(zs), dps


def _close(got, want, dtype):
    # log-densities of order 1-10: a few eps relative, the rounding of z included
    return abs(got - want) <= 64 * EPS[dtype] * max(1.0, abs(want))


@pytest.mark.parametrize("dtype,radius", FAR, ids=IDS)
@pytest.mark.parametrize("k", [1.0, 0.3])
def test_wrapped_normal_log_prob_far_from_the_origin(dtype, radius, k):
    """Issue 11: -5.32 instead of -3.00 at radius 20 (float64)."""
    loc, z, dps = _points(dtype, radius, k)
    scale = torch.tensor(0.8, dtype=dtype)
    lp = WrappedNormal(manifolds.Lorentz(torch.tensor(k, dtype=D)), loc, scale).log_prob(z)
    assert lp.dtype == dtype and lp.shape == (len(STEPS),)
    for i in range(len(STEPS)):
        want = ref.wrapped_normal_log_prob(loc, z[i], k, scale, dps)
        assert _close(float(lp[i]), want, dtype), (i, float(lp[i]), want)


@pytest.mark.parametrize("dtype,radius", FAR, ids=IDS)
def test_riemannian_normal_log_prob_far_from_the_origin(dtype, radius):
    """Issue 11: -4.95 instead of -2.94 at radius 20 (float64)."""
    k = 1.0
    loc, z, dps = _points(dtype, radius, k)
    scale = torch.tensor(0.8, dtype=dtype)
    lp = RiemannianNormal(manifolds.Lorentz(k), loc, scale).log_prob(z)
    for i in range(len(STEPS)):
        want = ref.riemannian_normal_log_prob(loc, z[i], k, scale, dps)
        assert _close(float(lp[i]), want, dtype), (i, float(lp[i]), want)


@pytest.mark.parametrize("dtype,radius", FAR, ids=IDS)
def test_samples_far_from_the_origin_invert_exactly(dtype, radius):
    """rsample = exp_loc(σ ε) at radius 20-40: its frame coordinates recovered by log_prob's log map.

    Checked through the density: log_prob(rsample) is the normal density of σε with the
    radial Jacobian, which fixes |log_loc z| and the direction.
    """
    loc = ref.axis_point(radius, 2, dtype, axis=0)
    scale = torch.tensor([0.5, 1.5], dtype=dtype)
    wn = WrappedNormal(manifolds.Lorentz(), loc, scale)
    torch.manual_seed(3)
    z = wn.rsample((50,))
    assert z.dtype == dtype and torch.isfinite(z).all()
    assert wn.support.check(z).all()
    torch.manual_seed(3)
    eps = torch.randn(50, 2, dtype=dtype)
    v = (eps * scale).double()
    r = v.norm(dim=-1)
    want = (-0.5 * eps.double().pow(2).sum(-1) - scale.double().log().sum() - torch.log(torch.tensor(2 * torch.pi, dtype=D))
            - torch.log(torch.sinh(r) / r))
    got = wn.log_prob(z).double()
    # the rounding of z (relative eps per coordinate) moves the density by at most a few eps·|∂ log p|
    assert (got - want).abs().max() <= 64 * EPS[dtype] * want.abs().max()


@pytest.mark.parametrize("dtype", [D, F])
def test_log_prob_gradients_far_from_the_origin(dtype):
    """Finite gradients in loc, z, scale and k at radius 20 and 40; ∂/∂σ is exact (it depends on d(loc, z) only)."""
    for radius in (20.0, 40.0):
        k = torch.tensor(1.3, dtype=dtype, requires_grad=True)
        loc, z, dps = _points(dtype, radius, 1.3)
        r2 = torch.tensor([ref.dist(loc, zi, 1.3, dps) ** 2 for zi in z], dtype=D)
        loc = loc.clone().requires_grad_(True)
        z = z.clone().requires_grad_(True)
        scale = torch.tensor(0.7, dtype=dtype, requires_grad=True)
        for dist in (WrappedNormal, RiemannianNormal):
            lp = dist(manifolds.Lorentz(k), loc, scale, validate_args=False).log_prob(z).sum()
            grads = torch.autograd.grad(lp, (loc, z, scale, k))
            assert all(torch.isfinite(g).all() for g in grads), (dist, radius, grads)
            if dist is WrappedNormal:  # ∂σ Σ log p = Σ r²/σ³ - 2 n / σ for d = 2
                want = float((r2 / 0.7**3).sum() - 2 * len(r2) / 0.7)
                assert abs(float(grads[2]) - want) <= 64 * EPS[dtype] * abs(want) * len(r2), (radius, grads[2], want)


def test_log_prob_gradcheck_far_from_the_origin():
    """Analytic gradients of log_prob at radius 12 (float64, axis-aligned loc) match finite differences."""
    loc, z, _ = _points(D, 12.0, 1.0)
    zs = z[:3, 1:].clone().requires_grad_(True)
    scale = torch.tensor([0.6, 0.9], dtype=D, requires_grad=True)
    L = manifolds.Lorentz()

    def f(zs, scale):
        zz = torch.cat([(1 + zs.pow(2).sum(-1, keepdim=True)).sqrt(), zs], -1)
        return WrappedNormal(L, loc, scale, validate_args=False).log_prob(zz)

    assert torch.autograd.gradcheck(f, (zs, scale), eps=1e-6, atol=1e-6)
