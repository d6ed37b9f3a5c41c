"""Progress reporting for long operations (bundle, encrypt for many recipients, install).

A :data:`Progress` callback receives ``(done, total)`` in the unit of the operation (bytes,
recipients). :class:`TerminalProgress` turns that into a single updating line on a TTY and into
a few percentage lines otherwise, always on stderr so stdout stays parseable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

Progress = Callable[[int, int], None]


class TerminalProgress:
    """Show ``label: NN%`` on stderr; rate-limited, one line per 10% when not on a TTY."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_pct = -1
        self._last_time = 0.0

    def __call__(self, done: int, total: int) -> None:
        pct = 100 if total <= 0 else min(100, done * 100 // total)
        now = time.monotonic()
        if self.tty:
            if pct != self._last_pct and (now - self._last_time > 0.1 or pct == 100):
                end = "\n" if pct == 100 else ""
                self.stream.write(f"\r{self.label}: {pct:3d}%{end}")
                self.stream.flush()
                self._last_pct, self._last_time = pct, now
        elif pct // 10 != self._last_pct // 10 or (pct == 100 and self._last_pct != 100):
            self.stream.write(f"{self.label}: {pct:3d}%\n")
            self.stream.flush()
            self._last_pct = pct


def no_progress(done: int, total: int) -> None:
    """A :data:`Progress` that shows nothing."""
