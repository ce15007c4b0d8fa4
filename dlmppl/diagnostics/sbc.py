r"""Simulation-based calibration (SBC) for Pyro models with manifold-valued sites.

SBC (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, "Validating Bayesian
inference algorithms with simulation-based calibration", arXiv:1804.06788)
checks an inference algorithm on a model by the self-consistency of the joint
law: draw ``θ̃ ~ p(θ)``, ``ỹ ~ p(y | θ̃)``; then ``θ̃`` is a draw of the exact
posterior ``p(θ | ỹ)``, so for any scalar test quantity ``f`` the rank of
``f(θ̃)`` among ``f(θ_1), ..., f(θ_L)`` for ``L`` *independent* draws of the
posterior is uniform on ``{0, ..., L}``.  Repeating over ``num_simulations``
independent simulations gives ranks whose non-uniformity reveals an inference
that does not sample the posterior: a U shape (draws too narrow), a hump (too
wide), a slope (biased).

Test quantities (Modrák, Moon, Kim, Kennedy, Gabry, Bürkner & Vehtari 2023,
"Simulation-based calibration checking for Bayesian computation: the choice of
test quantities shapes sensitivity", Bayesian Analysis): by default

* every coordinate of every Euclidean latent site (``"sigma"``, ``"beta[0]"``,
  ``"W[0,1]"``);
* for a latent site on a manifold (support
  :class:`dlmppl.constraints.ManifoldConstraint`) ambient coordinates mean
  little, so each point ``x`` (each batch element of the site) gives its
  geodesic distance ``d(o, x)`` to a fixed reference point ``o``
  (``"mu.distance"``) and the coordinates of ``log_o x`` in an orthonormal
  basis of ``T_o M`` (``"mu.tangent[0]"``, ...; :func:`~dlmppl.diagnostics.stats.tangent_coordinates`);
  ``o`` is the manifold's origin (sphere: ``e_0``; hyperboloid: ``√k e_0``;
  Poincaré ball / κ-stereographic / Euclidean: ``0``; Stiefel: the first ``p``
  columns of the identity; SPD: the identity; otherwise geoopt's
  ``origin``) or a point given in ``reference``.  Any fixed ``o`` is valid; the
  rank test is most sensitive in the directions the tangent chart resolves;
* ``"log_lik"``: ``log p(ỹ | θ)`` summed over the observed sites, evaluated at
  the simulated data (Modrák et al. 2023: a quantity that depends on the data
  can detect miscalibration that every marginal of the parameters misses, such
  as the wrong dependence between parameters);
* and any ``test_quantities`` of the user.

Posterior draws of MCMC are autocorrelated; ranking ``θ̃`` against correlated
draws makes ranks non-uniform for a *correct* sampler (Talts et al. 2018,
section 5: thin the chain to about its effective sample size), so the ``L``
ranked draws are thinned out of the chain: with ``thin="auto"`` they are spread
evenly over the ``num_samples`` draws, ``s = num_samples / L`` iterations apart,
and the draws are near-independent when ``s`` is at least the integrated
autocorrelation time ``τ = num_samples / ESS`` of every test quantity.  One
short chain estimates its own ``τ`` poorly (the smallest of the arviz bulk ESSs
of four quantities of 30 i.i.d. draws is below 15 in a third of the cases), but the chains of all simulations
share the sampler and the model, so :func:`sbc` averages their autocorrelation
functions and reads ``τ`` off the average (Geyer's initial monotone sequence);
when ``τ`` exceeds ``s`` (by more than three standard errors, from the spread
over the chains) for some quantity it warns and says which ``num_samples``
would do.  Draws of a variational guide are independent and need no thinning.

Uniformity of the ranks: :func:`ecdf_uniformity_test`, the simultaneous-band
test of the empirical CDF of the ranks (Säilynoja, Bürkner & Vehtari 2022,
"Graphical test for discrete uniformity and its applications in
goodness-of-fit evaluation and multiple sample comparison", Statistics and
Computing 32), with an exact p-value (the ECDF of i.i.d. discrete uniform ranks
is a Markov chain with binomial increments, so the probability that it leaves
the bands is a forward recursion), and :func:`chi2_uniformity_test` (Pearson's
chi-square on binned ranks, asymptotic).  :func:`ecdf_band` gives the
simultaneous bands that :func:`dlmppl.diagnostics.plots.plot_sbc` draws.
"""

from __future__ import annotations

import copy
import functools
import math
import multiprocessing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from scipy import special as _special
from scipy import stats as _stats

from ..constraints import ManifoldConstraint
from ..geometry import geometry_of

__all__ = [
    "MCMCInference",
    "SVIInference",
    "SBCResult",
    "sbc",
    "sbc_ranks",
    "default_reference",
    "ecdf_uniformity_test",
    "ecdf_band",
    "chi2_uniformity_test",
]


def _check_factory(name: str, value, built: type, example: str) -> None:
    if isinstance(value, built) or not callable(value):
        raise ValueError(
            f"{name}: pass a factory model -> {name} (e.g. lambda model: {example}(model)), "
            f"not {type(value).__name__}: SBC builds one {name} per simulated data set"
        )


def _check_int(name: str, value, low: int = 1) -> None:
    if int(value) != value or value < low:
        raise ValueError(f"{name} must be a {'positive' if low else 'non-negative'} integer, got {value}")


# --------------------------------------------------------------------------- inference specs


@dataclass
class MCMCInference:
    """An MCMC run per simulation: ``pyro.infer.MCMC(kernel(model), num_samples, warmup_steps)``.

    Args:
        kernel: a factory ``model -> MCMCKernel``, e.g.
            ``lambda model: RiemannianNUTS(model)`` (SBC conditions the model on
            each simulated data set, so the kernel is built afresh each time).
        num_samples: draws kept per simulation (one chain), of which
            ``num_draws`` are ranked (see :func:`sbc`).
        warmup_steps: warm-up iterations (default ``num_samples``, as Pyro).
        mcmc_kwargs: further keyword arguments of :class:`pyro.infer.MCMC`
            (e.g. ``initial_params``); one chain, no progress bar.
    """

    kernel: Callable
    num_samples: int
    warmup_steps: int | None = None
    mcmc_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

        _check_factory("kernel", self.kernel, MCMCKernel, "RiemannianNUTS")
        _check_int("num_samples", self.num_samples)
        if self.warmup_steps is None:
            self.warmup_steps = int(self.num_samples)
        _check_int("warmup_steps", self.warmup_steps, 0)
        bad = {"num_chains", "disable_progbar", "num_samples", "warmup_steps"} & set(self.mcmc_kwargs)
        if bad:
            raise ValueError(f"mcmc_kwargs: {sorted(bad)} are set by SBC (one chain per simulation)")


@dataclass
class SVIInference:
    """An SVI fit per simulation; the ranked draws are independent draws of the guide.

    Args:
        guide: a factory ``model -> guide``, e.g. ``lambda model: AutoManifoldNormal(model)``.
        optim: a Pyro optimiser (``pyro.optim.Adam({...})``,
            :func:`dlmppl.inference.RiemannianAdam`); copied afresh for each simulation.
        num_steps: SVI steps per simulation.
        loss: an ELBO (default ``pyro.infer.Trace_ELBO()``).
    """

    guide: Callable
    optim: object
    num_steps: int
    loss: object | None = None

    def __post_init__(self):
        _check_factory("guide", self.guide, torch.nn.Module, "AutoNormal")
        _check_int("num_steps", self.num_steps)


# --------------------------------------------------------------------------- ranks


def sbc_ranks(true: torch.Tensor | np.ndarray, draws: torch.Tensor | np.ndarray, generator=None) -> np.ndarray:
    """Ranks of ``true`` among ``draws``: ``#{l : draws[l] < true}``, ties broken at random.

    Shapes: ``true`` ``(Q,)`` (one value per test quantity), ``draws`` ``(L, Q)``;
    returns ``(Q,)`` integers in ``0..L``.  Ties ``draws[l] == true`` are broken at
    random (a uniform integer in ``0..#ties`` is added), which keeps the rank of a
    discrete quantity uniform (Talts et al. 2018, section 4.1).  A NaN raises
    ``ValueError``.  ``generator``: a ``torch.Generator`` for the tie breaks.
    """
    t = torch.as_tensor(true, dtype=torch.float64).reshape(-1)
    d = torch.as_tensor(draws, dtype=torch.float64)
    if d.dim() != 2 or d.shape[1] != t.shape[0]:
        raise ValueError(f"draws: expected shape (L, {t.shape[0]}), got {tuple(d.shape)}")
    if torch.isnan(t).any() or torch.isnan(d).any():
        raise ValueError("sbc_ranks: a test quantity is NaN (true value or posterior draw)")
    less = (d < t).sum(0)
    ties = (d == t).sum(0)
    if bool((ties > 0).any()):
        u = torch.rand(t.shape, generator=generator, dtype=torch.float64)
        less = less + torch.floor(u * (ties + 1)).long()
    return less.numpy().astype(np.int64)


# --------------------------------------------------------------------------- uniformity tests


def _check_ranks(ranks, num_draws) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks: expected a non-empty 1-d array, got shape {r.shape}")
    _check_int("num_draws", num_draws)
    if not np.issubdtype(r.dtype, np.integer):
        if not np.all(np.isfinite(r)) or np.any(r != np.round(r)):
            raise ValueError("ranks: expected integers")
        r = r.astype(np.int64)
    if r.min() < 0 or r.max() > num_draws:
        raise ValueError(f"ranks: expected values in 0..{num_draws} (num_draws), got {r.min()}..{r.max()}")
    return r


def _thresholds(num_draws: int, max_points: int) -> np.ndarray:
    """Integer thresholds ``t`` (``C_t = #{r < t}``), at most ``max_points``, in ``1..L``."""
    L = int(num_draws)
    if L <= max_points:
        return np.arange(1, L + 1)
    t = np.unique(np.round(np.linspace(0.0, L + 1.0, max_points + 1)[1:-1]).astype(np.int64))
    return t[(t >= 1) & (t <= L)]


def _binom_cdf(k, n, p):
    """``P(Bin(n, p) ≤ k)`` for integer arrays ``k``, ``n`` (any ``k``), 0 < p < 1."""
    k, n = np.broadcast_arrays(np.asarray(k), np.asarray(n))
    inner = _special.bdtr(np.clip(k, 0, n), n, p)
    return np.where(k < 0, 0.0, np.where(k >= n, 1.0, inner))


def _binom_sf(k, n, p):
    """``P(Bin(n, p) > k)``."""
    k, n = np.broadcast_arrays(np.asarray(k), np.asarray(n))
    inner = _special.bdtrc(np.clip(k, 0, n), n, p)
    return np.where(k < 0, 1.0, np.where(k >= n, 0.0, inner))


@functools.lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    return _special.gammaln(np.arange(1, n + 2, dtype=np.float64))  # [log 0!, ..., log n!]


def _binom_pmf(k, n, p, n_max):
    """``P(Bin(n, p) = k)`` for integer arrays ``k``, ``n ≤ n_max`` (any ``k``)."""
    lf = _log_factorials(int(n_max))
    ok = (k >= 0) & (k <= n)
    kk = np.where(ok, k, 0)
    nn = np.where(ok, n, 0)
    logp = lf[nn] - lf[kk] - lf[nn - kk] + kk * math.log(p) + (nn - kk) * math.log1p(-p)
    return np.where(ok, np.exp(logp), 0.0)


@functools.lru_cache(maxsize=64)
def _tails(n: int, num_draws: int, max_points: int):
    """``(z, tail)``: evaluation points ``z_j = t_j/(L+1)`` and the two-sided binomial tail
    ``min(1, 2 min(P(B ≤ c), P(B ≥ c)))``, ``B ~ Bin(n, z_j)``, shape ``(K, n+1)``."""
    z = _thresholds(num_draws, max_points) / (num_draws + 1.0)
    c = np.arange(n + 1)
    tail = np.empty((len(z), n + 1))
    for j, zj in enumerate(z):
        tail[j] = np.minimum(1.0, 2.0 * np.minimum(_binom_cdf(c, n, zj), _binom_sf(c - 1, n, zj)))
    # Equal tails computed along different routes (z_j and 1 - z_j are mirror images) differ
    # in the last bits; the band's level could then fall between two twins and keep one of
    # them, while the p-value's margin counts both as exits (p 0.0508 for an ECDF that left
    # the 0.05 band).  Values within a relative 1e-9 of each other become one value, the
    # largest of their cluster, so that ties are exact for the band and the p-value alike.
    flat = np.unique(tail)
    cluster = np.concatenate([[0], np.cumsum(flat[1:] > flat[:-1] * (1 + 1e-9))])
    last = np.searchsorted(cluster, np.arange(cluster[-1] + 1), side="right") - 1
    tail = flat[last][cluster][np.searchsorted(flat, tail)]
    tail.setflags(write=False)
    return z, tail


def _inside(tail: np.ndarray, gamma: float):
    """Per row, the interval ``[lo, hi]`` of counts with ``tail > gamma`` (``tail`` is unimodal in the count)."""
    ok = tail > gamma
    any_ok = ok.any(1)
    lo = np.where(any_ok, ok.argmax(1), 1)
    hi = np.where(any_ok, ok.shape[1] - 1 - ok[:, ::-1].argmax(1), 0)
    return lo, hi


def _exit_probability(n: int, z: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """``P(∃ j: C_j ∉ [lo_j, hi_j])`` for the counts ``C_j = n F̂(z_j)`` of ``n`` i.i.d. uniforms.

    ``C`` is a Markov chain in ``j``: ``C_j - C_{j-1} ~ Bin(n - C_{j-1}, (z_j - z_{j-1})/(1 - z_{j-1}))``.
    The recursion carries the law of the paths still inside, restricted to the band,
    and adds up the mass that leaves at each step from binomial tails (no
    ``1 - P(inside)`` cancellation, so small p-values keep their relative accuracy).
    """
    surv = np.ones(1)
    c = np.zeros(1, dtype=np.int64)
    z_prev = 0.0
    p_exit = 0.0
    for j in range(len(z)):
        q = (z[j] - z_prev) / (1.0 - z_prev)
        m = n - c
        if lo[j] > hi[j]:
            return 1.0 if surv.sum() > 0 else min(1.0, p_exit)
        below = _binom_cdf(lo[j] - 1 - c, m, q)
        above = _binom_sf(hi[j] - c, m, q)
        p_exit += float(surv @ (below + above))
        c_new = np.arange(lo[j], hi[j] + 1)
        surv = surv @ _binom_pmf(c_new[None, :] - c[:, None], m[:, None], q, n)
        c = c_new
        z_prev = z[j]
    return float(min(1.0, max(0.0, p_exit)))


def ecdf_uniformity_test(ranks, num_draws: int, max_points: int = 100) -> float:
    r"""p-value of "the ranks are i.i.d. uniform on ``{0..L}``", by the ECDF band test.

    Säilynoja, Bürkner & Vehtari (2022), "Graphical test for discrete uniformity
    and its applications in goodness-of-fit evaluation and multiple sample
    comparison", Statistics and Computing 32.  ``ranks``: ``(N,)`` integers in
    ``0..L`` (``L = num_draws``).  At the evaluation points ``z_j = t_j / (L+1)``
    (every ``t_j = 1..L``, or ``max_points`` of them spread evenly when ``L`` is
    larger) the count ``C_j = #{r_i < t_j}`` is ``Bin(N, z_j)`` under uniformity;
    the statistic is the smallest two-sided binomial tail probability
    ``γ = min_j 2 min(P(B_j ≤ C_j), P(B_j ≥ C_j))`` (the ECDF leaves the
    simultaneous band of level ``γ`` there), and the p-value ``P(γ' ≤ γ)`` under
    uniformity is computed exactly (a forward recursion over ``j``; the counts are
    a Markov chain with binomial increments).  So ``P(p ≤ a) ≤ a`` for every
    ``a`` (ties make it slightly conservative).  Returns a float in ``[0, 1]``.
    """
    r = _check_ranks(ranks, num_draws)
    n = r.size
    z, tail = _tails(n, int(num_draws), int(max_points))
    t = np.rint(z * (num_draws + 1)).astype(np.int64)
    counts = np.searchsorted(np.sort(r), t, side="left")  # #{r < t}
    gamma = float(tail[np.arange(len(t)), counts].min())
    # paths with min tail <= gamma (the observed one included) are the exits; the relative
    # margin keeps the observed path an exit despite rounding
    lo, hi = _inside(tail, gamma * (1 + 1e-9))
    return _exit_probability(n, z, lo, hi)


@functools.lru_cache(maxsize=64)
def _band(n: int, num_draws: int, alpha: float, max_points: int):
    z, tail = _tails(n, num_draws, max_points)
    # the exit probability is non-decreasing in gamma: bisect log(gamma) for the largest
    # gamma whose band is left with probability <= alpha
    a, b = -40.0, 0.0
    if _exit_probability(n, z, *_inside(tail, 10.0**a)) > alpha:  # pragma: no cover - alpha below 1e-40
        raise ValueError(f"alpha: {alpha:g} is too small for {n} ranks")
    for _ in range(60):
        mid = 0.5 * (a + b)
        if _exit_probability(n, z, *_inside(tail, 10.0**mid)) <= alpha:
            a = mid
        else:
            b = mid
    lo, hi = _inside(tail, 10.0**a)
    return z, lo, hi, 10.0**a


def ecdf_band(num_simulations: int, num_draws: int, alpha: float = 0.05, max_points: int = 100):
    r"""Simultaneous ``1 - alpha`` band for the ECDF of ``num_simulations`` uniform ranks on ``0..L``.

    Säilynoja et al. (2022): at each evaluation point ``z_j`` (``(K,)``, as in
    :func:`ecdf_uniformity_test`) the band is the interval of counts
    ``[lower_j, upper_j]`` whose two-sided binomial tail exceeds ``γ``, with
    ``γ`` the largest level such that i.i.d. uniform ranks leave the band
    *anywhere* with probability at most ``alpha`` (exact, not asymptotic).  The
    ECDF leaves the band iff :func:`ecdf_uniformity_test` ``≤ alpha``.

    Returns ``(z, lower, upper)``: arrays of shape ``(K,)``; ``lower``/``upper``
    are fractions (counts divided by ``num_simulations``) to compare with the
    ECDF ``F̂(z_j) = #{r < t_j} / N``.
    """
    _check_int("num_simulations", num_simulations)
    _check_int("num_draws", num_draws)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    z, lo, hi, _ = _band(int(num_simulations), int(num_draws), float(alpha), int(max_points))
    return z.copy(), lo / num_simulations, hi / num_simulations


def chi2_uniformity_test(ranks, num_draws: int, bins: int | None = None) -> float:
    """Pearson chi-square p-value of uniform ranks on ``0..L`` from ``bins`` bins (asymptotic).

    ``ranks``: ``(N,)`` integers.  The ``L + 1`` rank values are grouped into
    ``bins`` consecutive bins of (nearly) equal width, default
    ``max(2, min(L + 1, N // 10))`` (about ten expected ranks per bin; Talts et al.
    2018 use rank histograms), each bin's expected count proportional to its
    width.  The p-value is the ``χ²_{bins-1}`` tail, accurate when the expected
    counts are large; prefer :func:`ecdf_uniformity_test` for small ``N``.
    """
    r = _check_ranks(ranks, num_draws)
    n, k = r.size, int(num_draws) + 1
    if bins is None:
        bins = max(2, min(k, n // 10))
    if int(bins) != bins or not 2 <= bins <= k:
        raise ValueError(f"bins must be an integer in 2..{k} (num_draws + 1), got {bins}")
    edges = np.round(np.linspace(0, k, int(bins) + 1)).astype(np.int64)
    obs = np.histogram(r, bins=edges)[0]
    exp = n * np.diff(edges) / k
    stat = float(((obs - exp) ** 2 / exp).sum())
    return float(_stats.chi2.sf(stat, int(bins) - 1))


# --------------------------------------------------------------------------- test quantities


def default_reference(manifold, event_shape, dtype=None, device=None) -> torch.Tensor:
    """The fixed reference point of a manifold site's test quantities, shape ``event_shape``.

    Sphere ``S^d``: ``e_0``; Lorentz (``⟨x,x⟩_L = -k``): ``√k e_0``;
    κ-stereographic / Poincaré ball / Euclidean: ``0``; Stiefel ``(n, p)``: the
    first ``p`` columns of ``I_n``; SPD: ``I``: the family's
    :meth:`~dlmppl.geometry.Geometry.origin`.
    """
    dtype = dtype or torch.get_default_dtype()
    return geometry_of(manifold).origin(tuple(event_shape), dtype, device).detach()


def _index_names(name: str, shape) -> list[str]:
    shape = tuple(shape)
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


class _Quantities:
    """The test quantities of a model, fixed once from a prior trace.

    Calling it on ``params`` (``{site: (S,) + site shape}``) gives an ``(S, Q)`` float64 array.
    """

    def __init__(self, trace, latent, observed, reference, extra, model, model_args, model_kwargs, log_lik):
        from . import stats as _stats_mod

        self._stats = _stats_mod
        self.model, self.args, self.kwargs = model, model_args, model_kwargs
        self.observed = tuple(observed)
        self.extra = dict(extra or {})
        self.log_lik = log_lik
        self.specs = []  # (site, manifold or None, event_dim, reference, basis)
        self.names: list[str] = []
        reference = dict(reference or {})
        # for the vectorised log-likelihood (as pyro.infer.Predictive(parallel=True)): the draws
        # go in a plate left of every batch dimension of the model
        nesting = [0]
        for v in trace.nodes.values():
            if v["type"] == "sample" and hasattr(v["fn"], "batch_shape"):
                nesting.append(len(v["fn"].batch_shape))
                nesting += [-f.dim for f in v["cond_indep_stack"] if f.vectorized and f.dim is not None]
        self._max_plate_nesting = max(nesting)
        self._shapes = {n: (tuple(trace.nodes[n]["fn"].batch_shape), tuple(trace.nodes[n]["value"].shape)) for n in latent}
        self._vectorised = None  # unknown until checked against the one-draw evaluation
        for name in latent:
            site = trace.nodes[name]
            value = site["value"]
            support = site["fn"].support
            if isinstance(support, ManifoldConstraint):
                M, edim = support.manifold, support.event_dim
                event = tuple(value.shape[value.dim() - edim :])
                batch = tuple(value.shape[: value.dim() - edim])
                if name in reference:
                    ref = torch.as_tensor(reference[name], dtype=value.dtype, device=value.device)
                    if tuple(ref.shape) != event or not bool(support.check(ref).all()):
                        raise ValueError(
                            f"reference[{name!r}]: expected a point of shape {event} on {type(M).__name__} "
                            f"({support!r}), got shape {tuple(ref.shape)}"
                        )
                else:
                    ref = default_reference(M, event, value.dtype, value.device)
                basis = _stats_mod.tangent_basis(M, ref)
                d = basis.shape[0]
                self.specs.append((name, M, edim, ref, basis))
                for b in _index_names(name, batch):
                    self.names += [f"{b}.distance"] + [f"{b}.tangent[{k}]" for k in range(d)]
            else:
                self.specs.append((name, None, 0, None, None))
                self.names += _index_names(name, value.shape)
        unknown = set(reference) - {s[0] for s in self.specs if s[1] is not None}
        if unknown:
            raise ValueError(f"reference: {sorted(unknown)} are not latent manifold sites of the model")
        if self.log_lik:
            self.names.append("log_lik")
        clash = set(self.extra) & set(self.names)
        if clash:
            raise ValueError(f"test_quantities: names {sorted(clash)} clash with the default test quantities")
        self.names += list(self.extra)

    def _manifold_columns(self, x, M, edim, ref, basis):
        s = x.shape[0]
        event = tuple(x.shape[x.dim() - edim :])
        pts = x.reshape((-1,) + event)
        T = self._stats.tangent_coordinates(pts, M, ref, basis)  # (S*B, d)
        try:
            from ..geometry import geodesics as _geo

            dist = _geo.distance(M, ref.expand_as(pts), pts)
        except (ValueError, TypeError, NotImplementedError, AttributeError):
            dist = T.norm(dim=-1)
        cols = torch.cat([dist.reshape(-1, 1), T], -1)  # (S*B, 1+d)
        return cols.reshape(s, -1)

    def site_values(self, params: Mapping[str, torch.Tensor]) -> np.ndarray:
        """The site quantities (coordinates, distances, tangent coordinates) of ``S`` draws, ``(S, Q_site)``."""
        s = next(iter(params.values())).shape[0] if params else 1
        cols = [torch.zeros(s, 0, dtype=torch.float64)]
        with torch.no_grad():
            for name, M, edim, ref, basis in self.specs:
                x = params[name].detach()
                if M is None:
                    cols.append(x.reshape(s, -1).to(torch.float64).cpu())
                else:
                    cols.append(self._manifold_columns(x, M, edim, ref, basis).to(torch.float64).cpu())
        return torch.cat(cols, -1).numpy()

    def extra_values(self, params: Mapping[str, torch.Tensor], data: Mapping[str, torch.Tensor]) -> np.ndarray:
        """The user's quantities of ``S`` draws, ``(S, Q_extra)`` (one call per draw)."""
        s = next(iter(params.values())).shape[0]
        out = np.zeros((s, len(self.extra)))
        with torch.no_grad():
            for i in range(s):
                one = {k: v[i] for k, v in params.items()}
                for j, fn in enumerate(self.extra.values()):
                    out[i, j] = float(torch.as_tensor(fn(one, dict(data))).detach().reshape(()))
        return out

    def log_likelihoods(self, params, data, loop: bool = True) -> np.ndarray | None:
        """``log p(ỹ | θ_s)`` of ``S`` draws, ``(S,)``: one vectorised trace of the model when it
        broadcasts over a leading plate (checked once against a one-draw trace), else one trace
        per draw, or ``None`` with ``loop=False``."""
        s = next(iter(params.values())).shape[0]
        with torch.no_grad():
            if self._vectorised is not False:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        v = self._log_lik_vectorised(params, data)
                except Exception:  # noqa: BLE001 - any model that does not broadcast: loop instead
                    v = None
                if v is not None and self._vectorised is None:
                    one = self._log_likelihood({k: x[0] for k, x in params.items()}, data)
                    self._vectorised = bool(torch.isclose(v[0], one, rtol=1e-6, atol=1e-9).item())
                if v is None:
                    self._vectorised = False
                elif self._vectorised:
                    return v.numpy()
            if not loop:
                return None
            return torch.stack([self._log_likelihood({k: x[i] for k, x in params.items()}, data) for i in range(s)]).numpy()

    def __call__(self, params: Mapping[str, torch.Tensor], data: Mapping[str, torch.Tensor]) -> np.ndarray:
        """All test quantities of ``S`` draws ``{site: (S,) + site shape}``, ``(S, Q)``."""
        cols = [self.site_values(params)]
        if self.log_lik:
            cols.append(self.log_likelihoods(params, data)[:, None])
        cols.append(self.extra_values(params, data))
        return np.concatenate(cols, -1)

    def _observed_log_prob(self, trace):
        total = 0.0
        for name in self.observed:
            site = trace.nodes[name]
            lp = site["fn"].log_prob(site["value"])
            if site.get("mask") is not None:
                lp = lp * site["mask"]  # a masked (missing) observation is not data
            total = total + lp.to(torch.float64).cpu()
        return total

    def _log_likelihood(self, params, data):
        cond = poutine.condition(self.model, data={**params, **data})
        tr = poutine.trace(cond).get_trace(*self.args, **self.kwargs)
        return torch.as_tensor(self._observed_log_prob(tr)).sum()

    def _log_lik_vectorised(self, params, data):
        s = next(iter(params.values())).shape[0]
        mpn = self._max_plate_nesting
        cond = {}
        for name, x in params.items():
            batch, shape = self._shapes[name]
            cond[name] = x.reshape((s,) + (1,) * (mpn - len(batch)) + shape)

        def batched(*args, **kwargs):
            with pyro.plate("_sbc_draws", s, dim=-(mpn + 1)):
                return self.model(*args, **kwargs)

        tr = poutine.trace(poutine.condition(batched, data={**cond, **data})).get_trace(*self.args, **self.kwargs)
        lp = torch.as_tensor(self._observed_log_prob(tr))
        if lp.dim() != mpn + 1 or lp.shape[0] != s:
            return None
        return lp.reshape(s, -1).sum(-1)


# --------------------------------------------------------------------------- one simulation


@dataclass
class _Job:
    model: Callable
    inference: object
    model_args: tuple
    model_kwargs: dict
    observed: tuple
    num_draws: int
    thin: object
    reference: dict | None
    test_quantities: dict | None
    log_lik: bool
    seeds: np.ndarray
    dtype: torch.dtype
    validation: bool


def _latent_and_data(job: _Job, trace):
    names = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    for o in job.observed:
        if o not in names:
            raise ValueError(f"observed: {o!r} is not a sample site of the model (sites: {names})")
        if trace.nodes[o]["is_observed"]:
            raise ValueError(
                f"observed: site {o!r} is already observed when the model is called with model_args/model_kwargs; "
                "call it with the data set to None so that SBC can simulate it"
            )
    latent = []
    for n in names:
        site = trace.nodes[n]
        if n in job.observed or site["is_observed"] or type(site["fn"]).__name__ == "_Subsample":
            continue
        latent.append(n)
    if not latent:
        raise ValueError("model: no latent sample sites besides the observed ones: nothing to calibrate")
    data = {o: trace.nodes[o]["value"].detach() for o in job.observed}
    return latent, data


def _select(num_samples: int, num_draws: int, thin) -> np.ndarray:
    """Indices of the ranked draws among ``num_samples`` chain draws."""
    if thin == "auto":
        return (np.arange(1, num_draws + 1) * num_samples) // num_draws - 1
    idx = np.arange(num_samples - 1, -1, -int(thin))[:num_draws][::-1]
    return idx


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelations ``ρ_0..ρ_{max_lag}`` of each column of one chain ``x`` ``(N, Q)``, ``(Q, max_lag+1)``
    (FFT; NaN for a constant column)."""
    n = x.shape[0]
    y = x - x.mean(0)
    m = 1 << int(2 * n - 1).bit_length()
    f = np.fft.rfft(y, n=m, axis=0)
    acov = np.fft.irfft(f * np.conj(f), n=m, axis=0)[: max_lag + 1].T / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return acov / acov[:, :1]


def _iat(rho: np.ndarray, n: int):
    """Integrated autocorrelation times ``τ = 1 + 2 Σ_k ρ_k`` from autocorrelations ``rho`` ``(Q, K)``
    of chains of ``n`` draws, by Geyer's (1992) initial monotone positive sequence.

    Returns ``(τ, pairs)``, both ``(Q,)``: ``τ`` (NaN for a constant quantity, at least
    ``1 / log10(n)`` as arviz caps the ESS) and the number of lag pairs summed.
    """
    tau = np.full(rho.shape[0], np.nan)
    npairs = np.zeros(rho.shape[0], dtype=np.int64)
    for q, r in enumerate(rho):
        if not np.isfinite(r[0]):
            continue
        r = np.nan_to_num(r)
        k = len(r) - len(r) % 2
        pairs = r[:k].reshape(-1, 2).sum(1)  # Γ_m = ρ_2m + ρ_2m+1
        neg = np.nonzero(pairs <= 0)[0]
        pairs = pairs[: neg[0]] if len(neg) else pairs
        if len(pairs):
            pairs = np.minimum.accumulate(pairs)
        npairs[q] = len(pairs)
        tau[q] = max(-1.0 + 2.0 * pairs.sum(), 1.0 / math.log10(max(n, 10)))
    return tau, npairs


def _pooled_iat(acfs: np.ndarray, n: int):
    """``τ`` of the average autocorrelation of ``M`` chains ``acfs`` ``(M, Q, K)``, and its standard
    error: the spread over the chains of ``-1 + 2 Σ Γ_m`` summed to the pooled truncation lag."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN lags of constant quantities
        tau, npairs = _iat(np.nanmean(acfs, 0), n)
        m, q, k = acfs.shape
        k2 = k - k % 2
        gam = np.nan_to_num(acfs[:, :, :k2]).reshape(m, q, -1, 2).sum(-1)  # (M, Q, pairs)
        keep = np.arange(gam.shape[-1])[None, :] < npairs[:, None]
        each = -1.0 + 2.0 * (gam * keep[None]).sum(-1)  # (M, Q)
        se = each.std(0, ddof=1) / math.sqrt(m) if m > 1 else np.zeros(q)
    return tau, se


def _run_mcmc(spec: MCMCInference, model, args, kwargs):
    from pyro.infer import MCMC

    kernel = spec.kernel(model)
    mcmc_kwargs = dict(spec.mcmc_kwargs)
    user_hook = mcmc_kwargs.pop("hook_fn", None)
    last = {}
    num_samples = int(spec.num_samples)

    def hook(kern, params, stage, i):
        if user_hook is not None:
            user_hook(kern, params, stage, i)
        # the kernel's diagnostics are reset by its cleanup at the end of the run: read them at the last draw
        if stage.startswith("Sample") and i == num_samples - 1:
            last.update(kern.diagnostics() or {})

    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=int(spec.warmup_steps),
        num_chains=1,
        disable_progbar=True,
        hook_fn=hook,
        **mcmc_kwargs,
    )
    mcmc.run(*args, **kwargs)
    samples = {k: v.detach() for k, v in mcmc.get_samples().items()}
    return samples, len(last.get("divergences", []))


def _run_svi(spec: SVIInference, model, args, kwargs, latent, num_draws):
    from pyro.infer import SVI, Trace_ELBO

    pyro.clear_param_store()
    guide = spec.guide(model)
    loss = spec.loss if spec.loss is not None else Trace_ELBO()
    svi = SVI(model, guide, copy.deepcopy(spec.optim), loss=loss)
    for _ in range(int(spec.num_steps)):
        svi.step(*args, **kwargs)
    draws = {n: [] for n in latent}
    with torch.no_grad():
        for _ in range(num_draws):
            tr = poutine.trace(guide).get_trace(*args, **kwargs)
            for n in latent:
                if n not in tr.nodes:
                    raise ValueError(f"inference: the guide has no site {n!r}; SBC ranks every latent site")
                draws[n].append(tr.nodes[n]["value"].detach())
    return {n: torch.stack(v) for n, v in draws.items()}


def _simulate(job: _Job, i: int) -> dict:
    pyro.set_rng_seed(int(job.seeds[i]))
    with poutine.block():
        prior = poutine.trace(job.model).get_trace(*job.model_args, **job.model_kwargs)
    latent, data = _latent_and_data(job, prior)
    truth = {n: prior.nodes[n]["value"].detach() for n in latent}
    model = poutine.condition(job.model, data=data)
    quantities = _Quantities(
        prior, latent, job.observed, job.reference, job.test_quantities, job.model,
        job.model_args, job.model_kwargs, job.log_lik,
    )  # fmt: skip
    L = job.num_draws
    if isinstance(job.inference, MCMCInference):
        samples, divergences = _run_mcmc(job.inference, model, job.model_args, job.model_kwargs)
        missing = [n for n in latent if n not in samples]
        if missing:
            raise ValueError(f"inference: the MCMC run returned no draws of the latent sites {missing}")
        # the autocorrelations of the chain from the site quantities and, when the model
        # evaluates all draws in one vectorised trace, the log-likelihood; else the
        # log-likelihood (one trace per draw) and the user's quantities only for the ranked draws
        params = {n: samples[n] for n in latent}
        site = quantities.site_values(params)
        ll = quantities.log_likelihoods(params, data, loop=False) if quantities.log_lik else None
        chain = site if ll is None else np.concatenate([site, ll[:, None]], -1)
        acf = _autocorrelation(chain, min(chain.shape[0] - 1, max(50, chain.shape[0] // 2)))
        idx = _select(site.shape[0], L, job.thin)
        chosen = {n: v[torch.as_tensor(idx)] for n, v in params.items()}
        cols = [site[idx]]
        if quantities.log_lik:
            cols.append((ll[idx] if ll is not None else quantities.log_likelihoods(chosen, data))[:, None])
        cols.append(quantities.extra_values(chosen, data))
        values = np.concatenate(cols, -1)
    else:
        draws = _run_svi(job.inference, model, job.model_args, job.model_kwargs, latent, L)
        values = quantities(draws, data)
        acf, divergences = None, 0
    true_values = quantities({n: v.unsqueeze(0) for n, v in truth.items()}, data)[0]
    ranks = sbc_ranks(true_values, values)
    return {"ranks": ranks, "names": quantities.names, "acf": acf, "divergences": divergences}


def _simulate_with_context(job: _Job, i: int) -> dict:
    try:
        return _simulate(job, i)
    except Exception as e:
        e.add_note(f"(sbc: in simulation {i}, seed {int(job.seeds[i])})")
        raise


_WORKER_JOB: _Job | None = None


def _init_worker(job: _Job):
    global _WORKER_JOB
    _WORKER_JOB = job
    # one thread per process: the processes are the parallelism (and a forked OpenMP pool is unsafe)
    torch.set_num_threads(1)
    torch.set_default_dtype(job.dtype)
    pyro.enable_validation(job.validation)


def _work(i: int) -> dict:
    return _simulate_with_context(_WORKER_JOB, i)


# --------------------------------------------------------------------------- result


class SBCResult:
    """Ranks of simulation-based calibration (see :func:`sbc`).

    Attributes:
        ranks: ``{quantity: (num_simulations,) int64 array}``, values in ``0..num_draws``.
        num_draws: ``L``, the number of posterior draws each rank is taken among.
        quantities: the quantity names, in order.
        autocorrelation_time: ``{quantity: τ}`` (MCMC only) the integrated
            autocorrelation time of the chains in iterations, from the
            autocorrelations averaged over the simulations (Geyer's initial
            monotone sequence): the site quantities, and ``log_lik`` when the model
            evaluates all draws at once.
        spacing: iterations between consecutive ranked draws of a chain (MCMC);
            the ranked draws are near-independent when ``spacing ≥ τ``.
        divergences: ``(num_simulations,)`` divergent transitions per MCMC run.
        seeds: ``(num_simulations,)`` the seed of each simulation.
    """

    def __init__(self, ranks, num_draws, autocorrelation_time=None, spacing=None, divergences=None, seeds=None):
        self.ranks = {k: np.asarray(v, dtype=np.int64) for k, v in ranks.items()}
        self.quantities = list(self.ranks)
        self.num_draws = int(num_draws)
        n = self.num_simulations
        self.autocorrelation_time = dict(autocorrelation_time or {})
        self.spacing = spacing
        self.divergences = np.zeros(n, dtype=np.int64) if divergences is None else np.asarray(divergences, dtype=np.int64)
        self.seeds = np.asarray(seeds if seeds is not None else np.zeros(n), dtype=np.int64)
        for k, r in self.ranks.items():
            _check_ranks(r, self.num_draws)
            if r.shape != (n,):
                raise ValueError(f"ranks[{k!r}]: expected shape ({n},), got {r.shape}")

    @property
    def num_simulations(self) -> int:
        return len(next(iter(self.ranks.values()))) if self.ranks else 0

    def test(self, method: str = "ecdf") -> dict[str, float]:
        """Per-quantity p-values of uniform ranks: ``"ecdf"`` (:func:`ecdf_uniformity_test`,
        exact) or ``"chi2"`` (:func:`chi2_uniformity_test`, asymptotic)."""
        if method == "ecdf":
            fn = ecdf_uniformity_test
        elif method == "chi2":
            fn = chi2_uniformity_test
        else:
            raise ValueError(f"method must be 'ecdf' or 'chi2', got {method!r}")
        return {k: fn(r, self.num_draws) for k, r in self.ranks.items()}

    def pvalue(self, method: str = "ecdf") -> float:
        """One p-value for all quantities: Bonferroni, ``min(1, Q · min_q p_q)``.

        Valid whatever the dependence between the quantities (the ranks of one
        simulation's quantities are dependent), so ``P(p ≤ a) ≤ a`` under correct
        inference.
        """
        ps = self.test(method)
        return float(min(1.0, len(ps) * min(ps.values()))) if ps else 1.0

    def summary(self):
        """A ``pandas.DataFrame``, one row per quantity: ``mean_rank`` and ``sd_rank`` of
        ``r / L`` (uniform: ``1/2`` and ``√((L+2)/(12 L))``), ``p_ecdf``, ``p_chi2``."""
        import pandas as pd

        p_ecdf, p_chi2 = self.test("ecdf"), self.test("chi2")
        L = self.num_draws
        rows = {
            k: {
                "mean_rank": float(r.mean() / L),
                "sd_rank": float(r.std(ddof=1) / L) if r.size > 1 else float("nan"),
                "p_ecdf": p_ecdf[k],
                "p_chi2": p_chi2[k],
            }
            for k, r in self.ranks.items()
        }
        return pd.DataFrame.from_dict(rows, orient="index")

    def __repr__(self):
        return (
            f"SBCResult({self.num_simulations} simulations, ranks among {self.num_draws} draws, "
            f"{len(self.quantities)} quantities, combined p = {self.pvalue():.3g})"
        )


# --------------------------------------------------------------------------- driver


def _seed_list(seed, n) -> np.ndarray:
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()))
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5BC])
    return np.array([int(c.generate_state(1)[0]) for c in ss.spawn(n)], dtype=np.int64)


def sbc(
    model: Callable,
    inference: MCMCInference | SVIInference,
    num_simulations: int,
    *,
    observed: str | Sequence[str],
    num_draws: int = 100,
    thin: str | int = "auto",
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    reference: Mapping[str, torch.Tensor] | None = None,
    test_quantities: Mapping[str, Callable] | None = None,
    log_likelihood: bool = True,
    num_workers: int = 1,
    mp_context: str | None = None,
    progress: bool = True,
    seed: int | None = None,
) -> SBCResult:
    r"""Simulation-based calibration of ``inference`` on ``model``.

    For each of ``num_simulations`` simulations: draw latents and data from the
    prior predictive (``model(*model_args, **model_kwargs)`` with the
    ``observed`` sites unobserved), condition the model on the simulated data,
    run ``inference``, and rank the true value of each test quantity among
    ``num_draws`` posterior draws (Talts et al. 2018, arXiv:1804.06788; test
    quantities after Modrák et al. 2023, Bayesian Analysis: see the module
    docstring).  Under correct inference every quantity's ranks are uniform on
    ``0..num_draws``; :meth:`SBCResult.test` tests it (Säilynoja, Bürkner &
    Vehtari 2022) and :func:`~dlmppl.diagnostics.plots.plot_sbc` draws the ECDF
    differences with simultaneous bands.

    Args:
        model: a Pyro model whose ``observed`` sites are sampled when it is called
            with ``model_args``/``model_kwargs`` (pass the data as ``None``).
        inference: :class:`MCMCInference` (a kernel factory, one chain per
            simulation) or :class:`SVIInference` (a guide factory and an optimiser;
            the ranked draws are independent guide draws).
        num_simulations: number of simulated data sets ``N``.
        observed: the name(s) of the data sites.
        num_draws: ``L``, posterior draws each rank is taken among.
        thin: MCMC only.  ``"auto"``: the ``L`` draws are spread evenly over the
            chain's ``num_samples`` draws (``num_samples / L`` iterations apart);
            an integer ``t``: every ``t``-th draw, the last ``L`` of them (needs
            ``num_samples ≥ t (L - 1) + 1``).  Either way a warning says when the
            chains' integrated autocorrelation time (pooled over the simulations,
            :attr:`SBCResult.autocorrelation_time`) exceeds the spacing (Talts et
            al. 2018, section 5: thin to about the effective sample size).
        reference: ``{manifold site: point}``, the reference point of its
            distance and tangent-coordinate quantities (default
            :func:`default_reference`).
        test_quantities: extra quantities ``{name: fn(params, data) -> scalar}``,
            ``params`` one draw ``{latent site: value}``, ``data`` ``{observed site: value}``.
        log_likelihood: include ``"log_lik"``, ``Σ log p(ỹ | θ)`` over the observed sites.
        num_workers: processes running simulations in parallel (chunks of
            simulations; ``1``: in this process).  Each simulation has its own
            seed, so the ranks do not depend on ``num_workers``.
        mp_context: ``"fork"`` (default where available: the model and factories
            need not be picklable) or ``"spawn"``/``"forkserver"`` (they must be).
        progress: show a progress bar (tqdm; a few log lines when stderr is not a terminal).
        seed: base seed; simulation ``i`` runs after ``pyro.set_rng_seed`` of a
            seed derived from ``(seed, i)``.  ``None``: drawn from torch's
            generator, so ``pyro.set_rng_seed`` before the call reproduces it.
            The global random state is restored afterwards.

    Returns:
        :class:`SBCResult` with ``ranks`` ``{quantity: (num_simulations,)}``.

    Example::

        def model(n=10, obs=None):
            mu = pyro.sample("mu", ManifoldUniform(Sphere(), (3,)))
            with pyro.plate("data", n):
                pyro.sample("obs", VonMisesFisher(mu, torch.tensor(5.0)), obs=obs)

        inference = MCMCInference(lambda m: RiemannianNUTS(m), num_samples=200, warmup_steps=200)
        result = sbc(model, inference, 200, observed="obs", num_draws=20, num_workers=4)
        result.summary()        # per-quantity rank means and p-values
        result.pvalue()         # one p-value, Bonferroni over the quantities
        plot_sbc(result)        # ECDF differences with simultaneous bands
    """
    _check_int("num_simulations", num_simulations)
    _check_int("num_draws", num_draws)
    _check_int("num_workers", num_workers)
    observed = (observed,) if isinstance(observed, str) else tuple(observed)
    if not observed or not all(isinstance(o, str) for o in observed):
        raise ValueError(f"observed: expected the name(s) of the data sites, got {observed!r}")
    if isinstance(inference, MCMCInference):
        n = int(inference.num_samples)
        if thin == "auto":
            if n < num_draws:
                raise ValueError(f"num_draws: {num_draws} ranked draws need num_samples >= {num_draws}, got {n}")
        elif isinstance(thin, (int, np.integer)) and not isinstance(thin, bool) and thin >= 1:
            if n < int(thin) * (num_draws - 1) + 1:
                raise ValueError(
                    f"thin: {num_draws} draws every {thin} need num_samples >= {int(thin) * (num_draws - 1) + 1}, got {n}"
                )
        else:
            raise ValueError(f"thin must be 'auto' or a positive integer, got {thin!r}")
    elif not isinstance(inference, SVIInference):
        raise ValueError(
            f"inference: expected MCMCInference(kernel_factory, num_samples, ...) or SVIInference(...), "
            f"got {type(inference).__name__}"
        )
    from pyro.infer.util import is_validation_enabled

    seeds = _seed_list(seed, int(num_simulations))
    rng_state = pyro.util.get_rng_state()  # after the base seed was drawn from it
    job = _Job(
        model=model,
        inference=inference,
        model_args=tuple(model_args),
        model_kwargs=dict(model_kwargs or {}),
        observed=observed,
        num_draws=int(num_draws),
        thin=thin,
        reference=dict(reference) if reference is not None else None,
        test_quantities=dict(test_quantities) if test_quantities is not None else None,
        log_lik=bool(log_likelihood),
        seeds=seeds,
        dtype=torch.get_default_dtype(),
        validation=is_validation_enabled(),
    )
    store = pyro.get_param_store()
    param_state = store.get_state() if isinstance(inference, SVIInference) else None
    results = [None] * int(num_simulations)
    try:
        if num_workers == 1:
            from .._progress import progress_bar

            with progress_bar(total=int(num_simulations), desc="SBC", disable=not progress) as bar:
                for i in range(int(num_simulations)):
                    results[i] = _simulate_with_context(job, i)
                    bar.update()
        else:
            results = _run_parallel(job, int(num_simulations), int(num_workers), mp_context, progress)
    finally:
        pyro.util.set_rng_state(rng_state)
        if param_state is not None:  # the user's parameters, and only those
            store.clear()
            store.set_state(param_state)
    names = results[0]["names"]
    ranks = {k: np.array([r["ranks"][j] for r in results], dtype=np.int64) for j, k in enumerate(names)}
    div = np.array([r["divergences"] for r in results], dtype=np.int64)
    iat, spacing = {}, None
    if isinstance(inference, MCMCInference):
        n = int(inference.num_samples)
        spacing = n / num_draws if thin == "auto" else float(thin)
        # one short chain says little about its autocorrelation; the simulations' chains share
        # the sampler and model, so their autocorrelations are averaged before τ is read off
        tau, se = _pooled_iat(np.stack([r["acf"] for r in results]), n)
        iat = {names[j]: float(t) for j, t in enumerate(tau)}
        # warn when τ exceeds the spacing by more than three standard errors (i.i.d. draws: τ = 1)
        slow = {names[j]: float(t) for j, t in enumerate(tau) if t - 3 * se[j] > spacing}
        if slow:
            worst = max(slow, key=slow.get)
            warnings.warn(
                f"sbc: the ranked draws are {spacing:g} iterations apart but the chains' integrated "
                f"autocorrelation time is larger for {sorted(slow)} (largest: {worst}, τ = {slow[worst]:.3g}): "
                "autocorrelated draws make the ranks non-uniform even for a correct sampler; "
                f"raise num_samples to at least {math.ceil(slow[worst] * num_draws)} or lower num_draws",
                stacklevel=2,
            )
        if div.sum():
            warnings.warn(
                f"sbc: {int((div > 0).sum())} of {num_simulations} chains had divergent transitions ({int(div.sum())} in all)",
                stacklevel=2,
            )
    return SBCResult(ranks, num_draws, autocorrelation_time=iat, spacing=spacing, divergences=div, seeds=seeds)


def _run_parallel(job, n, num_workers, mp_context, progress):
    from .._progress import progress_bar

    methods = multiprocessing.get_all_start_methods()
    if mp_context is None:
        mp_context = "fork" if "fork" in methods else "spawn"
    if mp_context not in methods:
        raise ValueError(f"mp_context: {mp_context!r} is not available here (available: {methods})")
    if mp_context != "fork":
        import pickle

        try:
            pickle.dumps(job)
        except Exception as e:  # noqa: BLE001 - any pickling failure
            raise ValueError(
                f"mp_context={mp_context!r} needs a picklable model, inference and test quantities "
                f"(module-level functions, no lambdas): {e}; use mp_context='fork' or num_workers=1"
            ) from e
    ctx = multiprocessing.get_context(mp_context)
    # small chunks: simulations cost seconds, a task's round trip milliseconds; small chunks
    # balance the load and keep the progress bar moving
    chunk = max(1, min(4, n // (8 * num_workers)))
    results = []
    # the pool (and its forks) before the progress bar's monitor thread
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(job,)) as pool:
        it = pool.imap(_work, range(n), chunksize=chunk)
        with progress_bar(total=n, desc=f"SBC ({num_workers} processes)", disable=not progress) as bar:
            for r in it:
                results.append(r)
                bar.update()
    return results
