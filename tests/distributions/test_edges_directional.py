"""Edges of the directional distributions (issue 11, defects 4, 5 and 6).

* empty batches and sample shapes with a 0: empty results, as torch distributions give,
  for the distributions, the Bessel/normaliser helpers and every registered KL;
* ``PowerSpherical.log_prob`` at the antipode is ``-inf`` (it was NaN);
* concentrations up to 1e8: finite densities and samples on the sphere;
* log-normalisers, mean resultant lengths, entropies and KLs in float32 and float64,
  ``d`` = 2, 3, 10, 512, ``κ`` from 0 to 1e8, against mpmath (40 digits): relative errors
  below 2e-5 in float32 and 1e-9 in float64 (float32 KL(vMF(1e8) ‖ U) on S^1 was -38.2,
  the truth is 9.63); gradients of the KLs against their closed forms.
"""

from __future__ import annotations

import functools
import math

import mpmath as mp
import pytest
import torch
from torch.distributions import kl_divergence

from dlmppl import manifolds as M
from dlmppl.distributions import (
    IntrinsicUniform,
    ManifoldUniform,
    PowerSpherical,
    VonMisesFisher,
    vmf_log_normalizer,
    vmf_mean_resultant_length,
)
from dlmppl.distributions.von_mises_fisher import bessel_iv_ratio, log_bessel_iv
from dlmppl.geometry import ConformalMetric

F32, F64 = torch.float32, torch.float64


def _unit(*shape, d, dtype=F64, seed=0):
    x = torch.randn(*shape, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


def _sphere(d):
    return ManifoldUniform(M.Sphere(), (d,), dtype=F64)


# ----------------------------------------------------------------------------------- empty batches

EMPTY = [
    ("vmf-d3-empty-loc", lambda: VonMisesFisher(torch.zeros(0, 3, dtype=F64), torch.tensor(1.0, dtype=F64))),
    ("vmf-d5-empty-kappa", lambda: VonMisesFisher(_unit(d=5), torch.zeros(0, dtype=F64))),
    ("vmf-d2-empty-2d", lambda: VonMisesFisher(_unit(2, 1, d=2), torch.zeros(0, dtype=F64))),
    ("ps-d4-empty-loc", lambda: PowerSpherical(torch.zeros(0, 4, dtype=F64), torch.tensor(2.0, dtype=F64))),
    ("ps-d3-empty-kappa", lambda: PowerSpherical(_unit(d=3), torch.zeros(2, 0, dtype=F64))),
    ("uniform-sphere", lambda: ManifoldUniform(M.Sphere(), (3,), batch_shape=(0,), dtype=F64)),
    ("uniform-stiefel", lambda: ManifoldUniform(M.Stiefel(), (3, 2), batch_shape=(0, 2), dtype=F64)),
]


@pytest.mark.parametrize("name, make", EMPTY, ids=[e[0] for e in EMPTY])
def test_empty_batches_give_empty_results(name, make):
    d = make()
    assert d.batch_shape.numel() == 0
    for sample_shape in [(), (2,), (0,)]:
        x = d.rsample(sample_shape)
        assert x.shape == torch.Size(sample_shape) + d.batch_shape + d.event_shape
        assert d.sample(sample_shape).shape == x.shape
        assert d.log_prob(x).shape == torch.Size(sample_shape) + d.batch_shape
    assert d.entropy().shape == d.batch_shape
    assert d.mean.shape == d.batch_shape + d.event_shape
    if hasattr(d, "log_normalizer"):
        assert d.log_normalizer().shape == d.batch_shape
    if isinstance(d, VonMisesFisher):
        assert d.mean_resultant_length.shape == d.batch_shape


@pytest.mark.parametrize("family, d", [(VonMisesFisher, 3), (VonMisesFisher, 5), (VonMisesFisher, 2), (PowerSpherical, 3)])
def test_sample_shapes_with_a_zero_keep_the_graph(family, d):
    # rsample((0,)) used to fail inside torch's Beta ("cannot reshape tensor of 0 elements")
    loc = _unit(d=d).requires_grad_(True)
    kappa = torch.tensor([0.5, 40.0], dtype=F64, requires_grad=True)
    dist = family(loc, kappa)
    for sample_shape in [(0,), (0, 3), (3, 0)]:
        x = dist.rsample(sample_shape)
        assert x.shape == torch.Size(sample_shape) + (2, d)
        gl, gk = torch.autograd.grad(x.sum(), (loc, kappa), allow_unused=True)
        assert gk is not None and (gk == 0).all() and gk.shape == kappa.shape
        assert dist.log_prob(x).shape == torch.Size(sample_shape) + (2,)


def test_empty_log_prob_of_the_issue():
    # issue 11, defect 4: a TypeError before
    d = VonMisesFisher(torch.zeros(0, 3), 1.0)
    assert d.log_prob(torch.zeros(0, 3)).shape == (0,)
    assert d.rsample((0,)).shape == (0, 0, 3)


@pytest.mark.parametrize("shape", [(0,), (2, 0), (0, 3)])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_bessel_and_normaliser_helpers_accept_empty_tensors(shape, dtype):
    k = torch.zeros(shape, dtype=dtype, requires_grad=True)
    for v in (0.0, 0.5, 7.0):
        for out in (log_bessel_iv(v, k), log_bessel_iv(v, k, scaled=True), bessel_iv_ratio(v, k)):
            assert out.shape == shape and out.dtype == dtype
            (g,) = torch.autograd.grad(out.sum(), k)
            assert g.shape == shape
    for d in (2, 3, 10):
        assert vmf_log_normalizer(d, k).shape == shape
        assert vmf_mean_resultant_length(d, k).shape == shape


def test_every_registered_kl_accepts_empty_batches():
    p = VonMisesFisher(torch.zeros(0, 3, dtype=F64), torch.tensor(1.0, dtype=F64))
    ps = PowerSpherical(_unit(d=3), torch.zeros(0, dtype=F64))
    u = ManifoldUniform(M.Sphere(), (3,), batch_shape=(0,), dtype=F64)
    q = VonMisesFisher(_unit(d=3), torch.tensor(2.0, dtype=F64))
    for a, b in [(p, _sphere(3)), (ps, _sphere(3)), (u, q), (u, PowerSpherical(_unit(d=3), torch.tensor(2.0, dtype=F64))), (p, q), (q, p)]:
        kl = kl_divergence(a, b)
        assert kl.shape == (0,), (type(a).__name__, type(b).__name__)


def test_intrinsic_uniform_empty_batch():
    metric = ConformalMetric(-1.0)
    metric.dim = 2
    d = IntrinsicUniform(metric, radius=0.9)
    assert d.log_prob(torch.zeros(0, 2)).shape == (0,)
    assert d.expand((0,)).log_prob(torch.zeros(2)).shape == (0,)


# ----------------------------------------------------------------------------------- antipode, large κ


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("d", [2, 3, 10])
def test_power_spherical_log_prob_at_the_antipode_is_minus_inf(dtype, d):
    # issue 11, defect 5: 1 + μᵀx rounds below 0 at x = -μ for ~16% of directions: log(<0) = NaN
    mu = _unit(500, d=d, dtype=dtype)
    for kappa in (0.5, 2.0, 50.0, 1e6):
        lp = PowerSpherical(mu, torch.tensor(kappa, dtype=dtype)).log_prob(-mu)
        assert (lp == -math.inf).all()
    lp0 = PowerSpherical(mu, torch.tensor(0.0, dtype=dtype)).log_prob(-mu)
    log_area = math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)
    torch.testing.assert_close(lp0, torch.full_like(lp0, -log_area))
    # near the antipode: never NaN, and the density is monotone in the distance to it
    near = torch.nn.functional.normalize(-mu + 1e-3 * _unit(500, d=d, dtype=dtype, seed=1), dim=-1)
    lp = PowerSpherical(mu, torch.tensor(2.0, dtype=dtype)).log_prob(near)
    assert not lp.isnan().any() and (lp < 0).all()


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("family, d", [(VonMisesFisher, 3), (VonMisesFisher, 5), (PowerSpherical, 3), (PowerSpherical, 10)])
def test_concentration_up_to_1e8(family, d, dtype):
    mu = _unit(3, d=d, dtype=dtype)
    for kappa in (1e4, 1e6, 1e8):
        dist = family(mu, torch.tensor(kappa, dtype=dtype))
        x = dist.sample((200,))
        assert dist.support.check(x).all()
        # draws within a few (d/κ)^½ of loc (the tail beyond 30 of them has probability < e^-400)
        assert ((x - mu).norm(dim=-1) < 30 * math.sqrt(d / kappa)).all()
        assert torch.isfinite(dist.log_prob(x)).all()
        at_antipode = dist.log_prob(-mu)
        assert (at_antipode == -math.inf).all() if family is PowerSpherical else torch.isfinite(at_antipode).all()
        assert torch.isfinite(dist.entropy()).all() and torch.isfinite(dist.log_normalizer()).all()


# ----------------------------------------------------------------------------------- accuracy vs mpmath

DIMS = [2, 3, 10, 512]
KAPPAS = [0.0, 1e-6, 1e-3, 0.1, 1.0, 10.0, 15.0, 15.5, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8]
RTOL = {F32: 2e-5, F64: 1e-9}


def _log_area(d):
    return mp.log(2) + mp.mpf(d) / 2 * mp.log(mp.pi) - mp.loggamma(mp.mpf(d) / 2)


@functools.cache
def _vmf_ref(d, k):
    """(log C, A, KL(vMF ‖ U), KL(U ‖ vMF)) at 40 digits."""
    with mp.workdps(40):
        k = mp.mpf(k)
        v = mp.mpf(d) / 2 - 1
        if k == 0:
            return -_log_area(d), mp.mpf(0), mp.mpf(0), mp.mpf(0)
        iv = mp.besseli(v, k)
        log_c = v * mp.log(k) - mp.mpf(d) / 2 * mp.log(2 * mp.pi) - mp.log(iv)
        a = mp.besseli(v + 1, k) / iv
        return log_c, a, log_c + k * a + _log_area(d), -_log_area(d) - log_c


@functools.cache
def _ps_ref(d, k):
    """(log C, KL(PS ‖ U), KL(U ‖ PS)) at 40 digits."""
    with mp.workdps(40):
        k = mp.mpf(k)
        b = mp.mpf(d - 1) / 2
        a = b + k
        log_c = -((a + b) * mp.log(2) + b * mp.log(mp.pi) + mp.loggamma(a) - mp.loggamma(a + b))
        e0 = mp.log(2) + mp.digamma(b) - mp.digamma(2 * b)
        ek = mp.log(2) + mp.digamma(a) - mp.digamma(a + b)
        return log_c, log_c + k * ek + _log_area(d), -_log_area(d) - log_c - k * e0


def _check(rows, rtol, atol=1e-30):
    """``rows``: (what, κ, got, reference); ``|error| ≤ rtol |reference| + atol``.

    (The default ``atol`` only absorbs mpmath's round-off, ~1e-41, where the reference is 0.)
    """
    bad = []
    for what, k, got, ref in rows:
        ref = float(ref)
        err = abs(float(got) - ref)
        if not err <= rtol * abs(ref) + atol:
            bad.append(f"{what} κ={k:g}: {float(got):.10g} vs {ref:.10g} (rel {err / max(abs(ref), 1e-300):.2e})")
    assert not bad, "\n".join(bad)


def _check_entropy(rows, rtol):
    # the entropy crosses 0 as κ grows: its error is measured relative to max(1, |H|)
    bad = []
    for what, k, got, ref in rows:
        ref = float(ref)
        err = abs(float(got) - ref)
        if not err <= rtol * max(1.0, abs(ref)):
            bad.append(f"{what} κ={k:g}: {float(got):.10g} vs {ref:.10g}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("d", DIMS)
def test_vmf_normaliser_entropy_and_kls_match_mpmath(d, dtype):
    loc = torch.zeros(d, dtype=dtype)
    loc[0] = 1
    kappa = torch.tensor(KAPPAS, dtype=dtype)
    p = VonMisesFisher(loc, kappa)
    u = ManifoldUniform(M.Sphere(), (d,), dtype=dtype)
    got = {
        "log C": p.log_normalizer(),
        "A": p.mean_resultant_length,
        "KL(vMF‖U)": kl_divergence(p, u),
        "KL(U‖vMF)": kl_divergence(u.expand((len(KAPPAS),)), p),
    }
    for v in got.values():
        assert v.dtype == dtype and v.shape == (len(KAPPAS),)
    refs = [_vmf_ref(d, k) for k in KAPPAS]
    rows = []
    for j, name in enumerate(got):
        rows += [(name, k, got[name][i], refs[i][j]) for i, k in enumerate(KAPPAS)]
    _check(rows, RTOL[dtype])
    ent = p.entropy()
    _check_entropy([("H", k, ent[i], _log_area(d) - refs[i][2]) for i, k in enumerate(KAPPAS)], RTOL[dtype])


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("d", DIMS)
def test_power_spherical_normaliser_entropy_and_kls_match_mpmath(d, dtype):
    loc = torch.zeros(d, dtype=dtype)
    loc[0] = 1
    kappa = torch.tensor(KAPPAS, dtype=dtype)
    p = PowerSpherical(loc, kappa)
    u = ManifoldUniform(M.Sphere(), (d,), dtype=dtype)
    got = {"log C": p.log_normalizer(), "KL(PS‖U)": kl_divergence(p, u), "KL(U‖PS)": kl_divergence(u, p)}
    refs = [_ps_ref(d, k) for k in KAPPAS]
    rows = []
    for j, name in enumerate(got):
        assert got[name].dtype == dtype
        rows += [(name, k, got[name][i], refs[i][j]) for i, k in enumerate(KAPPAS)]
    _check(rows, RTOL[dtype])
    ent = p.entropy()
    _check_entropy([("H", k, ent[i], _log_area(d) - refs[i][1]) for i, k in enumerate(KAPPAS)], RTOL[dtype])


def test_the_float32_kl_of_the_issue():
    # issue 11, defect 6: KL(vMF(κ=1e8) ‖ uniform on S^1) was -38.2 in float32
    p = VonMisesFisher(torch.tensor([1.0, 0.0]), torch.tensor(1e8))
    kl = kl_divergence(p, ManifoldUniform(M.Sphere(), (2,)))
    assert abs(float(kl) - 9.629278902680) < 1e-5


# (κ_p, κ_q, angle between the directions)
PAIRS = [
    (1e8, 1e8, 1e-4),
    (1e8, 1.0, 0.5),
    (1.0, 1e8, 0.5),
    (1e6, 1.01e6, 0.0),
    (0.0, 1e4, 1.0),
    (1e4, 0.0, 1.0),
    (50.0, 20.0, math.pi - 0.1),
    (1e-3, 2e-3, 2.0),
    (15.2, 14.8, 0.3),
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("d", [2, 3, 10, 512])
def test_vmf_vmf_kl_matches_mpmath(d, dtype):
    rows = []
    for kp, kq, angle in PAIRS:
        mp_loc = torch.zeros(d, dtype=dtype)
        mp_loc[0] = 1
        mq_loc = torch.zeros(d, dtype=dtype)
        mq_loc[0], mq_loc[1] = math.cos(angle), math.sin(angle)
        p = VonMisesFisher(mp_loc, torch.tensor(kp, dtype=dtype))
        q = VonMisesFisher(mq_loc, torch.tensor(kq, dtype=dtype))
        kl = kl_divergence(p, q)
        assert kl.dtype == dtype
        with mp.workdps(40):
            # the cosine of the directions actually given (rounded to dtype), normalised
            a = [mp.mpf(float(t)) for t in mq_loc[:2]]
            cos = a[0] / mp.sqrt(a[0] ** 2 + a[1] ** 2)
            lcp, ap, _, _ = _vmf_ref(d, kp)
            lcq, _, _, _ = _vmf_ref(d, kq)
            ref = lcp - lcq + ap * (mp.mpf(kp) - mp.mpf(kq) * cos)
        rows.append((f"KL(vMF({kp:g})‖vMF({kq:g})), angle {angle:g}", kp, kl, ref))
    # KL(p ‖ q) for nearby p, q is a difference of terms of size log κ: an absolute floor of 1e-12
    _check(rows, RTOL[dtype], atol=1e-12)
    same = VonMisesFisher(_unit(4, d=d, dtype=dtype), torch.tensor([0.0, 1.0, 1e4, 1e8], dtype=dtype))
    assert (kl_divergence(same, same) == 0).all()


@pytest.mark.parametrize("d", [2, 3, 10, 512])
def test_kl_gradients_match_their_closed_forms(d):
    # d/dκ KL(vMF ‖ U) = κ A'(κ), A' = 1 - A² - (d-1)A/κ;  d/dκ KL(PS ‖ U) = κ (ψ'(α) - ψ'(α+β))
    kappas = [1e-3, 0.5, 14.9, 15.1, 100.0, 1e4, 1e6, 1e8]
    k = torch.tensor(kappas, dtype=F64, requires_grad=True)
    loc = torch.zeros(d, dtype=F64)
    loc[0] = 1
    u = _sphere(d)
    (g_vmf,) = torch.autograd.grad(kl_divergence(VonMisesFisher(loc, k), u).sum(), k)
    (g_ps,) = torch.autograd.grad(kl_divergence(PowerSpherical(loc, k), u).sum(), k)
    (g_h,) = torch.autograd.grad(VonMisesFisher(loc, k).entropy().sum(), k)
    rows = []
    with mp.workdps(40):
        for i, kk in enumerate(kappas):
            a = _vmf_ref(d, kk)[1]
            km = mp.mpf(kk)
            rows.append(("dKL(vMF‖U)/dκ", kk, g_vmf[i], km * (1 - a * a - (d - 1) * a / km)))
            rows.append(("dH(vMF)/dκ", kk, -g_h[i], km * (1 - a * a - (d - 1) * a / km)))
            b = mp.mpf(d - 1) / 2
            rows.append(("dKL(PS‖U)/dκ", kk, g_ps[i], km * (mp.psi(1, b + km) - mp.psi(1, 2 * b + km))))
    _check(rows, 1e-8)
