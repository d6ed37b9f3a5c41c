"""Loop devices: expose a byte range of a file as a (read-only) block device.

RAUC attaches the bundle payload ``[0, payload_size)`` to a loop device and stacks dm-verity,
dm-crypt and the squashfs mount on top of it. Attaching goes through ``losetup --find --show``
(which handles the free-device race itself); :func:`loop_device` returns the attached device as a
:class:`~pyrauc.cleanup.Resource` that always detaches, also when the body raises.
:func:`set_autoclear` lets the kernel detach the device when its last user goes away (used by
``rauc mount``, whose mount outlives the process).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import subprocess
from pathlib import Path

from pyrauc.cleanup import Resource
from pyrauc.errors import InstallError

log = logging.getLogger(__name__)
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LO_FLAGS_AUTOCLEAR = 4
# struct loop_info64: 5 x u64, 4 x u32, 64 + 64 + 32 bytes of names/key, 2 x u64
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")
_FLAGS_INDEX = 8


class LoopError(InstallError):
    """Attaching or detaching a loop device failed."""


def _run(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise LoopError(f"failed to run {argv[0]}: {exc.strerror}") from exc
    if res.returncode != 0:
        detail = res.stderr.strip().splitlines()
        raise LoopError(f"{' '.join(argv[:2])} failed: {detail[-1] if detail else f'exit {res.returncode}'}")
    return res.stdout


def attach_argv(path: str | os.PathLike[str], *, offset: int = 0, sizelimit: int | None = None,
                read_only: bool = True) -> list[str]:
    """The ``losetup`` command line :func:`attach` runs."""
    argv = ["losetup", "--find", "--show"]
    if read_only:
        argv.append("--read-only")
    if offset:
        argv += ["--offset", str(offset)]
    if sizelimit:
        argv += ["--sizelimit", str(sizelimit)]
    argv.append(os.fspath(path))
    return argv


def attach(path: str | os.PathLike[str], *, offset: int = 0, sizelimit: int | None = None,
           read_only: bool = True) -> str:
    """Attach ``[offset, offset + sizelimit)`` of ``path`` to a free loop device; return its path."""
    if not Path(path).exists():
        raise LoopError(f"failed to set up loop device: {os.fspath(path)} does not exist")
    try:
        out = _run(attach_argv(path, offset=offset, sizelimit=sizelimit, read_only=read_only))
    except LoopError as exc:
        raise LoopError(f"failed to set up loop device for {os.fspath(path)}: {exc}") from exc
    dev = out.strip()
    if not dev.startswith("/dev/"):
        raise LoopError(f"failed to set up loop device for {os.fspath(path)}: unexpected output '{dev}'")
    return dev


def detach(dev: str) -> None:
    """Detach the loop device ``dev``."""
    _run(["losetup", "--detach", dev])


def set_autoclear(dev: str) -> None:
    """Let the kernel detach ``dev`` as soon as it is no longer in use (LO_FLAGS_AUTOCLEAR)."""
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(_LOOP_INFO64.size)
        fcntl.ioctl(fd, LOOP_GET_STATUS64, buf, True)
        fields = list(_LOOP_INFO64.unpack(bytes(buf)))
        fields[_FLAGS_INDEX] |= LO_FLAGS_AUTOCLEAR
        fcntl.ioctl(fd, LOOP_SET_STATUS64, _LOOP_INFO64.pack(*fields))
    except OSError as exc:
        raise LoopError(f"failed to set autoclear on {dev}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def backing_file(dev: str) -> str | None:
    """The backing file of loop device ``dev`` as the kernel reports it, or None if unattached."""
    name = Path(dev).name
    try:
        return Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


def loop_device(path: str | os.PathLike[str], *, offset: int = 0, sizelimit: int | None = None,
                read_only: bool = True) -> Resource[str]:
    """Attach now (see :func:`attach`); a context manager yielding the device path that always detaches."""
    dev = attach(path, offset=offset, sizelimit=sizelimit, read_only=read_only)
    return Resource(dev, lambda: detach(dev), error=LoopError, logger=log)
