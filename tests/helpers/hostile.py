"""Hostile inputs that no well-behaved library would build: malformed certificates and CMS.

A small DER tree (:class:`Node`) is parsed from valid structures, changed in one place and written
back with correct lengths, so each input differs from a valid one in exactly the way a test wants:
an EC point off the curve, a degenerate RSA modulus, a duplicated certificate extension, signed
content as a BER constructed OCTET STRING, a SignedData that is not a SEQUENCE, an unknown
signature algorithm, a signed manifest with values that are not hex.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.helpers.pki import Issued


@dataclass
class Node:
    """One DER TLV: ``tag`` is the identifier octet; constructed nodes have ``children``."""

    tag: int
    value: bytes = b""
    children: list[Node] = field(default_factory=list)

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def encode(self) -> bytes:
        body = b"".join(c.encode() for c in self.children) if self.constructed else self.value
        return bytes([self.tag]) + _length(len(body)) + body


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def parse(der: bytes) -> Node:
    node, rest = _parse_one(der)
    assert not rest, "trailing bytes"
    return node


def _parse_one(der: bytes) -> tuple[Node, bytes]:
    tag, first = der[0], der[1]
    if first < 0x80:
        length, start = first, 2
    else:
        n = first & 0x7F
        length, start = int.from_bytes(der[2:2 + n], "big"), 2 + n
    body, rest = der[start:start + length], der[start + length:]
    if tag & 0x20:
        children = []
        while body:
            child, body = _parse_one(body)
            children.append(child)
        return Node(tag, children=children), rest
    return Node(tag, value=body), rest


def oid(dotted: str) -> Node:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([parts[0] * 40 + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(chunk))
    return Node(0x06, bytes(out))


# --------------------------------------------------------------------------------------------
# certificates

def _resign(tbs: Node, issuer: Issued, cert: x509.Certificate) -> x509.Certificate:
    """The certificate ``cert`` with ``tbs`` as its to-be-signed part, signed again by ``issuer``."""
    data = tbs.encode()
    key = issuer.key
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    outer = parse(cert.public_bytes(serialization.Encoding.DER))
    outer.children[0] = tbs
    outer.children[2] = Node(0x03, b"\0" + sig)
    return x509.load_der_x509_certificate(outer.encode())


def _spki(tbs: Node) -> Node:
    # TBSCertificate: [0] version, serial, sigalg, issuer, validity, subject, spki, ...
    return tbs.children[6]


def ec_point_off_curve(device: Issued, issuer: Issued) -> x509.Certificate:
    """``device``'s EC certificate with a public point that is not on its curve."""
    tbs = parse(device.cert.public_bytes(serialization.Encoding.DER)).children[0]
    bits = _spki(tbs).children[1]
    point = bytearray(bits.value)
    point[-1] ^= 0x01                       # y changed: (x, y') does not satisfy the curve equation
    bits.value = bytes(point)
    return _resign(tbs, issuer, device.cert)


def rsa_degenerate_modulus(device: Issued, issuer: Issued, modulus: int = 1) -> x509.Certificate:
    """``device``'s RSA certificate with the public modulus ``modulus`` (1, even, tiny...)."""
    tbs = parse(device.cert.public_bytes(serialization.Encoding.DER)).children[0]
    rsa_key = Node(0x30, children=[_integer(modulus), _integer(65537)])
    _spki(tbs).children[1].value = b"\0" + rsa_key.encode()
    return _resign(tbs, issuer, device.cert)


def duplicated_extension(issued: Issued, issuer: Issued) -> x509.Certificate:
    """``issued``'s certificate with its first extension twice."""
    tbs = parse(issued.cert.public_bytes(serialization.Encoding.DER)).children[0]
    exts = next(c for c in tbs.children if c.tag == 0xA3).children[0]
    exts.children.append(exts.children[0])
    return _resign(tbs, issuer, issued.cert)


def _integer(value: int) -> Node:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return Node(0x02, raw)


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


# --------------------------------------------------------------------------------------------
# CMS SignedData

def _signed_data(cms: bytes) -> tuple[Node, Node]:
    ci = parse(cms)
    return ci, ci.children[1].children[0]          # ContentInfo, SignedData


def nested_econtent(cms: bytes, chunk: int = 64) -> bytes:
    """The eContent as a BER constructed OCTET STRING of ``chunk``-byte pieces (DER forbids it)."""
    ci, sd = _signed_data(cms)
    econtent = sd.children[2].children[1]                 # [0] EXPLICIT OCTET STRING
    data = econtent.children[0].value
    pieces = [Node(0x04, data[i:i + chunk]) for i in range(0, len(data), chunk)]
    econtent.children[0] = Node(0x24, children=pieces)
    return ci.encode()


def signed_data_not_sequence(cms: bytes) -> bytes:
    """A ContentInfo of type signedData whose content is an INTEGER."""
    ci = parse(cms)
    ci.children[1].children[0] = _integer(42)
    return ci.encode()


def econtent_not_sequence(cms: bytes) -> bytes:
    """A SignedData whose encapContentInfo is an OCTET STRING instead of a SEQUENCE."""
    ci, sd = _signed_data(cms)
    sd.children[2] = Node(0x04, b"manifest")
    return ci.encode()


def unknown_signature_algorithm(cms: bytes, dotted: str = "1.2.3.4.5.6.7") -> bytes:
    """The (only) SignerInfo's signatureAlgorithm replaced by an unknown OID."""
    ci, sd = _signed_data(cms)
    signer_info = sd.children[-1].children[0]
    # SignerInfo: version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature
    alg = next(i for i, c in enumerate(signer_info.children) if i > 2 and c.tag == 0x30)
    signer_info.children[alg] = Node(0x30, children=[oid(dotted), Node(0x05)])
    return ci.encode()
