"""Every host-side row of issue 19 in one run, side by side with Debian's rauc 1.8, as ratios.

    python -m benchmarks.bench_all [--repeat 3] [--quick] [--sizes 64 512]

Rows (wall time median of ``--repeat`` runs, peak RSS of the slowest, pyrauc run as
``python -m pyrauc`` with its bytecode cached as an installed package has it):

* start-up: ``--version``, ``--help`` and a usage error against the bare interpreter
  (``python -c pass``; goal: within 50 ms) and against rauc 1.8;
* bundle (crypt) of 64 and 512 MiB of incompressible data against rauc 1.8 and against
  ``mksquashfs`` alone with RAUC's arguments (goal: within 10 % of mksquashfs);
* encrypt for 100 / 1,000 / 10,000 EC P-256 and 100 / 1,000 RSA-2048 recipients (goal at 10,000
  EC: 0.4x rauc; small counts no slower than rauc);
* info of a local 64 MiB crypt bundle (goal: under 0.3 s) and extract of it (goal: 1.5x rauc).

``--quick`` runs 64 MiB and EC 100/1,000, RSA 100 only. Nothing is asserted: these are numbers
for benchmarks/README.md. On a machine shared with other work (a QEMU lab...), say so there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.bench_bundle import _content
from benchmarks.bench_encrypt import _crypt_bundle, _recipients
from benchmarks.common import Measurement, measure, pyrauc_cmd
from tests.helpers.pki import make_pki

MANIFEST = "[update]\ncompatible=bench\nversion=1\n\n[bundle]\nformat=crypt\n\n[image.rootfs]\nfilename=rootfs.img\n"
Row = tuple[str, Measurement, Measurement, Measurement | None, str]


def _median(runs: int, argv: Callable[[int], Sequence[str]], before: Callable[[], None] = lambda: None,
            after: Callable[[], None] = lambda: None, ok: Sequence[int] = (0,)) -> Measurement:
    """Median wall time and CPU time (and the largest peak RSS) of ``runs`` runs of ``argv(i)``."""
    seconds, cpu, peak = [], [], 0
    for i in range(runs):
        before()
        m = measure(list(argv(i)), ok=ok)
        after()
        seconds.append(m.seconds)
        cpu.append(m.cpu_seconds)
        peak = max(peak, m.peak_rss_kib)
    return Measurement(statistics.median(seconds), peak, statistics.median(cpu))


def _fresh_manifest(content: Path) -> None:
    """rauc 1.8 writes the digests into the content's manifest (a hard link): start from scratch."""
    (content / "manifest.raucm").unlink(missing_ok=True)
    (content / "manifest.raucm").write_text(MANIFEST)


def _row(title: str, ours: Measurement, rauc: Measurement, ref: Measurement | None = None, ref_name: str = "") -> str:
    text = (f"{title:<34} pyrauc {ours.seconds:7.3f} s {ours.peak_rss_kib / 1024:6.1f} MiB | "
            f"rauc {rauc.seconds:7.3f} s {rauc.peak_rss_kib / 1024:6.1f} MiB | "
            f"x rauc {ours.seconds / rauc.seconds:5.2f}")
    if ref is not None:
        text += (f" | {ref_name} {ref.seconds:7.3f} s: x {ours.seconds / ref.seconds:5.2f}, "
                 f"+{(ours.seconds - ref.seconds) * 1000:.0f} ms")
    if ref_name == "mksquashfs":
        text += "\n" + _bundle_floor(ours, ref)
    return text


def _bundle_floor(ours: Measurement, alone: Measurement) -> str:
    """What "within 10 % of mksquashfs" allows on this machine: mksquashfs keeps every CPU busy
    (its CPU time is about its wall time times the CPUs), so the bundle's own work (digests, AES,
    the verity tree, signing: its CPU time beyond mksquashfs's) can at best be spread over the
    same CPUs; the bundle cannot finish before that CPU time divided by the CPUs."""
    cpus = os.cpu_count() or 1
    floor = max(alone.seconds, ours.cpu_seconds / cpus)
    return (f"{'':<34} CPU: pyrauc {ours.cpu_seconds:.2f} s, mksquashfs {alone.cpu_seconds:.2f} s "
            f"({alone.cpu_seconds / alone.seconds:.1f} of {cpus} CPUs busy); with every CPU busy the bundle "
            f"takes at least {floor:.3f} s: x {floor / alone.seconds:.2f} of mksquashfs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="64 MiB, EC 100/1,000, RSA 100 only")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="bundle sizes in MiB (default 64 512)")
    args = parser.parse_args()
    rauc = shutil.which("rauc")
    mksquashfs = shutil.which("mksquashfs")
    if rauc is None or mksquashfs is None:
        raise SystemExit("Debian's rauc and squashfs-tools are needed (apt-get install rauc squashfs-tools)")
    sizes = args.sizes or ([64] if args.quick else [64, 512])
    counts = [("p256", 100), ("p256", 1000), ("rsa2048", 100)] if args.quick else \
        [("p256", 100), ("p256", 1000), ("p256", 10000), ("rsa2048", 100), ("rsa2048", 1000)]
    rows: list[Row] = []
    py = pyrauc_cmd()
    with tempfile.TemporaryDirectory(prefix="pyrauc-bench-all-") as tmp:
        w = Path(tmp)
        # as installed: bytecode cached (PYTHONDONTWRITEBYTECODE off, a private cache)
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(w / "pycache")
        measure([*py, "--version"])
        pki = make_pki(w / "pki")
        sign = ["--cert", str(pki.signer_direct.cert_path), "--key", str(pki.signer_direct.key_path)]
        ring = ["--keyring", str(pki.keyring)]
        n = max(args.repeat, 5)

        bare = _median(n, lambda i: [sys.executable, "-c", "pass"])
        for title, argv, ok in (("--version", ["--version"], (0,)), ("--help", ["--help"], (0,)),
                                ("usage error (info)", ["info"], (1,))):
            rows.append((f"start-up {title}", _median(n, lambda i, a=argv: [*py, *a], ok=ok),
                         _median(n, lambda i, a=argv: [rauc, *a], ok=ok), bare, "bare python"))
            print(_row(*rows[-1]), flush=True)

        for size in sizes:
            content = _content(w / f"c{size}", size, "crypt")
            out = w / "out"

            def clean(path: Path = out) -> None:
                path.unlink(missing_ok=True)

            def fresh(c: Path = content) -> None:
                clean()
                _fresh_manifest(c)

            src, dst = str(content), str(out)
            ours = _median(args.repeat, lambda i, s=src, d=dst: [*py, "bundle", *sign, s, d], fresh, clean)
            theirs = _median(args.repeat, lambda i, s=src, d=dst: [rauc, "bundle", *sign, s, d], fresh, clean)
            alone = _median(args.repeat, lambda i, s=src, d=dst: [mksquashfs, s, d, "-noappend", "-no-progress",
                                                                  "-all-root", "-no-xattrs", "-quiet"], fresh, clean)
            rows.append((f"bundle crypt {size} MiB", ours, theirs, alone, "mksquashfs"))
            print(_row(*rows[-1]), flush=True)
            if size == sizes[0]:
                fresh()
                measure([rauc, "bundle", *sign, str(content), str(w / "local.raucb")])
                local = str(w / "local.raucb")
                rows.append((f"info {size} MiB crypt bundle", _median(n, lambda i, b=local: [*py, "info", *ring, b]),
                             _median(n, lambda i, b=local: [rauc, "info", *ring, b])))
                print(_row(*rows[-1]), flush=True)
                x = w / "x"

                def rm_x(path: Path = x) -> None:
                    shutil.rmtree(path, ignore_errors=True)

                rows.append((f"extract {size} MiB crypt bundle",
                             _median(args.repeat, lambda i, b=local, d=str(x): [*py, "extract", *ring, b, d],
                                     rm_x, rm_x),
                             _median(args.repeat, lambda i, b=local, d=str(x): [rauc, "extract", *ring, b, d],
                                     rm_x, rm_x)))
                print(_row(*rows[-1]), flush=True)
            shutil.rmtree(content)

        small = _crypt_bundle(w, rauc, pki.signer_direct.cert_path, pki.signer_direct.key_path)
        enc = w / "enc.raucb"
        for kind, count in counts:
            rec = _recipients(w / f"rec-{kind}-{count}", kind, count)

            def rm_enc(path: Path = enc) -> None:
                path.unlink(missing_ok=True)

            def encrypt(tool: list[str], r: Path = rec.pem) -> Callable[[int], list[str]]:
                return lambda i: [*tool, "encrypt", "--to", str(r), *ring, str(small), str(enc)]

            tag = f"{'EC P-256' if kind == 'p256' else 'RSA-2048'} x{count}"
            rows.append((f"encrypt {tag}", _median(args.repeat, encrypt(py), rm_enc, rm_enc),
                         _median(args.repeat, encrypt([rauc]), rm_enc, rm_enc)))
            print(_row(*rows[-1]), flush=True)
            if kind == "p256":
                per = _median(args.repeat, encrypt([*py, "--ec-layout=per-recipient"]), rm_enc, rm_enc)
                rows.append((f"encrypt {tag} --ec-layout=per-recipient", per, rows[-1][2]))
                print(_row(*rows[-1]), flush=True)

    print(f"\n(bare interpreter: {bare.seconds * 1000:.0f} ms; medians of {args.repeat} runs, start-up and info "
          f"of {n})\n")
    print("| case | pyrauc s | rauc 1.8 s | pyrauc / rauc | reference | pyrauc / reference | pyrauc MiB | rauc MiB |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for title, ours, theirs, ref, ref_name in ((*r[:3], *(r[3:] or (None, ""))) for r in rows):
        ref_text = f"{ref_name} {ref.seconds:.3f} s" if ref is not None else "-"
        ref_ratio = (f"{ours.seconds / ref.seconds:.2f} (+{(ours.seconds - ref.seconds) * 1000:.0f} ms)"
                     if ref is not None else "-")
        print(f"| {title} | {ours.seconds:.3f} | {theirs.seconds:.3f} | {ours.seconds / theirs.seconds:.2f} | "
              f"{ref_text} | {ref_ratio} | {ours.peak_rss_kib / 1024:.1f} | {theirs.peak_rss_kib / 1024:.1f} |")


if __name__ == "__main__":
    main()
