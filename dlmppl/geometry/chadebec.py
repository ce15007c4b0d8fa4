r"""The latent metric of "A Geometric Perspective on Variational Autoencoders".

Chadebec & Allassonnière (NeurIPS 2022, eq. 7) read the posterior
``q(z | xᵢ) = N(μᵢ, Σᵢ)`` of a trained VAE as a Riemannian Gaussian whose metric
at ``μᵢ`` is ``Σᵢ⁻¹``, and interpolate these local metrics into a smooth field
on all of ``R^d``:

.. math::

    G(z) = \sum_{i=1}^N Σ_i^{-1}\, ω_i(z) + λ\, e^{-τ‖z‖²} I_d,
    \qquad ω_i(z) = \exp\!\Big(-\frac{(z-μ_i)ᵀ Σ_i^{-1} (z-μ_i)}{ρ²}\Big),

with ``ρ = max_i min_{j≠i} ‖μ_i − μ_j‖₂`` by default (the largest
nearest-neighbour distance between centroids, the choice of the authors' code).
``τ > 0`` makes the volume ``∫√det G`` finite (the paper sets ``τ ≈ 0``); the
intrinsic uniform measure ``∝ √det G(z) dz`` is
:class:`dlmppl.distributions.IntrinsicUniform`.

Note: the NeurIPS paper writes the field for ``G`` itself (sum of *inverse*
covariances, large near the data, so the uniform measure concentrates on the
data); the earlier RHVAE (Chadebec, Mantoux & Allassonnière 2020) interpolates
``G⁻¹`` with learned matrices instead.  This module implements the 2022 form.

Cost: ``N`` centroids, batch ``B``: ``O(B N d)`` (diagonal covariances, then ``G`` is
diagonal and ``inverse``/``logdet``/``solve`` are ``O(B d)``) or ``O(B N d²)``
(full covariances, then ``inverse``/``logdet`` take one Cholesky, ``O(B d³)``).
"""

from __future__ import annotations

import torch

from .metrics import MetricField

__all__ = ["ChadebecMetric", "posterior_moments", "max_min_distance", "median_min_distance"]


def _nn_distances(mu):
    if mu.shape[0] < 2:
        raise ValueError("rho: at least 2 centroids are needed to choose rho; pass rho explicitly")
    D = torch.cdist(mu, mu)
    D = D + torch.diag(torch.full((mu.shape[0],), float("inf"), dtype=mu.dtype, device=mu.device))
    return D.min(-1).values


def max_min_distance(mu: torch.Tensor) -> torch.Tensor:
    """``max_i min_{j≠i} ‖μ_i − μ_j‖₂`` for centroids ``mu`` ``(N, d)``, ``N ≥ 2``; a scalar tensor."""
    return _nn_distances(mu).max()


def median_min_distance(mu: torch.Tensor) -> torch.Tensor:
    """``median_i min_{j≠i} ‖μ_i − μ_j‖₂``: a bandwidth robust to one isolated code (``rho="median"``)."""
    return _nn_distances(mu).median()


def posterior_moments(q):
    """Mean ``(N, d)`` and covariance of a Gaussian posterior.

    ``q``: a ``Normal``/``Independent(Normal)`` (returns variances ``(N, d)``), a
    ``MultivariateNormal`` (returns ``(N, d, d)``), or a tuple ``(loc, scale)`` of
    ``(N, d)`` tensors (scale: standard deviations; returns variances).
    """
    import torch.distributions as td

    if isinstance(q, (list, tuple)) and len(q) == 1 and not isinstance(q[0], torch.Tensor):
        q = q[0]
    if isinstance(q, (list, tuple)):
        if len(q) != 2:
            raise ValueError("encoder output: expected a distribution or a (loc, scale) pair")
        return q[0], q[1].pow(2)
    base = q
    while isinstance(base, td.Independent):
        base = base.base_dist
    if isinstance(base, td.Normal):
        return base.loc, base.scale.pow(2)
    if isinstance(base, td.MultivariateNormal):
        return base.loc, base.covariance_matrix
    raise ValueError(f"encoder output: unsupported posterior {type(q).__name__} (need a Gaussian posterior)")


class ChadebecMetric(MetricField):
    r"""``G(z) = Σᵢ Σᵢ⁻¹ ωᵢ(z) + λ e^{-τ‖z‖²} I`` (Chadebec & Allassonnière 2022, eq. 7).

    Parameters
    ----------
    mu : centroids ``(N, d)``: the posterior means ``μ(xᵢ)`` of the training data.
    cov : posterior covariances: variances ``(N, d)`` (diagonal, the usual VAE
        encoder) or full matrices ``(N, d, d)``.
    lam : ``λ > 0``, the metric far from the data (a floor on its eigenvalues when ``τ = 0``).
    tau : ``τ ≥ 0``; ``τ > 0`` gives a finite total volume.
    rho : bandwidth ``ρ``: a number, ``None`` (default, the authors' choice: :func:`max_min_distance`
        of ``mu``) or ``"median"`` (:func:`median_min_distance`; one isolated code makes the
        default large and the field over-smoothed: see ``benchmarks/results_intrinsic.md``).

    Shapes: ``z`` ``(..., d)``; ``metric``/``inverse`` ``(..., d, d)``;
    ``logdet`` ``(...)``.  Buffers follow ``.to(device/dtype)``.
    """

    def __init__(self, mu, cov, lam: float = 1e-3, tau: float = 0.0, rho=None):
        super().__init__()
        mu = torch.as_tensor(mu)
        cov = torch.as_tensor(cov, dtype=mu.dtype, device=mu.device)
        if mu.dim() != 2:
            raise ValueError(f"mu must have shape (N, d), got {tuple(mu.shape)}")
        N, d = mu.shape
        if cov.shape == (N, d):
            self.diagonal = True
            if not bool((cov > 0).all()):
                raise ValueError("cov: variances must be > 0")
            prec = cov.reciprocal()
        elif cov.shape == (N, d, d):
            self.diagonal = False
            L, info = torch.linalg.cholesky_ex(cov)
            if bool((info != 0).any()):
                raise ValueError("cov: covariance matrices must be symmetric positive definite")
            prec = torch.cholesky_inverse(L)
        else:
            raise ValueError(f"cov must have shape (N, d) = {(N, d)} or (N, d, d), got {tuple(cov.shape)}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        if not tau >= 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        if rho is None:
            rho = max_min_distance(mu)
        elif isinstance(rho, str):
            if rho != "median":
                raise ValueError(f"rho must be a number, None or 'median', got {rho!r}")
            rho = median_min_distance(mu)
        else:
            rho = torch.as_tensor(rho, dtype=mu.dtype, device=mu.device)
        if not bool(rho > 0):
            raise ValueError(f"rho must be > 0, got {float(rho)}")
        self.dim, self.lam, self.tau = d, float(lam), float(tau)
        self.register_buffer("mu", mu)
        self.register_buffer("prec", prec)
        self.register_buffer("rho", rho.reshape(()))

    @classmethod
    def from_encoder(cls, encoder, data, **kwargs):
        """Build from an encoder ``x -> q(z|x)`` (a Gaussian distribution or ``(loc, scale)``) on ``data``."""
        with torch.no_grad():
            mu, cov = posterior_moments(encoder(data))
        return cls(mu.detach(), cov.detach(), **kwargs)

    def weights(self, z):
        """``ωᵢ(z)``, shape ``(..., N)``."""
        diff = z.unsqueeze(-2) - self.mu  # (..., N, d)
        if self.diagonal:
            m2 = (diff.pow(2) * self.prec).sum(-1)
        else:
            m2 = (diff.unsqueeze(-2) @ self.prec @ diff.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        return torch.exp(-m2 / self.rho.pow(2))

    def _floor(self, z):
        return self.lam * torch.exp(-self.tau * z.pow(2).sum(-1, keepdim=True))  # (..., 1)

    def _diag(self, z):
        return self.weights(z) @ self.prec + self._floor(z)  # (..., d)

    def metric(self, z, condition=None):
        if self.diagonal:
            return torch.diag_embed(self._diag(z))
        eye = torch.eye(self.dim, dtype=z.dtype, device=z.device)
        return torch.einsum("...n,nab->...ab", self.weights(z), self.prec) + self._floor(z).unsqueeze(-1) * eye

    def inverse(self, z, condition=None):
        if self.diagonal:
            return torch.diag_embed(self._diag(z).reciprocal())
        return super().inverse(z)

    def logdet(self, z, condition=None):
        if self.diagonal:
            return self._diag(z).log().sum(-1)
        return super().logdet(z)

    def quadratic(self, z, v, condition=None):
        if self.diagonal:
            return (self._diag(z) * v.pow(2)).sum(-1)
        return super().quadratic(z, v)

    def inner(self, z, u, v, condition=None):
        if self.diagonal:
            return (self._diag(z) * u * v).sum(-1)
        return super().inner(z, u, v)

    def metric_vector(self, z, v, condition=None):
        if self.diagonal:
            return self._diag(z) * v
        return super().metric_vector(z, v)

    def solve(self, z, rhs, condition=None):
        if self.diagonal:
            return rhs / self._diag(z)
        return super().solve(z, rhs)

    def log_volume(self, z, condition=None):
        """``log √det G(z) = ½ log det G(z)``, ``(...)``: the log-density of the intrinsic uniform measure (unnormalised)."""
        return 0.5 * self.logdet(z)
