"""Stage (c): the target configuration written into the rootfs (RAUC system.conf, keyring, units).

The encryption key/cert named in system.conf are deliberately absent: tests provision them.
"""

from __future__ import annotations

import os
from pathlib import Path

COMPATIBLE = "pyrauc-qemux86-64"
# A file on the shared data partition that stops rauc-mark-good.service (the lab uses it to test
# the fallback of an unconfirmed slot).
SKIP_MARK_GOOD = "/data/lab-skip-mark-good"

SYSTEM_CONF = f"""\
[system]
compatible={COMPATIBLE}
bootloader=efi
data-directory=/data/rauc

[keyring]
path=/etc/rauc/keyring.pem

[encryption]
key=/etc/rauc/crypt-key.pem
cert=/etc/rauc/crypt-cert.pem

[slot.rootfs.0]
device=/dev/disk/by-partlabel/rootfs-a
type=ext4
bootname=A

[slot.rootfs.1]
device=/dev/disk/by-partlabel/rootfs-b
type=ext4
bootname=B
"""

# DefaultDependencies=no: a unit WantedBy multi-user.target that is also ordered after it would
# otherwise form an ordering cycle (targets add After= on the units they want).
MARK_GOOD_UNIT = f"""\
[Unit]
Description=Mark the booted RAUC slot as good
ConditionKernelCommandLine=rauc.slot
ConditionPathExists=!{SKIP_MARK_GOOD}
DefaultDependencies=no
After=multi-user.target boot-complete.target
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/bin/rauc status mark-good

[Install]
WantedBy=multi-user.target
"""


# Streaming installs hand a socket to the kernel's NBD driver (generic netlink family "nbd"): the module
# is loaded at boot, as a board's kernel would have CONFIG_BLK_DEV_NBD built in.
NBD_MODULES = "nbd\n"


# The lab's target runs under TCG, often beside a second target on two host cores: the Python service
# (bus-activated rauc.service) can then take longer than dbus-daemon's default 25 s activation timeout
# to own its name, and the caller gets "Failed to activate service ... timed out". A device with real
# CPUs starts it in about a second; the lab image allows two minutes.
DBUS_LOCAL_CONF = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <limit name="service_start_timeout">120000</limit>
</busconfig>
"""


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write a new file (unlink first: the tree may hard-link the cached base rootfs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def _symlink(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def write_target_config(root: Path, keyring: Path, ssh_pubkey: Path) -> list[Path]:
    """Write the configuration into ROOT; return the paths written (new inodes)."""
    out: list[Path] = []

    def w(rel: str, data: str | bytes, mode: int = 0o644) -> None:
        _write(root / rel, data, mode)
        out.append(root / rel)

    w("etc/rauc/system.conf", SYSTEM_CONF)
    w("etc/modules-load.d/nbd.conf", NBD_MODULES)
    w("etc/dbus-1/system-local.conf", DBUS_LOCAL_CONF)
    w("etc/rauc/keyring.pem", keyring.read_bytes())
    w("etc/systemd/system/rauc-mark-good.service", MARK_GOOD_UNIT)
    link = root / "etc/systemd/system/multi-user.target.wants/rauc-mark-good.service"
    _symlink(link, "/etc/systemd/system/rauc-mark-good.service")
    out.append(link)
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    w("root/.ssh/authorized_keys", ssh_pubkey.read_bytes(), 0o600)
    for name in ("rauc", "pyrauc"):
        _symlink(root / "usr/local/bin" / name, "/opt/pyrauc/bin/pyrauc")
        out.append(root / "usr/local/bin" / name)
    return out


def config_inputs() -> list[str]:
    """Texts that define this stage (part of the slot images' cache key)."""
    return [SYSTEM_CONF, MARK_GOOD_UNIT, NBD_MODULES, DBUS_LOCAL_CONF, "authorized_keys", "usr/local/bin/{rauc,pyrauc}"]
