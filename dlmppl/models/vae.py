r"""Variational autoencoders with latent spaces on Riemannian manifolds.

:class:`ManifoldVAE` is a ``PyroModule`` with a Pyro ``model(x)`` and
``guide(x)``: ``z ~ p(z)`` on a manifold (or a product of manifolds),
``x ~ p(x | decoder(z))``, ``q(z | x)`` a reparametrised distribution on the
same manifold whose parameters an encoder network produces.  Latent spaces:

========================  ====================================  ===============================
name                      posterior                             prior
========================  ====================================  ===============================
``"euclidean"``           normal                                standard normal
``"sphere"``              Power Spherical (or vMF)              uniform
``"poincare"``            wrapped normal, learnable ``c``       wrapped (or Riemannian) normal at 0
``"lorentz"``             wrapped normal, learnable ``k``       wrapped normal at the origin
``"stereographic"``       wrapped normal, learnable κ ∈ R       wrapped normal at 0
``"so3"``                 wrapped normal on SO(3)               uniform (Haar)
``"torus"``               wrapped normal on T^d                 uniform
``"projective"``          antipodal wrapped normal on RP^d      uniform
========================  ====================================  ===============================

The compact latents of matching topology (issue 13): ``"so3"`` (rotations, points ``(3, 3)``;
the encoder's location is the continuous 6-d representation of Zhou et al. 2019, two
vectors Gram–Schmidt-orthonormalised; the decoder reads the 9 matrix entries; Falorsi et al.
2018/2019 for the SO(3) VAE and its reparameterised wrapped normal), ``"torus"`` (``d``
angles; the encoder gives one 2-vector per angle, read by ``atan2``; the decoder reads
``cos θ, sin θ``), ``"projective"`` (RP^d as unit vectors of ``R^{d+1}`` with ``x ~ -x``; the
encoder's location is the leading eigenvector of a symmetric matrix, Peretroukhin et al. 2020; the
decoder reads the sign-invariant entries of ``x xᵀ``).  References for the topologies: Rey,
Menkovski & Portegies 2019 (Diffusion VAEs), Falorsi et al. 2018 (homeomorphic VAEs).

Prior matching (``prior_matching="sliced" | "sinkhorn"``): the model adds
``pyro.factor("prior_matching", -λ N W)``, ``W`` an optimal-transport cost with the latent
geodesic ground cost between the batch of codes and as many prior draws, summed over the
latent factors: the Sliced-Wasserstein autoencoder's regulariser (Kolouri et al. 2019), with
spherical slices on the sphere (Bonet et al. 2023, ICLR) and horospherical slices on
hyperbolic latents (Bonet et al. 2023, "Hyperbolic sliced-Wasserstein"), or entropic OT
(``"sinkhorn"``).  It is added to the ELBO (the KL stays), which pulls the aggregate posterior
toward the prior as well as each ``q(z | x)``.

References: Kingma & Welling 2014 (VAE); Davidson et al. 2018 (hyperspherical
VAE); De Cao & Aziz 2020 (Power Spherical); Mathieu et al. 2019 (Poincaré VAE,
wrapped and Riemannian normals); Nagano et al. 2019 (Lorentz wrapped normal);
Skopek, Ganea & Bécigneul 2020 (mixed-curvature VAE: products of
κ-stereographic components with learnable curvature).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam, pyro_method
from torch import nn
from torch.distributions import constraints

from .. import manifolds as _m
from ..geometry import geometry_of
from .marginal import iwae_log_marginal

__all__ = ["ManifoldVAE", "LatentComponent", "mlp"]

_KINDS = ("euclidean", "sphere", "poincare", "lorentz", "stereographic", "so3", "torus", "projective")
_TOPOLOGY = ("so3", "torus", "projective")  # wrapped-normal posterior, uniform prior, location heads centred
_COMPACT = ("sphere",) + _TOPOLOGY  # uniform prior


def mlp(sizes, activation=nn.ReLU, final_activation=None) -> nn.Sequential:
    """A multilayer perceptron ``sizes[0] → … → sizes[-1]``."""
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    if final_activation is not None:
        layers.append(final_activation())
    return nn.Sequential(*layers)


# the latent-space vocabulary of the VAEs, read off a manifold's family
_FAMILY_KINDS = {
    "Sphere": "sphere",
    "Lorentz": "lorentz",
    "Stereographic": "stereographic",
    "Euclidean": "euclidean",
    "SO3": "so3",
    "Torus": "torus",
    "ProjectiveSpace": "projective",
}


class LatentComponent(nn.Module):
    """One factor of a (product) latent space: its manifold, prior, posterior and features.

    Args:
        kind: one of ``"euclidean"``, ``"sphere"``, ``"poincare"``,
            ``"lorentz"``, ``"stereographic"``, ``"so3"``, ``"torus"``, ``"projective"``,
            or a manifold (Euclidean, Sphere, PoincareBall/Stereographic, Lorentz, SO3,
            Torus, ProjectiveSpace) whose kind is inferred.
        dim: intrinsic dimension ``d`` (``None``: 2, and 3 for SO(3), whose dimension is 3).
        curvature: initial curvature (``poincare``: ``c`` of curvature ``-c``,
            default 1; ``lorentz``: ``k`` of curvature ``-1/k``, default 1;
            ``stereographic``: κ, default 0).
        learn_curvature: make the curvature a trainable parameter.
        posterior: ``"power_spherical"`` (default) or ``"vmf"`` for spheres;
            ``"wrapped"`` otherwise.
        prior: ``"wrapped"`` (default) or ``"riemannian"`` (Poincaré ball only), or a learned
            prior module (:class:`~dlmppl.models.priors.FlowMatchingPrior`): see :meth:`set_prior`.
        prior_scale: scale of the prior at the origin.
    """

    def __init__(self, kind, dim: int, curvature=None, learn_curvature=True, posterior=None, prior=None, prior_scale=1.0):
        super().__init__()
        learned = prior if isinstance(prior, nn.Module) else None
        prior = None if learned is not None else prior
        if not isinstance(kind, str):
            M = kind
            kind = _FAMILY_KINDS.get(geometry_of(M).name)
            if kind is None:
                raise ValueError(f"latent: unsupported manifold {type(M).__name__}; use one of {_KINDS}")
            self.manifold = M
        else:
            if kind not in _KINDS:
                raise ValueError(f"latent: unknown latent space {kind!r}; expected one of {_KINDS}")
            self.manifold = self._make_manifold(kind, curvature, learn_curvature)
        if dim is None:
            dim = 3 if kind == "so3" else 2
        if int(dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {dim}")
        if kind == "so3" and int(dim) != 3:
            raise ValueError(f"latent_dim: SO(3) has dimension 3, got {dim}")
        self.kind = kind
        self.geometry = geometry_of(self.manifold)
        self.dim = int(dim)
        if kind == "so3":
            self.event_shape = (3, 3)
        else:
            # ambient coordinates: d + 1 on the sphere, RP^d and the hyperboloid
            self.event_shape = (self.dim + 1 if self.geometry.intrinsic_dim((self.dim + 1,)) == self.dim else self.dim,)
        self.ambient = self.event_shape[-1]
        self.posterior_kind = posterior or ("power_spherical" if kind == "sphere" else "wrapped")
        self.prior_kind = prior or ("uniform" if kind in _COMPACT else "wrapped")
        if self.prior_kind == "riemannian" and kind not in ("poincare", "stereographic"):
            raise ValueError("prior='riemannian' is implemented for the Poincaré ball only")
        if kind in _TOPOLOGY and (self.posterior_kind, self.prior_kind) != ("wrapped", "uniform"):
            raise ValueError(f"latent {kind!r}: posterior must be 'wrapped' and prior 'uniform'")
        self.prior_scale = float(prior_scale)
        self.learned_prior = None
        if learned is not None:
            self.set_prior(learned)

    def set_prior(self, prior) -> None:
        """Replace the fixed prior by a learned one (``None``: back to the fixed prior).

        ``prior``: a module with ``manifold``, ``event_shape`` and ``distribution(batch_shape)``
        (:class:`~dlmppl.models.priors.FlowMatchingPrior`) on a manifold of this component's family
        and dimension.  It is rebound to this component's manifold (a learned curvature is shared)
        and becomes a submodule: :meth:`prior` returns its distribution, so the model's ELBO uses
        its ``log_prob`` and ``ManifoldVAE.sample`` decodes its draws; SVI steps then train its
        parameters with the ELBO unless they are frozen (``prior.requires_grad_(False)``).
        """
        if prior is None:
            self.learned_prior = None
            return
        if not all(hasattr(prior, a) for a in ("manifold", "event_shape", "distribution")):
            raise ValueError(
                f"prior: a learned prior needs manifold, event_shape and distribution(), got {type(prior).__name__}"
            )
        if tuple(prior.event_shape) != tuple(self.event_shape):
            raise ValueError(
                f"prior: event_shape {tuple(prior.event_shape)} differs from the latent's {tuple(self.event_shape)}"
            )
        if geometry_of(prior.manifold).name != self.geometry.name:
            raise ValueError(
                f"prior: built on {type(prior.manifold).__name__}, the latent is {type(self.manifold).__name__}"
            )
        prior.manifold = self.manifold
        self.learned_prior = prior

    @staticmethod
    def _make_manifold(kind, curvature, learn):
        if kind == "euclidean":
            return _m.Euclidean(ndim=1)
        if kind == "sphere":
            return _m.Sphere()
        if kind == "poincare":
            return _m.PoincareBall(1.0 if curvature is None else curvature, learnable=learn)
        if kind == "lorentz":
            return _m.Lorentz(1.0 if curvature is None else curvature, learnable=learn)
        if kind == "so3":
            return _m.SO3()
        if kind == "torus":
            return _m.Torus()
        if kind == "projective":
            return _m.ProjectiveSpace()
        return _m.Stereographic(0.0 if curvature is None else curvature, learnable=learn)

    @property
    def n_loc(self) -> int:
        """Encoder outputs for the location: 6 (SO(3)), 2 per angle (torus), the ambient size (sphere, RP^d), else ``d``."""
        if self.kind == "so3":
            return 6
        if self.kind == "torus":
            return 2 * self.dim
        if self.kind == "projective":
            return self.ambient * (self.ambient + 1) // 2
        return self.ambient if self.kind == "sphere" else self.dim

    @property
    def n_scale(self) -> int:
        return 1 if self.kind in ("sphere", "projective") else self.dim

    def curvature(self) -> torch.Tensor:
        """Sectional curvature of this component."""
        return _m.curvature(self.manifold)

    def origin(self, like: torch.Tensor, batch=()) -> torch.Tensor:
        """The family's origin (keeps the graph of a learnable Lorentz ``k``), shape ``batch + (ambient,)``."""
        o = self.geometry.origin(self.event_shape, like.dtype, like.device)
        return o.expand(tuple(batch) + o.shape)

    def loc_from_tangent(self, a: torch.Tensor) -> torch.Tensor:
        """Map encoder outputs ``a`` (``batch + (n_loc,)``) to a point on the manifold."""
        if self.kind == "sphere":
            return a / a.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        if self.kind == "projective":
            # the leading eigenvector of a symmetric matrix (Peretroukhin et al. 2020, "A smooth
            # representation of belief over SO(3)", for RP^3): a continuous map onto RP^d.  A
            # normalised vector cannot serve: the encoder's output is a function of the data, so
            # over a loop of RP^d (θ → θ + π for RP^1) it returns to itself and the map has even degree
            n = self.ambient
            i, j = torch.triu_indices(n, n, device=a.device)
            A = a.new_zeros(a.shape[:-1] + (n, n))
            A[..., i, j] = a
            A[..., j, i] = a
            return torch.linalg.eigh(A)[1][..., -1]
        if self.kind == "so3":  # Gram–Schmidt of two vectors (Zhou et al. 2019, continuous 6-d representation)
            b1 = a[..., :3] / a[..., :3].norm(dim=-1, keepdim=True).clamp_min(1e-6)
            u = a[..., 3:] - (b1 * a[..., 3:]).sum(-1, keepdim=True) * b1
            b2 = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            return torch.stack([b1, b2, torch.linalg.cross(b1, b2)], -1)
        if self.kind == "torus":
            a = a.reshape(a.shape[:-1] + (self.dim, 2))
            return torch.atan2(a[..., 1], a[..., 0])
        # a: coordinates in Riemannian units in the orthonormal frame at the origin
        return self.geometry.exp_frame(self.origin(a), a)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """Coordinates fed to the decoder: Riemannian normal coordinates at the origin.

        Euclidean: ``z``; sphere: ``z`` itself (ambient coordinates, continuous
        on the whole sphere); Lorentz: spatial part of ``log_o z``;
        κ-stereographic: ``2 log_0 z`` (smooth in κ through 0); SO(3): the 9 matrix entries;
        torus: ``(cos θ, sin θ)``; RP^d: the upper triangle of ``z zᵀ`` (the same for ``±z``).
        All continuous on the whole manifold.
        """
        if self.kind == "sphere":
            return z
        if self.kind == "so3":
            return z.flatten(-2)
        if self.kind == "torus":
            return torch.cat([z.cos(), z.sin()], -1)
        if self.kind == "projective":
            i, j = torch.triu_indices(self.ambient, self.ambient, device=z.device)
            return z[..., i] * z[..., j]
        return self.geometry.log_frame(self.origin(z), z)

    def n_features(self) -> int:
        # as many as the location head has outputs, but the 9 matrix entries of SO(3)
        return 9 if self.kind == "so3" else self.n_loc

    def dist(self, z: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Geodesic distances ``batch + (A,)`` from ``z`` (``batch + event``) to anchors ``(A,) + event``."""
        return self.geometry.dist(z.unsqueeze(-1 - len(self.event_shape)), anchors)

    def posterior(self, a: torch.Tensor, b: torch.Tensor):
        """``q(z | x)`` from encoder heads ``a`` (location) and ``b`` (scale), batch ``a.shape[:-1]``.

        Hyperbolic latents: the location's radius and the scale are capped where the dtype
        cannot represent the draws (:func:`dlmppl.distributions.wrapped_normal.keep_representable`;
        radius 15.25/√c in float32 for the Poincaré ball).
        """
        if self.kind in ("poincare", "stereographic", "lorentz") and self.posterior_kind == "wrapped":
            from ..distributions.wrapped_normal import keep_representable

            a, scale = keep_representable(self.manifold, a, nn.functional.softplus(b) + 1e-4)
            return self._wrapped(self.loc_from_tangent(a), scale)
        loc = self.loc_from_tangent(a)
        if self.kind == "euclidean":
            return dist.Normal(loc, nn.functional.softplus(b) + 1e-4).to_event(1)
        if self.kind == "sphere":
            conc = nn.functional.softplus(b.squeeze(-1)) + 1.0
            if self.posterior_kind == "vmf":
                from ..distributions.von_mises_fisher import VonMisesFisher

                return VonMisesFisher(loc, conc)
            from ..distributions.power_spherical import PowerSpherical

            return PowerSpherical(loc, conc)
        return self._wrapped(loc, nn.functional.softplus(b) + 1e-4)

    def _wrapped(self, loc, scale):
        from ..distributions.wrapped_normal import WrappedNormal

        return WrappedNormal(self.manifold, loc, scale)

    def prior(self, like: torch.Tensor, batch):
        """``p(z)`` with batch shape ``batch`` (the learned prior's distribution when one is set)."""
        batch = tuple(batch)
        if self.learned_prior is not None:
            return self.learned_prior.distribution(batch)
        if self.kind == "euclidean":
            zero = torch.zeros(batch + (self.dim,), dtype=like.dtype, device=like.device)
            return dist.Normal(zero, self.prior_scale).to_event(1)
        if self.prior_kind == "uniform":
            from ..distributions.uniform import ManifoldUniform

            return ManifoldUniform(self.manifold, self.event_shape, batch_shape=batch, dtype=like.dtype, device=like.device)
        o = self.origin(like, batch)
        scale = torch.full(batch + (1,), self.prior_scale, dtype=like.dtype, device=like.device)
        if self.prior_kind == "riemannian":
            from ..distributions.riemannian_normal import RiemannianNormal

            return RiemannianNormal(self.manifold, o, scale.squeeze(-1))
        from ..distributions.wrapped_normal import WrappedNormal

        return WrappedNormal(self.manifold, o, scale)


class _Landmark(nn.Module):
    """``x_j = b_j + s_j d_j``: an affine read-out of each output's own landmark distance."""

    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, d):
        return self.bias + self.scale * d


def _parse_latent(latent, latent_dim, curvature, learn_curvature, posterior, prior, prior_scale):
    if isinstance(latent, (list, tuple)):
        comps = []
        for item in latent:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise ValueError(f"latent: a product is a list of (name_or_manifold, dim) pairs, got {item!r}")
            comps.append(LatentComponent(item[0], item[1], None, learn_curvature, None, None, prior_scale))
        return comps
    return [LatentComponent(latent, latent_dim, curvature, learn_curvature, posterior, prior, prior_scale)]


def _check_rows(x: torch.Tensor, where: str) -> int:
    """``x.shape[0]``; a ``ValueError`` naming ``x`` for an empty batch, which ``pyro.plate`` cannot hold
    (it raises ``ZeroDivisionError`` for size 0); ``where``: the method, for the message.  The
    conveniences (:meth:`ManifoldVAE.codes`, ``reconstruct``, ``encode``) take empty batches."""
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(
            f"x: {where} needs a batch of at least one row, got shape {tuple(x.shape)} "
            "(pyro.plate has no size 0; skip empty batches in the training loop)"
        )
    return x.shape[0]


class ManifoldVAE(PyroModule):
    r"""A VAE whose latent space is a manifold or a product of manifolds.

    Args:
        data_dim: dimension ``D`` of an observation (inputs ``x`` have shape ``(N, D)``).
        latent: a name (``"euclidean"``, ``"sphere"``, ``"poincare"``,
            ``"lorentz"``, ``"stereographic"``, ``"so3"``, ``"torus"``,
            ``"projective"``), a manifold, or a list of
            ``(name_or_manifold, dim)`` pairs for a product latent space (the
            mixed-curvature VAE of Skopek et al. 2020; one latent site
            ``z0, z1, …`` per factor).
        latent_dim: intrinsic latent dimension (single factor; default 2, and 3 for ``"so3"``).
        hidden: hidden layer widths of the encoder and decoder MLPs.
        likelihood: ``"bernoulli"`` (decoder gives logits) or ``"gaussian"``
            (decoder gives means; scale ``obs_scale``).
        obs_scale: Gaussian observation scale; ``None`` makes it a learned
            positive parameter.
        curvature, learn_curvature: initial curvature and whether it is trained
            (see :class:`LatentComponent`).
        posterior, prior: see :class:`LatentComponent`; ``prior`` may be a
            :class:`~dlmppl.models.priors.FlowMatchingPrior` (single factor), trained jointly by the
            ELBO (its ``log_prob`` in every step: costly, see :mod:`dlmppl.models.priors`); or fit
            one to the codes after training and call :meth:`set_prior` (two-stage).
        decoder: ``"mlp"``: an MLP on Riemannian normal coordinates at the
            origin; ``"distance"``: a first layer of geodesic distances to
            ``n_anchors`` learned anchor points (a geometry-aware layer in the
            spirit of Mathieu et al.'s gyroplane layer), then the MLP;
            ``"landmark"``: output ``j`` is ``b_j + s_j d(z, a_j)`` with one
            learned landmark ``a_j`` per output (a metric-MDS decoder: the
            latent geometry alone must reproduce the observed distances, so
            the learned curvature is identified by the data).
        activation: hidden-layer activation class.
        decoder_hidden: hidden widths of the decoder if different from
            ``hidden`` (``()`` gives a linear read-out, e.g. of the distance layer).

        prior_matching: ``None``, ``"sliced"`` (sliced ``SW_2²`` with ``n_projections``
            slices: Euclidean, spherical, horospherical on κ < 0, Veronese on RP^d; not on the
            torus, whose slicing would not be geodesic) or ``"sinkhorn"`` (entropic ``W_2²``
            with the geodesic cost, ``matching_reg`` in units of the cost): the OT regulariser
            of the module docstring; not for SO(3) latents.
        matching_weight: its weight λ ≥ 0 (per datum: the factor is ``-λ N W`` for a batch of ``N``).
        n_projections, matching_reg: slices of ``"sliced"``, ε of ``"sinkhorn"``.

    Shapes: ``model(x)``/``guide(x)`` take ``x`` ``(N, D)``; the latent site
    ``z`` has batch shape ``(N,)`` and the ambient event shape of its manifold.

    Training: ``SVI(vae.model, vae.guide, RiemannianAdam({...}), LeanTrace_ELBO())``
    (:class:`~dlmppl.inference.LeanTrace_ELBO`: ``Trace_ELBO``'s value and gradients with less
    per-step machinery when Pyro's validation is off; ``benchmarks/bench_vae.py`` (b)).
    """

    def __init__(
        self,
        data_dim: int,
        latent="euclidean",
        latent_dim: int | None = None,
        hidden=(128,),
        likelihood: str = "bernoulli",
        obs_scale: float | None = None,
        curvature=None,
        learn_curvature: bool = True,
        posterior: str | None = None,
        prior=None,
        prior_scale: float = 1.0,
        decoder: str = "mlp",
        n_anchors: int = 16,
        activation=nn.ReLU,
        decoder_hidden=None,
        prior_matching: str | None = None,
        matching_weight: float = 1.0,
        n_projections: int = 50,
        matching_reg: float = 0.05,
    ):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        if decoder not in ("mlp", "distance", "landmark"):
            raise ValueError(f"decoder must be 'mlp', 'distance' or 'landmark', got {decoder!r}")
        self.data_dim = int(data_dim)
        self.likelihood = likelihood
        self.decoder_kind = decoder
        comps = _parse_latent(latent, latent_dim, curvature, learn_curvature, posterior, prior, prior_scale)
        self.components = nn.ModuleList(comps)
        self.site_names = ["z"] if len(comps) == 1 else [f"z{i}" for i in range(len(comps))]
        if prior_matching not in (None, "sliced", "sinkhorn"):
            raise ValueError(f"prior_matching must be None, 'sliced' or 'sinkhorn', got {prior_matching!r}")
        if not (matching_weight >= 0 and matching_weight < float("inf")):
            raise ValueError(f"matching_weight must be finite and >= 0, got {matching_weight}")
        if prior_matching is not None and any(c.kind == "so3" for c in comps):
            raise ValueError("prior_matching: the OT losses take point clouds (n, D), not SO(3)'s (n, 3, 3) rotations")
        if prior_matching == "sliced" and any(c.kind == "torus" for c in comps):
            raise ValueError("prior_matching='sliced' has no geodesic slicing on 'torus' latents: use 'sinkhorn'")
        self.prior_matching = prior_matching
        self.matching_weight = float(matching_weight)
        self.n_projections = int(n_projections)
        self.matching_reg = float(matching_reg)
        hidden = tuple(hidden)
        n_head = sum(c.n_loc + c.n_scale for c in comps)
        self.encoder = mlp((self.data_dim,) + hidden + (n_head,), activation)
        # compact latents of another topology: centre the location head on the first training batch
        self.register_buffer("_loc_centred", torch.tensor(not any(c.kind in _TOPOLOGY for c in comps)))
        # a Python mirror of the buffer, which the guide reads at each step without a host sync;
        # the buffer (for state_dict) stays the reference: load_state_dict and centre_locations reset it
        self._loc_centred_py = bool(self._loc_centred)
        if decoder == "landmark":
            n_anchors = self.data_dim
        if decoder in ("distance", "landmark"):
            self.anchors = nn.ParameterList([nn.Parameter(0.5 * torch.randn(n_anchors, c.n_loc)) for c in comps])
            n_in = n_anchors * len(comps)
        else:
            n_in = sum(c.n_features() for c in comps)
        if decoder == "landmark":
            # x_j = bias_j + scale_j * d(z, b_j): one landmark per output
            self.decoder = _Landmark(self.data_dim)
        else:
            dec_hidden = hidden if decoder_hidden is None else tuple(decoder_hidden)
            self.decoder = mlp((n_in,) + dec_hidden + (self.data_dim,), activation)
        if likelihood == "gaussian":
            if obs_scale is None:
                self.obs_scale = PyroParam(torch.tensor(0.5), constraints.positive)
            else:
                if not obs_scale > 0:
                    raise ValueError(f"obs_scale must be > 0, got {obs_scale}")
                self.register_buffer("_fixed_obs_scale", torch.tensor(float(obs_scale)))

    def set_prior(self, prior, component: int = 0) -> ManifoldVAE:
        """Use a learned prior for latent factor ``component`` (two-stage training; ``None`` undoes it).

        After training, fit e.g. a :class:`~dlmppl.models.priors.FlowMatchingPrior` to the
        posterior codes, then set it: ``vae.sample(n)`` decodes its draws and ``vae.model`` scores
        ``z`` with its ``log_prob`` (:meth:`LatentComponent.set_prior`)::

            c = vae.components[0]
            prior = FlowMatchingPrior(c.manifold, c.event_shape)
            prior.fit(vae.codes(x)[0])
            vae.set_prior(prior)

        Returns ``self``.
        """
        n = len(self.components)
        if isinstance(component, bool) or not isinstance(component, int) or not 0 <= component < n:
            raise ValueError(f"component: an index below {n}, got {component!r}")
        self.components[component].set_prior(prior)
        return self

    # -- geometry ---------------------------------------------------------
    def curvatures(self) -> list:
        """Sectional curvature of every latent factor (tensors)."""
        return [c.curvature() for c in self.components]

    def _anchor_points(self, c, a, like):
        return c.loc_from_tangent(a.to(like))

    # -- networks ---------------------------------------------------------
    def encode(self, x: torch.Tensor, _components=None) -> list:
        """Posterior factors ``q(z_i | x)``, each with batch shape ``x.shape[:-1]``."""
        h = self.encoder(x)
        out, pos = [], 0
        for c in self.components if _components is None else _components:
            a = h[..., pos : pos + c.n_loc]
            pos += c.n_loc
            b = h[..., pos : pos + c.n_scale]
            pos += c.n_scale
            out.append(c.posterior(a, b))
        return out

    def decode(self, zs, _components=None) -> torch.Tensor:
        """Decoder output (logits or means, ``batch + (D,)``) for latent points ``zs`` (a tensor or list)."""
        # each attribute access of a submodule registers its parameters with Pyro: do it once
        comps = self.components if _components is None else _components
        anchors = self.anchors if self.decoder_kind in ("landmark", "distance") else None
        return self._decode(zs, comps, self.decoder, anchors)

    def _decode(self, zs, comps, decoder, anchors) -> torch.Tensor:
        """:meth:`decode` with the submodules already fetched (registered with Pyro)."""
        if isinstance(zs, torch.Tensor):
            zs = [zs]
        if anchors is not None:
            dists = [c.dist(z, self._anchor_points(c, a, z)) for c, a, z in zip(comps, anchors, zs, strict=True)]
            if self.decoder_kind == "landmark":
                d2 = sum(d.pow(2) for d in dists)
                return decoder(d2.clamp_min(1e-12).sqrt())
            feats = dists
        else:
            feats = [c.features(z) for c, z in zip(comps, zs, strict=True)]
        return decoder(torch.cat(feats, -1) if len(feats) > 1 else feats[0])

    def _obs_scale(self):
        if "_fixed_obs_scale" in self._buffers:
            return self._fixed_obs_scale
        return self.obs_scale

    def _likelihood(self, out, obs_scale=None):
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self._obs_scale() if obs_scale is None else obs_scale).to_event(1)

    # -- Pyro programs ----------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor):
        """``z ~ p(z)``, ``x ~ p(x | decode(z))`` in a plate ``"data"`` over the rows of ``x``."""
        n = _check_rows(x, "ManifoldVAE.model")
        # the networks' parameters register with Pyro here, outside the plate, which would
        # otherwise process each of their param messages (no effect on their values: no event_dim)
        comps, decoder = self.components, self.decoder
        anchors = self.anchors if self.decoder_kind in ("landmark", "distance") else None
        obs_scale = self._obs_scale() if self.likelihood == "gaussian" else None
        with pyro.plate("data", n):
            zs = [pyro.sample(name, c.prior(x, (n,))) for name, c in zip(self.site_names, comps, strict=True)]
            out = self._decode(zs, comps, decoder, anchors)
            out = pyro.sample("x", self._likelihood(out, obs_scale), obs=x)
        if self.prior_matching is not None and self.matching_weight > 0 and n > 0:
            pyro.factor("prior_matching", -self.matching_weight * n * self.prior_matching_cost(zs, comps))
        return out

    def prior_matching_cost(self, zs, _components=None) -> torch.Tensor:
        """``Σ_i W(codes_i, prior draws_i)`` over the latent factors (0-d tensor): the OT cost
        (``W_2²``, geodesic ground cost) of :attr:`prior_matching` between the codes ``zs``
        (a tensor or list, each ``(N,) + event``) and ``N`` fresh draws of each prior
        (reparametrised where the prior allows, so that learned curvatures get gradients)."""
        from ..losses import wasserstein

        if isinstance(zs, torch.Tensor):
            zs = [zs]
        comps = self.components if _components is None else _components
        method = self.prior_matching or "sliced"
        total = 0.0
        for c, z in zip(comps, zs, strict=True):
            n = z.shape[0]
            p = c.prior(z, (n,))
            y = p.rsample() if p.has_rsample else p.sample()
            M = None if c.kind == "euclidean" else c.manifold
            if method == "sliced":
                total = total + wasserstein(z, y, M, p=2, method="sliced", n_projections=self.n_projections)
            else:
                total = total + wasserstein(z, y, M, p=2, method="sinkhorn", reg=self.matching_reg)
        return total

    @pyro_method
    def guide(self, x: torch.Tensor):
        """``z ~ q(z | x)`` from the encoder, same plate as :meth:`model`."""
        n = _check_rows(x, "ManifoldVAE.guide")
        if self.training and not self._loc_centred_py and n > 1:
            self.centre_locations(x)
        qs = self.encode(x)  # outside the plate, as in model: the encoder registers without it
        with pyro.plate("data", n):
            return [pyro.sample(name, q) for name, q in zip(self.site_names, qs, strict=True)]

    @torch.no_grad()
    def centre_locations(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of the location heads of SO(3), torus and RP^d latents.

        The encoder's map from the data to such a latent has a degree (winding number, for a
        circle): a topological invariant that gradient steps cannot change, so the random
        initialisation decides it and training stays at, e.g., degree 0 or 2 for a circle
        factor (Falorsi et al. 2018, "Explorations in Homeomorphic Variational Auto-Encoding",
        sec. 5, saw such local optima).  A randomly initialised MLP's outputs on the data sit
        in a small cloud offset from the origin (degree 0 after ``atan2``/normalisation);
        shifting the last layer's bias so that the location outputs of the batch ``x``
        ``(N, D)`` have mean zero puts the origin inside the cloud, where the data's own
        leading harmonic decides the degree (data-dependent initialisation, as in Salimans &
        Kingma 2016 and Krähenbühl et al. 2016).  Called by :meth:`guide` on the first training
        batch; does nothing for other latents.
        """
        h = self.encoder(x)
        last = self.encoder[-1]
        pos = 0
        for c in self.components:
            if c.kind in _TOPOLOGY:
                last.bias[pos : pos + c.n_loc] -= h[..., pos : pos + c.n_loc].reshape(-1, c.n_loc).mean(0)
            pos += c.n_loc + c.n_scale
        self._loc_centred.fill_(True)
        self._loc_centred_py = True

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._loc_centred_py = bool(self._loc_centred)  # the buffer may have been loaded

    # -- conveniences -----------------------------------------------------
    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> list:
        """Posterior locations of ``x``, one tensor per latent factor, each ``(N,) + event_shape``, on its manifold."""
        return [q.mean if isinstance(q, dist.Independent) else q.loc for q in self.encode(x)]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior locations: probabilities (Bernoulli) or means (Gaussian), ``(N, D)``."""
        out = self.decode(self.codes(x))
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    @torch.no_grad()
    def sample(self, n: int, like: torch.Tensor | None = None, *, method: str = "prior",
               data: torch.Tensor | None = None, **intrinsic_kwargs) -> torch.Tensor:
        """Generate ``n`` observations: probabilities (Bernoulli) or means (Gaussian), ``(n, D)``.

        ``method="prior"`` decodes prior draws.  ``method="intrinsic"`` (Euclidean
        latent only) decodes draws of the intrinsic uniform measure ∝ √det G(z)
        of the Chadebec & Allassonnière (2022) metric built from the encoder on
        the training ``data`` ``(N, D)``, sampled by HMC; ``intrinsic_kwargs``
        go to :func:`dlmppl.models.intrinsic_sample`.
        """
        if method == "intrinsic":
            if data is None:
                raise ValueError("sample(method='intrinsic') needs the training data: data=(N, D) tensor")
            from .intrinsic import intrinsic_sample

            return intrinsic_sample(self, n, data, **intrinsic_kwargs)
        if method != "prior":
            raise ValueError(f"method must be 'prior' or 'intrinsic', got {method!r}")
        like = next(self.decoder.parameters()) if like is None else like
        zs = [c.prior(like, (n,)).sample() for c in self.components]
        out = self.decode(zs)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def log_marginal(self, x: torch.Tensor, num_particles: int = 500, chunk_size: int = 100) -> torch.Tensor:
        """IWAE estimate of ``log p(x_i)`` with ``K = num_particles`` (shape ``(N,)``)."""
        return iwae_log_marginal(self.model, self.guide, x, num_particles=num_particles, chunk_size=chunk_size)

