"""labs/board-example.yaml and labs/board-exporter-example.yaml work together through a coordinator.

The example exporter config is exported (its hosts need not exist: nothing is contacted), a place
is made for it as a farm admin would, and a session on the example env file acquires it: the lab
strategy binds to the network drivers over the place's resources (ser2net port, PDU outlet, the
board's address), with no QEMUDriver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from labs import farm

REPO = Path(__file__).resolve().parents[2]


def test_board_example_binds_through_the_coordinator(tmp_path: Path) -> None:
    with farm.running(tmp_path / "farm", board=False) as f:
        f.add_exporter("rack-3", REPO / "labs" / "board-exporter-example.yaml", "rauc-board-1")
        f.create_place("rauc-board-1", "rack-3/rauc-board-1/*", {"board": "example"})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LG_", "PYRAUC_"))}
        env.update(f.env())
        env.update({"PROBE_DIR": str(tmp_path), "PYRAUC_FARM_WAIT": "0",
                    "PYRAUC_RESULTS_DIR": str(tmp_path / "results")})
        cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:xdist",
               "--lg-env", str(REPO / "labs" / "board-example.yaml"), str(Path(__file__).with_name("env_probe.py"))]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "farm: acquired place rauc-board-1" in proc.stdout
        assert "farm: released place rauc-board-1" in proc.stdout
        assert "acquired: None" in f.client("-p", "rauc-board-1", "show").stdout
    record = json.loads((tmp_path / "env.json").read_text())
    assert record["power"] == "NetworkPowerDriver"
    assert record["console"] == "SerialDriver" and record["shell_console"] == "SerialDriver"
    assert record["qemu"] is None
    assert record["ssh"] == ["192.168.1.50", 22] and record["network"] == ["192.168.1.50", 22]
    assert record["serial"] == ["rack-3.lab.example", 2001, "raw"]
    assert record["pdu"] == ["gude", "pdu-3.lab.example", "5"]
