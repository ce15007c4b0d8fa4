"""Manifold-valued distributions (Pyro ``TorchDistribution`` subclasses).

Every ``log_prob`` is a density with respect to the Riemannian volume measure
of the distribution's manifold; every ``support`` is a
``dlmppl.constraints.manifold``.
"""

from .base import ManifoldDistribution

__all__ = ["ManifoldDistribution"]
