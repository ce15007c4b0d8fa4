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

**Non-finite updates are refused.**  Before any parameter moves, the gradients
of all the parameters of the step are checked: if one is NaN or infinite (NaN
data, a log density that is NaN at the current point), no parameter is updated,
the gradients are zeroed (so that the next step starts clean) and a
``ValueError`` names the parameters.  A manifold parameter whose Riemannian step
itself overflows (a retraction to infinity) is put back, with its optimiser
state, and the same error is raised.  Without this, geoopt writes NaN into the
parameter and the error surfaces one step later, far from its cause.

A ``pyro.param`` with a manifold constraint is stored through
``transform_to(manifold(M))``, :class:`dlmppl.constraints.ManifoldProjection`
(registered by :mod:`dlmppl.constraints`).
"""

from __future__ import annotations

import geoopt
import pyro
import torch
from pyro.optim import PyroOptim
from pyro.params.param_store import _MODULE_NAMESPACE_DIVIDER

from ..constraints import ManifoldConstraint
from ..geometry import geometry_of

__all__ = ["RiemannianAdam", "RiemannianSGD", "manifold_of_param"]


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
        if geometry_of(self._default_manifold).linear:  # projx is the identity
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


def _param_names(params):
    store = pyro.get_param_store()
    names = []
    for p in params:
        try:
            name = store.param_name(p)
        except (KeyError, AttributeError):
            name = None
        if name is not None:  # 'net$$$layer.weight' (Pyro's module namespace) reads 'net.layer.weight'
            name = name.replace(_MODULE_NAMESPACE_DIVIDER, ".")
        names.append(repr(name) if name is not None else f"<unnamed parameter of shape {tuple(p.shape)}>")
    return names


def _all_finite(tensors):
    """One boolean per tensor (``True`` when every entry is finite), with one host
    synchronisation per device."""
    if not tensors:
        return []
    flags = [torch.isfinite(t).all() for t in tensors]
    by_device = {}
    for i, f in enumerate(flags):
        by_device.setdefault(f.device, []).append(i)
    out = [True] * len(tensors)
    for idx in by_device.values():
        values = torch.stack([flags[i] for i in idx]).tolist()
        for i, v in zip(idx, values, strict=True):
            out[i] = bool(v)
    return out


def _snapshot_state(state):
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}


class _RiemannianPyroOptim(PyroOptim):
    """A :class:`PyroOptim` that tells geoopt on which manifold each parameter lives.

    Parameters without a manifold get the torch optimiser of the same method
    (identical updates to geoopt's on Euclidean space, and faster).  A step
    whose gradients are not finite is refused (see the module docstring).
    """

    def __init__(self, riemannian_cls, euclidean_cls, optim_args, clip_args=None, name="RiemannianOptim"):
        super().__init__(riemannian_cls, optim_args, clip_args)
        self._euclidean_cls = euclidean_cls
        self._name = name

    def _is_manifold_param(self, p):
        opt = self.optim_objs.get(p)
        if opt is not None:
            return isinstance(opt, _ManifoldMixin)
        return manifold_of_param(p) is not None

    def _refuse(self, params, bad, what):
        for p in params:  # a refused step leaves no gradient behind to poison the next one
            if p.grad is not None:
                p.grad = None
        names = ", ".join(_param_names(bad))
        many = len(bad) > 1
        raise ValueError(
            f"{self._name}: the {what}{'s' if many else ''} of parameter{'s' if many else ''} {names} "
            f"{'are' if many else 'is'} not finite (NaN or inf); the update was refused and every "
            "parameter keeps its value. "
            + (
                "Look for NaN/inf in the data, or for a log density that is NaN at the current parameters."
                if what == "gradient"
                else "The step overflowed the manifold's retraction: lower the learning rate."
            )
        )

    def __call__(self, params, *args, **kwargs) -> None:
        params = list(params)
        with_grad = [p for p in params if p.grad is not None]
        finite = _all_finite([p.grad for p in with_grad])
        bad = [p for p, ok in zip(with_grad, finite, strict=True) if not ok]
        if bad:
            self._refuse(params, bad, "gradient")
        # manifold parameters step first, their value and optimiser state kept to be put back
        # if the Riemannian step itself overflows; the Euclidean ones (finite gradients give
        # finite torch updates) only once those succeeded, so that a refusal updates nothing
        on_manifold = [p for p in params if self._is_manifold_param(p)]
        saved = {}
        for p in on_manifold:
            if p.grad is not None:
                opt = self.optim_objs.get(p)
                state = _snapshot_state(opt.state[p]) if opt is not None and p in opt.state else None
                saved[p] = (p.detach().clone(), state)
        if on_manifold:
            super().__call__(on_manifold, *args, **kwargs)
        if saved:
            moved = list(saved)
            finite = _all_finite([p.detach() for p in moved])
            bad = [p for p, ok in zip(moved, finite, strict=True) if not ok]
            if bad:
                with torch.no_grad():
                    for p in moved:
                        value, state = saved[p]
                        p.copy_(value)
                        opt = self.optim_objs[p]
                        if state is None:
                            opt.state.pop(p, None)
                        else:
                            opt.state[p] = state
                self._refuse(params, bad, "Riemannian step")
        euclidean = [p for p in params if not self._is_manifold_param(p)]
        if euclidean:
            super().__call__(euclidean, *args, **kwargs)

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
    in :class:`torch.optim.Adam`.  Raises ``ValueError`` naming the parameters,
    and updates none, when a gradient is NaN or infinite.
    """
    return _RiemannianPyroOptim(_GeooptRAdam, torch.optim.Adam, optim_args, clip_args, name="RiemannianAdam")


def RiemannianSGD(optim_args: dict, clip_args: dict | None = None) -> PyroOptim:
    """Riemannian SGD with optional momentum (Bonnabel 2013) as a Pyro optimiser.

    Args:
        optim_args: keyword arguments of :class:`geoopt.optim.RiemannianSGD`
            (``lr``, ``momentum``, ``dampening``, ``weight_decay``,
            ``nesterov``, ``stabilize``), or a callable as in Pyro.
        clip_args: gradient clipping as in :class:`pyro.optim.PyroOptim`.

    Raises ``ValueError`` naming the parameters, and updates none, when a
    gradient is NaN or infinite.
    """
    return _RiemannianPyroOptim(_GeooptRSGD, torch.optim.SGD, optim_args, clip_args, name="RiemannianSGD")
