"""Hostile and careless input to every command: one clean refusal, nothing left, no secret shown.

Table-driven: each case is a command line against prepared inputs (bundles, crafted CMS and
certificates, broken content directories and system.conf files). For each the suite asserts:

* exit code 1, exactly one error line on stderr (GLib-style diagnostics aside), no traceback;
* the expected error text;
* nothing left: the output directory and ``$TMPDIR`` (private per case) hold nothing new, the
  inputs are unchanged (no ``.rauc-workdir*`` in content directories);
* no secret on stdout, stderr or in any file the run created: not the AES keys of the crypt
  bundles, not a private key, not the PKCS#11 PIN.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pyrauc import signature
from pyrauc.manifest import Manifest
from tests.helpers import hostile
from tests.helpers.bundles import error_lines, pyrauc_bundle, split_bundle, write_bundle, write_content
from tests.helpers.pki import Pki, issue, write_pem_bundle

PIN = "1234-secret-pin"

# what a system.conf that cannot be loaded makes RAUC print (a regular expression, then the reason)
CONF_ERROR = "re:^Failed to initialize context: Failed to load system config \\(.*\\): "


@dataclasses.dataclass
class World:
    """Everything the cases refer to as ``{name}``."""

    dir: Path
    paths: dict[str, str]
    secrets: list[str]


def _content(d: Path, name: str, fmt: str = "verity", extra: str = "", tweak: Callable[[Path], None] | None = None
             ) -> Path:
    c = write_content(d / name, fmt, rootfs_size=16384, extra_manifest=extra)
    if tweak:
        tweak(c)
    return c


def _manifest(c: Path, text: str) -> None:
    (c / "manifest.raucm").write_text(text)


def _signed_manifest_bundle(d: Path, name: str, good: Path, pki: Pki, change: Callable[[str], str]) -> Path:
    """``good`` (a verity bundle) with its manifest changed by ``change`` and signed again."""
    payload, cms = split_bundle(good)
    text = change((signature.cms_content(cms) or b"").decode())
    new = signature.cms_sign(text.encode(), cert=pki.signer_direct.cert, key=pki.signer_direct.key)
    return write_bundle(d / name, payload, new)


def _conf(d: Path, name: str, body: str) -> Path:
    path = d / name
    path.write_text("[system]\ncompatible=Test Config\nbootloader=noop\n" + body)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> World:
    d = tmp_path_factory.mktemp("bad")
    p: dict[str, Path] = {}
    p["verity"] = pyrauc_bundle(_content(d, "c-verity"), d / "verity.raucb", pki.signer_direct)
    p["crypt"] = pyrauc_bundle(_content(d, "c-crypt", "crypt"), d / "crypt.raucb", pki.signer_direct)
    p["plain"] = pyrauc_bundle(_content(d, "c-plain", "plain"), d / "plain.raucb", pki.signer_direct)
    dev_rsa, dev_ec = issue(d, "dev-rsa"), issue(d, "dev-ec", key_kind="p256")
    p["dev_rsa_key"], p["dev_ec_key"], p["dev_rsa_cert"] = dev_rsa.key_path, dev_ec.key_path, dev_rsa.cert_path
    outsider = issue(d, "outsider")
    p["outsider_key"] = outsider.key_path
    to = write_pem_bundle(d / "to.pem", [dev_rsa.cert, dev_ec.cert])
    p["enc"] = d / "enc.raucb"
    subprocess.run([sys.executable, "-m", "pyrauc", "encrypt", "--to", str(to), "--keyring", str(pki.keyring),
                    str(p["crypt"]), str(p["enc"])], check=True, capture_output=True)
    p["good_content"] = _content(d, "c-good")
    p["expired_bundle"] = pyrauc_bundle(_content(d, "c-exp"), d / "expired.raucb", pki.expired)
    # broken content directories
    p["abs_link"] = _content(d, "c-abs", tweak=lambda c: (c / "x.img").symlink_to("/etc/passwd"))
    p["slash_link"] = _content(d, "c-slash", tweak=lambda c: (c / "x.img").symlink_to("a/b"))
    p["hidden"] = _content(d, "c-hidden", tweak=lambda c: (c / ".git").mkdir())
    p["fifo"] = _content(d, "c-fifo", tweak=lambda c: os.mkfifo(c / "pipe"))
    p["no_image"] = _content(d, "c-noimg", tweak=lambda c: (c / "appfs.img").unlink())
    p["no_manifest"] = _content(d, "c-nomf", tweak=lambda c: (c / "manifest.raucm").unlink())
    p["no_hook"] = _content(d, "c-nohook", extra="\n[hooks]\nfilename=hook.sh\nhooks=install-check\n")
    p["mf_syntax"] = _content(d, "c-syntax", tweak=lambda c: _manifest(c, "[update\ncompatible=x\n"))
    p["mf_key"] = _content(d, "c-key", extra="\n[image.rootfs]\nbogus=1\n")
    p["mf_group"] = _content(d, "c-group", extra="\n[nonsense]\nx=1\n")
    p["mf_format"] = _content(d, "c-format", tweak=lambda c: _manifest(
        c, "[update]\ncompatible=x\n[bundle]\nformat=zip\n[image.rootfs]\nfilename=rootfs.img\n"))
    p["mf_digest"] = _content(d, "c-digest", tweak=lambda c: _manifest(
        c, "[update]\ncompatible=x\n[image.rootfs]\nfilename=rootfs.img\nsha256=" + "ab" * 32 + "\n"))
    p["mf_no_compat"] = _content(d, "c-nocompat", tweak=lambda c: _manifest(c, "[update]\nversion=1\n"))
    p["mf_slash"] = _content(d, "c-mfslash", tweak=lambda c: _manifest(
        c, "[update]\ncompatible=x\n[image.rootfs]\nfilename=../rootfs.img\n"))
    p["mf_newline"] = _content(d, "c-newline", tweak=lambda c: _manifest(
        c, "[update]\ncompatible=x\n[image.rootfs]\nfilename=bad\\nname\\r.img\n"))
    p["mf_min_rauc"] = _content(d, "c-minrauc", tweak=lambda c: _manifest(
        c, "[update]\ncompatible=x\nmin-rauc-version=99.0\n[image.rootfs]\nfilename=rootfs.img\n"))
    p["mf_adaptive"] = _content(d, "c-adaptive", tweak=lambda c: (
        (c / "rootfs.img").write_bytes(b"x" * 5000),
        _manifest(c, "[update]\ncompatible=x\n[bundle]\nformat=verity\n[image.rootfs]\nfilename=rootfs.img\n"
                     "adaptive=block-hash-index\n")))
    p["mf_tiny"] = _content(d, "c-tiny", tweak=lambda c: (
        (c / "rootfs.img").write_bytes(b""), (c / "appfs.img").write_bytes(b"")))
    # hostile bundles
    payload, cms = split_bundle(p["verity"])
    for name, data in {"garbage": os.urandom(5000), "empty": b"", "short": b"1234",
                       "sig0": payload + bytes(8),
                       "sig_huge": payload + (2**40).to_bytes(8, "big"),
                       "sig_over_max": payload + b"\0" * 70000 + (70000).to_bytes(8, "big"),
                       "sig_trunc": payload + cms[:-50] + len(cms).to_bytes(8, "big")}.items():
        (d / f"{name}.raucb").write_bytes(data)
        p[name] = d / f"{name}.raucb"
    p["cms_garbage"] = write_bundle(d / "cms_garbage.raucb", payload, b"\x30\x82\x01\x00" + os.urandom(256))
    p["cms_notseq"] = write_bundle(d / "notseq.raucb", payload, hostile.signed_data_not_sequence(cms))
    p["cms_econtent"] = write_bundle(d / "econtent.raucb", payload, hostile.econtent_not_sequence(cms))
    p["cms_unkalg"] = write_bundle(d / "unkalg.raucb", payload, hostile.unknown_signature_algorithm(cms))
    p["bad_hash"] = _signed_manifest_bundle(d, "badhash.raucb", p["verity"], pki,
                                            lambda t: re.sub(r"verity-hash=\w+", "verity-hash=" + "zz" * 32, t))
    p["odd_salt"] = _signed_manifest_bundle(d, "oddsalt.raucb", p["verity"], pki,
                                            lambda t: re.sub(r"verity-salt=(\w+)", r"verity-salt=\g<1>0", t))
    p["bad_size"] = _signed_manifest_bundle(d, "badsize.raucb", p["verity"], pki,
                                            lambda t: re.sub(r"verity-size=\d+", "verity-size=-1", t))
    p["huge_size"] = _signed_manifest_bundle(d, "hugesize.raucb", p["verity"], pki,
                                             lambda t: re.sub(r"verity-size=\d+", "verity-size=8192000", t))
    dup_signer = hostile.duplicated_extension(pki.signer_direct, pki.root)
    p["dup_signer_cert"] = hostile.write_cert(d / "dup-signer.pem", dup_signer)
    corrupted = bytearray(p["verity"].read_bytes())
    corrupted[200] ^= 0xFF
    p["corrupted"] = d / "corrupted.raucb"
    p["corrupted"].write_bytes(bytes(corrupted))
    p["nested_sig"] = d / "nested.cms"
    p["nested_sig"].write_bytes(hostile.unknown_signature_algorithm(cms))
    p["other_sig"] = d / "other.cms"
    _, other_cms = split_bundle(pyrauc_bundle(_content(d, "c-other"), d / "other.raucb", pki.signer_direct))
    p["other_sig"].write_bytes(other_cms)
    p["garbage_sig"] = d / "garbage.cms"
    p["garbage_sig"].write_bytes(b"not a cms at all")
    # hostile certificates and keys
    p["offcurve"] = hostile.write_cert(d / "offcurve.pem", hostile.ec_point_off_curve(dev_ec, pki.root))
    p["rsa_n1"] = hostile.write_cert(d / "rsa1.pem", hostile.rsa_degenerate_modulus(dev_rsa, pki.root, 1))
    p["rsa_even"] = hostile.write_cert(d / "rsaeven.pem", hostile.rsa_degenerate_modulus(dev_rsa, pki.root, 2**1024))
    p["dupext"] = hostile.write_cert(d / "dupext.pem", hostile.duplicated_extension(dev_rsa, pki.root))
    two = write_pem_bundle(d / "two.pem", [dev_rsa.cert, dev_ec.cert]).read_bytes()
    p["trunc_pem"] = d / "trunc.pem"
    p["trunc_pem"].write_bytes(two[:-120])
    p["empty_pem"] = d / "empty.pem"
    p["empty_pem"].write_bytes(b"")
    p["garbage_keyring"] = d / "garbage-keyring.pem"
    p["garbage_keyring"].write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    p["enc_key"] = d / "enc.key.pem"
    p["enc_key"].write_bytes(pki.signer_direct.key.private_bytes(
        *_pem_pkcs8(), encryption_algorithm=_password(b"pass")))
    # system.conf files
    slot = "[slot.rootfs.0]\ndevice=/dev/null\nbootname=A\n[slot.rootfs.1]\ndevice=/dev/null\nbootname=B\n"
    p["conf_ok"] = _conf(d, "ok.conf", f"data-directory={d}/data\n[keyring]\npath={pki.keyring}\n{slot}")
    p["conf_self"] = _conf(d, "self.conf", "[slot.a.0]\ndevice=/dev/null\nparent=a.0\n")
    p["conf_loop"] = _conf(d, "loop.conf", "[slot.a.0]\ndevice=/x\nparent=b.0\n[slot.b.0]\ndevice=/y\nparent=a.0\n")
    p["conf_dupboot"] = _conf(d, "dupboot.conf", "[slot.a.0]\ndevice=/x\nbootname=A\n[slot.a.1]\ndevice=/y\n"
                                                 "bootname=A\n")
    p["conf_maxsig"] = _conf(d, "maxsig.conf", "max-bundle-signature-size=1T\n" + slot)
    p["conf_datafile"] = _conf(d, "datafile.conf", f"data-directory={p['verity']}\n" + slot)
    p["conf_syntax"] = d / "syntax.conf"
    p["conf_syntax"].write_text("[system\ncompatible=x\n")
    p["conf_key"] = _conf(d, "key.conf", "frobnicate=1\n" + slot)
    p["conf_nocompat"] = d / "nocompat.conf"
    p["conf_nocompat"].write_text("[system]\nbootloader=noop\n")
    p["conf_formats"] = _conf(d, "formats.conf", f"bundle-formats=verity\n[keyring]\npath={pki.keyring}\n{slot}")
    p["conf_mkfs"] = _conf(d, "mkfs.conf", "[slot.rootfs.0]\ndevice=/dev/null\ntype=ext4\nextra-mkfs-opts=-O 'x\n")
    paths = {k: str(v) for k, v in p.items()}
    paths.update(keyring=str(pki.keyring), other_keyring=str(pki.other_keyring),
                 cert=str(pki.signer_direct.cert_path), key=str(pki.signer_direct.key_path),
                 other_key=str(pki.other_signer.key_path), expired_cert=str(pki.expired.cert_path),
                 expired_key=str(pki.expired.key_path))
    secrets = [PIN]
    for bundle in (p["crypt"],):
        mf = Manifest.parse(signature.cms_content(split_bundle(bundle)[1]) or b"")
        assert mf.crypt_key is not None
        secrets += [mf.crypt_key.hex(), mf.crypt_key.hex().upper()]
    for key in (pki.signer_direct.key_path, dev_rsa.key_path, dev_ec.key_path, outsider.key_path):
        secrets += [line for line in key.read_text().splitlines() if len(line) == 64 and "-" not in line][:3]
    return World(d, paths, secrets)


def _pem_pkcs8() -> tuple[object, object]:
    from cryptography.hazmat.primitives import serialization
    return serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8


def _password(pw: bytes) -> object:
    from cryptography.hazmat.primitives import serialization
    return serialization.BestAvailableEncryption(pw)


# (id, argv, expected error line: exact text, or a regex when it starts with "re:")
CASES: list[tuple[str, tuple[str, ...], str]] = [
    # bundle -------------------------------------------------------------------------------------
    ("bundle-no-content-dir", ("bundle", "--cert={cert}", "--key={key}", "{dir}/nope", "{out}/b.raucb"),
     "Input path must point to a directory!"),
    ("bundle-out-dir-missing", ("bundle", "--cert={cert}", "--key={key}", "{good_content}", "{out}/no/b.raucb"),
     "re:^Failed to create bundle: failed to open bundle for writing: Error opening file .*No such file"),
    ("bundle-out-in-proc", ("bundle", "--cert={cert}", "--key={key}", "{good_content}", "/proc/b.raucb"),
     "re:^Failed to create bundle: failed to open bundle for writing: Error opening file “/proc/b.raucb”"),
    ("bundle-out-exists", ("bundle", "--cert={cert}", "--key={key}", "{good_content}", "{verity}"),
     "re:^Failed to create bundle: bundle .*verity.raucb already exists$"),
    ("bundle-out-inside", ("bundle", "--cert={cert}", "--key={key}", "{good_content}", "{good_content}/b.raucb"),
     "Bundle path must be located outside input directory!"),
    ("bundle-no-manifest", ("bundle", "--cert={cert}", "--key={key}", "{no_manifest}", "{out}/b.raucb"),
     "re:^Failed to create bundle: .*manifest.raucm"),
    ("bundle-manifest-syntax", ("bundle", "--cert={cert}", "--key={key}", "{mf_syntax}", "{out}/b.raucb"),
     "re:^Failed to create bundle: .*"),
    ("bundle-manifest-key", ("bundle", "--cert={cert}", "--key={key}", "{mf_key}", "{out}/b.raucb"),
     "re:^Failed to create bundle: .*Invalid key 'bogus' in group '\\[image.rootfs\\]'"),
    ("bundle-manifest-group", ("bundle", "--cert={cert}", "--key={key}", "{mf_group}", "{out}/b.raucb"),
     "re:^Failed to create bundle: .*Invalid group '\\[nonsense\\]'"),
    ("bundle-manifest-format", ("bundle", "--cert={cert}", "--key={key}", "{mf_format}", "{out}/b.raucb"),
     "re:^Failed to create bundle: .*Invalid format value 'zip' in group '\\[bundle\\]'"),
    ("bundle-manifest-digest", ("bundle", "--cert={cert}", "--key={key}", "{mf_digest}", "{out}/b.raucb"),
     "re:^Failed to create bundle: .*Unexpected digest for image rootfs.img in input manifest"),
    ("bundle-manifest-compatible", ("bundle", "--cert={cert}", "--key={key}", "{mf_no_compat}", "{out}/b.raucb"),
     "re:^Failed to create bundle: .*compatible"),
    ("bundle-image-slash", ("bundle", "--cert={cert}", "--key={key}", "{mf_slash}", "{out}/b.raucb"),
     "re:^Failed to create bundle: .*must not contain '/'"),
    ("bundle-newline-in-name", ("bundle", "--cert={cert}", "--key={key}", "{mf_newline}", "{out}/b.raucb"),
     "re:^Failed to create bundle: image file 'bad\\\\nname\\\\r.img' for slot 'rootfs' does not exist"),
    ("bundle-min-rauc", ("bundle", "--cert={cert}", "--key={key}", "{mf_min_rauc}", "{out}/b.raucb"),
     "re:^Failed to create bundle: Minimum RAUC version in manifest \\(99.0\\) is newer"),
    ("bundle-adaptive", ("bundle", "--cert={cert}", "--key={key}", "{mf_adaptive}", "{out}/b.raucb"),
     "Failed to create bundle: Failed to generate hash index for rootfs.img: image/partition size (5000) "
     "is not a multiple of 4096 bytes"),
    ("bundle-missing-image", ("bundle", "--cert={cert}", "--key={key}", "{no_image}", "{out}/b.raucb"),
     "re:^Failed to create bundle: image file 'appfs.img' for slot 'appfs' does not exist"),
    ("bundle-missing-hook", ("bundle", "--cert={cert}", "--key={key}", "{no_hook}", "{out}/b.raucb"),
     "re:^Failed to create bundle: hook file 'hook.sh' does not exist"),
    ("bundle-abs-symlink", ("bundle", "--cert={cert}", "--key={key}", "{abs_link}", "{out}/b.raucb"),
     "re:^Failed to create bundle: absolute symlinks are not supported as bundle contents"),
    ("bundle-slash-symlink", ("bundle", "--cert={cert}", "--key={key}", "{slash_link}", "{out}/b.raucb"),
     "re:^Failed to create bundle: symlinks containing slashes are not supported as bundle contents"),
    ("bundle-hidden-dir", ("bundle", "--cert={cert}", "--key={key}", "{hidden}", "{out}/b.raucb"),
     "Failed to create bundle: hidden directories are not supported as bundle contents (.git)"),
    ("bundle-fifo", ("bundle", "--cert={cert}", "--key={key}", "{fifo}", "{out}/b.raucb"),
     "re:^Failed to create bundle: only regular files are supported as bundle contents"),
    ("bundle-cert-missing", ("bundle", "--cert={dir}/none.pem", "--key={key}", "{good_content}", "{out}/b.raucb"),
     "re:^Failed to create bundle: failed to sign manifest: failed to load cert file"),
    ("bundle-key-missing", ("bundle", "--cert={cert}", "--key={dir}/none.pem", "{good_content}", "{out}/b.raucb"),
     "re:^Failed to create bundle: failed to sign manifest: failed to load key file"),
    ("bundle-key-mismatch", ("bundle", "--cert={cert}", "--key={other_key}", "{good_content}", "{out}/b.raucb"),
     "re:^Failed to create bundle: .*"),
    ("bundle-key-as-cert", ("bundle", "--cert={key}", "--key={key}", "{good_content}", "{out}/b.raucb"),
     "re:^Failed to create bundle: failed to sign manifest: failed to parse cert file .*Expecting: CERTIFICATE"),
    ("bundle-encrypted-key", ("bundle", "--cert={cert}", "--key={enc_key}", "{good_content}", "{out}/b.raucb"),
     "re:^Failed to create bundle: failed to sign manifest: failed to parse key file .*key is encrypted"),
    ("bundle-dup-ext-signer", ("bundle", "--cert={dup_signer_cert}", "--key={key}", "{good_content}",
                               "{out}/b.raucb"),
     "re:^Failed to create bundle: failed to sign manifest: failed to parse cert file .*duplicate extension"),
    ("bundle-intermediate-missing", ("bundle", "--cert={cert}", "--key={key}", "--intermediate={dir}/none.pem",
                                     "{good_content}", "{out}/b.raucb"),
     "re:^Failed to create bundle: failed to sign manifest: failed to load cert file"),
    ("bundle-quotes", ("bundle", "--cert={cert}", "--key={key}", "--mksquashfs-args=-comp 'xz", "{good_content}",
                       "{out}/b.raucb"),
     "re:^Failed to create bundle: Failed to parse mksquashfs extra args: Text ended before matching quote"),
    ("bundle-mksquashfs-arg", ("bundle", "--cert={cert}", "--key={key}", "--mksquashfs-args=-frobnicate",
                               "{good_content}", "{out}/b.raucb"),
     "re:^Failed to create bundle: Failed to run mksquashfs: Child process exited with code 1 \\(.+\\)$"),
    ("bundle-untrusted", ("bundle", "--cert={cert}", "--key={key}", "--keyring={other_keyring}", "{good_content}",
                          "{out}/b.raucb"),
     "re:^Failed to create bundle: failed to sign manifest: signature verification failed: "),
    ("bundle-expired", ("bundle", "--cert={expired_cert}", "--key={expired_key}", "--keyring={keyring}",
                        "{good_content}", "{out}/b.raucb"),
     "Failed to create bundle: failed to sign manifest: signature verification failed: Verify error: "
     "certificate has expired"),
    ("bundle-confopt", ("bundle", "-C", "system:x", "--cert={cert}", "--key={key}", "{good_content}", "{out}/b.raucb"),
     "Failed to initialize context: Error in parsing override: Missing '='"),
    # info ---------------------------------------------------------------------------------------
    ("info-missing", ("info", "--keyring={keyring}", "{dir}/none.raucb"), "re:^No such file: .*none.raucb$"),
    ("info-directory", ("info", "--keyring={keyring}", "{dir}"), "Invalid bundle format: Bundle is not a regular file"),
    ("info-garbage", ("info", "--keyring={keyring}", "{garbage}"), "re:^Invalid bundle format: "),
    ("info-empty", ("info", "--keyring={keyring}", "{empty}"), "re:^Invalid bundle format: "),
    ("info-short", ("info", "--keyring={keyring}", "{short}"), "re:^Invalid bundle format: "),
    ("info-sigsize-0", ("info", "--keyring={keyring}", "{sig0}"), "Invalid bundle format: Signature size is 0"),
    ("info-sigsize-huge", ("info", "--keyring={keyring}", "{sig_huge}"),
     "re:^Invalid bundle format: Signature size \\(1099511627776\\) exceeds bundle size$"),
    ("info-sigsize-over-max", ("info", "--keyring={keyring}", "{sig_over_max}"),
     "Invalid bundle format: Signature size (70000) exceeds max-bundle-signature-size (65536)"),
    ("info-cms-truncated", ("info", "--keyring={keyring}", "{sig_trunc}"),
     "re:^Invalid bundle format: "),
    ("info-cms-garbage", ("info", "--keyring={keyring}", "{cms_garbage}"),
     "Invalid bundle format: Signature data is no valid CMS"),
    ("info-cms-not-sequence", ("info", "--keyring={keyring}", "{cms_notseq}"),
     "Invalid bundle format: Signature data is no valid CMS"),
    ("info-econtent-not-sequence", ("info", "--keyring={keyring}", "{cms_econtent}"),
     "Invalid bundle format: Signature data is no valid CMS"),
    ("info-unknown-sig-alg", ("info", "--keyring={keyring}", "{cms_unkalg}"),
     "signature verification failed: unsupported signature algorithm 1.2.3.4.5.6.7"),
    ("info-verity-hash-not-hex", ("info", "--keyring={keyring}", "{bad_hash}"), "Invalid hash for verity bundle"),
    ("info-verity-salt-odd", ("info", "--keyring={keyring}", "{odd_salt}"), "Invalid salt for verity bundle"),
    ("info-verity-size-negative", ("info", "--keyring={keyring}", "{bad_size}"), "Unaligned size for verity bundle"),
    ("info-verity-size-too-big", ("info", "--keyring={keyring}", "{huge_size}"),
     "Invalid bundle format: verity size does not fit the payload"),
    ("info-untrusted", ("info", "--keyring={other_keyring}", "{verity}"),
     "signature verification failed: Verify error: unable to get local issuer certificate"),
    ("info-expired", ("info", "--keyring={keyring}", "{expired_bundle}"),
     "signature verification failed: Verify error: certificate has expired"),
    ("info-no-keyring", ("info", "{verity}"), "No keyring file or directory provided"),
    ("info-keyring-missing", ("info", "--keyring={dir}/none.pem", "{verity}"),
     "re:^failed to load CA file '.*none.pem' and/or directory '\\(null\\)'$"),
    ("info-keyring-garbage", ("info", "--keyring={garbage_keyring}", "{verity}"), "re:."),
    ("info-format", ("info", "--output-format=xml", "--keyring={keyring}", "{verity}"), "Unknown output format: 'xml'"),
    ("info-formats-conf", ("-c", "{conf_formats}", "info", "{plain}"), "Bundle format 'plain' not allowed"),
    ("info-enc-no-key", ("info", "--keyring={keyring}", "{enc}"),
     "Encrypted bundle detected, but no decryption key given. Use --key=<PEMFILE|PKCS11-URL> to provide one."),
    ("info-enc-outsider", ("info", "--keyring={keyring}", "--key={outsider_key}", "{enc}"),
     "re:^Failed to decrypt bundle: Failed to decrypt CMS EnvelopedData: "),
    ("info-enc-key-missing", ("info", "--keyring={keyring}", "--key={dir}/none.pem", "{enc}"),
     "re:^Failed to decrypt bundle: failed to load key file"),
    ("info-enc-key-garbage", ("info", "--keyring={keyring}", "--key={garbage_keyring}", "{enc}"),
     "re:^Failed to decrypt bundle: failed to parse key file"),
    ("info-enc-pkcs11-no-module", ("info", "--keyring={keyring}", "--key=pkcs11:token=x;object=y;pin-value=" + PIN,
                                   "{enc}"), "re:^Failed to decrypt bundle: "),
    ("info-file-uri-host", ("info", "file://host/x.raucb"),
     "file URI with hostname detected. Did you forget to add a leading / ?"),
    ("info-file-uri-relative", ("info", "file://relative"), "Conversion error: The URI “file://relative” is invalid"),
    # extract / extract-signature -----------------------------------------------------------------
    ("extract-exists", ("extract", "--keyring={keyring}", "{verity}", "{dir}"),
     "re:^Failed to extract bundle: output directory .* exists already$"),
    ("extract-parent-missing", ("extract", "--keyring={keyring}", "{verity}", "{out}/no/x"),
     "re:^Failed to extract bundle: unsquashfs failed: "),
    ("extract-in-proc", ("extract", "--keyring={keyring}", "{verity}", "/proc/pyrauc-x"),
     "re:^Failed to extract bundle: unsquashfs failed: "),
    ("extract-corrupted", ("extract", "--keyring={keyring}", "{corrupted}", "{out}/x"),
     "Failed to extract bundle: bundle payload is corrupted"),
    ("extract-enc-no-key", ("extract", "--keyring={keyring}", "{enc}", "{out}/x"),
     "Encrypted bundle detected, but no decryption key given. Use --key=<PEMFILE|PKCS11-URL> to provide one."),
    ("extract-enc-outsider", ("extract", "--keyring={keyring}", "--key={outsider_key}", "{enc}", "{out}/x"),
     "re:^Failed to decrypt bundle: "),
    ("extract-untrusted", ("extract", "--keyring={other_keyring}", "{crypt}", "{out}/x"),
     "re:^signature verification failed: "),
    ("extract-signature-exists", ("extract-signature", "--keyring={keyring}", "{verity}", "{verity}"),
     "re:^Failed to extract signature: failed to create file to store signature: Error opening file .*: File exists$"),
    ("extract-signature-dir-missing", ("extract-signature", "--keyring={keyring}", "{verity}", "{out}/no/s.cms"),
     "re:^Failed to extract signature: failed to create file to store signature: Error opening file"),
    ("extract-signature-enc-outsider", ("extract-signature", "--keyring={keyring}", "--key={outsider_key}", "{enc}",
                                        "{out}/s.cms"), "re:^Failed to decrypt bundle: "),
    # resign / replace-signature -----------------------------------------------------------------------
    ("resign-no-cert", ("resign", "--keyring={keyring}", "{verity}", "{out}/r.raucb"),
     "Cert and key files must be provided"),
    ("resign-expired-input", ("resign", "--cert={cert}", "--key={key}", "--keyring={keyring}", "{expired_bundle}",
                              "{out}/r.raucb"), "signature verification failed: Verify error: certificate has expired"),
    ("resign-out-exists", ("resign", "--cert={cert}", "--key={key}", "--keyring={keyring}", "{verity}", "{crypt}"),
     "re:^Failed to resign bundle: bundle .* already exists$"),
    ("resign-out-missing-dir", ("resign", "--cert={cert}", "--key={key}", "--keyring={keyring}", "{verity}",
                                "{out}/no/r.raucb"), "re:^Failed to resign bundle: failed to open bundle for writing"),
    ("resign-enc-no-key", ("resign", "--cert={cert}", "--key={key}", "--keyring={keyring}", "{enc}", "{out}/r.raucb"),
     "re:^Encrypted bundle detected, but no decryption key given"),
    ("resign-key-mismatch", ("resign", "--cert={cert}", "--key={other_key}", "--keyring={keyring}", "{verity}",
                             "{out}/r.raucb"), "re:^Failed to resign bundle: "),
    ("resign-corrupted", ("resign", "--cert={cert}", "--key={key}", "--keyring={keyring}", "{corrupted}",
                          "{out}/r.raucb"), "Failed to resign bundle: bundle payload is corrupted"),
    ("replace-sig-missing", ("replace-signature", "--keyring={keyring}", "{verity}", "{dir}/none.cms",
                             "{out}/r.raucb"), "re:^Failed to replace signature: failed to read "),
    ("replace-sig-garbage", ("replace-signature", "--keyring={keyring}", "{verity}", "{garbage_sig}",
                             "{out}/r.raucb"), "re:^Failed to replace signature: "),
    ("replace-sig-other-bundle", ("replace-signature", "--keyring={keyring}", "{verity}", "{other_sig}",
                                  "{out}/r.raucb"), "re:^Failed to replace signature: failed to verify the new bundle"),
    ("replace-sig-unknown-alg", ("replace-signature", "--keyring={keyring}", "{verity}", "{nested_sig}",
                                 "{out}/r.raucb"), "re:^Failed to replace signature: failed to verify the new bundle: "
                                                   "signature verification failed: unsupported signature algorithm"),
    ("replace-sig-out-exists", ("replace-signature", "--keyring={keyring}", "{verity}", "{other_sig}", "{crypt}"),
     "re:^Failed to replace signature: bundle .* already exists$"),
    # encrypt --------------------------------------------------------------------------------------
    ("encrypt-no-to", ("encrypt", "--keyring={keyring}", "{crypt}", "{out}/e.raucb"),
     "One or multiple recipient certificates must be provided (via --to)"),
    ("encrypt-to-missing", ("encrypt", "--to={dir}/none.pem", "--keyring={keyring}", "{crypt}", "{out}/e.raucb"),
     "re:^Failed to create bundle: Failed to encrypt bundle: Failed to load cert file"),
    ("encrypt-to-key", ("encrypt", "--to={dev_rsa_key}", "--keyring={keyring}", "{crypt}", "{out}/e.raucb"),
     "re:^Failed to create bundle: Failed to encrypt bundle: Failed to parse cert file .*: Expecting: CERTIFICATE"),
    ("encrypt-to-empty", ("encrypt", "--to={empty_pem}", "--keyring={keyring}", "{crypt}", "{out}/e.raucb"),
     "re:Expecting: CERTIFICATE$"),
    ("encrypt-to-truncated", ("encrypt", "--to={trunc_pem}", "--keyring={keyring}", "{crypt}", "{out}/e.raucb"),
     "re:^Failed to create bundle: Failed to encrypt bundle: Failed to parse cert file .*: bad end line$"),
    ("encrypt-to-off-curve", ("encrypt", "--to={offcurve}", "--keyring={keyring}", "{crypt}", "{out}/e.raucb"),
     "re:^Failed to create bundle: Failed to encrypt bundle: Failed to parse cert file .*: invalid public key"),
    ("encrypt-to-rsa-n1", ("encrypt", "--to={rsa_n1}", "--keyring={keyring}", "{crypt}", "{out}/e.raucb"),
     "re:^Failed to create bundle: Failed to encrypt bundle: Failed to parse cert file .*: invalid public key"),
    ("encrypt-to-rsa-even", ("encrypt", "--to={rsa_even}", "--keyring={keyring}", "{crypt}", "{out}/e.raucb"),
     "re:^Failed to create bundle: Failed to encrypt bundle: Failed to parse cert file .*: invalid public key"),
    ("encrypt-to-dup-ext", ("encrypt", "--to={dupext}", "--keyring={keyring}", "{crypt}", "{out}/e.raucb"),
     "re:^Failed to create bundle: Failed to encrypt bundle: Failed to parse cert file .*: duplicate extension"),
    ("encrypt-not-crypt", ("encrypt", "--to={dev_rsa_cert}", "--keyring={keyring}", "{verity}", "{out}/e.raucb"),
     "Failed to create bundle: Refused to encrypt input bundle that is not in 'crypt' format."),
    ("encrypt-untrusted", ("encrypt", "--to={dev_rsa_cert}", "--keyring={other_keyring}", "{crypt}", "{out}/e.raucb"),
     "re:^signature verification failed: "),
    ("encrypt-no-keyring", ("encrypt", "--to={dev_rsa_cert}", "{crypt}", "{out}/e.raucb"),
     "No keyring file or directory provided"),
    ("encrypt-out-exists", ("encrypt", "--to={dev_rsa_cert}", "--keyring={keyring}", "{crypt}", "{verity}"),
     "re:^Failed to create bundle: bundle .* already exists$"),
    ("encrypt-out-in-proc", ("encrypt", "--to={dev_rsa_cert}", "--keyring={keyring}", "{crypt}", "/proc/e.raucb"),
     "re:^Failed to create bundle: failed to open bundle for writing"),
    ("encrypt-corrupted", ("encrypt", "--to={dev_rsa_cert}", "--keyring={keyring}", "{corrupted}", "{out}/e.raucb"),
     "bundle payload is corrupted"),
    # status / mark / system.conf ------------------------------------------------------------------
    ("status-no-conf", ("-c", "{dir}/none.conf", "status"),
     "re:^Failed to initialize context: Failed to load system config .*No such file or directory$"),
    ("status-conf-syntax", ("-c", "{conf_syntax}", "status"), "re:^Failed to initialize context: "),
    ("status-conf-key", ("-c", "{conf_key}", "status"),
     CONF_ERROR + "Invalid key 'frobnicate' in group '\\[system\\]'$"),
    ("status-conf-compatible", ("-c", "{conf_nocompat}", "status"),
     CONF_ERROR + "Key file does not have key “compatible” in group “system”$"),
    ("status-own-parent", ("-c", "{conf_self}", "status"),
     CONF_ERROR + "Slot 'a\\.0' cannot be its own parent$"),
    ("status-parent-loop", ("-c", "{conf_loop}", "status"),
     CONF_ERROR + "Parent loop in slot configuration: a\\.0 -> b\\.0 -> a\\.0$"),
    ("mark-parent-loop", ("-c", "{conf_loop}", "status", "mark-good"),
     CONF_ERROR + "Parent loop in slot configuration: a\\.0 -> b\\.0 -> a\\.0$"),
    ("status-dup-bootname", ("-c", "{conf_dupboot}", "status"),
     CONF_ERROR + "Bootname 'A' is set on more than one slot \\(a\\.0, a\\.1\\)$"),
    ("status-max-sig", ("-c", "{conf_maxsig}", "status"),
     CONF_ERROR + "Invalid value \\(1099511627776\\) for max-bundle-signature-size"),
    ("status-data-dir-file", ("-c", "{conf_datafile}", "status", "--override-boot-slot=A"),
     "re:^Failed to determine slot states: Failed to create data directory .*: Not a directory$"),
    ("status-mkfs-quotes", ("-c", "{conf_mkfs}", "status"),
     CONF_ERROR + "Failed to parse extra-mkfs-opts: Text ended before matching quote"),
    ("status-unknown-sub", ("-c", "{conf_ok}", "status", "mark-perfect"), "unknown subcommand mark-perfect"),
    ("status-too-many", ("-c", "{conf_ok}", "status", "mark-good", "a", "b"), "Too many arguments"),
    ("mark-unknown-slot", ("-c", "{conf_ok}", "status", "mark-good", "nope.0", "--override-boot-slot=A"),
     "re:^rauc mark: "),
    ("status-format", ("-c", "{conf_ok}", "status", "--output-format=yaml"), "Unknown output format: 'yaml'"),
    # install --------------------------------------------------------------------------------------
    ("install-missing", ("-c", "{conf_ok}", "install", "{dir}/none.raucb"), "re:^No such file: .*none.raucb$"),
    ("install-no-conf", ("-c", "{dir}/none.conf", "install", "{verity}"),
     "re:^Failed to initialize context: Failed to load system config"),
    ("install-loop-conf", ("-c", "{conf_loop}", "install", "{verity}"),
     CONF_ERROR + "Parent loop in slot configuration: a\\.0 -> b\\.0 -> a\\.0$"),
]


def _new_files(root: Path, before: set[str]) -> list[Path]:
    return [p for p in root.rglob("*") if str(p) not in before]


def _snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_cleanly(argv: tuple[str, ...], expected: str, world: World, tmp_path: Path) -> None:
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmpdir.mkdir()
    values = {**world.paths, "dir": str(world.dir), "out": str(out)}
    args = [a.format(**values) for a in argv]
    before = _snapshot(world.dir)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAUC_")}, "TMPDIR": str(tmpdir),
           "RAUC_PKCS11_PIN": PIN, "RAUC_PKCS11_MODULE": "/nonexistent/libpkcs11.so"}
    proc = subprocess.run([sys.executable, "-m", "pyrauc", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    if expected.startswith("re:"):
        assert re.search(expected[3:], lines[0]), lines[0]
    else:
        assert lines[0] == expected
    leftovers = [*out.iterdir(), *tmpdir.iterdir(), *_new_files(world.dir, before)]
    assert not leftovers, leftovers
    assert not list(world.dir.glob("*/.rauc-workdir*"))
    for secret in world.secrets:
        assert secret not in proc.stdout and secret not in proc.stderr, "a secret was printed"
