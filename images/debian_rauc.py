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

import os
import time
from pathlib import Path

from . import assemble, config
from .build import Image, Variant, build_base, build_lock, finish_image
from .common import Hasher, out_dir

VARIANT = "debian"
EXTRA_PACKAGES = ["rauc", "rauc-service"]
RAUC_BIN = "/usr/bin/rauc"
DESCRIPTION = "Debian rauc 1.8 (/usr/bin/rauc, rauc.service)"


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
    with build_lock(cache):
        return _build(cache, force)


def _build(cache: Path, force: bool) -> Image:
    t0 = time.monotonic()
    own = cache / f"{VARIANT}-rauc"          # private stage cache: prune() never sees the default's outputs
    b = build_base(cache, own, force, EXTRA_PACKAGES)
    here = Path(__file__).parent
    key = (Hasher(f"image-{VARIANT}").text(b.rootfs_key, b.esp_key, assemble.layout_key(), *config.config_inputs(),
                                          mark_good_unit(), os.environ.get("PYRAUC_IMAGE_SALT", ""))
           .file(b.pki / "ca.cert.pem").file(b.ssh_key.with_suffix(".pub"))
           .file(here / "debian_rauc.py").file(here / "build.py").file(here / "assemble.py")
           .file(here / "config.py").file(here / "nvram.py").hexdigest())

    def fill(tree: Path) -> list[Path]:
        return write_target_config(tree, b.pki / "ca.cert.pem", b.ssh_key.with_suffix(".pub"))

    variant = Variant(f"image ({VARIANT})", out_dir(cache, VARIANT), own,
                      "hard-linked rootfs (Debian rauc 1.8) + target config", fill,
                      {"rauc": DESCRIPTION, "rootfs": b.rootfs_key, "esp": b.esp_key})
    return finish_image(variant, key, b, force, t0)
