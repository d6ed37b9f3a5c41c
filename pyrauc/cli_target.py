"""Target-side commands of the CLI: ``status`` (incl. ``mark-good/-bad/-active``) and ``write-slot``.

:func:`register` adds them to the main parser (:mod:`pyrauc.cli`); global options come from the
``common`` parent parser (``-c/--conf``, ``-C/--confopt``, ``--mount``, ``-d/--debug``). Output
follows current RAUC: readable, shell (``RAUC_*='...'``), json and json-pretty.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrauc.cli_common import Command, err, positionals, system_config
from pyrauc.errors import RaucError
from pyrauc.goption import Option

if TYPE_CHECKING:   # the commands import them when they run: --help and usage errors need none
    from pyrauc.config import SystemConfig
    from pyrauc.context import Context
    from pyrauc.report import SlotReport, SystemReport
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
# status output

def _mark_run(ctx: Context, state: str, identifier: str) -> str:
    from pyrauc.mark import mark_run

    return mark_run(ctx, state, identifier)[1]


def _report(ctx: Context, detailed: bool) -> SystemReport:
    from pyrauc.report import from_context

    return from_context(ctx, detailed=detailed, warn=err)


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


# the terminal codes RAUC's readable status writes (always, also into a pipe, as RAUC does)
_BOLD, _GREEN, _RED, _BLUE, _RESET = "\x1b[1m", "\x1b[32m", "\x1b[31m", "\x1b[34m", "\x1b[0m"
_STATUS_INDENT = "      "


def _c(value: str | None) -> str:
    """A C string as printf's %s shows it."""
    return "(null)" if value is None else value


def _readable_status(st: SlotStatus) -> list[str]:
    """The ``slot status:`` block of ``--detailed``: what :func:`_status_json` has, as key=value."""
    pad = _STATUS_INDENT
    lines = [f"{pad}slot status:"]
    for title, values in _status_json(st).items():
        if title == "status":
            lines.append(f"{pad}    status={values}")
            continue
        lines.append(f"{pad}    {title}:")
        lines.extend(f"{pad}        {k}={_c(None if v is None else str(v))}" for k, v in values.items())
    return lines


def format_readable(s: SystemReport, detailed: bool) -> str:
    """RAUC's readable status: slot groups (a root slot, its children indented) separated by blank
    lines; a root slot marked ``⏺`` if it is the bootloader's primary, ``○`` if it has a bootname;
    the booted and active slots' names in green, the booted state in bold, the bootname blue, the
    boot status green (good) or red (bad)."""
    booted = s.booted
    primary = s.slot(s.primary)
    head = ["=== System Info ===",
            f"Compatible:  {s.compatible}",
            f"Variant:     {s.variant or ''}",
            f"Booted from: {_c(booted.name if booted else None)} ({_c(s.bootslot)})",
            "",
            "=== Bootloader ===",
            f"Activated: {_c(primary.name if primary else None)} ({_c(primary.bootname if primary else None)})",
            "",
            "=== Slot States ==="]

    def slot_lines(slot: SlotReport, depth: int) -> list[str]:
        if depth:
            mark = "    " * depth
        else:
            mark = ("\u23fa" if primary is not None and slot.name == primary.name
                    else "\u25cb" if slot.bootname else " ") + " "
        color = (_GREEN if slot.state in ("booted", "active") else "") + (_GREEN if slot.state == "booted" else "")
        state = f"{_BOLD}{slot.state}{_RESET}" if slot.state == "booted" else f"{slot.state}{_RESET}"
        lines = [f"{mark}{color}{_BOLD}[{slot.name}]{_RESET} ({slot.device}, {slot.type}, {state})"]
        if slot.bootname:
            lines.append(f"\tbootname: {_BLUE}{slot.bootname}{_RESET}")
        if slot.description:
            lines.append(f"\tdescription: {slot.description}")
        if slot.mountpoint:
            lines.append(f"\tmounted: {slot.mountpoint}")
        if slot.bootname and slot.boot_status:
            shown = {"good": f"{_GREEN}good{_RESET}", "bad": f"{_RED}bad{_RESET}"}.get(slot.boot_status,
                                                                                    slot.boot_status)
            lines.append(f"\tboot status: {shown}")
        if detailed and slot.status is not None:
            lines.extend(_readable_status(slot.status))
        for child in s.slots:
            if child.parent == slot.name:
                lines.extend(slot_lines(child, depth + 1))
        return lines

    groups = ["\n".join(slot_lines(slot, 0)) + "\n\n" for slot in s.slots if slot.parent is None]
    return "\n".join(head) + "\n" + "".join(groups) + "\n"


def shell_quote(value: str | None) -> str:
    """Like g_shell_quote (single quotes; ' -> '\\'')."""
    return "'" + (value or "").replace("'", "'\\''") + "'"


def format_shell(s: SystemReport, detailed: bool) -> str:
    out: list[str] = []

    def add(key: str, value: Any) -> None:
        out.append(f"{key}={shell_quote(None if value is None else str(value))}")

    add("RAUC_SYSTEM_COMPATIBLE", s.compatible)
    add("RAUC_SYSTEM_VARIANT", s.variant)
    add("RAUC_SYSTEM_BOOTED_BOOTNAME", s.bootslot)
    add("RAUC_BOOT_PRIMARY", s.primary)
    add("RAUC_SYSTEM_SLOTS", " ".join(slot.name for slot in s.slots))
    add("RAUC_SLOTS", " ".join(str(i) for i in range(1, len(s.slots) + 1)))
    for n, slot in enumerate(s.slots, start=1):
        add(f"RAUC_SLOT_STATE_{n}", slot.state)
        add(f"RAUC_SLOT_CLASS_{n}", slot.sclass)
        add(f"RAUC_SLOT_DEVICE_{n}", slot.device)
        add(f"RAUC_SLOT_TYPE_{n}", slot.type)
        add(f"RAUC_SLOT_BOOTNAME_{n}", slot.bootname)
        add(f"RAUC_SLOT_PARENT_{n}", slot.parent)
        add(f"RAUC_SLOT_MOUNTPOINT_{n}", slot.mountpoint)
        add(f"RAUC_SLOT_BOOT_STATUS_{n}", slot.boot_status)
        if detailed and slot.status is not None:
            # every key, as RAUC: an unset string is '', an unset number '0'
            st = slot.status
            for _, prefix, values in _status_fields(st):
                for key, value in values:
                    if key == "count":
                        value = st.installed_count if prefix == "INSTALLED" else st.activated_count
                    elif key == "size" and value is None:
                        value = 0
                    add(f"RAUC_SLOT_STATUS_{prefix}_{key.upper()}_{n}", value)
            add(f"RAUC_SLOT_STATUS_STATUS_{n}", st.status)
    return "\n".join(out) + "\n"


def _status_json(st: SlotStatus) -> dict[str, Any]:
    """A slot status as RAUC's json: "bundle" with its compatible (null if none) and what else is
    known; "checksum", "installed" and "activated" only when recorded; "status" only if set."""
    out: dict[str, Any] = {}
    for title, _, values in _status_fields(st):
        known = {k: v for k, v in values if v is not None}
        if title == "bundle":
            out[title] = {"compatible": st.bundle_compatible, **known}
        elif (title == "checksum" and st.checksum_sha256 is not None) \
                or (title in ("installed", "activated") and "timestamp" in known):
            out[title] = known
    if st.status is not None:
        out["status"] = st.status
    return out


def status_dict(s: SystemReport, detailed: bool) -> dict[str, Any]:
    slots: list[dict[str, Any]] = []
    for slot in s.slots:
        entry: dict[str, Any] = {
            "class": slot.sclass, "device": slot.device, "type": slot.type, "bootname": slot.bootname,
            "state": slot.state, "parent": slot.parent, "mountpoint": slot.mountpoint,
            "boot_status": slot.boot_status,
        }
        if detailed and slot.status is not None:
            entry["slot_status"] = _status_json(slot.status)
        slots.append({slot.name: entry})
    return {"compatible": s.compatible, "variant": s.variant or "", "booted": s.bootslot,
            "boot_primary": s.primary, "slots": slots}


def format_status(s: SystemReport, output_format: str, detailed: bool) -> str:
    """``rauc status`` in one of :data:`FORMATS`."""
    if output_format == "readable":
        return format_readable(s, detailed)
    if output_format == "shell":
        return format_shell(s, detailed)
    # json-glib's style; imported here, not at start-up (it brings the manifest parser)
    from pyrauc import info

    if output_format == "json":
        return info.json_glib(status_dict(s, detailed)) + "\n"
    return info.json_glib_pretty(status_dict(s, detailed), empty=info.JSON_PRETTY_EMPTY) + "\n"


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
    from pyrauc import client

    if client.use_service(args):
        return _status_via_service(args, positional)
    config = system_config(args)
    ctx = _context(args, config)
    if positional:
        try:
            message = _mark_run(ctx, positional[0], positional[1] if len(positional) > 1 else "booted")
        except RaucError as e:
            err(f"rauc mark: {e}")
            return 1
        print(f"rauc status: {message}", flush=True)
        return 0
    s = _report(ctx, args.detailed)
    sys.stdout.write(format_status(s, args.output_format, args.detailed))
    sys.stdout.flush()
    return 0


def _status_via_service(args: argparse.Namespace, positional: list[str]) -> int:
    """``status`` and ``mark-*`` through the D-Bus service (RAUC's service build)."""
    from pyrauc import client

    if positional:
        state = positional[0].removeprefix("mark-")
        try:
            _, message = client.mark(state, positional[1] if len(positional) > 1 else "booted", warn=err)
        except client.MarkRefused as e:
            err(f"rauc mark: {e}")
            return 1
        print(f"rauc status: {message}", flush=True)
        return 0
    s = client.status(warn=err)
    sys.stdout.write(format_status(s, args.output_format, args.detailed))
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

    config = system_config(args)
    slotname, image = positionals(args, "A target slot name must be provided", "An image must be provided")
    from pyrauc.slots import build_slots

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
    try:
        with open(image, "rb"):
            pass
    except OSError as e:
        err(f"Error opening file {image}: {e.strerror}")
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
        err(str(e))     # bare, as RAUC prints the handler's error
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
