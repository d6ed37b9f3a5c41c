"""Named points in an install where a power-loss test can stop it (test-only, off by default).

With ``PYRAUC_TEST_PAUSE=<point>`` in the environment, the process that reaches that point prints
``pyrauc-testpoint: <point>`` on stderr and then waits forever, so that a lab test can cut the
power at exactly that moment instead of guessing with sleeps. Without the variable every call is
a no-op. Points: ``checked-bundle``, ``marked-bad``, ``copy-10``, ``copy-50``, ``copy-90``,
``copied``, ``status-write``, ``before-activate``, ``after-activate``, ``mark-good``.
"""

from __future__ import annotations

import os
import sys
import time

from pyrauc.progress import Progress

ENV = "PYRAUC_TEST_PAUSE"


def reach(point: str) -> None:
    """Stop here for good if the test asked for ``point``."""
    if os.environ.get(ENV) != point:
        return
    sys.stderr.write(f"pyrauc-testpoint: {point}\n")
    sys.stderr.flush()
    while True:
        time.sleep(3600)


def copy_progress() -> Progress | None:
    """A copy progress callback reaching ``copy-10``/``copy-50``/``copy-90``, or None (no test)."""
    wanted = os.environ.get(ENV, "")
    if not wanted.startswith("copy-"):
        return None
    percent = int(wanted[len("copy-"):])

    def progress(done: int, total: int) -> None:
        if total and done * 100 >= percent * total:
            reach(wanted)
    return progress
