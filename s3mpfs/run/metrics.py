"""The opt-in Prometheus endpoint (`metrics=HOST:PORT`): the status's counters as
Prometheus text on `GET /metrics`, so existing monitoring can alert on failed uploads.

A minimal HTTP/1.0 responder on the mount's trio loop: one request per connection, no
keep-alive, nothing but the metrics. It listens on loopback unless told otherwise and
shows what `s3mpfs status` shows (counts and sizes; never keys or credentials).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .control import MountReport

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name, type, help, where the value is in the status snapshot's totals
_TOTALS = (
    ("files_committed_total", "counter", "Files committed to S3 since mount.",
     "files_committed"),
    ("bytes_committed_total", "counter", "Bytes of files committed to S3 since mount.",
     "bytes_committed"),
    ("uploads_failed_total", "counter", "Uploads that failed (and were aborted) since mount.",
     "files_failed"),
    ("retries_total", "counter", "S3 request attempts repeated after transient errors.",
     "retries"),
    ("read_retries_total", "counter", "GetObject attempts repeated, and read bodies "
     "resumed after breaking off.", "read_retries"),
    ("write_retries_total", "counter", "Attempts of requests that store objects (parts, "
     "PutObject, multipart uploads, copies) repeated.", "write_retries"),
    ("request_errors_total", "counter", "S3 requests that failed after their retries.",
     "request_errors"),
    ("uploads_in_flight", "gauge", "Files being written now.", "uploads_in_flight"),
    ("memory_in_use_bytes", "gauge", "Bytes of parts handed to uploads and not yet sent.",
     "memory_in_use"),
    ("memory_limit_bytes", "gauge", "The memory_limit= budget.", "memory_limit"),
    ("pending_attribute_writes", "gauge", "Attribute changes not yet stored in S3.",
     "pending_attribute_writes"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """Exact: 67108864 stays 67108864 (not 6.71089e+07)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(snap: dict[str, Any]) -> str:
    """The status snapshot as Prometheus text exposition format (version 0.0.4)."""
    mount = f'mount="{_label(str(snap["mount"].get("mountpoint", "")))}"'
    totals = snap["totals"]
    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP s3mpfs_{name} {text}")
        lines.append(f"# TYPE s3mpfs_{name} {kind}")
        lines.extend(f"s3mpfs_{name}{{{labels}}} {_number(value)}" for labels, value in samples)

    for name, kind, text, field in _TOTALS:
        family(name, kind, text, [(mount, totals[field])])
    family("requests_total", "counter", "S3 requests made, by operation.",
           [(f'{mount},operation="{_label(op)}"', n) for op, n in totals["requests"].items()])
    family("parts_in_flight", "gauge", "Parts being uploaded now.",
           [(mount, sum(f["parts_in_flight"] for f in snap["uploads"]))])
    family("upload_rate_bytes", "gauge", "Bytes per second written into files now.",
           [(mount, sum(f["rate"] for f in snap["uploads"]))])
    family("uptime_seconds", "gauge", "Seconds since the mount started.",
           [(mount, snap["mount"].get("uptime", 0))])
    return "\n".join(lines) + "\n"


async def serve(address: tuple[str, int], report: MountReport, *,
                task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the metrics until cancelled; reports the bound "HOST:PORT" when listening."""
    host, port = address
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    where = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
    log.info("serving Prometheus metrics at http://%s/metrics", where)
    task_status.started(where)
    await trio.serve_listeners(lambda stream: _answer(stream, report), listeners)


async def _answer(stream: trio.SocketStream, report: MountReport) -> None:
    async with stream:
        with trio.move_on_after(REQUEST_TIMEOUT):
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 8192:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                request += chunk
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method != b"GET" or path not in (b"/metrics", b"/"):
                await _send(stream, "404 Not Found", "try /metrics\n")
                return
            await _send(stream, "200 OK", render(report.snapshot()))


async def _send(stream: trio.SocketStream, status: str, body: str) -> None:
    data = body.encode()
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    try:
        await stream.send_all(head + data)
    except trio.BrokenResourceError:
        pass
