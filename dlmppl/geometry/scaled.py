"""``geoopt.Scaled(M, s)``: the metric ``s² g`` of ``M`` — the same geodesic curves, distances × ``s``."""

from __future__ import annotations

import math

import geoopt

from .base import Geometry, geometry_of

__all__ = ["ScaledGeometry"]


class ScaledGeometry(Geometry):
    """The geometry of ``M`` with the metric scaled by ``s²`` (nested ``Scaled`` multiply).

    ``exp``/``log`` are those of ``M`` (velocities of the same curves); inner products
    are ``s²`` times, norms and distances ``s`` times those of ``M``.
    """

    name = "Scaled"

    def __init__(self, manifold):
        super().__init__(manifold)
        s, base = 1.0, manifold
        while isinstance(base, geoopt.Scaled):
            s, base = s * base.scale, base.base
        self.scale, self.base = s, geometry_of(base)
        self.name = f"Scaled({self.base.name})"
        self.bounds = self.base.bounds
        self.compact = self.base.compact
        self.flat = self.base.flat
        self.linear = self.base.linear

    def exp(self, x, v):
        return self.base.exp(x, v)

    def log(self, x, y):
        return self.base.log(x, y)

    def geodesic(self, x, y, t):
        return self.base.geodesic(x, y, t)

    def dist(self, x, y):
        return self.base.dist(x, y) * self.scale

    def inner(self, x, u, v=None):
        return self.base.inner(x, u, v) * (self.scale * self.scale)

    def proju(self, x, u):
        return self.base.proju(x, u)

    def egrad2rgrad(self, x, g):
        return self.base.egrad2rgrad(x, g) / (self.scale * self.scale)

    def violation(self, x):
        return self.base.violation(x)

    def intrinsic_dim(self, event_shape) -> int:
        return self.base.intrinsic_dim(event_shape)

    def origin(self, event_shape, dtype=None, device=None):
        return self.base.origin(event_shape, dtype, device)

    def log_volume(self, event_shape):
        v = self.base.log_volume(event_shape)
        return None if v is None else v + self.intrinsic_dim(event_shape) * math.log(float(self.scale))

    def sliced_wasserstein(self, x, y, a, b, n_projections, p):
        if type(self.base).sliced_wasserstein is not Geometry.sliced_wasserstein:
            raise ValueError(f"manifold: sliced Wasserstein needs the unscaled {self.base.name}, got {self.manifold}")
        return self.base.sliced_wasserstein(x, y, a, b, n_projections, p)

    def random_uniform(self, shape, dtype=None, device=None):
        return self.base.random_uniform(shape, dtype, device)

    def mean_step(self, mean, points, w):
        g, gnorm, move = self.base.mean_step(mean, points, w)
        return g, gnorm * self.scale, move

    def for_hmc(self):
        raise ValueError(f"manifold: Scaled manifolds are not supported by the HMC kernels, got {self.manifold}")


geometry_of.register(geoopt.Scaled, ScaledGeometry)
