"""`s3mpfs status MOUNTPOINT [--watch] [--json]` and `s3mpfs unmount MOUNTPOINT [--wait]`.

Both ask the running mount for its status over its control socket (`run/control.py`) and
render it with rich: one row per file being written (bytes written and acknowledged,
parts, rate, a progress bar), then the mount's totals. `unmount` refuses while files are
being written, or with `--wait` shows their progress until they are done, then runs
`fusermount3 -u` and waits for the mount's process to end.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .control import ControlError, mount_owner, request_status, socket_path

POLL_INTERVAL = 0.5  # seconds between status requests of --watch and --wait
EXIT_TIMEOUT = 120.0  # seconds unmount waits for the mount's process after fusermount3 -u


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"s3mpfs {self.prog.split()[-1]}: {message}", file=sys.stderr)
        sys.exit(2)


def size(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def files_count(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


PHASE_STYLES = {"failed": "bold red", "completing": "green"}


def render(snap: dict[str, Any]) -> RenderableType:
    """The status as rich renderables: header, files being written, totals."""
    m, t = snap["mount"], snap["totals"]
    header = Text.assemble(("s3mpfs ", "bold"), (m.get("source", ""), "bold cyan"), " on ",
                           (m.get("mountpoint", ""), "bold"),
                           f"  pid {m.get('pid')}  up {_duration(m.get('uptime', 0))}")
    files = Table(title=None, expand=True, show_edge=False, pad_edge=False)
    files.add_column("file", ratio=2, min_width=8, overflow="fold")
    files.add_column("phase", no_wrap=True)
    for name in ("written", "sent", "parts\nsent", "in\nflight", "re-\ntried", "rate"):
        files.add_column(name, justify="right", no_wrap=True)
    files.add_column("sent of\nwritten", ratio=1, min_width=8, no_wrap=True)
    for f in snap["uploads"]:
        total = max(f["bytes_written"], 1)
        phase = f.get("phase", "")
        if phase == "writing" and f["parts_retried"]:
            phase = "writing, retried"
        files.add_row(
            Text(f["name"], style="red" if f.get("failed") else ""),
            Text(phase, style=PHASE_STYLES.get(f.get("phase", ""), "")),
            size(f["bytes_written"]), size(f["bytes_sent"]), str(f["parts_sent"]),
            str(f["parts_in_flight"]), str(f["parts_retried"]), f"{size(f['rate'])}/s",
            ProgressBar(total=total, completed=min(f["bytes_sent"], total)))
    if not snap["uploads"]:
        files.add_row(Text("no file is being written", style="dim"))
    totals = Table.grid(padding=(0, 2))
    totals.add_column(style="bold")
    totals.add_column()
    requests = "  ".join(f"{k}={v}" for k, v in t["requests"].items()) or "none"
    failed = str(t["files_failed"])
    if t["last_failure"]:
        failed += f"  (last: {t['last_failure']})"
    errors = str(t["request_errors"])
    if t["last_request_error"]:
        errors += f"  (last: {t['last_request_error']})"
    rows = [
        ("committed", f"{files_count(t['files_committed'])}, {size(t['bytes_committed'])}"),
        ("failed uploads", failed),
        ("requests", requests),
        ("retries", f"{t['retries']}  (reads {t.get('read_retries', 0)}, "
                    f"writes {t.get('write_retries', 0)})"),
        ("request errors", errors),
        ("memory", f"{size(t['memory_in_use'])} of {size(t['memory_limit'])}"),
        ("pending attribute writes", str(t["pending_attribute_writes"])),
    ]
    if m.get("metrics"):
        rows.append(("metrics", f"http://{m['metrics']}/metrics"))
    for label, value in rows:
        totals.add_row(label, value)
    return Group(header, Text(""), files, Text(""), totals)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _fail(command: str, message: str) -> int:
    print(f"s3mpfs {command}: {message}", file=sys.stderr)
    return 1


def status_main(args: Sequence[str]) -> int:
    parser = _Parser(prog="s3mpfs status",
                     description="Show what a running s3mpfs mount is doing.")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("--watch", action="store_true", help="refresh in place, like top")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds (--watch)")
    parsed = parser.parse_args(args)
    try:
        snap = request_status(parsed.mountpoint)
        if parsed.json and not parsed.watch:
            print(json.dumps(snap, indent=2))
            return 0
        if not parsed.watch:
            Console().print(render(snap))
            return 0
        with Live(render(snap), auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(parsed.interval)
                snap = request_status(parsed.mountpoint)
                if parsed.json:
                    live.update(Text(json.dumps(snap)), refresh=True)
                else:
                    live.update(render(snap), refresh=True)
    except ControlError as exc:
        if mount_owner(parsed.mountpoint) is not None and is_dead(parsed.mountpoint):
            return _fail("status", f"{parsed.mountpoint} is a dead mount: its s3mpfs process "
                         f"ended (crash or kill -9); clear it with: s3mpfs unmount "
                         f"{parsed.mountpoint}")
        return _fail("status", str(exc))
    except KeyboardInterrupt:
        return 0


def _pid_alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped by its parent, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def is_dead(mountpoint: str) -> bool:
    """A FUSE mount whose process is gone (crash, kill -9): the kernel answers ENOTCONN.
    Asked only once its control socket did not answer, so the stat cannot hang on a live
    but busy mount."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _answers(mountpoint: str) -> bool:
    try:
        request_status(mountpoint)
    except ControlError:
        return False
    return True


def clear_dead_mount(mountpoint: str, fusermount: str) -> int:
    """Detach a dead mount (lazily: nothing can be served through it any more)."""
    result = subprocess.run([fusermount, "-uz", mountpoint], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1:] or ["fusermount3 failed"]
        return _fail("unmount", f"cannot clear the dead mount at {mountpoint}: {message[0]}")
    print(f"cleared the dead mount at {mountpoint}: its s3mpfs process had ended; files "
          "being written then were not stored (the next mount aborts their uploads)",
          file=sys.stderr)
    return 0


def unmount_main(args: Sequence[str]) -> int:
    parser = _Parser(prog="s3mpfs unmount",
                     description="Unmount an s3mpfs mount once no file is being written. "
                                 "A dead mount (its process ended) is cleared.")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("--wait", action="store_true",
                        help="wait for files being written, showing their progress")
    parser.add_argument("--if-dead", action="store_true",
                        help="only clear a dead mount: succeed if MOUNTPOINT is not mounted, "
                             "fail if a live s3mpfs serves it (for systemd's ExecStartPre)")
    parsed = parser.parse_args(args)
    mnt = parsed.mountpoint
    owner = mount_owner(mnt)
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
    if owner is None and parsed.if_dead:
        return 0
    if owner is not None and not _answers(mnt) and is_dead(mnt):
        return clear_dead_mount(mnt, fusermount)
    if parsed.if_dead:
        return _fail("unmount", f"{mnt} is mounted and its s3mpfs answers; not touching it")
    path = socket_path(mnt, owner if owner is not None else os.getuid())
    console = Console(stderr=True)
    said = ""
    try:
        with Live(console=console, auto_refresh=False, transient=True) as live:
            while True:
                if mount_owner(mnt) is None:
                    return _fail("unmount", f"{mnt} is not mounted")
                snap = request_status(mnt)
                files = snap["uploads"]
                if files and not parsed.wait:
                    names = ", ".join(f["name"] for f in files)
                    return _fail("unmount", f"{len(files)} file(s) still being written "
                                 f"({names}); wait with: s3mpfs unmount --wait {mnt}")
                if files:
                    waiting = (f"waiting for {len(files)} file(s) being written before "
                               f"unmounting: {', '.join(f['name'] for f in files)}")
                    if console.is_terminal:
                        live.update(Group(Text(waiting, style="bold"), render(snap)),
                                    refresh=True)
                    elif waiting != said:  # a log, not a screen: say it once
                        console.print(waiting, soft_wrap=True)
                        said = waiting
                    time.sleep(POLL_INTERVAL)
                    continue
                result = subprocess.run([fusermount, "-u", mnt], capture_output=True,
                                        text=True, check=False)
                if result.returncode == 0:
                    break
                message = result.stderr.strip().splitlines()[-1:] or ["fusermount3 failed"]
                if not parsed.wait or "busy" not in message[0].lower():
                    return _fail("unmount", message[0])
                live.update(Text("waiting: the mount is busy (a file is open or a process "
                                 "has its working directory in it)"), refresh=True)
                time.sleep(POLL_INTERVAL)
        pid = int(snap["mount"]["pid"])
        deadline = time.monotonic() + EXIT_TIMEOUT
        while _pid_alive(pid) and os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)  # it stores pending attributes, then removes its socket
        totals = snap["totals"]
        console.print(f"unmounted {mnt} ({files_count(totals['files_committed'])}, "
                      f"{size(totals['bytes_committed'])} committed since mount)",
                      soft_wrap=True)
        return 0
    except ControlError as exc:
        return _fail("unmount", str(exc))
    except KeyboardInterrupt:
        return 130


def main(args: Sequence[str]) -> int:
    """`args[0]` is `status` or `unmount`."""
    if args[0] == "status":
        return status_main(args[1:])
    return unmount_main(args[1:])
