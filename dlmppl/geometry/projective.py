r"""Real projective space ``RP^n = S^n / {x ~ -x}``: lines through the origin of ``R^{n+1}``.

Points are unit vectors ``x ∈ S^n ⊂ R^{n+1}`` (event shape ``(n+1,)``, ``ndim = 1``), and ``x``
and ``-x`` are the same point.  The metric is the one that makes the double cover
``π: S^n → RP^n, x ↦ {x, -x}`` a local isometry (the round metric, sectional curvature 1), so
everything local is the sphere's (:mod:`.sphere`, reused here, not copied):

* ``exp_x(v)`` is the sphere's (the lift of the geodesic), ``inner``, ``proju``, ``frame``,
  ``random_tangent``, the HMC ``flow`` are the sphere's;
* ``d(x, y) = min(d_S(x, y), d_S(x, -y)) = arccos |⟨x, y⟩| ∈ [0, π/2]``, computed as the chord
  form ``2 atan2(‖x - ỹ‖, ‖x + ỹ‖)`` on the lift ``ỹ = sign⟨x, y⟩ y`` nearer to ``x`` (accurate
  near 0 and near the cut locus ``⟨x, y⟩ = 0``, where arccos is not);
* ``log_x(y)`` is the sphere's logarithm to the nearer lift ``ỹ`` (at the cut locus
  ``⟨x, y⟩ = 0`` both lifts are at ``π/2``: ``y`` itself is taken);
* geodesics close after length ``π`` (a great half-circle joins ``x`` to ``-x``):
  :meth:`ProjectiveGeometry.closed_geodesic_length` is ``π`` and the injectivity radius ``π/2``.

Volumes and densities.  ``π`` is 2-to-1 and a local isometry, so
``vol(RP^n) = vol(S^n)/2 = π^{(n+1)/2} / Γ((n+1)/2)`` (``RP^1`` is a circle of length ``π``).
A density ``f`` on ``RP^n`` (w.r.t. its volume) is the antipodally symmetric density ``f/2`` on
``S^n`` (w.r.t. the sphere's surface measure): ``∫_{S^n} f(π x)/2 dx = ∫_{RP^n} f``.  Conversely a
density ``p`` on ``S^n`` that is not symmetric pushes forward to ``p(x) + p(-x)`` on ``RP^n``.
So a law on ``RP^n`` is sampled by any sampler of a lift on ``S^n`` (the sign of a draw does
not matter), and HMC on ``RP^n`` is HMC on ``S^n`` for the symmetric density ``f/2`` (the
constant ``1/2`` drops out).

References: do Carmo (1992), *Riemannian Geometry*, ch. 8 (covering maps, ``RP^n``); Mardia &
Jupp (2000), *Directional Statistics*, §9 (axial data); Karcher (1977) for the mean.

:class:`ProjectiveSpace` subclasses ``geoopt.Sphere`` so that geoopt's optimisers (which move a
lift along the sphere) keep working; :func:`~dlmppl.geometry.geometry_of` dispatches on the most
specific registered class, so it gets :class:`ProjectiveGeometry`, not the sphere's geometry.
"""

from __future__ import annotations

import math

import geoopt
import torch

from .._shapes import broadcast_shapes
from .base import Geometry, geometry_of
from .sphere import SphereGeometry, _chord

__all__ = ["ProjectiveSpace", "ProjectiveGeometry", "nearer_lift"]


def nearer_lift(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The lift ``±y`` nearer to ``x`` on the sphere: ``sign⟨x, y⟩ y`` (``+y`` when ``⟨x, y⟩ = 0``).

    Shapes broadcast: ``x``, ``y`` ``batch + (n+1,)``; returns ``broadcast(x, y)``.
    """
    c = (x * y).sum(-1, keepdim=True)
    return torch.where(c < 0, -y, y).expand(broadcast_shapes(x.shape, y.shape))


class ProjectiveSpace(geoopt.Sphere):
    r"""The real projective space ``RP^n`` as unit vectors of ``R^{n+1}`` modulo ``x ~ -x``.

    Points have shape ``batch + (n+1,)`` (``n ≥ 1``); ``x`` and ``-x`` are the same point.
    A subclass of ``geoopt.Sphere`` (without subspace constraints): geoopt's ``projx``,
    ``proju``, ``expmap``, ``retr`` and ``transp`` act on a lift and stay valid on ``RP^n``;
    :meth:`dist` and :meth:`logmap` are overridden to the projective ones (min over the two
    lifts).  Its geometry is :class:`ProjectiveGeometry` (module docstring).
    """

    name = "ProjectiveSpace"
    reversible = False

    def __init__(self):
        super().__init__()

    def dist(self, x, y, *, keepdim=False):
        d = ProjectiveGeometry(self).dist(x, y)
        return d.unsqueeze(-1) if keepdim else d

    def logmap(self, x, y):
        return ProjectiveGeometry(self).log(x, y)

    def extra_repr(self):
        return ""


class ProjectiveGeometry(Geometry):
    """:class:`ProjectiveSpace` ``RP^n`` (points ``(n+1,)``): the sphere's geometry on the nearer lift.

    Everything local (``exp``, ``inner``, ``proju``, ``frame``, ``random_tangent``, ``flow``,
    ``project``, ``violation``, ``origin`` ``e_0``) is :class:`~dlmppl.geometry.sphere.SphereGeometry`'s;
    ``dist``/``log`` take the lift of ``y`` nearer to ``x`` (``dist ≤ π/2``); ``log_volume`` is
    ``log(vol S^n / 2)``; the Fréchet mean and ``spread`` do not depend on the signs of the points.
    """

    name = "ProjectiveSpace"
    bounds = "‖x‖ = 1, x ~ -x"
    compact = True
    embedded = True

    def __init__(self, manifold):
        super().__init__(manifold)
        self._sphere = SphereGeometry(manifold)

    # ---------------------------------------------------------------- local: the sphere's
    # (its functions, run on this geometry: none of them calls a method that RP^n overrides;
    # ``inner`` is the embedded metric of the base class, as the sphere's)

    exp = SphereGeometry.exp
    proju = SphereGeometry.proju
    random_tangent = SphereGeometry.random_tangent
    violation = SphereGeometry.violation
    intrinsic_dim = SphereGeometry.intrinsic_dim
    origin = SphereGeometry.origin
    sectional_curvature = SphereGeometry.sectional_curvature
    flow = SphereGeometry.flow
    project = SphereGeometry.project
    projx = SphereGeometry.projx

    def frame(self, x):
        return self._sphere.frame(x)

    # ---------------------------------------------------------------- global: the nearer lift

    def log(self, x, y):
        return self._sphere.log(x, nearer_lift(x, y))

    def dist(self, x, y):
        y = nearer_lift(x, y)
        # chord form on the nearer lift: 2 atan2(‖x - ỹ‖, ‖x + ỹ‖) = arccos |⟨x, y⟩|, accurate at 0 and π/2
        return torch.atan2(_chord(x - y), _chord(x + y)).mul_(2)  # the sphere's distance on the lift

    def wrap_period(self, like):
        return torch.full((), math.pi, dtype=like.dtype, device=like.device)

    def log_volume(self, event_shape):
        """``log(vol S^n / 2) = ((n+1)/2) log π - lgamma((n+1)/2)`` for points ``(n+1,)``."""
        return self._sphere.log_volume(event_shape) - math.log(2)

    def random_uniform(self, shape, dtype=None, device=None):
        """Normalised Gaussians (uniform on ``S^n``, hence on ``RP^n``; the sign is irrelevant)."""
        return self._sphere.random_uniform(shape, dtype, device)

    def sliced_wasserstein(self, x, y, a, b, n_projections, p):
        """Sliced ``W_p`` of the clouds mapped by the Veronese embedding ``x ↦ x xᵀ`` (flattened).

        The embedding is injective on ``RP^n`` (sign-invariant), so this is a metric between laws on
        ``RP^n``; it is Euclidean slicing in that embedding (Bonneel et al. 2015), not a geodesic
        sliced distance.  Shapes as :meth:`Geometry.sliced_wasserstein`.
        """
        vx = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)
        vy = (y.unsqueeze(-1) * y.unsqueeze(-2)).flatten(-2)
        return super().sliced_wasserstein(vx, vy, a, b, n_projections, p)

    # ---------------------------------------------------------------- HMC

    def closed_geodesic_length(self, x) -> float:
        # a great half-circle from x to -x closes on RP^n
        return math.pi

    def spread(self, draws):
        """Mean squared distance of draws ``(N,) + batch + (n+1,)`` to their principal axis (0-d tensor).

        Sign-invariant: the axis is the leading eigenvector of the second moment ``E x xᵀ``
        (the moment estimate of the axial mean, Mardia & Jupp 2000, §9.2), summed over the batch.
        """
        S = (draws.unsqueeze(-1) * draws.unsqueeze(-2)).mean(0)
        _, U = torch.linalg.eigh(0.5 * (S + S.transpose(-1, -2)))
        mu = U[..., -1]
        return self.dist(mu.unsqueeze(0), draws).pow(2).sum() / draws.shape[0]

    def for_hmc(self):
        self._sphere.for_hmc()  # (the same checks as the sphere's)
        return super().for_hmc()


geometry_of.register(ProjectiveSpace, ProjectiveGeometry)
