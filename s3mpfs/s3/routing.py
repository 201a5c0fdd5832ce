"""Which requests go through awscrt (s3/crt.py) rather than boto3, and sending them there.

HEAD, listings and small GETs and PUTs (bodies under crt.MAX_BODY) go through awscrt
unless S3MPFS_HTTP=boto3, and so do read blocks over https (s3/blockgets.py; over http too
with S3MPFS_HTTP=crt); parts, everything else, and anything s3/crt.py cannot express (it
answers None) go through boto3 in `s3/store.py`. `CrtRoute` takes the
same boto3-style parameters the store would give boto3 and answers in boto3's shape, so
the store's callers cannot tell the two paths apart: failures raise the botocore
exceptions the boto3 path would, and every request is counted in `stats` like the others.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import quote

import trio
from botocore.exceptions import ClientError, EndpointConnectionError

from ..config import MountConfig
from . import blockgets, crt, listxml
from .integrity import Integrity, Sent
from .stats import MountStats

log = logging.getLogger(__name__)

CRT_CONCURRENCY = 64  # requests in flight through awscrt (HEADs of a listing, small PUTs)
# boto3 methods whose requests s3/crt.py can send, and their S3 operation names.
_OPERATIONS = {"put_object": "PutObject", "upload_part": "UploadPart"}


class CrtRoute:
    """Requests through one awscrt client, under their own limiter."""

    def __init__(self, client: crt.CrtClient, stats: MountStats,
                 blocks: blockgets.BlockGets | None = None) -> None:
        self._crt = client
        self.stats = stats
        self._blocks = blocks  # GETs of crt.MAX_BODY and more (read blocks), or None
        # Requests through awscrt hold no worker thread: a HEAD costs a connection and
        # a few kilobytes, so a listing's HEADs can have many more in flight (s3fs: 20).
        self._limiter = trio.CapacityLimiter(CRT_CONCURRENCY)

    @classmethod
    def create(cls, boto_client: Any, config: MountConfig, stats: MountStats, *,
               check_mode: bool = False) -> CrtRoute | None:
        """The route for a mount's boto3 client; None when every request is to go
        through boto3: the mount-time check, S3MPFS_HTTP=boto3, a proxy, no awscrt or
        no credentials (see crt.CrtClient.create). Read blocks go through it over https,
        or with S3MPFS_HTTP=crt (see s3/blockgets.py)."""
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
        blocks = (blockgets.create(client, config.read_ahead)
                  if client.tls_context is not None or mode == "crt" else None)
        return cls(client, stats, blocks)

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
        failure: Exception | None = None
        answer: dict[str, Any] = {}
        try:
            await self._acquire()
            try:
                answer, data = await self._crt.request(operation, method, key, headers, body,
                                                       query, expect_size)
            finally:
                self._limiter.release()
            answer["Body"] = data
        except crt.CrtRequestError as exc:
            answer = {"ResponseMetadata": {"RetryAttempts": exc.retries}}
            failure = self._botocore_error(operation, exc)
        # Counted as the boto3 path counts its requests (s3/stats.py), once answered.
        self.stats.record(operation, key, answer, failure, len(body or b""))
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
        block client, or parameters s3/crt.py cannot express). Failures raise the
        botocore exceptions the boto3 path would."""
        headers = crt.headers_for(params)
        if self._blocks is None or headers is None:
            return None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("GetObject %s (crt s3)", key)
        failure: Exception | None = None
        answer: dict[str, Any] = {}
        body = b""
        try:
            answer, body = await self._blocks.get(key, headers, size)
        except crt.CrtRequestError as exc:
            answer = {"ResponseMetadata": {"RetryAttempts": exc.retries}}
            failure = self._botocore_error("GetObject", exc)
        self.stats.record("GetObject", key, answer, failure, 0)
        if failure is not None:
            raise failure
        return answer, body

    def sends(self, method: str, size: int) -> bool:
        """Whether a request of this boto3 method carrying `size` bytes goes through here."""
        return method in _OPERATIONS and size < crt.MAX_BODY

    async def send(self, method: str, data: bytes, kwargs: dict[str, Any],
                   integrity: Integrity) -> tuple[dict, Sent] | None:
        """A PutObject or UploadPart (boto3's `method` and parameters) carrying `data`
        with the checksum `integrity` gives it; None if s3/crt.py cannot express it (use
        boto3). The caller checks the answer against what was sent."""
        if len(data) > 256 * 1024:  # zlib/hashlib release the GIL in a worker thread
            sent = await trio.to_thread.run_sync(integrity.prepare, data)
        else:
            sent = integrity.prepare(data)
        params = {k: v for k, v in kwargs.items() if k not in ("Key", "UploadId",
                                                                 "PartNumber")}
        query = (f"partNumber={kwargs['PartNumber']}&uploadId="
                 f"{quote(kwargs['UploadId'], safe='')}" if "UploadId" in kwargs else "")
        with_value = crt.add_checksum_value({**params, **sent.params}, data)
        if with_value is None:
            return None
        resp = await self.call(_OPERATIONS[method], "PUT", kwargs["Key"], with_value,
                               body=data, query=query)
        return None if resp is None else (resp, sent)


def _proxied(boto_client: Any) -> bool:
    """Whether boto3 reaches the endpoint through a proxy (its configured proxies, or
    the environment's, NO_PROXY heeded)."""
    session = boto_client._endpoint.http_session  # noqa: SLF001
    proxies = getattr(session, "_proxy_config", None)
    return proxies is not None and bool(proxies.proxy_url_for(boto_client.meta.endpoint_url))
