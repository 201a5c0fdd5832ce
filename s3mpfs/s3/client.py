"""The boto3 S3 client: its session, its configuration, and the signer of bodies.

One session per mount (`new_session`): the clients made from it share the service model
it loaded (the mount's bucket check and its store: 60 ms and 30,000 objects of start-up
saved). s3/store.py is the only module that calls the client.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import boto3
from botocore import auth as botocore_auth
from botocore.config import Config

from ..config import MountConfig


def new_session(config: MountConfig) -> Any:
    """A boto3 session for the mount's profile (see above)."""
    return boto3.session.Session(profile_name=config.profile)


def make_client(config: MountConfig, *, pool: int = 10, check_mode: bool = False,
                session: Any = None) -> Any:
    """The boto3 S3 client, from `session` (else a new one). `check_mode` gives short
    timeouts and one retry, for the mount-time reachability check that must answer
    within seconds."""
    client_config = Config(
        region_name=config.region,
        max_pool_connections=max(pool, 10),
        connect_timeout=3 if check_mode else config.connect_timeout,
        read_timeout=5 if check_mode else config.read_timeout,
        retries={"mode": "standard", "total_max_attempts": 2 if check_mode else config.retries},
        s3={"addressing_style": "path"} if config.endpoint_url else None,
        # s3/integrity.py chooses every request's checksum; ranged reads cannot be checked
        # against a whole object's checksum (and copies may report a wrong one).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = session or new_session(config)
    client = session.client("s3", endpoint_url=config.endpoint_url, config=client_config)
    if _HASHED_SIGNER in botocore_auth.AUTH_TYPE_MAPS:
        for operation in ("UploadPart", "PutObject"):
            client.meta.events.register_first(f"choose-signer.s3.{operation}", _hash_in_thread)
    return client


class _PayloadHashedByHashlib(botocore_auth.AUTH_TYPE_MAPS["s3v4"]):  # type: ignore[misc]
    """botocore's S3 SigV4 signer, except that the body's SHA256 (signed over plain http)
    is computed by hashlib, which releases the GIL, rather than inside awscrt's signer,
    which holds it: 45 % of the GIL time of a 1 GiB write over http went there."""

    def _get_existing_sha256(self, request: Any) -> str | None:
        body = request.body
        if isinstance(body, io.BytesIO) and self._should_sha256_sign_payload(request):
            return hashlib.sha256(body.getvalue()).hexdigest()  # the bytes, shared: no copy
        return None


_HASHED_SIGNER = "s3v4-hashlib"
if hasattr(_PayloadHashedByHashlib, "_get_existing_sha256") and hasattr(
        _PayloadHashedByHashlib, "_should_sha256_sign_payload"):  # the awscrt signer
    botocore_auth.AUTH_TYPE_MAPS[_HASHED_SIGNER] = _PayloadHashedByHashlib


def _hash_in_thread(signature_version: Any, signing_name: str = "s3", **_: Any) -> str | None:
    """choose-signer: plain SigV4 for S3 ("v4" from the operation's auth trait, "s3v4"
    otherwise) is signed by _PayloadHashedByHashlib; anything else is left to botocore."""
    if signing_name == "s3" and signature_version in ("v4", "s3v4"):
        return _HASHED_SIGNER
    return None
