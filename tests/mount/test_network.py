"""The way to S3: a mount whose endpoint is reached through a proxy (HTTP_PROXY and the
like, as on networks that allow no direct connection) sends every request through it."""

from __future__ import annotations

import os
from typing import Any

import pytest
from s3proxy import S3Proxy

pytestmark = pytest.mark.mount


def test_a_proxied_endpoint_gets_every_request_through_the_proxy(
    s3_server: str, s3: Any, bucket: str, mount: Any
) -> None:
    """boto3 heeds HTTP_PROXY; awscrt, which carries small requests, would connect
    straight to the endpoint: with a proxy in the way, every request goes through
    boto3. (The fault proxy of tests/s3proxy.py serves as a forwarding proxy: it sends
    whatever it is asked to its server.)"""
    s3.put_object(Bucket=bucket, Key="theirs", Body=b"written by another tool")
    with S3Proxy(s3_server) as proxy:
        m = mount(bucket, env={"HTTP_PROXY": proxy.url, "http_proxy": proxy.url,
                               "NO_PROXY": "", "no_proxy": ""})
        (m.path / "ours").write_bytes(b"hello")
        assert os.stat(m.path / "theirs").st_size == 23
        assert (m.path / "theirs").read_bytes() == b"written by another tool"
        assert sorted(os.listdir(m.path)) == ["ours", "theirs"]
        m.unmount()
        requests = proxy.requests
    kinds = {(r.kind, r.key) for r in requests}
    assert {("PutObject", "ours"), ("GetObject", "theirs")} <= kinds, kinds
    assert "ListObjectsV2" in {kind for kind, _ in kinds}, kinds
    agents = {r.headers.get("user-agent", "").partition("/")[0] for r in requests}
    assert agents == {"Boto3"}, agents
    assert "reached through a proxy" in m.log_text()
    assert s3.get_object(Bucket=bucket, Key="ours")["Body"].read() == b"hello"
