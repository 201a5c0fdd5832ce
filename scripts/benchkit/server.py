"""The benchmark's surroundings: scratch space, the source file, the clients' environment,
the S3 server the tools talk to (moto or nulls3, started here) and a boto3 client on it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .base import (
    ACCESS_KEY,
    AWS_VARS_TO_CLEAR,
    KEY,
    REGION,
    SECRET_KEY,
    BenchError,
    MiB,
    human,
    log,
    python_module,
    with_scripts,
)
from .procs import Cleanup, cpu_seconds, stop_process


class Bench:
    def __init__(self, args: argparse.Namespace, cleanup: Cleanup) -> None:
        self.args = args
        self.cleanup = cleanup
        self.size = args.size
        self.scratch = Path(tempfile.mkdtemp(prefix="s3mpfs-bench-"))
        cleanup.push("scratch directory", lambda: shutil.rmtree(self.scratch, True))
        self.endpoint = ""
        self.moto: subprocess.Popen | None = None
        self.s3: Any = None
        self.env = self._environment()
        self.source = Path()
        self.data_dir = self.scratch
        self.null = False  # the null server (nulls3), not moto
        self.https = False
        self.cert = ""
        self.endpoints: dict[str, str] = {}

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in AWS_VARS_TO_CLEAR}
        aws_dir = self.scratch / "aws"
        aws_dir.mkdir()
        (aws_dir / "config").write_text("")
        (aws_dir / "credentials").write_text("")
        env.update({
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(aws_dir / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true", "PYTHONUNBUFFERED": "1",
        })
        return env

    # -- setup ------------------------------------------------------------------------

    def make_source(self) -> None:
        shm = Path("/dev/shm")
        if shm.is_dir() and shutil.disk_usage(shm).free > 3 * self.size:
            self.data_dir = Path(tempfile.mkdtemp(prefix="s3mpfs-bench-", dir=shm))
            self.cleanup.push("data directory", lambda: shutil.rmtree(self.data_dir, True))
        self.source = self.data_dir / "source.bin"
        log(f"writing {human(self.size)} of random bytes to {self.source}")
        chunk = 4 * MiB
        with open(self.source, "wb") as f:
            for offset in range(0, self.size, chunk):
                f.write(os.urandom(min(chunk, self.size - offset)))

    def start_moto(self) -> None:
        moto_tmp = self.scratch / "moto-tmp"  # moto spools object data to temporary files
        moto_tmp.mkdir()
        argv = python_module("benchkit", "_moto")
        if self.args.stock_moto:
            argv.append("--stock-moto")
        self.moto = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.scratch / "moto.log", "wb"), start_new_session=True,
            env={**with_scripts(self.env), "TMPDIR": str(moto_tmp)})
        moto = self.moto
        self.cleanup.push("moto server", lambda: (moto.stdin and moto.stdin.close(),
                                                  stop_process(moto)))
        assert moto.stdout is not None
        line = moto.stdout.readline().decode().strip()
        if not line.isdigit():
            raise BenchError(f"moto server did not start: {self.tail(self.scratch / 'moto.log')}")
        self.endpoint = f"http://127.0.0.1:{line}"
        import boto3

        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                               aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        self.s3.list_buckets()
        log(f"moto S3 server at {self.endpoint} (pid {moto.pid}, "
            f"{'stock' if self.args.stock_moto else 'ranged GETs served by offset'})")

    @staticmethod
    def tail(path: Path, lines: int = 8) -> str:
        try:
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def bucket(self, name: str, versioned: bool = False) -> str:
        bucket = f"bench-{name}"
        self.s3.create_bucket(Bucket=bucket)
        if versioned:
            self.s3.put_bucket_versioning(Bucket=bucket,
                                          VersioningConfiguration={"Status": "Enabled"})
        return bucket

    def object_parts(self, bucket: str) -> int:
        head = self.s3.head_object(Bucket=bucket, Key=KEY)
        if head["ContentLength"] != self.size:
            raise BenchError(f"s3://{bucket}/{KEY} has {head['ContentLength']} bytes, "
                             f"{self.size} were written")
        etag = head["ETag"].strip('"')
        return int(etag.rsplit("-", 1)[1]) if "-" in etag else 1

    def delete_object(self, bucket: str) -> None:
        self.s3.delete_object(Bucket=bucket, Key=KEY)
        listing = self.s3.list_object_versions(Bucket=bucket, Prefix=KEY)
        for version in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
            self.s3.delete_object(Bucket=bucket, Key=version["Key"],
                                  VersionId=version["VersionId"])
        pending = self.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for upload in pending:
            self.s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                           UploadId=upload["UploadId"])

    def server_cpu(self) -> float | None:
        return cpu_seconds(self.moto.pid if self.moto else None)

    # -- the null server (scripts/nulls3/) --------------------------------------------

    def start_nulls3(self, delay_ms: int, populate: list[str] | None = None) -> None:
        """One nulls3 process, three listeners on the same buckets: http, https (a
        throwaway certificate) and http with `delay_ms` before every answer. `populate`:
        nulls3's --populate BUCKET/PREFIX:COUNT arguments (keys made at start-up)."""
        from nulls3.tls import make_certificate

        self.cert, key = make_certificate(str(self.scratch))
        argv = python_module("nulls3", "--tls", self.cert, key, "--also", "https", "--also",
                             f"http+{delay_ms}")
        for spec in populate or []:
            argv += ["--populate", spec]
        self.moto = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.scratch / "nulls3.log", "wb"),
                                     start_new_session=True, env=with_scripts(self.env))
        server = self.moto
        self.cleanup.push("nulls3 server", lambda: (server.stdin and server.stdin.close(),
                                                    stop_process(server)))
        assert server.stdout is not None
        ports = server.stdout.readline().decode().split()
        if len(ports) != 3:
            raise BenchError(f"nulls3 did not start: {self.tail(self.scratch / 'nulls3.log')}")
        self.endpoints = {"http": f"http://127.0.0.1:{ports[0]}",
                          "https": f"https://127.0.0.1:{ports[1]}",
                          "delay": f"http://127.0.0.1:{ports[2]}"}
        self.null = True
        self.use("http")
        log(f"nulls3 at {self.endpoints} (pid {server.pid})")

    def use(self, which: str) -> None:
        """Point every tool at one of the null server's listeners."""
        import boto3

        self.endpoint = self.endpoints[which]
        self.https = which == "https"
        if self.https:
            self.env["AWS_CA_BUNDLE"] = self.cert
        else:
            self.env.pop("AWS_CA_BUNDLE", None)
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                               aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                               verify=self.cert if self.https else None)

    def requests(self) -> dict[str, int]:
        """Requests served so far by the null server, by S3 operation."""
        import urllib.request

        with urllib.request.urlopen(self.endpoints["http"] + "/?nulls3-stats",  # noqa: S310
                                    timeout=10) as answer:
            return json.loads(answer.read())
