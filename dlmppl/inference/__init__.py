"""Inference on manifolds for Pyro.

* MCMC: :class:`RiemannianHMC` and :class:`RiemannianNUTS`, kernels for
  ``pyro.infer.MCMC`` that integrate manifold sites on their manifold (exact
  geodesic flow) and everything else as Pyro does; ``metric="softabs"`` gives
  Riemannian-manifold HMC with Betancourt's SoftAbs metric.  Problems of a run
  (divergences dominating warm-up, a collapsed step size) are reported with
  warnings of category :class:`SamplerWarning` (``warnings.filterwarnings``
  with it silences or escalates them) and in the kernels' ``diagnostics()``.
* VI: :func:`RiemannianAdam` / :func:`RiemannianSGD` (Pyro optimisers that
  step manifold parameters along their manifold), the autoguide
  :class:`AutoManifoldNormal`, and :class:`LeanTrace_ELBO` (``Trace_ELBO``'s value and
  gradients with less per-step machinery).
* :class:`MCMC`: ``pyro.infer.MCMC`` with ``chain_method="vectorized"``
  (:mod:`dlmppl.inference.vectorized`): ``num_chains`` chains of the kernels as
  one batched state in one process.
"""

from .autoguides import AutoManifoldNormal, init_to_manifold_sample
from .elbo import LeanTrace_ELBO
from .kernels import DivergenceWarning, RiemannianHMC, RiemannianNUTS, SamplerWarning, StepSizeWarning
from .optim import RiemannianAdam, RiemannianSGD
from .vectorized import MCMC

__all__ = [
    "AutoManifoldNormal",
    "DivergenceWarning",
    "LeanTrace_ELBO",
    "MCMC",
    "SamplerWarning",
    "StepSizeWarning",
    "RiemannianAdam",
    "RiemannianHMC",
    "RiemannianNUTS",
    "RiemannianSGD",
    "init_to_manifold_sample",
]
