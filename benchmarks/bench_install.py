"""Install throughput on the lab target: `rauc install` against `dd`, pyrauc side by side with rauc 1.8.

    sudo .venv/bin/python -m benchmarks.bench_install [--size-mib 512] [--format crypt|verity]
                                                      [--rauc both|pyrauc|debian]

Builds a verity or crypt bundle with one raw image of random data (crypt: encrypted for a fresh
P-256 device key) and puts bundle and image on a scratch ext4 disk that is attached to the QEMU lab
target as a second, read-only virtio disk (the lab image's partitions stay as the reference layout
has them). Then, for each target rauc (the pyrauc image and the image with Debian's rauc 1.8, see
``python -m images --rauc debian``), it boots the target and times, caches dropped before each:

* ``dd`` of the image file into rootfs.1 (bs=1M, O_DIRECT, fsync): the issue's yardstick;
* the kernel's read path: ``dd`` of the image from the bundle mounted by ``rauc mount`` (loop ->
  dm-verity [-> dm-crypt] -> squashfs), one reader, to /dev/null (pyrauc target only; 1.8 has no
  ``rauc mount``);
* ``rauc install`` of the bundle into rootfs.1, with the installing process's peak RSS (VmHWM
  sampled from /proc): the rauc.service process, restarted before (pyrauc's and 1.8's CLI both
  hand the install to the service).

Goal (issue 6): install at least 90 % of dd's throughput; memory independent of the image size.
Nothing is asserted; the numbers are printed, with pyrauc/rauc ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT
from tests.helpers.bundles import pyrauc
from tests.helpers.pki import make_recipients

SLOT = "/dev/disk/by-partlabel/rootfs-b"
DROP = "sync; echo 3 > /proc/sys/vm/drop_caches"


@dataclass
class Run:
    variant: str
    version: str
    dd_s: float
    install_s: float
    peak_kib: int
    read_path_s: float | None


def _bundle(work: Path, size_mib: int, fmt: str, pki: Path) -> tuple[Path, Path, Path | None, Path | None]:
    """The bundle (encrypted for one new device key if crypt), its image, and that key + cert."""
    content = work / "content"
    content.mkdir()
    image = content / "rootfs.img"
    with open(image, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible=pyrauc-qemux86-64\nversion=bench\n\n[bundle]\nformat={fmt}\n\n"
        "[image.rootfs]\nfilename=rootfs.img\n")
    bundle = work / "bench.raucb"
    pyrauc("bundle", "--cert", pki / "signer.cert.pem", "--key", pki / "signer.key.pem", content, bundle, check=True)
    if fmt != "crypt":
        return bundle, image, None, None
    device = make_recipients(work / "devices", 1)[0]
    encrypted = work / "bench-enc.raucb"
    pyrauc("encrypt", "--keyring", pki / "ca.cert.pem", "--to", device.cert_path, bundle, encrypted, check=True)
    bundle.unlink()
    return encrypted, image, device.key_path, device.cert_path


def _scratch_disk(work: Path, files: dict[str, Path]) -> Path:
    """An ext4 disk image labelled 'bench' holding ``files`` (name -> host path)."""
    tree = work / "scratch"
    tree.mkdir()
    for name, src in files.items():
        os.link(src, tree / name)
    size_mib = sum(p.stat().st_size for p in files.values()) * 11 // 10 // (1 << 20) + 64
    disk = work / "scratch.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "bench", "-d", str(tree), str(disk), f"{size_mib}M"], check=True)
    return disk


@contextlib.contextmanager
def lab_target(variant: str, disk: Path, prefix: str) -> Iterator[Any]:
    """The booted lab target (image of ``variant``) with ``disk`` as a second, read-only virtio disk;
    yields the strategy (its ``ssh`` runs commands); powered off and cleaned up afterwards."""
    from labgrid import Environment

    from labs import lab

    os.environ["PYRAUC_LAB_RAUC"] = variant
    run_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-{variant}-", dir=ROOT / "results"))
    lab.export_env(run_dir)
    os.environ["LG_QEMU_EXTRA_ARGS"] += f" -drive if=virtio,format=raw,readonly=on,file={disk}"
    print(lab.prepare(run_dir), flush=True)
    env = Environment(str(ROOT / "labs" / "qemu.yaml"))
    target = env.get_target("main")
    assert target is not None
    strategy = target.get_driver("PyraucLabStrategy")
    try:
        strategy.transition("shell")
        yield strategy
    finally:
        strategy.transition("off")
        env.cleanup()
        lab.cleanup(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


def _measure(variant: str, disk: Path, key: Path | None, cert: Path | None, size: int) -> Run:
    with lab_target(variant, disk, "bench-install") as strategy:
        ssh = strategy.ssh
        if key is not None and cert is not None:
            ssh.put(str(key), "/etc/rauc/crypt-key.pem")
            ssh.put(str(cert), "/etc/rauc/crypt-cert.pem")
        ssh.run_check("mkdir -p /mnt/bench && mount -o ro,noload /dev/disk/by-label/bench /mnt/bench")
        version = " ".join(ssh.run_check("rauc --version"))
        ssh.run_check(DROP)
        t0 = time.monotonic()
        ssh.run_check(f"dd if=/mnt/bench/rootfs.img of={SLOT} bs=1M oflag=direct conv=fsync status=none",
                      timeout=3600)
        dd_s = time.monotonic() - t0
        ssh.run_check(f"dd if=/dev/zero of={SLOT} bs=1M count=16 conv=fsync status=none")
        read_path_s = None
        if variant == "pyrauc":
            ssh.run_check("rauc mount /mnt/bench/bench.raucb >/dev/null && " + DROP)
            t0 = time.monotonic()
            ssh.run_check("dd if=/mnt/rauc/bundle/rootfs.img of=/dev/null bs=1M status=none", timeout=3600)
            read_path_s = time.monotonic() - t0
            ssh.run_check("umount /mnt/rauc/bundle")
        # The installing process: the D-Bus service (restarted), as `rauc install` hands the work to it
        # (pyrauc's CLI too, since the target has pyrauc's service).
        svc = "$(systemctl restart rauc && systemctl show -p MainPID --value rauc)"
        ssh.run_check(DROP)
        script = (f"svc={svc}; "
                  "rauc install /mnt/bench/bench.raucb > /tmp/bench-install.log 2>&1 & cli=$!; "
                  f"pid=${{svc:-$cli}}; peak=0; "
                  "while kill -0 $cli 2>/dev/null; do "
                  "v=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null); "
                  "[ -n \"$v\" ] && [ \"$v\" -gt \"$peak\" ] && peak=$v; sleep 0.2; done; "
                  "wait $cli; echo rc=$? peak_kib=$peak")
        t0 = time.monotonic()
        out = "\n".join(ssh.run_check(script, timeout=3600))
        install_s = time.monotonic() - t0
        m = re.search(r"rc=(\d+) peak_kib=(\d+)", out)
        assert m, out
        if m.group(1) != "0":
            stdout, _, _ = ssh.run("cat /tmp/bench-install.log")
            raise SystemExit(f"{variant}: install failed:\n" + "\n".join(stdout))
        same, _, rc = ssh.run(f"cmp -n {size} /mnt/bench/rootfs.img {SLOT} && echo identical")
        if rc != 0:
            raise SystemExit(f"{variant}: slot content differs from the image: {same}")
        return Run(variant, version, dd_s, install_s, int(m.group(2)), read_path_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--format", choices=["verity", "crypt"], default="crypt")
    parser.add_argument("--rauc", choices=["both", "pyrauc", "debian"], default="both",
                        help="target rauc: pyrauc, Debian's rauc 1.8, or both one after the other")
    args = parser.parse_args()

    from labs import lab

    variants = ["pyrauc", "debian"] if args.rauc == "both" else [args.rauc]
    (ROOT / "results").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-install-", dir=ROOT / "results") as tmp:
        work = Path(tmp)
        bundle, image, key, cert = _bundle(work, args.size_mib, args.format, lab.cache_dir() / "lab-pki")
        disk = _scratch_disk(work, {"bench.raucb": bundle, "rootfs.img": image})
        size = image.stat().st_size
        runs = []
        for variant in variants:
            # A fresh process per target: labgrid registers labs/strategy.py's driver once per process.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
                runs.append(pool.submit(_measure, variant, disk, key, cert, size).result())
            r = runs[-1]
            print(f"{variant}: dd {r.dd_s:.1f} s, install {r.install_s:.1f} s, peak RSS {r.peak_kib} KiB", flush=True)

    mib = size / (1 << 20)
    accel = lab.choose_accel()
    print(f"\nimage {mib:.0f} MiB in a {args.format} bundle; {accel.label}, guest CPU {accel.cpu}")
    print(f"{'target rauc':34} {'dd s':>7} {'install s':>10} {'MiB/s':>7} {'% of dd':>8} {'peak RSS':>9}")
    for r in runs:
        print(f"{r.version[:34]:34} {r.dd_s:7.1f} {r.install_s:10.1f} {mib / r.install_s:7.1f} "
              f"{100 * r.dd_s / r.install_s:7.0f}% {r.peak_kib / 1024:7.1f} MiB")
        if r.read_path_s is not None:
            print(f"  kernel read path (dd from `rauc mount`, one reader): {r.read_path_s:.1f} s, "
                  f"{mib / r.read_path_s:.1f} MiB/s; install = {100 * r.read_path_s / r.install_s:.0f} % of it")
    if len(runs) == 2:
        print(f"pyrauc/rauc 1.8 install time ratio: {runs[0].install_s / runs[1].install_s:.2f}; "
              f"peak RSS ratio {runs[0].peak_kib / max(runs[1].peak_kib, 1):.2f}")
    print("goal: install >= 90 % of dd; peak RSS independent of the image size (compare --size-mib values)")


if __name__ == "__main__":
    main()
