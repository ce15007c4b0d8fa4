r"""Pairwise geodesic distance matrices under a metric field (ground costs for OT / PH losses).

``metric_distances(metric, x, y)`` returns ``D[i, j] = dist_G(xᵢ, yⱼ)``, the
length of the connecting geodesic found by
:func:`dlmppl.geometry.connecting_geodesic` (minimum of the discrete curve
energy, Arvanitidis et al., "Latent space oddity", ICLR 2018), all pairs solved
as one batched L-BFGS problem per chunk of ``batch_size`` pairs.

Cost.  With ``P`` pairs (``n m``, or ``n(n-1)/2`` when ``y`` is None: the
matrix is symmetric with a zero diagonal), ``n_points`` points per curve and
``I ≤ max_iter`` L-BFGS iterations (each with a few line-search evaluations),
the work is ``O(I · P · n_points)`` evaluations of ``metric.quadratic`` (plus
their backward pass); e.g. one or two decoder JVPs each for a
:class:`PullbackMetric`, ``O(N d)`` for a :class:`ChadebecMetric` with ``N``
centroids.  Memory is ``O(batch_size · n_points · d)`` plus the L-BFGS history
(``history_size`` copies of the chunk's coefficients).  ``method="straight"``
gives the Riemannian length of the straight segment (an upper bound on the
distance) for one pass, ``O(P · n_points)`` metric evaluations, no optimisation.

Gradients.  The distances are differentiable in ``x``, ``y`` (through the
endpoints of the found curve; by the envelope theorem this is the gradient of
the geodesic distance up to the solver's tolerance) and in the metric's
parameters (through the lengths of the found curves).
"""

from __future__ import annotations

import torch

from .metrics import MetricField
from .solvers import connecting_geodesic, curve_length

__all__ = ["paired_metric_distances", "metric_distances"]


def _check_metric_method(metric, method):
    if not isinstance(metric, MetricField):
        raise ValueError(f"metric must be a dlmppl.geometry.MetricField, got {type(metric).__name__}")
    if method not in ("geodesic", "straight"):
        raise ValueError(f"method must be 'geodesic' or 'straight', got {method!r}")


def metric_distances(
    metric,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    n_points: int = 16,
    *,
    method: str = "geodesic",
    condition=None,
    batch_size: int = 1024,
    max_iter: int = 200,
    tol: float | None = None,
):
    r"""Geodesic distance matrix ``(n, m)`` between ``x`` ``(n, d)`` and ``y`` ``(m, d)`` under a metric field, by curve optimisation.

    For closed-form distances on a geoopt manifold see :func:`dlmppl.losses.manifold_distances`.

    Parameters
    ----------
    metric : a :class:`~dlmppl.geometry.MetricField` (pull-back, conformal, learned, Chadebec...).
    x, y : points ``(n, d)``, ``(m, d)``; ``y=None`` computes the symmetric matrix of ``x``
        (only the ``n(n-1)/2`` pairs ``i < j`` are solved; diagonal exactly 0).
    n_points : points per discrete curve (endpoints included, ≥ 3); error ``O(1/n_points²)``.
    method : ``"geodesic"`` (energy-minimising curve) or ``"straight"`` (length of the straight
        segment, an upper bound, no optimisation).
    condition : one condition for all pairs (broadcast to the metric), or None.
    batch_size : pairs per L-BFGS problem (memory ``O(batch_size · n_points · d)``).
    max_iter, tol : of :func:`connecting_geodesic`.

    Returns ``D`` ``(n, m)`` on the inputs' device and dtype.  Cost: see the module docstring.
    """
    _check_metric_method(metric, method)
    if x.dim() != 2 or (y is not None and (y.dim() != 2 or y.shape[-1] != x.shape[-1])):
        raise ValueError(f"x and y must have shapes (n, d) and (m, d), got {tuple(x.shape)} and {None if y is None else tuple(y.shape)}")
    if n_points < 3:
        raise ValueError(f"n_points must be >= 3, got {n_points}")
    sym = y is None
    n = x.shape[0]
    if sym:
        ii, jj = torch.triu_indices(n, n, offset=1, device=x.device)
        a, b = x[ii], x[jj]
        m = n
    else:
        m = y.shape[0]
        ii = torch.arange(n, device=x.device).repeat_interleave(m)
        jj = torch.arange(m, device=x.device).repeat(n)
        a, b = x[ii], y[jj]
    L = paired_metric_distances(metric, a, b, n_points, method=method, condition=condition, batch_size=batch_size,
                         max_iter=max_iter, tol=tol)
    if sym:
        D = torch.zeros((n, m), dtype=L.dtype, device=L.device).index_put((ii, jj), L).index_put((jj, ii), L)
    else:
        D = L.reshape(n, m)
    return D


def paired_metric_distances(
    metric,
    a: torch.Tensor,
    b: torch.Tensor,
    n_points: int = 16,
    *,
    method: str = "geodesic",
    condition=None,
    batch_size: int = 1024,
    max_iter: int = 200,
    tol: float | None = None,
):
    r"""Geodesic distances ``dist_G(aₖ, bₖ)`` between matching rows of ``a`` and ``b`` ``(P, d)``, shape ``(P,)``.

    The per-pair solver behind :func:`metric_distances` (same arguments and
    cost, ``P`` pairs); the losses use it for the few critical edges of a
    persistence pairing.
    """
    _check_metric_method(metric, method)
    P = a.shape[0]
    lengths = []
    t = torch.linspace(0, 1, n_points, dtype=a.dtype, device=a.device)
    for s in range(0, P, batch_size):
        za, zb = a[s : s + batch_size], b[s : s + batch_size]
        if method == "straight":
            curve = za.unsqueeze(-2) + t[:, None] * (zb - za).unsqueeze(-2)
            lengths.append(curve_length(metric, curve, condition=condition))
        else:
            res = connecting_geodesic(metric, za, zb, n_points, condition=condition, max_iter=max_iter, tol=tol)
            lengths.append(res.length)
    return torch.cat(lengths) if lengths else a.new_zeros((0,))
