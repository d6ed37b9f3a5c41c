"""``install``, ``mount`` and ``service``: the target commands that open a bundle.

``install <BUNDLE>`` prints RAUC's progress lines (``"%3d%% <step>"``) on stdout, then on failure
``LastError: <reason>`` and ``Installing `<bundle>` failed`` (stderr, exit 1), on success
``Installing `<bundle>` succeeded`` (exit 0). With ``--progress`` on a terminal a progress bar
stays below the scrolling lines, drawn as RAUC's client draws it. ``mount <BUNDLE>`` verifies and
mounts a bundle at ``<mountprefix>/bundle`` and leaves it mounted.

``install`` goes through the D-Bus service when :func:`pyrauc.client.use_service` says so (the
service's ``installing`` line first, exit 2 on D-Bus errors, 3 on Ctrl+C); ``service`` runs
:mod:`pyrauc.service`.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import re
import struct
import sys
import termios
from collections.abc import Callable
from typing import TextIO

from pyrauc.access import is_url
from pyrauc.cli_common import (
    DECRYPT_KEY,
    KEYRING,
    STREAMING,
    Command,
    bundle_access,
    err,
    local_path,
    out,
    positionals,
    stream_options,
    system_config,
)
from pyrauc.errors import RaucError
from pyrauc.goption import Option

_PROGRESS_LINE = re.compile(r"^\s*(\d{1,3})% ")


def _columns(stream: TextIO) -> int:
    """The terminal's width (TIOCGWINSZ); 80 with RAUC's warning if it cannot be read. A terminal
    that reports 0 columns (a serial console) gets RAUC's empty bar ``[]``."""
    try:
        packed = fcntl.ioctl(stream.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        return int(struct.unpack("HHHH", packed)[1])
    except OSError as e:
        err(f"Unable to obtain window parameters: {e}")
        return 80


def progress_bar(percent: int, columns: int) -> str:
    """RAUC's bar: ``[`` + (columns-7) cells (``#`` up to the percentage) + ``]`` + ``"%3d%%"``."""
    cells = columns - 7
    filled = cells * percent // 100
    return "[" + "".join("#" if i <= filled else " " for i in range(cells)) + f"]{percent:3d}%"


def progress_printer(stream: TextIO, bar: bool) -> Callable[[str], None]:
    """Print install lines; with ``bar`` each progress line is followed by the bar, which is
    erased (cursor up one line, clear to the end) before the next line."""
    if not bar:
        def plain(line: str) -> None:
            stream.write(line + "\n")
            stream.flush()
        return plain
    columns = _columns(stream)
    drawn = False

    def with_bar(line: str) -> None:
        nonlocal drawn
        m = _PROGRESS_LINE.match(line)
        if m is None:
            if drawn:
                stream.write("\r\033[F\033[J")
                drawn = False
            stream.write(("\033[J" if line.startswith("LastError:") else "") + line + "\n")
        else:   # as RAUC, every progress line first erases the line above (the first: "installing")
            stream.write(f"\r\033[F\033[J{line}\n{progress_bar(int(m.group(1)), columns)}\n")
            drawn = True
        stream.flush()
    return with_bar


def cmd_install(args: argparse.Namespace) -> int:
    """``install <BUNDLE>`` through the D-Bus service when it is there, else in this process
    (:func:`pyrauc.client.use_service` decides)."""
    from pyrauc import client

    if client.use_service(args):
        return _install_via_service(args)
    return _install_here(args)


def _install_via_service(args: argparse.Namespace) -> int:
    """As a RAUC service build: the service installs, this process shows its progress."""
    from pyrauc import client

    (source,) = positionals(args, "A bundle filename name must be provided")
    if args.keyring:
        raise RaucError(client.KEYRING_REFUSED)
    path = source if is_url(source) else os.path.abspath(local_path(source))
    if not is_url(source) and not os.path.exists(path):
        raise RaucError(f"No such file: {path}")
    emit = progress_printer(sys.stdout, bool(args.progress) and sys.stdout.isatty())
    tls = {"tls-cert": args.tls_cert, "tls-key": args.tls_key, "tls-ca": args.tls_ca,
           "tls-no-verify": args.tls_no_verify, "http-headers": list(args.http_header or [])}
    call_args = client.install_args(ignore_compatible=bool(args.ignore_compatible),
                                    ignore_version_limit=bool(args.ignore_version_limit),
                                    transaction_id=args.transaction_id,
                                    require_manifest_hash=args.require_manifest_hash, tls=tls)
    return client.install(path, call_args, emit=emit, out=out, err=err)


def _install_here(args: argparse.Namespace) -> int:
    """As a RAUC build without the service: the install runs in this process."""
    from pyrauc.install import InstallArgs, run_cli_install

    config = system_config(args)
    (source,) = positionals(args, "A bundle filename name must be provided")
    if is_url(source):
        path = source
    else:
        path = os.path.abspath(local_path(source))
        if not os.path.exists(path):
            raise RaucError(f"No such file: {path}")
    emit = progress_printer(sys.stdout, bool(args.progress) and sys.stdout.isatty())
    install_args = InstallArgs(
        ignore_compatible=args.ignore_compatible, ignore_version_limit=args.ignore_version_limit,
        override_boot_slot=args.override_boot_slot, transaction_id=args.transaction_id,
        require_manifest_hash=args.require_manifest_hash, handler_args=args.handler_args,
        keyring_path=args.keyring, mountprefix=args.mount, streaming=stream_options(args, config))
    return run_cli_install(path, install_args, config=config, emit=emit, err=err)


def cmd_mount(args: argparse.Namespace) -> int:
    """``mount <BUNDLE>``: verify, mount at <mountprefix>/bundle and leave it mounted."""
    from pyrauc import mount

    config = system_config(args)
    (source,) = positionals(args, "A file name must be provided")
    access = bundle_access(args, config)
    if is_url(source):
        access = access.with_info_headers()
    else:
        source = local_path(source)
        logging.getLogger("pyrauc").info("Reading bundle: %s", source)
    with access.open(source, detached=True) as bundle:
        prefix = args.mount or config.mountprefix
        target = mount.mount_bundle_persistent(bundle, prefix)
    out(f"Mounted bundle at {target}. Use 'umount {target}' to unmount.")
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    """``service``: the D-Bus service (:mod:`pyrauc.service`) until SIGTERM."""
    from pyrauc.service import ServiceOptions, run_service

    config = system_config(args)
    positionals(args)
    return run_service(ServiceOptions(config, override_boot_slot=args.override_boot_slot,
                                      handler_args=args.handler_args, keyring=args.keyring, mountprefix=args.mount),
                       out)


HANDLER_ARGS = Option("handler-args", "extra handler arguments", "ARGS")
OVERRIDE_BOOT_SLOT = Option("override-boot-slot", "override auto-detection of booted slot", "BOOTNAME")

COMMANDS: tuple[Command, ...] = (
    Command("install", "<BUNDLE>", "Install a bundle", "Install a bundle", cmd_install, (
        Option("ignore-compatible", "disable compatible check"),
        Option("ignore-version-limit", "disable version limit check"),
        Option("transaction-id", "custom transaction id", "UUID"),
        Option("require-manifest-hash", "require the manifest to have this hash", "HASH"),
        Option("progress", "show progress bar"),
        HANDLER_ARGS, KEYRING, OVERRIDE_BOOT_SLOT,
        *STREAMING,
    ), "Install options"),
    Command("mount", "<BUNDLENAME>", "Mount a bundle", "Mount a bundle (for development purposes)", cmd_mount,
            (KEYRING, DECRYPT_KEY, *STREAMING), "Mount options"),
    Command("service", "", "Start RAUC service", "Start RAUC service", cmd_service,
            (HANDLER_ARGS, OVERRIDE_BOOT_SLOT, KEYRING), "Service options"),
)
