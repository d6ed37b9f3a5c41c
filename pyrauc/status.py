"""Slot status files (RAUC's src/status_file.c).

Central mode: ``<data-directory>/central.raucs`` with one ``[slot.<name>]`` group per slot and a
``[system]`` group (``boot-id``). Per-slot mode: ``/slot.raucs`` inside the slot's file system with
a single ``[slot]`` group. Files are written atomically (temporary file in the same directory,
fsync, rename, fsync of the directory). A slot that is not mounted yet is mounted through
:func:`pyrauc.mount.mount_slot` while its status file is read or written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pyrauc import mount, testpoints
from pyrauc.config import SystemConfig
from pyrauc.errors import KeyFileError, RaucError
from pyrauc.keyfile import KeyFile
from pyrauc.slots import Slot

log = logging.getLogger("pyrauc")

PER_SLOT_FILENAME = "slot.raucs"

#: (key in file, attribute, kind) in the order RAUC writes them; kind "u": an unsigned number
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("bundle.compatible", "bundle_compatible", "s"),
    ("bundle.version", "bundle_version", "s"),
    ("bundle.description", "bundle_description", "s"),
    ("bundle.build", "bundle_build", "s"),
    ("bundle.hash", "bundle_hash", "s"),
    ("status", "status", "s"),
    ("sha256", "checksum_sha256", "s"),
    ("size", "checksum_size", "u"),
    ("installed.transaction", "installed_transaction", "s"),
    ("installed.timestamp", "installed_timestamp", "s"),
    ("installed.count", "installed_count", "u"),
    ("activated.timestamp", "activated_timestamp", "s"),
    ("activated.count", "activated_count", "u"),
)


class StatusError(RaucError):
    """A status file could not be read or written."""


@dataclass
class SlotStatus:
    """The recorded status of one slot."""

    bundle_compatible: str | None = None
    bundle_version: str | None = None
    bundle_description: str | None = None
    bundle_build: str | None = None
    bundle_hash: str | None = None
    status: str | None = None
    checksum_sha256: str | None = None
    checksum_size: int | None = None
    installed_transaction: str | None = None
    installed_timestamp: str | None = None
    installed_count: int = 0
    activated_timestamp: str | None = None
    activated_count: int = 0
    extra: dict[str, str] = field(default_factory=dict)   # unknown keys, preserved

    @classmethod
    def from_keyfile(cls, kf: KeyFile, group: str) -> SlotStatus:
        st = cls()
        if not kf.has_group(group):
            return st
        known = {k for k, _, _ in FIELDS}
        for key, attr, kind in FIELDS:
            if not kf.has_key(group, key):
                continue
            try:
                value: object = kf.get_uint64(group, key) if kind == "u" else kf.get_string(group, key)
            except KeyFileError:
                continue
            setattr(st, attr, value)
        for key in kf.keys(group):
            if key not in known:
                st.extra[key] = kf.get_value(group, key)
        return st

    def to_keyfile(self, kf: KeyFile, group: str) -> None:
        if kf.has_group(group):
            kf.remove_group(group)
        for key, attr, kind in FIELDS:
            value = getattr(self, attr)
            if attr.endswith("_count"):   # counts are written together with their timestamp
                if getattr(self, attr.replace("_count", "_timestamp")) is None:
                    continue
            elif value is None:
                continue
            if kind == "u":
                kf.set_value(group, key, str(int(value)))
            else:
                kf.set_string(group, key, str(value))
        for key, raw in self.extra.items():
            kf.set_value(group, key, raw)


def timestamp(now: datetime | None = None) -> str:
    """ISO 8601 UTC like RAUC: ``2024-09-06T09:51:13Z``."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def write_atomic(path: str | os.PathLike[str], data: str | bytes, pause_point: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync dir).

    ``pause_point``: a :mod:`pyrauc.testpoints` name reached with half of the data written.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if pause_point is not None:
                f.write(raw[:len(raw) // 2])
                f.flush()
                testpoints.reach(pause_point)
                raw = raw[len(raw) // 2:]
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------------------------
# central status file

def _load_keyfile(path: Path) -> KeyFile:
    """A status file; a missing one is empty, and so is one that cannot be read or parsed: as in
    RAUC, a damaged status file costs the recorded status (with a warning), not the service or
    the next update, which writes the file anew."""
    if not path.exists():
        return KeyFile()
    try:
        return KeyFile.load(path)
    except (KeyFileError, OSError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        log.warning("Failed to load status file %s: %s", path, RaucError(reason))
        return KeyFile()


def load_central(config: SystemConfig) -> KeyFile:
    return _load_keyfile(Path(config.statusfile))


def save_central(config: SystemConfig, kf: KeyFile, pause_point: str | None = None) -> None:
    try:
        write_atomic(config.statusfile, kf.to_data(), pause_point)
    except OSError as e:
        raise StatusError(f"Failed to save status file {config.statusfile}: {e.strerror}") from e


# --------------------------------------------------------------------------------------------
# per-slot status file (inside the slot's file system)

@contextlib.contextmanager
def _slot_mounted(config: SystemConfig, slot: Slot, readonly: bool) -> Iterator[Path]:
    """The slot's file system: where it is mounted already, else mounted for the duration."""
    mnt = slot.mount_point or mount.find_mount_point(slot.device)
    if mnt is not None:
        yield Path(mnt)
        return
    if not slot.mountable:
        raise StatusError(f"Slot {slot.name} is not mountable")
    try:
        mounted = mount.mount_slot(slot.device, slot.name, None, mountprefix=config.mountprefix,
                                   read_only=readonly)
    except mount.MountError as e:
        raise StatusError(f"failed to mount slot {slot.name}: {e}") from e
    with mounted as path:
        yield path


# --------------------------------------------------------------------------------------------
# public API

def load_slot_status(config: SystemConfig, slot: Slot) -> SlotStatus:
    """The slot's status (empty status if none recorded or not readable)."""
    if config.central_status:
        st = SlotStatus.from_keyfile(load_central(config), f"slot.{slot.name}")
    else:
        try:
            with _slot_mounted(config, slot, readonly=True) as mnt:
                kf = _load_keyfile(mnt / PER_SLOT_FILENAME)
            st = SlotStatus.from_keyfile(kf, "slot")
        except (RaucError, OSError):
            st = SlotStatus()
    return st


def save_slot_status(config: SystemConfig, slot: Slot, st: SlotStatus, pause_point: str | None = None) -> None:
    """Record ``st`` for ``slot`` (central file or /slot.raucs in the slot)."""
    if config.central_status:
        kf = load_central(config)
        st.to_keyfile(kf, f"slot.{slot.name}")
        save_central(config, kf, pause_point)
        return
    if not slot.mountable and slot.mount_point is None and mount.find_mount_point(slot.device) is None:
        # as RAUC: a raw slot (a kernel, a bootloader, a read-only image) has no file system to
        # keep /slot.raucs in, and installing or marking it is no error for that
        log.debug("Slot %s is not mountable: its status is not saved", slot.name)
        return
    with _slot_mounted(config, slot, readonly=False) as mnt:
        kf = KeyFile()
        st.to_keyfile(kf, "slot")
        try:
            write_atomic(mnt / PER_SLOT_FILENAME, kf.to_data(), pause_point)
        except OSError as e:
            raise StatusError(f"Failed to save status file for slot {slot.name}: {e.strerror}") from e


def update_slot_status(config: SystemConfig, slot: Slot, change: Callable[[SlotStatus], None],
                       pause_point: str | None = None) -> SlotStatus:
    """Load, modify with ``change``, save; returns the new status."""
    st = load_slot_status(config, slot)
    change(st)
    save_slot_status(config, slot, st, pause_point)
    return st


def record_activated(config: SystemConfig, slot: Slot, now: datetime | None = None) -> SlotStatus:
    """``activated.timestamp`` = now, ``activated.count`` += 1."""
    def change(st: SlotStatus) -> None:
        st.activated_timestamp = timestamp(now)
        st.activated_count += 1
    return update_slot_status(config, slot, change)


def load_system_status(config: SystemConfig) -> dict[str, str]:
    """The ``[system]`` group of the central status file (e.g. ``boot-id``)."""
    if not config.central_status:
        return {}
    kf = load_central(config)
    if not kf.has_group("system"):
        return {}
    values: dict[str, str] = {}
    for key in kf.keys("system"):
        try:
            values[key] = kf.get_string("system", key)
        except KeyFileError as e:       # a damaged value is no value (see _load_keyfile)
            log.warning("Failed to load status file %s: %s", config.statusfile, e)
    return values


def save_system_status(config: SystemConfig, values: dict[str, str]) -> None:
    if not config.central_status:
        return
    kf = load_central(config)
    for key, value in values.items():
        kf.set_string("system", key, value)
    save_central(config, kf)
