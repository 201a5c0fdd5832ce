"""A local S3 endpoint that keeps no data: the client, not the server, is what gets measured.

    cd scripts && python -m nulls3 [--port 0] [--tls CERT.pem KEY.pem] [--delay-ms 0]
        [--populate BUCKET/PREFIX:COUNT[:distinct]]

(or `PYTHONPATH=scripts python -m nulls3 ...` from the repository's root). It prints its
port on stdout once listening and serves until stdin closes (or forever with --forever).
Path-style addressing only; any credentials and signature are accepted.

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

--populate BUCKET/PREFIX:COUNT[:distinct] (repeatable) creates COUNT empty objects
PREFIXf0000000... at start-up: a million-key listing without a million PutObjects. With
`:distinct`, each has its own size, ETag, LastModified and mtime header.

--delay-ms N adds N ms before every answer (a round trip to a distant server).

The package: store.py (buckets, objects, uploads), wire.py (HTTP/1.1 on a socket),
objects.py, buckets.py and multipart.py (the S3 operations), handlers.py (routing a request
to its operation), server.py (listeners and threads), tls.py (a throwaway certificate),
__main__.py (the command line).
"""

from .server import NullS3
from .store import Bucket, State, pattern_bytes
from .tls import make_certificate

__all__ = ["Bucket", "NullS3", "State", "make_certificate", "pattern_bytes"]
