"""Tests for pyrauc.slots and booted-slot detection in pyrauc.context."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrauc.config import parse_config
from pyrauc.context import create_context, get_bootname, resolve_root
from pyrauc.errors import RaucError
from pyrauc.slots import (
    ACTIVE,
    BOOTED,
    EXTERNAL,
    INACTIVE,
    build_slots,
    determine_slot_states,
    determine_target_group,
    resolve_identifier,
)

CONF = """[system]
compatible=Test
bootloader=noop

[slot.efi.0]
device={d}/vda1
type=vfat
bootname=system0

[slot.efi.1]
device={d}/vda2
type=vfat
bootname=system1

[slot.rootfs.0]
device={d}/vda3
type=ext4
parent=efi.0

[slot.rootfs.1]
device={d}/vda4
type=ext4
parent=efi.1

[slot.data.0]
device={d}/vda5
readonly=true
"""


@pytest.fixture
def devdir(tmp_path: Path) -> Path:
    d = tmp_path / "dev"
    d.mkdir()
    for n in range(1, 6):
        (d / f"vda{n}").touch()
    by = d / "disk" / "by-partuuid"
    by.mkdir(parents=True)
    (by / "abcd-03").symlink_to(d / "vda3")
    (d / "disk" / "by-partlabel").mkdir()
    (d / "disk" / "by-partlabel" / "root-b").symlink_to(d / "vda4")
    return d


def test_states_and_target_group(devdir: Path) -> None:
    slots = build_slots(parse_config(CONF.format(d=devdir)))
    booted = determine_slot_states(slots, "system0")
    assert booted is slots["efi.0"]
    assert [slots[n].state for n in ("efi.0", "rootfs.0", "efi.1", "rootfs.1", "data.0")] == \
        [BOOTED, ACTIVE, INACTIVE, INACTIVE, INACTIVE]
    targets = determine_target_group(slots)
    assert {k: v.name for k, v in targets.items()} == {"efi": "efi.1", "rootfs": "rootfs.1"}
    # booted by device (root=) -> the child is booted, its parent active
    booted = determine_slot_states(slots, str(devdir / "vda4"))
    assert booted is slots["rootfs.1"] and slots["efi.1"].state == ACTIVE
    assert determine_target_group(slots)["rootfs"].name == "rootfs.0"


def test_external_and_unknown(devdir: Path) -> None:
    slots = build_slots(parse_config(CONF.format(d=devdir)))
    assert determine_slot_states(slots, EXTERNAL) is None
    assert all(s.state == INACTIVE for s in slots.values())
    assert determine_target_group(slots)["efi"].name == "efi.0"
    with pytest.raises(RaucError, match="Did not find booted slot \\(matching 'nope'\\)"):
        determine_slot_states(slots, "nope")


def test_no_target_group(devdir: Path) -> None:
    conf = "[system]\ncompatible=T\nbootloader=noop\n\n[slot.rootfs.0]\ndevice=/dev/x\nbootname=A\n"
    slots = build_slots(parse_config(conf))
    determine_slot_states(slots, "A")
    with pytest.raises(RaucError, match="Could not determine target group"):
        determine_target_group(slots)


def test_identifiers(devdir: Path) -> None:
    slots = build_slots(parse_config(CONF.format(d=devdir)))
    booted = determine_slot_states(slots, "system1")
    assert [s.name for s in resolve_identifier(slots, booted, "booted")] == ["efi.1"]
    assert [s.name for s in resolve_identifier(slots, booted, "other")] == ["efi.0"]
    assert [s.name for s in resolve_identifier(slots, booted, "efi.0")] == ["efi.0"]
    # RAUC's errors: a child slot (rootfs.0 under efi.0) is no boot slot, nor one without bootname
    for identifier, message in (("rootfs.0", "No slot with class rootfs and name rootfs.0 found"),
                                ("nope.0", "No slot with class nope and name nope.0 found"),
                                ("efi.7", "No slot with class efi and name efi.7 found"),
                                ("nope", "Invalid slot name format: 'nope'"),
                                ("", "Invalid slot name format: ''"),
                                ("efi.0.x", "Invalid slot name format: 'efi.0.x'"),
                                ("data.0", "Slot data.0 has no bootname set")):
        with pytest.raises(RaucError) as e:
            resolve_identifier(slots, booted, identifier)
        assert str(e.value) == message
    with pytest.raises(RaucError, match=r"^Did not find booted slot needed to find another bootable slot"):
        resolve_identifier(slots, None, "other")
    # A/B/C: "other" is both other slots
    abc = build_slots(parse_config(CONF.format(d=devdir) + "\n[slot.efi.2]\ndevice=/dev/null\nbootname=system2\n"))
    booted = determine_slot_states(abc, "system1")
    assert [s.name for s in resolve_identifier(abc, booted, "other")] == ["efi.0", "efi.2"]


def test_get_bootname(devdir: Path) -> None:
    disk = devdir / "disk"
    assert get_bootname(None, ["quiet", "rauc.slot=system1", "root=/dev/vda3"], disk) == "system1"
    assert get_bootname(None, ["rauc.external", "rauc.slot=A"], disk) == EXTERNAL
    assert get_bootname(None, ["root=/dev/nfs"], disk) == EXTERNAL
    assert get_bootname(None, ["root=PARTUUID=ABCD-03"], disk) == str(devdir / "vda3")
    assert get_bootname(None, ["root=PARTLABEL=root-b"], disk) == str(devdir / "vda4")
    assert get_bootname(None, ["quiet"], disk) is None
    assert resolve_root("UUID=1234", disk) == str(disk / "by-uuid" / "1234")


def test_create_context(devdir: Path, tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 root=PARTUUID=abcd-03 rw\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 253:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n"
                         f"30 22 253:5 / /data rw - vfat {devdir}/vda1 rw\n")
    info = tmp_path / "info.sh"
    info.write_text("#!/bin/sh\necho RAUC_SYSTEM_SERIAL=1234\necho RAUC_SYSTEM_VARIANT=v2\necho junk\n")
    info.chmod(0o755)
    conf = parse_config(CONF.format(d=devdir) + f"\n[handlers]\nsystem-info={info}\n")
    ctx = create_context(conf, cmdline_path=cmdline, disk_root=devdir / "disk", mountinfo=str(mountinfo))
    assert ctx.booted is not None and ctx.booted.name == "rootfs.0"
    assert ctx.bootname == str(devdir / "vda3")
    assert ctx.slots["rootfs.0"].mount_point == "/" and ctx.slots["efi.0"].mount_point == "/data"
    assert ctx.variant == "v2" and ctx.system_info["RAUC_SYSTEM_SERIAL"] == "1234"
    ctx = create_context(conf, override_boot_slot="system1", cmdline_path=cmdline, mountinfo=str(mountinfo))
    assert ctx.booted is not None and ctx.booted.name == "efi.1"
