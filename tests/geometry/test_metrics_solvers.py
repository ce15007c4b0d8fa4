"""Metric fields and geodesic solvers against closed forms.

Known solutions used: the inverse stereographic projection onto a sphere of
radius R is an isometric embedding of the chart with metric R² λ₁(z)² I, so
pull-back geodesics are great circles of length R·angle; the Poincaré disk's
conformal metric has the closed-form distance of :mod:`dlmppl.kmath`.
"""

import pytest
import torch

import dlmppl.manifolds as M
from dlmppl import geometry as geo

DT = torch.float64
R = 3.0


def inv_stereo(z):
    """Inverse stereographic projection from the north pole onto the sphere of radius R."""
    n2 = z.pow(2).sum(-1, keepdim=True)
    return R * torch.cat((2 * z, n2 - 1), -1) / (n2 + 1)


# pairs whose great circle stays in the southern hemisphere region of the chart
Z0 = torch.tensor([[-0.8, 0.3], [0.2, -0.9], [0.9, 0.0]], dtype=DT)
Z1 = torch.tensor([[0.7, 0.6], [0.1, 0.8], [0.0, 0.9]], dtype=DT)


def great_circle(z0, z1, n):
    x0, x1 = inv_stereo(z0) / R, inv_stereo(z1) / R
    return geo.interpolate(M.Sphere(), x0, x1, n).movedim(0, -2), R * geo.distance(M.Sphere(), x0, x1)


@pytest.fixture(scope="module")
def sphere_solution():
    metric = geo.PullbackMetric(inv_stereo)
    return metric, geo.connecting_geodesic(metric, Z0, Z1, n_points=24)


def test_pullback_geodesic_is_great_circle(sphere_solution):
    metric, res = sphere_solution
    gc, dist = great_circle(Z0, Z1, 24)
    assert res.converged.all(), res.grad_norm
    # endpoints fixed exactly
    assert torch.equal(res.curve[:, 0], Z0) and torch.equal(res.curve[:, -1], Z1)
    # length = R · great-circle angle within 1% (measured: < 0.1%)
    assert ((res.length / dist - 1).abs() < 0.01).all(), (res.length, dist)
    # energy within 1% of the optimum L²/2
    assert ((res.energy / (dist**2 / 2) - 1).abs() < 0.01).all(), (res.energy, dist)
    # the path is the great circle: decoded nodes lie on it (tolerance: 1% of the radius)
    on = inv_stereo(res.curve) / R
    dev = (on.unsqueeze(-2) - gc.unsqueeze(-3)).norm(dim=-1).amin(-1)  # distance to nearest gc node
    spacing = dist.max() / R / 23
    assert float(dev.max()) < 0.5 * float(spacing) + 0.01
    # and the decoded nodes are equally spaced (constant speed)
    seg = geo.distance(M.Sphere(), on[:, 1:], on[:, :-1])
    assert float((seg / seg.mean(-1, keepdim=True) - 1).abs().max()) < 0.05


def test_straight_line_not_shorter_and_test_has_power(sphere_solution):
    metric, res = sphere_solution
    t = torch.linspace(0, 1, 24, dtype=DT)[:, None]
    line = Z0[:, None] + t * (Z1 - Z0)[:, None]
    line_len = geo.curve_length(metric, line)
    assert (res.length <= line_len + 1e-10).all()
    # the straight line is > 1% longer: a solver that returned it would fail the 1% test above
    _, dist = great_circle(Z0, Z1, 24)
    assert ((line_len / dist - 1) > 0.01).all(), line_len / dist
    # E >= L²/2 for every curve, equality only at constant speed
    assert (geo.curve_energy(metric, line) >= line_len**2 / 2 - 1e-12).all()


def test_poincare_conformal_solver_distance():
    k = torch.tensor([[-1.0], [-2.0]], dtype=DT)
    a = torch.tensor([[0.5, 0.1], [-0.5, 0.2]], dtype=DT)
    b = torch.tensor([[-0.4, 0.6], [0.5, 0.15]], dtype=DT)
    res = geo.connecting_geodesic(geo.ConformalMetric(k), a, b, n_points=24)
    ref = geo.distance(M.Stereographic(k), a, b)
    assert ((res.length / ref - 1).abs() < 0.01).all(), (res.length, ref)
    path = geo.interpolate(M.Stereographic(k), a, b, 24).movedim(0, -2)
    assert float((res.curve - path).abs().max()) < 5e-3


def test_shooting_matches_closed_form_geodesic():
    P = M.PoincareBall(1.0)
    a = torch.tensor([[0.5, 0.1], [-0.3, -0.4]], dtype=DT)
    b = torch.tensor([[-0.4, 0.6], [0.6, 0.2]], dtype=DT)
    v = geo.logmap(P, a, b)
    res = geo.shooting_geodesic(geo.ConformalMetric(-1.0), a, v, t=1.0, n_steps=40)
    ref = geo.shoot(P, a, v, torch.linspace(0, 1, 41, dtype=DT)).movedim(0, -2)
    torch.testing.assert_close(res.curve, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.length, geo.distance(P, a, b), rtol=1e-3, atol=0)


class DenseConformal(geo.MetricField):
    """Implements only metric(): exercises the generic (autograd) acceleration and defaults."""

    def metric(self, z, condition=None):
        lam = 2 / (1 - z.pow(2).sum(-1))
        return lam[..., None, None] ** 2 * torch.eye(z.shape[-1], dtype=z.dtype)


def test_generic_acceleration_and_defaults_match_closed_forms():
    z = 0.4 * torch.randn(5, 3, dtype=DT)
    v = torch.randn(5, 3, dtype=DT)
    c, d = geo.ConformalMetric(-1.0), DenseConformal()
    torch.testing.assert_close(d.acceleration(z, v), c.acceleration(z, v))
    torch.testing.assert_close(d.logdet(z), c.logdet(z))
    torch.testing.assert_close(d.inverse(z), c.inverse(z))
    torch.testing.assert_close(d.quadratic(z, v), c.quadratic(z, v))
    # the geodesic acceleration of the Poincaré ball from the Christoffel symbols
    # Γᵏᵢⱼ = δᵏᵢ∂ⱼφ + δᵏⱼ∂ᵢφ - δᵢⱼ∂ᵏφ, φ = log λ (Lee, Riemannian Manifolds, conformal metrics)
    gphi = 2 * z / (1 - z.pow(2).sum(-1, keepdim=True))
    ref = -(2 * (gphi * v).sum(-1, keepdim=True) * v - v.pow(2).sum(-1, keepdim=True) * gphi)
    torch.testing.assert_close(d.acceleration(z, v), ref)


def _nets():
    torch.manual_seed(0)
    mu = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 7)).to(DT)
    sd = torch.nn.Sequential(torch.nn.Linear(3, 7), torch.nn.Softplus()).to(DT)
    return mu, sd


def test_pullback_metric_matches_dense_jacobian():
    mu, sd = _nets()
    m = geo.PullbackMetric(mu, variance_decoder=sd)
    z = torch.randn(4, 3, dtype=DT)
    v = torch.randn(4, 3, dtype=DT)
    jm = torch.stack([torch.autograd.functional.jacobian(mu, zi) for zi in z])
    js = torch.stack([torch.autograd.functional.jacobian(sd, zi) for zi in z])
    G = jm.transpose(-1, -2) @ jm + js.transpose(-1, -2) @ js
    torch.testing.assert_close(m.metric(z), G)
    torch.testing.assert_close(m.quadratic(z, v), torch.einsum("bi,bij,bj->b", v, G, v))
    torch.testing.assert_close(m.inner(z, v, 2 * v), 2 * m.quadratic(z, v))
    torch.testing.assert_close(m.metric_vector(z, v), (G @ v[..., None])[..., 0])
    torch.testing.assert_close(m.logdet(z), torch.linalg.slogdet(G)[1])
    torch.testing.assert_close(m.inverse(z), torch.linalg.inv(G))
    # the variance term makes the metric larger: vᵀGv > ‖J_μ v‖²
    assert (m.quadratic(z, v) > geo.PullbackMetric(mu).quadratic(z, v)).all()
    # decoder parameters receive no gradient from the solver
    geo.connecting_geodesic(m, z[:2], z[2:], n_points=8, max_iter=20)
    assert all(p.grad is None for p in mu.parameters())


def test_pullback_condition_is_passed():
    dec = lambda z, c: c * z
    m = geo.PullbackMetric(dec)
    z = torch.randn(2, 2, dtype=DT)
    v = torch.randn(2, 2, dtype=DT)
    c = torch.tensor([[2.0], [3.0]], dtype=DT)
    torch.testing.assert_close(m.quadratic(z, v, condition=c), (c**2).squeeze(-1) * v.pow(2).sum(-1))
    res = geo.connecting_geodesic(m, z, -z, n_points=6, condition=c)
    torch.testing.assert_close(res.length, c.squeeze(-1) * 2 * z.norm(dim=-1), rtol=1e-6, atol=1e-9)


def test_latent_sphere_curve_stays_on_manifold():
    S = M.Sphere()
    torch.manual_seed(1)
    dec = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5)).to(DT)
    m = geo.PullbackMetric(dec, latent_manifold=S)
    a, b = S.random_uniform(2, 3, dtype=DT), S.random_uniform(2, 3, dtype=DT)
    res = geo.connecting_geodesic(m, a, b, n_points=10)
    assert float((res.curve.norm(dim=-1) - 1).abs().max()) < 1e-12
    init_len = geo.curve_length(m, geo.interpolate(S, a, b, 10).movedim(0, -2))
    assert (res.length <= init_len + 1e-12).all()
    # isometric decoder f(z) = R z restricted to the sphere: geodesics are great circles
    iso = geo.PullbackMetric(lambda z: R * z, latent_manifold=S)
    v = geo.logmap(S, a, b)
    # in the normal chart at a, radial geodesics are straight lines: Γ(u)[u, u] = 0 must come
    # out of the autograd Christoffel terms of the chart metric (they do not vanish off u = 0)
    sh = geo.shooting_geodesic(iso, a, v, t=1.0, n_steps=5)
    assert float((sh.curve.norm(dim=-1) - 1).abs().max()) < 1e-12
    torch.testing.assert_close(sh.curve[:, -1], b, rtol=0, atol=1e-6)
    torch.testing.assert_close(sh.length, R * geo.distance(S, a, b), rtol=1e-3, atol=0)


def test_solver_errors():
    z = torch.zeros(2, dtype=DT)
    with pytest.raises(ValueError, match="metric"):
        geo.connecting_geodesic(lambda z: z, z, z)
    with pytest.raises(ValueError, match="n_points"):
        geo.connecting_geodesic(geo.EuclideanMetric(2), z, z, n_points=2)


def test_connecting_geodesic_under_no_grad():
    # callers computing distance matrices without gradients (the persistence pairing) work
    from dlmppl.geometry import ConformalMetric, connecting_geodesic

    z0 = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    z1 = torch.tensor([[-0.3, 0.4]], dtype=torch.float64)
    ref = connecting_geodesic(ConformalMetric(-1.0), z0, z1, 16).length
    with torch.no_grad():
        res = connecting_geodesic(ConformalMetric(-1.0), z0, z1, 16)
    assert not res.length.requires_grad
    torch.testing.assert_close(res.length, ref.detach())
