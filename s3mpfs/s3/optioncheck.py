"""Whether the server stores objects the way the mount's options ask, checked at mount.

A mount whose every file would fail must not start: shells ignore close()'s EIO, so
`echo x > f` would return 0 and the file would simply not be there. So before mounting,
a writable mount that asks for encryption, a storage class or an ACL PUTs one small
object of its own with exactly those parameters (Object Lock aside: a locked object could
not be deleted again), HEADs it and deletes it:

- refused (Ceph RGW answers `sse=aws:kms:dsse` with 400 InvalidArgument): the option is
  found by sending the parameters of one option at a time, and the mount is refused with
  one line naming it and the server's answer (`OptionRefused`);
- accepted but not done: encryption that is not reported back would fail every file's
  check after upload (the mount is refused too); a storage class stored as another one
  only costs money, so it is one ERROR line and the mount goes on.

Nothing is sent when the options ask for none of these, and failures that are not the
options' (the server refuses even a plain PUT) are left to the mount's other probe.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import trio
from botocore.exceptions import ClientError

from ..config import MountConfig
from ..errors import S3mpfsError, describe
from .store import PROBE_DIR, S3Store

log = logging.getLogger(__name__)


class OptionRefused(S3mpfsError):
    """The server refuses (or silently drops) what a mount option asks for."""


def option_groups(config: MountConfig, params: dict[str, Any]) -> list[tuple[str, set[str]]]:
    """(how the user wrote the option, the request parameters it sets), per option set."""
    named = [
        (f"sse={config.sse}", {"ServerSideEncryption", "SSEKMSKeyId",
                               "SSEKMSEncryptionContext", "BucketKeyEnabled"}),
        ("sse_c_key_file=", {"SSECustomerAlgorithm", "SSECustomerKey"}),
        (f"storage_class={config.storage_class}", {"StorageClass"}),
        (f"acl={config.acl}", {"ACL"}),
    ]
    return [(name, keys & params.keys()) for name, keys in named if keys & params.keys()]


async def check_options(store: S3Store, config: MountConfig) -> None:
    """Raise OptionRefused if the server refuses what the options ask of new objects;
    log one ERROR line where it stores them otherwise than asked but they still work."""
    params = {k: v for k, v in store.params.new_object({}).items()
              if k not in ("Metadata", "ObjectLockMode", "ObjectLockRetainUntilDate",
                           "ObjectLockLegalHoldStatus")}
    groups = option_groups(config, params)
    if not groups:
        return
    key = f"{config.prefix}{PROBE_DIR}options-{uuid.uuid4().hex}"
    refusal = await _refusal(store, key, params, keep=True)
    if refusal is not None:
        await _blame(store, key, params, groups, refusal)
        return
    try:
        stored = await store.head(key)
    finally:
        with trio.CancelScope(shield=True):
            await store.delete(key)
    if config.sse and stored.sse != config.sse:
        raise OptionRefused(
            f"sse={config.sse}: the server accepted it but did not encrypt a test object "
            f"(it reports {stored.sse or 'no encryption'}); every file would fail its "
            "encryption check")
    if config.storage_class and stored.storage_class != config.storage_class:
        log.error("storage_class=%s: the server accepted it but stores new objects as %s",
                  config.storage_class, stored.storage_class or "STANDARD")


async def _blame(store: S3Store, key: str, params: dict[str, Any],
                 groups: list[tuple[str, set[str]]], refusal: ClientError) -> None:
    """Find which option the server refuses: a PUT without any of them, then (if there
    are several) with one at a time. Nothing is blamed if even the plain PUT fails."""
    every = set().union(*(keys for _, keys in groups))
    bare = {k: v for k, v in params.items() if k not in every}
    if await _refusal(store, key, bare) is not None:
        return
    if len(groups) > 1:
        for name, keys in groups:
            alone = await _refusal(store, key, {**bare, **{k: params[k] for k in keys}})
            if alone is not None:
                raise OptionRefused(f"{name}: the server refuses it ({describe(alone)})")
    names = ", ".join(name for name, _ in groups)
    them = "it" if len(groups) == 1 else "them together"
    raise OptionRefused(f"{names}: the server refuses {them} ({describe(refusal)})")


async def _refusal(store: S3Store, key: str, params: dict[str, Any], *,
                   keep: bool = False) -> ClientError | None:
    """The server's answer if it refuses a PUT with these parameters; None if it stores
    it (deleted again unless `keep`)."""
    try:
        await store.put_unchecked(key, {**params, "ContentType": "application/octet-stream"})
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if 400 <= status < 500 or status == 501:
            return exc
        raise  # the server's trouble (5xx), not a refusal
    if not keep:
        with trio.CancelScope(shield=True):
            await store.delete(key)
    return None
