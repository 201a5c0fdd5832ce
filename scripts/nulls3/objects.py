"""Object operations: PutObject, CopyObject, GetObject/HeadObject (Range, If-Match), and the
object headers kept, echoed and checked."""

from __future__ import annotations

import re
import time
from urllib.parse import unquote
from xml.sax.saxutils import escape

from .store import KEEP_BODY, KEEP_BOOKKEEPING, PATTERN2, PATTERN_SIZE, Bucket, Obj
from .wire import HttpConnection, HttpError, http_date, iso_date

OBJECT_HEADERS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires", "x-amz-server-side-encryption",
                  "x-amz-server-side-encryption-aws-kms-key-id",
                  "x-amz-server-side-encryption-bucket-key-enabled",
                  "x-amz-server-side-encryption-customer-algorithm",
                  "x-amz-server-side-encryption-customer-key-md5",
                  "x-amz-storage-class", "x-amz-object-lock-mode",
                  "x-amz-object-lock-retain-until-date", "x-amz-object-lock-legal-hold",
                  "x-amz-website-redirect-location", "x-amz-tagging")


class ObjectOps(HttpConnection):
    """The object operations of a connection, and the helpers the others share."""

    def _bucket(self, name: str) -> Bucket:
        bucket = self.state.buckets.get(name)
        if bucket is None:
            raise HttpError(404, "NoSuchBucket", "The specified bucket does not exist")
        return bucket

    # -- objects -----------------------------------------------------------------------

    def _object_headers(self, headers: dict[str, str]) -> dict[str, str]:
        kept = {k: v for k, v in headers.items()
                if k.startswith("x-amz-meta-") or k in OBJECT_HEADERS}
        kept.setdefault("content-type", "binary/octet-stream")
        return kept

    @staticmethod
    def _checksums(headers: dict[str, str], trailers: dict[str, str]) -> dict[str, str]:
        found = {k: v for k, v in headers.items()
                 if k.startswith("x-amz-checksum-") and k != "x-amz-checksum-type"}
        found.update((k, v) for k, v in trailers.items() if k.startswith("x-amz-checksum-"))
        return found

    @staticmethod
    def _echo(stored: dict[str, str]) -> list[tuple[str, str]]:
        return [(k, v) for k, v in stored.items()
                if k.startswith("x-amz-server-side-encryption")]

    def _check_absent(self, bucket: Bucket, key: str, headers: dict[str, str]) -> None:
        if headers.get("if-none-match", "").strip() == "*" and key in bucket.objects:
            raise HttpError(412, "PreconditionFailed", "At least one of the pre-conditions "
                            "you specified did not hold")

    def put_object(self, bucket: Bucket, key: str, headers: dict[str, str]) -> None:
        self._check_absent(bucket, key, headers)
        want_md5 = True  # small bodies only (see MD5_LIMIT); large ones get a fake ETag
        # s3mpfs's bookkeeping (stat indexes, upload registry) is read back: kept whole.
        keep = KEEP_BOOKKEEPING if key.startswith(".s3mpfs/") or "/.s3mpfs/" in key \
            else KEEP_BODY
        size, body, md5, trailers = self._body(headers, keep, want_md5)
        etag = f'"{md5}"' if md5 else self.state.fake_etag()
        stored = self._object_headers(headers)
        checksums = self._checksums(headers, trailers)
        stored.update(checksums)
        with self.state.lock:
            self._check_absent(bucket, key, headers)
            bucket.put(key, Obj(size, etag, time.time(), stored, body))
        self._send(200, [("ETag", etag), *checksums.items(), *self._echo(stored)])

    def _source(self, headers: dict[str, str]) -> tuple[Obj, str]:
        src = unquote(headers["x-amz-copy-source"].split("?", 1)[0]).lstrip("/")
        sb, _, sk = src.partition("/")
        obj = self._bucket(sb).objects.get(sk)
        if obj is None:
            raise HttpError(404, "NoSuchKey", "The specified key does not exist.")
        match = headers.get("x-amz-copy-source-if-match")
        if match and match.strip() != obj.etag:
            raise HttpError(412, "PreconditionFailed")
        return obj, sk

    def copy_object(self, bucket: Bucket, key: str, headers: dict[str, str]) -> None:
        self._body(headers)
        src, _ = self._source(headers)
        if headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE":
            stored = self._object_headers(headers)
        else:
            stored = {k: v for k, v in src.headers.items()}
            stored.update((k, v) for k, v in headers.items() if k in OBJECT_HEADERS)
        now = time.time()
        obj = Obj(src.size, src.etag, now, stored, src.body)
        with self.state.lock:
            bucket.put(key, obj)
        self._xml(200, f"<CopyObjectResult><LastModified>{iso_date(now)}</LastModified>"
                  f"<ETag>{escape(src.etag)}</ETag></CopyObjectResult>", self._echo(stored))

    def get_object(self, method: str, bucket: Bucket, key: str,
                   headers: dict[str, str]) -> None:
        obj = bucket.objects.get(key)
        if obj is None:
            raise HttpError(404, "NoSuchKey", "The specified key does not exist.")
        match = headers.get("if-match")
        if match and match.strip() not in (obj.etag, "*"):
            raise HttpError(412, "PreconditionFailed", "At least one of the pre-conditions "
                            "you specified did not hold")
        none_match = headers.get("if-none-match")
        if none_match and none_match.strip() in (obj.etag, "*"):
            return self._send(304, [("ETag", obj.etag)])
        out = [("ETag", obj.etag), ("Last-Modified", http_date(obj.mtime)),
               ("Accept-Ranges", "bytes")]
        out += [(k, v) for k, v in obj.headers.items()
                if not k.startswith(("x-amz-checksum-", "x-nulls3-"))
                and (k != "x-amz-storage-class" or v != "STANDARD")]
        start, end, status = 0, obj.size, 200
        wanted = headers.get("range", "")
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", wanted)
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)) + 1, obj.size) if m.group(2) else obj.size
            else:
                start = max(obj.size - int(m.group(2)), 0)
            if start >= obj.size and obj.size > 0:
                raise HttpError(416, "InvalidRange", "The requested range is not satisfiable")
            status = 206
            out.append(("Content-Range", f"bytes {start}-{end - 1}/{obj.size}"))
        length = max(end - start, 0)
        if method == "HEAD":
            return self._send(status, out, length=length)
        if obj.body is not None:
            return self._send(status, out, obj.body[start:end])
        self._send(status, out, length=length)
        pos = start
        while pos < end:
            offset = pos % PATTERN_SIZE
            n = min(end - pos, PATTERN_SIZE)
            self.sock.sendall(PATTERN2[offset:offset + n])
            pos += n
