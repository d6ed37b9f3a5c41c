"""The uboot backend: ``fw_printenv``/``fw_setenv`` with ``BOOT_ORDER`` and ``BOOT_<bootname>_LEFT``.

``BOOT_ORDER`` is the space separated bootname list (primary first); ``BOOT_X_LEFT`` the remaining
attempts, written in hex like RAUC. mark-good sets ``boot-attempts`` (default 3), mark-bad 0,
mark-active moves X to the front of BOOT_ORDER and sets ``boot-attempts-primary`` (default 3).
A slot is good when it has attempts left; the primary is the first BOOT_ORDER entry with attempts.

As RAUC's uboot backend: mark-bad also takes X out of BOOT_ORDER, mark-active keeps BOOT_ORDER's
other entries as they are (it does not add slots that were taken out), and a counter U-Boot's
scripts could not parse reads as its leading hex digits (``strtoul``; none: 0). If BOOT_ORDER cannot
be read at all (fw_printenv fails), mark-bad only clears the counter and mark-active writes X
followed by the other boot slots.
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
        value = (self.get(f"BOOT_{bootname}_LEFT") or "").strip().lower().removeprefix("0x")
        digits = len(value) - len(value.lstrip("0123456789abcdef"))
        return int(value[:digits], 16) if digits else 0

    def order(self) -> list[str]:
        return (self.get("BOOT_ORDER") or "").split()

    def _order_if_readable(self) -> list[str] | None:
        try:
            return self.order()
        except BootloaderError:
            return None

    def get_state(self, slot: Slot) -> bool:
        return self._left(self.bootname(slot)) > 0

    def set_state(self, slot: Slot, good: bool) -> None:
        bn = self.bootname(slot)
        if not good:
            order = self._order_if_readable()
            if order is not None:
                self.set("BOOT_ORDER", " ".join(x for x in order if x != bn))
        self.set(f"BOOT_{bn}_LEFT", f"{self.config.boot_attempts:x}" if good else "0")

    def get_primary(self) -> Slot | None:
        for bn in self.order():
            slot = self.slot_by_bootname(bn)
            if slot is not None and self._left(bn) > 0:
                return slot
        raise self.error("Unable to find primary boot slot")

    def set_primary(self, slot: Slot) -> None:
        bn = self.bootname(slot)
        current = self._order_if_readable()
        if current is None:
            current = [other.bootname for other in self.boot_slots() if other.bootname is not None]
        order = [bn] + [x for x in current if x != bn]
        self.set(f"BOOT_{bn}_LEFT", f"{self.config.boot_attempts_primary:x}")
        self.set("BOOT_ORDER", " ".join(order))
