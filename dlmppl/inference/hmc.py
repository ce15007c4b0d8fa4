r"""Riemannian Hamiltonian Monte Carlo kernel for :class:`pyro.infer.MCMC`.

Sites whose support is a :class:`dlmppl.constraints.ManifoldConstraint` are
integrated on their manifold with the geodesic leapfrog of
:mod:`dlmppl.inference.integrators` (Byrne & Girolami 2013); every other
continuous site is mapped to unconstrained space with ``biject_to`` (with the
log-abs-det-Jacobian) and integrated as in Pyro's ``HMC``, with step-size dual
averaging (Hoffman & Gelman 2014) and diagonal or dense mass-matrix adaptation
(Pyro's ``WarmupAdapter``) for those Euclidean coordinates.  With
``metric="softabs"`` the Euclidean sites use Riemannian-manifold HMC
(Girolami & Calderhead 2011) with Betancourt's (2013) SoftAbs metric instead
(:mod:`dlmppl.inference.softabs`).

Each manifold site ``s`` has a scalar (isotropic) mass ``m_s``: momentum
``p ~ N(0, m_s g)`` in its tangent space, kinetic energy ``½ g(p, p) / m_s``
and velocity ``p / m_s``.  With ``adapt_mass_matrix=True`` (default) ``1/m_s``
is adapted in the same warm-up windows as Pyro's Euclidean mass matrix (Stan's
windowed schedule) to a regularised estimate of the per-dimension variance of
the draws on the manifold, and is fixed during sampling; otherwise ``m_s = 1``.

Per-draw statistics (arviz names) are returned by :meth:`diagnostics` under
``"sample_stats"``; the manifold of each manifold site under
``"manifold_sites"``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import geoopt
import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import init_to_uniform
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.mcmc.hmc import HMC
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import _EXCEPTION_HANDLERS, potential_grad
from pyro.util import optional
from torch.distributions import biject_to
from torch.distributions.transforms import identity_transform

from .. import manifolds as _m
from ..constraints import ManifoldConstraint, violation
from .integrators import SphereGeometry, geometry_of, riemannian_leapfrog

__all__ = ["RiemannianHMC"]


class _ManifoldSafeInit:
    """Wrap a Pyro init strategy: manifold sites fall back to a prior draw.

    Pyro's strategies (``init_to_uniform``, ``init_to_median``...) work in an
    unconstrained space that manifold supports lack, or give points off the
    manifold (a mean); a user value (``init_to_value``) on the manifold is kept.
    """

    def __init__(self, init_strategy):
        self.init_strategy = init_strategy

    def __call__(self, site):
        support = site["fn"].support
        if isinstance(support, ManifoldConstraint):
            try:
                value = self.init_strategy(site)
            except Exception:  # noqa: BLE001 - any failure: use the prior
                value = None
            if value is None or not bool(support.check(value).all()):
                value = site["fn"].sample().detach()
            return value
        return self.init_strategy(site)


def _intrinsic_dim(manifold, shape) -> int:
    """Total intrinsic dimension of a site of ``shape`` (batch + ambient event shape) on ``manifold``."""
    base = _m._base(manifold)
    if isinstance(base, (geoopt.Stiefel, geoopt.SymmetricPositiveDefinite)):
        event_ndim = 2
    elif isinstance(base, geoopt.Euclidean):
        event_ndim = int(getattr(base, "ndim", 0))
    else:
        event_ndim = 1
    shape = tuple(shape)
    event = shape[len(shape) - event_ndim :]
    batch = shape[: len(shape) - event_ndim]
    return max(_m.manifold_dim(manifold, event) * math.prod(batch), 1)


def manifold_variance(geometry, draws, intrinsic_dim):
    r"""Per-dimension variance of draws on a manifold (scalar mass adaptation).

    ``draws``: tensor of shape ``(n,) + site shape`` (ambient coordinates).
    Returns ``E g_x̄(x - x̄, x - x̄) / intrinsic_dim``, a 0-dim tensor, with
    ``x̄`` the ambient mean of the draws (a Fréchet-mean proxy) and ``g_x̄`` the
    metric there (``geometry.covector``).  For a concentrated distribution
    ``x - x̄`` is nearly tangent and this is the mean squared geodesic
    distance to the mean over the dimension.  Sphere/Stiefel: the sum of the
    ambient coordinate variances (sphere: the squared geodesic distance to the
    normalised mean instead, exact for diffuse draws too); Lorentz: ``-k - ⟨x̄, x̄⟩_L ≥ 0``;
    κ-stereographic: ``λ_x̄²`` times the ambient variance; SPD:
    ``E tr(x̄⁻¹ Δ x̄⁻¹ Δ)``.  (Stan's windowed variance estimate, Carpenter et
    al. 2017, applied isotropically on the manifold.)
    """
    mean = draws.mean(0)
    if isinstance(geometry, SphereGeometry):
        # geodesic distance to the normalised mean (the chord underestimates it for diffuse draws)
        mu = mean / mean.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(mean.dtype).tiny)
        theta = torch.arccos((draws * mu).sum(-1).clamp(-1.0, 1.0))
        return theta.pow(2).sum() / draws.shape[0] / intrinsic_dim
    d = draws - mean
    sq = (geometry.covector(mean.expand_as(d), d) * d).sum() / draws.shape[0]
    return sq.clamp_min(0) / intrinsic_dim


def _nan_to_inf(x):
    return torch.where(torch.isnan(x), torch.full_like(x, float("inf")), x)


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
        self._user_transforms = transforms
        self._manifolds = dict(manifolds or {})
        self.metric = metric
        self.softabs_alpha = float(softabs_alpha)
        self.fixed_point_iters = int(fixed_point_iters)
        self._geometries = {}
        self._softabs = None
        self._inverse_masses = {}
        self._mass_window = {}

    # ------------------------------------------------------------------ setup
    def _reset(self):
        super()._reset()
        self._stats = {k: [] for k in ("diverging", "energy", "step_size", "acceptance_rate", "n_steps", "tree_depth")}

    def _initialize_model_properties(self, model_args, model_kwargs):
        safe_init = _ManifoldSafeInit(self._init_strategy)
        with poutine.block():
            trace = poutine.trace(InitMessenger(safe_init)(self.model)).get_trace(*model_args, **model_kwargs)
        transforms = dict(self._user_transforms or {})
        manifolds = {}
        for name, node in trace.iter_stochastic_nodes():
            fn = node["fn"]
            if type(fn).__name__ == "_Subsample" or fn.has_enumerate_support:
                continue
            if isinstance(fn.support, ManifoldConstraint):
                manifolds[name] = fn.support.manifold
                transforms[name] = identity_transform
            elif name not in transforms:
                transforms[name] = biject_to(fn.support).inv
        self._manifolds = manifolds
        init_params, potential_fn, transforms, trace = initialize_model(
            self.model,
            model_args,
            model_kwargs,
            transforms=transforms,
            max_plate_nesting=self._max_plate_nesting,
            jit_compile=self._jit_compile,
            jit_options=self._jit_options,
            skip_jit_warnings=self._ignore_jit_warnings,
            init_strategy=safe_init,
            initial_params=self._initial_params,
        )
        self.potential_fn = potential_fn
        self.transforms = transforms
        self._initial_params = init_params
        self._prototype_trace = trace

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
        options = {"dtype": self._potential_energy_last.dtype, "device": self._potential_energy_last.device}
        self._adapter.configure(
            self._warmup_steps,
            mass_matrix_shape=shape,
            find_reasonable_step_size_fn=self._find_reasonable_step_size,
            options=options,
        )
        if self._adapter.adapt_step_size:
            self._adapter.reset_step_size_adaptation(self._initial_params)

    def setup(self, warmup_steps, *args, **kwargs):
        self._warmup_steps = warmup_steps
        if self.model is not None:
            self._initialize_model_properties(args, kwargs)
        if not self.initial_params:
            raise ValueError("RiemannianHMC: no initial parameters (pass initial_params to MCMC with potential_fn)")
        self._geometries = {name: geometry_of(M) for name, M in self._manifolds.items()}
        self._inverse_masses = {name: 1.0 for name in self._geometries}
        self._mass_window = {name: [] for name in self._geometries}
        unknown = set(self._geometries) - set(self.initial_params)
        if unknown:
            raise ValueError(f"manifolds: sites {sorted(unknown)} are not in the initial parameters {sorted(self.initial_params)}")
        z = {k: v.detach() for k, v in self.initial_params.items()}
        for name, g in self._geometries.items():
            M = self._manifolds[name]
            tol = 1e3 * torch.finfo(z[name].dtype).eps ** 0.5
            if not bool((violation(M, z[name]) <= tol).all()):
                raise ValueError(f"initial value of site {name!r} is not on its manifold {type(M).__name__}")
            z[name], _ = g.project(z[name], torch.zeros_like(z[name]))
        self._initial_params = z
        if self.metric == "softabs":
            from .softabs import SoftAbsIntegrator

            if self._geometries:
                raise ValueError(
                    "metric='softabs' needs every latent site Euclidean/unconstrained; "
                    f"manifold sites {sorted(self._geometries)} found"
                )
            self._softabs = SoftAbsIntegrator(self.potential_fn, z, self.softabs_alpha, self.fixed_point_iters)
            aux, potential_energy = self._softabs.prepare(z)
            self._cache(z, potential_energy, aux)
        else:
            z_grads, potential_energy = potential_grad(self.potential_fn, z)
            self._cache(z, potential_energy, z_grads)
        self._initialize_adapter()

    def diagnostics(self):
        n = max(self._t - self._warmup_steps, 1)
        stats = {}
        for key, vals in self._stats.items():
            if key == "tree_depth" and not vals:
                continue
            dtype = torch.bool if key == "diverging" else (torch.long if key in ("n_steps", "tree_depth") else torch.float64)
            stats[key] = torch.tensor(vals, dtype=dtype)
        return {
            "divergences": list(self._divergences),
            "acceptance rate": self._accept_cnt / n,
            "sample_stats": stats,
            "manifold_sites": {name: type(M).__name__ for name, M in self._manifolds.items()},
            "manifold_inverse_mass": dict(self._inverse_masses),
        }

    @property
    def manifold_inverse_mass(self):
        """``{manifold site: 1/m_s}`` (floats): the current scalar inverse masses."""
        return dict(self._inverse_masses)

    def _adapt_manifold_mass(self, t, z):
        """Accumulate draws of manifold sites in Pyro's slow adaptation windows; at a
        window's end set ``1/m_s`` to Stan's regularised variance estimate
        ``n/(n+5) var + 1e-3 · 5/(n+5)``.  Called before ``WarmupAdapter.step``
        so that the step size found at the window end uses the new masses."""
        ad = self._adapter
        if not self._geometries or not ad.adapt_mass_matrix or t >= self._warmup_steps or ad._adaptation_disabled:
            return
        schedule = ad.adaptation_schedule
        i = ad._current_window
        if not schedule or not (0 < i < len(schedule) - 1):
            return
        for name in self._geometries:
            self._mass_window[name].append(z[name].detach().clone())
        if t == schedule[i].end:
            for name, g in self._geometries.items():
                draws = torch.stack(self._mass_window[name])
                n = draws.shape[0]
                if n >= 2:
                    var = manifold_variance(g, draws, _intrinsic_dim(self._manifolds[name], draws.shape[1:]))
                    var = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
                    value = float(var)
                    if math.isfinite(value) and value > 0:
                        self._inverse_masses[name] = value
                self._mass_window[name] = []

    # --------------------------------------------------------- Hamiltonian
    def _sample_momentum(self, z):
        if self._softabs is not None:
            return None  # drawn from the aux state by the SoftAbs integrator
        r = {}
        sizes = self.mass_matrix_adapter.mass_matrix_size
        if sizes:
            pe = self._potential_energy_last
            r_unscaled = {names: torch.randn(size, dtype=pe.dtype, device=pe.device) for names, size in sizes.items()}
            r = self.mass_matrix_adapter.scale(r_unscaled, r_prototype=self.initial_params)
        for name, g in self._geometries.items():
            r[name] = g.momentum(z[name]) / math.sqrt(self._inverse_masses[name])
        return r

    def _velocity(self, z, r, aux):
        """(kinetic energy, velocities dict, covectors dict) at (z, r)."""
        if self._softabs is not None:
            return self._softabs.kinetic(aux, r)
        vel = self.mass_matrix_adapter.kinetic_grad(r)
        cov = {}
        ke = 0.0
        for name, v in vel.items():
            cov[name] = r[name]
            ke = ke + (r[name] * v).sum()
        for name, g in self._geometries.items():
            v = r[name] * self._inverse_masses[name]  # velocity p / m
            c = g.covector(z[name], r[name])  # momentum covector G(x) p
            vel[name] = v
            cov[name] = c
            ke = ke + (c * v).sum()  # g(p, p) / m
        return 0.5 * ke, vel, cov

    def _leapfrog(self, z, r, aux, step_size, num_steps=1):
        if self._softabs is not None:
            return self._softabs.leapfrog(z, r, aux, step_size, num_steps)
        return riemannian_leapfrog(
            z,
            r,
            self.potential_fn,
            self.mass_matrix_adapter.kinetic_grad,
            self._geometries,
            step_size,
            num_steps,
            z_grads=aux,
            inverse_masses=self._inverse_masses,
        )

    def _initial_momentum(self, z, aux):
        if self._softabs is not None:
            return self._softabs.sample_momentum(aux)
        return self._sample_momentum(z)

    def _find_reasonable_step_size(self, z):
        step_size = self.step_size
        z, potential_energy, aux = self._fetch_from_cache()
        if z is None:
            return step_size

        def delta(eps):
            r = self._initial_momentum(z, aux)
            e0 = potential_energy + self._velocity(z, r, aux)[0]
            try:
                z1, r1, aux1, pe1 = self._leapfrog(z, r, aux, eps)
                e1 = pe1 + self._velocity(z1, r1, aux1)[0]
            except Exception as e:  # numerical failure = too large a step
                if any(h(e) for h in _EXCEPTION_HANDLERS.values()) or isinstance(e, (RuntimeError, ValueError)):
                    return math.inf
                raise
            d = float((e1 - e0).detach())
            return math.inf if math.isnan(d) else d

        direction = 1 if self._direction_threshold < -delta(step_size) else -1
        scale = 2.0**direction
        new_direction = direction
        while new_direction == direction and self._min_stepsize < step_size < self._max_stepsize:
            step_size = scale * step_size
            new_direction = 1 if self._direction_threshold < -delta(step_size) else -1
        return min(max(step_size, self._min_stepsize), self._max_stepsize)

    def _record(self, diverging, energy, accept_prob, n_steps, tree_depth=None):
        if self._t < self._warmup_steps:
            return
        s = self._stats
        s["diverging"].append(bool(diverging))
        s["energy"].append(float(energy.detach() if torch.is_tensor(energy) else energy))
        s["step_size"].append(float(self.step_size))
        s["acceptance_rate"].append(float(accept_prob))
        s["n_steps"].append(int(n_steps))
        if tree_depth is not None:
            s["tree_depth"].append(int(tree_depth))

    def _finish(self, z, accept_prob, accepted, aux):
        self._t += 1
        if self._t > self._warmup_steps:
            n = self._t - self._warmup_steps
            if accepted:
                self._accept_cnt += 1
        else:
            n = self._t
            self._adapt_manifold_mass(self._t, z)
            self._adapter.step(self._t, z, accept_prob, aux if isinstance(aux, dict) else None)
        self._mean_accept_prob += (float(accept_prob) - self._mean_accept_prob) / n

    def _ensure_cache(self, params):
        z, potential_energy, aux = self._fetch_from_cache()
        if z is None:
            z = {k: v.detach() for k, v in params.items()}
            if self._softabs is not None:
                aux, potential_energy = self._softabs.prepare(z)
            else:
                aux, potential_energy = potential_grad(self.potential_fn, z)
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
        r = self._initial_momentum(z, aux)
        energy_current = potential_energy + self._velocity(z, r, aux)[0]
        num_steps = self.num_steps
        with optional(pyro.validation_enabled(False), self._t < self._warmup_steps):
            try:
                z_new, r_new, aux_new, pe_new = self._leapfrog(z, r, aux, self.step_size, num_steps)
                energy_new = pe_new + self._velocity(z_new, r_new, aux_new)[0]
            except Exception as e:
                if any(h(e) for h in _EXCEPTION_HANDLERS.values()) or isinstance(e, RuntimeError):
                    energy_new = energy_current.new_tensor(float("inf"))
                    z_new = None
                else:
                    raise
        delta_energy = _nan_to_inf(energy_new - energy_current)
        diverging = bool(delta_energy > self._max_sliced_energy)
        if diverging and self._t >= self._warmup_steps:
            self._divergences.append(self._t - self._warmup_steps)
        accept_prob = (-delta_energy).exp().clamp(max=1.0)
        accepted = bool(torch.rand((), dtype=accept_prob.dtype) < accept_prob)
        energy = energy_current
        if accepted and z_new is not None:
            z, aux, energy = z_new, aux_new, energy_new
            self._cache(z, pe_new, aux)
        self._record(diverging, energy, accept_prob, num_steps)
        self._finish(z, accept_prob, accepted, aux)
        return z.copy()
