r"""Vectorised chains: ``K`` chains of RiemannianNUTS / RiemannianHMC as one batched state.

NumPyro's ``chain_method="vectorized"`` for dlmppl's kernels: every site of the
state carries a leading chain dimension (``(K, *site_shape)``), one model run
gives the ``K`` potentials (and, through their sum, the ``K`` independent
gradients), and every chain keeps its own momentum, NUTS tree, step size and
masses.  On a CPU with few cores this is where 4-8 chains become cheap: the
Python and Pyro overhead of one leapfrog step is paid once for all chains.

* :func:`batched_potential`: the potential of each chain, ``(K,)``, from ONE run
  of the Pyro model under an outer ``pyro.plate("_chains", K,
  dim=-(max_plate_nesting + 1))`` with every latent site conditioned on its
  ``(K, ...)`` value (what Pyro's ``vectorize_particles`` does for ELBOs), the
  ``log_prob`` of each site added up as the model runs (no trace is built):
  Euclidean constrained sites through ``biject_to`` of their support plus the
  log-abs-det-Jacobian, manifold sites directly (as the kernels do).  The model
  must broadcast over that leading plate (plates for its batch dims, no
  ``x @ mu``-style products that do not broadcast over batch dims); the MCMC
  runner checks the batched potential against the kernel's own scalar potential
  at the ``K`` initial points and raises a ``ValueError`` naming the chains'
  plate when they differ (no silent fall-back to a loop over chains).
* :func:`batched_integrator`: the geodesic leapfrog (Byrne & Girolami 2013,
  alg. 1) of :mod:`dlmppl.inference.integrators` on a batched state, with a step
  size per chain ``(K,)``, a diagonal Euclidean inverse mass per chain
  (``(K, *site_shape)``) and a scalar inverse mass per chain and manifold site
  (``(K,)``); kinetic energies, velocities and covectors per chain.
* :func:`batched_nuts_transition`: multinomial NUTS (Betancourt 2017, appendix A;
  the tree of :mod:`dlmppl.inference.tree`) for every chain at once: a
  direction per chain at each doubling, a tree per chain kept by masks (a chain
  whose subtree turned or diverged is frozen while the others go on, so all
  chains do the same number of leapfrog steps, the largest), biased progressive
  sampling between subtrees and uniform sampling within them, per-chain
  acceptance statistics.  A subtree is kept in the order it was built (its first
  and last leaf, not left and right: the U-turn criterion is symmetric in its two
  ends), so that a merge selects one leaf per chain instead of three.  Host synchronisation: one per doubling ("is any chain
  still active"); on a CPU state also one per inner subtree (free there), which
  stops a doubling as soon as every chain has stopped, as the scalar tree does.
* :func:`batched_hmc_transition`: HMC with ``trajectory_length / ε_k`` steps per
  chain (the longest sets the loop; the others are frozen once done).
* :class:`BatchedAdaptation`: the warm-up of :class:`~dlmppl.inference.adaptation.WindowedAdaptation`
  per chain: dual averaging of ``(K,)`` step sizes (Hoffman & Gelman 2014),
  Stan's windows (:func:`~dlmppl.inference.adaptation.adaptation_schedule`),
  a diagonal Euclidean mass per chain (Welford) and a scalar mass per chain and
  manifold site (:func:`~dlmppl.inference.adaptation.manifold_variance`).
* :class:`MCMC`: ``pyro.infer.MCMC`` with ``chain_method="vectorized"``.

Exactness: the chains do not interact (a chain's potential, gradient, momentum,
tree and accept/reject only read its own slice), so each chain is the Markov
chain of the scalar kernel with the same settings; the masking only decides
which computed leaves a chain keeps.  Limits: ``full_mass`` (dense blocks) and
``metric="softabs"`` are not vectorised (``ValueError``); a numerical
exception of the model (e.g. a failed Cholesky factorisation) in one step counts
as a divergence of every chain still building its tree at that step.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.infer.mcmc.api import MCMC as _PyroMCMC
from pyro.infer.mcmc.api import AbstractMCMC
from pyro.infer.mcmc.logger import ProgressBar
from pyro.infer.mcmc.util import diagnostics as _pyro_diagnostics
from pyro.infer.mcmc.util import select_samples
from pyro.poutine.util import is_validation_enabled
from pyro.util import optional, warn_if_inf, warn_if_nan
from torch.distributions.transforms import identity_transform

from ..geometry.base import Geometry
from .adaptation import (
    DualAveragingState,
    adaptation_schedule,
    dual_averaging_update,
    intrinsic_dim,
    manifold_variance,
    regularized_variance,
    welford_covariance,
    welford_init,
    welford_update,
)
from .integrators import Integrator, geometry_of, potential_grad
from .potential import _LogJointMessenger
from .tree import _nan_to_inf

__all__ = [
    "BatchedAdaptation",
    "BatchedNUTSInfo",
    "MCMC",
    "batched_find_step_size",
    "batched_hmc_transition",
    "batched_integrator",
    "batched_nuts_transition",
    "batched_potential",
]


# ----------------------------------------------------------------------------- helpers


def _rsum(x):
    """Sum over every dim but the first (the chain dim): ``(K,)``."""
    if x.dim() == 2:  # already flat: no reshape
        return x.sum(-1)
    if x.dim() == 1:
        return x
    return x.reshape(x.shape[0], -1).sum(-1)


def _bc(t, x):
    """A per-chain ``(K,)`` tensor shaped to broadcast against ``x`` ``(K, ...)``."""
    return t.reshape(t.shape + (1,) * (x.dim() - t.dim()))


def _selector(mask):
    """``select(new, old)``: per chain ``new`` where ``mask`` (``(K,)`` bool), else ``old``, for
    tensors or dicts of tensors; the mask's broadcast view is made once per number of dims,
    and a pair of tensors met again (a leaf's covectors that are its momenta) is selected once."""
    views = {}
    done = {}

    def select(new, old):
        if isinstance(new, dict):
            return {k: select(v, old[k]) for k, v in new.items()}
        key = (id(new), id(old))
        out = done.get(key)
        if out is not None:
            return out[2]
        nd = new.dim()
        m = views.get(nd)
        if m is None:
            m = views[nd] = mask.reshape(mask.shape + (1,) * (nd - mask.dim()))
        out = torch.where(m, new, old)
        done[key] = (new, old, out)  # new and old kept alive: their ids stay theirs
        return out

    return select


def _where(mask, new, old):
    """Per chain: ``new`` where ``mask`` (``(K,)`` bool), else ``old``; tensors or dicts of tensors."""
    return _selector(mask)(new, old)


# ----------------------------------------------------------------------------- potential


def _site_log_prob_per_chain(lp, chain_dim, num_chains):
    """``(K,)`` sum of a site's (scaled, masked) ``log_prob`` over every dim but the chain dim."""
    if not torch.is_tensor(lp) or lp.dim() < -chain_dim:
        # not broadcast over the chains' plate (a constant): the same for every chain
        return torch.as_tensor(lp).sum().expand(num_chains)
    if lp.dim() == 1 and lp.shape[0] == num_chains:
        return lp  # already (K,): no movedim, reshape and sum of one term (fewer autograd nodes, same value)
    if lp.dim() != -chain_dim:
        lp = lp.movedim(chain_dim, 0)
    if lp.shape[0] != num_chains:
        lp = lp.expand((num_chains,) + lp.shape[1:])
    return _rsum(lp)


class _BatchedLogJoint(_LogJointMessenger):
    """The lean potential's messenger (:class:`~dlmppl.inference.potential._LogJointMessenger`:
    condition the latent sites on ``values``, add up each sample site's scaled and masked
    ``log_prob`` as the model runs) with one term per chain, ``(K,)``: the sum that
    ``poutine.trace(poutine.condition(model, values))`` followed by ``Trace.compute_log_prob``
    gives (same operations, same order), without building a trace."""

    def __init__(self, values, chain_dim, num_chains, log_joint):
        super().__init__(values, log_joint)
        self.chain_dim = chain_dim
        self.num_chains = num_chains

    def _term(self, log_p, name):
        if is_validation_enabled():
            warn_if_nan(log_p.sum(), f"log_prob_sum at site '{name}'")
            warn_if_inf(log_p.sum(), f"log_prob_sum at site '{name}'", allow_neginf=True)
        return _site_log_prob_per_chain(log_p, self.chain_dim, self.num_chains)


def batched_potential(model, model_args, model_kwargs, transforms, site_shapes, num_chains, max_plate_nesting):
    r"""The potential energy of ``num_chains`` chains, one model run per call.

    Args:
        model: the Pyro model (a callable).
        model_args, model_kwargs: its arguments.
        transforms: ``{site: T}`` with ``T`` from the site's support to unconstrained
            space (``biject_to(support).inv``; the identity for manifold sites), as the
            kernels' ``transforms``.
        site_shapes: ``{site: (batch_shape, event_shape)}`` of each latent site of one chain.
        num_chains: ``K``.
        max_plate_nesting: the model's plate nesting; the chains' plate is
            ``pyro.plate("_chains", K, dim=-(max_plate_nesting + 1))``.

    Returns ``potential_fn``: dict site → ``(K, *site_shape)`` (unconstrained for
    Euclidean sites, points for manifold sites) → ``(K,)``,
    ``U_k = -Σ_sites log p(x_k) - Σ log|det J_{T⁻¹}(u_k)|``: the kernels' scalar
    potential of each chain (Pyro's ``initialize_model``), with every site's
    ``log_prob`` summed over all dims but the chains' (Pyro's ``vectorize_particles``).
    A site whose batch shape has more dims than ``max_plate_nesting`` raises a
    ``ValueError`` naming it.
    """
    K = int(num_chains)
    for name, (batch, _) in site_shapes.items():
        if len(batch) > max_plate_nesting:
            raise ValueError(
                f"vectorized chains: site {name!r} has batch shape {tuple(batch)}, more dims than "
                f"max_plate_nesting={max_plate_nesting}: declare its batch dims with pyro.plate (or .to_event) "
                "and pass max_plate_nesting to the kernel"
            )

    return _BatchedPotential(model, model_args, model_kwargs, transforms, site_shapes, K, max_plate_nesting)


class _BatchedPotential:
    """The ``potential_fn`` of :func:`batched_potential` (a class: it keeps the chains' plate)."""

    def __init__(self, model, model_args, model_kwargs, transforms, site_shapes, num_chains, max_plate_nesting):
        self.model, self.model_args, self.model_kwargs = model, model_args, model_kwargs
        self.transforms, self.site_shapes = transforms, site_shapes
        self.num_chains, self.max_plate_nesting = num_chains, max_plate_nesting
        self.chain_dim = -(max_plate_nesting + 1)
        self._plate = None  # the chains' plate, made once (its _Subsample site is not part of the potential)

    def __call__(self, z):
        return -self.log_joint(z)

    def log_joint(self, z):
        transforms, site_shapes = self.transforms, self.site_shapes
        K, max_plate_nesting, chain_dim = self.num_chains, self.max_plate_nesting, self.chain_dim
        log_det = None
        values = {}
        for name, u in z.items():
            t = transforms.get(name, identity_transform)
            if t is identity_transform:
                x = u
            else:
                x = t.inv(u)
                ld = _rsum(t.inv.log_abs_det_jacobian(u, x).reshape(K, -1))
                log_det = ld if log_det is None else log_det + ld
            batch, event = site_shapes[name]
            shape = (K,) + (1,) * (max_plate_nesting - len(batch)) + tuple(batch) + tuple(event)
            values[name] = x if x.shape == shape else x.reshape(shape)
        if self._plate is None:
            self._plate = pyro.plate("_chains", K, dim=chain_dim)
        handler = _BatchedLogJoint(values, chain_dim, K, log_det)
        with self._plate, handler:
            self.model(*self.model_args, **self.model_kwargs)
        log_joint = handler.log_joint
        if log_joint is None:  # no sample site at all
            log_joint = next(iter(z.values())).new_zeros((K,))
        return log_joint


# ----------------------------------------------------------------------------- integrator


class BatchedMasses(NamedTuple):
    """Per-chain inverse masses: ``euclidean`` ``{site: (K, *site_shape)}`` (diagonal)
    and ``manifold`` ``{site: (K,)}`` (scalar ``1/m``).  Dicts, updated in place."""

    euclidean: dict
    manifold: dict


def _kinetic_fn(g: Geometry):
    """``(x, p) -> ½ g_x(p, p)`` per chain ``(K,)`` for the points ``x`` ``(K, ...)``.

    A geometry that keeps the base :meth:`Geometry.kinetic` (``½ Σ inner``) gets it from
    its batched ``inner``; one with its own (Lorentz, SPD: accurate forms) is called per chain.
    """
    if type(g).kinetic is Geometry.kinetic:
        return lambda x, p: 0.5 * _rsum(g.inner(x, p))
    return lambda x, p: torch.stack([g.kinetic(x[k], p[k]) for k in range(x.shape[0])])


def batched_integrator(potential_fn, geometries, masses: BatchedMasses, numerical_error=None) -> Integrator:
    r"""The geodesic leapfrog (Byrne & Girolami 2013, alg. 1) on a batched state.

    As :func:`~dlmppl.inference.integrators.geodesic_leapfrog` with ``batch_ndim=1``,
    for states ``{site: (K, *site_shape)}``, with per-chain step sizes and masses:

    * ``step(z, r, aux, step_size)``: one step, ``step_size`` ``(K,)`` (negative entries
      integrate that chain backwards); a manifold site moves along its exact geodesic
      flow for time ``ε_k / m_k``, a Euclidean one along ``ε_k M_k⁻¹ r``;
      ``potential_energy`` ``(K,)`` is ``+inf`` where it was NaN or ±inf;
    * ``momentum(z, aux)``: ``N(0, M_k)`` per chain (Euclidean), ``√m_k`` times a
      standard normal tangent vector (manifold);
    * ``kinetic(z, r, aux) -> ((K,), velocities, covectors)``.

    ``potential_fn``: dict → ``(K,)`` (:func:`batched_potential`); ``geometries``:
    ``{manifold site: Geometry}``; ``masses``: a :class:`BatchedMasses`, read at each call.
    """
    kinetic_of = {name: _kinetic_fn(g) for name, g in geometries.items()}

    def init(z):
        return potential_grad(potential_fn, z, numerical_error)

    def _half_kick(z, r, grads, half):
        halves = {}  # the (K,) half step shaped for each number of dims, made once
        for name in r:
            g = geometries.get(name)
            grad = grads[name] if g is None else g.rgrad(z[name], grads[name])
            h = halves.get(grad.dim())
            if h is None:
                h = halves[grad.dim()] = _bc(half, grad)
            r[name] = r[name] - h * grad

    def step(z, r, aux, step_size, num_steps=1):
        z, r = dict(z), dict(r)
        grads = aux
        pe = None
        bad = None
        for _ in range(num_steps):
            if grads is None:
                grads, pe = potential_grad(potential_fn, z, numerical_error)
            _half_kick(z, r, grads, 0.5 * step_size)
            for name in z:
                g = geometries.get(name)
                if g is None:
                    z[name] = z[name] + _bc(step_size, z[name]) * masses.euclidean[name] * r[name]
                else:
                    z[name], r[name] = g.flow(z[name], r[name], _bc(step_size * masses.manifold[name], z[name]))
            grads, pe = potential_grad(potential_fn, z, numerical_error)
            if pe.dim() == 0:
                pe = pe.expand(step_size.shape[0])
            if num_steps > 1:
                nonfinite = ~torch.isfinite(pe)
                bad = nonfinite if bad is None else bad | nonfinite
            _half_kick(z, r, grads, 0.5 * step_size)
        if bad is None:  # one step: +inf where NaN or ±inf, in one op
            return z, r, grads, torch.nan_to_num(pe, nan=math.inf, posinf=math.inf, neginf=math.inf)
        pe = torch.where(bad, torch.full_like(pe, float("inf")), pe)
        return z, r, grads, pe

    def momentum(z, aux):
        r = {}
        for name, x in z.items():
            g = geometries.get(name)
            if g is None:
                r[name] = torch.randn_like(x) / masses.euclidean[name].sqrt()
            else:
                r[name] = g.momentum(x) / _bc(masses.manifold[name].sqrt(), x)
        return r

    def kinetic(z, r, aux):
        ke = None
        vel, cov = {}, {}
        for name, x in z.items():
            g = geometries.get(name)
            if g is None:
                vel[name] = masses.euclidean[name] * r[name]
                cov[name] = r[name]
                term = 0.5 * _rsum(r[name] * vel[name])
            else:
                inv = masses.manifold[name]
                vel[name] = r[name] * _bc(inv, x)
                cov[name] = g.covector(x, r[name])
                term = kinetic_of[name](x, r[name]) * inv
            ke = term if ke is None else ke + term
        return ke, vel, cov

    return Integrator(init, momentum, kinetic, step)


# ----------------------------------------------------------------------------- NUTS


class _Leaf(NamedTuple):
    z: dict
    r: dict
    aux: dict
    vel: dict
    cov: dict


class _Tree(NamedTuple):
    """A subtree in the order it was built: ``first`` the leaf next to its starting point,
    ``last`` the leaf at its far end (for a forward subtree: left and right)."""

    first: _Leaf
    last: _Leaf
    z_proposal: dict
    pe_proposal: torch.Tensor
    aux_proposal: dict
    energy_proposal: torch.Tensor
    rho: dict
    weight: torch.Tensor
    stop: torch.Tensor  # turned or diverged
    diverging: torch.Tensor
    nonfinite: torch.Tensor
    sum_accept_probs: torch.Tensor
    num_proposals: torch.Tensor


class BatchedNUTSInfo(NamedTuple):
    """Outcome of :func:`batched_nuts_transition`, per chain: the new state ``(z,
    potential_energy (K,), aux)``, ``energy`` ``(K,)``, ``accepted``, ``diverging``,
    ``nonfinite`` ``(K,)`` bool, ``accept_prob`` ``(K,)`` (mean Metropolis acceptance
    over the tree), ``num_proposals`` and ``tree_depth`` ``(K,)`` long."""

    z: dict
    potential_energy: torch.Tensor
    aux: dict
    energy: torch.Tensor
    accepted: torch.Tensor
    diverging: torch.Tensor
    nonfinite: torch.Tensor
    accept_prob: torch.Tensor
    num_proposals: torch.Tensor
    tree_depth: torch.Tensor


def _leaf_where(mask, a: _Leaf, b: _Leaf) -> _Leaf:
    """Per chain: leaf ``a`` where ``mask``, else ``b`` (one :func:`_selector` for all its fields)."""
    select = _selector(mask)
    return _Leaf(*(select(x, y) for x, y in zip(a, b, strict=True)))


def batched_is_turning(left: _Leaf, right: _Leaf, rho: dict) -> torch.Tensor:
    """The generalised U-turn criterion of :func:`dlmppl.inference.tree.is_turning`, per chain ``(K,)``."""
    la = ra = 0.0
    for name, value in rho.items():
        d = value - 0.5 * (left.cov[name] + right.cov[name])
        la = la + _rsum(left.vel[name] * d)
        ra = ra + _rsum(right.vel[name] * d)
    return (la <= 0) | (ra <= 0)


def _base_tree(integ, leaf, eps, energy_current, active, max_delta_energy, numerical_error):
    # an inactive chain steps by 0, which keeps its leaf (r - 0·∇U, flow for time 0) at no extra cost:
    # cheaper than selecting the leaf afterwards, and its state never drifts into NaN
    eps = torch.where(active, eps, 0.0)
    try:
        z, r, aux, pe = integ.step(leaf.z, leaf.r, leaf.aux, eps)
        ke, vel, cov = integ.kinetic(z, r, aux)
        energy = _nan_to_inf(pe + ke)
    except Exception as e:
        if (numerical_error is not None and numerical_error(e)) or isinstance(e, RuntimeError):
            z, r, aux, vel, cov = leaf
            pe = energy = torch.full_like(energy_current, float("inf"))
        else:
            raise
    new = _Leaf(z, r, aux, vel, cov)
    delta = energy - energy_current
    diverging = active & (delta > max_delta_energy)
    # an inactive chain's leaf weighs exp(-inf) = 0: its acceptance statistic is exp(-inf) = 0 too
    weight = torch.where(active, -delta, -math.inf)
    return _Tree(
        first=new, last=new, z_proposal=new.z, pe_proposal=pe, aux_proposal=new.aux, energy_proposal=energy,
        rho=new.cov, weight=weight, stop=diverging, diverging=diverging,
        nonfinite=diverging & torch.isinf(energy),  # energy is never NaN (NaN -> +inf above)
        sum_accept_probs=weight.exp().clamp(max=1.0), num_proposals=active.long(),
    )  # fmt: skip


def _build_tree(integ, leaf, eps, depth, energy_current, active, max_delta_energy, numerical_error, sync):
    """A subtree of ``2**depth`` steps per chain (``eps`` ``(K,)`` signed), the chains of
    ``active`` only; a chain stops (keeps its first half) when that half turns or diverges."""
    if depth == 0:
        return _base_tree(integ, leaf, eps, energy_current, active, max_delta_energy, numerical_error)
    half = _build_tree(integ, leaf, eps, depth - 1, energy_current, active, max_delta_energy, numerical_error, sync)
    go = active & ~half.stop
    if sync and not bool(go.any()):
        return half
    # the second half goes on from the first half's far end, in the same direction
    other = _build_tree(integ, half.last, eps, depth - 1, energy_current, go, max_delta_energy, numerical_error, sync)
    weight = torch.logaddexp(half.weight, other.weight)
    # uniform (weight-proportional) sampling inside the subtree (Betancourt 2017, A.3.1)
    take = go & (torch.rand_like(weight) < (other.weight - weight).exp())
    go_select, take_select = _selector(go), _selector(take)
    last = _leaf_where(go, other.last, half.last)
    rho = {k: half.rho[k] + other.rho[k] for k in half.rho}
    # the criterion is symmetric in its two ends: (first, last) is (left, right) or (right, left)
    stop = other.stop | batched_is_turning(half.first, last, rho)
    return _Tree(
        first=half.first, last=last,
        z_proposal=take_select(other.z_proposal, half.z_proposal),
        pe_proposal=torch.where(take, other.pe_proposal, half.pe_proposal),
        aux_proposal=take_select(other.aux_proposal, half.aux_proposal),
        energy_proposal=torch.where(take, other.energy_proposal, half.energy_proposal),
        rho=go_select(rho, half.rho), weight=torch.where(go, weight, half.weight),
        stop=torch.where(go, stop, half.stop), diverging=torch.where(go, other.diverging, half.diverging),
        nonfinite=torch.where(go, other.nonfinite, half.nonfinite),
        sum_accept_probs=half.sum_accept_probs + other.sum_accept_probs,
        num_proposals=half.num_proposals + other.num_proposals,
    )  # fmt: skip


def batched_nuts_transition(integrator, z, potential_energy, aux, step_size, max_tree_depth=10,
                            max_delta_energy=1000.0, numerical_error=None, sync_subtrees=None) -> BatchedNUTSInfo:
    """One NUTS transition of every chain of a batched state (:func:`dlmppl.inference.tree.nuts_transition`
    per chain): fresh momenta, a random direction per chain and doubling, trees doubled
    until each chain turns, diverges or reaches ``max_tree_depth`` (chains that stopped are
    frozen, the others go on), biased progressive sampling between subtrees (Betancourt
    2017, A.3.2).

    Args:
        integrator: a batched :class:`~dlmppl.inference.integrators.Integrator` (:func:`batched_integrator`).
        z, potential_energy, aux: the current state (``(K, ...)`` sites, ``(K,)``, gradients).
        step_size: ``(K,)``.
        sync_subtrees: stop a subtree as soon as no chain is building it (one host
            synchronisation per inner subtree); default: on a CPU state only.

    Returns a :class:`BatchedNUTSInfo`.  Host synchronisations: one per doubling.
    """
    if sync_subtrees is None:
        sync_subtrees = potential_energy.device.type == "cpu"
    r = integrator.momentum(z, aux)
    ke, vel, cov = integrator.kinetic(z, r, aux)
    energy_current = potential_energy + ke
    K = energy_current.shape[0]
    left = right = _Leaf(z, r, aux, vel, cov)
    rho = dict(cov)
    tree_weight = torch.zeros_like(energy_current)
    sum_accept = torch.zeros_like(energy_current)
    num_proposals = torch.zeros(K, dtype=torch.long, device=energy_current.device)
    tree_depth = torch.zeros_like(num_proposals)
    false = torch.zeros(K, dtype=torch.bool, device=energy_current.device)
    accepted, diverging, nonfinite = false, false, false
    active = ~false
    energy = energy_current
    depth = 0
    while depth < max_tree_depth and bool(active.any()):
        forward = torch.rand_like(energy_current) < 0.5
        eps = torch.where(forward, step_size, -step_size)
        start = _leaf_where(forward, right, left)
        new = _build_tree(integrator, start, eps, depth, energy_current, active, max_delta_energy, numerical_error,
                          sync_subtrees)  # fmt: skip
        # the new subtree's far end extends the trajectory on its side
        right = _leaf_where(active & forward, new.last, right)
        left = _leaf_where(active & ~forward, new.last, left)
        sum_accept = sum_accept + new.sum_accept_probs
        num_proposals = num_proposals + new.num_proposals
        tree_depth = tree_depth + active.long()
        depth += 1
        div = active & new.diverging
        diverging = diverging | div
        nonfinite = nonfinite | (div & new.nonfinite)
        go = active & ~new.stop
        take = go & (torch.rand_like(energy_current) < (new.weight - tree_weight).exp())
        accepted = accepted | take
        z = _where(take, new.z_proposal, z)
        potential_energy = torch.where(take, new.pe_proposal, potential_energy)
        aux = _where(take, new.aux_proposal, aux)
        energy = torch.where(take, new.energy_proposal, energy)
        rho = _where(go, {k: rho[k] + new.rho[k] for k in rho}, rho)
        tree_weight = torch.where(go, torch.logaddexp(tree_weight, new.weight), tree_weight)
        active = go & ~batched_is_turning(left, right, rho)
    accept_prob = sum_accept / num_proposals.clamp_min(1).to(sum_accept.dtype)
    return BatchedNUTSInfo(z, potential_energy, aux, energy, accepted, diverging, nonfinite, accept_prob,
                           num_proposals, tree_depth)  # fmt: skip


def batched_hmc_transition(integrator, z, potential_energy, aux, step_size, num_steps, max_delta_energy=1000.0,
                           numerical_error=None):
    """One HMC transition per chain: ``num_steps[k]`` (``(K,)`` long) leapfrog steps of size
    ``step_size[k]``, then a Metropolis test per chain (Neal 2011).  The loop runs the
    largest ``num_steps``; a chain that is done is frozen.  Returns a :class:`BatchedNUTSInfo`
    (``tree_depth`` zeros)."""
    r = integrator.momentum(z, aux)
    ke, _, _ = integrator.kinetic(z, r, aux)
    energy_current = potential_energy + ke
    z1, r1, aux1, pe1 = z, r, aux, potential_energy
    bad = torch.zeros_like(energy_current, dtype=torch.bool)
    n_max = int(num_steps.max())
    for i in range(n_max):
        on = num_steps > i
        try:
            z2, r2, aux2, pe2 = integrator.step(z1, r1, aux1, step_size)
        except Exception as e:
            if (numerical_error is not None and numerical_error(e)) or isinstance(e, RuntimeError):
                bad = bad | on
                break
            raise
        z1, r1, aux1 = _where(on, z2, z1), _where(on, r2, r1), _where(on, aux2, aux1)
        pe1 = torch.where(on, pe2, pe1)
        bad = bad | (on & ~torch.isfinite(pe2))
    energy_new = pe1 + integrator.kinetic(z1, r1, aux1)[0]
    energy_new = torch.where(bad, torch.full_like(energy_new, float("inf")), _nan_to_inf(energy_new))
    delta = energy_new - energy_current
    diverging = delta > max_delta_energy
    accept_prob = (-delta).exp().clamp(max=1.0)
    take = torch.rand_like(accept_prob) < accept_prob
    return BatchedNUTSInfo(
        _where(take, z1, z), torch.where(take, pe1, potential_energy), _where(take, aux1, aux),
        torch.where(take, energy_new, energy_current), take, diverging, diverging & ~torch.isfinite(energy_new),
        accept_prob, num_steps.clone(), torch.zeros_like(num_steps),
    )  # fmt: skip


# ----------------------------------------------------------------------------- adaptation


def batched_find_step_size(integrator, z, aux, potential_energy, step_size, *, min_step_size, max_step_size,
                           threshold=math.log(0.8), numerical_error=None, max_iter=100):
    """Hoffman & Gelman's (2014, alg. 4) first step size per chain, within
    ``[min_step_size, max_step_size]`` (``max_step_size`` ``(K,)``): each chain doubles (or
    halves) its ``ε`` while one step's acceptance stays above (below) ``exp(threshold)``
    (:func:`~dlmppl.inference.adaptation.find_reasonable_step_size` per chain)."""
    eps = torch.minimum(step_size, max_step_size)

    def accept_above(eps):
        r = integrator.momentum(z, aux)
        e0 = potential_energy + integrator.kinetic(z, r, aux)[0]
        try:
            z1, r1, aux1, pe1 = integrator.step(z, r, aux, eps)
            d = _nan_to_inf(pe1 + integrator.kinetic(z1, r1, aux1)[0] - e0)
        except Exception as e:
            if (numerical_error is not None and numerical_error(e)) or isinstance(e, (RuntimeError, ValueError)):
                d = torch.full_like(e0, math.inf)
            else:
                raise
        return threshold < -d

    direction = accept_above(eps)
    done = torch.zeros_like(direction)
    for _ in range(max_iter):
        going = ~done & (eps > min_step_size) & (eps < max_step_size)
        if not bool(going.any()):
            break
        eps = torch.where(going, torch.where(direction, 2.0 * eps, 0.5 * eps), eps)
        done = done | (going & (accept_above(eps) != direction))
    return torch.maximum(torch.minimum(eps, max_step_size), torch.full_like(eps, min_step_size))


class BatchedAdaptation:
    r"""The warm-up of :class:`~dlmppl.inference.adaptation.WindowedAdaptation`, per chain.

    Dual averaging (Hoffman & Gelman 2014, eq. 6; Pyro's/Stan's ``t0 = 10``, ``κ = 0.75``,
    ``γ = 0.05``) of a ``(K,)`` log step size; in Stan's slow windows
    (:func:`~dlmppl.inference.adaptation.adaptation_schedule`) each chain's diagonal
    Euclidean inverse mass (Welford, Stan's regularisation) and scalar inverse mass of
    each manifold site (:func:`~dlmppl.inference.adaptation.manifold_variance`, regularised),
    after which each chain's step-size search restarts at its new masses.

    :param step_size: ``(K,)`` initial step sizes.
    :param masses: the :class:`BatchedMasses` the integrator reads (updated in place).
    :param geometries: ``{manifold site: (Geometry, intrinsic dimension)}``.
    :param find_step_size: ``z -> (K,)`` first step sizes at the current masses.
    """

    def __init__(self, step_size, masses: BatchedMasses, warmup_steps, *, adapt_step_size=True, adapt_mass_matrix=True,
                 target_accept_prob=0.8, geometries=None, find_step_size=None):  # fmt: skip
        self.step_size = step_size
        self.masses = masses
        self.warmup_steps = warmup_steps
        self.adapt_step_size = adapt_step_size
        self.adapt_mass_matrix = adapt_mass_matrix
        self.target_accept_prob = target_accept_prob
        self._geometries = dict(geometries or {})
        self._find_step_size = find_step_size
        disabled = not (adapt_step_size or adapt_mass_matrix)
        self.schedule = [] if disabled or warmup_steps <= 0 else adaptation_schedule(warmup_steps)
        self.window = 0
        self._reset_windows()
        if adapt_step_size and self.schedule:
            self.reset_step_size(None)

    def _reset_windows(self):
        self._welford = {name: welford_init() for name in self.masses.euclidean}
        self._draws = {name: [] for name in self._geometries}

    def reset_step_size(self, z):
        if self._find_step_size is not None:
            self.step_size = self._find_step_size(z)
        log_eps = self.step_size.log()
        # the scalar kernel's dual-averaging state with a (K,) tensor per field: one per chain
        zeros = torch.zeros_like(log_eps)
        self._da = DualAveragingState(log_eps, zeros, zeros, 0, math.log(10.0) + log_eps)

    def step(self, t, z, accept_prob):
        """After warm-up iteration ``t`` (1-based), at ``z`` with statistics ``accept_prob``
        ``(K,)``.  Returns whether the masses changed."""
        if t >= self.warmup_steps or not self.schedule:
            return False
        window = self.schedule[self.window]
        last = len(self.schedule) - 1
        slow = self.adapt_mass_matrix and 0 < self.window < last
        if slow:
            for name in self._geometries:
                self._draws[name].append(z[name].detach().clone())
            for name, state in self._welford.items():
                self._welford[name] = welford_update(state, z[name].detach())
        if self.adapt_step_size:
            self._da = dual_averaging_update(self._da, accept_prob.to(self.step_size.dtype), self.target_accept_prob)
            self.step_size = self._da.log_step_size.exp()
        if t != window.end:
            return False
        self.window += 1
        if self.window - 1 == last:
            if self.adapt_step_size:
                self.step_size = self._da.log_step_size_avg.exp()
            return False
        if not slow:
            return False
        for name, (g, dim) in self._geometries.items():
            draws = torch.stack(self._draws[name])  # (n, K, ...)
            if draws.shape[0] < 2:
                continue
            inv = self.masses.manifold[name].clone()
            for k in range(draws.shape[1]):
                value = float(regularized_variance(manifold_variance(g, draws[:, k], dim), draws.shape[0]))
                if math.isfinite(value) and value > 0:
                    inv[k] = value
            self.masses.manifold[name] = inv
        for name, state in self._welford.items():
            if state.n >= 2:
                self.masses.euclidean[name] = welford_covariance(state)
        self._reset_windows()
        if self.adapt_step_size:
            self.reset_step_size(z)
        return True


# ----------------------------------------------------------------------------- MCMC


def _stack_chains(dicts):
    return {k: torch.stack([d[k] for d in dicts]) for k in dicts[0]}


class MCMC(_PyroMCMC):
    r"""``pyro.infer.MCMC`` with ``chain_method="vectorized"`` for dlmppl's kernels.

    Same arguments as :class:`pyro.infer.MCMC`, plus

    :param str chain_method: ``"parallel"`` (default): Pyro's behaviour (one process
        per chain when the CPUs allow, else one chain after the other);
        ``"vectorized"``: the ``num_chains`` chains of a
        :class:`~dlmppl.inference.RiemannianNUTS` or :class:`~dlmppl.inference.RiemannianHMC`
        kernel run as ONE batched state in this process (as NumPyro's
        ``chain_method="vectorized"``; see :mod:`dlmppl.inference.vectorized`): one model
        run per leapfrog step for all chains, each chain with its own tree, step size
        and masses.  The kernel's settings are read from it (``step_size``,
        ``adapt_step_size``, ``adapt_mass_matrix``, ``target_accept_prob``,
        ``max_tree_depth``, ``trajectory_length``, ``init_strategy``,
        ``max_plate_nesting``, ``min_stepsize``/``max_stepsize``); ``full_mass`` and
        ``metric="softabs"`` are not vectorised (``ValueError``).  The model must broadcast
        over a leading chains' plate (write batch dims with ``pyro.plate``): checked at
        the initial points, a ``ValueError`` otherwise.  With a ``potential_fn`` kernel,
        ``potential_fn`` must map ``{site: (K, ...)}`` to ``(K,)`` and ``initial_params``
        (leading dim ``num_chains``) is required.

    The result reads as Pyro's: ``get_samples(group_by_chain=...)`` (constrained values,
    ``(num_chains, num_samples, *site_shape)`` grouped), ``diagnostics()``, ``summary()``,
    and :func:`dlmppl.diagnostics.to_inference_data` with each chain's sample stats
    (``diverging``, ``energy``, ``step_size``, ``acceptance_rate``, ``n_steps``,
    ``tree_depth`` for NUTS) from ``_diagnostics[chain]`` as the kernel's
    :class:`~dlmppl.inference.kernels.KernelDiagnostics`.  ``hook_fn(kernel, samples,
    stage, i)`` receives ``samples`` with the leading chain dim.  Device and dtype follow
    the model's initial values.

    Reference: Phan, Pradhan & Jankowiak (2019), "Composable effects for flexible and
    accelerated probabilistic programming in NumPyro" (vectorised chains); Hoffman &
    Gelman (2014); Betancourt (2017).
    """

    def __init__(self, kernel, num_samples, warmup_steps=None, initial_params=None, num_chains=1, hook_fn=None,
                 mp_context=None, disable_progbar=False, disable_validation=True, transforms=None, save_params=None,
                 chain_method="parallel"):  # fmt: skip
        if chain_method not in ("parallel", "vectorized"):
            raise ValueError(f"chain_method must be 'parallel' or 'vectorized', got {chain_method!r}")
        self.chain_method = chain_method
        if chain_method != "vectorized":
            super().__init__(kernel, num_samples, warmup_steps, initial_params, num_chains, hook_fn, mp_context,
                             disable_progbar, disable_validation, transforms, save_params)  # fmt: skip
            return
        from .kernels import RiemannianHMC

        if not isinstance(kernel, RiemannianHMC):
            raise ValueError(f"chain_method='vectorized' needs a RiemannianNUTS or RiemannianHMC kernel, got {type(kernel).__name__}")
        if int(num_chains) < 1:
            raise ValueError(f"num_chains must be >= 1, got {num_chains}")
        if kernel.metric != "euclidean":
            raise ValueError("chain_method='vectorized': metric='softabs' is not vectorised")
        if kernel._adapter.dense_mass is not False:
            raise ValueError("chain_method='vectorized': full_mass (dense mass blocks) is not vectorised; use full_mass=False")
        AbstractMCMC.__init__(self, kernel, int(num_chains), transforms)
        self.warmup_steps = num_samples if warmup_steps is None else warmup_steps
        self.num_samples = num_samples
        self.disable_validation = disable_validation
        self.disable_progbar = disable_progbar
        self.hook_fn = hook_fn
        self.save_params = save_params
        self._samples = None
        self._args = self._kwargs = None
        self._diagnostics = [None] * self.num_chains
        if initial_params is not None:
            for k, v in initial_params.items():
                if v.shape[:1] != (self.num_chains,):
                    raise ValueError(
                        f"initial_params: site {k!r} must have leading dim num_chains={self.num_chains}, got shape {tuple(v.shape)}"
                    )
        self._initial_params = initial_params
        self.sampler = None

    # ------------------------------------------------------------------ setup
    def _setup_vectorized(self, args, kwargs):
        kernel = self.kernel
        K = self.num_chains
        inits = []
        if kernel.model is not None:
            for k in range(K):
                kernel._initial_params = None if self._initial_params is None else {
                    n: v[k] for n, v in self._initial_params.items()}  # fmt: skip
                kernel._initialize_model_properties(args, kwargs)
                inits.append({n: v.detach() for n, v in kernel.initial_params.items()})
            proto = kernel._prototype_trace
            discrete = [n for n, site in proto.nodes.items() if site["type"] == "sample" and not site["is_observed"]
                        and getattr(site["fn"], "has_enumerate_support", False)]  # fmt: skip
            if discrete:
                raise ValueError(f"chain_method='vectorized': discrete latent sites {discrete} are not supported (enumeration)")
            site_shapes = {}
            for name in inits[0]:
                node = proto.nodes[name]
                fn = node["fn"]
                # the constrained shape (a transform may change it: stick-breaking)
                site_shapes[name] = (tuple(fn.batch_shape), tuple(fn.event_shape))
            potential = batched_potential(kernel.model, args, kwargs, kernel.transforms, site_shapes, K,
                                          kernel._max_plate_nesting)  # fmt: skip
            scalar_potential = kernel.potential_fn
            manifolds = dict(kernel._manifolds)
        else:
            if self._initial_params is None:
                raise ValueError("chain_method='vectorized' with a potential_fn needs initial_params (leading dim num_chains)")
            inits = [{n: v[k].detach() for n, v in self._initial_params.items()} for k in range(K)]
            potential = kernel.potential_fn
            scalar_potential = None
            manifolds = dict(kernel._manifolds)
            kernel.transforms = kernel.transforms or {}
        geometries = {name: geometry_of(M) for name, M in manifolds.items()}
        from .kernels import _check_initial_point, _numerical_error

        z = _stack_chains(inits)
        for name, g in geometries.items():
            for k in range(K):
                _check_initial_point(name, manifolds[name], z[name][k], "initial_params")
            z[name] = g.projx(z[name])
        like = next(iter(z.values()))
        dtype, device = like.dtype, like.device
        try:
            with torch.enable_grad():
                pe = potential({k: v.detach() for k, v in z.items()}).detach()
        except (RuntimeError, IndexError) as e:
            raise ValueError(
                "chain_method='vectorized': the model does not broadcast over a leading chains' plate "
                f"({type(e).__name__}: {e}); write its batch dims with pyro.plate (and max_plate_nesting), and "
                "products of latent values so that they broadcast over leading dims (e.g. (mu @ obs.T).sum(-1), not obs @ mu)"
            ) from e
        if pe.shape != (K,):
            raise ValueError(
                f"chain_method='vectorized': the batched potential has shape {tuple(pe.shape)}, expected ({K},): "
                "the model must broadcast over a leading chains' plate"
            )
        if scalar_potential is not None:
            ref = torch.stack([scalar_potential({n: v[k] for n, v in z.items()}).detach() for k in range(K)]).to(pe)
            tol = 1e-6 if dtype == torch.float64 else 1e-3
            if not torch.allclose(pe, ref, rtol=tol, atol=tol * max(1.0, float(ref.abs().max()))):
                raise ValueError(
                    "chain_method='vectorized': the model does not broadcast over a leading chains' plate "
                    f"(batched potentials {pe.tolist()} != per-chain potentials {ref.tolist()}): write its batch "
                    "dims with pyro.plate (and max_plate_nesting), and products of latent values so that they "
                    "broadcast over leading dims (e.g. (mu @ obs.T).sum(-1), not obs @ mu)"
                )
        masses = BatchedMasses(
            {name: torch.ones_like(v) for name, v in z.items() if name not in geometries},
            {name: torch.ones(K, dtype=dtype, device=device) for name in geometries},
        )
        integ = batched_integrator(potential, geometries, masses, _numerical_error)
        self._vz = z
        self._vgeometries = geometries
        self._vmasses = masses
        self._vintegrator = integ
        self._vnumerical_error = _numerical_error
        self._vmanifolds = manifolds
        if kernel.model is not None:
            self.transforms = kernel.transforms
        return z

    def _step_cap(self, z):
        kernel = self.kernel
        K = self.num_chains
        like = next(iter(z.values()))
        cap = torch.full((K,), float(kernel._max_stepsize), dtype=like.dtype, device=like.device)
        for name, g in self._vgeometries.items():
            inv = self._vmasses.manifold[name]
            cap = torch.minimum(cap, torch.tensor([g.max_step(z[name][k], float(inv[k])) for k in range(K)]).to(cap))
        return cap

    # -------------------------------------------------------------------- run
    @poutine.block
    def run(self, *args, **kwargs):
        if self.chain_method != "vectorized":
            return super().run(*args, **kwargs)
        self._args, self._kwargs = args, kwargs
        with optional(pyro.validation_enabled(not self.disable_validation), self.disable_validation is not None):
            args = [a.detach() if torch.is_tensor(a) else a for a in args]
            self._run_vectorized(args, kwargs)

    def _run_vectorized(self, args, kwargs):
        from .kernels import KernelDiagnostics, RiemannianNUTS, SampleStats

        kernel = self.kernel
        K = self.num_chains
        z = self._setup_vectorized(args, kwargs)
        integ = self._vintegrator
        nerr = self._vnumerical_error
        like = next(iter(z.values()))
        with torch.enable_grad():
            aux, pe = integ.init(z)
        cap = self._step_cap(z)
        eps0 = torch.full((K,), float(kernel.step_size), dtype=like.dtype, device=like.device)

        def find_step_size(zz):
            if zz is None:
                zz = z_state[0]
            else:  # after a slow window: the cap at the new masses first (as the kernel does)
                self._vcap = self._step_cap(zz)
            aux_, pe_ = state[1], state[0]
            with torch.enable_grad():
                return batched_find_step_size(
                    integ, zz, aux_, pe_, self._adapt.step_size if hasattr(self, "_adapt") else eps0,
                    min_step_size=kernel._min_stepsize, max_step_size=self._vcap, threshold=kernel._direction_threshold,
                    numerical_error=nerr,
                )  # fmt: skip

        z_state = [z]
        state = [pe, aux]
        self._vcap = cap
        ad = kernel._adapter
        geoms = {name: (g, intrinsic_dim(g, z[name].shape[1:])) for name, g in self._vgeometries.items()}
        if hasattr(self, "_adapt"):
            del self._adapt
        with optional(pyro.validation_enabled(False), self.warmup_steps > 0):
            self._adapt = BatchedAdaptation(
                torch.minimum(eps0, cap), self._vmasses, self.warmup_steps, adapt_step_size=ad.adapt_step_size,
                adapt_mass_matrix=ad.adapt_mass_matrix, target_accept_prob=ad.target_accept_prob, geometries=geoms,
                find_step_size=find_step_size,
            )  # fmt: skip
        nuts = isinstance(kernel, RiemannianNUTS)
        stats = {k: [] for k in ("diverging", "energy", "step_size", "acceptance_rate", "n_steps")}
        if nuts:
            stats["tree_depth"] = []
        # per-chain counts and stats stay on the state's device until the end (no per-iteration transfer)
        accept_cnt = torch.zeros(K, dtype=torch.long, device=like.device)
        warm_div = torch.zeros_like(accept_cnt)
        warm_nonfinite = torch.zeros_like(accept_cnt)
        initial_eps = self._adapt.step_size.clone()
        min_eps = initial_eps.clone()
        samples = []
        total = self.warmup_steps + self.num_samples
        progbar = ProgressBar(self.warmup_steps, self.num_samples, disable=self.disable_progbar)
        try:
            for t in range(total):
                warmup = t < self.warmup_steps
                eps = self._adapt.step_size
                with optional(pyro.validation_enabled(False), warmup), torch.enable_grad():
                    if nuts:
                        info = batched_nuts_transition(integ, z, pe, aux, eps, kernel._max_tree_depth,
                                                       kernel._max_sliced_energy, nerr)  # fmt: skip
                    else:
                        n_steps = (kernel.trajectory_length / eps).floor().clamp(1, kernel._max_num_steps).long()
                        info = batched_hmc_transition(integ, z, pe, aux, eps, n_steps, kernel._max_sliced_energy, nerr)
                z, pe, aux = info.z, info.potential_energy, info.aux
                z_state[0], state[0], state[1] = z, pe, aux
                if warmup:
                    warm_div += info.diverging.long()
                    warm_nonfinite += info.nonfinite.long()
                    if self._adapt.step(t + 1, z, info.accept_prob):
                        self._vcap = self._step_cap(z)
                    if ad.adapt_step_size:
                        self._adapt.step_size = torch.minimum(
                            self._adapt.step_size.clamp_min(kernel._min_stepsize), self._vcap)
                    min_eps = torch.minimum(min_eps, self._adapt.step_size)
                else:
                    accept_cnt += info.accepted.long()
                    stats["diverging"].append(info.diverging)
                    stats["energy"].append(info.energy.detach())
                    stats["step_size"].append(eps)
                    stats["acceptance_rate"].append(info.accept_prob)
                    stats["n_steps"].append(info.num_proposals)
                    if nuts:
                        stats["tree_depth"].append(info.tree_depth)
                    samples.append({k: v.detach().clone() for k, v in z.items()})
                if self.hook_fn is not None:
                    self.hook_fn(kernel, self._constrain(z), "Warmup" if warmup else "Sample", t if warmup else t - self.warmup_steps)
                if not progbar.disable:
                    progbar.set_description("Warmup" if warmup else "Sample", refresh=False)
                    progbar.set_postfix({"step size": f"{float(eps.mean()):.2e}",
                                         "acc. prob": f"{float(info.accept_prob.mean()):.3f}"}, refresh=False)  # fmt: skip
                    progbar.update()
        finally:
            progbar.close()
        n = self.num_samples
        if samples:
            stacked = {k: torch.stack([s[k] for s in samples], 1) for k in samples[0]}  # (K, n, ...)
        else:
            stacked = {k: v.new_zeros((K, 0) + tuple(v.shape[1:])) for k, v in z.items()}
        out = self._constrain(stacked)
        if self.save_params is not None:
            out = {k: v for k, v in out.items() if k in self.save_params}
        self._samples = out
        per = {k: (torch.stack(v, 1).cpu() if v else torch.zeros(K, 0)) for k, v in stats.items()}
        accept_cnt, warm_div, warm_nonfinite = accept_cnt.cpu(), warm_div.cpu(), warm_nonfinite.cpu()
        diags = []
        for k in range(K):
            divs = [int(i) for i in torch.nonzero(per["diverging"][k]).reshape(-1)] if n else []
            s = SampleStats()
            s["diverging"] = per["diverging"][k].bool()
            s["energy"] = per["energy"][k].double()
            s["step_size"] = per["step_size"][k].double()
            s["acceptance_rate"] = per["acceptance_rate"][k].double()
            s["n_steps"] = per["n_steps"][k].long()
            if nuts:
                s["tree_depth"] = per["tree_depth"][k].long()
            nf = [int(i) for i in torch.nonzero(torch.isinf(per["energy"][k]) & per["diverging"][k].bool()).reshape(-1)] if n else []
            d = KernelDiagnostics({
                "divergences": divs,
                "nonfinite": nf,
                "acceptance rate": float(accept_cnt[k]) / max(n, 1),
                "manifold_sites": {name: type(M).__name__ for name, M in self._vmanifolds.items()},
                "manifold_inverse_mass": {name: float(m[k]) for name, m in self._vmasses.manifold.items()},
                "warmup": {
                    "iterations": self.warmup_steps, "divergences": int(warm_div[k]),
                    "nonfinite": int(warm_nonfinite[k]), "truncated": 0,
                    "initial_step_size": float(initial_eps[k]), "min_step_size": float(min_eps[k]),
                    "step_size": float(self._adapt.step_size[k]), "step_size_cap": float(self._vcap[k]),
                },
                "warnings": [],
            })  # fmt: skip
            d.sample_stats = s
            diags.append(d)
        total_div = sum(len(d["divergences"]) for d in diags)
        if total_div:
            from .kernels import DivergenceWarning

            msg = (f"vectorized {type(kernel).__name__}: {total_div} of {K * n} transitions after warm-up diverged; "
                   "divergences bias the draws: raise target_accept_prob, or reparametrise the model")  # fmt: skip
            for d in diags:
                d["warnings"].append(msg)
            warnings.warn(msg, DivergenceWarning, stacklevel=3)
        self._diagnostics = diags

    def _constrain(self, z):
        """Constrained values of the (batched) unconstrained state ``z``."""
        out = OrderedDict()
        transforms = self.transforms or {}
        for k, v in z.items():
            t = transforms.get(k)
            out[k] = v if t is None or t is identity_transform else t.inv(v)
        return out

    def get_samples(self, num_samples=None, group_by_chain=False):
        return select_samples(self._samples, num_samples, group_by_chain)

    def diagnostics(self):
        if self.chain_method != "vectorized":
            return super().diagnostics()
        diag = _pyro_diagnostics(self._samples)
        for name in self._diagnostics[0]:
            diag[name] = {f"chain {i}": self._diagnostics[i][name] for i in range(self.num_chains)}
        return diag
