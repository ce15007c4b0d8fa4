"""Shared test utilities: Monte Carlo integration over manifolds, two-sample tests."""

from __future__ import annotations

import math

import torch

from dlmppl import kmath


def log_sphere_area(n: int) -> float:
    """log of the surface area of the unit sphere S^{n-1} in R^n."""
    return math.log(2.0) + 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * n)


def uniform_sphere(num: int, n: int, dtype=torch.float64) -> torch.Tensor:
    x = torch.randn(num, n, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def integrate_on_sphere(log_prob, n: int, num: int = 200_000, batch_ndim: int = 0, dtype=torch.float64):
    """∫_{S^{n-1}} exp(log_prob(x)) dσ(x) by uniform Monte Carlo.

    ``log_prob`` receives points of shape ``(num,) + (1,)*batch_ndim + (n,)``.
    Returns ``(estimate, standard error)``, each of the distribution's batch shape.
    """
    x = uniform_sphere(num, n, dtype).reshape((num,) + (1,) * batch_ndim + (n,))
    p = log_prob(x).exp() * math.exp(log_sphere_area(n))
    return p.mean(0), p.std(0) / math.sqrt(num)


def integrate_polar(log_prob, point_from_tangent, d: int, k, radius: float, num: int = 200_000,
                    batch_ndim: int = 0, dtype=torch.float64):
    """∫ exp(log_prob) dvol over a d-dimensional space of constant curvature ``k``.

    Geodesic polar coordinates at a base point o: ``x = exp_o(r ξ)``, with
    ``dvol = sin_k(r)^{d-1} dr dξ``.  ``point_from_tangent(v)`` maps
    ``v ∈ R^d`` (Riemannian coordinates of T_o, shape ``(num,)+(1,)*batch_ndim+(d,)``)
    to points.  ``r`` is uniform on ``[0, radius]``.  ``k`` may be a tensor that
    broadcasts with ``(num,)+batch+(1,)``.  Returns ``(estimate, standard error)``.
    """
    shape = (num,) + (1,) * batch_ndim
    xi = uniform_sphere(num, d, dtype).reshape(shape + (d,))
    r = torch.rand(shape + (1,), dtype=dtype) * radius
    k = torch.as_tensor(k, dtype=dtype)
    x = point_from_tangent(r * xi)
    log_w = (d - 1) * torch.log(kmath.sin_k(r, k).abs().clamp_min(1e-300))
    p = (log_prob(x) + log_w.squeeze(-1)).exp() * radius * math.exp(log_sphere_area(d))
    return p.mean(0), p.std(0) / math.sqrt(num)


def energy_distance_test(x: torch.Tensor, y: torch.Tensor, num_permutations: int = 200, generator=None):
    """Energy-distance two-sample permutation test (Székely & Rizzo 2004).

    x: (n, D), y: (m, D) (flatten matrix-valued points first).  Returns the
    p-value of H0 "same distribution".
    """
    z = torch.cat([x, y]).double()
    n = x.shape[0]
    dmat = torch.cdist(z, z)

    def stat(idx):
        a, b = idx[:n], idx[n:]
        return 2 * dmat[a][:, b].mean() - dmat[a][:, a].mean() - dmat[b][:, b].mean()

    idx = torch.arange(z.shape[0])
    obs = stat(idx)
    count = 0
    for _ in range(num_permutations):
        perm = torch.randperm(z.shape[0], generator=generator)
        count += int(stat(perm) >= obs)
    return (count + 1) / (num_permutations + 1)
