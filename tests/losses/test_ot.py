import math
import warnings

import geoopt
import ot
import pytest
import torch

from dlmppl import kmath, manifolds
from dlmppl.geometry import geometry_of
from dlmppl.losses import manifold_distances, wasserstein
from dlmppl.losses.ot import _cost


def _rot(theta, dtype=torch.float64):
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)


def _sphere_cloud(n, d=3):
    x = torch.randn(n, d, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def test_emd_equals_pot_on_same_cost():
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randn(15, 3, dtype=torch.float64) + 0.5
    a = torch.rand(20, dtype=torch.float64) + 0.1
    b = torch.rand(15, dtype=torch.float64) + 0.1
    a, b = a / a.sum(), b / b.sum()
    # Euclidean, p = 2: POT's own squared-Euclidean cost
    ref = ot.emd2(a.numpy(), b.numpy(), ot.dist(x.numpy(), y.numpy()))
    assert torch.allclose(wasserstein(x, y, a=a, b=b), torch.tensor(ref, dtype=torch.float64))
    # sphere, p = 1: arc-length cost from arccos of the inner products
    xs, ys = _sphere_cloud(20), _sphere_cloud(15)
    M = torch.arccos((xs @ ys.T).clamp(-1, 1)).numpy()
    ref = ot.emd2(a.numpy(), b.numpy(), M)
    val = wasserstein(xs, ys, manifolds.Sphere(), p=1, a=a, b=b)
    assert abs(val.item() - ref) < 1e-10


@pytest.mark.parametrize("p", [1, 2])
def test_emd_sorted_1d_closed_form(p):
    x = torch.randn(40, 1, dtype=torch.float64)
    y = torch.rand(40, 1, dtype=torch.float64) * 3
    ref = (x.flatten().sort().values - y.flatten().sort().values).abs().pow(p).mean()
    val = wasserstein(x, y, p=p)
    assert torch.allclose(val, ref, atol=1e-12)


@pytest.mark.parametrize("theta", [0.3, 1.2, 2.9])
@pytest.mark.parametrize("method", ["emd", "sinkhorn"])
def test_sphere_point_and_rotation(theta, method):
    x = torch.tensor([[0.6, 0.8, 0.0]], dtype=torch.float64)  # rotation about e_3
    y = x @ _rot(theta).T
    M = manifolds.Sphere()
    # convention: the value is W_p^p, theta for p = 1 and theta^2 for p = 2
    assert abs(wasserstein(x, y, M, p=1, method=method).item() - theta) < 1e-9
    assert abs(wasserstein(x, y, M, p=2, method=method).item() - theta**2) < 1e-9


def test_sinkhorn_converges_to_emd():
    x = torch.randn(30, 2, dtype=torch.float64)
    y = torch.randn(30, 2, dtype=torch.float64) * 0.5 + 1.0
    exact = wasserstein(x, y, method="emd").item()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every solve must converge
        errs = [
            abs(wasserstein(x, y, method="sinkhorn", reg=r, max_iter=5000, tol=1e-5).item() - exact)
            for r in (0.5, 0.05, 1e-3, 1e-4)
        ]
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[3] < 1e-3 * exact
    # log domain: a tiny reg does not underflow
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in 200 iterations, on purpose
        v = wasserstein(x, y, method="sinkhorn", reg=1e-4, max_iter=200)
    assert torch.isfinite(v)


def test_sinkhorn_envelope_gradient_matches_finite_differences():
    x = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(9, 2, dtype=torch.float64)

    def f(x):
        return wasserstein(x, y, method="sinkhorn", reg=0.5, max_iter=5000, tol=1e-13)

    (g,) = torch.autograd.grad(f(x), x)
    h = 1e-6
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                e = torch.zeros_like(x)
                e[i, j] = h
                fd[i, j] = (f(x + e) - f(x - e)) / (2 * h)
    assert torch.allclose(g, fd, atol=1e-6)


def test_emd_gradients_both_clouds_and_finite_differences():
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, y: wasserstein(x, y, manifolds.PoincareBall(1.0), p=2, method="emd"),
        (0.3 * x.detach().requires_grad_(), 0.3 * y.detach().requires_grad_()),
    )


def test_sliced_is_exact_in_1d_and_on_the_circle():
    # 1-D: every slice is ±identity, so SW equals W
    x = torch.randn(50, 1, dtype=torch.float64)
    y = torch.randn(50, 1, dtype=torch.float64) * 2
    assert torch.allclose(wasserstein(x, y, method="sliced", p=2), wasserstein(x, y, p=2))
    # circle S^1: every great-circle projection is an isometry, so SSW equals W (arc length)
    t1, t2 = torch.rand(40, dtype=torch.float64) * 6.28, torch.rand(40, dtype=torch.float64) * 2
    x = torch.stack([t1.cos(), t1.sin()], -1)
    y = torch.stack([t2.cos(), t2.sin()], -1)
    M = manifolds.Sphere()
    for p in (1, 2):
        sw = wasserstein(x, y, M, p=p, method="sliced", n_projections=10)
        assert abs(sw.item() - wasserstein(x, y, M, p=p).item()) < 1e-8


def test_sliced_sphere_gradient_and_discrimination():
    x = _sphere_cloud(200).requires_grad_()
    near = x.detach() @ _rot(0.05).T
    far = x.detach() @ _rot(1.0).T
    M = manifolds.Sphere()
    v_near = wasserstein(x, near, M, method="sliced", n_projections=100)
    v_far = wasserstein(x, far, M, method="sliced", n_projections=100)
    assert 0 < v_near < 0.1 * v_far
    v_far.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ground_costs_match_manifold_distances():
    x = 0.3 * torch.randn(5, 3, dtype=torch.float64)
    y = 0.3 * torch.randn(4, 3, dtype=torch.float64)
    # κ = 0: the stereographic model is Euclidean space with metric 4 δ
    D0 = manifold_distances(x, y, manifolds.Stereographic(0.0))
    assert torch.allclose(D0, 2 * torch.cdist(x, y))
    for k in (-1.0, 0.7):
        D = manifold_distances(x, y, manifolds.Stereographic(k))
        ref = geoopt.Stereographic(k).dist(x[:, None], y[None])
        assert torch.allclose(D, ref, atol=1e-10)
        assert torch.allclose(D, kmath.dist(x[:, None], y[None], torch.tensor(k, dtype=torch.float64)))
    L = geoopt.Lorentz(2.0)
    xl = L.expmap0(L.proju(L.origin(3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)))
    yl = L.expmap0(L.proju(L.origin(3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)))
    assert torch.allclose(manifold_distances(xl, yl, L), L.dist(xl[:, None], yl[None]), atol=1e-8)
    xs, ys = _sphere_cloud(5), _sphere_cloud(4)
    assert torch.allclose(manifold_distances(xs, ys, manifolds.Sphere()), torch.arccos(xs @ ys.T))
    assert torch.allclose(_cost(x, y, None, 2), torch.cdist(x, y) ** 2)


def test_coincident_points_have_finite_gradients():
    x = torch.randn(5, 3, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    for M in (None, manifolds.Sphere(), manifolds.Stereographic(0.0), manifolds.PoincareBall(1.0)):
        xx = (0.5 * x).clone().requires_grad_()
        manifold_distances(xx, xx, M).sum().backward()
        assert torch.isfinite(xx.grad).all()


def test_errors_name_the_argument():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="method"):
        wasserstein(x, x, method="nope")
    with pytest.raises(ValueError, match="x, y"):
        wasserstein(x, torch.randn(5, 3))
    with pytest.raises(ValueError, match="a:"):
        wasserstein(x, x, a=torch.ones(4) / 4)
    with pytest.raises(ValueError, match="reg"):
        wasserstein(x, x, method="sinkhorn", reg=0.0)


def _ball_to_lorentz(z):
    r2 = z.pow(2).sum(-1, keepdim=True)
    return torch.cat([(1 + r2) / (1 - r2), 2 * z / (1 - r2)], -1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sliced_hyperbolic_is_horospherical_and_exact_on_the_line(dtype):
    """Horospherical sliced W (Bonet et al. 2023) on the ball and the hyperboloid: on H^1 each
    slice is ± the signed distance, so SW equals W with the geodesic cost; the ball and the
    hyperboloid give the same value for the same points and slices."""
    tol = 1e-8 if dtype == torch.float64 else 2e-3
    B, L = manifolds.PoincareBall(1.0), manifolds.Lorentz(1.0)
    x = B.expmap0(0.8 * torch.randn(30, 1, dtype=dtype))
    y = B.expmap0(0.8 * torch.randn(25, 1, dtype=dtype) + 0.7)
    for p in (1, 2):
        exact = wasserstein(x.double(), y.double(), B, p=p).item()
        assert abs(wasserstein(x, y, B, p=p, method="sliced", n_projections=4).item() - exact) < tol * max(1, exact)
        assert abs(wasserstein(_ball_to_lorentz(x), _ball_to_lorentz(y), L, p=p, method="sliced").item() - exact) < (
            tol * max(1, exact)
        )
    x = B.expmap0(0.6 * torch.randn(100, 2, dtype=dtype))
    y = B.expmap0(0.6 * torch.randn(80, 2, dtype=dtype) + 0.4)
    torch.manual_seed(3)
    sb = wasserstein(x, y, B, method="sliced", n_projections=50)
    torch.manual_seed(3)
    sl = wasserstein(_ball_to_lorentz(x), _ball_to_lorentz(y), L, method="sliced", n_projections=50)
    assert abs(sb.item() - sl.item()) < 10 * tol * sb.item() and sb.item() > 0
    assert wasserstein(x, x, B, method="sliced").item() == 0


def test_sliced_hyperbolic_two_points_and_far_from_the_origin():
    """δ_0 against δ_y: each slice is |B_v(y)|, whose mean over directions v is an integral
    (quadrature here); at radius 30 on the hyperboloid a displacement by 0.1 moves every slice by
    at most 0.1 (Busemann functions are 1-Lipschitz); on H^1 at radius 30, where the naive
    ``log(u_0 - u_1)`` cancels to garbage, SW is the exact W."""
    B = manifolds.PoincareBall(2.0)
    r = 1.5  # geodesic distance of y from the origin on the ball of curvature -2
    y = torch.tensor([[math.tanh(math.sqrt(2.0) * r / 2) / math.sqrt(2.0), 0.0]], dtype=torch.float64)
    assert abs(B.dist(y, torch.zeros_like(y)).item() - r) < 1e-12
    phi = (torch.arange(20000, dtype=torch.float64) + 0.5) * 2 * math.pi / 20000
    u = math.sqrt(2.0) * y[0, 0]
    busemann = (torch.log(1 - 2 * u * phi.cos() + u**2) - math.log(1 - u**2)) / math.sqrt(2.0)
    expected = busemann.abs().mean().item()
    torch.manual_seed(0)
    got = wasserstein(torch.zeros_like(y), y, B, p=1, method="sliced", n_projections=40000).item()
    # Monte Carlo over 40000 directions: sd of |B_v| / 200
    assert abs(got - expected) < 6 * busemann.abs().std().item() / 200 and expected <= r
    L = manifolds.Lorentz(1.0)
    far = 30 * torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64), dim=-1)
    x = L.expmap0(torch.cat([torch.zeros(20, 1, dtype=torch.float64), far], -1))
    g = geometry_of(L)
    v = g.random_tangent(x)
    moved = g.exp(x, 0.1 * v / g.norm(x, v).unsqueeze(-1))
    r = torch.tensor([30.0, 30.1, -29.0, 31.0], dtype=torch.float64)[:, None]
    line = torch.cat([r.cosh(), r.sinh()], -1)  # H^1 in Lorentz coordinates
    for p in (1, 2):
        # W_p^p between {30, 30.1} and {-29, 31} on the line: sorted matching, (59^p + 0.9^p) / 2
        sw = wasserstein(line[:2], line[2:], L, p=p, method="sliced", n_projections=8).item()
        assert abs(sw - (59.0**p + 0.9**p) / 2) < 1e-6 * 59.0**p, (p, sw)
    moved_by = g.dist(x, moved)  # about 0.1 (the ambient coordinates, of size 5e12, round at 1e-3)
    assert (moved_by - 0.1).abs().max() < 0.01
    sw = wasserstein(x, moved, L, p=1, method="sliced", n_projections=200).item()
    assert math.isfinite(sw) and 0.01 < sw <= moved_by.max().item() + 1e-6


def test_squared_euclidean_cost_is_exact_far_from_the_origin():
    # p = 2 builds the cost as ‖x‖² + ‖y‖² - 2 x·y (one matrix product, like ot.dist) on
    # clouds centred at a common point: far from the origin the uncentred formula loses
    # the cost to cancellation (relative error ~1e-4 at an offset of 1e6 in float64)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randn(30, 3, generator=g, dtype=torch.float64) + 0.5
    ref = ((x[:, None] - y[None]) ** 2).sum(-1)  # broadcast difference: no cancellation
    for shift in (0.0, 1e3, 1e6):
        C = _cost(x + shift, y + shift, None, 2)
        assert torch.allclose(C, ref, rtol=1e-9, atol=1e-12), shift
    # the value and the gradient are those of the reference cost, on the same solver
    xx = (x + 1e6).requires_grad_()
    v = wasserstein(xx, y + 1e6, p=2, method="emd")
    v.backward()
    x0 = x.clone().requires_grad_()
    ref_v = ot.emd2(torch.full((40,), 1 / 40, dtype=torch.float64), torch.full((30,), 1 / 30, dtype=torch.float64),
                    ((x0[:, None] - y[None]) ** 2).sum(-1))
    ref_v.backward()
    assert abs(v.item() - ref_v.item()) < 1e-9 * ref_v.item()
    assert torch.allclose(xx.grad, x0.grad, atol=1e-9)


def test_squared_euclidean_cost_that_overflows_raises():
    # finite float32 points whose squared distances overflow: a ValueError, not an inf cost
    x = torch.tensor([[3e19, 0.0], [0.0, 1.0]], dtype=torch.float32)
    y = torch.tensor([[-3e19, 0.0], [1.0, 0.0]], dtype=torch.float32)
    with pytest.raises(ValueError, match="^x, y:"):
        wasserstein(x, y, p=2, method="emd")
    assert torch.isfinite(wasserstein(x * 1e-10, y * 1e-10, p=2, method="emd"))


@pytest.mark.parametrize("space", ["euclidean", "poincare"])
def test_sinkhorn_by_blocks_equals_the_dense_solve(monkeypatch, space):
    # beyond 2^24 cost entries the cost is recomputed by blocks of rows (O(n + m) memory):
    # force blocks of 7 rows here and compare value and gradients with the dense solve
    import dlmppl.losses.ot as ot_mod

    g = torch.Generator().manual_seed(5)
    x = 0.3 * torch.randn(40, 2, generator=g, dtype=torch.float64)
    y = 0.3 * torch.randn(33, 2, generator=g, dtype=torch.float64) + 0.1
    a = torch.rand(40, generator=g, dtype=torch.float64)
    a[3] = 0.0
    M = manifolds.PoincareBall(1.0) if space == "poincare" else None

    def run():
        xx, yy, aa = x.clone().requires_grad_(), y.clone().requires_grad_(), a.clone().requires_grad_()
        v = wasserstein(xx, yy, M, method="sinkhorn", reg=0.05, a=aa, tol=1e-12, max_iter=10_000)
        v.backward()
        return v.detach(), xx.grad, yy.grad, aa.grad

    dense = run()
    monkeypatch.setattr(ot_mod, "_DENSE_MAX_ENTRIES", 0)
    monkeypatch.setattr(ot_mod, "_BLOCK_ENTRIES", 7 * 33)
    blocked = run()
    for d, b in zip(dense, blocked, strict=True):
        torch.testing.assert_close(b, d, rtol=1e-10, atol=1e-12)
    # the reference: POT's log-domain solver on the same cost, run to convergence
    C = _cost(x, y, M, 2)
    P = ot.bregman.sinkhorn_log(a / a.sum(), torch.full((33,), 1 / 33, dtype=torch.float64), C, 0.05,
                                numItermax=100_000, stopThr=1e-13)
    ab = (a / a.sum())[:, None] / 33
    ref = (P * C).sum() + 0.05 * (torch.special.xlogy(P, P) - torch.special.xlogy(P, ab) - P + ab).sum()
    assert abs(dense[0].item() - ref.item()) < 1e-10 * ref.item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sinkhorn_kernels_clamped_below_the_row_maximum_equal_torchs(dtype):
    # the solver's log-sum-exp and plan softmax clamp exponents at -80 below the row maximum
    # (exp's subnormal slow path): the same values to rounding, massless columns exactly 0
    from dlmppl.losses.ot import _logsumexp_, _softmax_

    A = torch.randn(7, 50, dtype=dtype) * 3000
    A[:, 3] = -math.inf
    rtol = 1e-6 if dtype == torch.float32 else 1e-14
    assert torch.allclose(_logsumexp_(A.clone()), torch.logsumexp(A, 1), rtol=rtol, atol=0)
    massless = torch.zeros(50, dtype=torch.bool)
    massless[3] = True
    S = _softmax_(A.clone(), massless)
    assert torch.allclose(S, torch.softmax(A, 1), rtol=rtol, atol=math.exp(-79))
    assert (S[:, 3] == 0).all()


def test_sinkhorn_float32_and_float64_agree_from_reg_1e3_to_10_and_one_point():
    x = torch.randn(40, 2, dtype=torch.float64)
    y = torch.randn(35, 2, dtype=torch.float64) * 0.5 + 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every solve converges, in both dtypes
        for reg in (1e-3, 1e-2, 0.1, 1.0, 10.0):
            v64 = wasserstein(x, y, method="sinkhorn", reg=reg, tol=1e-4, max_iter=5000)
            v32 = wasserstein(x.float(), y.float(), method="sinkhorn", reg=reg, tol=1e-4, max_iter=5000)
            assert v32.dtype == torch.float32 and abs(v32.item() - v64.item()) < 1e-3 * v64.item()
    # one point each: the plan is 1, the value the cost, at any reg
    for reg in (1e-3, 10.0):
        v = wasserstein(x[:1], y[:1], method="sinkhorn", reg=reg)
        assert abs(v.item() - (x[0] - y[0]).pow(2).sum().item()) < 1e-12
