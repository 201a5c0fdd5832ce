"""One request to its S3 operation: the connection class that routes each request, and the
operation names the request counts (GET /?nulls3-stats) use."""

from __future__ import annotations

import json

from .buckets import BucketOps
from .multipart import MultipartOps
from .wire import HttpError


class Connection(BucketOps, MultipartOps):
    """One client connection: HTTP from wire.py, the operations from the mixins."""

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
