"""Unit tests of pyrauc.envelope: structure of the EnvelopedData, round trips, errors, dump text."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from asn1crypto import cms as acms
from asn1crypto import core as acore
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pyrauc import certformat, envelope
from pyrauc.errors import EnvelopeError
from tests.helpers.pki import Issued, issue


def _der_content(size: int = 300) -> bytes:
    """Content like RAUC's (a DER element), so RSA trial decryption can recognise it."""
    return acore.OctetString(bytes(range(256)) * (size // 256 + 1)).dump()


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    d = tmp_path_factory.mktemp("recipients")
    return {kind: issue(d, f"dev-{kind}", key_kind=kind)
            for kind in ("rsa2048", "rsa4096", "p256", "p384", "p521")} | {
        "p256b": issue(d, "dev-p256b", key_kind="p256"),
        "rsab": issue(d, "dev-rsab", key_kind="rsa2048"),
    }


def _parse(der: bytes) -> acms.EnvelopedData:
    info = acms.ContentInfo.load(der)
    assert info["content_type"].dotted == "1.2.840.113549.1.7.3"
    return info["content"]


def _cert(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *, serial: int, cn: str = "x",
          ski: bool = True, issuer_cn: str = "Test CA",
          signer: ec.EllipticCurvePrivateKey | None = None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Org"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Org"),
                        x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650)))
    if ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    return builder.sign(signer or ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())


# --- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa2048", "rsa4096", "p256", "p384", "p521"])
def test_roundtrip_single(people: dict[str, Issued], kind: str) -> None:
    content = _der_content(1000)
    der = envelope.encrypt(content, [people[kind].cert])
    assert envelope.decrypt(der, people[kind].key) == content
    assert envelope.decrypt(der, people[kind].key, people[kind].cert) == content


@pytest.mark.parametrize("use_ski", [False, True])
def test_roundtrip_mixed_every_recipient(people: dict[str, Issued], use_ski: bool) -> None:
    content = _der_content(5000)
    der = envelope.encrypt(content, [p.cert for p in people.values()], use_ski=use_ski)
    for person in people.values():
        assert envelope.decrypt(der, person.key) == content
        assert envelope.decrypt(der, person.key, person.cert) == content


def test_non_der_content_still_decrypts_with_rsa(people: dict[str, Issued]) -> None:
    der = envelope.encrypt(b"hello\n", [people["rsab"].cert, people["rsa2048"].cert])
    assert envelope.decrypt(der, people["rsa2048"].key) == b"hello\n"
    assert envelope.decrypt(der, people["rsab"].key) == b"hello\n"


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096])
def test_padding_sizes(people: dict[str, Issued], size: int) -> None:
    content = bytes(range(256)) * (size // 256) + bytes(size % 256)
    der = envelope.encrypt(content, [people["p256"].cert])
    enc = _parse(der)["encrypted_content_info"]["encrypted_content"].native
    assert len(enc) == (size // 16 + 1) * 16      # PKCS#7 padding always adds 1..16 bytes
    assert envelope.decrypt(der, people["p256"].key) == content


# --- structure (what OpenSSL's CMS_encrypt writes) ---------------------------------------------

def test_structure_ec_and_rsa(people: dict[str, Issued]) -> None:
    der = envelope.encrypt(_der_content(), [people["p384"].cert, people["rsa2048"].cert])
    env = _parse(der)
    assert env["version"].native == "v2"
    assert env["originator_info"].native is None
    assert env["unprotected_attrs"].native is None
    eci = env["encrypted_content_info"]
    assert eci["content_type"].dotted == "1.2.840.113549.1.7.1"
    alg = eci["content_encryption_algorithm"]
    assert alg["algorithm"].dotted == "2.16.840.1.101.3.4.1.42"
    assert len(alg["parameters"].native) == 16
    infos = list(env["recipient_infos"])
    assert [i.name for i in infos] == ["ktri", "kari"]     # DER SET OF order: 0x30 before 0xA1
    ktri = infos[0].chosen
    assert ktri["version"].native == "v0"
    assert ktri["rid"].name == "issuer_and_serial_number"
    assert ktri["rid"].chosen["serial_number"].native == people["rsa2048"].cert.serial_number
    assert ktri["key_encryption_algorithm"]["algorithm"].dotted == "1.2.840.113549.1.1.1"
    assert ktri["key_encryption_algorithm"]["parameters"].dump() == b"\x05\x00"
    assert len(ktri["encrypted_key"].native) == 256
    kari = infos[1].chosen
    assert kari["version"].native == "v3"
    orig = kari["originator"]
    assert orig.name == "originator_key"
    assert orig.chosen["algorithm"].dump() == bytes.fromhex("300906072a8648ce3d0201")   # no parameters
    point = orig.chosen["public_key"].native
    assert point[0] == 4 and len(point) == 97                                         # P-384 uncompressed
    assert kari["ukm"].native is None
    kea = kari["key_encryption_algorithm"]
    assert kea["algorithm"].dotted == "1.3.133.16.840.63.0.2"
    # id-aes256-wrap without parameters
    assert kea["parameters"].dump() == bytes.fromhex("300b060960864801650304012d")
    reks = kari["recipient_encrypted_keys"]
    assert len(reks) == 1
    assert reks[0]["rid"].name == "issuer_and_serial_number"
    assert reks[0]["rid"].chosen["serial_number"].native == people["p384"].cert.serial_number
    assert len(reks[0]["encrypted_key"].native) == 40


def test_rsa_only_is_version_0(people: dict[str, Issued]) -> None:
    assert _parse(envelope.encrypt(b"x", [people["rsa2048"].cert]))["version"].native == "v0"


def test_recipient_infos_sorted_and_one_kari_per_ec_cert(people: dict[str, Issued]) -> None:
    certs = [people[k].cert for k in ("p256", "rsab", "p256b", "rsa2048", "p521")]
    der = envelope.encrypt(b"x", certs, ec_layout=envelope.EcLayout.PER_RECIPIENT)
    raw = [i.dump() for i in _parse(der)["recipient_infos"]]
    assert raw == sorted(raw)
    assert len(raw) == 5
    karis = [i.chosen for i in _parse(der)["recipient_infos"] if i.name == "kari"]
    points = {k["originator"].chosen["public_key"].native for k in karis}
    assert len(points) == 3          # a fresh ephemeral key for every recipient


def test_issuer_and_serial_copied_verbatim(people: dict[str, Issued]) -> None:
    from asn1crypto import x509 as ax509
    cert = people["p256"].cert
    tbs = ax509.TbsCertificate.load(cert.tbs_certificate_bytes)
    der = envelope.encrypt(b"x", [cert])
    rid = _parse(der)["recipient_infos"][0].chosen["recipient_encrypted_keys"][0]["rid"].chosen
    assert rid["issuer"].dump() == tbs["issuer"].dump()
    assert rid["serial_number"].dump() == tbs["serial_number"].dump()


def test_use_ski_structure(people: dict[str, Issued]) -> None:
    rsa_p, ec_p = people["rsa2048"], people["p256"]
    der = envelope.encrypt(b"x", [rsa_p.cert, ec_p.cert], use_ski=True)
    env = _parse(der)
    assert env["version"].native == "v2"
    ktri, kari = (i.chosen for i in env["recipient_infos"])
    assert ktri["version"].native == "v2"
    assert ktri["rid"].name == "subject_key_identifier"
    ski = rsa_p.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ktri["rid"].chosen.native == ski
    rid = kari["recipient_encrypted_keys"][0]["rid"]
    assert rid.name == "r_key_id"
    ski_ec = ec_p.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert rid.chosen["subject_key_identifier"].native == ski_ec
    assert rid.chosen["date"].native is None and rid.chosen["other"].native is None


def test_use_ski_needs_the_extension() -> None:
    cert = _cert(ec.generate_private_key(ec.SECP256R1()), serial=7, cn="no-ski", ski=False)
    with pytest.raises(EnvelopeError, match=r"^Failed to encrypt: certificate 'O = Test Org, CN = no-ski' "
                                            r"has no subjectKeyIdentifier$"):
        envelope.encrypt(b"x", [cert], use_ski=True)
    assert envelope.encrypt(b"x", [cert])     # issuerAndSerialNumber does not need it


def test_unsupported_key_type_and_no_recipients() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate()
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, None))
    with pytest.raises(EnvelopeError, match="unsupported key type for recipient 'CN = ed'"):
        envelope.encrypt(b"x", [cert])
    with pytest.raises(EnvelopeError, match="no recipient certificates"):
        envelope.encrypt(b"x", [])


# --- decryption: recipient selection and errors ------------------------------------------------

def test_decrypt_with_other_cert_of_same_type_finds_no_recipient(people: dict[str, Issued]) -> None:
    der = envelope.encrypt(_der_content(), [people["p256"].cert, people["rsa2048"].cert])
    msg = r"^Failed to decrypt CMS EnvelopedData: no matching recipient found$"
    with pytest.raises(EnvelopeError, match=msg):
        envelope.decrypt(der, people["p256b"].key, people["p256b"].cert)
    with pytest.raises(EnvelopeError, match=msg):
        envelope.decrypt(der, people["rsab"].key, people["rsab"].cert)


def test_decrypt_without_recipient_of_key_type(people: dict[str, Issued]) -> None:
    der = envelope.encrypt(_der_content(), [people["rsa2048"].cert])
    with pytest.raises(EnvelopeError, match="no matching recipient found"):
        envelope.decrypt(der, people["p256"].key)


@pytest.mark.parametrize("kind", ["rsab", "p256b"])
def test_decrypt_with_wrong_key(people: dict[str, Issued], kind: str) -> None:
    der = envelope.encrypt(_der_content(), [people["p256"].cert, people["rsa2048"].cert,
                                            people["p384"].cert])
    with pytest.raises(EnvelopeError, match=r"^Failed to decrypt CMS EnvelopedData: decrypt error$"):
        envelope.decrypt(der, people[kind].key)


def test_decrypt_cert_and_key_mismatch(people: dict[str, Issued]) -> None:
    der = envelope.encrypt(_der_content(), [people["p256"].cert, people["p256b"].cert])
    with pytest.raises(EnvelopeError, match="decrypt error"):
        envelope.decrypt(der, people["p256b"].key, people["p256"].cert)


def test_decrypt_prefers_matching_key_identifier(people: dict[str, Issued],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    certs = [people[k].cert for k in ("p256", "p256b", "p384")]
    der = envelope.encrypt(_der_content(), certs, use_ski=True)
    tried: list[bytes | None] = []
    original = envelope._unwrap_ec

    def spy(key: object, curve: ec.EllipticCurve, cand: envelope._Candidate) -> bytes | None:
        tried.append(cand.keyid)
        return original(key, curve, cand)

    monkeypatch.setattr(envelope, "_unwrap_ec", spy)
    assert envelope.decrypt(der, people["p256b"].key) == _der_content()
    ski = people["p256b"].cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert tried == [ski]


def test_decrypt_with_cert_uses_only_its_recipient(people: dict[str, Issued],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    certs = [people[k].cert for k in ("rsa2048", "rsab", "rsa4096")]
    der = envelope.encrypt(_der_content(), certs)
    calls: list[object] = []
    original = envelope._unwrap_rsa

    def spy(key: object, cand: envelope._Candidate) -> bytes | None:
        calls.append(cand)
        return original(key, cand)

    monkeypatch.setattr(envelope, "_unwrap_rsa", spy)
    assert envelope.decrypt(der, people["rsa4096"].key, people["rsa4096"].cert) == _der_content()
    assert len(calls) == 1


def test_decrypt_errors_for_other_cms(pki: object) -> None:
    signed = acms.ContentInfo({"content_type": "signed_data", "content": acms.SignedData({
        "version": "v1", "digest_algorithms": [], "encap_content_info": {"content_type": "data"},
        "signer_infos": []})}).dump()
    with pytest.raises(EnvelopeError, match=r"^Expected CMS of type 'pkcs7-envelopedData' but got "
                                            r"'pkcs7-signedData'$"):
        envelope.decrypt(signed, ec.generate_private_key(ec.SECP256R1()))
    for junk in (b"", b"\x30\x03abc", b"not der at all", signed + b"trailing"):
        with pytest.raises(EnvelopeError, match=r"^Failed to parse CMS$"):
            envelope.decrypt(junk, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(EnvelopeError, match=r"^Expected CMS of type"):
        envelope.format_recipients(signed)


def test_tampered_ciphertext(people: dict[str, Issued]) -> None:
    der = bytearray(envelope.encrypt(_der_content(), [people["p256"].cert]))
    der[-1] ^= 0x55      # last ciphertext block -> padding check fails
    with pytest.raises(EnvelopeError, match="decrypt error"):
        envelope.decrypt(bytes(der), people["p256"].key)


# --- many recipients ---------------------------------------------------------------------------

def test_many_recipients_pool_and_progress() -> None:
    """Above the pool threshold: same key in every cert (cheap), distinct serials."""
    signer = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    count = envelope._POOL_THRESHOLD + 10
    certs = [_cert(key, serial=1000 + i, cn=f"d{i}", signer=signer) for i in range(count)]
    seen: list[tuple[int, int]] = []
    content = _der_content(2000)
    der = envelope.encrypt(content, certs, progress=lambda d, t: seen.append((d, t)), workers=2)
    assert seen[0] == (0, count) and seen[-1] == (count, count)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    infos = _parse(der)["recipient_infos"]
    assert len(infos) == count
    serials = {i.chosen["recipient_encrypted_keys"][0]["rid"].chosen["serial_number"].native for i in infos}
    assert serials == {1000 + i for i in range(count)}
    last = infos[-1].chosen["recipient_encrypted_keys"][0]["rid"].chosen["serial_number"].native
    assert envelope.decrypt(der, key, certs[last - 1000]) == content
    assert envelope.decrypt(der, key) == content


def test_workers_1_gives_same_structure(people: dict[str, Issued]) -> None:
    der = envelope.encrypt(b"x", [people["p256"].cert], workers=1)
    assert envelope.decrypt(der, people["p256"].key) == b"x"


# --- EC layouts --------------------------------------------------------------------------------

def _originators(der: bytes) -> list[bytes]:
    return [ri.chosen["originator"].dump() for ri in _parse(der)["recipient_infos"] if ri.name == "kari"]


@pytest.mark.parametrize("use_ski", [False, True], ids=["issuer-serial", "ski"])
def test_shared_key_layout(use_ski: bool, people: dict[str, Issued]) -> None:
    """One kari per EC recipient; those of one curve share one originator key; every recipient
    decrypts, with and without its certificate."""
    kinds = ("rsa2048", "p256", "p256b", "p384", "p521")
    der = envelope.encrypt(_der_content(), [people[k].cert for k in kinds], use_ski=use_ski,
                           ec_layout=envelope.EcLayout.SHARED_KEY)
    infos = _parse(der)["recipient_infos"]
    assert [ri.name for ri in infos].count("kari") == 4
    assert all(len(ri.chosen["recipient_encrypted_keys"]) == 1 for ri in infos if ri.name == "kari")
    originators = _originators(der)
    assert len(set(originators)) == 3                  # P-256 twice with the same key, P-384, P-521
    for kind in kinds:
        assert envelope.decrypt(der, people[kind].key) == _der_content()
        assert envelope.decrypt(der, people[kind].key, people[kind].cert) == _der_content()
    default = envelope.encrypt(_der_content(), [people[k].cert for k in kinds],
                               ec_layout=envelope.EcLayout.PER_RECIPIENT)
    assert len(set(_originators(default))) == 4        # RAUC's layout: a fresh key per recipient


def test_shared_key_layout_pool_and_one_ecdh_to_decrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the pool threshold; decrypting without the certificate agrees on a key once."""
    signer = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    count = envelope._POOL_THRESHOLD + 10
    certs = [_cert(key, serial=1000 + i, cn=f"d{i}", signer=signer) for i in range(count)]
    der = envelope.encrypt(_der_content(), certs, ec_layout=envelope.EcLayout.SHARED_KEY, workers=2)
    assert len(set(_originators(der))) == 1
    assert len(_originators(der)) == count
    agreed: list[object] = []
    original = envelope._kari_kek

    def spy(*args: object) -> bytes | None:
        agreed.append(args)
        return original(*args)   # type: ignore[arg-type]

    monkeypatch.setattr(envelope, "_kari_kek", spy)
    assert envelope.decrypt(der, key, certs[-1]) == _der_content()
    assert envelope.decrypt(der, key) == _der_content()
    assert len(agreed) == 2


# --- --dump-recipients text --------------------------------------------------------------------

def test_format_recipients(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    big = 0x0CE86C3E8322969C2D86CDFBE0D4D5914E4EF70C     # 156 bits: hex
    certs = [_cert(rsa_key, serial=big, cn="Dev 000"), _cert(ec_key, serial=4242, cn="Dev 001")]
    text = envelope.format_recipients(envelope.encrypt(b"x", certs))
    assert text == (
        "2 Recipients:\n"
        "  0   Issuer:    O = Test Org, CN = Test CA\n"
        "      Serial:    0x0CE86C3E8322969C2D86CDFBE0D4D5914E4EF70C\n"
        "      Algorithm: rsaEncryption\n"
        "  1   Issuer:    O = Test Org, CN = Test CA\n"
        "      Serial:    4242\n"
        "      Algorithm: dhSinglePass-stdDH-sha1kdf-scheme\n"
    )
    one = envelope.format_recipients(envelope.encrypt(b"x", certs[1:]))
    assert one.startswith("1 Recipients:\n")       # sic: RAUC has no singular
    ski = envelope.format_recipients(envelope.encrypt(b"x", certs, use_ski=True))
    assert ski == "2 Recipients:\n  0   <keyid>  1   <keyid>"     # sic: RAUC prints no newline


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (1, "1"), (2**31, "2147483648"), (2**64 + 1, "18446744073709551617"),
    (2**127 - 1, "170141183460469231731687303715884105727"),
    (2**127, "0x80000000000000000000000000000000"), (2**128, "0x0100000000000000000000000000000000"),
    (-5, "-5"), (-(2**130), "-0x0400000000000000000000000000000000"),
])
def test_format_serial(value: int, text: str) -> None:
    assert envelope._format_serial(value) == text


def test_format_name_escaping() -> None:
    from asn1crypto import x509 as ax509
    name = ax509.Name.build({"organization_name": "Foo, Inc.", "common_name": ' lead "q" \\ é',
                             "organizational_unit_name": "plain"})
    text = certformat.format_asn1_name(name)
    assert 'O = "Foo, Inc."' in text
    assert 'CN = " lead \\"q\\" \\\\ \\C3\\A9"' in text
    assert "OU = plain" in text


def test_content_type_names() -> None:
    assert certformat.content_type_name("1.2.840.113549.1.7.2") == "pkcs7-signedData"
    assert certformat.content_type_name("1.2.3") == "1.2.3"


# --- reencrypt (resign / replace-signature of encrypted bundles) --------------------------------

def test_reencrypt_keeps_recipients(people: dict[str, Issued]) -> None:
    certs = [people[k].cert for k in ("rsa2048", "p256", "p384")]
    old = envelope.encrypt(_der_content(100), certs, use_ski=True)
    opened = envelope.open_envelope(old, people["p256"].key)
    assert opened.content == _der_content(100)
    new = envelope.reencrypt(old, opened, _der_content(700))
    assert _parse(new)["recipient_infos"].dump() == _parse(old)["recipient_infos"].dump()
    assert _parse(new)["version"].native == _parse(old)["version"].native
    old_iv = _parse(old)["encrypted_content_info"]["content_encryption_algorithm"]["parameters"].native
    new_iv = _parse(new)["encrypted_content_info"]["content_encryption_algorithm"]["parameters"].native
    assert old_iv != new_iv
    for kind in ("rsa2048", "p256", "p384"):      # every recipient, not only the one that decrypted
        assert envelope.decrypt(new, people[kind].key) == _der_content(700)


def test_reencrypt_needs_the_key_of_the_envelope(people: dict[str, Issued]) -> None:
    """The content-encryption key is passed explicitly (no module-level cache): it must open the
    input envelope to the given content."""
    old = envelope.encrypt(_der_content(), [people["p256"].cert])
    with pytest.raises(EnvelopeError, match="does not hold the given content"):
        envelope.reencrypt(old, envelope.Opened(_der_content(), bytes(32)), b"new")
    opened = envelope.open_envelope(old, people["p256"].key)
    assert "content_key" not in repr(opened)
    with pytest.raises(EnvelopeError, match="does not hold the given content"):
        envelope.reencrypt(old, envelope.Opened(b"something else", opened.content_key), b"new")
    assert not hasattr(envelope, "_CEK_CACHE")
