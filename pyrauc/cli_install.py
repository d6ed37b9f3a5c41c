"""``install`` and ``mount`` subcommands (registered into :mod:`pyrauc.cli`).

``install <BUNDLE>`` prints RAUC's progress lines (``"%3d%% <step>"``) on stdout, then on failure
``LastError: <reason>`` and ``Installing `<bundle>` failed`` (stderr, exit 1), on success
``Installing `<bundle>` succeeded`` (exit 0). ``mount <BUNDLE>`` verifies and mounts a bundle at
``<mountprefix>/bundle`` and leaves it mounted ("Mounted bundle at %s. Use 'umount %s' to unmount.").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from pyrauc.errors import RaucError


def _out(msg: str) -> None:
    print(msg, flush=True)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _debug_log(args: argparse.Namespace) -> Any:
    return _err if getattr(args, "debug", False) else (lambda msg: None)


def _load_config(args: argparse.Namespace) -> Any:
    from pyrauc.config import load_config
    try:
        return load_config(getattr(args, "conf", None), overrides=getattr(args, "confopt", None) or [])
    except RaucError as exc:
        raise RaucError(f"Failed to initialize context: {exc}") from exc


def cmd_install(args: argparse.Namespace) -> int:
    """``install <BUNDLE>``."""
    from pyrauc.install import InstallArgs, run_cli_install
    bundle = args.bundle
    try:
        config = _load_config(args)
    except RaucError as exc:
        _err(str(exc))
        return 1
    for message in getattr(config, "messages", []):
        _err(message)
    if args.bundle.startswith(("http://", "https://", "ftp://", "ftps://", "sftp://", "tftp://")):
        _out("LastError: Streaming bundles from a URL is not supported by pyrauc")
        _err(f"Installing `{bundle}` failed")
        return 1
    if bundle.startswith("file://"):
        if not bundle.startswith("file:///"):
            _err("file URI with hostname detected. Did you forget to add a leading / ?")
            return 1
        bundle = bundle[len("file://"):]
    install_args = InstallArgs(
        ignore_compatible=args.ignore_compatible, ignore_version_limit=args.ignore_version_limit,
        override_boot_slot=args.override_boot_slot, transaction_id=args.transaction_id,
        require_manifest_hash=args.require_manifest_hash, handler_args=args.handler_args,
        keyring_path=args.keyring, mountprefix=getattr(args, "mount", None))
    return run_cli_install(bundle, install_args, config=config, emit=_out, err=_err, log=_debug_log(args))


def cmd_mount(args: argparse.Namespace) -> int:
    """``mount <BUNDLE>``: verify, mount at <mountprefix>/bundle and leave it mounted."""
    from pyrauc import mount
    from pyrauc.bundle import open_bundle
    from pyrauc.signature import Keyring
    config = _load_config(args)
    keyring = config.to_keyring()
    if args.keyring:
        keyring = (Keyring(path=Path(args.keyring)) if keyring is None
                   else dataclasses.replace(keyring, path=Path(args.keyring), directory=None))
    bundle = open_bundle(args.bundle, keyring=keyring, key=args.key or config.encryption.key,
                         cert=config.encryption.cert, allowed_formats=config.bundle_formats,
                         max_signature_size=config.max_bundle_signature_size, log=_debug_log(args))
    prefix = getattr(args, "mount", None) or config.mountprefix
    target = mount.mount_bundle_persistent(bundle, prefix)
    _out(f"Mounted bundle at {target}. Use 'umount {target}' to unmount.")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``install`` and ``mount`` to the CLI."""
    p = subparsers.add_parser("install", parents=[common], help="Install a bundle",
                              description="Install a bundle")
    p.add_argument("--ignore-compatible", action="store_true", help="disable compatible check")
    p.add_argument("--ignore-version-limit", action="store_true", help="disable version limit check")
    p.add_argument("--transaction-id", metavar="UUID", help="custom transaction ID")
    p.add_argument("--require-manifest-hash", metavar="HASH", help="require the given manifest hash")
    p.add_argument("--handler-args", metavar="ARGS", help="extra handler arguments")
    p.add_argument("--keyring", metavar="PEMFILE", help="keyring file")
    p.add_argument("--override-boot-slot", metavar="BOOTNAME", help="override auto-detection of booted slot")
    p.add_argument("--progress", action="store_true", help="show progress bar")
    p.add_argument("bundle", metavar="BUNDLE")
    p.set_defaults(func=cmd_install)

    p = subparsers.add_parser("mount", parents=[common], help="Mount a bundle",
                              description="Mount a bundle (for development purposes)")
    p.add_argument("--keyring", metavar="PEMFILE", help="keyring file")
    p.add_argument("--key", metavar="PEMFILE|PKCS11-URL", help="decryption key")
    p.add_argument("bundle", metavar="BUNDLE")
    p.set_defaults(func=cmd_mount)
