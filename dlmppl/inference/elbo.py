r"""A lean ``Trace_ELBO``: the same estimator with less of Pyro's per-step machinery.

:class:`LeanTrace_ELBO` computes the ELBO of Kingma & Welling (2014) / Ranganath et al.
(2014) exactly as :class:`pyro.infer.Trace_ELBO` does, with the same traces, the same
sums in the same order and the same surrogate, so that its value and its gradients are
those of ``Trace_ELBO`` bit for bit (``tests/inference/test_lean_elbo.py``), but it
records the guide and the replayed model with one small messenger each instead of
``poutine.trace(poutine.replay(...))``: no copy of every message into a
:class:`~pyro.poutine.Trace`, no trace copies to prune subsample sites, no records of
parameter sites, one pass over the sample sites.  On a small model (the ManifoldVAE step
of ``benchmarks/bench_vae.py``) that machinery is a measurable part of an SVI step.

It takes the lean path when Pyro's validation is off (``pyro.enable_validation(False)``),
particles are not vectorised, and every guide site has a zero score-function term (a
reparameterised site: ``has_rsample``); otherwise it does what ``Trace_ELBO`` does.  With
validation on, ``Trace_ELBO``'s checks (model/guide site match, site shapes, enumerated
sites, NaN/inf warnings per site) run, through ``Trace_ELBO`` itself.  A guide site with a
score-function term (non-reparameterised) is handled by ``Trace_ELBO``'s own particle
code on the traces already drawn (no second run of the model).

Reference: Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014; Ranganath,
Gerrish & Blei, "Black Box Variational Inference", AISTATS 2014 (the score-function part).
"""

from __future__ import annotations

from pyro.distributions import Distribution as _PyroDistribution
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan

__all__ = ["LeanTrace_ELBO"]

_DEFAULT_SCORE_PARTS = _PyroDistribution.score_parts


class _Recorder(Messenger):
    """Records the sample sites of one run (what ``poutine.trace`` keeps of them, uncopied),
    and whether a parameter site was met; with ``replay``, replays those sites of a guide
    run as ``poutine.replay`` does."""

    def __init__(self, replay=None):
        super().__init__()
        self.sites = {}  # name -> message, in program order
        self.other = {}  # name -> type of the non-sample sites (params)
        self.replay = replay

    def _process_message(self, msg):
        if self.replay is None or msg["type"] != "sample":
            return
        name = msg["name"]
        guide_msg = self.replay.sites.get(name)
        if guide_msg is None:
            if name in self.replay.other:
                raise RuntimeError(f"site {name} must be sampled in trace")
            return
        if msg["is_observed"]:
            return
        if guide_msg["is_observed"]:
            raise RuntimeError(f"site {name} must be sampled in trace")
        msg["done"] = True
        msg["value"] = guide_msg["value"]
        msg["infer"] = guide_msg["infer"]

    def _postprocess_message(self, msg):
        kind = msg["type"]
        name = msg["name"]
        if kind == "sample":
            if msg["infer"].get("_do_not_trace"):
                return
            if name in self.sites or name in self.other:
                raise RuntimeError(f"Multiple sample sites named '{name}'")
            self.sites[name] = msg
        elif kind == "param":
            if name in self.sites:
                raise RuntimeError(f"{name} is already in the trace as a sample")
            self.other[name] = kind

    def trace(self) -> Trace:
        """A :class:`~pyro.poutine.Trace` of the recorded sites (for the fallback)."""
        tr = Trace()
        for name, kind in self.other.items():
            tr.add_node(name, name=name, type=kind)
        for name, msg in self.sites.items():
            if not site_is_subsample(msg):
                tr.add_node(name, **msg)
        return tr


class LeanTrace_ELBO(Trace_ELBO):
    """:class:`pyro.infer.Trace_ELBO` with a lean path for reparameterised guides.

    Same constructor, same value, same gradients (module docstring).  ``loss_and_grads``
    and ``differentiable_loss`` take the lean path when validation is off; ``loss`` (no
    gradients) is ``Trace_ELBO``'s.

    Args: as :class:`pyro.infer.Trace_ELBO` (``num_particles``, ``retain_graph``, ...).
    Shapes: whatever the model and guide use; the returned loss is a float.
    """

    def _lean_particle(self, model, guide, args, kwargs):
        """``(loss, surrogate loss, trainable params?)`` of one particle, as
        ``Trace_ELBO._differentiable_loss_particle`` computes them."""
        g = _Recorder()
        with g:
            guide(*args, **kwargs)
        m = _Recorder(replay=g)
        with m:
            model(*args, **kwargs)
        # in Trace_ELBO's order (model log-densities, then the guide's score parts), so that
        # autograd accumulates the gradients in the same order
        elbo = 0.0
        surrogate = 0.0
        for site in m.sites.values():
            if site_is_subsample(site):
                continue
            lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            lp_sum = scale_and_mask(lp, site["scale"], site["mask"]).sum()
            elbo = elbo + torch_item(lp_sum)
            surrogate = surrogate + lp_sum
        for site in g.sites.values():
            if site_is_subsample(site):
                continue
            fn = site["fn"]
            if fn.has_rsample and type(fn).score_parts is _DEFAULT_SCORE_PARTS:
                # Pyro's default score_parts of a reparameterised site, without building it:
                # log_prob, no score function, the entropy term being the log-density itself
                lp_sum = scale_and_mask(fn.log_prob(site["value"], *site["args"], **site["kwargs"]),
                                        site["scale"], site["mask"]).sum()
                elbo = elbo - torch_item(lp_sum)
                surrogate = surrogate - lp_sum
                continue
            parts = fn.score_parts(site["value"], *site["args"], **site["kwargs"])
            if not is_identically_zero(parts.score_function):
                # a score-function term: Trace_ELBO's own particle code, on these same draws
                model_trace, guide_trace = m.trace(), g.trace()
                model_trace.compute_log_prob()
                guide_trace.compute_score_parts()
                loss, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
                return loss, surrogate, bool(m.other or g.other)
            lp = scale_and_mask(parts.log_prob, site["scale"], site["mask"])
            lp_sum = lp.sum()
            elbo = elbo - torch_item(lp_sum)
            if parts.entropy_term is parts.log_prob:
                # Trace_ELBO scales and sums the entropy term apart: the same values as lp's
                surrogate = surrogate - lp_sum
            else:
                entropy = scale_and_mask(parts.entropy_term, site["scale"], site["mask"])
                if not is_identically_zero(entropy):
                    surrogate = surrogate - entropy.sum()
        return -elbo, -surrogate, bool(m.other or g.other)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The ELBO loss as a differentiable 0-d tensor (its value is the loss's, its gradient the
        surrogate's), as :meth:`pyro.infer.Trace_ELBO.differentiable_loss`."""
        if is_validation_enabled() or self.vectorize_particles:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        loss = 0.0
        surrogate_loss = 0.0
        for _ in range(self.num_particles):
            loss_particle, surrogate_particle, _ = self._lean_particle(model, guide, args, kwargs)
            surrogate_loss += surrogate_particle / self.num_particles
            loss += loss_particle / self.num_particles
        warn_if_nan(surrogate_loss, "loss")
        return loss + (surrogate_loss - torch_item(surrogate_loss))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The ELBO loss (a float) of ``num_particles`` particles; backpropagates the surrogate
        into the parameters' ``.grad``, as :meth:`pyro.infer.Trace_ELBO.loss_and_grads`."""
        if is_validation_enabled() or self.vectorize_particles:
            return super().loss_and_grads(model, guide, *args, **kwargs)
        loss = 0.0
        for _ in range(self.num_particles):
            loss_particle, surrogate_particle, trainable = self._lean_particle(model, guide, args, kwargs)
            loss += loss_particle / self.num_particles
            if trainable and getattr(surrogate_particle, "requires_grad", False):
                surrogate_particle = surrogate_particle / self.num_particles
                surrogate_particle.backward(retain_graph=self.retain_graph)
        warn_if_nan(loss, "loss")
        return loss
