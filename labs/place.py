"""Holding a labgrid place for one test session: wait for it, keep it, give it back even after a crash.

labgrid's coordinator marks an acquired place with ``host/user`` only: it does not release a place
when the client that acquired it goes away, and two sessions of one user on one host look the same
to it. A pytest session that ran into a crash would block the board until someone types
``labgrid-client release``. So a session holds a place through a :class:`PlaceLock`:

* it acquires the place through the coordinator (``AcquirePlace``, as ``labgrid-client acquire``)
  and writes a lease into the place's comment: ``pyrauc-session host=H pid=P beat=N``; a thread
  renews it (N+1) every ``HEARTBEAT`` seconds;
* another session finds the place acquired and waits (up to ``wait`` seconds; 0: fail at once),
  printing who holds it. It takes the place over only from a dead pyrauc session: same host and
  the pid is gone (at once), or the beat did not change for ``LEASE`` seconds on its own clock (any
  host; no clock comparison between hosts). A place acquired by anyone else (``labgrid-client
  acquire`` by a person) is only waited for, never taken;
* ``release()`` clears the comment and releases the place.

gRPC's asyncio client works with one event loop per process, and labgrid's RemotePlace manager
owns that loop in the test session. So a session holds its place through a keeper process,
``python -m labs.place ADDRESS PLACE --wait SECONDS`` (:class:`PlaceKeeper` starts it): it prints
``farm: ...`` lines (waiting, taking over, acquired), exits 3 when the place stays busy, and holds
the place until its stdin closes. The session never closes it on purpose before its end; when the
session dies (a crash, SIGKILL) the kernel closes it, and the keeper releases the place at once. If
the keeper dies too, the lease above lets the next session take the place over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from labgrid.remote.client import ClientSession
from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2
from labgrid.util.proxy import proxymanager

HEARTBEAT = 5.0       # seconds between two renewals of the lease
LEASE = 30.0          # a beat unchanged this long (waiter's clock): the holder is dead
POLL = 1.0            # how often a waiter looks again
BUSY_EXIT = 3
REPO = Path(__file__).resolve().parent.parent
LEASE_RE = re.compile(r"^pyrauc-session host=(?P<host>\S+) pid=(?P<pid>\d+) beat=(?P<beat>\d+)")
T = TypeVar("T")


class PlaceBusy(Exception):
    """The place stayed held by someone else for longer than the session would wait."""


@dataclass(frozen=True)
class Lease:
    """A pyrauc session's claim on a place, as written into the place's comment."""

    host: str
    pid: int
    beat: int

    @classmethod
    def parse(cls, comment: str) -> Lease | None:
        m = LEASE_RE.match(comment or "")
        return cls(m["host"], int(m["pid"]), int(m["beat"])) if m else None

    def text(self) -> str:
        return f"pyrauc-session host={self.host} pid={self.pid} beat={self.beat}"

    def holder_gone(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class PlaceLock:
    """Acquire PLACE on the coordinator at ADDRESS for this process (see the module docstring)."""

    def __init__(self, address: str, place: str, *, say: Callable[[str], None] = print) -> None:
        self.address = proxymanager.get_grpc_address(address, default_port=20408)
        self.place = place
        self.say = say
        self.held = False
        self.takeovers = 0
        self._beat = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"place-{place}", daemon=True)
        self._thread.start()
        self._heartbeat: asyncio.Task[None] | None = None
        try:
            self._session = self._call(self._connect(), timeout=30)
        except Exception as e:
            self._stop_loop()
            raise ConnectionError(f"labgrid coordinator at {self.address} not reachable: {e}") from e

    # -- plumbing ----------------------------------------------------------------------------------
    async def _connect(self) -> ClientSession:
        """A client session made in the lock's loop (gRPC's channel belongs to the loop it was made in)."""
        session = ClientSession(self.address, self._loop)
        await session.start()
        return session

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def me(self) -> str:
        """What the coordinator records as holder: host/user."""
        return f"{self._session.gethostname()}/{self._session.getuser()}"

    async def _state(self) -> tuple[str | None, str]:
        await self._session.sync_with_coordinator()
        place = self._session.places.get(self.place)
        if place is None:
            raise KeyError(f"place {self.place} does not exist on the coordinator at {self.address}")
        return place.acquired, place.comment or ""

    async def _acquire(self) -> bool:
        try:
            await self._session.stub.AcquirePlace(pb2.AcquirePlaceRequest(placename=self.place))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION and "already acquired" in (e.details() or ""):
                return False            # someone was faster
            raise
        await self._comment(Lease(socket.gethostname(), os.getpid(), 0).text())
        return True

    async def _release(self, fromuser: str | None = None) -> None:
        request = pb2.ReleasePlaceRequest(placename=self.place)
        if fromuser is not None:
            request.fromuser = fromuser          # only if still held by them
        await self._session.stub.ReleasePlace(request)
        await self._session.sync_with_coordinator()

    async def _comment(self, text: str) -> None:
        await self._session.stub.SetPlaceComment(pb2.SetPlaceCommentRequest(placename=self.place, comment=text))
        await self._session.sync_with_coordinator()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            self._beat += 1
            try:
                await self._comment(Lease(socket.gethostname(), os.getpid(), self._beat).text())
            except grpc.aio.AioRpcError:
                continue                         # the coordinator restarting: try again at the next beat

    # -- API -----------------------------------------------------------------------------------------
    def acquire(self, wait: float) -> None:
        """Acquire the place, waiting up to WAIT seconds while a live session holds it; PlaceBusy after."""
        deadline = time.monotonic() + wait
        told: str | None = None
        seen: tuple[Lease, float] | None = None      # a lease and since when (our clock) it is unchanged
        while True:
            acquired, comment = self._call(self._state())
            if acquired is None:
                if self._call(self._acquire()):
                    break
                continue
            lease = Lease.parse(comment)
            if lease is not None:
                now = time.monotonic()
                if seen is None or seen[0] != lease:
                    seen = (lease, now)
                dead = "its process is gone" if lease.holder_gone() else (
                    f"no heartbeat for {now - seen[1]:.0f} s" if now - seen[1] >= LEASE else None)
                if dead:
                    self.say(f"farm: place {self.place}: taking it over from the crashed session "
                             f"(pid {lease.pid} on {lease.host}, acquired by {acquired}): {dead}")
                    self._call(self._release(fromuser=acquired))
                    self.takeovers += 1
                    continue
            holder = f"{acquired} ({comment})" if comment else f"{acquired} (not a pyrauc session)"
            if time.monotonic() >= deadline:
                raise PlaceBusy(f"place {self.place} is held by {holder}; waited {wait:.0f} s "
                                f"(PYRAUC_FARM_WAIT). A person's hold ends with "
                                f"'labgrid-client -p {self.place} release'")
            if told != holder:
                self.say(f"farm: place {self.place} is held by {holder}: waiting up to {wait:.0f} s")
                told = holder
            time.sleep(POLL)
        self.held = True
        self._heartbeat = asyncio.run_coroutine_threadsafe(self._start_heartbeat(), self._loop).result(10)
        self.say(f"farm: acquired place {self.place} as {self.me} (keeper pid {os.getpid()}, "
                 f"takeovers {self.takeovers})")

    async def _start_heartbeat(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._beat_forever())

    def release(self) -> None:
        """Give the place back (if held) and close the connection to the coordinator."""
        try:
            if self.held:
                if self._heartbeat is not None:
                    self._loop.call_soon_threadsafe(self._heartbeat.cancel)
                self._call(self._comment(""))
                self._call(self._release())
                self.held = False
                self.say(f"farm: released place {self.place}")
        finally:
            try:
                self._call(self._session.stop(), timeout=10)
                self._call(self._session.close(), timeout=10)
            finally:
                self._stop_loop()


class PlaceKeeper:
    """The keeper process holding one place for this process (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen[str], place: str, say: Callable[[str], None]) -> None:
        self.proc = proc
        self.place = place
        self.say = say
        self.lines: list[str] = []

    @classmethod
    def acquire(cls, address: str, place: str, wait: float, *, say: Callable[[str], None] = print) -> PlaceKeeper:
        """Start a keeper that waits up to WAIT seconds for PLACE; return once it holds it, else PlaceBusy."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen([sys.executable, "-m", "labs.place", address, place, "--wait", str(wait)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=REPO)
        keeper = cls(proc, place, say)
        if keeper._relay(until=f"farm: acquired place {place} "):
            return keeper
        proc.wait()
        text = "\n".join(keeper.lines[-20:])
        if proc.returncode == BUSY_EXIT:
            raise PlaceBusy(text.rsplit("farm: ", 1)[-1])
        raise ConnectionError(f"the keeper of place {place} exited with {proc.returncode}: {text}")

    def _relay(self, until: str | None = None) -> bool:
        """Pass the keeper's lines on (to the terminal) until one starts with UNTIL (True) or it ends (False)."""
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            self.say(line)
            if until is not None and line.startswith(until):
                return True
        return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        """Close the keeper's stdin: it releases the place and exits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self._relay()
        self.proc.wait()


def main(argv: list[str]) -> int:
    """The keeper: acquire PLACE (waiting up to --wait seconds), hold it until stdin closes, release it."""
    parser = argparse.ArgumentParser(prog="python -m labs.place", description=main.__doc__)
    parser.add_argument("address", help="coordinator HOST[:PORT]")
    parser.add_argument("place")
    parser.add_argument("--wait", type=float, default=0.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C: the session tears down and closes our stdin
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    say = lambda text: print(text, flush=True)       # noqa: E731
    try:
        lock = PlaceLock(args.address, args.place, say=say)
    except ConnectionError as e:
        say(f"farm: {e}")
        return 1
    try:
        try:
            lock.acquire(args.wait)
        except PlaceBusy as e:
            say(f"farm: {e}")
            return BUSY_EXIT
        except KeyError as e:
            say(f"farm: {e.args[0]}")
            return 1
        try:
            sys.stdin.read()                         # until the session ends (or dies)
        except (OSError, ValueError):
            pass
        return 0
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
