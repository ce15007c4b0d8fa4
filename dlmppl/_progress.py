"""Progress reporting for dlmppl's own loops (SVI in the demo, flow-matching fits, SBC).

On a terminal: a ``tqdm`` bar.  When the output is not a terminal (a log file, CI,
a notebook's captured stderr, ``nohup``), a bar's carriage returns become
hundreds of lines or one endless line; there :func:`progress_bar` writes a few
plain lines instead (``SVI: 30/60 (50%), 1.2 s``), about ``num_lines`` of them,
and one at the end.  Pyro's ``MCMC`` has its own bar (``disable_progbar``).
"""

from __future__ import annotations

import sys
import time

__all__ = ["progress_bar"]


def _is_terminal(file) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # closed or not a stream
        return False


class _LogProgress:
    """The subset of tqdm's interface dlmppl uses (iterate, ``update``, ``set_postfix``, context)."""

    def __init__(self, iterable, total, desc, file, num_lines):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.file = iterable, total, desc, file
        self.n = 0
        self.postfix = ""
        self._t0 = time.perf_counter()
        self._every = max(1, -(-int(total) // max(1, int(num_lines)))) if total else None
        self._next = self._every
        self._last_time = self._t0
        self._closed = False

    def _line(self):
        dt = time.perf_counter() - self._t0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total}" if self.total else ""
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of}{pct}, {dt:.1f} s{post}", file=self.file, flush=True)

    def update(self, n: int = 1):
        self.n += n
        now = time.perf_counter()
        if self._every is not None:
            if self.n >= self._next and (self.total is None or self.n < self.total):
                self._line()
                while self._next <= self.n:
                    self._next += self._every
        elif now - self._last_time >= 30.0:  # no total: a line every 30 s
            self._last_time = now
            self._line()

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def close(self):
        if not self._closed:
            self._closed = True
            self._line()

    def __iter__(self):
        try:
            for x in self.iterable:
                yield x
                self.update()
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", disable: bool = False,
                 file=None, num_lines: int = 5, **tqdm_kwargs):
    """A tqdm bar on a terminal, else about ``num_lines`` log lines to ``file`` (default stderr).

    Parameters
    ----------
    iterable : iterable to wrap, optional (else call ``update()``; use as a context manager).
    total : number of steps (default ``len(iterable)``).
    disable : no output at all.
    tqdm_kwargs : passed to ``tqdm`` on a terminal.
    """
    file = sys.stderr if file is None else file
    if disable or _is_terminal(file):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, disable=disable, file=file, **tqdm_kwargs)
    return _LogProgress(iterable, total, desc, file, num_lines)
