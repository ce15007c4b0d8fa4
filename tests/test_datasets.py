import math

import numpy as np
import pyro
import pytest
import torch

from dlmppl import datasets as D
from dlmppl import kmath
from tests import statistical as st


@pytest.mark.statistical
def test_branching_diffusion_structure():
    """A property of random data (siblings closer than nodes): passed on seeds 0-11 (0/12 failures)."""
    x, y = D.branching_diffusion(depth=3, branching=2, dim=10, n_siblings=4, standardize=False)
    n_nodes = 2**4 - 1
    assert x.shape == (4 * n_nodes, 10) and y.shape == (4 * n_nodes, 2)
    assert y[:, 0].max() == 3 and (y[:, 0].bincount() == 4 * torch.tensor([1, 2, 4, 8])).all()
    # siblings of one node are much closer to each other than to other nodes
    node = x.reshape(n_nodes, 4, 10)
    within = (node - node.mean(1, keepdim=True)).norm(dim=-1).mean()
    between = torch.cdist(node.mean(1), node.mean(1)).sum() / (n_nodes * (n_nodes - 1))
    assert within < 0.3 * between
    xs, _ = D.branching_diffusion(depth=3, dim=10)
    torch.testing.assert_close(xs.mean(0), torch.zeros(10), atol=1e-5, rtol=0)


def test_reproducible_with_seed():
    pyro.set_rng_seed(st.seed(3))
    a = D.noisy_torus(50)[0]
    pyro.set_rng_seed(st.seed(3))
    b = D.noisy_torus(50)[0]
    torch.testing.assert_close(a, b)


def test_noiseless_manifolds():
    x, y = D.noisy_circles(100, factor=0.3, noise=0.0)
    r = x.norm(dim=-1)
    torch.testing.assert_close(r[y == 0], torch.ones((y == 0).sum()))
    torch.testing.assert_close(r[y == 1], torch.full(((y == 1).sum(),), 0.3))
    x, u = D.noisy_sphere(100, dim=3, radius=2.0, noise=0.0, ambient=6)
    torch.testing.assert_close(x.norm(dim=-1), torch.full((100,), 2.0))
    assert (x[:, 4:] == 0).all() and u.shape == (100, 4)
    x, ang = D.noisy_torus(100, 2.0, 0.5, noise=0.0)
    rho = (x[:, :2].norm(dim=-1) - 2.0).pow(2) + x[:, 2].pow(2)
    torch.testing.assert_close(rho, torch.full((100,), 0.25))
    x, th = D.swiss_roll(100, noise=0.0)
    torch.testing.assert_close(x[:, 0].pow(2) + x[:, 2].pow(2), th[:, 0].pow(2))
    assert th[:, 0].min() >= 1.5 * math.pi and th[:, 0].max() <= 4.5 * math.pi


def test_curved_distance_data():
    x, u = D.curved_distance_data("sphere", n=200, noise=0.0, cap_angle=1.0)
    assert x.shape == (200, 16) and u.shape == (200, 2)
    assert kmath.dist0(u, torch.tensor(1.0)).max() <= 1.0 + 1e-4  # on the cap
    assert (x >= 0).all() and x.max() <= 2.0 + 1e-4  # two points of the cap are at most 2 rad apart
    x, u = D.curved_distance_data("tree", n=200, noise=0.0, tree_depth=3)
    assert u.shape == (200, 3) and set(u[:, 2].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert (u[:, :2].norm(dim=-1) < 1).all()  # inside the Poincaré disk


def test_digits():
    x, y = D.digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.min() >= 0 and x.max() <= 1 and set(y.unique().tolist()) == set(range(10))
    xb, _ = D.digits(binarize=True)
    assert set(xb.unique().tolist()) == {0.0, 1.0}


# ------------------------------------------------------------------ images with a known latent topology


@pytest.mark.parametrize(
    "fn, ydim, channels",
    [(D.rotating_sprite, (1,), 1), (D.clock, (2,), 1), (D.rotating_segment, (1,), 1), (D.rotating_object, (3, 3), 3)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topology_images_shapes_and_range(fn, ydim, channels, dtype):
    x, y = fn(7, size=12, dtype=dtype)
    assert x.shape == (7, channels * 144) and y.shape == (7,) + ydim
    assert x.dtype == dtype and y.dtype == dtype
    assert bool(((x >= 0) & (x <= 1)).all()) and float(x.amax()) > 0.5
    x0, y0 = fn(0, size=12, dtype=dtype)
    assert x0.shape == (0, channels * 144) and y0.shape == (0,) + ydim
    xn, _ = fn(3, size=12, noise=0.1, dtype=dtype)
    assert bool(((xn >= 0) & (xn <= 1)).all())


def test_topology_images_factor_ranges():
    pyro.set_rng_seed(st.seed(1))
    _, th = D.rotating_sprite(500)
    assert th.abs().max() <= math.pi and th.min() < -2.5 and th.max() > 2.5
    _, th = D.rotating_segment(500)
    assert th.abs().max() <= math.pi / 2 and th.min() < -1.3 and th.max() > 1.3
    _, R = D.rotating_object(50)
    eye = torch.eye(3).expand(50, 3, 3)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(50), atol=1e-5, rtol=0)


def test_topology_images_identify_their_factor_and_nothing_more():
    """The image is a function of the factor on its quotient: equal where the topology says the
    factors are the same point (θ and θ + 2π; a segment's θ and θ + π), different elsewhere."""
    th = torch.tensor([0.3, -2.0, 1.2], dtype=torch.float64)
    a = D.rotating_sprite(size=16, theta=th, dtype=torch.float64)[0]
    torch.testing.assert_close(a, D.rotating_sprite(size=16, theta=th + 2 * math.pi, dtype=torch.float64)[0])
    assert (a - D.rotating_sprite(size=16, theta=th + math.pi, dtype=torch.float64)[0]).abs().amax() > 0.5  # no 180° symmetry
    s = D.rotating_segment(size=16, theta=th, dtype=torch.float64)[0]
    torch.testing.assert_close(s, D.rotating_segment(size=16, theta=th + math.pi, dtype=torch.float64)[0])
    assert (s - D.rotating_segment(size=16, theta=th + math.pi / 2, dtype=torch.float64)[0]).abs().amax() > 0.5
    c = D.clock(size=16, theta=torch.tensor([[0.3, 2.0]], dtype=torch.float64), dtype=torch.float64)[0]
    c_swap = D.clock(size=16, theta=torch.tensor([[2.0, 0.3]], dtype=torch.float64), dtype=torch.float64)[0]
    assert (c - c_swap).abs().amax() > 0.3  # the hands are distinguishable: T², not the symmetric square
    # the coloured tetrahedron: no rotation other than the identity leaves its image unchanged
    R = D.random_rotations(200, dtype=torch.float64)
    img = D.rotating_object(size=16, rotations=R, dtype=torch.float64)[0]
    ref = D.rotating_object(size=16, rotations=torch.eye(3, dtype=torch.float64)[None], dtype=torch.float64)[0]
    angle = torch.arccos(((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    far = angle > 0.5
    assert (img[far] - ref).abs().amax(-1).min() > 0.2


def test_topology_images_are_continuous_in_the_factor():
    th = torch.linspace(-math.pi, math.pi, 200, dtype=torch.float64)
    x = D.rotating_sprite(size=16, theta=th, dtype=torch.float64)[0]
    step = (x[1:] - x[:-1]).abs().amax(-1)
    assert float(step.max()) < 0.5  # smooth rendering: a small rotation changes pixels a little


def test_topology_images_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        D.clock(5, size=2)
    with pytest.raises(ValueError, match="noise"):
        D.rotating_segment(5, noise=-1.0)
    with pytest.raises(ValueError, match="theta"):
        D.clock(theta=torch.zeros(4))
    with pytest.raises(ValueError, match="rotations"):
        D.rotating_object(rotations=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n must"):
        D.rotating_sprite(-1)


@pytest.mark.statistical
def test_random_rotations_are_haar():
    """Haar on SO(3): the rotation angle has density (1 - cos ω)/π on [0, π] (KS, false alarm ALPHA)."""
    pyro.set_rng_seed(st.seed(2))
    R = D.random_rotations(4000, dtype=torch.float64)
    omega = torch.arccos(((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)).numpy()
    st.assert_ks(omega, lambda w: (w - np.sin(w)) / math.pi)


# ------------------------------------------------------------------ procedural data with known factors (issue 14)


def _centre_of_mass(img):
    """Centre of mass ``(n, 2)`` (column, row) in pixel indices of images ``(n, H, W)``."""
    rows = torch.arange(img.shape[1], dtype=img.dtype)
    cols = torch.arange(img.shape[2], dtype=img.dtype)
    m = img.sum((1, 2))
    return torch.stack([(img.sum(1) * cols).sum(-1) / m, (img.sum(2) * rows).sum(-1) / m], -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sprites_shapes_dtypes_and_grid_values(dtype):
    x, f = D.sprites(40, size=24, dtype=dtype)
    assert x.shape == (40, 24, 24) and f.shape == (40, 5) and x.dtype == dtype and f.dtype == dtype
    assert bool(((x >= 0) & (x <= 1)).all()) and bool((x.amax((1, 2)) > 0.5).all())
    assert set(f[:, 0].tolist()) <= {0.0, 1.0, 2.0}
    torch.testing.assert_close(
        f[:, 1], 0.5 + 0.1 * torch.round((f[:, 1] - 0.5) / 0.1)
    )  # 6 scales over [0.5, 1]
    j = f[:, 2] / (2 * math.pi / 40)
    torch.testing.assert_close(j, j.round())
    assert bool(((j.round() >= 0) & (j.round() < 40)).all())
    torch.testing.assert_close(f[:, 3:] * 31, (f[:, 3:] * 31).round())  # 32 positions over [0, 1]
    assert len(D.SPRITES_FACTORS) == len(D.SPRITES_CIRCULAR) == 5 and D.SPRITES_CIRCULAR[2]
    x0, f0 = D.sprites(0, size=24, dtype=dtype)
    assert x0.shape == (0, 24, 24) and f0.shape == (0, 5)
    xb, _ = D.sprites(5, size=24, binary=True, dtype=dtype)
    assert set(xb.unique().tolist()) == {0.0, 1.0}
    xn, _ = D.sprites(5, size=24, noise=0.2, dtype=dtype)
    assert bool(((xn >= 0) & (xn <= 1)).all())
    _, fh = D.sprites(30, size=8, shapes=("heart",), scales=1, rotations=1, positions=1, dtype=dtype)
    torch.testing.assert_close(fh, torch.tensor([2.0, 1.0, 0.0, 0.5, 0.5], dtype=dtype).expand(30, 5))


def test_sprites_reproducible_under_manual_seed():
    torch.manual_seed(5)
    a = D.sprites(6, size=16)
    torch.manual_seed(5)
    b = D.sprites(6, size=16)
    torch.testing.assert_close(a, b)


def test_sprites_grid_order_chunks_and_size():
    g = D.sprites_grid(("square", "heart"), scales=2, rotations=3, positions=2, dtype=torch.float64)
    assert g.shape == (2 * 2 * 3 * 2 * 2, 5)
    # row i carries the mixed-radix digits of i (shape slowest, y fastest)
    i = torch.arange(g.shape[0])
    digits = torch.stack([i // 24, i // 12 % 2, i // 4 % 3, i // 2 % 2, i % 2], -1).double()
    ref = torch.stack(
        [
            torch.tensor([0.0, 2.0], dtype=torch.float64)[digits[:, 0].long()],
            0.5 + 0.5 * digits[:, 1],
            2 * math.pi / 3 * digits[:, 2],
            digits[:, 3],
            digits[:, 4],
        ],
        -1,
    )
    torch.testing.assert_close(g, ref)
    chunks = list(
        D.sprites_chunks(10, size=12, shapes=("square", "heart"), scales=2, rotations=3, positions=2)
    )
    assert [c[0].shape[0] for c in chunks] == [10, 10, 10, 10, 8]
    x_all, f_all = D.sprites(size=12, shapes=("square", "heart"), factors=g.float())
    torch.testing.assert_close(torch.cat([c[0] for c in chunks]), x_all)
    torch.testing.assert_close(torch.cat([c[1] for c in chunks]), f_all)
    full = D.sprites_grid()  # factors only: 737,280 rows, no images
    assert full.shape == (3 * 6 * 40 * 32 * 32, 5)
    assert [len(full[:, c].unique()) for c in range(5)] == [3, 6, 40, 32, 32] and float(
        full[:, 2].max()
    ) < 2 * math.pi


def test_sprites_centre_of_mass_is_the_position():
    """The centroid of every shape (the heart's too, whose centroid is not its bounding box's centre)
    sits at pixel column (1.2x + 0.4) size/2 - ½, row (1.6 - 1.2y) size/2 - ½, at any rotation."""
    size, m = 32, 20
    gen = torch.Generator().manual_seed(1)
    for code in range(3):
        f = torch.stack(
            [
                torch.full((m,), float(code)),
                0.5 + 0.5 * torch.rand(m, generator=gen),
                2 * math.pi * torch.rand(m, generator=gen),
                torch.rand(m, generator=gen),
                torch.rand(m, generator=gen),
            ],
            -1,
        ).double()
        img, _ = D.sprites(size=size, factors=f, dtype=torch.float64)
        com = _centre_of_mass(img)
        expect = torch.stack(
            [(1.2 * f[:, 3] + 0.4) * size / 2 - 0.5, (1.6 - 1.2 * f[:, 4]) * size / 2 - 0.5], -1
        )
        torch.testing.assert_close(com, expect, atol=0.1, rtol=0)  # a tenth of a pixel


def test_sprites_area_extent_and_scale():
    """Areas against the shapes' closed forms (square of circumradius 0.3, ellipse with axes 0.3 and 0.15,
    heart = diamond of half-diagonal h√2 plus two discs of radius h on its upper edges, of area (4 + π) h²,
    circumradius about its centroid 0.3), increasing with the scale; each shape reaches radius 0.3 · scale."""
    lift = (math.pi + 4 / 3) / (
        math.sqrt(2) * (4 + math.pi)
    )  # centroid height: half-discs' centroids 4h/(3π) out
    h = 0.3 / (math.sqrt(2) + lift)
    closed = {0: 0.18, 1: math.pi * 0.3 * 0.15, 2: (4 + math.pi) * h**2}
    size = 64
    scales = torch.linspace(0.5, 1, 6, dtype=torch.float64)
    p = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"), -1).double()
    for code, area in closed.items():
        assert D.sprite_area(D.SPRITES_SHAPES[code], 0.7) == pytest.approx(area * 0.49, rel=1e-12)
        f = torch.stack(
            [
                torch.full((6,), float(code)),
                scales,
                torch.full((6,), 0.4),
                torch.full((6,), 0.5),
                torch.full((6,), 0.5),
            ],
            -1,
        )
        img, _ = D.sprites(size=size, factors=f, dtype=torch.float64)
        pix = img.sum((1, 2))
        # the logistic edge adds E[π t²] ≈ π · π² s²/3 ≈ 2.6 px² (s = ½ px; Steiner's formula A + P t + π t²
        # for a convex shape's parallel sets; 3 px² for the square, whose inner sets have 4 t²)
        torch.testing.assert_close(pix, area * scales**2 * (size / 2) ** 2, rtol=0, atol=4.0)
        assert bool((pix[1:] > pix[:-1]).all())
        inside = img > 0.5
        r = ((p - (size - 1) / 2).norm(dim=-1) / (size / 2))[None].expand(6, size, size)
        reach = torch.stack([r[k][inside[k]].max() for k in range(6)])
        torch.testing.assert_close(reach, 0.3 * scales, atol=1.5 / (size / 2), rtol=0)  # within 1.5 px


def test_sprites_rotation_symmetries_and_direction():
    f = torch.tensor(
        [[0, 0.8, 0.5, 0.3, 0.7], [1, 0.8, 0.5, 0.3, 0.7], [2, 0.8, 0.5, 0.3, 0.7]], dtype=torch.float64
    )

    def render(dtheta):
        g = f.clone()
        g[:, 2] += dtheta
        return D.sprites(size=64, factors=g, dtype=torch.float64)[0]

    base = render(0.0)
    torch.testing.assert_close(render(2 * math.pi), base)  # the rotation factor is circular
    torch.testing.assert_close(render(math.pi / 2)[0], base[0])  # a square: 4-fold symmetry
    torch.testing.assert_close(render(math.pi)[1], base[1])  # an ellipse: 2-fold
    assert float((render(math.pi / 2)[1] - base[1]).abs().amax()) > 0.5
    assert float((render(math.pi)[2] - base[2]).abs().amax()) > 0.5  # the heart has none
    assert float((render(math.pi / 4)[0] - base[0]).abs().amax()) > 0.5
    assert D.SPRITES_SYMMETRY == {"square": 4, "ellipse": 2, "heart": 1}
    # counter-clockwise with y up: an ellipse at θ = π/4 has its long axis from lower left to upper right
    ell = D.sprites(
        size=32,
        factors=torch.tensor([[1, 1.0, math.pi / 4, 0.5, 0.5]], dtype=torch.float64),
        dtype=torch.float64,
    )[0][0]
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    u, v = cols.double() - 15.5, 15.5 - rows.double()  # x right, y up
    assert float((ell * u * v).sum()) > 0.3 * float((ell * u * u).sum())
    # the heart's tip points down (-y) at θ = 0: its lowest pixel is far below the centroid, its top is not
    heart = render(-0.5)[2] > 0.5
    centre_row = (1.6 - 1.2 * 0.7) * 32 - 0.5
    ys = torch.arange(64.0)[:, None].expand(64, 64)[heart]
    assert float(ys.max()) - centre_row > float(centre_row - ys.min()) + 0.5


def test_sprites_bad_arguments():
    with pytest.raises(ValueError, match="give n"):
        D.sprites()
    with pytest.raises(ValueError, match="shapes"):
        D.sprites(3, shapes=("circle",))
    with pytest.raises(ValueError, match="scales"):
        D.sprites(3, scales=0)
    with pytest.raises(ValueError, match="rotations"):
        D.sprites(3, rotations=2.5)
    with pytest.raises(ValueError, match="positions"):
        D.sprites(3, positions=0)
    with pytest.raises(ValueError, match="size"):
        D.sprites(3, size=2)
    with pytest.raises(ValueError, match="noise"):
        D.sprites(3, noise=-0.1)
    with pytest.raises(ValueError, match="n must"):
        D.sprites(-1)
    with pytest.raises(ValueError, match="factors"):
        D.sprites(factors=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="factors.*shape"):
        D.sprites(factors=torch.tensor([[2.0, 1.0, 0.0, 0.5, 0.5]]), shapes=("square", "ellipse"))
    with pytest.raises(ValueError, match="factors.*scale"):
        D.sprites(factors=torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="factors.*x, y"):
        D.sprites(factors=torch.tensor([[0.0, 1.0, 0.0, 1.5, 0.5]]))
    with pytest.raises(ValueError, match="n = 2"):
        D.sprites(2, factors=torch.tensor([[0.0, 1.0, 0.0, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="chunk"):
        next(D.sprites_chunks(0))
    with pytest.raises(ValueError, match="shape"):
        D.sprite_area("circle")


def _nearest_curve(x, curves):
    """Index of the nearest of ``curves`` ``(K, m, 2)`` (dense polylines) for each point of ``x`` ``(n, 2)``."""
    return (x[:, None, None, :] - curves[None]).norm(dim=-1).amin(-1).argmin(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rings_and_spirals_geometry_and_labels(dtype):
    x, y = D.rings(300, num_rings=3, noise=0.0, dtype=dtype)
    assert x.shape == (300, 2) and y.shape == (300,) and x.dtype == dtype and y.dtype == torch.long
    assert y.bincount().tolist() == [100, 100, 100]
    torch.testing.assert_close(x.norm(dim=-1), (y + 1).to(dtype) / 3)
    x, y = D.spirals(300, num_arms=3, turns=1.5, noise=0.0, dtype=dtype)
    assert x.shape == (300, 2) and y.bincount().tolist() == [100, 100, 100]
    t = (x.norm(dim=-1) - 0.2) / 0.8
    assert bool(((t > -1e-5) & (t < 1 + 1e-5)).all())
    phase = torch.atan2(x[:, 1], x[:, 0]) - 2 * math.pi * (y.to(dtype) / 3 + 1.5 * t)
    torch.testing.assert_close(
        torch.remainder(phase + math.pi, 2 * math.pi) - math.pi, torch.zeros_like(phase), atol=1e-4, rtol=0
    )
    for fn in (D.rings, D.spirals):
        x0, y0 = fn(0, dtype=dtype)
        assert x0.shape == (0, 2) and y0.shape == (0,)


@pytest.mark.statistical
def test_rings_and_spirals_points_are_nearest_their_own_curve():
    """At noise 0.02 a point leaves its curve's neighbourhood (half the 1/3 or 0.4/1 gap) with
    probability < 1e-12 (a Gaussian tail at 8σ): exact binomial test of the misassigned count."""
    s = torch.linspace(0, 1, 2000, dtype=torch.float64)
    x, y = D.rings(600, num_rings=3, noise=0.02, dtype=torch.float64)
    circles = torch.stack(
        [
            torch.stack([(k + 1) / 3 * (2 * math.pi * s).cos(), (k + 1) / 3 * (2 * math.pi * s).sin()], -1)
            for k in range(3)
        ]
    )
    st.assert_rate(
        int((_nearest_curve(x, circles) != y).sum()),
        600,
        at_most=1e-12,
        what="rings: points off their ring",
        alpha=st.ALPHA / 2,
    )
    x, y = D.spirals(600, num_arms=2, turns=1.0, noise=0.02, dtype=torch.float64)
    arms = []
    for k in range(2):
        r, phi = 0.2 + 0.8 * s, 2 * math.pi * (k / 2 + s)
        arms.append(torch.stack([r * phi.cos(), r * phi.sin()], -1))
    st.assert_rate(
        int((_nearest_curve(x, torch.stack(arms)) != y).sum()),
        600,
        at_most=1e-12,
        what="spirals: points off their arm",
        alpha=st.ALPHA / 2,
    )


def test_rings_spirals_bad_arguments():
    with pytest.raises(ValueError, match="num_rings"):
        D.rings(10, num_rings=0)
    with pytest.raises(ValueError, match="num_arms"):
        D.spirals(10, num_arms=1.5)
    with pytest.raises(ValueError, match="turns"):
        D.spirals(10, turns=0)
    with pytest.raises(ValueError, match="noise"):
        D.rings(10, noise=-1)
    with pytest.raises(ValueError, match="n must"):
        D.spirals(-3)


def _min_angle(m):
    g = m @ m.T
    g.fill_diagonal_(-1)
    return float(torch.arccos(g.amax().clamp(-1, 1)))


def test_vmf_mixture_modes_known_configurations():
    from scipy.special import betainc

    t = D.vmf_mixture_modes(
        4, 3, dtype=torch.float64
    )  # regular tetrahedron: Gram 1 on, -1/3 off the diagonal
    torch.testing.assert_close(t @ t.T, (4 * torch.eye(4, dtype=torch.float64) - 1) / 3)
    tri = D.vmf_mixture_modes(3, 5, dtype=torch.float64)
    torch.testing.assert_close(tri @ tri.T, (3 * torch.eye(3, dtype=torch.float64) - 1) / 2)
    assert _min_angle(D.vmf_mixture_modes(6, 3, dtype=torch.float64)) == pytest.approx(
        math.pi / 2
    )  # octahedron
    pent = D.vmf_mixture_modes(5, 2, dtype=torch.float64)
    torch.testing.assert_close(
        pent[1:] @ pent[0], torch.cos(2 * math.pi * torch.tensor([1, 2, 2, 1], dtype=torch.float64) / 5)
    )
    # no closed form for 20 points on S³: between the Gilbert-Varshamov bound (caps of radius θ covering S³)
    # and the packing bound (caps of radius θ/2 disjoint); cap fraction ½ I_{sin²θ}(3/2, 1/2) for θ ≤ π/2
    state = torch.get_rng_state()
    m = D.vmf_mixture_modes(20, 4, dtype=torch.float64)
    assert torch.equal(state, torch.get_rng_state())  # deterministic, the global generator untouched
    torch.testing.assert_close(m.norm(dim=-1), torch.ones(20, dtype=torch.float64))
    cap = lambda th: 0.5 * betainc(1.5, 0.5, math.sin(th) ** 2)
    from scipy.optimize import brentq

    gv = brentq(lambda th: 20 * cap(th) - 1, 1e-3, math.pi / 2)
    packing = 2 * brentq(lambda th: 20 * cap(th) - 1, 1e-3, math.pi / 2)
    assert gv < _min_angle(m) <= packing
    assert D.vmf_mixture_modes(4, 3).dtype == torch.get_default_dtype()
    with pytest.raises(ValueError, match="dim"):
        D.vmf_mixture_modes(3, 1)
    with pytest.raises(ValueError, match="k must"):
        D.vmf_mixture_modes(0, 3)


def test_tree_modes():
    t = D.tree_modes(3, radius_step=0.8, dtype=torch.float64)
    assert t.shape == (15, 2)
    level = torch.log2(torch.arange(1, 16, dtype=torch.float64)).floor()
    torch.testing.assert_close(kmath.dist0(t, torch.tensor(-1.0, dtype=torch.float64)), 0.8 * level)
    leaves = D.tree_modes(3, radius_step=0.8, leaves_only=True, dtype=torch.float64)
    torch.testing.assert_close(leaves, t[7:])
    with pytest.raises(ValueError, match="radius_step"):
        D.tree_modes(4, radius_step=5.0, dtype=torch.float32)
    with pytest.raises(ValueError, match="depth"):
        D.tree_modes(-1)


def _mixture_setting(kind, dtype):
    from dlmppl.manifolds import PoincareBall, Sphere

    if kind == "euclidean":
        return None, torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=dtype)
    if kind == "sphere":
        return Sphere(), D.vmf_mixture_modes(4, 3, dtype=dtype)
    return PoincareBall(), D.tree_modes(2, dtype=dtype)


@pytest.mark.parametrize("kind", ["euclidean", "sphere", "poincare"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixture_shapes_support_and_empty(kind, dtype):
    from dlmppl.geometry import geometry_of
    from dlmppl.manifolds import Euclidean

    M, modes = _mixture_setting(kind, dtype)
    x, lab, mo = D.mixture(500, modes, scale=0.2, manifold=M)
    assert (
        x.shape == (500, modes.shape[1])
        and x.dtype == dtype
        and lab.dtype == torch.long
        and lab.shape == (500,)
    )
    assert bool(((lab >= 0) & (lab < modes.shape[0])).all()) and torch.equal(mo, modes)
    g = geometry_of(Euclidean(ndim=1) if M is None else M)
    assert float(g.violation(x).max()) < 1e2 * torch.finfo(dtype).eps
    x0, l0, _ = D.mixture(0, modes, scale=0.2, manifold=M)
    assert x0.shape == (0, modes.shape[1]) and l0.shape == (0,)
    torch.manual_seed(3)
    a = D.mixture(20, modes, manifold=M)
    torch.manual_seed(3)
    b = D.mixture(20, modes, manifold=M)
    torch.testing.assert_close(a, b)


@pytest.mark.statistical
@pytest.mark.parametrize("kind", ["euclidean", "sphere", "poincare"])
def test_mixture_components_weights_and_spread(kind):
    """Draws at scale 0.05 are nearest their own mode (misassignment < 1e-12 by a Gaussian tail: exact
    binomial test); label frequencies are the weights; each component's spread has its closed form:
    E|x - μ|² = D σ² (normal), E⟨μ, x⟩ = coth κ - 1/κ with κ = 1/σ² (vMF on S²), E d(μ, x)² = 2σ² (wrapped
    normal on the disk).  Three assertions at ALPHA/3 each."""
    from dlmppl.geometry import geometry_of
    from dlmppl.manifolds import Euclidean

    M, modes = _mixture_setting(kind, torch.float64)
    w = torch.arange(1, modes.shape[0] + 1, dtype=torch.float64)
    g = geometry_of(Euclidean(ndim=1) if M is None else M)
    x, lab, _ = D.mixture(4000, modes, weights=w, scale=0.05, manifold=M)
    nearest = g.dist(x[:, None], modes[None]).argmin(-1)
    st.assert_rate(
        int((nearest != lab).sum()),
        4000,
        at_most=1e-12,
        what=f"{kind}: draws nearer another mode",
        alpha=st.ALPHA / 3,
    )
    onehot = torch.nn.functional.one_hot(lab, modes.shape[0]).double()
    st.assert_mean(onehot, w / w.sum(), iid=True, what=f"{kind}: label frequencies", alpha=st.ALPHA / 3)
    sigma = 0.3
    x, lab, _ = D.mixture(3000, modes, scale=sigma, manifold=M)
    if kind == "sphere":
        kappa = 1 / sigma**2
        stat, truth = (x * modes[lab]).sum(-1), 1 / math.tanh(kappa) - 1 / kappa
    else:
        stat, truth = g.dist(x, modes[lab]).pow(2), 2 * sigma**2
    st.assert_mean(stat[:, None], truth, iid=True, what=f"{kind}: component spread", alpha=st.ALPHA / 3)


def test_mixture_bad_arguments():
    from dlmppl.manifolds import PoincareBall, Sphere, Stiefel

    modes = D.vmf_mixture_modes(4, 3)
    with pytest.raises(ValueError, match="modes"):
        D.mixture(10, torch.ones(3, 3), manifold=Sphere())  # off the sphere
    with pytest.raises(ValueError, match="modes"):
        D.mixture(10, torch.full((2, 2), 0.9), manifold=PoincareBall())  # outside the disk
    with pytest.raises(ValueError, match="modes"):
        D.mixture(10, torch.ones(3))
    with pytest.raises(ValueError, match="modes"):
        D.mixture(10, torch.tensor([[math.nan, 0.0]]))
    with pytest.raises(ValueError, match="weights"):
        D.mixture(10, modes, weights=[1.0, -1.0, 1.0, 1.0], manifold=Sphere())
    with pytest.raises(ValueError, match="weights"):
        D.mixture(10, modes, weights=[1.0, 1.0], manifold=Sphere())
    with pytest.raises(ValueError, match="scale"):
        D.mixture(10, modes, scale=0.0, manifold=Sphere())
    with pytest.raises(ValueError, match="n must"):
        D.mixture(-1, modes)
    with pytest.raises(ValueError, match="manifold"):
        D.mixture(10, torch.eye(3)[:2], manifold=Stiefel())
