"""Bucket operations: ListBuckets, Create/Head/DeleteBucket, bucket configuration answers,
ListObjects (v1, v2, versions; delimiter, pagination, encoding-type=url), DeleteObjects."""

from __future__ import annotations

import bisect
import re
import time
from urllib.parse import quote
from xml.sax.saxutils import escape

from .objects import ObjectOps
from .store import Bucket
from .wire import HttpError, iso_date


def unescape_xml(text: str) -> str:
    return (text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
            .replace("&apos;", "'").replace("&amp;", "&"))



class BucketOps(ObjectOps):
    """The bucket operations of a connection (ListMultipartUploads: multipart.py)."""

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
