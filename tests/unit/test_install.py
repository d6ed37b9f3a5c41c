"""Host install tests: plain bundles into file / loop-device slots through ``pyrauc install``.

Needs root (loop devices, squashfs/ext4 mounts). Verity and crypt installs need the device
mapper and run in the QEMU lab. Every test checks that nothing stays mounted or attached.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyrauc import loop, mount, signature, squashfs
from pyrauc.bundle import create_bundle
from pyrauc.keyfile import KeyFile
from tests.helpers.bundles import pyrauc, tar_bytes
from tests.helpers.pki import Pki

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mounts)")]

SUCCESS_STEPS = [
    # current RAUC's weights (>= 1.10, "(B)" since 1.13): only the root step reaches 100
    "  0% Installing",
    "  0% Determining slot states",
    " 10% Determining slot states done.",
    " 10% Checking bundle",
    " 10% Verifying signature",
    " 20% Verifying signature done.",
    " 20% Checking bundle done.",
    " 20% Checking manifest contents",
    " 30% Checking manifest contents done.",
    " 30% Determining target install group",
    " 40% Determining target install group done.",
    " 40% Updating slots",
    " 40% Checking slot rootfs.1 (B)",
    " 46% Checking slot rootfs.1 (B) done.",
    " 46% Copying image to rootfs.1",
    " 99% Copying image to rootfs.1 done.",
    " 99% Updating slots done.",
    "100% Installing done.",
]

SLOT_SIZE = 2 << 20


@dataclass
class Target:
    dir: Path
    conf: Path
    slot0: Path
    slot1: Path            # backing file of the target slot
    slot1_dev: str         # its loop device (the configured device)
    pki: Pki

    def status(self) -> KeyFile:
        return KeyFile.load(self.dir / "data" / "central.raucs")


def write_conf(t: Target, *, extra_system: str = "", slot1: str = "", extra: str = "",
               device1: str | None = None) -> None:
    t.conf.write_text(f"""[system]
compatible=Test Config
bootloader=noop
mountprefix={t.dir}/mnt
data-directory={t.dir}/data
{extra_system}
[keyring]
path={t.pki.keyring}

[slot.rootfs.0]
device={t.slot0}
bootname=A

[slot.rootfs.1]
device={device1 or t.slot1_dev}
bootname=B
{slot1}
{extra}""")


@pytest.fixture
def target(tmp_path: Path, pki: Pki) -> Iterator[Target]:
    slot0, slot1 = tmp_path / "slot0.img", tmp_path / "slot1.img"
    slot0.write_bytes(b"\xaa" * SLOT_SIZE)
    slot1.write_bytes(b"\x00" * SLOT_SIZE)
    with loop.loop_device(slot1, read_only=False) as dev:
        t = Target(tmp_path, tmp_path / "system.conf", slot0, slot1, dev, pki)
        write_conf(t)
        yield t
        assert slot0.read_bytes() == b"\xaa" * SLOT_SIZE, "the booted slot was touched"
        assert_clean(tmp_path)


def _have_dm() -> bool:
    try:
        return "device-mapper" in Path("/proc/misc").read_text()  # targets are autoloaded on use
    except OSError:
        return False


HAVE_DM = _have_dm()
needs_dm = pytest.mark.skipif(not HAVE_DM, reason="no device mapper / dm-verity (runs in the QEMU lab)")


def dm_devices() -> list[str]:
    if not HAVE_DM:
        return []
    out = subprocess.run(["dmsetup", "ls"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith("rauc-")]


def assert_clean(tmp_path: Path) -> None:
    assert not dm_devices(), "dm devices left behind"
    mounts = Path("/proc/self/mounts").read_text()
    assert str(tmp_path) not in mounts, f"left mounted:\n{mounts}"
    attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    leftovers = [ln for ln in attached.splitlines() if str(tmp_path) in ln and "slot1.img" not in ln]
    assert not leftovers, f"left attached: {leftovers}"


def make_bundle(t: Target, name: str, images: dict[str, tuple[str, bytes]], *, manifest_extra: str = "",
                compatible: str = "Test Config", files: dict[str, str] | None = None, fmt: str | None = None,
                ) -> Path:
    content = t.dir / f"content-{name}"
    content.mkdir()
    text = f"[update]\ncompatible={compatible}\nversion=2024.1\n\n{manifest_extra}"
    if fmt is not None:
        text += f"[bundle]\nformat={fmt}\n\n"
    for sclass, (filename, data) in images.items():
        (content / filename).write_bytes(data)
        text += f"\n[image.{sclass}]\nfilename={filename}\n"
    for fname, body in (files or {}).items():
        (content / fname).write_text(body)
        (content / fname).chmod(0o755)
    (content / "manifest.raucm").write_text(text)
    bundle = t.dir / f"{name}.raucb"
    create_bundle(content, bundle, cert=str(t.pki.signer.cert_path), key=str(t.pki.signer.key_path),
                  intermediates=[str(t.pki.intermediate.cert_path)])
    return bundle


def install(t: Target, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return pyrauc("-c", t.conf, "install", "--override-boot-slot", "A", *args, bundle)


#: RAUC's layer on every error of the install handler (after the bundle is mounted)
IE = "Installation error: "


def expect_failure(proc: subprocess.CompletedProcess[str], bundle: Path, message: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert out[-1] == f"LastError: {message}", proc.stdout
    assert out[-2].endswith("% Installing failed."), proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == f"Installing `{bundle}` failed"


def test_install_raw_into_loop_slot(target: Target) -> None:
    data = os.urandom(1 << 20)
    bundle = make_bundle(target, "raw", {"rootfs": ("rootfs.img", data)})
    proc = install(target, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [*SUCCESS_STEPS, f"Installing `{bundle}` succeeded"]
    written = target.slot1.read_bytes()
    assert written[:len(data)] == data and written[len(data):] == b"\0" * (SLOT_SIZE - len(data))
    st = target.status()
    g = "slot.rootfs.1"
    assert st.get_string(g, "sha256") == hashlib.sha256(data).hexdigest()
    assert st.get_string(g, "size") == str(len(data))
    assert st.get_string(g, "status") == "ok"
    assert st.get_string(g, "bundle.compatible") == "Test Config"
    assert st.get_string(g, "bundle.version") == "2024.1"
    assert st.get_string(g, "installed.count") == "1"
    assert st.get_string(g, "installed.timestamp").endswith("Z")
    assert not st.has_group("slot.rootfs.0")


def test_per_slot_status_skips_raw_slots(target: Target) -> None:
    """Without data-directory (per-slot status, RAUC's default) a raw slot has no file system for
    its /slot.raucs: RAUC installs it (and marks it active) without recording a status; an install
    that reported failure after activating the slot would make an update client retry forever."""
    text = target.conf.read_text()
    target.conf.write_text("".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("data-directory=")))
    data = os.urandom(1 << 16)
    bundle = make_bundle(target, "raw", {"rootfs": ("rootfs.img", data)})
    proc = install(target, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == f"Installing `{bundle}` succeeded"
    assert "not mountable" not in proc.stdout + proc.stderr
    assert target.slot1.read_bytes()[:len(data)] == data
    assert not (target.dir / "data").exists()
    marked = pyrauc("-c", target.conf, "status", "--override-boot-slot", "A", "mark-active", "other")
    assert marked.returncode == 0, marked.stdout + marked.stderr


def test_write_slot_refuses_a_mounted_device(target: Target) -> None:
    """A slot device that is in use (here: mounted) is opened exclusively and refused, as RAUC does,
    before a byte is written; unmounted, the same command writes it."""
    subprocess.run(["mkfs.ext4", "-q", "-F", target.slot1_dev], check=True)
    image = target.dir / "new.img"
    image.write_bytes(b"n" * 8192)
    mnt = target.dir / "m"
    mnt.mkdir()
    subprocess.run(["mount", target.slot1_dev, mnt], check=True)
    try:
        proc = pyrauc("-c", target.conf, "write-slot", "rootfs.1", image)
    finally:
        subprocess.run(["umount", mnt], check=True)
    assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
    assert proc.stderr.splitlines()[-1] == f"Opening output device {target.slot1_dev} failed: Device or resource busy"
    assert b"nnnn" not in target.slot1.read_bytes()[:8192]       # (mounting changed the superblock)
    proc = pyrauc("-c", target.conf, "write-slot", "rootfs.1", image)
    assert (proc.returncode, proc.stdout) == (0, "Slot written successfully\n"), proc.stderr
    assert target.slot1.read_bytes()[:8192] == b"n" * 8192


def test_install_same_skip_and_transaction(target: Target) -> None:
    write_conf(target, slot1="install-same=false")
    bundle = make_bundle(target, "raw", {"rootfs": ("rootfs.img", b"r" * 65536)})
    assert install(target, bundle, "--transaction-id", "1234").returncode == 0
    assert target.status().get_string("slot.rootfs.1", "installed.transaction") == "1234"
    target.slot1.write_bytes(b"\0" * SLOT_SIZE)  # the status claims the image is there: skipped
    proc = install(target, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 46% Copying image skipped" in proc.stdout.splitlines()
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE


def test_install_same_rewrites_a_slot_cut_off_by_power_loss(target: Target) -> None:
    """install-same=false skips only a slot whose last install ended with status=ok (RAUC 1.13)."""
    write_conf(target, slot1="install-same=false")
    bundle = make_bundle(target, "raw", {"rootfs": ("rootfs.img", b"r" * 65536)})
    assert install(target, bundle).returncode == 0
    # a later install was cut off after "pending" was written: same digest, half a slot
    central = target.dir / "data" / "central.raucs"
    central.write_text(central.read_text().replace("status=ok", "status=pending"))
    target.slot1.write_bytes(b"r" * 4096 + b"\0" * (SLOT_SIZE - 4096))
    proc = install(target, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 46% Copying image to rootfs.1" in proc.stdout.splitlines()
    assert target.slot1.read_bytes()[:65536] == b"r" * 65536
    assert target.status().get_string("slot.rootfs.1", "status") == "ok"


def test_size_limit_refuses_before_writing(target: Target) -> None:
    write_conf(target, slot1="size-limit=32K")
    bundle = make_bundle(target, "big", {"rootfs": ("rootfs.img", b"x" * 65536)})
    expect_failure(install(target, bundle), bundle,
                   IE + "Image size (65536 bytes) exceeds size limit of slot rootfs.1 (32768 bytes)")
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE
    write_conf(target, slot1="size-limit=64K")
    assert install(target, bundle).returncode == 0


def test_perform_pre_check_catches_a_corrupted_payload_before_mounting(target: Target) -> None:
    """With perform-pre-check the verity payload is checked in user space before anything else."""
    bundle = make_bundle(target, "v", {"rootfs": ("rootfs.img", os.urandom(65536))}, fmt="verity")
    data = bytearray(bundle.read_bytes())
    data[100] ^= 0x01                       # a squashfs byte: the signature (over the manifest) still verifies
    bundle.write_bytes(bytes(data))
    write_conf(target, extra_system="perform-pre-check=true")
    proc = install(target, bundle)
    expect_failure(proc, bundle, "bundle payload is corrupted")
    assert " 20% Checking bundle failed." in proc.stdout.splitlines()
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE


def _ext4_image(path: Path, files: dict[str, bytes]) -> bytes:
    src = path.parent / (path.name + ".d")
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(path), "1M"], check=True)
    return path.read_bytes()


def test_install_ext4_and_tar_with_hooks(target: Target) -> None:
    app0, app1 = target.dir / "app0.img", target.dir / "app1.img"
    app0.write_bytes(b"\0" * (8 << 20))
    app1.write_bytes(b"\0" * (8 << 20))
    log = target.dir / "hooks.log"
    write_conf(target, slot1="type=ext4", extra=f"""
[slot.appfs.0]
device={app0}
type=ext4
parent=rootfs.0

[slot.appfs.1]
device={app1}
type=ext4
parent=rootfs.1
""")
    hook = f"""#!/bin/sh
echo "$1 ${{RAUC_SLOT_NAME:-}} ${{RAUC_SLOT_BOOTNAME:-}} $RAUC_MF_COMPATIBLE" >> {log}
exit 0
"""
    bundle = make_bundle(
        target, "fs",
        {"rootfs": ("rootfs.ext4", _ext4_image(target.dir / "rootfs.ext4", {"os-release": b"ID=test\n"})),
         "appfs": ("appfs.tar", tar_bytes({"app/run.sh": b"#!/bin/sh\n"}))},
        manifest_extra="[hooks]\nfilename=hook.sh\nhooks=install-check\n\n", files={"hook.sh": hook})
    proc = install(target, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = proc.stdout.splitlines()
    assert steps[12:20] == [" 40% Checking slot rootfs.1 (B)", " 43% Checking slot rootfs.1 (B) done.",
                            " 43% Copying image to rootfs.1", " 70% Copying image to rootfs.1 done.",
                            " 70% Checking slot appfs.1", " 73% Checking slot appfs.1 done.",
                            " 73% Copying image to appfs.1", " 99% Copying image to appfs.1 done."], proc.stdout
    assert steps[-1] == f"Installing `{bundle}` succeeded"
    assert log.read_text().splitlines() == ["install-check   Test Config"]
    with mount.mount_slot(target.slot1_dev, "chk", "ext4", mountprefix=str(target.dir / "chk"),
                          read_only=True) as mp:
        assert (mp / "os-release").read_bytes() == b"ID=test\n"
    with mount.mount_slot(str(app1), "chk", "ext4", mountprefix=str(target.dir / "chk"), read_only=True) as mp:
        assert (mp / "app" / "run.sh").read_bytes() == b"#!/bin/sh\n"
    st = target.status()
    assert st.get_string("slot.appfs.1", "status") == "ok"
    assert st.get_string("slot.rootfs.1", "status") == "ok"
    assert app0.read_bytes() == b"\0" * (8 << 20)


def test_wrong_compatible(target: Target) -> None:
    bundle = make_bundle(target, "c", {"rootfs": ("rootfs.img", b"x" * 4096)}, compatible="Other")
    proc = install(target, bundle)
    expect_failure(proc, bundle, IE + "Compatible mismatch: Expected 'Test Config' but bundle manifest has 'Other'")
    assert " 30% Checking manifest contents failed." in proc.stdout.splitlines()
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE
    ok = install(target, bundle, "--ignore-compatible")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_missing_slot_device(target: Target) -> None:
    missing = target.dir / "nonexistent"
    write_conf(target, device1=str(missing))
    bundle = make_bundle(target, "m", {"rootfs": ("rootfs.img", b"x" * 4096)})
    expect_failure(install(target, bundle), bundle,
                   IE + f"Slot device {missing} of slot rootfs.1 does not exist")


def test_image_larger_than_slot(target: Target) -> None:
    bundle = make_bundle(target, "big", {"rootfs": ("rootfs.img", os.urandom(SLOT_SIZE + 4096))})
    proc = install(target, bundle)
    expect_failure(proc, bundle,
                   IE + f"Image size ({SLOT_SIZE + 4096} bytes) exceeds size of slot rootfs.1 ({SLOT_SIZE} bytes)")
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE


def test_readonly_slot(target: Target) -> None:
    write_conf(target, slot1="readonly=true")
    bundle = make_bundle(target, "ro", {"rootfs": ("rootfs.img", b"x" * 4096)})
    expect_failure(install(target, bundle), bundle,
                   IE + "Target slot for class 'rootfs' of image 'rootfs.img' is readonly")
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE


def test_install_check_hook_rejects(target: Target) -> None:
    hook = '#!/bin/sh\nif [ "$1" = install-check ]; then echo "Too old for $RAUC_SYSTEM_COMPATIBLE" >&2; exit 10; fi\n'
    bundle = make_bundle(target, "h", {"rootfs": ("rootfs.img", b"x" * 4096)},
                         manifest_extra="[hooks]\nfilename=hook.sh\nhooks=install-check\n\n",
                         files={"hook.sh": hook})
    expect_failure(install(target, bundle), bundle, IE + "Bundle rejected: Hook returned: 'Too old for Test Config'")
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE


def test_failing_post_install_hook_marks_failed(target: Target) -> None:
    hook = '#!/bin/sh\n[ "$1" = slot-post-install ] && { echo "post failed" >&2; exit 2; }\nexit 0\n'
    bundle = make_bundle(target, "p", {"rootfs": ("rootfs.img", b"x" * 4096)},
                         manifest_extra="[hooks]\nfilename=hook.sh\n\n", files={"hook.sh": hook})
    mf = (target.dir / "content-p" / "manifest.raucm")
    assert mf.exists()
    # add the per-image hook to the manifest and rebuild
    bundle.unlink()
    mf.write_text(mf.read_text().replace("filename=rootfs.img", "filename=rootfs.img\nhooks=post-install"))
    create_bundle(mf.parent, bundle, cert=str(target.pki.signer.cert_path), key=str(target.pki.signer.key_path),
                  intermediates=[str(target.pki.intermediate.cert_path)])
    proc = install(target, bundle)
    expect_failure(proc, bundle,
                   IE + "Failed updating slot rootfs.1: Slot post-install hook failed for rootfs.1: Hook returned "
                   "with exit code 2: post failed")
    assert " 99% Copying image to rootfs.1 failed." in proc.stdout.splitlines()
    assert target.status().get_string("slot.rootfs.1", "status") == "failed"


def test_format_not_allowed(target: Target) -> None:
    write_conf(target, extra_system="bundle-formats=-plain")
    bundle = make_bundle(target, "f", {"rootfs": ("rootfs.img", b"x" * 4096)})
    proc = install(target, bundle)
    expect_failure(proc, bundle, "Bundle format 'plain' not allowed")
    assert " 20% Checking bundle failed." in proc.stdout.splitlines()


def test_untrusted_signature(target: Target) -> None:
    bundle = make_bundle(target, "s", {"rootfs": ("rootfs.img", b"x" * 4096)})
    proc = pyrauc("-c", target.conf, "install", "--override-boot-slot", "A", "--keyring",
                  target.pki.other_keyring, bundle)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1].startswith("LastError: ")
    assert " 20% Verifying signature failed." in proc.stdout.splitlines()


def _custom_backend(target: Target) -> Path:
    log = target.dir / "boot.log"
    script = target.dir / "backend.sh"
    script.write_text(f"""#!/bin/sh
echo "$* $(head -c 4 {target.slot1} | od -An -tx1 | tr -d ' ')" >> {log}
case "$1" in get-primary) echo A;; get-state) echo good;; esac
""")
    script.chmod(0o755)
    target.conf.write_text(target.conf.read_text().replace("bootloader=noop", "bootloader=custom")
                           + f"\n[handlers]\nbootloader-custom-backend={script}\n")
    return log


def test_failed_install_leaves_target_bad(target: Target) -> None:
    pytest.importorskip("pyrauc.bootloaders.custom")
    log = _custom_backend(target)
    hook = '#!/bin/sh\n[ "$1" = slot-post-install ] && exit 1\nexit 0\n'
    content_extra = "[hooks]\nfilename=hook.sh\n\n"
    bundle = make_bundle(target, "cf", {"rootfs": ("rootfs.img", b"\x22" * 4096)}, manifest_extra=content_extra,
                         files={"hook.sh": hook})
    mf = target.dir / "content-cf" / "manifest.raucm"
    bundle.unlink()
    mf.write_text(mf.read_text().replace("filename=rootfs.img", "filename=rootfs.img\nhooks=post-install"))
    create_bundle(mf.parent, bundle, cert=str(target.pki.signer.cert_path), key=str(target.pki.signer.key_path),
                  intermediates=[str(target.pki.intermediate.cert_path)])
    proc = install(target, bundle)
    assert proc.returncode == 1
    calls = [ln for ln in log.read_text().splitlines() if ln.startswith("set-")]
    assert calls == ["set-state B bad 00000000"]


def test_custom_backend_marks_bad_before_writing(target: Target) -> None:
    pytest.importorskip("pyrauc.bootloaders.custom")
    log = _custom_backend(target)
    bundle = make_bundle(target, "cb", {"rootfs": ("rootfs.img", b"\x11" * 4096)})
    proc = install(target, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = [ln for ln in log.read_text().splitlines() if ln.startswith("set-")]
    assert calls == ["set-state B bad 00000000", "set-primary B 11111111"]


def test_mount_command(target: Target) -> None:
    bundle = make_bundle(target, "mnt", {"rootfs": ("rootfs.img", b"x" * 4096)})
    prefix = target.dir / "mp"
    proc = pyrauc("-c", target.conf, "--mount", prefix, "mount", bundle)
    assert proc.returncode == 0, proc.stderr
    mp = prefix / "bundle"
    assert proc.stdout.strip() == f"Mounted bundle at {mp}. Use 'umount {mp}' to unmount."
    assert (mp / "rootfs.img").read_bytes() == b"x" * 4096
    subprocess.run(["umount", str(mp)], check=True)
    assert_clean(target.dir)


def test_library_api_progress(target: Target) -> None:
    from pyrauc.config import load_config
    from pyrauc.install import InstallArgs
    from pyrauc.install import install as do_install
    bundle = make_bundle(target, "lib", {"rootfs": ("rootfs.img", b"l" * 8192)})
    lines: list[str] = []
    do_install(bundle, InstallArgs(override_boot_slot="A"), config=load_config(target.conf), progress=lines.append)
    assert lines == SUCCESS_STEPS
    assert target.slot1.read_bytes()[:8192] == b"l" * 8192


@needs_dm
@pytest.mark.parametrize("fmt", ["verity", "crypt"])
def test_install_verity_crypt(target: Target, fmt: str) -> None:
    data = os.urandom(300_000)
    bundle = make_bundle(target, fmt, {"rootfs": ("rootfs.img", data)}, fmt=fmt)
    proc = install(target, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [*SUCCESS_STEPS, f"Installing `{bundle}` succeeded"]
    assert target.slot1.read_bytes()[:len(data)] == data


@needs_dm
def test_install_corrupted_verity_payload(target: Target) -> None:
    data = os.urandom(300_000)
    bundle = make_bundle(target, "bad", {"rootfs": ("rootfs.img", data)}, fmt="verity")
    raw = bytearray(bundle.read_bytes())
    # flip a byte in the middle of the squashfs (inside the image data, covered by the hash tree)
    raw[150_000] ^= 0xFF
    bundle.write_bytes(bytes(raw))
    proc = install(target, bundle)
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("LastError: ")
    assert target.slot1.read_bytes()[:len(data)] != data


def test_custom_update_handler(target: Target) -> None:
    out = target.dir / "handler.out"
    handler = f"""#!/bin/sh
echo "args=$* slots=$RAUC_SLOTS targets=$RAUC_TARGET_SLOTS" > {out}
echo "target=$(eval echo \\$RAUC_SLOT_NAME_$RAUC_TARGET_SLOTS) boot=$RAUC_CURRENT_BOOTNAME" >> {out}
echo "img=$(basename $RAUC_IMAGE_NAME_2) tx=$RAUC_TRANSACTION_ID" >> {out}
"""
    bundle = make_bundle(target, "ch", {"rootfs": ("rootfs.img", b"x" * 4096)},
                         manifest_extra="[handler]\nfilename=handler.sh\nargs=--from-manifest\n\n",
                         files={"handler.sh": handler})
    proc = install(target, bundle, "--handler-args", "--extra 1", "--transaction-id", "tx-1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 40% Launching update handler" in proc.stdout.splitlines()
    assert out.read_text().splitlines() == ["args=--from-manifest --extra 1 slots=1 2 targets=2",
                                            "target=rootfs.1 boot=A", "img=rootfs.img tx=tx-1"]
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE


def _raw_plain_bundle(t: Target, name: str, manifest: str, build: Callable[[Path], object]) -> Path:
    """A signed plain bundle whose content skipped every check ``rauc bundle`` makes (a hostile
    but validly signed bundle: defence in depth is what stops it at install)."""
    tree = t.dir / f"raw-{name}"
    tree.mkdir()
    (tree / "manifest.raucm").write_text(manifest)
    build(tree)
    out = t.dir / f"{name}.raucb"
    squashfs.mksquashfs(tree, out)
    cms = signature.cms_sign(None, cert=t.pki.signer.cert, key=t.pki.signer.key,
                             intermediates=[t.pki.intermediate.cert], detached_path=out,
                             detached_size=out.stat().st_size)
    with open(out, "ab") as f:
        f.write(cms + len(cms).to_bytes(8, "big"))
    return out


SECRET = b"secret of the target\n" * 100


@pytest.mark.parametrize("target_of_link", ["absolute", "relative"])
def test_image_symlink_out_of_the_bundle_is_refused(target: Target, target_of_link: str) -> None:
    secret = target.dir / "secret.img"
    secret.write_bytes(SECRET)
    link = str(secret) if target_of_link == "absolute" else "../" * 12 + str(secret).lstrip("/")
    digest = hashlib.sha256(SECRET).hexdigest()
    bundle = _raw_plain_bundle(
        target, "link", "[update]\ncompatible=Test Config\nversion=1\n\n[bundle]\nformat=plain\n\n"
        f"[image.rootfs]\nsha256={digest}\nsize={len(SECRET)}\nfilename=rootfs.img\n",
        lambda tree: (tree / "rootfs.img").symlink_to(link))
    expect_failure(install(target, bundle), bundle, IE + "Image file 'rootfs.img' points outside the bundle")
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE


def test_hook_out_of_the_bundle_is_not_run(target: Target) -> None:
    marker = target.dir / "ran"
    evil = target.dir / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    data = b"x" * 4096
    bundle = _raw_plain_bundle(
        target, "hook", "[update]\ncompatible=Test Config\nversion=1\n\n[bundle]\nformat=plain\n\n"
        f"[hooks]\nfilename=../../../../../../../../..{evil}\nhooks=install-check\n\n"
        f"[image.rootfs]\nsha256={hashlib.sha256(data).hexdigest()}\nsize=4096\nfilename=rootfs.img\n",
        lambda tree: (tree / "rootfs.img").write_bytes(data))
    proc = install(target, bundle)
    expect_failure(proc, bundle, IE + f"Hook file '../../../../../../../../..{evil}' points outside the bundle")
    assert not marker.exists()
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE


@pytest.mark.parametrize(("limit", "ok"), [("2024.1.0-rc.1+build.7", True), ("2024.1", True), ("2024.0.9", True),
                                           ("2024.1.1", False), ("2025-rc.1+21000101", False)])
def test_min_bundle_version_is_semver(target: Target, limit: str, ok: bool) -> None:
    """min-bundle-version against the bundle's version=2024.1 with SemVer 2.0 precedence."""
    write_conf(target, extra_system=f"min-bundle-version={limit}")
    bundle = make_bundle(target, "v", {"rootfs": ("rootfs.img", b"v" * 4096)})
    proc = install(target, bundle)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return
    expect_failure(proc, bundle, IE + f"Version mismatch: Expected at least '{limit}' but bundle manifest has '2024.1'")
    assert target.slot1.read_bytes() == b"\0" * SLOT_SIZE
    assert install(target, bundle, "--ignore-version-limit").returncode == 0


def test_every_target_marked_bad_before_the_first_image(target: Target) -> None:
    """The tutorial device's order: efi.0 (no bootname) is written first, rootfs.1 after it. As RAUC,
    rootfs.1 is marked bad before efi.0 gets its first byte: a power cut during the efi.0 copy finds
    the target already bad."""
    pytest.importorskip("pyrauc.bootloaders.custom")
    efi = target.dir / "efi.img"
    efi.write_bytes(b"\x00" * 8192)
    write_conf(target, extra=f"[slot.efi.0]\ndevice={efi}\ntype=raw\n")
    log = _custom_backend(target)
    script = target.dir / "backend.sh"
    script.write_text(script.read_text().replace(f"head -c 4 {target.slot1}", f"head -c 4 {efi}"))
    bundle = make_bundle(target, "two", {"efi": ("efi.img", b"\x33" * 4096),
                                         "rootfs": ("rootfs.img", b"\x11" * 4096)})
    proc = install(target, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines.index(" 40% Checking slot efi.0") < lines.index(" 70% Checking slot rootfs.1 (B)")
    calls = [ln for ln in log.read_text().splitlines() if ln.startswith("set-")]
    assert calls == ["set-state B bad 00000000", "set-primary B 33333333"]
