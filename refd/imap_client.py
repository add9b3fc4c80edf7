"""The IMAP client's I/O: the sans-IO core of `refd.protocol.client` over a trio stream.

The ``imap`` auth source (`refd.auth.imap_backend`) and ``refd probe``
(`refd.probe`) both talk to IMAP servers through :class:`ImapClient`: the
core decides what the bytes mean, this adapter moves them, wraps the
stream in TLS (implicit, or after STARTTLS) and puts a deadline on every
wait. The probe is a blocking CLI; it runs its dialogue under
``trio.run`` so that this one adapter serves both.

Deadlines: the connect gets ``timeout_s`` (or an absolute ``deadline``
when the caller's wait began earlier); the TLS handshake, each send and
each response line get ``timeout_s`` each, however slowly their bytes drip
in. A caller that wants one deadline for a whole exchange puts its own
around the call.

Whatever ends a connection -- an I/O or TLS error, a timeout, or the
core's :class:`~refd.protocol.client.ResponseError` -- is raised as
:class:`ClientError`, whose text says why in a few words ("connection
refused", "timed out after 5 s", "TLS certificate not accepted: ...",
"the server closed the connection"). The auth source's log reasons and
the probe's output use the same words. A programming error is not turned
into a ClientError.

TLS contexts for talking to servers come from :func:`client_tls_context`,
the one place where refd sets one up.
"""

from __future__ import annotations

import enum
import itertools
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress

import trio

from refd.protocol.client import (
    MAX_ANSWER_BYTES,
    Answer,
    Client,
    Continue,
    Greeting,
    Response,
    ResponseError,
    Untagged,
    login_chunks,
    render,
)

__all__ = [
    "LOGOUT_GRACE_S",
    "ClientError",
    "ImapClient",
    "OpenStream",
    "TlsMode",
    "client_tls_context",
    "connect",
    "describe",
    "timed_out",
]

OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]

# LOGOUT after the work is done is politeness: never wait long for it.
LOGOUT_GRACE_S = 1.0
_RECEIVE_BYTES = 65536
# What I/O on a trio stream raises when the peer or the network fails.
_IO_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class TlsMode(enum.Enum):
    """How a connection to a server is protected."""

    NONE = "none"  # plain TCP: loopback or a trusted network only
    STARTTLS = "starttls"  # RFC 9051 §6.2.1: upgrade after the greeting
    IMPLICIT = "implicit"  # RFC 8314 §3.3: TLS from the first byte (port 993)


class ClientError(Exception):
    """The connection cannot go on; the text says why (never what was sent)."""


def client_tls_context(cafile: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """TLS towards a server: the system's CAs (or `cafile`'s), TLS 1.2 at least.

    The host name is checked against the certificate (an IP address
    against an IP SAN). `verify` False checks nothing: for labs only, and
    the caller says so loudly. Raises OSError or ssl.SSLError for a
    `cafile` that cannot be loaded.
    """
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def timed_out(seconds: float) -> str:
    return f"timed out after {seconds:g} s"


def describe(exc: BaseException) -> str:
    """A few words on an I/O, DNS or TLS error."""
    cause = exc
    while True:
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
        elif cause.__cause__ is not None and (
            # trio wraps the real error: BrokenResourceError from an ssl or
            # socket error, OSError("all attempts to connect ...") from a group.
            isinstance(cause, trio.BrokenResourceError)
            or (isinstance(cause, OSError) and not cause.errno)
        ):
            cause = cause.__cause__
        else:
            break
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {cause.verify_message or cause.reason}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or cause}"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host: {cause.strerror}"
    if isinstance(cause, OSError) and cause.errno:
        text = os.strerror(cause.errno)
        return text.lower() if text[:1].isupper() else text
    return str(cause) or type(cause).__name__


async def connect(
    host: str,
    port: int,
    *,
    timeout_s: float,
    deadline: float | None = None,
    open_tcp_stream: OpenStream | None = None,
) -> trio.abc.Stream:
    """A TCP connection to `host`:`port`, by `deadline` (default: `timeout_s` from now)."""
    opener: OpenStream = open_tcp_stream or trio.open_tcp_stream
    with trio.move_on_at(trio.current_time() + timeout_s if deadline is None else deadline):
        try:
            return await opener(host, port)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
            raise ClientError(describe(exc)) from None
    raise ClientError(timed_out(timeout_s))


class ImapClient:
    """One connection to an IMAP server (see the module docstring).

    Tags: each method takes the tag to use; without one it takes the next
    of ``p1``, ``p2``, ... (`tag`).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        timeout_s: float,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        tag_prefix: str = "p",
    ) -> None:
        self.stream = stream
        self.timeout_s = timeout_s
        self.core = Client(max_answer_bytes=max_answer_bytes)
        self._tags = itertools.count(1)
        self._tag_prefix = tag_prefix

    def tag(self) -> str:
        """The next tag of this connection's own sequence."""
        return f"{self._tag_prefix}{next(self._tags)}"

    @property
    def capabilities(self) -> frozenset[str] | None:
        """What the server advertised last (None: not said, or forgotten at STARTTLS)."""
        return self.core.capabilities

    async def tls_handshake(self, context: ssl.SSLContext, host: str) -> None:
        """Wrap the stream in TLS, checking the certificate against `host`."""
        tls = trio.SSLStream(self.stream, context, server_hostname=host)
        with trio.move_on_after(self.timeout_s):
            try:
                await tls.do_handshake()
            except _IO_ERRORS as exc:
                raise ClientError(describe(exc)) from None
            self.stream = tls
            return
        raise ClientError(timed_out(self.timeout_s))

    async def send(self, data: bytes) -> None:
        with trio.move_on_after(self.timeout_s):
            try:
                await self.stream.send_all(data)
            except _IO_ERRORS as exc:
                raise ClientError(describe(exc)) from None
            return
        raise ClientError(timed_out(self.timeout_s))

    async def _next_event(self) -> Greeting | Untagged | Continue | Answer:
        with trio.move_on_after(self.timeout_s):
            try:
                while True:
                    event = self.core.next_event()
                    if isinstance(event, Greeting | Untagged | Continue | Answer):
                        return event
                    self.core.receive_data(await self.stream.receive_some(_RECEIVE_BYTES))
            except ResponseError as exc:
                raise ClientError(str(exc)) from None
            except _IO_ERRORS as exc:
                raise ClientError(describe(exc)) from None
        raise ClientError(timed_out(self.timeout_s))

    async def greeting(self) -> Response:
        """The server's first line, as it came (judge it with `check_greeting`)."""
        event = await self._next_event()
        assert isinstance(event, Greeting)
        return event.response

    async def command(self, tag: str, chunks: Sequence[bytes]) -> Answer:
        """Send a command chunk by chunk (each after the server's ``+``); return its answer."""
        await self.send(self.core.send_command(tag, chunks))
        while True:
            event = await self._next_event()
            if isinstance(event, Continue):
                await self.send(event.data)
            elif isinstance(event, Answer):
                return event

    async def simple(self, name: str, tag: str | None = None) -> Answer:
        """A command without arguments: ``tag NAME`` CRLF."""
        tag = tag or self.tag()
        return await self.command(tag, (f"{tag} {name}\r\n".encode("ascii"),))

    async def known_capabilities(self, tag: str | None = None) -> frozenset[str]:
        """The server's capabilities; asked for with CAPABILITY if it has not said."""
        if self.core.capabilities is None:
            answer = await self.simple("CAPABILITY", tag)
            if answer.tagged.condition != "OK":
                raise ClientError(f"CAPABILITY refused: {render(answer.tagged)}")
            if self.core.capabilities is None:
                raise ClientError("no capabilities in the answer to CAPABILITY")
        return self.core.capabilities

    async def request_starttls(
        self, tag: str | None = None, *, capability_tag: str | None = None
    ) -> Response:
        """Send STARTTLS if the server offers it; return the tagged answer.

        `start_tls` goes on from there.
        """
        if self.core.preauth:
            raise ClientError("PREAUTH greeting: STARTTLS is no longer possible")
        if "STARTTLS" not in await self.known_capabilities(capability_tag):
            raise ClientError("the server does not offer STARTTLS")
        return (await self.simple("STARTTLS", tag)).tagged

    async def start_tls(self, answer: Response, context: ssl.SSLContext, host: str) -> None:
        """After STARTTLS answered `answer`: refuse anything but a clean OK, then TLS."""
        if answer.condition != "OK":
            raise ClientError(f"STARTTLS refused: {render(answer)}")
        try:
            self.core.start_tls()
        except ResponseError as exc:
            raise ClientError(str(exc)) from None
        await self.tls_handshake(context, host)

    async def login(self, user: str, password: str, tag: str | None = None) -> Answer:
        """``LOGIN user password`` with literals as the capabilities allow."""
        tag = tag or self.tag()
        caps = self.core.capabilities or frozenset()
        return await self.command(tag, login_chunks(tag, user, password, caps))

    async def logout(self, tag: str | None = None) -> None:
        """Best effort: say LOGOUT and wait briefly for the answer; never raises."""
        if not self.core.idle:
            return  # a command was cut short: nothing sensible can follow
        with trio.move_on_after(min(LOGOUT_GRACE_S, self.timeout_s)), suppress(ClientError):
            await self.simple("LOGOUT", tag)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
