"""Real web servers for the streaming tests: Debian's nginx, and a small misbehaving proxy in front of it.

:class:`Nginx` serves a directory on 127.0.0.1 over HTTP and HTTPS (a test CA's server certificate),
with locations for basic auth (``/auth/``), client-certificate-only access (``/client-cert/``), a
redirect (``/redirect/``), no Range support (``/norange/``), ``204`` (``/nocontent/``) and ``416``
(``/range-not-satisfiable/``). Its access log is one JSON object per request (request, status, bytes
sent, Range, User-Agent, the RAUC-* headers, the basic-auth user, the client certificate check), read
back with :meth:`Nginx.requests`. The lab reaches the same server through QEMU's host address.

:class:`FaultyProxy` is an HTTP proxy (Python, 127.0.0.1) that forwards Range requests to nginx and
misbehaves on purpose: flip bytes of the payload, vanish after some bytes, or switch to another
bundle once the signature was read.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import urllib3

from tests.helpers.pki import Issued, issue

LOG_FORMAT = (
    "log_format pyrauc escape=json '{\"request\":\"$request\",\"status\":$status,\"bytes\":$body_bytes_sent,"
    "\"range\":\"$http_range\",\"ua\":\"$http_user_agent\",\"user\":\"$remote_user\","
    "\"verify\":\"$ssl_client_verify\",\"boot_id\":\"$http_rauc_boot_id\",\"machine_id\":\"$http_rauc_machine_id\","
    "\"system_version\":\"$http_rauc_system_version\",\"serial\":\"$http_rauc_serial\","
    "\"variant\":\"$http_rauc_variant\",\"transaction_id\":\"$http_rauc_transaction_id\","
    "\"uptime\":\"$http_rauc_uptime\",\"custom\":\"$http_rauc_my_custom_info\",\"x_test\":\"$http_x_test\","
    "\"protocol\":\"$server_protocol\",\"connection\":\"$connection\",\"connection_requests\":$connection_requests}';"
)
USER = "pyrauc"
PASSWORD = "s3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TlsFiles:
    """A test CA, nginx's server certificate and a client certificate under that CA."""

    ca: Issued
    server: Issued
    client: Issued
    other_ca: Issued

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        ca = issue(directory, "web-ca", ca=True)
        other = issue(directory, "other-web-ca", ca=True)
        client = issue(directory, "web-client", issuer=ca)
        server = issue(directory, "web-server", issuer=ca)
        # the server certificate needs a SAN for 127.0.0.1 and 10.0.2.2 (the lab's view of the host)
        import ipaddress

        cert = (x509.CertificateBuilder().subject_name(server.cert.subject).issuer_name(ca.cert.subject)
                .public_key(server.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(server.cert.not_valid_before_utc).not_valid_after(server.cert.not_valid_after_utc)
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("10.0.2.2"))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca.key, hashes.SHA256()))
        server.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        server.cert = cert
        for issued in (ca, other, client, server):      # readable by the streaming sandbox user
            issued.key_path.chmod(0o644)
        return cls(ca, server, client, other)


@dataclass
class Nginx:
    """nginx serving ``root`` on 127.0.0.1 (HTTP and HTTPS); :meth:`start` / :meth:`stop`."""

    root: Path
    workdir: Path
    tls: TlsFiles
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    def url(self, name: str, *, https: bool = False, host: str = "127.0.0.1", location: str = "") -> str:
        port = self.https_port if https else self.http_port
        return f"{'https' if https else 'http'}://{host}:{port}/{location}{name}"

    def config(self) -> str:
        root = self.root
        user = "user root root;" if os.getuid() == 0 else ""
        alias = f"alias {root}/;"
        return f"""{user}
worker_processes 2;
daemon off;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/error.log info;
events {{ worker_connections 512; }}
http {{
    {LOG_FORMAT}
    access_log {self.access_log} pyrauc;
    client_body_temp_path {self.workdir}/tmp;
    proxy_temp_path {self.workdir}/tmp;
    fastcgi_temp_path {self.workdir}/tmp;
    uwsgi_temp_path {self.workdir}/tmp;
    scgi_temp_path {self.workdir}/tmp;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    keepalive_timeout 120;
    server {{
        listen 127.0.0.1:{self.http_port};
        root {root};
        location /auth/ {{ auth_basic "pyrauc"; auth_basic_user_file {self.workdir}/htpasswd; {alias} }}
        location ~ ^/redirect/(.*)$ {{ return 302 /$1; }}
        location /norange/ {{ max_ranges 0; {alias} }}
        location /nocontent/ {{ return 204; }}
        location /range-not-satisfiable/ {{ return 416; }}
    }}
    server {{
        listen 127.0.0.1:{self.https_port} ssl http2;
        root {root};
        ssl_certificate {self.tls.server.cert_path};
        ssl_certificate_key {self.tls.server.key_path};
        ssl_client_certificate {self.tls.ca.cert_path};
        ssl_verify_client optional;
        location /client-cert/ {{
            if ($ssl_client_verify != SUCCESS) {{ return 403; }}
            {alias}
        }}
    }}
}}
"""

    def start(self) -> Nginx:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        (self.workdir / "htpasswd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen([nginx, "-p", str(self.workdir), "-c", str(conf), "-e",
                                      str(self.workdir / "error.log")], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx failed: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2), \
                        socket.create_connection(("127.0.0.1", self.https_port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        """Stop nginx now (SIGTERM: fast shutdown, open connections closed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def requests(self) -> list[dict[str, Any]]:
        """The access log so far, one dict per request."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def clear_log(self) -> None:
        """Start a new access log (nginx reopens it on SIGUSR1)."""
        self.access_log.write_text("")


def bytes_served(requests: list[dict[str, Any]], name: str) -> int:
    """Body bytes nginx sent for requests of ``name``."""
    return sum(int(r["bytes"]) for r in requests if name in r["request"])


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (e.g. nginx) that misbehaves on purpose.

    * ``flip``: (start, end) of the bundle in which one byte of every 4 KiB block is flipped on its way
      (the payload; the signature at the end stays intact);
    * ``vanish_after``: after this many body bytes, stop listening and drop every connection;
    * ``switch_to`` (a URL): once ``switch_after`` requests at or past ``switch_after_offset`` were
      served (the size and the signature: 2), serve every later request from that other bundle.
    """

    def __init__(self, upstream: str, *, flip: tuple[int, int] | None = None, vanish_after: int | None = None,
                 switch_to: str | None = None, switch_after_offset: int | None = None, switch_after: int = 2) -> None:
        self.upstream = upstream
        self.flip = flip
        self.vanish_after = vanish_after
        self.switch_to = switch_to
        self.switch_after_offset = switch_after_offset
        self.switch_after = switch_after
        self.tail_requests = 0
        self.switched = False
        self.flipped = 0
        self.sent = 0
        self.requested: list[str] = []
        self.lock = threading.Lock()
        self.http = urllib3.PoolManager(maxsize=16)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        rng = req.headers.get("Range", "")
        start = int(rng.split("=")[1].split("-")[0]) if rng.startswith("bytes=") else 0
        with self.lock:
            base = self.switch_to if self.switched and self.switch_to else self.upstream
            if self.switch_after_offset is not None and start >= self.switch_after_offset:
                self.tail_requests += 1
                self.switched = self.tail_requests >= self.switch_after
        headers = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection")}
        self.requested.append(req.path)
        # as a forward proxy (http_proxy) the request line carries the whole URL
        url = req.path if req.path.startswith("http://") else base.rstrip("/") + req.path
        resp = self.http.request("GET", url, headers=headers, preload_content=True, redirect=False)
        body = bytearray(resp.data)
        if self.flip is not None and resp.status == 206:
            lo, hi = self.flip
            first = max(lo, start) // 4096 * 4096 + 100          # byte 100 of every block in the range
            for pos in range(first, min(hi, start + len(body)), 4096):
                if pos >= max(lo, start):
                    body[pos - start] ^= 0xFF
                    self.flipped += 1
        with self.lock:
            self.sent += len(body)
            vanish = self.vanish_after is not None and self.sent > self.vanish_after
        if vanish:
            threading.Thread(target=self.close, daemon=True).start()
            req.connection.shutdown(socket.SHUT_RDWR)
            return
        req.send_response(resp.status)
        for key in ("Content-Range", "Date", "Last-Modified", "ETag", "Content-Type", "Location"):
            if key in resp.headers:
                req.send_header(key, resp.headers[key])
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(bytes(body))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
