"""Lab benchmark: image builds, boot and restore to SSH, the whole lab on 1 and 2 targets; before/after.

    sudo .venv/bin/python benchmarks/bench_lab.py [--before REV] [--skip-cold] [--skip-lab]
                                                  [--boots N] [--restores N] [--workers 1,2]

For the working tree (and, with ``--before REV``, for a ``git archive`` of REV in a temporary
directory, measured the same way in the same run) it reports:

* cold image build: ``python -m images`` into an empty cache (mmdebstrap included);
* rebuild after a pyrauc change: the same cache again with PYRAUC_IMAGE_SALT set, which redoes
  exactly the stages a pyrauc source change redoes (layer, slots, disk) without editing the tree;
* first boot to SSH: labgrid power-on -> firmware -> console login -> SSH (best of --boots);
* restore to SSH: the strategy's ``restored`` state, loadvm -> clock -> SSH (median of
  --restores; "n/a" where the tree has no snapshots);
* whole lab: ``pytest --lg-env labs/qemu.yaml tests/lab`` wall time (``--suites``: only those
  modules), with pytest-xdist ``-n N --dist loadgroup`` for N > 1 ("n/a" where the tree has no
  parallel targets).

Each tree uses its own temporary image cache, so nothing here touches images/cache. Numbers are
printed against the budget of issue 14; nothing is asserted. ``--json FILE`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

TARGETS = {"cold image build": 180.0, "rebuild after pyrauc change": 20.0, "first boot to SSH": 25.0,
           "restore to SSH": 5.0, "whole lab N=1": 600.0, "whole lab N=2": 600.0}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LG_", "PYRAUC_"))}
    env.update(extra)
    return env


def timed_build(tree: Path, cache: Path, salt: str = "") -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "images", "--cache-dir", str(cache)], cwd=tree, check=True,
                   env=_clean_env(PYRAUC_IMAGE_SALT=salt), stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def measure_target(tree: Path, boots: int, restores: int) -> dict[str, Any]:
    """In THIS process (started by run_target with the tree on sys.path): boots, then restores."""
    from labgrid import Environment

    from labs import lab

    run_dir = Path(tempfile.mkdtemp(prefix="bench-lab-", dir=tree / "results"))
    lab.export_env(run_dir)
    print(lab.prepare(run_dir, build=False), file=sys.stderr, flush=True)
    env = Environment(str(tree / "labs" / "qemu.yaml"))
    target = env.get_target("main")
    assert target is not None
    strategy = target.get_driver("PyraucLabStrategy")
    result: dict[str, Any] = {"boots": [], "restores": [], "guest": ""}
    try:
        for i in range(boots):
            if i == 0:
                strategy.transition("shell")
            else:
                strategy.power_cycle()
            result["boots"].append(strategy.last_boot_seconds)
            result["guest"] = " ".join(strategy.ssh.run_check("systemd-analyze || true"))
            print(f"  boot {i + 1}: {strategy.last_boot_seconds:.1f} s; guest: {result['guest'][:150]}",
                  file=sys.stderr, flush=True)
        if restores and "restored" in strategy.status.__class__.__members__:
            strategy.transition("off")
            strategy.transition("restored")          # boot + savevm
            for i in range(restores):
                strategy.force("shell")
                strategy.transition("restored")
                result["restores"].append(strategy.last_restore_seconds)
                print(f"  restore {i + 1}: {strategy.last_restore_seconds:.1f} s", file=sys.stderr, flush=True)
        strategy.transition("off")
    finally:
        env.cleanup()
        lab.cleanup(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def run_target(tree: Path, cache: Path, boots: int, restores: int) -> dict[str, Any]:
    """measure_target in a fresh process whose imports come from TREE (labgrid registers drivers once)."""
    code = (f"import sys, json; sys.path.insert(0, {str(tree)!r}); sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
            f"import bench_lab; from pathlib import Path; "
            f"print(json.dumps(bench_lab.measure_target(Path({str(tree)!r}), {boots}, {restores})))")
    (tree / "results").mkdir(exist_ok=True)
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, text=True, stdout=subprocess.PIPE,
                         env=_clean_env(PYRAUC_IMAGE_CACHE=str(cache)))
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def supports_workers(tree: Path) -> bool:
    """Parallel targets (issue 14): the tree's lab plugin puts every xdist worker in its own directory."""
    plugin = tree / "labs" / "pytest_lab.py"
    return plugin.exists() and "PYTEST_XDIST_WORKER" in plugin.read_text()


def whole_lab(tree: Path, cache: Path, workers: int, suites: list[str]) -> dict[str, Any]:
    """pytest --lg-env labs/qemu.yaml tests/lab[/SUITES] (with -n WORKERS); wall time and the junit counts."""
    results = Path(tempfile.mkdtemp(prefix=f"bench-lab-n{workers}-", dir=tree / "results"))
    paths = [f"tests/lab/{s}" for s in suites] or ["tests/lab"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--lg-env", "labs/qemu.yaml",
           f"--junitxml={results / 'junit.xml'}", *paths]
    if workers > 1:
        cmd[4:4] = ["-n", str(workers), "--dist", "loadgroup"]
    print(f"  {' '.join(cmd[2:])} (results {results})", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tree, env=_clean_env(PYRAUC_IMAGE_CACHE=str(cache), PYRAUC_RESULTS_DIR=str(results)),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.monotonic() - t0
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    junit = results / "junit.xml"
    if junit.exists():
        root = ET.parse(junit).getroot()
        for suite in root.iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, "0"))
    if proc.returncode != 0:
        print(proc.stdout[-3000:], file=sys.stderr)
    summary = results / "summary.txt"
    if summary.exists():
        print(summary.read_text(), file=sys.stderr)
    print(f"  -> {wall:.0f} s, exit {proc.returncode}, {counts}", file=sys.stderr, flush=True)
    return {"seconds": wall, "exit": proc.returncode, **counts}


def measure_tree(label: str, tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    print(f"== {label}: {tree}", file=sys.stderr, flush=True)
    cache = Path(tempfile.mkdtemp(prefix="bench-images-"))
    results: dict[str, Any] = {}
    try:
        if args.skip_cold:          # still a build, but into this tree's temporary cache: not reported
            timed_build(tree, cache)
        else:
            results["cold image build"] = timed_build(tree, cache)
        results["rebuild after pyrauc change"] = timed_build(tree, cache, uuid.uuid4().hex)
        target = run_target(tree, cache, args.boots, args.restores)
        results["first boot to SSH"] = min(target["boots"])
        results["restore to SSH"] = statistics.median(target["restores"]) if target["restores"] else None
        results["guest"] = target["guest"]
        if not args.skip_lab:
            for n in args.workers:
                if n > 1 and not supports_workers(tree):
                    results[f"whole lab N={n}"] = None
                    continue
                run = whole_lab(tree, cache, n, args.suites)
                results[f"whole lab N={n}"] = run["seconds"]
                results[f"whole lab N={n} junit"] = run
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return results


def _fmt(value: Any) -> str:
    return f"{value:8.1f}" if isinstance(value, (int, float)) else f"{'n/a':>8}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="REV", help="also measure git revision REV (e.g. the last release)")
    parser.add_argument("--skip-cold", action="store_true", help="do not report the cold build")
    parser.add_argument("--skip-lab", action="store_true", help="skip the whole-lab runs (the long part)")
    parser.add_argument("--boots", type=int, default=2, help="boots to measure (2nd+ are power cycles)")
    parser.add_argument("--restores", type=int, default=3, help="restores to measure")
    parser.add_argument("--workers", default="1,2", help="whole-lab runs: comma-separated pytest-xdist N")
    parser.add_argument("--suites", default="", help="whole-lab runs: only these comma-separated modules of "
                        "tests/lab (e.g. test_smoke.py,test_target_install.py,test_tutorial.py: the suites both "
                        "revisions have); default all")
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    args = parser.parse_args()
    args.workers = [int(n) for n in args.workers.split(",") if n]
    args.suites = [x for x in args.suites.split(",") if x]
    sys.path.insert(0, str(REPO))
    from labs import lab

    accel = lab.choose_accel()
    print(f"accelerator: {accel.label}; {os.cpu_count()} host CPUs", flush=True)
    columns: dict[str, dict[str, Any]] = {}
    tmp_tree: Path | None = None
    try:
        if args.before:
            tmp_tree = Path(tempfile.mkdtemp(prefix="bench-before-"))
            archive = subprocess.run(["git", "archive", args.before], cwd=REPO, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tmp_tree)], input=archive, check=True)
            columns[f"before ({args.before})"] = measure_tree("before", tmp_tree, args)
        columns["now"] = measure_tree("now", REPO, args)
    finally:
        if tmp_tree is not None:
            shutil.rmtree(tmp_tree, ignore_errors=True)
    names = [k for k in TARGETS if any(k in c for c in columns.values())]
    header = f"{'measure':30}" + "".join(f" {name[:18]:>18}" for name in columns) + f" {'target':>8}"
    print("\n" + header)
    for name in names:
        cells = "".join(f" {_fmt(c.get(name)):>18}" for c in columns.values())
        last = list(columns.values())[-1].get(name)
        verdict = "" if not isinstance(last, (int, float)) else ("ok" if last <= TARGETS[name] else "OVER")
        print(f"{name:30}{cells} {TARGETS[name]:8.0f}  {verdict}")
    for label, c in columns.items():
        for n in args.workers:
            run = c.get(f"whole lab N={n} junit")
            if run:
                print(f"{label}, lab N={n}: exit {run['exit']}, {run['tests']} tests, {run['failures']} failures, "
                      f"{run['errors']} errors, {run['skipped']} skipped")
        print(f"{label}, guest: {c.get('guest', '')[:160]}")
    print(f"(accelerator {accel.name}; seconds; boot = power-on -> console login -> SSH; restore = loadvm -> SSH)")
    if args.json:
        args.json.write_text(json.dumps(columns, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
