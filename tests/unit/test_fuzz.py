"""The short fuzz run of the test command: every fuzz target for about a minute in total, no crash.

``python -m benchmarks.fuzz --minutes 1 --quiet`` (atheris/libFuzzer, see benchmarks/fuzz) runs in a
subprocess; its summary line ("fuzz: 7 targets, N executions in S s, coverage cov C ft F, 0 crashes")
is printed at the end of the test run and recorded in junit.xml. A crash fails the test with the
fuzzer's lines, which name the saved input (under $PYRAUC_RESULTS_DIR/fuzz-crashes in dev/run).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_LINE = re.compile(r"^fuzz: \d+ targets, (\d+) executions in \d+ s, coverage cov \d+ ft \d+, (\d+) crashes$",
                          re.M)


def test_short_fuzz_run(record_property: Callable[[str, object], None]) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.fuzz", "--minutes", "1", "--quiet", "--seed", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    summary = SUMMARY_LINE.search(proc.stdout)
    assert summary is not None, f"no summary line (exit {proc.returncode}):\n{output[-3000:]}"
    record_property("summary", summary.group(0))
    assert summary.group(2) == "0", output
    assert proc.returncode == 0, output
    assert int(summary.group(1)) > 1000, output
