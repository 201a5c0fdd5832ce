"""Requests with little or no body (HeadObject, small GetObject and PutObject) through awscrt.

botocore spends about 1.3 ms of Python per request (serialising, event hooks, signing,
urllib3, parsing) with the GIL held: most of a small file's cost. Here the HTTP/1.1
connections (awscrt.http) and SigV4 signing (awscrt.auth) run in C threads that do not
hold the GIL; what is left in Python (about 0.3 ms) is building the headers and reading
the answer. Bodies of MAX_BODY and more stay with boto3 (see there).

`routing.CrtRoute` hands this module the same boto3-style parameters `store.S3Store` would
give boto3. `headers_for` translates them to HTTP headers and returns None for any parameter it
does not know, and the store then sends that request through boto3: whatever the store asks
for is sent, one way or the other. Answers come back as boto3-shaped dicts; a failure is a
`CrtRequestError` carrying the status, the S3 error code and message, which `routing` turns
into the same botocore ClientError the boto3 path raises. Nothing here imports boto3.

Retries are done here as botocore's standard mode does them: `retries` attempts on 5xx,
throttling, timeouts, transport failures and a 200 carrying an error, with exponential
backoff and full jitter. An attempt that has not finished within connect_timeout +
read_timeout + 1 s per MiB of body is cancelled (its connection closed) and retried.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import io
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import trio

try:
    from awscrt import auth, http
    from awscrt import io as crt_io
except ImportError:  # pragma: no cover - awscrt is a dependency; boto3 does everything then
    http = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# boto3 parameter -> header, for the parameters the hot requests use.
_HEADERS = {
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
    "SSEKMSEncryptionContext": "x-amz-server-side-encryption-context",
    "StorageClass": "x-amz-storage-class",
    "ACL": "x-amz-acl",
    "ObjectLockMode": "x-amz-object-lock-mode",
    "ObjectLockLegalHoldStatus": "x-amz-object-lock-legal-hold",
    "SSECustomerAlgorithm": "x-amz-server-side-encryption-customer-algorithm",
    "ContentMD5": "Content-MD5",
    "ContentType": "Content-Type",
    "CacheControl": "Cache-Control",
    "ContentDisposition": "Content-Disposition",
    "ContentEncoding": "Content-Encoding",
    "ContentLanguage": "Content-Language",
    "WebsiteRedirectLocation": "x-amz-website-redirect-location",
    "Tagging": "x-amz-tagging",
    "ChecksumAlgorithm": "x-amz-sdk-checksum-algorithm",
    "ChecksumCRC32": "x-amz-checksum-crc32",
    "ChecksumCRC32C": "x-amz-checksum-crc32c",
    "ChecksumCRC64NVME": "x-amz-checksum-crc64nvme",
    "ChecksumSHA1": "x-amz-checksum-sha1",
    "ChecksumSHA256": "x-amz-checksum-sha256",
    "IfMatch": "If-Match",
    "IfNoneMatch": "If-None-Match",
    "Range": "Range",
    "ChecksumMode": "x-amz-checksum-mode",
}
# response header -> boto3 member, for the answers the callers read.
_MEMBERS = {
    "etag": "ETag",
    "x-amz-server-side-encryption": "ServerSideEncryption",
    "x-amz-server-side-encryption-aws-kms-key-id": "SSEKMSKeyId",
    "x-amz-version-id": "VersionId",
    "x-amz-storage-class": "StorageClass",
    "x-amz-restore": "Restore",
    "x-amz-checksum-type": "ChecksumType",
    "x-amz-checksum-crc32": "ChecksumCRC32",
    "x-amz-checksum-crc32c": "ChecksumCRC32C",
    "x-amz-checksum-crc64nvme": "ChecksumCRC64NVME",
    "x-amz-checksum-sha1": "ChecksumSHA1",
    "x-amz-checksum-sha256": "ChecksumSHA256",
    "content-range": "ContentRange",
    "content-type": "ContentType",
    "cache-control": "CacheControl",
    "content-disposition": "ContentDisposition",
    "content-encoding": "ContentEncoding",
    "content-language": "ContentLanguage",
    "expires": "Expires",
    "x-amz-website-redirect-location": "WebsiteRedirectLocation",
    "x-amz-server-side-encryption-customer-algorithm": "SSECustomerAlgorithm",
}
# Bodies from this size on go through boto3: awscrt hands a body to Python in 16 KiB
# pieces, each a callback holding the GIL, while urllib3 reads and sends it in worker
# threads that release it (measured: 2.2 against 1.4 CPU-s per GiB read).
MAX_BODY = 1 << 20
_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


class CrtRequestError(Exception):
    """A request that failed: an S3 error answer (status > 0) or no answer (status 0)."""

    def __init__(self, operation: str, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation, self.status, self.code, self.message = operation, status, code, message
        self.headers = headers or {}
        self.retries = 0  # attempts repeated before this one failed for good


def available() -> bool:
    return http is not None


def headers_for(params: dict[str, Any]) -> list[tuple[str, str]] | None:
    """HTTP headers for boto3-style request parameters; None if one is not known here."""
    out: list[tuple[str, str]] = []
    for name, value in params.items():
        header = _HEADERS.get(name)
        if header is not None and isinstance(value, str):
            out.append((header, value))
        elif name == "Metadata":
            out.extend((f"x-amz-meta-{k}", v) for k, v in value.items())
        elif name == "BucketKeyEnabled":
            out.append(("x-amz-server-side-encryption-bucket-key-enabled",
                        "true" if value else "false"))
        elif name == "ObjectLockRetainUntilDate":
            out.append(("x-amz-object-lock-retain-until-date",
                        value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"))
        elif name == "SSECustomerKey":  # boto3 encodes the key and adds its MD5 the same way
            key = value.encode() if isinstance(value, str) else value
            out.append(("x-amz-server-side-encryption-customer-key",
                        base64.b64encode(key).decode()))
            out.append(("x-amz-server-side-encryption-customer-key-MD5",
                        base64.b64encode(hashlib.md5(key).digest()).decode()))  # noqa: S324
        else:
            return None
    if not all(value.isascii() for _, value in out):
        return None  # boto3's way with non-ASCII metadata is kept by sending it there
    return out


def members(headers: dict[str, str]) -> dict[str, Any]:
    """The boto3-shaped answer of a HEAD/GET/PUT: known headers and user metadata."""
    out: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    for name, value in headers.items():
        member = _MEMBERS.get(name)
        if member is not None:
            out[member] = value
        elif name.startswith("x-amz-meta-"):
            metadata[name[11:]] = value
        elif name == "content-length":
            out["ContentLength"] = int(value)
        elif name == "last-modified":
            out["LastModified"] = parse_http_date(value)
        elif name == "x-amz-server-side-encryption-bucket-key-enabled":
            out["BucketKeyEnabled"] = value.lower() == "true"
        elif name == "x-amz-tagging-count":
            out["TagCount"] = int(value)
    out["Metadata"] = metadata
    return out


class CrtClient:
    """Keep-alive HTTP connections to the endpoint (awscrt.http), SigV4 by awscrt.auth,
    with the endpoint and credentials of the mount's boto3 client."""

    def __init__(self, endpoint_url: str, bucket: str, region: str,
                 get_credentials: Callable[[], tuple[str, str, str | None]], *,
                 path_style: bool, retries: int, connect_timeout: float,
                 read_timeout: float, ca_file: str | None = None,
                 refreshable: bool = True) -> None:
        assert http is not None
        url = urlsplit(endpoint_url)
        tls = url.scheme == "https"
        if path_style:
            self.hostname = url.hostname or ""
            self._base = f"{url.path.rstrip('/')}/{quote(bucket, safe='')}/"
        else:
            self.hostname = f"{bucket}.{url.hostname}"
            self._base = f"{url.path.rstrip('/')}/"
        self.port = url.port or (443 if tls else 80)
        default_port = url.port is None or url.port == (443 if tls else 80)
        self.host = self.hostname if default_port else f"{self.hostname}:{self.port}"
        if ":" in self.hostname and not default_port:  # an IPv6 literal
            self.host = f"[{self.hostname}]:{self.port}"
        self.attempts = max(retries, 1)
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.region = region

        def delegate() -> Any:
            access, secret, token = get_credentials()
            return auth.AwsCredentials(access, secret, token)

        if refreshable:
            provider = auth.AwsCredentialsProvider.new_delegate(delegate)
        else:  # fixed keys: no call back into Python for every signature
            provider = auth.AwsCredentialsProvider.new_static(*get_credentials())
        self._provider = provider
        self._signing = auth.AwsSigningConfig(
            algorithm=auth.AwsSigningAlgorithm.V4,
            signature_type=auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=provider,
            region=region, service="s3",
            signed_body_value=auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD,
            signed_body_header_type=auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
            use_double_uri_encode=False, should_normalize_uri_path=False)
        self._dated = 0.0  # when the configs below were dated (time.time())
        self._configs = (self._signing, self._signing)
        self._socket_options = crt_io.SocketOptions()
        self._socket_options.connect_timeout_ms = int(connect_timeout * 1000)
        self._socket_options.domain = (crt_io.SocketDomain.IPv6 if ":" in self.hostname
                                       else crt_io.SocketDomain.IPv4)
        self.tls_context: Any = None
        if tls:
            options = crt_io.TlsContextOptions()
            if ca_file:
                options.override_default_trust_store_from_path(ca_filepath=ca_file)
            self.tls_context = crt_io.ClientTlsContext(options)
        self._idle: list[Any] = []  # open connections, most recently used last
        self._static = not refreshable

    @classmethod
    def create(cls, boto_client: Any, bucket: str, *, path_style: bool, retries: int,
               connect_timeout: float, read_timeout: float) -> CrtClient | None:
        """A client with boto3's endpoint, region, CA bundle and credential chain; None
        when awscrt is missing or boto3 found no credentials (anonymous: boto3 does it)."""
        if http is None:
            return None
        session_credentials = boto_client._request_signer._credentials  # noqa: SLF001
        if session_credentials is None:
            return None

        def get_credentials() -> tuple[str, str, str | None]:
            frozen = session_credentials.get_frozen_credentials()  # refreshed when due
            return frozen.access_key, frozen.secret_key, frozen.token

        verify = boto_client._endpoint.http_session._verify  # noqa: SLF001
        ca_file = verify if isinstance(verify, str) and os.path.isfile(verify) else None
        return cls(boto_client.meta.endpoint_url, bucket, boto_client.meta.region_name,
                   get_credentials, path_style=path_style, retries=retries,
                   connect_timeout=connect_timeout, read_timeout=read_timeout,
                   ca_file=ca_file,
                   refreshable=hasattr(session_credentials, "refresh_needed"))

    def s3_signing_config(self) -> Any:
        """The signing of this client's requests, for awscrt's S3 client (s3/bulk.py)."""
        return auth.AwsSigningConfig(
            algorithm=auth.AwsSigningAlgorithm.V4, credentials_provider=self._provider,
            region=self.region, service="s3",
            signed_body_value=auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD,
            signed_body_header_type=auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
            use_double_uri_encode=False, should_normalize_uri_path=False)

    def signing_for(self, body: bytes | None) -> Any:
        """How a request carrying `body` is signed, dated now. Over plain http a body's
        SHA256 is signed, as botocore does there: it is what keeps a party on the path
        from changing the bytes undetected (a CRC can be forged); the signer hashes it in
        C. Over https TLS protects them, and the payload is not hashed
        (UNSIGNED-PAYLOAD), as botocore does."""
        unsigned, hashed = self._dated_configs()
        return unsigned if self.tls_context is not None or not body else hashed

    def part_signing_for(self, body: bytes) -> Any:
        """`signing_for` a part sent by awscrt's S3 client (s3/bulk.py), which signs
        UNSIGNED-PAYLOAD unless given the hash: computed here, in the caller's worker
        thread (hashlib releases the GIL)."""
        unsigned, _ = self._dated_configs()
        if self.tls_context is not None:
            return unsigned
        return unsigned.replace(signed_body_value=hashlib.sha256(body).hexdigest())

    def _dated_configs(self) -> tuple[Any, Any]:
        """The signing configs (UNSIGNED-PAYLOAD; the body hashed by the signer), dated
        this second. An awscrt config carries the date it signs with, fixed when it is
        made, and S3 refuses a signature more than 15 minutes off (RequestTimeTooSkewed):
        they are made again once a second (a SigV4 date's resolution), not per request
        (30 µs of Python each, a tenth of a small file's PutObject). Called from the trio
        thread and from workers: a race makes them twice, harmlessly."""
        now = time.time()
        if not 0 <= now - self._dated < 1:
            unsigned = self._signing.replace(date=datetime.fromtimestamp(now, UTC))
            self._configs = (unsigned, unsigned.replace(signed_body_value=None))
            self._dated = now
        return self._configs

    def path(self, key: str) -> str:
        if not key:  # the bucket itself (listings)
            return self._base.rstrip("/") or "/"
        return self._base + quote(key, safe="/~")

    async def request(self, operation: str, method: str, key: str,
                      headers: list[tuple[str, str]], body: bytes | None = None,
                      query: str = "", expect_size: int = 0
                      ) -> tuple[dict[str, Any], Any]:
        """Send one request, retried like botocore's standard mode: up to `retries`
        attempts on 5xx, throttling, timeouts and transport failures, with exponential
        backoff and full jitter (at most 20 s). An attempt that has not finished within
        connect_timeout + read_timeout + 1 s per MiB of body is cancelled and retried.
        Returns (boto3-shaped answer, body); a body of `expect_size` bytes comes as a
        bytearray (one copy fewer), another size fails as incomplete. Waits for the end
        even when cancelled (it has side effects and holds a connection), like the boto3
        path."""
        limit = self.connect_timeout + self.read_timeout + (len(body or b"") >> 20)
        (answer, data), retries = await self.retrying(operation, lambda: self._attempt(
            operation, method, key, headers, body, query, expect_size, limit))
        answer["ResponseMetadata"] = {"RetryAttempts": retries}  # as botocore's
        return answer, data

    async def retrying(self, operation: str, attempt: Callable[[], Awaitable[Any]]
                       ) -> tuple[Any, int]:
        """`attempt()`'s result and the attempts repeated before it, retried as botocore's
        standard mode does (see `request`); the last CrtRequestError, its `retries` set,
        once the attempts are spent or the failure is not one to retry."""
        # Every await here is shielded from the caller's cancellation: each attempt in
        # its own scope (shielded, with the attempt's deadline), the backoff in this one.
        for n in range(1, self.attempts + 1):
            try:
                return await attempt(), n - 1
            except CrtRequestError as exc:
                if n == self.attempts or not _retryable(exc):
                    exc.retries = n - 1
                    raise
                log.debug("%s: %s; retrying (attempt %d of %d)", operation, exc,
                          n + 1, self.attempts)
                with trio.CancelScope(shield=True):
                    await trio.sleep(random.random() * min(20.0, 2.0 ** (n - 1)))  # noqa: S311
        raise AssertionError("unreachable")

    async def _connection(self) -> Any:
        while self._idle:
            connection = self._idle.pop()
            if connection.is_open():
                return connection
        tls = None
        if self.tls_context is not None:
            tls = self.tls_context.new_connection_options()
            tls.set_server_name(self.hostname)
        return await _wait(http.HttpClientConnection.new(
            host_name=self.hostname, port=self.port, socket_options=self._socket_options,
            tls_connection_options=tls))

    async def _attempt(self, operation: str, method: str, key: str,
                       headers: list[tuple[str, str]], body: bytes | None, query: str,
                       expect_size: int, limit: float
                       ) -> tuple[dict[str, Any], Any]:
        path = self.path(key) + (f"?{query}" if query else "")
        all_headers = [("Host", self.host), *headers]
        if body is not None:
            all_headers.append(("Content-Length", str(len(body))))
        # The body is read from our bytes while it is sent: no copy of a part in flight.
        request = http.HttpRequest(method, path, http.HttpHeaders(all_headers),
                                   io.BytesIO(body) if body else None)
        state: dict[str, Any] = {"status": 0, "headers": []}
        received: list[bytes] = []
        into = bytearray(expect_size) if expect_size else None
        view = memoryview(into) if into is not None else None
        got = [0]

        def on_response(http_stream: Any, status_code: int, headers: list[tuple[str, str]],
                        **_: Any) -> None:
            state["status"], state["headers"] = status_code, headers

        def on_body(http_stream: Any, chunk: bytes, **_: Any) -> None:
            n, at = len(chunk), got[0]
            if view is not None and 200 <= state["status"] < 300 and at + n <= len(view):
                view[at:at + n] = chunk
            else:
                received.append(bytes(chunk))
            got[0] = at + n

        # Shielded from the caller (see request), cancelled by its own deadline.
        with trio.CancelScope(deadline=trio.current_time() + limit, shield=True) as scope:
            try:
                connection = await self._connection()
                signed = auth.aws_sign_request(request, self.signing_for(body))
                if self._static:  # C only, tens of microseconds: no trio round trip
                    signed.result()
                else:
                    await _wait(signed)
            except Exception as exc:
                raise CrtRequestError(operation, 0, _name(exc), str(exc)) from None
            stream = connection.request(request, on_response, on_body)
            stream.activate()
            try:
                await _wait(stream.completion_future, shield_on_cancel=connection)
            except Exception as exc:
                connection.close()
                raise CrtRequestError(operation, 0, _name(exc), str(exc)) from None
        if scope.cancelled_caught:
            raise CrtRequestError(operation, 0, "RequestTimeout",
                                  f"no answer within {limit:.0f} s")
        status = state["status"]
        headers_dict = {k.lower(): v for k, v in state["headers"]}
        if headers_dict.get("connection", "").lower() == "close":
            connection.close()
        else:
            self._idle.append(connection)
        text = b"".join(received) if received else b""
        if status >= 300 or (operation != "GetObject" and text.lstrip().startswith(b"<")
                             and b"<Error>" in text[:512]):
            code, message = error_code(text, status)
            raise CrtRequestError(operation, status, code, message, headers_dict)
        answer = members(headers_dict)
        if into is not None:
            if got[0] != expect_size:
                raise CrtRequestError(operation, 0, "IncompleteBody", f"{got[0]} bytes "
                                      f"received, {expect_size} expected")
            return answer, into
        return answer, text


def error_code(text: bytes, status: int) -> tuple[str, str]:
    """The S3 error code and message of an error answer's body (the status's own words
    if it has none)."""
    code_match, message_match = _CODE.search(text), _MESSAGE.search(text)
    code = code_match.group(1).decode() if code_match else str(status)
    message = (message_match.group(1).decode(errors="replace") if message_match
               else _REASONS.get(status, "error"))
    return code, message


async def _wait(future: Any, shield_on_cancel: Any = None) -> Any:
    """The result of a concurrent.futures.Future completed by a CRT thread. If the
    caller's deadline passes, `shield_on_cancel` (a connection) is closed, which ends the
    request, and its end is awaited, so no callback outlives the attempt."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    future.add_done_callback(lambda _: token.run_sync_soon(done.set))
    try:
        await done.wait()
    except trio.Cancelled:
        if shield_on_cancel is not None:
            shield_on_cancel.close()
            with trio.CancelScope(shield=True):
                await done.wait()
        raise
    return future.result()


def _name(exc: BaseException) -> str:
    return getattr(exc, "name", "") or type(exc).__name__


_RETRYABLE_CODES = {"Throttling", "ThrottlingException", "ThrottledException",
                    "RequestThrottledException", "TooManyRequestsException", "SlowDown",
                    "RequestTimeout", "RequestTimeoutException", "InternalError",
                    "ServiceUnavailable", "PriorRequestNotComplete"}


def _retryable(exc: CrtRequestError) -> bool:
    """What botocore's standard mode retries: no answer, 5xx but 501 NotImplemented (an
    operation the server lacks), 429, throttling, timeouts, and answers whose error body
    could not be read (a 200 carrying an error included)."""
    return (exc.status == 0 or exc.status >= 500 and exc.status != 501 or exc.status == 429
            or exc.code in _RETRYABLE_CODES or exc.code == str(exc.status) and exc.status
            not in (301, 304, 400, 403, 404, 412, 416))


_REASONS = {301: "Moved Permanently", 304: "Not Modified", 400: "Bad Request",
            403: "Forbidden", 404: "Not Found", 412: "Precondition Failed",
            416: "Requested Range Not Satisfiable", 500: "Internal Server Error",
            503: "Slow Down"}


@functools.lru_cache(maxsize=256)
def parse_http_date(value: str) -> datetime:
    """An HTTP date (Last-Modified). Cached: the objects of a listing written together
    share a few seconds, and email.utils takes a few microseconds per date."""
    return email.utils.parsedate_to_datetime(value)
