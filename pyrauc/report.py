"""The system status report behind ``rauc status`` and the service's ``GetSlotStatus``.

A :class:`SystemReport` is what ``rauc status`` prints: the system's compatible, variant and
booted slot, the bootloader's primary slot and one :class:`SlotReport` per slot (its
configuration, state, mount point, boot status and recorded slot status). It is built either in
this process from a :class:`pyrauc.context.Context` (:func:`from_context`) or from the D-Bus
service's replies (:func:`slot_from_dbus`); the service sends each slot as RAUC's dictionary
(:func:`slot_to_dbus`), so both ways print the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyrauc.context import Context
from pyrauc.errors import RaucError
from pyrauc.slots import BOOTED
from pyrauc.status import FIELDS, SlotStatus, load_slot_status

# slot status keys of GetSlotStatus: (D-Bus key, SlotStatus attribute, D-Bus signature): the status
# file's keys, the image size as "t", the counts as "u"
STATUS_KEYS: tuple[tuple[str, str, str], ...] = tuple(
    (key, attr, "t" if key == "size" else ("u" if kind == "u" else "s")) for key, attr, kind in FIELDS)
# slot keys of GetSlotStatus: (D-Bus key, SlotReport attribute); all strings
SLOT_KEYS: tuple[tuple[str, str], ...] = (
    ("class", "sclass"), ("device", "device"), ("type", "type"), ("bootname", "bootname"), ("state", "state"),
    ("description", "description"), ("parent", "parent"), ("mountpoint", "mountpoint"),
    ("boot-status", "boot_status"),
)


@dataclass
class SlotReport:
    """One slot as ``rauc status`` shows it."""

    name: str
    sclass: str
    device: str
    type: str
    state: str
    bootname: str | None = None
    parent: str | None = None
    description: str | None = None
    mountpoint: str | None = None
    boot_status: str | None = None          # "good" | "bad" | "unknown" (slots with a bootname; current
                                            # RAUC: "unknown" if the bootloader cannot tell)
    status: SlotStatus | None = None        # the recorded slot status (None: not loaded)


@dataclass
class SystemReport:
    """The whole ``rauc status``."""

    compatible: str
    variant: str | None
    bootslot: str | None                    # what identified the booted slot (BootSlot)
    primary: str | None                     # the bootloader's primary slot (name)
    slots: list[SlotReport] = field(default_factory=list)

    def slot(self, name: str | None) -> SlotReport | None:
        return next((s for s in self.slots if s.name == name), None)

    @property
    def booted(self) -> SlotReport | None:
        return next((s for s in self.slots if s.state == BOOTED), None)


def from_context(ctx: Context, *, detailed: bool, warn: Callable[[str], None]) -> SystemReport:
    """The report of this system, asking the bootloader; ``detailed`` loads every slot status."""
    primary = None
    try:
        found = ctx.backend.get_primary()
        primary = found.name if found is not None else None
    except RaucError as e:
        warn(f"Failed to get primary: {e}")
    report = SystemReport(ctx.compatible, ctx.variant, ctx.bootname, primary)
    for name, slot in ctx.slots.items():
        good: bool | None = None
        unknown = False
        if slot.bootname is not None:
            try:
                good = ctx.backend.get_state(slot)
            except RaucError as e:
                warn(f"Failed to get boot state of {name}: {e}")
                unknown = True
        report.slots.append(SlotReport(
            name=name, sclass=slot.sclass, device=slot.device, type=slot.type, state=slot.state,
            bootname=slot.bootname, parent=slot.parent.name if slot.parent else None,
            description=slot.config.description, mountpoint=slot.mount_point,
            boot_status="unknown" if unknown else None if good is None else ("good" if good else "bad"),
            status=load_slot_status(ctx.config, slot) if detailed else None))
    return report


def slot_to_dbus(slot: SlotReport) -> dict[str, tuple[str, Any]]:
    """GetSlotStatus' dictionary of one slot: key -> (signature, value), only known values."""
    result: dict[str, tuple[str, Any]] = {}
    for key, attr in SLOT_KEYS:
        value = getattr(slot, attr)
        if value is not None:
            result[key] = ("s", value)
    st = slot.status
    if st is not None:
        for key, attr, sig in STATUS_KEYS:
            value = getattr(st, attr)
            if attr.endswith("_count"):      # counts go with their timestamp
                if getattr(st, attr.replace("_count", "_timestamp")) is None:
                    continue
            elif value is None:
                continue
            result[key] = (sig, value)
    return result


def slot_from_dbus(name: str, values: Mapping[str, Any]) -> SlotReport:
    """A slot from GetSlotStatus' dictionary (variants already unwrapped)."""
    def text(key: str) -> str | None:
        value = values.get(key)
        return None if value is None else str(value)

    st = SlotStatus()
    for key, attr, sig in STATUS_KEYS:
        if key in values:
            setattr(st, attr, int(values[key]) if sig != "s" else str(values[key]))
    boot_status = text("boot-status")
    return SlotReport(
        name=name, sclass=text("class") or "", device=text("device") or "", type=text("type") or "",
        state=text("state") or "", bootname=text("bootname"), parent=text("parent"),
        description=text("description"), mountpoint=text("mountpoint"),
        boot_status=boot_status if boot_status in ("good", "bad", "unknown") else None, status=st)
