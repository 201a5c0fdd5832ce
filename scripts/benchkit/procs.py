"""Processes: running a command and measuring it (wall time, peak RSS, CPU from wait4 and
/proc), stopping process groups, and the cleanup stack that undoes everything started."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import CLK_TCK, BenchError, check_stop, log


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


def drop_page_cache() -> bool:
    """Empty the page cache (as root; False otherwise). Files written through a mount
    stay cached (FUSE keeps the pages written), and once a run has filled the memory,
    every later command pays the kernel's reclaim: a 1 GiB `cp` into s3mpfs took 3.2 s of
    system time instead of 0.55, and which tool paid depended on the order of the runs."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")  # pages only: the kernel keeps its dentries and inodes
    except OSError:
        return False
    return True


def run_timed(argv: list[str], *, env: dict[str, str] | None = None,
              stdout: Any = subprocess.DEVNULL, timeout: float = 3600.0,
              cold: bool = False) -> Finished:
    """Run a command to completion (`cold`: from an empty page cache); its wall time, peak
    RSS and CPU time from wait4."""
    if cold:
        drop_page_cache()
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



def delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before
