"""PKCS#11 private keys and certificates (RFC 7512 ``pkcs11:`` URIs) through python-pkcs11.

Like RAUC, the PKCS#11 module comes from the environment variable ``RAUC_PKCS11_MODULE`` and the
PIN from ``RAUC_PKCS11_PIN``; a URI may override them with the ``module-path`` and ``pin-value``
query attributes.  :func:`load_private_key` returns a :class:`Pkcs11RSAPrivateKey` or
:class:`Pkcs11ECPrivateKey`, which implement cryptography's ``RSAPrivateKey`` and
``EllipticCurvePrivateKey`` interfaces as far as pyrauc needs them (``public_key()``, ``sign()``,
``decrypt()``, ``exchange()``; exporting raises TypeError); every private-key operation runs on
the token and the key never leaves it.
python-pkcs11 is imported only when a URI is used.

ECDH (:meth:`Pkcs11ECPrivateKey.exchange`) derives a CKK_GENERIC_SECRET with CKM_ECDH1_DERIVE
(CKD_NULL) marked non-sensitive and extractable, and reads its CKA_VALUE: a token whose policy
forbids extractable derived keys cannot be used to decrypt EC envelopes.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import unquote_to_bytes

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.utils import Buffer

from pyrauc.errors import KeyLoadError

__all__ = [
    "Pkcs11ECPrivateKey",
    "Pkcs11RSAPrivateKey",
    "Pkcs11Uri",
    "is_pkcs11_uri",
    "load_certificate",
    "load_private_key",
    "parse_uri",
]

MODULE_ENV = "RAUC_PKCS11_MODULE"
PIN_ENV = "RAUC_PKCS11_PIN"


# --- RFC 7512 URIs -----------------------------------------------------------------------------

@dataclass
class Pkcs11Uri:
    """The parsed attributes of a ``pkcs11:`` URI (values percent-decoded)."""

    path: dict[str, bytes] = field(default_factory=dict)
    query: dict[str, bytes] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        """A path attribute as UTF-8 text, or None."""
        value = self.path.get(name)
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def token(self) -> str | None:
        return self.text("token")

    @property
    def object(self) -> str | None:
        return self.text("object")

    @property
    def id(self) -> bytes | None:
        return self.path.get("id")

    @property
    def type(self) -> str | None:
        return self.text("type")

    @property
    def pin(self) -> str | None:
        value = self.query.get("pin-value")
        return None if value is None else value.decode("utf-8")

    @property
    def module_path(self) -> str | None:
        value = self.query.get("module-path")
        return None if value is None else os.fsdecode(value)


def is_pkcs11_uri(spec: str) -> bool:
    """True for ``pkcs11:`` URIs (case-insensitive scheme)."""
    return spec[:7].lower() == "pkcs11:"


def redact(uri: str) -> str:
    """The URI with any ``pin-value`` (query or, mistakenly, path attribute) replaced, for messages."""
    return re.sub(r"(pin-value=)[^;&?]*", r"\1***", uri, flags=re.IGNORECASE)


def parse_uri(uri: str) -> Pkcs11Uri:
    """Parse an RFC 7512 URI; ValueError for malformed ones."""
    if not is_pkcs11_uri(uri):
        raise ValueError("not a pkcs11: URI")
    rest = uri[7:]
    path_part, _, query_part = rest.partition("?")
    result = Pkcs11Uri()
    for target, text, sep in ((result.path, path_part, ";"), (result.query, query_part, "&")):
        for item in text.split(sep):
            if not item:
                continue
            name, eq, value = item.partition("=")
            if not eq or not name:
                raise ValueError(f"malformed attribute '{name if eq else item}'")
            name = name.lower()
            if name in target:
                raise ValueError(f"duplicate attribute '{name}'")
            target[name] = unquote_to_bytes(value)
    kind = result.type
    if kind is not None and kind not in ("private", "public", "cert", "secret-key", "data"):
        raise ValueError(f"unknown object type '{kind}'")
    return result


# --- module, token and session handling --------------------------------------------------------

_LIBS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _fail(what: str, uri: str, reason: str) -> NoReturn:
    raise KeyLoadError(f"failed to load PKCS11 {what} for '{redact(uri)}': {reason}")


def _reason(exc: BaseException) -> str:
    """A one-line reason for a python-pkcs11 exception (its class name when it has no text)."""
    import pkcs11

    names = {
        pkcs11.PinIncorrect: "PIN incorrect", pkcs11.PinLocked: "PIN locked",
        pkcs11.PinInvalid: "PIN invalid", pkcs11.PinLenRange: "PIN length out of range",
        pkcs11.NoSuchToken: "no matching token found", pkcs11.UserNotLoggedIn: "user not logged in",
    }
    for cls, text in names.items():
        if isinstance(exc, cls):
            return text
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


def _library(path: str) -> Any:
    import pkcs11

    with _LOCK:
        lib = _LIBS.get(path)
        if lib is None:
            lib = pkcs11.lib(path)
            _LIBS[path] = lib
        return lib


def unload_modules() -> None:
    """Finalize and forget every loaded PKCS#11 module (keys loaded before become unusable).

    Only needed when the module's configuration changes inside one process (tests).
    """
    with _LOCK:
        for lib in _LIBS.values():
            try:
                lib.finalize()
            except Exception:
                pass
        _LIBS.clear()


def _token(lib: Any, uri: Pkcs11Uri) -> Any:
    import pkcs11

    wanted = {"token": "label", "manufacturer": "manufacturer_id", "model": "model", "serial": "serial"}
    candidates = []
    for slot in lib.get_slots(token_present=True):
        token = slot.get_token()
        ok = True
        for attr, prop in wanted.items():
            want = uri.path.get(attr)
            if want is None:
                continue
            have = getattr(token, prop, None)
            have_b = have if isinstance(have, bytes) else str(have or "").encode()
            if have_b.rstrip(b" \0") != want:
                ok = False
        if ok:
            candidates.append(token)
    if not candidates:
        raise pkcs11.NoSuchToken("no matching token found")
    return candidates[0]


def _open_session(token: Any, pin: str | None) -> Any:
    """Open a session; log in unless the application is already logged in to this token."""
    import pkcs11

    if pin is None:
        return token.open()
    try:
        return token.open(user_pin=pin)
    except pkcs11.UserAlreadyLoggedIn:
        return token.open()   # the login is shared by all sessions of this process


def _open(uri_text: str, what: str) -> tuple[Pkcs11Uri, Any]:
    """Parse the URI, load the module and open a (logged-in when a PIN is known) session."""
    try:
        import pkcs11  # noqa: F401 - only to report a missing python-pkcs11
    except ImportError:
        _fail(what, uri_text, "python-pkcs11 is not installed (pip install python-pkcs11)")
    try:
        uri = parse_uri(uri_text)
    except ValueError as exc:
        _fail(what, uri_text, f"invalid PKCS#11 URI: {exc}")
    module = uri.module_path or os.environ.get(MODULE_ENV)
    if not module:
        _fail(what, uri_text, f"environment variable {MODULE_ENV} is not set (path of the PKCS#11 module)")
    try:
        lib = _library(module)
    except Exception as exc:
        _fail(what, uri_text, f"cannot load PKCS#11 module '{module}': {_reason(exc)}")
    pin = uri.pin if uri.pin is not None else os.environ.get(PIN_ENV)
    try:
        token = _token(lib, uri)
        session = _open_session(token, pin)
    except Exception as exc:
        _fail(what, uri_text, _reason(exc))
    return uri, session


def _find(session: Any, uri: Pkcs11Uri, object_class: Any) -> list[Any]:
    import pkcs11

    attrs: dict[Any, Any] = {pkcs11.Attribute.CLASS: object_class}
    if uri.object is not None:
        attrs[pkcs11.Attribute.LABEL] = uri.object
    if uri.id is not None:
        attrs[pkcs11.Attribute.ID] = uri.id
    return list(session.get_objects(attrs))


def _related(session: Any, obj: Any, object_class: Any) -> Any | None:
    """The object of ``object_class`` with the same CKA_ID (or else the same label) as ``obj``."""
    import pkcs11

    for attr in (pkcs11.Attribute.ID, pkcs11.Attribute.LABEL):
        try:
            value = obj[attr]
        except Exception:
            continue
        if not value:
            continue
        found = list(session.get_objects({pkcs11.Attribute.CLASS: object_class, attr: value}))
        if found:
            return found[0]
    return None


# --- public keys from token attributes ---------------------------------------------------------

_CURVES_BY_OID: dict[str, ec.EllipticCurve] = {
    "1.2.840.10045.3.1.7": ec.SECP256R1(), "1.3.132.0.34": ec.SECP384R1(), "1.3.132.0.35": ec.SECP521R1(),
    "1.3.132.0.33": ec.SECP224R1(), "1.3.132.0.10": ec.SECP256K1(),
    "1.3.36.3.3.2.8.1.1.7": ec.BrainpoolP256R1(), "1.3.36.3.3.2.8.1.1.11": ec.BrainpoolP384R1(),
    "1.3.36.3.3.2.8.1.1.13": ec.BrainpoolP512R1(),
}


def _curve_from_params(params: bytes) -> ec.EllipticCurve:
    from asn1crypto import keys as akeys

    parsed = akeys.ECDomainParameters.load(params)
    if parsed.name != "named":
        raise ValueError("only named curves are supported")
    oid = parsed.chosen.dotted
    if oid not in _CURVES_BY_OID:
        raise ValueError(f"unsupported curve {oid}")
    return _CURVES_BY_OID[oid]


def _ec_point(raw: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING by the standard; some tokens store the bare point."""
    from asn1crypto import core as acore

    if raw[:1] == b"\x04" and len(raw) > 2:
        try:
            inner = acore.OctetString.load(raw, strict=True).native
            if inner and inner[0] in (2, 3, 4):
                return bytes(inner)
        except Exception:
            pass
    return raw


def _public_from_object(obj: Any) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    import pkcs11

    key_type = obj[pkcs11.Attribute.KEY_TYPE]
    if key_type == pkcs11.KeyType.RSA:
        n = int.from_bytes(obj[pkcs11.Attribute.MODULUS], "big")
        e = int.from_bytes(obj[pkcs11.Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if key_type == pkcs11.KeyType.EC:
        curve = _curve_from_params(obj[pkcs11.Attribute.EC_PARAMS])
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, _ec_point(obj[pkcs11.Attribute.EC_POINT]))
    raise ValueError("unsupported key type")


# --- the key objects ---------------------------------------------------------------------------

# DER DigestInfo prefixes (RFC 8017 9.2 note 1) for signing prehashed data with CKM_RSA_PKCS.
_DIGEST_INFO_PREFIX = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_RSA_SIGN_MECHANISMS = {"sha1": "SHA1_RSA_PKCS", "sha224": "SHA224_RSA_PKCS", "sha256": "SHA256_RSA_PKCS",
                        "sha384": "SHA384_RSA_PKCS", "sha512": "SHA512_RSA_PKCS"}


class _Pkcs11Key:
    """State shared by both key types: the session and the private key object."""

    def __init__(self, uri: str, session: Any, key: Any, public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
                 ) -> None:
        self._uri = redact(uri)
        self._session = session
        self._key = key
        self._public = public
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._uri}>"

    def _no_export(self) -> NoReturn:
        raise TypeError("a PKCS#11 private key cannot be exported")

    def private_bytes(self, encoding: serialization.Encoding, format: serialization.PrivateFormat,
                      encryption_algorithm: serialization.KeySerializationEncryption) -> bytes:
        self._no_export()


class Pkcs11RSAPrivateKey(_Pkcs11Key, rsa.RSAPrivateKey):
    """An RSA private key on a token, usable where pyrauc expects an ``RSAPrivateKey``."""

    @property
    def key_size(self) -> int:
        return self.public_key().key_size

    def public_key(self) -> rsa.RSAPublicKey:
        assert isinstance(self._public, rsa.RSAPublicKey)
        return self._public

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        self._no_export()

    def __copy__(self) -> Pkcs11RSAPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Pkcs11RSAPrivateKey:
        return self

    def sign(self, data: bytes, padding: padding.AsymmetricPadding,
             algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo) -> bytes:
        """PKCS#1 v1.5 signature: CKM_<hash>_RSA_PKCS, or CKM_RSA_PKCS over a DigestInfo."""
        import pkcs11

        if not isinstance(padding, _PKCS1v15):
            raise ValueError("only PKCS#1 v1.5 signatures are supported with PKCS#11 keys")
        if isinstance(algorithm, utils.NoDigestInfo):
            mechanism, payload = pkcs11.Mechanism.RSA_PKCS, bytes(data)
        elif isinstance(algorithm, utils.Prehashed):
            name = algorithm._algorithm.name
            if name not in _DIGEST_INFO_PREFIX:
                raise ValueError(f"unsupported hash for PKCS#11 signing: {name}")
            mechanism, payload = pkcs11.Mechanism.RSA_PKCS, _DIGEST_INFO_PREFIX[name] + bytes(data)
        elif algorithm.name in _RSA_SIGN_MECHANISMS:
            mechanism = getattr(pkcs11.Mechanism, _RSA_SIGN_MECHANISMS[algorithm.name])
            payload = bytes(data)
        else:
            raise ValueError(f"unsupported hash for PKCS#11 signing: {algorithm.name}")
        with self._lock:
            return bytes(self._key.sign(payload, mechanism=mechanism))

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        import pkcs11

        if not isinstance(padding, _PKCS1v15):
            raise ValueError("only PKCS#1 v1.5 decryption is supported with PKCS#11 keys")
        with self._lock:
            return bytes(self._key.decrypt(ciphertext, mechanism=pkcs11.Mechanism.RSA_PKCS))


class Pkcs11ECPrivateKey(_Pkcs11Key, ec.EllipticCurvePrivateKey):
    """An EC private key on a token, usable where pyrauc expects an ``EllipticCurvePrivateKey``."""

    @property
    def curve(self) -> ec.EllipticCurve:
        return self.public_key().curve

    @property
    def key_size(self) -> int:
        return self.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        assert isinstance(self._public, ec.EllipticCurvePublicKey)
        return self._public

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._no_export()

    def __copy__(self) -> Pkcs11ECPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Pkcs11ECPrivateKey:
        return self

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """ECDSA: the digest is computed here, CKM_ECDSA signs it; returns a DER signature."""
        import pkcs11

        if not isinstance(signature_algorithm, ec.ECDSA):
            raise ValueError("only ECDSA signatures are supported")
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, utils.Prehashed):
            digest = bytes(data)
        else:
            hasher = hashes.Hash(algorithm)
            hasher.update(bytes(data))
            digest = hasher.finalize()
        with self._lock:
            raw = bytes(self._key.sign(digest, mechanism=pkcs11.Mechanism.ECDSA))
        half = len(raw) // 2
        r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return utils.encode_dss_signature(r, s)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        """ECDH on the token (CKM_ECDH1_DERIVE, CKD_NULL); returns the shared x coordinate."""
        import pkcs11

        if not isinstance(algorithm, ec.ECDH):
            raise ValueError("only ECDH is supported")
        if peer_public_key.curve.name != self.curve.name:
            raise ValueError("peer public key is on a different curve")
        point = peer_public_key.public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)
        size = (self.curve.key_size + 7) // 8
        template = {pkcs11.Attribute.SENSITIVE: False, pkcs11.Attribute.EXTRACTABLE: True,
                    pkcs11.Attribute.TOKEN: False}
        if not hasattr(self._key, "derive_key"):
            raise RuntimeError("the token does not allow key derivation with this key (CKA_DERIVE is false)")
        with self._lock:
            secret = self._key.derive_key(
                pkcs11.KeyType.GENERIC_SECRET, size * 8,
                mechanism=pkcs11.Mechanism.ECDH1_DERIVE,
                mechanism_param=(pkcs11.KDF.NULL, None, point),
                template=template,
            )
            try:
                value = bytes(secret[pkcs11.Attribute.VALUE])
            except pkcs11.AttributeSensitive:
                raise ValueError("the token does not allow reading the derived ECDH secret") from None
            finally:
                try:
                    secret.destroy()
                except Exception:
                    pass
        return value


_PKCS1v15 = padding.PKCS1v15


# --- loaders -----------------------------------------------------------------------------------


def load_private_key(uri: str) -> Pkcs11RSAPrivateKey | Pkcs11ECPrivateKey:
    """Find the private key a ``pkcs11:`` URI names (KeyLoadError if none or on a wrong PIN)."""
    what = "private key"
    parsed, session = _open(uri, what)
    import pkcs11

    if parsed.type not in (None, "private"):
        _fail(what, uri, f"URI names an object of type '{parsed.type}', not a private key")
    try:
        keys = _find(session, parsed, pkcs11.ObjectClass.PRIVATE_KEY)
    except Exception as exc:
        _fail(what, uri, _reason(exc))
    if not keys:
        hint = "" if (parsed.pin is not None or os.environ.get(PIN_ENV)) else f" (is {PIN_ENV} set?)"
        _fail(what, uri, f"no matching private key found on the token{hint}")
    key = keys[0]
    try:
        key_type = key[pkcs11.Attribute.KEY_TYPE]
        public = _find_public(session, key)
    except KeyLoadError:
        raise
    except Exception as exc:
        _fail(what, uri, f"cannot get the public key: {_reason(exc)}")
    if public is None:
        _fail(what, uri, "no public key or certificate with the same ID or label on the token")
    if key_type == pkcs11.KeyType.RSA and isinstance(public, rsa.RSAPublicKey):
        return Pkcs11RSAPrivateKey(uri, session, key, public)
    if key_type == pkcs11.KeyType.EC and isinstance(public, ec.EllipticCurvePublicKey):
        return Pkcs11ECPrivateKey(uri, session, key, public)
    _fail(what, uri, "unsupported key type (RSA or EC needed)")


def _find_public(session: Any, key: Any) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None:
    import pkcs11

    pub_obj = _related(session, key, pkcs11.ObjectClass.PUBLIC_KEY)
    if pub_obj is not None:
        return _public_from_object(pub_obj)
    cert_obj = _related(session, key, pkcs11.ObjectClass.CERTIFICATE)
    if cert_obj is not None:
        pub = x509.load_der_x509_certificate(cert_obj[pkcs11.Attribute.VALUE]).public_key()
        if isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            return pub
    if key[pkcs11.Attribute.KEY_TYPE] == pkcs11.KeyType.RSA:
        return _public_from_object(key)   # modulus and exponent are public attributes
    return None


def load_certificate(uri: str) -> x509.Certificate:
    """Read the X.509 certificate (CKO_CERTIFICATE) a ``pkcs11:`` URI names."""
    what = "certificate"
    parsed, session = _open(uri, what)
    import pkcs11

    if parsed.type not in (None, "cert"):
        _fail(what, uri, f"URI names an object of type '{parsed.type}', not a certificate")
    try:
        certs = _find(session, parsed, pkcs11.ObjectClass.CERTIFICATE)
        if not certs:
            _fail(what, uri, "no matching certificate found on the token")
        return x509.load_der_x509_certificate(bytes(certs[0][pkcs11.Attribute.VALUE]))
    except KeyLoadError:
        raise
    except Exception as exc:
        _fail(what, uri, _reason(exc))
    finally:
        try:
            session.close()
        except Exception:
            pass
