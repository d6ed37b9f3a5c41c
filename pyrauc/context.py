"""The runtime context: configuration, slots, bootloader backend, booted slot and system info.

Booted slot detection follows RAUC's ``get_bootname`` (src/context.c):
``--override-boot-slot``; kernel command line ``rauc.external`` / ``root=/dev/nfs`` (external),
``rauc.slot=`` or ``bootchooser.active=``; the backend's current bootname (efi: BootCurrent,
custom: get-current); ``root=`` / ``systemd.verity_root_data=`` with ``PARTLABEL=``,
``PARTUUID=``, ``UUID=`` resolved through ``/dev/disk/by-*`` and then realpath. Paths are
injectable for tests.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pyrauc import mount
from pyrauc.bootloaders import Bootloader, create_backend
from pyrauc.config import SystemConfig
from pyrauc.errors import RaucError
from pyrauc.eventlog import EventLog
from pyrauc.slots import EXTERNAL, Slot, build_slots, determine_slot_states, find_by_device

log = logging.getLogger(__name__)


class ContextError(RaucError):
    """The context could not be set up."""


@dataclass
class Context:
    """Everything target-side commands need."""

    config: SystemConfig
    slots: dict[str, Slot]
    backend: Bootloader
    bootname: str | None                 # what identified the booted slot (RAUC's "bootslot")
    booted: Slot | None
    variant: str | None
    mountprefix: str
    system_info: dict[str, str] = field(default_factory=dict)
    event_log: EventLog = field(default_factory=EventLog)   # [log.*] of system.conf (none by default)

    @property
    def compatible(self) -> str:
        return self.config.compatible


def read_cmdline(path: str | os.PathLike[str] = "/proc/cmdline") -> list[str]:
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _cmdline_value(args: list[str], key: str) -> str | None:
    value = None
    for arg in args:
        if arg.startswith(key + "="):
            value = arg[len(key) + 1:]
    return value


def resolve_root(value: str, disk_root: str | os.PathLike[str] = "/dev/disk") -> str:
    """``PARTUUID=x`` etc. -> device path (realpath when it exists)."""
    for prefix, sub, lower in (("PARTLABEL=", "by-partlabel", False), ("PARTUUID=", "by-partuuid", True),
                               ("UUID=", "by-uuid", True)):
        if value.startswith(prefix):
            ident = value[len(prefix):]
            value = os.path.join(disk_root, sub, ident.lower() if lower else ident)
            break
    return os.path.realpath(value) if value.startswith("/") and os.path.exists(value) else value


def get_bootname(backend: Bootloader | None, cmdline: list[str],
                 disk_root: str | os.PathLike[str] = "/dev/disk") -> str | None:
    """The booted slot's identifier (bootname, device, "_external_"), None if unknown."""
    if "rauc.external" in cmdline:
        return EXTERNAL
    root = _cmdline_value(cmdline, "root")
    if root == "/dev/nfs":
        return EXTERNAL
    for key in ("rauc.slot", "bootchooser.active"):
        value = _cmdline_value(cmdline, key)
        if value:
            return value
    if backend is not None:
        try:
            current = backend.get_current()
        except RaucError as e:
            log.info("Failed to get bootname: %s", e)
            current = None
        if current:
            return current
    for key in ("systemd.verity_root_data", "root"):
        value = _cmdline_value(cmdline, key)
        if value:
            return resolve_root(value, disk_root)
    return None


def run_system_info(handler: str) -> dict[str, str]:
    """Run the ``[handlers] system-info`` handler; its ``RAUC_xxx=value`` lines."""
    try:
        r = subprocess.run([handler], capture_output=True, text=True)
    except OSError as e:
        raise ContextError(f"Failed to execute system-info handler: {e.strerror}") from e
    if r.returncode != 0:
        raise ContextError(f"Failed to execute system-info handler: exit code {r.returncode}")
    result: dict[str, str] = {}
    for line in r.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("RAUC_"):
            result[key] = value
    return result


def determine_variant(config: SystemConfig, dt_compatible: str = "/proc/device-tree/compatible") -> str | None:
    if config.variant_name is not None:
        return config.variant_name
    try:
        if config.variant_file is not None:
            return Path(config.variant_file).read_text().strip()
        if config.variant_dtb:
            return Path(dt_compatible).read_bytes().split(b"\0")[0].decode()
    except OSError as e:
        raise ContextError(f"Failed to read variant: {e.strerror}") from e
    return None


def update_mount_points(slots: dict[str, Slot], *, mountinfo: str = mount.MOUNTINFO,
                        cmdline_path: str | os.PathLike[str] = "/proc/cmdline",
                        disk_root: str | os.PathLike[str] = "/dev/disk") -> None:
    """Where each slot is mounted now (the service refreshes this before every answer)."""
    for slot in slots.values():
        slot.mount_point = mount.find_mount_point(slot.device, mountinfo)
    if mount.mounted_source("/", mountinfo) == "/dev/root":
        # the kernel mounted root= itself: mountinfo only shows /dev/root
        root = _cmdline_value(read_cmdline(cmdline_path), "root")
        rootslot = find_by_device(slots, resolve_root(root, disk_root)) if root else None
        if rootslot is not None and rootslot.mount_point is None:
            rootslot.mount_point = "/"


def create_context(config: SystemConfig, *, override_boot_slot: str | None = None,
                   mountprefix: str | None = None, cmdline_path: str | os.PathLike[str] = "/proc/cmdline",
                   disk_root: str | os.PathLike[str] = "/dev/disk", mountinfo: str = mount.MOUNTINFO,
                   backend: Bootloader | None = None, require_booted: bool = True,
                   event_log: EventLog | None = None) -> Context:
    """Build the context; ContextError("Did not find booted slot ...") unless require_booted=False.

    ``event_log`` is shared by the contexts of one process (the service); default: system.conf's.
    """
    data_dir = config.data_directory
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ContextError(f"Failed to create data directory '{data_dir}': Not a directory")
    slots = build_slots(config)
    backend = backend or create_backend(config, slots)
    if override_boot_slot:
        bootname: str | None = override_boot_slot
    else:
        bootname = get_bootname(backend, read_cmdline(cmdline_path), disk_root)
    booted: Slot | None = None
    try:
        booted = determine_slot_states(slots, bootname)
    except RaucError as e:
        if require_booted:
            raise ContextError(str(e)) from e
    variant = determine_variant(config)
    info: dict[str, str] = {}
    if config.handlers.system_info:
        try:
            info = run_system_info(config.handlers.system_info)
        except ContextError as e:
            log.warning(str(e))
        if "RAUC_SYSTEM_VARIANT" in info:
            variant = info["RAUC_SYSTEM_VARIANT"]
    update_mount_points(slots, mountinfo=mountinfo, cmdline_path=cmdline_path, disk_root=disk_root)
    return Context(config=config, slots=slots, backend=backend, bootname=bootname, booted=booted,
                   variant=variant, mountprefix=mountprefix or config.mountprefix, system_info=info,
                   event_log=event_log if event_log is not None else EventLog.from_config(config))
