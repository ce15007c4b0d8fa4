"""Euclidean space ``R^n`` (any ``ndim``): straight lines, the flat metric."""

from __future__ import annotations

import geoopt
import torch

from .base import Geometry, geometry_of

__all__ = ["EuclideanGeometry"]


class EuclideanGeometry(Geometry):
    """``geoopt.Euclidean(ndim)``: ``exp_x(v) = x + v``, ``d(x, y) = ‖y - x‖``, curvature 0."""

    name = "Euclidean"
    bounds = "finite"
    flat = True
    linear = True

    def exp(self, x, v):
        return x + v

    def log(self, x, y):
        return y - x

    def dist(self, x, y):
        d = y - x
        # at least √tiny: finite (zero) gradients at coincident points
        tiny = torch.finfo(d.dtype).tiny
        return d.abs() if self.ndim == 0 else self._sum_event(d.pow(2)).clamp_min(tiny).sqrt()

    def violation(self, x):
        return torch.zeros(x.shape[: x.dim() - self.ndim], dtype=x.dtype, device=x.device)

    def origin(self, event_shape, dtype=None, device=None):
        return torch.zeros(tuple(event_shape), dtype=dtype, device=device)

    def frame(self, x):
        event = tuple(x.shape[x.dim() - self.ndim :])
        n = self.intrinsic_dim(event)
        eye = torch.eye(n, dtype=x.dtype, device=x.device).reshape((n,) + event)
        return eye.expand(x.shape[: x.dim() - self.ndim] + eye.shape)

    def random_tangent(self, x):
        return torch.randn_like(x)

    def flow(self, x, v, t):
        return x + t * v, v

    # constant-curvature interface (wrapped laws): coordinates are the ambient ones
    def sectional_curvature(self, like):
        return torch.zeros((), dtype=like.dtype, device=like.device)

    def exp_frame(self, x, w):
        return x + w

    def log_frame(self, x, y):
        return y - x


geometry_of.register(geoopt.Euclidean, EuclideanGeometry)
