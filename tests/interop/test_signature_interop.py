"""Interop of pyrauc.signature/keys with the openssl CLI (OpenSSL 3.0) and Debian's rauc 1.8.

* SignedData made by ``openssl cms -sign`` verifies with :func:`cms_verify` and vice versa;
* with the same signingTime our RSA output is byte-identical to OpenSSL's CMS_sign;
* for a table of policy scenarios our verdict and reason equal ``openssl cms -verify``'s;
* the "Certificate Chain:" block and ``--dump-cert`` text equal rauc 1.8's ``rauc info``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyrauc import certformat, keys
from pyrauc import signature as sig
from pyrauc.errors import SignatureError
from pyrauc.signature import Keyring
from tests.helpers.pki import NOW, Issued, Pki, write_pem_bundle
from tests.helpers.pki_extra import PolicyCerts, issue_custom, issue_policy_certs, key_usage, make_crl, write_keyring

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def openssl(openssl_bin: str) -> str:
    return openssl_bin


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(a) for a in args], capture_output=True, check=check)


def openssl_sign(openssl: str, issued: Issued, content: Path, out: Path, *, attached: bool = True,
                 certfile: Path | None = None) -> bytes:
    args: list[str | Path] = [openssl, "cms", "-sign", "-binary", "-nosmimecap", "-md", "sha256",
                              "-in", content, "-signer", issued.cert_path, "-inkey", issued.key_path,
                              "-outform", "DER", "-out", out]
    if attached:
        args.append("-nodetach")
    if certfile is not None:
        args += ["-certfile", certfile]
    run(*args)
    return out.read_bytes()


def openssl_verify(openssl: str, der: bytes, tmp: Path, keyring: Path, *extra: str,
                   content: Path | None = None) -> tuple[bool, str, bytes]:
    """Run ``openssl cms -verify``; return (ok, Verify error reason or other error, output)."""
    inp = tmp / "in.cms"
    inp.write_bytes(der)
    out = tmp / "out.bin"
    args: list[str | Path] = [openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", inp,
                              "-CAfile", keyring, "-out", out, *extra]
    if content is not None:
        args += ["-content", content]
    proc = run(*args, check=False)
    err = proc.stderr.decode()
    m = re.search(r"Verify error: ?(.*)", err)
    reason = m.group(1).strip() if m else (err.strip().splitlines() or [""])[-1]
    return proc.returncode == 0, reason, out.read_bytes() if out.exists() else b""


# ----------------------------------------------------------------------------- signing interop


@pytest.mark.parametrize("attr", ["signer", "signer_ec"])
def test_openssl_attached_verifies_with_cms_verify(openssl: str, pki: Pki, tmp_path: Path, attr: str) -> None:
    issued: Issued = getattr(pki, attr)
    content = tmp_path / "manifest.raucm"
    content.write_bytes(b"[update]\ncompatible=x\n" * 10)
    der = openssl_sign(openssl, issued, content, tmp_path / "s.cms", certfile=pki.intermediate.cert_path)
    v = sig.cms_verify(der, Keyring(path=pki.keyring))
    assert v.content == content.read_bytes()
    assert v.chain == [issued.cert, pki.intermediate.cert, pki.root.cert]
    assert v.signing_time is not None
    assert sig.cms_content(der) == content.read_bytes()
    assert verify_reason(der, Keyring(path=pki.other_keyring)) == "unable to get local issuer certificate"


def test_openssl_detached_verifies_with_cms_verify(openssl: str, pki: Pki, tmp_path: Path) -> None:
    content = tmp_path / "payload"
    content.write_bytes(bytes(range(256)) * 4096)
    der = openssl_sign(openssl, pki.signer, content, tmp_path / "d.cms", attached=False,
                       certfile=pki.intermediate.cert_path)
    v = sig.cms_verify(der, Keyring(path=pki.keyring), detached_path=content,
                       detached_size=content.stat().st_size)
    assert v.content is None
    with content.open("ab") as f:   # bundle layout: the CMS follows the signed part
        f.write(der)
    sig.cms_verify(der, Keyring(path=pki.keyring), detached_path=content, detached_size=256 * 4096)
    with pytest.raises(SignatureError, match="verification failure"):
        sig.cms_verify(der, Keyring(path=pki.keyring), detached_path=content, detached_size=256 * 4096 - 1)


@pytest.mark.parametrize("attr", ["signer", "signer_ec"])
def test_cms_sign_verifies_with_openssl(openssl: str, pki: Pki, tmp_path: Path, attr: str) -> None:
    issued: Issued = getattr(pki, attr)
    data = b"signed manifest\n" * 100
    der = sig.cms_sign(data, cert=issued.cert, key=issued.key, intermediates=[pki.intermediate.cert])
    ok, reason, out = openssl_verify(openssl, der, tmp_path, pki.keyring)
    assert ok, reason
    assert out == data
    ok, reason, _ = openssl_verify(openssl, der, tmp_path, pki.other_keyring)
    assert not ok and reason == "unable to get local issuer certificate"

    payload = tmp_path / "payload"
    payload.write_bytes(b"squashfs" * 100_000 + b"TRAILING CMS")
    size = 800_000
    det = sig.cms_sign(None, cert=issued.cert, key=issued.key, intermediates=[pki.intermediate.cert],
                       detached_path=payload, detached_size=size)
    signed_part = tmp_path / "signed_part"
    signed_part.write_bytes(payload.read_bytes()[:size])
    ok, reason, out = openssl_verify(openssl, det, tmp_path, pki.keyring, content=signed_part)
    assert ok, reason
    assert out == signed_part.read_bytes()
    ok, _, _ = openssl_verify(openssl, det, tmp_path, pki.keyring, content=payload)
    assert not ok


def test_cmsout_print_structure(openssl: str, pki: Pki, tmp_path: Path) -> None:
    der = sig.cms_sign(b"abc", cert=pki.signer.cert, key=pki.signer.key, intermediates=[pki.intermediate.cert])
    (tmp_path / "x.cms").write_bytes(der)
    text = run(openssl, "cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "x.cms").stdout.decode()
    assert "contentType: pkcs7-signedData" in text
    assert re.search(r"^\s+version: 1$", text, re.M)
    assert "eContentType: pkcs7-data" in text
    assert text.count("object: contentType") == 1
    assert text.count("object: signingTime") == 1
    assert text.count("object: messageDigest") == 1
    assert "SMIMECapabilities" not in text and "smimeCapabilities" not in text.lower().replace(" ", "")
    assert "algorithm: rsaEncryption" in text
    assert "crls:\n      <ABSENT>" in text
    order = [text.index(f"object: {n}") for n in ("contentType", "signingTime", "messageDigest")]
    assert order == sorted(order)


def _signing_time(der: bytes) -> dt.datetime:
    si = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    attr = next(a for a in si["signed_attrs"] if a["type"].native == "signing_time")
    value = attr["values"][0].native
    assert isinstance(value, dt.datetime)
    return value


def _strip_signatures(der: bytes) -> bytes:
    ci = cms.ContentInfo.load(der)
    for si in ci["content"]["signer_infos"]:
        si["signature"] = b""
    return bytes(ci.dump(force=True))


@pytest.mark.parametrize("attached", [True, False])
def test_rsa_output_byte_identical_to_openssl(openssl: str, pki: Pki, tmp_path: Path, attached: bool) -> None:
    content = tmp_path / "content"
    content.write_bytes(b"identical?\n" * 50)
    ref = openssl_sign(openssl, pki.signer, content, tmp_path / "ref.cms", attached=attached,
                       certfile=pki.intermediate.cert_path)
    when = _signing_time(ref)
    if attached:
        mine = sig.cms_sign(content.read_bytes(), cert=pki.signer.cert, key=pki.signer.key,
                            intermediates=[pki.intermediate.cert], signing_time=when)
    else:
        mine = sig.cms_sign(None, cert=pki.signer.cert, key=pki.signer.key, intermediates=[pki.intermediate.cert],
                            detached_path=content, detached_size=content.stat().st_size, signing_time=when)
    assert mine == ref


def test_ec_output_equal_to_openssl_but_signature(openssl: str, pki: Pki, tmp_path: Path) -> None:
    content = tmp_path / "content"
    content.write_bytes(b"ec\n")
    ref = openssl_sign(openssl, pki.signer_ec, content, tmp_path / "ref.cms", certfile=pki.intermediate.cert_path)
    mine = sig.cms_sign(content.read_bytes(), cert=pki.signer_ec.cert, key=pki.signer_ec.key,
                        intermediates=[pki.intermediate.cert], signing_time=_signing_time(ref))
    assert _strip_signatures(mine) == _strip_signatures(ref)


def test_larger_signer_cert_sorted_like_openssl(openssl: str, pki: Pki, tmp_path: Path) -> None:
    big = issue_custom(tmp_path, "big-signer-with-a-rather-long-common-name", issuer=pki.intermediate,
                       key_kind="rsa4096", key_usage=key_usage("digital_signature"))
    content = tmp_path / "c"
    content.write_bytes(b"x")
    ref = openssl_sign(openssl, big, content, tmp_path / "ref.cms", certfile=pki.intermediate.cert_path)
    mine = sig.cms_sign(b"x", cert=big.cert, key=big.key, intermediates=[pki.intermediate.cert],
                        signing_time=_signing_time(ref))
    assert mine == ref


def test_add_signer_verifies_with_openssl(openssl: str, pki: Pki, tmp_path: Path) -> None:
    der = sig.cms_sign(b"resign me", cert=pki.signer.cert, key=pki.signer.key,
                       intermediates=[pki.intermediate.cert])
    two = sig.cms_add_signer(der, cert=pki.signer_direct.cert, key=pki.signer_direct.key)
    ok, reason, out = openssl_verify(openssl, two, tmp_path, pki.keyring)
    assert ok, reason
    assert out == b"resign me"
    three = sig.cms_add_signer(two, cert=pki.other_signer.cert, key=pki.other_signer.key)
    ok, reason, _ = openssl_verify(openssl, three, tmp_path, pki.keyring)
    assert not ok and reason == "unable to get local issuer certificate"


# ----------------------------------------------------------------------------- policy scenarios


def verify_reason(der: bytes, keyring: Keyring, **kw: Any) -> str | None:
    try:
        sig.cms_verify(der, keyring, **kw)
    except SignatureError as exc:
        text = str(exc)
        prefix = "signature verification failed: Verify error: "
        return text[len(prefix):] if text.startswith(prefix) else text
    return None


@dataclass
class Scenario:
    signer: Callable[[Pki, PolicyCerts], Issued]
    intermediates: Callable[[Pki, PolicyCerts], list[x509.Certificate]]
    keyring: Callable[[Pki, PolicyCerts, Path], Path]
    options: dict[str, Any] = field(default_factory=dict)
    openssl_args: tuple[str, ...] = ()


def _kr(*certs: Callable[[Pki, PolicyCerts], x509.Certificate],
        crls: Callable[[Pki, PolicyCerts], list[x509.CertificateRevocationList]] | None = None,
        ) -> Callable[[Pki, PolicyCerts, Path], Path]:
    def make(pki: Pki, extra: PolicyCerts, d: Path) -> Path:
        return write_keyring(d / "keyring.pem", [c(pki, extra) for c in certs], crls(pki, extra) if crls else [])
    return make


def _root(p: Pki, e: PolicyCerts) -> x509.Certificate:
    return p.root.cert


def _inter(p: Pki, e: PolicyCerts) -> x509.Certificate:
    return p.intermediate.cert


def _no_inter(p: Pki, e: PolicyCerts) -> list[x509.Certificate]:
    return []


def _with_inter(p: Pki, e: PolicyCerts) -> list[x509.Certificate]:
    return [p.intermediate.cert]


def _x(name: str) -> Callable[[Pki, PolicyCerts], Issued]:
    return lambda p, e: getattr(e, name)


def _p(name: str) -> Callable[[Pki, PolicyCerts], Issued]:
    return lambda p, e: getattr(p, name)


SCENARIOS: dict[str, Scenario] = {
    "ok": Scenario(_p("signer"), _with_inter, _kr(_root)),
    "ok-ec": Scenario(_p("signer_ec"), _with_inter, _kr(_root)),
    "wrong-keyring": Scenario(_p("other_signer"), _no_inter, _kr(_root)),
    "missing-intermediate": Scenario(_p("signer"), _no_inter, _kr(_root)),
    "foreign-root-in-cms": Scenario(_p("other_signer"), lambda p, e: [p.other_root.cert], _kr(_root)),
    "expired": Scenario(_p("expired"), _no_inter, _kr(_root)),
    "expired-no-check-time": Scenario(_p("expired"), _no_inter, _kr(_root), {"no_check_time": True},
                                      ("-no_check_time",)),
    "future": Scenario(_x("future"), _no_inter, _kr(_root)),
    "codesign-eku-default": Scenario(_p("codesign"), _no_inter, _kr(_root)),
    "codesign-eku-any": Scenario(_p("codesign"), _no_inter, _kr(_root), {"check_purpose": "any"},
                                 ("-purpose", "any")),
    "email-eku": Scenario(_x("email"), _no_inter, _kr(_root)),
    "any-eku": Scenario(_x("anyeku"), _no_inter, _kr(_root)),
    "ku-enc-only": Scenario(_x("ku_enc_only"), _no_inter, _kr(_root)),
    "ku-nonrep-only": Scenario(_x("ku_nonrep"), _no_inter, _kr(_root)),
    "server-eku-sslserver": Scenario(_x("server"), _no_inter, _kr(_root), {"check_purpose": "sslserver"},
                                     ("-purpose", "sslserver")),
    "email-eku-sslclient": Scenario(_x("email"), _no_inter, _kr(_root), {"check_purpose": "sslclient"},
                                    ("-purpose", "sslclient")),
    "ca-with-server-eku": Scenario(_x("leaf_under_server_ca"), lambda p, e: [e.server_ca.cert], _kr(_root)),
    "trusted-ca-with-server-eku": Scenario(_x("leaf_under_server_ca"), _no_inter,
                                           _kr(_root, lambda p, e: e.server_ca.cert)),
    "partial-no-flag": Scenario(_p("signer"), _with_inter, _kr(_inter)),
    "partial-flag": Scenario(_p("signer"), _with_inter, _kr(_inter), {"allow_partial_chain": True},
                             ("-partial_chain",)),
    "partial-leaf-anchor": Scenario(_p("signer"), _with_inter, _kr(lambda p, e: p.signer.cert),
                                    {"allow_partial_chain": True}, ("-partial_chain",)),
    "self-signed": Scenario(_x("selfsigned"), _no_inter, _kr(_root)),
    "self-signed-trusted": Scenario(_x("selfsigned"), _no_inter, _kr(lambda p, e: e.selfsigned.cert)),
    "pathlen": Scenario(_x("pl_leaf"), lambda p, e: [e.pl_inter.cert], _kr(lambda p, e: e.pathlen0_root.cert)),
    "non-ca-intermediate": Scenario(_x("leaf_under_non_ca"), lambda p, e: [e.non_ca_inter.cert], _kr(_root)),
    "ca-ku-without-certsign": Scenario(_x("leaf_under_ku_ca"), lambda p, e: [e.ku_ca.cert], _kr(_root)),
    "crl-ok": Scenario(_p("signer"), _with_inter,
                       _kr(_root, crls=lambda p, e: [make_crl(p.root), make_crl(p.intermediate)]),
                       {"check_crl": True}, ("-crl_check_all",)),
    "crl-missing-intermediate-crl": Scenario(_p("signer"), _with_inter,
                                             _kr(_root, crls=lambda p, e: [make_crl(p.root)]),
                                             {"check_crl": True}, ("-crl_check_all",)),
    "crl-missing-root-crl": Scenario(_p("signer"), _with_inter,
                                     _kr(_root, crls=lambda p, e: [make_crl(p.intermediate)]),
                                     {"check_crl": True}, ("-crl_check_all",)),
    "crl-revoked-leaf": Scenario(_p("signer"), _with_inter, _kr(_root, crls=lambda p, e: [
        make_crl(p.root), make_crl(p.intermediate, [p.signer.cert])]), {"check_crl": True}, ("-crl_check_all",)),
    "crl-revoked-intermediate": Scenario(_p("signer"), _with_inter, _kr(_root, crls=lambda p, e: [
        make_crl(p.root, [p.intermediate.cert]), make_crl(p.intermediate)]), {"check_crl": True},
        ("-crl_check_all",)),
    "crl-expired": Scenario(_p("signer_direct"), _no_inter, _kr(_root, crls=lambda p, e: [
        make_crl(p.root, last_update=NOW - dt.timedelta(days=9), next_update=NOW - dt.timedelta(days=2))]),
        {"check_crl": True}, ("-crl_check_all",)),
    "crl-not-yet-valid": Scenario(_p("signer_direct"), _no_inter, _kr(_root, crls=lambda p, e: [
        make_crl(p.root, last_update=NOW + dt.timedelta(days=2), next_update=NOW + dt.timedelta(days=9))]),
        {"check_crl": True}, ("-crl_check_all",)),
    "crl-revoked-but-disabled": Scenario(_p("signer_direct"), _no_inter, _kr(_root, crls=lambda p, e: [
        make_crl(p.root, [p.signer_direct.cert])])),
}


@pytest.fixture(scope="module")
def extra_certs(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> PolicyCerts:
    return issue_policy_certs(tmp_path_factory.mktemp("interop-extra"), pki.root)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_policy_verdict_matches_openssl(openssl: str, pki: Pki, extra_certs: PolicyCerts,
                                        tmp_path: Path, name: str) -> None:
    sc = SCENARIOS[name]
    signer = sc.signer(pki, extra_certs)
    der = sig.cms_sign(b"scenario " + name.encode(), cert=signer.cert, key=signer.key,
                       intermediates=sc.intermediates(pki, extra_certs))
    keyring = sc.keyring(pki, extra_certs, tmp_path)
    ok, openssl_reason, _ = openssl_verify(openssl, der, tmp_path, keyring, *sc.openssl_args)
    mine = verify_reason(der, Keyring(path=keyring, **sc.options))
    assert (mine is None) == ok, (mine, openssl_reason)
    if not ok:
        assert mine == openssl_reason


def test_openssl_signed_with_expired_cert_and_signing_time(openssl: str, pki: Pki, tmp_path: Path) -> None:
    """use_bundle_signing_time: a CMS signed when the (now expired) cert was valid, checked at that time."""
    past = NOW - dt.timedelta(days=100)
    der = sig.cms_sign(b"old", cert=pki.expired.cert, key=pki.expired.key, signing_time=past)
    ok, reason, _ = openssl_verify(openssl, der, tmp_path, pki.keyring)
    assert not ok and reason == "certificate has expired"
    ok, reason, _ = openssl_verify(openssl, der, tmp_path, pki.keyring, "-attime", str(int(past.timestamp())))
    assert ok, reason
    assert sig.cms_verify(der, Keyring(path=pki.keyring, use_bundle_signing_time=True)).signing_time == past


# ----------------------------------------------------------------------------- key formats from openssl


def test_keys_from_openssl_formats(openssl: str, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = tmp_path / "enc.pem"
    run(openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-aes256",
        "-pass", "pass:hunter2", "-out", enc)
    monkeypatch.setenv("RAUC_KEY_PASSPHRASE", "hunter2")
    assert keys.load_private_key(str(enc)).key_size == 2048
    trad = tmp_path / "trad.pem"
    run(openssl, "rsa", "-in", enc, "-passin", "pass:hunter2", "-traditional", "-aes128", "-passout",
        "pass:hunter2", "-out", trad)
    assert b"Proc-Type" in trad.read_bytes()
    assert keys.load_private_key(str(trad)).key_size == 2048
    monkeypatch.delenv("RAUC_KEY_PASSPHRASE")
    ecparam = tmp_path / "ec.pem"
    run(openssl, "ecparam", "-name", "prime256v1", "-genkey", "-out", ecparam)
    assert b"EC PARAMETERS" in ecparam.read_bytes()
    assert keys.load_private_key(str(ecparam)).curve.name == "secp256r1"
    certs = keys.load_certs(str(write_pem_bundle(tmp_path / "b.pem", [pki.root.cert, pki.other_root.cert])))
    assert certs == [pki.root.cert, pki.other_root.cert]


# ----------------------------------------------------------------------------- rauc 1.8 texts


def _rauc_bundle(rauc_bin: str, pki: Pki, tmp_path: Path, issued: Issued) -> Path:
    content = tmp_path / "content"
    content.mkdir()
    (content / "rootfs.img").write_bytes(b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(4000)))
    (content / "manifest.raucm").write_text(
        "[update]\ncompatible=Test Config\nversion=1\n\n[bundle]\nformat=verity\n\n"
        "[image.rootfs]\nfilename=rootfs.img\n")
    bundle = tmp_path / "b.raucb"
    args: list[str | Path] = [rauc_bin, "bundle", "--cert", issued.cert_path, "--key", issued.key_path]
    if issued.issuer is not None and issued.issuer.issuer is not None:
        args += ["--intermediate", issued.issuer.cert_path]
    run(*args, content, bundle)
    return bundle


def _trailing_cms(bundle: Path) -> bytes:
    data = bundle.read_bytes()
    (size,) = struct.unpack(">Q", data[-8:])
    return data[-8 - size:-8]


@pytest.mark.parametrize("attr", ["signer", "signer_ec"])
def test_chain_block_and_dump_cert_equal_rauc(rauc_bin: str, pki: Pki, tmp_path: Path, attr: str) -> None:
    issued: Issued = getattr(pki, attr)
    bundle = _rauc_bundle(rauc_bin, pki, tmp_path, issued)
    der = _trailing_cms(bundle)
    v = sig.cms_verify(der, Keyring(path=pki.keyring))
    info = run(rauc_bin, "info", "--keyring", pki.keyring, bundle).stdout.decode()
    block = info.split("Certificate Chain:\n", 1)[1]
    assert block.rstrip("\n") + "\n" == certformat.format_cert_chain(v.chain)   # rauc adds one blank line
    dump = run(rauc_bin, "info", "--keyring", pki.keyring, "--dump-cert", bundle).stdout.decode()
    start = dump.index("Certificate:\n")
    assert dump[start:start + len(certformat.dump_cert(v.signer))] == certformat.dump_cert(v.signer)


def test_rauc_accepts_pyrauc_signature_via_openssl_print(openssl: str, pki: Pki, tmp_path: Path) -> None:
    """format_name equals openssl's oneline output for awkward names."""
    from cryptography.x509.oid import NameOID

    from tests.helpers.pki import new_key

    key = new_key("p256")
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme, Inc. + Sons"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, " Büro; <dev> "),
        x509.NameAttribute(NameOID.COMMON_NAME, 'say "hi" \\ #1'),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.c"),
    ])
    from cryptography.hazmat.primitives import hashes
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = tmp_path / "c.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out = run(openssl, "x509", "-in", path, "-noout", "-subject", "-nameopt", "oneline").stdout.decode()
    assert out == "subject=" + certformat.format_name(cert.subject) + "\n"


def test_dump_cert_equals_openssl_text(openssl: str, pki: Pki, extra_certs: PolicyCerts,
                                       tmp_path: Path) -> None:
    """dump_cert() == ``openssl x509 -noout -text -nameopt compat`` (X509_print) for varied certs."""
    from tests.helpers.pki import issue

    small = issue(tmp_path, "small-serial", issuer=pki.root, serial=4660)
    p384 = issue(tmp_path, "p384", issuer=pki.root, key_kind="p384")
    subjects = [pki.root, pki.intermediate, pki.signer, pki.signer_ec, pki.codesign, small, p384,
                extra_certs.email, extra_certs.pathlen0_root, extra_certs.selfsigned, extra_certs.ku_nonrep]
    for issued in subjects:
        ref = run(openssl, "x509", "-in", issued.cert_path, "-noout", "-text", "-nameopt", "compat").stdout.decode()
        assert certformat.dump_cert(issued.cert) == ref, issued.cert_path.name


# ----------------------------------------------------------------------------- PKCS#11 (SoftHSM2)


@pytest.mark.pkcs11
@pytest.mark.parametrize("attr", ["signer", "signer_ec"])
def test_cms_sign_with_pkcs11_key(openssl: str, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  attr: str) -> None:
    """cms_sign with a SoftHSM2 token key via keys.load_private_key/load_cert("pkcs11:...")."""
    from tests.helpers import softhsm

    issued: Issued = getattr(pki, attr)
    token = softhsm.make_token_or_skip(tmp_path / "hsm")
    token.import_key(issued.key, "signer", b"\x01", issued.cert)
    for name, value in token.env.items():
        monkeypatch.setenv(name, value)
    from pyrauc import pkcs11

    try:
        key = keys.load_private_key(token.uri("signer", type_="private"))
        cert = keys.load_cert(token.uri("signer", type_="cert"))
        assert cert == issued.cert
        der = sig.cms_sign(b"signed on a token", cert=cert, key=key, intermediates=[pki.intermediate.cert])
        tmp_content = tmp_path / "payload"
        tmp_content.write_bytes(b"p" * 100_000)
        det = sig.cms_sign(None, cert=cert, key=key, detached_path=tmp_content, detached_size=100_000,
                           intermediates=[pki.intermediate.cert])
    finally:
        pkcs11.unload_modules()
    assert sig.cms_verify(der, Keyring(path=pki.keyring)).content == b"signed on a token"
    ok, reason, out = openssl_verify(openssl, der, tmp_path, pki.keyring)
    assert ok, reason
    assert out == b"signed on a token"
    ok, reason, _ = openssl_verify(openssl, det, tmp_path, pki.keyring, content=tmp_content)
    assert ok, reason
