"""The ``boot-gpt-switch`` slot: atomic update of a boot partition through the GPT.

The slot device is a whole disk (block device or disk-image file). ``region-start`` and
``region-size`` (bytes) describe a region of that disk split into two halves of
``region-size / 2`` bytes. GPT partition 1 (the first entry) lies in one of the halves. An
installation zeroes the other half (as RAUC), writes the image there, syncs it, and then rewrites partition 1 of
the GPT (primary and backup table, via ``sfdisk -N 1``) to start at that half with the size of a
half; type, UUID, name, attributes and all other partitions are kept. Only the table rewrite
switches, so an interruption before it leaves the old boot partition intact.

The rules, checked before a byte is written, with RAUC's messages:

* region-start and region-size must both be set ("Region configuration is invalid");
  region-start must be aligned to the partitioning grain (libfdisk's default, 1 MiB, at least a
  sector) and region-size to twice the grain, so both halves are aligned;
* the region must lie within the usable LBAs of the GPT (first-lba .. last-lba);
* no partition other than partition 1 may overlap the region;
* partition 1 ("entry 0") must start exactly at the start of one half and end inside that half;
* the image must not be larger than a half.

The install logs RAUC's lines: "Found inactive (second) half of boot partition region (pos. ...B,
size ...B)", "Clearing inactive (second) half ...", "Write image to inactive (second) half ...",
"Setting second half of boot partition region active in GPT" (first/second as the case may be).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from typing import Any

from pyrauc.errors import InstallError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
BLKRRPART = 0x125F
GRAIN = 1 << 20              # libfdisk's default alignment of partitions


@dataclass(frozen=True)
class GptSwitchPlan:
    """Where the next image goes (all values in bytes, except the LBAs)."""

    device: str
    sector_size: int
    region_start: int
    region_size: int
    current_half: int            # half partition 1 uses now (0 or 1)

    @property
    def half_size(self) -> int:
        return self.region_size // 2

    @property
    def activating(self) -> int:
        """The half that gets the new image and becomes partition 1."""
        return 1 - self.current_half

    @property
    def target_start(self) -> int:
        return self.region_start + self.activating * self.half_size

    @property
    def which(self) -> str:
        """RAUC's name of the activating half."""
        return "second" if self.activating else "first"

    def hook_env(self) -> dict[str, str]:
        """RAUC_BOOT_* of the boot-switch slot hooks."""
        return {"RAUC_BOOT_PARTITION_ACTIVATING": str(self.activating),
                "RAUC_BOOT_PARTITION_START": str(self.target_start),
                "RAUC_BOOT_PARTITION_SIZE": str(self.half_size),
                "RAUC_BOOT_REGION_START": str(self.region_start),
                "RAUC_BOOT_REGION_SIZE": str(self.region_size)}


def _sfdisk(args: list[str], what: str, stdin: str | None = None) -> str:
    argv = ["sfdisk", *args]
    try:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False,
                             stdin=None if stdin is not None else subprocess.DEVNULL)
    except OSError as exc:
        raise InstallError(f"{what} failed: cannot run sfdisk: {exc.strerror}") from exc
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
        raise InstallError(f"{what} failed: {lines[-1] if lines else f'sfdisk exit code {res.returncode}'}")
    return res.stdout


def read_table(device: str) -> dict[str, Any]:
    """The partition table of ``device`` as reported by ``sfdisk --json`` (must be GPT)."""
    out = _sfdisk(["--json", device], f"Reading partition table of {device}")
    try:
        table = json.loads(out)["partitiontable"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InstallError(f"Reading partition table of {device} failed: unexpected sfdisk output") from exc
    if table.get("label") != "gpt":
        raise InstallError(f"GPT not found on {device} (found '{table.get('label') or 'no'}' partition table)")
    return dict(table)


def partition_number(table: dict[str, Any], part: dict[str, Any]) -> int:
    """The GPT entry number (1-based) of ``part`` from its sfdisk node name."""
    node = str(part.get("node", ""))
    dev = str(table.get("device", ""))
    rest = node[len(dev):].removeprefix("p") if dev and node.startswith(dev) else ""
    if not rest.isdigit():
        m = re.search(r"(\d+)$", node)
        if m is None:
            raise InstallError(f"Cannot determine partition number of {node}")
        rest = m.group(1)
    return int(rest)


def _partitions(table: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {partition_number(table, p): p for p in table.get("partitions", [])}


def plan(device: str, region_start: int | None, region_size: int | None, slot_name: str,
         image_size: int) -> GptSwitchPlan:
    """Check the disk, the region and the image; return where the image goes."""
    if region_start is None or region_size is None or region_size <= 0:
        raise InstallError(f"Region configuration is invalid (slot {slot_name}: boot-gpt-switch needs "
                           "region-start and region-size)")
    table = read_table(device)
    ssz = int(table.get("sectorsize", 512))
    grain = max(GRAIN, ssz)
    if region_start % grain:
        raise InstallError(f"Region start {region_start} is not aligned to grain-size {grain}")
    if region_size % (2 * grain):
        raise InstallError(f"Region size {region_size} is not aligned to the double grain-size {2 * grain}")
    half = region_size // 2
    r_first, r_last = region_start // ssz, (region_start + region_size) // ssz - 1
    first_lba, last_lba = int(table["firstlba"]), int(table["lastlba"])
    if r_first > last_lba:
        raise InstallError(f"Region starts beyond end of block device {device} (usable sectors "
                           f"{first_lba} - {last_lba})")
    if r_last > last_lba:
        raise InstallError(f"Region ends beyond end of block device {device} (usable sectors "
                           f"{first_lba} - {last_lba})")
    if r_first < first_lba:
        raise InstallError(f"Region start {region_start} is before the first usable sector {first_lba} "
                           f"of the GPT on {device}")
    parts = _partitions(table)
    p1 = parts.get(1)
    if p1 is None:
        raise InstallError(f"No boot partition found in entry 0 of the GPT on {device}")
    for num, p in parts.items():
        start, size = int(p["start"]), int(p["size"])
        if num != 1 and start <= r_last and start + size - 1 >= r_first:
            raise InstallError(f"Region (sectors {r_first} - {r_last}) overlaps with partition {num} "
                               f"(sectors {start} - {start + size - 1})")
    p1_start, p1_size = int(p1["start"]) * ssz, int(p1["size"]) * ssz
    for idx in (0, 1):
        h_start = region_start + idx * half
        if p1_start == h_start and p1_size <= half:
            current = idx
            break
    else:
        raise InstallError(f"Boot partition's start address does not match region configuration (entry 0: "
                           f"start {p1_start}, size {p1_size} bytes; halves of {half} bytes at {region_start} "
                           f"and {region_start + half})")
    if image_size > half:
        raise InstallError(f"Size of image ({image_size}) does not fit to slot size {half}")
    return GptSwitchPlan(device=device, sector_size=ssz, region_start=region_start, region_size=region_size,
                         current_half=current)


def clear_half(plan_: GptSwitchPlan) -> None:
    """Zero the whole inactive half before the image goes there, as RAUC does ("Clearing inactive
    (second) half of boot partition region on <device>"): nothing of an older, larger image stays
    behind the new one. Partition 1 does not point at this half, so this changes nothing that boots."""
    which = plan_.which
    log.info("Found inactive (%s) half of boot partition region (pos. %dB, size %dB)", which,
             plan_.target_start, plan_.half_size)
    log.info("Clearing inactive (%s) half of boot partition region on %s", which, plan_.device)
    zeros = bytes(CHUNK)
    try:
        fd = os.open(plan_.device, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InstallError(f"Failed to open {plan_.device}: {exc.strerror}") from exc
    try:
        pos, end = plan_.target_start, plan_.target_start + plan_.half_size
        while pos < end:
            pos += os.pwrite(fd, zeros[:min(CHUNK, end - pos)], pos)
        os.fsync(fd)
    except OSError as exc:
        raise InstallError(f"Failed to clear inactive half of boot partition region on {plan_.device}: "
                           f"{exc.strerror}") from exc
    finally:
        os.close(fd)
    log.info("Write image to inactive (%s) half of boot partition region on %s", which, plan_.device)


def _comparable(table: dict[str, Any]) -> dict[str, Any]:
    """The table without node/device names and without partition 1's start and size."""
    out = {k: v for k, v in table.items() if k not in ("device", "partitions")}
    parts = {}
    for num, p in _partitions(table).items():
        q = {k: v for k, v in p.items() if k != "node"}
        if num == 1:
            q.pop("start", None)
            q.pop("size", None)
        parts[num] = q
    out["partitions"] = parts
    return out


def switch_partition(plan_: GptSwitchPlan) -> None:
    """Point GPT partition 1 at the activating half (primary and backup table), then tell the kernel."""
    dev = plan_.device
    before = read_table(dev)
    start, size = plan_.target_start // plan_.sector_size, plan_.half_size // plan_.sector_size
    log.info("Setting %s half of boot partition region active in GPT", plan_.which)
    _sfdisk(["--no-reread", "--no-tell-kernel", "--quiet", "--wipe", "never", "--wipe-partitions", "never",
             "-N", "1", dev], f"Switching partition 1 of {dev}", stdin=f"start={start}, size={size}\n")
    after = read_table(dev)
    p1 = _partitions(after).get(1)
    if p1 is None or int(p1["start"]) != start or int(p1["size"]) != size \
            or _comparable(after) != _comparable(before):
        raise InstallError(f"Partition table of {dev} does not have the expected content after switching "
                           "partition 1")
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise InstallError(f"Failed to open {dev}: {exc.strerror}") from exc
    try:
        os.fsync(fd)
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            _reread(fd, dev)
    finally:
        os.close(fd)


def _reread(fd: int, dev: str) -> None:
    """Make the kernel see the new partition 1: ``partx -u`` (BLKPG, works while other partitions
    of the disk are mounted), else BLKRRPART. Failures only warn: the switch is on disk already."""
    try:
        res = subprocess.run(["partx", "-u", dev], capture_output=True, text=True, check=False,
                             stdin=subprocess.DEVNULL)
        msg = (res.stderr.strip() or f"exit code {res.returncode}") if res.returncode != 0 else ""
    except OSError as exc:
        msg = f"cannot run partx: {exc.strerror}"
    if not msg:
        return
    try:
        fcntl.ioctl(fd, BLKRRPART)
    except OSError as exc:
        log.warning("Kernel did not pick up the new partition 1 of %s (partx: %s; BLKRRPART: %s); "
                    "it takes effect at the next boot", dev, msg, exc.strerror)
