"""A recording, fault-injecting HTTP reverse proxy for S3 tests.

The proxy sits between the system under test (a boto3 client, possibly in another
process) and moto's S3 server. Every request is forwarded byte-exact (headers, Host,
Content-Length or chunked bodies including botocore's aws-chunked payloads with
trailing checksums), classified as an S3 operation and recorded. Fault rules can
replace or corrupt the answer to chosen requests: error statuses, connection resets,
stalls, holds, truncated bodies, bodies reset halfway and S3's "200 OK with an error
inside"; a rule can also damage a request's body on its way (`corrupt`), and
`strip_checksums = True` makes the proxy behave like a server that ignores flexible
checksums (as Ceph RGW does): their echoes are removed from every answer.

Pure stdlib, runs in a background thread, usable from synchronous pytest fixtures::

    with S3Proxy(moto_url, seed=1234) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url, ...)
        proxy.add_fault("UploadPart", "500", nth=2)
        ...
        assert proxy.count("UploadPart") == 3

Addressing is path style (``/bucket/key``), which is what the tests use.
"""

from __future__ import annotations

import fcntl
import http.client
import logging
import random
import re
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "ACTIONS",
    "CORRUPT",
    "ERROR_200",
    "ERROR_200_AFTER",
    "FAULT_400",
    "FAULT_500",
    "FAULT_501",
    "FAULT_503",
    "HOLD",
    "KINDS",
    "RESET_AFTER",
    "RESET_BEFORE",
    "RESET_MID",
    "STALL",
    "TRUNCATE",
    "FaultRule",
    "Headers",
    "Recorded",
    "S3Proxy",
    "classify",
]

log = logging.getLogger(__name__)

# Fault actions.
FAULT_500 = "500"
FAULT_503 = "503"
FAULT_501 = "501"  # NotImplemented, as Ceph RGW answers CopyObject of encrypted objects
FAULT_400 = "400"  # a refusal; the rule's error_code names it (InvalidStorageClass, ...)
RESET_BEFORE = "reset_before"
RESET_AFTER = "reset_after"
RESET_MID = "reset_mid"  # the answer's headers and half its body, then a TCP RST
STALL = "stall"
HOLD = "hold"
TRUNCATE = "truncate"
ERROR_200 = "error_200"
ERROR_200_AFTER = "error_200_after"
CORRUPT = "corrupt"
ACTIONS = frozenset(
    {
        CORRUPT,
        FAULT_400,
        FAULT_501,
        FAULT_500,
        FAULT_503,
        RESET_BEFORE,
        RESET_AFTER,
        RESET_MID,
        STALL,
        HOLD,
        TRUNCATE,
        ERROR_200,
        ERROR_200_AFTER,
    }
)

# Operation kinds that `classify` can return. "*" in a fault rule matches any kind.
KINDS = frozenset(
    {
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "ListMultipartUploads",
        "ListParts",
        "PutObject",
        "CopyObject",
        "GetObject",
        "HeadObject",
        "DeleteObject",
        "DeleteObjects",
        "ListObjectsV2",
        "ListObjects",
        "HeadBucket",
        "CreateBucket",
        "DeleteBucket",
        "ListBuckets",
        "PutObjectTagging",
        "GetObjectTagging",
        "Other",
    }
)

ERROR_200_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>InternalError</Code>"
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)

# Hop-by-hop headers belong to one connection and are never forwarded as they are.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "upgrade",
    }
)

# Query parameters of a plain GET on a bucket (ListObjects v1/v2); anything else
# (?location, ?versioning, ...) is a bucket sub-resource we do not name.
_LIST_PARAMS = frozenset(
    {
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "encoding-type",
        "list-type",
        "continuation-token",
        "start-after",
        "fetch-owner",
    }
)

# Query parameters that do not turn an object GET/PUT/DELETE into another operation.
_OBJECT_PARAMS = frozenset({"versionId", "partNumber", "x-id"})


class Headers(dict[str, str]):
    """A dict of HTTP headers with case-insensitive lookup.

    Keys are stored lower-cased; repeated headers are joined with ", ".
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        for name, value in items:
            key = name.lower()
            super().__setitem__(key, f"{self[key]}, {value}" if key in self else value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class Recorded:
    """One request seen by the proxy.

    `status` is what the client received (0 if it got no response at all: reset,
    stall, dropped hold); `upstream_status` is what moto answered (None if the request
    was not forwarded). Both are filled in before the client sees the answer, so they
    are final once the client call returns.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    kind: str
    status: int = 0
    fault: str | None = None
    bucket: str | None = None
    key: str | None = None
    body_size: int = 0  # decoded body length (aws-chunked framing not removed)
    upstream_status: int | None = None
    seq: int = 0
    time: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=lambda: time.time())  # arrival, as SigV4 dates it

    @property
    def part_number(self) -> int | None:
        value = self.query.get("partNumber")
        return int(value) if value and value.isdigit() else None

    @property
    def upload_id(self) -> str | None:
        return self.query.get("uploadId")


PROBE_KEYS = ".s3mpfs/probe-"  # s3mpfs's mount-time probe (s3/store.py, s3/conditions.py)


@dataclass(eq=False)
class FaultRule:
    """A fault to inject; create with `S3Proxy.add_fault`.

    The rule *matches* a request when kind, key_contains and part_number agree; it
    *fires* on a matching request when every trigger given (nth, every, share) agrees
    and it has fired fewer than `times` times. With no trigger it fires on every match.
    The mount-time probe's requests (keys with `.s3mpfs/probe-`) match only a rule whose
    key_contains names them: faults meant for a file's requests never hit the probe.
    """

    kind: str
    action: str
    nth: int | None = None
    every: int | None = None
    share: float | None = None
    times: int | None = None
    key_contains: str | None = None
    part_number: int | None = None
    header: str | None = None  # only requests carrying this header ("name" or "name: value")
    error_code: str = "InvalidArgument"  # the code a FAULT_400 answers with
    stall_seconds: float = 30.0
    matched: int = 0  # matching requests seen (the counter nth / every refer to)
    fired: int = 0
    # Set while at least one request is held by this (hold) rule, and left set after.
    held: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def matches(self, rec: Recorded) -> bool:
        if self.kind not in ("*", rec.kind):
            return False
        if self.key_contains is not None and self.key_contains not in (rec.key or ""):
            return False
        if self.header is not None:
            name, _, value = self.header.partition(":")
            if name.strip() not in rec.headers:
                return False
            if value.strip() and rec.headers[name.strip()].lower() != value.strip().lower():
                return False
        if PROBE_KEYS in (rec.key or "") and PROBE_KEYS not in (self.key_contains or ""):
            return False
        return self.part_number is None or rec.part_number == self.part_number

    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


def classify(method: str, path: str, query: dict[str, str], headers: Headers) -> str:
    """Name the S3 operation of a path-style request."""
    method = method.upper()
    bucket, _, key = path.lstrip("/").partition("/")
    copy = "x-amz-copy-source" in headers
    if not bucket:
        return "ListBuckets" if method == "GET" else "Other"
    if not key:  # bucket-level request
        if method == "GET":
            if "uploads" in query:
                return "ListMultipartUploads"
            if not set(query) <= _LIST_PARAMS:
                return "Other"
            return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
        if method == "HEAD" and not query:
            return "HeadBucket"
        if method == "PUT" and not query:
            return "CreateBucket"
        if method == "DELETE" and not query:
            return "DeleteBucket"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return "Other"
    # object-level request
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "Other"
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        if "tagging" in query:
            return "PutObjectTagging"
        if set(query) <= _OBJECT_PARAMS:
            return "CopyObject" if copy else "PutObject"
        return "Other"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        if "tagging" in query:
            return "GetObjectTagging"
        if all(q in _OBJECT_PARAMS or q.startswith("response-") for q in query):
            return "GetObject"
        return "Other"
    if method == "HEAD":
        return "HeadObject"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        if set(query) <= _OBJECT_PARAMS:
            return "DeleteObject"
    return "Other"


def _damage(body: bytes) -> bytes:
    """The body with one byte changed in its middle (inside the payload, whether or not
    it is chunk-framed)."""
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0x55]) + body[middle + 1:]


_CHECKSUM_ELEMENT = re.compile(rb"<Checksum(?:CRC32C?|CRC64NVME|SHA1|SHA256|Type)>[^<]*"
                               rb"</Checksum(?:CRC32C?|CRC64NVME|SHA1|SHA256|Type)>")


def _without_checksums(up: _Upstream) -> _Upstream:
    """The answer as a server that ignores flexible checksums gives it."""
    headers = [(n, v) for n, v in up.headers if not n.lower().startswith("x-amz-checksum-")]
    body = _CHECKSUM_ELEMENT.sub(b"", up.body) if up.body.lstrip().startswith(b"<") else up.body
    if len(body) != len(up.body):
        headers = [(n, str(len(body)) if n.lower() == "content-length" else v)
                   for n, v in headers]
    return _Upstream(up.status, up.reason, headers, body)


def _s3_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>S3PROXYFAULT</RequestId></Error>"
    ).encode()


_CANNED: dict[str, tuple[int, str, bytes]] = {
    FAULT_500: (
        500,
        "Internal Server Error",
        _s3_error("InternalError", "We encountered an internal error. Please try again."),
    ),
    FAULT_503: (503, "Slow Down", _s3_error("SlowDown", "Please reduce your request rate.")),
    FAULT_501: (501, "Not Implemented", _s3_error("NotImplemented", "")),
    ERROR_200: (200, "OK", ERROR_200_BODY),
    ERROR_200_AFTER: (200, "OK", ERROR_200_BODY),
}


@dataclass
class _Upstream:
    """moto's complete answer to a forwarded request."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 gives keep-alive (botocore pools connections) and automatic
    # "100 Continue" answers to botocore's "Expect: 100-continue" (which it sends on
    # every PutObject / UploadPart; without the 100 it waits a second before the body).
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        try:
            self.server.proxy._handle(self)
        except OSError:  # the client went away (e.g. killed while its request was held)
            self.close_connection = True

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # --- body and response plumbing used by S3Proxy._handle ---

    def read_body(self) -> tuple[bytes, int]:
        """Read the request body as raw wire bytes; also return its decoded length.

        A chunked body is kept in its chunked framing (with any trailers) so that it
        is forwarded byte-exact. botocore's aws-chunked payloads travel *inside* HTTP
        chunked framing (two layers): the inner layer is payload to us.
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            size_total = 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("client closed inside a chunked body")
                raw += line
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailer section, ends with an empty line
                        trailer = self.rfile.readline(65537)
                        if not trailer:
                            raise ConnectionError("client closed inside chunk trailers")
                        raw += trailer
                        if trailer in (b"\r\n", b"\n"):
                            return bytes(raw), size_total
                data = self.rfile.read(size + 2)  # chunk data and its CRLF
                if len(data) < size + 2:
                    raise ConnectionError("client closed inside a chunk")
                raw += data
                size_total += size
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise ConnectionError("client closed inside the body")
        return body, length

    def send_raw(
        self,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        content_length: int | None = None,
    ) -> None:
        """Send a response with `headers` unchanged except for framing and keep-alive.

        An upstream Content-Length is kept as is (for HEAD it is the object's size);
        one is added when there is none (canned answers, chunked upstream answers);
        `content_length` overrides it (truncate).
        """
        lines = [f"HTTP/1.1 {status} {reason}"]
        has_length = False
        for name, value in headers:
            lname = name.lower()
            if lname in _HOP_BY_HOP or lname == "transfer-encoding":
                continue
            if lname == "content-length":
                has_length = True
                if content_length is not None:
                    value = str(content_length)
            lines.append(f"{name}: {value}")
        if not has_length and status not in (204, 304) and status >= 200:
            length = len(body) if content_length is None else content_length
            lines.append(f"Content-Length: {length}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + (b"" if self.command == "HEAD" else body))

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until the client has acknowledged everything sent (the send queue is
        empty), at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                queued = struct.unpack("i", fcntl.ioctl(self.connection.fileno(),
                                                        termios.TIOCOUTQ, b"\0" * 4))[0]
            except OSError:
                return
            if queued == 0:
                return
            time.sleep(0.002)

    def abort(self) -> None:
        """Close the client connection with a TCP RST (SO_LINGER 0), no answer."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # The socket only really closes once the buffered reader lets go of it.
        self.rfile.close()
        sock.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # stop() must never wait for handler threads
    allow_reuse_address = True
    request_queue_size = 128  # a mount opens many pooled connections at once
    proxy: S3Proxy


class S3Proxy:
    """Recording, fault-injecting reverse proxy in front of an S3 endpoint.

    `upstream` is the base URL of the real (moto) server, e.g. http://127.0.0.1:5000.
    `seed` drives the `share=` triggers; with the same seed and the same order of
    arriving requests, the same requests fail. Requests that arrive concurrently (parallel
    part uploads) may arrive in different orders from one run to the next.
    """

    def __init__(
        self,
        upstream: str,
        seed: int = 0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream = upstream
        self._up_host = parts.hostname
        self._up_port = parts.port or 80
        self._up_timeout = upstream_timeout
        self._host = host
        self._port = port
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        # Wakes stalled and held requests: on release, release_stalls and stop.
        self._wake = threading.Condition(self._lock)
        self._stall_generation = 0
        self._stopping = False
        self._records: list[Recorded] = []
        self._rules: list[FaultRule] = []
        self._seq = 0
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.strip_checksums = False  # answer like a server that ignores x-amz-checksum-*
        # Headers removed from every answer (lower case), e.g. {"x-amz-storage-class"}: a
        # server that stores every object as STANDARD whatever it was asked.
        self.strip_headers: set[str] = set()

    # --- lifecycle ---

    def start(self) -> S3Proxy:
        server = _Server((self._host, self._port), _Handler)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="s3proxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wake stalled/held requests and drop every client connection."""
        if self._server is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
            conns = list(self._conns)
        self._server.shutdown()
        self._server.server_close()
        for conn in conns:  # unblock handler threads waiting on idle keep-alive reads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint URL to give the client."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- recording ---

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of the recorded requests, in arrival order."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def of_kind(self, kind: str) -> list[Recorded]:
        """The requests of that kind, without the mount-time probe's (keys with
        `.s3mpfs/probe-`: the mount's own, a few of most kinds; see `requests` for
        everything)."""
        return [r for r in self.requests
                if r.kind == kind and PROBE_KEYS not in (r.key or "")]

    def count(self, kind: str) -> int:
        return len(self.of_kind(kind))

    def faults(self) -> list[Recorded]:
        """The requests a fault fired on."""
        return [r for r in self.requests if r.fault is not None]

    def wait_for(
        self, predicate: Callable[[list[Recorded]], bool], timeout: float = 10.0
    ) -> list[Recorded]:
        """Poll the records until `predicate(records)` holds; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.requests
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s; saw {len(records)}")
            time.sleep(0.01)

    # --- faults ---

    def add_fault(
        self,
        kind: str,
        action: str,
        *,
        nth: int | None = None,
        every: int | None = None,
        share: float | None = None,
        times: int | None = None,
        key_contains: str | None = None,
        part_number: int | None = None,
        header: str | None = None,
        error_code: str = "InvalidArgument",
        stall_seconds: float = 30.0,
    ) -> FaultRule:
        """Add a fault rule (rules are tried in the order added; the first to fire wins)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {sorted(ACTIONS)}")
        if kind != "*" and kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        if (nth is not None and nth < 1) or (every is not None and every < 1):
            raise ValueError("nth and every count from 1")
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError("share is a fraction in [0, 1]")
        rule = FaultRule(
            kind=kind,
            action=action,
            nth=nth,
            every=every,
            share=share,
            times=times,
            key_contains=key_contains,
            part_number=part_number,
            header=header,
            error_code=error_code,
            stall_seconds=stall_seconds,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove_fault(self, rule: FaultRule) -> None:
        """Remove one rule; requests it holds are released."""
        with self._wake:
            if rule in self._rules:
                self._rules.remove(rule)
        self.release(rule)

    def clear_faults(self) -> None:
        """Remove all rules and release anything they hold."""
        with self._wake:
            rules, self._rules = self._rules, []
        for rule in rules:
            self.release(rule)

    def release(self, rule: FaultRule | None = None) -> None:
        """Let requests held by `rule` (all hold rules if None) go upstream.

        A released rule stays released: later matching requests pass straight through.
        """
        with self._wake:
            for r in [rule] if rule is not None else self._rules:
                r.released.set()
            self._wake.notify_all()

    def release_stalls(self) -> None:
        """End every request stalled right now (their connections are closed)."""
        with self._wake:
            self._stall_generation += 1
            self._wake.notify_all()

    # --- request handling (runs in handler threads) ---

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _decide(self, rec: Recorded) -> FaultRule | None:
        """Record `rec` and pick the rule that fires on it, atomically."""
        with self._lock:
            self._seq += 1
            rec.seq = self._seq
            self._records.append(rec)
            for rule in self._rules:
                if rule.exhausted() or not rule.matches(rec):
                    continue
                rule.matched += 1
                if rule.nth is not None and rule.matched != rule.nth:
                    continue
                if rule.every is not None and rule.matched % rule.every:
                    continue
                # Draw only here so the random sequence depends on matching requests only.
                if rule.share is not None and self._rng.random() >= rule.share:
                    continue
                rule.fired += 1
                rec.fault = rule.action
                return rule
        return None

    def _handle(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers = Headers(h.headers.items())
        bucket, _, key = unquote(split.path).lstrip("/").partition("/")
        rec = Recorded(
            method=h.command,
            path=split.path,
            query=query,
            headers=headers,
            kind=classify(h.command, split.path, query, headers),
            bucket=bucket or None,
            key=key or None,
        )
        try:
            body, rec.body_size = h.read_body()
        except (ConnectionError, ValueError, OSError):
            h.close_connection = True
            return
        rule = self._decide(rec)
        action = rule.action if rule else None

        if action == FAULT_400:
            assert rule is not None
            rec.status = 400
            payload = _s3_error(rule.error_code, "refused by the test proxy")
            h.send_raw(400, "Bad Request", [("Content-Type", "application/xml")], payload)
            return
        if action in (FAULT_500, FAULT_501, FAULT_503, ERROR_200):
            status, reason, payload = _CANNED[action]
            rec.status = status
            h.send_raw(status, reason, [("Content-Type", "application/xml")], payload)
            return
        if action == RESET_BEFORE:
            h.abort()
            return
        if action == STALL:
            assert rule is not None
            self._stall(rule)
            h.abort()
            return
        if action == HOLD:
            assert rule is not None
            if not self._hold(rule):
                h.abort()  # proxy stopping: drop the request, never forward it
                return

        if action == CORRUPT and body:
            body = _damage(body)
        try:
            up = self._forward(h, body)
        except OSError as exc:
            log.warning("s3proxy: upstream %s %s failed: %r", h.command, h.path, exc)
            rec.status = 502
            h.close_connection = True
            h.send_raw(502, "Bad Gateway", [], _s3_error("BadGateway", repr(exc)))
            return
        rec.upstream_status = up.status
        if self.strip_checksums:
            up = _without_checksums(up)
        if self.strip_headers:
            up = _Upstream(up.status, up.reason, [(n, v) for n, v in up.headers
                                                  if n.lower() not in self.strip_headers],
                           up.body)

        if action == RESET_AFTER:
            h.abort()
        elif action == ERROR_200_AFTER:
            status, reason, payload = _CANNED[action]
            rec.status = status
            h.send_raw(status, reason, [("Content-Type", "application/xml")], payload)
        elif action == RESET_MID:
            rec.status = up.status
            half = up.body[: len(up.body) // 2]
            h.send_raw(up.status, up.reason, up.headers, half, content_length=len(up.body))
            h.drain()  # the half reaches the client before the RST (which drops unsent data)
            h.abort()
        elif action == TRUNCATE:
            rec.status = up.status
            h.close_connection = True  # the client then sees EOF mid-body
            half = up.body[: len(up.body) // 2]
            h.send_raw(up.status, up.reason, up.headers, half, content_length=len(up.body))
        else:
            rec.status = up.status
            h.send_raw(up.status, up.reason, up.headers, up.body)

    def _stall(self, rule: FaultRule) -> None:
        deadline = time.monotonic() + rule.stall_seconds
        with self._wake:
            generation = self._stall_generation
            while not self._stopping and self._stall_generation == generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)

    def _hold(self, rule: FaultRule) -> bool:
        """Wait until `rule` is released; False if the proxy stops first."""
        rule.held.set()
        with self._wake:
            while not rule.released.is_set() and not self._stopping:
                self._wake.wait()
            return not self._stopping

    def _forward(self, h: _Handler, body: bytes) -> _Upstream:
        """Send the request upstream exactly as received and read the whole answer."""
        # One upstream connection per request: no stale keep-alive connections to
        # recover from, and a reset or held client never leaves one half-used.
        conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=self._up_timeout)
        try:
            conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for name, value in h.headers.items():
                # Expect is not signed by SigV4; dropping it spares a 100-continue round trip.
                if name.lower() not in _HOP_BY_HOP and name.lower() != "expect":
                    conn.putheader(name, value)
            conn.putheader("Connection", "close")
            conn.endheaders()
            if body:
                conn.send(body)
            resp = conn.getresponse()
            data = resp.read()  # de-chunked if moto answered chunked; we re-frame it
            return _Upstream(resp.status, resp.reason, resp.getheaders(), data)
        finally:
            conn.close()
