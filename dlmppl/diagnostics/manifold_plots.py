r"""Plots of manifold-valued sites in intrinsic coordinates: trace, rank and posterior predictive.

Ambient coordinates of a point on a manifold are neither independent nor
comparable (three coordinates of a point on S² for two degrees of freedom), and
a KDE of them pooled together means nothing.  These plots use what the
manifold-aware R-hat of :func:`~dlmppl.diagnostics.manifold_diagnostics` uses:
the Fréchet mean ``μ̂`` of the pooled draws, the tangent coordinates
``log_μ̂ x`` in an orthonormal basis of ``T_μ̂ M`` rotated to the principal
geodesic directions (Fletcher, Lu, Pizer & Joshi 2004, "Principal geodesic
analysis", IEEE TMI 23), and the geodesic distance ``d(μ̂, x)``.

* :func:`plot_trace_manifold`: per intrinsic coordinate, a density per chain
  and the trace per chain (arviz's ``plot_trace`` layout).
* :func:`plot_rank_manifold`: rank histograms per chain of the same
  coordinates (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, "Rank-
  normalization, folding, and localization", Bayesian Analysis 16): flat when
  the chains mix.
* :func:`plot_ppc_manifold` / :func:`ppc_geodesic_distances`: posterior (or prior)
  predictive check of manifold-valued observations: densities of the geodesic
  distance of observed and replicated points to the Fréchet mean of the
  observed points, and the points themselves on the sphere (equal-area
  projection), the Poincaré disk, or, for other manifolds, in the two leading
  principal tangent coordinates at that mean.
* :func:`plot_ppc`: :func:`plot_ppc_manifold` for a manifold-valued site,
  arviz's PPC plot otherwise.

Manifold-specific math comes from :func:`dlmppl.geometry.geometry_of`; the
manifold of a site from its ``attrs`` (written by
:func:`~dlmppl.diagnostics.to_inference_data`) or from ``manifolds=``.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from . import _compat
from .plots import _as_idata, _chart_radius, _finish, _np, plot_poincare_disk, plot_sphere

__all__ = [
    "manifold_trace_coordinates",
    "plot_trace_manifold",
    "plot_rank_manifold",
    "rank_histograms",
    "ppc_geodesic_distances",
    "plot_ppc_manifold",
    "plot_ppc",
]


def _site(idata, group, name, manifolds):
    from .convert import manifold_from_attrs

    if group not in _compat.group_names(idata):
        raise ValueError(f"the data have no {group} group (have {_compat.group_names(idata)})")
    ds = _compat.get_group(idata, group)
    if name not in ds.data_vars:
        raise ValueError(f"no site {name!r} in the {group} group (have {sorted(map(str, ds.data_vars))})")
    v = ds[name]
    M = (manifolds or {}).get(name) or manifold_from_attrs(dict(v.attrs))
    return np.asarray(v.values), M


def _manifold_names(idata, group, manifolds):
    from .convert import manifold_from_attrs

    ds = _compat.get_group(idata, group)
    return [
        str(k) for k, v in ds.data_vars.items()
        if (manifolds or {}).get(str(k)) is not None or manifold_from_attrs(dict(v.attrs)) is not None
    ]


def manifold_trace_coordinates(data, var_name: str, *, manifolds: dict | None = None, point=None) -> dict:
    """Intrinsic coordinates of the draws of a manifold site, as the manifold R-hat sees them.

    Parameters
    ----------
    data : InferenceData | DataTree | pyro.infer.MCMC | dict ``{site: (chain, draw, *shape)}``
    var_name : the site.
    manifolds : ``{site: manifold}``, else read from the posterior's ``attrs``.
    point : index tuple into the site's batch dims (a site of several points,
        e.g. ``(K, 3)`` mixture means); required when there is a batch.

    Returns
    -------
    dict: ``mean`` (Fréchet mean, ``event``), ``tangent`` ``(chain, draw, d)``
    (principal tangent coordinates at the mean), ``distance`` ``(chain, draw)``
    (geodesic distance to it), ``labels`` (``pc0 … pc{d-1}``, ``dist``), the
    ``manifold``, and the ``r_hat`` / ``ess_bulk`` arrays ``(d + 1,)`` of
    :func:`~dlmppl.diagnostics.manifold_diagnostics`.
    """
    from .stats import manifold_diagnostics

    idata = _as_idata(data)
    arr, M = _site(idata, "posterior", var_name, manifolds)
    if M is None:
        raise ValueError(f"site {var_name!r} has no manifold (pass manifolds={{{var_name!r}: M}})")
    nb = arr.ndim - 2 - M.ndim
    if nb < 0:
        raise ValueError(f"site {var_name!r} of shape {arr.shape[2:]} is not a point of {type(M).__name__}")
    if nb > 0:
        if point is None:
            raise ValueError(f"point: site {var_name!r} holds a batch {arr.shape[2:2 + nb]} of points; give point=(i, ...)")
        point = (point,) if isinstance(point, (int, np.integer)) else tuple(point)
        arr = arr[(slice(None), slice(None)) + point]
    diag = manifold_diagnostics(arr, M)
    out = {k: diag[k] for k in ("mean", "tangent", "distance", "r_hat", "ess_bulk")}
    return {**out, "labels": [f"pc{k}" for k in range(diag["tangent"].shape[-1])] + ["dist"], "manifold": M}


def _reflected_kde(x, grid):
    # Gaussian KDE (Scott's bandwidth) reflected at 0 for a nonnegative variable, a plain one otherwise
    from scipy.stats import gaussian_kde

    x = np.asarray(x, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return np.zeros_like(grid)
    kde = gaussian_kde(x)
    return kde(grid) + kde(-grid) if x.min() >= 0 else kde(grid)


def _sites_and_points(idata, var_names, manifolds):
    names = list(var_names) if var_names is not None else _manifold_names(idata, "posterior", manifolds)
    if not names:
        raise ValueError("var_names: no manifold-valued site in the posterior")
    out = []
    for name in names:
        arr, M = _site(idata, "posterior", name, manifolds)
        if M is None:
            raise ValueError(f"var_names: site {name!r} has no manifold (pass manifolds={{{name!r}: M}})")
        nb = arr.ndim - 2 - M.ndim
        for b in np.ndindex(*arr.shape[2 : 2 + nb]) if nb > 0 else [None]:
            out.append((name, b))
    return out


def _row_title(name, b, lab):
    return f"{name}{'' if b is None else list(b)}.{lab}"


def _coordinate_panels(data, var_names, manifolds, max_coords):
    """Per manifold point, ``(name, point, label, values (chain, draw), R-hat)`` of its ``max_coords``
    leading principal tangent coordinates and its distance to the Fréchet mean."""
    idata = _as_idata(data)
    panels = []
    for name, b in _sites_and_points(idata, var_names, manifolds):
        co = manifold_trace_coordinates(idata, name, manifolds=manifolds, point=b)
        vals = np.concatenate([co["tangent"], co["distance"][..., None]], -1)
        keep = list(range(min(max_coords, co["tangent"].shape[-1]))) + [vals.shape[-1] - 1]
        panels.append([(name, b, co["labels"][j], vals[..., j], co["r_hat"][j]) for j in keep])
    return panels


def plot_trace_manifold(data, var_names=None, *, manifolds: dict | None = None, max_coords: int = 3,
                        figsize=None, path=None):
    """Trace plot of manifold sites in intrinsic coordinates.

    One row per coordinate of each point: the ``max_coords`` leading principal
    tangent coordinates at the Fréchet mean, then the geodesic distance to it
    (see :func:`manifold_trace_coordinates`); left a density per chain, right
    the trace per chain, as arviz's ``plot_trace``.  Row titles give the
    coordinate's rank-normalised split R-hat.

    Returns
    -------
    ``numpy.ndarray`` of axes, shape ``(rows, 2)``.
    """
    rows = [row for point in _coordinate_panels(data, var_names, manifolds, max_coords) for row in point]
    fig, axes = plt.subplots(len(rows), 2, figsize=figsize or (9, 1.9 * len(rows)), squeeze=False)
    for (name, b, lab, v, rh), (ax_d, ax_t) in zip(rows, axes, strict=True):
        lo, hi = float(v.min()), float(v.max())
        pad = 0.05 * (hi - lo or 1.0)
        grid = np.linspace(max(lo - pad, 0.0) if lab == "dist" else lo - pad, hi + pad, 200)
        for ch in range(v.shape[0]):
            ax_d.plot(grid, _reflected_kde(v[ch], grid), color=f"C{ch % 10}", lw=1.0)
            ax_t.plot(np.arange(v.shape[1]), v[ch], color=f"C{ch % 10}", lw=0.6, alpha=0.8)
        title = _row_title(name, b, lab)
        rh_txt = f"R-hat {rh:.3f}" if np.isfinite(rh) else "one chain"
        ax_d.set_title(title + ("  (geodesic distance to the Fréchet mean)" if lab == "dist" else
                                "  (tangent coordinate at the Fréchet mean)"), fontsize=8)
        ax_t.set_title(f"{title}  ({rh_txt})", fontsize=8)
        ax_d.tick_params(labelsize=7)
        ax_t.tick_params(labelsize=7)
        ax_d.set_yticks([])
    axes[-1, 1].set_xlabel("draw", fontsize=8)
    fig.tight_layout()
    return _finish(axes, path)


def rank_histograms(values, bins: int = 20) -> np.ndarray:
    """Counts ``(chain, bins)`` of the pooled ranks of ``values`` ``(chain, draw)`` per chain.

    Ranks are taken over all chains together (ties averaged), scaled to
    ``[0, 1)`` and binned in ``bins`` equal bins: each count is
    ``draw / bins`` in expectation when the chains sample the same law.
    """
    from scipy.stats import rankdata

    v = np.asarray(values, dtype=np.float64)
    c, n = v.shape
    r = (rankdata(v.reshape(-1)).reshape(c, n) - 1) / (c * n)
    idx = np.minimum((r * bins).astype(int), bins - 1)
    return np.stack([np.bincount(idx[i], minlength=bins) for i in range(c)])


def plot_rank_manifold(data, var_names=None, *, manifolds: dict | None = None, max_coords: int = 3,
                       bins: int | None = None, figsize=None, path=None):
    """Rank plots of manifold sites in intrinsic coordinates (Vehtari et al. 2021).

    For each point, the ``max_coords`` leading principal tangent coordinates at
    the Fréchet mean and the geodesic distance to it: one panel per coordinate,
    one bar chart per chain of the pooled ranks (:func:`rank_histograms`),
    with the uniform count dashed.  Chains that have not mixed pile their ranks
    at one end.  ``bins`` defaults to ``draws / 10`` per chain, between 5 and 20.

    Returns
    -------
    ``numpy.ndarray`` of axes, shape ``(rows, coords + 1)``.
    """
    panels = _coordinate_panels(data, var_names, manifolds, max_coords)
    ncols = max(len(p) for p in panels)
    fig, axes = plt.subplots(len(panels), ncols, figsize=figsize or (3.0 * ncols, 2.6 * len(panels)), squeeze=False)
    for row, ps in zip(axes, panels, strict=True):
        for ax in row[len(ps):]:
            ax.set_visible(False)
        for ax, (name, b, lab, v, rh) in zip(row, ps, strict=False):
            nb = bins or int(min(20, max(5, v.shape[1] // 10)))
            counts = rank_histograms(v, nb)
            c = counts.shape[0]
            height = counts.max() * 1.1
            for ch in range(c):
                base = ch * height
                ax.bar(np.arange(nb), counts[ch], bottom=base, width=1.0, color=f"C{ch % 10}",
                       edgecolor="white", lw=0.3, align="edge")
                ax.axhline(base + v.shape[1] / nb, color="k", ls="--", lw=0.7)
            ax.set_yticks([ch * height for ch in range(c)], [f"chain {ch}" for ch in range(c)], fontsize=7)
            ax.set_xticks([0, nb], ["0", "1"], fontsize=7)
            rh_txt = f"R-hat {rh:.3f}" if np.isfinite(rh) else "one chain"
            ax.set_title(f"{_row_title(name, b, lab)}  ({rh_txt})", fontsize=8)
            ax.set_xlabel("pooled rank (fraction)", fontsize=7)
    fig.tight_layout()
    return _finish(axes, path)


# --------------------------------------------------------------------------- posterior predictive


def ppc_geodesic_distances(data, var_name: str | None = None, *, group: str = "posterior_predictive",
                           manifolds: dict | None = None, num_pp_samples: int | None = None) -> dict:
    """Geodesic distances of observed and replicated points to the observed Fréchet mean.

    Parameters
    ----------
    data : InferenceData | DataTree with ``observed_data`` and ``group``
        (``posterior_predictive`` or ``prior_predictive``, from
        :func:`~dlmppl.diagnostics.to_inference_data`).
    var_name : an observed site (default: the only manifold-valued one).
    num_pp_samples : use this many replicated draws, evenly spaced over the
        pooled (chain, draw) sequence (default: all).

    Returns
    -------
    dict: ``mean`` (Fréchet mean ``μ̂`` of the observed points, ``event``),
    ``observed`` ``(N,)`` = ``d(μ̂, y_i)``, ``replicated`` ``(S, N)`` =
    ``d(μ̂, ỹ_si)``, ``observed_points`` ``(N, *event)``, ``replicated_points``
    ``(S, N, *event)`` and the ``manifold``.  Observed and replicated points
    are measured from the same ``μ̂``, so a shift of the replicated points'
    centre shows as well as a wrong spread.
    """
    from ..geometry import geometry_of
    from .stats import frechet_mean

    if var_name is None:
        names = _manifold_names(data, "observed_data", manifolds) if "observed_data" in _compat.group_names(data) else []
        if len(names) != 1:
            raise ValueError(f"var_name: give the observed site to check (manifold-valued observed sites: {names})")
        var_name = names[0]
    y, M = _site(data, "observed_data", var_name, manifolds)
    rep, M2 = _site(data, group, var_name, manifolds)
    M = M or M2
    if M is None:
        raise ValueError(f"var_name: observed site {var_name!r} has no manifold (pass manifolds={{{var_name!r}: M}})")
    event = y.shape[y.ndim - M.ndim:]
    y = y.reshape((-1,) + event)
    if y.shape[0] == 0:
        raise ValueError(f"var_name: observed site {var_name!r} has no points")
    rep = rep.reshape((-1,) + y.shape)  # (chain * draw, N, *event)
    if num_pp_samples is not None:
        if num_pp_samples < 1:
            raise ValueError(f"num_pp_samples must be >= 1, got {num_pp_samples}")
        idx = np.unique(np.linspace(0, rep.shape[0] - 1, min(num_pp_samples, rep.shape[0])).round().astype(int))
        rep = rep[idx]
    g = geometry_of(M)
    yt = torch.as_tensor(y, dtype=torch.float64)
    rt = torch.as_tensor(rep, dtype=torch.float64)
    with torch.no_grad():
        mu = frechet_mean(yt, M)
        d_obs = g.dist(mu.expand_as(yt), yt)
        d_rep = g.dist(mu.expand_as(rt), rt)
    return {
        "mean": mu, "observed": d_obs.numpy(), "replicated": d_rep.numpy(),
        "observed_points": y, "replicated_points": rep, "manifold": M,
    }


def plot_ppc_manifold(data, var_name: str | None = None, *, group: str = "posterior_predictive",
                      manifolds: dict | None = None, num_pp_samples: int = 50, axes=None,
                      figsize=(10, 4.4), path=None):
    """Posterior (or prior) predictive check of manifold-valued observations.

    Left: the density of the geodesic distance ``d(μ̂, y)`` of the observed
    points to their Fréchet mean ``μ̂`` (black), over one density per
    replicated data set (``num_pp_samples`` of them, thin) and their pooled
    density (dashed), computed by :func:`ppc_geodesic_distances`.  Right: the
    observed points over the points of one replicated data set: on S² in the
    equal-area projection centred at ``μ̂`` (:func:`plot_sphere`), on a 2-D
    Poincaré ball in the disk (:func:`plot_poincare_disk`), on any other
    manifold in the two leading principal tangent coordinates at ``μ̂``.

    Returns
    -------
    ``numpy.ndarray`` of the two axes.
    """
    from ..geometry import geometry_of
    from .stats import tangent_coordinates

    idata = _as_idata(data)
    r = ppc_geodesic_distances(idata, var_name, group=group, manifolds=manifolds, num_pp_samples=num_pp_samples)
    M, mu = r["manifold"], r["mean"]
    g = geometry_of(M)
    event = r["observed_points"].shape[1:]
    sphere = g.name == "Sphere" and event == (3,)
    R = _chart_radius(M) if event == (2,) else math.inf
    if axes is None:
        fig = plt.figure(figsize=figsize)
        ax_d = fig.add_subplot(1, 2, 1)
        ax_p = fig.add_subplot(1, 2, 2)
    else:
        ax_d, ax_p = np.asarray(axes, dtype=object).ravel()[:2]
        fig = ax_d.figure
    d_obs, d_rep = r["observed"], r["replicated"]
    hi = float(max(d_obs.max(), d_rep.max()))
    grid = np.linspace(0.0, 1.05 * hi if hi > 0 else 1.0, 256)
    kind = "prior" if group == "prior_predictive" else "posterior"
    for s in range(d_rep.shape[0]):
        ax_d.plot(grid, _reflected_kde(d_rep[s], grid), color="C0", alpha=0.15, lw=0.7,
                  label=f"replicated ({kind} predictive)" if s == 0 else None)
    ax_d.plot(grid, _reflected_kde(d_rep.reshape(-1), grid), color="C1", ls="--", lw=1.4, label=f"{kind} predictive, pooled")
    ax_d.plot(grid, _reflected_kde(d_obs, grid), color="k", lw=1.8, label="observed")
    ax_d.set_xlabel("geodesic distance to the observed Fréchet mean", fontsize=8)
    ax_d.set_ylabel("density", fontsize=8)
    ax_d.legend(fontsize=7)
    name = var_name or "observations"
    ax_d.set_title(f"{name}: distance to the Fréchet mean", fontsize=9)
    y, one = r["observed_points"], r["replicated_points"][-1]
    if sphere:
        plot_sphere([one, y], center=tuple(_np(mu)), labels=["one replicated data set", "observed"],
                    colors=["C0", "k"], ax=ax_p, s=8)
        ax_p.set_title(f"{name} on S² (equal-area, centred at the Fréchet mean)", fontsize=9)
    elif math.isfinite(R):
        plot_poincare_disk(np.concatenate([one, y]), c=1.0 / R**2, ax=ax_p, s=8,
                           colors=["C0"] * len(one) + ["k"] * len(y))
        ax_p.scatter([], [], color="C0", s=8, label="one replicated data set")
        ax_p.scatter([], [], color="k", s=8, label="observed")
        ax_p.legend(fontsize=7, loc="upper right")
        ax_p.set_title(f"{name} in the Poincaré disk", fontsize=9)
    else:
        with torch.no_grad():
            Ty = tangent_coordinates(torch.as_tensor(y, dtype=torch.float64), M, mu).numpy()
            To = tangent_coordinates(torch.as_tensor(one, dtype=torch.float64), M, mu).numpy()
        if Ty.shape[1] > 1:
            _, U = np.linalg.eigh(np.cov(Ty, rowvar=False))
            Ty, To = Ty @ U[:, ::-1], To @ U[:, ::-1]
        else:
            Ty, To = np.concatenate([Ty, np.zeros_like(Ty)], 1), np.concatenate([To, np.zeros_like(To)], 1)
        ax_p.scatter(To[:, 0], To[:, 1], s=8, color="C0", alpha=0.6, label="one replicated data set")
        ax_p.scatter(Ty[:, 0], Ty[:, 1], s=8, color="k", alpha=0.6, label="observed")
        ax_p.set_xlabel("pc0 (tangent at the Fréchet mean)", fontsize=8)
        ax_p.set_ylabel("pc1", fontsize=8)
        ax_p.legend(fontsize=7)
        ax_p.set_title(f"{name}: principal tangent coordinates", fontsize=9)
    fig.tight_layout()
    return _finish(np.array([ax_d, ax_p], dtype=object), path)


def plot_ppc(data, var_names=None, *, group: str = "posterior", manifolds: dict | None = None, path=None, **kwargs):
    """Posterior (``group="posterior"``) or prior predictive check of the observed sites.

    A manifold-valued site (``attrs["manifold"]`` on its observed data, or
    ``manifolds=``) gets :func:`plot_ppc_manifold`; otherwise the call is
    arviz's ``plot_ppc`` (``plot_ppc_dist`` in arviz 1.x) with ``kwargs``.
    Returns what the underlying plot returns (a list of them for several manifold sites).
    """
    idata = _as_idata(data)
    if group not in ("posterior", "prior"):
        raise ValueError(f"group must be 'posterior' or 'prior', got {group!r}")
    names = [var_names] if isinstance(var_names, str) else var_names
    man = _manifold_names(idata, "observed_data", manifolds) if "observed_data" in _compat.group_names(idata) else []
    todo = [n for n in (names or man) if n in man]
    if todo:
        if names is not None and len(todo) != len(names):
            raise ValueError(f"var_names: mix of manifold ({todo}) and Euclidean sites; plot them separately")
        out = [plot_ppc_manifold(idata, n, group=f"{group}_predictive", manifolds=manifolds,
                                 path=path if len(todo) == 1 else None, **kwargs) for n in todo]
        return out[0] if len(out) == 1 else out
    az = _compat.az
    fn = getattr(az, "plot_ppc", None) or az.plot_ppc_dist
    if getattr(az, "plot_ppc", None) is not None:
        kwargs.setdefault("group", group)
    return _finish(fn(idata, var_names=names, **kwargs), path)
