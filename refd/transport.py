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

import contextlib
import errno
import fcntl
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import trio

from refd.addresses import IPNetwork, address_in, parse_ip, unmapped
from refd.door import DoorState
from refd.limits import ConnectionTracker, Limits
from refd.logs import log_event
from refd.proxy_protocol import NEED_MORE, ProxyInfo, ProxyProtocolError, parse_proxy_header
from refd.runtime import ClientInfo

__all__ = [
    "Address",
    "Closed",
    "Endpoints",
    "HandshakeFailed",
    "HandshakeTimeout",
    "PrefixedStream",
    "ReadStreak",
    "SocketConnection",
    "TlsStream",
    "WriteTimeout",
    "accept_loop",
    "client_endpoints",
    "local_end_of",
    "read_proxy_header",
    "read_socket",
    "refuse_connection",
    "report_handshake_failure",
    "send_all",
    "tls_handshake",
    "write_socket",
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


def write_socket(fd: int, data: bytes | memoryview) -> int:
    """Write to the non-blocking socket ``fd`` what it takes now; how many bytes (0: none).

    `OSError` if the peer is gone.  Most answers fit the socket buffer, and
    a write that needs no wait needs neither a deadline nor trio's send path
    (two context managers and a checkpoint, ~11 us).
    """
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


#: Reads in a row that may find their bytes without waiting before the task
#: yields (`read_socket`).
READ_STREAK = 4


class ReadStreak:
    """How many reads of one connection in a row found their bytes without waiting."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


async def read_socket(fd: int, max_bytes: int, streak: ReadStreak) -> bytes:
    """Up to ``max_bytes`` from the non-blocking socket ``fd``, waiting only if none are there.

    ``b""`` at the end of the stream; `OSError` if the peer is gone,
    `trio.ClosedResourceError` if the socket is closed while waiting.
    trio's ``receive_some`` adds two context managers and a checkpoint
    around the same calls (~10 us per read that waited, ~4 us per one that
    did not).

    A read that did not wait yields only every `READ_STREAK`-th time in a
    row (``streak`` counts them for the connection), so a peer that always
    has its next command ready cannot hold the loop, and no cancellation is
    delivered there, so no data is lost.  trio's ``receive_some`` yields
    after every read: when the client's next command is already there (a
    PLAIN session at c=1 on the development machine, for both of its
    reads), each such yield is a pass of the run loop of its own, with an
    ``epoll_wait``: yielding every fourth read took a PLAIN session at c=1
    from 4 to 2.2 ``epoll_wait`` calls, 412,396 to 355,459 instructions and
    574 to 520 us of CPU (bench/instructions.py, bench/ab.py).
    """
    try:
        data = os.read(fd, max_bytes)
    except BlockingIOError:
        pass
    else:
        streak.count += 1
        if streak.count >= READ_STREAK:
            streak.count = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data
    streak.count = 0
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            continue


class SocketConnection(trio.abc.Stream):
    """An accepted TCP connection: trio's stream interface over its file descriptor.

    What `accept_loop` hands over, in place of ``trio.SocketStream``.  The
    sessions read and write the descriptor themselves (`read_socket`,
    `write_socket`), so a socket object is not needed: making one
    (``socket.socket(fileno=...)``, which checks the descriptor with a
    ``getsockname`` call), trio's wrapper of it and ``SocketStream``'s
    set-up (two ``setsockopt`` calls, for options the accepted socket
    already has from its listener, see `accept_loop`) cost three system
    calls and ~26,500 instructions a connection (286,191 -> 259,715 per
    PLAIN session, c=16, bench/instructions.py).  The stream methods serve
    the slower paths (an answer that has to wait, a PROXY header, the HTTP
    side) for one task at a time.
    """

    def __init__(self, fd: int, family: int) -> None:
        #: the connected socket, non-blocking; -1 once closed
        self.fd = fd
        self.family = family
        #: its reads in a row that did not wait, whoever reads it (`read_socket`)
        self.streak = ReadStreak()

    def _open_fd(self) -> int:
        if self.fd < 0:
            raise trio.ClosedResourceError("the connection was already closed")
        return self.fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        fd = self._open_fd()
        try:
            return await read_socket(fd, max_bytes or RECEIVE_BYTES, self.streak)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        fd = self._open_fd()
        with memoryview(data) as view:
            sent = 0
            while True:
                try:
                    sent += write_socket(fd, view[sent:])
                except OSError as exc:
                    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
                if sent >= len(view):
                    break
                await trio.lowlevel.wait_writable(fd)
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._open_fd())

    def close(self) -> None:
        """Close at once, from the task that owns the connection, while it waits for nothing.

        Unlike `aclose` this does not call trio's ``notify_closing``, which
        wakes the tasks waiting on the descriptor: there are none, and trio
        keeps no record of a descriptor nobody waits on (a wait that ended,
        by its event, a cancellation or ``notify_closing``, dropped it).
        The kernel takes a closed descriptor out of trio's epoll set itself.
        ``notify_closing`` would build a record and an exception for nobody
        and ask epoll to drop the descriptor, which fails when no read ever
        waited on it: ~20,000 instructions of a PLAIN session at c=1
        (332,145 -> 312,918, bench/instructions.py).
        """
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    async def aclose(self) -> None:
        """Close; another task waiting on the connection wakes with ClosedResourceError."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
        await trio.lowlevel.checkpoint()

    def getsockname(self) -> object:
        """The connection's own address, as ``socket.getsockname`` gives it."""
        sock = socket.socket(self.family, socket.SOCK_STREAM, fileno=self._open_fd())
        try:
            return sock.getsockname()
        finally:
            sock.detach()  # the descriptor stays this object's


class TlsStream(trio.abc.Stream):
    """The server side of TLS over ``transport``, for one task at a time.

    It drives an `ssl.SSLObject` through two memory BIOs as `trio.SSLStream`
    does, without what that class pays for letting several tasks send and
    receive at once: per record two conflict detectors, a send or receive
    lock (an ``async with``), a status check and a checkpoint of its own on
    top of the transport's.  An IMAP session reads and writes from its one
    task, so none of that is needed here: a send and a receive cost ~36 us
    less (193 -> 157 us per answer/command round trip, both ends in one
    process), refd's CPU per implicit-TLS session 13-18 % less (bench/ab.py
    --flow tls, c=64).  Over a plain socket it also reads and writes the
    socket itself (`read_socket`, `write_socket`) instead of through trio's
    ``SocketStream``; :meth:`write_now` lets the session start its write
    deadline only when records have to wait, and :meth:`close_now` closes
    without an awaited close.  Those took Python calls per implicit-TLS
    session from 1,609 to 1,136 (bench/calls.py) and refd's CPU per session
    from a median of 3,069 to 2,599 us (bench/ab.py --flow tls, 8 rounds).
    A TLS 1.3 handshake's session tickets are held back and sent with the
    first answer, as trio does (python-trio/trio#819), so the greeting and
    the tickets go in one write.
    Errors are trio's: `trio.BrokenResourceError` from the `ssl.SSLError`
    (or the transport's own), and a ragged EOF is an error, a close_notify
    an end of stream (``b""``).
    """

    def __init__(self, transport: trio.abc.Stream, context: ssl.SSLContext) -> None:
        self.transport_stream = transport
        # A plain socket is read and written directly (`read_socket`,
        # `write_socket`), as the plain session does; another transport (a
        # PROXY header's leftover in front) through its stream methods.
        if isinstance(transport, SocketConnection):
            self._fd, self._streak = transport.fd, transport.streak
        else:
            self._fd, self._streak = -1, ReadStreak()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._held = b""  # TLS 1.3 session tickets, until the first answer
        self._unsent = b""  # records write_now could not write, for flush
        self._broken = False
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        if self._broken:
            raise trio.BrokenResourceError

    def _write_direct(self, data: bytes) -> bytes:
        """Write what a plain socket takes now; what is left (all of it over another transport)."""
        if self._fd < 0:
            return data
        try:
            sent = write_socket(self._fd, data)
        except OSError as exc:
            self._broken = True
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        return data[sent:]

    async def _send(self, data: bytes) -> None:
        try:
            data = self._write_direct(data)
            if data:
                await self.transport_stream.send_all(data)
        except BaseException:
            # Some unknown part of a record went out: the stream is done.
            self._broken = True
            raise

    async def _receive(self) -> None:
        """Feed the next bytes from the transport (or its end) to OpenSSL.

        A receive cut short (a read deadline) consumed nothing: the stream
        still works, e.g. for the BYE that says why the session ends.
        """
        if self._fd < 0:
            data = await self.transport_stream.receive_some(RECEIVE_BYTES)
        else:
            try:
                data = await read_socket(self._fd, RECEIVE_BYTES, self._streak)
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def do_handshake(self) -> None:
        self._check()
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                out = self._outgoing.read()
                if out:
                    await self._send(out)
                await self._receive()
                continue
            except ssl.SSLError as exc:
                self._broken = True
                raise trio.BrokenResourceError from exc
            break
        out = self._outgoing.read()
        if self._ssl.version() == "TLSv1.3":
            self._held = out
        elif out:
            await self._send(out)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self._check()
        waited = False
        while True:
            try:
                data = self._ssl.read(max_bytes or RECEIVE_BYTES)
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:  # a ragged EOF (SSLEOFError) included
                self._broken = True
                raise trio.BrokenResourceError from exc
            out = self._outgoing.read()  # e.g. a KeyUpdate's answer
            if out:
                await self._send(self._take_held() + out)
            await self._receive()
            waited = True
        if not waited:  # decrypted from bytes already here: still a checkpoint
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def _take_held(self) -> bytes:
        held, self._held = self._held, b""
        return held

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            self._check()
            await trio.lowlevel.checkpoint()
            return
        if not self.write_now(data):
            await self.flush()

    def write_now(self, data: bytes | bytearray | memoryview) -> bool:
        """Encrypt ``data`` and write what the socket takes now; True if it took all.

        Otherwise the rest waits for :meth:`flush` (which must come before
        anything else is sent), so a caller can start its write deadline only
        when a write has to wait, as the plain session does.
        """
        self._check()
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            self._broken = True
            raise trio.BrokenResourceError from exc
        self._unsent = self._write_direct(self._unsent + self._take_held() + self._outgoing.read())
        return not self._unsent

    async def flush(self) -> None:
        """Send what :meth:`write_now` left."""
        unsent, self._unsent = self._unsent, b""
        await self._send(unsent)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    def close_now(self) -> bool:
        """`aclose` without waiting, over a plain socket; False (nothing done) over another.

        The close_notify goes out if the socket takes it now: a peer that
        has left the socket buffer full does not get it (`aclose` would
        wait for it, up to its caller's timeout).  This saves the two
        shielded scopes and the checkpoints of an awaited close, ~20 us.
        """
        transport = self.transport_stream
        if not isinstance(transport, SocketConnection):
            return False
        if not self._closed and not self._broken:
            with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: no reply awaited
                self._ssl.unwrap()
            with contextlib.suppress(OSError):
                write_socket(self._fd, self._take_held() + self._outgoing.read())
        self._closed = True
        transport.close()
        return True

    async def aclose(self) -> None:
        """Send a close_notify (if the stream still works), then close the transport."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        broken, self._broken, self._closed = self._broken, False, True
        if broken:
            await self.transport_stream.aclose()
            return
        try:
            with contextlib.suppress(ssl.SSLError, trio.BrokenResourceError):
                # Without waiting for the client's close_notify.
                with contextlib.suppress(ssl.SSLWantReadError):
                    self._ssl.unwrap()
                await self.transport_stream.send_all(self._take_held() + self._outgoing.read())
        except BaseException:
            await trio.aclose_forcefully(self.transport_stream)
            raise
        await self.transport_stream.aclose()


async def tls_handshake(
    stream: trio.abc.Stream,
    context: ssl.SSLContext | None,
    limits: Limits,
    *,
    https_compatible: bool = False,
) -> trio.abc.Stream:
    """The server side of a TLS handshake, within ``limits.tls_handshake_timeout_s``.

    An IMAP session gets a `TlsStream`; the HTTP side (``https_compatible``,
    whose clients may end without a close_notify) trio's `trio.SSLStream`.
    """
    if context is None:
        raise HandshakeFailed("no TLS certificate is configured")
    tls: TlsStream | trio.SSLStream[trio.abc.Stream]
    if https_compatible:
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
    else:
        tls = TlsStream(stream, context)
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


#: an address and port as the door logs and counts them (`unmapped`)
Address = tuple[str, int | None]


def _local_end(stream: SocketConnection) -> Address:
    """This side's address and port of ``stream``, asked of its socket."""
    try:
        return _address(stream.getsockname())
    except OSError:
        return "unknown", None


def _address(addr: object) -> Address:
    """A socket address (``getsockname``'s, ``accept``'s) as an `Address`."""
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

    def __init__(
        self,
        address: str,
        port: int | None,
        local_address: str,
        local_port: int | None,
        peer: str,
    ) -> None:
        # Written out for the compiled build (refd.compiled: Dataclasses).
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "local_address", local_address)
        object.__setattr__(self, "local_port", local_port)
        object.__setattr__(self, "peer", peer)


async def client_endpoints(
    stream: SocketConnection,
    peer_end: Address,
    local_end: Address | None,
    *,
    proxy_protocol: bool,
    proxy_networks: tuple[IPNetwork, ...],
    limits: Limits,
    door: DoorState,
    conn_id: str,
) -> tuple[trio.abc.Stream, Endpoints] | None:
    """The stream to serve and the client's endpoints; None if the PROXY header failed.

    ``peer_end`` and ``local_end`` are the socket's two ends as `accept_loop`
    hands them over (``local_end`` None: ask the socket).

    On a failed header the limit is reported and the socket closed: the
    peer is the load balancer, which did not keep to the PROXY protocol, and
    nothing it forwards can be trusted (nor answered).
    """
    peer, port = peer_end
    address = peer
    local, local_port = _local_end(stream) if local_end is None else local_end
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


# accept(2) errors that concern one connection that is already gone (reset,
# refused by a firewall, a network error on the way in), not the listener:
# the next connection is accepted as usual.  The names trio's own
# SocketListener ignores; those this platform lacks are skipped.
_ACCEPT_IGNORED_NAMES = (
    "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT",
    "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
)  # fmt: skip
_ACCEPT_IGNORED = frozenset(getattr(errno, n) for n in _ACCEPT_IGNORED_NAMES if hasattr(errno, n))
#: connections taken from the accept queue per wake-up, before the loop waits
#: (and so lets every other task run) again
ACCEPT_BATCH = 16
#: how long a worker with no connection of its own stops waiting on a shared
#: listening socket after another worker took the connection that woke it
#: (see `accept_loop`)
IDLE_LOSER_PAUSE_S = 0.01


def local_end_of(listener: socket.socket) -> Address | None:
    """The local end of every connection ``listener`` accepts: its own address, when
    it is bound to one; None when it is bound to ``0.0.0.0`` or ``::`` (ask each socket)."""
    bound = _address(listener.getsockname())
    ip = parse_ip(bound[0])
    return None if ip is None or ip.is_unspecified else bound


async def accept_loop(
    sock: socket.socket,
    name: str,
    door: DoorState,
    start: Callable[[SocketConnection, Address, Address | None], None],
    log: logging.Logger,
    shared: bool = False,
) -> None:
    """Accept on the listening socket of listener ``name`` until cancelled, then close it;
    ``start`` runs each connection elsewhere.

    ``start`` hands the stream to a nursery of connections, so cancelling the
    accept loop (shutdown) leaves the connections to their grace period.

    The loop takes up to `ACCEPT_BATCH` connections from the queue at each
    wake-up, as asyncio's loop does with its backlog, and then waits for the
    socket to be readable, which is also its turn to yield.  trio's
    ``SocketListener.accept`` checkpoints twice per connection instead (a
    cancellation check and a yield) and waits on epoll once per connection
    under load.  refd's CPU per PLAIN session fell by 40-80 us with this
    loop (bench/ab.py, c=64, workers: 1; medians of three interleaved runs
    590 -> 541, 537 -> 459, 646 -> 606 us; workers: 2, 731 -> 642 us);
    taking one connection per wake-up saved nothing.  With several workers
    on one socket, their CPU stayed even (SHA512-CRYPT at c=16: 5.90 and
    5.97 s in one cell).  The accepted socket is handed over as a
    `SocketConnection`, its descriptor made non-blocking; the options trio's
    ``SocketStream`` sets on each connection (``TCP_NODELAY``,
    ``TCP_NOTSENT_LOWAT`` of 16 KiB) are set once on the listening socket,
    and Linux copies them to every socket it accepts.

    ``start`` gets the stream and its two ends (`client_endpoints`) without
    asking the socket: the peer's address comes with the accept, and a
    listener bound to one address (not ``0.0.0.0`` or ``::``) is the local
    end of every connection it accepts (None otherwise).  Asking
    (``getpeername``, ``getsockname``) cost two system calls and ~9,800
    instructions a connection (callgrind, PLAIN, c=16).

    ``shared``: other processes (the other workers) accept on the same
    socket.  A new connection wakes every process waiting on it, and all but
    one find nothing.  A loser that has no connection of its own pauses
    `IDLE_LOSER_PAUSE_S` before it waits on the socket again, as nginx's
    ``accept_mutex_delay`` keeps a worker off the socket: at a low rate of
    connections (one at a time) the worker that has them takes the next
    ones, and the idle one is not woken for each.  A loser that serves
    connections waits again at once, so under load both keep taking their
    share.
    """
    sock.setblocking(False)
    with contextlib.suppress(OSError):  # as trio: not every platform has both
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 2**14)
    # ``sock.family`` is an enum conversion: once, not per connection.
    family = int(sock.family)
    local_end = local_end_of(sock)
    woken = False  # the first pass looks before any wait
    try:
        while True:
            for taken in range(ACCEPT_BATCH):
                try:
                    fd, peer = sock._accept()  # type: ignore[attr-defined]
                except BlockingIOError:
                    if woken and taken == 0 and shared and door.idle():
                        await trio.sleep(IDLE_LOSER_PAUSE_S)
                    break
                except OSError as exc:
                    if exc.errno in _ACCEPT_IGNORED:
                        continue
                    # EMFILE / ENFILE / ENOBUFS / ENOMEM: back off, as trio's
                    # own serve_listeners does, rather than spin.
                    log.error("accept failed on %s: %s", name, exc)
                    await trio.sleep(0.1)
                    break
                fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)  # its only status flag
                door.metrics.connection_opened(name)
                start(SocketConnection(fd, family), _address(peer), local_end)
            await trio.lowlevel.wait_readable(sock)
            woken = True
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()
