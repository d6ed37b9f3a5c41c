"""Exception types of pyrauc.

Every error a user can cause is a :class:`RaucError` whose ``str()`` is one clear line, already
carrying its context as it travelled up ("Failed to create bundle: failed to sign manifest: ...").
The CLI prints that line and exits 1; nothing else is caught there.
"""

from __future__ import annotations

_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r", "\x0b": "\\v", "\x0c": "\\f",
                              "\x1c": "\\x1c", "\x1d": "\\x1d", "\x1e": "\\x1e", "\x85": "\\x85",
                              "\u2028": "\\u2028", "\u2029": "\\u2029"})


class RaucError(Exception):
    """Base class: a user-facing failure with a one-line message.

    Messages repeat values from untrusted input (file names, digests, keys of a manifest); a line
    break among them is shown escaped ("\\n"), so the message stays one line.
    """

    def __str__(self) -> str:
        return super().__str__().translate(_LINE_BREAKS)

    def prefixed(self, prefix: str) -> RaucError:
        """Return an error of the same type whose message starts with ``prefix``."""
        err = type(self)(f"{prefix}{self}")
        err.__cause__ = self
        return err


class KeyFileError(RaucError):
    """A GLib key file (manifest, system.conf, status file) is malformed."""


class ManifestError(RaucError):
    """A manifest is invalid or inconsistent."""


class BundleError(RaucError):
    """A bundle is malformed, or cannot be created, opened or extracted."""


class SignatureError(RaucError):
    """Signing or signature verification failed."""


class VerityError(RaucError):
    """The dm-verity hash tree does not match the data ("bundle payload is corrupted")."""


class CryptError(RaucError):
    """Payload encryption or decryption failed."""


class EnvelopeError(RaucError):
    """CMS EnvelopedData could not be built or decrypted."""


class KeyLoadError(RaucError):
    """A key or certificate (file or PKCS#11 URI) could not be loaded."""


class ConfigError(RaucError):
    """system.conf is invalid."""


class InstallError(RaucError):
    """An installation failed."""


class InstallRejected(InstallError):
    """The system refused the bundle (compatible mismatch, install-check hook): RAUC's "rejected"."""


class BootloaderError(RaucError):
    """A bootloader backend failed."""
