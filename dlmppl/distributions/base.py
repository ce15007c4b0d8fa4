"""Base class of manifold-valued distributions."""

from __future__ import annotations

from pyro.distributions import TorchDistribution

from .. import constraints as _constraints


class ManifoldDistribution(TorchDistribution):
    """A Pyro distribution whose support is ``dlmppl.constraints.manifold(self.manifold)``.

    Subclasses set ``self.manifold`` before calling ``super().__init__`` and
    implement ``log_prob`` as a density with respect to the Riemannian volume
    measure of ``self.manifold`` (DESIGN.md, "Base measure").
    """

    manifold = None

    @property
    def support(self):
        return _constraints.manifold(self.manifold)
