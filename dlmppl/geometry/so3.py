r"""The rotation group ``SO(3) = {R ∈ R^{3×3}: RᵀR = I, det R = 1}`` with its bi-invariant metric.

Points are ``3×3`` rotation matrices (``event_shape = (3, 3)``, ``ndim = 2``).  A tangent
vector at ``R`` is an ambient matrix ``R Ω`` with ``Ω`` skew-symmetric, ``Ω = hat(ω)``,
``hat(ω) x = ω × x``; ``vee`` is the inverse of ``hat``.

Metric.  ``⟨U, V⟩_R = ½ tr(UᵀV)`` (bi-invariant), so ``‖R hat(ω)‖ = |ω|`` and the
geodesic distance is the rotation angle of the relative rotation,
``d(R₁, R₂) = θ(R₁ᵀR₂) ∈ [0, π]``.  Geodesics are one-parameter subgroups,
``γ(t) = R exp(t hat(ω))``; they close after length ``2π``, and the injectivity radius
is ``π``.  With this metric ``SO(3)`` is isometric to the sphere ``S³`` of radius 2
with antipodes identified (unit quaternions ``q = (cos θ/2, sin θ/2 n)``), so its total
volume is ``½ · 2π² · 2³ = 8π²``.  In exponential coordinates ``R = R₀ exp(hat(ω))``
the volume element is ``(2 - 2 cos|ω|)/|ω|² d³ω``.

Every density in dlmppl on ``SO(3)`` is with respect to this volume (DESIGN.md, "Base
measure"): the uniform (Haar) law has density ``1/(8π²)``; a density ``f_H`` with
respect to the *normalised* Haar measure (the convention of Khatri & Mardia 1977 and
most of the rotation literature) is ``f_H / (8π²)`` here.

Exponential and logarithm are Rodrigues' formula and its inverse, with Taylor branches
at angle 0 and the symmetric part ``½(R + Rᵀ) - cos θ I = (1 - cos θ) n nᵀ`` for the axis
near angle ``π`` (where ``sin θ`` in the skew part loses every digit); the distance is
``atan2(|vee skew(R₁ᵀR₂)|, (tr R₁ᵀR₂ - 1)/2) = atan2(sin θ, cos θ)``: relative accuracy near 0
(the skew part carries ``sin θ`` to full relative precision) and absolute accuracy ``eps``
near ``π``, unlike ``arccos((tr - 1)/2)`` (error ``√eps`` near 0).
"""

from __future__ import annotations

import math

import geoopt
import torch

from .base import Geometry, _tiny, geometry_of

__all__ = [
    "SO3",
    "SO3Geometry",
    "hat",
    "vee",
    "so3_exp",
    "so3_log",
    "rotation_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
]

LOG_VOLUME = math.log(8 * math.pi**2)
"""log of the total volume ``8π²`` of SO(3) under ``⟨U, V⟩ = ½ tr(UᵀV)``."""


def _safe_norm(x, dim=-1, keepdim=False):
    """Euclidean norm with a zero (not NaN) gradient at 0."""
    return x.pow(2).sum(dim, keepdim=keepdim).clamp_min(_tiny(x)).sqrt()


def _skew(a):
    return 0.5 * (a - a.transpose(-1, -2))


def hat(w):
    """``(..., 3) → (..., 3, 3)``: the skew matrix with ``hat(w) x = w × x``."""
    z = torch.zeros_like(w[..., 0])
    w1, w2, w3 = w.unbind(-1)
    return torch.stack(
        [torch.stack([z, -w3, w2], -1), torch.stack([w3, z, -w1], -1), torch.stack([-w2, w1, z], -1)], -2
    )


def vee(a):
    """``(..., 3, 3) → (..., 3)``: the inverse of :func:`hat` on the skew part of ``a``."""
    return 0.5 * torch.stack([a[..., 2, 1] - a[..., 1, 2], a[..., 0, 2] - a[..., 2, 0], a[..., 1, 0] - a[..., 0, 1]], -1)


def _sinc_coeffs(theta):
    """``(sin θ/θ, (1 - cos θ)/θ²)`` with Taylor series below ``θ = 1e-2`` (finite gradients at 0)."""
    small = theta < 1e-2
    t = torch.where(small, torch.ones_like(theta), theta)
    t2 = theta * theta
    a = torch.where(small, 1 - t2 / 6 * (1 - t2 / 20 * (1 - t2 / 42)), torch.sin(t) / t)
    # (1 - cos t)/t² = ½ sinc(t/2)², free of the cancellation of 1 - cos t
    half = torch.sin(0.5 * t) / t
    b = torch.where(small, 0.5 - t2 / 24 * (1 - t2 / 30 * (1 - t2 / 56)), 2 * half * half)
    return a, b


def so3_exp(w):
    """Rodrigues: ``exp(hat(w)) = I + sin θ/θ K + (1 - cos θ)/θ² K²``, ``K = hat(w)``, ``θ = |w|``.

    ``w``: ``(..., 3)``; returns ``(..., 3, 3)``.  Exact to rounding for every ``θ``
    (no renormalisation needed); differentiable, also at ``w = 0``.
    """
    theta = _safe_norm(w)[..., None, None]
    a, b = _sinc_coeffs(theta)
    k = hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    return eye + a * k + b * (k @ k)


def _angle_parts(r):
    """``(s, c, a)`` with ``a = vee(skew R) = sin θ n``, ``s = |a| = sin θ``, ``c = cos θ``; ``θ = atan2(s, c)``."""
    a = vee(r)
    c = 0.5 * (r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1)
    return _safe_norm(a), c, a


def rotation_angle(r):
    """The rotation angle ``θ ∈ [0, π]`` of ``R`` (``(..., 3, 3) → (...)``): ``atan2(|vee skew R|, (tr R - 1)/2)``."""
    s, c, _ = _angle_parts(r)
    return torch.atan2(s, c)


def so3_log(r):
    """The principal logarithm ``w`` (``|w| ≤ π``) with ``exp(hat(w)) = R``; ``(..., 3, 3) → (..., 3)``.

    ``θ = atan2(|a|, c)`` with ``a = vee(skew R) = sin θ n`` and ``c = (tr R - 1)/2``.  For
    ``c ≥ 0`` (``θ ≤ π/2``): ``w = θ/sin θ · a`` (Taylor of ``asin(s)/s`` at small ``s``).  For
    ``c < 0`` the axis comes from the symmetric part ``B = ½(R + Rᵀ) - c I = (1 - c) n nᵀ``
    (column ``j`` of the largest diagonal entry: ``n = B_{:j}/√((1 - c) B_jj)``), its sign
    from ``a``; at ``θ = π`` exactly (``a = 0``) the sign is that of the largest entry's
    column, so one of the two minimising logarithms is returned.
    """
    s, c, a = _angle_parts(r)
    theta = torch.atan2(s, c)
    # θ ≤ π/2 branch
    small = s < 1e-3
    s_ = torch.where(small, torch.ones_like(s), s)
    ratio = torch.where(small, 1 + s * s / 6 + 3 * s**4 / 40, theta / s_)
    w_skew = ratio.unsqueeze(-1) * a
    # θ > π/2 branch: the symmetric part
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    big = c < 0
    c_ = torch.where(big, c, -torch.ones_like(c))  # keeps the unused branch finite (and its gradient)
    bmat = 0.5 * (r + r.transpose(-1, -2)) - c_[..., None, None] * eye
    diag = bmat.diagonal(dim1=-2, dim2=-1)
    j = diag.argmax(-1, keepdim=True)
    col = torch.take_along_dim(bmat, j[..., None, :].expand(bmat.shape[:-1] + (1,)), -1).squeeze(-1)
    bjj = torch.take_along_dim(diag, j, -1).squeeze(-1)
    n = col / ((1 - c_) * bjj.clamp_min(_tiny(r))).sqrt().unsqueeze(-1)
    sign = torch.where((n * a).sum(-1) < 0, -torch.ones_like(c), torch.ones_like(c))
    w_sym = (sign * theta).unsqueeze(-1) * n
    return torch.where(big.unsqueeze(-1), w_sym, w_skew)


def quaternion_to_matrix(q):
    """Unit quaternions ``(w, x, y, z)`` ``(..., 4)`` to rotation matrices ``(..., 3, 3)`` (``q`` and ``-q`` agree)."""
    q = q / _safe_norm(q, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quaternion(r):
    """Rotation matrices ``(..., 3, 3)`` to unit quaternions ``(..., 4)`` with ``w ≥ 0`` (via :func:`so3_log`)."""
    w = so3_log(r)
    theta = _safe_norm(w, keepdim=True)
    half = 0.5 * theta
    small = theta < 1e-4
    t = torch.where(small, torch.ones_like(theta), theta)
    coef = torch.where(small, 0.5 - theta * theta / 48, torch.sin(half) / t)
    return torch.cat([torch.cos(half), coef * w], -1)


class _Polar(torch.autograd.Function):
    """Nearest rotation with the derivative of the polar factor (no ``1/(sᵢ - sⱼ)`` of the SVD's backward).

    ``X = R P`` with ``P = V diag(λ) Vᵀ`` symmetric (``λ = D s``, ``D`` the det fix); ``dR = R Ω``
    with ``PΩ + ΩP = RᵀdX - dXᵀR``, solved in the eigenbasis of ``P`` (``Ω̂ᵢⱼ = Ĉᵢⱼ/(λᵢ + λⱼ)``):
    finite at ``X ∈ SO(3)`` (all ``sᵢ = 1``), where it is the projection ``R skew(RᵀG)``.
    """

    @staticmethod
    def forward(ctx, x):
        u, s, vh = torch.linalg.svd(x)
        d = torch.linalg.det(u @ vh)
        one = torch.ones_like(d)
        fix = torch.stack([one, one, torch.where(d < 0, -one, one)], -1)
        r = (u * fix.unsqueeze(-2)) @ vh
        ctx.save_for_backward(r, vh, s * fix)
        return r

    @staticmethod
    def backward(ctx, g):
        r, vh, lam = ctx.saved_tensors
        v = vh.transpose(-1, -2)
        h = vh @ r.transpose(-1, -2) @ g @ v
        den = lam.unsqueeze(-1) + lam.unsqueeze(-2)
        k = h / torch.where(den.abs() > 0, den, torch.ones_like(den))
        w = v @ k @ vh
        return r @ (w - w.transpose(-1, -2))


def _polar(x):
    """Nearest rotation (Frobenius) of ``(..., 3, 3)``: ``U diag(1, 1, det UVᵀ) Vᵀ`` from the SVD."""
    if x.numel() == 0:
        return x.clone()
    return _Polar.apply(x)


def _proju(x, u):
    return x @ _skew(x.transpose(-1, -2) @ u)


def _violation(x):
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    orth = (x.transpose(-1, -2) @ x - eye).abs().amax((-1, -2))
    if x.numel() == 0:
        return orth
    det = torch.linalg.det(x)
    return torch.maximum(orth, (det - 1).abs())


class SO3(geoopt.Manifold):
    """geoopt manifold of 3×3 rotation matrices with the bi-invariant metric ``½ tr(UᵀV)``.

    ``expmap`` is the exact exponential ``R exp(RᵀU)`` (Rodrigues), ``retr`` the same,
    ``transp`` the left translation ``R₁Ω ↦ R₂Ω`` (the parallel transport of the
    Cartan–Schouten (−) connection; the Levi-Civita one differs only on non-commuting
    pairs), so ``geoopt.optim.RiemannianAdam``/``RiemannianSGD`` work on it.
    """

    name = "SO3"
    ndim = 2
    reversible = False

    def __init__(self):
        super().__init__()

    def _check_shape(self, shape, name):
        ok = len(shape) >= 2 and tuple(shape[-2:]) == (3, 3)
        return ok, None if ok else f"`{name}` must have shape (..., 3, 3), got {tuple(shape)}"

    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        v = _violation(x)
        ok = bool((v <= atol).all())
        return ok, None if ok else f"`x` is not a rotation matrix: max violation {float(v.max()):.3g} > {atol}"

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        a = x.transpose(-1, -2) @ u
        err = (a + a.transpose(-1, -2)).abs().amax((-1, -2))
        ok = bool((err <= atol).all())
        return ok, None if ok else f"`u` is not tangent (RᵀU not skew): {float(err.max()):.3g} > {atol}"

    def projx(self, x):
        return _polar(x)

    def proju(self, x, u):
        return _proju(x, u)

    def egrad2rgrad(self, x, u):
        return 2 * _proju(x, u)  # the metric is half the Frobenius one

    def inner(self, x, u, v=None, *, keepdim=False):
        v = u if v is None else v
        return 0.5 * (u * v).sum((-1, -2), keepdim=keepdim)

    def norm(self, x, u, *, keepdim=False):
        return self.inner(x, u, keepdim=keepdim).clamp_min(0).sqrt()

    def expmap(self, x, u):
        return x @ so3_exp(vee(x.transpose(-1, -2) @ u))

    def retr(self, x, u):
        return self.expmap(x, u)

    def logmap(self, x, y):
        return x @ hat(so3_log(x.transpose(-1, -2) @ y))

    def dist(self, x, y, *, keepdim=False):
        d = _dist(x, y)
        return d[..., None, None] if keepdim else d

    def transp(self, x, y, v):
        return y @ _skew(x.transpose(-1, -2) @ v)

    def random_uniform(self, *size, dtype=None, device=None):
        return SO3Geometry(self).random_uniform(tuple(size), dtype, device)

    random = random_uniform

    def origin(self, *size, dtype=None, device=None, seed=42):
        return torch.eye(3, dtype=dtype, device=device).expand(tuple(size))

    def extra_repr(self):
        return ""


def _dist(x, y):
    return rotation_angle(x.transpose(-1, -2) @ y)


class SO3Geometry(Geometry):
    """:class:`SO3` with the bi-invariant metric ``½ tr(UᵀV)``: see the module docstring.

    Shapes: points ``batch + (3, 3)``, tangent vectors ``batch + (3, 3)`` (ambient ``R Ω``),
    scalars ``batch``; float32/float64; empty batches.
    """

    name = "SO3"
    bounds = "RᵀR = I, det R = 1"
    compact = True

    # ------------------------------------------------------------------ the family's math

    def exp(self, x, v):
        return x @ so3_exp(vee(x.transpose(-1, -2) @ v))

    def log(self, x, y):
        return x @ hat(so3_log(x.transpose(-1, -2) @ y))

    def dist(self, x, y):
        return _dist(x, y)

    def inner(self, x, u, v=None):
        return 0.5 * (u * (u if v is None else v)).sum((-1, -2))

    def proju(self, x, u):
        return _proju(x, u)

    def egrad2rgrad(self, x, g):
        return 2 * _proju(x, g)

    def covector(self, x, v):
        return 0.5 * v

    def violation(self, x):
        return _violation(x)

    def intrinsic_dim(self, event_shape) -> int:
        return 3

    def origin(self, event_shape, dtype=None, device=None):
        self._check_event(event_shape)
        return torch.eye(3, dtype=dtype, device=device)

    def _check_event(self, event_shape):
        if tuple(event_shape) != (3, 3):
            raise ValueError(f"event_shape: points of SO3 have shape (3, 3), got {tuple(event_shape)}")

    def log_volume(self, event_shape):
        """``log 8π²`` (the volume under ``½ tr(UᵀV)``; Haar-normalised densities are ``8π²`` times larger)."""
        self._check_event(event_shape)
        return LOG_VOLUME

    def random_uniform(self, shape, dtype=None, device=None):
        """Haar draws ``shape = batch + (3, 3)``: normalised Gaussian quaternions (uniform on ``S³``) as matrices."""
        shape = tuple(shape)
        self._check_event(shape[-2:])
        q = torch.randn(shape[:-2] + (4,), dtype=dtype, device=device)
        return quaternion_to_matrix(q)

    def frame(self, x):
        """``R hat(e_i)``, ``i = 1, 2, 3``: shape ``batch + (3, 3, 3)`` (orthonormal for ``½ tr(UᵀV)``)."""
        e = hat(torch.eye(3, dtype=x.dtype, device=x.device))
        return x.unsqueeze(-3) @ e

    def random_tangent(self, x):
        return x @ hat(torch.randn(x.shape[:-2] + (3,), dtype=x.dtype, device=x.device))

    def wrap_period(self, like):
        """``2π``: ``exp_R(t R hat(n))`` returns to ``R`` after ``t = 2π``."""
        return torch.full((), 2 * math.pi, dtype=like.dtype, device=like.device)

    # ------------------------------------------------------------------ HMC

    def flow(self, x, v, t):
        """``γ(t) = R exp(t Ω)``, ``γ'(t) = γ(t) Ω`` with ``Ω = skew(Rᵀ v)`` (left-invariant velocity)."""
        if torch.is_tensor(t) and t.dim() >= 2:
            t = t.squeeze(-1)  # per-point times shaped like x (..., 1, 1) scale the axis vectors (..., 3)
        w = vee(x.transpose(-1, -2) @ v)
        x1 = x @ so3_exp(t * w)
        return self.project(x1, x1 @ hat(w))

    def project(self, x, v):
        x = _polar(x)
        return x, _proju(x, v)

    def closed_geodesic_length(self, x) -> float:
        return 2 * math.pi

    def spread(self, draws):
        mean = _polar(draws.mean(0))
        return self.dist(mean.expand_as(draws), draws).pow(2).sum() / draws.shape[0]


geometry_of.register(SO3, SO3Geometry)
