"""Releasing what was set up: one rule for loop devices, dm devices and mounts.

A :class:`Resource` is something already acquired (an attached loop device, a created dm device,
a mount) together with the call that releases it. Used as a context manager it is *always*
released on exit. When the body failed, a failing release is only logged as a warning, so the
second failure cannot hide the first one; after a successful body a failing release raises.

Stacks of resources (loop -> dm-verity -> dm-crypt -> mount) are built on
:class:`contextlib.ExitStack`; :meth:`contextlib.ExitStack.pop_all` hands the whole stack over to a
new owner (``rauc mount`` leaves it to the kernel) without releasing anything, since a Resource
does nothing when it is dropped unused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

_T = TypeVar("_T")


class Resource(Generic[_T]):
    """``value`` (e.g. a device path) and how to release it; a context manager yielding ``value``."""

    def __init__(self, value: _T, release: Callable[[], None], *, error: type[Exception],
                 logger: logging.Logger) -> None:
        self.value = value
        self._release: Callable[[], None] | None = release
        self._error = error
        self._logger = logger

    def __enter__(self) -> _T:
        return self.value

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        if exc_type is None:
            release()
            return
        try:
            release()
        except self._error as second:
            self._logger.warning("%s", second)
