r"""Learned priors on a latent manifold: Riemannian flow matching.

:class:`FlowMatchingPrior` is a continuous normalising flow on a manifold ``M`` trained by
*Riemannian flow matching* (Chen & Lipman 2024, "Flow Matching on General Geometries",
ICLR).  A time-dependent vector field ``v_θ(z, t) ∈ T_z M`` carries a base law ``p_0`` at
``t = 0`` to the learned law ``p_1`` at ``t = 1`` along the ODE ``ż = v_θ(z, t)``.

Training (:meth:`FlowMatchingPrior.fit`) is simulation-free: for a code ``z_1`` (data), a base
draw ``z_0 ~ p_0`` and ``t ~ U(0, 1)``, the conditional path is the geodesic
``z_t = exp_{z_0}(t log_{z_0} z_1)`` with velocity ``u_t = log_{z_t}(z_1) / (1 - t)``
(``= -log_{z_t}(z_0) / t``, the form used for ``t ≥ ½``, where it is better conditioned), and
the loss is ``E ‖v_θ(z_t, t) - u_t‖²_{g(z_t)}`` (Riemannian norm), whose minimiser generates
a flow from ``p_0`` to the data law (Chen & Lipman 2024, thm. 3.1; premetric = geodesic
distance).  Every family with closed-form ``exp``/``log`` in :mod:`dlmppl.geometry` works:
Euclidean space, spheres, κ-stereographic models (Poincaré ball), the hyperboloid, SO(3),
tori, ``RP^n`` and products of these.

Base law ``p_0``: the uniform law (normalised volume, :class:`~dlmppl.distributions.ManifoldUniform`)
on a compact family; an isotropic :class:`~dlmppl.distributions.WrappedNormal` at the
family's origin on a non-compact one, with scale ``σ`` (``base_scale``; by default chosen at
:meth:`~FlowMatchingPrior.fit` from the spread of the data about the origin,
``σ² = E d(o, z)² / d``, and 1 before a fit).  A product gets the product of its factors' bases.

Sampling integrates the ODE from ``t = 0`` to ``1`` with an explicit Runge–Kutta method in
the normal coordinates at the current point ("Runge–Kutta–Munthe-Kaas" on a general
manifold): from ``z``, the stage points are ``y_s = exp_z(h Σ_j a_sj K_j)`` and the stage
slopes ``K_s = d(log_z)_{y_s} v(y_s, t + c_s h)`` are pulled back to ``T_z M`` exactly (a
Jacobian–vector product of the closed-form logarithm), then ``z ← exp_z(h Σ_s b_s K_s)``.
This is classical RK in a chart, so ``"rk4"`` keeps order 4 (``"midpoint"`` 2, ``"euler"``
1, which is just ``z ← exp_z(h v)``); every point is an exponential map of a point (then the
family's round-off clean-up ``project``), so it stays on ``M`` to rounding.

Density (:meth:`~FlowMatchingPrior.log_prob`, with respect to the Riemannian volume, as
every density in dlmppl): ``d/dt log p_t(z_t) = -div_M v(z_t, t)``, so
``log p_1(z) = log p_0(z_0) - ∫_0^1 div_M v(z_t, t) dt`` with ``z_0`` the ODE solution
backwards from ``z`` (the same RK scheme on the augmented state, Chen et al. 2018 "Neural
ODEs"; Mathieu & Nickel 2020 "Riemannian Continuous Normalizing Flows").  The Riemannian
divergence is computed in an orthonormal frame ``(e_i)`` of ``T_z M`` from the family's
ambient metric ``h_z(a, b) = ⟨covector_z(a), b⟩`` (the metric of which ``M``'s is the
restriction: the Euclidean one for spheres, ``½ tr`` for SO(3), Minkowski for the
hyperboloid, ``λ_z² I`` for κ-stereographic models):

.. math:: \operatorname{div}_M v(z) = \sum_i h_z(Dv(z)[e_i], e_i) + \tfrac12 \sum_i (D_v h)_z(e_i, e_i),

the second term being the trace of the Christoffel symbols (zero where ``h`` is constant).
This is the Gauss formula (the Levi-Civita connection of ``M`` is the ``h``-tangential part
of the ambient one) and needs no chart.  Exact: ``d`` vector–Jacobian products (for small
intrinsic dimension ``d``); ``hutchinson=True``: the unbiased estimate with one probe
``w = Σ ε_i e_i`` (Rademacher or Gaussian ``ε``), ``h(Dv[w], w) + ½ (D_v h)(w, w)``
(Hutchinson 1989; Grathwohl et al. 2019, FFJORD).  ``log_prob`` is differentiable in ``z``
and in the field's parameters, so the prior can sit in an ELBO.

Cost.  One density evaluation runs ``num_steps × stages`` field evaluations (4 stages for
``"rk4"``), each with ``d`` (exact) or 1 (Hutchinson) backward passes for the divergence and
one Jacobian–vector product of ``log``; backpropagating through it (a prior trained jointly
inside an ELBO) roughly doubles that again.  Two-stage training (fit the prior to the codes
of a trained VAE) never needs it.

Use with :class:`~dlmppl.models.ManifoldVAE`::

    # two-stage (like latent diffusion): fit to the posterior codes after training, then set it
    c = vae.components[0]
    prior = FlowMatchingPrior(c.manifold, c.event_shape)
    prior.fit(vae.codes(x)[0])
    vae.set_prior(prior)            # vae.sample(n) decodes flow draws; vae.model scores z by log_prob

    # joint: the ELBO's log p(z) term trains the field by maximum likelihood on posterior draws
    vae = ManifoldVAE(D, "poincare", 2, prior=FlowMatchingPrior(PoincareBall(), (2,), num_steps=4))

Joint training evaluates :meth:`~FlowMatchingPrior.log_prob` (and its gradient) in every SVI
step: with the defaults (16 RK4 steps) about 64 field evaluations and ``64 d`` extra backward
passes per step, so fewer ``num_steps`` (or ``hutchinson=True`` for large ``d``) are advisable
there; the model is then a continuous normalising flow prior trained by likelihood, not by flow
matching.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import constraints as _constraints
from .._shapes import broadcast_shapes
from ..distributions.base import ManifoldDistribution
from ..geometry import geometry_of
from .vae import mlp

__all__ = ["FlowMatchingPrior", "FlowPriorDistribution"]

_TABLEAUX = {
    # (c, a, b) of explicit Runge-Kutta methods
    "euler": ((0.0,), (), (1.0,)),
    "midpoint": ((0.0, 0.5), ((0.5,),), (0.0, 1.0)),
    "rk4": ((0.0, 0.5, 0.5, 1.0), ((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}


# ------------------------------------------------------------------------------------------- heads


class _Head:
    """How the network reads and writes one (non-product) factor: input features, output size, vector.

    Compact factors: the flattened ambient point in, an ambient vector out (projected onto
    ``T_z M`` later); the torus reads ``(cos θ, sin θ)`` (its angle coordinates wrap); ``RP^n``
    reads the sign-invariant entries of ``z zᵀ`` and writes ``A(z zᵀ) z`` (odd in ``z``: the same
    tangent vector for both lifts ``±z`` of a point).  Non-compact factors (Euclidean,
    hyperbolic): ``log_o z`` in (the Riemannian normal coordinates at the origin: ambient
    coordinates crowd at the Poincaré ball's boundary and grow like ``e^r`` on the hyperboloid),
    coordinates in the orthonormal frame at ``z`` out (Riemannian units).
    """

    def __init__(self, geometry, shape):
        # static: the geometry itself is passed at each call (a VAE may rebind the prior's manifold)
        self.name = geometry.name
        self.shape = tuple(shape)
        size = math.prod(self.shape)
        self.chart = geometry.log_volume(self.shape) is None
        if self.chart:
            self.n_in, self.n_out = size, int(geometry.intrinsic_dim(self.shape))
        elif self.name == "Torus":
            self.n_in, self.n_out = 2 * size, size
        elif self.name == "ProjectiveSpace":
            self.n_in, self.n_out = size * (size + 1) // 2, size * size
        else:
            self.n_in, self.n_out = size, size

    def features(self, geometry, z):
        batch = z.shape[: z.dim() - len(self.shape)]
        if self.chart:
            o = geometry.origin(self.shape, z.dtype, z.device)
            return geometry.log(o, z).reshape(batch + (-1,))
        if self.name == "Torus":
            return torch.cat([z.cos(), z.sin()], -1)
        if self.name == "ProjectiveSpace":
            i, j = torch.triu_indices(self.shape[-1], self.shape[-1], device=z.device)
            return z[..., i] * z[..., j]
        return z.reshape(batch + (-1,))

    def vector(self, geometry, z, raw):
        if self.chart:
            frame = geometry.frame(z)  # batch + (d,) + shape
            return (raw.reshape(raw.shape + (1,) * len(self.shape)) * frame).sum(len(raw.shape) - 1)
        if self.name == "ProjectiveSpace":
            n = self.shape[-1]
            return (raw.reshape(raw.shape[:-1] + (n, n)) @ z.unsqueeze(-1)).squeeze(-1)
        return raw.reshape(raw.shape[:-1] + self.shape)


def _time_features(t, n_freq):
    """``(t, sin 2πkt, cos 2πkt)``, ``k = 1..n_freq``: shape ``t.shape + (1 + 2 n_freq,)``."""
    t = t.unsqueeze(-1)
    if n_freq == 0:
        return t
    k = 2 * math.pi * torch.arange(1, n_freq + 1, dtype=t.dtype, device=t.device)
    return torch.cat([t, torch.sin(k * t), torch.cos(k * t)], -1)


class _MLPField(nn.Module):
    """``v(z, t)`` before projection: an MLP on (features of ``z``, their random Fourier features, time).

    The per-factor features of ``z`` are standardised (shift and scale set from the codes at the
    first :meth:`FlowMatchingPrior.fit`), then enriched with ``sin/cos(x B)``, ``B`` a fixed
    Gaussian matrix of standard deviation ``fourier_scale`` (Tancik et al. 2020, "Fourier
    features let networks learn high frequency functions"): a small MLP then resolves
    concentrated modes in a few hundred steps instead of tens of thousands.
    """

    def __init__(self, heads, hidden, time_frequencies, activation, fourier_features, fourier_scale):
        super().__init__()
        self.heads = heads
        self.time_frequencies = int(time_frequencies)
        n_feat = sum(h.n_in for h in heads)
        self.register_buffer("shift", torch.zeros(n_feat))
        self.register_buffer("scale", torch.ones(n_feat))
        self.register_buffer("standardised", torch.tensor(False))
        self.register_buffer("freqs", float(fourier_scale) * torch.randn(n_feat, int(fourier_features)))
        n_in = n_feat + 2 * int(fourier_features) + 1 + 2 * self.time_frequencies
        sizes = (n_in,) + tuple(int(s) for s in hidden) + (sum(h.n_out for h in heads),)
        self.net = mlp(sizes, activation)

    def features(self, geometries, parts):
        return torch.cat(
            [h.features(g, p) for h, g, p in zip(self.heads, geometries, parts, strict=True)], -1
        )

    @torch.no_grad()
    def standardise(self, geometries, parts):
        """Set the feature shift/scale from codes (their mean and standard deviation, scale ≥ 1e-3 · max)."""
        x = self.features(geometries, parts).to(self.shift.dtype)
        sd = x.std(0) if x.shape[0] > 1 else torch.ones_like(self.scale)
        self.shift.copy_(x.mean(0))
        self.scale.copy_(sd.clamp_min(1e-3 * float(sd.max().clamp_min(1e-12))))
        self.standardised.fill_(True)

    def forward(self, geometries, parts, t):
        dtype = self.net[0].weight.dtype
        x = (self.features(geometries, parts).to(dtype) - self.shift.to(dtype)) / self.scale.to(dtype)
        xb = x @ self.freqs.to(dtype)
        tf = _time_features(t.to(dtype), self.time_frequencies)
        out = self.net(torch.cat([x, xb.sin(), xb.cos(), tf], -1)).to(parts[0].dtype)
        vecs, pos = [], 0
        for h, g, p in zip(self.heads, geometries, parts, strict=True):
            vecs.append(h.vector(g, p, out[..., pos : pos + h.n_out]))
            pos += h.n_out
        return vecs


# ------------------------------------------------------------------------------------------- prior


class FlowMatchingPrior(nn.Module):
    r"""A flow-matching prior on a manifold (Chen & Lipman 2024; module docstring).

    Args:
        manifold: a geoopt manifold with closed-form geodesics (Euclidean, Sphere,
            PoincareBall/Stereographic, Lorentz, SO3, Torus, ProjectiveSpace, products).  It is
            kept as a plain attribute, not a submodule: a learned curvature belongs to whoever
            owns the manifold (a VAE's latent component rebinds the prior to its own manifold).
        event_shape: ambient shape of one point (``(d+1,)`` for ``S^d``, ``(3, 3)`` for SO(3),
            ``(D,)`` for a product of total ambient size ``D``).
        hidden: hidden widths of the MLP (SiLU activations, Chen & Lipman's choice).
        fourier_features, fourier_scale: the MLP also reads ``sin/cos(x B)`` of the standardised
            point features ``x``, ``B`` a fixed ``N(0, fourier_scale²)`` matrix with
            ``fourier_features`` columns (``0``: none).
        time_frequencies: the MLP reads ``t`` and ``sin/cos(2πkt)``, ``k ≤ time_frequencies``.
        base_scale: ``σ`` of the wrapped-normal base of non-compact factors (Riemannian units);
            ``None``: ``√(E d(o, z)² / d)`` of the codes at :meth:`fit` (1 before a fit).
        num_steps, method: default ODE discretisation (``"rk4"``, ``"midpoint"``, ``"euler"``).
        hutchinson, probe: default divergence of :meth:`log_prob` (exact, or Hutchinson with
            ``"rademacher"``/``"gaussian"`` probes).
        field: a module ``(z, t) ↦`` ambient vectors ``batch + event`` replacing the MLP
            (projected onto ``T_z M``; ``z`` ``(B,) + event``, ``t`` ``(B,)``): for a known field.

    dtype and device are the module's (``.double()``, ``.to(device)``); points of another
    dtype are fed to the network in the module's dtype, the geometry runs in theirs.
    """

    def __init__(
        self,
        manifold,
        event_shape,
        hidden=(64, 64),
        fourier_features: int = 64,
        fourier_scale: float = 3.0,
        time_frequencies: int = 0,
        base_scale=None,
        num_steps: int = 16,
        method: str = "rk4",
        hutchinson: bool = False,
        probe: str = "rademacher",
        field: nn.Module | None = None,
        activation=nn.SiLU,
    ):
        super().__init__()
        try:
            self.event_shape = torch.Size(event_shape)
        except TypeError:
            raise ValueError(
                f"event_shape: FlowMatchingPrior needs a tuple of ints, got {event_shape!r}"
            ) from None
        self.manifold = manifold  # (a property: a plain attribute, see the docstring)
        g = self.geometry
        self._dim = int(g.intrinsic_dim(self.event_shape))
        if self._dim < 1:
            raise ValueError(
                f"event_shape: {tuple(self.event_shape)} gives a manifold of dimension {self._dim}"
            )
        self._check_method(method, num_steps)
        self._check_probe(probe)
        self.num_steps, self.method = int(num_steps), method
        self.hutchinson, self.probe = bool(hutchinson), probe
        shapes = self._leaf_shapes()
        self.heads = [_Head(lg, sh) for lg, sh in zip(self._leaves(), shapes, strict=True)]
        if field is None:
            field = _MLPField(
                self.heads, hidden, time_frequencies, activation, fourier_features, fourier_scale
            )
        self.field = field
        if base_scale is not None and not (float(base_scale) > 0 and math.isfinite(float(base_scale))):
            raise ValueError(f"base_scale: must be positive and finite, got {base_scale}")
        self.auto_scale = base_scale is None
        self.register_buffer(
            "base_scales", torch.full((len(shapes),), 1.0 if base_scale is None else float(base_scale))
        )
        self.register_buffer(
            "_anchor", torch.zeros(())
        )  # follows .to(), .double(): the module's dtype/device

    # -------------------------------------------------------------------------------- set-up

    def __setattr__(self, name, value):
        if name == "manifold":  # a geoopt manifold is an nn.Module: keep it out of the submodules
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def manifold(self):
        return self.__dict__["_manifold"]

    @manifold.setter
    def manifold(self, M):
        """Rebind to ``M``, a manifold of the same family and dimension (a VAE's own latent manifold)."""
        g = geometry_of(M)
        old = self.__dict__.get("_geometry")
        if old is not None and (g.name != old.name or g.intrinsic_dim(self.event_shape) != self._dim):
            raise ValueError(f"manifold: the prior was built for {old.name}, got {type(M).__name__}")
        self.__dict__["_manifold"] = M
        self.__dict__["_geometry"] = g

    @property
    def geometry(self):
        """The :class:`~dlmppl.geometry.Geometry` of :attr:`manifold`."""
        return self.__dict__["_geometry"]

    @staticmethod
    def _check_method(method, num_steps):
        if method not in _TABLEAUX:
            raise ValueError(f"method: expected one of {tuple(_TABLEAUX)}, got {method!r}")
        if isinstance(num_steps, bool) or int(num_steps) != num_steps or int(num_steps) < 1:
            raise ValueError(f"num_steps: must be an integer >= 1, got {num_steps!r}")

    @staticmethod
    def _check_probe(probe):
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(f"probe: expected 'rademacher' or 'gaussian', got {probe!r}")

    def _leaves(self):
        g = self.geometry
        return list(g.parts) if hasattr(g, "parts") else [g]

    def _leaf_shapes(self):
        g = self.geometry
        return [tuple(s) for s in g.shapes] if hasattr(g, "parts") else [tuple(self.event_shape)]

    def _leaf_manifolds(self):
        return list(self.manifold.manifolds) if hasattr(self.geometry, "parts") else [self.manifold]

    def _split(self, z):
        g = self.geometry
        return g.split(z) if hasattr(g, "parts") else [z]

    def _join(self, parts):
        g = self.geometry
        return g.join(parts) if hasattr(g, "parts") else parts[0]

    @property
    def dtype(self):
        return self._anchor.dtype

    @property
    def device(self):
        return self._anchor.device

    @property
    def dim(self) -> int:
        """Intrinsic dimension ``d`` of the manifold."""
        return self._dim

    def _event_dims(self):
        return len(self.event_shape)

    def _flatten(self, z, name="z"):
        """``z`` ``batch + event`` as ``(B,) + event`` (ValueError naming ``name`` for a bad shape)."""
        if not isinstance(z, torch.Tensor):
            raise ValueError(f"{name}: FlowMatchingPrior needs a torch.Tensor, got {type(z).__name__}")
        k = self._event_dims()
        if z.dim() < k or z.shape[z.dim() - k :] != self.event_shape or not z.is_floating_point():
            raise ValueError(
                f"{name}: expected real points of shape batch + {tuple(self.event_shape)}, got {tuple(z.shape)} {z.dtype}"
            )
        return z.reshape((-1,) + tuple(self.event_shape)), z.shape[: z.dim() - k]

    def _check_points(self, z, name):
        from ..constraints import tolerance, violation

        if z.numel() == 0:
            return
        if not bool(torch.isfinite(z).all()):
            raise ValueError(f"{name}: FlowMatchingPrior needs finite points, got NaN/inf coordinates")
        viol = violation(self.manifold, z.detach())
        tol = tolerance(z.dtype)
        if bool((viol > tol).any()):
            raise ValueError(
                f"{name}: points must lie on the manifold ({self.geometry.bounds}); largest violation "
                f"{float(viol.max()):.3g} > tolerance {tol:.3g}"
            )

    # -------------------------------------------------------------------------------- base law

    def _leaf_compact(self, lg, shape):
        return lg.log_volume(shape) is not None

    def _base_sample(self, shape, dtype, device):
        from ..distributions.uniform import ManifoldUniform
        from ..distributions.wrapped_normal import WrappedNormal

        if math.prod(shape) == 0:
            return torch.empty(tuple(shape) + tuple(self.event_shape), dtype=dtype, device=device)
        parts = []
        for i, (lg, M, sh) in enumerate(
            zip(self._leaves(), self._leaf_manifolds(), self._leaf_shapes(), strict=True)
        ):
            if self._leaf_compact(lg, sh):
                parts.append(
                    ManifoldUniform(M, sh, dtype=dtype, device=device, validate_args=False).sample(shape)
                )
            else:
                o = lg.origin(sh, dtype, device)
                s = self.base_scales[i : i + 1].to(dtype=dtype, device=device)
                parts.append(WrappedNormal(M, o, s, validate_args=False).sample(shape))
        return self._join(parts)

    def base_log_prob(self, z):
        """Log-density of the base law ``p_0`` at ``z`` ``batch + event`` (Riemannian volume); ``batch``."""
        from ..distributions.uniform import ManifoldUniform
        from ..distributions.wrapped_normal import WrappedNormal

        out = 0
        for i, (lg, M, sh, zi) in enumerate(
            zip(self._leaves(), self._leaf_manifolds(), self._leaf_shapes(), self._split(z), strict=True)
        ):
            if self._leaf_compact(lg, sh):
                lp = ManifoldUniform(M, sh, dtype=z.dtype, device=z.device, validate_args=False).log_prob(zi)
            else:
                o = lg.origin(sh, z.dtype, z.device)
                s = self.base_scales[i : i + 1].to(dtype=z.dtype, device=z.device)
                lp = WrappedNormal(M, o, s, validate_args=False).log_prob(zi)
            out = out + lp
        return out

    def base_sample(self, shape=()):
        """Draws of the base law ``p_0``, shape ``shape + event_shape`` (module's dtype and device)."""
        return self._base_sample(torch.Size(shape), self.dtype, self.device)

    def _fit_scales(self, codes):
        """``σ_i = √(E d(o_i, z_i)² / d_i)`` per non-compact factor (at least 1e-3)."""
        for i, (lg, sh, zi) in enumerate(
            zip(self._leaves(), self._leaf_shapes(), self._split(codes), strict=True)
        ):
            if self._leaf_compact(lg, sh):
                continue
            o = lg.origin(sh, zi.dtype, zi.device)
            d2 = lg.dist(o, zi).pow(2).mean()
            self.base_scales[i] = (d2 / lg.intrinsic_dim(sh)).sqrt().clamp_min(1e-3).detach()

    # -------------------------------------------------------------------------------- the field

    def velocity(self, z, t):
        """``v_θ(z, t) ∈ T_z M``: ``z`` ``(B,) + event``, ``t`` a number or ``(B,)``; returns ``(B,) + event``."""
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(z.shape[:1])
        if isinstance(self.field, _MLPField):
            raw = self._join(self.field(self._leaves(), self._split(z), t))
        else:
            raw = self.field(z, t)
        return self.geometry.proju(z, raw)

    def _probe(self, shape, dtype, device, probe):
        if probe == "gaussian":
            return torch.randn(shape, dtype=dtype, device=device)
        return torch.randint(0, 2, shape, device=device).to(dtype) * 2 - 1

    def _velocity_divergence(self, y, t, mode, probe, create_graph):
        """``(v(y, t), div_M v(y, t))``, ``(B,) + event`` and ``(B,)``; ``mode``: None, "exact" or "hutchinson"."""
        if mode is None:
            return self.velocity(y, t), None
        g = self.geometry
        k = self._event_dims()
        with torch.enable_grad():
            # keep y's graph only when the result must be differentiable (a view made under no_grad
            # can say requires_grad without being connected)
            y_ = y if (create_graph and y.requires_grad) else y.detach().requires_grad_(True)
            v = self.velocity(y_, t)
            frame = g.frame(y_)  # (B, d) + event, orthonormal
            if mode == "exact":
                ws = [frame[:, i] for i in range(self._dim)]
            else:
                eps = self._probe(frame.shape[:2], y.dtype, y.device, probe)
                ws = [(eps.reshape(eps.shape + (1,) * k) * frame).sum(1)]
            div = torch.zeros(y.shape[:1], dtype=y.dtype, device=y.device)
            for w in ws:
                # h(Dv[w], w) = <Dvᵀ covector(w), w>: one vector-Jacobian product
                (jt,) = torch.autograd.grad(
                    v, y_, grad_outputs=g.covector(y_, w), create_graph=create_graph, retain_graph=True
                )
                div = div + self._sum_event(jt * w)
            # ½ Σ (D_v h)(w, w): a derivative along s of h_{y + s v}(w, w) with the probes held fixed
            s = torch.zeros(y.shape[:1] + (1,) * k, dtype=y.dtype, device=y.device, requires_grad=True)
            ys = y_ + s * v
            q = sum(self._sum_event(g.covector(ys, w) * w) for w in ws)
            if q.requires_grad:
                (dq,) = torch.autograd.grad(q.sum(), s, create_graph=create_graph, allow_unused=True)
                if dq is not None:
                    div = div + 0.5 * dq.reshape(div.shape)
        if not create_graph:
            v, div = v.detach(), div.detach()
        return v, div

    def _sum_event(self, x):
        for _ in range(self._event_dims()):
            x = x.sum(-1)
        return x

    def divergence(self, z, t, hutchinson: bool = False, probe: str = "rademacher"):
        """Riemannian divergence ``div_M v_θ(z, t)``: exact, or one Hutchinson estimate (module docstring).

        ``z`` ``batch + event`` on ``M``, ``t`` a number in ``[0, 1]``; returns ``batch``.
        Differentiable when grad mode is on.
        """
        self._check_probe(probe)
        flat, batch = self._flatten(z)
        if flat.shape[0] == 0:
            return flat.new_zeros(batch)
        _, div = self._velocity_divergence(
            flat, t, "hutchinson" if hutchinson else "exact", probe, torch.is_grad_enabled()
        )
        return div.reshape(batch)

    # -------------------------------------------------------------------------------- ODE

    def _pull(self, z, y, k, create_graph):
        """``d(log_z)_y [k]``: the tangent vector ``k`` at ``y`` in the normal coordinates at ``z``.

        A Jacobian–vector product by the double-vjp trick (two backward passes through the
        closed-form ``log``; only backward formulas needed, differentiable when ``create_graph``).
        """
        with torch.enable_grad():
            y_ = y if (create_graph and y.requires_grad) else y.detach().requires_grad_(True)
            out = self.geometry.log(z if create_graph else z.detach(), y_)
            u = torch.zeros_like(out, requires_grad=True)
            (jt,) = torch.autograd.grad(out, y_, u, create_graph=True)
            (jk,) = torch.autograd.grad(jt, u, k, create_graph=create_graph)
        return jk if create_graph else jk.detach()

    def _exp(self, z, w):
        g = self.geometry
        y = g.exp(z, w)
        return g.projx(y)

    def _step(self, z, t, h, method, mode, probe, create_graph):
        c, a, b = _TABLEAUX[method]
        ks, divs = [], []
        for s in range(len(c)):
            if s == 0:
                y = z
            else:
                w = sum(h * a[s - 1][j] * ks[j] for j in range(s) if a[s - 1][j] != 0)
                y = self._exp(z, w)
            v, div = self._velocity_divergence(y, t + c[s] * h, mode, probe, create_graph)
            ks.append(v if s == 0 else self._pull(z, y, v, create_graph))
            divs.append(div)
        w = sum(h * bs * kk for bs, kk in zip(b, ks, strict=True) if bs != 0)
        dint = None if mode is None else sum(h * bs * dv for bs, dv in zip(b, divs, strict=True) if bs != 0)
        return self._exp(z, w), dint

    def integrate(
        self,
        z,
        t0: float = 0.0,
        t1: float = 1.0,
        num_steps: int | None = None,
        method: str | None = None,
        divergence: str | None = None,
        probe: str = "rademacher",
    ):
        """Solve ``ż = v_θ(z, t)`` from ``t0`` to ``t1`` for points ``z`` ``(B,) + event``.

        Returns ``(z(t1), ∫_{t0}^{t1} div_M v(z_t, t) dt)`` (the integral ``None`` unless
        ``divergence`` is ``"exact"`` or ``"hutchinson"``).  Runge–Kutta in normal coordinates
        (module docstring); differentiable when grad mode is on.
        """
        num_steps = self.num_steps if num_steps is None else num_steps
        method = self.method if method is None else method
        self._check_method(method, num_steps)
        create_graph = torch.is_grad_enabled()
        h = (float(t1) - float(t0)) / int(num_steps)
        acc = None if divergence is None else torch.zeros(z.shape[:1], dtype=z.dtype, device=z.device)
        for n in range(int(num_steps)):
            z, dint = self._step(z, float(t0) + n * h, h, method, divergence, probe, create_graph)
            if acc is not None:
                acc = acc + dint
        return z, acc

    # -------------------------------------------------------------------------------- public

    def rsample(self, shape=(), num_steps: int | None = None, method: str | None = None):
        """Draws ``shape + event_shape`` of the learned law (differentiable in the field's parameters)."""
        shape = torch.Size(shape)
        z0 = self.base_sample(shape).reshape((-1,) + tuple(self.event_shape))
        if z0.shape[0] == 0:
            return z0.reshape(shape + self.event_shape)
        z1, _ = self.integrate(z0, 0.0, 1.0, num_steps, method)
        return z1.reshape(shape + self.event_shape)

    def sample(self, shape=(), num_steps: int | None = None, method: str | None = None):
        """Draws ``shape + event_shape`` of the learned law: base draws carried by the ODE from ``t = 0`` to 1."""
        with torch.no_grad():
            return self.rsample(shape, num_steps, method)

    def sample_and_log_prob(
        self,
        shape=(),
        num_steps: int | None = None,
        method: str | None = None,
        hutchinson: bool | None = None,
    ):
        """Draws and their log-densities from one forward solve: ``log p_1(z_1) = log p_0(z_0) - ∫ div``.

        Returns ``(z ``shape + event``, log_prob ``shape``)``; differentiable when grad mode is on.
        """
        shape = torch.Size(shape)
        hutchinson = self.hutchinson if hutchinson is None else hutchinson
        z0 = self.base_sample(shape).reshape((-1,) + tuple(self.event_shape))
        if z0.shape[0] == 0:
            return z0.reshape(shape + self.event_shape), z0.new_zeros(shape)
        lp0 = self.base_log_prob(z0)
        z1, acc = self.integrate(
            z0, 0.0, 1.0, num_steps, method, "hutchinson" if hutchinson else "exact", self.probe
        )
        return z1.reshape(shape + self.event_shape), (lp0 - acc).reshape(shape)

    def log_prob(
        self,
        z,
        num_steps: int | None = None,
        method: str | None = None,
        hutchinson: bool | None = None,
        probe: str | None = None,
    ):
        """Log-density of the learned law at ``z`` ``batch + event`` w.r.t. the Riemannian volume; shape ``batch``.

        Integrates the ODE backwards from ``z`` at ``t = 1`` to ``z_0`` at ``t = 0`` with the
        divergence: ``log p_0(z_0) - ∫_0^1 div_M v dt`` (exact divergence, or Hutchinson's
        unbiased estimate with ``hutchinson=True``; defaults from the constructor).  Batched;
        differentiable in ``z`` and the parameters when grad mode is on.
        """
        hutchinson = self.hutchinson if hutchinson is None else hutchinson
        probe = self.probe if probe is None else probe
        self._check_probe(probe)
        flat, batch = self._flatten(z)
        if flat.shape[0] == 0:
            return flat.new_zeros(batch)
        z0, acc = self.integrate(
            flat, 1.0, 0.0, num_steps, method, "hutchinson" if hutchinson else "exact", probe
        )
        # acc = ∫_1^0 div dt = -∫_0^1 div dt
        return (self.base_log_prob(z0) + acc).reshape(batch)

    def forward(self, z):
        """:meth:`log_prob` with the default settings."""
        return self.log_prob(z)

    def distribution(self, batch_shape=()) -> FlowPriorDistribution:
        """This prior as a Pyro distribution (a ``pyro.sample`` site function) of ``batch_shape``."""
        return FlowPriorDistribution(self, batch_shape)

    def loss(self, z1, z0=None, t=None):
        """The flow-matching loss ``mean ‖v_θ(z_t, t) - u_t‖²_g`` on codes ``z1`` ``(B,) + event``.

        ``z0`` (base draws) and ``t`` (``(B,)`` in ``[0, 1)``) are drawn when not given.
        ``u_t = log_{z_t}(z_1)/(1 - t)`` for ``t < ½``, ``-log_{z_t}(z_0)/t`` otherwise
        (the same vector on the minimising geodesic; each form divides by at least ½).
        """
        g = self.geometry
        b = z1.shape[0]
        if z0 is None:
            z0 = self._base_sample((b,), z1.dtype, z1.device)
        if t is None:
            t = torch.rand(b, dtype=z1.dtype, device=z1.device)
        tt = t.reshape((b,) + (1,) * self._event_dims())
        zt = self._exp(z0, tt * g.log(z0, z1))
        first = tt < 0.5
        ut = g.log(zt, torch.where(first, z1, z0)) / torch.where(first, 1 - tt, -tt)
        return g.inner(zt, self.velocity(zt, t) - ut).mean()

    def fit(
        self,
        codes,
        steps: int = 1500,
        batch_size: int = 1024,
        lr: float = 3e-3,
        progress: bool = False,
        weight_decay: float = 0.0,
        final_lr_fraction: float = 0.05,
        ema: float | None = 0.995,
    ):
        """Fit the field to ``codes`` ``(N,) + event`` (points on ``M``) by flow matching.

        Adam for ``steps`` steps on minibatches of ``batch_size`` codes (drawn with
        replacement, fresh base draws and times each step), learning rate ``lr`` decayed by a
        cosine schedule to ``final_lr_fraction · lr``; with ``ema`` (a decay in ``[0, 1)``, or
        ``None``) the parameters end as the exponential moving average of the iterates (Polyak
        averaging, as diffusion and flow-matching models are trained: it removes most of the
        minibatch noise of the last iterates).  With ``base_scale=None`` the base scales of the
        non-compact factors are first set from the codes (module docstring).
        ``progress=True`` shows a tqdm bar (a few log lines when stderr is not a terminal).  Returns the loss history, a list of ``steps`` floats.

        The defaults fit a 4-mode vMF mixture on S² and a 10-node tree mixture on the Poincaré
        disk well enough for a two-sample test at ``n = 2000`` (tests/models/test_priors.py), in
        5–12 s on one CPU core.
        """
        flat, _ = self._flatten(codes, "codes")
        if flat.shape[0] == 0:
            raise ValueError("codes: FlowMatchingPrior.fit needs at least one code, got an empty batch")
        self._check_points(flat, "codes")
        for name, val in (("steps", steps), ("batch_size", batch_size)):
            if isinstance(val, bool) or int(val) != val or int(val) < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {val!r}")
        if not (lr > 0):
            raise ValueError(f"lr: must be > 0, got {lr}")
        if ema is not None and not (0 <= ema < 1):
            raise ValueError(f"ema: must be None or in [0, 1), got {ema}")
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("field: FlowMatchingPrior.fit needs a vector field with trainable parameters")
        flat = flat.detach()
        if self.auto_scale:
            self._fit_scales(flat)
        if isinstance(self.field, _MLPField) and not bool(self.field.standardised):
            self.field.standardise(self._leaves(), self._split(flat))
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, int(steps), eta_min=lr * final_lr_fraction)
        it = range(int(steps))
        if progress:
            from .._progress import progress_bar

            it = progress_bar(it, desc="flow matching")
        history = []
        n = flat.shape[0]
        avg = [p.detach().clone() for p in params] if ema is not None else None
        for _ in it:
            idx = torch.randint(0, n, (int(batch_size),), device=flat.device)
            loss = self.loss(flat[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            history.append(loss.detach())
            if avg is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(avg, [p.detach() for p in params], 1 - ema)
        if avg is not None:
            with torch.no_grad():
                for p, a in zip(params, avg, strict=True):
                    p.copy_(a)
        return torch.stack(history).cpu().tolist()

    def extra_repr(self):
        return (
            f"manifold={type(self.manifold).__name__}, event_shape={tuple(self.event_shape)}, dim={self._dim}, "
            f"method={self.method!r}, num_steps={self.num_steps}"
        )


class FlowPriorDistribution(ManifoldDistribution):
    """A :class:`FlowMatchingPrior` as a Pyro distribution (``pyro.sample`` site function).

    ``support`` is ``dlmppl.constraints.manifold(prior.manifold)``, ``event_shape`` the
    prior's ambient event shape; ``log_prob`` is :meth:`FlowMatchingPrior.log_prob` (density
    w.r.t. the Riemannian volume, broadcast to ``batch_shape``), ``rsample`` its ODE draws
    (differentiable in the field's parameters).  dtype/device: the prior module's.
    """

    arg_constraints = {}
    has_rsample = True
    _expand_attrs = ("prior", "dtype")

    def __init__(self, prior: FlowMatchingPrior, batch_shape=(), validate_args=None):
        if not isinstance(prior, FlowMatchingPrior):
            raise ValueError(
                f"prior: FlowPriorDistribution needs a FlowMatchingPrior, got {type(prior).__name__}"
            )
        self.prior = prior
        self.manifold = prior.manifold
        self.dtype = prior.dtype
        super().__init__(torch.Size(batch_shape), prior.event_shape, validate_args=validate_args)

    @property
    def support(self):
        return _constraints.manifold(self.prior.manifold)

    def rsample(self, sample_shape=torch.Size()):
        return self.prior.rsample(self._extended_shape(sample_shape)[: -len(self.event_shape)])

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        lp = self.prior.log_prob(value)
        return lp.expand(broadcast_shapes(lp.shape, self.batch_shape))
