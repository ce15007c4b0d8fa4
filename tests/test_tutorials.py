"""The tutorials run end to end (smoke mode) and open as notebooks.

Each tutorial in ``tutorials/`` is run in a subprocess with ``DLMPPL_SMOKE=1``
(a few steps only) and its figures written to a temporary folder
(``DLMPPL_TUTORIAL_OUT``); the test checks the exit status and that every
figure the tutorial promises is a non-empty PNG.  No statistics are checked
in smoke mode (a handful of MCMC/SVI steps says nothing about them).
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"

FIGURES = {
    "01_directional_statistics": ["sphere.png", "posterior_vs_truth.png", "trace.png", "rank.png", "energy.png",
                                  "trace_mu.png", "rank_mu.png", "ppc.png"],
    "02_hyperbolic_vae": ["latents.png", "elbo.png"],
    "03_dynamic_curvature": ["elbo.png", "curvature_per_class.png", "geodesic_interpolation.png", "steering.png"],
    "04_regularized_latents": ["ot_sphere.png", "target_topology.png", "topological_vae.png"],
    "05_funnels": ["funnel_draws.png", "v_quantiles.png", "trace_v.png", "energy_softabs.png"],
    "06_stiefel_ppca": ["subspace_and_signs.png", "rotation_nonidentifiability.png"],
    "07_sbc": ["sbc_ecdf.png", "rank_histograms.png"],
    "08_latent_rotations": ["object_samples.png", "latent_vs_factor.png", "geodesic_strip.png"],
    "09_learned_priors": ["codes_vs_prior.png", "learned_density.png", "prior_metrics.png", "samples.png"],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_every_tutorial_is_listed():
    assert sorted(p.stem for p in TUTORIALS.glob("[0-9][0-9]_*.py")) == sorted(FIGURES)


def _cells(text):
    """Split a percent-format script into (kind, source) cells, as jupytext does."""
    cells, kind, buf = [], None, []
    for line in text.splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                cells.append((kind, "\n".join(buf)))
            kind = "markdown" if "[markdown]" in line else "code"
            buf = []
        elif kind is not None:
            buf.append(line)
    if kind is not None:
        cells.append((kind, "\n".join(buf)))
    return cells


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_percent_format(name):
    text = (TUTORIALS / f"{name}.py").read_text(encoding="utf-8")
    cells = _cells(text)
    kinds = [k for k, _ in cells]
    assert kinds[0] == "markdown", "a tutorial opens with a markdown cell (title and introduction)"
    assert kinds.count("markdown") >= 4 and kinds.count("code") >= 4
    for kind, src in cells:
        if kind == "markdown":
            lines = [ln for ln in src.splitlines() if ln.strip()]
            assert lines and all(ln.startswith("#") for ln in lines), "markdown cells are comment lines"
        else:
            ast.parse(src)  # every code cell is valid Python on its own
    # the script uses only the public API
    assert "dlmppl." not in text.replace("import dlmppl as dl", "")
    assert "from dlmppl" not in text


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_converts_to_notebook(name):
    jupytext = pytest.importorskip("jupytext")
    import nbformat

    nb = jupytext.read(TUTORIALS / f"{name}.py", fmt="py:percent")
    nbformat.validate(nb)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown" and "code" in kinds
    assert len(nb.cells) == len(_cells((TUTORIALS / f"{name}.py").read_text(encoding="utf-8")))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_tutorial_runs_in_smoke_mode(name, tmp_path):
    out = tmp_path / name
    env = dict(os.environ, DLMPPL_SMOKE="1", DLMPPL_TUTORIAL_OUT=str(out), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(TUTORIALS / f"{name}.py")],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for fig in FIGURES[name]:
        path = out / fig
        assert path.is_file(), f"{name} did not write {fig}; wrote {sorted(p.name for p in out.iterdir())}"
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size > 5000
