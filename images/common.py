"""Shared helpers of the image builder: cache layout, content hashes, stage timing, subprocesses."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / "images" / "cache"
# Fixed time used for every timestamp the builder controls (mtools, mke2fs, debugfs, wheels, touch).
SOURCE_DATE_EPOCH = 1700000000


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Cache root: --cache-dir, else $PYRAUC_IMAGE_CACHE, else images/cache/ in the tree."""
    if override:
        return Path(override).resolve()
    env = os.environ.get("PYRAUC_IMAGE_CACHE")
    return Path(env).resolve() if env else DEFAULT_CACHE


# Which rauc the lab image runs: pyrauc (the default image) or Debian's C rauc 1.8 (opt-in variant).
RAUC_VARIANTS = ("pyrauc", "debian")


def rauc_variant(override: str | None = None) -> str:
    """--rauc, else $PYRAUC_LAB_RAUC, else 'pyrauc' (labs/lab.py reads the same variable)."""
    return _choice(override, "PYRAUC_LAB_RAUC", "--rauc", RAUC_VARIANTS)


# The target's layout: the default lab device (UKIs, efi backend) or the tutorial's meta-rauc-qemux86
# device (GRUB + grubenv A/B, boot-gpt-switch efi slot, rescue; images/meta_rauc.py).
LAYOUTS = ("efi", "meta-rauc")


def lab_layout(override: str | None = None) -> str:
    """--layout, else $PYRAUC_LAB_LAYOUT, else 'efi' (labs/lab.py derives it from the env file too)."""
    return _choice(override, "PYRAUC_LAB_LAYOUT", "--layout", LAYOUTS)


def _choice(override: str | None, env: str, option: str, choices: tuple[str, ...]) -> str:
    """OVERRIDE, else $ENV, else the first of CHOICES (the default); anything else is an error."""
    value = (override or os.environ.get(env) or choices[0]).lower()
    if value not in choices:
        raise ValueError(f"{env} / {option}: {value!r} is not one of {', '.join(choices)}")
    return value


def out_dir(cache: Path, variant: str = "pyrauc", layout: str = "efi") -> Path:
    """The builder's output directory: CACHE/out (efi layout, pyrauc), CACHE/out-<variant> (efi layout),
    CACHE/out-<layout> (pyrauc), CACHE/out-<layout>-<variant> (the lab reads it)."""
    parts = [x for x, default in ((layout, "efi"), (variant, "pyrauc")) if x != default]
    return cache / "-".join(["out", *parts])


def log(msg: str) -> None:
    """One progress line on stderr, flushed at once."""
    print(f"[images] {msg}", file=sys.stderr, flush=True)


class Hasher:
    """Incremental content hash of a stage's inputs (strings, files, directory trees)."""

    def __init__(self, name: str) -> None:
        self._h = hashlib.sha256(name.encode() + b"\0")

    def text(self, *parts: str) -> Hasher:
        for p in parts:
            self._h.update(p.encode() + b"\0")
        return self

    def file(self, path: Path) -> Hasher:
        self._h.update(str(path.name).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                self._h.update(chunk)
        return self

    def tree(self, root: Path, patterns: Iterable[str] = ("**/*",)) -> Hasher:
        files = sorted({p for pat in patterns for p in root.glob(pat) if p.is_file()})
        for p in files:
            if "__pycache__" in p.parts:
                continue
            self._h.update(str(p.relative_to(root)).encode() + b"\0")
            self.file(p)
        return self

    def hexdigest(self, length: int = 16) -> str:
        return self._h.hexdigest()[:length]


def sha256_file(path: Path) -> str:
    """Full sha256 hex digest of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def stage(name: str, what: str) -> Iterator[None]:
    """Print '[images] NAME: building (WHAT) ... 12.3 s' around a stage that is not cached."""
    log(f"{name}: building ({what}) ...")
    t0 = time.monotonic()
    try:
        yield
    except BaseException:
        log(f"{name}: FAILED after {time.monotonic() - t0:.1f} s")
        raise
    log(f"{name}: built in {time.monotonic() - t0:.1f} s")


def cached(name: str, path: Path) -> bool:
    """True (and a '[images] NAME: cached' line) when a stage output already exists."""
    if path.exists():
        log(f"{name}: cached ({path.name})")
        return True
    return False


def run(cmd: Sequence[str | os.PathLike[str]], *, env: dict[str, str] | None = None,
        quiet: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a command; on failure raise with its output so the build log says why."""
    full_env = dict(os.environ)
    full_env.update(build_env())
    if env:
        full_env.update(env)
    res = subprocess.run([str(c) for c in cmd], env=full_env, input=input,
                         stdout=subprocess.PIPE if quiet else None,
                         stderr=subprocess.STDOUT if quiet else None, check=False)
    if res.returncode != 0:
        out = res.stdout.decode(errors="replace")[-4000:] if res.stdout else ""
        raise RuntimeError(f"command failed ({res.returncode}): {' '.join(map(str, cmd))}\n{out}")
    return res


def build_env() -> dict[str, str]:
    """Environment that makes the host tools reproducible."""
    return {
        "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
        "E2FSPROGS_FAKE_TIME": str(SOURCE_DATE_EPOCH),
        "MTOOLS_SKIP_CHECK": "1",
        "LC_ALL": "C.UTF-8",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished stage directory into place (atomic rename; old output removed)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def prune(parent: Path, keep: Path) -> None:
    """Delete older outputs of a stage (siblings of KEEP with the same prefix)."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    for p in parent.glob(prefix + "*"):
        if p != keep and not p.name.endswith(".tmp"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
