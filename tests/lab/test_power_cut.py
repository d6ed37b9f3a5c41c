"""Power loss at every step of an install (issue 12): the device always boots a good slot.

The install stops for good at a named point (PYRAUC_TEST_PAUSE, :mod:`pyrauc.testpoints`: no
sleeps, no guessing), the test sees ``pyrauc-testpoint: <point>`` in its log and cuts the power
(QEMU quits and starts again, NVRAM kept). After each cut:

* the device boots a slot that holds a complete system (the old one; after the activation the new
  one, which the firmware tries once through BootNext);
* ``rauc status --detailed`` parses, and no slot is marked good whose last install did not end
  with status ``ok``;
* a fresh install of the same bundle succeeds, and the device boots it.

The last case cuts the power while ``rauc status mark-good`` runs after the reboot into the new
slot: the firmware falls back to the old slot, and the new one is not marked good. Only pyrauc has
the pause points, so the module skips on C rauc 1.8.

Each point costs one to two minutes under TCG (the cut, a boot, a fresh install, a reboot), so the
matrix is chosen by ``PYRAUC_POWER_CUT``: ``all`` (the default, and what ``dev/run lab`` runs) or
``ci``, the new slot just activated (the cut that must boot the new slot) and mark-good, which
``dev/run tests`` runs to keep the CI budget (a half-written slot marked bad is what the
tutorial suite's test_09 leaves: a cut in the middle of the copy). The other points then show
as skipped with the reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labs import lab
from tests.helpers.bundles import pyrauc
from tests.helpers.pki import Issued, make_recipients
from tests.lab.devices import EfiDevice
from tests.lab.target import RaucTargetDriver, parse_shell_vars

BUNDLE = "/data/cut.raucb"
LOG = "/run/cut.log"
INSTALL_TIMEOUT = 1800
SKIP_MARK_GOOD = "/data/lab-skip-mark-good"
POINTS = ["checked-bundle", "marked-bad", "copy-10", "copy-50", "copy-90", "copied", "status-write",
          "before-activate", "after-activate"]
#: the points CI runs (PYRAUC_POWER_CUT=ci): the one after which the new slot must boot; the old
#: slot after a cut in the middle of the copy is the tutorial suite's test_09, the old slot after a
#: cut during mark-good is test_power_cut_during_mark_good
CI_POINTS = {"after-activate"}
pytestmark = pytest.mark.lg_feature("uefi-vars")      # the slot switch goes through RAUC's efi backend

#: which slot boots after a cut at each point: the old one until the new one was activated
BOOTS_NEW = {"after-activate"}


class Host:
    def __init__(self, work: Path, update_bundles: Path) -> None:
        pki = lab.cache_dir() / "lab-pki"
        self.device: Issued = make_recipients(work / "devices", 1, "p256", prefix="cut-dev")[0]
        plain = EfiDevice().session_update_bundle(update_bundles, pki / "signer.cert.pem", pki / "signer.key.pem")
        self.bundle = work / "cut-encrypted.raucb"
        pyrauc("encrypt", "--keyring", pki / "ca.cert.pem", "--to", self.device.cert_path, plain, self.bundle,
               check=True)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, lab_run: Path, target_rauc: str, update_bundles: Path) -> Host:
    if target_rauc != "pyrauc":
        pytest.skip("the pause points are pyrauc's (C rauc has none)")
    return Host(tmp_path_factory.mktemp("cut"), update_bundles)


@pytest.fixture(scope="module")
def dut(strategy: Any, target: Any, host: Host) -> Iterator[RaucTargetDriver]:
    dut: RaucTargetDriver = target.get_driver(RaucTargetDriver)
    dut.put_keys(host.device.key_path, host.device.cert_path)
    dut.put(host.bundle, BUNDLE)
    dut.sh("sync")
    yield dut


def _select(point: str) -> None:
    matrix = os.environ.get("PYRAUC_POWER_CUT", "all")
    if matrix not in ("all", "ci"):
        pytest.fail(f"PYRAUC_POWER_CUT must be 'all' or 'ci', not {matrix!r}")
    if matrix == "ci" and point not in CI_POINTS:
        pytest.skip(f"PYRAUC_POWER_CUT=ci: the cut at {point} runs in the full matrix (dev/run lab)")


def _other(slot: str) -> str:
    return "B" if slot == "A" else "A"


def _start_paused_install(dut: RaucTargetDriver, point: str) -> None:
    """The install in the background, in this process (not the service), stopping at POINT."""
    dut.sh(f"rm -f {LOG}; (PYRAUC_SERVICE=never PYRAUC_TEST_PAUSE={point} setsid nohup "
           f"rauc install {BUNDLE} > {LOG} 2>&1 &) ; true")
    _wait_for_point(dut, point)


def _wait_for_point(dut: RaucTargetDriver, point: str) -> None:
    deadline = time.monotonic() + INSTALL_TIMEOUT
    while time.monotonic() < deadline:
        log = dut.sh(f"cat {LOG}")
        if f"pyrauc-testpoint: {point}" in log:
            return
        assert "Installing `" not in log and "rauc status:" not in log, f"ended before {point}:\n{log}"
        time.sleep(1)
    pytest.fail(f"never reached {point}")


def _check_consistent(dut: RaucTargetDriver) -> dict[str, str]:
    """Status files parse; a slot the bootloader calls good holds a completely installed image."""
    out, err, code = dut.run("rauc status --detailed --output-format=shell")
    assert code == 0, out + err
    status = parse_shell_vars(out)
    for n in status.get("RAUC_SLOTS", "").split():
        if status.get(f"RAUC_SLOT_BOOT_STATUS_{n}") == "good":
            assert status.get(f"RAUC_SLOT_STATUS_STATUS_{n}", "ok") in ("ok", ""), status
    return status


def _fresh_install_boots(dut: RaucTargetDriver, strategy: Any) -> None:
    """The same bundle installs into the other slot, and the device boots it."""
    booted = dut.booted_bootname()
    assert booted is not None
    out, err, code = dut.run(f"rauc install {BUNDLE}", timeout=INSTALL_TIMEOUT)
    assert code == 0, out + err
    assert dut.leftovers() == ""
    strategy.reboot()
    assert dut.booted_bootname() == _other(booted)
    assert dut.sh("cat /etc/lab-update-version").strip() == "2"


@pytest.mark.parametrize("point", POINTS)
def test_power_cut_at(point: str, strategy: Any, dut: RaucTargetDriver, record_property: Any) -> None:
    _select(point)
    booted = dut.booted_bootname()
    assert booted in ("A", "B")
    _start_paused_install(dut, point)
    strategy.power_cycle()                        # QEMU quits at this very step: no clean anything
    now = dut.booted_bootname()
    expected = _other(booted) if point in BOOTS_NEW else booted
    print(f"power cut at {point}: booted {booted} before, {now} after")
    record_property("booted_after_cut", now)
    assert now == expected
    _check_consistent(dut)
    _fresh_install_boots(dut, strategy)


def test_power_cut_during_mark_good(strategy: Any, dut: RaucTargetDriver) -> None:
    """The new slot boots once; mark-good is cut off: the firmware falls back, nothing is marked good."""
    booted = dut.booted_bootname()
    assert booted is not None
    dut.sh(f"touch {SKIP_MARK_GOOD} && sync")      # the boot must not mark the new slot good by itself
    try:
        out, err, code = dut.run(f"rauc install {BUNDLE}", timeout=INSTALL_TIMEOUT)
        assert code == 0, out + err
        strategy.reboot()
        assert dut.booted_bootname() == _other(booted)
        dut.sh(f"rm -f {LOG}; (PYRAUC_SERVICE=never PYRAUC_TEST_PAUSE=mark-good setsid nohup "
               f"rauc status mark-good > {LOG} 2>&1 &) ; true")
        _wait_for_point(dut, "mark-good")
        strategy.power_cycle()
        print(f"power cut at mark-good: booted {_other(booted)} before, {dut.booted_bootname()} after")
        assert dut.booted_bootname() == booted     # BootNext was used up, BootOrder never got the new slot
        status = _check_consistent(dut)
        assert status.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == booted
    finally:
        dut.run(f"rm -f {SKIP_MARK_GOOD}; sync")
    _fresh_install_boots(dut, strategy)
