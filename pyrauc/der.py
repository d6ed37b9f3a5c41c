"""BER to DER for the CMS structures OpenSSL accepts and asn1crypto does not.

OpenSSL's ``d2i_CMS`` reads BER: indefinite lengths and constructed OCTET STRINGs (content split
into chunks). RAUC therefore accepts a SignedData whose encapsulated manifest is such a
constructed string. asn1crypto only reads DER-like primitive strings, so :func:`normalize`
rewrites those two BER forms into their DER equivalent (the content octets stay the same, so
message digests and signatures are unaffected) before asn1crypto parses. Anything that is not
well-formed BER raises :class:`ValueError`; nesting deeper than :data:`MAX_DEPTH` is refused
rather than recursed into.

Hand-rolled on purpose: no maintained Python ASN.1 library converts BER to DER without a schema
(pyasn1 needs one per structure), and these ~60 lines only walk tag-length-value triples.
"""

from __future__ import annotations

MAX_DEPTH = 64
_OCTET_STRING = 0x04
_CONSTRUCTED = 0x20


def _header(data: bytes, pos: int) -> tuple[bytes, int, int | None, int]:
    """(identifier octets, constructed bit, length or None for indefinite, position of the contents)."""
    if pos >= len(data):
        raise ValueError("truncated identifier")
    start = pos
    first = data[pos]
    pos += 1
    if first & 0x1F == 0x1F:                        # high tag number form
        while pos < len(data) and data[pos] & 0x80:
            pos += 1
        pos += 1
    ident = data[start:pos]
    if pos >= len(data):
        raise ValueError("truncated length")
    length_octet = data[pos]
    pos += 1
    if length_octet == 0x80:
        return ident, first & _CONSTRUCTED, None, pos
    length = length_octet
    if length_octet & 0x80:
        n = length_octet & 0x7F
        if n > 8 or pos + n > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("length beyond the data")
    return ident, first & _CONSTRUCTED, length, pos


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _element(data: bytes, pos: int, depth: int) -> tuple[bytes, bytes, int]:
    """One element at ``pos``: (DER encoding, contents octets for strings, next position)."""
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    ident, constructed, length, pos = _header(data, pos)
    if not constructed:
        if length is None:
            raise ValueError("indefinite length of a primitive value")
        body = data[pos:pos + length]
        return ident + _length(len(body)) + body, body, pos + length
    end = None if length is None else pos + length
    children: list[tuple[bytes, bytes]] = []
    while True:
        if end is None:
            if data[pos:pos + 2] == b"\0\0":
                pos += 2
                break
            if pos >= len(data):
                raise ValueError("missing end-of-contents")
        elif pos >= end:
            if pos != end:
                raise ValueError("element overruns its parent")
            break
        der, octets, pos = _element(data, pos, depth + 1)
        children.append((der, octets))
    if ident == bytes([_OCTET_STRING | _CONSTRUCTED]):   # a string in chunks: one primitive string
        octets = b"".join(o for _, o in children)
        return bytes([_OCTET_STRING]) + _length(len(octets)) + octets, octets, pos
    body = b"".join(d for d, _ in children)
    return ident + _length(len(body)) + body, b"", pos


def normalize(data: bytes) -> bytes:
    """``data`` (one BER element) with indefinite lengths and chunked OCTET STRINGs in DER form."""
    der, _, end = _element(data, 0, 0)
    if end != len(data):
        raise ValueError("trailing data")
    return der
