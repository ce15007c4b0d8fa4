r"""Geodesic steering of latent codes: move codes along geodesics toward a target.

:func:`steer` returns the path ``(T,) + z.shape`` of codes at fractions ``t`` of
the geodesic from ``z`` to a target code (or a class centroid, see
:func:`class_centroid`, the Fréchet mean of the class's codes):

* ``metric=None``: the closed-form geodesic of ``manifold`` (Euclidean if None),
  e.g. the κ-stereographic geodesic with the κ that a dynamic-curvature model
  assigns to the chosen condition (``manifold=Stereographic(k)`` with batched ``k``,
  or ``manifold=lambda c: ...``);
* ``metric`` a :class:`~dlmppl.geometry.MetricField` (e.g. a decoder's
  :class:`~dlmppl.geometry.PullbackMetric`): the discrete geodesic of
  :func:`~dlmppl.geometry.connecting_geodesic`, resampled at the requested
  fractions of its arc length;
* ``metric`` a callable ``condition -> MetricField`` (a metric factory, e.g.
  ``lambda c: PullbackMetric(lambda z: decoder(z, c))``): the metric of the chosen condition.

Reference for the idea: Arvanitidis et al., "Latent space oddity", ICLR 2018
(geodesic interpolation); Shao et al. 2018 (geodesic editing in a generator's latent space).
"""

from __future__ import annotations

import torch

from .. import manifolds as _m
from . import geodesics as _g
from .base import geometry_of
from .metrics import MetricField
from .solvers import connecting_geodesic, segment_speeds

__all__ = ["steer", "class_centroid", "resample_curve"]


def class_centroid(codes, labels, label, manifold=None, **kwargs):
    """Fréchet mean (:func:`~dlmppl.geometry.frechet_mean`) of ``codes[labels == label]``.

    ``codes``: ``(N, *event)``; ``labels``: ``(N,)``.  ``manifold=None``: Euclidean mean.
    """
    sel = codes[labels == label]
    if sel.shape[0] == 0:
        raise ValueError(f"class_centroid: no code has label {label!r}")
    if manifold is None:
        return sel.mean(0)
    return _g.frechet_mean(sel, manifold, **kwargs)


def resample_curve(curve, t, *, metric=None, manifold=None, condition=None):
    """Points at arc-length fractions ``t`` ``(T,)`` of discrete curves ``(..., n, d)``.

    Arc length under ``metric`` (Euclidean when None); between nodes the curve
    is followed linearly (or along ``manifold``'s geodesic). Output ``(T, ..., d)``.
    """
    t = torch.as_tensor(t, dtype=curve.dtype, device=curve.device).reshape(-1)
    if metric is None:
        seg = (
            (curve[..., 1:, :] - curve[..., :-1, :]).norm(dim=-1)
            if manifold is None
            else _g.distance(manifold, curve[..., :-1, :], curve[..., 1:, :])
        )
    else:
        seg = segment_speeds(metric, curve, manifold=manifold, condition=condition).clamp_min(0).sqrt()
    cum = torch.cat((torch.zeros_like(seg[..., :1]), seg.cumsum(-1)), -1)  # (..., n)
    total = cum[..., -1:].clamp_min(torch.finfo(curve.dtype).tiny)
    frac = cum / total
    target = t.reshape((-1,) + (1,) * (frac.dim() - 1) + (1,)).expand((t.shape[0],) + frac.shape[:-1] + (1,))
    frac_b = frac.unsqueeze(0).expand((t.shape[0],) + frac.shape).contiguous()
    n = curve.shape[-2]
    idx = torch.searchsorted(frac_b, target.contiguous(), right=True).clamp(1, n - 1) - 1  # (T, ..., 1)
    lo = frac_b.gather(-1, idx)
    hi = frac_b.gather(-1, idx + 1)
    w = ((target - lo) / (hi - lo).clamp_min(torch.finfo(curve.dtype).tiny)).clamp(0, 1)  # (T, ..., 1)
    cb = curve.unsqueeze(0).expand((t.shape[0],) + curve.shape)
    d = curve.shape[-1]
    a = cb.gather(-2, idx.unsqueeze(-1).expand(idx.shape + (d,))).squeeze(-2)
    b = cb.gather(-2, (idx + 1).unsqueeze(-1).expand(idx.shape + (d,))).squeeze(-2)
    if manifold is None or geometry_of(manifold).linear:
        return a + w * (b - a)
    return _g.expmap(manifold, a, w * _g.logmap(manifold, a, b))


def steer(z, target, t, metric=None, manifold=None, *, condition=None, n_points: int = 32, **solver_kwargs):
    r"""Move codes ``z`` along geodesics toward ``target``; returns the path ``(T,) + z.shape``.

    Parameters
    ----------
    z : codes ``(..., d)`` (ambient coordinates of ``manifold`` when given).
    target : a code broadcasting with ``z`` (e.g. a class centroid from :func:`class_centroid`).
    t : fractions of the way, number or ``(T,)``; ``t=1`` reaches the target
        (values outside ``[0, 1]`` extrapolate along the closed-form geodesic only).
    metric : None (closed form on ``manifold``), a :class:`MetricField`, or a callable
        ``condition -> MetricField``.
    manifold : the latent manifold, or a callable ``condition -> manifold`` (e.g. the
        κ-stereographic space of the condition's curvature); with a metric field it
        defaults to ``metric.manifold``.
    condition : the chosen condition, passed to the factories, or to a metric field's
        methods as ``condition=``.
    n_points, solver_kwargs : for :func:`connecting_geodesic` when a metric is used.
    """
    scalar_t = not (isinstance(t, torch.Tensor) and t.dim() > 0)
    tt = torch.as_tensor(t, dtype=z.dtype, device=z.device).reshape(-1)
    if callable(manifold) and not isinstance(manifold, torch.nn.Module):
        manifold = manifold(condition)
    field_condition = None
    if metric is not None and not isinstance(metric, MetricField):
        if not callable(metric):
            raise ValueError(f"metric must be None, a MetricField or a callable condition -> MetricField, got {type(metric).__name__}")
        metric = metric(condition)
        if not isinstance(metric, MetricField):
            raise ValueError("metric: the factory must return a dlmppl.geometry.MetricField")
    elif metric is not None:
        field_condition = condition
    z_b, target_b = torch.broadcast_tensors(z, target)
    if metric is None:
        M = manifold if manifold is not None else _m.Euclidean(1)
        out = _g.geodesic(M, z_b, target_b, tt)
    else:
        if manifold is None:
            manifold = metric.manifold
        if (tt < 0).any() or (tt > 1).any():
            raise ValueError("t: with a metric field, t must lie in [0, 1]")
        res = connecting_geodesic(
            metric, z_b, target_b, n_points, condition=field_condition, manifold=manifold, **solver_kwargs
        )
        out = resample_curve(res.curve, tt, metric=metric, manifold=manifold, condition=field_condition)
    return out[0] if scalar_t else out
