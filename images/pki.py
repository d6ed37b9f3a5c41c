"""Lab secrets generated once into the cache: the signing PKI, a device encryption key, the SSH key.

images/cache/lab-pki/: ca.cert.pem (becomes /etc/rauc/keyring.pem in the image), ca.key.pem,
signer.cert.pem + signer.key.pem (tests sign bundles with them), crypt.cert.pem + crypt.key.pem
(a device encryption key pair; NOT put into the image, tests provision it).
images/cache/lab-ssh/: id_ed25519 + id_ed25519.pub (root's authorized key in the image).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID

from .common import log

NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    tmp.rename(path)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: rsa.RSAPrivateKey, issuer: x509.Certificate | None,
          issuer_key: rsa.RSAPrivateKey | None, *, ca: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pyrauc lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        assert issuer is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), critical=False)  # type: ignore[arg-type]
    return builder.sign(issuer_key or key, hashes.SHA256())


def ensure_pki(cache: Path) -> Path:
    """Create the lab PKI once; return its directory."""
    d = cache / "lab-pki"
    if (d / "signer.key.pem").exists() and (d / "crypt.key.pem").exists():
        log("lab-pki: cached")
        return d
    d.mkdir(parents=True, exist_ok=True)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca = _cert("pyrauc lab CA", ca_key, None, None, ca=True)
    _write(d / "ca.key.pem", _key_pem(ca_key), 0o600)
    _write(d / "ca.cert.pem", ca.public_bytes(serialization.Encoding.PEM), 0o644)
    for name, cn in (("signer", "pyrauc lab signer"), ("crypt", "pyrauc lab device")):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _cert(cn, key, ca, ca_key, ca=False)
        _write(d / f"{name}.key.pem", _key_pem(key), 0o600)
        _write(d / f"{name}.cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log(f"lab-pki: generated in {d}")
    return d


def ensure_ssh_key(cache: Path) -> Path:
    """Create the lab SSH key (ed25519) once; return the private key path."""
    d = cache / "lab-ssh"
    priv = d / "id_ed25519"
    if priv.exists():
        log("lab-ssh: cached")
        return priv
    d.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(d / "id_ed25519.pub", pub + b" pyrauc-lab\n", 0o644)
    _write(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()), 0o600)
    log(f"lab-ssh: generated {priv}")
    return priv
