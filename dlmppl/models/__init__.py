"""Ready model programs with latent variables on manifolds.

:class:`ManifoldVAE` (Euclidean, hyperspherical, Poincaré, Lorentz,
κ-stereographic and product latent spaces), :class:`DynamicCurvatureVAE`
(curvature predicted per datum) and :func:`iwae_log_marginal` (importance
sampled marginal log-likelihood).
"""

from .dynamic_curvature import DynamicCurvatureVAE
from .intrinsic import chadebec_metric, intrinsic_codes, intrinsic_sample
from .marginal import iwae_log_marginal
from .vae import LatentComponent, ManifoldVAE

__all__ = [
    "DynamicCurvatureVAE",
    "LatentComponent",
    "ManifoldVAE",
    "chadebec_metric",
    "intrinsic_codes",
    "intrinsic_sample",
    "iwae_log_marginal",
]
