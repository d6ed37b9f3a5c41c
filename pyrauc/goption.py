"""GLib GOption command-line semantics, as RAUC's ``main.c`` uses them.

RAUC parses its command line twice with GLib's GOption: first the application (global) options
only, ignoring unknown options, to find the command (the first argument that is not an option or
an option's value); then the command's option group together with the global options. So global
and command options may stand anywhere, before or after the command and between its arguments,
as ``--opt=value`` or ``--opt value``; ``--`` ends option parsing (and stays an argument when an
option-like argument follows it, as in GLib). Parse errors use GLib's text
("Unknown option --x", "Missing argument for --x"). Help text is laid out exactly as
``g_option_context_get_help`` does it (``Usage:`` first, one column for all descriptions).

This module knows nothing about RAUC's commands; :mod:`pyrauc.cli` describes them with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


class OptionError(Exception):
    """A command line GLib would refuse (the message is GLib's)."""


@dataclass(frozen=True)
class Option:
    """One GOptionEntry.

    ``arg`` is the argument description ("PEMFILE"); options without it are flags. ``repeat``
    collects every occurrence (G_OPTION_ARG_*_ARRAY); otherwise the last occurrence wins.
    """

    long: str
    help: str | None = None
    arg: str | None = None
    short: str | None = None
    repeat: bool = False
    hidden: bool = False
    dest: str | None = None
    aliases: tuple[str, ...] = ()        # further (hidden) short names, e.g. write-slot's -l

    @property
    def name(self) -> str:
        """The attribute the value is stored under."""
        return self.dest or self.long.replace("-", "_")

    @property
    def takes_arg(self) -> bool:
        return self.arg is not None

    def default(self) -> Any:
        if self.repeat:
            return []
        return None if self.takes_arg else False


@dataclass(frozen=True)
class Group:
    """A titled option group (GOptionGroup); the main group's title is "Application Options"."""

    title: str
    options: tuple[Option, ...]


@dataclass
class Parsed:
    """The result of a parse: option values by name, and the remaining (positional) arguments."""

    values: dict[str, Any] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _lookup(groups: Sequence[Group]) -> tuple[dict[str, Option], dict[str, Option]]:
    longs: dict[str, Option] = {}
    shorts: dict[str, Option] = {}
    for group in groups:
        for opt in group.options:
            longs.setdefault(opt.long, opt)
            for short in (opt.short, *opt.aliases):
                if short:
                    shorts.setdefault(short, opt)
    return longs, shorts


def _store(values: dict[str, Any], opt: Option, value: str | None) -> None:
    if opt.repeat:
        values.setdefault(opt.name, []).append(value)
    elif opt.takes_arg:
        values[opt.name] = value
    else:
        values[opt.name] = True


def parse(argv: Sequence[str], groups: Sequence[Group], *, ignore_unknown: bool = False) -> Parsed:
    """Parse ``argv`` (without the program name) against ``groups``.

    With ``ignore_unknown`` unknown options are kept in :attr:`Parsed.unknown` (and their
    position is not taken as a positional argument), as GLib's first pass does.
    """
    longs, shorts = _lookup(groups)
    result = Parsed()
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            # GLib drops the separator, unless an argument after it looks like an option
            if any(a.startswith("-") for a in args[i:]):
                result.positionals.append(arg)
            result.positionals.extend(args[i:])
            break
        if arg.startswith("--"):
            name, eq, inline = arg[2:].partition("=")
            opt = longs.get(name)
            if opt is None:
                if ignore_unknown:
                    result.unknown.append(arg)
                    continue
                raise OptionError(f"Unknown option {arg}")
            if not opt.takes_arg:
                _store(result.values, opt, None)
                continue
            if eq:
                _store(result.values, opt, inline)
            elif i < len(args):
                _store(result.values, opt, args[i])
                i += 1
            else:
                raise OptionError(f"Missing argument for --{opt.long}")
            continue
        if arg.startswith("-") and len(arg) > 1:
            i = _parse_shorts(arg, args, i, shorts, result, ignore_unknown)
            continue
        result.positionals.append(arg)
    return result


def _parse_shorts(arg: str, args: list[str], i: int, shorts: dict[str, Option], result: Parsed,
                  ignore_unknown: bool) -> int:
    """A cluster of short options ("-d", "-c FILE", "-dh"); returns the next index.

    As in GLib, every letter that takes a value takes the next argument ("-cfoo x": c=x), and
    the letters it does not know are reported together ("Unknown option -foo").
    """
    unknown = ""
    for letter in arg[1:]:
        opt = shorts.get(letter)
        if opt is None:
            unknown += letter
            continue
        if opt.takes_arg:
            if i >= len(args):
                raise OptionError(f"Missing argument for -{letter}")
            _store(result.values, opt, args[i])
            i += 1
        else:
            _store(result.values, opt, None)
    if unknown:
        if not ignore_unknown:
            raise OptionError(f"Unknown option -{unknown}")
        result.unknown.append(arg)
    return i


def defaults(groups: Iterable[Group]) -> dict[str, Any]:
    """Every option's value when it is not given."""
    values: dict[str, Any] = {}
    for group in groups:
        for opt in group.options:
            values.setdefault(opt.name, opt.default())
    return values


# --------------------------------------------------------------------------------------------
# help text (g_option_context_get_help)

def _entry_text(opt: Option) -> str:
    text = f"  -{opt.short}, --{opt.long}" if opt.short else f"  --{opt.long}"
    return f"{text}={opt.arg}" if opt.arg else text


def _entry_width(opt: Option) -> int:
    width = len(opt.long) + (4 if opt.short else 0)
    return width + (1 + len(opt.arg) if opt.arg else 0)


def help_text(usage: str, groups: Sequence[Group], main: Group, *, summary: str | None = None,
              description: str | None = None) -> str:
    """GLib's help: ``Usage:``, the summary, each group, the main group, the description.

    ``usage`` is the line after ``Usage:`` ("rauc [OPTION…] info <FILE>").
    """
    visible = [g for g in (*groups, main) if any(not o.hidden for o in g.options)]
    width = max((_entry_width(o) for g in visible for o in g.options if not o.hidden), default=0) + 4
    out = [f"Usage:\n  {usage}\n\n"]
    if summary:
        out.append(f"{summary}\n\n")
    for group in visible:
        title = "Options" if group is main and len(visible) == 1 else group.title
        out.append(f"{title}:\n")
        for opt in group.options:
            if opt.hidden:
                continue
            text = _entry_text(opt)
            out.append(f"{text}{' ' * (width + 4 - len(text))} {opt.help or ''}\n")
        out.append("\n")
    if description:
        out.append(f"{description}\n")
    return "".join(out)
