"""dm.py table generation and dmsetup usage, and the bundle device stack of mount.py.

No device mapper on the build host: dmsetup is replaced by a recorder, so these tests check the
tables, the argv (the AES key must never be on it) and the teardown order. Real dm-verity /
dm-crypt mounts run in the QEMU lab.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pyrauc import dm, loop, mount
from pyrauc.errors import InstallError

ROOT = "a" * 64
SALT = "0123456789abcdef" * 4
KEY = bytes(range(32))


class Recorder:
    """Stands in for subprocess.run in pyrauc.dm."""

    def __init__(self, fail_on: str | None = None, status: str = "V") -> None:
        self.calls: list[tuple[list[str], str | None, dict[str, str] | None]] = []
        self.fail_on = fail_on
        self.status = status

    def __call__(self, argv: list[str], input: str | None = None, env: dict[str, str] | None = None,
                 **kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), input, env))
        if self.fail_on is not None and argv[1] == self.fail_on:
            return subprocess.CompletedProcess(argv, 1, "", "device-mapper: reload ioctl failed: Invalid argument\n")
        out = ""
        if argv[1] == "info" and "blkdevname" in argv:
            out = "dm-7\n"
        if argv[1] == "status":
            out = f"0 40 verity {self.status}\n"
        return subprocess.CompletedProcess(argv, 0, out, "")


def test_verity_table_matches_rauc_layout() -> None:
    table = dm.verity_table("/dev/loop3", 20480, ROOT.upper(), SALT)
    assert table == f"0 40 verity 1 /dev/loop3 /dev/loop3 4096 4096 5 5 sha256 {ROOT} {SALT}\n"


def test_crypt_table() -> None:
    table = dm.crypt_table("/dev/dm-1", 69632, KEY)
    assert table == f"0 136 crypt aes-cbc-plain64 {KEY.hex()} 0 /dev/dm-1 0 1 sector_size:4096\n"


@pytest.mark.parametrize("size", [0, 4095, 4097, -4096])
def test_tables_reject_unaligned_sizes(size: int) -> None:
    with pytest.raises(dm.DmError, match="multiple of 4096"):
        dm.verity_table("/dev/loop0", size, ROOT, SALT)
    with pytest.raises(dm.DmError, match="multiple of 4096"):
        dm.crypt_table("/dev/loop0", size, KEY)


def test_tables_reject_bad_values() -> None:
    with pytest.raises(dm.DmError, match="root hash"):
        dm.verity_table("/dev/loop0", 8192, "xyz", SALT)
    with pytest.raises(dm.DmError, match="salt"):
        dm.verity_table("/dev/loop0", 8192, ROOT, SALT[:-2])
    with pytest.raises(dm.DmError, match="key length"):
        dm.crypt_table("/dev/loop0", 8192, KEY[:16])


def test_unique_names() -> None:
    a, b = dm.unique_name(dm.VERITY_NAME), dm.unique_name(dm.VERITY_NAME)
    assert a != b and a.startswith("rauc-verity-bundle-") and str(os.getpid()) in a


def test_create_argv_is_readonly_and_keyless() -> None:
    assert dm.create_argv("rauc-crypt-bundle-1") == ["dmsetup", "create", "rauc-crypt-bundle-1", "--readonly",
                                                     "--noudevsync"]


def test_key_only_on_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(dm.subprocess, "run", rec)
    monkeypatch.setattr(dm, "device_path", lambda name: "/dev/dm-7")
    with dm.crypt_device("/dev/dm-3", 8192, KEY) as (name, node):
        assert node == "/dev/dm-7"
        assert name.startswith("rauc-crypt-bundle-")
    create = [c for c in rec.calls if c[0][1] == "create"]
    assert len(create) == 1 and "--readonly" in create[0][0]
    assert KEY.hex() in (create[0][1] or "")
    for argv, _stdin, env in rec.calls:
        assert all(KEY.hex() not in a for a in argv)
        assert env is None or all(KEY.hex() not in v for v in env.values())
    assert KEY.hex() not in "".join(os.environ.values())
    assert [c[0][1] for c in rec.calls][-1] == "remove"


def test_devices_removed_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(dm.subprocess, "run", rec)
    monkeypatch.setattr(dm, "device_path", lambda name: "/dev/dm-7")
    with pytest.raises(RuntimeError), dm.verity_device("/dev/loop1", 8192, ROOT, SALT) as (name, _node):
        raise RuntimeError("boom")
    assert rec.calls[-1][0] == ["dmsetup", "remove", "--noudevsync", name]


def test_busy_device_removal_is_deferred(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Still busy after the retries: a deferred removal (the kernel's, at the last close), no error."""
    calls: list[list[str]] = []

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        if argv[1] == "remove" and "--deferred" not in argv:
            return subprocess.CompletedProcess(argv, 1, "", "device-mapper: remove ioctl failed: Device busy\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(dm.subprocess, "run", run)
    monkeypatch.setattr(dm.time, "sleep", lambda s: None)
    dm.remove("rauc-verity-bundle-x", retries=3)
    name = "rauc-verity-bundle-x"
    assert [c for c in calls if c[1] == "remove"] == [["dmsetup", "remove", "--noudevsync", name]] * 3 + [
        ["dmsetup", "remove", "--noudevsync", "--deferred", name]]
    assert "dm device rauc-verity-bundle-x is busy: removed when its last user closes it" in caplog.messages


def test_create_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dm.subprocess, "run", Recorder(fail_on="create"))
    with pytest.raises(dm.DmError) as exc:
        dm.create("rauc-verity-bundle-x", dm.verity_table("/dev/loop1", 8192, ROOT, SALT))
    assert "\n" not in str(exc.value)
    assert "failed to create dm device rauc-verity-bundle-x" in str(exc.value)


def test_verity_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dm.subprocess, "run", Recorder(status="V"))
    dm.check_verity("x")
    monkeypatch.setattr(dm.subprocess, "run", Recorder(status="C"))
    with pytest.raises(dm.DmError, match="corrupted"):
        dm.check_verity("x")


# --------------------------------------------------------------------------------------------
# the bundle block device stack (mount.py) with fake loop/dm/mount primitives

@dataclass
class FakeManifest:
    verity_hash: str | None = ROOT
    verity_salt: str | None = SALT
    verity_size: int | None = 4096
    crypt_key: bytes | None = None


@dataclass
class FakeBundle:
    path: Path
    size: int
    format: str
    manifest: FakeManifest = field(default_factory=FakeManifest)


class Stack:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: str | None = None) -> None:
        self.events: list[str] = []
        self.tables: list[str] = []
        self.fail = fail
        monkeypatch.setattr(loop, "attach", self.attach)
        monkeypatch.setattr(loop, "detach", lambda dev: self.events.append(f"detach {dev}"))
        monkeypatch.setattr(dm, "create", self.create)
        monkeypatch.setattr(dm, "remove", lambda name, **kw: self.events.append(f"remove {name.split('-')[1]}"))
        monkeypatch.setattr(dm, "check_verity", lambda name: self.events.append("check"))
        monkeypatch.setattr(mount, "mount", self.mount)
        monkeypatch.setattr(mount, "umount", lambda target, **kw: self.events.append("umount"))

    def attach(self, path: Any, *, offset: int = 0, sizelimit: int | None = None, read_only: bool = True) -> str:
        assert read_only and offset == 0
        self.events.append(f"attach {sizelimit}")
        return "/dev/loop9"

    def create(self, name: str, table: str) -> str:
        kind = name.split("-")[1]
        if self.fail == kind:
            raise dm.DmError(f"failed to create dm device {name}")
        self.events.append(f"create {kind}")
        self.tables.append(table)
        return f"/dev/dm-{len(self.tables)}"

    def mount(self, source: str, target: Any, *, fstype: str | None = None, options: Any = ()) -> None:
        if self.fail == "mount":
            raise mount.MountError("failed to mount")
        assert fstype == "squashfs" and "ro" in options
        self.events.append(f"mount {source}")


def test_crypt_stack_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    st = Stack(monkeypatch)
    b = FakeBundle(tmp_path / "b.raucb", 12288, "crypt", FakeManifest(crypt_key=KEY))
    with mount.mount_bundle(b, tmp_path / "mnt") as mp:
        assert mp == tmp_path / "mnt" / "bundle"
        assert mp.is_dir()
    assert st.events == ["attach 12288", "create verity", "create crypt", "mount /dev/dm-2", "umount",
                         "check", "remove crypt", "remove verity", "detach /dev/loop9"]
    assert st.tables[0].startswith("0 16 verity 1 /dev/loop9 /dev/loop9 4096 4096 2 2 sha256 ")
    assert st.tables[1] == f"0 16 crypt aes-cbc-plain64 {KEY.hex()} 0 /dev/dm-1 0 1 sector_size:4096\n"
    assert not (tmp_path / "mnt" / "bundle").exists()


def test_plain_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    st = Stack(monkeypatch)
    b = FakeBundle(tmp_path / "b.raucb", 8192, "plain", FakeManifest(None, None, None))
    with mount.mount_bundle(b, tmp_path):
        pass
    assert st.events == ["attach 8192", "mount /dev/loop9", "umount", "detach /dev/loop9"]


@pytest.mark.parametrize("fail,expected", [
    ("crypt", ["attach 12288", "create verity", "remove verity", "detach /dev/loop9"]),
    ("mount", ["attach 12288", "create verity", "create crypt", "remove crypt", "remove verity",
               "detach /dev/loop9"]),
])
def test_stack_teardown_on_setup_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fail: str,
                                       expected: list[str]) -> None:
    st = Stack(monkeypatch, fail=fail)
    b = FakeBundle(tmp_path / "b.raucb", 12288, "crypt", FakeManifest(crypt_key=KEY))
    with pytest.raises(InstallError), mount.mount_bundle(b, tmp_path):
        pass
    assert st.events == expected
    assert not (tmp_path / "bundle").exists()


def test_stack_teardown_on_body_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    st = Stack(monkeypatch)
    b = FakeBundle(tmp_path / "b.raucb", 12288, "verity")
    with pytest.raises(ValueError), mount.mount_bundle(b, tmp_path):
        raise ValueError("handler failed")
    assert st.events == ["attach 12288", "create verity", "mount /dev/dm-1", "umount", "remove verity",
                         "detach /dev/loop9"]


def test_missing_verity_parameters(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    st = Stack(monkeypatch)
    b = FakeBundle(tmp_path / "b.raucb", 12288, "verity", FakeManifest(verity_hash=None))
    with pytest.raises(mount.MountError, match="missing verity parameters"), mount.mount_bundle(b, tmp_path):
        pass
    with pytest.raises(mount.MountError, match="missing crypt key"), \
            mount.mount_bundle(FakeBundle(tmp_path / "b", 12288, "crypt"), tmp_path):
        pass
    assert st.events == []


def test_device_path_from_sysfs(tmp_path: Path) -> None:
    for n, name in ((0, "other"), (7, "rauc-verity-bundle-1")):
        (tmp_path / f"dm-{n}" / "dm").mkdir(parents=True)
        (tmp_path / f"dm-{n}" / "dm" / "name").write_text(name + "\n")
    devdir = tmp_path / "dev"
    (devdir / "mapper").mkdir(parents=True)
    (devdir / "dm-7").touch()
    assert dm.device_path("rauc-verity-bundle-1", sysfs=str(tmp_path), dev=str(devdir)) == f"{devdir}/dm-7"
    (devdir / "mapper" / "other").touch()
    assert dm.device_path("other", sysfs=str(tmp_path), dev=str(devdir)) == f"{devdir}/mapper/other"
