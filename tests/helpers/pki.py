"""Test PKI made with cryptography: CAs, intermediates, signers and per-device recipients.

Nothing here is committed as an opaque blob: every key and certificate a test uses is generated
by these functions into a temporary directory (see the ``pki`` fixture in the top-level conftest).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
LONG_AGO = NOW - dt.timedelta(days=365)
FAR_AHEAD = NOW + dt.timedelta(days=3650)


def new_key(kind: str = "rsa2048") -> PrivateKey:
    """Make a private key: ``rsa2048``, ``rsa4096``, ``p256``, ``p384`` or ``p521``."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[kind]
    return ec.generate_private_key(curve)


def _name(cn: str, org: str = "Test Org") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
    """A key with its certificate, and where both were written."""

    key: PrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path
    issuer: Issued | None = None
    chain: list[x509.Certificate] = field(default_factory=list)


def issue(
    directory: Path,
    name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    key_kind: str = "rsa2048",
    not_before: dt.datetime = LONG_AGO,
    not_after: dt.datetime = FAR_AHEAD,
    eku: list[x509.ObjectIdentifier] | None = None,
    key_usage: bool = True,
    serial: int | None = None,
) -> Issued:
    """Issue a certificate for a new key (self-signed when ``issuer`` is None)."""
    key = new_key(key_kind)
    subject = _name(name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=False,
                key_encipherment=not ca and isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False, key_agreement=not ca and isinstance(key, ec.EllipticCurvePrivateKey),
                key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    signing_key = issuer.key if issuer else key
    cert = builder.sign(signing_key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{name}.key.pem"
    cert_path = directory / f"{name}.cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    chain = [cert, *(issuer.chain if issuer else [])]
    return Issued(key, cert, key_path, cert_path, issuer, chain)


def write_pem_bundle(path: Path, certs: list[x509.Certificate]) -> Path:
    """Write several certificates as one concatenated PEM file."""
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


@dataclass
class Pki:
    """The standard test PKI (see :func:`make_pki`)."""

    dir: Path
    root: Issued            # self-signed root CA
    intermediate: Issued    # CA under root
    signer: Issued          # RSA signer under intermediate (no EKU: fine for smimesign)
    signer_ec: Issued       # P-256 signer under intermediate
    signer_direct: Issued   # RSA signer directly under root
    expired: Issued         # expired signer under root
    codesign: Issued        # signer with EKU codeSigning under root
    other_root: Issued      # an unrelated CA
    other_signer: Issued    # signer under the unrelated CA
    keyring: Path           # PEM with the root CA only
    other_keyring: Path     # PEM with the unrelated CA only


def make_pki(directory: Path) -> Pki:
    """Generate the standard test PKI into ``directory``."""
    root = issue(directory, "root-ca", ca=True)
    inter = issue(directory, "intermediate-ca", issuer=root, ca=True)
    signer = issue(directory, "signer", issuer=inter)
    signer_ec = issue(directory, "signer-ec", issuer=inter, key_kind="p256")
    direct = issue(directory, "signer-direct", issuer=root)
    expired = issue(directory, "expired", issuer=root, not_before=LONG_AGO,
                    not_after=NOW - dt.timedelta(days=1))
    codesign = issue(directory, "codesign", issuer=root, eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    other_root = issue(directory, "other-ca", ca=True)
    other_signer = issue(directory, "other-signer", issuer=other_root)
    keyring = write_pem_bundle(directory / "keyring.pem", [root.cert])
    other_keyring = write_pem_bundle(directory / "other-keyring.pem", [other_root.cert])
    return Pki(directory, root, inter, signer, signer_ec, direct, expired, codesign,
               other_root, other_signer, keyring, other_keyring)


def make_recipients(directory: Path, count: int, key_kind: str = "p256", prefix: str = "device") -> list[Issued]:
    """Per-device key pairs with self-signed certificates (the factory step)."""
    return [issue(directory, f"{prefix}-{i:03d}", key_kind=key_kind) for i in range(count)]


def make_devices(directory: Path, prefix: str, key_kinds: dict[str, str]) -> dict[str, Issued]:
    """Self-signed device certificates ``{name: issue(directory, f"{prefix}-{name}", key_kind=kind)}`` (same order)."""
    return {name: issue(directory, f"{prefix}-{name}", key_kind=kind) for name, kind in key_kinds.items()}
