"""Which pending multipart uploads are s3mpfs's, who started them, and sweeping them.

S3 cannot tell: ListMultipartUploads returns neither the metadata nor the tags of a
pending upload. So every multipart upload s3mpfs starts is registered in a small JSON
object `<prefix>.s3mpfs/uploads/<upload id>.json` naming the host (with its boot id and
PID namespace), the process and the mount, and unregistered once completed or aborted. A
pending upload with such an entry is s3mpfs's; one without is another tool's and is never
touched unless asked (`s3mpfs cleanup --all`).

Whether the mount that started an upload still runs: in the same PID namespace of the
same boot of the same host, its PID says (a crashed mount's uploads go at once); anywhere
else, the entry's age does: the mount writes it again every minute while the upload is
pending (write/lease.py), and only an expired one lets an upload go.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

import trio

from ..errors import describe
from ..objects import PendingUpload
from ..s3.store import S3Store
from .lease import EXPIRES_AFTER, RENEW_EVERY, ages

log = logging.getLogger(__name__)

REGISTRY_DIR = ".s3mpfs"  # hidden from the mount's listings
STALE_AFTER = timedelta(days=1)


def _pid_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return ""


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Owner:
    host: str
    boot_id: str
    pid: int
    mount_id: str
    pid_ns: str = ""  # "" in entries of s3mpfs before leases: their PID proves nothing

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), _boot_id(), os.getpid(), uuid.uuid4().hex[:12],
                   _pid_ns())

    def same_host(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == _boot_id()

    def alive(self) -> bool | None:
        """Whether the owning process still runs; None when this process cannot tell by
        its PID (another host, boot or PID namespace: a container)."""
        if not self.same_host() or not self.pid_ns or self.pid_ns != _pid_ns():
            return None
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return b"s3mpfs" in f.read()
        except OSError:
            return False

    def describe(self) -> str:
        return f"s3mpfs {self.host} pid {self.pid} mount {self.mount_id}"


@dataclass(frozen=True)
class Registered:
    upload: PendingUpload
    owner: Owner | None  # None: not started by s3mpfs
    started: datetime | None = None  # as the owner recorded it
    lease_age: timedelta | None = None  # of its entry, renewed by its mount; None: unknown

    def state(self) -> str:
        """"live", "dead" or "unknown" (an entry of s3mpfs before leases, elsewhere)."""
        assert self.owner is not None
        alive = self.owner.alive()
        if alive is not None:
            return "live" if alive else "dead"
        if self.owner.pid_ns and self.lease_age is not None:  # its mount renews it
            return "live" if self.lease_age <= EXPIRES_AFTER else "dead"
        return "unknown"

    def age(self, now: datetime | None = None) -> timedelta:
        return (now or datetime.now(UTC)) - (self.started or self.upload.initiated)


class UploadRegistry:
    def __init__(self, store: S3Store, prefix: str, owner: Owner | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.owner = owner or Owner.this_process()
        self._mine: dict[str, bytes] = {}  # entries of this mount's pending uploads

    async def keep_renewed(self) -> None:
        """Write this mount's entries again every RENEW_EVERY seconds, for the mount's
        lifetime: their age tells other mounts, on any host, that the uploads are alive.
        A failed renewal is logged and tried again at the next one."""
        while True:
            await trio.sleep(RENEW_EVERY)
            for upload_id, body in list(self._mine.items()):
                try:
                    await self.store.put_plain(self._entry_key(upload_id), body)
                    if upload_id not in self._mine:  # ended meanwhile: leave nothing
                        await self.store.delete(self._entry_key(upload_id))
                except Exception as exc:
                    log.warning("could not renew the registry entry of upload %s (%s): "
                                "other mounts take it for abandoned if this lasts %d "
                                "minutes", upload_id, describe(exc),
                                EXPIRES_AFTER.seconds // 60)

    def _entry_key(self, upload_id: str) -> str:
        return f"{self.prefix}{REGISTRY_DIR}/uploads/{quote(upload_id, safe='')}.json"

    async def register(self, key: str, upload_id: str) -> None:
        body = json.dumps({"key": key, "upload_id": upload_id, **asdict(self.owner),
                           "started": datetime.now(UTC).isoformat()}).encode()
        await self.store.put_plain(self._entry_key(upload_id), body)
        self._mine[upload_id] = body

    async def unregister(self, upload_id: str) -> None:
        self._mine.pop(upload_id, None)
        try:
            await self.store.delete(self._entry_key(upload_id))
        except Exception as exc:  # a leftover entry is swept later; never fail a file
            log.warning("could not remove registry entry of upload %s: %s", upload_id,
                        describe(exc))

    async def pending(self) -> list[Registered]:
        """Every pending upload under the prefix, with its s3mpfs owner if it has one."""
        uploads = await self.store.pending_uploads(self.prefix)
        entries = f"{self.prefix}{REGISTRY_DIR}/uploads/"
        leases = await ages(self.store, f"{self.prefix}{REGISTRY_DIR}/", entries) \
            if uploads else {}
        result = []
        for upload in uploads:
            owner, started = None, None
            try:
                data = json.loads(await self.store.get_object(self._entry_key(upload.upload_id)))
                owner = Owner(data["host"], data["boot_id"], int(data["pid"]), data["mount_id"],
                              data.get("pid_ns", ""))
                started = datetime.fromisoformat(data["started"]) if "started" in data else None
            except Exception:  # no entry (another tool's upload) or an unreadable one
                pass
            lease = leases.get(self._entry_key(upload.upload_id))
            result.append(Registered(upload, owner, started, lease))
        return result

    async def abort(self, item: Registered, why: str) -> bool:
        try:
            await self.store.abort_multipart(item.upload.key, item.upload.upload_id)
        except Exception as exc:
            log.error("could not abort upload of %s (%s): %s", item.upload.key, why,
                      describe(exc))
            return False
        if item.owner is not None:
            await self.unregister(item.upload.upload_id)
        log.warning("aborted pending upload of %s started %s (%s)", item.upload.key,
                    item.upload.initiated.isoformat(timespec="seconds"), why)
        return True

    async def sweep(self) -> int:
        """At mount: abort s3mpfs uploads that nobody can finish any more. Never touches
        another tool's uploads, nor one whose mount is alive (its process here, or its
        entry renewed lately) or may be (an entry from before renewals, younger than a
        day)."""
        entries = await self._entry_ids()  # before the uploads: see _drop_leftovers
        items = await self.pending()
        aborted = 0
        for item in items:
            why = stale_reason(item)
            if why and await self.abort(item, why):
                aborted += 1
        await self._drop_leftovers(entries, {item.upload.upload_id for item in items})
        return aborted

    async def _entry_ids(self) -> set[str]:
        listing = await self.store.list(f"{self.prefix}{REGISTRY_DIR}/uploads/", delimiter=None)
        return {unquote(info.key.rpartition("/")[2].removesuffix(".json"))
                for info in listing.objects}

    async def _drop_leftovers(self, entries: set[str], pending: set[str]) -> None:
        """Entries whose upload is no longer pending (completed or aborted after its
        process died) are garbage. Entries are listed before the uploads, so an entry
        registered in between cannot be mistaken for one: its upload already existed."""
        for upload_id in entries - pending:
            await self.unregister(upload_id)


def stale_reason(item: Registered, older_than: timedelta = STALE_AFTER) -> str | None:
    """Why an s3mpfs upload can be aborted safely, or None if it must be left alone."""
    if item.owner is None:
        return None
    state = item.state()
    if state == "dead" and item.owner.alive() is False:
        return f"its process is gone ({item.owner.describe()})"
    if state == "dead":
        age = int(item.lease_age.total_seconds()) if item.lease_age else 0
        return f"its mount stopped renewing it {age} s ago ({item.owner.describe()})"
    if state == "unknown" and item.age() > older_than:
        return f"older than {older_than} ({item.owner.describe()})"
    return None
