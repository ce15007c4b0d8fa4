r"""κ-stereographic models (Bachmann, Bécigneul & Ganea 2020): Poincaré ball (κ < 0),
Euclidean space (κ = 0) and the projected sphere (κ > 0) in one chart, smooth through κ = 0.

Closed forms of :mod:`dlmppl.kmath`; curvature ``κ = M.k`` may be a number, a learnable
parameter or a tensor of shape ``batch_shape + (1,)`` that broadcasts with the points.
The metric is conformal, ``g_x = λ_x² I`` with ``λ_x = 2 / (1 + κ‖x‖²)``.
"""

from __future__ import annotations

import math

import geoopt
import torch

from .. import kmath
from .base import Geometry, geometry_of

__all__ = ["StereographicGeometry"]


class StereographicGeometry(Geometry):
    """``geoopt.Stereographic`` and its subclasses (``PoincareBall``, ``SphereProjection``, ``*Exact``)."""

    name = "Stereographic"

    @property
    def bounds(self):
        if isinstance(self.manifold, geoopt.PoincareBall):
            return "‖x‖ < 1/√c"
        if isinstance(self.manifold, geoopt.SphereProjection):
            return "any finite x"
        return "1 + κ‖x‖² > 0"

    def k(self, like):
        """The curvature κ as a tensor of ``like``'s dtype and device (shape ``()`` or ``batch + (1,)``)."""
        return self._param(self.manifold.k, like)

    def exp(self, x, v):
        return kmath.expmap(x, v, self.k(x))

    def log(self, x, y):
        return kmath.logmap(x, y, self.k(x))

    def dist(self, x, y):
        return kmath.dist(x, y, self.k(x))

    def inner(self, x, u, v=None):
        return kmath.inner(x, u, u if v is None else v, self.k(x))

    def egrad2rgrad(self, x, g):
        return g / kmath.lambda_x(x, self.k(x)).pow(2)

    def violation(self, x):
        k = self.k(x)
        one_plus = 1 + k * x.pow(2).sum(-1, keepdim=True)
        return torch.where(one_plus > 0, torch.zeros_like(one_plus), torch.full_like(one_plus, math.inf)).squeeze(-1)

    def origin(self, event_shape, dtype=None, device=None):
        return torch.zeros(tuple(event_shape), dtype=dtype, device=device)

    def log_volume(self, event_shape):
        k = torch.as_tensor(self.manifold.k).detach()
        if not bool((k > 0).all()):
            return None
        n = int(event_shape[-1])  # a sphere S^n of radius 1/√κ
        return math.log(2) + 0.5 * (n + 1) * math.log(math.pi) - math.lgamma(0.5 * (n + 1)) - 0.5 * n * torch.log(k)

    def random_uniform(self, shape, dtype=None, device=None):
        """κ > 0: a uniform point ``z`` of the unit sphere ``S^n`` in the chart, ``x = z_s / (√κ (1 + z_0))``
        (the projection from the south pole of the sphere of radius ``1/√κ``, an isometry onto the model)."""
        z = torch.randn(tuple(shape[:-1]) + (shape[-1] + 1,), dtype=dtype, device=device)
        z = z / z.norm(dim=-1, keepdim=True)
        k = self.k(z).detach()
        return z[..., 1:] / (k.sqrt() * (1 + z[..., :1]))

    def frame(self, x):
        n = x.shape[-1]
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        return eye / kmath.lambda_x(x, self.k(x)).unsqueeze(-1)

    def random_tangent(self, x):
        return torch.randn_like(x) / kmath.lambda_x(x, self.k(x))

    def sliced_wasserstein(self, x, y, a, b, n_projections, p):
        """κ < 0: horospherical sliced ``W_p`` in geodesic units (Bonet et al. 2023), with the
        Busemann function of the ball ``B_v(x) = (log‖v - √c x‖² - log(1 - c‖x‖²)) / √c``,
        ``c = -κ``; κ ≥ 0 (or a κ of several signs): Euclidean slicing of the chart coordinates."""
        k = self.k(x).detach()
        if k.numel() != 1 or not bool(k < 0):
            return super().sliced_wasserstein(x, y, a, b, n_projections, p)
        sc = (-k).sqrt().reshape(())

        def _ball_busemann(z, v):
            u = sc * z
            u2 = u.pow(2).sum(-1, keepdim=True)
            num = (1 - 2 * (u @ v) + u2).clamp_min(torch.finfo(z.dtype).tiny)
            return (num.log() - (1 - u2).clamp_min(torch.finfo(z.dtype).tiny).log()) / sc

        return self._horospherical_sw(_ball_busemann, x.shape[-1], x, y, a, b, n_projections, p)

    # ---------------------------------------------------------------- HMC

    def covector(self, x, v):
        return kmath.lambda_x(x, self.k(x)).pow(2) * v

    def flow(self, x, v, t):
        k = self.k(x)
        y = kmath.expmap(x, t * v, k)
        return self.project(y, kmath.parallel_transport(x, y, v, k))

    def project(self, x, v):
        return kmath.project(x, self.k(x)), v

    def closed_geodesic_length(self, x) -> float:
        # κ > 0: great circles of the sphere of radius 1/√κ
        k = self.k(x)
        k_max = float(k.max()) if k.numel() else 0.0
        return 2 * math.pi / math.sqrt(k_max) if k_max > 0 else math.inf

    # ---------------------------------------------------------------- constant curvature: frame coordinates

    def sectional_curvature(self, like):
        return self.k(like)

    def exp_frame(self, x, w):
        """``exp_x`` of the tangent vector with orthonormal-frame coordinates ``w`` (cancellation-free;
        the projection moves only points the dtype cannot tell from the boundary)."""
        k = self.k(x)
        return kmath.project(kmath.expmap_coords(x, w, k), k)

    def log_frame(self, x, y):
        return kmath.logmap_coords(x, y, self.k(x))

    def radius_limit(self, like):
        """Largest distance from the origin that ``like.dtype`` represents: ``kmath.max_radius/√(-κ)``
        for κ < 0, ``inf`` for κ ≥ 0 (shape of κ, detached)."""
        k = self.k(like).detach()
        R = kmath.max_radius(like.dtype) / (-k).clamp_min(torch.finfo(k.dtype).tiny).sqrt()
        return torch.where(k < 0, R, torch.full_like(k, math.inf))

    def chart_radius(self):
        """Euclidean radius of the chart, ``1/√(-κ)`` for κ < 0 (the ball's boundary), ``inf`` for κ ≥ 0."""
        k = float(torch.as_tensor(self.manifold.k).detach().reshape(-1)[0])
        return 1.0 / math.sqrt(-k) if k < 0 else math.inf

    def curvature_argument(self):
        """The curvature argument of the manifold's constructor (``c`` of ``PoincareBall(c)`` and
        ``SphereProjection(c)``, ``k`` of ``Stereographic(k)``), a tensor."""
        if isinstance(self.manifold, (geoopt.PoincareBall, geoopt.SphereProjection)):
            return self.manifold.c
        return self.manifold.k

    def wrap_period(self, like):
        """``2π/√κ`` where κ > 0 (great circles of the sphere of radius ``1/√κ``), ``inf`` elsewhere;
        ``None`` for the Poincaré ball (κ < 0 by construction)."""
        if isinstance(self.manifold, geoopt.PoincareBall):
            return None
        k = self.k(like)
        pos = k > 0
        return torch.where(pos, 2 * math.pi / torch.where(pos, k, torch.ones_like(k)).sqrt(), torch.full_like(k, math.inf))


geometry_of.register(geoopt.Stereographic, StereographicGeometry)
