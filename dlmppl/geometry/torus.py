r"""The flat torus ``T^n = R^n / 2πZ^n``: points as angles, the flat metric.

Representation.  A point is a vector of ``n`` angles ``θ ∈ (-π, π]^n`` (``event_shape
(n,)``, ``ndim = 1``), the coordinates Pyro's angle distributions use
(``pyro.distributions.VonMises``, ``SineBivariateVonMises``, ``ProjectedNormal`` in
2-D read through ``atan2``): a von Mises product or a sine bivariate von Mises is a
law on the torus as it stands, and its density with respect to Lebesgue measure on a
fundamental domain ``(-π, π]^n`` *is* its density with respect to the torus' volume
(the flat metric ``Σ dθᵢ²`` has volume element ``dθ_1 … dθ_n``, total volume
``(2π)^n``).  The alternative, ``n`` unit 2-vectors (a product of circles in
``R^{2n}``), avoids the wrap but would need every angle law re-parametrised.

Canonical representative.  :func:`wrap_angle` maps ``R`` onto ``(-π, π]``: the point
``π ≡ -π`` is written ``π``.  Every map of this module returns canonical angles;
inputs need not be canonical: ``-π`` (what Pyro's samplers may return, they use
``[-π, π)``) and any angle within the dtype's tolerance of ``[-π, π]`` are points
of the torus (:meth:`TorusGeometry.violation` is 0 on ``[-π, π]``).

Metric and maps (flat: curvature 0 everywhere, geodesics are wrapped straight lines,
Berger 2003, "A Panoramic View of Riemannian Geometry", §6.5 for flat tori):

* ``exp_x(v) = wrap(x + v)``, ``log_x(y) = wrap(y - x)`` coordinatewise: the
  minimising lift.  At a tie (some ``|yᵢ - xᵢ| = π``, the cut locus of ``x``) two
  geodesics are minimising; ``log`` returns ``+π`` in that coordinate (the canonical
  representative of the wrap).
* ``d(x, y) = ‖wrap(y - x)‖`` (at most ``π√n``);
* the frame is the identity; parallel transport is the identity; the HMC flow is
  exact: ``(wrap(x + t v), v)``.

Fréchet means.  The torus is flat but not a vector space: the ambient average of
angles is *not* the mean (draws near ``±π`` average to 0).  :attr:`TorusGeometry.linear`
is ``False``, so :func:`~dlmppl.geometry.base.frechet_mean` runs its Karcher iteration
through :meth:`log`/:meth:`exp` (Pennec 2006), started at the best sample point.
"""

from __future__ import annotations

import math

import geoopt
import torch

from .base import Geometry, geometry_of

__all__ = ["Torus", "TorusGeometry", "wrap_angle"]

_PI = math.pi
_TWO_PI = 2 * math.pi


def wrap_angle(a: torch.Tensor) -> torch.Tensor:
    """The canonical representative in ``(-π, π]`` of angles ``a`` (any shape, elementwise).

    ``π - ((π - a) mod 2π)``; its derivative is 1 (``torch.remainder``'s gradient), so it
    is transparent to autograd.  Round-off that would give ``-π`` gives ``π``.
    """
    w = _PI - torch.remainder(_PI - a, _TWO_PI)
    return torch.where(w <= -_PI, w + _TWO_PI, w)


def _check_n(n):
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: Torus needs a positive int number of angles (or None for any), got {n!r}")
    return n


class Torus(geoopt.Manifold):
    r"""The flat torus ``T^n`` as angles in ``(-π, π]`` (module docstring); ``ndim = 1``.

    Args:
        n: the number of angles, or ``None`` (default): any ``n``, read from the points'
           last dimension (as ``geoopt.Sphere`` reads its dimension).  When given, points
           must have shape ``(..., n)``.

    Implements what geoopt's optimisers use (``projx`` = :func:`wrap_angle`, ``proju`` and
    ``egrad2rgrad`` the identity, ``inner`` the flat metric, ``expmap``/``retr`` the wrapped
    straight line, ``transp`` the identity), so ``geoopt.optim.RiemannianAdam`` keeps a
    ``ManifoldParameter`` on the torus.
    """

    name = "Torus"
    ndim = 1
    reversible = True

    def __init__(self, n: int | None = None):
        super().__init__()
        self.n = _check_n(n)

    def extra_repr(self):
        return "" if self.n is None else f"n={self.n}"

    def _check_shape(self, shape, name):
        ok = len(shape) >= 1 and (self.n is None or shape[-1] == self.n)
        return ok, None if ok else f"`{name}` should have shape (..., {self.n or 'n'}), got {tuple(shape)}"

    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        bad = ~torch.isfinite(x) | (x.abs() > _PI + atol)
        ok = not bool(bad.any())
        return ok, None if ok else "angles must be finite and in [-π, π] (wrap them with projx)"

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        ok = bool(torch.isfinite(u).all())
        return ok, None if ok else "tangent vectors must be finite"

    def projx(self, x):
        return wrap_angle(x)

    def proju(self, x, u):
        return u

    def egrad2rgrad(self, x, u):
        return u

    def inner(self, x, u, v=None, *, keepdim=False):
        if v is None:
            v = u
        return (u * v).sum(-1, keepdim=keepdim)

    def norm(self, x, u, *, keepdim=False):
        return u.norm(dim=-1, keepdim=keepdim)

    def expmap(self, x, u):
        return wrap_angle(x + u)

    def retr(self, x, u):
        return wrap_angle(x + u)

    def logmap(self, x, y):
        return wrap_angle(y - x)

    def dist(self, x, y, *, keepdim=False):
        return wrap_angle(y - x).norm(dim=-1, keepdim=keepdim)

    def transp(self, x, y, v):
        return v

    def expmap_transp(self, x, u, v):
        return self.expmap(x, u), v

    def retr_transp(self, x, u, v):
        return self.retr(x, u), v

    def random_uniform(self, *size, dtype=None, device=None):
        """Uniform angles in ``(-π, π]`` of shape ``size`` (a ``ManifoldTensor``)."""
        size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        t = _PI - _TWO_PI * torch.rand(tuple(size), dtype=dtype, device=device)
        return geoopt.ManifoldTensor(t, manifold=self)

    random = random_uniform

    def origin(self, *size, dtype=None, device=None, seed=42):
        size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return geoopt.ManifoldTensor(torch.zeros(tuple(size), dtype=dtype, device=device), manifold=self)


class TorusGeometry(Geometry):
    """The geometry of :class:`Torus` (module docstring): flat, compact, angles that wrap."""

    name = "Torus"
    bounds = "-π < θᵢ ≤ π"
    compact = True
    flat = True
    linear = False  # flat but closed: the ambient average of angles is not the mean

    def _check_event(self, event_shape):
        event_shape = tuple(int(s) for s in event_shape)
        n = getattr(self.manifold, "n", None)
        if len(event_shape) != 1 or event_shape[0] < 1 or (n is not None and event_shape[0] != n):
            want = f"({n},)" if n is not None else "(n,) with n >= 1"
            raise ValueError(f"event_shape: points of Torus must have shape {want}, got {event_shape}")
        return event_shape[0]

    def exp(self, x, v):
        return wrap_angle(x + v)

    def log(self, x, y):
        return wrap_angle(y - x)

    def dist(self, x, y):
        d = wrap_angle(y - x)
        # at least √tiny: finite (zero) gradients at coincident points
        return d.pow(2).sum(-1).clamp_min(torch.finfo(d.dtype).tiny).sqrt()

    def geodesic(self, x, y, t):
        return wrap_angle(x + t * wrap_angle(y - x))

    def violation(self, x):
        finite = torch.isfinite(x)
        v = torch.where(finite, (x.abs() - _PI).clamp_min(0), torch.full_like(x, math.inf))
        return v.amax(-1)

    def intrinsic_dim(self, event_shape) -> int:
        return self._check_event(event_shape)

    def origin(self, event_shape, dtype=None, device=None):
        self._check_event(event_shape)
        return torch.zeros(tuple(event_shape), dtype=dtype, device=device)

    def log_volume(self, event_shape):
        """``n log 2π`` (the flat torus of side ``2π``)."""
        return self._check_event(event_shape) * math.log(_TWO_PI)

    def random_uniform(self, shape, dtype=None, device=None):
        """``π - 2π U``, ``U ~ U[0, 1)``: exactly uniform on ``(-π, π]`` in every coordinate."""
        shape = tuple(shape)
        self._check_event(shape[-1:])
        return _PI - _TWO_PI * torch.rand(shape, dtype=dtype, device=device)

    def frame(self, x):
        n = x.shape[-1]
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        return eye.expand(x.shape[:-1] + (n, n))

    def random_tangent(self, x):
        return torch.randn_like(x)

    # ------------------------------------------------------------------ HMC

    def flow(self, x, v, t):
        """Exact geodesic flow: ``(wrap(x + t v), v)`` (the velocity is constant)."""
        return wrap_angle(x + t * v), v

    def project(self, x, v):
        return wrap_angle(x), v

    def closed_geodesic_length(self, x) -> float:
        """``2π``: a coordinate circle."""
        return _TWO_PI

    def spread(self, draws):
        """Variance of the draws about their circular mean, per coordinate, summed (0-d).

        Each coordinate is unwrapped at its circular mean ``atan2(E sin θ, E cos θ)``
        (Mardia & Jupp 2000, §2.2); ``E‖wrap(θ - θ̄) - m‖²`` with ``m`` the mean of the
        unwrapped draws.  (The ambient mean of angles near ``±π`` is near 0: it is not used.)
        """
        ref = torch.atan2(torch.sin(draws).mean(0), torch.cos(draws).mean(0))
        v = wrap_angle(draws - ref)
        return (v - v.mean(0)).pow(2).sum() / draws.shape[0]

    # ------------------------------------------------------------------ frame coordinates
    # (WrappedNormal reads the family through these; the torus' own law is
    # dlmppl.distributions.torus.TorusWrappedNormal)

    def sectional_curvature(self, like):
        return torch.zeros((), dtype=like.dtype, device=like.device)

    def exp_frame(self, x, w):
        return self.exp(x, w)

    def log_frame(self, x, y):
        return self.log(x, y)


geometry_of.register(Torus, TorusGeometry)
