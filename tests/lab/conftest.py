"""Lab suite fixtures: results directory, image build + per-run VM files, the booted target.

Run: ``.venv/bin/pytest --lg-env labs/qemu.yaml tests/lab`` (root: the image builder needs it).
Without --lg-env labgrid's ``env`` fixture skips every lab test; host suites still run.
Results go to results/<timestamp>/: junit.xml (unless --junitxml is given), labgrid console logs
(--lg-log, unless given), lab.txt (what was booted and how).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labs import lab, pytest_lab
from tests.lab.target import rauc_flavour, run

# the hooks (results dir, LG_* variables, skips without --lg-env) come from labs.pytest_lab,
# loaded by the top-level conftest

REPO = Path(__file__).resolve().parents[2]


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
    if reporter is not None:
        reporter.write_line(summary)
    yield run_dir
    if qemu:
        lab.cleanup(run_dir)


@pytest.fixture(scope="session")
def strategy(lab_run: Path, target: Any) -> Any:
    """The target in the shell state (console login + SSH)."""
    s = target.get_driver("PyraucLabStrategy")
    s.transition("shell")
    print(f"\nlab: boot to SSH took {s.last_boot_seconds:.1f} s")
    with (lab_run / "boot-times.txt").open("a") as f:
        f.write(f"first boot to SSH: {s.last_boot_seconds:.1f} s\n")
    return s


@pytest.fixture
def ssh(strategy: Any) -> Any:
    """The SSHDriver of a booted target."""
    return strategy.ssh


@pytest.fixture(scope="session")
def target_rauc(strategy: Any) -> str:
    """Which rauc the target runs: 'pyrauc' or 'rauc 1.8' (Debian's C rauc; PYRAUC_LAB_RAUC=debian)."""
    out, err, code = run(strategy.ssh, "rauc --version")
    assert code == 0, out + err
    return rauc_flavour(out + err)
