r"""Statistical assertions with a stated false-alarm rate (DESIGN.md, "Statistical tests").

Every ``assert_*`` here fails a *correct* implementation with probability at most
:data:`ALPHA` (``1e-4``) by construction, under the assumptions stated in its
docstring, while a deliberately broken implementation still fails it (each test
module keeps a "test of the test" beside its statistical tests).  No test writes its
own threshold on a single p-value: they call these.

Randomness.  :func:`base_seed` reads the environment variable ``DLMPPL_TEST_SEED``
(default 0); the autouse fixture of ``tests/conftest.py`` seeds torch, numpy and
``random`` with ``seed(0)`` before every test, and tests that need more streams (a
scipy reference sampler, independent replicates) take them from :func:`seed`.  So
``DLMPPL_TEST_SEED=7 pytest -m statistical`` re-runs every statistical test on fresh
random numbers, which is what ``benchmarks/calibration.py`` does over 20 seeds.

The building blocks:

* :func:`energy_test`: the two-sample energy-distance permutation test (Székely &
  Rizzo 2004) with a sequential Monte Carlo p-value (Besag & Clifford 1991), exact
  for exchangeable samples: ``P(p ≤ a) ≤ a`` for every ``a``;
* :func:`thin`: thinning of MCMC draws by ``2τ``, ``τ`` the integrated
  autocorrelation time ``N / ESS`` from arviz's rank-normalised bulk ESS (Vehtari et
  al. 2021), the largest over coordinates, so that the kept draws are close to
  independent and a permutation test applies to them;
* :func:`fisher` / :func:`assert_pvalues`: a combined decision over independent
  replicates (several seeds, several chains): Fisher's ``-2 Σ log p ~ χ²_{2R}``,
  conservative for super-uniform (permutation) p-values;
* :func:`assert_same_law`, :func:`assert_ks`, :func:`assert_mean`,
  :func:`assert_mc_estimate`: the assertions the tests use;
* :func:`assert_mc_bound` (one-sided), :func:`assert_cdf_at` (a chain's CDF at
  known quantiles, through :func:`assert_mean` on indicators), :func:`assert_rate`
  (exact binomial test of an event rate);
* :func:`majority`: a vote over independent seeds for outcomes that have no exact
  false-alarm rate (optimisation results): its false alarm is
  :func:`majority_false_alarm` of the measured per-seed failure rate.

Several assertions in one test function share its ``ALPHA``: pass
``alpha=ALPHA / m`` to each of ``m`` assertions (Bonferroni).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import pyro
import torch
from scipy import stats as _stats

__all__ = [
    "ALPHA",
    "ESS_SLACK",
    "base_seed",
    "seed",
    "with_seed",
    "replicates",
    "energy_statistic",
    "energy_test",
    "iat",
    "ess",
    "thin",
    "fisher",
    "assert_pvalues",
    "assert_same_law",
    "assert_ks",
    "assert_mean",
    "assert_mc_estimate",
    "assert_mc_bound",
    "assert_cdf_at",
    "binomial_pvalue",
    "assert_rate",
    "majority",
    "majority_false_alarm",
    "z_bound",
]

ALPHA = 1e-4
"""False-alarm rate of every assertion of this module (per test function)."""

ESS_SLACK = 1.5
"""How far an ESS estimate may overshoot the truth with the false-alarm rate still
held: Monte Carlo standard errors are widened by ``√ESS_SLACK``."""


# ----------------------------------------------------------------------------- seeds


def base_seed() -> int:
    """The run's base seed, ``DLMPPL_TEST_SEED`` (default 0)."""
    return int(os.environ.get("DLMPPL_TEST_SEED", "0"))


def seed(i: int = 0) -> int:
    """The ``i``-th seed of this run: ``1000 · base_seed() + i``.

    Streams of different base seeds do not overlap for ``i < 1000``, so the 20 runs
    of the calibration are independent.
    """
    return 1000 * base_seed() + int(i)


def with_seed(i: int, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` after ``pyro.set_rng_seed(seed(i))`` (torch, numpy, random)."""
    pyro.set_rng_seed(seed(i))
    return fn(*args, **kwargs)


def replicates(fn: Callable[[int], object], n: int = 3, offset: int = 100) -> list:
    """``[fn(i) for i in range(n)]``, each call after ``pyro.set_rng_seed(seed(offset + i))``.

    Independent replicates of a random experiment for a combined decision
    (:func:`assert_pvalues`).  ``fn`` receives the replicate's index.
    """
    return [with_seed(offset + i, fn, i) for i in range(n)]


# ----------------------------------------------------------------------------- energy test


def _flat(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x.reshape(x.shape[0], -1).double()


def energy_statistic(x, y) -> float:
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (V-statistic) of two samples."""
    x, y = _flat(x), _flat(y)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def energy_test(x, y, max_permutations: int = 9999, min_exceedances: int = 20, chunk: int = 250,
                generator: torch.Generator | None = None) -> float:
    r"""p-value of the energy-distance permutation test of "``x`` and ``y`` have one law".

    ``x``: ``(n, ...)``, ``y``: ``(m, ...)`` (each draw flattened; ambient coordinates of
    manifold points are fine: the energy distance characterises laws on ``R^D``).  The
    draws of each sample must be exchangeable (independent; thin MCMC draws with
    :func:`thin` first).

    Sequential Monte Carlo p-value (Besag & Clifford 1991): permutations are drawn in
    chunks until ``min_exceedances`` of them reach the observed statistic (then
    ``p = h / L`` after ``L`` permutations with ``h`` exceedances) or until
    ``max_permutations`` (then ``p = (g + 1)/(max_permutations + 1)``).  Either way
    ``P(p ≤ a) ≤ a`` under the null, and the smallest p-value is
    ``1/(max_permutations + 1)`` = 1e-4 by default.  Large p-values stop after a few
    hundred permutations.  The permuted statistics are computed from one distance
    matrix ``D`` by ``sᵀDs`` for label vectors ``s`` (a matrix product per chunk).
    """
    x, y = _flat(x), _flat(y)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"energy_test: need at least 2 draws per sample, got {n} and {m}")
    z = torch.cat([x, y])
    big_n = n + m
    d = torch.cdist(z, z)
    row = d.sum(1)
    total = row.sum()

    def stats(s):  # s: (B, N) 0/1 labels of the first sample
        t = ((s @ d) * s).sum(-1)  # Σ_{a,a'} D
        u = s @ row  # Σ_{a, all} D
        return 2 * (u - t) / (n * m) - t / n**2 - (total - 2 * u + t) / m**2

    s0 = torch.zeros(1, big_n, dtype=d.dtype)
    s0[0, :n] = 1
    obs = float(stats(s0)[0]) * (1 - 1e-12) - 1e-15  # ties (rounding) count as exceedances
    exceed, done = 0, 0
    while done < max_permutations:
        b = min(chunk, max_permutations - done)
        keys = torch.rand(b, big_n, generator=generator, dtype=torch.float64)
        s = (keys.argsort(-1) < n).to(d.dtype)
        st = stats(s)
        hits = (st >= obs).cumsum(0)
        if int(hits[-1]) + exceed >= min_exceedances:
            stop = int(torch.nonzero(hits + exceed >= min_exceedances)[0, 0]) + 1
            return min_exceedances / (done + stop)
        exceed += int(hits[-1])
        done += b
    return (exceed + 1) / (max_permutations + 1)


# ----------------------------------------------------------------------------- autocorrelation


def _chains(draws, chains: bool) -> np.ndarray:
    """``(C, N, K)`` float64 array of draws (``C`` chains, ``K`` flattened coordinates)."""
    a = torch.as_tensor(draws).detach().double().cpu().numpy()
    if not chains:
        a = a[None]
    return a.reshape(a.shape[0], a.shape[1], -1)


def ess(draws, chains: bool = False) -> np.ndarray:
    """Bulk ESS (arviz, rank-normalised split-R̂ ESS) of every coordinate, shape ``(K,)``.

    ``draws``: ``(N, ...)``, or ``(C, N, ...)`` with ``chains=True``.
    """
    import arviz as az

    a = _chains(draws, chains)
    out = np.empty(a.shape[-1])
    for k in range(a.shape[-1]):
        col = a[..., k]
        out[k] = a.shape[0] * a.shape[1] if np.ptp(col) == 0 else float(az.ess(col, method="bulk"))
    return out


def iat(draws, chains: bool = False) -> float:
    """Integrated autocorrelation time ``τ = draws / ESS``, the largest over coordinates (≥ 1)."""
    a = _chains(draws, chains)
    return max(1.0, float(a.shape[0] * a.shape[1] / ess(draws, chains).min()))


def thin(draws, chains: bool = False, factor: float = 2.0) -> torch.Tensor:
    """Every ``⌈factor · τ⌉``-th draw of each chain (:func:`iat`), chains concatenated.

    ``draws``: ``(N, ...)`` or ``(C, N, ...)`` with ``chains=True``; returns
    ``(N', ...)``.  With ``factor = 2`` the lag-1 autocorrelation left is that of lag
    ``2τ`` of the chain (about ``e^{-4}`` for an AR(1) chain), small enough for the
    permutation tests' exchangeability.
    """
    draws = torch.as_tensor(draws)
    step = int(math.ceil(factor * iat(draws, chains)))
    if chains:
        return draws[:, ::step].reshape((-1,) + tuple(draws.shape[2:]))
    return draws[::step]


# ----------------------------------------------------------------------------- decisions


def fisher(pvalues: Sequence[float]) -> float:
    """Fisher's combined p-value of independent p-values: ``P(χ²_{2R} ≥ -2 Σ log p)``.

    Conservative (still a valid p-value) when each ``p`` is super-uniform, as
    permutation and KS p-values are.
    """
    ps = np.clip(np.asarray(pvalues, dtype=float), 1e-300, 1.0)
    return float(_stats.chi2.sf(-2 * np.log(ps).sum(), 2 * len(ps)))


def assert_pvalues(pvalues: Sequence[float] | float, what: str = "", alpha: float = ALPHA) -> float:
    """Fail iff the Fisher combination of the (independent) p-values is at most ``alpha``.

    One p-value is its own combination.  Returns the combined p-value.
    """
    ps = [float(pvalues)] if np.isscalar(pvalues) else [float(p) for p in pvalues]
    p = ps[0] if len(ps) == 1 else fisher(ps)
    # reject iff p ≤ alpha: valid since P(p ≤ a) ≤ a (the 1e-9 absorbs the rounding of chi2.sf)
    assert p > alpha * (1 + 1e-9), f"{what}: combined p = {p:.3g} ≤ {alpha:g} (p-values {[f'{q:.3g}' for q in ps]})"
    return p


def assert_same_law(x, y, *, x_chain: bool = False, chains: bool = False, what: str = "draws",
                    alpha: float = ALPHA, min_draws: int = 100) -> float:
    """Assert that ``x`` and ``y`` are draws of one law (energy test, false alarm ``alpha``).

    ``x_chain=True``: ``x`` are MCMC draws (``(N, ...)``, or ``(C, N, ...)`` with
    ``chains=True``), thinned by :func:`thin` first; ``y`` are independent draws
    (exact sampler), of which as many as the thinned ``x`` are used.  Fails too when
    fewer than ``min_draws`` draws remain after thinning (the test would have no
    power).  Returns the p-value.

    The permutation budget is at least ``1/alpha - 1``: the smallest p-value of
    :func:`energy_test` is ``1/(max_permutations + 1)``, so with the default budget an
    ``alpha`` below 1e-4 (a Bonferroni share of ``ALPHA``) could never reject.  The larger
    budget costs time only when the p-value is small (sequential stopping otherwise).
    """
    if x_chain:
        x = thin(x, chains=chains)
    n = min(len(x), len(y))
    assert n >= min_draws, f"{what}: only {n} independent draws after thinning (need {min_draws})"
    p = energy_test(x[:n], y[:n], max_permutations=max(9999, math.ceil(1 / alpha) - 1))
    assert_pvalues([p], what, alpha)
    return p


def assert_ks(x, cdf, *, x_chain: bool = False, chains: bool = False, what: str = "draws",
              alpha: float = ALPHA, min_draws: int = 100) -> float:
    """One-sample Kolmogorov–Smirnov test of 1-d draws against ``cdf`` (exact p-value).

    MCMC draws (``x_chain=True``) are thinned first (:func:`thin`).  Returns the p-value.
    """
    x = torch.as_tensor(x)
    if x_chain:
        x = thin(x, chains=chains)
    x = x.reshape(-1).double().cpu().numpy()
    assert len(x) >= min_draws, f"{what}: only {len(x)} independent draws after thinning (need {min_draws})"
    p = float(_stats.kstest(x, cdf).pvalue)
    assert_pvalues([p], what, alpha)
    return p


def z_bound(alpha: float = ALPHA, m: int = 1) -> float:
    """The two-sided normal quantile for ``m`` simultaneous comparisons: ``Φ⁻¹(1 - α/(2m))``."""
    return float(_stats.norm.isf(alpha / (2 * m)))


def assert_mean(draws, truth, *, chains: bool = False, iid: bool = False, what: str = "mean",
                alpha: float = ALPHA, max_mcse: float | None = None) -> None:
    r"""Assert ``|mean(draws) - truth| ≤ k · MCSE`` for every coordinate.

    ``draws``: ``(N, ...)`` (``(C, N, ...)`` with ``chains=True``); ``truth``
    broadcasts with one draw.  MCSE ``= sd / √ESS`` with arviz's bulk ESS
    (``ESS = N`` when ``iid=True``), and ``k = √ESS_SLACK · Φ⁻¹(1 - α/(2K))`` over the
    ``K`` coordinates (Bonferroni): the false alarm stays below ``alpha`` as long as
    the CLT holds and no ESS is overestimated by more than :data:`ESS_SLACK`.
    ``max_mcse``: also require every MCSE below it, so that the test has power.
    """
    a = _chains(draws, chains)
    flat = a.reshape(-1, a.shape[-1])
    n = flat.shape[0]
    eff = np.full(a.shape[-1], float(n)) if iid else ess(draws, chains)
    sd = flat.std(0, ddof=1)
    mcse = sd / np.sqrt(np.maximum(eff, 1.0))
    mean = flat.mean(0)
    t = np.broadcast_to(torch.as_tensor(truth, dtype=torch.float64).cpu().numpy(), (torch.as_tensor(draws).shape[2 if chains else 1:])).reshape(-1)
    k = math.sqrt(ESS_SLACK) * z_bound(alpha, a.shape[-1])
    err = np.abs(mean - t)
    bad = err > k * mcse + 1e-12 * np.abs(t)
    assert not bad.any(), (
        f"{what}: |mean - truth| = {err[bad]} > {k:.2f} MCSE = {k * mcse[bad]} (means {mean[bad]}, truth {t[bad]}, ESS {eff[bad]})"
    )
    if max_mcse is not None:
        assert (mcse <= max_mcse).all(), f"{what}: MCSE {mcse.max():.3g} > {max_mcse:g}: too few draws for the test to have power"


def _as64(*xs):
    # Python floats straight to float64 (torch.as_tensor alone would round them to float32)
    return torch.broadcast_tensors(*(x.detach().to(device="cpu", dtype=torch.float64) if torch.is_tensor(x)
                                     else torch.as_tensor(np.asarray(x, dtype=np.float64)) for x in xs))


def assert_mc_estimate(estimate, stderr, target, *, what: str = "Monte Carlo estimate", alpha: float = ALPHA,
                       max_stderr: float | None = None, atol: float = 0.0) -> None:
    r"""Assert ``|estimate - target| ≤ k · stderr + atol`` elementwise for a Monte Carlo mean.

    ``estimate`` and ``stderr`` (its standard error from the same draws) broadcast with
    ``target``; ``k = √ESS_SLACK · Φ⁻¹(1 - α/(2K))`` over the ``K`` elements, so a
    correct estimate fails with probability below ``alpha`` (CLT; the slack covers an
    underestimated standard error by up to 18%).  ``max_stderr``: also require every
    standard error below it (power).  ``atol``: a deterministic error the target or the
    estimate may carry besides the Monte Carlo error (quadrature, float32 rounding,
    a finite-difference step); state where it comes from at the call.
    """
    est, se, tgt = _as64(estimate, stderr, target)
    k = math.sqrt(ESS_SLACK) * z_bound(alpha, max(est.numel(), 1))
    assert torch.isfinite(est).all() and torch.isfinite(se).all(), f"{what}: non-finite estimate {est} ± {se}"
    bad = (est - tgt).abs() > k * se + atol
    assert not bad.any(), f"{what}: {est[bad].tolist()} vs {tgt[bad].tolist()}, more than {k:.2f} standard errors {se[bad].tolist()}"
    if max_stderr is not None:
        assert (se <= max_stderr).all(), f"{what}: standard error {float(se.max()):.3g} > {max_stderr:g}: too few draws for power"


def assert_mc_bound(estimate, stderr, *, lower=None, upper=None, what: str = "Monte Carlo estimate",
                    alpha: float = ALPHA, atol: float = 0.0) -> None:
    r"""One-sided: assert ``estimate ≥ lower - k · stderr - atol`` (and/or ``≤ upper + k · stderr + atol``).

    For a claim "the expectation is at least ``lower``" (e.g. an importance-weighted
    bound that must not decrease with more particles): a correct estimate fails with
    probability below ``alpha`` (CLT), ``k = √ESS_SLACK · Φ⁻¹(1 - α/K)`` over the ``K``
    elements and sides.  To also demand power (a significant difference), call it with
    the bound on the other side and a measured effect of several ``k · stderr``.
    """
    assert lower is not None or upper is not None, "assert_mc_bound: give lower and/or upper"
    est, se = _as64(estimate, stderr)
    sides = (lower is not None) + (upper is not None)
    k = math.sqrt(ESS_SLACK) * float(_stats.norm.isf(alpha / (sides * max(est.numel(), 1))))
    assert torch.isfinite(est).all() and torch.isfinite(se).all(), f"{what}: non-finite estimate {est} ± {se}"
    if lower is not None:
        _, lo = _as64(est, lower)
        bad = est < lo - k * se - atol
        assert not bad.any(), f"{what}: {est[bad].tolist()} below {lo[bad].tolist()} by more than {k:.2f} standard errors {se[bad].tolist()}"
    if upper is not None:
        _, hi = _as64(est, upper)
        bad = est > hi + k * se + atol
        assert not bad.any(), f"{what}: {est[bad].tolist()} above {hi[bad].tolist()} by more than {k:.2f} standard errors {se[bad].tolist()}"


def assert_cdf_at(draws, points, levels, *, chains: bool = False, iid: bool = False, what: str = "CDF",
                  alpha: float = ALPHA, max_mcse: float | None = None) -> None:
    r"""Assert that the draws' CDF at ``points`` is ``levels`` (a quantile check with MCSE).

    ``draws``: ``(N,)`` scalars (``(C, N)`` with ``chains=True``), MCMC or ``iid``;
    ``points``: ``(J,)`` the true ``levels``-quantiles of the target.  The indicators
    ``1{x ≤ points_j}`` have mean ``levels_j``; :func:`assert_mean` checks them with their
    own ESS (Bonferroni over ``J``), which is the MCSE of a quantile estimate
    (Vehtari et al. 2021, §4.3) without a density estimate.
    """
    x = torch.as_tensor(draws).detach().double().cpu()
    pts = torch.as_tensor(points, dtype=torch.float64)
    ind = (x[..., None] <= pts).double()
    assert_mean(ind, torch.as_tensor(levels, dtype=torch.float64), chains=chains, iid=iid, what=what, alpha=alpha,
                max_mcse=max_mcse)


def binomial_pvalue(count: int, n: int, *, at_most: float | None = None, at_least: float | None = None) -> float:
    """Exact one-sided binomial p-value of ``count`` events in ``n`` independent trials.

    ``at_most=p``: H0 "the event rate is at most ``p``", p-value ``P(Bin(n, p) ≥ count)``;
    ``at_least=p``: H0 "at least ``p``", ``P(Bin(n, p) ≤ count)``.
    """
    if (at_most is None) == (at_least is None):
        raise ValueError("binomial_pvalue: give exactly one of at_most, at_least")
    if at_most is not None:
        return float(_stats.binom.sf(count - 1, n, at_most))
    return float(_stats.binom.cdf(count, n, at_least))


def assert_rate(count: int, n: int, *, at_most: float | None = None, at_least: float | None = None,
                what: str = "event rate", alpha: float = ALPHA) -> float:
    """Assert an event rate bound by the exact binomial test (:func:`binomial_pvalue`).

    Assumes independent trials (independent draws, or MCMC draws thinned with :func:`thin`).
    """
    p = binomial_pvalue(int(count), int(n), at_most=at_most, at_least=at_least)
    bound = f"≤ {at_most}" if at_most is not None else f"≥ {at_least}"
    assert p > alpha * (1 + 1e-9), f"{what}: {count}/{n} events, rate {bound} rejected (p = {p:.3g})"
    return p


def majority_false_alarm(q: float, n: int, need: int) -> float:
    """``P(fewer than need successes of n)`` when each seed fails independently with probability ``q``."""
    return float(_stats.binom.sf(n - need, n, q))


def majority(fn: Callable[[int], bool], n: int, need: int, *, offset: int = 200, what: str = "outcome") -> list:
    r"""Run ``fn(i)`` on up to ``n`` independent seeds (``seed(offset + i)``) and assert ``need`` of them succeed.

    For outcomes with no exact false-alarm rate (the result of an optimisation): with a
    per-seed failure rate ``q`` measured over many seeds, the test fails with
    probability :func:`majority_false_alarm` ``(q, n, need)`` (e.g. ``q = 0.05``, 2 of 3:
    7e-3; 3 of 5: 1.2e-3; 4 of 5: 2.3e-2...).  The runs stop as soon as the decision is
    known (2 of 3 costs two runs unless they disagree).  ``fn`` returns a bool (or a
    ``(bool, value)`` pair, the value reported on failure) and must start from scratch
    (clear Pyro's param store if it trains a model).  Returns the outcomes run.
    """
    outs, wins = [], 0
    for i in range(n):
        if wins >= need or (i - wins) > n - need:
            break
        o = with_seed(offset + i, fn, i)
        outs.append(o)
        wins += bool(o[0]) if isinstance(o, tuple) else bool(o)
    assert wins >= need, f"{what}: {wins} of {len(outs)} seeds run succeeded (need {need} of {n}): {outs}"
    return outs
