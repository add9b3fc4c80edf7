"""The trio server: listeners, PROXY headers, TLS, and the per-connection loop.

``serve`` is a task you start with ``nursery.start(serve, ...)``: it binds
every listener, reports the bound addresses (so tests can use port 0), and
serves until cancelled.  Each connection gets one task running
:func:`handle_connection`, a small adapter that moves bytes between the
socket and the sans-IO :class:`~refd.protocol.connection.Connection` and
asks the :class:`~refd.session.Session` what to answer.

Before a session starts, :func:`_accept` reads the PROXY protocol header
(only on listeners that enable it and only from ``proxy_networks``), then
applies the connection limits to the real client address; these steps, the
TLS handshake and the write deadline are `refd.transport`'s, shared with the
public HTTP side.  Limits, TLS
certificates and tables come from the :class:`~refd.runtime.Service` in
service when the connection starts, so a reload applies to new connections.

Every wait has a deadline (idle timeouts, a write timeout, the TLS
handshake and PROXY header timeouts); closing is shielded from cancellation;
and an internal error in one session is logged with its connection id,
answered with ``* BYE`` and contained: it never reaches the client as a
traceback and never stops the daemon.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial

import trio

from refd.config.loader import DaemonConfig, ListenerConfig
from refd.connection_tasks import ConnectionTasks
from refd.deadlines import Wait, deadlines
from refd.door import DoorState
from refd.limits import Limits
from refd.listen import bind_tcp
from refd.logs import log_event
from refd.metrics import Metrics
from refd.protocol.commands import State
from refd.protocol.connection import CONNECTION_CLOSED, NEED_DATA, Connection
from refd.protocol.responses import Bye, Cond, Response, Tagged, UntaggedStatus
from refd.runtime import ClientInfo, ServiceRef
from refd.session import Reply, Session
from refd.transport import (
    Address,
    Closed,
    HandshakeFailed,
    SocketConnection,
    TlsStream,
    WriteTimeout,
    accept_loop,
    client_endpoints,
    read_socket,
    refuse_connection,
    report_handshake_failure,
    send_all,
    tls_handshake,
    write_socket,
    write_timeout_reason,
)

__all__ = ["BoundListener", "handle_connection", "serve"]

log = logging.getLogger("refd.server")

_RECEIVE_BYTES = 16384
#: the name of every connection's task (see `_start`)
_TASK_NAME = "refd.server.connection"
#: a streamed answer (``Reply.stream``) is sent in chunks of about this size
_SEND_CHUNK_BYTES = 16384
_conn_ids = itertools.count(1)
_PID_TAG = f"{os.getpid():x}"


class _NoScope:
    """The scope of a session over a socket, which needs none (see
    `handle_connection`): ``contextlib.nullcontext()`` in compiled code, without
    its three Python calls a session."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SCOPE = _NoScope()


@dataclass(frozen=True, slots=True)
class BoundListener:
    """A listener as bound: its config and the real (host, port)."""

    config: ListenerConfig
    host: str
    port: int


_TIMEOUT_TEXT = {
    "idle_timeout": "Autologout; idle for too long.",
    "login_timeout": "Login timeout; log in sooner.",
    "command_timeout": "Command not completed in time.",
}


async def _send(stream: trio.abc.Stream, data: bytes, limits: Limits) -> None:
    await send_all(stream, data, limits.write_timeout_s)


# `_encode` and `_account` are module functions, not closures of
# `handle_connection`: a compiled closure is called through Python's call
# protocol, a module function directly.


def _encode(conn: Connection, responses: list[Response]) -> bytes:
    """The wire bytes of ``responses``, through ``conn``."""
    # A compiled call of ``conn.send`` per response, not ``map`` over its
    # bound method (a Python call each, and a list made by ``join``).
    if len(responses) == 1:
        return conn.send(responses[0])
    return b"".join([conn.send(r) for r in responses])


def _account(
    metrics: Metrics, conn: Connection, reply: Reply, first_byte: float | None
) -> float | None:
    """Count the commands ``reply`` answers; the start of the next one, if buffered.

    ``first_byte``: when the first byte of the command answered came.
    """
    now = time.perf_counter()
    for r in reply.responses:
        if isinstance(r, Tagged) or (isinstance(r, UntaggedStatus) and r.cond is Cond.BAD):
            took = None if first_byte is None else now - first_byte
            # ``_value_``, the member's value as stored: ``.value`` is a
            # Python-level property of Enum, a call per answer.
            metrics.command_answered(reply.command, r.cond._value_.lower(), took)
            first_byte = now if conn.buffered else None
    return first_byte


async def _send_stream(
    send: Callable[[bytes], Awaitable[None]], conn: Connection, reply: Reply
) -> None:
    """Send ``reply.stream`` in chunks as it is produced, then ``reply.responses``.

    Each chunk waits for the client under the write timeout (``send``), so
    a client that stops reading holds one chunk and one batch, and is
    dropped when the timeout ends; after each batch, sent or not, the other
    connections get their turn.
    """
    assert reply.stream is not None
    chunk = bytearray()
    for batch in reply.stream:
        for response in batch:
            chunk += conn.send(response)
            if len(chunk) >= _SEND_CHUNK_BYTES:
                await send(bytes(chunk))
                chunk.clear()
        await trio.lowlevel.checkpoint()
    for response in reply.responses:
        chunk += conn.send(response)
    await send(bytes(chunk))


async def handle_connection(
    stream: trio.abc.Stream,
    client: ClientInfo,
    ref: ServiceRef,
    door: DoorState | None = None,
) -> None:
    """Serve one client until it leaves, times out or is told BYE."""
    # Not the Service itself: a long session (IDLE) holding it would keep a
    # replaced table, and its user map, alive after a reload.
    limits = ref.current.limits
    conn = Connection(limits)
    session = Session(ref, client, conn, door)
    door = session.door
    metrics = door.metrics
    started = time.monotonic()
    timer = deadlines()
    connected = timer.now()
    command_started: float | None = None  # trio clock: the partial command's start
    first_byte: float | None = None  # when the command being answered began

    # The wait under way (a read, or a write that has to wait) has its
    # deadline kept by the run's timer (`refd.deadlines`): set per wait
    # (``wait.name`` names its limit) and cleared between waits.  When it
    # passes, or at shutdown (`DoorState.stop`), the wait is interrupted.
    # Over a socket the interrupt is trio's ``notify_closing`` of it (the
    # wait raises ClosedResourceError, and the session, which closes the
    # socket after a BYE, sees ``wait.fired`` or the door stopping): a cancel
    # scope around the session cost ~47,000 of a PLAIN session's 698,000
    # instructions (its entry and exit each run a generator context manager
    # with a StopIteration, and ``cancel_called`` reads the clock).  Over
    # another stream (a PROXY header's leftover in front, the tests' memory
    # streams) the interrupt cancels a scope around the session.
    scope: trio.CancelScope | _NoScope
    if isinstance(stream, SocketConnection):
        fd = stream.fd  # read and written directly, see send and receive
        scope = _NO_SCOPE
        wait = Wait(partial(trio.lowlevel.notify_closing, fd), "write_timeout")
    else:
        fd = -1
        scope = cancel_scope = trio.CancelScope()
        wait = Wait(cancel_scope.cancel, "write_timeout")

    async def send(data: bytes) -> None:
        # Most answers (over TLS, their records) fit the socket buffer:
        # write at once, and start the write deadline only for what is left.
        # This skips the write deadline and trio's send path with its two
        # checkpoints (~11 us); with the close below, refd's CPU per PLAIN
        # session fell from ~1,000 to ~750 us (bench/loadgen.c, c=64).
        rest: Callable[[], Awaitable[None]] | None = None  # what has to wait
        try:
            if isinstance(stream, SocketConnection):
                sent = write_socket(fd, data)
                if sent < len(data):
                    rest = partial(stream.send_all, data[sent:])
            elif isinstance(stream, TlsStream):
                if not stream.write_now(data):
                    rest = stream.flush
            else:
                rest = partial(stream.send_all, data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise Closed from exc
        if rest is None:
            if conn.buffered:  # pipelined commands: other sessions get a turn
                await trio.lowlevel.checkpoint()
            return
        timer.set(wait, timer.now() + limits.write_timeout_s, "write_timeout")
        try:
            await rest()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if wait.fired:
                raise WriteTimeout from None
            raise Closed from exc
        if wait.fired:  # the deadline passed as the last byte went
            raise WriteTimeout
        wait.clear()

    async def receive() -> bytes | bytearray | None:
        """The client's next bytes; None if the wait was interrupted (see ``wait``)."""
        try:
            if isinstance(stream, SocketConnection):
                # As send: read the socket directly (`read_socket`).
                return await read_socket(fd, _RECEIVE_BYTES, stream.streak)
            return await stream.receive_some(_RECEIVE_BYTES)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if wait.fired or door.stopped:
                return None
            raise Closed from exc

    door.sessions.add(session)
    metrics.session_started(client.listener)
    try:
        with scope:
            if client.tls:
                stream = await tls_handshake(stream, ref.current.tls_context, limits)
            greeting = session.greeting()
            await send(_encode(conn, greeting.responses))
            if greeting.close:
                return
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    now = timer.now()
                    if not conn.in_command:
                        command_started = None
                    elif command_started is None:
                        command_started = now
                    # unpacked, not ``*``: a call with ``*`` goes through Python's call protocol
                    at, limit_name = _read_deadline(conn, limits, now, connected, command_started)
                    timer.set(wait, at, limit_name)
                    if door.stopped:
                        break
                    session.waiting = wait
                    data = await receive()
                    session.waiting = None
                    # Shutting down, or the deadline passed (also as the data came).
                    if data is None or wait.fired or door.stopped:
                        break
                    wait.clear()
                    if first_byte is None and data:
                        first_byte = time.perf_counter()
                    conn.receive_data(data)
                    continue
                if event is CONNECTION_CLOSED:
                    return
                reply = await session.handle(event)
                if reply.delay_s > 0:
                    await trio.sleep(reply.delay_s)
                if reply.stream is None:
                    await send(_encode(conn, reply.responses))
                else:
                    await _send_stream(send, conn, reply)
                first_byte = _account(metrics, conn, reply, first_byte)
                if reply.close:
                    return
                if reply.starttls:
                    # RFC 9051 §6.2.1 / STARTTLS command injection (CVE-2011-0411
                    # and kin): whatever the client pipelined after STARTTLS in
                    # plaintext is dropped, never executed.
                    dropped = conn.discard_buffered()
                    if dropped:
                        log_event(
                            log,
                            logging.WARNING,
                            "starttls_dropped",
                            "starttls conn=%(conn)s addr=%(client)s dropped %(octets)d "
                            "pipelined octets",
                            conn=client.conn_id,
                            client=client.address,
                            octets=dropped,
                        )
                    stream = await tls_handshake(stream, ref.current.tls_context, limits)
                    session.client = replace(session.client, tls=True)
        # Here only when a wait ended by shutdown or by its deadline.
        session.waiting = None
        if door.stopped:
            session.outcome = "shutdown"
            bye = session.sibling_bye("Server shutting down.")
            await _send(stream, conn.send(bye), limits)
            return
        which = wait.name
        if which == "write_timeout":
            raise WriteTimeout
        session.outcome = which.replace("_", "-")
        session.limit_hit(which, _timeout_reason(which, conn, limits))
        await _send(stream, conn.send(Bye(_TIMEOUT_TEXT[which])), limits)
    except WriteTimeout:
        # No BYE: the client is not reading, so it could not be told.
        session.outcome = "write-timeout"
        session.limit_hit("write_timeout", write_timeout_reason(limits))
    except Closed:
        pass
    except HandshakeFailed as exc:
        session.outcome = "tls-failed"
        report_handshake_failure(exc, client, door, session.limit_hit, log)
    except Exception:
        session.outcome = "internal-error"
        log.exception("internal error conn=%s addr=%s", client.conn_id, client.address)
        with (
            trio.move_on_after(1),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(conn.send(Bye("Internal server error; closing.")))
    finally:
        timer.forget(wait)
        door.sessions.discard(session)
        metrics.session_ended(client.listener)
        if isinstance(stream, SocketConnection):
            # aclose less its checkpoint, which would need the two scopes
            # below: ~25 us of CPU per session.
            stream.close()
        elif not (isinstance(stream, TlsStream) and stream.close_now()):
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await stream.aclose()
        log_event(
            log,
            logging.INFO,
            "session_end",
            "session end conn=%(conn)s addr=%(client)s listener=%(listener)s tls=%(tls)s "
            "user=%(user)s outcome=%(outcome)s server=%(server)s duration=%(duration_s).3f",
            conn=client.conn_id,
            client=session.client.address,
            listener=client.listener,
            tls=session.client.tls,
            user=session.user or session.login_user,
            outcome=session.outcome,
            server=session.login_server,
            duration_s=round(time.monotonic() - started, 6),
        )


def _timeout_reason(which: str, conn: Connection, limits: Limits) -> str:
    """Why ``which`` (from :func:`_read_deadline`) ended the session, naming its setting."""
    if which == "login_timeout":
        return (
            f"not logged in {limits.login_timeout_s:g}s after connecting (limits.login_timeout_s)"
        )
    if which == "command_timeout":
        return (
            f"a command not complete {limits.command_timeout_s:g}s after its first byte "
            "(limits.command_timeout_s)"
        )
    if conn.state is State.NOT_AUTHENTICATED:
        return f"no input for {limits.preauth_idle_timeout_s:g}s (limits.preauth_idle_timeout_s)"
    return f"no input for {limits.idle_timeout_s:g}s (limits.idle_timeout_s)"


def _read_deadline(
    conn: Connection,
    limits: Limits,
    now: float,
    connected: float,
    command_started: float | None,
) -> tuple[float, str]:
    """The nearest of three deadlines, and its limit's name.

    Idle (reset by every read), the whole login phase, and the command under
    way: a client that dribbles a byte at a time resets only the first.  On a
    tie the command's deadline wins, then idle's.  (Compared one by one: the
    ``min`` of a list of (time, name) pairs cost ~3,850 instructions a call
    in the compiled build, twice a PLAIN session.)
    """
    if conn.state is State.NOT_AUTHENTICATED:
        at, which = now + limits.preauth_idle_timeout_s, "idle_timeout"
        login_at = connected + limits.login_timeout_s
        if login_at < at:
            at, which = login_at, "login_timeout"
    else:
        at, which = now + limits.idle_timeout_s, "idle_timeout"
    if command_started is not None:
        command_at = command_started + limits.command_timeout_s
        if command_at <= at:
            at, which = command_at, "command_timeout"
    return at, which


async def _accept(
    stream: SocketConnection,
    peer_end: Address,
    local_end: Address | None,
    lc: ListenerConfig,
    config: DaemonConfig,
    ref: ServiceRef,
    door: DoorState,
) -> None:
    """Take one accepted socket from PROXY header to session end."""
    # Whatever ends the connection (a PROXY header cut off by a reset, a
    # cancellation at shutdown), its descriptor is closed: a SocketConnection
    # has no socket object that the garbage collector would close.
    try:
        conn_id = f"{_PID_TAG}-{next(_conn_ids):x}"
        limits = ref.current.limits
        opened = await client_endpoints(
            stream,
            peer_end,
            local_end,
            proxy_protocol=lc.proxy_protocol,
            proxy_networks=config.proxy_networks,
            limits=limits,
            door=door,
            conn_id=conn_id,
        )
        if opened is None:
            return
        io, ends = opened
        address = ends.address
        refused = refuse_connection(
            door.connections,
            address,
            max_total=limits.max_connections,
            max_per_address=limits.max_connections_per_address,
        )
        if refused is not None:
            door.limit_hit(*refused, conn_id=conn_id, address=address)
            bye = Bye("Too many connections; try again later.", "UNAVAILABLE")
            with contextlib.suppress(Closed):
                if lc.tls != "implicit":
                    await _send(io, Connection().send(bye), limits)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await io.aclose()
            return
        try:
            client = ClientInfo(
                conn_id=conn_id,
                address=address,
                listener=lc.name,
                tls=lc.tls == "implicit",
                starttls_available=lc.tls == "starttls",
                port=ends.port,
                local_address=ends.local_address,
                local_port=ends.local_port,
            )
            await handle_connection(io, client, ref, door)
        finally:
            door.connections.close(address)
    finally:
        stream.close()  # a no-op when the session closed it


async def serve(
    config: DaemonConfig,
    ref: ServiceRef,
    *,
    door: DoorState | None = None,
    sockets: Mapping[str, socket.socket] | None = None,
    task_status: trio.TaskStatus[list[BoundListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind every listener, report them, and serve until ``door.stop()``.

    ``sockets``: listening sockets already bound (`refd.listen`), by
    listener name; without them each listener is bound here (a
    `~refd.listen.BindError` if it cannot be).

    Then: close the listeners, tell every idle session ``* BYE`` (with a
    referral to the sibling door, if configured), give busy ones
    ``shutdown_grace_s`` to finish, cancel what is left, and return.
    """
    door = door or DoorState()
    bound: list[BoundListener] = []
    listeners: list[tuple[ListenerConfig, socket.socket]] = []
    for lc in config.listeners:
        if sockets is not None:
            sock = sockets[lc.name]
        else:
            sock = bind_tcp(lc.address, lc.port, f"listener {lc.name}")
        host, port = sock.getsockname()[:2]
        bound.append(BoundListener(lc, host, port))
        listeners.append((lc, sock))
        log_event(
            log,
            logging.INFO,
            "listening",
            "listening name=%(listener)s address=%(address)s port=%(port)d tls=%(tls)s "
            "proxy_protocol=%(proxy_protocol)s",
            listener=lc.name,
            address=host,
            port=port,
            tls=lc.tls,
            proxy_protocol=lc.proxy_protocol,
        )

    async with trio.open_nursery() as connections:
        # The task's name is given: trio names a task by its function's
        # ``__module__`` and ``__qualname__``, which a compiled function lacks,
        # and the AttributeError it then catches, with the traceback entry
        # CPython makes for it and the ``repr`` it falls back to, cost ~10,300
        # instructions a connection (callgrind, 5,000 spawns each way).
        tasks = ConnectionTasks(connections, _accept, _TASK_NAME)
        async with trio.open_nursery() as accepting:
            shared = config.workers > 1  # other workers accept on these sockets
            for lc, listener in listeners:
                start = partial(_start, tasks, lc, config, ref, door)
                accepting.start_soon(accept_loop, listener, lc.name, door, start, log, shared)
            door.listening = True
            task_status.started(bound)
            await door.stopping.wait()
            door.listening = False
            accepting.cancel_scope.cancel()
        tasks.close()  # the idle connection tasks end
        door.stop()  # interrupt sessions that started waiting meanwhile
        # Graceful shutdown as hypercorn does it: a deadline on the
        # connections' nursery.  It ends as soon as the last session does;
        # at the deadline, the sessions still open are cancelled.
        connections.cancel_scope.deadline = trio.current_time() + config.shutdown_grace_s
    if connections.cancel_scope.cancelled_caught:
        log.warning(
            "shutdown grace over: closed the sessions still open after %gs (shutdown_grace_s)",
            config.shutdown_grace_s,
        )


def _start(
    tasks: ConnectionTasks,
    lc: ListenerConfig,
    config: DaemonConfig,
    ref: ServiceRef,
    door: DoorState,
    stream: SocketConnection,
    peer_end: Address,
    local_end: Address | None,
) -> None:
    """Run one accepted connection in a connection task (not in the accept loop)."""
    tasks.start(stream, peer_end, local_end, lc, config, ref, door)
