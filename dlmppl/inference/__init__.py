"""Inference on manifolds for Pyro.

* MCMC: :class:`RiemannianHMC` and :class:`RiemannianNUTS`, kernels for
  ``pyro.infer.MCMC`` that integrate manifold sites on their manifold (exact
  geodesic flow) and everything else as Pyro does; ``metric="softabs"`` gives
  Riemannian-manifold HMC with Betancourt's SoftAbs metric.  Problems of a run
  (divergences dominating warm-up, a collapsed step size) are reported with
  warnings of category :class:`SamplerWarning` (``warnings.filterwarnings``
  with it silences or escalates them) and in the kernels' ``diagnostics()``.
* VI: :func:`RiemannianAdam` / :func:`RiemannianSGD` (Pyro optimisers that
  step manifold parameters along their manifold) and the autoguide
  :class:`AutoManifoldNormal`.

Importing this module registers ``transform_to(dlmppl.constraints.manifold(M))``
(a projection whose unconstrained space is the ambient space), which
``pyro.param(..., constraint=manifold(M))`` needs.
"""

from .autoguides import AutoManifoldNormal, init_to_manifold_sample
from .hmc import (
    DivergenceWarning,
    RiemannianHMC,
    SamplerWarning,
    SampleStats,
    StepSizeWarning,
    manifold_variance,
)
from .integrators import HMCGeometry, Integrator, geodesic_leapfrog, geometry_of, riemannian_leapfrog
from .nuts import RiemannianNUTS
from .optim import ManifoldProjection, RiemannianAdam, RiemannianSGD, manifold_of_param
from .softabs import SoftAbsIntegrator, softabs, softabs_integrator

__all__ = [
    "AutoManifoldNormal",
    "DivergenceWarning",
    "SampleStats",
    "SamplerWarning",
    "StepSizeWarning",
    "HMCGeometry",
    "SoftAbsIntegrator",
    "Integrator",
    "geodesic_leapfrog",
    "geometry_of",
    "riemannian_leapfrog",
    "softabs",
    "softabs_integrator",
    "ManifoldProjection",
    "RiemannianAdam",
    "RiemannianHMC",
    "RiemannianNUTS",
    "RiemannianSGD",
    "init_to_manifold_sample",
    "manifold_of_param",
    "manifold_variance",
]
