"""End-to-end tests of ``status`` / ``mark-*`` / ``write-slot`` through the CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyrauc import cli
from pyrauc.cli_target import format_readable, format_shell, status_dict
from pyrauc.keyfile import KeyFile
from pyrauc.report import SlotReport, SystemReport
from pyrauc.status import SlotStatus
from tests.helpers import fake_efibootmgr


def write_conf(tmp_path: Path, bootloader: str = "efi", extra: str = "") -> Path:
    conf = tmp_path / "system.conf"
    conf.write_text(f"""[system]
compatible=Test Platform
bootloader={bootloader}
data-directory=data
{extra}
[slot.efi.0]
device=/dev/null
type=vfat
bootname=system0

[slot.efi.1]
device={tmp_path}/efi1.img
type=vfat
bootname=system1

[slot.rootfs.0]
device={tmp_path}/root0.img
type=ext4
parent=efi.0

[slot.rootfs.1]
device={tmp_path}/root1.img
type=ext4
parent=efi.1
readonly=true
""")
    return conf


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in this process (so the fake efibootmgr on PATH is used)."""
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def efi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake efibootmgr on PATH; returns the state file."""
    return fake_efibootmgr.install(tmp_path, monkeypatch, {
        "current": "0002", "order": ["0001", "0002"],
        "entries": {"0001": {"label": "system0"}, "0002": {"label": "system1"}},
    })


def test_status_shell_efi(tmp_path: Path, efi: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_conf(tmp_path)
    rc, out, err = run(["status", "-c", str(conf), "--output-format=shell"], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:6] == ["RAUC_SYSTEM_COMPATIBLE='Test Platform'", "RAUC_SYSTEM_VARIANT=''",
                         "RAUC_SYSTEM_BOOTED_BOOTNAME='system1'", "RAUC_BOOT_PRIMARY='efi.0'",
                         "RAUC_SYSTEM_SLOTS='efi.0 efi.1 rootfs.0 rootfs.1'", "RAUC_SLOTS='1 2 3 4'"]
    assert "RAUC_SLOT_STATE_2='booted'" in lines and "RAUC_SLOT_STATE_4='active'" in lines
    assert "RAUC_SLOT_PARENT_3='efi.0'" in lines and "RAUC_SLOT_BOOT_STATUS_1='good'" in lines


def test_status_readable_and_json(tmp_path: Path, efi: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_conf(tmp_path)
    rc, out, _ = run(["status", "-c", str(conf)], capsys)
    assert rc == 0
    assert out == (
        "=== System Info ===\nCompatible:  Test Platform\nVariant:     \nBooted from: efi.1 (system1)\n\n"
        "=== Bootloader ===\nActivated: efi.0 (system0)\n\n=== Slot States ===\n"
        "\u23fa \x1b[1m[efi.0]\x1b[0m (/dev/null, vfat, inactive\x1b[0m)\n\tbootname: \x1b[34msystem0\x1b[0m\n"
        "\tboot status: \x1b[32mgood\x1b[0m\n"
        f"    \x1b[1m[rootfs.0]\x1b[0m ({tmp_path}/root0.img, ext4, inactive\x1b[0m)\n\n"
        f"\u25cb \x1b[32m\x1b[32m\x1b[1m[efi.1]\x1b[0m ({tmp_path}/efi1.img, vfat, \x1b[1mbooted\x1b[0m)\n"
        "\tbootname: \x1b[34msystem1\x1b[0m\n\tboot status: \x1b[32mgood\x1b[0m\n"
        f"    \x1b[32m\x1b[1m[rootfs.1]\x1b[0m ({tmp_path}/root1.img, ext4, active\x1b[0m)\n\n\n")
    rc, out, _ = run(["status", "-c", str(conf), "--output-format=json", "--override-boot-slot", "system0"], capsys)
    data = json.loads(out)
    assert data["compatible"] == "Test Platform" and data["booted"] == "system0"
    assert data["boot_primary"] == "efi.0"
    assert data["slots"][0]["efi.0"]["state"] == "booted"
    assert data["slots"][3]["rootfs.1"]["parent"] == "efi.1"
    rc, out, _ = run(["status", "-c", str(conf), "--output-format=json-pretty", "--detailed"], capsys)
    assert rc == 0 and "slot_status" in json.loads(out)["slots"][0]["efi.0"]


def test_mark(tmp_path: Path, efi: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_conf(tmp_path)
    rc, out, _ = run(["status", "mark-active", "other", "-c", str(conf)], capsys)
    assert (rc, out) == (0, "rauc status: marked slot(s) efi.0 as active\n")
    assert json.loads(efi.read_text())["next"] == "0001"
    kf = KeyFile.load(tmp_path / "data" / "central.raucs")
    assert kf.get_string("slot.efi.0", "activated.count") == "1"
    rc, out, _ = run(["status", "mark-bad", "-c", str(conf)], capsys)
    assert (rc, out) == (0, "rauc status: marked slot(s) efi.1 as bad\n")
    assert json.loads(efi.read_text())["order"] == ["0001"]
    rc, out, _ = run(["status", "mark-good", "booted", "-c", str(conf)], capsys)
    assert (rc, out) == (0, "rauc status: marked slot(s) efi.1 as good\n")
    assert json.loads(efi.read_text())["order"] == ["0002", "0001"]
    rc, out, _ = run(["status", "mark-good", "efi.0", "-c", str(conf)], capsys)
    assert (rc, out) == (0, "rauc status: marked slot(s) efi.0 as good\n")
    # a child slot is no boot slot: RAUC does not find it (pyrauc marked its parent before)
    before = json.loads(efi.read_text())
    rc, _, err = run(["status", "mark-active", "rootfs.0", "-c", str(conf)], capsys)
    assert (rc, err) == (1, "rauc mark: No slot with class rootfs and name rootfs.0 found\n")
    after = json.loads(efi.read_text())
    assert (after["order"], after.get("next")) == (before["order"], before.get("next"))
    rc, _, err = run(["status", "mark-good", "nope.0", "-c", str(conf)], capsys)
    assert (rc, err) == (1, "rauc mark: No slot with class nope and name nope.0 found\n")
    rc, _, err = run(["status", "mark-good", "nope", "-c", str(conf)], capsys)
    assert (rc, err) == (1, "rauc mark: Invalid slot name format: 'nope'\n")


def test_prevent_late_fallback(tmp_path: Path, efi: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Marking the booted slot good also marks the other slot of its class bad (RAUC's option)."""
    conf = write_conf(tmp_path)
    rc, out, _ = run(["status", "mark-good", "-c", str(conf)], capsys)
    assert rc == 0 and json.loads(efi.read_text())["order"] == ["0002", "0001"]     # default: A stays
    rc, out, err = run(["status", "mark-good", "-c", str(conf), "-C", "system:prevent-late-fallback=true"], capsys)
    assert (rc, out) == (0, "rauc status: marked slot(s) efi.1 as good\n"), err
    assert json.loads(efi.read_text())["order"] == ["0002"]                         # efi.0 is out
    rc, out, _ = run(["status", "mark-good", "other", "-c", str(conf), "-C", "system:prevent-late-fallback=true"],
                     capsys)
    assert rc == 0 and json.loads(efi.read_text())["order"] == ["0001", "0002"]     # only for the booted slot


def test_status_errors(tmp_path: Path, efi: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_conf(tmp_path)
    assert run(["status", "frobnicate", "-c", str(conf)], capsys)[2] == "unknown subcommand frobnicate\n"
    assert run(["status", "mark-good", "a", "b", "-c", str(conf)], capsys)[2] == "Too many arguments\n"
    rc, _, err = run(["status", "-c", str(tmp_path / "none.conf")], capsys)
    assert rc == 1 and err.startswith("Failed to initialize context: Failed to load system config")
    rc, _, err = run(["status", "-c", str(conf), "-C", "system:bootloader"], capsys)
    assert err == "Failed to initialize context: Error in parsing override: Missing '='\n"
    rc, out, _ = run(["status", "-c", str(conf), "-C", "system:compatible=Other", "--output-format=shell"], capsys)
    assert out.startswith("RAUC_SYSTEM_COMPATIBLE='Other'\n")


def test_write_slot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_conf(tmp_path, bootloader="noop")
    image = tmp_path / "image.vfat"
    image.write_bytes(b"x" * 8192)
    (tmp_path / "efi1.img").write_bytes(b"\0" * 16384)
    rc, out, err = run(["write-slot", "-c", str(conf), "efi.1", str(image)], capsys)
    assert (rc, out) == (0, "Slot written successfully\n"), err
    assert (tmp_path / "efi1.img").read_bytes()[:8192] == b"x" * 8192
    big = tmp_path / "big.img"
    big.write_bytes(b"y" * 32768)
    rc, _, err = run(["write-slot", "-c", str(conf), "efi.1", str(big)], capsys)
    assert rc == 1 and err.startswith("Image size (32768 bytes) exceeds size of slot")
    rc, _, err = run(["write-slot", "-c", str(conf), "rootfs.1", str(image)], capsys)
    assert err == "Reject writing to readonly slot\n"
    rc, _, err = run(["write-slot", "-c", str(conf), "foo.0", str(image)], capsys)
    assert err.startswith("No matching slot found for given slot name 'foo.0'.\nAvailable slots:\n")
    rc, _, err = run(["write-slot", "-c", str(conf), "efi.1", str(tmp_path / "x.unknown")], capsys)
    assert err == f"Unable to map extension of file '{tmp_path / 'x.unknown'}' to known image type\n"
    rc, _, err = run(["write-slot", "-c", str(conf), "efi.1", str(tmp_path / "nope.img")], capsys)
    assert (rc, err) == (1, f"Error opening file {tmp_path / 'nope.img'}: No such file or directory\n")


def test_main_cli(tmp_path: Path, efi: Path) -> None:
    """Through the real entry point (global options before the command)."""
    conf = write_conf(tmp_path)
    r = subprocess.run([sys.executable, "-m", "pyrauc", "-c", str(conf), "status", "--output-format=shell"],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert "RAUC_SYSTEM_BOOTED_BOOTNAME='system1'" in r.stdout


def _report_with_status() -> SystemReport:
    """Two A/B root slots (B installed and active), a child, a slot without bootname."""
    installed = SlotStatus(bundle_compatible="T", bundle_version="2", status="ok", checksum_sha256="ab" * 32,
                           checksum_size=4096, installed_timestamp="2026-01-02T03:04:05Z", installed_count=1,
                           activated_timestamp="2026-01-02T03:04:06Z", activated_count=2)
    child = SlotStatus(bundle_compatible="T", status="ok", installed_timestamp="2026-01-02T03:04:05Z",
                       installed_count=1)
    report = SystemReport("T", None, "A", "rootfs.1")
    report.slots = [
        SlotReport("boot.0", "boot", "/dev/b0", "raw", "inactive", status=SlotStatus()),
        SlotReport("rootfs.0", "rootfs", "/dev/r0", "ext4", "booted", bootname="A", description="Root A",
                   boot_status="good", status=SlotStatus()),
        SlotReport("rootfs.1", "rootfs", "/dev/r1", "ext4", "inactive", bootname="B", boot_status="bad",
                   status=installed),
        SlotReport("appfs.1", "appfs", "/dev/a1", "raw", "inactive", parent="rootfs.1", status=child),
    ]
    return report


def test_detailed_formats_as_rauc() -> None:
    """rauc 1.8's shapes (tests/interop has no device to run it on): json-glib's "slot_status" only
    with what is recorded ("bundle" with its compatible always), shell with every key ('0' for an
    unset number), readable with 1.8's layout."""
    report = _report_with_status()
    data = status_dict(report, detailed=True)
    assert data["variant"] == ""
    slots = {name: v for entry in data["slots"] for name, v in entry.items()}
    assert slots["boot.0"]["slot_status"] == {"bundle": {"compatible": None}}
    assert slots["rootfs.1"]["slot_status"] == {
        "bundle": {"compatible": "T", "version": "2"}, "checksum": {"sha256": "ab" * 32, "size": 4096},
        "installed": {"timestamp": "2026-01-02T03:04:05Z", "count": 1},
        "activated": {"timestamp": "2026-01-02T03:04:06Z", "count": 2}, "status": "ok"}
    assert slots["appfs.1"]["slot_status"] == {
        "bundle": {"compatible": "T"}, "installed": {"timestamp": "2026-01-02T03:04:05Z", "count": 1},
        "status": "ok"}
    shell = format_shell(report, detailed=True).splitlines()
    for line in ("RAUC_SLOT_STATUS_CHECKSUM_SIZE_1='0'", "RAUC_SLOT_STATUS_INSTALLED_COUNT_1='0'",
                 "RAUC_SLOT_STATUS_ACTIVATED_COUNT_1='0'", "RAUC_SLOT_STATUS_STATUS_1=''",
                 "RAUC_SLOT_STATUS_ACTIVATED_COUNT_4='0'", "RAUC_SLOT_STATUS_INSTALLED_COUNT_4='1'",
                 "RAUC_SLOT_STATUS_CHECKSUM_SIZE_3='4096'", "RAUC_SLOT_STATUS_ACTIVATED_COUNT_3='2'"):
        assert line in shell
    text = format_readable(report, detailed=True)
    assert text.endswith(
        "\u23fa \x1b[1m[rootfs.1]\x1b[0m (/dev/r1, ext4, inactive\x1b[0m)\n"
        "\tbootname: \x1b[34mB\x1b[0m\n\tboot status: \x1b[31mbad\x1b[0m\n"
        "      slot status:\n          bundle:\n              compatible=T\n              version=2\n"
        f"          checksum:\n              sha256={'ab' * 32}\n              size=4096\n"
        "          installed:\n              timestamp=2026-01-02T03:04:05Z\n              count=1\n"
        "          activated:\n              timestamp=2026-01-02T03:04:06Z\n              count=2\n"
        "          status=ok\n"
        "    \x1b[1m[appfs.1]\x1b[0m (/dev/a1, raw, inactive\x1b[0m)\n"
        "      slot status:\n          bundle:\n              compatible=T\n"
        "          installed:\n              timestamp=2026-01-02T03:04:05Z\n              count=1\n"
        "          status=ok\n\n\n")
    assert text.startswith(
        "=== System Info ===\nCompatible:  T\nVariant:     \nBooted from: rootfs.0 (A)\n\n=== Bootloader ===\n"
        "Activated: rootfs.1 (B)\n\n=== Slot States ===\n  \x1b[1m[boot.0]\x1b[0m (/dev/b0, raw, inactive\x1b[0m)\n"
        "      slot status:\n          bundle:\n              compatible=(null)\n\n"
        "\u25cb \x1b[32m\x1b[32m\x1b[1m[rootfs.0]\x1b[0m (/dev/r0, ext4, \x1b[1mbooted\x1b[0m)\n"
        "\tbootname: \x1b[34mA\x1b[0m\n\tdescription: Root A\n\tboot status: \x1b[32mgood\x1b[0m\n")
    report.primary = None
    assert "Activated: (null) ((null))\n" in format_readable(report, detailed=False)
