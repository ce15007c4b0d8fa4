r"""The No-U-Turn tree as functions of explicit state.

Multinomial NUTS (Betancourt 2017, "A conceptual introduction to Hamiltonian
Monte Carlo", appendix A) on any :class:`~dlmppl.inference.integrators.Integrator`,
with biased progressive sampling between subtrees and uniform
(weight-proportional) sampling inside them, as in Stan and Pyro; the tree is
doubled (Hoffman & Gelman 2014, algorithm 3) until it turns, diverges or
reaches ``max_tree_depth``.

**U-turn criterion on a manifold.**  Momenta at different points live in
different tangent spaces, so their sum needs a common space.  We use the
generalised criterion of Betancourt (2013, "Generalizing the No-U-Turn sampler
to Riemannian manifolds") written in *ambient* coordinates: every leaf carries
its momentum as an ambient covector ``p = G(x) v`` (sphere and Stiefel: ``v``
itself; Lorentz: ``v`` with its time component negated; Poincaré ball /
κ-stereographic: ``λ_x² v``; SPD: ``X⁻¹VX⁻¹``; Euclidean sites: Pyro's
momentum) and its velocity ``v`` (the integrator's ``kinetic``).  With ``ρ``
the sum of the covectors over a (sub)trajectory, it is turning when

    ⟨ρ − (p₋ + p₊)/2, v₋⟩ ≤ 0   or   ⟨ρ − (p₋ + p₊)/2, v₊⟩ ≤ 0,

the pairing being the plain sum of products.  For embedded manifolds
(sphere, Stiefel, as in Byrne & Girolami 2013) ``ε ρ`` is the ambient chord
between the ends, so on a great circle the trajectory stops after about half a
turn.  The criterion is a deterministic symmetric function of the trajectory, so
detailed balance holds whatever the choice; the choice only sets efficiency.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Leaf", "NUTSInfo", "Tree", "build_tree", "is_turning", "nuts_transition"]


class Leaf(NamedTuple):
    """One state of a trajectory: position ``z``, momentum ``r``, integrator ``aux``,
    velocities ``vel`` and momentum covectors ``cov`` (dicts site → tensor)."""

    z: dict
    r: dict
    aux: object
    vel: dict
    cov: dict


class Tree(NamedTuple):
    """A (sub)tree: its end leaves, its proposal ``(z, potential, aux, energy)``,
    ``rho`` (sum of covectors), log ``weight`` (``logsumexp(-ΔH)``) and flags."""

    left: Leaf
    right: Leaf
    z_proposal: dict
    pe_proposal: object
    aux_proposal: object
    energy_proposal: torch.Tensor
    rho: dict
    weight: torch.Tensor
    turning: bool
    diverging: bool
    nonfinite: bool
    sum_accept_probs: torch.Tensor
    num_proposals: int


class NUTSInfo(NamedTuple):
    """Outcome of :func:`nuts_transition`: the new state ``(z, potential_energy, aux)``,
    its ``energy``, whether a new state was ``accepted``, ``diverging``/``nonfinite``,
    ``accept_prob`` (mean Metropolis acceptance over the tree, the dual-averaging
    statistic), ``num_proposals`` (leapfrog steps) and ``tree_depth``."""

    z: dict
    potential_energy: object
    aux: object
    energy: torch.Tensor
    accepted: bool
    diverging: bool
    nonfinite: bool
    accept_prob: torch.Tensor
    num_proposals: int
    tree_depth: int


def _nan_to_inf(x):
    # NaN -> +inf, ±inf kept (one op)
    return torch.nan_to_num(x, nan=float("inf"), posinf=float("inf"), neginf=float("-inf"))


def _lt(a, b) -> bool:
    """``bool(a < b)`` for 0-dim tensors (or a number ``b``): on the CPU two float reads
    (no tensor op; the same comparison of the same doubles), elsewhere one comparison on
    the device and one host synchronisation."""
    if a.is_cpu:
        return float(a) < float(b)
    return bool(a < b)


def is_turning(left: Leaf, right: Leaf, rho: dict) -> bool:
    """The generalised U-turn criterion (module docstring) between two leaves."""
    left_angle = right_angle = None  # (not 0.0 + ...: one op less per site, the same sums)
    for name, value in rho.items():
        d = value - 0.5 * (left.cov[name] + right.cov[name])
        la, ra = (left.vel[name] * d).sum(), (right.vel[name] * d).sum()
        left_angle = la if left_angle is None else left_angle + la
        right_angle = ra if right_angle is None else right_angle + ra
    if left_angle.is_cpu:  # two float reads, no tensor op
        return float(left_angle) <= 0 or float(right_angle) <= 0
    # one host synchronisation for both ends
    return bool((left_angle <= 0) | (right_angle <= 0))


def _base_tree(integrator, leaf, step_size, energy_current, max_delta_energy, numerical_error):
    try:
        z, r, aux, pe = integrator.step(leaf.z, leaf.r, leaf.aux, step_size)
        ke, vel, cov = integrator.kinetic(z, r, aux)
        energy = _nan_to_inf(pe + ke)
    except Exception as e:
        if (numerical_error is not None and numerical_error(e)) or isinstance(e, RuntimeError):
            z, r, aux, pe, vel, cov = leaf.z, leaf.r, leaf.aux, None, leaf.vel, leaf.cov
            energy = energy_current.new_tensor(float("inf"))
        else:
            raise
    new = Leaf(z, r, aux, vel, cov)
    weight = energy_current - energy  # -ΔH
    diverging = _lt(weight, -max_delta_energy)
    return Tree(
        left=new, right=new, z_proposal=z, pe_proposal=pe, aux_proposal=aux, energy_proposal=energy, rho=cov,
        weight=weight, turning=False, diverging=diverging,
        # a NaN/inf potential is a divergence (energy +inf); told apart for diagnostics (syncs only then)
        nonfinite=diverging and not bool(torch.isfinite(energy)),
        sum_accept_probs=weight.exp().clamp(max=1.0), num_proposals=1,
    )  # fmt: skip


def build_tree(integrator, leaf, step_size, depth, energy_current, max_delta_energy=1000.0, numerical_error=None):
    """A subtree of ``2**depth`` leapfrog steps of size ``step_size`` (negative: backwards)
    from ``leaf``; it stops early (returning the first half) when a half turns or diverges.
    Within the subtree the proposal is drawn proportionally to the weights
    (Betancourt 2017, A.3.1)."""
    if depth == 0:
        return _base_tree(integrator, leaf, step_size, energy_current, max_delta_energy, numerical_error)
    half = build_tree(integrator, leaf, step_size, depth - 1, energy_current, max_delta_energy, numerical_error)
    if half.turning or half.diverging:
        return half
    start = half.right if step_size > 0 else half.left
    other = build_tree(integrator, start, step_size, depth - 1, energy_current, max_delta_energy, numerical_error)
    weight = torch.logaddexp(half.weight, other.weight)
    rho = {k: half.rho[k] + other.rho[k] for k in half.rho}
    src = other if _lt(torch.rand((), device=weight.device), (other.weight - weight).exp()) else half
    left, right = (half.left, other.right) if step_size > 0 else (other.left, half.right)
    return Tree(
        left=left, right=right, z_proposal=src.z_proposal, pe_proposal=src.pe_proposal,
        aux_proposal=src.aux_proposal, energy_proposal=src.energy_proposal, rho=rho, weight=weight,
        turning=other.turning or is_turning(left, right, rho), diverging=other.diverging, nonfinite=other.nonfinite,
        sum_accept_probs=half.sum_accept_probs + other.sum_accept_probs,
        num_proposals=half.num_proposals + other.num_proposals,
    )  # fmt: skip


def nuts_transition(integrator, z, potential_energy, aux, step_size, max_tree_depth=10, max_delta_energy=1000.0,
                    numerical_error=None) -> NUTSInfo:
    """One NUTS transition from ``(z, potential_energy, aux)`` with step ``ε``: a fresh
    momentum, trees doubled in a random direction until a U-turn, a divergence
    (``ΔH > max_delta_energy``) or ``max_tree_depth``, with biased progressive
    sampling between subtrees (Betancourt 2017, A.3.2)."""
    r = integrator.momentum(z, aux)
    ke, vel, cov = integrator.kinetic(z, r, aux)
    energy_current = potential_energy + ke
    left = right = Leaf(z, r, aux, vel, cov)
    rho = dict(cov)
    tree_weight = energy_current.new_zeros(())
    sum_accept_probs = 0.0
    num_proposals = 0
    accepted = diverging = nonfinite = False
    energy = energy_current
    tree_depth = 0
    while tree_depth < max_tree_depth:
        if _lt(torch.rand((), device=tree_weight.device), 0.5):
            new = build_tree(integrator, right, step_size, tree_depth, energy_current, max_delta_energy, numerical_error)
            right = new.right
        else:
            new = build_tree(integrator, left, -step_size, tree_depth, energy_current, max_delta_energy, numerical_error)
            left = new.left
        sum_accept_probs = sum_accept_probs + new.sum_accept_probs
        num_proposals += new.num_proposals
        tree_depth += 1
        if new.diverging:
            diverging, nonfinite = True, new.nonfinite
            break
        if new.turning:
            break
        if _lt(torch.rand((), device=tree_weight.device), (new.weight - tree_weight).exp()):
            accepted = True
            z, potential_energy, aux, energy = new.z_proposal, new.pe_proposal, new.aux_proposal, new.energy_proposal
        rho = {k: rho[k] + new.rho[k] for k in rho}
        if is_turning(left, right, rho):
            break
        tree_weight = torch.logaddexp(tree_weight, new.weight)
    return NUTSInfo(z, potential_energy, aux, energy, accepted, diverging, nonfinite,
                    sum_accept_probs / num_proposals, num_proposals, tree_depth)
