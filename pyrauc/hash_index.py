"""Adaptive updates with ``block-hash-index`` (RAUC's src/hash_index.c and its use in update_handler.c).

A block hash index is the SHA-256 of every 4096-byte block of an image, concatenated (no header).
``rauc bundle`` puts ``<image>.block-hash-index`` next to an image whose manifest says
``adaptive=block-hash-index``; an installed slot keeps the index of what it holds in the data
directory: ``<data-directory>/slot.<slot name>/hash-<image sha256>/block-hash-index``.

:func:`adaptive_copy` writes an image into a slot taking every block from the cheapest place that
has it, first hit wins: a block of zeros (no read); a block already written to the target in this
copy (no re-hash: its hash is the image's); the target slot's old content at a block not yet
overwritten; the seed (the active slot of the same class); only then the image in the bundle -
which is the network when the bundle is streamed. Blocks from the target and the seed are read
again and re-hashed, so a slot that changed since its index was made (a read-write file system)
only costs a fallback, never a wrong block. A block is written only if the slot holds different
data (read, compare, write). The bundle's index is trusted: it is read through dm-verity.

The copy goes in windows of 256 blocks: the target's window is read once (unchanged blocks cost no
other read and no write), and runs of blocks that must come from the image are read with one
``pread`` each, with readahead on the image file turned off so that only what is missing crosses
the network. Any error here makes the caller fall back to a full copy (RAUC: "Continuing after
adaptive mode error").
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pyrauc import parallel
from pyrauc.errors import InstallError
from pyrauc.progress import Progress

log = logging.getLogger(__name__)

BLOCK = 4096
DIGEST = 32
WINDOW = 256                     # blocks per window (1 MiB)
ZERO_HASH = hashlib.sha256(bytes(BLOCK)).digest()
INDEX_NAME = "block-hash-index"
UNKNOWN = "hash-unknown"
SOURCES = ("zero chunk", "target_slot_written (reusing source_image)", "target_slot", "active_slot",
           "source_image")


class HashIndexError(InstallError):
    """A hash index cannot be built, loaded or used."""


class HashIndex:
    """The digests of consecutive 4096-byte blocks, with a lookup digest -> lowest block number."""

    def __init__(self, digests: bytes) -> None:
        if len(digests) % DIGEST:
            raise HashIndexError(f"hash index size ({len(digests)}) is not a multiple of {DIGEST}")
        self.digests = digests
        self._lookup: dict[bytes, int] | None = None

    def __len__(self) -> int:
        return len(self.digests) // DIGEST

    def digest(self, block: int) -> bytes:
        return self.digests[block * DIGEST:(block + 1) * DIGEST]

    def find(self, digest: bytes) -> int | None:
        """The lowest block with ``digest``, or None."""
        if self._lookup is None:
            lookup: dict[bytes, int] = {}
            for i in range(len(self) - 1, -1, -1):
                lookup[self.digest(i)] = i
            self._lookup = lookup
        return self._lookup.get(digest)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HashIndex:
        try:
            return cls(Path(path).read_bytes())
        except OSError as e:
            raise HashIndexError(f"failed to read hash index {os.fspath(path)}: {e.strerror}") from e

    @classmethod
    def build(cls, path: str | os.PathLike[str], size: int | None = None) -> HashIndex:
        """Hash the blocks of the file or device ``path`` (``size`` bytes, default all of it)."""
        from pyrauc.handlers import device_size

        total = device_size(path) if size is None else size
        if total % BLOCK:
            raise HashIndexError(f"image/partition size ({total}) is not a multiple of 4096 bytes")
        chunk = 2 << 20
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise HashIndexError(f"failed to open {os.fspath(path)}: {e.strerror}") from e
        try:
            def hash_chunk(pos: int) -> bytes:
                data = os.pread(fd, min(chunk, total - pos), pos)
                return b"".join(hashlib.sha256(data[i:i + BLOCK]).digest() for i in range(0, len(data), BLOCK))

            parts = parallel.ordered_map(hash_chunk, range(0, total, chunk), parallel.default_workers(4),
                                         name="pyrauc-hash")
            return cls(b"".join(parts))
        except OSError as e:
            raise HashIndexError(f"failed to read {os.fspath(path)}: {e.strerror}") from e
        finally:
            os.close(fd)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.digests)
        os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# slot indexes in the data directory

def slot_dir(data_directory: str | os.PathLike[str], slot_name: str) -> Path:
    return Path(data_directory) / f"slot.{slot_name}"


def stored_index(data_directory: str | os.PathLike[str], slot_name: str, digest: str | None) -> Path | None:
    """The stored index of the slot's current content (``hash-<digest>``, else ``hash-unknown``)."""
    base = slot_dir(data_directory, slot_name)
    for name in ([f"hash-{digest}"] if digest else []) + [UNKNOWN]:
        path = base / name / INDEX_NAME
        if path.is_file():
            return path
    return None


def slot_index(device: str, data_directory: str | os.PathLike[str], slot_name: str,
               digest: str | None) -> HashIndex:
    """The slot's stored index, else one built by hashing the device."""
    path = stored_index(data_directory, slot_name, digest)
    if path is not None:
        try:
            return HashIndex.load(path)
        except HashIndexError as e:
            log.warning(f"{e}: building a new one")
    index = HashIndex.build(device)
    log.info(f"Building new hash index for {device} with {len(index)} chunks")
    return index


def mark_unknown(data_directory: str | os.PathLike[str], slot_name: str) -> None:
    """Before a slot is written: its ``hash-*`` directories become ``hash-unknown`` (one of them kept)."""
    base = slot_dir(data_directory, slot_name)
    if not base.is_dir():
        return
    dirs = sorted(p for p in base.iterdir() if p.name.startswith("hash-") and p.name != UNKNOWN)
    if dirs:
        shutil.rmtree(base / UNKNOWN, ignore_errors=True)
        dirs[0].rename(base / UNKNOWN)
        for extra in dirs[1:]:
            shutil.rmtree(extra, ignore_errors=True)


def save_slot_index(index: HashIndex, data_directory: str | os.PathLike[str], slot_name: str, digest: str) -> None:
    """After a successful adaptive install: the image's index is the slot's; other hash dirs go."""
    base = slot_dir(data_directory, slot_name)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    index.save(base / f"hash-{digest}" / INDEX_NAME)
    for other in base.iterdir():
        if other.name.startswith("hash-") and other.name != f"hash-{digest}":
            shutil.rmtree(other, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the copy

@dataclass
class Sources:
    """Where blocks may come from besides the image."""

    target_index: HashIndex | None = None
    seed_device: str | None = None
    seed_index: HashIndex | None = None


@dataclass
class AccessStats:
    """Per source: lookups (count) and hits (sum), as RAUC's "access stats for <source>" lines."""

    lookups: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    written_blocks: int = 0
    image_bytes: int = 0

    def tried(self, source: str, hit: bool) -> bool:
        self.lookups[source] += 1
        self.hits[source] += int(hit)
        return hit

    def lines(self) -> list[str]:
        return [f"access stats for {s}: count={self.lookups[s]} sum={self.hits[s]}" for s in SOURCES]


def _read(fd: int, block: int, count: int = 1) -> bytes:
    data = os.pread(fd, count * BLOCK, block * BLOCK)
    if len(data) != count * BLOCK:
        raise HashIndexError(f"short read at block {block}")
    return data


class _Copy:
    """One adaptive copy (state shared by the windows)."""

    def __init__(self, image: int, target: int, seed: int | None, index: HashIndex, sources: Sources) -> None:
        self.image, self.target, self.seed = image, target, seed
        self.index = index
        self.sources = sources
        self.stats = AccessStats()
        self.written: dict[bytes, int] = {}          # digest -> a block of the target written in this copy

    def _reuse(self, c: int, want: bytes) -> bytes | None:
        """A block with digest ``want`` from anywhere but the image (None: not found)."""
        st = self.stats
        if st.tried(SOURCES[0], want == ZERO_HASH):
            return bytes(BLOCK)
        at = self.written.get(want)
        if st.tried(SOURCES[1], at is not None):
            assert at is not None
            return _read(self.target, at)
        tindex = self.sources.target_index
        if tindex is not None:
            b = tindex.find(want)
            data = _read(self.target, b) if b is not None and c <= b < len(tindex) else None
            if st.tried(SOURCES[2], data is not None and hashlib.sha256(data).digest() == want):
                return data
        sindex = self.sources.seed_index
        if sindex is not None and self.seed is not None:
            b = sindex.find(want)
            data = _read(self.seed, b) if b is not None else None
            if st.tried(SOURCES[3], data is not None and hashlib.sha256(data).digest() == want):
                return data
        return None

    def window(self, first: int, count: int) -> None:
        current = _read(self.target, first, count) if self._target_has(first + count) else None
        new: list[bytes | None] = []
        for i in range(count):
            c = first + i
            want = self.index.digest(c)
            if current is not None:
                old = current[i * BLOCK:(i + 1) * BLOCK]
                same = self.sources.target_index is not None and self.sources.target_index.digest(c) == want \
                    and hashlib.sha256(old).digest() == want
                if same:               # unchanged: no other read, no write
                    self.stats.tried(SOURCES[2], True)
                    new.append(old)
                    continue
            new.append(self._reuse(c, want))
        self._fill_from_image(first, new)
        self._write(first, new, current)

    def _target_has(self, end: int) -> bool:
        return self.sources.target_index is not None and end <= len(self.sources.target_index)

    def _fill_from_image(self, first: int, new: list[bytes | None]) -> None:
        i = 0
        while i < len(new):
            if new[i] is not None:
                i += 1
                continue
            j = i
            while j < len(new) and new[j] is None:
                j += 1
            data = _read(self.image, first + i, j - i)
            self.stats.image_bytes += len(data)
            for k in range(i, j):
                block = data[(k - i) * BLOCK:(k - i + 1) * BLOCK]
                self.stats.tried(SOURCES[4], True)
                new[k] = block
            i = j

    def _write(self, first: int, new: list[bytes | None], current: bytes | None) -> None:
        for i, block in enumerate(new):
            assert block is not None
            c = first + i
            if current is None or current[i * BLOCK:(i + 1) * BLOCK] != block:
                if os.pwrite(self.target, block, c * BLOCK) != BLOCK:
                    raise HashIndexError(f"short write at block {c}")
                self.stats.written_blocks += 1
            self.written.setdefault(self.index.digest(c), c)


def adaptive_copy(image: Path, index: HashIndex, target: str, sources: Sources, *,
                  progress: Progress | None = None) -> AccessStats:
    """Write ``image`` (described by ``index``) to ``target`` from the cheapest sources; fsync."""
    size = len(index) * BLOCK
    try:
        fin = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise HashIndexError(f"failed to open image {image.name}: {e.strerror}") from e
    try:
        if os.fstat(fin).st_size != size:
            raise HashIndexError(f"image {image.name} has {os.fstat(fin).st_size} bytes, its hash index covers {size}")
        os.posix_fadvise(fin, 0, 0, os.POSIX_FADV_RANDOM)    # no readahead: fetch only what is missing
        tfd = os.open(target, os.O_RDWR | os.O_CLOEXEC)
        seed = os.open(sources.seed_device, os.O_RDONLY | os.O_CLOEXEC) if sources.seed_device else None
        try:
            copy = _Copy(fin, tfd, seed, index, sources)
            for first in range(0, len(index), WINDOW):
                copy.window(first, min(WINDOW, len(index) - first))
                if progress is not None:
                    progress(min(size, (first + WINDOW) * BLOCK), size)
            try:
                os.fsync(tfd)
            except OSError as e:
                raise HashIndexError(f"Syncing content to slot failed: {e.strerror}") from e
        finally:
            os.close(tfd)
            if seed is not None:
                os.close(seed)
    except OSError as e:
        raise HashIndexError(f"failed to copy {image.name}: {e.strerror}") from e
    finally:
        os.close(fin)
    for line in copy.stats.lines():
        log.info(line)
    return copy.stats
