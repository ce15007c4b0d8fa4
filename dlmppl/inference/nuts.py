r"""Riemannian No-U-Turn sampler for :class:`pyro.infer.MCMC`.

A thin shell over :func:`dlmppl.inference.tree.nuts_transition` (multinomial
NUTS, Betancourt 2017, with the generalised U-turn criterion on manifolds of
Betancourt 2013; see :mod:`dlmppl.inference.tree`) on the integrator that
:class:`~dlmppl.inference.hmc.RiemannianHMC` chooses (the geodesic leapfrog of
Byrne & Girolami 2013, or SoftAbs RMHMC).
"""

from __future__ import annotations

import pyro
from pyro.infer.autoguide import init_to_uniform
from pyro.util import optional

from .hmc import RiemannianHMC, _numerical_error
from .tree import nuts_transition

__all__ = ["RiemannianNUTS"]


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

    def _transition(self, z, potential_energy, aux):
        with optional(pyro.validation_enabled(False), self._t < self._warmup_steps):
            info = nuts_transition(
                self._hooks, z, potential_energy, aux, self.step_size, self._max_tree_depth,
                self._max_sliced_energy, _numerical_error,
            )  # fmt: skip
        if info.accepted:
            self._cache(info.z, info.potential_energy, info.aux)
        if info.diverging and self._t >= self._warmup_steps:
            self._divergences.append(self._t - self._warmup_steps)
        self._record(info.diverging, info.energy, info.accept_prob, info.num_proposals, info.tree_depth,
                     nonfinite=info.nonfinite)
        self._finish(info.z, info.accept_prob, info.accepted, info.aux)
        return info.z.copy()
