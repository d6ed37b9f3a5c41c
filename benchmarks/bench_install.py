"""Install throughput on the lab target: `rauc install` of a raw image against `dd` of it.

    sudo .venv/bin/python -m benchmarks.bench_install [--size-mib 192] [--format crypt]

The lab image's data partition (256 MiB) must hold the bundle and the root fs the plain image, so
the default is 192 MiB; the issue's 512 MiB needs a bigger data partition (images/assemble.py).

Boots the QEMU lab (labs/qemu.yaml), copies a verity or crypt bundle with one raw image of
random data to the target, and on the target times
  * ``dd`` of the image file (from the extracted bundle content) into rootfs.1, and
  * ``rauc install`` of the bundle into rootfs.1 (loop -> dm-verity [-> dm-crypt] -> squashfs),
and the peak memory of the installing process (GNU time is not in the image; /proc's VmHWM is
sampled by a tiny shell loop). Goal: at least 90 % of dd's throughput, memory independent of the
image size. Nothing is asserted; the numbers are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT
from tests.helpers.bundles import pyrauc
from tests.helpers.pki import make_recipients


def _bundle(work: Path, size_mib: int, fmt: str, cert: Path, key: Path) -> tuple[Path, Path]:
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
    pyrauc("bundle", "--cert", cert, "--key", key, content, bundle, check=True)
    return bundle, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=192, help="the lab data partition is 256 MiB")
    parser.add_argument("--format", choices=["verity", "crypt"], default="crypt")
    args = parser.parse_args()

    from labgrid import Environment

    from labs import lab

    pki = lab.cache_dir() / "lab-pki"
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        work = Path(tmp)
        bundle, image = _bundle(work, args.size_mib, args.format, pki / "signer.cert.pem", pki / "signer.key.pem")
        key_path = cert_path = None
        if args.format == "crypt":
            device = make_recipients(work / "devices", 1)[0]
            encrypted = work / "bench-enc.raucb"
            pyrauc("encrypt", "--keyring", pki / "ca.cert.pem", "--to", device.cert_path, bundle, encrypted,
                   check=True)
            bundle = encrypted
            key_path, cert_path = device.key_path, device.cert_path
        run_dir = Path(tempfile.mkdtemp(prefix="bench-install-", dir=ROOT / "results"))
        lab.export_env(run_dir)
        print(lab.prepare(run_dir), flush=True)
        env = Environment(str(ROOT / "labs" / "qemu.yaml"))
        target = env.get_target("main")
        assert target is not None
        strategy = target.get_driver("PyraucLabStrategy")
        try:
            strategy.transition("shell")
            ssh = strategy.ssh
            ssh.put(str(bundle), "/data/bench.raucb")
            ssh.put(str(image), "/root/bench.img")   # /data (256 MiB) holds the bundle
            if key_path is not None and cert_path is not None:
                ssh.put(str(key_path), "/etc/rauc/crypt-key.pem")
                ssh.put(str(cert_path), "/etc/rauc/crypt-cert.pem")
            size = image.stat().st_size
            ssh.run_check("sync; echo 3 > /proc/sys/vm/drop_caches")
            t0 = time.monotonic()
            ssh.run_check("dd if=/root/bench.img of=/dev/disk/by-partlabel/rootfs-b bs=1M oflag=direct "
                          "conv=fsync status=none", timeout=3600)
            dd_s = time.monotonic() - t0
            ssh.run_check("sync; echo 3 > /proc/sys/vm/drop_caches")
            script = ("rauc install /data/bench.raucb > /data/bench-install.log 2>&1 & pid=$!; peak=0; "
                      "while kill -0 $pid 2>/dev/null; do "
                      "v=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null); "
                      "[ -n \"$v\" ] && [ \"$v\" -gt \"$peak\" ] && peak=$v; sleep 0.2; done; "
                      "wait $pid; echo rc=$? peak_kib=$peak")
            t0 = time.monotonic()
            out = "\n".join(ssh.run_check(script, timeout=3600))
            install_s = time.monotonic() - t0
            m = re.search(r"rc=(\d+) peak_kib=(\d+)", out)
            assert m, out
            if m.group(1) != "0":
                stdout, _, _ = ssh.run("cat /data/bench-install.log")
                raise SystemExit("install failed:\n" + "\n".join(stdout))
            mib = size / (1 << 20)
            print(f"image {mib:.0f} MiB ({args.format} bundle), accelerator: {lab.choose_accel().label}")
            print(f"dd            {dd_s:7.1f} s  {mib / dd_s:7.1f} MiB/s")
            print(f"rauc install  {install_s:7.1f} s  {mib / install_s:7.1f} MiB/s   "
                  f"({100 * dd_s / install_s:.0f} % of dd; goal 90 %), peak RSS {int(m.group(2)) / 1024:.1f} MiB")
        finally:
            strategy.transition("off")
            lab.cleanup(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
