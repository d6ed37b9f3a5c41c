"""Mounting bundles and slots, RAUC's layout under the mount prefix (default ``/mnt/rauc``).

* The bundle is mounted read-only at ``<mountprefix>/bundle`` through the stack of rauc.md 1.4:
  plain -> loop over ``[0, payload)`` -> squashfs; verity -> loop -> dm-verity -> squashfs;
  crypt -> loop -> dm-verity -> dm-crypt -> squashfs.
* Slots (ext4, vfat, ...) are mounted at ``<mountprefix>/<slot name>`` for tar extraction and for
  the RAUC_SLOT_MOUNT_POINT of slot hooks.

Every mount is a context manager that unmounts (and removes the mount point it created) on exit;
teardown runs in reverse order on success and on every error, so nothing stays mounted, attached
or mapped. :func:`mount_bundle_persistent` (``rauc mount``) instead hands the cleanup to the kernel
(loop autoclear, deferred dm removal) so a later ``umount`` releases everything.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from pyrauc import dm, loop
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


def _unescape_mountinfo(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> list[str]:
    """All current mount points of this mount namespace (from /proc/self/mountinfo)."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                points.append(_unescape_mountinfo(fields[4]))
    return points


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a mount point."""
    return os.path.realpath(path) in mount_points()


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


@contextmanager
def mounted(source: str, target: str | os.PathLike[str], *, fstype: str | None = None,
            options: Sequence[str] = ()) -> Iterator[Path]:
    """Context manager: mount, yield the mount point, always unmount (and rmdir if we created it)."""
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

    with loop.released(target, release, MountError, log):
        yield target


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


class _BlockStack:
    """The loop (+ dm-verity (+ dm-crypt)) devices under a bundle mount, torn down in reverse."""

    def __init__(self) -> None:
        self.loop_dev: str | None = None
        self.dm_names: list[str] = []
        self.verity_name: str | None = None
        self.top: str = ""

    def build(self, bundle: BundleLike) -> str:
        """Set up the devices for ``bundle``; on error everything built so far is removed."""
        fmt = bundle.format
        if fmt not in ("plain", "verity", "crypt"):
            raise MountError(f"unknown bundle format '{fmt}'")
        params = _verity_params(bundle) if fmt != "plain" else None
        key = bundle.manifest.crypt_key if fmt == "crypt" else None
        if fmt == "crypt" and not key:
            raise MountError("missing crypt key for crypt bundle")
        try:
            self.loop_dev = self.top = loop.attach(bundle.path, offset=0, sizelimit=bundle.size)
            if params is not None:
                data_size, root_hash, salt = params
                name = dm.unique_name(dm.VERITY_NAME)
                self.top = dm.create(name, dm.verity_table(self.top, data_size, root_hash, salt))
                self.dm_names.append(name)
                self.verity_name = name
                if key is not None:
                    name = dm.unique_name(dm.CRYPT_NAME)
                    self.top = dm.create(name, dm.crypt_table(self.top, data_size, key))
                    self.dm_names.append(name)
        except BaseException:
            self.teardown(quiet=True)
            raise
        return self.top

    def teardown(self, *, quiet: bool = False) -> None:
        """Remove the dm devices (top first) and detach the loop device."""
        first: Exception | None = None
        for name in reversed(self.dm_names):
            try:
                dm.remove(name)
            except InstallError as exc:
                log.warning("%s", exc)
                first = first or exc
        self.dm_names = []
        if self.loop_dev is not None:
            try:
                loop.detach(self.loop_dev)
            except InstallError as exc:
                log.warning("%s", exc)
                first = first or exc
            self.loop_dev = None
        if first is not None and not quiet:
            raise first

    def hand_over_to_kernel(self) -> None:
        """Once mounted: let the kernel release the devices when the mount goes away."""
        for name in reversed(self.dm_names):
            dm.remove(name, deferred=True)
        if self.loop_dev is not None:
            loop.set_autoclear(self.loop_dev)
        self.dm_names, self.loop_dev = [], None


@contextmanager
def mount_bundle(bundle: BundleLike, mountprefix: str | os.PathLike[str] | None = None,
                 mountpoint: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Context manager: mount ``bundle`` read-only at ``<mountprefix>/bundle``; full teardown on exit.

    For verity/crypt bundles the dm-verity status is checked after unmounting on success.
    """
    target = Path(mountpoint) if mountpoint is not None else bundle_mount_point(mountprefix)
    devs = _BlockStack()
    dev = devs.build(bundle)
    try:
        with mounted(dev, target, fstype="squashfs", options=BUNDLE_MOUNT_OPTIONS) as path:
            yield path
        if devs.verity_name is not None:
            dm.check_verity(devs.verity_name)
    except BaseException:
        devs.teardown(quiet=True)
        raise
    devs.teardown()


def mount_bundle_persistent(bundle: BundleLike, mountprefix: str | os.PathLike[str] | None = None,
                            mountpoint: str | os.PathLike[str] | None = None) -> Path:
    """Mount ``bundle`` and leave it mounted (``rauc mount``); ``umount`` later releases everything."""
    target = Path(mountpoint) if mountpoint is not None else bundle_mount_point(mountprefix)
    devs = _BlockStack()
    dev = devs.build(bundle)
    try:
        created = _make_mount_point(target)
        try:
            mount(dev, target, fstype="squashfs", options=BUNDLE_MOUNT_OPTIONS)
        except BaseException:
            if created:
                _rmdir_quietly(target)
            raise
        try:
            devs.hand_over_to_kernel()
        except BaseException:
            try:
                umount(target)
            except MountError as exc:
                log.warning("%s", exc)
            raise
    except BaseException:
        devs.teardown(quiet=True)
        raise
    return target


@contextmanager
def mount_slot(device: str, slot_name: str, fstype: str, *,
               mountprefix: str | os.PathLike[str] | None = None, read_only: bool = False,
               extra_options: str | None = None) -> Iterator[Path]:
    """Context manager: mount a slot's filesystem at ``<mountprefix>/<slot name>``; always unmount."""
    options = ["ro"] if read_only else []
    if extra_options:
        options += [o for o in extra_options.split(",") if o]
    with mounted(device, slot_mount_point(mountprefix, slot_name), fstype=fstype, options=options) as p:
        yield p
