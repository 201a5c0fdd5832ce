#!/usr/bin/env python3
"""A local S3 endpoint that keeps no data: the client, not the server, is what gets measured.

    python scripts/nulls3.py [--port 0] [--tls CERT.pem KEY.pem] [--delay-ms 0]

It prints its port on stdout once listening and serves until stdin closes (or forever with
--forever). Path-style addressing only; any credentials and signature are accepted.

What it keeps: per bucket, per key, the size, the ETag, LastModified and the headers that
describe the object (x-amz-meta-*, Content-Type, encryption, storage class, checksums), so
that HEAD, listings and metadata round trips (rsync, ls -l) behave as on S3. Bodies are read
and dropped, except small ones (at most KEEP_BODY bytes: symlinks, directory markers,
bookkeeping objects), which are kept so that reading them back gives what was written.
Other GETs are served from a fixed byte pattern (byte i of an object is PATTERN[i % len]),
so read-back of large objects is not byte-exact; use `pattern_bytes()` to check it.

ETags: the MD5 of the body for bodies of at most MD5_LIMIT bytes (rclone checks it on small
uploads) or when the client sends Content-MD5; otherwise a cheap fake of the same shape.
A multipart object's ETag is computed from its parts' ETags as S3 does (s3mpfs checks it).
Checksums sent by the client (x-amz-checksum-* headers or aws-chunked trailers) are echoed,
not verified.

Implemented: ListBuckets, Create/Head/DeleteBucket, GetBucketLocation/Versioning (fixed
answers), PutBucketVersioning (no-op), PutObject, CopyObject, HeadObject, GetObject (Range,
If-Match), DeleteObject, DeleteObjects, ListObjects (v1 and v2, delimiter, pagination,
encoding-type=url), ListObjectVersions (current versions), CreateMultipartUpload,
UploadPart, UploadPartCopy, ListParts, CompleteMultipartUpload, AbortMultipartUpload,
ListMultipartUploads. One thread per connection, HTTP/1.1 keep-alive, Expect: 100-continue,
chunked and aws-chunked bodies.

--delay-ms N adds N ms before every answer (a round trip to a distant server).
"""

from __future__ import annotations

import argparse
import bisect
import email.utils
import hashlib
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote
from xml.sax.saxutils import escape

KEEP_BODY = 1024
MD5_LIMIT = 1024 * 1024
PATTERN_SIZE = 1 << 20
PATTERN = bytes(((i * 131) ^ (i >> 8)) & 0xFF for i in range(PATTERN_SIZE))
PATTERN2 = memoryview(PATTERN + PATTERN)  # any window of PATTERN_SIZE bytes, no wrap
RECV = 1 << 20
OBJECT_HEADERS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires", "x-amz-server-side-encryption",
                  "x-amz-server-side-encryption-aws-kms-key-id",
                  "x-amz-server-side-encryption-bucket-key-enabled",
                  "x-amz-server-side-encryption-customer-algorithm",
                  "x-amz-server-side-encryption-customer-key-md5",
                  "x-amz-storage-class", "x-amz-object-lock-mode",
                  "x-amz-object-lock-retain-until-date", "x-amz-object-lock-legal-hold",
                  "x-amz-website-redirect-location", "x-amz-tagging")


def pattern_bytes(start: int, length: int) -> bytes:
    """The bytes GET serves for [start, start + length) of an object whose body was dropped."""
    out = bytearray()
    while length > 0:
        offset = start % PATTERN_SIZE
        n = min(length, PATTERN_SIZE - offset)
        out += PATTERN[offset:offset + n]
        start, length = start + n, length - n
    return bytes(out)


@dataclass
class Obj:
    size: int
    etag: str
    mtime: float
    headers: dict[str, str]  # lower-case name -> value, replayed on HEAD/GET
    body: bytes | None = None


@dataclass
class Upload:
    bucket: str
    key: str
    headers: dict[str, str]
    initiated: float
    parts: dict[int, tuple[int, str, dict[str, str]]] = field(default_factory=dict)


class Bucket:
    def __init__(self, created: float) -> None:
        self.created = created
        self.objects: dict[str, Obj] = {}
        self.keys: list[str] = []  # sorted

    def put(self, key: str, obj: Obj) -> None:
        if key not in self.objects:
            bisect.insort(self.keys, key)
        self.objects[key] = obj

    def delete(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            i = bisect.bisect_left(self.keys, key)
            if i < len(self.keys) and self.keys[i] == key:
                del self.keys[i]


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, Bucket] = {}
        self.uploads: dict[str, Upload] = {}
        self.counter = 0
        self.counts: dict[str, int] = {}  # requests by S3 operation

    def fake_etag(self) -> str:
        with self.lock:
            self.counter += 1
            n = self.counter
        return '"' + hashlib.md5(f"nulls3-{n}-{time.time()}".encode()).hexdigest() + '"'  # noqa: S324


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message or code


REASONS = {200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified",
           400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
           412: "Precondition Failed", 416: "Requested Range Not Satisfiable",
           500: "Internal Server Error", 501: "Not Implemented"}


def http_date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)


def iso_date(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class Connection:
    """One client connection: requests in order, keep-alive."""

    def __init__(self, server: NullS3, sock: socket.socket) -> None:
        self.server = server
        self.state = server.state
        self.sock = sock
        self.buf = bytearray()
        self.scratch = bytearray(RECV)
        self.view = memoryview(self.scratch)

    # -- reading -----------------------------------------------------------------------

    def _fill(self) -> bool:
        n = self.sock.recv_into(self.view, RECV)
        if not n:
            return False
        self.buf += self.view[:n]
        return True

    def _read_line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if not self._fill():
                raise ConnectionError("closed")

    def _read_exact(self, n: int, keep: bool) -> bytes:
        """Read n body bytes; return them only if `keep` (else drop them)."""
        out = bytearray() if keep else None
        if self.buf:
            take = min(n, len(self.buf))
            if out is not None:
                out += self.buf[:take]
            del self.buf[:take]
            n -= take
        while n > 0:
            got = self.sock.recv_into(self.view, min(n, RECV))
            if not got:
                raise ConnectionError("closed in body")
            if out is not None:
                out += self.view[:got]
            n -= got
        return bytes(out) if out is not None else b""

    def _read_body(self, headers: dict[str, str], keep_limit: int,
                   md5: bool) -> tuple[int, bytes | None, str | None, dict[str, str]]:
        """(decoded size, body if small enough, md5 hex if computed, trailers)."""
        trailers: dict[str, str] = {}
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        aws_chunked = "aws-chunked" in headers.get("content-encoding", "").lower()
        length = int(headers.get("content-length", "0") or 0)
        decoded = headers.get("x-amz-decoded-content-length")
        if not chunked and not aws_chunked:
            keep = length <= max(keep_limit, MD5_LIMIT if md5 else 0)
            data = self._read_exact(length, keep)
            digest = hashlib.md5(data).hexdigest() if md5 and keep else None  # noqa: S324
            return length, (data if length <= keep_limit else None), digest, trailers
        # chunk framing: hex-size[;ext]\r\n data\r\n ... 0\r\n trailer: value\r\n \r\n
        if not chunked:  # aws-chunked inside a Content-Length body: same framing
            pass
        size = 0
        kept = bytearray()
        hasher = hashlib.md5() if md5 else None  # noqa: S324
        while True:
            line = self._read_line()
            n = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if n == 0:
                break
            keep = size + n <= keep_limit or hasher is not None and size + n <= MD5_LIMIT
            data = self._read_exact(n, keep)
            if keep:
                kept += data
                if hasher is not None:
                    hasher.update(data)
            else:
                hasher = None
            size += n
            self._read_line()  # CRLF after the chunk
        while True:
            line = self._read_line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            trailers[name.strip().lower()] = value.strip()
        if decoded is not None:
            size = int(decoded)
        return (size, bytes(kept) if size <= keep_limit else None,
                hasher.hexdigest() if hasher is not None else None, trailers)

    # -- writing -----------------------------------------------------------------------

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes = b"",
              length: int | None = None) -> None:
        if self.server.delay:
            time.sleep(self.server.delay)
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}",
                f"Date: {http_date(time.time())}", "Server: nulls3",
                "x-amz-request-id: 0", "Connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in headers]
        head.append(f"Content-Length: {len(body) if length is None else length}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(data + body if len(body) < 65536 else data)
        if len(body) >= 65536:
            self.sock.sendall(body)

    def _xml(self, status: int, xml: str, extra: list[tuple[str, str]] | None = None) -> None:
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n' + xml).encode()
        self._send(status, [("Content-Type", "application/xml")] + (extra or []), body)

    def _error(self, err: HttpError, method: str, resource: str) -> None:
        if method == "HEAD":
            self._send(err.status, [])
            return
        self._xml(err.status, f"<Error><Code>{err.code}</Code><Message>{escape(err.message)}"
                  f"</Message><Resource>{escape(resource)}</Resource><RequestId>0</RequestId>"
                  "</Error>")

    # -- the loop ----------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while True:
                try:
                    line = self._read_line()
                except (ConnectionError, OSError):
                    return
                if not line:
                    continue
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = self._read_line()
                    if not h:
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                path, _, query = target.partition("?")
                try:
                    self.handle(method, unquote(path), parse_qs(query, keep_blank_values=True),
                                headers)
                except HttpError as err:
                    self._drain(headers)
                    self._error(err, method, path)
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, OSError, ssl.SSLError):
            return
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def _drain(self, headers: dict[str, str]) -> None:
        if headers.get("x-nulls3-drained"):
            return
        if headers.get("content-length") or "chunked" in headers.get("transfer-encoding", ""):
            if headers.get("expect", "").lower() == "100-continue":
                return  # the client waits for 100 Continue: it sends no body after an error
            self._read_body(headers, 0, False)

    def _body(self, headers: dict[str, str], keep_limit: int = 0, md5: bool = False
              ) -> tuple[int, bytes | None, str | None, dict[str, str]]:
        if headers.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        headers["x-nulls3-drained"] = "1"
        return self._read_body(headers, keep_limit, md5)

    def handle(self, method: str, path: str, q: dict[str, list[str]],
               headers: dict[str, str]) -> None:
        parts = path.lstrip("/").split("/", 1)
        bucket_name = parts[0]
        key = parts[1] if len(parts) > 1 else ""
        if not bucket_name and "nulls3-stats" in q:  # the request counts, as JSON
            with self.state.lock:
                body = json.dumps(self.state.counts).encode()
            return self._send(200, [("Content-Type", "application/json")], body)
        op = classify(method, bool(key), q, headers)
        with self.state.lock:
            self.state.counts[op] = self.state.counts.get(op, 0) + 1
        if not bucket_name:
            if method == "GET":
                return self.list_buckets()
            raise HttpError(400, "InvalidRequest")
        if not key:
            return self.bucket_op(method, bucket_name, q, headers)
        bucket = self._bucket(bucket_name)
        if method == "PUT":
            if "partNumber" in q and "uploadId" in q:
                return self.upload_part(bucket, key, q, headers)
            if "x-amz-copy-source" in headers:
                return self.copy_object(bucket, key, headers)
            if q:  # ?tagging, ?acl, ...: accepted and ignored
                self._body(headers)
                return self._send(200, [])
            return self.put_object(bucket, key, headers)
        if method == "POST":
            if "uploads" in q:
                return self.create_upload(bucket_name, key, headers)
            if "uploadId" in q:
                return self.complete_upload(bucket, key, q, headers)
            raise HttpError(501, "NotImplemented")
        if method == "DELETE":
            if "uploadId" in q:
                with self.state.lock:
                    self.state.uploads.pop(q["uploadId"][0], None)
                return self._send(204, [])
            with self.state.lock:
                bucket.delete(key)
            return self._send(204, [])
        if method in ("GET", "HEAD"):
            if "uploadId" in q:
                return self.list_parts(bucket_name, key, q)
            return self.get_object(method, bucket, key, headers)
        raise HttpError(501, "NotImplemented")

    def _bucket(self, name: str) -> Bucket:
        bucket = self.state.buckets.get(name)
        if bucket is None:
            raise HttpError(404, "NoSuchBucket", "The specified bucket does not exist")
        return bucket

    # -- buckets -----------------------------------------------------------------------

    def list_buckets(self) -> None:
        items = "".join(f"<Bucket><Name>{escape(n)}</Name><CreationDate>{iso_date(b.created)}"
                        "</CreationDate></Bucket>" for n, b in sorted(self.state.buckets.items()))
        self._xml(200, "<ListAllMyBucketsResult><Owner><ID>nulls3</ID><DisplayName>nulls3"
                  f"</DisplayName></Owner><Buckets>{items}</Buckets></ListAllMyBucketsResult>")

    def bucket_op(self, method: str, name: str, q: dict[str, list[str]],
                  headers: dict[str, str]) -> None:
        if method == "PUT":
            self._body(headers)
            if not q:
                with self.state.lock:
                    self.state.buckets.setdefault(name, Bucket(time.time()))
            else:
                self._bucket(name)
            return self._send(200, [("Location", f"/{name}")])
        bucket = self._bucket(name)
        if method == "HEAD":
            return self._send(200, [("x-amz-bucket-region", "us-east-1")])
        if method == "DELETE":
            if bucket.objects:
                raise HttpError(409, "BucketNotEmpty")
            with self.state.lock:
                self.state.buckets.pop(name, None)
            return self._send(204, [])
        if method == "POST" and "delete" in q:
            return self.delete_objects(bucket, headers)
        if method != "GET":
            raise HttpError(501, "NotImplemented")
        if "location" in q:
            return self._xml(200, '<LocationConstraint xmlns="http://s3.amazonaws.com/doc/'
                             '2006-03-01/"></LocationConstraint>')
        if "versioning" in q:
            return self._xml(200, '<VersioningConfiguration xmlns="http://s3.amazonaws.com/'
                             'doc/2006-03-01/"/>')
        if "uploads" in q:
            return self.list_uploads(name, q)
        if "versions" in q:
            return self.list_objects(name, bucket, q, versions=True)
        if q.keys() & {"acl", "policy", "lifecycle", "cors", "tagging", "encryption",
                       "object-lock", "logging", "website", "replication", "ownershipControls"}:
            raise HttpError(404, "NoSuchConfiguration")
        return self.list_objects(name, bucket, q)

    def list_objects(self, name: str, bucket: Bucket, q: dict[str, list[str]],
                     versions: bool = False) -> None:
        def arg(k: str, default: str = "") -> str:
            return q.get(k, [default])[0]

        v2 = arg("list-type") == "2"
        prefix, delimiter = arg("prefix"), arg("delimiter")
        max_keys = int(arg("max-keys", "1000") or 1000)
        encode = arg("encoding-type") == "url"
        if v2:
            after = arg("continuation-token") or arg("start-after")
        elif versions:
            after = arg("key-marker")
        else:
            after = arg("marker")

        def enc(k: str) -> str:
            return escape(quote(k, safe="/~") if encode else k)

        with self.state.lock:
            keys = bucket.keys
            i = bisect.bisect_right(keys, after) if after else bisect.bisect_left(keys, prefix)
            contents: list[str] = []
            prefixes: list[str] = []
            last = ""
            truncated = False
            while i < len(keys):
                k = keys[i]
                if not k.startswith(prefix):
                    break
                if len(contents) + len(prefixes) >= max_keys:
                    truncated = True
                    break
                if delimiter:
                    j = k.find(delimiter, len(prefix))
                    if j >= 0:
                        cp = k[:j + len(delimiter)]
                        prefixes.append(cp)
                        last = cp
                        # skip every key under this common prefix
                        i = bisect.bisect_left(keys, cp[:-1] + chr(ord(cp[-1]) + 1))
                        continue
                o = bucket.objects[k]
                sc = o.headers.get("x-amz-storage-class", "STANDARD")
                item = (f"<Key>{enc(k)}</Key>"
                        + ("<VersionId>null</VersionId><IsLatest>true</IsLatest>"
                           if versions else "")
                        + f"<LastModified>{iso_date(o.mtime)}</LastModified>"
                        f"<ETag>{escape(o.etag)}</ETag><Size>{o.size}</Size>"
                        f"<StorageClass>{sc}</StorageClass>"
                        "<Owner><ID>nulls3</ID><DisplayName>nulls3</DisplayName></Owner>")
                contents.append(f"<Version>{item}</Version>" if versions
                                else f"<Contents>{item}</Contents>")
                last = k
                i += 1
            count = len(contents) + len(prefixes)
        cps = "".join(f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>"
                      for p in prefixes)
        common = (f"<Name>{escape(name)}</Name><Prefix>{enc(prefix)}</Prefix>"
                  f"<MaxKeys>{max_keys}</MaxKeys>"
                  + (f"<Delimiter>{enc(delimiter)}</Delimiter>" if delimiter else "")
                  + ("<EncodingType>url</EncodingType>" if encode else "")
                  + f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        ns = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
        if versions:
            nxt = (f"<NextKeyMarker>{enc(last)}</NextKeyMarker><NextVersionIdMarker>null"
                   "</NextVersionIdMarker>") if truncated else ""
            return self._xml(200, f"<ListVersionsResult{ns}>{common}"
                             f"<KeyMarker>{enc(after)}</KeyMarker>{nxt}"
                             f"{''.join(contents)}{cps}</ListVersionsResult>")
        if v2:
            token = (f"<NextContinuationToken>{escape(last)}</NextContinuationToken>"
                     if truncated else "")
            ct = arg("continuation-token")
            extra = f"<ContinuationToken>{escape(ct)}</ContinuationToken>" if ct else ""
            sa = arg("start-after")
            extra += f"<StartAfter>{enc(sa)}</StartAfter>" if sa else ""
            body = (f"<ListBucketResult{ns}>{common}<KeyCount>{count}</KeyCount>{extra}"
                    f"{token}{''.join(contents)}{cps}</ListBucketResult>")
        else:
            nxt = f"<NextMarker>{enc(last)}</NextMarker>" if truncated and delimiter else ""
            body = (f"<ListBucketResult{ns}>{common}<Marker>{enc(after)}</Marker>{nxt}"
                    f"{''.join(contents)}{cps}</ListBucketResult>")
        self._xml(200, body)

    def delete_objects(self, bucket: Bucket, headers: dict[str, str]) -> None:
        _, body, _, _ = self._body(headers, keep_limit=1 << 30)
        keys = [unescape_xml(k) for k in re.findall(r"<Key>(.*?)</Key>", (body or b"").decode())]
        quiet = b"<Quiet>true</Quiet>" in (body or b"")
        with self.state.lock:
            for k in keys:
                bucket.delete(k)
        done = "" if quiet else "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>"
                                        for k in keys)
        self._xml(200, f"<DeleteResult>{done}</DeleteResult>")

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
        size, body, md5, trailers = self._body(headers, KEEP_BODY, want_md5)
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

    # -- multipart ---------------------------------------------------------------------

    def create_upload(self, bucket_name: str, key: str, headers: dict[str, str]) -> None:
        self._body(headers)
        self._bucket(bucket_name)
        upload_id = uuid.uuid4().hex
        stored = self._object_headers(headers)
        if "x-amz-checksum-algorithm" in headers:
            stored["x-nulls3-checksum-algorithm"] = headers["x-amz-checksum-algorithm"]
        with self.state.lock:
            self.state.uploads[upload_id] = Upload(bucket_name, key, stored, time.time())
        extra = [("x-amz-checksum-algorithm", headers["x-amz-checksum-algorithm"])] \
            if "x-amz-checksum-algorithm" in headers else []
        self._xml(200, f"<InitiateMultipartUploadResult><Bucket>{escape(bucket_name)}</Bucket>"
                  f"<Key>{escape(key)}</Key><UploadId>{upload_id}</UploadId>"
                  "</InitiateMultipartUploadResult>", extra + self._echo(stored))

    def _upload(self, q: dict[str, list[str]]) -> Upload:
        upload = self.state.uploads.get(q["uploadId"][0])
        if upload is None:
            raise HttpError(404, "NoSuchUpload", "The specified upload does not exist.")
        return upload

    def upload_part(self, bucket: Bucket, key: str, q: dict[str, list[str]],
                    headers: dict[str, str]) -> None:
        upload = self._upload(q)
        number = int(q["partNumber"][0])
        if "x-amz-copy-source" in headers:
            self._body(headers)
            src, _ = self._source(headers)
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", headers.get("x-amz-copy-source-range", ""))
            size = int(m.group(2)) - int(m.group(1)) + 1 if m else src.size
            etag = self.state.fake_etag()
            with self.state.lock:
                upload.parts[number] = (size, etag, {})
            return self._xml(200, f"<CopyPartResult><LastModified>{iso_date(time.time())}"
                             f"</LastModified><ETag>{escape(etag)}</ETag></CopyPartResult>")
        size, _, md5, trailers = self._body(headers, 0, "content-md5" in headers)
        etag = f'"{md5}"' if md5 else self.state.fake_etag()
        checksums = self._checksums(headers, trailers)
        with self.state.lock:
            upload.parts[number] = (size, etag, checksums)
        self._send(200, [("ETag", etag), *checksums.items(), *self._echo(upload.headers)])

    def list_parts(self, bucket_name: str, key: str, q: dict[str, list[str]]) -> None:
        upload = self._upload(q)
        items = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(e)}</ETag>"
                        f"<Size>{s}</Size><LastModified>{iso_date(upload.initiated)}"
                        "</LastModified></Part>"
                        for n, (s, e, _) in sorted(upload.parts.items()))
        self._xml(200, f"<ListPartsResult><Bucket>{escape(bucket_name)}</Bucket>"
                  f"<Key>{escape(key)}</Key><UploadId>{q['uploadId'][0]}</UploadId>"
                  f"<IsTruncated>false</IsTruncated>{items}</ListPartsResult>")

    def complete_upload(self, bucket: Bucket, key: str, q: dict[str, list[str]],
                        headers: dict[str, str]) -> None:
        upload = self._upload(q)
        _, body, _, _ = self._body(headers, keep_limit=1 << 30)
        numbers = [int(n) for n in re.findall(r"<PartNumber>\s*(\d+)\s*</PartNumber>",
                                              (body or b"").decode())]
        with self.state.lock:
            if q["uploadId"][0] not in self.state.uploads:
                raise HttpError(404, "NoSuchUpload", "The specified upload does not exist.")
            try:
                parts = [upload.parts[n] for n in numbers]
            except KeyError:
                raise HttpError(400, "InvalidPart", "One or more of the specified parts "
                                "could not be found.") from None
            digest = hashlib.md5(b"".join(bytes.fromhex(e.strip('"'))  # noqa: S324
                                          for _, e, _ in parts)).hexdigest()
            etag = f'"{digest}-{len(parts)}"'
            stored = dict(upload.headers)
            stored.pop("x-nulls3-checksum-algorithm", None)
            bucket.put(key, Obj(sum(s for s, _, _ in parts), etag, time.time(), stored))
            del self.state.uploads[q["uploadId"][0]]
        self._xml(200, f"<CompleteMultipartUploadResult><Location>/{escape(upload.bucket)}/"
                  f"{escape(key)}</Location><Bucket>{escape(upload.bucket)}</Bucket>"
                  f"<Key>{escape(key)}</Key><ETag>{escape(etag)}</ETag>"
                  "</CompleteMultipartUploadResult>", self._echo(stored))

    def list_uploads(self, bucket_name: str, q: dict[str, list[str]]) -> None:
        prefix = q.get("prefix", [""])[0]
        with self.state.lock:
            found = sorted(((u.key, uid, u.initiated) for uid, u in self.state.uploads.items()
                            if u.bucket == bucket_name and u.key.startswith(prefix)))
        items = "".join(f"<Upload><Key>{escape(k)}</Key><UploadId>{uid}</UploadId>"
                        f"<Initiated>{iso_date(t)}</Initiated><StorageClass>STANDARD"
                        "</StorageClass></Upload>" for k, uid, t in found)
        self._xml(200, f"<ListMultipartUploadsResult><Bucket>{escape(bucket_name)}</Bucket>"
                  f"<Prefix>{escape(prefix)}</Prefix><IsTruncated>false</IsTruncated>{items}"
                  "</ListMultipartUploadsResult>")


def classify(method: str, has_key: bool, q: dict[str, list[str]],
             headers: dict[str, str]) -> str:
    """The S3 operation of a request (for the counts GET /?nulls3-stats returns)."""
    if not has_key:
        if method == "GET":
            if "uploads" in q:
                return "ListMultipartUploads"
            if "versions" in q:
                return "ListObjectVersions"
            if q.get("list-type") == ["2"]:
                return "ListObjectsV2"
            return "ListObjects" if not q or "prefix" in q or "delimiter" in q or \
                "marker" in q or "max-keys" in q else "GetBucketConfig"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket",
                "POST": "DeleteObjects"}.get(method, method)
    if method == "PUT":
        if "uploadId" in q:
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in q else "CompleteMultipartUpload"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    if "uploadId" in q:
        return "ListParts"
    return "HeadObject" if method == "HEAD" else "GetObject"


def unescape_xml(text: str) -> str:
    return (text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
            .replace("&apos;", "'").replace("&amp;", "&"))


class NullS3:
    """The server: a listening socket and a thread per connection. Several servers may
    share one State (http, https and a delayed listener on the same buckets)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 tls: tuple[str, str] | None = None, delay_ms: float = 0.0,
                 state: State | None = None) -> None:
        self.state = state or State()
        self.delay = delay_ms / 1000.0
        self.listener = socket.create_server((host, port), backlog=256)
        self.port = self.listener.getsockname()[1]
        self.context: ssl.SSLContext | None = None
        if tls:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(*tls)
        self._stop = False

    def serve_forever(self) -> None:
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._connection, args=(sock,), daemon=True).start()

    def _connection(self, sock: socket.socket) -> None:
        if self.context is not None:
            try:
                sock = self.context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                sock.close()
                return
        Connection(self, sock).serve()

    def start(self) -> NullS3:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop = True
        self.listener.close()


def make_certificate(directory: str) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1/localhost (openssl CLI)."""
    import subprocess

    cert, key = os.path.join(directory, "nulls3.pem"), os.path.join(directory, "nulls3.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--also", action="append", default=[], metavar="KIND",
                        help="another listener on the same buckets: https (needs --tls) "
                        "or http+DELAY_MS; its port is printed after the first")
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket")
    parser.add_argument("--forever", action="store_true", help="do not watch stdin")
    args = parser.parse_args()
    tls = (args.tls[0], args.tls[1]) if args.tls else None
    server = NullS3(args.host, args.port, None if args.also else tls, args.delay_ms)
    servers = [server]
    for kind in args.also:
        if kind == "https":
            servers.append(NullS3(args.host, 0, tls, 0.0, server.state))
        else:
            servers.append(NullS3(args.host, 0, None, float(kind.partition("+")[2] or 0),
                                  server.state))
    for name in args.bucket:
        server.state.buckets[name] = Bucket(time.time())
    for s in servers:
        s.start()
    print(" ".join(str(s.port) for s in servers), flush=True)
    if args.forever:
        threading.Event().wait()
    else:
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
