r"""Step-size and mass adaptation as functions of explicit state.

* :func:`dual_averaging_init` / :func:`dual_averaging_update`: Nesterov dual
  averaging of ``log ε`` toward a target acceptance (Hoffman & Gelman 2014,
  "The No-U-Turn sampler", section 3.2, eqs. 5-6).
* :func:`find_reasonable_step_size`: their heuristic for the first step
  (algorithm 4), within bounds.
* :func:`manifold_variance` and :func:`regularized_variance`: the scalar
  (isotropic) inverse mass of a manifold site from draws of a warm-up window
  (Stan's windowed, regularised variance estimate; Carpenter et al. 2017).
* :func:`adaptation_schedule`: Stan's warm-up windows (a fast start buffer,
  doubling slow windows, a fast end buffer).
* :func:`welford_init` / :func:`welford_update` / :func:`welford_covariance`:
  Welford's online (co)variance of the Euclidean coordinates in a slow window,
  regularised as Stan does; :class:`BlockMass` / :func:`block_mass`: a
  block-diagonal Euclidean mass matrix (diagonal or dense blocks of sites), with
  :func:`mass_velocity` ``M⁻¹ r`` and :func:`mass_momentum` ``r ~ N(0, M)``.
* :class:`WindowedAdaptation`: the warm-up of the kernels
  (:mod:`dlmppl.inference.kernels`), composed of the functions above: dual
  averaging of the step size, the Euclidean mass blocks and the scalar masses of
  manifold sites, all updated in the same windows.  It computes what Pyro's
  ``WarmupAdapter`` + ``BlockMassMatrix`` compute, operation for operation (a
  test checks equality on a fixed seed), and adds the manifold sites.

The many-chain sampler of :mod:`dlmppl.models.intrinsic` uses the functions
directly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import torch

__all__ = [
    "AdaptWindow",
    "BlockMass",
    "DualAveragingState",
    "WelfordState",
    "WindowedAdaptation",
    "adaptation_schedule",
    "block_mass",
    "mass_momentum",
    "mass_velocity",
    "welford_covariance",
    "welford_init",
    "welford_update",
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
    log_eps = state.prox_center - t**0.5 / gamma * hbar
    w = t ** (-kappa)
    avg = (1.0 - w) * state.log_step_size_avg + w * log_eps
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


# ------------------------------------------------------------------ warm-up windows
class AdaptWindow(NamedTuple):
    """Warm-up iterations ``start..end`` (inclusive, 0-based) of one adaptation window."""

    start: int
    end: int


def adaptation_schedule(warmup_steps, start_buffer=75, end_buffer=50, initial_window=25) -> list[AdaptWindow]:
    """Stan's warm-up windows (Carpenter et al. 2017; Stan reference manual, "HMC
    algorithm parameters"): a start buffer where only the step size adapts, slow
    windows of doubling length where the mass is estimated (the last one stretched
    to the end buffer), and an end buffer.  Below 20 iterations: one window; when the
    default buffers do not fit, 15% / 75% / 10% of ``warmup_steps``."""
    if warmup_steps < 20:
        return [AdaptWindow(0, warmup_steps - 1)]
    if start_buffer + end_buffer + initial_window > warmup_steps:
        start_buffer = int(0.15 * warmup_steps)
        end_buffer = int(0.1 * warmup_steps)
        initial_window = warmup_steps - start_buffer - end_buffer
    schedule = [AdaptWindow(0, start_buffer - 1)]
    end_start = warmup_steps - end_buffer
    size, start = initial_window, start_buffer
    while start < end_start:
        cur, nxt = size, size
        if 3 * cur <= end_start - start:
            nxt = 2 * cur
        else:
            cur = end_start - start
        schedule.append(AdaptWindow(start, start + cur - 1))
        start, size = start + cur, nxt
    schedule.append(AdaptWindow(end_start, warmup_steps - 1))
    return schedule


# ------------------------------------------------------------- Euclidean mass
class WelfordState(NamedTuple):
    """Welford's running moments: ``n`` draws, their ``mean`` and the sum of squared
    deviations ``m2`` (elementwise, or the outer-product matrix when dense); ``0.0``
    before the first draw."""

    n: int
    mean: object
    m2: object


def welford_init() -> WelfordState:
    return WelfordState(0, 0.0, 0.0)


def welford_update(state, x, dense=False) -> WelfordState:
    """Add the draw ``x`` (shape ``(d,)``) to ``state`` (Welford 1962; Knuth TAOCP vol. 2)."""
    n = state.n + 1
    delta_pre = x - state.mean
    mean = state.mean + delta_pre / n
    delta_post = x - mean
    m2 = state.m2 + (torch.outer(delta_post, delta_pre) if dense else delta_pre * delta_post)
    return WelfordState(n, mean, m2)


def welford_covariance(state, dense=False):
    """Stan's regularised covariance of the draws in ``state``:
    ``n/(n+5) S + 1e-3 · 5/(n+5) I`` with ``S`` the sample (co)variance; shape ``(d,)``
    (diagonal) or ``(d, d)`` (dense).  Needs two draws."""
    n = state.n
    if n < 2:
        raise ValueError(f"state: the covariance needs at least 2 draws, got {n}")
    cov = state.m2 / (n - 1)
    scaled = (n / (n + 5.0)) * cov
    shrinkage = 1e-3 * (5.0 / (n + 5.0))
    if not dense:
        return scaled + shrinkage
    scaled.view(-1)[:: scaled.size(0) + 1] += shrinkage
    return scaled


class BlockMass(NamedTuple):
    """A block-diagonal Euclidean mass matrix.  ``inverse``: ``{tuple of site names:
    M⁻¹ block}``, each of shape ``(d,)`` (diagonal) or ``(d, d)`` (dense), ``d`` the
    total size of its sites; ``sqrt``: the matching upper-triangular ``M^{1/2}`` (the
    inverse of the transposed Cholesky factor of ``M⁻¹``), for drawing momenta."""

    inverse: dict
    sqrt: dict


def block_mass(inverse) -> BlockMass:
    """The :class:`BlockMass` of the inverse-mass blocks ``inverse`` (an ordered dict)."""
    sqrt = {}
    for names, inv in inverse.items():
        if inv.dim() == 1:
            sqrt[names] = inv.sqrt().reciprocal()
        else:
            upper = torch.linalg.cholesky(inv).t()
            eye = torch.eye(inv.size(-1), dtype=inv.dtype, device=inv.device)
            sqrt[names] = torch.linalg.solve_triangular(upper, eye, upper=True)
    return BlockMass(OrderedDict(inverse), sqrt)


def _matvec(m, v):
    return m.mul(v) if m.dim() == 1 else m.matmul(v)


def _unflatten(flat, names, like, out):
    pos = 0
    for name in names:
        n = like[name].numel()
        out[name] = flat[pos : pos + n].reshape(like[name].shape)
        pos += n


def mass_velocity(mass, r):
    """``{site: (M⁻¹ r)_site}``: the velocity of the Euclidean momenta ``r`` (a dict of
    site tensors), the gradient of the kinetic energy ``½ rᵀ M⁻¹ r``."""
    v = {}
    for names, inv in mass.inverse.items():
        if len(names) == 1:  # one site: no concatenation (a copy) and no slicing
            x = r[names[0]]
            v[names[0]] = _matvec(inv, x) if x.dim() == 1 else _matvec(inv, x.reshape(-1)).reshape(x.shape)
            continue
        flat = torch.cat([r[name].reshape(-1) for name in names])
        _unflatten(_matvec(inv, flat), names, r, v)
    return v


def mass_momentum(mass, like):
    """Momenta ``r ~ N(0, M)`` of the Euclidean sites: ``{site: tensor shaped like
    like[site]}``, from one standard normal vector per block (in block order) times
    ``M^{1/2}``."""
    r = {}
    for names, sqrt in mass.sqrt.items():
        eps = torch.randn(sqrt.size(0), dtype=sqrt.dtype, device=sqrt.device)
        _unflatten(_matvec(sqrt, eps), names, like, r)
    return r


# ------------------------------------------------------------------ the warm-up
class WindowedAdaptation:
    r"""The warm-up of :class:`~dlmppl.inference.RiemannianHMC` /
    :class:`~dlmppl.inference.RiemannianNUTS`: dual averaging of the step size
    (Hoffman & Gelman 2014), and in Stan's slow windows (:func:`adaptation_schedule`)
    the Euclidean mass blocks (:func:`welford_covariance`) and the scalar inverse mass
    of each manifold site (:func:`manifold_variance`), after which the step-size search
    restarts at the new masses.  A mutable holder over the explicit-state functions of
    this module; the kernel keeps one per chain.

    :param float step_size: the initial step size (before the first search).
    :param bool adapt_step_size, adapt_mass_matrix: what to adapt.
    :param float target_accept_prob: the dual-averaging target.
    :param dense_mass: ``False`` (diagonal), ``True`` (one dense block of all
        Euclidean sites) or a list of tuples of site names (dense blocks; the
        other sites diagonal), as Pyro's ``full_mass``.
    """

    def __init__(self, step_size=1.0, adapt_step_size=False, target_accept_prob=0.8, adapt_mass_matrix=False,
                 dense_mass=False):  # fmt: skip
        self.adapt_step_size = adapt_step_size
        self.adapt_mass_matrix = adapt_mass_matrix
        self.target_accept_prob = target_accept_prob
        self.dense_mass = dense_mass
        self.step_size = 1 if step_size is None else step_size
        self._init_step_size = self.step_size
        self.disabled = not (adapt_step_size or adapt_mass_matrix)
        self.schedule = []
        self.window = 0
        self.mass = block_mass(OrderedDict())
        self.manifold_inverse_mass = {}

    def configure(self, warmup_steps, mass_shape, geometries=None, *, find_step_size=None, dtype=None, device=None):
        """Start a warm-up of ``warmup_steps`` iterations.

        :param mass_shape: ordered ``{tuple of Euclidean site names: (d,) or (d, d)}``.
        :param geometries: ``{manifold site: (Geometry, intrinsic dimension)}``.
        :param find_step_size: ``z`` → a first step size at the current masses
            (:func:`find_reasonable_step_size`); called now and after each slow window.
        """
        self.warmup_steps = warmup_steps
        self.step_size = self._init_step_size
        self._find_step_size = find_step_size
        self._geometries = dict(geometries or {})
        inverse = OrderedDict()
        for names, shape in mass_shape.items():
            inverse[names] = torch.full(shape, 1.0, dtype=dtype, device=device) if len(shape) == 1 else (
                torch.eye(*shape, dtype=dtype, device=device))  # fmt: skip
        self.mass = block_mass(inverse)
        # the integrator holds this dict: update it in place
        self.manifold_inverse_mass.clear()
        self.manifold_inverse_mass.update({name: 1.0 for name in self._geometries})
        self._reset_windows()
        self.schedule = [] if self.disabled else adaptation_schedule(warmup_steps)
        self.window = 0
        if self.adapt_step_size:
            self.reset_step_size(None)

    def _reset_windows(self):
        self._welford = {names: welford_init() for names in self.mass.inverse}
        self._draws = {name: [] for name in self._geometries}

    def reset_step_size(self, z):
        """Search a first step size (when a search is given) and restart dual averaging there."""
        if self._find_step_size is not None:
            self.step_size = self._find_step_size(z)
        self._da = dual_averaging_init(self.step_size)

    def step(self, t, z, accept_prob):
        """After warm-up iteration ``t`` (1-based count of iterations done), at state ``z``
        with acceptance statistic ``accept_prob``.  Returns whether the masses changed."""
        if t >= self.warmup_steps or self.disabled:
            return False
        window = self.schedule[self.window]
        last = len(self.schedule) - 1
        slow = self.adapt_mass_matrix and 0 < self.window < last
        if slow:
            for name in self._geometries:
                self._draws[name].append(z[name].detach().clone())
        if self.adapt_step_size:
            self._da = dual_averaging_update(self._da, float(accept_prob), self.target_accept_prob)
            self.step_size = math.exp(self._da.log_step_size)
        if slow:
            for names, state in self._welford.items():
                flat = torch.cat([z[name].detach().reshape(-1) for name in names])
                self._welford[names] = welford_update(state, flat, dense=self.mass.inverse[names].dim() == 2)
        if t != window.end:
            return False
        self.window += 1
        if self.window - 1 == last:
            if self.adapt_step_size:
                self.step_size = math.exp(self._da.log_step_size_avg)
            return False
        if not slow:
            return False
        for name, (g, dim) in self._geometries.items():
            draws = torch.stack(self._draws[name])
            if draws.shape[0] >= 2:
                value = float(regularized_variance(manifold_variance(g, draws, dim), draws.shape[0]))
                if math.isfinite(value) and value > 0:
                    self.manifold_inverse_mass[name] = value
        self.mass = block_mass(OrderedDict(
            (names, welford_covariance(s, dense=self.mass.inverse[names].dim() == 2)) for names, s in self._welford.items()
        ))  # fmt: skip
        self._reset_windows()
        if self.adapt_step_size:
            self.reset_step_size(z)
        return True
