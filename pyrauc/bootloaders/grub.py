"""The grub backend: ``grub-editenv <grubenv>`` with ``ORDER``, ``<bootname>_OK``, ``<bootname>_TRY``.

ORDER is the space separated list of bootnames (primary first). mark-good sets ``X_OK=1 X_TRY=0``,
mark-bad ``X_OK=0 X_TRY=0``, mark-active moves X to the front of ORDER and sets ``X_OK=1 X_TRY=0``
(matching RAUC's contrib/grub.conf). A slot is good when ``X_OK=1``; the primary is the first ORDER
entry that is OK and not being tried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyrauc.bootloaders.base import BackendBase, tool

if TYPE_CHECKING:
    from pyrauc.config import SystemConfig
    from pyrauc.slots import Slot


class GrubBackend(BackendBase):
    name = "grub"

    def __init__(self, config: SystemConfig, slots: dict[str, Slot], editenv: str | None = None) -> None:
        super().__init__(config, slots)
        self.editenv = editenv or tool("grub-editenv")
        self.envfile = config.grubenv

    def env(self) -> dict[str, str]:
        out = self.run([self.editenv, self.envfile, "list"])
        result: dict[str, str] = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                result[key] = value
        return result

    def set(self, values: dict[str, str]) -> None:
        self.run([self.editenv, self.envfile, "set", *(f"{k}={v}" for k, v in values.items())])

    def order(self, env: dict[str, str]) -> list[str]:
        return env.get("ORDER", "").split()

    def get_state(self, slot: Slot) -> bool:
        return self.env().get(f"{self.bootname(slot)}_OK") == "1"

    def set_state(self, slot: Slot, good: bool) -> None:
        bn = self.bootname(slot)
        self.set({f"{bn}_OK": "1" if good else "0", f"{bn}_TRY": "0"})

    def get_primary(self) -> Slot | None:
        env = self.env()
        for bn in self.order(env):
            slot = self.slot_by_bootname(bn)
            if slot is not None and env.get(f"{bn}_OK") == "1" and env.get(f"{bn}_TRY", "0") == "0":
                return slot
        raise self.error("Unable to find primary boot slot")

    def set_primary(self, slot: Slot) -> None:
        bn = self.bootname(slot)
        order = [bn] + [x for x in self.order(self.env()) if x != bn]
        for other in self.boot_slots():
            if other.bootname not in order and other.bootname is not None:
                order.append(other.bootname)
        self.set({"ORDER": " ".join(order), f"{bn}_OK": "1", f"{bn}_TRY": "0"})
