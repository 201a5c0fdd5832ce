"""The mount's lease: proof, readable from any host, that a mount is still running.

A PID says nothing outside its own PID namespace (containers on one host share its name
and boot id), so whether the mount that started an upload still runs is decided by a
lease: an empty object `<prefix>.s3mpfs/mounts/<mount id>` that the mount writes before
its first upload, writes again every `RENEW_EVERY` from its nursery, and deletes at
unmount. Its age is read on the server's clock: the reader writes a lease (or a clock
object) of its own first, and compares the LastModified of the others with its own, so
no two hosts' clocks are ever compared. A lease is expired once it is `EXPIRES_AFTER`
old: ten renewals missed, a margin no pause of a live mount (a slow network, a suspended
VM for a few minutes) is expected to reach.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import trio

from ..errors import describe
from ..s3.store import S3Store

log = logging.getLogger(__name__)

LEASE_DIR = ".s3mpfs/mounts/"
RENEW_EVERY = 60.0  # seconds
EXPIRES_AFTER = timedelta(minutes=10)


class MountLease:
    """This mount's lease, renewed from the mount's nursery."""

    def __init__(self, store: S3Store, prefix: str, mount_id: str) -> None:
        self.store = store
        self.prefix = prefix
        self.key = f"{prefix}{LEASE_DIR}{mount_id}"

    async def renew(self) -> None:
        await self.store.put_plain(self.key, b"")

    async def keep(self) -> None:
        """Renew every RENEW_EVERY seconds, for the mount's lifetime; a failed renewal is
        logged and tried again at the next one."""
        while True:
            await trio.sleep(RENEW_EVERY)
            try:
                await self.renew()
            except Exception as exc:
                log.warning("could not renew this mount's lease (%s): another mount may "
                            "take its uploads for abandoned if this lasts %d minutes",
                            describe(exc), EXPIRES_AFTER.seconds // 60)

    async def release(self) -> None:
        try:
            await self.store.delete(self.key)
        except Exception as exc:  # it expires by itself
            log.warning("could not remove this mount's lease: %s", describe(exc))


async def lease_ages(store: S3Store, prefix: str,
                     own: MountLease | None = None) -> dict[str, timedelta]:
    """The age of every mount's lease under `prefix`, by mount id, on the server's clock:
    `own` is renewed first (or, without one, a clock object is written and removed) and
    its LastModified is "now"."""
    clock = own.key if own is not None else f"{prefix}{LEASE_DIR}clock-{uuid.uuid4().hex}"
    if own is not None:
        await own.renew()
    else:
        await store.put_plain(clock, b"")
    try:
        listing = await store.list(f"{prefix}{LEASE_DIR}", delimiter=None)
    finally:
        if own is None:
            with trio.CancelScope(shield=True):
                await store.delete(clock)
    stamps = {info.key: info.mtime for info in listing.objects}
    now = stamps.get(clock, max(stamps.values(), default=0.0))
    return {key.rpartition("/")[2]: timedelta(seconds=max(0.0, now - mtime))
            for key, mtime in stamps.items() if key != clock or own is not None}
