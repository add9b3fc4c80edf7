"""The trio server: listeners, TLS, and the per-connection loop.

``serve`` is a task you start with ``nursery.start(serve, ...)``: it binds
every listener, reports the bound addresses (so tests can use port 0), and
serves until cancelled.  Each connection gets one task running
:func:`handle_connection`, a small adapter that moves bytes between the
socket and the sans-IO :class:`~refd.protocol.connection.Connection` and
asks the :class:`~refd.session.Session` what to answer.

Every wait has a deadline (idle timeouts from the config, a write timeout,
the TLS handshake timeout); closing is shielded from cancellation; and an
internal error in one session is logged with its connection id, answered
with ``* BYE`` and contained: it never reaches the client as a traceback and
never stops the daemon.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import trio

from refd.config import DaemonConfig, Limits, ListenerConfig
from refd.protocol.commands import State
from refd.protocol.connection import CONNECTION_CLOSED, NEED_DATA, Connection
from refd.protocol.responses import Bye, Response
from refd.session import ClientInfo, ServiceRef, Session

__all__ = ["BoundListener", "handle_connection", "make_tls_context", "serve"]

log = logging.getLogger("refd.server")

_RECEIVE_BYTES = 16384
_conn_ids = itertools.count(1)
_PID_TAG = f"{os.getpid():x}"


@dataclass(frozen=True, slots=True)
class BoundListener:
    """A listener as bound: its config and the real (host, port)."""

    config: ListenerConfig
    host: str
    port: int


def make_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """Server TLS: Python's CLIENT_AUTH defaults, TLS 1.2 at least."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class _Closed(Exception):
    """The peer went away or stopped reading."""


async def _send(stream: trio.abc.Stream, data: bytes, limits: Limits) -> None:
    with trio.move_on_after(limits.write_timeout_s) as scope:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _Closed from exc
    if scope.cancelled_caught:
        raise _Closed


async def handle_connection(
    stream: trio.abc.Stream,
    client: ClientInfo,
    ref: ServiceRef,
    limits: Limits,
    tls_context: Callable[[], ssl.SSLContext | None] = lambda: None,
) -> None:
    """Serve one client until it leaves, times out or is told BYE."""
    conn = Connection(limits.protocol())
    session = Session(ref, client, conn)
    started = time.monotonic()

    def encode(responses: list[Response]) -> bytes:
        return b"".join(conn.send(r) for r in responses)

    try:
        if client.tls:
            stream = await _tls_handshake(stream, tls_context(), limits)
        await _send(stream, encode(session.greeting().responses), limits)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                if conn.state is State.NOT_AUTHENTICATED:
                    timeout = limits.preauth_idle_timeout_s
                else:
                    timeout = limits.idle_timeout_s
                data = None
                with trio.move_on_after(timeout):
                    try:
                        data = await stream.receive_some(_RECEIVE_BYTES)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        raise _Closed from exc
                if data is None:
                    session.outcome = "idle-timeout"
                    await _send(stream, conn.send(Bye("Autologout; idle for too long.")), limits)
                    return
                conn.receive_data(data)
                continue
            if event is CONNECTION_CLOSED:
                return
            reply = await session.handle(event)
            await _send(stream, encode(reply.responses), limits)
            if reply.close:
                return
            if reply.starttls:
                # RFC 9051 §6.2.1 / STARTTLS injection (CVE-2011-0411 class):
                # anything the client pipelined after STARTTLS is dropped.
                dropped = conn.discard_buffered()
                if dropped:
                    log.warning(
                        "starttls conn=%s dropped %d pipelined octets", client.conn_id, dropped
                    )
                stream = await _tls_handshake(stream, tls_context(), limits)
                session.client = client = replace(client, tls=True)
    except _Closed:
        pass
    except _HandshakeFailed as exc:
        session.outcome = "tls-failed"
        log.info("tls handshake failed conn=%s addr=%s: %s", client.conn_id, client.address, exc)
    except Exception:
        session.outcome = "internal-error"
        log.exception("internal error conn=%s addr=%s", client.conn_id, client.address)
        with (
            trio.move_on_after(1),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(conn.send(Bye("Internal server error; closing.")))
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await stream.aclose()
        log.info(
            "session end conn=%s addr=%s listener=%s tls=%s user=%s outcome=%s duration=%.3f",
            client.conn_id,
            client.address,
            client.listener,
            "yes" if session.client.tls else "no",
            session.user or "-",
            session.outcome,
            time.monotonic() - started,
        )


class _HandshakeFailed(Exception):
    pass


async def _tls_handshake(
    stream: trio.abc.Stream, context: ssl.SSLContext | None, limits: Limits
) -> trio.SSLStream[trio.abc.Stream]:
    if context is None:
        raise RuntimeError("TLS requested on a listener without a TLS context")
    tls = trio.SSLStream(stream, context, server_side=True, https_compatible=False)
    with trio.move_on_after(limits.tls_handshake_timeout_s) as scope:
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            raise _HandshakeFailed(str(exc.__cause__ or exc)) from exc
    if scope.cancelled_caught:
        raise _HandshakeFailed("handshake timed out")
    return tls


def _peer(stream: trio.SocketStream) -> str:
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return "unknown"
    return str(addr[0]) if isinstance(addr, tuple) else str(addr)


async def serve(
    config: DaemonConfig,
    ref: ServiceRef,
    *,
    tls_context: Callable[[], ssl.SSLContext | None] = lambda: None,
    task_status: trio.TaskStatus[list[BoundListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind every listener, report them, and serve until cancelled."""
    bound: list[BoundListener] = []
    listeners: list[tuple[ListenerConfig, trio.SocketListener]] = []
    for lc in config.listeners:
        for sock_listener in await trio.open_tcp_listeners(lc.port, host=lc.address):
            host, port = sock_listener.socket.getsockname()[:2]
            bound.append(BoundListener(lc, host, port))
            listeners.append((lc, sock_listener))
            log.info("listening name=%s address=%s port=%d tls=%s", lc.name, host, port, lc.tls)

    async with trio.open_nursery() as nursery:
        for lc, listener in listeners:
            nursery.start_soon(_accept_loop, listener, lc, config, ref, tls_context)
        task_status.started(bound)


async def _accept_loop(
    listener: trio.SocketListener,
    lc: ListenerConfig,
    config: DaemonConfig,
    ref: ServiceRef,
    tls_context: Callable[[], ssl.SSLContext | None],
) -> None:
    async def one(stream: trio.SocketStream) -> None:
        client = ClientInfo(
            conn_id=f"{_PID_TAG}-{next(_conn_ids):x}",
            address=_peer(stream),
            listener=lc.name,
            tls=lc.tls == "implicit",
            starttls_available=lc.tls == "starttls",
        )
        await handle_connection(stream, client, ref, config.limits, tls_context)

    async with listener:
        await trio.serve_listeners(one, [listener])
