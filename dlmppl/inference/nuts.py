r"""Riemannian No-U-Turn sampler for :class:`pyro.infer.MCMC`.

Multinomial NUTS (Betancourt 2017, "A conceptual introduction to Hamiltonian
Monte Carlo", appendix A) on the geodesic leapfrog of
:mod:`dlmppl.inference.integrators`, with biased progressive sampling between
subtrees and uniform (weight-proportional) sampling inside them, as in Stan and
Pyro.

**U-turn criterion on a manifold.**  Momenta at different points live in
different tangent spaces, so their sum needs a common space.  We use the
generalised criterion of Betancourt (2013, "Generalizing the No-U-Turn sampler
to Riemannian manifolds") written in *ambient* coordinates: every state carries
its momentum as an ambient covector ``p = G(x) v`` (sphere and Stiefel: ``v``
itself; Lorentz: ``v`` with its time component negated; Poincaré ball /
κ-stereographic: ``λ_x² v``; SPD: ``X⁻¹VX⁻¹``; Euclidean sites: Pyro's
momentum) and its velocity ``v``.  With the scalar mass ``m`` of a manifold
site the state stores the momentum vector ``p_vec = m v`` in ``T_x M``; the
covector is ``G(x) p_vec`` and the velocity paired with it is ``p_vec / m``
(as Euclidean NUTS pairs ``p`` with ``M⁻¹ p``).  With ``ρ`` the sum of the covectors over a
(sub)trajectory, it is turning when

    ⟨ρ − (p₋ + p₊)/2, v₋⟩ ≤ 0   or   ⟨ρ − (p₋ + p₊)/2, v₊⟩ ≤ 0,

the pairing being the plain sum of products.  For embedded manifolds
(sphere, Stiefel, as in Byrne & Girolami 2013) ``ε ρ`` is the ambient chord
between the ends, so on a great circle the trajectory stops after about half a
turn.  The criterion is a deterministic symmetric function of the trajectory, so
detailed balance holds whatever the choice; the choice only sets efficiency.
"""

from __future__ import annotations

import pyro
import torch
from pyro.infer.autoguide import init_to_uniform
from pyro.ops.integrator import _EXCEPTION_HANDLERS
from pyro.util import optional

from .hmc import RiemannianHMC, _nan_to_inf

__all__ = ["RiemannianNUTS"]


class _Leaf:
    __slots__ = ("z", "r", "aux", "vel", "cov")

    def __init__(self, z, r, aux, vel, cov):
        self.z, self.r, self.aux, self.vel, self.cov = z, r, aux, vel, cov


class _Tree:
    __slots__ = (
        "left", "right", "z_proposal", "pe_proposal", "aux_proposal", "energy_proposal",
        "rho", "weight", "turning", "diverging", "nonfinite", "sum_accept_probs", "num_proposals",
    )  # fmt: skip


def _is_turning(left, right, rho):
    left_angle = 0.0
    right_angle = 0.0
    for name, value in rho.items():
        d = value - 0.5 * (left.cov[name] + right.cov[name])
        left_angle = left_angle + (left.vel[name] * d).sum()
        right_angle = right_angle + (right.vel[name] * d).sum()
    return bool(left_angle <= 0) or bool(right_angle <= 0)


class RiemannianNUTS(RiemannianHMC):
    r"""No-U-Turn sampler with manifold-valued latent sites.

    Arguments as :class:`pyro.infer.NUTS` (``model`` or ``potential_fn``,
    ``step_size``, ``adapt_step_size``, ``adapt_mass_matrix``, ``full_mass``,
    ``transforms``, ``max_plate_nesting``, ``jit_compile``,
    ``target_accept_prob``, ``max_tree_depth``, ``init_strategy``) and those of
    :class:`~dlmppl.inference.hmc.RiemannianHMC` (``manifolds``, ``metric``,
    ``softabs_alpha``, ``fixed_point_iters``).  See the module docstring for
    the U-turn criterion on manifolds.

    References: Hoffman & Gelman (2014) "The No-U-Turn sampler"; Betancourt
    (2017) "A conceptual introduction to HMC" (multinomial sampling);
    Betancourt (2013) "Generalizing the NUTS to Riemannian manifolds";
    Byrne & Girolami (2013) "Geodesic Monte Carlo on embedded manifolds".
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        step_size=1,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        full_mass=False,
        transforms=None,
        max_plate_nesting=None,
        jit_compile=False,
        jit_options=None,
        ignore_jit_warnings=False,
        target_accept_prob=0.8,
        max_tree_depth=10,
        init_strategy=init_to_uniform,
        *,
        manifolds=None,
        metric="euclidean",
        softabs_alpha=1e6,
        fixed_point_iters=6,
    ):
        super().__init__(
            model,
            potential_fn,
            step_size,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            full_mass=full_mass,
            transforms=transforms,
            max_plate_nesting=max_plate_nesting,
            jit_compile=jit_compile,
            jit_options=jit_options,
            ignore_jit_warnings=ignore_jit_warnings,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
            manifolds=manifolds,
            metric=metric,
            softabs_alpha=softabs_alpha,
            fixed_point_iters=fixed_point_iters,
        )
        if int(max_tree_depth) < 1:
            raise ValueError(f"max_tree_depth must be >= 1, got {max_tree_depth}")
        self._max_tree_depth = int(max_tree_depth)
        self._max_sliced_energy = 1000

    def _base_tree(self, leaf, step_size, energy_current):
        try:
            z, r, aux, pe = self._leapfrog(leaf.z, leaf.r, leaf.aux, step_size)
            ke, vel, cov = self._velocity(z, r, aux)
            energy = _nan_to_inf(pe + ke)
        except Exception as e:
            if any(h(e) for h in _EXCEPTION_HANDLERS.values()) or isinstance(e, RuntimeError):
                z, r, aux, pe, vel, cov = leaf.z, leaf.r, leaf.aux, None, leaf.vel, leaf.cov
                energy = energy_current.new_tensor(float("inf"))
            else:
                raise
        new = _Leaf(z, r, aux, vel, cov)
        t = _Tree()
        t.left = t.right = new
        t.z_proposal, t.pe_proposal, t.aux_proposal, t.energy_proposal = z, pe, aux, energy
        t.rho = cov
        delta = energy - energy_current
        t.weight = -delta
        t.turning = False
        t.diverging = bool(delta > self._max_sliced_energy)
        # a NaN/inf potential is a divergence (energy +inf); told apart for diagnostics (syncs only then)
        t.nonfinite = t.diverging and not bool(torch.isfinite(energy))
        t.sum_accept_probs = (-delta).exp().clamp(max=1.0)
        t.num_proposals = 1
        return t

    def _build_tree(self, leaf, step_size, depth, energy_current):
        if depth == 0:
            return self._base_tree(leaf, step_size, energy_current)
        half = self._build_tree(leaf, step_size, depth - 1, energy_current)
        if half.turning or half.diverging:
            return half
        start = half.right if step_size > 0 else half.left
        other = self._build_tree(start, step_size, depth - 1, energy_current)
        t = _Tree()
        t.weight = torch.logaddexp(half.weight, other.weight)
        t.sum_accept_probs = half.sum_accept_probs + other.sum_accept_probs
        t.num_proposals = half.num_proposals + other.num_proposals
        t.rho = {k: half.rho[k] + other.rho[k] for k in half.rho}
        src = other if bool(torch.rand(()) < (other.weight - t.weight).exp()) else half
        t.z_proposal, t.pe_proposal, t.aux_proposal, t.energy_proposal = (
            src.z_proposal, src.pe_proposal, src.aux_proposal, src.energy_proposal,
        )  # fmt: skip
        if step_size > 0:
            t.left, t.right = half.left, other.right
        else:
            t.left, t.right = other.left, half.right
        t.turning = other.turning or _is_turning(t.left, t.right, t.rho)
        t.diverging = other.diverging
        t.nonfinite = other.nonfinite
        return t

    def sample(self, params):
        z, potential_energy, aux = self._ensure_cache(params)
        if len(z) == 0:
            self._t += 1
            self._mean_accept_prob = 1.0
            if self._t > self._warmup_steps:
                self._accept_cnt += 1
            return z
        r = self._initial_momentum(z, aux)
        ke, vel, cov = self._velocity(z, r, aux)
        energy_current = potential_energy + ke
        left = right = _Leaf(z, r, aux, vel, cov)
        rho = dict(cov)
        tree_weight = energy_current.new_zeros(())
        sum_accept_probs = 0.0
        num_proposals = 0
        accepted = False
        diverging = False
        nonfinite = False
        energy = energy_current
        tree_depth = 0
        eps = self.step_size
        with optional(pyro.validation_enabled(False), self._t < self._warmup_steps):
            while tree_depth < self._max_tree_depth:
                forward = bool(torch.rand(()) < 0.5)
                if forward:
                    new = self._build_tree(right, eps, tree_depth, energy_current)
                    right = new.right
                else:
                    new = self._build_tree(left, -eps, tree_depth, energy_current)
                    left = new.left
                sum_accept_probs = sum_accept_probs + new.sum_accept_probs
                num_proposals += new.num_proposals
                tree_depth += 1
                if new.diverging:
                    diverging = True
                    nonfinite = new.nonfinite
                    break
                if new.turning:
                    break
                # biased progressive sampling (Betancourt 2017, A.3.2)
                if bool(torch.rand(()) < (new.weight - tree_weight).exp()):
                    accepted = True
                    z, aux, energy = new.z_proposal, new.aux_proposal, new.energy_proposal
                    self._cache(z, new.pe_proposal, aux)
                rho = {k: rho[k] + new.rho[k] for k in rho}
                if _is_turning(left, right, rho):
                    break
                tree_weight = torch.logaddexp(tree_weight, new.weight)
        if diverging and self._t >= self._warmup_steps:
            self._divergences.append(self._t - self._warmup_steps)
        accept_prob = sum_accept_probs / num_proposals
        self._record(diverging, energy, accept_prob, num_proposals, tree_depth, nonfinite=nonfinite)
        self._finish(z, accept_prob, accepted, aux)
        return z.copy()
