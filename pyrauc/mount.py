"""The one mount layer (RAUC's src/mount.c): mountinfo, mount(8), bundles and slots.

* ``/proc/self/mountinfo`` is parsed here only (:func:`mount_table`, :func:`find_mount_point`,
  :func:`is_mounted`), with the kernel's octal escapes undone.
* The bundle is mounted read-only at ``<mountprefix>/bundle`` (default prefix ``/mnt/rauc``)
  through the stack of RAUC's bundle formats (see docs/design.md):
  plain -> loop over ``[0, payload)`` -> squashfs; verity -> loop -> dm-verity -> squashfs;
  crypt -> loop -> dm-verity -> dm-crypt -> squashfs. The stack is a :class:`contextlib.ExitStack`
  over :func:`pyrauc.loop.loop_device`, :func:`pyrauc.dm.verity_device` and
  :func:`pyrauc.dm.crypt_device`.
* A streamed bundle (:mod:`pyrauc.nbd`) sits on the kernel's ``/dev/nbdN`` instead of a loop
  device, with the same dm-verity (and dm-crypt) and squashfs on top.
* Slots (ext4, vfat, ...) are mounted at ``<mountprefix>/<slot name>`` for tar extraction, for
  the RAUC_SLOT_MOUNT_POINT of slot hooks and for per-slot status files.

Every mount is a :class:`~pyrauc.cleanup.Resource` that unmounts (and removes the mount point it
created) on exit; teardown runs in reverse order on success and on every error, so nothing stays
mounted, attached or mapped. :func:`mount_bundle_persistent` (``rauc mount``) instead hands the
cleanup to the kernel (loop autoclear, deferred dm removal) so a later ``umount`` releases
everything.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from pyrauc import dm, loop
from pyrauc.cleanup import Resource
from pyrauc.errors import InstallError

log = logging.getLogger(__name__)

DEFAULT_MOUNT_PREFIX = "/mnt/rauc"
BUNDLE_MOUNT_OPTIONS = ("ro", "nodev", "nosuid")


class MountError(InstallError):
    """Mounting or unmounting failed."""


class BundleManifestLike(Protocol):
    """What the bundle mount needs from :class:`pyrauc.manifest.Manifest`."""

    verity_hash: str | None
    verity_salt: str | None
    verity_size: int | None
    crypt_key: bytes | None


class StreamLike(Protocol):
    """What the bundle mount needs from a streamed bundle's source (:class:`pyrauc.nbd.NbdSource`)."""

    def block_device(self, payload_size: int) -> AbstractContextManager[str]: ...
    def detach(self) -> None: ...


class BundleLike(Protocol):
    """What the bundle mount needs from :class:`pyrauc.bundle.Bundle`."""

    @property
    def path(self) -> Path: ...
    @property
    def size(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def manifest(self) -> BundleManifestLike: ...


MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo``, fields unescaped."""

    mount_point: str
    source: str        # "" if the line has none
    fstype: str


def _unescape(field: str) -> str:
    """Undo the kernel's ``\\ooo`` octal escapes (space, tab, newline and backslash)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_table(mountinfo: str | os.PathLike[str] = MOUNTINFO) -> list[MountEntry]:
    """The mounts listed in ``mountinfo`` (this mount namespace by default); [] if it cannot be read."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5:
            continue
        entries.append(MountEntry(mount_point=_unescape(fields[4]),
                                  source=_unescape(rfields[1]) if len(rfields) > 1 else "",
                                  fstype=rfields[0] if rfields else ""))
    return entries


def mount_points() -> list[str]:
    """All current mount points of this mount namespace."""
    return [entry.mount_point for entry in mount_table()]


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a mount point."""
    return os.path.realpath(path) in mount_points()


def find_mount_point(device: str, mountinfo: str | os.PathLike[str] = MOUNTINFO) -> str | None:
    """Where ``device`` is mounted (first mount, device paths compared after realpath), else None."""
    want = os.path.realpath(device) if device.startswith("/") else device
    for entry in mount_table(mountinfo):
        source = entry.source
        if source == device or (source.startswith("/") and os.path.realpath(source) == want):
            return entry.mount_point
    return None


def mounted_source(mount_point: str, mountinfo: str | os.PathLike[str] = MOUNTINFO) -> str | None:
    """The source of the first mount at ``mount_point`` (e.g. ``/dev/root`` for "/"), else None."""
    for entry in mount_table(mountinfo):
        if entry.mount_point == mount_point:
            return entry.source or None
    return None


def mount_argv(source: str, target: str, fstype: str | None, options: Sequence[str]) -> list[str]:
    """The mount(8) command line :func:`mount` runs."""
    argv = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    return [*argv, source, target]


def _reason(stderr: str, returncode: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "dmesg(1)" not in ln]
    return lines[0] if lines else f"exit code {returncode}"


def mount(source: str, target: str | os.PathLike[str], *, fstype: str | None = None,
          options: Sequence[str] = ()) -> None:
    """Mount ``source`` at ``target`` (which must exist)."""
    argv = mount_argv(source, os.fspath(target), fstype, options)
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        reason = _reason(res.stderr, res.returncode)
        raise MountError(f"failed to mount {source} at {os.fspath(target)}: {reason}")


def umount(target: str | os.PathLike[str], *, retries: int = 10) -> None:
    """Unmount ``target``, retrying a few times while it is busy."""
    for attempt in range(retries):
        res = subprocess.run(["umount", os.fspath(target)], capture_output=True, text=True, check=False)
        if res.returncode == 0:
            return
        if attempt == retries - 1:
            reason = _reason(res.stderr, res.returncode)
            raise MountError(f"failed to unmount {os.fspath(target)}: {reason}")
        time.sleep(0.1 * (attempt + 1))


def _make_mount_point(target: Path) -> bool:
    """Create ``target`` if needed; True if we created it. Refuse a path that is already in use."""
    if is_mounted(target):
        raise MountError(f"mount point {target} is already in use")
    if target.is_dir():
        return False
    try:
        target.mkdir(parents=True)
    except OSError as exc:
        raise MountError(f"failed to create mount point {target}: {exc.strerror}") from exc
    return True


def mounted(source: str, target: str | os.PathLike[str], *, fstype: str | None = None,
            options: Sequence[str] = ()) -> Resource[Path]:
    """Mount now; a context manager yielding the mount point that always unmounts (and removes the
    mount point if it was created here)."""
    target = Path(target)
    created = _make_mount_point(target)
    try:
        mount(source, target, fstype=fstype, options=options)
    except BaseException:
        if created:
            _rmdir_quietly(target)
        raise

    def release() -> None:
        umount(target)
        if created:  # only once it is no longer mounted
            _rmdir_quietly(target)

    return Resource(target, release, error=MountError, logger=log)


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def bundle_mount_point(mountprefix: str | os.PathLike[str] | None) -> Path:
    """``<mountprefix>/bundle``."""
    return Path(mountprefix or DEFAULT_MOUNT_PREFIX) / "bundle"


def slot_mount_point(mountprefix: str | os.PathLike[str] | None, slot_name: str) -> Path:
    """``<mountprefix>/<slot name>``."""
    return Path(mountprefix or DEFAULT_MOUNT_PREFIX) / slot_name


def _verity_params(bundle: BundleLike) -> tuple[int, str, str]:
    mf = bundle.manifest
    if not mf.verity_hash or not mf.verity_salt or not mf.verity_size:
        raise MountError(f"missing verity parameters for {bundle.format} bundle")
    data_size = bundle.size - mf.verity_size
    if data_size <= 0:
        raise MountError(f"verity size {mf.verity_size} exceeds the payload size {bundle.size}")
    return data_size, mf.verity_hash, mf.verity_salt


@dataclass(frozen=True)
class _BundleDevices:
    """The block devices under a bundle mount."""

    loop: str                      # the payload's device: a loop device, or /dev/nbdN when streamed
    top: str                       # what the squashfs is mounted from
    dm_names: tuple[str, ...] = ()   # bottom (verity) to top (crypt)
    stream: StreamLike | None = None

    @property
    def verity(self) -> str | None:
        return self.dm_names[0] if self.dm_names else None


def _open_devices(bundle: BundleLike, stack: ExitStack) -> _BundleDevices:
    """loop (-> dm-verity (-> dm-crypt)) for ``bundle``, each released by ``stack`` in reverse order."""
    fmt = bundle.format
    if fmt not in ("plain", "verity", "crypt"):
        raise MountError(f"unknown bundle format '{fmt}'")
    params = _verity_params(bundle) if fmt != "plain" else None
    key = bundle.manifest.crypt_key if fmt == "crypt" else None
    if fmt == "crypt" and not key:
        raise MountError("missing crypt key for crypt bundle")
    source = getattr(bundle, "source", None)       # pyrauc.bundle.Bundle.source: set when streamed
    if source is not None:         # streamed: the kernel's NBD device, answered by the helper
        if not hasattr(source, "block_device") or params is None:
            raise MountError("a streamed bundle can only be mounted through the NBD helper")
        stream: StreamLike | None = cast(StreamLike, source)
        assert stream is not None
        dev = stack.enter_context(stream.block_device(bundle.size))
    else:
        stream = None
        dev = stack.enter_context(loop.loop_device(bundle.path, offset=0, sizelimit=bundle.size))
    if params is None:
        return _BundleDevices(loop=dev, top=dev)
    data_size, root_hash, salt = params
    verity, top = stack.enter_context(dm.verity_device(dev, data_size, root_hash, salt))
    if key is None:
        return _BundleDevices(loop=dev, top=top, dm_names=(verity,), stream=stream)
    crypt, top = stack.enter_context(dm.crypt_device(top, data_size, key))
    return _BundleDevices(loop=dev, top=top, dm_names=(verity, crypt), stream=stream)


@contextmanager
def mount_bundle(bundle: BundleLike, mountprefix: str | os.PathLike[str] | None = None,
                 mountpoint: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Context manager: mount ``bundle`` read-only at ``<mountprefix>/bundle``; full teardown on exit.

    For verity/crypt bundles the dm-verity status is checked after unmounting on success.
    """
    target = Path(mountpoint) if mountpoint is not None else bundle_mount_point(mountprefix)
    log.info("Mounting bundle '%s' to '%s'", bundle.path, target)
    with ExitStack() as stack:
        devices = _open_devices(bundle, stack)
        with mounted(devices.top, target, fstype="squashfs", options=BUNDLE_MOUNT_OPTIONS) as path:
            yield path
        if devices.verity is not None:
            dm.check_verity(devices.verity)


def _hand_over_to_kernel(devices: _BundleDevices) -> None:
    """Once mounted: the kernel releases the devices when the mount goes away."""
    for name in reversed(devices.dm_names):
        dm.remove(name, deferred=True)
    if devices.stream is not None:
        devices.stream.detach()    # DISCONNECT_ON_CLOSE ends the NBD device, the helper gets DISC
    else:
        loop.set_autoclear(devices.loop)


def mount_bundle_persistent(bundle: BundleLike, mountprefix: str | os.PathLike[str] | None = None,
                            mountpoint: str | os.PathLike[str] | None = None) -> Path:
    """Mount ``bundle`` and leave it mounted (``rauc mount``); ``umount`` later releases everything."""
    target = Path(mountpoint) if mountpoint is not None else bundle_mount_point(mountprefix)
    log.info("Mounting bundle '%s' to '%s'", bundle.path, target)
    with ExitStack() as stack:
        devices = _open_devices(bundle, stack)
        stack.enter_context(mounted(devices.top, target, fstype="squashfs", options=BUNDLE_MOUNT_OPTIONS))
        _hand_over_to_kernel(devices)
        stack.pop_all()      # from here on the mount and the devices belong to the kernel
    return target


def mount_slot(device: str, slot_name: str, fstype: str | None, *,
               mountprefix: str | os.PathLike[str] | None = None, read_only: bool = False,
               extra_options: str | None = None) -> Resource[Path]:
    """Mount a slot's file system now at ``<mountprefix>/<slot name>`` (``fstype`` None: detected);
    a context manager yielding the mount point that always unmounts."""
    options = ["ro"] if read_only else []
    if extra_options:
        options += [o for o in extra_options.split(",") if o]
    return mounted(device, slot_mount_point(mountprefix, slot_name), fstype=fstype, options=options)
