"""How a bundle may be opened: one :class:`BundleAccess` for every command and for install.

RAUC decides in one place (its context) which keyring verifies a bundle, which key decrypts an
encrypted one, which bundle formats are allowed and how large its signature may be: system.conf
(``[keyring]``, ``[encryption]``, ``bundle-formats``, ``max-bundle-signature-size``) with the
command line on top (``--keyring``, ``--key``, ``--no-verify``, ``--no-check-time``). A
:class:`BundleAccess` is that decision; :meth:`BundleAccess.open` opens a bundle with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyrauc.config import DEFAULT_MAX_BUNDLE_SIGNATURE_SIZE, SystemConfig

if TYPE_CHECKING:    # bundle and keyring load cryptography: only commands that open a bundle need them
    from pyrauc.bundle import Bundle
    from pyrauc.signature import Keyring

#: URL schemes RAUC streams bundles from (pyrauc has no streaming yet)
STREAMING_SCHEMES: tuple[str, ...] = ("http://", "https://", "ftp://", "ftps://", "sftp://", "tftp://")
NO_STREAMING = "Streaming bundles from a URL is not supported by pyrauc"


def is_url(source: str) -> bool:
    """Whether a bundle argument is a URL to stream from rather than a local path."""
    return source.startswith(STREAMING_SCHEMES)


@dataclass(frozen=True)
class BundleAccess:
    """Keyring, decryption key and limits for opening bundles."""

    keyring: Keyring | None = None
    verify: bool = True
    key: str | None = None                   # decryption key: PEM file or pkcs11: URI
    cert: str | None = None                  # the recipient certificate that goes with it
    allowed_formats: tuple[str, ...] | None = None
    max_signature_size: int = DEFAULT_MAX_BUNDLE_SIGNATURE_SIZE

    @classmethod
    def build(cls, config: SystemConfig | None, *, keyring: str | None = None, key: str | None = None,
              cert: str | None = None, verify: bool = True, no_check_time: bool = False) -> BundleAccess:
        """system.conf's settings (if there is one) with the command line's on top."""
        from pyrauc.signature import Keyring

        base = config.to_keyring(no_check_time) if config is not None else None
        ring = (base or Keyring()).with_path(keyring) if keyring else base
        if ring is not None and no_check_time:
            ring = dataclasses.replace(ring, no_check_time=True)
        if key is None and config is not None:
            key, cert = config.encryption.key, cert or config.encryption.cert
        return cls(
            keyring=ring, verify=verify, key=key, cert=cert,
            allowed_formats=tuple(config.bundle_formats) if config is not None else None,
            max_signature_size=(config.max_bundle_signature_size if config is not None
                                else DEFAULT_MAX_BUNDLE_SIGNATURE_SIZE),
        )

    def with_keyring(self, keyring: Keyring | None) -> BundleAccess:
        """The same access, verifying against ``keyring``."""
        return dataclasses.replace(self, keyring=keyring)

    def open(self, path: str | Path, *, decrypt: bool = True, formats: Sequence[str] | None = None) -> Bundle:
        """Open (decrypt, verify, load the manifest of) the bundle at ``path``."""
        from pyrauc import bundle

        allowed = formats if formats is not None else self.allowed_formats
        return bundle.open_bundle(path, keyring=self.keyring, verify=self.verify,
                                  key=self.key if decrypt else None, cert=self.cert,
                                  allowed_formats=allowed, max_signature_size=self.max_signature_size)
