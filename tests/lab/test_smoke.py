"""Smoke tests of the lab target: login, booted slot, kernel features, slot switch, fallback.

Only shell commands and the ``rauc`` CLI are used (through the RaucTargetDriver), so the suite
also runs against a board with C RAUC. The tests run in file order on the module's target; the
slot switch and the fallback reboot through the firmware.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

# honoured by the image's rauc-mark-good.service
from images.config import SKIP_MARK_GOOD
from tests.lab.target import RaucTargetDriver


def test_login_over_ssh(dut: RaucTargetDriver) -> None:
    assert dut.sh("id -un").strip() == "root"
    assert dut.sh("echo hello").strip() == "hello"


def test_booted_slot_is_a(dut: RaucTargetDriver) -> None:
    assert "rauc.slot=A" in dut.cmdline()
    assert dut.marker() in (None, "A")


def test_rauc_status_reports_a(dut: RaucTargetDriver) -> None:
    stdout, stderr, code = dut.run("rauc status --output-format=shell", timeout=300)
    text = "\n".join([stdout, stderr])
    assert code == 0, text
    values = dict(shlex.split(line)[0].split("=", 1) for line in stdout.splitlines() if "=" in line)
    assert values.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "A", text


def test_kernel_has_verity_crypt_loop_squashfs(dut: RaucTargetDriver) -> None:
    dut.sh("modprobe -a dm-verity dm-crypt loop squashfs")
    targets = dut.sh("dmsetup targets")
    names = {line.split()[0] for line in targets.splitlines() if line.strip()}
    assert {"verity", "crypt"} <= names, targets
    assert "squashfs" in dut.sh("cat /proc/filesystems")


@pytest.mark.lg_feature("uefi-vars")
def test_bootnext_b_boots_b(strategy: Any, dut: RaucTargetDriver) -> None:
    entry_b = dut.boot_entry("B")
    # keep slot B unconfirmed, so the power cycle below must fall back to A
    dut.sh(f"mkdir -p /data && touch {SKIP_MARK_GOOD} && sync")
    dut.sh(f"efibootmgr --bootnext {entry_b}")
    seconds = strategy.reboot()
    print(f"reboot to B took {seconds:.1f} s")
    assert "rauc.slot=B" in dut.cmdline()
    assert dut.marker() in (None, "B")
    assert f"BootCurrent: {entry_b}" in dut.sh("efibootmgr")


@pytest.mark.lg_feature("uefi-vars")
def test_power_cycle_without_mark_good_boots_a(strategy: Any, dut: RaucTargetDriver) -> None:
    seconds = strategy.power_cycle()
    print(f"power cycle to A took {seconds:.1f} s")
    try:
        assert "rauc.slot=A" in dut.cmdline()
        assert dut.marker() in (None, "A")
    finally:
        dut.sh(f"rm -f {SKIP_MARK_GOOD}")
