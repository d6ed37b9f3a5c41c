"""Smoke tests of the lab target: login, booted slot, kernel features, slot switch, fallback.

Only shell commands and the ``rauc`` CLI are used, so the suite also runs against a board with
C RAUC. The tests run in file order and share one booted target.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

SKIP_MARK_GOOD = "/data/lab-skip-mark-good"   # honoured by the image's rauc-mark-good.service


def sh(ssh: Any, cmd: str, timeout: int = 120) -> str:
    """Run CMD on the target over SSH; fail on a non-zero exit; return stdout."""
    out: list[str] = ssh.run_check(cmd, timeout=timeout)
    return "\n".join(out)


def cmdline(ssh: Any) -> list[str]:
    return sh(ssh, "cat /proc/cmdline").split()


def marker(ssh: Any) -> str | None:
    """The lab image's per-slot marker (None on boards without it)."""
    out = sh(ssh, "cat /etc/lab-slot-marker 2>/dev/null || true").strip()
    return out or None


def boot_entry(ssh: Any, label: str) -> str:
    """Number (e.g. '0002') of the EFI boot entry labelled LABEL."""
    for line in sh(ssh, "efibootmgr").splitlines():
        m = re.match(r"^Boot([0-9A-Fa-f]{4})\*?\s+([^\t]+?)\s*(?:\t|$)", line)
        if m and m.group(2) == label:
            return m.group(1)
    raise AssertionError(f"no EFI boot entry labelled {label!r}")


def test_login_over_ssh(ssh: Any) -> None:
    assert sh(ssh, "id -un").strip() == "root"
    assert sh(ssh, "echo hello").strip() == "hello"


def test_booted_slot_is_a(ssh: Any) -> None:
    assert "rauc.slot=A" in cmdline(ssh)
    assert marker(ssh) in (None, "A")


def test_rauc_status_reports_a(ssh: Any) -> None:
    stdout, stderr, code = ssh.run("rauc status --output-format=shell", timeout=300)
    text = "\n".join(stdout + stderr)
    if code != 0 and ("No module named" in text or "invalid choice" in text or "Unknown" in text
                      or "not implemented" in text.lower()):
        pytest.xfail(f"`rauc status` is not implemented yet in pyrauc: {text.strip().splitlines()[-1:]}")
    assert code == 0, text
    values = dict(shlex.split(line)[0].split("=", 1) for line in stdout if "=" in line)
    assert values.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "A", text


def test_kernel_has_verity_crypt_loop_squashfs(ssh: Any) -> None:
    sh(ssh, "modprobe -a dm-verity dm-crypt loop squashfs")
    targets = sh(ssh, "dmsetup targets")
    names = {line.split()[0] for line in targets.splitlines() if line.strip()}
    assert {"verity", "crypt"} <= names, targets
    assert "squashfs" in sh(ssh, "cat /proc/filesystems")


def test_bootnext_b_boots_b(strategy: Any) -> None:
    ssh = strategy.ssh
    entry_b = boot_entry(ssh, "B")
    # keep slot B unconfirmed, so the power cycle below must fall back to A
    sh(ssh, f"mkdir -p /data && touch {SKIP_MARK_GOOD} && sync")
    sh(ssh, f"efibootmgr --bootnext {entry_b}")
    seconds = strategy.reboot()
    print(f"reboot to B took {seconds:.1f} s")
    ssh = strategy.ssh
    assert "rauc.slot=B" in cmdline(ssh)
    assert marker(ssh) in (None, "B")
    assert f"BootCurrent: {entry_b}" in sh(ssh, "efibootmgr")


def test_power_cycle_without_mark_good_boots_a(strategy: Any) -> None:
    seconds = strategy.power_cycle()
    print(f"power cycle to A took {seconds:.1f} s")
    ssh = strategy.ssh
    try:
        assert "rauc.slot=A" in cmdline(ssh)
        assert marker(ssh) in (None, "A")
    finally:
        sh(ssh, f"rm -f {SKIP_MARK_GOOD}")
