"""The two lab devices the tutorial suite runs on, and what differs between them.

* :class:`EfiDevice` (labs/qemu.yaml, feature ``uefi-vars``): the default lab image, UKIs in NVRAM
  entries A/B, RAUC's efi backend (BootNext for a new slot, BootOrder once it is marked good);
  bundles carry one ext4 image for ``rootfs``.
* :class:`GrubDevice` (labs/qemu-grub.yaml, feature ``grubenv``): the tutorial's own device
  (meta-rauc-qemux86 layout, images/meta_rauc.py): GRUB with ORDER/A_OK/A_TRY/B_OK/B_TRY in
  /grubenv/grubenv, RAUC's grub backend, an ``efi`` slot updated by boot-gpt-switch (GPT entry 1
  flips between the halves of the region 4M+100M) and bundles as the tutorial builds them: images
  ``efi`` (efi-boot.vfat, GRUB and its config) and ``rootfs`` (a tar archive).

The tests ask the device for the facts (compatible, status file, slot devices) and for the checks of
the boot state (after an install, after mark-good, after a fallback), so one suite serves both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labs import lab
from tests.lab import updates
from tests.lab.target import EfiState, RaucTargetDriver

MIB = 1024 * 1024


class Device:
    """What the tutorial suite needs to know about a lab device."""

    name = ""
    compatible = ""
    status_file = ""
    slot_devices: dict[str, str] = {}  # noqa: RUF012 (read-only per class)
    #: the install's image order: the slots an install from A writes, in the order it writes them
    targets_from_a: tuple[str, ...] = ()

    def other(self, bootname: str) -> str:
        return "B" if bootname == "A" else "A"

    def rootfs_slot(self, bootname: str) -> str:
        return "rootfs.0" if bootname == "A" else "rootfs.1"

    # -- bundles -------------------------------------------------------------------------------
    def update_bundle(self, work: Path, name: str, version: str, signer_cert: Path, signer_key: Path) -> Path:
        """A crypt bundle with a bootable rootfs stamped VERSION and the key-copying hook (not encrypted)."""
        raise NotImplementedError

    def broken_bundle(self, work: Path, signer_cert: Path, signer_key: Path) -> Path:
        """A crypt bundle whose rootfs cannot boot (the kernel finds no init and panics)."""
        raise NotImplementedError

    def session_update_bundle(self, share: Path, signer_cert: Path, signer_key: Path) -> Path:
        """update_bundle() of version "2", built once per test session in SHARE (the session's
        ``update-bundles`` directory: the tutorial and the suites that need any update share it)."""
        return updates.once_per_session(
            share, f"{self.name}-update-2.raucb",
            lambda scratch: self.update_bundle(scratch, "update-v2", "2", signer_cert, signer_key))

    # -- boot state ----------------------------------------------------------------------------
    def boot_state(self, dut: RaucTargetDriver) -> Any:
        """A comparable snapshot of the boot selection (and, on the grub device, the boot region)."""
        raise NotImplementedError

    def check_activated(self, dut: RaucTargetDriver, bootname: str, before: Any) -> None:
        """After an install into BOOTNAME: the next boot tries BOOTNAME."""
        raise NotImplementedError

    def check_confirmed(self, dut: RaucTargetDriver, bootname: str) -> None:
        """After booting BOOTNAME and mark-good: BOOTNAME is the permanent choice."""
        raise NotImplementedError

    def check_fell_back(self, dut: RaucTargetDriver, good: str, bad: str) -> None:
        """After BAD failed to boot: GOOD runs and stays the choice, BAD is not good."""
        raise NotImplementedError


class EfiDevice(Device):
    """The default lab image: RAUC's efi backend, NVRAM entries A and B."""

    name = "efi"
    compatible = "pyrauc-qemux86-64"
    status_file = "/data/rauc/central.raucs"
    slot_devices = {"rootfs.0": "/dev/disk/by-partlabel/rootfs-a",  # noqa: RUF012
                    "rootfs.1": "/dev/disk/by-partlabel/rootfs-b"}
    targets_from_a = ("rootfs.1",)

    def update_bundle(self, work: Path, name: str, version: str, signer_cert: Path, signer_key: Path) -> Path:
        image = updates.bootable_rootfs(lab.out_dir() / "disk.img", work / f"rootfs-{name}.ext4", version)
        return updates.make_bundle(work, name, image, compatible=self.compatible, version=version,
                                   signer_cert=signer_cert, signer_key=signer_key)

    def broken_bundle(self, work: Path, signer_cert: Path, signer_key: Path) -> Path:
        broken = updates.broken_rootfs(work / "broken.ext4")
        return updates.make_bundle(work, "broken", broken, compatible=self.compatible, version="broken",
                                   signer_cert=signer_cert, signer_key=signer_key)

    def boot_state(self, dut: RaucTargetDriver) -> EfiState:
        return dut.efi_state()

    def check_activated(self, dut: RaucTargetDriver, bootname: str, before: Any) -> None:
        efi = dut.efi_state()
        assert efi.label_of(efi.boot_next) == bootname        # one-shot: BootOrder still starts with the old
        assert efi.first_slot_in_order == self.other(bootname)

    def check_confirmed(self, dut: RaucTargetDriver, bootname: str) -> None:
        efi = dut.efi_state()
        assert efi.boot_next is None
        assert efi.first_slot_in_order == bootname

    def check_fell_back(self, dut: RaucTargetDriver, good: str, bad: str) -> None:
        efi = dut.efi_state()
        assert efi.first_slot_in_order == good
        assert efi.entries[bad] not in efi.boot_order       # marked bad at install, never marked good


@dataclass(frozen=True)
class GrubState:
    """The grub device's boot selection: the GRUB env and where GPT entry 1 (the efi slot) points."""

    env: dict[str, str]
    boot_start: int              # GPT entry 1's first byte
    region_digest: str           # sha256 of the whole boot-gpt-switch region (both halves)


class GrubDevice(Device):
    """The tutorial's device: GRUB + grubenv, an efi slot (boot-gpt-switch), a rescue slot."""

    name = "grub"
    compatible = "qemux86-64 demo platform"
    status_file = "/data/central.raucs"
    slot_devices = {"rootfs.0": "/dev/vda4", "rootfs.1": "/dev/vda5", "rescue.0": "/dev/vda3"}  # noqa: RUF012
    targets_from_a = ("efi.0", "rootfs.1")
    disk = "/dev/vda"
    grubenv = "/grubenv/grubenv"
    region = (4 * MIB, 100 * MIB)

    # -- bundles -------------------------------------------------------------------------------
    def _bundle(self, work: Path, name: str, version: str, rootfs_tar: Path, signer_cert: Path,
                signer_key: Path) -> Path:
        """efi-boot.vfat + the rootfs tar + the key hook, format crypt: the tutorial's bundle."""
        return updates.make_bundle(work, name, rootfs_tar, compatible=self.compatible, version=version,
                                   signer_cert=signer_cert, signer_key=signer_key, image_name="rootfs.tar",
                                   efi_image=lab.out_dir() / "efi-boot.vfat")

    def update_bundle(self, work: Path, name: str, version: str, signer_cert: Path, signer_key: Path) -> Path:
        """The image's rootfs tar with /etc/lab-update-version and the slot marker appended."""
        tar = work / f"rootfs-{name}.tar"
        shutil.copyfile(lab.out_dir() / "rootfs.tar", tar)
        extra = work / f"extra-{name}"
        (extra / "etc").mkdir(parents=True, exist_ok=True)
        (extra / "etc/lab-update-version").write_text(f"{version}\n")
        (extra / "etc/lab-slot-marker").write_text(f"update-{version}\n")
        subprocess.run(["tar", "-C", str(extra), "--numeric-owner", "--owner=0", "--group=0", "-rf", str(tar),
                        "./etc/lab-update-version", "./etc/lab-slot-marker"], check=True)
        shutil.rmtree(extra)
        bundle = self._bundle(work, name, version, tar, signer_cert, signer_key)
        tar.unlink()
        return bundle

    def broken_bundle(self, work: Path, signer_cert: Path, signer_key: Path) -> Path:
        """Kernel and initramfs only: GRUB boots it, the initramfs finds no init and panics (panic=2)."""
        tree = work / "broken-tree"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        subprocess.run(["tar", "-C", str(tree), "-xf", str(lab.out_dir() / "rootfs.tar"), "--wildcards",
                        "./boot/vmlinuz-*", "./boot/initrd.img-*", "./vmlinuz", "./initrd.img"], check=True)
        (tree / "README").write_text("This slot has a kernel but no init: it cannot boot.\n")
        tar = work / "broken.tar"
        subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "-cf", str(tar), "."], check=True)
        shutil.rmtree(tree)
        bundle = self._bundle(work, "broken", "broken", tar, signer_cert, signer_key)
        tar.unlink()
        return bundle

    # -- boot state ----------------------------------------------------------------------------
    def env(self, dut: RaucTargetDriver) -> dict[str, str]:
        """The GRUB environment block as grub-editenv lists it."""
        out = dut.sh(f"grub-editenv {self.grubenv} list")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def boot_start(self, dut: RaucTargetDriver) -> int:
        """First byte of GPT entry 1 as the table on the disk says (not the kernel's view)."""
        table = json.loads(dut.sh(f"sfdisk --json {self.disk}"))["partitiontable"]
        part = next(p for p in table["partitions"] if re.search(r"\D1$", p["node"]))
        return int(part["start"]) * int(table.get("sectorsize", 512))

    def region_digest(self, dut: RaucTargetDriver) -> str:
        start, size = self.region
        out = dut.sh(f"dd if={self.disk} bs=1M skip={start // MIB} count={size // MIB} status=none | sha256sum",
                     timeout=300)
        return out.split()[0]

    def boot_state(self, dut: RaucTargetDriver) -> GrubState:
        return GrubState(self.env(dut), self.boot_start(dut), self.region_digest(dut))

    def check_activated(self, dut: RaucTargetDriver, bootname: str, before: Any) -> None:
        """RAUC's grub backend put BOOTNAME first with OK=1 TRY=0; boot-gpt-switch flipped GPT entry 1."""
        env = self.env(dut)
        other = self.other(bootname)
        assert env.get("ORDER") == f"{bootname} {other}", env
        assert (env.get(f"{bootname}_OK"), env.get(f"{bootname}_TRY")) == ("1", "0"), env
        assert isinstance(before, GrubState)
        start, size = self.region
        halves = (start, start + size // 2)
        assert before.boot_start in halves
        assert self.boot_start(dut) == halves[1 - halves.index(before.boot_start)]

    def check_confirmed(self, dut: RaucTargetDriver, bootname: str) -> None:
        """GRUB chose BOOTNAME (set its TRY to 1) and mark-good reset it: OK=1 TRY=0, first in ORDER."""
        env = self.env(dut)
        assert env.get("ORDER", "").split()[:1] == [bootname], env
        assert (env.get(f"{bootname}_OK"), env.get(f"{bootname}_TRY")) == ("1", "0"), env

    def check_fell_back(self, dut: RaucTargetDriver, good: str, bad: str) -> None:
        """BAD was tried once (TRY=1, never reset by mark-good), GRUB skipped it and chose GOOD."""
        env = self.env(dut)
        assert env.get(f"{bad}_TRY") == "1", env
        assert (env.get(f"{good}_OK"), env.get(f"{good}_TRY")) == ("1", "0"), env


def device_for(features: set[str] | list[str]) -> Device:
    """The device of a labgrid target with FEATURES (``grubenv``: the tutorial's GRUB device)."""
    return GrubDevice() if lab.GRUB_FEATURE in set(features) else EfiDevice()
