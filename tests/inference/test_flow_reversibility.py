"""Geodesic flows at the step sizes the kernels adapt to (issue 11, defect 13).

* On flat targets (Haar measure on Stiefel, the uniform sphere) every step is
  accepted, so the step-size adaptation used to run away (to 1e13 and beyond);
  it must stay below the documented cap ``Geometry.max_step``.
* At the adapted step (and at the cap on compact manifolds) the flow for ``t``
  then ``-t`` must return to the start, to 1e-9 in float64, on every manifold
  the kernels support; and so must the whole leapfrog trajectory with the
  momentum flipped.

Deterministic checks (no statistical assertion): the adapted step is whatever
the warm-up gives, and the reversibility bound holds for every draw.
"""

from __future__ import annotations

import math

import pytest
import torch

from dlmppl import manifolds
from dlmppl.constraints import violation
from dlmppl.inference.integrators import geometry_of, riemannian_leapfrog
from dlmppl.inference.kernels import RiemannianHMC, RiemannianNUTS

F64 = torch.float64


def _lorentz_point(radius, d=2):
    """A point of the hyperboloid (k = 1) at hyperbolic distance ``radius`` from the origin."""
    u = torch.zeros(d + 1, dtype=F64)
    u[1] = radius
    return manifolds.Lorentz().expmap0(u)


def _minkowski(a, b):
    return (a[..., 1:] * b[..., 1:]).sum(-1) - a[..., 0] * b[..., 0]


_LORENTZ_LOC = _lorentz_point(3.0)


def _lorentz_potential(z):
    # hyperbolic von Mises-like target centred at radius 3: 4 (cosh d(x, loc) - 1)
    return 4.0 * (-_minkowski(z["x"], _LORENTZ_LOC) - 1.0).sum()


def _stereographic_potential(z):
    # κ = 0.7 > 0: squared geodesic distance to the origin, 2/√κ arctan(√κ |x|), over 2 σ², σ = 0.7
    rk = 0.7**0.5
    d = 2 / rk * torch.arctan(rk * z["x"].norm(dim=-1))
    return 0.5 * d.pow(2).sum() / 0.7**2


def _poincare_potential(z):
    r = z["x"].norm(dim=-1).clamp_max(1 - 1e-12)
    return 0.5 * (2 * torch.atanh(r)).pow(2).sum() / 0.7**2


def _spd_potential(z):
    lam = torch.linalg.eigvalsh(0.5 * (z["x"] + z["x"].transpose(-1, -2)))
    return 0.5 * lam.log().pow(2).sum() / 0.5**2


def _product_potential(z):
    x = z["x"]
    s, b = x[..., :3], x[..., 3:]
    r = b.norm(dim=-1).clamp_max(1 - 1e-12)
    return -(2.0 * s[..., 0]).sum() + 0.5 * (2 * torch.atanh(r)).pow(2).sum()


# (manifold, potential, initial point): tiny targets, one per family the kernels support
TARGETS = {
    "sphere": (manifolds.Sphere(), lambda z: -(2.0 * z["x"][..., 0]).sum(), torch.tensor([0.0, 1.0, 0.0], dtype=F64)),
    "stiefel": (manifolds.Stiefel(), lambda z: -(2.0 * z["x"][..., 0, 0]).sum(), torch.eye(4, 2, dtype=F64)),
    "stiefel_square": (manifolds.Stiefel(), lambda z: -(2.0 * z["x"][..., 0, 0]).sum(), torch.eye(3, dtype=F64)),
    "poincare": (manifolds.PoincareBall(c=1.0), _poincare_potential, torch.tensor([0.2, -0.1], dtype=F64)),
    "stereographic+": (
        manifolds.Stereographic(k=0.7),
        _stereographic_potential,
        torch.tensor([0.3, 0.2], dtype=F64),
    ),
    "spd": (manifolds.SymmetricPositiveDefinite(), _spd_potential, torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=F64)),
    "product": (
        manifolds.ProductManifold((manifolds.Sphere(), 3), (manifolds.PoincareBall(c=1.0), 2)),
        _product_potential,
        torch.tensor([0.6, 0.8, 0.0, 0.1, -0.2], dtype=F64),
    ),
    "euclidean": (manifolds.Euclidean(1), lambda z: 0.5 * z["x"].pow(2).sum(), torch.zeros(3, dtype=F64)),
    "lorentz": (manifolds.Lorentz(), _lorentz_potential, _LORENTZ_LOC.clone()),
}


def _warm_up(kernel_cls, manifold, potential_fn, x0, warmup=60, **kw):
    """Run the warm-up of a kernel by hand; returns the kernel (adapted) and the last state."""
    kernel = kernel_cls(potential_fn=potential_fn, manifolds={"x": manifold}, **kw)
    kernel.initial_params = {"x": x0}
    kernel.setup(warmup)
    params = dict(kernel.initial_params)
    for _ in range(warmup):
        params = kernel.sample(params)
    return kernel, params


def _kernel_momentum(kernel, g, x):
    # the momentum as the kernel draws it: √m times a standard normal in an orthonormal tangent basis
    return g.momentum(x) / math.sqrt(kernel.manifold_inverse_mass["x"])


def _flow_round_trip_error(g, x, p, t):
    y, w = g.flow(x, p, t)
    x2, p2 = g.flow(y, w, -t)
    scale = max(1.0, float(p.abs().max()))
    return max(float((x2 - x).abs().max()), float((p2 - p).abs().max()) / scale)


@pytest.mark.parametrize("name", list(TARGETS))
def test_flow_and_leapfrog_reversible_at_adapted_step(name):
    """At the step HMC adapts to (and at the cap on compact manifolds), flow(ε/m) then
    flow(-ε/m) returns to 1e-9 (float64); so does the kernel's leapfrog trajectory (at least
    3 steps) with the momentum flipped.  (Many more steps at a step this large amplify
    round-off exponentially, as any leapfrog beyond its linear stability limit does: that is
    the map's conditioning, not a defect of the flow.)"""
    M, potential_fn, x0 = TARGETS[name]
    kernel, params = _warm_up(RiemannianHMC, M, potential_fn, x0, trajectory_length=1.0)
    eps = kernel.step_size
    assert math.isfinite(eps) and eps > 0
    g = geometry_of(M)
    x = params["x"]
    inv_mass = kernel.manifold_inverse_mass["x"]

    def check_flow(step):
        for _ in range(10):
            p = _kernel_momentum(kernel, g, x)
            err = _flow_round_trip_error(g, x, p, step * inv_mass)
            assert err < 1e-9, f"{name}: flow(t) then flow(-t) is off by {err:.3g} at step {step:.3g} (1/m = {inv_mass:.3g})"

    check_flow(eps)
    z = {"x": x}
    inv = kernel.manifold_inverse_mass
    n = max(3, kernel.num_steps)
    for _ in range(3):
        r = {"x": _kernel_momentum(kernel, g, x)}
        z1, r1, _, pe1 = riemannian_leapfrog(z, r, potential_fn, lambda r: {}, {"x": g}, eps, n, inverse_masses=inv)
        if not torch.isfinite(pe1):
            continue  # a divergent trajectory (rejected by the kernel) need not return
        z2, r2, _, _ = riemannian_leapfrog(
            z1, {"x": -r1["x"]}, potential_fn, lambda r: {}, {"x": g}, eps, n, inverse_masses=inv
        )
        scale = max(1.0, float(r["x"].abs().max()))
        err = max(float((z2["x"] - x).abs().max()), float((-r2["x"] - r["x"]).abs().max()) / scale)
        assert err < 1e-9, f"{name}: {n}-step leapfrog round trip off by {err:.3g} at ε = {eps:.3g}"
    # compact manifolds: also at the largest step the adaptation may reach
    cap = g.max_step(x, inv_mass)
    assert eps <= cap * (1 + 1e-12)
    if math.isfinite(cap):
        check_flow(cap)


# (manifold, initial point, length of the shortest closed geodesic L, intrinsic dimension d)
FLAT = {
    "sphere S^2": (manifolds.Sphere(), torch.tensor([1.0, 0.0, 0.0], dtype=F64), 2 * math.pi, 2),
    "sphere S^9": (manifolds.Sphere(), torch.eye(10, dtype=F64)[0], 2 * math.pi, 9),
    "stiefel(4,2)": (manifolds.Stiefel(), torch.eye(4, 2, dtype=F64), 2 * math.pi, 5),
    "stiefel(3,3)": (manifolds.Stiefel(), torch.eye(3, dtype=F64), 2 * math.pi * math.sqrt(2), 3),
    "stereographic+": (manifolds.SphereProjection(c=2.0), torch.tensor([0.1, 0.2], dtype=F64), 2 * math.pi / math.sqrt(2), 2),
}


def _flat(z):
    return (z["x"] * 0).sum()  # Haar / uniform target: the potential is constant


@pytest.mark.parametrize(
    "name,kernel_cls",
    [(name, RiemannianHMC) for name in FLAT] + [("sphere S^2", RiemannianNUTS)],
)
def test_step_size_adaptation_bounded_on_flat_targets(name, kernel_cls):
    """On the Haar measure of Stiefel / the uniform sphere the adapted step stays at most the cap
    (half a closed geodesic per typical step), where it ran to 1e13 before; the flow is
    reversible there."""
    M, x0, length, dim = FLAT[name]
    kernel, params = _warm_up(kernel_cls, M, _flat, x0)
    g = geometry_of(M)
    x = params["x"]
    inv_mass = kernel.manifold_inverse_mass["x"]
    eps = kernel.step_size
    # the documented cap: a typical step (speed √(d/m)) travels half the shortest closed geodesic
    cap = 0.5 * length / math.sqrt(dim * inv_mass)
    assert eps <= cap * (1 + 1e-12), f"{name}: adapted step {eps:.3g} above the cap {cap:.3g}"
    assert violation(M, x).max() < 1e-10
    for _ in range(20):
        p = _kernel_momentum(kernel, g, x)
        err = _flow_round_trip_error(g, x, p, eps * inv_mass)
        assert err < 1e-9, f"{name}: flow round trip off by {err:.3g} at the adapted step {eps:.3g}"
    assert g.max_step(x, inv_mass) == pytest.approx(cap)
    assert kernel.diagnostics()["warmup"]["step_size_cap"] == pytest.approx(cap)


def test_max_step_formula():
    """ε_max = (L/2) √(m/d): π √(m/d) on the unit sphere, π/√κ · √(m/d) on a κ-sphere, inf on H^n."""
    x = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)
    assert geometry_of(manifolds.Sphere()).max_step(x, 0.5) == pytest.approx(math.pi / math.sqrt(3 * 0.5))
    y = torch.tensor([0.1, 0.2], dtype=F64)
    assert geometry_of(manifolds.SphereProjection(c=4.0)).max_step(y, 1.0) == pytest.approx(0.5 * math.pi / math.sqrt(2))
    assert geometry_of(manifolds.PoincareBall(c=1.0)).max_step(y, 1.0) == math.inf
    assert geometry_of(manifolds.Lorentz()).max_step(_LORENTZ_LOC, 1.0) == math.inf
    st = torch.eye(5, 2, dtype=F64)
    assert geometry_of(manifolds.Stiefel()).max_step(st, 1.0) == pytest.approx(math.pi / math.sqrt(7))


@pytest.mark.parametrize("shape", [(5, 3), (3, 2), (4, 4)])
def test_stiefel_flow_orthogonal_form_matches_the_textbook_form(shape):
    """The orthonormal-frame flow equals Edelman et al.'s expm form at moderate steps, stays on
    the manifold, keeps |v|, and is reversible to 1e-9 even at t·|v| = 1e3, where the old form
    lost 1e-7."""
    n, p = shape
    g = geometry_of(manifolds.Stiefel())
    x = torch.linalg.qr(torch.randn(4, n, p, dtype=F64)).Q
    v = g.momentum(x)
    t = 0.8
    a = x.transpose(-1, -2) @ v
    a = 0.5 * (a - a.transpose(-1, -2))
    s = v.transpose(-1, -2) @ v
    eye = torch.eye(p, dtype=F64).expand_as(a)
    block = torch.cat([torch.cat([a, -s], -1), torch.cat([eye, a], -1)], -2)
    xv = torch.cat([x, v], -1) @ torch.linalg.matrix_exp(t * block)
    e = torch.linalg.matrix_exp(-t * a)
    y, w = g.flow(x, v, t)
    assert torch.allclose(y, xv[..., :p] @ e, atol=1e-12)
    assert torch.allclose(w, xv[..., p:] @ e, atol=1e-12)
    assert violation(manifolds.Stiefel(), y).max() < 1e-12
    assert torch.allclose(w.pow(2).sum((-1, -2)), v.pow(2).sum((-1, -2)), rtol=1e-10)
    speed = v.pow(2).sum((-1, -2)).sqrt().max()
    assert _flow_round_trip_error(g, x, v, float(1e3 / speed)) < 1e-9


def test_spd_kinetic_energy_accurate_and_positive_when_ill_conditioned():
    """½ tr(X⁻¹VX⁻¹V) through X⁻¹ lost 8e-7 (relative) at cond(X) = 1e8 and went negative beyond
    1e12, so that an SPD chain accepted a jump to eigenvalue 4e17 (H = U + K with K < 0); in the
    eigenbasis of X it is a sum of non-negative terms, accurate to 1e-8 at cond 1e8."""
    g = geometry_of(manifolds.SymmetricPositiveDefinite())
    q = torch.linalg.qr(torch.tensor([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [1.5, 0.2, -0.7]], dtype=F64)).Q
    w = torch.tensor([[0.3, -1.2, 0.5], [-1.2, 0.8, 2.0], [0.5, 2.0, -0.4]], dtype=F64)
    for c, rtol in [(1e2, 1e-12), (1e4, 1e-8)]:  # cond(X) = c²
        lam = torch.tensor([1 / c, 1.0, c], dtype=F64)
        x = (q * lam) @ q.T
        xh = (q * lam.sqrt()) @ q.T
        v = xh @ w @ xh  # V = X^½ W X^½: ½ g(V, V) = ½ |W|²_F
        exact = 0.5 * float(w.pow(2).sum())
        assert abs(float(g.kinetic(x, v)) - exact) < rtol * exact, c
    lam = torch.tensor([1e-8, 1.0, 1e8], dtype=F64)
    x = (q * lam) @ q.T
    kinetic = torch.stack([g.kinetic(x, g.momentum(x)) for _ in range(100)])
    assert bool((kinetic >= 0).all())
    # the kernel's kinetic energy is the geometry's (the NUTS statistics too)
    kernel = RiemannianHMC(potential_fn=_spd_potential, manifolds={"x": manifolds.SymmetricPositiveDefinite()})
    kernel.initial_params = {"x": torch.eye(3, dtype=F64)}
    kernel.setup(0)
    p = g.momentum(x)
    ke, _, _ = kernel._velocity({"x": x}, {"x": p}, None)
    assert torch.allclose(ke, g.kinetic(x, p), rtol=1e-12)
