"""The command line: every bad input ends `s3mpfs` quickly, non-zero, with one line on
stderr naming the problem, and nothing mounted; the SSE-C key never appears in any output;
the background mode returns once mounted."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import is_mounted, s3mpfs_env, wait_for

pytestmark = pytest.mark.mount

# A recognisable SSE-C key: if these bytes leak into any output, the tests will see it.
SECRET_KEY = b"SSE-C-SECRET-KEY-do-not-print-!!"
assert len(SECRET_KEY) == 32
SECRET_B64 = base64.b64encode(SECRET_KEY).decode()
CONFIG_ERROR_SECONDS = 10.0
FUSERMOUNT = shutil.which("fusermount3") or "fusermount3"


def secrets_of(key: bytes) -> list[str]:
    """The forms in which a key could leak into text output."""
    return [
        base64.b64encode(key).decode(),
        key.hex(),
        key.decode("latin-1"),
        repr(key)[2:-1],
    ]


@pytest.fixture
def mnt(tmp_path: Path) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    return path


@pytest.fixture
def cli(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], mnt: Path
) -> Iterator[Callable[..., tuple[subprocess.CompletedProcess[str], float]]]:
    """cli(*args) -> (CompletedProcess, seconds); at teardown, checks nothing got mounted
    (and unmounts it if something did, so one bug cannot break the next tests)."""

    def run(*args: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
        start = time.monotonic()
        result = run_cli(*args, timeout=timeout)
        return result, time.monotonic() - start

    yield run
    if is_mounted(mnt):
        subprocess.run([FUSERMOUNT, "-uz", str(mnt)], check=False, timeout=30)
        pytest.fail(f"{mnt} was left mounted")


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *words: str, code: int | None = None
) -> str:
    """Non-zero exit, nothing on stdout, exactly one line on stderr containing `words`."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    if code is not None:
        assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert re.match(r"s3mpfs( [a-z]+)?: ", line), line  # `s3mpfs status: ...` too
    for word in words:
        assert word.lower() in line.lower(), (word, line)
    assert "Traceback" not in result.stderr
    return line


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on: bound, never listened on, and held
    for the test (released at once, any other process's listener could take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def write_key_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


# --------------------------------------------------------------------- foreground errors


def test_missing_bucket(cli: Any, mnt: Path, s3_server: str) -> None:
    result, seconds = cli("no-such-bucket-here", str(mnt), "-f", "-o", f"endpoint_url={s3_server}")
    assert_one_line_error(result, "no-such-bucket-here", "does not exist")
    assert seconds < CONFIG_ERROR_SECONDS
    assert not is_mounted(mnt)


def test_unreachable_endpoint(cli: Any, mnt: Path, closed_port: int) -> None:
    port = closed_port
    result, seconds = cli(
        "some-bucket", str(mnt), "-f", "-o", f"endpoint_url=http://127.0.0.1:{port}", timeout=60
    )
    assert_one_line_error(result, f"127.0.0.1:{port}", "endpoint_url")
    assert seconds < 15, f"took {seconds:.1f}s to notice the endpoint is unreachable"
    assert not is_mounted(mnt)


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("no_such_option=1", ["no_such_option", "unknown option"]),
        ("no_such_flag", ["no_such_flag", "unknown option"]),
        ("sse=foo", ["sse", "foo", "AES256"]),
        ("part_size=1M", ["part_size", "5M"]),
        ("part_size=6G", ["part_size", "5G"]),
        ("part_size=lots", ["part_size", "lots"]),
        ("storage_class=bogus", ["storage_class", "bogus", "STANDARD_IA"]),
        ("upload_concurrency=0", ["upload_concurrency", "0"]),
        ("sse_kms_key_id=alias/backup", ["sse_kms_key_id", "sse=aws:kms"]),
        ("sse=AES256,sse_kms_key_id=alias/backup", ["sse_kms_key_id", "sse=aws:kms"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_option(cli: Any, mnt: Path, s3_server: str, option: str, words: list[str]) -> None:
    result, seconds = cli("some-bucket", str(mnt), "-f", "-o", f"endpoint_url={s3_server},{option}")
    assert_one_line_error(result, *words)
    assert seconds < CONFIG_ERROR_SECONDS
    assert not is_mounted(mnt)


def test_unknown_command_line_flag(cli: Any, mnt: Path) -> None:
    result, _ = cli("some-bucket", str(mnt), "--no-such-flag")
    assert_one_line_error(result, "--no-such-flag", code=2)


def test_missing_mount_point(cli: Any, tmp_path: Path, s3_server: str) -> None:
    missing = tmp_path / "not" / "there"
    result, seconds = cli("some-bucket", str(missing), "-f", "-o", f"endpoint_url={s3_server}")
    assert_one_line_error(result, str(missing), "mount point")
    assert seconds < CONFIG_ERROR_SECONDS
    assert not missing.exists()


# --------------------------------------------------------------------- SSE-C key files


def test_sse_c_key_of_the_wrong_length(cli: Any, mnt: Path, tmp_path: Path) -> None:
    short = SECRET_KEY[:31]
    key_file = write_key_file(tmp_path / "short.key", base64.b64encode(short))
    result, seconds = cli("some-bucket", str(mnt), "-f", "-o", f"sse_c_key_file={key_file}")
    line = assert_one_line_error(result, str(key_file), "32")
    assert seconds < CONFIG_ERROR_SECONDS
    for secret in secrets_of(short):
        assert secret not in line
    # Raw bytes of the wrong length too.
    raw = write_key_file(tmp_path / "raw.key", SECRET_KEY + b"!")
    result, _ = cli("some-bucket", str(mnt), "-f", "-o", f"sse_c_key_file={raw}")
    line = assert_one_line_error(result, str(raw), "32")
    for secret in secrets_of(SECRET_KEY):
        assert secret not in line


def test_sse_c_key_file_readable_by_others(cli: Any, mnt: Path, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "open.key", SECRET_B64.encode(), mode=0o644)
    result, seconds = cli("some-bucket", str(mnt), "-f", "-o", f"sse_c_key_file={key_file}")
    line = assert_one_line_error(result, str(key_file), "chmod 600")
    assert seconds < CONFIG_ERROR_SECONDS
    assert SECRET_B64 not in line


def test_sse_c_key_file_missing(cli: Any, mnt: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    result, _ = cli("some-bucket", str(mnt), "-f", "-o", f"sse_c_key_file={missing}")
    assert_one_line_error(result, str(missing))


def test_sse_c_key_never_appears_in_any_output(
    cli: Any, mnt: Path, tmp_path: Path, s3_server: str
) -> None:
    key_file = write_key_file(tmp_path / "good.key", SECRET_B64.encode() + b"\n")
    raw_file = write_key_file(tmp_path / "raw.key", SECRET_KEY)
    outputs = []
    cases = [
        (key_file, ""),  # missing bucket: fails at the bucket check, after the key was read
        (key_file, ",debug"),
        (key_file, ",sse=AES256"),  # a conflict found after the key was read
        (raw_file, ""),
        (raw_file, ",part_size=1M"),
    ]
    for key, extra in cases:
        result, _ = cli(
            "no-such-bucket-sse-c",
            str(mnt),
            "-f",
            "-o",
            f"endpoint_url={s3_server},sse_c_key_file={key}{extra}",
        )
        if extra == ",debug":  # debug logs go to stderr in the foreground
            assert result.returncode != 0 and "does not exist" in result.stderr
        else:
            assert_one_line_error(result)
        outputs.append(result.stdout + result.stderr)
    text = "\n".join(outputs)
    for secret in secrets_of(SECRET_KEY):
        assert secret not in text


# --------------------------------------------------------------------- background mode


def _s3mpfs_processes(mountpoint: Path) -> list[int]:
    """Pids of processes whose command line names `mountpoint` and s3mpfs."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(mountpoint) in argv and any(b"s3mpfs" in a for a in argv):
            pids.append(int(entry))
    return pids


@pytest.fixture
def background_cleanup(mnt: Path) -> Iterator[None]:
    """Whatever a background-mode test leaves behind is unmounted and stopped."""
    yield
    if is_mounted(mnt):
        subprocess.run([FUSERMOUNT, "-u", str(mnt)], check=False, timeout=30)
        if is_mounted(mnt):
            subprocess.run([FUSERMOUNT, "-uz", str(mnt)], check=False, timeout=30)
    for pid in _s3mpfs_processes(mnt):
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


def test_background_mode_returns_once_mounted(
    run_cli: Any, mnt: Path, s3: Any, bucket: str, s3_server: str, background_cleanup: None
) -> None:
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"hi")
    start = time.monotonic()
    result = run_cli(bucket, str(mnt), "-o", f"endpoint_url={s3_server}", timeout=30)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 15
    # Mounted by the time the command returns: no waiting here.
    assert is_mounted(mnt)
    # silent, but for where it logs on a host without syslog (this one may have none)
    assert result.stdout == ""
    assert result.stderr == "" or re.fullmatch(r"s3mpfs: no syslog \(.*\): logging to \S+\n",
                                               result.stderr), result.stderr
    pids = _s3mpfs_processes(mnt)
    assert len(pids) == 1, pids
    assert (mnt / "hello.txt").read_bytes() == b"hi"
    (mnt / "written.txt").write_bytes(b"from the background mount")
    assert s3.get_object(Bucket=bucket, Key="written.txt")["Body"].read() == (
        b"from the background mount"
    )

    unmount = subprocess.run(
        [FUSERMOUNT, "-u", str(mnt)], capture_output=True, text=True, timeout=30
    )
    assert unmount.returncode == 0, unmount.stderr
    wait_for(lambda: not is_mounted(mnt), timeout=15, message="the mount to disappear")
    wait_for(
        lambda: not _s3mpfs_processes(mnt),
        timeout=30,
        message="the background s3mpfs process to exit after unmount",
    )


def test_background_mode_missing_bucket(
    cli: Any, mnt: Path, s3_server: str, background_cleanup: None
) -> None:
    result, seconds = cli("no-such-bucket-bg", str(mnt), "-o", f"endpoint_url={s3_server}")
    assert_one_line_error(result, "no-such-bucket-bg", "does not exist")
    assert seconds < CONFIG_ERROR_SECONDS
    assert not is_mounted(mnt)
    wait_for(
        lambda: not _s3mpfs_processes(mnt), timeout=30, message="no s3mpfs process left behind"
    )


def test_background_mode_bad_option(cli: Any, mnt: Path, background_cleanup: None) -> None:
    result, seconds = cli("some-bucket", str(mnt), "-o", "part_size=1M")
    assert_one_line_error(result, "part_size")
    assert seconds < CONFIG_ERROR_SECONDS
    assert not _s3mpfs_processes(mnt)


def test_help(run_cli: Any) -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "BUCKET[:PREFIX]" in result.stdout


# --------------------------------------------------------------------- every error path

# (id, arguments, extra environment, words the one line must hold). In the arguments,
# {mnt} is an empty mount point, {tmp} a scratch directory, {s3} the S3 endpoint, {bucket}
# an existing bucket, {busy} a TCP port something listens on, {fifo} a FIFO, {file} a
# regular file; {E} is `endpoint_url={s3}`.
LONG = "a" * 10_000
ERROR_PATHS: list[tuple[str, list[str], dict[str, str], list[str]]] = [
    ("profile-env-mount", ["{bucket}", "{mnt}", "-f", "-o", "{E}"], {"AWS_PROFILE": "nope"},
     ["nope", "AWS_PROFILE"]),
    ("profile-env-background", ["{bucket}", "{mnt}", "-o", "{E}"], {"AWS_PROFILE": "nope"},
     ["nope", "AWS_PROFILE"]),
    ("profile-option", ["{bucket}", "{mnt}", "-f", "-o", "{E},profile=nope"], {},
     ["nope", "profile="]),
    ("profile-env-uploads", ["uploads", "{bucket}", "-o", "{E}"], {"AWS_PROFILE": "nope"},
     ["nope"]),
    ("broken-aws-config", ["{bucket}", "{mnt}", "-f", "-o", "{E}"],
     {"AWS_CONFIG_FILE": "{tmp}/broken-aws-config"}, ["AWS configuration", "parse"]),
    ("log-file-missing-dir", ["{bucket}", "{mnt}", "-f", "-o", "{E},log_file={tmp}/no/x.log"],
     {}, ["log_file", "No such file"]),
    ("log-file-missing-dir-bg", ["{bucket}", "{mnt}", "-o", "{E},log_file={tmp}/no/x.log"],
     {}, ["log_file", "No such file"]),
    ("log-file-directory", ["{bucket}", "{mnt}", "-f", "-o", "{E},log_file={tmp}"], {},
     ["log_file", "directory"]),
    ("metrics-port-busy", ["{bucket}", "{mnt}", "-f", "-o", "{E},metrics={busy}"], {},
     ["metrics", "in use"]),
    ("metrics-port-busy-bg", ["{bucket}", "{mnt}", "-o", "{E},metrics={busy}"], {},
     ["metrics", "in use"]),
    ("cache-dir-unusable", ["{bucket}", "{mnt}", "-f", "-o", "{E},cache_dir={file}/x"], {},
     ["cache_dir", "Not a directory"]),
    ("cache-dir-unusable-bg", ["{bucket}", "{mnt}", "-o", "{E},cache_dir={file}/x"], {},
     ["cache_dir"]),
    ("endpoint-no-scheme", ["b-1", "{mnt}", "-f", "-o", "endpoint_url=127.0.0.1:9000"], {},
     ["endpoint_url", "http://"]),
    ("endpoint-file", ["b-1", "{mnt}", "-f", "-o", "endpoint_url=file:///etc/passwd"], {},
     ["endpoint_url", "http://"]),
    ("endpoint-bad-ipv6", ["b-1", "{mnt}", "-f", "-o", "endpoint_url=http://[::1"], {},
     ["endpoint_url", "not a valid URL"]),
    ("endpoint-bad-port", ["b-1", "{mnt}", "-f", "-o", "endpoint_url=http://h:99999"], {},
     ["endpoint_url"]),
    ("region-10000-chars", ["b-1", "{mnt}", "-f", "-o", f"region={LONG}"], {},
     ["region", "not a region"]),
    ("option-typo", ["b-1", "{mnt}", "-f", "-o", "part_sise=8M"], {},
     ["part_sise", "did you mean part_size", "s3mpfs -o help"]),
    ("flag-typo", ["b-1", "{mnt}", "-f", "-o", "alow_other"], {},
     ["did you mean allow_other"]),
    ("option-without-value", ["b-1", "{mnt}", "-f", "-o", "region"], {}, ["region=..."]),
    ("flag-with-value", ["b-1", "{mnt}", "-f", "-o", "debug=2"], {}, ["debug", "no value"]),
    ("sse-c-key-fifo", ["b-1", "{mnt}", "-f", "-o", "sse_c_key_file={fifo}"], {},
     ["sse_c_key_file", "not a regular file"]),
    ("sse-c-key-directory", ["b-1", "{mnt}", "-f", "-o", "sse_c_key_file={tmp}"], {},
     ["sse_c_key_file", "not a regular file"]),
    ("bad-bucket-name", ["B@d", "{mnt}", "-f"], {}, ["bucket name"]),
    ("metrics-not-a-port", ["b-1", "{mnt}", "-f", "-o", "metrics=http"], {}, ["metrics"]),
    ("file-mode-not-octal", ["b-1", "{mnt}", "-f", "-o", "file_mode=999"], {}, ["file_mode"]),
    ("uid-negative", ["b-1", "{mnt}", "-f", "-o", "uid=-1"], {}, ["uid"]),
    ("status-not-mounted", ["status", "{mnt}"], {"AWS_PROFILE": "nope"}, ["not mounted"]),
    ("unmount-not-mounted", ["unmount", "{mnt}"], {"AWS_PROFILE": "nope"}, ["not mounted"]),
    ("status-bad-flag", ["status", "{mnt}", "--nope"], {}, ["--nope"]),
    ("cleanup-bad-age", ["cleanup", "b-1", "--older-than", "soon"], {}, ["older-than"]),
    ("cleanup-no-target", ["cleanup"], {}, ["required"]),
    ("uploads-bad-flag", ["uploads", "b-1", "--nope"], {}, ["--nope"]),
    ("unmount-no-target", ["unmount"], {}, ["required"]),
    ("no-arguments", [], {}, ["required"]),
    ("missing-mount-point", ["b-1", "{tmp}/not/there", "-f"], {}, ["mkdir -p"]),
]
# Every numeric option: out of range, not finite, not a number.
NUMBERS = {
    "connect_timeout": ["nan", "inf", "0", "-1", "1e-9", "601"],
    "read_timeout": ["nan", "1e400", "1e-9", "0", "3601"],
    "negative_ttl": ["nan", "-inf", "-0.5", "1e9"],
    "read_ahead": ["0", "1", "2G", "lots"],
    "memory_limit": ["1M", "99999999T", "2T", "-5M"],
    "part_size": ["1M", "6G"],
    "upload_concurrency": ["0", "65", "1.5"],
    "retries": ["0", "21"],
    "cache_size": ["2000T", "-1"],
    "object_lock_retain_days": ["0", "36501"],
    "uid": ["4294967295"],
    "gid": ["x"],
    "metrics": ["65536", "-1"],
}
for _name, _values in NUMBERS.items():
    ERROR_PATHS += [(f"{_name}={_value}", ["b-1", "{mnt}", "-f", "-o", f"{_name}={_value}"], {},
                     [_name]) for _value in _values]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _needs_s3(row: tuple[str, list[str], dict[str, str], list[str]]) -> bool:
    return any("{bucket}" in a or "{E}" in a for a in row[1])


S3_PATHS = [row for row in ERROR_PATHS if _needs_s3(row)]
CONFIG_PATHS = [row for row in ERROR_PATHS if not _needs_s3(row)]


def run_error_path(tmp_path: Path, mnt: Path, args: list[str], env: dict[str, str],
                   words: list[str], **values: str) -> None:
    """Run `s3mpfs ARGS` and check it ends quickly, non-zero, with one line on stderr."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    os.mkfifo(scratch / "fifo")
    (scratch / "file").write_text("x")
    (scratch / "broken-aws-config").write_text("[default\nregion = us-east-1\n")
    values.update(mnt=str(mnt), tmp=str(scratch), fifo=str(scratch / "fifo"),
                  file=str(scratch / "file"))
    argv = [a.format(**values) for a in args]
    extra = {k: v.format(**values) for k, v in env.items()}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "s3mpfs", *argv], capture_output=True,
                            text=True, timeout=30, env=s3mpfs_env(extra),
                            stdin=subprocess.DEVNULL, check=False)
    line = assert_one_line_error(result, *words)
    assert time.monotonic() - start < CONFIG_ERROR_SECONDS, line
    assert not is_mounted(mnt)


@pytest.mark.parametrize(("args", "env", "words"), [row[1:] for row in CONFIG_PATHS],
                         ids=[row[0] for row in CONFIG_PATHS])
def test_every_option_error_is_one_line(mnt: Path, tmp_path: Path, args: list[str],
                                        env: dict[str, str], words: list[str]) -> None:
    run_error_path(tmp_path, mnt, args, env, words)


@pytest.mark.parametrize(("args", "env", "words"), [row[1:] for row in S3_PATHS],
                         ids=[row[0] for row in S3_PATHS])
def test_every_mount_error_is_one_line(mnt: Path, tmp_path: Path, s3_server: str,
                                       bucket: str, busy_port: int, background_cleanup: None,
                                       args: list[str], env: dict[str, str],
                                       words: list[str]) -> None:
    run_error_path(tmp_path, mnt, args, env, words, bucket=bucket, busy=str(busy_port),
                   E=f"endpoint_url={s3_server}")


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["-o", "help"]])
@pytest.mark.parametrize("env", [{"AWS_PROFILE": "nope"}, {"AWS_CONFIG_FILE": "/etc/passwd"}],
                         ids=["no-such-profile", "broken-config"])
def test_help_and_version_need_no_aws_configuration(args: list[str],
                                                    env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "s3mpfs", *args], capture_output=True,
                            text=True, timeout=30, env=s3mpfs_env(env), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "Traceback" not in result.stdout


@pytest.mark.skipif(os.geteuid() != 0 or os.stat("/dev/fuse").st_mode & 0o006 == 0o006,
                    reason="needs root and a /dev/fuse that other users cannot open (it is "
                           "usually 0666, so this runs where a distribution restricts it)")
def test_user_who_cannot_open_dev_fuse(s3_server: str, bucket: str) -> None:
    public = Path(tempfile.mkdtemp(prefix="s3mpfs-nobody-", dir="/tmp"))
    try:
        public.chmod(0o755)
        mnt = public / "mnt"
        mnt.mkdir()
        os.chown(mnt, 65534, 65534)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-m", "s3mpfs", bucket, str(mnt), "-f", "-o",
             f"endpoint_url={s3_server},cache_dir={public}/cache,cache_size=0"],
            capture_output=True, text=True, timeout=30, env=s3mpfs_env(), cwd="/", check=False)
        assert_one_line_error(result, "/dev/fuse", "Permission denied")
    finally:
        shutil.rmtree(public, ignore_errors=True)
