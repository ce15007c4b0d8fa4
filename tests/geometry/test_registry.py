"""The geometry registry (issue 12): every family's Geometry keeps the same contract.

For each family: the frame is an orthonormal basis of the tangent space (for the
family's own inner product) with ``intrinsic_dim`` vectors; ``log`` inverts ``exp``
and ``dist`` is the norm of ``log``; ``exp`` stays on the manifold (``violation``);
the HMC flow moves along ``exp``; the kinetic energy is half the squared norm; and
dispatch follows the class hierarchy (a user's subclass of a geoopt class gets its
parent's geometry).
"""

from __future__ import annotations

import geoopt
import pytest
import torch

from dlmppl import manifolds as M
from dlmppl.geometry import Geometry, geometry_of
from tests.device_cases import FAMILIES as DEVICE_FAMILIES

D = torch.float64


def _point(man, g, batch=(4,)):
    """Points a short random step from the family's origin (the Lorentz case far out)."""
    if isinstance(man, geoopt.ProductManifold):
        return g.join([_point(m, p, batch) for m, p in zip(man.manifolds, g.parts, strict=True)])
    shape = {"Stiefel": (5, 2), "SymmetricPositiveDefinite": (3, 3), "SO3": (3, 3)}.get(g.name, (3,))
    o = g.origin(shape, D).expand(batch + shape)
    v = _tangent(g, o, 0.3)
    if g.name == "Lorentz":  # radius 20: the cancellation-free forms must hold there
        v = v * (20 / g.norm(o, v)).unsqueeze(-1)
    return g.exp(o, v)


def _tangent(g, x, size):
    """A tangent vector at ``x`` with N(0, size²) coordinates in the family's orthonormal frame."""
    f = g.frame(x)
    nb = x.dim() - g.ndim
    w = size * torch.randn(f.shape[: nb + 1], dtype=D)
    return (w.reshape(w.shape + (1,) * g.ndim) * f).sum(nb)


def _tol(g):
    # far out on the hyperboloid an ambient tangent vector carries ~e^ρ eps of round-off
    return {"atol": 1e-6, "rtol": 1e-6} if g.name == "Lorentz" else {"atol": 1e-8, "rtol": 1e-7}


# every registered family (the roster the device tests use), and Stiefel's embedded metric
FAMILIES = [*DEVICE_FAMILIES, M.EuclideanStiefel()]


@pytest.fixture(params=FAMILIES, ids=lambda m: type(m).__name__)
def family(request):
    man = request.param
    return man, geometry_of(man)


def test_frame_is_orthonormal_and_tangent(family):
    man, g = family
    x = _point(man, g)
    f = g.frame(x)  # batch + (d,) + event
    event = tuple(x.shape[1:])
    d = g.intrinsic_dim(event)
    assert f.shape == (x.shape[0], d) + event
    xb = x.unsqueeze(1)
    gram = g.inner(xb.unsqueeze(2), f.unsqueeze(2), f.unsqueeze(1))
    torch.testing.assert_close(gram, torch.eye(d, dtype=D).expand_as(gram), **_tol(g))
    torch.testing.assert_close(g.proju(xb, f), f, atol=1e-8 * float(f.abs().max()), rtol=1e-7)


def test_exp_log_dist_agree_and_stay_on_the_manifold(family):
    man, g = family
    x = _point(man, g)
    v = _tangent(g, x, 0.2)
    y = g.exp(x, v)
    assert float(g.violation(y).max()) < 1e-8
    torch.testing.assert_close(g.dist(x, y), g.norm(x, v), **_tol(g))
    torch.testing.assert_close(g.dist(x, g.geodesic(x, y, 0.5)), 0.5 * g.dist(x, y), **_tol(g))
    if g.name != "Lorentz":  # ambient tangent vectors far out: compare in frame coordinates instead
        torch.testing.assert_close(g.log(x, y), v, atol=1e-7, rtol=1e-6)
    else:
        torch.testing.assert_close(g.log_frame(x, y), g.log_frame(x, g.exp(x, g.log(x, y))), **_tol(g))


def test_flow_follows_exp_and_the_kinetic_energy_is_half_the_norm(family):
    man, g = family
    if isinstance(man, geoopt.Scaled):
        with pytest.raises(ValueError, match="manifold: Scaled"):
            g.for_hmc()
        return
    h = g.for_hmc()
    if getattr(h, "canonical", False):  # HMC runs Stiefel in the embedded metric (same volume up to a constant)
        h = geometry_of(M.EuclideanStiefel()).for_hmc()
    x = _point(man, g)
    v = h.random_tangent(x)
    x1, v1 = h.flow(x, v, 0.1)
    torch.testing.assert_close(x1, h.exp(x, 0.1 * v), **_tol(g))
    torch.testing.assert_close(h.kinetic(x, v), 0.5 * h.inner(x, v).sum(), **_tol(g))
    torch.testing.assert_close(h.kinetic(x1, v1), h.kinetic(x, v), **_tol(g))  # the flow keeps the speed


def test_a_subclass_gets_its_parents_geometry_and_unknown_classes_are_refused():
    class MySphere(geoopt.Sphere):
        pass

    assert type(geometry_of(MySphere())).__name__ == "SphereGeometry"
    assert isinstance(geometry_of(M.PoincareBallExact()), Geometry)
    with pytest.raises(ValueError, match="manifold: UpperHalf is not supported"):
        geometry_of(geoopt.UpperHalf())
