r"""The potential energy of a Pyro model without Pyro's per-evaluation tracing.

Pyro's HMC/NUTS potential (``pyro.infer.mcmc.util.initialize_model``) runs, at
every gradient evaluation,
``poutine.trace(poutine.condition(poutine.enum(config_enumerate(model))))``,
builds a :class:`~pyro.poutine.Trace` (one dict per site, copied), and sums its
``log_prob_sum``; then subtracts the log-abs-det-Jacobian of every transform.
On a small model that machinery costs as much as the model itself.

:func:`lean_potential_fn` computes the same number with one messenger that
only substitutes the latent values and accumulates
``scale_and_mask(fn.log_prob(value), scale, mask).sum()`` site by site, in the
order the model runs them (the order of ``Trace.log_prob_sum``), so that the
value is the same float for float; what the model's own handlers do (plates'
broadcasting and scales, ``poutine.mask``/``scale``, ``pyro.factor``,
``pyro.deterministic``) is seen by the messenger exactly as by Pyro's trace,
because it sits outside the model as Pyro's trace and condition do.  The
model's sites, transforms and plates are learnt once, from the prototype trace
of ``initialize_model``.

Pyro's own path is kept where the lean one does not apply
(:func:`lean_applies`): a model with a discrete latent site (Pyro enumerates it
out of the potential with ``TraceEinsumEvaluator``), and ``jit_compile=True``
(Pyro's ``torch.jit`` trace of its potential).

Reference: Bingham et al. (2019) "Pyro: deep universal probabilistic
programming" (effect handlers); Phan, Pradhan & Jankowiak (2019) "Composable
effects for flexible and accelerated probabilistic programming in NumPyro"
(a potential computed from a model run under a minimal ``substitute`` handler).
"""

from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.util import is_validation_enabled, site_is_subsample
from pyro.util import warn_if_inf, warn_if_nan
from torch.distributions.transforms import ComposeTransform, IndependentTransform, _InverseTransform

__all__ = ["lean_applies", "lean_potential_fn"]


def _is_identity(t) -> bool:
    """Whether transform ``t`` is the identity (``biject_to(real)``, its ``IndependentTransform``,
    and their inverses: ``biject_to(real_vector).inv``, what the kernels pass, is an ``_InverseTransform``)."""
    while isinstance(t, (IndependentTransform, _InverseTransform)):
        t = t.base_transform if isinstance(t, IndependentTransform) else t.inv
    return isinstance(t, ComposeTransform) and not t.parts


def lean_applies(prototype_trace, jit_compile=False) -> bool:
    """Whether :func:`lean_potential_fn` gives Pyro's potential for the model of
    ``prototype_trace`` (the trace ``initialize_model`` returns): no discrete latent
    site (enumerated by Pyro), no ``jit_compile``."""
    if jit_compile:
        return False
    for _, node in prototype_trace.iter_stochastic_nodes():
        fn = node["fn"]
        if not isinstance(fn, _Subsample) and fn.has_enumerate_support:
            return False
    return True


class _LogJointMessenger(Messenger):
    """Substitute ``values`` at their sites and accumulate each sample site's
    ``scale_and_mask(log_prob).sum()`` (what ``Trace.log_prob_sum`` adds up).

    Per evaluation it adds no operation that does not change the number: no
    ``scale_and_mask`` call at an unscaled unmasked site, no ``.sum()`` of a 0-dim
    ``log_prob``, no ``0.0 +`` before the first term (each the identity on the value,
    and one autograd node fewer in the backward pass); ``log_joint`` is ``None`` until
    a site adds to it.  :meth:`_term` reduces a site's ``log_prob`` to what is added (a
    subclass overrides it: the vectorised chains keep one term per chain)."""

    def __init__(self, values, log_joint=None):
        super().__init__()
        self.values = values
        self.log_joint = log_joint

    # (Messenger's _process_message/_postprocess_message look the method up by name at
    # every site: dispatched here directly; only sample sites concern this messenger)
    def _process_message(self, msg):
        if msg["type"] == "sample":
            value = self.values.get(msg["name"])
            if value is not None:
                msg["value"] = value
                msg["is_observed"] = True

    def _postprocess_message(self, msg):
        if msg["type"] != "sample" or site_is_subsample(msg):
            # a full plate's indices: log_prob 0 in Trace.log_prob_sum (subsampling is refused by
            # initialize_model), so nothing to add
            return
        log_p = msg["fn"].log_prob(msg["value"], *msg["args"], **msg["kwargs"])
        scale, mask = msg["scale"], msg["mask"]
        if mask is not None or not (isinstance(scale, (int, float)) and scale == 1):
            log_p = scale_and_mask(log_p, scale, mask)  # (the identity when unscaled and unmasked)
        term = self._term(log_p, msg["name"])
        self.log_joint = term if self.log_joint is None else self.log_joint + term

    def _term(self, log_p, name):
        """The site's scaled and masked ``log_prob`` summed (0-dim), checked with validation on."""
        if not (torch.is_tensor(log_p) and log_p.dim() == 0):
            log_p = log_p.sum()
        if is_validation_enabled():
            warn_if_nan(log_p, f"log_prob_sum at site '{name}'")
            warn_if_inf(log_p, f"log_prob_sum at site '{name}'", allow_neginf=True)
        return log_p


class _LeanPotential:
    """``params → potential`` (a class, not a closure, so that a kernel pickles to Pyro's chain processes)."""

    def __init__(self, model, model_args, model_kwargs, transforms):
        self.model = model
        self.model_args = tuple(model_args or ())
        self.model_kwargs = dict(model_kwargs or {})
        self.transforms = transforms
        self.identity = {name: _is_identity(t) for name, t in transforms.items()}
        self.jacobians = [(name, t) for name, t in transforms.items() if not self.identity[name]]

    def __call__(self, params):
        transforms, identity = self.transforms, self.identity
        constrained = {k: v if identity[k] else transforms[k].inv(v) for k, v in params.items()}
        handler = _LogJointMessenger(constrained)
        with handler:
            self.model(*self.model_args, **self.model_kwargs)
        log_joint = 0.0 if handler.log_joint is None else handler.log_joint
        # the identity's log|det J| is a sum of zeros (subtracting it changes nothing): skipped
        for name, t in self.jacobians:
            log_joint = log_joint - torch.sum(t.log_abs_det_jacobian(constrained[name], params[name]))
        return -log_joint


def lean_potential_fn(model, model_args, model_kwargs, transforms):
    """The potential energy ``-log p(x(z)) - log|det ∂x/∂z|`` of ``model``, as Pyro's.

    Args:
        model: the Pyro model (without discrete latent sites: :func:`lean_applies`).
        model_args, model_kwargs: its arguments.
        transforms: dict site → transform from the constrained to the unconstrained
            space (what ``initialize_model`` returns; the identity for manifold sites).

    Returns a function ``params → potential`` taking a dict site → tensor
    (unconstrained values, each of the site's shape) and returning a 0-dim
    tensor: the same value as Pyro's ``potential_fn`` (same operations in the
    same order), without building a trace.
    """
    return _LeanPotential(model, model_args, model_kwargs, transforms)
