"""Bundles in both directions with Debian's rauc 1.8: plain, verity and crypt.

What pyrauc writes, rauc reads, verifies and extracts; what rauc writes, pyrauc reads and extracts
to identical files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.bundles import pyrauc, rauc, write_content
from tests.helpers.pki import Pki

FORMATS = ["plain", "verity", "crypt"]


def _same_tree(a: Path, b: Path) -> None:
    names_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*"))
    names_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*"))
    assert names_a == names_b
    for name in names_a:
        if (a / name).is_file():
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.interop
@pytest.mark.parametrize("fmt", FORMATS)
def test_pyrauc_bundle_read_by_rauc(fmt: str, tmp_path: Path, pki: Pki, rauc_bin: str) -> None:
    content = write_content(tmp_path / "content", fmt)
    out = tmp_path / "b.raucb"
    pyrauc("bundle", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path,
           "--intermediate", pki.intermediate.cert_path, content, out, check=True)
    info = rauc(rauc_bin, "info", "--keyring", pki.keyring, out, check=True)
    assert "Compatible:" in info.stdout and "'Test Config'" in info.stdout
    assert f"Bundle Format: \t{fmt}" in info.stdout or f"Bundle Format:  {fmt}" in info.stdout
    if fmt == "crypt":
        assert "[unencrypted CMS]" in info.stdout
    ext = tmp_path / "ext"
    rauc(rauc_bin, "extract", "--keyring", pki.keyring, out, ext, check=True)
    for name in ("rootfs.img", "appfs.img"):
        assert (ext / name).read_bytes() == (content / name).read_bytes()
    assert (ext / "manifest.raucm").exists()


@pytest.mark.interop
@pytest.mark.parametrize("fmt", FORMATS)
def test_rauc_bundle_read_by_pyrauc(fmt: str, tmp_path: Path, pki: Pki, rauc_bin: str) -> None:
    content = write_content(tmp_path / "content", fmt)
    out = tmp_path / "b.raucb"
    rauc(rauc_bin, "bundle", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path,
         "--intermediate", pki.intermediate.cert_path, content, out, check=True)
    info = pyrauc("info", "--keyring", pki.keyring, out, check=True)
    assert f"Bundle Format:  {fmt}" in info.stdout
    assert "Certificate Chain:" in info.stdout
    if fmt == "crypt":
        assert "Crypt Key:    '<hidden>'" in info.stdout
    ext_py = tmp_path / "ext-py"
    ext_rauc = tmp_path / "ext-rauc"
    pyrauc("extract", "--keyring", pki.keyring, out, ext_py, check=True)
    rauc(rauc_bin, "extract", "--keyring", pki.keyring, out, ext_rauc, check=True)
    _same_tree(ext_py, ext_rauc)
    assert (ext_py / "rootfs.img").read_bytes() == (content / "rootfs.img").read_bytes()


@pytest.mark.interop
@pytest.mark.parametrize("fmt", ["verity", "crypt"])
def test_rauc_signature_of_pyrauc_bundle_matches_manifest(fmt: str, tmp_path: Path, pki: Pki,
                                                         rauc_bin: str) -> None:
    """rauc extract-signature of a pyrauc bundle gives the CMS pyrauc wrote."""
    content = write_content(tmp_path / "content", fmt)
    out = tmp_path / "b.raucb"
    pyrauc("bundle", "--cert", pki.signer_direct.cert_path, "--key", pki.signer_direct.key_path, content, out,
           check=True)
    rauc(rauc_bin, "extract-signature", "--keyring", pki.keyring, out, tmp_path / "sig.der", check=True)
    pyrauc("extract-signature", "--keyring", pki.keyring, out, tmp_path / "sig-py.der", check=True)
    assert (tmp_path / "sig.der").read_bytes() == (tmp_path / "sig-py.der").read_bytes()
    assert oct((tmp_path / "sig-py.der").stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.interop
def test_rauc_resigns_pyrauc_bundle_and_back(tmp_path: Path, pki: Pki, rauc_bin: str) -> None:
    content = write_content(tmp_path / "content", "verity")
    b1 = tmp_path / "b1.raucb"
    pyrauc("bundle", "--cert", pki.signer_direct.cert_path, "--key", pki.signer_direct.key_path, content, b1,
           check=True)
    b2 = tmp_path / "b2.raucb"
    rauc(rauc_bin, "resign", "--keyring", pki.keyring, "--cert", pki.signer_direct.cert_path,
         "--key", pki.signer_direct.key_path, b1, b2, check=True)
    b3 = tmp_path / "b3.raucb"
    pyrauc("resign", "--keyring", pki.keyring, "--cert", pki.signer_ec.cert_path,
           "--key", pki.signer_ec.key_path, "--intermediate", pki.intermediate.cert_path, b2, b3, check=True)
    info = rauc(rauc_bin, "info", "--keyring", pki.keyring, b3, check=True)
    assert "signer-ec" in info.stdout


def _listing(squashfs_image: Path) -> list[str]:
    """``unsquashfs -lls`` without the times: mode, owner, size and name of every entry."""
    out = subprocess.run(["unsquashfs", "-lls", "-o", "0", str(squashfs_image)], capture_output=True, text=True,
                         check=True).stdout
    return [" ".join(line.split()[:3] + line.split()[5:]) for line in out.splitlines() if "squashfs-root" in line]


@pytest.mark.interop
@pytest.mark.parametrize("fmt", ["plain", "verity"])
def test_squashfs_with_appended_manifest_lists_like_one_run(fmt: str, tmp_path: Path, pki: Pki,
                                                            rauc_bin: str) -> None:
    """With RAUC's mksquashfs arguments pyrauc squashes the content while digesting the images and
    appends the manifest; the squashfs holds the same entries (modes, owners, sizes) as RAUC's one
    run (pyrauc itself when --mksquashfs-args are given, and rauc 1.8)."""
    content = write_content(tmp_path / "content", fmt)
    sign = ["--cert", pki.signer.cert_path, "--key", pki.signer.key_path]
    ours = tmp_path / "ours.raucb"
    one_run = tmp_path / "one-run.raucb"
    pyrauc("bundle", *sign, content, ours, check=True)
    pyrauc("bundle", *sign, "--mksquashfs-args=-b 131072", content, one_run, check=True)
    theirs = tmp_path / "theirs.raucb"
    rauc(rauc_bin, "bundle", *sign, write_content(tmp_path / "content2", fmt), theirs, check=True)
    assert _listing(ours) == _listing(one_run)
    # rauc 1.8 serialises some manifests differently (its size may differ): modes, owners, names
    assert [(e.split()[0], e.split()[1], e.split()[-1]) for e in _listing(ours)] == \
        [(e.split()[0], e.split()[1], e.split()[-1]) for e in _listing(theirs)]
