"""Tests for pyrauc.status (central and per-slot status files)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pyrauc.config import SystemConfig, parse_config
from pyrauc.keyfile import KeyFile
from pyrauc.mount import find_mount_point
from pyrauc.slots import build_slots
from pyrauc.status import (
    SlotStatus,
    load_slot_status,
    load_system_status,
    record_activated,
    save_slot_status,
    save_system_status,
    timestamp,
    write_atomic,
)


def config(tmp_path: Path, extra: str = "data-directory=data\n") -> SystemConfig:
    text = (f"[system]\ncompatible=T\nbootloader=noop\n{extra}\n[slot.rootfs.0]\ndevice=/dev/null\n"
            "type=ext4\nbootname=A\n\n[slot.rootfs.1]\ndevice=/dev/zero\ntype=ext4\nbootname=B\n")
    return parse_config(text, tmp_path / "system.conf")


def test_central_roundtrip(tmp_path: Path) -> None:
    c = config(tmp_path)
    slots = build_slots(c)
    st = SlotStatus(bundle_compatible="T", bundle_version="1.0", bundle_hash="ab" * 32, status="ok",
                    checksum_sha256="cd" * 32, checksum_size=4096, installed_transaction="uuid",
                    installed_timestamp="2024-09-06T09:51:13Z", installed_count=2)
    save_slot_status(c, slots["rootfs.1"], st)
    save_system_status(c, {"boot-id": "1234"})
    data = (tmp_path / "data" / "central.raucs").read_text()
    assert data == ("[slot.rootfs.1]\nbundle.compatible=T\nbundle.version=1.0\n"
                    f"bundle.hash={'ab' * 32}\nstatus=ok\nsha256={'cd' * 32}\nsize=4096\n"
                    "installed.transaction=uuid\ninstalled.timestamp=2024-09-06T09:51:13Z\n"
                    "installed.count=2\n\n[system]\nboot-id=1234\n")
    loaded = load_slot_status(c, slots["rootfs.1"])
    assert loaded == st
    assert load_slot_status(c, slots["rootfs.0"]) == SlotStatus()
    assert load_system_status(c) == {"boot-id": "1234"}
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    record_activated(c, slots["rootfs.1"], now)
    record_activated(c, slots["rootfs.1"], now)
    kf = KeyFile.load(tmp_path / "data" / "central.raucs")
    assert kf.get_string("slot.rootfs.1", "activated.timestamp") == "2025-01-02T03:04:05Z"
    assert kf.get_string("slot.rootfs.1", "activated.count") == "2"
    assert kf.get_string("slot.rootfs.1", "bundle.version") == "1.0"
    assert kf.get_string("system", "boot-id") == "1234"


def test_per_slot_mounted(tmp_path: Path) -> None:
    c = config(tmp_path, extra="")
    slots = build_slots(c)
    slot = slots["rootfs.1"]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    slot.mount_point = str(mnt)
    save_slot_status(c, slot, SlotStatus(status="ok", bundle_version="2"))
    assert (mnt / "slot.raucs").read_text() == "[slot]\nbundle.version=2\nstatus=ok\n"
    assert load_slot_status(c, slot).bundle_version == "2"


def test_helpers(tmp_path: Path) -> None:
    assert timestamp(datetime(2024, 9, 6, 9, 51, 13, tzinfo=UTC)) == "2024-09-06T09:51:13Z"
    target = tmp_path / "sub" / "f"
    write_atomic(target, "x")
    write_atomic(target, b"y")
    assert target.read_text() == "y" and [p.name for p in target.parent.iterdir()] == ["f"]
    mi = tmp_path / "mountinfo"
    mi.write_text("22 1 8:2 / / rw - ext4 /dev/root rw\n31 22 8:3 / /mnt/x rw - ext4 /dev/null rw\n")
    assert find_mount_point("/dev/null", str(mi)) == "/mnt/x"
    assert find_mount_point("/dev/zero", str(mi)) is None
