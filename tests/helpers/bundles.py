"""Helpers to make bundle content directories, build and split bundles and run the pyrauc and rauc CLIs in tests."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.pki import Issued

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


def write_images_content(directory: Path, images: dict[str, bytes], *, fmt: str = "crypt", compatible: str = "Test",
                         version: str = "1") -> Path:
    """A content dir with ``<slot>.img`` for each of ``images`` (slot -> data) and a manifest listing them in order."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = f"[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat={fmt}\n"
    for slot, data in images.items():
        (directory / f"{slot}.img").write_bytes(data)
        manifest += f"\n[image.{slot}]\nfilename={slot}.img\n"
    (directory / "manifest.raucm").write_text(manifest)
    return directory


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """An uncompressed tar archive with a regular file per ``members`` entry (name -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def split_bundle(path: Path) -> tuple[bytes, bytes]:
    """(payload, trailing CMS) of a bundle file."""
    data = path.read_bytes()
    size = int.from_bytes(data[-8:], "big")
    return data[:-8 - size], data[-8 - size:-8]


def write_bundle(path: Path, payload: bytes, cms: bytes) -> Path:
    """Write a bundle file from a payload and its CMS (the inverse of :func:`split_bundle`)."""
    path.write_bytes(payload + cms + len(cms).to_bytes(8, "big"))
    return path


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


def pyrauc_bundle(content: Path, out: Path, signer: Issued) -> Path:
    """``pyrauc bundle`` of ``content`` into ``out`` signed by ``signer`` (no intermediates); returns ``out``."""
    pyrauc("bundle", "--cert", signer.cert_path, "--key", signer.key_path, content, out, check=True)
    return out


def rauc_bundle(rauc_bin: str, content: Path, out: Path, signer: Issued) -> Path:
    """``rauc bundle`` (Debian's rauc 1.8) of ``content`` into ``out`` signed by ``signer``; returns ``out``."""
    rauc(rauc_bin, "bundle", "--cert", signer.cert_path, "--key", signer.key_path, content, out, check=True)
    return out


@dataclass
class CryptBundle:
    """An unencrypted crypt bundle made by rauc 1.8 itself (see :func:`rauc_crypt_bundle`)."""

    path: Path
    payload: bytes
    sigdata: bytes
    images: dict[str, bytes]   # slot -> content of its image in the bundle
    keyring: Path              # verifies the signature


def rauc_crypt_bundle(rauc_bin: str, directory: Path, images: dict[str, bytes], signer: Issued,
                      keyring: Path) -> CryptBundle:
    """``rauc bundle`` of a crypt-format write_images_content() dir in ``directory``, signed by ``signer``."""
    content = write_images_content(directory / "content", images)
    out = rauc_bundle(rauc_bin, content, directory / "crypt.raucb", signer)
    payload, sigdata = split_bundle(out)
    return CryptBundle(out, payload, sigdata, images, keyring)


GLIB_LOG = re.compile(r"^(?:rauc-(?:Message|DEBUG|INFO): |\(rauc:\d+\): rauc-(?:WARNING|CRITICAL) \*\*: )")


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The stderr lines that are not diagnostics (GLib log lines like "rauc-Message: ...: Reading bundle")."""
    return [line for line in proc.stderr.splitlines() if line.strip() and not GLIB_LOG.match(line)]


def files_equal(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()
