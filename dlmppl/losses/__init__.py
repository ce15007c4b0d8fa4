r"""Optimal-transport and persistent-homology regularizers with geodesic costs.

* :func:`wasserstein` (exact, Sinkhorn, sliced; POT's torch backend),
  :func:`manifold_distances` (geodesic ground distances, closed form on a geoopt manifold);
* :func:`persistence` (Vietoris–Rips diagrams differentiable in the points),
  :func:`cubical_persistence` (images / fields), :func:`rips_pairs`;
* :func:`topological` (topological-autoencoder loss, Moor et al. 2020),
  :func:`diagram_distance` (Wasserstein distance between diagrams),
  :func:`topology_target_loss` (e.g. "one persistent loop");
* :func:`factor` to use any of them as a ``pyro.factor`` term, :func:`suggest_weight` to scale its weight
  by the ELBO's magnitude.
"""

from .factor import factor, suggest_weight
from .ot import manifold_distances, wasserstein
from .topology import (
    cubical_persistence,
    diagram_distance,
    persistence,
    rips_pairs,
    topological,
    topology_target_loss,
)

__all__ = [
    "cubical_persistence",
    "diagram_distance",
    "factor",
    "manifold_distances",
    "persistence",
    "rips_pairs",
    "suggest_weight",
    "topological",
    "topology_target_loss",
    "wasserstein",
]
