"""NumPyro's NUTS on the 100-d correlated Gaussian of bench_mcmc.py section (b) (run by bench_mcmc.py --numpyro).

Runs in its own interpreter, ``benchmarks/.venv-numpyro/bin/python`` (numpyro and jax, CPU; not
dlmppl's environment), so it imports neither torch nor dlmppl:

    python _numpyro_gaussian.py IN.npz OUT.npz NUM_SAMPLES WARMUP

``IN.npz`` holds ``scale_tril`` (the Cholesky factor bench_mcmc.py builds from its seeded matrix,
float64).  Float64, one chain, diagonal mass adaptation (``dense_mass=False``), target acceptance
0.8, tree depth 10: the settings of the dlmppl and Pyro kernels in section (b).  XLA runs on one
thread (as torch in bench_mcmc.py).  The chain runs twice on one ``MCMC`` object: the first run
compiles (its time minus the second's is the compile time), the second is timed; ``OUT.npz``
gets the second run's draws ``x`` (num_samples, 100), the leapfrog steps of warm-up and sampling,
and the times (wall clock, and CPU time of the process: the machine is shared).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402


def main():
    src, out, num_samples, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    numpyro.enable_x64()
    scale_tril = jax.numpy.asarray(np.load(src)["scale_tril"])
    loc = jax.numpy.zeros(scale_tril.shape[0])

    def model():
        numpyro.sample("x", dist.MultivariateNormal(loc, scale_tril=scale_tril))

    mcmc = MCMC(
        NUTS(model, dense_mass=False, target_accept_prob=0.8, max_tree_depth=10),
        num_warmup=warmup,
        num_samples=num_samples,
        num_chains=1,
        progress_bar=False,
    )
    times, cpu, steps = [], [], []
    for seed in (0, 1):  # the first pass compiles
        t, c = time.perf_counter(), time.process_time()
        mcmc.warmup(jax.random.PRNGKey(seed), collect_warmup=True, extra_fields=("num_steps",))
        n_warm = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
        mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=("num_steps",))
        x = np.asarray(mcmc.get_samples()["x"])
        x.sum()  # materialised
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        steps.append(n_warm + int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum()))
    np.savez(
        out,
        x=x,
        time=times[1],
        time_first=times[0],
        compile_time=max(times[0] - times[1], 0.0),
        cpu_time=cpu[1],
        cpu_compile_time=max(cpu[0] - cpu[1], 0.0),
        gradients=steps[1],
        versions=np.array([numpyro.__version__, jax.__version__]),
    )


if __name__ == "__main__":
    main()
