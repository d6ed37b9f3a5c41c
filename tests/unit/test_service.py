"""``rauc service`` on a private bus: a real dbus-daemon (system-bus policy with RAUC's policy file)
started per test, the service as a subprocess on a file-backed system.conf, driven through
D-Bus (:class:`tests.helpers.dbus.BusClient`) and through ``pyrauc`` as its client.

Needs root like tests/unit/test_install.py (the bundle is mounted through a loop device).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest
from dbus_fast import Variant

from tests.helpers.dbus import REPO, BusClient, PrivateBus, Service, private_bus
from tests.unit.test_install import SLOT_SIZE, SUCCESS_STEPS, Target, make_bundle, write_conf
from tests.unit.test_install import target as target  # the fixture

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mounts)")]

GERROR = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30"
LOGS = """
[log.readable]
filename=events.log

[log.short]
filename=events.short
format=short
events=install

[log.json]
filename=events.json
format=json

[log.pretty]
filename=events.pretty
format=json-pretty
events=mark;boot;service
"""


@dataclass
class Env:
    bus: PrivateBus
    target: Target
    service: Service
    client: BusClient

    def pyrauc(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``pyrauc`` as the service's client (no -c: it finds the service on the bus)."""
        return subprocess.run([sys.executable, "-m", "pyrauc", *args], capture_output=True, text=True,
                              env=env or self.bus.env(), cwd=REPO, stdin=subprocess.DEVNULL, timeout=120)

    def events(self) -> list[dict[str, str]]:
        path = self.target.dir / "data" / "events.json"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def untouched(self) -> bool:
        return self.target.slot1.read_bytes() == b"\0" * SLOT_SIZE


def start(bus: PrivateBus, t: Target, client: BusClient, *args: str) -> Service:
    svc = Service(bus, t.conf, "--override-boot-slot", "A", *args)
    svc.wait_ready(client)
    return svc


@pytest.fixture
def env(target: Target) -> Iterator[Env]:
    write_conf(target, extra=LOGS)
    with private_bus() as bus:
        client = BusClient(bus.address)
        e = Env(bus, target, start(bus, target, client), client)
        try:
            yield e
        finally:
            client.close()
            assert e.service.stop() == 0, e.service.stderr()
            assert "stopping service" in e.service.stderr()


def _slow_hook_bundle(t: Target, name: str, seconds: float) -> Path:
    """A bundle whose install-check hook takes ``seconds``: an install that is still running."""
    hook = f"#!/bin/sh\n[ \"$1\" = install-check ] && sleep {seconds}\nexit 0\n"
    return make_bundle(t, name, {"rootfs": ("rootfs.img", b"s" * 8192)},
                       manifest_extra="[hooks]\nfilename=hook.sh\nhooks=install-check\n\n", files={"hook.sh": hook})


def test_properties_and_introspection(env: Env) -> None:
    assert env.client.props() == {"Operation": "idle", "LastError": "", "Progress": [0, "", 0],
                                  "Compatible": "Test Config", "Variant": "", "SystemVersion": "", "BootSlot": "A"}
    reply = env.client.call("Introspect", interface="org.freedesktop.DBus.Introspectable")
    iface = ElementTree.fromstring(reply.body[0]).find("interface[@name='de.pengutronix.rauc.Installer']")
    assert iface is not None
    methods = {m.get("name"): ["".join(a.get("type", "") for a in m.findall(f"arg[@direction='{d}']"))
                               for d in ("in", "out")] for m in iface.findall("method")}
    assert methods == {"InstallBundle": ["sa{sv}", ""], "Install": ["s", ""], "InspectBundle": ["sa{sv}", "a{sv}"],
                       "Info": ["s", "ss"], "Mark": ["ss", "ss"], "GetSlotStatus": ["", "a(sa{sv})"],
                       "GetArtifactStatus": ["", "aa{sv}"], "GetPrimary": ["", "s"]}
    props = {p.get("name"): (p.get("type"), p.get("access")) for p in iface.findall("property")}
    assert props == {"Operation": ("s", "read"), "LastError": ("s", "read"), "Progress": ("(isi)", "read"),
                     "Compatible": ("s", "read"), "Variant": ("s", "read"), "SystemVersion": ("s", "read"),
                     "BootSlot": ("s", "read")}
    assert [(s.get("name"), [a.get("type") for a in s]) for s in iface.findall("signal")] == [("Completed", ["i"])]


def test_install_bundle_signals_and_event_log(env: Env) -> None:
    data = os.urandom(1 << 20)
    bundle = make_bundle(env.target, "ok", {"rootfs": ("rootfs.img", data)})
    assert env.client.ok("InstallBundle", "sa{sv}", str(bundle),
                         {"transaction-id": Variant("s", "0123456789abcdef")}) == []
    assert env.client.wait_completed() == 0
    env.client.wait_for("Operation", "idle")
    sig = env.client.signals
    assert sig[:2] == [("Operation", "installing"), ("LastError", "")]
    progress = [v for k, v in sig if k == "Progress"]
    assert [f"{p:3d}% {m}" for p, m, _ in progress] == SUCCESS_STEPS
    assert progress[0] == [0, "Installing", 1] and progress[1][2] == 2 and progress[-1] == [100, "Installing done.", 1]
    assert sig[-2:] == [("Completed", 0), ("Operation", "idle")]
    assert env.client.props()["LastError"] == ""
    assert env.target.slot1.read_bytes()[:len(data)] == data
    assert env.target.status().get_string("slot.rootfs.1", "installed.transaction") == "0123456789abcdef"
    assert f"input bundle: {bundle}" in env.service.stdout()
    messages = [e["MESSAGE"] for e in env.events()]
    assert messages[:1] == ["Booted into rootfs.0 (A)"]
    assert messages[1:] == ["Installation 01234567 started", "Marked slot rootfs.1 as bad", "Updating slot rootfs.1",
                            "Marked slot rootfs.1 as active", "Installation 01234567 succeeded"]
    done = env.events()[-1]
    assert done["BUNDLE_VERSION"] == "2024.1" and done["TRANSACTION_ID"] == "0123456789abcdef"
    assert done["MESSAGE_ID"] == "0163db5468ac4237b090d28490c301ed" and len(done["BUNDLE_HASH"]) == 64
    data_dir = env.target.dir / "data"
    short = (data_dir / "events.short").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in short] == ["Installation 01234567 started",
                                                          "Installation 01234567 succeeded"]
    readable = (data_dir / "events.log").read_text()
    assert " " * 22 + "transaction ID: 0123456789abcdef\n" in readable
    pretty = (data_dir / "events.pretty").read_text()
    decoder, pos, entries = json.JSONDecoder(), 0, []
    while pretty[pos:].strip():
        obj, pos = decoder.raw_decode(pretty, pos)
        entries.append(obj)
        pos += 1
    assert [e["RAUC_EVENT_TYPE"] for e in entries] == ["boot", "mark", "mark"]


def test_service_log_says_what_the_installation_does(env: Env) -> None:
    """RAUC's service logs each status message of an installation as "installing <bundle>:
    <message>" and passes the hooks' stdout through (the journal is where a device is debugged)."""
    hook = '#!/bin/sh\necho "hook-stdout-$1"\nexit 0\n'
    bundle = make_bundle(env.target, "journal", {"rootfs": ("rootfs.img", b"j" * 8192)},
                         manifest_extra="[hooks]\nfilename=hook.sh\nhooks=install-check\n\n",
                         files={"hook.sh": hook})
    env.client.ok("InstallBundle", "sa{sv}", str(bundle), {})
    assert env.client.wait_completed() == 0
    env.client.wait_for("Operation", "idle")
    said = [line[line.index("installing "):] for line in env.service.stderr().splitlines()
            if f"installing {bundle}: " in line or f"installing `{bundle}`" in line]
    assert [line.removeprefix(f"installing {bundle}: ") for line in said] == [
        "started", "Checking and mounting bundle...", "Updating slots...", "Checking slot rootfs.1",
        "Updating slot rootfs.1", "Updating slot rootfs.1 status", "Updating slot rootfs.1 done",
        "All slots updated", "finished", f"installing `{bundle}` succeeded"]
    assert "hook-stdout-install-check" in env.service.stdout().splitlines()


def test_install_failure_last_error_and_rejected_event(env: Env) -> None:
    bundle = make_bundle(env.target, "other", {"rootfs": ("rootfs.img", b"x" * 4096)}, compatible="Other")
    env.client.ok("InstallBundle", "sa{sv}", str(bundle), {})
    assert env.client.wait_completed() == 1
    env.client.wait_for("Operation", "idle")
    reason = "Installation error: Compatible mismatch: Expected 'Test Config' but bundle manifest has 'Other'"
    assert env.client.props()["LastError"] == reason
    names = [k for k, _ in env.client.signals]
    assert names[-3:] == ["LastError", "Completed", "Operation"]
    assert env.events()[-1]["MESSAGE"].endswith(f"rejected: {reason}")
    assert env.untouched()
    env.client.ok("InstallBundle", "sa{sv}", str(bundle), {"ignore-compatible": Variant("b", True)})
    assert env.client.wait_completed(2) == 0
    assert env.client.props()["LastError"] == ""


def test_busy_while_installing(env: Env) -> None:
    slow = _slow_hook_bundle(env.target, "slow", 3)
    env.client.ok("InstallBundle", "sa{sv}", str(slow), {})
    env.client.wait_for("Operation", "installing")
    second = env.client.call("InstallBundle", "sa{sv}", str(slow), {})
    assert (second.error, second.text) == (GERROR, "Already processing a different method")
    for member, signature, body in (("Mark", "ss", ("good", "booted")), ("GetSlotStatus", "", ()),
                                    ("GetPrimary", "", ()), ("InspectBundle", "sa{sv}", (str(slow), {})),
                                    ("Info", "s", (str(slow),)), ("Install", "s", (str(slow),)),
                                    ("GetArtifactStatus", "", ())):
        reply = env.client.call(member, signature, *body)
        want = "Already processing a different method" if member == "Install" else \
            "already processing a different method"
        assert (reply.error, reply.text) == (GERROR, want), member
    assert env.client.props()["Operation"] == "installing"
    assert env.client.wait_completed() == 0
    assert [v for k, v in env.client.signals if k == "Completed"] == [0]
    assert env.client.ok("GetPrimary") == [""]


def test_client_disconnects_mid_install(env: Env) -> None:
    slow = _slow_hook_bundle(env.target, "slow", 2)
    proc = subprocess.Popen([sys.executable, "-m", "pyrauc", "install", str(slow)], env=env.bus.env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    env.client.wait_for("Operation", "installing")
    proc.kill()
    proc.wait()
    assert env.client.wait_completed() == 0
    assert env.client.props()["LastError"] == ""
    assert env.target.slot1.read_bytes()[:8192] == b"s" * 8192
    assert env.events()[-1]["MESSAGE"].endswith("succeeded")


def test_bad_input(env: Env) -> None:
    c = env.client
    bundle = make_bundle(env.target, "ok", {"rootfs": ("rootfs.img", b"b" * 4096)})
    cases = [
        (("InstallBundle", "s", str(bundle)), "org.freedesktop.DBus.Error.InvalidArgs",
         "Type of message, \u201c(s)\u201d, does not match expected type \u201c(sa{sv})\u201d"),
        (("InstallBundle", "sa{sv}", str(bundle), {"foo": Variant("b", True)}), GERROR, "Unsupported key: foo"),
        (("InstallBundle", "sa{sv}", str(bundle), {"ignore-compatible": Variant("s", "yes")}), GERROR,
         "Unsupported key: ignore-compatible"),
        (("InspectBundle", "sa{sv}", str(bundle), {"transaction-id": Variant("s", "x")}), GERROR,
         "Unsupported key: transaction-id"),
        (("Mark", "ss", "bogus", "booted"), GERROR, "unknown subcommand bogus"),
        (("Mark", "s", "good"), "org.freedesktop.DBus.Error.InvalidArgs",
         "Type of message, \u201c(s)\u201d, does not match expected type \u201c(ss)\u201d"),
        (("Frobnicate", ""), "org.freedesktop.DBus.Error.UnknownMethod", "No such method \u201cFrobnicate\u201d"),
        (("Info", "s", "/nonexistent.raucb"), GERROR, None),
        (("InspectBundle", "sa{sv}", "/nonexistent.raucb", {}), GERROR, None),
    ]
    for call, error, text in cases:
        reply = c.call(*call)
        assert reply.error == error, (call, reply)
        if text is not None:
            assert reply.text == text, call
        else:
            assert "nonexistent.raucb" in reply.text, reply.text
    written = c.call("Set", "ssv", "de.pengutronix.rauc.Installer", "Operation", Variant("s", "x"),
                     interface="org.freedesktop.DBus.Properties")
    assert (written.error, written.text) == ("org.freedesktop.DBus.Error.InvalidArgs",
                                             "Property \u201cOperation\u201d is not writable")
    unknown = c.call("Get", "ss", "de.pengutronix.rauc.Installer", "Nope", interface="org.freedesktop.DBus.Properties")
    assert unknown.text == "No such property \u201cNope\u201d"
    assert [k for k, _ in c.signals] == []        # nothing started
    # a bundle that does not exist: RAUC starts the install and it fails with its reason
    c.ok("InstallBundle", "sa{sv}", "/nonexistent.raucb", {})
    assert c.wait_completed() == 1
    assert "/nonexistent.raucb" in c.props()["LastError"]
    assert env.untouched() and env.service.proc.poll() is None
    assert c.props()["Operation"] == "idle"


def test_methods(env: Env) -> None:
    c = env.client
    bundle = make_bundle(env.target, "meta", {"rootfs": ("rootfs.img", b"m" * 4096)},
                         manifest_extra="[meta.vendor]\nrelease=R7\n\n")
    assert c.ok("Info", "s", str(bundle)) == ["Test Config", "2024.1"]
    info = c.ok("InspectBundle", "sa{sv}", str(bundle), {})[0]
    assert info["update"] == {"compatible": "Test Config", "version": "2024.1"}
    assert info["bundle"] == {"format": "plain"} and len(info["manifest-hash"]) == 64
    assert info["images"][0]["slot-class"] == "rootfs" and info["images"][0]["size"] == 4096
    assert info["images"][0]["hooks"] == [] and info["meta"] == {"vendor": {"release": "R7"}}
    slots = dict(c.ok("GetSlotStatus")[0])
    assert slots["rootfs.0"] == {"class": "rootfs", "device": str(env.target.slot0), "type": "raw", "bootname": "A",
                                 "state": "booted", "boot-status": "good"}
    assert slots["rootfs.1"]["state"] == "inactive"
    assert c.ok("Mark", "ss", "active", "other") == ["rootfs.1", "marked slot(s) rootfs.1 as active"]
    assert c.ok("Mark", "ss", "good", "booted") == ["rootfs.0", "marked slot(s) rootfs.0 as good"]
    assert c.ok("Mark", "ss", "bad", "rootfs.1") == ["rootfs.1", "marked slot(s) rootfs.1 as bad"]
    status = dict(c.ok("GetSlotStatus")[0])["rootfs.1"]
    assert status["activated.count"] == 1 and status["activated.timestamp"].endswith("Z")
    assert c.ok("GetPrimary") == [""]           # the noop backend knows no primary
    assert c.ok("GetArtifactStatus") == [[]]
    marks = [e for e in env.events() if e["RAUC_EVENT_TYPE"] == "mark"]
    assert [e["MESSAGE"] for e in marks] == ["Marked slot rootfs.1 as active", "Marked slot rootfs.0 as good",
                                            "Marked slot rootfs.1 as bad"]
    assert marks[0]["BUNDLE_HASH"] == "" and marks[0]["SLOT_BOOTNAME"] == "B"


def _mapped(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a file whose path contains ``name`` mapped."""
    return name in Path(f"/proc/{pid}/maps").read_text()


def test_idle_service_leaves_the_crypto_libraries_unloaded(env: Env) -> None:
    """Start-up, status and marking need no cryptography (a device's boot and its idle service's memory);
    the first installation loads it."""
    pid = env.service.proc.pid
    c = env.client
    c.ok("GetSlotStatus")
    assert c.ok("Mark", "ss", "good", "booted") == ["rootfs.0", "marked slot(s) rootfs.0 as good"]
    assert not _mapped(pid, "cryptography"), "the idle service loaded cryptography"
    bundle = make_bundle(env.target, "lazy", {"rootfs": ("rootfs.img", b"z" * 4096)})
    c.ok("InstallBundle", "sa{sv}", str(bundle), {})
    assert c.wait_completed() == 0
    assert _mapped(pid, "cryptography")


def test_cli_client(env: Env) -> None:
    bundle = make_bundle(env.target, "cli", {"rootfs": ("rootfs.img", b"c" * 8192)})
    proc = env.pyrauc("install", os.path.relpath(bundle, REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["installing", *SUCCESS_STEPS, f"Installing `{bundle}` succeeded"]
    local = subprocess.run([sys.executable, "-m", "pyrauc", "-c", str(env.target.conf), "--override-boot-slot=A",
                            "status", "--detailed", "--output-format=json"], capture_output=True, text=True,
                           env=env.bus.env(), cwd=REPO)
    remote = env.pyrauc("status", "--detailed", "--output-format=json")
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    for fmt in ("readable", "shell"):
        here = subprocess.run([sys.executable, "-m", "pyrauc", "-c", str(env.target.conf), "--override-boot-slot=A",
                               "status", f"--output-format={fmt}"], capture_output=True, text=True, cwd=REPO,
                              env=env.bus.env())
        assert env.pyrauc("status", f"--output-format={fmt}").stdout == here.stdout
    marked = env.pyrauc("status", "mark-good")
    assert (marked.returncode, marked.stdout) == (0, "rauc status: marked slot(s) rootfs.0 as good\n")
    refused = env.pyrauc("status", "mark-bad", "nope.0")
    assert refused.returncode == 1 and refused.stderr.startswith("rauc mark: No slot")
    failed = env.pyrauc("install", str(make_bundle(env.target, "x", {"rootfs": ("r.img", b"x")}, compatible="X")))
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[-1] == ("LastError: Installation error: Compatible mismatch: Expected "
                                              "'Test Config' but bundle manifest has 'X'")
    assert failed.stderr.splitlines()[-1].startswith("Installing `") and failed.stderr.endswith("` failed\n")
    keyring = env.pyrauc("install", "--keyring", str(env.target.pki.keyring), str(bundle))
    assert (keyring.returncode, keyring.stderr) == (1, "The '--keyring' argument is not supported when using the "
                                                       "D-Bus service. Reconfigure the service instead.\n")
    missing = env.pyrauc("install", "/nonexistent.raucb")
    assert (missing.returncode, missing.stderr) == (1, "No such file: /nonexistent.raucb\n")


def test_conf_option_still_uses_the_running_service(env: Env) -> None:
    """RAUC's client talks to the running service whatever -c names (a script's ``rauc -c
    /etc/rauc/system.conf status``); the service knows the booted slot only from its own
    --override-boot-slot, so only the service can answer here. -C (a local override) and
    --override-boot-slot keep the command in this process."""
    conf = str(env.target.conf)
    via = env.pyrauc("-c", conf, "status", "--output-format=shell")
    assert via.returncode == 0, via.stderr
    assert "RAUC_SYSTEM_BOOTED_BOOTNAME='A'" in via.stdout.splitlines()
    marked = env.pyrauc("-c", conf, "status", "mark-good")
    assert (marked.returncode, marked.stdout) == (0, "rauc status: marked slot(s) rootfs.0 as good\n")
    local = env.pyrauc("-c", conf, "-C", "system:compatible=Local", "status", "--output-format=shell")
    assert local.returncode == 1 and "Failed to determine slot states" in local.stderr   # in this process
    here = env.pyrauc("-c", conf, "--override-boot-slot=B", "status", "--output-format=shell")
    assert "RAUC_SYSTEM_BOOTED_BOOTNAME='B'" in here.stdout.splitlines(), here.stderr


def test_cli_ctrl_c_and_vanishing_service(env: Env) -> None:
    slow = _slow_hook_bundle(env.target, "slow", 3)
    proc = subprocess.Popen([sys.executable, "-m", "pyrauc", "install", str(slow)], env=env.bus.env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    env.client.wait_for("Operation", "installing")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert out.endswith("\nCtrl+C pressed. Exiting rauc installation client...\n"
                        "Note that this will not abort the installation running in the rauc service!\n")
    assert env.client.wait_completed() == 0      # the service went on
    # the service goes away in the middle of an install: exit 2
    slow2 = _slow_hook_bundle(env.target, "slow2", 5)
    proc = subprocess.Popen([sys.executable, "-m", "pyrauc", "install", str(slow2)], env=env.bus.env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while [v for k, v in env.client.signals if k == "Progress"].count([0, "Installing", 1]) < 2:
        assert time.monotonic() < deadline, env.client.signals
        time.sleep(0.05)
    time.sleep(1)       # in the install-check hook, after the method reply
    env.service.proc.kill()
    env.service.proc.wait()
    try:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2
        assert err.splitlines()[-2:] == ["RAUC service disappeared", f"D-Bus error while installing `{slow2}`"]
    finally:
        _release_killed_install(env.target.dir)
        env.service = start(env.bus, env.target, env.client)   # for the fixture's clean stop


def _release_killed_install(directory: Path) -> None:
    """Unmount and detach what a killed service left below ``directory`` (its bundle mount)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mountpoint = line.split()[1]
        deadline = time.monotonic() + 30       # the orphaned hook may still run from the mount
        while mountpoint.startswith(str(directory)) and subprocess.run(["umount", mountpoint]).returncode != 0:
            assert time.monotonic() < deadline, f"{mountpoint} stays busy"
            time.sleep(0.5)
    for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines():
        device, _, rest = line.partition(":")
        if str(directory) in rest and "slot1.img" not in rest:
            subprocess.run(["losetup", "-d", device], check=False)


# a process of user "nobody" that tries to own the name (the venv's python may live below /root)
INTRUDER = f"""
import asyncio, sys
sys.path[:0] = {[str(REPO), *(p for p in sys.path if p.endswith("site-packages"))]!r}
from dbus_fast.aio import MessageBus
async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    try:
        print(await bus.request_name("de.pengutronix.rauc"))
    except Exception as e:
        print(getattr(e, "type", ""), e)
asyncio.run(main())
"""
INTRUDER_PYTHON = next((p for p in ("/usr/bin/python3",) if os.path.exists(p) and subprocess.run(
    [p, "-c", f"import sys; sys.exit(sys.version_info[:2] != {tuple(sys.version_info[:2])})"]).returncode == 0), None)


def test_policy(target: Target) -> None:
    """RAUC's policy: anyone may call, only root may own the name; a site policy may deny more."""
    write_conf(target)
    deny = ('<policy user="nobody"><deny send_destination="de.pengutronix.rauc" '
            'send_interface="de.pengutronix.rauc.Installer" send_member="InstallBundle"/></policy>')
    with private_bus(extra_policy=deny) as bus:
        client = BusClient(bus.address)
        try:
            if INTRUDER_PYTHON:
                intruder = subprocess.run([INTRUDER_PYTHON, "-c", INTRUDER, bus.address], capture_output=True,
                                          text=True, user="nobody", cwd="/", timeout=60)
                assert "AccessDenied" in intruder.stdout, intruder.stdout + intruder.stderr
            svc = start(bus, target, client)
            bundle = make_bundle(target, "p", {"rootfs": ("rootfs.img", b"p" * 4096)})
            busctl = ["busctl", f"--address={bus.address}", "call", "de.pengutronix.rauc", "/",
                      "de.pengutronix.rauc.Installer"]
            allowed = subprocess.run([*busctl, "GetSlotStatus"], capture_output=True, text=True, user="nobody")
            assert allowed.returncode == 0 and '"rootfs.0"' in allowed.stdout, allowed.stderr
            denied = subprocess.run([*busctl, "InstallBundle", "sa{sv}", str(bundle), "0"], capture_output=True,
                                    text=True, user="nobody")
            assert denied.returncode != 0 and "Access denied" in denied.stderr, denied.stderr
            assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE
            assert svc.proc.poll() is None and client.props()["Operation"] == "idle"
            assert svc.stop() == 0
        finally:
            client.close()


def test_bus_activation_and_session_bus(target: Target) -> None:
    """The activation file starts the service on the first call (``rauc install`` finds it
    activatable); DBUS_STARTER_BUS_TYPE=session puts service and client on the session bus."""
    write_conf(target)
    script = target.dir / "rauc-service.sh"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m pyrauc -c {target.conf} service "
                      f"--override-boot-slot A >{target.dir}/activated.log 2>&1\n")
    script.chmod(0o755)
    activation = f"[D-BUS Service]\nName=de.pengutronix.rauc\nExec={script}\nUser=root\n"
    with private_bus(activation=activation) as bus:
        client = BusClient(bus.address)
        try:
            assert not client.has_owner()
            bundle = make_bundle(target, "a", {"rootfs": ("rootfs.img", b"a" * 4096)})
            env = bus.env(PYTHONPATH=str(REPO))
            proc = subprocess.run([sys.executable, "-m", "pyrauc", "install", str(bundle)], capture_output=True,
                                  text=True, env=env, cwd=REPO, timeout=120)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert proc.stdout.splitlines()[0] == "installing"
            assert client.has_owner()
            activated = client.owner_pid()
            os.kill(activated, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while client.has_owner():
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            client.close()
    write_conf(target)
    with private_bus() as bus:
        session_env = {k: v for k, v in bus.env().items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
        session_env.update(DBUS_SESSION_BUS_ADDRESS=bus.address, DBUS_STARTER_BUS_TYPE="session",
                           DBUS_SYSTEM_BUS_ADDRESS="unix:path=/nonexistent")
        client = BusClient(bus.address)
        svc = Service(bus, target.conf, "--override-boot-slot", "A", env=session_env)
        try:
            svc.wait_ready(client)
            proc = subprocess.run([sys.executable, "-m", "pyrauc", "status", "--output-format=shell"],
                                  capture_output=True, text=True, env=session_env, cwd=REPO)
            assert proc.returncode == 0 and "RAUC_SYSTEM_BOOTED_BOOTNAME='A'" in proc.stdout
        finally:
            client.close()
            assert svc.stop() == 0


def test_startup_events(target: Target) -> None:
    """Boot event once per boot_id (stored in the central status), then "Service restarted";
    "Service started" without a central status file; a broken config: exit 1."""
    write_conf(target, extra="[log.j]\nfilename=ev.json\nformat=json\n")
    events = target.dir / "data" / "ev.json"
    with private_bus() as bus:
        client = BusClient(bus.address)
        try:
            for _ in range(2):
                svc = start(bus, target, client)
                assert svc.stop() == 0
            got = [json.loads(line) for line in events.read_text().splitlines()]
            assert [e["MESSAGE"] for e in got] == ["Booted into rootfs.0 (A)", "Service restarted"]
            boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
            assert got[0]["BOOT_ID"] == boot_id and got[0]["BUNDLE_HASH"] == "unknown"
            assert target.status().get_string("system", "boot-id") == boot_id
            write_conf(target, extra=f"[log.j]\nfilename={events}\nformat=json\n")
            target.conf.write_text(target.conf.read_text().replace(f"data-directory={target.dir}/data\n", ""))
            svc = start(bus, target, client)
            assert svc.stop() == 0
            assert json.loads(events.read_text().splitlines()[-1])["MESSAGE"] == "Service started"
            broken = Service(bus, target.conf, "--override-boot-slot", "Z")
            assert broken.proc.wait(60) == 1
            assert "Failed to determine slot states: " in broken.stderr()
        finally:
            client.close()


def test_damaged_status_file_costs_the_status_not_the_service(target: Target) -> None:
    """A central status file that cannot be parsed (a torn write, a bit flip): RAUC warns and goes on
    with no recorded status; the service starts, status works, and the next install writes the file
    anew. pyrauc's service refused to start, which blocked every further update."""
    write_conf(target)
    data = target.dir / "data"
    data.mkdir()
    (data / "central.raucs").write_bytes(b"[slot.rootfs.1]\njustakey\n\xff\xfe")
    with private_bus() as bus:
        client = BusClient(bus.address)
        service = start(bus, target, client)
        try:
            e = Env(bus, target, service, client)
            status = e.pyrauc("status", "--output-format=shell", "--detailed")
            assert status.returncode == 0, status.stderr
            assert "RAUC_SLOT_STATUS_STATUS_2=''" in status.stdout.splitlines()
            assert "Failed to load status file" in service.stderr()
            bundle = make_bundle(target, "after", {"rootfs": ("rootfs.img", b"a" * 4096)})
            proc = e.pyrauc("install", str(bundle))
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert target.status().get_string("slot.rootfs.1", "status") == "ok"
        finally:
            client.close()
            assert service.stop() == 0, service.stderr()


def test_no_service_means_in_process(target: Target) -> None:
    """Without a bus (or with PYRAUC_SERVICE=always and no service) the client's choices."""
    bundle = make_bundle(target, "n", {"rootfs": ("rootfs.img", b"n" * 4096)})
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bus"}
    env.pop("PYRAUC_SERVICE", None)
    proc = subprocess.run([sys.executable, "-m", "pyrauc", "install", str(bundle)], capture_output=True, text=True,
                          env={**env, "PYRAUC_SERVICE": "always"}, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"D-Bus error while installing `{bundle}`"
    assert proc.stderr.splitlines()[0].startswith("Error creating proxy: ")
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE
