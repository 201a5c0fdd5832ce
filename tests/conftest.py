"""Shared fixtures: a local S3 (moto's server in-process, or Ceph RGW), buckets, and real
FUSE mounts.

All fixtures here are synchronous (pytest-trio runs in trio_mode; trio fixtures belong in
the test modules and are test-scoped).

Every test that uses S3 runs once per selected backend (test ids end in [moto] / [rgw]):
`--backend moto|rgw|both`, else $S3MPFS_TEST_BACKEND, else both. `moto` is moto's server in
this process; `rgw` is a throwaway single-node Ceph cluster with radosgw started once per
session by scripts/rgw.sh (which installs Debian's ceph packages when missing). Tests that
rely on moto internals are marked `@pytest.mark.moto_only("why")`: skipped, with that reason,
on the other backends.

    s3_backend                session: the S3Backend in use (name, endpoint, keys, KMS key)
    s3_server                 session: its endpoint URL ("http://127.0.0.1:PORT")
    s3                        session: boto3 S3 client for that endpoint
    bucket                    a fresh, uniquely named, empty bucket (emptied at teardown)
    proxy                     a recording, fault-injecting S3Proxy in front of s3_server
    mount(spec, *opts, ...)   factory: `python -m s3mpfs spec MNT -f -o endpoint_url=...,...`
    run_cli(*args, ...)       `python -m s3mpfs *args` to completion (CompletedProcess)
    hosts, pidns_mount        two mounts of one bucket; a mount in its own PID namespace
                              (tests/twohosts.py)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from helpers import REPO_ROOT, WaitTimeout, is_mounted, s3mpfs_env, wait_for
from s3proxy import S3Proxy
from twohosts import hosts, pidns_mount  # noqa: F401  (fixtures: two mounts, one bucket)

REGION = "us-east-1"
MOUNT_TIMEOUT = 20.0
UNMOUNT_TIMEOUT = 60.0
FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"

# Variables that could point the code under test at a real account or another endpoint.
_AWS_VARS_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CA_BUNDLE",
)


# --------------------------------------------------------------------------- reporting


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]):
    """Keep each phase's report on the item (item.rep_setup / rep_call / rep_teardown), so
    fixtures can tell at teardown whether the test failed."""
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


def _test_failed(node: pytest.Item) -> bool:
    return any(
        getattr(getattr(node, "rep_" + when, None), "failed", False) for when in ("setup", "call")
    )


# --------------------------------------------------------------------------- environment


@pytest.fixture(scope="session", autouse=True)
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Dummy credentials and region for the whole session, in os.environ so that mount
    subprocesses inherit them; empty AWS config files so ~/.aws cannot interfere."""
    aws_dir = tmp_path_factory.mktemp("aws")
    config_file = aws_dir / "config"
    credentials_file = aws_dir / "credentials"
    config_file.write_text("")
    credentials_file.write_text("")
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(config_file),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file),
        "AWS_EC2_METADATA_DISABLED": "true",
        # where background mounts log on a host without /dev/log (not /var/log/s3mpfs)
        "XDG_STATE_HOME": str(tmp_path_factory.mktemp("state")),
        # every mount packs its idle nodes at once (fs/inodes.py): what a million
        # entries make it do, in every test
        "S3MPFS_PACK_AFTER": "1",
    }
    saved = {k: os.environ.get(k) for k in (*values, *_AWS_VARS_TO_CLEAR)}
    for k in _AWS_VARS_TO_CLEAR:
        os.environ.pop(k, None)
    os.environ.update(values)
    try:
        yield values
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- backends

BACKENDS = ("moto", "rgw")
RGW_SCRIPT = REPO_ROOT / "scripts" / "rgw.sh"
RGW_START_TIMEOUT = 300.0  # the first start on a fresh machine installs the ceph packages


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=(*BACKENDS, "both"),
        default=None,
        help="S3 server(s) for the tests that use S3: moto, rgw (Ceph RGW started by "
        "scripts/rgw.sh) or both (default: $S3MPFS_TEST_BACKEND, else both)",
    )


def selected_backends(config: pytest.Config) -> list[str]:
    value = config.getoption("--backend") or os.environ.get("S3MPFS_TEST_BACKEND") or "both"
    if value == "both":
        return list(BACKENDS)
    if value not in BACKENDS:
        raise pytest.UsageError(
            f"S3MPFS_TEST_BACKEND={value!r}: expected one of {', '.join((*BACKENDS, 'both'))}"
        )
    return [value]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test whose fixtures reach `s3_backend` runs once per selected backend; tests
    marked moto_only are skipped, with the marker's reason, on the others."""
    if "s3_backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("moto_only")
    params = []
    for backend in selected_backends(metafunc.config):
        if marker is not None and backend != "moto":
            why = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            skip = pytest.mark.skip(reason=f"moto only: {why}")
            params.append(pytest.param(backend, marks=skip, id=backend))
        else:
            params.append(pytest.param(backend, id=backend))
    metafunc.parametrize("s3_backend", params, indirect=True, scope="session")


@dataclass(frozen=True)
class S3Backend:
    """One S3 server for the tests: what boto3 and a mount need to reach it."""

    name: str  # "moto" or "rgw"
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    kms_key_id: str | None = None  # a KMS key that exists up front (RGW); moto makes its own
    sse_s3: bool = True  # honours x-amz-server-side-encryption: AES256 (Ceph 16.2 ignores it)
    flexible_checksums: bool = True  # echoes x-amz-checksum-* (Ceph 16.2 ignores them)
    dsse_kms: bool = True  # accepts aws:kms:dsse (Ceph 16.2 answers 400 InvalidArgument)
    sse_c_enforced: bool = False  # an SSE-C object cannot be read without its key (moto: can)
    state_dir: str | None = None  # RGW: scripts/rgw.sh's directory (config, logs)


@pytest.fixture(scope="session")
def s3_backend(
    request: pytest.FixtureRequest, aws_env: dict[str, str]
) -> Iterator[S3Backend]:
    """The S3 server of this test's backend (parametrized: [moto] / [rgw]), started once per
    session. While it is in use, its keys are in os.environ (and `aws_env`), so that boto3
    clients and mount subprocesses use them."""
    name = getattr(request, "param", None) or selected_backends(request.config)[0]
    start = {"moto": _start_moto, "rgw": _start_rgw}[name]
    with start() as backend:
        saved = {k: aws_env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        keys = {
            "AWS_ACCESS_KEY_ID": backend.access_key,
            "AWS_SECRET_ACCESS_KEY": backend.secret_key,
        }
        os.environ.update(keys)
        aws_env.update(keys)
        # boto3's default session caches the credentials it first found: forget them, so that
        # `boto3.client(...)` anywhere in the tests picks up this backend's keys.
        boto3.DEFAULT_SESSION = None
        try:
            _wait_until_it_answers(backend)
            yield backend
        finally:
            os.environ.update(saved)
            aws_env.update(saved)
            boto3.DEFAULT_SESSION = None


@contextlib.contextmanager
def _start_moto() -> Iterator[S3Backend]:
    """moto's S3 server in a thread of this process on 127.0.0.1 and a free port."""
    from moto.server import ThreadedMotoServer

    # werkzeug would log every request at INFO into pytest's log capture.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket is bound
    host, port = server.get_host_and_port()
    try:
        yield S3Backend("moto", f"http://{host}:{port}", "testing", "testing")
    finally:
        server.stop()


@contextlib.contextmanager
def _start_rgw() -> Iterator[S3Backend]:
    """A throwaway Ceph cluster with radosgw (scripts/rgw.sh) in a fresh temporary directory,
    stopped (daemons killed by PID, directory removed) at the end of the session."""
    state = tempfile.mkdtemp(prefix="s3mpfs-rgw-")
    env = {**os.environ, "S3MPFS_RGW_DIR": state}
    try:
        result = subprocess.run(
            ["bash", str(RGW_SCRIPT), "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=RGW_START_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"scripts/rgw.sh start failed ({result.returncode}):\n{result.stderr}"
                f"{_rgw_logs(state)}",
                pytrace=False,
            )
        values = dict(re.findall(r"^export (\w+)=(.*)$", result.stdout, re.MULTILINE))
        yield S3Backend(
            "rgw",
            values["S3MPFS_RGW_ENDPOINT"],
            values["S3MPFS_RGW_ACCESS_KEY"],
            values["S3MPFS_RGW_SECRET_KEY"],
            values.get("S3MPFS_RGW_KMS_KEY_ID"),
            sse_s3=False,
            flexible_checksums=False,
            dsse_kms=False,
            sse_c_enforced=True,
            state_dir=state,
        )
    finally:
        subprocess.run(
            ["bash", str(RGW_SCRIPT), "stop"],
            env=env,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(state, ignore_errors=True)


def _rgw_logs(state: str, tail: int = 30) -> str:
    out = []
    for log in sorted(Path(state, "log").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-tail:]
        out.append(f"\n--- {log.name} (last {tail} lines):\n" + "\n".join(lines))
    return "".join(out)


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3_server(s3_backend: S3Backend) -> str:
    """The endpoint URL of this test's S3 backend ("http://127.0.0.1:PORT")."""
    return s3_backend.endpoint


def _wait_until_it_answers(backend: S3Backend, timeout: float = 20) -> None:
    """Poll ListBuckets with the backend's keys; fail with the last error (and RGW's logs)."""
    probe = _client(backend.endpoint)
    errors: list[Exception] = []

    def answers() -> bool:
        try:
            probe.list_buckets()
        except Exception as exc:
            errors[:] = [exc]
            return False
        return True

    try:
        wait_for(answers, timeout=timeout, message=f"{backend.name} at {backend.endpoint}")
    except WaitTimeout as exc:
        logs = _rgw_logs(backend.state_dir) if backend.state_dir else ""
        pytest.fail(f"{exc}; last error: {errors[-1]!r}{logs}", pytrace=False)


def _client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}),
    )


@pytest.fixture(scope="session")
def s3(s3_server: str) -> Any:
    """A boto3 S3 client for this test's backend (region us-east-1, SigV4, its keys)."""
    return _client(s3_server)


def _bucket_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:10]}" if slug else f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh bucket named after the test; yields its name. Teardown aborts its pending
    uploads and deletes its objects and the bucket, best effort (both backends keep data in
    memory)."""
    name = _bucket_name(request.node.name)
    s3.create_bucket(Bucket=name)
    yield name
    _delete_bucket(s3, name)


def _delete_bucket(s3: Any, name: str) -> None:
    try:
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for up in page.get("Uploads", []):
                s3.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                s3.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
        s3.delete_bucket(Bucket=name)
    except Exception as exc:  # best effort: never fail a test on cleanup
        print(f"[bucket teardown] could not delete {name}: {exc!r}", file=sys.stderr)


@pytest.fixture
def proxy(s3_server: str) -> Iterator[S3Proxy]:
    """A recording, fault-injecting proxy (tests/s3proxy.py, seed 0) in front of the backend.
    Request it before `mount` in a test's arguments, so that the mount is torn down before
    the proxy stops. Faults still set at the end are cleared (anything held is released)."""
    with S3Proxy(s3_server, seed=0) as p:
        try:
            yield p
        finally:
            p.clear_faults()


# --------------------------------------------------------------------------- mounts


class Mount:
    """One `python -m s3mpfs ... -f` process and its mount point."""

    def __init__(
        self,
        path: Path,
        proc: subprocess.Popen[bytes],
        log_path: Path,
        bucket_spec: str,
        argv: list[str],
    ) -> None:
        self.path = path
        self.proc = proc
        self.log_path = log_path
        self.bucket_spec = bucket_spec
        self.argv = argv
        self.unclean: str | None = None  # why unmount() had to use force, if it did

    def __repr__(self) -> str:
        return f"<Mount {self.bucket_spec} at {self.path} pid={self.proc.pid}>"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def is_mounted(self) -> bool:
        return is_mounted(self.path)

    def unmount(self, timeout: float = UNMOUNT_TIMEOUT) -> int | None:
        """`fusermount3 -u`, then wait up to `timeout` s for the process to exit (it drains
        pending uploads first). Falls back to a lazy unmount and SIGTERM/SIGKILL, recording
        why in `self.unclean`. Idempotent. Returns the process's exit code."""
        deadline = time.monotonic() + timeout
        if self.is_mounted():
            result = None
            busy_deadline = time.monotonic() + min(10.0, timeout)
            while True:
                result = _fusermount("-u", self.path)
                if result.returncode == 0 or not self.is_mounted():
                    break
                if time.monotonic() > busy_deadline:
                    break
                time.sleep(0.1)  # typically EBUSY: something still has a file open
            if self.is_mounted():
                self.unclean = f"fusermount -u failed: {result.stderr.strip() if result else ''}"
                _fusermount("-uz", self.path)
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.unclean = self.unclean or f"process still running {timeout:g}s after unmount"
                if self.is_mounted():
                    _fusermount("-uz", self.path)
                self._signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    self.proc.wait(timeout=5)
        return self.proc.returncode

    def _signal(self, sig: int) -> None:
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass


def _fusermount(flag: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FUSERMOUNT, flag, str(path)], capture_output=True, text=True, timeout=30, check=False
    )


def _stat_within(path: Path, timeout: float) -> bool:
    """os.path.ismount(path), given up on after `timeout` s (a stuck FUSE server would
    otherwise hang the test run)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(os.path.ismount, path).result(timeout=max(0.1, timeout))
    except concurrent.futures.TimeoutError:
        return False
    finally:
        pool.shutdown(wait=False)


MountFactory = Callable[..., Mount]


def extra_mount_options() -> list[str]:
    """Options from $S3MPFS_TEST_MOUNT_OPTIONS (comma-separated) for every test mount, before
    the test's own (which win), e.g. `checksum=md5` to try a server without flexible
    checksums."""
    return [o for o in os.environ.get("S3MPFS_TEST_MOUNT_OPTIONS", "").split(",") if o.strip()]


@pytest.fixture
def mount(
    s3_server: str, bucket: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[MountFactory]:
    """Factory: mount(bucket_spec, *options, expect_failure=False, env=None,
    timeout=20.0) -> Mount.

    Runs `python -m s3mpfs BUCKET_SPEC MNT -f -o endpoint_url=...,region=us-east-1,*options`
    with output to a log file in tmp_path and waits until MNT is mounted and answering. If the
    process exits first, the test fails with its log. With expect_failure=True it instead
    waits for the process to exit and fails if it mounted; check .returncode / .log_text().
    Every mount is unmounted at teardown, and the logs are printed if the test failed.

    Depends on `bucket` so that mounts are torn down before the bucket is emptied.
    """
    mounts: list[Mount] = []

    def factory(
        bucket_spec: str,
        *options: str,
        expect_failure: bool = False,
        env: dict[str, str] | None = None,
        timeout: float = MOUNT_TIMEOUT,
    ) -> Mount:
        n = len(mounts)
        mountpoint = tmp_path / f"mnt{n}"
        mountpoint.mkdir()
        log_path = tmp_path / f"mount{n}.log"
        opts = ",".join([f"endpoint_url={s3_server}", f"region={REGION}", *extra_mount_options(),
                         *options])
        argv = [sys.executable, "-m", "s3mpfs", bucket_spec, str(mountpoint), "-f", "-o", opts]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=s3mpfs_env(env),
                cwd=tmp_path,
                start_new_session=True,
            )
        m = Mount(mountpoint, proc, log_path, bucket_spec, argv)
        mounts.append(m)

        deadline = time.monotonic() + timeout
        while True:
            if m.is_mounted():
                break
            if proc.poll() is not None:
                if expect_failure:
                    return m
                pytest.fail(
                    f"s3mpfs exited with {proc.returncode} before mounting {bucket_spec!r}\n"
                    f"argv: {argv}\n--- log:\n{m.log_text()}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{mountpoint} not mounted within {timeout:g}s\n"
                    f"argv: {argv}\n--- log:\n{m.log_text()}",
                    pytrace=False,
                )
            time.sleep(0.05)

        if expect_failure:
            pytest.fail(
                f"s3mpfs mounted {bucket_spec!r} but failure was expected\n--- log:\n"
                f"{m.log_text()}",
                pytrace=False,
            )
        if not _stat_within(mountpoint, deadline - time.monotonic()):
            pytest.fail(
                f"{mountpoint} is mounted but does not answer within {timeout:g}s\n"
                f"--- log:\n{m.log_text()}",
                pytrace=False,
            )
        return m

    yield factory

    for m in reversed(mounts):
        try:
            m.unmount()
        except Exception as exc:
            m.unclean = m.unclean or f"unmount raised {exc!r}"
    if _test_failed(request.node) or any(m.unclean for m in mounts):
        for m in mounts:
            print(f"\n===== s3mpfs log: {m!r} exit={m.returncode}", file=sys.stderr)
            if m.unclean:
                print(f"===== unclean unmount: {m.unclean}", file=sys.stderr)
            print(m.log_text(), file=sys.stderr)


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_cli(*args, timeout=30, env=None, input=None) -> CompletedProcess[str]:
    `python -m s3mpfs *args` to completion, output captured as text, same environment as
    mounts (no endpoint is added: pass `-o endpoint_url=...` from `s3_server` if needed)."""

    def run(
        *args: str,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "s3mpfs", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=s3mpfs_env(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )

    return run
