"""A CONNECT-only HTTP proxy on loopback that tunnels every request to one port.

Thunderbird fetches account-setup documents from ``https://<name>:443``;
with its SSL proxy pref set, it asks the proxy ``CONNECT <name>:443`` and
then speaks TLS (SNI ``<name>``) through the tunnel. ``ConnectTunnel(target)``
answers each CONNECT with ``200`` and splices the bytes to ``127.0.0.1:target``
(the door's implicit-TLS autodiscovery listener), whatever host was named,
so the TLS handshake and the HTTP request are the client's own. Anything
but CONNECT gets ``405``. ``targets`` records the ``host:port`` of each
CONNECT. Threads, not trio: the tests that use it are synchronous. Every
socket has a timeout, and ``close()`` ends the listener and joins its
threads.
"""

from __future__ import annotations

import contextlib
import socket
import threading

HOST = "127.0.0.1"
TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 8192


class ConnectTunnel:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.targets: list[str] = []
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.closing = threading.Event()
        self.threads: list[threading.Thread] = []
        #: every open socket of a tunnel, shut down by close()
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def close(self) -> None:
        self.closing.set()
        self.acceptor.join(timeout=TIMEOUT_S)
        self.listener.close()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=TIMEOUT_S)

    def __enter__(self) -> ConnectTunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self.lock:
            self.open.add(sock)
        if self.closing.is_set():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _forget(self, sock: socket.socket) -> None:
        with self.lock:
            self.open.discard(sock)

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        try:
            self._tunnel(client)
        finally:
            self._forget(client)
            client.close()

    def _tunnel(self, client: socket.socket) -> None:
        client.settimeout(TIMEOUT_S)
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head and len(head) < MAX_HEAD_BYTES:
                data = client.recv(4096)
                if not data:
                    return
                head += data
        method, _, rest = head.partition(b" ")
        if method != b"CONNECT":
            with contextlib.suppress(OSError):
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        self.targets.append(rest.split(b" ", 1)[0].decode("ascii", "replace"))
        try:
            upstream = socket.create_connection((HOST, self.target_port), timeout=TIMEOUT_S)
        except OSError:
            with contextlib.suppress(OSError):
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        self._track(upstream)
        try:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            early = head.partition(b"\r\n\r\n")[2]
            if early:
                upstream.sendall(early)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join(timeout=TIMEOUT_S)
        except OSError:
            pass
        finally:
            self._forget(upstream)
            upstream.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until EOF or an error, then half-close the sink."""
    with contextlib.suppress(OSError):
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
