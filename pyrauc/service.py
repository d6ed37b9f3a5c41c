"""The RAUC D-Bus service (RAUC's src/service.c): ``rauc service``.

The service owns ``de.pengutronix.rauc`` on the system bus (the session bus with
``DBUS_STARTER_BUS_TYPE=session``, see :mod:`pyrauc.bus`) and exports the interface
``de.pengutronix.rauc.Installer`` at ``/``:

* methods ``InstallBundle(s, a{sv})``, ``Install(s)`` (deprecated), ``InspectBundle(s, a{sv}) -> a{sv}``,
  ``Info(s) -> (s, s)`` (deprecated), ``Mark(s, s) -> (s, s)``, ``GetSlotStatus() -> a(sa{sv})``,
  ``GetArtifactStatus() -> aa{sv}`` and ``GetPrimary() -> s``;
* read-only properties ``Operation``, ``LastError``, ``Progress`` ``(isi)``, ``Compatible``,
  ``Variant``, ``SystemVersion`` and ``BootSlot``, each change sent at once as its own
  ``PropertiesChanged``;
* the signal ``Completed(i)`` after every installation (0 success, 1 failure).

Every method first refuses to run while an installation runs ("Already processing a different
method" for InstallBundle, "already processing a different method" for the others). An
installation runs in a thread: ``InstallBundle`` sets Operation to ``installing`` and returns at
once; the thread resets LastError, reports each step as Progress, sets LastError to the reason
of a failure, then Completed is emitted and Operation goes back to ``idle``. A client that goes
away changes nothing of that. Unknown keys in the argument dictionaries (or known keys with a
wrong type) are refused with "Unsupported key: <key>". Method errors carry RAUC's text as GLib's
``G_IO_ERROR_FAILED_HANDLED``; calls with a wrong signature, unknown methods and property writes
get GDBus's errors and texts, as from RAUC.

At start-up the service determines the slot states (failing with "Failed to determine slot
states: ..."), logs the boot or service event (:mod:`pyrauc.eventlog`): with a central status
file a new kernel boot_id is a boot event ("Booted into <slot> (<bootname>)") and is stored, the
same boot_id is "Service restarted"; without one, "Service started". Then it owns the name and,
if ``[autoinstall] path`` names an existing bundle, installs it. SIGTERM stops it ("stopping
service", exit 0) after a running installation has finished. system.conf is read once: a change
on disk is only warned about.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast import DBusError, Message, MessageType, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusStr
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_method, dbus_property, dbus_signal

from pyrauc import eventlog, report, status
from pyrauc.access import BundleAccess, is_url
from pyrauc.bus import (
    BUS_NAME,
    ERROR_FAILED,
    ERROR_INVALID_ARGS,
    ERROR_UNKNOWN_METHOD,
    INTERFACE,
    OBJECT_PATH,
    PROPERTIES,
    bus_label,
    bus_type,
    to_vardict,
)
from pyrauc.config import SystemConfig
from pyrauc.context import Context, create_context, update_mount_points
from pyrauc.errors import RaucError
from pyrauc.eventlog import EventLog
from pyrauc.mark import MARK_ACTIVE, MARK_BAD, MARK_GOOD, mark_run
from pyrauc.slots import EXTERNAL
from pyrauc.stream import StreamOptions

if TYPE_CHECKING:   # pyrauc.install (cryptography, asn1crypto) is imported by the first installation
    from pyrauc.install import InstallArgs

log = logging.getLogger(__name__)

VarDict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
Progress = Annotated[list[Any], DBusSignature("(isi)")]
StrPair = Annotated[list[str], DBusSignature("ss")]
SlotStatusArray = Annotated[list[list[Any]], DBusSignature("a(sa{sv})")]
VarDictArray = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
Int32 = Annotated[int, DBusSignature("i")]
NoResult = Annotated[None, DBusSignature("")]

#: the methods and their input signatures (GDBus checks them before a handler runs)
METHODS: dict[str, str] = {
    "InstallBundle": "sa{sv}", "Install": "s", "InspectBundle": "sa{sv}", "Info": "s", "Mark": "ss",
    "GetSlotStatus": "", "GetArtifactStatus": "", "GetPrimary": "",
}
PROPERTY_NAMES: tuple[str, ...] = ("Operation", "LastError", "Progress", "Compatible", "Variant", "SystemVersion",
                                   "BootSlot")
#: InstallBundle's argument keys and their types
INSTALL_KEYS: dict[str, str] = {
    "ignore-compatible": "b", "ignore-version-limit": "b", "transaction-id": "s", "require-manifest-hash": "s",
    "tls-cert": "s", "tls-key": "s", "tls-ca": "s", "tls-no-verify": "b", "http-headers": "as",
}
#: InspectBundle's argument keys (access to a streamed bundle only)
INSPECT_KEYS: dict[str, str] = {k: INSTALL_KEYS[k] for k in ("tls-cert", "tls-key", "tls-ca", "tls-no-verify",
                                                              "http-headers")}
MARK_STATES: dict[str, str] = {"good": MARK_GOOD, "bad": MARK_BAD, "active": MARK_ACTIVE}
BUSY_INSTALL = "Already processing a different method"
BUSY = "already processing a different method"
CONFIG_CHANGED = ("System configuration file changed on disk! Still using old configuration! "
                  "Please restart the rauc service.")


class ServiceError(RaucError):
    """The service could not start or lost its bus."""


@dataclass(frozen=True)
class ServiceOptions:
    """``rauc service`` and its options."""

    config: SystemConfig
    override_boot_slot: str | None = None
    handler_args: str | None = None
    keyring: str | None = None
    mountprefix: str | None = None


def failed(message: str) -> DBusError:
    """A method error as RAUC sends it (G_IO_ERROR_FAILED_HANDLED with the text)."""
    return DBusError(ERROR_FAILED, message)


def parse_args(args: dict[str, Variant], allowed: dict[str, str]) -> dict[str, Any]:
    """The known keys of an argument dictionary; "Unsupported key: <key>" for anything else
    (a known key with a wrong type is not taken, so it is refused the same way)."""
    rest = dict(args)
    values: dict[str, Any] = {}
    for key, signature in allowed.items():
        value = rest.get(key)
        if value is not None and value.signature == signature:
            values[key] = value.value
            del rest[key]
    if rest:
        raise failed(f"Unsupported key: {next(iter(rest))}")
    return values


class Installer(ServiceInterface):
    """``de.pengutronix.rauc.Installer`` on ``/``."""

    def __init__(self, opts: ServiceOptions, ctx: Context, out: Callable[[str], None]) -> None:
        super().__init__(INTERFACE)
        self.opts = opts
        self.config = opts.config
        self.ctx = ctx
        self.out = out
        self.loop = asyncio.get_running_loop()
        self.busy = False
        self.worker: threading.Thread | None = None
        self._operation = "idle"
        self._last_error = ""
        self._progress: list[Any] = [0, "", 0]
        self._config_stamp = _stamp(self.config)

    # -- properties ----------------------------------------------------------------------------
    @dbus_property(access=PropertyAccess.READ)
    def Operation(self) -> DBusStr:
        return self._operation

    @dbus_property(access=PropertyAccess.READ)
    def LastError(self) -> DBusStr:
        return self._last_error

    @dbus_property(access=PropertyAccess.READ)
    def Progress(self) -> Progress:
        return self._progress

    @dbus_property(access=PropertyAccess.READ)
    def Compatible(self) -> DBusStr:
        return self.config.compatible

    @dbus_property(access=PropertyAccess.READ)
    def Variant(self) -> DBusStr:
        return self.ctx.variant or ""

    @dbus_property(access=PropertyAccess.READ)
    def SystemVersion(self) -> DBusStr:
        return self.ctx.system_info.get("RAUC_SYSTEM_VERSION", "")

    @dbus_property(access=PropertyAccess.READ)
    def BootSlot(self) -> DBusStr:
        return self.ctx.bootname or ""

    def _set(self, name: str, value: Any) -> None:
        """Change a property and send its PropertiesChanged at once (one property per signal)."""
        setattr(self, {"Operation": "_operation", "LastError": "_last_error", "Progress": "_progress"}[name], value)
        self.emit_properties_changed({name: value})

    @dbus_signal()
    def Completed(self, result: int) -> Int32:
        return result

    # -- methods -------------------------------------------------------------------------------
    @dbus_method()
    def InstallBundle(self, source: DBusStr, args: VarDict) -> NoResult:
        self._install_bundle(source, args)

    @dbus_method()
    def Install(self, source: DBusStr) -> NoResult:
        log.info("Using deprecated 'Install' D-Bus Method (replaced by 'InstallBundle')")
        self._install_bundle(source, {})

    def _install_bundle(self, source: str, args: VarDict) -> None:
        from pyrauc.install import InstallArgs

        self.out(f"input bundle: {source}")
        if self.busy:
            raise failed(BUSY_INSTALL)
        values = parse_args(args, INSTALL_KEYS)
        self._warn_changed_config()
        self.start_install(source, InstallArgs(
            ignore_compatible=bool(values.get("ignore-compatible", False)),
            ignore_version_limit=bool(values.get("ignore-version-limit", False)),
            transaction_id=values.get("transaction-id"), require_manifest_hash=values.get("require-manifest-hash"),
            handler_args=self.opts.handler_args, keyring_path=self.opts.keyring, mountprefix=self.opts.mountprefix,
            streaming=self._stream_options(values)))

    @dbus_method()
    def InspectBundle(self, source: DBusStr, args: VarDict) -> VarDict:
        from pyrauc.info import to_dict

        self._check_idle()
        values = parse_args(args, INSPECT_KEYS)
        self.out(f"bundle: {source}")
        return to_vardict(to_dict(self._open(source, self._stream_options(values)).manifest))

    @dbus_method()
    def Info(self, bundle: DBusStr) -> StrPair:
        log.info("Using deprecated 'Info' D-Bus Method (replaced by 'InspectBundle')")
        self._check_idle()
        self.out(f"bundle: {bundle}")
        mf = self._open(bundle).manifest
        return [mf.compatible or "", mf.version or ""]

    @dbus_method()
    def Mark(self, state: DBusStr, slot_identifier: DBusStr) -> StrPair:
        self._check_idle()
        try:
            if state not in MARK_STATES:
                raise RaucError(f"unknown subcommand {state}")
            self._refresh()
            slots, message = mark_run(self.ctx, MARK_STATES[state], slot_identifier)
        except RaucError as e:
            log.info("rauc mark: %s", e)
            raise failed(str(e)) from e
        log.info("rauc mark: %s", message)
        return [" ".join(slot.name for slot in slots), message]

    @dbus_method()
    def GetSlotStatus(self) -> SlotStatusArray:
        self._check_idle()
        self._warn_changed_config()
        try:
            self._refresh()
        except OSError as e:
            raise failed(f"Failed to update mount points: {e}") from e
        got = report.from_context(self.ctx, detailed=True, warn=log.info)
        return [[slot.name, {k: Variant(sig, v) for k, (sig, v) in report.slot_to_dbus(slot).items()}]
                for slot in got.slots]

    @dbus_method()
    def GetArtifactStatus(self) -> VarDictArray:
        self._check_idle()
        repos: list[dict[str, Variant]] = []
        for repo in self.config.artifacts.values():
            entry = {"name": Variant("s", repo.name), "path": Variant("s", repo.path), "type": Variant("s", repo.type)}
            if repo.description is not None:
                entry["description"] = Variant("s", repo.description)
            if repo.parent_class is not None:
                entry["parent-class"] = Variant("s", repo.parent_class)
            entry["artifacts"] = Variant("aa{sv}", [])      # pyrauc installs no artifacts yet
            repos.append(entry)
        return repos

    @dbus_method()
    def GetPrimary(self) -> DBusStr:
        self._check_idle()
        try:
            primary = self.ctx.backend.get_primary()
        except RaucError as e:
            raise failed(f"Failed getting primary slot: {e}\n") from e
        return primary.name if primary is not None else ""

    # -- helpers -------------------------------------------------------------------------------
    def _check_idle(self) -> None:
        if self.busy:
            raise failed(BUSY)

    def _refresh(self) -> None:
        update_mount_points(self.ctx.slots)

    def _warn_changed_config(self) -> None:
        if _stamp(self.config) != self._config_stamp:
            log.warning(CONFIG_CHANGED)

    def _stream_options(self, values: dict[str, Any]) -> StreamOptions:
        """The D-Bus tls-*/http-headers arguments over system.conf's [streaming]."""
        return StreamOptions.build(self.config.streaming, tls_cert=values.get("tls-cert"),
                                   tls_key=values.get("tls-key"), tls_ca=values.get("tls-ca"),
                                   tls_no_verify=bool(values.get("tls-no-verify", False)),
                                   headers=list(values.get("http-headers", [])))

    def _open(self, source: str, streaming: StreamOptions | None = None) -> Any:
        """Open a bundle to inspect it and close it again (a URL: through the helper, as the sandbox user)."""
        try:
            access = BundleAccess.build(self.config, keyring=self.opts.keyring, streaming=streaming)
            if is_url(source):
                access = access.with_info_headers(system_info=self.ctx.system_info, variant=self.ctx.variant)
            with access.open(source, sandboxed=True) as bundle:
                return bundle
        except RaucError as e:
            raise failed(str(e)) from e

    def gdbus_checks(self, msg: Message) -> Message | None:
        """Answer what GDBus answers before a handler runs: wrong signatures, unknown methods,
        unknown or written properties (dbus-fast's own texts differ)."""
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if msg.interface == INTERFACE:
            if msg.path != OBJECT_PATH:
                return Message.new_error(msg, ERROR_UNKNOWN_METHOD,
                                         f"Object does not exist at path \u201c{msg.path}\u201d")
            expected = METHODS.get(msg.member or "")
            if expected is None:
                return Message.new_error(msg, ERROR_UNKNOWN_METHOD, f"No such method \u201c{msg.member}\u201d")
            if msg.signature != expected:
                return Message.new_error(msg, ERROR_INVALID_ARGS,
                                         f"Type of message, \u201c({msg.signature})\u201d, "
                                         f"does not match expected type \u201c({expected})\u201d")
        elif msg.interface == PROPERTIES and msg.path == OBJECT_PATH and msg.body and msg.body[0] == INTERFACE:
            if msg.member in ("Get", "Set") and len(msg.body) >= 2 and isinstance(msg.body[1], str):
                name = msg.body[1]
                if name not in PROPERTY_NAMES:
                    return Message.new_error(msg, ERROR_INVALID_ARGS, f"No such property \u201c{name}\u201d")
                if msg.member == "Set":
                    return Message.new_error(msg, ERROR_INVALID_ARGS, f"Property \u201c{name}\u201d is not writable")
        return None

    # -- installation --------------------------------------------------------------------------
    def start_install(self, source: str, args: InstallArgs) -> None:
        """Operation=installing, then the installation in a thread; returns at once."""
        self.busy = True
        self._set("Operation", "installing")
        self.worker = threading.Thread(target=self._install_thread, args=(source, args), name="install")
        self.worker.start()

    def _install_thread(self, source: str, args: InstallArgs) -> None:
        from pyrauc.install import install

        def call(fn: Callable[..., None], *values: Any) -> None:
            self.loop.call_soon_threadsafe(fn, *values)

        call(self._set, "LastError", "")
        log.info("installing %s: started", source)
        error: str | None = None
        try:
            update_mount_points(self.ctx.slots)
            install(source, args, config=self.config, context=self.ctx,
                    progress=lambda line: log.debug("installing %s: %s", source, line),
                    on_step=lambda pct, msg, depth: call(self._set, "Progress", [pct, msg, depth]),
                    notify=lambda message: log.info("installing %s: %s", source, message))
        except RaucError as e:
            error = str(e)
        except Exception as e:   # a bug must not leave the service busy forever
            log.exception("installing %s", source)
            error = f"{type(e).__name__}: {e}"
        if error is not None:
            log.info("installing %s: %s", source, error)
        log.info("installing %s: finished", source)
        call(self._finish, source, error)

    def _finish(self, source: str, error: str | None) -> None:
        if error is not None:
            self._set("LastError", error)
            log.info("installing `%s` failed: 1", source)
        else:
            log.info("installing `%s` succeeded", source)
        self.Completed(0 if error is None else 1)
        self._set("Operation", "idle")
        self.busy = False


def _stamp(config: SystemConfig) -> tuple[int, int] | None:
    """What tells a changed system.conf: its modification time and size."""
    if config.path is None:
        return None
    try:
        st = os.stat(config.path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def log_startup_event(ctx: Context) -> None:
    """Boot detection through the central status file's boot-id, else "Service started"."""
    config, events = ctx.config, ctx.event_log
    if not config.central_status:
        events.emit(eventlog.service("Service started"))
        return
    boot_id = status.boot_id()
    if status.load_system_status(config).get("boot-id") == boot_id:
        events.emit(eventlog.service("Service restarted"))
        return
    if ctx.booted is not None:
        bundle_hash = status.load_slot_status(config, ctx.booted).bundle_hash
        events.emit(eventlog.booted(ctx.booted.name, ctx.booted.bootname, boot_id, bundle_hash))
    elif ctx.bootname == EXTERNAL:
        events.emit(eventlog.booted_external(boot_id))
    if boot_id is not None:
        try:
            status.save_system_status(config, {"boot-id": boot_id})
        except RaucError as e:
            log.warning("Failed to save boot id: %s", e)


def setup_context(opts: ServiceOptions) -> Context:
    """The service's context: slot states, booted slot, variant, event log."""
    try:
        return create_context(opts.config, override_boot_slot=opts.override_boot_slot, mountprefix=opts.mountprefix,
                              event_log=EventLog.from_config(opts.config))
    except RaucError as e:
        raise ServiceError(f"Failed to determine slot states: {e}") from e


async def serve(opts: ServiceOptions, out: Callable[[str], None]) -> None:
    """Run the service until SIGTERM (returns) or until the bus is lost (ServiceError)."""
    # SIGTERM/SIGINT are ours before the name is on the bus: a client that sees the service and
    # stops it at once must get a clean exit, not the CLI's interrupted-command path
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ctx = setup_context(opts)
    log_startup_event(ctx)
    label = bus_label()
    try:
        bus = await MessageBus(bus_type=bus_type()).connect()
    except (OSError, DBusError, ValueError) as e:
        log.warning("Connection to the %s bus can't be made for %s: %s", label, BUS_NAME, e)
        raise ServiceError("Failed to execute service: generic failure (check logs)") from e
    installer = Installer(opts, ctx, out)
    bus.add_message_handler(installer.gdbus_checks)
    bus.export(OBJECT_PATH, installer)
    try:
        reply = await bus.request_name(BUS_NAME)
    except DBusError as e:
        reply = None
        log.warning("%s", e.text)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        log.warning("Failed to obtain name %s on %s bus", BUS_NAME, label)
        bus.disconnect()
        raise ServiceError("Failed to execute service: generic failure (check logs)")
    log.debug("Obtained name %s on %s bus", BUS_NAME, label)
    autoinstall = opts.config.autoinstall.get("path")
    if autoinstall and os.path.exists(autoinstall):
        from pyrauc.install import InstallArgs

        log.info("Autoinstall bundle '%s' found", autoinstall)
        installer.start_install(autoinstall, InstallArgs(handler_args=opts.handler_args, keyring_path=opts.keyring,
                                                         mountprefix=opts.mountprefix))
    stopped = asyncio.ensure_future(stop.wait())
    lost = asyncio.ensure_future(bus.wait_for_disconnect())
    await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
    if lost.done():
        stopped.cancel()
        log.warning("Lost connection to the %s bus", label)
        raise ServiceError("Failed to execute service: generic failure (check logs)")
    lost.cancel()
    log.info("stopping service")
    worker = installer.worker
    if worker is not None and worker.is_alive():
        log.info("waiting for the running installation to finish")
        await asyncio.to_thread(worker.join)
    bus.disconnect()


def run_service(opts: ServiceOptions, out: Callable[[str], None]) -> int:
    """``rauc service``: 0 after SIGTERM; ServiceError when it cannot start or loses the bus."""
    asyncio.run(serve(opts, out))
    return 0
