"""The test-only pause points of an install: off without the variable, a stop with it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyrauc import testpoints
from pyrauc.status import write_atomic


def test_no_variable_no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYRAUC_TEST_PAUSE", raising=False)
    testpoints.reach("copied")
    assert testpoints.copy_progress() is None


def test_pause_in_the_middle_of_a_status_write(tmp_path: Path) -> None:
    """The process stops with half of the temporary file written and the old file intact."""
    target = tmp_path / "central.raucs"
    target.write_text("old\n")
    code = ("from pyrauc.status import write_atomic; import sys; "
            f"write_atomic({str(target)!r}, 'new status line\\n' * 100, 'status-write')")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            env={"PYRAUC_TEST_PAUSE": "status-write", "PATH": "/usr/bin:/bin"})
    assert proc.stderr is not None
    assert proc.stderr.readline() == "pyrauc-testpoint: status-write\n"
    time.sleep(0.2)
    assert proc.poll() is None                       # waiting for the power cut
    temp = [p for p in tmp_path.iterdir() if p.name != "central.raucs"]
    assert len(temp) == 1 and temp[0].stat().st_size == len("new status line\n" * 100) // 2
    assert target.read_text() == "old\n"
    proc.kill()
    proc.wait()
    write_atomic(target, "done\n")
    assert target.read_text() == "done\n"


def test_copy_progress_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRAUC_TEST_PAUSE", "copy-50")
    progress = testpoints.copy_progress()
    assert progress is not None
    progress(49, 100)                                # below the point: goes on
    monkeypatch.setenv("PYRAUC_TEST_PAUSE", "copied")
    assert testpoints.copy_progress() is None
