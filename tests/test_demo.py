"""The README's main job runs end to end (in its quick mode) and writes its outputs."""

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_quick(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "dlmppl.demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ["vmf_posterior.nc", "vmf_sphere.png", "vmf_trace_kappa.png", "vmf_trace_mu.png", "vae_elbo.png",
                 "vae_poincare_latents.png"]:
        assert (out / name).stat().st_size > 0, name
    # stderr is a pipe, not a terminal: the SVI progress is a few log lines, not a bar's carriage returns
    svi_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("SVI: ")]
    assert 2 <= len(svi_lines) <= 7 and "\r" not in proc.stderr and svi_lines[-1].startswith("SVI: 60/60 (100%)")
    assert str(out) in proc.stdout
    # the InferenceData reads back with its manifold attribute
    import arviz as az

    idata = az.from_netcdf(out / "vmf_posterior.nc")
    assert idata.posterior["mu"].attrs["manifold"] == "Sphere"
