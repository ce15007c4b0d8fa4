"""Base class of manifold-valued distributions."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints as _tc

from .. import constraints as _constraints
from .. import manifolds as _manifolds


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


class SphericalLocConcentration(ManifoldDistribution):
    """Base of the directional families with a mean direction and a concentration.

    ``loc`` has shape ``batch_shape + (d,)`` (unit vectors, ``d ≥ 2``) and
    ``concentration`` shape ``batch_shape`` (non-negative); both broadcast.
    The manifold is ``S^{d-1}`` (``SphereExact``).
    """

    arg_constraints = {
        "loc": _constraints.manifold(_manifolds.Sphere()),
        "concentration": _tc.nonnegative,
    }
    has_rsample = True

    def __init__(self, loc, concentration, validate_args=None):
        self.manifold = _manifolds.SphereExact()
        loc = torch.as_tensor(loc)
        if not torch.is_floating_point(loc):
            loc = loc.to(torch.get_default_dtype())
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise ValueError(
                f"{type(self).__name__}: loc must have shape batch_shape + (d,) with d >= 2, got {tuple(loc.shape)}"
            )
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        event_shape = loc.shape[-1:]
        self.loc = loc.expand(batch_shape + event_shape)
        self.concentration = concentration.expand(batch_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def dim(self) -> int:
        """Ambient dimension ``d`` (the sphere is ``S^{d-1}``)."""
        return self.event_shape[0]

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.manifold = self.manifold
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.concentration = self.concentration.expand(batch_shape)
        ManifoldDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new
