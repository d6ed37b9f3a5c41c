"""The tutorial's GRUB device on its own (labs/qemu-grub.yaml only): GRUB's selection and the rescue slot.

seed-target.md section 4: with no slot that is OK and not tried, GRUB resets the TRY of the good
slots and boots the Rescue entry once (``rauc.external``: RAUC sees every slot inactive, the
mark-good unit does not run); the next boot is A again. RAUC's view of the env follows its grub
backend (section 5): a slot GRUB is trying is bad until it is marked good.
Not part of CI (two extra reboots); run with
``pytest --lg-env labs/qemu-grub.yaml tests/lab/test_grub_device.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.devices import GrubDevice
from tests.lab.target import RaucTargetDriver

pytestmark = pytest.mark.lg_feature("grubenv")
DEVICE = GrubDevice()


def test_first_boot_state(dut: RaucTargetDriver) -> None:
    """GRUB saved its defaults on the first boot (A tried), mark-good reset A_TRY; RAUC reads A good, B bad."""
    dut.sh("systemctl is-active rauc-mark-good.service || "
           "(sleep 20; systemctl is-active rauc-mark-good.service)", timeout=120)
    env = DEVICE.env(dut)
    assert env == {"ORDER": "A B", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"}, env
    status = dut.status()
    assert status.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "A"
    names = status["RAUC_SYSTEM_SLOTS"].split()
    boot = {name: status.get(f"RAUC_SLOT_BOOT_STATUS_{i}") for i, name in enumerate(names, start=1)}
    assert (boot["rootfs.0"], boot["rootfs.1"]) == ("good", "bad"), status
    assert status.get("RAUC_BOOT_PRIMARY") == "rootfs.0", status


def test_no_bootable_slot_boots_rescue_once(strategy: Any, dut: RaucTargetDriver) -> None:
    """A tried and never marked good, B not OK: GRUB boots Rescue (rauc.external) and resets A_TRY."""
    dut.sh(f"grub-editenv {DEVICE.grubenv} set A_OK=1 A_TRY=1 B_OK=0 B_TRY=0 'ORDER=A B' && sync")
    strategy.reboot()
    cmdline = dut.cmdline()
    assert "rauc.external" in cmdline and f"root={DEVICE.disk}3" in cmdline, cmdline
    assert dut.booted_bootname() is None
    assert dut.marker() == "rescue"
    assert DEVICE.env(dut)["A_TRY"] == "0"               # GRUB's reset: the next boot tries A again
    status = dut.status()
    assert status.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "_external_", status
    # the mark-good unit is conditioned on rauc.slot: it did not run in the rescue system
    assert dut.sh("systemctl show -p ConditionResult --value rauc-mark-good.service").strip() == "no"
    strategy.reboot()
    assert dut.booted_bootname() == "A"
    assert dut.marker() == "A"
