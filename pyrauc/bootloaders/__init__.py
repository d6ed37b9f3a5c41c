"""Bootloader backends behind one small protocol (RAUC's src/bootchooser.c and src/bootloaders/).

Every backend works on *boot slots* (slots with a ``bootname``; callers pass the root slot of a
slot group) and offers ``get_state`` (True = good), ``set_state``, ``get_primary``,
``set_primary`` and optionally ``get_current`` (the booted bootname); the protocol and the shared
helpers are in :mod:`pyrauc.bootloaders.base`, one module per backend. Errors are
:class:`~pyrauc.errors.BootloaderError` prefixed with "<name> backend: " like RAUC's bootchooser.
:func:`create_backend` picks the backend named by ``[system] bootloader``.
"""

from __future__ import annotations

from collections.abc import Callable

from pyrauc.bootloaders.barebox import BareboxBackend
from pyrauc.bootloaders.base import BackendBase, Bootloader, tool
from pyrauc.bootloaders.custom import CustomBackend
from pyrauc.bootloaders.efi import EfiBackend
from pyrauc.bootloaders.grub import GrubBackend
from pyrauc.bootloaders.noop import NoopBackend
from pyrauc.bootloaders.uboot import UbootBackend
from pyrauc.config import SystemConfig
from pyrauc.errors import BootloaderError
from pyrauc.slots import Slot

__all__ = ["BackendBase", "Bootloader", "create_backend", "tool"]


_BACKENDS: dict[str, Callable[[SystemConfig, dict[str, Slot]], Bootloader]] = {
    "efi": EfiBackend, "grub": GrubBackend, "uboot": UbootBackend, "barebox": BareboxBackend,
    "custom": CustomBackend, "noop": NoopBackend,
}


def create_backend(config: SystemConfig, slots: dict[str, Slot]) -> Bootloader:
    """The backend for ``config.bootloader``."""
    backend = _BACKENDS.get(config.bootloader)
    if backend is None:
        raise BootloaderError(f"Unsupported bootloader '{config.bootloader}' selected in system config file")
    return backend(config, slots)
