r"""Step-size and mass adaptation as functions of explicit state.

* :func:`dual_averaging_init` / :func:`dual_averaging_update`: Nesterov dual
  averaging of ``log ε`` toward a target acceptance (Hoffman & Gelman 2014,
  "The No-U-Turn sampler", section 3.2, eqs. 5-6).
* :func:`find_reasonable_step_size`: their heuristic for the first step
  (algorithm 4), within bounds.
* :func:`manifold_variance` and :func:`regularized_variance`: the scalar
  (isotropic) inverse mass of a manifold site from draws of a warm-up window
  (Stan's windowed, regularised variance estimate; Carpenter et al. 2017).

The kernels (:mod:`dlmppl.inference.kernels`) use them for their manifold sites and
Pyro's ``WarmupAdapter`` for their Euclidean ones; the many-chain sampler of
:mod:`dlmppl.models.intrinsic` uses them for everything.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = [
    "DualAveragingState",
    "dual_averaging_init",
    "dual_averaging_update",
    "find_reasonable_step_size",
    "intrinsic_dim",
    "manifold_variance",
    "regularized_variance",
]


class DualAveragingState(NamedTuple):
    """``log_step_size`` (the iterate), ``log_step_size_avg`` (its weighted average,
    the step used after warm-up), ``hbar`` (averaged acceptance error), ``t``
    (iterations) and ``prox_center`` ``μ = log(10 ε₀)``.  Floats or 0-dim tensors."""

    log_step_size: float
    log_step_size_avg: float
    hbar: float
    t: int
    prox_center: float


def dual_averaging_init(step_size) -> DualAveragingState:
    """State before the first update, from the initial step ``ε₀``."""
    return DualAveragingState(math.log(float(step_size)), 0.0, 0.0, 0, math.log(10.0 * float(step_size)))


def dual_averaging_update(state, accept_prob, target_accept_prob=0.8, t0=10.0, kappa=0.75, gamma=0.05):
    """One update of dual averaging with acceptance statistic ``accept_prob``
    (Hoffman & Gelman 2014, eq. 6; Pyro's/Stan's defaults ``t0``, ``κ``, ``γ``)."""
    t = state.t + 1
    hbar = (1.0 - 1.0 / (t + t0)) * state.hbar + (target_accept_prob - accept_prob) / (t + t0)
    log_eps = state.prox_center - math.sqrt(t) / gamma * hbar
    w = t ** (-kappa)
    avg = w * log_eps + (1.0 - w) * state.log_step_size_avg
    return DualAveragingState(log_eps, avg, hbar, t, state.prox_center)


def find_reasonable_step_size(integrator, z, aux, potential_energy, step_size, *, min_step_size, max_step_size,
                              threshold=math.log(0.8), numerical_error=None):
    """Hoffman & Gelman's (2014, alg. 4) search of a first step size, within
    ``[min_step_size, max_step_size]``: double (or halve) ``ε`` while one step's
    acceptance ``exp(-ΔH)`` stays above (below) ``exp(threshold)``.  A step whose
    potential raises a numerical error (``numerical_error(e)``, ``RuntimeError``,
    ``ValueError``) or is NaN counts as too large."""
    step_size = min(step_size, max_step_size)

    def delta(eps):
        r = integrator.momentum(z, aux)
        e0 = potential_energy + integrator.kinetic(z, r, aux)[0]
        try:
            z1, r1, aux1, pe1 = integrator.step(z, r, aux, eps)
            e1 = pe1 + integrator.kinetic(z1, r1, aux1)[0]
        except Exception as e:
            if (numerical_error is not None and numerical_error(e)) or isinstance(e, (RuntimeError, ValueError)):
                return math.inf
            raise
        d = float((e1 - e0).detach())
        return math.inf if math.isnan(d) else d

    direction = 1 if threshold < -delta(step_size) else -1
    scale = 2.0**direction
    new_direction = direction
    while new_direction == direction and min_step_size < step_size < max_step_size:
        step_size = scale * step_size
        new_direction = 1 if threshold < -delta(step_size) else -1
    return min(max(step_size, min_step_size), max_step_size)


def intrinsic_dim(geometry, shape) -> int:
    """Total intrinsic dimension of a site of ``shape`` (batch + ambient event shape) on ``geometry``."""
    shape = tuple(shape)
    event = shape[len(shape) - geometry.ndim :]
    batch = shape[: len(shape) - geometry.ndim]
    return max(geometry.intrinsic_dim(event) * math.prod(batch), 1)


def regularized_variance(var, n):
    """Stan's regularised window estimate ``n/(n+5) var + 1e-3 · 5/(n+5)`` from ``n`` draws."""
    return (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))


def manifold_variance(geometry, draws, intrinsic_dim):
    r"""Per-dimension variance of draws on a manifold (scalar mass adaptation).

    ``draws``: tensor of shape ``(n,) + site shape`` (ambient coordinates).  Returns
    :meth:`Geometry.spread <dlmppl.geometry.Geometry.spread>` ``/ intrinsic_dim``, a
    0-dim tensor: about the mean squared geodesic distance to the mean over the
    dimension (Stan's windowed variance estimate, Carpenter et al. 2017, applied
    isotropically on the manifold).
    """
    return geometry.spread(draws) / intrinsic_dim
