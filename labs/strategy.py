"""labgrid strategy of the pyrauc lab: off / shell, surviving reboots and power cycles.

It binds to protocols (PowerProtocol, ConsoleProtocol) plus ShellDriver, SSHDriver and the
NetworkService, so the same class drives QEMU (QEMUDriver is power + console) and a real board
(SerialDriver + a power driver). With a power driver that can forward ports (QEMU user network),
the strategy forwards a free local port to the guest's sshd and points the NetworkService at it.
"""

from __future__ import annotations

import enum
import socket
import time
from typing import Any

import attr
import pexpect
from labgrid import step, target_factory
from labgrid.driver import ShellDriver, SSHDriver
from labgrid.protocol import ConsoleProtocol, PowerProtocol
from labgrid.resource import NetworkService
from labgrid.strategy import Strategy, StrategyError

# Linux prints this on the console when it resets the machine: proof the old system is gone.
RESTART_MARKER = r"reboot: Restarting system|reboot: Power down|Linux version \d"


class Status(enum.Enum):
    """States of the target."""

    unknown = 0
    off = 1
    shell = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@target_factory.reg_driver
@attr.s(eq=False)
class PyraucLabStrategy(Strategy):
    """Power on, log in on the console and over SSH; reboot and power-cycle without losing track."""

    bindings = {  # noqa: RUF012 (labgrid reads a plain class attribute)
        "power": PowerProtocol,
        "console": ConsoleProtocol,
        "shell": ShellDriver,
        "ssh": SSHDriver,
        "network": NetworkService,
    }

    status: Status = attr.ib(default=Status.unknown)
    reboot_timeout: int = attr.ib(default=300, validator=attr.validators.instance_of(int))
    power_off_seconds: int = attr.ib(default=2, validator=attr.validators.instance_of(int))
    # What the firmware prints first after a reset (OVMF: "BdsDxe: loading ..."), and how long that may
    # take. Unset (a board's env file may leave it out): a hung reset is only noticed after the
    # ShellDriver's login_timeout.
    firmware_marker: str | None = attr.ib(default=None)
    firmware_timeout: int = attr.ib(default=90, validator=attr.validators.instance_of(int))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._forwarded = False
        self.last_boot_seconds: float | None = None
        self.boots = 0
        self.recoveries = 0

    # -- helpers -----------------------------------------------------------------------------
    def _forward_ssh(self) -> None:
        """QEMU user networking: forward a free 127.0.0.1 port to the guest's port 22 (once)."""
        power: Any = self.power
        if self._forwarded or not hasattr(power, "add_port_forward"):
            return
        port = _free_port()
        power.add_port_forward("tcp", "127.0.0.1", port, "", 22)
        self.network.address = "127.0.0.1"
        self.network.port = port
        self._forwarded = True

    def _down(self) -> None:
        self.target.deactivate(self.ssh)
        self.target.deactivate(self.shell)

    def _recover(self, why: str) -> None:
        """The lab watchdog: power-cycle a target whose reset hung, and say so."""
        self.recoveries += 1
        print(f"\nlab: {why}: power-cycling the target", flush=True)
        self.target.deactivate(self.shell)
        self.target.activate(self.power)
        self.power.off()
        time.sleep(self.power_off_seconds)
        self.power.on()
        self._forward_ssh()

    def _up(self, t0: float, recover: bool = True) -> None:
        """Wait for the console login, then for SSH; record the boot time.

        A machine that shows no login within the ShellDriver's login_timeout is power-cycled once
        (what a lab watchdog would do: emulated resets under TCG have been seen to hang silently),
        and the recovery is logged; the firmware's state (BootNext, BootOrder) survives it.
        """
        try:
            self.target.activate(self.shell)
        except pexpect.TIMEOUT:
            if not recover:
                raise
            self._recover(f"no login after {time.monotonic() - t0:.0f} s")
            self.target.activate(self.shell)
        self.target.activate(self.ssh)
        self.last_boot_seconds = time.monotonic() - t0
        self.boots += 1
        self.status = Status.shell

    # -- labgrid API ------------------------------------------------------------------------
    @step(args=["status"])
    def transition(self, status: Status | str, *, step: Any) -> None:
        if not isinstance(status, Status):
            status = Status[status]
        if status == Status.unknown:
            raise StrategyError(f"can not transition to {status}")
        if status == self.status:
            step.skip("nothing to do")
            return
        if status == Status.off:
            self._down()
            self.target.activate(self.power)
            self.power.off()
            self.status = Status.off
        elif status == Status.shell:
            self._down()
            self.target.activate(self.power)
            self.target.activate(self.console)
            self.power.off()
            t0 = time.monotonic()
            self.power.on()
            self._forward_ssh()
            self._up(t0)
        else:
            raise StrategyError(f"no transition found from {self.status} to {status}")

    @step(args=["status"])
    def force(self, status: Status | str) -> None:
        if not isinstance(status, Status):
            status = Status[status]
        self.status = status

    @step(args=["command"])
    def reboot(self, command: str = "systemctl reboot") -> float:
        """Reboot from inside (COMMAND on the console), wait for login + SSH; return seconds."""
        if self.status != Status.shell:
            raise StrategyError("reboot() needs the shell state")
        self.target.deactivate(self.ssh)
        console: Any = self.console
        console.sendline(command)
        self.target.deactivate(self.shell)
        t0 = time.monotonic()
        _, _, match, _ = console.expect(RESTART_MARKER, timeout=self.reboot_timeout)
        reset_seen = match is not None and not match.group(0).startswith(b"Linux")   # not already booting
        if self.firmware_marker and reset_seen:
            try:
                console.expect(self.firmware_marker, timeout=self.firmware_timeout)
            except pexpect.TIMEOUT:
                self._recover(f"no firmware output {self.firmware_timeout} s after the reset")
        self._up(t0)
        return self.last_boot_seconds or 0.0

    @step()
    def power_cycle(self) -> float:
        """Hard power off, wait, power on (no clean shutdown); wait for login + SSH; return seconds."""
        self._down()
        self.target.activate(self.power)
        self.power.off()
        time.sleep(self.power_off_seconds)
        t0 = time.monotonic()
        self.power.on()
        self._forward_ssh()
        self._up(t0)
        return self.last_boot_seconds or 0.0
