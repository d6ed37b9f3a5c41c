"""How a bundle may be opened: one :class:`BundleAccess` for every command and for install.

RAUC decides in one place (its context) which keyring verifies a bundle, which key decrypts an
encrypted one, which bundle formats are allowed, how large its signature may be and how a remote
bundle is reached: system.conf (``[keyring]``, ``[encryption]``, ``bundle-formats``,
``max-bundle-signature-size``, ``[streaming]``) with the command line on top (``--keyring``,
``--key``, ``--no-verify``, ``--no-check-time``, ``--tls-*``, ``-H``). A :class:`BundleAccess` is
that decision; :meth:`BundleAccess.open` opens a bundle with it, a local file or a URL.

A URL (http/https) is streamed: ``sandboxed=True`` (install, mount, the service's InspectBundle)
starts the NBD helper as the sandbox user (:class:`pyrauc.nbd.NbdSource`), whose socket the mount
later hands to the kernel; ``sandboxed=False`` (the CLI's info and extract-signature) reads the
framing and the CMS with Range requests in this process, as the calling user
(:class:`pyrauc.stream.HttpSource`: no root, no NBD). Commands that check or copy the whole
payload themselves refuse URLs (:data:`REMOTE_REFUSED`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyrauc import stream
from pyrauc.config import DEFAULT_MAX_BUNDLE_SIGNATURE_SIZE, SystemConfig
from pyrauc.errors import BundleError
from pyrauc.stream import StreamOptions

if TYPE_CHECKING:    # bundle and keyring load cryptography: only commands that open a bundle need them
    from pyrauc.bundle import Bundle, RemoteSource
    from pyrauc.signature import Keyring

log = logging.getLogger(__name__)

#: RAUC's remote schemes (only http and https can be streamed)
STREAMING_SCHEMES: tuple[str, ...] = ("http://", "https://", "ftp://", "ftps://", "sftp://", "tftp://")
REMOTE_REFUSED = "Refused to verify remote bundle. Provide a local bundle instead."


def is_url(source: str) -> bool:
    """Whether a bundle argument is a URL to stream from rather than a local path."""
    return stream.is_remote(source)


def refuse_remote(source: str) -> None:
    """extract, resign, replace-signature, convert, encrypt: RAUC's refusal of a URL."""
    if is_url(source):
        raise BundleError(REMOTE_REFUSED)


@dataclass(frozen=True)
class BundleAccess:
    """Keyring, decryption key, limits and streaming options for opening bundles."""

    keyring: Keyring | None = None
    verify: bool = True
    key: str | None = None                   # decryption key: PEM file or pkcs11: URI
    cert: str | None = None                  # the recipient certificate that goes with it
    allowed_formats: tuple[str, ...] | None = None
    max_signature_size: int = DEFAULT_MAX_BUNDLE_SIGNATURE_SIZE
    streaming: StreamOptions = field(default_factory=StreamOptions)
    send_headers: tuple[str, ...] = ()       # [streaming] send-headers items

    @classmethod
    def build(cls, config: SystemConfig | None, *, keyring: str | None = None, key: str | None = None,
              cert: str | None = None, verify: bool = True, no_check_time: bool = False,
              streaming: StreamOptions | None = None) -> BundleAccess:
        """system.conf's settings (if there is one) with the command line's on top."""
        from pyrauc.signature import Keyring

        base = config.to_keyring(no_check_time) if config is not None else None
        ring = (base or Keyring()).with_path(keyring) if keyring else base
        if ring is not None and no_check_time:
            ring = dataclasses.replace(ring, no_check_time=True)
        if key is None and config is not None:
            key, cert = config.encryption.key, cert or config.encryption.cert
        conf_streaming = config.streaming if config is not None else {}
        send = conf_streaming.get("send-headers", "")
        return cls(
            keyring=ring, verify=verify, key=key, cert=cert,
            allowed_formats=tuple(config.bundle_formats) if config is not None else None,
            max_signature_size=(config.max_bundle_signature_size if config is not None
                                else DEFAULT_MAX_BUNDLE_SIGNATURE_SIZE),
            streaming=streaming or StreamOptions.build(conf_streaming),
            send_headers=tuple(item for item in send.split(";") if item),
        )

    def check_keyring(self) -> None:
        """Refuse early, as RAUC does before it reads anything, when verifying has no keyring."""
        if self.verify:
            from pyrauc.keyring import require_keyring

            require_keyring(self.keyring)

    def with_keyring(self, keyring: Keyring | None) -> BundleAccess:
        """The same access, verifying against ``keyring``."""
        return dataclasses.replace(self, keyring=keyring)

    def with_info_headers(self, *, system_info: Mapping[str, str] | None = None, variant: str | None = None,
                          transaction_id: str | None = None) -> BundleAccess:
        """The same access, sending ``send-headers`` (and RAUC_HTTP_* of the system-info handler) on the
        first request of a stream."""
        headers = stream.auto_headers(self.send_headers, system_info=system_info, variant=variant,
                                      transaction_id=transaction_id)
        return dataclasses.replace(self, streaming=dataclasses.replace(self.streaming, info_headers=tuple(headers)))

    def open(self, path: str | Path, *, decrypt: bool = True, formats: Sequence[str] | None = None,
             sandboxed: bool = True, detached: bool = False) -> Bundle:
        """Open (decrypt, verify, load the manifest of) the bundle at ``path``, a file or a URL.

        A streamed bundle must be closed (:meth:`pyrauc.bundle.Bundle.close`) to stop its stream;
        ``detached``: its helper will outlive this process (``rauc mount``).
        """
        from pyrauc import bundle

        allowed = formats if formats is not None else self.allowed_formats
        if isinstance(path, str) and is_url(path):
            return self._open_remote(path, allowed, decrypt, sandboxed, detached)
        return bundle.open_bundle(path, keyring=self.keyring, verify=self.verify,
                                  key=self.key if decrypt else None, cert=self.cert,
                                  allowed_formats=allowed, max_signature_size=self.max_signature_size)

    def _open_remote(self, url: str, allowed: Sequence[str] | None, decrypt: bool,
                     sandboxed: bool, detached: bool = False) -> Bundle:
        from pyrauc import bundle

        log.info("Remote URI detected, streaming bundle...")
        scheme = url.split(":", 1)[0].lower()
        if scheme not in stream.SCHEMES:
            raise BundleError(f"Failed to stream bundle {stream.redact(url)}: failed to configure streaming: "
                              f"Protocol \"{scheme}\" not supported")
        source: RemoteSource
        try:
            if sandboxed:
                from pyrauc.nbd import NbdSource

                source = NbdSource(url, self.streaming, detached=detached)
            else:
                source = stream.HttpSource(url, self.streaming)
        except stream.StreamError as e:
            raise BundleError(f"Failed to stream bundle {stream.redact(url)}: {e}") from e
        info = getattr(source, "info", None)
        if info is not None:
            log.info(f"received HTTP server info: total size {bundle.format_size_long(info.size)}")
        try:
            return bundle.open_bundle(source, keyring=self.keyring, verify=self.verify,
                                             key=self.key if decrypt else None, cert=self.cert,
                                             allowed_formats=allowed, max_signature_size=self.max_signature_size)
        except BaseException:
            source.close()
            raise

