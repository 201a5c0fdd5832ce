"""What the mount has done since it started, and what it is doing now.

`MountStats` is the one object the request paths report to: `s3/store.py` wraps each S3
request in `counted` (requests by operation, retries botocore made, errors, parts in
flight and retried per key), `s3/routing.py` reports the requests it sends through awscrt to
`record`, `write/sending.py` calls `upload_ended` once per file. Requests run in worker threads,
so every counter is updated under a lock. `snapshot` turns those counters and the live
`Upload` objects (read, never changed) into the plain dict that
`s3mpfs status`, its `--json` and the Prometheus endpoint all show. No I/O here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sized
from typing import Any, Protocol, TypeVar

from ..errors import describe, s3_error_code

T = TypeVar("T")


class Upload(Protocol):
    """What stats reads of a live upload (write/upload.py's `Upload`), never changes."""

    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def bytes_written(self) -> int: ...
    @property
    def parts(self) -> Sized: ...  # the parts sent so far
    @property
    def error(self) -> BaseException | None: ...
    @property
    def phase(self) -> str: ...  # writing, completing or failed
    @property
    def result(self) -> object: ...  # not None once committed
    @property
    def abandoned(self) -> bool: ...  # its file was deleted: ended as asked, not failed

PART_OPERATIONS = ("UploadPart", "UploadPartCopy")  # tracked per key, for uploads' progress
READ_OPERATIONS = ("GetObject",)  # their retries are read retries
WRITE_OPERATIONS = ("PutObject", "UploadPart", "UploadPartCopy", "CreateMultipartUpload",
                    "CompleteMultipartUpload", "CopyObject")  # their retries: write retries
# Answers that are part of normal work (a lookup of a name that does not exist, a
# condition that did its job), not errors worth counting.
_NOT_ERRORS = {"404", "NoSuchKey", "NotFound", "PreconditionFailed", "412", "NoSuchUpload"}
RATE_WINDOW = 5.0  # seconds over which an upload's current rate is measured


def operation_name(method: str) -> str:
    """boto3's method name -> S3's operation name: 'list_objects_v2' -> 'ListObjectsV2'."""
    return "".join(word[:1].upper() + word[1:] for word in method.split("_"))


class MountStats:
    """Counters of one mount. Thread-safe: requests report from worker threads."""

    def __init__(self) -> None:
        self.started = time.time()
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # by S3 operation
        self.retries = 0  # attempts repeated, across all requests
        self._retries_by: Counter[str] = Counter()  # attempts repeated, by S3 operation
        self.read_resumes = 0  # GET bodies resumed after breaking off (s3/ranged.py)
        self.request_errors = 0  # requests that failed after their retries
        self.last_request_error = ""
        self.files_committed = 0
        self.bytes_committed = 0
        self.files_failed = 0
        self.last_failure = ""  # "KEY: what went wrong" of the last failed upload
        self._in_flight: Counter[str] = Counter()  # part requests in flight, by key
        self._retried: Counter[str] = Counter()  # part retries, by key
        self._sent: Counter[str] = Counter()  # bytes of parts S3 has acknowledged, by key
        self._history: dict[str, deque[tuple[float, int]]] = {}  # (time, bytes) by key

    # -- reported by s3/store.py (worker threads) ------------------------------------------

    def counted(self, fn: Callable[..., T], size: int = 0) -> Callable[..., T]:
        """`fn` (a boto3 client method), counting the request it makes. `size`: the bytes
        of its body, counted as sent once S3 acknowledges them."""
        operation = operation_name(fn.__name__)
        per_key = operation in PART_OPERATIONS

        def call(*args: Any, **kwargs: Any) -> T:
            key = str(kwargs.get("Key", ""))
            with self._lock:
                self.requests[operation] += 1
                if per_key:
                    self._in_flight[key] += 1
            try:
                answer = fn(*args, **kwargs)
            except Exception as exc:
                self._answered(operation, key, getattr(exc, "response", None), 0, exc)
                raise
            self._answered(operation, key, answer, size, None)
            return answer

        return call

    def request_sent(self, operation: str, key: str) -> None:
        """A request made without `counted` (s3/routing.py's, through awscrt) is sent:
        counted, and in flight (a part shows in `s3mpfs status`) until `answered`."""
        with self._lock:
            self.requests[operation] += 1
            if operation in PART_OPERATIONS:
                self._in_flight[key] += 1

    def answered(self, operation: str, key: str, answer: Any, exc: Exception | None,
                 size: int = 0) -> None:
        """The end of a request `request_sent` reported: answered (`answer`, which carries
        its retries as boto3's do) or failed (`exc`), counted as `counted` counts it."""
        if exc is not None:
            answer = getattr(exc, "response", None) or answer
        self._answered(operation, key, answer, 0 if exc else size, exc)

    def read_retried(self) -> None:
        """A GET's body broke off (or failed its check) and is fetched again."""
        with self._lock:
            self.read_resumes += 1
            self.retries += 1

    def _answered(self, operation: str, key: str, answer: Any, size: int,
                  exc: Exception | None) -> None:
        per_key = operation in PART_OPERATIONS
        meta = answer.get("ResponseMetadata", {}) if isinstance(answer, dict) else {}
        retries = int(meta.get("RetryAttempts") or 0)
        with self._lock:
            self.retries += retries
            self._retries_by[operation] += retries
            if per_key:
                self._in_flight[key] -= 1
                if self._in_flight[key] <= 0:
                    del self._in_flight[key]
                if retries:
                    self._retried[key] += retries
                if exc is None:
                    self._sent[key] += size
            if exc is not None and s3_error_code(exc) not in _NOT_ERRORS:
                self.request_errors += 1
                self.last_request_error = describe(exc)  # secret-free by design

    # -- reported by write/sending.py (the trio thread) ----------------------------------------

    def upload_ended(self, upload: Upload) -> None:
        """An upload's driver is done: committed, failed, or discarded (nothing to do)."""
        with self._lock:
            if upload.error is not None and not upload.abandoned:
                self.files_failed += 1
                self.last_failure = str(upload.error)
            elif upload.result is not None:
                self.files_committed += 1
                self.bytes_committed += upload.size
            for table in (self._retried, self._sent):
                table.pop(upload.key, None)
            self._history.pop(upload.key, None)

    # -- read by run/control.py and run/metrics.py -----------------------------------------------

    def sample(self, uploads: Iterable[Upload], now: float | None = None) -> None:
        """Remember each upload's bytes written now (called every second), for its rate."""
        now = time.monotonic() if now is None else now
        for upload in uploads:
            history = self._history.setdefault(upload.key, deque())
            history.append((now, upload.bytes_written))
            while len(history) > 2 and now - history[0][0] > RATE_WINDOW:
                history.popleft()

    def _rate(self, key: str) -> float:
        history = self._history.get(key)
        if not history or len(history) < 2:
            return 0.0
        (t0, b0), (t1, b1) = history[0], history[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def snapshot(self, uploads: Iterable[Upload], *, prefix: str = "",
                 memory: tuple[int, int] = (0, 0), pending_attributes: int = 0,
                 mount: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything `s3mpfs status` shows, as plain JSON-able data."""
        with self._lock:
            files = []
            for upload in sorted(uploads, key=lambda u: u.key):
                files.append({
                    "name": upload.key.removeprefix(prefix),
                    "bytes_written": upload.bytes_written,
                    "bytes_sent": self._sent.get(upload.key, 0),
                    "parts_sent": len(upload.parts),
                    "parts_in_flight": self._in_flight.get(upload.key, 0),
                    "parts_retried": self._retried.get(upload.key, 0),
                    "rate": round(self._rate(upload.key), 1),
                    "failed": str(upload.error) if upload.error is not None else None,
                    "phase": upload.phase,
                })
            totals = {
                "files_committed": self.files_committed,
                "bytes_committed": self.bytes_committed,
                "files_failed": self.files_failed,
                "last_failure": self.last_failure,
                "requests": dict(sorted(self.requests.items())),
                "retries": self.retries,
                "read_retries": self.read_resumes + sum(
                    self._retries_by[op] for op in READ_OPERATIONS),
                "write_retries": sum(self._retries_by[op] for op in WRITE_OPERATIONS),
                "request_errors": self.request_errors,
                "last_request_error": self.last_request_error,
                "memory_in_use": memory[0],
                "memory_limit": memory[1],
                "pending_attribute_writes": pending_attributes,
                "uploads_in_flight": len(files),
            }
        return {"mount": {**(mount or {}), "uptime": round(time.time() - self.started, 1)},
                "uploads": files, "totals": totals}
