"""Inputs the fuzzer (``python -m benchmarks.fuzz``) found crashing a parser, now refused cleanly.

Each input is rebuilt here from a valid one (changed in the one place the crash needed), so the
tests need no binary blobs: the exception that escaped is named in each test.
"""

from __future__ import annotations

import pytest

from pyrauc import slots
from pyrauc.config import parse_config
from pyrauc.errors import KeyFileError
from pyrauc.keyfile import KeyFile

# --------------------------------------------------------------------------------------------
# GKeyFile: a NUL ends the line, as in GLib (a NUL in a device path made os.path.realpath raise
# ValueError "embedded null byte" in status, mark-* and install)


def test_keyfile_nul_ends_the_line() -> None:
    kf = KeyFile.parse(b"[g]\nk=a\0b\n\0x=y\nl=c\0\r\n")
    assert kf.get_value("g", "k") == "a"
    assert kf.get_value("g", "l") == "c"
    assert kf.keys("g") == ["k", "l"]       # a line that starts with NUL is empty, as GLib reads it


def test_keyfile_nul_in_key() -> None:
    with pytest.raises(KeyFileError, match=r"^Key file contains line 'ke' which is not a key-value pair, group, "
                                           r"or comment$"):
        KeyFile.parse(b"[g]\nke\0y=v\n")


def test_config_nul_in_device() -> None:
    config = parse_config(b"[system]\ncompatible=T\nbootloader=noop\n\n[slot.rootfs.0]\ndevice=/dev/vda2\0junk\n")
    assert config.slots["rootfs.0"].device == "/dev/vda2"
    with pytest.raises(slots.SlotError, match="Did not find booted slot"):
        slots.determine_slot_states(slots.build_slots(config), "/dev/vda9")   # was ValueError
