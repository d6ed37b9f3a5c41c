"""Device-mapper targets for mounting verity and crypt bundles (RAUC's src/dm.c).

``verity``: the payload's loop device carries the squashfs (or the ciphertext) followed by the
hash tree; the dm-verity table is
``0 <data_sectors> verity 1 <dev> <dev> 4096 4096 <data_blocks> <data_blocks> sha256 <root> <salt>``.
``crypt``: stacked on the verity device,
``0 <data_sectors> crypt aes-cbc-plain64 <hexkey> 0 <verity-dev> 0 1 sector_size:4096``.

Devices are created with ``dmsetup create <name> --readonly`` and the table on STDIN, so the AES key
never appears in any argv, environment or log message (:func:`create_argv` is what runs).
Names are RAUC's (``rauc-verity-bundle`` / ``rauc-crypt-bundle``) plus a unique suffix so several
bundles can be mounted at once. :func:`verity_device` and :func:`crypt_device` return the created
device as a :class:`~pyrauc.cleanup.Resource` that always removes it, also on errors.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import time
from pathlib import Path

from pyrauc.cleanup import Resource
from pyrauc.errors import InstallError

SECTOR_SIZE = 512
BLOCK_SIZE = 4096
log = logging.getLogger(__name__)
VERITY_NAME = "rauc-verity-bundle"
CRYPT_NAME = "rauc-crypt-bundle"
DMSETUP_TIMEOUT = 60


class DmError(InstallError):
    """A device-mapper operation failed."""


def unique_name(base: str) -> str:
    """``base`` plus a suffix unique to this process and call, e.g. ``rauc-verity-bundle-1234-ab12cd``."""
    return f"{base}-{os.getpid()}-{secrets.token_hex(3)}"


def _check_hex(value: str, length: int, what: str) -> str:
    value = value.strip().lower()
    if len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise DmError(f"invalid {what} for dm-verity: expected {length} hex characters")
    return value


def verity_table(dev: str, data_size: int, root_hash: str, salt: str) -> str:
    """The dm-verity table line for ``data_size`` bytes of data on ``dev`` with the tree right after."""
    if data_size <= 0 or data_size % BLOCK_SIZE:
        raise DmError(f"verity data size {data_size} is not a positive multiple of {BLOCK_SIZE}")
    blocks = data_size // BLOCK_SIZE
    root_hash = _check_hex(root_hash, 64, "root hash")
    salt = _check_hex(salt, 64, "salt")
    return (f"0 {data_size // SECTOR_SIZE} verity 1 {dev} {dev} {BLOCK_SIZE} {BLOCK_SIZE} "
            f"{blocks} {blocks} sha256 {root_hash} {salt}\n")


def crypt_table(dev: str, data_size: int, key: bytes) -> str:
    """The dm-crypt table line (contains the key: never log or pass it on a command line)."""
    if data_size <= 0 or data_size % BLOCK_SIZE:
        raise DmError(f"crypt data size {data_size} is not a positive multiple of {BLOCK_SIZE}")
    if len(key) != 32:
        raise DmError(f"invalid crypt key length {len(key)} (expected 32 bytes)")
    return (f"0 {data_size // SECTOR_SIZE} crypt aes-cbc-plain64 {key.hex()} 0 {dev} 0 "
            f"1 sector_size:{BLOCK_SIZE}\n")


def create_argv(name: str) -> list[str]:
    """The ``dmsetup`` command line that creates ``name``; the table goes to its stdin.

    ``--noudevsync``: like RAUC (which uses the ioctls directly) we do not wait for udev; the
    kernel's ``/dev/dm-N`` node is used, so a system without (or with a misconfigured) udev cannot
    make us hang.
    """
    return ["dmsetup", "create", name, "--readonly", "--noudevsync"]


def _dmsetup(argv: list[str], stdin: str | None = None) -> str:
    try:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False,
                             timeout=DMSETUP_TIMEOUT)
    except OSError as exc:
        raise DmError(f"failed to run dmsetup: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise DmError(f"dmsetup {argv[1]} timed out after {DMSETUP_TIMEOUT} s") from exc
    if res.returncode != 0:
        lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip() and ln.strip() != "Command failed."]
        raise DmError(f"dmsetup {argv[1]} failed: {lines[0] if lines else f'exit code {res.returncode}'}")
    return res.stdout


def device_path(name: str, sysfs: str = "/sys/block", dev: str = "/dev") -> str:
    """The block device node of dm device ``name``: ``/dev/dm-N`` (found through sysfs, works
    without udev), else ``/dev/mapper/<name>``."""
    for entry in sorted(Path(sysfs).glob("dm-*")):
        try:
            if (entry / "dm" / "name").read_text().strip() == name and Path(dev, entry.name).exists():
                return str(Path(dev, entry.name))
        except OSError:
            continue
    mapper = str(Path(dev, "mapper", name))
    if not Path(mapper).exists():
        _dmsetup(["dmsetup", "mknodes", name])
    if Path(mapper).exists():
        return mapper
    raise DmError(f"no device node for dm device {name}")


def create(name: str, table: str) -> str:
    """Create the read-only dm device ``name`` from ``table`` (fed on stdin); return its node."""
    try:
        _dmsetup(create_argv(name), stdin=table)
    except DmError as exc:
        raise DmError(f"failed to create dm device {name}: {exc}") from exc
    try:
        return device_path(name)
    except DmError:
        remove(name)
        raise


def remove(name: str, *, deferred: bool = False, retries: int = 10) -> None:
    """Remove dm device ``name``, retrying while it is briefly busy (udev probes after umount).

    Still busy after the retries (a prober blocked on a failing stream below, say): the removal is
    deferred, so the kernel removes the device as soon as its last user closes it (the caller then
    releases what lies below, which ends such a reader), and a warning says so.
    """
    def argv(later: bool) -> list[str]:
        return ["dmsetup", "remove", "--noudevsync"] + (["--deferred"] if later else []) + [name]

    for attempt in range(retries):
        try:
            _dmsetup(argv(deferred))
            return
        except DmError as exc:
            if attempt < retries - 1:
                time.sleep(0.1 * (attempt + 1))
                continue
            if not deferred and exists(name):
                try:
                    _dmsetup(argv(True))
                except DmError:
                    pass
                else:
                    log.warning("dm device %s is busy: removed when its last user closes it", name)
                    return
            raise DmError(f"failed to remove dm device {name}: {exc}") from exc


def exists(name: str) -> bool:
    """Whether a dm device ``name`` exists."""
    try:
        _dmsetup(["dmsetup", "info", name])
    except DmError:
        return False
    return True


def verity_status(name: str) -> str:
    """The dm-verity status character: 'V' (verified so far) or 'C' (corruption detected)."""
    out = _dmsetup(["dmsetup", "status", name]).split()
    # "<start> <len> verity <V|C> ..."
    if len(out) < 4 or out[2] != "verity":
        raise DmError(f"unexpected dm status for {name}: {' '.join(out[:4])}")
    return out[3]


def check_verity(name: str) -> None:
    """Raise if the kernel saw a hash mismatch on verity device ``name``."""
    if verity_status(name) != "V":
        raise DmError("bundle payload is corrupted (dm-verity detected a mismatch)")


def _device(name: str, table: str) -> Resource[tuple[str, str]]:
    """Create NAME from TABLE now; a context manager yielding ``(name, node)`` that always removes it."""
    node = create(name, table)
    return Resource((name, node), lambda: remove(name), error=DmError, logger=log)


def verity_device(dev: str, data_size: int, root_hash: str, salt: str, *,
                  name: str | None = None) -> Resource[tuple[str, str]]:
    """A dm-verity device over ``dev``, created now; yields ``(name, node)``; always removed."""
    return _device(name or unique_name(VERITY_NAME), verity_table(dev, data_size, root_hash, salt))


def crypt_device(dev: str, data_size: int, key: bytes, *,
                 name: str | None = None) -> Resource[tuple[str, str]]:
    """A dm-crypt device over ``dev``, created now; yields ``(name, node)``; always removed."""
    return _device(name or unique_name(CRYPT_NAME), crypt_table(dev, data_size, key))
