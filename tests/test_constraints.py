import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dlmppl.manifolds as M
from dlmppl.constraints import manifold, tolerance


def _unit(*shape, dtype=torch.float64):
    x = torch.randn(*shape, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def test_event_dim_and_one_bool_per_point():
    assert manifold(M.Sphere()).event_dim == 1
    assert manifold(M.Stiefel()).event_dim == 2
    assert manifold(M.SymmetricPositiveDefinite()).event_dim == 2
    x = _unit(4, 5, 3)
    ok = manifold(M.Sphere()).check(x)
    assert ok.shape == (4, 5) and ok.dtype == torch.bool and ok.all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sphere_tolerance_is_dtype_aware(dtype):
    x = _unit(3, 4, dtype=dtype)
    c = manifold(M.Sphere())
    assert c.check(x).all()
    tol = tolerance(dtype)
    assert not c.check(x * (1 + 10 * tol)).any()
    assert c.check(x * (1 + 0.1 * tol)).all()
    assert tolerance(torch.float32) > tolerance(torch.float64)


def test_nan_and_inf_are_off_every_manifold():
    cases = [
        (M.Sphere(), _unit(2, 3)),
        (M.PoincareBall(), torch.zeros(2, 3, dtype=torch.float64)),
        (M.Stereographic(0.0), torch.zeros(2, 3, dtype=torch.float64)),
        (M.Lorentz(), M.Lorentz().origin(2, 3, dtype=torch.float64)),
        (M.Euclidean(ndim=1), torch.zeros(2, 3, dtype=torch.float64)),
    ]
    for m, x in cases:
        c = manifold(m)
        assert c.check(x).all(), m
        x = x.clone()
        x[0, 0] = float("nan")
        assert c.check(x).tolist() == [False, True], m


def test_ball_sign_and_batched_curvature():
    k = torch.tensor([[-1.0], [-4.0], [0.0], [1.0]])
    x = torch.full((4, 2), 0.6)  # ‖x‖² = 0.72
    ok = manifold(M.Stereographic(k)).check(x)
    assert ok.tolist() == [True, False, True, True]


def test_lorentz_stiefel_spd_product():
    L = M.Lorentz(2.0)
    v = torch.cat([torch.zeros(5, 1), torch.randn(5, 3)], -1).double()
    x = L.expmap0(v)
    c = manifold(L)
    assert c.check(x).all()
    assert not c.check(-x).any()  # lower sheet
    assert not c.check(x * 1.01).any()

    X = torch.linalg.qr(torch.randn(6, 5, 2, dtype=torch.float64)).Q
    cs = manifold(M.Stiefel())
    assert cs.check(X).all() and not cs.check(2 * X).any()

    A = torch.randn(4, 3, 3, dtype=torch.float64)
    P = A @ A.mT + 0.1 * torch.eye(3, dtype=torch.float64)
    cp = manifold(M.SymmetricPositiveDefinite())
    assert cp.check(P).all() and not cp.check(-P).any() and not cp.check(P + torch.triu(A, 1)).any()

    prod = M.ProductManifold((M.Sphere(), 3), (M.PoincareBall(), 2))
    y = torch.cat([_unit(5, 3), torch.full((5, 2), 0.1, dtype=torch.float64)], -1)
    y[1, 3] = 1.0  # off the ball
    y[2, 0] = 2.0  # off the sphere
    assert manifold(prod).check(y).tolist() == [True, False, False, True, True]


def test_repr_names_the_bound():
    r = repr(manifold(M.Sphere()))
    assert "Sphere" in r and "‖x‖ = 1" in r
    assert "1/√c" in repr(manifold(M.PoincareBall()))


_PARAM_WITHOUT_INFERENCE = """
import sys
import pyro, torch
import dlmppl.constraints as C
import dlmppl.distributions
import dlmppl.manifolds as M
assert "dlmppl.inference" not in sys.modules, sorted(m for m in sys.modules if m.startswith("dlmppl"))
p = pyro.param("p", torch.tensor([3.0, 4.0]), constraint=C.manifold(M.Sphere()))
torch.testing.assert_close(p.detach(), torch.tensor([0.6, 0.8]))
assert isinstance(torch.distributions.transform_to(C.manifold(M.Sphere())), C.ManifoldProjection)
assert isinstance(torch.distributions.biject_to(C.ball(0.5)), C.BallTransform)
"""


def test_registrations_come_with_the_constraints():
    """``pyro.param(..., constraint=manifold(M))`` works with only the constraints and distributions
    imported (a fresh interpreter: the test session has imported dlmppl.inference long ago)."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _PARAM_WITHOUT_INFERENCE], env=env, cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
