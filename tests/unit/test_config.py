"""Tests for pyrauc.config (system.conf parsing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrauc.config import (
    PER_SLOT,
    load_config,
    parse_bundle_formats,
    parse_config,
    parse_override,
    parse_size,
)
from pyrauc.errors import ConfigError

BASE = """[system]
compatible=Test
bootloader={bl}
{extra}
[slot.rootfs.0]
device=/dev/vda2
type=ext4
bootname=A

[slot.rootfs.1]
device=/dev/vda3
type=ext4
bootname=B
"""


def conf(extra: str = "", bl: str = "efi", tail: str = "", **kw: object) -> str:
    return BASE.format(bl=bl, extra=extra) + tail


def test_minimal_defaults(tmp_path: Path) -> None:
    c = parse_config(conf(), tmp_path / "system.conf")
    assert c.compatible == "Test" and c.bootloader == "efi"
    assert c.mountprefix == "/mnt/rauc/"
    assert c.statusfile == PER_SLOT and not c.central_status and c.messages
    assert c.bundle_formats == ["plain", "verity", "crypt"]
    assert c.activate_installed and c.efi_use_bootnext
    assert c.max_bundle_download_size == 8388608 and c.max_bundle_signature_size == 65536
    s = c.slots["rootfs.0"]
    assert (s.sclass, s.index, s.device, s.type, s.bootname) == ("rootfs", 0, "/dev/vda2", "ext4", "A")
    assert s.install_same and not s.readonly
    assert c.to_keyring() is None


def test_relative_paths_and_data_directory(tmp_path: Path) -> None:
    text = conf("data-directory=data\n", tail="\n[keyring]\npath=ca.pem\ncheck-purpose=codesign\n"
                "allowed-signer-cns=a;b\n\n[handlers]\nsystem-info=info.sh\n\n[encryption]\nkey=pkcs11:token=x\n"
                "cert=enc.pem\n")
    c = parse_config(text, tmp_path / "system.conf")
    assert c.data_directory == str(tmp_path / "data")
    assert c.statusfile == str(tmp_path / "data" / "central.raucs") and c.central_status
    assert c.keyring.path == tmp_path / "ca.pem"
    assert c.keyring.check_purpose == "codesign-rauc"
    assert c.keyring.allowed_signer_cns == ("a", "b")
    assert c.handlers.system_info == str(tmp_path / "info.sh")
    assert c.encryption.key == "pkcs11:token=x" and c.encryption.cert == str(tmp_path / "enc.pem")


def test_data_directory_with_per_slot() -> None:
    with pytest.raises(ConfigError, match=r"Using data-directory= with statusfile=per-slot is not supported\."):
        parse_config(conf("data-directory=/data\nstatusfile=per-slot\n"))


@pytest.mark.parametrize(("text", "msg"), [
    (conf(tail="\n[foo]\nx=1\n"), r"Invalid group '\[foo\]'"),
    (conf("unknown=1\n"), r"Invalid key 'unknown' in group '\[system\]'"),
    (conf(bl="lilo"), "Unsupported bootloader 'lilo' selected in system config"),
    (conf(tail="\n[slot.x.0]\ndevice=/dev/x\ntype=btrfs\n"),
     "Unsupported slot type 'btrfs' for slot x.0 selected in system config"),
    (conf(tail="\n[slot.x.0]\ntype=raw\n"), "Key file does not have key “device” in group “slot.x.0”"),
    (conf(tail="\n[slot.x.0]\ndevice=/dev/x\nparent=y.0\n"), "Parent slot 'y.0' not found!"),
    (conf(tail="\n[slot.x.0]\ndevice=/dev/x\nbootname=X\n\n[slot.y.0]\ndevice=/dev/y\nparent=x.0\nbootname=Y\n"),
     "Child slot 'y.0' has bootname set"),
    (conf("grubenv=/boot/grubenv\n"), r"Invalid key 'grubenv' in group '\[system\]'"),
    (conf("efi-use-bootnext=false\n", bl="grub"), r"Invalid key 'efi-use-bootnext'"),
    (conf("boot-attempts=5\n"), "Configuring boot attempts is valid for uboot or barebox only"),
    (conf("min-bundle-version=1.x\n"), "Min version format invalid"),
    (conf("variant-name=a\nvariant-dtb=true\n"), "Only one of the keys"),
])
def test_errors(text: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        parse_config(text)


def test_slot_options() -> None:
    c = parse_config(conf(tail="\n[slot.boot.0]\ndevice=/dev/mmcblk0\ntype=boot-emmc\nsize-limit=4M\n"
                               "readonly=true\nforce-install-same=false\n\n[slot.appfs.0]\ndevice=/dev/vda5\n"
                               "type=ext4\nparent=rootfs.0\nresize=true\nextra-mkfs-opts=-L 'my label' -O ^64bit\n"
                               "allow-mounted=true\nefi-loader=\\\\EFI\\\\LINUX.EFI\nefi-cmdline=root=x\n"))
    b = c.slots["boot.0"]
    assert b.size_limit == 4 * 1024 * 1024 and b.readonly and not b.install_same
    a = c.slots["appfs.0"]
    assert a.parent == "rootfs.0" and a.resize and a.allow_mounted
    assert a.extra_mkfs_opts == ["-L", "my label", "-O", "^64bit"]
    assert a.efi_loader == "\\EFI\\LINUX.EFI" and a.efi_cmdline == "root=x"


def test_bootloader_specific() -> None:
    c = parse_config(conf("boot-attempts=5\nboot-attempts-primary=7\n", bl="uboot"))
    assert (c.boot_attempts, c.boot_attempts_primary) == (5, 7)
    c = parse_config(conf("grubenv=/boot/efi/grubenv\n", bl="grub"))
    assert c.grubenv == "/boot/efi/grubenv"
    c = parse_config(conf("efi-use-bootnext=false\n"))
    assert not c.efi_use_bootnext
    c = parse_config(conf("barebox-statename=st\nbarebox-dtbpath=/x.dtb\n", bl="barebox"))
    assert (c.barebox_statename, c.barebox_dtbpath) == ("st", "/x.dtb")


def test_accepted_groups() -> None:
    c = parse_config(conf("data-directory=/data\n", tail="\n[streaming]\nsandbox-user=nobody\n\n[casync]\n"
                          "use-desync=true\n\n[autoinstall]\npath=/x\n\n[log.install]\nfilename=install.log\n"
                          "events=install\n\n[artifacts.apps]\npath=/srv/apps\ntype=trees\n\n[polling]\n"
                          "url=https://x\n"))
    assert c.streaming == {"sandbox-user": "nobody"}
    assert c.logs["install"].filename == "/data/install.log" and c.logs["install"].events == ["install"]
    assert c.artifacts["apps"].type == "trees"


def test_sizes_and_formats() -> None:
    assert parse_size("4096") == 4096
    assert parse_size("8M") == 8 << 20 and parse_size("1G") == 1 << 30 and parse_size("2T") == 2 << 40
    with pytest.raises(ConfigError):
        parse_size("12Q")
    assert parse_bundle_formats("plain verity") == ["plain", "verity"]
    assert parse_bundle_formats("-plain") == ["verity", "crypt"]
    assert parse_bundle_formats("-crypt +plain") == ["plain", "verity"]
    with pytest.raises(ConfigError, match="cannot combine fixed value with modification"):
        parse_bundle_formats("plain -verity")
    with pytest.raises(ConfigError, match="no remaining formats"):
        parse_bundle_formats("-plain -verity -crypt")
    with pytest.raises(ConfigError, match="Invalid bundle format 'foo'"):
        parse_bundle_formats("foo")
    c = parse_config(conf("bundle-formats=-plain\nmax-bundle-signature-size=1M\n"))
    assert c.bundle_formats == ["verity", "crypt"] and c.max_bundle_signature_size == 1 << 20


def test_overrides(tmp_path: Path) -> None:
    path = tmp_path / "system.conf"
    path.write_text(conf())
    c = load_config(path, overrides=["system:compatible=Other", "slot.rootfs.1:device=/dev/sdb3",
                                     "system:mountprefix=/run/x=y"])
    assert c.compatible == "Other" and c.slots["rootfs.1"].device == "/dev/sdb3"
    assert c.mountprefix == "/run/x=y"
    assert parse_override("a:b=c:d") == ("a", "b", "c:d")
    for spec, msg in (("system:compatible", "Missing '='"), ("compatible=x", "Missing ':'"),
                      (":x=y", "you must specify it in format SECTION:KEY=VALUE")):
        with pytest.raises(ConfigError, match=f"Error in parsing override: {msg}"):
            load_config(path, overrides=[spec])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Failed to load system config \(.*nope.conf\)"):
        load_config(tmp_path / "nope.conf")
