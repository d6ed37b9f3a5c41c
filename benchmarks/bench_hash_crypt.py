"""Throughput and peak memory of pyrauc.verity and pyrauc.crypt, with `veritysetup format` as reference.

    python -m benchmarks.bench_hash_crypt [--sizes 64 512] [--dir /tmp]

Every operation runs in a fresh child process, so the reported peak RSS (getrusage of that child)
belongs to that operation alone; it should not grow with the payload size. The time is measured
inside the child (interpreter start-up excluded). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))
SALT = bytes(range(32, 64))
OPS = ("create_hash_tree", "verify_hash_tree", "encrypt_file", "decrypt_file")


def _child(op: str, path: str, size: int, root_hex: str) -> None:
    """Run one operation and print ``<seconds> <peak RSS KiB> [<root hex>]`` on stdout."""
    from pyrauc import crypt, verity

    start = time.perf_counter()
    extra = ""
    if op == "create_hash_tree":
        extra = verity.create_hash_tree(path, size, SALT).hex()
    elif op == "verify_hash_tree":
        verity.verify_hash_tree(path, size, SALT, bytes.fromhex(root_hex))
    elif op == "encrypt_file":
        crypt.encrypt_file(path, KEY)
    elif op == "decrypt_file":
        crypt.decrypt_file(path, size, KEY, path + ".dec")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"{time.perf_counter() - start:.6f} {peak} {extra}")


def _run_rss(argv: list[str]) -> tuple[str, float, int]:
    """(stdout, wall seconds, peak RSS KiB) of a child process (rusage from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(argv[:3])} failed: {err.decode(errors='replace').strip()[-300:]}")
    return out.decode(), wall, int(usage.ru_maxrss)


def bench(size_mib: int, workdir: Path) -> None:
    size = size_mib << 20
    path = workdir / f"bench-{size_mib}.img"
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    mb = size / 1e6
    results: dict[str, tuple[float, int]] = {}
    root = "-"
    for op in OPS:
        out, _, _ = _run_rss([sys.executable, "-m", "benchmarks.bench_hash_crypt", "--child", op,
                              str(path), str(size), root])
        fields = out.split()
        results[op] = (float(fields[0]), int(fields[1]))
        if op == "create_hash_tree":
            root = fields[2]
        if op == "verify_hash_tree":
            os.truncate(path, size)  # drop the tree again before encrypting the data
    (workdir / f"bench-{size_mib}.img.dec").unlink()
    exe = shutil.which("veritysetup") or shutil.which("veritysetup", path="/usr/sbin:/sbin")
    vs: tuple[float, int] | None = None
    if exe:
        out, wall, rss = _run_rss([exe, "format", "--format=1", "--no-superblock", "--hash=sha256",
                                   "--data-block-size=4096", "--hash-block-size=4096",
                                   f"--salt={SALT.hex()}", f"--hash-offset={size}", str(path), str(path)])
        vs = (wall, rss)
        # the file is encrypted now, so the root differs from ours; the format itself is unit-tested
        assert re.search(r"Root hash:\s*[0-9a-f]{64}", out)
    path.unlink()
    print(f"--- {size_mib} MiB ({os.cpu_count()} CPUs)")
    for op, (secs, rss) in results.items():
        line = f"{op:<18} {secs:7.3f} s {mb / secs:8.0f} MB/s  peak RSS {rss / 1024:6.1f} MiB"
        if op == "create_hash_tree" and vs:
            line += f"  | veritysetup {vs[0]:6.3f} s {mb / vs[0]:6.0f} MB/s {vs[1] / 1024:5.1f} MiB"
            line += f"  time ratio pyrauc/veritysetup x{secs / vs[0]:.2f}"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512], help="payload sizes in MiB")
    parser.add_argument("--dir", type=Path, default=None, help="directory for the scratch files")
    parser.add_argument("--child", nargs=4, metavar=("OP", "PATH", "SIZE", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        op, path, size, root = args.child
        _child(op, path, int(size), root)
        return
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="pyrauc-bench-") as tmp:
        for size_mib in args.sizes:
            bench(size_mib, Path(tmp))


if __name__ == "__main__":
    main()
