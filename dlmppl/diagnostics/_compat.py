"""Thin compatibility layer over arviz 0.2x and arviz 1.x.

arviz 0.x: ``from_dict(posterior=..., sample_stats=..., ...)`` returns an
``InferenceData``; arviz 1.x (arviz-base): ``from_dict({"posterior": {...}, ...})``
returns an ``xarray.DataTree``.  Both expose groups as ``obj["posterior"]`` /
``obj.posterior`` and write netCDF with ``to_netcdf`` (through h5netcdf, which since
1.8 needs ``h5py`` named as a dependency of its own).  Differences handled here:

* PSIS: ``az.psislw`` in 0.x, ``arviz_stats``'s array interface in 1.x (:func:`psislw`);
* PSIS-LOO: ``az.loo`` returns a pandas Series (``["elpd_loo"]``, ``["p_loo"]``) in 0.x and
  an ``ELPDData`` dataclass (``.elpd``, ``.p``) in 1.x (:func:`loo`);
* trace plots: ``az.plot_trace`` draws density and trace panels in 0.x, while in 1.x
  (arviz-plots) ``plot_trace`` draws traces only, ``plot_trace_dist`` both, and
  neither takes matplotlib ``axes=`` (:func:`plot_trace`);
* the figure behind a plot's return value: axes in 0.x, a ``PlotCollection`` in 1.x
  (:func:`figure_of`).

Everything in :mod:`dlmppl.diagnostics` goes through the helpers below.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

with warnings.catch_warnings():
    # arviz 0.2x warns about its own refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = [
    "az", "ARVIZ_1", "from_dict", "group_names", "get_group", "set_var_attrs", "rhat_ess", "from_netcdf", "psislw",
    "loo", "plot_trace", "figure_of",
]

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1
_GROUP_KEYWORDS = "posterior" in inspect.signature(az.from_dict).parameters


def from_dict(groups: dict, *, coords=None, dims=None, attrs=None):
    """``az.from_dict`` for a ``{group: {var: array}}`` mapping under either arviz API."""
    groups = {g: v for g, v in groups.items() if v}
    if _GROUP_KEYWORDS:
        return az.from_dict(**groups, coords=coords, dims=dims, attrs=attrs)
    return az.from_dict(groups, coords=coords, dims=dims, attrs=attrs)


def group_names(idata) -> list[str]:
    if hasattr(idata, "groups") and callable(idata.groups):
        return list(idata.groups())
    return [str(k).strip("/") for k in idata.children]  # xarray.DataTree


def get_group(idata, name):
    """The group ``name`` as an ``xarray.Dataset`` (works for InferenceData and DataTree)."""
    g = idata[name]
    return g.to_dataset() if hasattr(g, "children") else g  # DataTree node -> Dataset


def set_var_attrs(idata, group: str, var: str, attrs: dict) -> None:
    """Set attributes on a variable of a group, persistently under both APIs."""
    node = idata[group]
    node[var].attrs.update(attrs)
    if all(node[var].attrs.get(k) == v for k, v in attrs.items()):
        return
    ds = get_group(idata, group).copy()  # DataTree nodes may hand out copies
    ds[var].attrs.update(attrs)
    idata[group] = type(node)(ds)


def from_netcdf(path):
    """Read back what ``to_netcdf`` wrote (``az.from_netcdf`` in 0.x, ``open_datatree`` in 1.x)."""
    if hasattr(az, "from_netcdf"):
        return az.from_netcdf(path)
    import xarray as xr

    return xr.open_datatree(path)


def rhat_ess(x: np.ndarray) -> dict[str, np.ndarray]:
    """Rank-normalised split R-hat and bulk/tail ESS of ``x`` of shape ``(chain, draw, K)``.

    Uses ``az.rhat`` / ``az.ess`` (Vehtari et al. 2021, "Rank-normalization,
    folding, and localization: an improved R-hat", Bayesian Analysis) on an
    ``xarray.Dataset``, which both arviz APIs accept.  Returns arrays of shape ``(K,)``.
    """
    import xarray as xr

    x = np.asarray(x, dtype=np.float64)
    ds = xr.Dataset({"x": (("chain", "draw", "k"), x)})
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["r_hat"] = np.asarray(az.rhat(ds, method="rank")["x"].values, dtype=float).reshape(-1)
        out["ess_bulk"] = np.asarray(az.ess(ds, method="bulk")["x"].values, dtype=float).reshape(-1)
        out["ess_tail"] = np.asarray(az.ess(ds, method="tail")["x"].values, dtype=float).reshape(-1)
    return out


def psislw(log_weights: np.ndarray, reff: float = 1.0, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed log weights and k̂ of float64 ``log_weights`` ``(..., S)``, draws on the last axis.

    ``az.psislw`` in arviz 0.x; in 1.x ``arviz_stats``, which takes log-likelihoods (the
    negated log weights) and always normalises: there the unnormalised weights are
    recovered from the smallest weight, which the smoothing leaves unchanged.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz warns about large k̂; callers report k̂ themselves
        if hasattr(az, "psislw"):
            lw, k = az.psislw(log_weights, reff=reff, normalize=normalize)
            return np.asarray(lw), np.asarray(k)
        from arviz_stats.base import array_stats

        lw, k = array_stats.psislw(-log_weights, r_eff=reff)
    lw, k = np.asarray(lw), np.asarray(k)
    if not normalize:
        i = np.argmin(log_weights, axis=-1)[..., None]
        lw = lw + np.take_along_axis(log_weights - lw, i, -1)
    return lw, k


def loo(idata, pointwise: bool = False) -> dict:
    """PSIS-LOO (Vehtari, Gelman & Gabry 2017, "Practical Bayesian model evaluation using
    leave-one-out cross-validation and WAIC", Stat. Comput. 27) of ``idata``'s ``log_likelihood``
    group by ``az.loo``, as one dict under both arviz APIs.

    Returns ``{"elpd_loo": float, "se": float, "p_loo": float}`` and, with ``pointwise=True``,
    ``"loo_i"`` and ``"pareto_k"``: float64 arrays of the observations' shape.  The numbers are
    each version's own: ``se = sqrt(n) sd(loo_i)`` with the population sd in 0.x and the
    sample sd in 1.x, and 1.x's Pareto smoothing moves elpd_loo in the 5th digit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # arviz warns about large k̂; the caller has pareto_k
        res = az.loo(idata, pointwise=pointwise)
    if hasattr(res, "elpd"):  # arviz 1.x: ELPDData dataclass
        out = {"elpd_loo": float(res.elpd), "se": float(res.se), "p_loo": float(res.p)}
        pw = {"loo_i": getattr(res, "elpd_i", None), "pareto_k": getattr(res, "pareto_k", None)}
    else:  # arviz 0.x: pandas Series
        out = {"elpd_loo": float(res["elpd_loo"]), "se": float(res["se"]), "p_loo": float(res["p_loo"])}
        pw = {"loo_i": res.get("loo_i"), "pareto_k": res.get("pareto_k")}
    if pointwise:
        out.update({k: np.asarray(getattr(v, "values", v), dtype=np.float64) for k, v in pw.items()})
    return out


def figure_of(plot):
    """The matplotlib figure behind what an arviz plot returned (axes, an array of axes, a PlotCollection)."""
    if hasattr(plot, "viz") and hasattr(plot, "savefig"):  # arviz 1.x PlotCollection
        fig = plot.viz["figure"]
        return fig.item() if hasattr(fig, "item") else fig
    if isinstance(plot, np.ndarray):
        plot = plot.ravel()[0]
    if hasattr(plot, "figure"):
        return plot.figure
    import matplotlib.pyplot as plt

    return plt.gcf()


def plot_trace(idata, var_names=None, axes=None, **kwargs):
    """Density and trace panels per variable, as ``az.plot_trace`` of arviz 0.x, under both APIs.

    arviz 0.x: ``az.plot_trace`` (returns an ``(n_vars, 2)`` array of axes).  arviz 1.x:
    ``az.plot_trace_dist`` (returns a ``PlotCollection``; ``figsize`` goes to its
    ``figure_kwargs``); with matplotlib ``axes`` of shape ``(n_vars, 2)``, which arviz-plots
    does not take, the panels are drawn here on them: per chain a KDE (arviz_stats) on the
    left and the trace on the right, divergent draws as ticks under the trace.  Returns
    ``axes`` then.  Other keyword arguments are not supported with ``axes`` under 1.x.
    """
    if not ARVIZ_1:
        return az.plot_trace(idata, var_names=var_names, axes=axes, **kwargs)
    if axes is None:
        if "figsize" in kwargs:
            kwargs["figure_kwargs"] = {**kwargs.get("figure_kwargs", {}), "figsize": kwargs.pop("figsize")}
        return az.plot_trace_dist(idata, var_names=var_names, **kwargs)
    if kwargs:
        raise ValueError(f"plot_trace: with axes= under arviz 1.x only var_names is supported, got {sorted(kwargs)}")
    return _trace_on_axes(idata, var_names, axes)


def _trace_on_axes(idata, var_names, axes):
    from arviz_stats.base import array_stats

    post = get_group(idata, "posterior")
    names = [var_names] if isinstance(var_names, str) else list(var_names or post.data_vars)
    axes = np.asarray(axes, dtype=object)
    if axes.shape != (len(names), 2):
        raise ValueError(f"plot_trace: axes must have shape ({len(names)}, 2) (a density and a trace panel "
                         f"per variable of {names}), got {axes.shape}")
    div = None
    if "sample_stats" in group_names(idata) and "diverging" in get_group(idata, "sample_stats"):
        div = get_group(idata, "sample_stats")["diverging"].transpose("chain", "draw").values.astype(bool)
    styles = ["-", "--", ":", "-."]
    for (ax_d, ax_t), name in zip(axes, names, strict=True):
        da = post[name]
        x = da.transpose("chain", "draw", ...).values.astype(np.float64)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        for c in range(x.shape[0]):
            for j in range(x.shape[2]):
                col, ls = f"C{c % 10}", styles[j % len(styles)]
                xs = x[c, :, j]
                if np.ptp(xs) > 0:
                    grid, pdf, _ = array_stats.kde(xs)
                    ax_d.plot(grid, pdf, color=col, ls=ls, lw=1)
                else:  # constant draws: a point mass
                    ax_d.axvline(xs[0], color=col, ls=ls, lw=1)
                ax_t.plot(np.arange(xs.size), xs, color=col, ls=ls, lw=0.7, alpha=0.8)
        if div is not None and div.any():
            lo = np.nanmin(x)
            for c in range(div.shape[0]):
                idx = np.flatnonzero(div[c])
                ax_t.plot(idx, np.full(idx.size, lo), "|", color="k", ms=6)
        ax_d.set_title(name)
        ax_t.set_title(name)
        ax_d.set_yticks([])
    return axes
