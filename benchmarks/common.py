"""Shared helpers for the benchmarks: run a command, measure wall time and peak RSS, print ratios.

Benchmarks are scripts, not tests: they report numbers side by side with Debian's rauc and never
assert on timing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIME = shutil.which("time") or "/usr/bin/time"   # GNU time (Debian package "time")


@dataclass
class Measurement:
    seconds: float
    peak_rss_kib: int
    cpu_seconds: float = 0.0          # user + system CPU of the command and its children


def measure(argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None,
            ok: Sequence[int] = (0,)) -> Measurement:
    """Run ``argv`` to completion under GNU time: wall time, peak RSS and CPU time of the command.

    An exit code outside ``ok`` ends the benchmark (a usage error is measured with ``ok=(1,)``).

    (``os.wait4`` would report the benchmark script's own peak too: a forked child starts with
    the parent's resident pages.)
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%M %U %S", "-o", rss.name, *argv], cwd=cwd,
                              env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode not in ok:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): "
                             f"{proc.stderr.decode(errors='replace').strip()[-500:]}")
        peak, user, system = rss.read().strip().splitlines()[-1].split()
    return Measurement(elapsed, int(peak), float(user) + float(system))


def pyrauc_cmd() -> list[str]:
    return [sys.executable, "-m", "pyrauc"]


def report(title: str, ours: Measurement, theirs: Measurement) -> str:
    t_ratio = ours.seconds / theirs.seconds if theirs.seconds else float("inf")
    m_ratio = ours.peak_rss_kib / theirs.peak_rss_kib if theirs.peak_rss_kib else float("inf")
    return (f"{title:<44} pyrauc {ours.seconds:8.2f} s {ours.peak_rss_kib / 1024:8.1f} MiB | "
            f"rauc {theirs.seconds:8.2f} s {theirs.peak_rss_kib / 1024:8.1f} MiB | "
            f"time x{t_ratio:5.2f}  mem x{m_ratio:5.2f}")
