import gudhi
import gudhi.wasserstein
import numpy as np
import pytest
import torch

from dlmppl import manifolds
from dlmppl.losses import (
    cubical_persistence,
    diagram_distance,
    manifold_distances,
    persistence,
    rips_pairs,
    topological,
    topology_target_loss,
)
from dlmppl.losses import topology as topo


def _gudhi_rips(D: np.ndarray, maxdim: int):
    st = gudhi.RipsComplex(distance_matrix=D).create_simplex_tree(max_dimension=maxdim + 1)
    st.compute_persistence()
    out = []
    for k in range(maxdim + 1):
        g = st.persistence_intervals_in_dimension(k).reshape(-1, 2)
        out.append(g[np.isfinite(g[:, 1])])
    return out


def _same_diagram(a: np.ndarray, b: np.ndarray, tol=1e-9) -> bool:
    # compare as multisets; zero-length bars are not features
    a = a[a[:, 1] - a[:, 0] > tol]
    b = b[b[:, 1] - b[:, 0] > tol]
    if a.shape != b.shape:
        return False
    a = a[np.lexsort((a[:, 1], a[:, 0]))]
    b = b[np.lexsort((b[:, 1], b[:, 0]))]
    return bool(np.allclose(a, b, atol=tol))


def _diagrams_match_gudhi(x, maxdim, manifold=None) -> bool:
    dgms = persistence(x, maxdim=maxdim, manifold=manifold)
    D = manifold_distances(x, x, manifold).detach().numpy()
    np.fill_diagonal(D, 0.0)
    ref = _gudhi_rips(D, maxdim)
    return all(_same_diagram(d.detach().numpy(), r) for d, r in zip(dgms, ref, strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("maxdim", [0, 1])
def test_rips_diagrams_equal_gudhi(seed, maxdim):
    torch.manual_seed(seed)
    x = torch.randn(30, 3, dtype=torch.float64)
    assert _diagrams_match_gudhi(x, maxdim)


def test_rips_diagrams_equal_gudhi_on_manifolds():
    x = torch.randn(25, 3, dtype=torch.float64)
    assert _diagrams_match_gudhi(x / x.norm(dim=-1, keepdim=True), 1, manifolds.Sphere())
    assert _diagrams_match_gudhi(0.3 * x, 1, manifolds.PoincareBall(1.0))


def test_rips_diagram_check_fails_on_a_broken_pairing(monkeypatch):
    # test of the test: a pairing with the H1 birth and death edges swapped
    # around (birth taken from the death edge of another pair) must be caught
    torch.manual_seed(0)
    x = torch.randn(30, 3, dtype=torch.float64)
    good = topo._rips_pairs  # the pairing persistence() calls

    def broken(D, maxdim=1):
        p = good(D, maxdim)
        p[1] = np.concatenate([np.roll(p[1][:, :2], 1, axis=0), p[1][:, 2:]], 1)
        return p

    monkeypatch.setattr(topo, "_rips_pairs", broken)
    assert not _diagrams_match_gudhi(x, 1)


def _h1_matches_whole_run(x):
    """(H1 pairs of rips_pairs equal those of one whole giotto-ph run, the truncated run was used)."""
    from gph import ripser_parallel

    D = topo._pairing_matrix(x, None, "x")
    taken = topo._h1_below_enclosing_radius(D, topo._mst_edges(D)) is not None
    whole = ripser_parallel(D, metric="precomputed", maxdim=1, return_generators=True, n_threads=1)
    ours = rips_pairs(D, 1)[1]
    return sorted(map(tuple, ours.tolist())) == sorted(map(tuple, whole["gens"][1][0].tolist())), taken


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_h1_pairs_below_the_enclosing_radius_equal_the_whole_run(dtype):
    # a concentrated cloud (16-D: the truncated run is taken), one with ties and duplicate points,
    # and a spread-out one (2-D: the whole run is taken)
    g = torch.Generator().manual_seed(3)
    clouds = [
        torch.randn(160, 16, generator=g, dtype=dtype),
        torch.randint(0, 3, (160, 16), generator=g).to(dtype),
        torch.randn(160, 2, generator=g, dtype=dtype),
    ]
    res = [_h1_matches_whole_run(x) for x in clouds]
    assert all(same for same, _ in res)
    assert res[0][1] and not res[2][1]


def _pairs_and_loss(monkeypatch, x, z, reorder):
    """(rips_pairs of x's matrix, topological(x, z) and its gradient in z), with giotto-ph run on
    the vertices in the witness order or in the given order."""
    if not reorder:
        monkeypatch.setattr(topo, "_witness_order", lambda D: None)
    pairs = topo._rips_pairs(topo._pairing_matrix(x, None, "x"), 1)
    zz = z.detach().requires_grad_()
    loss = topological(x, zz, dims=(0, 1))
    loss.backward()
    monkeypatch.undo()
    return pairs, loss.detach(), zz.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_h1_witness_order_gives_the_pairs_of_the_given_order(monkeypatch, dtype):
    # giotto-ph's truncated run on the vertices reordered (central ones last) and mapped back: the
    # same pairs, edge orientation and order as the run on the given order, so the same loss and
    # gradient (concentrated clouds: the truncated run is taken)
    g = torch.Generator().manual_seed(7)
    for n, d in ((256, 16), (160, 32), (300, 16), (200, 64)):
        x = torch.randn(n, d, generator=g, dtype=dtype)
        z = torch.randn(n, d, generator=g, dtype=dtype)
        D = topo._pairing_matrix(x, None, "x")
        assert topo._witness_order(D) is not None
        assert topo._h1_below_enclosing_radius(D, topo._mst_edges(D)) is not None, (n, d)
        p_new, l_new, g_new = _pairs_and_loss(monkeypatch, x, z, True)
        p_old, l_old, g_old = _pairs_and_loss(monkeypatch, x, z, False)
        for a, b in zip(p_new, p_old, strict=True):
            assert np.array_equal(a, b), (n, d)
        # the same edges summed in the same order: the same loss; the backward's accumulation of
        # the gathered distances into the points is itself not bitwise reproducible (threads)
        assert torch.equal(l_new, l_old), (n, d)
        torch.testing.assert_close(g_new, g_old, rtol=1e-5, atol=1e-6 * float(g_old.abs().max()))


def test_h1_witness_order_keeps_the_order_of_a_matrix_with_ties():
    # integer coordinates: many tied lengths, among which the order picks the reported edges
    x = torch.randint(0, 3, (160, 16), generator=torch.Generator().manual_seed(3)).double()
    assert topo._witness_order(topo._pairing_matrix(x, None, "x")) is None
    assert topo._witness_order(np.zeros((1, 1))) is None


def test_h1_check_fails_when_a_class_alive_at_the_threshold_is_ignored(monkeypatch):
    # test of the test: truncated at the last birth itself, with the classes still alive there
    # ignored, a death is missed and must be caught
    bound = topo._h1_birth_bound
    monkeypatch.setattr(topo, "_DEATH_MARGIN", 1.0)
    monkeypatch.setattr(topo, "_h1_birth_bound", lambda *a: (bound(*a)[0],) * 2)  # guess: the last birth
    monkeypatch.setattr(topo, "_alive_at_threshold", lambda gens: False)
    same, taken = _h1_matches_whole_run(torch.randn(160, 16, generator=torch.Generator().manual_seed(3)))
    assert taken and not same


def test_h1_guess_of_the_last_death_is_tried_first_and_checked(monkeypatch):
    # the first threshold is the guess of the last death; a guess below it (here: the last birth)
    # leaves a class alive, which sends the run on to the margin's threshold: same pairs either way
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    D = topo._pairing_matrix(x, None, "x")
    mst = topo._mst_edges(D)
    D32 = D.astype(np.float32)
    births, guess = topo._h1_birth_bound(D32, mst, float(D32.max(1).min()) / topo._MAX_RADIUS_OVER_BIRTHS)
    assert births <= guess < births * topo._DEATH_MARGIN
    seen = []
    alive = topo._alive_at_threshold
    monkeypatch.setattr(topo, "_alive_at_threshold", lambda gens: seen.append(alive(gens)) or seen[-1])
    # (_h1_matches_whole_run runs the truncation twice: for 'taken', then in rips_pairs)
    assert _h1_matches_whole_run(x) == (True, True) and seen == [False] * 2
    bound = topo._h1_birth_bound
    monkeypatch.setattr(topo, "_h1_birth_bound", lambda *a: (bound(*a)[0],) * 2)
    seen.clear()
    assert _h1_matches_whole_run(x) == (True, True) and seen == [True, False] * 2


def test_persistence_from_distance_matrix_and_its_gradient():
    x = torch.randn(20, 2, dtype=torch.float64)
    D = torch.cdist(x, x).requires_grad_()
    dg = persistence(D, maxdim=1, distances=True)
    ref = persistence(x, maxdim=1)
    for a, b in zip(dg, ref, strict=True):
        assert torch.allclose(a, b)
    sum(d.sum() for d in dg).backward()
    # each H0 death edge contributes its own entry: the gradient counts them
    assert D.grad.sum() == pytest.approx(sum(d[:, 1].numel() + d[:, 0].numel() * (k > 0) for k, d in enumerate(dg)))
    dg_e = persistence(x, maxdim=0, essential=True)[0]
    assert dg_e.shape == (20, 2) and torch.isinf(dg_e[-1, 1])


def test_rips_pairs_shapes_and_errors():
    D = torch.cdist(torch.randn(12, 2), torch.randn(12, 2))
    with pytest.raises(ValueError, match="D"):
        rips_pairs(torch.randn(3, 4))
    with pytest.raises(ValueError, match="maxdim"):
        rips_pairs(D @ D.T, -1)
    p = rips_pairs(torch.cdist(D, D), 1)
    assert p[0].shape == (11, 2) and p[1].shape[1] == 4


@pytest.mark.parametrize("shape", [(7, 9), (4, 5, 6)])
def test_cubical_persistence_equals_gudhi(shape):
    f = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    for superlevel in (False, True):
        dg = cubical_persistence(f, superlevel=superlevel, essential=True)
        g = -f.detach() if superlevel else f.detach()
        cc = gudhi.CubicalComplex(top_dimensional_cells=g.numpy())
        cc.compute_persistence()
        for k, d in enumerate(dg):
            d = d.detach().numpy() * (-1 if superlevel else 1)
            ref = cc.persistence_intervals_in_dimension(k).reshape(-1, 2)
            fin = np.isfinite(d[:, 1])
            assert _same_diagram(d[fin], ref[np.isfinite(ref[:, 1])])
            assert (~fin).sum() == (~np.isfinite(ref[:, 1])).sum()
    dg = cubical_persistence(f)
    sum((d[:, 1] - d[:, 0]).sum() for d in dg).backward()
    assert f.grad.abs().sum() > 0


def _loss_from_gudhi_pairs(x, z, dims):
    """Moor et al.'s loss with the pairing taken from gudhi's flag generators."""

    def crit(D):
        st = gudhi.RipsComplex(distance_matrix=D).create_simplex_tree(max_dimension=max(dims) + 1)
        st.compute_persistence()
        fin0, fin_hi = st.flag_persistence_generators()[:2]
        out = [fin0[:, 1:]] if 0 in dims else []
        for k in dims:
            if k >= 1 and k - 1 < len(fin_hi):
                g = fin_hi[k - 1]
                out += [g[:, :2], g[:, 2:]]
        return np.concatenate(out, 0)

    Ax, Az = torch.cdist(x, x), torch.cdist(z, z)
    e = np.concatenate([crit(Ax.numpy()), crit(Az.numpy())], 0)
    e = torch.as_tensor(e)
    return 0.5 * (Ax[e[:, 0], e[:, 1]] - Az[e[:, 0], e[:, 1]]).pow(2).sum()


@pytest.mark.parametrize("dims", [(0,), (0, 1)])
def test_topological_equals_formula_with_independent_pairing(dims):
    x = torch.randn(25, 5, dtype=torch.float64)
    z = torch.randn(25, 2, dtype=torch.float64)
    val = topological(x, z, dims=dims)
    ref = _loss_from_gudhi_pairs(x, z, dims)
    assert torch.allclose(val, ref, rtol=1e-10)
    assert topological(x, x, dims=dims) == 0


def _reference_topological(x, z, normalize):
    """Moor et al.'s loss written out plainly: both full n × n distance matrices with autograd,
    the pairing from gudhi's flag generators (not giotto-ph, not the MST), the loss gathered
    from the full matrices."""

    def crit(A):
        st = gudhi.RipsComplex(distance_matrix=A).create_simplex_tree(max_dimension=2)
        st.compute_persistence()
        fin0, fin_hi = st.flag_persistence_generators()[:2]
        return np.concatenate([fin0[:, 1:], fin_hi[0][:, :2], fin_hi[0][:, 2:]], 0)

    Ax = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    Az = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")
    e = torch.as_tensor(np.concatenate([crit(Ax.detach().numpy()), crit(Az.detach().numpy())], 0))
    if normalize:
        Ax, Az = Ax / Ax.max(), Az / Az.max()
    return 0.5 * (Ax[e[:, 0], e[:, 1]] - Az[e[:, 0], e[:, 1]]).pow(2).sum()


def _matches_reference(normalize, n=50) -> bool:
    """Loss value and both gradients of ``topological`` (H0 + H1) against the plain reference,
    n points in float64 (x in 16-D, z in 2-D), relative tolerance 1e-10."""
    g = torch.Generator().manual_seed(15)
    x = torch.randn(n, 16, dtype=torch.float64, generator=g)
    z = torch.randn(n, 2, dtype=torch.float64, generator=g)
    out = []
    for f in (lambda a, b: topological(a, b, dims=(0, 1), normalize=normalize), _reference_topological):
        xx, zz = x.clone().requires_grad_(), z.clone().requires_grad_()
        val = f(xx, zz) if f is not _reference_topological else f(xx, zz, normalize)
        val.backward()
        # a gradient that never reached an input counts as zero
        out.append((val.detach(), *(t.grad if t.grad is not None else torch.zeros_like(t) for t in (xx, zz))))
    (v, gx, gz), (rv, rgx, rgz) = out
    return bool(
        torch.allclose(v, rv, rtol=1e-10, atol=0)
        and torch.allclose(gx, rgx, rtol=1e-10, atol=1e-12)
        and torch.allclose(gz, rgz, rtol=1e-10, atol=1e-12)
    )


@pytest.mark.parametrize("normalize", [False, True])
def test_topological_value_and_gradients_equal_plain_reference(normalize):
    assert _matches_reference(normalize)


def test_reference_check_fails_on_a_broken_loss(monkeypatch):
    # test of the test: (1) the H1 death edges replaced by the birth edges changes the value; (2) the z distances
    # gathered without their gradient changes only the gradients; both must be caught
    good_crit, good_call = topo._critical_edges, topo._Edges.__call__

    def no_deaths(pairs, dims):
        return good_crit([p[:, [0, 1, 0, 1]] if k else p for k, p in enumerate(pairs)], dims)

    monkeypatch.setattr(topo, "_critical_edges", no_deaths)
    assert not _matches_reference(False)
    monkeypatch.setattr(topo, "_critical_edges", good_crit)

    def detached_z(self, i, j):
        out = good_call(self, i, j)
        return out.detach() if self.name == "z" else out

    monkeypatch.setattr(topo._Edges, "__call__", detached_z)
    assert not _matches_reference(False)


@pytest.mark.parametrize("z_manifold", [None, "poincare"])
def test_topological_gradients_match_finite_differences(z_manifold):
    x = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    z = 0.3 * torch.randn(12, 2, dtype=torch.float64)
    M = manifolds.PoincareBall(1.0) if z_manifold else None
    z.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, z: topological(x, z, z_manifold=M, dims=(0, 1)), (x, z), eps=1e-6, atol=1e-5
    )
    assert torch.autograd.gradcheck(
        lambda x, z: topological(x, z, z_manifold=M, dims=(0, 1), normalize=True),
        (x, z),
        eps=1e-6,
        atol=1e-5,
    )


def test_diagram_distance_equals_gudhi_and_is_differentiable():
    d1 = torch.rand(8, 2, dtype=torch.float64)
    d1 = torch.stack([d1.min(-1).values, d1.max(-1).values], -1).requires_grad_()
    d2 = torch.rand(5, 2, dtype=torch.float64)
    d2 = torch.stack([d2.min(-1).values, d2.max(-1).values], -1)
    for order in (1.0, 2.0):
        for internal_p in (np.inf, 2.0):
            ref = gudhi.wasserstein.wasserstein_distance(
                d1.detach().numpy(), d2.numpy(), order=order, internal_p=internal_p
            )
            val = diagram_distance(d1, d2, order=order, internal_p=internal_p)
            assert abs(val.item() - ref) < 1e-10
    assert diagram_distance(d1, d1).item() == pytest.approx(0.0, abs=1e-12)
    assert diagram_distance(d1[:0], d2[:0]).item() == 0.0
    assert torch.autograd.gradcheck(lambda d: diagram_distance(d, d2, order=2.0), (d1,))
    with pytest.raises(ValueError, match="d2"):
        diagram_distance(d1, torch.tensor([[0.0, float("inf")]], dtype=torch.float64))


def _h1_persistence(z):
    dg = persistence(z.detach(), maxdim=1)[1]
    pers = torch.sort(dg[:, 1] - dg[:, 0], descending=True).values
    diam = torch.cdist(z, z).max()
    return (pers / diam).tolist() + [0.0, 0.0]


@pytest.mark.slow
@pytest.mark.statistical
def test_target_topology_opens_one_loop():
    """An optimisation outcome from a random cloud: passed on seeds 0-11 (0/12 failures)."""
    z = torch.randn(40, 2, dtype=torch.float64)
    before = _h1_persistence(z)
    assert before[0] < 0.15
    z.requires_grad_()
    opt = torch.optim.Adam([z], lr=0.02)
    for _ in range(250):
        opt.zero_grad()
        loss = topology_target_loss(z, betti={1: 1})
        loss.backward()
        opt.step()
    after = _h1_persistence(z)
    assert after[0] > 0.5, after[:3]
    assert after[1] < 0.05, after[:3]


def test_target_loss_and_topological_errors():
    z = torch.randn(10, 2)
    with pytest.raises(ValueError, match="betti"):
        topology_target_loss(z, betti={1: -1})
    with pytest.raises(ValueError, match="x, z"):
        topological(torch.randn(9, 3), z)
    with pytest.raises(ValueError, match="dims"):
        topological(torch.randn(10, 3), z, dims=())
    with pytest.raises(ValueError, match="points_or_distances"):
        persistence(torch.randn(3, 4), distances=True)
    # H0 target: two clusters rewarded by one finite bar
    assert topology_target_loss(z, betti={0: 2}).dim() == 0
