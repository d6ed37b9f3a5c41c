"""Extra test PKI pieces for the signature tests: CRLs, PEM keyrings with CRLs, odd certificates.

:func:`issue_policy_certs` issues the set of odd certificates shared by the unit and interop policy tests.

Everything is generated with cryptography at test time (no committed blobs).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

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


@dataclass
class PolicyCerts:
    """Certificates with odd extensions for the signature policy tests (see :func:`issue_policy_certs`)."""

    dir: Path
    email: Issued                     # emailProtection EKU
    server: Issued                    # serverAuth EKU
    anyeku: Issued                    # anyExtendedKeyUsage
    ku_enc_only: Issued               # keyUsage keyEncipherment only
    ku_nonrep: Issued                 # keyUsage contentCommitment (nonRepudiation) only
    no_ku: Issued                     # neither keyUsage nor EKU
    codesign_noku: Issued             # codeSigning EKU, no keyUsage
    codesign_ku_enc: Issued           # codeSigning EKU, keyUsage keyEncipherment
    server_ca: Issued                 # CA with serverAuth EKU
    leaf_under_server_ca: Issued
    codesign_under_server_ca: Issued
    pathlen0_root: Issued             # self-signed root with pathLenConstraint 0
    pl_inter: Issued                  # CA below pathlen0_root (so pl_leaf breaks its path length)
    pl_leaf: Issued
    non_ca_inter: Issued              # BasicConstraints CA:FALSE used as issuer
    leaf_under_non_ca: Issued
    ku_ca: Issued                     # CA whose keyUsage lacks keyCertSign
    leaf_under_ku_ca: Issued
    future: Issued                    # not valid yet
    selfsigned: Issued                # self-signed leaf without BasicConstraints


def issue_policy_certs(directory: Path, root: Issued) -> PolicyCerts:
    """Issue the :class:`PolicyCerts` below ``root`` (those that are not self-signed) into ``directory``."""
    d = directory
    sig_ku = key_usage("digital_signature")
    ca_ku = key_usage("key_cert_sign", "crl_sign")
    server_ca = issue_custom(d, "server-ca", issuer=root, ca=True, key_usage=ca_ku, eku=[EKU.SERVER_AUTH])
    pathlen0_root = issue_custom(d, "pl0-root", ca=True, path_length=0, key_usage=ca_ku)
    pl_inter = issue_custom(d, "pl-inter", issuer=pathlen0_root, ca=True, key_usage=ca_ku)
    non_ca_inter = issue_custom(d, "non-ca-inter", issuer=root, ca=False)
    ku_ca = issue_custom(d, "kuca", issuer=root, ca=True, key_usage=key_usage("crl_sign"))
    return PolicyCerts(
        dir=d,
        email=issue_custom(d, "email", issuer=root, key_usage=sig_ku, eku=[EKU.EMAIL_PROTECTION]),
        server=issue_custom(d, "server", issuer=root, key_usage=sig_ku, eku=[EKU.SERVER_AUTH]),
        anyeku=issue_custom(d, "anyeku", issuer=root, key_usage=sig_ku, eku=[EKU.ANY_EXTENDED_KEY_USAGE]),
        ku_enc_only=issue_custom(d, "ku-enc", issuer=root, key_usage=key_usage("key_encipherment")),
        ku_nonrep=issue_custom(d, "ku-nonrep", issuer=root, key_usage=key_usage("content_commitment")),
        no_ku=issue_custom(d, "no-ku", issuer=root),
        codesign_noku=issue_custom(d, "codesign-noku", issuer=root, eku=[EKU.CODE_SIGNING]),
        codesign_ku_enc=issue_custom(d, "codesign-kuenc", issuer=root, eku=[EKU.CODE_SIGNING],
                                     key_usage=key_usage("key_encipherment")),
        server_ca=server_ca,
        leaf_under_server_ca=issue_custom(d, "leaf-sca", issuer=server_ca, key_usage=sig_ku),
        codesign_under_server_ca=issue_custom(d, "cs-sca", issuer=server_ca, key_usage=sig_ku,
                                              eku=[EKU.CODE_SIGNING]),
        pathlen0_root=pathlen0_root,
        pl_inter=pl_inter,
        pl_leaf=issue_custom(d, "pl-leaf", issuer=pl_inter, key_usage=sig_ku),
        non_ca_inter=non_ca_inter,
        leaf_under_non_ca=issue_custom(d, "leaf-nonca", issuer=non_ca_inter, key_usage=sig_ku),
        ku_ca=ku_ca,
        leaf_under_ku_ca=issue_custom(d, "leaf-kuca", issuer=ku_ca, key_usage=sig_ku),
        future=issue_custom(d, "future", issuer=root, key_usage=sig_ku,
                            not_before=NOW + dt.timedelta(days=10), not_after=NOW + dt.timedelta(days=100)),
        selfsigned=issue_custom(d, "selfsigned", ca=None, key_usage=sig_ku),
    )
