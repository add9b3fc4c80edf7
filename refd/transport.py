"""What every listener does before its protocol starts: PROXY header, caps, TLS.

The IMAP door (`refd.server`) and the public HTTP side
(`refd.autodiscovery.server`) accept connections the same way: read the
PROXY protocol header when the listener expects one and the peer is in
``proxy_networks`` (:func:`read_proxy_header`, :func:`client_endpoints`),
count the connection against the caps of the real client address
(:func:`refuse_connection`), then run the TLS handshake under its deadline
(:func:`tls_handshake`).  Each piece reports through
:meth:`DoorState.limit_hit <refd.door.DoorState.limit_hit>` with the
setting that was hit.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import trio

from refd.addresses import IPNetwork, address_in, unmapped
from refd.door import DoorState
from refd.limits import ConnectionTracker, Limits
from refd.logs import log_event
from refd.proxy_protocol import NEED_MORE, ProxyInfo, ProxyProtocolError, parse_proxy_header
from refd.runtime import ClientInfo

__all__ = [
    "Closed",
    "Endpoints",
    "HandshakeFailed",
    "HandshakeTimeout",
    "PrefixedStream",
    "WriteTimeout",
    "accept_loop",
    "client_endpoints",
    "read_proxy_header",
    "refuse_connection",
    "report_handshake_failure",
    "send_all",
    "tls_handshake",
    "write_timeout_reason",
]

RECEIVE_BYTES = 16384


class Closed(Exception):
    """The peer went away or stopped reading."""


class WriteTimeout(Closed):
    """The peer took none of an answer within ``write_timeout_s`` (a limit)."""


class HandshakeFailed(Exception):
    """A TLS handshake failed or timed out (counted per listener)."""


class HandshakeTimeout(HandshakeFailed):
    """A TLS handshake not done within ``tls_handshake_timeout_s`` (a limit)."""


class PrefixedStream(trio.abc.Stream):
    """A stream that first yields bytes already read (after a PROXY header)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            n = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def send_all(stream: trio.abc.Stream, data: bytes, timeout_s: float) -> None:
    """Send ``data``; `Closed` if the peer is gone, `WriteTimeout` if it does not read."""
    with trio.move_on_after(timeout_s) as scope:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise Closed from exc
    if scope.cancelled_caught:
        raise WriteTimeout


async def tls_handshake(
    stream: trio.abc.Stream,
    context: ssl.SSLContext | None,
    limits: Limits,
    *,
    https_compatible: bool = False,
) -> trio.SSLStream[trio.abc.Stream]:
    """The server side of a TLS handshake, within ``limits.tls_handshake_timeout_s``."""
    if context is None:
        raise HandshakeFailed("no TLS certificate is configured")
    tls = trio.SSLStream(stream, context, server_side=True, https_compatible=https_compatible)
    with trio.move_on_after(limits.tls_handshake_timeout_s) as scope:
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            raise HandshakeFailed(str(exc.__cause__ or exc)) from exc
    if scope.cancelled_caught:
        raise HandshakeTimeout(
            f"TLS handshake not done within {limits.tls_handshake_timeout_s:g}s "
            "(limits.tls_handshake_timeout_s)"
        )
    return tls


def endpoint(stream: trio.SocketStream, *, local: bool = False) -> tuple[str, int | None]:
    """The peer's (or with ``local``, this side's) address and port."""
    try:
        addr = stream.socket.getsockname() if local else stream.socket.getpeername()
    except OSError:
        return "unknown", None
    if not isinstance(addr, tuple):
        return str(addr), None
    return unmapped(str(addr[0])), int(addr[1])


async def read_proxy_header(stream: trio.abc.Stream, limits: Limits) -> tuple[ProxyInfo, bytes]:
    """Read a PROXY v1/v2 header; return what it says and the bytes after it.

    Raises ProxyProtocolError, whose text says what went wrong, for every
    way of not getting one: malformed, closed, reset or too slow.
    """
    buf = bytearray()
    with trio.move_on_after(limits.proxy_header_timeout_s):
        while True:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except trio.BrokenResourceError:
                raise ProxyProtocolError("connection reset before the PROXY header") from None
            if not data:
                raise ProxyProtocolError("connection closed before the PROXY header")
            buf += data
            parsed = parse_proxy_header(buf)
            if parsed is NEED_MORE:
                continue
            info, used = parsed
            return info, bytes(buf[used:])
    raise ProxyProtocolError(
        f"no complete PROXY header within {limits.proxy_header_timeout_s:g}s, "
        f"{len(buf)} octets received (limits.proxy_header_timeout_s)"
    )


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Who connected, and to where: the socket's, or what a PROXY header said."""

    address: str
    port: int | None
    local_address: str
    local_port: int | None
    #: the socket's own peer (the load balancer, behind one)
    peer: str


async def client_endpoints(
    stream: trio.SocketStream,
    *,
    proxy_protocol: bool,
    proxy_networks: tuple[IPNetwork, ...],
    limits: Limits,
    door: DoorState,
    conn_id: str,
) -> tuple[trio.abc.Stream, Endpoints] | None:
    """The stream to serve and the client's endpoints; None if the PROXY header failed.

    On a failed header the limit is reported and the socket closed: the
    peer is the load balancer, which did not keep to the PROXY protocol, and
    nothing it forwards can be trusted (nor answered).
    """
    peer, port = endpoint(stream)
    address = peer
    local, local_port = endpoint(stream, local=True)
    io: trio.abc.Stream = stream
    if proxy_protocol and address_in(peer, proxy_networks):
        try:
            info, leftover = await read_proxy_header(stream, limits)
        except ProxyProtocolError as exc:
            door.limit_hit("proxy_header", str(exc), conn_id=conn_id, address=peer)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()
            return None
        # None: a LOCAL or UNKNOWN header; the connection's own endpoints stand.
        if info.source is not None:
            address, port = info.source
        if info.destination is not None:
            local, local_port = info.destination
        if leftover:
            io = PrefixedStream(stream, leftover)
    return io, Endpoints(address, port, local, local_port, peer)


def refuse_connection(
    tracker: ConnectionTracker,
    address: str,
    *,
    max_total: int,
    max_per_address: int,
    setting: str = "limits",
    prefix: str = "",
) -> tuple[str, str] | None:
    """Count a connection from ``address``, or name the cap that refuses it and why.

    The name is the tracker's (``connections_total``,
    ``connections_per_address``) after ``prefix``; ``setting`` names where
    the caps are configured, for the reason text.
    """
    refused = tracker.try_open(address, max_total=max_total, max_per_address=max_per_address)
    if refused is None:
        return None
    if refused == "connections_total":
        return prefix + refused, f"{tracker.total} open; {setting}.max_connections is {max_total}"
    return prefix + refused, (
        f"{tracker.per_address.get(address, 0)} open from this address; "
        f"{setting}.max_connections_per_address is {max_per_address}"
    )


def write_timeout_reason(limits: Limits) -> str:
    """The ``write_timeout`` limit's reason: the client read none of an answer in time."""
    return (
        f"the client read none of an answer within {limits.write_timeout_s:g}s "
        "(limits.write_timeout_s)"
    )


def report_handshake_failure(
    exc: HandshakeFailed,
    client: ClientInfo,
    door: DoorState,
    limit_hit: Callable[[str, str], None],
    log: logging.Logger,
) -> None:
    """Count a failed TLS handshake on ``client``'s listener; a timeout is a limit hit,
    anything else one line.

    No answer is possible: without TLS there is no way to say anything.
    """
    door.metrics.tls_failure(client.listener)
    if isinstance(exc, HandshakeTimeout):
        limit_hit("tls_handshake_timeout", str(exc))
        return
    log_event(
        log,
        logging.INFO,
        "tls_failed",
        "tls handshake failed conn=%(conn)s addr=%(client)s: %(reason)s",
        conn=client.conn_id,
        client=client.address,
        reason=str(exc),
    )


async def accept_loop(
    listener: trio.SocketListener,
    name: str,
    door: DoorState,
    start: Callable[[trio.SocketStream], None],
    log: logging.Logger,
) -> None:
    """Accept on listener ``name`` until cancelled; ``start`` runs each connection elsewhere.

    ``start`` hands the stream to a nursery of connections, so cancelling the
    accept loop (shutdown) leaves the connections to their grace period.
    """
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # EMFILE / ENFILE / ENOBUFS / ENOMEM: back off, as trio's own
                # serve_listeners does, rather than spin.
                log.error("accept failed on %s: %s", name, exc)
                await trio.sleep(0.1)
                continue
            door.metrics.connection_opened(name)
            start(stream)
