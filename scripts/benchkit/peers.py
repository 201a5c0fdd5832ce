"""The tools compared: s3mpfs (and two option variants), s3fs-fuse, rclone (copyto and
mount), boto3 and the awscrt S3 client; `all_tools` lists them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from .base import (
    ACCESS_KEY,
    KEY,
    REGION,
    REPO,
    SECRET_KEY,
    Unavailable,
    python_module,
    with_scripts,
)
from .procs import check, delta, run_timed
from .server import Bench
from .tools import FuseTool, Sample, Tool


class S3mpfs(FuseTool):
    def __init__(self, bench: Bench, name: str, label: str, options: str = "",
                 measure_read: bool = True) -> None:
        super().__init__(bench)
        self.name, self.label, self.options = name, label, options
        self.measure_read = measure_read

    def how(self) -> str:
        opts = f"endpoint_url=URL{',' + self.options if self.options else ''}"
        return f"`python -m s3mpfs BUCKET MNT -f -o {opts}`; `cp` in, `cat` out"

    def argv(self, mountpoint: str) -> list[str]:
        opts = f"endpoint_url={self.bench.endpoint},region={REGION}"
        if self.options:
            opts += "," + self.options
        return [sys.executable, "-m", "s3mpfs", self.bucket, mountpoint, "-f", "-o", opts]

    def env(self) -> dict[str, str]:
        env = dict(self.bench.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        return env


class S3fs(FuseTool):
    name, label = "s3fs", "s3fs-fuse"

    def how(self) -> str:
        return ("`s3fs BUCKET MNT -f -o url=URL,use_path_request_style,endpoint=us-east-1,"
                "passwd_file=F`, otherwise defaults (stages writes in a temporary file in "
                "/tmp, uploads 10 MB parts, 5 in parallel, at close); `cp` in, `cat` out")

    def prepare(self) -> None:
        if not shutil.which("s3fs"):
            raise Unavailable("s3fs is not installed (Debian package s3fs; scripts/bench.sh "
                              "installs it)")
        self.passwd = self.bench.scratch / "s3fs.passwd"
        self.passwd.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        self.passwd.chmod(0o600)
        super().prepare()

    def argv(self, mountpoint: str) -> list[str]:
        tls = ",no_check_certificate" if self.bench.https else ""
        return ["s3fs", self.bucket, mountpoint, "-f", "-o",
                f"url={self.bench.endpoint},use_path_request_style,endpoint={REGION},"
                f"passwd_file={self.passwd},dbglevel=warn{tls}"]


def rclone_env(bench: Bench) -> dict[str, str]:
    conf = bench.scratch / "rclone.conf"
    conf.touch()
    env = dict(bench.env)
    env.update({
        "RCLONE_CONFIG": str(conf),
        "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": bench.endpoint,
        "RCLONE_CONFIG_BENCH_REGION": REGION,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ACCESS_KEY,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET_KEY,
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    })
    env.pop("AWS_CA_BUNDLE", None)  # rclone's AWS SDK refuses it; it takes --ca-cert
    if bench.https:
        env["RCLONE_CA_CERT"] = bench.cert
    return env


def rclone_unavailable() -> None:
    if not shutil.which("rclone"):
        raise Unavailable("rclone is not installed (Debian package rclone; scripts/bench.sh "
                          "installs it)")


class RcloneMount(FuseTool):
    name, label = "rclone-mount", "rclone mount"
    versioned = True

    def how(self) -> str:
        return ("`rclone mount bench:BUCKET MNT`, defaults (--vfs-cache-mode off: writes "
                "stream as a multipart upload of 5 MiB parts, 4 in parallel); `cp` in, "
                "`cat` out; bucket versioned (see below)")

    def prepare(self) -> None:
        rclone_unavailable()
        super().prepare()

    def env(self) -> dict[str, str]:
        return rclone_env(self.bench)

    def argv(self, mountpoint: str) -> list[str]:
        return ["rclone", "mount", f"bench:{self.bucket}", mountpoint, "--log-level", "NOTICE"]


class Boto3(Tool):
    name, label = "boto3", "boto3 upload_file/download_file"
    child = "_boto3"  # this script's argument that makes the child process do the transfer

    def how(self) -> str:
        return ("`upload_file` / `download_file` with s3transfer's defaults (8 MiB parts, "
                "10 threads), in a child process; the clock runs around the call only")

    def _child(self, direction: str) -> Sample:
        """One transfer in a child process: the transfer's own seconds and CPU time (not
        the interpreter's start-up), the process's peak RSS (start-up included)."""
        bench = self.bench
        target = bench.data_dir / "download.bin"
        path = bench.source if direction == "up" else target
        srv0 = bench.server_cpu()
        out = tempfile.TemporaryFile()
        done = check(run_timed(
            [*python_module("benchkit", self.child), direction, bench.endpoint,
             self.bucket, KEY, str(path)], env=with_scripts(bench.env), stdout=out, cold=True),
            f"{self.name} {direction}")
        srv1 = bench.server_cpu()
        out.seek(0)
        report = json.loads(out.read().decode().strip().splitlines()[-1])
        out.close()
        return Sample(report["seconds"], done.max_rss_kib, report["cpu"], None,
                      delta(srv1, srv0))

    def write(self) -> Sample:
        sample = self._child("up")
        sample.parts = self.bench.object_parts(self.bucket)
        return sample

    def read(self, verify: bool) -> tuple[Sample, str | None]:
        sample = self._child("down")
        return sample, download_verdict(self.bench, verify)


def download_verdict(bench: Bench, verify: bool) -> str | None:
    target = bench.data_dir / "download.bin"
    try:
        if not verify or bench.null:  # the null server keeps no bytes to compare
            return None
        same = subprocess.run(["cmp", "-s", str(bench.source), str(target)]).returncode == 0
        return "identical" if same else "DIFFERENT"
    finally:
        target.unlink(missing_ok=True)


class Rclone(Tool):
    name, label = "rclone", "rclone copyto"
    versioned = True

    def how(self) -> str:
        return ("`rclone copyto FILE bench:BUCKET/KEY` and back, defaults (5 MiB parts, 4 in "
                "parallel; MD5 of the file computed first for its metadata; multi-thread "
                "download); bucket versioned (see below)")

    def prepare(self) -> None:
        rclone_unavailable()
        super().prepare()
        done = run_timed(["rclone", "lsf", f"bench:{self.bucket}"], env=rclone_env(self.bench))
        if done.returncode != 0:
            raise Unavailable(f"rclone cannot list the bucket: {done.output.strip()[-300:]}")

    def _copy(self, src: str, dst: str) -> Sample:
        bench = self.bench
        srv0 = bench.server_cpu()
        done = check(run_timed(["rclone", "copyto", "--retries", "1", src, dst],
                               env=rclone_env(bench), cold=True), "rclone copyto")
        srv1 = bench.server_cpu()
        return Sample(done.seconds, done.max_rss_kib, done.cpu, None, delta(srv1, srv0))

    def write(self) -> Sample:
        sample = self._copy(str(self.bench.source), f"bench:{self.bucket}/{KEY}")
        sample.parts = self.bench.object_parts(self.bucket)
        return sample

    def read(self, verify: bool) -> tuple[Sample, str | None]:
        target = self.bench.data_dir / "download.bin"
        sample = self._copy(f"bench:{self.bucket}/{KEY}", str(target))
        return sample, download_verdict(self.bench, verify)



class AwsCrt(Boto3):
    name, label = "awscrt", "awscrt S3 client (no FUSE)"
    child = "_crt"

    def how(self) -> str:
        return ("awscrt's `S3Client` (the CRT transfer engine: C, parallel 8 MiB parts), "
                "`PUT_OBJECT` from the file and `GET_OBJECT` to a file in /dev/shm, in a "
                "child process; the clock runs around the transfer only")


def all_tools(bench: Bench) -> list[Tool]:
    return [
        S3mpfs(bench, "s3mpfs", "s3mpfs (defaults)"),
        S3mpfs(bench, "s3mpfs-c8", "s3mpfs upload_concurrency=8",
               "upload_concurrency=8", measure_read=False),
        S3mpfs(bench, "s3mpfs-p16", "s3mpfs part_size=16M", "part_size=16M",
               measure_read=False),
        Boto3(bench),
        S3fs(bench),
        Rclone(bench),
        RcloneMount(bench),
        AwsCrt(bench),
    ]
