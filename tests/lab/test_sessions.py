"""Two lab sessions on one host at once, without interfering.

While this session's target keeps working, a second pytest session (tests/lab/session_probe.py,
its own results directory) boots its own target from the same image: its own disk overlay, NVRAM,
snapshot and SSH port. Each target sees only what was written to it. QEMU only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labs import lab
from tests.lab.target import RaucTargetDriver

pytestmark = pytest.mark.lg_feature("qemu")

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("session_probe.py")
MARK = "/data/lab-session"


def test_two_sessions_at_once(strategy: Any, dut: RaucTargetDriver, lab_run: Path, tmp_path: Path) -> None:
    dut.sh(f"echo first > {MARK} && sync")
    second = tmp_path / "second-session"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LG_"))}
    env["PYRAUC_RESULTS_DIR"] = str(second)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           "--lg-env", str(REPO / "labs" / "qemu.yaml"), str(PROBE)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checks = 0
    try:
        while proc.poll() is None:          # this session's target keeps working meanwhile
            assert dut.sh(f"cat {MARK}").strip() == "first"
            checks += 1
            time.sleep(2)
        output = proc.communicate()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(f"second session: {time.monotonic() - t0:.1f} s, {checks} checks on this target meanwhile")
    assert proc.returncode == 0, output
    assert checks >= 3, output
    probe = json.loads((second / "session-probe.json").read_text())
    assert probe["mark_before"] == ""                   # a fresh target: nothing of this one's
    assert probe["mark_after"] == "second"
    assert dut.sh(f"cat {MARK}").strip() == "first"     # and nothing of the other's here
    ours = lab.run_paths(lab_run)
    assert probe["ssh_port"] != strategy.network.port
    assert probe["disk"] != str(ours["disk"]) and probe["vars"] != str(ours["vars"])
    assert Path(probe["run_dir"]).is_relative_to(second)
    assert (second / "junit.xml").exists()
