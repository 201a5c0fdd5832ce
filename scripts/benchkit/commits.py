"""Programs that commit often (issue 17): one-row SQLite transactions in journal_mode=DELETE,
and `git init; git add .` of a tree of small files, on an s3mpfs mount and on local disk.

Each step reports its wall time beside local disk's and the S3 requests it cost per
transaction (per file for git), by operation, as the server counted them. What S3 must
hold: after each transaction, what SQLite fsynced (the journal twice, the database once)
and the journal deleted; after `git add`, every loose object under its name.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .base import BenchError, Unavailable, check_stop, log
from .procs import check, run_timed
from .server import Bench
from .stats import fmt, fmt_requests, median, small_requests
from .steps import SmallSample, requests_delta
from .tools import FuseTool, Tool


@dataclass
class CommitResult:
    transactions: int
    files: int
    sqlite: list[SmallSample] = field(default_factory=list)  # on the mount
    sqlite_local: list[float] = field(default_factory=list)  # seconds on local disk
    git: list[SmallSample] = field(default_factory=list)
    git_local: list[float] = field(default_factory=list)
    failed: str | None = None
    checked: str = ""


def transactions(db: Path, n: int) -> float:
    """`n` one-row transactions in journal_mode=DELETE on a new database; their seconds
    (the table's creation is not timed)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        if conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] != "delete":
            raise BenchError(f"{db}: journal_mode=DELETE refused")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        started = time.monotonic()
        for i in range(n):
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, f"row {i}"))
            conn.execute("COMMIT")
        seconds = time.monotonic() - started
        if conn.execute("SELECT count(*) FROM t").fetchone()[0] != n:
            raise BenchError(f"{db}: rows missing")
        return seconds
    finally:
        conn.close()


def make_tree(bench: Bench, files: int) -> Path:
    """`files` small text files in 20 directories, on local disk."""
    tree = bench.data_dir / f"git-{files}"
    if not tree.exists():
        for i in range(files):
            path = tree / f"d{i % 20:02d}" / f"f{i:04d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"file {i}\n" * 10)
    return tree


def git_add(repo: Path, env: dict[str, str]) -> float:
    """`git init -q; git add .` in `repo`; their wall time."""
    seconds = 0.0
    for argv in (["git", "init", "-q"], ["git", "add", "."]):
        done = check(run_timed(["git", "-C", str(repo), *argv[1:]], env=env), " ".join(argv))
        seconds += done.seconds
    return seconds


def git_env(bench: Bench) -> dict[str, str]:
    home = bench.scratch / "git-home"
    home.mkdir(exist_ok=True)
    return {**bench.env, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}


def run_commits(bench: Bench, tools: list[Tool], n: int, files: int, runs: int) -> CommitResult:
    """Both steps, `runs` times, each on a fresh s3mpfs mount and on local disk."""
    result = CommitResult(n, files)
    tool = next((t for t in tools if isinstance(t, FuseTool) and t.name == "s3mpfs"), None)
    if tool is None:
        result.failed = "s3mpfs not among the tools"
        return result
    if shutil.which("git") is None:
        result.failed = "git is not installed"
    bench.use("http")
    tree = make_tree(bench, files)
    env = git_env(bench)
    try:
        tool.prepare()
        for run in range(1, runs + 1):
            check_stop()
            local = bench.scratch / f"local-commits-{run}"
            local.mkdir()
            result.sqlite_local.append(transactions(local / "app.db", n))
            with tool.mount() as m:
                before = bench.requests()
                seconds = transactions(m.mountpoint / f"app-{run}.db", n)
                time.sleep(1.0)  # deferred attribute writes are counted too
                result.sqlite.append(
                    SmallSample(seconds, None, requests_delta(bench.requests(), before))
                )
            if result.failed:
                continue
            shutil.copytree(tree, local / "repo")
            result.git_local.append(git_add(local / "repo", env))
            with tool.mount() as m:  # the tree copied in first, as a checkout would be
                repo = m.mountpoint / f"repo-{run}"
                check(run_timed(["cp", "-r", str(tree), str(repo)]), "cp -r")
                time.sleep(1.0)
                before = bench.requests()
                seconds = git_add(repo, env)
                time.sleep(1.0)
                result.git.append(
                    SmallSample(seconds, None, requests_delta(bench.requests(), before))
                )
                listed = subprocess.run(
                    ["git", "-C", str(repo), "ls-files"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                result.checked = (
                    "every file staged"
                    if len(listed.stdout.split()) == files
                    else f"DIFFERENT ({len(listed.stdout.split())} staged)"
                )
            s, g = result.sqlite[-1], result.git[-1]
            log(
                f"commits run {run}/{runs}: {n} SQLite transactions {s.seconds:.2f} s "
                f"(local {result.sqlite_local[-1]:.2f} s, {sum(s.requests.values())} "
                f"requests); git add of {files} files {g.seconds:.2f} s (local "
                f"{result.git_local[-1]:.2f} s, {sum(g.requests.values())} requests)"
            )
    except (Unavailable, BenchError, OSError, subprocess.SubprocessError, sqlite3.Error) as exc:
        result.failed = f"{type(exc).__name__}: {exc}"
        log(f"commits: FAILED: {exc}")
    return result


def commits_section(r: CommitResult | None) -> list[str]:
    """The report's section on the two steps (empty if they were not run)."""
    if r is None:
        return []
    lines = [
        "",
        f"## Programs that commit often: {r.transactions} SQLite transactions, "
        f"`git add` of {r.files} files",
        "",
    ]
    if r.failed and not r.sqlite:
        return [*lines, f"Not measured: {r.failed}"]

    def row(what: str, samples: list[SmallSample], local: list[float], per: int, unit: str) -> str:
        s, loc = median([x.seconds for x in samples]), median(local)
        times = f"{fmt(s / loc, '.1f')}×" if s and loc else "–"
        return (
            f"| {what} | {fmt(s, '.2f')} | {fmt(loc, '.2f')} | {times} | "
            f"{fmt(s and s * 1000 / per, '.1f')} | "
            f"{fmt_requests(small_requests(samples), per)} per {unit} |"
        )

    lines += [
        "| step | s3mpfs s | local disk s | × local | ms per unit | S3 requests |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        row(
            f"{r.transactions} one-row transactions, journal_mode=DELETE",
            r.sqlite,
            r.sqlite_local,
            r.transactions,
            "transaction",
        ),
    ]
    if r.git:
        lines.append(
            row(
                f"`git init; git add .` of {r.files} files ({r.checked})",
                r.git,
                r.git_local,
                r.files,
                "file",
            )
        )
    elif r.failed:
        lines.append(f"| git add | {r.failed} | | | | |")
    return [
        *lines,
        "",
        "Each transaction must leave in S3 what SQLite fsynced: the journal twice (its "
        "pages, then its header), the database once, then the journal deleted: 3 "
        "PutObject and 1 DeleteObject. The null server does not honour If-Match on "
        "PutObject (Ceph RGW refuses it), so s3mpfs HEADs the key right before each PUT "
        "built on a version. `git add` runs in a tree copied in through the same mount; each loose "
        "object is stored under a temporary name at its close and renamed (HEAD, "
        "CopyObject, DeleteObject); each new objects/xx directory is one marker.",
    ]
