#!/usr/bin/env python3
"""Benchmark s3mpfs against its peers on a local S3 stand-in, and write docs/BENCHMARKS.md.

    .venv/bin/python scripts/bench.py [--size 1G] [--runs 3] [--out docs/BENCHMARKS.md]

One run does, in this order: generate one file of random bytes (in /dev/shm when it fits),
start moto's S3 server on 127.0.0.1 as a subprocess, and then, `--runs` times, for every
tool in turn (the runs are interleaved, so a burst of background load hits every tool
rather than one), write the file to a fresh bucket, check the object (size, ETag part
count), read it back, and delete the object. The tools:

    s3mpfs            `cp FILE MNT/` into the mount, `cat MNT/key > /dev/null` from a fresh mount
    s3mpfs variants   upload_concurrency=8, part_size=16M (writes only: reads are the same code)
    boto3             upload_file / download_file with s3transfer's defaults, in a child process
    s3fs-fuse         the Debian package `s3fs`, mounted like s3mpfs, default options
    rclone            `rclone copyto` both ways, default options
    rclone mount      `rclone mount`, default options (--vfs-cache-mode off: streaming writes)

Write throughput is the wall time of `cp` (for the mounts, `close()` returns once the upload
is complete) or of the transfer call; read throughput is the wall time of `cat` or of the
download. Every mount is fresh for each phase, so reads cannot be served by a cache left
by the write. Peak RSS is VmHWM of the FUSE daemon (reset through /proc/PID/clear_refs at
the start of each phase) or ru_maxrss of the client process. CPU seconds of the client and
of the moto server are recorded per phase, to show where the time goes on this machine.

A peer that cannot be installed or run is reported as "not available: <reason>".
Everything started here (mounts, servers, files) is cleaned up in `finally`, also on Ctrl-C
and SIGTERM. Nothing leaves this machine: the server listens on 127.0.0.1 only.

moto and ranged GETs: stock moto reads the whole object into memory for every ranged GET
and then slices it, so a 1 GiB object read in 8 MiB ranges copies 128 GiB inside the server,
and s3transfer's ten concurrent ranges hold ten copies (10 GiB) at once. Read numbers would
then measure how many ranges a tool asks for, not the tool. By default the server started
here serves a simple `Range: bytes=A-B` GET from the stored object at that offset (a small
patch applied in the server process only, see `_patch_moto_ranges`); `--stock-moto` turns
it off.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
REGION = "us-east-1"
KEY = "bench.bin"
ACCESS_KEY = "benchkey"
SECRET_KEY = "benchsecret"
FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
MOUNT_TIMEOUT = 30.0
UNMOUNT_TIMEOUT = 120.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Variables that could point a client at a real account, another endpoint, or (rclone)
# break it: the AWS SDK in rclone refuses AWS_CA_BUNDLE with its own HTTP transport.
AWS_VARS_TO_CLEAR = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CA_BUNDLE",
)


STOP = threading.Event()  # set by SIGINT/SIGTERM/SIGHUP


def check_stop() -> None:
    """Raise KeyboardInterrupt if a stop was asked for. The signal handler raises it too,
    but Python drops an exception raised while a finalizer runs (boto3's code sometimes
    is in one), so the loops below also look at the flag."""
    if STOP.is_set():
        raise KeyboardInterrupt("stop requested")


class Unavailable(Exception):
    """A peer that cannot be installed or run here; its message is the reason."""


class BenchError(Exception):
    """A measurement that went wrong (a command failed, a wrong object)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- sizes


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)(i?B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512M or 1G")
    unit = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB}[match.group(2).lower()]
    size = int(match.group(1)) * unit
    if size < 16 * MiB:
        raise argparse.ArgumentTypeError("use at least 16M, so that every tool uses multipart")
    return size


def human(size: int) -> str:
    if size % (1024 * MiB) == 0:
        return f"{size // (1024 * MiB)} GiB"
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size} bytes"


# --------------------------------------------------------------------------- processes


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a live process (all its threads)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_hwm(pid: int) -> bool:
    """Reset the peak RSS (VmHWM) of a process to its current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Finished:
    seconds: float
    returncode: int
    max_rss_kib: int
    cpu: float  # user + system seconds of the command (and its children)
    output: str


def run_timed(argv: list[str], *, env: dict[str, str] | None = None,
              stdout: Any = subprocess.DEVNULL, timeout: float = 3600.0) -> Finished:
    """Run a command to completion; its wall time, peak RSS and CPU time from wait4."""
    errors = tempfile.TemporaryFile()
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=errors, env=env)
    try:
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            check_stop()
            if time.monotonic() > deadline:
                raise BenchError(f"{shlex.join(argv)} took more than {timeout:.0f} s")
            time.sleep(0.005)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    errors.seek(0)
    output = errors.read().decode(errors="replace")
    errors.close()
    return Finished(seconds, proc.returncode, usage.ru_maxrss,
                    usage.ru_utime + usage.ru_stime, output)


def check(result: Finished, what: str) -> Finished:
    if result.returncode != 0:
        tail = "\n".join(result.output.strip().splitlines()[-5:])
        raise BenchError(f"{what} failed (exit {result.returncode}): {tail}")
    return result


def version_of(argv: list[str], pattern: str = r"(.+)") -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip()
    match = re.search(pattern, text)
    return match.group(1).strip() if match else (text.splitlines() or [None])[0]


class Cleanup:
    """Undo actions, run last-registered first, each at most once, errors logged."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> Callable[[], None]:
        entry = (what, action)
        self._actions.append(entry)

        def run_now() -> None:
            if entry in self._actions:
                action()  # interrupted: the entry stays, so run_all tries again
                if entry in self._actions:
                    self._actions.remove(entry)

        return run_now

    def run_all(self) -> None:
        while self._actions:
            what, action = self._actions.pop()
            try:
                action()
            except BaseException as exc:  # keep cleaning up whatever happens
                log(f"cleanup: {what}: {exc!r}")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL: the process (started in its own session) and its group."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


# --------------------------------------------------------------------------- moto


def _patch_moto_ranges() -> None:
    """Serve `Range: bytes=A-B` GETs from the stored object at offset A (seek + read)
    instead of reading the whole object and slicing it, as stock moto does."""
    from moto.s3 import models, responses

    local = threading.local()
    stock_value = models.FakeKey.value

    class LazyValue:
        def __init__(self, key: Any) -> None:
            self.key = key
            self.size = key.size

        def __len__(self) -> int:
            return self.size

        def __bool__(self) -> bool:
            return self.size > 0

        def __getitem__(self, item: slice) -> bytes:
            if not isinstance(item, slice):
                raise TypeError("LazyValue supports slices only")
            start, stop, _ = item.indices(self.size)
            with self.key.lock:
                self.key._value_buffer.seek(start)
                return self.key._value_buffer.read(max(0, stop - start))

    def value(self: Any) -> Any:
        if getattr(local, "lazy", False):
            return LazyValue(self)
        return stock_value.fget(self)

    models.FakeKey.value = property(value, stock_value.fset)
    stock_get_object = responses.S3Response.get_object
    stock_key_response = responses.S3Response.key_response

    def get_object(self: Any) -> Any:
        wanted = self.headers.get("range") or ""
        local.lazy = bool(re.fullmatch(r"bytes=\d+-\d*", wanted.strip()))
        try:
            return stock_get_object(self)
        finally:
            local.lazy = False

    def key_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        status, headers, body = stock_key_response(self, *args, **kwargs)
        if isinstance(body, LazyValue):  # a range moto answered with the whole object
            body = body[:]
        return status, headers, body

    responses.S3Response.get_object = get_object
    responses.S3Response.key_response = key_response


def serve_moto(stock: bool) -> int:
    """Child mode: run moto's S3 server on 127.0.0.1, print the port, exit when stdin
    closes (so it never outlives the benchmark, even after a kill -9)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if not stock:
        _patch_moto_ranges()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    try:
        sys.stdin.read()
    finally:
        os._exit(0)


# --------------------------------------------------------------------------- boto3 child


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


# --------------------------------------------------------------------------- measurements


@dataclass
class Sample:
    seconds: float
    rss_kib: int | None  # peak RSS of the client during the phase
    client_cpu: float | None  # CPU seconds of the daemon/client process during the phase
    tool_cpu: float | None  # CPU seconds of cp/cat (None when the client is the command)
    server_cpu: float | None  # CPU seconds of moto during the phase
    parts: int | None = None  # from the ETag (write phase only)


@dataclass
class ToolResult:
    name: str
    label: str
    how: str
    measure_read: bool = True
    unavailable: str | None = None
    failed: str | None = None
    writes: list[Sample] = field(default_factory=list)
    reads: list[Sample] = field(default_factory=list)
    verified: str | None = None


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
        argv = [sys.executable, str(Path(__file__).resolve()), "_moto"]
        if self.args.stock_moto:
            argv.append("--stock-moto")
        self.moto = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.scratch / "moto.log", "wb"), start_new_session=True,
            env={**self.env, "TMPDIR": str(moto_tmp)})
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

    # -- the null server (scripts/nulls3.py) ------------------------------------------

    def start_nulls3(self, delay_ms: int) -> None:
        """One nulls3 process, three listeners on the same buckets: http, https (a
        throwaway certificate) and http with `delay_ms` before every answer."""
        sys.path.insert(0, str(REPO / "scripts"))
        import nulls3

        self.cert, key = nulls3.make_certificate(str(self.scratch))
        argv = [sys.executable, str(REPO / "scripts" / "nulls3.py"), "--tls", self.cert, key,
                "--also", "https", "--also", f"http+{delay_ms}"]
        self.moto = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.scratch / "nulls3.log", "wb"),
                                     start_new_session=True, env=self.env)
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


def delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


# --------------------------------------------------------------------------- tools


class Tool:
    name = ""
    label = ""
    measure_read = True
    # rclone HEADs each object it uploads with the version id S3 returned. moto returns
    # "x-amz-version-id: null" on unversioned buckets (S3 sends no header) and answers a
    # HEAD with versionId=null with 400; on a versioned bucket the id is real.
    versioned = False

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.bucket = ""

    def how(self) -> str:
        raise NotImplementedError

    def prepare(self) -> None:
        """Raise Unavailable if the tool cannot be used here."""
        self.bucket = self.bench.bucket(self.name, self.versioned)

    def write(self) -> Sample:
        raise NotImplementedError

    def read(self, verify: bool) -> tuple[Sample, str | None]:
        raise NotImplementedError


class FuseMount:
    """One FUSE daemon in the foreground, in its own session, and its mount point."""

    def __init__(self, bench: Bench, name: str, argv_for: Callable[[str], list[str]],
                 env: dict[str, str]) -> None:
        self.bench = bench
        self.mountpoint = bench.scratch / f"mnt-{name}"
        self.mountpoint.mkdir(exist_ok=True)
        self.log_path = bench.scratch / f"{name}.log"
        self.argv = argv_for(str(self.mountpoint))
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._undo: Callable[[], None] | None = None

    def __enter__(self) -> FuseMount:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        self._undo = self.bench.cleanup.push(f"unmount {self.mountpoint}", self.stop)
        try:
            self._wait_mounted()
        except BaseException:
            self._undo()
            raise
        return self

    def _wait_mounted(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.mountpoint):
            check_stop()
            if self.proc.poll() is not None:
                raise BenchError(f"{self.argv[0]} exited with {self.proc.returncode} before "
                                 f"mounting: {self.bench.tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.argv[0]} did not mount within {MOUNT_TIMEOUT:.0f} s: "
                                 f"{self.bench.tail(self.log_path)}")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self._undo:
            self._undo()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """Unmount (the daemon then exits); lazily and by signal if that does not work."""
        proc = self.proc
        if proc is not None and not os.path.ismount(self.mountpoint):
            stop_process(proc)  # still starting up (or failed): it will not unmount itself
        if os.path.ismount(self.mountpoint):
            done = subprocess.run([FUSERMOUNT, "-u", str(self.mountpoint)],
                                  capture_output=True, timeout=UNMOUNT_TIMEOUT)
            if done.returncode != 0:
                log(f"unmount of {self.mountpoint} failed ({done.stderr.decode().strip()}); "
                    "unmounting lazily")
                subprocess.run([FUSERMOUNT, "-uz", str(self.mountpoint)],
                               capture_output=True, timeout=UNMOUNT_TIMEOUT)
        if proc is not None:
            try:
                proc.wait(UNMOUNT_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"{self.argv[0]} (pid {proc.pid}) did not exit after unmount: stopping it")
            stop_process(proc)
        if os.path.ismount(self.mountpoint):
            subprocess.run([FUSERMOUNT, "-uz", str(self.mountpoint)], capture_output=True,
                           timeout=UNMOUNT_TIMEOUT)


class FuseTool(Tool):
    """A tool used through a mount: `cp` in, `cat` out, each phase on a fresh mount."""

    def argv(self, mountpoint: str) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return self.bench.env

    def mount(self) -> FuseMount:
        return FuseMount(self.bench, self.name, self.argv, self.env())

    def prepare(self) -> None:
        super().prepare()
        with self.mount() as m:  # a tool that cannot mount here is unavailable
            os.listdir(m.mountpoint)

    def _phase(self, argv_for: Callable[[Path], list[str]], what: str,
               verify: Callable[[Path], str] | None = None) -> tuple[Sample, str | None]:
        bench = self.bench
        with self.mount() as m:
            path = m.mountpoint / KEY
            exact = reset_hwm(m.pid)
            cpu0, srv0 = cpu_seconds(m.pid), bench.server_cpu()
            done = check(run_timed(argv_for(path)), f"{what} ({self.name})")
            cpu1, srv1 = cpu_seconds(m.pid), bench.server_cpu()
            hwm = vm_hwm_kib(m.pid) if exact else None
            verified = verify(path) if verify else None
        return Sample(done.seconds, hwm, delta(cpu1, cpu0), done.cpu, delta(srv1, srv0)), verified

    def write(self) -> Sample:
        sample, _ = self._phase(lambda path: ["cp", str(self.bench.source), str(path)], "cp")
        sample.parts = self.bench.object_parts(self.bucket)
        return sample

    def read(self, verify: bool) -> tuple[Sample, str | None]:
        return self._phase(lambda path: ["cat", str(path)], "cat",
                           self._cmp if verify and not self.bench.null else None)

    def _cmp(self, path: Path) -> str:
        same = subprocess.run(["cmp", "-s", str(self.bench.source), str(path)]).returncode == 0
        return "identical" if same else "DIFFERENT"


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
            [sys.executable, str(Path(__file__).resolve()), self.child, direction,
             bench.endpoint, self.bucket, KEY, str(path)], env=bench.env, stdout=out),
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
                               env=rclone_env(bench)), "rclone copyto")
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


# --------------------------------------------------------------------------- small files

SMALL_SIZE = 4096


@dataclass
class SmallSample:
    seconds: float
    daemon_cpu: float | None
    requests: dict[str, int]
    rss_kib: int | None = None


@dataclass
class SmallResult:
    label: str
    tool: str
    files: int
    copies: list[SmallSample] = field(default_factory=list)
    listings: list[SmallSample] = field(default_factory=list)
    failed: str | None = None
    checked: str = ""


def make_small_tree(bench: Bench, files: int) -> Path:
    tree = bench.data_dir / f"small-{files}"
    if not tree.exists():
        tree.mkdir()
        for i in range(files):
            (tree / f"f{i:05d}").write_bytes(os.urandom(SMALL_SIZE))
    return tree


def requests_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def small_step(tool: FuseTool, argv: list[str], stdout: Any = subprocess.DEVNULL,
               settle: float = 1.0) -> SmallSample:
    """One command on a fresh mount: its wall time, the daemon's CPU and the requests the
    server saw (counted until `settle` s after the command: deferred writes included)."""
    bench = tool.bench
    with tool.mount() as m:
        before = bench.requests()
        exact = reset_hwm(m.pid)
        cpu0 = cpu_seconds(m.pid)
        done = check(run_timed([a.replace("MNT", str(m.mountpoint)) for a in argv],
                               stdout=stdout), f"{argv[0]} ({tool.name})")
        cpu1 = cpu_seconds(m.pid)
        time.sleep(settle)
        counted = requests_delta(bench.requests(), before)
        hwm = vm_hwm_kib(m.pid) if exact else None
    return SmallSample(done.seconds, delta(cpu1, cpu0), counted, hwm)


def run_small(bench: Bench, tools: list[Tool], where: str, files: int, runs: int,
              results: dict[str, SmallResult], label: str) -> None:
    """`cp -r` of `files` small files into a new directory, then a cold `ls -l` of it
    (fresh mount), for every FUSE tool, interleaved."""
    bench.use(where)
    tree = make_small_tree(bench, files)
    expected = sorted((p.name, stat.filemode(p.stat().st_mode)) for p in tree.iterdir())
    mounts = [t for t in tools if isinstance(t, FuseTool)]
    for tool in mounts:
        key = f"{label}/{tool.name}"
        results[key] = SmallResult(label, tool.name, files)
        try:
            tool.prepare()
        except (Unavailable, BenchError, OSError, subprocess.SubprocessError) as exc:
            results[key].failed = f"not available: {exc}"
    for run_index in range(1, runs + 1):
        for tool in mounts:
            check_stop()
            result = results[f"{label}/{tool.name}"]
            if result.failed:
                continue
            name = f"tree-{re.sub(r'[^a-z0-9]+', '-', label)}-{run_index}"
            try:
                result.copies.append(small_step(tool, ["cp", "-r", str(tree), f"MNT/{name}"]))
                listing = tempfile.TemporaryFile()
                result.listings.append(small_step(tool, ["ls", "-l", f"MNT/{name}"],
                                                  stdout=listing, settle=0.2))
                listing.seek(0)
                lines = listing.read().decode().splitlines()[1:]
                listing.close()
                seen = sorted((line.split()[-1], line.split()[0]) for line in lines)
                result.checked = ("names and modes as copied" if seen == expected else
                                  f"DIFFERENT ({len(seen)} entries listed)")
                c, ls = result.copies[-1], result.listings[-1]
                log(f"{label} run {run_index}/{runs} {tool.label}: cp -r {c.seconds:.2f} s "
                    f"({sum(c.requests.values())} requests), ls -l {ls.seconds:.2f} s "
                    f"({sum(ls.requests.values())} requests)")
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                result.failed = f"run {run_index}: {exc}"
                log(f"{label} {tool.label}: FAILED: {exc}")


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def mibps(bench_size: int, samples: list[Sample]) -> float | None:
    seconds = median([s.seconds for s in samples])
    return bench_size / MiB / seconds if seconds else None


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def rss_mib(samples: list[Sample]) -> float | None:
    values = [s.rss_kib for s in samples if s.rss_kib is not None]
    return max(values) / 1024 if values else None


def per_gib(bench_size: int, samples: list[Sample], attr: str) -> float | None:
    values = [getattr(s, attr) for s in samples if getattr(s, attr) is not None]
    return median(values) * (1024 * MiB) / bench_size if values else None


def spread(bench_size: int, samples: list[Sample]) -> str:
    if len(samples) < 2:
        return ""
    rates = sorted(bench_size / MiB / s.seconds for s in samples)
    return f" ({rates[0]:.0f}–{rates[-1]:.0f})"


def machine_facts() -> dict[str, str]:
    facts: dict[str, str] = {"nproc": str(os.cpu_count())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    facts["kernel"] = platform.release()
    facts["os"] = version_of(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]) or "?"
    return facts


def versions() -> dict[str, str]:
    from importlib import metadata

    found: dict[str, str] = {"python": platform.python_version()}
    for dist in ("s3mpfs", "boto3", "botocore", "s3transfer", "moto", "pyfuse3", "trio"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    commit = version_of(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if commit and re.fullmatch(r"[0-9a-f]+", commit):
        dirty = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--",
                                "s3mpfs"], capture_output=True).returncode
        found["s3mpfs"] += f" (git {commit}{', s3mpfs/ modified' if dirty else ''})"
    found["s3fs"] = (version_of(["s3fs", "--version"], r"V(\d[\w.\-]*)")
                     if shutil.which("s3fs") else None) or "not installed"
    found["rclone"] = (version_of(["rclone", "version"], r"rclone (v\S+)")
                       if shutil.which("rclone") else None) or "not installed"
    found["fuse3"] = version_of([FUSERMOUNT, "-V"], r"version:?\s*(\S+)") or "?"
    return found


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "–"
    return f"{value / base:.2f}×"


def write_report(path: Path, bench: Bench, results: list[ToolResult], facts: dict[str, str],
                 found: dict[str, str], command: str, started: datetime.datetime,
                 elapsed: float, loads: tuple[str, str], note: str) -> str:
    size = bench.size
    base = next((r for r in results if r.name == "s3mpfs"), None)
    base_w = mibps(size, base.writes) if base else None
    base_r = mibps(size, base.reads) if base else None
    base_rss = rss_mib(base.writes) if base else None
    runs = bench.args.runs
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench.py` (run it through `scripts/bench.sh`, which installs the "
        "peers); do not edit by hand. Every figure below comes from one run of the script, "
        "in which all tools moved the same file to and from the same local S3 server.",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()} "
        f"(took {elapsed / 60:.1f} min)",
        f"- Command: `{command}`",
        f"- File: {human(size)} of random bytes, read from "
        f"{'tmpfs (/dev/shm)' if str(bench.source).startswith('/dev/shm') else 'a temporary file'}"
        f"; {runs} run(s) per tool, interleaved; figures are medians (range in brackets)",
        *([f"- Note: {bench.args.note}"] if bench.args.note else []),
        f"- Machine: {facts.get('nproc')} CPUs ({facts.get('cpu', '?')}), "
        f"{facts.get('memory', '?')} memory, Linux {facts.get('kernel')}, {facts.get('os')}; "
        f"load average (1 min) {loads[0]} at the start, {loads[1]} at the end",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()),
        "- S3 server: moto on 127.0.0.1, in its own process"
        + ("" if bench.args.stock_moto else
           ", ranged GETs served from the offset asked for (see the note)"),
        "",
        "## Results",
        "",
        "| tool | write MiB/s | read MiB/s | peak RSS write / read (MiB) | parts | "
        "client CPU s/GiB write / read | moto CPU s/GiB write / read |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.unavailable or (r.failed and not r.writes):
            reason = r.unavailable and f"not available: {r.unavailable}" or f"failed: {r.failed}"
            lines.append(f"| {r.label} | {reason} | | | | | |")
            continue
        parts = sorted({s.parts for s in r.writes if s.parts is not None})
        read_cell = (fmt(mibps(size, r.reads)) + spread(size, r.reads) if r.measure_read
                     else "(same as defaults)")
        client_w = per_gib(size, r.writes, "client_cpu")
        tool_w = per_gib(size, r.writes, "tool_cpu")
        client_r = per_gib(size, r.reads, "client_cpu")
        tool_r = per_gib(size, r.reads, "tool_cpu")
        lines.append(
            f"| {r.label} | {fmt(mibps(size, r.writes))}{spread(size, r.writes)} | {read_cell} | "
            f"{fmt(rss_mib(r.writes), '.0f')} / {fmt(rss_mib(r.reads), '.0f')} | "
            f"{', '.join(map(str, parts)) or '–'} | "
            f"{fmt(client_w)}{'' if tool_w is None else f' (+{tool_w:.1f} cp)'} / "
            f"{fmt(client_r)}{'' if tool_r is None else f' (+{tool_r:.1f} cat)'} | "
            f"{fmt(per_gib(size, r.writes, 'server_cpu'))} / "
            f"{fmt(per_gib(size, r.reads, 'server_cpu'))} |")
    failures = [r for r in results if r.failed]
    if failures:
        lines += ["", "Failures:"] + [f"- {r.label}: {r.failed}" for r in failures]
    lines += [
        "",
        "Peak RSS is the FUSE daemon's (VmHWM, reset at the start of each phase; each phase "
        "mounts afresh) or the client process's whole-life peak (boto3 child: interpreter and "
        "imports included; rclone). `cp`/`cat` are not counted. Parts: the part count in the "
        "object's ETag. CPU columns: CPU seconds per GiB moved, of the client (FUSE daemon, "
        "boto3 child or rclone; for mounts the `cp`/`cat` process in brackets, which includes "
        "the kernel's FUSE copying) and of the moto server.",
        "",
        "## Ratios against s3mpfs (defaults), same run",
        "",
        "Above 1× means more than s3mpfs: faster for throughput, more memory for RSS.",
        "",
        "| tool | write | read | peak RSS while writing |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in results:
        if r is base or r.unavailable or not r.writes:
            continue
        read = ratio(mibps(size, r.reads), base_r) if r.measure_read else "–"
        lines.append(f"| {r.label} | {ratio(mibps(size, r.writes), base_w)} | {read} | "
                     f"{ratio(rss_mib(r.writes), base_rss)} |")
    lines += ["", "In words:", ""]
    for r in results:
        if r is base or r.unavailable or not r.writes:
            continue
        words = [f"write {ratio(mibps(size, r.writes), base_w)} s3mpfs"]
        if r.measure_read:
            words.append(f"read {ratio(mibps(size, r.reads), base_r)} s3mpfs")
        lines.append(f"- {r.label}: " + "; ".join(words) + ".")
    verified = [f"{r.label}: {r.verified}" for r in results if r.verified]
    lines += [
        "",
        "## How each tool was run",
        "",
    ] + [f"- {r.label}: {r.how}" for r in results] + [
        "",
        "rclone's buckets are versioned: after each upload rclone HEADs the object with "
        "the version id the server returned, and moto returns `null` on unversioned buckets "
        "(S3 sends no version id there) and then refuses that HEAD with 400. Every version "
        "is deleted after each run.",
        "",
        "Read-back checked with `cmp` against the source after the last run (not timed): "
        + ("; ".join(verified) if verified else "not checked (--no-verify)") + ".",
        "",
        "## What these numbers mean",
        "",
        note,
        "",
    ]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


NOTE = """\
- The S3 server is moto, a Python stand-in, on loopback. It is CPU-bound: it parses every
  request in Python, verifies checksums, writes each part to a temporary file and assembles
  the whole object in memory at CompleteMultipartUpload. The machine has {nproc} cores, shared
  by the client under test, the kernel's FUSE traffic, `cp`/`cat` and the server, so a tool
  that spends less CPU leaves more to moto and looks faster. The CPU columns show where the
  time went.
- Other work on the machine (load average above) adds noise; runs are interleaved so that it
  spreads over all tools, and the range of each figure is shown.
- The numbers compare tools with each other on this machine in this run. They do not predict
  throughput against AWS S3, where network latency and bandwidth, not CPU, usually set the
  pace and more parts in flight help more than here.
- The tools do not do the same work: s3mpfs and boto3 send a CRC32 checksum with every part
  (moto verifies it), s3fs sends none and stages the whole file in a temporary file before
  uploading at close (disk space instead of memory), rclone computes the file's MD5 before
  uploading, and the mounts pay for every byte crossing the kernel twice.
- Ranged GETs: stock moto reads the whole object for every ranged GET and slices it, so read
  figures would measure how many ranges a tool asks for (and s3transfer's ten concurrent
  ranges would hold ten copies of the object in the server). {moto_patch}"""


# --------------------------------------------------------------------------- null server


def measure_big(bench: Bench, tools: list[Tool], args: argparse.Namespace,
                results: dict[str, ToolResult], label: str) -> None:
    """Write then read the big file with every tool, `--runs` times, interleaved."""
    for tool in tools:
        result = results[tool.name] = ToolResult(tool.name, tool.label, tool.how(),
                                                 tool.measure_read)
        try:
            tool.prepare()
        except (Unavailable, BenchError, OSError, subprocess.SubprocessError) as exc:
            result.unavailable = str(exc)
            log(f"{label} {tool.label}: not available: {exc}")
    for run_index in range(1, args.runs + 1):
        for tool in tools:
            check_stop()
            result = results[tool.name]
            if result.unavailable or result.failed:
                continue
            try:
                w = tool.write()
                result.writes.append(w)
                r, _ = tool.read(verify=False)
                result.reads.append(r)
                log(f"{label} run {run_index}/{args.runs} {tool.label}: write "
                    f"{args.size / MiB / w.seconds:.1f} MiB/s ({w.parts} parts), read "
                    f"{args.size / MiB / r.seconds:.1f} MiB/s")
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                result.failed = f"run {run_index}: {exc}"
                log(f"{label} {tool.label}: FAILED: {exc}")
            finally:
                try:
                    bench.delete_object(tool.bucket)
                except Exception as exc:
                    log(f"could not delete s3://{tool.bucket}/{KEY}: {exc!r}")


def small_median(samples: list[SmallSample], attr: str) -> float | None:
    values = [getattr(x, attr) for x in samples if getattr(x, attr) is not None]
    return median(values) if values else None


def small_requests(samples: list[SmallSample]) -> dict[str, float]:
    """Median count per operation over the runs."""
    ops = sorted({op for x in samples for op in x.requests})
    return {op: statistics.median([x.requests.get(op, 0) for x in samples]) for op in ops}


def fmt_requests(counts: dict[str, float], per: int) -> str:
    total = sum(counts.values())
    if not counts:
        return "–"
    parts = ", ".join(f"{op} {n / per:.2f}" for op, n in sorted(counts.items(),
                                                                key=lambda kv: -kv[1]))
    return f"{total / per:.2f} ({parts})"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**not met**")


def make_plots(outdir: Path, size: int, big: dict[str, dict[str, ToolResult]],
               small: dict[str, SmallResult]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots (scripts/bench.sh installs it)")
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    protos = list(big)
    tools = [r for r in next(iter(big.values())).values()] if big else []
    groups = [(p, d) for p in protos for d in ("write", "read")]
    for what, fname, ylabel in (("rate", "throughput.png", "MiB/s (median)"),
                                ("cpu", "cpu_per_gib.png", "client CPU s per GiB (median)")):
        fig, ax = plt.subplots(figsize=(9, 4.2))
        width = 0.8 / max(len(tools), 1)
        for i, tool in enumerate(tools):
            values = []
            for proto, direction in groups:
                r = big[proto].get(tool.name)
                samples = (r.writes if direction == "write" else r.reads) if r else []
                if what == "rate":
                    v = mibps(size, samples) if samples else None
                else:
                    v = per_gib(size, samples, "client_cpu") if samples else None
                values.append(v or 0.0)
            ax.bar([g + i * width for g in range(len(groups))], values, width,
                   label=tool.label)
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
        ax.set_xticklabels([f"{d} {p}" for p, d in groups])
        ax.set_ylabel(ylabel)
        ax.set_title(f"{human(size)} file, null S3 server on loopback")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / fname, dpi=90)
        plt.close(fig)
        made.append(fname)
    labels = sorted({r.label for r in small.values()})
    if labels:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        names = sorted({r.tool for r in small.values()})
        width = 0.8 / max(len(names), 1)
        for ax, (attr, title) in zip(axes, (("copies", "cp -r: ms per file"),
                                            ("listings", "cold ls -l: ms per entry")),
                                     strict=True):
            for i, name in enumerate(names):
                values = []
                for label in labels:
                    r = small.get(f"{label}/{name}")
                    seconds = small_median(getattr(r, attr), "seconds") if r else None
                    values.append(seconds * 1000 / r.files if seconds and r else 0.0)
                ax.bar([g + i * width for g in range(len(labels))], values, width, label=name)
            ax.set_xticks([g + 0.4 - width / 2 for g in range(len(labels))])
            ax.set_xticklabels(labels)
            ax.set_title(title)
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "small_files.png", dpi=90)
        plt.close(fig)
        made.append("small_files.png")
    return made


def write_null_report(path: Path, bench: Bench, big: dict[str, dict[str, ToolResult]],
                      small: dict[str, SmallResult], facts: dict[str, str],
                      found: dict[str, str], command: str, started: datetime.datetime,
                      elapsed: float, loads: tuple[str, str], plots: list[str]) -> str:
    size, runs, args = bench.size, bench.args.runs, bench.args

    def rate(proto: str, tool: str, direction: str) -> float | None:
        r = big.get(proto, {}).get(tool)
        if r is None or r.unavailable:
            return None
        return mibps(size, r.writes if direction == "write" else r.reads)

    def cpu(proto: str, tool: str, direction: str) -> float | None:
        r = big.get(proto, {}).get(tool)
        if r is None or r.unavailable:
            return None
        return per_gib(size, r.writes if direction == "write" else r.reads, "client_cpu")

    def small_seconds(label: str, tool: str, attr: str) -> float | None:
        r = small.get(f"{label}/{tool}")
        return small_median(getattr(r, attr), "seconds") if r and not r.failed else None

    def cmp(a: float | None, b: float | None, better: str) -> tuple[bool | None, str]:
        if a is None or b is None:
            return None, "not measured"
        ok = a < b if better == "lower" else a >= b
        return ok, f"{a:.2f} vs {b:.2f} ({a / b:.2f}×)"

    goals: list[tuple[str, bool | None, str]] = []
    labels = sorted({r.label for r in small.values()})
    for label in labels:
        ok, text = cmp(small_seconds(label, "s3mpfs", "copies"),
                       small_seconds(label, "rclone-mount", "copies"), "lower")
        files = next(r.files for r in small.values() if r.label == label)
        goals.append((f"`cp -r` of {files} files of 4 KiB, {label}: s3mpfs faster than "
                      "rclone mount (s)", ok, text))
        r = small.get(f"{label}/s3mpfs")
        if r and r.copies:
            counts = small_requests(r.copies)
            extra = sum(n for op, n in counts.items() if op != "PutObject")
            puts = counts.get("PutObject", 0)
            ok2 = puts <= files + 1 and extra <= 10  # a fixed few, not one per file
            goals.append((f"at most one S3 request per new file in a directory s3mpfs "
                          f"created ({label})", ok2,
                          f"{puts / files:.3f} PutObject per file (the files and the new "
                          f"directory's marker); {extra:g} other requests in all, not per "
                          "file: the new directory's lookup in its parent (a LIST, and a "
                          "HEAD of each entry of the parent not seen before, here the "
                          "earlier runs' directories) and the mount's start-up sweep"))
        ok, text = cmp(small_seconds(label, "s3mpfs", "listings"),
                       small_seconds(label, "s3fs", "listings"), "lower")
        if ok is not None:
            a, b = small_seconds(label, "s3mpfs", "listings"), small_seconds(label, "s3fs",
                                                                              "listings")
            ok = a is not None and b is not None and a <= b
        goals.append((f"cold `ls -l` of {files} files, {label}: s3mpfs no slower than "
                      "s3fs-fuse (s)", ok, text))
    for proto in big:
        w, sw = rate(proto, "s3mpfs", "write"), rate(proto, "s3fs", "write")
        ok = None if w is None or sw is None else w >= 1.3 * sw
        goals.append((f"1 GiB-class write over {proto}: at least 1.3× s3fs-fuse (MiB/s)", ok,
                      "not measured" if ok is None else
                      f"{w:.0f} vs {sw:.0f} ({w / sw:.2f}×)"))
        c = cpu(proto, "s3mpfs", "write")
        goals.append((f"daemon CPU per GiB written over {proto}: at most 3 s", None if c is None
                      else c <= 3.0, fmt(c, ".2f", " s")))
        ok, text = cmp(rate(proto, "s3mpfs", "read"), rate(proto, "s3fs", "read"), "higher")
        goals.append((f"read over {proto}: at least s3fs-fuse's throughput (MiB/s)", ok, text))
    peaks = [x.rss_kib for r in big.values() for t in r.values() if t.name == "s3mpfs"
             for x in t.writes + t.reads if x.rss_kib]
    peaks += [x.rss_kib for r in small.values() if r.tool == "s3mpfs"
              for x in r.copies + r.listings if x.rss_kib]
    goals.append(("s3mpfs peak memory under 200 MiB in every step (VmHWM)",
                  bool(peaks) and max(peaks) < 200 * 1024 if peaks else None,
                  f"{max(peaks) / 1024:.0f} MiB at most" if peaks else "not measured"))

    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench.py` (run it through `scripts/bench.sh`, which installs the "
        "peers and matplotlib); do not edit by hand. Every figure below comes from one run of "
        "the script, in which all tools worked against the same local S3 endpoint.",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()} "
        f"(took {elapsed / 60:.1f} min)",
        f"- Command: `{command}`",
        f"- Big file: {human(size)} of random bytes in tmpfs (/dev/shm); small files: "
        f"{SMALL_SIZE} bytes each; {runs} run(s) per tool, interleaved; figures are medians "
        "(range in brackets)",
        *([f"- Note: {args.note}"] if args.note else []),
        f"- Machine: {facts.get('nproc')} CPUs ({facts.get('cpu', '?')}), "
        f"{facts.get('memory', '?')} memory, Linux {facts.get('kernel')}, {facts.get('os')}; "
        f"load average (1 min) {loads[0]} at the start, {loads[1]} at the end",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()),
        "- S3 server: `scripts/nulls3.py`, started by the script on 127.0.0.1: it reads every "
        "body and drops it, keeps sizes, ETags and metadata, serves GETs from a fixed "
        "pattern; one process with three listeners on the same buckets: http, https "
        f"(throwaway certificate) and http answering every request {args.delay_ms} ms late "
        "(a distant server's round trip)",
        "",
        "## Goals",
        "",
        "| goal | measured (s3mpfs vs peer) | |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {g} | {t} | {verdict(ok)} |" for g, ok, t in goals]
    lines += ["", "Distance to what the machine allows: s3mpfs against the awscrt S3 client "
              "(C, no FUSE), same run:", ""]
    for proto in big:
        for direction in ("write", "read"):
            a, b = rate(proto, "s3mpfs", direction), rate(proto, "awscrt", direction)
            lines.append(f"- {direction} over {proto}: {fmt(a, '.0f')} vs {fmt(b, '.0f')} "
                         f"MiB/s ({ratio(a, b)} of awscrt)")
    for proto, results in big.items():
        lines += [
            "",
            f"## {human(size)} file over {proto}",
            "",
            "| tool | write MiB/s | read MiB/s | client CPU s/GiB write / read | "
            "peak RSS write / read (MiB) | parts | server CPU s/GiB write / read |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in results.values():
            if r.unavailable or (r.failed and not r.writes):
                lines.append(f"| {r.label} | {r.unavailable or r.failed} | | | | | |")
                continue
            parts = sorted({x.parts for x in r.writes if x.parts is not None})
            tool_w = per_gib(size, r.writes, "tool_cpu")
            tool_r = per_gib(size, r.reads, "tool_cpu")
            lines.append(
                f"| {r.label} | {fmt(mibps(size, r.writes))}{spread(size, r.writes)} | "
                f"{fmt(mibps(size, r.reads))}{spread(size, r.reads)} | "
                f"{fmt(per_gib(size, r.writes, 'client_cpu'))}"
                f"{'' if tool_w is None else f' (+{tool_w:.1f} cp)'} / "
                f"{fmt(per_gib(size, r.reads, 'client_cpu'))}"
                f"{'' if tool_r is None else f' (+{tool_r:.1f} cat)'} | "
                f"{fmt(rss_mib(r.writes), '.0f')} / {fmt(rss_mib(r.reads), '.0f')} | "
                f"{', '.join(map(str, parts)) or '–'} | "
                f"{fmt(per_gib(size, r.writes, 'server_cpu'))} / "
                f"{fmt(per_gib(size, r.reads, 'server_cpu'))} |")
        if results.get("failed"):
            pass
    for label in labels:
        rows = [r for r in small.values() if r.label == label]
        files = rows[0].files
        lines += [
            "",
            f"## Small files, {label}: `cp -r` of {files} files into a new directory, then "
            "`ls -l` of it on a fresh mount",
            "",
            "| tool | cp -r s | ms per file | daemon CPU ms per file | requests per file | "
            "ls -l s | ms per entry | daemon CPU ms per entry | requests per entry | "
            "listing |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |",
        ]
        for r in rows:
            if r.failed and not r.copies:
                lines.append(f"| {r.tool} | {r.failed} | | | | | | | | |")
                continue
            c, ls_ = small_median(r.copies, "seconds"), small_median(r.listings, "seconds")
            cc, lc = small_median(r.copies, "daemon_cpu"), small_median(r.listings,
                                                                         "daemon_cpu")
            lines.append(
                f"| {r.tool} | {fmt(c, '.2f')} | {fmt(c and c * 1000 / files, '.2f')} | "
                f"{fmt(cc and cc * 1000 / files, '.2f')} | "
                f"{fmt_requests(small_requests(r.copies), files)} | {fmt(ls_, '.2f')} | "
                f"{fmt(ls_ and ls_ * 1000 / files, '.3f')} | "
                f"{fmt(lc and lc * 1000 / files, '.3f')} | "
                f"{fmt_requests(small_requests(r.listings), files)} | {r.checked or '–'} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}](bench/{p})" for p in plots]
    how = {r.label: r.how.replace("; bucket versioned (see below)", "")  # moto only
           for results in big.values() for r in results.values()}
    lines += [
        "",
        "## How each tool was run",
        "",
    ] + [f"- {label}: {text}" for label, text in how.items()] + [
        "- Small files: `cp -r SRC MNT/treeN` on a fresh mount, then `ls -l MNT/treeN` on "
        "another fresh mount (cold caches); the wall time is the command's; daemon CPU is "
        "the FUSE daemon's during the command; requests are those the server saw from the "
        "command's start to 1 s after it ended (0.2 s for `ls`), by S3 operation, divided "
        "by the number of files; the listing column checks names and modes against the "
        "source.",
        "- https: s3mpfs, boto3 and the awscrt client trust the throwaway certificate "
        "(AWS_CA_BUNDLE); rclone through RCLONE_CA_CERT; s3fs-fuse with "
        "`no_check_certificate` (it has no option for a CA file).",
        "",
        "## What these numbers mean",
        "",
        "- The server does almost nothing, so the figures measure the clients: their CPU per "
        "byte and per request, and how much of each request's wait they overlap. The machine "
        f"has {facts.get('nproc')} cores shared by the client, the kernel's FUSE traffic, "
        "`cp`/`cat` and the server; a tool that spends less CPU is faster here.",
        "- Other work on the machine (load average above) adds noise; runs are interleaved so "
        "that it spreads over all tools, and the range of each figure is shown.",
        "- Read-back is not compared with the source: the server keeps no bytes. The moto "
        "run (`--server moto`) compares every read with `cmp`.",
        "",
    ]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


NULL_TOOLS = "s3mpfs,s3fs,rclone-mount,awscrt"


def run_null(args: argparse.Namespace, cleanup: Cleanup) -> int:
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    load_start = f"{os.getloadavg()[0]:.2f}"
    bench = Bench(args, cleanup)
    bench.make_source()
    bench.start_nulls3(args.delay_ms)
    tools = all_tools(bench)
    wanted = (args.tools or NULL_TOOLS).split(",")
    unknown = set(wanted) - {t.name for t in tools}
    if unknown:
        raise SystemExit(f"unknown tool(s): {', '.join(sorted(unknown))}")
    tools = [t for t in tools if t.name in wanted]
    small: dict[str, SmallResult] = {}
    big: dict[str, dict[str, ToolResult]] = {}
    if args.small_files:
        run_small(bench, tools, "http", args.small_files, args.runs, small, "loopback")
    if args.small_files_delay:
        run_small(bench, tools, "delay", args.small_files_delay, args.runs, small,
                  f"{args.delay_ms} ms round trip")
    for proto in args.protocols.split(","):
        if proto:
            bench.use(proto)
            big[proto] = {}
            measure_big(bench, tools, args, big[proto], proto)
    facts = machine_facts()
    command = shlex.join([os.path.relpath(sys.executable, REPO)
                          if sys.executable.startswith(str(REPO)) else sys.executable,
                          os.path.relpath(Path(__file__).resolve(), REPO), *sys.argv[1:]])
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    plots = make_plots(out.parent / "bench", bench.size, big, small)
    text = write_null_report(out, bench, big, small, facts, versions(), command, started,
                             time.monotonic() - t0, (load_start, f"{os.getloadavg()[0]:.2f}"),
                             plots)
    print(text)
    log(f"wrote {out}")
    failed = [r for results in big.values() for r in results.values() if r.failed]
    return 1 if failed or any(r.failed and r.copies for r in small.values()) else 0


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace, cleanup: Cleanup) -> int:
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    load_start = f"{os.getloadavg()[0]:.2f}"
    bench = Bench(args, cleanup)
    bench.make_source()
    bench.start_moto()

    tools = all_tools(bench)
    if args.tools:
        wanted = set(args.tools.split(","))
        unknown = wanted - {t.name for t in tools}
        if unknown:
            raise SystemExit(f"unknown tool(s): {', '.join(sorted(unknown))}; known: "
                             + ", ".join(t.name for t in tools))
        tools = [t for t in tools if t.name in wanted]
    results: dict[str, ToolResult] = {}
    for tool in tools:
        check_stop()
        result = results[tool.name] = ToolResult(tool.name, tool.label, tool.how(),
                                                 tool.measure_read)
        try:
            tool.prepare()
        except Unavailable as exc:
            result.unavailable = str(exc)
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            result.unavailable = f"{type(exc).__name__}: {exc}"
        if result.unavailable:
            log(f"{tool.label}: not available: {result.unavailable}")

    for run_index in range(1, args.runs + 1):
        for tool in tools:
            check_stop()
            result = results[tool.name]
            if result.unavailable or result.failed:
                continue
            last = run_index == args.runs
            try:
                w = tool.write()
                result.writes.append(w)
                msg = (f"run {run_index}/{args.runs} {tool.label}: write "
                       f"{args.size / MiB / w.seconds:.1f} MiB/s, {w.parts} parts, "
                       f"peak RSS {fmt(w.rss_kib and w.rss_kib / 1024, '.0f')} MiB")
                if tool.measure_read or (last and args.verify):
                    r, verdict = tool.read(verify=last and args.verify)
                    if tool.measure_read:
                        result.reads.append(r)
                        msg += (f"; read {args.size / MiB / r.seconds:.1f} MiB/s, peak RSS "
                                f"{fmt(r.rss_kib and r.rss_kib / 1024, '.0f')} MiB")
                    if verdict:
                        result.verified = verdict
                        msg += f"; read-back {verdict}"
                log(msg)
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                result.failed = f"run {run_index}: {exc}"
                log(f"{tool.label}: FAILED: {exc}")
            finally:
                try:
                    bench.delete_object(tool.bucket)
                except Exception as exc:  # the next write creates the object afresh anyway
                    log(f"could not delete s3://{tool.bucket}/{KEY}: {exc!r}")

    facts = machine_facts()
    moto_patch = ("This run used stock moto (--stock-moto): read figures are distorted."
                  if args.stock_moto else
                  "The server started by the script therefore serves a plain `Range: "
                  "bytes=A-B` GET by reading only that range from the stored object (a "
                  "small patch in the server process, `_patch_moto_ranges`), as S3 does.")
    note = NOTE.format(nproc=facts.get("nproc"), moto_patch=moto_patch)
    command = shlex.join([os.path.relpath(sys.executable, REPO)
                          if sys.executable.startswith(str(REPO)) else sys.executable,
                          os.path.relpath(Path(__file__).resolve(), REPO), *sys.argv[1:]])
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    text = write_report(out, bench, list(results.values()), facts, versions(), command,
                        started, time.monotonic() - t0, (load_start, f"{os.getloadavg()[0]:.2f}"),
                        note)
    print(text)
    log(f"wrote {out}")
    return 1 if any(r.failed for r in results.values()) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_moto"]:
        return serve_moto(stock="--stock-moto" in argv)
    if argv[:1] == ["_boto3"]:
        return boto3_transfer(*argv[1:6])
    if argv[:1] == ["_crt"]:
        return crt_transfer(*argv[1:6])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"),
                        help="size of the test file (default 1G; K/M/G suffixes)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool (default 3)")
    parser.add_argument("--out", default="docs/BENCHMARKS.md",
                        help="report to write (default docs/BENCHMARKS.md)")
    parser.add_argument("--tools", help="comma-separated subset: s3mpfs, s3mpfs-c8, "
                        "s3mpfs-p16, boto3, s3fs, rclone, rclone-mount")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the untimed cmp of the read-back after the last run")
    parser.add_argument("--note", help="a sentence to print in the report's header, e.g. "
                        "why this size was chosen")
    parser.add_argument("--stock-moto", action="store_true",
                        help="do not patch moto's ranged GETs (read figures get distorted)")
    parser.add_argument("--server", choices=("null", "moto"), default="null",
                        help="null (default): scripts/nulls3.py, http and https, small-file "
                        "steps too; moto: the earlier big-file-only comparison on moto")
    parser.add_argument("--protocols", default="http,https",
                        help="null server: big-file phases to run (default http,https)")
    parser.add_argument("--small-files", type=int, default=1000,
                        help="null server: files in the loopback cp -r / ls -l steps (0: skip)")
    parser.add_argument("--small-files-delay", type=int, default=200,
                        help="null server: files in the delayed steps (0: skip)")
    parser.add_argument("--delay-ms", type=int, default=20,
                        help="null server: the delayed listener's round trip (default 20)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if os.geteuid() != 0:
        log("warning: not root; peak RSS needs /proc/PID/clear_refs, mounts need /dev/fuse")

    cleanup = Cleanup()

    def terminate(signum: int, frame: object) -> None:
        STOP.set()
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT even if ignored
        signal.signal(signum, terminate)
    try:
        return run_null(args, cleanup) if args.server == "null" else run(args, cleanup)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        cleanup.run_all()


if __name__ == "__main__":
    sys.exit(main())
