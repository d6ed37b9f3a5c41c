"""The revocation workflow with ``pyrauc encrypt``: drop a device from the recipient list.

One unencrypted crypt bundle is encrypted for devices 0..4, then again for every device but
device 2. Device 2 can open the first bundle but not the second ("Failed to decrypt bundle"); the
others open both. Encryption only replaces the trailing CMS, so the payload of both encrypted
bundles is byte-identical to the unencrypted bundle's payload (no re-upload of the image data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.bundles import error_lines, pyrauc, write_content
from tests.helpers.pki import Issued, Pki, make_recipients, write_pem_bundle

REVOKED = 2


def split_bundle(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    size = int.from_bytes(data[-8:], "big")
    return data[:-8 - size], data[-8 - size:-8]


@dataclass
class Revocation:
    plain: Path
    all_devices: Path
    without_revoked: Path
    devices: list[Issued]
    keyring: Path
    content: Path


@pytest.fixture(scope="module")
def rev(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Revocation:
    d = tmp_path_factory.mktemp("revocation")
    content = write_content(d / "content", fmt="crypt", rootfs_size=32768)
    plain = d / "plain.raucb"
    pyrauc("bundle", "--cert", pki.signer.cert_path, "--key", pki.signer.key_path,
           "--intermediate", pki.intermediate.cert_path, content, plain, check=True)
    # a mix of key types: even devices EC P-256, odd devices RSA
    devices = [make_recipients(d / "dev", 1, key_kind="p256" if i % 2 == 0 else "rsa2048",
                               prefix=f"device{i}")[0] for i in range(5)]
    to_all = write_pem_bundle(d / "all.pem", [x.cert for x in devices])
    to_rest = write_pem_bundle(d / "rest.pem", [x.cert for i, x in enumerate(devices) if i != REVOKED])
    all_devices, without = d / "all.raucb", d / "without-2.raucb"
    res = pyrauc("encrypt", "--to", to_all, "--keyring", pki.keyring, plain, all_devices, check=True)
    assert "Encrypted for 5 recipients" in res.stderr   # a log line, on stderr as in RAUC
    res = pyrauc("encrypt", "--to", to_rest, "--keyring", pki.keyring, plain, without, check=True)
    assert "Encrypted for 4 recipients" in res.stderr
    return Revocation(plain, all_devices, without, devices, pki.keyring, content)


def test_payload_unchanged(rev: Revocation) -> None:
    payload, sigdata = split_bundle(rev.plain)
    for enc in (rev.all_devices, rev.without_revoked):
        enc_payload, cms = split_bundle(enc)
        assert enc_payload == payload
        assert cms != sigdata
    # the two envelopes differ (fresh content-encryption key, different recipients)
    assert split_bundle(rev.all_devices)[1] != split_bundle(rev.without_revoked)[1]


@pytest.mark.parametrize("index", range(5))
def test_every_device_opens_the_first_bundle(index: int, rev: Revocation, tmp_path: Path) -> None:
    dev = rev.devices[index]
    info = pyrauc("info", "--keyring", rev.keyring, "--key", dev.key_path, rev.all_devices)
    assert info.returncode == 0, info.stderr
    assert "[encrypted CMS]" in info.stdout
    out = tmp_path / "out"
    pyrauc("extract", "--keyring", rev.keyring, "--key", dev.key_path, rev.all_devices, out, check=True)
    assert (out / "rootfs.img").read_bytes() == (rev.content / "rootfs.img").read_bytes()


@pytest.mark.parametrize("index", [i for i in range(5) if i != REVOKED])
def test_remaining_devices_open_the_second_bundle(index: int, rev: Revocation, tmp_path: Path) -> None:
    dev = rev.devices[index]
    for extra in ([], ["--cert", str(dev.cert_path)]):
        info = pyrauc("info", "--keyring", rev.keyring, "--key", dev.key_path, *extra, rev.without_revoked)
        assert info.returncode == 0, info.stderr
    out = tmp_path / "out"
    pyrauc("extract", "--keyring", rev.keyring, "--key", dev.key_path, rev.without_revoked, out, check=True)
    assert (out / "rootfs.img").read_bytes() == (rev.content / "rootfs.img").read_bytes()
    assert (out / "appfs.img").read_bytes() == (rev.content / "appfs.img").read_bytes()


@pytest.mark.parametrize("with_cert", [False, True], ids=["key-only", "key+cert"])
def test_revoked_device_is_locked_out(with_cert: bool, rev: Revocation, tmp_path: Path) -> None:
    dev = rev.devices[REVOKED]
    extra = ["--cert", str(dev.cert_path)] if with_cert else []
    info = pyrauc("info", "--keyring", rev.keyring, "--key", dev.key_path, *extra, rev.without_revoked)
    assert info.returncode == 1
    assert info.stdout == ""
    lines = error_lines(info)
    assert len(lines) == 1 and lines[0].startswith("Failed to decrypt bundle: "), info.stderr
    out = tmp_path / "out"
    ext = pyrauc("extract", "--keyring", rev.keyring, "--key", dev.key_path, *extra, rev.without_revoked, out)
    assert ext.returncode == 1
    lines = error_lines(ext)
    assert len(lines) == 1 and lines[0].startswith("Failed to decrypt bundle: "), ext.stderr
    assert not out.exists()


def test_revoked_device_not_listed(rev: Revocation) -> None:
    key = rev.devices[0].key_path
    listed = pyrauc("info", "--keyring", rev.keyring, "--key", key, "--dump-recipients", rev.without_revoked,
                    check=True).stdout
    assert "4 Recipients:" in listed
    assert f"CN = device{REVOKED}-000" not in listed
    for i in range(5):
        if i != REVOKED:
            assert f"CN = device{i}-000" in listed
