"""Issue 16 on the lab target: the RAUC D-Bus service, both ways.

pyrauc image: rauc.service (Type=dbus) is started by D-Bus activation; ``busctl`` calls with the
signatures of RAUC's interface; the tutorial's install step (a crypt bundle encrypted for this
device) runs through the service: ``rauc install`` prints the service's ``installing`` and
progress, the service's journal shows ``input bundle: ...``, the properties end idle with no
LastError.

Debian image variant (``PYRAUC_LAB_RAUC=debian``, rauc 1.8 with rauc-service): pyrauc's client on
the host drives Debian's service through the target's system bus socket, forwarded over SSH
(``status``, ``status mark-good``, ``install``).

Run: ``python -m images`` then ``.venv/bin/pytest --lg-env labs/qemu.yaml tests/lab/test_service.py``;
for the variant ``python -m images --rauc debian`` and
``PYRAUC_LAB_RAUC=debian .venv/bin/pytest --lg-env labs/qemu.yaml tests/lab/test_service.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.bundles import pyrauc
from tests.lab.target import C_RAUC_18, PYRAUC, RaucTargetDriver
from tests.lab.test_target_install import TIMEOUT, Lab, _bundle, _image, _push
from tests.lab.test_target_install import dut as dut  # the fixtures
from tests.lab.test_target_install import labhost as labhost

REPO = Path(__file__).resolve().parents[2]
CALL = "busctl call de.pengutronix.rauc / de.pengutronix.rauc.Installer"
GET = "busctl get-property de.pengutronix.rauc / de.pengutronix.rauc.Installer"


def _needs(target_rauc: str, flavour: str) -> None:
    if target_rauc != flavour:
        pytest.skip(f"needs the {flavour} image (this target runs {target_rauc})")


def test_service_is_bus_activated(dut: RaucTargetDriver, target_rauc: str) -> None:
    _needs(target_rauc, PYRAUC)
    dut.sh("test -f /usr/share/dbus-1/system.d/de.pengutronix.rauc.conf && "
           "test -f /usr/share/dbus-1/system-services/de.pengutronix.rauc.service && "
           "test -x /usr/local/libexec/rauc-service.sh")
    dut.run("systemctl stop rauc.service")
    dut.run("systemctl reset-failed rauc.service")   # a start that failed at boot is not this test's subject
    assert dut.sh("systemctl is-active rauc.service || true").strip() == "inactive"
    slots = dut.sh(f"{CALL} GetSlotStatus", timeout=300)        # activates it
    assert slots.startswith('a(sa{sv}) 2 "rootfs.') and '"state" s "booted"' in slots
    assert dut.sh("systemctl is-active rauc.service").strip() == "active"
    assert dut.sh(f"{GET} Compatible").strip() == 's "pyrauc-qemux86-64"'
    assert dut.sh(f"{GET} BootSlot").strip() == f's "{dut.booted_bootname()}"'
    assert dut.sh(f"{GET} Operation").strip() == 's "idle"'
    assert dut.sh(f"{CALL} GetPrimary").strip().startswith('s "rootfs.')
    refused = dut.run(f"{CALL} InstallBundle sa{{sv}} /data/x.raucb 1 bogus b true")
    assert refused[2] != 0 and "Unsupported key: bogus" in refused[1]
    unit = dut.sh("systemctl show -p Type -p BusName rauc.service")
    assert "Type=dbus" in unit and "BusName=de.pengutronix.rauc" in unit


def test_tutorial_install_through_the_service(dut: RaucTargetDriver, labhost: Lab, target_rauc: str) -> None:
    """The tutorial's step 4 (crypt bundle encrypted for this device) installed via the service."""
    _needs(target_rauc, PYRAUC)
    image = _image(labhost.work / "svc.ext4", 16)
    bundle = _bundle(labhost, "svc", "crypt", image)
    encrypted = labhost.work / "svc-enc.raucb"
    pyrauc("encrypt", "--keyring", labhost.keyring, "--to", labhost.devices[0].cert_path, bundle, encrypted,
           check=True)
    remote = _push(dut, encrypted)
    since = dut.sh("date '+%Y-%m-%d %H:%M:%S'").strip()
    out, err, code = dut.run(f"rauc install {remote}", timeout=TIMEOUT)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "installing" and "  0% Installing" in lines and "100% Installing done." in lines
    assert lines[-1] == f"Installing `{remote}` succeeded"
    journal = dut.sh(f"journalctl -u rauc.service --since '{since}' --no-pager", timeout=120)
    assert f"input bundle: {remote}" in journal
    assert dut.sh(f"{GET} LastError").strip() == 's ""'
    assert dut.sh(f"{GET} Progress").strip() == '(isi) 100 "Installing done." 1'
    status = json.loads(dut.sh("rauc status --output-format=json"))
    assert status["compatible"] == "pyrauc-qemux86-64"
    assert dut.leftovers() == ""
    dut.run("efibootmgr --delete-bootnext")


@pytest.fixture
def forwarded_bus(dut: RaucTargetDriver, target: Any) -> Iterator[dict[str, str]]:
    """The environment of a host process on the target's system bus (socket forwarded over SSH)."""
    with target.get_driver("SSHDriver").forward_unix_socket("/run/dbus/system_bus_socket") as port:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
        env.update(DBUS_SYSTEM_BUS_ADDRESS=f"tcp:host=127.0.0.1,port={port}", PYRAUC_SERVICE="always")
        yield env


def _host_pyrauc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyrauc", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def test_pyrauc_client_drives_debian_service(dut: RaucTargetDriver, labhost: Lab, target_rauc: str,
                                             forwarded_bus: dict[str, str]) -> None:
    _needs(target_rauc, C_RAUC_18)
    status = _host_pyrauc(forwarded_bus, "status", "--output-format=json")
    assert status.returncode == 0, status.stderr
    got = json.loads(status.stdout)
    booted = dut.booted_bootname()
    assert got["compatible"] == "pyrauc-qemux86-64" and got["booted"] == booted
    assert {next(iter(s)) for s in got["slots"]} == {"rootfs.0", "rootfs.1"}
    marked = _host_pyrauc(forwarded_bus, "status", "mark-good")
    # "marked slot(s) rootfs.N as good" (current RAUC; rauc 1.8: "marked slot rootfs.N as good")
    assert marked.returncode == 0 and re.match(r"rauc status: marked slot(\(s\))? rootfs\.\d as good$",
                                               marked.stdout), marked.stdout + marked.stderr
    # the bundle path must exist for the client (here) and for the service (there): the same path on both
    image = _image(labhost.work / "dbg.ext4", 16)
    bundle = _bundle(labhost, "dbg", "verity", image)
    dut.sh(f"mkdir -p {bundle.parent}")
    dut.put(bundle, str(bundle))
    try:
        proc = _host_pyrauc(forwarded_bus, "install", str(bundle))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == "installing" and lines[-1] == f"Installing `{bundle}` succeeded"
        assert "100% Installing done." in lines
        assert dut.leftovers() == ""
    finally:
        dut.run(f"rm -rf {bundle.parent}; efibootmgr --delete-bootnext")
