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
:meth:`~dlmppl.geometry.Geometry.max_step` is the step at which a typical velocity
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

import torch
from pyro.ops.integrator import _EXCEPTION_HANDLERS

from ..geometry import Geometry
from ..geometry import geometry_of as _geometry_of

__all__ = [
    "geometry_of",
    "potential_grad",
    "riemannian_leapfrog",
]


def potential_grad(potential_fn, z):
    """``(gradients, potential)`` of ``potential_fn`` at ``z`` (dict site → tensor).

    As :func:`pyro.ops.integrator.potential_grad`, except that a potential that
    does not depend on a site (a ``ManifoldUniform`` prior whose only other
    factor involves other sites), or on any site at all (a flat target), has a
    zero gradient there instead of raising "differentiated Tensor ... not used
    in the graph".  Exceptions registered with Pyro's exception handlers (a
    failed Cholesky factorisation...) give a NaN potential and zero gradients.
    """
    keys, nodes = zip(*z.items(), strict=True)
    for node in nodes:
        node.requires_grad_(True)
    try:
        try:
            potential_energy = potential_fn(z)
        except Exception as e:
            if any(h(e) for h in _EXCEPTION_HANDLERS.values()):
                grads = {k: v.new_zeros(v.shape) for k, v in z.items()}
                return grads, nodes[0].new_tensor(float("nan"))
            raise
        if not torch.is_tensor(potential_energy):
            potential_energy = nodes[0].new_tensor(float(potential_energy))
        if potential_energy.requires_grad:
            grads = torch.autograd.grad(potential_energy, nodes, allow_unused=True)
        else:
            grads = (None,) * len(nodes)
    finally:
        for node in nodes:
            node.requires_grad_(False)
    grads = {k: torch.zeros_like(v) if g is None else g for k, v, g in zip(keys, nodes, grads, strict=True)}
    return grads, potential_energy.detach()


def geometry_of(manifold) -> Geometry:
    """The :class:`~dlmppl.geometry.Geometry` the HMC kernels use for ``manifold``.

    :func:`dlmppl.geometry.geometry_of` with the curvature detached from autograd;
    ``ValueError`` for a family without an exact geodesic flow or a variant the
    flows do not cover (``Scaled`` manifolds, spheres with a subspace projector,
    SPD with a metric other than the affine-invariant one).
    """
    return _geometry_of(manifold).for_hmc()


def riemannian_leapfrog(
    z, r, potential_fn, kinetic_grad, geometries, step_size, num_steps=1, z_grads=None, inverse_masses=None
):
    """``num_steps`` steps of the geodesic leapfrog (Byrne & Girolami 2013, alg. 1).

    Args:
        z: dict site → value (unconstrained for Euclidean sites, a point for
            manifold sites).
        r: dict site → momentum (Euclidean sites, as in Pyro) or momentum
            vector ``p`` in ``T_x M`` (manifold sites; velocity ``p / m``).
        potential_fn: dict → scalar potential energy.
        kinetic_grad: Pyro's mass-matrix ``kinetic_grad`` for the Euclidean sites.
        geometries: dict site → :class:`~dlmppl.geometry.Geometry` (:func:`geometry_of`) for manifold sites.
        step_size: ε (negative to integrate backwards).
        z_grads: Euclidean gradients of the potential at ``z`` (recomputed if None).
        inverse_masses: dict site → float ``1/m`` for manifold sites (default 1).
            With the scalar mass ``m`` the kinetic energy is ``½ g(p, p) / m``;
            its exact flow is the geodesic flow with velocity ``p / m``, i.e.
            ``flow(x, p, ε/m)`` (the transported ``p`` keeps its norm), so the
            step is still an exact Hamiltonian flow: reversible and volume
            preserving for every fixed ``m``.

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
            z_grads, potential_energy = potential_grad(potential_fn, z)
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
        z_grads, potential_energy = potential_grad(potential_fn, z)
        bad = ~torch.isfinite(potential_energy)
        nonfinite = bad if nonfinite is None else nonfinite | bad
        for name in r:
            g = geometries.get(name)
            grad = z_grads[name] if g is None else g.rgrad(z[name], z_grads[name])
            r[name] = r[name] - half * grad
    if nonfinite is not None:
        potential_energy = torch.where(nonfinite, torch.full_like(potential_energy, float("inf")), potential_energy)
    return z, r, z_grads, potential_energy
