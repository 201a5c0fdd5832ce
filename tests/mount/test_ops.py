"""Operability: --version, `-o help`, syslog in the background, `s3mpfs status`,
`s3mpfs unmount --wait`, the Prometheus endpoint."""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    REPO_ROOT,
    STORE_DEADLINE,
    is_mounted,
    list_keys,
    no_pending_uploads,
    random_file,
    s3mpfs_env,
    sha256_file,
    sha256_object,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families
from s3proxy import FAULT_500, HOLD, S3Proxy

from s3mpfs import __version__
from s3mpfs.cli import SYSLOG_ENV
from s3mpfs.config import build_config
from s3mpfs.errors import ConfigError
from s3mpfs.run.control import socket_path

Run = Callable[..., subprocess.CompletedProcess[str]]


def help_names(text: str) -> list[str]:
    """The option names `s3mpfs -o help` lists (one per line, indented by two spaces)."""
    return re.findall(r"^  ([a-z_]+) ", text, flags=re.M)


def readme_names() -> list[str]:
    """The options named in the first column of the README's "Mount options" table."""
    section = (REPO_ROOT / "README.md").read_text().split("## Mount options", 1)[1]
    section = section.split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names += re.findall(r"`([a-z_]+)`", first)
    return names


def test_version(run_cli: Run) -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"s3mpfs {__version__}"


@pytest.mark.parametrize("args", [["-o", "help"], ["-ohelp"], ["-o", "ro,help"]])
def test_option_help_lists_what_the_parser_accepts(run_cli: Run, tmp_path: Path,
                                                   args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    names = help_names(result.stdout)
    assert len(names) == len(set(names)) > 20
    for name in names:  # each one listed is one the parser knows (a bad value is fine)
        for value in ("1", "x", None):
            option = name if value is None else f"{name}={value}"
            try:
                build_config("bucket", str(tmp_path), [option])
            except ConfigError as exc:
                assert "unknown option" not in str(exc), (option, exc)
    with pytest.raises(ConfigError, match="unknown option"):
        build_config("bucket", str(tmp_path), ["not_an_option=1"])
    assert "(default: 8M)" in result.stdout.split("part_size", 1)[1].splitlines()[0]


def test_help_lists_the_options_too(run_cli: Run) -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert set(help_names(result.stdout)) >= set(help_names(run_cli("-o", "help").stdout))


def test_readme_names_the_same_options(run_cli: Run) -> None:
    listed = help_names(run_cli("-o", "help").stdout)
    assert sorted(readme_names()) == sorted(listed)


# --------------------------------------------------------------------------- syslog


class SyslogStandIn:
    """A Unix datagram socket standing in for /dev/log; collects what arrives."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="s3log")  # short: sun_path has 108 bytes
        self.path = os.path.join(self.dir, "log")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.lines: list[str] = []

    def received(self, *words: str) -> str | None:
        """The first line received so far that contains every one of `words`."""
        while True:
            try:
                self.lines.append(self.sock.recv(65536).decode(errors="replace"))
            except BlockingIOError:
                break
        return next((x for x in self.lines if all(w in x for w in words)), None)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def syslog() -> Iterator[SyslogStandIn]:
    stand_in = SyslogStandIn()
    yield stand_in
    stand_in.close()


@pytest.mark.mount
def test_background_mount_logs_a_failed_upload_to_syslog(
        run_cli: Run, proxy: S3Proxy, bucket: str, tmp_path: Path,
        syslog: SyslogStandIn, s3: Any) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proxy.add_fault("PutObject", FAULT_500, key_contains="doomed")
    result = run_cli(bucket, str(mnt), "-o", f"endpoint_url={proxy.url},retries=1",
                     env={SYSLOG_ENV: syslog.path})
    assert result.returncode == 0, result.stderr
    try:
        assert is_mounted(mnt)
        mounted = wait_for(lambda: syslog.received("mounted", bucket), timeout=STORE_DEADLINE,
                           message="mount line")
        with pytest.raises(OSError):
            with open(mnt / "doomed.txt", "wb") as f:
                f.write(b"never stored")
        line = wait_for(lambda: syslog.received("doomed.txt", "failed"), timeout=STORE_DEADLINE,
                        message="the failed upload's line in syslog")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=30)
    # <27> = facility daemon (3) * 8 + severity err (3); tagged for journalctl -t s3mpfs
    assert re.match(r"<27>s3mpfs\[\d+\]: ERROR s3mpfs\.write\.\w+: "
                    r"upload of doomed\.txt failed", line), line
    assert re.match(r"<30>s3mpfs\[\d+\]: INFO ", mounted), mounted
    wait_for(lambda: syslog.received("unmounted"), timeout=STORE_DEADLINE,
             message="the daemon's last line")
    assert not list_keys(s3, bucket, "doomed")
    assert not any("testing" in x for x in syslog.lines)  # the test's secret key


# --------------------------------------------------------------------------- status

MiB = 1024 * 1024


def status(run_cli: Run, mnt: Path) -> dict[str, Any]:
    result = run_cli("status", str(mnt), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def in_flight(snap: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((f for f in snap["uploads"] if f["name"] == name), None)


def parts_in(records: list[Any], number: int) -> bool:
    return any(r.kind == "UploadPart" and r.part_number == number for r in records)


@pytest.mark.mount
@pytest.mark.parametrize("route", ["boto3", "crt"])
def test_status_follows_a_throttled_copy(proxy: S3Proxy, mount: Any, bucket: str,
                                         run_cli: Run, tmp_path: Path, s3: Any,
                                         route: str) -> None:
    """Over https (S3MPFS_HTTP=crt here) parts go through awscrt's S3 client, as many
    as memory_limit / 4 holds (2 of these 4), the others through boto3: a part in flight
    shows as one either way."""
    src = random_file(tmp_path / "big.bin", 200 * MiB, seed=7)
    m = mount(bucket + ":dir", f"endpoint_url={proxy.url}",
              env={"S3MPFS_HTTP": "crt"} if route == "crt" else None)
    proxy.add_fault("UploadPart", FAULT_500, part_number=2, times=1)  # retried by botocore
    # Holding as many parts as upload_concurrency (4) freezes the upload: the memory budget
    # fills and cp's writes wait.
    first = [proxy.add_fault("UploadPart", HOLD, part_number=n) for n in range(6, 10)]
    second = [proxy.add_fault("UploadPart", HOLD, part_number=n) for n in range(20, 24)]
    before = status(run_cli, m.path)
    assert before["uploads"] == [] and before["totals"]["files_committed"] == 0
    copy = subprocess.Popen(["cp", str(src), str(m.path / "big.bin")],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all(r.held.is_set() for r in first), timeout=60,
                 message="parts 6-9 held")
        held = wait_for(lambda: (f := in_flight(status(run_cli, m.path), "big.bin"))
                        and f["parts_retried"] >= 1 and f["parts_in_flight"] == 4 and f,
                        timeout=30, message="status showing the retried part and 4 held")
        assert 0 < held["bytes_written"] < 200 * MiB
        assert 5 <= held["parts_sent"] < 25
        for rule in first:
            proxy.release(rule)
        wait_for(lambda: all(r.held.is_set() for r in second), timeout=60,
                 message="parts 20-23 held")
        later = wait_for(lambda: (f := in_flight(status(run_cli, m.path), "big.bin"))
                         and f["bytes_written"] > held["bytes_written"]
                         and f["parts_sent"] > held["parts_sent"] and f,
                         timeout=30, message="status showing more bytes")
        assert later["parts_in_flight"] == 4 and later["parts_retried"] >= 1
        snap = status(run_cli, m.path)
        assert snap["totals"]["memory_in_use"] > 0
        assert snap["totals"]["memory_limit"] == 64 * MiB
        for rule in second:
            proxy.release(rule)
        assert copy.wait(timeout=120) == 0, copy.stderr.read() if copy.stderr else ""
    finally:
        proxy.clear_faults()
        if copy.poll() is None:
            copy.kill()
            copy.wait()
    after = status(run_cli, m.path)
    assert in_flight(after, "big.bin") is None
    totals = after["totals"]
    assert totals["files_committed"] == 1
    assert totals["bytes_committed"] == 200 * MiB
    assert totals["retries"] >= 1
    # The mount counts every request it made, its mount-time probe's included.
    seen = Counter(r.kind for r in proxy.requests)
    assert totals["requests"]["UploadPart"] == seen["UploadPart"] - 1  # one retry
    assert totals["requests"]["CompleteMultipartUpload"] == seen["CompleteMultipartUpload"]
    assert proxy.count("CompleteMultipartUpload") == 1  # the file's
    assert totals["files_failed"] == 0
    assert sha256_object(s3, bucket, "dir/big.bin") == sha256_file(src)
    text = run_cli("status", str(m.path))
    assert text.returncode == 0, text.stderr
    assert "1 file, 200.0 MiB" in text.stdout and "testing" not in text.stdout


@pytest.mark.mount
def test_status_shows_each_files_phase(proxy: S3Proxy, mount: Any, bucket: str,
                                       run_cli: Run) -> None:
    """writing while open, completing once closed until S3 has it (a failed upload is
    aborted and leaves the list at once: the totals count it); the text for a pipe names
    the phase too."""
    m = mount(bucket, f"endpoint_url={proxy.url}", "part_size=5M")
    held = proxy.add_fault("CompleteMultipartUpload", HOLD)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys\n"
         "with open(sys.argv[1], 'wb') as f:\n"
         "    f.write(b'x' * 6 * 2**20); f.flush(); sys.stdin.read()\n", str(m.path / "slow.bin")],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (f := in_flight(status(run_cli, m.path), "slow.bin"))
                 and f["phase"] == "writing", timeout=STORE_DEADLINE, message="slow.bin writing")
        assert writer.stdin is not None
        writer.stdin.close()  # the writer closes the file: the upload completes, held
        wait_for(lambda: held.held.is_set(), timeout=30, message="the completion held")
        assert in_flight(status(run_cli, m.path), "slow.bin")["phase"] == "completing"
        text = run_cli("status", str(m.path)).stdout  # not a terminal: plain text
        assert re.search(r"slow\.bin\s+\S?\s*completing", text), text
    finally:
        proxy.release(held)
        writer.wait(timeout=60)
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""


@pytest.mark.mount
def test_another_user_cannot_read_the_status(mount: Any, bucket: str, run_cli: Run,
                                             tmp_path: Path) -> None:
    m = mount(bucket)
    (m.path / "a.txt").write_bytes(b"x")
    assert status(run_cli, m.path)["totals"]["files_committed"] == 1  # root can
    nobody = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
         "-m", "s3mpfs", "status", str(m.path), "--json"],
        capture_output=True, text=True, timeout=30, cwd="/", check=False,
        env=s3mpfs_env())
    assert nobody.returncode == 1, (nobody.stdout, nobody.stderr)
    assert nobody.stdout == ""
    assert "permission denied" in nobody.stderr, nobody.stderr
    sock = socket_path(str(m.path), 0)
    assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(sock).st_mode) & 0o077 == 0


def test_status_of_something_not_mounted(run_cli: Run, tmp_path: Path) -> None:
    result = run_cli("status", str(tmp_path), "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == f"s3mpfs status: {tmp_path} is not mounted"


# --------------------------------------------------------------------------- metrics


def scrape(url: str) -> dict[str, float]:
    """`curl` the endpoint; parse it as Prometheus text: {'name{label="v",...}': value}."""
    result = subprocess.run(["curl", "-sSf", url], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(result.stdout):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())
                              if k != "mount")
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


@pytest.mark.mount
def test_metrics_endpoint_serves_the_counters(proxy: S3Proxy, mount: Any, bucket: str,
                                              run_cli: Run) -> None:
    m = mount(bucket, f"endpoint_url={proxy.url}", "retries=1", "metrics=0")
    address = status(run_cli, m.path)["mount"]["metrics"]
    assert address.startswith("127.0.0.1:"), address  # loopback unless told otherwise
    url = f"http://{address}/metrics"
    assert scrape(url)["s3mpfs_files_committed_total{}"] == 0
    (m.path / "good.txt").write_bytes(b"kept")
    proxy.add_fault("PutObject", FAULT_500, key_contains="doomed")
    with pytest.raises(OSError):
        with open(m.path / "doomed.txt", "wb") as f:
            f.write(b"never stored")
    metrics = scrape(url)
    assert metrics["s3mpfs_files_committed_total{}"] == 1
    assert metrics["s3mpfs_bytes_committed_total{}"] == 4
    assert metrics["s3mpfs_uploads_failed_total{}"] == 1
    assert metrics["s3mpfs_request_errors_total{}"] >= 1
    assert metrics['s3mpfs_requests_total{operation="PutObject"}'] == \
        status(run_cli, m.path)["totals"]["requests"]["PutObject"] >= 2
    assert metrics["s3mpfs_uploads_in_flight{}"] == 0
    assert metrics["s3mpfs_memory_limit_bytes{}"] == 64 * MiB
    result = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             f"http://{address}/other"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.stdout == "404"


@pytest.mark.mount
def test_metrics_address_taken_refuses_the_mount(mount: Any, bucket: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        m = mount(bucket, f"metrics=127.0.0.1:{port}", expect_failure=True)
    assert m.returncode == 1
    assert f"metrics=127.0.0.1:{port}: cannot listen there" in m.log_text()


# --------------------------------------------------------------------------- unmount


@pytest.mark.mount
def test_unmount_wait_waits_for_a_copy(proxy: S3Proxy, mount: Any, bucket: str,
                                       run_cli: Run, tmp_path: Path, s3: Any) -> None:
    src = random_file(tmp_path / "big.bin", 48 * MiB, seed=3)
    m = mount(bucket, f"endpoint_url={proxy.url}")
    holds = [proxy.add_fault("UploadPart", HOLD, part_number=n) for n in range(2, 6)]
    copy = subprocess.Popen(["cp", str(src), str(m.path / "big.bin")],
                            stderr=subprocess.PIPE, text=True)
    log_path = tmp_path / "unmount.log"
    try:
        wait_for(lambda: all(r.held.is_set() for r in holds), timeout=60,
                 message="parts 2-5 held")
        refused = run_cli("unmount", str(m.path))
        assert refused.returncode == 1
        assert "1 file(s) still being written (big.bin)" in refused.stderr
        assert "--wait" in refused.stderr and m.is_mounted()
        with open(log_path, "wb") as log:
            waiter = subprocess.Popen(
                [sys.executable, "-m", "s3mpfs", "unmount", str(m.path), "--wait"],
                stdout=log, stderr=subprocess.STDOUT,
                env=s3mpfs_env())
        wait_for(lambda: "waiting for 1 file(s) being written before unmounting: big.bin"
                 in log_path.read_text(), timeout=30, message="unmount saying what it waits for")
        assert waiter.poll() is None and m.is_mounted()
        for rule in holds:
            proxy.release(rule)
        assert copy.wait(timeout=120) == 0, copy.stderr.read() if copy.stderr else ""
        assert waiter.wait(timeout=120) == 0, log_path.read_text()
    finally:
        proxy.clear_faults()
        for proc in (copy,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not m.is_mounted()
    assert m.proc.wait(timeout=30) == 0  # the mount's process has ended, cleanly
    assert "unmounted" in log_path.read_text() and "1 file, 48.0 MiB" in log_path.read_text()
    assert no_pending_uploads(s3, bucket) == []
    assert sha256_object(s3, bucket, "big.bin") == sha256_file(src)
    assert "aborting" not in m.log_text()


@pytest.mark.mount
def test_unmount_without_uploads(mount: Any, bucket: str, run_cli: Run) -> None:
    m = mount(bucket)
    (m.path / "a.txt").write_bytes(b"a")
    result = run_cli("unmount", str(m.path))
    assert result.returncode == 0, result.stderr
    assert not m.is_mounted() and m.proc.wait(timeout=30) == 0
    again = run_cli("unmount", str(m.path))
    assert again.returncode == 1 and "is not mounted" in again.stderr


# --------------------------------------------------------------------------- systemd


@pytest.mark.mount
def test_mount_tells_systemd_it_is_ready(mount: Any, bucket: str,
                                         syslog: SyslogStandIn) -> None:
    """Type=notify: READY=1 reaches $NOTIFY_SOCKET once the mount answers."""
    mount(bucket, env={"NOTIFY_SOCKET": syslog.path})
    ready = wait_for(lambda: syslog.received("READY=1"), timeout=STORE_DEADLINE,
                     message="READY=1")
    assert f"STATUS=mounted {bucket} on " in ready


def test_systemd_units_verify(tmp_path: Path) -> None:
    """The template unit and the units systemd makes of the fstab example verify."""
    s3mpfs = Path(sys.executable).parent / "s3mpfs"  # the unit names /usr/local/bin/s3mpfs
    unit = (REPO_ROOT / "contrib" / "s3mpfs@.service").read_text()
    assert "Type=notify" in unit and "network-online.target" in unit
    assert "unmount --wait" in unit
    (tmp_path / "s3mpfs@.service").write_text(unit.replace("/usr/local/bin/s3mpfs",
                                                           str(s3mpfs)))
    (tmp_path / "s3mpfs@mnt-backups.service").symlink_to("s3mpfs@.service")
    verify = subprocess.run(["systemd-analyze", "verify",
                             str(tmp_path / "s3mpfs@mnt-backups.service")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr

    # (scripts/setup.sh installs Debian's systemd, which has both tools)
    generator = Path("/lib/systemd/system-generators/systemd-fstab-generator")
    out = tmp_path / "generated"
    out.mkdir()
    env = {**os.environ, "SYSTEMD_FSTAB": str(REPO_ROOT / "contrib" / "fstab.example"),
           "SYSTEMD_PROC_CMDLINE": ""}
    subprocess.run([str(generator), str(out), str(out), str(out)], env=env, check=True,
                   timeout=60)
    mount_unit = (out / "mnt-backups.mount").read_text()
    assert "Type=fuse.s3mpfs" in mount_unit and "What=mybucket:backups" in mount_unit
    assert (out / "mnt-backups.automount").exists()
    assert (out / "remote-fs.target.requires" / "mnt-backups.automount").exists()
    verify = subprocess.run(["systemd-analyze", "verify", str(out / "mnt-backups.automount"),
                             str(out / "mnt-backups.mount")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    readme = (REPO_ROOT / "README.md").read_text()
    assert (REPO_ROOT / "contrib" / "fstab.example").read_text().splitlines()[-1] in readme


@pytest.mark.mount
def test_status_and_metrics_never_show_keys(mount: Any, bucket: str, run_cli: Run,
                                            tmp_path: Path) -> None:
    key = b"STATUS-SSE-C-KEY-never-printed!!"
    key_file = tmp_path / "key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    m = mount(bucket, f"sse_c_key_file={key_file}", "metrics=0")
    (m.path / "secret.txt").write_bytes(b"data")
    outputs = [run_cli("status", str(m.path), "--json").stdout,
               run_cli("status", str(m.path)).stdout]
    address = json.loads(outputs[0])["mount"]["metrics"]
    outputs.append(subprocess.run(["curl", "-sSf", f"http://{address}/metrics"],
                                  capture_output=True, text=True, timeout=30).stdout)
    assert json.loads(outputs[0])["totals"]["files_committed"] == 1
    forbidden = [base64.b64encode(key).decode(), key.hex(), key.decode(), "testing",
                 str(key_file)]
    for text in outputs:
        assert text
        for secret in forbidden:
            assert secret not in text


@pytest.mark.mount
def test_status_watch_redraws_in_place(mount: Any, bucket: str) -> None:
    """On a terminal, --watch redraws the same lines (cursor up, erase line) each interval
    and leaves on Ctrl-C with status 0."""
    m = mount(bucket)
    master, slave = pty.openpty()
    # As at a terminal, Ctrl-C must reach it: a suite run as a background job has SIGINT
    # ignored, which a child inherits (a handler, set for the spawn, is reset to default).
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        watch = subprocess.Popen(
            [sys.executable, "-m", "s3mpfs", "status", str(m.path), "--watch",
             "--interval", "0.2"], stdin=slave, stdout=slave, stderr=slave,
            env=s3mpfs_env({"TERM": "xterm", "COLUMNS": "100"}))
    finally:
        signal.signal(signal.SIGINT, ignored)
    os.close(slave)
    os.set_blocking(master, False)
    screen = bytearray()

    def drawn(times: int) -> bool:
        try:
            screen.extend(os.read(master, 65536))
        except BlockingIOError:
            pass
        return screen.count(b"pending attribute writes") >= times

    try:
        wait_for(lambda: drawn(1), timeout=30, message="the first frame")
        (m.path / "new.txt").write_bytes(b"x")
        wait_for(lambda: drawn(3) and b"1 file," in screen, timeout=30,
                 message="frames showing the new file committed")
        assert b"\x1b[1A" in screen and b"\x1b[2K" in screen  # cursor up, erase line
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        os.close(master)
