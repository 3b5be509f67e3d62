"""Progress reporting for long work: one facility for compile passes, runs, sweeps, attacks and
training (stage: any; imports nothing of the project).

``bar(total, desc)`` returns an object with ``update(n=1)``, ``set_postfix_str(s)`` and
``close()`` (also a context manager):

* on a terminal: a tqdm bar on stderr;
* elsewhere (``| tee``, nohup, cluster logs): one line ``desc: done/total (pct) elapsed, eta`` on
  stderr at most every ``SNNC_PROGRESS_INTERVAL`` seconds (default 10) and at the end (work that
  finished within one interval logs nothing);
* disabled (``enabled=False``, ``--quiet``, or ``SNNC_QUIET=1``): nothing at all.

``note(msg)`` writes one status line the same way (not when quiet). ``track(iterable, desc)``
wraps an iterable in a bar. ``enabled(flag)`` resolves a ``progress=`` argument of the Python
API (None: on unless quiet).
"""

from __future__ import annotations

import os
import sys
import time

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence every progress bar and note of this process (the CLIs' ``--quiet``)."""
    global _QUIET
    _QUIET = bool(quiet)


def quiet() -> bool:
    return _QUIET or os.environ.get("SNNC_QUIET", "") not in ("", "0")


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("SNNC_PROGRESS_INTERVAL", "10")))
    except ValueError:
        return 10.0


def _fmt_s(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class _Null:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Lines(_Null):
    """Periodic one-line updates for non-terminals."""

    def __init__(self, total: int | None, desc: str, unit: str, stream):
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False
        self.emitted = 0

    def _line(self) -> str:
        el = time.monotonic() - self.t0
        if self.total:
            pct = 100.0 * self.n / self.total
            eta = el / self.n * (self.total - self.n) if self.n else float("nan")
            eta_s = _fmt_s(eta) if eta == eta else "?"
            s = f"{self.desc}: {self.n}/{self.total} {self.unit} ({pct:.0f}%) {_fmt_s(el)} " \
                f"elapsed, eta {eta_s}"
        else:
            s = f"{self.desc}: {self.n} {self.unit} {_fmt_s(el)} elapsed"
        return s + (f" [{self.postfix}]" if self.postfix else "")

    def _emit(self) -> None:
        print(self._line(), file=self.stream, flush=True)
        self.last = time.monotonic()
        self.emitted += 1

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= _interval():
            self._emit()

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        # the final line only for work that lasted an interval or already logged a line:
        # quick steps stay silent in logs
        if not self.closed:
            self.closed = True
            if self.emitted or time.monotonic() - self.t0 >= _interval():
                self._emit()


def bar(total: int | None, desc: str, *, unit: str = "it", enabled: bool = True,
        stream=None, leave: bool = False):
    """A progress bar for ``total`` steps of ``desc`` (see the module docstring)."""
    stream = stream if stream is not None else sys.stderr
    if not enabled or quiet():
        return _Null()
    isatty = getattr(stream, "isatty", lambda: False)
    if isatty():
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=stream,
                    dynamic_ncols=True)
    return _Lines(total, desc, unit, stream)


def note(msg: str, *, stream=None) -> None:
    """One status line on stderr (nothing when quiet)."""
    if not quiet():
        print(msg, file=stream if stream is not None else sys.stderr, flush=True)


def enabled(flag: bool | None = None) -> bool:
    """A ``progress=`` argument: True/False as given, None -> on unless quiet."""
    if quiet():
        return False
    return True if flag is None else bool(flag)


def track(iterable, desc: str, *, total: int | None = None, unit: str = "it",
          enabled: bool = True, stream=None):
    """Iterate ``iterable`` with a progress bar (see :func:`bar`)."""
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    with bar(total, desc, unit=unit, enabled=enabled, stream=stream) as pb:
        for item in iterable:
            yield item
            pb.update(1)
