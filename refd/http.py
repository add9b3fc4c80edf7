"""The small HTTP endpoint for Prometheus and orchestrators.

``GET /metrics`` (Prometheus text format), ``GET /healthz`` (the process is
alive: 200) and ``GET /readyz`` (200 when the listeners are bound, a table
is loaded and the door is neither draining nor stopping; 503 otherwise).
Anything else is 404, other methods 405.  One request per connection, a
bounded request head, and a deadline on every read and write: a scraper
that misbehaves cannot hold the door.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from refd.listen import bind_tcp

__all__ = ["serve_http"]

log = logging.getLogger("refd.http")

_MAX_HEAD = 8192
_TIMEOUT_S = 5.0


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def serve_http(
    host: str,
    port: int,
    registry: Collector,
    ready: Callable[[], bool],
    *,
    sock: socket.socket | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the endpoint until cancelled; reports the bound port.

    ``sock``: a listening socket already bound (`refd.listen`); without
    one, ``host:port`` is bound here.
    """
    if sock is None:
        sock = bind_tcp(host, port, "metrics")
    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
    bound = sock.getsockname()[1]
    log.info("metrics listening address=%s port=%d", host, bound)
    task_status.started(bound)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(_TIMEOUT_S):
                head = bytearray()
                while b"\r\n\r\n" not in head and b"\n\n" not in head:
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    head += data
                    if len(head) > _MAX_HEAD:
                        await stream.send_all(_response("431 Request Header Fields Too Large", b""))
                        return
                await stream.send_all(_answer(bytes(head), registry, ready))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    await trio.serve_listeners(handle, listeners)


def _answer(head: bytes, registry: Collector, ready: Callable[[], bool]) -> bytes:
    line = head.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
    if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
        return _response("400 Bad Request", b"bad request\n")
    method, target = line[0], line[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return _response("405 Method Not Allowed", b"GET only\n")
    if target == b"/metrics":
        body = generate_latest(registry)
        reply = _response("200 OK", body, CONTENT_TYPE_LATEST)
    elif target == b"/healthz":
        reply = _response("200 OK", b"ok\n")
    elif target == b"/readyz":
        reply = (
            _response("200 OK", b"ready\n")
            if ready()
            else _response("503 Service Unavailable", b"not ready\n")
        )
    else:
        reply = _response("404 Not Found", b"not found\n")
    if method == b"HEAD":
        return reply.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    return reply
