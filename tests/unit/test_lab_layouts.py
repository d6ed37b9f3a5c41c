"""The lab's second layout (the tutorial's meta-rauc-qemux86 device) without booting it.

The env file selects the layout, the output directories of layouts and rauc variants stay apart,
the partition table keeps the reference's order and the boot-gpt-switch region free of other
entries, GRUB's config names the partitions the table has, and the target's system.conf parses as
the reference describes it -- with pyrauc, and (the Debian variant's) with Debian's rauc 1.8.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from images import meta_rauc
from images.common import out_dir
from labs import lab
from pyrauc.config import parse_config

REPO = Path(__file__).resolve().parents[2]


def test_env_file_selects_the_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lab.layout_of_env(REPO / "labs/qemu-grub.yaml") == "meta-rauc"
    assert lab.layout_of_env(REPO / "labs/qemu.yaml") == "efi"
    monkeypatch.delenv("PYRAUC_LAB_LAYOUT", raising=False)
    assert lab.select_layout(REPO / "labs/qemu-grub.yaml") == "meta-rauc"
    monkeypatch.setenv("PYRAUC_LAB_LAYOUT", "efi")                  # an explicit choice wins
    assert lab.select_layout(REPO / "labs/qemu-grub.yaml") == "efi"


def test_output_directories_stay_apart(tmp_path: Path) -> None:
    dirs = {out_dir(tmp_path, rauc, layout) for rauc in ("pyrauc", "debian") for layout in ("efi", "meta-rauc")}
    assert dirs == {tmp_path / "out", tmp_path / "out-debian", tmp_path / "out-meta-rauc",
                    tmp_path / "out-meta-rauc-debian"}


def test_partition_table_as_the_reference() -> None:
    """Order and roles of seed-target.md section 1; only entry 1 lies in the region, in its first half."""
    assert [p.name for p in meta_rauc.PARTS] == ["boot", "grubenv", "rescue", "root_a", "root_b", "data"]
    region = (meta_rauc.REGION_START_MIB, meta_rauc.REGION_START_MIB + meta_rauc.REGION_SIZE_MIB)
    half = meta_rauc.REGION_SIZE_MIB // 2
    assert (meta_rauc.BOOT.start, meta_rauc.BOOT.size) == (region[0], half)
    for p in meta_rauc.PARTS[1:]:
        assert p.start >= region[1] or p.start + p.size <= region[0], p
    ends = [p.start + p.size for p in meta_rauc.PARTS]
    assert all(ends[i] <= meta_rauc.PARTS[i + 1].start for i in range(len(ends) - 1))
    assert meta_rauc.BOOT_VFAT_KIB * 1024 <= half * 1024 * 1024          # the efi image fits a half


def test_grub_cfg_names_the_table() -> None:
    """(hd0,gptN) and root= of each entry are the partitions the table has at those positions."""
    cfg = meta_rauc.GRUB_CFG
    number = {p.name: n for n, p in enumerate(meta_rauc.PARTS, start=1)}
    assert cfg.count(f"--file=(hd0,gpt{number['grubenv']})/grubenv") == 2          # load_env + save_env
    for part, arg in (("rescue", "rauc.external"), ("root_a", "rauc.slot=A"), ("root_b", "rauc.slot=B")):
        n = number[part]
        assert f"linux (hd0,gpt{n})/vmlinuz root={meta_rauc.DISK}{n} rw rootwait $CMDLINE {arg}" in cfg
        assert f"initrd (hd0,gpt{n})/initrd.img" in cfg
    assert "save_env --file=(hd0,gpt2)/grubenv A_TRY A_OK B_TRY B_OK ORDER" in cfg
    assert 'set ORDER="A B"' in cfg and "set A_OK=1" in cfg and "set B_OK=0" in cfg


def test_system_conf_parses_as_the_reference(tmp_path: Path) -> None:
    conf_path = tmp_path / "system.conf"
    conf_path.write_text(meta_rauc.SYSTEM_CONF)
    (tmp_path / "ca.cert.pem").write_text("")
    conf = parse_config(meta_rauc.SYSTEM_CONF, conf_path)
    assert (conf.compatible, conf.bootloader, conf.grubenv) == ("qemux86-64 demo platform", "grub", "/grubenv/grubenv")
    assert str(conf.keyring.path) == str(tmp_path / "ca.cert.pem")     # relative to the file's directory
    efi = conf.slots["efi.0"]
    assert (efi.device, efi.type, efi.region_start, efi.region_size, efi.bootname) == \
        ("/dev/vda", "boot-gpt-switch", 4 << 20, 100 << 20, None)
    assert conf.slots["rescue.0"].readonly
    assert {n: (s.type, s.bootname) for n, s in conf.slots.items() if n.startswith("rootfs")} == \
        {"rootfs.0": ("ext4", "A"), "rootfs.1": ("ext4", "B")}
    assert set(conf.logs) == {"readable", "json"}
    debian = parse_config(meta_rauc.system_conf("debian"), conf_path)      # C rauc 1.8 variant: no event logs
    assert debian.logs == {} and "[log." not in meta_rauc.system_conf("debian")
    assert ({n: vars(s) for n, s in debian.slots.items()}, debian.grubenv, debian.data_directory) == \
        ({n: vars(s) for n, s in conf.slots.items()}, conf.grubenv, conf.data_directory)


@pytest.mark.skipif(shutil.which("rauc") is None, reason="needs Debian's rauc 1.8 (the oracle)")
def test_rauc_18_loads_the_debian_variants_config(tmp_path: Path) -> None:
    """rauc 1.8 refuses the reference's [log.*] groups and loads the variant's system.conf."""
    (tmp_path / "ca.cert.pem").write_text("")

    def load(text: str) -> str:
        conf = tmp_path / "system.conf"
        conf.write_text(text)
        res = subprocess.run(["rauc", "-c", str(conf), "info", str(tmp_path / "none.raucb")],
                             capture_output=True, text=True, check=False)
        return res.stdout + res.stderr

    assert "Invalid group '[log.readable]'" in load(meta_rauc.SYSTEM_CONF)
    assert "Failed to load system config" not in load(meta_rauc.system_conf("debian"))


def test_the_grub_device_has_its_own_tutorial_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from labs import pytest_lab

    monkeypatch.setenv("PYRAUC_LAB_LAYOUT", "efi")
    assert pytest_lab.budget_for("tests/lab/test_tutorial.py") == pytest_lab.BUDGET["tests/lab/test_tutorial.py"]
    monkeypatch.setenv("PYRAUC_LAB_LAYOUT", "meta-rauc")
    assert pytest_lab.budget_for("tests/lab/test_tutorial.py") == pytest_lab.BUDGET[
        "meta-rauc:tests/lab/test_tutorial.py"]
    assert pytest_lab.budget_for("tests/lab") == pytest_lab.BUDGET["tests/lab"]       # no own line: the common one
