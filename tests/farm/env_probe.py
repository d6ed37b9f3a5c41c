"""A session on a farm's board env file (run by tests/farm/test_board_example.py only).

It writes ``$PROBE_DIR/env.json``: what the strategy bound to and what the place brought.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def strategy(target: Any) -> Any:
    """The lab strategy, not activated (nothing answers behind the place's resources here).

    Named ``strategy`` as in the lab suites: labgrid's runtest_setup hook then builds the target
    before any fixture runs, which needs the place already acquired.
    """
    return target.get_driver("PyraucLabStrategy", activate=False)


def test_bindings(strategy: Any, target: Any) -> None:
    serial = target.get_resource("NetworkSerialPort")
    pdu = target.get_resource("NetworkPowerPort")
    record = {
        "power": type(strategy.power).__name__,
        "console": type(strategy.console).__name__,
        "shell_console": type(strategy.shell.console).__name__,
        "ssh": [strategy.ssh.networkservice.address, strategy.ssh.networkservice.port],
        "network": [strategy.network.address, strategy.network.port],
        "qemu": strategy.qemu,
        "serial": [serial.host, serial.port, serial.protocol],
        "pdu": [pdu.model, pdu.host, pdu.index],
    }
    Path(os.environ["PROBE_DIR"], "env.json").write_text(json.dumps(record) + "\n")
