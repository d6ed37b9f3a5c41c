"""A private D-Bus for tests: a real ``dbus-daemon`` with a system-bus-like policy, and a client.

:func:`start_bus` writes a bus configuration like Debian's system.conf (deny by default, method
calls only where a policy file punches a hole) that includes pyrauc's copy of RAUC's policy file
``de.pengutronix.rauc.conf`` and, optionally, a service directory for bus activation and extra
policy. The socket lives in a world-readable directory so that other users (``nobody``) can
connect. :class:`BusClient` is a synchronous client on its own thread: method calls, property
reads and every signal of the service recorded in order.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from pyrauc.bus import BUS_NAME, INTERFACE, OBJECT_PATH, PROPERTIES, unwrap

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "pyrauc" / "data" / "de.pengutronix.rauc.conf"

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  {servicedir}
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <includedir>{policydir}</includedir>
</busconfig>
"""


@dataclass
class PrivateBus:
    """A running dbus-daemon."""

    dir: Path
    address: str
    proc: subprocess.Popen[bytes]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process on this bus (as the system bus)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
        env.update(DBUS_SYSTEM_BUS_ADDRESS=self.address, **extra)
        return env


@contextmanager
def private_bus(*, extra_policy: str = "", activation: str | None = None) -> Iterator[PrivateBus]:
    """Start a dbus-daemon with RAUC's policy (+ ``extra_policy``, + an activation file)."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        raise RuntimeError("dbus-daemon is not installed (apt-get install dbus-daemon)")
    directory = Path(tempfile.mkdtemp(prefix="pyrauc-bus-"))
    directory.chmod(0o755)
    policydir, servicedir = directory / "policy", directory / "services"
    policydir.mkdir()
    servicedir.mkdir()
    shutil.copy(POLICY, policydir / POLICY.name)
    if extra_policy:
        (policydir / "zz-extra.conf").write_text(
            '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            f"<busconfig>\n{extra_policy}\n</busconfig>\n")
    if activation is not None:
        (servicedir / f"{BUS_NAME}.service").write_text(activation)
    socket = directory / "bus"
    conf = directory / "bus.conf"
    conf.write_text(BUS_CONF.format(socket=socket, policydir=policydir,
                                    servicedir=f"<servicedir>{servicedir}</servicedir>"))
    address = f"unix:path={socket}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env["DBUS_SYSTEM_BUS_ADDRESS"] = address     # what an activated service inherits
    proc = subprocess.Popen([daemon, f"--config-file={conf}", "--nofork", "--nopidfile"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dbus-daemon did not start")
            time.sleep(0.02)
        yield PrivateBus(directory, address, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Reply:
    """A method's reply: ``error`` is the D-Bus error name (None on success)."""

    error: str | None
    body: list[Any]

    @property
    def text(self) -> str:
        return str(self.body[0]) if self.error and self.body else ""


class BusClient:
    """A synchronous client of the service on its own event loop thread; records its signals."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.signals: list[tuple[str, Any]] = []    # ("Completed", 0), ("Operation", "idle"), ...
        self._cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.bus: MessageBus = self._run(self._connect())

    def _run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self) -> MessageBus:
        bus = await MessageBus(bus_address=self.address).connect()
        bus.add_message_handler(self._on_message)
        await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                               body=[f"type='signal',sender='{BUS_NAME}'"]))
        return bus

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or msg.path != OBJECT_PATH:
            return
        with self._cond:
            if msg.member == "PropertiesChanged":
                for name, value in unwrap(msg.body[1]).items():
                    self.signals.append((name, value))
            elif msg.member == "Completed":
                self.signals.append(("Completed", msg.body[0]))
            self._cond.notify_all()

    def call(self, member: str, signature: str = "", *body: Any, interface: str = INTERFACE,
             path: str = OBJECT_PATH) -> Reply:
        async def go() -> Reply:
            reply = await self.bus.call(Message(destination=BUS_NAME, path=path, interface=interface,
                                                member=member, signature=signature, body=list(body)))
            assert reply is not None
            if reply.message_type == MessageType.ERROR:
                return Reply(reply.error_name, list(reply.body))
            return Reply(None, unwrap(list(reply.body)))
        result: Reply = self._run(go())
        return result

    def ok(self, member: str, signature: str = "", *body: Any) -> list[Any]:
        reply = self.call(member, signature, *body)
        assert reply.error is None, f"{member}: {reply.error}: {reply.text}"
        return reply.body

    def has_owner(self) -> bool:
        """Whether de.pengutronix.rauc has an owner now."""
        async def go() -> bool:
            r = await self.bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                            interface="org.freedesktop.DBus", member="NameHasOwner",
                                            signature="s", body=[BUS_NAME]))
            return bool(r is not None and r.body and r.body[0] is True)
        result: bool = self._run(go())
        return result

    def owner_pid(self) -> int:
        """The process id of de.pengutronix.rauc's owner."""
        async def go() -> int:
            r = await self.bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                            interface="org.freedesktop.DBus", member="GetConnectionUnixProcessID",
                                            signature="s", body=[BUS_NAME]))
            assert r is not None and r.message_type == MessageType.METHOD_RETURN, r
            return int(r.body[0])
        result: int = self._run(go())
        return result

    def props(self) -> dict[str, Any]:
        reply = self.call("GetAll", "s", INTERFACE, interface=PROPERTIES)
        assert reply.error is None, reply.text
        result: dict[str, Any] = reply.body[0]
        return result

    def wait_completed(self, count: int = 1, timeout: float = 120) -> int:
        """Wait for the ``count``-th Completed signal; its result."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                done = [v for k, v in self.signals if k == "Completed"]
                if len(done) >= count:
                    return int(done[count - 1])
                left = deadline - time.monotonic()
                assert left > 0, f"no Completed signal: {self.signals}"
                self._cond.wait(left)

    def wait_for(self, name: str, value: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while (name, value) not in self.signals:
                left = deadline - time.monotonic()
                assert left > 0, f"no {name}={value!r}: {self.signals}"
                self._cond.wait(left)

    def close(self) -> None:
        self.bus.disconnect()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class Service:
    """``pyrauc service`` as a subprocess on a private bus."""

    def __init__(self, bus: PrivateBus, conf: Path, *args: str, env: dict[str, str] | None = None,
                 user: str | None = None) -> None:
        self.log = bus.dir / f"service-{time.monotonic_ns()}.log"
        self.out = self.log.with_suffix(".out")
        argv = [sys.executable, "-m", "pyrauc", "-c", str(conf), "service", *args]
        with self.log.open("w") as errf, self.out.open("w") as outf:
            self.proc = subprocess.Popen(argv, env=env or bus.env(), stdout=outf, stderr=errf, cwd=REPO,
                                         user=user)

    def wait_ready(self, client: BusClient, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not client.has_owner():
            assert self.proc.poll() is None, f"service exited {self.proc.returncode}:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"service did not own {BUS_NAME}:\n{self.stderr()}"
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.log.read_text()

    def stdout(self) -> str:
        return self.out.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)
