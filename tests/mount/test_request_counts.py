"""A guard against request regressions: the S3 requests of `cp -r` of 100 small files
into a new directory, and of a cold `ls -l` of them, counted by the recording proxy.

Each count below is the most the step may make; a change that adds a request to either
step fails here (lower counts pass: update the table when a change removes some). What
the numbers mean:

- `cp -r`: the new directory's lookup (one LIST of its parent), its marker (PutObject),
  one PutObject per file, and once the directory is quiet its stat index (one LIST for
  the files' LastModified, one PutObject): s3mpfs created the directory, so it knows it is
  empty (no HEAD, no LIST before each PUT).
- cold `ls -l` on a fresh mount: the parent's and the directory's LIST, the directory's
  stat index (one GET) instead of one HEAD per entry, and the directory's own marker.
"""

from __future__ import annotations

import os
import posixpath
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from s3proxy import S3Proxy

from s3mpfs.fs.listings import LISTING_TTL
from s3mpfs.fs.statwriter import DEBOUNCE

FILES = 100
CP_MAX = {"ListObjectsV2": 2, "PutObject": FILES + 2}
LS_MAX = {"ListObjectsV2": 2, "HeadObject": 1, "GetObject": 1}


def settle(proxy: S3Proxy, quiet: float = 1.5, timeout: float = 30.0) -> None:
    """Wait until the proxy has seen no request for `quiet` seconds (deferred attribute
    writes and mount-time housekeeping included)."""
    deadline = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(proxy.requests)
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)
    raise AssertionError("requests did not settle")


def counts(proxy: S3Proxy) -> Counter[str]:
    return Counter(r.kind for r in proxy.requests)


def over(seen: Counter[str], allowed: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {kind: (n, allowed.get(kind, 0)) for kind, n in seen.items()
            if n > allowed.get(kind, 0)}


def pauses(proxy: S3Proxy, at_least: float) -> int:
    """How many times the proxy saw no request for `at_least` seconds between two (a
    slow answer, or a client not scheduled, on a loaded machine)."""
    arrivals = [r.time for r in proxy.requests]
    return sum(later - earlier >= at_least
               for earlier, later in zip(arrivals, arrivals[1:], strict=False))


def test_cp_r_and_cold_ls_l_make_no_extra_requests(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    for i in range(FILES):
        (src / f"f{i:03d}").write_bytes(i.to_bytes(2, "big") * 2048)
    # A name missing from a listing is trusted absent for negative_ttl after the mount's
    # last change in its directory; on a loaded machine a pause between two of cp's files
    # could exceed the default 0.25 s and add a LIST: pin it so the counts are exact.
    via = f"endpoint_url={proxy.url},negative_ttl=30"

    m = mount(bucket, via)
    settle(proxy)
    proxy.clear()
    started = time.monotonic()
    done = subprocess.run(["cp", "-r", str(src), str(m.path / "tree")], capture_output=True,
                          text=True, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr + m.log_text()
    settle(proxy)
    copied = counts(proxy)
    print("cp -r:", dict(copied), f"{took:.2f} s")
    assert copied["PutObject"] >= FILES  # every file was stored
    # A loaded machine's pace shows in two ways, neither of them per file (one PutObject
    # held 2.5 s at the proxy added both): the directory's stat index is written in each
    # pause of DEBOUNCE (a LIST and a PutObject), and the root, whose listing answers
    # for LISTING_TTL, is listed again once per LISTING_TTL the copy takes.
    paused = pauses(proxy, DEBOUNCE / 2)
    allowed = {"ListObjectsV2": CP_MAX["ListObjectsV2"] + paused + int(took / LISTING_TTL),
               "PutObject": CP_MAX["PutObject"] + paused}
    assert not over(copied, allowed), f"cp -r made more requests than before: {copied}"
    m.unmount()

    fresh = mount(bucket, via)
    settle(proxy)
    proxy.clear()
    started = time.monotonic()
    listed = subprocess.run(["ls", "-l", str(fresh.path / "tree")], capture_output=True,
                            text=True, timeout=120)
    took = time.monotonic() - started
    assert listed.returncode == 0, listed.stderr + fresh.log_text()
    assert len(listed.stdout.splitlines()) == FILES + 1  # "total" and one line per file
    settle(proxy, quiet=0.5)
    seen = counts(proxy)
    print("ls -l:", dict(seen), f"{took:.2f} s")
    # A listing answers lookups for LISTING_TTL: an `ls` slowed down by a loaded machine
    # lists again once per LISTING_TTL it takes (never a HEAD per entry).
    allowed = {**LS_MAX, "ListObjectsV2": LS_MAX["ListObjectsV2"] + int(took / LISTING_TTL)}
    assert not over(seen, allowed), f"cold ls -l made more requests than before: {seen}"


def test_names_only_listing_makes_no_head_and_stat_still_exact(
    proxy: S3Proxy, bucket: str, mount: Any
) -> None:
    """`ls -f` and `find -name` on a fresh mount: LIST only, no HEAD. Then `ls -l` shows
    each entry's stored mode, owner and type (a symlink listed as a plain object first)."""
    via = f"endpoint_url={proxy.url}"
    m = mount(bucket, via)
    tree = m.path / "tree"
    tree.mkdir()
    for i in range(FILES):
        (tree / f"f{i:03d}").write_bytes(b"x" * i)
    (tree / "f007").chmod(0o600)
    (tree / "link").symlink_to("f001")
    m.unmount()

    fresh = mount(bucket, via)
    settle(proxy)
    proxy.clear()
    names = subprocess.run(["ls", "-f", str(fresh.path / "tree")], capture_output=True,
                           text=True, timeout=120)
    found = subprocess.run(["find", str(fresh.path / "tree"), "-name", "f0*"],
                           capture_output=True, text=True, timeout=120)
    assert names.returncode == 0 and found.returncode == 0, names.stderr + found.stderr
    assert len(names.stdout.split()) == FILES + 3  # . .. and the link
    assert len(found.stdout.split()) == FILES
    settle(proxy, quiet=0.5)
    seen = counts(proxy)
    print("ls -f, find -name:", dict(seen))
    entry_heads = [r.key for r in proxy.requests
                   if r.kind == "HeadObject" and r.key and r.key.startswith("tree/")
                   and r.key != "tree/"]  # the directory's own marker is looked up
    assert not entry_heads, f"a names-only listing HEADed its entries: {entry_heads}"
    assert seen["ListObjectsV2"] >= 1

    listed = subprocess.run(["ls", "-ln", str(fresh.path / "tree")], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr + fresh.log_text()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line
             for line in listed.stdout.splitlines()[1:]}
    assert lines["f007"].startswith("-rw------- "), lines["f007"]
    assert lines["f008"].startswith("-rw-r--r-- "), lines["f008"]
    assert lines["link"].startswith("l") and lines["link"].endswith("link -> f001")
    assert (fresh.path / "tree" / "link").resolve().name == "f001"
    assert (fresh.path / "tree" / "f042").stat().st_size == 42
    settle(proxy, quiet=0.5)
    assert counts(proxy)["HeadObject"] <= FILES + 2  # stat-ahead: each entry once at most



TRANSACTIONS = 50
GIT_FILES = 100


def sqlite_transactions(db: Path, n: int) -> None:
    """`n` one-row transactions, each committed on its own, journal_mode=DELETE."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
        for i in range(n):
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, f"row {i}"))
            conn.execute("COMMIT")
    finally:
        conn.close()


def test_sqlite_transactions_store_what_each_fsync_needs(
    proxy: S3Proxy, s3: Any, s3_backend: Any, bucket: str, mount: Any
) -> None:
    """Each one-row transaction (journal_mode=DELETE) fsyncs the journal twice and the
    database once, then deletes the journal: three PutObject and one DeleteObject, and
    nothing else. No GET (the mount kept the bytes it stored), no LIST (the directory
    SQLite opens to fsync is not listed), no HEAD before the journal's creation (this
    mount deleted it a moment ago). RGW refuses If-Match on PutObject, so each of the
    two PutObjects built on a version (the journal's second, the database's) is checked
    with a HEAD right before it there. The old code made 8 requests a transaction."""
    # negative_ttl pinned as above. No stat index: the root's is checked whenever the
    # directory has been quiet for DEBOUNCE (2 s), and one PutObject that slow under
    # load (the database's, while the journal is stored) added that check's LIST and
    # index GET to the counts. Those are not a transaction's requests; the cp -r and
    # git tests count them.
    m = mount(bucket, f"endpoint_url={proxy.url},negative_ttl=30,stat_index=no")
    db = m.path / "app.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.close()
    settle(proxy, quiet=0.5)
    proxy.clear()
    sqlite_transactions(db, TRANSACTIONS)
    settle(proxy, quiet=0.5)
    seen = counts(proxy)
    print(f"{TRANSACTIONS} transactions:", dict(seen))
    checks = 2 * TRANSACTIONS if s3_backend.name == "rgw" else 0
    # After a pause of about LISTING_TTL between two requests (a slow PutObject, or
    # SQLite not scheduled, on a loaded machine) the mount lists the root again (seen
    # with PutObjects held 2.5 s at the proxy). One LIST per pause, not per transaction.
    allowed = {"PutObject": 3 * TRANSACTIONS, "DeleteObject": TRANSACTIONS,
               "HeadObject": checks + 2,
               "ListObjectsV2": 1 + pauses(proxy, LISTING_TTL / 2)}
    assert seen["PutObject"] == 3 * TRANSACTIONS  # every fsync was stored
    assert not over(seen, allowed), f"more requests than each fsync needs: {seen}"
    m.unmount()

    got = s3.get_object(Bucket=bucket, Key="app.db")["Body"].read()
    copy = m.path.parent / "check.db"
    copy.write_bytes(got)
    rows = sqlite3.connect(copy).execute("SELECT count(*), max(id) FROM t").fetchone()
    assert rows == (TRANSACTIONS, TRANSACTIONS - 1)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="app.db-journal")


def test_git_add_stores_each_file_once(
    proxy: S3Proxy, s3: Any, s3_backend: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    """`git add` of a tree copied in through the same mount: per file one GET-free read
    (the mount kept what cp stored), one PutObject of the loose object under git's
    temporary name, and its rename (HEAD, CopyObject, DeleteObject); plus git's own few
    files and one marker per objects/xx directory. The old code also read every file
    back (one GetObject per file)."""
    src = tmp_path / "src"
    for i in range(GIT_FILES):
        path = src / f"d{i % 10}" / f"f{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n" * 10)
    m = mount(bucket, f"endpoint_url={proxy.url},negative_ttl=30")
    repo = m.path / "repo"
    subprocess.run(["cp", "-r", str(src), str(repo)], check=True, timeout=120)
    settle(proxy, quiet=0.5)
    proxy.clear()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    for argv in (["git", "init", "-q"], ["git", "add", "."]):
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr + m.log_text()
    settle(proxy, quiet=0.5)
    seen = counts(proxy)
    print(f"git init; git add of {GIT_FILES} files:", dict(seen))
    # Stat indexes are counted apart: one PutObject per directory of 2 files or more
    # after each quiet moment in it (2 s), so at most one per file stored into it (a
    # slow run on a loaded machine goes quiet between git's files), plus one for cp's.
    indexes = [r for r in proxy.of_kind("PutObject") if r.key.startswith(".s3mpfs/stat/")]
    per_dir = Counter(r.key[len(".s3mpfs/stat/"):-len("/index.json.gz")] for r in indexes)
    stored = Counter(posixpath.dirname(r.key) for kind in ("PutObject", "CopyObject")
                     for r in proxy.of_kind(kind) if not r.key.startswith(".s3mpfs/"))
    assert all(n <= stored[d] + 1 for d, n in per_dir.items()), (per_dir, stored)
    seen["PutObject"] -= len(indexes)
    f, dirs = GIT_FILES, min(GIT_FILES, 256)  # objects/xx directories: one marker each
    allowed = {"PutObject": f + dirs + 40, "HeadObject": f + 20, "CopyObject": f + 10,
               "DeleteObject": f + 10, "ListObjectsV2": dirs + 20, "GetObject": 5}
    assert not over(seen, allowed), f"more requests than git add needs: {seen}"
    listed = subprocess.run(["git", "ls-files"], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=120)
    assert len(listed.stdout.split()) == GIT_FILES
    m.unmount()
    objects = s3.list_objects_v2(Bucket=bucket, Prefix="repo/.git/objects/")
    loose = [o["Key"] for o in objects.get("Contents", []) if not o["Key"].endswith("/")]
    assert len(loose) == GIT_FILES and not any("tmp_obj" in k for k in loose)
