r"""The dynamic-curvature VAE: a κ-stereographic latent space whose curvature is a network output.

Each datum ``x_i`` with condition ``c_i`` (a class label, or the input
itself) gets its own latent space ``M_{κ_i}``, the κ-stereographic model of
curvature ``κ_i = g(c_i)`` with ``g`` a small network:

.. math::

    κ_i = g(c_i), \quad z_i \sim \mathcal{WN}_{κ_i}(0, I), \quad
    x_i \sim p(x \mid f_{κ_i}(z_i)), \qquad
    q(z_i \mid x_i) = \mathcal{WN}_{κ_i}(\mu(x_i), \operatorname{diag}\sigma(x_i)^2).

κ may take either sign and pass through 0 during training (the closed forms
of :mod:`dlmppl.kmath` are smooth there), so different parts of the data can
live in spherical, flat or hyperbolic latent geometry.  The construction
extends the learnable global curvature of Skopek, Ganea & Bécigneul,
"Mixed-curvature Variational Autoencoders" (ICLR 2020) to a curvature that
depends on the datum; the wrapped normal is that of Nagano et al. (ICML 2019)
in the κ-stereographic form of Skopek et al.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam, pyro_method
from torch import nn
from torch.distributions import constraints

from .. import kmath
from .. import manifolds as _m
from .marginal import iwae_log_marginal
from .vae import _check_rows, mlp

__all__ = ["DynamicCurvatureVAE"]


class _LandmarkReadout(nn.Module):
    """``x_j = b_j + s_j d_j`` with one ``(s, b)`` set per label."""

    def __init__(self, n, n_sets):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n_sets, n))
        self.bias = nn.Parameter(torch.zeros(n_sets, n))

    def forward(self, d, lab=None):
        if lab is None:
            return self.bias[0] + self.scale[0] * d
        return self.bias[lab] + self.scale[lab] * d


class DynamicCurvatureVAE(PyroModule):
    r"""VAE with a κ-stereographic latent whose curvature ``κ = g(condition)`` is predicted per datum.

    Args:
        data_dim: ``D``; inputs ``x`` have shape ``(N, D)``.
        latent_dim: intrinsic latent dimension ``d``.
        condition: ``"label"`` (``g`` takes a class label in
            ``0 … n_conditions-1``, passed as ``condition=`` to
            :meth:`model`/:meth:`guide`) or ``"input"`` (``g`` takes ``x``).
        n_conditions: number of labels (``condition="label"``).
        hidden: hidden widths of the encoder and decoder MLPs.
        kappa_hidden: hidden width of ``g``; ``kappa_bound`` bounds
            ``|κ| ≤ kappa_bound`` through ``tanh`` (``None``: unbounded).
        likelihood: ``"gaussian"`` (learned scale unless ``obs_scale``) or ``"bernoulli"``.
        decoder: ``"distance"`` (geodesic distances in ``M_κ`` to learned
            anchors, then an MLP), ``"landmark"`` (output ``j`` is
            ``b_j + s_j d_κ(z, a_j)``, one learned landmark per output, one set
            of landmarks per label when conditioned on labels: the latent
            geometry alone must reproduce the observed distances) or ``"mlp"``
            (MLP on ``2 log_0^κ z``).
        decoder_hidden: decoder widths if different from ``hidden`` (``()``: linear read-out).

    The network ``g`` starts at κ = 0 for every condition (zero-initialised
    last layer), so a curvature away from 0 is what the data ask for.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 2,
        condition: str = "label",
        n_conditions: int | None = None,
        hidden=(64,),
        kappa_hidden: int = 16,
        kappa_bound: float | None = None,
        likelihood: str = "gaussian",
        obs_scale: float | None = None,
        decoder: str = "distance",
        n_anchors: int = 16,
        prior_scale: float = 1.0,
        activation=nn.ReLU,
        decoder_hidden=None,
    ):
        super().__init__()
        if condition not in ("label", "input"):
            raise ValueError(f"condition must be 'label' or 'input', got {condition!r}")
        if condition == "label" and (n_conditions is None or n_conditions < 1):
            raise ValueError("n_conditions: give the number of labels (>= 1) when condition='label'")
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        if decoder not in ("mlp", "distance", "landmark"):
            raise ValueError(f"decoder must be 'mlp', 'distance' or 'landmark', got {decoder!r}")
        self.data_dim, self.latent_dim = int(data_dim), int(latent_dim)
        self.condition_kind = condition
        self.n_conditions = n_conditions
        self.likelihood = likelihood
        self.decoder_kind = decoder
        self.kappa_bound = kappa_bound
        self.prior_scale = float(prior_scale)
        n_in = n_conditions if condition == "label" else data_dim
        self.kappa_net = mlp((n_in, kappa_hidden, 1), nn.Tanh)
        nn.init.zeros_(self.kappa_net[-1].weight)
        nn.init.zeros_(self.kappa_net[-1].bias)
        hidden = tuple(hidden)
        self.encoder = mlp((data_dim,) + hidden + (2 * latent_dim,), activation)
        if decoder == "landmark":
            # one landmark per output; one set per label when conditioned on labels
            n_sets = n_conditions if condition == "label" else 1
            self.anchors = nn.Parameter(0.5 * torch.randn(n_sets, data_dim, latent_dim))
            self.decoder = _LandmarkReadout(data_dim, n_sets)
        else:
            if decoder == "distance":
                self.anchors = nn.Parameter(0.5 * torch.randn(n_anchors, latent_dim))
                n_feat = n_anchors
            else:
                n_feat = latent_dim
            dec_hidden = hidden if decoder_hidden is None else tuple(decoder_hidden)
            self.decoder = mlp((n_feat,) + dec_hidden + (data_dim,), activation)
        if likelihood == "gaussian":
            if obs_scale is None:
                self.obs_scale = PyroParam(torch.tensor(0.5), constraints.positive)
            else:
                self.register_buffer("_fixed_obs_scale", torch.tensor(float(obs_scale)))

    # -- curvature --------------------------------------------------------
    def kappa(self, x: torch.Tensor | None = None, condition=None) -> torch.Tensor:
        """Curvature per datum, shape ``(N, 1)``.

        ``condition`` is a long tensor of labels ``(N,)`` or an int
        (``condition="label"``); with ``condition="input"`` the network reads ``x``.
        """
        if self.condition_kind == "input":
            inp = x if condition is None else condition
            if inp is None:
                raise ValueError("condition: this model predicts κ from the input; pass x")
        else:
            if condition is None:
                raise ValueError("condition: pass the labels (a long tensor of shape (N,) or an int)")
            like = next(self.kappa_net.parameters())
            lab = torch.as_tensor(condition, device=like.device).long()
            if lab.dim() == 0 and x is not None:
                lab = lab.expand(x.shape[0])
            if (lab < 0).any() or (lab >= self.n_conditions).any():
                raise ValueError(f"condition: labels must lie in [0, {self.n_conditions}), got {lab.unique().tolist()}")
            inp = nn.functional.one_hot(lab, self.n_conditions).to(like)
        k = self.kappa_net(inp)
        if self.kappa_bound is not None:
            k = self.kappa_bound * torch.tanh(k / self.kappa_bound)
        return k

    def manifold(self, kappa: torch.Tensor) -> _m.Stereographic:
        """The latent manifold ``M_κ`` for curvatures ``kappa`` ``(N, 1)`` (keeps the graph)."""
        return _m.Stereographic(kappa)

    # -- networks ---------------------------------------------------------
    def encode(self, x: torch.Tensor, kappa: torch.Tensor):
        """``q(z | x)``: a wrapped normal on ``M_κ``, batch ``(N,)``."""
        from ..distributions.wrapped_normal import WrappedNormal, keep_representable

        h = self.encoder(x)
        a, b = h[..., : self.latent_dim], h[..., self.latent_dim :]
        M = self.manifold(kappa)
        # negative κ: cap the radius and scale where the dtype cannot represent the draws
        a, scale = keep_representable(M, a, nn.functional.softplus(b) + 1e-4)
        loc = kmath.project(kmath.expmap0(a / 2, kappa), kappa)
        return WrappedNormal(M, loc, scale)

    def prior(self, kappa: torch.Tensor):
        """``p(z) = WN_κ(0, prior_scale² I)``, batch ``kappa.shape[:-1]``."""
        from ..distributions.wrapped_normal import WrappedNormal

        o = torch.zeros(kappa.shape[:-1] + (self.latent_dim,), dtype=kappa.dtype, device=kappa.device)
        return WrappedNormal(self.manifold(kappa), o, torch.full_like(kappa, self.prior_scale))

    def decode(self, z: torch.Tensor, kappa: torch.Tensor, condition=None) -> torch.Tensor:
        """Decoder output ``batch + (D,)`` for points ``z`` of ``M_κ`` (``kappa`` broadcasts as ``batch + (1,)``).

        ``condition`` (labels ``(N,)``) selects the landmark set of the
        ``"landmark"`` decoder when the model is conditioned on labels.
        """
        if self.decoder_kind == "landmark":
            k = kappa.unsqueeze(-1)
            if self.condition_kind == "label":
                lab = self._labels(condition, z.shape[-2])
                raw = self.anchors[lab]  # (N, D, d)
            else:
                lab = None
                raw = self.anchors[0]
            anchors = kmath.project(kmath.expmap0(raw / 2, k), k)
            return self.decoder(kmath.dist(z.unsqueeze(-2), anchors, k), lab)
        if self.decoder_kind == "distance":
            k = kappa.unsqueeze(-1)
            anchors = kmath.project(kmath.expmap0(self.anchors / 2, k), k)  # (..., A, d)
            feats = kmath.dist(z.unsqueeze(-2), anchors, k)
        else:
            feats = 2 * kmath.logmap0(z, kappa)
        return self.decoder(feats)

    def _labels(self, condition, n):
        lab = torch.as_tensor(condition, device=self.anchors.device).long()
        return lab.expand(n) if lab.dim() == 0 else lab

    def _likelihood(self, out):
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        scale = self._fixed_obs_scale if "_fixed_obs_scale" in self._buffers else self.obs_scale
        return dist.Normal(out, scale).to_event(1)

    # -- Pyro programs ----------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor, condition=None):
        """``κ = g(c)``, ``z ~ WN_κ(0, I)``, ``x ~ p(x | f_κ(z))`` in a plate ``"data"``."""
        n = _check_rows(x, "DynamicCurvatureVAE.model")
        kappa = self.kappa(x, condition)
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior(kappa))
            return pyro.sample("x", self._likelihood(self.decode(z, kappa, condition)), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor, condition=None):
        """``z ~ q(z | x)`` on ``M_{g(c)}``."""
        n = _check_rows(x, "DynamicCurvatureVAE.guide")
        kappa = self.kappa(x, condition)
        with pyro.plate("data", n):
            return pyro.sample("z", self.encode(x, kappa))

    # -- conveniences -----------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, condition=None) -> torch.Tensor:
        """Decode ``n`` prior draws under ``condition`` (a label, labels ``(n,)``, or inputs ``(n, D)``).

        Returns probabilities (Bernoulli) or means (Gaussian), ``(n, D)``.
        """
        like = next(self.decoder.parameters())
        if self.condition_kind == "label":
            lab = torch.as_tensor(condition, device=like.device).long()
            lab = lab.expand(n) if lab.dim() == 0 else lab
            kappa = self.kappa(None, lab)
        else:
            if condition is None or condition.shape[0] != n:
                raise ValueError("condition: pass n inputs (n, D) whose curvature is used")
            kappa = self.kappa(condition)
        z = self.prior(kappa).sample()
        out = self.decode(z, kappa, lab if self.condition_kind == "label" else None)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, condition=None) -> torch.Tensor:
        """Decode the posterior locations, ``(N, D)``."""
        kappa = self.kappa(x, condition)
        out = self.decode(self.encode(x, kappa).loc, kappa, condition)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def log_marginal(self, x: torch.Tensor, condition=None, num_particles: int = 500, chunk_size: int = 100) -> torch.Tensor:
        """IWAE estimate of ``log p(x_i | c_i)``, shape ``(N,)``."""
        return iwae_log_marginal(self.model, self.guide, x, condition, num_particles=num_particles, chunk_size=chunk_size)
