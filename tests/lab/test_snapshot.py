"""The booted-target snapshot (strategy state ``restored``): a pristine target, still the same device.

A restore loads the VM saved right after the session's first boot (RAM, disk overlay, NVRAM):
whatever a module changed is gone, the SSH host key is the image's, the guest clock is the host's
and SSH comes in through a host port forward. QEMU only (feature ``snapshots``). Times are
printed, never asserted (benchmarks/bench_lab.py tracks them).
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from labgrid.util.helper import get_free_port

from tests.lab.target import RaucTargetDriver

pytestmark = pytest.mark.lg_feature("snapshots")


def _restore(strategy: Any) -> float:
    strategy.force("shell")                 # declare the target used: the transition loads the snapshot
    strategy.transition("restored")
    how, seconds = strategy.last_start
    assert how == "restored"
    print(f"restore to SSH took {seconds:.1f} s")
    return float(seconds)


def _host_key(port: int) -> list[str]:
    """The ed25519 host key that answers on 127.0.0.1:PORT, as [type, base64]."""
    out = subprocess.run(["ssh-keyscan", "-T", "20", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                         check=True, capture_output=True, text=True).stdout
    lines = [line.split()[1:3] for line in out.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1, out
    return lines[0]


def test_restore_forgets_what_a_module_did(strategy: Any, dut: RaucTargetDriver) -> None:
    dut.sh("echo dirty > /data/lab-dirty && echo dirty > /root/lab-dirty && efibootmgr --bootnext "
           f"{dut.boot_entry('B')} && sync")
    _restore(strategy)
    assert dut.run("test -e /data/lab-dirty")[2] == 1
    assert dut.run("test -e /root/lab-dirty")[2] == 1
    assert dut.efi_state().boot_next is None            # the NVRAM is part of the snapshot
    assert dut.booted_bootname() == "A"


def test_restore_keeps_the_host_key_and_forwards_ssh(strategy: Any, dut: RaucTargetDriver) -> None:
    on_disk = dut.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
    assert _host_key(strategy.network.port) == on_disk
    _restore(strategy)
    assert _host_key(strategy.network.port) == on_disk
    # a forward added after the restore reaches the same sshd
    port = get_free_port()
    strategy.qemu.add_port_forward("tcp", "127.0.0.1", port, "", 22)
    try:
        assert _host_key(port) == on_disk
    finally:
        strategy.qemu.remove_port_forward("tcp", "127.0.0.1", port)


def test_restore_sets_the_clock(strategy: Any, dut: RaucTargetDriver) -> None:
    time.sleep(5)                           # the snapshot is older than that: its clock would be behind
    _restore(strategy)
    guest = float(dut.sh("date +%s.%N"))
    host = time.time()
    assert abs(guest - host) < 3, f"guest clock {guest:.1f}, host {host:.1f}"


def test_restore_after_power_off(strategy: Any, dut: RaucTargetDriver) -> None:
    """The snapshot lives in the qcow2 files, not in the QEMU process: a new process restores it too."""
    dut.sh("echo dirty > /data/lab-dirty && sync")
    strategy.transition("off")
    strategy.transition("restored")
    how, seconds = strategy.last_start
    assert how == "restored"
    print(f"restore from a powered-off target took {seconds:.1f} s")
    assert dut.run("test -e /data/lab-dirty")[2] == 1
    assert dut.booted_bootname() == "A"
