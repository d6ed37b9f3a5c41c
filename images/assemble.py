"""Stage (d): UKIs, ESP, slot filesystems, GPT disk and NVRAM -- no loop devices, no mounts.

Reproducible for a given rootfs tree: fixed GUIDs, SOURCE_DATE_EPOCH (mtools), E2FSPROGS_FAKE_TIME
(mke2fs/debugfs), ext4 hash_seed, mkfs.vfat --invariant, zeroed PE timestamp/checksum, and per-slot
changes written into a private hard-linked copy of the tree (never into the cached base).
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from . import nvram
from .common import SOURCE_DATE_EPOCH, Hasher, cached, prune, run, stage

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
SDBOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
SECTOR = 512
MIB = 1024 * 1024


@dataclass(frozen=True)
class Part:
    """One GPT partition (offsets in MiB)."""

    name: str
    start: int
    size: int
    uuid: str
    type: str


DISK_GUID = "5a1b0000-0000-4000-8000-000000000000"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"   # Linux root (x86-64)
DATA_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ESP = Part("esp", 1, 256, "5a1b0001-0000-4000-8000-000000000001", ESP_TYPE)
ROOT_A = Part("rootfs-a", 257, 1024, "5a1b0002-0000-4000-8000-000000000002", ROOT_TYPE)
ROOT_B = Part("rootfs-b", 1281, 1024, "5a1b0003-0000-4000-8000-000000000003", ROOT_TYPE)
DATA = Part("data", 2305, 256, "5a1b0004-0000-4000-8000-000000000004", DATA_TYPE)
PARTS = [ESP, ROOT_A, ROOT_B, DATA]
SLOTS = {"A": ROOT_A, "B": ROOT_B}
DISK_MIB = DATA.start + DATA.size + 1


def cmdline(slot: str) -> str:
    """The slot's UKI command line: serial console only (the lab VM has no display), ``quiet`` (every
    console byte costs time under TCG; the kernel still prints resets and panics), and a quick reset
    after a panic (the fallback test)."""
    return (f"root=PARTUUID={SLOTS[slot].uuid} rw rootwait rauc.slot={slot} "
            "console=ttyS0,115200 quiet panic=2")


def layout_key() -> str:
    return Hasher("layout").text(DISK_GUID, *(repr(p) for p in PARTS), cmdline("A"), cmdline("B")).hexdigest()


def zero_pe_timestamp(path: Path) -> None:
    """objcopy writes the current time into the COFF header: clear it and the optional-header checksum."""
    with path.open("r+b") as f:
        f.seek(0x3C)
        pe = struct.unpack("<I", f.read(4))[0]
        f.seek(pe + 8)
        f.write(b"\0" * 4)
        f.seek(pe + 24 + 64)
        f.write(b"\0" * 4)


def kernel_version(root: Path) -> str:
    def version(p: Path) -> list[int]:
        return [int(x) for x in p.name.replace("-", ".").split(".") if x.isdigit()]

    return max((root / "usr/lib/modules").iterdir(), key=version).name


def build_esp(cache: Path, base: Path, base_key: str, force: bool = False) -> tuple[Path, str]:
    """UKI per slot (kernel + initrd + fixed cmdline) and a FAT32 ESP with systemd-boot fallback."""
    key = Hasher("esp").text(base_key, layout_key()).file(STUB).file(SDBOOT).hexdigest()
    final = cache / "esp" / f"esp-{key}.img"
    if not force and cached("esp", final):
        return final, key
    final.parent.mkdir(parents=True, exist_ok=True)
    work = cache / "work" / f"esp-{key}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    kver = kernel_version(base)
    with stage("esp", f"UKIs for kernel {kver} + FAT32 ESP"):
        for slot in SLOTS:
            (work / f"cmdline-{slot}").write_text(cmdline(slot))
            uki = work / f"slot-{slot.lower()}.efi"
            sections = [(".osrel", base / "usr/lib/os-release", "0x20000"),
                        (".cmdline", work / f"cmdline-{slot}", "0x30000"),
                        (".linux", base / "boot" / f"vmlinuz-{kver}", "0x2000000"),
                        (".initrd", base / "boot" / f"initrd.img-{kver}", "0x3000000")]
            args: list[str | Path] = ["objcopy"]
            for name, path, vma in sections:
                args += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}={vma}"]
            run([*args, STUB, uki])
            zero_pe_timestamp(uki)
        img = work / "esp.img"
        run(["mkfs.vfat", "--invariant", "-C", "-F", "32", "-n", "ESP", "-i", ESP.uuid[:8], img,
             str(ESP.size * 1024)])
        run(["mmd", "-i", img, "::/EFI", "::/EFI/BOOT", "::/EFI/Linux", "::/loader"])
        run(["mcopy", "-i", img, SDBOOT, "::/EFI/BOOT/BOOTX64.EFI"])
        run(["mcopy", "-i", img, work / "slot-a.efi", work / "slot-b.efi", "::/EFI/Linux/"])
        (work / "loader.conf").write_text("default slot-a.efi\ntimeout 0\n")
        run(["mcopy", "-i", img, work / "loader.conf", "::/loader/loader.conf"])
        img.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    prune(final.parent, final)
    return final, key


def mkfs_ext4(img: Path, part: Part, src: Path | None = None, offset_mib: int | None = None) -> None:
    """ext4 of PART's size; with OFFSET_MIB it is written straight into the disk file (no dd)."""
    ext = [f"hash_seed={part.uuid}", "nodiscard"]
    if offset_mib is not None:
        ext.append(f"offset={offset_mib * MIB}")
    args = ["mkfs.ext4", "-q", "-F", "-L", part.name, "-U", part.uuid, "-E", ",".join(ext)]
    if src is not None:
        args += ["-d", str(src)]
    run([*args, img, f"{part.size}M"])


def _set_marker(tree: Path, slot: str) -> None:
    """/etc/lab-slot-marker in the (private, hard-linked) tree, with fixed times."""
    marker = tree / "etc/lab-slot-marker"
    marker.unlink(missing_ok=True)
    marker.write_text(f"{slot}\n")
    for p in (marker, marker.parent):
        os.utime(p, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def normalize_inode_times(disk: Path, offset_mib: int, tree: Path, workdir: Path) -> None:
    """Set atime+ctime of every inode to SOURCE_DATE_EPOCH (debugfs, no mount).

    mke2fs -d copies them from the source tree, where the kernel sets ctime on every link
    (our hard-linked copy) and relatime then bumps atime: without this the slots would differ
    on every build.
    """
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(SOURCE_DATE_EPOCH))
    lines = [f"sif / ctime {stamp}", f"sif / atime {stamp}"]
    for dirpath, dirs, files in os.walk(tree):
        for name in dirs + files:
            rel = os.path.join(dirpath, name)[len(str(tree)):]
            if '"' in rel:
                continue
            q = f'"{rel}"' if any(c.isspace() or c == "\\" for c in rel) else rel
            lines += [f"sif {q} ctime {stamp}", f"sif {q} atime {stamp}"]
    script = workdir / "normalize-times.debugfs"
    script.write_text("\n".join(lines) + "\n")
    run(["debugfs", "-w", "-f", script, f"{disk}?offset={offset_mib * MIB}"])
    script.unlink()


def assemble_disk(out: Path, esp: Path, tree: Path) -> None:
    """GPT on a plain sparse file; ESP placed with dd conv=notrunc,sparse; ext4 slots and data made
    in place with mke2fs -E offset (each slot gets its /etc/lab-slot-marker); NVRAM entries A/B."""
    disk = out / "disk.img"
    disk.unlink(missing_ok=True)
    with disk.open("wb") as f:
        f.truncate(DISK_MIB * MIB)
    per_mib = MIB // SECTOR
    table = [f"label: gpt\nlabel-id: {DISK_GUID}\nunit: sectors\nfirst-lba: 2048\n"]
    for p in PARTS:
        table.append(f'start={p.start * per_mib}, size={p.size * per_mib}, type={p.type}, uuid={p.uuid}, '
                     f'name="{p.name}"\n')
    run(["sfdisk", "-q", disk], input="".join(table).encode())
    run(["dd", f"if={esp}", f"of={disk}", "bs=1M", f"seek={ESP.start}", "conv=notrunc,sparse", "status=none"])
    for slot, part in SLOTS.items():
        _set_marker(tree, slot)
        mkfs_ext4(disk, part, tree, part.start)
        normalize_inode_times(disk, part.start, tree, out)
    (tree / "etc/lab-slot-marker").unlink()
    mkfs_ext4(disk, DATA, None, DATA.start)
    nvram.write_vars(out / "OVMF_VARS.fd", esp_nr=1, esp_start=ESP.start * per_mib,
                     esp_size=ESP.size * per_mib, esp_partuuid=ESP.uuid,
                     entries=[("A", "\\EFI\\Linux\\slot-a.efi"), ("B", "\\EFI\\Linux\\slot-b.efi")])
