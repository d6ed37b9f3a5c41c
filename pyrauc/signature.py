"""CMS SignedData signing and verification with RAUC's keyring policy (rauc.md section 3).

Signing builds, with asn1crypto, the same structure as OpenSSL's
``CMS_sign(cert, key, intermediates, data, CMS_BINARY | CMS_NOSMIMECAP [| CMS_DETACHED])``:
SignedData v1, sha256, eContentType id-data, certificates = signer + intermediates (DER-sorted
like OpenSSL's SET OF encoder), one SignerInfo v1 (issuerAndSerialNumber) with the signed
attributes contentType, signingTime, messageDigest. The signature is made by calling
``key.sign(...)`` on the DER of the signed attributes, so PKCS#11 keys duck-typing cryptography's
API work as well.

Verification follows OpenSSL's ``CMS_verify`` order: certificate chain of the signer against the
keyring (the CMS certificates are untrusted intermediates), then the signature over the signed
attributes, then the message digest of the (attached or streamed detached) content. The X.509 path
validation is implemented here after OpenSSL's ``X509_verify_cert`` (trusted-first issuer lookup,
partial chains, purposes, CRLs, ``no_check_time``) because cryptography's webpki verifier cannot
express those options nor report OpenSSL's reasons; the individual signature checks use
cryptography (``verify_directly_issued_by``, ``is_signature_valid``, public-key ``verify``).
Failure messages carry OpenSSL 3.0's reason strings as RAUC 1.8 prints them, e.g.
"signature verification failed: Verify error: unable to get local issuer certificate".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import algos, cms, core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyrauc.errors import SignatureError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SHA256_ALG = bytes.fromhex("300b0609608648016503040201")  # AlgorithmIdentifier sha256, no params

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
# OpenSSL 3.0 error queue texts RAUC 1.8 prints for CMS-level failures
E_CMS_VERIFICATION_FAILURE = "error:1700009E:CMS routines::verification failure"
E_RSA_INVALID_PADDING = "error:0200008A:rsa routines::invalid padding"

_MAX_DEPTH = 100

CONTENT_TYPE_SHORT_NAMES = {  # OpenSSL short names of CMS content types
    "1.2.840.113549.1.7.1": "pkcs7-data",
    "1.2.840.113549.1.7.2": "pkcs7-signedData",
    "1.2.840.113549.1.7.3": "pkcs7-envelopedData",
    "1.2.840.113549.1.7.4": "pkcs7-signedAndEnvelopedData",
    "1.2.840.113549.1.7.5": "pkcs7-digestData",
    "1.2.840.113549.1.7.6": "pkcs7-encryptedData",
    "1.2.840.113549.1.9.16.1.2": "id-smime-ct-authData",
    "1.2.840.113549.1.9.16.1.9": "id-smime-ct-compressedData",
    "1.2.840.113549.1.9.16.1.23": "id-smime-ct-authEnvelopedData",
}
_OID_TYPE = {
    "1.2.840.113549.1.7.1": "data",
    "1.2.840.113549.1.7.2": "signedData",
    "1.2.840.113549.1.7.3": "envelopedData",
    "1.2.840.113549.1.7.4": "signedAndEnvelopedData",
    "1.2.840.113549.1.7.5": "digestedData",
    "1.2.840.113549.1.7.6": "encryptedData",
    "1.2.840.113549.1.9.16.1.2": "authData",
    "1.2.840.113549.1.9.16.1.9": "compressedData",
    "1.2.840.113549.1.9.16.1.23": "authEnvelopedData",
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}

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


@dataclass
class Verified:
    """Result of a successful :func:`cms_verify`."""

    content: bytes | None
    signer: x509.Certificate
    chain: list[x509.Certificate]   # leaf .. anchor
    signing_time: dt.datetime | None


class _VerifyFail(Exception):
    """Internal: a certificate verification error (OpenSSL reason text)."""


# --------------------------------------------------------------------------- helpers


def _fail(reason: str) -> SignatureError:
    return SignatureError(f"signature verification failed: {reason}")


def _parse_content_info(der: bytes) -> cms.ContentInfo:
    try:
        ci = cms.ContentInfo.load(der)
        ci["content_type"].dotted  # noqa: B018 - forces parsing
        return ci
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"Failed to parse CMS: {exc}") from exc


def _signed_data(der: bytes) -> cms.SignedData:
    ci = _parse_content_info(der)
    oid = ci["content_type"].dotted
    if oid != "1.2.840.113549.1.7.2":
        raise SignatureError(
            f"Expected CMS of type 'pkcs7-signedData' but got '{CONTENT_TYPE_SHORT_NAMES.get(oid, oid)}'")
    try:
        sd = ci["content"]
        sd["version"].native  # noqa: B018 - forces parsing
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"Failed to parse CMS: {exc}") from exc
    if not isinstance(sd, cms.SignedData):
        raise SignatureError("Failed to parse CMS: no SignedData content")
    return sd


def _digest_stream(path: Path | str, size: int | None, algo: hashes.HashAlgorithm) -> bytes:
    h = hashes.Hash(algo)
    try:
        with open(path, "rb") as f:
            remaining = size if size is not None else os.fstat(f.fileno()).st_size
            while remaining > 0:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    raise SignatureError(f"failed to read detached content from '{path}': file too short")
                h.update(chunk)
                remaining -= len(chunk)
    except OSError as exc:
        raise SignatureError(f"failed to read detached content from '{path}': {exc.strerror}") from exc
    return h.finalize()


def _digest_bytes(data: bytes, algo: hashes.HashAlgorithm) -> bytes:
    h = hashes.Hash(algo)
    h.update(data)
    return h.finalize()


def _to_asn1_cert(cert: x509.Certificate) -> ax509.Certificate:
    return ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _time_choice(when: dt.datetime) -> cms.Time:
    when = _utc(when).astimezone(dt.UTC).replace(microsecond=0)
    if 1950 <= when.year < 2050:
        return cms.Time({"utc_time": when})
    return cms.Time({"generalized_time": when})


def _sort_der(items: Iterable[core.Asn1Value]) -> list[core.Asn1Value]:
    """Order SET OF members like a DER encoder (OpenSSL's i2d sorts SET OF by encoding)."""
    return sorted(items, key=lambda item: item.dump())


def _signed_attrs_der(attrs: cms.CMSAttributes) -> bytes:
    """The DER that the signature covers: the [0] IMPLICIT attributes re-tagged as SET."""
    encoded = attrs.dump()
    return b"\x31" + encoded[1:]


def _public_key_matches(cert: x509.Certificate, key: Any) -> bool:
    try:
        pub = key.public_key()
        mine = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:  # duck-typed keys may not expose it; let the signature check decide
        return True
    theirs = cert.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(mine == theirs)


def _make_signer_info(cert: x509.Certificate, key: Any, digest: bytes,
                      signing_time: dt.datetime | None) -> cms.SignerInfo:
    if not _public_key_matches(cert, key):
        raise SignatureError("failed to create signature: private key does not match certificate")
    acert = _to_asn1_cert(cert)
    when = signing_time if signing_time is not None else dt.datetime.now(dt.UTC)
    attrs = _sort_der([
        cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        cms.CMSAttribute({"type": "signing_time", "values": [_time_choice(when)]}),
        cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
    ])
    signed_attrs = cms.CMSAttributes(attrs)
    to_sign = b"\x31" + signed_attrs.dump()[1:]
    pub = cert.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
            sig_alg = cms.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()})
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            signature = key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
            sig_alg = cms.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"})
        else:
            raise SignatureError(
                f"failed to create signature: unsupported key type {type(pub).__name__}")
    except SignatureError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SignatureError(f"failed to create signature: {reason}") from exc
    return cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": acert.issuer, "serial_number": acert.serial_number})}),
        "digest_algorithm": algos.DigestAlgorithm.load(_SHA256_ALG),
        "signed_attrs": signed_attrs,
        "signature_algorithm": sig_alg,
        "signature": signature,
    })


def _cert_choices(certs: Iterable[x509.Certificate]) -> list[cms.CertificateChoices]:
    seen: set[bytes] = set()
    out = []
    for cert in certs:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der in seen:
            continue
        seen.add(der)
        out.append(cms.CertificateChoices({"certificate": ax509.Certificate.load(der)}))
    return _sort_der(out)


# --------------------------------------------------------------------------- signing


def cms_sign(content: bytes | None, *, cert: x509.Certificate, key: Any,
             intermediates: Sequence[x509.Certificate] = (), detached_path: Path | str | None = None,
             detached_size: int | None = None, signing_time: dt.datetime | None = None) -> bytes:
    """Sign ``content`` (attached) or the first ``detached_size`` bytes of ``detached_path``.

    Returns the DER of a CMS ContentInfo/SignedData equivalent to OpenSSL's
    ``CMS_sign(BINARY|NOSMIMECAP[|DETACHED])`` with sha256. ``signing_time`` defaults to now.
    """
    if (content is None) == (detached_path is None):
        raise SignatureError("failed to create signature: give either content or a detached file")
    if content is not None:
        digest = _digest_bytes(content, hashes.SHA256())
    else:
        assert detached_path is not None
        digest = _digest_stream(detached_path, detached_size, hashes.SHA256())
    signer_info = _make_signer_info(cert, key, digest, signing_time)
    encap: dict[str, Any] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    sd = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm.load(_SHA256_ALG)],
        "encap_content_info": cms.ContentInfo(encap),
        "certificates": _cert_choices([cert, *intermediates]),
        "signer_infos": [signer_info],
    })
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": sd}).dump())


def cms_add_signer(der: bytes, *, cert: x509.Certificate, key: Any,
                   intermediates: Sequence[x509.Certificate] = (),
                   signing_time: dt.datetime | None = None) -> bytes:
    """Add a SignerInfo to an existing SignedData (``rauc resign --append``).

    Like OpenSSL's ``CMS_add1_signer(.., CMS_BINARY|CMS_NOSMIMECAP|CMS_REUSE_DIGEST)``: the sha256
    messageDigest of an existing signer is reused (so detached signatures can be extended without
    the content); for attached content without such a signer the digest is computed.
    """
    sd = _signed_data(der)
    digest: bytes | None = None
    for si in sd["signer_infos"]:
        if si["digest_algorithm"]["algorithm"].native != "sha256" or not si["signed_attrs"]:
            continue
        for attr in si["signed_attrs"]:
            if attr["type"].native == "message_digest":
                digest = attr["values"][0].native
                break
        if digest is not None:
            break
    if digest is None:
        econtent = sd["encap_content_info"]["content"]
        if econtent.native is None:
            raise SignatureError("failed to add signer: no sha256 signer to reuse the digest from")
        digest = _digest_bytes(econtent.native, hashes.SHA256())
    new_si = _make_signer_info(cert, key, digest, signing_time)
    existing = [x509.load_der_x509_certificate(c.chosen.dump())
                for c in (sd["certificates"] or []) if c.name == "certificate"]
    others = [c for c in (sd["certificates"] or []) if c.name != "certificate"]
    digest_algs = list(sd["digest_algorithms"])
    if not any(a.dump() == _SHA256_ALG or a["algorithm"].native == "sha256" for a in digest_algs):
        digest_algs.append(algos.DigestAlgorithm.load(_SHA256_ALG))
    new_sd = cms.SignedData({
        "version": sd["version"].native,
        "digest_algorithms": _sort_der(digest_algs),
        "encap_content_info": sd["encap_content_info"].copy(),
        "certificates": _sort_der([*_cert_choices([*existing, cert, *intermediates]),
                                   *(o.copy() for o in others)]),
        "signer_infos": _sort_der([*(s.copy() for s in sd["signer_infos"]), new_si]),
    })
    if sd["crls"]:
        new_sd["crls"] = sd["crls"].copy()
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": new_sd}).dump())


# --------------------------------------------------------------------------- inspection


def cms_type(der: bytes) -> str:
    """Content type of a CMS ContentInfo: "signedData", "envelopedData", ... (dotted OID if unknown)."""
    oid = _parse_content_info(der)["content_type"].dotted
    return _OID_TYPE.get(oid, oid)


def cms_content(der: bytes) -> bytes | None:
    """The encapsulated content of a SignedData (None if detached), without verification."""
    sd = _signed_data(der)
    value = sd["encap_content_info"]["content"]
    if value.native is None:
        return None
    return bytes(value.native) if not isinstance(value.native, bytes) else value.native


def cms_certificates(der: bytes) -> list[x509.Certificate]:
    """The certificates carried in a SignedData (in their encoded order)."""
    sd = _signed_data(der)
    try:
        return [x509.load_der_x509_certificate(c.chosen.dump())
                for c in (sd["certificates"] or []) if c.name == "certificate"]
    except ValueError as exc:
        raise SignatureError(f"Failed to parse CMS: {exc}") from exc


def _signing_time(si: cms.SignerInfo) -> dt.datetime | None:
    attrs = si["signed_attrs"]
    if not attrs:
        return None
    for attr in attrs:
        if attr["type"].native == "signing_time":
            value = attr["values"][0].native
            return _utc(value) if isinstance(value, dt.datetime) else None
    return None


# --------------------------------------------------------------------------- keyring


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


def _parse_store_file(data: bytes) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    certs = x509.load_pem_x509_certificates(data) if b"-----BEGIN CERTIFICATE-----" in data else []
    crls = [x509.load_pem_x509_crl(block) for block in _split_pem(data, b"X509 CRL")]
    return certs, crls


@dataclass
class _Store:
    certs: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList]


def _load_store(keyring: Keyring) -> _Store:
    if keyring.path is None and keyring.directory is None:
        raise SignatureError("No keyring file or directory provided")
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    try:
        if keyring.path is not None:
            c, r = _parse_store_file(Path(keyring.path).read_bytes())
            certs += c
            crls += r
        if keyring.directory is not None:
            for entry in sorted(Path(keyring.directory).iterdir()):
                if not entry.is_file():
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


def verify_cert_chain(leaf: x509.Certificate, untrusted: Sequence[x509.Certificate], keyring: Keyring, *,
                      at: dt.datetime | None = None) -> list[x509.Certificate]:
    """Verify ``leaf`` against the keyring like OpenSSL's X509_verify_cert; return leaf..anchor.

    ``at`` is the verification time (default now; ignored with ``keyring.no_check_time``).
    Raises :class:`SignatureError` "Verify error: <OpenSSL reason>".
    """
    store = _load_store(keyring)
    purpose = _purpose_name(keyring.check_purpose)
    try:
        return _verify_chain(leaf, untrusted, store, keyring, purpose, at)
    except _VerifyFail as exc:
        raise SignatureError(f"Verify error: {exc}") from exc


def _verify_chain(leaf: x509.Certificate, untrusted: Sequence[x509.Certificate], store: _Store,
                  keyring: Keyring, purpose: str, at: dt.datetime | None) -> list[x509.Certificate]:
    when: dt.datetime | None = None
    if not keyring.no_check_time:
        when = _utc(at) if at is not None else dt.datetime.now(dt.UTC)
    chain, _num_untrusted = _build_chain(leaf, untrusted, store.certs, keyring.allow_partial_chain, when)
    _check_extensions(chain, purpose)
    if keyring.check_crl:
        _check_revocation(chain, store, when)
    _check_signatures_and_times(chain, when)
    return chain


# --------------------------------------------------------------------------- verification


def _find_signer_cert(si: cms.SignerInfo, certs: Sequence[x509.Certificate]) -> x509.Certificate | None:
    sid = si["sid"]
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        serial = sid.chosen["serial_number"].native
        for cert in certs:
            if cert.serial_number == serial and _to_asn1_cert(cert).issuer == issuer:
                return cert
        return None
    keyid = sid.chosen.native
    for cert in certs:
        ski = _ski(cert)
        if ski is None:
            ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
        if ski == keyid:
            return cert
    return None


def _verify_signer_signature(si: cms.SignerInfo, cert: x509.Certificate, data: bytes,
                             prehashed: bool) -> None:
    """Check the SignerInfo signature over ``data`` (signed attrs DER, or the content digest)."""
    digest_name = si["digest_algorithm"]["algorithm"].native
    hash_cls = _HASHES.get(digest_name)
    if hash_cls is None:
        raise _fail(f"unsupported digest algorithm {digest_name}")
    algo: hashes.HashAlgorithm = hash_cls()
    halg: Any = utils.Prehashed(algo) if prehashed else algo
    sig_alg = si["signature_algorithm"]
    sig_name = sig_alg["algorithm"].native
    signature = si["signature"].native
    pub = cert.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            if sig_name == "rsassa_pss":
                params = sig_alg["parameters"]
                pss_hash = _HASHES[params["hash_algorithm"]["algorithm"].native]()
                mgf_hash = _HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]()
                pad: padding.AsymmetricPadding = padding.PSS(padding.MGF1(mgf_hash),
                                                             params["salt_length"].native)
                if pss_hash.name != algo.name:
                    raise InvalidSignature()
            else:
                pad = padding.PKCS1v15()
            try:
                pub.verify(signature, data, pad, halg)
            except InvalidSignature:
                raise _fail(E_RSA_INVALID_PADDING) from None
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(signature, data, ec.ECDSA(halg))
        elif isinstance(pub, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) and not prehashed:
            pub.verify(signature, data)
        else:
            raise _fail("unsupported signer key type")
    except (InvalidSignature, KeyError, ValueError, UnsupportedAlgorithm) as exc:
        raise _fail(E_CMS_VERIFICATION_FAILURE) from exc


def cms_verify(der: bytes, keyring: Keyring, *, detached_path: Path | str | None = None,
               detached_size: int | None = None, at: dt.datetime | None = None) -> Verified:
    """Verify a SignedData against ``keyring``; attached, or detached over the file's first bytes.

    Order and failures as OpenSSL's CMS_verify + RAUC's checks (see the module docstring).
    ``at`` overrides the verification time (default now).
    """
    store = _load_store(keyring)
    purpose = _purpose_name(keyring.check_purpose)
    sd = _signed_data(der)
    try:
        signer_infos = list(sd["signer_infos"])
        certs = [x509.load_der_x509_certificate(c.chosen.dump())
                 for c in (sd["certificates"] or []) if c.name == "certificate"]
        econtent = sd["encap_content_info"]["content"].native
        econtent_type = sd["encap_content_info"]["content_type"].dotted
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"Failed to parse CMS: {exc}") from exc

    signing_time = _signing_time(signer_infos[0]) if len(signer_infos) == 1 else None
    when = at
    if keyring.use_bundle_signing_time:
        if len(signer_infos) > 1:
            raise SignatureError("multiple signerInfos are not supported with 'use-bundle-signing-time'")
        if signing_time is None:
            raise SignatureError("Bundle signing time attribute not found in signature")
        log.info("Using bundle signing time (%s) for certificate verification.", signing_time)
        when = signing_time
    if len(signer_infos) != 1:
        raise SignatureError(f"Unsupported number of signers: {len(signer_infos)}")
    si = signer_infos[0]

    if econtent is not None and detached_path is not None:
        raise _fail("content and data present")
    if econtent is None and detached_path is None:
        raise _fail("no content")
    if econtent is not None and not isinstance(econtent, bytes):
        econtent = sd["encap_content_info"]["content"].contents

    signer = _find_signer_cert(si, certs)
    if signer is None:
        raise _fail("signer certificate not found")
    try:
        chain = _verify_chain(signer, certs, store, keyring, purpose, when)
    except _VerifyFail as exc:
        raise _fail(f"Verify error: {exc}") from exc

    digest_name = si["digest_algorithm"]["algorithm"].native
    hash_cls = _HASHES.get(digest_name)
    if hash_cls is None:
        raise _fail(f"unsupported digest algorithm {digest_name}")
    attrs = si["signed_attrs"]
    if attrs:
        _verify_signer_signature(si, signer, _signed_attrs_der(attrs), prehashed=False)
        digest_attr = None
        ctype_attr = None
        for attr in attrs:
            if attr["type"].native == "message_digest":
                digest_attr = attr["values"][0].native
            elif attr["type"].native == "content_type":
                ctype_attr = attr["values"][0].dotted
        if digest_attr is None:
            raise _fail(E_CMS_VERIFICATION_FAILURE)
        if ctype_attr is not None and ctype_attr != econtent_type:
            raise _fail("content type mismatch")
        actual = (_digest_bytes(econtent, hash_cls()) if econtent is not None
                  else _digest_stream(detached_path, detached_size, hash_cls()))  # type: ignore[arg-type]
        if actual != digest_attr:
            raise _fail(E_CMS_VERIFICATION_FAILURE)
    else:
        actual = (_digest_bytes(econtent, hash_cls()) if econtent is not None
                  else _digest_stream(detached_path, detached_size, hash_cls()))  # type: ignore[arg-type]
        _verify_signer_signature(si, signer, actual, prehashed=True)

    if keyring.allowed_signer_cns is not None:
        cns = [str(a.value) for a in signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if not any(cn in keyring.allowed_signer_cns for cn in cns):
            raise SignatureError("No signature CN matching allowed-signer-cns found")
    return Verified(econtent, signer, chain, signing_time)


def expiry_warnings(chain: Sequence[x509.Certificate], now: dt.datetime | None = None) -> list[str]:
    """RAUC's post-signing warnings for chain certificates expiring within 30 days."""
    when = _utc(now) if now is not None else dt.datetime.now(dt.UTC)
    limit = when + dt.timedelta(days=30)
    return [f"Certificate {i} ({format_name(cert.subject)}) will expire in less than a month!"
            for i, cert in enumerate(chain) if cert.not_valid_after_utc < limit]


# --------------------------------------------------------------------------- formatting

SHORT_NAMES = {  # OpenSSL short names of X.509 name attributes
    "2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "serialNumber", "2.5.4.6": "C", "2.5.4.7": "L",
    "2.5.4.8": "ST", "2.5.4.9": "street", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "title",
    "2.5.4.13": "description", "2.5.4.17": "postalCode", "2.5.4.42": "GN", "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier", "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym",
    "2.5.4.97": "organizationIdentifier", "2.5.4.15": "businessCategory", "2.5.4.41": "name",
    "1.2.840.113549.1.9.1": "emailAddress", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID", "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST", "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
}
_RFC2253_SPECIAL = set(',+;<>')


def escape_name_value(value: str) -> str:
    """Escape like OpenSSL's do_buf() with ASN1_STRFLGS_RFC2253 | ASN1_STRFLGS_ESC_QUOTE."""
    out: list[str] = []
    quote = False
    chars = list(value)
    for idx, ch in enumerate(chars):
        code = ord(ch)
        if code > 0x7F:
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8"))
            continue
        first, last = idx == 0, idx == len(chars) - 1
        if ch in _RFC2253_SPECIAL or (ch == " " and (first or last)) or (ch == "#" and first):
            quote = True
            out.append(ch)
        elif ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\{code:02X}")
        else:
            out.append(ch)
    text = "".join(out)
    return f'"{text}"' if quote else text


def _attr_value(attr: x509.NameAttribute[Any]) -> str:
    value = attr.value
    if isinstance(value, bytes):
        return "#" + value.hex().upper()
    return escape_name_value(value)


def format_name(name: x509.Name) -> str:
    """An X.509 name as OpenSSL's XN_FLAG_ONELINE prints it ("O = Test Org, CN = signer")."""
    rdns = []
    for rdn in name.rdns:
        parts = [f"{SHORT_NAMES.get(a.oid.dotted_string, a.oid.dotted_string)} = {_attr_value(a)}" for a in rdn]
        rdns.append(" + ".join(parts))
    return ", ".join(rdns)


def _format_name_compat(name: x509.Name) -> str:
    """X509_NAME_print() style used by X509_print ("O=Test Org, CN=signer")."""
    parts = []
    for rdn in name.rdns:
        for a in rdn:
            value = a.value.hex() if isinstance(a.value, bytes) else a.value
            parts.append(f"{SHORT_NAMES.get(a.oid.dotted_string, a.oid.dotted_string)}={value}")
    return ", ".join(parts)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_time(when: dt.datetime) -> str:
    """OpenSSL ASN1_TIME_print() format: "Jan  1 00:00:00 1970 GMT"."""
    when = _utc(when).astimezone(dt.UTC)
    return (f"{_MONTHS[when.month - 1]} {when.day:2d} {when.hour:02d}:{when.minute:02d}:"
            f"{when.second:02d} {when.year} GMT")


def spki_sha256(cert: x509.Certificate) -> str:
    """Colon-separated uppercase hex sha256 of the DER SubjectPublicKeyInfo."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(spki).digest())


def format_cert_chain(chain: Sequence[x509.Certificate]) -> str:
    """The body of RAUC's "Certificate Chain:" block (one entry per certificate, leaf first)."""
    lines = []
    for i, cert in enumerate(chain):
        lines += [
            f"{i:2d} Subject: {format_name(cert.subject)}",
            f"   Issuer: {format_name(cert.issuer)}",
            f"   SPKI sha256: {spki_sha256(cert)}",
            f"   Not Before: {format_time(cert.not_valid_before_utc)}",
            f"   Not After:  {format_time(cert.not_valid_after_utc)}",
        ]
    return "".join(line + "\n" for line in lines)


def _hex_block(data: bytes, indent: int, per_line: int) -> list[str]:
    pairs = [f"{b:02x}" for b in data]
    lines = []
    for start in range(0, len(pairs), per_line):
        chunk = pairs[start:start + per_line]
        end = "" if start + per_line >= len(pairs) else ":"
        lines.append(" " * indent + ":".join(chunk) + end)
    return lines


def _int_bytes(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return b"\x00" + raw if raw[0] & 0x80 else raw


_SIG_NAMES = {
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption", "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption", "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.10": "rsassaPss", "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384", "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.3.101.112": "ED25519", "1.3.101.113": "ED448",
}
_CURVES = {"secp256r1": ("prime256v1", "P-256"), "secp384r1": ("secp384r1", "P-384"),
           "secp521r1": ("secp521r1", "P-521")}
_EXT_NAMES = {
    "2.5.29.19": "X509v3 Basic Constraints", "2.5.29.14": "X509v3 Subject Key Identifier",
    "2.5.29.35": "X509v3 Authority Key Identifier", "2.5.29.15": "X509v3 Key Usage",
    "2.5.29.37": "X509v3 Extended Key Usage", "2.5.29.17": "X509v3 Subject Alternative Name",
    "2.5.29.31": "X509v3 CRL Distribution Points", "2.5.29.32": "X509v3 Certificate Policies",
    "2.5.29.30": "X509v3 Name Constraints", "1.3.6.1.5.5.7.1.1": "Authority Information Access",
}
_EKU_NAMES = {
    "1.3.6.1.5.5.7.3.1": "TLS Web Server Authentication",
    "1.3.6.1.5.5.7.3.2": "TLS Web Client Authentication",
    "1.3.6.1.5.5.7.3.3": "Code Signing", "1.3.6.1.5.5.7.3.4": "E-mail Protection",
    "1.3.6.1.5.5.7.3.8": "Time Stamping", "1.3.6.1.5.5.7.3.9": "OCSP Signing",
    "2.5.29.37.0": "Any Extended Key Usage",
}
_KU_NAMES = (("digital_signature", "Digital Signature"), ("content_commitment", "Non Repudiation"),
             ("key_encipherment", "Key Encipherment"), ("data_encipherment", "Data Encipherment"),
             ("key_agreement", "Key Agreement"), ("key_cert_sign", "Certificate Sign"),
             ("crl_sign", "CRL Sign"), ("encipher_only", "Encipher Only"), ("decipher_only", "Decipher Only"))


def _ext_lines(ext: x509.Extension[Any]) -> list[str]:
    value = ext.value
    pad = " " * 16
    if isinstance(value, x509.BasicConstraints):
        text = "CA:TRUE" if value.ca else "CA:FALSE"
        if value.path_length is not None:
            text += f", pathlen:{value.path_length}"
        return [pad + text]
    if isinstance(value, x509.SubjectKeyIdentifier):
        return [pad + ":".join(f"{b:02X}" for b in value.digest)]
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return [pad + ":".join(f"{b:02X}" for b in value.key_identifier or b"")]
    if isinstance(value, x509.KeyUsage):
        names = []
        for attr, label in _KU_NAMES:
            try:
                if getattr(value, attr):
                    names.append(label)
            except ValueError:
                continue
        return [pad + ", ".join(names)]
    if isinstance(value, x509.ExtendedKeyUsage):
        return [pad + ", ".join(_EKU_NAMES.get(o.dotted_string, o.dotted_string) for o in value)]
    if isinstance(value, x509.SubjectAlternativeName):
        parts = []
        for gn in value:
            if isinstance(gn, x509.DNSName):
                parts.append(f"DNS:{gn.value}")
            elif isinstance(gn, x509.RFC822Name):
                parts.append(f"email:{gn.value}")
            elif isinstance(gn, x509.UniformResourceIdentifier):
                parts.append(f"URI:{gn.value}")
            else:
                parts.append(str(gn.value))
        return [pad + ", ".join(parts)]
    raw = value.public_bytes() if hasattr(value, "public_bytes") else b""
    return _hex_block(raw, 16, 18) if raw else [pad + "<unsupported>"]


def dump_cert(cert: x509.Certificate) -> str:
    """Text like OpenSSL's X509_print() (``rauc info --dump-cert``); an approximation for rare
    extensions and key types."""
    lines = ["Certificate:", "    Data:"]
    version = 1 if cert.version == x509.Version.v1 else 3
    lines.append(f"        Version: {version} (0x{version - 1:x})")
    serial = cert.serial_number
    if 0 <= serial < 2**63:
        lines.append(f"        Serial Number: {serial} (0x{serial:x})")
    else:
        lines.append("        Serial Number:")
        raw = _int_bytes(abs(serial))
        if raw[0] == 0 and len(raw) > 1:
            raw = raw[1:]
        prefix = "(Negative)" if serial < 0 else ""
        lines.append("            " + prefix + ":".join(f"{b:02x}" for b in raw))
    sig_name = _SIG_NAMES.get(cert.signature_algorithm_oid.dotted_string,
                              cert.signature_algorithm_oid.dotted_string)
    lines.append(f"        Signature Algorithm: {sig_name}")
    lines.append(f"        Issuer: {_format_name_compat(cert.issuer)}")
    lines.append("        Validity")
    lines.append(f"            Not Before: {format_time(cert.not_valid_before_utc)}")
    lines.append(f"            Not After : {format_time(cert.not_valid_after_utc)}")
    lines.append(f"        Subject: {_format_name_compat(cert.subject)}")
    lines.append("        Subject Public Key Info:")
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        lines.append("            Public Key Algorithm: rsaEncryption")
        lines.append(f"                Public-Key: ({pub.key_size} bit)")
        lines.append("                Modulus:")
        lines += _hex_block(_int_bytes(nums.n), 20, 15)
        lines.append(f"                Exponent: {nums.e} (0x{nums.e:x})")
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        lines.append("            Public Key Algorithm: id-ecPublicKey")
        lines.append(f"                Public-Key: ({pub.curve.key_size} bit)")
        lines.append("                pub:")
        lines += _hex_block(point, 20, 15)
        oid_name, nist = _CURVES.get(pub.curve.name, (pub.curve.name, ""))
        lines.append(f"                ASN1 OID: {oid_name}")
        if nist:
            lines.append(f"                NIST CURVE: {nist}")
    else:
        lines.append(f"            Public Key Algorithm: {type(pub).__name__}")
    if cert.extensions:
        lines.append("        X509v3 extensions:")
        for ext in cert.extensions:
            name = _EXT_NAMES.get(ext.oid.dotted_string, ext.oid.dotted_string)
            lines.append(f"            {name}: {'critical' if ext.critical else ''}".rstrip(" ")
                         + ("" if ext.critical else " "))
            lines += _ext_lines(ext)
    lines.append(f"    Signature Algorithm: {sig_name}")
    lines.append("    Signature Value:")
    lines += _hex_block(cert.signature, 8, 18)
    return "".join(line + "\n" for line in lines)
