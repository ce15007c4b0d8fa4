r"""The unit sphere ``S^d ⊂ R^{d+1}`` with the embedded metric: great circles."""

from __future__ import annotations

import math

import geoopt
import torch

from .base import Geometry, geometry_of

__all__ = ["SphereGeometry"]


def _safe_norm(x):
    return x.pow(2).sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny).sqrt()


def _chord(a):
    """``‖a‖`` over the last dim, ``batch_shape``: ``sqrt(max(Σ aᵢ², tiny))``, as ``_safe_norm`` (finite
    derivatives of every order at ``a = 0``; ``torch.linalg.vector_norm``'s second derivative there is NaN).

    For d ≤ 4 the squares are summed column by column into one buffer: torch's CPU reduction over a
    last dim of 3 is about 9x slower than an elementwise op, and each temporary of the size of
    ``a`` costs page faults; with ``_safe_norm`` the sphere's distance took 1.3x the time of the
    one-reduction ``atan2(‖y - ⟨x,y⟩x‖, ⟨x,y⟩)`` before it (``benchmarks/bench_redesign.py``).
    """
    if a.shape[-1] > 4:
        s = a.pow(2).sum(-1)
    else:
        s = a[..., 0] * a[..., 0]
        for i in range(1, a.shape[-1]):
            s.addcmul_(a[..., i], a[..., i])
    return s.clamp_min_(torch.finfo(a.dtype).tiny).sqrt_()


def _ratio_sin(r):
    """``sin(r)/r`` with the limit 1 at 0 (value and gradient finite)."""
    small = r.abs() < 1e-3
    rs = torch.where(small, torch.ones_like(r), r)
    return torch.where(small, 1 - r * r / 6 + r**4 / 120, torch.sin(rs) / rs)


def _axis(loc):
    r"""``n`` (``(..., d)``) with ``n nᵀ = μ_s μ_sᵀ / (1 + μ_0)``, the rank-one part of the transport ``e_0 → loc``.

    ``n = μ_s / √(1 + μ_0)`` for ``μ_0 ≥ 0`` and ``n = √(1 - μ_0) μ_s/|μ_s|`` for ``μ_0 < 0``
    (equal on the sphere): no division by the vanishing ``1 + μ_0`` near ``-e_0``.  At
    ``loc = -e_0`` exactly, where the transported frame has no limit, ``μ_s/|μ_s|`` is
    replaced by ``e_1``: the frame there is ``(-e_1, e_2, …, e_d)``.
    """
    loc = loc / _safe_norm(loc)
    mu0, mus = loc[..., :1], loc[..., 1:]
    north = mu0 >= 0
    one = torch.ones_like(mu0)
    n_north = mus / torch.where(north, 1 + mu0, one).sqrt()
    m2 = mus.pow(2).sum(-1, keepdim=True)
    has_dir = m2 > 0
    e1 = torch.zeros_like(mus)
    e1[..., 0] = 1
    nhat = torch.where(has_dir, mus / torch.where(has_dir, m2, one).sqrt(), e1)
    n_south = nhat * torch.where(north, one, 1 - mu0).sqrt()
    return torch.where(north, n_north, n_south)


class SphereGeometry(Geometry):
    """``geoopt.Sphere`` (unit radius, points ``(d+1,)``): great circles, curvature 1."""

    name = "Sphere"
    bounds = "‖x‖ = 1"
    compact = True
    embedded = True

    def wrap_period(self, like):
        return torch.full((), 2 * math.pi, dtype=like.dtype, device=like.device)

    def exp(self, x, v):
        r = _safe_norm(v)
        return torch.cos(r) * x + _ratio_sin(r) * v

    def log(self, x, y):
        c = (x * y).sum(-1, keepdim=True)
        u = y - c * x
        u = u - (u * x).sum(-1, keepdim=True) * x  # tangent also when |x| is 1 only to rounding
        un = _safe_norm(u)
        theta = torch.atan2(un, c)
        # antipodes: every great circle is minimising; take the one towards e_j, j = argmin |x_j|
        anti = (un <= 4 * torch.finfo(x.dtype).eps) & (c < 0)
        j = x.abs().argmin(-1, keepdim=True)
        e = torch.zeros_like(x).scatter(-1, j, 1.0)
        t_hat = e - x.gather(-1, j) * x
        t_hat = t_hat / _safe_norm(t_hat)
        return torch.where(anti, torch.pi * t_hat, u * (theta / un))

    def dist(self, x, y):
        # chord form: accurate near 0 and near π (arccos of the product is not), finite gradients
        # (of every order) at coincident and antipodal points
        return torch.atan2(_chord(x - y), _chord(x + y)).mul_(2)

    def sliced_wasserstein(self, x, y, a, b, n_projections, p):
        """Spherical sliced ``W_p`` (Bonet et al. 2023, POT's ``sliced_wasserstein_sphere``), in arc length."""
        import ot

        z = torch.randn(n_projections, x.shape[-1], 2, dtype=x.dtype, device=x.device)
        proj, _ = torch.linalg.qr(z)
        # POT parametrises the great circles by [0, 1): rescale to arc length
        return 2 * math.pi * ot.sliced_wasserstein_sphere(x, y, a, b, n_projections=n_projections, p=p, projections=proj)

    def proju(self, x, u):
        return u - (x * u).sum(-1, keepdim=True) * x

    def violation(self, x):
        return (x.norm(dim=-1) - 1).abs()

    def intrinsic_dim(self, event_shape) -> int:
        return int(event_shape[-1]) - 1

    def origin(self, event_shape, dtype=None, device=None):
        o = torch.zeros(tuple(event_shape), dtype=dtype, device=device)
        o[..., 0] = 1
        return o

    def log_volume(self, event_shape):
        event_shape = tuple(event_shape)
        if len(event_shape) != 1 or event_shape[0] < 2:
            raise ValueError(
                f"event_shape: points of {type(self.manifold).__name__} must have shape (d,) with d >= 2, got {event_shape}"
            )
        n = int(event_shape[-1])  # area of S^{n-1}: 2 π^{n/2} / Γ(n/2)
        return math.log(2) + 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * n)

    def random_uniform(self, shape, dtype=None, device=None):
        z = torch.randn(shape, dtype=dtype, device=device)  # normalised Gaussians (Muller 1959)
        return z / z.norm(dim=-1, keepdim=True)

    def frame(self, x):
        d = x.shape[-1] - 1
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        return self.to_ambient(x.unsqueeze(-2), eye)

    def random_tangent(self, x):
        return self.proju(x, torch.randn_like(x))

    # ---------------------------------------------------------------- HMC

    def flow(self, x, v, t):
        # great circle with unit direction u = v/s: x' = cos θ x + sin θ u, v' = s (cos θ u - sin θ x)
        s = v.norm(dim=-1, keepdim=True)
        tiny = s <= torch.finfo(v.dtype).tiny
        u = v / torch.where(tiny, torch.ones_like(s), s)
        theta = s * t
        c, sn = torch.cos(theta), torch.sin(theta)
        return self.project(c * x + sn * u, s * (c * u - sn * x))

    def project(self, x, v):
        x = x / x.norm(dim=-1, keepdim=True)
        return x, v - (x * v).sum(-1, keepdim=True) * x

    def projx(self, x):
        return x / x.norm(dim=-1, keepdim=True)

    def closed_geodesic_length(self, x) -> float:
        return 2 * math.pi

    def spread(self, draws):
        # geodesic distance to the normalised mean (the chord underestimates it for diffuse draws)
        mean = draws.mean(0)
        mu = mean / mean.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(mean.dtype).tiny)
        theta = torch.arccos((draws * mu).sum(-1).clamp(-1.0, 1.0))
        return theta.pow(2).sum() / draws.shape[0]

    def for_hmc(self):
        if getattr(self.manifold, "projector", None) is not None:
            raise ValueError("manifold: spheres with a subspace projector are not supported by the HMC kernels")
        return super().for_hmc()

    # ---------------------------------------------------------------- constant curvature: frame coordinates

    def sectional_curvature(self, like):
        return torch.ones((), dtype=like.dtype, device=like.device)

    def to_ambient(self, x, w):
        """Ambient tangent vector at ``x`` with coordinates ``w`` (``(..., d)``) in the frame transported from ``e_0``."""
        n = _axis(x)
        xs = x[..., 1:] / _safe_norm(x)
        return torch.cat([-(xs * w).sum(-1, keepdim=True), w - (n * w).sum(-1, keepdim=True) * n], -1)

    def from_ambient(self, x, u):
        """Frame coordinates of a tangent vector ``u`` at ``x`` (the transpose of :meth:`to_ambient`)."""
        n = _axis(x)
        xs = x[..., 1:] / _safe_norm(x)
        us = u[..., 1:]
        return us - u[..., :1] * xs - (n * us).sum(-1, keepdim=True) * n

    def exp_frame(self, x, w):
        """``exp_x`` of the tangent vector with frame coordinates ``w``; renormalised onto the sphere."""
        z = self.exp(x, self.to_ambient(x, w))
        return z / _safe_norm(z)

    def log_frame(self, x, y):
        c = (x * y).sum(-1, keepdim=True)
        w = y - c * x
        nw = _safe_norm(w)
        return self.from_ambient(x, w * (torch.atan2(nw, c) / nw))


geometry_of.register(geoopt.Sphere, SphereGeometry)
