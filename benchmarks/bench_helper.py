"""The streaming NBD helper on the host, driven the way the kernel drives it during a streamed install.

    python -m benchmarks.bench_helper [--size-mib 512] [--runs 3] [--https] [--py-spy OUT]

No lab, no root, no NBD: nginx on 127.0.0.1 serves a file of random bytes, ``pyrauc.nbd.Helper`` is
started and configured as for an install, and this script takes the kernel's place on the socket:
the install's copy readers (4 on 2 CPUs), each reading its 2 MiB chunks (chunk i, i+4, ...) in
READs of 33 pages that share their first page with the READ before (a 128 KiB squashfs block seldom
starts on a page), one READ outstanding per reader. It prints the wall time and the helper's CPU
per MiB and per READ, and how many READs it answered at once (its exit line). With ``--py-spy OUT``
(py-spy on PATH or in $PY_SPY) the helper's threads are sampled into OUT (py-spy's raw, collapsed
stacks) and the heaviest functions are printed. Under TCG on the lab target the same helper needs
about 20 times the CPU per MiB (benchmarks/README). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import os
import pwd
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pyrauc import handlers, nbd
from pyrauc.stream import StreamOptions
from tests.helpers.webserver import Nginx, TlsFiles

PAGE = nbd.BLOCK_SIZE
BLOCK_PAGES = 33         # a 128 KiB squashfs block that does not start on a page


def _reads(size: int, reader: int, readers: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of one copy reader's READs, in order (its chunks as handlers.copy_image hands them out)."""
    chunk_size = handlers.CHUNK
    for chunk in range(reader * chunk_size, size, readers * chunk_size):
        for offset in range(chunk, min(chunk + chunk_size, size), (BLOCK_PAGES - 1) * PAGE):
            yield offset, min(BLOCK_PAGES * PAGE, size - offset)


def _cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(url: str, size: int, options: StreamOptions, py_spy: str | None, out: Path | None
             ) -> tuple[float, float, int]:
    """One pass over the file: (wall s, helper CPU s, READs)."""
    helper = nbd.Helper.start(options)
    spy = None
    try:
        helper.configure(url, options)
        if py_spy is not None and out is not None:
            spy = subprocess.Popen([py_spy, "record", "-p", str(helper.proc.pid), "-o", str(out), "-f", "raw",
                                    "--nonblocking", "-r", "200"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(1.0)           # py-spy attaches
        sock = helper.release_socket()
        workers = handlers.copy_workers()       # the install's copy readers on this machine
        readers = [_reads(size, r, workers) for r in range(workers)]
        pending: dict[int, int] = {}

        def send(reader: int) -> None:
            read = next(readers[reader], None)
            if read is not None:
                pending[reader] = read[1]
                sock.sendall(nbd.REQUEST.pack(nbd.REQUEST_MAGIC, nbd.CMD_READ, reader.to_bytes(8, "big"), *read))

        cpu0 = _cpu(helper.proc.pid)           # without the helper's start-up and the probe
        start = time.monotonic()
        for reader in range(workers):
            send(reader)
        count = 0
        while pending:
            magic, error, handle = nbd.REPLY.unpack(nbd._recv_exact(sock, nbd.REPLY.size))
            if magic != nbd.REPLY_MAGIC or error:
                raise SystemExit(f"bad reply from the helper (error {error})")
            reader = int.from_bytes(handle, "big")
            if len(nbd._recv_exact(sock, pending.pop(reader))) == 0:
                raise SystemExit("the helper closed the socket")
            count += 1
            send(reader)
        wall = time.monotonic() - start
        cpu = _cpu(helper.proc.pid) - cpu0
        sock.sendall(nbd.REQUEST.pack(nbd.REQUEST_MAGIC, nbd.CMD_DISC, bytes(8), 0, 0))
        sock.close()
    finally:
        helper.stop()
        if spy is not None:
            spy.wait(60)
    return wall, cpu, count


def _top(raw: Path, n: int = 12) -> list[str]:
    """The functions with the most samples (self) in a py-spy raw file."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        total += int(samples)
        counts[re.sub(r" \(.*/", " (", stack.split(";")[-1])] += int(samples)
    return [f"  {100 * c / total:5.1f} %  {name}" for name, c in counts.most_common(n)] if total else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--https", action="store_true", help="fetch over HTTPS (nginx's test certificate)")
    parser.add_argument("--py-spy", metavar="OUT", help="sample the helper's threads of the last run into OUT")
    args = parser.parse_args()
    py_spy = None
    if args.py_spy:
        py_spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
        if py_spy is None:
            raise SystemExit("py-spy not found: pip install py-spy, or set PY_SPY")
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="bench-helper-") as tmp:
        work = Path(tmp)
        www = work / "www"
        www.mkdir()
        with open(www / "blob.bin", "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        for path in (work, www, www / "blob.bin"):
            path.chmod(0o755 if path.is_dir() else 0o644)       # nginx's workers read it
        tls = TlsFiles.make(work / "tls")
        server = Nginx(www, work / "nginx", tls).start()
        try:
            url = server.url("blob.bin", https=args.https)
            options = StreamOptions(sandbox_user=pwd.getpwuid(os.getuid()).pw_name,
                                    tls_ca=str(tls.ca.cert_path) if args.https else None)
            results = []
            for i in range(args.runs):
                last = i == args.runs - 1
                results.append(run_once(url, size, options, py_spy if last else None,
                                        Path(args.py_spy) if last and args.py_spy else None))
                wall, cpu, reads = results[-1]
                print(f"run {i + 1}: {args.size_mib} MiB in {reads} READs, {wall:.2f} s; helper CPU {cpu:.2f} s = "
                      f"{cpu / args.size_mib * 1000:.2f} ms/MiB, {cpu / reads * 1e6:.0f} us/READ", flush=True)
        finally:
            server.stop()
    cpus = [r[1] for r in results]
    print(f"median helper CPU {statistics.median(cpus):.2f} s for {args.size_mib} MiB "
          f"({statistics.median(cpus) / args.size_mib * 1000:.2f} ms/MiB)")
    if args.py_spy:
        print(f"py-spy samples of the last run ({args.py_spy}), self time:")
        print("\n".join(_top(Path(args.py_spy))))


if __name__ == "__main__":
    main()
