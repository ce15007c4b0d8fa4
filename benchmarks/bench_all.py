"""Every benchmark in ``--quick`` mode, then one table of all ratios against their targets.

    bash run.sh bench all                 # or: python benchmarks/bench_all.py
    python benchmarks/bench_all.py --only mcmc,vae     # some areas
    python benchmarks/bench_all.py --no-run            # only the table of the JSON files already there

Each entry of :data:`BENCHES` runs in its own subprocess (``OMP_NUM_THREADS=1``, the working
tree first on ``PYTHONPATH``) with a time budget; a benchmark still running at its budget is
stopped, and the table says so (with whatever it recorded before).  The whole run has a budget
too (``--total``, default 570 s): a benchmark gets at most what is left of it, and those for
which less than 10 s is left are skipped, so ``bash run.sh bench all`` ends within 10 minutes
however loaded the machine is; the entries run in list order, issue 15's targets first.  The benchmarks record their
ratios through ``benchmarks/ratios.py`` into ``benchmarks/.ratios/<area>.json``; this script
clears an area's file before running it, so that a benchmark that records nothing shows as
"no ratios recorded" instead of an old figure.  Adding a benchmark is one line in :data:`BENCHES`
(plus its ``record`` calls).

Quick runs never overwrite a full ``results_<name>.md``: benchmarks that write to ``--out`` get a
scratch path ``benchmarks/.ratios/quick/results_<area>.md`` (``{out}`` below); the others write
nothing in quick mode (bench_distributed writes to that scratch folder when ``--quick``).  The
quick figures go only to ``.ratios/`` (git-ignored) and to ``benchmarks/results_all.md``, which
this script writes (table, machine, load, time of every benchmark), then it refreshes RESULTS.md
(``collect.py``).  Quick sizes are small, so a quick ratio is an indication, not the measurement
of record: the full runs' tables (results_*.md) are that.

Not run here: ``gpu.py`` (needs an accelerator: ``bash run.sh gpu``), ``calibration.py`` (every
statistical test over 20 seeds: hours) and ``library_lines.py`` (line counts, no ratio).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import ratios  # noqa: E402
from calibration import cpu_name  # noqa: E402

TOTAL = 570.0  # seconds for the whole run: `bash run.sh bench all` ends within 10 minutes


@dataclass
class Bench:
    """One quick run: ``python benchmarks/<script> <args>``; it records under ``area``."""

    area: str
    script: str
    args: list[str] = field(default_factory=lambda: ["--quick"])
    budget: float = 60.0  # seconds of wall time on the shared 2-core machine
    needs: tuple[str, ...] = ()  # peers it imports that dlmppl does not install (pip install -e ".[bench]")
    skip: str = ""  # a reason not to run it (shown in the table)


# The one list: a new benchmark is one line here (e.g. Bench("chains", "bench_chains.py", ["--quick"], 60)).
# Order: issue 15's targets first (the whole run's budget may skip the last ones on a loaded machine).
# Budgets: the quick run's wall time measured on the shared 2-core machine at load 6-9, with a margin.
BENCHES = [
    Bench("directional", "bench_directional.py", ["--quick", "--out", "{out}"], 40),
    Bench("mcmc", "bench_mcmc.py", ["--quick", "--no-funnel", "--out", "{out}"], 150),
    Bench("chains", "bench_chains.py", ["--quick", "--out", "{out}"], 150),
    Bench("losses-sinkhorn", "bench_losses.py", ["--sinkhorn", "--quick", "--out", "{out}"], 60,
          needs=("geomloss",)),
    Bench("losses-emd", "bench_losses.py", ["--emd", "--quick", "--rounds", "5", "--out", "{out}"], 30),
    Bench("losses-h01", "bench_losses.py", ["--issue15", "--quick", "--out", "{out}"], 60,
          needs=("torch_topological", "ripser")),
    Bench("vae", "bench_vae.py", ["--quick", "--part", "b"], 45),
    Bench("wrapped", "bench_wrapped.py", ["--quick"], 30),
    Bench("losses-issue5", "bench_losses.py", ["--targets", "--quick", "--out", "{out}"], 30),
    Bench("geodesics", "bench_geodesics.py", ["--quick"], 30),
    Bench("diagnostics", "bench_diagnostics.py", ["--quick"], 40),
    Bench("topology", "bench_topology.py", ["--quick", "--out", "{out}"], 30),
    Bench("sbc", "bench_sbc.py", ["--quick", "--out", "{out}"], 60),
    Bench("redesign", "bench_redesign.py", ["--quick", "--out", "{out}"], 120),
    Bench("topofactor", "bench_topofactor.py", ["--quick"], 60),
    Bench("priors", "bench_priors.py", ["--quick"], 75),
    Bench("intrinsic", "bench_intrinsic.py", ["--quick"], 75),
    Bench("distributed", "bench_distributed.py", ["--quick", "--batch", "1024"], 120),
]


def _children_cpu() -> float:
    """User + system CPU seconds of the finished (waited-for) child processes, theirs included."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(b: Bench, log_dir: Path, left: float = float("inf")) -> tuple[str, float, float]:
    """Run ``b`` within its budget and the ``left`` seconds of the whole run; returns (status, wall
    seconds, CPU seconds of it and its subprocesses).  Status: "ok", "failed (rc N; log)", "stopped at
    the time budget", "skipped (reason)".  The CPU time hardly depends on the other jobs of a shared
    machine: on an idle one the wall time would be about that (less where a benchmark runs processes
    in parallel)."""
    if b.skip:
        return f"skipped ({b.skip})", 0.0, 0.0
    if left < 10:
        return "skipped (the total time budget is spent)", 0.0, 0.0
    budget = min(b.budget, left)
    missing = [m for m in b.needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"skipped ({', '.join(missing)} not installed)", 0.0, 0.0
    args = [a.replace("{out}", str(ratios.quick_out(b.area))) for a in b.args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    log = log_dir / f"{b.area}.log"
    t0, c0 = time.perf_counter(), _children_cpu()
    with open(log, "w") as fh:
        p = subprocess.Popen([sys.executable, str(HERE / b.script), *args], cwd=ROOT, env=env, stdout=fh,
                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            _kill(p)
            return f"stopped at the time budget ({budget:.0f} s)", time.perf_counter() - t0, _children_cpu() - c0
    dt, cpu = time.perf_counter() - t0, _children_cpu() - c0
    shown = log.relative_to(ROOT) if log.is_relative_to(ROOT) else log
    return ("ok" if rc == 0 else f"failed (rc {rc}; log: {shown})"), dt, cpu


def _kill(p: subprocess.Popen) -> None:
    """Stop the benchmark and the processes it started (its own session)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if v != v:
        return "not measured"
    return f"{v:.3g}{unit}" if abs(v) < 100 else f"{v:.0f}{unit}"


def table(areas: list[str], status: dict[str, str], folder: Path | None = None) -> tuple[list[str], dict]:
    """Markdown lines of the table ``area | measure | value | target | met?`` and the counts.

    ``status``: area -> status of its run in this invocation ("ok" or why not).  An area without a file
    shows its status, or "no ratios recorded" when it ran fine; an area not run this time shows the
    file of its last run, tagged with its date (and "full run" when that was not ``--quick``)."""
    lines = ["| area | measure | value | target | met? |", "|---|---|---|---|---|"]
    counts = {"met": 0, "not met": 0, "no target": 0, "areas without ratios": 0}
    for area in areas:
        st = status.get(area, "ok")
        data = ratios.load(area, folder)
        rows = data["ratios"] if data else []
        if not rows:
            counts["areas without ratios"] += 1
            why = st if st != "ok" else ("no ratios recorded" if area in status or data else "no run recorded")
            lines.append(f"| {area} | {why} | | | |")
            continue
        tag = "" if area in status else f" ({data.get('time', 'earlier run')})"
        tag += "" if data.get("quick", True) else " (full run)"
        for r in rows:
            m = ratios.met(r["value"], r["target"], r["better"])
            target = "—" if r["target"] is None else ("≥ " if r["better"] == "higher" else "≤ ") + _fmt(r["target"], r["unit"])
            verdict = {True: "yes", False: "**no**", None: "—"}[m]
            counts[{True: "met", False: "not met", None: "no target"}[m]] += 1
            measure = r["measure"] + (f" ({r['note']})" if r["note"] else "")
            lines.append(f"| {area}{tag} | {measure} | {_fmt(r['value'], r['unit'])} | {target} | {verdict} |")
        if st != "ok":
            lines.append(f"| {area} | {st}: the rows above are what it recorded before | | | |")
    return lines, counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated areas to run (default: all)")
    ap.add_argument("--no-run", action="store_true", help="only print the table of the recorded files")
    ap.add_argument("--total", type=float, default=TOTAL, help=f"seconds for the whole run (default {TOTAL:.0f})")
    ap.add_argument("--out", default=str(HERE / "results_all.md"))
    args = ap.parse_args(argv)
    only = [a for a in args.only.split(",") if a]
    unknown = set(only) - {b.area for b in BENCHES}
    if unknown:
        ap.error(f"unknown areas {sorted(unknown)}; known: {[b.area for b in BENCHES]}")
    chosen = [b for b in BENCHES if not only or b.area in only]
    log_dir = ratios.ratios_dir() / "quick"
    log_dir.mkdir(parents=True, exist_ok=True)
    status, times = {}, {}
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    if not args.no_run:
        for b in chosen:
            (ratios.ratios_dir() / f"{b.area}.json").unlink(missing_ok=True)
            print(f"[bench all] {b.area}: {b.script} {' '.join(b.args)} (budget {b.budget:.0f} s)", flush=True)
            left = args.total - (time.perf_counter() - t_all)
            status[b.area], *times[b.area] = run_one(b, log_dir, left)
            print(f"[bench all] {b.area}: {status[b.area]}, {times[b.area][0]:.0f} s (CPU {times[b.area][1]:.0f} s)",
                  flush=True)
    total = time.perf_counter() - t_all
    lines, counts = table([b.area for b in BENCHES], status)  # areas not run now: their last run
    summary = (f"{counts['met']} targets met, {counts['not met']} not met, {counts['no target']} ratios without "
               f"a target, {counts['areas without ratios']} areas without ratios")
    print("\n".join(lines))
    print(summary)
    if args.no_run:
        return 0
    cpu = sum(c for _, c in times.values())
    print(f"total wall time {total / 60:.1f} min, CPU time of the benchmarks {cpu / 60:.1f} min")
    load1 = os.getloadavg()
    head = [
        "# All benchmarks, quick mode (`bash run.sh bench all`)",
        "",
        f"Run {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}: "
        + (f"`--only {args.only}` (the other areas: their last run, dated), " if only else "every benchmark ")
        + "with `--quick` "
        f"(small sizes, few repeats), one after the other, one thread each; total wall time **{total / 60:.1f} min**; CPU time of "
        f"the benchmarks {cpu / 60:.1f} min (about the wall time on an idle machine: the CPU time hardly depends on "
        "the other jobs, while the wall time does). "
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, no GPU, shared with other engineers' jobs (load average "
        f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end), so the quick ratios are an indication: the "
        "full runs' tables in the other sections are the measurements of record.  value = the ratio as each "
        "benchmark defines it (see the measure); met? compares it with the issue's target. "
        "Produced by `benchmarks/bench_all.py` from `benchmarks/.ratios/*.json`; an area tagged with a date "
        "comes from an earlier invocation (`--only`).  CPU time of a benchmark stopped at its budget: a lower "
        "bound (its killed subprocesses are not counted).",
        "",
    ]
    tail = ["", summary + ".", "", "| area | script and arguments | budget (s) | wall (s) | CPU (s) | status |",
            "|---|---|---|---|---|---|"]
    for b in chosen:  # this invocation's runs
        wall, c = times.get(b.area, (0.0, 0.0))
        tail.append(f"| {b.area} | `{b.script} {' '.join(b.args)}` | {b.budget:.0f} | {wall:.0f} | {c:.0f} | "
                    f"{status.get(b.area, '')} |")
    tail += ["", "Not run: `gpu.py` (needs an accelerator: `bash run.sh gpu`), `calibration.py` (every statistical "
             "test over 20 seeds), `library_lines.py` (line counts, no ratio)."]
    Path(args.out).write_text("\n".join(head + lines + tail) + "\n")
    print(f"wrote {args.out}")
    if Path(args.out).resolve() == (HERE / "results_all.md").resolve():
        import collect

        collect.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
