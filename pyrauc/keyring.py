"""The keyring: trust anchors, CRLs and the X.509 path validation policy (RAUC's ``[keyring]``).

:class:`Keyring` is the policy of system.conf's ``[keyring]`` group (and ``--keyring``);
:class:`ChainVerifier` loads its certificates and CRLs once and validates certificate paths after
OpenSSL's ``X509_verify_cert``: trusted-first issuer lookup, partial chains, purposes
(``check-purpose``, with RAUC's "codesign-rauc"), CRLs and ``no_check_time``. cryptography's
webpki verifier cannot express those options nor report OpenSSL's reasons, so the path is built
here; the individual signature checks use cryptography (``verify_directly_issued_by``,
``is_signature_valid``). Failures are :class:`~pyrauc.errors.SignatureError` "Verify error:
<OpenSSL 3.0 reason>", e.g. "Verify error: unable to get local issuer certificate".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID

from pyrauc.certformat import utc
from pyrauc.errors import SignatureError

log = logging.getLogger(__name__)

# OpenSSL 3.0 X509_verify_cert_error_string() texts used here
E_UNABLE_TO_GET_ISSUER = "unable to get issuer certificate"
E_UNABLE_TO_GET_CRL = "unable to get certificate CRL"
E_CERT_SIGNATURE = "certificate signature failure"
E_CRL_SIGNATURE = "CRL signature failure"
E_NOT_YET_VALID = "certificate is not yet valid"
E_EXPIRED = "certificate has expired"
E_CRL_NOT_YET_VALID = "CRL is not yet valid"
E_CRL_EXPIRED = "CRL has expired"
E_DEPTH_ZERO_SELF_SIGNED = "self-signed certificate"
E_SELF_SIGNED_IN_CHAIN = "self-signed certificate in certificate chain"
E_UNABLE_TO_GET_ISSUER_LOCALLY = "unable to get local issuer certificate"
E_CHAIN_TOO_LONG = "certificate chain too long"
E_REVOKED = "certificate revoked"
E_INVALID_CA = "invalid CA certificate"
E_PATH_LENGTH = "path length constraint exceeded"
E_PURPOSE = "unsuitable certificate purpose"
E_CRL_ISSUER = "unable to get CRL issuer certificate"
E_NO_CRL_SIGN = "key usage does not include CRL signing"

_MAX_DEPTH = 100

#: OpenSSL purpose short names accepted for ``check_purpose`` (plus RAUC's "codesign-rauc")
PURPOSES = ("sslclient", "sslserver", "nssslserver", "smimesign", "smimeencrypt", "crlsign", "any",
            "ocsphelper", "timestampsign", "codesign-rauc")


@dataclass(frozen=True)
class Keyring:
    """Trust anchors and verification policy (system.conf ``[keyring]``)."""

    path: Path | None = None
    directory: Path | None = None
    check_crl: bool = False
    allow_partial_chain: bool = False
    check_purpose: str | None = None   # None = smimesign; "codesign" -> "codesign-rauc"; "any"; ...
    use_bundle_signing_time: bool = False
    allowed_signer_cns: tuple[str, ...] | None = None
    no_check_time: bool = False

    def with_path(self, path: str | os.PathLike[str]) -> Keyring:
        """This policy with the PEM file ``path`` instead of its own (``--keyring``: as in RAUC a
        file only, and system.conf's ``directory`` stays)."""
        return dataclasses.replace(self, path=Path(path))


class _VerifyFail(Exception):
    """Internal: a certificate verification error (OpenSSL reason text)."""


class ChainVerifier:
    """A loaded keyring: validates certificate paths against its anchors and policy."""

    def __init__(self, keyring: Keyring) -> None:
        """Load the keyring's certificates and CRLs; SignatureError if they or the purpose are unusable."""
        self.keyring = keyring
        self._store = _load_store(keyring)
        self._purpose = _purpose_name(keyring.check_purpose)

    def verify(self, leaf: x509.Certificate, untrusted: Sequence[x509.Certificate], *,
               at: dt.datetime | None = None) -> list[x509.Certificate]:
        """The verified path leaf..anchor; ``untrusted`` may supply intermediates.

        ``at`` is the verification time (default now; ignored with ``keyring.no_check_time``).
        Raises :class:`SignatureError` "Verify error: <OpenSSL reason>".
        """
        try:
            return _verify_chain(leaf, untrusted, self._store, self.keyring, self._purpose, at)
        except _VerifyFail as exc:
            raise SignatureError(f"Verify error: {exc}") from exc


def verify_cert_chain(leaf: x509.Certificate, untrusted: Sequence[x509.Certificate], keyring: Keyring, *,
                      at: dt.datetime | None = None) -> list[x509.Certificate]:
    """Verify ``leaf`` against the keyring like OpenSSL's X509_verify_cert; return leaf..anchor."""
    return ChainVerifier(keyring).verify(leaf, untrusted, at=at)


# --------------------------------------------------------------------------- store

def _split_pem(data: bytes, label: bytes) -> list[bytes]:
    begin = b"-----BEGIN " + label + b"-----"
    end = b"-----END " + label + b"-----"
    blocks: list[bytes] = []
    pos = 0
    while True:
        start = data.find(begin, pos)
        if start < 0:
            return blocks
        stop = data.find(end, start)
        if stop < 0:
            raise ValueError("bad end line")
        blocks.append(data[start:stop + len(end)] + b"\n")
        pos = stop + len(end)


_HASHED_NAME = re.compile(r"^[0-9a-f]{8}\.r?[0-9]+$")


def _parse_store_file(data: bytes) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    """The certificates and CRLs of a PEM file; ValueError if it holds neither (OpenSSL refuses it)."""
    certs = x509.load_pem_x509_certificates(data) if b"-----BEGIN CERTIFICATE-----" in data else []
    crls = [x509.load_pem_x509_crl(block) for block in _split_pem(data, b"X509 CRL")]
    if not certs and not crls:
        raise ValueError("no certificate or CRL found")
    return certs, crls


@dataclass
class _Store:
    certs: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList]


def require_keyring(keyring: Keyring | None) -> Keyring:
    """KEYRING if it names a file or directory; RAUC's "No keyring ..." SignatureError otherwise."""
    if keyring is None or (keyring.path is None and keyring.directory is None):
        raise SignatureError("No keyring file or directory provided")
    return keyring


def _load_store(keyring: Keyring) -> _Store:
    require_keyring(keyring)
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    try:
        if keyring.path is not None:
            c, r = _parse_store_file(Path(keyring.path).read_bytes())
            certs += c
            crls += r
        if keyring.directory is not None:
            for entry in sorted(Path(keyring.directory).iterdir()):
                # OpenSSL's hashed directory: it looks up <subject hash>.<n> (certificates) and
                # <hash>.r<n> (CRLs) by name, so files named otherwise are never used
                if not _HASHED_NAME.match(entry.name) or not entry.is_file():
                    continue
                try:
                    c, r = _parse_store_file(entry.read_bytes())
                except ValueError:
                    continue   # OpenSSL's lookup ignores files it cannot use
                certs += c
                crls += r
    except (OSError, ValueError) as exc:
        raise SignatureError(
            f"failed to load CA file '{keyring.path if keyring.path is not None else '(null)'}' and/or "
            f"directory '{keyring.directory if keyring.directory is not None else '(null)'}'") from exc
    if crls and not keyring.check_crl:
        log.warning("Detected CRL but CRL checking is disabled!")
    return _Store(certs, crls)


def _purpose_name(check_purpose: str | None) -> str:
    name = "smimesign" if check_purpose is None else check_purpose
    if name == "codesign":
        name = "codesign-rauc"
    if name not in PURPOSES:
        raise SignatureError(f"failed to configure X509 purpose '{check_purpose}'")
    return name

# --------------------------------------------------------------------------- X.509 path validation


def _ext(cert: x509.Certificate, cls: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _ski(cert: x509.Certificate) -> bytes | None:
    value = _ext(cert, x509.SubjectKeyIdentifier)
    return value.digest if value is not None else None


def _akid_matches(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    if aki is None:
        return True
    if aki.key_identifier is not None:
        ski = _ski(issuer)
        if ski is not None and ski != aki.key_identifier:
            return False
    if aki.authority_cert_serial_number is not None and \
            aki.authority_cert_serial_number != issuer.serial_number:
        return False
    return True


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def _self_signed(cert: x509.Certificate) -> bool:
    return _self_issued(cert) and _akid_matches(cert, cert)


def _is_issuer(cert: x509.Certificate, candidate: x509.Certificate) -> bool:
    return candidate.subject == cert.issuer and _akid_matches(cert, candidate)


def _time_ok(cert: x509.Certificate, when: dt.datetime | None) -> bool:
    return when is None or cert.not_valid_before_utc <= when <= cert.not_valid_after_utc


def _find_issuer(cert: x509.Certificate, pool: Sequence[x509.Certificate], chain: Sequence[x509.Certificate],
                 when: dt.datetime | None) -> x509.Certificate | None:
    best: x509.Certificate | None = None
    for candidate in pool:
        if candidate in chain or not _is_issuer(cert, candidate):
            continue
        if _time_ok(candidate, when):
            return candidate
        if best is None or candidate.not_valid_after_utc > best.not_valid_after_utc:
            best = candidate
    return best


def _build_chain(leaf: x509.Certificate, untrusted: Sequence[x509.Certificate],
                 trusted: Sequence[x509.Certificate], partial: bool,
                 when: dt.datetime | None) -> tuple[list[x509.Certificate], int]:
    """Build leaf..anchor like OpenSSL (trusted first); return (chain, number of untrusted certs)."""
    chain = [leaf]
    if leaf in trusted and (partial or _self_signed(leaf)):
        return chain, 0
    num_untrusted = 1
    while True:
        if len(chain) > _MAX_DEPTH:
            raise _VerifyFail(E_CHAIN_TOO_LONG)
        cur = chain[-1]
        in_trusted_part = num_untrusted < len(chain)
        if not in_trusted_part and _self_signed(cur):
            raise _VerifyFail(E_DEPTH_ZERO_SELF_SIGNED if len(chain) == 1 else E_SELF_SIGNED_IN_CHAIN)
        issuer = _find_issuer(cur, trusted, chain, when)
        if issuer is not None:
            chain.append(issuer)
            if partial or _self_signed(issuer):
                return chain, num_untrusted
            continue
        if in_trusted_part:
            raise _VerifyFail(E_UNABLE_TO_GET_ISSUER)
        issuer = _find_issuer(cur, untrusted, chain, when)
        if issuer is None:
            raise _VerifyFail(E_UNABLE_TO_GET_ISSUER_LOCALLY)
        chain.append(issuer)
        num_untrusted += 1


def _check_ca(cert: x509.Certificate) -> int:
    """OpenSSL's check_ca(): 0 = not a CA, >0 = CA (kind)."""
    ku = _ext(cert, x509.KeyUsage)
    if ku is not None and not ku.key_cert_sign:
        return 0
    bc = _ext(cert, x509.BasicConstraints)
    if bc is not None:
        return 1 if bc.ca else 0
    if cert.version == x509.Version.v1 and _self_signed(cert):
        return 3
    if ku is not None:
        return 4
    return 0


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    value = _ext(cert, x509.ExtendedKeyUsage)
    return list(value) if value is not None else None


def _ku_allows(cert: x509.Certificate, *names: str) -> bool:
    ku = _ext(cert, x509.KeyUsage)
    if ku is None:
        return True
    for name in names:
        try:
            if getattr(ku, name):
                return True
        except ValueError:  # encipher_only/decipher_only without key_agreement
            continue
    return False


_PURPOSE_EKU: dict[str, tuple[x509.ObjectIdentifier, ...]] = {
    "sslclient": (ExtendedKeyUsageOID.CLIENT_AUTH,),
    "sslserver": (ExtendedKeyUsageOID.SERVER_AUTH, x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
                  x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3")),
    "nssslserver": (ExtendedKeyUsageOID.SERVER_AUTH, x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
                    x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3")),
    "smimesign": (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    "smimeencrypt": (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    "ocsphelper": (),
    "crlsign": (),
}
_PURPOSE_KU: dict[str, tuple[str, ...]] = {
    "sslclient": ("digital_signature", "key_agreement"),
    "sslserver": ("digital_signature", "key_encipherment", "key_agreement"),
    "nssslserver": ("key_encipherment",),
    "smimesign": ("digital_signature", "content_commitment"),
    "smimeencrypt": ("key_encipherment",),
}


def _purpose_ok(cert: x509.Certificate, purpose: str, ca: bool) -> bool:
    """OpenSSL's X509_check_purpose() for the purposes in :data:`PURPOSES` (nsCertType ignored)."""
    if purpose == "any":
        return True
    eku = _eku(cert)
    if purpose == "codesign-rauc":
        if ca:
            if eku is not None and ExtendedKeyUsageOID.CODE_SIGNING not in eku:
                log.warning("CA certificate extended key usage does not allow code signing")
                return False
            return _check_ca(cert) != 0
        if eku is None or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
            log.warning("Signer certificate does not specify extended key usage code signing")
            return False
        if _ext(cert, x509.KeyUsage) is None:
            log.warning("Signer certificate should specify 'Key Usage' and mark it 'critical' "
                        "to be fully CAB Forum compliant.")
        elif not _ku_allows(cert, "digital_signature"):
            log.warning("Signer certificate key usage does not allow 'digitalSignature'")
            return False
        return True
    if purpose == "timestampsign":
        if ca:
            return _check_ca(cert) != 0
        try:
            ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        except x509.ExtensionNotFound:
            return False
        if not ext.critical or list(ext.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
            return False
        ku = _ext(cert, x509.KeyUsage)
        return ku is None or ((ku.digital_signature or ku.content_commitment) and not (
            ku.key_encipherment or ku.data_encipherment or ku.key_agreement or ku.key_cert_sign
            or ku.crl_sign))
    wanted = _PURPOSE_EKU.get(purpose, ())
    if wanted and eku is not None and not any(oid in eku for oid in wanted):
        return False
    if ca:
        if purpose == "crlsign":
            return _check_ca(cert) != 0
        return _check_ca(cert) != 0
    if purpose == "crlsign":
        return _ku_allows(cert, "crl_sign")
    if purpose == "ocsphelper":
        return True
    return _ku_allows(cert, *_PURPOSE_KU.get(purpose, ()))


def _check_extensions(chain: list[x509.Certificate], purpose: str) -> None:
    plen = 0
    for i, cert in enumerate(chain):
        if i > 0 and _check_ca(cert) == 0:
            raise _VerifyFail(E_INVALID_CA)
        # OpenSSL checks the purpose of trusted certificates as well (no auxiliary trust here)
        if not _purpose_ok(cert, purpose, ca=i > 0):
            raise _VerifyFail(E_PURPOSE)
        bc = _ext(cert, x509.BasicConstraints)
        if i > 1 and bc is not None and bc.path_length is not None and plen > bc.path_length:
            raise _VerifyFail(E_PATH_LENGTH)
        if i > 0 and not _self_issued(cert):
            plen += 1


def _crl_issuer(chain: list[x509.Certificate], i: int, store: _Store) -> x509.Certificate | None:
    cert = chain[i]
    if i + 1 < len(chain):
        return chain[i + 1]
    if _self_signed(cert):
        return cert
    for candidate in store.certs:
        if _is_issuer(cert, candidate):
            return candidate
    return None


def _crl_time_ok(crl: x509.CertificateRevocationList, when: dt.datetime | None) -> bool:
    if when is None:
        return True
    nxt = crl.next_update_utc
    return crl.last_update_utc <= when and (nxt is None or when <= nxt)


def _check_revocation(chain: list[x509.Certificate], store: _Store, when: dt.datetime | None) -> None:
    for i, cert in enumerate(chain):
        candidates = [crl for crl in store.crls if crl.issuer == cert.issuer]
        if not candidates:
            raise _VerifyFail(E_UNABLE_TO_GET_CRL)
        valid = [crl for crl in candidates if _crl_time_ok(crl, when)]
        crl = max(valid or candidates, key=lambda c: c.last_update_utc)
        issuer = _crl_issuer(chain, i, store)
        if issuer is None:
            raise _VerifyFail(E_CRL_ISSUER)
        ku = _ext(issuer, x509.KeyUsage)
        if ku is not None and not ku.crl_sign:
            raise _VerifyFail(E_NO_CRL_SIGN)
        if when is not None:
            if crl.last_update_utc > when:
                raise _VerifyFail(E_CRL_NOT_YET_VALID)
            if crl.next_update_utc is not None and crl.next_update_utc < when:
                raise _VerifyFail(E_CRL_EXPIRED)
        pub = issuer.public_key()
        try:
            ok = crl.is_signature_valid(pub)  # type: ignore[arg-type]
        except (TypeError, UnsupportedAlgorithm, ValueError):
            ok = False
        if not ok:
            raise _VerifyFail(E_CRL_SIGNATURE)
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise _VerifyFail(E_REVOKED)


def _check_signatures_and_times(chain: list[x509.Certificate], when: dt.datetime | None) -> None:
    for i in range(len(chain) - 1, -1, -1):
        cert = chain[i]
        if i + 1 < len(chain):
            try:
                cert.verify_directly_issued_by(chain[i + 1])
            except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise _VerifyFail(E_CERT_SIGNATURE) from exc
        if when is not None:
            if cert.not_valid_before_utc > when:
                raise _VerifyFail(E_NOT_YET_VALID)
            if cert.not_valid_after_utc < when:
                raise _VerifyFail(E_EXPIRED)


def _verify_chain(leaf: x509.Certificate, untrusted: Sequence[x509.Certificate], store: _Store,
                  keyring: Keyring, purpose: str, at: dt.datetime | None) -> list[x509.Certificate]:
    when: dt.datetime | None = None
    if not keyring.no_check_time:
        when = utc(at) if at is not None else dt.datetime.now(dt.UTC)
    chain, _num_untrusted = _build_chain(leaf, untrusted, store.certs, keyring.allow_partial_chain, when)
    _check_extensions(chain, purpose)
    if keyring.check_crl:
        _check_revocation(chain, store, when)
    _check_signatures_and_times(chain, when)
    return chain

