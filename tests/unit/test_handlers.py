"""handlers.py: image x slot table, pre-write checks, copy, mkfs + tar, slot hooks.

Slot devices are plain files here (mount(8) sets up a loop device for mountable slots itself);
the mkfs/mount tests need root.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from pyrauc import handlers, mount
from pyrauc.errors import InstallError
from pyrauc.manifest import Image
from tests.helpers.bundles import tar_bytes

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mkfs, mount)")


def _kernel_has(fs: str) -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == fs for line in f if line.strip())


def fs_param(fs: str) -> object:
    return pytest.param(fs, marks=pytest.mark.skipif(not _kernel_has(fs), reason=f"kernel lacks {fs}"))


def make_job(tmp_path: Path, data: bytes, *, filename: str = "rootfs.img", slot_type: str = "raw",
             slot_size: int = 1 << 20, hooks: list[str] | None = None, **slot_kw: object) -> handlers.ImageJob:
    img = tmp_path / filename
    img.write_bytes(data)
    dev = tmp_path / "slot.img"
    dev.write_bytes(b"\xff" * slot_size)
    image = Image(slotclass="rootfs", filename=filename, sha256=hashlib.sha256(data).hexdigest(),
                  size=len(data), hooks=hooks or [])
    slot = handlers.SlotInfo("rootfs.1", "rootfs", str(dev), type=slot_type, bootname="B", **slot_kw)  # type: ignore[arg-type]
    return handlers.ImageJob(image=image, path=img, slot=slot)


def henv(tmp_path: Path, hook_name: str | None = None) -> handlers.HandlerEnv:
    return handlers.HandlerEnv(mountprefix=str(tmp_path / "mnt"), bundle_mount=tmp_path, hook_name=hook_name,
                               base_env={"RAUC_SYSTEM_COMPATIBLE": "Test Config"})


@pytest.mark.parametrize("image_type,slot_type", [
    ("raw", "raw"), ("raw", "ext4"), ("raw", "vfat"), ("ext4", "ext4"), ("ext4", "raw"), ("vfat", "vfat"),
    ("vfat", "raw"), ("squashfs", "raw"), ("tar", "ext4"), ("tar", "vfat"), ("emptyfs", "ext4")])
def test_supported_combinations(image_type: str, slot_type: str) -> None:
    assert handlers.check_combination(image_type, slot_type) in (handlers.COPY, handlers.TAR, handlers.EMPTYFS)


@pytest.mark.parametrize("image_type,slot_type", [
    ("ext4", "vfat"), ("tar", "raw"), ("emptyfs", "vfat"), ("squashfs", "ext4"), ("vfat", "ext4")])
def test_unsupported_combinations(image_type: str, slot_type: str) -> None:
    with pytest.raises(InstallError) as exc:
        handlers.check_combination(image_type, slot_type)
    assert str(exc.value) == f"Unsupported image type '{image_type}' for slot type '{slot_type}'"


@pytest.mark.parametrize("image_type,slot_type", [("raw", "boot-mbr-switch"), ("ubifs", "ubivol"),
                                                  ("raw", "nand")])
def test_table_entries_not_implemented(image_type: str, slot_type: str) -> None:
    with pytest.raises(InstallError, match="is not supported by pyrauc"):
        handlers.check_combination(image_type, slot_type)


def test_copy_raw(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    job = make_job(tmp_path, data)
    seen: list[tuple[int, int]] = []
    handlers.install_image(job, henv(tmp_path), progress=lambda d, t: seen.append((d, t)))
    written = Path(job.slot.device).read_bytes()
    assert written[:len(data)] == data and written[len(data):] == b"\xff" * ((1 << 20) - len(data))
    assert seen[-1] == (len(data), len(data))


def test_readonly_slot_rejected_before_writing(tmp_path: Path) -> None:
    job = make_job(tmp_path, b"x" * 4096, readonly=True)
    with pytest.raises(InstallError, match=r"^Reject writing to readonly slot rootfs.1$"):
        handlers.install_image(job, henv(tmp_path))
    assert Path(job.slot.device).read_bytes() == b"\xff" * (1 << 20)


def test_image_larger_than_slot(tmp_path: Path) -> None:
    job = make_job(tmp_path, b"x" * 8192, slot_size=4096)
    with pytest.raises(InstallError) as exc:
        handlers.precheck(job)
    assert str(exc.value) == "Image size (8192 bytes) exceeds size of slot rootfs.1 (4096 bytes)"
    assert Path(job.slot.device).read_bytes() == b"\xff" * 4096


def test_missing_device(tmp_path: Path) -> None:
    job = make_job(tmp_path, b"x")
    job.slot.device = str(tmp_path / "nope")
    with pytest.raises(InstallError, match="does not exist"):
        handlers.precheck(job)


def test_checksum_mismatch(tmp_path: Path) -> None:
    job = make_job(tmp_path, b"y" * 5000)
    job.image.sha256 = "0" * 64
    with pytest.raises(InstallError, match="has checksum"):
        handlers.install_image(job, henv(tmp_path))


@pytest.mark.parametrize("hashed,workers", [(True, 3), (False, 3), (False, 1)])
def test_copy_many_chunks_in_order(tmp_path: Path, hashed: bool, workers: int) -> None:
    """More chunks than readers in flight, an odd tail, written at an offset: bytes land in order,
    through memory with the digest checked, or copied by the kernel (no digest: verity and crypt)."""
    data = os.urandom(9 * handlers.CHUNK + 12345)
    src = tmp_path / "big.img"
    src.write_bytes(data)
    dev = tmp_path / "dev"
    dev.write_bytes(b"\xee" * (len(data) + 8192))
    seen: list[tuple[int, int]] = []
    fds = len(os.listdir("/proc/self/fd"))
    handlers.copy_image(src, str(dev), size=len(data), sha256=hashlib.sha256(data).hexdigest() if hashed else None,
                        progress=lambda done, total: seen.append((done, total)), offset=4096, workers=workers)
    assert len(os.listdir("/proc/self/fd")) == fds          # the kernel copy's pipes are closed
    out = dev.read_bytes()
    assert out[4096:4096 + len(data)] == data
    assert out[:4096] == b"\xee" * 4096 and out[4096 + len(data):] == b"\xee" * 4096
    assert seen[-1] == (len(data), len(data)) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_checksum_not_rechecked_behind_dm_verity(tmp_path: Path) -> None:
    """verity/crypt bundles: dm-verity authenticates every block, the handler does not hash again."""
    job = make_job(tmp_path, b"y" * 5000)
    job.image.sha256 = "0" * 64
    job.verified_by_dm = True
    handlers.install_image(job, henv(tmp_path))
    assert Path(job.slot.device).read_bytes()[:5000] == b"y" * 5000


@pytest.mark.parametrize("limit,size,match", [(None, 4999, "has 5000 bytes, manifest says 4999"),
                                              (4096, 5000, "larger than the space")])
def test_copy_size_errors_before_writing(tmp_path: Path, limit: int | None, size: int, match: str) -> None:
    job = make_job(tmp_path, b"z" * 5000)
    with pytest.raises(InstallError, match=match):
        handlers.copy_image(job.path, job.slot.device, size=size, sha256=None, limit=limit)
    assert Path(job.slot.device).read_bytes() == b"\xff" * (1 << 20)


def test_copy_read_error_is_one_install_error(tmp_path: Path) -> None:
    job = make_job(tmp_path, b"x")
    with pytest.raises(InstallError, match=r"Failed to copy image .* Is a directory"):
        handlers.copy_image(tmp_path, job.slot.device, size=None, sha256=None)


def test_install_same_skip() -> None:
    image = Image(slotclass="rootfs", filename="r.img", sha256="AB" * 32)
    job = handlers.ImageJob(image, Path("/x"), handlers.SlotInfo("rootfs.1", "rootfs", "/dev/null"))
    assert not handlers.should_skip(job, "ab" * 32, "ok")       # install-same=true (default) always installs
    job.slot.install_same = False
    assert handlers.should_skip(job, "ab" * 32, "ok")
    assert not handlers.should_skip(job, "cd" * 32, "ok")
    assert not handlers.should_skip(job, None, "ok")
    # a copy cut off by a power loss left the digest but not status=ok: install again (RAUC 1.13)
    assert not handlers.should_skip(job, "ab" * 32, "pending")
    assert not handlers.should_skip(job, "ab" * 32, "failed")
    assert not handlers.should_skip(job, "ab" * 32, None)


def test_block_device_size(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"\0" * 12345)
    assert handlers.device_size(f) == 12345
    with pytest.raises(InstallError, match="neither a block device nor a file"):
        handlers.device_size("/dev/null")


def _read_from_fs(tmp_path: Path, device: str, fstype: str, name: str) -> bytes:
    with mount.mount_slot(device, "check", fstype, mountprefix=str(tmp_path / "chk"), read_only=True) as mp:
        return (mp / name).read_bytes()


@root_only
@pytest.mark.parametrize("slot_type", [fs_param("ext4"), fs_param("vfat")])
def test_tar_into_fs(tmp_path: Path, slot_type: str) -> None:
    job = make_job(tmp_path, tar_bytes({"etc/hello.txt": b"hello\n", "bin/tool": b"\x7fELF"}),
                   filename="root.tar", slot_type=slot_type, slot_size=8 << 20)
    handlers.install_image(job, henv(tmp_path))
    assert _read_from_fs(tmp_path, job.slot.device, slot_type, "etc/hello.txt") == b"hello\n"
    assert not mount.is_mounted(tmp_path / "mnt" / "rootfs.1")


@root_only
def test_emptyfs(tmp_path: Path) -> None:
    job = make_job(tmp_path, b"", filename="empty.img", slot_type="ext4", slot_size=8 << 20)
    job.image_type = "emptyfs"
    handlers.install_image(job, henv(tmp_path))
    out = subprocess.run(["blkid", "-o", "value", "-s", "TYPE", job.slot.device], capture_output=True, text=True)
    assert out.stdout.strip() == "ext4"


@root_only
def test_slot_hooks(tmp_path: Path) -> None:
    log = tmp_path / "hook.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"""#!/bin/sh
echo "$1 $RAUC_SLOT_NAME $RAUC_SLOT_CLASS $RAUC_SLOT_TYPE $RAUC_SLOT_BOOTNAME mp=$RAUC_SLOT_MOUNT_POINT \
img=$(basename $RAUC_IMAGE_NAME) $RAUC_IMAGE_CLASS $RAUC_SYSTEM_COMPATIBLE" >> {log}
if [ "$1" = slot-post-install ]; then echo post > "$RAUC_SLOT_MOUNT_POINT/marker"; fi
""")
    hook.chmod(0o755)
    job = make_job(tmp_path, tar_bytes({"a": b"a"}), filename="root.tar", slot_type="ext4", slot_size=8 << 20,
                   hooks=["pre-install", "post-install"])
    # pre-install mounts the (not yet formatted) slot: give it a file system first
    subprocess.run(["mkfs.ext4", "-F", "-q", job.slot.device], check=True)
    handlers.install_image(job, henv(tmp_path, "hook.sh"))
    lines = log.read_text().splitlines()
    mp = tmp_path / "mnt" / "rootfs.1"
    assert lines == [
        f"slot-pre-install rootfs.1 rootfs ext4 B mp={mp} img=root.tar rootfs Test Config",
        f"slot-post-install rootfs.1 rootfs ext4 B mp={mp} img=root.tar rootfs Test Config",
    ]
    assert _read_from_fs(tmp_path, job.slot.device, "ext4", "marker") == b"post\n"


def test_install_hook_replaces_copy(tmp_path: Path) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text('#!/bin/sh\n[ "$1" = slot-install ] && cp "$RAUC_IMAGE_NAME" "$RAUC_SLOT_DEVICE.copy"\n')
    hook.chmod(0o755)
    job = make_job(tmp_path, b"data" * 10, hooks=["install"], slot_type="nand")
    handlers.install_image(job, henv(tmp_path, "hook.sh"))
    assert Path(job.slot.device + ".copy").read_bytes() == b"data" * 10
    assert Path(job.slot.device).read_bytes() == b"\xff" * (1 << 20)


def test_failing_slot_hook(tmp_path: Path) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text('#!/bin/sh\necho "not today" >&2\nexit 1\n')
    hook.chmod(0o755)
    job = make_job(tmp_path, b"data", hooks=["pre-install"])
    with pytest.raises(InstallError) as exc:
        handlers.install_image(job, henv(tmp_path, "hook.sh"))
    assert str(exc.value) == "Slot pre-install hook failed for rootfs.1: Hook returned with exit code 1: not today"
    assert Path(job.slot.device).read_bytes() == b"\xff" * (1 << 20)
