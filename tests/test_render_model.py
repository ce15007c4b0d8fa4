"""pyro.render_model on dlmppl models (issue 17, point 8): needs the optional extra ``graphviz``
(the Python package) and Graphviz's ``dot`` binary; skipped only when either is absent."""

import shutil

import pyro
import pyro.distributions as dist
import pytest
import torch

import dlmppl as dl
from dlmppl.distributions import ManifoldUniform, VonMisesFisher, WrappedNormal

graphviz = pytest.importorskip("graphviz", reason="the optional extra dlmppl[graphviz] is not installed")
pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot binary is not installed")


def vmf_model(directions):
    mu = pyro.sample("mu", ManifoldUniform(dl.manifolds.Sphere(), event_shape=(3,), dtype=directions.dtype))
    kappa = pyro.sample("kappa", dist.Gamma(torch.tensor(2.0, dtype=directions.dtype), 0.1))
    z = pyro.sample("z", WrappedNormal(dl.manifolds.PoincareBall(1.0), torch.zeros(2, dtype=directions.dtype),
                                       torch.ones(2, dtype=directions.dtype)))
    with pyro.plate("data", directions.shape[0]):
        pyro.sample("obs", VonMisesFisher(mu, kappa + z.norm()), obs=directions)


def test_render_model_of_a_manifold_model_has_its_edges_plates_and_distributions(tmp_path):
    d = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
    rel = pyro.infer.inspect.get_model_relations(vmf_model, model_args=(d,))
    # the dependencies run through manifold samples: provenance survives dlmppl's distributions
    assert sorted(rel["sample_sample"]["obs"]) == ["kappa", "mu", "z"]
    assert rel["plate_sample"]["data"] == ["obs"] and rel["observed"] == ["obs"]
    g = pyro.render_model(vmf_model, model_args=(d,), render_distributions=True,
                          filename=str(tmp_path / "vmf.png"))
    src = g.source
    for edge in ("mu -> obs", "kappa -> obs", "z -> obs"):
        assert edge in src
    assert "cluster_data" in src and "mu ~ ManifoldUniform" in src and "obs ~ VonMisesFisher" in src
    png = (tmp_path / "vmf.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_render_model_of_a_manifold_vae():
    vae = dl.models.ManifoldVAE(8, latent="poincare", latent_dim=2, hidden=(16,))
    g = pyro.render_model(vae.model, model_args=(torch.rand(4, 8),), render_distributions=True)
    assert "z -> x" in g.source and "z ~" in g.source
