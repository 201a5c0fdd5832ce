"""End-to-end integrity of the bytes s3mpfs sends: which checksum each request carries,
and what its answer must show for the bytes to count as stored.

AWS S3 verifies a flexible checksum (x-amz-checksum-crc32c, ...) and echoes it in its
answer. Other servers (Ceph RGW among them) ignore flexible checksums but verify
Content-MD5, which every S3 implementation does. With the default `checksum=auto`,
s3mpfs sends CRC32C (the SSE4.2 instruction: 0.06 CPU-s per GiB, against 0.4 for CRC32
and 1.3 for MD5) and, the first time an answer comes back without it, or when a server
refuses it at the mount-time probe, falls back to Content-MD5 for the rest of the mount
(one log line). Where the server's ETags are the MD5 of the bytes it stored (learnt at
mount time), the ETag is compared too, so bytes changed between the checksum and the
disk are caught even by a server that verifies nothing. An algorithm the user named
explicitly is never replaced: an answer without it fails the request with a line naming
the option to use.

Pure logic, no I/O: `s3/store.py` calls it around each request.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UploadFailed
from . import checksums

if TYPE_CHECKING:
    from ..objects import CompletedPart

log = logging.getLogger(__name__)

FLEXIBLE = ("crc32", "crc32c", "sha1", "sha256")
ATTEMPTS = 3  # sends of one body whose answer shows it was not stored as sent


class ChecksumIgnored(UploadFailed):
    """The server's answer lacks the flexible checksum sent: it did not verify it."""


class Corrupted(UploadFailed):
    """The server stored other bytes than were sent (its ETag is not their MD5)."""


@dataclass(frozen=True)
class Sent:
    """What one request carried: its checksum parameters and the MD5 of its body."""

    params: dict[str, Any]
    md5: str | None  # hex, when Content-MD5 was sent


class Integrity:
    """The checksum policy of one mount (`checksum=` option) and what it has learnt."""

    def __init__(self, option: str) -> None:
        self.explicit = option != "auto"
        if option == "auto":  # awscrt is a dependency; without it, zlib's CRC32
            option = "crc32c" if checksums.crc32c_available() else "crc32"
        self.name = option
        self.etag_is_md5 = False  # the server's ETags are MD5s of what it stored

    @property
    def algorithm(self) -> str | None:
        """The flexible checksum algorithm in use (CRC32, ...), or None."""
        return self.name.upper() if self.name in FLEXIBLE else None

    @property
    def response_key(self) -> str | None:
        """The member an answer must carry, e.g. "ChecksumCRC32"."""
        return f"Checksum{self.algorithm}" if self.algorithm else None

    def prepare(self, data: bytes) -> Sent:
        """Checksum parameters for a request carrying `data`. Computed in the caller's
        worker thread (s3/checksums.py releases the GIL on large buffers); always sent
        in a header, never left to botocore (over https it would send the body
        aws-chunked with a trailing checksum, which some servers refuse)."""
        if self.name == "md5":
            digest = hashlib.md5(data).digest()  # noqa: S324 - Content-MD5 is what S3 wants
            return Sent({"ContentMD5": base64.b64encode(digest).decode()}, digest.hex())
        if not self.algorithm:
            return Sent({}, None)
        computed = checksums.value(self.algorithm, data)
        if computed is None:  # (only without awscrt, a dependency): botocore computes it
            return Sent({"ChecksumAlgorithm": self.algorithm}, None)
        return Sent({f"Checksum{self.algorithm}": computed,
                     "ChecksumAlgorithm": self.algorithm}, None)  # S3 names it in its answer

    def check(self, response: dict[str, Any], etag: str, sent: Sent, what: str) -> None:
        """Raise unless the answer shows the body was stored as sent."""
        key = self.response_key
        if key and key in sent.params and key not in response:
            raise ChecksumIgnored(
                f"{what}: the server's answer carries no {key}: it does not verify "
                f"checksum={self.name}; mount with -o checksum=md5 (Content-MD5, which "
                "every S3 server verifies) or checksum=off")
        if sent.md5 and self.etag_is_md5 and etag.strip('"') != sent.md5:
            raise Corrupted(f"{what}: the server stored other bytes than were sent "
                            f"(ETag {etag}, MD5 of the bytes sent \"{sent.md5}\")")

    def fall_back(self, why: str) -> bool:
        """Switch to Content-MD5 if the user left the choice to s3mpfs; False if not."""
        if self.explicit:
            return False
        if self.name != "md5":
            self.name = "md5"
            log.warning("%s: this server does not verify flexible checksums; checksum=auto "
                        "sends Content-MD5 from now on", why)
        return True

    def learn(self, *, echoes: bool, etag: str, body: bytes) -> None:
        """What a probe PutObject showed: whether the server echoes the flexible checksum
        (an explicit choice it ignores raises ChecksumIgnored), and whether its ETag is
        the MD5 of the body."""
        self.etag_is_md5 = etag.strip('"') == hashlib.md5(body).hexdigest()  # noqa: S324
        if not echoes and self.algorithm and not self.fall_back(
                f"a test upload came back without its {self.response_key}"):
            raise ChecksumIgnored(
                f"the server does not verify checksum={self.name} (its answers carry no "
                f"{self.response_key}); mount with -o checksum=md5 (Content-MD5, which every "
                "S3 server verifies), checksum=auto or checksum=off")


def multipart_etag(parts: list[CompletedPart]) -> str:
    """The ETag S3 gives a completed multipart upload of these parts."""
    digest = hashlib.md5(b"".join(bytes.fromhex(p.etag.strip('"')) for p in parts))  # noqa: S324
    return f'"{digest.hexdigest()}-{len(parts)}"'
