r"""The uniform (normalised Riemannian volume) distribution on a compact manifold.

* Sphere :math:`S^{d-1} \subset \mathbb{R}^d` (``event_shape = (d,)``): the normalised
  surface measure, density :math:`1/|S^{d-1}|`, :math:`|S^{d-1}| = 2\pi^{d/2}/\Gamma(d/2)`;
  samples are normalised standard Gaussian vectors.
* Stiefel manifold :math:`V_{n,p} = \{X \in \mathbb{R}^{n\times p} : X^\top X = I\}`
  (``event_shape = (n, p)``, ``n ≥ p``): the Haar measure.  Samples are the ``Q`` factor
  of the QR decomposition of an ``n×p`` standard Gaussian matrix with the signs of the
  columns fixed so that ``diag(R) > 0`` (without that correction LAPACK's ``Q`` is not
  Haar distributed), Mezzadri (2007), "How to generate random matrices from the
  classical compact groups", Notices AMS 54(5).  The volume with respect to geoopt's
  ``CanonicalStiefel`` metric :math:`\langle U,V\rangle = \mathrm{tr}\,U^\top(I-\tfrac12XX^\top)V`
  is James' (1954)

  .. math:: \mathrm{vol}\,V_{n,p} = \frac{2^p \pi^{np/2}}{\Gamma_p(n/2)}, \qquad
            \Gamma_p(a) = \pi^{p(p-1)/4}\prod_{j=1}^p \Gamma\!\left(a - \tfrac{j-1}{2}\right);

  the embedded (Frobenius) metric of ``EuclideanStiefel`` stretches the ``p(p-1)/2``
  skew directions by ``√2``, so its volume is ``2^{p(p-1)/4}`` times larger.  Each
  ``log_prob`` is minus the log volume of the manifold it is given (DESIGN.md, "Base
  measure").

* Flat torus :math:`T^n` (``Torus()``, angles in ``(-π, π]``, ``event_shape = (n,)``):
  density :math:`(2\pi)^{-n}`, samples ``π - 2π U`` coordinatewise (:mod:`dlmppl.geometry.torus`).

Non-compact manifolds (Euclidean, hyperbolic models, SPD matrices, ...) have no
uniform distribution: they raise a ``ValueError`` naming the manifold.
"""

from __future__ import annotations

import torch

from .._shapes import broadcast_shapes
from ..geometry import geometry_of
from .base import ManifoldDistribution

__all__ = ["ManifoldUniform", "log_volume"]

def log_volume(manifold, event_shape) -> float:
    r"""log of the Riemannian volume of a compact ``manifold`` with points of ``event_shape``.

    The family's :meth:`~dlmppl.geometry.Geometry.log_volume`: sphere ``(d,)``:
    ``log 2 + (d/2) log π - lgamma(d/2)``; Stiefel ``(n, p)``: ``p log 2 + (np/2) log π -
    log Γ_p(n/2)`` for the canonical metric, plus ``p(p-1)/4 · log 2`` for the Euclidean
    (embedded) metric.  Raises ``ValueError`` naming the manifold when it is not compact.
    """
    event_shape = tuple(int(s) for s in event_shape)
    lv = geometry_of(manifold).log_volume(event_shape)
    if lv is None:
        raise ValueError(
            f"ManifoldUniform: manifold {type(manifold).__name__} is not compact: it has no uniform distribution"
        )
    return float(lv)


def _size(name: str, shape) -> torch.Size:
    try:
        out = torch.Size(shape)
    except TypeError:
        raise ValueError(f"{name}: ManifoldUniform needs a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in out):
        raise ValueError(f"{name}: ManifoldUniform needs sizes >= 0, got {tuple(out)}")
    return out


class ManifoldUniform(ManifoldDistribution):
    r"""Uniform distribution (normalised Riemannian volume) on a compact manifold.

    Args:
        manifold: a sphere (``Sphere``/``SphereExact``) or a Stiefel manifold
            (``Stiefel()``/``CanonicalStiefel``/``EuclideanStiefel[Exact]``).
        event_shape: ``(d,)`` for ``S^{d-1}``, ``(n, p)`` for ``V_{n,p}``.
        batch_shape: batch shape of the (identical) distributions.
        dtype, device: of samples and log densities (default dtype: torch's default).

    ``log_prob(x) = -log vol(M)`` for every ``x`` on ``M``, shape ``x``'s batch shape
    broadcast with ``batch_shape``, dtype ``torch.promote_types(dtype, x.dtype)``;
    samples are exact (normalised Gaussians; QR with sign correction, Mezzadri 2007).
    There are no parameters: ``rsample`` is ``sample`` (reparameterised trivially).
    """

    arg_constraints = {}
    has_rsample = True
    _expand_attrs = ("_log_volume", "_geometry", "dtype", "device")

    def __init__(self, manifold, event_shape, batch_shape=(), dtype=None, device=None, validate_args=None):
        self.manifold = manifold
        event_shape = _size("event_shape", event_shape)
        self._log_volume = log_volume(manifold, event_shape)
        self._geometry = geometry_of(manifold)
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise ValueError(f"dtype: ManifoldUniform needs a floating dtype, got {dtype!r}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        super().__init__(_size("batch_shape", batch_shape), event_shape, validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, manifold=None, event_shape=(), batch_shape=(), **kwargs):
        """``(batch_shape, event_shape)``: ManifoldUniform takes its shapes as arguments (given as themselves).

        The manifold, when given, is checked against ``event_shape`` as in ``__init__``.
        """
        event_shape = _size("event_shape", event_shape)
        if not event_shape:  # (Pyro's generic test passes () for non-tensor arguments: it cannot name the shapes)
            raise ValueError("event_shape: ManifoldUniform.infer_shapes needs the event shape itself, (d,) or (n, p), got ()")
        if manifold is not None:
            log_volume(manifold, event_shape)
        return _size("batch_shape", batch_shape), event_shape

    @property
    def log_volume(self) -> float:
        """log of the Riemannian volume of the manifold."""
        return self._log_volume

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        return self._geometry.random_uniform(shape, self.dtype, self.device)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value)
        dtype = torch.promote_types(self.dtype, value.dtype)  # torch's promotion: float64 points give float64
        shape = value.shape[: value.dim() - len(self.event_shape)]
        if shape != self.batch_shape:
            # only when they differ
            shape = broadcast_shapes(shape, self.batch_shape)
        return torch.full(shape, -self._log_volume, dtype=dtype, device=value.device)

    def entropy(self):
        return torch.full(self.batch_shape, self._log_volume, dtype=self.dtype, device=self.device)

    @property
    def mean(self):
        return torch.zeros(self.batch_shape + self.event_shape, dtype=self.dtype, device=self.device)
