"""Tests of pyrauc.verity against `veritysetup format` (cryptsetup-bin) as the oracle.

veritysetup computes the hash tree in user space (no device mapper needed). It is required:
install it with `apt-get install cryptsetup-bin`.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pyrauc import verity
from pyrauc.errors import VerityError

BS = 4096
SALT = bytes.fromhex("5a" * 16 + "0123456789abcdef" * 2)


def _veritysetup() -> str:
    exe = shutil.which("veritysetup") or shutil.which("veritysetup", path="/usr/sbin:/sbin")
    if exe is None:
        pytest.fail("veritysetup not found: apt-get install cryptsetup-bin")
    return exe


def _data(nblocks: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(nblocks * BS)


def _oracle(tmp_path: Path, data: bytes, salt: bytes = SALT) -> tuple[bytes, bytes]:
    """(payload = data + tree, root hash) as produced by veritysetup."""
    f = tmp_path / "oracle.img"
    f.write_bytes(data)
    out = subprocess.run(
        [_veritysetup(), "format", "--format=1", "--no-superblock", "--hash=sha256",
         "--data-block-size=4096", "--hash-block-size=4096", f"--salt={salt.hex()}",
         f"--hash-offset={len(data)}", str(f), str(f)],
        check=True, capture_output=True, text=True,
    ).stdout
    m = re.search(r"Root hash:\s*([0-9a-f]{64})", out)
    assert m, out
    return f.read_bytes(), bytes.fromhex(m.group(1))


def _naive_tree(data: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """Straightforward in-memory reference: (tree bytes stored top-down, root hash)."""
    levels: list[bytes] = []
    cur = data
    while len(cur) > BS:
        digests = b"".join(hashlib.sha256(salt + cur[i : i + BS]).digest() for i in range(0, len(cur), BS))
        digests += bytes(-len(digests) % BS)
        levels.append(digests)
        cur = digests
    return b"".join(reversed(levels)), hashlib.sha256(salt + cur).digest()


@pytest.mark.parametrize("nblocks", [1, 2, 5, 128, 129, 1025, 128 * 128, 128 * 128 + 1])
def test_matches_veritysetup(tmp_path: Path, nblocks: int) -> None:
    data = _data(nblocks, nblocks)
    expected, expected_root = _oracle(tmp_path, data)
    f = tmp_path / "payload"
    f.write_bytes(data)
    calls: list[tuple[int, int]] = []
    root = verity.create_hash_tree(f, len(data), SALT, progress=lambda d, t: calls.append((d, t)))
    got = f.read_bytes()
    assert root == expected_root
    assert len(got) == len(expected) == len(data) + verity.hash_tree_size(len(data))
    assert got == expected
    assert calls and calls[-1][0] == calls[-1][1] == len(got)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    verity.verify_hash_tree(f, len(data), SALT, root)


@pytest.mark.parametrize(
    ("nblocks", "tree_blocks"),
    [(1, 0), (2, 1), (128, 1), (129, 3), (128 * 128, 129), (128 * 128 + 1, 129 + 2 + 1)],
)
def test_hash_tree_size(nblocks: int, tree_blocks: int) -> None:
    assert verity.hash_tree_size(nblocks * BS) == tree_blocks * BS


def test_single_thread_and_naive_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data(3000, 42)
    tree, root = _naive_tree(data, SALT)
    for workers in (1, 3):
        monkeypatch.setattr(verity, "_workers", lambda w=workers: w)
        f = tmp_path / f"p{workers}"
        f.write_bytes(data)
        assert verity.create_hash_tree(f, len(data), SALT) == root
        assert f.read_bytes()[len(data) :] == tree


def test_tree_written_at_data_size_over_existing_bytes(tmp_path: Path) -> None:
    data = _data(300, 7)
    tree, root = _naive_tree(data, SALT)
    f = tmp_path / "p"
    f.write_bytes(data + b"\xff" * (len(tree) + 100))  # stale bytes get overwritten, tail stays
    assert verity.create_hash_tree(f, len(data), SALT) == root
    got = f.read_bytes()
    assert got[len(data) : len(data) + len(tree)] == tree
    assert got[len(data) + len(tree) :] == b"\xff" * 100


def _corrupt(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x01]))


@pytest.fixture
def tree_file(tmp_path: Path) -> tuple[Path, int, bytes]:
    data = _data(128 * 128 + 1, 3)  # 3 levels: 1 + 2 + 129 hash blocks
    f = tmp_path / "payload"
    f.write_bytes(data)
    root = verity.create_hash_tree(f, len(data), SALT)
    return f, len(data), root


@pytest.mark.parametrize(
    "where",
    [
        0,  # first data byte
        5000 * BS + 1234,  # middle data block
        (128 * 128 + 1) * BS - 1,  # last data byte
        (128 * 128 + 1) * BS,  # top hash block, first digest
        (128 * 128 + 1) * BS + 100,  # top hash block, zero padding
        (128 * 128 + 2) * BS + 31,  # level 1
        (128 * 128 + 4) * BS,  # level 0, first block
        (128 * 128 + 1 + 132) * BS - 1,  # level 0, last (zero-padded) block
    ],
)
def test_corruption_detected(tree_file: tuple[Path, int, bytes], where: int) -> None:
    f, size, root = tree_file
    verity.verify_hash_tree(f, size, SALT, root)
    _corrupt(f, where)
    with pytest.raises(VerityError, match=r"^bundle payload is corrupted$"):
        verity.verify_hash_tree(f, size, SALT, root)


def test_wrong_root_salt_and_short_file(tree_file: tuple[Path, int, bytes]) -> None:
    f, size, root = tree_file
    with pytest.raises(VerityError, match="corrupted"):
        verity.verify_hash_tree(f, size, SALT, bytes(32))
    with pytest.raises(VerityError, match="corrupted"):
        verity.verify_hash_tree(f, size, bytes(32), root)
    with f.open("r+b") as fh:
        fh.truncate(size + verity.hash_tree_size(size) - 1)
    with pytest.raises(VerityError, match=r"^bundle payload is corrupted$"):
        verity.verify_hash_tree(f, size, SALT, root)
    with f.open("r+b") as fh:
        fh.truncate(size - BS)
    with pytest.raises(VerityError, match=r"^bundle payload is corrupted$"):
        verity.verify_hash_tree(f, size, SALT, root)


def test_bad_arguments(tmp_path: Path) -> None:
    f = tmp_path / "p"
    f.write_bytes(bytes(3 * BS))
    for size in (0, BS + 1, -BS):
        with pytest.raises(VerityError, match="multiple of 4096"):
            verity.create_hash_tree(f, size, SALT)
    with pytest.raises(VerityError, match="smaller than the data size"):
        verity.create_hash_tree(f, 4 * BS, SALT)
    with pytest.raises(VerityError, match="failed to open"):
        verity.create_hash_tree(tmp_path / "missing", BS, SALT)
