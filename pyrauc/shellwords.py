"""Splitting argument strings as GLib's g_shell_parse_argv does (with its error texts).

RAUC splits ``--mksquashfs-args``, ``extra-mkfs-opts`` and handler arguments with GLib; the
quoting rules of :func:`shlex.split` in POSIX mode are the same for what these strings contain,
so only the errors are translated to GLib's wording.
"""

from __future__ import annotations

import shlex


class ShellSplitError(ValueError):
    """The text does not split (an unmatched quote or a trailing backslash)."""


def split(text: str) -> list[str]:
    """The words of ``text``; ShellSplitError with GLib's message if it has an unmatched quote."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        if "escaped" in str(exc):
            raise ShellSplitError(f"Text ended just after a \u201c\\\u201d character. (The text was "
                                  f"\u201c{text}\u201d)") from None
        raise ShellSplitError(f"Text ended before matching quote was found for {_open_quote(text)}. "
                              f"(The text was \u201c{text}\u201d)") from None


def _open_quote(text: str) -> str:
    """The quote character left open at the end of ``text``."""
    quote = ""
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"':
                escaped = True
        elif ch == "\\":
            escaped = True
        elif ch in "'\"":
            quote = ch
    return quote or "'"
