"""Ready model programs with latent variables on manifolds.

:class:`ManifoldVAE` (Euclidean, hyperspherical, Poincaré, Lorentz,
κ-stereographic and product latent spaces), :class:`DynamicCurvatureVAE`
(curvature predicted per datum) and :func:`iwae_log_marginal` (importance
sampled marginal log-likelihood), :class:`FlowMatchingPrior` (a learned prior on a latent
manifold, Riemannian flow matching).
"""

from .dynamic_curvature import DynamicCurvatureVAE
from .intrinsic import chadebec_metric, intrinsic_codes, intrinsic_sample
from .marginal import iwae_log_marginal
from .priors import FlowMatchingPrior, FlowPriorDistribution
from .vae import LatentComponent, ManifoldVAE

__all__ = [
    "DynamicCurvatureVAE",
    "FlowMatchingPrior",
    "FlowPriorDistribution",
    "LatentComponent",
    "ManifoldVAE",
    "chadebec_metric",
    "intrinsic_codes",
    "intrinsic_sample",
    "iwae_log_marginal",
]
