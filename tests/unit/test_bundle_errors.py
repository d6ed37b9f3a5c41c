"""Bad input to bundle commands: one clear error line, exit 1, no output left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pyrauc import bundle as bundlemod
from pyrauc.errors import SignatureError
from pyrauc.signature import Keyring
from tests.helpers.bundles import error_lines, pyrauc, write_content
from tests.helpers.pki import Pki


def _make(tmp_path: Path, pki: Pki, fmt: str = "verity", name: str = "b.raucb") -> Path:
    content = write_content(tmp_path / f"content-{fmt}", fmt)
    out = tmp_path / name
    pyrauc("bundle", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path,
           "--intermediate", pki.intermediate.cert_path, content, out, check=True)
    return out


def _expect_error(proc, needle: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1, lines
    assert needle in lines[0], lines


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def verity_bundle(tmp_path: Path, pki: Pki) -> Path:
    return _make(tmp_path, pki, "verity")


def test_truncated_bundle(verity_bundle: Path, pki: Pki, tmp_path: Path) -> None:
    data = verity_bundle.read_bytes()
    verity_bundle.write_bytes(data[:-100])
    proc = pyrauc("info", "--keyring", pki.keyring, verity_bundle)
    assert proc.returncode == 1
    assert len(error_lines(proc)) == 1


def test_size_field_larger_than_file(verity_bundle: Path, pki: Pki) -> None:
    data = verity_bundle.read_bytes()
    verity_bundle.write_bytes(data[:-8] + (len(data) * 2).to_bytes(8, "big"))
    _expect_error(pyrauc("info", "--keyring", pki.keyring, verity_bundle), "exceeds bundle size")


def test_size_field_zero(verity_bundle: Path, pki: Pki) -> None:
    data = verity_bundle.read_bytes()
    verity_bundle.write_bytes(data[:-8] + bytes(8))
    _expect_error(pyrauc("info", "--keyring", pki.keyring, verity_bundle), "Signature size is 0")


def test_flipped_payload_byte_verity(verity_bundle: Path, pki: Pki, tmp_path: Path) -> None:
    _flip(verity_bundle, 5000)
    out = tmp_path / "ext"
    _expect_error(pyrauc("extract", "--keyring", pki.keyring, verity_bundle, out), "bundle payload is corrupted")
    assert not out.exists()


def test_flipped_hash_tree_byte(verity_bundle: Path, pki: Pki, tmp_path: Path) -> None:
    b = bundlemod.open_bundle(verity_bundle, keyring=Keyring(path=pki.keyring))
    _flip(verity_bundle, b.squashfs_size + 10)
    out = tmp_path / "ext"
    _expect_error(pyrauc("extract", "--keyring", pki.keyring, verity_bundle, out), "bundle payload is corrupted")
    assert not out.exists()


def test_flipped_payload_byte_plain(tmp_path: Path, pki: Pki) -> None:
    b = _make(tmp_path, pki, "plain")
    _flip(b, 100)
    _expect_error(pyrauc("info", "--keyring", pki.keyring, b), "signature verification failed")


def test_flipped_cms_byte(verity_bundle: Path, pki: Pki) -> None:
    size, cms = bundlemod.read_framing(verity_bundle)
    # flip a byte inside the manifest text (eContent) so the CMS still parses
    pos = cms.find(b"compatible=")
    assert pos > 0
    _flip(verity_bundle, size + pos + 2)
    _expect_error(pyrauc("info", "--keyring", pki.keyring, verity_bundle), "signature verification failed")


def test_unknown_manifest_key(tmp_path: Path, pki: Pki) -> None:
    extra = "\n[image.extra]\nfilename=appfs.img\nfoo=bar\n"
    content = write_content(tmp_path / "content", "verity", extra_manifest=extra)
    out = tmp_path / "b.raucb"
    proc = pyrauc("bundle", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path, content, out)
    _expect_error(proc, "Invalid key 'foo' in group '[image.extra]'")
    assert not out.exists()


def test_missing_image_file(tmp_path: Path, pki: Pki) -> None:
    content = write_content(tmp_path / "content", "verity")
    (content / "appfs.img").unlink()
    out = tmp_path / "b.raucb"
    proc = pyrauc("bundle", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path, content, out)
    _expect_error(proc, "image file 'appfs.img' for slot 'appfs' does not exist")
    assert not out.exists()
    assert not (content / ".rauc-workdir").exists()


def test_wrong_keyring(verity_bundle: Path, pki: Pki) -> None:
    _expect_error(pyrauc("info", "--keyring", pki.other_keyring, verity_bundle), "signature verification failed")


def test_expired_signer(tmp_path: Path, pki: Pki) -> None:
    content = write_content(tmp_path / "content", "verity")
    out = tmp_path / "b.raucb"
    pyrauc("bundle", "--cert", pki.expired.cert_path, "--key", pki.expired.key_path, content, out, check=True)
    _expect_error(pyrauc("info", "--keyring", pki.keyring, out), "certificate has expired")
    assert pyrauc("info", "--no-check-time", "--keyring", pki.keyring, out).returncode == 0


def test_signer_without_required_purpose(tmp_path: Path, pki: Pki) -> None:
    b = _make(tmp_path, pki, "verity")
    with pytest.raises(SignatureError, match=r"code signing|purpose"):
        bundlemod.open_bundle(b, keyring=Keyring(path=pki.keyring, check_purpose="codesign"))
    conf = tmp_path / "system.conf"
    conf.write_text(f"[system]\ncompatible=Test Config\nbootloader=noop\n\n[keyring]\npath={pki.keyring}\n"
                    "check-purpose=codesign\n")
    proc = pyrauc("-c", conf, "info", b)
    assert proc.returncode == 1
    # the codesign signer passes the same policy
    c = tmp_path / "c2"
    write_content(c, "verity")
    b2 = tmp_path / "codesigned.raucb"
    pyrauc("bundle", "--cert", pki.codesign.cert_path, "--key", pki.codesign.key_path, c, b2, check=True)
    bundlemod.open_bundle(b2, keyring=Keyring(path=pki.keyring, check_purpose="codesign"))


def test_output_exists(tmp_path: Path, pki: Pki) -> None:
    content = write_content(tmp_path / "content", "verity")
    out = tmp_path / "b.raucb"
    out.write_bytes(b"precious")
    proc = pyrauc("bundle", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path, content, out)
    _expect_error(proc, "already exists")
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.raucb", "content"]


def test_output_inside_input_dir(tmp_path: Path, pki: Pki) -> None:
    content = write_content(tmp_path / "content", "verity")
    proc = pyrauc("bundle", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path, content,
                  content / "b.raucb")
    _expect_error(proc, "Bundle path must be located outside input directory!")
    assert not (content / "b.raucb").exists()


def test_extract_output_exists(verity_bundle: Path, pki: Pki, tmp_path: Path) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    _expect_error(pyrauc("extract", "--keyring", pki.keyring, verity_bundle, out), "exists already")


def test_no_temp_files_left_after_failed_sign(tmp_path: Path, pki: Pki) -> None:
    content = write_content(tmp_path / "content", "crypt")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # a key that does not belong to the certificate cannot produce a verifiable bundle
    proc = pyrauc("bundle", "--cert", pki.signer.cert_path, "--key", pki.other_signer.key_path,
                  "--signing-keyring", pki.keyring, content, out_dir / "b.raucb")
    assert proc.returncode == 1
    assert list(out_dir.iterdir()) == []
    shutil.rmtree(content)
