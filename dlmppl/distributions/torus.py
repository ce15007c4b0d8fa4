r"""Distributions on the flat torus ``T^n`` (points: angles in ``(-π, π]``, :mod:`dlmppl.geometry.torus`).

Base measure.  The torus' Riemannian volume in angle coordinates is Lebesgue measure
``dθ_1 … dθ_n`` on the fundamental domain ``(-π, π]^n`` (total ``(2π)^n``), so a
density of angles in the usual sense (Pyro's ``VonMises``, ``SineBivariateVonMises``)
is already a density with respect to the torus volume (DESIGN.md, "Base measure").

* ``ManifoldUniform(Torus(), (n,))`` works as for every compact family:
  ``log_prob = -n log 2π``, draws ``π - 2π U``.
* :class:`OnTorus` declares a Pyro distribution of angles to be a distribution on
  ``T^n``: its ``support`` becomes ``dlmppl.constraints.manifold(Torus(n))``, so the
  Riemannian HMC/NUTS kernels, :class:`~dlmppl.inference.AutoManifoldNormal` and the
  diagnostics treat the site as a torus site (they dispatch on the support).  Sampling
  and densities are delegated: draws are wrapped to the canonical ``(-π, π]`` and
  ``log_prob`` evaluates the base at the canonical representative of its argument.
  The base must be a law of angles, i.e. its density on ``(-π, π]^n`` must be the
  one meant (it need not be periodic: it is read on that fundamental domain).
  ``OnTorus(VonMises(loc, κ).to_event(1))`` is a product of von Mises laws (Mardia &
  Jupp 2000, "Directional Statistics", §3.5.4); ``OnTorus(SineBivariateVonMises(...))``
  the sine model of Singh, Hnizdo & Demchuk (2002, Biometrika 89) on ``T^2``.
* :class:`TorusVonMises` ``(loc, concentration)``: that product, with validation.
* :class:`TorusWrappedNormal`: what ``WrappedNormal(Torus(), loc, scale)`` builds
  (registered with :func:`~dlmppl.distributions.wrapped_normal.register_wrapped_normal`):
  ``z = wrap(loc + σ ε)``, ``ε ~ N(0, I_n)``, with the exact density of the wrapped sum
  (Mardia & Jupp 2000, §3.5.7), coordinatewise (isotropic or diagonal scale).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.distributions import constraints as _tc

from .. import constraints as _constraints
from ..geometry.torus import Torus, TorusGeometry, wrap_angle
from .base import ManifoldDistribution, broadcast_batch_shapes, check_expand
from .wrapped_normal import WrappedNormal, register_wrapped_normal

__all__ = ["OnTorus", "TorusVonMises", "TorusWrappedNormal", "wrapped_normal_log_density"]

_LOG_2PI = math.log(2 * math.pi)

# ---------------------------------------------------------------------------------- wrapped normal

_SWITCH = 2.0
"""Scale at which the wrapped normal's density switches from the direct sum to the Fourier series."""
_DIRECT_TERMS = 5
"""Direct sum over ``|k| ≤ 5`` for ``σ < 2``."""
_FOURIER_TERMS = 5
"""Fourier series over ``m ≤ 5`` for ``σ ≥ 2``."""


def wrapped_normal_log_density(delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r"""``log Σ_{k∈Z} N(δ + 2πk; 0, σ²)``, the density of ``wrap(σ ε)`` on the circle, elementwise.

    ``delta`` (angles, any real; read modulo 2π) and ``scale`` (> 0) broadcast.  Two exact
    series, each truncated after a fixed number of terms, so the cost is fixed (no
    data-dependent term count, no host synchronisation) and the error bounded for every σ:

    * ``σ < 2``: the direct sum over ``|k| ≤ 5`` at ``δ ∈ (-π, π]``.  A dropped term has
      ``|δ + 2πk| ≥ 11π``, so it is below ``exp(-((11π)² - π²)/(2σ²)) ≤ e^{-148}`` times the
      ``k = 0`` term; relative error below ``e^{-147}``.
    * ``σ ≥ 2``: the Fourier series (Jacobi theta function)
      ``(1/2π)[1 + 2 Σ_{m=1}^{5} e^{-m²σ²/2} cos mδ]``; the dropped tail is below
      ``(1/π) e^{-72}·1.01`` while the density is at least ``(1/2π)(1 - 2Σ e^{-2m²}) > 0.1``:
      relative error below ``e^{-70}``.

    Both branches are computed with their argument clamped into their own range, so the
    value and its gradient (in ``delta`` and ``scale``) are finite everywhere.
    """
    delta = wrap_angle(delta)
    delta, scale = torch.broadcast_tensors(delta, scale)
    small = scale < _SWITCH
    s_dir = torch.where(small, scale, torch.ones_like(scale))
    s_fou = torch.where(small, torch.full_like(scale, 2 * _SWITCH), scale)
    k = torch.arange(-_DIRECT_TERMS, _DIRECT_TERMS + 1, dtype=delta.dtype, device=delta.device)
    k = k.reshape((-1,) + (1,) * delta.dim())
    z = (delta + 2 * math.pi * k) / s_dir
    direct = torch.logsumexp(-0.5 * z.pow(2), 0) - s_dir.log() - 0.5 * _LOG_2PI
    m = torch.arange(1, _FOURIER_TERMS + 1, dtype=delta.dtype, device=delta.device).reshape((-1,) + (1,) * delta.dim())
    series = (torch.exp(-0.5 * m.pow(2) * s_fou.pow(2)) * torch.cos(m * delta)).sum(0)
    fourier = torch.log1p(2 * series) - _LOG_2PI
    return torch.where(small, direct, fourier)


@register_wrapped_normal(TorusGeometry)
class TorusWrappedNormal(WrappedNormal):
    r"""Wrapped normal on the torus: ``z = wrap(loc + σ ε)``, ``ε ~ N(0, I_n)``.

    Built by ``WrappedNormal(Torus(), loc, scale)`` (the registered subclass).

    Args:
        manifold: a :class:`~dlmppl.geometry.torus.Torus`.
        loc: angles, shape ``batch_shape + (n,)`` (on the torus: within tolerance of ``[-π, π]``).
        scale: positive, finite standard deviations (radians): isotropic, shape ``batch_shape``
            or ``batch_shape + (1,)``, or diagonal, shape ``batch_shape + (n,)``.

    The coordinates are independent wrapped normals, so ``log_prob`` is the sum over the
    ``n`` coordinates of :func:`wrapped_normal_log_density` of ``wrap(z - loc)`` (exact up to
    a relative error below ``e^{-70}``), a density with respect to the torus volume
    (Lebesgue on ``(-π, π]^n``).  ``rsample`` is differentiable in ``loc`` and ``scale``
    (the wrap has derivative 1).  Draws are canonical angles in ``(-π, π]``.
    """

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return wrap_angle(self.loc + self.scale * eps)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = self._floating(value)
        return wrapped_normal_log_density(value - self.loc, self.scale).sum(-1)

    @property
    def mean(self):
        """The circular mean direction ``loc`` (the Fréchet mean for scales below about π/2)."""
        return self.loc


# ---------------------------------------------------------------------------------- Pyro angle laws on T^n


def _check_base(base):
    if not isinstance(base, torch.distributions.Distribution):
        raise ValueError(f"base: OnTorus needs a torch/Pyro distribution of angles, got {type(base).__name__}")
    if base.support.is_discrete:
        raise ValueError(f"base: OnTorus needs a continuous distribution of angles, got the discrete {type(base).__name__}")
    if len(base.event_shape) > 1:
        raise ValueError(
            f"base: OnTorus needs event_shape (n,) (or () read as one angle per last batch coordinate), "
            f"got event_shape {tuple(base.event_shape)} of {type(base).__name__}"
        )
    if len(base.event_shape) == 0:
        if len(base.batch_shape) == 0:
            raise ValueError(
                f"base: OnTorus reads a scalar {type(base).__name__} with batch_shape (..., n) as a law on T^n; "
                "got batch_shape (): give its parameters a last dimension n (e.g. loc of shape (1,) for T^1)"
            )
        base = base.to_event(1)
    if base.event_shape[0] < 1:
        raise ValueError(f"base: OnTorus needs at least one angle, got event_shape {tuple(base.event_shape)}")
    return base


class OnTorus(ManifoldDistribution):
    r"""A Pyro distribution of angles, declared a distribution on the torus ``T^n``.

    Args:
        base: a continuous torch/Pyro distribution of angles with ``event_shape (n,)``
            (e.g. ``SineBivariateVonMises``, ``n = 2``; ``VonMises(loc, κ).to_event(1)``), or
            ``event_shape ()`` with ``batch_shape (..., n)`` (its last batch dimension is then
            read as the torus coordinates: ``OnTorus(VonMises(loc, κ))`` with ``loc`` ``(..., n)``).
        validate_args: Pyro's flag (value checks: shape, finite, on the torus).

    ``support`` is ``dlmppl.constraints.manifold(Torus(n))``; ``batch_shape`` and
    ``event_shape (n,)`` are the base's (after the reading above).  ``sample`` /
    ``rsample`` (when the base has one) are the base's draws wrapped to ``(-π, π]``;
    ``log_prob(θ)`` is ``base.log_prob(wrap(θ))``, a density with respect to the torus
    volume when the base's is one with respect to Lebesgue measure on ``(-π, π]^n``.
    ``expand`` expands the base.
    """

    arg_constraints = {}

    def __init__(self, base, validate_args=None):
        base = _check_base(base)
        self.base_dist = base
        n = int(base.event_shape[0])
        self.manifold = Torus(n)
        super().__init__(base.batch_shape, base.event_shape, validate_args=validate_args)

    @property
    def has_rsample(self):
        return bool(self.base_dist.has_rsample)

    @property
    def support(self):
        return _constraints.manifold(self.manifold)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return wrap_angle(self.base_dist.sample(sample_shape))

    def rsample(self, sample_shape=torch.Size()):
        return wrap_angle(self.base_dist.rsample(sample_shape))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self.base_dist.log_prob(wrap_angle(self._floating(value)))

    def expand(self, batch_shape, _instance=None):
        batch_shape = check_expand(type(self).__name__, self.batch_shape, batch_shape)
        new = self._get_checked_instance(OnTorus, _instance)
        new.base_dist = self.base_dist.expand(batch_shape)
        new.manifold = self.manifold
        ManifoldDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def _dtype(self):
        for name in ("loc", "phi_loc", "mean"):
            try:
                t = getattr(self.base_dist, name)
            except Exception:  # noqa: BLE001 - a base without that attribute (or without a mean)
                continue
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                return t.dtype
        return torch.get_default_dtype()

    def __repr__(self):
        return f"OnTorus({self.base_dist!r})"


class TorusVonMises(OnTorus):
    r"""Product of ``n`` von Mises laws on ``T^n``: ``p(θ) = Π_i exp(κ_i cos(θ_i - μ_i)) / (2π I_0(κ_i))``.

    Args:
        loc: mean angles ``μ``, shape ``batch_shape + (n,)`` (any real; read modulo 2π).
        concentration: ``κ > 0``, finite, broadcasting with ``loc`` (shape ``batch_shape + (n,)``,
            ``batch_shape + (1,)``, a number...).

    ``OnTorus(pyro.distributions.VonMises(loc, κ).to_event(1))`` with parameters checked
    (``ValueError`` naming ``loc`` / ``concentration``, validation on): Pyro's sampler
    (Best & Fisher 1979); ``log_prob`` is the formula above with ``log I_0(κ) = log i0e(κ) + κ``
    (``torch.special.i0e``, exact to round-off, where Pyro's ``VonMises`` approximates ``I_0``
    to about 1e-8), a density w.r.t. the torus volume (Mardia & Jupp 2000, §3.5.4).  No
    ``rsample`` (Pyro's von Mises has none).
    """

    arg_constraints = {"loc": _tc.real, "concentration": _tc.positive}

    def __init__(self, loc, concentration, validate_args=None):
        loc = torch.as_tensor(loc)
        if not loc.is_floating_point():
            if loc.is_complex():
                raise ValueError(f"loc: TorusVonMises needs real angles, got dtype {loc.dtype}")
            loc = loc.to(torch.get_default_dtype())
        if loc.dim() < 1 or loc.shape[-1] < 1:
            raise ValueError(f"loc: TorusVonMises needs shape batch_shape + (n,) with n >= 1, got {tuple(loc.shape)}")
        if isinstance(concentration, torch.Tensor) and concentration.is_complex():
            raise ValueError(f"concentration: TorusVonMises needs a real concentration, got dtype {concentration.dtype}")
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        if concentration.dim() == 0:
            concentration = concentration.reshape(1)
        shape = broadcast_batch_shapes("TorusVonMises", loc=loc.shape, concentration=concentration.shape)
        if shape[-1:] != loc.shape[-1:]:
            raise ValueError(
                f"concentration: TorusVonMises needs a concentration broadcasting with loc {tuple(loc.shape)} "
                f"without changing n, got shape {tuple(concentration.shape)}"
            )
        # (checked by ManifoldDistribution.__init__ with validation on: ValueError naming the argument)
        self.loc = loc.expand(shape)
        self.concentration = concentration.expand(shape)
        base = dist.VonMises(self.loc, self.concentration, validate_args=False).to_event(1)
        super().__init__(base, validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, loc, concentration=()):
        """``batch_shape = broadcast(loc, concentration)[:-1]``, ``event_shape = loc[-1:]``."""
        loc, concentration = torch.Size(loc), torch.Size(concentration)
        if len(loc) < 1 or loc[-1] < 1:
            raise ValueError(f"loc: TorusVonMises needs shape batch_shape + (n,) with n >= 1, got {tuple(loc)}")
        shape = broadcast_batch_shapes(cls.__name__, loc=loc, concentration=concentration)
        return shape[:-1], loc[-1:]

    def expand(self, batch_shape, _instance=None):
        batch_shape = check_expand(type(self).__name__, self.batch_shape, batch_shape)
        new = self._get_checked_instance(TorusVonMises, _instance)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.concentration = self.concentration.expand(batch_shape + self.event_shape)
        new.base_dist = self.base_dist.expand(batch_shape)
        new.manifold = self.manifold
        ManifoldDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        # the normaliser with torch.special.i0e (accurate to float64 round-off); Pyro's VonMises uses
        # a polynomial approximation of I_0 (relative error ~1e-8), and torch's Independent cannot
        # sum an empty batch
        if self._validate_args:
            self._validate_sample(value)
        value = self._floating(value)
        k = self.concentration
        lp = k * (torch.cos(value - self.loc) - 1) - torch.log(torch.special.i0e(k)) - _LOG_2PI
        return lp.sum(-1)

    @property
    def mean(self):
        """The mean direction ``loc`` (wrapped to ``(-π, π]``)."""
        return wrap_angle(self.loc)

    @property
    def _dtype(self):
        return self.loc.dtype
