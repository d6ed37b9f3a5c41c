"""What the D-Bus service and its clients share: names, the bus, errors and value conversion.

The library is dbus-fast (https://github.com/Bluetooth-Devices/dbus-fast): pure Python on
asyncio with optional compiled speed-ups, manylinux wheels on PyPI for every Python pyrauc
supports (the target's venv installs it like cryptography), actively maintained (it carries
Home Assistant's and bleak's Bluetooth stacks), typed, and complete on the service side: exported
interfaces with methods, read-only properties with ``PropertiesChanged`` and signals, plus
message handlers to answer calls exactly as RAUC's GDBus does. dasbus needs PyGObject (a
compiled GLib binding that does not install into a plain venv), jeepney has no service-side
object layer, and sdbus depends on libsystemd's ABI. Debian bookworm's own python3-dbus-fast
(1.84) predates the typed annotations used here, so the target gets the wheel from PyPI.

Bus choice as RAUC: the system bus, or the session bus when ``DBUS_STARTER_BUS_TYPE=session``;
addresses from ``DBUS_SYSTEM_BUS_ADDRESS`` / ``DBUS_SESSION_BUS_ADDRESS`` (else the default
system socket). Method errors travel as GLib's ``G_IO_ERROR_FAILED_HANDLED``
(:data:`ERROR_FAILED`) with RAUC's message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dbus_fast import BusType, Variant

BUS_NAME = "de.pengutronix.rauc"
OBJECT_PATH = "/"
INTERFACE = "de.pengutronix.rauc.Installer"
#: GIO's G_IO_ERROR_FAILED_HANDLED as GDBus sends an unmapped GError: RAUC's method errors
ERROR_FAILED = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30"
ERROR_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ERROR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
PROPERTIES = "org.freedesktop.DBus.Properties"


def bus_type() -> BusType:
    """The session bus if ``DBUS_STARTER_BUS_TYPE=session``, else the system bus."""
    return BusType.SESSION if os.environ.get("DBUS_STARTER_BUS_TYPE") == "session" else BusType.SYSTEM


def bus_label() -> str:
    """``system`` or ``session`` (for RAUC's messages)."""
    return "session" if bus_type() == BusType.SESSION else "system"


def unwrap(value: Any) -> Any:
    """A received value with every Variant replaced by its plain value (recursively)."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unwrap(v) for v in value]
    return value


# D-Bus signatures of the values InspectBundle returns (pyrauc.info.to_dict), by key
_INFO_SIGNATURES: dict[str, str] = {
    "verity-size": "t", "size": "t", "hooks": "as", "adaptive": "as", "convert": "as", "converted": "as",
}


def info_variant(key: str, value: Any) -> Variant:
    """A value of RAUC's bundle info dictionary as a variant (nested dicts as a{sv})."""
    if key == "meta":
        return Variant("a{sa{ss}}", {g: dict(items) for g, items in value.items()})
    if key == "images":
        return Variant("aa{sv}", [to_vardict(image) for image in value])
    if isinstance(value, dict):
        return Variant("a{sv}", to_vardict(value))
    return Variant(_INFO_SIGNATURES.get(key, "s"), value)


def to_vardict(values: Mapping[str, Any]) -> dict[str, Variant]:
    """RAUC's bundle info dictionary (:func:`pyrauc.info.to_dict`) as ``a{sv}``."""
    return {k: info_variant(k, v) for k, v in values.items()}
