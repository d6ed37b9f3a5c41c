"""Diagnostics on stderr as GLib's default log handler prints RAUC's (shared by the CLI and the NBD helper).

``rauc-Message: 16:01:26.307: text``, ``(rauc:PID): rauc-WARNING **: 16:01:26.307: text``,
``rauc-DEBUG: 16:01:26.307: text``; the log domain is ``rauc`` (the NBD helper: ``rauc-nbd``).
"""

from __future__ import annotations

import logging
import os
import sys
import time


class GLibFormatter(logging.Formatter):
    """One record as GLib prints a message of log domain ``domain``."""

    def __init__(self, domain: str = "rauc") -> None:
        super().__init__()
        self.domain = domain

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"(rauc:{os.getpid()}): {self.domain}-WARNING **: {stamp}: {text}"
        if record.levelno >= logging.INFO:
            return f"{self.domain}-Message: {stamp}: {text}"
        return f"{self.domain}-DEBUG: {stamp}: {text}"


def setup_logging(debug: bool, domain: str = "rauc") -> None:
    """pyrauc's loggers to stderr in GLib's format; ``debug`` adds the debug messages."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(GLibFormatter(domain))
    root = logging.getLogger("pyrauc")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
