"""The second lab layout (``--layout meta-rauc``): the device of RAUC's bundle-encryption tutorial.

meta-rauc-community's ``meta-rauc-qemux86`` rebuilt from Debian bookworm parts
(shared/reference/seed-target.md, sections 1-4 and 9):

* GPT entry 1 ``boot`` at 4 MiB (50 MiB, Microsoft basic data, legacy-BIOS-bootable): a FAT image
  ``efi-boot.vfat`` with GRUB (``grub-mkimage`` from Debian's grub-efi-amd64-bin, prefix /EFI/BOOT)
  at the removable path ``EFI/BOOT/BOOTX64.EFI`` and ``EFI/BOOT/grub.cfg``. OVMF boots it from a
  fresh NVRAM (no boot entries). 54-104 MiB is in no GPT entry: the second half of the
  ``boot-gpt-switch`` region 4M+100M of slot ``efi.0``.
* entry 2 ``grubenv`` at 106 MiB (10 MiB; a 64 KiB FAT with ``/grubenv``, an empty GRUB env block),
  mounted at /grubenv: the A/B state (ORDER, A_OK, A_TRY, B_OK, B_TRY).
* entry 3 ``rescue`` (ext4, a copy of the rootfs; booted by GRUB's default entry with
  ``rauc.external``), entry 4 ``root_a`` (ext4, the rootfs), entry 5 ``root_b`` (empty, no file
  system), entry 6 ``data`` (empty ext4).
* the kernels live in the root slots (``/vmlinuz`` + ``/initrd.img``: Debian kernels need their
  initramfs); GRUB passes ``rauc.slot=A|B``.

Deviations from the reference, all for the lab: the disk is virtio-blk (``/dev/vda*`` instead of
``/dev/sda*``; the shared rootfs's initramfs only has virtio_blk), slots are 1 GiB (a Debian rootfs
with pyrauc, not core-image-minimal), GRUB's menu timeout is 0 and the kernels get ``quiet
panic=2`` (each second on the serial console costs time under TCG; the fallback waits 2 s, not
60 s), /data is mounted without ``sync`` (bundles are copied there), and the rootfs image in the
out directory is an uncompressed tar (bzip2 under TCG would dominate the install).

The target's rootfs adds Debian's grub-common (grub-editenv for RAUC's grub backend) and fdisk
(sfdisk for boot-gpt-switch) to the lab packages, in its own stage cache (CACHE/meta-rauc/), so the
default image's stages and keys do not change. Output: CACHE/out-meta-rauc/ (disk.img,
OVMF_VARS.fd = a fresh copy of OVMF's template, id_ed25519, build.json, efi-boot.vfat, rootfs.tar).

``--rauc debian`` with this layout: Debian bookworm's C rauc 1.8 + rauc-service instead of pyrauc
(as images/debian_rauc.py does for the default layout), system.conf without the [log.*] groups
(1.8 has no event log), stage cache CACHE/meta-rauc-debian/, output CACHE/out-meta-rauc-debian/.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from . import assemble, config, debian_rauc, pki, pyrauc_install, rootfs
from .build import Image, Variant, build_lock, finish_image_with
from .common import SOURCE_DATE_EPOCH, Hasher, cached, out_dir, prune, run, stage
from .nvram import OVMF_VARS

LAYOUT = "meta-rauc"
EXTRA_PACKAGES = ["grub-common", "fdisk"]
GRUB_DIR = Path("/usr/lib/grub/x86_64-efi")
# what the GRUB image needs to read grub.cfg, the env block on FAT and kernels on ext4, and to boot
GRUB_MODULES = ["part_gpt", "fat", "ext2", "normal", "linux", "loadenv", "test", "echo", "configfile",
                "boot", "reboot", "halt", "serial", "terminal", "sleep"]
DISK = "/dev/vda"
MIB = 1024 * 1024
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
DISK_GUID = "5a1c0000-0000-4000-8000-000000000000"
BOOT = assemble.Part("boot", 4, 50, "5a1c0001-0000-4000-8000-000000000001", BASIC_DATA)
GRUBENV = assemble.Part("grubenv", 106, 10, "5a1c0002-0000-4000-8000-000000000002", BASIC_DATA)
RESCUE = assemble.Part("rescue", 116, 1024, "5a1c0003-0000-4000-8000-000000000003", LINUX_FS)
ROOT_A = assemble.Part("root_a", 1140, 1024, "5a1c0004-0000-4000-8000-000000000004", LINUX_FS)
ROOT_B = assemble.Part("root_b", 2164, 1024, "5a1c0005-0000-4000-8000-000000000005", LINUX_FS)
DATA = assemble.Part("data", 3188, 256, "5a1c0006-0000-4000-8000-000000000006", LINUX_FS)
PARTS = [BOOT, GRUBENV, RESCUE, ROOT_A, ROOT_B, DATA]
DISK_MIB = DATA.start + DATA.size + 1
REGION_START_MIB, REGION_SIZE_MIB = 4, 100
BOOT_VFAT_KIB = 32786            # mkdosfs -C efi-boot.vfat 32786 (boot-image.bb)
GRUBENV_VFAT_KIB = 64
COMPATIBLE = "qemux86-64 demo platform"

# shared/reference/seed-target.md section 4, with Debian kernels (initrd), /dev/vda and the lab's
# quiet console. (hd0,gptN) is the N-th GPT entry of the disk GRUB was loaded from.
CMDLINE = "console=ttyS0,115200 net.ifnames=0 quiet panic=2"
GRUB_CFG = f"""\
default=0
timeout=0

set ORDER="A B"
set A_OK=1
set B_OK=0
set A_TRY=0
set B_TRY=0
load_env --file=(hd0,gpt2)/grubenv

# select bootable slot
for SLOT in $ORDER; do
    if [ "$SLOT" == "A" ]; then
        INDEX=1
        OK=$A_OK
        TRY=$A_TRY
        A_TRY=1
    fi
    if [ "$SLOT" == "B" ]; then
        INDEX=2
        OK=$B_OK
        TRY=$B_TRY
        B_TRY=1
    fi
    if [ "$OK" -eq 1 -a "$TRY" -eq 0 ]; then
        default=$INDEX
        break
    fi
done

# reset booted flags
if [ "$default" -eq 0 ]; then
    if [ "$A_OK" -eq 1 -a "$A_TRY" -eq 1 ]; then
        A_TRY=0
    fi
    if [ "$B_OK" -eq 1 -a "$B_TRY" -eq 1 ]; then
        B_TRY=0
    fi
fi

save_env --file=(hd0,gpt2)/grubenv A_TRY A_OK B_TRY B_OK ORDER

CMDLINE="{CMDLINE}"

menuentry "Rescue" {{
    linux (hd0,gpt3)/vmlinuz root={DISK}3 rw rootwait $CMDLINE rauc.external
    initrd (hd0,gpt3)/initrd.img
}}

menuentry "Slot A (OK=$A_OK TRY=$A_TRY)" {{
    linux (hd0,gpt4)/vmlinuz root={DISK}4 rw rootwait $CMDLINE rauc.slot=A
    initrd (hd0,gpt4)/initrd.img
}}

menuentry "Slot B (OK=$B_OK TRY=$B_TRY)" {{
    linux (hd0,gpt5)/vmlinuz root={DISK}5 rw rootwait $CMDLINE rauc.slot=B
    initrd (hd0,gpt5)/initrd.img
}}
"""

# shared/reference/seed-target.md section 3 (+ [encryption] for crypt bundles), devices on /dev/vda
SYSTEM_CONF = f"""\
[system]
compatible={COMPATIBLE}
bootloader=grub
grubenv=/grubenv/grubenv
data-directory=/data/

[keyring]
path=ca.cert.pem

[encryption]
key=/etc/rauc/crypt-key.pem
cert=/etc/rauc/crypt-cert.pem

[log.readable]
filename=rauc-history.log

[log.json]
filename=rauc-history.json
format=json

[slot.efi.0]
device={DISK}
type=boot-gpt-switch
region-start={REGION_START_MIB}M
region-size={REGION_SIZE_MIB}M

[slot.rescue.0]
device={DISK}3
type=ext4
readonly=true

[slot.rootfs.0]
device={DISK}4
type=ext4
bootname=A

[slot.rootfs.1]
device={DISK}5
type=ext4
bootname=B
"""

FSTAB = (f"{DISK}2 /grubenv vfat defaults,sync 0 0\n"
         f"{DISK}3 /rescue ext4 ro,nofail 0 0\n"
         f"{DISK}6 /data ext4 defaults,nofail 0 0\n")


def layout_key() -> str:
    return Hasher("meta-rauc-layout").text(DISK_GUID, *(repr(p) for p in PARTS), GRUB_CFG, SYSTEM_CONF,
                                           FSTAB).hexdigest()


def build_boot_image(cache: Path, force: bool = False) -> tuple[Path, str]:
    """efi-boot.vfat: GRUB EFI (grub-mkimage, Debian's modules) + grub.cfg under EFI/BOOT, FAT, reproducible."""
    modinfo = GRUB_DIR / "modinfo.sh"
    if not modinfo.exists():
        raise RuntimeError(f"{GRUB_DIR} missing: install grub-efi-amd64-bin (dev/run setup does)")
    key = (Hasher("efi-boot").text(GRUB_CFG, *GRUB_MODULES, str(BOOT_VFAT_KIB)).file(modinfo)
           .file(GRUB_DIR / "kernel.img").file(Path(__file__)).hexdigest())
    final = cache / "boot" / f"efi-boot-{key}.vfat"
    if not force and cached("efi-boot", final):
        return final, key
    final.parent.mkdir(parents=True, exist_ok=True)
    work = cache / "work" / f"efi-boot-{key}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with stage("efi-boot", "grub-mkimage x86_64-efi + grub.cfg in a FAT image"):
        efi = work / "BOOTX64.EFI"
        run(["grub-mkimage", "-O", "x86_64-efi", "-d", GRUB_DIR, "-p", "/EFI/BOOT", "-o", efi, *GRUB_MODULES])
        (work / "grub.cfg").write_text(GRUB_CFG)
        img = work / "efi-boot.vfat"
        run(["mkfs.vfat", "--invariant", "-n", "BOOT", "-S", "512", "-i", BOOT.uuid[:8].upper(), "-C", img,
             str(BOOT_VFAT_KIB)])
        run(["mmd", "-i", img, "::/EFI", "::/EFI/BOOT"])
        run(["mcopy", "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI"])
        run(["mcopy", "-i", img, work / "grub.cfg", "::/EFI/BOOT/grub.cfg"])
        img.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    prune(final.parent, final)
    return final, key


def grubenv_image(work: Path) -> Path:
    """grubenv.vfat: a 64 KiB FAT holding /grubenv, an empty 1024-byte GRUB environment block."""
    env = work / "grubenv"
    env.unlink(missing_ok=True)
    run(["grub-editenv", env, "create"])
    img = work / "grubenv.vfat"
    img.unlink(missing_ok=True)
    run(["mkfs.vfat", "--invariant", "-n", "GRUBENV", "-S", "512", "-i", GRUBENV.uuid[:8].upper(), "-C", img,
         str(GRUBENV_VFAT_KIB)])
    run(["mcopy", "-i", img, env, "::/grubenv"])
    env.unlink()
    return img


def write_layout_config(tree: Path, keyring: Path, conf: str = SYSTEM_CONF) -> list[Path]:
    """The reference's system.conf (+ ca.cert.pem beside it), fstab and mount points over the lab config."""
    out: list[Path] = []
    for rel, data in (("etc/rauc/system.conf", conf), ("etc/fstab", FSTAB),
                      ("etc/rauc/ca.cert.pem", keyring.read_text())):
        p = tree / rel
        p.unlink(missing_ok=True)
        p.write_text(data)
        os.chmod(p, 0o644)
        out.append(p)
    for rel in ("grubenv", "rescue"):
        (tree / rel).mkdir(exist_ok=True)
        out.append(tree / rel)
    return out


def rootfs_tar(tree: Path, dst: Path) -> None:
    """The slot's tree as a reproducible tar (the bundle's rootfs image), without the slot marker."""
    run(["tar", "-C", tree, "--sort=name", "--numeric-owner", "--format=gnu", "--exclude=./etc/lab-slot-marker",
         "-cf", dst, "."])


def assemble_disk(out: Path, boot_img: Path, tree: Path) -> None:
    """GPT (entry 1 in the first half of the region, 54-104 MiB unlisted), FAT images, ext4 slots in place."""
    disk = out / "disk.img"
    disk.unlink(missing_ok=True)
    with disk.open("wb") as f:
        f.truncate(DISK_MIB * MIB)
    per_mib = MIB // 512
    table = [f"label: gpt\nlabel-id: {DISK_GUID}\nunit: sectors\nfirst-lba: 34\n"]
    for p in PARTS:
        attrs = ', attrs="LegacyBIOSBootable"' if p is BOOT else ""
        table.append(f'start={p.start * per_mib}, size={p.size * per_mib}, type={p.type}, uuid={p.uuid}, '
                     f'name="{p.name}"{attrs}\n')
    run(["sfdisk", "-q", disk], input="".join(table).encode())
    env_img = grubenv_image(out)
    for img, part in ((boot_img, BOOT), (env_img, GRUBENV)):
        run(["dd", f"if={img}", f"of={disk}", "bs=1M", f"seek={part.start}", "conv=notrunc,sparse", "status=none"])
    env_img.unlink()
    for marker, part in (("rescue", RESCUE), ("A", ROOT_A)):
        assemble._set_marker(tree, marker)
        assemble.mkfs_ext4(disk, part, tree, part.start)
        assemble.normalize_inode_times(disk, part.start, tree, out)
    (tree / "etc/lab-slot-marker").unlink()
    os.utime(tree / "etc", (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))     # as before the marker (the tar below)
    assemble.mkfs_ext4(disk, DATA, None, DATA.start)
    shutil.copyfile(OVMF_VARS, out / "OVMF_VARS.fd")     # fresh NVRAM: OVMF finds the removable path itself
    shutil.copyfile(boot_img, out / "efi-boot.vfat")
    rootfs_tar(tree, out / "rootfs.tar")
    for made in (out / "efi-boot.vfat", out / "rootfs.tar"):
        os.utime(made, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def system_conf(rauc: str = "pyrauc") -> str:
    """The target's system.conf: the reference's; for Debian's rauc 1.8 without the [log.*] groups
    (event logs came with RAUC 1.9: 1.8 refuses "Invalid group '[log.readable]'")."""
    if rauc == "pyrauc":
        return SYSTEM_CONF
    head, rest = SYSTEM_CONF.split("[log.readable]", 1)
    return head + "[slot.efi.0]" + rest.split("[slot.efi.0]", 1)[1]


def build(cache: Path, force: bool = False, rauc: str = "pyrauc") -> Image:
    """Build (or reuse) CACHE/out-meta-rauc/ (RAUC = 'debian': CACHE/out-meta-rauc-debian/, C rauc 1.8)."""
    with build_lock(cache):
        return _build(cache, force, rauc)


def _build(cache: Path, force: bool, rauc: str) -> Image:
    t0 = time.monotonic()
    debian = rauc == "debian"
    # private stage caches: prune() never sees the default's (or the other variant's) outputs
    own = cache / (f"{LAYOUT}-debian" if debian else LAYOUT)
    pki_dir = pki.ensure_pki(cache)
    ssh_key = pki.ensure_ssh_key(cache)
    extra = [*EXTRA_PACKAGES, *(debian_rauc.EXTRA_PACKAGES if debian else [])]
    base, base_key = rootfs.build_rootfs(own, force, extra)
    boot_img, boot_key = build_boot_image(own, force)
    pydeps_key = ""
    if not debian:
        wheels, wheels_key = pyrauc_install.download_wheels(cache, force)
        pydeps, pydeps_key = pyrauc_install.build_pydeps(own, base, base_key, wheels, wheels_key, force)
    here = Path(__file__).parent
    conf = system_conf(rauc)
    key = (Hasher(f"image-{LAYOUT}-{rauc}").text(base_key, pydeps_key, boot_key, layout_key(), conf,
                                                 "" if debian else pyrauc_install.source_key(),
                                                 *config.config_inputs(), os.environ.get("PYRAUC_IMAGE_SALT", ""))
           .file(pki_dir / "ca.cert.pem").file(ssh_key.with_suffix(".pub"))
           .file(here / "build.py").file(here / "assemble.py").file(here / "config.py")
           .file(here / "debian_rauc.py").file(here / "pyrauc_install.py").file(Path(__file__)).hexdigest())
    keyring = pki_dir / "ca.cert.pem"

    def fill(tree: Path) -> list[Path]:
        if debian:
            written = debian_rauc.write_target_config(tree, keyring, ssh_key.with_suffix(".pub"))
        else:
            written = pyrauc_install.install_pyrauc(tree, pydeps)
            written += config.write_target_config(tree, keyring, ssh_key.with_suffix(".pub"))
        return written + write_layout_config(tree, keyring, conf)

    def disk(tmp_out: Path, tree: Path) -> None:
        assemble_disk(tmp_out, boot_img, tree)

    what = "Debian rauc 1.8" if debian else "pyrauc venv"
    info = {"layout": LAYOUT, "rootfs": base_key, "efi-boot": boot_key}
    info.update({"rauc": debian_rauc.DESCRIPTION} if debian else
                {"pydeps": pydeps_key, "pyrauc_source": pyrauc_install.source_key()})
    variant = Variant(f"image ({LAYOUT}{', debian' if debian else ''})", out_dir(cache, rauc, LAYOUT), own,
                      f"hard-linked rootfs + {what} + target config (grub, boot-gpt-switch)", fill, info)
    return finish_image_with(variant, key, base, pki_dir, ssh_key, force, t0, disk,
                             "GPT + efi-boot.vfat + grubenv + mkfs.ext4 -d in place (rescue, root_a, data)",
                             {p.name: p.uuid for p in PARTS})
