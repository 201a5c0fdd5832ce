"""Operability: --version, `-o help`, syslog in the background, `s3mpfs status`,
`s3mpfs unmount --wait`, the Prometheus endpoint."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import is_mounted, list_keys, wait_for
from s3proxy import FAULT_500, S3Proxy

from s3mpfs import __version__
from s3mpfs.cli import SYSLOG_ENV
from s3mpfs.config import build_config
from s3mpfs.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
Run = Callable[..., subprocess.CompletedProcess[str]]


def help_names(text: str) -> list[str]:
    """The option names `s3mpfs -o help` lists (one per line, indented by two spaces)."""
    return re.findall(r"^  ([a-z_]+) ", text, flags=re.M)


def readme_names() -> list[str]:
    """The options named in the first column of the README's "Mount options" table."""
    section = (REPO / "README.md").read_text().split("## Mount options", 1)[1]
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


@pytest.fixture
def proxy(s3_server: str) -> Iterator[S3Proxy]:
    """A recording, fault-injecting proxy in front of moto (see test_faults.py)."""
    p = S3Proxy(s3_server, seed=0).start()
    try:
        yield p
    finally:
        p.clear_faults()
        p.stop()


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
        mounted = wait_for(lambda: syslog.received("mounted", bucket), message="mount line")
        with pytest.raises(OSError):
            with open(mnt / "doomed.txt", "wb") as f:
                f.write(b"never stored")
        line = wait_for(lambda: syslog.received("doomed.txt", "failed"),
                        message="the failed upload's line in syslog")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=30)
    # <27> = facility daemon (3) * 8 + severity err (3); tagged for journalctl -t s3mpfs
    assert re.match(r"<27>s3mpfs\[\d+\]: ERROR s3mpfs\.upload: upload of doomed\.txt failed",
                    line), line
    assert re.match(r"<30>s3mpfs\[\d+\]: INFO ", mounted), mounted
    wait_for(lambda: syslog.received("unmounted"), message="the daemon's last line")
    assert not list_keys(s3, bucket, "doomed")
    assert not any("testing" in x for x in syslog.lines)  # the test's secret key
