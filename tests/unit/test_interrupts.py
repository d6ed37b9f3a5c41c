"""SIGTERM, SIGHUP and a full disk in the middle of long work: one line, exit 1, nothing left.

A run that is stopped (SIGTERM/SIGHUP, handled like Ctrl+C) or runs out of space removes its
temporary output, stops its child processes (mksquashfs, unsquashfs) and never leaves decrypted
payload in a named file: ``extract`` of an encrypted bundle decrypts into an unnamed file, which
is checked while it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.bundles import error_lines, pyrauc, pyrauc_bundle
from tests.helpers.pki import Pki, issue, make_recipients, write_pem_bundle

BIG = 96 << 20


def _content(directory: Path, fmt: str, size: int = BIG) -> Path:
    directory.mkdir()
    with open(directory / "rootfs.img", "wb") as f:
        for start in range(0, size, 4 << 20):
            f.write(os.urandom(min(4 << 20, size - start)))
    (directory / "manifest.raucm").write_text(f"[update]\ncompatible=x\nversion=1\n\n[bundle]\nformat={fmt}\n\n"
                                              "[image.rootfs]\nfilename=rootfs.img\n")
    return directory


def _start(*args: str | os.PathLike[str], tmpdir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.Popen([sys.executable, "-m", "pyrauc", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)


def _wait_for(predicate: object, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    pytest.fail("the command never got that far")


def _children(pid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [line.split()[1] for line in out.splitlines() if line.strip()]


def _stopped(proc: subprocess.Popen[str]) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=60)
    return proc.returncode, [line for line in err.splitlines() if not line.startswith(("rauc-Message", "("))]


@pytest.fixture
def tmpdir_(tmp_path: Path) -> Path:
    d = tmp_path / "tmp"
    d.mkdir()
    return d


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_bundle_stopped(sig: signal.Signals, tmp_path: Path, tmpdir_: Path, pki: Pki) -> None:
    content = _content(tmp_path / "c", "crypt")
    out = tmp_path / "out"
    out.mkdir()
    proc = _start("bundle", "--cert", pki.signer_direct.cert_path, "--key", pki.signer_direct.key_path, content,
                  out / "b.raucb", tmpdir=tmpdir_)
    _wait_for(lambda: "mksquashfs" in _children(proc.pid))
    proc.send_signal(sig)
    rc, lines = _stopped(proc)
    assert (rc, lines) == (1, ["Interrupted"])
    assert list(out.iterdir()) == [] and list(tmpdir_.iterdir()) == []
    assert sorted(p.name for p in content.iterdir()) == ["manifest.raucm", "rootfs.img"]
    assert subprocess.run(["pgrep", "-f", f"mksquashfs {content}"], capture_output=True).returncode == 1


def test_encrypt_stopped(tmp_path: Path, tmpdir_: Path, pki: Pki) -> None:
    bundle = pyrauc_bundle(_content(tmp_path / "c", "crypt", 1 << 20), tmp_path / "b.raucb", pki.signer_direct)
    to = write_pem_bundle(tmp_path / "to.pem", [r.cert for r in make_recipients(tmp_path / "r", 1500)])
    out = tmp_path / "out"
    out.mkdir()
    proc = _start("encrypt", "--to", to, "--keyring", pki.keyring, bundle, out / "e.raucb", tmpdir=tmpdir_)
    _wait_for(lambda: any(out.iterdir()))                 # the temporary output exists: encrypting
    proc.send_signal(signal.SIGTERM)
    rc, lines = _stopped(proc)
    assert (rc, lines) == (1, ["Interrupted"])
    assert list(out.iterdir()) == [] and list(tmpdir_.iterdir()) == []


def test_extract_of_encrypted_bundle_keeps_no_named_plaintext(tmp_path: Path, tmpdir_: Path, pki: Pki) -> None:
    bundle = pyrauc_bundle(_content(tmp_path / "c", "crypt"), tmp_path / "b.raucb", pki.signer_direct)
    device = issue(tmp_path, "device", key_kind="p256")
    enc = tmp_path / "enc.raucb"
    pyrauc("encrypt", "--to", device.cert_path, "--keyring", pki.keyring, bundle, enc, check=True)
    dest = tmp_path / "x"
    proc = _start("extract", "--keyring", pki.keyring, "--key", device.key_path, enc, dest, tmpdir=tmpdir_)
    seen: list[str] = []

    def unsquashing() -> bool:
        seen.extend(p.name for p in tmpdir_.iterdir())
        return "unsquashfs" in _children(proc.pid)
    _wait_for(unsquashing)
    assert seen == [] and list(tmpdir_.iterdir()) == []   # decrypted into an unnamed file
    proc.send_signal(signal.SIGTERM)
    rc, lines = _stopped(proc)
    assert (rc, lines) == (1, ["Interrupted"])
    assert not dest.exists() and list(tmpdir_.iterdir()) == []


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mp = tmp_path / "small"
    mp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mp)], check=True)
    try:
        yield mp
    finally:
        subprocess.run(["umount", str(mp)], check=True)


@pytest.mark.parametrize("fmt", ["plain", "verity", "crypt"])
def test_bundle_disk_full(fmt: str, tmp_path: Path, small_fs: Path, pki: Pki) -> None:
    content = _content(tmp_path / "c", fmt, 8 << 20)
    proc = pyrauc("bundle", "--cert", pki.signer_direct.cert_path, "--key", pki.signer_direct.key_path, content,
                  small_fs / "b.raucb")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("Failed to create bundle: "), proc.stderr
    assert list(small_fs.iterdir()) == []


def test_extract_disk_full(tmp_path: Path, small_fs: Path, pki: Pki) -> None:
    bundle = pyrauc_bundle(_content(tmp_path / "c", "crypt", 8 << 20), tmp_path / "b.raucb", pki.signer_direct)
    proc = pyrauc("extract", "--keyring", pki.keyring, bundle, small_fs / "x")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("Failed to extract bundle: "), proc.stderr
    assert list(small_fs.iterdir()) == []
