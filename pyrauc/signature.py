"""CMS SignedData signing and verification (RAUC's src/signature.c).

Signing builds, with asn1crypto, the same structure as OpenSSL's
``CMS_sign(cert, key, intermediates, data, CMS_BINARY | CMS_NOSMIMECAP [| CMS_DETACHED])``:
SignedData v1, sha256, eContentType id-data, certificates = signer + intermediates (DER-sorted
like OpenSSL's SET OF encoder), one SignerInfo v1 (issuerAndSerialNumber) with the signed
attributes contentType, signingTime, messageDigest. The signature is made by calling
``key.sign(...)`` on the DER of the signed attributes, so PKCS#11 token keys (which implement
cryptography's key interfaces) work as well.

Verification follows OpenSSL's ``CMS_verify`` order: certificate chain of the signer against the
keyring (the CMS certificates are untrusted intermediates), then the signature over the signed
attributes, then the message digest of the (attached or streamed detached) content. The X.509 path
validation against the keyring is :mod:`pyrauc.keyring`'s, the OpenSSL-style names and
certificate dumps are :mod:`pyrauc.certformat`'s (:class:`Keyring`, :func:`format_name`,
:func:`format_cert_chain` and :func:`dump_cert` are re-exported here for the callers of this
module). Failure messages carry OpenSSL 3.0's reason strings as RAUC 1.8 prints them, e.g.
"signature verification failed: Verify error: unable to get local issuer certificate".
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from asn1crypto import algos, cms, core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils
from cryptography.x509.oid import NameOID

from pyrauc.certformat import content_type_name, dump_cert, format_cert_chain, format_name, utc
from pyrauc.der import normalize
from pyrauc.errors import SignatureError
from pyrauc.keyring import ChainVerifier, Keyring
from pyrauc.keys import PrivateKey, certificate_problem

__all__ = [
    "Keyring", "Verified", "cms_add_signer", "cms_certificates", "cms_content", "cms_sign", "cms_type",
    "cms_verify", "dump_cert", "expiry_warnings", "format_cert_chain", "format_name",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SHA256_ALG = bytes.fromhex("300b0609608648016503040201")  # AlgorithmIdentifier sha256, no params

# OpenSSL 3.0 error queue texts RAUC 1.8 prints for CMS-level failures
E_CMS_VERIFICATION_FAILURE = "error:1700009E:CMS routines::verification failure"
E_RSA_INVALID_PADDING = "error:0200008A:rsa routines::invalid padding"

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


@dataclass
class Verified:
    """Result of a successful :func:`cms_verify`."""

    content: bytes | None
    signer: x509.Certificate
    chain: list[x509.Certificate]   # leaf .. anchor
    signing_time: dt.datetime | None


# --------------------------------------------------------------------------- helpers


def _fail(reason: str) -> SignatureError:
    return SignatureError(f"signature verification failed: {reason}")


_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError,
                 x509.InvalidVersion)


def _load(der: bytes, full: bool) -> cms.ContentInfo:
    ci = cms.ContentInfo.load(der, strict=True)
    if full:
        ci.native  # noqa: B018 - asn1crypto parses lazily: find every error now, not somewhere later
    else:
        ci["content_type"].dotted  # noqa: B018
    return ci


def _parse_content_info(der: bytes, full: bool = False) -> cms.ContentInfo:
    """The ContentInfo of the DER (or BER, as OpenSSL reads it) ``der``; ``full``: every field
    parsed now. SignatureError("Failed to parse CMS") for anything else."""
    try:
        return _load(der, full)
    except _PARSE_ERRORS:
        pass
    try:
        return _load(normalize(der), full)
    except _PARSE_ERRORS as exc:
        log.debug("CMS parse error: %s", str(exc).replace("\n", " "))
        raise SignatureError("Failed to parse CMS") from None


def _signed_data(der: bytes) -> cms.SignedData:
    ci = _parse_content_info(der)
    oid = ci["content_type"].dotted
    if oid != "1.2.840.113549.1.7.2":
        raise SignatureError(
            f"Expected CMS of type 'pkcs7-signedData' but got '{content_type_name(oid)}'")
    sd = _parse_content_info(der, full=True)["content"]
    if not isinstance(sd, cms.SignedData):
        raise SignatureError("Failed to parse CMS")
    return sd


def _cms_certificates(sd: cms.SignedData) -> list[x509.Certificate]:
    """The certificates of ``sd``, each with the fields OpenSSL's d2i_X509 parses up front (names,
    validity, version) parsed now: cryptography reads them only when used. _PARSE_ERRORS if one
    does not parse."""
    certs = []
    for choice in sd["certificates"] or []:
        if choice.name != "certificate":
            continue
        cert = x509.load_der_x509_certificate(choice.chosen.dump())
        _ = (cert.version, cert.issuer, cert.subject, cert.not_valid_before_utc, cert.not_valid_after_utc)
        certs.append(cert)
    return certs


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


def _time_choice(when: dt.datetime) -> cms.Time:
    when = utc(when).astimezone(dt.UTC).replace(microsecond=0)
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


def _public_key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    try:
        pub = key.public_key()
        mine = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:  # duck-typed keys may not expose it; let the signature check decide
        return True
    theirs = cert.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(mine == theirs)


def _make_signer_info(cert: x509.Certificate, key: PrivateKey, digest: bytes,
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
    pub = cert.public_key()   # the key matches it (checked above): its type decides the algorithm
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            signature = cast(rsa.RSAPrivateKey, key).sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
            sig_alg = cms.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()})
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            signature = cast(ec.EllipticCurvePrivateKey, key).sign(to_sign, ec.ECDSA(hashes.SHA256()))
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


def cms_sign(content: bytes | None, *, cert: x509.Certificate, key: PrivateKey,
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


def cms_add_signer(der: bytes, *, cert: x509.Certificate, key: PrivateKey,
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
    try:
        existing = _cms_certificates(sd)
    except _PARSE_ERRORS:
        raise SignatureError("Failed to parse CMS") from None
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
        return _cms_certificates(sd)
    except _PARSE_ERRORS:
        raise SignatureError("Failed to parse CMS") from None


def _signing_time(si: cms.SignerInfo) -> dt.datetime | None:
    attrs = si["signed_attrs"]
    if not attrs:
        return None
    for attr in attrs:
        if attr["type"].native == "signing_time":
            value = attr["values"][0].native
            return utc(value) if isinstance(value, dt.datetime) else None
    return None


# --------------------------------------------------------------------------- verification


def _subject_key_id(cert: x509.Certificate) -> bytes:
    """The subjectKeyIdentifier, or the one RFC 5280 method 1 derives from the public key."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


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
        if _subject_key_id(cert) == keyid:
            return cert
    return None


#: signatureAlgorithm names (asn1crypto's) and the key type each needs
_SIGNATURE_ALGORITHMS: dict[str, type | tuple[type, ...]] = {
    **{name: rsa.RSAPublicKey for name in ("rsassa_pkcs1v15", "rsassa_pss", "sha1_rsa", "sha224_rsa",
                                           "sha256_rsa", "sha384_rsa", "sha512_rsa")},
    **{name: ec.EllipticCurvePublicKey for name in ("ecdsa", "sha1_ecdsa", "sha224_ecdsa", "sha256_ecdsa",
                                                    "sha384_ecdsa", "sha512_ecdsa")},
    "ed25519": ed25519.Ed25519PublicKey, "ed448": ed448.Ed448PublicKey,
}


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
    family = _SIGNATURE_ALGORITHMS.get(sig_name)
    if family is None or not isinstance(pub, family):
        # an unknown or mismatching algorithm is never taken for another one
        raise _fail(f"unsupported signature algorithm {sig_alg['algorithm'].dotted}")
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


@dataclass(frozen=True)
class _Content:
    """The signed content: attached (``data``) or the first ``size`` bytes of the file ``path``."""

    data: bytes | None
    type: str                  # eContentType OID
    path: Path | str | None
    size: int | None

    def digest(self, algo: hashes.HashAlgorithm) -> bytes:
        if self.data is not None:
            return _digest_bytes(self.data, algo)
        assert self.path is not None
        return _digest_stream(self.path, self.size, algo)


@dataclass(frozen=True)
class _Parsed:
    """What verification needs of a SignedData."""

    signer_infos: list[cms.SignerInfo]
    certs: list[x509.Certificate]
    content: _Content


def _parse_for_verify(der: bytes, detached_path: Path | str | None, detached_size: int | None) -> _Parsed:
    sd = _signed_data(der)
    try:
        signer_infos = list(sd["signer_infos"])
        certs = _cms_certificates(sd)
        econtent = sd["encap_content_info"]["content"].native
        econtent_type = sd["encap_content_info"]["content_type"].dotted
    except _PARSE_ERRORS:
        raise SignatureError("Failed to parse CMS") from None
    for cert in certs:
        problem = certificate_problem(cert)
        if problem is not None:
            raise _fail(f"invalid certificate ({format_name(cert.subject)}): {problem}")
    if econtent is not None and detached_path is not None:
        raise _fail("content and data present")
    if econtent is None and detached_path is None:
        raise _fail("no content")
    if econtent is not None and not isinstance(econtent, bytes):
        econtent = sd["encap_content_info"]["content"].contents
    return _Parsed(signer_infos, certs, _Content(econtent, econtent_type, detached_path, detached_size))


def _verify_signer(si: cms.SignerInfo, parsed: _Parsed, verifier: ChainVerifier, keyring: Keyring,
                   when: dt.datetime | None, signing_time: dt.datetime | None) -> Verified:
    """One SignerInfo: its certificate chains to ``keyring``, its signature covers the content."""
    signer = _find_signer_cert(si, parsed.certs)
    if signer is None:
        raise _fail("signer certificate not found")
    try:
        chain = verifier.verify(signer, parsed.certs, at=when)
    except SignatureError as exc:
        raise exc.prefixed("signature verification failed: ") from exc
    _check_signer_info(si, signer, parsed.content)
    if keyring.allowed_signer_cns is not None:
        cns = [str(a.value) for a in signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if not any(cn in keyring.allowed_signer_cns for cn in cns):
            raise SignatureError("No signature CN matching allowed-signer-cns found")
    return Verified(parsed.content.data, signer, chain, signing_time)


def cms_verify(der: bytes, keyring: Keyring, *, detached_path: Path | str | None = None,
               detached_size: int | None = None, at: dt.datetime | None = None) -> Verified:
    """Verify a SignedData against ``keyring``; attached, or detached over the file's first bytes.

    Order and failures as OpenSSL's CMS_verify + RAUC's checks (see the module docstring); like
    RAUC, a SignedData with more than one signer is refused ("Unsupported number of signers: N").
    ``at`` overrides the verification time (default now).
    """
    verifier = ChainVerifier(keyring)
    parsed = _parse_for_verify(der, detached_path, detached_size)
    signer_infos = parsed.signer_infos
    signing_time = _signing_time(signer_infos[0]) if len(signer_infos) == 1 else None
    when = _verification_time(keyring, signer_infos, signing_time, at)
    if len(signer_infos) != 1:
        raise SignatureError(f"Unsupported number of signers: {len(signer_infos)}")
    return _verify_signer(signer_infos[0], parsed, verifier, keyring, when, signing_time)


def cms_verify_signers(der: bytes, keyring: Keyring, *, detached_path: Path | str | None = None,
                       detached_size: int | None = None) -> list[Verified]:
    """Verify every signer of a SignedData against ``keyring`` (as OpenSSL's CMS_verify does).

    For ``resign --append``: pyrauc checks what it wrote, although bundles with several signers
    are refused where RAUC refuses them (see :func:`cms_verify`).
    """
    verifier = ChainVerifier(keyring)
    parsed = _parse_for_verify(der, detached_path, detached_size)
    return [_verify_signer(si, parsed, verifier, keyring, None, _signing_time(si)) for si in parsed.signer_infos]


def _verification_time(keyring: Keyring, signer_infos: Sequence[cms.SignerInfo], signing_time: dt.datetime | None,
                       at: dt.datetime | None) -> dt.datetime | None:
    """``at``, or the bundle's signing time with ``use_bundle_signing_time``."""
    if not keyring.use_bundle_signing_time:
        return at
    if len(signer_infos) > 1:
        raise SignatureError("multiple signerInfos are not supported with 'use-bundle-signing-time'")
    if signing_time is None:
        raise SignatureError("Bundle signing time attribute not found in signature")
    log.info("Using bundle signing time (%s) for certificate verification.", signing_time)
    return signing_time


def _check_signer_info(si: cms.SignerInfo, signer: x509.Certificate, content: _Content) -> None:
    """The signature (over the signed attributes, or the content digest) and the message digest."""
    digest_name = si["digest_algorithm"]["algorithm"].native
    hash_cls = _HASHES.get(digest_name)
    if hash_cls is None:
        raise _fail(f"unsupported digest algorithm {digest_name}")
    attrs = si["signed_attrs"]
    if not attrs:
        _verify_signer_signature(si, signer, content.digest(hash_cls()), prehashed=True)
        return
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
    if ctype_attr is not None and ctype_attr != content.type:
        raise _fail("content type mismatch")
    if content.digest(hash_cls()) != digest_attr:
        raise _fail(E_CMS_VERIFICATION_FAILURE)


def expiry_warnings(chain: Sequence[x509.Certificate], now: dt.datetime | None = None) -> list[str]:
    """RAUC's post-signing warnings for chain certificates expiring within 30 days."""
    when = utc(now) if now is not None else dt.datetime.now(dt.UTC)
    limit = when + dt.timedelta(days=30)
    return [f"Certificate {i} ({format_name(cert.subject)}) will expire in less than a month!"
            for i, cert in enumerate(chain) if cert.not_valid_after_utc < limit]


