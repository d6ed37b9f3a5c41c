"""Place locking on a real labgrid coordinator: two sessions, one place.

A farm of labgrid's own coordinator and exporter on loopback (labs/farm.py, no QEMU: the place's
resources are exported, nothing needs to answer) and test sessions started as
``pytest --lg-env labs/remote.yaml tests/farm/lock_probe.py``, as a lab user starts them:

* while one session holds the place, a second one fails at once with PYRAUC_FARM_WAIT=0, naming
  the holder, or waits and gets the place when the first releases it;
* a session killed with SIGKILL (no teardown ran) loses the place at once: its keeper process sees
  its stdin close and releases it; if the keeper is killed with it, the next session takes the
  place over from the dead holder;
* a place a person acquired with ``labgrid-client acquire`` is waited for, never taken.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labs import farm
from labs.place import Lease
from labs.pytest_farm import BUSY_EXIT

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("lock_probe.py")
PLACE = farm.PLACE


@pytest.fixture(scope="module")
def lab_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[farm.Farm]:
    with farm.running(tmp_path_factory.mktemp("farm"), board=False) as f:
        yield f


class Session:
    """One ``pytest --lg-env labs/remote.yaml`` lock probe, started in the background."""

    def __init__(self, lab_farm: farm.Farm, probe_dir: Path, name: str, wait: float) -> None:
        self.name = name
        self.probe_dir = probe_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LG_", "PYRAUC_"))}
        env.update(lab_farm.env())
        env.update({"PROBE_DIR": str(probe_dir), "PROBE_NAME": name, "PYRAUC_FARM_WAIT": str(wait),
                    "PYRAUC_RESULTS_DIR": str(probe_dir / f"results-{name}")})
        cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:xdist",
               "--lg-env", str(REPO / "labs" / "remote.yaml"), str(PROBE)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []

    @property
    def held_file(self) -> Path:
        return self.probe_dir / f"{self.name}.held"

    def wait_held(self) -> dict[str, Any]:
        """Block until the session holds the place (it writes its record), or it ended without."""
        while not self.held_file.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"session {self.name} ended without holding the place:\n{self.finish()}")
            time.sleep(0.2)
        record: dict[str, Any] = json.loads(self.held_file.read_text())
        return record

    def read_until(self, text: str) -> str:
        """Read the session's output line by line until a line contains TEXT."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if text in line:
                return line
        pytest.fail(f"session {self.name} ended without printing {text!r}:\n{''.join(self.lines)}")

    def release(self) -> None:
        (self.probe_dir / f"{self.name}.go").touch()

    def finish(self) -> str:
        """Wait for the session to end; all it printed."""
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            out, _ = self.proc.communicate()
            self.lines.append(out or "")
        self.proc.wait()
        return "".join(self.lines)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def place_state(lab_farm: farm.Farm) -> tuple[str, str]:
    """(acquired, comment) as ``labgrid-client show`` prints them."""
    out = lab_farm.client("-p", PLACE, "show").stdout
    fields = dict(line.strip().split(": ", 1) for line in out.splitlines() if line.startswith("  ") and ": " in line)
    return fields.get("acquired", ""), fields.get("comment", "")


def test_second_session_fails_clearly_while_the_first_holds(lab_farm: farm.Farm, tmp_path: Path) -> None:
    first = Session(lab_farm, tmp_path, "first", wait=600)
    try:
        held = first.wait_held()
        assert held["acquired"] and held["acquired"][0].endswith("takeovers 0)")
        # the place brought the exporter's resources, through the coordinator
        assert {"NetworkSerialPort", "NetworkPowerPort", "NetworkService"} <= set(held["resources"])
        acquired, comment = place_state(lab_farm)
        assert acquired != "None"
        assert Lease.parse(comment) is not None and f"pid={held['keeper']} " in comment
        second = Session(lab_farm, tmp_path, "second", wait=0)
        out = second.finish()
        assert second.proc.returncode == BUSY_EXIT, out
        assert f"farm: place {PLACE} is held by {acquired} (pyrauc-session" in out, out
        assert f"pid={held['keeper']} " in out
        assert not second.held_file.exists()
    finally:
        first.release()
        out = first.finish()
    assert first.proc.returncode == 0, out
    assert f"farm: released place {PLACE}" in out
    assert place_state(lab_farm) == ("None", "")


def test_second_session_waits_and_gets_the_place_after_the_first(lab_farm: farm.Farm, tmp_path: Path) -> None:
    first = Session(lab_farm, tmp_path, "first", wait=600)
    second: Session | None = None
    try:
        first_held = first.wait_held()
        second = Session(lab_farm, tmp_path, "second", wait=600)
        line = second.read_until(f"farm: place {PLACE} is held by")
        assert f"pid={first_held['keeper']} " in line and "waiting up to 600 s" in line
        assert not second.held_file.exists()            # waiting, not holding
        first.release()
        assert first.finish() and first.proc.returncode == 0
        second_held = second.wait_held()
        assert second_held["acquired"][0].endswith("takeovers 0)")     # given back by the first, not taken
        assert f"pid={second_held['keeper']} " in place_state(lab_farm)[1]
        second.release()
        out = second.finish()
        assert second.proc.returncode == 0, out
    finally:
        for s in (first, second):
            if s is not None and s.proc.poll() is None:
                s.release()
                s.finish()
    assert place_state(lab_farm) == ("None", "")


def test_a_killed_session_releases_the_place(lab_farm: farm.Farm, tmp_path: Path) -> None:
    first = Session(lab_farm, tmp_path, "first", wait=600)
    held = first.wait_held()
    first.proc.send_signal(signal.SIGKILL)           # the session only: no fixture teardown ran
    first.finish()
    assert first.proc.returncode == -signal.SIGKILL
    while pid_alive(held["keeper"]):                 # its keeper sees its stdin close, releases, exits
        time.sleep(0.2)
    assert place_state(lab_farm) == ("None", "")
    second = Session(lab_farm, tmp_path, "second", wait=0)
    try:
        assert second.wait_held()["acquired"][0].endswith("takeovers 0)")
    finally:
        second.release()
        out = second.finish()
    assert second.proc.returncode == 0, out


def test_place_of_a_crashed_session_and_keeper_goes_to_the_next(lab_farm: farm.Farm, tmp_path: Path) -> None:
    first = Session(lab_farm, tmp_path, "first", wait=600)
    held = first.wait_held()
    os.killpg(first.proc.pid, signal.SIGKILL)        # session and keeper: nobody releases
    first.finish()
    acquired, comment = place_state(lab_farm)
    assert acquired != "None" and f"pid={held['keeper']} " in comment    # the coordinator still has it acquired
    second = Session(lab_farm, tmp_path, "second", wait=600)
    try:
        second_held = second.wait_held()
        assert second_held["acquired"][0].endswith("takeovers 1)")
        assert f"pid={second_held['keeper']} " in place_state(lab_farm)[1]
    finally:
        second.release()
        out = second.finish()
    assert second.proc.returncode == 0, out
    assert f"taking it over from the crashed session (pid {held['keeper']} " in out
    assert place_state(lab_farm) == ("None", "")


def test_a_persons_hold_is_waited_for_never_taken(lab_farm: farm.Farm, tmp_path: Path) -> None:
    lab_farm.client("-p", PLACE, "acquire")
    try:
        second = Session(lab_farm, tmp_path, "second", wait=0)
        out = second.finish()
        assert second.proc.returncode == BUSY_EXIT, out
        assert "(not a pyrauc session)" in out and "labgrid-client -p pyrauc-vboard release" in out
        assert place_state(lab_farm)[0] != "None"      # still the person's
    finally:
        lab_farm.client("-p", PLACE, "release")
    assert place_state(lab_farm) == ("None", "")
