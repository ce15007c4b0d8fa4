"""Broadcasting of shapes in plain Python.

``torch.broadcast_shapes`` goes through ``torch._refs`` (about 20 µs a call, and ~0.5 ms on
its first calls, which import sympy, torch 2.13): too slow for the constructor and
``log_prob`` of a distribution called at every step of a sampler.  This is the same rule
(NumPy's; a size-1 dimension stretches, a size-0 one is kept), for shapes only.
"""

from __future__ import annotations

import torch


def broadcast_shapes(*shapes) -> torch.Size:
    """The broadcast of ``shapes`` (tuples or ``torch.Size``), as ``torch.broadcast_shapes`` gives it.

    Raises:
        ValueError: the shapes do not broadcast (torch raises ``RuntimeError``).
    """
    first = shapes[0]
    if all(s == first for s in shapes[1:]):
        return torch.Size(first)
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        off = n - len(s)
        for i, d in enumerate(s):
            o = out[off + i]
            if d == o or d == 1:
                continue
            if o != 1:
                raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
            out[off + i] = d
    return torch.Size(out)
