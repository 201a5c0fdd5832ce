"""Which requests go through awscrt (s3/crt.py) rather than boto3, and sending them there.

HEAD, listings and small GETs and PUTs (bodies under crt.MAX_BODY) go through awscrt
unless S3MPFS_HTTP=boto3, and so do read blocks and parts over https (s3/bulk.py; over
http too with S3MPFS_HTTP=crt); everything else, and anything s3/crt.py cannot express (it
answers None) go through boto3 in `s3/store.py`. `CrtRoute` takes the
same boto3-style parameters the store would give boto3 and answers in boto3's shape, so
the store's callers cannot tell the two paths apart: failures raise the botocore
exceptions the boto3 path would, and every request is counted in `stats` like the others.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import trio
from botocore.exceptions import ClientError, EndpointConnectionError

from ..config import MountConfig
from . import bulk, crt, listxml
from .integrity import Integrity, Sent
from .stats import MountStats

log = logging.getLogger(__name__)

CRT_CONCURRENCY = 64  # requests in flight through awscrt (HEADs of a listing, small PUTs)
# boto3 methods whose requests s3/crt.py can send, and their S3 operation names.
_OPERATIONS = {"put_object": "PutObject", "upload_part": "UploadPart"}


def carries_bodies(endpoint_url: str | None) -> bool:
    """Whether read blocks and parts go through awscrt's S3 client (s3/bulk.py), whose
    threads allocate their own buffers: over https (no endpoint_url is AWS's https), or
    over http with S3MPFS_HTTP=crt; never with S3MPFS_HTTP=boto3."""
    mode = os.environ.get("S3MPFS_HTTP", "")
    return mode != "boto3" and (mode == "crt" or not (endpoint_url or "").startswith("http://"))


class CrtRoute:
    """Requests through one awscrt client, under their own limiter."""

    def __init__(self, client: crt.CrtClient, stats: MountStats,
                 bulk_requests: bulk.BulkRequests | None,
                 bulk_limiter: trio.CapacityLimiter, bulk_cap: int) -> None:
        self._crt = client
        self.stats = stats
        self._bulk = bulk_requests  # bodies of crt.MAX_BODY and more, or None: boto3
        # Bodies in flight: as many as through boto3's threads (the store's limiter).
        self._bulk_limiter = bulk_limiter
        # Bytes of parts awscrt may hold copies of at once; more go through boto3.
        self._bulk_cap = bulk_cap
        self._bulk_bytes = 0
        # Requests through awscrt hold no worker thread: a HEAD costs a connection and
        # a few kilobytes, so a listing's HEADs can have many more in flight (s3fs: 20).
        self._limiter = trio.CapacityLimiter(CRT_CONCURRENCY)

    @classmethod
    def create(cls, boto_client: Any, config: MountConfig, stats: MountStats,
               bulk_limiter: trio.CapacityLimiter, *, check_mode: bool = False
               ) -> CrtRoute | None:
        """The route for a mount's boto3 client; None when every request is to go
        through boto3: the mount-time check, S3MPFS_HTTP=boto3, a proxy, no awscrt or
        no credentials (see crt.CrtClient.create). Read blocks and parts go through it
        over https, or with S3MPFS_HTTP=crt (see s3/bulk.py)."""
        mode = os.environ.get("S3MPFS_HTTP", "")
        if check_mode or mode == "boto3":
            return None
        if _proxied(boto_client):
            # awscrt would connect straight to the endpoint, which a proxied network
            # may not allow: every request takes boto3's way (the proxy's URL may carry
            # a password: not logged).
            log.info("the endpoint is reached through a proxy (HTTP_PROXY or "
                     "HTTPS_PROXY): every request goes through boto3")
            return None
        client = crt.CrtClient.create(boto_client, config.bucket,
                                      path_style=bool(config.endpoint_url),
                                      retries=config.retries,
                                      connect_timeout=config.connect_timeout,
                                      read_timeout=config.read_timeout)
        if client is None:
            return None
        bulk_requests = (bulk.create(client, config.read_ahead)
                         if carries_bodies(config.endpoint_url) else None)
        return cls(client, stats, bulk_requests, bulk_limiter, config.memory_limit // 4)

    async def call(self, operation: str, method: str, key: str, params: dict[str, Any],
                   body: bytes | None = None, query: str = "",
                   expect_size: int = 0) -> dict | None:
        """One request through awscrt, answered in boto3's shape (the body, if any, as
        "Body" bytes); None if s3/crt.py cannot express these parameters (use boto3).
        Failures raise the botocore exceptions the boto3 path would."""
        headers = crt.headers_for(params)
        if headers is None:
            return None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s (crt)", operation, key)

        async def request() -> dict[str, Any]:
            await self._acquire()
            try:
                answer, data = await self._crt.request(operation, method, key, headers,
                                                       body, query, expect_size)
            finally:
                self._limiter.release()
            answer["Body"] = data
            return answer

        return await self._counted(operation, key, len(body or b""), request)

    async def _counted(self, operation: str, key: str, sent: int,
                       request: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """`request()`'s answer, counted in `stats` as the boto3 path counts its requests
        (s3/stats.py): in flight while it runs; its failure raised as the botocore
        exception the boto3 path would raise."""
        failure: Exception | None = None
        self.stats.request_sent(operation, key)
        try:
            answer = await request()
        except crt.CrtRequestError as exc:
            answer = {"ResponseMetadata": {"RetryAttempts": exc.retries}}
            failure = self._botocore_error(operation, exc)
        except BaseException:  # cancelled: not answered, and no longer in flight
            self.stats.answered(operation, key, {}, None)
            raise
        self.stats.answered(operation, key, answer, failure, sent)
        if failure is not None:
            raise failure
        return answer

    def _botocore_error(self, operation: str, exc: crt.CrtRequestError) -> Exception:
        """The botocore exception the boto3 path would raise for this failure."""
        if exc.status == 0:
            return EndpointConnectionError(endpoint_url=self._crt.host,
                                           error=f"{exc.code}: {exc.message}")
        return ClientError({
            "Error": {"Code": exc.code, "Message": exc.message},
            "ResponseMetadata": {"HTTPStatusCode": exc.status, "HTTPHeaders": exc.headers,
                                 "RetryAttempts": exc.retries},
        }, operation)

    async def _acquire(self) -> None:
        """A token of the limiter: at once if one is free (`async with` the limiter would
        first yield to the scheduler, a round of trio's run loop per request), else
        when one is released. A cancelled caller is stopped here as it was there."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            await self._limiter.acquire()

    async def list_page(self, kwargs: dict[str, Any]) -> dict | None:
        """One ListObjectsV2 page (boto3's parameters), parsed by listxml.parse_list
        (botocore's parser and dateutil took a third of a cold `ls -l`); None: use boto3."""
        query = listxml.list_query(kwargs)
        if query is None:
            return None
        resp = await self.call("ListObjectsV2", "GET", "", {}, query=query)
        return None if resp is None else listxml.parse_list(resp["Body"])

    async def get_answer(self, key: str, params: dict[str, Any], size: int) -> dict | None:
        """A GetObject of a `size`-byte range (`params` name it), its body as "Body"
        (s3/ranged.py checks the rest of the answer); None: use boto3 (a body of
        crt.MAX_BODY or more, or parameters s3/crt.py cannot express)."""
        if size >= crt.MAX_BODY:
            return None
        return await self.call("GetObject", "GET", key, params, expect_size=size)

    async def get_block(self, key: str, params: dict[str, Any], size: int
                        ) -> tuple[dict, bytes] | None:
        """A GetObject of a range of crt.MAX_BODY or more (`params` name it, at most
        `size` bytes) through awscrt's S3 client: (answer, body); None: use boto3 (no
        such client, or parameters s3/crt.py cannot express). Failures raise the
        botocore exceptions the boto3 path would."""
        headers = crt.headers_for(params)
        if self._bulk is None or headers is None:
            return None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("GetObject %s (crt s3)", key)
        bulk_requests = self._bulk
        body = b""

        async def request() -> dict[str, Any]:
            nonlocal body
            async with self._bulk_limiter:
                answer, body = await bulk_requests.get(key, headers, size)
            return answer

        answer = await self._counted("GetObject", key, 0, request)
        return answer, body

    def sends(self, method: str, size: int) -> bool:
        """Whether a request of this boto3 method carrying `size` bytes may go through
        here (`send` may still answer None: boto3)."""
        return method in _OPERATIONS and (size < crt.MAX_BODY or self._bulk is not None)

    async def send(self, method: str, data: bytes, kwargs: dict[str, Any],
                   integrity: Integrity) -> tuple[dict, Sent] | None:
        """A PutObject or UploadPart (boto3's `method` and parameters) carrying `data`
        with the checksum `integrity` gives it; None if it is to go through boto3 (s3/crt.py
        cannot express it, or awscrt holds as many bytes of parts as it may). The caller
        checks the answer against what was sent."""
        bulk = len(data) >= crt.MAX_BODY
        if bulk and self._bulk_bytes + len(data) > self._bulk_cap:
            return None
        # awscrt's S3 client copies a body into its own buffer for the time it is sent:
        # those copies are bounded here, beside the parts' memory_limit.
        self._bulk_bytes += len(data) if bulk else 0
        try:
            return await self._send(method, data, kwargs, integrity, bulk=bulk)
        finally:
            self._bulk_bytes -= len(data) if bulk else 0

    async def _send(self, method: str, data: bytes, kwargs: dict[str, Any],
                    integrity: Integrity, *, bulk: bool) -> tuple[dict, Sent] | None:
        if len(data) > 256 * 1024:  # zlib/hashlib release the GIL in a worker thread
            sent = await trio.to_thread.run_sync(integrity.prepare, data)
        else:
            sent = integrity.prepare(data)
        params = {k: v for k, v in kwargs.items() if k not in ("Key", "UploadId",
                                                                 "PartNumber")}
        query = (f"partNumber={kwargs['PartNumber']}&uploadId="
                 f"{quote(kwargs['UploadId'], safe='')}" if "UploadId" in kwargs else "")
        with_value = {**params, **sent.params}
        if with_value.get("ChecksumAlgorithm") and \
                f"Checksum{with_value['ChecksumAlgorithm']}" not in with_value:
            return None  # (a value boto3 must compute)
        operation, key = _OPERATIONS[method], kwargs["Key"]
        if not bulk:
            resp = await self.call(operation, "PUT", key, with_value, body=data,
                                   query=query)
            return None if resp is None else (resp, sent)
        headers = crt.headers_for(with_value)
        if headers is None or self._bulk is None:
            return None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s (crt s3)", operation, key)
        bulk_requests = self._bulk

        async def request() -> dict[str, Any]:
            async with self._bulk_limiter:
                return await bulk_requests.put(operation, key, query, headers, data)

        return await self._counted(operation, key, len(data), request), sent


def _proxied(boto_client: Any) -> bool:
    """Whether boto3 reaches the endpoint through a proxy (its configured proxies, or
    the environment's, NO_PROXY heeded)."""
    session = boto_client._endpoint.http_session  # noqa: SLF001
    proxies = getattr(session, "_proxy_config", None)
    return proxies is not None and bool(proxies.proxy_url_for(boto_client.meta.endpoint_url))
