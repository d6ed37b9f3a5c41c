"""Unit tests of pyrauc.signature: CMS structure, verification and the keyring policy options."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509.oid import NameOID

from pyrauc import certformat
from pyrauc import signature as sig
from pyrauc.errors import SignatureError
from pyrauc.signature import Keyring
from tests.helpers.pki import NOW, Issued, Pki, issue, write_pem_bundle
from tests.helpers.pki_extra import PolicyCerts, issue_policy_certs, make_crl, write_keyring


def _fail_text(reason: str) -> str:
    return f"signature verification failed: Verify error: {reason}"


def sign(issued: Issued, content: bytes = b"manifest", intermediates: list[x509.Certificate] | None = None,
         **kw: Any) -> bytes:
    inter = intermediates if intermediates is not None else issued.chain[1:-1]
    return sig.cms_sign(content, cert=issued.cert, key=issued.key, intermediates=inter, **kw)


def verify_error(der: bytes, keyring: Keyring, **kw: Any) -> str:
    with pytest.raises(SignatureError) as exc:
        sig.cms_verify(der, keyring, **kw)
    return str(exc.value)


# ----------------------------------------------------------------------------- structure


def test_attached_structure_matches_openssl_cms_sign(pki: Pki) -> None:
    der = sign(pki.signer, b"hello")
    ci = cms.ContentInfo.load(der)
    assert ci["content_type"].native == "signed_data"
    sd = ci["content"]
    assert sd["version"].native == "v1"
    assert [a.dump().hex() for a in sd["digest_algorithms"]] == ["300b0609608648016503040201"]
    assert sd["encap_content_info"]["content_type"].native == "data"
    assert sd["encap_content_info"]["content"].native == b"hello"
    certs = [c.chosen.dump() for c in sd["certificates"]]
    expected = {pki.signer.cert.public_bytes(serialization.Encoding.DER),
                pki.intermediate.cert.public_bytes(serialization.Encoding.DER)}
    assert set(certs) == expected and len(certs) == 2
    assert certs == sorted(certs)          # DER SET OF order, as OpenSSL writes it
    assert sd["crls"].native is None
    (si,) = sd["signer_infos"]
    assert si["version"].native == "v1"
    assert si["sid"].name == "issuer_and_serial_number"
    assert si["sid"].chosen["serial_number"].native == pki.signer.cert.serial_number
    assert si["digest_algorithm"].dump().hex() == "300b0609608648016503040201"
    assert [a["type"].native for a in si["signed_attrs"]] == ["content_type", "signing_time", "message_digest"]
    attrs = {a["type"].native: a["values"][0] for a in si["signed_attrs"]}
    assert attrs["content_type"].native == "data"
    assert attrs["signing_time"].name == "utc_time"
    assert attrs["message_digest"].native == hashlib.sha256(b"hello").digest()
    assert si["signature_algorithm"].dump().hex() == "300d06092a864886f70d0101010500"  # rsaEncryption, NULL
    assert si["unsigned_attrs"].native is None
    # the signature is PKCS#1 v1.5 sha256 over the DER SET of the signed attributes
    signed = b"\x31" + si["signed_attrs"].dump()[1:]
    pki.signer.cert.public_key().verify(si["signature"].native, signed,  # type: ignore[call-arg]
                                        padding.PKCS1v15(), hashes.SHA256())  # type: ignore[arg-type]


def test_ec_signer_uses_ecdsa_with_sha256(pki: Pki) -> None:
    der = sign(pki.signer_ec)
    si = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    assert si["signature_algorithm"].dump().hex() == "300a06082a8648ce3d040302"
    pub = pki.signer_ec.cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(si["signature"].native, b"\x31" + si["signed_attrs"].dump()[1:], ec.ECDSA(hashes.SHA256()))
    assert sig.cms_verify(der, Keyring(path=pki.keyring)).signer == pki.signer_ec.cert


def test_detached_streams_only_prefix(pki: Pki, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(b"A" * 5_000_000 + b"TRAILER")
    der = sig.cms_sign(None, cert=pki.signer.cert, key=pki.signer.key,
                       intermediates=[pki.intermediate.cert], detached_path=payload, detached_size=5_000_000)
    sd = cms.ContentInfo.load(der)["content"]
    assert sd["encap_content_info"]["content"].native is None
    assert sig.cms_content(der) is None
    digest = {a["type"].native: a["values"][0].native for a in sd["signer_infos"][0]["signed_attrs"]}
    assert digest["message_digest"] == hashlib.sha256(b"A" * 5_000_000).digest()
    v = sig.cms_verify(der, Keyring(path=pki.keyring), detached_path=payload, detached_size=5_000_000)
    assert v.content is None and v.signer == pki.signer.cert
    # changing a byte in the signed range breaks it, after the range does not
    with payload.open("r+b") as f:
        f.seek(5_000_003)
        f.write(b"X")
    sig.cms_verify(der, Keyring(path=pki.keyring), detached_path=payload, detached_size=5_000_000)
    with payload.open("r+b") as f:
        f.seek(4_999_999)
        f.write(b"X")
    err = verify_error(der, Keyring(path=pki.keyring), detached_path=payload, detached_size=5_000_000)
    assert err == "signature verification failed: error:1700009E:CMS routines::verification failure"


def test_detached_file_too_short(pki: Pki, tmp_path: Path) -> None:
    payload = tmp_path / "short"
    payload.write_bytes(b"abc")
    with pytest.raises(SignatureError, match="file too short"):
        sig.cms_sign(None, cert=pki.signer.cert, key=pki.signer.key, detached_path=payload, detached_size=10)


def test_signing_time_is_recorded(pki: Pki) -> None:
    when = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    v = sig.cms_verify(sign(pki.signer, signing_time=when), Keyring(path=pki.keyring))
    assert v.signing_time == when
    far = dt.datetime(2051, 1, 1, tzinfo=dt.UTC)   # GeneralizedTime after 2049 like OpenSSL
    si = cms.ContentInfo.load(sign(pki.signer, signing_time=far))["content"]["signer_infos"][0]
    st = next(a for a in si["signed_attrs"] if a["type"].native == "signing_time")
    assert st["values"][0].name == "generalized_time"


def test_key_cert_mismatch(pki: Pki) -> None:
    with pytest.raises(SignatureError) as exc:
        sig.cms_sign(b"x", cert=pki.signer.cert, key=pki.signer_direct.key)
    assert str(exc.value) == "failed to create signature: private key does not match certificate"


class DuckKey:
    """A key object like pyrauc.pkcs11's: only public_key() and sign()."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def public_key(self) -> Any:
        return self.real.public_key()

    def sign(self, data: bytes, *args: Any) -> bytes:
        self.calls += 1
        return bytes(self.real.sign(data, *args))


@pytest.mark.parametrize("attr", ["signer", "signer_ec"])
def test_duck_typed_keys(pki: Pki, attr: str) -> None:
    issued = getattr(pki, attr)
    key = DuckKey(issued.key)
    der = sig.cms_sign(b"data", cert=issued.cert, key=key, intermediates=[pki.intermediate.cert])
    assert key.calls == 1
    assert sig.cms_verify(der, Keyring(path=pki.keyring)).content == b"data"


def test_sign_errors_from_key_are_wrapped(pki: Pki) -> None:
    class Broken(DuckKey):
        def sign(self, data: bytes, *args: Any) -> bytes:
            raise RuntimeError("token removed")

    with pytest.raises(SignatureError, match=r"^failed to create signature: token removed$"):
        sig.cms_sign(b"x", cert=pki.signer.cert, key=Broken(pki.signer.key))


def test_inspection_helpers(pki: Pki) -> None:
    der = sign(pki.signer, b"content!")
    assert sig.cms_type(der) == "signedData"
    assert sig.cms_content(der) == b"content!"
    certs = sig.cms_certificates(der)
    assert set(certs) == {pki.signer.cert, pki.intermediate.cert}
    env = cms.ContentInfo({"content_type": "enveloped_data", "content": cms.EnvelopedData({
        "version": "v0", "recipient_infos": [],
        "encrypted_content_info": {"content_type": "data",
                                   "content_encryption_algorithm": {"algorithm": "aes256_cbc",
                                                                    "parameters": b"\0" * 16}}})}).dump()
    assert sig.cms_type(env) == "envelopedData"
    with pytest.raises(SignatureError) as exc:
        sig.cms_verify(env, Keyring(path=pki.keyring))
    assert str(exc.value) == "Expected CMS of type 'pkcs7-signedData' but got 'pkcs7-envelopedData'"
    with pytest.raises(SignatureError, match=r"^Failed to parse CMS"):
        sig.cms_type(b"\x30\x03garbage")


# ----------------------------------------------------------------------------- verification basics


def test_verify_attached_and_chain(pki: Pki) -> None:
    v = sig.cms_verify(sign(pki.signer, b"abc"), Keyring(path=pki.keyring))
    assert v.content == b"abc"
    assert v.signer == pki.signer.cert
    assert v.chain == [pki.signer.cert, pki.intermediate.cert, pki.root.cert]


def test_verify_wrong_keyring(pki: Pki) -> None:
    assert verify_error(sign(pki.signer), Keyring(path=pki.other_keyring)) == \
        _fail_text("unable to get local issuer certificate")


def test_missing_intermediate(pki: Pki) -> None:
    der = sign(pki.signer, intermediates=[])
    assert verify_error(der, Keyring(path=pki.keyring)) == _fail_text("unable to get local issuer certificate")
    # the intermediate in the keyring is found there instead
    kr = write_pem_bundle(pki.dir / "root+inter.pem", [pki.root.cert, pki.intermediate.cert])
    assert sig.cms_verify(der, Keyring(path=kr)).chain[-1] == pki.root.cert


def test_tampered_content_and_signature(pki: Pki) -> None:
    der = bytearray(sign(pki.signer, b"original-content"))
    pos = der.find(b"original-content")
    der[pos] ^= 0x20
    assert verify_error(bytes(der), Keyring(path=pki.keyring)) == \
        "signature verification failed: error:1700009E:CMS routines::verification failure"
    der2 = bytearray(sign(pki.signer, b"original-content"))
    der2[-5] ^= 1   # inside the RSA signature (last field)
    assert verify_error(bytes(der2), Keyring(path=pki.keyring)) == \
        "signature verification failed: error:0200008A:rsa routines::invalid padding"
    der3 = bytearray(sign(pki.signer_ec, b"original-content"))
    # flip a byte of the messageDigest attribute value -> signature over attrs fails
    digest = hashlib.sha256(b"original-content").digest()
    pos = der3.find(digest)
    der3[pos] ^= 1
    assert verify_error(bytes(der3), Keyring(path=pki.keyring)) == \
        "signature verification failed: error:1700009E:CMS routines::verification failure"


def test_content_presence_rules(pki: Pki, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    assert "content and data present" in verify_error(sign(pki.signer), Keyring(path=pki.keyring),
                                                       detached_path=f, detached_size=1)
    det = sig.cms_sign(None, cert=pki.signer.cert, key=pki.signer.key, detached_path=f, detached_size=1)
    assert "no content" in verify_error(det, Keyring(path=pki.keyring))


def test_keyring_errors(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match=r"^No keyring file or directory provided$"):
        sig.cms_verify(sign(pki.signer), Keyring())
    with pytest.raises(SignatureError) as exc:
        sig.cms_verify(sign(pki.signer), Keyring(path=tmp_path / "nope.pem"))
    assert str(exc.value) == f"failed to load CA file '{tmp_path / 'nope.pem'}' and/or directory '(null)'"


def test_keyring_directory(pki: Pki, tmp_path: Path) -> None:
    """OpenSSL's hashed directory: only files named <hash>.<n> are looked up."""
    d = tmp_path / "certs"
    d.mkdir()
    write_pem_bundle(d / "a.pem", [pki.other_root.cert])
    write_pem_bundle(d / "0badc0de.0", [pki.root.cert])
    (d / "0badc0df.0").write_text("not a cert\n")
    (d / "junk.txt").write_text("not a cert\n")
    assert sig.cms_verify(sign(pki.signer), Keyring(directory=d)).chain[-1] == pki.root.cert
    (d / "0badc0de.0").rename(d / "root.pem")           # not a name OpenSSL looks up
    assert verify_error(sign(pki.signer), Keyring(directory=d)) == \
        "signature verification failed: Verify error: unable to get local issuer certificate"


def test_keyring_file_without_certificates(pki: Pki, tmp_path: Path) -> None:
    """A keyring file with no certificate (a key, say) cannot be loaded, as in OpenSSL."""
    with pytest.raises(SignatureError) as exc:
        sig.cms_verify(sign(pki.signer), Keyring(path=pki.root.key_path))
    assert str(exc.value) == f"failed to load CA file '{pki.root.key_path}' and/or directory '(null)'"
    with pytest.raises(SignatureError, match=r"^failed to load CA file '.*' and/or directory"):
        sig.cms_verify(sign(pki.signer), Keyring().with_path(tmp_path))     # --keyring takes a file


def test_signer_count(pki: Pki) -> None:
    der = sign(pki.signer)
    two = sig.cms_add_signer(der, cert=pki.signer_direct.cert, key=pki.signer_direct.key)
    sd = cms.ContentInfo.load(two)["content"]
    assert len(sd["signer_infos"]) == 2
    assert len(sd["certificates"]) == 3
    assert verify_error(two, Keyring(path=pki.keyring)) == "Unsupported number of signers: 2"
    assert verify_error(two, Keyring(path=pki.keyring, use_bundle_signing_time=True)) == \
        "multiple signerInfos are not supported with 'use-bundle-signing-time'"
    assert sig.cms_content(two) == b"manifest"


def test_add_signer_detached_reuses_digest(pki: Pki, tmp_path: Path) -> None:
    f = tmp_path / "payload"
    f.write_bytes(b"payload" * 1000)
    der = sig.cms_sign(None, cert=pki.signer.cert, key=pki.signer.key, detached_path=f, detached_size=7000)
    two = sig.cms_add_signer(der, cert=pki.signer_ec.cert, key=pki.signer_ec.key,
                             intermediates=[pki.intermediate.cert])
    sis = cms.ContentInfo.load(two)["content"]["signer_infos"]
    digests = {next(a for a in si["signed_attrs"] if a["type"].native == "message_digest")["values"][0].native
               for si in sis}
    assert digests == {hashlib.sha256(b"payload" * 1000).digest()}


def test_signer_without_signed_attrs(pki: Pki) -> None:
    """A SignerInfo without signedAttrs signs the content directly (accepted like OpenSSL)."""
    der = sign(pki.signer, b"raw content")
    ci = cms.ContentInfo.load(der)
    si = ci["content"]["signer_infos"][0]
    new_si = cms.SignerInfo({
        "version": "v1", "sid": si["sid"].copy(), "digest_algorithm": si["digest_algorithm"].copy(),
        "signature_algorithm": si["signature_algorithm"].copy(),
        "signature": pki.signer.key.sign(b"raw content", padding.PKCS1v15(),  # type: ignore[call-arg]
                                         hashes.SHA256()),  # type: ignore[arg-type]
    })
    ci["content"]["signer_infos"] = [new_si]
    rebuilt = cms.ContentInfo({"content_type": "signed_data", "content": ci["content"]}).dump(force=True)
    assert sig.cms_verify(rebuilt, Keyring(path=pki.keyring)).content == b"raw content"


# ----------------------------------------------------------------------------- policy options


@pytest.fixture(scope="module")
def extra(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> PolicyCerts:
    return issue_policy_certs(tmp_path_factory.mktemp("extra"), pki.root)


@pytest.mark.parametrize(("name", "purpose", "expected"), [
    ("email", None, None),
    ("no_ku", None, None),
    ("server", None, "unsuitable certificate purpose"),
    ("anyeku", None, "unsuitable certificate purpose"),
    ("ku_enc_only", None, "unsuitable certificate purpose"),
    ("leaf_under_server_ca", None, "unsuitable certificate purpose"),
    ("server", "any", None),
    ("ku_enc_only", "any", None),
    ("server", "sslserver", None),
    ("email", "sslserver", "unsuitable certificate purpose"),
    ("codesign_noku", "codesign", None),
    ("codesign_noku", "codesign-rauc", None),
    ("email", "codesign", "unsuitable certificate purpose"),
    ("no_ku", "codesign", "unsuitable certificate purpose"),
    ("codesign_ku_enc", "codesign", "unsuitable certificate purpose"),
    ("codesign_under_server_ca", "codesign", "unsuitable certificate purpose"),
    ("codesign_noku", None, "unsuitable certificate purpose"),
])
def test_check_purpose(pki: Pki, extra: PolicyCerts, name: str, purpose: str | None, expected: str | None) -> None:
    issued: Issued = getattr(extra, name)
    der = sign(issued)
    kr = Keyring(path=pki.keyring, check_purpose=purpose)
    if expected is None:
        assert sig.cms_verify(der, kr).signer == issued.cert
    else:
        assert verify_error(der, kr) == _fail_text(expected)


def test_pki_codesign_signer(pki: Pki) -> None:
    der = sign(pki.codesign)
    assert sig.cms_verify(der, Keyring(path=pki.keyring, check_purpose="codesign")).signer == pki.codesign.cert
    assert verify_error(der, Keyring(path=pki.keyring)) == _fail_text("unsuitable certificate purpose")


def test_codesign_messages_logged(pki: Pki, extra: PolicyCerts, caplog: pytest.LogCaptureFixture) -> None:
    kr = Keyring(path=pki.keyring, check_purpose="codesign")
    verify_error(sign(extra.email), kr)
    assert "Signer certificate does not specify extended key usage code signing" in caplog.text
    caplog.clear()
    verify_error(sign(extra.codesign_ku_enc), kr)
    assert "Signer certificate key usage does not allow 'digitalSignature'" in caplog.text
    caplog.clear()
    verify_error(sign(extra.codesign_under_server_ca), kr)
    assert "CA certificate extended key usage does not allow code signing" in caplog.text
    caplog.clear()
    sig.cms_verify(sign(extra.codesign_noku), kr)
    assert "should specify 'Key Usage'" in caplog.text


def test_invalid_purpose(pki: Pki) -> None:
    with pytest.raises(SignatureError) as exc:
        sig.cms_verify(sign(pki.signer), Keyring(path=pki.keyring, check_purpose="bogus"))
    assert str(exc.value) == "failed to configure X509 purpose 'bogus'"


def test_expired_and_not_yet_valid(pki: Pki, extra: PolicyCerts) -> None:
    kr = Keyring(path=pki.keyring)
    assert verify_error(sign(pki.expired), kr) == _fail_text("certificate has expired")
    assert verify_error(sign(extra.future), kr) == _fail_text("certificate is not yet valid")
    nocheck = Keyring(path=pki.keyring, no_check_time=True)
    assert sig.cms_verify(sign(pki.expired), nocheck).signer == pki.expired.cert
    assert sig.cms_verify(sign(extra.future), nocheck).signer == extra.future.cert
    # explicit verification time
    assert sig.cms_verify(sign(pki.expired), kr, at=NOW - dt.timedelta(days=30)).signer == pki.expired.cert


def test_use_bundle_signing_time(pki: Pki) -> None:
    kr = Keyring(path=pki.keyring, use_bundle_signing_time=True)
    past = NOW - dt.timedelta(days=30)
    der = sign(pki.expired, signing_time=past)
    v = sig.cms_verify(der, kr)
    assert v.signing_time == past
    assert verify_error(sign(pki.expired), kr) == _fail_text("certificate has expired")
    assert verify_error(der, Keyring(path=pki.keyring)) == _fail_text("certificate has expired")


def test_use_bundle_signing_time_missing_attribute(pki: Pki) -> None:
    der = sign(pki.signer, b"raw")
    ci = cms.ContentInfo.load(der)
    si = ci["content"]["signer_infos"][0]
    attrs = [a.copy() for a in si["signed_attrs"] if a["type"].native != "signing_time"]
    new_attrs = cms.CMSAttributes(attrs)
    signature = pki.signer.key.sign(b"\x31" + new_attrs.dump()[1:], padding.PKCS1v15(),  # type: ignore[call-arg]
                                    hashes.SHA256())  # type: ignore[arg-type]
    new_si = cms.SignerInfo({
        "version": "v1", "sid": si["sid"].copy(), "digest_algorithm": si["digest_algorithm"].copy(),
        "signed_attrs": new_attrs, "signature_algorithm": si["signature_algorithm"].copy(),
        "signature": signature})
    ci["content"]["signer_infos"] = [new_si]
    rebuilt = cms.ContentInfo({"content_type": "signed_data", "content": ci["content"]}).dump(force=True)
    assert sig.cms_verify(rebuilt, Keyring(path=pki.keyring)).signing_time is None
    with pytest.raises(SignatureError) as exc:
        sig.cms_verify(rebuilt, Keyring(path=pki.keyring, use_bundle_signing_time=True))
    assert str(exc.value) == "Bundle signing time attribute not found in signature"


def test_allowed_signer_cns(pki: Pki) -> None:
    der = sign(pki.signer)
    assert sig.cms_verify(der, Keyring(path=pki.keyring, allowed_signer_cns=("x", "signer"))).signer
    with pytest.raises(SignatureError) as exc:
        sig.cms_verify(der, Keyring(path=pki.keyring, allowed_signer_cns=("signer-ec",)))
    assert str(exc.value) == "No signature CN matching allowed-signer-cns found"


def test_partial_chain(pki: Pki) -> None:
    inter_only = write_pem_bundle(pki.dir / "inter-only.pem", [pki.intermediate.cert])
    der = sign(pki.signer)
    assert verify_error(der, Keyring(path=inter_only)) == _fail_text("unable to get issuer certificate")
    v = sig.cms_verify(der, Keyring(path=inter_only, allow_partial_chain=True))
    assert v.chain == [pki.signer.cert, pki.intermediate.cert]
    # the signer itself as the trust anchor
    leaf_only = write_pem_bundle(pki.dir / "leaf-only.pem", [pki.signer.cert])
    assert sig.cms_verify(der, Keyring(path=leaf_only, allow_partial_chain=True)).chain == [pki.signer.cert]
    assert verify_error(der, Keyring(path=leaf_only)) == _fail_text("unable to get local issuer certificate")
    # with the root present the full chain is used even with partial chains allowed (trusted first)
    full = sig.cms_verify(der, Keyring(path=pki.keyring, allow_partial_chain=True)).chain
    assert full[-1] == pki.root.cert


def test_self_signed(pki: Pki, extra: PolicyCerts) -> None:
    der = sign(extra.selfsigned, intermediates=[])
    assert verify_error(der, Keyring(path=pki.keyring)) == _fail_text("self-signed certificate")
    kr = write_pem_bundle(extra.dir / "ss.pem", [extra.selfsigned.cert])
    assert sig.cms_verify(der, Keyring(path=kr)).chain == [extra.selfsigned.cert]
    # a foreign root shipped in the CMS does not make it trusted
    der2 = sign(pki.other_signer, intermediates=[pki.other_root.cert])
    assert verify_error(der2, Keyring(path=pki.keyring)) == _fail_text("self-signed certificate in certificate chain")


def test_path_length_and_invalid_ca(extra: PolicyCerts, pki: Pki) -> None:
    kr = write_pem_bundle(extra.dir / "pl0.pem", [extra.pathlen0_root.cert])
    der = sign(extra.pl_leaf, intermediates=[extra.pl_inter.cert])
    assert verify_error(der, Keyring(path=kr)) == _fail_text("path length constraint exceeded")
    der2 = sign(extra.leaf_under_non_ca, intermediates=[extra.non_ca_inter.cert])
    assert verify_error(der2, Keyring(path=pki.keyring)) == _fail_text("invalid CA certificate")


def test_forged_certificate_signature(pki: Pki, tmp_path: Path) -> None:
    """A certificate claiming the intermediate as issuer but signed by another key."""
    fake_ca = issue(tmp_path, "intermediate-ca", issuer=pki.root, ca=True)  # same name, other key
    victim = issue(tmp_path, "victim", issuer=fake_ca)
    # keep the AKI consistent with the real intermediate so that chain building picks it
    builder = (x509.CertificateBuilder().subject_name(victim.cert.subject).issuer_name(pki.intermediate.cert.subject)
               .public_key(victim.key.public_key()).serial_number(42)
               .not_valid_before(victim.cert.not_valid_before_utc).not_valid_after(victim.cert.not_valid_after_utc))
    forged = builder.sign(fake_ca.key, hashes.SHA256())
    der = sig.cms_sign(b"x", cert=forged, key=victim.key, intermediates=[pki.intermediate.cert])
    assert verify_error(der, Keyring(path=pki.keyring)) == _fail_text("certificate signature failure")


def test_crl_checks(pki: Pki, tmp_path: Path) -> None:
    der = sign(pki.signer)
    root_crl, inter_crl = make_crl(pki.root), make_crl(pki.intermediate)
    both = write_keyring(tmp_path / "both.pem", [pki.root.cert], [root_crl, inter_crl])
    assert sig.cms_verify(der, Keyring(path=both, check_crl=True)).signer == pki.signer.cert
    only_root = write_keyring(tmp_path / "root.pem", [pki.root.cert], [root_crl])
    assert verify_error(der, Keyring(path=only_root, check_crl=True)) == _fail_text("unable to get certificate CRL")
    only_inter = write_keyring(tmp_path / "inter.pem", [pki.root.cert], [inter_crl])
    assert verify_error(der, Keyring(path=only_inter, check_crl=True)) == _fail_text("unable to get certificate CRL")
    assert sig.cms_verify(der, Keyring(path=only_root)).signer == pki.signer.cert   # CRLs ignored when off
    revoked = write_keyring(tmp_path / "rev.pem", [pki.root.cert],
                            [root_crl, make_crl(pki.intermediate, [pki.signer.cert])])
    assert verify_error(der, Keyring(path=revoked, check_crl=True)) == _fail_text("certificate revoked")
    assert sig.cms_verify(der, Keyring(path=revoked)).signer == pki.signer.cert
    rev_inter = write_keyring(tmp_path / "revi.pem", [pki.root.cert],
                              [make_crl(pki.root, [pki.intermediate.cert]), inter_crl])
    assert verify_error(der, Keyring(path=rev_inter, check_crl=True)) == _fail_text("certificate revoked")
    old = write_keyring(tmp_path / "old.pem", [pki.root.cert], [
        root_crl, make_crl(pki.intermediate, last_update=NOW - dt.timedelta(days=20),
                           next_update=NOW - dt.timedelta(days=10))])
    assert verify_error(der, Keyring(path=old, check_crl=True)) == _fail_text("CRL has expired")
    assert sig.cms_verify(der, Keyring(path=old, check_crl=True, no_check_time=True)).signer
    forged_crl = make_crl(pki.other_root)
    forged = write_keyring(tmp_path / "forged.pem", [pki.root.cert], [root_crl, _rename_crl(forged_crl, pki)])
    assert verify_error(der, Keyring(path=forged, check_crl=True)) == _fail_text("CRL signature failure")


def _rename_crl(crl: x509.CertificateRevocationList, pki: Pki) -> x509.CertificateRevocationList:
    """A CRL naming the intermediate as issuer but signed by the unrelated CA."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(pki.intermediate.cert.subject)
               .last_update(crl.last_update_utc).next_update(crl.next_update_utc))  # type: ignore[arg-type]
    return builder.sign(pki.other_root.key, hashes.SHA256())


def test_crl_warning_when_disabled(pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kr = write_keyring(tmp_path / "k.pem", [pki.root.cert], [make_crl(pki.root)])
    sig.cms_verify(sign(pki.signer), Keyring(path=kr))
    assert "Detected CRL but CRL checking is disabled!" in caplog.text


# ----------------------------------------------------------------------------- formatting


def test_format_name_oneline() -> None:
    def name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
        return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])

    assert certformat.format_name(name((NameOID.ORGANIZATION_NAME, "Test Org"), (NameOID.COMMON_NAME, "signer"))) == \
        "O = Test Org, CN = signer"
    assert certformat.format_name(name((NameOID.COUNTRY_NAME, "DE"), (NameOID.STATE_OR_PROVINCE_NAME, "NRW"),
                                (NameOID.LOCALITY_NAME, "Köln"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "a,b"),
                                (NameOID.EMAIL_ADDRESS, "x@y.z"))) == \
        'C = DE, ST = NRW, L = K\\C3\\B6ln, OU = "a,b", emailAddress = x@y.z'
    assert certformat.format_name(name((NameOID.COMMON_NAME, ' lead'), (NameOID.COMMON_NAME, 'q"b\\s'))) == \
        'CN = " lead", CN = q\\"b\\\\s'
    multi = x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.COMMON_NAME, "a"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "b")])])
    assert certformat.format_name(multi) in ("CN = a + O = b", "O = b + CN = a")


def test_format_cert_chain(pki: Pki) -> None:
    text = certformat.format_cert_chain([pki.signer.cert, pki.intermediate.cert])
    lines = text.splitlines()
    assert lines[0] == " 0 Subject: O = Test Org, CN = signer"
    assert lines[1] == "   Issuer: O = Test Org, CN = intermediate-ca"
    spki = pki.signer.cert.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    assert lines[2] == "   SPKI sha256: " + hashlib.sha256(spki).digest().hex(":").upper()
    assert lines[3] == "   Not Before: " + certformat.format_time(pki.signer.cert.not_valid_before_utc)
    assert lines[4].startswith("   Not After:  ")
    assert lines[5] == " 1 Subject: O = Test Org, CN = intermediate-ca"
    assert len(lines) == 10 and text.endswith("\n")
    assert certformat.format_time(dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) == "Jan  1 00:00:00 1970 GMT"
    assert certformat.format_time(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)) == "Dec 31 23:59:59 9999 GMT"


def test_dump_cert_shape(pki: Pki) -> None:
    text = certformat.dump_cert(pki.signer.cert)
    lines = text.splitlines()
    assert lines[:3] == ["Certificate:", "    Data:", "        Version: 3 (0x2)"]
    assert "        Issuer: O=Test Org, CN=intermediate-ca" in lines
    assert "        Subject: O=Test Org, CN=signer" in lines
    assert "            Public Key Algorithm: rsaEncryption" in lines
    assert "                Public-Key: (2048 bit)" in lines
    assert "            X509v3 Basic Constraints: critical" in lines
    assert "    Signature Algorithm: sha256WithRSAEncryption" in lines
    ec_text = certformat.dump_cert(pki.signer_ec.cert)
    assert "                ASN1 OID: prime256v1" in ec_text.splitlines()


def test_expiry_warnings(pki: Pki) -> None:
    chain = [pki.signer.cert, pki.intermediate.cert, pki.root.cert]
    assert sig.expiry_warnings(chain) == []
    late = pki.signer.cert.not_valid_after_utc - dt.timedelta(days=10)
    assert sig.expiry_warnings(chain[:1], late) == [
        "Certificate 0 (O = Test Org, CN = signer) will expire in less than a month!"]
