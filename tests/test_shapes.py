"""dlmppl._shapes.broadcast_shapes: torch.broadcast_shapes' rule, in plain Python."""

import random

import pytest
import torch

from dlmppl._shapes import broadcast_shapes


def test_matches_torch_on_random_shapes():
    rng = random.Random(0)
    agree = errors = 0
    for _ in range(3000):
        shapes = [tuple(rng.choice([0, 1, 1, 2, 3]) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 4))]
        try:
            want = torch.broadcast_shapes(*shapes)
        except RuntimeError:
            with pytest.raises(ValueError, match="do not broadcast"):
                broadcast_shapes(*shapes)
            errors += 1
            continue
        got = broadcast_shapes(*shapes)
        assert isinstance(got, torch.Size) and got == want, shapes
        agree += 1
    assert agree > 500 and errors > 500  # both branches exercised


def test_size_zero_and_one():
    assert broadcast_shapes((0,), (1,)) == (0,)
    assert broadcast_shapes((1,), (0,)) == (0,)
    assert broadcast_shapes((), (2, 0)) == (2, 0)
    with pytest.raises(ValueError):
        broadcast_shapes((0,), (2,))
