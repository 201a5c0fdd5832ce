"""What every tool under test is: the Tool interface, the samples and results it yields,
and FuseMount/FuseTool for the tools used through a mount (`cp` in, `cat` out)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .base import FUSERMOUNT, KEY, MOUNT_TIMEOUT, UNMOUNT_TIMEOUT, BenchError, check_stop, log
from .procs import check, cpu_seconds, delta, reset_hwm, run_timed, stop_process, vm_hwm_kib
from .server import Bench


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
            done = check(run_timed(argv_for(path), cold=True), f"{what} ({self.name})")
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
