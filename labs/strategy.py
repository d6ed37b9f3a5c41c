"""labgrid strategy of the pyrauc lab: off / shell / restored, surviving reboots and power cycles.

It binds to protocols (PowerProtocol, ConsoleProtocol) plus ShellDriver, SSHDriver and the
NetworkService, so the same class drives QEMU (QEMUDriver is power + console) and a real board
(SerialDriver + a power driver). The QEMUDriver is an optional binding: with it the strategy
forwards a free local port to the guest's sshd (QEMU user networking) and keeps a snapshot of the
booted VM, which makes the ``restored`` state cheap.

States:

* ``off``: powered off.
* ``shell``: booted through the firmware, logged in on the console, SSH up.
* ``restored``: an unused booted target. With QEMU the first transition boots through the
  firmware and saves the running VM (``savevm``: RAM, disk overlay and OVMF VARS, both qcow2);
  every later one loads that snapshot (``loadvm``), sets the guest clock and reconnects SSH, in
  seconds. ``force("shell")`` declares the target used (the lab's per-module fixture does it after
  each module), so the next transition to ``restored`` loads the snapshot again. A board has no
  snapshots: ``restored`` is the booted board as it is.

Drivers active on top of SSH (the RaucTargetDriver) are active again after reboots and restores.
"""

from __future__ import annotations

import enum
import time
from typing import Any

import attr
import pexpect
from labgrid import step, target_factory
from labgrid.binding import BindingState
from labgrid.driver import Driver
from labgrid.strategy import Strategy, StrategyError, never_retry
from labgrid.util.helper import get_free_port

# Linux prints this on the console when it resets the machine: proof the old system is gone.
RESTART_MARKER = r"reboot: Restarting system|reboot: Power down|Linux version \d"
SNAPSHOT = "booted"


class Status(enum.Enum):
    """States of the target."""

    unknown = 0
    off = 1
    shell = 2
    restored = 3


EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"     # EFI_GLOBAL_VARIABLE: BootNext, BootCurrent


@target_factory.reg_driver
@attr.s(eq=False)
class PyraucLabStrategy(Strategy):
    """Power on, log in on the console and over SSH; reboot, power-cycle and restore without losing track."""

    bindings = {  # noqa: RUF012 (labgrid reads a plain class attribute)
        "power": "PowerProtocol",
        "console": "ConsoleProtocol",
        "shell": "ShellDriver",
        "ssh": "SSHDriver",
        "network": "NetworkService",
        "qemu": {"QEMUDriver", None},
    }
    power: Any
    console: Any
    shell: Any
    ssh: Any
    network: Any
    qemu: Any

    status: Status = attr.ib(default=Status.unknown)
    reboot_timeout: int = attr.ib(default=300, validator=attr.validators.instance_of(int))
    # What the firmware prints first after a reset (OVMF: "BdsDxe: loading ..."), and how long that may
    # take. Unset (a board's env file may leave it out): a hung reset is only noticed after the
    # ShellDriver's login_timeout.
    firmware_marker: str | None = attr.ib(default=None)
    firmware_timeout: int = attr.ib(default=90, validator=attr.validators.instance_of(int))
    # How long the first boot's systemd transaction may take before the snapshot is saved.
    settle_timeout: int = attr.ib(default=300, validator=attr.validators.instance_of(int))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.last_boot_seconds: float | None = None      # power-on/reset -> console login + SSH
        self.last_restore_seconds: float | None = None   # loadvm -> SSH
        self.boots = 0
        self.restores = 0
        self.recoveries = 0
        self.ssh_port: int | None = None
        # how the last transition to ``restored`` got its target: ("booted" | "restored" | "reused", seconds)
        self.last_start: tuple[str, float] = ("reused", 0.0)
        self._snapshot = False
        self._resume: list[Driver] = []

    # -- helpers -----------------------------------------------------------------------------
    def _forward_ssh(self) -> None:
        """QEMU user networking: forward a free 127.0.0.1 port to the guest's port 22 (once).

        The QEMUDriver re-adds it at every power-on. A port taken between get_free_port() and
        QEMU's bind (another lab session on this host) is detected and another one is tried.
        """
        if self.qemu is None or self.ssh_port is not None:
            return
        for _ in range(10):
            port = get_free_port()
            self.qemu.add_port_forward("tcp", "127.0.0.1", port, "", 22)
            usernet = self.qemu.monitor_command("human-monitor-command", {"command-line": "info usernet"})
            if f" {port} " in f" {usernet} ".replace("\r", " ").replace("\n", " "):
                self.network.address = "127.0.0.1"
                self.network.port = port
                self.ssh_port = port
                self.logger.info("SSH: 127.0.0.1:%d -> guest port 22", port)
                return
            self.qemu.remove_port_forward("tcp", "127.0.0.1", port)
        raise StrategyError("no free host port for the SSH forward")

    def _ssh_down(self) -> None:
        """Deactivate SSH, remembering the drivers on top of it (they come back with it)."""
        for drv in self.ssh.clients:
            if drv is not self and isinstance(drv, Driver) and drv.state is BindingState.active \
                    and drv not in self._resume:
                self._resume.append(drv)
        self.target.deactivate(self.ssh)

    def _down(self) -> None:
        """Deactivate SSH and the console shell: the system they talk to is about to go."""
        self._ssh_down()
        self.target.deactivate(self.shell)

    def _ssh_up(self) -> None:
        self.target.activate(self.ssh)
        for drv in self._resume:
            self.target.activate(drv)
        self._resume = []

    def _recover(self, why: str) -> None:
        """The lab watchdog: power-cycle a target whose reset hung, and say so."""
        self.recoveries += 1
        self.logger.warning("%s: power-cycling the target", why)
        self.target.deactivate(self.shell)
        self.target.activate(self.power)
        self.power.cycle()

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
        self._ssh_up()
        self.last_boot_seconds = time.monotonic() - t0
        self.boots += 1
        self.status = Status.shell
        self.logger.info("booted to SSH in %.1f s", self.last_boot_seconds)

    def _hmp(self, command: str) -> str:
        """An HMP command through QMP; its output (HMP reports errors as text)."""
        out = self.qemu.monitor_command("human-monitor-command", {"command-line": command})
        return str(out or "").strip()

    def _boot(self) -> None:
        """Power on (or cycle) and boot through the firmware."""
        self._down()
        self.target.activate(self.power)
        self.target.activate(self.console)
        t0 = time.monotonic()
        self.power.cycle()
        self._forward_ssh()
        self._up(t0)

    def _save(self) -> None:
        """savevm of the freshly booted target (SSH is reconnected afterwards; the console stays logged in).

        The snapshot is taken once systemd's boot transaction is done (``is-system-running --wait``):
        SSH answers before late units such as rauc-mark-good.service (a D-Bus activation of
        rauc.service) have finished, and a snapshot caught in the middle of a bus activation hands
        every restored target a pending activation that dbus-daemon never completes.
        """
        t0 = time.monotonic()
        out, _, code = self.ssh.run("systemctl is-system-running --wait", timeout=self.settle_timeout)
        state = " ".join(out).strip() or f"exit {code}"
        self.logger.info("system %s after %.1f s", state, time.monotonic() - t0)
        if state not in ("running", "degraded"):
            raise StrategyError(f"savevm {SNAPSHOT}: the booted system did not settle ({state})")
        self._ssh_down()
        out = self._hmp(f"savevm {SNAPSHOT}")
        if out:
            raise StrategyError(f"savevm {SNAPSHOT}: {out}")
        self._snapshot = True
        self._ssh_up()
        self.logger.info("saved snapshot %r in %.1f s", SNAPSHOT, time.monotonic() - t0)

    def _load(self) -> None:
        """loadvm: RAM, disk and NVRAM as right after the first boot; then the clock and SSH."""
        t0 = time.monotonic()
        self._ssh_down()
        if not self.qemu.status:                 # powered off since: a new QEMU process, same files
            self.target.activate(self.power)
            self.power.on()
        out = self._hmp(f"loadvm {SNAPSHOT}")
        if out:
            raise StrategyError(f"loadvm {SNAPSHOT}: {out}")
        self._ssh_up()
        # the guest clock resumes at the snapshot's time: certificates and timestamps need the real one
        self.ssh.run_check(f"date -u -s @{time.time():.3f} >/dev/null")
        self.last_restore_seconds = time.monotonic() - t0
        self.restores += 1
        self.logger.info("restored snapshot %r to SSH in %.1f s", SNAPSHOT, self.last_restore_seconds)

    # -- labgrid API ------------------------------------------------------------------------
    @never_retry
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
            self._boot()
        elif status == Status.restored:
            t0 = time.monotonic()
            if self.qemu is None:                # a board: the booted board as it is
                how = "reused"
                if self.status != Status.shell:
                    self._boot()
                    how = "booted"
            elif not self._snapshot:
                if self.status == Status.shell:  # used since its boot: not what a snapshot should hold
                    self.transition(Status.off)
                self._boot()
                self._save()
                how = "booted"
            else:
                self._load()
                how = "restored"
            self.last_start = (how, time.monotonic() - t0)
            self.status = Status.restored
        else:
            raise StrategyError(f"no transition found from {self.status} to {status}")

    @never_retry
    @step(args=["status"])
    def force(self, status: Status | str) -> None:
        """Set the state without acting (``--lg-initial-state``, or the lab declaring a target used)."""
        if not isinstance(status, Status):
            status = Status[status]
        self.status = status

    def _efi_var(self, name: str) -> str | None:
        """A 16-bit EFI global variable of the booted target (BootNext, BootCurrent) as "XXXX", or None."""
        out, _, code = self.ssh.run(f"od -An -tx1 /sys/firmware/efi/efivars/{name}-{EFI_GLOBAL} 2>/dev/null",
                                    timeout=30)
        data = " ".join(out).split()      # 4 bytes of attributes, then the value (little endian)
        if code != 0 or len(data) != 6:
            return None
        return (data[5] + data[4]).upper()

    @step(args=["command"])
    def reboot(self, command: str = "systemctl reboot", *, retry: bool = True) -> float:
        """Reboot from inside (COMMAND on the console), wait for login + SSH; return seconds.

        QEMU only: when the watchdog had to power-cycle a hung reset, the firmware may already have
        used up BootNext (OVMF deletes it before it shows anything); a reboot that was to try a new
        slot would then land in the old one for a reason no device has. The strategy notes BootNext
        before the reset and, after such a recovery, sets it again and reboots once more (logged).
        """
        if self.status not in (Status.shell, Status.restored):
            raise StrategyError(f"reboot() needs a booted target, not {self.status.name}")
        boot_next = self._efi_var("BootNext") if self.qemu is not None else None
        recoveries = self.recoveries
        self._down()
        self.target.activate(self.console)
        self.console.sendline(command)
        t0 = time.monotonic()
        _, _, match, _ = self.console.expect(RESTART_MARKER, timeout=self.reboot_timeout)
        reset_seen = match is not None and not match.group(0).startswith(b"Linux")   # not already booting
        if self.firmware_marker and reset_seen:
            try:
                self.console.expect(self.firmware_marker, timeout=self.firmware_timeout)
            except pexpect.TIMEOUT:
                self._recover(f"no firmware output {self.firmware_timeout} s after the reset")
        self._up(t0)
        if retry and self.recoveries > recoveries and boot_next is not None:
            current = self._efi_var("BootCurrent")
            if current != boot_next:
                self.logger.warning("the hung reset used up BootNext %s (Boot%s came up): setting it again "
                                    "and rebooting", boot_next, current)
                self.ssh.run_check(f"efibootmgr --bootnext {boot_next} >/dev/null")
                return self.reboot(command, retry=False)
        return self.last_boot_seconds or 0.0

    @step()
    def power_cycle(self) -> float:
        """Hard power off, wait, power on (no clean shutdown); wait for login + SSH; return seconds."""
        self._down()
        self.target.activate(self.power)
        t0 = time.monotonic()
        self.power.cycle()
        self._forward_ssh()
        self._up(t0)
        return self.last_boot_seconds or 0.0
