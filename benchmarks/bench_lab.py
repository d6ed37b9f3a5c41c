"""Lab benchmark: cold image build, cached rebuild after a pyrauc change, boot to SSH.

    sudo .venv/bin/python benchmarks/bench_lab.py [--skip-cold] [--boots N]

* cold: ``python -m images`` into an empty temporary cache (mmdebstrap included);
* rebuild: ``python -m images`` on the warm cache with PYRAUC_IMAGE_SALT set, which redoes exactly
  the stages a pyrauc source change redoes (layer, slots, disk) without editing the tree;
* boot: labgrid power-on -> console login -> SSH ready, under the accelerator labs/lab.py picks.

Numbers are printed against the targets (180 s, 20 s, 35 s); nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGETS = {"cold image build": 180.0, "rebuild after pyrauc change": 20.0, "boot to SSH": 35.0}


def timed_build(cache: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "images", "--cache-dir", str(cache)], cwd=REPO, check=True,
                   env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def boot_to_ssh(boots: int) -> list[float]:
    from labgrid import Environment

    from labs import lab

    (REPO / "results").mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-lab-", dir=REPO / "results"))
    lab.export_env(run_dir)
    print(lab.prepare(run_dir, build=False), flush=True)
    env = Environment(str(REPO / "labs" / "qemu.yaml"))
    target = env.get_target("main")
    assert target is not None
    strategy = target.get_driver("PyraucLabStrategy")
    times = []
    try:
        for i in range(boots):
            if i == 0:
                strategy.transition("shell")
            else:
                strategy.power_cycle()
            assert strategy.last_boot_seconds is not None
            times.append(strategy.last_boot_seconds)
            out = strategy.ssh.run_check("systemd-analyze || true")
            print(f"  boot {i + 1}: {times[-1]:.1f} s; guest: {' '.join(out)[:160]}", flush=True)
        strategy.transition("off")
    finally:
        env.cleanup()
        shutil.rmtree(run_dir, ignore_errors=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold build (about a minute)")
    parser.add_argument("--boots", type=int, default=1, help="boots to measure (2nd+ are power cycles)")
    args = parser.parse_args()
    from labs import lab

    accel = lab.choose_accel()
    print(f"accelerator: {accel.label}")
    results: dict[str, float] = {}
    if not args.skip_cold:
        cold = Path(tempfile.mkdtemp(prefix="bench-images-"))
        try:
            results["cold image build"] = timed_build(cold)
        finally:
            shutil.rmtree(cold, ignore_errors=True)
    cache = lab.cache_dir()
    timed_build(cache)   # make sure the warm cache is complete
    results["rebuild after pyrauc change"] = timed_build(cache, {"PYRAUC_IMAGE_SALT": uuid.uuid4().hex})
    timed_build(cache)   # back to the real image
    times = boot_to_ssh(args.boots)
    results["boot to SSH"] = min(times)
    print(f"\n{'measure':32} {'seconds':>8} {'target':>8}")
    for name, value in results.items():
        target = TARGETS[name]
        verdict = "ok" if value <= target else "OVER"
        print(f"{name:32} {value:8.1f} {target:8.0f}  {verdict}")
    print(f"(accelerator {accel.name}; boot = labgrid power-on -> console login -> SSH)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
