"""The ``auth_http`` source: ask an HTTP service, in nginx mail's auth_http protocol.

An authentication service written for nginx mail (ngx_mail_auth_http_module)
works with refd unchanged. For each login refd sends one request, the
headers in nginx's order and spelling::

    GET /auth HTTP/1.1
    Host: auth.example.org
    Auth-Method: plain
    Auth-User: alice
    Auth-Pass: open%20sesame
    Auth-Protocol: imap
    Auth-Login-Attempt: 1
    Client-IP: 192.0.2.42
    Auth-SSL: on                       (only when the client is on TLS)
    X-Auth-Key: secret_string          (auth.auth_http.headers, in order)
    Connection: close

``Auth-User`` and ``Auth-Pass`` are escaped as nginx escapes them (its
NGX_ESCAPE_MAIL_AUTH table): the UTF-8 bytes 0x00-0x20 and ``%`` become
``%XX`` (upper-case hex), every other byte is sent as it is; refd also
escapes DEL (0x7F), which no HTTP field value may carry (RFC 9110 §5.5).

Only the answer's headers count; the status code and the body are ignored,
as nginx ignores them:

- ``Auth-Status: OK`` -> SUCCESS. ``Auth-Server`` and ``Auth-Port`` name the
  home server (`AuthResult.home`, value ``server:port``, origin
  ``auth_http URL``), which the routing table maps to one of its servers;
  without ``Auth-Server`` the table's rules route the user. ``Auth-Server``
  alone may name a server of the table or its host. An ``Auth-User`` in the
  answer replaces the login name (taken as sent, not unescaped, as nginx
  does): refd routes and logs that name.
- ``Auth-Status: WAIT`` -> ask again after ``Auth-Wait`` seconds, as nginx
  does, within the same deadline and at most `REQUESTS_MAX` requests.
- any other ``Auth-Status`` -> FAILURE; its text goes to the log reason,
  never to the client, who gets the usual ``NO [AUTHENTICATIONFAILED]``.
  ``Auth-Wait: N`` makes the door answer no sooner than N seconds
  (`AuthResult.wait_s`, bounded by ``auth.failure_delay_max_s``). nginx
  closes the connection after a failure without ``Auth-Wait``; refd keeps
  it, as after any failed login.
- no ``Auth-Status``, an answer that is not HTTP, an ``Auth-Port`` that is
  not a port, ``Auth-Port`` without ``Auth-Server``, an empty or non-UTF-8
  ``Auth-User``, headers over `HEADERS_MAX_BYTES`, a connection closed
  before the answer, refused, or failing TLS, and every timeout ->
  UNAVAILABLE with a reason for the logs.

Where refd differs from nginx on the wire: h11 speaks HTTP/1.1 only, so the
request is HTTP/1.1 with ``Connection: close`` (nginx sends HTTP/1.0, which
closes too); ``Host`` carries the port when it is not the scheme's default
(RFC 9110 §7.2; nginx sends the host alone); ``https://`` URLs are verified
against the system CAs or ``ca_file``; ``Client-Host`` is never sent (refd
does not resolve client names), nor the ``Auth-SSL-*`` certificate details
or ``Proxy-Protocol-*``; ``Client-IP`` is the client's address after a
PROXY header.

Every wait has a deadline: the wait for one of `max_concurrent` slots, the
TCP connect and the TLS handshake share ``connect_timeout_s``; the whole
exchange, retries after WAIT included, ends ``timeout_s`` after the check
began. Each request is one `DirectoryOp` ``http`` with result ``ok`` (OK
or WAIT), ``failure`` (any other Auth-Status), ``error`` (garbage, closed,
refused, TLS) or ``timeout``.

The password never appears in a log line or a ``reason``: reasons are built
from fixed text, the service's Auth-Status text and error descriptions, and
are redacted once more (the password, raw and escaped) as a last guard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import h11
import trio

from refd.addresses import parse_ip
from refd.auth.base import AuthRequest, AuthResult, AuthStatus, DirectoryOp, redacted
from refd.auth.registry import AuthSourceSpec, BuildContext, ParseContext
from refd.config.loader import opt, resolve_path
from refd.config.tree import Node, Reader, get
from refd.imap_client import client_tls_context, describe, timed_out
from refd.protocol.client import show
from refd.routing.model import Home
from refd.routing.url import url_host

__all__ = [
    "HEADERS_MAX_BYTES",
    "OWN_HEADERS",
    "REQUESTS_MAX",
    "SPEC",
    "Answer",
    "AuthHttpConfig",
    "AuthHttpSource",
    "GarbageAnswer",
    "escape",
    "read_answer",
    "request_headers",
]

log = logging.getLogger(__name__)

#: the answer's status line and headers together; a service that sends more is cut off
HEADERS_MAX_BYTES = 16 * 1024
#: requests per check when the service keeps answering ``Auth-Status: WAIT``
REQUESTS_MAX = 3
#: the headers refd sends itself (an extra header may not repeat one)
OWN_HEADERS = (
    "Host",
    "Auth-Method",
    "Auth-User",
    "Auth-Pass",
    "Auth-Protocol",
    "Auth-Login-Attempt",
    "Client-IP",
    "Client-Host",
    "Auth-SSL",
    "Connection",
)

_RECEIVE_BYTES = 4096
# nginx's NGX_ESCAPE_MAIL_AUTH: controls, space and "%"; DEL added (see above).
_ESCAPED = frozenset(range(0x21)) | {ord("%"), 0x7F}
# RFC 9110 §5.1 field-name (token) and §5.5 field-value, for configured headers.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?|")

OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]


def escape(text: str) -> bytes:
    """``text`` as nginx sends it in Auth-User and Auth-Pass (see the module docstring)."""
    raw = text.encode("utf-8", "surrogateescape")
    return b"".join(b"%%%02X" % byte if byte in _ESCAPED else bytes((byte,)) for byte in raw)


def request_headers(
    host: str, request: AuthRequest, extra: tuple[tuple[str, str], ...] = ()
) -> list[tuple[bytes, bytes]]:
    """The request's headers, in nginx's order; ``host`` is the Host header's value."""
    headers = [
        (b"Host", host.encode("ascii")),
        (b"Auth-Method", b"plain"),
        (b"Auth-User", escape(request.user)),
        (b"Auth-Pass", escape(request.password)),
        (b"Auth-Protocol", b"imap"),
        (b"Auth-Login-Attempt", str(request.attempt).encode("ascii")),
    ]
    ip = parse_ip(request.client_address)
    if ip is not None:
        headers.append((b"Client-IP", str(ip).encode("ascii")))
    if request.tls:
        headers.append((b"Auth-SSL", b"on"))
    headers += [(name.encode("ascii"), value.encode("ascii")) for name, value in extra]
    headers.append((b"Connection", b"close"))
    return headers


class GarbageAnswer(ValueError):
    """An answer refd cannot act on; ``str()`` says why, for the logs."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the service said, from the answer's headers."""

    status: str  # Auth-Status, printable
    wait_s: int | None = None  # Auth-Wait
    server: str | None = None  # Auth-Server
    port: int | None = None  # Auth-Port
    user: str | None = None  # Auth-User

    @property
    def home_value(self) -> str | None:
        """``server:port`` (IPv6 in brackets), the server alone, or None."""
        if self.server is None:
            return None
        return self.server if self.port is None else f"{url_host(self.server)}:{self.port}"


def read_answer(headers: list[tuple[bytes, bytes]]) -> Answer:
    """The answer in ``headers`` (names in any case), as nginx reads them.

    The last Auth-Server, Auth-Port, Auth-User and Auth-Wait count; any
    Auth-Status other than OK and WAIT makes a failure, whatever else was
    said. A non-numeric Auth-Wait is ignored, as nginx ignores it.
    Raises `GarbageAnswer`.
    """
    failure: str | None = None
    wait = False
    seen_status = False
    fields: dict[bytes, bytes] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == b"auth-status":
            seen_status = True
            if value == b"WAIT":
                wait = True
            elif value != b"OK":
                failure = value.decode("utf-8", "replace")
        elif name in (b"auth-server", b"auth-port", b"auth-user", b"auth-wait"):
            fields[name] = value
    if not seen_status:
        raise GarbageAnswer("no Auth-Status header")
    wait_s = None
    if (text := fields.get(b"auth-wait")) is not None and text.isdigit():
        wait_s = int(text)
    status = failure if failure is not None else "WAIT" if wait else "OK"
    if status != "OK":
        return Answer(status, wait_s)
    server = port = user = None
    if (raw := fields.get(b"auth-server")) is not None:
        server = raw.decode("ascii", "replace").strip()
        if not server:
            raise GarbageAnswer("empty Auth-Server")
    if (raw := fields.get(b"auth-port")) is not None:
        if not (raw.isdigit() and 0 < int(raw) < 65536 and len(raw) <= 5):
            raise GarbageAnswer(f"Auth-Port {show(raw)} is not a port")
        if server is None:
            raise GarbageAnswer("Auth-Port without Auth-Server")
        port = int(raw)
    if (raw := fields.get(b"auth-user")) is not None:
        try:
            user = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GarbageAnswer("Auth-User is not UTF-8") from None
        if not user:
            raise GarbageAnswer("empty Auth-User")
    return Answer(status, wait_s, server, port, user)


class _Unavailable(Exception):
    """Could not decide; ``reason`` for the logs, ``result`` the DirectoryOp result."""

    def __init__(self, reason: str, result: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result


class AuthHttpSource:
    """An AuthSource that asks an nginx-style auth_http service (see the module docstring).

    ``url`` is ``http://`` or ``https://``; ``headers`` are sent after
    refd's own; ``ssl_context`` verifies an https service (default: the
    system CAs). With ``home_first`` the service's Auth-Server wins over the
    table's users: rules. ``open_tcp_stream`` opens the TCP connection.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 10.0,
        max_concurrent: int = 16,
        home_first: bool = True,
        name: str = "auth_http",
        open_tcp_stream: OpenStream | None = None,
    ) -> None:
        if connect_timeout_s <= 0 or timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.url = url
        self.scheme, self.host, self.port, self.target = split_url(url)
        self.host_header = url_host(self.host)
        if self.port != _DEFAULT_PORTS[self.scheme]:
            self.host_header += f":{self.port}"
        self.headers = headers
        self.ssl_context: ssl.SSLContext | None = None
        if self.scheme == "https":
            self.ssl_context = ssl_context or client_tls_context()
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.home_first = home_first
        self.name = name
        self.limiter = trio.CapacityLimiter(max_concurrent)
        self._open_tcp_stream: OpenStream = open_tcp_stream or trio.open_tcp_stream

    async def authenticate(self, request: AuthRequest) -> AuthResult:
        ops: list[DirectoryOp] = []
        started = trio.current_time()
        try:
            result = await self._authenticate(request, started + self.timeout_s, ops)
        except _Unavailable as exc:
            result = AuthResult(AuthStatus.UNAVAILABLE, request.user, f"{self.url}: {exc.reason}")
        except Exception as exc:  # a bug: still an answer, never an exception
            log.exception(
                "auth source %s: internal error checking user=%s", self.name, request.user
            )
            reason = f"internal error: {type(exc).__name__}"
            result = AuthResult(AuthStatus.UNAVAILABLE, request.user, reason)
        result = dataclasses.replace(result, ops=tuple(ops))
        secrets = [request.password]
        with contextlib.suppress(UnicodeError):
            secrets.append(escape(request.password).decode("utf-8", "surrogateescape"))
        result = redacted(result, *secrets)
        log.debug(
            "auth source %s: user=%s status=%s reason=%s elapsed=%.3fs",
            self.name,
            request.user,
            result.status.value,
            result.reason,
            trio.current_time() - started,
        )
        return result

    async def _authenticate(
        self, request: AuthRequest, deadline: float, ops: list[DirectoryOp]
    ) -> AuthResult:
        try:
            headers = request_headers(self.host_header, request, self.headers)
        except UnicodeError:
            reason = "user name or password cannot be sent (not UTF-8)"
            return AuthResult(AuthStatus.FAILURE, request.user, reason)
        for _ in range(REQUESTS_MAX):
            answer = await self._exchange(headers, deadline, ops)
            if answer.status == "WAIT":
                wait_s = answer.wait_s or 0
                if trio.current_time() + wait_s >= deadline:
                    raise _Unavailable(
                        f"Auth-Status WAIT, Auth-Wait {wait_s}: past the {self.timeout_s:g} s "
                        "deadline"
                    )
                await trio.sleep(wait_s)
                continue
            return self._result(request.user, answer)
        raise _Unavailable(f"Auth-Status WAIT {REQUESTS_MAX} times")

    def _result(self, user: str, answer: Answer) -> AuthResult:
        if answer.status != "OK":
            reason = f"service refused: Auth-Status {show(answer.status)}"
            if answer.wait_s is not None:
                reason += f", Auth-Wait {answer.wait_s}"
            return AuthResult(AuthStatus.FAILURE, user, reason, wait_s=float(answer.wait_s or 0))
        home = None
        reason = "service accepted credentials"
        if (value := answer.home_value) is not None:
            home = Home(value, f"auth_http {self.url}", first=self.home_first)
            reason += f", Auth-Server {value}"
        if answer.user is not None and answer.user != user:
            reason += f", Auth-User {show(answer.user)} for {show(user)}"
        return AuthResult(AuthStatus.SUCCESS, answer.user or user, reason, home=home)

    async def _exchange(
        self, headers: list[tuple[bytes, bytes]], deadline: float, ops: list[DirectoryOp]
    ) -> Answer:
        """One request; its DirectoryOp goes to ``ops``."""
        connect_deadline = min(deadline, trio.current_time() + self.connect_timeout_s)
        with trio.move_on_at(connect_deadline) as waiting:
            await self.limiter.acquire()
        if waiting.cancelled_caught:
            in_flight = self.limiter.statistics().borrowed_tokens
            raise _Unavailable(
                f"no free slot within {self.connect_timeout_s:g} s ({in_flight} requests in flight)"
            )
        started = trio.current_time()
        try:
            try:
                raw = await self._request(headers, connect_deadline, deadline)
                answer = read_answer(raw)
            except GarbageAnswer as exc:
                raise _Unavailable(f"answer not understood: {exc}") from None
        except _Unavailable as exc:
            ops.append(DirectoryOp("http", exc.result, trio.current_time() - started))
            raise
        finally:
            self.limiter.release()
        result = "ok" if answer.status in ("OK", "WAIT") else "failure"
        ops.append(DirectoryOp("http", result, trio.current_time() - started))
        return answer

    async def _request(
        self, headers: list[tuple[bytes, bytes]], connect_deadline: float, deadline: float
    ) -> list[tuple[bytes, bytes]]:
        """Send the request; the answer's headers."""
        stream: trio.abc.Stream | None = None
        try:
            with trio.move_on_at(connect_deadline) as connecting:
                try:
                    stream = await self._open_tcp_stream(self.host, self.port)
                    if self.ssl_context is not None:
                        stream = trio.SSLStream(
                            stream,
                            self.ssl_context,
                            server_hostname=self.host,
                            https_compatible=True,
                        )
                        await stream.do_handshake()
                except (OSError, UnicodeError, trio.BrokenResourceError) as exc:
                    raise _Unavailable(f"connect: {describe(exc)}") from None
            if connecting.cancelled_caught or stream is None:
                raise _Unavailable(f"connect: {timed_out(self.connect_timeout_s)}", "timeout")
            with trio.move_on_at(deadline):
                return await self._talk(stream, headers)
            raise _Unavailable(f"no answer: {timed_out(self.timeout_s)}", "timeout")
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def _talk(
        self, stream: trio.abc.Stream, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEADERS_MAX_BYTES)
        data = conn.send(h11.Request(method="GET", target=self.target, headers=headers))
        data += conn.send(h11.EndOfMessage())
        try:
            await stream.send_all(data)
            received = 0
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    if exc.error_status_hint == 431:
                        raise _Unavailable(
                            f"answer headers over {HEADERS_MAX_BYTES} bytes"
                        ) from None
                    raise _Unavailable(f"not an HTTP answer: {exc}") from None
                if event is h11.NEED_DATA:
                    chunk = await stream.receive_some(_RECEIVE_BYTES)
                    if not chunk:
                        raise _Unavailable(
                            f"the service closed the connection after {received} bytes, "
                            "before the answer's headers"
                        )
                    received += len(chunk)
                    if received > HEADERS_MAX_BYTES:  # h11 may have parsed a bit more
                        raise _Unavailable(f"answer headers over {HEADERS_MAX_BYTES} bytes")
                    conn.receive_data(bytes(chunk))
                elif isinstance(event, h11.Response):
                    return list(event.headers.raw_items())
                elif not isinstance(event, h11.InformationalResponse):
                    raise _Unavailable(f"unexpected {type(event).__name__}")
        except (OSError, trio.BrokenResourceError) as exc:
            raise _Unavailable(describe(exc)) from None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_url(url: str) -> tuple[str, str, int, str]:
    """``http[s]://host[:port][/path][?query]`` -> (scheme, host, port, target).

    Raises ValueError with a text for the config error.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("write http://HOST[:PORT]/PATH or https://...")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no user or password in the URL (send a secret with headers:)")
    if parts.fragment:
        raise ValueError("no #fragment in the URL")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    host = parts.hostname
    if not host:
        raise ValueError("no host in the URL")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not all(0x21 <= ord(c) <= 0x7E for c in target):
        raise ValueError("the path must be ASCII without spaces (percent-encode the rest)")
    return scheme, host, port or _DEFAULT_PORTS[scheme], target


# -- configuration: ``auth.source: auth_http`` (see refd.auth.registry) --

_KEYS = {
    "url",
    "headers",
    "ca_file",
    "connect_timeout_s",
    "timeout_s",
    "max_concurrent",
    "home_first",
}


@dataclass(frozen=True, slots=True)
class AuthHttpConfig:
    """``auth.auth_http``: ask an nginx-style auth_http service."""

    url: str
    #: extra request headers (nginx's auth_http_header), in order
    headers: tuple[tuple[str, str], ...] = ()
    ca_file: Path | None = None
    connect_timeout_s: float = 5.0
    timeout_s: float = 10.0
    max_concurrent: int = 16
    #: the service's Auth-Server wins over the table's users: rules
    home_first: bool = True
    line: int = 0


def _parse(ctx: ParseContext) -> AuthHttpConfig:
    r, path = ctx.reader, ctx.file
    m = r.as_map(r.require(ctx.auth, "auth_http", "auth"), "auth.auth_http")
    r.reject_unknown(m, _KEYS, "auth.auth_http")
    url_node = r.require(m, "url", "auth.auth_http")
    url = r.as_str(url_node, "auth.auth_http.url")
    try:
        scheme = split_url(url)[0]
    except ValueError as exc:
        raise r.error(url_node, f"auth.auth_http.url: {exc}") from None
    ca_file = None
    if (ca := get(m, "ca_file")) is not None:
        if scheme != "https":
            raise r.error(ca, "auth.auth_http.ca_file: only for an https:// url")
        ca_file = resolve_path(path, r.as_str(ca, "auth.auth_http.ca_file"))

    def seconds(key: str, default: float) -> float:
        return opt(r, m, key, r.as_positive_seconds, default, f"auth.auth_http.{key}")

    return AuthHttpConfig(
        url=url,
        headers=_headers(r, get(m, "headers")),
        ca_file=ca_file,
        connect_timeout_s=seconds("connect_timeout_s", 5.0),
        timeout_s=seconds("timeout_s", 10.0),
        max_concurrent=opt(
            r,
            m,
            "max_concurrent",
            lambda n, w: r.as_int(n, w, 1, 10000),
            16,
            "auth.auth_http.max_concurrent",
        ),
        home_first=opt(r, m, "home_first", r.as_bool, True, "auth.auth_http.home_first"),
        line=m.line,
    )


def _headers(r: Reader, node: Node | None) -> tuple[tuple[str, str], ...]:
    """``auth.auth_http.headers``: a map of header name -> value, sent in file order."""
    if node is None:
        return ()
    m = r.as_map(node, "auth.auth_http.headers")
    own = {h.lower() for h in OWN_HEADERS}
    out = []
    for key, value_node in m.items:
        name = key.value
        if not _TOKEN.fullmatch(name):
            raise r.error(key, f"auth.auth_http.headers: {name!r} is not a header name")
        if name.lower() in own:
            raise r.error(key, f"auth.auth_http.headers: refd sends {name} itself")
        value = r.as_str(value_node, f"auth.auth_http.headers.{name}", empty_ok=True)
        if not _FIELD_VALUE.fullmatch(value):
            raise r.error(
                value_node,
                f"auth.auth_http.headers.{name}: printable ASCII only, no leading or "
                "trailing space",
            )
        out.append((name, value))
    return tuple(out)


def _build(ac: AuthHttpConfig, ctx: BuildContext) -> AuthHttpSource:
    context = ctx.client_tls(ac.ca_file, ac.line)
    return AuthHttpSource(
        ac.url,
        headers=ac.headers,
        ssl_context=context,
        connect_timeout_s=ac.connect_timeout_s,
        timeout_s=ac.timeout_s,
        max_concurrent=ac.max_concurrent,
        home_first=ac.home_first,
    )


def _warning(ac: AuthHttpConfig) -> str | None:
    """Passwords in clear beyond this host: said at every start and reload."""
    scheme, host, _, _ = split_url(ac.url)
    ip = parse_ip(host)
    if scheme == "https" or host == "localhost" or (ip is not None and ip.is_loopback):
        return None
    return (
        f"auth_http sends every password in clear to {host} ({ac.url}); "
        "use https:// or a service on loopback"
    )


SPEC = AuthSourceSpec(
    name="auth_http",
    keys=frozenset({"auth_http"}),
    parse=_parse,
    build=_build,
    watched=lambda ac: () if ac.ca_file is None else (ac.ca_file,),
    warning=_warning,
)
