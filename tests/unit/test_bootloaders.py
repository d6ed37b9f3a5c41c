"""Tests for the bootloader backends (efi via a fake efibootmgr, grub/uboot via the real tools)."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest

from pyrauc.bootloaders import create_backend
from pyrauc.bootloaders.efi import EfiBackend, EfiState
from pyrauc.bootloaders.uboot import UbootBackend
from pyrauc.config import SystemConfig, parse_config
from pyrauc.errors import BootloaderError
from pyrauc.slots import Slot, build_slots
from tests.helpers import fake_efibootmgr


def make(bootloader: str, extra: str = "", slot_extra: str = "") -> tuple[SystemConfig, dict[str, Slot]]:
    text = (f"[system]\ncompatible=T\nbootloader={bootloader}\n{extra}\n"
            f"[slot.efi.0]\ndevice=/dev/vda1\ntype=vfat\nbootname=system0\n{slot_extra}\n"
            "[slot.efi.1]\ndevice=/dev/vda2\ntype=vfat\nbootname=system1\n\n"
            "[slot.rootfs.0]\ndevice=/dev/vda3\nparent=efi.0\n\n"
            "[slot.rootfs.1]\ndevice=/dev/vda4\nparent=efi.1\n")
    config = parse_config(text)
    return config, build_slots(config)


@pytest.fixture
def efi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake efibootmgr on PATH; returns the state file."""
    return fake_efibootmgr.install(tmp_path, monkeypatch, {
        "current": "0001", "order": ["0001", "0002", "0000"],
        "entries": {"0000": {"label": "UiApp"}, "0001": {"label": "system0"}, "0002": {"label": "system1"}},
    })


def efistate(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())  # type: ignore[no-any-return,unused-ignore]


def test_efi_parse() -> None:
    st = EfiState.parse("BootNext: 0002\nBootCurrent: 0001\nTimeout: 3 seconds\nBootOrder: 0001,0002\n"
                        "Boot0001* system0\tHD(1,GPT)\nBoot0002  system1\nBoot0003* Some Label  \n")
    assert st is not None and (st.next, st.current, st.order) == ("0002", "0001", ["0001", "0002"])
    assert st.entries == {"0001": "system0", "0002": "system1", "0003": "Some Label"}
    assert EfiState.parse("BootCurrent: 0001\n") is None


def test_efi_bootnext(efi: Path) -> None:
    config, slots = make("efi")
    be = create_backend(config, slots)
    assert isinstance(be, EfiBackend)
    assert be.get_current() == "system0"
    assert be.get_primary() is slots["efi.0"]
    assert be.get_state(slots["efi.1"])
    be.set_state(slots["efi.1"], False)                      # mark-bad: out of BootOrder
    assert efistate(efi)["order"] == ["0001", "0000"]
    assert not be.get_state(slots["efi.1"])
    be.set_primary(slots["efi.1"])                           # mark-active: BootNext only
    st = efistate(efi)
    assert st["next"] == "0002" and st["order"] == ["0001", "0000"]
    assert be.get_primary() is slots["efi.1"]
    be.set_state(slots["efi.1"], True)                       # mark-good: front of BootOrder
    assert efistate(efi)["order"] == ["0002", "0001", "0000"]
    calls = efistate(efi)["calls"]
    assert ["--bootnext", "0002"] in calls and ["--bootorder", "0002,0001,0000"] in calls  # type: ignore[operator]


def test_efi_bootorder(efi: Path) -> None:
    config, slots = make("efi", "efi-use-bootnext=false\n")
    be = create_backend(config, slots)
    be.set_primary(slots["efi.1"])
    st = efistate(efi)
    assert st["next"] is None and st["order"] == ["0002", "0001", "0000"]


def test_efi_duplicate_labels_and_deleted_entries(efi: Path) -> None:
    """As RAUC: of two entries with a slot's label the last listed is the slot's, and a BootOrder
    number whose entry was deleted is left out when BootOrder is written (efibootmgr refuses it)."""
    config, slots = make("efi")
    state = efistate(efi)
    state["entries"] = {"0001": {"label": "system0"}, "0002": {"label": "system1"}, "0004": {"label": "system1"}}
    state["order"] = ["0001", "0004", "0002", "0003"]           # 0003: deleted
    efi.write_text(json.dumps(state))
    be = create_backend(config, slots)
    be.set_state(slots["efi.1"], False)
    assert efistate(efi)["order"] == ["0001", "0002"]
    be.set_primary(slots["efi.1"])
    assert efistate(efi)["next"] == "0004"
    be.set_state(slots["efi.0"], True)
    assert efistate(efi)["order"] == ["0001", "0002"]


def test_efi_errors(efi: Path) -> None:
    config, slots = make("efi")
    state = efistate(efi)
    state["entries"] = {"0001": {"label": "system0"}, "0000": {"label": "UiApp"}}
    state["current"] = "0000"
    state["order"] = ["0000"]
    efi.write_text(json.dumps(state))
    be = create_backend(config, slots)
    with pytest.raises(BootloaderError, match="efi backend: Did not find efi entry for bootname 'system1'!"):
        be.get_state(slots["efi.1"])
    with pytest.raises(BootloaderError, match="Current EFI bootentry not known to rauc!"):
        be.get_current()
    with pytest.raises(BootloaderError, match="Did not find primary boot entry!"):
        be.get_primary()
    state["order"] = None
    efi.write_text(json.dumps(state))
    with pytest.raises(BootloaderError, match="unable to obtain boot order!"):
        be.get_primary()


def test_efi_create_entry(efi: Path, tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    (sysfs / "devices" / "vda" / "vda1").mkdir(parents=True)
    (sysfs / "devices" / "vda" / "vda1" / "partition").write_text("1\n")
    (sysfs / "block").mkdir()
    (sysfs / "block" / "vda1").symlink_to(sysfs / "devices" / "vda" / "vda1")
    config, slots = make("efi", slot_extra="efi-loader=\\\\EFI\\\\LINUX\\\\BZIMAGE.EFI\n"
                                           "efi-cmdline=root=PARTUUID=1234 rauc.slot=system0\n")
    state = efistate(efi)
    del state["entries"]["0001"]  # type: ignore[attr-defined]
    state["order"] = ["0002"]
    efi.write_text(json.dumps(state))
    be = EfiBackend(config, slots, sysfs_block=str(sysfs / "block"))
    be.set_state(slots["efi.0"], True)
    st = efistate(efi)
    assert st["order"] == ["0001", "0002"]
    assert st["entries"]["0001"]["label"] == "system0"  # type: ignore[index]
    create = next(c for c in st["calls"] if "--create-only" in c)  # type: ignore[attr-defined]
    assert create == ["--create-only", "--disk", "/dev/vda", "--part", "1", "--label", "system0",
                      "--loader", "\\EFI\\LINUX\\BZIMAGE.EFI", "--unicode", "root=PARTUUID=1234 rauc.slot=system0"]


@pytest.mark.skipif(shutil.which("grub-editenv") is None, reason="grub-editenv not installed")
def test_grub(tmp_path: Path) -> None:
    env = tmp_path / "grubenv"
    config, slots = make("grub", f"grubenv={env}\n")
    import subprocess

    subprocess.run(["grub-editenv", str(env), "create"], check=True)
    subprocess.run(["grub-editenv", str(env), "set", "ORDER=system0 system1", "system0_OK=1", "system0_TRY=0",
                    "system1_OK=1", "system1_TRY=0"], check=True)
    be = create_backend(config, slots)
    assert be.get_primary() is slots["efi.0"] and be.get_state(slots["efi.1"])
    be.set_state(slots["efi.1"], False)
    assert not be.get_state(slots["efi.1"])
    be.set_primary(slots["efi.1"])
    out = subprocess.run(["grub-editenv", str(env), "list"], capture_output=True, text=True).stdout
    assert "ORDER=system1 system0" in out and "system1_OK=1" in out and "system1_TRY=0" in out
    assert be.get_primary() is slots["efi.1"]


@pytest.mark.skipif(shutil.which("grub-editenv") is None, reason="grub-editenv not installed")
def test_grub_try_counters_as_rauc_reads_them(tmp_path: Path) -> None:
    """seed-target.md section 5: a slot GRUB is trying (TRY=1) or one missing from ORDER is bad; the
    primary skips it; mark-active writes ORDER=X + the other bootnames whatever ORDER held; a missing
    variable is an error."""
    import subprocess

    env = tmp_path / "grubenv"
    config, slots = make("grub", f"grubenv={env}\n")
    subprocess.run(["grub-editenv", str(env), "create"], check=True)
    be = create_backend(config, slots)
    with pytest.raises(BootloaderError, match="Variable ORDER is empty"):
        be.get_primary()
    # after GRUB booted system1 from ORDER "system1 system0" and system1 paniced: system1_TRY stays 1
    subprocess.run(["grub-editenv", str(env), "set", "ORDER=system1 system0", "system0_OK=1", "system0_TRY=0",
                    "system1_OK=1", "system1_TRY=1"], check=True)
    assert not be.get_state(slots["efi.1"]) and be.get_state(slots["efi.0"])
    assert be.get_primary() is slots["efi.0"]
    subprocess.run(["grub-editenv", str(env), "set", "ORDER=system0 stale"], check=True)
    assert not be.get_state(slots["efi.1"])                     # not in ORDER
    be.set_primary(slots["efi.1"])
    out = subprocess.run(["grub-editenv", str(env), "list"], capture_output=True, text=True).stdout
    assert "ORDER=system1 system0\n" in out and "system1_TRY=0" in out
    subprocess.run(["grub-editenv", str(env), "unset", "system0_TRY"], check=True)
    with pytest.raises(BootloaderError, match="Variable system0_TRY not set in grub environment"):
        be.get_state(slots["efi.0"])


@pytest.mark.skipif(shutil.which("fw_setenv") is None, reason="libubootenv-tool not installed")
def test_uboot(tmp_path: Path) -> None:
    envfile = tmp_path / "uboot.env"
    data = b"\0" * (0x4000 - 4)
    envfile.write_bytes(struct.pack("<I", zlib.crc32(data)) + data)
    cfg = tmp_path / "fw_env.config"
    cfg.write_text(f"{envfile} 0x0 0x4000\n")
    config, slots = make("uboot", "boot-attempts=12\nboot-attempts-primary=11\n")
    be = UbootBackend(config, slots, printenv=["fw_printenv", "-c", str(cfg)], setenv=["fw_setenv", "-c", str(cfg)])
    with pytest.raises(BootloaderError, match="Unable to find primary boot slot"):
        be.get_primary()
    assert not be.get_state(slots["efi.0"])
    be.set_primary(slots["efi.1"])                     # no BOOT_ORDER yet: only the new primary
    assert be.get("BOOT_ORDER") == "system1" and be.get("BOOT_system1_LEFT") == "b"
    be.set("BOOT_ORDER", "system0 system1")
    be.set_primary(slots["efi.1"])
    assert be.get("BOOT_ORDER") == "system1 system0"
    be.set_state(slots["efi.0"], True)
    assert be.get("BOOT_system0_LEFT") == "c"
    assert be.get_primary() is slots["efi.1"]
    be.set_state(slots["efi.1"], False)                # as RAUC: out of BOOT_ORDER, no attempts left
    assert (be.get("BOOT_ORDER"), be.get("BOOT_system1_LEFT")) == ("system0", "0")
    assert be.get_primary() is slots["efi.0"]
    be.set_primary(slots["efi.1"])                     # back in front, the others kept as they are
    assert be.get("BOOT_ORDER") == "system1 system0"
    for value, left in (("zz", 0), ("3z", 3), ("0x0a", 10), ("", 0)):   # as strtoul(value, 16)
        be.set("BOOT_system0_LEFT", value)
        assert be._left("system0") == left, value
    broken = UbootBackend(config, slots, printenv=["false"], setenv=["fw_setenv", "-c", str(cfg)])
    broken.set_state(slots["efi.0"], False)            # BOOT_ORDER unreadable: the counter only
    assert (be.get("BOOT_ORDER"), be.get("BOOT_system0_LEFT")) == ("system1 system0", "0")
    broken.set_primary(slots["efi.0"])                 # ... and the boot slots in configuration order
    assert be.get("BOOT_ORDER") == "system0 system1"


def test_custom(tmp_path: Path) -> None:
    statefile = tmp_path / "state"
    script = tmp_path / "custom.sh"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {tmp_path}/calls
case "$1" in
  get-primary) echo system1 ;;
  get-state) [ "$2" = system0 ] && echo good || echo bad ;;
  get-current) echo system0 ;;
  set-state|set-primary) echo "$@" > {statefile} ;;
  *) exit 1 ;;
esac
""")
    script.chmod(0o755)
    config, slots = make("custom")
    config.handlers.bootloader_custom_backend = str(script)
    be = create_backend(config, slots)
    assert be.get_primary() is slots["efi.1"]
    assert be.get_state(slots["efi.0"]) and not be.get_state(slots["efi.1"])
    assert be.get_current() == "system0"
    be.set_state(slots["efi.1"], True)
    assert statefile.read_text() == "set-state system1 good\n"
    be.set_primary(slots["efi.0"])
    assert statefile.read_text() == "set-primary system0\n"
    with pytest.raises(BootloaderError, match=r"custom backend: Slot rootfs\.0 has no bootname set"):
        be.set_primary(slots["rootfs.0"])


def test_barebox(tmp_path: Path) -> None:
    store = tmp_path / "bb.json"
    store.write_text(json.dumps({"bootstate.system0.priority": 20, "bootstate.system0.remaining_attempts": 3,
                                 "bootstate.system1.priority": 10, "bootstate.system1.remaining_attempts": 3}))
    script = tmp_path / "barebox-state"
    script.write_text(f"""#!{sys.executable}
import json, sys
st = json.load(open({str(store)!r}))
args = sys.argv[1:]
assert args[:2] == ["-n", "mystate"], args
for opt, val in zip(args[2::2], args[3::2]):
    if opt == "-g":
        print(st[val])
    elif opt == "-s":
        k, v = val.split("=")
        st[k] = int(v)
json.dump(st, open({str(store)!r}, "w"))
""")
    script.chmod(0o755)
    config, slots = make("barebox", "barebox-statename=mystate\nboot-attempts=5\n")
    from pyrauc.bootloaders.barebox import BareboxBackend

    be = BareboxBackend(config, slots, command=str(script))
    assert be.get_primary() is slots["efi.0"]
    be.set_primary(slots["efi.1"])
    st = json.loads(store.read_text())
    assert st["bootstate.system1.priority"] == 20 and st["bootstate.system0.priority"] == 10
    be.set_state(slots["efi.0"], False)
    assert not be.get_state(slots["efi.0"]) and be.get_primary() is slots["efi.1"]
    be.set_state(slots["efi.0"], True)
    assert json.loads(store.read_text())["bootstate.system0.remaining_attempts"] == 5


def test_noop() -> None:
    config, slots = make("noop")
    be = create_backend(config, slots)
    assert be.get_state(slots["efi.0"]) and be.get_primary() is None and be.get_current() is None
    be.set_state(slots["efi.0"], False)
    be.set_primary(slots["efi.0"])
