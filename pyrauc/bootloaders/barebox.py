"""The barebox backend: ``barebox-state`` variables ``bootstate.<bootname>.priority`` and
``bootstate.<bootname>.remaining_attempts`` (``-n <barebox-statename>``, ``-i <barebox-dtbpath>``).

mark-active gives X priority 20 (other enabled slots 10) and ``boot-attempts-primary`` attempts;
mark-good resets the attempts to ``boot-attempts``; mark-bad sets priority and attempts to 0.
A slot is good when its priority and attempts are > 0; the primary is the good slot with the
highest priority.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyrauc.bootloaders.base import BackendBase, tool

if TYPE_CHECKING:
    from pyrauc.config import SystemConfig
    from pyrauc.slots import Slot

PRIMARY_PRIO = 20
DEFAULT_PRIO = 10


class BareboxBackend(BackendBase):
    name = "barebox"

    def __init__(self, config: SystemConfig, slots: dict[str, Slot], command: str | None = None) -> None:
        super().__init__(config, slots)
        self.command = [command or tool("barebox-state")]
        if config.barebox_statename:
            self.command += ["-n", config.barebox_statename]
        if config.barebox_dtbpath:
            self.command += ["-i", config.barebox_dtbpath]

    def get(self, bootname: str) -> tuple[int, int]:
        out = self.run([*self.command, "-g", f"bootstate.{bootname}.priority",
                        "-g", f"bootstate.{bootname}.remaining_attempts"]).split()
        if len(out) != 2:
            raise self.error(f"Unexpected output of barebox-state for {bootname}")
        try:
            return int(out[0]), int(out[1])
        except ValueError as e:
            raise self.error(f"Unexpected output of barebox-state for {bootname}") from e

    def set(self, values: dict[str, int]) -> None:
        args: list[str] = []
        for key, value in values.items():
            args += ["-s", f"bootstate.{key}={value}"]
        self.run([*self.command, *args])

    def get_state(self, slot: Slot) -> bool:
        prio, left = self.get(self.bootname(slot))
        return prio > 0 and left > 0

    def set_state(self, slot: Slot, good: bool) -> None:
        bn = self.bootname(slot)
        if good:
            self.set({f"{bn}.remaining_attempts": self.config.boot_attempts})
        else:
            self.set({f"{bn}.priority": 0, f"{bn}.remaining_attempts": 0})

    def get_primary(self) -> Slot | None:
        best: tuple[int, Slot] | None = None
        for slot in self.boot_slots():
            prio, left = self.get(self.bootname(slot))
            if prio > 0 and left > 0 and (best is None or prio > best[0]):
                best = (prio, slot)
        if best is None:
            raise self.error("Unable to find primary boot slot")
        return best[1]

    def set_primary(self, slot: Slot) -> None:
        values: dict[str, int] = {}
        for other in self.boot_slots():
            if other is slot:
                continue
            prio, _ = self.get(self.bootname(other))
            if prio > 0:
                values[f"{other.bootname}.priority"] = DEFAULT_PRIO
        bn = self.bootname(slot)
        values[f"{bn}.priority"] = PRIMARY_PRIO
        values[f"{bn}.remaining_attempts"] = self.config.boot_attempts_primary
        self.set(values)
