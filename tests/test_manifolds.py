"""Curvature as a number, a learnable parameter, or a batched network output."""

import geoopt
import pytest
import torch

import dlmppl.manifolds as M

D = torch.float64


def test_reexports_are_geoopt_classes():
    for name in ["Euclidean", "Sphere", "SphereExact", "Stiefel", "CanonicalStiefel",
                 "EuclideanStiefel", "EuclideanStiefelExact", "SymmetricPositiveDefinite", "ProductManifold"]:
        assert getattr(M, name) is getattr(geoopt, name)
    for name in ["Stereographic", "StereographicExact", "PoincareBall", "PoincareBallExact",
                 "SphereProjection", "SphereProjectionExact", "Lorentz"]:
        assert issubclass(getattr(M, name), getattr(geoopt, name))


def test_fixed_and_learnable_curvature():
    m = M.Stereographic(-1.0)
    assert not m.k.requires_grad and m.k.item() == -1.0
    m = M.Stereographic(0.3, learnable=True)
    assert isinstance(m.k, torch.nn.Parameter) and m.k.requires_grad
    assert [n for n, _ in m.named_parameters()] == ["k"]
    x = torch.randn(5, 2, dtype=D) * 0.2
    y = torch.randn(5, 2, dtype=D) * 0.2
    m.dist(x, y).sum().backward()
    assert m.k.grad is not None and torch.isfinite(m.k.grad)
    ball = M.PoincareBall(2.0, learnable=True)
    assert torch.isclose(ball.k, torch.tensor(-2.0))
    ball.dist(x, y).sum().backward()
    assert ball.isp_c.grad is not None
    with pytest.raises(ValueError, match="c must be > 0"):
        M.PoincareBall(-1.0)


def test_batched_curvature_from_a_network_keeps_its_graph():
    net = torch.nn.Linear(3, 1).double()
    cond = torch.randn(4, 3, dtype=D)
    k = torch.tanh(net(cond))  # (4, 1): one curvature per data point, either sign
    m = M.StereographicExact(k)
    assert m.k is k
    x = torch.randn(4, 2, dtype=D) * 0.2
    v = torch.randn(4, 2, dtype=D) * 0.2
    y = m.expmap(x, v)
    d = m.dist(x, y)
    assert d.shape == (4,)
    torch.testing.assert_close(d, m.norm(x, v))
    d.sum().backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()
    # each row uses its own curvature
    for i in range(4):
        mi = M.Stereographic(k[i, 0].detach())
        torch.testing.assert_close(mi.dist(x[i], y[i]), d[i].detach())


def test_learnable_curvature_passes_through_zero_by_gradient_steps():
    # points whose best-fitting curvature is negative; start from κ = +0.2 and descend:
    # κ crosses 0 with finite gradients all the way.
    m = M.Stereographic(0.2, learnable=True)
    m.double()
    opt = torch.optim.SGD(m.parameters(), lr=2.0)
    x = torch.tensor([[0.3, 0.0]], dtype=D)
    y = torch.tensor([[0.0, 0.3]], dtype=D)
    target = torch.tensor(1.0, dtype=D)  # > flat distance 2*0.3*sqrt(2)=0.849: needs κ < 0
    seen = []
    for _ in range(200):
        opt.zero_grad()
        loss = (m.dist(x, y).squeeze() - target) ** 2
        loss.backward()
        assert torch.isfinite(m.k.grad)
        opt.step()
        seen.append(m.k.item())
    assert seen[0] > 0 > seen[-1]


def test_curvature_parameter_signs():
    assert M.CurvatureParameter(-1.0, sign=-1)().item() == pytest.approx(-1.0)
    assert M.CurvatureParameter(0.5, sign=1)().item() == pytest.approx(0.5)
    assert M.CurvatureParameter(0.0)().item() == 0.0
    with pytest.raises(ValueError):
        M.CurvatureParameter(1.0, sign=-1)


def test_curvature_and_dimension_helpers():
    assert M.curvature(M.Sphere()).item() == 1.0
    assert M.curvature(M.Lorentz(4.0)).item() == pytest.approx(-0.25)
    assert M.curvature(M.PoincareBall(2.0)).item() == pytest.approx(-2.0)
    assert M.manifold_dim(M.Sphere(), (4,)) == 3
    assert M.manifold_dim(M.Stiefel(), (5, 2)) == 7
    assert M.manifold_dim(M.SymmetricPositiveDefinite(), (3, 3)) == 6
    assert M.manifold_dim(M.Stereographic(), (3,)) == 3
    with pytest.raises(ValueError):
        M.curvature(M.Stiefel())


def test_lorentz_curvature_from_a_network_keeps_its_graph():
    net = torch.nn.Linear(2, 1).double()
    # (geoopt's Lorentz math does not broadcast a batched k; a graph-carrying scalar is fine)
    k = torch.nn.functional.softplus(net(torch.randn(1, 2, dtype=D))).squeeze() + 0.5
    L = M.Lorentz(k)
    assert L.k is k
    v = torch.cat([torch.zeros(3, 1, dtype=D), 0.3 * torch.randn(3, 2, dtype=D)], -1)
    x = L.expmap0(v)
    L.dist0(x).sum().backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()
    assert (net.weight.grad != 0).any()


def test_dim_argument_is_honoured_not_ignored():
    """dlmppl's stereographic and Lorentz methods act on the last dimension: that dim is accepted
    (geoopt passes it through), any other is a ValueError rather than silently ignored."""
    x = torch.randn(4, 3, dtype=torch.float64) * 0.1
    P = M.PoincareBall(1.0)
    torch.testing.assert_close(P.dist(x, x.flip(0), dim=1), P.dist(x, x.flip(0)))
    with pytest.raises(ValueError, match="dim"):
        P.dist(x, x.flip(0), dim=0)
    L = M.Lorentz()
    y = L.expmap0(torch.cat([torch.zeros(4, 1, dtype=x.dtype), x], -1))
    with pytest.raises(ValueError, match="dim"):
        L.inner(y, y, dim=0)
