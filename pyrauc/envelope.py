"""CMS EnvelopedData: encrypt a bundle's SignedData for many recipients, and decrypt it again.

The output is what OpenSSL's ``CMS_encrypt(certs, content, EVP_aes_256_cbc(), CMS_BINARY)`` builds
(``rauc encrypt``: RAUC's src/signature.c, "Bundle Encryption" in RAUC's documentation), so RAUC and
``openssl cms -decrypt`` read it:

* ContentInfo(envelopedData), EnvelopedData version 0 when every recipient is a version-0
  KeyTransRecipientInfo, else 2 (RFC 5652 6.1, as OpenSSL sets it); no originatorInfo.
* encryptedContentInfo: id-data, aes256-CBC with a 16-byte IV parameter, PKCS#7 padding.
* RSA recipient: KeyTransRecipientInfo, rsaEncryption (NULL parameters), PKCS#1 v1.5.
* EC recipient: one KeyAgreeRecipientInfo version 3 each, ephemeral-static ECDH with an originator
  key (id-ecPublicKey, parameters absent, uncompressed point; one per curve shared by its
  recipients, or as OpenSSL a fresh one per recipient: :class:`EcLayout`), no ukm,
  dhSinglePass-stdDH-sha1kdf-scheme with id-aes256-wrap; KEK = ANSI X9.63 KDF (SHA-1) over the
  shared secret with the DER ECC-CMS-SharedInfo of RFC 5753 as SharedInfo.
* Recipients are identified by issuerAndSerialNumber, or (``use_ski``) by subjectKeyIdentifier.
* recipientInfos is a DER SET OF, sorted by encoding like OpenSSL's encoder does.

The per-recipient structures are written by a small DER encoder here (much faster than building
asn1crypto objects for thousands of recipients); parsing uses asn1crypto.  Large recipient lists
are processed by a process pool, because cryptography holds the GIL for the EC work.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, ParamSpec, TypeVar, cast

from asn1crypto import cms as acms
from asn1crypto import core as acore
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from pyrauc.certformat import content_type_name, format_name_der
from pyrauc.errors import EnvelopeError
from pyrauc.keys import PrivateKey

Progress = Callable[[int, int], None]

__all__ = ["EcLayout", "Opened", "decrypt", "encrypt", "format_recipients", "open_envelope", "reencrypt"]

# --- OIDs --------------------------------------------------------------------------------------

OID_DATA = "1.2.840.113549.1.7.1"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_STDDH_SHA1KDF = "1.3.133.16.840.63.0.2"
OID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"

# Key-agreement schemes we can decrypt: OID -> KDF hash (cofactor variants equal for prime curves).
_KARI_KDF_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1.3.133.16.840.63.0.2": hashes.SHA1,     # dhSinglePass-stdDH-sha1kdf-scheme
    "1.3.133.16.840.63.0.3": hashes.SHA1,     # dhSinglePass-cofactorDH-sha1kdf-scheme
    "1.3.132.1.11.0": hashes.SHA224, "1.3.132.1.11.1": hashes.SHA256,
    "1.3.132.1.11.2": hashes.SHA384, "1.3.132.1.11.3": hashes.SHA512,
    "1.3.132.1.14.0": hashes.SHA224, "1.3.132.1.14.1": hashes.SHA256,
    "1.3.132.1.14.2": hashes.SHA384, "1.3.132.1.14.3": hashes.SHA512,
}
_WRAP_KEY_LENGTHS = {"2.16.840.1.101.3.4.1.5": 16, "2.16.840.1.101.3.4.1.25": 24, OID_AES256_WRAP: 32}
_CBC_KEY_LENGTHS = {"2.16.840.1.101.3.4.1.2": 16, "2.16.840.1.101.3.4.1.22": 24, OID_AES256_CBC: 32}

_ALGORITHM_NAMES = {
    OID_RSA_ENCRYPTION: "rsaEncryption",
    "1.2.840.113549.1.1.7": "rsaesOaep",
    "1.3.133.16.840.63.0.2": "dhSinglePass-stdDH-sha1kdf-scheme",
    "1.3.133.16.840.63.0.3": "dhSinglePass-cofactorDH-sha1kdf-scheme",
    "1.3.132.1.11.0": "dhSinglePass-stdDH-sha224kdf-scheme",
    "1.3.132.1.11.1": "dhSinglePass-stdDH-sha256kdf-scheme",
    "1.3.132.1.11.2": "dhSinglePass-stdDH-sha384kdf-scheme",
    "1.3.132.1.11.3": "dhSinglePass-stdDH-sha512kdf-scheme",
    "1.3.132.1.14.0": "dhSinglePass-cofactorDH-sha224kdf-scheme",
    "1.3.132.1.14.1": "dhSinglePass-cofactorDH-sha256kdf-scheme",
    "1.3.132.1.14.2": "dhSinglePass-cofactorDH-sha384kdf-scheme",
    "1.3.132.1.14.3": "dhSinglePass-cofactorDH-sha512kdf-scheme",
}

_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1, "secp521r1": ec.SECP521R1,
    "secp224r1": ec.SECP224R1, "secp256k1": ec.SECP256K1,
    "brainpoolP256r1": ec.BrainpoolP256R1, "brainpoolP384r1": ec.BrainpoolP384R1,
    "brainpoolP512r1": ec.BrainpoolP512R1,
}

# --- a minimal DER encoder ---------------------------------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _oid(dotted: str) -> bytes:
    return acore.ObjectIdentifier(dotted).dump()


def _int(value: int) -> bytes:
    return acore.Integer(value).dump()


_SEQ, _SET, _OCTET, _BITSTR = 0x30, 0x31, 0x04, 0x03
_DER_NULL = b"\x05\x00"
_ALG_RSA = _tlv(_SEQ, _oid(OID_RSA_ENCRYPTION) + _DER_NULL)
_ALG_EC_NO_PARAMS = _tlv(_SEQ, _oid(OID_EC_PUBLIC_KEY))
_ALG_AES256_WRAP = _tlv(_SEQ, _oid(OID_AES256_WRAP))   # OpenSSL writes no parameters
_ALG_KARI = _tlv(_SEQ, _oid(OID_STDDH_SHA1KDF) + _ALG_AES256_WRAP)
# ECC-CMS-SharedInfo {keyInfo aes256-wrap, suppPubInfo [2] = 256 bits} (RFC 5753 7.2)
_SHARED_INFO_AES256 = _tlv(_SEQ, _ALG_AES256_WRAP + _tlv(0xA2, _tlv(_OCTET, (256).to_bytes(4, "big"))))
_VERSION = {0: _int(0), 2: _int(2), 3: _int(3)}

# --- encryption --------------------------------------------------------------------------------

class EcLayout(enum.Enum):
    """How the KeyAgreeRecipientInfos (karis) of EC recipients are made; one kari per recipient in both.

    ``SHARED_KEY`` (pyrauc's default) uses one ephemeral key per curve as the originator key of all
    karis of that curve. Each recipient's key-encryption key still comes from ECDH with its own
    static key, exactly as for several RecipientEncryptedKeys in one kari (RFC 5652 6.2.2), so
    this saves the key generation (about a quarter of the elliptic-curve work of ``encrypt``), and
    a decryption without the recipient's certificate needs one ECDH per curve instead of one per
    recipient. rauc 1.8, ``openssl cms -decrypt`` and pyrauc decrypt it for every recipient, with
    or without the recipient's certificate; ``--dump-recipients`` lists every recipient; the size
    is RAUC's. ``PER_RECIPIENT`` is RAUC's (OpenSSL's ``CMS_encrypt``): a fresh ephemeral key per kari.

    Not made: several RecipientEncryptedKeys in ONE kari (a smaller envelope). OpenSSL without the
    recipient's certificate, as rauc 1.8 decrypts by default, tries only the first one of each kari.
    """

    SHARED_KEY = "shared-key"
    PER_RECIPIENT = "per-recipient"


class _Recipient(NamedTuple):
    """A recipient certificate reduced to what the (process pool) workers need; picklable."""

    kind: str       # "rsa" or "ec:<curve name>"
    key: bytes      # rsa: DER SubjectPublicKeyInfo; ec: the uncompressed point
    rid: bytes      # DER RecipientIdentifier (issuerAndSerialNumber, or subjectKeyIdentifier)

    @property
    def by_issuer_and_serial(self) -> bool:
        return self.rid[0] == _SEQ


_POOL_THRESHOLD = 1500      # below this a process pool costs more than it saves
_CHUNK = 250


def _cert_ski(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        raise EnvelopeError(
            f"Failed to encrypt: certificate '{_cert_subject(cert)}' has no subjectKeyIdentifier"
        ) from None


def _cert_subject(cert: x509.Certificate) -> str:
    try:
        return format_name_der(cert.subject.public_bytes())
    except Exception:   # pragma: no cover - only for the error text
        return cert.subject.rfc4514_string()


def _issuer_and_serial(cert: x509.Certificate) -> bytes:
    """DER IssuerAndSerialNumber taken verbatim from the certificate's TBS.

    TBSCertificate is ``SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, ... }``;
    its first elements are sliced out of the DER (cryptography checked it when loading the
    certificate), which is much cheaper than decoding the TBS for thousands of recipients.
    """
    tbs = _der_elements(_der_contents(cert.tbs_certificate_bytes))
    if tbs is None or len(tbs) < 4:    # pragma: no cover - cryptography parsed this TBS already
        raise EnvelopeError(f"Failed to encrypt: cannot parse the certificate of '{_cert_subject(cert)}'")
    first = 1 if tbs[0][0] == 0xA0 else 0
    serial, issuer = tbs[first], tbs[first + 2]
    return _tlv(_SEQ, issuer + serial)


def _prepare(cert: x509.Certificate, use_ski: bool) -> _Recipient:
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        rid = _tlv(0x80, _cert_ski(cert)) if use_ski else _issuer_and_serial(cert)
        spki = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return _Recipient("rsa", spki, rid)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        if pub.curve.name not in _CURVES:
            raise EnvelopeError(f"Failed to encrypt: unsupported curve {pub.curve.name} of "
                                f"'{_cert_subject(cert)}'")
        rid = _tlv(0xA0, _tlv(_OCTET, _cert_ski(cert))) if use_ski else _issuer_and_serial(cert)
        point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return _Recipient(f"ec:{pub.curve.name}", point, rid)
    raise EnvelopeError(f"Failed to encrypt: unsupported key type for recipient '{_cert_subject(cert)}' "
                        "(RSA or EC needed)")


def _ktri(recipient: _Recipient, cek: bytes) -> bytes:
    """DER KeyTransRecipientInfo (as a RecipientInfo) of an RSA recipient."""
    pub = serialization.load_der_public_key(recipient.key)
    assert isinstance(pub, rsa.RSAPublicKey)
    encrypted = pub.encrypt(cek, PKCS1v15())
    version = _VERSION[0] if recipient.by_issuer_and_serial else _VERSION[2]
    return _tlv(_SEQ, version + recipient.rid + _ALG_RSA + _tlv(_OCTET, encrypted))


def _originator(ephemeral: ec.EllipticCurvePrivateKey) -> bytes:
    """DER ``[0] originator``: the ephemeral public key (id-ecPublicKey, parameters absent)."""
    point = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)
    return _tlv(0xA0, _tlv(0xA1, _ALG_EC_NO_PARAMS + _tlv(_BITSTR, b"\x00" + point)))


def _kari(recipient: _Recipient, curve: ec.EllipticCurve, ephemeral: ec.EllipticCurvePrivateKey,
          originator: bytes, cek: bytes) -> bytes:
    """DER KeyAgreeRecipientInfo (as RecipientInfo [1]): ``cek`` wrapped with the KEK of
    ECDH(ephemeral, recipient); ``originator`` is :func:`_originator` of ``ephemeral``."""
    peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, recipient.key)
    shared = ephemeral.exchange(ec.ECDH(), peer)
    kek = X963KDF(hashes.SHA1(), 32, _SHARED_INFO_AES256).derive(shared)
    rek = _tlv(_SEQ, recipient.rid + _tlv(_OCTET, aes_key_wrap(kek, cek)))
    return _tlv(0xA1, _VERSION[3] + originator + _ALG_KARI + _tlv(_SEQ, rek))


def _recipient_infos(recipients: list[_Recipient], cek: bytes, shared: dict[str, int]) -> list[bytes]:
    """The DER RecipientInfo of each recipient; ``shared`` maps a curve name to the private value of
    the ephemeral key all its recipients share (:attr:`EcLayout.SHARED_KEY`), else one per recipient."""
    keys = {name: ec.derive_private_key(value, _CURVES[name]()) for name, value in shared.items()}
    originators = {name: _originator(key) for name, key in keys.items()}
    out = []
    for r in recipients:
        if r.kind == "rsa":
            out.append(_ktri(r, cek))
            continue
        name = r.kind[3:]
        curve = _CURVES[name]()
        if name in keys:
            out.append(_kari(r, curve, keys[name], originators[name], cek))
        else:
            ephemeral = ec.generate_private_key(curve)
            out.append(_kari(r, curve, ephemeral, _originator(ephemeral), cek))
    return out


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _chunks(items: Sequence[_Recipient], size: int) -> Iterable[list[_Recipient]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def _compute(preps: list[_Recipient], cek: bytes, shared: dict[str, int], ncpu: int,
             progress: Progress | None) -> list[bytes]:
    """:func:`_recipient_infos` of every recipient, in order; a process pool for large lists
    (cryptography holds the GIL for EC work), this process for small ones."""
    total = len(preps)
    results: list[bytes] = []
    if progress:
        progress(0, total)
    if ncpu > 1 and total >= _POOL_THRESHOLD:
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool
        try:
            with ProcessPoolExecutor(max_workers=ncpu) as pool:
                futures = [pool.submit(_recipient_infos, chunk, cek, shared) for chunk in _chunks(preps, _CHUNK)]
                for fut in futures:
                    results.extend(fut.result())
                    if progress:
                        progress(len(results), total)
        except (OSError, BrokenProcessPool):
            pass     # no usable process pool here (e.g. no /dev/shm): continue in this process
    for chunk in _chunks(preps[len(results):], _CHUNK):
        results.extend(_recipient_infos(chunk, cek, shared))
        if progress:
            progress(len(results), total)
    return results


def encrypt(content: bytes, recipients: Sequence[x509.Certificate], *, use_ski: bool = False,
            ec_layout: EcLayout = EcLayout.SHARED_KEY, progress: Progress | None = None,
            workers: int | None = None) -> bytes:
    """Encrypt ``content`` for ``recipients``; return DER ContentInfo(envelopedData).

    ``ec_layout`` chooses how the karis of EC recipients are made (:class:`EcLayout`).
    ``workers`` limits the process pool used for large recipient lists (default: all CPUs;
    1 = no pool).  ``progress(done, total)`` is called as recipients are processed.
    """
    if not recipients:
        raise EnvelopeError("Failed to encrypt: no recipient certificates given")
    preps = [_prepare(cert, use_ski) for cert in recipients]
    cek = os.urandom(32)
    iv = os.urandom(16)
    shared: dict[str, int] = {}
    if ec_layout is EcLayout.SHARED_KEY:
        for name in {p.kind[3:] for p in preps if p.kind != "rsa"}:
            shared[name] = ec.generate_private_key(_CURVES[name]()).private_numbers().private_value
    infos = _compute(preps, cek, shared, workers if workers is not None else _usable_cpus(), progress)
    all_v0_ktri = all(p.kind == "rsa" and p.by_issuer_and_serial for p in preps)
    version = _VERSION[0] if all_v0_ktri else _VERSION[2]
    eci = _encrypted_content_info(content, cek, iv, OID_AES256_CBC)
    enveloped = _tlv(_SEQ, version + _tlv(_SET, b"".join(sorted(infos))) + eci)
    return _tlv(_SEQ, _oid(OID_ENVELOPED_DATA) + _tlv(0xA0, enveloped))


def _encrypted_content_info(content: bytes, cek: bytes, iv: bytes, cipher_oid: str) -> bytes:
    """DER EncryptedContentInfo: id-data, AES-CBC (PKCS#7 padding), ciphertext as [0] IMPLICIT."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return _tlv(_SEQ, _oid(OID_DATA) + _tlv(_SEQ, _oid(cipher_oid) + _tlv(_OCTET, iv))
                + _tlv(0x80, ciphertext))


# --- decryption --------------------------------------------------------------------------------


def _parse_enveloped(der: bytes) -> acms.EnvelopedData:
    try:
        info = acms.ContentInfo.load(der, strict=True)
        ctype = info["content_type"].dotted
    except Exception:
        raise EnvelopeError("Failed to parse CMS") from None
    if ctype != OID_ENVELOPED_DATA:
        raise EnvelopeError(f"Expected CMS of type 'pkcs7-envelopedData' but got "
                            f"'{content_type_name(ctype)}'")
    try:
        enveloped: acms.EnvelopedData = info["content"]
        # parse the top level now, so a malformed structure fails here
        _ = (enveloped["recipient_infos"].contents,
             enveloped["encrypted_content_info"]["content_encryption_algorithm"])
        return enveloped
    except Exception:
        raise EnvelopeError("Failed to parse CMS") from None


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _malformed_is_parse_error(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """asn1crypto parses lazily: a malformed field found only when it is used is "Failed to parse
    CMS", as OpenSSL's d2i_CMS reports it before anything else."""
    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError):
            raise EnvelopeError("Failed to parse CMS") from None
    return wrapper


def _fail(reason: str) -> EnvelopeError:
    return EnvelopeError(f"Failed to decrypt CMS EnvelopedData: {reason}")


def _spki_key_id(pub: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    """RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING contents."""
    if isinstance(pub, rsa.RSAPublicKey):
        bits = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        bits = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return hashlib.sha1(bits).digest()


class _Candidate:
    """One way the key might open the envelope: a ktri, or one recipientEncryptedKey of a kari."""

    __slots__ = ("agreements", "kari", "keyid", "rek", "ri")

    def __init__(self, ri: Any, rek: Any = None, agreements: dict[bytes, bytes | None] | None = None) -> None:
        self.ri = ri
        self.rek = rek
        # key-encryption keys by key agreement (originator, ukm, algorithm), shared by all candidates
        self.agreements = agreements if agreements is not None else {}
        rid = rek["rid"] if rek is not None else ri["rid"]
        chosen = rid.chosen
        if rid.name in ("subject_key_identifier",):
            self.keyid: bytes | None = bytes(chosen.native)
        elif rid.name == "r_key_id":
            self.keyid = bytes(chosen["subject_key_identifier"].native)
        else:
            self.keyid = None
        self.kari = rek is not None

    def rid_der(self) -> bytes:
        rid = self.rek["rid"] if self.rek is not None else self.ri["rid"]
        if rid.name == "issuer_and_serial_number":
            return bytes(rid.chosen.dump())
        return b""


def _der_contents(element: bytes) -> bytes:
    """The contents octets of one definite-length DER element (its header stripped)."""
    first = element[1]
    skip = 2 if first < 0x80 else 2 + (first & 0x7F)
    return element[skip:]


def _der_elements(data: bytes) -> list[bytes] | None:
    """Split DER contents into its top-level elements (None if not plain definite-length DER)."""
    out = []
    i, n = 0, len(data)
    while i < n:
        start = i
        if i + 2 > n or data[i] & 0x1F == 0x1F:
            return None
        first = data[i + 1]
        i += 2
        if first < 0x80:
            length = first
        else:
            k = first & 0x7F
            if k == 0 or k > 4 or i + k > n:
                return None
            length = int.from_bytes(data[i:i + k], "big")
            i += k
        if i + length > n:
            return None
        i += length
        out.append(data[start:i])
    return out


def _candidates(enveloped: acms.EnvelopedData, want_kari: bool,
                needles: Sequence[bytes] = ()) -> list[_Candidate]:
    """Candidates of the key's type; with ``needles`` only RecipientInfos containing one of them.

    The needle pre-filter is a byte search over each undecoded RecipientInfo, so finding one
    recipient among thousands does not decode all of them.
    """
    try:
        ris = enveloped["recipient_infos"]
        elements = _der_elements(ris.contents) if needles else None
        if elements is None:
            infos = list(ris)
        else:
            infos = [acms.RecipientInfo.load(e) for e in elements if any(nd in e for nd in needles)]
        result = []
        agreements: dict[bytes, bytes | None] = {}
        for info in infos:
            if info.name == "ktri" and not want_kari:
                result.append(_Candidate(info.chosen))
            elif info.name == "kari" and want_kari:
                for rek in _encrypted_keys(info.chosen, needles):
                    result.append(_Candidate(info.chosen, rek, agreements))
        return result
    except EnvelopeError:
        raise
    except Exception:
        raise EnvelopeError("Failed to parse CMS") from None


def _encrypted_keys(kari: Any, needles: Sequence[bytes]) -> list[Any]:
    """The RecipientEncryptedKeys of a kari; with ``needles`` only those containing one of them
    (a kari of the per-curve layout holds thousands)."""
    reks = kari["recipient_encrypted_keys"]
    elements = _der_elements(reks.contents) if needles else None
    if elements is None:
        return list(reks)
    return [acms.RecipientEncryptedKey.load(e) for e in elements if any(nd in e for nd in needles)]


def _unwrap_rsa(key: rsa.RSAPrivateKey, cand: _Candidate) -> bytes | None:
    if cand.ri["key_encryption_algorithm"]["algorithm"].dotted != OID_RSA_ENCRYPTION:
        return None
    try:
        return bytes(key.decrypt(cand.ri["encrypted_key"].native, PKCS1v15()))
    except Exception:
        return None


def _unwrap_ec(key: ec.EllipticCurvePrivateKey, curve: ec.EllipticCurve, cand: _Candidate) -> bytes | None:
    # one ECDH per originator key: a kari may hold many recipients, and karis may share their
    # originator key (EcLayout.SHARED_KEY)
    kari = cand.ri
    agreement = kari["originator"].dump() + kari["ukm"].dump() + kari["key_encryption_algorithm"].dump()
    if agreement not in cand.agreements:
        cand.agreements[agreement] = _kari_kek(key, curve, kari)
    kek = cand.agreements[agreement]
    if kek is None:
        return None
    try:
        return aes_key_unwrap(kek, bytes(cand.rek["encrypted_key"].native))
    except (InvalidUnwrap, ValueError):
        return None


def _kari_kek(key: ec.EllipticCurvePrivateKey, curve: ec.EllipticCurve, kari: Any) -> bytes | None:
    """The key-encryption key ``key`` agrees on with the originator of ``kari`` (None: not ours)."""
    originator = kari["originator"]
    if originator.name != "originator_key":
        return None
    kea = kari["key_encryption_algorithm"]
    hash_factory = _KARI_KDF_HASHES.get(kea["algorithm"].dotted)
    if hash_factory is None:
        return None
    try:
        wrap_alg = acms.KeyEncryptionAlgorithm.load(kea["parameters"].dump())
        kek_len = _WRAP_KEY_LENGTHS[wrap_alg["algorithm"].dotted]
        point = bytes(originator.chosen["public_key"].native)
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except (KeyError, ValueError, TypeError):
        return None       # not for this key (other curve) or not a scheme we know
    try:
        shared = key.exchange(ec.ECDH(), peer)
    except Exception as exc:   # a token refusing ECDH is an error, not a non-matching recipient
        raise _fail(f"ECDH with the decryption key failed: {str(exc) or type(exc).__name__}") from None
    ukm = kari["ukm"]
    entity = _tlv(0xA0, _tlv(_OCTET, bytes(ukm.native))) if ukm.native is not None else b""
    shared_info = _tlv(_SEQ, wrap_alg.dump() + entity
                       + _tlv(0xA2, _tlv(_OCTET, (kek_len * 8).to_bytes(4, "big"))))
    return X963KDF(hash_factory(), kek_len, shared_info).derive(shared)


def _decrypt_content(enveloped: acms.EnvelopedData, cek: bytes) -> bytes | None:
    eci = enveloped["encrypted_content_info"]
    alg = eci["content_encryption_algorithm"]
    key_len = _CBC_KEY_LENGTHS.get(alg["algorithm"].dotted)
    if key_len is None:
        raise _fail(f"unsupported content encryption algorithm {alg['algorithm'].dotted}")
    if len(cek) != key_len:
        return None
    try:
        iv = bytes(alg["parameters"].native)
        ciphertext = bytes(eci["encrypted_content"].native or b"")
        decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except (ValueError, InvalidTag):
        return None


def _looks_like_der(data: bytes) -> bool:
    try:
        acore.load(data, strict=True)
        return True
    except Exception:
        return False


@dataclass(frozen=True)
class Opened:
    """The content of a decrypted EnvelopedData and its content-encryption key (never printed)."""

    content: bytes
    content_key: bytes = field(repr=False)


def decrypt(der: bytes, key: PrivateKey, cert: x509.Certificate | None = None) -> bytes:
    """Decrypt DER ContentInfo(envelopedData) with ``key``; the content (see :func:`open_envelope`)."""
    return open_envelope(der, key, cert).content


@_malformed_is_parse_error
def open_envelope(der: bytes, key: PrivateKey, cert: x509.Certificate | None = None) -> Opened:
    """Decrypt DER ContentInfo(envelopedData) with ``key`` (a file or PKCS#11 token key).

    With ``cert`` only the recipient matching its issuer+serial (or subjectKeyIdentifier) is tried.
    Without, recipients whose key identifier equals the key's RFC 5280 SKI come first, then every
    recipient of the key's type.  A wrong RSA key can "decrypt" garbage (implicit rejection), so a
    candidate counts only if it yields a key of the right length, the content then unpads
    correctly and is one DER element; if no candidate gives DER, the first correctly padded
    result is returned (content that is not DER).
    """
    enveloped = _parse_enveloped(der)
    try:
        pub = key.public_key()
    except Exception as exc:
        raise _fail(f"cannot get the public key of the decryption key: {exc}") from None
    # the public half decides how the content-encryption key is unwrapped
    unwrap: Callable[[_Candidate], bytes | None]
    if isinstance(pub, rsa.RSAPublicKey):
        is_ec = False
        unwrap = functools.partial(_unwrap_rsa, cast(rsa.RSAPrivateKey, key))
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        is_ec = True
        unwrap = functools.partial(_unwrap_ec, cast(ec.EllipticCurvePrivateKey, key), pub.curve)
    else:
        raise _fail("unsupported decryption key type")
    if cert is not None:
        rid = _issuer_and_serial(cert)
        try:
            ski: bytes | None = cert.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            ski = None
        needles = [rid] if ski is None else [rid, ski]
        cands = [c for c in _candidates(enveloped, is_ec, needles)
                 if (c.keyid is not None and c.keyid == ski) or (c.keyid is None and c.rid_der() == rid)]
    else:
        own = _spki_key_id(pub)
        cands = _candidates(enveloped, is_ec)
        cands = [c for c in cands if c.keyid == own] + [c for c in cands if c.keyid != own]
    if not cands:
        raise _fail("no matching recipient found")
    fallback: Opened | None = None
    for cand in cands:
        cek = unwrap(cand)
        if cek is None:
            continue
        plain = _decrypt_content(enveloped, cek)
        if plain is None:
            continue
        if is_ec or _looks_like_der(plain):
            return Opened(plain, cek)     # EC: the AES key wrap integrity check already proved the key
        if fallback is None:
            fallback = Opened(plain, cek)
    if fallback is not None:
        return fallback
    raise _fail("decrypt error")


def reencrypt(der: bytes, opened: Opened, new_content: bytes) -> bytes:
    """Replace the content of an EnvelopedData, keeping its recipients.

    ``opened`` is what :func:`open_envelope` returned for ``der``; its key must open ``der`` to its
    content (checked).  The recipientInfos are copied verbatim, so every recipient of ``der`` can
    decrypt the result; ``new_content`` is encrypted with the same key under a fresh IV.
    """
    enveloped = _parse_enveloped(der)
    cek = opened.content_key
    if _decrypt_content(enveloped, cek) != opened.content:
        raise EnvelopeError("Failed to encrypt: the input envelope does not hold the given content")
    iv = os.urandom(16)
    version = enveloped["version"].dump()
    infos = enveloped["recipient_infos"].dump()
    cipher_oid = enveloped["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].dotted
    eci = _encrypted_content_info(new_content, cek, iv, cipher_oid)
    return _tlv(_SEQ, _oid(OID_ENVELOPED_DATA) + _tlv(0xA0, _tlv(_SEQ, version + infos + eci)))


# --- --dump-recipients -------------------------------------------------------------------------


def _format_serial(value: int) -> str:
    """OpenSSL 3 ``i2s_ASN1_INTEGER``: decimal below 128 bits, else "0x" + BN_bn2hex (whole bytes)."""
    magnitude = abs(value)
    if magnitude.bit_length() < 128:
        return str(value)
    digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big").hex().upper()
    return ("-0x" if value < 0 else "0x") + digits


def _format_rid(index: int, rid: Any, algorithm: str) -> str:
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        return (f"{index:3d}   Issuer:    {format_name_der(ias['issuer'].dump())}\n"
                f"      Serial:    {_format_serial(ias['serial_number'].native)}\n"
                f"      Algorithm: {algorithm}\n")
    return f"{index:3d}   <keyid>"    # sic: RAUC prints no newline after a key identifier


@_malformed_is_parse_error
def format_recipients(der: bytes) -> str:
    """RAUC's ``rauc info --dump-recipients`` text for an EnvelopedData.

    Bug-compatible with RAUC 1.8 and master: "%d Recipients:" also for one recipient, and entries
    identified by subjectKeyIdentifier are the literal "<keyid>" without a line break.  ``rauc info``
    prints one more newline after this block.
    """
    enveloped = _parse_enveloped(der)
    infos = enveloped["recipient_infos"]
    lines = [f"{len(infos)} Recipients:\n"]
    for index, info in enumerate(infos):
        ri = info.chosen
        if info.name == "ktri":
            oid = ri["key_encryption_algorithm"]["algorithm"].dotted
            lines.append(_format_rid(index, ri["rid"], _ALGORITHM_NAMES.get(oid, oid)))
        elif info.name == "kari":
            oid = ri["key_encryption_algorithm"]["algorithm"].dotted
            reks = ri["recipient_encrypted_keys"]
            if len(reks) == 0:
                raise EnvelopeError(f"Unable to obtain recipient information for recipient {index}")
            lines.append(_format_rid(index, reks[0]["rid"], _ALGORITHM_NAMES.get(oid, oid)))
        else:
            lines.append(f"{index:3d}   <unknown>")    # sic, as RAUC
    return "".join(lines)

