"""Argument checks shared by the losses: a bad argument is a ``ValueError`` naming it.

The checks on *shapes and scalars* are free and always run.  The checks on
*tensor values* (NaN/inf coordinates, negative weights) need the values on the
host; they always run where the solver is CPU code anyway (exact OT, the
persistence pairing, cubical complexes: the values are on the host there) and
where a bad value would hang or crash (Sinkhorn's ε-schedule, gudhi), and
elsewhere (sliced OT, :func:`dlmppl.losses.factor`) only when Pyro's
validation is on (``pyro.enable_validation``, on by default), so that a
validated-off training loop has no extra host synchronisation.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

# Tolerance of the distance-matrix checks, in units of ``√ε · max|D|`` (ε the
# machine epsilon of the matrix's dtype).  It admits the rounding of
# ``torch.cdist`` (its matrix-product mode makes diagonal entries of order
# ``√ε · |x|`` and tiny asymmetries) and rejects anything that is not a
# distance matrix up to that rounding.
DISTANCE_MATRIX_RTOL = 8.0


def validating() -> bool:
    from pyro.poutine.util import is_validation_enabled

    return is_validation_enabled()


def check_cloud(x, name: str) -> None:
    """Shape and dtype of a point cloud ``(n, D)`` (no value check)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name}: expected a point cloud of shape (n, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def check_finite(x: torch.Tensor, name: str, what: str = "coordinates") -> None:
    """``ValueError`` naming ``name`` if ``x`` has a NaN or infinite entry (one host sync)."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "an infinite value"
        raise ValueError(f"{name}: {what} must be finite, got {bad}")


def check_power(p, name: str = "p") -> float:
    """A finite positive exponent."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive number, got {p!r}") from None
    if math.isinf(p):
        raise ValueError(
            f"{name}: p = inf (W_∞) is not supported; use a large finite p, whose "
            "W_p^(1/p) tends to W_∞"
        )
    if not p > 0:
        raise ValueError(f"{name}: must be positive, got {p}")
    return p


def check_int(v, name: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name}: expected an integer >= {low}, got {v!r}")
    if v < low:
        raise ValueError(f"{name}: must be >= {low}, got {v}")
    return int(v)


def check_distance_matrix(D: np.ndarray, name: str) -> np.ndarray:
    """Check a user's distance matrix and return the one the pairing uses.

    ``D`` must be square, finite, non-negative, symmetric and zero on the
    diagonal up to ``DISTANCE_MATRIX_RTOL · √ε · max|D|``; the returned matrix
    is ``(D + Dᵀ)/2`` with an exactly zero diagonal (a copy), so that every
    homology dimension sees the same filtration (ripser reads the diagonal as
    vertex birth times and one triangle only; the MST reads rows).
    """
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"{name}: expected a square distance matrix, got shape {D.shape}")
    if not np.issubdtype(D.dtype, np.floating):
        D = D.astype(np.float64)
    if D.size == 0:
        return D
    if not np.isfinite(D).all():
        raise ValueError(f"{name}: the distance matrix has NaN or infinite entries")
    dmax = float(np.abs(D).max())
    tol = DISTANCE_MATRIX_RTOL * math.sqrt(np.finfo(D.dtype).eps) * dmax
    if float(D.min()) < -tol:
        raise ValueError(f"{name}: distances must be non-negative, got {float(D.min()):.3g}")
    diag = float(np.abs(np.diagonal(D)).max())
    if diag > tol:
        raise ValueError(
            f"{name}: the diagonal of a distance matrix must be zero (tolerance {tol:.3g}), "
            f"got an entry of {diag:.3g}"
        )
    # row blocks, so that the check needs no second n² temporary
    step = max(1, (1 << 20) // D.shape[0])
    asym = max(
        float(np.abs(D[i : i + step] - D[:, i : i + step].T).max()) for i in range(0, D.shape[0], step)
    ) / 2
    if asym > tol:
        raise ValueError(
            f"{name}: the distance matrix must be symmetric (tolerance {tol:.3g}), "
            f"got |D - Dᵀ|/2 up to {asym:.3g}"
        )
    S = D + D.T
    S *= 0.5
    np.fill_diagonal(S, 0.0)
    np.maximum(S, 0.0, out=S)
    return S
