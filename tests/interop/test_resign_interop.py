"""Re-signing as users do it: resign, the external-signing flow, time, adaptive bundles, rauc 1.8 as reader.

* replace-signature with a manifest signed by ``openssl cms`` (RAUC's "External Signing" recipe),
  for unencrypted and encrypted crypt bundles; the result reads back in pyrauc and rauc 1.8;
* resign of crypt bundles; of a bundle whose signer expired (``--no-verify``); under a faked clock;
* bundles with a block hash index are read by rauc 1.8 and pyrauc alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.bundles import error_lines, pyrauc, pyrauc_bundle, rauc, write_content
from tests.helpers.pki import Pki, issue

pytestmark = pytest.mark.interop


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def external_signature(tmp_path: Path, bundle: Path, pki: Pki, *decrypt: str | Path) -> Path:
    """extract-signature -> openssl cms -verify (the manifest) -> openssl cms -sign by pki.signer."""
    sig, manifest, new = tmp_path / "old.cms", tmp_path / "manifest", tmp_path / "new.cms"
    res = pyrauc("extract-signature", "--keyring", pki.keyring, *decrypt, bundle, sig)
    assert res.returncode == 0, res.stderr
    _openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-CAfile", pki.keyring, "-out", manifest)
    _openssl("cms", "-sign", "-binary", "-nosmimecap", "-nodetach", "-outform", "DER", "-md", "sha256",
             "-in", manifest, "-signer", pki.signer.cert_path, "-inkey", pki.signer.key_path,
             "-certfile", pki.intermediate.cert_path, "-out", new)
    return new


@pytest.mark.parametrize("encrypted", [False, True], ids=["unencrypted", "encrypted"])
def test_replace_signature_of_crypt_bundle(tmp_path: Path, pki: Pki, rauc_bin: str, encrypted: bool) -> None:
    bundle = pyrauc_bundle(write_content(tmp_path / "c", "crypt"), tmp_path / "b.raucb", pki.signer_direct)
    decrypt: tuple[str | Path, ...] = ()
    if encrypted:
        device = issue(tmp_path, "device", issuer=pki.root, key_kind="p256")
        enc = tmp_path / "enc.raucb"
        assert pyrauc("encrypt", "--to", device.cert_path, "--keyring", pki.keyring, bundle, enc).returncode == 0
        bundle, decrypt = enc, ("--key", device.key_path)
    new_sig = external_signature(tmp_path, bundle, pki, *decrypt)
    out = tmp_path / "out.raucb"
    extra = ("--decrypt-key", decrypt[1]) if decrypt else ()
    res = pyrauc("replace-signature", "--keyring", pki.keyring, *extra, bundle, new_sig, out)
    assert res.returncode == 0, res.stderr
    info = pyrauc("info", "--keyring", pki.keyring, *decrypt, out)
    assert info.returncode == 0, info.stderr
    assert "CN = signer" in info.stdout and ("[encrypted CMS]" in info.stdout) == encrypted
    ext = tmp_path / "ext"
    assert pyrauc("extract", "--keyring", pki.keyring, *decrypt, out, ext).returncode == 0
    assert (ext / "rootfs.img").read_bytes() == (tmp_path / "c" / "rootfs.img").read_bytes()
    theirs = rauc(rauc_bin, "info", "--keyring", pki.keyring, *decrypt, out)
    assert theirs.returncode == 0, theirs.stderr


def test_replace_signature_with_the_inner_manifest_is_refused(tmp_path: Path, pki: Pki) -> None:
    """The manifest inside the squashfs lacks the verity values: such a signature cannot fit."""
    content = write_content(tmp_path / "c", "crypt")
    bundle = pyrauc_bundle(content, tmp_path / "b.raucb", pki.signer_direct)
    ext = tmp_path / "ext"
    assert pyrauc("extract", "--keyring", pki.keyring, bundle, ext).returncode == 0
    sig = tmp_path / "wrong.cms"
    _openssl("cms", "-sign", "-binary", "-nosmimecap", "-nodetach", "-outform", "DER", "-in", ext / "manifest.raucm",
             "-signer", pki.signer_direct.cert_path, "-inkey", pki.signer_direct.key_path, "-out", sig)
    res = pyrauc("replace-signature", "--keyring", pki.keyring, bundle, sig, tmp_path / "out.raucb")
    assert res.returncode == 1
    assert error_lines(res) == ["Failed to replace signature: failed to verify the new bundle: "
                                "Missing hash for crypt bundle"]
    assert not (tmp_path / "out.raucb").exists()


@pytest.mark.parametrize("fmt", ["verity", "crypt"])
def test_resign_read_by_both(tmp_path: Path, pki: Pki, rauc_bin: str, fmt: str) -> None:
    bundle = pyrauc_bundle(write_content(tmp_path / "c", fmt), tmp_path / "b.raucb", pki.signer_direct)
    out = tmp_path / "out.raucb"
    res = pyrauc("resign", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path, "--intermediate",
                 pki.intermediate.cert_path, "--keyring", pki.keyring, bundle, out)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"Resigning '{fmt}' format bundle\n"
    for tool in (pyrauc, lambda *a: rauc(rauc_bin, *a)):
        info = tool("info", "--keyring", pki.keyring, out)
        assert info.returncode == 0 and "CN = signer" in info.stdout, info.stderr


def _expired_bundle(tmp_path: Path, pki: Pki, rauc_bin: str) -> Path:
    content = write_content(tmp_path / "c", "verity")
    out = tmp_path / "expired.raucb"
    rauc(rauc_bin, "bundle", "--cert", pki.expired.cert_path, "--key", pki.expired.key_path, content, out, check=True)
    return out


def test_resign_expired_signer(tmp_path: Path, pki: Pki, rauc_bin: str) -> None:
    """Refused while the old signature is checked; fine with --no-verify (or --no-check-time), as rauc."""
    old = _expired_bundle(tmp_path, pki, rauc_bin)
    signing = ("--cert", pki.signer_direct.cert_path, "--key", pki.signer_direct.key_path, "--keyring", pki.keyring)
    for extra, ok in (((), False), (("--no-verify",), True), (("--no-check-time",), True)):
        outs = {}
        for name, tool in (("pyrauc", pyrauc), ("rauc", lambda *a: rauc(rauc_bin, *a))):
            out = tmp_path / f"{name}{len(extra)}{extra[0] if extra else ''}.raucb"
            res = tool("resign", *signing, *extra, old, out)
            outs[name] = (res.returncode, out.exists())
            if not ok:
                assert error_lines(res)[-1] == "signature verification failed: Verify error: certificate has expired"
        assert outs["pyrauc"] == outs["rauc"] == ((0, True) if ok else (1, False)), extra


@pytest.mark.skipif(shutil.which("faketime") is None, reason="needs faketime (apt-get install faketime)")
@pytest.mark.parametrize(("when", "ok"), [("+3y", True), ("-2y", False), ("+20y", False)])
def test_resign_under_faked_time(tmp_path: Path, pki: Pki, rauc_bin: str, when: str, ok: bool) -> None:
    """The clock decides whether the new signer is valid when the result is verified: the same for both."""
    bundle = pyrauc_bundle(write_content(tmp_path / "c", "verity"), tmp_path / "b.raucb", pki.signer_direct)
    argv = ["resign", "--no-verify", "--cert", str(pki.signer.cert_path), "--key", str(pki.signer.key_path),
            "--intermediate", str(pki.intermediate.cert_path), "--keyring", str(pki.keyring), str(bundle)]
    results = {}
    for name, exe in (("pyrauc", [sys.executable, "-m", "pyrauc"]), ("rauc", [rauc_bin])):
        out = tmp_path / f"{name}.raucb"
        proc = subprocess.run(["faketime", "-f", when, *exe, *argv, str(out)], capture_output=True, text=True)
        results[name] = (proc.returncode, out.exists(), error_lines(proc)[-1:] if proc.returncode else [])
    assert results["pyrauc"] == results["rauc"], results
    assert results["pyrauc"][0] == (0 if ok else 1)


def test_block_hash_index_bundle_read_by_rauc(tmp_path: Path, pki: Pki, rauc_bin: str) -> None:
    content = tmp_path / "c"
    content.mkdir()
    (content / "rootfs.img").write_bytes(os.urandom(4096 * 40))
    (content / "manifest.raucm").write_text("[update]\ncompatible=Test Config\nversion=1\n\n[bundle]\nformat=crypt\n\n"
                                            "[image.rootfs]\nfilename=rootfs.img\nadaptive=block-hash-index\n")
    ours = pyrauc_bundle(content, tmp_path / "ours.raucb", pki.signer_direct)
    theirs = tmp_path / "theirs.raucb"
    rauc(rauc_bin, "bundle", "--cert", pki.signer_direct.cert_path, "--key", pki.signer_direct.key_path,
         content, theirs, check=True)
    extracted = {}
    for name, bundle in (("ours", ours), ("theirs", theirs)):
        for tool_name, tool in (("pyrauc", pyrauc), ("rauc", lambda *a: rauc(rauc_bin, *a))):
            out = tmp_path / f"{name}-{tool_name}"
            res = tool("extract", "--keyring", pki.keyring, bundle, out)
            assert res.returncode == 0, res.stderr
            extracted[name, tool_name] = (out / "rootfs.img.block-hash-index").read_bytes()
            info = tool("info", "--keyring", pki.keyring, bundle)
            assert "block-hash-index" in info.stdout
    assert len(set(extracted.values())) == 1


def test_resign_append_multi_signer(tmp_path: Path, pki: Pki, rauc_bin: str) -> None:
    """Two signers: written only when every signer verifies; read wherever rauc reads it, refused
    with rauc's message where rauc refuses it (verification supports one signer)."""
    bundle = pyrauc_bundle(write_content(tmp_path / "c", "verity"), tmp_path / "b.raucb", pki.signer_direct)
    out = tmp_path / "two.raucb"
    res = pyrauc("resign", "--append", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path,
                 "--intermediate", pki.intermediate.cert_path, "--keyring", pki.keyring, bundle, out)
    assert res.returncode == 0, res.stderr
    assert "Verified inline signature by 'O = Test Org, CN = signer-direct', 'O = Test Org, CN = signer'" \
        in res.stderr
    tools = {"pyrauc": pyrauc, "rauc": lambda *a: rauc(rauc_bin, *a)}
    for name, tool in tools.items():
        unverified = tool("info", "--no-verify", out)
        assert unverified.returncode == 0 and "Signature unverified" in unverified.stdout, (name, unverified.stderr)
        for cmd in (("info", "--keyring", pki.keyring, out), ("extract", "--keyring", pki.keyring, out,
                                                               tmp_path / f"x-{name}")):
            refused = tool(*cmd)
            assert refused.returncode == 1 and error_lines(refused)[-1] == "Unsupported number of signers: 2", name
    untrusted = pyrauc("resign", "--append", "--cert", pki.other_signer.cert_path, "--key", pki.other_signer.key_path,
                       "--keyring", pki.keyring, bundle, tmp_path / "bad.raucb")
    assert untrusted.returncode == 1 and not (tmp_path / "bad.raucb").exists()
    assert error_lines(untrusted) == ["Failed to resign bundle: failed to sign manifest: signature verification "
                                      "failed: Verify error: unable to get local issuer certificate"]
