"""The image build pipeline: every stage cached by a content hash of its inputs.

rootfs (mmdebstrap) -> wheels + pydeps (venv with dependencies) -> esp (UKIs + FAT) ->
image (hard-linked rootfs copy + pyrauc + target config -> ext4 slots -> GPT disk + NVRAM).
Only the last stage runs when just pyrauc changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import assemble, config, pki, pyrauc_install, rootfs
from .common import SOURCE_DATE_EPOCH, Hasher, log, run, stage


@dataclass(frozen=True)
class Image:
    """What the builder produced (paths under CACHE/out)."""

    out: Path
    disk: Path
    vars: Path
    ssh_key: Path
    pki: Path
    key: str
    rebuilt: bool


def _normalize_times(root: Path, paths: list[Path]) -> None:
    """Fixed times on the layer's new inodes and on the directories that received them."""
    dirs = {p.parent for p in paths}
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            run(["find", p, "-exec", "touch", "-h", "-d", f"@{SOURCE_DATE_EPOCH}", "{}", "+"])
        dirs.update(d for d in p.parents if root in d.parents)
    dirs.add(root / "tmp")    # the pyrauc wheel passed through it
    inside = sorted(d for d in dirs if root in d.parents or d == root)
    run(["touch", "-h", "-d", f"@{SOURCE_DATE_EPOCH}", *inside, *paths])


def build(cache: Path, force: bool = False) -> Image:
    """Build (or reuse) disk.img + OVMF_VARS.fd under CACHE/out; one builder per cache at a time."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another builder on {cache} ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(cache, force)


def _build(cache: Path, force: bool) -> Image:
    t0 = time.monotonic()
    pki_dir = pki.ensure_pki(cache)
    ssh_key = pki.ensure_ssh_key(cache)
    base, base_key = rootfs.build_rootfs(cache, force)
    wheels, wheels_key = pyrauc_install.download_wheels(cache, force)
    pydeps, pydeps_key = pyrauc_install.build_pydeps(cache, base, base_key, wheels, wheels_key, force)
    esp, esp_key = assemble.build_esp(cache, base, base_key, force)
    here = Path(__file__).parent
    key = (Hasher("image").text(base_key, pydeps_key, esp_key, assemble.layout_key(),
                                pyrauc_install.source_key(), *config.config_inputs(),
                                # benchmarks set a salt to redo this stage without editing the tree
                                os.environ.get("PYRAUC_IMAGE_SALT", ""))
           .file(pki_dir / "ca.cert.pem").file(ssh_key.with_suffix(".pub"))
           .file(here / "build.py").file(here / "assemble.py").file(here / "config.py")
           .file(here / "pyrauc_install.py").file(here / "nvram.py").hexdigest())
    out = cache / "out"
    stamp = out / "build.json"
    disk, vars_fd, key_copy = out / "disk.img", out / "OVMF_VARS.fd", out / "id_ed25519"
    if (not force and stamp.exists() and disk.exists()
            and json.loads(stamp.read_text()).get("key") == key):
        log(f"image: cached ({disk}, key {key})")
        return Image(out, disk, vars_fd, key_copy, pki_dir, key, False)

    work = cache / "work" / f"image-{key}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tree = work / "rootfs"
    try:
        with stage("layer", "hard-linked rootfs + pyrauc venv + target config"):
            run(["cp", "-al", base, tree])
            written = pyrauc_install.install_pyrauc(tree, pydeps)
            written += config.write_target_config(tree, pki_dir / "ca.cert.pem", ssh_key.with_suffix(".pub"))
            _normalize_times(tree, written)
        tmp_out = cache / "out.tmp"
        shutil.rmtree(tmp_out, ignore_errors=True)
        tmp_out.mkdir()
        with stage("disk", "GPT + ESP + mkfs.ext4 -d in place (rootfs-a, rootfs-b, data) + NVRAM A/B"):
            assemble.assemble_disk(tmp_out, esp, tree)
            shutil.copy2(ssh_key, tmp_out / "id_ed25519")
            os.chmod(tmp_out / "id_ed25519", 0o600)
            info = {"key": key, "rootfs": base_key, "pydeps": pydeps_key, "esp": esp_key,
                    "pyrauc_source": pyrauc_install.source_key(),
                    "kernel": assemble.kernel_version(base),
                    "parts": {p.name: p.uuid for p in assemble.PARTS}}
            (tmp_out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
            if out.exists():
                shutil.rmtree(out)
            tmp_out.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cache / "out.tmp", ignore_errors=True)
    log(f"image: {disk} ready in {time.monotonic() - t0:.1f} s (key {key})")
    return Image(out, disk, vars_fd, key_copy, pki_dir, key, True)
