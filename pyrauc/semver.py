"""Semantic versions as RAUC reads them: ``Major[.Minor[.Patch]][-pre_release][+build]``.

Used for the manifest's ``min-rauc-version`` and ``version`` and for system.conf's
``min-bundle-version``. Missing minor/patch count as 0; precedence is SemVer 2.0's: a
pre-release sorts before its release, pre-release identifiers compare numerically when both are
numeric and as text otherwise (numeric ones first), and build metadata does not count
(``1000-rc.1+21000101``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?)?"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)


@dataclass(frozen=True)
class Version:
    """A parsed version; ordering follows SemVer 2.0 precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    pre_release: tuple[str, ...] = ()
    build: str | None = None

    def _key(self) -> tuple[tuple[int, int, int], int, tuple[tuple[int, int, str], ...]]:
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre_release)
        return (self.major, self.minor, self.patch), 0 if self.pre_release else 1, pre

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __le__(self, other: Version) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: Version) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: Version) -> bool:
        return self._key() >= other._key()

    def same_precedence(self, other: Version) -> bool:
        return self._key() == other._key()


def parse(text: str) -> Version | None:
    """The version ``text`` denotes, or None if it is not one."""
    m = _SEMVER.fullmatch(text)
    if m is None:
        return None
    major, minor, patch, pre, build = m.groups()
    return Version(int(major), int(minor or 0), int(patch or 0), tuple(pre.split(".")) if pre else (), build)


def at_least(have: str, want: str) -> bool:
    """True if version ``have`` is not older than ``want`` (False if either does not parse)."""
    h, w = parse(have), parse(want)
    return h is not None and w is not None and h >= w
