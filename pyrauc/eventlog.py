"""The event log (RAUC's src/event_log.c): install, mark, boot and service events in files.

An :class:`Event` is what RAUC sends as a GLib structured log message with the domain
``rauc-event``: its fields in RAUC's order (``MESSAGE``, ``PRIORITY``, ``GLIB_DOMAIN``,
``RAUC_EVENT_TYPE``, ``MESSAGE_ID`` and the event's own fields; events RAUC builds as an array
put ``MESSAGE_ID`` right after ``MESSAGE``). The functions below make RAUC's events with their
messages and MESSAGE_IDs.

An :class:`EventLog` is the set of ``[log.<name>]`` loggers of system.conf. :meth:`EventLog.emit`
logs every event through :mod:`logging` (the normal log: stderr, the journal) and appends it to
each logger that takes its type, formatted ``readable``, ``short``, ``json`` or ``json-pretty``.
Before a write that would grow a file past ``max-size`` the files rotate: ``<f>.<n-1>`` becomes
``<f>.<n>`` down to ``<f>`` becoming ``<f>.1``, keeping ``max-files`` files (``<f>.1`` is made
even with ``max-files=1``, as RAUC does). A logger that cannot open, write or rotate its file
warns once and is deactivated; the operation that caused the event goes on.

The process doing the work writes the log: the service, or ``rauc install`` and ``rauc status
mark-*`` when they run in-process. The event log travels in the :class:`pyrauc.context.Context`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyrauc.config import LOG_EVENT_TYPES, LOG_FORMATS, LogConfig, SystemConfig
from pyrauc.info import json_glib_pretty

log = logging.getLogger(__name__)

DOMAIN = "rauc-event"
PRIORITY = "5"                     # LOG_NOTICE: GLib's G_LOG_LEVEL_MESSAGE
INSTALL, MARK, BOOT, SERVICE, WRITESLOT = "install", "mark", "boot", "service", "writeslot"
TYPES: tuple[str, ...] = LOG_EVENT_TYPES
FORMATS: tuple[str, ...] = LOG_FORMATS
DEFAULT_MAX_FILES = 10

# MESSAGE_IDs of RAUC's journal catalog (data/rauc.catalog)
ID_INSTALL_STARTED = "b05410e8a93345389cd061aab1e9516d"
ID_INSTALL_SUCCEEDED = "0163db5468ac4237b090d28490c301ed"
ID_INSTALL_FAILED = "c48141f7fd49443aafff862b4809168f"
ID_INSTALL_REJECTED = "60bea7e4fea549ccad68af457308b13a"
ID_MARK_ACTIVE = "8b5e7435e1054d86858278e7544fe6da"
ID_MARK_GOOD = "3304e15a7a9a447885eb208ba7ae3a05"
ID_MARK_BAD = "ccb0e584a47043d7a5316994bce77ae5"
ID_BOOTED = "e60e0addd3454cb8b796eae0d497af96"
ID_BOOTED_EXTERNAL = "dd237efdad1945d9b1e471bc2b994532"

#: the fields the readable format prints under the message, with their labels
LABELS: dict[str, str] = {
    "TRANSACTION_ID": "transaction ID", "BOOT_ID": "boot ID", "BUNDLE_HASH": "bundle hash",
    "BUNDLE_VERSION": "bundle version", "SLOT_NAME": "slot", "SLOT_BOOTNAME": "bootname",
}
_INDENT = " " * len("2026-03-15T18:36:08Z: ")


@dataclass(frozen=True)
class Event:
    """One event: its type and every field in RAUC's order (values are strings)."""

    type: str
    fields: tuple[tuple[str, str], ...]

    @property
    def message(self) -> str:
        return dict(self.fields)["MESSAGE"]

    def get(self, key: str) -> str | None:
        return dict(self.fields).get(key)


def _variadic(event_type: str, message: str, *fields: tuple[str, str | None]) -> Event:
    """An event as RAUC sends it with g_log_structured(): MESSAGE, PRIORITY, GLIB_DOMAIN first."""
    head = (("MESSAGE", message), ("PRIORITY", PRIORITY), ("GLIB_DOMAIN", DOMAIN), ("RAUC_EVENT_TYPE", event_type))
    return Event(event_type, head + tuple((k, v or "") for k, v in fields))


def _array(event_type: str, message: str, message_id: str, *fields: tuple[str, str | None]) -> Event:
    """An event as RAUC sends it with g_log_structured_array(): MESSAGE, MESSAGE_ID first."""
    head = (("MESSAGE", message), ("MESSAGE_ID", message_id), ("PRIORITY", PRIORITY), ("GLIB_DOMAIN", DOMAIN),
            ("RAUC_EVENT_TYPE", event_type))
    return Event(event_type, head + tuple((k, v or "") for k, v in fields))


def install_started(transaction: str) -> Event:
    return _variadic(INSTALL, f"Installation {transaction[:8]} started", ("MESSAGE_ID", ID_INSTALL_STARTED),
                     ("TRANSACTION_ID", transaction))


def install_finished(transaction: str, *, error: str | None = None, rejected: bool = False,
                     bundle_hash: str | None = None, description: str | None = None,
                     version: str | None = None) -> Event:
    """``Installation <txn> succeeded``, ``... failed: <error>`` or ``... rejected: <error>``."""
    if error is None:
        message, message_id = f"Installation {transaction[:8]} succeeded", ID_INSTALL_SUCCEEDED
    elif rejected:
        message, message_id = f"Installation {transaction[:8]} rejected: {error}", ID_INSTALL_REJECTED
    else:
        message, message_id = f"Installation {transaction[:8]} failed: {error}", ID_INSTALL_FAILED
    return _array(INSTALL, message, message_id, ("BUNDLE_HASH", bundle_hash), ("BUNDLE_DESCRIPTION", description),
                  ("BUNDLE_VERSION", version), ("TRANSACTION_ID", transaction))


def marked(slot: str, bootname: str | None, state: str, bundle_hash: str | None = None) -> Event:
    """``Marked slot <slot> as good|bad|active``."""
    message_id = {"good": ID_MARK_GOOD, "bad": ID_MARK_BAD, "active": ID_MARK_ACTIVE}[state]
    fields: list[tuple[str, str | None]] = [("MESSAGE_ID", message_id), ("SLOT_NAME", slot),
                                            ("SLOT_BOOTNAME", bootname)]
    if state == "active":
        fields.append(("BUNDLE_HASH", bundle_hash))
    return _variadic(MARK, f"Marked slot {slot} as {state}", *fields)


def booted(slot: str, bootname: str | None, boot_id: str | None, bundle_hash: str | None) -> Event:
    """``Booted into <slot> (<bootname>)``; the bundle hash is "unknown" without a slot status."""
    return _array(BOOT, f"Booted into {slot} ({bootname or ''})", ID_BOOTED, ("SLOT_NAME", slot),
                  ("SLOT_BOOTNAME", bootname), ("BOOT_ID", boot_id), ("BUNDLE_HASH", bundle_hash or "unknown"))


def booted_external(boot_id: str | None) -> Event:
    return _array(BOOT, "Booted from external source", ID_BOOTED_EXTERNAL, ("BOOT_ID", boot_id))


def service(message: str) -> Event:
    """``Service started`` / ``Service restarted``."""
    return _variadic(SERVICE, message)


def writeslot(message: str) -> Event:
    """``Updating slot <name>``."""
    return _variadic(WRITESLOT, message)


# --------------------------------------------------------------------------------------------
# formats

def timestamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_event(event: Event, fmt: str, now: datetime | None = None) -> str:
    """One log entry (ending in a newline) in ``fmt``, one of :data:`FORMATS`."""
    ts = timestamp(now)
    if fmt in ("short", "readable"):
        lines = [f"{ts}: {event.message}"]
        if fmt == "readable":
            lines += [f"{_INDENT}{LABELS[k]}: {v}" for k, v in event.fields if k in LABELS]
        return "\n".join(lines) + "\n"
    obj = {"TS": ts, **dict(event.fields)}
    if fmt == "json":
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"
    if fmt == "json-pretty":
        return json_glib_pretty(obj) + "\n"
    raise ValueError(f"Unknown log format '{fmt}'")


# --------------------------------------------------------------------------------------------
# loggers

@dataclass
class FileLogger:
    """One ``[log.<name>]`` file."""

    name: str
    filename: str
    events: tuple[str, ...] = ("all",)
    format: str = "readable"
    max_size: int | None = None
    max_files: int = DEFAULT_MAX_FILES
    broken: bool = False

    @classmethod
    def from_config(cls, lc: LogConfig) -> FileLogger:
        return cls(lc.name, lc.filename, tuple(lc.events), lc.format, lc.max_size, lc.max_files or DEFAULT_MAX_FILES)

    def wants(self, event: Event) -> bool:
        return not self.broken and ("all" in self.events or event.type in self.events)

    def rotate(self) -> None:
        """``<f>.<n-1>`` -> ``<f>.<n>`` for n = max-files-1 .. 2, then ``<f>`` -> ``<f>.1``."""
        for n in range(self.max_files - 1, 1, -1):
            older = f"{self.filename}.{n - 1}"
            if os.path.exists(older):
                os.replace(older, f"{self.filename}.{n}")
        os.replace(self.filename, f"{self.filename}.1")

    def write(self, entry: str) -> None:
        """Append ``entry``, rotating first if it would grow the file past max-size; warn and
        deactivate this logger on failure."""
        data = entry.encode()
        try:
            size = os.path.getsize(self.filename) if os.path.exists(self.filename) else 0
            if self.max_size is not None and size and size + len(data) > self.max_size:
                try:
                    self.rotate()
                except OSError as e:
                    raise _Broken(f"Failed to rotate log files: {e.strerror}") from e
            try:
                fd = os.open(self.filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise _Broken(f"Failed to open log file for appending: {e.strerror}") from e
            try:
                os.write(fd, data)
            except OSError as e:
                raise _Broken(f"Failed to write log file '{self.filename}': {e.strerror}") from e
            finally:
                os.close(fd)
        except _Broken as e:
            log.warning("%s", e)
            log.warning("Deactivating broken logger %s", self.name)
            self.broken = True


class _Broken(Exception):
    """A logger failed (internal: turned into a warning)."""


@dataclass
class EventLog:
    """The configured loggers; :meth:`emit` is safe to call from several threads."""

    loggers: list[FileLogger] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: SystemConfig | None) -> EventLog:
        if config is None:
            return cls()
        if config.logs and config.data_directory:
            try:   # RAUC's context creates it; relative log files live there
                os.makedirs(config.data_directory, exist_ok=True)
            except OSError as e:
                log.warning("Failed to create data directory '%s': %s", config.data_directory, e.strerror)
        return cls([FileLogger.from_config(lc) for lc in config.logs.values()])

    def emit(self, event: Event, now: datetime | None = None) -> None:
        """Log ``event`` (normal log) and write it to every logger that takes its type."""
        log.info("%s", event.message)
        with self._lock:
            for logger in self.loggers:
                if logger.wants(event):
                    logger.write(format_event(event, logger.format, now))
