"""HTTP(S) access to remote bundles: Range requests, RAUC's retry rules, statistics (RAUC's src/nbd.c, HTTP half).

A streamed bundle is never downloaded whole: every read of its bytes becomes one HTTP Range request
(``GET``, ``Range: bytes=<from>-<to>``, answer ``206``). :class:`HttpRangeClient` is that client:

* the first request (the *probe*) asks for bytes 0-3 with ``User-Agent: rauc/<version>``, the custom
  headers and the *info headers* (``[streaming] send-headers``: ``RAUC-Boot-ID``, ``RAUC-Machine-ID``,
  ``RAUC-System-Version``, ``RAUC-Serial``, ``RAUC-Variant``, ``RAUC-Transaction-ID``, ``RAUC-Uptime``
  and ``RAUC-<NAME>`` of every ``RAUC_HTTP_<NAME>`` of the system-info handler); its ``Content-Range``
  gives the bundle size, ``Date``/``Last-Modified``/``ETag`` are kept. Redirects are followed (at most 8,
  http/https only, credentials kept) and the effective URL is used from then on;
* data requests carry the custom headers only. Success is status 206 with exactly the requested
  bytes. 404 fails at once; any other failure (connection, timeout, HTTP >= 400, short or long body)
  is retried 5 times, 1 s apart, then fails; a 2xx/3xx other than 206 fails at once;
* basic auth comes from the URL (``https://user:password@host/...``) or ``~/.netrc``;
  ``http_proxy``/``https_proxy``
  (and ``no_proxy``) from the environment; TLS from :class:`StreamOptions` (client certificate and
  key files, a CA file instead of the system store, or no verification).

HTTP client: urllib3 (2.x). It is the HTTP layer under requests and pip, maintained with a security
process, pure Python without dependencies (a 130 KiB wheel on the target), thread-safe, and has what
streaming needs: a pool of keep-alive connections (reused by every request of a bundle), TLS through
Python's ``ssl`` (client certificates, CA files), proxies with CONNECT tunnelling, per-request
timeouts and raw redirect control. httpx would add HTTP/2 but brings five packages (httpcore, h11,
anyio, sniffio, idna) and an async core the helper does not need; pycurl (libcurl, as RAUC) needs a
compiled libcurl matching the target's OpenSSL. HTTP/1.1 with several connections in parallel serves
the kernel's concurrent NBD requests just as well (see pyrauc.nbd); RAUC's "using HTTP/1 for
streaming" warning is therefore not given. Unlike libcurl in RAUC, a read that stalls for
:data:`READ_TIMEOUT` seconds counts as a failed attempt (RAUC has no transfer timeout), and a TLS key
in a PKCS#11 token is refused with one line (Python's ``ssl`` cannot use a token key).

Statistics: every request adds a sample to :class:`Stats` (RAUC's ``nbd dl_size``, ``dl_speed``,
``namelookup``, ``connect``, ``starttransfer``, ``total`` lines, and "downloaded X% of the full
bundle"), logged when a stream ends.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pyrauc import RAUC_COMPAT_VERSION
from pyrauc.errors import RaucError

if TYPE_CHECKING:    # urllib3, ssl and email load on first use: the CLI's start-up does not pay for them
    import ssl

    import urllib3

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
CONNECT_TIMEOUT = 20.0          # RAUC's CURLOPT_CONNECTTIMEOUT since 1.10
READ_TIMEOUT = 30.0             # beyond RAUC: a stalled server is a failed attempt (6 x 31 s < the kernel's 300 s)
RETRIES = 5                     # RAUC: at most 6 attempts per request
RETRY_DELAY = 1.0
MAX_REDIRECTS = 8
RECENT = 64                     # samples in recent-avg
DEFAULT_SANDBOX_USER = "nobody"
#: ``[streaming] send-headers`` items and their headers, in RAUC's order
AUTO_HEADERS: dict[str, str] = {
    "boot-id": "RAUC-Boot-ID", "machine-id": "RAUC-Machine-ID", "system-version": "RAUC-System-Version",
    "serial": "RAUC-Serial", "variant": "RAUC-Variant", "transaction-id": "RAUC-Transaction-ID",
    "uptime": "RAUC-Uptime",
}


class StreamError(RaucError):
    """A remote bundle cannot be read."""


def is_remote(source: str) -> bool:
    """Whether a bundle argument is a URL (any of RAUC's remote schemes)."""
    scheme, sep, _rest = source.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https", "ftp", "ftps", "sftp", "tftp")


def redact(url: str) -> str:
    """``url`` without a password, for logs and messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------------------------
# options

@dataclass(frozen=True)
class StreamOptions:
    """How to reach a remote bundle: TLS, headers, the helper's user (RAUC's streaming access args)."""

    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_no_verify: bool = False
    headers: tuple[str, ...] = ()         # "Name: value", on every request (-H, D-Bus http-headers)
    info_headers: tuple[str, ...] = ()    # on the first request only ([streaming] send-headers)
    sandbox_user: str = DEFAULT_SANDBOX_USER

    @classmethod
    def build(cls, streaming: Mapping[str, str] | None = None, *, tls_cert: str | None = None,
              tls_key: str | None = None, tls_ca: str | None = None, tls_no_verify: bool = False,
              headers: Sequence[str] = ()) -> StreamOptions:
        """``[streaming]`` of system.conf with the command line's (or D-Bus') values on top, per item."""
        conf = streaming or {}
        return cls(tls_cert=tls_cert or conf.get("tls-cert"), tls_key=tls_key or conf.get("tls-key"),
                   tls_ca=tls_ca or conf.get("tls-ca"), tls_no_verify=tls_no_verify, headers=tuple(headers),
                   sandbox_user=conf.get("sandbox-user") or DEFAULT_SANDBOX_USER)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StreamOptions:
        data = json.loads(text)
        return cls(**{**data, "headers": tuple(data.get("headers", ())),
                      "info_headers": tuple(data.get("info_headers", ()))})


def auto_headers(items: Sequence[str], *, system_info: Mapping[str, str] | None = None,
                 variant: str | None = None, transaction_id: str | None = None,
                 proc: str = "/proc", etc: str = "/etc") -> list[str]:
    """The info headers of ``send-headers`` ``items`` (RAUC's order), then ``RAUC-<NAME>`` for every
    ``RAUC_HTTP_<NAME>`` of the system-info handler. A header without a value is left out."""
    info = dict(system_info or {})

    def read(path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None

    values: dict[str, str | None] = {
        "boot-id": read(f"{proc}/sys/kernel/random/boot_id"),
        "machine-id": read(f"{etc}/machine-id"),
        "system-version": info.get("RAUC_SYSTEM_VERSION"),
        "serial": info.get("RAUC_SYSTEM_SERIAL"),
        "variant": info.get("RAUC_SYSTEM_VARIANT") or variant,
        "transaction-id": transaction_id,
        "uptime": (read(f"{proc}/uptime") or "0").split()[0],
    }
    out = []
    for item in items:
        if item not in AUTO_HEADERS:
            raise StreamError(f"Automatic HTTP header '{item}' not supported")
        value = values[item]
        if value:
            out.append(f"{AUTO_HEADERS[item]}: {value}")
    for key, value in info.items():
        if key.startswith("RAUC_HTTP_") and len(key) > len("RAUC_HTTP_"):
            out.append(f"RAUC-{key[len('RAUC_HTTP_'):].replace('_', '-')}: {value}")
    return out


def _header_dict(lines: Iterable[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise StreamError(f"Invalid HTTP header '{line}': expected 'NAME: VALUE'")
        headers[name.strip()] = value.strip()
    return headers


# --------------------------------------------------------------------------------------------
# statistics

class Stats:
    """Samples per label; RAUC's ``<label>: count=N sum=S min=A max=B avg=C recent-avg=D`` lines."""

    LABELS = ("dl_size", "dl_speed", "namelookup", "connect", "starttransfer", "total")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, list[float]] = {label: [] for label in self.LABELS}
        self._recent: dict[str, deque[float]] = {label: deque(maxlen=RECENT) for label in self.LABELS}

    def add(self, label: str, value: float) -> None:
        with self._lock:
            self._samples[label].append(value)
            self._recent[label].append(value)

    def sum(self, label: str) -> float:
        with self._lock:
            return float(sum(self._samples[label]))

    def count(self, label: str) -> int:
        with self._lock:
            return len(self._samples[label])

    def line(self, label: str) -> str:
        with self._lock:
            values, recent = self._samples[label], self._recent[label]
            if not values:
                return f"nbd {label}: count=0"
            return (f"nbd {label}: count={len(values)} sum={sum(values):.3f} min={min(values):.3f} "
                    f"max={max(values):.3f} avg={sum(values) / len(values):.3f} "
                    f"recent-avg={sum(recent) / len(recent):.3f}")

    def report(self, bundle_size: int) -> list[str]:
        """The six lines and "downloaded X% of the full bundle"."""
        lines = [self.line(label) for label in self.LABELS]
        share = 100.0 * self.sum("dl_size") / bundle_size if bundle_size else 0.0
        lines.append(f"downloaded {share:.1f}% of the full bundle")
        return lines


def _timed_connect(conn: Any, connect: Callable[[], None]) -> None:
    """Connect ``conn`` (``connect`` = the base class' method), recording name lookup and connect times."""
    stats: Stats | None = getattr(conn, "pyrauc_stats", None)
    t0 = time.monotonic()
    try:
        socket.getaddrinfo(conn.host, conn.port, type=socket.SOCK_STREAM)
    except OSError:
        pass                       # the connect below reports it
    t1 = time.monotonic()
    connect()
    if stats is not None:
        stats.add("namelookup", t1 - t0)
        stats.add("connect", time.monotonic() - t0)


def _pool_classes(stats: Stats) -> dict[str, type]:
    """urllib3 connection pools whose connections time their set-up into ``stats``."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Conn(HTTPConnection):
        pyrauc_stats = stats

        def connect(self) -> None:
            _timed_connect(self, super().connect)

    class SConn(HTTPSConnection):
        pyrauc_stats = stats

        def connect(self) -> None:
            _timed_connect(self, super().connect)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class SPool(HTTPSConnectionPool):
        ConnectionCls = SConn

    return {"http": Pool, "https": SPool}


# --------------------------------------------------------------------------------------------
# the client

@dataclass
class ServerInfo:
    """What the probe learnt (RAUC's CONFIGURE reply)."""

    url: str                              # effective URL (after redirects), with credentials
    size: int
    current_time: int | None = None       # server Date, unix time
    modified_time: int | None = None      # Last-Modified, unix time
    etag: str | None = None


class ProbeError(StreamError):
    """The first request failed; ``kind`` is RAUC's class of failure."""

    def __init__(self, message: str, kind: str = "configure", status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class _Attempt(Exception):
    """One attempt failed; ``retry`` says whether RAUC would try again."""

    def __init__(self, message: str, *, retry: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status


def _unix_time(value: str | None) -> int | None:
    import email.utils

    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError):
        return None


def _ssl_context(options: StreamOptions) -> ssl.SSLContext:
    import ssl

    for what, spec in (("certificate", options.tls_cert), ("key", options.tls_key)):
        if spec and spec.startswith("pkcs11:"):
            raise StreamError(f"TLS client {what} from a PKCS#11 URI is not supported by pyrauc streaming")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if options.tls_ca:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=options.tls_ca)
        if options.tls_no_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if options.tls_cert:
            ctx.load_cert_chain(options.tls_cert, options.tls_key)
        elif options.tls_key:
            raise StreamError("TLS client key given without a client certificate (--tls-cert)")
    except (OSError, ssl.SSLError) as e:
        reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)
        raise StreamError(f"failed to set up TLS: {reason}") from e
    return ctx


def _netrc(host: str | None) -> tuple[str, str] | None:
    """Login and password for ``host`` from ``~/.netrc`` (optional, as libcurl's CURL_NETRC_OPTIONAL)."""
    import netrc

    if not host:
        return None
    try:
        entry = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    if entry is None or not entry[0]:
        return None
    return entry[0], entry[2] or ""


def _proxy_for(url: str) -> str | None:
    """The proxy of ``url`` from lower-case ``http_proxy``/``https_proxy`` (libcurl ignores HTTP_PROXY),
    unless ``no_proxy`` excludes its host."""
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxy = os.environ.get(f"{parts.scheme}_proxy")
    if not proxy:
        return None
    bypass = getattr(urllib.request, "proxy_bypass_environment", None)
    if parts.hostname and bypass is not None and bypass(parts.hostname):
        return None
    return proxy


class HttpRangeClient:
    """Range requests to one bundle URL over a pool of keep-alive connections (thread-safe).

    :meth:`probe` must come first; :meth:`read` may then be called from several threads at once.
    """

    def __init__(self, url: str, options: StreamOptions, *, stats: Stats | None = None,
                 connections: int = 4) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in SCHEMES:
            raise StreamError(f"Unsupported URL scheme '{parts.scheme}': only http and https can be streamed")
        self.options = options
        self.stats = stats or Stats()
        self._auth: dict[str, str] = {}
        credentials = ((urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
                       if parts.username is not None else _netrc(parts.hostname))
        if credentials is not None:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            self._auth = {"Authorization": f"Basic {token}"}
        if parts.username is not None:
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            parts = parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))
        self.url = urllib.parse.urlunsplit(parts)
        self.display_url = redact(url)
        self.headers = _header_dict(options.headers)
        self.info_headers = _header_dict(options.info_headers)
        # data requests carry the custom headers only (libcurl in RAUC sends no User-Agent there)
        from urllib3.util import SKIP_HEADER

        self._data_headers: dict[str, Any] = {"User-Agent": SKIP_HEADER, **self.headers}
        import urllib3

        ctx = _ssl_context(options)
        pool_kw: dict[str, Any] = {"maxsize": connections, "block": True, "ssl_context": ctx,
                                   "timeout": urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
                                   "retries": False}
        if options.tls_no_verify:
            pool_kw["cert_reqs"] = "CERT_NONE"
            pool_kw["assert_hostname"] = False
        proxy = _proxy_for(self.url)
        self.pool: urllib3.PoolManager = (urllib3.ProxyManager(proxy, **pool_kw) if proxy
                                          else urllib3.PoolManager(**pool_kw))
        self.pool.pool_classes_by_scheme = _pool_classes(self.stats)
        self.size: int | None = None

    # -- one attempt -------------------------------------------------------------------------
    def _request(self, url: str, start: int, length: int, headers: dict[str, str]) -> tuple[int, bytes, Any]:
        """GET ``Range: bytes=start-(start+length-1)``; (status, body of at most length+1 bytes, headers)."""
        import urllib3

        t0 = time.monotonic()
        try:
            resp = self.pool.request("GET", url, headers={**headers, **self._auth,
                                                          "Range": f"bytes={start}-{start + length - 1}"},
                                     preload_content=False, redirect=False, decode_content=False)
        except urllib3.exceptions.HTTPError as e:
            raise _Attempt(_reason(e), retry=True) from e
        t1 = time.monotonic()
        status = resp.status
        body = b""
        try:
            if status == 206:
                body = resp.read(length + 1)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            resp.close()
            resp.release_conn()
            raise _Attempt(_reason(e), retry=True) from e
        if status != 206 or len(body) != length:
            resp.close()              # an error, or a body of the wrong length: this connection is not reused
        resp.release_conn()           # back to the pool (a closed one is opened anew by the next request)
        t2 = time.monotonic()
        self.stats.add("starttransfer", t1 - t0)
        self.stats.add("total", t2 - t0)
        self.stats.add("dl_size", float(len(body)))
        self.stats.add("dl_speed", len(body) / (t2 - t0) if t2 > t0 else 0.0)
        return status, body, resp.headers

    # -- the probe -----------------------------------------------------------------------------
    def probe(self) -> ServerInfo:
        """The first request: bundle size, server times and ETag, effective URL (redirects followed)."""
        headers = {"User-Agent": f"rauc/{RAUC_COMPAT_VERSION}", **self.headers, **self.info_headers}
        url = self.url
        redirects = 0
        log.info(f"nbd server configuring for URL: {self.display_url}")
        while True:
            status, _body, resp_headers = self._with_retries(functools.partial(self._probe_once, url, headers),
                                                             probe=True)
            if status in (301, 302, 303, 307, 308):
                location = resp_headers.get("Location")
                if not location or redirects >= MAX_REDIRECTS:
                    raise ProbeError("failed to configure streaming: too many redirects" if location
                                     else "failed to configure streaming: redirect without location")
                target = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(target).scheme.lower() not in SCHEMES:
                    raise ProbeError(f"failed to configure streaming: redirect to unsupported scheme in {target}")
                log.info(f"redirected from {redact(url)} to {redact(target)}")
                url, redirects = target, redirects + 1
                continue
            break
        content_range = resp_headers.get("Content-Range", "")
        unit, _, rest = content_range.partition(" ")
        span, _, total = rest.partition("/")
        if unit != "bytes" or span != "0-3":
            raise ProbeError("failed to configure streaming: invalid content-range value"
                             if content_range else "server did not send bundle size", kind="size")
        if not total.isdigit():
            raise ProbeError("failed to configure streaming: failed to parse content-range header", kind="size")
        self.url = url
        self.size = int(total)
        info = ServerInfo(url=url, size=self.size, current_time=_unix_time(resp_headers.get("Date")),
                          modified_time=_unix_time(resp_headers.get("Last-Modified")),
                          etag=resp_headers.get("ETag"))
        log.info(f"nbd server received total size {info.size}")
        if info.current_time is not None:
            log.debug(f"nbd server received HTTP server date {info.current_time}")
        if info.modified_time is not None:
            log.debug(f"nbd server received HTTP file date {info.modified_time}")
        if info.etag:
            log.debug(f"nbd server received HTTP ETag: {info.etag}")
        return info

    def _probe_once(self, url: str, headers: dict[str, str]) -> tuple[int, bytes, Any]:
        status, body, resp_headers = self._request(url, 0, 4, headers)
        if status in (301, 302, 303, 307, 308):
            return status, body, resp_headers
        if status == 206:
            if len(body) != 4 and not resp_headers.get("Content-Range", "").endswith("/0"):
                raise _Attempt("incomplete HTTP response", retry=True)
            return status, body, resp_headers
        raise _status_attempt(status, probe=True)

    # -- data ----------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (RAUC's retries); StreamError when they cannot be had."""
        return self._with_retries(lambda: self._read_once(offset, length))[1]

    def _read_once(self, offset: int, length: int) -> tuple[int, bytes, Any]:
        status, body, headers = self._request(self.url, offset, length, self._data_headers)
        if status != 206:
            raise _status_attempt(status, probe=False)
        if len(body) != length:
            raise _Attempt("incomplete HTTP response" if len(body) < length else "response longer than requested",
                           retry=True)
        return status, body, headers

    def _with_retries(self, attempt: Callable[[], tuple[int, bytes, Any]], probe: bool = False
                      ) -> tuple[int, bytes, Any]:
        """RAUC's retry rules around ``attempt`` (the probe's failures as :class:`ProbeError`)."""
        tries = 0
        while True:
            try:
                return attempt()
            except _Attempt as e:
                if e.status == 404:
                    raise (ProbeError("not found: unexpected HTTP response code 404", "not found", 404) if probe
                           else StreamError("request failed (not found)")) from None
                if not e.retry:
                    if probe:
                        raise _probe_error(e) from None
                    log.warning(f"{e}")
                    raise StreamError(str(e)) from None
                if tries >= RETRIES:
                    if probe:
                        raise _probe_error(e) from None
                    raise StreamError(f"request failed (no more retries): {e}") from None
                tries += 1
                log.info(f"request failed: {e} (retrying {tries}/{RETRIES})")
                time.sleep(RETRY_DELAY)

    def close(self) -> None:
        self.pool.clear()


def _status_attempt(status: int, *, probe: bool) -> _Attempt:
    if status >= 400:
        return _Attempt(f"unexpected HTTP response code {status}", retry=status != 404, status=status)
    if probe and status == 200:
        return _Attempt("range requests not supported by server", retry=False, status=status)
    if probe and status == 204:
        return _Attempt("no content", retry=False, status=status)
    if probe and status == 304:
        return _Attempt("not modified", retry=False, status=status)
    return _Attempt(f"unexpected HTTP response code {status}", retry=False, status=status)


def _probe_error(e: _Attempt) -> ProbeError:
    """RAUC's start-up failures: "<kind>: <reason>"."""
    if e.status == 204:
        return ProbeError("no content: no content", "no content", 204)
    if e.status == 304:
        return ProbeError("not modified: not modified", "not modified", 304)
    if e.status == 401:
        return ProbeError("unauthorized: unexpected HTTP response code 401", "unauthorized", 401)
    return ProbeError(f"failed to configure streaming: {e}", "configure", e.status)


def _reason(e: BaseException) -> str:
    """A short, one-line reason for a failed connection or transfer."""
    import ssl

    import urllib3

    inner: BaseException = e
    while True:
        nxt = getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException) and inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]            # urllib3's SSLError/ProtocolError wrap the ssl/socket error
        if isinstance(nxt, BaseException) and nxt is not inner:
            inner = nxt
            continue
        break
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"SSL certificate problem: {inner.verify_message}"
    if isinstance(inner, ssl.SSLError):
        return f"SSL error: {inner.reason or inner}"
    if isinstance(inner, urllib3.exceptions.NewConnectionError):
        text = str(inner).split(": ", 1)[-1]
        return f"Failed to connect: {text}"
    if isinstance(inner, (TimeoutError, urllib3.exceptions.TimeoutError, socket.timeout)):
        return "Timeout was reached"
    if isinstance(inner, urllib3.exceptions.ProtocolError):
        return "connection lost: " + " ".join(str(inner).split())
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return " ".join(str(inner).split()) or type(inner).__name__


class HttpSource:
    """A remote bundle read in this process (``info URL``: no helper, no NBD, no root); bundle.RemoteSource."""

    def __init__(self, url: str, options: StreamOptions) -> None:
        self.client = HttpRangeClient(url, options)
        self.url = self.client.display_url
        self.info = self.client.probe()
        self.size = self.info.size

    def read(self, offset: int, length: int) -> bytes:
        try:
            return self.client.read(offset, length)
        except StreamError as e:
            raise StreamError(f"failed to read data from remote server: {e}") from e

    def close(self) -> None:
        for line in self.client.stats.report(self.size):
            log.debug(line)
        self.client.close()
