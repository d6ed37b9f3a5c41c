"""Host side of the lab's update workflow: slot images and crypt bundles for the target.

The bootable update image is the lab image's own rootfs-a partition, shrunk with resize2fs and
stamped with a version file, so it boots in either slot. The broken image is an empty ext4: the
kernel finds no init, initramfs-tools panics and (panic=10 in the UKI) the machine resets.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.helpers.bundles import pyrauc

# A slot hook that carries the device's decryption key and cert into the freshly written slot:
# without it, the new slot could not decrypt the next update.
KEY_HOOK = """#!/bin/sh
set -e
case "$1" in
slot-post-install)
    [ "$RAUC_SLOT_CLASS" = rootfs ] || exit 0
    mkdir -p "$RAUC_SLOT_MOUNT_POINT/etc/rauc"
    for f in crypt-key.pem crypt-cert.pem; do
        if [ -e "/etc/rauc/$f" ]; then cp -a "/etc/rauc/$f" "$RAUC_SLOT_MOUNT_POINT/etc/rauc/$f"; fi
    done
    ;;
esac
"""


def _run(*argv: str | os.PathLike[str]) -> None:
    subprocess.run([str(a) for a in argv], check=True, stdin=subprocess.DEVNULL, capture_output=True)


def _partition(disk: Path, name: str) -> tuple[int, int]:
    """(offset, size) in bytes of the GPT partition called NAME."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    for part in table["partitions"]:
        if part.get("name") == name:
            return int(part["start"]) * sector, int(part["size"]) * sector
    raise LookupError(f"no partition {name!r} in {disk}")


def _debugfs_write(image: Path, path: str, data: bytes, tmp: Path) -> None:
    src = tmp / "debugfs-src"
    src.write_bytes(data)
    _run("debugfs", "-w", "-R", f"rm {path}", image)        # may not exist: debugfs exits 0 anyway
    _run("debugfs", "-w", "-R", f"write {src} {path}", image)
    src.unlink()


def bootable_rootfs(disk: Path, out: Path, version: str) -> Path:
    """Copy rootfs-a out of the lab disk, shrink it, stamp /etc/lab-update-version."""
    offset, size = _partition(disk, "rootfs-a")
    with open(disk, "rb") as src, open(out, "wb") as dst:
        src.seek(offset)
        remaining = size
        while remaining:
            chunk = src.read(min(8 << 20, remaining))
            if chunk.count(0) == len(chunk):
                dst.seek(len(chunk), os.SEEK_CUR)      # keep it sparse
            else:
                dst.write(chunk)
            remaining -= len(chunk)
        dst.truncate(size)
    _run("e2fsck", "-fy", out)
    _run("resize2fs", "-M", out)
    block_count = int(subprocess.run(["dumpe2fs", "-h", str(out)], check=True, capture_output=True, text=True)
                      .stdout.split("Block count:")[1].split()[0])
    os.truncate(out, block_count * 4096)
    _debugfs_write(out, "/etc/lab-update-version", f"{version}\n".encode(), out.parent)
    _debugfs_write(out, "/etc/lab-slot-marker", f"update-{version}\n".encode(), out.parent)
    return out


def broken_rootfs(out: Path) -> Path:
    """A 16 MiB ext4 without init: the slot cannot boot (some random data keeps the squashfs > 4 KiB)."""
    src = out.with_suffix(".d")
    src.mkdir(parents=True, exist_ok=True)
    (src / "README").write_text("This slot has no init: the kernel cannot boot it.\n")
    (src / "noise.bin").write_bytes(os.urandom(256 * 1024))
    _run("mkfs.ext4", "-q", "-F", "-L", "broken", "-b", "4096", "-d", src, out, "16M")
    shutil.rmtree(src)
    return out


def make_bundle(work: Path, name: str, image: Path, *, compatible: str, version: str, signer_cert: Path,
                signer_key: Path, image_name: str = "rootfs.ext4", efi_image: Path | None = None) -> Path:
    """A crypt bundle with IMAGE (as IMAGE_NAME) for slot class rootfs and the key-carrying post-install
    hook; with EFI_IMAGE also an image for slot class efi (the tutorial device's boot partition)."""
    content = work / f"content-{name}"
    if content.exists():
        shutil.rmtree(content)
    content.mkdir(parents=True)
    os.link(image, content / image_name)
    efi_group = ""
    if efi_image is not None:
        shutil.copyfile(efi_image, content / efi_image.name)
        efi_group = f"[image.efi]\nfilename={efi_image.name}\n\n"
    (content / "hook.sh").write_text(KEY_HOOK)
    (content / "hook.sh").chmod(0o755)
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion={version}\n\n"
        "[bundle]\nformat=crypt\n\n"
        "[hooks]\nfilename=hook.sh\n\n"
        f"{efi_group}[image.rootfs]\nfilename={image_name}\nhooks=post-install\n"
    )
    out = work / f"{name}.raucb"
    pyrauc("bundle", "--cert", signer_cert, "--key", signer_key, content, out, check=True)
    shutil.rmtree(content)
    return out


def once_per_session(share: Path, name: str, build: Callable[[Path], Path]) -> Path:
    """SHARE/NAME, made by BUILD (given a scratch directory, returning the file it made) unless it is there.

    The lab suites that install *an* update of the booted system (the tutorial, the power cuts, the
    streamed tutorial) build the same bundle: SHARE is the test session's directory, so it is built
    once per session, also across pytest-xdist workers (the others wait on a lock file meanwhile),
    and never outlives the run that built it.
    """
    share.mkdir(parents=True, exist_ok=True)
    out = share / name
    with open(share / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            scratch = Path(tempfile.mkdtemp(dir=share, prefix=f".{name}-"))
            try:
                os.replace(build(scratch), out)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return out
