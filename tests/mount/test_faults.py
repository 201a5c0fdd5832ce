"""Reliability: real mounts talking to the test backend (moto, Ceph RGW) through the
fault-injecting proxy (tests/s3proxy.py). Transient faults are retried and leave a correct
object; permanent ones fail the write, abort the upload and keep the previous version; a
killed mount leaves nothing that the next mount's sweep does not remove; `s3mpfs cleanup`
and the sweep never touch another tool's uploads; SIGTERM aborts files still being
written; every `checksum=` sends the header it names.

A mount goes through the proxy by giving a second `endpoint_url=` option: the `mount`
fixture puts its own first, and the configuration keeps the last value given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from helpers import (
    STORE_DEADLINE,
    is_mounted,
    list_keys,
    no_pending_uploads,
    random_bytes,
    random_file,
    sha256_file,
    sha256_object,
    wait_for,
)
from s3proxy import (
    ERROR_200,
    ERROR_200_AFTER,
    FAULT_500,
    FAULT_503,
    HOLD,
    RESET_AFTER,
    RESET_BEFORE,
    STALL,
    TRUNCATE,
    S3Proxy,
    _s3_error,
    _Upstream,
)

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
REGISTRY = ".s3mpfs/uploads/"
FUSERMOUNT = "fusermount3"


# --------------------------------------------------------------------------- helpers


def via(proxy: S3Proxy) -> str:
    """The mount option that sends a mount's requests through `proxy`."""
    return f"endpoint_url={proxy.url}"


def cp(src: Path, dst: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cp", str(src), str(dst)], capture_output=True, text=True,
                          timeout=timeout)


# Parts go through boto3 over http, through awscrt's S3 client over https
# (s3/bulk.py); S3MPFS_HTTP=crt takes the second route over the tests' http.
ROUTES = pytest.mark.parametrize("route", ["boto3", "crt"])


def route_env(route: str) -> dict[str, str] | None:
    return {"S3MPFS_HTTP": "crt"} if route == "crt" else None


def route_options(route: str) -> list[str]:
    """Mount options that let every part in flight take `route`: awscrt holds copies of
    at most memory_limit / 4 bytes of parts at once, and sends more through boto3."""
    return ["memory_limit=256M"] if route == "crt" else []


def assert_parts_route(proxy: S3Proxy, route: str) -> None:
    """Every UploadPart went the way `route` names (by the client's user agent)."""
    agents = {r.headers.get("user-agent", "").partition("/")[0]
              for r in proxy.of_kind("UploadPart")}
    expected = "CRTS3NativeClient" if route == "crt" else "Boto3"
    assert agents == {expected}, agents


@ROUTES
def test_over_http_every_body_is_signed(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path, route: str
) -> None:
    """Over plain http SigV4 signs each body's SHA256 (x-amz-content-sha256), on every
    route a body takes: small objects (awscrt's HTTP client), parts (boto3, or awscrt's
    S3 client with S3MPFS_HTTP=crt). The server checks the hash against the body."""
    big = random_file(tmp_path / "big.bin", 12 * MiB + 1, seed=6)
    small = random_file(tmp_path / "small.bin", 70_001, seed=7)
    m = mount(bucket, via(proxy), "part_size=5M", *route_options(route),
              env=route_env(route))
    assert cp(big, m.path / "big.bin").returncode == 0, m.log_text()
    assert cp(small, m.path / "small.bin").returncode == 0, m.log_text()
    assert_object(s3, bucket, "big.bin", big, parts=3)
    assert_object(s3, bucket, "small.bin", small, parts=None)
    bodies = [r for r in proxy.of_kind("UploadPart") + proxy.of_kind("PutObject")
              if r.key in ("big.bin", "small.bin")]
    assert {r.kind for r in bodies} == {"UploadPart", "PutObject"}
    for r in bodies:
        assert re.fullmatch("[0-9a-f]{64}", r.headers.get("x-amz-content-sha256", "")), \
            (r.kind, r.key, r.headers)
    assert_parts_route(proxy, route)


@ROUTES
def test_every_request_is_dated_when_it_is_sent(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path, route: str
) -> None:
    """SigV4 signs a date (x-amz-date) and S3 refuses a signature more than 15 minutes
    off (RequestTimeTooSkewed, 403): a mount dating its requests when it started fails
    every request a quarter of an hour later. Requests of every kind and route (HEAD,
    LIST, small PUT and GET through awscrt's HTTP client; parts and read blocks through
    boto3 or awscrt's S3 client), made seconds after the mount started, must carry the
    second they were sent."""
    big = random_file(tmp_path / "big.bin", 12 * MiB + 1, seed=8)
    m = mount(bucket, via(proxy), "part_size=5M", *route_options(route),
              env=route_env(route))
    started = time.time()
    wait_for(lambda: time.time() > started + 3, message="3 s past the mount's start")
    proxy.clear()
    before = int(time.time())  # (a config dated in the second before is fine)
    assert cp(big, m.path / "big.bin").returncode == 0, m.log_text()
    (m.path / "small.txt").write_bytes(b"small" * 100)
    assert not (m.path / "absent").exists()
    assert sha256_file(m.path / "big.bin") == sha256_file(big)
    assert (m.path / "small.txt").read_bytes() == b"small" * 100
    kinds = {r.kind for r in proxy.requests}
    assert {"UploadPart", "PutObject", "GetObject"} <= kinds, kinds
    for r in proxy.requests:  # dated after the operations began, and not after arrival
        sent = datetime.strptime(r.headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ")
        assert before - 1 <= sent.replace(tzinfo=UTC).timestamp() <= r.wall, \
            (r.kind, r.key, r.headers.get("x-amz-date"), r.headers.get("user-agent"))
    assert_parts_route(proxy, route)


def etag_parts(etag: str) -> int | None:
    """'"<md5>-13"' -> 13; None for a single-part ETag."""
    match = re.fullmatch(r'"?[0-9a-f]{32}-(\d+)"?', etag)
    return int(match.group(1)) if match else None


def registry_entries(s3: Any, bucket: str) -> list[str]:
    return list_keys(s3, bucket, REGISTRY)


def settled(s3: Any, bucket: str) -> bool:
    """Nothing pending and nothing registered."""
    return not no_pending_uploads(s3, bucket) and not registry_entries(s3, bucket)


def assert_settled(s3: Any, bucket: str) -> None:
    assert no_pending_uploads(s3, bucket) == []
    assert registry_entries(s3, bucket) == []


def assert_object(s3: Any, bucket: str, key: str, src: Path, parts: int | None) -> None:
    """The object holds exactly `src`'s bytes, assembled from `parts` parts."""
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == src.stat().st_size
    assert sha256_object(s3, bucket, key) == sha256_file(src)
    assert etag_parts(head["ETag"]) == parts, head["ETag"]


def put_old_version(s3: Any, bucket: str, key: str) -> str:
    """A previous version of `key`, written directly; returns its sha256."""
    data = random_bytes(MiB + 17, seed=4242)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return hashlib.sha256(data).hexdigest()


def log_lines(m: Any, *words: str) -> list[str]:
    """The mount log's lines containing every one of `words`."""
    return [line for line in m.log_text().splitlines() if all(w in line for w in words)]


def fusermount(flag: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FUSERMOUNT, flag, str(path)], capture_output=True, text=True,
                          timeout=30, check=False)


def kill_mount(m: Any) -> None:
    """kill -9 the mount process, then detach its dead mount point."""
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(timeout=10)
    if is_mounted(m.path):
        fusermount("-uz", m.path)


# --------------------------------------------------------------- 1. transient faults


TRANSIENT_KINDS = ("UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload",
                   "PutObject")
TRANSIENT_ACTIONS = (FAULT_500, FAULT_503, RESET_BEFORE)
# With this seed the 5%-of-requests rules fire on the 5th, 9th and 15th matching request,
# one of each action: enough to prove retries, while a 100 MiB cp sends about 16 of them.
TRANSIENT_SEED = 137


@ROUTES
def test_100mib_cp_survives_transient_faults(
    s3_server: str, s3: Any, bucket: str, mount: Any, tmp_path: Path, route: str
) -> None:
    size = 100 * MiB + 3
    src = random_file(tmp_path / "src.bin", size, seed=1)
    with S3Proxy(s3_server, seed=TRANSIENT_SEED) as proxy:
        for kind in TRANSIENT_KINDS:
            for action in TRANSIENT_ACTIONS:  # together: 5% of each kind's requests
                proxy.add_fault(kind, action, share=0.05 / len(TRANSIENT_ACTIONS))
        m = mount(bucket, via(proxy), *route_options(route), env=route_env(route))
        result = cp(src, m.path / "big.bin")
        assert result.returncode == 0, result.stderr
        m.unmount()
        faults = proxy.faults()
    assert_parts_route(proxy, route)

    assert_object(s3, bucket, "big.bin", src, parts=13)
    assert_settled(s3, bucket)
    fired = {r.fault for r in faults}
    assert len(faults) >= 3 and fired == set(TRANSIENT_ACTIONS), \
        [(r.kind, r.part_number, r.fault) for r in faults]
    assert {r.kind for r in faults} <= set(TRANSIENT_KINDS)


# --------------------------------------------------------------- 2. ambiguous faults


class GoneAfterCommitProxy(S3Proxy):
    """Answers a CompleteMultipartUpload of an upload it has already seen completed with
    404 NoSuchUpload, as S3 may once the upload is gone (moto instead treats the retry as
    idempotent and answers 200 again)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.completed: set[str] = set()

    def _forward(self, h: Any, body: bytes) -> _Upstream:
        query = parse_qs(urlsplit(h.path).query, keep_blank_values=True)
        upload_id = query.get("uploadId", [""])[-1]
        if h.command != "POST" or not upload_id:
            return super()._forward(h, body)
        if upload_id in self.completed:
            return _Upstream(404, "Not Found", [("Content-Type", "application/xml")],
                             _s3_error("NoSuchUpload", "The specified upload does not exist."))
        answer = super()._forward(h, body)
        if answer.status == 200 and b"<Error>" not in answer.body:
            self.completed.add(upload_id)
        return answer


AMBIGUOUS = [
    # The server stored the part, the client saw a reset and sends it again.
    pytest.param("UploadPart", RESET_AFTER, {"nth": 2}, S3Proxy, id="part-reset-after"),
    pytest.param("UploadPart-crt", RESET_AFTER, {"nth": 2}, S3Proxy,
                 id="part-reset-after-crt"),
    # S3 committed the upload; the retry answers 200 again (moto) or NoSuchUpload (S3).
    pytest.param("CompleteMultipartUpload", ERROR_200_AFTER, {}, S3Proxy,
                 id="complete-error200-after-commit-idempotent"),
    pytest.param("CompleteMultipartUpload", ERROR_200_AFTER, {}, GoneAfterCommitProxy,
                 id="complete-error200-after-commit-nosuchupload"),
    pytest.param("CompleteMultipartUpload", RESET_AFTER, {}, S3Proxy,
                 id="complete-reset-after-commit-idempotent"),
    pytest.param("CompleteMultipartUpload", RESET_AFTER, {}, GoneAfterCommitProxy,
                 id="complete-reset-after-commit-nosuchupload"),
    # 200 with an error inside, nothing committed: the retry completes it.
    pytest.param("CompleteMultipartUpload", ERROR_200, {}, S3Proxy,
                 id="complete-error200-not-committed"),
]


@pytest.mark.parametrize(("kind", "action", "trigger", "proxy_class"), AMBIGUOUS)
def test_ambiguous_fault_is_retried_and_the_object_is_right(
    s3_server: str, s3: Any, bucket: str, mount: Any, tmp_path: Path,
    kind: str, action: str, trigger: dict[str, int], proxy_class: type[S3Proxy],
) -> None:
    kind, _, route = kind.partition("-")
    src = random_file(tmp_path / "src.bin", 12 * MiB + 1, seed=2)
    with proxy_class(s3_server) as proxy:
        rule = proxy.add_fault(kind, action, times=1, **trigger)
        m = mount(bucket, via(proxy), "part_size=5M", *route_options(route),
                  env=route_env(route))
        result = cp(src, m.path / "f.bin")
        assert result.returncode == 0, result.stderr + m.log_text()
        m.unmount()
    assert rule.fired == 1

    assert_object(s3, bucket, "f.bin", src, parts=3)
    assert_settled(s3, bucket)
    faulted = [r for r in proxy.of_kind(kind) if r.fault]
    assert len(faulted) == 1
    forwarded = action != ERROR_200
    assert faulted[0].upstream_status == (200 if forwarded else None)
    later = [r for r in proxy.of_kind(kind) if r.seq > faulted[0].seq]
    if kind == "UploadPart":
        assert faulted[0].part_number in [r.part_number for r in later]  # sent again
        assert_parts_route(proxy, route or "boto3")
    elif proxy_class is GoneAfterCommitProxy:
        # The retry found the upload gone; s3mpfs checked that the object is its own.
        assert [r.status for r in later] == [404]
        assert any(r.seq > later[0].seq for r in proxy.of_kind("HeadObject"))
    else:
        assert [r.status for r in later] == [200]


@ROUTES
def test_stalled_part_times_out_and_is_retried(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path, route: str
) -> None:
    src = random_file(tmp_path / "src.bin", 12 * MiB + 1, seed=3)
    rule = proxy.add_fault("UploadPart", STALL, nth=2, times=1, stall_seconds=30)
    # awscrt's deadline for a part is connect_timeout + read_timeout + 1 s per MiB
    m = mount(bucket, via(proxy), "part_size=5M", "read_timeout=2", "connect_timeout=1",
              *route_options(route), env=route_env(route))

    result = cp(src, m.path / "f.bin", timeout=60)
    assert result.returncode == 0, result.stderr + m.log_text()
    assert rule.fired == 1
    stalled = next(r for r in proxy.of_kind("UploadPart") if r.fault == STALL)
    assert stalled.part_number in [r.part_number for r in proxy.of_kind("UploadPart")
                                   if r.seq > stalled.seq]
    assert_object(s3, bucket, "f.bin", src, parts=3)
    assert_settled(s3, bucket)
    assert_parts_route(proxy, route)


def test_truncated_read_fails_cleanly_or_retries(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    size = 6 * MiB + 5
    src = random_file(tmp_path / "src.bin", size, seed=4)
    s3.upload_file(str(src), bucket, "r.bin")  # not written through the mount: no page cache
    rule = proxy.add_fault("GetObject", TRUNCATE, nth=2, times=1)
    m = mount(bucket, via(proxy), "read_ahead=1M")

    result = subprocess.run(["cmp", str(src), str(m.path / "r.bin")], capture_output=True,
                            text=True, timeout=60)
    assert rule.fired == 1
    # Either the read was retried (and the bytes are right) or it failed with EIO; cmp
    # exiting 1 ("differ") would mean wrong bytes were returned.
    assert result.returncode == 0 or (
        result.returncode == 2 and "Input/output error" in result.stderr), (
        result.returncode, result.stdout, result.stderr)
    # Either way the mount goes on reading correctly.
    assert subprocess.run(["cmp", str(src), str(m.path / "r.bin")],
                          capture_output=True, timeout=60).returncode == 0


# --------------------------------------------------------------- 3. permanent failure


def fail_part_4(proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path,
                route: str = "boto3") -> tuple[Any, subprocess.CompletedProcess[str], str]:
    """cp of a 22 MiB file over an old version while part 4 always fails (retries=2);
    returns the mount, cp's result and the old version's sha256."""
    old = put_old_version(s3, bucket, "doc.bin")
    src = random_file(tmp_path / "src.bin", 22 * MiB, seed=5)
    proxy.add_fault("UploadPart", FAULT_500, part_number=4)
    m = mount(bucket, via(proxy), "part_size=5M", "retries=2", *route_options(route),
              env=route_env(route))
    return m, cp(src, m.path / "doc.bin"), old


@ROUTES
def test_permanent_part_failure_aborts_and_keeps_the_old_version(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path, route: str
) -> None:
    m, result, old = fail_part_4(proxy, s3, bucket, mount, tmp_path, route)
    assert result.returncode != 0
    assert "Input/output error" in result.stderr, result.stderr
    assert sha256_object(s3, bucket, "doc.bin") == old
    wait_for(lambda: settled(s3, bucket), timeout=STORE_DEADLINE,
             message="upload aborted, unregistered")
    # retries=2 means two attempts in all.
    assert [r.status for r in proxy.of_kind("UploadPart") if r.part_number == 4] == [500, 500]
    lines = wait_for(lambda: log_lines(m, "doc.bin", "aborted"), timeout=STORE_DEADLINE,
                     message="the abort logged")
    assert len(lines) == 1, lines
    # The mount goes on: the key still reads as the old version through it.
    assert hashlib.sha256((m.path / "doc.bin").read_bytes()).hexdigest() == old
    assert_parts_route(proxy, route)


def test_permanent_failure_log_line_says_why(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    m, result, _ = fail_part_4(proxy, s3, bucket, mount, tmp_path)
    assert result.returncode != 0
    [line] = wait_for(lambda: log_lines(m, "doc.bin", "aborted"), timeout=STORE_DEADLINE,
                      message="the abort logged")
    assert "InternalError" in line and "ExceptionGroup" not in line, line


# --------------------------------------------------------------- 4. kill -9 matrix


def is_old_or_new(s3: Any, bucket: str, key: str, old: str, new: str) -> str:
    """'old' or 'new': which complete version the key holds (fails on anything else)."""
    digest = sha256_object(s3, bucket, key)
    assert digest in (old, new), "the key holds neither the old nor the new version"
    return "old" if digest == old else "new"


# (request to hold, its part number, what becomes of the held request after the kill, the
# version the key holds then, what the dead mount left: pending uploads, registry entries)
CRASHES = [
    # The request never reaches S3 (stopping the proxy drops it).
    pytest.param("CreateMultipartUpload", None, "drop", "old", (0, 0), id="create-held"),
    # Part 3 reaches S3 after the process died.
    pytest.param("UploadPart", 3, "release", "old", (1, 1), id="part3-held"),
    pytest.param("CompleteMultipartUpload", None, "drop", "old", (1, 1),
                 id="complete-held-dropped"),
    # S3 commits the upload after the process died.
    pytest.param("CompleteMultipartUpload", None, "release", "new", (0, 1),
                 id="complete-held-committed"),
    pytest.param(None, None, None, "new", (0, 0), id="after-complete"),
]


@pytest.mark.parametrize(("held_kind", "part_number", "then", "version", "left"), CRASHES)
def test_kill_9_leaves_old_or_new_and_the_next_mount_sweeps(
    s3_server: str, s3: Any, bucket: str, mount: Any, tmp_path: Path,
    held_kind: str | None, part_number: int | None, then: str | None, version: str,
    left: tuple[int, int],
) -> None:
    old = put_old_version(s3, bucket, "f.bin")
    src = random_file(tmp_path / "src.bin", 16 * MiB + 1, seed=6)
    new = sha256_file(src)

    with S3Proxy(s3_server) as proxy:
        rule = proxy.add_fault(held_kind, HOLD, part_number=part_number,
                               key_contains="f.bin") if held_kind else None
        m = mount(bucket, via(proxy), "part_size=5M")
        writer = subprocess.Popen(["cp", str(src), str(m.path / "f.bin")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if rule is None:
                assert writer.wait(timeout=60) == 0
            else:
                assert rule.held.wait(timeout=30), f"no {held_kind} was sent"
            kill_mount(m)
            if rule is None:
                pass
            elif then == "release":
                proxy.release(rule)
                proxy.wait_for(lambda rs: any(
                    r.fault == HOLD and r.upstream_status is not None for r in rs),
                    timeout=STORE_DEADLINE)
            else:
                proxy.stop()
            writer.wait(timeout=30)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        if rule is not None:
            assert writer.returncode != 0  # cp saw the mount go away

    assert is_old_or_new(s3, bucket, "f.bin", old, new) == version
    assert (len(no_pending_uploads(s3, bucket)), len(registry_entries(s3, bucket))) == left

    # Mount again, without faults: the sweep runs in the background right after mounting
    # (it starts with ListMultipartUploads and then aborts what is abandoned).
    with S3Proxy(s3_server) as recorder:
        m2 = mount(bucket, via(recorder), "part_size=5M")
        recorder.wait_for(lambda rs: any(r.kind == "ListMultipartUploads" and r.status
                                         for r in rs), timeout=15)
        wait_for(lambda: not no_pending_uploads(s3, bucket), timeout=STORE_DEADLINE,
                 message="no pending upload after the sweep")
        wait_for(lambda: not registry_entries(s3, bucket), timeout=STORE_DEADLINE,
                 message="an empty registry after the sweep")
        assert_settled(s3, bucket)
        expected = new if version == "new" else old
        assert hashlib.sha256((m2.path / "f.bin").read_bytes()).hexdigest() == expected
        m2.unmount()


# --------------------------------------------------------------- 5. other tools' uploads


def dead_pid() -> int:
    """A process id that no process has right now."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def abandoned_uploads(s3: Any, bucket: str) -> tuple[str, str]:
    """Another tool's pending upload (no registry entry) of "other/tool.bin", and a dead
    s3mpfs's (registered on this host by a process that is gone, two days ago) of
    "dead/s3mpfs.bin". Returns their upload ids (other, dead)."""
    other = s3.create_multipart_upload(Bucket=bucket, Key="other/tool.bin")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="other/tool.bin", UploadId=other, PartNumber=1,
                   Body=b"x" * 1000)
    dead = s3.create_multipart_upload(Bucket=bucket, Key="dead/s3mpfs.bin")["UploadId"]
    entry = {
        "key": "dead/s3mpfs.bin", "upload_id": dead, "host": socket.gethostname(),
        "boot_id": boot_id(), "pid": dead_pid(), "mount_id": "x",
        "pid_ns": os.readlink("/proc/self/ns/pid"),  # this PID namespace: its PID is gone
        "started": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
    }
    s3.put_object(Bucket=bucket, Key=f"{REGISTRY}{quote(dead, safe='')}.json",
                  Body=json.dumps(entry).encode())
    return other, dead


def pending_ids(s3: Any, bucket: str) -> set[str]:
    return {u["UploadId"] for u in no_pending_uploads(s3, bucket)}


def test_cleanup_aborts_only_s3mpfs_uploads_unless_all(
    s3_backend: Any, s3_server: str, s3: Any, bucket: str, run_cli: Any
) -> None:
    other, dead = abandoned_uploads(s3, bucket)
    endpoint = f"endpoint_url={s3_server}"

    listed = run_cli("uploads", bucket, "-o", endpoint)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    [other_line] = [line for line in lines if "other/tool.bin" in line]
    [dead_line] = [line for line in lines if "dead/s3mpfs.bin" in line]
    assert "other tool" in other_line
    assert "s3mpfs" in dead_line and "mount x" in dead_line and "(dead)" in dead_line
    assert pending_ids(s3, bucket) == {other, dead}  # listing aborts nothing

    dry = run_cli("cleanup", bucket, "--dry-run", "-o", endpoint)
    assert dry.returncode == 0, dry.stderr
    assert "would abort dead/s3mpfs.bin" in dry.stdout
    # what it keeps, and why
    assert re.search(r"would keep other/tool\.bin \(another tool's upload, .*--all", dry.stdout)
    assert pending_ids(s3, bucket) == {other, dead}

    cleaned = run_cli("cleanup", bucket, "-o", endpoint)
    assert cleaned.returncode == 0, cleaned.stderr
    assert "dead/s3mpfs.bin" in cleaned.stdout and "other/tool.bin" not in cleaned.stdout
    assert pending_ids(s3, bucket) == {other}
    assert registry_entries(s3, bucket) == []

    if s3_backend.name != "moto":  # moto dates every pending upload 2010-11-10
        young = run_cli("cleanup", bucket, "--all", "--older-than", "1h", "-o", endpoint)
        assert young.returncode == 0, young.stderr
        assert "other/tool.bin" not in young.stdout
        assert pending_ids(s3, bucket) == {other}  # seconds old: not older than 1h

    everything = run_cli("cleanup", bucket, "--all", "--older-than", "0", "-o", endpoint)
    assert everything.returncode == 0, everything.stderr
    assert "other/tool.bin" in everything.stdout
    assert pending_ids(s3, bucket) == set()


def test_mount_sweep_leaves_other_tools_uploads_alone(
    s3_server: str, s3: Any, bucket: str, mount: Any
) -> None:
    other, dead = abandoned_uploads(s3, bucket)
    m = mount(bucket)
    wait_for(lambda: log_lines(m, "aborted 1 abandoned"), timeout=15,
             message="the sweep's summary line")
    assert log_lines(m, "dead/s3mpfs.bin", "aborted")
    assert pending_ids(s3, bucket) == {other}
    assert registry_entries(s3, bucket) == []


# --------------------------------------------------------------- 6. SIGTERM, busy unmount

# Writes the first FIRST bytes of a seeded stream to argv[1], says "ready", and on "close"
# from stdin writes the rest (argv[2] bytes in all) and closes the file.
WRITER = """
import random, sys
path, size, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(7).randbytes(size)
f = open(path, "wb")
f.write(data[:first])
f.flush()
print("ready", flush=True)
if sys.stdin.readline().strip() == "close":
    f.write(data[first:])
    f.close()
    print("closed", flush=True)
"""
WRITER_SIZE = 13 * MiB + 5
WRITER_FIRST = 11 * MiB  # with 5 MiB parts: two parts cut and sent, 1 MiB buffered


def writer_data() -> bytes:
    return random.Random(7).randbytes(WRITER_SIZE)


def start_writer(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(WRITER_SIZE), str(WRITER_FIRST)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def parts_sent(s3: Any, bucket: str, key: str) -> int:
    uploads = [u for u in no_pending_uploads(s3, bucket) if u["Key"] == key]
    if len(uploads) != 1:
        return 0
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"])
    return len(listed.get("Parts", []))


@pytest.fixture
def writers() -> Iterator[list[subprocess.Popen[str]]]:
    """Writer processes a test starts; killed at teardown if still running."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_sigterm_aborts_a_file_being_written(
    s3: Any, bucket: str, mount: Any, writers: list[subprocess.Popen[str]]
) -> None:
    old = put_old_version(s3, bucket, "w.bin")
    m = mount(bucket, "part_size=5M")
    writers.append(writer := start_writer(m.path / "w.bin"))
    wait_for(lambda: parts_sent(s3, bucket, "w.bin") >= 2, timeout=20,
             message="two parts uploaded")
    assert len(registry_entries(s3, bucket)) == 1

    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=20) == 0
    assert log_lines(m, "w.bin", "still open for writing", "abort"), m.log_text()
    assert log_lines(m, "w.bin", "multipart upload aborted"), m.log_text()
    assert sha256_object(s3, bucket, "w.bin") == old
    assert_settled(s3, bucket)
    assert not is_mounted(m.path)
    writer.kill()


def test_unmount_while_writing_is_refused_then_the_file_completes(
    s3: Any, bucket: str, mount: Any, writers: list[subprocess.Popen[str]]
) -> None:
    old = put_old_version(s3, bucket, "w.bin")
    m = mount(bucket, "part_size=5M")
    writers.append(writer := start_writer(m.path / "w.bin"))
    wait_for(lambda: parts_sent(s3, bucket, "w.bin") >= 2, timeout=20,
             message="two parts uploaded")

    refused = fusermount("-u", m.path)
    assert refused.returncode != 0
    assert "busy" in refused.stderr.lower(), refused.stderr
    assert m.is_mounted() and m.proc.poll() is None
    # The mount keeps working meanwhile, and the old version is what S3 serves.
    (m.path / "other.txt").write_bytes(b"still here\n")
    assert (m.path / "other.txt").read_bytes() == b"still here\n"
    assert sha256_object(s3, bucket, "w.bin") == old

    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write("close\n")
    writer.stdin.flush()
    assert writer.stdout.readline().strip() == "closed"
    assert writer.wait(timeout=30) == 0
    data = writer_data()
    assert sha256_object(s3, bucket, "w.bin") == hashlib.sha256(data).hexdigest()
    assert etag_parts(s3.head_object(Bucket=bucket, Key="w.bin")["ETag"]) == 3
    assert_settled(s3, bucket)

    unmounted = fusermount("-u", m.path)
    assert unmounted.returncode == 0, unmounted.stderr
    assert m.proc.wait(timeout=20) == 0


# --------------------------------------------------------------- 7. checksums

try:
    from awscrt import checksums as crt_checksums  # what botocore needs for CRC32C
except ImportError:
    crt_checksums = None


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


CHECKSUM_HEADERS: dict[str, tuple[str | None, Any]] = {
    # checksum= value: (the header each UploadPart must carry, its value for a part)
    "crc32": ("x-amz-checksum-crc32", lambda d: b64(zlib.crc32(d).to_bytes(4, "big"))),
    "crc32c": ("x-amz-checksum-crc32c",
               lambda d: b64(crt_checksums.crc32c(d).to_bytes(4, "big"))),
    "sha1": ("x-amz-checksum-sha1", lambda d: b64(hashlib.sha1(d).digest())),
    "sha256": ("x-amz-checksum-sha256", lambda d: b64(hashlib.sha256(d).digest())),
    "md5": ("content-md5", lambda d: b64(hashlib.md5(d).digest())),
    "off": (None, None),
}


def checksum_headers(headers: dict[str, str]) -> set[str]:
    """The integrity headers of a request (x-amz-checksum-* and Content-MD5)."""
    return {name for name in headers
            if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-algorithm"
            or name == "content-md5"}


@pytest.mark.parametrize("checksum", [
    "crc32",
    "crc32c", "sha1", "sha256", "md5", "off",
])
def test_every_part_carries_the_configured_checksum(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path, checksum: str,
    s3_backend: Any
) -> None:
    size = 12 * MiB + 7
    src = random_file(tmp_path / "src.bin", size, seed=8)
    data = src.read_bytes()
    if checksum not in ("md5", "off") and not s3_backend.flexible_checksums:
        # a server that ignores the algorithm named explicitly: the mount is refused
        m = mount(bucket, via(proxy), f"checksum={checksum}", expect_failure=True)
        assert m.returncode != 0 and "checksum=md5" in m.log_text().strip().splitlines()[-1]
        return
    m = mount(bucket, via(proxy), "part_size=5M", f"checksum={checksum}")
    result = cp(src, m.path / "c.bin")
    assert result.returncode == 0, result.stderr + m.log_text()
    assert_object(s3, bucket, "c.bin", src, parts=3)
    assert_settled(s3, bucket)

    header, value = CHECKSUM_HEADERS[checksum]
    parts = [r for r in proxy.of_kind("UploadPart") if r.upstream_status == 200]
    assert sorted(r.part_number for r in parts) == [1, 2, 3]
    for r in parts:
        assert r.part_number is not None
        assert checksum_headers(r.headers) == ({header} if header else set()), r.headers
        if header:
            start = (r.part_number - 1) * 5 * MiB
            assert r.headers[header] == value(data[start:start + 5 * MiB]), r.part_number
