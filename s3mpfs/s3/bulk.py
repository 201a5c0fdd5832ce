"""Read blocks and parts (bodies of crt.MAX_BODY and more) through awscrt's S3 client, over https.

Through boto3 a body is sent and received by urllib3, and over https Python's ssl module
encrypts or decrypts it one 16 KiB TLS record at a time, each a round of Python calls
around a GIL release: reads over https ran at 0.68x s3fs-fuse's, 2.0 CPU-s per GiB
against 1.2 over http. awscrt's S3 client (aws-c-s3, the engine of mountpoint-s3) does
the TLS and the socket I/O in its C threads:
- a read block arrives whole and is handed to Python once, as a bytes object, which
  becomes the block as it is (no copy here): 1.5 CPU-s per GiB over https;
- a part (UploadPart, or a PutObject of a large file) is read from our bytes in one call
  into the client's buffer, then encrypted and sent without Python.
Over http boto3 reads the socket straight into the block and sends a part with one
`sendall` that releases the GIL, which costs less, so bodies go through here only over
https (or with S3MPFS_HTTP=crt, which the tests use to exercise this path on their http
servers).

Only the transfer is done here: s3/ranged.py names a block's range and version
(`If-Match`), checks the answer (ETag, Content-Range, length, checksum) and asks again
for a block that did not arrive whole (parts arrive whole or not at all: a broken body
keeps nothing); s3/store.py gives a part its checksum and checks the answer. Attempts are
retried as crt.CrtClient retries its requests; one past its deadline (connect_timeout +
read_timeout + 1 s per MiB) is cancelled, and fails with crt.CrtRequestError.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import trio

from . import crt

try:
    from awscrt import http, s3
except ImportError:  # pragma: no cover - awscrt is a dependency
    s3 = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


class BulkRequests:
    """One awscrt S3 client for a mount's read blocks and parts, with the endpoint,
    credentials and TLS settings of its crt.CrtClient."""

    def __init__(self, client: crt.CrtClient, part_size: int) -> None:
        assert s3 is not None
        self._crt = client
        self.part_size = part_size  # a block is one part: it arrives in one piece
        kwargs: dict[str, Any] = {}
        if client.tls_context is not None:
            options = client.tls_context.new_connection_options()
            options.set_server_name(client.hostname)
            kwargs["tls_connection_options"] = options
        self._client = s3.S3Client(
            region=client.region,
            tls_mode=(s3.S3RequestTlsMode.ENABLED if client.tls_context is not None
                      else s3.S3RequestTlsMode.DISABLED),
            signing_config=client.s3_signing_config(),
            part_size=part_size,
            connect_timeout_ms=int(client.connect_timeout * 1000),
            # Retried by crt.CrtClient.retrying, as the other requests through awscrt.
            retry_config=s3.S3RetryConfig(retry_mode=s3.S3RetryMode.NONE),
            **kwargs)

    async def get(self, key: str, headers: list[tuple[str, str]], size: int
                  ) -> tuple[dict[str, Any], bytes]:
        """A GetObject (`headers` name the range, at most `size` bytes): (boto3-shaped
        answer, body). Fails with crt.CrtRequestError."""
        def attempt() -> Any:
            request = http.HttpRequest("GET", self._crt.path(key), http.HttpHeaders(
                [("Host", self._crt.host), *headers]))
            return self._attempt("GetObject", s3.S3RequestType.GET_OBJECT, request, size)

        (answer, chunks), retries = await self._crt.retrying("GetObject", attempt)
        answer["ResponseMetadata"] = {"RetryAttempts": retries}
        return answer, _joined(chunks)

    async def put(self, operation: str, key: str, query: str,
                  headers: list[tuple[str, str]], data: bytes) -> dict[str, Any]:
        """A PutObject or UploadPart (`query` names the part) carrying `data`: the
        boto3-shaped answer. Fails with crt.CrtRequestError."""
        path = self._crt.path(key) + (f"?{query}" if query else "")
        # Over http the payload's SHA256 is signed (see crt.CrtClient.signing_for):
        # hashed in a worker thread, which hashlib lets run without the GIL.
        signing = await trio.to_thread.run_sync(self._crt.part_signing_for, data)

        def attempt() -> Any:
            request = http.HttpRequest("PUT", path, http.HttpHeaders(
                [("Host", self._crt.host), ("Content-Length", str(len(data))), *headers]),
                io.BytesIO(data))  # read once, into the client's buffer
            return self._attempt(operation, s3.S3RequestType.DEFAULT, request, len(data),
                                 signing)

        (answer, _), retries = await self._crt.retrying(operation, attempt)
        answer["ResponseMetadata"] = {"RetryAttempts": retries}
        return answer

    async def _attempt(self, operation: str, kind: Any, request: Any, size: int,
                       signing: Any = None
                       ) -> tuple[dict[str, Any], list[tuple[int, bytes]]]:
        """One request of `size` bytes of body: (boto3-shaped answer, the body's parts
        as (offset, bytes))."""
        state: dict[str, Any] = {"status": 0, "headers": []}
        chunks: list[tuple[int, bytes]] = []  # (offset in the object, bytes), in order

        def on_headers(status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
            state["status"], state["headers"] = status_code, headers

        def on_body(chunk: bytes, offset: int, **_: Any) -> None:
            chunks.append((offset, chunk))  # a bytes object of its own: kept, not copied

        def on_done(error: BaseException | None = None, status_code: int = 0,
                    error_headers: list[tuple[str, str]] | None = None,
                    error_body: bytes | None = None, **_: Any) -> None:
            state["error"], state["error_status"] = error, status_code
            state["error_headers"], state["error_body"] = error_headers, error_body
            token.run_sync_soon(done.set)

        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        limit = self._crt.connect_timeout + self._crt.read_timeout + (size >> 20)
        meta = self._client.make_request(
            type=kind, request=request, part_size=self.part_size, signing_config=signing,
            operation_name=operation if kind == s3.S3RequestType.DEFAULT else None,
            on_headers=on_headers, on_body=on_body, on_done=on_done)
        # Shielded: the request runs in awscrt's threads until it is done, so it is
        # waited for; past its deadline it is cancelled (and still waited for).
        with trio.CancelScope(shield=True):
            with trio.move_on_after(limit):
                await done.wait()
            if not done.is_set():
                meta.cancel()
                await done.wait()
                raise crt.CrtRequestError(operation, 0, "RequestTimeout",
                                          f"no answer within {limit:.0f} s")
        return self._answer(operation, state), chunks

    def _answer(self, operation: str, state: dict[str, Any]) -> dict[str, Any]:
        error = state.get("error")
        if error is None:
            return crt.members({k.lower(): v for k, v in state["headers"]})
        status = int(state.get("error_status") or 0)
        text = bytes(state.get("error_body") or b"")
        headers = {k.lower(): v for k, v in (state.get("error_headers") or [])}
        if status >= 300:
            code, message = crt.error_code(text, status)
            raise crt.CrtRequestError(operation, status, code, message, headers)
        name = getattr(error, "name", type(error).__name__)
        raise crt.CrtRequestError(operation, 0, str(name), str(error))


def _joined(chunks: list[tuple[int, bytes]]) -> bytes:
    """The body: its one part as it came (the usual case, a block is one part), else
    the parts in offset order, joined."""
    if len(chunks) == 1:
        return chunks[0][1]
    return b"".join(chunk for _, chunk in sorted(chunks, key=lambda c: c[0]))


def create(client: crt.CrtClient | None, part_size: int) -> BulkRequests | None:
    """A BulkRequests sharing `client`'s endpoint and credentials, or None without one."""
    if client is None or s3 is None:
        return None
    return BulkRequests(client, part_size)
