r"""Importance log-weights ``log w = log p(x, z) - log q(z)``, ``z ~ q``, of a guide for its model.

One routine for the PSIS diagnostic of a guide (:func:`dlmppl.diagnostics.psis_diagnostic`,
one weight per particle) and the IWAE bound (:func:`dlmppl.models.iwae_log_marginal`,
one weight per particle and datum).  Not part of the public API.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask

__all__ = ["log_weight_loop", "log_weights", "plate_nesting"]


def _traces(model, guide, args, kwargs):
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def trace_plate_nesting(*traces) -> int:
    """The number of plate dimensions used by the sample sites of ``traces``."""
    sites = [s for tr in traces for s in tr.nodes.values() if s["type"] == "sample"]
    return max([0] + [-f.dim for s in sites for f in s["cond_indep_stack"] if f.dim is not None])


def plate_nesting(model, guide, args, kwargs) -> int:
    """The number of plate dimensions used by ``model`` and ``guide`` (one run of each)."""
    return trace_plate_nesting(*_traces(model, guide, args, kwargs))


def _plate_size(trace, name: str) -> int:
    for site in trace.nodes.values():
        if site["type"] == "sample":
            for f in site["cond_indep_stack"]:
                if f.name == name:
                    return f.size
    return 1


def _site_log_probs(trace, scaled: bool):
    for site in trace.nodes.values():
        if site["type"] == "sample":
            lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            yield site, scale_and_mask(lp, site["scale"], site["mask"]) if scaled else lp


def _total(trace, num, nest):
    """``Σ_sites log p`` per particle ``(num,)`` (particles at dimension ``-(nest + 1)``), with scales and masks."""
    total = 0.0
    for _, lp in _site_log_probs(trace, scaled=True):
        if lp.dim() > nest + 1:
            raise ValueError("unexpected batch dims left of the particle plate")
        if lp.dim() > nest:
            lp = lp.reshape(lp.shape[: lp.dim() - nest] + (-1,)).sum(-1)
            lp = lp.reshape(-1).expand(num) if lp.numel() == 1 else lp.reshape(num)
        else:
            lp = lp.sum().expand(num)
        total = total + lp
    return total


def _per_datum(trace, data_plate, n):
    """``Σ_sites log p`` broadcast per datum of ``data_plate``; a site outside it counts ``1/n`` for each datum."""
    total = 0.0
    for site, lp in _site_log_probs(trace, scaled=False):
        if not any(f.name == data_plate for f in site["cond_indep_stack"]):
            lp = lp / max(1, n)  # a global site: counted once, not once per datum
        total = total + lp
    return total


def log_weights(model, guide, args, kwargs, num_particles: int, max_plate_nesting: int, data_plate: str | None = None):
    """Log importance weights of ``num_particles`` draws of ``guide``, all drawn at once.

    The particles sit in a ``pyro.plate`` of dimension ``-(max_plate_nesting + 1)``
    around both programs.  ``data_plate=None``: shape ``(num_particles,)``, every site
    summed with its ``poutine.scale`` and mask.  ``data_plate`` the name of a plate of
    ``N`` data: shape ``(num_particles, N)``, the unscaled log-densities of each datum,
    with the sites outside that plate shared equally among the data.
    """
    with pyro.plate("_dlmppl_particles", num_particles, dim=-(max_plate_nesting + 1)):
        model_trace, guide_trace = _traces(model, guide, args, kwargs)
    if data_plate is None:
        return _total(model_trace, num_particles, max_plate_nesting) - _total(guide_trace, num_particles, max_plate_nesting)
    n = _plate_size(model_trace, data_plate)
    lw = _per_datum(model_trace, data_plate, n) - _per_datum(guide_trace, data_plate, n)
    return lw.reshape(num_particles, -1) if lw.dim() >= 2 else lw.reshape(num_particles, 1)


def log_weight_loop(model, guide, args, kwargs, num_particles: int) -> torch.Tensor:
    """:func:`log_weights` (``data_plate=None``) one particle at a time, for programs that do not broadcast."""
    out = []
    for _ in range(num_particles):
        model_trace, guide_trace = _traces(model, guide, args, kwargs)
        out.append(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
    return torch.stack(out)
