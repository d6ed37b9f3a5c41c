"""Shell helpers for lab tests: everything goes through SSH commands and the ``rauc`` CLI.

Nothing here knows whether the target is QEMU or a board. Whether it runs pyrauc or C RAUC only
matters for options C rauc 1.8 lacks: ``rauc_flavour`` tells them apart from ``rauc --version``
(the ``target_rauc`` fixture) and ``needs_confopt`` skips on C rauc 1.8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

# RAUC's bundle mount prefix (pyrauc: /mnt/rauc; Debian's rauc.service: --mount=/run/rauc, in its own
# mount namespace, MountFlags=slave) and dm names: nothing of these may be left after an install
LEFTOVER_CHECK = (
    "(grep -E ' /mnt/rauc| /run/rauc/' /proc/mounts || true); "
    "(for p in $(pidof rauc 2>/dev/null); do "
    "grep -E ' /mnt/rauc| /run/rauc/' /proc/$p/mounts 2>/dev/null; done; true); "
    "(dmsetup ls 2>/dev/null | grep -E '^rauc-' || true); "
    "(losetup -a 2>/dev/null || true)"
)


def sh(ssh: Any, cmd: str, timeout: int = 120) -> str:
    """Run CMD on the target over SSH; fail on a non-zero exit; return stdout."""
    out: list[str] = ssh.run_check(cmd, timeout=timeout)
    return "\n".join(out)


def run(ssh: Any, cmd: str, timeout: int = 120) -> tuple[str, str, int]:
    """Run CMD; return (stdout, stderr, exit code) without failing."""
    stdout, stderr, code = ssh.run(cmd, timeout=timeout)
    return "\n".join(stdout), "\n".join(stderr), int(code)


def cmdline(ssh: Any) -> list[str]:
    return sh(ssh, "cat /proc/cmdline").split()


def booted_bootname(ssh: Any) -> str | None:
    for arg in cmdline(ssh):
        if arg.startswith("rauc.slot="):
            return arg.split("=", 1)[1]
    return None


@dataclass
class EfiState:
    """What `efibootmgr` shows: entries by label, BootNext, BootOrder, BootCurrent."""

    entries: dict[str, str]        # label -> "0001"
    boot_next: str | None
    boot_order: list[str]
    boot_current: str | None

    def label_of(self, number: str | None) -> str | None:
        for label, num in self.entries.items():
            if num == number:
                return label
        return None

    @property
    def first_slot_in_order(self) -> str | None:
        """Label of the first BootOrder entry that is a slot (A or B)."""
        for num in self.boot_order:
            label = self.label_of(num)
            if label in ("A", "B"):
                return label
        return None


def efi_state(ssh: Any) -> EfiState:
    text = sh(ssh, "efibootmgr")
    entries: dict[str, str] = {}
    boot_next = current = None
    order: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^Boot([0-9A-Fa-f]{4})\*?\s+([^\t]+?)\s*(?:\t|$)", line)
        if m:
            entries.setdefault(m.group(2), m.group(1).upper())
        elif line.startswith("BootNext:"):
            boot_next = line.split(":", 1)[1].strip().upper()
        elif line.startswith("BootOrder:"):
            order = [x.strip().upper() for x in line.split(":", 1)[1].split(",") if x.strip()]
        elif line.startswith("BootCurrent:"):
            current = line.split(":", 1)[1].strip().upper()
    return EfiState(entries, boot_next, order, current)


def rauc_status_shell(ssh: Any) -> dict[str, str]:
    """`rauc status --output-format=shell` as a dict (values unquoted)."""
    out = sh(ssh, "rauc status --output-format=shell", timeout=300)
    result: dict[str, str] = {}
    for line in out.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            result[key.strip()] = value.strip().strip("'\"")
    return result


def leftovers(ssh: Any) -> str:
    """Mounts under /mnt/rauc, rauc-* dm nodes and loop devices left on the target ('' if none)."""
    return sh(ssh, LEFTOVER_CHECK).strip()


PYRAUC = "pyrauc"
C_RAUC_18 = "rauc 1.8"


def rauc_flavour(version_output: str) -> str:
    """'pyrauc' or 'rauc X.Y' (C RAUC) from the target's `rauc --version` output."""
    text = version_output.strip()
    if text.startswith("pyrauc") or "compatible with rauc" in text:
        return PYRAUC
    m = re.match(r"^rauc (\d+\.\d+)", text)
    return f"rauc {m.group(1)}" if m else text


def needs_confopt(target_rauc: str, what: str) -> None:
    """Skip on C rauc 1.8: it has no -C/--confopt, and its install runs in rauc.service (client options
    do not reach it), so a test that overrides system.conf per call cannot run there."""
    if target_rauc == C_RAUC_18:
        pytest.skip(f"rauc 1.8 has no -C/--confopt (a later addition) and installs via rauc.service: {what}")
