"""Private keys and certificates from PEM/DER files or PKCS#11 URIs (RAUC's ``--key``/``--cert``).

A ``spec`` starting with ``pkcs11:`` is handed to :mod:`pyrauc.pkcs11` (imported lazily so that
python-pkcs11 stays optional); everything else is a file path. Errors are :class:`KeyLoadError`
with RAUC's wording ("failed to load key file '%s'", "failed to parse cert file '%s': %s", ...).
The passphrase of an encrypted key file comes from the environment variable RAUC_KEY_PASSPHRASE.
"""

from __future__ import annotations

import os

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pyrauc.errors import KeyLoadError

#: A signing/decryption key: an RSA or EC key of cryptography. The token keys of
#: :mod:`pyrauc.pkcs11` (:class:`~pyrauc.pkcs11.Pkcs11RSAPrivateKey`,
#: :class:`~pyrauc.pkcs11.Pkcs11ECPrivateKey`) implement these interfaces.
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

PASSPHRASE_ENV = "RAUC_KEY_PASSPHRASE"
_PKCS11_PREFIX = "pkcs11:"


def _is_pkcs11(spec: str) -> bool:
    return spec.startswith(_PKCS11_PREFIX)


def _read(path: str, kind: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise KeyLoadError(f"failed to load {kind} file '{path}'") from exc


def load_cert(spec: str) -> x509.Certificate:
    """Load the first certificate of a PEM file, or a certificate from a ``pkcs11:`` URI."""
    if _is_pkcs11(spec):
        from pyrauc import pkcs11

        return pkcs11.load_certificate(spec)
    data = _read(spec, "cert")
    start = data.find(b"-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise KeyLoadError(f"failed to parse cert file '{spec}': Expecting: CERTIFICATE")
    end = data.find(b"-----END CERTIFICATE-----", start)
    if end < 0:
        raise KeyLoadError(f"failed to parse cert file '{spec}': bad end line")
    block = data[start:end + len(b"-----END CERTIFICATE-----")] + b"\n"
    try:
        cert = x509.load_pem_x509_certificate(block)
    except ValueError as exc:
        raise KeyLoadError(f"failed to parse cert file '{spec}': {_reason(exc)}") from exc
    _check(cert, spec)
    return cert


def load_certs(path: str) -> list[x509.Certificate]:
    """Load every certificate of a (concatenated) PEM file; other PEM blocks are ignored."""
    data = _read(path, "cert")
    begins = data.count(b"-----BEGIN CERTIFICATE-----")
    if not begins:
        raise KeyLoadError(f"failed to parse cert file '{path}': Expecting: CERTIFICATE")
    if data.count(b"-----END CERTIFICATE-----") < begins:
        # a truncated last certificate: OpenSSL's PEM reader fails, cryptography would skip it
        raise KeyLoadError(f"failed to parse cert file '{path}': bad end line")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise KeyLoadError(f"failed to parse cert file '{path}': {_reason(exc)}") from exc
    if len(certs) != begins:
        raise KeyLoadError(f"failed to parse cert file '{path}': bad base64 decode")
    for cert in certs:
        _check(cert, path)
    return certs


def _check(cert: x509.Certificate, path: str) -> None:
    problem = certificate_problem(cert)
    if problem is not None:
        raise KeyLoadError(f"failed to parse cert file '{path}': {problem}")


def certificate_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` cannot be used (OpenSSL flags it invalid or cannot use its key), or None.

    cryptography loads certificates lazily: a duplicated extension or a public key that is not a
    valid key would otherwise surface as an exception deep inside signing, verification or
    encryption.
    """
    try:
        cert.extensions  # noqa: B018 - parse them now
    except x509.DuplicateExtension as exc:
        return f"duplicate extension {exc.oid.dotted_string}"
    except ValueError as exc:
        return f"invalid extensions: {_reason(exc)}"
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"invalid public key: {_reason(exc)}"
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        if numbers.n % 2 == 0 or numbers.n.bit_length() < 512 or numbers.e % 2 == 0 \
                or not 3 <= numbers.e < numbers.n:
            return "invalid public key: degenerate RSA modulus or exponent"
    return None


def load_private_key(spec: str) -> PrivateKey:
    """Load a private key from a PEM or DER file, or a token key from a ``pkcs11:`` URI."""
    if _is_pkcs11(spec):
        from pyrauc import pkcs11

        return pkcs11.load_private_key(spec)
    data = _read(spec, "key")
    env = os.environ.get(PASSPHRASE_ENV)
    password = env.encode() if env is not None else None
    is_pem = b"-----BEGIN" in data
    loader = serialization.load_pem_private_key if is_pem else serialization.load_der_private_key
    try:
        key = loader(data, password=password)
    except TypeError as exc:
        # encrypted without a passphrase, or a passphrase for an unencrypted key
        if password is None:
            msg = f"key is encrypted, set {PASSPHRASE_ENV}"
        else:
            msg = "key is not encrypted, but a passphrase was given"
        raise KeyLoadError(f"failed to parse key file '{spec}': {msg}") from exc
    except ValueError as exc:
        if password is not None and b"ENCRYPTED" in data:
            msg = "bad decrypt (wrong passphrase?)"
        else:
            msg = "No supported data to decode. Input type: " + ("PEM" if is_pem else "DER")
        raise KeyLoadError(f"failed to parse key file '{spec}': {msg}") from exc
    except Exception as exc:  # unsupported algorithm etc.
        raise KeyLoadError(f"failed to parse key file '{spec}': {_reason(exc)}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyLoadError(f"failed to parse key file '{spec}': unsupported key type "
                           f"{type(key).__name__} (RSA or EC required)")
    return key


def _reason(exc: Exception) -> str:
    """One line describing ``exc`` (never containing key material)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
