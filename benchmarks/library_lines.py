"""Size of the library (``dlmppl/*.py``) at git revisions, and the net change of a set of commits.

Two counts: raw lines (``wc -l``) and code lines (lines holding a token that is not a
comment or a docstring; blank lines excluded), so that documentation does not count as
code.  Used for issue 12's "library lines go down" (results in ``results_redesign.md``).

    python benchmarks/library_lines.py REV [REV ...] [--commits-matching "issue 12" --also REV ...] [--range A..B]
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import tokenize

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def code_lines(src: str) -> int:
    """Lines of ``src`` holding code (not blank, not only comments, not docstrings)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return 0
    doc = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                doc.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type not in _SKIP:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in doc)
    return len(lines)


def _git(*args) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def size(rev: str, prefix: str = "dlmppl") -> tuple[int, int]:
    """(raw lines, code lines) of the ``.py`` files under ``prefix`` at ``rev``."""
    raw = code = 0
    for f in _git("ls-tree", "-r", "--name-only", rev, prefix).split():
        if f.endswith(".py"):
            src = _git("show", f"{rev}:{f}")
            raw += src.count("\n")
            code += code_lines(src)
    return raw, code


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revs", nargs="*", default=["HEAD"])
    ap.add_argument("--commits-matching", help="sum the change of the first-parent commits whose message contains this")
    ap.add_argument("--since", default=None, help="with --commits-matching: the range start (exclusive)")
    ap.add_argument("--also", nargs="*", default=[], help="more commits (e.g. merges) to add to the sum")
    ap.add_argument("--range", dest="ranges", nargs="*", default=[],
                    help="A..B: also report the summed change of the first-parent commits of this range")
    a = ap.parse_args()
    print("| revision | raw lines | code lines |\n|---|---:|---:|")
    for r in a.revs:
        raw, code = size(r)
        print(f"| `{r}` | {raw} | {code} |")
    for rng in a.ranges:
        revs = _git("log", "--format=%h", "--first-parent", "--no-merges", rng).split()
        (r1, c1), (r0, c0) = size(rng.split("..")[1] or "HEAD"), size(rng.split("..")[0])
        print(f"\nnet change of the {len(revs)} commits of {rng}: raw {r1 - r0:+d}, code {c1 - c0:+d}")
    if a.commits_matching:
        rng = f"{a.since}..HEAD" if a.since else "HEAD"
        revs = _git("log", "--format=%h", "--first-parent", "--no-merges", f"--grep={a.commits_matching}", rng).split()
        revs = list(dict.fromkeys(revs + a.also))
        d_raw = d_code = 0
        for r in revs:
            (r1, c1), (r0, c0) = size(r), size(f"{r}^1")
            d_raw, d_code = d_raw + r1 - r0, d_code + c1 - c0
        print(f"\nnet change of {len(revs)} commits matching {a.commits_matching!r} (+ {len(a.also)} named): "
              f"raw {d_raw:+d}, code {d_code:+d}")


if __name__ == "__main__":
    main()
