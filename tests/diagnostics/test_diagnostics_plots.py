"""Plots: each returns axes and writes a PNG; the geometry they draw is checked numerically."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402

import dlmppl.diagnostics as D  # noqa: E402
from dlmppl import kmath  # noqa: E402
from dlmppl import manifolds as m  # noqa: E402
from dlmppl.diagnostics import plots as P  # noqa: E402
from tests import statistical as st  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png_ok(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def _unit(n, d=3):
    z = torch.randn(n, d, dtype=torch.float64)
    return z / z.norm(dim=-1, keepdim=True)


def _idata_with_energy(C=2, N=80):
    draws = {"mu": torch.randn(C, N), "loc": _unit(C * N).reshape(C, N, 3)}
    stats = {"energy": np.random.default_rng(0).normal(size=(C, N)), "diverging": np.zeros((C, N), bool)}
    return D.to_inference_data(draws, sample_stats=stats, manifolds={"loc": m.Sphere()})


def test_arviz_wrappers(tmp_path):
    idata = _idata_with_energy()
    for fn, name in ((P.plot_trace, "trace"), (P.plot_rank, "rank")):
        axes = fn(idata, var_names=["mu"], path=tmp_path / f"{name}.png")
        assert np.asarray(axes).size >= 1
        _png_ok(tmp_path / f"{name}.png")
    P.plot_energy(idata, path=tmp_path / "energy.png")
    _png_ok(tmp_path / "energy.png")
    no_energy = D.to_inference_data({"mu": torch.randn(2, 50)})
    with pytest.raises(ValueError, match="energy"):
        P.plot_energy(no_energy)


@pytest.mark.statistical
def test_lambert_equal_area_is_equal_area():
    # uniform on the sphere -> uniform on the disk of radius 2: (r/2)^2 ~ U(0, 1)
    xy = P.lambert_equal_area(_unit(4000), center=(1.0, 2.0, -0.5))
    u = (xy**2).sum(-1) / 4
    st.assert_ks(torch.as_tensor(u), scipy.stats.uniform.cdf, what="(r/2)²", alpha=st.ALPHA / 2)
    # the angle about the centre is uniform as well
    ang = (np.arctan2(xy[:, 1], xy[:, 0]) + np.pi) / (2 * np.pi)
    st.assert_ks(torch.as_tensor(ang), scipy.stats.uniform.cdf, what="angle", alpha=st.ALPHA / 2)
    # radius 2 sin(theta/2) at angle theta from the centre
    c = np.array([0.0, 0.0, 1.0])
    th = 1.1
    p = np.array([[math.sin(th), 0.0, math.cos(th)]])
    np.testing.assert_allclose(np.linalg.norm(P.lambert_equal_area(p, c)), 2 * math.sin(th / 2), rtol=1e-12)


@pytest.mark.statistical
def test_lambert_equal_area_fails_for_orthographic():
    # test of the test: an orthographic projection (not equal-area) is rejected by the KS check
    x = _unit(4000).numpy()
    up = x[:, 2] > 0
    r2 = (x[up, 0] ** 2 + x[up, 1] ** 2)  # orthographic radius^2 of the upper hemisphere
    with pytest.raises(AssertionError, match="combined p"):
        st.assert_ks(torch.as_tensor(r2), scipy.stats.uniform.cdf)
    xy = P.lambert_equal_area(x[up])
    st.assert_ks(torch.as_tensor((xy**2).sum(-1) / 2), scipy.stats.uniform.cdf, what="upper hemisphere (r²/2)")


def test_plot_sphere(tmp_path):
    a = _unit(300) * 0.2 + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    a = a / a.norm(dim=-1, keepdim=True)
    b = -a
    ax = P.plot_sphere([a, b], labels=["north", "south"], path=tmp_path / "s_ea.png", title="equal-area")
    assert ax.name == "rectilinear"
    _png_ok(tmp_path / "s_ea.png")
    ax3 = P.plot_sphere(a, projection="3d", path=tmp_path / "s_3d.png")
    assert ax3.name == "3d"
    _png_ok(tmp_path / "s_3d.png")
    with pytest.raises(ValueError, match="projection"):
        P.plot_sphere(a, projection="mercator")


@pytest.mark.parametrize("c", [1.0, 2.5])
def test_poincare_arc_is_the_hyperbolic_geodesic(c):
    p = torch.tensor([0.5, 0.1], dtype=torch.float64) / math.sqrt(c)
    q = torch.tensor([-0.2, 0.6], dtype=torch.float64) / math.sqrt(c)
    arc = P.poincare_geodesic_arc(p, q, num=4000, c=c)
    np.testing.assert_allclose(arc[0], p.numpy(), atol=1e-12)
    np.testing.assert_allclose(arc[-1], q.numpy(), atol=1e-12)
    # the κ-stereographic closed form of the geodesic lies on the drawn arc
    t = torch.linspace(0, 1, 11, dtype=torch.float64)[:, None]
    g = kmath.geodesic(t, p, q, torch.tensor(-c, dtype=torch.float64)).numpy()
    gap = np.linalg.norm(g[:, None, :] - arc[None], axis=-1).min(1)
    assert gap.max() < 2e-3 / math.sqrt(c)
    # and the arc's circle meets the boundary at right angles: |m|^2 = r^2 + R^2
    A = np.stack([arc[0], arc[2000], arc[-1]])
    (mx, my), r = _circle(A)
    assert abs(mx**2 + my**2 - (r**2 + 1 / c)) < 1e-8
    # through the origin: a straight segment
    seg = P.poincare_geodesic_arc([0.2, 0.2], [-0.3, -0.3], num=5)
    np.testing.assert_allclose(seg[:, 0], seg[:, 1])


def _circle(pts):
    (x1, y1), (x2, y2), (x3, y3) = pts
    A = np.array([[x2 - x1, y2 - y1], [x3 - x1, y3 - y1]]) * 2
    b = np.array([x2**2 - x1**2 + y2**2 - y1**2, x3**2 - x1**2 + y3**2 - y1**2])
    mc = np.linalg.solve(A, b)
    return mc, np.linalg.norm(pts[0] - mc)


def test_plot_poincare_disk(tmp_path):
    pts = kmath.expmap0(torch.randn(30, 2) * 0.8, torch.tensor(-1.0))
    edges = [(0, i) for i in range(1, 10)] + [(i, i + 10) for i in range(1, 10)]
    ax = P.plot_poincare_disk(
        pts, edges=edges, geodesics=[(pts[20], pts[25])], labels=np.arange(30) % 3, path=tmp_path / "disk.png"
    )
    assert len(ax.lines) == 1 + len(edges) + 1  # boundary, edges, extra geodesic
    _png_ok(tmp_path / "disk.png")


def test_plot_elbo(tmp_path):
    losses = 1000 * np.exp(-np.arange(400) / 60) + 5 + np.random.default_rng(0).normal(size=400)
    ax = P.plot_elbo(losses, path=tmp_path / "elbo.png")
    assert ax.get_yscale() == "log" and len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), losses)
    _png_ok(tmp_path / "elbo.png")
    with pytest.raises(ValueError, match="empty"):
        P.plot_elbo([])


def test_plot_latent_interpolation(tmp_path):
    ball = m.PoincareBall(1.0)
    z = kmath.expmap0(torch.randn(200, 2, dtype=torch.float64) * 0.7, torch.tensor(-1.0, dtype=torch.float64))
    # the drawn path is the hyperbolic geodesic
    path = P._interpolate(ball, z[0], z[1], 9)
    t = torch.linspace(0, 1, 9, dtype=torch.float64)[:, None]
    torch.testing.assert_close(path, kmath.geodesic(t, z[0], z[1], torch.tensor(-1.0, dtype=torch.float64)))
    W = torch.randn(2, 64)

    def decoder(zz):
        return torch.sigmoid(zz.float() @ W).reshape(-1, 8, 8)

    axes = P.plot_latent_interpolation(
        z, [(0, 1), (2, 3)], manifold=ball, labels=np.arange(200) % 4, decoder=decoder, path=tmp_path / "interp.png"
    )
    assert len(axes) == 1 + 2 * 9
    _png_ok(tmp_path / "interp.png")
    # on the sphere: great circles in the equal-area projection
    s = _unit(100)
    ax = P.plot_latent_interpolation(s, [(0, 1)], path=tmp_path / "interp_s2.png")
    _png_ok(tmp_path / "interp_s2.png")
    arc = P._interpolate(m.Sphere(), s[0], s[1], 5)
    np.testing.assert_allclose(arc.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    assert ax is not None
