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

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..geometry import Geometry
from ..geometry import geometry_of as _geometry_of

__all__ = [
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
            total = potential_energy if potential_energy.dim() == 0 else potential_energy.sum()
            grads = torch.autograd.grad(total, nodes, allow_unused=True)
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
        geometries: dict site → :class:`~dlmppl.geometry.Geometry` (:func:`geometry_of`) for manifold sites.
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
    # (site, geometry or None) once, not a dict lookup per site and half step
    sites = [(name, geometries.get(name)) for name in r]
    for i in range(num_steps):
        if z_grads is None:
            z_grads, potential_energy = potential_grad(potential_fn, z, numerical_error)
        for name, g in sites:
            grad = z_grads[name] if g is None else g.rgrad(z[name], z_grads[name])
            r[name] = r[name] - half * grad
        vel = kinetic_grad(r)
        for name, g in sites:
            if g is None:
                z[name] = z[name] + step_size * vel[name]
            else:
                z[name], r[name] = g.flow(z[name], r[name], step_size * inverse_masses.get(name, 1.0))
        z_grads, potential_energy = potential_grad(potential_fn, z, numerical_error)
        if i < num_steps - 1:
            # remember a non-finite potential met on the way (the last one is mapped below)
            bad = ~torch.isfinite(potential_energy)
            nonfinite = bad if nonfinite is None else nonfinite | bad
        for name, g in sites:
            grad = z_grads[name] if g is None else g.rgrad(z[name], z_grads[name])
            r[name] = r[name] - half * grad
    if num_steps > 0:
        # NaN and ±inf at the end -> +inf, in one op
        inf = float("inf")
        potential_energy = torch.nan_to_num(potential_energy, nan=inf, posinf=inf, neginf=inf)
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
    if x.dim() == batch_ndim + 1:  # already flat: no reshape
        return x.sum(-1)
    return x.reshape(x.shape[:batch_ndim] + (-1,)).sum(-1)


def geodesic_leapfrog(
    potential_fn, geometries, inverse_masses, kinetic_grad, euclidean_momentum, batch_ndim=0, numerical_error=None
) -> Integrator:
    """The geodesic leapfrog (Byrne & Girolami 2013, alg. 1) as an :class:`Integrator`.

    Args:
        potential_fn: dict → potential energy (scalar, or ``(K,)`` for ``K``
            chains batched along the first ``batch_ndim`` dims of every site).
        geometries: dict manifold site → :class:`~dlmppl.geometry.Geometry` (unbatched only:
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
        ke = None  # (not 0.0 + ...: one op less per term, the same sum)
        for name, v in vel.items():
            cov[name] = r[name]
            term = _rsum(r[name] * v, batch_ndim)
            ke = term if ke is None else ke + term
        for name, g in geometries.items():
            vel[name] = r[name] * inverse_masses[name]  # velocity p / m
            cov[name] = g.covector(z[name], r[name])  # momentum covector G(x) p
            # g(p, p) / m from the geometry's own kinetic energy: sum(G(x)p · p) cancels far from
            # the origin (Lorentz) or loses every digit when G(x) is ill-conditioned (SPD)
            term = 2 * g.kinetic(z[name], r[name]) * inverse_masses[name]
            ke = term if ke is None else ke + term
        return 0.5 * (0.0 if ke is None else ke), vel, cov

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
