"""The bootloader protocol and what the backends share (RAUC's src/bootchooser.c).

A backend works on *boot slots* (slots with a ``bootname``; callers pass the root slot of a slot
group). Errors are :class:`~pyrauc.errors.BootloaderError` prefixed with "<name> backend: ".
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from pyrauc.errors import BootloaderError

if TYPE_CHECKING:
    from pyrauc.config import SystemConfig
    from pyrauc.slots import Slot


class Bootloader(Protocol):
    """What RAUC's bootchooser needs from a backend."""

    name: str

    def get_state(self, slot: Slot) -> bool: ...          # True = good
    def set_state(self, slot: Slot, good: bool) -> None: ...
    def get_primary(self) -> Slot | None: ...
    def set_primary(self, slot: Slot) -> None: ...
    def get_current(self) -> str | None: ...               # booted bootname; None = not supported


class BackendBase:
    """Shared helpers: slot lookup by bootname and running tools."""

    name = "base"

    def __init__(self, config: SystemConfig, slots: dict[str, Slot]) -> None:
        self.config = config
        self.slots = slots

    def error(self, message: str) -> BootloaderError:
        return BootloaderError(f"{self.name} backend: {message}")

    def bootname(self, slot: Slot) -> str:
        if slot.bootname is None:
            raise self.error(f"Slot {slot.name} has no bootname set")
        return slot.bootname

    def boot_slots(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.bootname is not None]

    def slot_by_bootname(self, bootname: str) -> Slot | None:
        for slot in self.boot_slots():
            if slot.bootname == bootname:
                return slot
        return None

    def run(self, argv: Sequence[str], input_: str | None = None) -> str:
        """Run a tool; its stdout, or BootloaderError with its stderr."""
        try:
            r = subprocess.run(list(argv), capture_output=True, text=True, input=input_)
        except OSError as e:
            raise self.error(f"Failed to start {argv[0]}: {e.strerror}") from e
        if r.returncode != 0:
            # RAUC's (GLib's) words, the tool named as RAUC calls it (by name from PATH, a custom
            # backend by its configured path), then the tool's last line of complaint
            name = os.path.basename(argv[0])
            shown = name if shutil.which(name) == argv[0] else argv[0]
            how = (f"Child process killed by signal {-r.returncode}" if r.returncode < 0
                   else f"Child process exited with code {r.returncode}")
            detail = (r.stderr or r.stdout).strip().splitlines()
            raise self.error(f"Failed to run {shown}: {how}" + (f" ({detail[-1].strip()})" if detail else ""))
        return r.stdout

    def get_current(self) -> str | None:
        return None


def tool(name: str) -> str:
    """The path of a tool (plain name if not found; the run then fails with a clear error)."""
    return shutil.which(name) or name
