"""The arviz 0.x / 1.x compatibility layer (dlmppl.diagnostics._compat): the same numbers and
the same figures under both APIs.  CI runs this file under arviz 0.x (Python 3.11) and
arviz 1.x (Python 3.12); each test checks against a reference that does not come from the
function under test."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.special  # noqa: E402
import torch  # noqa: E402

import dlmppl.diagnostics as D  # noqa: E402
from dlmppl.diagnostics import _compat  # noqa: E402
from dlmppl.diagnostics import plots as P  # noqa: E402

az = _compat.az


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _idata(C=2, N=400, seed=0):
    g = np.random.default_rng(seed)
    draws = {"mu": torch.as_tensor(g.normal(1.0, 0.5, (C, N))), "sigma": torch.as_tensor(g.gamma(4.0, 0.5, (C, N)))}
    div = np.zeros((C, N), bool)
    div[0, [5, 50]] = True
    return D.to_inference_data(draws, sample_stats={"diverging": div}), draws


def _lines(ax):
    return [(np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)) for ln in ax.get_lines()]


def _is_density_panel(ax, draws):
    """Every long line on ax is a density: non-negative, integrating to 1, spanning the draws."""
    lines = [(x, y) for x, y in _lines(ax) if x.size > 20]
    if not lines:
        return False
    for x, y in lines:
        if (y < 0).any() or abs(np.trapezoid(y, x) - 1) > 0.03:
            return False
        if x.min() > np.quantile(draws, 0.01) or x.max() < np.quantile(draws, 0.99):
            return False
    return True


def _is_trace_panel(ax, draws):
    """Each chain's draws appear on ax as one line, in order."""
    ys = [y for _, y in _lines(ax)]
    return all(any(y.size == row.size and np.allclose(y, row) for y in ys) for row in draws)


def test_plot_trace_draws_density_and_trace(tmp_path):
    # arviz 1.x's az.plot_trace draws traces only; dl's plot_trace promises density panels too
    idata, draws = _idata()
    out = P.plot_trace(idata, var_names=["mu", "sigma"], path=tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 2000
    axes = _compat.figure_of(out).axes
    for name in ("mu", "sigma"):
        x = draws[name].numpy()
        assert sum(_is_density_panel(ax, x) for ax in axes) == 1, name
        assert sum(_is_trace_panel(ax, x) for ax in axes) == 1, name


def test_plot_trace_on_given_axes(tmp_path):
    # arviz-plots rejects matplotlib axes=; the compat layer draws on them under 1.x
    idata, draws = _idata()
    fig, axes = plt.subplots(2, 2, figsize=(8, 5))
    out = P.plot_trace(idata, var_names=["mu", "sigma"], axes=axes, path=tmp_path / "trace_axes.png")
    assert _compat.figure_of(out) is fig
    for row, name in enumerate(("mu", "sigma")):
        x = draws[name].numpy()
        assert _is_density_panel(axes[row, 0], x) and not _is_density_panel(axes[row, 1], x)
        assert _is_trace_panel(axes[row, 1], x)
    if _compat.ARVIZ_1:
        with pytest.raises(ValueError, match="axes must have shape"):
            P.plot_trace(idata, var_names=["mu", "sigma"], axes=axes[:1])
        with pytest.raises(ValueError, match="compact"):
            P.plot_trace(idata, var_names=["mu"], axes=axes[:1], compact=False)


def _loo_idata(S=2000, n=12, seed=3):
    """One chain (arviz takes r_eff = 1 then) of a conjugate normal posterior and its log-likelihood."""
    g = np.random.default_rng(seed)
    y = g.normal(0.7, 1.0, n)
    v = 1.0 / (1 / 25 + n)
    mu = g.normal(v * y.sum(), np.sqrt(v), S)
    ll = -0.5 * (y[None] - mu[:, None]) ** 2 - 0.5 * np.log(2 * np.pi)
    idata = _compat.from_dict({"posterior": {"mu": mu[None]}, "log_likelihood": {"obs": ll[None]},
                               "observed_data": {"obs": y}})
    return idata, ll


def test_loo_same_numbers_under_both_apis():
    # reference: PSIS-LOO by its definition (Vehtari, Gelman & Gabry 2017, eqs. 10, 4): Pareto-smoothed
    # weights of the ratios 1/p(y_i | θ_s), elpd_i = log Σ_s w_is p(y_i | θ_s), p_loo = lppd - elpd_loo
    idata, ll = _loo_idata()
    n = ll.shape[1]
    lw, k = D.psislw(-ll.T)  # (n, S), normalised
    elpd_i = scipy.special.logsumexp(lw + ll.T, axis=-1)
    lppd = (scipy.special.logsumexp(ll, axis=0) - np.log(ll.shape[0])).sum()
    res = _compat.loo(idata, pointwise=True)
    np.testing.assert_allclose(res["loo_i"], elpd_i, rtol=1e-9)
    np.testing.assert_allclose(res["pareto_k"], k, rtol=1e-9)
    np.testing.assert_allclose(res["elpd_loo"], elpd_i.sum(), rtol=1e-9)
    np.testing.assert_allclose(res["p_loo"], lppd - elpd_i.sum(), rtol=1e-7)
    # se = sqrt(n) sd(elpd_i): the population sd in arviz 0.x, the sample sd (ddof 1) in 1.x
    np.testing.assert_allclose(res["se"], np.sqrt(n * elpd_i.var(ddof=int(_compat.ARVIZ_1))), rtol=1e-7)
    assert set(_compat.loo(idata)) == {"elpd_loo", "se", "p_loo"}


@pytest.mark.parametrize("kind", ["normal", "heavy"])
def test_psislw_unnormalised(kind):
    """``normalize=False``, which arviz 1.x lacks: the raw log weights below the smoothed tail are
    kept, and the result differs from the normalised weights by its log-sum-exp."""
    g = torch.Generator().manual_seed(1)
    S = 3000
    lw = torch.randn(S, generator=g, dtype=torch.float64) * 1.3
    if kind == "heavy":
        lw = 0.9 * -torch.rand(S, generator=g, dtype=torch.float64).log()
    x = lw.numpy()
    ours, k = D.psislw(lw)
    raw, k2 = D.psislw(lw, normalize=False)
    assert k2 == k
    m = int(np.ceil(min(S / 5, 3 * np.sqrt(S))))
    body = np.argsort(x)[: S - m - 1]  # below the tail's threshold: untouched by the smoothing
    np.testing.assert_allclose(raw[body], x[body], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(raw - ours, scipy.special.logsumexp(raw), rtol=1e-12)


def test_arviz_only_through_compat_and_ci_subset_exists():
    # every arviz call of the package goes through _compat, so the 1.x job's subset can cover them all
    root = Path(__file__).resolve().parents[2]
    direct = [str(p.relative_to(root)) for p in (root / "dlmppl").rglob("*.py")
              if p.name != "_compat.py" and re.search(r"^\s*(import arviz|from arviz)", p.read_text(), re.M)]
    assert direct == [], f"import arviz outside dlmppl/diagnostics/_compat.py: {direct}"
    lines = [ln.split("#")[0].strip() for ln in (root / "tests" / "ARVIZ_PATHS.txt").read_text().splitlines()]
    for arg in filter(None, lines):
        assert (root / arg.split("::")[0]).exists(), arg
