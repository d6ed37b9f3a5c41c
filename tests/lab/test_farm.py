"""The lab target as a board of a farm: its power switched through the network power port.

Runs with an env file whose power driver is labgrid's NetworkPowerDriver (feature ``network-power``:
labs/remote.yaml, a farm's board file). Power off must take the board off the network; power on
must boot it again through the firmware (a new boot id). With the virtual board of labs/farm.py
(feature ``virtual-board``) the switch's own log shows the QEMU process that went and the new one.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from labgrid.driver import NetworkPowerDriver

from tests.lab.target import RaucTargetDriver

pytestmark = pytest.mark.lg_feature("network-power")
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


def _power_events() -> list[dict[str, Any]]:
    log = Path(os.environ["PYRAUC_FARM_DIR"], "power.log")
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_power_cycle_through_the_network_power_port(strategy: Any, target: Any, dut: RaucTargetDriver) -> None:
    power = strategy.power                   # the strategy's PowerProtocol binding
    assert isinstance(power, NetworkPowerDriver)
    virtual = "virtual-board" in target.env.get_target_features()
    before = len(_power_events()) if virtual else 0
    boot_id = dut.sh(BOOT_ID).strip()
    assert power.get() is True

    strategy.transition("off")
    assert power.get() is False
    with pytest.raises(OSError):             # no SSH: the board is off (nothing answers at its address)
        socket.create_connection((strategy.network.address, strategy.network.port), timeout=10).close()

    strategy.transition("shell")             # the strategy switches it on (NetworkPowerDriver.cycle) and boots
    assert power.get() is True
    assert dut.sh(BOOT_ID).strip() != boot_id
    assert "rauc.slot=A" in dut.cmdline()

    if virtual:
        events = _power_events()[before:]
        assert [e["event"] for e in events] == ["off", "on"], events
        assert events[0]["pid"] != events[1]["pid"]       # a new QEMU process: the old machine lost power
