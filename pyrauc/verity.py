"""dm-verity hash tree of a bundle payload (format 1, no superblock, sha256, 4096/4096).

The tree is byte-identical to ``veritysetup format --format=1 --no-superblock --hash=sha256
--data-block-size=4096 --hash-block-size=4096 --salt=<hex> --hash-offset=<data size>``:

* every digest is ``sha256(salt || block)`` (version 1: salt first), 32 bytes, 128 per hash block,
  the unused tail of each hash block is zero;
* level 0 hashes the data blocks, level i+1 hashes the blocks of level i, until one block is left;
* the levels are stored top-down (the single top block first, level 0 last) right after the data;
* the root hash is ``sha256(salt || top hash block)``.

Everything is streamed: level 0 is computed chunk by chunk from the data, every upper level from
the lower level already written to (or, when verifying, stored in) the file, so memory does not
depend on the payload size. Chunks are hashed by a thread pool; ``hashlib`` releases the GIL for
inputs larger than 2047 bytes, so a 4096-byte block hash runs in parallel with other threads.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable

from pyrauc.errors import VerityError
from pyrauc.parallel import default_workers, ordered_map
from pyrauc.progress import Progress

BLOCK_SIZE = 4096
DIGEST_SIZE = 32
DIGESTS_PER_BLOCK = BLOCK_SIZE // DIGEST_SIZE  # 128
CHUNK_BLOCKS = 1024  # blocks per task: 4 MiB in, 8 whole hash blocks out (must be a multiple of 128)

CORRUPTED = "bundle payload is corrupted"

#: Rewrites a chunk of data blocks (at a file offset) before it is hashed; returns the new bytes.
Transform = Callable[[memoryview, int], memoryview]



def _workers() -> int:
    return default_workers()


def _level_sizes(data_blocks: int) -> list[int]:
    """Number of hash blocks of level 0, 1, ... (bottom-up); empty for a single data block."""
    sizes: list[int] = []
    n = data_blocks
    while n > 1:
        n = -(-n // DIGESTS_PER_BLOCK)
        sizes.append(n)
    return sizes


def _check_size(data_size: int) -> int:
    if data_size <= 0 or data_size % BLOCK_SIZE:
        raise VerityError(f"data size {data_size} is not a positive multiple of {BLOCK_SIZE} bytes")
    return data_size // BLOCK_SIZE


def _level_offsets(data_size: int, sizes: list[int]) -> list[int]:
    """File offset of each level (bottom-up index), stored top-down after the data."""
    offsets = [0] * len(sizes)
    off = data_size
    for level in reversed(range(len(sizes))):
        offsets[level] = off
        off += sizes[level] * BLOCK_SIZE
    return offsets


def hash_tree_size(data_size: int) -> int:
    """Size in bytes of the hash tree for ``data_size`` bytes of data (RAUC's verity-size)."""
    return sum(_level_sizes(_check_size(data_size))) * BLOCK_SIZE


class _Hasher:
    """Hashes ranges of 4096-byte blocks of one file descriptor with a fixed salt."""

    def __init__(self, fd: int, salt: bytes, transform: Transform | None = None, data_size: int = 0) -> None:
        self.fd = fd
        self.base = hashlib.sha256(salt)
        self.transform = transform          # applied to (and written back over) [0, data_size)
        self.data_size = data_size
        self.local = threading.local()  # per-thread reusable chunk buffer (avoids page faults)

    def read(self, offset: int, length: int) -> bytearray:
        buf = bytearray(length)
        got = os.preadv(self.fd, [buf], offset)
        if got != length:
            raise VerityError(CORRUPTED)  # file ends early
        return buf

    def digests(self, offset: int, nblocks: int) -> bytes:
        """Concatenated ``sha256(salt || block)`` of ``nblocks`` blocks at ``offset``."""
        length = nblocks * BLOCK_SIZE
        buf: bytearray | None = getattr(self.local, "buf", None)
        if buf is None:
            buf = self.local.buf = bytearray(CHUNK_BLOCKS * BLOCK_SIZE)
        view = memoryview(buf)[:length]
        if os.preadv(self.fd, [view], offset) != length:
            raise VerityError(CORRUPTED)  # file ends early
        if self.transform is not None and offset < self.data_size:
            view = self.transform(view, offset)
            os.pwrite(self.fd, view, offset)
        base = self.base
        out = []
        for pos in range(0, nblocks * BLOCK_SIZE, BLOCK_SIZE):
            h = base.copy()
            h.update(view[pos : pos + BLOCK_SIZE])
            out.append(h.digest())
        return b"".join(out)

    def hash_blocks(self, offset: int, nblocks: int, last: bool) -> bytes:
        """Hash blocks (zero-padded to whole 4096-byte blocks if ``last``) for a range."""
        data = self.digests(offset, nblocks)
        if last and len(data) % BLOCK_SIZE:
            data += bytes(BLOCK_SIZE - len(data) % BLOCK_SIZE)
        return data

    def root(self, offset: int) -> bytes:
        h = self.base.copy()
        h.update(self.read(offset, BLOCK_SIZE))
        return h.digest()


def _tasks(src_offset: int, src_blocks: int, dst_offset: int) -> list[tuple[int, int, bool, int]]:
    """(source offset, block count, is-last, destination offset) for each chunk of a level."""
    tasks = []
    for first in range(0, src_blocks, CHUNK_BLOCKS):
        count = min(CHUNK_BLOCKS, src_blocks - first)
        dst = dst_offset + first * DIGEST_SIZE  # CHUNK_BLOCKS digests fill whole hash blocks
        tasks.append((src_offset + first * BLOCK_SIZE, count, first + count == src_blocks, dst))
    return tasks


def _walk(
    path: str | os.PathLike[str],
    data_size: int,
    salt: bytes,
    progress: Progress | None,
    write: bool,
    root_hash: bytes = b"",
    transform: Transform | None = None,
) -> bytes:
    data_blocks = _check_size(data_size)
    sizes = _level_sizes(data_blocks)
    offsets = _level_offsets(data_size, sizes)
    tree_size = sum(sizes) * BLOCK_SIZE
    total = data_size + tree_size
    done = 0
    workers = _workers()
    try:
        fd = os.open(path, (os.O_RDWR if write else os.O_RDONLY) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise VerityError(f"failed to open '{os.fspath(path)}': {e.strerror}") from e
    try:
        file_size = os.fstat(fd).st_size
        if file_size < data_size:
            if write:
                raise VerityError(f"'{os.fspath(path)}' is smaller than the data size {data_size}")
            raise VerityError(CORRUPTED)
        if not write and file_size < data_size + tree_size:
            raise VerityError(CORRUPTED)
        hasher = _Hasher(fd, salt, transform, data_size)

        def create_task(task: tuple[int, int, bool, int]) -> tuple[int, int]:
            src, count, last, dst = task
            blocks = hasher.hash_blocks(src, count, last)
            os.pwrite(fd, blocks, dst)
            return count, len(blocks)

        def verify_task(task: tuple[int, int, bool, int]) -> tuple[int, int]:
            src, count, last, dst = task
            blocks = hasher.hash_blocks(src, count, last)
            if not hmac.compare_digest(blocks, hasher.read(dst, len(blocks))):
                raise VerityError(CORRUPTED)
            return count, len(blocks)

        src_offset, src_blocks = 0, data_blocks
        for level, nblocks in enumerate(sizes):
            tasks = _tasks(src_offset, src_blocks, offsets[level])
            written = 0
            # no thread start-up for a level of one or two chunks (small bundles, upper levels)
            level_workers = workers if len(tasks) > 2 else 1
            for count, produced in ordered_map(create_task if write else verify_task, tasks, level_workers):
                written += produced
                done += count * BLOCK_SIZE
                if progress is not None:
                    progress(done, total)
            if written != nblocks * BLOCK_SIZE:  # pragma: no cover - layout invariant
                raise AssertionError("hash level size mismatch")
            src_offset, src_blocks = offsets[level], nblocks
        # src now is the top block (or the single data block if there is no tree)
        root = hasher.root(src_offset)
        done += BLOCK_SIZE
        if progress is not None:
            progress(done, total)
        if not write and not hmac.compare_digest(root, root_hash):
            raise VerityError(CORRUPTED)
        return root
    except OSError as e:
        action = "create" if write else "verify"
        raise VerityError(f"failed to {action} hash tree of '{os.fspath(path)}': {e.strerror}") from e
    finally:
        os.close(fd)


def create_hash_tree(
    path: str | os.PathLike[str], data_size: int, salt: bytes, progress: Progress | None = None,
    transform: Transform | None = None,
) -> bytes:
    """Hash ``[0, data_size)`` of the file, write the tree at offset ``data_size``, return the root.

    The file grows by :func:`hash_tree_size` bytes (anything already there is overwritten). With
    ``transform`` every chunk of the data is first rewritten in place (e.g. encrypted by
    :func:`pyrauc.crypt.encryptor`) and the result is hashed: one pass over the payload.
    """
    return _walk(path, data_size, salt, progress, write=True, transform=transform)


def verify_hash_tree(
    path: str | os.PathLike[str],
    data_size: int,
    salt: bytes,
    root_hash: bytes,
    progress: Progress | None = None,
) -> None:
    """Recompute every data and hash block; VerityError("bundle payload is corrupted") on mismatch."""
    _walk(path, data_size, salt, progress, write=False, root_hash=root_hash)
