"""Lab suite fixtures: the image build + per-run VM files, the strategy, a pristine target per module.

Run: ``.venv/bin/pytest --lg-env labs/qemu.yaml tests/lab`` (root: the image builder needs it);
``-n 2 --dist loadgroup`` runs the modules on two targets at once. Without --lg-env labgrid's
``env`` fixture skips every lab test; host suites still run. Results go to results/<timestamp>/
(hooks in labs/pytest_lab.py): junit.xml, labgrid console logs, lab.txt (what was booted and how),
summary.txt (per test, per suite, the time budget).

Every test module starts on a pristine target: the session boots once through the firmware and
saves the VM; each further module gets that snapshot loaded (strategy state ``restored``), so no
module sees what another one did. Tests that prove a slot switch, a fallback or a power cut reboot
through the firmware inside the module (``strategy.reboot()``, ``strategy.power_cycle()``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labs import lab, pytest_lab
from tests.lab.target import RaucTargetDriver

# the hooks (results dir, LG_* variables, skips without --lg-env) come from labs.pytest_lab,
# loaded by the top-level conftest


@pytest.fixture(scope="session")
def lab_run(request: pytest.FixtureRequest, env: Any, record_testsuite_property: Any) -> Iterator[Path]:
    """Build the image if needed and create the per-run overlay/NVRAM (QEMU envs only)."""
    run_dir = pytest_lab.run_dir(request.config)
    run_dir.mkdir(parents=True, exist_ok=True)
    qemu = "qemu" in env.get_target_features()
    if qemu:
        t0 = time.monotonic()
        summary = lab.prepare(run_dir)
        summary += f" [prepared in {time.monotonic() - t0:.1f} s]"
    else:
        summary = f"lab: using the board of {env.config_file} (no image build)"
    (run_dir / "lab.txt").write_text(summary + "\n")
    record_testsuite_property("LAB", summary)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and pytest_lab.worker_id() is None:
        reporter.write_line(summary)
    yield run_dir
    if qemu:
        lab.cleanup(run_dir)


@pytest.fixture(scope="session")
def strategy(lab_run: Path, target: Any) -> Any:
    """The lab strategy, its target booted once through the firmware (and, on QEMU, snapshotted)."""
    s = target.get_driver("PyraucLabStrategy")
    s.transition("restored")
    with (lab_run / "lab.txt").open("a") as f:
        f.write(f"first boot to SSH: {s.last_boot_seconds:.1f} s; SSH on port {s.network.port}\n")
    return s


@pytest.fixture(scope="module", autouse=True)
def lab_module(request: pytest.FixtureRequest, strategy: Any) -> Iterator[list[str]]:
    """A pristine target for every module: the snapshot loaded again (the first module: the fresh boot).

    Yields the run-log line saying how the target started, until the module's first test takes it.
    """
    strategy.transition("restored")
    how, seconds = strategy.last_start
    yield [pytest_lab.record_module(request.config, request.node.nodeid, how, seconds)]
    strategy.force("shell")        # used: the next module needs the snapshot again


@pytest.fixture(autouse=True)
def lab_module_note(request: pytest.FixtureRequest, lab_module: list[str]) -> None:
    """The module's first test carries how its target started (run log, junit.xml)."""
    while lab_module:
        request.node.user_properties.append((pytest_lab.LAB_TARGET_PROPERTY, lab_module.pop()))


@pytest.fixture
def dut(strategy: Any, target: Any) -> RaucTargetDriver:
    """The RaucTargetDriver of the booted target (active again after every reboot the strategy does)."""
    drv: RaucTargetDriver = target.get_driver(RaucTargetDriver)
    return drv


@pytest.fixture(scope="session")
def target_rauc(strategy: Any, target: Any) -> str:
    """Which rauc the target runs: 'pyrauc' or 'rauc 1.8' (Debian's C rauc; PYRAUC_LAB_RAUC=debian)."""
    return str(target.get_driver(RaucTargetDriver).rauc_flavour())


@pytest.fixture(scope="session")
def update_bundles(request: pytest.FixtureRequest, lab_run: Path) -> Path:
    """Where bundles built once per test session live (shared by the xdist workers of the session)."""
    return pytest_lab.session_dir(request.config) / "update-bundles"
