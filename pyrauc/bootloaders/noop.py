"""The noop backend: accepts every request and changes nothing (for testing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyrauc.bootloaders.base import BackendBase

if TYPE_CHECKING:
    from pyrauc.slots import Slot


class NoopBackend(BackendBase):
    name = "noop"

    def get_state(self, slot: Slot) -> bool:
        return True

    def set_state(self, slot: Slot, good: bool) -> None:
        return None

    def get_primary(self) -> Slot | None:
        return None

    def set_primary(self, slot: Slot) -> None:
        return None
