"""pytest hooks of the lab (loaded by the top-level conftest; also ``-p labs.pytest_lab``), and the time budget.

* pytest_configure (tryfirst, i.e. before labgrid loads the YAML): results/<timestamp>/ with
  junit.xml and labgrid console logs unless --junitxml / --lg-log are given; the LG_* variables
  of labs/qemu.yaml (labs.lab.export_env). Under pytest-xdist every worker has its own
  subdirectory (results/<timestamp>/gw0/ ...: VM files, console log), so nothing collides; two
  sessions at once get two timestamped directories.
* pytest-xdist (``-n N --dist loadgroup``): each lab module is one work unit (it shares one
  target) and the host suites are one unit (serial in one worker, as without xdist); the units
  with the largest budget are handed out first (LabScheduling, pytest_collection_modifyitems).
* pytest_runtest_setup: without --lg-env, skip tests that use the ``strategy`` fixture before
  labgrid's own hook trips over the missing environment.
* pytest_terminal_summary: summary.txt with every lab test (outcome, duration), each suite's wall
  time and how its target started (booted / restored), against the time budget below. The
  budget is soft: going over prints ``OVER BUDGET`` (and a ``::warning::`` line for CI) but does
  not change the exit status; benchmarks/bench_lab.py tracks the numbers over time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY

from labs import lab

try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:                    # pytest-xdist is optional: without it there is one target
    LoadScopeScheduling = None

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = pytest.StashKey[Path]()
SESSION_DIR = pytest.StashKey[Path]()
MODULES_FILE = "lab-modules.jsonl"
LAB_TARGET_PROPERTY = "lab target"
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")

# Wall-time budget in seconds, per suite and in total, on a 2-core TCG host (issue 14). A lab suite
# is one module of tests/lab; "tests/lab" is the whole lab, "total" this pytest run. Under xdist the
# budgets also order the work: the longest suites start first. A new suite adds its line here.
# (The lab of issue 14 -- smoke, install, tutorial -- had 10 minutes; the power cuts at ten points
# of an install brought about 20 minutes of reboots and installs, which N=2 runs next to the rest.)
BUDGET = {
    "tests/lab/test_smoke.py": 120.0,
    "tests/lab/test_snapshot.py": 60.0,
    "tests/lab/test_sessions.py": 120.0,
    "tests/lab/test_service.py": 90.0,
    "tests/lab/test_cli_forms.py": 90.0,
    "tests/lab/test_target_install.py": 240.0,
    "tests/lab/test_tutorial.py": 480.0,
    "tests/lab/test_power_cut.py": 1200.0,
    # the grub device (labs/qemu-grub.yaml, its own session): its own checks, and the tutorial there
    # (a larger bundle: efi image + the whole rootfs as tar; measured 466-544 s)
    "tests/lab/test_grub_device.py": 240.0,      # two reboots; measured 214 s with the first boot
    "meta-rauc:tests/lab/test_tutorial.py": 600.0,
    "tests/lab/test_streaming.py": 600.0,
    "tests/lab/test_farm.py": 120.0,
    "tests/lab": 1500.0,
    "tests/unit": 600.0,
    "tests/interop": 300.0,
    "tests/farm": 120.0,         # place locking on a labgrid coordinator (no QEMU)
    "total": 1800.0,
}


def lab_requested(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "lg_env", None) or os.environ.get("LG_ENV"))


def worker_id() -> str | None:
    """The pytest-xdist worker this process is ('gw0', ...), None in the controller or without xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def run_dir(config: pytest.Config) -> Path:
    """This process's results directory (the session's, or its worker's subdirectory)."""
    return config.stash.get(RUN_DIR, REPO / "results" / "adhoc")


def session_dir(config: pytest.Config) -> Path:
    """The session's results directory (shared by its xdist workers)."""
    return config.stash.get(SESSION_DIR, REPO / "results" / "adhoc")


def _new_results_dir() -> Path:
    """results/<timestamp>/, or <timestamp>-2 ... when another session started in the same second."""
    base = REPO / "results" / time.strftime("%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100):
        d = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"no free results directory next to {base}")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not lab_requested(config) or RUN_DIR in config.stash:
        return
    worker = worker_id()
    given = os.environ.get("PYRAUC_RESULTS_DIR")
    session = Path(given) if given else _new_results_dir()
    session.mkdir(parents=True, exist_ok=True)
    # the xdist workers start after this hook and inherit the environment: one session directory
    os.environ["PYRAUC_RESULTS_DIR"] = str(session)
    d = session / worker if worker else session
    d.mkdir(parents=True, exist_ok=True)
    config.stash[SESSION_DIR] = session
    config.stash[RUN_DIR] = d
    if getattr(config.option, "xmlpath", None) is None and not worker:
        config.option.xmlpath = str(session / "junit.xml")
    if worker or not getattr(config.option, "lg_log", None):
        config.option.lg_log = str(d)
    # the image layout follows the env file (labs/qemu-grub.yaml: the tutorial's GRUB device); the
    # xdist workers inherit $PYRAUC_LAB_LAYOUT
    lab.select_layout(getattr(config.option, "lg_env", None) or os.environ.get("LG_ENV"))
    lab.export_env(d)
    if not worker:
        config.pluginmanager.register(TargetStartLog(config), "pyrauc-lab-target-start")


def _group(nodeid: str) -> str:
    """The xdist work unit of a test: its lab module (one target), or all host suites together."""
    path = _plain(nodeid).split("::", 1)[0]
    return path if path.startswith("tests/lab/") else "host-suites"


def _weight(group: str) -> float:
    """Expected seconds of a work unit (its budget): the longest ones are handed out first."""
    if group == "host-suites":
        return BUDGET["tests/unit"] + BUDGET["tests/interop"] + BUDGET["tests/farm"]
    return BUDGET.get(group, 120.0)


@pytest.hookimpl(tryfirst=True)        # before xdist's worker turns the marks into nodeid suffixes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # (xdist workers collect; xdist sets option.loadgroup there for --dist loadgroup)
    if getattr(config.option, "loadgroup", False):
        items.sort(key=lambda item: -_weight(_group(item.nodeid)))      # stable: file order within a unit
        for item in items:
            item.add_marker(pytest.mark.xdist_group(_group(item.nodeid)))


if LoadScopeScheduling is not None:
    class LabScheduling(LoadScopeScheduling):
        """--dist loadgroup with the lab's units, taken from the node ids (see :func:`_group`).

        (pytest-xdist 3.8 marks a group by rewriting ``item._nodeid``, which pytest 9 no longer
        has: its own loadgroup scheduling silently splits modules there.)
        """

        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if LoadScopeScheduling is None or config.getoption("dist") != "loadgroup":
        return None
    config.option.loadscopereorder = False      # keep the collection order: longest units first
    return LabScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if "strategy" in getattr(item, "fixturenames", ()) and item.config.stash.get(LABGRID_ENV_KEY, None) is None:
        pytest.skip("missing environment config (use --lg-env)")


def record_module(config: pytest.Config, module: str, how: str, seconds: float) -> str:
    """Note how a lab module's target started ('booted' / 'restored' / 'reused') and how long it took.

    Appended to the session's lab-modules.jsonl (the xdist workers share it); returns the line for
    the run log, which the lab conftest attaches to the module's first test as the user property
    ``lab target`` (pytest_runtest_logreport prints it, also from xdist workers; junit.xml keeps it).
    """
    entry = {"module": module, "start": how, "seconds": round(seconds, 1), "worker": worker_id() or "main"}
    with (session_dir(config) / MODULES_FILE).open("a") as f:
        f.write(json.dumps(entry) + "\n")
    return f"lab: {module}: target {how} in {seconds:.1f} s ({entry['worker']})"


class TargetStartLog:
    """Prints the ``lab target`` line of a module's first test when its setup is reported."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if report.when != "setup" or reporter is None:
            return
        for name, value in report.user_properties:
            if name == LAB_TARGET_PROPERTY:
                reporter.write_line(f"\n{value}")


def _plain(nodeid: str) -> str:
    """NODEID without the ``@group`` suffix pytest-xdist adds under --dist loadgroup."""
    return nodeid.split("@", 1)[0] if nodeid.rfind("@") > nodeid.rfind("]") else nodeid


def _suite(nodeid: str) -> str:
    """tests/lab/test_x.py for lab tests, tests/<dir> for the others."""
    path = _plain(nodeid).split("::", 1)[0]
    if path.startswith("tests/lab/"):
        return path
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else path


def _walls(reports: list[Any]) -> dict[str, float]:
    """Wall time per suite, per lab and in total: first start to last stop of their reports."""
    spans: dict[str, list[float]] = {}
    for r in reports:
        start, stop = getattr(r, "start", None), getattr(r, "stop", None)
        if start is None or stop is None:
            continue
        keys = [_suite(r.nodeid), "total"]
        if r.nodeid.startswith("tests/lab/"):
            keys.append("tests/lab")
        for key in keys:
            span = spans.setdefault(key, [start, stop])
            span[0], span[1] = min(span[0], start), max(span[1], stop)
    return {k: v[1] - v[0] for k, v in spans.items()}


def _module_starts(config: pytest.Config) -> dict[str, dict[str, Any]]:
    path = session_dir(config) / MODULES_FILE
    starts: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            starts[entry["module"]] = entry
    return starts


def budget_for(key: str) -> float | None:
    """The budget of KEY; on the grub device (layout meta-rauc) its own line ``meta-rauc:KEY`` if there is one."""
    layout = lab.lab_layout()
    return BUDGET.get(f"{layout}:{key}", BUDGET.get(key))


def budget_lines(walls: dict[str, float], starts: dict[str, dict[str, Any]]) -> list[str]:
    """One line per suite (lab suites first), then the lab and the total: wall time against the budget."""
    order = sorted(k for k in walls if k.startswith("tests/lab/"))
    order += [k for k in ("tests/lab",) if k in walls]
    order += sorted(k for k in walls if k.startswith("tests/") and not k.startswith("tests/lab"))
    order += ["total"]
    lines = [f"{'suite':<40} {'wall':>8} {'budget':>8}  target start"]
    for key in order:
        wall = walls[key]
        budget = budget_for(key)
        verdict = "" if budget is None else ("ok" if wall <= budget else "OVER BUDGET")
        start = starts.get(key)
        how = f"  {start['start']} in {start['seconds']:.1f} s ({start['worker']})" if start else ""
        budget_text = f"{budget:7.0f}s" if budget is not None else f"{'-':>8}"
        lines.append(f"{key:<40} {wall:7.1f}s {budget_text}  {verdict:<11}{how}".rstrip())
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Write summary.txt: every lab test with its outcome and duration, suite wall times, the budget."""
    if RUN_DIR not in config.stash or worker_id() is not None:
        return
    rows: list[tuple[str, str, float]] = []
    reports: list[Any] = []
    for category, stats in terminalreporter.stats.items():   # "" holds the passed setup/teardown reports
        for report in stats:
            nodeid = _plain(getattr(report, "nodeid", ""))
            if not nodeid.startswith("tests/") or not hasattr(report, "when"):
                continue
            reports.append(report)
            if category not in OUTCOMES or not nodeid.startswith("tests/lab/") or report.when == "teardown":
                continue
            if report.when == "setup" and category == "passed":
                continue
            rows.append((nodeid.split("tests/lab/", 1)[1], category, float(report.duration)))
    walls = _walls(reports)
    if "tests/lab" not in walls:
        return
    total = sum(r[2] for r in rows)
    lines = [f"{name:<80} {outcome:<8} {secs:8.1f} s" for name, outcome, secs in rows]
    lines.append(f"{'total (test calls)':<80} {'':<8} {total:8.1f} s")
    lines.append("")
    lines += budget_lines(walls, _module_starts(config))
    text = "\n".join(lines) + "\n"
    (session_dir(config) / "summary.txt").write_text(text)
    terminalreporter.write_sep("-", f"lab summary and time budget ({session_dir(config) / 'summary.txt'})")
    terminalreporter.write(text)
    for key, wall in walls.items():
        budget = budget_for(key)
        if budget is not None and wall > budget:
            terminalreporter.write_line(f"::warning::{key} took {wall:.0f} s, over its budget of {budget:.0f} s")
