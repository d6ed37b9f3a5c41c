"""pyrauc: a RAUC-compatible update tool chain in Python.

The library is split like RAUC itself, one module per concept (bundle, manifest, signature,
envelope, verity, crypt, ...); :mod:`pyrauc.cli` is the thin command-line front over it.
"""

__version__ = "0.1.0"
#: The RAUC release whose CLI text and behaviour pyrauc follows.
RAUC_COMPAT_VERSION = "1.15.2"
