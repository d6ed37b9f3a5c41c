"""Adaptive updates (block-hash-index) on files as slots: only missing blocks are read from the image,
the slot ends byte for byte equal to the image, stale indexes cost a fallback, never a wrong block."""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyrauc import handlers, hash_index
from pyrauc.hash_index import BLOCK, HashIndex, Sources

BLOCKS = 1024      # 4 MiB images


def _image(seed: int, blocks: int = BLOCKS) -> bytearray:
    return bytearray(random.Random(seed).randbytes(blocks * BLOCK))


def _change(data: bytearray, runs: list[tuple[int, int]], seed: int = 99) -> bytearray:
    out = bytearray(data)
    rnd = random.Random(seed)
    for first, count in runs:
        out[first * BLOCK:(first + count) * BLOCK] = rnd.randbytes(count * BLOCK)
    return out


def _write(path: Path, data: bytes | bytearray) -> Path:
    path.write_bytes(bytes(data))
    return path


def test_index_of_a_file_matches_the_bundle_format(tmp_path: Path) -> None:
    data = _image(1, 16)
    index = HashIndex.build(_write(tmp_path / "img", data))
    assert index.digests == b"".join(hashlib.sha256(data[i:i + BLOCK]).digest() for i in range(0, len(data), BLOCK))
    assert index.find(index.digest(5)) == 5


def test_only_changed_blocks_are_read_from_the_image(tmp_path: Path) -> None:
    v2 = _image(2)
    v3 = _change(v2, [(100, 20), (600, 31)])           # 5 % of the blocks, in two extents
    v3[900 * BLOCK:910 * BLOCK] = bytes(10 * BLOCK)      # and some zeros
    target = _write(tmp_path / "slot-b", v2 + bytes(64 * BLOCK))
    image = _write(tmp_path / "v3.img", v3)
    index = HashIndex.build(image)
    stats = hash_index.adaptive_copy(image, index, str(target), Sources(target_index=HashIndex.build(target)))
    assert target.read_bytes()[:len(v3)] == bytes(v3)
    assert stats.image_bytes == 51 * BLOCK
    assert stats.written_blocks == 61
    assert stats.hits["zero chunk"] == 10


def test_seed_slot_supplies_blocks_the_target_lacks(tmp_path: Path) -> None:
    active = _image(3)
    v3 = _change(active, [(10, 8)])
    target = _write(tmp_path / "slot-b", _image(4))                 # unrelated old content
    seed = _write(tmp_path / "slot-a", active)
    image = _write(tmp_path / "v3.img", v3)
    stats = hash_index.adaptive_copy(image, HashIndex.build(image), str(target),
                                     Sources(target_index=HashIndex.build(target), seed_device=str(seed),
                                             seed_index=HashIndex.build(seed)))
    assert target.read_bytes() == bytes(v3)
    assert stats.image_bytes == 8 * BLOCK
    assert stats.hits["active_slot"] == BLOCKS - 8


def test_stale_indexes_cost_a_fallback_not_a_wrong_block(tmp_path: Path) -> None:
    v2 = _image(5)
    target = _write(tmp_path / "slot-b", v2)
    stale = HashIndex.build(target)
    changed = _change(v2, [(0, 50)], seed=7)                 # the slot changed after its index was made
    _write(target, changed)
    v3 = bytes(v2)                                           # the update is what the index claims
    image = _write(tmp_path / "v3.img", v3)
    stats = hash_index.adaptive_copy(image, HashIndex.build(image), str(target), Sources(target_index=stale))
    assert target.read_bytes() == v3
    assert stats.image_bytes == 50 * BLOCK


def test_duplicate_blocks_come_from_what_was_written(tmp_path: Path) -> None:
    block = random.Random(8).randbytes(BLOCK)
    v3 = block * 300 + bytes(_image(9, BLOCKS - 300))
    target = _write(tmp_path / "slot-b", bytes(len(v3)))
    image = _write(tmp_path / "v3.img", v3)
    stats = hash_index.adaptive_copy(image, HashIndex.build(image), str(target), Sources())
    assert target.read_bytes() == v3
    assert stats.image_bytes < len(v3)


@pytest.fixture
def job(tmp_path: Path) -> handlers.ImageJob:
    v2 = _image(10)
    v3 = _change(v2, [(500, 40)])
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    image = _write(bundle_dir / "rootfs.ext4", v3)
    HashIndex.build(image).save(bundle_dir / "rootfs.ext4.block-hash-index")
    target = _write(tmp_path / "rootfs-b", v2 + bytes(256 * BLOCK))
    _write(tmp_path / "rootfs-a", v2)
    data = tmp_path / "data"
    img = SimpleNamespace(sha256=hashlib.sha256(v3).hexdigest(), size=len(v3), hooks=[], adaptive=["block-hash-index"],
                          effective_type="ext4", filename="rootfs.ext4", slotclass="rootfs")
    slot = handlers.SlotInfo(name="rootfs.1", sclass="rootfs", device=str(target), type="ext4")
    return handlers.ImageJob(image=img, path=image, slot=slot,
                             adaptive=handlers.AdaptiveJob(str(data), seed_name="rootfs.0",
                                                           seed_device=str(tmp_path / "rootfs-a"),
                                                           target_digest=hashlib.sha256(v2).hexdigest()))


def test_install_image_adaptive_keeps_the_slot_index(job: handlers.ImageJob, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    henv = handlers.HandlerEnv(mountprefix=str(tmp_path / "mnt"), bundle_mount=tmp_path / "bundle")
    with caplog.at_level(logging.INFO, logger="pyrauc"):
        handlers.install_image(job, henv)
    target = Path(job.slot.device).read_bytes()
    assert target[:job.image.size] == job.path.read_bytes()
    stored = tmp_path / "data" / "slot.rootfs.1" / f"hash-{job.image.sha256}" / "block-hash-index"
    assert stored.read_bytes() == (tmp_path / "bundle/rootfs.ext4.block-hash-index").read_bytes()
    assert "Selected adaptive update method 'block-hash-index'" in caplog.text
    assert f"{40 * BLOCK} of {BLOCKS * BLOCK} bytes read from the image" in caplog.text
    # a second install of the same image reads nothing from it: the stored index says the slot has it all
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pyrauc"):
        job.adaptive.target_digest = job.image.sha256      # type: ignore[union-attr]
        handlers.install_image(job, henv)
    assert f"0 of {BLOCKS * BLOCK} bytes read from the image" in caplog.text


def test_adaptive_errors_fall_back_to_a_full_copy(job: handlers.ImageJob, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bundle/rootfs.ext4.block-hash-index").write_bytes(b"short")
    henv = handlers.HandlerEnv(mountprefix=str(tmp_path / "mnt"), bundle_mount=tmp_path / "bundle")
    with caplog.at_level(logging.INFO, logger="pyrauc"):
        handlers.install_image(job, henv)
    assert Path(job.slot.device).read_bytes()[:job.image.size] == job.path.read_bytes()
    assert "Continuing after adaptive mode error: hash index size (5) is not a multiple of 32" in caplog.text


def test_mark_unknown_and_lookup(tmp_path: Path) -> None:
    index = HashIndex(hashlib.sha256(b"x").digest() * 3)
    hash_index.save_slot_index(index, tmp_path, "rootfs.1", "abc")
    assert hash_index.stored_index(tmp_path, "rootfs.1", "abc") is not None
    hash_index.mark_unknown(tmp_path, "rootfs.1")
    assert [p.name for p in (tmp_path / "slot.rootfs.1").iterdir()] == ["hash-unknown"]
    assert hash_index.stored_index(tmp_path, "rootfs.1", "abc") == tmp_path / "slot.rootfs.1/hash-unknown" \
        / "block-hash-index"
