"""Streaming on the host: the NBD helper against a real nginx, ``info URL`` end to end, the HTTP rules.

The kernel's NBD and the device mapper exist only on the lab target; here the helper's NBD side is
driven by a small NBD client in the test (several READs in flight, as the kernel sends them), and
``pyrauc info URL`` reads the framing and the CMS with Range requests in user space. nginx (Debian's)
serves the bundles over HTTP and HTTPS (test CA, a client-certificate-only location, basic auth,
a redirect, no Range support, 204); :class:`tests.helpers.webserver.FaultyProxy` misbehaves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyrauc import bundle, config, nbd, stream
from pyrauc.access import REMOTE_REFUSED, BundleAccess
from pyrauc.errors import BundleError, RaucError
from pyrauc.stream import StreamOptions
from tests.helpers.bundles import error_lines, pyrauc, pyrauc_bundle, write_content
from tests.helpers.pki import Pki
from tests.helpers.webserver import PASSWORD, USER, FaultyProxy, Nginx, TlsFiles

pytestmark = pytest.mark.timeout(300)


def _sandbox_user() -> str:
    """nobody when nobody can run this Python (on the target it can), else ourselves (the host's
    Python may live under /root)."""
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        try:
            probe = subprocess.run([sys.executable, "-c", "import pyrauc.nbd"], user=nobody.pw_uid,
                                   group=nobody.pw_gid, extra_groups=[], capture_output=True, cwd="/", check=False)
        except OSError:
            probe = None
        if probe is not None and probe.returncode == 0:
            return "nobody"
    return pwd.getpwuid(os.getuid()).pw_name


SANDBOX = _sandbox_user()


@contextlib.contextmanager
def captured(name: str) -> Iterator[list[str]]:
    """The messages logged (INFO and up) to logger ``name`` while the block runs (the CLI's logging
    setup may have turned propagation off, so caplog cannot be relied on)."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@dataclass
class Site:
    """nginx serving verity, crypt and plain bundles (and a 1 MiB blob), and what it was made from."""

    nginx: Nginx
    tls: TlsFiles
    www: Path
    keyring: Path
    pki: Pki

    def url(self, name: str, **kw: object) -> str:
        return self.nginx.url(name, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("streaming")
    www = work / "www"
    www.mkdir()
    for fmt in ("verity", "crypt", "plain"):
        pyrauc_bundle(write_content(work / f"content-{fmt}", fmt, rootfs_size=1 << 20), www / f"{fmt}.raucb",
                      pki.signer_direct)
    (www / "blob.bin").write_bytes(random.Random(1).randbytes(1 << 20))
    tls = TlsFiles.make(work / "tls")
    for d in (work, www, work / "tls"):
        d.chmod(0o755)          # nginx workers and the sandboxed helper read from here
    server = Nginx(www, work / "nginx", tls).start()
    try:
        yield Site(server, tls, www, pki.keyring, pki)
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# the helper's NBD side, driven like the kernel drives it

class KernelLikeClient:
    """Sends several READs before reading any reply, matches replies by handle."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, kind: int, handle: int, offset: int = 0, length: int = 0, payload: bytes = b"") -> None:
        self.sock.sendall(nbd.REQUEST.pack(nbd.REQUEST_MAGIC, kind, handle.to_bytes(8, "big"), offset, length)
                          + payload)

    def reply(self, lengths: dict[int, int]) -> tuple[int, int, bytes]:
        header = nbd._recv_exact(self.sock, nbd.REPLY.size)
        magic, error, handle_bytes = nbd.REPLY.unpack(header)
        assert magic == nbd.REPLY_MAGIC
        handle = int.from_bytes(handle_bytes, "big")
        data = nbd._recv_exact(self.sock, lengths[handle]) if error == 0 else b""
        return handle, error, data


def _start(site: Site, url: str, **options: object) -> nbd.Helper:
    opts = StreamOptions(sandbox_user=SANDBOX, **options)  # type: ignore[arg-type]
    helper = nbd.Helper.start(opts)
    helper.configure(url, opts)
    return helper


def test_helper_answers_concurrent_reads_in_any_order(site: Site) -> None:
    blob = (site.www / "blob.bin").read_bytes()
    helper = _start(site, site.url("blob.bin"))
    assert helper.info is not None and helper.info.size == len(blob)
    assert helper.read(4096, 100) == blob[4096:4196]            # phase A: pyrauc's own reads
    sock = helper.release_socket()
    client = KernelLikeClient(sock)
    wanted = {h: (h * 8192, 4096 + 512 * h) for h in range(1, 33)}
    for h, (offset, length) in wanted.items():
        client.send(nbd.CMD_READ, h, offset, length)
    got = {}
    for _ in wanted:
        handle, error, data = client.reply({h: ln for h, (_, ln) in wanted.items()})
        assert error == 0
        got[handle] = data
    assert got == {h: blob[o:o + ln] for h, (o, ln) in wanted.items()}
    client.send(nbd.CMD_DISC, 99)
    sock.close()
    assert helper.proc.wait(30) == 0


def test_helper_reuses_connections_and_reports_statistics(site: Site) -> None:
    site.nginx.clear_log()
    helper = nbd.Helper.start(StreamOptions(sandbox_user=SANDBOX))
    proc_err = helper.proc
    helper.configure(site.url("blob.bin"), StreamOptions(sandbox_user=SANDBOX))
    for i in reversed(range(16)):
        helper.read(i * 65536, 32768)              # backwards: no read-ahead, one request each
    helper.stop()
    requests = [r for r in site.nginx.requests() if "blob.bin" in r["request"]]
    assert len(requests) == 17
    assert max(r["connection_requests"] for r in requests) == 17       # one keep-alive connection
    assert requests[0]["ua"].startswith("rauc/") and requests[0]["range"] == "bytes=0-3"
    assert all(r["ua"] == "" for r in requests[1:])                   # data requests: custom headers only
    assert proc_err.returncode == 0


def test_helper_statistics_lines(site: Site) -> None:
    opts = StreamOptions(sandbox_user=SANDBOX)
    sock_a, sock_b = socket.socketpair()
    env = {**os.environ, nbd.ENV: str(sock_b.fileno())}
    proc = subprocess.Popen([sys.executable, "-m", "pyrauc.nbd"], env=env, pass_fds=(sock_b.fileno(),),
                            stderr=subprocess.PIPE, text=True)
    sock_b.close()
    helper = nbd.Helper(proc, sock_a)                   # type: ignore[arg-type]
    helper.configure(site.url("blob.bin"), opts)
    helper.read(0, 1 << 19)
    helper.stop()
    assert proc.stderr is not None
    err = proc.stderr.read()
    for label in ("dl_size", "dl_speed", "namelookup", "connect", "starttransfer", "total"):
        assert f"nbd {label}: count=2 sum=" in err or f"nbd {label}: count=1 sum=" in err, err
    assert "downloaded 50.0% of the full bundle" in err
    assert "nbd server exiting" in err and "nbd server received disconnect request" in err


def test_helper_eio_when_the_file_vanishes_and_after_retries(site: Site, tmp_path: Path) -> None:
    victim = site.www / "victim.bin"
    victim.write_bytes(b"x" * 65536)
    helper = _start(site, site.url("victim.bin"))
    victim.unlink()
    with pytest.raises(stream.StreamError, match="failed to read data from remote server"):
        helper.read(0, 4096)              # 404: no retry
    helper.stop()


def test_helper_refuses_a_bad_request_type(site: Site) -> None:
    helper = _start(site, site.url("blob.bin"))
    sock = helper.release_socket()
    KernelLikeClient(sock).send(1, 7)                 # WRITE: never sent to a read-only device
    assert helper.proc.wait(30) == 1
    sock.close()


def test_helper_startup_failures(site: Site) -> None:
    for url, text in ((site.url("missing.raucb"), "not found: unexpected HTTP response code 404"),
                      (site.url("blob.bin", location="nocontent/"), "no content: no content"),
                      (site.url("blob.bin", location="norange/"),
                       "failed to configure streaming: range requests not supported by server")):
        helper = nbd.Helper.start(StreamOptions(sandbox_user=SANDBOX))
        with pytest.raises(stream.ProbeError) as info:
            helper.configure(url, StreamOptions(sandbox_user=SANDBOX))
        assert str(info.value) == text
        helper.stop()


@pytest.mark.skipif(os.getuid() != 0, reason="dropping privileges needs root")
def test_sandbox_user_unknown() -> None:
    with pytest.raises(RaucError, match="failed to prepare streaming subprocess: user no-such-user-x not found "
                                        "in user database"):
        nbd.Helper.start(StreamOptions(sandbox_user="no-such-user-x"))


@pytest.mark.skipif(SANDBOX != "nobody", reason="nobody cannot run this host's Python (lab: tests/lab)")
def test_helper_runs_as_the_sandbox_user(site: Site) -> None:
    helper = _start(site, site.url("blob.bin"))
    uid = int(Path(f"/proc/{helper.proc.pid}/status").read_text().split("Uid:")[1].split()[0])
    status = Path(f"/proc/{helper.proc.pid}/status").read_text()
    helper.stop()
    assert uid == pwd.getpwnam("nobody").pw_uid
    assert "NoNewPrivs:\t1" in status


# --------------------------------------------------------------------------------------------
# opening remote bundles (the library)

def _access(site: Site, **streaming: object) -> BundleAccess:
    from pyrauc.signature import Keyring

    return BundleAccess(keyring=Keyring().with_path(str(site.keyring)),
                        streaming=StreamOptions(sandbox_user=SANDBOX, **streaming))  # type: ignore[arg-type]


@pytest.mark.parametrize("sandboxed", [False, True], ids=["user-space", "helper"])
@pytest.mark.parametrize("fmt", ["verity", "crypt"])
def test_open_remote_bundle(site: Site, fmt: str, sandboxed: bool) -> None:
    local = bundle.open_bundle(site.www / f"{fmt}.raucb", keyring=_access(site).keyring)
    with _access(site).open(site.url(f"{fmt}.raucb"), sandboxed=sandboxed) as remote:
        assert remote.source is not None and remote.location == site.url(f"{fmt}.raucb")
        assert remote.manifest.to_data() == local.manifest.to_data()
        assert (remote.size, remote.cms) == (local.size, local.cms)
        assert remote.verified is not None
    if sandboxed:
        assert remote.source.helper.proc.returncode == 0     # type: ignore[attr-defined]


def test_plain_bundles_are_not_streamed(site: Site) -> None:
    with pytest.raises(BundleError, match=r"^Bundle format 'plain' not supported in streaming mode$"):
        _access(site).open(site.url("plain.raucb"), sandboxed=True)


def test_payload_not_a_multiple_of_4k(site: Site) -> None:
    payload, cms = (site.www / "verity.raucb").read_bytes(), b""
    size = int.from_bytes(payload[-8:], "big")
    cms = payload[-8 - size:-8]
    odd = site.www / "odd.raucb"
    odd.write_bytes(payload[:4096 * 3 + 100] + cms + size.to_bytes(8, "big"))
    with pytest.raises(BundleError, match=r"^Invalid bundle format: Payload size \(12388\) is not a multiple of "
                                          r"4KiB. See https://rauc.readthedocs.io/en/latest/faq.html#"):
        _access(site).open(site.url("odd.raucb"), sandboxed=False)


def test_bundle_too_small_and_signature_size(site: Site) -> None:
    (site.www / "tiny.raucb").write_bytes(b"1234")
    (site.www / "zero.raucb").write_bytes(b"\0" * 4096 + b"\0" * 8)
    with pytest.raises(BundleError, match=r"^Invalid bundle format: Bundle size \(4\) is too small$"):
        _access(site).open(site.url("tiny.raucb"), sandboxed=False)
    with pytest.raises(BundleError, match=r"^Invalid bundle format: Signature size is 0$"):
        _access(site).open(site.url("zero.raucb"), sandboxed=False)


# --------------------------------------------------------------------------------------------
# the CLI: info URL end to end, options, refusals

def _info(site: Site, url: str, *extra: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return pyrauc("info", "--keyring", site.keyring, *extra, url)


def test_info_url_over_http_and_https(site: Site) -> None:
    local = pyrauc("info", "--keyring", site.keyring, site.www / "crypt.raucb", check=True)
    remote = _info(site, site.url("crypt.raucb", https=True), "--tls-ca", site.tls.ca.cert_path)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    assert "Remote URI detected, streaming bundle..." in remote.stderr
    assert "received HTTP server info: total size" in remote.stderr


def test_info_url_without_keyring_fails_before_any_request(site: Site) -> None:
    """As RAUC: no keyring, no verification possible: one error line, nothing fetched."""
    site.nginx.clear_log()
    url = site.url("verity.raucb")
    refused = pyrauc("info", url)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == ["No keyring file or directory provided"]
    assert [r for r in site.nginx.requests() if "verity.raucb" in r["request"]] == []


def test_info_url_basic_auth_redirect_and_headers(site: Site) -> None:
    site.nginx.clear_log()
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{site.nginx.http_port}/auth/verity.raucb"
    ok = _info(site, url, "-H", "X-Test: one", "--http-header=X-Test: two")
    assert ok.returncode == 0, ok.stderr
    assert PASSWORD not in ok.stderr + ok.stdout
    refused = _info(site, site.url("verity.raucb", location="auth/"))
    assert error_lines(refused) == [f"Failed to stream bundle {site.url('verity.raucb', location='auth/')}: "
                                    "unauthorized: unexpected HTTP response code 401"]
    moved = _info(site, site.url("verity.raucb", location="redirect/"))
    assert moved.returncode == 0 and "redirected from" in moved.stderr
    logged = [r for r in site.nginx.requests() if "/auth/" in r["request"] and r["status"] == 206]
    assert logged and all(r["user"] == USER and r["x_test"] == "two" for r in logged)


def test_info_url_client_certificate_location(site: Site) -> None:
    url = site.url("verity.raucb", https=True, location="client-cert/")
    tls = site.tls
    ok = _info(site, url, "--tls-ca", tls.ca.cert_path, "--tls-cert", tls.client.cert_path,
               "--tls-key", tls.client.key_path)
    assert ok.returncode == 0, ok.stderr
    refused = _info(site, url, "--tls-ca", tls.ca.cert_path)
    assert error_lines(refused) == [f"Failed to stream bundle {url}: failed to configure streaming: "
                                    "unexpected HTTP response code 403"]


def test_info_url_server_certificate_checks(site: Site) -> None:
    url = site.url("verity.raucb", https=True)
    wrong = _info(site, url, "--tls-ca", site.tls.other_ca.cert_path)
    assert len(error_lines(wrong)) == 1
    assert error_lines(wrong)[0].startswith(f"Failed to stream bundle {url}: failed to configure streaming: "
                                            "SSL certificate problem: ")
    assert _info(site, url, "--tls-no-verify").returncode == 0


def test_info_url_send_headers_from_system_conf(site: Site, tmp_path: Path) -> None:
    handler = tmp_path / "system-info.sh"
    handler.write_text("#!/bin/sh\necho RAUC_HTTP_MY_CUSTOM_INFO=hello\n")
    handler.chmod(0o755)
    conf = tmp_path / "system.conf"
    conf.write_text("[system]\ncompatible=Test Config\nbootloader=noop\nvariant-name=var-1\n\n"
                    "[streaming]\nsend-headers=boot-id;machine-id;variant;uptime;transaction-id\n")
    site.nginx.clear_log()
    proc = pyrauc("-c", conf, "info", "--keyring", site.keyring, site.url("verity.raucb"))
    assert proc.returncode == 0, proc.stderr
    first, *rest = [r for r in site.nginx.requests() if "verity.raucb" in r["request"]]
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert first["boot_id"] == boot_id and first["uptime"] and first["transaction_id"] == ""
    machine_id = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
    assert first["machine_id"] == machine_id
    assert rest and all(r["boot_id"] == "" and r["uptime"] == "" for r in rest)    # first request only


def test_send_headers_item_checked(tmp_path: Path) -> None:
    conf = tmp_path / "system.conf"
    conf.write_text("[system]\ncompatible=x\nbootloader=noop\n\n[streaming]\nsend-headers=boot-id;shoe-size\n")
    with pytest.raises(RaucError, match=r"^Failed to load system config \(.*\): "
                                        r"Automatic HTTP header 'shoe-size' not supported$"):
        config.load_config(str(conf))


def test_auto_headers_order_and_handler_variables(tmp_path: Path) -> None:
    proc, etc = tmp_path / "proc", tmp_path / "etc"
    (proc / "sys/kernel/random").mkdir(parents=True)
    (proc / "sys/kernel/random/boot_id").write_text("b00t\n")
    (proc / "uptime").write_text("1234.56 99.0\n")
    etc.mkdir()
    headers = stream.auto_headers(list(stream.AUTO_HEADERS), proc=str(proc), etc=str(etc), transaction_id="t-1",
                                  system_info={"RAUC_SYSTEM_SERIAL": "42", "RAUC_SYSTEM_VERSION": "v9",
                                               "RAUC_HTTP_MY_CUSTOM_INFO": "x"}, variant="var")
    assert headers == ["RAUC-Boot-ID: b00t", "RAUC-System-Version: v9", "RAUC-Serial: 42", "RAUC-Variant: var",
                       "RAUC-Transaction-ID: t-1", "RAUC-Uptime: 1234.56", "RAUC-MY-CUSTOM-INFO: x"]
    assert list(stream.AUTO_HEADERS) == list(config.SEND_HEADERS)


@pytest.mark.parametrize("command", [
    ["extract", "{url}", "{tmp}/out"], ["resign", "--cert", "c", "--key", "k", "{url}", "{tmp}/o.raucb"],
    ["replace-signature", "{url}", "{tmp}/sig", "{tmp}/o.raucb"], ["encrypt", "--to", "c.pem", "{url}", "{tmp}/o"],
])
def test_whole_payload_commands_refuse_urls(site: Site, tmp_path: Path, command: list[str]) -> None:
    argv = [a.format(url=site.url("verity.raucb"), tmp=tmp_path) for a in command]
    proc = pyrauc(*argv)
    assert proc.returncode == 1
    assert error_lines(proc)[0].endswith(REMOTE_REFUSED)
    assert not list(tmp_path.iterdir())


def test_extract_signature_of_a_url(site: Site, tmp_path: Path) -> None:
    pyrauc("extract-signature", "--keyring", site.keyring, site.url("verity.raucb"), tmp_path / "sig.der",
           check=True)
    size = int.from_bytes((site.www / "verity.raucb").read_bytes()[-8:], "big")
    assert (tmp_path / "sig.der").read_bytes() == (site.www / "verity.raucb").read_bytes()[-8 - size:-8]


def test_unsupported_scheme(site: Site) -> None:
    proc = _info(site, "ftp://127.0.0.1/x.raucb")
    assert error_lines(proc) == ['Failed to stream bundle ftp://127.0.0.1/x.raucb: failed to configure streaming: '
                                 'Protocol "ftp" not supported']


# --------------------------------------------------------------------------------------------
# HTTP behaviour: retries, faults

def test_retries_then_eio_when_the_server_vanishes(site: Site) -> None:
    proxy = FaultyProxy(f"http://127.0.0.1:{site.nginx.http_port}", vanish_after=300_000)
    try:
        client = stream.HttpRangeClient(proxy.url("blob.bin"), StreamOptions())
        client.probe()
        client.read(0, 200_000)
        with pytest.raises(stream.StreamError, match=r"request failed \(no more retries\)"):
            client.read(200_000, 200_000)
        assert client.stats.count("connect") >= 1
    finally:
        proxy.close()


def test_flipping_proxy_delivers_wrong_bytes_that_verity_catches(site: Site, tmp_path: Path) -> None:
    """The proxy flips payload bytes; the CMS is intact, so the bundle opens, and the user-space verity
    check of what came through (what dm-verity does on the target) fails."""
    local = bundle.open_bundle(site.www / "verity.raucb", keyring=_access(site).keyring)
    proxy = FaultyProxy(f"http://127.0.0.1:{site.nginx.http_port}", flip=(0, local.size))
    try:
        with _access(site).open(proxy.url("verity.raucb"), sandboxed=False) as remote:
            assert remote.manifest.to_data() == local.manifest.to_data()      # the CMS came through intact
            assert remote.source is not None
            tail = (site.www / "verity.raucb").read_bytes()[remote.size:]
            copy = tmp_path / "copy.raucb"
            copy.write_bytes(remote.source.read(0, remote.size) + tail)
        assert proxy.flipped > 0
        with pytest.raises(RaucError, match="bundle payload is corrupted"):
            bundle.check_payload(bundle.open_bundle(copy, keyring=_access(site).keyring))
    finally:
        proxy.close()


def test_retry_count_and_delay(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "RETRY_DELAY", 0.01)
    with captured("pyrauc.stream") as messages:
        client = stream.HttpRangeClient(site.url("blob.bin", location="range-not-satisfiable/"), StreamOptions())
        with pytest.raises(stream.ProbeError,
                           match="failed to configure streaming: unexpected HTTP response code 416"):
            client.probe()
    retries = [m for m in messages if "retrying" in m]
    assert len(retries) == 5 and retries[-1].endswith("(retrying 5/5)")


def test_pkcs11_tls_key_refused() -> None:
    with pytest.raises(stream.StreamError, match="PKCS#11 URI is not supported"):
        stream.HttpRangeClient("https://127.0.0.1/x", StreamOptions(tls_cert="c.pem", tls_key="pkcs11:token=x"))


def test_options_precedence() -> None:
    conf = {"tls-cert": "/c", "tls-key": "/k", "tls-ca": "/ca", "sandbox-user": "rauc"}
    opts = StreamOptions.build(conf, tls_ca="/other", headers=["A: b"])
    assert (opts.tls_cert, opts.tls_key, opts.tls_ca, opts.sandbox_user, opts.headers) == \
        ("/c", "/k", "/other", "rauc", ("A: b",))
    assert StreamOptions.from_json(opts.to_json()) == opts
    assert StreamOptions.build(None).sandbox_user == "nobody"


def test_netlink_connect_attributes() -> None:
    attrs = nbd.parse_attrs(nbd.connect_attrs(7, 1 << 20))
    assert struct.unpack("=Q", attrs[nbd.NBD_ATTR_SIZE_BYTES])[0] == 1 << 20
    assert struct.unpack("=Q", attrs[nbd.NBD_ATTR_BLOCK_SIZE_BYTES])[0] == 4096
    assert struct.unpack("=Q", attrs[nbd.NBD_ATTR_TIMEOUT])[0] == 300
    assert struct.unpack("=Q", attrs[nbd.NBD_ATTR_SERVER_FLAGS])[0] == 0
    item = nbd.parse_attrs(attrs[nbd.NBD_ATTR_SOCKETS])[nbd.NBD_SOCK_ITEM]
    assert struct.unpack("=I", nbd.parse_attrs(item)[nbd.NBD_SOCK_FD])[0] == 7
    with pytest.raises(nbd.NbdError, match="not a positive multiple of 4096"):
        nbd.kernel_device(None, 1000)  # type: ignore[arg-type]


@pytest.mark.parametrize(("hardware", "expected"), [("32768", "4096"), ("1024", "1024")])
def test_request_limit_raised_within_the_hardware_limit(tmp_path: Path, hardware: str, expected: str) -> None:
    queue = tmp_path / "block" / "nbd3" / "queue"
    queue.mkdir(parents=True)
    (queue / "max_hw_sectors_kb").write_text(hardware + "\n")
    (queue / "max_sectors_kb").write_text("128\n")
    nbd.raise_request_limit(3, sysfs=str(tmp_path))
    assert (queue / "max_sectors_kb").read_text() == expected
    nbd.raise_request_limit(4, sysfs=str(tmp_path))       # no such device: nothing raised, nothing written
    assert not (tmp_path / "block" / "nbd4").exists()


def test_helper_threads_do_not_block_on_failures(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many failing requests at once (a vanished file): every one is answered with EIO."""
    victim = site.www / "victim2.bin"
    victim.write_bytes(b"y" * 65536)
    helper = _start(site, site.url("victim2.bin"))
    victim.unlink()
    sock = helper.release_socket()
    client = KernelLikeClient(sock)
    for h in range(1, 17):
        client.send(nbd.CMD_READ, h, 0, 4096)
    errors = {client.reply({h: 4096 for h in range(1, 17)})[1] for _ in range(16)}
    assert errors == {nbd.EIO}
    client.send(nbd.CMD_DISC, 0)
    sock.close()
    assert helper.proc.wait(30) == 0


def test_threaded_reads_through_one_client(site: Site) -> None:
    blob = (site.www / "blob.bin").read_bytes()
    client = stream.HttpRangeClient(site.url("blob.bin"), StreamOptions(), connections=4)
    client.probe()
    results: dict[int, bytes] = {}

    def worker(i: int) -> None:
        results[i] = client.read(i * 16384, 16384)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == blob[i * 16384:(i + 1) * 16384] for i in range(32))
    assert json.loads(json.dumps(client.stats.count("total"))) == 33


# --------------------------------------------------------------------------------------------
# the D-Bus service: InspectBundle and InstallBundle of a URL

@pytest.mark.skipif(os.geteuid() != 0, reason="the service test target needs root (loop devices)")
def test_service_inspects_a_url_and_installs_only_with_kernel_nbd(site: Site, tmp_path: Path, pki: Pki) -> None:
    from dbus_fast import Variant

    from pyrauc import loop
    from tests.helpers.dbus import BusClient, Service, private_bus
    from tests.unit.test_install import SLOT_SIZE, Target, assert_clean, write_conf

    slot0, slot1 = tmp_path / "slot0.img", tmp_path / "slot1.img"
    slot0.write_bytes(b"\xaa" * SLOT_SIZE)
    slot1.write_bytes(b"\x00" * SLOT_SIZE)
    with loop.loop_device(slot1, read_only=False) as dev:
        t = Target(tmp_path, tmp_path / "system.conf", slot0, slot1, dev, pki)
        write_conf(t, extra=f"\n[streaming]\nsandbox-user={SANDBOX}\nsend-headers=boot-id;transaction-id\n")
        with private_bus() as bus:
            client = BusClient(bus.address)
            svc = Service(bus, t.conf, "--override-boot-slot", "A")
            svc.wait_ready(client)
            try:
                url = site.url("verity.raucb", location="client-cert/", https=True)
                info = client.ok("InspectBundle", "sa{sv}", url, {
                    "tls-ca": Variant("s", str(site.tls.ca.cert_path)),
                    "tls-cert": Variant("s", str(site.tls.client.cert_path)),
                    "tls-key": Variant("s", str(site.tls.client.key_path)),
                    "http-headers": Variant("as", ["X-Test: dbus"])})[0]
                assert info["update"]["compatible"] == "Test Config" and info["bundle"]["format"] == "verity"
                site.nginx.clear_log()
                client.ok("InstallBundle", "sa{sv}", site.url("verity.raucb"),
                          {"transaction-id": Variant("s", "7d2f6c1a-0000-4000-8000-000000000001")})
                assert client.wait_completed() == 1
                last = client.props()["LastError"]
                nbd_missing = not Path("/sys/module/nbd").exists()
                if nbd_missing:
                    assert last == ("failed to resolve 'nbd' netlink family - BLK_DEV_NBD not enabled in kernel?"), last
                first = site.nginx.requests()[0]
                assert first["transaction_id"] == "7d2f6c1a-0000-4000-8000-000000000001" and first["boot_id"]
            finally:
                client.close()
                assert svc.stop() == 0, svc.stderr()
                log = svc.stderr()
        assert "nbd server exiting" in log and "nbd server running as UID" in log
        assert slot1.read_bytes() == b"\x00" * SLOT_SIZE
    assert_clean(tmp_path)


def test_server_in_process_reports_progress(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """NbdServer in a thread of the test (no subprocess): CONFIGURE, READs, progress lines, DISC."""
    monkeypatch.setattr(nbd, "PROGRESS_INTERVAL", 0.0)
    ours, theirs = socket.socketpair()
    server = nbd.NbdServer(theirs, workers=2)
    thread = threading.Thread(target=server.serve)
    with captured("pyrauc.nbd") as messages:
        thread.start()
        try:
            helper = nbd.Helper(None, ours)                     # type: ignore[arg-type]
            info = helper.configure(site.url("blob.bin"), StreamOptions())
            assert helper.read(0, 1 << 18) == (site.www / "blob.bin").read_bytes()[:1 << 18]
            assert info.size == 1 << 20
            ours.sendall(nbd.REQUEST.pack(nbd.REQUEST_MAGIC, nbd.CMD_DISC, nbd.CONFIG_HANDLE, 0, 0))
            thread.join(30)
        finally:
            ours.close()
            theirs.close()
    assert any(m.startswith("nbd server: downloaded ") and "(25.0% of the bundle)" in m for m in messages), messages
    assert "downloaded 25.0% of the full bundle" in messages


def test_switching_proxy_serves_another_bundle_after_the_signature(site: Site) -> None:
    """The signature is read from the bundle asked for; every later read comes from another one."""
    local = bundle.open_bundle(site.www / "verity.raucb", keyring=_access(site).keyring)
    (site.www / "other").mkdir(exist_ok=True)
    (site.www / "other" / "verity.raucb").write_bytes((site.www / "crypt.raucb").read_bytes())
    upstream = f"http://127.0.0.1:{site.nginx.http_port}"
    proxy = FaultyProxy(upstream, switch_to=upstream + "/other", switch_after_offset=local.size)
    try:
        with _access(site).open(proxy.url("verity.raucb"), sandboxed=False) as remote:
            assert remote.manifest.to_data() == local.manifest.to_data()
            assert remote.source is not None
            assert remote.source.read(0, 4096) == (site.www / "crypt.raucb").read_bytes()[:4096]
        assert proxy.switched
    finally:
        proxy.close()


def test_http_proxy_from_the_environment(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = FaultyProxy(f"http://127.0.0.1:{site.nginx.http_port}")
    try:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        client = stream.HttpRangeClient(site.url("blob.bin"), StreamOptions())
        assert client.probe().size == 1 << 20
        assert client.read(0, 4096) == (site.www / "blob.bin").read_bytes()[:4096]
        assert proxy.requested == [site.url("blob.bin")] * 2
    finally:
        proxy.close()


def test_merge_reads_groups_adjacent_ranges() -> None:
    h = [bytes([i]) * 8 for i in range(6)]
    runs = nbd.merge_reads([(h[0], 8192, 4096), (h[1], 0, 4096), (h[2], 4096, 4096), (h[3], 20480, 4096),
                            (h[4], 16384, 4096), (h[5], 24576, 8192)], limit=12288)
    assert [[r[1] for r in run] for run in runs] == [[0, 4096, 8192], [16384, 20480], [24576]]


class Blob:
    """An in-memory bundle for :class:`nbd.ReadAhead`: the fetches it was asked for, and failures on demand."""

    def __init__(self, size: int) -> None:
        self.data = random.Random(size).randbytes(size)
        self.fetches: list[tuple[int, int]] = []
        self.fail = 0
        self.lock = threading.Lock()

    def fetch(self, offset: int, length: int) -> bytes:
        with self.lock:
            self.fetches.append((offset, length))
            if self.fail:
                self.fail -= 1
                raise stream.StreamError("request failed (no more retries): connection refused")
        return self.data[offset:offset + length]

    @property
    def fetched(self) -> int:
        return sum(n for _, n in self.fetches)


BLOCK128 = 128 << 10


def test_readahead_sequential_reads_take_few_fetches() -> None:
    """A squashfs reading 128 KiB blocks one after another: right bytes, a fraction of the fetches."""
    blob = Blob(64 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data))
    for pos in range(0, len(blob.data), BLOCK128):
        assert ra.read(pos, BLOCK128) == blob.data[pos:pos + BLOCK128]
    assert blob.fetched == len(blob.data)                       # nothing twice, nothing past the end
    assert len(blob.fetches) <= 512 // 5                         # 512 blocks
    assert max(n for _, n in blob.fetches) <= nbd.READAHEAD_MAX


def test_readahead_compressed_blocks_sharing_pages_make_a_run() -> None:
    """Compressed squashfs blocks (20-60 KiB, packed): each READ starts in the page the one before
    ended in. They still make one run that reads ahead, and no page is fetched twice."""
    blob = Blob(24 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data))
    rnd = random.Random(5)
    edge, reads = 0, 0
    while edge < len(blob.data) - (64 << 10):
        nxt = edge + rnd.randrange(20 << 10, 60 << 10)
        pos, end = edge // 4096 * 4096, -(-nxt // 4096) * 4096
        assert ra.read(pos, end - pos) == blob.data[pos:end]
        edge, reads = nxt, reads + 1
    assert blob.fetched <= edge + nbd.READAHEAD_MAX
    assert len(blob.fetches) <= reads // 4


def test_readahead_hash_blocks_read_with_the_data_take_few_fetches() -> None:
    """A copy through dm-verity: 128 KiB data READs, and after every fourth one a 4 KiB READ of the
    next hash block (one per 512 KiB of data) at the end of the bundle. The hash READs make a run of
    small READs too: after READAHEAD_START_READS of them they are fetched ahead, not one by one."""
    data, hashes = 64 << 20, 512 << 10
    blob = Blob(data + hashes)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data))
    for pos in range(0, data, BLOCK128):
        assert ra.read(pos, BLOCK128) == blob.data[pos:pos + BLOCK128]
        if pos % (512 << 10) == 0:
            at = data + pos // (512 << 10) * 4096
            assert ra.read(at, 4096) == blob.data[at:at + 4096]
    hash_fetches = [f for f in blob.fetches if f[0] >= data]
    assert sum(n for _, n in hash_fetches) == hashes             # every hash block once, none past the end
    assert len(hash_fetches) <= nbd.READAHEAD_START_READS + 16    # of 128 hash READs


def test_readahead_random_reads_fetch_only_their_bytes() -> None:
    """Blocks far apart (an adaptive update's missing blocks): each fetched exactly, once. A small
    READ again (squashfs's metadata blocks) is answered from the kept pages."""
    blob = Blob(64 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data))
    gap = nbd.READAHEAD_LINK + BLOCK128
    offsets = random.Random(1).sample(range(0, len(blob.data) - 4096, gap), 12)
    for pos in sorted(offsets, reverse=True) + sorted(offsets)[:1]:
        assert ra.read(pos, 4096) == blob.data[pos:pos + 4096]
    assert blob.fetched == 12 * 4096 and len(blob.fetches) == 12
    for _ in range(nbd.READAHEAD_PAGES):                       # pages kept: at most READAHEAD_PAGES
        pos = random.Random(2).randrange(0, len(blob.data) // 4096) * 4096
        assert ra.read(pos, 4096) == blob.data[pos:pos + 4096]
    assert len(ra._pages) <= nbd.READAHEAD_PAGES


def test_readahead_parallel_copy_readers_make_one_run() -> None:
    """Four readers each copying 2 MiB chunks side by side (handlers.copy_image): the readers' runs
    join into one, so requests grow to READAHEAD_MAX; nothing is fetched twice."""
    blob = Blob(64 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data))
    chunk, readers = 2 << 20, 4
    for group in range(0, len(blob.data), chunk * readers):
        for pos in range(0, chunk, BLOCK128):
            for r in range(readers):
                at = group + r * chunk + pos
                assert ra.read(at, BLOCK128) == blob.data[at:at + BLOCK128]
    assert blob.fetched == len(blob.data)
    assert len(blob.fetches) <= len(blob.data) // BLOCK128 // 4    # a quarter of the READs, falling with size


def test_readahead_overshoot_of_a_run_is_bounded() -> None:
    """A run of 3 MiB, then a jump: at most 1/READAHEAD_SHARE of the run (or one READ) fetched in vain."""
    blob = Blob(16 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data))
    start, run = 1 << 20, 3 << 20
    for pos in range(start, start + run, BLOCK128):
        assert ra.read(pos, BLOCK128) == blob.data[pos:pos + BLOCK128]
    assert run <= blob.fetched <= run + max(run // nbd.READAHEAD_SHARE, BLOCK128)
    assert ra.read(12 << 20, 4096) == blob.data[12 << 20:(12 << 20) + 4096]


def test_readahead_reads_again_fetch_only_their_bytes() -> None:
    """Bytes read before (dm-verity reads hash blocks again) are fetched again without read-ahead."""
    blob = Blob(16 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data))
    for pos in range(0, 4 << 20, BLOCK128):
        assert ra.read(pos, BLOCK128) == blob.data[pos:pos + BLOCK128]
    before = blob.fetched
    for pos in (4096, 1 << 20, 2 << 20, (2 << 20) + 4096):
        assert ra.read(pos, 4096) == blob.data[pos:pos + 4096]
    assert blob.fetched - before <= 4 * 4096


def test_readahead_parallel_readers_share_a_fetch() -> None:
    """Four threads reading the blocks after a long run at once: they share its read-ahead."""
    blob = Blob(8 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data))
    start = nbd.READAHEAD_START
    for pos in range(0, start, BLOCK128):                                # a run long enough to read ahead
        assert ra.read(pos, BLOCK128) == blob.data[pos:pos + BLOCK128]
    before = len(blob.fetches)
    got: dict[int, bytes] = {}

    def reader(i: int) -> None:
        got[i] = bytes(ra.read(start + i * BLOCK128, BLOCK128))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got == {i: blob.data[start + i * BLOCK128:start + (i + 1) * BLOCK128] for i in range(4)}
    assert len(blob.fetches) - before <= 3
    assert blob.fetched < start + 4 * BLOCK128 + nbd.READAHEAD_MAX


def test_readahead_failed_fetch_fails_its_readers_and_is_retried() -> None:
    blob = Blob(1 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data))
    blob.fail = 1
    with pytest.raises(stream.StreamError, match="connection refused"):
        ra.read(0, 4096)
    assert ra.read(0, 4096) == blob.data[:4096]
    assert len(blob.fetches) == 2


def test_readahead_memory_is_bounded_and_overshoot_dropped() -> None:
    """Eight readers side by side with a 1 MiB budget: held bytes stay near the budget, nothing is
    fetched twice; a run's unread overshoot is dropped after READAHEAD_STALE other reads."""
    blob = Blob(32 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data), keep=1 << 20)
    chunk, readers, peak = 1 << 20, 8, 0
    for group in range(0, 16 << 20, chunk * readers):
        for pos in range(0, chunk, BLOCK128):
            for r in range(readers):
                at = group + r * chunk + pos
                assert ra.read(at, BLOCK128) == blob.data[at:at + BLOCK128]
                peak = max(peak, sum(len(s.data) for s in ra._spans))
    assert peak <= (1 << 20) + BLOCK128
    assert blob.fetched <= (16 << 20) + (1 << 20)
    for i in range(nbd.READAHEAD_STALE + 1):       # far away, one block each: no read-ahead
        at = (20 << 20) + (i % 2) * (6 << 20)
        assert ra.read(at, 4096) == blob.data[at:at + 4096]
    assert all(s.start >= 20 << 20 for s in ra._spans)


def _serve(ra: nbd.ReadAhead, pos: int, length: int, hits: list[int]) -> bytes:
    """What the NBD server does with a READ: from fetched bytes at once, else through read()."""
    data = ra.cached(pos, length)
    if data is not None:
        hits.append(pos)
        return bytes(data)
    return bytes(ra.read(pos, length))


def test_readahead_background_windows_answer_a_steady_reader_at_once() -> None:
    """With spawn, the window after the one being read is fetched in the background: after the
    run's start nearly every READ is answered from fetched bytes, nothing is fetched twice."""
    blob = Blob(32 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data), spawn=lambda fill: fill())
    hits: list[int] = []
    for pos in range(0, len(blob.data), BLOCK128):
        assert _serve(ra, pos, BLOCK128, hits) == blob.data[pos:pos + BLOCK128]
    assert blob.fetched == len(blob.data)
    late = [p for p in range(nbd.READAHEAD_START * 2, len(blob.data), BLOCK128)]
    assert set(late) <= set(hits)                             # after the ramp: every READ
    assert len(blob.fetches) <= len(blob.data) // BLOCK128 // 4
    assert ra.cached(len(blob.data) - 4096, 4096) is not None  # the last page is kept
    assert ra.cached((1 << 20) + (64 << 10), 4096) is None     # read and dropped: not held


def test_readahead_cached_spans_windows_and_refuses_missing_bytes() -> None:
    """A READ across the end of one window into the next is answered from both; a READ with any
    byte not fetched yet is not answered from memory."""
    blob = Blob(16 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data), spawn=lambda fill: fill())
    hits: list[int] = []
    odd = 3 * 4096 + 100                       # READs that do not line up with the windows
    pos = 0
    while pos + odd <= len(blob.data):
        assert _serve(ra, pos, odd, hits) == blob.data[pos:pos + odd]
        pos += odd
    assert blob.fetched <= len(blob.data)
    assert len(hits) > 0.8 * (pos // odd)                   # all but the run's first 2 MiB and its ramp
    assert ra.cached(pos, 1 << 20) is None      # runs past the bundle's fetched bytes


def test_readahead_background_with_parallel_copy_readers_fetches_nothing_twice() -> None:
    """Four copy readers side by side, windows in the background: no byte twice, memory bounded."""
    blob = Blob(64 << 20)
    ra = nbd.ReadAhead(blob.fetch, len(blob.data), spawn=lambda fill: fill())
    chunk, readers, peak = 2 << 20, 4, 0
    hits: list[int] = []
    for group in range(0, len(blob.data), chunk * readers):
        for pos in range(0, chunk, BLOCK128):
            for r in range(readers):
                at = group + r * chunk + pos
                assert _serve(ra, at, BLOCK128, hits) == blob.data[at:at + BLOCK128]
                peak = max(peak, sum(len(s.data) for s in ra._spans))
    assert blob.fetched == len(blob.data)
    assert peak <= nbd.READAHEAD_KEEP + nbd.READAHEAD_MAX
    assert len(hits) > len(blob.data) // BLOCK128 // 2


def test_readahead_failed_background_fetch_is_fetched_again_by_the_read() -> None:
    """A window whose background fetch failed is forgotten: the READ that needs it fetches it."""
    blob = Blob(8 << 20)
    pending: list[Callable[[], None]] = []
    ra = nbd.ReadAhead(blob.fetch, len(blob.data), spawn=pending.append)
    hits: list[int] = []
    failed = 0
    for pos in range(0, len(blob.data), BLOCK128):
        while pending:                         # the background fetches run (and fail) first
            blob.fail = 1
            pending.pop(0)()
            failed += 1
        assert _serve(ra, pos, BLOCK128, hits) == blob.data[pos:pos + BLOCK128]
    assert failed > 0 and blob.fail == 0       # every READ got its bytes all the same


def test_readahead_background_threads_and_slow_fetches() -> None:
    """Real threads: four readers, fetches that take time, a pool of two for the windows."""
    blob = Blob(32 << 20)

    def slow(offset: int, length: int) -> bytes:
        time.sleep(0.001 + length / 2e9)
        return blob.fetch(offset, length)

    chunk = 2 << 20
    chunks = iter(range(0, len(blob.data), chunk))
    take = threading.Lock()
    wrong: list[int] = []
    with ThreadPoolExecutor(2) as pool:
        ra = nbd.ReadAhead(slow, len(blob.data), spawn=pool.submit)

        def reader() -> None:
            hits: list[int] = []
            while True:
                with take:
                    start = next(chunks, None)
                if start is None:
                    return
                for at in range(start, start + chunk, BLOCK128):
                    if _serve(ra, at, BLOCK128, hits) != blob.data[at:at + BLOCK128]:
                        wrong.append(at)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert wrong == []
    assert blob.fetched <= 1.01 * len(blob.data)


def test_adjacent_reads_in_flight_share_one_request(site: Site) -> None:
    """16 adjacent 64 KiB READs sent at once (as readahead does): fewer HTTP requests, right bytes."""
    blob = (site.www / "blob.bin").read_bytes()
    site.nginx.clear_log()
    helper = _start(site, site.url("blob.bin"))
    sock = helper.release_socket()
    client = KernelLikeClient(sock)
    for h in range(16):
        client.send(nbd.CMD_READ, h, h * 65536, 65536)
    got = dict(client.reply(dict.fromkeys(range(16), 65536))[0::2] for _ in range(16))
    client.send(nbd.CMD_DISC, 99)
    sock.close()
    assert helper.proc.wait(30) == 0
    assert got == {h: blob[h * 65536:(h + 1) * 65536] for h in range(16)}
    data_requests = [r for r in site.nginx.requests() if "blob.bin" in r["request"]][1:]
    fetched = sum(r["bytes"] for r in data_requests)
    assert 16 * 65536 <= fetched <= 16 * 65536 + nbd.READAHEAD_MAX     # a sequential run may read ahead
    assert len(data_requests) < 16


def test_basic_auth_from_netrc(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc_file = tmp_path / ".netrc"
    netrc_file.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    client = stream.HttpRangeClient(site.url("blob.bin", location="auth/"), StreamOptions())
    assert client.probe().size == 1 << 20
    monkeypatch.setenv("HOME", str(tmp_path / "nowhere"))
    with pytest.raises(stream.ProbeError, match="unauthorized: unexpected HTTP response code 401"):
        stream.HttpRangeClient(site.url("blob.bin", location="auth/"), StreamOptions()).probe()
