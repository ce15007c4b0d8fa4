r"""Learned (conditional) metric fields ``G(z | c)`` and their regularisers.

:class:`LearnedMetric` is a :class:`~dlmppl.geometry.MetricField` whose value
comes from a network of the latent code ``z`` and an optional condition ``c``
(a hypernetwork of the condition): ``G(z | c) = L Lᵀ + εI`` with ``L`` lower
triangular with a softplus-positive diagonal (``kind="full"``), ``G = diag(s²) + εI``
(``kind="diagonal"``) or ``G = (s² + ε) I`` (``kind="conformal"``).  Every
geodesic, length, energy and steering function of :mod:`dlmppl.geometry`
accepts it.

Regularisers, each a scalar to add to a loss or to pass to ``pyro.factor``
(with a minus sign: ``pyro.factor("vol", -w * volume_regularizer(...))``):

* :func:`volume_regularizer`: ``(mean_z log det G)²`` (``mode="mean"``) or
  ``mean_z (log det G)²`` (``mode="pointwise"``); zero exactly when the
  log-volume element vanishes on average / at every point (fixes the scale
  that a metric learned from relative constraints leaves free; cf. the
  volume-preserving normalisation of Hauberg, Freifeld & Black 2012 and the
  flat-metric VAE of Chen et al. 2020).
* :func:`smoothness_regularizer`: ``mean_z ‖∂G/∂z‖_F²`` by forward-mode
  autograd; zero exactly when ``G`` is locally constant at the points
  (Chen et al., "Learning flat latent manifolds with VAEs", ICML 2020, penalise
  departures from a constant metric; Lee et al. 2022 regularise its derivative).

References: Hauberg, Freifeld & Black, "A geometric take on metric learning",
NeurIPS 2012 (metric tensor fields ``z ↦ G(z)`` interpolated from local
metrics); Arvanitidis, Hauberg & Schölkopf, "Geometrically enriched latent
spaces", AISTATS 2021.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._shapes import broadcast_shapes
from .metrics import MetricField

__all__ = ["LearnedMetric", "volume_regularizer", "smoothness_regularizer"]

_KINDS = ("full", "diagonal", "conformal")


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class LearnedMetric(MetricField):
    r"""A metric field produced by a network: ``G(z | c) = L Lᵀ + εI``.

    Parameters
    ----------
    dim : latent dimension ``d``.
    cond_dim : dimension of the condition ``c`` (0: unconditional).
    kind : ``"full"`` (``L`` lower triangular, ``d(d+1)/2`` outputs),
        ``"diagonal"`` (``d`` outputs) or ``"conformal"`` (1 output).
    hidden : hidden widths of the default MLP (``tanh``: smooth, so geodesic
        accelerations and the smoothness penalty exist).
    eps : ``ε ≥ 0``; ``ε > 0`` bounds the eigenvalues below.
    net : optional module ``(..., d + cond_dim) -> (..., n_out)`` replacing the MLP
        (``n_out`` as above; the diagonal entries pass through a softplus).
    identity_init : initialise the last layer to give ``L = I`` (``G = (1 + ε)I``) everywhere.

    Shapes: ``z`` ``(..., d)``, ``condition`` ``(..., cond_dim)`` broadcasting with ``z``'s
    batch shape; ``metric`` ``(..., d, d)``, ``logdet`` ``(...)``.

    Cost: one network evaluation per query; ``inverse``/``logdet``/``solve`` are
    ``O(d)`` for the diagonal and conformal kinds, and use the triangular factor
    ``L`` directly (no Cholesky) for ``kind="full"`` with ``eps=0``; with ``eps>0``
    one Cholesky of ``G`` (``d³/3``).
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int = 0,
        kind: str = "full",
        hidden=(64, 64),
        eps: float = 1e-4,
        net: nn.Module | None = None,
        identity_init: bool = False,
    ):
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if int(cond_dim) < 0:
            raise ValueError(f"cond_dim must be >= 0, got {cond_dim}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.dim, self.cond_dim, self.kind, self.eps = int(dim), int(cond_dim), kind, float(eps)
        d = self.dim
        self.n_out = {"full": d * (d + 1) // 2, "diagonal": d, "conformal": 1}[kind]
        if net is None:
            sizes = (d + self.cond_dim,) + tuple(hidden) + (self.n_out,)
            layers = []
            for i in range(len(sizes) - 1):
                layers.append(nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    layers.append(nn.Tanh())
            net = nn.Sequential(*layers)
        self.net = net
        rows, cols = torch.tril_indices(d, d, offset=-1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        if identity_init:
            last = [m for m in self.net.modules() if isinstance(m, nn.Linear)]
            if not last:
                raise ValueError("identity_init needs a network whose last layer is nn.Linear (net)")
            with torch.no_grad():
                last[-1].weight.zero_()
                last[-1].bias.zero_()
                last[-1].bias[: d if kind != "conformal" else 1] = _inv_softplus(1.0)

    # -- network ------------------------------------------------------------------
    def _raw(self, z, condition):
        if self.cond_dim:
            if condition is None:
                raise ValueError(f"condition of shape (..., {self.cond_dim}) is required (cond_dim={self.cond_dim})")
            condition = torch.as_tensor(condition, dtype=z.dtype, device=z.device)
            if condition.shape[-1] != self.cond_dim:
                raise ValueError(f"condition must have last dimension cond_dim={self.cond_dim}, got {tuple(condition.shape)}")
            shape = broadcast_shapes(z.shape[:-1], condition.shape[:-1])
            inp = torch.cat((z.expand(shape + z.shape[-1:]), condition.expand(shape + condition.shape[-1:])), -1)
        else:
            inp = z
        if inp.shape[-1] != self.dim + self.cond_dim:
            raise ValueError(f"z must have last dimension dim={self.dim}, got {tuple(z.shape)}")
        return self.net(inp)

    def factor(self, z, condition=None):
        """``L(z | c)``: ``(..., d, d)`` lower triangular (full), or the diagonal ``s`` ``(..., d)``
        (diagonal) or scalar ``s`` ``(..., 1)`` (conformal), with ``G = L Lᵀ + εI`` resp. ``s² + ε``."""
        raw = self._raw(z, condition)
        d = self.dim
        if self.kind != "full":
            return nn.functional.softplus(raw)
        diag = nn.functional.softplus(raw[..., :d])
        L = torch.diag_embed(diag)
        if d > 1:
            L = _scatter_tril(L, self._rows, self._cols, raw[..., d:])
        return L

    def _diag(self, z, condition):
        # the diagonal of G for the diagonal/conformal kinds, (..., d) or (..., 1)
        return self.factor(z, condition).pow(2) + self.eps

    def _chol(self, z, condition):
        L = self.factor(z, condition)
        if self.eps == 0:
            return L
        return torch.linalg.cholesky(L @ L.transpose(-1, -2) + self.eps * torch.eye(self.dim, dtype=z.dtype, device=z.device))

    # -- MetricField --------------------------------------------------------------
    def metric(self, z, condition=None):
        d = self.dim
        if self.kind == "full":
            L = self.factor(z, condition)
            return L @ L.transpose(-1, -2) + self.eps * torch.eye(d, dtype=z.dtype, device=z.device)
        g = self._diag(z, condition)
        return torch.diag_embed(g.expand(g.shape[:-1] + (d,)))

    def inverse(self, z, condition=None):
        d = self.dim
        if self.kind == "full":
            return torch.cholesky_inverse(self._chol(z, condition))
        g = self._diag(z, condition)
        return torch.diag_embed(g.reciprocal().expand(g.shape[:-1] + (d,)))

    def logdet(self, z, condition=None):
        if self.kind == "full":
            return 2 * self._chol(z, condition).diagonal(dim1=-2, dim2=-1).log().sum(-1)
        g = self._diag(z, condition)
        return g.log().sum(-1) if self.kind == "diagonal" else self.dim * g.log().squeeze(-1)

    def quadratic(self, z, v, condition=None):
        if self.kind == "full":
            L = self.factor(z, condition)
            Ltv = (L.transpose(-1, -2) @ v.unsqueeze(-1)).squeeze(-1)
            return Ltv.pow(2).sum(-1) + self.eps * v.pow(2).sum(-1)
        return (self._diag(z, condition) * v.pow(2)).sum(-1) if self.kind == "diagonal" else (
            self._diag(z, condition).squeeze(-1) * v.pow(2).sum(-1)
        )

    def inner(self, z, u, v, condition=None):
        if self.kind == "full":
            L = self.factor(z, condition)
            Lu = (L.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1)
            Lv = (L.transpose(-1, -2) @ v.unsqueeze(-1)).squeeze(-1)
            return (Lu * Lv).sum(-1) + self.eps * (u * v).sum(-1)
        return (self._diag(z, condition) * u * v).sum(-1)

    def metric_vector(self, z, v, condition=None):
        if self.kind == "full":
            L = self.factor(z, condition)
            return (L @ (L.transpose(-1, -2) @ v.unsqueeze(-1))).squeeze(-1) + self.eps * v
        return self._diag(z, condition) * v

    def solve(self, z, rhs, condition=None):
        if self.kind == "full":
            return torch.cholesky_solve(rhs.unsqueeze(-1), self._chol(z, condition)).squeeze(-1)
        return rhs / self._diag(z, condition)


def _scatter_tril(out, rows, cols, values):
    # out[..., rows[k], cols[k]] = values[..., k] without in-place ops on leaves (autograd/vmap friendly)
    d = out.shape[-1]
    flat_idx = rows * d + cols
    onehot = torch.zeros(flat_idx.shape[0], d * d, dtype=values.dtype, device=values.device)
    onehot[torch.arange(flat_idx.shape[0], device=values.device), flat_idx] = 1
    return out + (values @ onehot).reshape(values.shape[:-1] + (d, d))


def _check(metric, z):
    if not isinstance(metric, MetricField):
        raise ValueError(f"metric must be a dlmppl.geometry.MetricField, got {type(metric).__name__}")
    if not isinstance(z, torch.Tensor) or z.dim() < 1:
        raise ValueError("z must be a tensor of latent points of shape (..., d)")


def volume_regularizer(metric, z, condition=None, mode: str = "mean"):
    r"""Volume normalisation penalty of a metric field at points ``z`` ``(..., d)``; a scalar.

    ``mode="mean"``: ``(mean_z log det G(z))²`` (zero iff the log-volume element
    averages to 0 over the points); ``mode="pointwise"``: ``mean_z (log det G(z))²``
    (zero iff ``det G = 1`` at every point).  Differentiable in the metric's
    parameters; add ``w *`` it to a loss, or ``pyro.factor(name, -w * it)``.
    """
    _check(metric, z)
    if mode not in ("mean", "pointwise"):
        raise ValueError(f"mode must be 'mean' or 'pointwise', got {mode!r}")
    ld = metric.logdet(z, condition=condition)
    return ld.mean().pow(2) if mode == "mean" else ld.pow(2).mean()


def smoothness_regularizer(metric, z, condition=None):
    r"""Smoothness penalty ``mean_z ‖∂G/∂z‖_F² = mean_z Σ_{a,b,k} (∂G_ab/∂z_k)²``; a scalar.

    ``z`` ``(..., d)``.  The derivative is taken by forward-mode autograd: ``d``
    Jacobian–vector products of :meth:`MetricField.metric`, batched in one call
    (cost ``≈ d`` metric evaluations on the batch), and the result is
    differentiable in the metric's parameters.  Zero iff ``G`` is locally
    constant at every point.
    """
    _check(metric, z)
    d = z.shape[-1]
    zf = z.reshape(-1, d)
    cond = condition
    if isinstance(condition, torch.Tensor) and condition.dim() >= 1:
        cond = condition.expand(z.shape[:-1] + condition.shape[-1:]).reshape(-1, condition.shape[-1])
    eye = torch.eye(d, dtype=z.dtype, device=z.device)

    def one(e):
        return torch.func.jvp(lambda zz: metric.metric(zz, condition=cond), (zf,), (e.expand_as(zf),))[1]

    dG = torch.func.vmap(one)(eye)  # (d, B, d, d)
    return dG.pow(2).sum((0, -1, -2)).mean()
