"""Command line: ``python -m images [--force] [--cache-dir DIR] [--rauc pyrauc|debian] [--layout efi|meta-rauc]``
builds the lab disk image.

``--rauc debian`` (default: $PYRAUC_LAB_RAUC, else pyrauc) builds the variant with Debian's C rauc
1.8 instead of pyrauc, into CACHE/out-debian/; the default image is not touched. ``--layout meta-rauc``
(default: $PYRAUC_LAB_LAYOUT, else efi) builds the second target, the tutorial's GRUB + boot-gpt-switch
device (images/meta_rauc.py), into CACHE/out-meta-rauc/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import debian_rauc, meta_rauc
from .build import build
from .common import LAYOUTS, RAUC_VARIANTS, cache_dir, lab_layout, log, rauc_variant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images", description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild every stage (the lab keys are kept)")
    parser.add_argument("--cache-dir", help="cache root (default: $PYRAUC_IMAGE_CACHE or images/cache)")
    parser.add_argument("--rauc", choices=RAUC_VARIANTS, default=None,
                        help="rauc on the target: pyrauc (default) or debian (C rauc 1.8 from bookworm); "
                             "default $PYRAUC_LAB_RAUC")
    parser.add_argument("--layout", choices=LAYOUTS, default=None,
                        help="target layout: efi (default: UKIs, efi backend) or meta-rauc (the tutorial's "
                             "GRUB + boot-gpt-switch device); default $PYRAUC_LAB_LAYOUT")
    args = parser.parse_args(argv)
    try:
        variant = rauc_variant(args.rauc)
        layout = lab_layout(args.layout)
    except ValueError as e:
        print(f"python -m images: {e}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("python -m images: needs root (mmdebstrap --mode=root, chroot)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    if layout == "meta-rauc":
        img = meta_rauc.build(cache_dir(args.cache_dir), force=args.force, rauc=variant)
    elif variant == "debian":
        img = debian_rauc.build(cache_dir(args.cache_dir), force=args.force)
    else:
        img = build(cache_dir(args.cache_dir), force=args.force)
    log(f"total {time.monotonic() - t0:.1f} s")
    print(img.disk)
    print(img.vars)
    print(img.ssh_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
