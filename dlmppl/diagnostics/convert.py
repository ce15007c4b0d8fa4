r"""Conversion of Pyro/dlmppl inference results to arviz ``InferenceData``.

:func:`to_inference_data` accepts a ``pyro.infer.MCMC`` run (Pyro's HMC/NUTS or
dlmppl's Riemannian kernels), a dict of draws, or an SVI guide (draws through
``pyro.infer.Predictive``) and builds, with ``arviz.from_dict`` (present in arviz
0.2x and 1.x):

* ``posterior``: one variable per latent site, dims ``(chain, draw, *site)``;
  manifold sites keep their ambient coordinates and carry the manifold in
  ``attrs["manifold"]`` (class name) and, for constant-curvature models,
  ``attrs["manifold_k"]`` (geoopt's ``k`` / ``c`` parameter);
* ``sample_stats``: ``diverging``, ``energy``, ``step_size``, ``tree_depth`` or
  ``n_steps``, ``acceptance_rate`` (what the kernel reports; Pyro's own kernels
  only give divergences);
* ``log_likelihood``: ``log p(y_i | θ)`` per observation and draw, computed by
  replaying the model conditioned on each draw, so ``arviz.loo`` works
  (Vehtari, Gelman & Gabry 2017, "Practical Bayesian model evaluation using
  leave-one-out cross-validation and WAIC");
* ``observed_data``; manifold-valued observations carry the same ``attrs``
  as manifold latent sites;
* ``prior``, ``prior_predictive``, ``posterior_predictive`` from the output
  dicts of ``pyro.infer.Predictive`` (as arviz's ``from_pyro`` builds them):
  latent sites of a prior run go to ``prior``, observed sites to
  ``prior_predictive``; manifold sites carry their manifold ``attrs`` in every
  group.

Kernel contract (dlmppl's kernels): ``kernel.diagnostics()`` per chain has the
attribute ``sample_stats`` (a :class:`dlmppl.inference.kernels.SampleStats`: a dict of 1-D
tensors, one value per post-warmup draw; an attribute, not a key, so that
``MCMC.diagnostics()`` reads as Pyro's) and the key ``"manifold_sites"`` ({site:
manifold class name}), besides Pyro's ``"divergences"`` (post-warmup draw indices).
"""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pyro.poutine as poutine
import torch

from ..inference.importance import trace_plate_nesting
from . import _compat

__all__ = ["to_inference_data", "manifold_attrs", "manifold_from_attrs", "log_likelihood", "mcmc_sample_stats"]

_SAMPLE_STATS = ("diverging", "energy", "step_size", "acceptance_rate", "n_steps", "tree_depth")


# --------------------------------------------------------------------------- manifolds


def manifold_attrs(M) -> dict:
    """Attributes that name manifold ``M`` (and its scalar curvature parameter) for netCDF."""
    from ..geometry import geometry_of

    attrs = {"manifold": type(M).__name__}
    param = geometry_of(M).curvature_argument()
    if param is not None:
        param = torch.as_tensor(param)
        if param.numel() == 1:
            attrs["manifold_k"] = float(param.detach().reshape(()))
    return attrs


def manifold_from_attrs(attrs):
    """Rebuild the manifold named by :func:`manifold_attrs`.

    The name is looked up in :mod:`dlmppl.manifolds`, then among the manifold classes
    registered with :func:`~dlmppl.geometry.geometry_of`.  ``None`` when the name is unknown, or when a curvature-parametrised model
    (κ-stereographic, Lorentz) has no scalar ``manifold_k`` (batched curvature).
    """
    from .. import manifolds as _m
    from ..geometry import geometry_of

    name = attrs.get("manifold")
    if not name:
        return None
    cls = getattr(_m, str(name), None)
    if cls is None:
        # a family registered with geometry_of but not re-exported by dlmppl.manifolds (e.g. the
        # torus): the registered manifold class of that name, if exactly one
        found = [k for k in geometry_of.registry if isinstance(k, type) and k.__name__ == str(name)]
        if len(found) != 1:
            return None
        cls = found[0]
    try:
        if "manifold_k" in attrs:
            return cls(float(attrs["manifold_k"]))
        M = cls(ndim=1) if cls is _m.Euclidean else cls()
        if geometry_of(M).curvature_argument() is not None:
            return None  # batched or unknown curvature: a default one would be wrong
        return M
    except Exception:
        return None


def _manifold_of(site):
    from ..constraints import ManifoldConstraint

    fn = site["fn"]
    support = getattr(fn, "support", None)
    while support is not None and hasattr(support, "base_constraint") and not isinstance(support, ManifoldConstraint):
        support = support.base_constraint
    if isinstance(support, ManifoldConstraint):
        return getattr(support, "manifold", None)
    return getattr(fn, "manifold", None)


# --------------------------------------------------------------------------- model replay


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _trace(model, draw, args, kwargs):
    with torch.no_grad():
        return poutine.trace(poutine.condition(model, data=draw)).get_trace(*args, **kwargs)


def _observed_sites(tr, conditioned=()):
    # poutine.condition marks the conditioned latent sites observed: leave them out
    return {
        name: site
        for name, site in tr.nodes.items()
        if site["type"] == "sample" and site["is_observed"] and not site["infer"].get("is_auxiliary")
        and name not in conditioned
    }


def _loglik_loop(model, draws, n, args, kwargs):
    out = {}
    for s in range(n):
        tr = _trace(model, {k: v[s] for k, v in draws.items()}, args, kwargs)
        for name, site in _observed_sites(tr, draws).items():
            lp = site["fn"].log_prob(site["value"])
            out.setdefault(name, []).append(lp.expand(site["fn"].batch_shape) if lp.dim() < len(site["fn"].batch_shape) else lp)
    return {k: torch.stack(v) for k, v in out.items()}


def _loglik_vectorized(model, draws, n, args, kwargs, ref):
    # ref: trace of the model at the first draw, gives shapes and plate nesting
    nest = trace_plate_nesting(ref)
    cond = {}
    for name, v in draws.items():
        site = ref.nodes.get(name)
        if site is None:
            continue
        bshape = site["fn"].batch_shape
        eshape = site["fn"].event_shape
        one = tuple(site["value"].shape)
        if one != tuple(bshape) + tuple(eshape):
            raise ValueError("site value does not match its distribution's shape")
        cond[name] = v.reshape((n,) + (1,) * (nest - len(bshape)) + one)

    def vmodel(*a, **k):
        with pyro.plate("_dlmppl_draws", n, dim=-(nest + 1)):
            return model(*a, **k)

    tr = _trace(vmodel, cond, args, kwargs)
    out = {}
    for name, site in _observed_sites(tr, draws).items():
        single = ref.nodes[name]["fn"].batch_shape
        lp = site["fn"].log_prob(site["value"])
        lp = lp.expand((n,) + (1,) * (nest - len(single)) + tuple(single)).reshape((n,) + tuple(single))
        out[name] = lp
    return out


def log_likelihood(model, draws: dict, model_args=(), model_kwargs=None, vectorize: bool = True):
    """Pointwise log-likelihood ``log p(y | θ_s)`` of each observed site for each draw.

    Parameters
    ----------
    model : callable
        The Pyro model.
    draws : dict
        ``{site: tensor of shape (S, *site_shape)}``, latent values per draw.
    vectorize : bool
        Run all draws at once under an extra ``pyro.plate`` (checked against one
        draw, falls back to a loop over draws when the model does not broadcast).

    Returns
    -------
    dict ``{observed site: tensor of shape (S, *batch_shape)}``.
    """
    model_kwargs = model_kwargs or {}
    draws = {k: torch.as_tensor(v) for k, v in draws.items()}
    n = next(iter(draws.values())).shape[0]
    ref = _trace(model, {k: v[0] for k, v in draws.items()}, model_args, model_kwargs)
    if vectorize and n > 1:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = _loglik_vectorized(model, draws, n, model_args, model_kwargs, ref)
            check = {name: site["fn"].log_prob(site["value"]) for name, site in _observed_sites(ref, draws).items()}
            if set(out) == set(check) and all(
                torch.allclose(out[k][0], check[k].expand_as(out[k][0]), rtol=1e-4, atol=1e-5) for k in out
            ):
                return out
        except Exception:
            pass
    return _loglik_loop(model, draws, n, model_args, model_kwargs)


_log_likelihood = log_likelihood


# --------------------------------------------------------------------------- sample stats


def _chain_sample_stats(diag: dict, num_draws: int) -> dict:
    stats = {}
    given = getattr(diag, "sample_stats", None) or diag.get("sample_stats") or {}
    for key in _SAMPLE_STATS:
        if key in given:
            v = _to_numpy(given[key]).reshape(-1)
            stats[key] = v[:num_draws]
    if "diverging" not in stats and "divergences" in diag:
        d = np.zeros(num_draws, dtype=bool)
        idx = np.asarray([int(i) for i in diag["divergences"]], dtype=int)
        idx = idx[(idx >= 0) & (idx < num_draws)]
        d[idx] = True
        stats["diverging"] = d
    if "diverging" in stats:
        stats["diverging"] = stats["diverging"].astype(bool)
    return stats


def _mcmc_sample_stats(mcmc, num_chains, num_draws):
    diags = getattr(mcmc, "_diagnostics", None)
    if not diags or any(d is None for d in diags):
        return {}, {}
    per_chain = [_chain_sample_stats(d, num_draws) for d in diags[:num_chains]]
    keys = set.intersection(*(set(s) for s in per_chain)) if per_chain else set()
    stats = {k: np.stack([s[k] for s in per_chain]) for k in sorted(keys) if all(len(s[k]) == num_draws for s in per_chain)}
    msites = {}
    for d in diags:
        msites.update(d.get("manifold_sites") or {})
    return stats, msites


def mcmc_sample_stats(mcmc) -> tuple[dict, dict]:
    """The sample stats of an MCMC run as :func:`to_inference_data` stores them.

    Returns ``(stats, manifold_sites)``: ``{name: array (chain, draw)}`` for the stats every chain
    reports (``diverging``, ``energy``, ``step_size``, ...), and ``{site: manifold class name}``
    from the kernel's diagnostics (both empty for a run without per-chain diagnostics).
    """
    draws = mcmc.get_samples(group_by_chain=True)
    if not draws:
        return {}, {}
    c, n = next(iter(draws.values())).shape[:2]
    return _mcmc_sample_stats(mcmc, c, n)


# --------------------------------------------------------------------------- main entry


def _is_mcmc(obj):
    return hasattr(obj, "get_samples") and hasattr(obj, "kernel")


def to_inference_data(
    source,
    *,
    model=None,
    model_args=None,
    model_kwargs=None,
    num_samples: int = 1000,
    num_chains: int | None = None,
    sample_stats: dict | None = None,
    manifolds: dict | None = None,
    log_likelihood: bool = True,
    coords: dict | None = None,
    dims: dict | None = None,
    vectorize: bool = True,
    prior: dict | None = None,
    posterior_predictive: dict | None = None,
):
    """Build an arviz ``InferenceData`` (arviz 1.x: ``DataTree``) from dlmppl/Pyro results.

    Parameters
    ----------
    source : pyro.infer.MCMC | dict | callable
        * an MCMC run: draws from ``get_samples(group_by_chain=True)``, sample
          stats from the kernel's per-chain diagnostics, model and arguments
          from the run (override with ``model`` / ``model_args``);
        * a dict ``{site: array}``: shape ``(chain, draw, *site)``, or
          ``(draw, *site)`` with ``num_chains=1``, or ``(chain * draw, *site)``
          with ``num_chains=C``;
        * an SVI guide (callable): ``num_samples`` draws of its latent sites
          through ``pyro.infer.Predictive(model, guide=guide)``; needs ``model``.
    model, model_args, model_kwargs
        The model and its arguments, for ``log_likelihood`` and
        ``observed_data`` (and to find manifold sites).
    sample_stats : dict, optional
        Extra sample statistics ``{name: (chain, draw)}``.
    manifolds : dict, optional
        ``{site: manifold}``, added to (or overriding) what is read from the
        model's supports and the kernel's ``manifold_sites``.
    log_likelihood : bool
        Compute the ``log_likelihood`` group (needs ``model``).
    coords, dims : dict, optional
        Passed to ``arviz.from_dict``.
    vectorize : bool
        Vectorise the likelihood replay over draws (falls back to a loop).
    prior : dict, optional
        ``pyro.infer.Predictive(model, num_samples=S)(*args)``: ``{site: (S, *site)}``
        (or ``(chain, draw, *site)`` with ``num_chains``); latent sites become the
        ``prior`` group, the model's observed sites (all sites not in the
        posterior when no model is known) the ``prior_predictive`` group, one chain.
    posterior_predictive : dict, optional
        ``pyro.infer.Predictive(model, posterior_samples=..., return_sites=[obs])``
        output ``{site: (S, *site)}``; latent sites in it are dropped.  With ``S``
        equal to the posterior's ``chain * draw`` the draws are split into its
        chains (``Predictive`` keeps the order of ``get_samples()``), otherwise one chain.

    Returns
    -------
    InferenceData (arviz 0.x) or DataTree (arviz 1.x) with groups
    ``posterior``, ``sample_stats`` (MCMC), ``log_likelihood`` and
    ``observed_data`` (when a model with observed sites is known), and
    ``prior`` / ``prior_predictive`` / ``posterior_predictive`` when given.
    Manifold-valued sites (latent or observed) carry ``attrs["manifold"]``
    (and ``"manifold_k"``) in every group they appear in.
    """
    stats: dict = {}
    msites_names: dict = {}
    if _is_mcmc(source):
        mcmc = source
        draws = {k: v for k, v in mcmc.get_samples(group_by_chain=True).items()}
        model = model or getattr(mcmc.kernel, "model", None)
        if model_args is None:
            model_args = getattr(mcmc, "_args", None) or ()
        if model_kwargs is None:
            model_kwargs = getattr(mcmc, "_kwargs", None) or {}
        c, n = next(iter(draws.values())).shape[:2]
        stats, msites_names = _mcmc_sample_stats(mcmc, c, n)
    elif isinstance(source, dict):
        draws = {k: torch.as_tensor(np.asarray(_to_numpy(v))) for k, v in source.items()}
        if num_chains == 1:
            draws = {k: v.unsqueeze(0) for k, v in draws.items()}
        elif num_chains is not None:
            draws = {k: v.reshape((num_chains, -1) + tuple(v.shape[1:])) for k, v in draws.items()}
    elif callable(source):
        if model is None:
            raise ValueError("to_inference_data: a guide needs the model (model=...)")
        guide = source
        model_args = model_args or ()
        model_kwargs = model_kwargs or {}
        with torch.no_grad():
            gtr = poutine.trace(guide).get_trace(*model_args, **model_kwargs)
        latent = [
            k for k, s in gtr.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not s["infer"].get("is_auxiliary")
        ]
        pred = pyro.infer.Predictive(model, guide=guide, num_samples=num_samples, return_sites=latent)
        with torch.no_grad():
            samples = pred(*model_args, **model_kwargs)
        # Predictive may add singleton plate dims: restore each site's own shape
        draws = {
            k: v.reshape((1, num_samples) + tuple(gtr.nodes[k]["value"].shape))
            for k, v in samples.items() if k in latent
        }
    else:
        raise ValueError(f"to_inference_data: source must be an MCMC run, a dict of draws or a guide, got {type(source).__name__}")

    if not draws:
        raise ValueError("to_inference_data: no draws in source")
    model_args = model_args or ()
    model_kwargs = model_kwargs or {}
    shapes = {k: tuple(v.shape[:2]) for k, v in draws.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"to_inference_data: sites disagree on (chain, draw): {shapes}")
    c, n = next(iter(shapes.values()))

    # manifold sites: from the model's supports, then the kernel, then the user
    site_manifolds: dict = {}
    site_shapes: dict = {}
    loglik: dict = {}
    observed: dict = {}
    if model is not None:
        flat = {k: torch.as_tensor(v).reshape((c * n,) + tuple(v.shape[2:])) for k, v in draws.items()}
        ref = _trace(model, {k: v[0] for k, v in flat.items()}, model_args, model_kwargs)
        for name, site in ref.nodes.items():
            if site["type"] == "sample" and not site["infer"].get("is_auxiliary"):
                site_shapes[name] = tuple(site["value"].shape)
                M = _manifold_of(site)
                if M is not None:
                    site_manifolds[name] = M
        for name, site in _observed_sites(ref, draws).items():
            observed[name] = _to_numpy(site["value"])
        if log_likelihood and observed:
            ll = _log_likelihood(model, flat, model_args, model_kwargs, vectorize=vectorize)
            loglik = {k: _to_numpy(v).reshape((c, n) + tuple(v.shape[1:])) for k, v in ll.items()}
    site_attrs = {k: manifold_attrs(M) for k, M in site_manifolds.items()}
    for k, name in msites_names.items():
        if k in draws and k not in site_attrs:
            site_attrs[k] = {"manifold": str(name)}
    for k, M in (manifolds or {}).items():
        site_attrs[k] = manifold_attrs(M) if not isinstance(M, str) else {"manifold": M}

    if sample_stats:
        stats.update({k: _to_numpy(v) for k, v in sample_stats.items()})

    # observed sites share dims between log_likelihood and observed_data
    dims = dict(dims or {})
    for k, v in observed.items():
        if k not in dims:
            dims[k] = [f"{k}_dim_{i}" for i in range(np.ndim(v))]
    for k, v in loglik.items():
        if k not in observed and k not in dims:
            dims[k] = [f"{k}_dim_{i}" for i in range(v.ndim - 2)]

    groups = {
        "posterior": {k: _to_numpy(v) for k, v in draws.items()},
        "sample_stats": stats,
        "log_likelihood": loglik,
        "observed_data": observed,
    }
    if prior is not None:
        pri = _predictive_draws(prior, "prior", 1 if num_chains is None else num_chains, None, site_shapes)
        obs_names = set(observed) if model is not None else set(pri) - set(draws)
        groups["prior"] = {k: v for k, v in pri.items() if k not in obs_names}
        groups["prior_predictive"] = {k: v for k, v in pri.items() if k in obs_names}
    if posterior_predictive is not None:
        pp = _predictive_draws(posterior_predictive, "posterior_predictive", None, (c, n), site_shapes)
        groups["posterior_predictive"] = {k: v for k, v in pp.items() if k not in draws}
        if not groups["posterior_predictive"]:
            raise ValueError("to_inference_data: posterior_predictive has no site that is not a posterior latent "
                             f"site (got {sorted(pp)})")
    for g in ("prior_predictive", "posterior_predictive"):
        for k, v in groups.get(g, {}).items():
            # replicated observations share the observed data's dims (arviz's convention)
            if k not in dims:
                dims[k] = [f"{k}_dim_{i}" for i in range(v.ndim - 2)]
    idata = _compat.from_dict(groups, coords=coords, dims=dims)
    for g, vals in groups.items():
        if g in ("sample_stats", "log_likelihood") or not vals:
            continue
        for k in vals:
            if k in site_attrs:
                _compat.set_var_attrs(idata, g, k, site_attrs[k])
    return idata


def _predictive_draws(out: dict, arg: str, num_chains, chain_draw, site_shapes) -> dict:
    """``{site: (chain, draw, *site)}`` numpy arrays from ``pyro.infer.Predictive`` output.

    ``site_shapes`` (from a trace of the model) removes the singleton plate dims that
    ``Predictive`` may add in front of a site's own shape.
    """
    if not isinstance(out, dict) or not out:
        raise ValueError(f"to_inference_data: {arg} must be a non-empty dict of draws (Predictive output), got {out!r}")
    res = {}
    sizes = set()
    for k, v in out.items():
        a = _to_numpy(v)
        if a.ndim == 0:
            raise ValueError(f"to_inference_data: {arg}[{k!r}] needs a leading draw dimension, got a scalar")
        shape = site_shapes.get(k)
        if shape is not None and a.shape[1:] != shape and a.size == a.shape[0] * int(np.prod(shape)):
            a = a.reshape((a.shape[0],) + shape)
        if num_chains is not None and num_chains > 1:
            a = a.reshape((num_chains, -1) + a.shape[1:])
        elif chain_draw is not None and a.shape[0] == chain_draw[0] * chain_draw[1]:
            a = a.reshape(tuple(chain_draw) + a.shape[1:])
        else:
            a = a[None]
        res[k] = a
        sizes.add(a.shape[:2])
    if len(sizes) != 1:
        raise ValueError(f"to_inference_data: the sites of {arg} disagree on the number of draws: {sorted(sizes)}")
    return res
