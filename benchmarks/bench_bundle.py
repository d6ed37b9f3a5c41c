"""pyrauc bundle/info/extract side by side with Debian's rauc on 64 MiB and 512 MiB payloads.

    python -m benchmarks.bench_bundle [--sizes 64 512] [--formats verity crypt]

Prints wall time and peak memory for both tools and their ratios (pyrauc / rauc). Goals: bundle
no slower than rauc (mksquashfs is shared; hash tree and encryption use both cores) and memory
independent of the payload size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import measure, pyrauc_cmd, report
from tests.helpers.pki import make_pki


def _content(directory: Path, size_mib: int, fmt: str) -> Path:
    directory.mkdir(parents=True)
    with open(directory / "rootfs.img", "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1024 * 1024))      # incompressible, so the payload really is that big
    (directory / "manifest.raucm").write_text(
        f"[update]\ncompatible=bench\nversion=1\n\n[bundle]\nformat={fmt}\n\n[image.rootfs]\nfilename=rootfs.img\n")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512], help="payload sizes in MiB")
    parser.add_argument("--formats", nargs="+", default=["verity", "crypt"])
    args = parser.parse_args()
    rauc = shutil.which("rauc")
    if rauc is None:
        raise SystemExit("Debian's rauc is needed for the comparison (apt-get install rauc)")
    with tempfile.TemporaryDirectory(prefix="pyrauc-bench-") as tmp:
        w = Path(tmp)
        pki = make_pki(w / "pki")
        for fmt in args.formats:
            for size in args.sizes:
                content = _content(w / f"c-{fmt}-{size}", size, fmt)
                sign = ["--cert", str(pki.signer_direct.cert_path), "--key", str(pki.signer_direct.key_path)]
                ours_b = w / f"py-{fmt}-{size}.raucb"
                theirs_b = w / f"rauc-{fmt}-{size}.raucb"
                m_ours = measure([*pyrauc_cmd(), "bundle", *sign, str(content), str(ours_b)])
                m_theirs = measure([rauc, "bundle", *sign, str(content), str(theirs_b)])
                print(report(f"bundle {fmt} {size} MiB", m_ours, m_theirs), flush=True)
                ring = ["--keyring", str(pki.keyring)]
                m_ours = measure([*pyrauc_cmd(), "extract", *ring, str(ours_b), str(w / f"x-py-{fmt}-{size}")])
                m_theirs = measure([rauc, "extract", *ring, str(theirs_b), str(w / f"x-rauc-{fmt}-{size}")])
                print(report(f"extract {fmt} {size} MiB", m_ours, m_theirs), flush=True)
                for p in (content, w / f"x-py-{fmt}-{size}", w / f"x-rauc-{fmt}-{size}"):
                    shutil.rmtree(p)
                ours_b.unlink()
                theirs_b.unlink()


if __name__ == "__main__":
    main()
