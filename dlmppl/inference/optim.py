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

**One fused update per group, not one optimiser call per parameter.**  Pyro keeps
one optimiser object per parameter (so that ``get_state``/``set_state`` work by
parameter name); stepping them one by one costs a Python optimiser call per
tensor, which dominates the optimiser time of a small network.  With
``fused=True`` (the default) the parameters are instead stepped together, their
optimiser state staying in the per-parameter objects: the Euclidean ones by one
``torch.optim`` call per set of hyper-parameters with ``foreach=True`` (torch's
``_foreach_*`` kernels, the same arithmetic as the per-tensor loop), the manifold
ones of Riemannian Adam by one update of all the parameters that share a
manifold, shape, dtype, step count and hyper-parameters, stacked along a new
leading (batch) dimension (geoopt's arithmetic, row by row).  The Euclidean call uses
torch's fused kernel (``fused=True`` of ``torch.optim.Adam``/``SGD``: one C++ loop over
all the tensors, CPU included since torch 2.4; 0.25 ms against 0.6 ms for the ``foreach``
kernels and 0.7 ms for torch's default per-tensor loop on the twelve tensors of the
ManifoldVAE benchmark) where it exists for the parameters' device and dtype, else the
``foreach`` kernels (``fused="foreach"`` asks for those).  The updates equal
the per-parameter ones to round-off (``tests/inference/test_optim_fused.py``).
When a step was one torch call over all its parameters (all Euclidean, no clipping), the next
step with the same parameters, optimiser objects and hyper-parameters (compared group by group,
so that a learning-rate scheduler is seen) reuses that grouping instead of rebuilding it, and
checks the gradients for NaN/inf with one kernel over all of them (``torch.amp``'s check,
unscaling by exactly 1): the same update, bit for bit, with less Python per step.
The fused step also releases the gradients of the parameters it stepped (sets
``.grad`` to ``None``, as ``torch.optim.Optimizer.zero_grad`` does by default),
where Pyro's SVI would overwrite them with zero tensors that the next backward
adds into.  So after ``SVI.step`` a parameter's ``.grad`` is ``None``, not a zero
tensor: code that reads the gradients after a step (gradient-norm logging) must do it in
the ELBO or a hook, before the optimiser runs.  ``fused=False`` steps parameter by
parameter and leaves the gradients as they are (Pyro's SVI then zeroes them).

A ``pyro.param`` with a manifold constraint is stored through
``transform_to(manifold(M))``, :class:`dlmppl.constraints.ManifoldProjection`
(registered by :mod:`dlmppl.constraints`).
"""

from __future__ import annotations

import collections

import geoopt
import pyro
import torch
from pyro.optim import PyroOptim
from pyro.optim.optim import _load_state_dict
from pyro.params.param_store import _MODULE_NAMESPACE_DIVIDER

from ..constraints import ManifoldConstraint
from ..geometry import geometry_of

__all__ = ["RiemannianAdam", "RiemannianSGD", "manifold_of_param"]

try:  # the devices with torch's fused Adam/SGD kernels (CPU included since torch 2.4)
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    _FUSED_DEVICES = frozenset(_get_fused_kernels_supported_devices())
except ImportError:  # an older torch: the foreach kernels only
    _FUSED_DEVICES = frozenset()


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
    synchronisation per device: first one kernel over all of them (:func:`_grads_all_finite`),
    and only when that finds (or cannot look for) a NaN/inf, tensor by tensor."""
    if not tensors:
        return []
    if _grads_all_finite(tensors):
        return [True] * len(tensors)
    by_device = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    out = [True] * len(tensors)
    for idx in by_device.values():
        # a finite sum proves every entry finite (an inf or NaN entry makes the sum inf or NaN);
        # a sum is one cheap reduction, where isfinite + all are two ops and a boolean copy.
        # A sum that overflows from finite entries is checked entry by entry
        sums = [tensors[i].sum() for i in idx]
        if len({x.dtype for x in sums}) == 1:
            flags = torch.isfinite(torch.stack(sums))
        else:
            flags = torch.stack([torch.isfinite(x) for x in sums])
        for i, v in zip(idx, flags.tolist(), strict=True):
            out[i] = bool(v) or bool(torch.isfinite(tensors[i]).all())
    return out


def _grads_all_finite(grads) -> bool | None:
    """Whether every entry of the gradients ``grads`` is finite, by one kernel over all of them
    (the check of ``torch.amp.GradScaler``, unscaling by exactly 1, which leaves every value as it
    is) and one host synchronisation; ``None`` where that kernel does not apply (several
    devices, a gradient it cannot take): :func:`_all_finite` then checks them one by one."""
    dev = grads[0].device
    if any(g.device != dev for g in grads):
        return None
    # float32 flag and scale, as the kernel requires (not the default dtype, which may be float64)
    found = torch.zeros((), dtype=torch.float32, device=dev)
    try:
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones((), dtype=torch.float32, device=dev))
    except (AttributeError, RuntimeError, NotImplementedError, TypeError):
        return None
    return not bool(found)


def _snapshot_state(state):
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}


def _hyper_key(group):
    """The hyper-parameters of a param group (everything but ``params``), hashable.

    Tensors hash by identity: two tensor learning rates of equal value make two groups
    (stepped apart, which is correct, only not fused)."""
    key = tuple((k, v) for k, v in group.items() if k != "params")
    try:
        hash(key)
    except TypeError:  # e.g. a list value
        key = tuple((k, v if isinstance(v, (int, float, str, bool, type(None))) else id(v)) for k, v in key)
    return key


def _manifold_for(p, opt):
    """The manifold geoopt steps ``p`` on: its own, or its optimiser's default."""
    if isinstance(p, (geoopt.ManifoldParameter, geoopt.ManifoldTensor)):
        return p.manifold
    return opt._default_manifold


@torch.no_grad()
def _riemannian_adam_fused(items):
    """One geoopt Riemannian Adam step of several parameters at once.

    ``items``: ``(param, optimiser)`` pairs of :class:`_GeooptRAdam` optimisers (one
    parameter each) whose parameters share the manifold, shape, dtype, device, step count
    and hyper-parameters.  The points, gradients and moments are stacked along a new
    leading dimension, which every geoopt manifold treats as a batch dimension, and
    the arithmetic is that of :meth:`geoopt.optim.RiemannianAdam.step`, line by line, so
    each parameter ends where its own step would have put it (to round-off).  Unlike
    geoopt, the gradients are not modified in place by the weight decay.
    """
    p0, opt0 = items[0]
    group = opt0.param_groups[0]
    betas, eps, lr = group["betas"], group["eps"], group["lr"]
    weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]
    manifold = _manifold_for(p0, opt0)
    params = [p for p, _ in items]
    states = [opt.state[p] for p, opt in items]
    for st, p in zip(states, params, strict=True):
        if len(st) == 0:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(p)
            st["exp_avg_sq"] = torch.zeros_like(p)
            if amsgrad:
                st["max_exp_avg_sq"] = torch.zeros_like(p)
    step = states[0]["step"] + 1
    point = torch.stack(params)
    grad = torch.stack([p.grad for p in params])
    exp_avgs = [st["exp_avg"] for st in states]
    exp_avg_sqs = [st["exp_avg_sq"] for st in states]
    exp_avg = torch.stack(exp_avgs)
    exp_avg_sq = torch.stack(exp_avg_sqs)
    grad.add_(point, alpha=weight_decay)
    grad = manifold.egrad2rgrad(point, grad)
    exp_avg.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
    exp_avg_sq.mul_(betas[1]).add_(manifold.component_inner(point, grad), alpha=1 - betas[1])
    bias_correction1 = 1 - betas[0] ** step
    bias_correction2 = 1 - betas[1] ** step
    if amsgrad:
        max_exp_avg_sqs = [st["max_exp_avg_sq"] for st in states]
        max_exp_avg_sq = torch.stack(max_exp_avg_sqs)
        torch.max(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        torch._foreach_copy_(max_exp_avg_sqs, list(max_exp_avg_sq.unbind(0)))
        denom = max_exp_avg_sq.div(bias_correction2).sqrt_()
    else:
        denom = exp_avg_sq.div(bias_correction2).sqrt_()
    direction = exp_avg.div(bias_correction1) / denom.add_(eps)
    new_point, exp_avg_new = manifold.retr_transp(point, -lr * direction, exp_avg)
    torch._foreach_copy_(params, list(new_point.unbind(0)))
    torch._foreach_copy_(exp_avgs, list(exp_avg_new.unbind(0)))
    torch._foreach_copy_(exp_avg_sqs, list(exp_avg_sq.unbind(0)))
    for st in states:
        st["step"] = step
    if group["stabilize"] is not None and step % group["stabilize"] == 0:
        for _, opt in items:
            opt.stabilize_group(opt.param_groups[0])


class _RiemannianPyroOptim(PyroOptim):
    """A :class:`PyroOptim` that tells geoopt on which manifold each parameter lives.

    Parameters without a manifold get the torch optimiser of the same method
    (identical updates to geoopt's on Euclidean space, and faster).  A step
    whose gradients are not finite is refused (see the module docstring).
    With ``fused`` the parameters are stepped together (module docstring).
    """

    def __init__(
        self, riemannian_cls, euclidean_cls, optim_args, clip_args=None, name="RiemannianOptim", fused=True
    ):
        super().__init__(riemannian_cls, optim_args, clip_args)
        self._euclidean_cls = euclidean_cls
        self._name = name
        if fused not in (True, False, "foreach"):
            raise ValueError(f"fused must be True, False or 'foreach', got {fused!r}")
        self.fused = bool(fused)
        self._fused_kernel = fused is True  # torch's fused kernel for the Euclidean group where it exists
        self._fused_objs = {}  # hyper-parameter key -> one torch optimiser stepping many parameters
        # the last step's plan when it was one torch call over all its parameters (see _plan_of)
        self._plan = None

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

    def _step(self, params, *args, **kwargs):
        """Step ``params`` (all of one kind: on a manifold, or not), fused or one by one."""
        if not params:
            return
        if not self.fused or args or kwargs:  # a closure: each optimiser evaluates it, as in Pyro
            super().__call__(params, *args, **kwargs)
            return
        for p in params:  # what PyroOptim.__call__ does before stepping: create, restore, clip
            if p not in self.optim_objs:
                optimizer = self.optim_objs[p] = self._get_optim(p)
                self.grad_clip[p] = self._get_grad_clip(p)
                state = self._state_waiting_to_be_consumed.pop(pyro.get_param_store().param_name(p), None)
                if state is not None:
                    _load_state_dict(optimizer, state)
            if self.grad_clip[p] is not None:
                self.grad_clip[p](p)
        groups = {}
        self._plan = None
        for p in params:
            if p.grad is None:
                continue
            opt = self.optim_objs[p]
            group = opt.param_groups[0]
            if isinstance(opt, _GeooptRAdam):
                st = opt.state.get(p)
                key = (
                    "radam",
                    id(_manifold_for(p, opt)),
                    p.shape,
                    p.dtype,
                    p.device,
                    st["step"] if st else 0,
                    _hyper_key(group),
                )
            elif type(opt) in (torch.optim.Adam, torch.optim.SGD) and not (
                group.get("fused") or group.get("differentiable") or group.get("capturable")
            ):
                key = ("torch", type(opt), _hyper_key(group))
            else:
                key = ("single", id(p))
            groups.setdefault(key, []).append((p, opt))
        if len(groups) == 1 and len(params) > 1:
            ((key, items),) = groups.items()
            if key[0] == "torch" and len(items) == len(params) and all(self.grad_clip[p] is None for p in params):
                # one torch call over every parameter: kept, with what it depends on, for _plan_of
                self._plan = (
                    frozenset(map(id, params)),
                    key,
                    items,
                    [dict(opt.param_groups[0]) for _, opt in items],
                )
        for key, items in groups.items():
            if len(items) == 1:
                p, opt = items[0]
                opt.step()
            elif key[0] == "radam":
                _riemannian_adam_fused(items)
            else:
                self._torch_fused_step(key, items)

    def _torch_fused_step(self, key, items):
        """One torch step of several parameters, their state kept in their own optimisers: torch's
        fused kernel (one C++ loop over the tensors) where it exists for the parameters' device
        and dtype, else its ``foreach`` kernels."""
        params = [p for p, _ in items]
        if (
            self._fused_kernel
            and _FUSED_DEVICES
            and all(p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params)
        ):
            group = dict(items[0][1].param_groups[0], params=params, foreach=None, fused=True)
            key = key + ("kernel",)
        else:
            group = dict(items[0][1].param_groups[0], params=params, foreach=True)
        fused = self._fused_objs.get(key)
        if fused is None:
            hyper = {k: v for k, v in group.items() if k != "params"}
            fused = self._fused_objs[key] = type(items[0][1])(params, **hyper)
        fused.param_groups = [group]
        # the per-parameter state dicts themselves: the fused step fills and updates them in place
        fused.state = collections.defaultdict(dict, {p: opt.state[p] for p, opt in items})
        fused.step()
        fused.state = collections.defaultdict(dict)

    def _plan_of(self, params):
        """The last step's ``(key, items)`` when it still holds for ``params``: the same
        parameters, all Euclidean with a gradient and no clipping, in one torch call whose
        optimisers and hyper-parameters (compared group by group) are unchanged.  ``None``
        otherwise (the general path then regroups).  The grouping of :meth:`_step` costs
        more than torch's fused kernel itself on a small network."""
        plan = self._plan
        if plan is None or len(params) != len(plan[2]) or frozenset(map(id, params)) != plan[0]:
            return None
        objs = self.optim_objs
        for (p, opt), group in zip(plan[2], plan[3], strict=True):
            if p.grad is None or objs.get(p) is not opt or opt.param_groups[0] != group:
                return None
        return plan[1], plan[2]

    def __call__(self, params, *args, **kwargs) -> None:
        params = list(params)
        plan = self._plan_of(params) if self.fused and not (args or kwargs) else None
        if plan is not None:
            # the general path below for these parameters: check, one torch call, release
            finite = _all_finite([p.grad for p in params])
            if not all(finite):
                self._plan = None
                self._refuse(params, [p for p, ok in zip(params, finite, strict=True) if not ok], "gradient")
            self._torch_fused_step(*plan)
            for p in params:
                p.grad = None
            return
        with_grad = [p for p in params if p.grad is not None]
        finite = _all_finite([p.grad for p in with_grad])
        bad = [p for p, ok in zip(with_grad, finite, strict=True) if not ok]
        if bad:
            self._refuse(params, bad, "gradient")
        # manifold parameters step first, their value and optimiser state kept to be put back
        # if the Riemannian step itself overflows; the Euclidean ones (finite gradients give
        # finite torch updates) only once those succeeded, so that a refusal updates nothing
        on_manifold, euclidean = [], []
        for p in params:
            (on_manifold if self._is_manifold_param(p) else euclidean).append(p)
        saved = {}
        for p in on_manifold:
            if p.grad is not None:
                opt = self.optim_objs.get(p)
                state = _snapshot_state(opt.state[p]) if opt is not None and p in opt.state else None
                saved[p] = (p.detach().clone(), state)
        self._step(on_manifold, *args, **kwargs)
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
        self._step(euclidean, *args, **kwargs)
        if self.fused and not (args or kwargs):
            # SVI replaces the gradients by zero tensors right after the step
            # (pyro.infer.util.zero_grads), which the next backward then adds into: releasing
            # them instead skips both the allocation and the addition (torch's set_to_none)
            for p in params:
                p.grad = None

    def _get_optim(self, param):
        args = dict(self._get_optim_args(param))
        manifold = manifold_of_param(param)
        if manifold is None:
            args.pop("stabilize", None)
            return self._euclidean_cls([param], **args)
        return self.pt_optim_constructor([param], manifold=manifold, **args)


def RiemannianAdam(optim_args: dict, clip_args: dict | None = None, *, fused: bool | str = True) -> PyroOptim:
    """Riemannian Adam (Bécigneul & Ganea, ICLR 2019) as a Pyro optimiser.

    Args:
        optim_args: keyword arguments of :class:`geoopt.optim.RiemannianAdam`
            (``lr``, ``betas``, ``eps``, ``weight_decay``, ``amsgrad``,
            ``stabilize``), or a callable ``param_name -> dict`` as in Pyro.
        clip_args: gradient clipping as in :class:`pyro.optim.PyroOptim`.
        fused: step all the parameters together (one torch Adam call for the
            Euclidean ones, with torch's fused kernel where it exists, one stacked
            Riemannian update per manifold, shape and step count) instead of one
            optimiser call per parameter; the same updates to round-off, faster; the
            gradients are released (``None``) after the step (module docstring).
            ``"foreach"``: the same with torch's ``foreach`` kernels for the Euclidean call.

    Manifold parameters (see the module docstring) move by the retraction of
    their manifold with the Adam moments parallel-transported; the others as
    in :class:`torch.optim.Adam`.  Raises ``ValueError`` naming the parameters,
    and updates none, when a gradient is NaN or infinite.
    """
    return _RiemannianPyroOptim(
        _GeooptRAdam, torch.optim.Adam, optim_args, clip_args, name="RiemannianAdam", fused=fused
    )


def RiemannianSGD(optim_args: dict, clip_args: dict | None = None, *, fused: bool | str = True) -> PyroOptim:
    """Riemannian SGD with optional momentum (Bonnabel 2013) as a Pyro optimiser.

    Args:
        optim_args: keyword arguments of :class:`geoopt.optim.RiemannianSGD`
            (``lr``, ``momentum``, ``dampening``, ``weight_decay``,
            ``nesterov``, ``stabilize``), or a callable as in Pyro.
        clip_args: gradient clipping as in :class:`pyro.optim.PyroOptim`.
        fused: step the Euclidean parameters by one torch SGD call (torch's fused
            kernel where it exists, ``"foreach"``: its ``foreach`` kernels; same updates
            to round-off; manifold parameters are stepped one by one) and release the
            gradients (``None``) after the step.

    Raises ``ValueError`` naming the parameters, and updates none, when a
    gradient is NaN or infinite.
    """
    return _RiemannianPyroOptim(
        _GeooptRSGD, torch.optim.SGD, optim_args, clip_args, name="RiemannianSGD", fused=fused
    )
