"""Extra test PKI pieces for the signature tests: CRLs, PEM keyrings with CRLs, odd certificates.

Everything is generated with cryptography at test time (no committed blobs).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.helpers.pki import NOW, Issued


def make_crl(issuer: Issued, revoked: Sequence[x509.Certificate] = (), *,
             last_update: dt.datetime | None = None,
             next_update: dt.datetime | None = None) -> x509.CertificateRevocationList:
    """A CRL signed by ``issuer`` revoking ``revoked`` (default: valid from a day ago for 30 days)."""
    last = last_update if last_update is not None else NOW - dt.timedelta(days=1)
    nxt = next_update if next_update is not None else NOW + dt.timedelta(days=30)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.cert.subject)
               .last_update(last)
               .next_update(nxt))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(last).build())
    return builder.sign(issuer.key, hashes.SHA256())


def write_keyring(path: Path, certs: Sequence[x509.Certificate],
                  crls: Sequence[x509.CertificateRevocationList] = ()) -> Path:
    """Write a PEM keyring with certificates followed by CRLs (as RAUC users do)."""
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    data += b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls)
    path.write_bytes(data)
    return path


def issue_custom(
    directory: Path,
    name: str,
    *,
    issuer: Issued | None = None,
    ca: bool | None = False,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    eku_critical: bool = False,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key_kind: str = "rsa2048",
) -> Issued:
    """Issue a certificate with exactly the given extensions (``ca=None``: no BasicConstraints)."""
    from cryptography.x509.oid import NameOID

    from tests.helpers.pki import FAR_AHEAD, LONG_AGO, new_key

    key = new_key(key_kind)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Org"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or LONG_AGO)
        .not_valid_after(not_after or FAR_AHEAD)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                                        critical=True)
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{name}.key.pem"
    cert_path = directory / f"{name}.cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issued(key, cert, key_path, cert_path, issuer, [cert, *(issuer.chain if issuer else [])])


def key_usage(*names: str) -> x509.KeyUsage:
    """A KeyUsage with the named bits set (cryptography attribute names)."""
    bits = {n: False for n in ("digital_signature", "content_commitment", "key_encipherment",
                               "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                               "encipher_only", "decipher_only")}
    for n in names:
        bits[n] = True
    return x509.KeyUsage(**bits)
