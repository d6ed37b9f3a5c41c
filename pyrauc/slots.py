"""Slots: the runtime view of the configured slots (state, mount point, hierarchy).

A :class:`Slot` wraps its :class:`~pyrauc.config.SlotConfig` and knows its parent object. The
booted slot's group (everything sharing its root slot) is ``active`` (the booted one ``booted``),
all other slots are ``inactive``. :func:`determine_target_group` selects the install targets like
RAUC: one inactive, writable slot per root class; child slots follow their parents.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyrauc.errors import RaucError

if TYPE_CHECKING:
    from pyrauc.config import SlotConfig, SystemConfig

BOOTED = "booted"
ACTIVE = "active"
INACTIVE = "inactive"
EXTERNAL = "_external_"


class SlotError(RaucError):
    """A slot could not be found or selected."""


@dataclass(eq=False)
class Slot:
    """One slot of the system."""

    config: SlotConfig
    parent: Slot | None = None
    state: str = INACTIVE
    mount_point: str | None = None       # where it is mounted externally (e.g. "/" when booted)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def sclass(self) -> str:
        return self.config.sclass

    @property
    def index(self) -> int:
        return self.config.index

    @property
    def device(self) -> str:
        return self.config.device

    @property
    def type(self) -> str:
        return self.config.type

    @property
    def bootname(self) -> str | None:
        return self.config.bootname

    @property
    def readonly(self) -> bool:
        return self.config.readonly

    @property
    def mountable(self) -> bool:
        return self.config.mountable

    @property
    def root(self) -> Slot:
        """The topmost parent (the slot itself if it has no parent)."""
        slot = self
        while slot.parent is not None:
            slot = slot.parent
        return slot

    @property
    def is_active(self) -> bool:
        return self.state in (BOOTED, ACTIVE)

    def __repr__(self) -> str:
        return f"Slot({self.name!r}, {self.state})"


def build_slots(config: SystemConfig) -> dict[str, Slot]:
    """Slot objects for all configured slots, sorted by name, parents linked."""
    slots = {name: Slot(config=sc) for name, sc in sorted(config.slots.items())}
    for slot in slots.values():
        if slot.config.parent is not None:
            slot.parent = slots[slot.config.parent]
    return slots


def _realpath(path: str) -> str:
    return os.path.realpath(path) if path.startswith("/") else path


def find_by_bootname(slots: dict[str, Slot], bootname: str) -> Slot | None:
    for slot in slots.values():
        if slot.bootname is not None and slot.bootname == bootname:
            return slot
    return None


def find_by_device(slots: dict[str, Slot], device: str) -> Slot | None:
    want = _realpath(device)
    for slot in slots.values():
        if slot.device == device or _realpath(slot.device) == want:
            return slot
    return None


def determine_slot_states(slots: dict[str, Slot], bootname: str | None) -> Slot | None:
    """Set every slot's state from the booted ``bootname``; return the booted slot.

    ``bootname`` is a bootname, a device path, ``"_external_"`` or ``"/dev/nfs"`` (no booted slot).
    """
    for slot in slots.values():
        slot.state = INACTIVE
    if bootname is None:
        raise SlotError("Could not find any root device or rauc slot information in /proc/cmdline")
    booted = find_by_bootname(slots, bootname) or find_by_device(slots, bootname)
    if booted is None:
        if bootname in (EXTERNAL, "/dev/nfs"):
            return None
        raise SlotError(f"Did not find booted slot (matching '{bootname}')")
    root = booted.root
    for slot in slots.values():
        if slot is booted:
            slot.state = BOOTED
        elif slot.root is root:
            slot.state = ACTIVE
    return booted


def root_classes(slots: Iterable[Slot]) -> list[str]:
    classes: list[str] = []
    for slot in slots:
        if slot.parent is None and slot.sclass not in classes:
            classes.append(slot.sclass)
    return classes


def determine_target_group(slots: dict[str, Slot]) -> dict[str, Slot]:
    """Map slot class -> target slot (one inactive root slot per class, children follow)."""
    targets: dict[str, Slot] = {}
    roots: list[Slot] = []
    for sclass in root_classes(slots.values()):
        candidates = [s for s in slots.values() if s.parent is None and s.sclass == sclass
                      and s.state == INACTIVE and not s.readonly]
        if candidates:
            candidates.sort(key=lambda s: s.index)
            targets[sclass] = candidates[0]
            roots.append(candidates[0])
    for slot in slots.values():
        if slot.parent is not None and slot.root in roots and not slot.readonly:
            targets.setdefault(slot.sclass, slot)
    if not targets:
        raise SlotError("Could not determine target group")
    return targets


def other_boot_slots(slots: dict[str, Slot], booted: Slot) -> list[Slot]:
    """The boot slots of ``booted``'s class other than ``booted`` itself (RAUC's "other")."""
    return [s for s in slots.values() if s.parent is None and s.sclass == booted.sclass
            and s is not booted and s.bootname is not None]


def resolve_identifier(slots: dict[str, Slot], booted: Slot | None, identifier: str) -> list[Slot]:
    """The boot slots ``booted``, ``other`` or a slot name stands for (``rauc status mark-*``, D-Bus
    ``Mark``), with RAUC's errors. ``other`` is every boot slot of the booted slot's class but the
    booted one (several on an A/B/C system); a name is ``<class>.<index>`` of a slot without parent
    (a child slot is no boot slot), and it needs a bootname."""
    if identifier == "booted":
        if booted is None:
            raise SlotError("Did not find booted slot")
        return [booted]
    if identifier == "other":
        if booted is None:
            raise SlotError("Did not find booted slot needed to find another bootable slot of the same class")
        others = other_boot_slots(slots, booted.root)
        if not others:
            raise SlotError("No other bootable slot of the same class found")
        return others
    parts = identifier.split(".")
    if len(parts) != 2:
        raise SlotError(f"Invalid slot name format: '{identifier}'")
    slot = slots.get(identifier)
    if slot is None or slot.parent is not None or slot.sclass != parts[0]:
        raise SlotError(f"No slot with class {parts[0]} and name {identifier} found")
    if slot.bootname is None:
        raise SlotError(f"Slot {identifier} has no bootname set")
    return [slot]
