"""Geodesics and metric fields.

* closed-form geodesics on every supported manifold (:mod:`.geodesics`):
  :func:`geodesic`, :func:`interpolate`, :func:`distance`, :func:`shoot`,
  :func:`expmap`, :func:`logmap`, :func:`frechet_mean`;
* metric fields (:mod:`.metrics`): :class:`MetricField` (the interface),
  :class:`PullbackMetric`, :class:`ConformalMetric`, :class:`EuclideanMetric`;
* solvers under a metric field (:mod:`.solvers`): :func:`curve_length`,
  :func:`curve_energy`, :func:`connecting_geodesic`, :func:`shooting_geodesic`;
* steering (:mod:`.steering`): :func:`steer`, :func:`class_centroid`;
* learned metric fields (:mod:`.learned`, :mod:`.chadebec`):
  :class:`LearnedMetric` with :func:`volume_regularizer` and
  :func:`smoothness_regularizer`, :class:`ChadebecMetric`, and
  :func:`metric_distances` (geodesic distance matrices under any metric field).
"""

from . import euclidean, lorentz, product, projective, scaled, so3, spd, sphere, stereographic, stiefel, torus  # noqa: F401  (registrations)
from .base import Geometry, geometry_of
from .chadebec import ChadebecMetric
from .distances import metric_distances
from .geodesics import (
    distance,
    expmap,
    frechet_mean,
    geodesic,
    inner,
    interpolate,
    logmap,
    norm,
    shoot,
    tangent_project,
)
from .learned import LearnedMetric, smoothness_regularizer, volume_regularizer
from .metrics import ConformalMetric, EuclideanMetric, MetricField, PullbackMetric
from .solvers import (
    ChartMetric,
    GeodesicResult,
    connecting_geodesic,
    curve_energy,
    curve_length,
    segment_speeds,
    shooting_geodesic,
)
from .steering import class_centroid, resample_curve, steer

__all__ = [
    "Geometry",
    "geometry_of",
    "ChadebecMetric",
    "LearnedMetric",
    "metric_distances",
    "smoothness_regularizer",
    "volume_regularizer",
    "ChartMetric",
    "ConformalMetric",
    "EuclideanMetric",
    "GeodesicResult",
    "MetricField",
    "PullbackMetric",
    "class_centroid",
    "connecting_geodesic",
    "curve_energy",
    "curve_length",
    "distance",
    "expmap",
    "frechet_mean",
    "geodesic",
    "inner",
    "interpolate",
    "logmap",
    "norm",
    "resample_curve",
    "segment_speeds",
    "shoot",
    "shooting_geodesic",
    "steer",
    "tangent_project",
]
