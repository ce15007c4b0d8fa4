"""Manifold-valued distributions (Pyro ``TorchDistribution`` subclasses).

Every ``log_prob`` is a density with respect to the Riemannian volume measure
of the distribution's manifold; every ``support`` is a
``dlmppl.constraints.manifold``.
"""

from . import kl  # noqa: F401  (registers the closed-form KL divergences with torch)
from .base import ManifoldDistribution
from .intrinsic import IntrinsicUniform
from .power_spherical import PowerSpherical
from .projective import AngularCentralGaussian, ProjectiveWrappedNormal
from .riemannian_normal import RiemannianNormal, riemannian_normal_log_normalizer
from .so3 import (
    IsotropicGaussianSO3,
    MatrixFisher,
    SO3WrappedNormal,
    igso3_angle_cdf,
    igso3_log_density,
    matrix_fisher_log_normalizer,
)
from .torus import (
    OnTorus,
    TorusVonMises,
    TorusWrappedNormal,
    sine_bivariate_sample,
    wrapped_normal_log_density,
)
from .uniform import ManifoldUniform, log_volume
from .von_mises_fisher import VonMisesFisher, vmf_log_normalizer, vmf_mean_resultant_length
from .wrapped_normal import WrappedNormal

__all__ = [
    "AngularCentralGaussian",
    "IntrinsicUniform",
    "IsotropicGaussianSO3",
    "MatrixFisher",
    "SO3WrappedNormal",
    "igso3_angle_cdf",
    "igso3_log_density",
    "matrix_fisher_log_normalizer",
    "ManifoldDistribution",
    "ManifoldUniform",
    "PowerSpherical",
    "ProjectiveWrappedNormal",
    "OnTorus",
    "RiemannianNormal",
    "TorusVonMises",
    "TorusWrappedNormal",
    "sine_bivariate_sample",
    "VonMisesFisher",
    "WrappedNormal",
    "log_volume",
    "riemannian_normal_log_normalizer",
    "vmf_log_normalizer",
    "vmf_mean_resultant_length",
    "wrapped_normal_log_density",
]
