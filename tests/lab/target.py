"""The lab target as a labgrid driver: ``RaucTargetDriver``, RAUC's view of a device under test.

The driver binds to a CommandProtocol and a FileTransferProtocol (on the lab: the SSHDriver, which
has the highest priority for both) and knows nothing else: not whether the target is QEMU or a
board, nor how it was booted. Every public method is a labgrid step (the step log and
``--lg-colored-steps`` show them) and needs the driver active: the strategy re-activates it after
reboots and restores. Env files load it with ``imports: [tests.lab.target]``.

Whether the target runs pyrauc or C RAUC only matters for options C rauc 1.8 lacks:
``rauc_flavour`` tells them apart from ``rauc --version`` (the ``target_rauc`` fixture) and
``needs_confopt`` skips on C rauc 1.8.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import attr
import pytest
from labgrid import step, target_factory
from labgrid.driver import Driver

# RAUC's bundle mount prefix (pyrauc: /mnt/rauc; Debian's rauc.service: --mount=/run/rauc, in its own
# mount namespace, MountFlags=slave) and dm names: nothing of these may be left after an install
LEFTOVER_CHECK = (
    "(grep -E ' /mnt/rauc| /run/rauc/' /proc/mounts || true); "
    "(for p in $(pidof rauc 2>/dev/null); do "
    "grep -E ' /mnt/rauc| /run/rauc/' /proc/$p/mounts 2>/dev/null; done; true); "
    "(dmsetup ls 2>/dev/null | grep -E '^rauc-' || true); "
    "(losetup -a 2>/dev/null || true)"
)
KEY_PATH = "/etc/rauc/crypt-key.pem"      # system.conf's [encryption] key= and cert= on the lab image
CERT_PATH = "/etc/rauc/crypt-cert.pem"
INSTALL_TIMEOUT = 1800                    # TCG on two busy cores: a full rootfs through dm-verity + dm-crypt

PYRAUC = "pyrauc"
C_RAUC_18 = "rauc 1.8"


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

    @classmethod
    def parse(cls, text: str) -> EfiState:
        """Parse plain `efibootmgr` output."""
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
        return cls(entries, boot_next, order, current)


def rauc_flavour(version_output: str) -> str:
    """'pyrauc' or 'rauc X.Y' (C RAUC) from the target's `rauc --version` output."""
    text = version_output.strip()
    if "pyrauc" in text:   # "pyrauc X (compatible with rauc Y)", or as rauc: "rauc Y (pyrauc X)"
        return PYRAUC
    m = re.match(r"^rauc (\d+\.\d+)", text)
    return f"rauc {m.group(1)}" if m else text


def needs_confopt(target_rauc: str, what: str) -> None:
    """Skip on C rauc 1.8: it has no -C/--confopt, and its install runs in rauc.service (client options
    do not reach it), so a test that overrides system.conf per call cannot run there."""
    if target_rauc == C_RAUC_18:
        pytest.skip(f"rauc 1.8 has no -C/--confopt (a later addition) and installs via rauc.service: {what}")


def parse_shell_vars(text: str) -> dict[str, str]:
    """`KEY=value` lines (``--output-format=shell``) as a dict, values unquoted."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            result[key.strip()] = value.strip().strip("'\"")
    return result


@target_factory.reg_driver
@attr.s(eq=False)
class RaucTargetDriver(Driver):
    """RAUC on the target: install, status, EFI boot state, decryption keys, leftovers of an install."""

    bindings = {  # noqa: RUF012 (labgrid reads a plain class attribute)
        "command": "CommandProtocol",
        "files": "FileTransferProtocol",
    }
    command: Any
    files: Any

    def on_activate(self) -> None:
        pass

    def on_deactivate(self) -> None:
        pass

    # -- commands ----------------------------------------------------------------------------
    @Driver.check_active
    @step(args=["cmd"])
    def sh(self, cmd: str, timeout: int = 120) -> str:
        """Run CMD; fail (ExecutionError) on a non-zero exit; return stdout."""
        out: list[str] = self.command.run_check(cmd, timeout=timeout)
        return "\n".join(out)

    @Driver.check_active
    @step(args=["cmd"])
    def run(self, cmd: str, timeout: int = 120) -> tuple[str, str, int]:
        """Run CMD; return (stdout, stderr, exit code) without failing."""
        stdout, stderr, code = self.command.run(cmd, timeout=timeout)
        return "\n".join(stdout), "\n".join(stderr), int(code)

    @Driver.check_active
    @step(args=["local", "remote"])
    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        """Copy the host file LOCAL to REMOTE on the target."""
        self.files.put(str(local), remote)

    # -- the booted system -------------------------------------------------------------------
    def cmdline(self) -> list[str]:
        """The running kernel's command line."""
        return self.sh("cat /proc/cmdline").split()

    @Driver.check_active
    @step(result=True)
    def booted_bootname(self) -> str | None:
        """The ``rauc.slot=`` of the running kernel (the UKI's fixed command line)."""
        for arg in self.cmdline():
            if arg.startswith("rauc.slot="):
                return arg.split("=", 1)[1]
        return None

    @Driver.check_active
    @step(result=True)
    def marker(self) -> str | None:
        """The lab image's per-slot marker /etc/lab-slot-marker (None on boards without it)."""
        return self.sh("cat /etc/lab-slot-marker 2>/dev/null || true").strip() or None

    @Driver.check_active
    @step()
    def efi_state(self) -> EfiState:
        """Boot entries, BootNext, BootOrder and BootCurrent as `efibootmgr` shows them."""
        return EfiState.parse(self.sh("efibootmgr"))

    @Driver.check_active
    @step(args=["label"], result=True)
    def boot_entry(self, label: str) -> str:
        """Number (e.g. '0002') of the EFI boot entry labelled LABEL; AssertionError if there is none."""
        number = self.efi_state().entries.get(label)
        if number is None:
            raise AssertionError(f"no EFI boot entry labelled {label!r}")
        return number

    # -- rauc --------------------------------------------------------------------------------
    @Driver.check_active
    @step(result=True)
    def rauc_flavour(self) -> str:
        """'pyrauc' or 'rauc X.Y' from the target's `rauc --version`."""
        out, err, code = self.run("rauc --version")
        assert code == 0, out + err
        return rauc_flavour(out + err)

    @Driver.check_active
    @step(args=["bundle", "options"])
    def install(self, bundle: str, *, options: str = "", env: str = "",
                timeout: int = INSTALL_TIMEOUT) -> tuple[str, str, int]:
        """`ENV rauc OPTIONS install BUNDLE` (a path on the target); (stdout, stderr, exit code)."""
        cmd = " ".join(part for part in (env.strip(), "rauc", options.strip(), "install", bundle) if part)
        return self.run(cmd, timeout=timeout)

    @Driver.check_active
    @step()
    def status(self) -> dict[str, str]:
        """`rauc status --output-format=shell` as a dict (values unquoted)."""
        return parse_shell_vars(self.sh("rauc status --output-format=shell", timeout=300))

    @Driver.check_active
    @step(args=["key", "cert"])
    def put_keys(self, key: str | os.PathLike[str], cert: str | os.PathLike[str]) -> None:
        """Make KEY/CERT the device's decryption key and certificate (system.conf's [encryption])."""
        self.put(key, KEY_PATH)
        self.put(cert, CERT_PATH)
        self.sh(f"chmod 0600 {KEY_PATH} && sync")

    @Driver.check_active
    @step(result=True)
    def leftovers(self) -> str:
        """Mounts under /mnt/rauc, rauc-* dm nodes and loop devices left on the target ('' if none)."""
        return self.sh(LEFTOVER_CHECK).strip()
