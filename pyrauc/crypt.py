"""Payload encryption of 'crypt' bundles: dm-crypt ``aes-cbc-plain64`` with 4096-byte sectors.

AES-256-CBC, no padding; sector k (bytes ``[k*4096, (k+1)*4096)``) is encrypted on its own with
``IV = le64(k * 8) || 0^8`` (plain64 counts 512-byte sectors), so ``cryptsetup`` / the kernel's
``aes-cbc-plain64 <key> 0 <dev> 0 1 sector_size:4096`` table decrypts it.

Speed without per-sector cipher objects:

* encryption keeps ONE CBC encryptor per chunk; before sector k it XORs ``IV_k ^ C_prev`` into the
  first plaintext block (``C_prev`` = last ciphertext block written by the encryptor), so the
  chained CBC produces exactly ``E(P0 ^ IV_k)``. CBC encryption is sequential within a sector, so
  chunks of sectors are spread over threads (``update_into`` releases the GIL).
* decryption CBC-decrypts a whole chunk in one call (parallel inside OpenSSL) and then repairs the
  first block of every sector: ``P0 = computed ^ C_last(k-1) ^ IV_k``.

Files are streamed in chunks; memory does not depend on the payload size. The key is never
printed or put into an error message.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pyrauc.errors import CryptError
from pyrauc.parallel import default_workers, ordered_map
from pyrauc.progress import Progress

SECTOR_SIZE = 4096
KEY_SIZE = 32
AES_BLOCK = 16
CHUNK_SECTORS = 256  # 1 MiB per task: stays in L2/L3 cache, enough to amortise per-task overhead



def _workers() -> int:
    return default_workers()


def _check_key(key: bytes) -> algorithms.AES:
    if len(key) != KEY_SIZE:
        raise CryptError(f"invalid AES key length {len(key)} (expected {KEY_SIZE} bytes)")
    return algorithms.AES(bytes(key))


def _check_size(size: int) -> None:
    if size < 0 or size % SECTOR_SIZE:
        raise CryptError(
            f"Incomplete read: Input size must be multiple of {SECTOR_SIZE} (got only "
            f"{size % SECTOR_SIZE} bytes)"
        )


def _iv(sector: int) -> bytes:
    return (sector * 8).to_bytes(AES_BLOCK, "little")  # le64(sector*8) || 0^8


def _encrypt_into(aes: algorithms.AES, src: bytearray | memoryview, dst: bytearray, first_sector: int) -> None:
    """Encrypt whole sectors of ``src`` (modified: first blocks are pre-whitened) into ``dst``.

    ``dst`` must be at least ``len(src) + 15`` bytes (cryptography's ``update_into`` contract).
    """
    enc = Cipher(aes, modes.CBC(bytes(AES_BLOCK))).encryptor()
    sv, dv = memoryview(src), memoryview(dst)
    prev = 0  # the encryptor's chaining value, starts as the all-zero IV
    sector = first_sector
    for pos in range(0, len(src), SECTOR_SIZE):
        head = int.from_bytes(sv[pos : pos + AES_BLOCK], "little") ^ prev ^ (sector * 8)
        sv[pos : pos + AES_BLOCK] = head.to_bytes(AES_BLOCK, "little")
        enc.update_into(sv[pos : pos + SECTOR_SIZE], dv[pos : pos + SECTOR_SIZE + AES_BLOCK - 1])
        prev = int.from_bytes(dv[pos + SECTOR_SIZE - AES_BLOCK : pos + SECTOR_SIZE], "little")
        sector += 1


def _decrypt_into(
    aes: algorithms.AES, src: bytes | bytearray | memoryview, dst: bytearray, first_sector: int
) -> None:
    """Decrypt whole sectors of ``src`` into ``dst`` (at least ``len(src) + 15`` bytes)."""
    dec = Cipher(aes, modes.CBC(_iv(first_sector))).decryptor()
    dec.update_into(src, dst)
    sv = memoryview(src)
    sector = first_sector + 1
    for pos in range(SECTOR_SIZE, len(src), SECTOR_SIZE):
        # chained CBC used C_last(k-1) instead of IV_k for this block: swap them
        fix = int.from_bytes(sv[pos - AES_BLOCK : pos], "little") ^ (sector * 8)
        head = int.from_bytes(dst[pos : pos + AES_BLOCK], "little") ^ fix
        dst[pos : pos + AES_BLOCK] = head.to_bytes(AES_BLOCK, "little")
        sector += 1


def _crypt_bytes(crypt_into: Callable[[algorithms.AES, bytearray, bytearray, int], None],
                 data: bytes, key: bytes, first_sector: int) -> bytes:
    """Run ``crypt_into`` over a private copy of ``data`` (it may be modified) after the checks."""
    aes = _check_key(key)
    _check_size(len(data))
    out = bytearray(len(data) + AES_BLOCK)
    crypt_into(aes, bytearray(data), out, first_sector)
    return bytes(out[: len(data)])


def encrypt_bytes(data: bytes, key: bytes, first_sector: int = 0) -> bytes:
    """Encrypt whole sectors in memory; ``first_sector`` is the sector index of ``data[0]``."""
    return _crypt_bytes(_encrypt_into, data, key, first_sector)


def decrypt_bytes(data: bytes, key: bytes, first_sector: int = 0) -> bytes:
    """Decrypt whole sectors in memory; ``first_sector`` is the sector index of ``data[0]``."""
    return _crypt_bytes(_decrypt_into, data, key, first_sector)


class _Buffers(threading.local):
    """Per-thread reusable input/output buffers of one chunk (avoids page faults per chunk)."""

    def __init__(self) -> None:
        self.src = bytearray(CHUNK_SECTORS * SECTOR_SIZE)
        self.dst = bytearray(CHUNK_SECTORS * SECTOR_SIZE + AES_BLOCK)


def _read_exact(fd: int, buf: bytearray, length: int, offset: int) -> None:
    view = memoryview(buf)[:length]
    got = 0
    while got < length:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            raise CryptError(
                f"Incomplete read: Input size must be multiple of {SECTOR_SIZE} "
                f"(got only {(offset + got) % SECTOR_SIZE} bytes)"
                if (offset + got) % SECTOR_SIZE
                else f"unexpected end of input at offset {offset + got}"
            )
        got += n


def _chunks(size: int) -> list[tuple[int, int]]:
    step = CHUNK_SECTORS * SECTOR_SIZE
    return [(off, min(step, size - off)) for off in range(0, size, step)]


def encryptor(key: bytes) -> Callable[[memoryview, int], memoryview]:
    """A chunk transform for :func:`pyrauc.verity.create_hash_tree`: whole sectors at a file offset
    (a multiple of 4096) in, their ciphertext out (the input buffer is modified; thread-safe)."""
    aes = _check_key(key)
    bufs = _Buffers()

    def encrypt(chunk: memoryview, offset: int) -> memoryview:
        _check_size(len(chunk))
        if len(bufs.dst) < len(chunk) + AES_BLOCK:
            bufs.dst = bytearray(len(chunk) + AES_BLOCK)
        _encrypt_into(aes, chunk, bufs.dst, offset // SECTOR_SIZE)
        return memoryview(bufs.dst)[:len(chunk)]

    return encrypt


def encrypt_file(path: str | os.PathLike[str], key: bytes, progress: Progress | None = None) -> None:
    """Encrypt the whole file in place; its size must be a multiple of 4096."""
    aes = _check_key(key)
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CryptError(f"failed to open '{os.fspath(path)}': {e.strerror}") from e
    try:
        size = os.fstat(fd).st_size
        _check_size(size)
        bufs = _Buffers()

        def task(chunk: tuple[int, int]) -> int:
            off, length = chunk
            _read_exact(fd, bufs.src, length, off)
            src = bufs.src if length == len(bufs.src) else bufs.src[:length]
            _encrypt_into(aes, src, bufs.dst, off // SECTOR_SIZE)
            os.pwrite(fd, memoryview(bufs.dst)[:length], off)
            return length

        done = 0
        chunks = _chunks(size)
        for length in ordered_map(task, chunks, _workers() if len(chunks) > 2 else 1):
            done += length
            if progress is not None:
                progress(done, size)
    except OSError as e:
        raise CryptError(f"failed to encrypt '{os.fspath(path)}': {e.strerror}") from e
    finally:
        os.close(fd)


def decrypt_file(
    src: str | os.PathLike[str] | BinaryIO,
    size: int,
    key: bytes,
    dst: str | os.PathLike[str] | BinaryIO,
    progress: Progress | None = None,
) -> None:
    """Decrypt ``[0, size)`` of ``src`` into ``dst`` (a path, created/truncated, or a binary file).

    ``src`` is a path or a binary file object backed by a file descriptor (read with ``pread``,
    its position is not used). ``dst`` is written sequentially.
    """
    aes = _check_key(key)
    _check_size(size)
    with contextlib.ExitStack() as stack:
        try:
            if isinstance(src, (str, os.PathLike)):
                fd = os.open(src, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                stack.callback(os.close, fd)
            else:
                fd = src.fileno()
            out: BinaryIO
            if isinstance(dst, (str, os.PathLike)):
                out = stack.enter_context(open(dst, "wb"))
            else:
                out = dst
        except OSError as e:
            name = os.fsdecode(e.filename) if e.filename is not None else "file object"
            raise CryptError(f"failed to open '{name}': {e.strerror or e}") from e

        workers = _workers() if size > 2 * CHUNK_SECTORS * SECTOR_SIZE else 1   # no threads for small payloads
        # reusable (ciphertext, plaintext) buffer pairs: at most 2*workers tasks are in flight and
        # one result is being written, so the pool never runs dry
        pool: queue.SimpleQueue[tuple[bytearray, bytearray]] = queue.SimpleQueue()
        for _ in range(2 * workers + 1):
            pool.put((bytearray(CHUNK_SECTORS * SECTOR_SIZE), bytearray(CHUNK_SECTORS * SECTOR_SIZE + AES_BLOCK)))

        def task(chunk: tuple[int, int]) -> tuple[tuple[bytearray, bytearray], int]:
            off, length = chunk
            pair = pool.get()
            _read_exact(fd, pair[0], length, off)
            src = pair[0] if length == len(pair[0]) else memoryview(pair[0])[:length]
            _decrypt_into(aes, src, pair[1], off // SECTOR_SIZE)
            return pair, length

        try:
            done = 0
            for pair, length in ordered_map(task, _chunks(size), workers):
                out.write(memoryview(pair[1])[:length])
                pool.put(pair)
                done += length
                if progress is not None:
                    progress(done, size)
            out.flush()
        except OSError as e:
            raise CryptError(f"failed to decrypt bundle payload: {e.strerror or e}") from e
