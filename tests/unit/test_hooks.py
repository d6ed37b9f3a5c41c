"""hooks.py: hook exit codes and messages, environment construction, system-info parsing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pyrauc import handlers, hooks
from pyrauc.manifest import Image, Manifest
from tests.helpers.pki import Pki


def script(tmp_path: Path, body: str, name: str = "hook.sh") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_hook_success_gets_action_and_env(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The hook's stdout goes where this process's goes (RAUC: the terminal or the journal)."""
    hook = script(tmp_path, 'echo "$1 $RAUC_MF_COMPATIBLE $HOME_MARK"\n')
    hooks.run_hook(hook, "install-check", {"RAUC_MF_COMPATIBLE": "Test Config", "HOME_MARK": "x"})
    assert capfd.readouterr().out == "install-check Test Config x\n"


def test_hook_rejects_with_exit_10(tmp_path: Path) -> None:
    hook = script(tmp_path, 'echo "some noise" >&2\necho "Version too old" >&2\nexit 10\n')
    with pytest.raises(hooks.HookError) as exc:
        hooks.run_hook(hook, "install-check", {})
    assert str(exc.value) == "Hook returned: 'Version too old'"


def test_hook_other_exit_code(tmp_path: Path) -> None:
    hook = script(tmp_path, 'echo "disk full" >&2\nexit 3\n')
    with pytest.raises(hooks.HookError, match=r"^Hook returned with exit code 3: disk full$"):
        hooks.run_hook(hook, "slot-post-install", {})
    quiet = script(tmp_path, "exit 4\n", "quiet.sh")
    with pytest.raises(hooks.HookError, match=r"^Hook returned with exit code 4$"):
        hooks.run_hook(quiet, "slot-post-install", {})


def test_hook_not_executable(tmp_path: Path) -> None:
    path = tmp_path / "hook.sh"
    path.write_text("#!/bin/sh\n")
    with pytest.raises(hooks.HookError, match=r"^Failed to start .*hook.sh: Permission denied$"):
        hooks.run_hook(path, "install-check", {})


def test_handler_error(tmp_path: Path) -> None:
    h = script(tmp_path, 'echo "$RAUC_SLOTS|$1" \necho "nope" >&2\nexit 1\n')
    with pytest.raises(hooks.HookError, match=r"^Pre-install handler error: nope$"):
        hooks.run_handler(h, {"RAUC_SLOTS": "1 2"}, ["a"], what="Pre-install handler")


def test_system_info(tmp_path: Path) -> None:
    h = script(tmp_path, 'echo RAUC_SYSTEM_SERIAL=1234\necho garbage\necho OTHER=1\necho RAUC_SYSTEM_VARIANT=v2\n')
    info = hooks.run_system_info(h, {})
    assert info == {"RAUC_SYSTEM_SERIAL": "1234", "RAUC_SYSTEM_VARIANT": "v2"}
    env = hooks.merge_env({"RAUC_SYSTEM_VARIANT": "v1"}, info)
    assert env == {"RAUC_SYSTEM_VARIANT": "v1", "RAUC_SYSTEM_SERIAL": "1234"}


def test_manifest_env_and_meta() -> None:
    mf = Manifest(compatible="Test Config", version="1.2", build="b7",
                  meta={"version": {"channel": "beta", "release-date": "2024"}, "bad label!": {"x": "y"}})
    env = hooks.manifest_env(mf)
    assert env["RAUC_MF_COMPATIBLE"] == "Test Config"
    assert env["RAUC_MF_VERSION"] == "1.2"
    assert env["RAUC_MF_BUILD"] == "b7"
    assert env["RAUC_META_VERSION_CHANNEL"] == "beta"
    assert env["RAUC_META_VERSION_RELEASE_DATE"] == "2024"
    assert not any("BAD" in k for k in env)


def test_spki_hashes(pki: Pki) -> None:
    cert = x509.load_pem_x509_certificate(pki.signer.cert_path.read_bytes())
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    expected = hashlib.sha256(der).hexdigest().upper()
    got = hooks.spki_hashes([cert, cert])
    assert got.split(" ")[0].replace(":", "") == expected and len(got.split(" ")) == 2


def test_slot_and_image_env() -> None:
    env = hooks.slot_env(name="rootfs.1", sclass="rootfs", slot_type="ext4", device="/dev/sda3",
                         state="inactive", bootname="B", parent=None, mount_point="/mnt/rauc/rootfs.1")
    assert env == {"RAUC_SLOT_NAME": "rootfs.1", "RAUC_SLOT_STATE": "inactive", "RAUC_SLOT_CLASS": "rootfs",
                   "RAUC_SLOT_TYPE": "ext4", "RAUC_SLOT_DEVICE": "/dev/sda3", "RAUC_SLOT_BOOTNAME": "B",
                   "RAUC_SLOT_PARENT": "", "RAUC_SLOT_MOUNT_POINT": "/mnt/rauc/rootfs.1"}
    env = hooks.image_env(path="/mnt/rauc/bundle/rootfs.ext4", size=10, digest="ab", sclass="rootfs")
    assert env["RAUC_IMAGE_NAME"] == "/mnt/rauc/bundle/rootfs.ext4" and env["RAUC_IMAGE_SIZE"] == "10"


def test_handler_env_numbering() -> None:
    slots = [handlers.SlotInfo("appfs.0", "appfs", "/dev/a0", parent="rootfs.0"),
             handlers.SlotInfo("appfs.1", "appfs", "/dev/a1", parent="rootfs.1"),
             handlers.SlotInfo("rootfs.0", "rootfs", "/dev/r0", bootname="A"),
             handlers.SlotInfo("rootfs.1", "rootfs", "/dev/r1", bootname="B")]
    job = handlers.ImageJob(Image(slotclass="rootfs", filename="r.img", sha256="cd"), Path("/b/r.img"),
                            slots[3])
    env = handlers.handler_env(base={"RAUC_MOUNT_PREFIX": "/mnt/rauc"}, slots=slots,
                               targets={"rootfs.1": job})
    assert env["RAUC_SLOTS"] == "1 2 3 4"
    assert env["RAUC_TARGET_SLOTS"] == "4"
    assert env["RAUC_SLOT_NAME_4"] == "rootfs.1" and env["RAUC_SLOT_BOOTNAME_4"] == "B"
    assert env["RAUC_SLOT_PARENT_2"] == "rootfs.1"
    assert env["RAUC_IMAGE_NAME_4"] == "/b/r.img" and env["RAUC_IMAGE_DIGEST_4"] == "cd"
    assert env["RAUC_IMAGE_CLASS_4"] == "rootfs" and "RAUC_IMAGE_NAME_3" not in env
