"""Stage (a): the Debian bookworm rootfs, built by mmdebstrap (slim variant of the lab recipe).

The output is a directory in the cache, keyed by the package list, the mmdebstrap arguments and
the apt mirror. It is the read-only base of every later stage (they take hard-linked copies).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from .common import Hasher, cached, prune, run, stage

SUITE = "bookworm"
PACKAGES = [
    "linux-image-amd64", "initramfs-tools", "zstd", "systemd-sysv", "udev", "kmod", "dbus",
    "openssh-server", "python3", "python3-venv", "efibootmgr", "dmsetup", "cryptsetup-bin",
    "squashfs-tools", "e2fsprogs", "iproute2", "procps",
    # PKCS#11 decryption keys on the device (the lab provisions a SoftHSM2 token)
    "softhsm2",
]
# Slim variant: drop docs and kernel modules a QEMU/board lab never needs. Globs must stay
# quoted (no shell here) and use /lib/modules (bookworm kernel packages ship under /lib).
PATH_EXCLUDES = [
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/lib/modules/*/kernel/drivers/gpu/*", "/lib/modules/*/kernel/drivers/media/*",
    "/lib/modules/*/kernel/sound/*", "/lib/modules/*/kernel/drivers/net/wireless/*",
    "/lib/modules/*/kernel/drivers/infiniband/*", "/lib/modules/*/kernel/drivers/staging/*",
    "/lib/modules/*/kernel/drivers/bluetooth/*", "/lib/modules/*/kernel/net/bluetooth/*",
    "/lib/modules/*/kernel/drivers/isdn/*", "/lib/modules/*/kernel/drivers/iio/*",
    "/lib/modules/*/kernel/drivers/input/touchscreen/*", "/lib/modules/*/kernel/net/wireless/*",
    "/lib/modules/*/kernel/net/mac80211/*",
]
# The initramfs only has to find the root file system on the virtio disk: fewer modules, less for its
# udev to probe (ahci, SCSI and NVMe cost about 1.5 s of the TCG boot). The rootfs has all modules.
INITRD_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]
# Units that only cost boot time under TCG; the lab target needs none of them (no VGA console, no
# debugfs/tracefs/FUSE/configfs/binfmt/pstore, no hugepages or POSIX message queues).
MASKED_UNITS = ["e2scrub_reap.service", "e2scrub_all.timer", "fstrim.timer", "apt-daily.timer",
                "apt-daily-upgrade.timer", "systemd-networkd-wait-online.service", "getty@tty1.service",
                "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount",
                "sys-kernel-config.mount", "dev-hugepages.mount", "dev-mqueue.mount",
                "proc-sys-fs-binfmt_misc.automount", "systemd-binfmt.service", "systemd-pstore.service",
                "modprobe@drm.service", "modprobe@fuse.service", "modprobe@configfs.service",
                "modprobe@efi_pstore.service"]
# Modules udev would load for emulated hardware the lab never uses (the machine's KVM, watchdog,
# SMBus, parallel port, PC speaker, AHCI): each costs time under TCG. `blacklist` only stops the
# automatic loading; modprobe by name still works.
BLACKLIST = ["kvm", "kvm_amd", "kvm_intel", "ccp", "iTCO_wdt", "iTCO_vendor_support", "i2c_i801", "lpc_ich",
             "parport_pc", "ppdev", "pcspkr", "psmouse", "serio_raw", "sg", "ahci", "bochs"]
# No fsck at boot (ext4 replays its journal on mount); the ESP is mounted on first access only.
FSTAB = ("PARTLABEL=data /data ext4 defaults,nofail 0 0\n"
         "PARTLABEL=esp /boot/efi vfat noauto,x-systemd.automount,nofail,umask=0077 0 0\n")


def apt_mirrors() -> tuple[str, str | None]:
    """(debian mirror, security mirror) read from the host's apt sources, never hard-coded."""
    main: str | None = None
    security: str | None = None
    entries: list[tuple[str, list[str]]] = []
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for para in re.split(r"\n\s*\n", f.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", para, re.M))
            if "deb" not in fields.get("Types", "").split():
                continue
            for uri in fields.get("URIs", "").split():
                entries.append((uri, fields.get("Suites", "").split()))
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if f.exists():
            for line in f.read_text().splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
                if m:
                    entries.append((m.group(1), [m.group(2)]))
    for uri, suites in entries:
        if any(s.endswith("-security") or "/updates" in s for s in suites):
            security = security or uri
        elif any(s.split("-")[0] == SUITE or s in ("stable",) for s in suites):
            main = main or uri
    if main is None:
        if not entries:
            raise RuntimeError("no deb entry in the host's apt sources; cannot choose a mirror")
        main = entries[0][0]
    return main, security


def mmdebstrap_args(target: Path, extra_packages: Sequence[str] = ()) -> list[str]:
    """The mmdebstrap command line (also the input of the cache key).

    EXTRA_PACKAGES (the Debian-rauc variant) are appended to PACKAGES; none for the default image.
    """
    main, security = apt_mirrors()
    args = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory", "--quiet"]
    args += [f"--dpkgopt=path-exclude={p}" for p in PATH_EXCLUDES]
    args += ["--dpkgopt=path-include=/usr/share/doc/*/copyright", "--include=" + ",".join([*PACKAGES, *extra_packages])]
    modules = "".join(m + "\\n" for m in INITRD_MODULES)
    args += [
        '--essential-hook=mkdir -p "$1/etc/initramfs-tools/conf.d"; '
        'printf "MODULES=list\\nCOMPRESS=zstd\\n" > "$1/etc/initramfs-tools/conf.d/lab.conf"; '
        f'printf "{modules}" >> "$1/etc/initramfs-tools/modules"',
        '--customize-hook=echo lab-guest > "$1/etc/hostname"',
        '--customize-hook=chroot "$1" passwd -d root',
        '--customize-hook=printf "PermitRootLogin yes\\nPermitEmptyPasswords yes\\nUseDNS no\\n" '
        '> "$1/etc/ssh/sshd_config.d/lab.conf"',
        '--customize-hook=printf "[Match]\\nName=en* eth*\\n[Network]\\nDHCP=yes\\n" '
        '> "$1/etc/systemd/network/50-dhcp.network"',
        '--customize-hook=chroot "$1" systemctl enable systemd-networkd',
        '--customize-hook=chroot "$1" systemctl mask ' + " ".join(MASKED_UNITS),
        '--customize-hook=printf "' + "".join(f"blacklist {m}\\n" for m in BLACKLIST)
        + '" > "$1/etc/modprobe.d/lab-blacklist.conf"',
        '--customize-hook=printf "' + FSTAB.replace("\n", "\\n") + '" > "$1/etc/fstab"; '
        'mkdir -p "$1/data" "$1/boot/efi"',
        '--customize-hook=rm -rf "$1"/var/cache/* "$1"/var/lib/apt/lists/* "$1"/var/log/*.log',
        SUITE, str(target), main,
    ]
    if security:
        args.append(f"deb {security} {SUITE}-security main")
    return args


def build_rootfs(cache: Path, force: bool = False, extra_packages: Sequence[str] = ()) -> tuple[Path, str]:
    """Return (rootfs directory, its cache key); build it with mmdebstrap when not cached."""
    key = Hasher("rootfs").text(*mmdebstrap_args(Path("TARGET"), extra_packages)).hexdigest()
    final = cache / "rootfs" / f"base-{key}"
    if not force and cached("rootfs", final):
        return final, key
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with stage("rootfs", "mmdebstrap, slim bookworm"):
        run(mmdebstrap_args(tmp, extra_packages), quiet=True)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    prune(final.parent, final)
    return final, key
