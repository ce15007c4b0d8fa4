r"""Generation by sampling the intrinsic uniform measure of a VAE's latent metric.

Chadebec & Allassonnière ("A Geometric Perspective on Variational
Autoencoders", NeurIPS 2022) build the metric
``G(z) = Σᵢ Σᵢ⁻¹ ωᵢ(z) + λ e^{-τ‖z‖²} I`` from a trained encoder's posteriors
``N(μᵢ, Σᵢ)`` on the training data (:class:`dlmppl.geometry.ChadebecMetric`) and
generate by decoding draws of the intrinsic uniform law ``p(z) ∝ √det G(z)``
(:class:`dlmppl.distributions.IntrinsicUniform`), drawn by HMC.

The sampler runs many independent HMC chains at once, as one batched state of
the package's leapfrog (one vectorised gradient per leapfrog step for all
chains, a Metropolis test per chain), as the authors' sampler does; the step size (and a diagonal mass matrix) are adapted
during warm-up only, so every chain is an exact HMC chain afterwards.
:func:`intrinsic_codes` starts one chain per requested code at a random
training code and returns the chains' final states; :func:`intrinsic_sample`
decodes them.  Any target with a ``support`` that ``biject_to`` knows (real
vectors, :func:`dlmppl.distributions.intrinsic.ball`) can be sampled.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import biject_to
from torch.distributions import constraints as _tc

from ..distributions.intrinsic import IntrinsicUniform
from ..geometry.chadebec import ChadebecMetric, posterior_moments
from ..inference.adaptation import dual_averaging_init, dual_averaging_update
from ..inference.integrators import geodesic_leapfrog, trajectory

__all__ = ["intrinsic_codes", "intrinsic_sample", "chadebec_metric"]


def _select(take, new, old):
    """Per chain (dim 0): ``new`` where ``take``, else ``old`` (dicts of tensors)."""
    return {k: torch.where(take.reshape((-1,) + (1,) * (v.dim() - 1)), v, old[k]) for k, v in new.items()}


def _batched_hmc(
    log_prob,
    init: torch.Tensor,
    num_samples: int = 1,
    warmup_steps: int = 200,
    num_steps: int = 10,
    step_size: float = 0.1,
    target_accept: float = 0.8,
    support=_tc.real_vector,
    adapt_mass: bool = True,
):
    r"""Independent HMC chains, vectorised: ``K`` chains of a target ``log_prob`` on ``R^d`` (or a constrained set).

    The chains are one batched state ``{"x": (K, d)}`` of the package's leapfrog
    (:func:`dlmppl.inference.integrators.geodesic_leapfrog` with ``batch_ndim=1``):
    one vectorised gradient per step for all chains, a Metropolis test per chain.

    Parameters
    ----------
    log_prob : callable ``(K, d) -> (K,)``, the log-density (unnormalised) w.r.t. Lebesgue measure.
    init : ``(K, d)`` starting points (in ``support``).
    num_samples : draws kept per chain after warm-up.
    warmup_steps : iterations of step-size adaptation (dual averaging of ``log ε`` toward
        ``target_accept``, the mean acceptance over chains, Hoffman & Gelman 2014), and, at
        mid-warm-up, a diagonal mass matrix set to the across-chain variance.
    num_steps : leapfrog steps per iteration (the step size is jittered ×U(0.8, 1.2) per chain).
    support : a constraint with a ``biject_to`` transform; chains run in its unconstrained
        space with the log-Jacobian added to the target.

    Returns ``(samples, info)``: ``samples`` ``(num_samples, K, d)`` in the support, and
    ``info = {"accept_prob": (K,) mean acceptance after warm-up, "step_size": float,
    "inv_mass": (d,)}``.  Randomness from torch's generator.  Reference: Neal (2011),
    "MCMC using Hamiltonian dynamics".
    """
    if init.dim() != 2:
        raise ValueError(f"init must have shape (num_chains, d), got {tuple(init.shape)}")
    T = biject_to(support)
    z = {"x": T.inv(init.detach())}
    K, d = z["x"].shape
    like = {"dtype": z["x"].dtype, "device": z["x"].device}

    def potential_fn(z):
        x = torch.nan_to_num(z["x"])  # a rejected chain's NaN must not reach log_prob's validation
        y = T(x)
        return -(log_prob(y) + T.log_abs_det_jacobian(x, y))

    inv_mass = torch.ones(d, **like)
    integ = geodesic_leapfrog(
        potential_fn, {}, {}, lambda r: {"x": r["x"] * inv_mass},
        lambda z: {"x": torch.randn_like(z["x"]) / inv_mass.sqrt()}, batch_ndim=1,
    )  # fmt: skip
    da = dual_averaging_init(step_size)
    out, acc_sum = [], torch.zeros(K, **like)
    with torch.enable_grad():
        aux, pe = integ.init(z)
        for it in range(warmup_steps + num_samples):
            eps = math.exp(da.log_step_size if it < warmup_steps else da.log_step_size_avg)
            eps = eps * (0.8 + 0.4 * torch.rand(K, 1, **like))
            r = integ.momentum(z, aux)
            h0 = pe + integ.kinetic(z, r, aux)[0]
            z1, r1, aux1, pe1, _ = trajectory(integ, z, r, aux, eps, num_steps)
            h1 = pe1 + integ.kinetic(z1, r1, aux1)[0]
            acc = torch.exp(torch.clamp(h0 - h1, max=0.0))
            acc = torch.where(torch.isfinite(acc), acc, torch.zeros_like(acc))
            take = torch.rand(K, **like) < acc
            z, aux, pe = _select(take, z1, z), _select(take, aux1, aux), torch.where(take, pe1, pe)
            if it < warmup_steps:
                da = dual_averaging_update(da, float(acc.mean()), target_accept)
                if adapt_mass and it == warmup_steps // 2 and K > 2 * d:
                    inv_mass = z["x"].var(0).clamp_min(1e-8)
                    da = dual_averaging_init(math.exp(da.log_step_size))  # restart at the new scale (Stan)
            else:
                acc_sum = acc_sum + acc
                out.append(T(z["x"]).detach())
    samples = torch.stack(out) if out else init.new_zeros((0, K, d))
    info = {"accept_prob": acc_sum / max(num_samples, 1), "step_size": math.exp(da.log_step_size_avg), "inv_mass": inv_mass}
    return samples, info


def intrinsic_codes(metric, n: int, init_points: torch.Tensor, *, radius=None, warmup_steps: int = 150, num_steps: int = 10, step_size: float = 0.05, post_steps: int = 50, condition=None):
    r"""``n`` draws of the intrinsic uniform law ``∝ √det G(z)`` of ``metric`` by many-chain HMC.

    One chain per draw, started at a uniformly chosen row of ``init_points`` ``(N, d)``
    (e.g. the training codes), run for ``warmup_steps`` adapting iterations and ``post_steps``
    more; the final states are returned, ``(n, d)``.
    """
    if init_points.dim() != 2:
        raise ValueError(f"init_points must have shape (N, d), got {tuple(init_points.shape)}")
    target = IntrinsicUniform(metric, dim=init_points.shape[-1], radius=radius, condition=condition)
    idx = torch.randint(init_points.shape[0], (int(n),), device=init_points.device)
    samples, _ = _batched_hmc(
        target.log_prob, init_points[idx].detach(), num_samples=post_steps, warmup_steps=warmup_steps, num_steps=num_steps, step_size=step_size, support=target.support
    )
    return samples[-1]


def _encode(vae_or_encoder, data):
    if hasattr(vae_or_encoder, "encode"):
        q = vae_or_encoder.encode(data)
    elif callable(vae_or_encoder):
        q = vae_or_encoder(data)
    else:
        raise ValueError("vae_or_encoder must have an encode(x) method or be a callable encoder x -> q(z|x)")
    return posterior_moments(q)


def chadebec_metric(vae_or_encoder, data, *, lam: float = 1e-3, tau: float = 0.0, rho=None, n_centroids: int | None = None):
    """The :class:`~dlmppl.geometry.ChadebecMetric` of a VAE (``.encode(x)``) or encoder on ``data`` ``(N, D)``;
    ``n_centroids``: a random subset of the training codes (default: all)."""
    with torch.no_grad():
        mu, cov = _encode(vae_or_encoder, data)
    if mu.dim() != 2:
        raise ValueError(f"the encoder must give codes of shape (N, d) on data (N, D), got {tuple(mu.shape)}")
    if n_centroids is not None and n_centroids < mu.shape[0]:
        keep = torch.randperm(mu.shape[0], device=mu.device)[:n_centroids]
        mu, cov = mu[keep], cov[keep]
    return ChadebecMetric(mu.detach(), cov.detach(), lam=lam, tau=tau, rho=rho)


@torch.no_grad()
def intrinsic_sample(
    vae_or_encoder,
    n: int,
    data: torch.Tensor,
    *,
    decoder=None,
    lam: float = 1e-3,
    tau: float = 0.0,
    rho=None,
    n_centroids: int | None = None,
    warmup_steps: int = 150,
    post_steps: int = 50,
    num_steps: int = 10,
    return_codes: bool = False,
):
    r"""Generate ``n`` samples from a trained VAE by the intrinsic uniform law of its latent metric.

    Parameters
    ----------
    vae_or_encoder : a Euclidean-latent :class:`~dlmppl.models.ManifoldVAE` (or any object with
        ``encode(x)`` giving a Gaussian posterior, and ``decode(z)``), or an encoder callable
        ``x -> q(z|x)`` / ``(loc, scale)`` (then ``decoder`` is required).
    n : number of samples; data : the training data ``(N, D)`` (the metric's centroids).
    decoder : ``z (n, d) -> x``; default ``vae.decode`` followed by a sigmoid when
        ``vae.likelihood == "bernoulli"`` (i.e. the decoded means, as ``ManifoldVAE.sample``).
    lam, tau, rho, n_centroids : of :class:`~dlmppl.geometry.ChadebecMetric` (paper: ``τ ≈ 0``).
    warmup_steps, post_steps, num_steps : of :func:`intrinsic_codes`.
    return_codes : also return the latent codes ``(n, d)``.

    Returns the decoded samples ``(n, D)`` (and the codes). Cost: ``(warmup_steps + post_steps)
    · num_steps`` gradient evaluations of ``½ log det G`` on ``n`` codes, each ``O(n N d)``.
    Reference: Chadebec & Allassonnière, NeurIPS 2022, Sec. 4.5.
    """
    comps = getattr(vae_or_encoder, "components", None)
    if comps is not None and any(getattr(c, "kind", "euclidean") != "euclidean" for c in comps):
        raise ValueError("intrinsic_sample: the Chadebec metric is defined for a single Euclidean latent space")
    if decoder is None:
        if not hasattr(vae_or_encoder, "decode"):
            raise ValueError("decoder is required when vae_or_encoder has no decode(z) method")
        bern = getattr(vae_or_encoder, "likelihood", None) == "bernoulli"

        def decoder(z):
            out = vae_or_encoder.decode(z)
            return torch.sigmoid(out) if bern else out

    metric = chadebec_metric(vae_or_encoder, data, lam=lam, tau=tau, rho=rho, n_centroids=n_centroids)
    z = intrinsic_codes(metric, n, metric.mu, warmup_steps=warmup_steps, post_steps=post_steps, num_steps=num_steps)
    x = decoder(z)
    return (x, z) if return_codes else x
