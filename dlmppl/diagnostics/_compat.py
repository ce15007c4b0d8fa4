"""Thin compatibility layer over arviz 0.2x and arviz 1.x.

arviz 0.x: ``from_dict(posterior=..., sample_stats=..., ...)`` returns an
``InferenceData``; arviz 1.x (arviz-base): ``from_dict({"posterior": {...}, ...})``
returns an ``xarray.DataTree``.  Both expose groups as ``obj["posterior"]`` /
``obj.posterior`` and write netCDF with ``to_netcdf``.  PSIS is ``az.psislw`` in 0.x
and ``arviz_stats``'s array interface in 1.x.  Everything in
:mod:`dlmppl.diagnostics` goes through the helpers below.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

with warnings.catch_warnings():
    # arviz 0.2x warns about its own refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = ["az", "ARVIZ_1", "from_dict", "group_names", "get_group", "set_var_attrs", "rhat_ess", "from_netcdf", "psislw"]

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
