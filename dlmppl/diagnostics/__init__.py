"""Diagnostics: arviz InferenceData for manifold draws, manifold-aware R-hat/ESS, PSIS,
simulation-based calibration (:mod:`.sbc`), plots.

Plotting functions live in :mod:`dlmppl.diagnostics.plots` and, for manifold
sites in intrinsic coordinates (trace, rank, posterior predictive),
:mod:`dlmppl.diagnostics.manifold_plots` (both imported lazily, so that
importing the statistics does not import matplotlib).
"""

import importlib

from .convert import log_likelihood, manifold_attrs, manifold_from_attrs, to_inference_data
from .sbc import (
    MCMCInference,
    SBCResult,
    SVIInference,
    chi2_uniformity_test,
    default_reference,
    ecdf_band,
    ecdf_uniformity_test,
    sbc,
    sbc_ranks,
)
from .stats import (
    frechet_mean,
    manifold_diagnostics,
    pareto_khat,
    psis_diagnostic,
    psislw,
    summary,
    tangent_basis,
    tangent_coordinates,
)

_PLOTS = (
    "plot_trace",
    "plot_rank",
    "plot_energy",
    "plot_sphere",
    "plot_poincare_disk",
    "plot_elbo",
    "plot_latent_interpolation",
    "poincare_geodesic_arc",
    "lambert_equal_area",
    "plot_sbc",
)

_MANIFOLD_PLOTS = (
    "manifold_trace_coordinates",
    "plot_trace_manifold",
    "plot_rank_manifold",
    "rank_histograms",
    "ppc_geodesic_distances",
    "plot_ppc_manifold",
    "plot_ppc",
)

__all__ = [
    "to_inference_data",
    "log_likelihood",
    "manifold_attrs",
    "manifold_from_attrs",
    "frechet_mean",
    "tangent_basis",
    "tangent_coordinates",
    "manifold_diagnostics",
    "summary",
    "psislw",
    "pareto_khat",
    "psis_diagnostic",
    "sbc",
    "SBCResult",
    "MCMCInference",
    "SVIInference",
    "sbc_ranks",
    "default_reference",
    "ecdf_uniformity_test",
    "ecdf_band",
    "chi2_uniformity_test",
    "plots",
    "manifold_plots",
    *_PLOTS,
    *_MANIFOLD_PLOTS,
]


def __getattr__(name):
    if name == "plots" or name in _PLOTS:
        plots = importlib.import_module(".plots", __name__)
        return plots if name == "plots" else getattr(plots, name)
    if name == "manifold_plots" or name in _MANIFOLD_PLOTS:
        mp = importlib.import_module(".manifold_plots", __name__)
        return mp if name == "manifold_plots" else getattr(mp, name)
    raise AttributeError(f"module 'dlmppl.diagnostics' has no attribute {name!r}")
