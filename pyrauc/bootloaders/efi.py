"""The efi backend: EFI boot entries through ``efibootmgr`` (RAUC's src/bootloaders/efi.c).

A slot's entry is the Boot#### entry whose label equals its bootname. mark-active writes
``BootNext`` (``efi-use-bootnext=true``, the default: one-shot boot) or moves the entry to the
front of ``BootOrder``; mark-good moves it to the front of ``BootOrder``; mark-bad removes it from
``BootOrder``. A slot is good when its entry is in ``BootOrder``. The primary is ``BootNext`` if
set, else the first ``BootOrder`` entry of a slot; the current bootname comes from
``BootCurrent``. Missing entries are created with ``--create-only`` when the slot has both
``efi-loader`` and ``efi-cmdline``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyrauc.bootloaders.base import BackendBase, tool

if TYPE_CHECKING:
    from pyrauc.config import SystemConfig
    from pyrauc.slots import Slot

_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})[* ] (.*)$")


@dataclass
class EfiState:
    """What plain ``efibootmgr`` prints."""

    current: str | None = None
    next: str | None = None
    order: list[str] = field(default_factory=list)
    entries: dict[str, str] = field(default_factory=dict)   # number -> label

    @classmethod
    def parse(cls, text: str) -> EfiState | None:
        """None if there is no BootOrder line."""
        st = cls()
        has_order = False
        for line in text.splitlines():
            if line.startswith("BootCurrent:"):
                st.current = line.split(":", 1)[1].strip() or None
            elif line.startswith("BootNext:"):
                st.next = line.split(":", 1)[1].strip() or None
            elif line.startswith("BootOrder:"):
                has_order = True
                value = line.split(":", 1)[1].strip()
                st.order = [x.strip().upper() for x in value.split(",") if x.strip()]
            else:
                m = _ENTRY.match(line)
                if m:
                    st.entries[m.group(1).upper()] = m.group(2).split("\t", 1)[0].rstrip()
        return st if has_order else None

    def number_of(self, label: str) -> str | None:
        """The entry labelled ``label``; of several (``efibootmgr -c`` run twice), the last one
        listed, as RAUC picks it."""
        found = None
        for number, entry_label in self.entries.items():
            if entry_label == label:
                found = number
        return found


class EfiBackend(BackendBase):
    name = "efi"

    def __init__(self, config: SystemConfig, slots: dict[str, Slot], efibootmgr: str | None = None,
                 sysfs_block: str = "/sys/class/block") -> None:
        super().__init__(config, slots)
        self.efibootmgr = efibootmgr or os.environ.get("PYRAUC_EFIBOOTMGR") or tool("efibootmgr")
        self.sysfs_block = sysfs_block

    # -- efibootmgr ------------------------------------------------------------------------
    def read(self) -> EfiState:
        st = EfiState.parse(self.run([self.efibootmgr]))
        if st is None:
            raise self.error("unable to obtain boot order!")
        return st

    def _create_entry(self, slot: Slot) -> None:
        dev = os.path.realpath(slot.device)
        name = os.path.basename(dev)
        disk = dev
        part = "1"
        sysdir = Path(self.sysfs_block) / name
        try:
            part = (sysdir / "partition").read_text().strip()
            parent = os.path.basename(os.path.dirname(os.path.realpath(sysdir)))
            disk = os.path.join(os.path.dirname(dev), parent)
        except OSError as e:
            raise self.error(f"Failed to determine partition number of {dev}: {e.strerror}") from e
        self.run([self.efibootmgr, "--create-only", "--disk", disk, "--part", part,
                  "--label", self.bootname(slot), "--loader", str(slot.config.efi_loader),
                  "--unicode", str(slot.config.efi_cmdline)])

    def entry(self, slot: Slot, st: EfiState | None = None) -> tuple[str, EfiState]:
        """(Boot number, state) of the slot's entry, creating it if configured."""
        st = st or self.read()
        bootname = self.bootname(slot)
        number = st.number_of(bootname)
        if number is None and slot.config.efi_loader and slot.config.efi_cmdline:
            self._create_entry(slot)
            st = self.read()
            number = st.number_of(bootname)
        if number is None:
            raise self.error(f"Did not find efi entry for bootname '{bootname}'!")
        return number, st

    def _set_order(self, order: list[str], st: EfiState) -> None:
        """Write BootOrder; numbers without a Boot#### entry (deleted entries) are left out, as
        RAUC leaves them out (efibootmgr refuses them)."""
        order = [n for n in order if n in st.entries]
        if order:
            self.run([self.efibootmgr, "--bootorder", ",".join(order)])
        else:
            self.run([self.efibootmgr, "--delete-bootorder"])

    # -- protocol -----------------------------------------------------------------------------
    def get_state(self, slot: Slot) -> bool:
        number, st = self.entry(slot)
        return number in st.order

    def set_state(self, slot: Slot, good: bool) -> None:
        number, st = self.entry(slot)
        rest = [n for n in st.order if n != number]
        self._set_order([number, *rest] if good else rest, st)

    def get_primary(self) -> Slot | None:
        st = self.read()
        candidates = ([st.next] if st.next else []) + st.order
        for number in candidates:
            label = st.entries.get(number)
            slot = self.slot_by_bootname(label) if label is not None else None
            if slot is not None:
                return slot
        raise self.error("Did not find primary boot entry!")

    def set_primary(self, slot: Slot) -> None:
        number, st = self.entry(slot)
        if self.config.efi_use_bootnext:
            self.run([self.efibootmgr, "--bootnext", number])
        else:
            self._set_order([number] + [n for n in st.order if n != number], st)

    def get_current(self) -> str | None:
        st = self.read()
        label = st.entries.get(st.current or "")
        if label is None or self.slot_by_bootname(label) is None:
            raise self.error("Current EFI bootentry not known to rauc!")
        return label
