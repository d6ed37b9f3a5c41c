"""End-to-end tests of ``status`` / ``mark-*`` / ``write-slot`` through the CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyrauc import cli
from pyrauc.keyfile import KeyFile
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
    assert out.startswith("=== System Info ===\nCompatible:  Test Platform\nVariant:     \n"
                          "Booted from: efi.1 (system1)\n\n=== Bootloader ===\nActivated: efi.0 (system0)\n\n"
                          "=== Slot States ===\nx [efi.0] (/dev/null, vfat, inactive)\n\tbootname: system0\n")
    assert "o [efi.1] (" in out and "    [rootfs.1] (" in out
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
