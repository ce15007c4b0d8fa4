"""Base classes of manifold-valued distributions: validation, shapes and ``expand``.

Everything here is inherited by every :class:`ManifoldDistribution` (the
directional families, ``WrappedNormal``, ``RiemannianNormal``, ``ManifoldUniform``),
so that all of them behave like torch/Pyro distributions at the edges:

* **Parameters** (with validation on, Pyro's ``validate_args``): each tensor named
  in ``arg_constraints`` must be a real floating-point tensor and finite; otherwise
  a ``ValueError`` names it and the bound (``"concentration: must be finite ..."``),
  before torch's own constraint check (whose message also names the argument and
  the constraint, e.g. ``manifold(Sphere: ‖x‖ = 1, ...)``).  Integer and boolean
  parameters are *not* silently accepted here: a family that converts them (the
  directional families convert integer/boolean ``loc`` to torch's default float
  dtype, as torch does with Python numbers) does so before this check.
* **Values** (:meth:`ManifoldDistribution._validate_sample`): a ``ValueError``
  naming ``value`` for a non-tensor, a complex tensor, a wrong event shape, a
  batch shape that does not broadcast, a NaN/inf coordinate, or a point off the
  support (with the largest violation and the tolerance).  Integer/boolean values
  are checked as points of the distribution's floating dtype (``log_prob``
  promotes them as torch's arithmetic does).  A value more precise than the
  distribution (float64 points, float32 parameters) is checked at the
  distribution's precision: a float32 point cast to float64 is still accepted,
  and ``log_prob`` computes in the promoted dtype (``torch.promote_types``), as
  ``torch.distributions.Normal`` does.
* **Shapes**: :meth:`ManifoldDistribution.infer_shapes` (Pyro's classmethod
  signature ``infer_shapes(**arg_shapes) -> (batch_shape, event_shape)``) works for
  every subclass by building the distribution on ``meta`` tensors of the given
  shapes (no memory, no computation), so it agrees with ``__init__`` by
  construction; :meth:`ManifoldDistribution._expanded_batch_shape` gives
  ``expand`` torch's broadcasting rule with a ``ValueError``.
"""

from __future__ import annotations

import geoopt
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import Distribution
from torch.distributions import constraints as _tc

from .. import constraints as _constraints
from .. import manifolds as _manifolds
from .._shapes import broadcast_shapes

__all__ = ["ManifoldDistribution", "ManifoldLocScale", "SphericalLocConcentration"]


def _validation_on(validate_args) -> bool:
    return Distribution._validate_args if validate_args is None else bool(validate_args)


def _is_shape(x) -> bool:
    return isinstance(x, (tuple, list, torch.Size)) and all(isinstance(s, int) and not isinstance(s, bool) for s in x)


def _check_real_float(name: str, owner: str, value: torch.Tensor) -> None:
    if value.is_complex() or not value.is_floating_point():
        raise ValueError(
            f"{name}: {owner} needs a real floating-point tensor, got dtype {value.dtype} "
            f"(convert it, e.g. {name}.to(torch.get_default_dtype()))"
        )


def real_floating(name: str, owner: str, x, what: str = "a real tensor") -> torch.Tensor:
    """``torch.as_tensor(x)``; a ``ValueError`` naming ``name`` when it is complex, torch's default
    float dtype when it is an integer or boolean tensor (as torch reads Python numbers)."""
    x = torch.as_tensor(x)
    if x.is_complex():
        raise ValueError(f"{name}: {owner} needs {what}, got dtype {x.dtype}")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _describe(constraint, value: torch.Tensor, ok: torch.Tensor) -> str:
    """"<constraint> (bound), got k of n off it; the largest violation is v > tol" for an error message."""
    msg = f"{constraint!r}, got {int((~ok).sum())} of {ok.numel()} off it"
    if isinstance(constraint, _constraints.ManifoldConstraint):
        worst = float(_constraints.violation(constraint.manifold, value).max())
        tol = _constraints.tolerance(value.dtype) if constraint.tol is None else constraint.tol
        msg += f"; the largest violation is {worst:.3g} > tolerance {tol:.3g}"
    else:
        msg += f" (first: {value[~ok].flatten()[:3].tolist()})"
    return msg


def broadcast_batch_shapes(owner: str, **shapes) -> torch.Size:
    """``torch.broadcast_shapes`` of named batch shapes, with a ``ValueError`` naming them when they do not broadcast."""
    try:
        return broadcast_shapes(*shapes.values())
    except ValueError:
        desc = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
        raise ValueError(f"{' and '.join(shapes)}: {owner} needs batch shapes that broadcast, got {desc}") from None


def check_value_shape(owner: str, value, batch_shape: torch.Size, event_shape: torch.Size) -> None:
    """``ValueError`` naming ``value`` unless it is a real tensor of shape ``sample_shape + batch_shape' + event_shape``.

    ``batch_shape'`` must broadcast with ``batch_shape`` (torch's rule for ``log_prob``).
    """
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"value: {owner}.log_prob needs a torch.Tensor, got {type(value).__name__}")
    if value.is_complex():
        raise ValueError(f"value: {owner}.log_prob needs real points, got dtype {value.dtype}")
    event_dim = len(event_shape)
    if value.dim() < event_dim or value.shape[value.dim() - event_dim :] != event_shape:
        raise ValueError(
            f"value: the right-most dimensions of value must be the event_shape {tuple(event_shape)} "
            f"of {owner}, got shape {tuple(value.shape)}"
        )
    try:
        broadcast_shapes(value.shape[: value.dim() - event_dim], batch_shape)
    except ValueError:
        raise ValueError(
            f"value: shape {tuple(value.shape)} does not broadcast with batch_shape + event_shape "
            f"{tuple(batch_shape + event_shape)} of {owner}"
        ) from None


def check_expand(owner: str, old: torch.Size, batch_shape) -> torch.Size:
    """``torch.Size(batch_shape)`` if ``old`` expands to it (torch's rule), else a ``ValueError`` naming ``batch_shape``.

    Expandable: at least as many dimensions, and every existing size equals the new
    one or is 1 (``Tensor.expand``); sizes must be ``≥ 0``.
    """
    new = torch.Size(batch_shape)
    ok = len(new) >= len(old) and all(n >= 0 for n in new)
    ok = ok and all(o == n or o == 1 for o, n in zip(reversed(old), reversed(new), strict=False))
    if not ok:
        raise ValueError(
            f"batch_shape: {owner} with batch_shape {tuple(old)} cannot be expanded to {tuple(new)} "
            "(each existing size must equal the new size or be 1, as in Tensor.expand)"
        )
    return new


class ManifoldDistribution(TorchDistribution):
    """A Pyro distribution whose support is ``dlmppl.constraints.manifold(self.manifold)``.

    Subclasses set ``self.manifold`` and their parameters (the tensors named in
    ``arg_constraints``) before calling ``super().__init__``, and implement
    ``log_prob`` as a density with respect to the Riemannian volume measure of
    ``self.manifold`` (DESIGN.md, "Base measure"), calling
    ``self._validate_sample(value)`` first when ``self._validate_args``.  They
    inherit parameter and value validation, ``infer_shapes`` and
    :meth:`_expanded_batch_shape` for ``expand`` (module docstring).
    """

    manifold = None

    def __init__(self, batch_shape=torch.Size(), event_shape=torch.Size(), validate_args=None):
        on = _validation_on(validate_args)
        if on:
            self._check_parameters()
        # torch's own parameter check is replaced by _check_parameters (same constraints, clearer messages)
        super().__init__(batch_shape, event_shape, validate_args=False)
        self._validate_args = on

    @property
    def support(self):
        return _constraints.manifold(self.manifold)

    # ------------------------------------------------------------------------------ validation

    def _parameters(self):
        """``(name, tensor)`` of the tensor parameters named in ``arg_constraints``."""
        out = []
        for name, constraint in self.arg_constraints.items():
            if _tc.is_dependent(constraint):
                continue
            value = self.__dict__.get(name)
            if isinstance(value, torch.Tensor):
                out.append((name, value))
        return out

    def _check_parameters(self) -> None:
        """``ValueError`` naming the first parameter that is not a finite real floating tensor satisfying its constraint."""
        owner = type(self).__name__
        for name, value in self._parameters():
            _check_real_float(name, owner, value)
            if value.numel() == 0:
                continue
            finite = torch.isfinite(value)
            constraint = self.arg_constraints[name]
            ok = constraint.check(value)
            if bool(finite.all() & ok.all()):  # one device sync per parameter, as torch's own check
                continue
            if not bool(finite.all()):
                bad = value[~finite].flatten()[:3].tolist()
                raise ValueError(f"{name}: {owner} needs finite values (no NaN or ±inf), got {bad}")
            raise ValueError(f"{name}: {owner} needs {_describe(constraint, value, ok)}")

    @property
    def _dtype(self):
        """The floating dtype of the distribution (of its first parameter, or its ``dtype`` attribute)."""
        for _, value in self._parameters():
            if value.is_floating_point():
                return value.dtype
        dtype = self.__dict__.get("dtype")
        return dtype if isinstance(dtype, torch.dtype) else torch.get_default_dtype()

    def _floating(self, value):
        """``value`` as a floating tensor: integer/boolean points are read in the distribution's dtype."""
        if not isinstance(value, torch.Tensor):
            return torch.as_tensor(value, dtype=self._dtype)
        return value if value.is_floating_point() else value.to(self._dtype)

    def _checked_value(self, value):
        """``value`` checked by :meth:`_validate_sample` (with validation on), read by :meth:`_floating`."""
        if self._validate_args:
            self._validate_sample(value)
        return self._floating(value)

    def _validate_sample(self, value):
        """``ValueError`` naming ``value`` unless it is a batch of points of the support (module docstring)."""
        owner = type(self).__name__
        check_value_shape(owner, value, self.batch_shape, self.event_shape)
        dtype = self._dtype
        check = value
        if not value.is_floating_point():
            check = value.to(dtype)
        elif torch.finfo(value.dtype).eps < torch.finfo(dtype).eps:
            check = value.to(dtype)  # a float32 point cast to float64 is still a point of a float32 distribution
        if check.numel() == 0:
            return
        finite = torch.isfinite(check)
        support = self.support
        ok = support.check(check)
        if bool(finite.all() & ok.all()):  # one device sync, as torch's own check
            return
        if not bool(finite.all()):
            raise ValueError(f"value: {owner}.log_prob needs finite points, got {int((~finite).sum())} NaN/inf coordinates")
        raise ValueError(f"value: {owner}.log_prob needs points in its support, {_describe(support, check, ok)}")

    # ------------------------------------------------------------------------------ shapes

    @classmethod
    def infer_shapes(cls, **arg_shapes):
        """``(batch_shape, event_shape)`` of ``cls(**args)`` for arguments of the given shapes (Pyro's API).

        Tensor arguments are given by their shapes (tuples of ints); other arguments
        (``manifold``, numbers, ``None``) as themselves: the manifold carries the
        curvature's batch shape and decides the intrinsic dimension, so it is needed
        (Pyro's generic test passes ``()`` for non-tensor arguments, which cannot
        identify a manifold: a ``ValueError`` names ``manifold`` then).  The
        distribution is built on ``meta`` tensors (no data, no computation), so the
        shapes are those of ``__init__`` by construction.
        """
        args = {}
        for name, shape in arg_shapes.items():
            if name == "manifold":
                if not isinstance(shape, geoopt.Manifold):
                    raise ValueError(
                        f"manifold: {cls.__name__}.infer_shapes needs the manifold itself (its curvature's batch "
                        f"shape and dimension decide the shapes), got {shape!r}"
                    )
                args[name] = shape
            elif _is_shape(shape):
                args[name] = torch.empty(tuple(shape), device="meta")
            else:
                args[name] = shape
        d = cls(**args, validate_args=False)
        return d.batch_shape, d.event_shape

    def _expanded_batch_shape(self, batch_shape) -> torch.Size:
        """Check ``expand(batch_shape)`` against torch's rule (:func:`check_expand`)."""
        return check_expand(type(self).__name__, self.batch_shape, batch_shape)

    _expand_attrs = ()  # attributes that expand shares as they are, besides the manifold

    def expand(self, batch_shape, _instance=None):
        """The distribution with every parameter (the tensors named in ``arg_constraints``) expanded to
        ``batch_shape`` (torch's rule, :func:`check_expand`); ``_expand_attrs`` are shared.

        To its own batch shape (without ``_instance``) it returns ``self``: the distributions are
        immutable, and ``pyro.plate`` expands every site's distribution, so that a site already of
        the plate's shape (the VAEs' latent sites) costs no copy at each step."""
        if _instance is None and tuple(batch_shape) == tuple(self.batch_shape):
            return self
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = self._expanded_batch_shape(batch_shape)
        nb = len(self.batch_shape)
        new.manifold = self.manifold
        for name in self._expand_attrs:
            setattr(new, name, getattr(self, name))
        for name, value in self._parameters():
            setattr(new, name, value.expand(batch_shape + value.shape[nb:]))
        ManifoldDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


class SphericalLocConcentration(ManifoldDistribution):
    """Base of the directional families with a mean direction and a concentration.

    ``loc`` has shape ``batch_shape + (d,)`` (unit vectors, ``d ≥ 2``) and
    ``concentration`` shape ``batch_shape`` (non-negative, finite); both broadcast
    (a ``ValueError`` naming them when they do not).  Integer or boolean tensors are
    converted to torch's default float dtype (as Python numbers are); complex ones
    raise.  The manifold is ``S^{d-1}`` (``SphereExact``).
    """

    arg_constraints = {
        "loc": _constraints.manifold(_manifolds.Sphere()),
        "concentration": _tc.nonnegative,
    }
    has_rsample = True

    _sphere = None  # one SphereExact shared by every instance (it holds no state; building one costs ~10 µs)

    def __init__(self, loc, concentration, validate_args=None):
        owner = type(self).__name__
        if SphericalLocConcentration._sphere is None:
            SphericalLocConcentration._sphere = _manifolds.SphereExact()
        self.manifold = SphericalLocConcentration._sphere
        loc = real_floating("loc", owner, loc, "real unit vectors")
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise ValueError(f"loc: {owner} needs shape batch_shape + (d,) with d >= 2, got {tuple(loc.shape)}")
        if isinstance(concentration, torch.Tensor) and concentration.is_complex():
            raise ValueError(f"concentration: {owner} needs a real concentration, got dtype {concentration.dtype}")
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        batch_shape = broadcast_batch_shapes(owner, loc=loc.shape[:-1], concentration=concentration.shape)
        event_shape = loc.shape[-1:]
        self.loc = loc.expand(batch_shape + event_shape)
        self.concentration = concentration.expand(batch_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, loc, concentration):
        """``batch_shape = broadcast(loc[:-1], concentration)``, ``event_shape = loc[-1:]``."""
        loc, concentration = torch.Size(loc), torch.Size(concentration)
        if len(loc) < 1 or loc[-1] < 2:
            raise ValueError(f"loc: {cls.__name__} needs shape batch_shape + (d,) with d >= 2, got {tuple(loc)}")
        return broadcast_batch_shapes(cls.__name__, loc=loc[:-1], concentration=concentration), loc[-1:]

    @property
    def dim(self) -> int:
        """Ambient dimension ``d`` (the sphere is ``S^{d-1}``)."""
        return self.event_shape[0]

    def _promoted(self, value):
        """``(loc, concentration, value)`` in the promoted dtype of the distribution and ``value`` (torch's rule)."""
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value, dtype=self.loc.dtype, device=self.loc.device)
        dtype = torch.promote_types(self.loc.dtype, value.dtype)
        if dtype == self.loc.dtype and value.dtype == dtype:
            return self.loc, self.concentration, value
        return self.loc.to(dtype), self.concentration.to(dtype), value.to(dtype)


class ManifoldLocScale(ManifoldDistribution):
    """Base of the location–scale families on a manifold (``WrappedNormal``, ``RiemannianNormal``).

    ``loc``: points of shape ``batch_shape + (n,)``; ``scale``: positive and finite, with a
    trailing dimension (``1`` for an isotropic scale, ``d`` for a diagonal one); the
    manifold's curvature may carry a batch ``batch_shape + (1,)``; the three broadcast (a
    ``ValueError`` naming them when they do not).  A subclass reads its manifold's
    :class:`~dlmppl.geometry.Geometry` with ``_geometry_of(manifold)`` (``ValueError`` for
    an unsupported family; the intrinsic dimension ``d`` and the sectional curvature come
    from it) and shapes its scale with ``_scale_shape(scale, d)``; with validation on it
    checks ``_check_curvature(loc)`` before the support check of ``loc`` (which needs a
    valid curvature) and ``_check_law()`` after the parameter checks.  ``expand`` keeps
    the attributes named in ``_expand_attrs``.
    """

    has_rsample = True
    _expand_attrs = ("_geometry", "_dim")

    def __init__(self, manifold, loc, scale, validate_args=None):
        owner = type(self).__name__
        g = self._geometry_of(manifold)
        if not isinstance(loc, torch.Tensor):
            loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
        if loc.dim() < 1:
            raise ValueError(f"loc: expected a point of shape batch_shape + (n,), got shape {tuple(loc.shape)}")
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        d, p = g.intrinsic_dim(loc.shape[-1:]), g.sectional_curvature(loc)
        if d < 1:
            raise ValueError(f"loc: the manifold has dimension {d} for points of shape {tuple(loc.shape)}")
        scale = self._scale_shape(scale, d)
        p_batch = p.shape[:-1] if p.dim() >= 1 else torch.Size()
        batch_shape = broadcast_batch_shapes(owner, loc=loc.shape[:-1], scale=scale.shape[:-1], curvature=p_batch)
        self.manifold, self._geometry, self._dim = manifold, g, d
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self.scale = scale.expand(batch_shape + scale.shape[-1:])
        if _validation_on(validate_args):
            self._check_curvature(loc)
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)
        if self._validate_args:
            self._check_law()

    @property
    def arg_constraints(self):
        return {"loc": _constraints.manifold(self.manifold), "scale": _tc.positive}

    @property
    def dim(self) -> int:
        """Intrinsic dimension ``d``."""
        return self._dim

