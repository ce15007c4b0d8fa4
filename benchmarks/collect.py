"""Assemble benchmarks/RESULTS.md from the per-benchmark result files.

Each benchmark script writes its own ``results_<name>.md`` (machine, versions,
table, ratios); this script concatenates them under one heading so that
RESULTS.md always shows the latest figures of every benchmark, including
``results_calibration.md`` (benchmarks/calibration.py: the failure rate of every
statistical test over 20 seeds), and first ``results_all.md`` (benchmarks/bench_all.py: every
benchmark in quick mode, one table of all ratios against their targets).
Run: ``python benchmarks/collect.py``.
"""

from pathlib import Path

ORDER = ["all", "directional", "wrapped", "mcmc", "chains", "vae", "priors", "losses", "topofactor", "geodesics", "intrinsic", "diagnostics", "redesign", "distributed", "calibration"]


def main():
    here = Path(__file__).parent
    files = {p.stem.removeprefix("results_"): p for p in here.glob("results_*.md")}
    names = [n for n in ORDER if n in files] + sorted(set(files) - set(ORDER))
    parts = [
        "# Benchmark results\n\n"
        "Collected by `benchmarks/collect.py` from the `results_*.md` file each benchmark writes. "
        "Unless a section says otherwise the figures come from the project's development machine: "
        "a shared 2-core x86-64 CPU (no GPU), torch 2.13.0+cpu, one thread, with other jobs "
        "running, so absolute times are noisy and the ratios measured in the same run are what to "
        "read.\n\n"
        "Sections: " + ", ".join(names) + ".\n"
    ]
    for n in names:
        text = files[n].read_text().strip()
        parts.append(f"\n---\n\n<!-- from benchmarks/results_{n}.md -->\n\n{text}\n")
    (here / "RESULTS.md").write_text("".join(parts))
    print(f"wrote {here / 'RESULTS.md'} ({len(names)} sections)")


if __name__ == "__main__":
    main()
