"""Pyro's distribution API on every public distribution (issue 11, defect 12).

A generic check in the manner of Pyro's own suite (pyro's
tests/distributions/test_distributions.py): ``infer_shapes`` agrees with the
constructor, ``support``/``log_prob``/``sample`` shapes follow
``sample_shape + batch_shape + event_shape``, a wrong event shape or a
non-broadcastable value raises, ``expand``/``expand_by`` give the same densities
and raise on incompatible shapes (our ``expand`` and Pyro's default
``TorchDistribution.expand``), and every distribution works as a Pyro site under
a plate, with ``to_event`` and ``mask``.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.distributions import TorchDistribution

from dlmppl import manifolds as M
from dlmppl.distributions import (
    IntrinsicUniform,
    ManifoldUniform,
    PowerSpherical,
    RiemannianNormal,
    VonMisesFisher,
    WrappedNormal,
)
from dlmppl.geometry import ConformalMetric

D = torch.float64


def _unit(*shape, d, seed=0):
    x = torch.randn(*shape, d, generator=torch.Generator().manual_seed(seed), dtype=D)
    return x / x.norm(dim=-1, keepdim=True)


def _lorentz(*shape, d, seed=0):
    s = 0.5 * torch.randn(*shape, d, generator=torch.Generator().manual_seed(seed), dtype=D)
    return torch.cat([(1 + s.pow(2).sum(-1, keepdim=True)).sqrt(), s], -1)


def _disk_metric():
    m = ConformalMetric(-1.0)
    m.dim = 2
    return m


# (name, class, constructor arguments): batch shapes (), (2,), (2, 3), (3, 1), batched curvature
EXAMPLES = [
    ("vmf-d3", VonMisesFisher, lambda: dict(loc=_unit(2, d=3), concentration=torch.tensor([1.0, 5.0], dtype=D))),
    ("vmf-d5-b", VonMisesFisher, lambda: dict(loc=_unit(2, 1, d=5), concentration=torch.tensor([0.5, 2.0, 30.0], dtype=D))),
    ("vmf-d2", VonMisesFisher, lambda: dict(loc=_unit(d=2), concentration=torch.tensor(3.0, dtype=D))),
    ("ps-d3", PowerSpherical, lambda: dict(loc=_unit(2, d=3), concentration=torch.tensor([1.0, 5.0], dtype=D))),
    ("ps-d4-b", PowerSpherical, lambda: dict(loc=_unit(3, 1, d=4), concentration=torch.tensor([0.0, 7.0], dtype=D))),
    ("wn-poincare-iso", WrappedNormal, lambda: dict(manifold=M.PoincareBall(), loc=0.3 * _unit(2, d=2), scale=torch.tensor([0.5, 1.0], dtype=D))),
    ("wn-poincare-diag", WrappedNormal, lambda: dict(manifold=M.PoincareBall(), loc=0.3 * _unit(2, d=3), scale=torch.tensor([0.5, 1.0, 2.0], dtype=D))),
    ("wn-lorentz", WrappedNormal, lambda: dict(manifold=M.Lorentz(), loc=_lorentz(3, 1, d=2), scale=torch.tensor(0.7, dtype=D))),
    ("wn-sphere", WrappedNormal, lambda: dict(manifold=M.Sphere(), loc=_unit(3, d=3), scale=torch.tensor(0.4, dtype=D))),
    (
        "wn-stereo-batched-k",
        WrappedNormal,
        lambda: dict(manifold=M.Stereographic(torch.tensor([[-1.0], [0.5]], dtype=D)), loc=0.2 * _unit(2, d=2), scale=torch.tensor(0.3, dtype=D)),
    ),
    ("rn-poincare", RiemannianNormal, lambda: dict(manifold=M.PoincareBall(), loc=0.3 * _unit(2, d=2), scale=torch.tensor([0.5, 1.0], dtype=D))),
    ("rn-lorentz", RiemannianNormal, lambda: dict(manifold=M.Lorentz(), loc=_lorentz(d=3), scale=torch.tensor(0.6, dtype=D))),
    ("uniform-sphere", ManifoldUniform, lambda: dict(manifold=M.Sphere(), event_shape=(3,), batch_shape=(2,), dtype=D)),
    ("uniform-stiefel", ManifoldUniform, lambda: dict(manifold=M.Stiefel(), event_shape=(4, 2), dtype=D)),
    ("intrinsic-disk", IntrinsicUniform, lambda: dict(metric=_disk_metric(), radius=0.9)),
]
IDS = [e[0] for e in EXAMPLES]


@pytest.fixture(params=EXAMPLES, ids=IDS)
def example(request):
    _, cls, make = request.param
    return cls, make()


def _points(d, sample_shape=()):
    """Points of ``d``'s support of shape ``sample_shape + batch_shape + event_shape``."""
    shape = torch.Size(sample_shape) + d.batch_shape + d.event_shape
    base = d
    while hasattr(base, "base_dist"):  # Pyro's ExpandedDistribution
        base = base.base_dist
    if isinstance(base, IntrinsicUniform):  # no exact sampler (MCMC only): points in the ball
        return 0.5 * torch.rand(shape, dtype=D) - 0.25
    return d.sample(sample_shape)


def _assert_close(a, b):
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _check_sample_shapes(small, large):
    # Pyro's check: the same densities from the small and the expanded distribution
    x = _points(small)
    _assert_close(small.log_prob(x).expand(large.batch_shape), large.log_prob(x))
    x = _points(large)
    _assert_close(small.log_prob(x), large.log_prob(x))


# ----------------------------------------------------------------------------------- infer_shapes


def test_infer_shapes_agrees_with_the_constructor(example):
    cls, params = example
    d = cls(**params)
    arg_shapes = {k: v.shape if isinstance(v, torch.Tensor) else v for k, v in params.items()}
    assert cls.infer_shapes(**arg_shapes) == (d.batch_shape, d.event_shape)


def test_infer_shapes_with_pyros_convention_is_right_or_names_the_argument(example):
    # Pyro's generic test passes () for every non-tensor argument: where that cannot identify the
    # distribution's shapes (a manifold, an event_shape, a metric), a ValueError names the argument
    cls, params = example
    d = cls(**params)
    arg_shapes = {k: v.shape if isinstance(v, torch.Tensor) else () for k, v in params.items()}
    non_tensor = [k for k, v in params.items() if not isinstance(v, torch.Tensor)]
    if not non_tensor:
        assert cls.infer_shapes(**arg_shapes) == (d.batch_shape, d.event_shape)
        return
    try:
        shapes = cls.infer_shapes(**arg_shapes)
    except ValueError as e:
        assert any(k in str(e) for k in non_tensor) or "dim" in str(e), str(e)
    else:
        assert shapes == (d.batch_shape, d.event_shape)


def test_infer_shapes_of_the_directional_families_is_pure_shape_arithmetic():
    assert VonMisesFisher.infer_shapes(loc=(2, 1, 3), concentration=(4,)) == ((2, 4), (3,))
    assert PowerSpherical.infer_shapes(loc=torch.Size([5]), concentration=torch.Size([])) == ((), (5,))
    with pytest.raises(ValueError, match="loc and concentration"):
        VonMisesFisher.infer_shapes(loc=(2, 3), concentration=(3,))
    with pytest.raises(ValueError, match="loc"):
        PowerSpherical.infer_shapes(loc=(2, 1), concentration=())


def test_infer_shapes_of_wrapped_and_riemannian_normals_reads_the_manifold():
    # the intrinsic dimension (d = n for the ball, n - 1 for the sphere) decides whether scale is diagonal
    assert WrappedNormal.infer_shapes(manifold=M.PoincareBall(), loc=(4, 3), scale=(3,)) == ((4,), (3,))
    assert WrappedNormal.infer_shapes(manifold=M.Sphere(), loc=(2, 3), scale=(2,)) == ((2,), (3,))
    k = torch.full((5, 1, 1), -1.0, dtype=D)
    assert RiemannianNormal.infer_shapes(manifold=M.Stereographic(k), loc=(4, 2), scale=()) == ((5, 4), (2,))
    with pytest.raises(ValueError, match="manifold"):
        WrappedNormal.infer_shapes(manifold=(), loc=(2,), scale=())


def test_infer_shapes_of_the_uniform_laws():
    assert ManifoldUniform.infer_shapes(manifold=M.Sphere(), event_shape=(3,), batch_shape=(2, 1)) == ((2, 1), (3,))
    with pytest.raises(ValueError, match="event_shape"):
        ManifoldUniform.infer_shapes(manifold=M.Sphere(), event_shape=(3, 2))
    assert IntrinsicUniform.infer_shapes(metric=_disk_metric()) == ((), (2,))
    assert IntrinsicUniform.infer_shapes(metric=(), dim=4) == ((), (4,))
    with pytest.raises(ValueError, match="dim"):
        IntrinsicUniform.infer_shapes(metric=(), dim=())


# ----------------------------------------------------------------------------------- shapes


def test_sample_support_and_log_prob_shapes(example):
    cls, params = example
    d = cls(**params)
    assert d.support.event_dim == d.event_dim
    for sample_shape in [(), (2,), (2, 3), (0,), (0, 2)]:
        x = _points(d, sample_shape)
        shape = torch.Size(sample_shape) + d.batch_shape
        assert x.shape == shape + d.event_shape
        ok = d.support.check(x)
        assert ok.shape == shape and bool(ok.all())
        lp = d.log_prob(x)
        assert lp.shape == shape and bool(torch.isfinite(lp).all())
        if d.has_rsample:
            assert d.rsample(sample_shape).shape == x.shape


def test_log_prob_broadcasts_one_point_over_the_batch(example):
    cls, params = example
    d = cls(**params)
    x = _points(d).reshape((-1,) + d.event_shape)[0]  # one point, shape event_shape
    assert d.log_prob(x).shape == d.batch_shape
    x2 = x.expand((3,) + (1,) * len(d.batch_shape) + d.event_shape)
    assert d.log_prob(x2).shape == (3,) + d.batch_shape


@pytest.mark.parametrize("cls", [VonMisesFisher, PowerSpherical, ManifoldUniform])
def test_entropy_and_mean_shapes(cls):
    _, _, make = next(e for e in EXAMPLES if e[1] is cls)
    d = cls(**make())
    assert d.entropy().shape == d.batch_shape
    assert d.mean.shape == d.batch_shape + d.event_shape


def test_a_wrong_event_shape_raises(example):
    cls, params = example
    d = cls(**params)
    with pytest.raises(ValueError, match="value"):
        d.log_prob(torch.ones(d.shape() + (1,), dtype=D))


def test_a_non_broadcastable_value_raises(example):
    cls, params = example
    d = cls(**params)
    shape = d.shape()
    with pytest.raises(ValueError, match="value"):
        d.log_prob(torch.ones((shape[0] + 1,) + shape[1:], dtype=D))


# ----------------------------------------------------------------------------------- expand


def test_expand_by(example):
    cls, params = example
    small = cls(**params)
    for sample_shape, shape_type in [((), tuple), ((2,), torch.Size), ((2, 3), list)]:
        large = small.expand_by(shape_type(sample_shape))
        assert large.batch_shape == sample_shape + small.batch_shape
        _check_sample_shapes(small, large)


@pytest.mark.parametrize("default", [False, True])
def test_expand_new_dim(example, default):
    cls, params = example
    small = cls(**params)
    for sample_shape in [(), (2,), (2, 3)]:
        shape = list(torch.Size(sample_shape) + small.batch_shape)
        large = TorchDistribution.expand(small, shape) if default else small.expand(shape)
        assert large.batch_shape == sample_shape + small.batch_shape
        if not default:
            assert type(large) is cls
        _check_sample_shapes(small, large)


@pytest.mark.parametrize("default", [False, True])
def test_expand_existing_dim(example, default):
    cls, params = example
    small = cls(**params).expand_by((1,))  # guarantees a dimension of size 1
    for dim, size in enumerate(small.batch_shape):
        if size != 1:
            continue
        batch_shape = list(small.batch_shape)
        batch_shape[dim] = 5
        large = TorchDistribution.expand(small, batch_shape) if default else small.expand(batch_shape)
        assert large.batch_shape == torch.Size(batch_shape)
        _check_sample_shapes(small, large)


@pytest.mark.parametrize("default", [False, True])
def test_subsequent_expands(example, default):
    cls, params = example
    for sample_shapes in [[(2, 1), (2, 3)], [(2, 1, 1), (2, 1, 3), (2, 5, 3)]]:
        d = cls(**params)
        original = d.batch_shape
        for shape in sample_shapes:
            proposed = torch.Size(shape) + original
            n = TorchDistribution.expand(d, proposed) if default else d.expand(proposed)
            assert n.batch_shape == proposed
            _check_sample_shapes(d, n)
            d = n


@pytest.mark.parametrize("default", [False, True])
def test_expand_error(example, default):
    cls, params = example
    small = cls(**params)
    for initial_shape, proposed_shape in [[(2, 1), (4, 3)], [(2, 4), (2, 2, 1)], [(1, 2, 1), (2, 1)]]:
        if default:
            large = TorchDistribution.expand(small, initial_shape + small.batch_shape)
        else:
            large = small.expand(torch.Size(initial_shape) + small.batch_shape)
        with pytest.raises((ValueError, RuntimeError)):
            large.expand(torch.Size(proposed_shape) + small.batch_shape)


def test_manifold_uniform_expand_to_an_incompatible_shape_raises():
    # issue 11, defect 12: this expand used to succeed
    d = ManifoldUniform(M.Sphere(), (3,), batch_shape=(2, 1))
    with pytest.raises(ValueError, match="batch_shape"):
        d.expand((4, 3))
    with pytest.raises(ValueError, match="batch_shape"):
        d.expand((1,))
    assert d.expand((5, 2, 3)).batch_shape == (5, 2, 3)


def test_intrinsic_uniform_expand_to_an_incompatible_shape_raises():
    d = IntrinsicUniform(_disk_metric(), radius=0.9).expand((2, 4))
    with pytest.raises(ValueError, match="batch_shape"):
        d.expand((2, 2, 1))
    with pytest.raises(ValueError, match="batch_shape"):
        d.expand(())


def test_directional_expand_to_an_incompatible_shape_raises_a_value_error():
    d = VonMisesFisher(_unit(2, 1, d=3), torch.tensor(1.0, dtype=D))
    with pytest.raises(ValueError, match=r"batch_shape.*\(2, 1\).*\(4, 3\)"):
        d.expand((4, 3))
    with pytest.raises(ValueError, match="batch_shape"):
        PowerSpherical(_unit(2, d=3), torch.tensor(1.0, dtype=D)).expand((-1,))


# ----------------------------------------------------------------------------------- Pyro sites


def test_works_as_a_pyro_site_under_a_plate_with_to_event_and_mask(example):
    cls, params = example
    d = cls(**params)
    nb = len(d.batch_shape)
    obs = _points(d, (4,))

    def model(observed):
        with pyro.plate("data", 4, dim=-(nb + 1)):
            if isinstance(d, IntrinsicUniform):
                return pyro.sample("x", d, obs=observed)
            return pyro.sample("x", d)

    tr = pyro.poutine.trace(model).get_trace(obs)
    tr.compute_log_prob()
    x = tr.nodes["x"]["value"]
    assert x.shape == (4,) + d.batch_shape + d.event_shape
    assert tr.nodes["x"]["log_prob"].shape == (4,) + d.batch_shape
    assert math.isfinite(float(tr.log_prob_sum()))
    assert d.to_event(nb).log_prob(obs).shape == (4,)
    assert (d.mask(False).log_prob(obs) == 0).all()
