"""Multipart uploads: Create, UploadPart and UploadPartCopy, ListParts, Complete (with the
ETag S3 computes from the parts'), ListMultipartUploads. Abort is routed in handlers.py."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from xml.sax.saxutils import escape

from .objects import ObjectOps
from .store import Bucket, Obj, Upload
from .wire import HttpError, iso_date


class MultipartOps(ObjectOps):
    """The multipart operations of a connection."""

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
