"""Builder of the pyrauc lab disk image (Debian bookworm, UEFI, A/B rootfs, pyrauc in /opt/pyrauc).

Run ``python -m images [--force] [--cache-dir DIR]``; outputs land in ``<cache>/out``. See build.py.
"""
