"""dlmppl: probabilistic programming with dynamic latent manifolds, on Pyro.

Submodules: :mod:`dlmppl.manifolds`, :mod:`dlmppl.constraints`,
:mod:`dlmppl.distributions`, :mod:`dlmppl.inference`, :mod:`dlmppl.losses`,
:mod:`dlmppl.geometry`, :mod:`dlmppl.models`, :mod:`dlmppl.diagnostics`,
:mod:`dlmppl.datasets`, :mod:`dlmppl.metrics`, :mod:`dlmppl.distributed`.  Heavy submodules are imported on first access.
"""

import importlib

from . import constraints, distributions, kmath, manifolds

__version__ = "0.1.0"

_LAZY = ("inference", "losses", "geometry", "models", "diagnostics", "datasets", "metrics", "distributed")

__all__ = ["constraints", "distributions", "kmath", "manifolds", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'dlmppl' has no attribute {name!r}")
