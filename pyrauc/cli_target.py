"""Target-side commands of the CLI: ``status`` (incl. ``mark-good/-bad/-active``) and ``write-slot``.

:func:`register` adds them to the main parser (:mod:`pyrauc.cli`); global options come from the
``common`` parent parser (``-c/--conf``, ``-C/--confopt``, ``--mount``, ``-d/--debug``). Output
follows current RAUC: readable, shell (``RAUC_*='...'``), json and json-pretty.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrauc.cli_common import Command, err, positionals, system_config
from pyrauc.errors import RaucError
from pyrauc.goption import Option

if TYPE_CHECKING:    # imported by the commands: --help and usage errors need none of them
    from pyrauc.config import SystemConfig
    from pyrauc.context import Context
    from pyrauc.slots import Slot
    from pyrauc.status import SlotStatus

MARKS = ("mark-good", "mark-bad", "mark-active")
FORMATS = ("readable", "shell", "json", "json-pretty")


def _context(args: argparse.Namespace, config: SystemConfig) -> Context:
    from pyrauc.context import create_context

    try:
        return create_context(config, override_boot_slot=getattr(args, "override_boot_slot", None),
                              mountprefix=getattr(args, "mount", None))
    except RaucError as e:
        raise e.prefixed("Failed to determine slot states: ") from e


# --------------------------------------------------------------------------------------------
# status data

class _SlotInfo:
    def __init__(self, slot: Slot, boot_good: bool | None, status: SlotStatus | None) -> None:
        self.slot = slot
        self.boot_good = boot_good
        self.status = status

    @property
    def boot_status(self) -> str | None:
        if self.boot_good is None:
            return None
        return "good" if self.boot_good else "bad"


class _Status:
    def __init__(self, ctx: Context, detailed: bool) -> None:
        from pyrauc.status import load_slot_status

        self.ctx = ctx
        self.detailed = detailed
        self.primary: Slot | None = None
        try:
            self.primary = ctx.backend.get_primary()
        except RaucError as e:
            err(f"Failed to get primary: {e}")
        self.infos: dict[str, _SlotInfo] = {}
        for name, slot in ctx.slots.items():
            good: bool | None = None
            if slot.bootname is not None:
                try:
                    good = ctx.backend.get_state(slot)
                except RaucError as e:
                    err(f"Failed to get boot state of {name}: {e}")
            st = load_slot_status(ctx.config, slot) if detailed else None
            self.infos[name] = _SlotInfo(slot, good, st)


def _status_fields(st: SlotStatus) -> list[tuple[str, str, list[tuple[str, Any]]]]:
    return [
        ("bundle", "BUNDLE", [("compatible", st.bundle_compatible), ("version", st.bundle_version),
                              ("description", st.bundle_description), ("build", st.bundle_build),
                              ("hash", st.bundle_hash)]),
        ("checksum", "CHECKSUM", [("sha256", st.checksum_sha256), ("size", st.checksum_size)]),
        ("installed", "INSTALLED", [("transaction", st.installed_transaction),
                                    ("timestamp", st.installed_timestamp),
                                    ("count", st.installed_count if st.installed_timestamp else None)]),
        ("activated", "ACTIVATED", [("timestamp", st.activated_timestamp),
                                    ("count", st.activated_count if st.activated_timestamp else None)]),
    ]


def format_readable(s: _Status) -> str:
    ctx = s.ctx
    booted = ctx.booted
    lines = ["=== System Info ===",
             f"Compatible:  {ctx.compatible}",
             f"Variant:     {ctx.variant or ''}",
             f"Booted from: {booted.name if booted else ''} ({ctx.bootname or ''})",
             "",
             "=== Bootloader ===",
             f"Activated: {s.primary.name if s.primary else ''} ({s.primary.bootname if s.primary else ''})",
             "",
             "=== Slot States ==="]

    def append(info: _SlotInfo, indent: str, first: bool) -> None:
        slot = info.slot
        mark = ("x" if slot is s.primary else "o") if first else " "
        lines.append(f"{indent}{mark if first else ''}{' ' if first else ''}"
                     f"[{slot.name}] ({slot.device}, {slot.type}, {slot.state})")
        pad = "\t" + indent
        if slot.bootname:
            lines.append(f"{pad}bootname: {slot.bootname}")
        if slot.mount_point:
            lines.append(f"{pad}mounted: {slot.mount_point}")
        if slot.bootname and info.boot_status:
            lines.append(f"{pad}boot status: {info.boot_status}")
        if s.detailed and info.status is not None:
            lines.append(f"{pad}slot status:")
            for title, _, values in _status_fields(info.status):
                shown = [(k, v) for k, v in values if v is not None]
                if not shown:
                    continue
                lines.append(f"{pad}    {title}:")
                lines.extend(f"{pad}        {k}={v}" for k, v in shown)
            lines.append(f"{pad}    status: {info.status.status or ''}")

    def children(parent: Slot, depth: int) -> None:
        for info in s.infos.values():
            if info.slot.parent is parent:
                append(info, "    " * depth, False)
                children(info.slot, depth + 1)

    for info in s.infos.values():
        if info.slot.parent is None:
            append(info, "", True)
            children(info.slot, 1)
            lines.append("")
    if lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def shell_quote(value: str | None) -> str:
    """Like g_shell_quote (single quotes; ' -> '\\'')."""
    return "'" + (value or "").replace("'", "'\\''") + "'"


def format_shell(s: _Status) -> str:
    ctx = s.ctx
    out: list[str] = []

    def add(key: str, value: Any) -> None:
        out.append(f"{key}={shell_quote(None if value is None else str(value))}")

    add("RAUC_SYSTEM_COMPATIBLE", ctx.compatible)
    add("RAUC_SYSTEM_VARIANT", ctx.variant)
    add("RAUC_SYSTEM_BOOTED_BOOTNAME", ctx.bootname)
    add("RAUC_BOOT_PRIMARY", s.primary.name if s.primary else None)
    names = list(s.infos)
    add("RAUC_SYSTEM_SLOTS", " ".join(names))
    add("RAUC_SLOTS", " ".join(str(i) for i in range(1, len(names) + 1)))
    for n, info in enumerate(s.infos.values(), start=1):
        slot = info.slot
        add(f"RAUC_SLOT_STATE_{n}", slot.state)
        add(f"RAUC_SLOT_CLASS_{n}", slot.sclass)
        add(f"RAUC_SLOT_DEVICE_{n}", slot.device)
        add(f"RAUC_SLOT_TYPE_{n}", slot.type)
        add(f"RAUC_SLOT_BOOTNAME_{n}", slot.bootname)
        add(f"RAUC_SLOT_PARENT_{n}", slot.parent.name if slot.parent else None)
        add(f"RAUC_SLOT_MOUNTPOINT_{n}", slot.mount_point)
        add(f"RAUC_SLOT_BOOT_STATUS_{n}", info.boot_status)
        if s.detailed and info.status is not None:
            for _, prefix, values in _status_fields(info.status):
                for key, value in values:
                    add(f"RAUC_SLOT_STATUS_{prefix}_{key.upper()}_{n}", value)
            add(f"RAUC_SLOT_STATUS_STATUS_{n}", info.status.status)
    return "\n".join(out) + "\n"


def status_dict(s: _Status) -> dict[str, Any]:
    ctx = s.ctx
    slots: list[dict[str, Any]] = []
    for name, info in s.infos.items():
        slot = info.slot
        entry: dict[str, Any] = {
            "class": slot.sclass, "device": slot.device, "type": slot.type, "bootname": slot.bootname,
            "state": slot.state, "parent": slot.parent.name if slot.parent else None,
            "mountpoint": slot.mount_point, "boot_status": info.boot_status,
        }
        if s.detailed and info.status is not None:
            st: dict[str, Any] = {}
            for title, _, values in _status_fields(info.status):
                st[title] = dict(values)
            st["status"] = info.status.status
            entry["slot_status"] = st
        slots.append({name: entry})
    return {"compatible": ctx.compatible, "variant": ctx.variant, "booted": ctx.bootname,
            "boot_primary": s.primary.name if s.primary else None, "slots": slots}


# --------------------------------------------------------------------------------------------
# commands

def cmd_status(args: argparse.Namespace) -> int:
    positional: list[str] = list(args.args or [])
    if len(positional) > 2:
        err("Too many arguments")
        return 1
    if positional and positional[0] not in MARKS:
        err(f"unknown subcommand {positional[0]}")
        return 1
    args.output_format = args.output_format or "readable"
    if args.output_format not in FORMATS:
        err(f"Unknown output format: '{args.output_format}'")
        return 1
    config = system_config(args)
    ctx = _context(args, config)
    if positional:
        from pyrauc import mark

        try:
            message = mark.mark_run(ctx, positional[0], positional[1] if len(positional) > 1 else "booted")
        except RaucError as e:
            err(f"rauc mark: {e}")
            return 1
        print(f"rauc status: {message}", flush=True)
        return 0
    s = _Status(ctx, args.detailed)
    if args.output_format == "readable":
        text = format_readable(s)
    elif args.output_format == "shell":
        text = format_shell(s)
    elif args.output_format == "json":
        text = json.dumps(status_dict(s), separators=(",", ":")) + "\n"
    else:
        text = json.dumps(status_dict(s), indent=2) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def image_type_of(filename: str) -> str | None:
    """The image type RAUC derives from the file name (None if unknown)."""
    from pyrauc.manifest import derive_image_type

    return derive_image_type(os.path.basename(filename))


@dataclass
class _WriteImage:
    """The minimal image description the update handlers need."""

    filename: str
    size: int | None = None
    sha256: str | None = None
    hooks: list[str] = field(default_factory=list)


def cmd_write_slot(args: argparse.Namespace) -> int:
    from pyrauc import handlers
    from pyrauc.install import slot_info
    from pyrauc.slots import build_slots

    config = system_config(args)
    slotname, image = positionals(args, "A target slot name must be provided", "An image must be provided")
    slots = build_slots(config)
    slot = slots.get(slotname)
    if slot is None:
        err(f"No matching slot found for given slot name '{slotname}'.")
        err("Available slots:")
        for name in slots:
            err(f" - {name}")
        return 1
    if slot.readonly:
        err("Reject writing to readonly slot")
        return 1
    itype = args.image_type or image_type_of(image)
    if itype is None:
        err(f"Unable to map extension of file '{image}' to known image type")
        return 1
    info = slot_info(slot)
    job = handlers.ImageJob(image=_WriteImage(os.path.basename(image)), path=Path(image),
                            slot=info, image_type=itype)
    mountprefix = getattr(args, "mount", None) or config.mountprefix
    try:
        method = handlers.precheck(job)
        handlers.install_image(job, handlers.HandlerEnv(mountprefix=mountprefix, bundle_mount=Path("/")),
                               method=method)
    except RaucError as e:
        err(f"Failed to write slot: {e}")
        return 1
    print("Slot written successfully", flush=True)
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("status", "", "Show status", "Show system status", cmd_status, (
        Option("detailed", "show more status details"),
        Option("output-format", "output format", "FORMAT"),
        Option("override-boot-slot", "override auto-detection of booted slot", "BOOTNAME"),
    ), "Status options", extra_summary=(
        "List of status commands (default slot is the currently booted slot):\n"
        "  mark-good [booted | other | <SLOT_NAME>] \tMark the slot as good\n"
        "  mark-bad [booted | other | <SLOT_NAME>] \tMark the slot as bad\n"
        "  mark-active [booted | other | <SLOT_NAME>] \tMark the slot as active")),
    Command("write-slot", "<SLOTNAME> <IMAGE>", "Write image to slot and bypass all update logic",
            "Write image to slot and bypass all update logic", cmd_write_slot,
            (Option("image-type", "image type (default: from the file name)", "TYPE", short="t", aliases=("l",)),),
            "Write slot options"),
)
