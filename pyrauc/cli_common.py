"""What every command of the CLI shares: the command description, output, configuration.

A :class:`Command` is what RAUC's ``main.c`` keeps per command: its name, usage parameters,
texts, option group and handler. The handler receives an :class:`argparse.Namespace` with every
option's value (``args.keyring``...) and the positional arguments in ``args.args``; it checks
their number itself with :func:`positionals`, since RAUC does that per command with its own
messages.
"""

from __future__ import annotations

import argparse
import logging
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyrauc import config
from pyrauc.access import BundleAccess
from pyrauc.errors import RaucError
from pyrauc.goption import Option
from pyrauc.stream import StreamOptions

Handler = Callable[[argparse.Namespace], int]

log = logging.getLogger("pyrauc")


class UsageError(RaucError):
    """A command line RAUC refuses before doing anything (missing or excess arguments)."""


@dataclass(frozen=True)
class Command:
    """One command: ``rauc [OPTION…] <name> <params>``."""

    name: str
    params: str                     # "<INPUTDIR> <BUNDLENAME>"
    listing: str                    # its line in the main help's command list
    summary: str                    # the text under "Usage:" in its own help
    run: Handler
    options: tuple[Option, ...] = ()
    group: str | None = None        # "Bundle options"
    extra_summary: str | None = None


def out(msg: str) -> None:
    """A result line on stdout."""
    print(msg, flush=True)


def err(msg: str) -> None:
    """A message line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def positionals(args: argparse.Namespace, *missing: str, excess_at: int | None = None) -> list[str]:
    """The command's arguments, one per message in ``missing`` (that message if it is absent).

    More arguments than messages: "Excess argument: X" with X the argument at ``excess_at``
    (default: the first one too many; rauc 1.8 names the third one for three-argument commands).
    """
    given: list[str] = list(args.args)
    if len(given) < len(missing):
        raise UsageError(missing[len(given)])
    if len(given) > len(missing):
        raise UsageError(f"Excess argument: {given[len(missing) if excess_at is None else excess_at]}")
    return given


# --------------------------------------------------------------------------------------------
# options several commands share

KEYRING = Option("keyring", "keyring file", "PEMFILE")
DECRYPT_KEY = Option("key", "decryption key file or PKCS#11 URL", "PEMFILE|PKCS11-URL")
STREAMING = (
    Option("tls-cert", "TLS client cert file or PKCS#11 URL", "PEMFILE|PKCS11-URL"),
    Option("tls-key", "TLS client key file or PKCS#11 URL", "PEMFILE|PKCS11-URL"),
    Option("tls-ca", "TLS CA file", "PEMFILE"),
    Option("tls-no-verify", "do not verify the TLS server certificate"),
    Option("http-header", "extra HTTP header, e.g. 'HEADER: VALUE'", "'HEADER: VALUE'", short="H", repeat=True),
)


# --------------------------------------------------------------------------------------------
# configuration

def _overrides(args: argparse.Namespace) -> Sequence[str]:
    return list(getattr(args, "confopt", None) or [])


def host_config(args: argparse.Namespace) -> config.SystemConfig | None:
    """system.conf if there is one (-C overrides checked in any case): RAUC's AUTO mode."""
    try:
        return config.load_host_config(getattr(args, "conf", None), _overrides(args))
    except RaucError as e:
        raise e.prefixed("Failed to initialize context: ") from e


def system_config(args: argparse.Namespace) -> config.SystemConfig:
    """The system.conf a target command needs (install, status, mount, write-slot, service)."""
    try:
        conf = config.load_config(getattr(args, "conf", None), _overrides(args))
    except RaucError as e:
        raise e.prefixed("Failed to initialize context: ") from e
    for message in conf.messages:
        log.info(message)
    return conf


def stream_options(args: argparse.Namespace, conf: config.SystemConfig | None) -> StreamOptions:
    """``--tls-*`` and ``-H`` over system.conf's ``[streaming]`` (per item)."""
    return StreamOptions.build(conf.streaming if conf is not None else None,
                               tls_cert=getattr(args, "tls_cert", None), tls_key=getattr(args, "tls_key", None),
                               tls_ca=getattr(args, "tls_ca", None),
                               tls_no_verify=bool(getattr(args, "tls_no_verify", False)),
                               headers=list(getattr(args, "http_header", None) or []))


def bundle_access(args: argparse.Namespace, conf: config.SystemConfig | None, *, decrypt: bool = True,
                  verify: bool = True) -> BundleAccess:
    """The :class:`BundleAccess` of system.conf with this command line's options on top."""
    return BundleAccess.build(
        conf, keyring=getattr(args, "keyring", None),
        key=getattr(args, "key", None) if decrypt else None,
        cert=getattr(args, "cert", None) if decrypt else None,
        verify=verify and not getattr(args, "no_verify", False),
        no_check_time=getattr(args, "no_check_time", False),
        streaming=stream_options(args, conf))


def _unescape(text: str) -> str | None:
    """%XX decoding as GLib's g_unescape_string(text, "/"): None for a bad escape, NUL or '/'."""
    raw = text.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] != ord("%"):
            out.append(raw[i])
            i += 1
            continue
        digits = raw[i + 1:i + 3]
        if len(digits) < 2 or not all(chr(c) in string.hexdigits for c in digits):
            return None
        value = int(digits, 16)
        if value in (0, ord("/")):
            return None
        out.append(value)
        i += 3
    return out.decode(errors="surrogateescape")


def local_path(source: str) -> str:
    """A bundle argument as a local path, converting ``file:`` URIs as GLib's g_filename_from_uri.

    ``file:///abs`` and ``file:/abs`` are ``/abs``; ``file://host/abs`` is refused as RAUC does;
    a URI GLib cannot convert ("file://relative", "file:x") is a "Conversion error".
    """
    if not source.startswith("file:"):
        return source
    part = source[5:]
    invalid = f"Conversion error: The URI \u201c{source}\u201d is invalid"
    if "#" in part:
        raise RaucError(f"Conversion error: The local file URI \u201c{source}\u201d may not include a \u201c#\u201d")
    host = None
    if part.startswith("///"):
        part = part[2:]
    elif part.startswith("//"):
        host, slash, rest = part[2:].partition("/")
        if not slash:
            raise RaucError(invalid)
        part = "/" + rest
    path = _unescape(part)
    if path is None:
        raise RaucError(f"Conversion error: The URI \u201c{source}\u201d contains invalidly escaped characters")
    if not path.startswith("/"):
        raise RaucError(f"Conversion error: The URI \u201c{source}\u201d is not an absolute URI using the "
                        "\u201cfile\u201d scheme")
    if host:
        raise RaucError("file URI with hostname detected. Did you forget to add a leading / ?")
    return path
