"""Progress for long commands: a tqdm bar on a terminal, plain periodic lines in a log file.

tqdm turns itself off (``disable=None``) when stderr is not a terminal, so a long run logged to a
file said nothing for minutes; its bar written into a file anyway is one line of carriage returns.
"""
from __future__ import annotations

import sys
import time


class LineProgress:
    """tqdm's ``update``/context protocol, printing ``desc: n/total frames (p%), r frames/s``
    every ``every`` seconds and once at the end."""

    def __init__(self, total: int, desc: str, unit: str = "frame", every: float = 10.0, file=None) -> None:
        self.total, self.desc, self.unit, self.every = int(total), desc, unit, float(every)
        self.file = file or sys.stderr
        self.n, self.start = 0, time.monotonic()
        self.last = self.start

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = self.n / max(now - self.start, 1e-9)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{share}, {rate:.1f} {self.unit}s/s",
              file=self.file, flush=True)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self._line(time.monotonic())


def progress(total: int, desc: str, quiet: bool = False, unit: str = "frame"):
    """A bar on a terminal, periodic lines elsewhere, nothing when ``quiet``."""
    from tqdm import tqdm

    if quiet or sys.stderr.isatty():
        return tqdm(total=total, unit=unit, file=sys.stderr, disable=quiet, desc=desc)
    return LineProgress(total, desc, unit=unit)
