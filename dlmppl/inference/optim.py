r"""Riemannian optimisers for Pyro's SVI.

``RiemannianAdam`` and ``RiemannianSGD`` are :class:`pyro.optim.PyroOptim`
instances wrapping geoopt's Riemannian Adam (Bécigneul & Ganea, "Riemannian
Adaptive Optimization Methods", ICLR 2019) and Riemannian SGD (Bonnabel,
"Stochastic gradient descent on Riemannian manifolds", IEEE TAC 2013).  A
parameter is stepped along its manifold when it is

* a :class:`geoopt.ManifoldParameter` (e.g. inside a ``PyroModule``), or
* a ``pyro.param(name, init, constraint=dlmppl.constraints.manifold(M))``:
  the optimiser reads the constraint from the param store and steps the
  stored (unconstrained) tensor on ``M``;

every other parameter (curvatures, network weights, scales) gets the
Euclidean method: it is handed to ``torch.optim.Adam``/``SGD`` with the same
arguments, exactly as ``pyro.optim.Adam``/``SGD`` would.

Importing this module registers ``transform_to(manifold(M))``: Pyro stores a
constrained parameter as ``transform_to(constraint).inv(value)``.  For a
manifold constraint the unconstrained space is the ambient space, ``inv`` is
the identity and the forward map is ``M.projx`` (a no-op on the manifold, and a
safety net if a Euclidean optimiser moves the tensor off it).  ``biject_to`` is
deliberately *not* registered for manifold constraints: HMC kernels and
autoguides dispatch on the constraint themselves.
"""

from __future__ import annotations

import geoopt
import pyro
import torch
from pyro.optim import PyroOptim
from torch.distributions import constraints as _tc
from torch.distributions.transforms import Transform

from ..constraints import ManifoldConstraint

__all__ = ["RiemannianAdam", "RiemannianSGD", "ManifoldProjection", "manifold_of_param"]


class ManifoldProjection(Transform):
    """``x ↦ M.projx(x)`` from the ambient space onto ``M``; inverse: identity.

    The ``transform_to`` of a :func:`dlmppl.constraints.manifold` constraint.
    On the manifold both directions are the identity.  Not a bijection of the
    ambient space, so it has no ``log_abs_det_jacobian`` and is never used as a
    ``biject_to`` (no density is transformed through it).
    """

    bijective = False

    def __init__(self, constraint: ManifoldConstraint, cache_size: int = 0):
        self._constraint = constraint
        super().__init__(cache_size=cache_size)

    @property
    def domain(self):
        return _tc.independent(_tc.real, self._constraint.event_dim)

    @property
    def codomain(self):
        return self._constraint

    def with_cache(self, cache_size=1):
        if self._cache_size == cache_size:
            return self
        return ManifoldProjection(self._constraint, cache_size=cache_size)

    def __eq__(self, other):
        return isinstance(other, ManifoldProjection) and other._constraint.manifold is self._constraint.manifold

    def _call(self, x):
        return self._constraint.manifold.projx(x)

    def _inverse(self, y):
        return y

    def log_abs_det_jacobian(self, x, y):
        raise NotImplementedError(
            "ManifoldProjection is not a bijection: manifold constraints have no biject_to; "
            "use a manifold distribution (dlmppl.distributions) instead of a transformed density"
        )


def _transform_to_manifold(constraint):
    return ManifoldProjection(constraint)


# registration is keyed on the class; idempotent if dlmppl.constraints ever does it too
if ManifoldConstraint not in torch.distributions.transform_to._registry:
    torch.distributions.transform_to.register(ManifoldConstraint)(_transform_to_manifold)


def manifold_of_param(param: torch.Tensor):
    """The manifold on which ``param`` lives for the optimiser, or ``None``.

    ``param`` is a tensor handed to a Pyro optimiser (an unconstrained value of
    the param store).  Returns ``param.manifold`` for geoopt manifold tensors,
    the manifold of its param-store constraint when that is a
    :class:`~dlmppl.constraints.ManifoldConstraint`, else ``None``.
    """
    if isinstance(param, (geoopt.ManifoldParameter, geoopt.ManifoldTensor)):
        return param.manifold
    store = pyro.get_param_store()
    try:
        name = store.param_name(param)
    except (KeyError, AttributeError):
        name = None
    if name is None:
        return None
    constraint = store._constraints.get(name)
    if isinstance(constraint, ManifoldConstraint):
        return constraint.manifold
    return None


class _ManifoldMixin:
    """A geoopt optimiser whose non-geoopt tensors live on ``manifold``."""

    def _set_manifold(self, manifold):
        if manifold is not None:
            self._default_manifold = manifold

    @torch.no_grad()
    def stabilize_group(self, group):
        super().stabilize_group(group)
        if isinstance(self._default_manifold, geoopt.Euclidean):
            return
        for p in group["params"]:
            if not isinstance(p, (geoopt.ManifoldParameter, geoopt.ManifoldTensor)):
                p.copy_(self._default_manifold.projx(p))


class _GeooptRAdam(_ManifoldMixin, geoopt.optim.RiemannianAdam):
    def __init__(self, params, manifold=None, **kwargs):
        super().__init__(params, **kwargs)
        self._set_manifold(manifold)


class _GeooptRSGD(_ManifoldMixin, geoopt.optim.RiemannianSGD):
    def __init__(self, params, manifold=None, **kwargs):
        super().__init__(params, **kwargs)
        self._set_manifold(manifold)


class _RiemannianPyroOptim(PyroOptim):
    """A :class:`PyroOptim` that tells geoopt on which manifold each parameter lives.

    Parameters without a manifold get the torch optimiser of the same method
    (identical updates to geoopt's on Euclidean space, and faster).
    """

    def __init__(self, riemannian_cls, euclidean_cls, optim_args, clip_args=None):
        super().__init__(riemannian_cls, optim_args, clip_args)
        self._euclidean_cls = euclidean_cls

    def _get_optim(self, param):
        args = dict(self._get_optim_args(param))
        manifold = manifold_of_param(param)
        if manifold is None:
            args.pop("stabilize", None)
            return self._euclidean_cls([param], **args)
        return self.pt_optim_constructor([param], manifold=manifold, **args)


def RiemannianAdam(optim_args: dict, clip_args: dict | None = None) -> PyroOptim:
    """Riemannian Adam (Bécigneul & Ganea, ICLR 2019) as a Pyro optimiser.

    Args:
        optim_args: keyword arguments of :class:`geoopt.optim.RiemannianAdam`
            (``lr``, ``betas``, ``eps``, ``weight_decay``, ``amsgrad``,
            ``stabilize``), or a callable ``param_name -> dict`` as in Pyro.
        clip_args: gradient clipping as in :class:`pyro.optim.PyroOptim`.

    Manifold parameters (see the module docstring) move by the retraction of
    their manifold with the Adam moments parallel-transported; the others as
    in :class:`torch.optim.Adam`.
    """
    return _RiemannianPyroOptim(_GeooptRAdam, torch.optim.Adam, optim_args, clip_args)


def RiemannianSGD(optim_args: dict, clip_args: dict | None = None) -> PyroOptim:
    """Riemannian SGD with optional momentum (Bonnabel 2013) as a Pyro optimiser.

    Args:
        optim_args: keyword arguments of :class:`geoopt.optim.RiemannianSGD`
            (``lr``, ``momentum``, ``dampening``, ``weight_decay``,
            ``nesterov``, ``stabilize``), or a callable as in Pyro.
        clip_args: gradient clipping as in :class:`pyro.optim.PyroOptim`.
    """
    return _RiemannianPyroOptim(_GeooptRSGD, torch.optim.SGD, optim_args, clip_args)
