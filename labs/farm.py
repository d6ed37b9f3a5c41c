"""A board farm on loopback: labgrid's coordinator and exporter, and a virtual board behind them.

``Farm`` starts, all on 127.0.0.1 with free ports and with the farm directory as working directory:

1. ``labgrid-coordinator --listen 127.0.0.1:PORT`` (its places.yaml lands in the farm directory);
2. the virtual board (labs/vboard.py: QEMU behind a TCP serial port, an HTTP power switch and an
   SSH forward), unless ``board=False`` (the resources are then exported but nothing answers:
   enough for the place-locking tests);
3. ``labgrid-exporter`` with ``exporter.yaml`` (written here, the shape a real board's exporter
   config has too): group ``vboard`` with NetworkSerialPort (raw), NetworkPowerPort (model
   ``rest``) and NetworkService;
4. the place: ``labgrid-client -p pyrauc-vboard create``, ``add-match pyrauc-farm/vboard/*``,
   ``set-tags``.

Tests then run with ``LG_COORDINATOR`` pointing at it and ``--lg-env labs/remote.yaml``
(RemotePlace ``pyrauc-vboard``); the session acquires the place itself (labs/place.py).

Command line (the farm outlives ``up`` until ``down``; ``run`` wraps one command)::

    python -m labs.farm run [--dir DIR] -- pytest --lg-env labs/remote.yaml tests/lab/test_smoke.py
    eval "$(python -m labs.farm up DIR)"; ...; python -m labs.farm down DIR
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labgrid.util.helper import get_free_port

from labs import lab

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent            # labgrid's console scripts live next to this interpreter
PLACE = "pyrauc-vboard"
EXPORTER = "pyrauc-farm"
GROUP = "vboard"
TAGS = {"board": "pyrauc-qemux86-64", "firmware": "uefi", "rauc": "efi"}
STARTUP_TIMEOUT = 60.0


def _labgrid_tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def exporter_config(serial_port: int, power_port: int, ssh_port: int) -> str:
    """The exporter's resources for the virtual board (a real board: see labs/board-exporter-example.yaml)."""
    return f"""\
{GROUP}:
  NetworkSerialPort:
    host: 127.0.0.1
    port: {serial_port}
    speed: 115200
    protocol: raw
  NetworkPowerPort:
    model: rest
    host: 'http://127.0.0.1:{power_port}/power/{{index}}'
    index: 0
  NetworkService:
    address: 127.0.0.1
    port: {ssh_port}
    username: root
"""


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {STARTUP_TIMEOUT:.0f} s")


class Farm:
    """Coordinator + exporter (+ virtual board) on loopback, in DIRECTORY."""

    def __init__(self, directory: Path, *, board: bool = True, place: str = PLACE) -> None:
        self.dir = directory.resolve()
        self.board = board
        self.place = place
        self.coordinator_port = 0
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.coordinator_port}"

    def env(self) -> dict[str, str]:
        """What a test session needs to find the farm."""
        return {"LG_COORDINATOR": self.address, "PYRAUC_FARM_DIR": str(self.dir)}

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LG_"))}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])   # labs, images
        proc = subprocess.Popen(cmd, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``labgrid-client -x <coordinator> ARGS`` (the same commands a farm admin types)."""
        cmd = [_labgrid_tool("labgrid-client"), "-x", self.address, *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LG_"))}
        return subprocess.run(cmd, check=check, capture_output=True, text=True, env=env, timeout=60)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.coordinator_port = get_free_port()
        coord = self._spawn("coordinator", [_labgrid_tool("labgrid-coordinator"), "--listen", self.address])
        _wait_port(self.coordinator_port, coord, "labgrid-coordinator", self.dir / "coordinator.log")
        self.ports = {"serial": get_free_port(), "power": get_free_port(), "ssh": get_free_port()}
        if self.board:
            print(lab.prepare(self.dir), file=sys.stderr)
            (self.dir / "vboard.json").unlink(missing_ok=True)
            vboard = self._spawn("vboard", [sys.executable, "-m", "labs.vboard", str(self.dir),
                                            "--serial-port", str(self.ports["serial"]),
                                            "--power-port", str(self.ports["power"]),
                                            "--ssh-port", str(self.ports["ssh"])])
            _wait_port(self.ports["power"], vboard, "virtual board", self.dir / "vboard.log")
        config = self.dir / "exporter.yaml"
        config.write_text(exporter_config(self.ports["serial"], self.ports["power"], self.ports["ssh"]))
        self.add_exporter(EXPORTER, config, GROUP)
        self.create_place(self.place, f"{EXPORTER}/{GROUP}/*", TAGS)
        state = {"coordinator": self.address, "place": self.place, "ports": self.ports,
                 "pids": {name: p.pid for name, p in self.procs.items()}}
        (self.dir / "farm.json").write_text(json.dumps(state, indent=2) + "\n")

    def add_exporter(self, name: str, config: Path, group: str) -> None:
        """Start ``labgrid-exporter -n NAME CONFIG`` and wait until the coordinator lists GROUP's resources."""
        proc = self._spawn(f"exporter-{name}", [_labgrid_tool("labgrid-exporter"), "-c", self.address, "-n", name,
                                                "--hostname", "127.0.0.1", str(config)])
        self._wait_resources(proc, f"{name}/{group}/")

    def create_place(self, place: str, match: str, tags: dict[str, str]) -> None:
        """What a farm admin does once per board: create the place, match its resources, tag it."""
        self.client("-p", place, "create")
        self.client("-p", place, "add-match", match)
        self.client("-p", place, "set-tags", *(f"{k}={v}" for k, v in tags.items()))

    def _wait_resources(self, proc: subprocess.Popen[bytes], prefix: str) -> None:
        """Until the coordinator lists three resources under PREFIX (exporter/group/)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        out = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"labgrid-exporter exited with {proc.returncode} (log in {self.dir})")
            out = self.client("resources", check=False).stdout
            if all(f"{prefix}{cls}" in out for cls in ("NetworkSerialPort", "NetworkPowerPort", "NetworkService")):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the exporter's resources did not show up on the coordinator: {out}")

    def stop(self) -> None:
        """Exporter, board, coordinator: SIGTERM each, in reverse order of starting."""
        for name in reversed(list(self.procs)):
            stop_pid(self.procs[name].pid, self.procs[name])
        self.procs.clear()
        if self.board:
            lab.cleanup(self.dir)


def stop_pid(pid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM PID (a process this farm started), SIGKILL after 30 s."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if proc is not None:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@contextmanager
def running(directory: Path, *, board: bool = True) -> Iterator[Farm]:
    farm = Farm(directory, board=board)
    try:
        farm.start()
        yield farm
    finally:
        farm.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.farm", description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the farm in DIR and print shell exports")
    up.add_argument("dir", type=Path)
    down = sub.add_parser("down", help="stop the farm started in DIR")
    down.add_argument("dir", type=Path)
    run = sub.add_parser("run", help="start a farm, run COMMAND with its environment, stop the farm")
    run.add_argument("--dir", type=Path, default=None, help="farm directory (default: results/farm-<time>)")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "up":
        farm = Farm(args.dir)
        farm.start()
        for k, v in farm.env().items():
            print(f"export {k}='{v}'")
        return 0
    if args.cmd == "down":
        state = json.loads((args.dir / "farm.json").read_text())
        for pid in reversed(list(state["pids"].values())):
            stop_pid(int(pid))
        lab.cleanup(args.dir.resolve())
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a COMMAND")
    directory = args.dir or REPO / "results" / time.strftime("farm-%Y%m%d-%H%M%S")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))      # stop the farm's processes on the way out
    with running(directory) as farm:
        print(f"farm: coordinator {farm.address}, place {farm.place}, ports {farm.ports}, in {farm.dir}",
              file=sys.stderr)
        return subprocess.run(command, env={**os.environ, **farm.env()}, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
