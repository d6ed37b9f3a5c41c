"""The ``pyrauc`` (and, on a target, ``rauc``) command line: a thin front with RAUC's conventions.

Parsing follows RAUC's ``main.c`` on GLib's GOption (:mod:`pyrauc.goption`): a first pass over
the global options finds the command, a second pass parses the command's options together with
the global ones, anywhere on the line. Help, usage errors and exit codes are RAUC's: help on
stdout, "Unknown option --x" on stderr with the command's help on stdout, exit 1 for every error
(never 2). A :class:`~pyrauc.errors.RaucError` is printed as one line on stderr, exit 1.

The host commands (bundle, info, extract, encrypt, resign, ...) live here; the target commands
come from :mod:`pyrauc.cli_target` (status, write-slot) and :mod:`pyrauc.cli_install`
(install, mount, service).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pyrauc import RAUC_COMPAT_VERSION, __version__, cli_install, cli_target, config, goption
from pyrauc.cli_common import (
    DECRYPT_KEY,
    KEYRING,
    STREAMING,
    Command,
    UsageError,
    bundle_access,
    err,
    host_config,
    local_path,
    out,
    positionals,
)
from pyrauc.errors import RaucError
from pyrauc.goption import Group, Option
from pyrauc.logformat import setup_logging
from pyrauc.progress import TerminalProgress

if TYPE_CHECKING:
    from pyrauc.access import BundleAccess
    from pyrauc.signature import Keyring

# The bundle, crypto and target modules are imported by the commands that use them, so that
# --help, --version and usage errors start as fast as the interpreter (cryptography alone takes
# longer than the interpreter to load).

log = logging.getLogger("pyrauc")

# --------------------------------------------------------------------------------------------
# options

CERT = Option("cert", "signing cert file or PKCS#11 URL", "PEMFILE|PKCS11-URL")
KEY = Option("key", "signing key file or PKCS#11 URL", "PEMFILE|PKCS11-URL")
INTERMEDIATE = Option("intermediate", "intermediate CA file name", "PEMFILE", repeat=True)
SIGNING_KEYRING = Option("signing-keyring", "verification keyring file", "PEMFILE")
NO_VERIFY = Option("no-verify", "disable bundle verification")
NO_CHECK_TIME = Option("no-check-time", "don't check validity period of certificates against current time")
TRUST_ENV = Option("trust-environment", "trust environment and skip bundle access checks")
RECIPIENT_CERT = Option("cert", "recipient cert file or PKCS#11 URL (speeds up decryption)", "PEMFILE|PKCS11-URL")
DECRYPT_KEY_EXT = Option("decrypt-key", "key to decrypt an encrypted input bundle", "PEMFILE|PKCS11-URL")
MKSQUASHFS_ARGS = Option("mksquashfs-args", "mksquashfs extra args", "ARGS")
OUTPUT_FORMAT = Option("output-format", "output format", "FORMAT")
MAIN = Group("Application Options", (
    Option("conf", "config file", "FILENAME", short="c"),
    Option("confopt", "config option override", "SECTION:KEY=VALUE", short="C", repeat=True),
    # hidden legacy globals: RAUC still accepts them before the command
    Option("cert", arg="PEMFILE|PKCS11-URL", hidden=True),
    Option("key", arg="PEMFILE|PKCS11-URL", hidden=True),
    Option("keyring", arg="PEMFILE", hidden=True),
    Option("intermediate", arg="PEMFILE", repeat=True, hidden=True),
    Option("mount", "mount prefix", "PATH"),
    Option("debug", "enable debug output", short="d"),
    Option("version", "display version"),
    Option("help", short="h"),
))

ENVIRONMENT = """Environment variables:
  RAUC_KEY_PASSPHRASE Passphrase to use for accessing key files (signing only)
  RAUC_PKCS11_MODULE  Library filename for PKCS#11 module (signing only)
  RAUC_PKCS11_PIN     PIN to use for accessing PKCS#11 keys (signing only)"""


# --------------------------------------------------------------------------------------------
# host commands

def _progress(label: str) -> TerminalProgress | None:
    return TerminalProgress(label) if sys.stderr.isatty() or os.environ.get("PYRAUC_PROGRESS") else None


def _signing_keyring(args: argparse.Namespace) -> Keyring | None:
    """--signing-keyring, else --keyring or system.conf's keyring (RAUC verifies what it signed)."""
    from pyrauc.signature import Keyring

    if args.signing_keyring:
        return Keyring().with_path(args.signing_keyring)
    return bundle_access(args, host_config(args), decrypt=False).keyring


def cmd_bundle(args: argparse.Namespace) -> int:
    from pyrauc import bundle

    indir_arg, out_arg = positionals(args, "An input directory name must be provided",
                                     "An output bundle name must be provided")
    if not args.cert or not args.key:
        raise UsageError("Cert and key files must be provided")
    indir, out_path = Path(indir_arg), Path(out_arg)
    if not indir.is_dir():
        raise UsageError("Input path must point to a directory!")
    if out_path.resolve().is_relative_to(indir.resolve()):
        raise UsageError("Bundle path must be located outside input directory!")
    bundle.create_bundle(indir, out_path, cert=args.cert, key=args.key, intermediates=args.intermediate,
                         signing_keyring=_signing_keyring(args), mksquashfs_args=args.mksquashfs_args,
                         out=out, progress=_progress("Bundling"))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    (source,) = positionals(args, "A file name must be provided")
    from pyrauc import info
    from pyrauc.access import is_url
    from pyrauc.stream import redact

    if args.output_format is None:
        args.output_format = "readable"
    if args.output_format not in info.OUTPUT_FORMATS:
        raise UsageError(f"Unknown output format: '{args.output_format}'")
    access = bundle_access(args, host_config(args))
    if is_url(source):
        # user space: the framing and the CMS with Range requests (no helper, no NBD, no root)
        path = source
        access = access.with_info_headers()
    else:
        path = _existing(source)
    access.check_keyring()                   # before anything is read or fetched, as RAUC does
    log.info("Reading bundle: %s", redact(path))
    with access.open(path, sandboxed=False) as b:
        sys.stdout.write(info.format_info(b, args.output_format, color=True,   # RAUC: also into a pipe
                                          dump_cert=args.dump_cert, dump_recipients=args.dump_recipients))
    return 0


def _existing(source: str) -> str:
    """The local bundle path of ``source`` (relative paths made absolute), which must exist; a URL is
    refused as RAUC refuses it for commands that check or copy the whole payload."""
    from pyrauc.access import refuse_remote

    refuse_remote(source)
    path = os.path.abspath(local_path(source))
    if not os.path.exists(path):
        raise RaucError(f"No such file: {path}")
    return path


def _reading(source: str) -> str:
    """:func:`_existing`, after RAUC's "Reading bundle: <source as given>" (info logs the full path)."""
    log.info("Reading bundle: %s", source)
    return _existing(source)


def cmd_extract(args: argparse.Namespace) -> int:
    from pyrauc import bundle

    source, outdir = positionals(args, "An input bundle must be provided", "An output directory must be provided")
    if Path(outdir).exists():
        raise RaucError(f"Failed to extract bundle: output directory '{outdir}' exists already")
    b = bundle_access(args, host_config(args)).open(_reading(source))
    bundle.extract_bundle(b, outdir, progress=_progress("Checking payload"))
    return 0


def cmd_extract_signature(args: argparse.Namespace) -> int:
    from pyrauc import bundle
    from pyrauc.access import is_url

    source, outsig = positionals(args, "An input bundle must be provided",
                                 "An output signature file must be provided")
    access = bundle_access(args, host_config(args))
    with access.open(source if is_url(source) else _reading(source), sandboxed=False) as b:
        bundle.extract_signature(b, outsig)
    return 0


def _input_access(args: argparse.Namespace) -> BundleAccess:
    """Access to the input of resign/replace-signature: --key signs there, so an encrypted input
    is decrypted with pyrauc's --decrypt-key or system.conf's [encryption] key."""
    access = bundle_access(args, host_config(args), decrypt=False)
    return dataclasses.replace(access, key=args.decrypt_key) if args.decrypt_key else access


def cmd_resign(args: argparse.Namespace) -> int:
    from pyrauc import bundle

    source, outbundle = positionals(args, "An input bundle must be provided", "An output bundle must be provided")
    if not args.cert or not args.key:
        raise UsageError("Cert and key files must be provided")
    b = _input_access(args).open(_reading(source))
    bundle.resign_bundle(b, outbundle, cert=args.cert, key=args.key, intermediates=args.intermediate,
                         signing_keyring=_signing_keyring(args), append=args.append, out=out)
    return 0


def cmd_replace_signature(args: argparse.Namespace) -> int:
    from pyrauc import bundle
    from pyrauc.signature import Keyring

    source, sig, outbundle = positionals(args, "An input bundle must be provided",
                                         "An input signature file must be provided",
                                         "An output bundle must be provided", excess_at=2)
    access = _input_access(args)
    b = access.open(_reading(source))
    check = Keyring().with_path(args.signing_keyring) if args.signing_keyring else access.keyring
    bundle.replace_signature(b, sig, outbundle, keyring=check, out=out)
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    from pyrauc import bundle, envelope, keys

    if not args.to:
        raise UsageError("One or multiple recipient certificates must be provided (via --to)")
    source, outbundle = positionals(args, "An input bundle must be provided", "An output bundle name must be provided")
    layouts = {layout.value: layout for layout in envelope.EcLayout}
    ec_layout = layouts.get(args.ec_layout or envelope.EcLayout.SHARED_KEY.value)
    if ec_layout is None:
        raise UsageError(f"Unknown EC layout '{args.ec_layout}' (use {' or '.join(layouts)})")
    access = bundle_access(args, host_config(args), decrypt=False)
    b = access.open(_reading(source))           # (RAUC prints the input's errors as they are)
    bundle.check_payload(b)
    recipients = []
    for path in args.to:
        try:
            recipients.extend(keys.load_certs(path))
        except RaucError as e:
            # encrypt names them with a capital F ("Failed to parse cert file '%s': %s")
            message = str(e)
            raise RaucError("Failed to create bundle: Failed to encrypt bundle: " + message[:1].upper()
                            + message[1:]) from e
    bundle.encrypt_bundle(b, outbundle, recipients, use_ski=args.recipient_key_id, ec_layout=ec_layout, out=out,
                          progress=_progress("Encrypting"))
    out(f"Encrypted bundle written to {outbundle}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    if not args.cert or not args.key:
        raise UsageError("Cert and key files must be provided")
    positionals(args, "An input bundle must be provided", "An output bundle must be provided")
    raise RaucError("Failed to convert bundle: casync bundles are not supported by pyrauc")


def cmd_help(args: argparse.Namespace) -> int:
    """``rauc help`` prints nothing and succeeds, as rauc 1.8 does."""
    return 0


HOST_COMMANDS: tuple[Command, ...] = (
    Command("bundle", "<INPUTDIR> <BUNDLENAME>", "Create a bundle", "Create a bundle from a content directory",
            cmd_bundle, (SIGNING_KEYRING, MKSQUASHFS_ARGS, CERT, KEY, KEYRING, INTERMEDIATE), "Bundle options"),
    Command("resign", "<INBUNDLE> <OUTBUNDLE>", "Resign an already signed bundle", "Resign an already signed bundle",
            cmd_resign, (NO_VERIFY, NO_CHECK_TIME, SIGNING_KEYRING, CERT, KEY, KEYRING, INTERMEDIATE,
                         Option("append", "add a signature instead of replacing it"), DECRYPT_KEY_EXT),
            "Resign options"),
    Command("convert", "<INBUNDLE> <OUTBUNDLE>", "Convert classic to casync bundle",
            "Convert to casync index bundle and store", cmd_convert,
            (TRUST_ENV, NO_VERIFY, SIGNING_KEYRING, MKSQUASHFS_ARGS, Option("casync-args", "casync extra args", "ARGS"),
             Option("ignore-image", "ignore image during conversion", "SLOTCLASS", repeat=True),
             CERT, KEY, KEYRING, INTERMEDIATE), "Convert options"),
    Command("encrypt", "<INBUNDLE> <OUTBUNDLE>", "Encrypt a crypt bundle", "Encrypt a crypt bundle", cmd_encrypt,
            (Option("to", "recipient cert(s)", "PEMFILE", repeat=True), KEYRING,
             Option("recipient-key-id", "identify recipients by subject key identifier"),
             Option("ec-layout", "shared-key (one ephemeral EC key per curve, default) or per-recipient (RAUC's)",
                    "LAYOUT")), "Encryption options"),
    Command("replace-signature", "<INBUMDLE> <INPUTSIG> <OUTBUNDLE>",
            "Replaces the signature of an already signed bundle",
            "Replaces the signature of an already signed bundle", cmd_replace_signature,
            (TRUST_ENV, NO_VERIFY, SIGNING_KEYRING, KEYRING, DECRYPT_KEY_EXT), "Replace signature options"),
    Command("extract-signature", "<BUNDLENAME> <OUTPUTSIG>", "Extract the bundle signature",
            "Extract the bundle signature", cmd_extract_signature, (TRUST_ENV, DECRYPT_KEY, RECIPIENT_CERT, KEYRING),
            "Extract signature options"),
    Command("extract", "<BUNDLENAME> <OUTPUTDIR>", "Extract the bundle content", "Extract the bundle content",
            cmd_extract, (TRUST_ENV, DECRYPT_KEY, RECIPIENT_CERT, KEYRING), "Extract options"),
)

INFO = Command("info", "<FILE>", "Show bundle information", "Print bundle info", cmd_info,
               (NO_VERIFY, NO_CHECK_TIME, OUTPUT_FORMAT, Option("dump-cert", "dump certificate"),
                Option("dump-recipients", "dump recipients"), DECRYPT_KEY, RECIPIENT_CERT, KEYRING, TRUST_ENV,
                *STREAMING), "Info options")


def commands() -> tuple[Command, ...]:
    """Every command, in the order of RAUC's command list."""
    target = {c.name: c for c in (*cli_install.COMMANDS, *cli_target.COMMANDS)}
    return (*HOST_COMMANDS, target["install"], INFO, target["mount"], target["service"], target["status"],
            target["write-slot"])


HELP = Command("help", "", "", "", cmd_help)


# --------------------------------------------------------------------------------------------
# parsing and help

def prog_name() -> str:
    """``rauc`` when called through the target's alias, else ``pyrauc``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "rauc" if name == "rauc" else "pyrauc"


def version_text(prog: str) -> str:
    """``rauc 1.15.2 (pyrauc 0.1.0)`` as ``rauc`` (tools parse "rauc X.Y"), else pyrauc first."""
    if prog == "rauc":
        return f"rauc {RAUC_COMPAT_VERSION} (pyrauc {__version__})"
    return f"pyrauc {__version__} (compatible with rauc {RAUC_COMPAT_VERSION})"


def main_help(prog: str) -> str:
    """The help of ``rauc --help``: global options, then the command list."""
    rows = []
    for c in commands():
        tabs = "\t" * max(1, 3 - (len(c.name) + 2) // 8)
        rows.append(f"  {c.name}{tabs}{c.listing}")
    description = (f"Command-specific help:\n  {prog} <COMMAND> --help\n\nList of {prog} commands:\n"
                   + "\n".join(rows) + "\n\n" + ENVIRONMENT)
    return goption.help_text(f"{prog} [OPTION…] <COMMAND>", [], MAIN, description=description)


def command_help(prog: str, command: Command) -> str:
    """The help of ``rauc <command> --help``."""
    usage = f"{prog} [OPTION…] {command.name}" + (f" {command.params}" if command.params else "")
    summary = command.summary + (f"\n\n{command.extra_summary}" if command.extra_summary else "")
    groups = [Group(command.group or "", command.options)] if command.options else []
    return goption.help_text(usage, groups, MAIN, summary=summary)


def _parse(argv: Sequence[str], prog: str) -> tuple[Command, argparse.Namespace] | int:
    """The command and its arguments, or an exit code when there is nothing to run."""
    try:
        first = goption.parse(argv, [MAIN], ignore_unknown=True)
    except goption.OptionError as e:
        err(str(e))
        return 1
    if not first.positionals:
        if first.values.get("debug"):
            _setup_logging(True)
        if first.values.get("version"):
            out(version_text(prog))
            return 0
        sys.stdout.write(main_help(prog))
        return 0 if first.values.get("help") else 1
    name = first.positionals[0]
    by_name = {c.name: c for c in (*commands(), HELP)}
    command = by_name.get(name)
    if command is None:
        out(f"Invalid command '{name}' given")
        sys.stdout.write(main_help(prog))
        return 1
    groups = [Group(command.group or "", command.options), MAIN]
    try:
        parsed = goption.parse(argv, groups)
    except goption.OptionError as e:
        err(str(e))
        if str(e).startswith("Unknown option"):
            sys.stdout.write(command_help(prog, command))
        return 1
    if parsed.values.get("help"):
        sys.stdout.write(command_help(prog, command))
        return 0
    values = goption.defaults(groups)
    values.update(parsed.values)
    rest = list(parsed.positionals)
    rest.remove(name)
    return command, argparse.Namespace(**values, args=rest, command=name, prog=prog)


def _setup_logging(debug: bool) -> None:
    """Diagnostics go to stderr in GLib's format; -d adds the debug ones."""
    setup_logging(debug)
    if debug:
        os.environ.setdefault("PYRAUC_DEBUG", "1")
        log.info("Debug log domains: 'rauc'")


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP end a command like Ctrl+C does: clean-up code runs, then exit 1."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    prog = prog_name()
    parsed = _parse(list(sys.argv[1:] if argv is None else argv), prog)
    if isinstance(parsed, int):
        return parsed
    command, args = parsed
    _setup_logging(bool(args.debug))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    try:
        for spec in args.confopt:   # checked for every command, before it does anything
            try:
                config.parse_override(spec)
            except RaucError as e:
                raise e.prefixed("Failed to initialize context: ") from e
        return int(command.run(args))
    except RaucError as e:
        err(str(e))
        return 1
    except KeyboardInterrupt:
        err("Interrupted")
        return 1
    except Exception as e:   # the last line of defence: one line, never a traceback
        log.debug("Traceback of the unexpected error:", exc_info=True)
        err(_unexpected(e))
        return 1


def _unexpected(e: Exception) -> str:
    """One line for an error no command expected (with -d, the traceback is logged before it)."""
    if isinstance(e, OSError) and e.strerror:
        where = f": {os.fsdecode(e.filename)}" if e.filename is not None else ""
        return f"{e.strerror}{where}"
    text = " ".join(str(e).split()) or type(e).__name__
    return f"Unexpected error: {text}"


if __name__ == "__main__":
    raise SystemExit(main())
