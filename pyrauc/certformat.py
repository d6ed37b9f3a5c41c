"""OpenSSL-style text for X.509 names, certificates and CMS object names.

RAUC prints what OpenSSL formats, so ``rauc info`` and the error messages show names as
``X509_NAME_print_ex(..., XN_FLAG_ONELINE)`` does ("O = Test Org, CN = signer"), times as
``ASN1_TIME_print`` ("Jan  1 00:00:00 1970 GMT"), certificates as ``X509_print`` and CMS content
types by OpenSSL's short names. Names are formatted from cryptography objects
(:func:`format_name`) and from DER (:func:`format_name_der`, used for thousands of recipients).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

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


def content_type_name(dotted: str) -> str:
    """OpenSSL's short name of a CMS content type OID (the OID itself if unknown)."""
    return CONTENT_TYPE_SHORT_NAMES.get(dotted, dotted)


def utc(value: dt.datetime) -> dt.datetime:
    """``value`` with a time zone: a naive datetime is taken as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


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


def format_asn1_name(name: ax509.Name) -> str:
    """:func:`format_name` of an asn1crypto Name (string values escaped, others as "#" + DER hex)."""
    rdns = []
    for rdn in name.chosen:
        parts = []
        for atv in rdn:
            oid = atv["type"].dotted
            value = atv["value"]
            native = value.native
            text = escape_name_value(native) if isinstance(native, str) else "#" + value.dump().hex().upper()
            parts.append(f"{SHORT_NAMES.get(oid, oid)} = {text}")
        rdns.append(" + ".join(parts))
    return ", ".join(rdns)


@functools.lru_cache(maxsize=256)
def format_name_der(der: bytes) -> str:
    """:func:`format_name` of a DER Name (cached: thousands of recipients share few issuers)."""
    return format_asn1_name(ax509.Name.load(der))


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
    when = utc(when).astimezone(dt.UTC)
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


def _public_key_lines(cert: x509.Certificate) -> list[str]:
    try:
        pub = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return ["            Unable to load Public Key"]    # what X509_print says of a key that does not decode
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return ["            Public Key Algorithm: rsaEncryption",
                f"                Public-Key: ({pub.key_size} bit)",
                "                Modulus:",
                *_hex_block(_int_bytes(nums.n), 20, 15),
                f"                Exponent: {nums.e} (0x{nums.e:x})"]
    if isinstance(pub, ec.EllipticCurvePublicKey):
        point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        oid_name, nist = _CURVES.get(pub.curve.name, (pub.curve.name, ""))
        return ["            Public Key Algorithm: id-ecPublicKey",
                f"                Public-Key: ({pub.curve.key_size} bit)",
                "                pub:",
                *_hex_block(point, 20, 15),
                f"                ASN1 OID: {oid_name}",
                *([f"                NIST CURVE: {nist}"] if nist else [])]
    return [f"            Public Key Algorithm: {type(pub).__name__}"]


def _ext_header(name: str, critical: bool) -> str:
    return f"            {name}: {'critical' if critical else ''}".rstrip(" ") + ("" if critical else " ")


def _extensions_lines(cert: x509.Certificate) -> list[str]:
    """The extensions; those cryptography refuses (duplicated, malformed) as OpenSSL shows a value it
    cannot decode: the raw octets."""
    try:
        extensions = list(cert.extensions)
    except (x509.DuplicateExtension, ValueError):
        return _raw_extensions_lines(cert)
    lines = ["        X509v3 extensions:"] if extensions else []
    for ext in extensions:
        lines.append(_ext_header(_EXT_NAMES.get(ext.oid.dotted_string, ext.oid.dotted_string), ext.critical))
        lines += _ext_lines(ext)
    return lines


def _raw_extensions_lines(cert: x509.Certificate) -> list[str]:
    try:
        tbs = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))["tbs_certificate"]
        lines = ["        X509v3 extensions:"]
        for ext in tbs["extensions"] or []:
            oid = ext["extn_id"].dotted
            lines.append(_ext_header(_EXT_NAMES.get(oid, oid), bool(ext["critical"].native)))
            lines += _hex_block(bytes(ext["extn_value"].contents), 16, 18)
        return lines
    except (ValueError, TypeError, KeyError):
        return ["        X509v3 extensions:", "            <unsupported>"]


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
    lines += _public_key_lines(cert)
    lines += _extensions_lines(cert)
    lines.append(f"    Signature Algorithm: {sig_name}")
    lines.append("    Signature Value:")
    lines += _hex_block(cert.signature, 8, 18)
    return "".join(line + "\n" for line in lines)
