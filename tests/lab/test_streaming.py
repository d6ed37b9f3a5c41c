"""Streaming installs on the lab target (issue 15): bundles from nginx on the host, over HTTP and HTTPS.

nginx (Debian's, started and stopped by a fixture) serves the bundle directory on 127.0.0.1; the
target reaches it through QEMU user networking's host address 10.0.2.2. On the target, ``rauc
install URL`` goes through the D-Bus service; its NBD helper runs as ``nobody`` and answers the
kernel's NBD requests with Range requests; dm-verity (and dm-crypt) and squashfs sit on /dev/nbdN.

* the tutorial's encrypted bundle installed by URL: the same progress lines, the slot content,
  the reboot into the new slot;
* HTTPS with the test CA and a client-certificate-only location;
* storage: a bundle larger than the whole data partition installs, and the disks outside the slot
  do not grow;
* adaptive: v2, then v3 differing in 5 % of its blocks: nginx's access log shows that only about
  that much (plus metadata) of v3 crossed the network; the slot is byte for byte v3;
* bad network (404, 416, wrong CA, no client certificate, a server vanishing in the middle, a proxy
  flipping payload bytes, a server switching bundles after the signature): one LastError, the slot
  not activated, no nbd/dm/loop/mount left; the device still boots (the last test reboots it, after
  all the failed and successful streams of the module, and it comes up in the slot the URL install
  activated).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labs import lab
from tests.helpers.bundles import pyrauc
from tests.helpers.pki import Issued, make_recipients
from tests.helpers.webserver import FaultyProxy, Nginx, TlsFiles, bytes_served
from tests.lab.devices import EfiDevice
from tests.lab.target import RaucTargetDriver

COMPATIBLE = "pyrauc-qemux86-64"
HOST = "10.0.2.2"                 # QEMU user networking: the host's loopback as the target sees it
TIMEOUT = 1800
BLOCK = 4096
# a connected NBD device has a size; helpers left behind would show in ps
NBD_CHECK = ("for f in /sys/block/nbd*/size; do [ \"$(cat $f)\" != 0 ] && echo \"connected: $f\"; done; "
             "pgrep -af '[p]yrauc[.]nbd' || true")
pytestmark = [pytest.mark.lg_feature("uefi-vars"), pytest.mark.timeout(7200)]


@dataclass
class Web:
    work: Path
    www: Path
    nginx: Nginx
    tls: TlsFiles
    keyring: Path
    signer_cert: Path
    signer_key: Path
    device: Issued

    def url(self, name: str, **kw: Any) -> str:
        return self.nginx.url(name, host=HOST, **kw)

    def bundle(self, name: str, image: Path, *, version: str, fmt: str = "crypt", adaptive: bool = False,
               encrypt: bool = False) -> Path:
        """A bundle with IMAGE (raw) for slot class rootfs, served as www/<name>.raucb."""
        content = self.work / f"content-{name}"
        shutil.rmtree(content, ignore_errors=True)
        content.mkdir()
        os.link(image, content / "rootfs.img")
        (content / "manifest.raucm").write_text(
            f"[update]\ncompatible={COMPATIBLE}\nversion={version}\n\n[bundle]\nformat={fmt}\n\n"
            "[image.rootfs]\nfilename=rootfs.img\n" + ("adaptive=block-hash-index\n" if adaptive else ""))
        out = self.www / f"{name}.raucb"
        plain = out if not encrypt else self.work / f"{name}-plain.raucb"
        pyrauc("bundle", "--cert", self.signer_cert, "--key", self.signer_key, content, plain, check=True)
        if encrypt:
            pyrauc("encrypt", "--keyring", self.keyring, "--to", self.device.cert_path, plain, out, check=True)
        shutil.rmtree(content)
        out.chmod(0o644)
        return out


def payload_size(bundle: Path) -> int:
    with open(bundle, "rb") as f:
        f.seek(-8, os.SEEK_END)
        sigsize = int.from_bytes(f.read(8), "big")
    return bundle.stat().st_size - 8 - sigsize


def random_image(path: Path, mib: int, seed: int) -> Path:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(rnd.randbytes(1 << 20))
    return path


def changed_image(src: Path, dst: Path, fraction: float, extents: int = 8, seed: int = 3) -> list[tuple[int, int]]:
    """Copy SRC to DST with FRACTION of its 4 KiB blocks replaced, in EXTENTS runs (as file updates
    change extents of a file system); the changed (first block, count) runs."""
    data = bytearray(src.read_bytes())
    blocks = len(data) // BLOCK
    per = int(blocks * fraction) // extents
    rnd = random.Random(seed)
    runs = []
    for i in range(extents):
        first = (i * blocks) // extents + rnd.randrange(0, blocks // extents - per)
        data[first * BLOCK:(first + per) * BLOCK] = rnd.randbytes(per * BLOCK)
        runs.append((first, per))
    dst.write_bytes(bytes(data))
    return runs


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, lab_run: Path) -> Iterator[Web]:
    work = tmp_path_factory.mktemp("streaming")
    www = work / "www"
    www.mkdir()
    tls = TlsFiles.make(work / "tls")
    for d in (work, www, work / "tls"):
        d.chmod(0o755)
    pki = lab.cache_dir() / "lab-pki"
    device = make_recipients(work / "devices", 1, "p256", prefix="stream-dev")[0]
    server = Nginx(www, work / "nginx", tls).start()
    try:
        yield Web(work, www, server, tls, pki / "ca.cert.pem", pki / "signer.cert.pem", pki / "signer.key.pem",
                  device)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dut(strategy: Any, target: Any, web: Web) -> RaucTargetDriver:
    """The booted target (A) with the streaming device key, the test CA and a client certificate."""
    drv: RaucTargetDriver = target.get_driver(RaucTargetDriver)
    assert drv.booted_bootname() == "A"
    drv.put_keys(web.device.key_path, web.device.cert_path)
    drv.sh("mkdir -p /etc/rauc/tls")
    drv.put(web.tls.ca.cert_path, "/etc/rauc/tls/ca.pem")
    drv.put(web.tls.other_ca.cert_path, "/etc/rauc/tls/other-ca.pem")
    drv.put(web.tls.client.cert_path, "/etc/rauc/tls/client.pem")
    drv.put(web.tls.client.key_path, "/etc/rauc/tls/client.key")
    drv.sh("chmod 0644 /etc/rauc/tls/*")       # the sandbox user (nobody) reads the client key
    return drv


def _install(dut: RaucTargetDriver, url: str, options: str = "") -> tuple[str, int, list[str]]:
    out, err, code = dut.install(url, options=options, timeout=TIMEOUT)
    text = out + "\n" + err
    return text, code, [line for line in text.splitlines() if line.startswith("LastError:")]


def _slot_sha(dut: RaucTargetDriver, size: int, partlabel: str = "rootfs-b") -> str:
    return dut.sh(f"head -c {size} /dev/disk/by-partlabel/{partlabel} | sha256sum", timeout=900).split()[0]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _clean(dut: RaucTargetDriver) -> None:
    assert dut.leftovers() == ""
    assert dut.sh(NBD_CHECK).strip() == ""


def _journal(dut: RaucTargetDriver, since: str) -> str:
    return dut.sh(f"journalctl --no-pager -o cat --since '{since}' -u rauc.service", timeout=120)


def _now(dut: RaucTargetDriver) -> str:
    return dut.sh("date '+%Y-%m-%d %H:%M:%S'").strip()


def _record(lab_run: Path, key: str, value: Any) -> None:
    """Numbers for benchmarks and the run's summary: results/<run>/streaming.json."""
    path = lab_run / "streaming.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2) + "\n")


def test_info_url_on_the_target(web: Web, dut: RaucTargetDriver) -> None:
    image = random_image(web.work / "small.img", 8, seed=11)
    web.bundle("small", image, version="small", fmt="verity")
    out = dut.sh(f"rauc info {web.url('small.raucb')}", timeout=300)
    assert "Bundle Format:" in out and "verity" in out


def test_mount_url_and_umount_releases_everything(web: Web, dut: RaucTargetDriver) -> None:
    """``rauc mount URL`` leaves the bundle mounted on /dev/nbdN; ``umount`` later releases the dm
    devices, disconnects the NBD device (DISCONNECT_ON_CLOSE) and ends the helper."""
    out = dut.sh(f"rauc mount {web.url('small.raucb')}", timeout=300)
    assert "Mounted bundle at /mnt/rauc/bundle. Use 'umount /mnt/rauc/bundle' to unmount." in out
    assert dut.sh("test -s /mnt/rauc/bundle/rootfs.img && echo ok").strip() == "ok"
    assert "connected" in dut.sh(NBD_CHECK)
    dut.sh("umount /mnt/rauc/bundle")
    deadline = time.monotonic() + 30          # deferred dm removal, then the kernel's disconnect
    while dut.sh(NBD_CHECK).strip() and time.monotonic() < deadline:
        time.sleep(0.5)
    _clean(dut)


BAD_NETWORK = ["404", "416", "wrong-ca", "no-client-cert", "server-vanishes", "flipped-bytes", "switched-bundle"]


@pytest.fixture(scope="module")
def bad_bundles(web: Web) -> dict[str, Path]:
    image = random_image(web.work / "bad.img", 48, seed=21)
    other = random_image(web.work / "other.img", 48, seed=22)
    return {"good": web.bundle("bad-good", image, version="bad"),
            "other": web.bundle("bad-other", other, version="other")}


@pytest.mark.parametrize("case", BAD_NETWORK)
def test_bad_network(web: Web, dut: RaucTargetDriver, bad_bundles: dict[str, Path], case: str) -> None:
    if dut.efi_state().boot_next is not None:
        dut.run("efibootmgr --delete-bootnext")
    good = bad_bundles["good"]
    payload = payload_size(good)
    upstream = f"http://127.0.0.1:{web.nginx.http_port}"
    proxy: FaultyProxy | None = None
    options = ""
    url = web.url(good.name)
    expected = ""
    if case == "404":
        url, expected = web.url("no-such-bundle.raucb"), "not found: unexpected HTTP response code 404"
    elif case == "416":
        url = web.url(good.name, location="range-not-satisfiable/")
        expected = "unexpected HTTP response code 416"
    elif case == "wrong-ca":
        url, options = web.url(good.name, https=True), "--tls-ca=/etc/rauc/tls/other-ca.pem"
        expected = "SSL certificate problem"
    elif case == "no-client-cert":
        url = web.url(good.name, https=True, location="client-cert/")
        options, expected = "--tls-ca=/etc/rauc/tls/ca.pem", "unexpected HTTP response code 403"
    elif case == "server-vanishes":
        proxy = FaultyProxy(upstream, vanish_after=16 << 20)
        url, expected = proxy.url(good.name, host=HOST), "Input/output error"
    elif case == "flipped-bytes":
        proxy = FaultyProxy(upstream, flip=(8 << 20, payload))
        url, expected = proxy.url(good.name, host=HOST), "Input/output error"
    elif case == "switched-bundle":
        proxy = FaultyProxy(upstream, switch_to=upstream + "/__other__", switch_after_offset=payload)
        (web.www / "__other__").mkdir(exist_ok=True)
        target = web.www / "__other__" / good.name
        target.unlink(missing_ok=True)
        os.link(bad_bundles["other"], target)
        url = proxy.url(good.name, host=HOST)
    before_efi = dut.efi_state()
    before_a = dut.sh("cat /data/rauc/central.raucs 2>/dev/null | sed -n '/^\\[slot.rootfs.0\\]/,/^\\[/p' || true")
    try:
        text, code, last = _install(dut, url, options)
    finally:
        if proxy is not None:
            proxy.close()
    assert code == 1, text
    assert len(last) == 1, text
    if case == "flipped-bytes":
        # dm-verity refuses the block: while copying (EIO) or, when the flip hits squashfs' tables,
        # already while mounting (the kernel's "can't read superblock")
        assert "Input/output error" in last[0] or "can't read superblock" in last[0], last
        assert "verity" in dut.sh("dmesg | tail -n 50"), "no dm-verity error in the kernel log"
    else:
        assert expected in last[0], last
    if proxy is not None and case == "flipped-bytes":
        assert proxy.flipped > 0
    _clean(dut)
    after = dut.efi_state()
    assert after.boot_next is None or after.label_of(after.boot_next) != "B"      # target slot not activated
    assert after.first_slot_in_order == "A"
    if case in ("404", "416", "wrong-ca", "no-client-cert"):
        assert after == before_efi                     # refused before anything was touched
    assert dut.sh("cat /data/rauc/central.raucs 2>/dev/null | sed -n '/^\\[slot.rootfs.0\\]/,/^\\[/p' || true") \
        == before_a


def test_sigterm_in_the_middle_of_a_streamed_copy(web: Web, dut: RaucTargetDriver,
                                                  bad_bundles: dict[str, Path]) -> None:
    """SIGTERM to an install in this process (not the service): everything is torn down."""
    url = web.url(bad_bundles["good"].name)
    dut.sh(f"(PYRAUC_SERVICE=never setsid rauc install {url} > /tmp/sigterm.log 2>&1 & echo $! > /tmp/sigterm.pid)")
    dut.sh("for i in $(seq 600); do grep -q 'Copying image' /tmp/sigterm.log && break; sleep 0.5; done; "
           "grep -q 'Copying image' /tmp/sigterm.log", timeout=400)
    dut.sh("kill -TERM $(cat /tmp/sigterm.pid); for i in $(seq 240); do kill -0 $(cat /tmp/sigterm.pid) "
           "2>/dev/null || break; sleep 0.5; done; ! kill -0 $(cat /tmp/sigterm.pid) 2>/dev/null", timeout=200)
    log = dut.sh("cat /tmp/sigterm.log")
    assert "Interrupted" in log, log
    _clean(dut)
    after = dut.efi_state()
    assert after.boot_next is None or after.label_of(after.boot_next) != "B"


def test_https_client_certificate_install(web: Web, dut: RaucTargetDriver) -> None:
    image = random_image(web.work / "https.img", 24, seed=31)
    bundle = web.bundle("https", image, version="https", encrypt=True)
    url = web.url(bundle.name, https=True, location="client-cert/")
    text, code, _ = _install(dut, url, "--tls-ca=/etc/rauc/tls/ca.pem --tls-cert=/etc/rauc/tls/client.pem "
                                          "--tls-key=/etc/rauc/tls/client.key")
    assert code == 0, text
    assert _slot_sha(dut, image.stat().st_size) == _sha(image)
    served = [r for r in web.nginx.requests() if bundle.name in r["request"]]
    assert served and all(r["verify"] == "SUCCESS" for r in served)
    _clean(dut)


def test_storage_bundle_larger_than_the_data_partition(web: Web, dut: RaucTargetDriver, lab_run: Path) -> None:
    data_size = int(dut.sh("df -B1 --output=size /data | tail -1"))
    image = random_image(web.work / "big.img", max(320, data_size // (1 << 20) + 64), seed=41)
    bundle = web.bundle("big", image, version="big", encrypt=True)
    assert bundle.stat().st_size > data_size
    used = "df -B1 --output=used / /data | tail -2"
    before = [int(x) for x in dut.sh(used).split()]
    web.nginx.clear_log()
    since = _now(dut)
    text, code, _ = _install(dut, web.url(bundle.name))
    assert code == 0, text
    after = [int(x) for x in dut.sh("sync; " + used).split()]
    assert all(b - a < (8 << 20) for a, b in zip(before, after, strict=True)), (before, after)
    assert _slot_sha(dut, image.stat().st_size) == _sha(image)
    fetched = bytes_served(web.nginx.requests(), bundle.name)
    assert fetched < 1.05 * bundle.stat().st_size
    journal = _journal(dut, since)
    assert re.search(r"nbd server running as UID 65534", journal), journal[-3000:]
    assert "downloaded" in journal and "of the full bundle" in journal
    _record(lab_run, "storage", {"bundle": bundle.stat().st_size, "data_partition": data_size, "fetched": fetched,
                                 "disk_growth": [b - a for a, b in zip(before, after, strict=True)]})
    _clean(dut)


def test_adaptive_v2_to_v3(web: Web, dut: RaucTargetDriver, lab_run: Path) -> None:
    v2 = random_image(web.work / "v2.img", 160, seed=51)
    v3 = web.work / "v3.img"
    runs = changed_image(v2, v3, 0.05)
    b2 = web.bundle("adaptive-v2", v2, version="v2", adaptive=True)
    b3 = web.bundle("adaptive-v3", v3, version="v3", adaptive=True)
    text, code, _ = _install(dut, web.url(b2.name))
    assert code == 0, text
    assert _slot_sha(dut, v2.stat().st_size) == _sha(v2)
    web.nginx.clear_log()
    since = _now(dut)
    text, code, _ = _install(dut, web.url(b3.name))
    assert code == 0, text
    assert _slot_sha(dut, v3.stat().st_size) == _sha(v3)
    fetched = bytes_served(web.nginx.requests(), b3.name)
    payload = payload_size(b3)
    changed = sum(n for _, n in runs) * BLOCK
    journal = _journal(dut, since)
    assert "Selected adaptive update method 'block-hash-index'" in journal, journal[-3000:]
    _record(lab_run, "adaptive", {"payload": payload, "changed": changed, "fetched": fetched,
                                  "fetched_share": fetched / payload})
    assert changed <= fetched <= 0.10 * payload, (changed, fetched, payload)
    _clean(dut)


def test_tutorial_encrypted_bundle_by_url(web: Web, strategy: Any, dut: RaucTargetDriver, update_bundles: Path) -> None:
    """The tutorial's encrypted update, installed by URL; then the target boots it.

    Last in the module: its reboot is also the one that shows the device still boots after every
    bad stream above (none of which activated a slot: still A before this install)."""
    plain = EfiDevice().session_update_bundle(update_bundles, web.signer_cert, web.signer_key)
    encrypted = web.www / "update-v2-encrypted.raucb"
    pyrauc("encrypt", "--keyring", web.keyring, "--to", web.device.cert_path, plain, encrypted, check=True)
    encrypted.chmod(0o644)
    url = web.url(encrypted.name)
    assert dut.booted_bootname() == "A"
    text, code, _ = _install(dut, url)
    assert code == 0, text
    lines = text.splitlines()
    assert "  0% Installing" in lines and "100% Installing done." in lines
    assert any(line.endswith("Copying image to rootfs.1") for line in lines), text
    assert f"Installing `{url}` succeeded" in text
    _clean(dut)
    efi = dut.efi_state()
    assert efi.label_of(efi.boot_next) == "B"
    strategy.reboot()
    assert dut.booted_bootname() == "B"
    assert dut.sh("cat /etc/lab-update-version").strip() == "2"
    dut.sh("test -s /etc/rauc/crypt-key.pem && test -s /etc/rauc/crypt-cert.pem")
