"""The CLI as a client of the D-Bus service (RAUC's src/main.c in a service build).

Which way a command goes (``rauc install``, ``rauc status``, ``rauc status mark-*``):

* ``PYRAUC_SERVICE=never``: in this process; ``PYRAUC_SERVICE=always``: through the service, as
  a RAUC service build does (a missing service is a D-Bus error then);
* otherwise (``auto``): in this process when the command line overrides the configuration
  (``-C/--confopt``) or names a local-only option (``--override-boot-slot``, ``--handler-args``:
  options of RAUC builds without the service); through the service when the bus (see
  :mod:`pyrauc.bus`) can be reached and ``de.pengutronix.rauc`` has an owner or is activatable
  there (calling it then starts it, as the target's rauc.service is D-Bus activated); else in this
  process. With ``-c/--conf`` only a running service is used, as RAUC's client uses it whatever
  ``-c`` names (``rauc -c /etc/rauc/system.conf status`` on a device is a common script line);
  a service that would only be activated is not, so that ``-c test.conf`` on a build host with
  Debian's rauc installed stays a local run.

Through the service, ``install`` prints what RAUC's client prints from the property changes:
the Operation (``installing``), each Progress as ``"%3d%% <message>"`` (with ``--progress`` on a
terminal also the bar) and a non-empty LastError as ``LastError: <text>``; the ``Completed``
signal ends it: exit 0 "Installing `<path>` succeeded", 1 "Installing `<path>` failed", 2 "D-Bus
error while installing `<path>`" (no bus, a refused call, or "RAUC service disappeared"), 3 on
Ctrl+C ("Ctrl+C pressed. Exiting rauc installation client..." - the service goes on installing).
``--keyring`` cannot reach the service: RAUC's error, exit 1. ``status`` reads GetPrimary, the
properties and GetSlotStatus and prints them like the in-process status; ``mark-*`` then calls
Mark ("rauc status: <message>", or "rauc mark: <error>" and exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from pyrauc.bus import BUS_NAME, INTERFACE, OBJECT_PATH, PROPERTIES, bus_type, unwrap
from pyrauc.errors import RaucError
from pyrauc.report import SystemReport, slot_from_dbus

SERVICE_ENV = "PYRAUC_SERVICE"
CONNECT_TIMEOUT = 5.0
#: command line options only this process can honour: they keep the command in-process
LOCAL_OPTIONS: tuple[str, ...] = ("confopt", "override_boot_slot", "handler_args")
KEYRING_REFUSED = ("The '--keyring' argument is not supported when using the D-Bus service. "
                   "Reconfigure the service instead.")
CTRL_C = ("\nCtrl+C pressed. Exiting rauc installation client...\n"
          "Note that this will not abort the installation running in the rauc service!")
EXIT_DBUS, EXIT_INTERRUPTED = 2, 3
#: what connecting to a bus that is not there raises
CONNECT_ERRORS = (TimeoutError, OSError, DBusError, ValueError)
DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"

Emit = Callable[[str], None]


class ClientError(RaucError):
    """The service could not be reached or refused a call."""


class MarkRefused(ClientError):
    """The service's Mark failed (its text)."""


def _bus_call(member: str, signature: str = "", body: list[Any] | None = None) -> Message:
    return Message(destination=DBUS_NAME, path=DBUS_PATH, interface=DBUS_NAME, member=member,
                   signature=signature, body=body or [])


def _call(member: str, signature: str = "", body: list[Any] | None = None, interface: str = INTERFACE) -> Message:
    return Message(destination=BUS_NAME, path=OBJECT_PATH, interface=interface, member=member,
                   signature=signature, body=body or [])


async def _reply(bus: MessageBus, msg: Message) -> list[Any]:
    """The body of the reply; ClientError with the error's text (the remote prefix stripped)."""
    reply = await bus.call(msg)
    if reply is None:
        raise ClientError("no reply")
    if reply.message_type == MessageType.ERROR:
        raise ClientError(str(reply.body[0]) if reply.body else reply.error_name or "error")
    return list(reply.body)


async def connect() -> MessageBus:
    return await asyncio.wait_for(MessageBus(bus_type=bus_type()).connect(), CONNECT_TIMEOUT)


async def _service_present(*, activatable: bool = True) -> bool:
    """Whether ``de.pengutronix.rauc`` runs on the bus (or, with ``activatable``, can be started)."""
    try:
        bus = await connect()
    except CONNECT_ERRORS:
        return False
    try:
        if (await _reply(bus, _bus_call("NameHasOwner", "s", [BUS_NAME])))[0]:
            return True
        return activatable and BUS_NAME in (await _reply(bus, _bus_call("ListActivatableNames")))[0]
    except ClientError:
        return False
    finally:
        bus.disconnect()


def use_service(args: argparse.Namespace) -> bool:
    """Whether this command goes through the service (see the module docstring)."""
    mode = os.environ.get(SERVICE_ENV, "auto")
    if mode == "never":
        return False
    if mode == "always":
        return True
    if any(getattr(args, name, None) for name in LOCAL_OPTIONS):
        return False
    return asyncio.run(_service_present(activatable=not getattr(args, "conf", None)))


# --------------------------------------------------------------------------------------------
# install

def install_args(*, ignore_compatible: bool, ignore_version_limit: bool, transaction_id: str | None,
                 require_manifest_hash: str | None, tls: dict[str, Any]) -> dict[str, Variant]:
    """InstallBundle's arguments as RAUC's client sends them: ``ignore-compatible`` always,
    ``ignore-version-limit`` only when set (services before RAUC 1.12, e.g. Debian's 1.8, refuse
    the key as unsupported), the others when given."""
    args = {"ignore-compatible": Variant("b", ignore_compatible)}
    if ignore_version_limit:
        args["ignore-version-limit"] = Variant("b", True)
    if transaction_id:
        args["transaction-id"] = Variant("s", transaction_id)
    if require_manifest_hash:
        args["require-manifest-hash"] = Variant("s", require_manifest_hash)
    for key, value in tls.items():
        if value:
            args[key] = Variant({"tls-no-verify": "b", "http-headers": "as"}.get(key, "s"), value)
    return args


class _InstallWatch:
    """Turns the service's signals into RAUC's client lines and the result."""

    def __init__(self, emit: Emit, err: Emit, done: asyncio.Future[int]) -> None:
        self.emit, self.err, self.done = emit, err, done

    def __call__(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or self.done.done():
            return
        if msg.interface == PROPERTIES and msg.member == "PropertiesChanged" and msg.path == OBJECT_PATH:
            iface, changed, invalidated = msg.body
            if iface != INTERFACE:
                return
            if invalidated:
                self._vanished()
                return
            values = unwrap(changed)
            if "Operation" in values:
                self.emit(str(values["Operation"]))
            elif "Progress" in values:
                pct, text, _depth = values["Progress"]
                self.emit(f"{int(pct):3d}% {text}")
            elif values.get("LastError"):
                self.emit(f"LastError: {values['LastError']}")
        elif msg.interface == INTERFACE and msg.member == "Completed" and msg.path == OBJECT_PATH:
            result = int(msg.body[0])
            if result >= 0:
                self.done.set_result(result)
        elif msg.interface == DBUS_NAME and msg.member == "NameOwnerChanged" and msg.body[0] == BUS_NAME \
                and msg.body[1] and not msg.body[2]:
            self._vanished()

    def _vanished(self) -> None:
        self.err("RAUC service disappeared")
        self.done.set_result(EXIT_DBUS)


async def _install(source: str, args: dict[str, Variant], emit: Emit, err: Emit) -> int:
    try:
        bus = await connect()
    except CONNECT_ERRORS as e:
        err(f"Error creating proxy: {e}")
        return EXIT_DBUS
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    bus.add_message_handler(_InstallWatch(emit, err, done))

    def interrupted() -> None:
        if not done.done():
            done.set_result(EXIT_INTERRUPTED)

    loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        for rule in (f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',interface='{PROPERTIES}',"
                     f"member='PropertiesChanged',arg0='{INTERFACE}'",
                     f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',interface='{INTERFACE}',"
                     "member='Completed'",
                     f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',member='NameOwnerChanged',"
                     f"arg0='{BUS_NAME}'"):
            await _reply(bus, _bus_call("AddMatch", "s", [rule]))
        await _reply(bus, _call("InstallBundle", "sa{sv}", [source, args]))
    except ClientError as e:
        err(f"Failed to contact rauc service: {e}")
        return EXIT_DBUS
    try:
        return await done
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        bus.disconnect()


def install(path: str, args: dict[str, Variant], *, emit: Emit, out: Emit, err: Emit) -> int:
    """``rauc install`` through the service; RAUC's final line and exit code."""
    code = asyncio.run(_install(path, args, emit, err))
    if code == 0:
        out(f"Installing `{path}` succeeded")
    elif code == 1:
        err(f"Installing `{path}` failed")
    elif code == EXIT_DBUS:
        err(f"D-Bus error while installing `{path}`")
    elif code == EXIT_INTERRUPTED:
        out(CTRL_C)
    else:
        err(f"Installing `{path}` failed with unknown exit code: {code}")
    return code


# --------------------------------------------------------------------------------------------
# status and mark

async def _status(warn: Emit, mark: tuple[str, str] | None) -> tuple[SystemReport, list[str] | None]:
    prefix = "Error retrieving slot status via D-Bus: "
    try:
        bus = await connect()
    except CONNECT_ERRORS as e:
        raise ClientError(f"{prefix}error creating proxy: {e}") from e
    try:
        try:
            primary: str | None = (await _reply(bus, _call("GetPrimary")))[0] or None
        except ClientError as e:
            # the service's text ends with a newline (RAUC's "Failed getting primary slot: ...\n"),
            # which the one-line error shows escaped
            warn(str(e.args[0] if e.args else e).rstrip("\n").replace("\n", " "))
            primary = None
        try:
            props = unwrap((await _reply(bus, _call("GetAll", "s", [INTERFACE], interface=PROPERTIES)))[0])
        except ClientError as e:
            raise ClientError(f"{prefix}error creating proxy: {e}") from e
        try:
            slots = unwrap((await _reply(bus, _call("GetSlotStatus")))[0])
        except ClientError as e:
            raise ClientError(f'{prefix}error calling D-Bus method "GetSlotStatus": {e}') from e
        report = SystemReport(str(props.get("Compatible", "")), str(props.get("Variant") or ""),
                              props.get("BootSlot") or None, primary)
        report.slots = sorted((slot_from_dbus(name, values) for name, values in slots), key=lambda s: s.name)
        marked = None
        if mark is not None:
            try:
                marked = [str(v) for v in await _reply(bus, _call("Mark", "ss", list(mark)))]
            except ClientError as e:
                raise MarkRefused(str(e)) from e
        return report, marked
    finally:
        bus.disconnect()


def status(warn: Emit) -> SystemReport:
    """``rauc status`` through the service."""
    return asyncio.run(_status(warn, None))[0]


def mark(state: str, identifier: str, warn: Emit) -> tuple[str, str]:
    """``rauc status mark-<state>`` through the service: (slot name, message); MarkRefused with the
    service's text when Mark fails, ClientError ("Error retrieving slot status ...") before."""
    result = asyncio.run(_status(warn, (state, identifier)))[1]
    assert result is not None
    return result[0], result[1]
