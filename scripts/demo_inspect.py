"""Small S3 helpers for scripts/demo.sh (run with the project's virtualenv python).

    demo_inspect.py free-port
    demo_inspect.py wait ENDPOINT [--timeout SECONDS] [--pid PID]
    demo_inspect.py create-bucket ENDPOINT BUCKET
    demo_inspect.py head ENDPOINT BUCKET KEY
    demo_inspect.py pending ENDPOINT BUCKET

Credentials and region come from the usual AWS environment variables.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import boto3
from botocore.config import Config


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(signature_version="s3v4", retries={"max_attempts": 2}),
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait(endpoint: str, timeout: float, pid: int | None) -> int:
    s3 = client(endpoint)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            print(f"server process {pid} exited before answering", file=sys.stderr)
            return 1
        try:
            s3.list_buckets()
            return 0
        except Exception as exc:  # connection refused while it starts
            last = exc
            time.sleep(0.1)
    print(f"no answer from {endpoint} within {timeout:g}s: {last}", file=sys.stderr)
    return 1


def create_bucket(endpoint: str, bucket: str) -> int:
    client(endpoint).create_bucket(Bucket=bucket)
    print(f"created bucket {bucket}")
    return 0


def head(endpoint: str, bucket: str, key: str) -> int:
    meta = client(endpoint).head_object(Bucket=bucket, Key=key)
    etag = meta["ETag"].strip('"')
    parts = etag.rpartition("-")[2] if "-" in etag else "1 (single PUT)"
    rows = [
        ("Key", f"s3://{bucket}/{key}"),
        ("ETag", meta["ETag"]),
        ("Parts", parts),
        ("ContentLength", meta["ContentLength"]),
        ("ServerSideEncryption", meta.get("ServerSideEncryption", "-")),
        ("StorageClass", meta.get("StorageClass", "STANDARD")),
    ]
    for name, value in rows:
        print(f"  {name:<21} {value}")
    for name, value in sorted(meta.get("Metadata", {}).items()):
        print(f"  x-amz-meta-{name:<10} {value}")
    return 0


def pending(endpoint: str, bucket: str) -> int:
    uploads = client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    print(f"  pending multipart uploads: {len(uploads)}")
    for upload in uploads:
        print(f"    {upload['Key']} {upload['UploadId']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-port")
    p = sub.add_parser("wait")
    p.add_argument("endpoint")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--pid", type=int)
    p = sub.add_parser("create-bucket")
    p.add_argument("endpoint")
    p.add_argument("bucket")
    p = sub.add_parser("head")
    p.add_argument("endpoint")
    p.add_argument("bucket")
    p.add_argument("key")
    p = sub.add_parser("pending")
    p.add_argument("endpoint")
    p.add_argument("bucket")
    args = parser.parse_args(argv)

    if args.cmd == "free-port":
        print(free_port())
        return 0
    if args.cmd == "wait":
        return wait(args.endpoint, args.timeout, args.pid)
    if args.cmd == "create-bucket":
        return create_bucket(args.endpoint, args.bucket)
    if args.cmd == "head":
        return head(args.endpoint, args.bucket, args.key)
    return pending(args.endpoint, args.bucket)


if __name__ == "__main__":
    sys.exit(main())
