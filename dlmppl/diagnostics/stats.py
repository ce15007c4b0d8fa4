r"""Manifold-aware posterior statistics and importance-sampling diagnostics.

* :func:`frechet_mean`: the Riemannian centre of mass ``argmin_μ Σ w_i d(μ, x_i)²``
  by Karcher's fixed-point iteration ``μ ← exp_μ(Σ w_i log_μ x_i)`` with step
  halving (Karcher 1977; Pennec 2006, "Intrinsic statistics on Riemannian
  manifolds", JMIV 25).
* :func:`tangent_coordinates`: ``log_μ x`` in an orthonormal basis of ``T_μ M``.
* :func:`manifold_diagnostics` / :func:`summary`: for a manifold site, mean =
  Fréchet mean, spread = RMS geodesic distance to it, and R-hat / ESS
  (rank-normalised split R-hat, bulk and tail ESS: Vehtari, Gelman, Simpson,
  Carpenter & Bürkner 2021, Bayesian Analysis 16) computed on the geodesic
  distance to the mean and on the tangent coordinates at the mean along the
  principal geodesic directions (Fletcher, Lu, Pizer & Joshi 2004, "Principal
  geodesic analysis", IEEE TMI 23).  Ambient coordinates mix directions of very
  different posterior spread, so a chain that has not mixed along a narrow
  direction oblique to the ambient axes is diluted in every ambient
  coordinate; the principal tangent coordinates keep it apart (see the tests).
* :func:`psislw`, :func:`pareto_khat`: Pareto-smoothed importance sampling
  (Vehtari, Simpson, Gelman, Yao & Gabry 2024, "Pareto smoothed importance
  sampling", JMLR 25) by arviz (:mod:`._compat`), on arrays or tensors.
* :func:`psis_diagnostic`: k̂ of the importance weights ``p(x, z) / q(z)`` of a
  variational guide (Yao, Vehtari, Simpson & Gelman 2018, "Yes, but did it
  work?: Evaluating variational inference", ICML).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..geometry import Geometry, geometry_of
from ..inference import importance as _importance
from . import _compat

__all__ = [
    "frechet_mean",
    "tangent_basis",
    "tangent_coordinates",
    "manifold_diagnostics",
    "summary",
    "psislw",
    "pareto_khat",
    "psis_diagnostic",
]


# --------------------------------------------------------------------------- geometry
# every manifold-specific computation comes from the family's Geometry (dlmppl.geometry)


def frechet_mean(
    points: torch.Tensor,
    manifold,
    weights: torch.Tensor | None = None,
    max_iter: int = 200,
    tol: float | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fréchet (Karcher) mean of posterior draws ``points`` ``(N, *event)`` on ``manifold``.

    The same computation as :func:`dlmppl.geometry.frechet_mean` (Riemannian
    gradient descent with a monotone step, started at the best of 16 sample
    points; Pennec 2006, alg. 1), with the defaults used by :func:`summary`:
    ``max_iter`` steps and a tolerance relative to the spread of the draws.

    Returns a tensor of shape ``event``: a local minimiser of ``Σ w_i d(μ, x_i)²``
    (the global one when the points lie in a geodesically convex ball, e.g. an
    open hemisphere of the sphere).
    """
    if points.dim() < manifold.ndim + 1:
        raise ValueError(f"frechet_mean: points must have shape (N, *event), got {tuple(points.shape)}")
    if weights is not None:
        w = torch.as_tensor(weights, dtype=points.dtype, device=points.device)
        if w.shape != (points.shape[0],) or (w < 0).any() or not (w.sum() > 0):
            raise ValueError("frechet_mean: weights must be (N,) non-negative with a positive sum")
    g = geometry_of(manifold)
    if tol is None:
        # relative to the spread: sqrt(eps) times the RMS distance of the draws to one of them
        spread = g.dist(points[:1], points).pow(2).mean().sqrt()
        tol = math.sqrt(torch.finfo(points.dtype).eps) * float(spread.detach().clamp_min(1e-30))
    return g.frechet_mean(points, weights=weights, iters=max_iter, tol=tol, init=init)


def tangent_basis(manifold, mu: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of ``T_μ M`` in ambient coordinates, shape ``(d, *event)``.

    The ambient unit vectors are projected to ``T_μ M`` and orthonormalised for
    the manifold's Riemannian inner product at ``μ`` (eigen-decomposition of
    their Gram matrix, keeping the ``d = dim M`` leading directions).
    """
    # the base-class frame (projected ambient axes, orthonormalised), whatever the family's own
    # frame: the coordinates then follow the ambient axes, the same convention for every manifold
    return Geometry.frame(geometry_of(manifold), mu)


def _gram(M, mu, A, B):
    # <A_i, B_j>_mu, A: (n, *event), B: (m, *event)
    a = A.unsqueeze(1)
    b = B.unsqueeze(0)
    a, b = torch.broadcast_tensors(a, b)
    return geometry_of(M).inner(mu.expand_as(a), a, b)


def tangent_coordinates(points: torch.Tensor, manifold, mu: torch.Tensor, basis: torch.Tensor | None = None):
    """Coordinates of ``log_μ(points)`` in an orthonormal basis of ``T_μ M``.

    Shapes: ``points`` ``(N, *event)``, ``mu`` ``event``; returns ``(N, d)``.
    The Euclidean norm of each row is the geodesic distance ``d(μ, x)``
    (where ``log_μ`` is exact).
    """
    if basis is None:
        basis = tangent_basis(manifold, mu)
    V = geometry_of(manifold).log(mu.unsqueeze(0), points)
    chunk = max(1, int(4e6 // max(1, basis.numel())))
    return torch.cat([_gram(manifold, mu, V[i : i + chunk], basis) for i in range(0, V.shape[0], chunk)])


def manifold_diagnostics(draws, manifold, principal: bool = True) -> dict:
    """Fréchet mean, spread, and R-hat / ESS of manifold-valued MCMC draws.

    Parameters
    ----------
    draws : Tensor or array, shape ``(chain, draw, *event)``
    manifold : geoopt manifold
    principal : bool
        Rotate the tangent coordinates to the principal geodesic directions of
        the pooled draws (PGA, Fletcher et al. 2004).

    Returns
    -------
    dict with ``mean`` (event), ``spread`` (RMS geodesic distance to the mean),
    ``distance`` ``(chain, draw)``, ``tangent`` ``(chain, draw, d)``,
    ``tangent_sd`` ``(d,)``, per-coordinate ``r_hat`` / ``ess_bulk`` /
    ``ess_tail`` arrays of shape ``(d + 1,)`` (tangent coordinates, then the
    distance) and the site-level ``max_r_hat``, ``min_ess_bulk``,
    ``min_ess_tail``.
    """
    x = torch.as_tensor(draws)
    if not torch.is_floating_point(x):
        x = x.double()
    x = x.detach().to(torch.float64)
    c, n = x.shape[:2]
    event = tuple(x.shape[2:])
    flat = x.reshape((c * n,) + event)
    with torch.no_grad():
        mu = frechet_mean(flat, manifold)
        basis = tangent_basis(manifold, mu)
        T = tangent_coordinates(flat, manifold, mu, basis)
        dist = geometry_of(manifold).dist(mu.unsqueeze(0), flat)
    T = T.cpu().numpy()
    dist = dist.cpu().numpy()
    if principal and T.shape[1] > 1:
        cov = np.cov(T, rowvar=False)
        lam, U = np.linalg.eigh(cov)
        T = T @ U[:, ::-1]
    T = T.reshape(c, n, -1)
    dist = dist.reshape(c, n)
    stats = _compat.rhat_ess(np.concatenate([T, dist[..., None]], axis=-1))
    return {
        "mean": mu.to(torch.as_tensor(draws).dtype) if torch.is_floating_point(torch.as_tensor(draws)) else mu,
        "spread": float(np.sqrt(np.mean(dist**2))),
        "distance": dist,
        "tangent": T,
        "tangent_sd": T.reshape(c * n, -1).std(0, ddof=1) if c * n > 1 else np.zeros(T.shape[-1]),
        "r_hat": stats["r_hat"],
        "ess_bulk": stats["ess_bulk"],
        "ess_tail": stats["ess_tail"],
        "max_r_hat": float(np.nanmax(stats["r_hat"])) if np.isfinite(stats["r_hat"]).any() else float("nan"),
        "min_ess_bulk": float(np.nanmin(stats["ess_bulk"])),
        "min_ess_tail": float(np.nanmin(stats["ess_tail"])),
    }


def _posterior_vars(data):
    """``{name: (array (chain, draw, ...), attrs, coord labels per site dim)}`` from idata / MCMC / dict."""
    from .convert import to_inference_data

    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            a = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)
            out[k] = (a, {}, [None] * max(a.ndim - 2, 0))
        return out
    if hasattr(data, "get_samples") and hasattr(data, "kernel"):
        data = to_inference_data(data, log_likelihood=False)
    post = _compat.get_group(data, "posterior")
    out = {}
    for k, v in post.data_vars.items():
        labels = []
        for dim in v.dims[2:]:
            # arviz's default dims (``mu_dim_0``) carry integer coords: label rows by index, as arviz does
            lab = np.asarray(v[dim].values) if dim in v.coords else None
            labels.append(None if lab is None or str(dim).startswith(f"{k}_dim_") else [str(x) for x in lab])
        out[str(k)] = (np.asarray(v.values), dict(v.attrs), labels)
    return out


def _index_name(name, idx, labels=None):
    """Row name ``name[i, j]`` as arviz writes it, with coordinate labels where the dims have them."""
    if not idx:
        return name
    labels = labels or [None] * len(idx)
    parts = [str(i) if lab is None else lab[i] for i, lab in zip(idx, labels, strict=False)]
    return f"{name}[{', '.join(parts)}]"


_COLUMNS = ["mean", "sd", "rms_geodesic", "ess_bulk", "ess_tail", "r_hat", "manifold"]


def _row(stats, j, *values):
    """A summary row: ``mean, sd, rms_geodesic`` (``values[:3]``), ESS and R-hat from ``stats[k][j]``, the manifold."""
    conv = [stats[k][j] for k in ("ess_bulk", "ess_tail", "r_hat")]
    return dict(zip(_COLUMNS, [*values[:3], *conv, values[3]], strict=True))


def summary(data, var_names=None, manifolds: dict | None = None, intrinsic: bool = True, round_to=None):
    """Posterior summary that is manifold-aware.

    Parameters
    ----------
    data : InferenceData | DataTree | pyro.infer.MCMC | dict
        Posterior draws; a dict maps sites to arrays ``(chain, draw, *shape)``.
    var_names : list of str, optional
    manifolds : dict, optional
        ``{site: manifold}``; otherwise read from ``posterior[site].attrs``
        (written by :func:`~dlmppl.diagnostics.to_inference_data`).
    intrinsic : bool
        Also list, for each manifold point, the rows ``site.dist`` (geodesic
        distance to the Fréchet mean) and ``site.pc<k>`` (tangent coordinate
        along the k-th principal geodesic direction), each with its own R-hat/ESS.
    round_to : None | int | "none"
        As ``arviz.summary`` (0.x): ``None`` rounds statistics to 3 decimals, ESS to
        integers and R-hat to 2 decimals; an int rounds every column to that many
        decimals; ``"none"`` returns the raw numbers.

    Returns
    -------
    pandas.DataFrame with columns ``mean, sd, rms_geodesic, ess_bulk, ess_tail,
    r_hat, manifold``.  Rows are named as arviz names them: ``site[i, j]``,
    with the labels of the InferenceData's coords where the site has named
    dims (``mu[a, x]``).  Euclidean sites (and the intrinsic rows): one row per
    scalar component, ``mean`` and ``sd`` as arviz.  Manifold sites (the event
    dims of the manifold; leading dims are a batch of points): one row per
    ambient coordinate ``site[i]`` whose ``mean`` is the Fréchet mean's
    coordinate and ``rms_geodesic`` the spread of the point, the RMS geodesic
    distance to the Fréchet mean ``sqrt(mean_s d(μ̂, x_s)²)`` (not an ambient
    standard deviation, so ``sd`` is empty there); ``r_hat`` the largest and
    ``ess_*`` the smallest over the intrinsic coordinates of that point.
    Columns that are empty on every row are left out: ``rms_geodesic`` without
    manifold sites, ``r_hat`` for a single chain (an SVI posterior), where
    split R-hat is not defined.
    """
    import logging

    import pandas as pd

    from .convert import manifold_from_attrs

    variables = _posterior_vars(data)
    manifolds = dict(manifolds or {})
    names = var_names or list(variables)
    rows = {}
    nan = float("nan")
    # arviz 0.x logs a shape warning for one chain (its logger is not registered with logging):
    # r_hat is dropped below instead
    az_log = getattr(_compat.az, "_log", None) or logging.getLogger("arviz")
    level = az_log.level
    az_log.setLevel(logging.ERROR)
    try:
        for name in names:
            if name not in variables:
                raise ValueError(f"summary: no site {name!r} in the posterior (have {sorted(variables)})")
            arr, attrs, labels = variables[name]
            M = manifolds.get(name) or manifold_from_attrs(attrs)
            if M is None or arr.ndim < 2 + M.ndim:
                c, n = arr.shape[:2]
                flat = arr.reshape(c, n, -1).astype(np.float64)
                st = _compat.rhat_ess(flat)
                for j, idx in enumerate(np.ndindex(*arr.shape[2:]) if arr.ndim > 2 else [()]):
                    rows[_index_name(name, idx, labels)] = _row(st, j, flat[..., j].mean(), flat[..., j].std(ddof=1), nan, "")
                continue
            mname = attrs.get("manifold", type(M).__name__)
            nb = arr.ndim - 2 - M.ndim
            batch = arr.shape[2 : 2 + nb]
            event = arr.shape[2 + nb :]
            for b in np.ndindex(*batch) if batch else [()]:
                sub = arr[(slice(None), slice(None)) + b]
                diag = manifold_diagnostics(sub, M)
                mu = diag["mean"].cpu().numpy()
                pname = _index_name(name, b, labels[:nb])
                point = {k: [diag[f"{m}_{k}"]] for k, m in (("ess_bulk", "min"), ("ess_tail", "min"), ("r_hat", "max"))}
                for e in np.ndindex(*event):
                    rows[_index_name(name, b + e, labels)] = _row(point, 0, float(mu[e]), nan, diag["spread"], mname)
                if intrinsic:
                    d = diag["tangent"].shape[-1]
                    labs = [f"{pname}.pc{k}" for k in range(d)] + [f"{pname}.dist"]
                    vals = np.concatenate([diag["tangent"], diag["distance"][..., None]], -1)
                    for j, lab in enumerate(labs):
                        mean = vals[..., j].mean()
                        if j < d and abs(mean) <= 1e-6 * diag["spread"]:
                            # zero by construction at the Fréchet mean (up to its stopping tolerance,
                            # sqrt(eps) x spread): print 0, not the solver's round-off
                            mean = 0.0
                        rows[lab] = _row(diag, j, mean, vals[..., j].std(ddof=1), nan, mname)
    finally:
        az_log.setLevel(level)
    df = pd.DataFrame.from_dict(rows, orient="index", columns=_COLUMNS)
    chains = {variables[k][0].shape[0] for k in names}
    drop = [col for col in ("sd", "rms_geodesic") if len(df) and df[col].isna().all()]
    if chains == {1} or (len(df) and df["r_hat"].isna().all()):
        drop.append("r_hat")
    df = df.drop(columns=drop)
    if isinstance(round_to, str) and round_to.lower() == "none":
        return df
    num = [col for col in df.columns if col != "manifold"]
    if round_to is None:
        decimals = {col: 0 if col.startswith("ess") else 2 if col == "r_hat" else 3 for col in num}
    else:
        decimals = {col: int(round_to) for col in num}
    return df.round(decimals)


# --------------------------------------------------------------------------- PSIS


def psislw(log_weights, reff: float = 1.0, normalize: bool = True):
    """Pareto-smoothed log importance weights (Vehtari et al. 2024), by arviz.

    Parameters
    ----------
    log_weights : array or Tensor, shape ``(..., S)``
        Raw log importance weights, draws on the last axis.
    reff : float
        Relative efficiency of the draws (1 for independent draws).
    normalize : bool
        Return log weights that sum (in ``exp``) to one.

    Returns
    -------
    (smoothed log weights ``(..., S)``, k̂ ``(...)``) as float64 numpy arrays, from
    ``az.psislw`` (arviz 0.x) or ``arviz_stats`` (arviz 1.x): the
    ``M = ceil(min(S/5, 3 sqrt(S/reff)))`` largest weights are replaced by the
    expected order statistics of the generalized Pareto fit to their
    exceedances, truncated at the largest raw weight.  k̂ is ``inf`` when
    fewer than 5 draws exceed the threshold, and ``-inf`` when all log weights
    are equal up to ``sqrt(eps)`` of their dtype (relative), i.e. the proposal
    is exact and the weights are constant up to rounding.
    """
    if isinstance(log_weights, torch.Tensor):
        eps = torch.finfo(log_weights.dtype).eps if torch.is_floating_point(log_weights) else np.finfo(float).eps
        lw = log_weights.detach().cpu().double().numpy()
    else:
        lw = np.asarray(log_weights)
        eps = np.finfo(lw.dtype).eps if np.issubdtype(lw.dtype, np.floating) else np.finfo(float).eps
        lw = lw.astype(np.float64)
    flat = lw.reshape(-1, lw.shape[-1])
    out, ks = flat.copy(), np.full(flat.shape[0], -math.inf)
    # equal up to rounding: an exact proposal, bounded weights (arviz would fail or report inf)
    top = flat.max(-1, initial=-math.inf)
    const = top - flat.min(-1, initial=math.inf) <= math.sqrt(eps) * (1.0 + np.abs(top))
    if normalize:
        out[const] = -math.log(flat.shape[-1])
    if not const.all():
        out[~const], ks[~const] = _compat.psislw(flat[~const], reff=reff, normalize=normalize)
    return out.reshape(lw.shape), ks.reshape(lw.shape[:-1])


def pareto_khat(log_weights, reff: float = 1.0):
    """Pareto k̂ of importance weights given as log weights ``(..., S)`` (see :func:`psislw`)."""
    return psislw(log_weights, reff=reff)[1]


def psis_diagnostic(
    model,
    guide,
    *args,
    num_particles: int = 1000,
    max_plate_nesting: int | None = None,
    vectorize: bool = True,
    return_log_weights: bool = False,
    **kwargs,
):
    """Pareto k̂ of a variational guide's importance weights (Yao et al. 2018).

    Draws ``z_s ~ q`` and computes ``log w_s = log p(x, z_s) - log q(z_s)``,
    all particles at once under an extra ``pyro.plate`` (to the left of the
    model's plates; falls back to a loop over particles when the model or
    guide does not broadcast), then k̂ by :func:`pareto_khat`.  Interpretation
    (Yao et al. 2018): k̂ < 0.5 the guide is a good proposal; 0.5–0.7 usable;
    > 0.7 the guide misses mass of the posterior (too narrow, or wrong modes).

    Returns
    -------
    float k̂, or ``(k̂, log_weights)`` with ``return_log_weights=True``.
    """
    with torch.no_grad():
        lw = None
        if vectorize:
            try:
                nest = max_plate_nesting
                if nest is None:
                    nest = _importance.plate_nesting(model, guide, args, kwargs)
                lw = _importance.log_weights(model, guide, args, kwargs, num_particles, nest)
                if lw.shape != (num_particles,):
                    lw = None
            except Exception:
                lw = None
        if lw is None:
            lw = _importance.log_weight_loop(model, guide, args, kwargs, num_particles)
    k = float(pareto_khat(lw))
    return (k, lw) if return_log_weights else k
