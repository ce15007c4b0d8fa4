r"""Plots for manifold posteriors and latent spaces (matplotlib, Agg-safe).

Every function draws on ``ax`` (created when ``None``), returns the axes, and
with ``path=`` saves the figure as a PNG.

* MCMC: :func:`plot_trace`, :func:`plot_rank` (Vehtari et al. 2021 rank plots),
  :func:`plot_energy` (Betancourt 2017, "A conceptual introduction to
  Hamiltonian Monte Carlo", §6.1): thin wrappers over arviz's plots that accept
  what :func:`~dlmppl.diagnostics.to_inference_data` returns.
* :func:`plot_sphere`: points on S² in Lambert's azimuthal equal-area
  projection (the whole sphere onto a disk of radius 2, areas preserved:
  ``(X, Y) = sqrt(2 / (1 + z)) (x, y)``; Snyder 1987, "Map projections: a
  working manual", USGS 1395, §24) or in 3-D.
* :func:`plot_poincare_disk`: 2-D hyperbolic points with geodesics drawn as
  arcs of circles orthogonal to the boundary (Cannon, Floyd, Kenyon & Parry
  1997, "Hyperbolic geometry", §7).
* :func:`plot_elbo`: the loss curve of SVI with a moving average.
* :func:`plot_latent_interpolation`: geodesic interpolations drawn in a 2-D
  latent space (Euclidean, κ-stereographic / Poincaré disk, or S² through
  the equal-area projection), optionally with the decoded path.
* :func:`plot_sbc`: simulation-based calibration ranks as ECDF differences with
  simultaneous bands (Säilynoja, Bürkner & Vehtari 2022), one panel per test
  quantity.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import numpy as np
import torch

from . import _compat

__all__ = [
    "plot_trace",
    "plot_rank",
    "plot_energy",
    "lambert_equal_area",
    "plot_sphere",
    "poincare_geodesic_arc",
    "plot_poincare_disk",
    "plot_elbo",
    "plot_latent_interpolation",
    "plot_sbc",
]


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _figure_of(axes):
    if isinstance(axes, np.ndarray):
        axes = axes.ravel()[0]
    return axes.figure if hasattr(axes, "figure") else plt.gcf()


def _finish(axes, path):
    if path is not None:
        if hasattr(axes, "savefig") and not hasattr(axes, "figure"):  # arviz 1.x PlotCollection
            axes.savefig(str(path))
        else:
            fig = _figure_of(axes)
            fig.savefig(str(path), dpi=110, bbox_inches="tight")
    return axes


def _new_ax(ax, figsize=(5, 5), projection=None):
    if ax is not None:
        return ax
    fig = plt.figure(figsize=figsize)
    return fig.add_subplot(111, projection=projection)


# --------------------------------------------------------------------------- arviz wrappers


def _as_idata(data):
    if hasattr(data, "get_samples") and hasattr(data, "kernel"):
        from .convert import to_inference_data

        return to_inference_data(data, log_likelihood=False)
    if isinstance(data, dict):
        from .convert import to_inference_data

        return to_inference_data(data)
    return data


def plot_trace(data, var_names=None, path=None, **kwargs):
    """arviz trace plot (density and trace per variable/component) of an MCMC run or InferenceData.

    ``az.plot_trace`` under arviz 0.x, ``az.plot_trace_dist`` under 1.x; matplotlib ``axes=``
    of shape ``(n_vars, 2)`` work under both (see :func:`._compat.plot_trace`).
    """
    idata = _as_idata(data)
    return _finish(_compat.plot_trace(idata, var_names=var_names, **kwargs), path)


def plot_rank(data, var_names=None, path=None, **kwargs):
    """arviz rank plot (histograms of pooled ranks per chain; flat when chains mix)."""
    idata = _as_idata(data)
    return _finish(_compat.az.plot_rank(idata, var_names=var_names, **kwargs), path)


def plot_energy(data, path=None, **kwargs):
    """arviz energy plot (marginal energy vs energy transitions); needs ``sample_stats.energy``."""
    idata = _as_idata(data)
    if "sample_stats" not in _compat.group_names(idata) or "energy" not in _compat.get_group(idata, "sample_stats"):
        raise ValueError("plot_energy: the data have no sample_stats.energy (Pyro's own kernels do not report it)")
    return _finish(_compat.az.plot_energy(idata, **kwargs), path)


# --------------------------------------------------------------------------- sphere


def _frame(center):
    c = np.asarray(center, dtype=np.float64)
    c = c / np.linalg.norm(c)
    a = np.eye(3)[np.argmin(np.abs(c))]
    e1 = a - (a @ c) * c
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(c, e1)
    return c, e1, e2


def lambert_equal_area(points, center=(0.0, 0.0, 1.0)):
    """Lambert azimuthal equal-area projection of unit vectors ``(N, 3)`` → ``(N, 2)``.

    Centred at ``center``: a point at angle θ from it lands at radius
    ``2 sin(θ/2)``; the whole sphere maps onto the disk of radius 2 (its
    antipode onto the boundary), the hemisphere around ``center`` onto radius √2.
    """
    x = _np(points)
    if x.shape[-1] != 3:
        raise ValueError(f"lambert_equal_area: points must have shape (N, 3), got {x.shape}")
    c, e1, e2 = _frame(center)
    z = np.clip(x @ c, -1.0, 1.0)
    f = np.sqrt(2.0 / np.maximum(1.0 + z, 1e-12))
    f = np.where(1.0 + z > 1e-12, f, 0.0)
    out = np.stack([f * (x @ e1), f * (x @ e2)], -1)
    # the antipode (z = -1): put it on the boundary circle
    anti = 1.0 + z <= 1e-12
    if anti.any():
        out[anti] = [2.0, 0.0]
    return out


def _as_sets(points):
    if isinstance(points, (list, tuple)):
        return [_np(p).reshape(-1, _np(p).shape[-1]) for p in points]
    p = _np(points)
    return [p.reshape(-1, p.shape[-1])]


def plot_sphere(
    points,
    *,
    projection: str = "equal-area",
    center=(0.0, 0.0, 1.0),
    ax=None,
    labels=None,
    colors=None,
    s: float = 8.0,
    alpha: float = 0.6,
    markers=None,
    cmap=None,
    colorbar: bool | None = None,
    colorbar_label: str | None = None,
    title: str | None = None,
    path=None,
    **scatter_kwargs,
):
    """Points on the unit sphere S².

    Parameters
    ----------
    points : array ``(N, 3)`` or a list of such arrays (one colour each)
    projection : ``"equal-area"`` (Lambert azimuthal, centred at ``center``)
        or ``"3d"``.
    labels : list of str, optional
        Legend entries, one per set of points.
    colors : list, optional
        One matplotlib colour per set, or per-point values ``(N,)`` of a set,
        drawn with ``cmap`` and explained by a colourbar titled ``colorbar_label``.
    colorbar : draw that colourbar; default: when the function makes its own figure
        (``ax=None``), not on a caller's axes (a grid of panels shares one colourbar).
    s, markers : a marker size / matplotlib marker for all sets, or a list with one per
        set (e.g. a large ``"*"`` for a single true value among draws).
    """
    colorbar = ax is None if colorbar is None else colorbar
    sets = _as_sets(points)
    for p in sets:
        if p.shape[-1] != 3:
            raise ValueError(f"plot_sphere: points must be (N, 3) unit vectors, got {p.shape}")
    labels = list(labels) if labels is not None else [None] * len(sets)
    colors = list(colors) if colors is not None else [None] * len(sets)
    sizes = list(s) if isinstance(s, (list, tuple)) else [s] * len(sets)
    markers = list(markers) if isinstance(markers, (list, tuple)) else [markers] * len(sets)
    if len(labels) != len(sets) or len(colors) != len(sets) or len(sizes) != len(sets) or len(markers) != len(sets):
        raise ValueError(f"plot_sphere: give one label, colour, size and marker per set of points ({len(sets)} sets)")
    values = [_per_point_values(col, len(p)) for p, col in zip(sets, colors, strict=True)]
    if projection not in ("equal-area", "3d"):
        raise ValueError(f"plot_sphere: projection must be 'equal-area' or '3d', got {projection!r}")
    flat = projection == "equal-area"
    ax = _new_ax(ax, projection=None if flat else "3d")
    if flat:
        t = np.linspace(0, 2 * np.pi, 361)
        ax.plot(2 * np.cos(t), 2 * np.sin(t), color="0.3", lw=1.0)
        ax.plot(math.sqrt(2) * np.cos(t), math.sqrt(2) * np.sin(t), color="0.6", lw=0.8, ls="--")
        for theta in (np.pi / 6, np.pi / 3, 2 * np.pi / 3, 5 * np.pi / 6):  # parallels every 30°
            r = 2 * np.sin(theta / 2)
            ax.plot(r * np.cos(t), r * np.sin(t), color="0.85", lw=0.6)
    else:
        u, v = np.mgrid[0 : 2 * np.pi : 37j, 0 : np.pi : 19j]
        ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.8", lw=0.4)
    mappable = None
    for p, lab, col, val, sz, mk in zip(sets, labels, colors, values, sizes, markers, strict=True):
        coords = lambert_equal_area(p, center) if flat else p
        sc = ax.scatter(*coords.T, s=sz, alpha=alpha, label=lab, c=col if val is None else val,
                        marker=mk, cmap=cmap if val is not None else None, **scatter_kwargs)
        mappable = sc if val is not None else mappable
    if flat:
        ax.set_aspect("equal")
        ax.set_xlim(-2.1, 2.1)
        ax.set_ylim(-2.1, 2.1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0, -2.05, "antipode of the centre on the rim; dashed: its great circle", ha="center", va="top", fontsize=7)
    else:
        ax.set_box_aspect((1, 1, 1))
        # three ticks per axis, small, pushed off the axes: the default ones overlap at the corners
        for set_ticks in (ax.set_xticks, ax.set_yticks, ax.set_zticks):
            set_ticks([-1.0, 0.0, 1.0])
        ax.tick_params(labelsize=7, pad=1)
        ax.set_xlabel("x", labelpad=2)
        ax.set_ylabel("y", labelpad=2)
        ax.set_zlabel("z", labelpad=2)
    if mappable is not None and colorbar:
        ax.figure.colorbar(mappable, ax=ax, shrink=0.75, pad=0.08 if projection == "3d" else 0.03,
                           label=colorbar_label)
    if any(lab is not None for lab in labels):
        ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(ax, path)


def _per_point_values(col, n):
    """``col`` as per-point numbers ``(n,)`` for a colour map, or ``None`` when it is a colour."""
    if col is None or isinstance(col, str):
        return None
    a = np.asarray(col)
    if a.ndim != 1 or a.shape[0] != n or not np.issubdtype(a.dtype, np.number):
        return None
    if n in (3, 4) and a.min() >= 0 and a.max() <= 1:
        return None  # as matplotlib reads it: one RGB(A) colour
    return a


# --------------------------------------------------------------------------- Poincaré disk


def poincare_geodesic_arc(p, q, num: int = 64, c: float = 1.0):
    """Hyperbolic geodesic from ``p`` to ``q`` in the Poincaré disk of curvature ``-c``.

    Returns ``num`` points ``(num, 2)`` on the arc of the circle through ``p``
    and ``q`` orthogonal to the boundary ``|x| = 1/√c`` (its centre ``m``
    solves ``2⟨m, p⟩ = |p|² + 1``, ``2⟨m, q⟩ = |q|² + 1`` in the unit disk,
    radius ``sqrt(|m|² - 1)``), or on the straight segment when ``p``, ``q`` and
    the origin are collinear.
    """
    sc = math.sqrt(c)
    p = _np(p).reshape(2) * sc
    q = _np(q).reshape(2) * sc
    A = np.stack([p, q])
    det = p[0] * q[1] - p[1] * q[0]
    if abs(det) < 1e-9 * max(1.0, np.linalg.norm(p) * np.linalg.norm(q)):
        t = np.linspace(0.0, 1.0, num)[:, None]
        return ((1 - t) * p + t * q) / sc
    m = np.linalg.solve(2 * A, np.array([p @ p + 1.0, q @ q + 1.0]))
    r = math.sqrt(max(m @ m - 1.0, 0.0))
    a0 = math.atan2(p[1] - m[1], p[0] - m[0])
    a1 = math.atan2(q[1] - m[1], q[0] - m[0])
    da = (a1 - a0 + math.pi) % (2 * math.pi) - math.pi  # the short arc lies inside the disk
    ang = a0 + da * np.linspace(0.0, 1.0, num)
    return np.stack([m[0] + r * np.cos(ang), m[1] + r * np.sin(ang)], -1) / sc


def plot_poincare_disk(
    points=None,
    *,
    c: float = 1.0,
    geodesics=None,
    edges=None,
    ax=None,
    colors=None,
    labels=None,
    s: float = 10.0,
    alpha: float = 0.8,
    edge_color="0.5",
    legend_title: str | None = None,
    cmap=None,
    colorbar: bool | None = None,
    colorbar_label: str | None = None,
    title: str | None = None,
    path=None,
    **scatter_kwargs,
):
    """2-D hyperbolic latents in the Poincaré disk of curvature ``-c`` (radius ``1/√c``).

    Parameters
    ----------
    points : array ``(N, 2)``, optional
    geodesics : sequence of ``(p, q)`` pairs (or array ``(K, 2, 2)``), optional
        Geodesic segments to draw.
    edges : sequence of ``(i, j)`` index pairs into ``points``, optional
        Drawn as geodesic segments (e.g. a tree's edges).
    colors : per-point colours, or per-point values ``(N,)`` drawn with ``cmap`` and
        explained by a colourbar titled ``colorbar_label``.
    labels : per-point ints (classes, tree depths) when ``colors`` is not given: a
        legend (at most 12 classes, else a colourbar) titled ``legend_title``.
    colorbar : draw the colourbar of per-point values; default: when the function makes
        its own figure (``ax=None``), not on a caller's axes.
    """
    colorbar = ax is None if colorbar is None else colorbar
    ax = _new_ax(ax)
    R = 1.0 / math.sqrt(c)
    t = np.linspace(0, 2 * np.pi, 361)
    ax.plot(R * np.cos(t), R * np.sin(t), color="0.2", lw=1.0)
    pts = _np(points).reshape(-1, 2) if points is not None else np.zeros((0, 2))
    segs = []
    if edges is not None:
        segs += [(pts[i], pts[j]) for i, j in edges]
    if geodesics is not None:
        segs += [(_np(a), _np(b)) for a, b in geodesics]
    for a, b in segs:
        arc = poincare_geodesic_arc(a, b, c=c)
        ax.plot(arc[:, 0], arc[:, 1], color=edge_color, lw=0.8, zorder=1)
    if len(pts):
        col = colors if colors is not None else (labels if labels is not None else None)
        values = _per_point_values(colors, len(pts)) if colors is not None else None
        sc = ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, c=col, zorder=2,
                        cmap=cmap if (values is not None or colors is None and labels is not None) else None,
                        **scatter_kwargs)
        if labels is not None and colors is None:
            handles, names = sc.legend_elements()
            if len(handles) <= 12:
                ax.legend(handles, names, loc="upper right", fontsize=7, title=legend_title, title_fontsize=7)
            elif colorbar:
                ax.figure.colorbar(sc, ax=ax, shrink=0.75, pad=0.03, label=legend_title)
        elif values is not None and colorbar:
            ax.figure.colorbar(sc, ax=ax, shrink=0.75, pad=0.03, label=colorbar_label)
    ax.set_aspect("equal")
    ax.set_xlim(-1.05 * R, 1.05 * R)
    ax.set_ylim(-1.05 * R, 1.05 * R)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return _finish(ax, path)


# --------------------------------------------------------------------------- ELBO


def plot_elbo(losses, *, ax=None, window: int | None = None, log_scale: bool | None = None, title=None,
              ylabel: str = "loss (−ELBO)", xlabel: str = "step", path=None):
    """SVI loss (−ELBO) per step, with a moving average over ``window`` steps.

    ``log_scale`` defaults to a log y-axis when all losses are positive and
    span more than two decades.  ``ylabel`` names another curve (a Wasserstein
    or topological loss drawn with the same smoothing).
    """
    y = _np(losses).reshape(-1)
    if y.size == 0:
        raise ValueError("plot_elbo: losses is empty")
    ax = _new_ax(ax, figsize=(6, 3.5))
    steps = np.arange(1, y.size + 1)
    ax.plot(steps, y, color="C0", alpha=0.35, lw=0.8, label="loss")
    window = window or max(1, y.size // 20)
    if window > 1 and y.size >= window:
        ma = np.convolve(y, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], ma, color="C0", lw=1.6, label=f"moving average ({window})")
    if log_scale is None:
        log_scale = bool((y > 0).all() and y.max() / y.min() > 100)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(ax, path)


# --------------------------------------------------------------------------- latent interpolation


def _interpolate(manifold, x, y, n):

    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if manifold is None:
        t = torch.linspace(0, 1, n, dtype=x.dtype)[:, None]
        return (1 - t) * x + t * y
    from ..geometry import geodesics as _geo

    return _geo.interpolate(manifold, x, y, n)


def _chart_radius(manifold) -> float:
    """Radius of the disk a 2-D chart of ``manifold`` lives in (the Poincaré ball's boundary), else ``inf``."""
    from ..geometry import geometry_of

    g = geometry_of(manifold)
    return float(g.chart_radius()) if hasattr(g, "chart_radius") else math.inf


def plot_latent_interpolation(
    latents,
    pairs,
    *,
    manifold=None,
    num_points: int = 9,
    labels=None,
    decoder=None,
    image_shape=None,
    ax=None,
    title: str | None = None,
    path=None,
):
    """Geodesic interpolations drawn in a 2-D latent space.

    Parameters
    ----------
    latents : array ``(N, 2)`` (or ``(N, 3)`` on S², shown in the equal-area projection)
        Background points (e.g. encoded data), coloured by ``labels``.
    pairs : sequence of ``(a, b)``
        Endpoints, either index pairs into ``latents`` or points.
    manifold : the latent manifold: ``None``/Euclidean (straight lines),
        κ-stereographic / Poincaré ball (κ-geodesics, boundary drawn for κ < 0),
        or the sphere (great circles).  Uses ``dlmppl.geometry.geodesics``.
    num_points : markers along each path (the decoded images, with ``decoder``).
    decoder : callable, optional
        Maps latents ``(num_points, D)`` to images ``(num_points, H, W)`` (or
        flat, with ``image_shape``); adds one strip of images per pair below
        the latent plot.

    Returns
    -------
    the latent axes, or an array ``[latent_ax, strip axes...]`` with a decoder.
    """
    from .. import manifolds as _m

    Z = _np(latents)
    dim = Z.shape[-1]
    if dim not in (2, 3):
        raise ValueError(f"plot_latent_interpolation: latents must be 2-D (or points on S²), got dim {dim}")
    sphere = dim == 3
    if sphere and manifold is None:
        manifold = _m.Sphere()
    proj = (lambda p: lambert_equal_area(p)) if sphere else (lambda p: _np(p))
    ends = []
    for a, b in pairs:
        if isinstance(a, (int, np.integer)):
            ends.append((Z[a], Z[b]))
        else:
            ends.append((_np(a), _np(b)))
    paths = [_interpolate(manifold, a, b, num_points).numpy() for a, b in ends]
    fine = [_interpolate(manifold, a, b, 64).numpy() for a, b in ends]

    if decoder is not None:
        fig = plt.figure(figsize=(max(6, 0.7 * num_points), 5 + 0.8 * len(ends)))
        gs = fig.add_gridspec(1 + len(ends), num_points, height_ratios=[5] + [0.8] * len(ends))
        ax = fig.add_subplot(gs[0, :])
    else:
        ax = _new_ax(ax)
    if sphere:
        t = np.linspace(0, 2 * np.pi, 361)
        ax.plot(2 * np.cos(t), 2 * np.sin(t), color="0.3", lw=1.0)
    elif manifold is not None and math.isfinite(R := _chart_radius(manifold)):
        t = np.linspace(0, 2 * np.pi, 361)
        ax.plot(R * np.cos(t), R * np.sin(t), color="0.3", lw=1.0)
    bg = proj(Z)
    sc = ax.scatter(bg[:, 0], bg[:, 1], c=labels, s=6, alpha=0.5, cmap="tab10" if labels is not None else None)
    if labels is not None:
        handles, names = sc.legend_elements()
        if len(handles) <= 12:
            ax.legend(handles, names, loc="upper right", fontsize=7)
    for i, (pth, fp) in enumerate(zip(paths, fine, strict=True)):
        pp, ff = proj(pth), proj(fp)
        ax.plot(ff[:, 0], ff[:, 1], color=f"C{i % 10}", lw=1.4)
        ax.scatter(pp[:, 0], pp[:, 1], color=f"C{i % 10}", s=18, edgecolor="k", lw=0.4, zorder=3)
        ax.scatter(pp[[0, -1], 0], pp[[0, -1], 1], color=f"C{i % 10}", marker="*", s=120, edgecolor="k", zorder=4)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    if decoder is None:
        return _finish(ax, path)
    axes = [ax]
    for i, pth in enumerate(paths):
        with torch.no_grad():
            imgs = decoder(torch.as_tensor(pth, dtype=torch.get_default_dtype()))
        imgs = _np(imgs)
        if image_shape is not None:
            imgs = imgs.reshape((num_points,) + tuple(image_shape))
        for j in range(num_points):
            a = fig.add_subplot(gs[1 + i, j])
            a.imshow(imgs[j], cmap="gray")
            a.set_xticks([])
            a.set_yticks([])
            axes.append(a)
    axes = np.asarray(axes, dtype=object)
    return _finish(axes, path)


# --------------------------------------------------------------------------- SBC


def plot_sbc(
    result,
    *,
    quantities=None,
    alpha: float = 0.05,
    ncols: int | None = None,
    panel_size=(3.0, 2.4),
    axes=None,
    title: str | None = None,
    path=None,
):
    """ECDF-difference plots of simulation-based calibration ranks with simultaneous bands.

    For each test quantity of ``result`` (a :class:`~dlmppl.diagnostics.sbc.SBCResult`),
    the empirical CDF ``F̂(z)`` of the fractional ranks minus the uniform CDF ``z``,
    at ``z_j = t_j / (L + 1)`` (``F̂(z_j) = #{r < t_j} / N``), with the band that
    uniform ranks leave *anywhere* with probability ``alpha``
    (:func:`~dlmppl.diagnostics.sbc.ecdf_band`; Säilynoja, Bürkner & Vehtari 2022,
    Statistics and Computing 32).  A curve leaving the band is a failed
    calibration at level ``alpha`` (the panel title gives the ECDF test's
    p-value).  Reading the curve (Talts et al. 2018; Säilynoja et al. 2022):
    above zero throughout, ranks too low (posterior draws too large); below
    zero, draws too small; above then below (ranks piled at both ends, a ∪
    histogram), draws too narrow; below then above (a ∩ histogram), too wide.

    Parameters
    ----------
    quantities : list of str, optional
        Which quantities (default: all, in ``result.quantities`` order).
    ncols : panels per row (default ``min(4, Q)``).
    axes : array of matplotlib axes with at least ``Q`` entries, optional.

    Returns
    -------
    ``numpy.ndarray`` of the axes used, shape ``(Q,)``.
    """
    from .sbc import ecdf_band, ecdf_uniformity_test

    names = list(result.quantities if quantities is None else quantities)
    unknown = [q for q in names if q not in result.ranks]
    if unknown:
        raise ValueError(f"plot_sbc: quantities {unknown} not in the result ({result.quantities})")
    if not names:
        raise ValueError("plot_sbc: no quantities to plot")
    L, n = result.num_draws, result.num_simulations
    z, lower, upper = ecdf_band(n, L, alpha)
    t = np.rint(z * (L + 1)).astype(np.int64)
    if axes is None:
        ncols = ncols or min(4, len(names))
        nrows = math.ceil(len(names) / ncols)
        fig, axs = plt.subplots(
            nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False, sharex=True
        )
        for a in axs.ravel()[len(names) :]:
            a.set_visible(False)
        axs = axs.ravel()[: len(names)]
    else:
        axs = np.asarray(axes, dtype=object).ravel()
        if axs.size < len(names):
            raise ValueError(f"plot_sbc: {len(names)} quantities need as many axes, got {axs.size}")
        axs = axs[: len(names)]
        fig = _figure_of(axs)
    zz = np.concatenate([[0.0], z, [1.0]])
    lo = np.concatenate([[0.0], lower - z, [0.0]])
    hi = np.concatenate([[0.0], upper - z, [0.0]])
    for ax, q in zip(axs, names, strict=True):
        r = np.sort(result.ranks[q])
        ecdf = np.searchsorted(r, t, side="left") / n
        diff = np.concatenate([[0.0], ecdf - z, [0.0]])
        inside = bool(np.all((ecdf >= lower - 1e-12) & (ecdf <= upper + 1e-12)))
        ax.fill_between(zz, lo, hi, color="0.85", label=f"{100 * (1 - alpha):g}% simultaneous band")
        ax.axhline(0.0, color="0.5", lw=0.6)
        ax.plot(zz, diff, color="C0" if inside else "C3", lw=1.4)
        p = ecdf_uniformity_test(result.ranks[q], L)
        ax.set_title(f"{q}  (p = {p:.2g})", fontsize=9)
        ax.tick_params(labelsize=7)
    for i, ax in enumerate(axs):
        if axes is not None or i + ncols >= len(names):  # our own grid: the bottom panel of each column
            ax.set_xlabel("fractional rank", fontsize=8)
    axs[0].set_ylabel("ECDF − uniform", fontsize=8)
    axs[0].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(axs, path)
