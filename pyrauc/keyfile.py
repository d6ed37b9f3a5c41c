"""GLib GKeyFile semantics for manifests, system.conf and status files.

RAUC reads and writes all its INI-like files with GLib's ``GKeyFile`` (flags ``G_KEY_FILE_NONE``)
and signs the bytes produced by ``g_key_file_to_data``.  This module reproduces that behaviour
exactly where it matters for interoperability:

* parsing: ``#`` comments and blank lines are dropped (``G_KEY_FILE_NONE``), leading whitespace of
  a line is ignored, whitespace around ``=`` is trimmed (trailing whitespace of a value is kept),
  one trailing ``\\r`` per line is removed, a NUL ends the line (GLib handles lines as C strings:
  ``key=a\\0b`` is ``key=a``, no NUL reaches a value), duplicate groups merge, duplicate keys are
  all kept in the file but the last one wins on lookup, locale keys ``key[xx]`` are dropped unless
  the locale is ``C`` (what GLib does in the C locale);
* values: string escapes ``\\s \\n \\t \\r \\\\`` and lists with ``;`` separator and ``\\;``;
* integers/booleans with GLib's quirks (``strtol``/``strtoull`` parsing);
* RAUC's strict "consume" pattern (``consume_*``, ``ensure_group_consumed``, ``ensure_consumed``);
* :meth:`KeyFile.to_data` = ``g_key_file_to_data`` of a file without comments;
* :func:`read_file` reads a key file's bytes with GLib's "Failed to open file" message.

GLib quotes names with typographic quotes; pyrauc uses ASCII ``'`` like RAUC's documentation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pyrauc.errors import KeyFileError, RaucError

_SPACE = " \t\n\v\f\r"
_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_LOCALE_KEY = re.compile(r"([^\[\]=]+)\[([^\[\]]*)\]")
_UINT64_MAX = 2**64 - 1


@dataclass(eq=False)
class _Pair:
    key: str
    value: str


class _Group:
    """One group: pairs in file order plus GLib's lookup map (last pair of a key wins)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pairs: list[_Pair] = []
        self.lookup: dict[str, _Pair] = {}

    def add(self, key: str, value: str) -> None:
        pair = _Pair(key, value)
        self.pairs.append(pair)
        self.lookup[key] = pair


def _is_group_name(name: str) -> bool:
    return bool(name) and not any(c in "[]" or ord(c) < 0x20 or ord(c) == 0x7F for c in name)


def _is_key_name(name: str) -> bool:
    if not name:
        return False
    i = 0
    while i < len(name) and name[i] not in "=[]":
        i += 1
    if i == 0 or name[0] == " " or name[i - 1] == " ":
        return False
    if i < len(name) and name[i] == "[":
        i += 1
        while i < len(name) and (name[i].isalnum() or name[i] in "-_.@"):
            i += 1
        if i >= len(name) or name[i] != "]":
            return False
        i += 1
    return i == len(name)


def escape_string(value: str, escape_separator: bool = False) -> str:
    """Encode ``value`` as GLib's ``g_key_file_parse_string_as_value`` does."""
    out: list[str] = []
    leading = True
    for c in value:
        if c == " " and leading:
            out.append("\\s")
        elif c == "\t" and leading:
            out.append("\\t")
        else:
            leading = False
            if c == "\n":
                out.append("\\n")
            elif c == "\r":
                out.append("\\r")
            elif c == "\\":
                out.append("\\\\")
            elif escape_separator and c == ";":
                out.append("\\;")
            else:
                out.append(c)
    return "".join(out)


def _unescape(value: str, pieces: list[str] | None) -> str | None:
    """Decode GLib escapes; split on ``;`` when ``pieces`` is given. None on invalid escapes."""
    out: list[str] = []
    ok = True
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == "\\":
            i += 1
            if i >= n:
                ok = False  # escape character at end of line
                break
            e = value[i]
            mapped = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(e)
            if mapped is not None:
                out.append(mapped)
            elif pieces is not None and e == ";":
                out.append(";")
            else:
                out.append("\\" + e)
                ok = False
        elif pieces is not None and c == ";":
            pieces.append("".join(out))
            out = []
        else:
            out.append(c)
        i += 1
    if pieces is not None and out:
        pieces.append("".join(out))
    return "".join(out) if ok else None


def read_file(path: str | os.PathLike[str], error: type[RaucError] = KeyFileError) -> bytes:
    """The bytes of ``path``; ``error`` "Failed to open file '<path>': <reason>" if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise error(f"Failed to open file '{os.fspath(path)}': {e.strerror}") from e


class KeyFile:
    """An in-memory GKeyFile (groups of key=value pairs, in file order)."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self._groups: dict[str, _Group] = {}

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, data: str | bytes, source: str = "") -> KeyFile:
        """Parse key file text like ``g_key_file_load_from_data`` (KeyFileError on syntax errors)."""
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise KeyFileError("Key file contains invalid UTF-8") from e
        else:
            text = data
        kf = cls(source)
        current: _Group | None = None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for raw_line in lines:
            line = raw_line[:-1] if raw_line.endswith("\r") else raw_line
            line = line.split("\0", 1)[0]   # GLib reads a line as a C string: it ends at a NUL
            stripped = line.lstrip(_SPACE)
            if stripped == "" or stripped.startswith("#"):
                continue
            if cls._line_is_group(stripped):
                name = stripped[1 : stripped.index("]")]
                if not _is_group_name(name):
                    raise KeyFileError(f"Invalid group name: {name}")
                current = kf._add_group(name)
                continue
            eq = stripped.find("=")
            if eq <= 0:
                raise KeyFileError(
                    f"Key file contains line “{line}” which is not a key-value pair, group, or comment"
                )
            if current is None:
                raise KeyFileError("Key file does not start with a group")
            key = stripped[:eq].rstrip(_SPACE)
            value = stripped[eq + 1 :].lstrip(_SPACE)
            if not _is_key_name(key):
                raise KeyFileError(f"Invalid key name: {key}")
            m = _LOCALE_KEY.fullmatch(key)
            if m is not None and m.group(2) not in ("", "C"):
                continue  # uninteresting translation, dropped as GLib does without KEEP_TRANSLATIONS
            current.add(key, value)
        return kf

    @staticmethod
    def _line_is_group(line: str) -> bool:
        if not line.startswith("["):
            return False
        end = line.find("]")
        return end > 0 and line[end + 1 :].strip(" \t") == ""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyFile:
        """Read and parse a key file."""
        return cls.parse(read_file(path), os.fspath(path))

    def _add_group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            group = _Group(name)
            self._groups[name] = group
        return group

    # -- inspection ------------------------------------------------------------------------
    def groups(self) -> list[str]:
        return list(self._groups)

    def keys(self, group: str) -> list[str]:
        """Keys of ``group`` in file order (a duplicated key appears more than once, as in GLib)."""
        return [p.key for p in self._group(group).pairs]

    def has_group(self, group: str) -> bool:
        return group in self._groups

    def has_key(self, group: str, key: str) -> bool:
        g = self._groups.get(group)
        return g is not None and key in g.lookup

    def _group(self, group: str) -> _Group:
        g = self._groups.get(group)
        if g is None:
            raise KeyFileError(f"Key file does not have group “{group}”")
        return g

    # -- getters ---------------------------------------------------------------------------
    def get_value(self, group: str, key: str) -> str:
        """The raw value, escapes not decoded."""
        pair = self._group(group).lookup.get(key)
        if pair is None:
            raise KeyFileError(f"Key file does not have key “{key}” in group “{group}”")
        return pair.value

    def get_string(self, group: str, key: str) -> str:
        """The value with GLib escapes (``\\s \\n \\t \\r \\\\``) decoded."""
        result = _unescape(self.get_value(group, key), None)
        if result is None:
            raise KeyFileError(f"Key file contains key “{key}” which has a value that cannot be interpreted.")
        return result

    def get_string_list(self, group: str, key: str) -> list[str]:
        """A ``;``-separated list (``\\;`` escapes the separator, trailing ``;`` optional)."""
        pieces: list[str] = []
        if _unescape(self.get_value(group, key), pieces) is None:
            raise KeyFileError(f"Key file contains key “{key}” which has a value that cannot be interpreted.")
        return pieces

    def get_boolean(self, group: str, key: str) -> bool:
        """``true``/``1`` or ``false``/``0`` (case-sensitive, trailing whitespace ignored)."""
        value = self.get_value(group, key).rstrip(_SPACE)
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise KeyFileError(f"Key file contains key “{key}” which has a value that cannot be interpreted.")

    def get_integer(self, group: str, key: str) -> int:
        """A 32-bit signed integer parsed like GLib (``strtol``, base 10)."""
        value = self.get_value(group, key)
        m = _STRTOL.match(value)
        rest = value[m.end() :] if m else value
        number = int(m.group(1) + m.group(2)) if m else 0
        if value == "" or (rest and rest[0] not in _SPACE) or not -(2**31) <= number < 2**31:
            raise KeyFileError(
                f"Key file contains key “{key}” in group “{group}” "
                "which has a value that cannot be interpreted."
            )
        return number

    def get_uint64(self, group: str, key: str) -> int:
        """An unsigned 64-bit integer parsed like GLib (``g_ascii_strtoull``, base 10)."""
        value = self.get_value(group, key)
        m = _STRTOL.match(value)
        if value == "" or m is None or m.end() != len(value):
            raise KeyFileError(
                f"Key “{key}” in group “{group}” has value “{value}” where uint64 was expected"
            )
        number = min(int(m.group(2)), _UINT64_MAX)
        if m.group(1) == "-":
            number = (-number) % 2**64
        return number

    # -- RAUC's consume pattern ----------------------------------------------------------------
    def _present(self, group: str, key: str) -> bool:
        return self.has_key(group, key)

    def consume_string(self, group: str, key: str, default: str | None = None) -> str | None:
        """Get and remove a string; ``default`` if absent; empty -> "Missing value for key 'k'"."""
        if not self._present(group, key):
            return default
        value = self.get_string(group, key)
        if value == "":
            raise KeyFileError(f"Missing value for key '{key}'")
        self.remove_key(group, key)
        return value

    def consume_string_list(self, group: str, key: str, default: list[str] | None = None) -> list[str] | None:
        if not self._present(group, key):
            return default
        value = self.get_string_list(group, key)
        self.remove_key(group, key)
        return value

    def consume_boolean(self, group: str, key: str, default: bool | None = None) -> bool | None:
        if not self._present(group, key):
            return default
        value = self.get_boolean(group, key)
        self.remove_key(group, key)
        return value

    def consume_integer(self, group: str, key: str, default: int | None = None) -> int | None:
        if not self._present(group, key):
            return default
        value = self.get_integer(group, key)
        self.remove_key(group, key)
        return value

    def consume_uint64(self, group: str, key: str, default: int | None = None) -> int | None:
        if not self._present(group, key):
            return default
        value = self.get_uint64(group, key)
        self.remove_key(group, key)
        return value

    def ensure_group_consumed(self, group: str) -> None:
        """Fail with "Invalid key 'k' in group '[g]'" if keys are left, then remove the group."""
        g = self._groups.get(group)
        if g is None:
            return
        if g.pairs:
            raise KeyFileError(f"Invalid key '{g.pairs[0].key}' in group '[{group}]'")
        self.remove_group(group)

    def ensure_consumed(self) -> None:
        """Fail with "Invalid group '[g]'" if any group is left."""
        for name in self._groups:
            raise KeyFileError(f"Invalid group '[{name}]'")

    # -- setters ---------------------------------------------------------------------------
    def set_value(self, group: str, key: str, value: str) -> None:
        """Set the raw value (replaces the value in place if the key exists, else appends)."""
        if not _is_key_name(key):
            raise KeyFileError(f"Invalid key name: {key}")
        if not _is_group_name(group):
            raise KeyFileError(f"Invalid group name: {group}")
        g = self._add_group(group)
        pair = g.lookup.get(key)
        if pair is None:
            g.add(key, value)
        else:
            pair.value = value

    def set_string(self, group: str, key: str, value: str) -> None:
        self.set_value(group, key, escape_string(value))

    def set_string_list(self, group: str, key: str, value: list[str]) -> None:
        self.set_value(group, key, "".join(escape_string(v, True) + ";" for v in value))

    def set_boolean(self, group: str, key: str, value: bool) -> None:
        self.set_value(group, key, "true" if value else "false")

    def set_integer(self, group: str, key: str, value: int) -> None:
        self.set_value(group, key, str(int(value)))

    def set_uint64(self, group: str, key: str, value: int) -> None:
        self.set_value(group, key, str(int(value)))

    def remove_key(self, group: str, key: str) -> None:
        """Remove the key (the pair a lookup finds, as GLib does)."""
        g = self._group(group)
        pair = g.lookup.pop(key, None)
        if pair is None:
            raise KeyFileError(f"Key file does not have key “{key}” in group “{group}”")
        g.pairs.remove(pair)

    def remove_group(self, group: str) -> None:
        self._group(group)
        del self._groups[group]

    # -- output ----------------------------------------------------------------------------
    def to_data(self) -> str:
        """Exactly ``g_key_file_to_data``: groups separated by one blank line, none at the end."""
        return "\n".join(
            f"[{g.name}]\n" + "".join(f"{p.key}={p.value}\n" for p in g.pairs) for g in self._groups.values()
        )

    def __repr__(self) -> str:
        return f"<KeyFile {self.source or '(memory)'} groups={self.groups()}>"
