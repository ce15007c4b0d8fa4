"""Curvature parametrisation at the edges (issue 11, defect 2).

``PoincareBall(c)`` / ``SphereProjection(c)`` store ``ρ = softplus⁻¹(c)``; ``log(expm1(c))``
overflowed from c ≈ 88 (float32) / 709 (float64), so ``PoincareBall(100.).c`` was inf and
valid models were rejected, while ``PoincareBall(nan)`` was accepted.
"""

from __future__ import annotations

import math

import pytest
import torch

import dlmppl.manifolds as M
from dlmppl.distributions import RiemannianNormal, WrappedNormal

MAGNITUDES = [1e-8, 1e-3, 1.0, 20.5, 88.5, 100.0, 709.5, 1e3, 1e30]


@pytest.mark.parametrize("cls", [M.PoincareBall, M.SphereProjection, M.PoincareBallExact])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("learnable", [False, True])
def test_magnitudes_round_trip(cls, dtype, learnable):
    c = torch.tensor(MAGNITUDES, dtype=dtype).reshape(-1, 1)
    if dtype == torch.float32:
        c = c[torch.isfinite(c)]
    m = cls(c, learnable=learnable)
    got = m.c
    assert got.dtype == dtype and torch.isfinite(got).all()
    # softplus(softplus⁻¹(c)) loses at most ~|log c| ulps (the parameter is a logarithm for small c)
    eps = torch.finfo(dtype).eps
    tol = 8 * eps * torch.maximum(torch.ones_like(c), c.log().abs())
    assert ((got - c).abs() <= tol * c).all(), (got / c - 1)
    sign = -1.0 if issubclass(cls, M.PoincareBall) else 1.0
    torch.testing.assert_close(m.k, sign * got)
    if learnable:
        (m.k.sum()).backward()
        assert torch.isfinite(m.isp_c.grad).all() and (m.isp_c.grad != 0).all()


def test_scalar_curvature_above_overflow_threshold_is_exact():
    for dtype in (torch.float32, torch.float64):
        for c in (100.0, 1e3):
            ball = M.PoincareBall(torch.tensor(c, dtype=dtype))
            assert float(ball.c) == c and float(ball.k) == -c
    assert float(M.PoincareBall(100.0).c) == 100.0  # default dtype, from a Python number
    assert M.CurvatureParameter(-100.0, sign=-1)().item() == -100.0
    assert M.CurvatureParameter(800.0, sign=1)().item() == pytest.approx(800.0, rel=1e-6)


def test_valid_model_with_large_curvature_is_accepted():
    # c = 100 (stored in the default float32): radius 0.1 ball; a wrapped normal of scale 0.05
    # at the origin is a valid model
    ball = M.PoincareBall(100.0)
    loc = torch.zeros(3, dtype=torch.float64)
    for dist in (WrappedNormal(ball, loc, torch.tensor(0.05, dtype=torch.float64)),
                 RiemannianNormal(ball, loc, torch.tensor(0.05, dtype=torch.float64))):
        z = dist.sample((50,))
        lp = dist.log_prob(z)
        assert torch.isfinite(lp).all() and dist.support.check(z).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 0.0, -1.0])
@pytest.mark.parametrize("cls", [M.PoincareBall, M.SphereProjection])
def test_invalid_magnitude_raises_naming_c(cls, bad):
    with pytest.raises(ValueError, match="^c: "):
        cls(bad)
    with pytest.raises(ValueError, match="^c: "):
        cls(torch.tensor([[1.0], [bad]]), learnable=True)


def test_graph_curvature_checked_when_validating():
    raw = torch.tensor([[0.5], [float("nan")]], requires_grad=True)
    with pytest.raises(ValueError, match="^c: "):
        M.PoincareBall(raw * 2)
    with pytest.raises(ValueError, match="^k: "):
        M.Stereographic(raw * 2)
    # validation off: a network output is taken as it is (no host sync)
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        assert M.PoincareBall(raw * 2).c.requires_grad
    finally:
        torch.distributions.Distribution.set_default_validate_args(True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_stereographic_and_curvature_parameter_reject_non_finite(bad):
    with pytest.raises(ValueError, match="^k: "):
        M.Stereographic(bad)
    with pytest.raises(ValueError, match="^k: "):
        M.StereographicExact(torch.tensor([0.0, bad]), learnable=True)
    with pytest.raises(ValueError, match="^init: "):
        M.CurvatureParameter(bad, sign=-1)


def test_small_and_large_curvature_geometry_is_finite():
    # the whole range 1e-8 .. 1e3 through the geometry: distances of points at a fixed
    # fraction of the radius scale as 1/√c
    x = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    y = torch.tensor([-0.5, 0.1, 0.4], dtype=torch.float64)
    ref = M.PoincareBall(1.0).dist(x, y)
    for c in (1e-8, 1e-3, 1e3):
        ball = M.PoincareBall(torch.tensor(c, dtype=torch.float64))
        s = math.sqrt(c)
        torch.testing.assert_close(ball.dist(x / s, y / s) * s, ref)
