"""The listener: a listening socket (optionally TLS) and a thread per connection."""

from __future__ import annotations

import socket
import ssl
import threading

from .handlers import Connection
from .store import State


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
