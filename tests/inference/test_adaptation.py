"""The warm-up of the kernels (``dlmppl.inference.adaptation``) against Pyro's.

``WindowedAdaptation`` replaces Pyro's ``WarmupAdapter`` + ``BlockMassMatrix`` for the
Euclidean sites; it must compute what they compute, so that every Pyro behaviour of the
step size and mass matrix is kept.  These tests feed both the same stream of states and
acceptance statistics and compare their step sizes and mass blocks exactly.
"""

from collections import OrderedDict

import pytest
import torch
from pyro.infer.mcmc.adaptation import WarmupAdapter

from dlmppl.inference.adaptation import (
    WindowedAdaptation,
    adaptation_schedule,
    block_mass,
    mass_momentum,
    mass_velocity,
    welford_covariance,
    welford_init,
    welford_update,
)


@pytest.mark.parametrize("warmup", [0, 1, 7, 19, 20, 60, 149, 150, 151, 300, 400, 1000, 1234])
def test_schedule_is_stans_as_pyro_builds_it(warmup):
    pyro_ad = WarmupAdapter(adapt_step_size=True)
    pyro_ad._warmup_steps = warmup
    theirs = [tuple(w) for w in pyro_ad._build_adaptation_schedule()]
    ours = [tuple(w) for w in adaptation_schedule(warmup)]
    assert ours == theirs
    if warmup >= 20:  # windows tile the warm-up
        assert ours[0][0] == 0 and ours[-1][1] == warmup - 1
        assert all(a[1] + 1 == b[0] for a, b in zip(ours, ours[1:], strict=False))


@pytest.mark.parametrize("dense", [False, True])
def test_welford_matches_the_regularised_sample_covariance(dense):
    mix = torch.tensor([[1.0, 0.5, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.1]], dtype=torch.float64)
    x = torch.randn(40, 3, dtype=torch.float64) @ mix
    state = welford_init()
    for row in x:
        state = welford_update(state, row, dense=dense)
    n = x.shape[0]
    cov = torch.cov(x.T)
    expected = n / (n + 5) * cov + 1e-3 * 5 / (n + 5) * torch.eye(3, dtype=x.dtype)
    got = welford_covariance(state, dense=dense)
    torch.testing.assert_close(got, expected if dense else expected.diagonal(), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="state"):
        welford_covariance(welford_update(welford_init(), x[0]), dense=dense)


def test_block_mass_velocity_and_momentum_law():
    like = {"a": torch.zeros(2, dtype=torch.float64), "b": torch.zeros((), dtype=torch.float64)}
    inv = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=torch.float64)
    mass = block_mass(OrderedDict({("a", "b"): inv}))
    r = {"a": torch.tensor([1.0, -2.0], dtype=torch.float64), "b": torch.tensor(0.5, dtype=torch.float64)}
    v = mass_velocity(mass, r)
    torch.testing.assert_close(torch.cat([v["a"], v["b"].reshape(1)]), inv @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    assert v["b"].shape == ()
    # momenta ~ N(0, M): their covariance is the inverse of inv
    torch.manual_seed(0)
    draws = torch.stack([torch.cat([m["a"], m["b"].reshape(1)]) for m in (mass_momentum(mass, like) for _ in range(20000))])
    torch.testing.assert_close(torch.cov(draws.T), torch.linalg.inv(inv), atol=0.08, rtol=0.05)


@pytest.mark.parametrize("full_mass", [False, True, [("a",)]])
@pytest.mark.parametrize("warmup", [15, 200])
def test_windowed_adaptation_equals_pyro_warmup_adapter(full_mass, warmup):
    """Same inputs, same step sizes and mass blocks, to the last bit, at every iteration."""
    torch.manual_seed(1)
    like = {"a": torch.zeros(2, dtype=torch.float64), "b": torch.zeros(3, dtype=torch.float64)}
    if full_mass is True:
        shape = OrderedDict({("a", "b"): (5, 5)})
    elif full_mass is False:
        shape = OrderedDict({("a", "b"): (5,)})
    else:
        shape = OrderedDict({("a",): (2, 2), ("b",): (3,)})
    searches = iter(0.5 * 1.3 ** torch.arange(50, dtype=torch.float64))

    def find(z):  # a deterministic stand-in for the step-size search, the same for both
        return float(next(searches_theirs if find.theirs else searches))

    searches_theirs = iter(0.5 * 1.3 ** torch.arange(50, dtype=torch.float64))
    theirs = WarmupAdapter(0.1, adapt_step_size=True, adapt_mass_matrix=True, target_accept_prob=0.75, dense_mass=full_mass)
    find.theirs = True
    theirs.configure(warmup, mass_matrix_shape=shape, find_reasonable_step_size_fn=find,
                     options={"dtype": torch.float64})  # fmt: skip
    theirs.reset_step_size_adaptation(like)
    ours = WindowedAdaptation(0.1, adapt_step_size=True, adapt_mass_matrix=True, target_accept_prob=0.75, dense_mass=full_mass)
    find.theirs = False
    ours.configure(warmup, shape, find_step_size=find, dtype=torch.float64)
    assert ours.step_size == theirs.step_size
    scale = torch.tensor([1.0, 3.0, 0.2, 0.5, 2.0], dtype=torch.float64)
    changed = 0
    for t in range(1, warmup + 1):
        flat = torch.randn(5, dtype=torch.float64) * scale
        z = {"a": flat[:2], "b": flat[2:]}
        acc = torch.rand((), dtype=torch.float64)
        find.theirs = True
        theirs.step(t, z, acc)
        find.theirs = False
        changed += ours.step(t, z, acc)
        assert ours.step_size == theirs.step_size, t
        for names, inv in theirs.mass_matrix_adapter.inverse_mass_matrix.items():
            assert torch.equal(ours.mass.inverse[names], inv), (t, names)
            assert torch.equal(ours.mass.sqrt[names], theirs.mass_matrix_adapter._mass_matrix_sqrt[names])
    windows = len(adaptation_schedule(warmup))
    assert changed == max(windows - 2, 0)
    if windows > 2:  # the masses were estimated: variances 9 and 0.04 are far from the unit start
        var = torch.cat([inv if inv.dim() == 1 else inv.diagonal() for inv in ours.mass.inverse.values()])
        assert float(var[1]) > 3.0 and float(var[2]) < 0.2
