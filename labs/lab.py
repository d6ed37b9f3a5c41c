"""Per-run preparation of the QEMU lab: image build, qcow2 overlay, NVRAM copy, accelerator choice.

labs/qemu.yaml reads everything run-specific from LG_* variables (labgrid only maps LG_* into
``!template``), so ``export_env()`` must run before labgrid loads the YAML; ``prepare()`` creates the
files before the first power-on. labs/pytest_lab.py and tests/lab/conftest.py call both; outside
pytest use ``python -m labs.lab RUN_DIR`` and eval its output.

Every run directory gets its own disk overlay and NVRAM, both qcow2 so that QEMU can keep the
booted-VM snapshot in them (the strategy's ``restored`` state); several runs (pytest-xdist
workers, or two lab sessions) on one host never share a writable file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from images.common import cache_dir, rauc_variant
from images.common import out_dir as image_out_dir
from images.nvram import OVMF_CODE

REPO = Path(__file__).resolve().parent.parent
__all__ = ["cache_dir", "rauc_variant"]      # the builder's, re-exported for the lab tests and benchmarks


@dataclass(frozen=True)
class Accel:
    """The QEMU accelerator chosen for this host, and why."""

    name: str          # "kvm" or "tcg"
    args: str          # -accel ... (+ -smp)
    cpu: str           # -cpu model
    reason: str

    @property
    def label(self) -> str:
        return f"{self.name.upper()} ({self.reason})"


def _kvm_module() -> str | None:
    for mod in ("kvm_intel", "kvm_amd", "kvm_pvm"):
        if Path("/sys/module", mod).exists():
            return mod
    return None


# The TCG guest CPU: qemu64 plus the crypto and SSE4 extensions of a 2010 x86 (Westmere level). Devices
# that install crypt bundles have AES instructions (AES-NI, ARMv8 CE); without them the guest kernel's
# dm-crypt runs aes-generic, which made the decrypting read path under TCG 1.2x slower (192 MiB crypt
# bundle, 10.5 s vs 12.5 s single reader). No AVX/AVX2: see choose_accel. PYRAUC_LAB_CPU overrides.
TCG_CPU = "qemu64,+aes,+pclmulqdq,+ssse3,+sse4.1,+sse4.2,+popcnt"


def choose_accel() -> Accel:
    """KVM only where a real hypervisor backs /dev/kvm (vmx/svm + kvm_intel/kvm_amd); else TCG.

    OVMF crashes under kvm_pvm (PVM), so that case is TCG too. PYRAUC_LAB_ACCEL=kvm|tcg overrides.
    """
    smp = min(os.cpu_count() or 1, 2)
    # TCG: qemu64, not max. With max, glibc/OpenSSL pick AVX2 code paths that TCG emulates
    # slowly: boot to SSH measured 49.5 s with max, 29.6 s with qemu64 on this 2-core host.
    tcg = Accel("tcg", f"-accel tcg,thread=multi -smp {smp}", os.environ.get("PYRAUC_LAB_CPU") or TCG_CPU, "")
    forced = os.environ.get("PYRAUC_LAB_ACCEL", "").lower()
    if forced == "tcg":
        return Accel(tcg.name, tcg.args, tcg.cpu, "forced by PYRAUC_LAB_ACCEL")
    flags = set()
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    mod = _kvm_module()
    kvm = Accel("kvm", f"-accel kvm -smp {smp}", "host", "")
    if forced == "kvm":
        return Accel(kvm.name, kvm.args, kvm.cpu, "forced by PYRAUC_LAB_ACCEL")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        why = "no usable /dev/kvm"
    elif not flags & {"vmx", "svm"}:
        why = f"kvm not usable: no vmx/svm in /proc/cpuinfo, module {mod or 'unknown'}"
    elif mod not in ("kvm_intel", "kvm_amd"):
        why = f"kvm not usable: /dev/kvm is backed by {mod or 'an unknown module'}"
    else:
        return Accel(kvm.name, kvm.args, kvm.cpu, f"/dev/kvm backed by {mod}")
    return Accel(tcg.name, tcg.args, tcg.cpu, why)


def run_paths(run_dir: Path) -> dict[str, Path]:
    vm = run_dir / "vm"
    return {"vm": vm, "base": vm / "disk.img", "disk": vm / "disk.qcow2", "vars": vm / "OVMF_VARS.qcow2"}


def out_dir() -> Path:
    """The image builder's output directory of the selected variant ($PYRAUC_LAB_RAUC: out/ or out-debian/)."""
    return image_out_dir(cache_dir(), rauc_variant())


def export_env(run_dir: Path) -> dict[str, str]:
    """Set (and return) the LG_* variables labs/qemu.yaml uses; cheap, creates no files."""
    accel = choose_accel()
    paths = run_paths(run_dir)
    values = {
        "LG_LAB_DISK": str(paths["disk"]),
        "LG_LAB_SSH_KEY": str(out_dir() / "id_ed25519"),
        "LG_QEMU_CPU": accel.cpu,
        "LG_QEMU_EXTRA_ARGS": " ".join([
            accel.args,
            "-nodefaults",          # no VGA, CD-ROM or default NIC: nothing for firmware and kernel to probe
            # The NIC: user networking (the strategy adds the SSH forward) on an e1000 without option ROM.
            # OVMF has no driver for it, so the firmware starts no network stack (PXE, HTTP, iSCSI) and
            # writes none of its NVRAM variables at every boot: about 40 % less firmware time under TCG
            # than with virtio-net, the same SSH throughput (the guest's ssh crypto is the limit).
            "-netdev user,id=lan -device e1000,netdev=lan,romfile=",
            f"-drive if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            f"-drive if=pflash,format=qcow2,unit=1,file={paths['vars']}",
        ]),
        "LG_QEMU_ACCEL": accel.name,
    }
    os.environ.update(values)
    return values


def sha256_cached(path: Path) -> str:
    """sha256 of a (large, sparse) image, memoised next to it by size+mtime."""
    st = path.stat()
    memo = path.with_name(path.name + ".sha256.json")
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if memo.exists():
        data = json.loads(memo.read_text())
        if data.get("stamp") == stamp:
            return str(data["sha256"])
    out = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True).stdout
    digest = out.split()[0]
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}")      # concurrent sessions: atomic replace
    tmp.write_text(json.dumps({"stamp": stamp, "sha256": digest}) + "\n")
    tmp.replace(memo)
    return digest


def prepare(run_dir: Path, *, build: bool = True) -> str:
    """Build the image if needed, create the per-run overlay + NVRAM copy; return a one-line summary."""
    cache = cache_dir()
    variant = rauc_variant()
    if build:
        cmd = [sys.executable, "-m", "images", "--cache-dir", str(cache)]
        if variant != "pyrauc":
            cmd += ["--rauc", variant]
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    out = out_dir()
    disk, vars_src = out / "disk.img", out / "OVMF_VARS.fd"
    paths = run_paths(run_dir)
    paths["vm"].mkdir(parents=True, exist_ok=True)
    # Pin this run's base image: a hard link survives the builder replacing out/ (power cycles
    # re-open the backing file). Different file system: fall back to the cache path.
    base = paths["base"]
    base.unlink(missing_ok=True)
    try:
        os.link(disk, base)
    except OSError:
        base = disk
    paths["disk"].unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                    str(paths["disk"])], check=True)
    # qcow2 NVRAM: savevm needs every writable drive to support snapshots (the VM state lands here)
    paths["vars"].unlink(missing_ok=True)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(vars_src), str(paths["vars"])],
                   check=True)
    accel = choose_accel()
    info = json.loads((out / "build.json").read_text())
    summary = (f"lab: booting {disk} (sha256 {sha256_cached(disk)[:16]}, build key {info['key']}, "
               f"kernel {info['kernel']}) under {accel.label}, guest CPU {accel.cpu}; overlay {paths['disk']}")
    if variant != "pyrauc":
        summary += f"; target rauc: {info.get('rauc', variant)} [PYRAUC_LAB_RAUC={variant}]"
    return summary


def cleanup(run_dir: Path) -> None:
    """Drop the per-run overlay (it can grow by the size of installed bundles); keep the logs."""
    for p in run_paths(run_dir).values():
        if p.is_file():
            p.unlink()


def main(argv: list[str]) -> int:
    """``python -m labs.lab RUN_DIR``: prepare RUN_DIR and print shell exports of the LG_* variables."""
    if len(argv) != 1:
        print("usage: python -m labs.lab RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0]).resolve()
    values = export_env(run_dir)
    print(prepare(run_dir), file=sys.stderr)
    for k, v in values.items():
        print(f"export {k}='{v}'")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


