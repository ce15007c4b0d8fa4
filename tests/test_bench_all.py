"""The table of benchmarks/bench_all.py: targets met or not, higher or lower is better, missing areas.

Fake JSON files in a temporary folder (``DLMPPL_RATIOS_DIR``); no benchmark runs.
"""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_all  # noqa: E402
import ratios  # noqa: E402


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DLMPPL_RATIOS_DIR", str(tmp_path))
    monkeypatch.setattr(ratios, "_started", set())
    monkeypatch.setattr(sys, "argv", ["bench_x.py", "--quick"])
    return tmp_path


def rows_of(lines):
    """Table rows (after the header) as lists of cells."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_met_higher_and_lower_is_better():
    assert ratios.met(1.5, 1.5, "higher") and not ratios.met(1.49, 1.5, "higher")
    assert ratios.met(1.05, 1.05, "lower") and not ratios.met(1.06, 1.05, "lower")
    assert ratios.met(2.0, None, "higher") is None  # no target
    assert ratios.met(float("nan"), 1.0, "higher") is None  # not measured
    with pytest.raises(ValueError, match="better"):
        ratios.record("x", "m", 1.0, better="bigger")


def test_table_marks_targets_and_missing_areas(folder):
    ratios.record("fast", "speed-up vs peer", 2.0, 1.5)  # higher is better: met
    ratios.record("fast", "time ours / peer", 1.2, 1.05, "lower")  # lower is better: not met
    ratios.record("fast", "no target here", 0.7)
    ratios.record("fast", "time", 40.0, 50.0, "lower", unit=" ms")
    ratios.record("silent", "placeholder", 1.0)
    (folder / "silent.json").write_text(json.dumps({"bench": "silent", "ratios": []}))  # ran, recorded nothing
    status = {"fast": "ok", "silent": "ok", "gone": "skipped (geomloss not installed)", "late": "ok"}
    lines, counts = bench_all.table(["fast", "silent", "gone", "late"], status)
    rows = rows_of(lines)
    assert lines[0].startswith("| area | measure | value | target | met? |")
    assert rows[0] == ["fast", "speed-up vs peer", "2×", "≥ 1.5×", "yes"]
    assert rows[1] == ["fast", "time ours / peer", "1.2×", "≤ 1.05×", "**no**"]
    assert rows[2] == ["fast", "no target here", "0.7×", "—", "—"]
    assert rows[3] == ["fast", "time", "40 ms", "≤ 50 ms", "yes"]
    assert rows[4][:2] == ["silent", "no ratios recorded"]
    assert rows[5][:2] == ["gone", "skipped (geomloss not installed)"]
    assert rows[6][:2] == ["late", "no ratios recorded"]  # ran (status ok) but left no file
    assert counts == {"met": 2, "not met": 1, "no target": 1, "areas without ratios": 3}


def test_record_rewrites_per_process_and_keeps_partial_runs(folder, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_x.py"])  # a full run: tagged in the table
    (folder / "a.json").write_text(json.dumps({"bench": "a", "ratios": [{"measure": "old"}]}))
    ratios.record("a", "new 1", 1.0, 2.0)
    ratios.record("a", "new 2", float("nan"), 2.0)
    data = ratios.load("a")
    assert [r["measure"] for r in data["ratios"]] == ["new 1", "new 2"]  # the old run's file is replaced
    lines, counts = bench_all.table(["a"], {"a": "stopped at the time budget (30 s)"})
    rows = rows_of(lines)
    assert rows[0][0] == "a (full run)" and rows[0][-1] == "**no**"
    date = ratios.load("a")["time"]
    assert rows_of(bench_all.table(["a"], {})[0])[0][0] == f"a ({date}) (full run)"  # not run now: its date
    assert rows[1][2:] == ["not measured", "≥ 2×", "—"]
    assert rows[2][1].startswith("stopped at the time budget (30 s)")
    assert counts["not met"] == 1 and counts["no target"] == 1


def test_one_list_of_benchmarks():
    areas = [b.area for b in bench_all.BENCHES]
    assert len(areas) == len(set(areas))
    for b in bench_all.BENCHES:
        assert (BENCH / b.script).exists(), b.script
        assert "--quick" in b.args
    assert bench_all.TOTAL <= 600  # the whole run's budget (it caps every benchmark's): under 10 minutes


def test_missing_peer_is_skipped_not_run(folder):
    b = bench_all.Bench("x", "bench_none.py", budget=1, needs=("surely_not_a_module_xyz",))
    status, dt, cpu = bench_all.run_one(b, folder)
    assert status == "skipped (surely_not_a_module_xyz not installed)" and dt == cpu == 0.0


def test_budgets_stop_and_skip(folder):
    sleeper, failer = folder / "sleeper.py", folder / "failer.py"
    sleeper.write_text("import time\ntime.sleep(60)\n")
    failer.write_text("raise SystemExit(3)\n")
    status, *_ = bench_all.run_one(bench_all.Bench("s", str(sleeper), [], budget=60), folder, left=1.5)
    assert status.startswith("skipped (the total time budget")  # less than 10 s left
    status, dt, cpu = bench_all.run_one(bench_all.Bench("s", str(sleeper), [], budget=1), folder)
    assert status == "stopped at the time budget (1 s)" and dt < 30 and 0 <= cpu < 1  # asleep: no CPU
    status, *_ = bench_all.run_one(bench_all.Bench("f", str(failer), [], budget=30), folder)
    assert status.startswith("failed (rc 3")
