"""Inputs the fuzzer (``python -m benchmarks.fuzz``) found crashing a parser, now refused cleanly.

Each input is rebuilt here from a valid one (changed in the one place the crash needed), so the
tests need no binary blobs: the exception that escaped is named in each test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyrauc import bundle, envelope, info, signature, slots
from pyrauc.certformat import dump_cert
from pyrauc.config import parse_config
from pyrauc.errors import EnvelopeError, KeyFileError, SignatureError
from pyrauc.keyfile import KeyFile
from pyrauc.manifest import Manifest
from pyrauc.status import load_system_status
from tests.helpers import hostile
from tests.helpers.hostile import Node
from tests.helpers.pki import Pki

PARSE_FAILED = r"^Failed to parse CMS$"

# --------------------------------------------------------------------------------------------
# GKeyFile: a NUL ends the line, as in GLib (a NUL in a device path made os.path.realpath raise
# ValueError "embedded null byte" in status, mark-* and install)


def test_keyfile_nul_ends_the_line() -> None:
    kf = KeyFile.parse(b"[g]\nk=a\0b\n\0x=y\nl=c\0\r\n")
    assert kf.get_value("g", "k") == "a"
    assert kf.get_value("g", "l") == "c"
    assert kf.keys("g") == ["k", "l"]       # a line that starts with NUL is empty, as GLib reads it


def test_keyfile_nul_in_key() -> None:
    with pytest.raises(KeyFileError, match=r"^Key file contains line “ke” which is not a key-value pair, group, "
                                           r"or comment$"):
        KeyFile.parse(b"[g]\nke\0y=v\n")


def test_config_nul_in_device() -> None:
    config = parse_config(b"[system]\ncompatible=T\nbootloader=noop\n\n[slot.rootfs.0]\ndevice=/dev/vda2\0junk\n")
    assert config.slots["rootfs.0"].device == "/dev/vda2"
    with pytest.raises(slots.SlotError, match="Did not find booted slot"):
        slots.determine_slot_states(slots.build_slots(config), "/dev/vda9")   # was ValueError


# --------------------------------------------------------------------------------------------
# status files


def test_system_status_with_bad_escape(tmp_path: Path) -> None:
    config = parse_config("[system]\ncompatible=T\nbootloader=noop\ndata-directory=data\n", tmp_path / "system.conf")
    Path(config.statusfile).parent.mkdir()
    Path(config.statusfile).write_text("[system]\nboot-id=\\x\n")
    assert load_system_status(config) == {}          # a warning, as RAUC (was KeyFileError, then StatusError)


# --------------------------------------------------------------------------------------------
# CMS SignedData: asn1crypto and cryptography parse lazily; OpenSSL's d2i_CMS parses it all


def _signed(pki: Pki) -> tuple[Node, Node]:
    """A valid inline SignedData (RSA signer): (ContentInfo, SignedData) as DER trees."""
    cms = signature.cms_sign(b"manifest", cert=pki.signer.cert, key=pki.signer.key,
                             intermediates=[pki.intermediate.cert])
    ci = hostile.parse(cms)
    return ci, ci.children[1].children[0]


def _first_tbs(sd: Node) -> Node:
    certificates = next(c for c in sd.children if c.tag == 0xA0)
    return certificates.children[0].children[0]


def test_cms_tag_asn1crypto_cannot_show(pki: Pki) -> None:
    ci, _ = _signed(pki)
    # the authorityKeyIdentifier's keyIdentifier tagged [8] instead of [0]: asn1crypto takes it for
    # an INSTANCE OF, which has no .native
    der = ci.encode().replace(b"\x04\x18\x30\x16\x80\x14", b"\x04\x18\x30\x16\x88\x14", 1)
    for parse in (signature.cms_content, signature.cms_certificates):
        with pytest.raises(SignatureError, match=PARSE_FAILED):   # was AttributeError
            parse(der)


def test_cms_certificate_version_5(pki: Pki) -> None:
    ci, sd = _signed(pki)
    _first_tbs(sd).children[0].children[0].value = b"\x05"
    with pytest.raises(SignatureError, match=PARSE_FAILED):       # was InvalidVersion
        signature.cms_certificates(ci.encode())


def test_cms_certificate_issuer_not_a_name(pki: Pki) -> None:
    ci, sd = _signed(pki)
    # an attribute of unknown type whose value is [APPLICATION 21]: asn1crypto takes any value,
    # cryptography refuses it, but only when the name is used
    atv = Node(0x30, children=[hostile.oid("1.2.3.4"), Node(0x75, children=[Node(0x02, b"\x01")])])
    _first_tbs(sd).children[3] = Node(0x30, children=[Node(0x31, children=[atv])])
    der = ci.encode()
    with pytest.raises(SignatureError, match=PARSE_FAILED):       # was ValueError in dump_cert
        signature.cms_certificates(der)
    with pytest.raises(SignatureError, match=PARSE_FAILED):
        signature.cms_verify(der, signature.Keyring(path=pki.keyring))


def test_dump_cert_key_that_does_not_decode(pki: Pki) -> None:
    text = dump_cert(hostile.ec_point_off_curve(pki.signer_ec, pki.intermediate))     # was ValueError
    assert "        Subject Public Key Info:\n            Unable to load Public Key\n" in text
    assert "X509v3 Subject Key Identifier" in text


def test_dump_cert_duplicated_extension(pki: Pki) -> None:
    cert = hostile.duplicated_extension(pki.signer, pki.intermediate)
    with pytest.raises(x509.DuplicateExtension):
        cert.extensions  # noqa: B018 - what made dump_cert raise
    text = dump_cert(cert)
    assert text.count("            X509v3 Basic Constraints: critical\n") == 2


def test_info_dump_cert_unverified_bundle_with_bad_key(pki: Pki, tmp_path: Path) -> None:
    manifest = Manifest("T", bundle_format="verity", format_explicit=True, verity_hash="ab" * 32,
                        verity_salt="cd" * 32, verity_size=4096).to_data()
    ci = hostile.parse(signature.cms_sign(manifest, cert=pki.signer.cert, key=pki.signer.key))
    certificates = next(c for c in ci.children[1].children[0].children if c.tag == 0xA0)
    bad = hostile.ec_point_off_curve(pki.signer_ec, pki.intermediate)
    certificates.children[0] = hostile.parse(bad.public_bytes(serialization.Encoding.DER))
    cms = ci.encode()
    path = tmp_path / "b.raucb"
    path.write_bytes(bytes(8192) + cms + len(cms).to_bytes(8, "big"))
    opened = bundle.open_bundle(path, keyring=None, verify=False)
    assert "Unable to load Public Key" in info.format_info(opened, "readable", dump_cert=True)   # was ValueError


# --------------------------------------------------------------------------------------------
# CMS EnvelopedData: malformed fields found only when decrypting or dumping the recipients


def _enveloped(pki: Pki) -> tuple[Node, Node]:
    """A valid EnvelopedData for an RSA (ktri) and an EC (kari) recipient: (ContentInfo, EnvelopedData)."""
    ci = hostile.parse(envelope.encrypt(b"\x30\x00", [pki.signer.cert, pki.signer_ec.cert]))
    return ci, ci.children[1].children[0]


@pytest.mark.parametrize(("attribute", "value"), [
    ("2.5.4.3", Node(0x1E, b"\xd8")),       # a BMPString of one byte: UnicodeDecodeError
    ("1.2.3.4", Node(0x09, b"\x40")),       # a REAL, which asn1crypto cannot show: AttributeError
])
def test_envelope_recipient_issuer_not_decodable(pki: Pki, attribute: str, value: Node) -> None:
    ci, env = _enveloped(pki)
    ktri = next(c for c in env.children[1].children if c.tag == 0x30)
    atv = Node(0x30, children=[hostile.oid(attribute), value])
    ktri.children[1].children[0] = Node(0x30, children=[Node(0x31, children=[atv])])
    with pytest.raises(EnvelopeError, match=PARSE_FAILED):
        envelope.format_recipients(ci.encode())


def test_envelope_originator_of_unknown_type(pki: Pki) -> None:
    ci, env = _enveloped(pki)
    kari = next(c for c in env.children[1].children if c.tag == 0xA1)
    kari.children[1] = Node(0xA0, children=[Node(0x1B, b"x")])
    with pytest.raises(EnvelopeError, match=PARSE_FAILED):           # was ValueError
        envelope.decrypt(ci.encode(), pki.signer_ec.key)


def test_envelope_content_algorithm_not_an_oid(pki: Pki) -> None:
    ci, env = _enveloped(pki)
    env.children[2].children[1].children[0] = Node(0x0A, b"\x01")
    with pytest.raises(EnvelopeError, match=PARSE_FAILED):           # was ValueError
        envelope.decrypt(ci.encode(), pki.signer_ec.key)
