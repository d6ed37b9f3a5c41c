"""The second session of tests/lab/test_sessions.py (run only when named on the command line).

It writes what it saw and where its target lives to $PYRAUC_RESULTS_DIR/session-probe.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from labs import lab
from tests.lab.target import RaucTargetDriver

MARK = "/data/lab-session"


def test_second_session(strategy: Any, dut: RaucTargetDriver, lab_run: Path) -> None:
    before, _, _ = dut.run(f"cat {MARK} 2>/dev/null")
    dut.sh(f"echo second > {MARK} && sync")
    paths = lab.run_paths(lab_run)
    probe = {
        "mark_before": before.strip(),
        "mark_after": dut.sh(f"cat {MARK}").strip(),
        "ssh_port": strategy.network.port,
        "disk": str(paths["disk"]),
        "vars": str(paths["vars"]),
        "run_dir": str(lab_run),
    }
    Path(os.environ["PYRAUC_RESULTS_DIR"], "session-probe.json").write_text(json.dumps(probe, indent=2) + "\n")
