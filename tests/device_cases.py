"""Shared cases of the device tests (tests/test_device_discipline.py, tests/test_on_device.py).

``FAMILIES``: one manifold per geometry family; ``DISTRIBUTIONS``: name -> ``builder(dtype, device)``
of one example of every public distribution family, parameters built on the CPU from fixed
generators and then moved, so the same numbers reach every device.
"""

from __future__ import annotations

import torch

from dlmppl import manifolds as M
from dlmppl.distributions import (
    AngularCentralGaussian,
    IsotropicGaussianSO3,
    ManifoldUniform,
    MatrixFisher,
    PowerSpherical,
    RiemannianNormal,
    TorusVonMises,
    VonMisesFisher,
    WrappedNormal,
)
from dlmppl.geometry.projective import ProjectiveSpace
from dlmppl.geometry.so3 import SO3
from dlmppl.geometry.torus import Torus

FAMILIES = [
    M.Euclidean(1),
    M.Sphere(),
    M.PoincareBall(1.5),
    M.SphereProjection(0.7),
    M.Stereographic(-0.3),
    M.Lorentz(1.0),
    M.Stiefel(),
    M.SymmetricPositiveDefinite(),
    M.ProductManifold((M.Sphere(), 3), (M.PoincareBall(1.0), 3)),
    M.Scaled(M.Sphere(), 2.0),
    ProjectiveSpace(),
    SO3(),
    Torus(),
]


def event_of(g):
    return {"Stiefel": (5, 2), "SymmetricPositiveDefinite": (3, 3), "SO3": (3, 3), "ProductManifold": (6,)}.get(g.name, (3,))


def tangent(g, x, size, gen):
    """A tangent vector at ``x`` with N(0, size²) coordinates in the family's frame (``gen``: a CPU generator)."""
    f = g.frame(x)
    nb = x.dim() - g.ndim
    w = size * torch.randn(f.shape[: nb + 1], dtype=x.dtype, generator=gen, device="cpu").to(x.device)
    return (w.reshape(w.shape + (1,) * g.ndim) * f).sum(nb)


def unit(*shape, d, dtype, dev="cpu"):
    x = torch.randn(*shape, d, dtype=dtype, generator=torch.Generator().manual_seed(1), device="cpu")
    return (x / x.norm(dim=-1, keepdim=True)).to(dev)


def rot(dtype, dev="cpu"):
    q = unit(2, d=4, dtype=dtype, dev=dev)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def lorentz(*shape, d, dtype, dev="cpu"):
    s = 0.5 * torch.randn(*shape, d, dtype=dtype, generator=torch.Generator().manual_seed(2), device="cpu")
    return torch.cat([(1 + s.pow(2).sum(-1, keepdim=True)).sqrt(), s], -1).to(dev)


def c(v, dtype, dev="cpu"):
    return torch.tensor(v, dtype=dtype, device=dev)


DISTRIBUTIONS = {
    "vmf-d3": lambda dt, dev="cpu": VonMisesFisher(unit(2, d=3, dtype=dt, dev=dev), c([1.0, 50.0], dt, dev)),
    "vmf-d5": lambda dt, dev="cpu": VonMisesFisher(unit(2, d=5, dtype=dt, dev=dev), c([0.5, 2.0], dt, dev)),
    "power-spherical": lambda dt, dev="cpu": PowerSpherical(unit(2, d=3, dtype=dt, dev=dev), c([1.0, 5.0], dt, dev)),
    "wn-poincare": lambda dt, dev="cpu": WrappedNormal(M.PoincareBall().to(dev), 0.3 * unit(2, d=2, dtype=dt, dev=dev), c([0.5, 1.0], dt, dev)),
    "wn-lorentz": lambda dt, dev="cpu": WrappedNormal(M.Lorentz().to(dev), lorentz(3, d=2, dtype=dt, dev=dev), c(0.7, dt, dev)),
    "wn-sphere": lambda dt, dev="cpu": WrappedNormal(M.Sphere(), unit(3, d=3, dtype=dt, dev=dev), c(0.4, dt, dev)),
    "wn-stereo-batched-k": lambda dt, dev="cpu": WrappedNormal(
        M.Stereographic(c([[-1.0], [0.5]], dt, dev)), 0.2 * unit(2, d=2, dtype=dt, dev=dev), c(0.3, dt, dev)),
    "wn-so3": lambda dt, dev="cpu": WrappedNormal(SO3(), rot(dt, dev), c(0.4, dt, dev)),
    "wn-torus": lambda dt, dev="cpu": WrappedNormal(Torus(), c([[0.1, -2.0], [3.0, 0.5]], dt, dev), c(0.4, dt, dev)),
    "wn-projective": lambda dt, dev="cpu": WrappedNormal(ProjectiveSpace(), unit(2, d=3, dtype=dt, dev=dev), c(0.3, dt, dev)),
    "rn-poincare": lambda dt, dev="cpu": RiemannianNormal(M.PoincareBall().to(dev), 0.3 * unit(2, d=2, dtype=dt, dev=dev), c([0.5, 1.0], dt, dev)),
    "rn-lorentz": lambda dt, dev="cpu": RiemannianNormal(M.Lorentz().to(dev), lorentz(d=3, dtype=dt, dev=dev), c(0.6, dt, dev)),
    "uniform-sphere": lambda dt, dev="cpu": ManifoldUniform(M.Sphere(), (3,), (2,), dtype=dt, device=dev),
    "uniform-stiefel": lambda dt, dev="cpu": ManifoldUniform(M.Stiefel(), (4, 2), dtype=dt, device=dev),
    "uniform-so3": lambda dt, dev="cpu": ManifoldUniform(SO3(), (3, 3), (2,), dtype=dt, device=dev),
    "uniform-torus": lambda dt, dev="cpu": ManifoldUniform(Torus(), (2,), dtype=dt, device=dev),
    "uniform-projective": lambda dt, dev="cpu": ManifoldUniform(ProjectiveSpace(), (3,), dtype=dt, device=dev),
    "matrix-fisher": lambda dt, dev="cpu": MatrixFisher(3.0 * rot(dt, dev)),
    "igso3": lambda dt, dev="cpu": IsotropicGaussianSO3(rot(dt, dev), c([0.3, 1.0], dt, dev)),
    "torus-vm": lambda dt, dev="cpu": TorusVonMises(c([[0.1, -2.0], [3.0, 0.5]], dt, dev), c([[1.0, 4.0], [0.5, 2.0]], dt, dev)),
    "acg": lambda dt, dev="cpu": AngularCentralGaussian(torch.diag(c([1.0, 2.0, 0.5], dt, dev))),
}
