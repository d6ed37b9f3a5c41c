"""The device side of RAUC, rauc 1.8 and pyrauc side by side: each side's ``rauc service`` on a
private bus with the same system.conf (GRUB environment, A/B root slots with a child each, a
read-only slot), the same slot contents and the same bundles, driven by each side's own client.

What must agree: ``rauc status`` in every format (slot by slot: RAUC lists slots in GLib hash order,
which pyrauc does not imitate), the errors of ``status mark-*`` and the LastError of refused
installations. Where current RAUC changed a text since 1.8 (rauc-dbus.md, rauc.md and the seed
device's reference), 1.8's output is mapped to master's before comparing:
"marked slot(s) X as good", quotes in "Target slot for class 'X' of image 'Y' is readonly", and the
status keys added since 1.8 (bundle hash, transaction id) are left out.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.dbus import REPO, BusClient, private_bus
from tests.unit.test_install import Target, make_bundle, write_conf
from tests.unit.test_install import target as target  # the fixture

pytestmark = [pytest.mark.interop, pytest.mark.root]

PYRAUC = [sys.executable, "-m", "pyrauc"]
NEW_KEYS = ("BUNDLE_HASH", "INSTALLED_TRANSACTION")        # status keys of current RAUC, not 1.8


def _setup(t: Target) -> None:
    """Fresh state: slot contents, the GRUB environment (A booted and first, both good), no status."""
    for name, size in (("appfs0.img", 65536), ("appfs1.img", 65536), ("boot0.img", 65536)):
        (t.dir / name).write_bytes(b"\0" * size)
    subprocess.run(["rm", "-rf", str(t.dir / "data"), str(t.dir / "grubenv")], check=True)
    subprocess.run(["grub-editenv", str(t.dir / "grubenv"), "create"], check=True)
    subprocess.run(["grub-editenv", str(t.dir / "grubenv"), "set", "ORDER=A B", "A_OK=1", "B_OK=1", "A_TRY=0",
                    "B_TRY=0"], check=True)


@contextmanager
def _service(t: Target, tool: list[str]) -> Iterator[dict[str, str]]:
    """``tool``'s service on a private bus; yields the environment of its clients."""
    _setup(t)
    with private_bus() as bus:
        client = BusClient(bus.address)
        log = (t.dir / "service.log").open("w")
        service = subprocess.Popen([*tool, "-c", str(t.conf), "service", "--override-boot-slot", "A"],
                                   env=bus.env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            deadline = time.monotonic() + 30
            while not client.has_owner():
                assert service.poll() is None and time.monotonic() < deadline, (t.dir / "service.log").read_text()
                time.sleep(0.05)
            yield bus.env()
        finally:
            client.close()
            service.terminate()
            service.wait(30)
            log.close()


def _run(tool: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*tool, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
                          stdin=subprocess.DEVNULL)


def _status(tool: list[str], env: dict[str, str], *args: str) -> str:
    """``rauc status ARGS``, its timestamps made equal."""
    proc = _run(tool, env, "status", *args)
    assert proc.returncode == 0, proc.stderr
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<time>", proc.stdout)


def _shell(text: str) -> dict[str, dict[str, str]]:
    """``status --output-format=shell`` by slot name: {slot: {KEY: value}} (+ "" for the system)."""
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    names = values["RAUC_SYSTEM_SLOTS"].strip("'").split()
    result: dict[str, dict[str, str]] = {"": {k: v for k, v in values.items() if not re.search(r"_\d+$", k)
                                              and k not in ("RAUC_SYSTEM_SLOTS", "RAUC_SLOTS")}}
    for key, value in values.items():
        m = re.match(r"^(RAUC_SLOT_.*)_(\d+)$", key)
        if m and not m.group(1).endswith(NEW_KEYS):
            result.setdefault(names[int(m.group(2)) - 1], {})[m.group(1)] = value
    return result


def _json(text: str) -> dict[str, object]:
    data = json.loads(text)
    slots = {name: value for entry in data.pop("slots") for name, value in entry.items()}
    for value in slots.values():
        status = value.get("slot_status", {})
        status.get("bundle", {}).pop("hash", None)
        status.get("installed", {}).pop("transaction", None)
    return {**data, "slots": slots}


def _readable(text: str) -> tuple[str, list[str]]:
    """The head and the slot groups (sorted) of the readable status."""
    text = re.sub(r"^ +(hash|transaction)=.*\n", "", text, flags=re.M)       # keys of current RAUC
    head, _, groups = text.partition("=== Slot States ===\n")
    return head, sorted(g for g in groups.split("\n\n") if g.strip())


def _master(text: str) -> str:
    """rauc 1.8's texts in current RAUC's words."""
    text = re.sub(r"marked slot (\S+) as (good|bad)", r"marked slot(s) \1 as \2", text)
    text = re.sub(r"activated slot (\S+)", r"marked slot(s) \1 as active", text)
    text = re.sub(r"(No target slot for|Target slot for) class (\S+) of image (\S+)", r"\1 class '\2' of image '\3'",
                  text)
    return re.sub(r"Hook returned: ([^'\n].*)$", r"Hook returned: '\1'", text, flags=re.M)


def _session(t: Target, tool: list[str], bundles: dict[str, Path]) -> dict[str, object]:
    got: dict[str, object] = {}
    with _service(t, tool) as env:
        for fmt in ("shell", "json", "readable"):
            for detail in ((), ("--detailed",)):
                got[f"status {fmt} {detail}"] = _status(tool, env, f"--output-format={fmt}", *detail)
        for name, bundle in bundles.items():
            proc = _run(tool, env, "install", str(bundle))
            last = [ln for ln in proc.stdout.splitlines() if ln.startswith("LastError: ")]
            got[f"install {name}"] = (proc.returncode, last)
        for fmt in ("shell", "json", "readable"):
            got[f"after {fmt}"] = _status(tool, env, f"--output-format={fmt}", "--detailed")
        for args in (("mark-good",), ("mark-bad", "other"), ("mark-active", "other"), ("mark-good", "rootfs.1"),
                     ("mark-good", "nope"), ("mark-good", "rootfs.9"), ("mark-active", "appfs.1"),
                     ("mark-good", "")):
            proc = _run(tool, env, "status", *args)
            got[f"mark {args}"] = (proc.returncode, proc.stdout, proc.stderr)
        got["grubenv"] = sorted(ln for ln in (t.dir / "grubenv").read_text().splitlines() if "=" in ln)
    return got


def test_device_side_as_rauc_1_8(target: Target, rauc_bin: str) -> None:
    t = target
    write_conf(t, extra_system=f"grubenv={t.dir}/grubenv\n", extra=f"""
[slot.appfs.0]
device={t.dir}/appfs0.img
parent=rootfs.0

[slot.appfs.1]
device={t.dir}/appfs1.img
parent=rootfs.1

[slot.boot.0]
device={t.dir}/boot0.img
readonly=true
""")
    t.conf.write_text(t.conf.read_text().replace("bootloader=noop", "bootloader=grub")
                      .replace("bootname=A\n", "bootname=A\ndescription=Root A\n", 1))
    bundles = {
        "good": make_bundle(t, "good", {"rootfs": ("rootfs.img", b"g" * 8192), "appfs": ("appfs.img", b"a" * 4096)}),
        "wrong-compatible": make_bundle(t, "other", {"rootfs": ("rootfs.img", b"o" * 4096)}, compatible="Other"),
        "class-not-in-system": make_bundle(t, "nosuch", {"nosuch": ("nosuch.img", b"n" * 4096)}),
        "readonly-slot": make_bundle(t, "ro", {"boot": ("boot.img", b"b" * 4096)}),
        "install-check-rejects": make_bundle(
            t, "hook", {"rootfs": ("rootfs.img", b"h" * 4096)},
            manifest_extra="[hooks]\nfilename=hook.sh\nhooks=install-check\n\n",
            files={"hook.sh": '#!/bin/sh\necho "not for this device" >&2\nexit 10\n'}),
    }
    rauc18 = _session(t, [rauc_bin], bundles)
    ours = _session(t, PYRAUC, bundles)
    for key in rauc18:
        theirs, mine = rauc18[key], ours[key]
        if key.startswith(("status shell", "after shell")):
            assert _shell(str(mine)) == _shell(str(theirs)), key
        elif key.startswith(("status json", "after json")):
            assert _json(str(mine)) == _json(str(theirs)), key
        elif key.startswith(("status readable", "after readable")):
            assert _readable(str(mine)) == _readable(str(theirs)), key
        elif key.startswith("install"):
            assert mine == (theirs[0], [_master(x) for x in theirs[1]]), key
        elif key.startswith("mark"):
            assert mine == tuple(_master(x) if isinstance(x, str) else x for x in theirs), key
        else:
            assert mine == theirs, key
