"""Validation of every public distribution (issue 11, defect 7; DESIGN.md, "Errors").

With validation on (Pyro's ``validate_args``; the autouse fixture enables it), a bad
parameter or value raises a ``ValueError`` that names the argument (``loc``,
``concentration``, ``scale``, ``value``) and the bound, never a TypeError or
RuntimeError from inside torch.  The choices tested here (dlmppl/distributions/base.py):

* integer/boolean ``loc``/``concentration`` of the directional families are converted to
  torch's default float dtype (as Python numbers are); ``WrappedNormal`` and
  ``RiemannianNormal`` refuse integer parameters with a ``ValueError`` naming them;
* integer points are accepted and read in the distribution's dtype;
* a float64 point given to a float32 distribution is checked at float32 precision and
  ``log_prob`` computes in float64 (torch's type promotion, as ``Normal`` does);
* infinite parameters (``κ = inf``, ``scale = inf``) are refused.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

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

F32, F64 = torch.float32, torch.float64


def _disk_metric():
    m = ConformalMetric(-1.0)
    m.dim = 2
    return m


def _e(d):
    x = torch.zeros(d)
    x[-1] = 1
    return x


# (name, constructor of a float32 distribution, a point of its support with integer coordinates)
CASES = [
    ("vmf", lambda: VonMisesFisher(_e(3), torch.tensor(2.0)), [0, 1, 0]),
    ("vmf-d5", lambda: VonMisesFisher(_e(5), torch.tensor(2.0)), [0, 0, 1, 0, 0]),
    ("ps", lambda: PowerSpherical(_e(3), torch.tensor(2.0)), [1, 0, 0]),
    ("wn-poincare", lambda: WrappedNormal(M.PoincareBall(), torch.zeros(2), torch.tensor(0.5)), [0, 0]),
    ("wn-lorentz", lambda: WrappedNormal(M.Lorentz(), torch.tensor([1.0, 0.0, 0.0]), torch.tensor(0.5)), [1, 0, 0]),
    ("wn-sphere", lambda: WrappedNormal(M.Sphere(), _e(3), torch.tensor([0.3, 0.6])), [0, 1, 0]),
    ("rn-poincare", lambda: RiemannianNormal(M.PoincareBall(), torch.zeros(2), torch.tensor(0.5)), [0, 0]),
    ("rn-lorentz", lambda: RiemannianNormal(M.Lorentz(), torch.tensor([1.0, 0.0, 0.0]), torch.tensor(0.5)), [1, 0, 0]),
    ("uniform-sphere", lambda: ManifoldUniform(M.Sphere(), (3,)), [0, 0, 1]),
    ("uniform-stiefel", lambda: ManifoldUniform(M.Stiefel(), (3, 2)), [[1, 0], [0, 1], [0, 0]]),
    ("intrinsic", lambda: IntrinsicUniform(_disk_metric(), radius=0.9), [0, 0]),
]
IDS = [c[0] for c in CASES]
MANIFOLD_CASES = [c for c in CASES if c[0] != "intrinsic"]


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    _, make, point = request.param
    return make(), torch.tensor(point)


# ----------------------------------------------------------------------------------- values


def test_integer_points_are_read_in_the_distributions_dtype(case):
    d, point = case
    assert point.dtype == torch.int64
    lp = d.log_prob(point)
    assert lp.dtype == F32 and torch.isfinite(lp)
    torch.testing.assert_close(lp, d.log_prob(point.float()))


def test_float64_points_in_a_float32_distribution_promote_like_torch(case):
    # torch: Normal(float32).log_prob(float64) computes in float64; a float32 point cast to float64
    # (1 - |x| ~ 1e-8, beyond float64's tolerance) is still accepted at the distribution's precision
    d, point = case
    x32 = d.sample((5,)) if not isinstance(d, IntrinsicUniform) else 0.3 * torch.rand(5, 2) - 0.15
    lp64 = d.log_prob(x32.double())
    assert lp64.dtype == F64
    torch.testing.assert_close(lp64, d.log_prob(x32).double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, make, point", MANIFOLD_CASES, ids=[c[0] for c in MANIFOLD_CASES])
def test_float32_points_in_a_float64_distribution_promote(name, make, point):
    with torch.random.fork_rng():
        torch.set_default_dtype(F64)
        try:
            d = make()
        finally:
            torch.set_default_dtype(F32)
    x = torch.tensor(point, dtype=F32)
    lp = d.log_prob(x)
    assert lp.dtype == F64
    torch.testing.assert_close(lp, d.log_prob(x.double()))


def test_a_value_that_is_not_a_tensor_raises(case):
    d, point = case
    with pytest.raises(ValueError, match="value.*Tensor"):
        d.log_prob(point.tolist())


def test_a_complex_value_raises(case):
    d, point = case
    with pytest.raises(ValueError, match="value.*complex"):
        d.log_prob(point.to(torch.complex64))


def test_a_wrong_event_shape_raises_naming_value_and_event_shape(case):
    d, point = case
    with pytest.raises(ValueError, match="value.*event_shape"):
        d.log_prob(point.float()[..., :1])
    with pytest.raises(ValueError, match="value.*event_shape"):
        d.log_prob(torch.tensor(1.0))


def test_a_value_that_does_not_broadcast_with_the_batch_raises():
    d = VonMisesFisher(_e(3).expand(2, 3), torch.tensor(1.0))
    with pytest.raises(ValueError, match="value.*broadcast"):
        d.log_prob(_e(3).expand(3, 3))
    d = WrappedNormal(M.PoincareBall(), torch.zeros(2, 2), torch.tensor(0.5))
    with pytest.raises(ValueError, match="value.*broadcast"):
        d.log_prob(torch.zeros(3, 2))


def test_nan_and_inf_points_raise(case):
    d, point = case
    for bad in (math.nan, math.inf):
        x = point.float().clone()
        x.view(-1)[0] = bad
        with pytest.raises(ValueError, match="value.*finite"):
            d.log_prob(x)


@pytest.mark.parametrize(
    "make, off",
    [
        (lambda: VonMisesFisher(_e(3), torch.tensor(1.0)), [0.0, 0.5, 0.5]),
        (lambda: PowerSpherical(_e(3), torch.tensor(1.0)), [0.0, 0.0, 1.001]),
        (lambda: WrappedNormal(M.PoincareBall(), torch.zeros(2), torch.tensor(0.5)), [0.8, 0.8]),
        (lambda: WrappedNormal(M.Lorentz(), torch.tensor([1.0, 0.0, 0.0]), torch.tensor(0.5)), [1.0, 1.0, 0.0]),
        (lambda: RiemannianNormal(M.PoincareBall(), torch.zeros(2), torch.tensor(0.5)), [0.0, 1.5]),
        (lambda: ManifoldUniform(M.Stiefel(), (3, 2)), [[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]),
    ],
)
def test_points_off_the_support_raise_with_the_bound_and_the_violation(make, off):
    d = make()
    with pytest.raises(ValueError, match=r"value.*support.*manifold\(.*largest violation .* > tolerance"):
        d.log_prob(torch.tensor(off))


def test_intrinsic_uniform_outside_the_ball_is_minus_inf_not_an_error():
    d = IntrinsicUniform(_disk_metric(), radius=0.9)
    assert d.log_prob(torch.tensor([0.95, 0.0])) == -math.inf


def test_validation_off_checks_nothing():
    with pyro.validation_enabled(False):
        VonMisesFisher(torch.tensor([1.0, 1.0, 0.0]), torch.tensor(-1.0))
        PowerSpherical(_e(3), torch.tensor(math.inf))
        WrappedNormal(M.PoincareBall(), torch.zeros(2), torch.tensor(math.inf))
        d = VonMisesFisher(_e(3), torch.tensor(1.0))
        assert torch.isfinite(d.log_prob(torch.tensor([0.0, 0.5, 0.5])))
    d = VonMisesFisher(_e(3), torch.tensor(1.0), validate_args=False)
    d.log_prob(torch.tensor([0.0, 0.5, 0.5]))


# ----------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("family", [VonMisesFisher, PowerSpherical])
def test_integer_and_boolean_directional_parameters_become_default_floats(family):
    x = torch.tensor([0.6, 0.8, 0.0])
    ref = family(_e(3), torch.tensor(3.0)).log_prob(x)
    for loc, kappa in [(torch.tensor([0, 0, 1]), torch.tensor(3)), (torch.tensor([False, False, True]), 3)]:
        d = family(loc, kappa)
        assert d.loc.dtype == d.concentration.dtype == torch.get_default_dtype()
        torch.testing.assert_close(d.log_prob(x), ref)


@pytest.mark.parametrize(
    "make",
    [
        lambda: WrappedNormal(M.PoincareBall(), torch.tensor([0, 0]), 1.0),
        lambda: RiemannianNormal(M.PoincareBall(), torch.tensor([0, 0]), 1.0),
        lambda: WrappedNormal(M.Lorentz(), torch.tensor([1, 0, 0]), 1.0),
    ],
)
def test_integer_loc_of_the_normals_raises_naming_loc(make):
    with pytest.raises(ValueError, match="loc.*floating"):
        make()


@pytest.mark.parametrize("family", [VonMisesFisher, PowerSpherical])
def test_complex_directional_parameters_raise(family):
    with pytest.raises(ValueError, match="loc"):
        family(_e(3).to(torch.complex64), 1.0)
    with pytest.raises(ValueError, match="concentration"):
        family(_e(3), torch.tensor(1.0, dtype=torch.complex64))


@pytest.mark.parametrize("family", [VonMisesFisher, PowerSpherical])
@pytest.mark.parametrize("kappa", [math.inf, math.nan, [1.0, math.inf]])
def test_non_finite_concentration_raises(family, kappa):
    with pytest.raises(ValueError, match="concentration.*finite"):
        family(_e(3), torch.tensor(kappa))


@pytest.mark.parametrize("family", [VonMisesFisher, PowerSpherical])
def test_negative_concentration_names_the_bound(family):
    with pytest.raises(ValueError, match=r"concentration.*lower_bound=0\.0.*-0\.5"):
        family(_e(3), torch.tensor(-0.5))


@pytest.mark.parametrize("family", [WrappedNormal, RiemannianNormal])
@pytest.mark.parametrize("scale", [math.inf, math.nan])
def test_non_finite_scale_raises(family, scale):
    with pytest.raises(ValueError, match="scale.*finite"):
        family(M.PoincareBall(), torch.zeros(2), torch.tensor(scale))


@pytest.mark.parametrize("family", [WrappedNormal, RiemannianNormal])
def test_non_positive_scale_names_the_bound(family):
    with pytest.raises(ValueError, match=r"scale.*lower_bound=0\.0"):
        family(M.PoincareBall(), torch.zeros(2), torch.tensor(0.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda: VonMisesFisher(torch.tensor([1.0, 1.0, 0.0]), 1.0),
        lambda: PowerSpherical(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.1, 1.0]]), 1.0),
        lambda: WrappedNormal(M.PoincareBall(), torch.tensor([0.9, 0.9]), 1.0),
        lambda: RiemannianNormal(M.Lorentz(), torch.tensor([1.0, 1.0, 0.0]), 1.0),
    ],
)
def test_loc_off_the_manifold_raises_with_the_bound_and_the_violation(make):
    with pytest.raises(ValueError, match=r"loc.*manifold\(.*largest violation .* > tolerance"):
        make()


@pytest.mark.parametrize("family", [VonMisesFisher, PowerSpherical])
def test_loc_and_concentration_that_do_not_broadcast_raise_naming_both(family):
    with pytest.raises(ValueError, match=r"loc and concentration.*\(2,\).*\(3,\)"):
        family(_e(3).expand(2, 3), torch.ones(3))


def test_manifold_uniform_arguments():
    with pytest.raises(ValueError, match="dtype"):
        ManifoldUniform(M.Sphere(), (3,), dtype=torch.int64)
    with pytest.raises(ValueError, match="batch_shape"):
        ManifoldUniform(M.Sphere(), (3,), batch_shape=(-1,))
    d = ManifoldUniform(M.Sphere(), (3,), dtype=F64)
    assert d.log_prob(torch.tensor([0, 0, 1])).dtype == F64
