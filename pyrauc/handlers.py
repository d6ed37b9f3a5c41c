"""Update handlers: write one bundle image into one slot (RAUC's src/update_handler.c, its image_type_map).

Implemented on the host: raw -> raw/ext4/vfat, ext4 -> ext4/raw, vfat -> vfat/raw,
squashfs -> raw (parallel-read copy, sha256 check for plain bundles, fsync), tar -> ext4/vfat (mkfs, then extract),
emptyfs -> ext4 (mkfs only), raw/vfat/ext4 -> boot-gpt-switch (inactive half of the region, then
GPT partition 1 switched; see pyrauc.gpt). Other combinations of RAUC's table (ubi*, nand, nor, jffs2, boot-*)
fail with a clear "not supported" error; combinations outside the table fail with RAUC's
"Unsupported image type '%s' for slot type '%s'".

Per-image slot hooks (``hooks=pre-install;install;post-install``) run around (or instead of) the
copy; mountable slots are mounted for slot-pre-install / slot-post-install. Everything checked
before a byte is written: readonly slot, image type x slot type, image size vs slot size.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import stat
import struct
import subprocess
import threading
from collections.abc import Mapping
from contextlib import closing, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyrauc import gpt, hooks, mount, parallel
from pyrauc.errors import InstallError
from pyrauc.progress import Progress

log = logging.getLogger(__name__)

CHUNK = 2 << 20
PIPE_SIZE = 1 << 20          # each reader's pipe of the kernel copy (Linux's default pipe-max-size)
BLKGETSIZE64 = 0x80081272
MOUNTABLE = frozenset({"ext4", "ubifs", "vfat"})

# image type -> slot types RAUC accepts (image_type_map)
IMAGE_SLOT_TABLE: dict[str, frozenset[str]] = {
    "ext4": frozenset({"ext4", "raw", "boot-gpt-switch"}),
    "vfat": frozenset({"vfat", "raw", "boot-mbr-switch", "boot-gpt-switch"}),
    "squashfs": frozenset({"ubivol", "raw"}),
    "ubifs": frozenset({"ubivol", "ubifs"}),
    "raw": frozenset({"ext4", "nor", "nand", "ubifs", "ubivol", "vfat", "raw", "jffs2", "boot-emmc",
                      "boot-mbr-switch", "boot-gpt-switch", "boot-raw-fallback"}),
    "tar": frozenset({"ext4", "ubifs", "vfat", "jffs2"}),
    "emptyfs": frozenset({"ext4"}),
    "ext4-caibx": frozenset({"ext4", "raw"}),
    "raw-caibx": frozenset({"ext4", "raw", "vfat", "jffs2", "nor", "nand", "ubivol", "ubifs"}),
    "vfat-caibx": frozenset({"raw"}),
    "squashfs-caibx": frozenset({"raw", "ubivol"}),
    "ubifs-caibx": frozenset({"ubivol", "ubifs"}),
    "caidx": frozenset({"ext4", "ubifs", "vfat"}),
    "catar": frozenset({"ext4"}),
}

COPY = "copy"
TAR = "tar"
EMPTYFS = "emptyfs"
GPT_SWITCH = "gpt-switch"
# (image type, slot type) -> method implemented by pyrauc
IMPLEMENTED: dict[tuple[str, str], str] = {
    ("raw", "raw"): COPY, ("raw", "ext4"): COPY, ("raw", "vfat"): COPY,
    ("ext4", "ext4"): COPY, ("ext4", "raw"): COPY,
    ("vfat", "vfat"): COPY, ("vfat", "raw"): COPY,
    ("squashfs", "raw"): COPY,
    ("tar", "ext4"): TAR, ("tar", "vfat"): TAR,
    ("emptyfs", "ext4"): EMPTYFS,
    ("raw", "boot-gpt-switch"): GPT_SWITCH, ("vfat", "boot-gpt-switch"): GPT_SWITCH,
    ("ext4", "boot-gpt-switch"): GPT_SWITCH,
}


@dataclass
class SlotInfo:
    """The slot facts the handlers need (built by install.py from pyrauc.slots)."""

    name: str
    sclass: str
    device: str
    type: str = "raw"
    bootname: str | None = None
    parent: str | None = None
    state: str = "inactive"
    readonly: bool = False
    install_same: bool = True
    extra_mkfs_opts: list[str] = field(default_factory=list)
    extra_mount_opts: str | None = None
    resize: bool = False
    region_start: int | None = None      # boot-gpt-switch region (bytes)
    region_size: int | None = None
    size_limit: int | None = None        # [slot] size-limit: the largest image it takes (bytes)


@dataclass
class AdaptiveJob:
    """``adaptive=block-hash-index`` for one image: where the slot indexes are kept, and the seed slot."""

    data_directory: str
    target_digest: str | None = None     # sha256 of what the target slot holds (its status), if known
    seed_name: str | None = None         # the active slot of the same class
    seed_device: str | None = None
    seed_digest: str | None = None


@dataclass
class ImageJob:
    """One image of the bundle and the slot it goes to."""

    image: Any                       # pyrauc.manifest.Image
    path: Path                       # the image file inside the mounted bundle
    slot: SlotInfo
    image_type: str = ""
    verified_by_dm: bool = False     # read through dm-verity (verity/crypt bundle): no second sha256 pass
    adaptive: AdaptiveJob | None = None

    def __post_init__(self) -> None:
        if not self.image_type:
            self.image_type = self.image.effective_type


@dataclass
class HandlerEnv:
    """Shared inputs of all handlers of one installation."""

    mountprefix: str
    bundle_mount: Path
    hook_name: str | None = None
    base_env: dict[str, str] = field(default_factory=dict)   # RAUC_SYSTEM_*, RAUC_MF_*, ...


def check_combination(image_type: str, slot_type: str) -> str:
    """The handler method for ``image_type`` -> ``slot_type``; InstallError if unsupported."""
    if slot_type not in IMAGE_SLOT_TABLE.get(image_type, frozenset()):
        raise InstallError(f"Unsupported image type '{image_type}' for slot type '{slot_type}'")
    method = IMPLEMENTED.get((image_type, slot_type))
    if method is None:
        raise InstallError(f"Installing image type '{image_type}' to slot type '{slot_type}' "
                           "is not supported by pyrauc")
    return method


def device_size(path: str | os.PathLike[str]) -> int:
    """Size in bytes of a block device or regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InstallError(f"Failed to open slot device {os.fspath(path)}: {exc.strerror}") from exc
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if not stat.S_ISBLK(st.st_mode):
        raise InstallError(f"Slot device {os.fspath(path)} is neither a block device nor a file")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return int(struct.unpack("=Q", buf)[0])
    finally:
        os.close(fd)


def image_size(job: ImageJob) -> int:
    """Size of the image file (the manifest size if present)."""
    if job.image.size is not None:
        return int(job.image.size)
    try:
        return job.path.stat().st_size
    except OSError as exc:
        raise InstallError(f"Failed to open image {job.path}: {exc.strerror}") from exc


def precheck(job: ImageJob) -> str:
    """All checks before writing: readonly, type combination, device, size. Returns the method."""
    slot = job.slot
    if slot.readonly:
        raise InstallError(f"Reject writing to readonly slot {slot.name}")
    if "install" in job.image.hooks:
        method = "hook"
    else:
        method = check_combination(job.image_type, slot.type)
    if method in (COPY, TAR, EMPTYFS, GPT_SWITCH, "hook") and not os.path.exists(slot.device):
        raise InstallError(f"Slot device {slot.device} of slot {slot.name} does not exist")
    if slot.size_limit is not None and job.image.size is not None and job.image.size > slot.size_limit:
        raise InstallError(f"Image size ({job.image.size} bytes) exceeds size limit of slot {slot.name} "
                           f"({slot.size_limit} bytes)")
    if method == COPY:
        need, have = image_size(job), device_size(slot.device)
        if need > have:
            raise InstallError(f"Image size ({need} bytes) exceeds size of slot {slot.name} ({have} bytes)")
    if method == GPT_SWITCH:
        gpt_plan(job)
    return method


def gpt_plan(job: ImageJob) -> gpt.GptSwitchPlan:
    """Check a boot-gpt-switch slot and the image; where the image goes."""
    slot = job.slot
    return gpt.plan(slot.device, slot.region_start, slot.region_size, slot.name, image_size(job))


def copy_workers() -> int:
    """Readers for :func:`copy_image`: more than the CPUs, since each waits for its block to be verified."""
    return min(8, max(4, 2 * parallel.default_workers()))


def copy_image(src: Path, dst: str, *, size: int | None, sha256: str | None,
               progress: Progress | None = None, offset: int = 0, limit: int | None = None,
               workers: int | None = None, exclusive: bool = True) -> None:
    """Copy ``src`` to ``dst`` at ``offset`` (no truncation), then fsync.

    Chunks are copied by ``workers`` threads at once: a squashfs file on dm-verity (and dm-crypt)
    reads one block at a time, so a single reader leaves all but one CPU idle while the kernel hashes
    and decrypts; progress is reported in order.
    ``sha256`` given: the data is read into memory (at most ``2 * workers`` chunks at once), hashed
    while copying and must match (plain bundles: nothing below the file system authenticates what is
    read). ``None`` (verity and crypt bundles, where dm-verity authenticates every block before it is
    read; write-slot): the kernel moves each chunk (``splice``), so no byte of the image passes
    through this process's memory.
    ``limit`` bounds the bytes that may be written (a region half of a boot-gpt-switch slot).
    ``exclusive``: a block device is opened with ``O_EXCL``, as RAUC opens a slot device, so that a
    device that is mounted or otherwise claimed (swap, md, dm) is refused with EBUSY before the first
    byte (not for a region of a whole disk whose other partitions are in use).
    Size problems are found before the first byte is written.
    """
    expected = sha256.lower() if sha256 is not None else None
    try:
        fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InstallError(f"Failed to open image {src.name}: {exc.strerror}") from exc
    try:
        st = os.fstat(fin)
        total = st.st_size
        if size is not None and total != size:
            raise InstallError(f"Image {src.name} has {total} bytes, manifest says {size}")
        if limit is not None and total > limit:
            raise InstallError(f"Image {src.name} is larger than the space on {dst} ({limit} bytes)")
        try:
            fd = os.open(dst, os.O_WRONLY | os.O_CLOEXEC | (os.O_EXCL if exclusive else 0))
        except OSError as exc:
            raise InstallError(f"Opening output device {dst} failed: {exc.strerror}") from exc
        try:
            if expected is None and stat.S_ISREG(st.st_mode):
                _copy_in_kernel(fin, fd, src.name, total, offset, workers or copy_workers(), progress)
            else:       # (not a regular file: the read path's error names what is wrong)
                actual = _copy_read(fin, fd, src.name, total, offset, workers or copy_workers(), progress)
                if expected is not None and actual != expected:
                    raise InstallError(f"Image {src.name} has checksum {actual}, manifest says {sha256}")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InstallError(f"Failed to copy image {src.name} to {dst}: {exc.strerror}") from exc
    finally:
        os.close(fin)


def _ended_early(name: str, pos: int, total: int) -> InstallError:
    return InstallError(f"Image {name} ended early at {pos} of {total} bytes")


def _copy_read(fin: int, fd: int, name: str, total: int, offset: int, workers: int,
               progress: Progress | None) -> str:
    """The chunks of ``fin`` through memory into ``fd`` at ``offset``; their sha256 (hex)."""
    digest = hashlib.sha256()

    def read_at(pos: int) -> bytes:
        want = min(CHUNK, total - pos)
        data = os.pread(fin, want, pos)
        while len(data) < want:     # a short read (not expected from a regular file)
            more = os.pread(fin, want - len(data), pos + len(data))
            if not more:
                raise _ended_early(name, pos + len(data), total)
            data += more
        return data

    done = 0
    for chunk in parallel.ordered_map(read_at, range(0, total, CHUNK), workers, name="pyrauc-copy"):
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            n = os.pwrite(fd, view, offset + done)
            view = view[n:]
            done += n
        if progress is not None:
            progress(done, total)
    return digest.hexdigest()


def _copy_in_kernel(fin: int, fd: int, name: str, total: int, offset: int, workers: int,
                    progress: Progress | None) -> None:
    """The chunks of ``fin`` into ``fd`` at ``offset``, ``workers`` at once, moved by the kernel:
    ``splice`` from the file into a pipe of each reader's own and from there into ``fd``.
    (``sendfile`` does the same through a 64 KiB pipe and was measured a third slower on the lab
    target; a 1 MiB pipe lets the file system read and the device take large pieces.)"""
    pipes: list[tuple[int, int]] = []
    local = threading.local()

    def pipe() -> tuple[int, int]:
        p: tuple[int, int] | None = getattr(local, "pipe", None)
        if p is None:
            p = os.pipe2(os.O_CLOEXEC)
            pipes.append(p)
            with suppress(OSError):      # above /proc/sys/fs/pipe-max-size: the default size
                fcntl.fcntl(p[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            local.pipe = p
        return p

    def send(pos: int) -> int:
        r, w = pipe()
        want = min(CHUNK, total - pos)
        done = 0
        while done < want:
            n = os.splice(fin, w, want - done, offset_src=pos + done)
            if n == 0:
                raise _ended_early(name, pos + done, total)
            out = 0
            while out < n:
                m = os.splice(r, fd, n - out, offset_dst=offset + pos + done + out)
                if m == 0:              # the output took nothing: never loop on it
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                out += m
            done += n
        return pos + want

    try:
        with closing(parallel.ordered_map(send, range(0, total, CHUNK), workers, name="pyrauc-copy")) as ends:
            for end in ends:
                if progress is not None:
                    progress(end, total)
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


#: slot and image types whose copy can be adaptive (RAUC: the handlers on its shared image writer)
ADAPTIVE_SLOT_TYPES = frozenset({"ext4", "vfat", "raw"})
ADAPTIVE_IMAGE_TYPES = frozenset({"ext4", "vfat", "raw", "squashfs"})


def copy_adaptive(job: ImageJob, adaptive: AdaptiveJob, progress: Progress | None = None) -> bool:
    """The adaptive copy of ``job`` (see :mod:`pyrauc.hash_index`); False after an error (the caller then
    copies the whole image, as RAUC does)."""
    from pyrauc import hash_index

    slot = job.slot
    log.info("Selected adaptive update method 'block-hash-index'")
    total = int(job.image.size or 1)

    def step(share: float) -> None:        # RAUC: 10 % for the target's index, 20 % with the seed's
        if progress is not None:
            progress(int(total * share), total)

    def copying(done: int, size: int) -> None:
        step(0.2 + 0.8 * done / max(size, 1))

    try:
        sources = hash_index.Sources()
        sources.target_index = hash_index.slot_index(slot.device, adaptive.data_directory, slot.name,
                                                     adaptive.target_digest)
        hash_index.mark_unknown(adaptive.data_directory, slot.name)
        step(0.1)
        if adaptive.seed_device is None or adaptive.seed_name is None:
            log.info(f"No active slot available to use as seed for {slot.name}")
        else:
            sources.seed_device = adaptive.seed_device
            sources.seed_index = hash_index.slot_index(adaptive.seed_device, adaptive.data_directory,
                                                       adaptive.seed_name, adaptive.seed_digest)
        step(0.2)
        index_path = job.path.with_name(job.path.name + ".block-hash-index")
        index = (hash_index.HashIndex.load(index_path) if index_path.is_file()
                 else hash_index.HashIndex.build(job.path))
        stats = hash_index.adaptive_copy(job.path, index, slot.device, sources, progress=copying)
    except (InstallError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning(f"Continuing after adaptive mode error: {reason}")
        return False
    log.info(f"adaptive copy of {job.path.name}: {stats.image_bytes} of {len(index) * hash_index.BLOCK} bytes read "
             f"from the image, {stats.written_blocks} blocks written")
    if job.image.sha256:
        try:
            hash_index.save_slot_index(index, adaptive.data_directory, slot.name, job.image.sha256)
        except OSError as exc:
            log.warning(f"Continuing after failure to write new hash index: {exc.strerror}")
    return True


def _run_tool(argv: list[str], what: str) -> None:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise InstallError(f"{what} failed: cannot run {argv[0]}: {exc.strerror}") from exc
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
        raise InstallError(f"{what} failed: {lines[-1] if lines else f'exit code {res.returncode}'}")


def mkfs_argv(slot: SlotInfo) -> list[str]:
    """The mkfs command line for the slot's file system."""
    if slot.type == "ext4":
        return ["mkfs.ext4", "-F", "-q", *slot.extra_mkfs_opts, slot.device]
    if slot.type == "vfat":
        return ["mkfs.vfat", *slot.extra_mkfs_opts, slot.device]
    raise InstallError(f"Creating a file system on slot type '{slot.type}' is not supported by pyrauc")


def format_slot(slot: SlotInfo) -> None:
    """Create an empty file system on the slot."""
    _run_tool(mkfs_argv(slot), f"Formatting slot {slot.name}")


def extract_tar(archive: Path, slot: SlotInfo, mountprefix: str) -> None:
    """mkfs, mount the slot, extract ``archive`` into it, unmount."""
    format_slot(slot)
    with mount.mount_slot(slot.device, slot.name, slot.type, mountprefix=mountprefix,
                          extra_options=slot.extra_mount_opts) as mp:
        argv = ["tar", "--numeric-owner", "-x", "-f", os.fspath(archive), "-C", os.fspath(mp)]
        if slot.type == "vfat":
            argv[1:1] = ["--no-same-owner", "--no-same-permissions"]
            argv.remove("--numeric-owner")
        _run_tool(argv, f"Extracting {archive.name} to slot {slot.name}")
        os.sync()


def _slot_hook_env(job: ImageJob, henv: HandlerEnv, mount_point: Path | None,
                   extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(henv.base_env)
    env["RAUC_MOUNT_PREFIX"] = henv.mountprefix
    env["RAUC_BUNDLE_MOUNT_POINT"] = os.fspath(henv.bundle_mount)
    slot = job.slot
    env.update(hooks.slot_env(name=slot.name, sclass=slot.sclass, slot_type=slot.type, device=slot.device,
                              state=slot.state, bootname=slot.bootname, parent=slot.parent,
                              mount_point=mount_point))
    env.update(hooks.image_env(path=job.path, size=job.image.size, digest=job.image.sha256,
                               sclass=job.image.slotclass))
    env.update(extra or {})
    return env


def run_slot_hook(job: ImageJob, henv: HandlerEnv, action: str, extra_env: Mapping[str, str] | None = None
                  ) -> None:
    """Run ``<hook> slot-<action>``, mounting a mountable slot for pre/post-install."""
    if not henv.hook_name:
        raise InstallError(f"Image {job.image.slotclass} requests hooks but the manifest has no hook file")
    hook = hooks.hook_path(henv.bundle_mount, henv.hook_name)
    slot = job.slot
    want_mount = action in ("pre-install", "post-install") and slot.type in MOUNTABLE
    ctx = (mount.mount_slot(slot.device, slot.name, slot.type, mountprefix=henv.mountprefix,
                            extra_options=slot.extra_mount_opts) if want_mount else nullcontext(None))
    with ctx as mp:
        try:
            hooks.run_hook(hook, f"slot-{action}", _slot_hook_env(job, henv, mp, extra_env))
        except InstallError as exc:
            raise InstallError(f"Slot {action} hook failed for {slot.name}: {exc}") from exc


def _check_digest(job: ImageJob) -> str | None:
    """The sha256 to check while copying: none when dm-verity already authenticates the data."""
    return None if job.verified_by_dm else job.image.sha256


def install_image(job: ImageJob, henv: HandlerEnv, *, progress: Progress | None = None,
                  method: str | None = None) -> None:
    """Write ``job.image`` to ``job.slot`` (hooks included). Call :func:`precheck` first."""
    method = method or precheck(job)
    image_hooks = job.image.hooks
    switch = gpt_plan(job) if method == GPT_SWITCH else None
    boot_env = switch.hook_env() if switch is not None else None
    if "pre-install" in image_hooks:
        run_slot_hook(job, henv, "pre-install", boot_env)
    if method == "hook":
        run_slot_hook(job, henv, "install")
    elif method == COPY:
        if job.adaptive is None or not copy_adaptive(job, job.adaptive, progress):
            copy_image(job.path, job.slot.device, size=job.image.size, sha256=_check_digest(job), progress=progress)
        if job.slot.resize and job.slot.type == "ext4" and job.image_type == "ext4":
            _run_tool(["resize2fs", job.slot.device], f"Resizing file system of slot {job.slot.name}")
    elif method == TAR:
        extract_tar(job.path, job.slot, henv.mountprefix)
    elif method == EMPTYFS:
        format_slot(job.slot)
    elif switch is not None:
        gpt.clear_half(switch)
        copy_image(job.path, switch.device, size=job.image.size, sha256=_check_digest(job), progress=progress,
                   offset=switch.target_start, limit=switch.half_size, exclusive=False)
        gpt.switch_partition(switch)
    else:
        raise InstallError(f"unknown handler method '{method}'")
    if "post-install" in image_hooks:
        run_slot_hook(job, henv, "post-install", boot_env)



def should_skip(job: ImageJob, installed_sha256: str | None, installed_status: str | None) -> bool:
    """install-same=false and the slot already holds this image: its stored sha256 matches and its
    last install ended with status "ok" (RAUC >= 1.13: a slot whose copy was cut off by a power
    loss keeps the new digest with status "pending" and must be written again)."""
    return (not job.slot.install_same and installed_status == "ok" and installed_sha256 is not None
            and job.image.sha256 is not None and installed_sha256.lower() == job.image.sha256.lower())


def handler_env(*, base: Mapping[str, str], slots: list[SlotInfo], targets: Mapping[str, ImageJob],
                ) -> dict[str, str]:
    """RAUC_SLOTS / RAUC_TARGET_SLOTS and the numbered RAUC_SLOT_*_n / RAUC_IMAGE_*_n variables."""
    env = dict(base)
    numbers, target_numbers = [], []
    for n, slot in enumerate(slots, start=1):
        numbers.append(str(n))
        env[f"RAUC_SLOT_NAME_{n}"] = slot.name
        env[f"RAUC_SLOT_CLASS_{n}"] = slot.sclass
        env[f"RAUC_SLOT_TYPE_{n}"] = slot.type
        env[f"RAUC_SLOT_DEVICE_{n}"] = slot.device
        env[f"RAUC_SLOT_BOOTNAME_{n}"] = slot.bootname or ""
        env[f"RAUC_SLOT_PARENT_{n}"] = slot.parent or ""
        job = targets.get(slot.name)
        if job is not None:
            target_numbers.append(str(n))
            env[f"RAUC_IMAGE_NAME_{n}"] = os.fspath(job.path)
            env[f"RAUC_IMAGE_DIGEST_{n}"] = job.image.sha256 or ""
            env[f"RAUC_IMAGE_CLASS_{n}"] = job.image.slotclass
    env["RAUC_SLOTS"] = " ".join(numbers)
    env["RAUC_TARGET_SLOTS"] = " ".join(target_numbers)
    return env
