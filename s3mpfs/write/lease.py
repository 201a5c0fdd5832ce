"""Leases: proof, readable from any host, that the mount writing an upload still runs.

A PID says nothing outside its own PID namespace (containers on one host share its name
and boot id), so whether the mount that started an upload still runs is decided by the
upload's registry entry (write/registry.py) itself: the mount writes it again every
`RENEW_EVERY` while the upload is pending, and its age is its LastModified. Ages are read
on the server's clock: the reader writes a clock object of its own and lists it with the
entries, so no two hosts' clocks are ever compared. An entry is expired once it is
`EXPIRES_AFTER` old: ten renewals missed, a margin no pause of a live mount (a slow
network, a VM suspended for a few minutes) is expected to reach.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import trio

from ..s3.store import S3Store

RENEW_EVERY = 60.0  # seconds
EXPIRES_AFTER = timedelta(minutes=10)


async def ages(store: S3Store, directory: str, under: str) -> dict[str, timedelta]:
    """The age of every object under `under` (inside `directory`), by key, on the
    server's clock: a clock object written in `directory` is "now"."""
    clock = f"{directory}clock-{uuid.uuid4().hex}"
    await store.put_plain(clock, b"")
    try:
        listing = await store.list(directory, delimiter=None)
    finally:
        with trio.CancelScope(shield=True):
            await store.delete(clock)
    stamps = {info.key: info.mtime for info in listing.objects}
    now = stamps.get(clock, max(stamps.values(), default=0.0))
    return {key: timedelta(seconds=max(0.0, now - mtime))
            for key, mtime in stamps.items() if key.startswith(under)}
