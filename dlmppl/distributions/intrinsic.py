r"""The intrinsic uniform measure of a metric field: density ``∝ √det G(z)`` on ``R^d``.

A metric field ``G`` (a :class:`~dlmppl.geometry.MetricField`) on the chart
``R^d`` (or on the open ball of radius ``R``) defines the Riemannian volume
measure ``dM(z) = √det G(z) dz``.  When the volume ``V = ∫ √det G(z) dz`` is
finite, the *intrinsic uniform distribution* is ``dM / V``; its density with
respect to the Lebesgue measure of the coordinates ``z`` is

.. math::  p(z) = \sqrt{\det G(z)} / V  \qquad (z ∈ A),

(Chadebec & Allassonnière, "A Geometric Perspective on Variational
Autoencoders", NeurIPS 2022, Sec. 4.5; Pennec 2006 for uniform measures on
Riemannian manifolds).  :class:`IntrinsicUniform` is this law as a Pyro
distribution: ``log_prob(z) = ½ log det G(z) − log_normalizer``.

Base measure: the coordinates are Euclidean (``support`` is ``real_vector`` or
:func:`ball`), so unlike the manifold families, ``log_prob`` is a density with
respect to the **Lebesgue** measure of ``z`` — the only measure in which the
non-constant density ``√det G`` is meaningful (with respect to its own volume
measure the law is the constant ``1/V``).  ``log_normalizer`` defaults to 0
(unnormalised: an MCMC target); pass ``log V`` (closed form, or
:func:`log_volume_grid` in low dimension) to normalise.

There is no exact sampler: draw with MCMC, e.g. Pyro's ``NUTS`` or
:class:`dlmppl.inference.RiemannianNUTS` on a model with this site, or
:func:`dlmppl.models.intrinsic.intrinsic_codes`.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints as _tc

from .._shapes import broadcast_shapes
from ..constraints import ball
from .base import check_expand, check_value_shape

__all__ = ["IntrinsicUniform", "log_volume_grid"]


class IntrinsicUniform(TorchDistribution):
    r"""Intrinsic uniform law of a metric field: ``p(z) ∝ √det G(z | c)`` on ``R^d`` or ``B(0, R)``.

    Parameters
    ----------
    metric : a :class:`~dlmppl.geometry.MetricField` on ``R^d`` (``metric.logdet`` is used).
    dim : ``d`` (default ``metric.dim``).
    radius : truncate to the open ball ``‖z‖ < radius`` (``support = ball(radius)``);
        ``None``: ``support = real_vector`` (then the volume must be finite for a proper law,
        e.g. :class:`~dlmppl.geometry.ChadebecMetric` with ``tau > 0``).
    condition : passed to the metric (``metric.logdet(z, condition=condition)``).
    log_normalizer : ``log V`` subtracted from ``log_prob`` (default 0: unnormalised).

    Shapes: ``event_shape = (d,)``, ``batch_shape = ()`` (or that of ``expand``); ``log_prob(z)``
    for ``z`` ``(..., d)`` has shape ``(...)`` broadcast with ``batch_shape``; outside the ball
    it is ``-inf`` (not a validation error: the density is 0 there).  Integer points are
    read in torch's default float dtype.
    Reference: Chadebec & Allassonnière, NeurIPS 2022, Sec. 4.5.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, metric, dim: int | None = None, radius: float | None = None, condition=None, log_normalizer=0.0, validate_args=None):
        from ..geometry.metrics import MetricField

        if not isinstance(metric, MetricField):
            raise ValueError(f"metric must be a dlmppl.geometry.MetricField, got {type(metric).__name__}")
        dim = getattr(metric, "dim", None) if dim is None else dim
        if dim is None or int(dim) < 1:
            raise ValueError("dim: give the latent dimension (the metric has no attribute dim)")
        if radius is not None and not radius > 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        self.metric = metric
        self.radius = None if radius is None else float(radius)
        self.condition = condition
        self.log_normalizer = log_normalizer
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size((int(dim),)), validate_args=validate_args)

    @property
    def support(self):
        return _tc.real_vector if self.radius is None else ball(self.radius)

    @classmethod
    def infer_shapes(cls, metric=None, dim=None, **kwargs):
        """``((), (d,))`` with ``d = dim`` or ``metric.dim`` (Pyro's API; the arguments are given as themselves)."""
        d = dim if isinstance(dim, int) and not isinstance(dim, bool) else getattr(metric, "dim", None)
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"dim: IntrinsicUniform.infer_shapes needs the latent dimension (dim= or metric.dim), got {dim!r}")
        return torch.Size(), torch.Size((d,))

    def expand(self, batch_shape, _instance=None):
        batch_shape = check_expand(type(self).__name__, self.batch_shape, batch_shape)
        if batch_shape == self.batch_shape:
            return self
        # independent copies: Pyro's plates expand sites; log_prob already broadcasts over z's batch
        new = self._get_checked_instance(IntrinsicUniform, _instance)
        new.metric, new.radius, new.condition, new.log_normalizer = self.metric, self.radius, self.condition, self.log_normalizer
        super(IntrinsicUniform, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _validate_sample(self, value):
        """``ValueError`` naming ``value`` for a non-tensor, complex, misshapen or non-finite value.

        Points outside the ball are not an error: their density is 0 (``log_prob = -inf``).
        """
        owner = type(self).__name__
        check_value_shape(owner, value, self.batch_shape, self.event_shape)
        if value.is_floating_point() and value.numel():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                raise ValueError(f"value: {owner}.log_prob needs finite points, got {int((~finite).sum())} NaN/inf coordinates")

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value)
        if not value.is_floating_point():  # integer points: torch's default float dtype, as in torch's promotion
            value = value.to(torch.get_default_dtype())
        lp = 0.5 * self.metric.logdet(value, condition=self.condition) - self.log_normalizer
        if self.radius is not None:
            lp = torch.where(value.norm(dim=-1) < self.radius, lp, torch.full_like(lp, -math.inf))
        # torch's shape rule: the value's batch shape broadcast with batch_shape (expanded copies)
        return lp.expand(broadcast_shapes(lp.shape, self.batch_shape))

    def sample(self, sample_shape=torch.Size()):
        raise NotImplementedError(
            "IntrinsicUniform has no exact sampler: sample it with MCMC (pyro.infer.NUTS / dlmppl.inference.RiemannianNUTS "
            "with init_to_value, or dlmppl.models.intrinsic.intrinsic_codes)"
        )


def log_volume_grid(metric, low, high, n: int = 200, condition=None, radius: float | None = None):
    r"""``log ∫ √det G(z) dz`` over the box ``[low, high]^d`` (or its intersection with ``‖z‖ < radius``)
    by the midpoint rule on an ``n^d`` grid; for ``d ≤ 3`` (cost ``n^d`` metric evaluations).

    ``low``, ``high``: floats or ``(d,)`` tensors. Returns a scalar tensor.
    """
    dim = int(metric.dim)
    if dim > 3:
        raise ValueError(f"log_volume_grid is for d <= 3 (n^d points), got d={dim}")
    low = torch.as_tensor(low, dtype=torch.get_default_dtype()).expand(dim)
    high = torch.as_tensor(high, dtype=low.dtype).expand(dim)
    axes = [low[i] + (torch.arange(n, dtype=low.dtype, device=low.device) + 0.5) * (high[i] - low[i]) / n for i in range(dim)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)
    lv = 0.5 * metric.logdet(grid, condition=condition)
    if radius is not None:
        lv = torch.where(grid.norm(dim=-1) < radius, lv, torch.full_like(lv, -math.inf))
    return torch.logsumexp(lv, 0) + torch.log((high - low) / n).sum()
