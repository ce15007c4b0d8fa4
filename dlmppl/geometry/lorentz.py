r"""The hyperboloid ``⟨x,x⟩_L = -k``, ``x_0 > 0`` (curvature ``-1/k``; Nickel & Kiela 2018).

Far from the origin the ambient coordinates (size ``e^ρ``) make every Minkowski product
cancel; every method uses the cancellation-free forms of :mod:`dlmppl.lmath` (coordinates in
the frame transported from the origin), accurate at radius 20–50 in float64.
"""

from __future__ import annotations

import geoopt
import torch

from .. import lmath
from .base import Geometry, geometry_of

__all__ = ["LorentzGeometry"]


class LorentzGeometry(Geometry):
    """``geoopt.Lorentz(k)``: points ``(d+1,)``."""

    name = "Lorentz"
    bounds = "⟨x,x⟩_L = -k, x_0 > 0"

    def k(self, like):
        """The hyperboloid parameter ``k`` as a tensor of ``like``'s dtype and device."""
        return self._param(self.manifold.k, like)

    def exp(self, x, v):
        return lmath.expmap(x, v, self.k(x))

    def log(self, x, y):
        return lmath.logmap(x, y, self.k(x))

    def dist(self, x, y):
        # not √k arcosh(-⟨x, y⟩_L / k): that cancels from radius ≈ 10 in float64
        return lmath.dist(x, y, self.k(x))

    def inner(self, x, u, v=None):
        return lmath.inner(x, u, u if v is None else v, self.k(x))

    def proju(self, x, u):
        return lmath.tangent_project(x, u, self.k(x))

    def egrad2rgrad(self, x, g):
        return lmath.egrad2rgrad(x, g, self.k(x))

    def violation(self, x):
        return lmath.violation(x, self.k(x))

    def intrinsic_dim(self, event_shape) -> int:
        return int(event_shape[-1]) - 1

    def origin(self, event_shape, dtype=None, device=None):
        like = torch.zeros(tuple(event_shape), dtype=dtype, device=device)
        return lmath.origin(like, self.k(like))

    def frame(self, x):
        d = x.shape[-1] - 1
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        return lmath.frame_to_ambient(x.unsqueeze(-2), eye, self.k(x))

    def random_tangent(self, x):
        # standard normal frame coordinates, transported from the origin (an isometry)
        return lmath.frame_to_ambient(x, torch.randn_like(x[..., 1:]), self.k(x))

    def geodesic(self, x, y, t):
        # in frame coordinates: far out an ambient tangent vector cannot carry its component
        # across the radius (its spatial part is ~e^r larger), so log-then-exp through it loses it
        w = self.log_frame(x, y)
        return self.exp_frame(x, t * w)

    def mean_step(self, mean, points, w):
        # the Karcher gradient in frame coordinates at the mean (orthonormal: ‖g‖ is the norm)
        k = self.k(points)
        g = (w * lmath.log_frame(mean.unsqueeze(0), points, k)).sum(0)
        return g, g.norm(dim=-1), lambda s: lmath.exp_frame(mean, s * g, k)

    def spread(self, draws):
        # ⟨x - x̄, x - x̄⟩_L cancels far out: the variance of the frame coordinates of log_c(x) at c,
        # one Karcher step from the last draw towards the Fréchet mean (the log at a draw 2σ out is
        # distorted by the curvature: 9% low at σ = 0.3)
        k = self.k(draws)
        v = lmath.log_frame(draws[-1].expand_as(draws), draws, k)
        centre = lmath.exp_frame(draws[-1], v.mean(0), k)
        v = lmath.log_frame(centre.expand_as(draws), draws, k)
        return (v - v.mean(0)).pow(2).sum() / draws.shape[0]

    def sliced_wasserstein(self, x, y, a, b, n_projections, p):
        """Horospherical sliced ``W_p`` in geodesic units (Bonet et al. 2023): the Busemann
        function ``√k log(u_0 - u_s·v)`` of the ideal point ``(1, v)``, ``u = x/√k``, in the
        cancellation-free form ``log(1 + ‖u_s - s v‖²) - log(u_0 + s)`` for ``s = u_s·v ≥ 0``."""
        k = self.k(x).detach()
        if k.numel() != 1:
            raise ValueError(f"manifold: sliced Wasserstein needs one curvature, got k of shape {tuple(k.shape)}")
        sk = k.sqrt().reshape(())

        def _lorentz_busemann(z, v):
            u0, us = z[..., :1] / sk, z[..., 1:] / sk
            s = us @ v
            perp2 = (us.unsqueeze(-1) - s.unsqueeze(-2) * v).pow(2).sum(-2)
            far = torch.log1p(perp2) - torch.log(u0 + s.clamp_min(0))
            near = torch.log(u0 - s.clamp_max(0))
            return sk * torch.where(s >= 0, far, near)

        return self._horospherical_sw(_lorentz_busemann, x.shape[-1] - 1, x, y, a, b, n_projections, p)

    # ---------------------------------------------------------------- HMC

    def covector(self, x, v):
        return torch.cat([-v[..., :1], v[..., 1:]], -1)

    def kinetic(self, x, v):
        # ½ |w|², w the frame coordinates of v: ⟨v,v⟩_L = |v_s|² - v_0² cancels (both ~ e^{2ρ})
        return 0.5 * lmath.frame_from_ambient(x, v, self.k(x)).pow(2).sum()

    def flow(self, x, v, t):
        return self.project(*lmath.geodesic_flow(x, v, t, self.k(x)))

    def project(self, x, v):
        # x_0 from x_s and v_0 from tangency: the identity on the tangent bundle
        k = self.k(x)
        x = lmath.project(x, k)
        return x, lmath.to_tangent(x, v, k)

    # ---------------------------------------------------------------- constant curvature: frame coordinates

    def check_curvature(self, like):
        """``ValueError`` naming ``curvature`` unless ``k > 0``."""
        k = self.k(like)
        if not bool((k > 0).all()):
            raise ValueError(f"curvature: Lorentz k must be > 0, got {k}")

    def curvature_argument(self):
        """``k`` of ``Lorentz(k)``."""
        return self.manifold.k

    def sectional_curvature(self, like):
        return -1.0 / self.k(like)

    def exp_frame(self, x, w):
        return lmath.exp_frame(x, w, self.k(x))

    def log_frame(self, x, y):
        return lmath.log_frame(x, y, self.k(x))

    def radius_limit(self, like):
        """Largest radius whose coordinates ``√k cosh(ρ/√k)`` stay finite in ``like.dtype`` (a margin
        of e^4 below overflow: 84.7 curvature radii in float32, 705.8 in float64)."""
        import math

        k = self.k(like).detach()
        big = math.log(torch.finfo(like.dtype).max) - 4.0
        R = k.sqrt()
        return R * (big - torch.log(R).clamp_min(0))


geometry_of.register(geoopt.Lorentz, LorentzGeometry)
