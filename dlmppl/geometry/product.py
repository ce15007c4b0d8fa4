"""Products ``M_1 × … × M_m`` (``geoopt.ProductManifold``): everything componentwise,
``d = √Σ dᵢ²``; points are the concatenation of the flattened components, shape ``(..., D)``."""

from __future__ import annotations

import geoopt
import torch

from .._shapes import broadcast_shapes
from .base import Geometry, geometry_of

__all__ = ["ProductGeometry"]


class ProductGeometry(Geometry):
    """``geoopt.ProductManifold`` of manifolds that have geometries."""

    name = "ProductManifold"
    bounds = "every component on its manifold"

    def __init__(self, manifold):
        super().__init__(manifold)
        self.parts = [geometry_of(m) for m in manifold.manifolds]
        self.slices = manifold.slices
        self.shapes = [tuple(s) for s in manifold.shapes]
        self.compact = all(g.compact for g in self.parts)

    def detached(self):
        g = super().detached()
        g.parts = [p.detached() for p in self.parts]
        return g

    def for_hmc(self):
        g = super().for_hmc()
        g.parts = [p.for_hmc() for p in self.parts]
        return g

    def split(self, x):
        """The components of ``x`` (``(..., D)``), each ``(...,) + shape_i``."""
        batch = x.shape[:-1]
        return [x[..., sl].reshape(batch + sh) for sl, sh in zip(self.slices, self.shapes, strict=True)]

    def join(self, parts):
        flat = [p.reshape(p.shape[: p.dim() - len(sh)] + (-1,)) for p, sh in zip(parts, self.shapes, strict=True)]
        batch = broadcast_shapes(*[f.shape[:-1] for f in flat])
        return torch.cat([f.expand(batch + f.shape[-1:]) for f in flat], -1)

    def _map(self, fn, *tensors):
        splits = [self.split(t) for t in tensors]
        return [fn(g, *[s[i] for s in splits]) for i, g in enumerate(self.parts)]

    def _sum(self, parts):
        return sum(torch.broadcast_tensors(*parts))

    def exp(self, x, v):
        return self.join(self._map(lambda g, a, b: g.exp(a, b), x, v))

    def log(self, x, y):
        return self.join(self._map(lambda g, a, b: g.log(a, b), x, y))

    def geodesic(self, x, y, t):
        return self.join(self._map(lambda g, a, b: g.geodesic(a, b, t), x, y))

    def dist(self, x, y):
        return self._sum(self._map(lambda g, a, b: g.dist(a, b).pow(2), x, y)).sqrt()

    def inner(self, x, u, v=None):
        v = u if v is None else v
        return self._sum(self._map(lambda g, a, b, c: g.inner(a, b, c), x, u, v))

    def proju(self, x, u):
        return self.join(self._map(lambda g, a, b: g.proju(a, b), x, u))

    def egrad2rgrad(self, x, u):
        return self.join(self._map(lambda g, a, b: g.egrad2rgrad(a, b), x, u))

    def violation(self, x):
        return torch.stack(torch.broadcast_tensors(*self._map(lambda g, a: g.violation(a), x)), 0).amax(0)

    def intrinsic_dim(self, event_shape) -> int:
        return sum(g.intrinsic_dim(sh) for g, sh in zip(self.parts, self.shapes, strict=True))

    def origin(self, event_shape, dtype=None, device=None):
        return self.join([g.origin(sh, dtype, device) for g, sh in zip(self.parts, self.shapes, strict=True)])

    def log_volume(self, event_shape):
        logs = [g.log_volume(sh) for g, sh in zip(self.parts, self.shapes, strict=True)]
        return None if any(v is None for v in logs) else sum(logs)

    def frame(self, x):
        # block-diagonal: each component's frame, zero in the other components
        xs = self.split(x)
        batch = x.shape[:-1]
        frames = []
        for i, (g, xi) in enumerate(zip(self.parts, xs, strict=True)):
            f = g.frame(xi)  # batch + (d_i,) + shape_i
            di = f.shape[len(batch)]
            blocks = [
                f if j == i else torch.zeros(batch + (di,) + sh, dtype=x.dtype, device=x.device)
                for j, sh in enumerate(self.shapes)
            ]
            frames.append(self.join(blocks))
        return torch.cat(frames, -2)

    def random_tangent(self, x):
        return self.join(self._map(lambda g, a: g.random_tangent(a), x))

    # ---------------------------------------------------------------- HMC

    def covector(self, x, v):
        return self.join(self._map(lambda g, a, b: g.covector(a, b), x, v))

    def kinetic(self, x, v):
        return self._sum(self._map(lambda g, a, b: g.kinetic(a, b), x, v))

    def flow(self, x, v, t):
        out = self._map(lambda g, a, b: g.flow(a, b, t), x, v)
        return self.join([o[0] for o in out]), self.join([o[1] for o in out])

    def project(self, x, v):
        out = self._map(lambda g, a, b: g.project(a, b), x, v)
        return self.join([o[0] for o in out]), self.join([o[1] for o in out])

    def point_dim(self, x) -> int:
        return sum(g.point_dim(xi) for g, xi in zip(self.parts, self.split(x), strict=True))

    def max_step(self, x, inverse_mass=1.0) -> float:
        # momenta are drawn part by part, so each part's typical speed is √(d_i/m)
        return min(g.max_step(xi, inverse_mass) for g, xi in zip(self.parts, self.split(x), strict=True))


geometry_of.register(geoopt.ProductManifold, ProductGeometry)
