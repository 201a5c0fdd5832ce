"""HTTP/1.1 on one client socket: reading requests and bodies (chunked, aws-chunked,
Expect: 100-continue), sending answers and S3 error documents, the keep-alive loop."""

from __future__ import annotations

import email.utils
import hashlib
import socket
import ssl
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

from .store import MD5_LIMIT

if TYPE_CHECKING:
    from .server import NullS3

RECV = 1 << 20


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


class HttpConnection:
    """One client connection: requests in order, keep-alive. `handle` (handlers.py) answers each."""

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
        raise NotImplementedError
