"""`s3mpfs uploads` and `s3mpfs cleanup`: list and abort pending multipart uploads.

    s3mpfs uploads BUCKET[:PREFIX] [-o endpoint_url=...,region=...]
    s3mpfs cleanup BUCKET[:PREFIX] [--older-than AGE] [--all] [--dry-run] [-o ...]

`cleanup` aborts, by default, only uploads s3mpfs started (see write/registry.py) that are
older than a day and whose process is gone; `--all` also aborts other tools' uploads
older than AGE. It never aborts an upload a live s3mpfs on this host is writing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import timedelta

import trio

from ..config import MountConfig, build_config
from ..errors import ConfigError, describe
from ..s3.store import S3Store
from ..write.registry import Registered, UploadRegistry, stale_reason

_AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """'36h' -> 36 hours. Units: s, m, h, d, w; '0' alone needs none."""
    if text.strip() == "0":
        return timedelta(0)
    match = _AGE_RE.match(text.strip())
    if not match:
        raise ConfigError(f"--older-than {text!r} is not an age; use e.g. 30m, 12h, 2d")
    return timedelta(**{_AGE_UNITS[match.group(2)]: float(match.group(1))})


def _format_age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _parser(command: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"s3mpfs {command}")
    parser.add_argument("target", metavar="BUCKET[:PREFIX]")
    parser.add_argument("-o", dest="options", action="append", default=[],
                        metavar="OPT[,OPT...]", help="endpoint_url=, region=, ... as for mount")
    if command == "cleanup":
        parser.add_argument("--older-than", default="1d", metavar="AGE",
                            help="only uploads started longer ago than AGE (default 1d)")
        parser.add_argument("--all", action="store_true",
                            help="also abort uploads that other tools started")
        parser.add_argument("--dry-run", action="store_true",
                            help="only say what would be aborted, and what kept and why")
    return parser


def main(args: Sequence[str]) -> int:
    command, rest = args[0], list(args[1:])
    parsed = _parser(command).parse_args(rest)
    try:
        config = build_config(parsed.target, "", parsed.options, check_mountpoint=False)
        older_than = parse_age(parsed.older_than) if command == "cleanup" else None
    except ConfigError as exc:
        print(f"s3mpfs: {exc}", file=sys.stderr)
        return 1
    try:
        return trio.run(_run, command, config, parsed, older_than)
    except Exception as exc:
        print(f"s3mpfs {command}: {describe(exc)}", file=sys.stderr)
        return 1


async def _run(command: str, config: MountConfig, parsed: argparse.Namespace,
               older_than: timedelta | None) -> int:
    store = S3Store(config)
    registry = UploadRegistry(store, config.prefix)
    items = await registry.pending()
    if command == "uploads":
        await _list(store, items)
        return 0
    assert older_than is not None
    failures = 0
    for item in items:
        abort, why = _cleanup_reason(item, older_than, parsed.all)
        if not abort:
            if parsed.dry_run:
                print(f"would keep {item.upload.key} ({why})")
            continue
        if parsed.dry_run:
            print(f"would abort {item.upload.key} ({why})")
        elif await registry.abort(item, why):
            print(f"aborted {item.upload.key} ({why})")
        else:
            failures += 1
    return 1 if failures else 0


def _cleanup_reason(item: Registered, older_than: timedelta,
                    everything: bool) -> tuple[bool, str]:
    """(abort it?, why), the why said for a kept upload too (--dry-run shows both)."""
    age = f"started {_format_age(item.age())} ago"
    if item.owner is not None:
        if item.state() == "live":  # its process here, or its lease renewed lately
            return False, f"a live s3mpfs is writing it: {item.owner.describe()}"
        if item.age() <= older_than:
            return False, f"{age}, not older than {_format_age(older_than)} (--older-than)"
        return True, stale_reason(item, older_than) or f"older than {_format_age(older_than)}"
    if not everything:
        return False, f"another tool's upload, {age}; --all aborts those too"
    if item.age() <= older_than:
        return False, f"another tool's upload, {age}, not older than {_format_age(older_than)}"
    return True, f"another tool's upload, older than {_format_age(older_than)}"


async def _list(store: S3Store, items: list[Registered]) -> None:
    if not items:
        print("no pending multipart uploads")
        return
    print(f"{'AGE':>6} {'PARTS':>5} {'BYTES':>14}  OWNER  KEY")
    for item in sorted(items, key=lambda i: i.upload.initiated):
        try:
            parts, size = await store.uploaded_so_far(item.upload.key, item.upload.upload_id)
        except Exception:
            parts, size = -1, -1
        if item.owner is None:
            owner = "other tool"
        else:
            owner = f"{item.owner.describe()} ({item.state()})"
        print(f"{_format_age(item.age()):>6} {parts:>5} {size:>14}  {owner}  {item.upload.key}")
