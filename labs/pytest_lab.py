"""pytest hooks of the lab suite (re-exported by tests/lab/conftest.py; also loadable with
``-p labs.pytest_lab`` so that ``pytest --lg-env labs/qemu.yaml`` works without naming tests/lab).

* pytest_configure (tryfirst, i.e. before labgrid loads the YAML): results/<timestamp>/ with
  junit.xml and labgrid console logs unless --junitxml / --lg-log are given; the LG_* variables
  of labs/qemu.yaml (labs.lab.export_env).
* pytest_runtest_setup: without --lg-env, skip tests that use the ``strategy`` fixture before
  labgrid's own hook trips over the missing environment.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY

from labs import lab

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = pytest.StashKey[Path]()


def lab_requested(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "lg_env", None) or os.environ.get("LG_ENV"))


def run_dir(config: pytest.Config) -> Path:
    """This session's results directory."""
    return config.stash.get(RUN_DIR, REPO / "results" / "adhoc")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not lab_requested(config) or RUN_DIR in config.stash:
        return
    given = os.environ.get("PYRAUC_RESULTS_DIR")
    d = Path(given) if given else REPO / "results" / time.strftime("%Y%m%d-%H%M%S")
    d.mkdir(parents=True, exist_ok=True)
    config.stash[RUN_DIR] = d
    if getattr(config.option, "xmlpath", None) is None:
        config.option.xmlpath = str(d / "junit.xml")
    if not getattr(config.option, "lg_log", None):
        config.option.lg_log = str(d)
    lab.export_env(d)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if "strategy" in getattr(item, "fixturenames", ()) and item.config.stash.get(LABGRID_ENV_KEY, None) is None:
        pytest.skip("missing environment config (use --lg-env)")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Write summary.txt: every lab test with its outcome and duration, and the total."""
    if RUN_DIR not in config.stash:
        return
    rows: list[tuple[str, str, float]] = []
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "tests/lab/" not in nodeid or getattr(report, "when", "call") not in ("call", "setup"):
                continue
            if report.when == "setup" and outcome == "passed":
                continue
            rows.append((nodeid.split("tests/lab/", 1)[1], outcome, float(getattr(report, "duration", 0.0))))
    if not rows:
        return
    total = sum(r[2] for r in rows)
    lines = [f"{name:<80} {outcome:<8} {secs:8.1f} s" for name, outcome, secs in rows]
    lines.append(f"{'total (test calls)':<80} {'':<8} {total:8.1f} s")
    text = "\n".join(lines) + "\n"
    (run_dir(config) / "summary.txt").write_text(text)
    terminalreporter.write_sep("-", f"lab summary ({run_dir(config) / 'summary.txt'})")
    terminalreporter.write(text)
