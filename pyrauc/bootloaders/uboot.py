"""The uboot backend: ``fw_printenv``/``fw_setenv`` with ``BOOT_ORDER`` and ``BOOT_<bootname>_LEFT``.

``BOOT_ORDER`` is the space separated bootname list (primary first); ``BOOT_X_LEFT`` the remaining
attempts, written in hex like RAUC. mark-good sets ``boot-attempts`` (default 3), mark-bad 0,
mark-active moves X to the front of BOOT_ORDER and sets ``boot-attempts-primary`` (default 3).
A slot is good when it has attempts left; the primary is the first BOOT_ORDER entry with attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyrauc.bootloaders.base import BackendBase, tool
from pyrauc.errors import BootloaderError

if TYPE_CHECKING:
    from pyrauc.config import SystemConfig
    from pyrauc.slots import Slot


class UbootBackend(BackendBase):
    name = "uboot"

    def __init__(self, config: SystemConfig, slots: dict[str, Slot],
                 printenv: Sequence[str] | None = None, setenv: Sequence[str] | None = None) -> None:
        super().__init__(config, slots)
        self.printenv = list(printenv or [tool("fw_printenv")])
        self.setenv = list(setenv or [tool("fw_setenv")])

    def get(self, key: str) -> str | None:
        try:
            return self.run([*self.printenv, "-n", key]).rstrip("\n")
        except BootloaderError as e:
            if "not defined" in str(e):
                return None
            raise

    def set(self, key: str, value: str) -> None:
        self.run([*self.setenv, key, value])

    def _left(self, bootname: str) -> int:
        value = self.get(f"BOOT_{bootname}_LEFT")
        if not value:
            return 0
        try:
            return int(value, 16)
        except ValueError as e:
            raise self.error(f"Invalid value '{value}' of BOOT_{bootname}_LEFT") from e

    def order(self) -> list[str]:
        return (self.get("BOOT_ORDER") or "").split()

    def get_state(self, slot: Slot) -> bool:
        return self._left(self.bootname(slot)) > 0

    def set_state(self, slot: Slot, good: bool) -> None:
        bn = self.bootname(slot)
        self.set(f"BOOT_{bn}_LEFT", f"{self.config.boot_attempts:x}" if good else "0")

    def get_primary(self) -> Slot | None:
        for bn in self.order():
            slot = self.slot_by_bootname(bn)
            if slot is not None and self._left(bn) > 0:
                return slot
        raise self.error("Unable to find primary boot slot")

    def set_primary(self, slot: Slot) -> None:
        bn = self.bootname(slot)
        order = [bn] + [x for x in self.order() if x != bn]
        for other in self.boot_slots():
            if other.bootname is not None and other.bootname not in order:
                order.append(other.bootname)
        self.set(f"BOOT_{bn}_LEFT", f"{self.config.boot_attempts_primary:x}")
        self.set("BOOT_ORDER", " ".join(order))
