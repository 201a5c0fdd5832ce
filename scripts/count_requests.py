#!/usr/bin/env python3
"""Count the S3 requests that backup workflows cost on an s3mpfs mount.

Starts moto's S3 server and the recording proxy (tests/s3proxy.py) in this process,
mounts s3mpfs through the proxy in a temporary directory, and measures, for a tree of
1,005 small files (10 directories x 100 files, plus 5 in nested directories):

  1. `ls -lR` of the tree uploaded with boto3 (no metadata), on a fresh mount (cold)
  2. `ls -lR` again right away (warm)
  3. `rsync -a` of the same tree from local disk into an empty directory of the mount
  4. `rsync -a` again, nothing changed (warm)
  5. `rsync -a` again after a remount (cold caches: tonight's cron job)
  6. 200 one-row SQLite transactions (journal_mode=DELETE) on that mount
  7. `git init; git add .` of the tree copied onto that mount (`cp -r`, not counted)

Requests are counted by kind, as the proxy classifies them; each step's count includes
the requests the mount makes until it has been quiet for a moment after the command
(deferred attribute writes). Writes the table to docs/REQUESTS.md.

Run with the project's virtualenv:  .venv/bin/python scripts/count_requests.py
Needs /dev/fuse, fusermount3 and rsync.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from helpers import is_mounted, wait_for  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from s3proxy import S3Proxy  # noqa: E402

REGION = "us-east-1"
BUCKET = "count-requests"
DIRS, FILES_PER_DIR = 10, 100
NESTED = ["dir00/sub/a.txt", "dir00/sub/b.txt", "dir00/sub/deeper/c.txt",
          "dir05/sub/d.txt", "dir09/x/y/z/e.txt"]
QUIET = 1.5  # seconds without a request that end a step (deferred writes wait 0.5 s)
FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"


def tree_paths() -> list[str]:
    paths = [f"dir{d:02}/file{f:03}.txt" for d in range(DIRS) for f in range(FILES_PER_DIR)]
    return paths + NESTED


def body(path: str) -> bytes:
    return (f"{path}\n" * (1 + len(path) % 7)).encode()


class Mount:
    def __init__(self, endpoint: str, workdir: Path, n: int) -> None:
        self.path = workdir / f"mnt{n}"
        self.path.mkdir()
        self.log = workdir / f"mount{n}.log"
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "s3mpfs", BUCKET, str(self.path), "-f",
                "-o", f"endpoint_url={endpoint},region={REGION}"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: is_mounted(self.path) or self.proc.poll() is not None,
                     timeout=30, message="the mount")
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise SystemExit(f"s3mpfs exited with {self.proc.returncode}:\n"
                             f"{self.log.read_text()}")

    def stop(self) -> None:
        deadline = time.monotonic() + 30
        while is_mounted(self.path) and time.monotonic() < deadline:
            if subprocess.run([FUSERMOUNT, "-u", str(self.path)], capture_output=True).returncode:
                time.sleep(0.2)  # busy: retry until the deadline
        if is_mounted(self.path):
            subprocess.run([FUSERMOUNT, "-uz", str(self.path)], capture_output=True)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def settle(proxy: S3Proxy) -> None:
    """Wait until the proxy has seen no request for QUIET seconds (at most 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = proxy.requests
        last = records[-1].time if records else 0.0
        if time.monotonic() - last >= QUIET:
            return
        time.sleep(0.1)


TRANSACTIONS = 200
# One-row transactions, each committed on its own, as an application logging events would.
SQLITE = ("import sqlite3, sys\n"
          "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
          "conn.execute('PRAGMA journal_mode=DELETE')\n"
          "for i in range(int(sys.argv[2])):\n"
          "    conn.execute('BEGIN')\n"
          "    conn.execute('INSERT INTO t VALUES (?, ?)', (i, f'row {i}'))\n"
          "    conn.execute('COMMIT')\n"
          "assert conn.execute('SELECT count(*) FROM t').fetchone()[0] == int(sys.argv[2])\n")


def measure(proxy: S3Proxy, name: str, argv: list[str], check_lines: int | None = None,
            *, tmp: str = "", shown: str = "") -> dict[str, Any]:
    proxy.clear()
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
    settle(proxy)
    counts = Counter(r.kind for r in proxy.requests)
    if check_lines is not None:
        files = sum(1 for line in result.stdout.splitlines() if line.startswith("-"))
        if files != check_lines:
            raise SystemExit(f"{name}: listed {files} files, expected {check_lines}")
    print(f"{name}: {wall:.2f} s, {sum(counts.values())} requests {dict(counts)}", flush=True)
    command = shown or " ".join(argv)
    command = command.replace(tmp, "$TMP") if tmp else command
    return {"name": name, "command": command, "wall": wall, "counts": counts}


def write_report(path: Path, rows: list[dict[str, Any]], files: int, argv: list[str]) -> None:
    order = ["ListObjectsV2", "HeadObject", "GetObject", "PutObject", "CopyObject",
             "DeleteObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
             "CompleteMultipartUpload"]
    seen = set().union(*(r["counts"] for r in rows))
    kinds = [k for k in order if k in seen] + sorted(seen - set(order))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    rsync = subprocess.run(["rsync", "--version"], capture_output=True,
                           text=True).stdout.splitlines()[0]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# S3 requests of backup workflows",
        "",
        "Written by `scripts/count_requests.py`; do not edit by hand. Produced with:",
        "",
        "```sh",
        " ".join([".venv/bin/python", "scripts/count_requests.py", *argv]),
        "```",
        "",
        f"- date: {now}; s3mpfs commit `{commit}`",
        f"- machine: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {rsync}",
        "- S3: moto's server on 127.0.0.1 behind the recording proxy `tests/s3proxy.py`, "
        "which counts requests by kind; default mount options",
        f"- tree: {files} small files: {DIRS} directories x {FILES_PER_DIR} files, plus "
        f"{len(NESTED)} in nested directories; uploaded with boto3 without metadata for the "
        "`ls -lR` steps, copied from local disk by the `rsync` steps",
        f"- a step's counts include requests until the mount has been quiet for {QUIET:g} s "
        "after the command (deferred attribute writes); wall time is the command's alone; "
        "`$TMP` is the script's temporary directory (`local/` the tree on disk, `mnt0/` "
        "and `mnt1/` the mounts)",
        "",
        "| step | command | wall s | total | " + " | ".join(kinds) + " |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " |",
    ]
    for r in rows:
        c = r["counts"]
        lines.append(f"| {r['name']} | `{r['command']}` | {r['wall']:.2f} | "
                     f"{sum(c.values())} | " + " | ".join(str(c.get(k, 0)) for k in kinds)
                     + " |")
    first = next(r for r in rows if r["name"].startswith("rsync -a, first"))["counts"]
    per_file = ", ".join(f"{first[k] / files:.2f} {k}" for k in kinds if first.get(k))
    lines += [
        "",
        "Reading the table:",
        "",
        "- A listing costs one ListObjectsV2 per directory (1,000 entries a page) and, the "
        "first time, one HEAD per entry whose metadata is not cached (files, and directory "
        "markers, found or not); a warm listing costs no HEAD. Objects written by other tools "
        "without metadata cost the same HEAD: S3 listings carry no user metadata. Before "
        "those HEADs the mount reads the directory's stat index (one GetObject, a 404 "
        "when there is none; docs/SEMANTICS.md, \"Stat indexes\"), and a directory for which "
        "it had to HEAD 16 files or more gets one (a PutObject): the next mount HEADs none "
        "of them.",
        f"- rsync's first run, per file: {per_file}. Each file is written under a "
        "temporary name (PutObject) and renamed (CopyObject carrying mode and mtime, then "
        "DeleteObject)" + ("; the HeadObject before each copy reads the headers the copy "
        "keeps and pins the version copied" if first.get("HeadObject", 0) >= files else "")
        + ". The few extra "
        "PutObjects are directory markers, written again by each chmod and utime rsync makes "
        "on a directory, and each directory's stat index (with a ListObjectsV2 for the "
        "files' LastModified), written once the directory is quiet.",
        "- An rsync that finds nothing to do writes nothing; after a remount it needs each "
        "file's mode and mtime again: from each directory's stat index (one GetObject), "
        "checked against the listing, instead of one HEAD per file. The HEADs left are "
        "the directories' markers.",
        *commit_notes(rows, files),
        "",
    ]
    path.write_text("\n".join(lines))


def commit_notes(rows: list[dict[str, Any]], files: int) -> list[str]:
    """What the SQLite and git rows cost per transaction and per file."""
    notes = []
    for row in rows:
        c = row["counts"]
        if row["name"].startswith("SQLite"):
            per = ", ".join(f"{n / TRANSACTIONS:.2f} {k}" for k, n in c.most_common())
            notes.append(
                f"- SQLite, per transaction: {per}. What each must leave in S3: the journal "
                "as fsynced twice (its pages, then its header: two PutObject), the database "
                "as fsynced (one PutObject), and the journal deleted (one DeleteObject). Reads "
                "of what the mount just stored are answered from the bytes it sent, the "
                "directory SQLite opens to fsync is not listed, and the journal, deleted by "
                "this mount a moment before, is created without a lookup. moto honours "
                "If-Match on PutObject; where it is unusable (Ceph RGW refuses even the right "
                "ETag) a HEAD precedes each of the two PUTs built on a version.")
        elif row["name"].startswith("git"):
            per = ", ".join(f"{n / files:.2f} {k}" for k, n in c.most_common())
            notes.append(
                f"- git add, per file: {per}. git stores each object under a temporary name "
                "(PutObject at its close) and renames it (HEAD, CopyObject, DeleteObject); the "
                "file's bytes, stored by the `cp -r` through this mount, are read without a "
                "GET; a few hundred objects/xx directories cost a marker each, and a lookup "
                "in one that the mount has not changed for negative_ttl (0.25 s) a LIST.")
    return notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(REPO / "docs" / "REQUESTS.md"),
                        help="markdown file to write (default: docs/REQUESTS.md)")
    args = parser.parse_args()
    for tool in ("rsync", "git", FUSERMOUNT):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (scripts/setup.sh installs it)")

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        os.environ.pop(var, None)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                      config=Config(max_pool_connections=16))
    wait_for(lambda: s3.list_buckets() is not None, timeout=20, message="moto")
    s3.create_bucket(Bucket=BUCKET)
    paths = tree_paths()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: s3.put_object(Bucket=BUCKET, Key=f"tree/{p}", Body=body(p)),
                      paths))

    rows = []
    proxy = S3Proxy(endpoint).start()
    with tempfile.TemporaryDirectory(prefix="s3mpfs-count-") as tmp:
        work = Path(tmp)
        local = work / "local"
        for p in paths:
            (local / p).parent.mkdir(parents=True, exist_ok=True)
            (local / p).write_bytes(body(p))
        mounts = [Mount(proxy.url, work, 0)]
        try:
            m = mounts[0].path
            rows.append(measure(proxy, "ls -lR, cold", ["ls", "-lR", str(m / "tree")],
                                len(paths), tmp=tmp))
            rows.append(measure(proxy, "ls -lR, warm", ["ls", "-lR", str(m / "tree")],
                                len(paths), tmp=tmp))
            (m / "backup").mkdir()
            rsync = ["rsync", "-a", f"{local}/", f"{m / 'backup'}/"]
            rows.append(measure(proxy, "rsync -a, first run", rsync, tmp=tmp))
            rows.append(measure(proxy, "rsync -a, nothing changed", rsync, tmp=tmp))
            mounts[0].stop()
            mounts.append(Mount(proxy.url, work, 1))
            m = mounts[1].path
            rsync = ["rsync", "-a", f"{local}/", f"{m / 'backup'}/"]
            rows.append(measure(proxy, "rsync -a, nothing changed, after a remount", rsync,
                                tmp=tmp))
            db = m / "app.db"
            with sqlite3.connect(db) as conn:
                conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            conn.close()
            rows.append(measure(proxy, f"SQLite, {TRANSACTIONS} one-row transactions",
                                [sys.executable, "-c", SQLITE, str(db), str(TRANSACTIONS)],
                                tmp=tmp, shown=f"python3 -c '<{TRANSACTIONS} transactions, "
                                f"journal_mode=DELETE>' {db}"))
            repo = m / "repo"
            subprocess.run(["cp", "-r", str(local), str(repo)], check=True)
            settle(proxy)
            git = f"git -C {repo} init -q && git -C {repo} add ."
            rows.append(measure(proxy, "git init; git add, a tree copied in",
                                ["sh", "-c", git], tmp=tmp, shown=git))
            diff = subprocess.run(["diff", "-r", str(local), str(m / "backup")],
                                  capture_output=True, text=True)
            if diff.returncode:
                raise SystemExit(f"the backup differs from the source:\n{diff.stdout[:2000]}")
        finally:
            for mount in mounts:
                mount.stop()
            proxy.stop()
            server.stop()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    extra = [] if output == REPO / "docs" / "REQUESTS.md" else ["--output", str(output)]
    write_report(output, rows, len(paths), extra)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
