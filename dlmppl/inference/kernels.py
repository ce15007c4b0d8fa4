r"""Riemannian Hamiltonian Monte Carlo kernel for :class:`pyro.infer.MCMC`.

Sites whose support is a :class:`dlmppl.constraints.ManifoldConstraint` are
integrated on their manifold with the geodesic leapfrog of
:mod:`dlmppl.inference.integrators` (Byrne & Girolami 2013); every other
continuous site is mapped to unconstrained space with ``biject_to`` (with the
log-abs-det-Jacobian) and integrated as in Pyro's ``HMC``, with step-size dual
averaging (Hoffman & Gelman 2014) and diagonal or dense mass-matrix adaptation
(Stan's windows, as Pyro's ``full_mass``) for those Euclidean coordinates.  With
``metric="softabs"`` the Euclidean sites use Riemannian-manifold HMC
(Girolami & Calderhead 2011) with Betancourt's (2013) SoftAbs metric instead
(:mod:`dlmppl.inference.softabs`).

The kernel is a thin shell (the only code of the package that touches Pyro's
private names): the integrator (an :class:`~dlmppl.inference.integrators.Integrator`,
chosen once in ``setup``), the trajectory, the NUTS tree
(:mod:`dlmppl.inference.tree`) and the warm-up (:mod:`dlmppl.inference.adaptation`:
dual averaging, Stan's windows, the Euclidean mass blocks, the manifold masses)
are functions of explicit state.

Each manifold site ``s`` has a scalar (isotropic) mass ``m_s``: momentum
``p ~ N(0, m_s g)`` in its tangent space, kinetic energy ``½ g(p, p) / m_s``
and velocity ``p / m_s``.  With ``adapt_mass_matrix=True`` (default) ``1/m_s``
is adapted in the same warm-up windows as the Euclidean mass matrix (Stan's
windowed schedule) to a regularised estimate of the per-dimension variance of
the draws on the manifold, and is fixed during sampling; otherwise ``m_s = 1``.

:meth:`diagnostics` returns Pyro's keys (``"divergences"``, ``"acceptance
rate"``) and short summaries of ours, so that ``MCMC.diagnostics()`` reads as
Pyro's; the per-draw statistics (arviz names) travel with it as its attribute
``sample_stats`` (a :class:`SampleStats`), not as a key, and become the
``sample_stats`` group of :func:`dlmppl.diagnostics.to_inference_data`.

**Robustness.**  A potential (or gradient) that is NaN or ±inf anywhere along a
trajectory is a divergence: the proposal is rejected, the HMC trajectory stops
at the next check (every few leapfrog steps) instead of running on through NaN,
and for step-size adaptation such a trajectory scores the mean Metropolis
acceptance of its checkpoints, the non-finite one counting 0 (what NUTS does
with its leaves), so that a region where the log density is NaN, which no step
size avoids, does not drive the step size to zero.  The number of leapfrog steps
of an HMC iteration is capped (``max_num_steps``); the adapted step size is
kept in ``[min_stepsize, max_stepsize]`` and, on manifolds whose geodesics close
up (sphere, Stiefel, κ > 0), below :meth:`Geometry.max_step
<dlmppl.geometry.Geometry.max_step>`.  Problems are reported
as Stan reports them, with warnings of category :class:`SamplerWarning`
(:class:`DivergenceWarning` when divergences dominate warm-up or occur after
it, :class:`StepSizeWarning` when the step size collapses or the trajectory is
truncated) as soon as they are seen, and in ``diagnostics()["warmup"]``.
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import (
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_uniform,
    init_to_value,
)
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.enum import config_enumerate
from pyro.infer.mcmc.hmc import HMC
from pyro.infer.mcmc.util import _guess_max_plate_nesting, initialize_model
from pyro.ops.integrator import _EXCEPTION_HANDLERS
from pyro.util import optional
from torch.distributions import biject_to
from torch.distributions.transforms import identity_transform

from ..constraints import ManifoldConstraint, violation
from .adaptation import (
    WindowedAdaptation,
    find_reasonable_step_size,
    intrinsic_dim,
    manifold_variance,
    mass_momentum,
    mass_velocity,
)
from .integrators import geodesic_leapfrog, geometry_of, potential_grad, trajectory
from .potential import lean_applies, lean_potential_fn
from .softabs import softabs_integrator
from .tree import _nan_to_inf, nuts_transition

__all__ = [
    "DivergenceWarning",
    "KernelDiagnostics",
    "RiemannianHMC",
    "RiemannianNUTS",
    "SampleStats",
    "SamplerWarning",
    "StepSizeWarning",
    "manifold_variance",
]


class SamplerWarning(RuntimeWarning):
    """A problem of an MCMC run seen by the dlmppl kernels (filter with this category)."""


class DivergenceWarning(SamplerWarning):
    """Divergent transitions dominate warm-up, or occur after it (Stan's warning)."""


class StepSizeWarning(SamplerWarning):
    """The adapted step size collapsed, or HMC trajectories were truncated at ``max_num_steps``."""


# leapfrog steps between two checks of an HMC trajectory for a non-finite potential
# (one host synchronisation per check)
_CHECK_EVERY = 4
# warn when the adapted step size falls below this fraction of the first one...
_COLLAPSE_RATIO = 1e-3
# ...after at least this many warm-up iterations; divergences "dominate" warm-up
# when more than half of at least _DOMINATE_AFTER warm-up transitions diverged
_COLLAPSE_AFTER = 10
_DOMINATE_AFTER = 50


def _on_manifold_tol(dtype) -> float:
    # tolerance of user-given initial points (drift from typing or float32 round-off)
    return 1e3 * torch.finfo(dtype).eps ** 0.5


def _check_initial_point(name, manifold, value, source):
    """Raise a ``ValueError`` naming the site unless ``value`` is a finite point on ``manifold``."""
    if not torch.is_tensor(value) or not torch.is_floating_point(value):
        raise ValueError(f"{source}: the initial value of site {name!r} must be a floating-point tensor, got {value!r}")
    bad = violation(manifold, value)
    tol = _on_manifold_tol(value.dtype)
    if not bool((bad <= tol).all()):
        worst = float(bad.max())
        what = "is not finite" if not bool(torch.isfinite(value).all()) else f"is off the manifold by {worst:.3g} > {tol:.3g}"
        raise ValueError(
            f"{source}: the initial value of site {name!r} {what}; it must lie on its manifold "
            f"{type(manifold).__name__} (got {value.tolist() if value.numel() <= 12 else tuple(value.shape)})"
        )


def _user_init_value(strategy, name):
    """``(True, value)`` when ``strategy`` is Pyro's ``init_to_value`` with a value for ``name``."""
    if isinstance(strategy, functools.partial) and strategy.func is init_to_value:
        values = strategy.keywords.get("values") or {}
        if name in values:
            return True, values[name]
    return False, None


def _is_ambient_strategy(strategy) -> bool:
    """Whether ``strategy`` is one of Pyro's strategies that work in an unconstrained space."""
    fn = strategy.func if isinstance(strategy, functools.partial) else strategy
    return fn in (init_to_uniform, init_to_median, init_to_mean, init_to_feasible)


class _ManifoldSafeInit:
    """Wrap a Pyro init strategy: manifold sites fall back to a prior draw.

    Pyro's strategies (``init_to_uniform``, ``init_to_median``, ``init_to_mean``,
    ``init_to_feasible``) work in an unconstrained space that manifold supports
    lack (their ambient numbers projected onto the Poincaré ball land at the
    boundary, hyperbolic radius ~35), so manifold sites start at a prior draw
    instead; another strategy's value is kept if it lies on the manifold, and
    replaced by a prior draw otherwise.  A value the user gave
    with ``init_to_value`` is kept, and must be a finite point of the right
    shape on the manifold: otherwise a ``ValueError`` names the site (as
    ``MCMC(initial_params=...)`` does).
    """

    def __init__(self, init_strategy):
        self.init_strategy = init_strategy

    def __call__(self, site):
        support = site["fn"].support
        if isinstance(support, ManifoldConstraint):
            given, value = _user_init_value(self.init_strategy, site["name"])
            if given:
                fn = site["fn"]
                shape = fn.batch_shape + fn.event_shape
                value = torch.as_tensor(value)
                if value.shape != shape:
                    raise ValueError(
                        f"init_to_value: the initial value of site {site['name']!r} has shape {tuple(value.shape)}, "
                        f"expected {tuple(shape)}"
                    )
                _check_initial_point(site["name"], support.manifold, value, "init_to_value")
                return value
            if _is_ambient_strategy(self.init_strategy):
                # Pyro's uniform/median/mean/feasible points are ambient numbers projected
                # onto M (e.g. onto the Poincaré ball's boundary, hyperbolic radius ~35)
                value = None
            else:
                try:
                    value = self.init_strategy(site)
                except Exception:  # noqa: BLE001 - any failure: use the prior
                    value = None
            if value is None or not bool(support.check(value).all()):
                value = site["fn"].sample().detach()
            return value
        return self.init_strategy(site)


class KernelDiagnostics(dict):
    """What :meth:`RiemannianHMC.diagnostics` returns for one chain: a dict of Pyro's
    keys and ours (what ``MCMC.diagnostics()`` prints), with the per-draw statistics as
    the attribute :attr:`sample_stats` (a :class:`SampleStats`), which is pickled with
    it from Pyro's chain processes but is not a key."""

    sample_stats = None

    def __reduce__(self):
        return (KernelDiagnostics, (dict(self),), {"sample_stats": self.sample_stats})


class SampleStats(dict):
    """Per-draw statistics of one chain, ``{arviz name: 1-D tensor (num_samples,)}``:
    the attribute ``sample_stats`` of a chain's :class:`KernelDiagnostics`, and the
    ``sample_stats`` group of :func:`dlmppl.diagnostics.to_inference_data`; printed as
    one line."""

    def __repr__(self):
        n = len(next(iter(self.values()))) if self else 0
        return f"SampleStats({n} draws: {', '.join(self)})"


def _numerical_error(e) -> bool:
    """Whether ``e`` is a numerical failure that Pyro's registered handlers turn into a
    rejection (a failed Cholesky factorisation...)."""
    return any(h(e) for h in _EXCEPTION_HANDLERS.values())


class RiemannianHMC(HMC):
    r"""Hamiltonian Monte Carlo with manifold-valued latent sites.

    Same arguments as :class:`pyro.infer.HMC`, plus

    :param dict manifolds: ``{site name: manifold}`` for a ``potential_fn``
        (a model's manifold sites are found from their supports).
    :param str metric: ``"euclidean"`` (default: constant mass matrix, adapted
        during warm-up) or ``"softabs"`` (RMHMC with the SoftAbs metric of the
        Hessian for the Euclidean sites; all latent sites must then be
        Euclidean/unconstrained).
    :param float softabs_alpha: SoftAbs sharpness α (Betancourt 2013): the
        metric is ``Q diag(λ coth(αλ)) Qᵀ`` for the Hessian ``Q diag(λ) Qᵀ``.
    :param int fixed_point_iters: fixed-point iterations of the implicit
        generalised leapfrog (SoftAbs only).
    :param float min_stepsize, max_stepsize: bounds of the adapted step size
        (as in Pyro); on manifolds whose geodesics close up the upper bound is
        also :meth:`~dlmppl.geometry.Geometry.max_step`.
    :param int max_num_steps: most leapfrog steps of one iteration (default
        1024, the gradient budget of a NUTS iteration at tree depth 10, or the
        ``num_steps`` given if larger): ``trajectory_length / step_size`` above
        it is truncated, with a :class:`StepSizeWarning`.
    :param bool trace_once: compute a model's potential with
        :func:`~dlmppl.inference.potential.lean_potential_fn` (the model's sites and
        transforms learnt once; at each evaluation the model runs under one
        messenger that substitutes the values and sums the log-densities: the
        same value as Pyro's, without building a trace); it falls back to Pyro's
        ``potential_fn`` for models with discrete latent sites (enumerated) and
        with ``jit_compile=True``.  ``False``: Pyro's ``potential_fn`` always.
        :attr:`potential_kind` says which one (``"lean"`` or ``"pyro"``) after setup.

    The integrator is exact on the manifold (geodesic flow) and reversible and
    volume preserving (see :mod:`dlmppl.inference.integrators` for why, per
    manifold), so the Metropolis step makes the chain exact.  Momenta of a
    manifold site are ``√m_s`` times a standard normal in an orthonormal basis
    of its tangent space (scalar mass ``m_s``, adapted during warm-up with
    ``adapt_mass_matrix``, see the module docstring and
    :attr:`manifold_inverse_mass`); the geodesic flow moves with velocity
    ``p / m_s``, which is the exact flow of ``½ g(p, p) / m_s``, so exactness
    holds for any fixed ``m_s``; the potential of a manifold site is ``-log p`` with ``p`` the
    density with respect to the Riemannian volume.

    References: Neal (2011) "MCMC using Hamiltonian dynamics"; Byrne &
    Girolami (2013) "Geodesic Monte Carlo on embedded manifolds"; Hoffman &
    Gelman (2014) (dual averaging); Girolami & Calderhead (2011), Betancourt
    (2013) "A general metric for Riemannian manifold HMC" (SoftAbs).

    Shapes: a site of shape ``batch_shape + event_shape`` (ambient event shape)
    is one block of the state; draws returned by ``MCMC.get_samples()`` have
    shape ``(num_samples,) + site shape`` and lie on the manifold.
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        step_size=1,
        trajectory_length=None,
        num_steps=None,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        full_mass=False,
        transforms=None,
        max_plate_nesting=None,
        jit_compile=False,
        jit_options=None,
        ignore_jit_warnings=False,
        target_accept_prob=0.8,
        init_strategy=init_to_uniform,
        *,
        manifolds=None,
        metric="euclidean",
        softabs_alpha=1e6,
        fixed_point_iters=6,
        min_stepsize: float = 1e-10,
        max_stepsize: float = 1e10,
        max_num_steps: int | None = None,
        trace_once: bool = True,
    ):
        if metric not in ("euclidean", "softabs"):
            raise ValueError(f"metric must be 'euclidean' or 'softabs', got {metric!r}")
        if manifolds is not None and model is not None:
            raise ValueError("manifolds is only used with potential_fn; a model's manifold sites are found from their supports")
        super().__init__(
            model,
            potential_fn,
            step_size,
            trajectory_length=trajectory_length,
            num_steps=num_steps,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix and metric == "euclidean",
            full_mass=full_mass,
            transforms=transforms,
            max_plate_nesting=max_plate_nesting,
            jit_compile=jit_compile,
            jit_options=jit_options,
            ignore_jit_warnings=ignore_jit_warnings,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
            min_stepsize=min_stepsize,
            max_stepsize=max_stepsize,
        )
        # the warm-up: ours (dlmppl.inference.adaptation), in place of Pyro's WarmupAdapter
        self._adapter = WindowedAdaptation(
            step_size,
            adapt_step_size=adapt_step_size,
            target_accept_prob=target_accept_prob,
            adapt_mass_matrix=adapt_mass_matrix and metric == "euclidean",
            dense_mass=full_mass,
        )
        self._user_transforms = transforms
        self._manifolds = dict(manifolds or {})
        self.metric = metric
        self.softabs_alpha = float(softabs_alpha)
        self.fixed_point_iters = int(fixed_point_iters)
        self._geometries = {}
        self._integrator = self._hooks = None
        # {manifold site: 1/m_s}, updated in place by the adaptation and read by the integrator
        self._inverse_masses = self._adapter.manifold_inverse_mass
        if max_num_steps is None:
            max_num_steps = max(1024, int(num_steps or 0))
        if int(max_num_steps) < 1:
            raise ValueError(f"max_num_steps must be >= 1, got {max_num_steps}")
        self._max_num_steps = int(max_num_steps)
        self._step_cap = float(max_stepsize)
        self._last_diagnostics = None
        self._trace_once = bool(trace_once)
        # which potential the model got in setup: "lean" (dlmppl.inference.potential) or "pyro"
        self.potential_kind = None

    # ------------------------------------------------------------------ setup
    def _reset(self):
        super()._reset()
        self._stats = {k: [] for k in ("diverging", "energy", "step_size", "acceptance_rate", "n_steps", "tree_depth")}
        self._nonfinite = []
        self._warmup_info = {
            "iterations": 0,
            "divergences": 0,
            "nonfinite": 0,
            "truncated": 0,
            "initial_step_size": None,
            "min_step_size": None,
        }
        self._warned = {}
        self._warning_messages = []

    @property
    def num_steps(self):
        """Leapfrog steps per iteration: ``trajectory_length / step_size``, at most ``max_num_steps``."""
        return min(max(1, int(self.trajectory_length / self.step_size)), self._max_num_steps)

    def _initialize_model_properties(self, model_args, model_kwargs):
        safe_init = _ManifoldSafeInit(self._init_strategy)
        if self._max_plate_nesting is None:
            self._max_plate_nesting = _guess_max_plate_nesting(self.model, model_args, model_kwargs)
        # discrete sites are enumerated out of the potential, as in Pyro's initialize_model
        enum_model = poutine.enum(config_enumerate(self.model), first_available_dim=-1 - self._max_plate_nesting)

        def init_trace():
            with poutine.block():
                return poutine.trace(InitMessenger(safe_init)(enum_model)).get_trace(*model_args, **model_kwargs)

        trace = init_trace()
        transforms = dict(self._user_transforms or {})
        manifolds = {}
        names = []
        for name, node in trace.iter_stochastic_nodes():
            fn = node["fn"]
            if type(fn).__name__ == "_Subsample" or fn.has_enumerate_support:
                continue
            names.append(name)
            if isinstance(fn.support, ManifoldConstraint):
                manifolds[name] = fn.support.manifold
                transforms[name] = identity_transform
            elif name not in transforms:
                transforms[name] = biject_to(fn.support).inv
        self._manifolds = manifolds
        user_params = self._initial_params
        # initial_params={} makes Pyro skip its search for a valid initial point, whose
        # gradient raises for a site the potential does not depend on: ours follows
        _, potential_fn, transforms, proto_trace = initialize_model(
            self.model,
            model_args,
            model_kwargs,
            transforms=transforms,
            max_plate_nesting=self._max_plate_nesting,
            jit_compile=self._jit_compile,
            jit_options=self._jit_options,
            skip_jit_warnings=self._ignore_jit_warnings,
            init_strategy=safe_init,
            initial_params=user_params if user_params is not None else {},
        )
        self.potential_kind = "pyro"
        if self._trace_once and lean_applies(proto_trace, self._jit_compile):
            # the same potential without Pyro's trace at every evaluation
            potential_fn = lean_potential_fn(self.model, model_args, model_kwargs, transforms)
            self.potential_kind = "lean"
        if user_params is None:
            user_params = self._find_valid_initial_params(names, transforms, potential_fn, trace, init_trace)
        self.potential_fn = potential_fn
        self.transforms = transforms
        self._initial_params = user_params
        self._prototype_trace = proto_trace

    @staticmethod
    def _find_valid_initial_params(names, transforms, potential_fn, trace, init_trace, max_tries=100):
        """A point where the potential and its gradient are finite (Pyro's search, with
        :func:`~dlmppl.inference.integrators.potential_grad`)."""
        bad = []
        for _ in range(max_tries):
            if trace is None:
                trace = init_trace()
            params = {k: transforms[k](trace.nodes[k]["value"].detach()) for k in names}
            if not params:
                return params
            grads, pe = potential_grad(potential_fn, params, _numerical_error)
            bad = [k for k, g in grads.items() if not bool(torch.isfinite(g).all())]
            if bool(torch.isfinite(pe)) and not bad:
                return params
            trace = None
        raise ValueError(
            f"Model specification seems incorrect - cannot find valid initial params in {max_tries} tries: "
            f"the potential energy was {float(pe)}"
            + (f" and its gradient not finite at sites {bad}" if bad else "")
            + " at every initial point tried"
        )

    @property
    def euclidean_sites(self):
        return tuple(sorted(n for n in self.initial_params if n not in self._geometries))

    def _initialize_adapter(self):
        euclid = self.euclidean_sites
        dense = self._adapter.dense_mass
        if dense is False or self.metric == "softabs":
            dense_sites_list = []
        elif dense is True:
            dense_sites_list = [euclid] if euclid else []
        else:
            dense_sites_list = list(dense)
            for sites in dense_sites_list:
                if not (isinstance(sites, tuple) and sites and all(s in euclid for s in sites)):
                    raise ValueError(f"full_mass: every block must be a tuple of Euclidean site names from {euclid}, got {sites}")
        dense_set = set().union(*dense_sites_list) if dense_sites_list else set()
        diag_sites = tuple(n for n in euclid if n not in dense_set)
        shape = OrderedDict()
        for sites in dense_sites_list:
            size = sum(self.initial_params[s].numel() for s in sites)
            shape[sites] = (size, size)
        if diag_sites:
            shape[diag_sites] = (sum(self.initial_params[s].numel() for s in diag_sites),)
        pe = self._potential_energy_last
        z = self.initial_params
        self._adapter.configure(
            self._warmup_steps,
            shape,
            {name: (g, intrinsic_dim(g, z[name].shape)) for name, g in self._geometries.items()},
            find_step_size=self._find_reasonable_step_size,
            dtype=pe.dtype,
            device=pe.device,
        )

    def setup(self, warmup_steps, *args, **kwargs):
        self._warmup_steps = warmup_steps
        if self.model is not None:
            self._initialize_model_properties(args, kwargs)
        if not self.initial_params:
            raise ValueError("RiemannianHMC: no initial parameters (pass initial_params to MCMC with potential_fn)")
        self._geometries = {name: geometry_of(M) for name, M in self._manifolds.items()}
        self._inverse_masses.clear()
        self._inverse_masses.update({name: 1.0 for name in self._geometries})
        unknown = set(self._geometries) - set(self.initial_params)
        if unknown:
            raise ValueError(f"manifolds: sites {sorted(unknown)} are not in the initial parameters {sorted(self.initial_params)}")
        z = {k: v.detach() for k, v in self.initial_params.items()}
        for name, g in self._geometries.items():
            _check_initial_point(name, self._manifolds[name], z[name], "initial_params")
            z[name] = g.projx(z[name])
        self._initial_params = z
        self._update_step_cap(z)
        self._hooks = self._make_integrator(z)
        aux, potential_energy = self._integrator.init(z)
        self._cache(z, potential_energy, aux)
        self._initialize_adapter()
        self._warmup_info["initial_step_size"] = float(self.step_size)
        self._warmup_info["min_step_size"] = float(self.step_size)

    def diagnostics(self):
        """Per-chain diagnostics (what ``MCMC`` collects at the end of a chain).

        ``"divergences"`` / ``"nonfinite"``: post-warm-up iterations (0-based)
        whose trajectory diverged / met a NaN or infinite potential;
        ``"acceptance rate"``;
        ``"manifold_sites"``, ``"manifold_inverse_mass"``;
        ``"warmup"``: counts over warm-up (``iterations``, ``divergences``,
        ``nonfinite``, ``truncated`` trajectories), ``initial_step_size`` (the
        first adapted step), ``min_step_size``, ``step_size`` (the adapted
        one) and ``step_size_cap``; ``"warnings"``: the messages of the
        :class:`SamplerWarning` issued.  After ``MCMC.run`` the kernel returns
        the diagnostics of the last chain it ran.

        Returns a :class:`KernelDiagnostics`, whose attribute ``sample_stats`` (not a
        key, so that ``MCMC.diagnostics()`` reads as Pyro's) holds the per-draw
        statistics: a :class:`SampleStats` of arviz names (``diverging``, ``energy``,
        ``step_size``, ``acceptance_rate``, ``n_steps``, ``tree_depth`` for NUTS), each a
        tensor of shape ``(num_samples,)``, for
        :func:`~dlmppl.diagnostics.to_inference_data`.
        """
        if self._warmup_steps is None:  # after cleanup: the last chain's
            return self._last_diagnostics
        n = max(self._t - self._warmup_steps, 1)
        stats = SampleStats()
        for key, vals in self._stats.items():
            if key == "tree_depth" and not vals:
                continue
            dtype = torch.bool if key == "diverging" else (torch.long if key in ("n_steps", "tree_depth") else torch.float64)
            stats[key] = torch.tensor(vals, dtype=dtype)
        warmup = dict(self._warmup_info)
        warmup["step_size"] = float(self.step_size)
        warmup["step_size_cap"] = self._step_cap
        out = KernelDiagnostics(
            {
                "divergences": list(self._divergences),
                "nonfinite": list(self._nonfinite),
                "acceptance rate": self._accept_cnt / n,
                "manifold_sites": {name: type(M).__name__ for name, M in self._manifolds.items()},
                "manifold_inverse_mass": dict(self._inverse_masses),
                "warmup": warmup,
                "warnings": list(self._warning_messages),
            }
        )
        out.sample_stats = stats
        return out

    def cleanup(self):
        if self._warmup_steps is not None:
            n = self._t - self._warmup_steps
            if n > 0 and self._divergences:
                nf = len(self._nonfinite)
                self._warn(
                    "divergences",
                    DivergenceWarning,
                    f"{len(self._divergences)} of {n} transitions after warm-up diverged"
                    + (f" ({nf} reached a NaN or infinite potential)" if nf else "")
                    + "; divergences bias the draws: raise target_accept_prob, or reparametrise the model"
                    + (" and look for NaN/inf in its log density" if nf else ""),
                )
            self._last_diagnostics = self.diagnostics()
        super().cleanup()

    # ----------------------------------------------------- robustness checks
    def _warn(self, key, category, message):
        """Issue ``message`` once per run (``key``)."""
        if self._warned.get(key):
            return
        self._warned[key] = True
        message = f"{type(self).__name__}: {message}"
        self._warning_messages.append(message)
        warnings.warn(message, category, stacklevel=3)

    def _update_step_cap(self, z):
        """The largest step the adaptation may choose: ``max_stepsize``, and
        :meth:`~dlmppl.geometry.Geometry.max_step` of every manifold site at its current mass."""
        cap = float(self._max_stepsize)
        for name, g in self._geometries.items():
            cap = min(cap, g.max_step(z[name], self._inverse_masses[name]))
        self._step_cap = cap

    def _clamp_step_size(self):
        ad = self._adapter
        if ad.adapt_step_size:
            ad.step_size = min(max(float(ad.step_size), self._min_stepsize), self._step_cap)

    def _check_warmup(self):
        """After each warm-up iteration: warn as soon as the step size collapses or
        divergences dominate (Stan warns after warm-up; a NaN region can make the
        adaptation shrink the step 10⁴-fold within a few iterations)."""
        w = self._warmup_info
        eps = float(self.step_size)
        w["min_step_size"] = eps if w["min_step_size"] is None else min(w["min_step_size"], eps)
        n, ref = w["iterations"], w["initial_step_size"]
        causes = (
            f"{w['divergences']} of the {n} warm-up transitions so far diverged, "
            f"{w['nonfinite']} of them at a NaN or infinite potential or gradient"
        )
        hint = (
            "the log density is probably NaN/inf on part of the space the trajectories reach "
            "(a log of a negative number, a density evaluated outside its support...)"
            if w["nonfinite"] > 0.5 * max(w["divergences"], 1)
            else "the posterior probably has regions of very high curvature (reparametrise, e.g. non-centred)"
        )
        if ref and n >= _COLLAPSE_AFTER and eps < _COLLAPSE_RATIO * ref:
            self._warn(
                "collapse",
                StepSizeWarning,
                f"the step size collapsed during warm-up from {ref:.3g} to {eps:.3g} after {n} iterations; "
                f"{causes}: {hint}",
            )
        if w["divergences"] > 0.5 * n and (n >= _DOMINATE_AFTER or self._t >= self._warmup_steps):
            self._warn("dominate", DivergenceWarning, f"divergences dominate warm-up: {causes}; {hint}")

    @property
    def manifold_inverse_mass(self):
        """``{manifold site: 1/m_s}`` (floats): the current scalar inverse masses."""
        return dict(self._inverse_masses)

    # --------------------------------------------------------- Hamiltonian
    # the integrator (chosen once in setup) does the work; these hooks keep its
    # (z, r, aux) calling convention for subclasses and tests
    def _velocity(self, z, r, aux):
        """(kinetic energy, velocities dict, covectors dict) at (z, r)."""
        return self._integrator.kinetic(z, r, aux)

    def _leapfrog(self, z, r, aux, step_size, num_steps=1):
        return self._integrator.step(z, r, aux, step_size, num_steps)

    def _initial_momentum(self, z, aux):
        return self._integrator.momentum(z, aux)

    def _euclidean_momentum(self, z):
        return mass_momentum(self._adapter.mass, self.initial_params)

    @property
    def inverse_mass_matrix(self):
        """``{tuple of Euclidean site names: M⁻¹ block}`` (as Pyro's ``HMC``): shape
        ``(d,)`` for a diagonal block, ``(d, d)`` for a dense one."""
        return dict(self._adapter.mass.inverse)

    @property
    def mass_matrix_adapter(self):
        raise AttributeError(
            "RiemannianHMC adapts its masses with dlmppl.inference.adaptation.WindowedAdaptation, not a Pyro "
            "mass-matrix adapter: read inverse_mass_matrix and manifold_inverse_mass"
        )

    def _make_integrator(self, z):
        """The integrator of ``metric``: the geodesic leapfrog, or SoftAbs RMHMC. Its
        ``step`` goes through :meth:`_leapfrog`, so that a subclass may replace it."""
        if self.metric == "softabs":
            if self._geometries:
                raise ValueError(
                    "metric='softabs' needs every latent site Euclidean/unconstrained; "
                    f"manifold sites {sorted(self._geometries)} found"
                )
            core = softabs_integrator(self.potential_fn, z, self.softabs_alpha, self.fixed_point_iters)
        else:
            core = geodesic_leapfrog(
                self.potential_fn,
                self._geometries,
                self._inverse_masses,
                lambda r: mass_velocity(self._adapter.mass, r),
                self._euclidean_momentum,
                numerical_error=_numerical_error,
            )
        self._integrator = core
        return core._replace(step=self._leapfrog)

    def _find_reasonable_step_size(self, z):
        """A first step size at the current state and masses (the adaptation calls it at
        the start and after each slow window)."""
        z, potential_energy, aux = self._fetch_from_cache()
        if z is None:
            return min(self.step_size, self._step_cap)
        self._update_step_cap(z)
        with pyro.validation_enabled(False):
            return find_reasonable_step_size(
                self._hooks, z, aux, potential_energy, self.step_size, min_step_size=self._min_stepsize,
                max_step_size=self._step_cap, threshold=self._direction_threshold, numerical_error=_numerical_error,
            )  # fmt: skip

    def _record(self, diverging, energy, accept_prob, n_steps, tree_depth=None, nonfinite=False):
        if self._t < self._warmup_steps:
            w = self._warmup_info
            w["iterations"] += 1
            w["divergences"] += int(bool(diverging))
            w["nonfinite"] += int(bool(nonfinite))
            return
        if nonfinite:
            self._nonfinite.append(self._t - self._warmup_steps)
        s = self._stats
        s["diverging"].append(bool(diverging))
        s["energy"].append(float(energy.detach() if torch.is_tensor(energy) else energy))
        s["step_size"].append(float(self.step_size))
        s["acceptance_rate"].append(float(accept_prob))
        s["n_steps"].append(int(n_steps))
        if tree_depth is not None:
            s["tree_depth"].append(int(tree_depth))

    def _finish(self, z, accept_prob, accepted, aux, adapt_prob=None):
        """Count the transition and adapt; ``adapt_prob`` (default ``accept_prob``)
        is the statistic the step-size adaptation sees."""
        self._t += 1
        if self._t > self._warmup_steps:
            n = self._t - self._warmup_steps
            if accepted:
                self._accept_cnt += 1
        else:
            n = self._t
            stat = accept_prob if adapt_prob is None else adapt_prob
            if self._adapter.step(self._t, z, stat):
                self._update_step_cap(z)
            self._clamp_step_size()
            self._check_warmup()
        self._mean_accept_prob += (float(accept_prob) - self._mean_accept_prob) / n

    def _ensure_cache(self, params):
        z, potential_energy, aux = self._fetch_from_cache()
        if z is None:
            z = {k: v.detach() for k, v in params.items()}
            aux, potential_energy = self._integrator.init(z)
            self._cache(z, potential_energy, aux)
        return z, potential_energy, aux

    # -------------------------------------------------------------- sample
    def sample(self, params):
        z, potential_energy, aux = self._ensure_cache(params)
        if len(z) == 0:
            self._t += 1
            self._mean_accept_prob = 1.0
            if self._t > self._warmup_steps:
                self._accept_cnt += 1
            return params
        return self._transition(z, potential_energy, aux)

    def _transition(self, z, potential_energy, aux):
        """One HMC transition from the cached state; returns the new ``z``."""
        r = self._initial_momentum(z, aux)
        energy_current = potential_energy + self._velocity(z, r, aux)[0]
        num_steps = self.num_steps
        warmup = self._t < self._warmup_steps
        if num_steps >= self._max_num_steps and self.trajectory_length / self.step_size > self._max_num_steps:
            if warmup:
                self._warmup_info["truncated"] += 1
            self._warn(
                "truncated",
                StepSizeWarning,
                f"trajectories truncated at max_num_steps={self._max_num_steps} leapfrog steps "
                f"(trajectory_length {self.trajectory_length:.3g} / step size {self.step_size:.3g}); "
                "a step size this small usually means that the log density is NaN/inf or very curved "
                "somewhere the trajectories reach",
            )
        checkpoints = []
        with optional(pyro.validation_enabled(False), warmup):
            try:
                z_new, r_new, aux_new, pe_new, checkpoints = trajectory(
                    self._hooks, z, r, aux, self.step_size, num_steps, _CHECK_EVERY, energy_current if warmup else None
                )
                energy_new = pe_new + self._velocity(z_new, r_new, aux_new)[0]
            except Exception as e:
                if _numerical_error(e) or isinstance(e, RuntimeError):
                    energy_new = energy_current.new_tensor(float("inf"))
                    z_new = None
                else:
                    raise
        delta_energy = _nan_to_inf(energy_new - energy_current)
        diverging = bool(delta_energy > self._max_sliced_energy)
        # synchronises only on a divergence
        nonfinite = diverging and not bool(torch.isfinite(energy_new))
        if diverging and self._t >= self._warmup_steps:
            self._divergences.append(self._t - self._warmup_steps)
        accept_prob = (-delta_energy).exp().clamp(max=1.0)
        adapt_prob = None
        if nonfinite and checkpoints:
            # NUTS-like statistic: the acceptance along the trajectory, the non-finite end counting 0,
            # so that a NaN region no step size avoids does not drive the step size to zero
            adapt_prob = torch.stack(checkpoints).sum() / (len(checkpoints) + 1)
        accepted = bool(torch.rand((), dtype=accept_prob.dtype, device=accept_prob.device) < accept_prob)
        energy = energy_current
        if accepted and z_new is not None:
            z, aux, energy = z_new, aux_new, energy_new
            self._cache(z, pe_new, aux)
        self._record(diverging, energy, accept_prob, num_steps, nonfinite=nonfinite)
        self._finish(z, accept_prob, accepted, aux, adapt_prob)
        return z.copy()


# --------------------------------------------------------------------------- NUTS
# A thin shell over dlmppl.inference.tree.nuts_transition (multinomial NUTS, Betancourt 2017, with the
# generalised U-turn criterion of Betancourt 2013) on the integrator RiemannianHMC chooses.


class RiemannianNUTS(RiemannianHMC):
    r"""No-U-Turn sampler with manifold-valued latent sites.

    Arguments as :class:`pyro.infer.NUTS` (``model`` or ``potential_fn``,
    ``step_size``, ``adapt_step_size``, ``adapt_mass_matrix``, ``full_mass``,
    ``transforms``, ``max_plate_nesting``, ``jit_compile``,
    ``target_accept_prob``, ``max_tree_depth``, ``init_strategy``) and those of
    :class:`RiemannianHMC` (``manifolds``, ``metric``,
    ``softabs_alpha``, ``fixed_point_iters``, ``trace_once``).  See the module docstring for
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
        trace_once=True,
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
            trace_once=trace_once,
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
