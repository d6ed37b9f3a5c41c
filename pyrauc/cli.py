"""The ``pyrauc`` (and, on a target, ``rauc``) command line: a thin argparse front.

Every command parses its options as RAUC does and calls the library; a :class:`RaucError`
is printed as one line on stderr with exit code 1. Global options (``-c/--conf``,
``-C/--confopt``, ``--mount``, ``-d/--debug``) may stand before or after the command, like
RAUC's GOption parsing allows.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyrauc import RAUC_COMPAT_VERSION, __version__, bundle, keys
from pyrauc.errors import RaucError
from pyrauc.progress import TerminalProgress
from pyrauc.signature import Keyring

Handler = Callable[[argparse.Namespace], int]


def _out(msg: str) -> None:
    print(msg, flush=True)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(label: str) -> TerminalProgress | None:
    return TerminalProgress(label) if sys.stderr.isatty() or os.environ.get("PYRAUC_PROGRESS") else None


# --------------------------------------------------------------------------------------------
# configuration shared by several commands

def _system_config(args: argparse.Namespace, required: bool = False) -> Any | None:
    """Load system.conf when present (info/extract use it if it exists, like RAUC's AUTO mode)."""
    try:
        config = importlib.import_module("pyrauc.config")
    except ImportError:
        return None
    loader = getattr(config, "load_config", None)
    if loader is None:
        return None
    path = getattr(args, "conf", None)
    if path is None and not required and not any(
        Path(p).exists() for p in ("/etc/rauc/system.conf", "/run/rauc/system.conf", "/usr/lib/rauc/system.conf")
    ):
        return None
    try:
        result: Any = loader(path, overrides=getattr(args, "confopt", None) or [])
    except RaucError as e:
        raise e.prefixed("Failed to initialize context: ") from e
    return result


def _keyring(args: argparse.Namespace, conf: Any | None, no_check_time: bool = False) -> Keyring | None:
    path = getattr(args, "keyring", None)
    base: Keyring | None = None
    if conf is not None and hasattr(conf, "to_keyring"):
        base = conf.to_keyring()
    if path:
        p = Path(path)
        if base is None:
            base = Keyring(path=p if not p.is_dir() else None, directory=p if p.is_dir() else None)
        else:
            base = Keyring(**{**base.__dict__, "path": p if not p.is_dir() else None,
                              "directory": p if p.is_dir() else None})
    if base is not None and no_check_time:
        base = Keyring(**{**base.__dict__, "no_check_time": True})
    return base


def _decryption(args: argparse.Namespace, conf: Any | None) -> tuple[str | None, str | None]:
    key = getattr(args, "key", None)
    cert = getattr(args, "cert", None)
    enc = getattr(conf, "encryption", None) if conf is not None else None
    if key is None and enc is not None:
        key = getattr(enc, "key", None)
        cert = cert or getattr(enc, "cert", None)
    return (str(key) if key else None, str(cert) if cert else None)


def _allowed_formats(conf: Any | None) -> Sequence[str] | None:
    if conf is None:
        return None
    formats = getattr(conf, "bundle_formats", None)
    return list(formats) if formats else None


def _max_sig(conf: Any | None, args: argparse.Namespace | None = None) -> int:
    value = getattr(conf, "max_bundle_signature_size", None) if conf is not None else None
    if value is None and args is not None:
        # without a system.conf, -C system:max-bundle-signature-size=N still applies (host use)
        for opt in getattr(args, "confopt", None) or []:
            if opt.startswith("system:max-bundle-signature-size="):
                value = _parse_size(opt.split("=", 1)[1])
    return int(value) if value else bundle.DEFAULT_MAX_SIGNATURE_SIZE


def _parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    text = text.strip()
    try:
        if text and text[-1].upper() in units:
            return int(text[:-1]) * units[text[-1].upper()]
        return int(text)
    except ValueError:
        raise RaucError(f"Invalid size value '{text}' for max-bundle-signature-size") from None


def _open(args: argparse.Namespace, path: str, *, verify: bool = True, no_check_time: bool = False,
          decrypt: bool = True) -> bundle.Bundle:
    conf = _system_config(args)
    keyring = _keyring(args, conf, no_check_time)
    key, cert = _decryption(args, conf) if decrypt else (None, None)
    return bundle.open_bundle(path, keyring=keyring, verify=verify, key=key, cert=cert,
                              allowed_formats=_allowed_formats(conf), max_signature_size=_max_sig(conf, args),
                              log=_err)


# --------------------------------------------------------------------------------------------
# commands

def cmd_bundle(args: argparse.Namespace) -> int:
    if not args.cert or not args.key:
        _err("Cert and key files must be provided")
        return 1
    indir = Path(args.inputdir)
    out = Path(args.bundlename)
    if not indir.is_dir():
        _err("Input path must point to a directory!")
        return 1
    if out.resolve().is_relative_to(indir.resolve()):
        _err("Bundle path must be located outside input directory!")
        return 1
    signing_keyring = None
    if args.signing_keyring:
        p = Path(args.signing_keyring)
        signing_keyring = Keyring(path=None if p.is_dir() else p, directory=p if p.is_dir() else None)
    bundle.create_bundle(indir, out, cert=args.cert, key=args.key, intermediates=args.intermediate or [],
                         signing_keyring=signing_keyring, mksquashfs_args=args.mksquashfs_args, log=_out,
                         progress=_progress("Bundling"))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from pyrauc import info

    if args.output_format not in info.OUTPUT_FORMATS:
        _err(f"Unknown output format: '{args.output_format}'.\nSupported formats are: readable, json, "
             "json-pretty, shell.")
        return 1
    path = args.bundle
    if path.startswith("file://"):
        rest = path[len("file://"):]
        if not rest.startswith("/"):
            _err("file URI with hostname detected. Did you forget to add a leading / ?")
            return 1
        path = rest
    if not Path(path).exists():
        _err(f"No such file: {path}")
        return 1
    _err(f"Reading bundle: {path}")
    b = _open(args, path, verify=not args.no_verify, no_check_time=args.no_check_time)
    sys.stdout.write(info.format_info(b, args.output_format, color=sys.stdout.isatty(), dump_cert=args.dump_cert,
                                      dump_recipients=args.dump_recipients))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    if Path(args.outputdir).exists():
        _err(f"Failed to extract bundle: output directory '{args.outputdir}' exists already")
        return 1
    b = _open(args, args.bundle)
    bundle.extract_bundle(b, args.outputdir, progress=_progress("Checking payload"))
    return 0


def cmd_extract_signature(args: argparse.Namespace) -> int:
    b = _open(args, args.bundle)
    bundle.extract_signature(b, args.outputsig)
    return 0


def cmd_resign(args: argparse.Namespace) -> int:
    if not args.cert or not args.key:
        _err("Cert and key files must be provided")
        return 1
    conf = _system_config(args)
    keyring = _keyring(args, conf, args.no_check_time)
    b = bundle.open_bundle(args.inbundle, keyring=keyring, verify=not args.no_verify, log=_err,
                           key=args.decrypt_key)
    signing_keyring = Keyring(path=Path(args.signing_keyring)) if args.signing_keyring else None
    bundle.resign_bundle(b, args.outbundle, cert=args.cert, key=args.key,
                         intermediates=args.intermediate or [], signing_keyring=signing_keyring,
                         append=args.append, log=_out)
    return 0


def cmd_replace_signature(args: argparse.Namespace) -> int:
    conf = _system_config(args)
    keyring = _keyring(args, conf)
    b = bundle.open_bundle(args.inbundle, keyring=keyring, verify=not args.no_verify, log=_err,
                           key=args.decrypt_key)
    check_keyring = Keyring(path=Path(args.signing_keyring)) if args.signing_keyring else keyring
    bundle.replace_signature(b, args.inputsig, args.outbundle, keyring=check_keyring, log=_out)
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    if not args.to:
        _err("One or multiple recipient certificates must be provided (via --to)")
        return 1
    conf = _system_config(args)
    keyring = _keyring(args, conf)
    try:
        b = bundle.open_bundle(args.inbundle, keyring=keyring, verify=True, log=_err)
        bundle.check_payload(b)
    except RaucError as e:
        raise e.prefixed("Failed to create bundle: ") from e
    recipients = []
    for path in args.to:
        certs = keys.load_certs(path)
        if not certs:
            _err(f"Failed to parse cert file '{path}': no certificate found")
            return 1
        recipients.extend(certs)
    bundle.encrypt_bundle(b, args.outbundle, recipients, use_ski=args.recipient_key_id, log=_out,
                          progress=_progress("Encrypting"))
    _out(f"Encrypted bundle written to {args.outbundle}")
    return 0


# --------------------------------------------------------------------------------------------
# parser

def _common_parser(suppress: bool) -> argparse.ArgumentParser:
    default: Any = argparse.SUPPRESS if suppress else None
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument("-c", "--conf", metavar="FILENAME", default=default, help="config file")
    g.add_argument("-C", "--confopt", metavar="SECTION:KEY=VALUE", action="append",
                   default=default, help="config option override (repeatable)")
    g.add_argument("--mount", metavar="PATH", default=default, help="mount prefix")
    g.add_argument("-d", "--debug", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="enable debug output")
    return p


def _prog_name() -> str:
    """``rauc`` when called through the target's alias, else ``pyrauc``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name in ("rauc", "pyrauc") else "pyrauc"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog_name(),
        description="pyrauc: RAUC-compatible bundle and update tool",
        parents=[_common_parser(False)],
    )
    parser.add_argument("--version", action="version",
                        version=f"pyrauc {__version__} (compatible with rauc {RAUC_COMPAT_VERSION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common_parser(True)

    def add(name: str, func: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    def signing_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cert", metavar="PEMFILE|PKCS11-URL")
        p.add_argument("--key", metavar="PEMFILE|PKCS11-URL")
        p.add_argument("--intermediate", metavar="PEMFILE", action="append")
        p.add_argument("--signing-keyring", metavar="PEMFILE")

    p = add("bundle", cmd_bundle, "Create a bundle from a content directory")
    signing_options(p)
    p.add_argument("--mksquashfs-args", metavar="ARGS")
    p.add_argument("inputdir", metavar="INPUTDIR")
    p.add_argument("bundlename", metavar="BUNDLENAME")

    p = add("info", cmd_info, "Show bundle information")
    p.add_argument("--keyring", metavar="PEMFILE")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--no-check-time", action="store_true")
    p.add_argument("--key", metavar="PEMFILE|PKCS11-URL", help="decryption key")
    p.add_argument("--cert", metavar="PEMFILE|PKCS11-URL", help="recipient certificate (optional)")
    p.add_argument("--output-format", default="readable", metavar="FORMAT")
    p.add_argument("--dump-cert", action="store_true")
    p.add_argument("--dump-recipients", action="store_true")
    p.add_argument("--trust-environment", action="store_true")
    p.add_argument("bundle", metavar="BUNDLE")

    for name, func, help_, positionals in (
        ("extract", cmd_extract, "Extract the bundle content", ("bundle", "outputdir")),
        ("extract-signature", cmd_extract_signature, "Extract the bundle signature",
         ("bundle", "outputsig")),
    ):
        p = add(name, func, help_)
        p.add_argument("--keyring", metavar="PEMFILE")
        p.add_argument("--key", metavar="PEMFILE|PKCS11-URL", help="decryption key")
        p.add_argument("--cert", metavar="PEMFILE|PKCS11-URL", help="recipient certificate (optional)")
        p.add_argument("--trust-environment", action="store_true")
        for pos in positionals:
            p.add_argument(pos, metavar=pos.upper())

    p = add("resign", cmd_resign, "Resign an already signed bundle")
    signing_options(p)
    p.add_argument("--keyring", metavar="PEMFILE")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--no-check-time", action="store_true")
    p.add_argument("--append", action="store_true", help="add a signer instead of replacing the signature")
    p.add_argument("--decrypt-key", metavar="PEMFILE|PKCS11-URL", help="key to open an encrypted bundle")
    p.add_argument("inbundle", metavar="INBUNDLE")
    p.add_argument("outbundle", metavar="OUTBUNDLE")

    p = add("replace-signature", cmd_replace_signature, "Replace the signature of a bundle")
    p.add_argument("--keyring", metavar="PEMFILE")
    p.add_argument("--signing-keyring", metavar="PEMFILE")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--trust-environment", action="store_true")
    p.add_argument("--decrypt-key", metavar="PEMFILE|PKCS11-URL", help="key to open an encrypted bundle")
    p.add_argument("inbundle", metavar="INBUNDLE")
    p.add_argument("inputsig", metavar="INPUTSIG")
    p.add_argument("outbundle", metavar="OUTBUNDLE")

    p = add("encrypt", cmd_encrypt, "Encrypt a crypt bundle for recipients")
    p.add_argument("--to", metavar="PEMFILE", action="append", help="recipient certificates (repeatable)")
    p.add_argument("--keyring", metavar="PEMFILE")
    p.add_argument("--recipient-key-id", action="store_true",
                   help="identify recipients by subjectKeyIdentifier instead of issuer and serial")
    p.add_argument("inbundle", metavar="INBUNDLE")
    p.add_argument("outbundle", metavar="OUTBUNDLE")

    for module in ("pyrauc.cli_target", "pyrauc.cli_install"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        mod.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 1
    if args.debug:
        os.environ.setdefault("PYRAUC_DEBUG", "1")
    try:
        return int(args.func(args))
    except RaucError as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        _err("Interrupted")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
