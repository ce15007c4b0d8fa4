"""WrappedNormal and RiemannianNormal keep the shared distribution API at its edges (issue 11, defects 7 and 12):
non-broadcasting parameters, incompatible expand, and integer/boolean points."""

import pytest
import torch

from dlmppl import manifolds
from dlmppl.distributions import RiemannianNormal, WrappedNormal

D = torch.float64


def _cases():
    ball = manifolds.PoincareBall(1.0)
    lor = manifolds.Lorentz(1.0)
    return [
        (WrappedNormal, ball, torch.zeros(3, 2, dtype=D)),
        (WrappedNormal, lor, torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=D)),
        (WrappedNormal, manifolds.Sphere(), torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=D)),
        (RiemannianNormal, ball, torch.zeros(3, 2, dtype=D)),
        (RiemannianNormal, lor, torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=D)),
    ]


@pytest.mark.parametrize("cls,M,loc", _cases())
def test_non_broadcasting_batch_shapes_name_the_arguments(cls, M, loc):
    with pytest.raises(ValueError, match="loc.*scale"):
        cls(M, loc, torch.ones(4, 1, dtype=D))


@pytest.mark.parametrize("cls,M,loc", _cases())
def test_incompatible_expand_names_batch_shape(cls, M, loc):
    d = cls(M, loc, torch.ones(3, 1, dtype=D))
    assert d.expand((2, 3)).batch_shape == (2, 3)
    with pytest.raises(ValueError, match="batch_shape"):
        d.expand((4,))


@pytest.mark.parametrize("cls,M,loc", _cases())
def test_integer_and_boolean_points_are_read_in_the_distributions_dtype(cls, M, loc):
    d = cls(M, loc[0], torch.tensor(0.7, dtype=D))
    point = loc[0].round().long()
    lp = d.log_prob(point)
    assert lp.dtype == D and torch.isfinite(lp)
    torch.testing.assert_close(lp, d.log_prob(point.double()))
    torch.testing.assert_close(d.log_prob(point.bool()), lp)
