"""Child mode `_moto`: moto's S3 server on 127.0.0.1, optionally patched so that a ranged
GET reads only that range of the stored object."""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Any


def _patch_moto_ranges() -> None:
    """Serve `Range: bytes=A-B` GETs from the stored object at offset A (seek + read)
    instead of reading the whole object and slicing it, as stock moto does."""
    from moto.s3 import models, responses

    local = threading.local()
    stock_value = models.FakeKey.value

    class LazyValue:
        def __init__(self, key: Any) -> None:
            self.key = key
            self.size = key.size

        def __len__(self) -> int:
            return self.size

        def __bool__(self) -> bool:
            return self.size > 0

        def __getitem__(self, item: slice) -> bytes:
            if not isinstance(item, slice):
                raise TypeError("LazyValue supports slices only")
            start, stop, _ = item.indices(self.size)
            with self.key.lock:
                self.key._value_buffer.seek(start)
                return self.key._value_buffer.read(max(0, stop - start))

    def value(self: Any) -> Any:
        if getattr(local, "lazy", False):
            return LazyValue(self)
        return stock_value.fget(self)

    models.FakeKey.value = property(value, stock_value.fset)
    stock_get_object = responses.S3Response.get_object
    stock_key_response = responses.S3Response.key_response

    def get_object(self: Any) -> Any:
        wanted = self.headers.get("range") or ""
        local.lazy = bool(re.fullmatch(r"bytes=\d+-\d*", wanted.strip()))
        try:
            return stock_get_object(self)
        finally:
            local.lazy = False

    def key_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        status, headers, body = stock_key_response(self, *args, **kwargs)
        if isinstance(body, LazyValue):  # a range moto answered with the whole object
            body = body[:]
        return status, headers, body

    responses.S3Response.get_object = get_object
    responses.S3Response.key_response = key_response


def serve_moto(stock: bool) -> int:
    """Child mode: run moto's S3 server on 127.0.0.1, print the port, exit when stdin
    closes (so it never outlives the benchmark, even after a kill -9)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if not stock:
        _patch_moto_ranges()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    try:
        sys.stdin.read()
    finally:
        os._exit(0)
