r"""Geodesic integrators for Riemannian HMC on manifolds with closed-form geodesics.

A latent site on a manifold ``M`` is a pair (point ``x``, velocity ``v`` in
``T_x M``) written in ambient coordinates.  The Hamiltonian is

    H(x, v) = U(x) + ½ g_x(v, v),   U = -log p,

with ``p`` the density with respect to the Riemannian volume measure (what every
dlmppl ``log_prob`` returns).  Written on the cotangent bundle with the momentum
``p = G(x) v``, ``H = U + ½ pᵀ G⁻¹ p`` and the marginal of ``x`` under
``exp(-H) dx dp`` is ``p(x) √det G dx = p(x) dvol(x)``: no log-determinant term is
needed (Girolami & Calderhead 2011, section 4.2; Byrne & Girolami 2013, section 2).

The integrator is the Strang splitting ``H = U + K`` (Byrne & Girolami 2013,
"Geodesic Monte Carlo on embedded manifolds", algorithm 1):

1. half momentum step  ``v ← v - ε/2 grad_R U(x)``  (exact flow of ``U``),
2. geodesic flow for time ``ε``: ``(x, v) ← (γ(ε), γ'(ε))`` with ``γ(0) = x``,
   ``γ'(0) = v``  (exact flow of ``K``: the Hamiltonian flow of ½ g⁻¹(p, p) is the
   cogeodesic flow; ``γ'(ε)`` is ``v`` parallel-transported along ``γ``),
3. half momentum step.

Each of the three maps is the exact flow of a Hamiltonian, hence symplectic and
volume preserving for the Liouville measure ``dvol(x) dλ_g(v)`` of the tangent
bundle; their symmetric composition is time reversible (flip ``v`` and run
again).  Metropolis-Hastings on ``H`` therefore leaves ``p(x) dvol`` invariant.
The per-manifold closed forms below are exact; after each geodesic step the
point is re-projected onto ``M`` and ``v`` onto ``T_x M``: both projections are
the identity on the tangent bundle, so in exact arithmetic they change nothing
(no Jacobian, proposal unchanged); in floating point they remove round-off drift
so that points stay on the manifold over 10⁴ transitions.

Closed forms (``t`` the step, ``s`` the speed):

* sphere ``S^d`` (embedded metric): great circle
  ``x' = cos(st) x + sin(st)/s v``, ``v' = -s sin(st) x + cos(st) v``.
* Stiefel ``V_p(R^n)`` (embedded metric; the canonical metric gives a volume
  proportional to it, so densities agree up to a constant): Edelman, Arias &
  Smith 1998 / Byrne & Girolami 2013 eq. (11),
  ``[x', v'] = [x, v] expm(t [[A, -S], [I, A]]) blockdiag(expm(-tA), expm(-tA))``,
  ``A = xᵀv``, ``S = vᵀv``, evaluated in the orthonormal frame ``[x, Q]`` with
  ``QR = v - xA`` (``Qᵀx = 0``): the block matrix is then similar to the skew
  ``B = [[2A, -Rᵀ], [R, 0]]`` and ``[x', v'] = [x, Q] expm(tB) [[I, A], [0, R]]
  blockdiag(expm(-tA), expm(-tA))``: products of orthogonal matrices only, so
  the flow keeps its accuracy (and reversibility) at any step, where the
  non-orthogonal ``expm`` of the textbook form mixes the scales ``|v|`` and
  ``1/|v|``.
* Lorentz ``⟨x,x⟩_L = -k``: hyperbola ``x' = cosh(st/√k) x + √k sinh(st/√k)/s v``,
  ``v' = s/√k sinh(st/√k) x + cosh(st/√k) v``, ``s² = ⟨v,v⟩_L``, evaluated as the boost
  of the flow at the origin without the cancellations of these sums far from it
  (:func:`dlmppl.lmath.geodesic_flow`; ``s`` from the frame coordinates of ``v``).
* κ-stereographic / Poincaré ball (conformal metric ``λ_x² I``): exponential map
  and gyration parallel transport of :mod:`dlmppl.kmath`; kinetic energy
  ``½ λ_x² |v|²``, momentum ``ξ / λ_x``.
* SPD with the affine-invariant metric ``tr(X⁻¹UX⁻¹V)``:
  ``X' = X^½ expm(tW) X^½``, ``V' = X^½ W expm(tW) X^½``, ``W = X^-½ V X^-½``.
* Euclidean: straight lines.  Products: componentwise.

**Step cap on compact manifolds.**  Geodesics of the sphere, of Stiefel and of
κ-stereographic spaces with κ > 0 close up: a step of the length of the shortest
closed geodesic ``L`` (2π on the unit sphere) is the identity, so on a flat
(Haar/uniform) target every step size is accepted and the step-size adaptation
runs away (to 1e13 and beyond, where the trigonometric functions have lost
every digit of the angle and the flow is no longer reversible).
:meth:`HMCGeometry.max_step` is the step at which a typical velocity
(``√(d/m)`` for intrinsic dimension ``d`` and scalar mass ``m``) travels half of
``L``: ``ε_max = (L/2) √(m/d)``; the kernels never adapt the step above it.

**Non-finite potentials.**  A trajectory that reaches a point where the
potential (or its gradient) is NaN or ±inf has diverged, wherever it is along
the trajectory: :func:`riemannian_leapfrog` then returns a potential of
``+inf`` (Stan treats a NaN log density the same way), so the proposal is
rejected; the rule depends on the set of visited points only, which is the
same for a trajectory and its reverse, so detailed balance is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import geoopt
import torch

from .. import kmath, lmath
from .. import manifolds as _m

__all__ = [
    "HMCGeometry",
    "Integrator",
    "geodesic_leapfrog",
    "geometry_of",
    "potential_grad",
    "riemannian_leapfrog",
    "trajectory",
]


def potential_grad(potential_fn, z, numerical_error=None):
    """``(gradients, potential)`` of ``potential_fn`` at ``z`` (dict site → tensor).

    As :func:`pyro.ops.integrator.potential_grad`, except that a potential that
    does not depend on a site (a ``ManifoldUniform`` prior whose only other
    factor involves other sites), or on any site at all (a flat target), has a
    zero gradient there instead of raising "differentiated Tensor ... not used
    in the graph".  An exception for which ``numerical_error(e)`` is true (the
    kernels pass Pyro's registered handlers: a failed Cholesky factorisation...)
    gives a NaN potential and zero gradients.  A batched potential (one value per
    chain, shape ``(K,)``) is differentiated through its sum: the chains are
    independent, so each gets its own gradient.
    """
    keys, nodes = zip(*z.items(), strict=True)
    for node in nodes:
        node.requires_grad_(True)
    try:
        try:
            potential_energy = potential_fn(z)
        except Exception as e:
            if numerical_error is not None and numerical_error(e):
                grads = {k: v.new_zeros(v.shape) for k, v in z.items()}
                return grads, nodes[0].new_tensor(float("nan"))
            raise
        if not torch.is_tensor(potential_energy):
            potential_energy = nodes[0].new_tensor(float(potential_energy))
        if potential_energy.requires_grad:
            grads = torch.autograd.grad(potential_energy.sum(), nodes, allow_unused=True)
        else:
            grads = (None,) * len(nodes)
    finally:
        for node in nodes:
            node.requires_grad_(False)
    grads = {k: torch.zeros_like(v) if g is None else g for k, v, g in zip(keys, nodes, grads, strict=True)}
    return grads, potential_energy.detach()


def _dot(a, b, ndim):
    """Sum over the last ``ndim`` dims, keepdim."""
    p = a * b
    for i in range(ndim):
        p = p.sum(-1 - i, keepdim=True)
    return p


def _sym(a):
    return 0.5 * (a + a.transpose(-1, -2))


class HMCGeometry:
    """What an HMC kernel needs of a manifold; points/vectors in ambient shape.

    ``momentum(x)`` draws a velocity that is standard normal in an orthonormal
    basis of ``T_x M``; ``kinetic(x, v)`` = ½ g_x(v, v) summed over every point;
    ``covector(x, v)`` = the momentum ``G(x) v`` in ambient coordinates (so that
    ``sum(covector * v) = g(v, v)``); ``rgrad(x, egrad)`` the Riemannian gradient;
    ``flow(x, v, t)`` the exact geodesic flow; ``project(x, v)`` the round-off
    clean-up (identity on the tangent bundle).
    """

    name = "Euclidean"

    def momentum(self, x):
        return torch.randn_like(x)

    def covector(self, x, v):
        return v

    def kinetic(self, x, v):
        return 0.5 * (self.covector(x, v) * v).sum()

    def rgrad(self, x, g):
        return g

    def flow(self, x, v, t):
        return x + t * v, v

    def project(self, x, v):
        return x, v

    def closed_geodesic_length(self, x) -> float:
        """Length of the shortest closed geodesic (``inf`` where geodesics do not close)."""
        return math.inf

    def point_dim(self, x) -> int:
        """Intrinsic dimension of one point of ``x`` (ambient shape ``batch + event``)."""
        return max(int(x.shape[-1]), 1) if x.dim() else 1

    def max_step(self, x, inverse_mass=1.0) -> float:
        """Largest useful step ε on a manifold whose geodesics close up (``inf`` elsewhere).

        With the velocity ``p / m`` of a momentum drawn as the kernels draw it
        (``√m`` times :meth:`momentum`), a typical step travels
        ``ε √(d / m)`` (``d`` = :meth:`point_dim`); ``ε_max = (L/2) √(m/d)``
        makes that half of the shortest closed geodesic ``L``
        (:meth:`closed_geodesic_length`), the largest step for which the
        step-size adaptation still sees a step as larger than a smaller one.
        A float (not a tensor): it is computed once per mass update.
        """
        length = self.closed_geodesic_length(x)
        if not math.isfinite(length):
            return math.inf
        return 0.5 * length / math.sqrt(self.point_dim(x) * float(inverse_mass))


class SphereGeometry(HMCGeometry):
    name = "Sphere"

    def momentum(self, x):
        xi = torch.randn_like(x)
        return xi - _dot(x, xi, 1) * x

    def rgrad(self, x, g):
        return g - _dot(x, g, 1) * x

    def flow(self, x, v, t):
        # great circle through x with unit direction u = v/s: x' = cos θ x + sin θ u,
        # v' = s (cos θ u - sin θ x), θ = s t (no s·sin(st)/s round trip)
        s = v.norm(dim=-1, keepdim=True)
        tiny = s <= torch.finfo(v.dtype).tiny
        u = v / torch.where(tiny, torch.ones_like(s), s)
        theta = s * t
        c, sn = torch.cos(theta), torch.sin(theta)
        x_new = c * x + sn * u
        v_new = s * (c * u - sn * x)
        return self.project(x_new, v_new)

    def project(self, x, v):
        x = x / x.norm(dim=-1, keepdim=True)
        return x, v - _dot(x, v, 1) * x

    def closed_geodesic_length(self, x) -> float:
        return 2 * math.pi

    def point_dim(self, x) -> int:
        return max(int(x.shape[-1]) - 1, 1)


class StiefelGeometry(HMCGeometry):
    name = "Stiefel"

    def _proju(self, x, u):
        return u - x @ _sym(x.transpose(-1, -2) @ u)

    def momentum(self, x):
        return self._proju(x, torch.randn_like(x))

    def rgrad(self, x, g):
        return self._proju(x, g)

    def flow(self, x, v, t):
        # Edelman et al.'s [x, v] expm(t[[A, -S], [I, A]]) in the orthonormal frame [x, Q],
        # QR = v - xA: there the generator is the skew B = [[2A, -Rᵀ], [R, 0]], so every
        # factor is orthogonal (see the module docstring)
        n, p = x.shape[-2:]
        a = x.transpose(-1, -2) @ v
        a = 0.5 * (a - a.transpose(-1, -2))  # skew in exact arithmetic
        ea = torch.linalg.matrix_exp(-t * a)
        k = min(p, n - p)
        if k == 0:  # n = p (orthogonal group): v = xA and the geodesic is x expm(tA)
            x_new = x @ ea.transpose(-1, -2)
            return self.project(x_new, x_new @ a)
        w = v - x @ a  # normal component of v
        # QR of [x, w]: the columns after the first p are orthonormal and orthogonal to x,
        # also when w is rank deficient (n < 2p, or v with no normal component)
        q = torch.linalg.qr(torch.cat([x, w], -1)).Q[..., p : p + k]
        r = q.transpose(-1, -2) @ w  # (k, p)
        zeros = torch.zeros(x.shape[:-2] + (k, k), dtype=x.dtype, device=x.device)
        b = torch.cat([torch.cat([2 * a, -r.transpose(-1, -2)], -1), torch.cat([r, zeros], -1)], -2)
        e = torch.linalg.matrix_exp(t * b)  # orthogonal, (p + k) x (p + k)
        frame = torch.cat([x, q], -1)
        x_new = frame @ e[..., :, :p] @ ea
        v_new = frame @ (e @ torch.cat([a, r], -2)) @ ea
        return self.project(x_new, v_new)

    def project(self, x, v):
        u, _, vh = torch.linalg.svd(x, full_matrices=False)
        x = u @ vh
        return x, self._proju(x, v)

    def closed_geodesic_length(self, x) -> float:
        # one column turning in a plane orthogonal to the others: a great circle (n > p);
        # for n = p the shortest closed geodesics (a 2x2 rotation block) are √2 longer
        n, p = x.shape[-2:]
        return 2 * math.pi if n > p else 2 * math.pi * math.sqrt(2)

    def point_dim(self, x) -> int:
        n, p = x.shape[-2:]
        return max(n * p - p * (p + 1) // 2, 1)


class LorentzGeometry(HMCGeometry):
    """Hyperboloid ``⟨x,x⟩_L = -k``, computed in the frame transported from the origin.

    Far from the origin the ambient coordinates (size ``e^ρ``) make every Minkowski
    product cancel (``⟨v,v⟩_L``, ``⟨x,v⟩_L``, ``cosh(st) x + ...``); momentum, kinetic
    energy, gradient, flow and projection use the cancellation-free forms of
    :mod:`dlmppl.lmath` instead, so that the flow conserves ``g(v, v)`` and is
    reversible at radius 20-40 (float64).  ``covector`` is the exact Minkowski lowering
    ``(-v_0, v_s)``; its plain sum with ``v`` cancels far out, ``kinetic`` does not.
    """

    name = "Lorentz"

    def __init__(self, k):
        self.k = k

    def _k(self, x):
        return torch.as_tensor(self.k, dtype=x.dtype, device=x.device).detach()

    def momentum(self, x):
        # standard normal frame coordinates, transported from the origin (an isometry)
        return lmath.frame_to_ambient(x, torch.randn_like(x[..., 1:]), self._k(x))

    def covector(self, x, v):
        return torch.cat([-v[..., :1], v[..., 1:]], -1)

    def kinetic(self, x, v):
        # ½ |w|², w the frame coordinates of v: ⟨v,v⟩_L = |v_s|² - v_0² cancels (both ~ e^{2ρ})
        return 0.5 * lmath.frame_from_ambient(x, v, self._k(x)).pow(2).sum()

    def rgrad(self, x, g):
        return lmath.egrad2rgrad(x, g, self._k(x))

    def flow(self, x, v, t):
        # exact geodesic flow, inward geodesics without cancellation (lmath.geodesic_flow)
        return self.project(*lmath.geodesic_flow(x, v, t, self._k(x)))

    def project(self, x, v):
        # x_0 from x_s and v_0 from tangency: the identity on the tangent bundle
        k = self._k(x)
        x = lmath.project(x, k)
        return x, lmath.to_tangent(x, v, k)


class StereographicGeometry(HMCGeometry):
    name = "Stereographic"

    def __init__(self, k):
        self.k = k

    def _k(self, x):
        return torch.as_tensor(self.k, dtype=x.dtype, device=x.device).detach()

    def momentum(self, x):
        return torch.randn_like(x) / kmath.lambda_x(x, self._k(x))

    def covector(self, x, v):
        return kmath.lambda_x(x, self._k(x)).pow(2) * v

    def rgrad(self, x, g):
        return g / kmath.lambda_x(x, self._k(x)).pow(2)

    def flow(self, x, v, t):
        k = self._k(x)
        y = kmath.expmap(x, t * v, k)
        w = kmath.parallel_transport(x, y, v, k)
        return self.project(y, w)

    def project(self, x, v):
        return kmath.project(x, self._k(x)), v

    def closed_geodesic_length(self, x) -> float:
        # κ > 0: the stereographic sphere of radius 1/√κ (great circles of length 2π/√κ)
        k = self._k(x)
        k_max = float(k.max()) if k.numel() else 0.0
        return 2 * math.pi / math.sqrt(k_max) if k_max > 0 else math.inf


class SPDGeometry(HMCGeometry):
    name = "SymmetricPositiveDefinite"

    @staticmethod
    def _sqrt_and_isqrt(x):
        d, u = torch.linalg.eigh(_sym(x))
        sd = d.clamp_min(torch.finfo(x.dtype).tiny).sqrt()
        ut = u.transpose(-1, -2)
        return (u * sd.unsqueeze(-2)) @ ut, (u / sd.unsqueeze(-2)) @ ut

    def momentum(self, x):
        a = torch.randn_like(x)
        xh, _ = self._sqrt_and_isqrt(x)
        return xh @ _sym(a) @ xh

    def covector(self, x, v):
        # X⁻¹VX⁻¹ in the eigenbasis of X (no inverse of an ill-conditioned matrix)
        d, u = torch.linalg.eigh(_sym(x))
        d = d.clamp_min(torch.finfo(x.dtype).tiny)
        ut = u.transpose(-1, -2)
        w = (ut @ _sym(v) @ u) / (d.unsqueeze(-1) * d.unsqueeze(-2))
        return u @ w @ ut

    def kinetic(self, x, v):
        # ½ tr(X⁻¹VX⁻¹V) = ½ Σ_ij (QᵀVQ)_ij² / (λ_i λ_j) (X = QΛQᵀ): a sum of non-negative terms.
        # Through X⁻¹ the trace cancels: relative error 0.6 at cond(X) = 1e12 and negative
        # energies beyond, which let a chain accept a jump to eigenvalue 4e17; here 5e-7.
        # A point that is numerically not positive definite has infinite energy.
        d, u = torch.linalg.eigh(_sym(x))
        w = u.transpose(-1, -2) @ _sym(v) @ u
        denom = (d.unsqueeze(-1) * d.unsqueeze(-2)).clamp_min(torch.finfo(x.dtype).tiny)
        quad = (w.pow(2) / denom).sum((-1, -2))
        quad = torch.where(d.min(-1).values > 0, quad, torch.full_like(quad, float("inf")))
        return 0.5 * quad.sum()

    def rgrad(self, x, g):
        return x @ _sym(g) @ x

    def flow(self, x, v, t):
        xh, xih = self._sqrt_and_isqrt(x)
        w = _sym(xih @ v @ xih)
        lam, q = torch.linalg.eigh(w)
        e = torch.exp(t * lam).unsqueeze(-2)
        qt = q.transpose(-1, -2)
        x_new = xh @ ((q * e) @ qt) @ xh
        v_new = xh @ ((q * (lam.unsqueeze(-2) * e)) @ qt) @ xh
        return self.project(x_new, v_new)

    def project(self, x, v):
        return _sym(x), _sym(v)

    def point_dim(self, x) -> int:
        n = x.shape[-1]
        return n * (n + 1) // 2


class ProductGeometry(HMCGeometry):
    name = "ProductManifold"

    def __init__(self, manifold):
        self.manifold = manifold
        self.parts = [geometry_of(m) for m in manifold.manifolds]
        self.slices = manifold.slices
        self.shapes = manifold.shapes

    def _split(self, x):
        batch = x.shape[:-1]
        return [x[..., sl].reshape(batch + tuple(sh)) for sl, sh in zip(self.slices, self.shapes, strict=True)]

    def _join(self, parts, batch):
        return torch.cat([p.reshape(batch + (-1,)) for p in parts], -1)

    def _map(self, fn, x, *others):
        batch = x.shape[:-1]
        xs = self._split(x)
        os_ = [self._split(o) for o in others]
        out = [fn(g, xi, *[o[i] for o in os_]) for i, (g, xi) in enumerate(zip(self.parts, xs, strict=True))]
        return out, batch

    def momentum(self, x):
        out, batch = self._map(lambda g, xi: g.momentum(xi), x)
        return self._join(out, batch)

    def covector(self, x, v):
        out, batch = self._map(lambda g, xi, vi: g.covector(xi, vi), x, v)
        return self._join(out, batch)

    def rgrad(self, x, gr):
        out, batch = self._map(lambda g, xi, gi: g.rgrad(xi, gi), x, gr)
        return self._join(out, batch)

    def flow(self, x, v, t):
        out, batch = self._map(lambda g, xi, vi: g.flow(xi, vi, t), x, v)
        return self._join([o[0] for o in out], batch), self._join([o[1] for o in out], batch)

    def project(self, x, v):
        out, batch = self._map(lambda g, xi, vi: g.project(xi, vi), x, v)
        return self._join([o[0] for o in out], batch), self._join([o[1] for o in out], batch)

    def point_dim(self, x) -> int:
        return sum(g.point_dim(xi) for g, xi in zip(self.parts, self._split(x), strict=True))

    def max_step(self, x, inverse_mass=1.0) -> float:
        # momenta are drawn part by part, so each part's typical speed is √(d_i/m)
        return min(g.max_step(xi, inverse_mass) for g, xi in zip(self.parts, self._split(x), strict=True))


def geometry_of(manifold) -> HMCGeometry:
    """The :class:`HMCGeometry` of a (dlmppl/geoopt) manifold.

    Supported: Sphere (any dimension), Stiefel (embedded metric), Lorentz,
    κ-stereographic (Stereographic, PoincareBall, SphereProjection, fixed
    curvature of either sign), SymmetricPositiveDefinite (affine-invariant
    metric), Euclidean, and ProductManifold of these.  Raises ``ValueError``
    otherwise.
    """
    base = _m._base(manifold)
    if base is not manifold:
        raise ValueError(f"geometry_of: Scaled manifolds are not supported by the HMC kernels, got {manifold}")
    if isinstance(base, geoopt.ProductManifold):
        return ProductGeometry(base)
    if isinstance(base, geoopt.Sphere):
        if getattr(base, "projector", None) is not None:
            raise ValueError("geometry_of: spheres with a subspace projector are not supported")
        return SphereGeometry()
    if isinstance(base, geoopt.Stiefel):
        return StiefelGeometry()
    if isinstance(base, geoopt.Lorentz):
        return LorentzGeometry(base.k)
    if isinstance(base, geoopt.Stereographic):
        return StereographicGeometry(base.k)
    if isinstance(base, geoopt.SymmetricPositiveDefinite):
        if str(base.default_metric.value) != "AIM":
            raise ValueError("geometry_of: SPD manifolds are supported with the affine-invariant metric only")
        return SPDGeometry()
    if isinstance(base, geoopt.Euclidean):
        return HMCGeometry()
    raise ValueError(
        f"geometry_of: no exact geodesic flow for {type(base).__name__}; supported: Sphere, Stiefel, "
        "Lorentz, Stereographic/PoincareBall/SphereProjection, SymmetricPositiveDefinite, Euclidean, ProductManifold"
    )


def riemannian_leapfrog(
    z, r, potential_fn, kinetic_grad, geometries, step_size, num_steps=1, z_grads=None, inverse_masses=None,
    numerical_error=None,
):
    """``num_steps`` steps of the geodesic leapfrog (Byrne & Girolami 2013, alg. 1).

    Args:
        z: dict site → value (unconstrained for Euclidean sites, a point for
            manifold sites).
        r: dict site → momentum (Euclidean sites, as in Pyro) or momentum
            vector ``p`` in ``T_x M`` (manifold sites; velocity ``p / m``).
        potential_fn: dict → scalar potential energy.
        kinetic_grad: Pyro's mass-matrix ``kinetic_grad`` for the Euclidean sites.
        geometries: dict site → :class:`HMCGeometry` for manifold sites.
        step_size: ε (negative to integrate backwards; a tensor ``(K, 1)`` gives
            each chain of a batched state its own step, Euclidean sites only).
        z_grads: Euclidean gradients of the potential at ``z`` (recomputed if None).
        inverse_masses: dict site → float ``1/m`` for manifold sites (default 1).
            With the scalar mass ``m`` the kinetic energy is ``½ g(p, p) / m``;
            its exact flow is the geodesic flow with velocity ``p / m``, i.e.
            ``flow(x, p, ε/m)`` (the transported ``p`` keeps its norm), so the
            step is still an exact Hamiltonian flow: reversible and volume
            preserving for every fixed ``m``.
        numerical_error: predicate on exceptions of ``potential_fn`` that mean a
            NaN potential (see :func:`potential_grad`).

    Returns ``(z, r, z_grads, potential_energy)`` like
    :func:`pyro.ops.integrator.velocity_verlet`, except that
    ``potential_energy`` is ``+inf`` when the potential was NaN or ±inf at
    any point of the trajectory (a divergence; see the module docstring).
    The check costs no host synchronisation: callers that want to stop a
    diverged trajectory early call this function on chunks of steps.
    """
    z = z.copy()
    r = r.copy()
    potential_energy = None
    nonfinite = None
    half = 0.5 * step_size
    inverse_masses = inverse_masses or {}
    for _ in range(num_steps):
        if z_grads is None:
            z_grads, potential_energy = potential_grad(potential_fn, z, numerical_error)
        for name in r:
            g = geometries.get(name)
            grad = z_grads[name] if g is None else g.rgrad(z[name], z_grads[name])
            r[name] = r[name] - half * grad
        vel = kinetic_grad(r)
        for name in z:
            g = geometries.get(name)
            if g is None:
                z[name] = z[name] + step_size * vel[name]
            else:
                z[name], r[name] = g.flow(z[name], r[name], step_size * inverse_masses.get(name, 1.0))
        z_grads, potential_energy = potential_grad(potential_fn, z, numerical_error)
        bad = ~torch.isfinite(potential_energy)
        nonfinite = bad if nonfinite is None else nonfinite | bad
        for name in r:
            g = geometries.get(name)
            grad = z_grads[name] if g is None else g.rgrad(z[name], z_grads[name])
            r[name] = r[name] - half * grad
    if nonfinite is not None:
        potential_energy = torch.where(nonfinite, torch.full_like(potential_energy, float("inf")), potential_energy)
    return z, r, z_grads, potential_energy


class Integrator(NamedTuple):
    """A Hamiltonian integrator as four functions of explicit state (blackjax/numpyro style).

    The state of a chain is ``(z, aux, potential_energy)``: ``z`` a dict site →
    value, ``aux`` what the integrator keeps between steps (the gradients for the
    geodesic leapfrog, the metric's eigendecomposition for SoftAbs).

    * ``init(z) -> (aux, potential_energy)``;
    * ``momentum(z, aux) -> r``: a draw of the momentum (dict site → tensor);
    * ``kinetic(z, r, aux) -> (kinetic_energy, velocities, covectors)``: the
      covectors are the momenta ``G(x) v`` in ambient coordinates (NUTS's
      U-turn criterion pairs them with the velocities);
    * ``step(z, r, aux, step_size, num_steps=1) -> (z, r, aux, potential_energy)``,
      with ``potential_energy = +inf`` when it was NaN or ±inf anywhere on the way.

    Implementations: :func:`geodesic_leapfrog` (Byrne & Girolami 2013) and
    :func:`dlmppl.inference.softabs.softabs_integrator` (Betancourt 2013).
    """

    init: Callable
    momentum: Callable
    kinetic: Callable
    step: Callable


def _rsum(x, batch_ndim):
    """Sum over all but the first ``batch_ndim`` dims."""
    return x.reshape(x.shape[:batch_ndim] + (-1,)).sum(-1)


def geodesic_leapfrog(
    potential_fn, geometries, inverse_masses, kinetic_grad, euclidean_momentum, batch_ndim=0, numerical_error=None
) -> Integrator:
    """The geodesic leapfrog (Byrne & Girolami 2013, alg. 1) as an :class:`Integrator`.

    Args:
        potential_fn: dict → potential energy (scalar, or ``(K,)`` for ``K``
            chains batched along the first ``batch_ndim`` dims of every site).
        geometries: dict manifold site → :class:`HMCGeometry` (unbatched only:
            their kinetic energy sums over every point).
        inverse_masses: dict manifold site → float ``1/m_s``; read at each call,
            so an adaptation may update it in place.
        kinetic_grad: dict of momenta → dict of velocities ``M⁻¹ r`` of the
            Euclidean sites (e.g. Pyro's ``BlockMassMatrix.kinetic_grad``).
        euclidean_momentum: ``z`` → dict of momenta ``N(0, M)`` of the Euclidean sites.
        batch_ndim: leading batch dims of a batched state (energies per chain).
        numerical_error: see :func:`potential_grad`.
    """

    def init(z):
        return potential_grad(potential_fn, z, numerical_error)

    def momentum(z, aux):
        r = euclidean_momentum(z)
        for name, g in geometries.items():
            r[name] = g.momentum(z[name]) / math.sqrt(inverse_masses[name])
        return r

    def kinetic(z, r, aux):
        vel = kinetic_grad(r)
        cov = {}
        ke = 0.0
        for name, v in vel.items():
            cov[name] = r[name]
            ke = ke + _rsum(r[name] * v, batch_ndim)
        for name, g in geometries.items():
            vel[name] = r[name] * inverse_masses[name]  # velocity p / m
            cov[name] = g.covector(z[name], r[name])  # momentum covector G(x) p
            # g(p, p) / m from the geometry's own kinetic energy: sum(G(x)p · p) cancels far from
            # the origin (Lorentz) or loses every digit when G(x) is ill-conditioned (SPD)
            ke = ke + 2 * g.kinetic(z[name], r[name]) * inverse_masses[name]
        return 0.5 * ke, vel, cov

    def step(z, r, aux, step_size, num_steps=1):
        return riemannian_leapfrog(
            z, r, potential_fn, kinetic_grad, geometries, step_size, num_steps,
            z_grads=aux, inverse_masses=inverse_masses, numerical_error=numerical_error,
        )  # fmt: skip

    return Integrator(init, momentum, kinetic, step)


def trajectory(integrator, z, r, aux, step_size, num_steps, check_every=None, energy_current=None):
    """``num_steps`` steps of ``integrator``, in chunks of ``check_every`` steps.

    Stops at the first chunk that met a non-finite potential (the proposal is
    rejected whatever follows; one host synchronisation per chunk, so scalar
    states only; ``None``: one chunk, no synchronisation, batched states too).
    Returns ``(z, r, aux, potential_energy, checkpoints)``, ``checkpoints`` the
    Metropolis acceptance ``min(1, exp(H₀ - H))`` at each chunk end before the
    last (NaN counts 0), when ``energy_current`` ``H₀`` is given.
    """
    checkpoints = []
    if check_every is None or num_steps <= check_every:
        return (*integrator.step(z, r, aux, step_size, num_steps), checkpoints)
    done = 0
    while True:
        n = min(check_every, num_steps - done)
        z, r, aux, pe = integrator.step(z, r, aux, step_size, n)
        done += n
        if done >= num_steps or not bool(torch.isfinite(pe)):
            return z, r, aux, pe, checkpoints
        if energy_current is not None:
            e = pe + integrator.kinetic(z, r, aux)[0]
            checkpoints.append(torch.nan_to_num((energy_current - e).exp().clamp(max=1.0), nan=0.0))
