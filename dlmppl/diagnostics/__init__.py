"""Diagnostics: arviz InferenceData for manifold draws, manifold-aware R-hat/ESS, PSIS,
simulation-based calibration (:mod:`.sbc`), plots.

Plotting functions live in :mod:`dlmppl.diagnostics.plots` (imported lazily,
so that importing the statistics does not import matplotlib).
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
    *_PLOTS,
]


def __getattr__(name):
    if name == "plots" or name in _PLOTS:
        plots = importlib.import_module(".plots", __name__)
        return plots if name == "plots" else getattr(plots, name)
    raise AttributeError(f"module 'dlmppl.diagnostics' has no attribute {name!r}")
