r"""Differentiable persistent homology: diagrams, topological losses, targets.

The persistence *pairing* is combinatorial and computed on CPU by a fast
library; the birth and death *values* are then gathered, as torch tensors on
the inputs' device, from the distances (or function values) of the simplices
that create and destroy each feature.  Away from ties the pairing is locally
constant, so these values, and every loss built from them, are differentiable
almost everywhere with the gradient of the gathered distances (Poulenard et
al. 2018; Gabrielsson et al. 2020; Carrière et al. 2021).

Which library does what:

* Vietoris–Rips H0: a minimum spanning tree (Prim's algorithm, numpy); the
  MST edges are exactly the H0 death edges (used for every ``maxdim``, so H0
  does not depend on it).
* Vietoris–Rips, H1 and above: ``giotto-ph`` (``gph.ripser_parallel`` with
  ``return_generators=True``; a ripser-style cohomology algorithm that returns
  the critical edges of every pair), run on one thread.
  For H1 of a concentrated cloud (high dimensions), giotto-ph's core runs on
  the filtration truncated above a bound on every H1 birth (edges without a
  witness triangle): first at a guess of the last death, then with a margin,
  which gives the same pairs at a fraction of the cost, on the vertices
  reordered so that its apparent-pair scans stop early (pairs mapped back);
  the whole run whenever a class is still alive there (see
  ``_h1_below_enclosing_radius`` and ``_witness_order``).
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

from ._checks import check_cloud, check_distance_matrix, check_finite, check_int
from .ot import _geodesic, _is_metric_field, manifold_distances

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

    Prim's algorithm on the dense matrix, O(n²) time and O(n) memory beyond
    ``D`` (read one row per step, never copied or written; scipy's Kruskal
    sorts all n² entries, several times slower here).  Row ``t`` is the edge
    (parent, vertex) of the ``t``-th vertex added; ties go to the lowest index.
    """
    n = D.shape[0]
    edges = np.zeros((max(n - 1, 0), 2), dtype=np.int64)
    if n < 2:
        return edges
    outside = np.ones(n, dtype=bool)
    outside[0] = False
    # in D's precision: the comparisons are those of the float64 values it converts to exactly
    best = np.array(D[0], dtype=D.dtype if D.dtype.kind == "f" else np.float64)
    best[0] = np.inf
    parent = np.zeros(n, dtype=np.int64)
    upd = np.empty(n, dtype=bool)
    added = edges[:, 1]  # the vertices in the order they join; a vertex's parent is final then
    for t in range(n - 1):
        j = best.argmin()
        added[t] = j
        outside[j] = False
        best[j] = np.inf
        dj = D[j]
        # vertices outside the tree whose distance to it drops
        np.less(dj, best, out=upd)
        upd &= outside
        np.copyto(best, dj, where=upd)
        np.copyto(parent, j, where=upd)
    edges[:, 0] = parent[added]
    return edges


def rips_pairs(D, maxdim: int = 1) -> list[np.ndarray]:
    r"""Critical edges of the finite persistence pairs of a Vietoris–Rips filtration.

    Parameters
    ----------
    D : array or Tensor, shape ``(n, n)``
        symmetric, non-negative, finite distance matrix with a zero diagonal,
        up to rounding (tolerance ``8 √ε max|D|``, ε the dtype's machine
        epsilon; the pairing uses ``(D + Dᵀ)/2`` with a zero diagonal);
        anything else is a ``ValueError`` naming ``D``.
    maxdim : int
        highest homology dimension, ``>= 0``.

    Returns
    -------
    list of int64 arrays, one per dimension ``0..maxdim``: ``pairs[0]`` has
    shape ``(m0, 2)`` (the edge whose length is the death value of an H0
    class; births are 0), ``pairs[k]`` for ``k ≥ 1`` has shape ``(mk, 4)``
    (birth edge ``(i, j)``, death edge ``(u, v)``).  Essential classes (the
    one infinite H0 bar) are left out.  Computed on CPU: H0 from a minimum
    spanning tree (its ``n - 1`` edges, zero-length ones included, whatever
    ``maxdim``), H1 and above from giotto-ph (Pérez, Hess, Tauzin et al.
    2021, ripser algorithm of Bauer 2021), which leaves out zero-length bars.
    """
    maxdim = check_int(maxdim, "maxdim", 0)
    if isinstance(D, torch.Tensor):
        if not D.is_floating_point():
            D = D.to(torch.float64)
        D = D.detach().to(_pairing_dtype(D.dtype)[0]).cpu().numpy()
    D = check_distance_matrix(np.asarray(D), "D")
    return _rips_pairs(D, maxdim)


def _rips_pairs(D: np.ndarray, maxdim: int) -> list[np.ndarray]:
    """:func:`rips_pairs` on a checked matrix (symmetric, zero diagonal, finite)."""
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
    # H0 from the MST in every case: ripser leaves out zero-length bars
    # (coincident points), the MST keeps its n - 1 edges, and H0 must not
    # depend on maxdim
    mst = _mst_edges(D)
    fin_hi = _h1_below_enclosing_radius(D, mst) if maxdim == 1 else None
    if fin_hi is None:
        # the whole filtration, on the vertices in their given order (the witness order helps the
        # concentrated clouds of the truncated run; on spread-out ones it made the whole run slower)
        res = ripser_parallel(
            D, metric="precomputed", maxdim=maxdim, return_generators=True, n_threads=1
        )
        fin_hi = res["gens"][1]
    out = [mst]
    for k in range(1, maxdim + 1):
        g = fin_hi[k - 1] if k - 1 < len(fin_hi) else np.zeros((0, 4))
        out.append(np.asarray(g, dtype=np.int64).reshape(-1, 4))
    return out


# Witness candidates (the most central points) and the spread of the distances under which a
# threshold below the enclosing radius is tried: see _h1_below_enclosing_radius.
_N_WITNESS = 8
_MIN_POINTS_THRESHOLDED = 128
_MAX_RADIUS_OVER_BIRTHS = 1.6
_DEATH_MARGIN = 1.05
# the witness-less edges whose first triangle gives the guess of the last death: down to this share of
# the last birth (measured: the class dying last was born at 0.89-1.0 of it)
_GUESS_FROM = 0.88
# share of the n² distances above renc / _MAX_RADIUS_OVER_BIRTHS under which the trial is not
# even prepared (measured: 0.88-0.99 for Gaussian clouds in 16-32 D, 0.2-0.65 in 2-4 D, a
# noisy circle, a torus; 0.82 in 8-D, where the births are already below the radius's reach)
_MIN_LONG_EDGES = 0.75


def _h1_birth_bound(D: np.ndarray, mst: np.ndarray, lower: float) -> tuple[float, float] | None:
    """``(B, G)``: ``B`` the largest length of a non-MST edge with no strict witness if it is above
    ``lower`` (else None), ``G`` a guess of the last H1 death.

    A witness of the edge ``(u, v)`` is a vertex ``w`` with ``max(D_uw, D_vw) < D_uv``: the
    triangle ``uvw`` enters with the edge and fills its cycle, so no H1 bar of positive length
    is born at ``D_uv`` unless some edge of that length has no witness and is not in the
    minimum spanning tree (whose edges of one length only join components of the shorter
    edges).  Every H1 birth is therefore at most ``B``.  ``_N_WITNESS`` central
    candidates witness most long edges in ``O(n²)`` each; the edges longer than ``lower`` that
    they leave are checked exactly, ``O(n)`` each, longest first, down to ``_GUESS_FROM × B``.
    ``G``: the largest minimax witness value ``min_w max(D_uw, D_vw)`` (``w ≠ u, v``: the first
    triangle on the edge) of the witness-less edges checked, ``>= B``; a guess, not a bound (it
    was the last death of 37 of 39 concentrated clouds, Gaussian 8-32 D and uniform 16-D, n = 256
    and 512: the class born last usually dies with its first triangle).
    """
    cand = np.argsort(D.max(1), kind="stable")[:_N_WITNESS]
    # D is symmetric: row c is column c (contiguous)
    W = np.maximum(D[cand[0], :, None], D[cand[0], None, :])
    tmp = np.empty_like(W)
    for c in cand[1:]:
        np.maximum(D[c, :, None], D[c, None, :], out=tmp)
        np.minimum(W, tmp, out=W)
    sus = W >= D
    sus[mst[:, 0], mst[:, 1]] = sus[mst[:, 1], mst[:, 0]] = False
    sus &= D > lower
    iu, ju = np.nonzero(sus)
    upper = iu < ju  # the edges i < j, in the row-major order of the upper triangle
    iu, ju = iu[upper], ju[upper]
    L = D[iu, ju]
    order = np.argsort(-L, kind="stable")
    births, guess = None, -np.inf
    for s in range(0, order.size, 256):
        o = order[s : s + 256]
        if births is not None and L[o[0]] < _GUESS_FROM * births:
            break
        M = np.maximum(D[iu[o]], D[ju[o]])
        r = np.arange(o.size)
        M[r, iu[o]] = M[r, ju[o]] = np.inf  # the edge's own vertices are no witnesses
        first = M.min(1)
        no_witness = first >= L[o]
        if no_witness.any():
            if births is None:
                births = float(L[o][no_witness].max())
            no_witness &= L[o] >= _GUESS_FROM * births
            if no_witness.any():
                guess = max(guess, float(first[no_witness].max()))
    return None if births is None else (births, guess)


def _h1_below_enclosing_radius(D: np.ndarray, mst: np.ndarray):
    """giotto-ph's H1 generators from a run below the enclosing radius, or None (then run it whole).

    The pairs of a filtration truncated at ``t`` are those of the whole filtration whose death is
    at most ``t``; classes alive at ``t`` come out as essential.  With ``t`` above every H1 birth
    (:func:`_h1_birth_bound`) and no class alive at ``t``, the truncated run has exactly the finite
    H1 pairs of the whole one, at a fraction of its cost on clouds whose distances are
    concentrated (high dimensions: most edges are longer than the last H1 death).  There is no
    such bound for the deaths: ``t`` is first the guess of the last death of
    :func:`_h1_birth_bound` (the largest first-triangle value of the last-born edges; every edge
    past the last death costs giotto-ph time), then, if a class is alive there,
    ``_DEATH_MARGIN`` times the last birth; a class still alive at the last ``t`` tried sends the
    computation back to the whole run, so the trial is made only when the last birth is within a factor
    ``_MAX_RADIUS_OVER_BIRTHS`` of the enclosing radius; on spread-out clouds (low dimensions,
    large loops) deaths lie far above the births and the whole run is used directly.  Computed
    on the float32 matrix that giotto-ph reads.
    """
    n = D.shape[0]
    if n < _MIN_POINTS_THRESHOLDED:
        return None
    try:
        from gph.modules import gph_ripser
        from scipy.spatial.distance import squareform
    except ImportError:  # pragma: no cover - another layout of giotto-ph: the public call
        return None
    D32 = np.ascontiguousarray(D, dtype=np.float32)
    renc = float(D32.max(1).min())  # as giotto-ph: beyond it the complex is a cone
    lower = renc / _MAX_RADIUS_OVER_BIRTHS
    if np.count_nonzero(D32 > lower) < _MIN_LONG_EDGES * n * n:
        return None  # spread out: births far below the radius (a cheap test before the bound's)
    found = _h1_birth_bound(D32, mst, lower)
    if found is None:
        return None
    births, guess = found
    perm = _witness_order(D32)
    # first at the guess of the last death (a value of D32, >= births), then with the margin; a
    # matrix with many tied lengths only with the margin, as before (giotto-ph lists pairs of equal
    # birth and death in an order that can change with the threshold)
    t_guess = float(np.float32(guess))
    t_margin = float(np.float32(births * _DEATH_MARGIN))
    tries = [t_guess] if perm is not None and t_guess < renc else []
    if t_margin < renc and (not tries or t_margin > t_guess):
        tries.append(t_margin)
    if not tries:
        return None
    cond = squareform(D32 if perm is None else _permuted(D32, perm), checks=False)
    for t in tries:
        res = gph_ripser.rips_dm(cond, np.zeros(n, np.float32), 2, 1, t, 1, True)
        gens = res.flag_persistence_generators_by_dim
        if not _alive_at_threshold(gens):
            fin = [np.asarray(g, dtype=np.int64).reshape(-1, 4) for g in gens.finite_higher]
            return fin if perm is None else [_relabel_h1(fin[0], perm, D32)]
    return None  # a class outlives every t tried: its death is above them


# Vertices sampled (rows of D) for the share of tied lengths, and that share above which giotto-ph
# runs on the given vertex order: see _witness_order.
_TIE_SAMPLE_ROWS = 8
_MAX_TIED = 0.02


def _witness_order(D: np.ndarray) -> np.ndarray | None:
    """Vertex order for giotto-ph's truncated H1 run: decreasing sum of distances (central vertices
    last), or None to keep the given order (a matrix with many tied lengths).

    giotto-ph first looks for the apparent pair of every edge ``(u, v)``, scanning the vertices
    ``w`` from the highest index down for a triangle ``uvw`` of the edge's length (a witness,
    ``max(D_uw, D_vw) <= D_uv``); the central vertices witness most edges, so with them last the
    scan of a witnessed edge stops after a few vertices (measured: 20-25 % less time for the H1
    run of Gaussian clouds in 16-D, n = 256 and 512; the whole run of spread-out clouds, 2-D
    Gaussian, was 20-30% slower with it and keeps the given order).  The run's pairs, mapped back by
    :func:`_relabel_h1`, are those of the given order whenever the lengths of the critical edges
    are not tied with other lengths: the diagram is the same whatever the order of equal lengths,
    and a birth or death value then names its edge (measured equal on continuous clouds).  Among
    tied lengths the order decides which edge of a length giotto-ph reports, so a matrix with
    many ties (integer or binary coordinates: ``_MAX_TIED`` or more of the lengths in the first
    ``_TIE_SAMPLE_ROWS`` rows repeated) keeps its order and reports what it did before.
    """
    n = D.shape[0]
    k = min(_TIE_SAMPLE_ROWS, n // 2)
    if k < 1:
        return None
    sample = np.sort(D[:k, k:].astype(np.float32), axis=None)  # the lengths giotto-ph reads
    if np.count_nonzero(sample[1:] == sample[:-1]) >= _MAX_TIED * sample.size:
        return None
    return np.argsort(-D.sum(1, dtype=np.float64), kind="stable")


def _permuted(D: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """``D[perm][:, perm]`` as a C-contiguous array (two takes: the cheapest copy to condense)."""
    return np.take(np.take(D, perm, 0), perm, 1)


def _relabel_h1(g: np.ndarray, perm: np.ndarray, D: np.ndarray) -> np.ndarray:
    """H1 generators ``(m, 4)`` of a run on ``D[perm][:, perm]`` in the labels and layout of a run
    on ``D``: vertex ``perm[i]`` for ``i``, each edge as (larger, smaller) vertex, and the pairs in
    giotto-ph's order (its ``std::sort`` of the (birth, death) values, decreasing; pairs with both
    values equal, which it leaves in no set order, by increasing birth-edge index)."""
    g = perm[np.asarray(g, dtype=np.int64).reshape(-1, 4)]
    for a in (0, 2):
        hi = np.maximum(g[:, a], g[:, a + 1])
        g[:, a + 1] = np.minimum(g[:, a], g[:, a + 1])
        g[:, a] = hi
    i, j = g[:, 0], g[:, 1]
    birth = np.asarray(D[i, j], dtype=np.float32)
    death = np.asarray(D[g[:, 2], g[:, 3]], dtype=np.float32)
    return g[np.lexsort((i * (i - 1) // 2 + j, -death, -birth))]


def _alive_at_threshold(gens) -> bool:
    """Whether a truncated giotto-ph run left an H1 class alive (reported as essential)."""
    return bool(len(gens.essential_higher) and len(gens.essential_higher[0]))


# --------------------------------------------------------------------------- diagrams


# Elements of one block of intermediate tensors when the pairing matrix is
# built: a block of rows times all points times the ambient dimension.  Small
# enough that the geodesic formulas' temporaries stay a few MB whatever n is.
_BLOCK = 1 << 18


def _pairing_dtype(dtype: torch.dtype):
    return (torch.float64, np.float64) if dtype == torch.float64 else (torch.float32, np.float32)


def _pairing_matrix(x: torch.Tensor, manifold, name: str) -> np.ndarray:
    """Distance matrix of the cloud ``x`` for the CPU pairing: numpy, no autograd.

    Built by blocks of rows straight into one ``(n, n)`` array in the points'
    precision (float64 for float64 points, float32 otherwise), so the peak
    memory is that array plus a few MB of temporaries, whatever the manifold's
    formula allocates per pair.  The values are the same formulas as the
    gathered, differentiable ones (:func:`dlmppl.losses.manifold_distances`).
    """
    n, dim = x.shape
    tdt, ndt = _pairing_dtype(x.dtype)
    if manifold is not None and _is_metric_field(manifold):
        with torch.no_grad():
            D = manifold_distances(x.detach(), x.detach(), manifold).to(tdt).cpu().numpy().copy()
    else:
        D = np.empty((n, n), dtype=ndt)
        # cdist (no matrix product) writes each distance straight from the two points: a block
        # of rows costs its output only; the geodesic formulas broadcast over the coordinates
        step = max(1, _BLOCK // max(1, n * (1 if manifold is None else dim)))
        with torch.no_grad():
            # half precision has no cdist: pair in float32 (no copy otherwise)
            xd = x.detach().to(tdt)
            for s0 in range(0, n, step):
                xb = xd[s0 : s0 + step]
                if manifold is None:
                    blk = torch.cdist(xb, xd, compute_mode="donot_use_mm_for_euclid_dist")
                else:
                    blk = _geodesic(xb[:, None, :], xd[None, :, :], manifold)
                D[s0 : s0 + step] = blk.to(tdt).cpu().numpy()
    if D.size and not np.isfinite(D).all():
        raise ValueError(
            f"{name}: the distances between these points are not finite (points off the "
            "manifold, or a manifold whose curvature overflowed)"
        )
    np.fill_diagonal(D, 0.0)
    return D


class _Edges:
    """Differentiable edge lengths, from points (with a manifold) or a distance matrix."""

    def __init__(self, data, manifold=None, distances=False, name="points"):
        self.data, self.manifold, self.distances, self.name = data, manifold, distances, name

    def matrix_nograd(self) -> np.ndarray:
        """The checked matrix the pairing runs on (host, numpy)."""
        if self.distances:
            tdt, _ = _pairing_dtype(self.data.dtype)
            return check_distance_matrix(self.data.detach().to(tdt).cpu().numpy(), self.name)
        return _pairing_matrix(self.data, self.manifold, self.name)

    def __call__(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        if self.distances:
            # the pairing sees (D + Dᵀ)/2: gather the same symmetric value
            return 0.5 * (self.data[i, j] + self.data[j, i])
        return _geodesic(self.data[i], self.data[j], self.manifold)


def _check_points(x, name, distances=False):
    if distances:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[0] != x.shape[1]:
            raise ValueError(f"{name}: expected a square distance matrix, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
        return  # values: check_distance_matrix, on the host copy
    check_cloud(x, name)
    # the pairing copies the values to the host anyway: no extra synchronisation
    # beyond the one the solver needs
    check_finite(x, name)


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
        a point cloud ``(n, D)`` of finite points (distances are the geodesic
        distances of ``manifold``, Euclidean when ``None``) or, with
        ``distances=True``, a distance matrix ``(n, n)``: finite,
        non-negative, symmetric, zero diagonal, up to the rounding tolerance
        of :func:`rips_pairs` (the diagrams use ``(D + Dᵀ)/2``).  Anything
        else is a ``ValueError`` naming ``points_or_distances``.  An empty
        cloud (``n = 0``) has empty diagrams.
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

    The pairing runs on CPU (see :func:`rips_pairs`) on a distance matrix
    built without autograd, by blocks of rows, in the points' precision (one
    ``n × n`` array: 100 MB at ``n = 5000`` in float32, whatever the
    manifold); only the critical distances are recomputed with autograd, on
    the inputs' device, so backward costs ``O(#pairs)``.
    References: Edelsbrunner & Harer, "Computational Topology", 2010; Bauer,
    "Ripser", J. Appl. Comput. Topol. 2021; Carrière et al., "Optimizing
    persistent homology based functions", ICML 2021.
    """
    x = points_or_distances
    _check_points(x, "points_or_distances", distances)
    maxdim = check_int(maxdim, "maxdim", 0)
    edges = _Edges(x, manifold, distances, "points_or_distances")
    D = edges.matrix_nograd()
    pairs = _rips_pairs(D, maxdim)
    del D  # the n² pairing matrix is not needed for the gathering
    dev = x.device
    pairs_t = [torch.as_tensor(p, device=dev) for p in pairs]
    p0 = pairs_t[0]
    death0 = edges(p0[:, 0], p0[:, 1])
    dgms = [torch.stack([torch.zeros_like(death0), death0], -1)]
    if essential and x.shape[0] > 0:
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
        finite values on the top-dimensional cells (pixels, voxels); NaN or
        inf is a ``ValueError`` naming ``f``.  Integer images are read in
        the default float dtype.  An empty ``f`` (a zero-length axis) has
        empty diagrams.
    maxdim : int, optional
        highest homology dimension (default ``d - 1``), ``>= 0``.
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
    if f.is_complex():
        raise ValueError(f"f: expected real values, got {f.dtype}")
    if not f.is_floating_point():
        # an integer image (uint8...): values in the default float dtype, so
        # that superlevel sets (-f) and the essential bars (inf) are exact
        f = f.to(torch.get_default_dtype())
    maxdim = f.dim() - 1 if maxdim is None else check_int(maxdim, "maxdim", 0)
    if f.numel() == 0:
        # gudhi's CubicalComplex crashes the process on an empty array
        return [f.new_zeros((0, 2)) for _ in range(maxdim + 1)]
    g = (-f if superlevel else f).detach().to(torch.float64).cpu().numpy()
    # checked on the host copy gudhi needs anyway: a NaN crashes gudhi, an
    # inf gives empty diagrams
    if not np.isfinite(g).all():
        bad = "NaN" if np.isnan(g).any() else "an infinite value"
        raise ValueError(f"f: values must be finite, got {bad}")
    cc = gudhi.CubicalComplex(top_dimensional_cells=np.ascontiguousarray(g))
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
        input batch (flattened), finite.
    z : Tensor, shape ``(n, d)``
        latent codes, ambient coordinates of ``z_manifold``, finite.  NaN or
        inf coordinates in ``x`` or ``z`` are a ``ValueError`` naming them; an
        empty batch (``n = 0``) has loss 0.
    z_manifold, x_manifold : geoopt manifolds or None (Euclidean)
    dims : homology dimensions used (``(0,)`` takes the fast MST path).
    normalize : bool
        divide each distance matrix by its largest entry (as in the authors'
        code), making the loss scale-free (a cloud of coincident points,
        diameter 0, is left undivided).

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
    ex, ez = _Edges(x, x_manifold, name="x"), _Edges(z, z_manifold, name="z")
    # one n² pairing matrix alive at a time
    Dx = ex.matrix_nograd()
    pairs_x, far_x = _rips_pairs(Dx, dims[-1]), _argmax_edge(Dx)
    del Dx
    Dz = ez.matrix_nograd()
    pairs_z, far_z = _rips_pairs(Dz, dims[-1]), _argmax_edge(Dz)
    del Dz
    # the critical edges of both clouds, and their longest edges when normalising, are gathered
    # on the host and reach the points' device in one transfer
    cx = _critical_edges([torch.as_tensor(p, device="cpu") for p in pairs_x], dims)
    cz = _critical_edges([torch.as_tensor(p, device="cpu") for p in pairs_z], dims)
    n_crit = cx.shape[0] + cz.shape[0]
    normalize = normalize and x.shape[0] > 0  # an empty batch has no diameter (and loss 0)
    rows = [cx.long(), cz.long()] + ([torch.tensor([far_x, far_z], dtype=torch.long)] if normalize else [])
    e = torch.cat(rows, 0).to(z.device)
    ax = ex(e[:, 0], e[:, 1])
    az = ez(e[:, 0], e[:, 1])
    if normalize:
        # a cloud of coincident points has diameter 0 (and every persistence 0): left undivided
        dx, dz = ax[n_crit], az[n_crit + 1]
        ax = ax[:n_crit] / torch.where(dx > 0, dx, torch.ones_like(dx))
        az = az[:n_crit] / torch.where(dz > 0, dz, torch.ones_like(dz))
    return 0.5 * (ax.to(az.dtype) - az).pow(2).sum()


def _argmax_edge(D: np.ndarray) -> tuple[int, int]:
    """Vertices of the longest edge of the (host) pairing matrix, ``(0, 0)`` if empty."""
    if D.size == 0:
        return 0, 0
    idx = int(np.argmax(D))
    return idx // D.shape[0], idx % D.shape[0]


def _divide_by_diameter(v: torch.Tensor, edges: _Edges, far: tuple[int, int]) -> torch.Tensor:
    """``v / diam`` with the diameter gathered differentiably; ``v`` unchanged if ``diam = 0``.

    A cloud of one point, or of coincident points, has diameter 0 and every
    persistence 0: dividing would give 0/0 = NaN.
    """
    if edges.data.shape[0] == 0:
        return v
    dev = edges.data.device
    i = torch.tensor([far[0]], device=dev)
    j = torch.tensor([far[1]], device=dev)
    diam = edges(i, j)[0]
    return v / torch.where(diam > 0, diam, torch.ones_like(diam))


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
        ``q``, finite and ``>= 1``.
    internal_p : float
        ``r``, in ``[1, inf]``.

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
    if not (order >= 1 and math.isfinite(order)):
        raise ValueError(
            f"order: must be finite and >= 1, got {order} (the bottleneck distance, order = inf, "
            "is gudhi.bottleneck_distance)"
        )
    if not internal_p >= 1:
        raise ValueError(f"internal_p: must be >= 1 (a norm on the plane), got {internal_p}")
    d2 = d2.to(dtype=d1.dtype, device=d1.device)
    m1, m2 = d1.shape[0], d2.shape[0]
    if m1 + m2 == 0:
        # zero, still attached to both diagrams' graphs (backward gives zeros)
        return d1.sum() * 0 + d2.sum() * 0
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
        latent points (ambient coordinates of ``manifold``), finite (else a
        ``ValueError`` naming ``z``); an empty cloud has no features and loss 0.
    betti : dict ``{dimension: count}``, default ``{1: 1}``.
    manifold : geoopt manifold or None
    normalize : bool
        divide by the diameter of the cloud (the loss is then scale-free and
        bounded below; a cloud of diameter 0 has loss 0 and is left undivided).
    penalty : float
        weight of the unwanted features, finite and ``>= 0``.

    Returns
    -------
    Tensor, shape ``()``.
    """
    _check_points(z, "z")
    betti = {1: 1} if betti is None else dict(betti)
    if not betti or min(betti) < 0 or min(betti.values()) < 0:
        raise ValueError(f"betti: expected {{dimension: count >= 0}}, got {betti}")
    if not (math.isfinite(penalty) and penalty >= 0):
        raise ValueError(f"penalty: must be finite and >= 0, got {penalty}")
    edges = _Edges(z, manifold, name="z")
    D = edges.matrix_nograd()
    pairs, far = _rips_pairs(D, max(betti)), _argmax_edge(D)
    del D
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
        loss = _divide_by_diameter(loss, edges, far)
    return loss
