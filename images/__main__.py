"""Command line: ``python -m images [--force] [--cache-dir DIR]`` builds the lab disk image."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .build import build
from .common import cache_dir, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images", description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild every stage (the lab keys are kept)")
    parser.add_argument("--cache-dir", help="cache root (default: $PYRAUC_IMAGE_CACHE or images/cache)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("python -m images: needs root (mmdebstrap --mode=root, chroot)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    img = build(cache_dir(args.cache_dir), force=args.force)
    log(f"total {time.monotonic() - t0:.1f} s")
    print(img.disk)
    print(img.vars)
    print(img.ssh_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
