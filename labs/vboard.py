"""A virtual board: the lab image in QEMU, reachable only the way a board in a rack is.

One daemon process owns what a board farm has per board:

* a serial console on a TCP port (raw, like ser2net): QEMU's first serial port is a unix socket
  this daemon listens on, relayed to the one TCP client connected (a new client replaces the old
  one, output without a client is dropped, as on a UART). The TCP port stays open across power
  cycles, so labgrid's SerialDriver keeps its connection.
* a power switch on HTTP in the protocol of labgrid's ``rest`` NetworkPowerPort model:
  ``GET /power/0`` answers ``1`` or ``0``, ``PUT /power/0`` with ``1`` / ``0`` switches QEMU on or
  off, ``POST /power/0/reset`` is off + on. Off terminates QEMU (SIGTERM: the guest loses power, QEMU
  closes its qcow2 files cleanly); on starts a new QEMU process on the same disk overlay and NVRAM.
* SSH: QEMU user networking forwards a fixed 127.0.0.1 port to the guest's port 22 (nothing listens
  there while the board is off).

The daemon starts with the board off. It appends every switch to ``DIR/power.log`` (JSON lines) and
the serial output to ``DIR/console.log``, and writes ``DIR/vboard.json`` once it listens.
Everything listens on 127.0.0.1. ``python -m labs.vboard DIR --serial-port N --power-port N
--ssh-port N`` (labs/farm.py starts it); DIR must have been prepared by ``labs.lab.prepare``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from images.nvram import OVMF_CODE
from labs import lab

POWER_PATH = "/power/0"


def qemu_command(run_dir: Path, serial_socket: Path, ssh_port: int) -> list[str]:
    """QEMU as labs/qemu.yaml runs it (q35, OVMF CODE + per-run VARS, overlay), with a fixed SSH forward."""
    accel = lab.choose_accel()
    paths = lab.run_paths(run_dir)
    return [
        "qemu-system-x86_64", "-machine", "q35", "-cpu", accel.cpu, "-m", "1G", *accel.args.split(),
        "-nodefaults", "-display", "none",
        "-netdev", f"user,id=lan,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "e1000,netdev=lan,romfile=",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=qcow2,unit=1,file={paths['vars']}",
        "-drive", f"if=virtio,format=qcow2,file={paths['disk']}",
        "-chardev", f"socket,id=console,path={serial_socket}",
        "-serial", "chardev:console",
    ]


class Board:
    """The QEMU process behind the power switch, and the serial relay."""

    def __init__(self, run_dir: Path, ssh_port: int) -> None:
        self.run_dir = run_dir
        self.socket = run_dir / "serial.sock"
        self.ssh_port = ssh_port
        self.qemu: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.client: asyncio.StreamWriter | None = None
        self.guest: asyncio.StreamWriter | None = None
        self.console_log = (run_dir / "console.log").open("ab")

    # -- power ---------------------------------------------------------------------------------
    def _log(self, event: str, **extra: Any) -> None:
        entry = {"time": time.time(), "event": event, **extra}
        with (self.run_dir / "power.log").open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def is_on(self) -> bool:
        return self.qemu is not None and self.qemu.poll() is None

    def _off(self) -> None:
        if self.qemu is None:
            return
        if self.qemu.poll() is None:
            self.qemu.terminate()
            try:
                self.qemu.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.qemu.kill()
                self.qemu.wait()
        self._log("off", pid=self.qemu.pid, returncode=self.qemu.returncode)
        self.qemu = None

    def _on(self) -> None:
        if self.is_on():
            return
        self.qemu = None
        stderr = (self.run_dir / "qemu.stderr").open("ab")
        self.qemu = subprocess.Popen(qemu_command(self.run_dir, self.socket, self.ssh_port),
                                     stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        self._log("on", pid=self.qemu.pid)

    def set_power(self, on: bool) -> None:
        with self.lock:
            if on:
                self._on()
            else:
                self._off()

    def reset(self) -> None:
        with self.lock:
            self._off()
            self._on()

    # -- serial relay ----------------------------------------------------------------------------
    async def _pump(self, reader: asyncio.StreamReader, to_guest: bool) -> None:
        while data := await reader.read(4096):
            if not to_guest:
                self.console_log.write(data)
                self.console_log.flush()
            peer = self.guest if to_guest else self.client
            if peer is not None and not peer.is_closing():
                peer.write(data)
                with contextlib.suppress(ConnectionError):
                    await peer.drain()

    async def client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A console client (labgrid's SerialDriver, telnet, ...): the newest one gets the console."""
        if self.client is not None:
            self.client.close()
        self.client = writer
        try:
            await self._pump(reader, to_guest=True)
        except ConnectionError:
            pass
        finally:
            if self.client is writer:
                self.client = None
            writer.close()

    async def guest_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """QEMU's serial port (one per QEMU process: each power-on connects again)."""
        self.guest = writer
        try:
            await self._pump(reader, to_guest=False)
        except ConnectionError:
            pass
        finally:
            if self.guest is writer:
                self.guest = None
            writer.close()


def power_handler(board: Board) -> type[BaseHTTPRequestHandler]:
    """The HTTP handler of labgrid's ``rest`` power model for BOARD (plus a reset)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path != POWER_PATH:
                self._answer(404, "no such port\n")
                return
            self._answer(200, "1" if board.is_on() else "0")

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            value = self.rfile.read(length).strip()
            if self.path != POWER_PATH or value not in (b"0", b"1"):
                self._answer(400, "PUT /power/0 with 0 or 1\n")
                return
            board.set_power(value == b"1")
            self._answer(200, value.decode())

        def do_POST(self) -> None:
            if self.path != POWER_PATH + "/reset":
                self._answer(404, "POST /power/0/reset\n")
                return
            board.reset()
            self._answer(200, "1")

        def log_message(self, format: str, *args: Any) -> None:
            with (board.run_dir / "power-http.log").open("a") as f:
                f.write(f"{self.address_string()} {format % args}\n")

    return Handler


async def serve(run_dir: Path, serial_port: int, power_port: int, ssh_port: int) -> None:
    board = Board(run_dir, ssh_port)
    board.socket.unlink(missing_ok=True)
    guest_server = await asyncio.start_unix_server(board.guest_connected, path=str(board.socket))
    serial_server = await asyncio.start_server(board.client_connected, "127.0.0.1", serial_port)
    http = ThreadingHTTPServer(("127.0.0.1", power_port), power_handler(board))
    threading.Thread(target=http.serve_forever, name="power", daemon=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info = {"pid": os.getpid(), "serial_port": serial_port, "power_port": power_port, "ssh_port": ssh_port}
    tmp = run_dir / "vboard.json.tmp"
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(run_dir / "vboard.json")
    try:
        await stop.wait()
    finally:
        http.shutdown()
        board.set_power(False)
        serial_server.close()
        guest_server.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.vboard", description=__doc__.split("\n", 1)[0])
    parser.add_argument("run_dir", type=Path, help="prepared by labs.lab.prepare (disk overlay, NVRAM)")
    parser.add_argument("--serial-port", type=int, required=True)
    parser.add_argument("--power-port", type=int, required=True)
    parser.add_argument("--ssh-port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.run_dir.resolve(), args.serial_port, args.power_port, args.ssh_port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
