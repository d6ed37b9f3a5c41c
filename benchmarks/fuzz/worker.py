"""One fuzz target under atheris/libFuzzer (started by ``python -m benchmarks.fuzz``).

``python -m benchmarks.fuzz.worker TARGET FIXTURES SCRATCH CRASHES [libFuzzer options] CORPUS...``

pyrauc (and, as ``$PYRAUC_FUZZ_INSTRUMENT`` says, asn1crypto) is imported under atheris'
bytecode instrumentation, so libFuzzer's coverage (``cov``/``ft``) counts its edges. An exception
that is not one of the target's allowed errors (or an allowed error without a message) is a crash:
its input is saved once per distinct crash (exception type and the innermost pyrauc frame) as
``CRASHES/<target>-<id>`` with the traceback beside it in ``<target>-<id>.txt``, one ``CRASH`` line
goes to stderr, and fuzzing goes on. Hangs and memory exhaustion are libFuzzer's (``-timeout``,
``-rss_limit_mb``): it stops and writes the input with its ``-artifact_prefix``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import atheris

# str.startswith/endswith comparisons guide the mutations (atheris' "RegEx" hook is not used:
# it fails on the bytes patterns cryptography compiles)
atheris.enabled_hooks.add("str")
#: comma-separated packages whose bytecode is instrumented for coverage (default pyrauc)
INSTRUMENT_ENV = "PYRAUC_FUZZ_INSTRUMENT"
with atheris.instrument_imports(include=os.environ.get(INSTRUMENT_ENV, "pyrauc").split(",")):
    from benchmarks.fuzz import targets


def crash_id(exc: BaseException) -> str:
    """Exception type and the innermost frame in pyrauc (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/pyrauc/" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__}@{where}"


def make_one_input(target: targets.Target, crashes: Path) -> Callable[[bytes], None]:
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        try:
            targets.attempt(target.allowed, target.run, data)
        except Exception as exc:
            ident = crash_id(exc)
            if ident in seen:
                return
            seen.add(ident)
            name = f"{target.name}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}"
            path = crashes / name
            if not path.exists():
                path.write_bytes(data)
                path.with_suffix(".txt").write_text(f"{ident}\n\n{traceback.format_exc()}")
            print(f"CRASH {ident} {path}", file=sys.stderr, flush=True)
    return one_input


def main(argv: list[str]) -> None:
    name, fixtures, scratch, crashes = argv[1:5]
    target = targets.FACTORIES[name](targets.Fixtures(Path(fixtures)), Path(scratch))
    atheris.Setup([argv[0], *argv[5:]], make_one_input(target, Path(crashes)))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
