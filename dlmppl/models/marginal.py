r"""Marginal log-likelihood by importance sampling (the IWAE bound).

``log p(x) ≥ E[log (1/K) Σ_k p(x, z_k) / q(z_k | x)]``, ``z_k ~ q(· | x)``
(Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR
2016).  The bound increases with ``K`` and tends to ``log p(x)``; it is the
test metric of the hyperbolic VAE (Mathieu et al. 2019, Nagano et al. 2019)
and mixed-curvature VAE (Skopek et al. 2020) papers.
"""

from __future__ import annotations

import math

import torch

from ..inference.importance import log_weights

__all__ = ["iwae_log_marginal"]


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
    for done in range(0, num_particles, chunk_size):
        k = min(chunk_size, num_particles - done)
        chunks.append(log_weights(model, guide, args, kwargs, k, max_plate_nesting, data_plate=data_plate))
    lw = torch.cat(chunks, 0)
    return torch.logsumexp(lw, 0) - math.log(num_particles)

