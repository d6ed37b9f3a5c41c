"""The opt-in image variant with Debian's C rauc 1.8 instead of pyrauc (``--rauc debian``).

Same disk layout, system.conf, keyring, SSH key and rauc-mark-good.service as the default image,
but the rootfs gets the bookworm packages ``rauc`` + ``rauc-service`` (rauc.service, D-Bus
activated; it reads /etc/rauc/system.conf when it starts) and no pyrauc venv and no
/usr/local/bin/{rauc,pyrauc}; the mark-good unit calls /usr/bin/rauc. Nothing of the default
image's stages or cache keys changes: the variant's rootfs, ESP and work trees live under
CACHE/debian-rauc/ (so the stage pruning never removes the default outputs) and its disk under
CACHE/out-debian/.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from . import assemble, config, pki, rootfs
from .build import Image, _normalize_times
from .common import Hasher, log, run, stage

VARIANT = "debian"
EXTRA_PACKAGES = ["rauc", "rauc-service"]
RAUC_BIN = "/usr/bin/rauc"
DESCRIPTION = "Debian rauc 1.8 (/usr/bin/rauc, rauc.service)"


def out_dir(cache: Path) -> Path:
    return cache / f"out-{VARIANT}"


def mark_good_unit() -> str:
    return config.MARK_GOOD_UNIT.replace("/usr/local/bin/rauc", RAUC_BIN)


def write_target_config(root: Path, keyring: Path, ssh_pubkey: Path) -> list[Path]:
    """config.write_target_config, minus the pyrauc symlinks, with the unit calling /usr/bin/rauc."""
    written = config.write_target_config(root, keyring, ssh_pubkey)
    drop = {root / "usr/local/bin" / name for name in ("rauc", "pyrauc")}
    for p in drop:
        p.unlink()
    unit = root / "etc/systemd/system/rauc-mark-good.service"
    unit.unlink()
    unit.write_text(mark_good_unit())
    os.chmod(unit, 0o644)
    return [p for p in written if p not in drop] + [root / "usr/local/bin"]


def build(cache: Path, force: bool = False) -> Image:
    """Build (or reuse) CACHE/out-debian/{disk.img,OVMF_VARS.fd,id_ed25519,build.json}."""
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
    own = cache / f"{VARIANT}-rauc"          # private stage cache: prune() never sees the default's outputs
    base, base_key = rootfs.build_rootfs(own, force, EXTRA_PACKAGES)
    esp, esp_key = assemble.build_esp(own, base, base_key, force)
    here = Path(__file__).parent
    key = (Hasher(f"image-{VARIANT}").text(base_key, esp_key, assemble.layout_key(), *config.config_inputs(),
                                          mark_good_unit(), os.environ.get("PYRAUC_IMAGE_SALT", ""))
           .file(pki_dir / "ca.cert.pem").file(ssh_key.with_suffix(".pub"))
           .file(here / "debian_rauc.py").file(here / "build.py").file(here / "assemble.py")
           .file(here / "config.py").file(here / "nvram.py").hexdigest())
    out = out_dir(cache)
    stamp = out / "build.json"
    disk, vars_fd, key_copy = out / "disk.img", out / "OVMF_VARS.fd", out / "id_ed25519"
    if (not force and stamp.exists() and disk.exists()
            and json.loads(stamp.read_text()).get("key") == key):
        log(f"image ({VARIANT}): cached ({disk}, key {key})")
        return Image(out, disk, vars_fd, key_copy, pki_dir, key, False)

    work = own / "work" / f"image-{key}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tree = work / "rootfs"
    tmp_out = out.with_name(out.name + ".tmp")
    try:
        with stage("layer", "hard-linked rootfs (Debian rauc 1.8) + target config"):
            run(["cp", "-al", base, tree])
            written = write_target_config(tree, pki_dir / "ca.cert.pem", ssh_key.with_suffix(".pub"))
            _normalize_times(tree, written)
        shutil.rmtree(tmp_out, ignore_errors=True)
        tmp_out.mkdir()
        with stage("disk", "GPT + ESP + mkfs.ext4 -d in place (rootfs-a, rootfs-b, data) + NVRAM A/B"):
            assemble.assemble_disk(tmp_out, esp, tree)
            shutil.copy2(ssh_key, tmp_out / "id_ed25519")
            os.chmod(tmp_out / "id_ed25519", 0o600)
            info = {"key": key, "rauc": DESCRIPTION, "rootfs": base_key, "esp": esp_key,
                    "kernel": assemble.kernel_version(base),
                    "parts": {p.name: p.uuid for p in assemble.PARTS}}
            (tmp_out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
            if out.exists():
                shutil.rmtree(out)
            tmp_out.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp_out, ignore_errors=True)
    log(f"image ({VARIANT}): {disk} ready in {time.monotonic() - t0:.1f} s (key {key})")
    return Image(out, disk, vars_fd, key_copy, pki_dir, key, True)
