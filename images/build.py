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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import assemble, config, pki, pyrauc_install, rootfs
from .common import SOURCE_DATE_EPOCH, Hasher, log, out_dir, run, stage


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


@contextmanager
def build_lock(cache: Path) -> Iterator[None]:
    """One builder per cache at a time (an flock on CACHE/.lock); says so when it has to wait."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another builder on {cache} ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Variant:
    """What one image variant puts on the shared base (rootfs + ESP) and where its outputs go."""

    name: str                                  # "image" or "image (debian)": the log's label
    out: Path                                  # CACHE/out or CACHE/out-debian
    work_root: Path                            # its stage cache (work/ lives below it)
    layer: str                                 # the layer stage's description
    fill: Callable[[Path], list[Path]]         # writes the variant's files into the tree; returns them
    info: dict[str, str]                       # build.json fields between "key" and "kernel"


def finish_image(variant: Variant, key: str, b: Base, force: bool, t0: float) -> Image:
    """The last two stages of the default layout: layer (hard-linked rootfs + files) and disk."""
    def disk(tmp_out: Path, tree: Path) -> None:
        assemble.assemble_disk(tmp_out, b.esp, tree)

    return finish_image_with(variant, key, b.rootfs, b.pki, b.ssh_key, force, t0, disk,
                             "GPT + ESP + mkfs.ext4 -d in place (rootfs-a, rootfs-b, data) + NVRAM A/B",
                             {p.name: p.uuid for p in assemble.PARTS})


def finish_image_with(variant: Variant, key: str, base: Path, pki_dir: Path, ssh_key: Path, force: bool,
                      t0: float, disk_fn: Callable[[Path, Path], None], disk_what: str,
                      parts: dict[str, str]) -> Image:
    """The last two stages, shared by the variants and layouts: layer (hard-linked rootfs + files) and
    disk (``disk_fn(out_dir, tree)`` writes disk.img, OVMF_VARS.fd and what else the layout has).

    Reuses CACHE/<out> when its build.json has ``key``; otherwise assembles it in <out>.tmp and
    renames it into place.
    """
    out = variant.out
    stamp = out / "build.json"
    disk, vars_fd, key_copy = out / "disk.img", out / "OVMF_VARS.fd", out / "id_ed25519"
    if (not force and stamp.exists() and disk.exists()
            and json.loads(stamp.read_text()).get("key") == key):
        log(f"{variant.name}: cached ({disk}, key {key})")
        return Image(out, disk, vars_fd, key_copy, pki_dir, key, False)

    work = variant.work_root / "work" / f"image-{key}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tree = work / "rootfs"
    tmp_out = out.with_name(out.name + ".tmp")
    try:
        with stage("layer", variant.layer):
            run(["cp", "-al", base, tree])
            _normalize_times(tree, variant.fill(tree))
        shutil.rmtree(tmp_out, ignore_errors=True)
        tmp_out.mkdir()
        with stage("disk", disk_what):
            disk_fn(tmp_out, tree)
            shutil.copy2(ssh_key, tmp_out / "id_ed25519")
            os.chmod(tmp_out / "id_ed25519", 0o600)
            info = {"key": key, **variant.info, "kernel": assemble.kernel_version(base), "parts": parts}
            (tmp_out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
            if out.exists():
                shutil.rmtree(out)
            tmp_out.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp_out, ignore_errors=True)
    log(f"{variant.name}: {disk} ready in {time.monotonic() - t0:.1f} s (key {key})")
    return Image(out, disk, vars_fd, key_copy, pki_dir, key, True)


@dataclass(frozen=True)
class Base:
    """The stages every variant starts from: PKI + SSH key (shared), rootfs and ESP (per stage cache)."""

    pki: Path
    ssh_key: Path
    rootfs: Path
    rootfs_key: str
    esp: Path
    esp_key: str


def build_base(cache: Path, stage_cache: Path, force: bool, extra_packages: Sequence[str] = ()) -> Base:
    """PKI and SSH key under ``cache``; rootfs (+ ``extra_packages``) and ESP under ``stage_cache``."""
    pki_dir = pki.ensure_pki(cache)
    ssh_key = pki.ensure_ssh_key(cache)
    base, base_key = rootfs.build_rootfs(stage_cache, force, extra_packages)
    esp, esp_key = assemble.build_esp(stage_cache, base, base_key, force)
    return Base(pki_dir, ssh_key, base, base_key, esp, esp_key)


def build(cache: Path, force: bool = False) -> Image:
    """Build (or reuse) disk.img + OVMF_VARS.fd under CACHE/out; one builder per cache at a time."""
    with build_lock(cache):
        return _build(cache, force)


def _build(cache: Path, force: bool) -> Image:
    t0 = time.monotonic()
    b = build_base(cache, cache, force)
    wheels, wheels_key = pyrauc_install.download_wheels(cache, force)
    pydeps, pydeps_key = pyrauc_install.build_pydeps(cache, b.rootfs, b.rootfs_key, wheels, wheels_key, force)
    here = Path(__file__).parent
    key = (Hasher("image").text(b.rootfs_key, pydeps_key, b.esp_key, assemble.layout_key(),
                                pyrauc_install.source_key(), *config.config_inputs(),
                                # benchmarks set a salt to redo this stage without editing the tree
                                os.environ.get("PYRAUC_IMAGE_SALT", ""))
           .file(b.pki / "ca.cert.pem").file(b.ssh_key.with_suffix(".pub"))
           .file(here / "build.py").file(here / "assemble.py").file(here / "config.py")
           .file(here / "pyrauc_install.py").file(here / "nvram.py").hexdigest())

    def fill(tree: Path) -> list[Path]:
        written = pyrauc_install.install_pyrauc(tree, pydeps)
        return written + config.write_target_config(tree, b.pki / "ca.cert.pem", b.ssh_key.with_suffix(".pub"))

    variant = Variant("image", out_dir(cache), cache, "hard-linked rootfs + pyrauc venv + target config", fill,
                      {"rootfs": b.rootfs_key, "pydeps": pydeps_key, "esp": b.esp_key,
                       "pyrauc_source": pyrauc_install.source_key()})
    return finish_image(variant, key, b, force, t0)
