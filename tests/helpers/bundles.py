"""Helpers to make bundle content directories and run the pyrauc and rauc CLIs in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MANIFEST = """[update]
compatible=Test Config
version=2024.01-1

{bundle}[image.rootfs]
filename=rootfs.img

[image.appfs]
filename=appfs.img
"""


def write_content(directory: Path, fmt: str | None = "verity", rootfs_size: int = 196608,
                  extra_manifest: str = "") -> Path:
    """A content dir with rootfs.img, appfs.img and a manifest for ``fmt`` (None: no format)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rootfs.img").write_bytes(os.urandom(rootfs_size))
    (directory / "appfs.img").write_bytes(b"appfs\n" * 5000)
    bundle = f"[bundle]\nformat={fmt}\n\n" if fmt else ""
    (directory / "manifest.raucm").write_text(MANIFEST.format(bundle=bundle) + extra_manifest)
    return directory


def run(argv: list[str], check: bool = False, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def pyrauc(*args: str | os.PathLike[str], check: bool = False, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    """Run the pyrauc CLI in a subprocess (so exit codes and streams are real)."""
    full_env = {**os.environ, **(env or {})}
    return run([sys.executable, "-m", "pyrauc", *map(str, args)], check=check, env=full_env)


def rauc(rauc_bin: str, *args: str | os.PathLike[str], check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run Debian's rauc 1.8 without any system.conf of this machine."""
    return run([rauc_bin, *map(str, args)], check=check)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The stderr lines that are not diagnostics (RAUC prints 'Reading bundle' etc. too)."""
    skip = ("Reading bundle", "Verifying bundle signature", "Verified ", "Decrypting signature")
    return [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(skip)]


def files_equal(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()
