"""RAUC's encrypted-update tutorial, end to end on the lab target.

The steps run in order on one target, as a BSP engineer would follow them by hand: build a crypt
bundle, provision per-device keys, encrypt for some devices, install, reboot into the new slot,
prove a non-recipient is rejected, update back, fall back from an unbootable slot, and survive a
power cut in the middle of a copy. The target is driven only through SSH and the ``rauc`` CLI.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from labs import lab
from tests.helpers.bundles import pyrauc
from tests.helpers.pki import Issued, make_recipients, write_pem_bundle
from tests.lab import updates
from tests.lab.target import RaucTargetDriver, needs_confopt

COMPATIBLE = "pyrauc-qemux86-64"
INSTALL_TIMEOUT = 1800          # TCG on two busy cores: a full rootfs through dm-verity + dm-crypt
REMOTE_BUNDLE = "/data/update.raucb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
pytestmark = pytest.mark.lg_feature("uefi-vars")      # the workflow switches slots through RAUC's efi backend


class Tutorial:
    """Host-side state shared by the steps."""

    def __init__(self, work: Path) -> None:
        self.work = work
        pki = lab.cache_dir() / "lab-pki"
        self.keyring = pki / "ca.cert.pem"
        self.signer_cert = pki / "signer.cert.pem"
        self.signer_key = pki / "signer.key.pem"
        self.devices: list[Issued] = []
        self.plain_bundle: Path | None = None
        self.encrypted: Path | None = None
        self.image_sha256: str = ""
        self.image_size: int = 0


@pytest.fixture(scope="module")
def tut(tmp_path_factory: pytest.TempPathFactory, lab_run: Path) -> Tutorial:
    return Tutorial(tmp_path_factory.mktemp("tutorial"))


def _install(dut: RaucTargetDriver, bundle: str = REMOTE_BUNDLE) -> tuple[str, str, int]:
    return dut.install(bundle, timeout=INSTALL_TIMEOUT)


def _put_keys(dut: RaucTargetDriver, device: Issued) -> None:
    dut.put_keys(device.key_path, device.cert_path)


def _slot_digest(dut: RaucTargetDriver, partlabel: str, size: int) -> str:
    out = dut.sh(f"head -c {size} /dev/disk/by-partlabel/{partlabel} | sha256sum", timeout=600)
    return out.split()[0]


def _check_slot_holds_update(tut: Tutorial, dut: RaucTargetDriver, slot: str, partlabel: str) -> None:
    """The slot got the image (RAUC's status records its digest) and the hook added the keys.

    (The slot's bytes differ from the image: the post-install hook wrote the keys into it.)
    """
    status = dut.sh("cat /data/rauc/central.raucs")
    section = status.split(f"[slot.{slot}]", 1)[1].split("\n[", 1)[0]
    assert f"sha256={tut.image_sha256}" in section and "status=ok" in section, status
    mnt = f"/tmp/check-{partlabel}"
    dut.sh(f"mkdir -p {mnt} && mount -o ro /dev/disk/by-partlabel/{partlabel} {mnt}")
    try:
        assert dut.sh(f"cat {mnt}/etc/lab-update-version").strip() == "2"
        dut.sh(f"test -s {mnt}/etc/rauc/crypt-key.pem && test -s {mnt}/etc/rauc/crypt-cert.pem")
    finally:
        dut.sh(f"umount {mnt}")


def test_01_build_crypt_bundle(tut: Tutorial) -> None:
    """Step 1: a crypt bundle whose hook carries the device keys into the new slot."""
    disk = lab.out_dir() / "disk.img"          # the image the target booted (pyrauc or Debian rauc)
    image = updates.bootable_rootfs(disk, tut.work / "rootfs-v2.ext4", "2")
    tut.plain_bundle = updates.make_bundle(tut.work, "update-v2", image, compatible=COMPATIBLE, version="2",
                                           signer_cert=tut.signer_cert, signer_key=tut.signer_key)
    info = pyrauc("info", "--keyring", tut.keyring, tut.plain_bundle, check=True)
    text = ANSI.sub("", info.stdout)
    assert "Bundle Format:  crypt [unencrypted CMS]" in text
    assert "Crypt Key:    '<hidden>'" in text
    shell = pyrauc("info", "--keyring", tut.keyring, "--output-format=shell", tut.plain_bundle, check=True).stdout
    tut.image_sha256 = re.search(r"RAUC_IMAGE_DIGEST_1='([0-9a-f]{64})'", shell).group(1)  # type: ignore[union-attr]
    tut.image_size = int(re.search(r"RAUC_IMAGE_SIZE_1=(\d+)", shell).group(1))  # type: ignore[union-attr]


def test_02_provision_device_keys(tut: Tutorial, dut: RaucTargetDriver) -> None:
    """Step 2: five per-device EC P-256 key pairs; device 0's key goes onto the target."""
    tut.devices = make_recipients(tut.work / "devices", 5, "p256")
    _put_keys(dut, tut.devices[0])
    assert dut.sh("stat -c %a /etc/rauc/crypt-key.pem").strip() == "600"


def test_03_encrypt_for_devices_0_2_4(tut: Tutorial) -> None:
    """Step 3: encrypt for three devices from one concatenated PEM, then inspect."""
    assert tut.plain_bundle is not None
    recipients = write_pem_bundle(tut.work / "recipients.pem", [tut.devices[i].cert for i in (0, 2, 4)])
    tut.encrypted = tut.work / "update-v2-encrypted.raucb"
    pyrauc("encrypt", "--keyring", tut.keyring, "--to", recipients, tut.plain_bundle, tut.encrypted, check=True)
    nokey = pyrauc("info", "--keyring", tut.keyring, tut.encrypted)
    assert nokey.returncode == 1
    assert "Encrypted bundle detected, but no decryption key given" in nokey.stderr
    info = pyrauc("info", "--keyring", tut.keyring, "--key", tut.devices[0].key_path, "--dump-recipients",
                  tut.encrypted, check=True)
    text = ANSI.sub("", info.stdout)
    assert "Bundle Format:  crypt [encrypted CMS]" in text
    assert "3 Recipients:" in text
    assert text.count("Algorithm: dhSinglePass-stdDH-sha1kdf-scheme") == 3


def test_04_install_into_b(tut: Tutorial, dut: RaucTargetDriver) -> None:
    """Step 4: copy to the target and install; rootfs.1 gets the image, BootNext points at B."""
    assert tut.encrypted is not None
    assert dut.booted_bootname() == "A"
    dut.put(tut.encrypted, REMOTE_BUNDLE)
    out, err, code = _install(dut)
    assert code == 0, out + err
    lines = out.splitlines()
    assert "  0% Installing" in lines
    assert "100% Installing done." in lines
    assert any(line.endswith("Copying image to rootfs.1") for line in lines), out
    assert f"Installing `{REMOTE_BUNDLE}` succeeded" in out + err
    assert dut.leftovers() == ""
    _check_slot_holds_update(tut, dut, "rootfs.1", "rootfs-b")
    efi = dut.efi_state()
    assert efi.label_of(efi.boot_next) == "B"
    assert efi.first_slot_in_order == "A"          # one-shot: BootOrder still starts with A


def test_05_reboot_into_b(strategy: Any, dut: RaucTargetDriver) -> None:
    """Step 5: the target boots B, mark-good makes it permanent, the keys came along."""
    strategy.reboot()
    assert dut.booted_bootname() == "B"
    assert dut.sh("cat /etc/lab-update-version").strip() == "2"
    dut.sh("systemctl is-active rauc-mark-good.service || "
            "(sleep 20; systemctl is-active rauc-mark-good.service)", timeout=120)
    efi = dut.efi_state()
    assert efi.boot_next is None
    assert efi.first_slot_in_order == "B"
    dut.sh("test -s /etc/rauc/crypt-key.pem && test -s /etc/rauc/crypt-cert.pem")
    status = dut.status()
    assert status.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "B"


def test_06_non_recipient_key_is_rejected(tut: Tutorial, strategy: Any, dut: RaucTargetDriver) -> None:
    """Step 6: with device 3's key (no recipient) the install fails and changes nothing."""
    _put_keys(dut, tut.devices[3])
    before_efi = dut.efi_state()
    before_a = _slot_digest(dut, "rootfs-a", 64 << 20)
    before_status = dut.sh("cat /data/rauc/central.raucs 2>/dev/null || true")
    out, err, code = _install(dut)
    assert code == 1, out + err
    assert "Failed to decrypt bundle" in out + err
    assert f"Installing `{REMOTE_BUNDLE}` failed" in out + err
    assert dut.leftovers() == ""
    assert dut.efi_state() == before_efi
    assert _slot_digest(dut, "rootfs-a", 64 << 20) == before_a
    assert dut.sh("cat /data/rauc/central.raucs 2>/dev/null || true") == before_status
    strategy.reboot()
    assert dut.booted_bootname() == "B"


def test_07_recipient_key_installs_into_a(tut: Tutorial, strategy: Any, dut: RaucTargetDriver) -> None:
    """Step 7: with a recipient key again, the update goes to A and the target boots A."""
    _put_keys(dut, tut.devices[0])
    out, err, code = _install(dut)
    assert code == 0, out + err
    assert any(line.endswith("Copying image to rootfs.0") for line in out.splitlines()), out
    _check_slot_holds_update(tut, dut, "rootfs.0", "rootfs-a")
    strategy.reboot()
    assert dut.booted_bootname() == "A"
    assert dut.sh("cat /etc/lab-update-version").strip() == "2"
    dut.sh("systemctl is-active rauc-mark-good.service || "
            "(sleep 20; systemctl is-active rauc-mark-good.service)", timeout=120)
    assert dut.efi_state().first_slot_in_order == "A"


def test_08_fallback_from_unbootable_slot(tut: Tutorial, strategy: Any, dut: RaucTargetDriver) -> None:
    """Step 8: an update that cannot boot; the target comes back in the old slot."""
    broken = updates.broken_rootfs(tut.work / "broken.ext4")
    plain = updates.make_bundle(tut.work, "broken", broken, compatible=COMPATIBLE, version="broken",
                                signer_cert=tut.signer_cert, signer_key=tut.signer_key)
    encrypted = tut.work / "broken-encrypted.raucb"
    pyrauc("encrypt", "--keyring", tut.keyring, "--to", tut.devices[0].cert_path, plain, encrypted, check=True)
    dut.put(encrypted, "/data/broken.raucb")
    out, err, code = _install(dut, "/data/broken.raucb")
    assert code == 0, out + err
    assert dut.efi_state().label_of(dut.efi_state().boot_next) == "B"
    strategy.reboot()                       # B panics (no init), panic=10 resets, firmware boots A
    assert dut.booted_bootname() == "A"
    assert dut.sh("cat /etc/lab-update-version").strip() == "2"
    efi = dut.efi_state()
    assert efi.first_slot_in_order == "A"
    assert efi.entries["B"] not in efi.boot_order      # marked bad at install, never marked good
    status = dut.status()
    assert status.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "A"
    dut.sh("rm -f /data/broken.raucb")


def test_09_power_cut_during_copy(strategy: Any, dut: RaucTargetDriver) -> None:
    """Step 9: kill the machine in the middle of a copy; it boots, and a fresh install works."""
    dut.sh(f"(setsid nohup rauc install {REMOTE_BUNDLE} > /data/install.log 2>&1 &) ; true")
    deadline = time.monotonic() + INSTALL_TIMEOUT
    while time.monotonic() < deadline:
        log = dut.sh("cat /data/install.log")
        if "Copying image to rootfs.1" in log:
            break
        assert "Installing `" not in log, f"the install ended before copying:\n{log}"
        time.sleep(2)
    else:
        pytest.fail("the install never started copying")
    time.sleep(5)
    log = dut.sh("cat /data/install.log")
    assert "succeeded" not in log and "failed" not in log, log
    strategy.power_cycle()                  # QEMU quits: the power is gone mid-write
    assert dut.booted_bootname() == "A"
    out, err, code = _install(dut)
    assert code == 0, out + err
    assert dut.leftovers() == ""
    assert dut.efi_state().label_of(dut.efi_state().boot_next) == "B"


PKCS11_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def _provision_token(tut: Tutorial, dut: RaucTargetDriver, device: Issued, name: str) -> str:
    """Make a SoftHSM2 token holding DEVICE's key and cert (the factory step) and put it on the target.

    Returns the environment prefix for commands that use it.
    """
    from tests.helpers.softhsm import make_token

    token = make_token(tut.work / name, label="lab", pin="1234")
    token.import_key(device.key, "crypt", b"\x01", cert=device.cert)
    archive = tut.work / f"{name}.tar"
    subprocess.run(["tar", "-C", str(tut.work / name), "-cf", str(archive), "tokens"], check=True)
    remote = f"/data/{name}"
    dut.sh(f"rm -rf {remote} && mkdir -p {remote}")
    dut.put(archive, f"{remote}/tokens.tar")
    dut.sh(f"tar -C {remote} -xf {remote}/tokens.tar && rm {remote}/tokens.tar && "
            f"printf 'directories.tokendir = {remote}/tokens\\nobjectstore.backend = file\\n' > {remote}/softhsm2.conf")
    return (f"SOFTHSM2_CONF={remote}/softhsm2.conf RAUC_PKCS11_MODULE={PKCS11_MODULE} RAUC_PKCS11_PIN=1234 ")


def test_10_keys_in_a_pkcs11_token(tut: Tutorial, strategy: Any, dut: RaucTargetDriver, target_rauc: str) -> None:
    """Steps 6 and 7 again with the device key in a SoftHSM2 token ([encryption] key=pkcs11:...)."""
    needs_confopt(target_rauc, "the PKCS#11 key is selected with -C encryption:key=pkcs11:... "
                               "(and would need the OpenSSL PKCS#11 engine in the image)")
    uri = "pkcs11:token=lab;object=crypt"
    conf = f"-C 'encryption:key={uri}' -C 'encryption:cert={uri}'"
    env = _provision_token(tut, dut, tut.devices[3], "hsm-device-3")
    before = dut.efi_state()
    out, err, code = dut.install(REMOTE_BUNDLE, options=conf, env=env, timeout=INSTALL_TIMEOUT)
    assert code == 1, out + err
    assert "Failed to decrypt bundle" in out + err
    assert dut.leftovers() == ""
    assert dut.efi_state() == before
    env = _provision_token(tut, dut, tut.devices[0], "hsm-device-0")
    out, err, code = dut.install(REMOTE_BUNDLE, options=conf, env=env, timeout=INSTALL_TIMEOUT)
    assert code == 0, out + err
    assert any(line.endswith("Copying image to rootfs.1") for line in out.splitlines()), out
    assert dut.leftovers() == ""
    _check_slot_holds_update(tut, dut, "rootfs.1", "rootfs-b")
