"""``python -m benchmarks.fuzz --minutes N``: fuzz every target, report executions, coverage, crashes.

The N minutes (wall time, set-up included) are shared equally by the targets; ``--jobs`` runs that
many workers at once (each target then gets correspondingly more time). A worker that libFuzzer
stops (a hang past ``--timeout``, memory past ``--rss-limit-mb``, an exception that escaped the
target) is restarted on its corpus while its time lasts. Crashing inputs go to ``--crashes``
(default: ``$PYRAUC_RESULTS_DIR/fuzz-crashes``, else ``results/fuzz-<timestamp>``), each with its
traceback or libFuzzer log beside it, and their paths are printed. The last line is the summary:

    fuzz: 7 targets, 1234567 executions in 1500 s, coverage cov 9876 ft 54321, 0 crashes

Exit status 1 if there was a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("keyfile", "manifest", "config", "status", "cms", "envelope", "bundle")
#: the instrumented packages of each phase of a target (its time is split equally): for ASN.1 inputs
#: a fast phase led by pyrauc's branches, then one that also follows asn1crypto's parser into
#: deeper malformed structures (several times slower); text formats never reach asn1crypto
PHASES: dict[str, tuple[str, ...]] = {"cms": ("pyrauc", "pyrauc,asn1crypto"),
                                      "envelope": ("pyrauc", "pyrauc,asn1crypto")}
STARTUP_S = 1.5        # a worker's start (imports under instrumentation) before libFuzzer's clock runs
MAX_RESTARTS = 5

_STATUS = re.compile(r"^#(\d+)\s+\S+\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/)?", re.M)
_EXECUTED = re.compile(r"^stat::number_of_executed_units:\s*(\d+)", re.M)
_CRASH_LINE = re.compile(r"^CRASH (\S+) (\S+)$", re.M)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Result:
    """What the runs of one target found."""

    name: str
    executions: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    seconds: float = 0.0
    crashes: list[tuple[str, str]] = field(default_factory=list)   # (what, path of the input)

    def add_log(self, log: str) -> None:
        """Fold one worker run's libFuzzer output into the totals."""
        statuses = _STATUS.findall(log)
        executed = _EXECUTED.findall(log)
        if executed:
            self.executions += int(executed[-1])
        elif statuses:
            self.executions += int(statuses[-1][0])
        if statuses:
            _, cov, ft, corp = statuses[-1]
            self.cov, self.ft = max(self.cov, int(cov)), max(self.ft, int(ft))
            self.corpus = max(self.corpus, int(corp or 0))
        known = {path for _, path in self.crashes}       # the same crash found again in a later run
        self.crashes += [(what, path) for what, path in _CRASH_LINE.findall(log) if path not in known]

    def line(self) -> str:
        rate = self.executions / self.seconds if self.seconds else 0.0
        return (f"  {self.name:<9} {self.executions:>10} execs {rate:>8.0f}/s  cov {self.cov:>5}  ft {self.ft:>6}  "
                f"corpus {self.corpus:>5}  crashes {len(self.crashes)}")


@dataclass(frozen=True)
class Options:
    minutes: float
    targets: tuple[str, ...]
    jobs: int
    timeout: int
    rss_limit_mb: int
    seed: int
    quiet: bool


def parse_args(argv: list[str] | None = None) -> tuple[Options, Path | None, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="total wall time (default 1)")
    parser.add_argument("--targets", default=",".join(NAMES), help=f"comma-separated subset of {', '.join(NAMES)}")
    parser.add_argument("--jobs", type=int, default=1, help="workers at once (default 1)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--rss-limit-mb", type=int, default=1024, help="memory limit of a worker (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer's random seed (default 0: random)")
    parser.add_argument("--corpus", type=Path, help="keep the corpora here across runs (default: a temporary dir)")
    parser.add_argument("--crashes", type=Path, help="where crashing inputs go")
    parser.add_argument("--quiet", action="store_true", help="print only crashes and the summary line")
    args = parser.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    unknown = [t for t in targets if t not in NAMES]
    if unknown or not targets:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return (Options(args.minutes, targets, max(1, args.jobs), args.timeout, args.rss_limit_mb, args.seed,
                    args.quiet), args.corpus, args.crashes)


def default_crash_dir() -> Path:
    results = os.environ.get("PYRAUC_RESULTS_DIR")
    if results:
        return Path(results) / "fuzz-crashes"
    return ROOT / "results" / time.strftime("fuzz-%Y%m%dT%H%M%SZ", time.gmtime())


@contextlib.contextmanager
def work_dir(corpus: Path | None) -> Iterator[Path]:
    if corpus is not None:
        corpus.mkdir(parents=True, exist_ok=True)
        yield corpus
        return
    with tempfile.TemporaryDirectory(prefix="pyrauc-fuzz-") as tmp:
        yield Path(tmp)


def run_target(name: str, work: Path, crashes: Path, deadline: float, opts: Options) -> Result:
    """Fuzz ``name`` until ``deadline`` (restarting libFuzzer after a crash it stopped on)."""
    result = Result(name)
    start = time.monotonic()
    phases = PHASES.get(name, ("pyrauc",))
    runs = 0
    for index, instrument in enumerate(phases):
        phase_end = start + (deadline - start) * (index + 1) / len(phases)
        while _run_worker(name, work, crashes, phase_end, instrument, runs, opts, result) and runs < MAX_RESTARTS:
            runs += 1
        runs += 1
    result.seconds = time.monotonic() - start
    return result


def _run_worker(name: str, work: Path, crashes: Path, deadline: float, instrument: str, run: int, opts: Options,
                result: Result) -> bool:
    """One libFuzzer run of ``name`` until ``deadline``; True if it stopped on a crash (and may go on)."""
    seconds = round(deadline - time.monotonic() - STARTUP_S)
    if seconds < 1:
        return False
    scratch = work / "scratch" / name
    scratch.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "benchmarks.fuzz.worker", name, str(work / "fixtures"), str(scratch),
            str(crashes), f"-max_total_time={seconds}", f"-timeout={opts.timeout}",
            f"-rss_limit_mb={opts.rss_limit_mb}", f"-artifact_prefix={crashes}/{name}-",
            "-print_final_stats=1", f"-seed={opts.seed}", str(work / "corpus" / name)]
    log_path = work / "logs" / f"{name}-{run}.log"
    log_path.parent.mkdir(exist_ok=True)
    with open(log_path, "w+") as log:
        try:
            proc = subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYRAUC_FUZZ_INSTRUMENT": instrument},
                                  timeout=seconds + opts.timeout + 60, check=False)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:      # subprocess.run has killed it
            returncode = -9
        log.seek(0)
        text = log.read()
    result.add_log(text)
    if returncode == 0:
        return False
    artifact = _ARTIFACT.search(text)
    if artifact is None:
        saved = crashes / f"{name}-worker-{run}.log"
        shutil.copyfile(log_path, saved)
        result.crashes.append((f"worker exited with {returncode}", str(saved)))
        return False
    shutil.copyfile(log_path, artifact.group(1) + ".log")
    result.crashes.append((_libfuzzer_reason(text), artifact.group(1)))
    return True


def _libfuzzer_reason(log: str) -> str:
    for marker, what in (("ERROR: libFuzzer: timeout", "timeout"), ("out-of-memory", "out of memory"),
                         ("Uncaught Python exception", "uncaught exception")):
        if marker in log:
            return what
    return "libFuzzer crash"


def main(argv: list[str] | None = None) -> int:
    opts, corpus_dir, crash_dir = parse_args(argv)
    started = time.monotonic()
    end = started + opts.minutes * 60
    crashes = crash_dir or default_crash_dir()
    crashes.mkdir(parents=True, exist_ok=True)
    crashes = crashes.resolve()
    sys.path.insert(0, str(ROOT))
    from benchmarks.fuzz import seeds

    with work_dir(corpus_dir) as work:
        fixtures = seeds.write_fixtures(work / "fixtures")
        corpora = seeds.seeds(fixtures)
        for name in opts.targets:
            seeds.write_seeds(work / "corpus" / name, corpora[name])
        if not opts.quiet:
            print(f"fuzz: set-up {time.monotonic() - started:.1f} s; {len(opts.targets)} targets, "
                  f"{opts.jobs} at a time, until {opts.minutes:g} min are over", flush=True)

        slots = min(opts.jobs, len(opts.targets))
        share = (end - time.monotonic()) * slots / len(opts.targets)

        def one(name: str) -> Result:
            turn_start = time.monotonic()
            result = run_target(name, work, crashes, min(turn_start + share, end), opts)
            if not opts.quiet:
                print(result.line(), flush=True)
            return result

        with ThreadPoolExecutor(slots) as pool:
            results = list(pool.map(one, opts.targets))

    total = Result("total", sum(r.executions for r in results), sum(r.cov for r in results),
                   sum(r.ft for r in results), sum(r.corpus for r in results), time.monotonic() - started,
                   [c for r in results for c in r.crashes])
    if not opts.quiet:
        print(total.line())
    for result in results:
        for what, path in result.crashes:
            print(f"fuzz: crash in {result.name}: {what}: {path}")
    if not total.crashes and not any(crashes.iterdir()):
        crashes.rmdir()
    print(f"fuzz: {len(results)} targets, {total.executions} executions in {total.seconds:.0f} s, "
          f"coverage cov {total.cov} ft {total.ft}, {len(total.crashes)} crashes", flush=True)
    return 1 if total.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
