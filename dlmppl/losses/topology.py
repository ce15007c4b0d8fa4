r"""Differentiable persistent homology: diagrams, topological losses, targets.

The persistence *pairing* is combinatorial and computed on CPU by a fast
library; the birth and death *values* are then gathered, as torch tensors on
the inputs' device, from the distances (or function values) of the simplices
that create and destroy each feature.  Away from ties the pairing is locally
constant, so these values, and every loss built from them, are differentiable
almost everywhere with the gradient of the gathered distances (Poulenard et
al. 2018; Gabrielsson et al. 2020; Carrière et al. 2021).

Which library does what:

* Vietoris–Rips, H0 only: a minimum spanning tree (Prim's algorithm, numpy);
  the MST edges are exactly the H0 death edges.
* Vietoris–Rips, H1 and above: ``giotto-ph`` (``gph.ripser_parallel`` with
  ``return_generators=True``; a ripser-style cohomology algorithm that returns
  the critical edges of every pair), run on one thread.
* Cubical complexes of images / fields: gudhi's ``CubicalComplex`` and its
  ``cofaces_of_persistence_pairs``.
* gudhi's ``RipsComplex`` + ``SimplexTree`` is used only as the independent
  reference in the tests (it is orders of magnitude slower for H1).

The filtration value of a Rips simplex is its longest edge, so each finite
pair is described by vertex indices: the death edge for H0, and the birth
(longest) edge of the creating simplex and the longest edge of the killing
simplex for H1 and above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .ot import _geodesic, pairwise_distance

__all__ = [
    "rips_pairs",
    "persistence",
    "cubical_persistence",
    "topological",
    "diagram_distance",
    "topology_target_loss",
]


# --------------------------------------------------------------------------- pairing (CPU)


def _mst_edges(D: np.ndarray) -> np.ndarray:
    """H0 death edges of the Rips filtration of ``D``: a minimum spanning tree, ``(n-1, 2)``.

    Prim's algorithm on the dense matrix, O(n²) (scipy's Kruskal sorts all n²
    entries, several times slower here).
    """
    n = D.shape[0]
    edges = np.zeros((max(n - 1, 0), 2), dtype=np.int64)
    if n < 2:
        return edges
    # columns of vertices already in the tree are set to inf, so that one
    # comparison per step finds the vertices whose distance to the tree drops
    Dm = np.array(D, dtype=np.float64, copy=True)
    Dm[:, 0] = np.inf
    best = Dm[0].copy()
    parent = np.zeros(n, dtype=np.int64)
    for t in range(n - 1):
        j = int(np.argmin(best))
        edges[t, 0], edges[t, 1] = parent[j], j
        Dm[:, j] = np.inf
        best[j] = np.inf
        dj = Dm[j]
        upd = dj < best
        best = np.where(upd, dj, best)
        parent[upd] = j
    return edges


def rips_pairs(D, maxdim: int = 1) -> list[np.ndarray]:
    r"""Critical edges of the finite persistence pairs of a Vietoris–Rips filtration.

    Parameters
    ----------
    D : array or Tensor, shape ``(n, n)``
        symmetric distance matrix (zero diagonal).
    maxdim : int
        highest homology dimension.

    Returns
    -------
    list of int64 arrays, one per dimension ``0..maxdim``: ``pairs[0]`` has
    shape ``(m0, 2)`` (the edge whose length is the death value of an H0
    class; births are 0), ``pairs[k]`` for ``k ≥ 1`` has shape ``(mk, 4)``
    (birth edge ``(i, j)``, death edge ``(u, v)``).  Essential classes (the
    one infinite H0 bar) are left out.  Computed on CPU: an MST for ``maxdim
    = 0``, giotto-ph (Pérez, Hess, Tauzin et al. 2021, ripser algorithm of
    Bauer 2021) otherwise.
    """
    if isinstance(D, torch.Tensor):
        D = D.detach().cpu().numpy()
    D = np.asarray(D)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"D: expected a square distance matrix, got shape {D.shape}")
    if maxdim < 0:
        raise ValueError(f"maxdim: must be >= 0, got {maxdim}")
    if maxdim == 0 or D.shape[0] < 3:
        out = [_mst_edges(D)]
        out += [np.zeros((0, 4), dtype=np.int64) for _ in range(maxdim)]
        return out
    try:
        from gph import ripser_parallel
    except ImportError as e:  # pragma: no cover - dependency missing
        raise ImportError(
            "persistence in dimension >= 1 needs giotto-ph: pip install giotto-ph"
        ) from e

    if D.dtype not in (np.float32, np.float64):
        D = D.astype(np.float64)
    D = np.ascontiguousarray(D)
    res = ripser_parallel(
        D, metric="precomputed", maxdim=maxdim, return_generators=True, n_threads=1
    )
    fin0, fin_hi = res["gens"][0], res["gens"][1]
    out = [np.asarray(fin0, dtype=np.int64).reshape(-1, 3)[:, 1:]]
    for k in range(1, maxdim + 1):
        g = fin_hi[k - 1] if k - 1 < len(fin_hi) else np.zeros((0, 4))
        out.append(np.asarray(g, dtype=np.int64).reshape(-1, 4))
    return out


# --------------------------------------------------------------------------- diagrams


def _distance_matrix_nograd(x, manifold):
    with torch.no_grad():
        if manifold is None:
            D = torch.cdist(x, x)
            D.fill_diagonal_(0.0)
            return D
        D = pairwise_distance(x, x, manifold)
        D.fill_diagonal_(0.0)
        return D


class _Edges:
    """Differentiable edge lengths, from points (with a manifold) or a distance matrix."""

    def __init__(self, data, manifold=None, distances=False):
        self.data, self.manifold, self.distances = data, manifold, distances

    def matrix_nograd(self):
        if self.distances:
            return self.data.detach()
        return _distance_matrix_nograd(self.data.detach(), self.manifold)

    def __call__(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        if self.distances:
            return self.data[i, j]
        return _geodesic(self.data[i], self.data[j], self.manifold)


def _check_points(x, name, distances=False):
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if distances:
        if x.dim() != 2 or x.shape[0] != x.shape[1]:
            raise ValueError(f"{name}: expected a square distance matrix, got {tuple(x.shape)}")
    elif x.dim() != 2:
        raise ValueError(f"{name}: expected a point cloud of shape (n, D), got {tuple(x.shape)}")


def persistence(
    points_or_distances: torch.Tensor,
    maxdim: int = 1,
    manifold=None,
    distances: bool = False,
    essential: bool = False,
    return_pairs: bool = False,
):
    r"""Vietoris–Rips persistence diagrams, differentiable in the points.

    Parameters
    ----------
    points_or_distances : Tensor
        a point cloud ``(n, D)`` (distances are the geodesic distances of
        ``manifold``, Euclidean when ``None``) or, with ``distances=True``, a
        symmetric distance matrix ``(n, n)``.
    maxdim : int
        diagrams for homology dimensions ``0..maxdim``.
    manifold : geoopt manifold or None
    distances : bool
        the input is a distance matrix.
    essential : bool
        append the infinite H0 bar ``(0, inf)`` (left out by default, since it
        carries no gradient and breaks losses).
    return_pairs : bool
        also return the critical vertex indices of :func:`rips_pairs` (as
        LongTensors on the input's device).

    Returns
    -------
    list of Tensors ``dgms[k]`` of shape ``(m_k, 2)`` (birth, death), on the
    input's device and dtype; births of H0 are 0.  With ``return_pairs``:
    ``(dgms, pairs)``.

    The pairing runs on CPU (see :func:`rips_pairs`); only the critical
    distances are recomputed with autograd, so backward costs ``O(#pairs)``.
    References: Edelsbrunner & Harer, "Computational Topology", 2010; Bauer,
    "Ripser", J. Appl. Comput. Topol. 2021; Carrière et al., "Optimizing
    persistent homology based functions", ICML 2021.
    """
    x = points_or_distances
    _check_points(x, "points_or_distances", distances)
    edges = _Edges(x, manifold, distances)
    pairs = rips_pairs(edges.matrix_nograd(), maxdim)
    dev = x.device
    pairs_t = [torch.as_tensor(p, device=dev) for p in pairs]
    p0 = pairs_t[0]
    death0 = edges(p0[:, 0], p0[:, 1])
    dgms = [torch.stack([torch.zeros_like(death0), death0], -1)]
    if essential:
        inf = torch.tensor([[0.0, math.inf]], dtype=x.dtype, device=dev)
        dgms[0] = torch.cat([dgms[0], inf], 0)
    for p in pairs_t[1:]:
        b = edges(p[:, 0], p[:, 1])
        d = edges(p[:, 2], p[:, 3])
        dgms.append(torch.stack([b, d], -1))
    return (dgms, pairs_t) if return_pairs else dgms


def cubical_persistence(
    f: torch.Tensor, maxdim: int | None = None, superlevel: bool = False, essential: bool = False
):
    r"""Persistence of the sublevel-set filtration of an image / field, differentiable in ``f``.

    Parameters
    ----------
    f : Tensor, shape ``(H, W)`` or any ``(n1, ..., nd)``
        values on the top-dimensional cells (pixels, voxels).
    maxdim : int, optional
        highest homology dimension (default ``d - 1``).
    superlevel : bool
        filter by superlevel sets (``-f``'s sublevel sets; values are reported
        in ``f``'s units, births above deaths).
    essential : bool
        append the essential classes as ``(birth, inf)`` rows.

    Returns
    -------
    list of Tensors ``(m_k, 2)`` for ``k = 0..maxdim``, values of ``f``
    gathered at the critical cells (gudhi's ``cofaces_of_persistence_pairs``),
    on ``f``'s device.  Reference: Wagner, Chen & Vuçini, "Efficient computation
    of persistent homology for cubical data", 2012; gudhi CubicalComplex.
    """
    import gudhi

    if not isinstance(f, torch.Tensor) or f.dim() < 1:
        raise ValueError("f: expected a tensor with at least one dimension")
    g = -f if superlevel else f
    maxdim = f.dim() - 1 if maxdim is None else maxdim
    cc = gudhi.CubicalComplex(top_dimensional_cells=g.detach().cpu().numpy())
    cc.compute_persistence(homology_coeff_field=2)
    regular, ess = cc.cofaces_of_persistence_pairs()
    # gudhi numbers the top cells with the first axis varying fastest
    flat = f.permute(*reversed(range(f.dim()))).reshape(-1)
    dgms = []
    for k in range(maxdim + 1):
        r = regular[k] if k < len(regular) else np.zeros((0, 2))
        r = torch.as_tensor(np.asarray(r, dtype=np.int64).reshape(-1, 2), device=f.device)
        dg = torch.stack([flat[r[:, 0]], flat[r[:, 1]]], -1)
        if essential:
            e = ess[k] if k < len(ess) else np.zeros((0,))
            e = torch.as_tensor(np.asarray(e, dtype=np.int64).reshape(-1), device=f.device)
            be = flat[e]
            dg = torch.cat([dg, torch.stack([be, torch.full_like(be, math.inf)], -1)], 0)
        dgms.append(dg)
    return dgms


# --------------------------------------------------------------------------- losses


def _critical_edges(pairs: Sequence[torch.Tensor], dims) -> torch.Tensor:
    out = []
    for k in dims:
        p = pairs[k]
        out.append(p[:, :2])
        if k >= 1:
            out.append(p[:, 2:4])
    return torch.cat(out, 0) if out else torch.zeros((0, 2), dtype=torch.long)


def topological(
    x: torch.Tensor,
    z: torch.Tensor,
    z_manifold=None,
    dims: Sequence[int] = (0, 1),
    x_manifold=None,
    normalize: bool = False,
) -> torch.Tensor:
    r"""Topological-autoencoder loss (Moor, Horn, Rieck & Borgwardt, ICML 2020).

    With ``A^X``, ``A^Z`` the distance matrices of the input batch and of its
    latent codes (geodesic distances of ``z_manifold``) and ``π^X``, ``π^Z``
    the critical edges of their Vietoris–Rips persistence pairs in the
    homology dimensions ``dims`` (H0: death edges; H1+: birth and death edges),

    ``L = ½ ‖A^X[π^X] − A^Z[π^X]‖² + ½ ‖A^Z[π^Z] − A^X[π^Z]‖²``.

    Parameters
    ----------
    x : Tensor, shape ``(n, D)``
        input batch (flattened).
    z : Tensor, shape ``(n, d)``
        latent codes, ambient coordinates of ``z_manifold``.
    z_manifold, x_manifold : geoopt manifolds or None (Euclidean)
    dims : homology dimensions used (``(0,)`` takes the fast MST path).
    normalize : bool
        divide each distance matrix by its largest entry (as in the authors'
        code), making the loss scale-free.

    Returns
    -------
    Tensor, shape ``()``, differentiable in ``x`` and ``z`` (and a learnable
    curvature), on their device.
    """
    _check_points(x, "x")
    _check_points(z, "z")
    if x.shape[0] != z.shape[0]:
        raise ValueError(f"x, z: need the same number of points, got {x.shape[0]} and {z.shape[0]}")
    dims = tuple(sorted(set(int(k) for k in dims)))
    if not dims or dims[0] < 0:
        raise ValueError(f"dims: expected non-negative homology dimensions, got {dims}")
    ex, ez = _Edges(x, x_manifold), _Edges(z, z_manifold)
    Dx, Dz = ex.matrix_nograd(), ez.matrix_nograd()
    pairs_x = rips_pairs(Dx, dims[-1])
    pairs_z = rips_pairs(Dz, dims[-1])
    dev = z.device
    cx = torch.as_tensor(_critical_edges([torch.as_tensor(p) for p in pairs_x], dims), device=dev)
    cz = torch.as_tensor(_critical_edges([torch.as_tensor(p) for p in pairs_z], dims), device=dev)
    e = torch.cat([cx, cz], 0)
    ax = ex(e[:, 0], e[:, 1])
    az = ez(e[:, 0], e[:, 1])
    if normalize:
        ax = ax / _max_edge(ex, Dx)
        az = az / _max_edge(ez, Dz)
    return 0.5 * (ax.to(az.dtype) - az).pow(2).sum()


def _max_edge(edges: _Edges, D: torch.Tensor) -> torch.Tensor:
    idx = int(torch.argmax(D))
    n = D.shape[0]
    i = torch.tensor([idx // n], device=D.device)
    j = torch.tensor([idx % n], device=D.device)
    return edges(i, j)[0]


def _to_diag_cost(dg: torch.Tensor, internal_p: float) -> torch.Tensor:
    half = (dg[:, 1] - dg[:, 0]).abs() / 2
    return half if math.isinf(internal_p) else half * 2 ** (1.0 / internal_p)


def diagram_distance(
    d1: torch.Tensor, d2: torch.Tensor, order: float = 1.0, internal_p: float = math.inf
) -> torch.Tensor:
    r"""Wasserstein distance between two persistence diagrams, differentiable.

    ``W_q(D1, D2) = (min_γ Σ ‖p − γ(p)‖_r^q)^{1/q}`` over matchings ``γ`` of
    the points of each diagram with the points of the other or with their
    projection onto the diagonal (``q = order``, ``r = internal_p``, the
    convention of ``gudhi.wasserstein.wasserstein_distance``).

    Parameters
    ----------
    d1 : Tensor, shape ``(m1, 2)``
    d2 : Tensor, shape ``(m2, 2)``
        finite (birth, death) pairs.
    order : float
    internal_p : float

    Returns
    -------
    Tensor, shape ``()``: the optimal matching is found on CPU by
    ``scipy.optimize.linear_sum_assignment`` on the augmented cost matrix;
    the cost is gathered in torch, so the value is differentiable in both
    diagrams (Cohen-Steiner et al. 2010; Kerber, Morozov & Nigmetov 2017).
    """
    for name, d in (("d1", d1), ("d2", d2)):
        if not isinstance(d, torch.Tensor) or d.dim() != 2 or d.shape[-1] != 2:
            raise ValueError(f"{name}: expected a diagram tensor of shape (m, 2)")
        if not bool(torch.isfinite(d).all()):
            raise ValueError(f"{name}: diagram has non-finite values (drop essential bars)")
    if order < 1:
        raise ValueError(f"order: must be >= 1, got {order}")
    d2 = d2.to(dtype=d1.dtype, device=d1.device)
    m1, m2 = d1.shape[0], d2.shape[0]
    if m1 + m2 == 0:
        return d1.new_zeros(())
    diff = d1[:, None, :] - d2[None, :, :]
    if math.isinf(internal_p):
        pp = diff.abs().amax(-1)
    else:
        pp = diff.abs().pow(internal_p).sum(-1).pow(1.0 / internal_p)
    c1 = _to_diag_cost(d1, internal_p).pow(order)
    c2 = _to_diag_cost(d2, internal_p).pow(order)
    C = torch.zeros((m1 + m2, m2 + m1), dtype=d1.dtype, device=d1.device)
    C[:m1, :m2] = pp.pow(order)
    C[:m1, m2:] = c1[:, None]
    C[m1:, :m2] = c2[None, :]
    rows, cols = linear_sum_assignment(C.detach().cpu().numpy())
    rows = torch.as_tensor(rows, device=d1.device)
    cols = torch.as_tensor(cols, device=d1.device)
    total = C[rows, cols].sum()
    return total.pow(1.0 / order)


def topology_target_loss(
    z: torch.Tensor,
    betti: dict[int, int] | None = None,
    manifold=None,
    normalize: bool = True,
    penalty: float = 1.0,
) -> torch.Tensor:
    r"""Loss that drives a point cloud towards a target topology.

    For each homology dimension ``k`` with target Betti number ``β_k``, the
    persistences ``ℓ_1 ≥ ℓ_2 ≥ ...`` of the Rips diagram of ``z`` are split
    into the ``β_k`` most persistent features, which are rewarded, and the
    rest, which are penalised:

    ``L = Σ_k ( −Σ_{i ≤ β_k} ℓ_i + penalty · Σ_{i > β_k} ℓ_i ) / diam(z)``

    (for ``k = 0`` the infinite bar counts as the first component, so
    ``β_0 − 1`` finite bars are rewarded).  ``betti={1: 1}`` asks for one
    persistent loop: a circular latent space.  Following the
    topology-regularisation losses of Brüel-Gabrielsson et al., "A topology
    layer for machine learning", AISTATS 2020.

    Parameters
    ----------
    z : Tensor, shape ``(n, d)``
        latent points (ambient coordinates of ``manifold``).
    betti : dict ``{dimension: count}``, default ``{1: 1}``.
    manifold : geoopt manifold or None
    normalize : bool
        divide by the diameter of the cloud (the loss is then scale-free and
        bounded below).
    penalty : float
        weight of the unwanted features.

    Returns
    -------
    Tensor, shape ``()``.
    """
    _check_points(z, "z")
    betti = {1: 1} if betti is None else dict(betti)
    if not betti or min(betti) < 0 or min(betti.values()) < 0:
        raise ValueError(f"betti: expected {{dimension: count >= 0}}, got {betti}")
    edges = _Edges(z, manifold)
    D = edges.matrix_nograd()
    pairs = rips_pairs(D, max(betti))
    dev = z.device
    loss = z.new_zeros(())
    for k, b in betti.items():
        p = torch.as_tensor(pairs[k], device=dev)
        if k == 0:
            pers = edges(p[:, 0], p[:, 1])
            b = max(b - 1, 0)
        else:
            pers = edges(p[:, 2], p[:, 3]) - edges(p[:, 0], p[:, 1])
        pers = torch.sort(pers, descending=True).values
        loss = loss - pers[:b].sum() + penalty * pers[b:].sum()
    if normalize:
        loss = loss / _max_edge(edges, D)
    return loss
