r"""Marginal log-likelihood by importance sampling (the IWAE bound).

``log p(x) ≥ E[log (1/K) Σ_k p(x, z_k) / q(z_k | x)]``, ``z_k ~ q(· | x)``
(Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR
2016).  The bound increases with ``K`` and tends to ``log p(x)``; it is the
test metric of the hyperbolic VAE (Mathieu et al. 2019, Nagano et al. 2019)
and mixed-curvature VAE (Skopek et al. 2020) papers.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine

__all__ = ["iwae_log_marginal"]


def _per_datum_log_prob(trace, data_plate: str, batch_dim: int):
    total = None
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        lp = site["fn"].log_prob(site["value"])
        in_plate = any(f.name == data_plate for f in site["cond_indep_stack"])
        if not in_plate:
            # a global site: counted once, not once per datum
            lp = lp / max(1, batch_dim)
        total = lp if total is None else total + lp
    return total


@torch.no_grad()
def iwae_log_marginal(model, guide, *args, num_particles: int = 100, chunk_size: int = 100, data_plate: str = "data", max_plate_nesting: int = 1, **kwargs):
    """IWAE estimate of ``log p(x_i)`` for every datum of a model with a data plate.

    Args:
        model, guide: Pyro programs with the same arguments; the latent and
            observed sites of datum ``i`` sit in a plate named ``data_plate``
            (dimension ``-1``), as in :class:`~dlmppl.models.ManifoldVAE`.
        num_particles: ``K``, the number of importance samples per datum.
        chunk_size: particles drawn at once (vectorised in a plate of
            dimension ``-(max_plate_nesting + 1)``); memory ∝ ``chunk_size``.

    Returns:
        a tensor of shape ``(N,)``: ``logsumexp_k log w_k - log K`` per datum,
        with ``log w_k = log p(x, z_k) - log q(z_k | x)``.  Global sites (not in
        the data plate) have their log-density shared equally among the data.
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    chunks = []
    done = 0
    while done < num_particles:
        k = min(chunk_size, num_particles - done)
        plate = pyro.plate("_iwae_particles", k, dim=-(max_plate_nesting + 1))
        with plate:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        with plate:
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        n = _data_size(model_trace, data_plate)
        log_p = _per_datum_log_prob(model_trace, data_plate, n)
        log_q = _per_datum_log_prob(guide_trace, data_plate, n)
        lw = log_p - log_q
        lw = lw.reshape(k, -1) if lw.dim() >= 2 else lw.reshape(k, 1)
        chunks.append(lw)
        done += k
    lw = torch.cat(chunks, 0)
    return torch.logsumexp(lw, 0) - math.log(num_particles)


def _data_size(trace, data_plate):
    for site in trace.nodes.values():
        if site["type"] == "sample":
            for f in site["cond_indep_stack"]:
                if f.name == data_plate:
                    return f.size
    return 1
