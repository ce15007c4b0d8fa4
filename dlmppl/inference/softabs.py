r"""Riemannian-manifold HMC with the SoftAbs metric (Euclidean/unconstrained sites).

Betancourt (2013), "A general metric for Riemannian manifold Hamiltonian Monte
Carlo": with the Hessian of the potential ``∇²U(θ) = Q diag(λ) Qᵀ``, the metric is

    G(θ) = Q diag(g(λ)) Qᵀ,   g(λ) = λ coth(αλ)   (≥ 1/α, ≈ |λ| for |αλ| ≫ 1),

and the Hamiltonian ``H = U(θ) + ½ log det G(θ) + ½ pᵀ G(θ)⁻¹ p``
(Girolami & Calderhead 2011).  Its θ-gradient needs the third derivatives of
``U`` only through ``tr(M ∂_k ∇²U)`` for one symmetric matrix

    M = ½ Q (diag(g'(λ)/g(λ)) − J ∘ w wᵀ) Qᵀ,   w = Qᵀp / g(λ),
    J_ij = (g(λ_i) − g(λ_j)) / (λ_i − λ_j)   (J_ii = g'(λ_i)),

(Betancourt 2013, eqs. 17-19), contracted with the third-derivative tensor
(batched reverse-mode passes through the graph of the Hessian, once per point
of the trajectory; the implicit position update needs Hessians only); the divided
differences ``J`` stay finite for repeated eigenvalues (which Neal's funnel has).

The integrator is the generalised (implicit) leapfrog of Girolami & Calderhead
(2011, eqs. 16-18), solved by ``fixed_point_iters`` fixed-point iterations:

    p½ = p − ε/2 ∂_θH(θ, p½);   θ' = θ + ε/2 (G⁻¹(θ) + G⁻¹(θ')) p½;
    p' = p½ − ε/2 ∂_θH(θ', p½).

It is symplectic and reversible when the fixed points are solved, so the
Metropolis step (which uses the exact ``H``) corrects the discretisation.
"""

from __future__ import annotations

import torch

from .integrators import Integrator

__all__ = ["SoftAbsIntegrator", "softabs", "softabs_integrator"]


def softabs(lam: torch.Tensor, alpha: float):
    """``(g(λ), g'(λ))`` with ``g(λ) = λ coth(αλ)``, stable near 0.  Shapes as ``lam``."""
    x = alpha * lam
    small = x.abs() < 1e-3
    xs = torch.where(small, torch.ones_like(x), x)
    coth = 1.0 / torch.tanh(xs)
    g = torch.where(small, (1.0 + x * x / 3.0) / alpha, lam * coth)
    gp = torch.where(small, 2.0 * x / 3.0, coth - xs / torch.sinh(xs).pow(2))
    return g, gp


class _State:
    __slots__ = ("theta", "pe", "grad", "hess", "lam", "q", "g", "gp", "jmat")


class SoftAbsIntegrator:
    """State preparation, kinetic energy and generalised leapfrog for SoftAbs RMHMC.

    Args:
        potential_fn: dict of site values → scalar potential energy.
        prototype: dict of site values (unconstrained); the state is the
            concatenation of their flattened values (``D`` numbers).
        alpha: SoftAbs sharpness α.
        fixed_point_iters: fixed-point iterations of each implicit update.
    """

    key = "theta"

    def __init__(self, potential_fn, prototype, alpha=1e6, fixed_point_iters=6):
        self.potential_fn = potential_fn
        self.names = sorted(prototype)
        self.shapes = [prototype[n].shape for n in self.names]
        self.sizes = [prototype[n].numel() for n in self.names]
        self.alpha = float(alpha)
        self.iters = int(fixed_point_iters)
        self._vectorize = None  # unknown until first tried

    def pack(self, z):
        return torch.cat([z[n].reshape(-1) for n in self.names])

    def unpack(self, theta):
        out, pos = {}, 0
        for n, sh, sz in zip(self.names, self.shapes, self.sizes, strict=True):
            out[n] = theta[pos : pos + sz].reshape(sh)
            pos += sz
        return out

    def _f(self, theta):
        return self.potential_fn(self.unpack(theta))

    def _derivatives(self, theta, third: bool):
        """(U, ∇U, ∇²U, ∇³U or None) at θ, detached (``t3[k, i, j] = ∂_k ∂_i ∂_j U``).

        Reverse mode on one graph: the Hessian and the third-derivative tensor
        are batched backward passes (``is_grads_batched``, i.e. ``vmap``), with a
        row-by-row fallback when the potential is not vmappable.
        """
        th = theta.detach().clone().requires_grad_(True)
        pe = self._f(th)
        (grad,) = torch.autograd.grad(pe, th, create_graph=True)
        n = th.numel()

        def batched(out, create_graph):
            eye = torch.eye(out.numel(), dtype=out.dtype, device=out.device)
            if self._vectorize is not False:
                try:
                    (res,) = torch.autograd.grad(out, th, eye, create_graph=create_graph, retain_graph=True, is_grads_batched=True)
                    self._vectorize = True
                    return res
                except RuntimeError:
                    if self._vectorize:
                        raise
                    self._vectorize = False
            rows = [torch.autograd.grad(out[i], th, create_graph=create_graph, retain_graph=True)[0] for i in range(out.numel())]
            return torch.stack(rows)

        hess = batched(grad, third)
        t3 = batched(hess.reshape(-1), False).reshape(n, n, n) if third else None
        # third derivatives are symmetric in their three indices: any layout is t3[k, i, j]
        return pe.detach(), grad.detach(), hess.detach(), t3

    def _state(self, theta, third=True):
        """Potential, gradient, Hessian (and third derivatives) and SoftAbs metric at θ."""
        pe, grad, h, t3 = self._derivatives(theta, third)
        s = _State()
        s.theta, s.pe, s.grad, s.hess = theta.detach(), pe, grad, t3
        lam, q = torch.linalg.eigh(0.5 * (h + h.T))
        g, gp = softabs(lam, self.alpha)
        dl = lam[:, None] - lam[None, :]
        close = dl.abs() <= 1e-8 * (1.0 + lam.abs().max())
        dg = g[:, None] - g[None, :]
        jmat = torch.where(close, 0.5 * (gp[:, None] + gp[None, :]), dg / torch.where(close, torch.ones_like(dl), dl))
        s.lam, s.q, s.g, s.gp, s.jmat = lam, q, g, gp, jmat
        return s

    def prepare(self, z):
        s = self._state(self.pack(z))
        return s, s.pe

    def sample_momentum(self, s):
        xi = torch.randn_like(s.g)
        return {self.key: s.q @ (s.g.sqrt() * xi)}

    def kinetic(self, s, r):
        p = r[self.key]
        w = (s.q.T @ p) / s.g
        ke = 0.5 * s.g.log().sum() + 0.5 * (w * w * s.g).sum()
        return ke, {self.key: s.q @ w}, {self.key: p}

    def _dH_dtheta(self, s, p):
        w = (s.q.T @ p) / s.g
        inner = torch.diag(s.gp / s.g) - s.jmat * (w[:, None] * w[None, :])
        m = 0.5 * s.q @ inner @ s.q.T
        # s.hess holds ∂_k ∇²U as t3[k, i, j]
        return s.grad + torch.einsum("ij,kij->k", m, s.hess)

    def _ginv(self, s, p):
        return s.q @ ((s.q.T @ p) / s.g)

    def leapfrog(self, z, r, s, step_size, num_steps=1):
        p = r[self.key]
        for _ in range(num_steps):
            half = 0.5 * step_size
            p_half = p
            for _ in range(self.iters):
                p_half = p - half * self._dH_dtheta(s, p_half)
            v0 = self._ginv(s, p_half)
            theta0 = s.theta.detach()
            theta = theta0 + step_size * v0
            s_new = None
            for _ in range(self.iters):
                s_new = self._state(theta, third=False)
                theta = theta0 + half * (v0 + self._ginv(s_new, p_half))
            s_new = self._state(theta)
            p = p_half - half * self._dH_dtheta(s_new, p_half)
            s = s_new
        z_new = {k: v.detach() for k, v in self.unpack(s.theta.detach()).items()}
        pe = torch.where(torch.isfinite(s.pe), s.pe, torch.full_like(s.pe, float("inf")))
        return z_new, {self.key: p.detach()}, s, pe


def softabs_integrator(potential_fn, prototype, alpha=1e6, fixed_point_iters=6) -> Integrator:
    """The generalised leapfrog with the SoftAbs metric (Betancourt 2013) as an
    :class:`~dlmppl.inference.integrators.Integrator` (``aux``: the metric at ``z``;
    the momentum is one flat vector ``{"theta": (D,)}``).  Arguments of
    :class:`SoftAbsIntegrator`."""
    integ = SoftAbsIntegrator(potential_fn, prototype, alpha, fixed_point_iters)
    return Integrator(
        init=integ.prepare,
        momentum=lambda z, aux: integ.sample_momentum(aux),
        kinetic=lambda z, r, aux: integ.kinetic(aux, r),
        step=integ.leapfrog,
    )
