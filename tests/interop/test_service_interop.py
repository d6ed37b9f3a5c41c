"""pyrauc's D-Bus service driven by the real thing: Debian's C ``rauc`` 1.8 client (``rauc install``,
``rauc status``, ``rauc status mark-good``) and ``busctl`` with the signatures of RAUC's interface,
on the private bus of tests/unit/test_service.py. Also: pyrauc's policy file is RAUC's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.dbus import POLICY, REPO, BusClient, private_bus
from tests.unit.test_install import SUCCESS_STEPS, Target, make_bundle, write_conf
from tests.unit.test_install import target as target  # the fixtures
from tests.unit.test_service import Env
from tests.unit.test_service import env as env

pytestmark = [pytest.mark.interop, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mounts)")]

DEBIAN_POLICY = Path("/usr/share/dbus-1/system.d/de.pengutronix.rauc.conf")


def rauc(e: Env, rauc_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([rauc_bin, *args], capture_output=True, text=True, env=e.bus.env(), timeout=300,
                          stdin=subprocess.DEVNULL)


def busctl(e: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["busctl", f"--address={e.bus.address}", *args], capture_output=True, text=True,
                          timeout=300)


def test_rauc18_client_installs_marks_and_reads_status(env: Env, rauc_bin: str) -> None:
    bundle = make_bundle(env.target, "c18", {"rootfs": ("rootfs.img", b"8" * 8192)})
    proc = rauc(env, rauc_bin, "install", str(bundle))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln != "idle"]   # 1.8 may print a late "idle"
    assert lines == ["installing", *SUCCESS_STEPS, f"Installing `{bundle}` succeeded"]
    assert env.target.slot1.read_bytes()[:8192] == b"8" * 8192
    status = rauc(env, rauc_bin, "status")
    assert status.returncode == 0, status.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", status.stdout)
    assert "Compatible:  Test Config" in text and "Booted from: rootfs.0 (A)" in text
    assert "[rootfs.1] (" in text and "inactive" in text
    marked = rauc(env, rauc_bin, "status", "mark-good")
    assert (marked.returncode, marked.stdout) == (0, "rauc status: marked slot(s) rootfs.0 as good\n")
    refused = rauc(env, rauc_bin, "status", "mark-good", "nope")
    assert refused.returncode == 1 and refused.stderr.strip() == "rauc mark: Invalid slot name format: 'nope'"
    failed = rauc(env, rauc_bin, "install", str(make_bundle(env.target, "x", {"rootfs": ("r.img", b"x")},
                                                                 compatible="Other")))
    assert failed.returncode == 1
    assert ("LastError: Installation error: Compatible mismatch: Expected 'Test Config' but bundle manifest has "
            "'Other'") in failed.stdout
    assert "` failed" in failed.stderr


def test_busctl_with_rauc_signatures(env: Env) -> None:
    bundle = make_bundle(env.target, "b", {"rootfs": ("rootfs.img", b"b" * 4096)})
    call = ("call", "de.pengutronix.rauc", "/", "de.pengutronix.rauc.Installer")
    assert busctl(env, *call, "GetPrimary").stdout == 's ""\n'
    info = busctl(env, *call, "Info", "s", str(bundle))
    assert info.stdout == 'ss "Test Config" "2024.1"\n'
    inspect = busctl(env, *call, "InspectBundle", "sa{sv}", str(bundle), "0")
    assert inspect.returncode == 0 and inspect.stdout.startswith("a{sv} ") and '"manifest-hash" s' in inspect.stdout
    slots = busctl(env, *call, "GetSlotStatus")
    assert slots.stdout.startswith('a(sa{sv}) 2 "rootfs.0" ') and '"state" s "booted"' in slots.stdout
    assert busctl(env, *call, "GetArtifactStatus").stdout == "aa{sv} 0\n"
    marked = busctl(env, *call, "Mark", "ss", "active", "other")
    assert marked.stdout == 'ss "rootfs.1" "marked slot(s) rootfs.1 as active"\n'
    bad = busctl(env, *call, "InstallBundle", "sa{sv}", str(bundle), "1", "bogus", "b", "true")
    assert bad.returncode != 0 and bad.stderr.strip() == "Call failed: Unsupported key: bogus"
    ok = busctl(env, *call, "InstallBundle", "sa{sv}", str(bundle), "2", "ignore-compatible", "b", "false",
                "transaction-id", "s", "busctl-1")
    assert ok.returncode == 0, ok.stderr
    assert env.client.wait_completed() == 0
    prop = ("get-property", "de.pengutronix.rauc", "/", "de.pengutronix.rauc.Installer")
    assert busctl(env, *prop, "Operation").stdout == 's "idle"\n'
    assert busctl(env, *prop, "Progress").stdout == '(isi) 100 "Installing done." 1\n'
    assert busctl(env, *prop, "BootSlot").stdout == 's "A"\n'
    intro = busctl(env, "introspect", "de.pengutronix.rauc", "/", "de.pengutronix.rauc.Installer")
    rows = {ln.split()[0]: ln.split()[2] for ln in intro.stdout.splitlines()[1:] if ln.startswith(".")}
    assert rows[".InstallBundle"] == "sa{sv}" and rows[".Mark"] == "ss" and rows[".Progress"] == "(isi)"
    assert rows[".Completed"] == "i"


def test_policy_file_is_raucs() -> None:
    if not DEBIAN_POLICY.exists():
        pytest.fail("rauc-service is not installed (apt-get install rauc-service): the policy oracle is missing")

    def rules(text: str) -> str:
        return re.sub(r"\s+", " ", re.sub(r"<!--.*?-->", "", text, flags=re.S)).strip()
    assert rules(POLICY.read_text()) == rules(DEBIAN_POLICY.read_text())


def test_pyrauc_client_drives_rauc18_service(target: Target, rauc_bin: str) -> None:
    """The other way round: Debian's ``rauc service`` 1.8 on the private bus, pyrauc as its client."""
    write_conf(target)
    with private_bus() as bus:
        client = BusClient(bus.address)
        log = (target.dir / "rauc18.log").open("w")
        service = subprocess.Popen([rauc_bin, "-c", str(target.conf), "service", "--override-boot-slot", "A"],
                                   env=bus.env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not client.has_owner():
                assert service.poll() is None and time.monotonic() < deadline, (target.dir / "rauc18.log").read_text()
                time.sleep(0.05)
            bundle = make_bundle(target, "p18", {"rootfs": ("rootfs.img", b"p" * 8192)})
            pyrauc = [sys.executable, "-m", "pyrauc"]
            proc = subprocess.run([*pyrauc, "install", str(bundle)], capture_output=True, text=True,
                                  env=bus.env(), cwd=REPO, timeout=300)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            lines = proc.stdout.splitlines()
            assert lines[0] == "installing" and lines[-1] == f"Installing `{bundle}` succeeded"
            assert " 90% Copying image to rootfs.1" in lines     # 1.8 reports its own steps
            assert target.slot1.read_bytes()[:8192] == b"p" * 8192
            status = subprocess.run([*pyrauc, "status", "--output-format=json"], capture_output=True, text=True,
                                    env=bus.env(), cwd=REPO)
            got = json.loads(status.stdout)
            assert got["compatible"] == "Test Config" and got["booted"] == "A"
            assert [next(iter(s)) for s in got["slots"]] == ["rootfs.0", "rootfs.1"]
            assert "Obtaining primary entry from bootloader 'noop' not supported yet" in status.stderr
            marked = subprocess.run([*pyrauc, "status", "mark-good"], capture_output=True, text=True,
                                    env=bus.env(), cwd=REPO)
            assert (marked.returncode, marked.stdout) == (0, "rauc status: marked slot rootfs.0 as good\n")
            refused = subprocess.run([*pyrauc, "status", "mark-good", "nope"], capture_output=True, text=True,
                                     env=bus.env(), cwd=REPO)
            assert refused.returncode == 1 and refused.stderr.endswith("rauc mark: Invalid slot name format: 'nope'\n")
        finally:
            client.close()
            service.terminate()
            service.wait(30)
            log.close()
