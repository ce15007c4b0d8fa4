"""Frame coordinates of the constant-curvature families by the old (kind, parameter) signature.

``exp_frame(kind, p, loc, v)`` / ``log_frame(kind, p, loc, z)`` with ``kind`` one of
``"stereo"`` (``p`` = κ), ``"lorentz"`` (``p`` = k), ``"sphere"``, ``"euclid"``: the
:class:`dlmppl.geometry.Geometry` methods of the matching manifold, which WrappedNormal
and RiemannianNormal use.
"""

from dlmppl import manifolds
from dlmppl.geometry import geometry_of


def _geometry(kind, p):
    if kind == "stereo":
        return geometry_of(manifolds.Stereographic(k=p))
    if kind == "lorentz":
        return geometry_of(manifolds.Lorentz(k=p))
    if kind == "sphere":
        return geometry_of(manifolds.Sphere())
    if kind == "euclid":
        return geometry_of(manifolds.Euclidean(1))
    raise AssertionError(kind)


def exp_frame(kind, p, loc, v):
    return _geometry(kind, p).exp_frame(loc, v)


def log_frame(kind, p, loc, z):
    return _geometry(kind, p).log_frame(loc, z)
