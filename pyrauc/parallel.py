"""A bounded, ordered thread-pool map for streaming work over large files.

hashlib and cryptography's ``update_into`` release the GIL, so threads use every core for hash
trees and payload encryption; keeping at most ``2 * workers`` tasks in flight keeps memory
independent of the payload size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:   # concurrent.futures is imported when a pool is needed (not by `info` and the like)
    from concurrent.futures import Future

_T = TypeVar("_T")
_R = TypeVar("_R")


def default_workers(limit: int = 8) -> int:
    """Usable CPUs, at least 1 and at most ``limit``."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, limit))


def ordered_map(fn: Callable[[_T], _R], items: Iterable[_T], workers: int,
                name: str = "pyrauc") -> Generator[_R, None, None]:
    """Like ``ThreadPoolExecutor.map``, with results in order and at most ``2 * workers`` in flight."""
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        pending: deque[Future[_R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
