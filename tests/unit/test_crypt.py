"""Tests of pyrauc.crypt (aes-cbc-plain64, 4096-byte sectors) against `openssl enc` and a naive model.

dm-crypt itself cannot be used as the oracle (no device mapper on the build hosts); per-sector
`openssl enc -aes-256-cbc -nopad -K <key> -iv <le64(8k)||0^8>` is the same transformation.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pyrauc import crypt
from pyrauc.errors import CryptError

SS = 4096
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")


def _data(nsectors: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(nsectors * SS)


def _naive_encrypt(data: bytes, key: bytes, first: int = 0) -> bytes:
    out = []
    for k in range(len(data) // SS):
        iv = ((first + k) * 8).to_bytes(8, "little") + bytes(8)
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        out.append(enc.update(data[k * SS : (k + 1) * SS]) + enc.finalize())
    return b"".join(out)


def _openssl(data: bytes, key: bytes, iv: bytes, decrypt: bool = False) -> bytes:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.fail("openssl not found")
    cmd = [exe, "enc", "-aes-256-cbc", "-nopad", "-K", key.hex(), "-iv", iv.hex()]
    if decrypt:
        cmd.append("-d")
    return subprocess.run(cmd, input=data, check=True, capture_output=True).stdout


@pytest.mark.parametrize("first", [0, 1, 255, 70000, 2**40 + 3])
def test_matches_openssl_per_sector(first: int) -> None:
    data = _data(3, first % 1000)
    ct = crypt.encrypt_bytes(data, KEY, first_sector=first)
    assert len(ct) == len(data)
    for k in range(3):
        iv = ((first + k) * 8).to_bytes(8, "little") + bytes(8)  # plain64 counts 512-byte sectors
        sector = slice(k * SS, (k + 1) * SS)
        assert ct[sector] == _openssl(data[sector], KEY, iv)
        assert _openssl(ct[sector], KEY, iv, decrypt=True) == data[sector]
    assert crypt.decrypt_bytes(ct, KEY, first_sector=first) == data


def test_iv_counts_512_byte_sectors() -> None:
    # rauc.md 1.4: sector 1 uses IV 08 00 .. 00, not 01 00 .. 00 (no iv_large_sectors)
    block = bytes(range(256)) * 16
    ct = crypt.encrypt_bytes(block * 2, KEY)
    assert ct[SS:] == _openssl(block, KEY, bytes([8]) + bytes(15))
    assert ct[SS:] != _openssl(block, KEY, bytes([1]) + bytes(15))
    assert ct[:SS] == _openssl(block, KEY, bytes(16))
    # each sector is independent: same plaintext at a different index -> different ciphertext
    assert ct[:SS] != ct[SS:]


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_file_roundtrip_many_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    monkeypatch.setattr(crypt, "_workers", lambda: workers)
    n = 3 * crypt.CHUNK_SECTORS + 7  # several chunks plus a partial one
    data = _data(n, workers)
    f = tmp_path / "payload"
    f.write_bytes(data)
    calls: list[tuple[int, int]] = []
    crypt.encrypt_file(f, KEY, progress=lambda d, t: calls.append((d, t)))
    ct = f.read_bytes()
    assert ct == _naive_encrypt(data, KEY)
    assert calls[-1] == (len(data), len(data))
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)

    out = tmp_path / "plain"
    dcalls: list[tuple[int, int]] = []
    crypt.decrypt_file(f, len(ct), KEY, out, progress=lambda d, t: dcalls.append((d, t)))
    assert out.read_bytes() == data
    assert dcalls[-1] == (len(data), len(data))


def test_decrypt_prefix_and_file_objects(tmp_path: Path) -> None:
    data = _data(600, 9)
    f = tmp_path / "bundle"
    f.write_bytes(_naive_encrypt(data, KEY) + b"hash tree and CMS follow")
    size = 513 * SS
    buf = io.BytesIO()
    with f.open("rb") as src:
        src.seek(1000)  # position is irrelevant, [0, size) is decrypted
        crypt.decrypt_file(src, size, KEY, buf)
    assert buf.getvalue() == data[:size]
    with (tmp_path / "out").open("wb") as dst:
        dst.write(b"x")  # dst is written sequentially from its current position
        crypt.decrypt_file(str(f), size, KEY, dst)
    assert (tmp_path / "out").read_bytes() == b"x" + data[:size]


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty"
    f.write_bytes(b"")
    crypt.encrypt_file(f, KEY)
    assert f.read_bytes() == b""
    crypt.decrypt_file(f, 0, KEY, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b""


def test_size_not_multiple(tmp_path: Path) -> None:
    f = tmp_path / "p"
    f.write_bytes(bytes(2 * SS + 100))
    msg = r"^Incomplete read: Input size must be multiple of 4096 \(got only 100 bytes\)$"
    with pytest.raises(CryptError, match=msg):
        crypt.encrypt_file(f, KEY)
    assert f.read_bytes() == bytes(2 * SS + 100)  # untouched
    with pytest.raises(CryptError, match=msg):
        crypt.decrypt_file(f, 2 * SS + 100, KEY, tmp_path / "out")
    with pytest.raises(CryptError, match=msg):
        crypt.encrypt_bytes(bytes(100), KEY)
    with pytest.raises(CryptError, match=msg):
        crypt.decrypt_bytes(bytes(SS + 100), KEY)


def test_source_too_short(tmp_path: Path) -> None:
    f = tmp_path / "p"
    f.write_bytes(bytes(2 * SS))
    with pytest.raises(CryptError, match="end of input"):
        crypt.decrypt_file(f, 3 * SS, KEY, tmp_path / "out")


def test_bad_key_not_leaked(tmp_path: Path) -> None:
    f = tmp_path / "p"
    f.write_bytes(bytes(SS))
    bad = bytes(range(31))
    for call in (
        lambda: crypt.encrypt_file(f, bad),
        lambda: crypt.decrypt_file(f, SS, bad, tmp_path / "out"),
        lambda: crypt.encrypt_bytes(bytes(SS), bad),
    ):
        with pytest.raises(CryptError, match="key length") as exc:
            call()
        assert bad.hex() not in str(exc.value) and repr(bad) not in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CryptError, match="failed to open"):
        crypt.encrypt_file(tmp_path / "missing", KEY)
    with pytest.raises(CryptError, match="failed to open"):
        crypt.decrypt_file(tmp_path / "missing", SS, KEY, tmp_path / "out")


def test_encrypt_and_hash_in_one_pass(tmp_path: Path) -> None:
    """verity.create_hash_tree with crypt.encryptor (bundle's single pass) gives the bytes and the
    root of encrypt_file followed by create_hash_tree."""
    from pyrauc import verity

    data = _data(2 * 1024 + 3, seed=19)      # more than one verity chunk, not a whole one
    salt = bytes(range(32))
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(data)
    two.write_bytes(data)
    root_one = verity.create_hash_tree(one, len(data), salt, transform=crypt.encryptor(KEY))
    crypt.encrypt_file(two, KEY)
    root_two = verity.create_hash_tree(two, len(data), salt)
    assert root_one == root_two
    assert one.read_bytes() == two.read_bytes()
    assert one.read_bytes()[:len(data)] == _naive_encrypt(data, KEY)
