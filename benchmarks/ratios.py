"""The ratios a benchmark measured, against their targets: one small JSON file per benchmark area.

A benchmark calls :func:`record` next to where it computes a ratio::

    from ratios import record   # benchmarks/ is on sys.path when a benchmark script runs
    record("directional", "vMF log_prob d=3: scipy time / ours", speedup, target=1.0, better="higher")

The first call of a process for an area rewrites ``benchmarks/.ratios/<area>.json`` (so a file
holds the ratios of that area's latest run only); the following calls append to it.
``benchmarks/bench_all.py`` runs every benchmark with ``--quick`` and prints one table of these
files (:func:`load`, :func:`met`).  ``.ratios/`` is scratch (git-ignored): the full tables stay in
the ``results_*.md`` files.  ``DLMPPL_RATIOS_DIR`` moves the folder (tests, side runs).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_started: set[str] = set()  # areas this process has already rewritten


def ratios_dir() -> Path:
    """The folder of the JSON files: ``$DLMPPL_RATIOS_DIR`` or ``benchmarks/.ratios``."""
    return Path(os.environ.get("DLMPPL_RATIOS_DIR") or HERE / ".ratios")


def quick_out(area: str) -> Path:
    """Where a ``--quick`` run writes its markdown instead of ``results_<area>.md``."""
    path = ratios_dir() / "quick" / f"results_{area}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def record(bench: str, measure: str, value: float, target: float | None = None, better: str = "higher",
           note: str = "", unit: str = "×") -> None:
    """Append one measured ratio of area ``bench`` to ``<ratios_dir>/<bench>.json``.

    ``measure``: what the ratio is, short (it is a table cell), e.g. ``"d=3 log_prob: scipy / ours"``;
    ``value``: the measured number (NaN when it could not be measured); ``target``: the bound of the
    issue, or None when the benchmark states none; ``better``: ``"higher"`` (met when value ≥ target)
    or ``"lower"`` (met when value ≤ target); ``unit``: printed after value and target (``"×"`` for
    ratios; e.g. ``" ms"`` for a time target); ``note``: anything the reader needs (n, runs, …).
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    path = ratios_dir() / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if bench in _started and path.exists():
        data = json.loads(path.read_text())
    else:
        data = {
            "bench": bench,
            "script": Path(sys.argv[0]).name,
            "args": sys.argv[1:],
            "quick": "--quick" in sys.argv,
            "time": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "ratios": [],
        }
        _started.add(bench)
    data["ratios"].append({
        "measure": measure,
        "value": float(value),
        "target": None if target is None else float(target),
        "better": better,
        "unit": unit,
        "note": note,
    })
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    tmp.replace(path)


def load(bench: str, folder: Path | None = None) -> dict | None:
    """The recorded file of area ``bench``, or None when there is none."""
    path = (folder or ratios_dir()) / f"{bench}.json"
    return json.loads(path.read_text()) if path.exists() else None


def met(value: float, target: float | None, better: str) -> bool | None:
    """Whether ``value`` meets ``target`` (None: no target, or no value)."""
    if target is None or value != value:  # NaN: not measured
        return None
    return value >= target if better == "higher" else value <= target
