"""Child modes `_boto3` and `_crt`: one timed transfer through boto3 (s3transfer) or the
awscrt S3 client, run in a process of its own; each prints its seconds and CPU time."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from .base import ACCESS_KEY, REGION, SECRET_KEY, MiB


def boto3_transfer(direction: str, endpoint: str, bucket: str, key: str, path: str) -> int:
    """Child mode: one managed transfer with s3transfer's defaults; prints its seconds."""
    import resource

    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    client.head_bucket(Bucket=bucket)  # connect and sign once before the clock starts
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    if direction == "up":
        client.upload_file(path, bucket, key)
    else:
        client.download_file(bucket, key, path)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    print(json.dumps({"seconds": seconds, "cpu": cpu}), flush=True)
    return 0



def crt_transfer(direction: str, endpoint: str, bucket: str, key: str, path: str) -> int:
    """Child mode: one awscrt S3 client transfer (PUT_OBJECT from a file / GET_OBJECT to
    a file), its defaults (8 MiB parts, parallel); prints its seconds and CPU time."""
    import resource
    from concurrent.futures import Future
    from urllib.parse import urlsplit

    from awscrt import auth, http, io, s3

    url = urlsplit(endpoint)
    tls = url.scheme == "https"
    signing = auth.AwsSigningConfig(
        algorithm=auth.AwsSigningAlgorithm.V4,
        credentials_provider=auth.AwsCredentialsProvider.new_static(ACCESS_KEY, SECRET_KEY),
        region=REGION, service="s3")
    kwargs: dict[str, Any] = {"tls_mode": s3.S3RequestTlsMode.ENABLED if tls
                              else s3.S3RequestTlsMode.DISABLED}
    if tls:
        options = io.TlsContextOptions()
        options.override_default_trust_store_from_path(ca_filepath=os.environ["AWS_CA_BUNDLE"])
        kwargs["tls_connection_options"] = io.ClientTlsContext(options).new_connection_options()
    client = s3.S3Client(region=REGION, signing_config=signing, part_size=8 * MiB, **kwargs)
    headers = [("Host", url.netloc)]
    if direction == "up":
        headers.append(("Content-Length", str(os.path.getsize(path))))
        headers.append(("Content-Type", "application/octet-stream"))
    request = http.HttpRequest("PUT" if direction == "up" else "GET", f"/{bucket}/{key}",
                               http.HttpHeaders(headers))
    done: Future = Future()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    client.make_request(
        type=s3.S3RequestType.PUT_OBJECT if direction == "up" else s3.S3RequestType.GET_OBJECT,
        request=request, send_filepath=path if direction == "up" else None,
        recv_filepath=path if direction == "down" else None,
        on_done=lambda error=None, **_: done.set_result(error))
    error = done.result()
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    if error is not None:
        print(f"awscrt {direction} failed: {error!r}", file=sys.stderr)
        return 1
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    print(json.dumps({"seconds": seconds, "cpu": cpu}), flush=True)
    return 0
