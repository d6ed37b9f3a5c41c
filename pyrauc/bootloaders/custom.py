"""The custom backend: the script from ``[handlers] bootloader-custom-backend``.

Called as ``<script> get-primary`` (prints a bootname), ``set-primary <bootname>``,
``get-state <bootname>`` (prints good|bad), ``set-state <bootname> good|bad`` and
``get-current`` (prints a bootname).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyrauc.bootloaders.base import BackendBase

if TYPE_CHECKING:
    from pyrauc.config import SystemConfig
    from pyrauc.slots import Slot


class CustomBackend(BackendBase):
    name = "custom"

    def __init__(self, config: SystemConfig, slots: dict[str, Slot]) -> None:
        super().__init__(config, slots)
        self.script = config.handlers.bootloader_custom_backend

    def call(self, *args: str) -> str:
        if not self.script:
            raise self.error("No custom bootloader backend script configured ([handlers] bootloader-custom-backend)")
        return self.run([self.script, *args]).strip()

    def get_state(self, slot: Slot) -> bool:
        out = self.call("get-state", self.bootname(slot))
        if out not in ("good", "bad"):
            raise self.error(f"Unexpected state '{out}' from custom backend")
        return out == "good"

    def set_state(self, slot: Slot, good: bool) -> None:
        self.call("set-state", self.bootname(slot), "good" if good else "bad")

    def get_primary(self) -> Slot | None:
        out = self.call("get-primary")
        slot = self.slot_by_bootname(out)
        if slot is None:
            raise self.error(f"Unknown primary bootname '{out}'")
        return slot

    def set_primary(self, slot: Slot) -> None:
        self.call("set-primary", self.bootname(slot))

    def get_current(self) -> str | None:
        out = self.call("get-current")
        return out or None
