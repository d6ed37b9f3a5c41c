"""Streaming bundles as a block device: the NBD helper, its protocol, and the kernel's NBD (RAUC's src/nbd.c).

::

    pyrauc (root) --fd--+   socketpair(AF_UNIX, SOCK_STREAM)   +-- HTTP(S) Range GETs --> server
                        +------------- helper process ---------+   (sandbox user, pyrauc.stream)
    phase A: pyrauc talks NBD on its end (CONFIGURE, READs of the bundle's tail and CMS)
    phase B: pyrauc hands its end to the kernel (netlink NBD_CMD_CONNECT) -> /dev/nbdN; the kernel
             sends the NBD requests, the helper still answers them; dm-verity/dm-crypt/squashfs on top

The helper (:class:`Helper`) is ``python -m pyrauc.nbd`` with the socket's number in the environment
variable ``RAUC_NBD_SERVER``. When pyrauc runs as root it starts as ``[streaming] sandbox-user``
(default nobody: supplementary groups, gid, uid), sets NO_NEW_PRIVS, and never sees a key of the
bundle: it only moves bytes, and dm-verity above authenticates every block it delivers. It runs in
its own session (Ctrl+C on the terminal reaches pyrauc, which stops it in order).

Protocol on the socketpair (big-endian): request ``magic 0x25609513, type u32, handle 8 bytes,
from u64, len u32``; reply ``magic 0x67446698, error u32, handle``, then ``len`` bytes for a READ
with error 0. Types: READ (0), DISC (2), and pyrauc's private CONFIGURE (0x1000) whose payload and
reply are JSON (RAUC uses a GVariant there; only the kernel-facing part must be exact). READs are
answered by a pool of threads, each with its own keep-alive HTTP connection, in completion order
(the kernel keeps several requests in flight); adjacent READs that arrive together are fetched with
one Range request (:func:`merge_reads`). The squashfs above reads one block (128 KiB) at a time and
waits for it, so most READs arrive alone: :class:`ReadAhead` notices sequential runs, fetches the
bytes that follow, and fetches each next window in the background (two threads of their own) while
the one before is read. A READ whose bytes are fetched already is answered by the receiving thread
at once, with one ``sendmsg``; only the others go to the pool (one HTTP request per megabytes
instead of per block, and no thread hand-over per block: under TCG each cost the helper
milliseconds of CPU). A failed READ is answered with EIO (5); the kernel's read fails and so does
the install.

Kernel side (:func:`kernel_device`): generic netlink family ``nbd``, NBD_CMD_CONNECT with size,
block size 4096, timeout 300 s, server flags 0 and the socket; the kernel picks /dev/nbdN, whose
request size limit pyrauc raises from the driver's 128 KiB (:func:`raise_request_limit`: one READ
per squashfs block instead of two; RAUC leaves it). The device is opened read-only, then
NBD_CMD_RECONFIGURE sets DISCONNECT_ON_CLOSE (RAUC 1.15's order: udev's short opens cannot tear it
down), so when the last user (dm-verity) goes away the kernel
disconnects, sends DISC to the helper and the helper exits. The release of the device also sends
NBD_CMD_DISCONNECT and waits for the helper.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import pwd
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyrauc import stream
from pyrauc.cleanup import Resource
from pyrauc.errors import InstallError, RaucError
from pyrauc.stream import ServerInfo, Stats, StreamError, StreamOptions

log = logging.getLogger(__name__)

REQUEST_MAGIC = 0x25609513
REPLY_MAGIC = 0x67446698
CMD_READ = 0
CMD_DISC = 2
CMD_CONFIGURE = 0x1000
EIO = 5
CONFIG_HANDLE = bytes.fromhex("89ce48240ce482ce")
REQUEST = struct.Struct(">II8sQI")
REPLY = struct.Struct(">II8s")
ENV = "RAUC_NBD_SERVER"
BLOCK_SIZE = 4096
KERNEL_TIMEOUT = 300
WORKERS = 8                          # READs answered at once (one HTTP connection each)
AHEAD_WORKERS = 2                    # background read-ahead fetches at once (their own connections)
STOP_TIMEOUT = 30.0
MAX_REQUEST = 32 << 20               # a READ larger than this is a protocol error
MERGE_LIMIT = 4 << 20                # adjacent READs fetched with one Range request, up to this many bytes
PROGRESS_INTERVAL = 10.0             # seconds between the helper's download progress lines
READAHEAD_START = 2 << 20            # a run reads ahead once it has fetched this much,
READAHEAD_START_READS = 32           # or in this many fetches (dm-verity's 4 KiB hash-block READs)
READAHEAD_PAGES = 512                # pages kept after their bytes were read (2 MiB): see ReadAhead
READAHEAD_SMALL = 16                 # a span of at most this many pages is kept whole once read
READAHEAD_MAX = 4 << 20              # the largest read-ahead (one Range request)
READAHEAD_LINK = 4 << 20             # a read this close after a run's end continues the run
READAHEAD_SHARE = 4                  # a run reads ahead 1/READAHEAD_SHARE of what it fetched so far
READAHEAD_KEEP = 16 << 20            # no read-ahead while this many fetched bytes wait to be read
READAHEAD_STALE = 64                 # fetched bytes not read from during this many reads are dropped
MAX_SECTORS_KB = 4096                # the largest READ the kernel sends (its nbd default: 128 KiB)


class NbdError(InstallError):
    """The NBD helper or the kernel's NBD device failed."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``sock``; b"" at a clean EOF before the first byte."""
    first = sock.recv(n, socket.MSG_WAITALL)      # one call for the whole message, as a rule
    if len(first) == n or not first:
        return first
    buf = bytearray(first)
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise EOFError("connection closed in the middle of a message")
            return b""
        buf += chunk
    return bytes(buf)


# --------------------------------------------------------------------------------------------
# the helper process: the NBD server

@dataclass(eq=False)
class _Span:
    """Fetched (or being fetched) bytes ``[start, end)`` of the bundle."""

    start: int
    end: int
    ready: threading.Event = field(default_factory=threading.Event)
    data: bytes = b""
    error: StreamError | None = None
    served: int = 0                    # pages handed out so far (a bit per page: READs may overlap)
    used: int = 0                      # ReadAhead's read count when it was last read from
    next: _Span | None = None          # the window fetched in the background after this one
    page: bool = False                 # a kept page (ReadAhead._pages)


class ReadAhead:
    """Sequential read-ahead over ``fetch(offset, length)`` (thread-safe).

    A sequential run is READs that each start where an earlier fetch ended, or in its last page
    (compressed squashfs blocks share pages). A READ may also join a run that ended at most
    :data:`READAHEAD_LINK` bytes before it: the install copies with several readers, each a chunk
    ahead of the other, and so they make one run. Once a run has fetched :data:`READAHEAD_START`
    bytes, or made :data:`READAHEAD_START_READS` fetches (while the copy reads the data, dm-verity
    reads the hash tree's lowest level 4 KiB at a time, one block per 512 KiB of data: a run of
    small READs), its READs are fetched together with the bytes after them: a quarter
    (:data:`READAHEAD_SHARE`) of the run, at most :data:`READAHEAD_MAX`. So a long copy takes one
    request per READAHEAD_MAX and fetches at most a quarter of a short run in vain at its end.

    With ``spawn`` (a function that runs a callable in another thread), the run's next window is
    fetched in the background as soon as a READ is answered from the window before it, so a
    steady sequential reader finds its bytes fetched: :meth:`cached` answers it without
    waiting (the NBD server's receiving thread replies at once, no thread hand-over).

    Shorter runs (an adaptive update's changed extents and their few hash blocks), random READs
    and bytes read before are fetched exactly, so adaptive updates fetch what they fetched without
    read-ahead. READs into fetched (or still arriving) bytes are answered from them. Fetched bytes
    are dropped once every page of them was read, but some pages are kept (:meth:`_account`:
    the squashfs reads its metadata blocks again and again, and neighbouring READs share pages);
    unread bytes are dropped when nobody read from them (or from the window before them) during
    the last :data:`READAHEAD_STALE` reads (a run's overshoot). No read-ahead starts while
    :data:`READAHEAD_KEEP` bytes are held, so memory stays bounded (that, and
    :data:`READAHEAD_PAGES` pages) and bytes are never dropped before they are read. A failed
    fetch fails the reads waiting for it and is forgotten (a later read tries again).
    """

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, *, start: int = READAHEAD_START,
                 maximum: int = READAHEAD_MAX, keep: int = READAHEAD_KEEP, share: int = READAHEAD_SHARE,
                 spawn: Callable[[Callable[[], None]], object] | None = None) -> None:
        self._fetch = fetch
        self._size = size
        self._start, self._max, self._keep, self._share = start, maximum, keep, share
        self._spawn = spawn
        self._lock = threading.Lock()
        self._spans: list[_Span] = []          # oldest first
        self._held = 0                         # bytes of the spans
        self._runs: dict[int, tuple[int, int]] = {}   # where a fetch ended -> its run's bytes and fetches
        self._gone: deque[tuple[int, int]] = deque(maxlen=256)   # fetched before, since dropped
        self._pages: OrderedDict[int, _Span] = OrderedDict()     # kept pages by number, oldest first
        self._reads = 0

    def cached(self, offset: int, length: int) -> bytes | memoryview | None:
        """The bytes if fetched bytes hold all of them, else None (never waits, never fetches in
        this thread; may start the run's next window in the background)."""
        end = offset + length
        parts: list[tuple[_Span, int, int]] = []
        with self._lock:
            pos = offset
            while pos < end:
                found = self._find(pos)
                if found is None or not found.ready.is_set() or found.error is not None:
                    return None
                span = found
                parts.append((span, pos, min(end, span.end)))
                pos = min(end, span.end)
            self._reads += 1
            aheads = []
            for span, first, stop in parts:
                span.used = self._reads
                aheads.append(self._ahead(span))
                self._account(span, first, stop)
        for ahead in aheads:
            if ahead is not None:
                self._background(ahead)
        views = [memoryview(span.data)[first - span.start:stop - span.start] for span, first, stop in parts]
        return views[0] if len(views) == 1 else b"".join(views)

    def read(self, offset: int, length: int) -> bytes | memoryview:
        """Exactly ``length`` bytes at ``offset`` (StreamError from the fetch that failed)."""
        parts: list[memoryview] = []
        pos, end = offset, offset + length
        while pos < end:
            span, owner, ahead = self._claim(pos, end)
            if ahead is not None:
                self._background(ahead)
            if owner:
                self._fill(span)
            else:
                span.ready.wait()
            if span.error is not None:
                raise span.error
            take = min(end, span.end) - pos
            parts.append(memoryview(span.data)[pos - span.start:pos - span.start + take])
            pos += take
            with self._lock:
                self._account(span, pos - take, pos)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _claim(self, pos: int, end: int) -> tuple[_Span, bool, _Span | None]:
        """The span holding ``pos`` (False), or a new one starting there for this thread to fetch
        (True); and the run's next window if it is to be fetched in the background now."""
        with self._lock:
            self._reads += 1
            self._evict()
            found = self._find(pos)
            if found is not None:
                found.used = self._reads
                return found, False, self._ahead(found)
            run = self._runs.pop(pos, (0, 0))
            if self._read_before(pos):
                run = (0, 0)                   # read again (dm-verity's hash blocks): no read-ahead
            elif not run[0]:
                near = [e for e in self._runs if pos - READAHEAD_LINK <= e < pos]
                run = self._runs[max(near)] if near else (0, 0)
            stop = end
            room = self._keep - self._held
            if self._long(run) and room > 0:   # a long run: fetch ahead, within the budget and the bundle
                ahead = min(max(run[0] // self._share, end - pos), self._max, room)
                stop = max(end, min((pos + ahead) // BLOCK_SIZE * BLOCK_SIZE, self._size))
            span = self._add(pos, self._clip(pos, stop), run)
            return span, True, None

    def _find(self, pos: int) -> _Span | None:
        """The held span or the kept page that holds ``pos`` (lock held)."""
        for span in self._spans:
            if span.start <= pos < span.end and span.error is None:
                return span
        page = self._pages.get(pos // BLOCK_SIZE)
        if page is not None:
            self._pages.move_to_end(pos // BLOCK_SIZE)
        return page

    def _read_before(self, pos: int) -> bool:
        """Whether ``pos`` was fetched and dropped since (lock held)."""
        return any(start <= pos < stop for start, stop in self._gone)

    def _drop(self, span: _Span, *, gone: bool = True) -> None:
        """Forget a held span (lock held); ``gone``: its bytes were fetched (see _read_before)."""
        self._spans.remove(span)
        self._held -= span.end - span.start
        if gone:
            self._gone.append((span.start, span.end))

    def _long(self, run: tuple[int, int]) -> bool:
        """A run that reads ahead: READAHEAD_START bytes, or READAHEAD_START_READS fetches."""
        return run[0] >= self._start or run[1] >= READAHEAD_START_READS

    def _clip(self, pos: int, stop: int) -> int:
        """``stop``, or an earlier start of held or dropped bytes after ``pos`` (lock held)."""
        return min([stop] + [s.start for s in self._spans if pos < s.start < stop]
                   + [start for start, _ in self._gone if pos < start < stop])

    def _add(self, pos: int, stop: int, run: tuple[int, int]) -> _Span:
        """A new span ``[pos, stop)`` continuing ``run`` (its bytes and fetches; lock held)."""
        span = _Span(pos, stop, used=self._reads)
        self._spans.append(span)
        self._held += stop - pos
        self._runs[stop] = (run[0] + (stop - pos), run[1] + 1)
        while len(self._runs) > 64:            # only recent ends can continue a run
            del self._runs[next(iter(self._runs))]
        return span

    def _ahead(self, span: _Span) -> _Span | None:
        """The window after ``span``, to be fetched in the background once a READ is answered from
        ``span`` and ``span`` ends a long run (lock held)."""
        if self._spawn is None or span.page:
            return None
        if span.next is not None:              # coming already: still wanted
            span.next.used = self._reads
            return None
        run = self._runs.get(span.end, (0, 0))
        want = max(min(run[0] // self._share, self._max) // BLOCK_SIZE * BLOCK_SIZE, BLOCK_SIZE)
        if not self._long(run) or span.end >= self._size or self._keep - self._held < want:
            return None
        if any(s.start <= span.end < s.end for s in self._spans) or self._read_before(span.end):
            return None                        # held, or read before (another reader's chunk)
        stop = self._clip(span.end, min(span.end + want, self._size))
        del self._runs[span.end]
        span.next = self._add(span.end, stop, run)
        return span.next

    def _background(self, span: _Span) -> None:
        assert self._spawn is not None
        try:
            self._spawn(lambda: self._fill(span))
        except RuntimeError:                   # the pool is shutting down: nobody will read it
            self._fill_failed(span, StreamError("the nbd server is stopping"))

    def _fill(self, span: _Span) -> None:
        try:
            span.data = self._fetch(span.start, span.end - span.start)
        except StreamError as e:
            self._fill_failed(span, e)
        except Exception as e:                 # never leave waiting readers behind
            self._fill_failed(span, StreamError(f"{type(e).__name__}: {e}"))
        span.ready.set()

    def _fill_failed(self, span: _Span, error: StreamError) -> None:
        span.error = error
        with self._lock:
            if span in self._spans:
                self._drop(span, gone=False)
            self._runs.pop(span.end, None)
        span.ready.set()

    def _account(self, span: _Span, first: int, stop: int) -> None:
        """Bytes ``[first, stop)`` of ``span`` went out (lock held). Once all did, the span is dropped (a READ of
        it again fetches anew, exactly) but some of its pages are kept, :data:`READAHEAD_PAGES` at
        most, the least recently used dropped first: its first and last page (compressed squashfs
        blocks share pages: the next block's READ starts in the page this one ended in, and a copy
        reader's chunk starts in the page where the reader before it ended), or all of them when it
        is small (squashfs reads its metadata blocks again and again: its own cache is small)."""
        if span.page:
            return
        base = span.start // BLOCK_SIZE
        lo, hi = first // BLOCK_SIZE - base, -(-stop // BLOCK_SIZE) - base
        span.served |= ((1 << (hi - lo)) - 1) << lo
        if span.served != (1 << (-(-span.end // BLOCK_SIZE) - base)) - 1 or span not in self._spans:
            return
        self._drop(span)
        first = -(-span.start // BLOCK_SIZE)      # whole pages of the span only (or the bundle's last)
        stop = -(-span.end // BLOCK_SIZE) if span.end == self._size else span.end // BLOCK_SIZE
        if stop <= first:
            return
        keep = range(first, stop) if stop - first <= READAHEAD_SMALL else (first, stop - 1)
        view = memoryview(span.data)
        for number in keep:
            at, until = number * BLOCK_SIZE, min((number + 1) * BLOCK_SIZE, span.end)
            page = _Span(at, until, data=bytes(view[at - span.start:until - span.start]), used=self._reads, page=True)
            page.ready.set()
            self._pages[number] = page
            self._pages.move_to_end(number)
        while len(self._pages) > READAHEAD_PAGES:
            self._pages.popitem(last=False)

    def _evict(self) -> None:
        """Drop fetched bytes nobody read from during the last READAHEAD_STALE reads (lock held):
        what a run fetched past its end. Bytes still to be read are never dropped for room."""
        stale = [s for s in self._spans if s.ready.is_set() and self._reads - s.used > READAHEAD_STALE]
        for s in stale:
            self._drop(s)


class NbdServer:
    """Answers NBD requests on ``sock`` with HTTP Range requests (one instance per helper process)."""

    def __init__(self, sock: socket.socket, workers: int = WORKERS) -> None:
        self.sock = sock
        self.workers = workers
        self.client: stream.HttpRangeClient | None = None
        self.readahead: ReadAhead | None = None
        self._ahead: ThreadPoolExecutor | None = None
        self.answered = [0, 0]           # READs answered from fetched bytes at once, and by the pool
        self.stats = Stats()
        self.size = 0
        self._write = threading.Lock()
        self._started = time.monotonic()
        self._reported = self._started

    def _reply(self, handle: bytes, error: int, data: bytes | memoryview = b"") -> None:
        header = REPLY.pack(REPLY_MAGIC, error, handle)
        with self._write:
            if not data:
                self.sock.sendall(header)
                return
            sent = self.sock.sendmsg([header, data])      # one system call, as a rule
            if sent < len(header):
                self.sock.sendall(header[sent:])
                sent = len(header)
            if sent - len(header) < len(data):
                self.sock.sendall(memoryview(data)[sent - len(header):])

    def serve(self) -> None:
        """The loop: until DISC or the end of the socket; every READ answered before returning."""
        # the read-ahead has its own threads (a READ in the pool may wait for its fetch), and
        # stops after the pool: windows nobody asked for yet are dropped, not fetched
        self._ahead = ThreadPoolExecutor(max_workers=AHEAD_WORKERS, thread_name_prefix="rauc-nbd-ahead")
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="rauc-nbd") as pool:
                self._loop(pool)
        finally:
            self._ahead.shutdown(wait=True, cancel_futures=True)
            for line in self.stats.report(self.size):
                log.info(line)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            log.info(f"nbd server: {sum(self.answered)} READs, {self.answered[0]} of them answered at once "
                     f"from fetched bytes; {usage.ru_utime:.1f} s user and {usage.ru_stime:.1f} s system CPU, "
                     f"peak RSS {usage.ru_maxrss / 1024:.1f} MiB")
            log.info("nbd server exiting")
            if self.client is not None:
                self.client.close()

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        reads: list[tuple[bytes, int, int]] = []      # READs that arrived together, not yet submitted
        while True:
            if reads and not select.select([self.sock], [], [], 0)[0]:
                self._submit(pool, reads)             # nothing more is waiting: fetch what came
                reads = []
            header = _recv_exact(self.sock, REQUEST.size)
            if not header:
                log.info("nbd server: socket closed")
                self._submit(pool, reads)
                return
            magic, kind, handle, offset, length = REQUEST.unpack(header)
            kind &= 0xFFFF                # the upper half carries command flags (none for READ)
            if magic != REQUEST_MAGIC:
                raise NbdError("nbd server received bad request magic")
            if kind == CMD_READ:
                if self.readahead is None or length > MAX_REQUEST:
                    self._reply(handle, EIO)
                    continue
                data = self.readahead.cached(offset, length)
                if data is None:
                    self.answered[1] += 1
                    reads.append((handle, offset, length))
                    continue
                self.answered[0] += 1
                try:                              # fetched already: answered here, at once
                    self._reply(handle, 0, data)
                except OSError as e:
                    log.warning(f"nbd server: cannot send the reply: {e.strerror}")
                self._progress()
                continue
            self._submit(pool, reads)
            reads = []
            if kind == CMD_DISC:
                log.info("nbd server received disconnect request")
                return
            if kind == CMD_CONFIGURE:
                self._configure(handle, _recv_exact(self.sock, length))
            else:
                raise NbdError("nbd server received bad request type")

    def _submit(self, pool: ThreadPoolExecutor, reads: list[tuple[bytes, int, int]]) -> None:
        """One HTTP request per run of adjacent READs (the kernel's readahead sends them together)."""
        for run in merge_reads(reads):
            pool.submit(self._read, run)

    def _configure(self, handle: bytes, payload: bytes) -> None:
        result: dict[str, Any] = {}
        try:
            config = json.loads(payload)
            options = StreamOptions.from_json(config["options"])
            shown = stream.redact(config["url"])
            log.debug(f"nbd server received configuration: url={shown}")
            self.client = stream.HttpRangeClient(config["url"], options, stats=self.stats,
                                                 connections=self.workers + AHEAD_WORKERS)
            info = self.client.probe()
            self.size = info.size
            self.readahead = ReadAhead(self.client.read, info.size,
                                       spawn=self._ahead.submit if self._ahead is not None else None)
            result = {"url": info.url, "size": info.size, "current-time": info.current_time,
                      "modified-time": info.modified_time, "etag": info.etag}
        except stream.ProbeError as e:
            result = {"error": str(e), "error-kind": e.kind, "error-http-code": e.status}
        except (RaucError, ValueError, KeyError, TypeError) as e:
            result = {"error": str(e), "error-kind": "configure"}
        data = json.dumps(result).encode()
        self._reply(handle, 0, struct.pack("=I", len(data)) + data)

    def _read(self, run: list[tuple[bytes, int, int]]) -> None:
        """Fetch a run of adjacent READs with one Range request and answer each (EIO to all on failure)."""
        assert self.readahead is not None
        first, end = run[0][1], run[-1][1] + run[-1][2]
        try:
            data = self.readahead.read(first, end - first)
        except Exception as e:             # never leave the kernel waiting for an answer
            if isinstance(e, StreamError):
                log.warning(f"nbd server: reading {end - first} bytes at {first} failed: {e}")
            else:
                log.exception("nbd server: unexpected error")
            for handle, _offset, _length in run:
                self._reply(handle, EIO)
            return
        try:
            view = memoryview(data)
            for handle, offset, length in run:
                self._reply(handle, 0, view[offset - first:offset - first + length])
        except OSError as e:
            log.warning(f"nbd server: cannot send the reply: {e.strerror}")
        self._progress()

    def _progress(self) -> None:
        """Every :data:`PROGRESS_INTERVAL` seconds of a long transfer: how much came, how fast."""
        now = time.monotonic()
        with self._write:
            if now - self._reported < PROGRESS_INTERVAL:
                return
            self._reported = now
        done = self.stats.sum("dl_size")
        share = 100.0 * done / self.size if self.size else 0.0
        rate = done / (now - self._started) / (1 << 20)
        log.info(f"nbd server: downloaded {done / (1 << 20):.1f} MiB ({share:.1f}% of the bundle), "
                 f"{rate:.1f} MiB/s")


def merge_reads(reads: list[tuple[bytes, int, int]], limit: int = MERGE_LIMIT) -> list[list[tuple[bytes, int, int]]]:
    """``(handle, offset, length)`` READs grouped into runs of adjacent ranges of at most ``limit`` bytes."""
    runs: list[list[tuple[bytes, int, int]]] = []
    for read in sorted(reads, key=lambda r: r[1]):
        if runs:
            last = runs[-1]
            end = last[-1][1] + last[-1][2]
            if read[1] == end and end + read[2] - last[0][1] <= limit:
                last.append(read)
                continue
        runs.append([read])
    return runs


def _no_new_privs() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs = 38
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise NbdError(f"failed to enable NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}")


def helper_main() -> int:
    """``python -m pyrauc.nbd``: the helper's entry point (RAUC: ``rauc`` with RAUC_NBD_SERVER set)."""
    from pyrauc.logformat import setup_logging

    setup_logging(bool(os.environ.get("PYRAUC_DEBUG")), domain="rauc-nbd")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # pyrauc stops the helper in order
    try:
        fd = int(os.environ[ENV])
        _no_new_privs()
        log.info(f"nbd server running as UID {os.getuid()}, GID {os.getgid()}")
        with socket.socket(fileno=fd) as sock:
            NbdServer(sock).serve()
    except (RaucError, OSError, ValueError, KeyError, EOFError) as e:
        log.error(f"nbd server failed with: {e}")
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# pyrauc's side: starting the helper, talking to it

def _sandbox(user: str) -> dict[str, Any]:
    """Popen's arguments for dropping to ``user`` (only when we are root)."""
    if os.getuid() != 0 and os.getgid() != 0:
        return {}
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise NbdError(f"failed to prepare streaming subprocess: user {user} not found in user database") from None
    try:
        groups = os.getgrouplist(user, pw.pw_gid)
    except OSError:
        raise NbdError(f"failed to prepare streaming subprocess: cannot get groups for user {user}") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": groups}


class Helper:
    """A running helper and pyrauc's end of its socket (an NBD client until the kernel takes it)."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock: socket.socket | None = sock
        self.info: ServerInfo | None = None

    @classmethod
    def start(cls, options: StreamOptions, *, detached: bool = False) -> Helper:
        """Start the helper process (as the sandbox user when root). ``detached``: it will outlive
        pyrauc (``rauc mount``), so it gets no stdout/stderr of ours (a caller waiting for them, such
        as an SSH session, would wait for the helper too)."""
        log.info("starting the nbd server")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = {**os.environ, ENV: str(theirs.fileno())}
            output = subprocess.DEVNULL if detached else None
            proc = subprocess.Popen([sys.executable, "-m", "pyrauc.nbd"], env=env, pass_fds=(theirs.fileno(),),
                                    stdin=subprocess.DEVNULL, stdout=output, stderr=output, cwd="/",
                                    start_new_session=True, **_sandbox(options.sandbox_user))
        except OSError as e:
            ours.close()
            raise NbdError(f"failed to start streaming subprocess: {e.strerror}") from e
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return cls(proc, ours)

    # -- phase A: pyrauc's own NBD requests ----------------------------------------------------
    def _request(self, kind: int, offset: int, length: int, payload: bytes = b"") -> int:
        if self.sock is None:
            raise NbdError("the nbd server's socket was handed to the kernel")
        self.sock.sendall(REQUEST.pack(REQUEST_MAGIC, kind, CONFIG_HANDLE, offset, length) + payload)
        reply = _recv_exact(self.sock, REPLY.size)
        if not reply:
            raise NbdError("the nbd server closed the connection")
        magic, error, handle = REPLY.unpack(reply)
        if magic != REPLY_MAGIC or handle != CONFIG_HANDLE:
            raise NbdError("bad reply from the nbd server")
        return int(error)

    def configure(self, url: str, options: StreamOptions) -> ServerInfo:
        """CONFIGURE: the helper probes ``url``; its answer (size, times, ETag) or a StreamError."""
        log.debug(f"sending config request to nbd server: url={stream.redact(url)}")
        payload = json.dumps({"url": url, "options": options.to_json()}).encode()
        try:
            self._request(CMD_CONFIGURE, 0, len(payload), payload)
            assert self.sock is not None
            (length,) = struct.unpack("=I", _recv_exact(self.sock, 4))
            reply = json.loads(_recv_exact(self.sock, length))
        except (OSError, EOFError, ValueError, struct.error) as e:
            raise StreamError(f"failed to configure streaming: {e}") from e
        if reply.get("error"):
            raise stream.ProbeError(reply["error"], reply.get("error-kind", "configure"),
                                    reply.get("error-http-code"))
        if reply.get("size") is None:
            raise stream.ProbeError("server did not send bundle size", "size")
        self.info = ServerInfo(url=reply["url"], size=int(reply["size"]), current_time=reply.get("current-time"),
                               modified_time=reply.get("modified-time"), etag=reply.get("etag"))
        return self.info

    def read(self, offset: int, length: int) -> bytes:
        """READ through the helper (before the kernel has the socket)."""
        try:
            error = self._request(CMD_READ, offset, length)
            if error:
                raise StreamError("failed to read data from remote server")
            assert self.sock is not None
            data = _recv_exact(self.sock, length)
        except (OSError, EOFError) as e:
            raise StreamError(f"failed to read data from remote server: {e}") from e
        if len(data) != length:
            raise StreamError("failed to read data from remote server")
        return data

    # -- the end -------------------------------------------------------------------------------
    def wait(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for the helper to exit (killed after ``timeout``)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the nbd server did not stop: killing it")
            self.proc.kill()
            code = self.proc.wait()
        if code != 0:
            log.warning(f"failed to stop streaming subprocess: exit code {code}")

    def stop(self) -> None:
        """DISC, close our end, wait for the helper (RAUC: "stopping the nbd server")."""
        if self.proc.returncode is not None and self.sock is None:
            return
        log.info("stopping the nbd server")
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendall(REQUEST.pack(REQUEST_MAGIC, CMD_DISC, CONFIG_HANDLE, 0, 0))
            self.sock.close()
            self.sock = None
        self.wait()
        log.info("the nbd server was stopped")

    def release_socket(self) -> socket.socket:
        """Our end, for the kernel; from now on the kernel talks to the helper."""
        if self.sock is None:
            raise NbdError("the nbd server's socket was handed over already")
        sock, self.sock = self.sock, None
        return sock


class NbdSource:
    """A remote bundle read through the helper: ``url``, ``size``, ``read()``, ``close()`` (bundle.RemoteSource)."""

    def __init__(self, url: str, options: StreamOptions, *, detached: bool = False) -> None:
        self.url = stream.redact(url)
        self.options = options
        self.helper = Helper.start(options, detached=detached)
        try:
            self.info = self.helper.configure(url, options)
        except BaseException:
            self.helper.stop()
            raise
        self.size = self.info.size
        self._detached = False

    def read(self, offset: int, length: int) -> bytes:
        return self.helper.read(offset, length)

    def close(self) -> None:
        """Stop the helper (unless :meth:`detach` gave it to the kernel for good)."""
        if not self._detached:
            self.helper.stop()

    def block_device(self, payload_size: int) -> Resource[str]:
        """The kernel's /dev/nbdN over ``[0, payload_size)``; always disconnected and the helper stopped."""
        return kernel_device(self.helper, payload_size)

    def detach(self) -> None:
        """``rauc mount``: the device outlives pyrauc; the helper exits when the kernel disconnects."""
        self._detached = True


# --------------------------------------------------------------------------------------------
# generic netlink: the kernel's NBD

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NBD_CMD_CONNECT = 1
NBD_CMD_DISCONNECT = 2
NBD_CMD_RECONFIGURE = 3
NBD_ATTR_INDEX = 1
NBD_ATTR_SIZE_BYTES = 2
NBD_ATTR_BLOCK_SIZE_BYTES = 3
NBD_ATTR_TIMEOUT = 4
NBD_ATTR_SERVER_FLAGS = 5
NBD_ATTR_CLIENT_FLAGS = 6
NBD_ATTR_SOCKETS = 7
NBD_SOCK_ITEM = 1
NBD_SOCK_FD = 1
NBD_CFLAG_DISCONNECT_ON_CLOSE = 2
_NLMSGHDR = struct.Struct("=IHHII")
_GENLHDR = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = _NLA.pack(_NLA.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def nla_u32(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=I", value))


def nla_u64(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=Q", value))


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """Attributes of a message body by type (flags masked off)."""
    attrs: dict[int, bytes] = {}
    pos = 0
    while pos + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, pos)
        if length < _NLA.size:
            break
        attrs[kind & 0x3FFF] = data[pos + _NLA.size:pos + length]
        pos += (length + 3) & ~3
    return attrs


class GenericNetlink:
    """A NETLINK_GENERIC socket for one family's commands (request, ack, replies)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.seq = int(time.time())

    def close(self) -> None:
        self.sock.close()

    def request(self, family: int, cmd: int, attrs: bytes, version: int = 0) -> list[dict[int, bytes]]:
        """Send one command; the attributes of every reply message; OSError(errno) on a netlink error."""
        self.seq += 1
        body = _GENLHDR.pack(cmd, version, 0) + attrs
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), family, NLM_F_REQUEST | NLM_F_ACK, self.seq, 0)
                       + body)
        replies: list[dict[int, bytes]] = []
        while True:
            data = self.sock.recv(65536)
            pos = 0
            while pos + _NLMSGHDR.size <= len(data):
                length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, pos)
                if length < _NLMSGHDR.size:
                    raise OSError(errno.EPROTO, "bad netlink message")
                payload = data[pos + _NLMSGHDR.size:pos + length]
                pos += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return replies
                if kind == NLMSG_DONE:
                    return replies
                replies.append(parse_attrs(payload[_GENLHDR.size:]))

    def family(self, name: str) -> int:
        """The id of generic netlink family ``name``."""
        replies = self.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, nla(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"),
                               version=1)
        for attrs in replies:
            if CTRL_ATTR_FAMILY_ID in attrs:
                return int(struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID][:2])[0])
        raise OSError(errno.ENOENT, "no family id")


def connect_attrs(fd: int, size: int) -> bytes:
    """NBD_CMD_CONNECT's attributes (RAUC's: size, block size 4096, timeout 300 s, flags 0, the socket)."""
    sock_item = nla(NBD_SOCK_ITEM | NLA_F_NESTED, nla_u32(NBD_SOCK_FD, fd))
    return (nla_u64(NBD_ATTR_SIZE_BYTES, size) + nla_u64(NBD_ATTR_BLOCK_SIZE_BYTES, BLOCK_SIZE)
            + nla_u64(NBD_ATTR_SERVER_FLAGS, 0) + nla_u64(NBD_ATTR_TIMEOUT, KERNEL_TIMEOUT)
            + nla(NBD_ATTR_SOCKETS | NLA_F_NESTED, sock_item))


@contextlib.contextmanager
def _nbd_family() -> Iterator[tuple[GenericNetlink, int]]:
    try:
        nl = GenericNetlink()
    except OSError as e:
        raise NbdError(f"failed to open netlink socket: {e.strerror}") from e
    try:
        try:
            family = nl.family("nbd")
        except OSError:
            raise NbdError("failed to resolve 'nbd' netlink family - BLK_DEV_NBD not enabled in kernel?") from None
        yield nl, family
    finally:
        nl.close()


def _disconnect(index: int) -> None:
    log.info(f"Removing nbd device /dev/nbd{index}")
    try:
        with _nbd_family() as (nl, family):
            nl.request(family, NBD_CMD_DISCONNECT, nla_u32(NBD_ATTR_INDEX, index))
    except (OSError, NbdError):
        log.debug("nbd device is already removed")


def raise_request_limit(index: int, sysfs: str = "/sys") -> None:
    """Let the kernel send READs of up to :data:`MAX_SECTORS_KB` (within the device's hardware limit).

    The kernel's nbd driver caps a request at 128 KiB. A squashfs block of 128 KiB seldom starts on a
    page, so each one read through dm-verity and dm-crypt was split into a 128 KiB and a 4 KiB READ:
    twice the READs, and the helper's cost is per READ. Set before dm-verity is stacked on the device
    (a device-mapper table takes the limits of the device below when it is loaded). Best effort: an
    unchanged limit only costs speed."""
    queue = f"{sysfs}/block/nbd{index}/queue"
    try:
        with open(f"{queue}/max_hw_sectors_kb", encoding="ascii") as f:
            limit = min(MAX_SECTORS_KB, int(f.read()))
        with open(f"{queue}/max_sectors_kb", "w", encoding="ascii") as f:
            f.write(str(limit))
    except (OSError, ValueError) as e:
        log.debug(f"nbd{index}: request size limit unchanged: {e}")


def _wait_node(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise NbdError(f"{path} did not appear")
        time.sleep(0.05)


def kernel_device(helper: Helper, size: int) -> Resource[str]:
    """Hand the helper's socket to the kernel; a Resource yielding ``/dev/nbdN`` (released: disconnected,
    the helper stopped). ``size`` must be a multiple of 4096."""
    if size <= 0 or size % BLOCK_SIZE:
        raise NbdError(f"nbd device size {size} is not a positive multiple of {BLOCK_SIZE}")
    with _nbd_family() as (nl, family):
        sock = helper.sock
        if sock is None:
            raise NbdError("the nbd server's socket was handed over already")
        try:
            replies = nl.request(family, NBD_CMD_CONNECT, connect_attrs(sock.fileno(), size))
        except OSError as e:
            raise NbdError(f"failed to connect nbd device: {e.strerror}") from e
        index = next((int(struct.unpack("=I", a[NBD_ATTR_INDEX][:4])[0]) for a in replies if NBD_ATTR_INDEX in a),
                     None)
        if index is None:
            raise NbdError("failed to connect nbd device: no index in the kernel's reply")
        helper.release_socket().close()      # the kernel holds its own reference now
        device = f"/dev/nbd{index}"
        fd = -1
        try:
            _wait_node(device)
            fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
            nl.request(family, NBD_CMD_RECONFIGURE, nla_u32(NBD_ATTR_INDEX, index)
                       + nla_u64(NBD_ATTR_CLIENT_FLAGS, NBD_CFLAG_DISCONNECT_ON_CLOSE))
        except (OSError, NbdError) as e:
            if fd >= 0:
                os.close(fd)
            _disconnect(index)
            helper.wait()
            reason = e.strerror if isinstance(e, OSError) else str(e)
            raise NbdError(f"failed to set up {device}: {reason}") from e
    raise_request_limit(index)
    log.info(f"setup done for {device}")
    held = [fd]

    def release() -> None:
        if held:
            os.close(held.pop())
        _disconnect(index)
        helper.wait()
        log.info("the nbd server was stopped")

    return Resource(device, release, error=NbdError, logger=log)


if __name__ == "__main__":
    # run the helper from the imported module (not from __main__): its logger is "pyrauc.nbd"
    from pyrauc.nbd import helper_main as _main

    sys.exit(_main())
