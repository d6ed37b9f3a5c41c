"""The grub backend: ``grub-editenv <grubenv>`` with ``ORDER``, ``<bootname>_OK``, ``<bootname>_TRY``.

ORDER is the space separated list of bootnames (primary first). As RAUC's grub backend
(shared/reference/seed-target.md section 5): mark-good sets ``X_OK=1 X_TRY=0``, mark-bad
``X_OK=0 X_TRY=0``, mark-active ``X_OK=1 X_TRY=0 "ORDER=X <the other bootnames>"`` in one
``grub-editenv set``. A slot is good when X is in ORDER with ``X_OK=1`` and ``X_TRY=0`` (a slot GRUB
is trying, or tried and that never got marked good, is bad; one not in ORDER is bad); the primary
is the first ORDER entry that is good. A missing variable is an error, as in RAUC.
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

    def _var(self, env: dict[str, str], name: str) -> str:
        if name not in env:
            raise self.error(f"Variable {name} not set in grub environment")
        return env[name]

    def _good(self, env: dict[str, str], bootname: str) -> bool:
        return self._var(env, f"{bootname}_OK") == "1" and self._var(env, f"{bootname}_TRY") == "0"

    def get_state(self, slot: Slot) -> bool:
        bn = self.bootname(slot)
        env = self.env()
        if bn not in self.order(env):
            return False
        return self._good(env, bn)

    def set_state(self, slot: Slot, good: bool) -> None:
        bn = self.bootname(slot)
        self.set({f"{bn}_OK": "1" if good else "0", f"{bn}_TRY": "0"})

    def get_primary(self) -> Slot | None:
        env = self.env()
        order = self.order(env)
        if not order:
            raise self.error("Variable ORDER is empty")
        for bn in order:
            slot = self.slot_by_bootname(bn)
            if slot is not None and self._good(env, bn):
                return slot
        raise self.error(f"No bootable slot found in ORDER '{env.get('ORDER', '')}'")

    def set_primary(self, slot: Slot) -> None:
        """``X_OK=1 X_TRY=0 ORDER=X <others>``: X first, then every other slot with a bootname."""
        bn = self.bootname(slot)
        order = [bn]
        for other in self.boot_slots():
            if other.bootname is not None and other.bootname not in order:
                order.append(other.bootname)
        self.set({f"{bn}_OK": "1", f"{bn}_TRY": "0", "ORDER": " ".join(order)})
