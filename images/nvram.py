"""OVMF NVRAM seeding: Boot0001 "A" / Boot0002 "B" as HD()/File() entries plus BootOrder.

Uses the virt-firmware library (PyPI); its CLI would write FilePath-only entries titled "file ...".
The entries have the shape `efibootmgr -c` creates, so RAUC's efi backend finds them by label.
"""

from __future__ import annotations

from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def write_vars(dst: Path, *, esp_nr: int, esp_start: int, esp_size: int, esp_partuuid: str,
               entries: list[tuple[str, str]], src: Path = OVMF_VARS) -> None:
    """Copy SRC to DST with boot entries (title, \\EFI\\path) numbered 0001.. in that BootOrder."""
    from virt.firmware.efi import devpath
    from virt.firmware.varstore import autodetect

    store = autodetect.open_varstore(str(src))
    varlist = store.get_varlist()
    order = []
    for i, (title, path) in enumerate(entries, start=1):
        dp = devpath.DevicePath()
        hd = devpath.DevicePathElem()
        hd.set_gpt(esp_nr, esp_start, esp_size, esp_partuuid)
        fp = devpath.DevicePathElem()
        fp.set_filepath(path)
        dp.append(hd)
        dp.append(fp)
        varlist.set_boot_entry(i, title, dp)
        order.append(i)
    (varlist.get("BootOrder") or varlist.create("BootOrder")).set_boot_order(order)
    store.write_varstore(str(dst), varlist)
