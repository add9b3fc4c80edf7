"""The public HTTP side: account-setup documents over h11 on trio.

``serve_autodiscovery`` is a task you start, like `refd.server.serve`: it
binds the ``autodiscovery.listeners`` (or takes sockets bound already),
reports them, and serves until the door stops.  Each connection is accepted
as an IMAP one is (`refd.transport`: PROXY header, connection caps, TLS),
then :func:`handle_http_connection` moves bytes between the socket and an
``h11.Connection`` -- the sans-IO HTTP/1.1 core -- one request at a time.

A request is answered by a handler found in :data:`ROUTES` (path ->
protocol, methods, handler); the handler reads the routing table in service
through the pure builders of `refd.autodiscovery.answer` and
`refd.autodiscovery.documents` and returns an :class:`Answer` value; this
module only frames it.  Every answer is a status, a short body and a
``result`` from the fixed set in `refd.metrics`, counted and logged once.

Limits (``autodiscovery.limits``): the request head is capped by h11
(``max_header_bytes``: 431), the body by ``max_body_bytes`` (413, read no
further), a request must arrive whole within ``request_timeout_s`` of its
first byte (408), a kept-alive connection waits ``idle_timeout_s`` for its
next request, and serves at most ``max_requests_per_connection``.  After
an error in the framing (400, 408, 413, 431) the connection is closed.

Credentials (HTTP Basic, RFC 7617) are taken only over TLS or from
``trusted_networks``, checked with `refd.login.check_login` -- the same
in-flight cap, throttle and failure delay as an IMAP LOGIN -- and a
per-user answer is given only for the authenticated user's own address:
the login name of the address (``Domain.login_for``) must be the name the
password was checked for, compared case-insensitively. A user name that is
an address of a served domain (what Thunderbird and Outlook send) is
checked as that address's login name.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import http
import itertools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import unquote

import h11
import trio

from refd.autodiscovery.answer import BadAddress, SetupAnswer, parse_address, setup_answer
from refd.autodiscovery.documents import (
    BadRequest,
    autoconfig,
    autodiscover,
    mobileconfig,
    parse_autodiscover_request,
)
from refd.autodiscovery.signing import sign_profile
from refd.config.loader import DaemonConfig, ListenerConfig
from refd.door import DoorState
from refd.limits import HttpLimits
from refd.listen import bind_tcp
from refd.login import Outcome, check_login
from refd.logs import log_event
from refd.routing.model import Home, normalise_user
from refd.runtime import AutodiscoveryPolicy, ClientInfo, Service, ServiceRef
from refd.server import BoundListener
from refd.transport import (
    RECEIVE_BYTES,
    Address,
    Closed,
    HandshakeFailed,
    SocketConnection,
    WriteTimeout,
    accept_loop,
    client_endpoints,
    refuse_connection,
    report_handshake_failure,
    send_all,
    tls_handshake,
    write_timeout_reason,
)

__all__ = ["ROUTES", "Answer", "Request", "handle_http_connection", "serve_autodiscovery"]

log = logging.getLogger("refd.autodiscovery")

_conn_ids = itertools.count(1)
_PID_TAG = f"{os.getpid():x}"

XML = "application/xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
APPLE = "application/x-apple-aspen-config"
#: how long a client is asked to wait when the password check could not be made
RETRY_AFTER_S = 10
#: the longest query string looked at (an address is at most 254 octets)
_MAX_QUERY_FIELDS = 16


@dataclass(frozen=True, slots=True)
class Request:
    """One complete request, as a handler sees it."""

    method: str
    path: str
    query: str
    #: the host it was sent to (lower-case, no port), from the absolute-form
    #: target or the Host header
    host: str
    #: the mail domain the host names (``autoconfig.D``, ``autodiscover.D``, ``D``), if any
    domain: str | None
    headers: Mapping[bytes, bytes]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send: a status, a body and how it is counted and logged."""

    status: int
    result: str
    body: bytes = b""
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()
    #: the authenticated user, or the login name of the address asked about
    user: str | None = None
    #: the IMAP server named, host:port
    server: str | None = None
    #: wait this long before sending (a failed password's delay)
    delay_s: float = 0.0
    #: close the connection after this answer
    close: bool = False


def _text(status: int, result: str, reason: str, **kw: object) -> Answer:
    """A short text/plain answer: the reason and a newline, never a traceback."""
    return Answer(status, result, (reason + "\n").encode("utf-8"), **kw)  # type: ignore[arg-type]


@dataclass
class Context:
    """What a handler works with: one service snapshot for the whole request."""

    service: Service
    policy: AutodiscoveryPolicy
    door: DoorState
    client: ClientInfo
    limit_hit: Callable[[str, str], None]


Handler = Callable[[Context, Request], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Route:
    protocol: str
    methods: tuple[str, ...]
    handler: Handler


# -- handlers -------------------------------------------------------------------


def _query_address(request: Request) -> str | None:
    """The ``emailaddress`` parameter, validated; None when absent.

    Only ``%XX`` escapes are decoded (a ``+`` stays a ``+``: it is common in
    addresses); bad escapes, bad UTF-8, a repeated parameter raise BadAddress.
    """
    found: list[str] = []
    fields = request.query.split("&") if request.query else []
    if len(fields) > _MAX_QUERY_FIELDS:
        raise BadAddress("too many query parameters")
    for item in fields:
        key, _, value = item.partition("=")
        if key == "emailaddress":
            try:
                found.append(unquote(value, errors="strict"))
            except UnicodeDecodeError:
                raise BadAddress("emailaddress is not UTF-8") from None
    if len(found) > 1:
        raise BadAddress("emailaddress is given more than once")
    return parse_address(found[0]) if found else None


def _document_answer(
    protocol: str, answer: SetupAnswer, body: bytes, content_type: str, user: str | None
) -> Answer:
    headers = [("Cache-Control", "no-store")] if answer.address is not None else []
    if protocol == "mobileconfig":
        headers.append(("Content-Disposition", 'attachment; filename="mail.mobileconfig"'))
    return Answer(
        200,
        "ok",
        body,
        content_type,
        tuple(headers),
        user=user if user is not None else answer.login,
        server=answer.imap.authority,
    )


async def _autoconfig(ctx: Context, request: Request) -> Answer:
    """Mozilla autoconfig: unauthenticated; an unknown address gets the domain's answer."""
    try:
        address = _query_address(request)
    except BadAddress as exc:
        return _text(400, "bad_request", f"bad emailaddress: {exc}")
    table = ctx.service.table
    if address is None:
        if request.domain is None:
            return _text(400, "bad_request", "name the address: ?emailaddress=user@domain")
        answer = setup_answer(table, None, domain=request.domain, per_user=ctx.policy.per_user)
    else:
        answer = setup_answer(table, address, per_user=ctx.policy.per_user)
    if answer is None:
        return _text(404, "not_found", "no such mail domain")
    return _document_answer("autoconfig", answer, autoconfig(answer), XML, None)


async def _autodiscover(ctx: Context, request: Request) -> Answer:
    """Microsoft Autodiscover (POX): the request body names the address."""
    refused = _plaintext_refused(ctx, "autodiscover")
    if refused is not None:
        return refused
    try:
        address = parse_address(parse_autodiscover_request(request.body))
    except (BadRequest, BadAddress) as exc:
        return _text(400, "bad_request", f"bad Autodiscover request: {exc}")
    return await _per_user(ctx, request, "autodiscover", address)


async def _mobileconfig(ctx: Context, request: Request) -> Answer:
    """An Apple configuration profile for ``?emailaddress=``."""
    refused = _plaintext_refused(ctx, "mobileconfig")
    if refused is not None:
        return refused
    try:
        address = _query_address(request)
    except BadAddress as exc:
        return _text(400, "bad_request", f"bad emailaddress: {exc}")
    if address is None:
        return _text(400, "bad_request", "name the address: ?emailaddress=user@domain")
    return await _per_user(ctx, request, "mobileconfig", address)


def _plaintext_refused(ctx: Context, protocol: str) -> Answer | None:
    """403 when credentials would cross the network in the clear (RFC 7617 §4)."""
    if protocol not in ctx.policy.require_auth or ctx.client.tls:
        return None
    if ctx.client.in_networks(ctx.service.policy.trusted_networks):
        return None
    return _text(403, "forbidden", "use HTTPS: credentials are not taken over plain HTTP")


def _challenge(reason: str, *, result: str, delay_s: float = 0.0) -> Answer:
    return _text(
        401,
        result,
        reason,
        headers=(("WWW-Authenticate", 'Basic realm="refd", charset="UTF-8"'),),
        delay_s=delay_s,
    )


def basic_credentials(value: bytes) -> tuple[str, str] | None:
    """The user and password of ``Authorization: Basic ...`` (RFC 7617 §2), or None."""
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon or not user:
        return None
    return user, password


async def _per_user(ctx: Context, request: Request, protocol: str, address: str) -> Answer:
    """The answer for ``address``, after a good password when ``protocol`` needs one."""
    user: str | None = None
    home: Home | None = None
    if protocol in ctx.policy.require_auth:
        header = request.headers.get(b"authorization")
        if header is None:
            return _challenge("credentials needed", result="auth_required")
        credentials = basic_credentials(header)
        if credentials is None:
            return _text(400, "bad_request", "the Authorization header is not HTTP Basic")
        name, password = credentials
        if "@" in name:
            # Thunderbird and Outlook send the address as the user name: the
            # password is checked for its login name (Domain.login_for).
            with contextlib.suppress(BadAddress):
                named = setup_answer(ctx.service.table, name)
                if named is not None and named.login is not None:
                    name = named.login
        check = await check_login(ctx.service, ctx.door, ctx.client, name, password, ctx.limit_hit)
        if check.outcome is Outcome.FAILED:
            return _challenge("authentication failed", result="auth_failed", delay_s=check.delay_s)
        if check.outcome is not Outcome.OK:
            return _text(
                503,
                "unavailable",
                "the password cannot be checked now; try again later",
                headers=(("Retry-After", str(RETRY_AFTER_S)),),
                delay_s=check.delay_s,
            )
        user, home = check.user, check.home
    # With a good password, the home the auth source named routes the answer,
    # as it routes that user's login.
    answer = setup_answer(ctx.service.table, address, per_user=ctx.policy.per_user, home=home)
    if answer is None:
        return _text(404, "not_found", "no such mail domain", user=user)
    if user is not None and normalise_user(answer.domain.login_for(address)) != normalise_user(
        user
    ):
        # Authenticated, but asking for someone else's settings.
        return _text(403, "forbidden", "these credentials are not for that address", user=user)
    if protocol == "autodiscover":
        return _document_answer(protocol, answer, autodiscover(answer), XML, user)
    body = mobileconfig(answer)
    pem = ctx.service.signing_pem
    if ctx.policy.sign_profiles and pem is not None:
        body = sign_profile(body, *pem)
    return _document_answer(protocol, answer, body, APPLE, user)


#: path -> what answers it.  Paths compare exactly, except Autodiscover's,
#: which Outlook spells in any case.
ROUTES: dict[str, Route] = {
    "/mail/config-v1.1.xml": Route("autoconfig", ("GET", "HEAD"), _autoconfig),
    "/.well-known/autoconfig/mail/config-v1.1.xml": Route(
        "autoconfig", ("GET", "HEAD"), _autoconfig
    ),
    "/autodiscover/autodiscover.xml": Route("autodiscover", ("POST",), _autodiscover),
    "/mobileconfig": Route("mobileconfig", ("GET", "HEAD"), _mobileconfig),
}
_CASELESS = frozenset({"/autodiscover/autodiscover.xml"})


def find_route(path: str) -> Route | None:
    route = ROUTES.get(path)
    if route is None and path.lower() in _CASELESS:
        route = ROUTES[path.lower()]
    return route


# -- the request head -------------------------------------------------------------


class _BadHead(Exception):
    """A request refused before routing: its status, result and reason."""

    def __init__(self, status: int, result: str, reason: str, *, close: bool = False) -> None:
        super().__init__(reason)
        self.answer = _text(status, result, reason, close=close)


def split_target(target: str) -> tuple[str | None, str, str]:
    """(authority of an absolute-form target or None, path, query) (RFC 9112 §3.2)."""
    authority = None
    if target.startswith("/"):
        rest = target
    else:
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            # What follows such a line is not to be trusted either: close.
            raise _BadHead(
                400, "bad_request", "the request target is not a path or URL", close=True
            )
        authority, slash, path = rest.partition("/")
        rest = slash + path if slash else "/"
        authority = authority.partition("?")[0]
        if "@" in authority or not authority:
            raise _BadHead(400, "bad_request", "bad authority in the request target", close=True)
    path, _, query = rest.partition("?")
    return authority, path.partition("#")[0], query.partition("#")[0]


def host_name(value: str) -> str | None:
    """The host of a Host value (``name``, ``name:port``, ``[v6]:port``), lower-case."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, port = value[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    else:
        host, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    host = host.rstrip(".")  # the root label: "example.org." is "example.org"
    if not host or any(c in host for c in " /@?#\\,\t"):
        return None
    return host


def host_domain(
    host: str, service: Service, policy: AutodiscoveryPolicy
) -> tuple[bool, str | None]:
    """Whether ``host`` is served here, and the mail domain it names (if one)."""
    domains = service.table.domains
    if host in domains:
        return True, host
    for prefix in ("autoconfig.", "autodiscover."):
        if host.startswith(prefix) and host[len(prefix) :] in domains:
            return True, host[len(prefix) :]
    accepted = host == service.policy.hostname.lower() or host in policy.hosts
    return accepted, None


def _check_host(
    target_authority: str | None, headers: Mapping[bytes, bytes], ctx: Context
) -> tuple[str, str | None]:
    """The host the request is for (RFC 9112 §3.2.2: an absolute target wins)."""
    raw = target_authority
    if raw is None:
        value = headers.get(b"host")
        if value is None:
            raise _BadHead(400, "bad_host", "a Host header is required")
        raw = value.decode("ascii", "replace")
    host = host_name(raw)
    if host is None:
        raise _BadHead(400, "bad_host", "the Host header is not a host name")
    accepted, domain = host_domain(host, ctx.service, ctx.policy)
    if not accepted:
        raise _BadHead(421, "bad_host", "this server does not serve that host")
    return host, domain


# -- the connection loop --------------------------------------------------------------


class _ReadTimeout(Exception):
    def __init__(self, in_request: bool) -> None:
        super().__init__()
        self.in_request = in_request


class _TooLarge(Exception):
    """The body is over ``max_body_bytes``."""


class _HeadTooLarge(Exception):
    """The request line and headers are over ``max_header_bytes``."""


def head_size(event: h11.Request) -> int:
    """The octets of the request line and headers (bar whitespace h11 dropped).

    h11's ``max_incomplete_event_size`` only caps a head still incomplete:
    one that arrives whole in a single read is measured here.
    """
    line = len(event.method) + len(event.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(k) + len(v) + 4 for k, v in event.headers) + 2


@dataclass
class _Reader:
    """h11 events from the stream, under the idle and request deadlines."""

    stream: trio.abc.Stream
    conn: h11.Connection
    limits: HttpLimits
    door: DoorState
    #: when the request being read began (trio clock); None between requests
    started: float | None = None
    #: the read in progress, cancelled when the door stops (between requests)
    waiting: trio.CancelScope | None = field(default=None)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                if self.started is None:
                    self.started = trio.current_time()
                return event  # type: ignore[return-value]
            if self.started is None and self.conn.trailing_data[0]:
                self.started = trio.current_time()
            if self.started is None:
                deadline = trio.current_time() + self.limits.idle_timeout_s
            else:
                deadline = self.started + self.limits.request_timeout_s
            data: bytes | bytearray | None = None
            with trio.move_on_at(deadline) as scope:
                self.waiting = scope if self.started is None else None
                if self.waiting is not None and self.door.stopped:
                    scope.cancel()
                try:
                    data = await self.stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
            self.waiting = None
            if data is None:
                raise _ReadTimeout(self.started is not None)
            if data and self.started is None:
                self.started = trio.current_time()
            self.conn.receive_data(bytes(data))


async def _read_request(reader: _Reader) -> tuple[h11.Request, bytes] | None:
    """The next request and its body; None when the client has closed."""
    event = await reader.next_event()
    if isinstance(event, h11.ConnectionClosed):
        return None
    assert isinstance(event, h11.Request), event
    if head_size(event) > reader.limits.max_header_bytes:
        raise _HeadTooLarge
    headers = dict(event.headers)
    if b"transfer-encoding" in headers and b"content-length" in headers:
        # RFC 9112 §6.1: a request smuggling pattern; refused, then closed.
        raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding")
    length = headers.get(b"content-length")
    if length is not None and int(length) > reader.limits.max_body_bytes:
        raise _TooLarge
    body = bytearray()
    if reader.conn.they_are_waiting_for_100_continue:
        await send_all(
            reader.stream,
            reader.conn.send(
                h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            ),
            reader.limits.request_timeout_s,
        )
    while True:
        part = await reader.next_event()
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > reader.limits.max_body_bytes:
                raise _TooLarge
        elif isinstance(part, h11.EndOfMessage):
            return event, bytes(body)
        else:  # ConnectionClosed mid-body: h11 raises for a short body instead
            return None


def _frame(conn: h11.Connection, answer: Answer, *, head: bool, close: bool) -> bytes:
    headers = [
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Server", "refd"),
        ("Content-Type", answer.content_type),
        ("Content-Length", str(len(answer.body))),
        ("X-Content-Type-Options", "nosniff"),
        *answer.headers,
    ]
    if close:
        headers.append(("Connection", "close"))
    reason = http.HTTPStatus(answer.status).phrase.encode("ascii")
    out = conn.send(h11.Response(status_code=answer.status, headers=headers, reason=reason))
    assert out is not None
    if answer.body and not head:
        out += conn.send(h11.Data(data=answer.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    return out


def _must_close(conn: h11.Connection) -> bool:
    return conn.our_state is h11.MUST_CLOSE


class _Connection:
    """One HTTP connection: requests in, answers out, one at a time."""

    def __init__(
        self, stream: trio.abc.Stream, client: ClientInfo, ref: ServiceRef, door: DoorState
    ) -> None:
        self.stream = stream
        self.client = client
        self.ref = ref
        self.door = door
        self.policy = ref.current.autodiscovery or AutodiscoveryPolicy()
        limits = self.policy.limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.reader = _Reader(stream, self.conn, limits, door)
        self._limits_logged: set[str] = set()

    def limit_hit(self, name: str, reason: str) -> None:
        """Count every hit; log the first of each limit per connection."""
        first = name not in self._limits_logged
        self._limits_logged.add(name)
        self.door.limit_hit(
            name, reason, conn_id=self.client.conn_id, address=self.client.address, log_it=first
        )

    async def run(self) -> None:
        conn, reader, limits = self.conn, self.reader, self.policy.limits
        reader.stream = self.stream  # after a TLS handshake
        served = 0
        while True:
            began = time.perf_counter()
            protocol, method = "other", "-"
            try:
                got = await _read_request(reader)
                if got is None:
                    return
                request_event, body = got
                method = request_event.method.decode("ascii")
                served += 1
                # Each request reads what is in service when it arrives.
                service = self.ref.current
                ctx = Context(
                    service,
                    service.autodiscovery or self.policy,
                    self.door,
                    self.client,
                    self.limit_hit,
                )
                protocol, answer = await self._answer(ctx, request_event, body)
                last = served >= limits.max_requests_per_connection or self.door.stopped
            except _ReadTimeout as exc:
                if not exc.in_request:
                    if served == 0 and not self.door.stopped:
                        self.limit_hit(
                            "http_idle_timeout",
                            f"no request within {limits.idle_timeout_s:g}s of connecting "
                            "(autodiscovery.limits.idle_timeout_s)",
                        )
                    return
                self.limit_hit(
                    "http_request_timeout",
                    f"a request not complete {limits.request_timeout_s:g}s after its first byte "
                    "(autodiscovery.limits.request_timeout_s)",
                )
                answer = _text(408, "timeout", "request not complete in time")
                last = True
            except _TooLarge:
                self.limit_hit(
                    "http_body_size",
                    f"a request body over {limits.max_body_bytes} bytes "
                    "(autodiscovery.limits.max_body_bytes)",
                )
                answer = _text(413, "too_large", "request body too large")
                last = True
            except (h11.RemoteProtocolError, _HeadTooLarge) as exc:
                status = 431 if isinstance(exc, _HeadTooLarge) else exc.error_status_hint
                if status == 431:
                    self.limit_hit(
                        "http_header_size",
                        f"a request head over {limits.max_header_bytes} bytes "
                        "(autodiscovery.limits.max_header_bytes)",
                    )
                    answer = _text(431, "too_large", "request header fields too large")
                else:
                    answer = _text(status, "bad_request", f"bad request: {exc}")
                last = True
            if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return  # nothing can be said any more
            if answer.delay_s > 0:
                await trio.sleep(answer.delay_s)
            close = last or answer.close
            data = _frame(conn, answer, head=method == "HEAD", close=close)
            await send_all(self.stream, data, self.ref.current.limits.write_timeout_s)
            self._account(protocol, method, answer, time.perf_counter() - began)
            # h11 says MUST_CLOSE after "Connection: close" or an HTTP/1.0 request
            if close or _must_close(conn):
                return
            reader.started = None
            conn.start_next_cycle()

    async def _answer(self, ctx: Context, event: h11.Request, body: bytes) -> tuple[str, Answer]:
        headers = dict(event.headers)
        try:
            authority, path, query = split_target(event.target.decode("ascii"))
            host, domain = _check_host(authority, headers, ctx)
        except _BadHead as exc:
            return "other", exc.answer
        route = find_route(path)
        if route is None:
            return "other", _text(404, "not_found", "not found")
        method = event.method.decode("ascii")
        if method not in route.methods:
            allow = ", ".join(route.methods)
            return route.protocol, _text(
                405, "method_not_allowed", f"use {allow}", headers=(("Allow", allow),)
            )
        request = Request(method, path, query, host, domain, headers, body)
        try:
            return route.protocol, await route.handler(ctx, request)
        except Exception:
            # A bug answers 500 and is logged with its connection; the door serves on.
            log.exception(
                "internal error conn=%s addr=%s protocol=%s",
                self.client.conn_id,
                self.client.address,
                route.protocol,
            )
            return route.protocol, _text(500, "error", "internal server error")

    def _account(self, protocol: str, method: str, answer: Answer, seconds: float) -> None:
        self.door.metrics.autodiscovery_request(protocol, answer.result, seconds)
        log_event(
            log,
            logging.INFO,
            "autodiscovery",
            "autodiscovery conn=%(conn)s addr=%(client)s protocol=%(protocol)s "
            "method=%(method)s result=%(result)s status=%(status)d user=%(user)s "
            "server=%(server)s duration=%(duration_s).3f",
            conn=self.client.conn_id,
            client=self.client.address,
            listener=self.client.listener,
            protocol=protocol,
            method=method,
            result=answer.result,
            status=answer.status,
            user=answer.user,
            server=answer.server,
            duration_s=round(seconds, 6),
        )


async def handle_http_connection(
    stream: trio.abc.Stream,
    client: ClientInfo,
    ref: ServiceRef,
    door: DoorState,
    *,
    live: set[_Connection] | None = None,
) -> None:
    """Serve one HTTP client until it leaves, times out or reaches a limit.

    ``live``: the server's open connections, whose waits between requests
    are cut short when the door stops.
    """
    connection = _Connection(stream, client, ref, door)
    metrics = door.metrics
    metrics.session_started(client.listener)
    if live is not None:
        live.add(connection)
    try:
        if client.tls:
            stream = await tls_handshake(
                stream, ref.current.tls_context, ref.current.limits, https_compatible=True
            )
            connection.stream = stream
        await connection.run()
    except WriteTimeout:
        connection.limit_hit("write_timeout", write_timeout_reason(ref.current.limits))
    except Closed:
        pass
    except HandshakeFailed as exc:
        report_handshake_failure(exc, client, door, connection.limit_hit, log)
    except Exception:
        # Outside any one request (a bug in the framing): log it, close, serve on.
        log.exception("internal error conn=%s addr=%s", client.conn_id, client.address)
    finally:
        if live is not None:
            live.discard(connection)
        metrics.session_ended(client.listener)
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await stream.aclose()


async def _accept(
    stream: SocketConnection,
    peer_end: Address,
    local_end: Address | None,
    lc: ListenerConfig,
    config: DaemonConfig,
    ref: ServiceRef,
    door: DoorState,
    live: set[_Connection],
) -> None:
    """Take one accepted socket from PROXY header to its last answer."""
    # Closed on every path, as the IMAP side's `refd.server._accept` says.
    try:
        conn_id = f"{_PID_TAG}-h{next(_conn_ids):x}"
        service = ref.current
        limits = (service.autodiscovery or AutodiscoveryPolicy()).limits
        opened = await client_endpoints(
            stream,
            peer_end,
            local_end,
            proxy_protocol=lc.proxy_protocol,
            proxy_networks=config.proxy_networks,
            limits=service.limits,
            door=door,
            conn_id=conn_id,
        )
        if opened is None:
            return
        io, ends = opened
        refused = refuse_connection(
            door.http_connections,
            ends.address,
            max_total=limits.max_connections,
            max_per_address=limits.max_connections_per_address,
            setting="autodiscovery.limits",
            prefix="http_",
        )
        if refused is not None:
            door.limit_hit(*refused, conn_id=conn_id, address=ends.address)
            if lc.tls != "implicit":
                answer = _text(503, "unavailable", "too many connections; try again later")
                data = _frame(h11.Connection(h11.SERVER), answer, head=False, close=True)
                with contextlib.suppress(Closed):
                    await send_all(io, data, service.limits.write_timeout_s)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await io.aclose()
            return
        try:
            client = ClientInfo(
                conn_id=conn_id,
                address=ends.address,
                listener=lc.name,
                tls=lc.tls == "implicit",
                port=ends.port,
                local_address=ends.local_address,
                local_port=ends.local_port,
            )
            await handle_http_connection(io, client, ref, door, live=live)
        finally:
            door.http_connections.close(ends.address)
    finally:
        stream.close()  # a no-op when the session closed it


async def serve_autodiscovery(
    config: DaemonConfig,
    ref: ServiceRef,
    *,
    door: DoorState,
    sockets: Mapping[str, socket.socket] | None = None,
    task_status: trio.TaskStatus[list[BoundListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind every autodiscovery listener, report them, serve until ``door.stop()``.

    ``sockets``: listening sockets already bound (`refd.listen`), by
    listener name.  On stop: the listeners close, connections waiting for
    a request are closed, requests under way get ``shutdown_grace_s``.
    """
    bound: list[BoundListener] = []
    listeners: list[tuple[ListenerConfig, socket.socket]] = []
    for lc in config.http_listeners:
        sock = (
            sockets[lc.name]
            if sockets is not None
            else bind_tcp(lc.address, lc.port, f"listener {lc.name}")
        )
        host, port = sock.getsockname()[:2]
        bound.append(BoundListener(lc, host, port))
        listeners.append((lc, sock))
        log_event(
            log,
            logging.INFO,
            "listening",
            "listening name=%(listener)s address=%(address)s port=%(port)d tls=%(tls)s "
            "proxy_protocol=%(proxy_protocol)s protocol=http",
            listener=lc.name,
            address=host,
            port=port,
            tls=lc.tls,
            proxy_protocol=lc.proxy_protocol,
        )
    live: set[_Connection] = set()
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            shared = config.workers > 1  # other workers accept on these sockets
            for lc, listener in listeners:
                start = partial(_start, connections, lc, config, ref, door, live)
                accepting.start_soon(accept_loop, listener, lc.name, door, start, log, shared)
            task_status.started(bound)
            await door.stopping.wait()
            accepting.cancel_scope.cancel()
        for connection in live:
            if connection.reader.waiting is not None:
                connection.reader.waiting.cancel()
        connections.cancel_scope.deadline = trio.current_time() + config.shutdown_grace_s


def _start(
    connections: trio.Nursery,
    lc: ListenerConfig,
    config: DaemonConfig,
    ref: ServiceRef,
    door: DoorState,
    live: set[_Connection],
    stream: SocketConnection,
    peer_end: Address,
    local_end: Address | None,
) -> None:
    """Run one accepted connection in ``connections`` (not in the accept loop)."""
    connections.start_soon(_accept, stream, peer_end, local_end, lc, config, ref, door, live)
