"""The exception tree of s3mpfs and the one place that knows errno numbers.

Every failure that can reach a FUSE caller is an `S3mpfsError` carrying the errno
the caller will see. `errno_for` turns anything else (botocore errors included)
into an errno, so `fs/operations.py` can map any exception without knowing S3.
"""

from __future__ import annotations

import errno

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)


class S3mpfsError(Exception):
    """Base class: an error with the errno a FUSE caller should see."""

    errno: int = errno.EIO


class ConfigError(S3mpfsError):
    """A bad mount option or command-line argument (message is shown to the user)."""

    errno = errno.EINVAL


class NotFound(S3mpfsError):
    errno = errno.ENOENT


class Exists(S3mpfsError):
    errno = errno.EEXIST


class NotEmpty(S3mpfsError):
    errno = errno.ENOTEMPTY


class NotADirectory(S3mpfsError):
    errno = errno.ENOTDIR


class IsADirectory(S3mpfsError):
    errno = errno.EISDIR


class NameTooLong(S3mpfsError):
    errno = errno.ENAMETOOLONG


class InvalidName(S3mpfsError):
    """A name S3 cannot store (not UTF-8)."""

    errno = errno.EILSEQ


class Gone(S3mpfsError):
    """The file was deleted before its data reached S3: there is nothing to read."""

    errno = errno.EIO


class Stale(S3mpfsError):
    """The kernel reached a file through an entry that no longer names it (a file whose
    commit failed, never stored, and so forgotten): the kernel looks the name up again
    and retries (ESTALE)."""

    errno = errno.ESTALE


class NoAttribute(S3mpfsError):
    """No such extended attribute."""

    errno = errno.ENODATA


class NoSpace(S3mpfsError):
    """More than S3 can store (user metadata is limited to 2 KB per object)."""

    errno = errno.ENOSPC


class FileTooLarge(S3mpfsError):
    errno = errno.EFBIG


class Unsupported(S3mpfsError):
    """An operation s3mpfs does not support (hard links, random writes, ...)."""

    errno = errno.EOPNOTSUPP


class InvalidWrite(S3mpfsError):
    """A write into a part already uploaded by a file that streams (opened write-only,
    no spool copy of its sent parts)."""

    errno = errno.EINVAL


class SpoolFull(S3mpfsError):
    """A write out of order needs local spool space (`cache_size`) that is used up or
    disabled; nothing was written."""

    errno = errno.ENOSPC


class UploadFailed(S3mpfsError):
    """An upload failed and was aborted; the file's previous version is intact."""

    errno = errno.EIO


class ObjectArchived(S3mpfsError):
    """The object is in an archive storage class and must be restored before reading."""

    errno = errno.EIO


class ReadFailed(S3mpfsError):
    """A read failed for good (retries spent, or the version read is gone); the mount
    log has one line naming the file and why."""

    errno = errno.EIO


class ReadOnly(S3mpfsError):
    errno = errno.EROFS


# S3 error codes that mean something more specific than EIO to a caller.
_CODE_ERRNO = {
    "NoSuchKey": errno.ENOENT,
    "NotFound": errno.ENOENT,
    "404": errno.ENOENT,
    "NoSuchBucket": errno.ENOENT,
    "AccessDenied": errno.EACCES,
    "403": errno.EACCES,
    "InvalidObjectState": errno.EIO,
    "EntityTooLarge": errno.EFBIG,
    "KeyTooLongError": errno.ENAMETOOLONG,
}


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError, else None."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


def errno_for(exc: BaseException) -> int:
    """The errno a FUSE caller should see for any exception."""
    if isinstance(exc, S3mpfsError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    code = s3_error_code(exc)
    if code is not None:
        return _CODE_ERRNO.get(code, errno.EIO)
    return errno.EIO


# What a person can do about an S3 error, by code.
_HINTS = {
    "NotImplemented": "this server does not implement {operation}",
    "InvalidStorageClass": "this server does not offer the storage class asked for "
                           "(storage_class=)",
    "InvalidEncryptionAlgorithmError": "this server does not support the encryption asked "
                                       "for (sse=)",
    "KMS.NotFoundException": "the KMS key does not exist (sse_kms_key_id=)",
    "AccessDenied": "check the credentials' permissions for this bucket and key",
    "PreconditionFailed": "the object changed meanwhile",
    "SlowDown": "the server is throttling requests",
}
# Refusals that, for these operations, usually mean an option the server does not take.
_OPTION_HINT = ("the server refused the storage class, encryption, ACL or Object Lock "
                "options of new objects; check storage_class=, sse=, acl=, object_lock_*")
_CREATING = {"PutObject", "CreateMultipartUpload", "CopyObject"}


def root_cause(exc: BaseException) -> BaseException:
    """The first real error inside trio's exception groups (not a sibling's Cancelled)."""
    while isinstance(exc, BaseExceptionGroup):
        causes = [e for e in exc.exceptions if type(e).__name__ != "Cancelled"]
        exc = (causes or list(exc.exceptions))[0]
    return exc


def describe(exc: BaseException) -> str:
    """A one-line, secret-free description of an exception for logs and the CLI:
    operation, S3 error code, HTTP status, the server's message and what to do."""
    exc = root_cause(exc)
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(err.get("Code") or "Error")
        status = meta.get("HTTPStatusCode")
        operation = exc.operation_name or "request"
        text = f"{operation}: {code} (HTTP {status})"
        message = str(err.get("Message") or "")
        if message and message not in ("None", code):
            text += f": {message}"
        hint = _HINTS.get(code)
        if hint is None and status == 501:
            hint = _HINTS["NotImplemented"]
        if hint is None and code in ("InvalidArgument", "InvalidRequest") \
                and operation in _CREATING:
            hint = _OPTION_HINT
        if hint:
            text += f" ({hint.format(operation=operation)})"
        retries = meta.get("RetryAttempts") or 0
        return f"{text}, after {retries} retries" if retries else text
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found"
    if isinstance(exc, BotoConnectionError | BotoCoreError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
