"""boot-gpt-switch: image into the inactive half of the region, then GPT partition 1 switched.

The slot device is a 64 MiB disk-image file with a GPT made by sfdisk: region at 4 MiB of
2 x 8 MiB, partition 1 in its first half, partition 2 ("data") behind the region.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyrauc import gpt, handlers
from pyrauc.errors import InstallError
from pyrauc.manifest import Image

pytestmark = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="needs sfdisk")

MiB = 1 << 20
SECTOR = 512
REGION_START = 4 * MiB
REGION_SIZE = 16 * MiB
HALF = REGION_SIZE // 2
BOOTCODE = b"PYRAUC-MBR-BOOT-CODE"

DEFAULT_LAYOUT = (
    'start=4MiB, size=8MiB, type=uefi, name="boot", uuid=AAAAAAAA-0000-4000-8000-000000000001, '
    'attrs="LegacyBIOSBootable"\n'
    'start=24MiB, size=16MiB, type=linux, name="data", uuid=AAAAAAAA-0000-4000-8000-000000000002\n')


def make_disk(path: Path, layout: str = DEFAULT_LAYOUT, label: str = "gpt") -> Path:
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.write(BOOTCODE)
    script = f"label: {label}\n"
    if label == "gpt":
        script += "label-id: 11111111-2222-4333-8444-555555555555\n"
    subprocess.run(["sfdisk", "-q", "--wipe", "never", os.fspath(path)], input=script + layout, text=True,
                   check=True, capture_output=True)
    return path


def sfdisk_json(path: Path) -> dict:
    out = subprocess.run(["sfdisk", "--json", os.fspath(path)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["partitiontable"]


def sfdisk_verify(path: Path) -> None:
    res = subprocess.run(["sfdisk", "--verify", os.fspath(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No errors detected" in res.stdout


def read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def make_job(tmp_path: Path, disk: Path, data: bytes, *, image_type: str = "raw", hooks: list[str] | None = None,
             region_start: int | None = REGION_START, region_size: int | None = REGION_SIZE,
             name: str = "boot.img") -> handlers.ImageJob:
    img = tmp_path / name
    img.write_bytes(data)
    image = Image(slotclass="efi", filename=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                  hooks=hooks or [])
    slot = handlers.SlotInfo("efi.0", "efi", os.fspath(disk), type="boot-gpt-switch",
                             region_start=region_start, region_size=region_size)
    return handlers.ImageJob(image=image, path=img, slot=slot, image_type=image_type)


def henv(tmp_path: Path, hook_name: str | None = None) -> handlers.HandlerEnv:
    return handlers.HandlerEnv(mountprefix=os.fspath(tmp_path / "mnt"), bundle_mount=tmp_path,
                               hook_name=hook_name)


def install(job: handlers.ImageJob, tmp_path: Path, hook_name: str | None = None) -> None:
    method = handlers.precheck(job)
    assert method == handlers.GPT_SWITCH
    handlers.install_image(job, henv(tmp_path, hook_name), method=method)


def without_p1_placement(table: dict) -> dict:
    table = json.loads(json.dumps(table))
    del table["partitions"][0]["start"]
    del table["partitions"][0]["size"]
    return table


@pytest.mark.parametrize("image_type", ["raw", "vfat", "ext4"])
def test_combination_supported(image_type: str) -> None:
    assert handlers.check_combination(image_type, "boot-gpt-switch") == handlers.GPT_SWITCH


def test_install_twice_alternates_halves(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    disk = make_disk(tmp_path / "disk.img")
    before = sfdisk_json(disk)
    data_part = read_at(disk, 24 * MiB, 16 * MiB)
    first = os.urandom(3 * MiB + 1234)
    with caplog.at_level("INFO", logger="pyrauc.gpt"):
        install(make_job(tmp_path, disk, first), tmp_path)
    assert [r.getMessage() for r in caplog.records if r.name == "pyrauc.gpt"] == [
        f"Found inactive (second) half of boot partition region (pos. {REGION_START + HALF}B, size {HALF}B)",
        f"Clearing inactive (second) half of boot partition region on {disk}",
        f"Write image to inactive (second) half of boot partition region on {disk}",
        "Setting second half of boot partition region active in GPT"]
    caplog.clear()

    after1 = sfdisk_json(disk)
    p1 = after1["partitions"][0]
    assert (p1["start"], p1["size"]) == ((REGION_START + HALF) // SECTOR, HALF // SECTOR)
    assert without_p1_placement(after1) == without_p1_placement(before)
    assert read_at(disk, REGION_START + HALF, len(first)) == first
    assert read_at(disk, REGION_START, 16) == b"\0" * 16          # old half untouched
    sfdisk_verify(disk)

    second = os.urandom(HALF)                                     # exactly a half fits
    with caplog.at_level("INFO", logger="pyrauc.gpt"):
        install(make_job(tmp_path, disk, second), tmp_path)
    assert "Setting first half of boot partition region active in GPT" in caplog.messages
    after2 = sfdisk_json(disk)
    p1 = after2["partitions"][0]
    assert (p1["start"], p1["size"]) == (REGION_START // SECTOR, HALF // SECTOR)
    assert without_p1_placement(after2) == without_p1_placement(before)
    assert read_at(disk, REGION_START, HALF) == second
    assert read_at(disk, REGION_START + HALF, len(first)) == first  # previous image still there
    assert read_at(disk, 24 * MiB, 16 * MiB) == data_part
    assert read_at(disk, 0, len(BOOTCODE)) == BOOTCODE             # MBR boot code kept
    sfdisk_verify(disk)


def test_inactive_half_is_cleared_before_the_image(tmp_path: Path) -> None:
    """RAUC zeroes the whole inactive half first: an older, larger image leaves nothing behind."""
    disk = make_disk(tmp_path / "disk.img")
    with open(disk, "r+b") as f:
        f.seek(REGION_START + HALF)
        f.write(b"\xee" * HALF)                   # an old image filling the inactive half
    install(make_job(tmp_path, disk, b"n" * 4096), tmp_path)
    assert read_at(disk, REGION_START + HALF, 4096) == b"n" * 4096
    assert read_at(disk, REGION_START + HALF + 4096, HALF - 4096) == bytes(HALF - 4096)


def test_smaller_partition_grows_to_half(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.img", 'start=12MiB, size=2MiB, type=uefi, name="boot"\n'
                                           'start=24MiB, size=16MiB, type=linux\n')
    install(make_job(tmp_path, disk, b"x" * 4096), tmp_path)
    p1 = sfdisk_json(disk)["partitions"][0]
    assert (p1["start"], p1["size"]) == (REGION_START // SECTOR, HALF // SECTOR)
    assert read_at(disk, REGION_START, 4096) == b"x" * 4096
    sfdisk_verify(disk)


@pytest.mark.skipif(shutil.which("mkfs.vfat") is None, reason="needs mkfs.vfat")
def test_vfat_image(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.img")
    vfat = tmp_path / "src.vfat"
    with open(vfat, "wb") as f:
        f.truncate(4 * MiB)
    subprocess.run(["mkfs.vfat", "-n", "BOOT", os.fspath(vfat)], check=True, capture_output=True)
    data = vfat.read_bytes()
    install(make_job(tmp_path, disk, data, image_type="vfat", name="boot.vfat"), tmp_path)
    assert read_at(disk, REGION_START + HALF, len(data)) == data
    if shutil.which("fsck.vfat"):
        part = tmp_path / "part.vfat"
        part.write_bytes(read_at(disk, REGION_START + HALF, HALF))
        subprocess.run(["fsck.vfat", "-n", os.fspath(part)], check=True, capture_output=True)


def test_hook_env(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.img")
    out = tmp_path / "hook.out"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $RAUC_BOOT_PARTITION_ACTIVATING $RAUC_BOOT_PARTITION_START '
                    f'$RAUC_BOOT_PARTITION_SIZE $RAUC_BOOT_REGION_START $RAUC_BOOT_REGION_SIZE" >> {out}\n')
    hook.chmod(0o755)
    job = make_job(tmp_path, disk, b"a" * 1000, hooks=["pre-install", "post-install"])
    install(job, tmp_path, hook_name="hook.sh")
    expect = f"1 {REGION_START + HALF} {HALF} {REGION_START} {REGION_SIZE}"
    assert out.read_text().splitlines() == [f"slot-pre-install {expect}", f"slot-post-install {expect}"]


def assert_rejected(tmp_path: Path, disk: Path, match: str, **kw: object) -> None:
    data = kw.pop("data", b"z" * 4096)
    before = disk.read_bytes()
    job = make_job(tmp_path, disk, data, **kw)  # type: ignore[arg-type]
    with pytest.raises(InstallError, match=match):
        handlers.precheck(job)
    with pytest.raises(InstallError, match=match):
        handlers.install_image(job, henv(tmp_path), method=handlers.GPT_SWITCH)
    assert disk.read_bytes() == before


def test_image_too_large(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.img")
    assert_rejected(tmp_path, disk, rf"Size of image \({HALF + 1}\) does not fit to slot size {HALF}$",
                    data=b"y" * (HALF + 1))


@pytest.mark.parametrize("layout", [
    'start=2MiB, size=1MiB, type=uefi\nstart=24MiB, size=1MiB\n',       # outside the region
    'start=5MiB, size=1MiB, type=uefi\nstart=24MiB, size=1MiB\n',       # not at a half's start
    'start=4MiB, size=9MiB, type=uefi\nstart=24MiB, size=1MiB\n',       # crosses into the other half
])
def test_partition1_not_in_a_half(tmp_path: Path, layout: str) -> None:
    disk = make_disk(tmp_path / "disk.img", layout)
    assert_rejected(tmp_path, disk, "^Boot partition's start address does not match region configuration")


def test_other_partition_overlaps_region(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.img", 'start=4MiB, size=8MiB, type=uefi\nstart=18MiB, size=4MiB\n')
    assert_rejected(tmp_path, disk, r"^Region \(sectors 8192 - 40959\) overlaps with partition 2 "
                    r"\(sectors 36864 - 45055\)$")


def test_no_partition1(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.img", "2 : start=24MiB, size=1MiB\n")
    assert_rejected(tmp_path, disk, "^No boot partition found in entry 0")


def test_not_gpt(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.img", "start=4MiB, size=8MiB, type=c\n", label="dos")
    assert_rejected(tmp_path, disk, "^GPT not found")


@pytest.mark.parametrize("kw,match", [
    ({"region_start": None}, "^Region configuration is invalid"),
    ({"region_size": None}, "^Region configuration is invalid"),
    ({"region_start": REGION_START + 100}, rf"^Region start {REGION_START + 100} is not aligned to grain-size {MiB}$"),
    ({"region_start": REGION_START + 512 * 1024}, "^Region start .* is not aligned to grain-size"),
    ({"region_size": REGION_SIZE + 512}, rf"^Region size {REGION_SIZE + 512} is not aligned to the double "
                                         rf"grain-size {2 * MiB}$"),
    ({"region_size": REGION_SIZE + MiB}, "^Region size .* is not aligned to the double grain-size"),
    ({"region_start": 60 * MiB}, "^Region ends beyond end of block device"),
    ({"region_start": 80 * MiB}, "^Region starts beyond end of block device"),
    ({"region_start": 0}, "^Region start 0 is before the first usable sector"),
])
def test_bad_region(tmp_path: Path, kw: dict, match: str) -> None:
    disk = make_disk(tmp_path / "disk.img")
    assert_rejected(tmp_path, disk, match, **kw)


def test_partition_number_from_node() -> None:
    table = {"device": "/dev/nvme0n1"}
    assert gpt.partition_number(table, {"node": "/dev/nvme0n1p3"}) == 3
    assert gpt.partition_number({"device": "disk1.img"}, {"node": "disk1.img12"}) == 12
    assert gpt.partition_number({"device": "/dev/sda"}, {"node": "/dev/sda1"}) == 1


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("losetup") is None, reason="needs root and losetup")
def test_loop_device_kernel_sees_switch(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.img")
    res = subprocess.run(["losetup", "--find", "--show", "--partscan", os.fspath(disk)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"losetup failed: {res.stderr.strip()}")
    loop = res.stdout.strip()
    try:
        subprocess.run(["partx", "-a", loop], check=False, capture_output=True)  # kernels without GPT parser
        data = os.urandom(MiB)
        install(make_job(tmp_path, Path(loop), data), tmp_path)
        name = os.path.basename(loop)
        start = Path(f"/sys/block/{name}/{name}p1/start").read_text().strip()
        assert int(start) == (REGION_START + HALF) // SECTOR
        with open(f"{loop}p1", "rb") as f:
            assert f.read(len(data)) == data
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
